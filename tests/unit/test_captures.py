"""Zooniverse subjects by capture (core.captures): which columns make captures, keys, ranks, grouping, the row."""
from __future__ import annotations

import csv
import io
import random
from typing import Any, Iterator, Sequence

import pytest

from core import captures
from core.captures import Capture, CaptureColumns, capture_columns, record, row_line, sort_key
from core.zooniverse import ManifestOptions
from core.mdformat import DETECTION_CATEGORIES

OPTIONS = ManifestOptions(threshold=0.2, attribution="Univ. of X", license="CC-BY-4.0",
                          metadata_columns=("season", "site", "roll", "capture", "image", "note"))


def _made(records: Sequence[Sequence[Any]], max_frames: int = 10**9) -> list[Capture]:
    """The subjects of sorted ``records`` as the combine makes them: ``tally``, then ``subjects``."""
    return list(captures.subjects(records, max_frames, captures.tally(records, max_frames).long))


def test_the_columns_that_make_captures() -> None:
    assert capture_columns(["season", "site", "roll", "capture"]) == CaptureColumns(
        ("season", "site", "roll", "capture"), None)
    assert capture_columns(["Season", "Site", "ROLL", "capture", "image"]) == CaptureColumns(
        ("Season", "Site", "ROLL", "capture"), "image")  # spelled as the list spells them
    assert capture_columns(["Capture ID", "site", "image-rank-in-capture", "image"]) == CaptureColumns(
        ("Capture ID",), "image-rank-in-capture")  # capture_id wins; the explicit rank before 'image'
    assert capture_columns(["season", "site", "capture"]) is None  # no roll: not the seed's capture
    assert capture_columns([]) is None


def test_keys_ranks_and_images_alone() -> None:
    cols = CaptureColumns(("season", "site", "roll", "capture"), "image")
    row = {"season": "S1", "site": "J05", "roll": "1", "capture": "14", "image": "2", "note": "x"}
    entry = {"file": "S1/J05/J05_R1/IMAG0036.JPG", "detections": [{"category": "1", "conf": 0.91234, "bbox": [0] * 4}]}
    rec = record(entry, row, cols, OPTIONS, DETECTION_CATEGORIES)
    assert rec[:5] == ["S1#J05#1#14", 2, entry["file"], 0.9123, "animal"]  # the seed pipeline's capture id
    assert rec[5] == ["S1", "J05", "1", "14", "2", "x"]
    alone = record(entry, {**row, "roll": " "}, cols, OPTIONS, DETECTION_CATEGORIES)
    assert alone[0] == captures.ALONE + entry["file"]  # a blank key cell: an image alone
    unranked = record(entry, {**row, "image": "second"}, cols, OPTIONS, DETECTION_CATEGORIES)
    assert unranked[1] > 10**9  # not a whole number: after the ranked images, by name


def test_grouping_takes_the_best_image_and_keeps_images_alone_apart() -> None:
    recs = [["k1", 2, "a/2.jpg", 0.3, "animal", ["m2"]], ["k1", 1, "a/9.jpg", 0.9, "person", ["m1"]],
            ["k2", 1, "b/1.jpg", 0.0, "empty", ["m3"]],
            [captures.ALONE + "c/1.jpg", 2**62, "c/1.jpg", 0.5, "animal", ["m4"]],
            [captures.ALONE + "c/2.jpg", 2**62, "c/2.jpg", 0.1, "empty", ["m5"]]]
    got = _made(sorted(recs, key=sort_key))
    assert [(g.key, g.files, g.conf, g.top, g.metadata) for g in got] == [
        (captures.ALONE + "c/1.jpg", ["c/1.jpg"], 0.5, "animal", ["m4"]),
        (captures.ALONE + "c/2.jpg", ["c/2.jpg"], 0.1, "empty", ["m5"]),
        ("k1", ["a/9.jpg", "a/2.jpg"], 0.9, "person", ["m1"]),  # rank order; the first image's metadata
        ("k2", ["b/1.jpg"], 0.0, "empty", ["m3"])]


