"""COCO Camera Traps' ``seq_id``, ``seq_num_frames`` and ``frame_num`` from capture time (core.camtrap_events
``EventFrames``, ``link_coco_images``): MegaDetector's create_sequences numbers, the same however the photos are cut
into parts, and the Camtrap DP event's id as the sequence's."""
from __future__ import annotations

import io
import json
import random
from typing import Any

import numpy as np
import pytest
from megadetector.data_management.cct_json_utils import SequenceOptions, create_sequences  # the oracle

from core import camtrap_events as ev
from core import mdformat
from gpu_batch.formats import camtrapdp, coco
from tests.unit.test_camtrap_events import COMPLETED, camera_day, detection, tapped


def framed(parts: list[ev.EventRecords], interval_s: float = ev.DEFAULT_INTERVAL_S
           ) -> tuple[list[ev.EventFrames], list[ev.Event]]:
    """Each part's share of the frames, read back as the link step reads it, and the events (from fresh copies)."""
    copies = [ev.EventRecords.from_bytes(p.to_bytes()) for p in parts]
    frames = ev.EventFrames(len(parts))
    for _ in ev.event_lines(parts, "MD", COMPLETED, interval_s, frames=frames):
        pass
    return [ev.EventFrames.from_bytes(frames.to_bytes(i)) for i in range(len(parts))], list(ev.events(copies,
                                                                                                     interval_s))


def found(shares: list[ev.EventFrames], files: list[str]) -> dict[str, tuple[str, int, int]]:
    out = {}
    for file in files:
        hits = [hit for share in shares if (hit := share.find(camtrapdp.media_id(file))) is not None]
        assert len(hits) <= 1, f"{file} is in more than one part's share"
        if hits:
            out[file] = hits[0]
    return out


def cct_image(entry: dict[str, Any]) -> dict[str, Any]:
    """The COCO image ``coco.convert_entry`` writes for an entry, read back from its JSON line."""
    image, _ = coco.convert_entry(entry, (640, 480), 0.2, mdformat.DETECTION_CATEGORIES)
    return json.loads(json.dumps(image))


def test_photos_a_day_apart_are_two_of_create_sequences_sequences() -> None:
    """Our images' ``datetime`` is what MegaDetector's tools read as the photo's day: dateutil reads EXIF's
    ``2024:06:01 06:20:00`` as today at 06:20, so two photos a day apart were 30 s apart to create_sequences."""
    entries = [{"file": "site/cam0/IMG_0001.JPG", "datetime": "2024:06:01 06:20:00", "detections": []},
               {"file": "site/cam0/IMG_0002.JPG", "datetime": "2024:06:02 06:20:30", "detections": []}]
    images = create_sequences([cct_image(e) for e in entries], SequenceOptions())
    assert {im["location"] for im in images} == {"site/cam0"}  # one camera
    starts = {im["seq_id"]: str(im["datetime"].date()) for im in images if im["frame_num"] == 0}
    assert sorted(starts.values()) == ["2024-06-01", "2024-06-02"]
    assert [(im["seq_num_frames"], im["frame_num"]) for im in images] == [(1, 0), (1, 0)]


def test_frames_are_create_sequences_numbers_and_the_sequence_is_the_camtrap_event() -> None:
    entries = camera_day(7)  # bursts with equal times: frames of equal times go in the results' order
    (share,), events = framed([tapped(entries)[0]])
    ours = found([share], [e["file"] for e in entries])
    images = [cct_image(e) for e in entries]  # our COCO images as written: MegaDetector's tools read them as they are
    create_sequences(images, SequenceOptions())
    assert len(ours) == len(entries) == len(share)
    assert {im["file_name"]: (im["seq_num_frames"], im["frame_num"]) for im in images} == \
        {file: (n, frame) for file, (_, n, frame) in ours.items()}
    theirs: dict[str, set[str]] = {}
    for im in images:
        theirs.setdefault(im["seq_id"], set()).add(im["file_name"])
    mine: dict[str, set[str]] = {}
    for file, (seq_id, _, _) in ours.items():
        mine.setdefault(seq_id, set()).add(file)
    assert sorted(map(sorted, mine.values())) == sorted(map(sorted, theirs.values()))
    assert set(mine) == {e.event_id for e in events}  # the ids of the Camtrap DP events
    assert max(n for _, n, _ in ours.values()) > 2


