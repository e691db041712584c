"""The exports step (orchestrations.exports) and its wiring, replayed by the real Durable SDK with scripted activities."""
from __future__ import annotations

from typing import Any

from core import contracts as c
from gpu_batch.layout import REPEATS_REMOVED
from orchestrations.exports import exports
from orchestrations.repeats import remove_repeats
from tests.orchestrations.replay import run_orchestrator

TASK = "task-0123456789abcdef0123"
PREFIX = f"results/{TASK}/exports/"
OUTPUT: c.ExportsOutput = {
    "container": "trapbatch", "prefix": PREFIX, "coco": PREFIX + "coco.json", "camtrap_dp": PREFIX + "camtrap-dp/",
    "zooniverse": PREFIX + "zooniverse/", "zooniverse_batches": 0, "threshold": 0.2, "images": 30, "annotations": 9,
    "observations": 29, "deployments": 2, "zooniverse_subjects": 12, "sizes_unknown": 0}
SINGLE: c.ExportsOutput = {**OUTPUT, "zooniverse_batches": 1}
# [first shard, shards, json bytes] per merge part; part 2 wrote no entries (all its shards empty)
PARTS = [[0, 25, 1000], [25, 25, 1000], [50, 25, 0], [75, 25, 500]]


def exports_only(context: Any) -> Any:
    d = context.get_input()
    return (yield from exports(context, TASK, d["variant"], d["merged"]))


def merged(parts: list[list[int]] | None) -> c.MergeOutput:
    out: c.MergeOutput = {"results_blob": f"results/{TASK}/detections.json", "csv_blob": "", "repeats_blob": "",
                          "container": "trapbatch", "images": 30, "failed": 0, "with_detections": 9,
                          "detections": 9, "empty": 21, "missing": 0}
    if parts is not None:
        out["parts"] = parts
    return out


def part_output(payload: Any) -> c.ExportsPartOutput:
    return {"part": payload["part"], "images": 10, "annotations": 3, "observations": 10, "eligible": 4,
            "sizes_unknown": 0, "bytes": {"coco_images": 100}, "deployments": [["d1", "", "", 0, "", None, None, ""]]}


def script(fail: dict[int, int] | None = None, conflict: bool = False) -> Any:
    """Scripted exports activities; ``fail[part]`` = how many calls of that exports part fail first."""
    left = dict(fail or {})

    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            if left.get(payload["part"], 0) > 0:
                left[payload["part"]] -= 1
                raise ConnectionError(f"part {payload['part']}: storage throttled")
            return part_output(payload)
        if name == c.EXPORTS_COMBINE:
            return {"conflict": True} if conflict else {"conflict": False, "output": OUTPUT}
        if name == c.EXPORTS_ZOONIVERSE:
            return 1
        if name == c.EXPORTS:
            return SINGLE
        raise AssertionError(name)

    return answer


def test_a_combine_recorded_before_the_zooniverse_fan_out_replays_into_the_single_zooniverse_activity() -> None:
    """The combine's recorded output has no ``zooniverse_parts``: the history goes on as it was written."""
    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, script())

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_COMBINE, c.EXPORTS_ZOONIVERSE]
    # offsets from just after the images array's "[": the first fragment without its leading comma; part 2 is empty
    assert run.inputs(c.EXPORTS_PART) == [
        {"task_id": TASK, "variant": "", "part": 0, "first_shard": 0, "offset": 0, "length": 999, "shards": 25},
        {"task_id": TASK, "variant": "", "part": 1, "first_shard": 25, "offset": 999, "length": 1000, "shards": 25},
        {"task_id": TASK, "variant": "", "part": 3, "first_shard": 75, "offset": 1999, "length": 500, "shards": 25}]
    assert run.inputs(c.EXPORTS_COMBINE) == [
        {"task_id": TASK, "variant": "", "parts": [part_output({"part": p}) for p in (0, 1, 3)]}]
    assert run.inputs(c.EXPORTS_ZOONIVERSE) == [{"task_id": TASK, "variant": "", "eligible": 12}]
    assert run.output == {**OUTPUT, "zooniverse_batches": 1}


