"""The repeated-detection removal orchestrator, replayed by the real Durable SDK with scripted activities."""
from __future__ import annotations

from typing import Any

from core import contracts as c
from core.contracts import Stage
from gpu_batch.layout import REPEATS_REMOVED
from orchestrations.repeats import remove_repeats
from tests.orchestrations.replay import T0, run_orchestrator

TASK = "task-0123456789abcdef0123"


def test_re_merges_with_the_chosen_locations_then_renders_the_variant_previews() -> None:
    merged: c.MergeOutput = {
        "results_blob": f"results/{TASK}/detections.{REPEATS_REMOVED}.json",
        "csv_blob": f"results/{TASK}/detections.{REPEATS_REMOVED}.csv",
        "repeats_blob": f"results/{TASK}/repeated-detections.json", "container": "trapbatch",
        "images": 25, "failed": 0, "with_detections": 5, "detections": 9, "empty": 20, "missing": 0,
        "detections_marked": 6}
    previews: c.PreviewsOutput = {"container": "$web", "counts": {"detections": 5}}
    removal: c.RepeatsInput = {"task_id": TASK, "model": "MDV5A", "request_name": "site A",
                               "remove": ["r00001", "r00003"]}
    prefix = f"results/{TASK}/exports/{REPEATS_REMOVED}/"
    exports: c.ExportsOutput = {
        "container": "trapbatch", "prefix": prefix, "coco": prefix + "coco.json", "camtrap_dp": prefix + "camtrap-dp/",
        "zooniverse": prefix + "zooniverse/", "zooniverse_batches": 1, "threshold": 0.2, "images": 25,
        "annotations": 9, "observations": 29, "deployments": 2, "zooniverse_subjects": 25, "sizes_unknown": 0}
    part = {"images": 25, "failed": 0, "with_detections": 5, "detections": 9, "empty": 20, "missing": 0,
            "failure_reasons": {}, "json_bytes": 10, "csv_bytes": 10, "detections_considered": 0, "marked": 6}
    answers: dict[str, Any] = {
        c.READ_ENUMERATION: {"images": 25, "shards": 2},
        c.MERGE_PART: lambda p: {**part, "part": p["part"]},
        c.MERGE_COMBINE: {"container": "trapbatch", "search_groups": 0}, c.PREVIEWS: previews,
        c.CLEAN_MERGE_WORK: {"deleted": 3}, c.EXPORTS: exports}

    run = run_orchestrator(remove_repeats, removal, answers, instance_id=f"{TASK}-repeats")

    assert run.status == "Completed"
    assert run.activity_names == [c.READ_ENUMERATION, c.MERGE_PART, c.MERGE_COMBINE, c.CLEAN_MERGE_WORK,
                                  c.EXPORTS, c.PREVIEWS]  # no new search
    assert run.inputs(c.EXPORTS) == [{"task_id": TASK, "variant": REPEATS_REMOVED}]
    assert run.inputs(c.CLEAN_MERGE_WORK) == [{"task_id": TASK, "variant": REPEATS_REMOVED}]
    assert run.inputs(c.MERGE_PART) == [{"task_id": TASK, "part": 0, "first_shard": 0, "shards": 2,
                                         "variant": REPEATS_REMOVED, "remove": ["r00001", "r00003"]}]
    combine = run.inputs(c.MERGE_COMBINE)[0]
    assert combine["completed_at"] == T0.isoformat() and combine["removed"] == ["r00001", "r00003"]
    assert combine["variant"] == REPEATS_REMOVED
    assert run.inputs(c.PREVIEWS) == [{"task_id": TASK, "model": "MDV5A", "request_name": "site A",
                                       "variant": REPEATS_REMOVED, "only_if_published": True}]
    assert run.stages == [Stage.merging, Stage.publishing, Stage.completed]
    assert run.statuses[0]["locations"] == 2
    assert run.output == {
        "stage": Stage.completed, "started": T0.isoformat(), "finished": T0.isoformat(), "locations": 2,
        "detections_marked": 6,
        "results": {"container": "trapbatch", "blob": merged["results_blob"], "csv": merged["csv_blob"],
                    "exports": exports},
        "previews": previews}
    assert run.custom_status == run.output


def _answers_with_failing_exports() -> dict[str, Any]:
    """A removal's activity answers where every step but the exports succeeds."""
    part = {"images": 5, "failed": 0, "with_detections": 1, "detections": 1, "empty": 4, "missing": 0,
            "failure_reasons": {}, "json_bytes": 10, "csv_bytes": 10, "detections_considered": 0, "marked": 1}
    return {
        c.READ_ENUMERATION: {"images": 5, "shards": 1}, c.MERGE_PART: lambda p: {**part, "part": p["part"]},
        c.MERGE_COMBINE: {"container": "trapbatch", "search_groups": 0},
        c.PREVIEWS: {"container": "$web", "counts": {}}, c.CLEAN_MERGE_WORK: {"deleted": 3},
        c.EXPORTS: lambda p: (_ for _ in ()).throw(ConnectionError("no exports"))}