@pytest.mark.parametrize("per_gather", [1, 3, 1 << 20])
def test_each_part_gets_its_own_photos_numbered_as_in_one_pass(monkeypatch: pytest.MonkeyPatch,
                                                               per_gather: int) -> None:
    entries = camera_day(9, cameras=2, images=80)
    listed = {e["file"]: {"seq_id": "L1"} for e in entries[:5]}  # a list's sequence: no frames from time
    untimed = {"file": "site/cam0/100RECNX/untimed.jpg", "detections": [detection("1", 0.9)]}
    failed = mdformat.failure_entry("site/cam1/100RECNX/bad.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable")
    entries += [untimed, failed]
    files = [e["file"] for e in entries]
    expected = found(framed([tapped(entries, listed)[0]])[0], files)
    assert set(files) - set(expected) == {untimed["file"], failed["file"]}
    # the list's sequence is a visit too, per camera (its Camtrap DP event), its photos numbered in time order:
    # its listed photos and those of its camera without a sequence taken within its span, which join it
    # (core.camtrap_events._join_list_spans)
    by_camera: dict[str, list[tuple[str, int, int]]] = {}
    for file in listed:
        by_camera.setdefault(file.split("/")[1], []).append(expected[file])
    for seen in by_camera.values():
        ((seq, n),) = {(seq, n) for seq, n, _ in seen}
        visit = sorted(frame for key, _, frame in expected.values() if key == seq)
        assert visit == list(range(n)) and n >= len(seen)
    monkeypatch.setattr(ev, "RECORDS_PER_GATHER", per_gather)
    monkeypatch.setattr(ev, "EVENTS_PER_RUN", 5)
    rnd = random.Random(per_gather)
    for _ in range(3):
        cuts = sorted(rnd.sample(range(1, len(entries)), 5))
        spans = list(zip([0, *cuts], [*cuts, len(entries)]))
        shares, _ = framed([tapped(entries[a:b], listed)[0] for a, b in spans])
        assert found(shares, files) == expected
        for share, (a, b) in zip(shares, spans):  # a part's share is its own photos, no others
            assert len(share) == sum(1 for f in files[a:b] if f in expected)