def test_the_single_zooniverse_activitys_counts_replace_the_combines_recorded_count() -> None:
    """A combine recorded before the Zooniverse fan-out counted photos cut short among its subjects, which the single
    activity leaves out: the output's subjects are the rows it wrote, and it says how many were cut short. Nothing
    scheduled changes (the same activities, the same inputs)."""
    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_ZOONIVERSE:
            return {"batches": 1, "subjects": 11, "cut_short": 1}
        return script()(name, payload)

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, answer)

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_COMBINE, c.EXPORTS_ZOONIVERSE]
    assert run.inputs(c.EXPORTS_ZOONIVERSE) == [{"task_id": TASK, "variant": "", "eligible": 12}]
    assert run.output == {**OUTPUT, "zooniverse_batches": 1, "zooniverse_subjects": 11, "zooniverse_cut_short": 1}


def test_a_failing_part_is_called_again_alone_after_a_durable_timer() -> None:
    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, script(fail={3: 2}))

    assert run.status == "Completed", run.error
    assert [p["part"] for p in run.inputs(c.EXPORTS_PART)] == [0, 1, 3, 3, 3]
    assert len(run.orchestrator_timers) == 2
    assert run.inputs(c.EXPORTS_COMBINE)[0]["parts"] == [part_output({"part": p}) for p in (0, 1, 3)]
    assert run.output["zooniverse_batches"] == 1


def test_parts_failing_past_their_retries_fail_the_step() -> None:
    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, script(fail={1: 99}))

    assert run.status == "Failed" and "part 1: storage throttled" in (run.error or "")
    assert c.EXPORTS_COMBINE not in run.activity_names and c.EXPORTS not in run.activity_names


def test_a_combine_answering_conflict_runs_the_single_exports_activity_instead() -> None:
    """A conflict without ``redo``: what a combine answered before parts were run again (replayed as recorded)."""
    run = run_orchestrator(exports_only, {"variant": REPEATS_REMOVED, "merged": merged(PARTS)}, script(conflict=True))

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_COMBINE, c.EXPORTS]
    assert run.inputs(c.EXPORTS) == [{"task_id": TASK, "variant": REPEATS_REMOVED}]
    assert run.output == SINGLE


def test_a_combine_naming_parts_to_redo_runs_them_again_from_the_tasks_first_facts_then_combines_again() -> None:
    """Parts 1 and 3 saw other first coordinates for a deployment: they run again (``given``), the combine runs
    again over every part's latest output, and the exports go on without the single activity."""
    combines: list[Any] = []

    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            out = part_output(payload)
            return {**out, "images": 11} if payload.get("given") else out
        if name == c.EXPORTS_COMBINE:
            combines.append(payload)
            return {"conflict": True, "redo": [1, 3]} if len(combines) == 1 else {"conflict": False, "output": OUTPUT}
        if name == c.EXPORTS_ZOONIVERSE:
            return 1
        raise AssertionError(name)

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, answer)

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_COMBINE] + [c.EXPORTS_PART] * 2 + [
        c.EXPORTS_COMBINE, c.EXPORTS_ZOONIVERSE]
    assert run.inputs(c.EXPORTS_PART)[3:] == [
        {"task_id": TASK, "variant": "", "part": 1, "first_shard": 25, "offset": 999, "length": 1000, "shards": 25,
         "given": True},
        {"task_id": TASK, "variant": "", "part": 3, "first_shard": 75, "offset": 1999, "length": 500, "shards": 25,
         "given": True}]
    assert [p["images"] for p in combines[1]["parts"]] == [10, 11, 11]  # parts 0, 1 (again), 3 (again)
    assert c.EXPORTS not in run.activity_names and run.output == {**OUTPUT, "zooniverse_batches": 1}


def test_one_part_or_no_parts_in_a_merge_output_recorded_before_the_one_part_fan_out_take_the_single_activity(
        ) -> None:
    for parts in ([[0, 100, 2500]], [[0, 50, 2500], [50, 50, 0]], None):  # None: a history from before the parts
        run = run_orchestrator(exports_only, {"variant": "", "merged": merged(parts)}, script())

        assert run.status == "Completed", run.error
        assert run.activity_names == [c.EXPORTS], parts
        assert run.output == SINGLE


