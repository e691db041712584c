"""Re-runs in the task orchestrator: a new generation writes under its own key and is promoted only when it completes."""
from __future__ import annotations

from typing import Any

import pytest

from core import contracts as c
from core.contracts import Stage
from core.ids import shards_instance_id
from core.settings import Settings
from core.shards import REUSE_IMAGES_PER_CALL
from gpu_batch.layout import generation_key, pool_job_id
from orchestrations import task
from tests.orchestrations.replay import HarnessError
from tests.orchestrations.test_task_orchestrator import (ATTEMPT_S, ENUMERATION, TASK, activities, finished_group,
                                                         run_task, task_input)

RUN = "r260101120000ab12"
KEY = generation_key(TASK, RUN)
# act on the task itself, not its state (the joined drops' registry is the task's: api.starters registers there)
LIVE = {c.PROMOTE, c.CLOSE_JOB, c.NOTIFY, c.DROP_ANSWER, c.SCHEDULE_EXPIRY, c.ANSWER_JOINED_DROPS}


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
        if name == c.SCHEDULE_EXPIRY:
            return {"scheduled": False, "instance_id": f"{TASK}-expiry", "moved": True}
        if name in LIVE:
            if payload["task_id"] != TASK:
                raise HarnessError(f"{name} got {payload['task_id']!r}, not the task id")
            return answer(name, payload)
        if payload["task_id"] != KEY:
            raise HarnessError(f"{name} got {payload['task_id']!r}, not the generation's key {KEY!r}")
        return answer(name, {**payload, "task_id": TASK})

    return run, seen


def rerun_input(**extra: Any) -> c.TaskInput:
    data: dict[str, Any] = {**task_input(shards_per_group=2), "run": RUN, "generation": RUN, "moves_expiry": True,
                            "answers_joined": True, **extra}
    return data  # type: ignore[return-value]


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
    # promoted only once everything is written; then an expiry waiting for the first run's pages is told that the
    # re-run asked for none (they are the re-run's pages now)
    assert run.activity_names[-4:] == [c.PREVIEWS, c.PROMOTE, c.SCHEDULE_EXPIRY, c.ANSWER_JOINED_DROPS]
    assert run.inputs(c.ANSWER_JOINED_DROPS)[0]["run"] == RUN  # the registry of the run, under the task's own id
    # with the run's job too: a late call of a run terminated and replaced since moves nothing (activities.superseded)
    assert run.inputs(c.SCHEDULE_EXPIRY) == [{"task_id": TASK, "expires": "", "move": True,
                                              "run_job": pool_job_id(TASK, RUN)}]
    assert "expires" not in run.output["previews"]
    # with the run's job: a late promotion of a run terminated and replaced since is refused (activities.superseded)
    assert run.inputs(c.PROMOTE) == [{"task_id": TASK, "generation": RUN, "previous": "",
                                      "run_job": pool_job_id(TASK, RUN)}]
    assert run.output["stage"] == Stage.completed and run.output["generation"] == RUN
    assert run.output["results"]["blob"] == f"results/{TASK}/runs/{RUN}/detections.json"
    assert run.output["pool_job"] == pool_job_id(TASK, RUN)


def test_a_rerun_of_a_task_that_never_had_results_is_promoted_without_a_previous() -> None:
    answer, _ = generation_activities(shards=1)
    run = run_task(rerun_input(), answer)

    assert run.status == "Completed"
    assert run.inputs(c.PROMOTE) == [{"task_id": TASK, "generation": RUN, "run_job": pool_job_id(TASK, RUN)}]


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


def only_new_input(**extra: Any) -> c.TaskInput:
    data = rerun_input(**extra)
    return {**data, "request": {**data["request"], "rerun": True, "only_new": True}}


def reuse_answers(to_run: list[int], reused: list[int]) -> tuple[Any, list[tuple[str, str]]]:
    """``generation_activities`` plus a reuse step that answers ``to_run`` / ``reused`` per shard."""
    answer, seen = generation_activities(shards=len(to_run))

    def run(name: str, payload: Any) -> Any:
        if name == c.REUSE:
            seen.append((name, payload["task_id"]))
            first, count = payload["first"], payload["count"]
            return {"reused": reused[first:first + count], "to_run": to_run[first:first + count]}
        return answer(name, payload)

    return run, seen


