"""The repeated-detection search run again (orchestrations.repeat_search), replayed by the real Durable SDK."""
from __future__ import annotations

from typing import Any

from core import contracts as c
from core.contracts import Stage
from core.repeats import RepeatOptions
from core.settings import OrchestrationKnobs
from gpu_batch.layout import REPEAT_SEARCH_WORK
from orchestrations.repeat_search import search_repeats_again
from orchestrations.retries import STORAGE_RETRY
from tests.orchestrations.replay import T0, run_orchestrator

TASK = "task-0123456789abcdef0123"
OPTIONS = RepeatOptions(occurrence_threshold=8, iou_threshold=0.8).to_dict()
PREVIEWS: c.PreviewsOutput = {"container": "$web", "counts": {"detections": 5, "repeats": 4}}


def search_input(per_part: int = 250, per_group: int = 1000) -> c.RepeatSearchInput:
    knobs = OrchestrationKnobs(merge_images_per_part=per_part, repeat_search_detections_per_group=per_group)
    return {"task_id": TASK, "model": "MDV5A", "request_name": "site A", "search": "s20250101T000000Z-abcdef",
            "options": OPTIONS, "knobs": knobs.to_dict()}


def script(fail: dict[tuple[str, int], int] | None = None, groups: int = 3,
           ranked: c.RankRepeatsOutput | None = None) -> Any:
    """Scripted activities; ``fail[(name, part or group)]`` = how many calls of that one fail first."""
    left = dict(fail or {})

    def answer(name: str, payload: Any) -> Any:
        key = (name, payload.get("part", payload.get("group", -1)))
        if left.get(key, 0) > 0:
            left[key] -= 1
            raise ConnectionError(f"{name} {key[1]}: storage throttled")
        if name == c.READ_ENUMERATION:
            return {"images": 1000, "shards": 100}
        if name == c.SEARCH_PART:
            return {"part": payload["part"], "detections_considered": 7}
        if name == c.PLAN_SEARCH:
            return {"groups": groups}
        if name == c.SEARCH_REPEATS:
            return {"group": payload["group"], "locations": 1}
        if name == c.RANK_REPEATS:
            return ranked or {"locations": 4}
        if name == c.CLEAN_MERGE_WORK:
            return {"deleted": 9}
        if name == c.PREVIEWS:
            return PREVIEWS
        raise AssertionError(name)

    return answer


def test_parts_re_read_every_shard_then_the_fan_ins_search_ranks_a_new_list_and_the_page_is_rendered() -> None:
    run = run_orchestrator(search_repeats_again, search_input(), script(), instance_id=f"{TASK}-repeat-search")

    assert run.status == "Completed", run.error
    assert run.activity_names == [c.READ_ENUMERATION, *[c.SEARCH_PART] * 4, c.PLAN_SEARCH, *[c.SEARCH_REPEATS] * 3,
                                  c.RANK_REPEATS, c.CLEAN_MERGE_WORK, c.PREVIEWS]
    assert run.inputs(c.SEARCH_PART) == [
        {"task_id": TASK, "part": p, "first_shard": 25 * p, "shards": 25, "options": OPTIONS,
         "work": REPEAT_SEARCH_WORK} for p in range(4)]  # the fan-in's part plan: every shard exactly once
    assert run.inputs(c.PLAN_SEARCH) == [{"task_id": TASK, "parts": 4, "detections_per_group": 1000,
                                          "work": REPEAT_SEARCH_WORK, "max_folder_detections": 800_000}]
    assert run.inputs(c.SEARCH_REPEATS) == [{"task_id": TASK, "group": g, "options": OPTIONS,
                                             "work": REPEAT_SEARCH_WORK} for g in range(3)]
    assert run.inputs(c.RANK_REPEATS) == [{"task_id": TASK, "groups": 3, "detections_considered": 28,
                                           "options": OPTIONS, "work": REPEAT_SEARCH_WORK,
                                           "search": "s20250101T000000Z-abcdef", "searched": T0.isoformat()}]
    assert run.inputs(c.CLEAN_MERGE_WORK) == [{"task_id": TASK, "variant": REPEAT_SEARCH_WORK}]
    # the page, only while published (pages deleted or expired stay off the website)
    assert run.inputs(c.PREVIEWS) == [{"task_id": TASK, "model": "MDV5A", "request_name": "site A",
                                       "only_if_published": True}]
    assert run.stages == [Stage.searching, Stage.publishing, Stage.completed]
    assert run.output == {
        "stage": Stage.completed, "started": T0.isoformat(), "finished": T0.isoformat(),
        "search": "s20250101T000000Z-abcdef", "options": OPTIONS, "parts": 4, "groups": 3,
        "detections_considered": 28, "locations": 4, "previews": PREVIEWS}
    assert run.custom_status == run.output