def test_one_part_fans_out_when_the_merge_says_so_and_the_single_activity_never_runs() -> None:
    """The single exports activity spools every format to the instance's local disk (core.scratch); a merge from
    the combine that says ``exports_one_part`` fans one part's exports out too (the parts stream to blobs)."""
    for parts in ([[0, 100, 2500]], [[0, 50, 2500], [50, 50, 0]]):
        one = {**merged(parts), "exports_fan_out": True}
        run = run_orchestrator(exports_only, {"variant": "", "merged": one}, fan_script(1, {0: 5}))

        assert run.status == "Completed", run.error
        assert c.EXPORTS not in run.activity_names
        assert [p["part"] for p in run.inputs(c.EXPORTS_PART)] == [0]
        assert run.activity_names[:2] == [c.EXPORTS_PART, c.EXPORTS_COMBINE]
        assert [p["rows"] for p in run.inputs(c.EXPORTS_ZOONIVERSE_PART)] == [5]
        assert run.output["zooniverse_batches"] == 1
    no_parts = {**merged(None), "exports_fan_out": True}  # nothing to fan out over: the single activity
    run = run_orchestrator(exports_only, {"variant": "", "merged": no_parts}, script())
    assert run.activity_names == [c.EXPORTS]


def test_the_repeats_removal_fans_out_when_its_combine_gives_parts_and_notes_a_failure_as_exports_error() -> None:
    part = {"images": 300_000, "failed": 0, "with_detections": 1, "detections": 1, "empty": 299_999, "missing": 0,
            "failure_reasons": {}, "json_bytes": 1000, "csv_bytes": 10, "detections_considered": 0, "marked": 1}
    answers: dict[str, Any] = {
        c.READ_ENUMERATION: {"images": 600_000, "shards": 60}, c.MERGE_PART: lambda p: {**part, "part": p["part"]},
        c.MERGE_COMBINE: {"container": "trapbatch", "search_groups": 0, "exports_parts": True},
        c.PREVIEWS: {"container": "$web", "counts": {}}, c.CLEAN_MERGE_WORK: {"deleted": 3},
        c.EXPORTS_PART: part_output, c.EXPORTS_COMBINE: {"conflict": False, "output": OUTPUT},
        c.EXPORTS_ZOONIVERSE: lambda p: (_ for _ in ()).throw(ConnectionError("zooniverse: storage throttled"))}
    removal: c.RepeatsInput = {"task_id": TASK, "model": "MDV5A", "request_name": "", "remove": ["r00002"]}

    run = run_orchestrator(remove_repeats, removal, answers, instance_id=f"{TASK}-repeats")

    assert run.status == "Completed", run.error
    n = len(run.inputs(c.MERGE_PART))
    assert n > 1 and [p["part"] for p in run.inputs(c.EXPORTS_PART)] == list(range(n))
    assert {p["variant"] for p in run.inputs(c.EXPORTS_PART)} == {REPEATS_REMOVED}
    assert c.EXPORTS not in run.activity_names
    assert "zooniverse: storage throttled" in run.output["results"]["exports_error"]
    assert "exports" not in run.output["results"]


# [eligible, rows written] per exports part (0, 1, 3): part 1 has no eligible image
ELIGIBLE = {0: 5, 1: 0, 3: 7}


def fan_script(batches: int, eligible: dict[int, int] | None = None, fail: dict[int, int] | None = None) -> Any:
    """A combine from the Zooniverse fan-out (``zooniverse_parts``); ``fail[part]``: failures of its Zooniverse
    part before it succeeds."""
    counts = dict(ELIGIBLE if eligible is None else eligible)
    left = dict(fail or {})
    total = sum(counts.values())

    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            return {**part_output(payload), "eligible": counts[payload["part"]]}
        if name == c.EXPORTS_COMBINE:
            return {"conflict": False, "zooniverse_parts": True,
                    "output": {**OUTPUT, "zooniverse_subjects": total, "zooniverse_batches": batches}}
        if name == c.EXPORTS_ZOONIVERSE_PART:
            if left.get(payload["part"], 0) > 0:
                left[payload["part"]] -= 1
                raise ConnectionError(f"zooniverse part {payload['part']}: storage throttled")
            return {"part": payload["part"], "rows": payload["rows"], "bytes": 100 * payload["rows"]}
        if name == c.EXPORTS_ZOONIVERSE_COMBINE:
            return payload["count"]
        if name == c.EXPORTS_ZOONIVERSE_CLEAN:
            return 0
        raise AssertionError(name)

    return answer


EVENTS: c.ExportsEventsOutput = {"events": 7, "event_observations": 9, "rows_bytes": 900, "cameras": 2,
                                 "camera_visits": PREFIX + "camera-visits.csv", "link": [0, 3]}