def test_only_new_reuses_in_parallel_calls_and_sends_only_shards_with_images_left_to_the_pool() -> None:
    to_run = [0, 3, 10, 0, 0, 1, 0, 0, 0, 0, 0, 4]  # 12 shards: two reuse calls (10 shards each at most)
    reused = [10 - n for n in to_run]
    answer, seen = reuse_answers(to_run, reused)
    run = run_task(only_new_input(previous=""), answer)

    assert run.status == "Completed", run.error
    # after the enumeration, before any shard group: the reuse step, reading the served (first) generation; each call
    # names the run's pool job: replaced by a resumed run, its late calls write nothing (activities.superseded)
    job = pool_job_id(TASK, RUN)
    assert run.inputs(c.REUSE) == [{"task_id": KEY, "previous": TASK, "first": 0, "count": 10, "run_job": job},
                                   {"task_id": KEY, "previous": TASK, "first": 10, "count": 2, "run_job": job}]
    names = run.activity_names
    assert names.index(c.FINISH_ENUMERATION) < names.index(c.REUSE) < names.index(c.MERGE_PART)
    # shards with nothing left to run start done and never reach the pool; the others start pending
    submitted = sorted(sid for call in run.sub_orchestrations if call.run for a in call.run.calls(c.SUBMIT)
                       for sid, _ in a.input["shards"])
    assert submitted == [f"s{i:05d}" for i, n in enumerate(to_run) if n]
    states = {sid: s for call in run.sub_orchestrations for sid, s in call.input["state"].items()}
    assert states["s00000"] == {"attempt": 1, "status": "done", "covered": 10, "seen": 10, "reused": 10}
    assert states["s00002"] == {"attempt": 1, "status": "pending"}  # nothing reused: no covered count
    assert run.output["reused"] == sum(reused) and run.output["generation"] == RUN
    assert next(s for s in run.statuses if s["stage"] == Stage.detecting)["reused"] == sum(reused)
    assert c.PROMOTE in names


def test_the_reuse_calls_of_a_run_without_an_id_keep_the_inputs_of_before() -> None:
    """A run started before runs had ids (no ``run`` in its input) names no pool job in its calls (orchestrations.task
    ``_run_job``), the reuse step's too: its calls are not guarded, as before."""
    answer, _ = reuse_answers([1, 0], [0, 1])
    data = only_new_input(previous="")
    run = run_task({k: v for k, v in data.items() if k != "run"}, answer)  # type: ignore[arg-type]

    assert run.status == "Completed", run.error
    assert run.inputs(c.REUSE) == [{"task_id": KEY, "previous": TASK, "first": 0, "count": 2}]


def _reuse_calls(data: c.TaskInput, shards: int) -> list[tuple[int, int]]:
    """(first, count) of each reuse call an ``only_new`` re-run of ``shards`` shards makes."""
    answer, _ = reuse_answers([1] * shards, [0] * shards)
    run = run_task(data, answer)
    assert run.status == "Completed", run.error
    return [(p["first"], p["count"]) for p in run.inputs(c.REUSE)]


def test_reuse_calls_take_about_the_knobs_images_in_whole_shards() -> None:
    """A new task's calls follow ``reuse_images_per_call`` (recorded at start) over the request's shard size: small
    shards go many to a call (100,000 shards of 100 images made 10,000 calls of 10 in the task's history)."""
    def sized(images_per_call: int, images_per_shard: int) -> c.TaskInput:
        data = only_new_input(previous="")
        return {**data, "request": {**data["request"], "images_per_shard": images_per_shard},
                "knobs": {**data["knobs"], "reuse_images_per_call": images_per_call}}

    assert _reuse_calls(sized(25, 5), 12) == [(0, 5), (5, 5), (10, 2)]
    assert _reuse_calls(sized(4, 5), 3) == [(0, 1), (1, 1), (2, 1)]  # a shard larger than a call: one per call
    assert _reuse_calls(sized(100_000, 10_000), 12) == [(0, 10), (10, 2)]  # the default: as before at 10,000
    assert task.reuse_shards_per_call(100_000, 100) == task.REUSE_MAX_SHARDS_PER_CALL == 500  # at most 500
    assert task.reuse_shards_per_call(100_000, 1_000) == 100 and task.reuse_shards_per_call(100_000, 200_000) == 1
    # the app records TRAPBATCH_REUSE_IMAGES_PER_CALL (default core.shards.REUSE_IMAGES_PER_CALL) in new tasks
    assert Settings.from_env({"AzureWebJobsStorage": "x"}).knobs.reuse_images_per_call == REUSE_IMAGES_PER_CALL
    assert Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_REUSE_IMAGES_PER_CALL": "7"}
                             ).knobs.reuse_images_per_call == 7


def test_a_task_started_before_the_reuse_knob_replays_10_shards_per_call() -> None:
    """Its history holds calls of 10 shards whatever their size: an input without the knob plans them again."""
    data = only_new_input(previous="")
    knobs = {k: v for k, v in data["knobs"].items() if k != "reuse_images_per_call"}
    old: c.TaskInput = {**data, "request": {**data["request"], "images_per_shard": 1}, "knobs": knobs}

    assert _reuse_calls(old, 23) == [(0, 10), (10, 10), (20, 3)]


