"""Drive real orchestrator generators through the azure-functions-durable SDK's own replay, with scripted activities.

What the Durable extension does for an out-of-process Python app, reduced to one thread and a virtual clock:

* each *episode* appends ``OrchestratorStarted`` + exactly one new event (the start, or one completion) to the
  history, hands the whole history to ``Orchestrator(fn).handle(DurableOrchestrationContext.from_json(...))`` (the
  SDK's replay entry point, the same one the ``@orchestration_trigger`` handle calls) and reads the returned
  ``OrchestratorState`` JSON (actions, customStatus, output, or the ``$OutOfProcData$`` error);
* new actions get the next sequence numbers (flattened WhenAll/WhenAny order, as the SDK numbers them) and become
  ``TaskScheduled`` / ``TimerCreated`` / ``SubOrchestrationInstanceCreated`` events plus a work item in a FIFO queue;
  the next episode answers the oldest work item: an activity from the script (a return value, or a raised exception
  becomes ``TaskFailed``), a timer fires at once (the virtual clock jumps to its ``fireAt``), a sub-orchestration runs
  to its end through this same harness (or comes from a script);
* ``call_*_with_retry``: after a failure the SDK numbers a retry timer, after that timer the re-scheduled task (the
  host's job; DTFx also waits one extra timer after the last attempt before the failure reaches the orchestrator);
  delivering one event per episode makes those numbers "the event's first, then the episode's new actions";
* ``continue_as_new`` starts a new execution (fresh history) with the new input;
* external events come from an optional ``events`` script, asked after every episode of the top-level orchestration
  (not its children's) what to raise now: each becomes an ``EventRaised`` episode of its own before the next work
  item is answered, its ``Input`` what the extension stores for the SDK client's ``raise_event(data)`` (the data's
  JSON as a JSON string: devhost README, row 36), so a wait gets what it gets on Azure; one no wait matches is kept
  by the SDK for a later wait of its name (row 31; its "duplicate completion" warning is then no error);
* ``Run.stored`` is the custom status Azure stores after each work item, as dtfx does (devhost README, fidelity rows
  33 and 43): what the episode's replay set, else none, except the new execution's first episode after
  ``continue_as_new``, which runs in the work item that went on as new and keeps what that episode set;
* the replayed action prefix is compared with what earlier episodes recorded (the extension's non-determinism check),
  and an SDK "duplicate completion" warning (a wrong task id) is an error, not a silent hang;
* a custom status over the extension's 16 KB (``devhost.engine.custom_status_error``), which fails the orchestration
  on Azure, is an error too; so is an execution of more actions than host.json ``maxOrchestrationActions`` allows
  (default 100,000; ``max_actions``); ``Run.actions`` says how many each execution scheduled.

Each episode hands the SDK the whole history again, and ``HistoryEvent`` parses every event's timestamp with
dateutil (~0.3 ms each: a shard group that retries through an outage, 414 episodes, parsed 86,000 of them, three
quarters of its time). The harness memoizes that parse per ``Harness``: the same SDK function on the same strings,
datetimes being immutable, so replay sees exactly what it saw before, only sooner.

Everything the orchestrator did is recorded on the returned ``Run`` so tests assert on behaviour.
"""
from __future__ import annotations

import datetime as dt
import importlib
import json
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union
from unittest import mock

from azure.durable_functions import DurableOrchestrationContext, Orchestrator
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from devhost import history as h
from devhost.engine import custom_status_error
from devhost.hostjson import DEFAULT_MAX_ORCHESTRATION_ACTIONS

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
# The SDK module whose ``dt_parse`` (dateutil's ``parse``) reads each event's Timestamp (module docstring, last
# paragraph); a module, which its package's ``HistoryEvent`` class attribute hides from a plain import.
_HISTORY_EVENT_MODULE = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
_SDK_PARSE: Callable[[str], dt.datetime] = _HISTORY_EVENT_MODULE.dt_parse
OUT_OF_PROC = "$OutOfProcData$:"

