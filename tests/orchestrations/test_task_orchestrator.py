"""Branches of the task orchestrator, replayed by the real Durable SDK with scripted activities and children."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

import pytest

from core import contracts as c
from core import notify
from core.contracts import Stage
from core.ids import shards_instance_id
from core.settings import OrchestrationKnobs
from gpu_batch.layout import parse_pool_task_id, pool_job_id, shard_id
from orchestrations.retries import POOL_RETRY, STORAGE_RETRY
from orchestrations.shards import OUTAGE_LIMIT_S, UNAVAILABLE_WAIT_S, run_shards
from orchestrations.task import task_orchestrator
from tests.orchestrations.replay import T0, EventScript, HarnessError, Run, run_orchestrator

TASK = "task-0123456789abcdef0123"
REQUEST = {"container": "cams", "prefix": "2024/site-a/", "model": "MDV5A", "request_name": "site A"}


def raising_on(activity: str, error: BaseException, answer: Any) -> Any:
    """``answer``'s activities, but ``activity`` raises ``error`` on every attempt."""
    def answering(name: str, payload: Any) -> Any:
        if name == activity:
            raise error
        return answer(name, payload)
    return answering


def task_input(request: dict[str, Any] | None = None, **knob_overrides: Any) -> c.TaskInput:
    return {"task_id": TASK, "request": request or REQUEST, "knobs": OrchestrationKnobs(**knob_overrides).to_dict()}


def merged(missing: int = 0) -> c.MergeOutput:
    return {"results_blob": f"results/{TASK}/detections.json", "csv_blob": f"results/{TASK}/detections.csv",
            "repeats_blob": f"results/{TASK}/repeated-detections.json", "container": "trapbatch",
            "images": 25, "failed": 1, "with_detections": 7, "detections": 12, "empty": 17 - missing,
            "missing": missing, "repeated_locations": 2, "failure_reasons": {}}


PREVIEWS: c.PreviewsOutput = {"container": "$web", "counts": {"detections": 7, "empty": 17}}
EXPORTS: c.ExportsOutput = {
    "container": "trapbatch", "prefix": f"results/{TASK}/exports/", "coco": f"results/{TASK}/exports/coco.json",
    "camtrap_dp": f"results/{TASK}/exports/camtrap-dp/", "zooniverse": f"results/{TASK}/exports/zooniverse/",
    "zooniverse_batches": 1, "threshold": 0.2, "images": 25, "annotations": 12, "observations": 29, "deployments": 2,
    "zooniverse_subjects": 24, "sizes_unknown": 0}


ENUMERATION = [c.PLAN_LISTING, c.LIST_PART, c.WRITE_SHARDS, c.FINISH_ENUMERATION]


def enumeration_answer(name: str, images: int, shards: int) -> Any:
    """One listing unit of one part holding every image; the summary reports ``shards``."""
    if name == c.PLAN_LISTING:
        return {"units": 1 if images else 0, "leaves": 1 if images else 0, "images_per_write": 200_000}
    if name == c.LIST_PART:
        return {"images": images, "listed": images, "more": False}
    if name == c.WRITE_SHARDS:
        return {"shards": shards, "images": images}
    return {"images": images, "shards": shards}


ATTEMPT_S = 40.0  # what the scripted pool reports as each attempt's wall time (CompletedShard["seconds"])


def activities(images: int = 25, shards: int = 3, missing: int = 0) -> Any:
    """Enumeration, merge and previews, plus a pool on which every shard attempt completes at its first poll, after
    ``ATTEMPT_S`` seconds."""

    def answer(name: str, payload: Any) -> Any:
        assert payload["task_id"] == TASK
        if name in ENUMERATION:  # the parallel enumeration (tests/orchestrations/test_enumeration_orchestrator.py)
            return enumeration_answer(name, images, shards)
        if name == c.MERGE_PART:  # the whole task is one part (25 images, far below merge_images_per_part)
            m = merged(missing)
            return {"part": 0, **{k: m[k] for k in ("images", "failed", "with_detections", "detections", "empty",
                                                   "missing")},
                    "failure_reasons": {}, "json_bytes": 100, "csv_bytes": 50, "detections_considered": 40,
                    "marked": 0}
        if name == c.MERGE_COMBINE:
            return {"container": "trapbatch", "search_groups": 2}
        if name == c.SEARCH_REPEATS:
            return {"group": payload["group"], "locations": 1}
        if name == c.RANK_REPEATS:
            return {"locations": 2}
        if name == c.CLEAN_MERGE_WORK:
            return {"deleted": 9}
        if name == c.PREVIEWS:
            return PREVIEWS
        if name == c.EXPORTS:
            return EXPORTS
        if name == c.SUBMIT:
            return {"submitted": len(payload["shards"])}
        if name == c.CLOSE_JOB:
            return {"closed": True}
        if name == c.ANSWER_JOINED_DROPS:  # a run whose input has ``answers_joined``
            return {"answered": 0}
        if name == c.POLL:
            rows = []
            for tid in payload["task_ids"]:
                sid, attempt = parse_pool_task_id(tid)
                rows.append({"task_id": tid, "shard_id": sid, "attempt": attempt, "result": "success",
                             "exit_code": 0, "failure_message": None, "images": 10, "covered": 10, "failed": 0,
                             "missing": 0, "seconds": ATTEMPT_S})
            return {"cancelled": False, "completed": rows, "running": 0, "queued": 0, "images_in_progress": 0}
        raise HarnessError(f"unexpected activity {name}")

    return answer


def finished_group(shards: int, resubmissions: int = 0, cancelled: bool = False) -> c.ShardsOutcome:
    return {"cancelled": cancelled, "shards": shards, "pending": 0, "submitted": 0, "done": shards, "given_up": 0,
            "images_done": 10 * shards, "images_failed": 0, "images_missing": 0, "resubmissions": resubmissions,
            "images_in_progress": 0, "pool_running": 0, "pool_queued": 0}


def run_task(input_: c.TaskInput, answer: Any, children: Any = None, events: EventScript | None = None) -> Run:
    return run_orchestrator(task_orchestrator, input_, answer, orchestrators={c.SHARDS_ORCHESTRATOR: run_shards},
                            children=children, instance_id=TASK, events=events)


@pytest.mark.parametrize("prefix", ["2024/site-a/", ""])
def test_fails_with_a_message_naming_the_place_when_there_are_no_images(prefix: str) -> None:
    run = run_task(task_input({**REQUEST, "prefix": prefix}), activities(images=0, shards=0))

    assert run.status == "Failed"
    assert "no images" in (run.error or "") and "'cams'" in (run.error or "")
    assert (f"under prefix '{prefix}'" in (run.error or "")) == bool(prefix)
    assert run.custom_status["stage"] == Stage.failed
    assert "'cams'" in run.custom_status["error"]
    assert run.activity_names == [c.PLAN_LISTING, c.FINISH_ENUMERATION] and not run.sub_orchestrations
    assert run.inputs(c.PLAN_LISTING) == [{"task_id": TASK, "request": {**REQUEST, "prefix": prefix}}]
    # it failed at listing: no shard group ran, so no pool job was created (a shard group's first submit creates it,
    # activities.pool.run_submit); the status named one all the same, and trapbatch status showed it
    assert "pool_job" not in run.custom_status


def test_no_images_under_the_prefix_names_what_the_container_holds_near_it() -> None:
    """The plan listed the folder above the prefix (activities.enumerate._nearby): the error names its folders
    instead of "check the container and prefix"."""
    answer = activities(images=0, shards=0)

    def with_nearby(name: str, payload: Any) -> Any:
        out = answer(name, payload)
        if name == c.PLAN_LISTING:
            out["nearby"] = {"folder": "", "names": ["camera-01/", "camera-02/"], "files": 0, "more": False}
        return out

    run = run_task(task_input({**REQUEST, "prefix": "Camera-01/"}), with_nearby)
    assert run.status == "Failed" and run.custom_status["stage"] == Stage.failed
    assert ("under prefix 'Camera-01/'; names are case-sensitive: 'camera-01/' differs from the prefix only in case; "
            "the container's top level holds camera-01/, camera-02/") in run.custom_status["error"]


