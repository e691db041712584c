"""gpu_batch.layout: the one place blob names and pool ids are formatted, and the parsers that invert them."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from gpu_batch import layout

TASK = "task-0123456789abcdef0123"


def test_pool_ids_round_trip_and_fit_batch_rules() -> None:
    for sid, attempt in (("s00000", 1), ("s12345", 12), ("s100000", 3)):
        assert layout.parse_pool_task_id(layout.pool_task_id(sid, attempt)) == (sid, attempt)
        assert layout.shard_index(sid) == int(sid[1:])
    with pytest.raises(ValueError):
        layout.parse_pool_task_id("s00000")
    with pytest.raises(ValueError):
        layout.shard_index("shard-1")
    run = layout.run_id(datetime(2026, 12, 1, 16, 30, 5, tzinfo=timezone(timedelta(hours=1))), "ab12")
    assert run == "r261201153005ab12"  # UTC
    job = layout.pool_job_id(TASK, run)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", job)  # Batch job id rules
    assert layout.task_of_pool_job(job) == TASK == layout.task_of_pool_job(layout.pool_job_id(TASK))


def test_shard_attempt_names_are_found_again_by_the_merge() -> None:
    manifest = layout.manifest_blob(TASK, "s00003", 2)
    results = layout.attempt_results_blob(TASK, "s00003", 2)
    prefix = layout.shard_prefix(TASK, "s00003")
    assert manifest.startswith(prefix) and results.startswith(prefix)
    assert layout.attempt_of_results_blob(results) == 2
    assert layout.attempt_of_results_blob(manifest) is None


def test_a_progress_counter_sits_beside_its_results_and_is_never_taken_for_them() -> None:
    progress = layout.attempt_progress_blob(TASK, "s00003", 2)
    assert progress.startswith(layout.shard_prefix(TASK, "s00003"))
    assert progress not in (layout.attempt_results_blob(TASK, "s00003", 2), layout.manifest_blob(TASK, "s00003", 2))
    assert layout.attempt_of_results_blob(progress) is None  # the merge lists the prefix and must skip it


def test_the_merges_record_of_a_shard_sits_beside_its_attempts_and_is_never_taken_for_one() -> None:
    merged = layout.shard_merged_blob(TASK, "s00003")
    assert merged.startswith(layout.shard_prefix(TASK, "s00003"))  # in the listing the merge and the exports make
    assert layout.attempt_of_results_blob(merged) is None
    assert merged not in {f(TASK, "s00003", a) for a in range(3) for f in (
        layout.manifest_blob, layout.attempt_results_blob, layout.attempt_progress_blob, layout.attempt_coverage_blob,
        layout.attempt_view_blob)} | {layout.shard_list_blob(TASK, "s00003"), layout.shard_etags_blob(TASK, "s00003")}


def test_logs_of_every_run_sit_under_their_task() -> None:
    job = layout.pool_job_id(TASK, "r261201153005ab12")
    assert layout.pool_log_blob(job, "s00000-a1").startswith(layout.task_prefix(TASK) + "logs/" + job + "/")
    assert layout.pool_log_prefix(job, "s00000-a1").endswith("/s00000-a1/")


def test_results_variants_and_pages() -> None:
    assert layout.results_blob(TASK) == f"results/{TASK}/detections.json"
    assert layout.results_blob(TASK, layout.REPEATS_REMOVED) == f"results/{TASK}/detections.repeats-removed.json"
    assert layout.csv_blob(TASK, layout.REPEATS_REMOVED).endswith(".repeats-removed.csv")
    assert layout.page_blob("f") == "f/index.html" and layout.page_blob("f", "v") == "f/v/index.html"
    assert layout.thumbnail_link("a/b.jpg", "v") == "../" + layout.thumbnail_path("a/b.jpg")


@pytest.mark.parametrize("name, is_request", [("a.json", True), ("dir/A.JSON", True), ("a.task.json", False),
                                              ("a.json.error.json", False), ("a.txt", False)])
def test_drop_requests_and_answers(name: str, is_request: bool) -> None:
    assert layout.is_drop_request(name) is is_request
    if is_request:
        assert not layout.is_drop_request(layout.drop_receipt_blob(name))
        assert not layout.is_drop_request(layout.drop_error_blob(name))


def test_a_request_named_near_the_limit_still_gets_its_answers() -> None:
    """A blob name is at most 1,024 characters: a request named with 1,014 (its receipt, error, done and estimate
    beside it each longer than that) got no answer, its trigger retried to the poison queue."""
    for length in (1014, 1019, 1024):
        name = "site/" + "x" * (length - len("site/.json")) + ".json"
        assert len(name) == length
        answers = [layout.drop_receipt_blob(name), layout.drop_error_blob(name),
                   layout.drop_answer_blob(name, "done"), layout.drop_answer_blob(name, "estimate")]
        for answer, suffix in zip(answers, (".task.json", ".error.json", ".done.json", ".estimate.json")):
            assert len(answer) <= layout.MAX_BLOB_NAME_CHARS and answer.endswith(suffix), answer
            assert answer.startswith("site/xxx") and not layout.is_drop_request(answer)
        other = name[:-6] + "y.json"
        assert layout.drop_error_blob(other) != layout.drop_error_blob(name)
    emoji = "site/" + "\U0001f98a" * 505 + ".json"  # 515 characters, 1,020 UTF-16 units (as .NET counts)
    for answer in (layout.drop_error_blob(emoji), layout.drop_receipt_blob(emoji)):
        assert len(answer.encode("utf-16-le")) // 2 <= layout.MAX_BLOB_NAME_CHARS and "~" in answer, answer
    assert layout.drop_error_blob("a.json") == "a.json.error.json"  # names that fit are unchanged
    assert layout.drop_answer_blob("d/a.json", "done") == "d/a.done.json"


def test_a_cancel_marker_belongs_to_one_run() -> None:
    first, second = (layout.pool_job_id(TASK, run) for run in ("r261201153005ab12", "r261202090000cd34"))
    assert layout.cancel_marker(first) != layout.cancel_marker(second)
    assert layout.cancel_marker(first).startswith(layout.task_prefix(TASK))


def test_a_pool_job_marker_belongs_to_one_run() -> None:
    """A run's job created once (activities.pool._ensure_job_once) says nothing of the next run's, a job of its own."""
    first, second = (layout.pool_job_id(TASK, run) for run in ("r261201153005ab12", "r261202090000cd34"))
    assert layout.pool_job_marker(first) == f"tasks/{TASK}/jobs/{first}.json"
    assert layout.pool_job_marker(first) != layout.pool_job_marker(second)
    assert layout.pool_job_marker(first) != layout.cancel_marker(first)


def test_exports_sit_under_their_results_per_variant() -> None:
    assert layout.coco_blob(TASK) == f"results/{TASK}/exports/coco.json"
    assert layout.coco_blob(TASK, layout.REPEATS_REMOVED) == f"results/{TASK}/exports/repeats-removed/coco.json"
    assert layout.camtrap_dp_blob(TASK, "media.csv") == f"results/{TASK}/exports/camtrap-dp/media.csv"
    assert layout.zooniverse_batch_blob(TASK, 2, layout.REPEATS_REMOVED) == \
        f"results/{TASK}/exports/repeats-removed/zooniverse/batch-002.csv"
    # the original's exports never fall under a variant's folder, nor the reverse
    original = [layout.coco_blob(TASK), layout.zooniverse_batch_blob(TASK, 1)]
    assert not any(n.startswith(layout.exports_prefix(TASK, layout.REPEATS_REMOVED)) for n in original)
    with pytest.raises(ValueError):
        layout.camtrap_dp_blob(TASK, "../x.csv")
    with pytest.raises(ValueError):
        layout.zooniverse_batch_blob(TASK, 0)


def test_fan_in_work_blobs_live_under_the_task_and_apart_per_variant() -> None:
    part = layout.merge_part_blob(TASK, 3, "json")
    assert part == f"tasks/{TASK}/merge/part-00003.json" and part.startswith(layout.task_prefix(TASK))
    assert layout.merge_part_blob(TASK, 3, "csv", layout.REPEATS_REMOVED) == (
        f"tasks/{TASK}/merge.repeats-removed/part-00003.csv")
    assert layout.repeat_search_blob(TASK, 12, "found.json") == f"tasks/{TASK}/merge/search-00012.found.json"
    assert len({layout.merge_part_blob(TASK, 1, k) for k in layout.MERGE_PART_KINDS}) == len(layout.MERGE_PART_KINDS)
    with pytest.raises(ValueError, match="merge part kind"):
        layout.merge_part_blob(TASK, 1, "txt")
    with pytest.raises(ValueError, match="repeat search kind"):
        layout.repeat_search_blob(TASK, 1, "json")


def test_listing_parts_sit_apart_from_shards_and_sort_in_listing_order() -> None:
    names = [layout.listing_plan_blob(TASK), layout.listing_unit_blob(TASK, 3), layout.listing_part_blob(TASK, 3, 7),
             layout.listing_sample_blob(TASK, 3, 7), layout.listing_cursor_blob(TASK, 3, 7),
             layout.sample_threshold_blob(TASK)]
    assert len(set(names)) == len(names)
    assert all(n.startswith(layout.listing_prefix(TASK)) and n.startswith(layout.task_prefix(TASK)) for n in names)
    assert not any(n.startswith(layout.task_prefix(TASK) + "shards/") for n in names)
    assert all(layout.attempt_of_results_blob(n) is None for n in names)
    parts = [layout.listing_part_blob(TASK, u, p) for u in (0, 1, 12) for p in (0, 2, 10, 11)]
    assert sorted(parts) == parts


def test_a_runs_listing_keeps_its_working_files_apart_and_a_listing_without_a_run_keeps_the_tasks_names() -> None:
    """A terminated run's late listing call writes its own run's files, never the part of the same number that the
    run resuming it under the same key wrote (activities.superseded); what the listing makes for later steps (shard
    ranges, an image list's deployments) keeps the task's names, which those steps list."""
    job, other = layout.pool_job_id(TASK, "r261201120000ab12"), layout.pool_job_id(TASK, "r261201130000cd34")

    def working(run: str) -> list[str]:
        return [layout.listing_plan_blob(TASK, run), layout.listing_unit_blob(TASK, 3, run),
                layout.listing_part_blob(TASK, 3, 7, run), layout.listing_sample_blob(TASK, 3, 7, run),
                layout.listing_cursor_blob(TASK, 3, 7, run), layout.listing_not_images_blob(TASK, run=run),
                layout.listing_not_images_blob(TASK, 3, 7, run), layout.listing_list_unit_blob(TASK, 3, run),
                layout.listing_list_rows_blob(TASK, run), layout.listing_list_part_blob(TASK, 3, 7, run),
                layout.sample_threshold_blob(TASK, run)]

    listing = f"tasks/{TASK}/listing/"
    assert working("") == [listing + n for n in (
        "plan.json", "u0003.json", "u0003-p00007.json", "u0003-p00007.sample.json", "u0003-p00007.next.json",
        "plan.not-images.json", "u0003-p00007.not-images.json", "list-u0003.jsonl", "list-rows.jsonl",
        "u0003-p00007.list.json", "sample-threshold.json")]  # as before runs listed apart: recorded runs read them
    mine, theirs = working(job), working(other)
    assert all(n.startswith(f"{listing}runs/{job}/") for n in mine)
    assert not set(mine) & set(theirs) and not set(mine) & set(working(""))
    shared = [layout.shard_ranges_prefix(TASK), layout.list_facts_parts_prefix(TASK)]
    assert not any(n.startswith(p) for n in mine + theirs for p in shared)
    with pytest.raises(ValueError):
        layout.listing_work_prefix(TASK, "a/b")
    assert all(n.startswith(layout.listing_runs_prefix(TASK)) for n in mine + theirs)


def test_the_loose_listing_files_a_run_deletes_are_exactly_the_working_files() -> None:
    """What ``activities.listing_leftovers.drop_own_listing`` deletes of the task's listing folder: every working file
    a listing without a run writes there, never what the listing makes for later steps (shard ranges, an image
    list's deployments), a run's folder, another task's or a generation's files."""
    working = [layout.listing_plan_blob(TASK), layout.listing_unit_blob(TASK, 3), layout.listing_part_blob(TASK, 3, 7),
               layout.listing_sample_blob(TASK, 3, 7), layout.listing_cursor_blob(TASK, 3, 7),
               layout.listing_not_images_blob(TASK), layout.listing_not_images_blob(TASK, 3, 7),
               layout.listing_list_unit_blob(TASK, 3), layout.listing_list_rows_blob(TASK),
               layout.listing_list_part_blob(TASK, 3, 7), layout.sample_threshold_blob(TASK)]
    assert all(layout.is_listing_work_file(TASK, n) for n in working)
    job = layout.pool_job_id(TASK, "r261201120000ab12")
    generation = layout.generation_key(TASK, "r261201120000ab12")
    kept = [layout.shard_ranges_blob(TASK, 12), layout.list_facts_part_blob(TASK, 12), layout.list_facts_blob(TASK),
            layout.listing_plan_blob(TASK, job), layout.listing_part_blob(TASK, 3, 7, job),
            layout.listing_plan_blob(generation), layout.enumeration_blob(TASK), layout.listing_plan_blob("task-other")]
    assert not any(layout.is_listing_work_file(TASK, n) for n in kept)
    assert layout.shard_ranges_first(TASK, layout.shard_ranges_blob(TASK, 12)) == 12
    assert layout.shard_ranges_first(TASK, layout.list_facts_part_blob(TASK, 12)) is None


def test_only_a_run_started_in_an_earlier_second_is_before_another() -> None:
    """What ``activities.enumerate.drop_earlier_listings`` deletes: never a later run's listing, nor one of the same
    second (run ids' random parts say nothing of their order), nor a folder no run named."""
    job = layout.pool_job_id(TASK, "r261201120000ab12")
    assert layout.started_before(layout.pool_job_id(TASK, "r261201115959ffff"), job)
    assert not layout.started_before(job, layout.pool_job_id(TASK, "r261201115959ffff"))
    assert not layout.started_before(layout.pool_job_id(TASK, "r261201120000aa00"), job)  # the same second
    assert not layout.started_before(job, job)
    assert not layout.started_before(TASK, job) and not layout.started_before("odd", job)
    assert not layout.started_before(layout.pool_job_id(TASK, "r2612011159"), job)  # not a run id


@pytest.mark.parametrize("name, file", [
    ("results/task-a/exports/coco.json", "coco.json"),
    ("results/task-a/exports/repeats-removed/coco.json", "coco.repeats-removed.json"),
    ("results/task-a/runs/r2/exports/repeats-removed/camera-days.csv", "camera-days.repeats-removed.csv"),
    ("results/task-a/exports/repeats-removed/zooniverse/batch-002.csv", "batch-002.repeats-removed.csv"),
    ("results/task-a/exports/repeats-removed/camtrap-dp/media.csv", "media.csv"),  # the package names its files
    ("results/task-a/detections.repeats-removed.json", "detections.repeats-removed.json"),
    ("results/task-a/download/task-a-results.zip", "task-a-results.zip"),
    ("results/task-a/download/task-a-results-0f3a9c2e.zip", "task-a-results.zip"),  # whichever build wrote it
    ("results/task-a/runs/r2/download/task-a-runs-r2-results-0f3a9c2e.zip", "task-a-runs-r2-results.zip"),
    ("results/task-a/exports/x-results-0f3a9c2e.zip", "x-results-0f3a9c2e.zip"),  # not a results zip: its own name
])
def test_a_variants_exports_download_under_names_of_their_own(name: str, file: str) -> None:
    assert layout.download_file_name(name) == file


# ---------------------------------------------------------------- pinned names (a mutation audit found them unpinned)

def test_shard_ids_are_five_digits_at_least_and_thumbnails_keep_their_names() -> None:
    """Blob names are storage format: tasks started by an earlier release are read back by these names (a shard's
    attempts, a page re-rendered at another threshold linking the thumbnails the first rendering wrote)."""
    assert [layout.shard_id(i) for i in (0, 7, 99_999, 100_000)] == ["s00000", "s00007", "s99999", "s100000"]
    assert layout.thumbnail_path("cam/a.jpg") == "thumbs/f872370676a90ba4.jpg"


def test_a_shard_folder_as_a_delimiter_listing_gives_it_is_read_back_to_its_index() -> None:
    """What the listing's end deletes past its count is found so (``activities.listing_leftovers``): every shard's
    folder, of any width, and nothing else of the shards folder nor another task's."""
    root = layout.shards_prefix(TASK)
    for index in (0, 12, 99_999, 100_000):
        folder = layout.shard_prefix(TASK, layout.shard_id(index))
        assert folder.startswith(root) and layout.shard_folder_index(TASK, folder) == index
    for other in (root, root + "s00012", root + "s0012/", root + "s00012/attempt-1.json", root + "notes/",
                  layout.shard_prefix("task-other", "s00012"), layout.listing_prefix(TASK)):
        assert layout.shard_folder_index(TASK, other) is None


def test_only_a_results_blob_itself_names_an_attempt() -> None:
    results = layout.attempt_results_blob(TASK, "s00003", 2)
    assert layout.attempt_of_results_blob(results + ".tmp") is None
    prefix = layout.list_facts_parts_prefix(TASK)
    assert layout.list_facts_part_of(TASK, layout.list_facts_part_blob(TASK, 12)) == 12
    assert layout.list_facts_part_of(TASK, prefix + "000012.tmp") is None


def test_a_generation_must_be_a_run_id_since_it_becomes_part_of_every_name() -> None:
    assert layout.generation_key(TASK, "r261201153005ab12") == f"{TASK}/runs/r261201153005ab12"
    for bad in ("../other", "r26120115300", "r261201153005AB12/x"):
        with pytest.raises(ValueError):
            layout.generation_key(TASK, bad)


def test_a_drop_answer_of_exactly_the_limit_is_not_cut_and_only_known_kinds_are_answers() -> None:
    name = "x" * (layout.MAX_BLOB_NAME_CHARS - len(".error.json"))
    assert layout.drop_error_blob(name) == name + ".error.json"
    with pytest.raises(ValueError):
        layout.drop_answer_blob("a.json", "error")


def test_only_a_whole_handoff_name_hands_a_marker_over() -> None:
    """A request dropped as ``trapbatch-ready.cams.json.old.json`` is an ordinary request, not a marker's start."""
    assert layout.marker_handoff_container(layout.marker_handoff_blob("cams")) == "cams"
    assert layout.marker_handoff_container("trapbatch-ready.cams.json.old.json") is None


@pytest.mark.parametrize("task", ["task-a", "task-a/runs/r2"])
def test_each_zip_build_has_a_name_of_its_own_read_back_to_its_build(task: str) -> None:
    """A link is for a blob name: each build's zip under its own, so another build's late commit never replaces a
    linked zip; "" is the one name of before builds were named, which an earlier release's manifest names."""
    label = layout.download_label(task)
    folder = layout.results_prefix(task) + "download/"
    assert layout.results_zip_folder(task) == folder and layout.results_zip_blob(task) == f"{folder}{label}-results.zip"
    assert layout.results_zip_blob(task, "0f3a9c2e") == f"{folder}{label}-results-0f3a9c2e.zip"
    for build in ("", "0f3a9c2e"):
        assert layout.results_zip_build(task, layout.results_zip_blob(task, build)) == build
    for other in (layout.results_zip_manifest_blob(task), layout.results_zip_blob("task-b", "0f3a9c2e"),
                  layout.results_zip_blob(task, "0f3a9c2e") + ".json", layout.results_zip_blob(task, "XYZ"),
                  layout.results_zip_blob(task, "0f3a/../x"), layout.results_blob(task), ""):
        assert layout.results_zip_build(task, other) is None, other