def test_a_failed_part_or_group_is_called_again_but_finished_ones_are_not() -> None:
    run = run_orchestrator(search_repeats_again, search_input(), script({(c.SEARCH_PART, 1): 1,
                                                                          (c.SEARCH_REPEATS, 2): 2}))

    assert run.status == "Completed", run.error
    parts = [p["part"] for p in run.inputs(c.SEARCH_PART)]
    assert [parts.count(p) for p in range(4)] == [1, 2, 2, 2]  # 0 had finished when 1's failure surfaced
    groups = [p["group"] for p in run.inputs(c.SEARCH_REPEATS)]
    assert [groups.count(g) for g in range(3)] == [1, 1, 3]
    assert run.output["locations"] == 4 and run.output["detections_considered"] == 28  # each part counted once


def test_a_search_that_keeps_failing_fails_before_the_list_is_replaced() -> None:
    run = run_orchestrator(search_repeats_again, search_input(), script({(c.SEARCH_REPEATS, 0): STORAGE_RETRY.attempts}))

    assert run.status == "Failed" and "storage throttled" in (run.error or "")
    assert c.RANK_REPEATS not in run.activity_names and c.PREVIEWS not in run.activity_names
    assert run.stages == [Stage.searching]


def test_no_eligible_detection_still_writes_an_empty_list_and_a_failed_cleanup_does_not_fail_it() -> None:
    run = run_orchestrator(search_repeats_again, search_input(per_part=100_000),
                           script({(c.CLEAN_MERGE_WORK, -1): STORAGE_RETRY.attempts}, groups=0))

    assert run.status == "Completed", run.error
    assert len(run.inputs(c.SEARCH_PART)) == 1 and c.SEARCH_REPEATS not in run.activity_names
    assert run.inputs(c.RANK_REPEATS)[0]["groups"] == 0
    assert run.activity_names[-1] == c.PREVIEWS and run.output["stage"] == Stage.completed
    assert f"tasks/{TASK}/merge.repeat-search/" in run.output["work_left"]  # said, with how to delete them
    assert "--source $TRAPBATCH_CONTAINER" in run.output["work_left"]
    assert "--auth-mode login" in run.output["work_left"]  # the account takes no shared key


def test_the_options_folder_cap_reaches_the_plan_and_the_folders_left_out_are_counted_in_the_status() -> None:
    capped = {**search_input(), "options": RepeatOptions(max_folder_detections=2_500_000).to_dict()}
    run = run_orchestrator(search_repeats_again, capped,
                           script(ranked={"locations": 4, "folders_skipped": 3, "detections_skipped": 9_000_000}))

    assert run.status == "Completed", run.error
    assert run.inputs(c.PLAN_SEARCH)[0]["max_folder_detections"] == 2_500_000
    assert (run.output["folders_skipped"], run.output["detections_skipped"]) == (3, 9_000_000)
    # a search started before the cap existed has no such option: the plan takes the default
    older = {**search_input(), "options": {k: v for k, v in OPTIONS.items() if k != "max_folder_detections"}}
    run = run_orchestrator(search_repeats_again, older, script())
    assert run.status == "Completed" and "max_folder_detections" not in run.inputs(c.PLAN_SEARCH)[0]