def test_a_prefix_with_a_backslash_is_named_as_the_user_wrote_it() -> None:
    """A Windows-style prefix was shown Python-escaped, ``under prefix '2024\\\\site-a'``: two backslashes, which is
    not what was sent (``core.errors.quoted``); the folder near it likewise."""
    answer = activities(images=0, shards=0)

    def with_nearby(name: str, payload: Any) -> Any:
        out = answer(name, payload)
        if name == c.PLAN_LISTING:
            out["nearby"] = {"folder": "2024\\", "names": ["2024\\site-b/"], "files": 0, "more": False}
        return out

    run = run_task(task_input({**REQUEST, "prefix": "2024\\site-a"}), with_nearby)
    error = run.custom_status["error"]
    assert run.status == "Failed" and "under prefix '2024\\site-a';" in error, error
    assert "folder '2024\\' holds 2024\\site-b/" in error and "\\\\" not in error, error
    assert "\\\\" not in (run.error or "")
    listed = run_task(task_input({**REQUEST, "prefix": "2024\\site-a", "image_list": "lists\\a.txt"}), answer)
    assert listed.status == "Failed" and ("none of the images of list 'lists\\a.txt' exist in container 'cams' "
                                          "under prefix '2024\\site-a';") in listed.custom_status["error"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_more_shards_than_a_task_may_have_fail_before_any_manifest_with_the_shard_size_that_fits(dry_run: bool) -> None:
    """images_per_shard 1 over ten million images made ten million manifests, pool tasks and group entries."""
    from core.shards import MAX_SHARDS

    request = {**REQUEST, "images_per_shard": 1, **({"dry_run": True} if dry_run else {})}
    run = run_task(task_input(request, images_per_shard=1, max_shards=MAX_SHARDS),
                   activities(images=MAX_SHARDS + 1, shards=MAX_SHARDS + 1))

    assert run.status == "Failed" and not run.sub_orchestrations and "pool_job" not in run.custom_status
    assert c.WRITE_SHARDS not in run.activity_names and run.custom_status["stage"] == Stage.failed
    assert f"make {MAX_SHARDS + 1} shards, more than the {MAX_SHARDS}" in run.custom_status["error"]
    assert '"images_per_shard" of at least 2 ' in run.custom_status["error"]
    fits = run_task(task_input({**request, "dry_run": True}, images_per_shard=1, max_shards=MAX_SHARDS),
                    activities(images=MAX_SHARDS, shards=MAX_SHARDS))
    assert fits.status == "Completed" and fits.custom_status["stage"] == Stage.estimated
    # a task started before the limit (its knobs lack it) replays as it ran: its manifests were written
    legacy = run_task(task_input({**request, "dry_run": True}, images_per_shard=1),
                      activities(images=MAX_SHARDS + 1, shards=MAX_SHARDS + 1))
    assert legacy.status == "Completed" and c.WRITE_SHARDS in legacy.activity_names


PASSED_OVER = {"files": 12040, "kinds": {".mp4": 12000, ".txt": 40}}


def _passing_over(answer: Any) -> Any:
    """``answer`` whose enumeration found files that are not images (``core.notimages``)."""
    def wrapped(name: str, payload: Any) -> Any:
        out = answer(name, payload)
        return {**out, "not_images": PASSED_OVER} if name == c.FINISH_ENUMERATION else out
    return wrapped


def test_no_images_but_other_files_says_what_was_found() -> None:
    run = run_task(task_input(), _passing_over(activities(images=0, shards=0)))

    assert run.status == "Failed"
    assert "12,040 files are not images and were not run (.mp4 12,000, .txt 40)" in (run.error or "")
    assert "no images" in run.custom_status["error"] and ".mp4 12,000" in run.custom_status["error"]


def test_files_not_images_are_in_the_status_at_every_stage_and_in_the_summary() -> None:
    run = run_task(task_input(), _passing_over(activities(shards=2)),
                   children=lambda name, iid, payload: finished_group(len(payload["shards"])))

    assert run.status == "Completed"
    stages = [s for s in run.statuses if s["stage"] in (Stage.detecting, Stage.merging, Stage.publishing)]
    assert {s["stage"] for s in stages} == {Stage.detecting, Stage.merging, Stage.publishing}
    assert all(s["not_images"] == PASSED_OVER for s in stages)
    assert run.output["not_images"] == PASSED_OVER and run.output["stage"] == Stage.completed
    estimate = run_task(task_input({**REQUEST, "dry_run": True}), _passing_over(activities(shards=2)))
    assert estimate.output["stage"] == Stage.estimated and estimate.output["not_images"] == PASSED_OVER
    plain = run_task(task_input(), activities(shards=2),
                     children=lambda name, iid, payload: finished_group(len(payload["shards"])))
    assert "not_images" not in plain.output and all("not_images" not in s for s in plain.statuses)


def test_runs_one_shard_group_sub_orchestration_per_group() -> None:
    groups = {shards_instance_id(TASK, 0): finished_group(2, resubmissions=1),
              shards_instance_id(TASK, 1): finished_group(2, resubmissions=0),
              shards_instance_id(TASK, 2): finished_group(1, resubmissions=2)}

    def child(name: str, instance_id: str, payload: Any) -> Any:
        assert name == c.SHARDS_ORCHESTRATOR
        return groups[instance_id]

    knob_values = task_input(shards_per_group=2)["knobs"]
    run = run_task(task_input(shards_per_group=2), activities(shards=5), children=child)

    assert run.status == "Completed"
    assert [(s.name, s.instance_id, s.input) for s in run.sub_orchestrations] == [
        (c.SHARDS_ORCHESTRATOR, shards_instance_id(TASK, g), {"task_id": TASK, "job_id": TASK, "knobs": knob_values,
                                                              "shards": [shard_id(i) for i in ids],
                                                              # a round's four calls of 3 attempts
                                                              # (orchestrations.shards.round_events)
                                                              "max_in_flight": len(ids), "round_events": 92,
                                                              "outage_limit_s": OUTAGE_LIMIT_S,
                                                              "outage_stops": True, "reads_cancel": True,
                                                              "unavailable_wait_s": UNAVAILABLE_WAIT_S,
                                                              "unavailable_restarts": True})
        for g, ids in enumerate([[0, 1], [2, 3], [4]])]
    detecting = next(s for s in run.statuses if s["stage"] == Stage.detecting)
    assert {k: detecting[k] for k in ("images", "shards", "groups")} == {"images": 25, "shards": 5, "groups": 3}
    assert run.output["resubmissions"] == 3 and run.output["shards"] == 5


def test_a_cancelled_group_cancels_the_task_without_merging() -> None:
    def child(name: str, instance_id: str, payload: Any) -> Any:
        return finished_group(len(payload["shards"]), cancelled=instance_id == shards_instance_id(TASK, 1))

    run = run_task(task_input(shards_per_group=1), activities(shards=3), children=child)

    assert run.status == "Completed"
    assert len(run.sub_orchestrations) == 3  # every group is awaited
    assert c.MERGE_PART not in run.activity_names and c.PREVIEWS not in run.activity_names
    assert run.inputs(c.CLOSE_JOB) == [{"task_id": TASK, "job_id": TASK}]  # the cancelled run's job is ended
    assert run.output["stage"] == Stage.cancelled and run.output["task_id"] == TASK
    assert run.custom_status["stage"] == Stage.cancelled and run.output["pool_job"] == TASK
    assert "finished" in run.output and "results" not in run.output


def test_all_groups_done_merges_then_publishes_and_completes() -> None:
    run = run_task(task_input(shards_per_group=2), activities(shards=3))

    assert run.status == "Completed"
    # The real shard-group orchestrator ran as the children, through the same replay.
    assert [s.run.status if s.run else None for s in run.sub_orchestrations] == ["Completed", "Completed"]
    assert [s.result["done"] for s in run.sub_orchestrations] == [2, 1]
    # the job ends before the merge; the merge is the parallel fan-in (orchestrations.fanin); the exports follow it
    assert run.activity_names == [*ENUMERATION, c.CLOSE_JOB, c.MERGE_PART, c.MERGE_COMBINE, c.SEARCH_REPEATS, c.SEARCH_REPEATS,
                                  c.RANK_REPEATS, c.CLEAN_MERGE_WORK, c.EXPORTS, c.PREVIEWS]
    assert run.inputs(c.EXPORTS) == [{"task_id": TASK, "variant": ""}]
    assert run.inputs(c.MERGE_PART) == [{"task_id": TASK, "part": 0, "first_shard": 0, "shards": 3}]
    combine = run.calls(c.MERGE_COMBINE)[0]
    assert combine.input["task_id"] == TASK and combine.input["model"] == "MDV5A"
    assert combine.input["completed_at"] > T0.isoformat()  # the orchestration clock, after the groups' timers
    assert run.inputs(c.RANK_REPEATS) == [{"task_id": TASK, "groups": 2, "detections_considered": 40}]
    assert run.inputs(c.PREVIEWS) == [{"task_id": TASK, "model": "MDV5A", "request_name": "site A"}]
    assert run.stages == [Stage.enumerating, Stage.detecting, Stage.merging, Stage.publishing, Stage.completed]
    out = run.output
    assert out["stage"] == Stage.completed and out["task_id"] == TASK
    assert {k: out[k] for k in ("images", "failed", "missing", "with_detections", "detections", "shards")} == {
        "images": 25, "failed": 1, "missing": 0, "with_detections": 7, "detections": 12, "shards": 3}
    assert out["results"] == {"container": "trapbatch", "blob": f"results/{TASK}/detections.json",
                              "csv": f"results/{TASK}/detections.csv", "exports": EXPORTS}
    assert out["repeated_detections"] == {"locations": 2, "blob": f"results/{TASK}/repeated-detections.json"}
    assert out["previews"] == PREVIEWS
    assert run.custom_status == {k: v for k, v in out.items() if k != "task_id"}


def test_images_still_missing_after_the_merge_complete_with_errors() -> None:
    run = run_task(task_input(), activities(shards=1, missing=3))

    assert run.status == "Completed"
    assert run.activity_names == [*ENUMERATION, c.CLOSE_JOB, c.MERGE_PART, c.MERGE_COMBINE, c.SEARCH_REPEATS, c.SEARCH_REPEATS,
                                  c.RANK_REPEATS, c.CLEAN_MERGE_WORK, c.EXPORTS, c.PREVIEWS]
    assert run.output["stage"] == Stage.completed_with_errors and run.output["missing"] == 3
    assert run.custom_status["stage"] == Stage.completed_with_errors


def flaky_listing(failures: int, exc: BaseException) -> Any:
    """``activities(shards=1)`` whose first ``failures`` PLAN_LISTING calls raise ``exc``."""
    answer = activities(shards=1)
    seen = {"n": 0}

    def flaky(name: str, payload: Any) -> Any:
        if name == c.PLAN_LISTING:
            seen["n"] += 1
            if seen["n"] <= failures:
                raise exc
        return answer(name, payload)

    return flaky


@pytest.mark.parametrize("failures, status", [(2, "Completed"), (3, "Failed")])
def test_enumeration_is_retried_on_transient_storage_errors(failures: int, status: str) -> None:
    run = run_task(task_input(), flaky_listing(failures, ConnectionError("storage throttled")))

    assert run.status == status
    calls = run.calls(c.PLAN_LISTING)
    assert len(calls) == min(failures + 1, STORAGE_RETRY.attempts)
    # each retry waits on an explicit durable timer (no call_activity_with_retry, see orchestrations.retries)
    assert all(call.attempt == 1 for call in calls) and not [t for t in run.timers if t.retry]
    assert [t.delay_s for t in run.timers][:len(calls) - 1] == [STORAGE_RETRY.delay_s(n) for n in range(1, len(calls))]
    if status == "Failed":
        assert "storage throttled" in (run.error or "") and not run.sub_orchestrations


def test_a_run_has_its_own_pool_job_which_ends_with_it() -> None:
    run = run_task({**task_input(shards_per_group=2), "run": "r261201120000ab12"}, activities(shards=3))

    job = f"{TASK}_r261201120000ab12"
    assert run.status == "Completed"
    assert {s.input["job_id"] for s in run.sub_orchestrations} == {job}
    every_child_call = [call for s in run.sub_orchestrations if s.run for call in s.run.activities]
    assert every_child_call and all(call.input["job_id"] == job for call in every_child_call)
    assert run.inputs(c.CLOSE_JOB) == [{"task_id": TASK, "job_id": job}]


def test_a_failing_group_closes_the_job_and_fails_with_the_reason_in_the_status() -> None:
    def child(name: str, instance_id: str, payload: Any) -> Any:
        if instance_id == shards_instance_id(TASK, 1):
            raise RuntimeError("poll_shards failed: the Batch account refused the request (403)")
        return finished_group(len(payload["shards"]))

    run = run_task(task_input(shards_per_group=1), activities(shards=2), children=child)

    assert run.status == "Failed"
    assert run.inputs(c.CLOSE_JOB) == [{"task_id": TASK, "job_id": TASK}]
    assert c.MERGE_PART not in run.activity_names
    assert run.custom_status["stage"] == Stage.failed and "403" in run.custom_status["error"]
    assert run.custom_status["pool_job"] == TASK and "finished" in run.custom_status


def test_a_pool_job_that_cannot_be_closed_is_named_in_the_failed_status() -> None:
    """Each run has a job of its own, so no later run closes one left open; an open job counts against the account's
    100-300 active jobs and its running tasks keep their nodes (includes/azure-batch-limits.md): the status says so,
    with the command that ends it, after the original reason."""
    answer = activities(shards=2)

    def child(name: str, instance_id: str, payload: Any) -> Any:
        raise RuntimeError("poll_shards failed: the Batch account refused the request (403)")

    closing_fails = raising_on(c.CLOSE_JOB, RuntimeError("Batch unreachable"), answer)

    run = run_task(task_input(shards_per_group=1), closing_fails, children=child)

    assert run.status == "Failed" and len(run.calls(c.CLOSE_JOB)) == POOL_RETRY.attempts
    error = run.custom_status["error"]
    assert "poll_shards failed" in error and error.index("(403)") < error.index("could not be closed")
    assert "  " not in error and f"the pool job {TASK} could not be closed" in error
    assert f"az batch job stop --job-id {TASK}" in error
    assert_signs_in_first(error)


def assert_signs_in_first(text: str) -> None:
    """The account takes Entra ID only: azure-cli's batch commands need ``az batch account login`` (``-g``/``-n``)
    first, or they stop at "Specify batch account..." or fetch the shared key the account refuses (docs/deploy.md
    "Pool jobs by hand"): the text names that login before the command, and the page that shows both."""
    login = "az batch account login -n <account> -g <group>"
    assert login in text and text.index(login) < text.index("az batch job stop"), text
    assert 'docs/deploy.md "Pool jobs by hand"' in text, text


def failing(answer: Any, activity: str, error: Exception) -> Any:
    """``answer``, except that ``activity`` raises ``error`` every time."""
    def run(name: str, payload: Any) -> Any:
        if name == activity:
            raise error
        return answer(name, payload)

    return run


def test_a_pool_job_that_cannot_be_closed_after_every_image_ran_does_not_lose_the_results() -> None:
    """Every shard ended: a Batch error closing the job (after its retries) failed the task with nothing merged, and
    resuming it started a pool task per shard again. The results are merged; the open job is said, with its command."""
    closing_fails = failing(activities(shards=2), c.CLOSE_JOB, RuntimeError("Batch unreachable"))
    run = run_task(task_input(shards_per_group=1), closing_fails)
    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    assert c.MERGE_PART in run.activity_names and len(run.calls(c.CLOSE_JOB)) == POOL_RETRY.attempts
    assert f"az batch job stop --job-id {TASK}" in run.output["pool_job_error"]
    assert_signs_in_first(run.output["pool_job_error"])


def test_a_cancelled_task_whose_job_cannot_be_closed_says_so() -> None:
    closing_fails = failing(activities(shards=2), c.CLOSE_JOB, RuntimeError("Batch unreachable"))
    run = run_task(task_input(shards_per_group=1), closing_fails,
                   children=lambda name, iid, payload: finished_group(len(payload["shards"]), cancelled=True))
    assert run.output["stage"] == Stage.cancelled
    assert f"az batch job stop --job-id {TASK}" in run.output["pool_job_error"]


def _unstarted_group(processed: int) -> Any:
    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        return {**finished_group(n), "done": 0, "given_up": n, "images_done": processed, "images_missing": 10 * n,
                "pool_error_shards": n, "pool_error": "ContainerPullImageFailed: " + "x" * 274}  # 300: the most kept
    return child


def test_a_task_whose_pool_never_ran_the_worker_fails_with_the_pools_reason() -> None:
    """Not one image processed, every shard given up because the pool ended its attempts before the worker ran: the
    task fails with the pool's reason and what to do, instead of completed_with_errors over a file of failures."""
    run = run_task(task_input(shards_per_group=1), activities(shards=2), children=_unstarted_group(0))

    assert run.status == "Failed" and c.MERGE_PART not in run.activity_names
    error = run.custom_status["error"]
    assert run.custom_status["stage"] == Stage.failed and "no image was processed" in error
    assert "ContainerPullImageFailed" in error and '"rerun": true' in error and not error.endswith("…")
    assert run.inputs(c.CLOSE_JOB) == [{"task_id": TASK, "job_id": TASK}]  # once, when the pool work ended

    # some images processed: the results stand, and the task ends as its images say
    partly = run_task(task_input(shards_per_group=1), activities(shards=2), children=_unstarted_group(5))
    assert partly.status == "Completed" and c.MERGE_PART in partly.activity_names


def _every_worker_failed_group(name: str, instance_id: str, payload: Any) -> Any:
    """Every attempt of every shard failed in the worker, with the longest reason a shard group keeps."""
    n = len(payload["shards"])
    return {**finished_group(n), "done": 0, "given_up": n, "images_done": 0, "images_missing": 10 * n,
            "given_up_examples": [{"shard": shard, "attempts": 3, "exit_code": 1,
                                   "reason": "the worker exited 1: " + "w" * (c.GIVEN_UP_REASON_CHARS - 20)}
                                  for shard in payload["shards"]]}


@pytest.mark.parametrize("children", [_unstarted_group(0), _every_worker_failed_group])
def test_a_task_that_processed_nothing_and_could_not_close_its_job_says_how_to_end_it_within_the_cut(
        children: Any) -> None:
    """No image processed, and the pool job could not be closed either: the job's error (the close's words, then
    'az batch account login ... then az batch job stop --job-id <job>') was put after the failure (up to ~450
    characters with the pool's or worker's words) inside the one ``error``, which the status cuts at 500 characters
    (``_first_line``): the instruction, what the operator needs to end a job that counts against the account's
    active jobs, was cut off. It now follows the cut, and the job's error is its own status field,
    ``pool_job_error``, as for a completed or cancelled task (the CLI says it as a failed step)."""
    closing_fails = raising_on(c.CLOSE_JOB, RuntimeError("Batch unreachable: " + "b" * 400), activities(shards=2))
    run = run_task(task_input(shards_per_group=1), closing_fails, children=children)

    assert run.status == "Failed" and len(run.calls(c.CLOSE_JOB)) == POOL_RETRY.attempts
    status = run.custom_status
    error = status["error"]
    assert status["stage"] == Stage.failed and error.startswith("no image was processed"), error
    assert f"az batch job stop --job-id {TASK}" in error and f"the pool job {TASK} could not be closed" in error
    assert_signs_in_first(error)
    assert "pool_job_error" in error, error  # says where the close's own words are
    job_error = status["pool_job_error"]
    assert "Batch unreachable" in job_error and f"az batch job stop --job-id {TASK}" in job_error, job_error
    assert_signs_in_first(job_error)
    assert "Batch unreachable" not in error, error  # said once, in its field


def test_a_task_failing_after_its_job_could_not_be_closed_still_says_how_to_end_the_job() -> None:
    """Every shard ran, closing the job failed (the results are still merged), then the merge failed: the failed
    status said "disk full" alone, and nothing of the job left open, counted against the account's active jobs."""
    closing_fails = raising_on(c.CLOSE_JOB, RuntimeError("Batch unreachable"), activities(shards=1))
    run = run_task(task_input(), raising_on(c.MERGE_PART, OSError("disk full"), closing_fails))

    assert run.status == "Failed" and len(run.calls(c.CLOSE_JOB)) == POOL_RETRY.attempts  # not tried again
    error = run.custom_status["error"]
    assert error.startswith("disk full") and f"az batch job stop --job-id {TASK}" in error, error
    assert "Batch unreachable" in run.custom_status["pool_job_error"]


def test_a_failing_merge_fails_the_task_as_failed_not_merging() -> None:
    answer = activities(shards=1)

    broken_merge = raising_on(c.MERGE_PART, OSError("disk full"), answer)

    run = run_task(task_input(), broken_merge)

    assert run.status == "Failed"
    assert len(run.calls(c.MERGE_PART)) == STORAGE_RETRY.attempts
    assert run.custom_status["stage"] == Stage.failed and "disk full" in run.custom_status["error"]
    assert run.inputs(c.CLOSE_JOB) == [{"task_id": TASK, "job_id": TASK}]  # once, when the pool work ended
    # what the pool work did and cost before the failure
    assert run.custom_status["images_done"] == 10 and run.custom_status["cost"]["node_seconds"] == ATTEMPT_S


@pytest.mark.parametrize("limit, stage", [(0.04, Stage.completed), (0.039, Stage.completed_with_errors),
                                          (0.0, Stage.completed_with_errors)])
def test_the_failed_fraction_decides_completed_or_completed_with_errors(limit: float, stage: Stage) -> None:
    run = run_task(task_input(max_failed_fraction=limit), activities(shards=1))  # merged(): 1 of 25 failed = 0.04

    assert run.status == "Completed" and run.output["stage"] == stage
    assert run.output["failed_fraction"] == 0.04 and run.output["max_failed_fraction"] == limit


def test_failing_exports_leave_the_results_and_say_why() -> None:
    """The exports are views of a complete results file: after their retries fail, the task still completes, without
    them, and its status says why."""
    answer = activities(shards=1)

    broken_exports = raising_on(c.EXPORTS, RuntimeError("results/x/detections.json is not valid JSON\nTraceback ..."),
                                answer)

    run = run_task(task_input(), broken_exports)

    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    assert len(run.calls(c.EXPORTS)) == STORAGE_RETRY.attempts
    assert c.PREVIEWS in run.activity_names
    assert "exports" not in run.output["results"]
    assert "not valid JSON" in run.output["results"]["exports_error"]
    assert "Traceback" not in run.output["results"]["exports_error"]
    # what to do is in the status itself (the API's answer) and in the notification, not only in the CLI
    hint = run.output["results"]["exports_hint"]
    assert '"only_new": true' in hint and TASK in hint
    assert run.custom_status["results"]["exports_hint"] == hint
    assert json.loads(notify.body(TASK, run.output))["results"]["exports_hint"] == hint


def test_merge_work_a_cleanup_left_is_said_in_the_status_with_how_to_delete_it() -> None:
    """The fan-in's work blobs (as large as the results) that the best-effort cleanup could not delete stay forever:
    the task still completes, and its status names them and the command that deletes them (it said nothing)."""
    answer = activities(shards=1)

    no_cleanup = raising_on(c.CLEAN_MERGE_WORK, RuntimeError("AuthorizationPermissionMismatch\nTraceback ..."), answer)

    run = run_task(task_input(), no_cleanup)

    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    left = run.output["work_left"]
    assert left.endswith("Deleting them failed with: AuthorizationPermissionMismatch"), left
    assert f"--source trapbatch --pattern \"tasks/{TASK}/merge/*\"" in left
    # as an operator can run it: the account has no shared key (azure-cli storage validate_client_parameters takes
    # the key from ARM unless --auth-mode login) and az names no account by itself
    command = left[left.index("'az storage blob delete-batch"):].split("'")[1].split()
    assert "--auth-mode" in command and command[command.index("--auth-mode") + 1] == "login", command
    assert "--account-name" in command, command
    assert "Traceback" not in left and run.custom_status["work_left"] == left
    assert "work_left" not in run_task(task_input(), activities(shards=1)).output


def test_a_repeat_search_failing_every_attempt_leaves_the_task_completed_and_says_how_to_run_it_again() -> None:
    """The search runs after the results are written (a folder too large for one activity failed the whole task
    after all the GPU work): the task completes with its results, exports and page, and its status says the search
    failed, with the error's first line, and the command that runs it again."""
    search_fails = failing(activities(shards=3), c.SEARCH_REPEATS,
                           RuntimeError("Timeout value of 00:30:00 was exceeded by function: search_repeats\nat ..."))
    run = run_task(task_input(shards_per_group=2), search_fails)

    assert run.status == "Completed", run.error
    assert run.output["stage"] == Stage.completed and run.custom_status["stage"] == Stage.completed
    assert len(run.calls(c.SEARCH_REPEATS)) == 2 * STORAGE_RETRY.attempts and c.RANK_REPEATS not in run.activity_names
    assert run.activity_names[-3:] == [c.CLEAN_MERGE_WORK, c.EXPORTS, c.PREVIEWS]
    assert run.output["results"]["exports"] == EXPORTS
    repeats = run.output["repeated_detections"]
    assert repeats["locations"] == 0 and repeats["blob"] == ""  # no list was written
    assert repeats["error"] == ("the repeated-detection search failed: Timeout value of 00:30:00 was exceeded by "
                                "function: search_repeats")
    assert f"trapbatch repeats {TASK} --search" in repeats["hint"] and "complete" in repeats["hint"]
    # the page says so too (it had no repeats section and nothing about the search)
    assert run.inputs(c.PREVIEWS)[0]["repeat_search_error"] == ("Timeout value of 00:30:00 was exceeded by function: "
                                                                "search_repeats")


def test_folders_too_large_to_search_are_counted_in_the_status_with_what_to_do() -> None:
    answer = activities(shards=1)

    def skipping(name: str, payload: Any) -> Any:
        if name == c.RANK_REPEATS:
            return {"locations": 2, "folders_skipped": 1, "detections_skipped": 950_000}
        return answer(name, payload)

    run = run_task(task_input(), skipping)

    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    repeats = run.output["repeated_detections"]
    assert {k: repeats[k] for k in ("locations", "folders_skipped", "detections_skipped")} == {
        "locations": 2, "folders_skipped": 1, "detections_skipped": 950_000}
    assert f"trapbatch repeats {TASK} names them" in repeats["hint"] and "--max-folder-detections" in repeats["hint"]
    assert "error" not in repeats


@pytest.mark.parametrize("shards, per_group, limit", [(23, 4, 7), (23, 4, 5), (12, 200, 5), (9, 2, 100)])
def test_max_in_flight_limits_the_whole_task_over_all_its_groups(shards: int, per_group: int, limit: int) -> None:
    """TRAPBATCH_MAX_IN_FLIGHT is the task's: each group's pool tasks in flight never pass the share the task
    orchestrator gave it, and the shares sum to at most the limit, so the task's in-flight total (the sum over its
    groups at any moment) never passes it either. The groups run for real (the harness runs them one after the
    other, so each group's in-flight count is measured on its own; the sum of their maxima bounds any moment's sum)."""
    in_flight: set[str] = set()
    polls: dict[str, int] = {}
    peak: dict[str, int] = {}  # shard -> the in-flight count of its group's tasks when it was submitted
    base = activities(shards=shards)

    def pool(name: str, payload: Any) -> Any:
        if name == c.SUBMIT:
            in_flight.update(sid for sid, _ in payload["shards"])
            for sid, _ in payload["shards"]:
                peak[sid] = len(in_flight)
            return {"submitted": len(payload["shards"])}
        if name == c.POLL:
            done = []
            for tid in payload["task_ids"]:
                polls[tid] = polls.get(tid, 0) + 1
                if polls[tid] >= 3:  # each task runs for three polls
                    done.append(tid)
            answer = base(name, {**payload, "task_ids": done})
            in_flight.difference_update(parse_pool_task_id(t)[0] for t in done)
            return answer
        return base(name, payload)

    run = run_task(task_input(shards_per_group=per_group, max_in_flight=limit), pool)

    assert run.status == "Completed"
    shares = [s.input["max_in_flight"] for s in run.sub_orchestrations]
    assert sum(shares) <= limit and all(share >= 1 for share in shares)
    assert len(run.sub_orchestrations) <= limit
    for child, share in zip(run.sub_orchestrations, shares):
        group = set(child.input["shards"])
        most = max(peak[sid] for sid in group)
        assert most <= share, (child.instance_id, most, share)
    assert sum(max(peak[sid] for sid in child.input["shards"]) for child in run.sub_orchestrations) <= limit
    assert sorted(peak) == [shard_id(i) for i in range(shards)]  # every shard ran


def test_a_dry_run_stops_after_enumeration_with_an_estimate_and_touches_no_pool() -> None:
    knobs = {"images_per_shard": 10_000, "worker_images_per_s": 250.0, "pool_nodes": 4, "node_price_per_hour": 3.0}
    run = run_task(task_input({**REQUEST, "dry_run": True}, **knobs), activities(images=100_000, shards=10))

    assert run.status == "Completed"
    assert run.activity_names == [*ENUMERATION] and not run.sub_orchestrations  # no submit, no job to close
    assert run.custom_status["stage"] == Stage.estimated and run.output["stage"] == Stage.estimated
    est = run.output["estimate"]
    assert (est["images"], est["shards"], est["pool_nodes"], est["nodes_used"]) == (100_000, 10, 4, 4)
    assert est["gpu_hours"] == round((100_000 / 250 + 10 * 10) / 3600, 4)  # 400 s of images + 10 shard starts
    assert est["cost"] == round(est["gpu_hours"] * 3.0, 2)


@pytest.mark.parametrize("knobs, price, source", [
    ({"pool_vm_size": "Standard_NC40ads_H100_v5"}, 6.98, "list price"),
    ({"pool_vm_size": "standard_nc40ads_h100_v5", "node_price_per_hour": 2.5}, 2.5, "TRAPBATCH_NODE_PRICE_PER_HOUR"),
    ({}, None, None),  # a local pool: no VM size, so no price
])
def test_the_final_status_prices_the_node_time_the_shard_groups_measured(
        knobs: dict[str, Any], price: float | None, source: str | None) -> None:
    """Three shards, one attempt each, each reported by the poll as 40 s of pool-task time: the real shard-group
    orchestrators sum them and the task prices the 120 node-seconds."""
    run = run_task(task_input(shards_per_group=2, **knobs), activities(images=25, shards=3))

    assert run.status == "Completed"
    cost = run.output["cost"]
    assert (cost["images"], cost["node_seconds"], cost["attempts"], cost["attempts_timed"]) == (25, 120.0, 3, 3)
    assert cost["images_per_node_second"] == round(25 / 120, 3)
    assert cost["price_per_hour"] == price
    assert cost["vm_size"] == (knobs.get("pool_vm_size") or None)
    if price is None:
        assert cost["usd"] is None and cost["usd_per_million_images"] is None
        assert "no VM size" in cost["note"] and "TRAPBATCH_NODE_PRICE_PER_HOUR" in cost["note"]
    else:
        assert source in cost["price_source"]
        assert cost["usd"] == round(price * 120 / 3600, 4)
        assert cost["usd_per_million_images"] == round(price / (25 / 120 * 3600) * 1e6, 2)
    assert run.custom_status["cost"] == cost


def test_a_dry_run_of_a_pool_with_a_known_vm_size_is_estimated_at_its_list_price() -> None:
    knobs = {"images_per_shard": 10_000, "worker_images_per_s": 250.0, "pool_vm_size": "Standard_NC24ads_A100_v4"}
    run = run_task(task_input({**REQUEST, "dry_run": True}, **knobs), activities(images=100_000, shards=10))

    est = run.output["estimate"]
    assert est["node_price_per_hour"] == 3.673 and est["cost"] == round(est["gpu_hours"] * 3.673, 2)


NOTIFY_URL = "https://hooks.example.org/trapbatch"


def with_receiver(answer: Any, activity: str, taken: Any, failures: int = 0) -> tuple[Any, dict[str, int]]:
    """``answer``, plus ``activity`` (a word-of-the-end sender) failing its first ``failures`` calls, then ``taken``;
    ``seen["n"]`` counts its calls."""
    seen = {"n": 0}

    def wrapped(name: str, payload: Any) -> Any:
        if name == activity:
            seen["n"] += 1
            if seen["n"] <= failures:
                raise ConnectionError(f"{activity}: receiver down")
            return taken
        return answer(name, payload)

    return wrapped, seen


def with_notify(answer: Any, failures: int = 0) -> tuple[Any, dict[str, int]]:
    return with_receiver(answer, c.NOTIFY, {"sent": True, "status_code": 204, "reason": ""}, failures)


def test_a_notify_url_gets_the_final_status_once_when_the_task_ends() -> None:
    answer, _ = with_notify(activities(shards=1))
    run = run_task(task_input({**REQUEST, "notify_url": NOTIFY_URL}), answer)

    assert run.status == "Completed"
    sent = run.inputs(c.NOTIFY)
    assert len(sent) == 1 and sent[0]["url"] == NOTIFY_URL and sent[0]["task_id"] == TASK
    assert sent[0]["status"]["stage"] == Stage.completed and sent[0]["status"]["images"] == 25
    assert run.activity_names[-1] == c.NOTIFY  # after the final status was set
    told = {"sent": True, "status_code": 204, "reason": ""}
    assert run.output["notification"] == told and run.custom_status["notification"] == told  # seen in the status
    assert "notification" not in sent[0]["status"]


def test_a_notification_not_sent_is_said_in_the_status() -> None:
    """The host left TRAPBATCH_NOTIFY_HOSTS after the start (the activity answers why it sent nothing)."""
    refused = {"sent": False, "status_code": 0, "reason": "host 'hooks.example.org' is not in TRAPBATCH_NOTIFY_HOSTS"}
    answer, _ = with_receiver(activities(shards=1), c.NOTIFY, refused)
    run = run_task(task_input({**REQUEST, "notify_url": NOTIFY_URL}), answer)
    assert run.output["stage"] == Stage.completed and run.output["notification"] == refused


def test_a_notify_url_secret_passes_the_secrets_name_to_the_activity_and_old_requests_pass_what_they_did() -> None:
    """The address is read by the activity (activities/notify.py), so the orchestration's history holds the secret's
    name only. A request without ``notify_url_secret`` (every task recorded before it existed) hands the activity
    the same input as before: the three keys, no ``url_secret``."""
    answer, _ = with_notify(activities(shards=1))
    run = run_task(task_input({**REQUEST, "notify_url_secret": "lab-hook"}), answer)

    assert run.status == "Completed"
    [sent] = run.inputs(c.NOTIFY)
    assert sent["url_secret"] == "lab-hook" and sent["url"] == "" and sent["status"]["stage"] == Stage.completed
    assert run.custom_status["notification"] == {"sent": True, "status_code": 204, "reason": ""}
    answer, _ = with_notify(activities(shards=1))
    [old] = run_task(task_input({**REQUEST, "notify_url": NOTIFY_URL}), answer).inputs(c.NOTIFY)
    assert sorted(old) == ["status", "task_id", "url"] and old["url"] == NOTIFY_URL


def test_an_address_secret_that_cannot_be_read_is_the_reason_and_the_task_ends_as_it_would() -> None:
    """A secret that stays missing fails every attempt (``AddressUnavailable``, retried as a receiver that is
    down): the status says why, naming the secret, and the task still completes."""
    from activities.notify import AddressUnavailable

    missing = AddressUnavailable("the notification address in secret 'lab-hook' (notify_url_secret) could not be "
                                 "read from /s.json: the local secrets file /s.json has no secret named 'lab-hook'")
    run = run_task(task_input({**REQUEST, "notify_url_secret": "lab-hook"}),
                   raising_on(c.NOTIFY, missing, activities(shards=1)))
    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    told = run.custom_status["notification"]
    assert told["sent"] is False and "'lab-hook'" in told["reason"] and "after 6 attempts" in told["reason"]


def test_no_notify_url_sends_nothing() -> None:
    answer, seen = with_notify(activities(shards=1))
    assert run_task(task_input(), answer).status == "Completed" and seen["n"] == 0


@pytest.mark.parametrize("failures", [2, 10])
def test_a_receiver_that_is_down_is_retried_with_back_off_and_never_changes_the_outcome(failures: int) -> None:
    from orchestrations.task import NOTIFY_RETRY

    answer, seen = with_notify(activities(shards=1), failures=failures)
    run = run_task(task_input({**REQUEST, "notify_url": NOTIFY_URL}), answer)

    assert run.status == "Completed" and run.custom_status["stage"] == Stage.completed
    assert seen["n"] == min(failures + 1, NOTIFY_RETRY.attempts)
    told = run.custom_status["notification"]
    if failures < NOTIFY_RETRY.attempts:
        assert told == {"sent": True, "status_code": 204, "reason": ""}
    else:  # every attempt failed: the status says so, with the last failure
        assert told["sent"] is False and "receiver down" in told["reason"] and "after 6 attempts" in told["reason"]
    delays = [t.delay_s for t in run.timers][-(seen["n"] - 1):]
    assert delays == [NOTIFY_RETRY.delay_s(n) for n in range(1, seen["n"])] and delays[0] == 30


def test_a_failed_task_notifies_its_failure_then_fails() -> None:
    answer, _ = with_notify(activities(images=0, shards=0))
    run = run_task(task_input({**REQUEST, "notify_url": NOTIFY_URL}), answer)

    assert run.status == "Failed"
    [sent] = run.inputs(c.NOTIFY)
    assert sent["status"]["stage"] == Stage.failed and "no images" in sent["status"]["error"]
    assert run.custom_status["stage"] == Stage.failed and run.custom_status["notification"]["sent"] is True


def test_a_done_file_that_cannot_be_written_is_said_in_the_status() -> None:
    """Someone waiting for ``incoming/<name>.done.json`` had no sign that it would never come: every attempt of the
    drop answer failing was swallowed. The task's outcome stands; the status names the file and why."""
    data = task_input()
    data["drop"] = "site-a/survey.json"
    answers = activities(shards=1)

    refusing = raising_on(c.DROP_ANSWER, RuntimeError("AuthorizationFailure: the app may not write to incoming"),
                          answers)

    run = run_task(data, refusing)
    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    said = run.custom_status["drop_answer"]
    assert said["written"] is False and said["file"] == "incoming/site-a/survey.done.json"
    assert "the app may not write to incoming" in said["reason"]
    assert f"GET /api/tasks/{TASK}" in said["hint"]  # where to read the same instead, and the role it needs
    assert "Storage Blob Data Owner" in said["hint"]


JOINING_RUN = "r261207210000ab12"


@pytest.mark.parametrize("drop, images", [("site-a/survey.json", 25), ("", 25), ("survey.json", 0)])
def test_a_runs_end_answers_the_drops_that_joined_it_right_after_its_own_done_file(drop: str, images: int) -> None:
    """A request dropped while the task ran, which found it started by another request (a drop, or an HTTP post:
    no ``drop``), registered as joining the run (api.starters ``_joined_drop_answer``); the run's end writes its
    ended marker and their done files (activity ``answer_joined_drops``, adapters.joined_drops), with the status its
    own drop's done file holds, right after that file and before the notification, whose retries can hold the run
    for minutes. Completed and failed (no images). Fails without the change: the run answered only its own drop."""
    data = task_input({**REQUEST, "notify_url": NOTIFY_URL})
    data["run"], data["answers_joined"] = JOINING_RUN, True
    if drop:
        data["drop"] = drop
    answers = activities(images=images, shards=1 if images else 0)

    def answering(name: str, payload: Any) -> Any:
        if name == c.DROP_ANSWER:
            return {"blob": payload["drop"]}
        return answers(name, payload)

    run = run_task(data, with_notify(answering)[0])

    assert run.custom_status["stage"] == (Stage.completed if images else Stage.failed)
    tell = run.activity_names[run.activity_names.index(c.ANSWER_JOINED_DROPS) - (1 if drop else 0):]
    assert tell == ([c.DROP_ANSWER] if drop else []) + [c.ANSWER_JOINED_DROPS, c.NOTIFY]
    [asked] = run.inputs(c.ANSWER_JOINED_DROPS)
    assert asked["task_id"] == TASK and asked["run"] == JOINING_RUN and asked["run_job"] == f"{TASK}_{JOINING_RUN}"
    assert asked["status"]["stage"] == run.custom_status["stage"] and "notification" not in asked["status"]
    if drop:
        assert asked["status"] == run.inputs(c.DROP_ANSWER)[0]["status"]  # the file its own drop gets


def test_a_run_that_ended_terminated_runs_answers_the_drops_that_had_joined_them() -> None:
    """A terminated run writes no done file; the run that ends it and resumes its work (``ends_run``, and the runs
    an earlier one was to end, ``ends_earlier``) names them to ``answer_joined_drops`` (``ended_runs``), which writes
    the files of the requests that had joined them with this run's end. A run that ended one started before runs had
    ids ("") names none for it."""
    data = task_input(dict(REQUEST))
    data["run"], data["answers_joined"] = JOINING_RUN, True
    data["ends_run"], data["ends_earlier"] = "r261207230000ef56", ["", "r261207220000aa11"]

    answer = activities(images=3, shards=1)
    run = run_task(data, lambda name, payload: {"stopped": True} if name == c.STOP_GROUPS else answer(name, payload))

    [asked] = run.inputs(c.ANSWER_JOINED_DROPS)
    assert asked["ended_runs"] == ["r261207220000aa11", "r261207230000ef56"]
    plain = task_input(dict(REQUEST))
    plain["run"], plain["answers_joined"] = JOINING_RUN, True
    [alone] = run_task(plain, activities(images=3, shards=1)).inputs(c.ANSWER_JOINED_DROPS)
    assert "ended_runs" not in alone


def test_a_run_started_by_an_earlier_release_answers_no_joined_drops() -> None:
    """A run whose input has no ``answers_joined`` (its starter knew nothing of joined drops), or no run id (the
    registry is the run's): replayed after a deployment, it meets no activity its history lacks; the drops that
    join it are told what they were told before (api.starters)."""
    for extra in ({"run": JOINING_RUN}, {"answers_joined": True}):
        data = task_input()
        data.update(extra)  # type: ignore[typeddict-item]
        data["drop"] = "survey.json"
        run = run_task(data, lambda name, payload: {"blob": payload["drop"]} if name == c.DROP_ANSWER
                       else activities(shards=1)(name, payload))
        assert run.status == "Completed" and c.DROP_ANSWER in run.activity_names
        assert c.ANSWER_JOINED_DROPS not in run.activity_names, extra


def test_joined_drops_done_files_that_cannot_be_written_are_said_in_the_status() -> None:
    """Every attempt failing does not change the task's outcome; the status says the joined drops' done files may
    not come, and where to read the same instead (``joined_drops``), and their files leave it out (api.starters
    ``TOLD_AFTER_THE_DONE_FILE``)."""
    from api.starters import TOLD_AFTER_THE_DONE_FILE

    data = task_input()
    data["run"], data["answers_joined"] = JOINING_RUN, True
    refusing = raising_on(c.ANSWER_JOINED_DROPS, RuntimeError("AuthorizationFailure: the app may not write"),
                          activities(shards=1))
    run = run_task(data, refusing)

    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    said = run.custom_status["joined_drops"]
    assert said["written"] is False and "the app may not write" in said["reason"]
    assert f"GET /api/tasks/{TASK}" in said["hint"] and "joined_drops" in TOLD_AFTER_THE_DONE_FILE


@pytest.mark.parametrize("images, extra_knobs", [(25, {}), (0, {}), (25, {"confirm_above_images": 10,
                                                                            "confirm_timeout_s": 60})])
def test_word_of_a_runs_end_carries_its_run_so_a_replaced_runs_late_word_is_refused(
        images: int, extra_knobs: dict[str, Any]) -> None:
    """The notification, the answer files beside a dropped request and the event carry their run's pool job
    (``run_job``), as the merge and publishing calls do: a run terminated while it told of its end, and replaced by
    a later run, has its late word refused (activities.superseded) instead of telling the receiver of an old run's
    end that looks current. The notification carries the run too (its body's ``run``). A run without an id (started
    before runs had ids) carries neither. Completed, failed and expired (estimate and done files). Fails without the
    change: no ``run_job`` in those inputs."""
    def answering(answer: Any) -> Any:
        def wrapped(name: str, payload: Any) -> Any:
            if name == c.DROP_ANSWER:
                return {"blob": payload["drop"]}
            return answer(name, payload)
        return wrapped

    for run_id in ("r261201130000cd34", ""):
        data = task_input({**REQUEST, "notify_url": NOTIFY_URL}, task_events=True, **extra_knobs)
        data["drop"] = "survey.json"
        if run_id:
            data["run"] = run_id
        answer, _ = with_events(with_notify(answering(activities(images=images, shards=1 if images else 0)))[0])
        run = run_task(data, answer)

        assert run.custom_status["stage"] in (Stage.completed, Stage.failed, Stage.expired)
        told = [*run.inputs(c.NOTIFY), *run.inputs(c.DROP_ANSWER), *run.inputs(c.PUBLISH_EVENT)]
        assert len(told) == (4 if extra_knobs else 3)
        if run_id:
            assert all(p["run_job"] == f"{TASK}_{run_id}" for p in told)
            assert run.inputs(c.NOTIFY)[0]["run"] == run_id
        else:  # the inputs are those of before
            assert not any("run_job" in p for p in told) and "run" not in run.inputs(c.NOTIFY)[0]


def test_a_dry_run_notifies_its_estimate() -> None:
    answer, _ = with_notify(activities(images=30, shards=3))
    run = run_task(task_input({**REQUEST, "dry_run": True, "notify_url": NOTIFY_URL}), answer)

    [sent] = run.inputs(c.NOTIFY)
    assert sent["status"]["stage"] == Stage.estimated and sent["status"]["estimate"]["images"] == 30
    assert run.activity_names == [*ENUMERATION, c.NOTIFY]


def test_above_the_confirmation_limit_a_task_waits_and_expires_without_touching_the_pool() -> None:
    """Nothing reaches the pool before a person confirms: with no confirmation the wait's timer fires and the task
    ends ``expired``, its estimate in the status; a dropped request gets the estimate, then the done file."""
    data = task_input(confirm_above_images=10, confirm_timeout_s=3600)
    data["drop"] = "survey.json"
    answers = activities(images=25, shards=3)

    def with_drop_answers(name: str, payload: Any) -> Any:
        if name == c.DROP_ANSWER:
            return {"blob": payload["drop"].replace(".json", f".{payload['kind']}.json")}
        return answers(name, payload)

    run = run_task(data, with_drop_answers)

    assert run.status == "Completed"
    assert run.activity_names == [*ENUMERATION, c.DROP_ANSWER, c.DROP_ANSWER]  # no SUBMIT, no merge
    assert [p["kind"] for p in run.inputs(c.DROP_ANSWER)] == ["estimate", "done"]
    assert run.inputs(c.DROP_ANSWER)[0]["status"]["stage"] == Stage.awaiting_confirmation
    assert run.orchestrator_timers[0].delay_s == 3600
    assert run.output["stage"] == Stage.expired and run.output["estimate"]["images"] == 25
    assert "not confirmed within 3600 s" in run.output["error"]
    assert Stage.awaiting_confirmation in run.stages


def test_an_estimate_file_that_cannot_be_written_is_said_while_the_task_waits_for_confirmation() -> None:
    """Whoever dropped the request waits for ``<name>.estimate.json`` to decide whether to confirm: an estimate that
    could not be written was swallowed, so the wait looked like a slow listing for days."""
    data = task_input(confirm_above_images=10, confirm_timeout_s=3600)
    data["drop"] = "survey.json"
    answers = activities(images=25, shards=3)

    refusing = raising_on(c.DROP_ANSWER, RuntimeError("AuthorizationFailure: the app may not write to incoming"),
                          answers)

    run = run_task(data, refusing)
    waiting = [s for s in run.statuses if s.get("stage") == Stage.awaiting_confirmation]
    said = waiting[-1]["drop_answer"]
    assert said["written"] is False and said["file"] == "incoming/survey.estimate.json"
    assert "the app may not write to incoming" in said["reason"] and f"GET /api/tasks/{TASK}" in said["hint"]
    assert run.output["stage"] == Stage.expired  # the outcome is as before: nothing ran without a confirmation


def test_a_confirmation_wait_from_an_older_input_still_waits_on_one_timer_of_at_most_six_days() -> None:
    """An input written before the six-day cap (a week) must not make the SDK split the timer into a LongTimerTask
    (the harness hands the orchestrator the extension's timer limits, as devhost does): one timer, six days."""
    run = run_task(task_input(confirm_above_images=10, confirm_timeout_s=7 * 86400), activities(images=25, shards=3))
    assert [t.delay_s for t in run.orchestrator_timers] == [6 * 86400]
    assert run.output["stage"] == Stage.expired and "not confirmed within 518400 s" in run.output["error"]


@pytest.mark.parametrize("extra", [{"confirm_above_images": 10}, {"dry_run": True}, {}])
def test_a_cancel_that_came_while_the_images_were_listed_ends_the_task_before_any_pool_work(
        extra: dict[str, Any]) -> None:
    """The listing's end reads the run's cancel marker (activities.enumerate): without it, a task above the
    confirmation limit waited six days, an estimate ended 'estimated', and a plain task sent its first shards to
    the pool."""
    data = task_input(**{k: v for k, v in extra.items() if k != "dry_run"})
    if extra.get("dry_run"):
        data["request"] = {**data["request"], "dry_run": True}
    answers = activities(images=25, shards=3)

    def cancelled_while_listed(name: str, payload: Any) -> Any:
        out = answers(name, payload)
        if name == c.FINISH_ENUMERATION:
            assert payload["cancel_job"] == pool_job_id(TASK, str(data.get("run", "")))
            return {**out, "cancelled": True}
        return out

    run = run_task(data, cancelled_while_listed)
    assert run.status == "Completed" and run.output["stage"] == Stage.cancelled
    assert run.activity_names[:len(ENUMERATION)] == ENUMERATION
    assert c.SUBMIT not in run.activity_names and Stage.awaiting_confirmation not in run.stages
    assert not run.orchestrator_timers


RUN = "r261207061500ab12"  # this run of the task (gpu_batch.layout.run_id)
REPLACED_RUN = "r261207061400cd34"  # the run it replaced (terminated, then resumed)


def raised_once(when: Callable[[Run], bool], *events: tuple[str, Any]) -> EventScript:
    """Raise ``events`` after the first episode at whose end ``when(run)`` holds."""
    done: list[bool] = []

    def script(run: Run) -> list[tuple[str, Any]]:
        if done or not when(run):
            return []
        done.append(True)
        return list(events)

    return script


def listing(run: Run) -> bool:
    """The task lists its images (its wait for a confirmation is not made yet: the SDK keeps the event for it)."""
    return Stage.awaiting_confirmation not in run.stages


def waiting(run: Run) -> bool:
    return run.stages[-1:] == [Stage.awaiting_confirmation]


def waits_for_confirmation(run: str = RUN) -> c.TaskInput:
    data = task_input(confirm_above_images=10, confirm_timeout_s=3600)
    if run:
        data["run"] = run
    return data


@pytest.mark.parametrize("event, ends", [(c.CONFIRM_EVENT, Stage.completed), (c.CANCEL_EVENT, Stage.cancelled)])
@pytest.mark.parametrize("run_id", [RUN, ""])
@pytest.mark.parametrize("when", [listing, waiting])
def test_a_confirmation_or_cancel_raised_for_this_run_ends_its_wait(event: str, ends: Stage, run_id: str,
                                                                    when: Callable[[Run], bool]) -> None:
    """The API raises them under the run's own names (core.contracts.run_event; ``<event>-without-id`` for a run
    without an id), while the run waits or, kept by the SDK until it does, while it still lists its images. Fails
    without the change (the run waited for the plain names only: each expired)."""
    run = run_task(waits_for_confirmation(run_id), activities(images=25, shards=3),
                   events=raised_once(when, (c.run_event(event, run_id), {"run": run_id} if run_id else {})))
    assert run.raised and run.output["stage"] == ends
    assert bool(run.sub_orchestrations) is (event == c.CONFIRM_EVENT)  # the shard groups: the pool work
    assert len(run.orchestrator_timers) == 1


@pytest.mark.parametrize("event", [c.CONFIRM_EVENT, c.CANCEL_EVENT])
@pytest.mark.parametrize("when", [listing, waiting])
def test_a_confirmation_or_cancel_raised_for_the_run_this_one_replaced_is_not_acted_on(
        event: str, when: Callable[[Run], bool]) -> None:
    """A run terminated and resumed between the API's status read and its raise: the event, raised to the task's
    instance id, reaches the replacing run, under the read run's names, which it does not wait for. It waits on (one
    timer, no other made) and its own confirmation or cancel still ends the wait."""
    stale = (c.run_event(event, REPLACED_RUN), {"run": REPLACED_RUN})
    run = run_task(waits_for_confirmation(), activities(images=25, shards=3), events=raised_once(when, stale))
    assert run.raised == [stale]
    assert run.output["stage"] == Stage.expired and not run.sub_orchestrations
    assert len(run.orchestrator_timers) == 1

    other = c.CANCEL_EVENT if event == c.CONFIRM_EVENT else c.CONFIRM_EVENT
    events = [raised_once(when, stale), raised_once(waiting, (c.run_event(other, RUN), {"run": RUN}))]
    run = run_task(waits_for_confirmation(), activities(images=25, shards=3),
                   events=lambda r: [e for script in events for e in script(r)])
    assert len(run.raised) == 2 and len(run.orchestrator_timers) == 1
    assert run.output["stage"] == (Stage.completed if other == c.CONFIRM_EVENT else Stage.cancelled)


@pytest.mark.parametrize("event, ends", [(c.CONFIRM_EVENT, Stage.completed), (c.CANCEL_EVENT, Stage.cancelled)])
@pytest.mark.parametrize("run_id", [RUN, ""])
@pytest.mark.parametrize("when", [listing, waiting])
def test_a_plain_confirmation_or_cancel_an_earlier_release_raised_still_ends_the_wait(
        event: str, ends: Stage, run_id: str, when: Callable[[Run], bool]) -> None:
    """An earlier release raised ``confirm`` and ``cancel`` with ``{}`` whatever the run (one raised before a
    deployment, kept for the wait, or by an app instance still on it): a run with an id still takes them, and so
    does a run without one (started before runs had ids), for which the API raises its own names now."""
    run = run_task(waits_for_confirmation(run_id), activities(images=25, shards=3),
                   events=raised_once(when, (event, {})))
    assert run.output["stage"] == ends and len(run.orchestrator_timers) == 1
    assert c.run_event(event, run_id) == f"{event}-{run_id or 'without-id'}"


@pytest.mark.parametrize("replaced", [REPLACED_RUN, ""])
@pytest.mark.parametrize("route, event", [("confirm", c.CONFIRM_EVENT), ("cancel", c.CANCEL_EVENT)])
def test_the_api_s_confirmation_or_cancel_of_a_replaced_run_does_not_reach_the_run_replacing_it(
        route: str, event: str, replaced: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST .../confirm (or .../cancel) read run r1 awaiting confirmation; r1 was terminated and resumed as r2 before
    the API raised the event, which goes to the task's instance id, so to r2, which then ran its shards on the pool
    (or was cancelled) with nobody having seen its estimate. The event the API raises, handed to r2: r2 waits on and
    expires (and the API, reading r2 after the raise, answers 409 that r2 was not confirmed or cancelled); handed to
    r1 (the run the API read), it confirms or cancels it. Fails without the change (the API raised the plain event,
    and r2 was confirmed or cancelled). So too for an r1 without an id (started before runs had ids), replaced by r2
    (every start makes an id): the API raised the plain names for it, which r2 waits for too (for those an earlier
    release raised), so r2 was confirmed or cancelled while the API answered 409 that it was not."""
    from enum import Enum
    from types import SimpleNamespace

    from adapters import clients
    from api import starters

    class Runtime(Enum):
        Running = "Running"

    class TaskHub:
        """The task's status: run ``read`` awaiting confirmation until an event is raised, run RUN after; the raised
        events, recorded."""

        def __init__(self, read: str, now: str) -> None:
            self.read, self.now = read, now
            self.raised: list[tuple[str, Any]] = []

        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            run = self.now if self.raised else self.read
            return SimpleNamespace(runtime_status=Runtime.Running, output=None, input_=json.dumps({"run": run}),
                                   custom_status={"stage": Stage.awaiting_confirmation})

        async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
            assert instance_id == TASK
            self.raised.append((name, data))

    class Store:  # the cancel's marker: none there yet
        def update_json(self, container: str, name: str, change: Any) -> Any:
            return change(None)

    monkeypatch.setattr(clients, "store", lambda s=None: Store())
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    handler = getattr(starters, f"{route}_task")._function.get_user_function().__wrapped__

    def raised_by_the_api(read: str, now: str = RUN) -> list[tuple[str, Any]]:
        """What the API raised, having read run ``read``, the task's run being ``now`` after the raise; it answers
        409 when ``now`` replaced ``read`` (api.starters ``_replaced_since``)."""
        import asyncio

        import azure.functions as func

        hub = TaskHub(read, now)
        req = func.HttpRequest("POST", f"http://h/api/tasks/{TASK}/{route}", body=b"", route_params={"task_id": TASK})
        assert asyncio.run(handler(req, hub)).status_code == (202 if read == now else 409)
        return hub.raised

    for when in (listing, waiting):  # the replacing run still lists its images (the usual case), or waits too
        replacing = run_task(waits_for_confirmation(RUN), activities(images=25, shards=3),
                             events=raised_once(when, *raised_by_the_api(replaced)))
        assert replacing.raised and replacing.output["stage"] == Stage.expired
        assert not replacing.sub_orchestrations  # nothing reached the pool
    read = run_task(waits_for_confirmation(replaced), activities(images=25, shards=3),
                    events=raised_once(waiting, *raised_by_the_api(replaced, now=replaced)))
    assert read.output["stage"] == (Stage.completed if event == c.CONFIRM_EVENT else Stage.cancelled)


def test_at_or_below_the_confirmation_limit_a_task_runs_at_once() -> None:
    run = run_task(task_input(confirm_above_images=25), activities(images=25, shards=1))
    assert run.status == "Completed" and run.output["stage"] == Stage.completed
    assert Stage.awaiting_confirmation not in run.stages and c.DROP_ANSWER not in run.activity_names


def with_events(answer: Any, failures: int = 0) -> tuple[Any, dict[str, int]]:
    """``answer``, plus a topic that refuses the first ``failures`` events and takes the rest."""
    return with_receiver(answer, c.PUBLISH_EVENT, {"sent": True, "status_code": 200, "reason": ""}, failures)


def _group_cancelled(name: str, instance_id: str, payload: Any) -> Any:
    return finished_group(len(payload["shards"]), cancelled=True)


@pytest.mark.parametrize("stage, images, shards, missing, request_extra, knobs, children", [
    (Stage.completed, 25, 1, 0, {}, {}, None),
    (Stage.completed_with_errors, 25, 1, 3, {}, {}, None),
    (Stage.failed, 0, 0, 0, {}, {}, None),
    (Stage.cancelled, 25, 1, 0, {}, {}, _group_cancelled),
    (Stage.expired, 25, 3, 0, {}, {"confirm_above_images": 10, "confirm_timeout_s": 60}, None),
    (Stage.estimated, 30, 3, 0, {"dry_run": True}, {}, None),
])
def test_with_a_topic_each_final_stage_publishes_one_event_last(
        stage: Stage, images: int, shards: int, missing: int, request_extra: dict[str, Any], knobs: dict[str, Any],
        children: Any) -> None:
    answer, seen = with_events(activities(images=images, shards=shards, missing=missing))
    data = task_input({**REQUEST, **request_extra}, task_events=True, **knobs)
    data["run"] = "r1"
    run = run_task(data, answer, children=children)

    assert run.status == ("Failed" if stage == Stage.failed else "Completed")
    [sent] = run.inputs(c.PUBLISH_EVENT)
    assert sent["task_id"] == TASK and sent["run"] == "r1"
    final = dict(run.custom_status)
    assert final.pop("task_event") == {"sent": True, "status_code": 200, "reason": ""}  # said after it was sent
    assert sent["status"]["stage"] == stage and sent["status"] == final
    assert run.activity_names[-1] == c.PUBLISH_EVENT  # after the final status was set
    assert seen["n"] == 1


def test_without_a_topic_no_event_is_published() -> None:
    answer, seen = with_events(activities(shards=1))
    run = run_task(task_input({**REQUEST, "notify_url": NOTIFY_URL}), with_notify(answer)[0])
    assert run.status == "Completed" and seen["n"] == 0 and c.PUBLISH_EVENT not in run.activity_names
    assert "task_event" not in run.output and run.output["notification"]["sent"] is True


@pytest.mark.parametrize("failures", [2, 10])
def test_a_topic_that_refuses_is_retried_with_back_off_and_never_changes_the_outcome(failures: int) -> None:
    from orchestrations.task import NOTIFY_RETRY

    answer, seen = with_events(activities(shards=1), failures=failures)
    run = run_task(task_input(task_events=True), answer)

    assert run.status == "Completed" and run.custom_status["stage"] == Stage.completed
    assert seen["n"] == min(failures + 1, NOTIFY_RETRY.attempts)
    assert "notification" not in run.custom_status  # no notify_url: nothing to say of one
    published = run.custom_status["task_event"]
    if failures < NOTIFY_RETRY.attempts:
        assert published == {"sent": True, "status_code": 200, "reason": ""}
    else:  # every attempt failed: the status says so, with the last failure
        assert published["sent"] is False and "after 6 attempts" in published["reason"]
    delays = [t.delay_s for t in run.timers][-(seen["n"] - 1):]
    assert delays == [NOTIFY_RETRY.delay_s(n) for n in range(1, seen["n"])]


def test_the_notification_and_the_event_both_go_out_once() -> None:
    answer, seen = with_events(activities(shards=1))
    run = run_task(task_input({**REQUEST, "notify_url": NOTIFY_URL}, task_events=True), with_notify(answer)[0])
    assert run.activity_names[-2:] == [c.NOTIFY, c.PUBLISH_EVENT] and seen["n"] == 1


# ---------------------------------------------------------------- shards given up: why, in the status

def _every_attempt(answer: Any, ended: Any, merged_missing: int) -> Any:
    """``answer``, with each attempt of the shards ``ended(shard)`` describes (a row update; None: succeeded) ending
    so with nothing more covered, and a merge that marks ``merged_missing`` images not processed."""
    def run(name: str, payload: Any) -> Any:
        if name == c.POLL:
            out = answer(name, payload)
            out["completed"] = [{**r, "result": "failure", "covered": 0, "missing": 10, **ended(r["shard_id"])}
                                if ended(r["shard_id"]) is not None else r for r in out["completed"]]
            return out
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": s, "attempt": a, "missing": 10, "submitted": True}
                               for s, a in payload["shards"]]}
        if name == c.MERGE_PART:
            return {**answer(name, payload), "failed": merged_missing, "missing": merged_missing,
                    "failure_reasons": {"not_processed": merged_missing}}
        return answer(name, payload)
    return run


@pytest.mark.parametrize("exit_code, words", [(1, "CUDA error: an illegal memory access was encountered"),
                                              (4, "cannot write results: AuthorizationFailure"),
                                              (137, "")])
def test_a_worker_failing_every_attempt_of_every_shard_fails_the_task_with_its_exit_code_and_words(
        exit_code: int, words: str) -> None:
    """Every attempt of every shard exits non-zero having written nothing: the task ended completed_with_errors with
    every image "not_processed" and no word of why. It fails with the worker's exit code and message instead."""
    row = {"exit_code": exit_code, "failure_code": "FailureExitCode",
           "failure_message": "The task exited with an exit code representing a failure"}
    if words:
        row["worker_message"] = words
    run = run_task(task_input(shards_per_group=1), _every_attempt(activities(shards=2), lambda sid: row, 20))

    assert run.status == "Failed" and c.MERGE_PART not in run.activity_names
    status = run.custom_status
    assert status["stage"] == Stage.failed and "no image was processed" in status["error"]
    assert f"the worker exited {exit_code}" in status["error"] and '"rerun": true' in status["error"]
    assert (words or "exit code representing a failure") in status["error"]
    given_up = status["shards_given_up"]
    assert given_up["count"] == 2 and [e["shard"] for e in given_up["examples"]] == [shard_id(0), shard_id(1)]
    assert given_up["examples"][0]["exit_code"] == exit_code and given_up["examples"][0]["attempts"] == 3
    assert "log" in given_up["hint"]
    # what the pool work did and cost, though it failed
    assert (status["images_done"], status["failed"]) == (0, 0) and status["cost"]["attempts"] == 6


def test_a_shard_stopped_at_the_pools_time_limit_every_attempt_is_named_in_the_status() -> None:
    """Shard 1 meets the pool's time limit (TaskEnded) on every attempt while shard 0 succeeds: the task completes
    with errors, and its status names the shard, TaskEnded and the time limit to raise."""
    ended = {"exit_code": -1073741510, "failure_code": "TaskEnded",
             "failure_message": "The task exceeded its maximum wall clock time", "covered": 4, "missing": 6}
    run = run_task(task_input(shards_per_group=1),
                   _every_attempt(activities(shards=2), lambda sid: ended if sid == shard_id(1) else None, 6))

    assert run.status == "Completed" and run.output["stage"] == Stage.completed_with_errors
    given_up = run.output["shards_given_up"]
    assert given_up["count"] == 1 and len(given_up["examples"]) == 1
    example = given_up["examples"][0]
    assert (example["shard"], example["by"], example["failure_code"]) == (shard_id(1), "pool", "TaskEnded")
    assert "maximum wall clock time" in example["reason"] and "TRAPBATCH_MAX_TASK_SECONDS" in example["reason"]
    assert "time limit" in given_up["hint"] and "TRAPBATCH_MAX_TASK_SECONDS" in given_up["hint"]
    # the task has results: only the given-up shards' images need to run again, not every image of the task
    assert '"only_new": true' in given_up["hint"] and '"rerun": true' not in given_up["hint"], given_up["hint"]


@pytest.mark.parametrize("row", [
    {"exit_code": 137, "failure_code": "FailureExitCode", "failure_message": "exit code 137"},
    {"failure_code": "ContainerPoolingError", "failure_message": "the image could not be pulled"}])
def test_a_completed_tasks_given_up_shards_are_run_again_with_only_new(row: dict[str, Any]) -> None:
    """Shard 1 is given up (the worker killed every attempt; the pool could not start it) while shard 0 succeeds:
    the task completes with errors and has results, so its hint asks for "only_new" (the given-up shards' images,
    "not_processed" and so retryable, run again; every other result is kept), not "rerun", which would send every
    image of the task, ten million for some, to the pool again."""
    run = run_task(task_input(shards_per_group=1),
                   _every_attempt(activities(shards=2), lambda sid: row if sid == shard_id(1) else None, 6))

    assert run.status == "Completed" and run.output["stage"] == Stage.completed_with_errors
    hint = run.output["shards_given_up"]["hint"]
    assert '"only_new": true' in hint and '"rerun": true' not in hint, hint


def test_a_failed_tasks_given_up_shards_whose_reads_failed_ask_for_the_verb_its_error_does() -> None:
    """Every attempt of every shard exits 0 with its images failed as retryable (storage busy): the task fails (no
    image processed) asking for "rerun", and its ``shards_given_up`` hint, beside that error, asks for the same, not
    for "only_new" "to keep every other result" (a first run has none). A completed task's hint keeps "only_new"
    (``test_a_completed_tasks_given_up_shards_are_run_again_with_only_new``)."""
    row = {"exit_code": 0, "result": "success", "retryable_reasons": {"busy": 10}}
    run = run_task(task_input(shards_per_group=1), _every_attempt(activities(shards=2), lambda sid: row, 20))

    assert run.status == "Failed"
    status = run.custom_status
    assert '"rerun": true' in status["error"], status["error"]
    hint = status["shards_given_up"]["hint"]
    assert "busy" in hint and '"rerun": true' in hint and "only_new" not in hint, hint

    # completed with errors: the given-up shard's retryable images run again with only_new, the rest kept
    done = run_task(task_input(shards_per_group=1),
                    _every_attempt(activities(shards=2), lambda sid: row if sid == shard_id(1) else None, 10))
    assert done.output["stage"] == Stage.completed_with_errors
    hint = done.output["shards_given_up"]["hint"]
    assert "busy" in hint and '"only_new": true' in hint and '"rerun"' not in hint, hint


def test_a_task_of_plain_successes_says_no_shard_was_given_up() -> None:
    run = run_task(task_input(shards_per_group=1), activities(shards=2))
    assert run.output["stage"] == Stage.completed and "shards_given_up" not in run.output


def test_given_up_shards_of_groups_of_before_are_counted_and_fail_nothing() -> None:
    """A group that returned before given_up_examples existed (a history replayed after a deployment) merged then:
    the task merges now as well (replay), and its status counts the shards without examples."""
    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        return {**finished_group(n), "done": 0, "given_up": n, "images_done": 0, "images_missing": 10 * n}

    run = run_task(task_input(shards_per_group=1), activities(shards=2), children=child)
    assert run.status == "Completed" and c.MERGE_PART in run.activity_names
    assert run.output["shards_given_up"]["count"] == 2 and run.output["shards_given_up"]["examples"] == []


def test_a_cancelled_task_says_what_its_pool_work_did_and_cost() -> None:
    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        return {**finished_group(n, cancelled=instance_id == shards_instance_id(TASK, 1)), "images_failed": 1,
                "node_seconds": 30.0, "attempts_ended": n, "attempts_timed": n}

    run = run_task(task_input(shards_per_group=1), activities(shards=3), children=child)
    assert run.output["stage"] == Stage.cancelled
    assert (run.output["images_done"], run.output["failed"]) == (30, 3)
    assert run.output["cost"]["node_seconds"] == 90.0 and run.output["cost"]["attempts"] == 3


def test_a_cancelled_task_prices_the_images_that_ran_not_all_it_listed() -> None:
    """Cancelled after one shard of three: the rate is that shard's 10 images over its 20 node-seconds (0.5 images
    per node-second), not the 30 images listed over them (1.5), which made the node look three times as fast and the
    price per million images three times as low."""
    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        ran = instance_id == shards_instance_id(TASK, 0)  # the other groups were cancelled before any shard ran
        return {**finished_group(n, cancelled=not ran), "done": n if ran else 0, "images_done": 10 * n if ran else 0,
                "node_seconds": 20.0 if ran else 0.0, "attempts_ended": n if ran else 0,
                "attempts_timed": n if ran else 0}

    run = run_task(task_input(shards_per_group=1, node_price_per_hour=3.6), activities(images=30, shards=3),
                   children=child)
    assert run.output["stage"] == Stage.cancelled and run.output["images_done"] == 10
    cost = run.output["cost"]
    assert (cost["images"], cost["node_seconds"], cost["images_per_node_second"]) == (10, 20.0, 0.5)
    assert cost["usd_per_million_images"] == round(3.6 / (0.5 * 3600) * 1e6, 2)


def test_the_detecting_status_says_when_the_pool_work_began() -> None:
    """GET /api/tasks/{id} counts the live rate from ``detecting_since`` (api/starters.py): the orchestration's
    replay-safe clock when the shard groups were started, never before the task's start."""
    run = run_task(task_input(), activities(shards=2),
                   children=lambda name, iid, payload: finished_group(len(payload["shards"])))
    detecting = next(s for s in run.statuses if s["stage"] == Stage.detecting)
    since = datetime.fromisoformat(detecting["detecting_since"])
    assert since >= datetime.fromisoformat(detecting["started"]) and since.tzinfo is not None
    assert all("detecting_since" not in s for s in run.statuses if s["stage"] != Stage.detecting)


def test_the_first_group_out_of_reach_past_its_limit_stops_the_others_and_fails_the_task_saying_what_to_do() -> None:
    """Group 0's Batch calls stay busy past the outage limit; group 1's shard runs on for hours. Group 0 stops the
    run (STOP_GROUPS writes the cancel marker), group 1 reads it at its next poll and ends, and the task fails then,
    with the outage and what to do in its status and its pool job closed; before, it failed only once group 1's
    shard ended (or its own outage reached the limit). The harness runs group 0 to its end first, so group 1's first
    poll is its next one."""
    answer = activities(shards=2)
    stopped: list[str] = []
    running_polls: list[Any] = []  # group 1's polls before the stop (none once group 0 stops the run first)

    def pool(name: str, payload: Any) -> Any:
        if name == c.POLL and not stopped and shard_id(0) in "".join(payload["task_ids"]):
            raise ConnectionError("Connection aborted: the Batch endpoint did not answer")
        if name == c.POLL and not stopped:  # group 1's shard runs on, for 50 polls (hours at 300 s)
            if len(running_polls) < 50:
                running_polls.append(payload)
                return {"cancelled": False, "completed": [], "running": 1, "queued": 0, "images_in_progress": 0,
                        "states": {tid: "running" for tid in payload["task_ids"]}, "progress": {}}
        if name == c.POLL and stopped:  # the marker: what run_poll answers once it is written
            return {"cancelled": True, "completed": [], "running": 0, "queued": 0, "images_in_progress": 0}
        if name == c.STOP_GROUPS:
            stopped.append(payload["reason"])
            return {"stopped": True}
        if name == c.CANCEL:
            return {"cancelled": True}
        return answer(name, payload)

    # the least history a generation may hold (MIN_HISTORY_EVENTS): group 0's six hours of busy rounds replay as
    # several short generations (outage and stop carried over), not one of ~1000 events replayed at every episode
    run = run_task(task_input(shards_per_group=1, busy_retry_attempts=4, history_events=200), pool)

    assert run.status == "Failed"
    group0, group1 = (s.run for s in run.sub_orchestrations)
    assert group0 is not None and group1 is not None
    assert group0.status == "Failed" and len(group0.calls(c.STOP_GROUPS)) == 1 and len(stopped) == 1
    assert group1.status == "Completed" and group1.output["cancelled"] is True
    assert len(group1.calls(c.POLL)) == 1 and running_polls == []
    assert run.inputs(c.CLOSE_JOB) == [{"task_id": TASK, "job_id": TASK}]
    error = run.custom_status["error"]
    assert run.custom_status["stage"] == Stage.failed and error.startswith("the pool or its storage has been out of "
                                                                          "reach since")
    assert 'post the same request again, without "rerun" or "only_new"' in error


def test_no_images_under_the_prefix_says_the_case_mismatch_within_what_the_status_keeps() -> None:
    """The status keeps the error's first 500 characters (core.errors.failure_line): after ten folders of a few
    levels the case hint, the one line that says what was wrong, was cut off."""
    answer = activities(images=0, shards=0)
    names = ["projects/2024/Site-A/", *(f"projects/2024/site-{c}-riverside/" for c in "bcdefghij")]

    def with_nearby(name: str, payload: Any) -> Any:
        out = answer(name, payload)
        if name == c.PLAN_LISTING:
            out["nearby"] = {"folder": "projects/2024/", "names": names, "files": 0, "more": True}
        return out

    run = run_task(task_input({**REQUEST, "prefix": "projects/2024/site-a/camera-07/"}), with_nearby)
    assert run.status == "Failed"
    assert "'projects/2024/Site-A/' differs from the prefix only in case" in run.custom_status["error"]


def test_a_run_after_a_terminated_one_ends_that_runs_pool_work_before_its_own() -> None:
    """Terminating an orchestration leaves its shard groups and their pool tasks running ("no effect on any in-flight
    activity function executions or sub-orchestrations", Durable Functions ``TerminateAsync``): they went on
    submitting into the terminated run's job, beside this run's work on the same shards, and nothing closed that job.
    Now this run writes that run's cancel marker (its groups cancel their tasks at their next poll and end) and closes
    its job, before its own listing. Fails without the change: neither call was made."""
    answer = activities(shards=2)

    def answering(name: str, payload: Any) -> Any:
        return {"stopped": True} if name == c.STOP_GROUPS else answer(name, payload)

    run = run_task({**task_input(), "run": "r261201130000cd34", "ends_run": "r261201120000ab12"}, answering)

    old_job = f"{TASK}_r261201120000ab12"
    assert run.status == "Completed"
    assert run.activity_names[:2] == [c.STOP_GROUPS, c.CLOSE_JOB] and run.activity_names[2] == ENUMERATION[0]
    assert run.inputs(c.STOP_GROUPS)[0]["job_id"] == old_job
    assert "r261201130000cd34" in run.inputs(c.STOP_GROUPS)[0]["reason"]
    assert run.inputs(c.CLOSE_JOB) == [{"task_id": TASK, "job_id": old_job},  # the terminated run's, first
                                       {"task_id": TASK, "job_id": f"{TASK}_r261201130000cd34"}]  # then its own
    assert all(s.input["job_id"] == f"{TASK}_r261201130000cd34" for s in run.sub_orchestrations)
    # groups of its own: the terminated run's may still run under the first generation's ids until their next poll
    assert [s.instance_id for s in run.sub_orchestrations] == [shards_instance_id(TASK, 0, "r261201130000cd34")]
    detecting = next(s for s in run.statuses if s["stage"] == Stage.detecting)
    assert detecting["groups_run"] == "r261201130000cd34" and "generation" not in detecting  # the first generation
    # the terminated run's marker says which run replaces it: that run's late merge and publishing calls, which carry
    # their run's job as this run's do, write nothing (activities.superseded; tests/integration/test_superseded_run.py)
    assert run.inputs(c.STOP_GROUPS)[0]["superseded_by"] == "r261201130000cd34"
    for name in (*ENUMERATION, c.MERGE_PART, c.MERGE_COMBINE, c.SEARCH_REPEATS, c.RANK_REPEATS, c.CLEAN_MERGE_WORK,
                 c.EXPORTS, c.PREVIEWS):
        assert all(p["run_job"] == f"{TASK}_r261201130000cd34" for p in run.inputs(name)), name


def test_a_run_ends_the_runs_an_earlier_run_was_to_end_before_the_one_it_replaces() -> None:
    """``ends_earlier`` (api.starters ``_ended_runs``): runs r0 and r1, which the terminated run r2 was to end and may
    not have, are ended first, each as r2 is (marker naming this run, then its job closed). Fails without the change:
    only r2's pool work was ended, and r1's groups and job ran on."""
    answer = activities(shards=2)

    def answering(name: str, payload: Any) -> Any:
        return {"stopped": True} if name == c.STOP_GROUPS else answer(name, payload)

    run = run_task({**task_input(), "run": "r3", "ends_run": "r2", "ends_earlier": ["r0", "r1"]}, answering)

    assert run.status == "Completed"
    jobs = [f"{TASK}_r0", f"{TASK}_r1", f"{TASK}_r2"]
    assert [p["job_id"] for p in run.inputs(c.STOP_GROUPS)] == jobs
    assert all(p["superseded_by"] == "r3" for p in run.inputs(c.STOP_GROUPS))
    assert [p["job_id"] for p in run.inputs(c.CLOSE_JOB)] == [*jobs, f"{TASK}_r3"]  # then its own, after its work
    assert run.activity_names[:6] == [c.STOP_GROUPS, c.CLOSE_JOB] * 3 and run.activity_names[6] == ENUMERATION[0]


def test_a_terminated_run_whose_job_cannot_be_ended_fails_the_new_run_before_any_pool_work() -> None:
    """Not run beside work it could not stop: the status names the job and the command that ends it, and posting the
    request again tries again (the starter passes ``ends_run`` on from a failed run)."""
    answer = activities(shards=2)

    def answering(name: str, payload: Any) -> Any:
        if name == c.CLOSE_JOB:
            raise RuntimeError("Batch unreachable")
        if name == c.STOP_GROUPS:
            return {"stopped": True}
        return answer(name, payload)

    run = run_task({**task_input(), "run": "r2", "ends_run": "r1"}, answering)

    assert run.status == "Failed" and len(run.calls(c.CLOSE_JOB)) == POOL_RETRY.attempts
    assert not run.sub_orchestrations and ENUMERATION[0] not in run.activity_names
    error = run.custom_status["error"]
    assert f"the pool job {TASK}_r1 of this task's terminated (or failed) run could not be ended" in error
    assert f"az batch job stop --job-id {TASK}_r1" in error and "Batch unreachable" in error
    assert "pool_job" not in run.custom_status  # this run made no job of its own


def _resumed_listing(answer: Any, done: list[list[int]]) -> Any:
    """``answer``, but the listing's write call found the shards ``done`` ([index, covered, failed]) finished already
    (a resumed run's listing: ``activities.shard_results.finished_coverage``)."""
    def answering(name: str, payload: Any) -> Any:
        out = answer(name, payload)
        return {**out, "done": done} if name == c.WRITE_SHARDS else out
    return answering


def _submitted(run: Run) -> list[str]:
    return [sid for s in run.sub_orchestrations if s.run for p in s.run.inputs(c.SUBMIT) for sid, _ in p["shards"]]


def test_a_resumed_run_whose_shards_all_finished_submits_no_pool_task_and_merges_every_image() -> None:
    """A resumed run's listing found every shard's images with a final result already (the earlier run's attempts, and
    what it carried into attempt 1): its groups start them done and submit nothing; the merge still takes every shard.
    Before, each shard's attempt 1 went to the pool, a worker started for nothing."""
    run = run_task(task_input(shards_per_group=2),
                   _resumed_listing(activities(shards=3), [[0, 10, 0], [1, 10, 1], [2, 5, 0]]))

    assert run.status == "Completed"
    assert _submitted(run) == [] and all(c.POLL not in s.run.activity_names for s in run.sub_orchestrations if s.run)
    assert [s.input["state"] for s in run.sub_orchestrations] == [
        {"s00000": {"attempt": 1, "status": "done", "covered": 10, "seen": 10, "failed": 0, "missing": 0,
                    "earlier": 10},
         "s00001": {"attempt": 1, "status": "done", "covered": 10, "seen": 10, "failed": 1, "missing": 0,
                    "earlier": 10}},
        {"s00002": {"attempt": 1, "status": "done", "covered": 5, "seen": 5, "failed": 0, "missing": 0, "earlier": 5}}]
    assert run.inputs(c.MERGE_PART) == [{"task_id": TASK, "part": 0, "first_shard": 0, "shards": 3}]
    detecting = next(s for s in run.statuses if s["stage"] == Stage.detecting)
    assert detecting["earlier"] == 25 and run.output["earlier"] == 25
    assert run.output["cost"]["images"] == 0 and run.output["stage"] == Stage.completed


def test_a_resumed_run_submits_only_its_shards_not_finished_yet() -> None:
    run = run_task(task_input(), _resumed_listing(activities(shards=3), [[1, 10, 0]]))

    assert run.status == "Completed"
    assert _submitted(run) == ["s00000", "s00002"]
    assert run.output["earlier"] == 10 and run.output["cost"]["images"] == 15


@pytest.mark.parametrize("failing", [_unstarted_group(0), _every_worker_failed_group])
def test_a_resumed_run_whose_pool_never_ran_fails_with_the_pools_reason_though_some_shards_started_done(
        failing: Any) -> None:
    """A resumed run's listing found shard 0 finished already (its group starts it done, images_done 10); the pool
    then ended every attempt of the shard it was sent before a worker ran. Not one image was processed by this run's
    pool: the task fails with the pool's reason, as a first run or an ``only_new`` re-run does, instead of merging
    the shard's images as failures and ending ``completed_with_errors`` (the earlier images counted as processed).
    The same where every worker failed instead."""
    def child(name: str, instance_id: str, payload: Any) -> Any:
        started_done = [s for s, st in (payload.get("state") or {}).items() if st.get("status") == "done"]
        return finished_group(len(payload["shards"])) if started_done else failing(name, instance_id, payload)

    run = run_task(task_input(shards_per_group=1), _resumed_listing(activities(shards=2), [[0, 10, 0]]), children=child)

    assert run.status == "Failed" and c.MERGE_PART not in run.activity_names
    error = run.custom_status["error"]
    assert "no image was processed" in error and ("ContainerPullImageFailed" in error or "the worker exited 1" in error)


POOL_ENDED_ROW = {"result": "failure", "exit_code": None, "failure_code": "ContainerPullImageFailed",
                  "failure_message": "ContainerPullImageFailed: the node could not pull the worker's image"}
WORKER_FAILED_ROW = {"result": "failure", "exit_code": 1, "failure_code": "FailureExitCode",
                     "failure_message": "The task exited with an exit code representing a failure",
                     "worker_message": "the worker exited 1: model file unreadable"}


def _partly_covered_listing(answer: Any, done: list[list[int]], partly: list[list[int]],
                            row: dict[str, Any], polled: dict[int, int] | None = None) -> Any:
    """A resumed run's listing that found the shards ``done`` finished and, of the shards it sent to the pool, the
    images ``partly`` ([index, covered]) with a final result already (an earlier attempt's, carried into attempt 1);
    every pool attempt then ends as ``row`` says, its coverage (``activities.pool._completed_row``, over every attempt)
    counting those earlier images and nothing new, or what ``polled`` says for a shard (by index)."""
    earlier = {i: n for i, n in partly}
    covered = {**earlier, **(polled or {})}

    def answering(name: str, payload: Any) -> Any:
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": s, "attempt": a, "missing": 10 - earlier.get(int(s[1:]), 0),
                                "submitted": True} for s, a in payload["shards"]]}
        out = answer(name, payload)
        if name == c.WRITE_SHARDS:
            return {**out, "done": done, "partly": partly}
        if name == c.POLL:
            out["completed"] = [{**r, **row, "covered": covered.get(int(r["shard_id"][1:]), 0),
                                 "missing": 10 - covered.get(int(r["shard_id"][1:]), 0)} for r in out["completed"]]
        return out
    return answering