ActivityScript = Callable[[str, Any], Any]
# what to raise after an episode: (event name, data) pairs, given the run so far (``Run.stages``, ``activity_names``)
EventScript = Callable[["Run"], list[tuple[str, Any]]]
"""``(activity_name, input) -> result``; raise to make the activity fail (``TaskFailed``)."""
SubOrchestrationScript = Callable[[str, str, Any], Any]
"""``(orchestrator_name, instance_id, input) -> result``; raise to fail it; return ``RUN_CHILD`` to run it for real."""


class _RunChild:
    def __repr__(self) -> str:
        return "RUN_CHILD"


RUN_CHILD: Any = _RunChild()


class HarnessError(AssertionError):
    """The orchestration did something the harness (or the real extension) would not accept."""


@dataclass
class ActivityCall:
    name: str
    input: Any
    execution: int  # 0 for the first execution, +1 per continue_as_new
    attempt: int = 1  # >1: a retry made by the host for call_activity_with_retry
    result: Any = None
    error: str | None = None


@dataclass
class TimerCall:
    created_at: dt.datetime  # the orchestration clock when the timer was scheduled
    fire_at: dt.datetime
    execution: int
    retry: bool = False  # a retry-interval timer of call_*_with_retry, not one the orchestrator asked for

    @property
    def delay_s(self) -> float:
        return (self.fire_at - self.created_at).total_seconds()


@dataclass
class SubOrchestrationCall:
    name: str
    instance_id: str
    input: Any
    execution: int
    result: Any = None
    error: str | None = None
    run: "Run | None" = None  # set when the child ran through the harness


@dataclass
class Run:
    name: str
    instance_id: str
    status: str = "Running"  # Completed | Failed
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    statuses: list[Any] = field(default_factory=list)  # distinct custom status values, in order
    # the custom status stored after each work item (None: dtfx writes "null"; module docstring), in order
    stored: list[Any] = field(default_factory=list)
    activities: list[ActivityCall] = field(default_factory=list)
    timers: list[TimerCall] = field(default_factory=list)
    sub_orchestrations: list[SubOrchestrationCall] = field(default_factory=list)
    continued_as_new: list[Any] = field(default_factory=list)  # the input of each continue_as_new
    executions: int = 0
    episodes: int = 0
    history_events: list[int] = field(default_factory=list)  # each execution's history at its end, closing included
    raised: list[tuple[str, Any]] = field(default_factory=list)  # the events the ``events`` script raised, in order
    # each execution's actions, as the extension counts them against maxOrchestrationActions (``max_actions``)
    actions: list[int] = field(default_factory=list)

    def calls(self, name: str) -> list[ActivityCall]:
        """Activity calls of one activity, first attempts and retries, in scheduling order."""
        return [c for c in self.activities if c.name == name]

    def inputs(self, name: str) -> list[Any]:
        return [c.input for c in self.calls(name)]

    @property
    def activity_names(self) -> list[str]:
        return [c.name for c in self.activities]

    @property
    def stages(self) -> list[Any]:
        return [s.get("stage") if isinstance(s, dict) else None for s in self.statuses]

    @property
    def orchestrator_timers(self) -> list[TimerCall]:
        return [t for t in self.timers if not t.retry]


def generator_of(orchestrator: Any) -> Callable[..., Any]:
    """The plain generator function behind a ``@bp.orchestration_trigger`` (a FunctionBuilder) or its handle."""
    target = orchestrator
    function = getattr(target, "_function", None)  # azure.functions FunctionBuilder -> Function
    if function is not None:
        target = function.get_user_function()
    inner = getattr(target, "orchestrator_function", None)  # Orchestrator.create(fn) handle
    if inner is not None:
        target = inner
    if not callable(target):
        raise TypeError(f"not an orchestrator: {orchestrator!r}")
    return target  # type: ignore[no-any-return]


