"""Camtrap DP events (core.camtrap_events): MegaDetector's sequences, counts per event, and the same rows however
the images are cut into parts."""
from __future__ import annotations

import csv
import io
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from megadetector.data_management.cct_json_utils import SequenceOptions, create_sequences  # the oracle

from core import camtrap_events as ev
from core import mdformat
from gpu_batch.formats import camtrapdp
from tests.unit.test_camtrapdp import rows, validate

COMPLETED = "2026-12-01T10:00:00"


def builder(utc_offset: str = "") -> camtrapdp.CamtrapBuilder:
    return camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                    completed_at=COMPLETED, classified_by="MegaDetector v5a.0.1",
                                    utc_offset=utc_offset)


def tapped(entries: list[dict[str, Any]], listed: dict[str, dict[str, str]] | None = None,
           b: camtrapdp.CamtrapBuilder | None = None) -> tuple[ev.EventRecords, list[str], list[str]]:
    """The records of the entries' Camtrap DP lines fed one entry at a time, and the lines themselves."""
    b = b or builder()
    tap, media, observations = ev.EventTap(), [], []
    for e in entries:
        m, o = b.add_lines(e, (listed or {}).get(e["file"]))
        tap.feed(m, o)
        media.append(m)
        observations.append(o)
    return tap.records(), media, observations


def detection(category: str, conf: float) -> dict[str, Any]:
    return {"category": category, "conf": conf, "bbox": [0.1, 0.1, 0.2, 0.2]}


def camera_day(seed: int, cameras: int = 3, images: int = 60) -> list[dict[str, Any]]:
    """Images of a few cameras over a day, in bursts with gaps around the 60 s interval (and equal times)."""
    rnd = random.Random(seed)
    entries = []
    for cam in range(cameras):
        at = datetime(2024, 6, 1, 5, 0, 0)
        for i in range(images):
            at += timedelta(seconds=rnd.choice([0, 1, 2, 30, 59, 60, 61, 120, 3600]))
            folder = f"site/cam{cam}" + ("/100RECNX" if i % 2 else "/101RECNX")  # overflow folders: one camera
            dets = [detection(rnd.choice("123"), rnd.choice([0.1, 0.25, 0.5, 0.97])) for _ in range(rnd.randint(0, 3))]
            entries.append({"file": f"{folder}/IMG_{i:04d}.JPG", "datetime": at.strftime("%Y:%m:%d %H:%M:%S"),
                            "detections": dets})
    rnd.shuffle(entries)
    return entries


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sequences_are_megadetectors(seed: int) -> None:
    entries = camera_day(seed)
    records, _, _ = tapped(entries)
    ours = {}
    for event in ev.events([records]):  # each event by its deployment and start, with how many images it has
        ours[(event.deployment, event.start)] = event.images
    images = [{"file_name": e["file"], "location": camtrapdp.deployment_id(e["file"]),
               "datetime": e["datetime"].replace(":", "-", 2)} for e in entries]
    create_sequences(images, SequenceOptions())
    theirs: dict[str, list[dict[str, Any]]] = {}
    for im in images:
        theirs.setdefault(im["seq_id"], []).append(im)
    expected = {}
    for seq in theirs.values():
        first = min(im["datetime"] for im in seq)  # create_sequences parsed them
        expected[(seq[0]["location"], first.isoformat() + "+00:00")] = len(seq)
    assert ours == expected
    assert len(records) == len(entries) and len(ours) > 10  # the sample does have several sequences per camera


def test_an_events_counts_are_the_most_in_one_image_and_its_best_confidence() -> None:
    entries = [
        {"file": "cam/a.jpg", "datetime": "2024:06:01 06:00:00",
         "detections": [detection("1", 0.9), detection("1", 0.4), detection("1", 0.1)]},  # 2 animals at 0.2
        {"file": "cam/b.jpg", "datetime": "2024:06:01 06:00:40", "detections": [detection("1", 0.95),
                                                                                 detection("2", 0.3)]},
        {"file": "cam/c.jpg", "datetime": "2024:06:01 06:01:40", "detections": [detection("1", -0.8)]},  # removed
        {"file": "cam/d.jpg", "datetime": "2024:06:01 06:05:00", "detections": []},
        {"file": "cam/e.jpg", "detections": [detection("3", 0.9)]},  # no capture time: in no event
        mdformat.failure_entry("cam/f.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable"),
        {"file": "cam/g.jpg", "datetime": "2024:06:01 06:05:30", "detections": [detection("7", 0.6)]},
    ]
    entries[5]["datetime"] = "2024:06:01 06:05:10"  # a failed image with a time (e.g. the list's): in no event
    records, _, _ = tapped(entries)
    assert len(records) == 5
    lines = "".join(text for text, *_ in ev.event_lines([records], "MD", "2026-12-01T10:00:00+00:00"))
    got = [(r[4], r[5], r[7], r[10], r[25]) for r in csv.reader(io.StringIO(lines))]
    assert got == [("2024-06-01T06:00:00+00:00", "2024-06-01T06:01:40+00:00", "animal", "2", "0.95"),
                   ("2024-06-01T06:00:00+00:00", "2024-06-01T06:01:40+00:00", "human", "1", "0.3"),
                   ("2024-06-01T06:05:00+00:00", "2024-06-01T06:05:30+00:00", "unknown", "", "0.6")]
    records, _, _ = tapped(entries[3:4])
    lines = "".join(text for text, *_ in ev.event_lines([records], "MD", COMPLETED))
    (blank,) = csv.reader(io.StringIO(lines))
    assert (blank[6], blank[7], blank[10], blank[25], blank[2]) == ("event", "blank", "", "", "")


def test_the_rows_do_not_depend_on_how_the_images_were_cut_into_parts() -> None:
    entries = sorted(camera_day(7), key=lambda e: e["file"])
    whole, _, _ = tapped(entries[::-1])  # the single pass meets the deployments in another order
    expected = list(ev.event_lines([whole], "MD", COMPLETED))
    rnd = random.Random(3)
    for _ in range(5):
        cuts = sorted(rnd.sample(range(1, len(entries)), 4))
        parts = [tapped(entries[a:b])[0] for a, b in zip([0, *cuts], [*cuts, len(entries)])]
        parts = [ev.EventRecords.from_bytes(p.to_bytes()) for p in parts]  # as the combine reads them
        assert list(ev.event_lines(parts, "MD", COMPLETED)) == expected
    assert list(ev.event_lines([], "MD", COMPLETED)) == list(ev.event_lines([ev.EventRecords()], "MD", COMPLETED)) == []
    with pytest.raises(ValueError):
        ev.EventRecords.from_bytes(b"something else")
    odd = tapped([{"file": "cam\x00/a.jpg", "datetime": "2024:06:01 06:00:00", "detections": []}],
                 {"cam\x00/a.jpg": {"seq_id": "S\x00"}})[0]
    back = ev.EventRecords.from_bytes(odd.to_bytes())
    assert (back.deployments, back.sequences) == (["cam\x00"], ["S\x00"])  # names exactly, NULs and all


def test_an_image_lists_sequences_are_events_whatever_their_gaps() -> None:
    entries = [{"file": f"{cam}/{n}.jpg", "datetime": f"2024:06:01 06:{minute:02d}:00", "detections": []}
               for cam, n, minute in (("c1", "a", 0), ("c1", "b", 30), ("c1", "c", 31), ("c2", "d", 0))]
    listed = {"c1/a.jpg": {"seq_id": "S7"}, "c1/b.jpg": {"seq_id": "S7"}, "c2/d.jpg": {"seq_id": "S7"}}
    records, _, _ = tapped(entries, listed)
    found = [(e.deployment, e.event_id, e.start, e.end, e.images) for e in ev.events([records])]
    # by deployment, then the images grouped by time, then the list's sequences
    assert found[0][0] == "c1" and found[0][1] != "S7" and found[0][4] == 1  # c.jpg: by time, alone
    assert found[1] == ("c1", "S7", "2024-06-01T06:00:00+00:00", "2024-06-01T06:30:00+00:00", 2)
    assert found[2][:2] == ("c2", "S7") and len(found) == 3  # the same id at another camera: another event
    ids = [r[0] for text, *_ in ev.event_lines([records], "MD", COMPLETED) for r in csv.reader(io.StringIO(text))]
    assert len(ids) == len(set(ids)) == 3


@pytest.mark.parametrize("offset", ["+05:30", "-03:30", "", "+14:00", "-12:00"])
def test_start_and_end_are_written_as_the_media_rows_are(offset: str) -> None:
    entries = [{"file": "c/a.jpg", "datetime": "2024:06:01 23:59:50", "detections": []},
               {"file": "c/b.jpg", "datetime": "2024:06:02 00:00:20", "detections": []},
               {"file": "d/c.jpg", "datetime": "1999:12:31 23:59:59", "detections": []}]
    records, media, _ = tapped(entries, b=builder(offset))
    stamps = [next(csv.reader(io.StringIO(m)))[3] for m in media]
    first, second = ev.events([records])
    zone = offset or "+00:00"
    assert (first.start, first.end) == tuple(stamps[:2]) == (f"2024-06-01T23:59:50{zone}", f"2024-06-02T00:00:20{zone}")
    assert second.start == second.end == stamps[2] == f"1999-12-31T23:59:59{zone}"