def test_parts_that_link_get_their_events_grouped_once_and_their_rows_linked_before_the_combine() -> None:
    """New parts say ``link``: the events are grouped once, the parts with time-grouped photos are linked in
    parallel (a failing one called again alone), and both combines (before and after a redo) get the same events
    and linked fragments; the events are not grouped again for the redo."""
    combines: list[Any] = []
    link_calls: list[int] = []

    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            return {**part_output(payload), "link": True}
        if name == c.EXPORTS_EVENTS:
            return EVENTS
        if name == c.EXPORTS_LINK_PART:
            link_calls.append(payload["part"])
            if link_calls.count(3) == 1 and payload["part"] == 3:
                raise ConnectionError("part 3: storage throttled")
            # part 0's link recorded before links numbered COCO's images: no images_bytes
            return {"part": payload["part"], "bytes": 100 + payload["part"]} | (
                {"images_bytes": 200 + payload["part"]} if payload["part"] else {})
        if name == c.EXPORTS_COMBINE:
            combines.append(payload)
            return {"conflict": True, "redo": [1]} if len(combines) == 1 else {"conflict": False, "output": OUTPUT}
        if name == c.EXPORTS_ZOONIVERSE:
            return 1
        raise AssertionError(name)

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, answer)

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_EVENTS] + [c.EXPORTS_LINK_PART] * 3 + [
        c.EXPORTS_COMBINE, c.EXPORTS_PART, c.EXPORTS_COMBINE, c.EXPORTS_ZOONIVERSE]
    assert run.inputs(c.EXPORTS_EVENTS) == [{"task_id": TASK, "variant": "", "parts": [0, 1, 3]}]
    assert sorted(link_calls) == [0, 3, 3]  # part 3 again, alone
    assert [(p["events"], p["linked"], p["linked_images"]) for p in combines] == \
        [(EVENTS, [[0, 100], [3, 103]], [[3, 203]])] * 2
    assert run.output == {**OUTPUT, "zooniverse_batches": 1}


def test_a_part_run_again_whose_media_rows_got_stand_in_times_is_linked_again_before_the_combine() -> None:
    """A link that gave photos without a capture time their deployment's first (``media_bytes``) read the part's
    media rows; a redo writes them again (other comments), so that part is linked again, alone, and the second
    combine takes the new fragment; a part run again without stand-in times is not (its own rows are composed)."""
    combines: list[Any] = []
    link_calls: list[int] = []

    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            return {**part_output(payload), "link": True}
        if name == c.EXPORTS_EVENTS:
            return {**EVENTS, "link": [0, 1, 3]}
        if name == c.EXPORTS_LINK_PART:
            link_calls.append(payload["part"])
            n = link_calls.count(payload["part"])
            return {"part": payload["part"], "bytes": 100 * n + payload["part"]} | (
                {"media_bytes": 1000 * n + payload["part"]} if payload["part"] == 1 else {})
        if name == c.EXPORTS_COMBINE:
            combines.append(payload)
            return {"conflict": True, "redo": [1, 3]} if len(combines) == 1 else {"conflict": False, "output": OUTPUT}
        if name == c.EXPORTS_ZOONIVERSE:
            return 1
        raise AssertionError(name)

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, answer)

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_EVENTS] + [c.EXPORTS_LINK_PART] * 3 + [
        c.EXPORTS_COMBINE] + [c.EXPORTS_PART] * 2 + [c.EXPORTS_LINK_PART, c.EXPORTS_COMBINE, c.EXPORTS_ZOONIVERSE]
    assert link_calls == [0, 1, 3, 1]
    assert [(p["linked"], p["linked_media"]) for p in combines] == [
        ([[0, 100], [1, 101], [3, 103]], [[1, 1001]]), ([[0, 100], [1, 201], [3, 103]], [[1, 2001]])]
    assert run.output == {**OUTPUT, "zooniverse_batches": 1}


def test_no_part_with_photos_grouped_by_time_links_nothing() -> None:
    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            return {**part_output(payload), "link": True}
        if name == c.EXPORTS_EVENTS:
            return {**EVENTS, "events": 0, "event_observations": 0, "link": []}
        return script()(name, payload)

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, answer)

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_EVENTS, c.EXPORTS_COMBINE, c.EXPORTS_ZOONIVERSE]
    assert run.inputs(c.EXPORTS_COMBINE)[0]["linked"] == []


