"""The preview page's capture-time line (activities.previews._taken_note): when the photos were taken, and a
warning when a camera's clock cannot be right."""
from __future__ import annotations

from typing import Any

import pytest

from activities.previews import _taken_note


def _doc(images: int, captured: int, first: str = "", last: str = "",
         completed: str = "2026-12-01T10:00:00") -> dict[str, Any]:
    return {"images": images, "capture_times": {"images": captured, "first": first, "last": last},
            "info": {"detection_completion_time": completed}}


def test_the_span_is_said_as_a_spreadsheet_reads_a_date() -> None:
    note = _taken_note(_doc(41, 37, "2024:06:01 06:00:00", "2024:06:02 19:05:00"))
    assert note == {"line": "Taken 2024-06-01 06:00:00 to 2024-06-02 19:05:00 (the cameras' clocks, from EXIF): "
                            "37 of 41 images; the rest have no capture time.", "warn": ""}
    assert _taken_note(_doc(1, 1, "2024:06:01 06:00:00", "2024:06:01 06:00:00"))["line"].endswith("1 of 1 image.")


@pytest.mark.parametrize(("first", "last"), [("1999:12:31 23:59:59", "2024:06:01 06:00:00"),  # a clock never set
                                             ("2024:06:01 06:00:00", "2027:01:01 00:00:00")])  # after the detection
def test_a_clock_that_cannot_be_right_is_pointed_out(first: str, last: str) -> None:
    note = _taken_note(_doc(10, 10, first, last))
    assert note is not None and "clocks look wrong" in note["warn"] and "deployments" in note["warn"]
    assert "clock_corrections" in note["warn"] and "only_new" in note["warn"]  # what to do about it


def test_no_capture_time_and_older_samples() -> None:
    note = _taken_note(_doc(5, 0))
    assert note is not None and "No image has a capture time" in note["line"] and not note["warn"]
    assert _taken_note({"images": 5, "info": {}}) is None  # a sample the merge wrote before it counted them
    assert _taken_note(_doc(0, 0)) is None