def test_the_interval_decides() -> None:
    entries = [{"file": "c/a.jpg", "datetime": "2024:06:01 06:00:00", "detections": []},
               {"file": "c/b.jpg", "datetime": "2024:06:01 06:02:00", "detections": []}]
    records, _, _ = tapped(entries)
    assert len(list(ev.events([records]))) == 2
    assert len(list(ev.events([records], interval_s=120))) == 1


def test_a_package_with_events_is_valid_camtrap_dp(tmp_path: Path) -> None:
    entries = sorted(camera_day(4, cameras=2, images=15), key=lambda e: e["file"])
    entries.append(mdformat.failure_entry("site/cam0/broken.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable"))
    b = builder()
    records, media, observations = tapped(entries, b=b)
    events = "".join(text for text, *_ in ev.event_lines([records], b.classified_by, b.completed_at))
    (tmp_path / "media.csv").write_text(camtrapdp.csvline.line(camtrapdp.MEDIA_COLUMNS) + "".join(media),
                                        encoding="utf-8", newline="")
    (tmp_path / "observations.csv").write_text(
        camtrapdp.csvline.line(camtrapdp.OBSERVATION_COLUMNS) + "".join(observations) + events,
        encoding="utf-8", newline="")
    with (tmp_path / "deployments.csv").open("w", newline="", encoding="utf-8") as d:
        w = csv.writer(d)
        w.writerow(camtrapdp.DEPLOYMENT_COLUMNS)
        w.writerows(b.deployment_rows())
    descriptor = b.descriptor("trapbatch-task-x", "site", "2026-12-01T10:00:00Z",
                              [{"title": "trapbatch", "role": "contributor"}], event_interval_s=60)
    (tmp_path / "datapackage.json").write_text(json.dumps(descriptor))
    report = validate(tmp_path)
    assert report.valid, report.flatten(["type", "note"])
    assert descriptor["project"]["observationLevel"] == ["media", "event"]
    assert "at most 60 s apart" in descriptor["description"]
    # readers keep both levels (camtrapR's record table too): the description says how to count one
    assert 'camtrapdp::filter_observations(x, observationLevel == "event")' in descriptor["description"]
    table = rows(tmp_path / "observations.csv")
    at_event = [o for o in table if o["observationLevel"] == "event"]
    assert at_event and all(o["mediaID"] == "" and o["eventID"] for o in at_event)
    # every timed image's media row lies in exactly one event of its deployment
    spans = {}
    for o in at_event:
        spans.setdefault(o["eventID"], (o["deploymentID"], o["eventStart"], o["eventEnd"]))
    for m in rows(tmp_path / "media.csv"):
        if m["filePath"].endswith("broken.jpg"):
            continue
        at = datetime.fromisoformat(m["timestamp"])
        inside = [e for e, (dep, s, t) in spans.items()
                  if dep == m["deploymentID"] and datetime.fromisoformat(s) <= at <= datetime.fromisoformat(t)]
        assert len(inside) == 1, m


def _event_rows(event: ev.Event, classified_by: str, completed_at: str) -> list[list[str]]:
    """The reference: an event's observation rows (``camtrapdp.OBSERVATION_COLUMNS`` order), field by field."""
    rows = []
    for i, kind in enumerate(ev.KINDS):
        if event.counts[i]:
            rows.append((kind, "" if kind == "unknown" else str(event.counts[i]),
                         "" if kind == "unknown" and not event.best[i] else f"{event.best[i]:.4g}"))
    if not rows:
        rows.append(("blank", "", ""))
    return [[f"{event.key}_{kind}", event.deployment, "", event.event_id, event.start, event.end, "event", kind, "", "",
             count, "", "", "", "", "", "", "", "", "", "", "", "machine", classified_by, completed_at, probability,
             "", ""] for kind, count, probability in rows]


def test_event_lines_are_csv_writers_rows() -> None:
    """``event_lines`` builds its text from joined constants: it must be ``csv.writer`` over ``_event_rows``, also
    for names that need quoting, offsets west of UTC and every kind."""
    entries = camera_day(5, cameras=2, images=30)
    entries += [{"file": 'odd, "name"/x.jpg', "datetime": "2024:06:01 06:00:00", "detections": [detection("9", 0.5)]},
                {"file": 'odd, "name"/y.jpg', "datetime": "2024:06:01 06:00:30", "detections": []}]
    listed = {'odd, "name"/y.jpg': {"seq_id": 'S,"1"'}}
    for offset in ("", "-03:30", "+14:00"):
        records, _, _ = tapped(entries, listed, builder(offset))
        expected = io.StringIO(newline="")
        rows_written = 0
        for event in ev.events([records]):
            rows = _event_rows(event, 'MegaDetector "v5a", fast', "2026-12-01T10:00:00-03:30")
            csv.writer(expected).writerows(rows)
            rows_written += len(rows)
        got = list(ev.event_lines([records], 'MegaDetector "v5a", fast', "2026-12-01T10:00:00-03:30"))
        assert "".join(text for text, *_ in got) == expected.getvalue()
        assert sum(n for _, n, _ in got) == rows_written
        assert sum(e for _, _, e in got) == len(list(ev.events([records])))
        kinds = {r[7] for r in csv.reader(io.StringIO(expected.getvalue()))}
        assert kinds == {"animal", "human", "vehicle", "unknown", "blank"}


def _visits(parts: list[ev.EventRecords], interval_s: float = ev.DEFAULT_INTERVAL_S) -> list[ev.CameraVisits]:
    cameras: list[ev.CameraVisits] = []
    for _ in ev.event_lines(parts, "MD", COMPLETED, interval_s, cameras):
        pass
    return cameras