def test_a_part_recorded_before_the_events_step_leaves_the_grouping_to_the_combine() -> None:
    """One part's recorded output has no ``link`` (it ran before this release): no events step, no link."""
    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            return part_output(payload) if payload["part"] == 1 else {**part_output(payload), "link": True}
        return script()(name, payload)

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, answer)

    assert run.status == "Completed", run.error
    assert c.EXPORTS_EVENTS not in run.activity_names and c.EXPORTS_LINK_PART not in run.activity_names
    assert "events" not in run.inputs(c.EXPORTS_COMBINE)[0] and "linked" not in run.inputs(c.EXPORTS_COMBINE)[0]


def test_a_combine_with_zooniverse_parts_fans_the_batches_out_over_the_parts_with_eligible_images() -> None:
    run = run_orchestrator(exports_only, {"variant": REPEATS_REMOVED, "merged": merged(PARTS)}, fan_script(3))

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_COMBINE] + [c.EXPORTS_ZOONIVERSE_PART] * 2 + [
        c.EXPORTS_ZOONIVERSE_COMBINE, c.EXPORTS_ZOONIVERSE_CLEAN]
    assert c.EXPORTS_ZOONIVERSE not in run.activity_names and c.EXPORTS not in run.activity_names
    common = {"task_id": TASK, "variant": REPEATS_REMOVED, "eligible": 12, "batches": 3}
    # each part learns its byte range and shards (as its exports part: the merge views' range) and how many eligible
    # images precede it
    assert run.inputs(c.EXPORTS_ZOONIVERSE_PART) == [
        {**common, "part": 0, "first_shard": 0, "offset": 0, "length": 999, "before": 0, "rows": 5, "shards": 25},
        {**common, "part": 3, "first_shard": 75, "offset": 1999, "length": 500, "before": 5, "rows": 7, "shards": 25}]
    assert run.inputs(c.EXPORTS_ZOONIVERSE_COMBINE) == [
        {"task_id": TASK, "variant": REPEATS_REMOVED, "parts": [0, 3], "first": 0, "count": 3}]
    assert run.inputs(c.EXPORTS_ZOONIVERSE_CLEAN) == [{"task_id": TASK, "variant": REPEATS_REMOVED, "batches": 3}]
    assert run.output == {**OUTPUT, "zooniverse_subjects": 12, "zooniverse_batches": 3}


def test_many_batches_are_composed_by_parallel_combines_of_bounded_size() -> None:
    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, fan_script(1500))

    assert run.status == "Completed", run.error
    # two parts with rows: at most ZOONIVERSE_PIECES // (2 + 2) = 500 batches per combine
    assert [(p["first"], p["count"]) for p in run.inputs(c.EXPORTS_ZOONIVERSE_COMBINE)] == [
        (0, 500), (500, 500), (1000, 500)]
    assert run.activity_names[-1] == c.EXPORTS_ZOONIVERSE_CLEAN
    assert run.output["zooniverse_batches"] == 1500


def test_a_failing_zooniverse_part_is_called_again_alone_and_past_its_retries_fails_the_step() -> None:
    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, fan_script(3, fail={3: 1}))

    assert run.status == "Completed", run.error
    assert [p["part"] for p in run.inputs(c.EXPORTS_ZOONIVERSE_PART)] == [0, 3, 3]
    assert len(run.orchestrator_timers) == 1

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, fan_script(3, fail={0: 99}))
    assert run.status == "Failed" and "zooniverse part 0: storage throttled" in (run.error or "")
    assert c.EXPORTS_ZOONIVERSE_COMBINE not in run.activity_names


def test_no_eligible_image_writes_no_batch_but_still_cleans_up() -> None:
    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)},
                           fan_script(0, eligible={0: 0, 1: 0, 3: 0}))

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.EXPORTS_PART] * 3 + [c.EXPORTS_COMBINE, c.EXPORTS_ZOONIVERSE_CLEAN]
    assert run.inputs(c.EXPORTS_ZOONIVERSE_CLEAN) == [{"task_id": TASK, "variant": "", "batches": 0}]
    assert run.output["zooniverse_batches"] == 0