def test_only_new_without_served_results_runs_everything_and_a_plain_rerun_reuses_nothing() -> None:
    answer, _ = reuse_answers([10, 10], [0, 0])
    without_previous = run_task(only_new_input(), answer)  # no generation of the task had results
    plain = run_task(rerun_input(previous=""), answer)

    for run in (without_previous, plain):
        assert run.status == "Completed", run.error
        assert c.REUSE not in run.activity_names and "reused" not in run.output
        assert all("state" not in call.input for call in run.sub_orchestrations)


def test_a_rerun_started_before_expiries_moved_schedules_none() -> None:
    """A task started by older code (no ``moves_expiry``) that is replayed past this point must meet no activity
    its history does not have."""
    answer, seen = generation_activities()
    data = rerun_input(previous="")
    del data["moves_expiry"]
    run = run_task(data, answer)
    assert run.status == "Completed" and c.SCHEDULE_EXPIRY not in run.activity_names


def _every_attempt_ends(answer: Any, to_run: list[int], row: dict[str, Any]) -> Any:
    """``answer``, with every pool attempt of the shards with images to run ending as ``row`` says, having covered
    nothing beyond the shard's reused images (attempt 0, which the coverage counts), and a merge that marks those
    images not processed."""
    def run(name: str, payload: Any) -> Any:
        if name == c.POLL:
            out = answer(name, payload)
            out["completed"] = [{**r, "result": "failure", **row, "covered": 10 - to_run[int(r["shard_id"][1:])],
                                 "missing": to_run[int(r["shard_id"][1:])]} for r in out["completed"]]
            return out
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": s, "attempt": a, "missing": to_run[int(s[1:])], "submitted": True}
                               for s, a in payload["shards"]]}
        if name == c.MERGE_PART:
            return {**answer(name, payload), "failed": sum(to_run), "missing": sum(to_run),
                    "failure_reasons": {"not_processed": sum(to_run)}}
        return answer(name, payload)
    return run


POOL_ENDED = {"exit_code": None, "failure_code": "ContainerPullImageFailed",
              "failure_message": "ContainerPullImageFailed: the node could not pull the worker's image"}
WORKER_FAILED = {"exit_code": 137, "failure_code": "FailureExitCode",
                 "failure_message": "The task exited with an exit code representing a failure"}


@pytest.mark.parametrize("row, words", [(POOL_ENDED, "the pool itself ended every attempt of 2 shard(s)"),
                                        (WORKER_FAILED, "every attempt of 2 shard(s) failed; the worker exited 137")])
def test_an_only_new_rerun_whose_pool_work_processed_nothing_fails_and_leaves_the_served_generation(
        row: dict[str, Any], words: str) -> None:
    """An ``only_new`` re-run whose every pool attempt the pool ended (or whose worker failed every attempt) fails as
    a first run does, with the reason and what to do, and is not promoted. Why: its reused images were counted as
    processed (they start covered), so it merged every new or changed image as "not_processed", ended
    ``completed_with_errors`` and was promoted over the served generation (shard 0, all reused, never reached the
    pool, so every shard given up was not every shard either)."""
    to_run = [0, 4, 6]
    answer, _ = reuse_answers(to_run, [10 - n for n in to_run])
    run = run_task(only_new_input(previous=""), _every_attempt_ends(answer, to_run, row))

    assert run.status == "Failed", run.output
    assert c.MERGE_PART not in run.activity_names and c.PROMOTE not in run.activity_names
    status = run.custom_status
    assert status["stage"] == Stage.failed and status["error"].startswith("no image was processed"), status["error"]
    assert words in status["error"]
    # posted again as "rerun" alone, it would send every reused image to the pool: the re-run's own verb is named
    assert '"only_new": true' in status["error"] and '"rerun"' not in status["error"], status["error"]
    # what the pool work did and cost: it ran none of the images it was sent (the reused ones have their results)
    assert status["images_done"] == 20 and status["cost"]["images"] == 0 and status["cost"]["attempts"] == 6

    # some image processed by the pool: the re-run's results stand, and it ends as its images say
    def first_attempt_covers_one(name: str, payload: Any) -> Any:
        out = _every_attempt_ends(answer, to_run, row)(name, payload)
        if name == c.POLL:
            out["completed"] = [{**r, "covered": r["covered"] + 1, "missing": r["missing"] - 1}
                                if r["shard_id"] == "s00001" else r for r in out["completed"]]
        return out

    partly = run_task(only_new_input(previous=""), first_attempt_covers_one)
    assert partly.status == "Completed", partly.error
    assert c.MERGE_PART in partly.activity_names and c.PROMOTE in partly.activity_names


