"""The orchestration and activity dispatchers: what the Durable extension does for out-of-process Python apps.

An *episode* of an orchestration: take the due messages of one instance (completions, timer firings, raised events,
the start), append them to its history after an ``OrchestratorStarted``, hand the whole history to the SDK's own
replay entry point (the orchestrator function's ``get_user_function()`` handle), check the returned actions against
what history already scheduled (DTFx's non-determinism check: same kind and name per sequence number,
``history.nondeterminism_error``), record the new ones, save, then carry out their effects (activity work items, timer
messages, child orchestrations). Activities run in a thread pool, each within host.json's ``functionTimeout``, and
come back as messages. Everything is in the ``Store`` (Azure Storage), so a killed devhost resumes where it stopped:

* history is saved before effects; ``reconcile()`` at start, and after a storage error in the dispatcher,
  re-creates effects of anything scheduled but unfinished (deterministic ids make that idempotent), and a
  re-delivered message is dropped by its id; an activity's first completion wins, as in DTFx (fidelity row 20);
* a completion for a task id the history never scheduled fails the orchestration (the SDK would otherwise only warn
  and wait forever);
* ``call_*_with_retry``: the SDK expects the host to interleave a timer and a re-schedule after each failure, consuming
  sequence numbers in replay order. devhost delivers such a failure (and the retry timer's firing) as the last event
  of its episode, so the numbers the SDK assigns are "all new actions of this episode, then the retry task".

Polling: both dispatchers list their table every ``poll_s`` (0.1 s) while there is work, and back off, doubling up to
``idle_poll_max_s`` (1 s), while there is none; what this engine itself queues wakes them at once (a start, an
event, an activity's completion, a child's end: ``wake``; a work item: ``activity_wake``), and the orchestration
dispatcher's wait ends when its earliest timer is due. Why: an idle devhost listed both tables ten times a second,
~6 % of a core for itself and as much again for Azurite, through every test and demo minute it waited on workers.
The Durable extension's Azure Storage provider backs off further (``maxQueuePollingInterval``, 30 s by default:
docs durable-functions-host-json-settings, ``extensions.durableTask.storageProvider``; fidelity row 42); only a
message another process writes waits for a backed-off poll here, at most ``idle_poll_max_s``.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Callable

import azure.functions as func
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from devhost import history as h
from devhost.functions import AppIndex
from devhost.hostjson import DEFAULT_MAX_ORCHESTRATION_ACTIONS
from devhost.metrics import Metrics, Timer
from devhost.status_history import management_history, parse_to_jtoken
from devhost.store import TERMINAL, Store
from devhost.timeouts import FunctionTimeout, call_with_timeout

logger = logging.getLogger("devhost.engine")
OUT_OF_PROC = "$OutOfProcData$:"
ANY_EXECUTION = "*"


class UnknownFunction(LookupError):
    """No orchestrator of that name (the extension's ``ThrowIfFunctionDoesNotExist``: an ``ArgumentException``)."""


class InstanceNotFound(LookupError):
    """No instance with that id (the management API answers 404)."""


class InstanceGone(RuntimeError):
    """The instance has finished (the management API answers 410)."""


class InvalidInstanceId(ValueError):
    """An instance id the extension refuses (``DurableClient.StartNewAsync``: an ``ArgumentException``)."""


class OrchestrationAlreadyExists(RuntimeError):
    """``start_new`` on an id whose instance is Running/Pending/ContinuedAsNew/Suspended: DTFx's
    ``OrchestrationAlreadyExistsException`` (the extension's default ``OverridableExistingInstanceStates`` is
    ``NonRunningStates``, and its Azure Storage provider sets ``ThrowExceptionOnInvalidDedupeStatus``)."""


# OverridableStates.cs ``NonRunning``: the states an existing instance must NOT be in for start_new to replace it.
DEDUPE_STATUSES = ("Running", "ContinuedAsNew", "Pending", "Suspended")
IDLE_POLL_MAX_S = 1.0  # module docstring: Polling
MAX_INSTANCE_ID_LENGTH = 256  # DurableClient.cs MaxInstanceIdLength
MAX_CUSTOM_STATUS_KB = 16  # DurableOrchestrationContext.SetCustomStatus: MaxCustomStatusPayloadSizeInKB


def validate_instance_id(instance_id: str) -> None:
    """Refuse what ``DurableClient.StartNewAsync`` refuses, with its messages (the ``ArgumentException`` there is
    constructed with message and parameter name swapped, so .NET's ``Message`` reads as below)."""
    if instance_id.startswith("@"):
        raise InvalidInstanceId("instanceId (Parameter 'Orchestration instance ids must not start with @.')")
    if any(c in "/\\?#" or _is_control(c) for c in instance_id):
        raise InvalidInstanceId("instanceId (Parameter 'Orchestration instance ids must not contain /, \\, #, ?, or "
                                "control characters.')")
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        raise InvalidInstanceId(f"Instance ID lengths must not exceed {MAX_INSTANCE_ID_LENGTH} characters.")


MAX_DELAY_MS = 6 * 24 * 3600 * 1000  # ext AzureStorageDurabilityProvider.MaximumDelayTime


def unknown_function_message(name: str, kind: str, known: list[str]) -> str:
    """ext ``DurableTaskExtension.GetInvalidActivityFunctionMessage`` / ``GetInvalidOrchestratorFunctionMessage``."""
    listed = "', '".join(known)
    return (f"The function '{name}' doesn't exist, is disabled, or is not an {kind} function. Additional info: "
            + (f"The following are the known {kind} functions: '{listed}'." if known
               else f"No {kind} functions are currently registered!"))


def shim_refusal(action: dict[str, Any], instance_id: str, parent_id: str | None,
                 activities: dict[str, str], orchestrators: dict[str, str]) -> str | None:
    """What the extension throws when the out-of-proc shim schedules ``action``, or None.

    Why: ext ``Listener/OutOfProcOrchestrationShim.cs`` ``InvokeAPIFromAction`` hands each action to
    ``ContextImplementations/DurableOrchestrationContext.cs`` ``CallDurableTaskFunctionAsync``, which checks, in this
    order: retry intervals of at most 6 days, the function exists (``DurableTaskExtension.ThrowIfFunctionDoesNotExist``;
    ``FunctionName`` compares OrdinalIgnoreCase), a sub-orchestration's id is not the orchestration's own or its
    parent's (OrdinalIgnoreCase) and does not start with '@'. That method is ``async``, so its ArgumentException
    faults the call's task, which ``ProcessAsyncActionsV2`` awaits in a ``try`` that silently ignores it: on Azure
    the action is dropped (no history event) and the instance is not failed; one waiting on it stays Running forever.
    devhost fails the instance with the message instead (stricter; fidelity row 45). ``activities`` /
    ``orchestrators``: the app's names, lower-cased -> as registered, in order.
    """
    t = action.get("actionType")
    name = str(action.get("functionName") or "")
    retry = action.get("retryOptions") or {}
    for field, parameter in (("maxRetryIntervalInMilliseconds", "MaxRetryInterval"),
                             ("firstRetryIntervalInMilliseconds", "FirstRetryInterval")):
        # first of all: ext AzureStorageDurabilityProvider.ValidateDelayTime (MaximumDelayTime, 6 days); the SDK sends
        # no maxRetryInterval (RetryOptions defaults it to 6 days, which passes)
        if t in (h.CALL_ACTIVITY_WITH_RETRY, h.CALL_SUBORCH_WITH_RETRY) and int(retry.get(field) or 0) > MAX_DELAY_MS:
            return ("The Azure Storage provider supports a maximum of 6 days for time-based delays (Parameter "
                    f"'{parameter}')")
    if t in (h.CALL_ACTIVITY, h.CALL_ACTIVITY_WITH_RETRY):
        if name.lower() not in activities:
            return unknown_function_message(name, "activity", list(activities.values()))
    elif t in (h.CALL_SUBORCH, h.CALL_SUBORCH_WITH_RETRY):
        if name.lower() not in orchestrators:
            return unknown_function_message(name, "orchestrator", list(orchestrators.values()))
        child = action.get("instanceId")
        if child is not None and (child.lower() == instance_id.lower()
                                  or (parent_id is not None and child.lower() == parent_id.lower())):
            return ("The instance ID of a sub-orchestration must be different than the instance ID of a parent "
                    "orchestration.")
        if child is not None and child.startswith("@"):
            # ArgumentException(nameof(instanceId), "...") : message and parameter name swapped, as in DurableClient
            return "instanceId (Parameter 'Orchestration instance ids must not start with @')"
    return None


def _is_control(c: str) -> bool:
    """.NET ``char.IsControl``: U+0000-U+001F and U+007F-U+009F."""
    return ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F


def custom_status_error(custom: Any) -> str | None:
    """The extension's refusal of a custom status over 16 KB, or None.

    ``MessagePayloadDataConverter.Serialize(value, 16)``: the compact JSON's UTF-16 byte count, divided by 1024 and
    truncated, must not exceed 16; so about 8,700 characters of compact JSON pass and no more.
    """
    if custom is None:
        return None
    text = json.dumps(custom, separators=(",", ":"), ensure_ascii=False)
    size_kb = int(len(text.encode("utf-16-le")) / 1024.0)
    if size_kb > MAX_CUSTOM_STATUS_KB:
        return (f"The UTF-16 size of the JSON-serialized payload must not exceed {MAX_CUSTOM_STATUS_KB:,} KB. "
                f"The current payload size is {size_kb:,} KB.")
    return None


def episode_status(custom: Any, carried: str | None) -> str:
    """The custom status an episode leaves, as stored text ("" for none; fidelity rows 33 and 43).

    ``custom``: what the SDK's replay returned (a falsy status is left out, ``OrchestratorState.to_json``).
    ``carried``: for the first episode of a generation gone on as new, what the episode that went on as new set ("" for
    none; devhost stores it with the new generation's start, ``_finish_episode``), else None.

    Why: the out-of-proc shim sets a status only when the replay returned one (ext
    ``Listener/OutOfProcOrchestrationShim.cs`` ``ScheduleDurableTaskEvents``), on a fresh context; one over 16 KB is
    refused by ``SetCustomStatus`` (none is set); dtfx ``TaskOrchestrationDispatcher.ExecuteOrchestrationAsync``
    stores ``runtimeState.Status = result?.CustomStatus`` and ``AzureTableTrackingStore.UpdateStateAsync`` writes
    ``Status ?? "null"``: an episode that set none stores none. The one exception is the continue-as-new work item:
    the dispatcher runs the new generation's first episode in it (``carryOverStatus``, then
    ``runtimeState.Status ?? carryOverStatus`` before the work item is completed), so that episode alone keeps the
    status the episode before it set, failing or not.
    """
    own = "" if custom is None or custom_status_error(custom) else json.dumps(custom)
    return own or (carried or "")


class _UnscheduledCompletion(Exception):
    """A completion arrived for a task id the history never scheduled; the orchestration fails (a host bug)."""


# The one retry failure or retry-timer firing an episode delivers last: (message, its event, "fail" or "timer").
_Special = tuple[dict[str, Any], dict[str, Any], str]


def _new_doc(execution_id: str) -> dict[str, Any]:
    return {"execution_id": execution_id, "history": [], "input": None, "recorded": [], "action_ids": [],
            "next_seq": 0, "open": {}, "done": [], "consumed": []}


CONTINUED_START = "continued"  # the start message of a generation gone on as new (its row key's prefix)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _start_event_first(doc: dict[str, Any], new_events: list[dict[str, Any]]) -> bool:
    """Move the ``ExecutionStarted`` event to the front of a new history's events; False when there is none yet.

    Why: a history must begin with its start event, but the episode's messages come sorted by row key, and an event
    raised right after the start (its key is a timestamp) sorts before ``start-<execution>``.
    """
    if not doc["history"] and new_events[0]["EventType"] != h.EXECUTION_STARTED:
        starts = [e for e in new_events if e["EventType"] == h.EXECUTION_STARTED]
        if not starts:
            return False
        new_events.remove(starts[0])
        new_events.insert(0, starts[0])
    return True


def _shim_limit(actions: list[Any], doc: dict[str, Any]) -> int:
    """How many of the replay's sequence-numbered actions the extension has scheduled: all of them, unless a
    top-level ``task_all`` (WhenAll) has a member still running and actions follow it.

    Why: the out-of-process shim issues an orchestrator's top-level actions in order and awaits each
    (ext ``OutOfProcOrchestrationShim.cs`` ``ProcessAsyncActionsV2``), a WhenAll as .NET's ``Task.WhenAll``, which
    ends only when every member has; the Python SDK's ``task_all`` fails as soon as one member fails, so an
    orchestrator can go on past it (its ``except``), but what it does next is scheduled on Azure only once the other
    members have ended. A member counts as ended once recorded and no longer open (completed, failed, fired, or
    cancelled)."""
    tops = [a for group in actions for a in (group if isinstance(group, list) else [group])]
    position = 0
    for index, top in enumerate(tops):
        members = [a for a in h.flatten([top]) if a.get("actionType") != h.WAIT_FOR_EXTERNAL_EVENT]
        if top.get("actionType") == h.WHEN_ALL and index + 1 < len(tops):
            ids = doc["action_ids"][position:position + len(members)]
            if len(ids) < len(members) or any(str(sid) in doc["open"] for sid in ids):
                return position + len(members)
        position += len(members)
    return position


def _continued_as_new(state: dict[str, Any]) -> tuple[str, Any] | None:
    """``("continue", input)`` when the orchestrator's actions include ``continue_as_new``, else None.

    Read from all the actions of this replay, not only its new ones: an orchestrator held by open tasks (see
    ``_finish_episode``) returns the same action again in a later episode, when it is no longer new."""
    for a in h.flatten(state.get("actions") or []):
        if a.get("actionType") == h.CONTINUE_AS_NEW:
            return ("continue", a.get("input"))
    return None


def _append_to_history(doc: dict[str, Any], new_events: list[dict[str, Any]], consumed: list[dict[str, Any]],
                       special: _Special | None, now: Any) -> None:
    """Append an ``OrchestratorStarted`` and ``new_events`` to the history, as the Durable extension does.

    Earlier events are marked played, so the SDK replays them; completions close their open task ids (except the
    retry chain's own, which ``_record_actions`` handles); the consumed message ids are kept, so a message
    re-delivered after a crash is dropped.
    """
    for e in doc["history"]:
        e["IsPlayed"] = True
    doc["history"].append(h.event(h.ORCHESTRATOR_STARTED, at=now))
    for e in new_events:
        doc["history"].append({**e, "Timestamp": h.ts(now), "IsPlayed": False})
        tid = e.get("TimerId") if e["EventType"] == h.TIMER_FIRED else e.get("TaskScheduledId")
        if e["EventType"] in h.COMPLETIONS or e["EventType"] == h.TIMER_FIRED:
            doc["done"].append(tid)
            if special is None or e is not special[1]:
                doc["open"].pop(str(tid), None)  # the retry chain's own entry is handled with the actions
    doc["consumed"].extend(m["RowKey"] for m in consumed)


class Engine:
    def __init__(self, index: AppIndex, store: Store, activity_workers: int = 4, poll_s: float = 0.1,
                 function_timeout_s: float | None = None, idle_poll_max_s: float = IDLE_POLL_MAX_S,
                 max_orchestration_actions: int = DEFAULT_MAX_ORCHESTRATION_ACTIONS) -> None:
        self.index = index
        self.max_orchestration_actions = max_orchestration_actions  # host.json maxOrchestrationActions (row 47)
        # the app's function names as the extension compares them (FunctionName: OrdinalIgnoreCase; shim_refusal)
        self._activity_names = {name.lower(): name for name in index.activities}
        self._orchestrator_names = {name.lower(): name for name in index.orchestrators}
        self.store = store
        self.poll_s = poll_s
        self.idle_poll_max_s = max(poll_s, idle_poll_max_s)  # module docstring: Polling
        self.function_timeout_s = function_timeout_s  # host.json functionTimeout, applied to activities
        self.pool = ThreadPoolExecutor(max_workers=activity_workers, thread_name_prefix="activity")
        self._inflight: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        # set once a stop's grace for the activities in flight is over: a completion after it is not recorded (the
        # work item stays, so the activity runs again at the next start), as Azurite may be stopping (Engine.stop)
        self._closed = threading.Event()
        self._running = 0  # activities running now (_run_activity), which a stop gives its grace to
        self._threads: list[threading.Thread] = []
        self.wake = threading.Event()
        self.activity_wake = threading.Event()  # set with each work item this engine queues (module docstring: Polling)
        self.metrics = Metrics()  # benchmark counters (devhost.metrics); instrumentation only
        # set by the host once it serves: its event loop (async activities run there, as the worker runs them on its
        # own loop) and the durable client binding an activity with ``durable_client_input`` receives
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client_binding: Callable[[], str] | None = None

    # ----------------------------------------------------------------- control
    def start(self) -> None:
        self.reconcile()
        for target, name in ((self._orchestration_loop, "orchestrations"), (self._activity_loop, "activities")):
            t = threading.Thread(target=target, name=f"devhost-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, grace_s: float = 0.0, hurry: threading.Event | None = None) -> int:
        """Stop dispatching, then give the activities running now up to ``grace_s`` seconds (cut short when
        ``hurry`` is set) to finish and record their completion; returns how many still run. Their completions are
        not recorded after that, so each runs again at the next start (its work item stays in storage), as after a
        kill (devhost/stopping.py). Work items not yet started are not started."""
        self._stop.set()
        self.wake.set()
        self.activity_wake.set()
        for t in self._threads:
            t.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace_s
        while self.running_activities() and time.monotonic() < deadline and not (hurry and hurry.is_set()):
            time.sleep(0.05)
        with self._lock:
            self._closed.set()
            return self._running

    def running_activities(self) -> int:
        with self._lock:
            return self._running

    # ------------------------------------------------------------- client API
    def start_orchestration(self, name: str, input_json: str | None, instance_id: str | None = None,
                            parent: tuple[str, int, str] | None = None) -> str:
        """Start (or, for a finished id, replace) an instance.

        A client start (``parent`` None) is checked as ``DurableClient.StartNewAsync`` checks it, in its order: the
        orchestrator must exist, the id must be valid, and an instance with that id must not be running or pending
        (``OrchestrationAlreadyExists``). The check and the start happen under the engine lock, so of two racing
        starts of one id exactly one wins. Sub-orchestration starts (``parent`` given) come from the engine itself.
        """
        if name not in self.index.orchestrators:
            raise UnknownFunction(unknown_function_message(name, "orchestrator", list(self.index.orchestrators)))
        iid = instance_id or uuid.uuid4().hex
        if parent is None:
            validate_instance_id(iid)
        with self._lock:
            if parent is None:
                existing = self.store.get_instance(iid)
                if existing is not None and existing.get("Status") in DEDUPE_STATUSES:
                    raise OrchestrationAlreadyExists(f"An Orchestration instance with the status {existing['Status']} "
                                                     "already exists.")
            return self._start(name, input_json, iid, parent)

    def _start(self, name: str, input_json: str | None, iid: str, parent: tuple[str, int, str] | None) -> str:
        execution_id = uuid.uuid4().hex
        self.store.delete_messages_of(iid)
        self.store.delete_history(iid)
        now = h.ts(h.utcnow())
        self.store.put_instance(iid, Name=name, Status="Pending", Input=input_json if input_json is not None else "",
                                InputIsNull=input_json is None, Output="", CustomStatus="", Error="",
                                CreatedTime=now, UpdatedTime=now, ExecutionId=execution_id,
                                ParentInstanceId=parent[0] if parent else "", ParentTaskId=parent[1] if parent else -1,
                                ParentExecutionId=parent[2] if parent else "")
        self._add_start_message(iid, name, input_json, execution_id, parent)
        logger.info("[%s] started orchestration %s", iid, name)
        self.wake.set()
        return iid

    def _add_start_message(self, iid: str, name: str, input_json: str | None, execution_id: str,
                           parent: tuple[str, int, str] | None, continued: bool = False) -> None:
        ev = h.event(h.EXECUTION_STARTED, Name=name, Input=input_json, Version="",
                     OrchestrationInstance={"InstanceId": iid, "ExecutionId": execution_id},
                     ParentInstance={"OrchestrationInstance": {"InstanceId": parent[0]}, "TaskScheduleId": parent[1]}
                     if parent else None)
        self.store.add_message(iid, ev, execution_id,
                               message_id=f"{CONTINUED_START if continued else 'start'}-{execution_id}")

    def raise_event(self, instance_id: str, name: str, data_json: str | None) -> None:
        inst = self.store.get_instance(instance_id)
        if inst is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' was found.")
        if inst["Status"] in TERMINAL:
            raise InstanceGone(f"Cannot raise event {name} for orchestration instance {instance_id} because instance "
                               f"is in {inst['Status']} state")
        self.store.add_message(instance_id, h.event(h.EVENT_RAISED, Name=name, Input=data_json), ANY_EXECUTION)
        self.wake.set()

    def terminate(self, instance_id: str, reason: str) -> None:
        """Terminate a running or pending instance; a waiting parent sees its sub-orchestration fail with ``reason``,
        as DTFx's ``TaskOrchestrationDispatcher`` sends a ``SubOrchestrationInstanceFailedEvent`` for a Terminated
        child. The instance's own children are not terminated (DTFx does not cascade either). A started instance's
        custom status becomes what the orchestrator's replay over its history and the terminate sets, as the
        extension runs the terminate as an episode (``_terminate_replay_status``; fidelity row 48)."""
        with self._lock:
            inst = self.store.get_instance(instance_id)
            if inst is None:
                raise InstanceNotFound(f"No instance with ID '{instance_id}' was found.")
            if inst["Status"] in TERMINAL:
                raise InstanceGone(f"Cannot terminate the orchestration instance {instance_id} because instance is in "
                                   f"the {inst['Status']} state.")
            doc = self.store.load_history(instance_id)
            fields: dict[str, Any] = {}
            if doc is not None:
                terminated = h.event(h.EXECUTION_TERMINATED, Input=json.dumps(reason))
                started = any(e["EventType"] == h.EXECUTION_STARTED for e in doc["history"])
                current = (doc if doc.get("execution_id") == inst.get("ExecutionId") else
                           self._continued_start(instance_id, inst)) if started else None  # never started: as is
                if current is not None:
                    fields["CustomStatus"] = self._terminate_replay_status(instance_id, inst, current, terminated)
                doc["history"].append(terminated)
                self.store.save_history(instance_id, doc)
            # the reason as given, as dtfx's AzureTableTrackingStore writes it to Output (fidelity row 40); the
            # status parses it as the extension does (status_from)
            self.store.put_instance(instance_id, Status="Terminated", Output=reason, UpdatedTime=h.ts(h.utcnow()),
                                    **fields)
            self.store.delete_messages_of(instance_id)
            # its queued activities stay queued and run (fidelity row 49): their completions find it terminated
            self._notify_parent({**inst, "Output": reason, "Error": reason}, "Terminated")
        logger.info("[%s] terminated: %s", instance_id, reason)

    def _continued_start(self, iid: str, inst: dict[str, Any]) -> dict[str, Any] | None:
        """The history a generation gone on as new has on Azure once the work item that went on as new is done, when
        devhost has not run that generation's first episode yet (its ``continued-<execution>`` start message still
        queued), else None. Only for the terminate's replay (``terminate``), never saved.

        Why: dtfx ``TaskOrchestrationDispatcher.OnProcessWorkItemAsync`` runs that first episode in the work item
        that went on as new (fidelity rows 33, 35), so on Azure a terminate always comes after it and its replay
        covers the new generation: it stores what that generation sets, or none (row 48), never the status carried
        over. devhost runs the first episode as a work item of its own, and a terminate may come in between. The
        history is the generation's start as dtfx writes it (``OrchestratorStarted``, ``ExecutionStarted``,
        ``OrchestratorCompleted``); the first episode's own actions would add nothing the replay's status depends on.
        """
        message = self.store.message(iid, f"{CONTINUED_START}-{inst.get('ExecutionId', '')}")
        if message is None and not inst.get("ExecutionId"):
            return None  # nothing names the new generation
        # the start message not queued yet (the instance already names the new execution): its start from the row
        start = self.store.message_event(message) if message is not None else h.event(
            h.EXECUTION_STARTED, Name=inst.get("Name"), Input=None if inst.get("InputIsNull") else inst.get("Input"))
        doc = _new_doc(str(inst.get("ExecutionId", "")))
        doc["input"] = start.get("Input")
        _append_to_history(doc, [start, h.event(h.ORCHESTRATOR_COMPLETED)], [], None, h.utcnow())
        return doc

    def _terminate_replay_status(self, iid: str, inst: dict[str, Any], doc: dict[str, Any],
                                 terminated: dict[str, Any]) -> str:
        """The custom status a terminate leaves, as stored text ("" for none): what the orchestrator's replay over its
        history and the terminate sets (fidelity row 48).

        Why replay: on Azure a terminate of a started instance is an orchestration episode like any other. dtfx
        ``TaskOrchestrationDispatcher`` runs the work item holding ``ExecutionTerminatedEvent`` through
        ``ExecuteOrchestrationAsync``, the extension's ``OrchestrationMiddleware`` invokes the Python orchestrator with
        the whole history (``OrchestrationTriggerAttributeBindingProvider.OrchestrationContextToString``), the SDK
        replays it (it ignores ``ExecutionTerminated``, ``TaskOrchestrationExecutor.process_event``) and returns its
        last ``set_custom_status`` (omitted when falsy, ``OrchestratorState.to_json``), the out-of-proc shim sets it on
        a fresh context (``OutOfProcOrchestrationShim.ScheduleDurableTaskEvents``), dtfx
        ``TaskOrchestrationContext.HandleExecutionTerminatedEvent`` ends the instance Terminated and
        ``TaskOrchestrationExecutor.ExecuteCore`` returns ``CustomStatus = GetStatus()``, which the dispatcher stores
        (``runtimeState.Status = result?.CustomStatus``) and ``AzureTableTrackingStore.UpdateStateAsync`` writes
        (``CustomStatus = Status ?? "null"``). So an unchanged orchestrator shows its last status again, a
        generation that set none yet shows none (the status carried over ``continue_as_new``, row 33, is gone), an
        orchestrator deployed anew in between shows what the new code sets, and one that raises in this replay
        shows what it set before raising (the instance stays Terminated: ``CompleteOrchestration`` ignores the
        failure after the terminate). A status over 16 KB is refused by ``SetCustomStatus``, and an orchestrator the
        app no longer has is not run (``GetInvalidOrchestratorFunctionMessage``): none is stored.
        devhost drops the messages queued for the instance (row 2's timing), so no new completion reaches the
        replay; on Azure one delivered in the terminate's batch would.
        """
        if inst.get("Name") not in self.index.orchestrators:  # the shim fails it unrun: no status is set
            return ""
        replay_doc = {**doc, "history": [{**e, "IsPlayed": True} for e in doc["history"]]
                      + [h.event(h.ORCHESTRATOR_STARTED, at=h.utcnow()), {**terminated, "IsPlayed": False}]}
        custom = self._replay(iid, inst, replay_doc).get("customStatus")
        return "" if custom is None or custom_status_error(custom) else json.dumps(custom)

    def status(self, instance_id: str, show_input: bool = True, show_history: bool = False,
               input_as_text: bool = False, show_history_output: bool = False) -> dict[str, Any] | None:
        """The management API's status of one instance (``HttpApiHandler.HandleGetStatusRequestAsync``).

        ``historyEvents`` (``show_history``) is the current execution's history in the extension's shape
        (``devhost.status_history``; fidelity row 39), not devhost's own: absent for a Pending instance, as ext
        ``DurableClient.GetDurableOrchestrationStatusAsync`` reads no history for one and the payload omits a null
        ``historyEvents`` (``StatusResponsePayload``: ``EmitDefaultValue = false``)."""
        inst = self.store.get_instance(instance_id)
        if inst is None:
            return None
        out = self.status_from(inst, show_input, input_as_text)
        if show_history and inst.get("Status") != "Pending":
            doc = self.store.load_history(instance_id)
            current = doc["history"] if doc and doc.get("execution_id") == inst.get("ExecutionId") else []
            out["historyEvents"] = management_history(current, show_input, show_history_output)
        return out

    @staticmethod
    def status_from(inst: dict[str, Any], show_input: bool = True, input_as_text: bool = False) -> dict[str, Any]:
        """The management API's status payload (``StatusResponsePayload``) of an instance entity.

        ``input_as_text`` (what the management API answers): the input as the JSON text it was started with, a string,
        as the extension answers every instance the Python SDK starts (fidelity row 37); else parsed (tests)."""
        out: dict[str, Any] = {
            "name": inst.get("Name"), "instanceId": inst.get("InstanceId"), "runtimeStatus": inst.get("Status"),
            "createdTime": h.status_time(inst.get("CreatedTime")),
            "lastUpdatedTime": h.status_time(inst.get("UpdatedTime")),
            "customStatus": json.loads(inst["CustomStatus"]) if inst.get("CustomStatus") else None,
            # ext DurableClient.ConvertFrom: Output = ParseToJToken(state.Output); devhost's Completed and Failed
            # outputs are JSON text, a Terminated one the raw reason, blank included (fidelity row 40)
            "output": (parse_to_jtoken(inst.get("Output") or "") if inst.get("Status") == "Terminated"
                       else parse_to_jtoken(inst["Output"]) if inst.get("Output") else None),
            "input": None,
        }
        if show_input:
            text = None if inst.get("InputIsNull") or not inst.get("Input") else str(inst["Input"])
            out["input"] = text if input_as_text or text is None else json.loads(text)
        return out

    def purge(self, instance_id: str) -> bool:
        """Delete an instance and all it left in storage; False if there is none."""
        with self._lock:
            if self.store.get_instance(instance_id) is None:
                return False
            self.store.delete_instance(instance_id)
            self.store.delete_messages_of(instance_id)
            self.store.delete_activities_of(instance_id)
        return True

    def purge_where(self, created_from: str, created_to: str, statuses: tuple[str, ...]) -> int:
        """Purge the instances created in [created_from, created_to] (and in ``statuses``, if any); how many."""
        deleted, after = 0, ""
        while True:
            page, more = self.store.query_instances(statuses=statuses, created_from=created_from,
                                                    created_to=created_to, after=after, top=100)
            for inst in page:
                deleted += self.purge(inst["InstanceId"])
            if not more or not page:
                return deleted
            after = page[-1]["InstanceId"]

    # -------------------------------------------------------------- recovery
    def _recover_after_error(self) -> None:
        """After a storage error inside an episode: history is saved before effects, so an episode cut between the two
        has recorded what it scheduled but queued none of it, and its messages, already in history, are then dropped
        as consumed; nothing would ever run the scheduled work (a 20,000-image benchmark hung on one Azurite
        connection reset). The Durable extension loses no work here: a work item that fails to commit is abandoned
        and its messages come back. So repair as at start-up, under the dispatcher's lock."""
        try:
            with self._lock:
                self.reconcile()
        except Exception:  # storage still failing: the next error retries the repair
            logger.exception("reconcile after a dispatcher error failed")

    def reconcile(self) -> None:
        """Re-create the effects of work that history scheduled but storage lost (a crash between the two).

        Safe while activities run: their rows are read before the messages. A running activity either still has its
        row, or has already queued its completion message (it queues, then deletes the row), which the later read of
        the messages then sees; read the other way round, an activity finishing in between would look lost and run
        twice. The dispatcher's lock (held by callers other than start-up) keeps episodes from consuming messages
        meanwhile."""
        activities = {(a["InstanceId"], a["ExecutionId"], int(a["TaskId"])) for a in self.store.list_activities()}
        messages = list(self.store.list_messages())
        pending_completions = set()
        for m in messages:
            ev = self.store.message_event(m)
            tid = ev.get("TaskScheduledId", ev.get("TimerId"))
            if tid is not None:
                pending_completions.add((m["InstanceId"], m["ExecutionId"], int(tid)))
        for inst in self.store.list_instances():
            if inst.get("Status") in TERMINAL:
                continue
            iid = inst["InstanceId"]
            execution = inst["ExecutionId"]
            doc = self.store.load_history(iid)
            if doc is None or doc["execution_id"] != execution:
                if not any(m["InstanceId"] == iid and m["ExecutionId"] == execution for m in messages):
                    parent = ((inst["ParentInstanceId"], int(inst["ParentTaskId"]), inst.get("ParentExecutionId", ""))
                              if inst.get("ParentInstanceId") else None)
                    self._add_start_message(iid, inst["Name"], None if inst.get("InputIsNull") else inst.get("Input"),
                                            execution, parent)
                continue
            for key, spec in doc["open"].items():
                tid = int(key)
                if (iid, execution, tid) in pending_completions:
                    continue
                if spec["kind"] == "activity" and (iid, execution, tid) not in activities:
                    self.store.add_activity(iid, execution, tid, spec["name"], spec["input"])
                    self.activity_wake.set()
                elif spec["kind"] == "timer":
                    self._schedule_timer(iid, execution, tid, spec["fire_at"])
                elif spec["kind"] == "suborch":
                    child = self.store.get_instance(spec["child"])
                    if child is None or child.get("ParentInstanceId") != iid:
                        self.start_orchestration(spec["name"], spec["input"], spec["child"], (iid, tid, execution))
                    elif child.get("Status") in TERMINAL:
                        self._notify_parent(child, child["Status"])
        logger.info("reconciled %d instances", len(self.store.list_instances()))

    # ------------------------------------------------------ orchestration loop
    def _orchestration_loop(self) -> None:
        idle = self.poll_s
        while not self._stop.is_set():
            worked = False
            next_due = ""  # the earliest message not due yet (a timer): the wait ends there
            try:
                now = h.ts(h.utcnow())
                due: dict[str, list[dict[str, Any]]] = {}
                for m in self.store.list_messages():
                    if not m.get("Due") or m["Due"] <= now:
                        due.setdefault(m["InstanceId"], []).append(m)
                    elif not next_due or m["Due"] < next_due:
                        next_due = m["Due"]
                for iid, msgs in due.items():
                    if self._stop.is_set():
                        break
                    with self._lock:
                        worked |= self._episode(iid, sorted(msgs, key=lambda m: m["RowKey"]))
            except Exception:  # storage hiccup: log, back off, go on (state is in storage)
                logger.exception("orchestration dispatcher error")
                time.sleep(1)
                self._recover_after_error()
            if worked:
                idle = self.poll_s
                continue
            wait = idle
            if next_due:
                wait = min(wait, max(0.0, (h.parse_ts(next_due) - h.utcnow()).total_seconds()) + 0.01)
            self.wake.wait(wait)
            if self.wake.is_set():
                idle = self.poll_s
            else:
                idle = min(idle * 2, self.idle_poll_max_s)
            self.wake.clear()

    def _fail(self, iid: str, inst: dict[str, Any], doc: dict[str, Any], message: str,
              status: str | None = None) -> None:
        """Fail the instance with ``message``; ``status``: the custom status the failing episode leaves, as stored
        text (``episode_status``: "" for none), or None where no episode ran (devhost's own failures), which leaves
        the stored one."""
        logger.error("[%s] orchestration failed: %s", iid, message)
        doc["history"].append(h.event(h.EXECUTION_FAILED, Reason=message))
        self.store.save_history(iid, doc)
        fields: dict[str, Any] = {}
        if status is not None:
            fields["CustomStatus"] = status
        self.store.put_instance(iid, Status="Failed", Output=json.dumps(message), Error=message,
                                UpdatedTime=h.ts(h.utcnow()), **fields)
        self._notify_parent({**inst, "Output": json.dumps(message), "Error": message}, "Failed")

    def _episode(self, iid: str, msgs: list[dict[str, Any]]) -> bool:
        """Run one episode of instance ``iid`` on its due ``msgs`` (see the module docstring); returns whether it
        did any work, so the dispatcher loop knows whether to sleep.
        """
        inst = self.store.get_instance(iid)
        if inst is None or inst["Status"] in TERMINAL:
            return self._delete_messages(msgs)
        execution = inst["ExecutionId"]
        doc = self._current_history(iid, execution)
        try:
            new_events, consumed, special = self._sort_messages(doc, execution, msgs)
        except _UnscheduledCompletion as exc:
            self._fail(iid, inst, doc, str(exc))
            self._delete_messages(msgs)
            return True
        if not new_events:
            return self._delete_messages(consumed)
        if not _start_event_first(doc, new_events):
            return False  # nothing can happen before the start message arrives

        now = h.utcnow()
        continued = not doc["history"] and any(m["RowKey"].startswith(CONTINUED_START + "-") for m in consumed)
        if continued:
            # dtfx TaskOrchestrationDispatcher: a generation gone on as new begins OrchestratorStarted,
            # ExecutionStarted, OrchestratorCompleted; its first episode's events follow (fidelity row 35)
            new_events.insert(1, h.event(h.ORCHESTRATOR_COMPLETED))
        _append_to_history(doc, new_events, consumed, special, now)
        # that first episode runs in the work item that went on as new on Azure: it keeps the status carried over,
        # which the episode that went on as new stored (_finish_episode)
        carried = str(inst.get("CustomStatus") or "") if continued else None
        self._replay_and_apply(iid, inst, doc, special, now, carried)
        self._delete_messages(consumed)
        return True

    def _delete_messages(self, msgs: list[dict[str, Any]]) -> bool:
        """Delete ``msgs`` from the queue; returns whether there were any (deleting them counts as work done)."""
        for m in msgs:
            self.store.delete_message(m)
        return bool(msgs)

    def _current_history(self, iid: str, execution: str) -> dict[str, Any]:
        """The saved history of ``execution``, or an empty one.

        Why check the execution id: after ``continue_as_new`` the store still holds the previous execution's
        history until the new one's first episode saves over it.
        """
        doc = self.store.load_history(iid)
        if doc is None or doc["execution_id"] != execution:
            doc = _new_doc(execution)
        return doc

    def _sort_messages(self, doc: dict[str, Any], execution: str, msgs: list[dict[str, Any]]
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], _Special | None]:
        """Split ``msgs`` into the events this episode delivers and the messages it consumes.

        Returns ``(new_events, consumed, special)``. Stale, duplicate and already-delivered messages are consumed
        without an event. ``special`` is the one retry failure or retry-timer firing this episode delivers, last
        (the sequence numbering in the module docstring needs that); the others stay queued for later episodes.
        Records the start message's input in ``doc``. Raises ``_UnscheduledCompletion`` for a completion of a task
        id the history never scheduled.
        """
        consumed: list[dict[str, Any]] = []
        new_events: list[dict[str, Any]] = []
        special: _Special | None = None
        for m in msgs:
            if m["ExecutionId"] not in (execution, ANY_EXECUTION) or m["RowKey"] in doc["consumed"]:
                consumed.append(m)  # stale (older execution) or already delivered before a crash
                continue
            ev = self.store.message_event(m)
            t = ev["EventType"]
            if t == h.EXECUTION_STARTED:
                if doc["history"]:
                    consumed.append(m)
                    continue
                doc["input"] = ev.get("Input")
            elif t in h.COMPLETIONS or t == h.TIMER_FIRED:
                tid = ev["TimerId"] if t == h.TIMER_FIRED else ev["TaskScheduledId"]
                if tid in doc["done"]:
                    consumed.append(m)  # a duplicate completion (at-least-once activities)
                    continue
                spec = doc["open"].get(str(tid))
                if spec is None:
                    if t == h.TIMER_FIRED:
                        consumed.append(m)
                        continue
                    raise _UnscheduledCompletion(f"devhost received a completion for task id {tid}, which this "
                                                 f"orchestration never scheduled (event type {t}); this is a host bug")
                is_retry_failure = t in (h.TASK_FAILED, h.SUBORCH_FAILED) and spec.get("retry")
                if is_retry_failure or spec.get("retry_timer"):
                    if special is None:
                        special = (m, ev, "timer" if t == h.TIMER_FIRED else "fail")
                    continue  # at most one per episode, delivered last; the rest wait for later episodes
            new_events.append(ev)
            consumed.append(m)
        if special is not None:
            new_events.append(special[1])
            consumed.append(special[0])
        return new_events, consumed, special

    def _replay_and_apply(self, iid: str, inst: dict[str, Any], doc: dict[str, Any], special: _Special | None,
                          now: Any, carried: str | None = None) -> None:
        """Replay the orchestrator over ``doc``, check and record its new actions, then save and carry them out;
        or fail the instance when the orchestrator raised or broke determinism. ``carried``: see ``episode_status``.
        """
        with Timer() as timer:
            state = self._replay(iid, inst, doc)
        self.metrics.orchestrator(inst["Name"], timer.cpu_s, timer.wall_s)
        effects: list[tuple[Any, ...]] = []
        # TaskOrchestrationShim / OutOfProcOrchestrationShim: the custom status is set first (16 KB limit), then an
        # orchestrator error fails the instance as "Orchestrator function '<name>' failed: <error>".
        too_big = custom_status_error(state.get("customStatus"))
        error = f"Orchestrator function '{inst['Name']}' failed: {too_big}" if too_big else None
        if not error:  # the actions an orchestrator returned before it raised are scheduled too (the shim does)
            error = self._record_actions(iid, doc, state, special, now, effects, inst)
        if not error and state.get("error") and not doc["open"] and not doc.get("held_back"):
            error = f"Orchestrator function '{inst['Name']}' failed: {state['error']}"
        if error:
            # dtfx TaskOrchestrationExecutor.ExecuteCore returns GetStatus() after FailOrchestration and
            # TaskOrchestrationDispatcher stores it (runtimeState.Status = result.CustomStatus): a failing episode's
            # custom status stands, as the shim set it before the failure; one over 16 KB, whose SetCustomStatus
            # threw, or none leaves none, unless carried over continue_as_new (episode_status; fidelity row 43)
            self._fail(iid, inst, doc, error, episode_status(state.get("customStatus"), carried))
        else:
            self._finish_episode(iid, inst, doc, state, effects, carried)
        self.metrics.history(iid, len(doc["history"]))

    def _replay(self, iid: str, inst: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
        payload = {"history": doc["history"], "instanceId": iid, "isReplaying": False,
                   "parentInstanceId": inst.get("ParentInstanceId") or None, "input": doc["input"],
                   **h.ORCHESTRATION_CONTEXT_FIELDS}
        handle = self.index.orchestrators[inst["Name"]]
        try:
            return dict(json.loads(handle(func.OrchestrationContext(json.dumps(payload)))))
        except Exception as exc:  # the SDK reports orchestrator exceptions this way
            text = str(exc)
            if OUT_OF_PROC in text:
                state = dict(json.loads(text.split(OUT_OF_PROC, 1)[1]))
                state.setdefault("error", text.split(OUT_OF_PROC, 1)[0].strip())
                return state
            return {"error": f"{text}\n{traceback.format_exc()}"}

    def _record_actions(self, iid: str, doc: dict[str, Any], state: dict[str, Any],
                        special: tuple[dict[str, Any], dict[str, Any], str] | None, now: Any,
                        effects: list[tuple[Any, ...]], inst: dict[str, Any]) -> str | None:
        atomic = h.flatten(state.get("actions") or [])
        seq_actions = [a for a in atomic if a.get("actionType") != h.WAIT_FOR_EXTERNAL_EVENT]
        recorded = doc["recorded"]
        limit = _shim_limit(state.get("actions") or [], doc)
        # the shim schedules (and checks) the actions it reaches in order, every episode, replayed ones included: an
        # action it refuses fails the instance here, unless an earlier action already broke determinism; Azure drops
        # it silently and the instance never ends (row 45: devhost is stricter)
        for i, a in enumerate(seq_actions[:limit]):
            refusal = shim_refusal(a, iid, inst.get("ParentInstanceId") or None, self._activity_names,
                                   self._orchestrator_names)
            if not refusal and i >= self.max_orchestration_actions:
                # ext DurableOrchestrationContext.IncrementActionsOrThrowException (after the existence check)
                refusal = (f"Maximum amount of orchestration actions ({self.max_orchestration_actions}) has been "
                           "reached. This value can be configured in host.json file as MaxOrchestrationActions.")
            if refusal:
                return (h.nondeterminism_error(seq_actions[:i], recorded[:i], doc["action_ids"][:i])
                        or f"Orchestrator function '{inst['Name']}' failed: {refusal}")
        nondeterministic = h.nondeterminism_error(seq_actions, recorded, doc["action_ids"])
        if nondeterministic:
            return nondeterministic
        doc["held_back"] = limit < len(seq_actions)
        for a in seq_actions[len(recorded):limit]:
            sid = doc["next_seq"]
            doc["next_seq"] += 1
            record = h.replay_record(a)
            if a["actionType"] in (h.CALL_SUBORCH, h.CALL_SUBORCH_WITH_RETRY) and not record[2]:
                record[2] = f"{iid}:{sid}"
            recorded.append(record)
            doc["action_ids"].append(sid)
            t = a["actionType"]
            if t not in h.SUPPORTED_ACTIONS:
                return f"devhost does not support action type {t} ({a}); entities and call_http are not emulated"
            if t == h.CONTINUE_AS_NEW:
                pass  # carried out by _finish_episode once nothing is open (_continued_as_new)
            elif t == h.CREATE_TIMER:
                doc["history"].append(h.event(h.TIMER_CREATED, sid, at=now, FireAt=a["fireAt"]))
                if not a.get("isCanceled"):
                    doc["open"][str(sid)] = {"kind": "timer", "fire_at": a["fireAt"]}
                    effects.append(("timer", sid, a["fireAt"]))
            else:
                retry = a.get("retryOptions") if t in (h.CALL_ACTIVITY_WITH_RETRY, h.CALL_SUBORCH_WITH_RETRY) else None
                spec = {"kind": "activity" if t in (h.CALL_ACTIVITY, h.CALL_ACTIVITY_WITH_RETRY) else "suborch",
                        "name": a["functionName"], "input": a.get("input"),
                        "child": a.get("instanceId") or f"{iid}:{sid}",
                        "retry": ({"attempt": 1, "max": int(retry.get("maxNumberOfAttempts", 1)),
                                   "interval_ms": int(retry.get("firstRetryIntervalInMilliseconds", 1000))}
                                  if retry else None)}
                self._schedule(iid, doc, sid, spec, now, effects)
        # timers cancelled by the orchestrator since they were created (task_any losers)
        for idx, a in enumerate(seq_actions):
            if a.get("actionType") == h.CREATE_TIMER and a.get("isCanceled"):
                sid = doc["action_ids"][idx]
                if doc["open"].pop(str(sid), None) is not None:
                    doc["done"].append(sid)
                    effects.append(("cancel_timer", sid))
        if special is not None:
            _, ev, kind = special
            if kind == "fail":
                spec = doc["open"].pop(str(ev["TaskScheduledId"]))
                tid = doc["next_seq"]
                doc["next_seq"] += 1
                fire = h.ts(now + timedelta(milliseconds=spec["retry"]["interval_ms"]))
                doc["history"].append(h.event(h.TIMER_CREATED, tid, at=now, FireAt=fire))
                doc["open"][str(tid)] = {"kind": "timer", "fire_at": fire, "retry_timer": True, "chain": spec}
                effects.append(("timer", tid, fire))
            else:
                spec = doc["open"].pop(str(ev["TimerId"]))["chain"]
                if spec["retry"]["attempt"] < spec["retry"]["max"]:
                    sid = doc["next_seq"]
                    doc["next_seq"] += 1
                    spec = {**spec, "retry": {**spec["retry"], "attempt": spec["retry"]["attempt"] + 1},
                            "child": f"{spec['child']}:retry{spec['retry']['attempt']}"}
                    self._schedule(iid, doc, sid, spec, now, effects)
        return None

    def _schedule(self, iid: str, doc: dict[str, Any], sid: int, spec: dict[str, Any], now: Any,
                  effects: list[tuple[Any, ...]]) -> None:
        if spec["kind"] == "activity":
            doc["history"].append(h.event(h.TASK_SCHEDULED, sid, at=now, Name=spec["name"], Input=spec["input"]))
            effects.append(("activity", sid, spec["name"], spec["input"]))
        else:
            doc["history"].append(h.event(h.SUBORCH_CREATED, sid, at=now, Name=spec["name"],
                                          InstanceId=spec["child"], Input=spec["input"]))
            effects.append(("suborch", sid, spec["name"], spec["input"], spec["child"]))
        doc["open"][str(sid)] = spec

    def _schedule_timer(self, iid: str, execution: str, tid: int, fire_at: str) -> None:
        self.store.add_message(iid, h.event(h.TIMER_FIRED, TimerId=tid, FireAt=fire_at), execution,
                               due=fire_at, message_id=f"timer-{execution}-{tid:06d}")

    def _finish_episode(self, iid: str, inst: dict[str, Any], doc: dict[str, Any], state: dict[str, Any],
                        effects: list[tuple[Any, ...]], carried: str | None = None) -> None:
        execution = doc["execution_id"]
        # An episode stores the status its replay set, or none; only the first episode of a generation gone on as new
        # keeps the one carried over (episode_status; fidelity row 33). Within a generation the SDK replays every
        # set_custom_status, so "none" means this generation has set none yet.
        status = episode_status(state.get("customStatus"), carried)
        fields: dict[str, Any] = {"UpdatedTime": h.ts(h.utcnow())}
        # dtfx TaskOrchestrationExecutor: an orchestrator that returned, raised or went on as new ends its execution
        # only once no task it scheduled is open (activities, sub-orchestrations, timers not cancelled); until then
        # it stays Running and each completion replays it again (fidelity row 26)
        held = bool(doc["open"]) or bool(doc.get("held_back"))
        cont = None if held else _continued_as_new(state)
        if cont is not None:
            doc["history"].append(h.event(h.ORCHESTRATOR_COMPLETED))
            self.store.save_history(iid, doc)
            new_execution = uuid.uuid4().hex
            # on Azure the new generation's first episode runs in this work item, which stores that episode's status,
            # or this one's when it sets none: devhost stores this one's now, and that episode keeps it (_episode).
            # This episode's own, never what was carried into it: dtfx carries the status the episode that went on as
            # new returned (carryOverStatus = workItem.OrchestrationRuntimeState.Status, which
            # ExecuteOrchestrationAsync set to result?.CustomStatus), one continue_as_new only
            self.store.put_instance(iid, Status="Running", ExecutionId=new_execution,
                                    CustomStatus=episode_status(state.get("customStatus"), None),
                                    Input=cont[1] if cont[1] is not None else "", InputIsNull=cont[1] is None, **fields)
            parent = ((inst["ParentInstanceId"], int(inst["ParentTaskId"]), inst.get("ParentExecutionId", ""))
                      if inst.get("ParentInstanceId") else None)
            self._add_start_message(iid, inst["Name"], cont[1], new_execution, parent, continued=True)
            logger.info("[%s] continued as new", iid)
            return
        if state.get("isDone") and not held:
            output = state.get("output")
            doc["history"].append(h.event(h.ORCHESTRATOR_COMPLETED))
            doc["history"].append(h.event(h.EXECUTION_COMPLETED, Result=_json_or_none(output)))
            self.store.save_history(iid, doc)
            self.store.put_instance(iid, Status="Completed", Output=json.dumps(output), CustomStatus=status, **fields)
            logger.info("[%s] completed", iid)
            self._notify_parent({**inst, "Output": json.dumps(output)}, "Completed")
            return
        doc["history"].append(h.event(h.ORCHESTRATOR_COMPLETED))
        self.store.save_history(iid, doc)
        self.store.put_instance(iid, Status="Running", CustomStatus=status, **fields)
        for effect in effects:
            kind = effect[0]
            if kind == "activity":
                self.store.add_activity(iid, execution, effect[1], effect[2], effect[3])
                self.activity_wake.set()
            elif kind == "timer":
                self._schedule_timer(iid, execution, effect[1], effect[2])
            elif kind == "cancel_timer":
                self.store.delete_message({"PartitionKey": iid, "RowKey": f"timer-{execution}-{effect[1]:06d}"})
            elif kind == "suborch":
                _, sid, name, input_json, child = effect
                existing = self.store.get_instance(child)
                # Skipped only when this very execution already started it (its effects applied again after a
                # restart); a parent started again under the same id (a new execution) starts its children over,
                # as DTFx does (devhost README, fidelity row 30)
                if (existing is None or existing.get("ParentInstanceId") != iid
                        or existing.get("ParentTaskId") != sid or existing.get("ParentExecutionId") != execution):
                    try:
                        self.start_orchestration(name, input_json, child, (iid, sid, execution))
                    except UnknownFunction as exc:
                        self.store.add_message(iid, h.event(h.SUBORCH_FAILED, TaskScheduledId=sid, Reason=str(exc),
                                                            Details=""), execution)

    def _notify_parent(self, inst: dict[str, Any], status: str) -> None:
        parent = inst.get("ParentInstanceId")
        if not parent:
            return
        tid = int(inst["ParentTaskId"])
        if status == "Completed":
            ev = h.event(h.SUBORCH_COMPLETED, TaskScheduledId=tid, Result=inst.get("Output") or "null")
        elif status == "Terminated":  # DTFx: Reason = the termination reason, no details
            ev = h.event(h.SUBORCH_FAILED, TaskScheduledId=tid, Reason=inst.get("Error") or "", Details=None)
        else:
            reason = inst.get("Error") or status
            ev = h.event(h.SUBORCH_FAILED, TaskScheduledId=tid, Reason=reason, Details=reason)
        self.store.add_message(parent, ev, inst.get("ParentExecutionId") or ANY_EXECUTION,
                               message_id=f"child-{inst['ExecutionId']}")
        self.wake.set()

    # ---------------------------------------------------------- activity loop
    def _activity_loop(self) -> None:
        idle = self.poll_s
        while not self._stop.is_set():
            self.activity_wake.clear()  # before the listing: an item queued after it sets it again
            listed = False
            try:
                for item in self.store.list_activities():
                    listed = True
                    key = item["PartitionKey"] + "/" + item["RowKey"]
                    with self._lock:
                        if key in self._inflight:
                            continue
                        self._inflight.add(key)
                    self.pool.submit(self._run_activity, item, key)
            except Exception:
                logger.exception("activity dispatcher error")
                time.sleep(1)
            idle = self.poll_s if listed else min(idle * 2, self.idle_poll_max_s)
            if self.activity_wake.wait(idle):
                idle = self.poll_s

    def _run_activity(self, item: dict[str, Any], key: str) -> None:
        """Run one work item unless it is gone. The dispatcher's listing is a snapshot: an activity that finished
        after it was taken (completion queued, row deleted, key out of ``_inflight``) is still in it, and was run a
        second time; its completion then replaced the first (a CI run's ``exports_combine`` succeeded, deleted its
        fragments, and the orchestrator saw the second run's BlobNotFound). So the row is read again first."""
        with self._lock:
            self._running += 1
        try:
            self._run_activity_counted(item, key)
        finally:
            with self._lock:
                self._running -= 1

    def _run_activity_counted(self, item: dict[str, Any], key: str) -> None:
        try:
            gone = not self.store.activity_exists(item)
        except Exception:  # storage hiccup: leave it for the next listing
            logger.exception("activity dispatcher: could not read work item %s", key)
            gone = True
        if gone:
            with self._lock:
                self._inflight.discard(key)
            return
        iid, execution, tid, name = item["InstanceId"], item["ExecutionId"], int(item["TaskId"]), item["Name"]
        try:
            input_json = self.store.activity_input(item)
            # the extension finds an activity by FunctionName, OrdinalIgnoreCase (DurableTaskExtension
            # knownActivities); the name as called stays in its messages (TaskActivityShim)
            registered = self._activity_names.get(name.lower())
            if registered is None:
                raise UnknownFunction(f"activity function {name!r} does not exist; known: "
                                      f"{sorted(self.index.activities)}")
            fn, param = self.index.activities[registered]
            arg = (ActivityTriggerConverter.decode(meta.Datum(type="json", value=input_json), trigger_metadata=None)
                   if input_json is not None else None)
            cpu: list[float] = []

            kwargs: dict[str, Any] = {param: arg}
            client_arg = self.index.activity_clients.get(registered)
            if client_arg:
                if self.client_binding is None:
                    raise UnknownFunction(f"activity {name!r} takes a durable client, which this engine has none of")
                kwargs[client_arg] = self.client_binding()

            def invoke() -> Any:  # runs in the invocation thread, so its thread CPU is the activity's
                start_cpu = time.thread_time()
                try:
                    if inspect.iscoroutinefunction(fn):  # an async activity runs on the host's loop
                        if self.loop is None:
                            raise UnknownFunction(f"async activity {name!r} needs the host's event loop")
                        return asyncio.run_coroutine_threadsafe(fn(**kwargs), self.loop).result()
                    return fn(**kwargs)
                finally:
                    cpu.append(time.thread_time() - start_cpu)

            started = time.perf_counter()
            try:
                result = call_with_timeout(registered, invoke, self.function_timeout_s)  # the host's own name
            finally:
                self.metrics.activity(name, sum(cpu), time.perf_counter() - started)
            encoded = ActivityTriggerConverter.encode(result, expected_type=None).value
            ev = h.event(h.TASK_COMPLETED, TaskScheduledId=tid, Result=encoded)
        except Exception as exc:  # an activity failure is data for the orchestrator, not a host crash
            logger.warning("[%s] activity %s (task %d) failed: %s", iid, name, tid, exc)
            ev = h.event(h.TASK_FAILED, TaskScheduledId=tid,
                         Reason=h.activity_failure_reason(name, exc, isinstance(exc, FunctionTimeout)),
                         Details=traceback.format_exc())
        try:
            if not self._closed.is_set():  # stop(): recorded within its grace, else run again at the next start
                self.store.add_message(iid, ev, execution, message_id=f"act-{execution}-{tid:06d}", first_wins=True)
                self.store.delete_activity(item)
                self.wake.set()
        finally:
            with self._lock:
                self._inflight.discard(key)