@pytest.mark.parametrize("row, words", [(POOL_ENDED_ROW, "ContainerPullImageFailed"),
                                        (WORKER_FAILED_ROW, "the worker exited 1")])
@pytest.mark.parametrize("done", [[], [[0, 10, 0]]])
def test_a_resumed_run_whose_pool_never_ran_fails_with_the_pools_reason_though_its_shards_were_partly_covered(
        row: dict[str, Any], words: str, done: list[list[int]]) -> None:
    """A resumed run whose listing found some images of the shards it sent to the pool final already (an earlier
    attempt's results, carried into attempt 1): the pool then ended every attempt before a worker ran (or every worker
    failed). The poll's coverage counts those earlier images, but this run's pool processed none: the task fails with
    the pool's (the worker's) reason. Before, they counted as processed: the unrun images merged as failures and the
    task ended ``completed_with_errors``, the reason hidden."""
    partly = [[1, 4], [2, 3]]
    run = run_task(task_input(shards_per_group=1),
                   _partly_covered_listing(activities(shards=3), done, partly, row))

    assert run.status == "Failed", run.custom_status
    assert c.MERGE_PART not in run.activity_names
    error = run.custom_status["error"]
    assert error.startswith("no image was processed") and words in error, error
    # they start covered (their results stand), counted "earlier" with the finished shards' images, not priced
    assert [s.input["state"]["s00001"] for s in run.sub_orchestrations if "s00001" in s.input["state"]] == [
        {"attempt": 1, "status": "pending", "covered": 4, "seen": 4, "earlier": 4}]
    status = run.custom_status
    assert status["earlier"] == 7 + sum(n for _, n, _ in done) and status["cost"]["images"] == 0