def test_shares_streamed_to_sinks_as_the_cameras_come_are_the_held_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The events step streams each part's share to its blob (``sink``) instead of holding it: read back, the same
    answers; a part without time-grouped photos is never asked for a sink."""
    monkeypatch.setattr(ev, "RECORDS_PER_GATHER", 4)
    entries = camera_day(11, cameras=3, images=40)
    spans = [(0, 30), (30, 31), (31, 90), (90, 120)]
    listed = {e["file"]: {"seq_id": "L"} for e in entries[30:31]}  # part 1: a list's sequence alone, numbered too
    entries.append({"file": "site/cam0/untimed.jpg", "detections": []})
    spans.append((120, 121))  # part 4: a photo without a capture time alone, never numbered
    held, _ = framed([tapped(entries[a:b], listed)[0] for a, b in spans])
    streams: dict[int, io.BytesIO] = {}
    sunk = ev.EventFrames(len(spans), lambda i: streams.setdefault(i, io.BytesIO()))
    for _ in ev.event_lines([tapped(entries[a:b], listed)[0] for a, b in spans], "MD", COMPLETED, frames=sunk):
        pass
    assert sorted(streams) == [0, 1, 2, 3] and sunk.held(1) and not sunk.held(4)
    files = [e["file"] for e in entries]
    assert found([ev.EventFrames.from_bytes(streams[i].getvalue()) for i in sorted(streams)], files) == \
        found(held, files) and len(found(held, files)) == len(entries) - 1


def test_parts_written_before_records_named_their_photos_get_no_frames() -> None:
    entries = camera_day(3, cameras=1, images=30)
    old, new = tapped(entries[:15])[0], tapped(entries[15:])[0]
    old.media = np.zeros(0, np.uint64)  # what a version-2 fragment reads back as
    data = old.to_bytes().replace(b"trapbatch-events-3\n", b"trapbatch-events-2\n", 1)
    back = ev.EventRecords.from_bytes(data)
    assert not back.named() and len(back) == 15 and new.named()
    shares, _ = framed([back, new])
    whole = found(framed([tapped(entries)[0]])[0], [e["file"] for e in entries])
    assert len(shares[0]) == 0
    assert found(shares, [e["file"] for e in entries]) == {e["file"]: whole[e["file"]] for e in entries[15:]}
    with pytest.raises(ValueError):
        ev.EventFrames.from_bytes(b"something else")


def test_find_many_answers_as_find_does_for_each_photo() -> None:
    """One search for many photos (``link_coco_images``' lookups) gives each one ``find``'s answer: photos of the
    share, photos of none, ids that are no media id (number 0), ids past either end, and a share without photos."""
    entries = camera_day(7, cameras=2, images=30)
    (share,), _ = framed([tapped(entries[:40])[0]])
    ids = [camtrapdp.media_id(e["file"]) for e in entries] + ["", "not-hex-at-all!", "0" * 16, "f" * 16, "0" * 15 + "1"]
    assert share.find_many(ids) == [share.find(i) for i in ids]
    assert sum(hit is not None for hit in share.find_many(ids)) == len(share) > 0
    assert ev.EventFrames().find_many(ids) == [None] * len(ids) and share.find_many([]) == []


def coco_lines(entries: list[dict[str, Any]], listed: dict[str, dict[str, str]], continued: bool) -> list[str]:
    out = io.StringIO()
    writer = coco.CocoWriter(out, io.StringIO(), 0.2, mdformat.DETECTION_CATEGORIES, continued=continued)
    for e in entries:
        writer.add(e, (640, 480), listed.get(e["file"]))
    writer.flush()
    return out.getvalue().splitlines(keepends=True)


@pytest.mark.parametrize("continued, per_search", [(False, 1024), (True, 1024), (False, 7)])
def test_coco_image_lines_get_the_three_fields_unless_they_have_any(continued: bool, per_search: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # per_search 7: the photos are looked up a few lines at a time (EventFrames.find_many), chunks end mid-camera
    monkeypatch.setattr(ev, "_COCO_LINES_PER_SEARCH", per_search)
    entries = camera_day(5, cameras=2, images=20)
    listed = {entries[0]["file"]: {"seq_id": "L1"}, entries[1]["file"]: {"frame_num": "4"}}
    entries.append({"file": 'site/cam0/100RECNX/"odd",name.jpg', "datetime": entries[2]["datetime"],
                    "detections": []})
    entries.append(mdformat.failure_entry("site/cam1/100RECNX/bad.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable"))
    (share,), _ = framed([tapped(entries, listed)[0]])
    lines = coco_lines(entries, listed, continued)
    linked = list(ev.link_coco_images(iter(lines), share))
    assert len(linked) == len(lines)
    for before, after, entry in zip(lines, linked, entries):
        assert after.endswith("\n") and after.startswith(",") == before.startswith(",")
        image, was = json.loads(after.lstrip(",")), json.loads(before.lstrip(","))
        hit = share.find(camtrapdp.media_id(entry["file"]))
        if entry["file"] in listed or hit is None:
            assert after == before
            continue
        assert list(image)[-3:] == ["seq_id", "seq_num_frames", "frame_num"]  # create_sequences' order, last
        assert (image["seq_id"], image["seq_num_frames"], image["frame_num"]) == hit
        assert {k: v for k, v in image.items() if k not in ("seq_id", "seq_num_frames", "frame_num")} == was
    assert sum(after != before for after, before in zip(linked, lines)) == len(entries) - 3


def test_a_numbered_document_passes_megadetectors_coco_camera_traps_check() -> None:
    """MegaDetector's own CCT integrity check (a location on every image) accepts the document with the sequences,
    and its sequences are those the lines carry."""
    from megadetector.data_management.integrity_check_json_db import IntegrityCheckOptions, integrity_check_json_db

    entries = camera_day(8, cameras=2, images=25)
    (share,), _ = framed([tapped(entries)[0]])
    images, annotations, out = io.StringIO(), io.StringIO(), io.StringIO()
    writer = coco.CocoWriter(images, annotations, 0.2, mdformat.DETECTION_CATEGORIES)
    for e in entries:
        writer.add(e, (640, 480))
    writer.flush()
    writer.images = io.StringIO("".join(ev.link_coco_images(io.StringIO(images.getvalue()), share)))
    writer.finish(out, {"version": "1.0", "description": "test"})
    doc = json.loads(out.getvalue())
    options = IntegrityCheckOptions()
    options.verbose, options.nThreads = False, 1
    _, data, _ = integrity_check_json_db(json.loads(out.getvalue()), options)
    assert len(data["images"]) == len(entries)
    assert all({"seq_id", "seq_num_frames", "frame_num"} <= set(im) for im in doc["images"])


def test_a_photo_that_joined_a_lists_sequence_has_that_sequences_coco_seq_id() -> None:
    """An image list gives ``seq_id`` S1 to ``a`` and ``c`` and nothing to ``b``, taken between them: ``b`` is of
    S1 (``_join_list_spans``; its Camtrap DP rows name S1). Its COCO image gets the visit's numbers under the list's
    ``seq_id``, the one ``a`` and ``c`` carry (from the list), so a reader that groups COCO images by ``seq_id``
    (MegaDetector's sequence tools) finds the three together; before, ``b`` alone carried the event's key with
    ``seq_num_frames`` 3, a sequence of one image claiming three. Whole (the single activity's index, read back)
    and cut into parts (each part's share of the index), alike; an index written before the keys names the key."""
    def shot(name: str, at: str) -> dict[str, Any]:
        return {"file": name, "datetime": f"2024:06:01 {at}", "detections": [], "width": 640, "height": 480}

    entries = [shot("cam1/a.jpg", "06:00:00"), shot("cam1/b.jpg", "06:05:00"), shot("cam1/c.jpg", "06:10:00"),
               shot("cam1/x.jpg", "07:00:00"), shot("cam2/b.jpg", "06:05:00")]
    listed = {"cam1/a.jpg": {"seq_id": "S1 \"wet\" 季"}, "cam1/c.jpg": {"seq_id": "S1 \"wet\" 季"},
              "cam2/b.jpg": {"seq_id": "S1 \"wet\" 季"}}

    def lines(chosen: list[dict[str, Any]]) -> list[str]:
        out = io.StringIO()
        writer = coco.CocoWriter(out, io.StringIO(), 0.2, mdformat.DETECTION_CATEGORIES, continued=True)
        for e in chosen:
            writer.add(e, None, listed.get(e["file"]))
        writer.flush()
        return out.getvalue().splitlines(keepends=True)

    def numbered(text: list[str], share: ev.EventFrames, index: ev.EventIndex) -> dict[str, dict[str, Any]]:
        linked = "".join(ev.link_coco_images(text, share, index.sequence_names()))
        images = [json.loads(line.lstrip(",")) for line in linked.splitlines()]
        return {im["file_name"]: {k: im.get(k) for k in ("seq_id", "seq_num_frames", "frame_num")} for im in images}

    wanted = {"cam1/a.jpg": {"seq_id": "S1 \"wet\" 季", "seq_num_frames": None, "frame_num": None},
              "cam1/b.jpg": {"seq_id": "S1 \"wet\" 季", "seq_num_frames": 3, "frame_num": 1},
              "cam1/c.jpg": {"seq_id": "S1 \"wet\" 季", "seq_num_frames": None, "frame_num": None},
              "cam2/b.jpg": {"seq_id": "S1 \"wet\" 季", "seq_num_frames": None, "frame_num": None}}
    records = tapped(entries, listed)[0]
    index, frames = ev.EventIndex(), ev.EventFrames(1)
    for _ in ev.event_lines([records], "MD", COMPLETED, index=index, frames=frames):
        pass
    whole = numbered(lines(entries), ev.EventFrames.from_bytes(frames.to_bytes(0)), index.lookup())
    x = whole.pop("cam1/x.jpg")
    assert whole == wanted and x["seq_num_frames"] == 1 and len(str(x["seq_id"])) == 16  # x: its own visit
    cuts = [(0, 1), (1, 2), (2, 5)]
    parts = [tapped(entries[a:b], listed)[0] for a, b in cuts]
    index, frames = ev.EventIndex(), ev.EventFrames(len(parts))
    for _ in ev.event_lines(parts, "MD", COMPLETED, index=index, frames=frames):
        pass
    shares = [ev.EventFrames.from_bytes(frames.to_bytes(i)) for i in range(len(parts))]
    seen: dict[str, dict[str, Any]] = {}
    for (a, b), part, frame_share in zip(cuts, parts, shares):
        share = ev.EventIndex.from_bytes(index.to_bytes(ev.time_windows(part)))
        seen.update(numbered(lines(entries[a:b]), frame_share, share))
    assert seen == {**wanted, "cam1/x.jpg": x}
    # an index written before the sequences' keys (no list_key): b keeps the event's key, as it did
    data = index.to_bytes(ev.time_windows(parts[1]))
    with np.load(io.BytesIO(data[len(ev._INDEX_MAGIC):])) as doc:
        kept = {name: doc[name] for name in doc.files if name != "list_key"}
    older = io.BytesIO()
    older.write(ev._INDEX_MAGIC)
    np.savez(older, **kept)
    before = numbered(lines(entries[1:2]), shares[1], ev.EventIndex.from_bytes(older.getvalue()))["cam1/b.jpg"]
    assert before["seq_num_frames"] == 3 and len(str(before["seq_id"])) == 16
