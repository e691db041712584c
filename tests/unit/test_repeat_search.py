"""POST /api/tasks/{id}/repeats/search: its options (MegaDetector's RDE phase 1), their bounds, and the list ids."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from core.errors import RequestInvalid
from core.ids import repeat_search_id, repeat_search_instance_id
from core.repeats import ORIGINAL_SEARCH, RepeatOptions, list_search_id, search_folder
from core.requests import parse_repeat_removal, parse_repeat_search, repeat_search_fields, requested_list


def test_an_empty_body_is_megadetectors_defaults_which_the_merge_used() -> None:
    assert parse_repeat_search({}) == RepeatOptions() == parse_repeat_search(None)
    assert repeat_search_fields(RepeatOptions()) == {
        "occurrence_threshold": 20, "iou_threshold": 0.9, "confidence_min": 0.1, "confidence_max": 1.0,
        "min_suspicious_detection_size": 0.0, "max_suspicious_detection_size": 0.2, "max_folder_detections": 800_000}


def test_the_folder_cap_left_out_is_the_apps_and_is_refused_past_what_one_activity_can_search() -> None:
    """max_folder_detections: the caller's default (TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS) when left out; from 1 to
    3,000,000, the most one activity searches in its time limit and memory (the error says so)."""
    assert parse_repeat_search({}, 123_456).max_folder_detections == 123_456
    assert parse_repeat_search({"max_folder_detections": None}, 5).max_folder_detections == 5
    assert parse_repeat_search({"max_folder_detections": 3_000_000}).max_folder_detections == 3_000_000
    assert parse_repeat_search({"max_folder_detections": 1}).max_folder_detections == 1
    with pytest.raises(RequestInvalid) as err:
        parse_repeat_search({"max_folder_detections": 3_000_001})
    assert "at most 3000000" in err.value.message and "30-minute limit" in err.value.hint
    assert "subfolders" in err.value.hint
    for bad in (0, -5, 2.5, "10", True):
        with pytest.raises(RequestInvalid, match="'max_folder_detections' must be an integer of at least 1"):
            parse_repeat_search({"max_folder_detections": bad})


def test_each_field_sets_its_option_and_the_rest_stay_default() -> None:
    o = parse_repeat_search({"occurrence_threshold": 8, "iou_threshold": 0.8, "confidence_min": 0.2,
                             "confidence_max": 0.9, "min_suspicious_detection_size": 0.001,
                             "max_suspicious_detection_size": 0.5, "max_folder_detections": 1_000_000})
    assert (o.occurrence_threshold, o.iou_threshold, o.confidence_min, o.confidence_max, o.min_area, o.max_area,
            o.max_folder_detections) == (8, 0.8, 0.2, 0.9, 0.001, 0.5, 1_000_000)
    assert o.files_listed == RepeatOptions().files_listed
    assert parse_repeat_search({"iou_threshold": 1}) == RepeatOptions(iou_threshold=1.0)
    assert repeat_search_fields(parse_repeat_search(repeat_search_fields(o))) == repeat_search_fields(o)  # round trip


@pytest.mark.parametrize("body, message", [
    ({"occurrence_threshold": 1}, "'occurrence_threshold' must be at least 2"),
    ({"occurrence_threshold": 1_000_001}, "at most 1000000"),
    ({"occurrence_threshold": 2.5}, "must be an integer"),
    ({"occurrence_threshold": True}, "must be an integer"),
    ({"iou_threshold": 0.3}, "'iou_threshold' must be a number from 0.5 to 1.0"),
    ({"iou_threshold": float("nan")}, "'iou_threshold' must be a number"),
    ({"confidence_min": -0.01}, "'confidence_min' must be a number from 0.0 to 1.0"),
    ({"confidence_max": "1"}, "'confidence_max' must be a number"),
    ({"max_suspicious_detection_size": 0}, "'max_suspicious_detection_size' must be a number above 0.0 to 1.0"),
    ({"confidence_min": 0.6, "confidence_max": 0.5}, "'confidence_min' (0.6) is above 'confidence_max' (0.5)"),
    ({"min_suspicious_detection_size": 0.3}, "'min_suspicious_detection_size' (0.3) is above"),
    ({"occurrenceThreshold": 10}, "unknown field(s) ['occurrenceThreshold']"),
    ([10], "must be a JSON object"),
])
def test_bad_options_are_refused_with_the_field_and_what_to_do(body: Any, message: str) -> None:
    with pytest.raises(RequestInvalid) as err:
        parse_repeat_search(body)
    assert message in err.value.message and err.value.hint and err.value.status_code == 400


def test_the_list_id_of_the_merges_list_and_of_a_search_run_again() -> None:
    assert list_search_id({"locations": []}) == ORIGINAL_SEARCH == "merge"
    sid = repeat_search_id(datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc), "a1b2c3")
    assert sid == "s20250304T050607Z-a1b2c3" and list_search_id({"search": sid}) == sid
    assert repeat_search_instance_id("task-0123456789abcdef0123") == "task-0123456789abcdef0123-repeat-search"


def test_a_removal_may_name_its_list_and_nothing_else_new() -> None:
    assert requested_list({"remove": "all"}) is None and requested_list({"remove": "all", "search": None}) is None
    assert requested_list({"keep": [], "search": "s1"}) == "s1"
    assert parse_repeat_removal({"remove": ["r00001"], "search": "s1"}, ["r00001"]) == ["r00001"]
    for bad in (5, "", "x" * 101, "a\nb"):
        with pytest.raises(RequestInvalid, match="'search' must be the list's search id"):
            requested_list({"remove": "all", "search": bad})
    with pytest.raises(RequestInvalid, match="unknown field"):
        parse_repeat_removal({"remove": "all", "etag": "x"}, ["r00001"])


def test_options_survive_the_document_and_a_stricter_threshold_keeps_a_subset() -> None:
    """The repeats document records the options (to_dict); from_dict gives them back for the removal's matching."""
    o = RepeatOptions(occurrence_threshold=5, iou_threshold=0.7, max_area=0.4)
    assert RepeatOptions.from_dict(o.to_dict()) == o and RepeatOptions.from_dict({}) == RepeatOptions()
    rows = [(f"f{i}.jpg", "1", 0.5, 0.5, 0.1, 0.1, 0.5) for i in range(12)]
    rows += [(f"f{i}.jpg", "1", 0.1, 0.1, 0.05, 0.05, 0.5) for i in range(6)]
    loose = search_folder("cam", rows, RepeatOptions(occurrence_threshold=5))
    strict = search_folder("cam", rows, RepeatOptions(occurrence_threshold=10))
    assert [r["count"] for r in loose] == [12, 6] and [r["count"] for r in strict] == [12]


