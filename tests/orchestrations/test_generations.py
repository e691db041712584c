"""Re-runs in the task orchestrator: a new generation writes under its own key and is promoted only when it completes."""
from __future__ import annotations

from typing import Any

from core import contracts as c
from core.contracts import Stage
from core.ids import shards_instance_id
from gpu_batch.layout import generation_key, pool_job_id
from tests.orchestrations.replay import HarnessError
from tests.orchestrations.test_task_orchestrator import (ENUMERATION, TASK, activities, finished_group, run_task,
                                                         task_input)

RUN = "r260101120000ab12"
KEY = generation_key(TASK, RUN)
LIVE = {c.PROMOTE, c.CLOSE_JOB, c.NOTIFY, c.DROP_ANSWER}  # activities that act on the task itself, not its state


def generation_activities(shards: int = 3, broken: str = "") -> tuple[Any, list[tuple[str, str]]]:
    """``activities`` of test_task_orchestrator, checking that every state activity is given the generation's key;
    records (activity, task_id) of each call."""
    answer = activities(shards=shards)
    seen: list[tuple[str, str]] = []

    def run(name: str, payload: Any) -> Any:
        seen.append((name, payload["task_id"]))
        if name == broken:
            raise OSError("disk full")
        if name == c.PROMOTE:
            return {"promoted": generation_key(TASK, payload["generation"]), "previews_deleted": 3}
        if name in LIVE:
            if payload["task_id"] != TASK:
                raise HarnessError(f"{name} got {payload['task_id']!r}, not the task id")
            return answer(name, payload)
        if payload["task_id"] != KEY:
            raise HarnessError(f"{name} got {payload['task_id']!r}, not the generation's key {KEY!r}")
        return answer(name, {**payload, "task_id": TASK})

    return run, seen


def rerun_input(**extra: Any) -> c.TaskInput:
    return {**task_input(shards_per_group=2), "run": RUN, "generation": RUN, **extra}  # type: ignore[typeddict-item]


def test_a_rerun_writes_under_its_own_key_and_is_promoted_after_its_previews() -> None:
    answer, seen = generation_activities()
    run = run_task(rerun_input(previous=""), answer)

    assert run.status == "Completed", run.error
    assert KEY == f"{TASK}/runs/{RUN}"
    # state activities (the task's own and its shard groups') were all given the generation's key
    assert {t for name, t in seen if name not in LIVE} == {KEY}
    every_child_call = [call for s in run.sub_orchestrations if s.run for call in s.run.activities]
    assert every_child_call and all(call.input["task_id"] == KEY for call in every_child_call)
    assert all(call.input["job_id"] == pool_job_id(TASK, RUN) for call in every_child_call)
    # shard groups get instance ids of their own run (never those of an earlier run's finished groups)
    assert [s.instance_id for s in run.sub_orchestrations] == [shards_instance_id(TASK, 0, RUN),
                                                               shards_instance_id(TASK, 1, RUN)]
    assert shards_instance_id(TASK, 1, RUN) == f"{TASK}-shards-{RUN}-0001"
    detecting = next(s for s in run.statuses if s["stage"] == Stage.detecting)
    assert detecting["groups_run"] == RUN and detecting["generation"] == RUN
    assert run.activity_names[-2:] == [c.PREVIEWS, c.PROMOTE]  # promoted only once everything is written
    assert run.inputs(c.PROMOTE) == [{"task_id": TASK, "generation": RUN, "previous": ""}]
    assert run.output["stage"] == Stage.completed and run.output["generation"] == RUN
    assert run.output["results"]["blob"] == f"results/{TASK}/runs/{RUN}/detections.json"
    assert run.output["pool_job"] == pool_job_id(TASK, RUN)


def test_a_rerun_of_a_task_that_never_had_results_is_promoted_without_a_previous() -> None:
    answer, _ = generation_activities(shards=1)
    run = run_task(rerun_input(), answer)

    assert run.status == "Completed"
    assert run.inputs(c.PROMOTE) == [{"task_id": TASK, "generation": RUN}]


def test_a_first_generation_is_never_promoted() -> None:
    run = run_task(task_input(), activities(shards=1))

    assert run.status == "Completed" and c.PROMOTE not in run.activity_names
    assert "generation" not in run.output


def test_a_cancelled_rerun_leaves_the_previous_generation_served() -> None:
    answer, _ = generation_activities()

    def child(name: str, instance_id: str, payload: Any) -> Any:
        assert payload["task_id"] == KEY
        return finished_group(len(payload["shards"]), cancelled=True)

    run = run_task(rerun_input(previous=""), answer, children=child)

    assert run.status == "Completed" and run.output["stage"] == Stage.cancelled
    assert c.PROMOTE not in run.activity_names and c.MERGE_PART not in run.activity_names


def test_a_rerun_that_fails_before_promotion_is_not_promoted() -> None:
    answer, _ = generation_activities(broken=c.PREVIEWS)
    run = run_task(rerun_input(previous=""), answer)

    assert run.status == "Failed" and run.custom_status["stage"] == Stage.failed
    assert c.PROMOTE not in run.activity_names
    assert [name for name in run.activity_names if name in ENUMERATION][0] == c.PLAN_LISTING
