"""The orchestrations that act on a finished task (re-render at another threshold, preview expiry, results zip) and
the task's own expiry scheduling, replayed by the real Durable SDK with scripted activities."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from core import contracts as c
from core.contracts import Stage
from gpu_batch.layout import REPEATS_REMOVED, threshold_csv_blob
from orchestrations.expiry import expire_previews
from orchestrations.rerender import rerender_previews
from orchestrations.results_zip import zip_results
from orchestrations.zip_sweep import sweep_results_zips
from tests.orchestrations.replay import T0, run_orchestrator
from tests.orchestrations.test_task_orchestrator import REQUEST, TASK, activities, run_task, task_input


def test_a_rerender_passes_over_each_variant_then_renders_its_page() -> None:
    counts = {"detections": 3, "near_misses": 4, "empty": 17, "failures": 1}

    def answer(name: str, payload: Any) -> Any:
        if name == c.RETHRESHOLD:
            return {"variant": payload["variant"], "threshold": payload["threshold"], "images": 25, "counts": counts,
                    "csv_blob": threshold_csv_blob(TASK, payload["threshold"], payload["variant"])}
        assert name == c.PREVIEWS
        return {"container": "$web", "counts": counts}

    data: c.RerenderInput = {"task_id": TASK, "threshold": 0.35, "model": "MDV5A", "request_name": "site A",
                             "variants": ["", REPEATS_REMOVED]}
    run = run_orchestrator(rerender_previews, data, answer, instance_id=f"{TASK}-previews")

    assert run.status == "Completed"
    assert run.activity_names == [c.RETHRESHOLD, c.PREVIEWS, c.RETHRESHOLD, c.PREVIEWS]
    assert run.inputs(c.RETHRESHOLD) == [{"task_id": TASK, "threshold": 0.35, "variant": ""},
                                         {"task_id": TASK, "threshold": 0.35, "variant": REPEATS_REMOVED}]
    assert run.inputs(c.PREVIEWS)[1] == {"task_id": TASK, "model": "MDV5A", "request_name": "site A",
                                         "variant": REPEATS_REMOVED, "only_if_published": True}
    assert run.stages[0] == Stage.publishing and run.stages[-1] == Stage.completed
    assert run.output == {
        "stage": Stage.completed, "key": TASK, "started": T0.isoformat(), "finished": T0.isoformat(), "threshold": 0.35,
        "csv": {"original": threshold_csv_blob(TASK, 0.35), REPEATS_REMOVED: threshold_csv_blob(TASK, 0.35,
                                                                                               REPEATS_REMOVED)},
        "previews": {"original": {"container": "$web", "counts": counts},
                     REPEATS_REMOVED: {"container": "$web", "counts": counts}}}


def test_a_rerender_of_a_large_results_file_runs_its_parts_in_parallel_then_composes_them() -> None:
    """``rethreshold_results`` answers ranges instead of a pass: one part per range (task_all), the combine's
    output is the variant's, then the parts' work is deleted and the page rendered; a variant one pass handles in
    the same run keeps the single activity."""
    counts = {"detections": 3, "near_misses": 4, "empty": 17, "failures": 1}
    csv = threshold_csv_blob(TASK, 0.35)

    def answer(name: str, payload: Any) -> Any:
        if name == c.RETHRESHOLD:
            out = {"variant": payload["variant"], "threshold": 0.35, "images": 25, "counts": counts,
                   "csv_blob": threshold_csv_blob(TASK, 0.35, payload["variant"])}
            return {**out, "images": 0, "counts": {}, "parts": [[100, 50], [150, 50], [200, 49]]} \
                if payload["variant"] == "" else out
        if name == c.RETHRESHOLD_PART:
            return {"part": payload["part"], "images": 10 + payload["part"], "csv_bytes": 700}
        if name == c.RETHRESHOLD_COMBINE:
            return {"variant": "", "threshold": 0.35, "csv_blob": csv, "images": 33, "counts": counts}
        if name == c.RETHRESHOLD_CLEAN:
            return 7
        assert name == c.PREVIEWS
        return {"container": "$web", "counts": counts}

    data: c.RerenderInput = {"task_id": TASK, "threshold": 0.35, "model": "MDV5A", "request_name": "",
                             "variants": ["", REPEATS_REMOVED]}
    run = run_orchestrator(rerender_previews, data, answer, instance_id=f"{TASK}-previews")

    assert run.status == "Completed"
    assert run.activity_names == [c.RETHRESHOLD, *[c.RETHRESHOLD_PART] * 3, c.RETHRESHOLD_COMBINE,
                                  c.RETHRESHOLD_CLEAN, c.PREVIEWS, c.RETHRESHOLD, c.PREVIEWS]
    assert run.inputs(c.RETHRESHOLD_PART) == [
        {"task_id": TASK, "threshold": 0.35, "variant": "", "part": k, "offset": o, "length": n}
        for k, (o, n) in enumerate([(100, 50), (150, 50), (200, 49)])]
    assert run.inputs(c.RETHRESHOLD_COMBINE) == [{"task_id": TASK, "threshold": 0.35, "variant": "", "parts": [
        {"part": k, "images": 10 + k, "csv_bytes": 700} for k in range(3)]}]
    assert run.inputs(c.RETHRESHOLD_CLEAN) == [{"task_id": TASK, "threshold": 0.35, "variant": ""}]
    assert run.output["csv"] == {"original": csv, REPEATS_REMOVED: threshold_csv_blob(TASK, 0.35, REPEATS_REMOVED)}


@pytest.mark.parametrize("days, steps", [(20, [6, 12, 18, 20]), (6, [6]), (1, [1]), (13, [6, 12, 13])])
def test_an_expiry_waits_in_timers_of_at_most_six_days_then_deletes_the_folder(days: int, steps: list[int]) -> None:
    expires = (T0 + timedelta(days=days)).isoformat()
    run = run_orchestrator(expire_previews, {"task_id": TASK, "expires": expires},
                           {c.DELETE_PREVIEWS: {"deleted": 42}}, instance_id=f"{TASK}-expiry")

    assert run.status == "Completed"
    assert [t.fire_at for t in run.orchestrator_timers] == [T0 + timedelta(days=d) for d in steps]
    assert all(t.delay_s <= 6 * 86400 for t in run.orchestrator_timers)
    assert run.inputs(c.DELETE_PREVIEWS) == [{"task_id": TASK}]
    assert run.statuses[0] == {"stage": "waiting", "expires": expires}
    assert run.output == {"stage": Stage.completed, "expires": expires, "deleted": 42}


def test_an_expiry_already_due_deletes_at_once() -> None:
    run = run_orchestrator(expire_previews, {"task_id": TASK, "expires": (T0 - timedelta(hours=1)).isoformat()},
                           {c.DELETE_PREVIEWS: {"deleted": 0}})
    assert run.status == "Completed" and run.orchestrator_timers == [] and run.output["deleted"] == 0


def test_a_moved_expiry_reads_the_event_as_azure_delivers_it_and_as_older_histories_hold_it() -> None:
    """The SDK client's ``raise_event`` posts the data's JSON as a JSON string and the extension keeps it, so on Azure
    the waiting expiry gets ``'{"expires": ...}'`` (devhost README, fidelity row 36); histories devhost recorded before
    hold the dict. Both name the same time; anything else fails the expiry with what to do."""
    from orchestrations.expiry import moved_to

    later = (T0 + timedelta(days=3)).isoformat()
    assert moved_to(json.dumps({"expires": later})) == moved_to({"expires": later}) == later
    assert moved_to(json.dumps({"expires": ""})) == moved_to({"expires": ""}) == moved_to(None) == ""
    with pytest.raises(TypeError, match="DELETE /api/tasks/"):
        moved_to(json.dumps(["not", "a", "time"]))


SWEEP = {"scheduled": True, "instance_id": "i", "at": "2025-01-10T00:00:00+00:00"}


def test_the_zip_orchestration_builds_it_in_one_activity() -> None:
    built = {"blob": f"results/{TASK}/download/{TASK}-results.zip", "files": 9, "bytes": 1234}
    run = run_orchestrator(zip_results, {"task_id": TASK}, {c.BUILD_RESULTS_ZIP: built,
                                                            c.SCHEDULE_RESULTS_ZIP_SWEEP: SWEEP})
    assert run.status == "Completed" and run.output == built and run.inputs(c.BUILD_RESULTS_ZIP) == [{"task_id": TASK}]


@pytest.mark.parametrize("parts", [False, True])
def test_a_zip_build_starts_the_sweep_of_its_folder_after_its_last_step(parts: bool) -> None:
    """The zips a build replaced (kept for their links) and those no manifest names were deleted only by a later GET
    or build of the same generation: with neither (no one came back a week later; a generation a re-run replaced),
    they stayed, paid for, for ever. So each build's end starts a sweep of its own (``sweep_results_zips``, days
    later), one per build, named by the build's instance and its end on the orchestration's clock (a retried call
    starts no second one); called after the build's last step, so a history of an earlier release replays up to it
    unchanged. Fails without the change (no such call)."""
    from core.ids import results_zip_sweep_instance_id

    key = f"{TASK}/runs/r2612070400000a1b"  # a re-run's generation: its own folder, swept as the build's
    plan = {"files": [{"name": "a", "etag": "e", "size": 10, "modified": T0.isoformat()}],
            "parts": [[[0, 0, 10, True]]], "build": "0000aaaa"}
    built = {"blob": "z.zip", "files": 1, "bytes": 10}

    def answer(name: str, payload: Any) -> Any:
        if name == c.BUILD_RESULTS_ZIP:
            return {**built, "bytes": 0, "plan": plan} if parts else built
        if name == c.RESULTS_ZIP_PART:
            return {"part": payload["part"], "chunks": [[1, 10]]}
        return {c.RESULTS_ZIP_COMBINE: built, c.RESULTS_ZIP_CLEAN: 0, c.SCHEDULE_RESULTS_ZIP_SWEEP: SWEEP}[name]

    run = run_orchestrator(zip_results, {"task_id": key}, answer, instance_id=f"{TASK}-zip")
    assert run.status == "Completed", run.error
    assert run.output == built and run.activity_names[-1] == c.SCHEDULE_RESULTS_ZIP_SWEEP
    assert run.activity_names[:-1] == ([c.BUILD_RESULTS_ZIP, c.RESULTS_ZIP_PART, c.RESULTS_ZIP_COMBINE,
                                        c.RESULTS_ZIP_CLEAN] if parts else [c.BUILD_RESULTS_ZIP])
    assert run.inputs(c.SCHEDULE_RESULTS_ZIP_SWEEP) == [
        {"task_id": key, "instance_id": results_zip_sweep_instance_id(f"{TASK}-zip", T0)}]


@pytest.mark.parametrize(("days", "steps"), [(9, [6, 9]), (0, [])])
def test_a_sweep_waits_in_timers_of_at_most_six_days_then_sweeps_its_folder(days: int, steps: list[int]) -> None:
    at = (T0 + timedelta(days=days)).isoformat()
    run = run_orchestrator(sweep_results_zips, {"task_id": TASK, "at": at}, {c.SWEEP_RESULTS_ZIPS: {"deleted": 2}},
                           instance_id=f"{TASK}-zip-sweep-x")
    assert run.status == "Completed", run.error
    assert [t.fire_at for t in run.orchestrator_timers] == [T0 + timedelta(days=d) for d in steps]
    assert run.inputs(c.SWEEP_RESULTS_ZIPS) == [{"task_id": TASK}] and run.output == {"deleted": 2}


def with_expiry(answer: Any, fail: bool = False) -> Any:
    def wrapped(name: str, payload: Any) -> Any:
        if name == c.SCHEDULE_EXPIRY:
            if fail:
                raise ConnectionError("management API down")
            return {"scheduled": True, "instance_id": f"{TASK}-expiry"}
        return answer(name, payload)

    return wrapped


def test_a_task_with_previews_expire_days_schedules_its_expiry_and_says_when() -> None:
    run = run_task(task_input({**REQUEST, "previews_expire_days": 3}, previews_expire_day_s=60),
                   with_expiry(activities(shards=1)))

    assert run.status == "Completed"
    scheduled = run.inputs(c.SCHEDULE_EXPIRY)
    finished = run.output["finished"]
    from datetime import datetime

    expected = (datetime.fromisoformat(finished) + timedelta(seconds=3 * 60)).isoformat()
    assert scheduled == [{"task_id": TASK, "expires": expected}]
    assert run.output["previews"]["expires"] == expected == run.custom_status["previews"]["expires"]
    assert run.activity_names.index(c.SCHEDULE_EXPIRY) > run.activity_names.index(c.PREVIEWS)


def test_a_run_with_an_id_names_its_pool_job_in_the_expirys_call() -> None:
    """A run terminated after it scheduled its expiry leaves the call queued (terminate stops the orchestration alone)
    and a later run of the task may have set the task's expiry by the time it runs: the call carries the run's pool
    job, and is refused once a later run replaced that run (activities.superseded). A run without an id (started
    before runs had ids) schedules what it always did: its recorded history replays with the same input. Fails
    without the change (no ``run_job``)."""
    from gpu_batch.layout import pool_job_id

    run_id = "r2612070400000a1b"
    run = run_task({**task_input({**REQUEST, "previews_expire_days": 3}), "run": run_id},
                   with_expiry(activities(shards=1)))

    assert run.status == "Completed", run.error
    [asked] = run.inputs(c.SCHEDULE_EXPIRY)
    assert asked["run_job"] == pool_job_id(TASK, run_id) and asked["expires"] == run.output["previews"]["expires"]


def test_a_task_without_it_schedules_nothing_and_a_failed_schedule_is_noted_not_fatal() -> None:
    plain = run_task(task_input(REQUEST), with_expiry(activities(shards=1)))
    assert plain.status == "Completed" and plain.inputs(c.SCHEDULE_EXPIRY) == []
    assert "expires" not in plain.output["previews"]
    failing = run_task(task_input({**REQUEST, "previews_expire_days": 1}), with_expiry(activities(shards=1), True))
    assert failing.status == "Completed" and failing.output["stage"] == Stage.completed
    assert "management API down" in failing.output["previews"]["expiry_error"]


def test_a_failed_expiry_schedule_shows_no_expiry_date_and_says_the_pages_stay() -> None:
    """The status showed the date the pages would go though no expiry was scheduled: they stay until deleted."""
    failing = run_task(task_input({**REQUEST, "previews_expire_days": 1}), with_expiry(activities(shards=1), True))
    previews = failing.output["previews"]
    assert "expires" not in previews and "expires" not in failing.custom_status["previews"]
    assert "no expiry was scheduled" in previews["expiry_error"] and "stay" in previews["expiry_error"]