def test_the_list_the_ids_come_from_goes_to_every_part_and_into_the_status() -> None:
    """The parts check it against the task's list before marking anything (a search run again may replace it)."""
    answers = _answers_with_failing_exports()
    removal: c.RepeatsInput = {"task_id": TASK, "model": "MDV5A", "request_name": "", "remove": ["r00002"],
                               "search": "s20250101T000000Z-abcdef"}

    run = run_orchestrator(remove_repeats, removal, answers, instance_id=f"{TASK}-repeats")

    assert run.status == "Completed", run.error
    assert [p["search"] for p in run.inputs(c.MERGE_PART)] == ["s20250101T000000Z-abcdef"]
    assert all(s["search"] == "s20250101T000000Z-abcdef" for s in run.statuses)
    assert run.output["search"] == "s20250101T000000Z-abcdef" and run.output["results"]["exports_error"] == "no exports"
    # what to do, in the status itself (the API's answer), not only in the CLI's printout
    hint = run.output["results"]["exports_hint"]
    assert f"POST /api/tasks/{TASK}/repeats" in hint and "same" in hint and "exports were not written" in hint


def test_a_re_run_s_removal_s_exports_hint_names_the_task_not_its_generation() -> None:
    """A removal of a re-run's generation runs with its generation key as task id (``<task>/runs/<run>``,
    api.starters.task_repeats): its exports hint said "POST /api/tasks/<task>/runs/<run>/repeats" and "trapbatch
    repeats <task>/runs/<run>", a route and a command that take no generation."""
    answers = _answers_with_failing_exports()
    removal: c.RepeatsInput = {"task_id": f"{TASK}/runs/r260101000000abcdef", "model": "MDV5A", "request_name": "",
                               "remove": ["r00002"], "search": "s20250101T000000Z-abcdef"}

    run = run_orchestrator(remove_repeats, removal, answers, instance_id=f"{TASK}-repeats")

    assert run.status == "Completed", run.error
    hint = run.output["results"]["exports_hint"]
    assert f"POST /api/tasks/{TASK}/repeats " in hint and f"trapbatch repeats {TASK} --keep" in hint, hint
    assert "/runs/" not in hint, hint


def _plan_of(removal: c.RepeatsInput, images: int, shards: int) -> list[tuple[int, int]]:
    part = {"images": 1, "failed": 0, "with_detections": 0, "detections": 0, "empty": 1, "missing": 0,
            "failure_reasons": {}, "json_bytes": 10, "csv_bytes": 10, "detections_considered": 0, "marked": 0}
    answers: dict[str, Any] = {
        c.READ_ENUMERATION: {"images": images, "shards": shards}, c.MERGE_PART: lambda p: {**part, "part": p["part"]},
        c.MERGE_COMBINE: {"container": "trapbatch", "search_groups": 0},
        c.PREVIEWS: {"container": "$web", "counts": {}}, c.CLEAN_MERGE_WORK: {"deleted": 0},
        c.EXPORTS: lambda p: (_ for _ in ()).throw(ConnectionError("no exports"))}
    run = run_orchestrator(remove_repeats, removal, answers, instance_id=f"{TASK}-repeats")
    assert run.status == "Completed", run.error
    return [(p["first_shard"], p["shards"]) for p in run.inputs(c.MERGE_PART)]


def test_the_merge_parts_follow_the_knobs_recorded_when_the_removal_started() -> None:
    """The starter records the app's knobs in the input (the task's own merge takes TRAPBATCH_MERGE_IMAGES_PER_PART
    too); a removal started before they were recorded keeps the part size of then, whatever today's default is, so a
    release that changes the default does not re-plan a running removal's parts (merging shards twice)."""
    base: c.RepeatsInput = {"task_id": TASK, "model": "MDV5A", "request_name": "", "remove": ["r00002"]}
    assert _plan_of({**base, "knobs": {"merge_images_per_part": 100_000}}, 400_000, 4) == [(0, 1), (1, 1), (2, 1),
                                                                                             (3, 1)]
    assert _plan_of(base, 400_000, 4) == [(0, 2), (2, 2)]



