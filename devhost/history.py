"""History events and action types of the Durable replay protocol, as the Python SDK reads and writes them.

Sources: azure/durable_functions/models/history/HistoryEventType.py and models/actions/ActionType.py (SDK 1.7.0), and
../shared/reference/durable-replay-notes.md (the pitfalls: ``EventType`` must be an int, timestamps end in ``Z``,
``ExecutionStarted`` needs ``Version``, results and inputs are JSON strings).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

ISO = "%Y-%m-%dT%H:%M:%S.%fZ"

EXECUTION_STARTED, EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_TERMINATED = 0, 1, 2, 3
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
SUBORCH_CREATED, SUBORCH_COMPLETED, SUBORCH_FAILED = 7, 8, 9
TIMER_CREATED, TIMER_FIRED = 10, 11
ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED = 12, 13
EVENT_RAISED = 15

CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, CALL_SUBORCH, CALL_SUBORCH_WITH_RETRY = 0, 1, 2, 3
CONTINUE_AS_NEW, CREATE_TIMER, WAIT_FOR_EXTERNAL_EVENT = 4, 5, 6
CALL_ENTITY, CALL_HTTP, SIGNAL_ENTITY, WHEN_ANY, WHEN_ALL = 7, 8, 9, 11, 12

COMPLETIONS = (TASK_COMPLETED, TASK_FAILED, SUBORCH_COMPLETED, SUBORCH_FAILED)
SUPPORTED_ACTIONS = (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, CALL_SUBORCH, CALL_SUBORCH_WITH_RETRY, CONTINUE_AS_NEW,
                     CREATE_TIMER, WAIT_FOR_EXTERNAL_EVENT)


# What the extension hands every out-of-process orchestrator besides its history (ext
# Bindings/OrchestrationTriggerAttributeBindingProvider.cs ``OrchestrationContextToString``): ``upperSchemaVersion``
# V2 and ``upperSchemaVersionNew`` V3 of the shim's ``SchemaVersion`` (Original 0, V2 1, V3 2; the SDK reads them as
# its ``ReplaySchema`` V2 and V3, so it replays with V3), and the storage provider's timer limits, which
# the Azure Storage provider sets to 6 days and 3 days (``AzureStorageDurabilityProvider``: ``MaximumDelayTime``,
# ``LongRunningTimerIntervalLength``), as .NET TimeSpans. With them the SDK turns a timer more than 6 days out into a
# ``LongTimerTask`` of 3-day timers, as on Azure (devhost README, fidelity row 26).
ORCHESTRATION_CONTEXT_FIELDS: dict[str, Any] = {"upperSchemaVersion": 1, "upperSchemaVersionNew": 2,
                                                "maximumShortTimerDuration": "6.00:00:00",
                                                "longRunningTimerIntervalDuration": "3.00:00:00"}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ts(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime(ISO)


def status_time(stored: str | None) -> str | None:
    """A stored time as the management API answers it: whole seconds (ext HttpApiHandler.ConvertFrom,
    ``ToString("s") + "Z"``, which truncates)."""
    return stored and parse_ts(stored).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text: str) -> dt.datetime:
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6].ljust(6, '0')}"
    else:
        text += ".000000"
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)


def event(etype: int, event_id: int = -1, at: dt.datetime | None = None, **fields: Any) -> dict[str, Any]:
    return {"EventType": etype, "EventId": event_id, "IsPlayed": False, "Timestamp": ts(at or utcnow()), **fields}


def flatten(actions: list[Any]) -> list[dict[str, Any]]:
    """Atomic actions in the order the SDK assigns sequence numbers (compound WhenAll/WhenAny depth first)."""
    out: list[dict[str, Any]] = []
    for a in actions:
        if isinstance(a, list):
            out.extend(flatten(a))
        elif a.get("actionType") in (WHEN_ALL, WHEN_ANY):
            out.extend(flatten(a.get("compoundActions") or []))
        else:
            out.append(a)
    return out


def signature(action: dict[str, Any]) -> list[Any]:
    """What must be identical when an action is replayed (the non-determinism check)."""
    t = action["actionType"]
    if t == CREATE_TIMER:
        return [t]
    return [t, action.get("functionName"), action.get("input"), action.get("instanceId")]


# ------------------------------------------------------------------ DTFx's non-determinism check
# DurableTask.Core TaskOrchestrationContext.HandleTaskScheduledEvent / HandleTimerCreatedEvent /
# HandleSubOrchestrationCreatedEvent: each TaskScheduled / TimerCreated / SubOrchestrationInstanceCreated event of the
# history must meet, at its sequence number, a replayed action of the same kind with the same name (ordinal,
# case-insensitive). Inputs, fire times and sub-orchestration instance ids are NOT compared. The messages below are
# DTFx's, prefixed as NonDeterministicOrchestrationException(eventId, details) prefixes them.
_DTFX_ACTION_CLASS = {CALL_ACTIVITY: "ScheduleTaskOrchestratorAction", CALL_ACTIVITY_WITH_RETRY: "ScheduleTaskOrchestratorAction",
                      CALL_SUBORCH: "CreateSubOrchestrationAction", CALL_SUBORCH_WITH_RETRY: "CreateSubOrchestrationAction",
                      CREATE_TIMER: "CreateTimerOrchestratorAction",
                      CONTINUE_AS_NEW: "OrchestrationCompleteOrchestratorAction"}
_KIND = {CALL_ACTIVITY: "activity", CALL_ACTIVITY_WITH_RETRY: "activity", CALL_SUBORCH: "suborch",
         CALL_SUBORCH_WITH_RETRY: "suborch", CREATE_TIMER: "timer", CONTINUE_AS_NEW: "continue"}
_CHANGED = "Was a change made to the orchestrator code after this instance had already started running?"
NONDETERMINISTIC_PREFIX = "Non-Deterministic workflow detected: "


def replay_record(action: dict[str, Any]) -> list[Any]:
    """What the host keeps of a scheduled action for the determinism check: [actionType, name, instanceId]."""
    return [action["actionType"], action.get("functionName"), action.get("instanceId")]


def nondeterminism_error(replayed: list[dict[str, Any]], recorded: list[list[Any]], seq_ids: list[int]) -> str | None:
    """DTFx's verdict on ``replayed`` (this replay's sequence-numbered actions, in order) against ``recorded`` (what
    history scheduled, in the same order; ``seq_ids`` their sequence numbers). None when they agree.

    ``recorded`` entries are ``replay_record`` lists (older devhost states hold ``signature`` lists, which begin the
    same way).
    """
    for i, rec in enumerate(recorded):
        kind, name = _KIND.get(rec[0], "other"), str((rec[1] if len(rec) > 1 else None) or "")
        child = rec[3] if len(rec) > 3 else (rec[2] if len(rec) == 3 else None)
        sid = seq_ids[i] if i < len(seq_ids) else i
        now = replayed[i] if i < len(replayed) else None
        now_kind = _KIND.get(now["actionType"], "other") if now is not None else None
        now_class = _DTFX_ACTION_CLASS.get(now["actionType"], "OrchestratorAction") if now is not None else ""
        now_name = str(now.get("functionName") or "") if now is not None else ""
        if kind == "activity":
            if now is None:
                detail = (f"A previous execution of this orchestration scheduled an activity task with sequence ID {sid} "
                          f"and name '{name}' (version ''), but the current replay execution hasn't (yet?) scheduled "
                          f"this task. {_CHANGED}")
            elif now_kind != "activity":
                detail = (f"A previous execution of this orchestration scheduled an activity task with sequence number "
                          f"{sid} named '{name}', but the current orchestration replay instead produced a {now_class} "
                          f"action with this sequence number. {_CHANGED}")
            elif name.lower() != now_name.lower():
                detail = (f"A previous execution of this orchestration scheduled an activity task with sequence number "
                          f"{sid} named '{name}', but the current orchestration replay instead scheduled an activity "
                          f"task named '{now_name}' with this sequence number.  {_CHANGED}")
            else:
                continue
        elif kind == "timer":
            if now is None:
                detail = (f"A previous execution of this orchestration scheduled a timer task with sequence number {sid} "
                          f"but the current replay execution hasn't (yet?) scheduled this task. {_CHANGED}")
            elif now_kind != "timer":
                detail = (f"A previous execution of this orchestration scheduled a timer task with sequence number {sid} "
                          f"named but the current orchestration replay instead produced a {now_class} action with "
                          f"this sequence number. {_CHANGED}")
            else:
                continue
        elif kind == "suborch":
            head = (f"A previous execution of this orchestration scheduled a sub-orchestration task with sequence ID "
                    f"{sid} and name '{name}' (version '', instance ID '{child or ''}'), but the current ")
            if now is None:
                detail = head + f"replay execution hasn't (yet?) scheduled this task. {_CHANGED}"
            elif now_kind != "suborch":
                detail = head + f"orchestration replay instead produced a {now_class} action at this sequence number. {_CHANGED}"
            elif name.lower() != now_name.lower():
                detail = (head + f"orchestration replay instead scheduled a sub-orchestration task with name {now_name} "
                          f"at this sequence number. {_CHANGED}")
            else:
                continue
        else:  # continue_as_new ends an episode: nothing after it is ever recorded
            continue
        return NONDETERMINISTIC_PREFIX + detail
    return None


def activity_failure_reason(name: str, exc: BaseException, timed_out: bool = False) -> str:
    """The ``Reason`` of the ``TaskFailed`` event an out-of-process activity's exception becomes on Azure (fidelity
    row 32): the Python worker reports ``f"{type(exc).__name__}: {exc}"`` (azure-functions-python-worker
    ``dispatcher.py``), the host wraps it as ``Result: Failure\nException: <that>\nStack: ...`` (azure-functions-host
    ``RpcException.cs``), the extension takes the text between ``"\nException:"`` and ``"\nStack:"`` (leading space
    included: ``OutOfProcExceptionHelpers.TryGetFullOutOfProcMessage``) and fails the task with ``Activity function
    '<name>' failed: <message>`` (``Listener/TaskActivityShim.cs``). A ``functionTimeout`` is no worker exception: its
    message follows one space."""
    if timed_out:
        return f"Activity function '{name}' failed: {exc}"
    return f"Activity function '{name}' failed:  {type(exc).__name__}: {exc}"
