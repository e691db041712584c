"""Activity retries as explicit durable timers, not the SDK's ``call_activity_with_retry``.

Why: with the real Durable extension, an orchestration that retried an activity through ``call_activity_with_retry``
and later yields ``task_all`` can hang for ever (azure-functions-durable-python#603, closed "wontfix"): the retried
task's event ids collide with the new tasks'. Our orchestrators do exactly that (enumerate with retry, then
``task_all`` over shard groups; submit and poll with retry in a loop). So a retry here is a plain ``call_activity``,
a caught failure, a durable timer and another ``call_activity``: events DTFx numbers like any others, and the
activities are idempotent, so running one twice is harmless. Use as ``result = yield from call(context, ...)``, or
``results = yield from call_all(context, ...)`` for one activity over many payloads in parallel.

Busy services: a failure that says storage or Batch is busy or out of reach (``is_busy``) is retried for longer than
others, as its orchestration's input allows: ``busy_retry_attempts`` (``OrchestrationKnobs``, from
``TRAPBATCH_BUSY_RETRY_ATTEMPTS``, snapshotted at start in ``knobs`` or, for inputs without knobs, at the top level)
calls at most, waiting ``BUSY_FIRST_DELAY_S`` doubling up to ``BUSY_MAX_DELAY_S``. Why: the storage SDK gives up on
ServerBusy after about a minute, so three calls 2 s and 4 s apart failed a ten-million-image task after ~4 minutes of
throttling that the account's scale targets expect clients to wait out (back off, then retry). Read from the input,
so an orchestration started before the knob (none in its input) replays with the policy it ran with. Past the busy
retries a step raises ``ServiceStayedBusy``, which fails its orchestration, except in a shard group, which waits a
longer outage of its pool steps out (orchestrations.shards, "Outages").
"""
from __future__ import annotations

import json
import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generator, Iterator, Mapping, Sequence

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskState

from core.contracts import WAITING_KEY
from core.errors import failure_line


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` calls at most; the n-th retry waits ``first_delay_s * backoff ** (n - 1)`` seconds."""

    attempts: int = 3
    first_delay_s: float = 2.0
    backoff: float = 2.0

    def delay_s(self, retry: int) -> float:
        return float(self.first_delay_s * self.backoff ** (retry - 1))


# A busy failure's n-th retry waits BUSY_FIRST_DELAY_S * 2 ** (n - 1) seconds, at most BUSY_MAX_DELAY_S: with the
# default 8 attempts, 15 s to 5 min, about 18 minutes of waiting in all (each call's own SDK retries come on top).
BUSY_FIRST_DELAY_S = 15.0
BUSY_MAX_DELAY_S = 300.0

# Python types (as the extension words a failed activity: devhost fidelity row 32) that say a service was busy or
# could not be reached: trapbatch's own (core.errors, gpu_batch.pool.azure_batch) and azure-core's transport errors.
# TokenEndpointUnavailable (adapters.identity): the app's managed identity endpoint did not answer; a name no history
# written before it holds, so recorded failures replay as they were judged. SourceBusy (core.errors): the images'
# account or its secret store did not answer; also new (such failures were SourceUnavailable, not busy, before).
# TopicUnavailable (adapters.event_grid): the Event Grid topic, or its token, did not come; new (was PublishFailed).
# JobDisabled (gpu_batch.pool.base): the run's pool job was disabled outside trapbatch; a shard group waits it out as
# an outage (activities.pool.check_job); new (such a group polled for ever before, no failure was recorded).
BUSY_TYPES = frozenset({
    "StorageUnavailable", "TaskHubUnavailable", "BatchUnavailable", "TokenEndpointUnavailable", "SourceBusy",
    "TopicUnavailable", "JobDisabled",
    "ServiceRequestError", "ServiceResponseError",
    "ServiceRequestTimeoutError", "ServiceResponseTimeoutError", "IncompleteReadError", "ConnectionError",
    "ConnectionResetError", "ConnectionAbortedError", "ConnectionRefusedError", "TimeoutError"})
# An HttpResponseError is busy by its service error code: Azure Storage words it ``ErrorCode:ServerBusy`` (the storage
# SDK's process_storage_error), Azure Batch ``(ServerBusy) ...\nCode: ServerBusy`` (azure-core's OData error). The
# codes are the ones both services document as "retry later": ServerBusy (503), OperationTimedOut and InternalError
# (500) (Batch REST "Batch Status and Error Codes", common REST API error codes); TooManyRequests for a 429, a Batch
# error code ("Requests for the same pool must be separated by at least 30 seconds": azure-sdk-for-net
# sdk/batch/Azure.Compute.Batch BatchErrorCode.TooManyRequests). Batch also throttles with 503 ServerBusy
# (articles/batch/batch-retry-after-errors.md: "429 or 503 status code HTTP responses with the Retry-after header").
_BUSY_CODE = re.compile(r"(?:ErrorCode:|\nCode: )\s*(?P<code>ServerBusy|OperationTimedOut|InternalError|TooManyRequests)\b")
_FAILED_TYPE = re.compile(r"Activity function '[^']*' failed: +(?P<type>[A-Za-z_][A-Za-z0-9_]*)(?::|\s|$)")


def is_busy(exc: BaseException) -> bool:
    """Whether a failed activity's exception, as the orchestrator receives it, says a service was busy or out of reach
    (retrying later works) rather than that the request or the data was wrong. Read from the text alone, which the
    history holds, so every replay decides alike."""
    text = str(exc)
    found = _FAILED_TYPE.search(text)
    kind = found.group("type") if found else ""
    if kind in BUSY_TYPES:
        return True
    return kind == "HttpResponseError" and bool(_BUSY_CODE.search(text))


# Batch's Retry-After as a BatchUnavailable says it (gpu_batch.pool.azure_batch.asked_wait_words)
_ASKED_WAIT = re.compile(r"Batch asked to wait (?P<seconds>\d{1,9}) s \(Retry-After\)")


def asked_wait_s(exc: BaseException) -> float:
    """The seconds a busy failure's service asked the caller to wait (Azure Batch's ``Retry-After``), 0 where it
    asked none. A busy retry waits at least that long, at most ``BUSY_MAX_DELAY_S``. Read from the text, as
    ``is_busy``, so replay decides alike; a failure recorded before these words existed asks nothing and waits as it
    did."""
    found = _ASKED_WAIT.search(str(exc))
    return float(found.group("seconds")) if found else 0.0


def failed_type(exc: BaseException) -> str:
    """The exception type a failed activity raised, from its text as the orchestrator receives it ("" when the text
    names none); the failure that a ``ServiceStayedBusy`` was raised from, where it was."""
    found = _FAILED_TYPE.search(str(exc.__cause__ if isinstance(exc, ServiceStayedBusy) and exc.__cause__ else exc))
    return found.group("type") if found else ""


def _input_knob(data: Any, name: str) -> int:
    """Knob ``name`` of an orchestration's input (its ``knobs``, else its top level); 0 where it has none."""
    if not isinstance(data, Mapping):
        return 0
    knobs = data.get("knobs")
    value = knobs.get(name) if isinstance(knobs, Mapping) else None
    if value is None:
        value = data.get(name)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def busy_attempts(data: Any) -> int:
    """``busy_retry_attempts`` of an orchestration's input (its ``knobs``, else its top level); 0 where it has none."""
    return _input_knob(data, "busy_retry_attempts")


def _busy_limit(context: df.DurableOrchestrationContext) -> int:
    """``busy_attempts`` of the orchestration's input, decoded once per episode (``ledger``)."""
    return ledger(context).busy


def action_budget(data: Any) -> int:
    """``action_budget`` of an orchestration's input (its ``knobs``, else its top level); 0 where it has none (an
    input recorded before the budget: nothing is checked, so its history replays as it ran)."""
    return _input_knob(data, "action_budget")


class ActionBudgetSpent(RuntimeError):
    """An orchestration execution was about to schedule more actions than its input's ``action_budget``
    (``ActionLedger``). Raised in the orchestrator before the action, so its own failure handling still runs."""


@dataclass(slots=True)
class ActionLedger:
    """The actions one execution has scheduled so far through ``call``, ``call_all`` and ``note_actions``, against
    its input's ``action_budget`` (0: none).

    Why: the Durable extension refuses an execution's ``maxOrchestrationActions``-th + 1 action (host.json,
    default 100,000; ext ``ContextImplementations/DurableOrchestrationContext.cs`` ``IncrementActionsOrThrowException``:
    every activity, timer, sub-orchestration, replayed ones included; continue_as_new starts again; devhost README
    row 47), and its shim drops that action and every later one without a word: the instance is never failed, an
    orchestrator waiting on a dropped call stays Running for ever, and its own failure handling never runs: the
    task's pool job stays open, its status at its last stage, nobody told. ``call_all`` schedules again every member not
    done at each retry round, so a merge of 1,000 parts and its exports (six fan-outs over the parts) at 20 busy
    attempts could schedule 120,000 (``orchestrations.actions``). Past the budget a step raises
    ``ActionBudgetSpent`` instead, before it schedules anything, leaving the extension's limit less the budget for
    the failure path: once ``reserve`` is set (the task's end: closing its job and telling; a group's STOP_GROUPS),
    calls are counted but never refused. Every episode replays the execution from its start with a new context, so
    the count at a given point of the code is the same in every replay: deterministic."""

    budget: int
    # the input's busy_attempts, decoded with the budget once per episode (``ledger``)
    busy: int = 0
    scheduled: int = 0
    reserve: bool = False

    def take(self, count: int, name: str) -> None:
        """Count ``count`` actions about to be scheduled for ``name``; ``ActionBudgetSpent`` if they pass the
        budget (outside the reserve)."""
        if self.budget and not self.reserve and self.scheduled + count > self.budget:
            raise ActionBudgetSpent(
                f"{name}: this orchestration would schedule more than {self.budget} actions in one execution "
                f"({self.scheduled} so far, {count} more), past which the Durable extension drops them without a word "
                "(host.json maxOrchestrationActions): a busy service made its steps retry very often, or the task is "
                "very large. Nothing is lost. A task that failed so: post the same request again later, without "
                "\"rerun\" or \"only_new\", to resume it (a larger images_per_shard, as another task, makes fewer "
                "shards and parts); exports that failed so: do as the exports_hint beside them says; a repeat "
                "removal: send the same removal again; a repeat search: the results stand without it; a re-render: "
                "post it again later; the results zip: GET .../results again later, with the query zip=rebuild")
        self.scheduled += count


# Each episode's context -> its ledger, with the input's busy_attempts. Why decoded once: the SDK keeps the input as
# text and decodes all of it at every get_input(), and an episode replays every busy retry of its generation; a shard
# group's input holds each shard's state (110 KiB at 1,000 shards), so a 6-hour Batch outage spent 54 % of such a
# group's replay CPU decoding it again (15 of 28 s; 29 % at 200 shards). An episode's input never changes, and a new
# episode is a new context.
_LEDGERS: weakref.WeakKeyDictionary[df.DurableOrchestrationContext, ActionLedger] = weakref.WeakKeyDictionary()


def ledger(context: df.DurableOrchestrationContext) -> ActionLedger:
    """This episode's ``ActionLedger`` (one per context: a new episode replays the execution from its start)."""
    found = _LEDGERS.get(context)
    if found is None:
        data = context.get_input()
        found = _LEDGERS[context] = ActionLedger(action_budget(data), busy=busy_attempts(data))
    return found


def note_actions(context: df.DurableOrchestrationContext, count: int, name: str) -> None:
    """Count ``count`` actions the orchestrator schedules itself (sub-orchestrations, a timer), before it does:
    ``ActionBudgetSpent`` past the budget (``ActionLedger``)."""
    ledger(context).take(count, name)


def spend_reserve(context: df.DurableOrchestrationContext) -> None:
    """From here on this execution's calls are counted but never refused: its failure handling, or its last word
    (``ActionLedger``). Bounded by the code that follows (``orchestrations.actions``)."""
    ledger(context).reserve = True


@contextmanager
def unrefused(context: df.DurableOrchestrationContext) -> Iterator[None]:
    """Within the ``with``, this execution's calls are counted but never refused, as in its reserve; after it, the
    budget refuses again, the calls made counted. For a step the failure path would not make in its place: the close
    of the run's pool job once its shard groups ended (orchestrations.task ``_run_task``), whose refusal left the job
    open, the failure path then closing nothing (that work had ended). Bounded as the failure path's close
    (``orchestrations.actions.task_end_actions``): a task makes one of the two."""
    book = ledger(context)
    before, book.reserve = book.reserve, True
    try:
        yield
    finally:
        book.reserve = before


def _retry_delay_s(context: df.DurableOrchestrationContext, name: str, policy: RetryPolicy, retry: int,
                   exc: BaseException) -> float | None:
    """Seconds to wait before the next call after the ``retry``-th failure ``exc``, or None: no more calls. A busy
    wait is shown in the orchestration's status while it lasts (``show_waiting``)."""
    limit = _busy_limit(context) if is_busy(exc) else 0
    if limit > policy.attempts:
        if retry >= limit:
            show_waiting(context, None)
            raise ServiceStayedBusy(_gave_up(name, exc, retry), step=name, reason=busy_reason(exc)) from exc
        delay = max(min(BUSY_FIRST_DELAY_S * 2.0 ** (retry - 1), BUSY_MAX_DELAY_S),
                    min(asked_wait_s(exc), BUSY_MAX_DELAY_S))
        show_waiting(context, {"step": name, "reason": busy_reason(exc), "attempt": retry + 1, "of": limit,
                               "at": (context.current_utc_datetime + timedelta(seconds=delay)).isoformat()})
        return delay
    show_waiting(context, None)
    return policy.delay_s(retry) if retry < policy.attempts else None


class ServiceStayedBusy(RuntimeError):
    """A step whose service stayed busy through every busy retry: its message says so and what to do, where the
    storage SDK's own first line ("Operation returned an invalid status ''") said neither. Raised in the
    orchestrator (an exception is no history action: replay is unaffected). ``step`` and ``reason`` (the service's
    words) are for a caller that outlasts it (orchestrations.shards "Outages")."""

    def __init__(self, message: str, step: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.step, self.reason = step, reason


def _gave_up(name: str, exc: BaseException, calls: int) -> str:
    waited_s = sum(min(BUSY_FIRST_DELAY_S * 2.0 ** (n - 1), BUSY_MAX_DELAY_S) for n in range(1, calls))
    # what to do before the service's words: a status shows the error's first 500 characters (orchestrations.task)
    return (f"{name} failed {calls} times over {waited_s / 60:.0f}+ minutes because a service stayed busy or out of "
            "reach. Nothing is lost: send the same request again later (a failed task's request as it was, without "
            "\"rerun\" or \"only_new\", resumes it; those start a new run), or let steps wait longer "
            f"(TRAPBATCH_BUSY_RETRY_ATTEMPTS). The service said: {busy_reason(exc)}")


def busy_reason(exc: BaseException) -> str:
    """The failure as a person reads it, with the service's error code where its first line lacks it (the storage
    SDK's first line is "Operation returned an invalid status ''", its code on the next)."""
    line = failure_line(exc, 200)
    found = _BUSY_CODE.search(str(exc))
    return f"{line} ({found.group('code')})" if found and found.group("code") not in line else line


def show_waiting(context: df.DurableOrchestrationContext, waiting: dict[str, Any] | None) -> None:
    """Add (or, with None, remove) ``waiting`` in the orchestration's custom status, when that is a dict: a step
    waiting minutes for a busy service says so (``GET /api/tasks/{id}``, ``trapbatch status``) instead of the
    status standing still. Custom status is no history action, so replay is unaffected. A note that replaces one
    of an outage a shard group waits out (``OUTAGE_KEYS``: orchestrations.shards "Outages") keeps its since and
    until, so a step's own retries during the outage do not hide how long it has lasted."""
    status = context.custom_status
    if not isinstance(status, dict) or (waiting is None and WAITING_KEY not in status):
        return
    before = status.get(WAITING_KEY)
    if waiting is not None and isinstance(before, dict):
        waiting = {**{k: before[k] for k in OUTAGE_KEYS if k in before}, **waiting}
    rest = {k: v for k, v in status.items() if k != WAITING_KEY}
    noted = {**rest, WAITING_KEY: waiting} if waiting is not None else rest
    if waiting is not None and not _fits(noted):
        noted = rest  # a note is never worth a refused status: the extension fails the orchestration for one
    context.set_custom_status(noted)


# The keys of a shard group's outage note (orchestrations.shards "Outages") beyond a step's own
OUTAGE_KEYS = ("since", "until")

# The extension refuses a custom status whose compact JSON is over 16 KB in UTF-16 (devhost fidelity row 8) and
# fails the orchestration for it; a note goes in only while the status stays under 15.
_NOTE_LIMIT_BYTES = 15 * 1024


def _fits(status: dict[str, Any]) -> bool:
    text = json.dumps(status, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-16-le")) <= _NOTE_LIMIT_BYTES


# Listing a container or streaming a merge can hit transient storage throttling; a few retries spare a failed task.
STORAGE_RETRY = RetryPolicy()
# Pool calls are I/O against a remote service: retry transient failures a few times before failing the task.
POOL_RETRY = RetryPolicy()


def call(context: df.DurableOrchestrationContext, name: str, policy: RetryPolicy,
         payload: Any) -> Generator[Any, Any, Any]:
    """Call activity ``name``; after a failure wait on a durable timer and call it again, up to ``policy.attempts``.

    A busy failure may be retried for longer (the module's docstring). The last failure propagates to the
    orchestrator unchanged (the task then fails with the activity's message).
    """
    retry = 0
    while True:
        ledger(context).take(1, name)  # ActionBudgetSpent past the input's action_budget
        try:
            value = yield context.call_activity(name, payload)
        except Exception as exc:  # noqa: BLE001 - the activity's failure, as the SDK raises it in the orchestrator
            retry += 1
            delay = _retry_delay_s(context, name, policy, retry, exc)  # ServiceStayedBusy past the busy retries
            if delay is None:
                raise
            ledger(context).take(1, name)
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
            continue
        if retry:
            show_waiting(context, None)
        return value


def call_all(context: df.DurableOrchestrationContext, name: str, payloads: Sequence[Any],
             policy: RetryPolicy = STORAGE_RETRY) -> Generator[Any, Any, list[Any]]:
    """Call activity ``name`` once per payload, in parallel (``task_all``); results in payload order.

    A failed round does not re-run what succeeded: after a durable timer only the calls that had not succeeded when
    the failure surfaced are made again, ``policy.attempts`` rounds at most, and the last failure propagates.
    ``task_all`` fails as soon as one call fails (the SDK's ``WhenAllTask``), so calls still running then may run
    twice, which idempotent activities allow. A round failed busy may be retried for longer (the module's
    docstring). Used by the parallel enumeration and the merge fan-in. Each round's calls and each timer are counted
    against the input's ``action_budget`` first (``ActionLedger``): a round of ``n`` calls may be made again up to
    its attempts, ``n`` actions each time (``orchestrations.actions.call_all_actions``).
    """
    results: list[Any] = [None] * len(payloads)
    todo = list(range(len(payloads)))
    retry = 0
    while todo:
        ledger(context).take(len(todo), name)  # ActionBudgetSpent past the input's action_budget
        tasks = [context.call_activity(name, payloads[i]) for i in todo]
        try:
            values = yield context.task_all(tasks)
        except Exception as exc:  # noqa: BLE001 - one call's failure, as the SDK raises it in the orchestrator
            left = []
            for i, task in zip(todo, tasks):
                if getattr(task, "state", None) is TaskState.SUCCEEDED:
                    results[i] = task.result
                else:
                    left.append(i)
            todo = left
            retry += 1
            delay = _retry_delay_s(context, name, policy, retry, exc)  # ServiceStayedBusy past the busy retries
            if delay is None:
                raise
            ledger(context).take(1, name)
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
            continue
        if retry:
            show_waiting(context, None)
        for i, value in zip(todo, values):
            results[i] = value
        todo = []
    return results
