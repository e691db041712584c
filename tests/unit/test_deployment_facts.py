"""The exports parts' deployments combined as the single pass ends with them (``core.exportparts``): which parts
must run again from the task's first coordinates and cameras, and that a part given them writes the single pass's
rows (``CamtrapBuilder.given``)."""
from __future__ import annotations

from typing import Any

from core.exportparts import conflicts, first_facts, follows_first, parts_to_redo
from gpu_batch.formats.camtrapdp import CamtrapBuilder
from gpu_batch.formats.entries import DETECTION_CATEGORIES


def fact(dep: str, lat: float | None = None, lon: float | None = None, camera: str = "") -> list[Any]:
    return [dep, "2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00", False, "", lat, lon, camera]


def test_the_first_facts_in_part_order_and_the_parts_that_saw_others() -> None:
    parts = [[fact("A", camera="c1"), fact("B")],
             [fact("A", -2.3, 34.8, "c2"), fact("B", 1.0, 2.0)],
             [fact("A", -2.4, 34.9), fact("C", 5.0, 6.0, "k")],
             [fact("A"), fact("B", 1.0, 2.0, "b")]]
    first = first_facts(parts)
    assert first == {"A": [-2.3, 34.8, "c1"], "B": [1.0, 2.0, "b"], "C": [5.0, 6.0, "k"]}
    assert sorted(conflicts(parts)) == ["A"]
    # part 1's camera c2 is not A's first (c1); part 2's coordinates are not A's first; 0 and 3 agree or saw none
    assert parts_to_redo(parts, first) == [1, 2]
    assert parts_to_redo([[fact("A", 1.0, 2.0)], [fact("A")]], first_facts([[fact("A", 1.0, 2.0)], [fact("A")]])) == []


def test_one_part_or_view_at_a_time_follows_the_first_facts_or_not() -> None:
    """``follows_first`` answers, one part after the other, what ``parts_to_redo`` answers of them all while every
    part before agreed: parts agree, taking their values where none were known; one that differs leaves the first
    facts as they were."""
    parts = [[fact("A", camera="c1"), fact("B")],
             [fact("A", -2.4, 34.9), fact("C", 5.0, 6.0, "k")],
             [fact("A"), fact("B", 1.0, 2.0, "b")],
             [fact("A", -2.3, 34.8), fact("B", 1.0, 2.0)],
             [fact("A", camera="c2")]]
    first: dict[str, list[Any]] = {}
    assert [follows_first(first, part) for part in parts[:3]] == [True, True, True]
    assert parts_to_redo(parts[:3], first_facts(parts[:3])) == []
    expected = {"A": [-2.4, 34.9, "c1"], "B": [1.0, 2.0, "b"], "C": [5.0, 6.0, "k"]}
    assert first == expected == first_facts(parts[:3])
    for other in parts[3:]:  # A's coordinates, A's camera: not the first ones
        assert not follows_first(first, other) and first == expected
        assert parts_to_redo([*parts[:3], other], first_facts([*parts[:3], other])) == [3]
    given: dict[str, list[Any]] = {"A": [-2.3, 34.8, "c1"]}
    assert follows_first(given, [fact("A", -2.3, 34.8), fact("D", 0.5, 0.5)])
    assert given == {"A": [-2.3, 34.8, "c1"], "D": [0.5, 0.5, ""]}
    assert not follows_first(given, [fact("D", 0.6, 0.5)]) and given["D"] == [0.5, 0.5, ""]


def rows(builder: CamtrapBuilder, items: list[tuple[str, dict[str, str]]]) -> list[tuple[str, str]]:
    return [builder.add_lines({"file": f, "detections": []}, md) for f, md in items]


def test_a_part_given_the_tasks_first_facts_writes_the_single_passs_rows() -> None:
    meta = [("s/cam/1.jpg", {"site": "J05", "latitude": "-2.33", "longitude": "34.83", "camera_id": "c1"}),
            ("s/cam/2.jpg", {"site": "J05", "latitude": "-2.40", "longitude": "34.90", "camera_id": "c2"}),
            ("s/cam/3.jpg", {"site": "J05", "latitude": "-2.41", "longitude": "34.91"})]

    def builder(given: dict[str, list[Any]] | None = None) -> CamtrapBuilder:
        return CamtrapBuilder(0.2, DETECTION_CATEGORIES, "2026-12-02T10:00:00Z", "MegaDetector v5a", given=given or {})

    single = builder()
    whole = rows(single, meta)
    first_part, second_part = builder(), builder()
    assert rows(first_part, meta[:1]) + rows(second_part, meta[1:]) != whole  # part 2 alone: its own first facts
    given = first_facts([first_part.deployment_facts(), second_part.deployment_facts()])
    again = builder(given)
    assert rows(first_part := builder(), meta[:1]) + rows(again, meta[1:]) == whole
    assert again.deployment_facts()[0][5:] == single.deployment_facts()[0][5:] == [-2.33, 34.83, "c1"]
    assert first_part.deployment_facts()[0][5:] == [-2.33, 34.83, "c1"]