def script(handlers: Mapping[str, Any]) -> ActivityScript:
    """An activity script from ``{activity_name: value | callable(input) | exception instance}``."""

    def run(name: str, payload: Any) -> Any:
        if name not in handlers:
            raise HarnessError(f"the script has no answer for activity {name!r} (input {payload!r})")
        handler = handlers[name]
        if isinstance(handler, BaseException):
            raise handler
        return handler(payload) if callable(handler) else handler

    return run


@dataclass
class _Work:
    kind: str  # activity | timer | suborch | retry_timer | event
    task_id: int
    name: str = ""
    input_json: str | None = None
    instance_id: str = ""
    fire_at: str = ""
    retry_max: int = 0
    retry_interval_ms: int = 0
    attempt: int = 1
    chain: "_Work | None" = None  # retry_timer: the work item it will re-schedule
    record: Any = None


class Harness:
    """Runs orchestrators by name or function; activities answered by ``activities``, children by ``children``."""

    def __init__(self, activities: ActivityScript | Mapping[str, Any],
                 orchestrators: Mapping[str, Any] | None = None,
                 children: SubOrchestrationScript | None = None, start: dt.datetime = T0,
                 max_episodes: int = 2000, max_actions: int = DEFAULT_MAX_ORCHESTRATION_ACTIONS,
                 events: EventScript | None = None) -> None:
        self.activities: ActivityScript = activities if callable(activities) else script(activities)
        self.events = events
        self.orchestrators = {name: generator_of(o) for name, o in (orchestrators or {}).items()}
        self.children = children
        self.now = start
        self.max_episodes = max_episodes
        self.max_actions = max_actions  # host.json maxOrchestrationActions (devhost README row 47)
        self._timestamps: dict[str, dt.datetime] = {}  # Timestamp string -> the SDK's own parse of it

    def _parse_timestamp(self, text: str) -> dt.datetime:
        """The SDK's ``dt_parse`` of ``text``, parsed once per harness (module docstring, last paragraph)."""
        parsed = self._timestamps.get(text)
        if parsed is None:
            parsed = self._timestamps[text] = _SDK_PARSE(text)
        return parsed

    # ------------------------------------------------------------------ public
    def run(self, orchestrator: Any, input_: Any, instance_id: str = "instance-1", name: str | None = None,
            parent_instance_id: str | None = None) -> Run:
        fn = self.orchestrators[orchestrator] if isinstance(orchestrator, str) else generator_of(orchestrator)
        label = name or (orchestrator if isinstance(orchestrator, str) else str(getattr(fn, "__name__", "orch")))
        run = Run(name=label, instance_id=instance_id)
        input_json: str | None = None if input_ is None else json.dumps(input_)
        carried: Any = None  # what the episode that went on as new set (module docstring, ``Run.stored``)
        while True:
            continued, input_json, carried = self._execution(fn, run, input_json, parent_instance_id, carried)
            run.executions += 1
            if not continued:
                return run
            run.continued_as_new.append(None if input_json is None else json.loads(input_json))

    # ------------------------------------------------------------- internals
    def _invoke(self, fn: Callable[..., Any], history: list[dict[str, Any]], instance_id: str, input_json: str | None,
                parent_instance_id: str | None) -> dict[str, Any]:
        last_start = max(i for i, e in enumerate(history) if e["EventType"] == h.ORCHESTRATOR_STARTED)
        for i, e in enumerate(history):
            e["IsPlayed"] = i < last_start
        payload = {"history": history, "instanceId": instance_id, "isReplaying": False,
                   "parentInstanceId": parent_instance_id, "input": input_json,
                   **h.ORCHESTRATION_CONTEXT_FIELDS}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with mock.patch.object(_HISTORY_EVENT_MODULE, "dt_parse", self._parse_timestamp):
                    context = DurableOrchestrationContext.from_json(json.dumps(payload))
                state = dict(json.loads(Orchestrator(fn).handle(context)))
            except Exception as exc:  # an orchestrator exception comes back as this, with the state appended
                text = str(exc)
                if OUT_OF_PROC not in text:
                    raise
                head, _, tail = text.partition(OUT_OF_PROC)
                state = dict(json.loads(tail))
                state["error"] = state.get("error") or head.strip()
        raised = {f"TaskId: {e['Name']}" for e in history if e["EventType"] == h.EVENT_RAISED}
        for w in caught:
            text = str(w.message)
            if "Potential duplicate Task completion" in text and not any(text.endswith(r) for r in raised):
                raise HarnessError(f"completion for a task id the SDK did not expect: {w.message}")
        return state

    def _tick(self, history: list[dict[str, Any]], event: dict[str, Any], at: dt.datetime | None = None) -> None:
        if at is not None and at > self.now:
            self.now = at
        history.append(h.event(h.ORCHESTRATOR_COMPLETED, at=self.now))
        history.append(h.event(h.ORCHESTRATOR_STARTED, at=self.now))
        history.append({**event, "Timestamp": h.ts(self.now)})

    def _execution(self, fn: Callable[..., Any], run: Run, input_json: str | None, parent_instance_id: str | None,
                   carried: Any = None) -> tuple[bool, str | None, Any]:
        """One execution to its end: (whether it went on as new, the new input, the status its last episode set).
        ``carried``: the status the episode that went on as new into this execution set (``Run.stored``)."""
        execution = run.executions
        history: list[dict[str, Any]] = [
            h.event(h.ORCHESTRATOR_STARTED, at=self.now),
            h.event(h.EXECUTION_STARTED, at=self.now, Name=run.name, Input=input_json, Version="",
                    OrchestrationInstance={"InstanceId": run.instance_id, "ExecutionId": f"exec-{execution}"},
                    ParentInstance=({"OrchestrationInstance": {"InstanceId": parent_instance_id}}
                                    if parent_instance_id else None)),
        ]
        recorded: list[list[Any]] = []
        next_seq = 0
        queue: deque[_Work] = deque()
        delivered: _Work | None = None
        delivered_failed = False
        first_episode = run.episodes + 1
        while True:
            run.episodes += 1
            if run.episodes > self.max_episodes:
                raise HarnessError(f"{run.name} ({run.instance_id}) still running after {self.max_episodes} episodes")
            state = self._invoke(fn, history, run.instance_id, input_json, parent_instance_id)
            custom = state.get("customStatus")
            too_big = custom_status_error(custom)
            if too_big is not None:  # the extension fails the orchestration for it (devhost README, row 8)
                raise HarnessError(f"{run.name} set a custom status the extension refuses: {too_big}")
            if custom is not None:
                run.custom_status = custom
                if not run.statuses or run.statuses[-1] != custom:
                    run.statuses.append(custom)

            # Numbers the SDK assigned while processing the delivered event come before the episode's new actions.
            if delivered is not None and delivered.retry_max and (delivered_failed or delivered.kind == "retry_timer"):
                if delivered.kind != "retry_timer":  # a failed attempt: the SDK now waits on a retry timer
                    fire = self.now + dt.timedelta(milliseconds=delivered.retry_interval_ms)
                    item = _Work("retry_timer", next_seq, fire_at=h.ts(fire), chain=delivered,
                                 retry_max=delivered.retry_max)
                    history.append(h.event(h.TIMER_CREATED, next_seq, at=self.now, FireAt=item.fire_at))
                    run.timers.append(TimerCall(self.now, fire, execution, retry=True))
                    next_seq += 1
                    queue.append(item)
                else:
                    chain = delivered.chain
                    assert chain is not None
                    if chain.attempt < chain.retry_max:  # the SDK re-scheduled the task under a new number
                        again = _Work(chain.kind, next_seq, name=chain.name, input_json=chain.input_json,
                                      instance_id=chain.instance_id, retry_max=chain.retry_max,
                                      retry_interval_ms=chain.retry_interval_ms, attempt=chain.attempt + 1)
                        self._schedule(run, history, again, execution, queue)
                        next_seq += 1
                    # else: the SDK has now failed the retry task; nothing is scheduled

            # A wait for an external event takes no sequence number and writes no history (as devhost's engine
            # numbers them); the harness raises no events, so such an orchestrator sees only its timers fire.
            atomic = [a for a in h.flatten(state.get("actions") or [])
                      if a.get("actionType") != h.WAIT_FOR_EXTERNAL_EVENT]
            if len(atomic) > self.max_actions:  # the extension drops the rest: it never ends (devhost README row 47)
                raise HarnessError(f"{run.name} scheduled {len(atomic)} actions in one execution: Maximum amount of "
                                   f"orchestration actions ({self.max_actions}) has been reached")
            signatures = [h.signature(a) for a in atomic]
            if signatures[: len(recorded)] != recorded:
                raise HarnessError(f"non-deterministic replay of {run.name}: actions {signatures} but history "
                                   f"recorded {recorded}")
            continue_input: str | None = None
            continued = False
            for action in atomic[len(recorded):]:
                recorded.append(h.signature(action))
                tid = next_seq
                next_seq += 1
                kind = action["actionType"]
                if kind in (h.CALL_ACTIVITY, h.CALL_ACTIVITY_WITH_RETRY, h.CALL_SUBORCH, h.CALL_SUBORCH_WITH_RETRY):
                    retry = action.get("retryOptions") or {}
                    work = _Work("activity" if kind in (h.CALL_ACTIVITY, h.CALL_ACTIVITY_WITH_RETRY) else "suborch",
                                 tid, name=action["functionName"], input_json=action.get("input"),
                                 instance_id=action.get("instanceId") or f"{run.instance_id}:{tid}",
                                 retry_max=int(retry.get("maxNumberOfAttempts", 0)),
                                 retry_interval_ms=int(retry.get("firstRetryIntervalInMilliseconds", 0)))
                    self._schedule(run, history, work, execution, queue)
                elif kind == h.CREATE_TIMER:
                    fire = h.parse_ts(action["fireAt"])
                    history.append(h.event(h.TIMER_CREATED, tid, at=self.now, FireAt=action["fireAt"]))
                    run.timers.append(TimerCall(self.now, fire, execution))
                    if not action.get("isCanceled"):
                        queue.append(_Work("timer", tid, fire_at=action["fireAt"]))
                elif kind == h.CONTINUE_AS_NEW:
                    continued, continue_input = True, action.get("input")
                else:
                    raise HarnessError(f"action type {kind} is not emulated: {action}")

            if not continued:  # the episode that goes on as new is stored with the next execution's first
                run.stored.append(custom if custom is not None or run.episodes > first_episode else carried)
            if state.get("error") or continued or state.get("isDone"):
                run.history_events.append(len(history) + 2)  # + OrchestratorCompleted, ExecutionCompleted
                # continue_as_new is no action the extension counts (it starts the count again)
                run.actions.append(sum(1 for a in atomic if a.get("actionType") != h.CONTINUE_AS_NEW))
            if state.get("error"):
                run.status, run.error = "Failed", str(state["error"])
                return False, None, custom
            if continued:
                return True, continue_input, custom
            if state.get("isDone"):
                run.status, run.output = "Completed", state.get("output")
                return False, None, custom
            if self.events is not None and parent_instance_id is None:  # raised now, to the top-level run: delivered
                raised = self.events(run)  # before whatever the orchestrator waits on
                run.raised.extend(raised)
                queue.extendleft(reversed([_Work("event", -1, name=name, input_json=json.dumps(json.dumps(data)))
                                           for name, data in raised]))
            if not queue:
                raise HarnessError(f"{run.name} waits for something nobody will deliver (custom status {custom!r})")

            delivered = queue.popleft()
            delivered_failed = False
            if delivered.kind in ("timer", "retry_timer"):
                fire_at = h.parse_ts(delivered.fire_at)
                self._tick(history, h.event(h.TIMER_FIRED, TimerId=delivered.task_id, FireAt=delivered.fire_at),
                           at=fire_at)
            elif delivered.kind == "event":
                self._tick(history, h.event(h.EVENT_RAISED, Name=delivered.name, Input=delivered.input_json))
            elif delivered.kind == "activity":
                delivered_failed = not self._deliver_activity(history, delivered)
            else:
                delivered_failed = not self._deliver_child(run, history, delivered)

    def _schedule(self, run: Run, history: list[dict[str, Any]], work: _Work, execution: int,
                  queue: deque[_Work]) -> None:
        payload = None if work.input_json is None else json.loads(work.input_json)
        if work.kind == "activity":
            history.append(h.event(h.TASK_SCHEDULED, work.task_id, at=self.now, Name=work.name, Input=work.input_json))
            work.record = ActivityCall(work.name, payload, execution, attempt=work.attempt)
            run.activities.append(work.record)
        else:
            history.append(h.event(h.SUBORCH_CREATED, work.task_id, at=self.now, Name=work.name,
                                   InstanceId=work.instance_id, Input=work.input_json))
            work.record = SubOrchestrationCall(work.name, work.instance_id, payload, execution)
            run.sub_orchestrations.append(work.record)
        queue.append(work)

    def _deliver_activity(self, history: list[dict[str, Any]], work: _Work) -> bool:
        record: ActivityCall = work.record
        arg = (ActivityTriggerConverter.decode(meta.Datum(type="json", value=work.input_json), trigger_metadata=None)
               if work.input_json is not None else None)
        try:
            result = self.activities(work.name, arg)
        except HarnessError:
            raise
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            self._tick(history, h.event(h.TASK_FAILED, TaskScheduledId=work.task_id,
                                        Reason=h.activity_failure_reason(work.name, exc), Details=record.error))
            return False
        record.result = result
        encoded = ActivityTriggerConverter.encode(result, expected_type=None).value
        self._tick(history, h.event(h.TASK_COMPLETED, TaskScheduledId=work.task_id, Result=encoded))
        return True

    def _deliver_child(self, run: Run, history: list[dict[str, Any]], work: _Work) -> bool:
        record: SubOrchestrationCall = work.record
        payload = record.input
        outcome: Any = RUN_CHILD
        error: str | None = None
        if self.children is not None:
            try:
                outcome = self.children(work.name, work.instance_id, payload)
            except HarnessError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        if error is None and outcome is RUN_CHILD:
            if work.name not in self.orchestrators:
                raise HarnessError(f"sub-orchestrator {work.name!r} is neither scripted nor registered here")
            child = self.run(work.name, payload, instance_id=work.instance_id, parent_instance_id=run.instance_id)
            record.run = child
            if child.status == "Completed":
                outcome = child.output
            else:
                error = child.error or child.status
        if error is not None:
            record.error = error
            self._tick(history, h.event(h.SUBORCH_FAILED, TaskScheduledId=work.task_id, Reason=error, Details=error))
            return False
        record.result = outcome
        self._tick(history, h.event(h.SUBORCH_COMPLETED, TaskScheduledId=work.task_id, Result=json.dumps(outcome)))
        return True


def run_orchestrator(orchestrator: Any, input_: Any, activities: ActivityScript | Mapping[str, Any],
                     orchestrators: Mapping[str, Any] | None = None,
                     children: SubOrchestrationScript | None = None, instance_id: str = "instance-1",
                     start: dt.datetime = T0, events: EventScript | None = None) -> Run:
    """One orchestration to its end (Completed or Failed), children included; see ``Harness``."""
    return Harness(activities, orchestrators, children, start, events=events).run(orchestrator, input_, instance_id)