def test_camera_visits_sum_up_each_cameras_events() -> None:
    entries = camera_day(5)
    records, _, _ = tapped(entries)
    found = list(ev.events([records]))
    cameras = _visits([ev.EventRecords.from_bytes(records.to_bytes())])
    assert [c.deployment for c in cameras] == sorted({e.deployment for e in found}) == ["site/cam0", "site/cam1",
                                                                                        "site/cam2"]
    for cam in cameras:
        mine = [e for e in found if e.deployment == cam.deployment]
        assert cam.visits == len(mine) and cam.images == sum(e.images for e in mine) == 60
        assert cam.with_kind == tuple(sum(1 for e in mine if e.counts[k]) for k in range(len(ev.KINDS)))
        assert cam.blank == sum(1 for e in mine if not any(e.counts)) and 0 < cam.blank < cam.visits
        times = sorted(datetime.strptime(e["datetime"], "%Y:%m:%d %H:%M:%S") for e in entries
                       if e["file"].startswith(cam.deployment + "/"))
        assert (cam.first, cam.last) == (times[0].isoformat() + "+00:00", times[-1].isoformat() + "+00:00")
        assert cam.span_s == (times[-1] - times[0]).total_seconds()
    text = ev.camera_visits_csv(cameras, 60, 0.2).decode("utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    assert list(table[0]) == list(ev.CAMERA_VISITS_COLUMNS)
    assert [(r["deploymentID"], int(r["visits"]), int(r["blank_visits"]), r["event_interval_s"], r["threshold"])
            for r in table] == [(c.deployment, c.visits, c.blank, "60", "0.2") for c in cameras]
    assert table[0]["days"] == f"{cameras[0].span_s / 86400:.2f}"
    # cut into parts, the table is the same (a camera's photos may be in several parts)
    entries.sort(key=lambda e: e["file"])
    parts = [tapped(entries[a:b])[0] for a, b in ((0, 50), (50, 90), (90, 180))]
    assert ev.camera_visits_csv(_visits(parts), 60, 0.2) == text.encode("utf-8")
    assert ev.camera_visits_csv([], 60, 0.2).decode("utf-8").splitlines() == [",".join(ev.CAMERA_VISITS_COLUMNS)]


def test_a_cameras_first_and_last_photo_are_its_earliest_and_latest_even_with_list_sequences() -> None:
    entries = [{"file": f"c1/{n}.jpg", "datetime": f"2024:06:01 06:{minute:02d}:00", "detections": dets}
               for n, minute, dets in (("a", 0, [detection("1", 0.9)]), ("b", 30, []), ("c", 31, []),
                                       ("d", 45, [detection("2", 0.5), detection("1", 0.5)]))]
    listed = {"c1/a.jpg": {"seq_id": "S7"}, "c1/b.jpg": {"seq_id": "S7"}}
    (cam,) = _visits([tapped(entries, listed)[0]], interval_s=600)
    # events: S7 (a, b: animal), then by time c and d 14 minutes apart at 600 s: two more
    assert (cam.visits, cam.images, cam.with_kind, cam.blank) == (3, 4, (2, 1, 0, 0), 1)
    assert (cam.first, cam.last, cam.span_s) == ("2024-06-01T06:00:00+00:00", "2024-06-01T06:45:00+00:00", 2700)


def test_a_cameras_events_formatted_a_run_at_a_time_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """A timelapse camera of a million photos is a million events: they are formatted ``EVENTS_PER_RUN`` at a time
    (bounded memory), and the rows and each camera's visits are those of one run."""
    entries = camera_day(11, cameras=2, images=80)
    listed = {e["file"]: {"seq_id": "S1"} for e in entries[:5]}  # list sequences too
    records, _, _ = tapped(entries, listed)
    whole = list(ev.event_lines([records], "MD", COMPLETED))
    visits, found = _visits([records]), list(ev.events([records]))
    assert sum(n for _, _, n in whole) == len(found) > 20  # more events than a run holds below
    monkeypatch.setattr(ev, "EVENTS_PER_RUN", 3)
    assert "".join(t for t, *_ in ev.event_lines([records], "MD", COMPLETED)) == "".join(t for t, *_ in whole)
    assert _visits([records]) == visits and len(visits) == 2
    assert list(ev.events([records])) == found


@pytest.mark.parametrize("per_gather", [1, 2, 5])
def test_boxes_gathered_a_range_at_a_time_from_many_parts_are_the_same(monkeypatch: pytest.MonkeyPatch,
                                                                       per_gather: int) -> None:
    """A camera in many parts has its boxes and confidences reordered ``RECORDS_PER_GATHER`` records at a time (one
    folder may hold ten million photos), and an event cut by a range still counts its most boxes and best
    confidence over all its photos: the rows, visits and index are those of one pass."""
    entries = camera_day(12, cameras=2, images=90)
    listed = {e["file"]: {"seq_id": "S1"} for e in entries[:4]}
    whole, _, _ = tapped(entries, listed)
    expected = list(ev.event_lines([whole], "MD", COMPLETED))
    visits, index = _visits([whole]), _indexed([whole]).lookup()
    assert max(e.images for e in ev.events([whole])) > per_gather  # events that a range cuts
    monkeypatch.setattr(ev, "RECORDS_PER_GATHER", per_gather)
    monkeypatch.setattr(ev, "EVENTS_PER_RUN", 4)
    rnd = random.Random(per_gather)
    for _ in range(3):  # the parts as shards cut them (names in any order against time), read back as fragments
        cuts = sorted(rnd.sample(range(1, len(entries)), 6))
        parts = [ev.EventRecords.from_bytes(tapped(entries[a:b], listed)[0].to_bytes())
                 for a, b in zip([0, *cuts], [*cuts, len(entries)])]
        assert "".join(t for t, *_ in ev.event_lines(parts, "MD", COMPLETED)) == "".join(t for t, *_ in expected)
        assert _visits(parts) == visits
        assert _indexed(parts).lookup()._lists == index._lists


def _indexed(parts: list[ev.EventRecords]) -> ev.EventIndex:
    """The index of the parts' time-grouped events, as the grouping builds it."""
    index = ev.EventIndex()
    for _ in ev.event_lines(parts, "MD", COMPLETED, index=index):
        pass
    return index


def _link(text: str, index: ev.EventIndex, untimed: set[str] | None = None) -> str:
    """Observation rows ``text`` linked to their events (read as a fragment is: lines with their own endings)."""
    return "".join(ev.link_observations(iter(io.StringIO(text, newline="")), index, untimed or set()))


def _linked(entries: list[dict[str, Any]], listed: dict[str, dict[str, str]] | None = None,
            interval_s: float = ev.DEFAULT_INTERVAL_S) -> tuple[list[list[str]], list[list[str]], list[ev.Event]]:
    """The media rows, the media-level observation rows with their eventIDs linked, and the events."""
    records, media, observations = tapped(entries, listed)
    index = ev.EventIndex()
    event_text = "".join(t for t, *_ in ev.event_lines([records], "MD", COMPLETED, interval_s, index=index))
    text = "".join(observations)
    untimed = ev.untimed_media(io.StringIO("".join(media), newline=""))
    linked = _link(text, index.lookup(), untimed)
    assert len(linked) >= len(text)
    events = list(ev.events([ev.EventRecords.from_bytes(records.to_bytes())], interval_s))
    assert {e.event_id for e in events} == {r[3] for r in csv.reader(io.StringIO(event_text))}
    return (list(csv.reader(io.StringIO("".join(media)))), list(csv.reader(io.StringIO(linked))), events)


def test_each_media_level_observation_names_the_event_its_photo_is_in() -> None:
    entries = camera_day(4)
    listed = {e["file"]: {"seq_id": "L1"} for e in entries[:6]}
    entries.append({"file": "site/cam0/100RECNX/untimed.jpg", "detections": [detection("1", 0.9)]})
    entries.append(mdformat.failure_entry("site/cam0/100RECNX/bad.jpg", mdformat.FAILURE_IMAGE_ACCESS,
                                          "undecodable"))
    media, observations, events = _linked(entries, listed)
    time_of = {m[0]: m[3] for m in media}
    by_file = {m[4]: m[0] for m in media}
    spans: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for e in events:  # a photo without a sequence within L1's span is of L1 (test_a_lists_sequences_and_...)
        spans.setdefault(e.deployment, []).append((datetime.fromisoformat(e.start), datetime.fromisoformat(e.end),
                                                   e.event_id))
    listed_ids = {by_file[f] for f in listed}
    untimed = by_file["site/cam0/100RECNX/untimed.jpg"]
    checked = 0
    for row in observations:
        mid, dep, event = row[2], row[1], row[3]
        if mid in listed_ids:
            assert event == "L1"
        elif mid == untimed:
            assert event == ""
        else:
            at = datetime.fromisoformat(time_of[mid])
            (expected,) = [key for start, end, key in spans[dep] if start <= at <= end]
            assert event == expected
            checked += 1
    assert checked > 100 and all(r[3] for r in observations if r[2] != untimed)


def test_a_photo_without_a_capture_time_is_in_no_event_even_when_the_detection_time_falls_in_one() -> None:
    around = [{"file": f"cam/{n}.jpg", "datetime": at, "detections": []}
              for n, at in (("a", "2026:12:01 09:59:30"), ("b", "2026:12:01 10:00:30"))]  # a clock set ahead
    untimed = {"file": "cam/c.jpg", "detections": [detection("1", 0.9)]}  # the detection time, 10:00:00, stands in
    _, observations, events = _linked([*around, untimed])
    assert len(events) == 1 and events[0].start <= "2026-12-01T10:00:00+00:00" <= events[0].end
    by_media = {r[2]: r[3] for r in observations}
    assert by_media[camtrapdp.media_id("cam/c.jpg")] == ""
    assert by_media[camtrapdp.media_id("cam/a.jpg")] == by_media[camtrapdp.media_id("cam/b.jpg")] == events[0].event_id


def test_linking_keeps_quoted_names_and_their_line_breaks() -> None:
    entries = [{"file": f'odd, "cam"/line\nbreak {n}.jpg', "datetime": f"2024:06:01 06:00:{n:02d}",
                "detections": [detection("1", 0.9), detection("2", 0.5)]} for n in range(3)]
    entries.append({"file": "plain/a.jpg", "datetime": "2024:06:01 06:00:00", "detections": []})
    records, media, observations = tapped(entries)
    index = _indexed([records])
    text = "".join(observations)
    linked = _link(text, index.lookup())
    rows, before = list(csv.reader(io.StringIO(linked))), list(csv.reader(io.StringIO(text)))
    assert len(rows) == len(before) == 7
    for new, old in zip(rows, before):  # only the eventID changed
        assert new[:3] + new[4:] == old[:3] + old[4:] and old[3] == "" and new[3]
    assert len({r[3] for r in rows}) == 2  # one event a camera
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    assert linked == out.getvalue()  # written as csv.writer writes (the quoting of the lines around them too)
    # a part's fragment of the index holds the deployments it is asked for, and only those
    part = ev.EventIndex.from_bytes(index.to_bytes({'odd, "cam"': None, "elsewhere": None}))
    at = int(datetime(2024, 6, 1, 6, 0, 1, tzinfo=timezone.utc).timestamp())
    assert part.event_id('odd, "cam"', at) == rows[0][3]
    assert part.event_id("plain", at - 1) is None and index.lookup().event_id("plain", at - 1) == rows[-1][3]
    assert part.event_id('odd, "cam"', at + 3600) is None  # after the event's end
    with pytest.raises(ValueError):
        ev.EventIndex.from_bytes(b"something else")


@pytest.mark.parametrize("ahead", [True, False])
def test_the_media_rows_are_read_only_when_the_detection_time_falls_in_an_event(ahead: bool) -> None:
    from activities.exports import link_event_ids

    day = "2026:12:01" if ahead else "2024:06:01"  # a clock set ahead: its photos span the detection time
    entries = [{"file": f"cam/{n}.jpg", "datetime": f"{day} {at}", "detections": []}
               for n, at in (("a", "09:59:30"), ("b", "10:00:30"))]
    entries.append({"file": "cam/c.jpg", "detections": [detection("1", 0.9)]})  # no capture time
    b = builder()
    records, media, observations = tapped(entries, b=b)
    index = _indexed([records])
    read: list[bool] = []

    def media_rows() -> list[str]:
        read.append(True)
        return media

    out = io.StringIO()
    link_event_ids(io.StringIO("".join(observations), newline=""), media_rows, index.lookup(), b.completed_at, out)
    rows = {r[2]: r[3] for r in csv.reader(io.StringIO(out.getvalue()))}
    assert read == ([True] if ahead else [])
    assert rows[camtrapdp.media_id("cam/c.jpg")] == "" and rows[camtrapdp.media_id("cam/a.jpg")]


@pytest.mark.parametrize("classifier", ['MD, "v5"', "MD\nv5", "MD\r\nv5,"])
def test_quotes_after_the_fields_a_link_reads_are_kept_as_written(classifier: str) -> None:
    """A classifier's name with a comma, a quote or a line break (quoted in every row, at the end) is kept byte for
    byte, whether the row is split or read with ``csv``."""
    entries = [{"file": f"cam/{n}.jpg", "datetime": f"2024:06:01 06:00:0{n}", "detections": [detection("1", 0.9)]}
               for n in range(3)]
    b = camtrapdp.CamtrapBuilder(threshold=0.2, detection_categories=mdformat.DETECTION_CATEGORIES,
                                 completed_at=COMPLETED, classified_by=classifier)
    records, _, observations = tapped(entries, b=b)
    index = _indexed([records])
    text = "".join(observations)
    linked = _link(text, index.lookup())
    rows, before = list(csv.reader(io.StringIO(linked))), list(csv.reader(io.StringIO(text)))
    assert [r[:3] + r[4:] for r in rows] == [r[:3] + r[4:] for r in before] and rows[0][23] == classifier
    assert len({r[3] for r in rows}) == 1 and rows[0][3]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    assert linked == out.getvalue()


def test_a_parts_share_of_the_index_is_the_events_its_photos_span() -> None:
    """A camera spread over parts gives each part the events around its own photos (not the camera's million), and
    every photo of each part still finds its event there."""
    entries = sorted(camera_day(9, cameras=2, images=120),  # named in time order, as cameras number their photos
                     key=lambda e: (e["file"].split("/")[1], e["datetime"], e["file"]))
    for n, e in enumerate(entries):
        e["file"] = "/".join(e["file"].split("/")[:2]) + f"/IMG_{n:04d}.JPG"
    listed = {entries[0]["file"]: {"seq_id": "L"}}
    cuts = [(0, 70), (70, 150), (150, 240)]
    parts = [tapped(entries[a:b], listed)[0] for a, b in cuts]
    whole = _indexed(parts)
    lookup = whole.lookup()
    for (a, b), part in zip(cuts, parts):
        windows = ev.time_windows(part)
        share = ev.EventIndex.from_bytes(whole.to_bytes(windows))
        _, media, observations = tapped(entries[a:b], listed)
        text = "".join(observations)
        assert _link(text, share) == _link(text, lookup)
        sizes = {d: len(share._lists[d][0]) for d in share._lists}
        assert sum(sizes.values()) < sum(len(lookup._lists[d][0]) for d in sizes)  # a share, not every event
    assert ev.time_windows(tapped(entries[:1], listed)[0]) == {}  # a list's sequence only: nothing to link


def test_the_camera_tables_never_hand_a_spreadsheet_a_formula() -> None:
    """camera-visits.csv and camera-days.csv are tables for spreadsheets (as detections.csv): a camera folder named
    ``=HYPERLINK(...)`` or ``+north`` was a formula there; its cell now starts with ``'``, as in detections.csv."""
    import dataclasses

    import numpy as np

    from gpu_batch.formats.detections_csv import unguarded

    [cam] = _visits([tapped(camera_day(1, cameras=1, images=20))[0]])
    for name in ('=HYPERLINK("http://x/?"&A1,"x")', "+north", "-2", "@cam"):
        visits = ev.camera_visits_csv([dataclasses.replace(cam, deployment=name)], 60, 0.2).decode("utf-8")
        [row] = list(csv.DictReader(io.StringIO(visits)))
        days = ev.CameraDays(name, np.array([19876], np.int32), np.ones((1, len(ev.DAY_COUNTS)), np.int32))
        [day] = list(csv.DictReader(io.StringIO("".join(ev.camera_days_lines([days], 60, 0.2)))))
        assert row["deploymentID"] == day["deploymentID"] == "'" + name
        assert unguarded(row["deploymentID"]) == name  # as the preview page shows it (activities.previews)
    assert unguarded("''plain") == "'plain" and unguarded("") == ""  # one added to a name that had one


# ---------------------------------------------------------------- pinned rules (a mutation audit found them unpinned)

def test_an_events_confidence_is_the_highest_of_its_kind_even_when_a_lower_box_comes_after() -> None:
    entries = [{"file": "cam/a.jpg", "datetime": "2024:06:01 06:00:00",
                "detections": [detection("1", 0.9), detection("1", 0.5)]}]
    records, _, _ = tapped(entries)
    lines = "".join(text for text, *_ in ev.event_lines([records], "MD", COMPLETED))
    assert [(r[7], r[10], r[25]) for r in csv.reader(io.StringIO(lines))] == [("animal", "2", "0.9")]


def test_a_west_of_greenwich_offset_of_quarter_hours_is_written_as_the_media_rows_are() -> None:
    """``-03:45``: the minutes of a negative offset are those of its size (-225 % 60 is 15, not 45)."""
    entries = [{"file": "c/a.jpg", "datetime": "2024:06:01 23:59:50", "detections": []}]
    records, media, _ = tapped(entries, b=builder("-03:45"))
    (event,) = ev.events([records])
    assert event.start == event.end == next(csv.reader(io.StringIO(media[0])))[3] == "2024-06-01T23:59:50-03:45"


def test_a_parts_share_of_the_index_holds_the_events_its_first_and_last_photo_end_and_start() -> None:
    """A part whose first photo is the last of an event (the event began in the part before) and whose last photo is
    the first of another gets both events in its share: each of its photos names its event."""
    entries = [{"file": f"cam/{n}.jpg", "datetime": f"2024:06:01 06:{minute:02d}:00", "detections": []}
               for n, minute in enumerate((0, 1, 10, 20, 21))]
    parts = [tapped(entries[a:b])[0] for a, b in ((0, 1), (1, 4), (4, 5))]
    whole = _indexed(parts)
    middle = tapped(entries[1:4])
    share = ev.EventIndex.from_bytes(whole.to_bytes(ev.time_windows(middle[0])))
    text = "".join(middle[2])
    assert _link(text, share) == _link(text, whole.lookup())
    assert len(share._lists["cam"][0]) == 3


def test_a_photo_without_a_capture_time_joins_no_event_as_r_camtrapdp_links_media() -> None:
    """R camtrapdp's ``read_camtrapdp`` (inbo/camtrapdp, R/read_camtrapdp.R, "Add eventID to media") gives each
    media row every event-level observation of its deployment with ``eventStart <= timestamp <= eventEnd``. A photo
    without a capture time is in no event (``camtrapdp.EVENTS_NOTE``): its stand-in, in the single pass and from
    the parts' facts alike, lies before every event of its deployment and at its deploymentStart (inside it)."""
    from core import exportparts

    entries: list[dict[str, Any]] = [
        {"file": "cam1/a.jpg", "datetime": "2024:06:01 06:00:00", "detections": [detection("1", 0.9)]},
        {"file": "cam1/b.jpg", "datetime": "2024:06:01 06:00:02", "detections": []},
        {"file": "cam1/x.jpg", "detections": []},  # no capture time
        {"file": "cam1/c.jpg", "datetime": "2024:06:02 06:00:00", "detections": []},
    ]
    b = builder()
    records, media, _ = tapped(entries, b=b)
    events = [r for text, *_ in ev.event_lines([records], "MD", COMPLETED) for r in csv.reader(io.StringIO(text))]
    moved: dict[str, str] = {}
    restamped = list(csv.reader(io.StringIO("".join(camtrapdp.stand_in_media(media, b.stand_ins(), moved)),
                                            newline="")))
    untimed = camtrapdp.media_id("cam1/x.jpg")
    assert list(moved) == [untimed]

    def when(text: str) -> datetime:
        return datetime.fromisoformat(text)

    for row in restamped:
        linked = [e[3] for e in events if e[1] == row[1] and when(e[4]) <= when(row[3]) <= when(e[5])]
        assert linked == ([] if row[0] == untimed else linked[:1]) and (linked or row[0] == untimed)
    start = dict(zip(camtrapdp.DEPLOYMENT_COLUMNS, b.deployment_rows()[0]))["deploymentStart"]
    assert moved[untimed] == start == "2024-06-01T05:59:59+00:00"
    # the fan-out: each part's stand-ins, from the parts' deployment facts, are the single pass's
    parts = []
    for cut in (entries[2:], entries[:2]):
        one = builder()
        for e in cut:
            one.add(e)
        parts.append(one.deployment_facts())
    assert exportparts.stand_ins(parts) == [{"cam1": start}, {}]
    combined = builder()
    exportparts.combine_deployments(combined, parts)
    assert combined.deployment_rows() == b.deployment_rows()


def test_a_visit_with_a_photo_cut_short_and_nothing_detected_is_unknown_not_blank() -> None:
    """A photo cut short (a JPEG without its end: grey below what it holds) in which nothing was detected may hold an
    animal: its media-level observation is ``unknown`` (Camtrap DP 1.0.2: "neither humans nor AI can say what was
    recorded"), and its visit has an ``unknown`` row (no count, no confidence) and is no blank visit in
    camera-visits.csv or camera-days.csv; a visit with a detection keeps it."""
    from gpu_batch.formats.entries import mark_cut_short

    entries = [{"file": f"c1/{n}.jpg", "datetime": f"2024:06:01 06:{minute:02d}:00", "detections": dets}
               for n, minute, dets in (("a", 0, []), ("b", 10, []), ("c", 10, []), ("d", 20, [detection("1", 0.9)]),
                                       ("e", 20, []))]
    marked = list(mark_cut_short(iter([dict(e) for e in entries]), {"c1/a.jpg", "c1/c.jpg", "c1/e.jpg"}))
    records, _, observations = tapped(marked)
    media_level = {r[2]: r[7] for r in csv.reader(io.StringIO("".join(observations)))}
    assert [media_level[camtrapdp.media_id(f"c1/{n}.jpg")] for n in "abcde"] == [
        "unknown", "blank", "unknown", "animal", "unknown"]
    rows = [r for text, *_ in ev.event_lines([records], "MD", COMPLETED, 60) for r in csv.reader(io.StringIO(text))]
    assert [(r[4][11:16], r[7], r[10], r[25]) for r in rows] == [
        ("06:00", "unknown", "", ""), ("06:10", "unknown", "", ""), ("06:20", "animal", "1", "0.9"),
        ("06:20", "unknown", "", "")]
    (cam,) = _visits([tapped(marked)[0]])
    assert (cam.visits, cam.with_kind, cam.blank) == (3, (1, 0, 0, 3), 0)
    days: list[ev.CameraDays] = []
    for _ in ev.event_lines([tapped(marked)[0]], "MD", COMPLETED, 60, days=days.append):
        pass
    day = dict(zip(ev.DAY_COUNTS, days[0].counts[0].tolist()))
    assert (day["visits"], day["unknown_visits"], day["blank_visits"]) == (3, 3, 0)
    # the same photos whole: the first two visits are blank
    (whole,) = _visits([tapped(entries)[0]])
    assert (whole.with_kind, whole.blank) == ((1, 0, 0, 0), 2)


def test_a_lists_sequences_and_the_photos_grouped_by_time_never_overlap_within_a_deployment() -> None:
    """An image list that gives ``seq_id`` to some photos of a camera: Camtrap DP links a photo to the event-level
    observations of its deployment whose ``eventStart``..``eventEnd`` hold its timestamp (R camtrapdp's
    ``read_camtrapdp``, "Add eventID to media"), and event-level observations "should be mutually exclusive, so that
    their count can be summed" (observations-table-schema.json, observationLevel). So every timed photo is in
    exactly one event, the one its media-level rows name: a photo without a sequence whose time lies within a
    sequence's span (``b``) is of that visit (its boxes count there); photos grouped by time never span a
    sequence's photo (``x``, ``z`` around ``y``), nor does another camera's sequence matter. Before, ``b`` was an
    event of its own inside S1 and ``x``..``z`` one event around S2: two events each held ``b`` and ``y``."""
    def shot(name: str, at: str, *dets: dict[str, Any]) -> dict[str, Any]:
        return {"file": name, "datetime": f"2024:06:01 {at}", "detections": list(dets)}

    entries = [shot("cam1/a.jpg", "06:00:00"), shot("cam1/b.jpg", "06:05:00", detection("1", 0.9)),
               shot("cam1/c.jpg", "06:10:00"),
               shot("cam1/x.jpg", "07:00:00"), shot("cam1/y.jpg", "07:00:20"), shot("cam1/z.jpg", "07:00:50"),
               shot("cam1/u.jpg", "08:00:00"), shot("cam1/v.jpg", "08:00:30", detection("2", 0.8)),
               shot("cam2/b.jpg", "06:05:00")]
    listed = {"cam1/a.jpg": {"seq_id": "S1"}, "cam1/c.jpg": {"seq_id": "S1"}, "cam1/y.jpg": {"seq_id": "S2"},
              "cam2/b.jpg": {"seq_id": "S9"}}
    media, observations, events = _linked(entries, listed)
    when = datetime.fromisoformat
    by_deployment: dict[str, list[ev.Event]] = {}
    for e in events:
        by_deployment.setdefault(e.deployment, []).append(e)
    for spans in by_deployment.values():  # mutually exclusive: no two events of a deployment share an instant
        spans.sort(key=lambda e: when(e.start))
        assert all(when(a.end) < when(b.start) for a, b in zip(spans, spans[1:])), spans
    named = {r[2]: r[3] for r in observations}
    for row in media:
        holding = [e.event_id for e in by_deployment[row[1]] if when(e.start) <= when(row[3]) <= when(e.end)]
        assert holding == [named[row[0]]], (row[4], holding, named[row[0]])
    of = {e.event_id: e for e in events}
    assert (of["S1"].images, of["S1"].counts[0]) == (3, 1)  # b's animal is S1's
    assert named[camtrapdp.media_id("cam1/b.jpg")] == "S1"
    assert named[camtrapdp.media_id("cam1/x.jpg")] != named[camtrapdp.media_id("cam1/z.jpg")]
    assert sorted(e.images for e in by_deployment["cam1"]) == [1, 1, 1, 2, 3]
    # the fan-out: each part's share of the index names the same events as the whole one
    cuts = [(0, 2), (2, 5), (5, 9)]
    parts = [tapped(entries[a:b], listed)[0] for a, b in cuts]
    whole = _indexed(parts)
    for (a, b), part in zip(cuts, parts):
        share = ev.EventIndex.from_bytes(whole.to_bytes(ev.time_windows(part)))
        text = "".join(tapped(entries[a:b], listed)[2])
        assert {r[2]: r[3] for r in csv.reader(io.StringIO(_link(text, share)))}.items() <= named.items()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mixed_sequences_give_the_same_exclusive_events_however_the_images_were_cut(seed: int) -> None:
    """Cameras where a list gives some photos one of a few sequences (overlapping each other too) and leaves the
    rest to the time grouping: every photo without a sequence is in the event its media-level rows name, and in no
    other but where the list's own sequences overlap (their ids are the list's: kept); the rows, and each part's
    share of the index, are the same however the images were cut into parts."""
    rnd = random.Random(seed)
    entries = sorted(camera_day(seed, cameras=3, images=80), key=lambda e: e["file"])
    # a sequence an hour of a camera's clock, given to some of its photos; now and then one that spans the day
    listed = {e["file"]: {"seq_id": "A" if rnd.random() < 0.03 else e["datetime"][:13]}
              for e in entries if rnd.random() < 0.3}
    media, observations, events = _linked(entries, listed)
    when = datetime.fromisoformat
    named = {r[2]: r[3] for r in observations}
    listed_ids = {camtrapdp.media_id(f) for f in listed}
    listed_names = {row["seq_id"] for row in listed.values()}
    checked = joined = 0
    for row in media:
        holding = [e.event_id for e in events
                   if e.deployment == row[1] and when(e.start) <= when(row[3]) <= when(e.end)]
        if row[0] not in listed_ids:  # within overlapping sequences: the one that started last, and no other kind
            assert named[row[0]] in holding and (len(holding) == 1 or set(holding) <= listed_names), holding
            checked += len(holding) == 1
            joined += named[row[0]] in listed_names
    assert checked > 50 and 5 < joined < checked
    whole, _, _ = tapped(entries[::-1], listed)
    expected = list(ev.event_lines([whole], "MD", COMPLETED))
    for _ in range(3):
        cuts = sorted(rnd.sample(range(1, len(entries)), 3))
        bounds = list(zip([0, *cuts], [*cuts, len(entries)]))
        parts = [ev.EventRecords.from_bytes(tapped(entries[a:b], listed)[0].to_bytes()) for a, b in bounds]
        index = ev.EventIndex()
        assert list(ev.event_lines(parts, "MD", COMPLETED, index=index)) == expected
        for (a, b), part in zip(bounds, parts):
            share = ev.EventIndex.from_bytes(index.to_bytes(ev.time_windows(part)))
            text = "".join(tapped(entries[a:b], listed)[2])
            assert {r[2]: r[3] for r in csv.reader(io.StringIO(_link(text, share)))}.items() <= named.items()


def test_a_camera_that_follows_summer_time_is_grouped_by_the_instants_its_exif_offsets_give() -> None:
    """A camera whose EXIF carries ``OffsetTimeOriginal`` across the end of summer time (its clock falls back an
    hour at 03:00 +02:00): its photos' media timestamps keep their own offsets, and the events, the deployment's
    span and the visits follow the instants, not the wall clock. c (02:05 +01:00) is 10 minutes after b (02:55
    +02:00), so of b's visit at a 30-minute interval; d is 35 minutes after c, a visit of its own; the deployment
    starts at a and ends at d, though d's wall-clock time is earlier than b's."""
    def shot(name: str, at: str, offset: str, *dets: dict[str, Any]) -> dict[str, Any]:
        return {"file": name, "datetime": f"2024:10:27 {at}", "detections": list(dets),
                "exif_metadata": {"OffsetTimeOriginal": offset}}

    entries = [shot("cam/a.jpg", "02:50:00", "+02:00"), shot("cam/b.jpg", "02:55:00", "+02:00", detection("1", 0.9)),
               shot("cam/c.jpg", "02:05:00", "+01:00"), shot("cam/d.jpg", "02:40:00", "+01:00")]
    b = builder()
    records, media, _ = tapped(entries, None, b)
    assert [m.split(",")[3] for m in media] == ["2024-10-27T02:50:00+02:00", "2024-10-27T02:55:00+02:00",
                                                "2024-10-27T02:05:00+01:00", "2024-10-27T02:40:00+01:00"]
    visits = [(e.start, e.end, e.images, e.counts[0]) for e in ev.events([records], 1800)]
    assert visits == [("2024-10-27T02:50:00+02:00", "2024-10-27T02:05:00+01:00", 3, 1),
                      ("2024-10-27T02:40:00+01:00", "2024-10-27T02:40:00+01:00", 1, 0)]
    assert b.deployment_facts()[0][1:4] == ["2024-10-27T02:50:00+02:00", "2024-10-27T02:40:00+01:00", 0]


def _brute_holder(starts: list[int], ends: list[int], epoch: int) -> int:
    """The last span (in order) whose first..last holds ``epoch``, -1 for none: the rule, one span at a time."""
    return max((i for i, (a, b) in enumerate(zip(starts, ends)) if a <= epoch <= b), default=-1)


@pytest.mark.parametrize("seed", range(6))
def test_the_sequence_that_holds_a_time_is_the_one_that_started_last_of_those_that_do(seed: int) -> None:
    """``_holders`` (the joining, ``_join_list_spans``) and ``EventIndex.event_id`` (the link, read back) name the
    same span as the rule does span by span, for lists whose sequences overlap, nest, share ends and span days."""
    rnd = random.Random(seed)
    m = rnd.choice([1, 2, 7, 64, 300])
    starts = sorted(rnd.randrange(0, 5000) for _ in range(m))
    ends = [a + rnd.choice([0, 0, 5, 40, 300, 5000]) for a in starts]
    queries = [rnd.randrange(-10, 11000) for _ in range(2000)] + starts + ends + [e + 1 for e in ends]
    table = ev._max_table(np.array(ends, np.int64))
    got = ev._holders(np.array(starts, np.int64), table, np.array(queries, np.int64)).tolist()
    assert got == [_brute_holder(starts, ends, q) for q in queries]
    index = ev.EventIndex()
    index._listed["cam"] = (starts, ends, table, [f"S{i}" for i in range(m)])
    assert [index.event_id("cam", q) for q in queries[:500]] == \
        [None if j < 0 else f"S{j}" for j in got[:500]]


@pytest.mark.timeout(120)  # about a second; two minutes and more before (each photo walked back over the spans)
def test_joining_is_not_quadratic_where_a_lists_sequence_spans_the_whole_deployment() -> None:
    """A list whose sequence ids are reused (``1`` each day: one sequence spans the deployment) beside 20,000 short
    ones, and 400,000 photos without one: each photo's sequence is found in a few steps (``_holders``), not by
    walking back over every sequence started before it, which took 145 s at 200,000 photos."""
    rng = np.random.default_rng(0)
    m, n = 20000, 400000
    starts = np.concatenate([[0], np.sort(rng.integers(1, 10 ** 8, m))])
    ends = np.concatenate([[10 ** 8 + 10], starts[1:] + rng.integers(0, 300, m)])
    epoch = np.sort(rng.integers(1, 10 ** 8, n))
    seq = np.full(n, -1, np.int64)
    joined, _, _, _ = ev._join_list_spans((starts, ends, np.arange(m + 1)), seq, epoch, np.zeros(n, np.int16), None)
    assert (joined >= 0).all()  # every photo lies within the long sequence, at least
    probe = rng.choice(n, 200, replace=False)
    starts_list, ends_list = starts.tolist(), ends.tolist()
    expected = sorted(_brute_holder(starts_list, ends_list, int(epoch[k])) for k in probe)
    chosen = ev._holders(starts, ev._max_table(ends), epoch[probe])
    assert sorted(chosen.tolist()) == expected


def test_the_event_index_holds_a_camera_in_flat_arrays(tmp_path: Path) -> None:
    """``EventIndex`` keeps every camera's time-grouped events in three flat arrays and where each camera's are, not
    arrays, a tuple and a list of each camera's own (~600 bytes a camera beside its events: camera-day folders make
    a camera a folder, a million at ten million images in folders of ten)."""
    import gc
    import tracemalloc

    from bench.camtrap_events import make_fragments

    held = {}
    for cameras in (500, 5_000):
        folder = tmp_path / str(cameras)
        folder.mkdir()
        make_fragments(folder, 3 * cameras, cameras, 2, 3, 1)  # a burst of three photos a camera: one event
        parts = [ev.EventRecords.from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.events"))]
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            index = ev.EventIndex()
            events = sum(found for _, _, found in ev.event_lines(parts, "MD", COMPLETED, index=index))
            gc.collect()
            held[cameras] = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert events >= cameras and len(index.deployments()) == cameras
        whole = ev.EventIndex.from_bytes(index.to_bytes({d: None for d in index.deployments()}))
        assert whole.event_id("site000/cam00", 1_717_200_000 + 10**9) is None  # read back, and after its events
        del index, parts
    per_camera = (held[5_000] - held[500]) / 4_500
    assert per_camera < 400, (held, per_camera)  # bytes a camera (18 of them its event's); arrays of its own: ~680


def test_a_camera_added_again_after_another_keeps_all_its_events(tmp_path: Path) -> None:
    """The flat arrays hold a deployment's events in several ranges when it comes again after another (an index
    fed twice): its share has them all, in the order added."""
    from bench.camtrap_events import make_fragments

    index, alone, sizes = ev.EventIndex(), ev.EventIndex(), []
    for seed in (1, 2):
        folder = tmp_path / str(seed)
        folder.mkdir()
        make_fragments(folder, 60, 2, 1, 3, seed)  # cameras site000/cam00 and site000/cam01
        parts = [ev.EventRecords.from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.events"))]
        sizes.append(sum(found for _, _, found in ev.event_lines(parts, "MD", COMPLETED, index=index)))
        if seed == 1:
            list(ev.event_lines(parts, "MD", COMPLETED, index=alone))
    cams = ("site000/cam00", "site000/cam01")
    back = ev.EventIndex.from_bytes(index.to_bytes({d: None for d in cams}))
    first = ev.EventIndex.from_bytes(alone.to_bytes({d: None for d in cams}))
    assert sum(len(back._lists[d][0]) for d in cams) == sum(sizes)
    for d in cams:  # the first feed's events, then the second's
        assert back._lists[d][0][:len(first._lists[d][0])] == first._lists[d][0]
        assert len(back._lists[d][0]) > len(first._lists[d][0])


def _collection(seed: int, small: int = 240) -> list[bytes]:
    """The parts' records (as fragments) of many small cameras (1 to 11 photos: camera-day folders) and two big
    ones (more than ``SMALL_CAMERA_RECORDS``), in every way a camera's photos come: grouped by time only, in a
    list's sequences only, both (joined a camera at a time), equal times, offsets that differ within one camera
    (equal epochs, different local times), photos cut short, photos without a mediaID, a name that needs quoting;
    the photos spread over the parts at random, as shards in any order cut them."""
    rnd = np.random.default_rng(seed)
    names = [f"site{c % 7}/cam{c:04d}" for c in range(small + 2)]
    names[3] = 'odd, "name"'
    rnd.shuffle(names)
    found: list[tuple[str, str, int, int, list[int], list[float], int]] = []
    for c, name in enumerate(names):
        photos = int(rnd.integers(1030, 1100)) if c < 2 else int(rnd.integers(1, 12))
        style = int(rnd.integers(0, 6))  # 0, 3: by time; 1: a list's sequences; 2: both; 4: offsets; 5: cut short
        at = 1_717_200_000 + int(rnd.integers(0, 10 * 86400))
        for _ in range(photos):
            at += int(rnd.choice([0, 0, 1, 30, 59, 60, 61, 120, 3600, 86400]))
            sequence = (f"S{int(rnd.integers(0, 5))}" if style == 1 else
                        f"S{int(rnd.integers(0, 3))}" if style == 2 and rnd.random() < 0.4 else "")
            counts = [int(rnd.choice([0, 0, 1, 2])) for _ in ev.KINDS]
            best = [float(np.float32(rnd.random())) if n else 0.0 for n in counts]
            if style == 5 and rnd.random() < 0.3:
                counts, best = [0, 0, 0, 1], [0.0] * len(ev.KINDS)
            offset = int(rnd.choice([0, 60, -330, 345])) if style == 4 else 0
            found.append((name, sequence, at, offset, counts, best, len(found) + 1 if rnd.random() > 0.05 else 0))
    order = rnd.permutation(len(found))
    cuts = sorted(rnd.choice(np.arange(1, len(found)), 4, replace=False).tolist())
    parts = []
    for a, b in zip([0, *cuts], [*cuts, len(found)]):
        chunk = [found[i] for i in order[a:b]]
        deployments = sorted({r[0] for r in chunk}, key=lambda _: rnd.random())
        sequences = sorted({r[1] for r in chunk if r[1]})
        d, s = {x: i for i, x in enumerate(deployments)}, {x: i for i, x in enumerate(sequences)}
        parts.append(ev.EventRecords(
            deployments, sequences, np.array([d[r[0]] for r in chunk], np.int32),
            np.array([s[r[1]] if r[1] else -1 for r in chunk], np.int32), np.array([r[2] for r in chunk], np.int64),
            np.array([r[3] for r in chunk], np.int16), np.array([r[4] for r in chunk], np.uint16),
            np.array([r[5] for r in chunk], np.float32), np.array([r[6] for r in chunk], np.uint64)).to_bytes())
    return parts


def _step(fragments: list[bytes], interval_s: float) -> dict[str, Any]:
    """What the events step writes of the fragments (``activities.exportevents``): the event rows,
    camera-visits.csv, camera-days.csv, every part's share of the index and of the frames (what the link writes
    into observations.csv and coco.json), the whole index (the single activity's), and the events."""
    parts = [ev.EventRecords.from_bytes(data) for data in fragments]
    cameras: list[ev.CameraVisits] = []
    index, frames, days = ev.EventIndex(), ev.EventFrames(len(parts)), io.StringIO()
    rows = "".join(text for text, *_ in ev.event_lines(
        parts, "MD", COMPLETED, interval_s, cameras, index, frames,
        lambda camera: days.writelines(ev.camera_days_rows(camera, interval_s, 0.2))))
    return {"rows": rows, "visits": ev.camera_visits_csv(cameras, interval_s, 0.2), "days": days.getvalue(),
            "shares": [index.to_bytes(ev.time_windows(p)) for p in parts],
            "whole": index.to_bytes({d: None for d in index.deployments()}),
            "frames": [frames.to_bytes(i) for i in range(len(parts))],
            "events": list(ev.events([ev.EventRecords.from_bytes(data) for data in fragments], interval_s))}


@pytest.mark.parametrize("seed, interval_s", [(1, 60.0), (2, 0.0), (3, 600.0)])
def test_small_cameras_grouped_many_at_a_time_write_the_bytes_of_a_camera_at_a_time(
        monkeypatch: pytest.MonkeyPatch, seed: int, interval_s: float) -> None:
    """Camera-day folders make a camera of each folder of ten photos (a million at ten million images): the small
    cameras are grouped many at a time (``_small_cameras``: one pass of numpy calls, not ~320 us of them a camera),
    and every byte the events step writes is what the grouping of a camera at a time (``_camera_runs``, which the
    big cameras still take) writes."""
    fragments = _collection(seed)
    grouped: list[int] = []
    small_cameras = ev._small_cameras

    def counted(*args: Any) -> Any:
        for camera in small_cameras(*args):
            grouped.append(1)
            yield camera

    monkeypatch.setattr(ev, "_small_cameras", counted)
    monkeypatch.setattr(ev, "SMALL_CAMERA_RECORDS", 0)  # every camera alone
    alone = _step(fragments, interval_s)
    assert not grouped and alone["rows"].count("\r\n") > 1000 and any(alone["frames"])
    monkeypatch.setattr(ev, "SMALL_CAMERA_RECORDS", 1024)
    assert _step(fragments, interval_s) == alone
    assert len(grouped) == 2 * 240  # every small camera grouped (the mixed ones too; twice: rows, then events)
    # groups cut small, boxes gathered a few at a time, middling cameras alone
    monkeypatch.setattr(ev, "SMALL_CAMERAS_RECORDS", 25)
    monkeypatch.setattr(ev, "RECORDS_PER_GATHER", 7)
    monkeypatch.setattr(ev, "SMALL_CAMERA_RECORDS", 6)
    assert _step(fragments, interval_s) == alone


def _timed_camera(deployment: str, starts: list[int], ends: list[int]) -> ev._Camera:
    """A run of time-grouped events as the grouping hands it to ``EventIndex.add``."""
    n = len(starts)
    return ev._Camera(deployment, [f"{i:016x}" for i in range(n)], [f"{i:016x}" for i in range(n)], [""] * n,
                      [""] * n, [1] * n, [[0] * len(ev.KINDS)] * n, [[0.0] * len(ev.KINDS)] * n,
                      ev.CameraVisits(deployment, "", "", 0, n, n, (0,) * len(ev.KINDS), n), None, False,
                      np.ones(n, bool), np.array(starts, np.int64), np.array(ends, np.int64),
                      np.arange(n, dtype=np.int16))


def test_a_parts_share_of_the_index_counted_for_many_cameras_at_once_is_the_one_searched_a_camera_at_a_time(
        ) -> None:
    """``EventIndex.to_bytes`` takes each camera's events within a part's window for many cameras at once
    (``_shares``): the same as searching each camera's (``_shares_one_by_one``), for windows that cut a camera's
    events anywhere, or none, cameras of many events (searched), and a camera whose spans are not in order
    (never from the grouping; searched, as before)."""
    rnd = random.Random(4)
    index = ev.EventIndex()
    windows: dict[str, tuple[int, int] | None] = {}
    for c in range(300):
        n = 5 if c == 7 else rnd.choice([1, 2, 5, 64, 65, 200])
        starts = sorted(rnd.sample(range(0, 100_000, 10), n))
        ends = [s + rnd.choice([0, 3, 9]) for s in starts]
        if c == 7:
            starts.reverse()
            ends.reverse()
        name = f"cam{c:03d}"
        index.add(_timed_camera(name, starts, ends))
        window = rnd.choice([None, (starts[0], ends[-1]), (starts[0] - 5, starts[0] - 1), (ends[-1] + 1, ends[-1] + 9),
                             tuple(sorted(rnd.sample(range(-10, 100_010), 2)))])
        if c % 9:  # the others: not in this part
            windows[name] = window  # type: ignore[assignment]
    windows["cam007"] = (50_000, 60_000)
    names = sorted(windows)
    got, want = index._shares(names, windows), index._shares_one_by_one(names, windows)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got, want))
    assert 0 < len(got[0]) < sum(len(index._arrays(name)[0]) for name in names)  # the windows cut some out
    nothing = {name: (-100, -50) for name in names}
    assert all(np.array_equal(a, b) for a, b in zip(index._shares(names, nothing),
                                                    index._shares_one_by_one(names, nothing)))


# names that sort differently as str and as UTF-8 bytes, by case, or by combining marks; NUL, empty, to be quoted
_AWKWARD_NAMES = ["a", "B", "b", "Ä", "ä", "é", "e\u0301", "\U0001F98C", "\uffff", "cam\x00", "", " cam", "CAM",
                  "ß", "ss", "日本", "=cam", 'q"q,']
_BASES = [-2_208_988_800, -86_401, 0, 1_717_200_000, 4_102_444_800, 253_402_300_799]  # 1900, 1969, 1970, 2100, 9999
_STEPS = [0, 0, 1, 59, 60, 61, 86_399, 86_400, 10_000_000, 366 * 86_400, 367 * 86_400]  # 366: MAX_IDLE_DAYS


def _fragments(cameras: list[tuple[str, int, int, list[tuple[int, int, int, int, bool, int]]]], parts: int,
               unnamed: set[int], rnd: random.Random) -> list[bytes]:
    """Fragments of ``parts`` parts (some perhaps empty) of the cameras' photos: (name, style, base epoch, photos
    as (step, sequence, offset minutes, kinds as bits, named, part)); style 0 by time, 1 a list's sequences, 2 both.
    Each part numbers its own deployments and sequences in an order of its own; ``unnamed`` parts were written
    before records named their photos."""
    found: list[list[tuple[str, str, int, int, list[int], list[float], int]]] = [[] for _ in range(parts)]
    serial = 0
    for name, style, at, photos in cameras:
        for step, sequence, offset, kinds, named, part in photos:
            at += step
            listed = f"S{sequence}" if style == 1 or (style == 2 and sequence) else ""
            counts = [(kinds >> k & 1) * (k + 1) for k in range(len(ev.KINDS))]
            serial += 1
            found[part % parts].append((name, listed, at, offset, counts, [0.25 * n for n in counts],
                                        serial if named else 0))
    out = []
    for p, chunk in enumerate(found):
        deployments = sorted({r[0] for r in chunk}, key=lambda _: rnd.random())
        sequences = sorted({r[1] for r in chunk if r[1]}, key=lambda _: rnd.random())
        d, s = {x: i for i, x in enumerate(deployments)}, {x: i for i, x in enumerate(sequences)}
        out.append(ev.EventRecords(
            deployments, sequences, np.array([d[r[0]] for r in chunk], np.int32),
            np.array([s[r[1]] if r[1] else -1 for r in chunk], np.int32), np.array([r[2] for r in chunk], np.int64),
            np.array([r[3] for r in chunk], np.int16),
            np.array([r[4] for r in chunk], np.uint16).reshape(len(chunk), len(ev.KINDS)),
            np.array([r[5] for r in chunk], np.float32).reshape(len(chunk), len(ev.KINDS)),
            np.zeros(0, np.uint64) if p in unnamed else np.array([r[6] for r in chunk], np.uint64)).to_bytes())
    return out


def _alone(interval_s: float, fragments: list[bytes], max_days: int = ev.MAX_CAMERA_DAYS) -> dict[str, Any]:
    """``_step`` with every camera grouped alone, every share searched and every day table written by numpy."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "MAX_CAMERA_DAYS", max_days)
        mp.setattr(ev, "SMALL_CAMERA_RECORDS", 0)
        mp.setattr(ev, "_FEW_EVENTS", 0)
        mp.setattr(ev, "_FEW_DAYS", -1)
        return _step(fragments, interval_s)


_photo = st.tuples(st.sampled_from(_STEPS), st.integers(0, 3), st.sampled_from([0, 0, 60, -330, 345, 840, -720]),
                   st.integers(0, 15), st.booleans(), st.integers(0, 7))


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cameras=st.lists(st.tuples(st.sampled_from(_AWKWARD_NAMES), st.integers(0, 2), st.sampled_from(_BASES),
                                  st.lists(_photo, min_size=1, max_size=20)),
                        min_size=1, max_size=10, unique_by=lambda c: c[0]),
       parts=st.integers(1, 8), unnamed=st.sets(st.integers(0, 7), max_size=2),
       interval_s=st.sampled_from([-5.0, 0.0, 0.5, 60.0, 86_400.0, 1e18, float("inf")]),
       small=st.sampled_from([1, 3, 8, 20]), per_group=st.sampled_from([1, 4, 8, 9, 16, 4096]),
       few=st.sampled_from([1, 64]), names_at_a_time=st.sampled_from([1, 3, 4096]),
       max_days=st.sampled_from([ev.MAX_CAMERA_DAYS, 2, 5]), seed=st.integers(0, 3))
def test_grouping_many_small_cameras_at_once_writes_what_a_camera_at_a_time_writes_for_any_records(
        cameras: list[tuple[str, int, int, list[tuple[int, int, int, int, bool, int]]]], parts: int,
        unnamed: set[int], interval_s: float, small: int, per_group: int, few: int, names_at_a_time: int,
        max_days: int, seed: int) -> None:
    """The fast paths (``_small_cameras``, ``EventIndex._shares``, ``camera_days_rows``' few dates) write every byte
    the camera-at-a-time ones do, for records the collection test does not make: names that sort differently as
    str and as bytes or by case, times before 1970 and after 2100 (to 9999), equal times in several parts, offsets
    of +14:00 and -12:00 within a camera, negative, zero and endless intervals, photos spread over up to eight parts
    (some empty, some written before records named their photos), cameras of one photo, and cameras and groups at,
    just under and just over their record limits (``small``, ``per_group``), or photos on more dates than a camera's
    days are counted for (``MAX_CAMERA_DAYS``: no rows; never grouped)."""
    fragments = _fragments(cameras, parts, unnamed, random.Random(seed))
    want = _alone(interval_s, fragments, max_days)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "MAX_CAMERA_DAYS", max_days)
        mp.setattr(ev, "SMALL_CAMERA_RECORDS", small)
        mp.setattr(ev, "SMALL_CAMERAS_RECORDS", per_group)
        mp.setattr(ev, "_FEW_EVENTS", few)
        mp.setattr(ev, "_NAMES_AT_A_TIME", names_at_a_time)
        assert _step(fragments, interval_s) == want


def test_cameras_at_and_over_the_grouping_limits_write_what_a_camera_at_a_time_writes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the shipped limits: cameras of exactly ``SMALL_CAMERA_RECORDS`` records (1,024: grouped), one more
    (alone), four of 1,024 filling a group of ``SMALL_CAMERAS_RECORDS`` exactly (4,096: one group), one photo and
    four more of 1,024 (the fourth one record past a group: the next group's), and a camera with a list's sequences
    beside photos without one (of 1,024: grouped, with the group before it), spread over fifty parts of which some
    are empty: the same bytes as every camera alone."""
    rnd = random.Random(5)
    limit, per_group = ev.SMALL_CAMERA_RECORDS, ev.SMALL_CAMERAS_RECORDS
    whole = per_group // limit  # cameras of ``limit`` records that fill a group
    sizes = [limit - 1, limit, limit + 1, *[limit] * whole, 1, *[limit] * whole, 2, limit]
    cameras = [(f"cam{c:02d}", 2 if c == len(sizes) - 1 else c % 2, 1_717_200_000 + c,
                [(rnd.choice(_STEPS[:6]), rnd.randint(0, 3), 0, rnd.randint(0, 15), True, rnd.randint(0, 39))
                 for _ in range(size)]) for c, size in enumerate(sizes)]
    fragments = _fragments(cameras, 50, set(), rnd)
    groups: list[list[str]] = []
    small_cameras = ev._small_cameras

    def counted(*args: Any) -> Any:
        groups.append([])
        for camera in small_cameras(*args):
            groups[-1].append(camera.deployment)
            yield camera

    monkeypatch.setattr(ev, "_small_cameras", counted)
    want = _alone(60.0, fragments)
    assert not groups
    assert _step(fragments, 60.0) == want
    names = [f"cam{c:02d}" for c in range(len(sizes))]  # cam02: over the limit, alone; the last: mixed, grouped
    a, b = 3 + whole, 3 + 2 * whole
    assert groups[:4] == [names[:2], names[3:a], names[a:b], names[b:]]


def _held(sizes: list[int], rnd: random.Random) -> list[tuple[np.ndarray, np.ndarray]]:
    """``_sorted_runs``' ``held`` of parts holding ``sizes`` deployments each (some none) out of 40, records of each
    one to nine."""
    held = []
    for size in sizes:
        ids = np.array(sorted(rnd.sample(range(40), size)), np.int32)
        held.append((ids, np.cumsum([0] + [rnd.randint(1, 9) for _ in range(size)]).astype(np.int64)))
    return held


def test_the_parts_holding_a_range_of_deployments_are_found_as_searching_each_part_finds_them() -> None:
    """``_Holdings.pieces``: of each part that holds records of deployments ``low`` to ``high - 1``, in the parts'
    order, its index and where those records start and end; for one deployment and ranges, with empty parts, parts
    that hold none of the range, and ranges before, after and between the held ones."""
    rnd = random.Random(11)
    for _ in range(40):
        held = _held([rnd.choice([0, 1, 3, 10, 40]) for _ in range(rnd.randint(1, 12))], rnd)
        holdings = ev._Holdings(held)
        for low in range(-1, 42):
            for high in {low, low + 1, low + rnd.randint(2, 5), 45}:
                want = []
                for i, (ids, at) in enumerate(held):  # every part searched
                    mine = np.flatnonzero((ids >= low) & (ids < high))
                    if len(mine):
                        want.append((i, int(at[mine[0]]), int(at[mine[-1] + 1])))
                assert holdings.pieces(low, high) == want


class _CountingNumpy:
    """numpy, with its ``searchsorted`` calls counted (set as ``core.camtrap_events.np``)."""

    def __init__(self) -> None:
        self.searches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def searchsorted(self, *args: Any, **kwargs: Any) -> Any:
        self.searches += 1
        return np.searchsorted(*args, **kwargs)


def test_a_camera_grouped_alone_is_looked_up_only_in_the_parts_that_hold_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera grouped alone (over ``SMALL_CAMERA_RECORDS``; before ``_join_cameras`` also one with a list's
    sequences beside photos without one) whose photos are all in one part of fifty costs the searches it costs in a
    single part: finding its records does not search every part (~85 us a camera at fifty parts). The rows are the
    same however the cameras are spread."""
    rnd = random.Random(12)
    cameras = [(f"cam{c:03d}", 2, 1_717_200_000 + c,
                [(rnd.choice(_STEPS[:6]), k % 4, 0, rnd.randint(0, 15), True, c)
                 for k in range(ev.SMALL_CAMERA_RECORDS + 6 if c == 7 else rnd.randint(4, 12))]) for c in range(60)]
    searches, written = [], []
    for parts in (1, 50):  # every camera in the one part, or each in a part of its own (ten parts holding two)
        fragments = _fragments(cameras, parts, set(), rnd)
        counting = _CountingNumpy()
        monkeypatch.setattr(ev, "np", counting)
        written.append(_step(fragments, 60.0))  # its parts' shares of the index and frames included
        monkeypatch.setattr(ev, "np", np)
        searches.append(counting.searches)
    same = ("rows", "visits", "days", "whole", "events")  # the parts' shares are each part's own
    assert [written[0][k] for k in same] == [written[1][k] for k in same]
    assert "S1" in written[0]["rows"] and len(written[0]["visits"].splitlines()) == 61  # mixed cameras, all 60
    # not one search more a camera (searching every part: 49 more a camera each time the step groups them, 5,880)
    assert searches[1] - searches[0] < len(cameras), searches


def test_cameras_with_a_lists_sequences_beside_photos_without_one_grouped_many_at_a_time_write_their_own_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Small cameras whose list covers only some photos (a captures file for some of them: every camera of it) are
    grouped many at a time too (``_join_cameras``, not ~420-530 us of numpy calls a camera alone:
    bench/camtrap_events.py --mixed), and write every byte they write alone: photos without a sequence joined to the
    span of their own camera's sequence only (the cameras' times overlap, and their sequences share names), the
    one that started last where spans overlap, photos at a span's first and last second, time-grouped events cut
    where a sequence starts between two photos, spread over parts, in one group or in groups of a few cameras."""
    rnd = random.Random(21)
    cameras = []
    for c in range(150):
        photos = []
        for k in range(rnd.randint(2, 24)):
            sequence = rnd.choice([0, 0, 1, 2, 3]) if k else rnd.choice([0, 1])  # some start with a listed photo
            photos.append((rnd.choice([0, 0, 1, 30, 59, 60, 61, 120, 3600]), sequence, rnd.choice([0, 0, 60]),
                           rnd.randint(0, 15), rnd.random() > 0.05, rnd.randint(0, 5)))
        cameras.append((f"cam{c:03d}", 2, 1_717_200_000 + rnd.randint(0, 600), photos))  # the times overlap
    fragments = _fragments(cameras, 6, set(), rnd)
    # what the records hold: photos without a sequence inside a span of their camera's, and inside only another's
    inside_own = inside_other = 0
    spans: dict[str, list[tuple[int, int]]] = {}
    times: dict[str, list[tuple[int, int]]] = {}
    for name, _, at, photos in cameras:
        found: dict[int, list[int]] = {}
        for step, sequence, *_ in photos:
            at += step
            found.setdefault(sequence, []).append(at)
        spans[name] = [(min(t), max(t)) for s, t in found.items() if s]
        times[name] = found.get(0, [])
    for name in spans:
        for t in times[name]:
            if any(a <= t <= b for a, b in spans[name]):
                inside_own += 1
            elif any(a <= t <= b for other in ("cam000", "cam001", "cam002") for a, b in spans[other]):
                inside_other += 1
    assert inside_own > 200 and inside_other > 20
    alone_runs: list[str] = []
    camera_runs = ev._camera_runs

    def counted(pieces: Any, owners: Any, deployment: str, *args: Any) -> Any:
        alone_runs.append(deployment)
        return camera_runs(pieces, owners, deployment, *args)

    want = _alone(60.0, fragments)
    monkeypatch.setattr(ev, "_camera_runs", counted)
    for per_group in (4096, 40, 24):  # every camera in one group, a few at a time, mostly one at a time
        monkeypatch.setattr(ev, "SMALL_CAMERAS_RECORDS", per_group)
        assert _step(fragments, 60.0) == want, per_group
    assert not alone_runs  # none was grouped alone
    assert want["rows"].count(",S1,") > 50 and len(want["visits"].splitlines()) == 151