def test_a_row_pads_to_the_widest_capture_and_reads_back() -> None:
    header = captures.columns(OPTIONS, 3)
    assert header[:4] == ["image_name_1", "image_name_2", "image_name_3", "folder"]
    assert header[-6:] == list(OPTIONS.metadata_columns)
    text = row_line(Capture("S1#J05#1#14", ["a/x, y.jpg", "a/z.jpg"], 0.9, "animal", ["S1", "J05", "1", "14", "1",
                                                                                     'say "hi"']), OPTIONS, 3)
    assert text.endswith("\r\n")
    [row] = list(csv.DictReader(io.StringIO(",".join(header) + "\r\n" + text, newline="")))
    assert (row["image_name_1"], row["image_name_2"], row["image_name_3"]) == ("a/x, y.jpg", "a/z.jpg", "")
    assert (row["folder"], row["#capture_id"], row["#images"], row["#detector_max_conf"]) == ("a", "S1#J05#1#14",
                                                                                             "2", "0.9")
    assert (row["attribution"], row["license"], row["note"]) == ("Univ. of X", "CC-BY-4.0", 'say "hi"')
    alone = row_line(Capture(captures.ALONE + "b.jpg", ["b.jpg"], 0.0, "empty", [""] * 6), OPTIONS, 1)
    assert alone.startswith("b.jpg,,Univ. of X,CC-BY-4.0,,,1,0.0,empty,0.2,")  # no capture id, part or folder
    clash = captures.columns(ManifestOptions(threshold=0.2, metadata_columns=("folder", "capture", "image_name_4")), 1)
    assert clash[-3:] == ["list_folder", "capture", "list_image_name_4"]  # never taken for a photo column
    spaced = row_line(Capture("c1", [" a/lead.jpg", "a/z.jpg"], 0.9, "animal", [" S1", "J05", "1", "14", "1", ""]),
                      OPTIONS, 2)
    [read] = list(csv.reader(io.StringIO(spaced, newline=""), skipinitialspace=True))  # as the Panoptes CLI reads it
    assert (read[0], read[1], read[-6]) == (" a/lead.jpg", "a/z.jpg", " S1")


def test_a_record_read_back_from_a_views_row_is_the_entrys_own() -> None:
    """The workers' merge views hold each image's per-image manifest row (``mergeview.zooniverse_lines``); the
    records made from them are the ones made from the entries, with quoting, commas, non-ASCII and odd ranks."""
    import csv as csv_module
    import io as io_module

    from gpu_batch.formats.mergeview import ListedRows, zooniverse_lines

    cols = capture_columns(OPTIONS.metadata_columns)
    assert cols is not None
    entries = [
        {"file": "S1/J05/a, b.jpg", "detections": [{"category": "2", "conf": 0.87654, "bbox": [0] * 4}]},
        {"file": "S1/J05/ü.jpg", "detections": [{"category": "1", "conf": 0.1, "bbox": [0] * 4}]},
        {"file": "S1/J06/c.jpg", "detections": []},
        {"file": "S1/J06/d.jpg", "failure": "image access failure", "detections": None},
    ]
    rows = {"S1/J05/a, b.jpg": {"season": "S1", "site": "J05", "roll": "1", "capture": "7", "image": "2",
                                "note": 'he said "go"\nthen left'},
            "S1/J05/ü.jpg": {"season": "S1", "site": "J05", "roll": "1", "capture": "7", "image": "1.0"},
            "S1/J06/c.jpg": {"season": "S1", "site": "", "roll": "1", "capture": "8", "image": "x", "note": "é"},
            "S1/J06/d.jpg": {"season": "S1", "site": "J06", "roll": "1", "capture": "8", "image": "3"}}
    lines = zooniverse_lines(entries, OPTIONS.threshold, ListedRows("etag", OPTIONS.metadata_columns, rows))
    assert lines is not None
    data, lengths = lines.filled(",,,")
    from_views, at = [], 0
    for length in lengths:
        fields = next(csv_module.reader(io_module.StringIO(data[at:at + length].decode("utf-8"), newline="")))
        at += length
        from_views.append(captures.record_from_row(fields, cols, OPTIONS))
    from_entries = [record(e, rows[e["file"]], cols, OPTIONS, DETECTION_CATEGORIES) for e in entries
                    if not e.get("failure")]
    assert from_views == from_entries and len(from_views) == 3
    assert [r[1] for r in from_views[:2]] == [2, 1] and from_views[2][0].startswith(captures.ALONE)


