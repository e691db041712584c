"""Self-checks of the replay harness itself (tiny inline orchestrators), so a harness bug cannot pass for a pass."""
from __future__ import annotations

import datetime as dt
import itertools
from typing import Any, Generator

import azure.durable_functions as df
import pytest

from tests.orchestrations.replay import T0, HarnessError, run_orchestrator

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=2)


def test_fan_out_with_a_retried_failure_keeps_task_ids_and_results_in_order() -> None:
    def orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        values = yield context.task_all([context.call_activity_with_retry("square", RETRY, i) for i in range(3)])
        return values

    failed = set()

    def square(name: str, n: Any) -> Any:
        if n == 1 and n not in failed:
            failed.add(n)
            raise RuntimeError("once")
        return n * n

    run = run_orchestrator(orchestrator, None, square)

    assert run.status == "Completed" and run.output == [0, 1, 4]
    assert [(c.input, c.attempt) for c in run.activities] == [(0, 1), (1, 1), (2, 1), (1, 2)]
    assert [t.retry for t in run.timers] == [True]


def test_a_failing_child_fails_the_parent_task() -> None:
    def parent(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        try:
            yield context.call_sub_orchestrator("child", 1, "child-1")
        except Exception as exc:
            return f"caught {exc}"
        return "no error"

    def child(name: str, instance_id: str, payload: Any) -> Any:
        raise ValueError("child broke")

    run = run_orchestrator(parent, None, {}, children=child)

    assert run.status == "Completed" and "child broke" in run.output
    assert [(s.name, s.instance_id, s.input) for s in run.sub_orchestrations] == [("child", "child-1", 1)]


def test_non_deterministic_replay_is_reported() -> None:
    counter = itertools.count()

    def orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        yield context.call_activity("work", next(counter))  # a different input on every replay
        yield context.call_activity("work", "again")
        return None

    with pytest.raises(HarnessError, match="non-deterministic"):
        run_orchestrator(orchestrator, None, {"work": 1})


def test_a_custom_status_over_16_kb_is_an_error_as_the_extension_fails_the_orchestration_for_it() -> None:
    """devhost README row 8: about 8,700 characters of compact JSON pass, 8,704 do not."""
    def orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        size = context.get_input()
        context.set_custom_status("x" * (size - 2))  # a JSON string: its two quotes
        yield context.call_activity("noop", None)
        return size

    assert run_orchestrator(orchestrator, 8703, {"noop": None}).status == "Completed"
    with pytest.raises(HarnessError, match="must not exceed 16 KB. The current payload size is 17 KB"):
        run_orchestrator(orchestrator, 8704, {"noop": None})


def test_the_clock_each_episode_reads_is_its_history_s_though_the_harness_parses_each_timestamp_once() -> None:
    """The harness memoizes the SDK's timestamp parse (replay.py docstring): every replay must still read, at each
    point, the time its own history gives there (the start, then each timer's fire time), and each clock its time
    zone as the SDK parses it; a second run on another start, in the same process, reads its own times."""
    def orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        seen = [context.current_utc_datetime]
        for delay_s in (30, 0.25):  # a quarter second: a cache keyed by less than the whole string fails
            yield context.create_timer(context.current_utc_datetime + dt.timedelta(seconds=delay_s))
            seen.append(context.current_utc_datetime)
        yield context.call_activity("noop", None)
        seen.append(context.current_utc_datetime)
        return [[t.isoformat(), t.utcoffset() == dt.timedelta(0)] for t in seen]

    for start in (T0, T0 + dt.timedelta(days=1, microseconds=7)):
        run = run_orchestrator(orchestrator, None, {"noop": None}, start=start)
        times = [start + dt.timedelta(seconds=s) for s in (0, 30, 30.25, 30.25)]
        assert run.status == "Completed" and run.output == [[t.isoformat(), True] for t in times]


def test_more_actions_in_one_execution_than_the_extension_allows_is_an_error() -> None:
    """devhost README row 47: the extension refuses an execution's maxOrchestrationActions-th + 1 action (host.json,
    default 100,000) and every later one, replayed ones counted (dropped: one waiting on them never ends);
    continue_as_new starts the count again. A fan-in of 10,000 parts whose task_all fails fast re-schedules nearly all
    of them at each retry round (orchestrations.retries.call_all)."""
    from tests.orchestrations.replay import Harness

    def orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        n = context.get_input()
        yield context.task_all([context.call_activity("work", i) for i in range(n)])
        if n < 3:
            context.continue_as_new(n + 1)
            return None
        return (yield context.call_activity("work", "last"))

    assert Harness({"work": 1}).max_actions == 100_000
    assert Harness({"work": 1}, max_actions=4).run(orchestrator, 1).status == "Completed"  # 1, 2, then 3 + 1
    with pytest.raises(HarnessError, match=r"Maximum amount of orchestration actions \(3\) has been reached"):
        Harness({"work": 1}, max_actions=3).run(orchestrator, 1)


def test_the_stored_status_keeps_a_carried_status_for_the_first_episode_after_continue_as_new_only() -> None:
    """As dtfx stores it (devhost README, fidelity rows 33 and 43): each work item stores what its episode's replay
    set, or none; the work item that goes on as new runs the next execution's first episode and stores that
    episode's status, else the one carried over (TaskOrchestrationDispatcher ``carryOverStatus``); the episode that
    went on as new is no work item of its own."""
    def orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        if context.get_input() == 0:
            context.set_custom_status("first")
            yield context.call_activity("step", 0)
            context.continue_as_new(1)
            return None
        yield context.call_activity("step", 1)  # the carried status, stored with the work item that went on as new
        yield context.call_activity("step", 2)  # none: this generation has set none yet
        context.set_custom_status("second")
        return "done"

    run = run_orchestrator(orchestrator, 0, {"step": "ok"})

    assert run.status == "Completed" and run.executions == 2
    assert run.stored == ["first", "first", None, "second"], run.stored
    assert run.custom_status == "second"


def test_raised_events_reach_their_waits_as_on_azure_and_one_raised_early_is_kept_for_its_wait() -> None:
    """The ``events`` script: an event raised before the orchestrator waits for it is kept by the SDK for the wait
    (devhost README row 31), an event of a name nobody waits for is no error, and a wait gets the data as the
    extension stores the SDK client's ``raise_event`` body: its JSON as a JSON string (row 36)."""
    def orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        yield context.call_activity("work", 1)
        early = yield context.wait_for_external_event("early")
        late = yield context.wait_for_external_event("late")
        return [early, late]

    def events(run: Any) -> list[tuple[str, Any]]:
        if run.episodes == 1:  # the activity is scheduled; no wait yet
            return [("early", {"n": 1}), ("nobody", {})]
        return [("late", "two")] if run.episodes == 3 else []

    run = run_orchestrator(orchestrator, None, {"work": 1}, events=events)
    assert run.status == "Completed" and run.output == ['{"n": 1}', '"two"']
    assert run.raised == [("early", {"n": 1}), ("nobody", {}), ("late", "two")]