def test_a_removal_from_this_release_prepares_first_and_its_parts_read_the_ids_from_a_blob() -> None:
    """``prepare`` (the starter sets it) puts PREPARE_REMOVAL first (the earlier removal's files deleted, the ids
    written once) and the merge parts name the blob instead of each carrying the list; a removal started before the
    step existed has no such field, so its recorded history replays with the same activities and inputs as before."""
    part = {"images": 5, "failed": 0, "with_detections": 0, "detections": 0, "empty": 5, "missing": 0,
            "failure_reasons": {}, "json_bytes": 10, "csv_bytes": 10, "detections_considered": 0, "marked": 0}
    blob = f"tasks/{TASK}/repeats-removal.json"
    answers: dict[str, Any] = {
        c.PREPARE_REMOVAL: {"deleted": 4, "remove_blob": blob}, c.READ_ENUMERATION: {"images": 5, "shards": 2},
        c.MERGE_PART: lambda p: {**part, "part": p["part"]},
        c.MERGE_COMBINE: {"container": "trapbatch", "search_groups": 0}, c.PREVIEWS: {"container": "$web"},
        c.CLEAN_MERGE_WORK: {"deleted": 1}, c.EXPORTS: lambda p: (_ for _ in ()).throw(RuntimeError("disk full"))}
    removal: c.RepeatsInput = {"task_id": TASK, "model": "MDV5A", "request_name": "", "remove": ["r00002", "r00001"],
                               "knobs": {"merge_images_per_part": 2}}

    new = run_orchestrator(remove_repeats, {**removal, "prepare": True}, answers, instance_id=f"{TASK}-repeats")
    old = run_orchestrator(remove_repeats, removal, answers, instance_id=f"{TASK}-repeats")

    assert new.activity_names[:2] == [c.PREPARE_REMOVAL, c.READ_ENUMERATION]
    assert new.inputs(c.PREPARE_REMOVAL) == [{"task_id": TASK, "remove": ["r00002", "r00001"]}]
    assert len(new.inputs(c.MERGE_PART)) == 2
    assert all(p["remove_blob"] == blob and "remove" not in p for p in new.inputs(c.MERGE_PART))
    assert new.inputs(c.MERGE_COMBINE)[0]["removed"] == ["r00001", "r00002"]
    assert c.PREPARE_REMOVAL not in old.activity_names and old.activity_names[0] == c.READ_ENUMERATION
    assert all(p["remove"] == ["r00002", "r00001"] and "remove_blob" not in p for p in old.inputs(c.MERGE_PART))
    assert new.output["results"]["exports_error"] and "exports" not in new.output["results"]


def test_the_removal_s_status_names_the_task_s_photos_cut_short_and_schedules_what_it_did() -> None:
    """Removing repeated detections changes no photo: the status says ``damaged`` as the task's does (count, the
    first part's examples, the original's list, the hint), from the parts' outputs; the same activities run."""
    from gpu_batch.layout import damaged_blob
    from orchestrations.fanin import damaged_status

    part = {"images": 5, "failed": 0, "with_detections": 1, "detections": 1, "empty": 4, "missing": 0,
            "failure_reasons": {}, "json_bytes": 10, "csv_bytes": 10, "detections_considered": 0, "marked": 1}
    found = {1: {"damaged": 2, "damaged_examples": ["cam/b.jpg", "cam/c.jpg"]}, 2: {"damaged": 1,
                                                                                   "damaged_examples": ["d/e.jpg"]}}
    answers: dict[str, Any] = {
        c.READ_ENUMERATION: {"images": 15, "shards": 3},
        c.MERGE_PART: lambda p: {**part, "part": p["part"], **found.get(p["part"], {})},
        c.MERGE_COMBINE: {"container": "trapbatch", "search_groups": 0},
        c.PREVIEWS: {"container": "$web", "counts": {}}, c.CLEAN_MERGE_WORK: {"deleted": 3},
        c.EXPORTS: lambda p: (_ for _ in ()).throw(ConnectionError("no exports"))}
    removal: c.RepeatsInput = {"task_id": TASK, "model": "MDV5A", "request_name": "", "remove": ["r00002"],
                               "knobs": {"merge_images_per_part": 5}}

    run = run_orchestrator(remove_repeats, removal, answers, instance_id=f"{TASK}-repeats")

    assert run.status == "Completed", run.error
    assert [call.input["part"] for call in run.calls(c.MERGE_PART)] == [0, 1, 2]
    assert run.activity_names[:6] == [c.READ_ENUMERATION, *[c.MERGE_PART] * 3, c.MERGE_COMBINE, c.CLEAN_MERGE_WORK]
    assert set(run.activity_names[6:]) == {c.EXPORTS, c.PREVIEWS}  # the exports fail after their retries
    assert run.output["damaged"] == damaged_status({  # type: ignore[typeddict-item]
        "damaged": 3, "damaged_blob": damaged_blob(TASK), "damaged_examples": ["cam/b.jpg", "cam/c.jpg"]})
    assert run.output["damaged"]["blob"] == f"results/{TASK}/damaged.csv" and run.custom_status == run.output
    assert "damaged_bytes" not in run.inputs(c.MERGE_COMBINE)[0]  # the variant writes no list of its own
