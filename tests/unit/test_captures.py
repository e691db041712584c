"""Zooniverse subjects by capture (core.captures): which columns make captures, keys, ranks, grouping, the row."""
from __future__ import annotations

import csv
import io

from core import captures
from core.captures import Capture, CaptureColumns, capture_columns, group, record, row_line, sort_key
from core.zooniverse import ManifestOptions
from core.mdformat import DETECTION_CATEGORIES

OPTIONS = ManifestOptions(threshold=0.2, attribution="Univ. of X", license="CC-BY-4.0",
                          metadata_columns=("season", "site", "roll", "capture", "image", "note"))


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
    got = list(group(sorted(recs, key=sort_key)))
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
    made = list(group(sorted(visits(records, places.get, 2), key=sort_key)))
    subjects = {c.key: c.files for c in made}
    assert subjects == {ALONE + "untimed.jpg": ["untimed.jpg"], "e1": ["b.jpg", "a.jpg"], "e2#1": ["d.jpg", "f.jpg"],
                        "e2#2": ["e.jpg", "g.jpg"], "e2#3": ["c.jpg"]}
    # a split visit's subjects say which part they are, in the column a split capture uses (``subjects``)
    assert {c.key: c.part for c in made} == {ALONE + "untimed.jpg": "", "e1": "", "e2#1": "1 of 3", "e2#2": "2 of 3",
                                             "e2#3": "3 of 3"}
    assert list(captures.subjects(made, 2)) == made  # already no longer than the cap: left as they are


def test_a_capture_longer_than_max_frames_is_subjects_of_at_most_that_many_in_rank_order() -> None:
    """One burst of 45 frames (or a captures file that made every photo of a stuck clock one capture) padded every
    row of the manifest to 45 image columns; now a capture of more than ``max_frames`` images is several subjects of
    at most that many, in rank order, each saying which part it is and carrying its own images' detector fields, and
    the header has ``max_frames`` image columns at most."""
    recs = [["burst", rank, f"b/{rank:03d}.jpg", 0.9 if rank == 30 else rank / 1000, "animal" if rank == 30 else "x",
             ["S1"]] for rank in range(45, 0, -1)]
    recs.append(["short", 1, "s/1.jpg", 0.4, "person", ["S2"]])
    whole = list(group(sorted(recs, key=sort_key)))
    assert [len(c.files) for c in whole] == [45, 1]
    made = list(captures.subjects(whole, 20))
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
    made = list(group(sorted(visits(records, places.get, 2), key=sort_key)))
    assert {c.key: c.part for c in made} == {"a#1": "1 of 3", "a#3": "3 of 3", "b#2": "2 of 3", "c#1": "1 of 3",
                                             "c#2": "2 of 3", "c#3": "3 of 3"}
    seen = SplitVisits()
    for capture in made:
        seen.see(capture)
    lacking = seen.settle()
    assert lacking == {"a": [1, 3], "b": [2]}
    assert {c.key: relabelled(c, lacking).part for c in made} == {
        "a#1": "1 of 2", "a#3": "2 of 2", "b#2": "", "c#1": "1 of 3", "c#2": "2 of 3", "c#3": "3 of 3"}
