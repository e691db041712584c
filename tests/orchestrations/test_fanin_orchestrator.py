"""The parallel fan-in (orchestrations.fanin), replayed by the real Durable SDK with scripted activities."""
from __future__ import annotations

from typing import Any

import pytest

from core import contracts as c
from core.settings import OrchestrationKnobs
from orchestrations.fanin import fan_in
from orchestrations.retries import STORAGE_RETRY
from tests.orchestrations.replay import T0, run_orchestrator

TASK = "task-0123456789abcdef0123"


def merge_only(context: Any) -> Any:
    d = context.get_input()
    return (yield from fan_in(context, TASK, "MDV5A", d["images"], d["shards"],
                              OrchestrationKnobs(merge_images_per_part=d["per_part"],
                                                 merge_max_parts=d.get("max_parts", 0))))


def part_output(payload: Any) -> c.MergePartOutput:
    n = 10 * payload["shards"]  # every shard holds 10 images here
    return {"part": payload["part"], "images": n, "failed": payload["shards"], "with_detections": 2, "detections": 3,
            "empty": n - 2 - payload["shards"], "missing": 0, "failure_reasons": {"undecodable": payload["shards"]},
            "json_bytes": 100 * n, "csv_bytes": 40 * n, "detections_considered": 5, "marked": 0}


def script(fail: dict[tuple[str, int], int] | None = None, groups: int = 3, exports_parts: bool = True,
           one_part: bool = False, ranked: c.RankRepeatsOutput | None = None) -> Any:
    """Scripted fan-in activities; ``fail[(name, part or group)]`` = how many calls of that one fail first."""
    left = dict(fail or {})

    def answer(name: str, payload: Any) -> Any:
        key = (name, payload.get("part", payload.get("group", -1)))
        if left.get(key, 0) > 0:
            left[key] -= 1
            raise ConnectionError(f"{name} {key[1]}: storage throttled")
        if name == c.MERGE_PART:
            return part_output(payload)
        if name == c.MERGE_COMBINE:
            out: c.MergeCombineOutput = {"container": "trapbatch", "search_groups": groups}
            if exports_parts:
                out["exports_parts"] = True
            if one_part:
                out["exports_one_part"] = True
            return out
        if name == c.SEARCH_REPEATS:
            return {"group": payload["group"], "locations": payload["group"]}
        if name == c.RANK_REPEATS:
            return ranked or {"locations": 3}
        if name == c.CLEAN_MERGE_WORK:
            return {"deleted": 1}
        raise AssertionError(name)

    return answer


def test_a_task_of_this_release_merges_in_at_most_safe_max_parts_whatever_the_knob() -> None:
    """A TRAPBATCH_MERGE_IMAGES_PER_PART of a few images made one part per shard up to core.fanin.MAX_PARTS (10,000 at
    ten million images): the task's execution then scheduled ~60,000 calls on the first round and could pass the
    extension's maxOrchestrationActions (100,000, devhost row 47) with a retry round: the extension drops every
    action past it, leaving the task Running forever (devhost fails it). A task
    started with ``merge_max_parts`` (Settings.from_env: SAFE_MAX_PARTS) plans at most that many, each shard once; one
    whose input lacks it plans as it ran (replay)."""
    from core.fanin import SAFE_MAX_PARTS
    from core.settings import Settings

    assert Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).knobs.merge_max_parts \
        == SAFE_MAX_PARTS
    assert OrchestrationKnobs().merge_max_parts == 0  # an input of before the knob
    # the knob as the orchestrator applies it, small here (the replay of 1,000 parts takes minutes)
    capped = run_orchestrator(merge_only, {"images": 300, "shards": 30, "per_part": 1, "max_parts": 7}, script())
    assert capped.status == "Completed", capped.error
    parts = capped.inputs(c.MERGE_PART)
    assert len(parts) == 6 and [s for p in parts for s in range(p["first_shard"], p["first_shard"] + p["shards"])
                                ] == list(range(30))
    legacy = run_orchestrator(merge_only, {"images": 300, "shards": 30, "per_part": 1}, script())
    assert legacy.status == "Completed", legacy.error
    assert len(legacy.inputs(c.MERGE_PART)) == 30  # as a task started before the knob planned it (MAX_PARTS)


def test_parts_cover_every_shard_once_in_ranges_of_about_the_knob() -> None:
    run = run_orchestrator(merge_only, {"images": 1000, "shards": 100, "per_part": 250}, script())

    assert run.status == "Completed", run.error
    parts = run.inputs(c.MERGE_PART)
    assert [(p["part"], p["first_shard"], p["shards"]) for p in parts] == [(i, 25 * i, 25) for i in range(4)]
    combine = run.inputs(c.MERGE_COMBINE)[0]
    assert combine["json_bytes"] == [25_000] * 4 and combine["csv_bytes"] == [10_000] * 4
    assert combine["images"] == 1000 and combine["failure_reasons"] == {"undecodable": 100}
    assert combine["completed_at"] == T0.isoformat() and combine["variant"] == ""
    assert combine["max_folder_detections"] == 800_000  # TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS: the plan's cap
    assert run.inputs(c.SEARCH_REPEATS) == [{"task_id": TASK, "group": g} for g in range(3)]
    assert run.inputs(c.RANK_REPEATS) == [{"task_id": TASK, "groups": 3, "detections_considered": 20}]
    assert run.output == {
        "results_blob": f"results/{TASK}/detections.json", "csv_blob": f"results/{TASK}/detections.csv",
        "repeats_blob": f"results/{TASK}/repeated-detections.json", "failure_reasons": {"undecodable": 100},
        "container": "trapbatch", "images": 1000, "failed": 100, "with_detections": 8, "detections": 12,
        "empty": 892, "missing": 0, "repeated_locations": 3,
        "parts": [[25 * i, 25, 25_000] for i in range(4)]}