def test_a_cancelled_only_new_rerun_prices_the_images_its_pool_ran_not_those_it_reused() -> None:
    """Cancelled: the cost's images are those the pool attempts gave a result, not the reused ones, which started
    counted done (a rate over them priced images no node ran)."""
    to_run = [0, 4, 6]
    answer, _ = reuse_answers(to_run, [10 - n for n in to_run])

    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        reused = sum(s.get("reused", 0) for s in payload["state"].values())
        return {**finished_group(n, cancelled=True), "images_done": reused + 3, "images_reused": reused,
                "attempts_ended": 1, "attempts_timed": 1, "node_seconds": ATTEMPT_S}

    run = run_task(only_new_input(previous=""), answer, children=child)

    assert run.output["stage"] == Stage.cancelled and c.PROMOTE not in run.activity_names
    assert run.output["images_done"] == 20 + 3 * len(run.sub_orchestrations)
    assert run.output["cost"]["images"] == 3 * len(run.sub_orchestrations)


def test_an_only_new_reruns_groups_of_before_without_reused_counts_merge_as_they_did() -> None:
    """Replay: groups that ended under a release before ``images_reused`` returned none, their reused images in
    ``images_done``; a history with them went on to merge, and replays so, whatever the pool did."""
    to_run = [0, 4, 6]
    answer, _ = reuse_answers(to_run, [10 - n for n in to_run])

    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        reused = sum(s.get("reused", 0) for s in payload["state"].values())
        return {**finished_group(n), "done": 0, "given_up": n, "images_done": reused, "pool_error_shards": n,
                "pool_error": "ContainerPullImageFailed: the node could not pull the worker's image"}

    run = run_task(only_new_input(previous=""), answer, children=child)
    assert run.status == "Completed" and c.MERGE_PART in run.activity_names


@pytest.mark.parametrize("row", [POOL_ENDED, WORKER_FAILED])
def test_a_failed_only_new_reruns_given_up_shards_ask_for_only_new_as_its_error_does(row: dict[str, Any]) -> None:
    """A failed ``only_new`` re-run's status gives one piece of advice: its ``shards_given_up`` hint names the verb its
    error names (``"only_new": true``), not ``"rerun": true``, which would send every image it reused to the pool
    again. And it says how many of its ``images_done`` were reused, beside an error that says no image was
    processed. Why: the error was changed (``_fail_if_the_pool_never_ran``'s ``again``) and the hint beside it, from
    the same outcomes, still said "rerun" (status text only: the actions are the same)."""
    to_run = [0, 4, 6]
    answer, _ = reuse_answers(to_run, [10 - n for n in to_run])
    run = run_task(only_new_input(previous=""), _every_attempt_ends(answer, to_run, row))

    assert run.status == "Failed", run.output
    status = run.custom_status
    assert '"only_new": true' in status["error"], status["error"]
    hint = status["shards_given_up"]["hint"]
    assert '"only_new": true' in hint and '"rerun"' not in hint, hint
    assert status["images_done"] == 20 and status["reused"] == 20


def test_a_cancelled_only_new_reruns_given_up_shards_ask_for_only_new() -> None:
    """Cancelled with shards given up: an ``only_new`` re-run's hint asks for ``only_new`` again (the served
    generation's results are reused once more), not ``"rerun"`` (every image to the pool); a first run's keeps
    ``"rerun"`` (it has no served results to reuse)."""
    to_run = [0, 4, 6]
    answer, _ = reuse_answers(to_run, [10 - n for n in to_run])
    example = {"shard": "s00001", "attempts": 3, "exit_code": 137, "by": "worker", "reason": "the worker exited 137"}

    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        reused = sum(s.get("reused", 0) for s in (payload.get("state") or {}).values())
        return {**finished_group(n, cancelled=True), "done": n - 1, "given_up": 1, "given_up_examples": [example],
                "images_done": reused + 3, "images_reused": reused}

    run = run_task(only_new_input(previous=""), answer, children=child)
    assert run.output["stage"] == Stage.cancelled
    hint = run.output["shards_given_up"]["hint"]
    assert '"only_new": true' in hint and '"rerun"' not in hint, hint
    assert run.output["reused"] == 20


def test_an_only_new_rerun_whose_workers_failed_every_attempt_fails_with_their_reason_beside_a_group_reused_whole(
        ) -> None:
    """A group whose every shard was reused (done from the start, never given up) beside groups whose workers failed
    every attempt: the task fails with the first worker's reason. Before, the first example was looked up in every
    group's outcome, and the reused group's has none: the task failed with the words 'given_up_examples'."""
    to_run = [0, 0, 4, 6]  # two shards a group: the first group reused whole
    answer, _ = reuse_answers(to_run, [10 - n for n in to_run])
    run = run_task(only_new_input(previous=""), _every_attempt_ends(answer, to_run, WORKER_FAILED))

    assert run.status == "Failed" and c.MERGE_PART not in run.activity_names
    assert "every attempt of 2 shard(s) failed; the worker exited 137" in run.custom_status["error"], run.custom_status
