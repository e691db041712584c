"""Which image-list columns are well-known export fields (gpu_batch.formats.listfields)."""
from __future__ import annotations

import pytest

from gpu_batch.formats import listfields


@pytest.mark.parametrize(("column", "concept"), [("Site", "location"), ("location_id", "location"),
                                                 ("Date Time", "datetime"), ("capture-time", "datetime"),
                                                 ("SEQ_ID", "seq_id"), ("event id", "seq_id"), ("frame", "frame_num"),
                                                 ("lat", "latitude"), ("Camera", "camera_id"),
                                                 ("season", None), ("roll", None), ("path_2", None)])
def test_columns_are_recognised_by_name(column: str, concept: str | None) -> None:
    found = listfields.concept_of(column)
    assert (found[0] if found else None) == concept


def test_split_takes_the_best_alias_and_keeps_every_other_column() -> None:
    known, rest = listfields.split({"site": "J05", "season": "S1", "Location": "L1", "empty": " ", "frame": "2",
                                    "lat": "1.5"}, ("location", "frame_num"))
    assert known == {"location": ("Location", "L1"), "frame_num": ("frame", "2")}
    assert rest == {"site": "J05", "season": "S1", "lat": "1.5"}  # a concept the format does not take is rest
    assert listfields.split(None) == ({}, {})


def test_numbers() -> None:
    assert [listfields.integer(v) for v in ("3", "+3", "3.0", "3.5", "x", "", "1e3")] == [3, 3, 3, None, None, None,
                                                                                           None]
    assert [listfields.coordinate(v, 90) for v in ("-2.5", "90", "90.1", "nan", "n")] == [-2.5, 90.0, None, None,
                                                                                          None]


def test_offsets_from_utc() -> None:
    values = ("+02:00", "-0530", "Z", "+14:00", "-12:00", "+14:30", "-13:00", "+2:00", " +02:00", "UTC", "", "+02:60")
    assert [listfields.utc_offset(v) for v in values] == ["+02:00", "-05:30", "+00:00", "+14:00", "-12:00", None, None,
                                                          None, None, None, None, None]
    assert listfields.concept_of("Time-Zone Offset") == ("utc_offset", 2)