def test_a_combine_that_fans_one_parts_exports_out_says_so_in_the_merge_output() -> None:
    for one_part in (True, False):  # False: a combine recorded before; its replay keeps the single exports call
        run = run_orchestrator(merge_only, {"images": 100, "shards": 10, "per_part": 250},
                               script(one_part=one_part))

        assert run.status == "Completed", run.error
        assert run.output["parts"] == [[0, 10, 10_000]]
        assert run.output.get("exports_fan_out", False) is one_part


def test_a_combine_recorded_before_the_exports_fan_out_gives_no_parts_so_the_single_exports_call_replays() -> None:
    run = run_orchestrator(merge_only, {"images": 1000, "shards": 100, "per_part": 250}, script(exports_parts=False))

    assert run.status == "Completed", run.error
    assert "parts" not in run.output and run.output["images"] == 1000


def test_a_failed_part_is_called_again_after_a_durable_timer_but_finished_parts_are_not() -> None:
    run = run_orchestrator(merge_only, {"images": 400, "shards": 40, "per_part": 100},
                           script({(c.MERGE_PART, 2): 2, (c.SEARCH_REPEATS, 1): 1}))

    assert run.status == "Completed", run.error
    calls = [p["part"] for p in run.inputs(c.MERGE_PART)]
    # the harness completes activities in order: parts 0 and 1 had succeeded when part 2's failure surfaced, part 3
    # was still running (so it is called again with part 2: harmless, the parts are idempotent)
    assert [calls.count(p) for p in range(4)] == [1, 1, 3, 3]
    assert calls == [0, 1, 2, 3, 2, 3, 2, 3]
    groups = [p["group"] for p in run.inputs(c.SEARCH_REPEATS)]
    assert [groups.count(g) for g in range(3)] == [1, 2, 2]
    assert [t.delay_s for t in run.timers] == [STORAGE_RETRY.delay_s(1), STORAGE_RETRY.delay_s(2),
                                               STORAGE_RETRY.delay_s(1)]
    assert run.output["images"] == 400 and run.output["repeated_locations"] == 3


def test_a_part_failing_every_attempt_fails_the_merge_with_its_message() -> None:
    run = run_orchestrator(merge_only, {"images": 40, "shards": 4, "per_part": 10},
                           script({(c.MERGE_PART, 1): STORAGE_RETRY.attempts}))

    assert run.status == "Failed"
    assert "storage throttled" in (run.error or "")
    assert [p["part"] for p in run.inputs(c.MERGE_PART)].count(1) == STORAGE_RETRY.attempts
    assert c.MERGE_COMBINE not in run.activity_names


def test_no_search_groups_still_writes_the_repeats_document() -> None:
    run = run_orchestrator(merge_only, {"images": 40, "shards": 4, "per_part": 10_000}, script(groups=0))

    assert run.status == "Completed", run.error
    assert c.SEARCH_REPEATS not in run.activity_names
    assert run.inputs(c.RANK_REPEATS) == [{"task_id": TASK, "groups": 0, "detections_considered": 5}]


def test_the_work_blobs_are_cleaned_last_and_a_failed_cleanup_does_not_fail_the_merge() -> None:
    run = run_orchestrator(merge_only, {"images": 40, "shards": 4, "per_part": 20},
                           script({(c.CLEAN_MERGE_WORK, -1): STORAGE_RETRY.attempts}))

    assert run.status == "Completed", run.error
    assert run.activity_names[-1] == c.CLEAN_MERGE_WORK
    assert run.inputs(c.CLEAN_MERGE_WORK) == [{"task_id": TASK}] * STORAGE_RETRY.attempts
    assert run.output["repeated_locations"] == 3
    assert run.output["work_left"].startswith("work blobs were not deleted")
    assert f"--source trapbatch --pattern \"tasks/{TASK}/merge/*\"'" in run.output["work_left"]


@pytest.mark.parametrize("failing", [c.SEARCH_REPEATS, c.RANK_REPEATS])
def test_a_search_failing_every_attempt_leaves_the_merge_with_its_results_and_the_error(failing: str) -> None:
    """The results, CSV and sample are written before the search, which only reports on them: a group (or the
    ranking) that fails after its retries must not fail the task after all its GPU work. The merge returns without
    repeated_locations, with the error's first line; the work is still cleaned."""
    key = (failing, 1 if failing == c.SEARCH_REPEATS else -1)
    run = run_orchestrator(merge_only, {"images": 400, "shards": 40, "per_part": 100},
                           script({key: STORAGE_RETRY.attempts}))

    assert run.status == "Completed", run.error
    assert run.output["repeat_search_error"] == f"{failing} {key[1]}: storage throttled"
    assert "repeated_locations" not in run.output and run.output["images"] == 400
    assert (c.RANK_REPEATS in run.activity_names) == (failing == c.RANK_REPEATS)
    assert run.activity_names[-1] == c.CLEAN_MERGE_WORK


def test_folders_the_plan_left_out_are_counted_in_the_merge_output_from_the_ranking() -> None:
    run = run_orchestrator(
        merge_only, {"images": 40, "shards": 4, "per_part": 20},
        script(ranked={"locations": 1, "folders_skipped": 2, "detections_skipped": 1_900_000}))

    assert run.status == "Completed", run.error
    assert (run.output["repeated_locations"], run.output["repeat_folders_skipped"],
            run.output["repeat_detections_skipped"]) == (1, 2, 1_900_000)
    assert "repeat_search_error" not in run.output