def test_an_image_list_with_captures_gets_manifests_of_captures() -> None:
    """The combine says the list defines captures: every part writes its sorted runs (parts without runs are not
    named to the merge), one combine writes the batches, the clean-up follows; no per-image Zooniverse step runs."""
    base = script()

    def answer(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_COMBINE:
            return {"conflict": False, "zooniverse_parts": True, "zooniverse_captures": True, "output": OUTPUT}
        if name == c.EXPORTS_CAPTURES_PART:
            return {"part": payload["part"], "records": 0 if payload["part"] == 1 else 4,
                    "runs": 0 if payload["part"] == 1 else 1}
        if name == c.EXPORTS_CAPTURES_COMBINE:
            return {"subjects": 3, "images": 8, "batches": 2, "widest": 3}
        if name == c.EXPORTS_ZOONIVERSE_CLEAN:
            return 5
        return base(name, payload)

    run = run_orchestrator(exports_only, {"variant": "", "merged": merged(PARTS)}, answer)

    assert run.status == "Completed", run.error
    assert run.activity_names == ([c.EXPORTS_PART] * 3 + [c.EXPORTS_COMBINE] + [c.EXPORTS_CAPTURES_PART] * 3
                                  + [c.EXPORTS_CAPTURES_COMBINE, c.EXPORTS_ZOONIVERSE_CLEAN])
    assert run.inputs(c.EXPORTS_CAPTURES_PART) == [
        {"task_id": TASK, "variant": "", "part": 0, "first_shard": 0, "offset": 0, "length": 999, "shards": 25},
        {"task_id": TASK, "variant": "", "part": 1, "first_shard": 25, "offset": 999, "length": 1000, "shards": 25},
        {"task_id": TASK, "variant": "", "part": 3, "first_shard": 75, "offset": 1999, "length": 500, "shards": 25}]
    assert run.inputs(c.EXPORTS_CAPTURES_COMBINE) == [{"task_id": TASK, "variant": "", "runs": [[0, 1], [3, 1]]}]
    assert run.inputs(c.EXPORTS_ZOONIVERSE_CLEAN) == [{"task_id": TASK, "variant": "", "batches": 2}]
    assert run.output == {**OUTPUT, "zooniverse_subjects": 3, "zooniverse_batches": 2, "zooniverse_capture_images": 8}


def exports_of_run(context: Any) -> Any:
    d = context.get_input()
    return (yield from exports(context, TASK, d["variant"], d["merged"], run_job=d["run_job"]))


def test_every_exports_call_of_a_run_carries_its_pool_job() -> None:
    """A run terminated and replaced since has its late exports calls refuse to write (``activities.superseded``):
    each names its run's pool job, on every path (fan-out with links and Zooniverse parts, captures, the single
    activity); a call without one (a step of before, or a removal's) is never refused."""
    job = f"{TASK}_r261201120000ab12"
    fan = fan_script(3)

    def linking(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_PART:
            return {**fan(name, payload), "link": True}
        if name == c.EXPORTS_EVENTS:
            return EVENTS
        if name == c.EXPORTS_LINK_PART:
            return {"part": payload["part"], "bytes": 100, "images_bytes": 200}
        return fan(name, payload)

    def captures(name: str, payload: Any) -> Any:
        if name == c.EXPORTS_COMBINE:
            return {"conflict": False, "zooniverse_parts": True, "zooniverse_captures": True, "output": OUTPUT}
        if name == c.EXPORTS_CAPTURES_PART:
            return {"part": payload["part"], "records": 4, "runs": 1}
        if name == c.EXPORTS_CAPTURES_COMBINE:
            return {"subjects": 3, "images": 8, "batches": 2, "widest": 3}
        if name == c.EXPORTS_ZOONIVERSE_CLEAN:
            return 5
        return script()(name, payload)

    names: set[str] = set()
    for parts, answer in ((PARTS, linking), (PARTS, captures), (None, script())):
        run = run_orchestrator(exports_of_run, {"variant": "", "merged": merged(parts), "run_job": job}, answer)
        assert run.status == "Completed", run.error
        assert run.activities and all(call.input["run_job"] == job for call in run.activities)
        names |= set(run.activity_names)
    assert names == {c.EXPORTS_PART, c.EXPORTS_EVENTS, c.EXPORTS_LINK_PART, c.EXPORTS_COMBINE,
                     c.EXPORTS_ZOONIVERSE_PART, c.EXPORTS_ZOONIVERSE_COMBINE, c.EXPORTS_ZOONIVERSE_CLEAN, c.EXPORTS_CAPTURES_PART,
                     c.EXPORTS_CAPTURES_COMBINE, c.EXPORTS}
