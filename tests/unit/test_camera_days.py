"""camera-days.csv (core.camtrap_events.CameraDays, camera_days_lines): each camera's photos and visits by local
date, every day from its first photo to its last, the same however the photos are cut into parts."""
from __future__ import annotations

import csv
import io
import random
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from core import camtrap_events as ev
from tests.unit.test_camtrap_events import COMPLETED, builder, detection, tapped


def season(seed: int, cameras: int = 3) -> list[dict[str, Any]]:
    """A few cameras over some weeks: bursts on some days, none on others (days without a photo), some photos near
    midnight."""
    rnd = random.Random(seed)
    entries = []
    for cam in range(cameras):
        at = datetime(2024, 6, 1, 22, 0, 0) + timedelta(days=cam)
        for i in range(40):
            at += timedelta(seconds=rnd.choice([0, 20, 50, 3600, 86400 * 3, 86400 + 1800]))
            dets = [detection(rnd.choice("1233"), rnd.choice([0.1, 0.5, 0.9])) for _ in range(rnd.randint(0, 2))]
            entries.append({"file": f"site/cam{cam}/IMG_{i:04d}.JPG", "datetime": at.strftime("%Y:%m:%d %H:%M:%S"),
                            "detections": dets})
    rnd.shuffle(entries)
    return entries


def table(parts: list[ev.EventRecords], interval_s: float = ev.DEFAULT_INTERVAL_S) -> str:
    days: list[ev.CameraDays] = []
    for _ in ev.event_lines(parts, "MD", COMPLETED, interval_s, days=days.append):
        pass
    return "".join(ev.camera_days_lines(days, interval_s, 0.2))


def test_a_row_per_camera_and_day_counts_its_photos_and_the_visits_that_start_that_day() -> None:
    entries = season(1)
    records, media, _ = tapped(entries)
    rows = list(csv.DictReader(io.StringIO(table([records]))))
    assert list(rows[0]) == list(ev.CAMERA_DAYS_COLUMNS)
    # from scratch: the photos' dates (the media rows' local timestamps) and the events' start dates
    expected: dict[tuple[str, str], list[int]] = {}
    for row in csv.reader(io.StringIO("".join(media))):
        expected.setdefault((row[1], row[3][:10]), [0] * len(ev.DAY_COUNTS))[0] += 1
    for event in ev.events([ev.EventRecords.from_bytes(records.to_bytes())]):
        counts = expected[(event.deployment, event.start[:10])]
        counts[1] += 1
        for k, n in enumerate(event.counts):
            counts[2 + k] += n > 0
        counts[-1] += not any(event.counts)
    by_camera: dict[str, list[str]] = {}
    for deployment, date in expected:
        by_camera.setdefault(deployment, []).append(date)
    for deployment, dates in by_camera.items():  # the days between, with no photo: zeros
        day = datetime.fromisoformat(min(dates))
        while day.date().isoformat() < max(dates):
            day += timedelta(days=1)
            expected.setdefault((deployment, day.date().isoformat()), [0] * len(ev.DAY_COUNTS))
    got = {(r["deploymentID"], r["date"]): [int(r[c]) for c in ev.DAY_COUNTS] for r in rows}
    assert got == expected
    assert [(r["deploymentID"], r["date"]) for r in rows] == sorted(got)  # by camera, then date
    assert any(sum(v) == 0 for v in got.values()) and len(by_camera) == 3
    assert {(r["event_interval_s"], r["threshold"]) for r in rows} == {("60", "0.2")}


@pytest.mark.parametrize("per_gather", [1, 4])
def test_the_same_rows_however_the_photos_are_cut_into_parts(monkeypatch: pytest.MonkeyPatch,
                                                             per_gather: int) -> None:
    entries = season(2, cameras=2)
    whole = table([tapped(entries)[0]])
    monkeypatch.setattr(ev, "RECORDS_PER_GATHER", per_gather)
    monkeypatch.setattr(ev, "EVENTS_PER_RUN", 3)
    monkeypatch.setattr(ev, "DAYS_PER_CHUNK", 2)
    rnd = random.Random(per_gather)
    for _ in range(3):
        cuts = sorted(rnd.sample(range(1, len(entries)), 4))
        parts = [ev.EventRecords.from_bytes(tapped(entries[a:b])[0].to_bytes())
                 for a, b in zip([0, *cuts], [*cuts, len(entries)])]
        assert table(parts) == whole


def test_a_day_is_the_cameras_local_date_and_no_timed_photo_means_a_header_alone() -> None:
    late = [{"file": "cam/a.jpg", "datetime": "2024:06:01 23:30:00", "detections": [detection("1", 0.9)]},
            {"file": "cam/b.jpg", "datetime": "2024:06:03 00:10:00", "detections": []}]
    records, _, _ = tapped(late, b=builder("+02:00"))  # 21:30 and 22:10 UTC: local dates 1 and 3 June
    rows = list(csv.reader(io.StringIO(table([records]))))[1:]
    assert [(r[1], r[2], r[3], r[4], r[-3]) for r in rows] == [
        ("2024-06-01", "1", "1", "1", "0"), ("2024-06-02", "0", "0", "0", "0"), ("2024-06-03", "1", "1", "0", "1")]
    assert table([tapped([{"file": "cam/c.jpg", "detections": []}])[0]]) == \
        ",".join(ev.CAMERA_DAYS_COLUMNS) + "\r\n"