def test_visits_key_a_visits_photos_by_its_id_and_split_a_long_one_in_frame_order() -> None:
    """A visit of at most ``frames`` photos is one subject (its id), a longer one is subjects of ``frames`` photos
    (``<id>#1``...), ranked by frame; a photo in no visit keeps the key of an image alone."""
    from core.captures import ALONE, visit_captures, visits

    places = {"a.jpg": ("e1", 2, 1), "b.jpg": ("e1", 2, 0), "c.jpg": ("e2", 5, 4), "d.jpg": ("e2", 5, 0),
              "e.jpg": ("e2", 5, 2), "f.jpg": ("e2", 5, 1), "g.jpg": ("e2", 5, 3)}
    key = visit_captures(2)
    assert key.visit_frames == 2 and not key.key
    records = [[captures.capture_key({}, key, f), 2**62, f, 0.5, "animal", []]
               for f in ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg", "untimed.jpg"]]
    assert records[-1][0] == ALONE + "untimed.jpg"
    made = _made(sorted(visits(records, places.get, 2), key=sort_key))
    subjects = {c.key: c.files for c in made}
    assert subjects == {ALONE + "untimed.jpg": ["untimed.jpg"], "e1": ["b.jpg", "a.jpg"], "e2#1": ["d.jpg", "f.jpg"],
                        "e2#2": ["e.jpg", "g.jpg"], "e2#3": ["c.jpg"]}
    # a split visit's subjects say which part they are, in the column a split capture uses (``subjects``)
    assert {c.key: c.part for c in made} == {ALONE + "untimed.jpg": "", "e1": "", "e2#1": "1 of 3", "e2#2": "2 of 3",
                                             "e2#3": "3 of 3"}
    again = sorted(visits([[captures.capture_key({}, key, f), 2**62, f, 0.5, "animal", []] for f in places], places.get,
                          2), key=sort_key)
    assert _made(again, 2) == [c for c in made if c.files != ["untimed.jpg"]]  # no longer than the cap: as they are


def test_a_capture_longer_than_max_frames_is_subjects_of_at_most_that_many_in_rank_order() -> None:
    """One burst of 45 frames (or a captures file that made every photo of a stuck clock one capture) padded every
    row of the manifest to 45 image columns; now a capture of more than ``max_frames`` images is several subjects of
    at most that many, in rank order, each saying which part it is and carrying its own images' detector fields, and
    the header has ``max_frames`` image columns at most."""
    recs = [["burst", rank, f"b/{rank:03d}.jpg", 0.9 if rank == 30 else rank / 1000, "animal" if rank == 30 else "x",
             ["S1"]] for rank in range(45, 0, -1)]
    recs.append(["short", 1, "s/1.jpg", 0.4, "person", ["S2"]])
    whole = _made(sorted(recs, key=sort_key))
    assert [len(c.files) for c in whole] == [45, 1]
    made = _made(sorted(recs, key=sort_key), 20)
    assert [(c.key, c.part, len(c.files)) for c in made] == [("burst", "1 of 3", 20), ("burst", "2 of 3", 20),
                                                            ("burst", "3 of 3", 5), ("short", "", 1)]
    assert [f for c in made[:3] for f in c.files] == [f"b/{r:03d}.jpg" for r in range(1, 46)]  # rank order kept
    assert [(c.conf, c.top) for c in made] == [(0.02, "x"), (0.9, "animal"), (0.045, "x"), (0.4, "person")]
    assert all(c.metadata == ["S1"] for c in made[:3])
    options = ManifestOptions(threshold=0.2, metadata_columns=("season",))
    assert options.max_frames == 20 == zooniverse_default_frames()
    header = captures.columns(options, max(len(c.files) for c in made))
    assert header.count("image_name_20") == 1 and "image_name_21" not in header
    [row] = list(csv.DictReader(io.StringIO(",".join(header) + "\r\n" + row_line(made[1], options, 20),
                                            newline="")))
    assert (row["#capture_id"], row["#capture_part"], row["#images"], row["image_name_1"]) == (
        "burst", "2 of 3", "20", "b/021.jpg")


def zooniverse_default_frames() -> int:
    from core.zooniverse import DEFAULT_MAX_FRAMES
    return DEFAULT_MAX_FRAMES


def test_a_split_visits_parts_are_labelled_by_those_the_manifests_hold() -> None:
    """``visits`` numbers a visit's parts by its frames, photos left out of the manifests (flagged, cut short)
    included; the combine labels the parts again by those that are there: a visit of 5 frames at 2 a subject whose
    last photo and two middle ones are left out is two subjects, ``1 of 2`` and ``2 of 2``; one whose second part
    alone is left is one subject, no part; one whose parts are all there keeps its labels."""
    from core.captures import SplitVisits, relabelled, visits

    places = {f"{v}{i}.jpg": (v, 5, i) for v in ("a", "b", "c") for i in range(5)}
    kept = ["a0.jpg", "a1.jpg", "a4.jpg", "b2.jpg", "b3.jpg"] + [f"c{i}.jpg" for i in range(5)]
    records = [["", 2**62, f, 0.5, "animal", []] for f in kept]
    made = _made(sorted(visits(records, places.get, 2), key=sort_key))
    assert {c.key: c.part for c in made} == {"a#1": "1 of 3", "a#3": "3 of 3", "b#2": "2 of 3", "c#1": "1 of 3",
                                             "c#2": "2 of 3", "c#3": "3 of 3"}
    seen = SplitVisits()
    for capture in made:
        seen.see(capture.visit, capture.part)
    lacking = seen.settle()
    assert lacking == {"a": [1, 3], "b": [2]}
    assert {c.key: relabelled(c, lacking).part for c in made} == {
        "a#1": "1 of 2", "a#3": "2 of 2", "b#2": "", "c#1": "1 of 3", "c#2": "2 of 3", "c#3": "3 of 3"}


def _whole_then_split(records: Sequence[Sequence[Any]], max_frames: int) -> Iterator[Capture]:
    """The subjects as the combine made them before it streamed (95808c4: ``group`` held each capture whole, images
    and scores, then ``subjects`` cut it), kept here as the reference the streaming must match byte for byte."""
    whole: list[tuple[Capture, list[tuple[float, str]]]] = []
    for rec in records:
        key = str(rec[0])
        if whole and key == whole[-1][0].key and not key.startswith(captures.ALONE):
            current, scores = whole[-1]
            current.files.append(str(rec[2]))
            scores.append((float(rec[3]), str(rec[4])))
            if float(rec[3]) > current.conf:
                current.conf, current.top = float(rec[3]), str(rec[4])
            continue
        whole.append((Capture(key, [str(rec[2])], float(rec[3]), str(rec[4]), [str(v) for v in rec[5]],
                              str(rec[6]) if len(rec) > 6 else "", str(rec[7]) if len(rec) > 7 else ""),
                      [(float(rec[3]), str(rec[4]))]))
    for capture, all_scores in whole:
        count = len(capture.files)
        if count <= max_frames:
            yield capture
            continue
        parts = -(-count // max_frames)
        for k in range(parts):
            files = capture.files[k * max_frames:(k + 1) * max_frames]
            scores = all_scores[k * max_frames:(k + 1) * max_frames]
            conf, top = scores[0]
            for c, t in scores[1:]:
                if c > conf:
                    conf, top = c, t
            yield Capture(capture.key, files, conf, top, capture.metadata, captures.part_label(k + 1, parts))


def _manifest(made: Iterator[Capture], again: Iterator[Capture], options: ManifestOptions) -> tuple[Any, ...]:
    """What the combine writes of the subjects: pass 1 (``made``) counts them and sees the split visits' parts,
    pass 2 (``again``, the same subjects made anew) their rows, relabelled, padded to the widest."""
    seen = captures.SplitVisits()
    first = list(made)
    for capture in first:
        seen.see(capture.visit, capture.part)
    lacking = seen.settle()
    widest = max((len(c.files) for c in first), default=0)
    rows = [row_line(captures.relabelled(c, lacking), options, widest) for c in again]
    return len(first), sum(len(c.files) for c in first), widest, rows


def _mixed(rng: random.Random, frames: int, max_frames: int) -> list[list[Any]]:
    """Records as the parts write them, sorted: list-defined captures of 1, N, N+1, 2N+1 and 3N images (N the cap)
    and of random sizes, ranks against name order, ties of confidence (the first of the best wins), images alone,
    and visits (``visits``, split at ``frames``) of random lengths, some of whose photos are left out of the
    manifests (flagged, cut short: no record), so some parts are missing whole."""
    recs: list[list[Any]] = []
    sizes = [1, max_frames, max_frames + 1, 2 * max_frames + 1, 3 * max_frames] + [rng.randint(1, 3 * max_frames + 2)
                                                                                  for _ in range(6)]
    for c, size in enumerate(sizes):
        for i in range(size):
            conf = rng.choice([0.0, 0.5, 0.5, 0.9, round(rng.random(), 4)])
            recs.append([f"S1#J{c:02d}#1#{c}", size - i, f"c{c}/{i:03d}.jpg", conf, rng.choice(["animal", "person"]),
                         [f"m{c}-{i}", "", "1", str(c), str(size - i), f"n{i}"]])
    for i in range(3):
        recs.append([captures.ALONE + f"alone/{i}.jpg", 2**62, f"alone/{i}.jpg", 0.1 * i, "animal", ["a"] * 6])
    recs.append([captures.ALONE + "alone/0.jpg", 2**62, "alone/0.jpg", 0.3, "person", ["b"] * 6])  # listed twice
    places: dict[str, tuple[str, int, int]] = {}
    for v, length in enumerate([1, frames, frames + 1, 2 * frames + 1] + [rng.randint(1, 4 * frames)
                                                                          for _ in range(6)]):
        for frame in range(length):
            places[f"v{v}/{frame:03d}.jpg"] = (f"e{v}", length, frame)
    kept = [f for f in places if rng.random() > 0.3] + ["v2/000.jpg", "untimed.jpg"]
    visit_recs = [["", 2**62, f, rng.choice([0.2, 0.7]), "animal", [f"w-{f}"] + [""] * 5] for f in dict.fromkeys(kept)]
    recs += list(captures.visits(visit_recs, places.get, frames))
    return sorted(recs, key=sort_key)


@pytest.mark.parametrize("max_frames", [1, 2, 3, 20])
def test_the_streamed_subjects_write_the_bytes_the_whole_captures_did(max_frames: int) -> None:
    """The combine splits a long capture as its records stream past (``tally``, then ``subjects``) instead of
    holding it whole: the manifests' bytes stay those of the whole captures (``_whole_then_split``), on captures of
    1, N, N+1, 2N+1 images at a cap of N, list-defined and visits, photos left out, and a split visit's
    ``#capture_part`` still counts the subjects the manifests hold."""
    relabelled = split = 0
    for seed in range(25):
        rng = random.Random(seed * 100 + max_frames)
        frames = rng.randint(1, max_frames)  # a request's zooniverse_visit_frames: at most the app's cap
        recs = _mixed(rng, frames, max_frames)
        counted = captures.tally(recs, max_frames)
        want = _manifest(_whole_then_split(recs, max_frames), _whole_then_split(recs, max_frames), OPTIONS)
        got = _manifest(captures.subjects(recs, max_frames, counted.long),
                        captures.subjects(recs, max_frames, counted.long), OPTIONS)
        assert got == want, seed
        assert (counted.subjects, counted.images, counted.widest) == want[:3]
        lacking = captures.SplitVisits()
        for capture in _whole_then_split(recs, max_frames):
            lacking.see(capture.visit, capture.part)
        lacked = lacking.settle()
        assert counted.split_visits.settle() == lacked
        relabelled += len(lacked)
        parts: dict[str, list[str]] = {}
        for row in csv.DictReader(io.StringIO(",".join(captures.columns(OPTIONS, want[2])) + "\r\n" + "".join(
                want[3]), newline="")):
            if row["#capture_part"]:  # a visit's parts are keyed <id>#k, a list's capture's parts by its id
                cid = row["#capture_id"]
                parts.setdefault(cid.split("#")[0] if cid.startswith("e") else cid, []).append(row["#capture_part"])
        split += len(parts)
        for key, labels in parts.items():  # each split capture or visit: its parts 1..n of the n the manifests hold
            assert sorted(labels) == sorted(captures.part_label(k, len(labels)) for k in range(1, len(labels) + 1)), key
    assert relabelled and split  # the inputs did split captures and leave split visits' parts out


def test_the_second_pass_refuses_records_the_first_did_not_count() -> None:
    """The second pass labels a long capture's parts by the first pass's count: records that changed in between
    (runs rewritten while the combine ran) fail with what to do, not a manifest whose ``of n`` is wrong."""
    recs = sorted([["k", i, f"{i}.jpg", 0.1, "animal", []] for i in range(5)], key=sort_key)
    counted = captures.tally(recs, 2)
    assert list(counted.long) == [5] and counted.subjects == 3
    with pytest.raises(ValueError, match="run the exports again"):
        list(captures.subjects(recs[:4], 2, counted.long))
    with pytest.raises(ValueError, match="run the exports again"):
        list(captures.subjects(recs + [["k", 9, "9.jpg", 0.1, "animal", []]], 2, counted.long))
    with pytest.raises(ValueError, match="run the exports again"):
        list(captures.subjects(recs[:2], 2, counted.long))
