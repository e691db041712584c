"""The sweep of a task's replaced generation (orchestrations.replaced_sweep) and the task orchestrator's step that
starts it after a re-run's promotion, replayed by the real Durable SDK with scripted activities."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from core import contracts as c
from core.ids import replaced_sweep_instance_id
from gpu_batch.layout import pool_job_id
from orchestrations.replaced_sweep import SHARES_PER_EPISODE, sweep_replaced_generation
from tests.orchestrations.replay import T0, run_orchestrator
from tests.orchestrations.test_generations import RUN, generation_activities, rerun_input
from tests.orchestrations.test_task_orchestrator import TASK, run_task

OLD = "r251201120000ab12"


@pytest.mark.parametrize(("days", "steps"), [(30, [6, 12, 18, 24, 30]), (8, [6, 8]), (0, [])])
def test_a_sweep_waits_in_timers_of_at_most_six_days_then_deletes_until_nothing_is_left(
        days: int, steps: list[int]) -> None:
    """Python's durable timers were limited to six days (core/expiry.py): the wait is chained; then one bounded
    share after another until the call says nothing is left."""
    shares = iter([{"deleted": 25_000, "done": False}, {"deleted": 25_000, "done": False},
                   {"deleted": 7, "done": True}])
    at = (T0 + timedelta(days=days)).isoformat()
    run = run_orchestrator(sweep_replaced_generation, {"task_id": TASK, "generation": OLD, "at": at},
                           {c.SWEEP_REPLACED: lambda payload: next(shares)}, instance_id=f"{TASK}-replaced-x")
    assert run.status == "Completed", run.error
    assert [t.fire_at for t in run.orchestrator_timers] == [T0 + timedelta(days=d) for d in steps]
    assert run.inputs(c.SWEEP_REPLACED) == [{"task_id": TASK, "generation": OLD}] * 3
    assert run.output == {"generation": OLD, "deleted": 50_007}


def test_a_sweep_that_finds_its_generation_kept_deletes_nothing_and_says_why() -> None:
    run = run_orchestrator(sweep_replaced_generation, {"task_id": TASK, "generation": "", "at": T0.isoformat()},
                           {c.SWEEP_REPLACED: {"deleted": 0, "done": True, "kept": "served"}})
    assert run.status == "Completed", run.error
    assert run.output == {"generation": "", "deleted": 0, "kept": "served"}
    assert run.inputs(c.SWEEP_REPLACED) == [{"task_id": TASK, "generation": ""}]


def test_a_generation_the_tasks_running_run_reads_is_looked_at_again_a_day_later_until_that_run_ended() -> None:
    """A run resumed after it failed past its promotion reads the generation it replaced; should it fail again
    before promoting (or a run stall after its promotion), no other promotion starts a sweep of that generation:
    ending at "running" left it for ever. The sweep goes on as new with its next look a day later."""
    answers = iter([{"deleted": 0, "done": True, "kept": "running"}, {"deleted": 0, "done": True, "kept": "running"},
                    {"deleted": 12, "done": True}])
    at = (T0 + timedelta(days=30)).isoformat()
    started = {"task_id": TASK, "generation": OLD, "at": at, "busy_retry_attempts": 6, "rechecks_running": True}
    run = run_orchestrator(sweep_replaced_generation, started, {c.SWEEP_REPLACED: lambda payload: next(answers)})
    assert run.status == "Completed", run.error
    assert run.executions == 3
    first = datetime.fromisoformat(at)
    assert [i["at"] for i in run.continued_as_new] == [
        (first + timedelta(days=1)).isoformat(), (first + timedelta(days=2)).isoformat()]
    assert all({**i, "at": at} == {**started, "deleted": 0} for i in run.continued_as_new)
    assert [t.fire_at for t in run.orchestrator_timers][-2:] == [first + timedelta(days=1), first + timedelta(days=2)]
    assert run.output == {"generation": OLD, "deleted": 12}


def test_a_sweep_started_before_it_looked_again_ends_where_it_found_its_generation_read() -> None:
    """Its history has no later episode: it replays as it ran."""
    run = run_orchestrator(sweep_replaced_generation, {"task_id": TASK, "generation": OLD, "at": T0.isoformat()},
                           {c.SWEEP_REPLACED: {"deleted": 0, "done": True, "kept": "running"}})
    assert run.status == "Completed", run.error
    assert run.executions == 1 and run.continued_as_new == []
    assert run.output == {"generation": OLD, "deleted": 0, "kept": "running"}


def test_a_long_sweep_goes_on_as_new_with_its_count_so_its_history_stays_short() -> None:
    left = [SHARES_PER_EPISODE + 2]

    def share(payload: Any) -> Any:
        left[0] -= 1
        return {"deleted": 10, "done": left[0] == 0}

    at = (T0 + timedelta(days=9)).isoformat()
    run = run_orchestrator(sweep_replaced_generation, {"task_id": TASK, "generation": OLD, "at": at},
                           {c.SWEEP_REPLACED: share})
    assert run.status == "Completed", run.error
    assert run.executions == 2
    assert run.continued_as_new == [{"task_id": TASK, "generation": OLD, "at": at,
                                     "deleted": 10 * SHARES_PER_EPISODE}]
    assert run.output == {"generation": OLD, "deleted": 10 * (SHARES_PER_EPISODE + 2)}
    assert len(run.orchestrator_timers) == 2  # the wait, in the first execution only: its ``at`` is past after


def _with_sweep(answer: Any, fail: bool = False) -> Any:
    def wrapped(name: str, payload: Any) -> Any:
        if name == c.SCHEDULE_REPLACED_SWEEP:
            if fail:
                raise OSError("task hub busy")
            assert payload["task_id"] == TASK  # the task's: the sweep reads the task's pointer and run
            return {"generation": payload["replaced"], "deletes_at": (T0 + timedelta(days=30)).isoformat(),
                    "instance_id": payload["instance_id"], "scheduled": True}
        return answer(name, payload)
    return wrapped


@pytest.mark.parametrize("previous", ["", OLD])
def test_a_promotion_starts_the_sweep_of_the_generation_it_replaced_and_the_status_says_when(previous: str) -> None:
    answer, _ = generation_activities()
    run = run_task(rerun_input(previous=previous, sweeps_replaced=True), _with_sweep(answer))

    assert run.status == "Completed", run.error
    names = run.activity_names
    assert names[names.index(c.PROMOTE) + 1] == c.SCHEDULE_REPLACED_SWEEP  # right after the pointer moved
    promoted_at = run.inputs(c.SCHEDULE_REPLACED_SWEEP)[0]["instance_id"].rsplit("-", 1)[1]
    assert run.inputs(c.SCHEDULE_REPLACED_SWEEP) == [
        {"task_id": TASK, "generation": RUN, "replaced": previous,
         "instance_id": f"{TASK}-replaced-{previous or 'first'}-{promoted_at}"}]
    assert run.output["replaced"] == {"generation": previous, "deletes_at": (T0 + timedelta(days=30)).isoformat(),
                                      "instance_id": run.inputs(c.SCHEDULE_REPLACED_SWEEP)[0]["instance_id"],
                                      "scheduled": True}
    assert run.statuses[-1]["replaced"] == run.output["replaced"]
    assert replaced_sweep_instance_id(TASK, "first", T0) != replaced_sweep_instance_id(TASK, "first",
                                                                                        T0 + timedelta(seconds=1))


def test_no_sweep_without_a_replaced_generation_or_for_a_run_of_before() -> None:
    """A re-run of a task that never had results replaces nothing; a run whose input has no ``sweeps_replaced``
    (started by an earlier release, replayed past its promotion) must meet no activity its history lacks."""
    answer, _ = generation_activities()
    nothing = run_task(rerun_input(sweeps_replaced=True), _with_sweep(answer))
    before = run_task(rerun_input(previous=OLD), _with_sweep(answer))
    for run in (nothing, before):
        assert run.status == "Completed", run.error
        assert c.PROMOTE in run.activity_names and c.SCHEDULE_REPLACED_SWEEP not in run.activity_names
        assert "replaced" not in run.output


def test_a_sweep_that_could_not_be_scheduled_is_said_and_the_task_completes() -> None:
    answer, _ = generation_activities()
    run = run_task(rerun_input(previous=OLD, sweeps_replaced=True), _with_sweep(answer, fail=True))
    assert run.status == "Completed", run.error
    assert run.output["stage"] == "completed"
    assert run.output["replaced"]["generation"] == OLD and run.output["replaced"]["deletes_at"] is None
    assert "no sweep was scheduled" in run.output["replaced"]["error"]
    assert run.inputs(c.PROMOTE)[0]["run_job"] == pool_job_id(TASK, RUN)