def test_days_without_a_photo_are_zeros_up_to_a_year_and_a_longer_gap_is_left_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def rows(gap_days: int) -> list[list[str]]:
        entries = [{"file": "cam/a.jpg", "datetime": "2023:01:01 12:00:00", "detections": []},
                   {"file": "cam/b.jpg", "datetime": (datetime(2023, 1, 1, 12) + timedelta(days=gap_days))
                    .strftime("%Y:%m:%d %H:%M:%S"), "detections": []}]
        return list(csv.reader(io.StringIO(table([tapped(entries)[0]]))))[1:]

    year = rows(ev.MAX_IDLE_DAYS + 1)
    assert len(year) == ev.MAX_IDLE_DAYS + 2 and all(r[2] == "0" for r in year[1:-1])
    assert [r[1] for r in rows(ev.MAX_IDLE_DAYS + 2)] == ["2023-01-01", "2024-01-04"]  # a camera not out, or a clock
    in_one_chunk = rows(3)
    monkeypatch.setattr(ev, "_FEW_DAYS", 0)  # numpy's way, a chunk at a time
    monkeypatch.setattr(ev, "DAYS_PER_CHUNK", 1)  # the gap before a chunk's first day, from the chunk before
    assert rows(3) == in_one_chunk and [r[2] for r in in_one_chunk] == ["1", "0", "0", "1"]


@pytest.mark.parametrize("per_gather", [2, 1 << 20])
def test_a_camera_with_photos_on_too_many_dates_gets_no_rows(monkeypatch: pytest.MonkeyPatch,
                                                            per_gather: int) -> None:
    """Past ``MAX_CAMERA_DAYS`` dates (a clock that wandered over a century) a camera's days are not counted: memory
    stays bounded and no row claims years of effort; the other cameras' rows are as they were."""
    def entries(camera: str, days: int) -> list[dict[str, Any]]:
        return [{"file": f"{camera}/{d}.jpg", "datetime": (datetime(2024, 1, 1, 9) + timedelta(days=d))
                 .strftime("%Y:%m:%d %H:%M:%S"), "detections": []} for d in range(days)]

    both = entries("wander", 5) + entries("steady", 3)
    before = table([tapped(both)[0]])
    monkeypatch.setattr(ev, "MAX_CAMERA_DAYS", 4)
    monkeypatch.setattr(ev, "RECORDS_PER_GATHER", per_gather)
    monkeypatch.setattr(ev, "EVENTS_PER_RUN", 2)
    after = table([tapped(both)[0]])
    assert after == "".join(line for line in before.splitlines(keepends=True) if not line.startswith("wander,"))
    assert [line.split(",")[0] for line in after.splitlines()[1:]] == ["steady"] * 3


@pytest.mark.parametrize("per_gather", [1, 1 << 20])
def test_a_camera_with_photos_on_exactly_the_most_dates_keeps_its_rows(monkeypatch: pytest.MonkeyPatch,
                                                                       per_gather: int) -> None:
    """``MAX_CAMERA_DAYS`` dates are still counted, also when ranges of its photos share a date (counted once)."""
    entries = [{"file": f"cam/{d}.jpg", "datetime": (datetime(2024, 1, 1, 9) + timedelta(days=d))
                .strftime("%Y:%m:%d %H:%M:%S"), "detections": []} for d in range(5)]
    entries.append({"file": "cam/0b.jpg", "datetime": "2024:01:01 10:00:00", "detections": []})
    before = table([tapped(entries)[0]])
    monkeypatch.setattr(ev, "MAX_CAMERA_DAYS", 5)
    monkeypatch.setattr(ev, "RECORDS_PER_GATHER", per_gather)
    assert table([tapped(entries)[0]]) == before and len(before.splitlines()) == 6


@pytest.mark.parametrize("seed", [1, 2])
def test_a_cameras_few_dates_are_written_as_numpy_writes_many(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """A camera with at most ``_FEW_DAYS`` dates (camera-day folders: a million cameras of a day or two) has its
    rows written without numpy, each date's text formatted once: the same bytes as the chunked numpy way, gaps up to
    ``MAX_IDLE_DAYS`` as zeros and longer ones left out, dates before 1970 and after 9999 too."""
    rnd = random.Random(seed)
    cameras = []
    for c in range(60):
        day, days = rnd.choice([-800_000, -3, 0, 19_000, 2_930_000]), []
        for _ in range(rnd.randint(0, ev._FEW_DAYS)):
            day += rnd.choice([1, 1, 2, 5, ev.MAX_IDLE_DAYS, ev.MAX_IDLE_DAYS + 1, ev.MAX_IDLE_DAYS + 2, 4000])
            days.append(day)
        counts = np.array([[rnd.randint(0, 30) for _ in ev.DAY_COUNTS] for _ in days], np.int32).reshape(
            len(days), len(ev.DAY_COUNTS))
        cameras.append(ev.CameraDays(f"cam{c}" if c % 5 else "=cam, 1", np.array(days, np.int32), counts))
    few = ["".join(ev.camera_days_rows(cam, 60, 0.2)) for cam in cameras]
    monkeypatch.setattr(ev, "_FEW_DAYS", -1)
    many = ["".join(ev.camera_days_rows(cam, 60, 0.2)) for cam in cameras]
    assert few == many and sum(text.count("\r\n") for text in few) > 10_000