@pytest.mark.parametrize("row", [POOL_ENDED_ROW, WORKER_FAILED_ROW])
@pytest.mark.parametrize("done", [[], [[0, 10, 0]]])
@pytest.mark.parametrize("shards_per_group", [1, 3])
def test_a_resumed_run_whose_pool_ran_images_does_not_fail_as_never_ran_where_a_shards_coverage_shrank(
        row: dict[str, Any], done: list[list[int]], shards_per_group: int) -> None:
    """Shard 1's listing found 4 images final already; by the poll, that earlier attempt's results were gone (deleted,
    or replaced by a torn write), so its coverage (over every attempt) is 0, below the listing's 4. Shard 2's pool
    attempts gave 3 images a result before the pool (the worker) ended them. This run's pool processed images: the
    task merges and ends as its images say, in one group or in several. Before, one sum less the earlier images
    (0 + 3 - 4) said none, and the task failed "no image was processed", the 3 results hidden behind a false alarm."""
    run = run_task(task_input(shards_per_group=shards_per_group),
                   _partly_covered_listing(activities(shards=3), done, [[1, 4]], row, polled={1: 0, 2: 3}))

    assert run.status == "Completed", run.custom_status.get("error")
    assert c.MERGE_PART in run.activity_names and run.output["stage"] != Stage.failed
    assert run.output["earlier"] == 4 + sum(n for _, n, _ in done)