def test_a_search_or_removal_in_flight_makes_the_other_wait() -> None:
    from api.repeat_search import ensure_idle
    from core.errors import RepeatsBusy

    task = "task-0123456789abcdef0123"
    ensure_idle(task, None, None)
    ensure_idle(task, {"runtime_status": "Completed"}, {"runtime_status": "Failed", "search": "s1"})
    for removal, searching, needle in (({"runtime_status": "Running"}, None, "removal"),
                                       (None, {"runtime_status": "Pending", "search": "s2"}, "search of task"),
                                       (None, {"runtime_status": "ContinuedAsNew"}, "search of task")):
        with pytest.raises(RepeatsBusy, match=needle) as err:
            ensure_idle(task, removal, searching)
        assert err.value.status_code == 409 and "GET /api/tasks/" in err.value.hint


def test_a_removal_must_name_the_current_list() -> None:
    from api.repeat_search import current_list, list_fields
    from core.errors import RepeatListChanged

    task = "task-0123456789abcdef0123"
    merged = {"options": RepeatOptions().to_dict(), "locations": []}
    again = {"search": "s2", "searched": "2025-01-01T00:00:00+00:00",
             "options": RepeatOptions(occurrence_threshold=5).to_dict(), "locations": []}
    assert current_list({"remove": "all"}, merged, task) == "merge"
    assert current_list({"remove": "all", "search": "merge"}, merged, task) == "merge"
    assert current_list({"keep": [], "search": "s2"}, again, task) == "s2"
    for body, found in (({"remove": "all"}, again), ({"remove": "all", "search": "s1"}, again),
                        ({"remove": "all", "search": "s2"}, merged)):
        with pytest.raises(RepeatListChanged) as err:
            current_list(body, found, task)
        assert err.value.status_code == 409 and "choose from its list" in err.value.hint
    assert list_fields(again) == {"search": "s2", "searched": "2025-01-01T00:00:00+00:00",
                                  "search_options": repeat_search_fields(RepeatOptions(occurrence_threshold=5)),
                                  "skipped_folders": None}
    assert list_fields(merged)["search"] == "merge" and list_fields(merged)["searched"] is None
    skipped = {"folders": 1, "detections": 900_000, "listed": [{"folder": "cam", "detections": 900_000}], "more": 0,
               "hint": "split it"}
    assert list_fields({**merged, "skipped_folders": skipped})["skipped_folders"] == skipped


def test_a_list_made_before_the_folder_cap_is_not_shown_with_one() -> None:
    """A repeats document of the release before searched every folder: its options have no max_folder_detections,
    and today's default (800,000) must not be shown as what it used (GET .../repeats, the page)."""
    from core.requests import recorded_search_fields

    older = {"occurrence_threshold": 20, "iou_threshold": 0.9, "confidence_min": 0.1, "confidence_max": 1.0,
             "min_area": 0.0, "max_area": 0.2, "files_listed": 10}
    assert "max_folder_detections" not in recorded_search_fields(older)
    assert recorded_search_fields(older) == {k: v for k, v in repeat_search_fields(RepeatOptions()).items()
                                             if k != "max_folder_detections"}
    assert recorded_search_fields(RepeatOptions(max_folder_detections=5).to_dict())["max_folder_detections"] == 5


def test_a_search_recorded_before_the_folder_cap_takes_the_apps_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan whose input was recorded by the release before (no max_folder_detections) takes the app's
    TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS, not the built-in default."""
    import activities.repeat_search as rs
    from core.settings import Settings

    seen: list[Any] = []
    monkeypatch.setattr(rs, "plan_groups", lambda *args: seen.append(args[-1]) or 3)
    settings = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS": "1234"})
    payload: Any = {"task_id": "task-1", "parts": 2, "detections_per_group": 10, "work": "w"}
    store: Any = None  # plan_groups, which reads it, is replaced
    assert rs.run_plan_search(payload, settings, store) == {"groups": 3}
    assert rs.run_plan_search({**payload, "max_folder_detections": 9}, settings, store) == {"groups": 3}
    assert seen == [1234, 9]