@pytest.mark.parametrize("shards_per_group", [1, 3])
def test_a_resumed_run_whose_shards_coverage_shrank_and_whose_pool_ran_nothing_still_fails_as_never_ran(
        shards_per_group: int) -> None:
    """The same shrunken shard 1, and no other shard gained a result: this run's pool processed nothing, and the task
    fails with the pool's reason (a shard whose coverage shrank counts 0, not what it lost). Guard: it failed so
    before too (one sum less the earlier images), and must still."""
    run = run_task(task_input(shards_per_group=shards_per_group),
                   _partly_covered_listing(activities(shards=3), [], [[1, 4], [2, 3]], POOL_ENDED_ROW,
                                           polled={1: 0}))

    assert run.status == "Failed" and c.MERGE_PART not in run.activity_names
    error = run.custom_status["error"]
    assert error.startswith("no image was processed") and "ContainerPullImageFailed" in error, error
    assert run.custom_status["cost"]["images"] == 0


@pytest.mark.parametrize("shards_per_group", [1, 3])
def test_a_failed_resumed_run_prices_the_images_its_pool_ran_where_a_shards_coverage_shrank(
        shards_per_group: int) -> None:
    """Failed after the pool work (its merge failing): the cost's images are those this run's pool gave a result,
    shard by shard, 3 in shard 2; before, shard 1's lost 4 were taken off them (max(0, 3 - 4): 0 images priced for
    the node time its attempts spent)."""
    answer = _partly_covered_listing(activities(shards=3), [], [[1, 4]], POOL_ENDED_ROW, polled={1: 0, 2: 3})
    run = run_task(task_input(shards_per_group=shards_per_group),
                   raising_on(c.MERGE_PART, RuntimeError("merge broke"), answer))

    assert run.status == "Failed" and "merge broke" in run.custom_status["error"]
    assert run.custom_status["cost"]["images"] == 3 and run.custom_status["earlier"] == 4


def test_a_resumed_runs_groups_of_before_without_images_ran_decide_as_they_did() -> None:
    """Replay: groups that ended under a release before ``images_ran`` returned none; a history with them decided on
    one sum less the earlier images (here 0 + 3 - 4: it failed, and then told the notify receiver so), and replays
    so, whatever the shards' coverage was. Guard only: the fallback keeps the earlier release's sum."""
    def child(name: str, instance_id: str, payload: Any) -> Any:
        n = len(payload["shards"])
        processed = 3 if "s00002" in payload["shards"] else 0
        return {**finished_group(n), "done": 0, "given_up": n, "images_done": processed,
                "images_missing": 10 * n - processed, "pool_error_shards": n,
                "pool_error": "ContainerPullImageFailed: the node could not pull the worker's image"}

    def partly(name: str, payload: Any) -> Any:
        out = activities(shards=3)(name, payload)
        return {**out, "partly": [[1, 4]]} if name == c.WRITE_SHARDS else out

    run = run_task(task_input(shards_per_group=1), partly, children=child)
    assert run.status == "Failed" and c.MERGE_PART not in run.activity_names
    assert run.custom_status["error"].startswith("no image was processed")


def test_a_resumed_run_with_partly_covered_shards_counts_the_earlier_images_apart_from_its_pools() -> None:
    """Where this run's pool ran the rest, the task completes; its status's ``earlier`` counts the images its listing
    found final already, and the cost's images and the estimate (``work``) only those its pool ran."""
    run = run_task(task_input(), _resumed_listing(activities(shards=3), [[0, 10, 0]]))
    base = run.output["cost"]["images"]

    def partly(name: str, payload: Any) -> Any:
        out = _resumed_listing(activities(shards=3), [[0, 10, 0]])(name, payload)
        return {**out, "partly": [[1, 4]]} if name == c.WRITE_SHARDS else out

    run = run_task(task_input(), partly)
    assert run.status == "Completed"
    assert _submitted(run) == ["s00001", "s00002"]
    detecting = next(s for s in run.statuses if s["stage"] == Stage.detecting)
    assert detecting["earlier"] == 14 and run.output["earlier"] == 14
    assert run.output["cost"]["images"] == base - 4
