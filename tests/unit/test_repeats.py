"""Repeated-detection search: MegaDetector's RDE phase-1 rules, streamed folder by folder. Every test runs three
ways: one detection at a time (``_Folder``), batched with numpy from the first candidate in batches of 7, and
batched from the 37th candidate in batches of 64 (``_Batched``: a folder hands over mid-way, rows of one call go
either side, a batch holds detections that match each other)."""
from __future__ import annotations

import random
from typing import Any

import pytest

from collections.abc import Mapping

from core import repeats
from core.repeats import RepeatFinder, RepeatOptions, detection_box, eligible_detections, iou

BOX = [0.40, 0.30, 0.10, 0.08]


@pytest.fixture(autouse=True, params=[(None, None), (1, 7), (37, 64)], ids=["one-at-a-time", "batched", "hand-over"])
def search_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    batched_from, batch = request.param
    if batched_from is not None:
        monkeypatch.setattr(repeats, "_BATCHED_FROM", batched_from)
        monkeypatch.setattr(repeats, "_BATCH", batch)


def _img(name: str, *dets: tuple[str, list[float], float]) -> dict[str, Any]:
    return {"file": name, "detections": [{"category": c, "bbox": b, "conf": p} for c, b, p in dets]}


def _jitter(box: list[float], rng: random.Random, amount: float = 0.001) -> list[float]:
    return [v + rng.uniform(-amount, amount) for v in box]


def test_a_box_in_twenty_images_of_a_folder_is_suspicious_nineteen_is_not() -> None:
    rng = random.Random(1)
    finder = RepeatFinder()
    for i in range(20):
        finder.add(_img(f"cam1/{i:03d}.jpg", ("1", _jitter(BOX, rng), 0.5)))
    for i in range(19):
        finder.add(_img(f"cam2/{i:03d}.jpg", ("1", _jitter(BOX, rng), 0.5)))
    out = finder.result()
    assert [(r["folder"], r["count"]) for r in out["locations"]] == [("cam1", 20)]
    loc = out["locations"][0]
    assert loc["id"] == "r00001" and loc["category"] == "1" and loc["files"][:2] == ["cam1/000.jpg", "cam1/001.jpg"]
    assert len(loc["files"]) == 10 and loc["conf_min"] == loc["conf_max"] == 0.5


def test_categories_sizes_and_confidences_are_filtered_as_megadetector_does() -> None:
    finder = RepeatFinder(RepeatOptions(occurrence_threshold=10))
    big = [0.1, 0.1, 0.5, 0.5]  # area 0.25 > 0.2: often a real animal filling the frame
    for i in range(25):
        finder.add(_img(f"c/{i:03d}.jpg", ("1" if i % 2 else "2", BOX, 0.5), ("1", big, 0.9),
                        ("1", [0.7, 0.7, 0.05, 0.05], 0.05)))  # below confidence_min
    found = finder.result()["locations"]
    # the same place, counted per category; the big box and the low-confidence one are never candidates
    assert [(r["category"], r["count"], r["bbox"]) for r in found] == [("2", 13, BOX), ("1", 12, BOX)]
    assert finder.detections_considered == 25


def test_folders_are_separate_and_nested_folders_do_not_close_their_parent() -> None:
    finder = RepeatFinder(RepeatOptions(occurrence_threshold=3))
    names = ["a/1.jpg", "a/b.jpg", "a/b/x1.jpg", "a/b/x2.jpg", "a/b/x3.jpg", "a/c.jpg", "b/1.jpg"]
    for n in names:  # lexicographic order: folder "a" resumes after its subfolder "a/b"
        finder.add(_img(n, ("1", BOX, 0.5)))
    out = {r["folder"]: r["count"] for r in finder.result()["locations"]}
    assert out == {"a": 3, "a/b": 3}


def test_a_folder_over_the_cap_is_not_searched_but_named_with_its_count_and_what_to_do() -> None:
    """MegaDetector's maxImagesPerFolder, by eligible detections (what the search's time grows with, squared): a
    folder holding more than max_folder_detections finds nothing and is named in the document; one at the cap, and
    every other folder, is searched as before; the eligible detections of both still count as considered."""
    rng = random.Random(3)
    finder = RepeatFinder(RepeatOptions(max_folder_detections=25))
    for i in range(25):  # at the cap: searched
        finder.add(_img(f"at/{i:03d}.jpg", ("1", _jitter(BOX, rng), 0.5)))
    for i in range(13):  # 26 eligible detections in 13 images: over the cap
        finder.add(_img(f"over/{i:03d}.jpg", ("1", _jitter(BOX, rng), 0.5), ("2", _jitter(BOX, rng), 0.6)))
    for i in range(21):
        finder.add(_img(f"under/{i:03d}.jpg", ("1", _jitter(BOX, rng), 0.5)))
    out = finder.result("task-0123456789abcdef0123/runs/r000000000001abc")
    assert [(r["folder"], r["count"]) for r in out["locations"]] == [("at", 25), ("under", 21)]
    assert out["detections_considered"] == 25 + 26 + 21 and out["options"]["max_folder_detections"] == 25
    skipped = out["skipped_folders"]
    assert {k: skipped[k] for k in ("folders", "detections", "listed", "more")} == {
        "folders": 1, "detections": 26, "listed": [{"folder": "over", "detections": 26}], "more": 0}
    assert "max_folder_detections (25)" in skipped["hint"] and "subfolders" in skipped["hint"]
    assert "trapbatch repeats task-0123456789abcdef0123 --search --max-folder-detections 26" in skipped["hint"]
    assert "skipped_folders" not in RepeatFinder().result()  # nothing skipped: the document as before


def test_the_document_lists_the_first_hundred_skipped_folders_and_counts_the_rest() -> None:
    skipped = [(f"cam{i:03d}", 4_000_000 if i == 7 else 900_000 + i) for i in range(130)]
    doc = repeats.rank_locations([], RepeatOptions(), 0, skipped)["skipped_folders"]
    assert doc["folders"] == 130 and doc["more"] == 30 and len(doc["listed"]) == repeats.SKIPPED_LISTED == 100
    assert doc["listed"][0] == {"folder": "cam000", "detections": 900_000}
    assert doc["detections"] == sum(n for _, n in skipped)
    # a folder past what any search may take: only splitting it helps, and the hint says no command that would fail
    assert "--max-folder-detections" not in doc["hint"] and "subfolders" in doc["hint"]


def test_iou_matches_megadetector_definition() -> None:
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 1, 1), (2, 2, 1, 1)) == 0.0
    assert iou((0, 0, 2, 1), (1, 0, 2, 1)) == pytest.approx(1 / 3)


def test_same_locations_as_megadetectors_own_folder_search() -> None:
    """Oracle: megadetector's repeat_detections_core._find_matches_in_directory on the same folder."""
    try:
        import pandas as pd
        from megadetector.postprocessing.repeat_detection_elimination import repeat_detections_core as rdc
    except ImportError as exc:  # a missing oracle is a broken setup, not a reason to skip
        pytest.fail(f"MegaDetector oracle not installed ({exc}): run scripts/install_oracle_deps.sh", pytrace=False)

    rng = random.Random(7)
    fixed = [([0.40, 0.30, 0.10, 0.08], "1"), ([0.05, 0.70, 0.12, 0.20], "1"), ([0.62, 0.12, 0.30, 0.30], "2"),
             ([0.41, 0.30, 0.10, 0.08], "2")]
    entries = []
    for i in range(300):
        dets = []
        for box, cat in fixed:
            if rng.random() < 0.35:
                dets.append({"category": cat, "bbox": _jitter(box, rng, 0.004), "conf": round(rng.uniform(0.05, 0.99), 3)})
        for _ in range(rng.randint(0, 3)):  # animals: boxes anywhere
            w, h = rng.uniform(0.02, 0.5), rng.uniform(0.02, 0.5)
            dets.append({"category": rng.choice("123"), "bbox": [rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h],
                         "conf": round(rng.uniform(0.05, 0.99), 3)})
        entries.append({"file": f"site/cam/{i:04d}.jpg", "detections": dets})

    ours_finder = RepeatFinder()
    for e in entries:
        ours_finder.add(e)
    ours = sorted((r["category"], tuple(r["bbox"]), r["count"]) for r in ours_finder.result()["locations"])

    rows = pd.DataFrame([{"file": e["file"], "detections": e["detections"],
                          "max_detection_conf": max((d["conf"] for d in e["detections"]), default=0.0)}
                         for e in entries])
    options = rdc.RepeatDetectionOptions()
    candidates = rdc._find_matches_in_directory(("site/cam", rows), options)
    theirs = sorted((c.category, tuple(c.bbox), len(c.instances)) for c in candidates
                    if len(c.instances) >= options.occurrenceThreshold)
    assert len(theirs) >= 3  # the comparison is not empty
    assert ours == theirs


def test_removal_negates_exactly_the_detections_the_search_counted() -> None:
    from core.repeats import RepeatRemoval

    rng = random.Random(3)
    entries = []
    for i in range(30):
        dets = [{"category": "1", "bbox": _jitter(BOX, rng), "conf": 0.4},      # the rock
                {"category": "2", "bbox": _jitter(BOX, rng), "conf": 0.4},      # same place, other category
                {"category": "1", "bbox": [0.05, 0.05, 0.1, 0.1], "conf": 0.9}]  # elsewhere
        entries.append({"file": f"cam/{i:03d}.jpg", "detections": dets})
    entries.append({"file": "other/000.jpg", "detections": [{"category": "1", "bbox": BOX, "conf": 0.4}]})
    entries.append({"file": "cam/zz_failed.jpg", "failure": "image access failure", "detections": None})
    finder = RepeatFinder()
    for e in entries:
        finder.add(e)
    locations = finder.result()["locations"]
    rock = [r for r in locations if r["category"] == "1" and r["bbox"][0] > 0.3]
    assert len(rock) == 1 and rock[0]["count"] == 30
    removal = RepeatRemoval(rock)
    out = [removal.apply(e) for e in entries]
    assert removal.marked == 30
    for before, after in zip(entries, out):
        if before.get("failure"):
            assert after == before
            continue
        for b, a in zip(before["detections"], after["detections"]):
            is_rock = before["file"].startswith("cam/") and b["category"] == "1" and b["bbox"][0] > 0.3
            assert a["conf"] == (-b["conf"] if is_rock else b["conf"]) and a["bbox"] == b["bbox"]
    assert entries[0]["detections"][0]["conf"] == 0.4  # inputs untouched


def test_malformed_detections_are_skipped_not_fatal() -> None:
    from gpu_batch.formats.detections_csv import CSV_COLUMNS, csv_row
    from gpu_batch.formats.previewsample import preview_category
    from core.repeats import RepeatRemoval

    odd = {"file": "cam/x.jpg", "detections": [{"category": "1", "conf": None, "bbox": BOX},
                                               {"category": "1", "conf": 0.5, "bbox": [0.1, None]},
                                               {"category": "1", "conf": 0.5}, "not a dict",
                                               {"category": "1", "conf": 0.5, "bbox": BOX}]}
    finder = RepeatFinder(RepeatOptions(occurrence_threshold=1))
    finder.add(odd)
    assert finder.detections_considered == 1
    loc = finder.result()["locations"]
    out = RepeatRemoval(loc).apply(odd)
    assert out["detections"][:4] == odd["detections"][:4] and out["detections"][4]["conf"] == -0.5
    assert csv_row(odd, 0.2)[CSV_COLUMNS.index("animal_count")] == 3  # the CSV counts confidences (as summarize does); boxes are not its concern
    assert preview_category(odd, 0.2) == "detections"


def _brute_force(rows: list[tuple[str, str, float, float, float, float, float]],
                 options: RepeatOptions) -> list[tuple[Any, ...]]:
    """The folder search with every candidate compared (what MegaDetector's rules say, without any index)."""
    locs: list[dict[str, Any]] = []
    for file, cat, x, y, w, h, conf in rows:
        box = (x, y, w, h)
        matched = False
        for loc in locs:
            if loc["category"] == cat and iou(box, loc["bbox"]) >= options.iou_threshold:
                matched = True
                loc["count"] += 1
                loc["conf"] = (min(loc["conf"][0], conf), max(loc["conf"][1], conf))
                if len(loc["files"]) < options.files_listed and loc["files"][-1] != file:
                    loc["files"].append(file)
        if not matched:
            locs.append({"category": cat, "bbox": box, "count": 1, "conf": (conf, conf), "files": [file]})
    return [(loc["category"], list(loc["bbox"]), loc["count"], *loc["conf"], loc["files"]) for loc in locs]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_size_and_place_index_finds_every_pair_a_full_comparison_finds(seed: int) -> None:
    """Boxes made to sit at the edge of the bound: sides scaled by 0.88-1.0 and centres shifted by up to 12 % of the
    side, so many pairs have IoU just above and just below 0.9; every candidate's count, confidence range and files
    must equal those of comparing with all candidates."""
    from core.repeats import search_folder

    rng = random.Random(seed)
    options = RepeatOptions(occurrence_threshold=1)
    bases = [(rng.uniform(0, 0.9), rng.uniform(0, 0.9), rng.uniform(0.005, 0.45), rng.uniform(0.005, 0.45))
             for _ in range(30)]
    rows = []
    for i in range(1500):
        x, y, w, h = rng.choice(bases)
        sw, sh = rng.uniform(0.88, 1.0), rng.uniform(0.88, 1.0)
        box = (x + rng.uniform(-0.12, 0.12) * w, y + rng.uniform(-0.12, 0.12) * h, w * sw, h * sh)
        rows.append((f"cam/{i // 2:05d}.jpg", rng.choice("12"), *box, round(rng.uniform(0.1, 1.0), 3)))
    ours = search_folder("cam", rows, options)
    theirs = _brute_force(rows, options)
    assert len(ours) == len(theirs) > 200  # many candidates, so the index really had to choose
    assert sum(r["count"] for r in ours) - len(ours) > 500  # and many detections matched a candidate
    assert sum(r["count"] for r in ours) > len(rows)  # some of them several
    assert [(r["category"], r["bbox"], r["count"], r["conf_min"], r["conf_max"], r["files"]) for r in ours] == theirs


@pytest.mark.parametrize("threshold", [0.5, 0.75, 1.0])
def test_the_sieve_before_the_iou_keeps_every_pair_at_other_thresholds(threshold: float) -> None:
    """The index's size and centre bounds, and the sieve that applies them to each candidate a detection meets, follow
    the IoU threshold: at 0.5 they are wide, at 1.0 only an identical box may match (exact copies are mixed in)."""
    from core.repeats import search_folder

    rng = random.Random(int(threshold * 100))
    options = RepeatOptions(occurrence_threshold=1, iou_threshold=threshold)
    shrink = max(threshold - 0.05, 0.3)
    bases = [(rng.uniform(0, 0.9), rng.uniform(0, 0.9), rng.uniform(0.005, 0.45), rng.uniform(0.005, 0.45))
             for _ in range(25)]
    rows = []
    for i in range(1200):
        x, y, w, h = rng.choice(bases)
        if rng.random() < 0.3:
            box = (x, y, w, h)  # an exact repeat: matches at any threshold
        else:
            shift = (1 - threshold) * 1.3 + 0.01
            box = (x + rng.uniform(-shift, shift) * w, y + rng.uniform(-shift, shift) * h,
                   w * rng.uniform(shrink, 1.0), h * rng.uniform(shrink, 1.0))
        rows.append((f"cam/{i // 2:05d}.jpg", "1", *box, 0.5))
    ours = search_folder("cam", rows, options)
    theirs = _brute_force(rows, options)
    assert sum(r["count"] for r in ours) - len(ours) > 100  # many matches
    assert [(r["category"], r["bbox"], r["count"], r["conf_min"], r["conf_max"], r["files"]) for r in ours] == theirs


def test_boxes_with_odd_sides_only_start_candidates() -> None:
    from core.repeats import search_folder

    rows = [("c/a.jpg", "1", 0.5, 0.5, -0.1, 0.1, 0.5), ("c/b.jpg", "1", 0.5, 0.5, -0.1, 0.1, 0.5),
            ("c/c.jpg", "1", 0.5, 0.5, float("inf"), 0.1, 0.5), ("c/d.jpg", "1", 0.4, 0.5, 0.1, 0.1, 0.5),
            ("c/e.jpg", "1", 0.4, 0.5, 0.1, 0.1, 0.5)]
    found = search_folder("c", rows, RepeatOptions(occurrence_threshold=1))
    assert [r["count"] for r in found] == [1, 1, 1, 2]
    assert [r["count"] for r in found] == [r[2] for r in _brute_force(rows, RepeatOptions(occurrence_threshold=1))]
    with pytest.raises(ValueError):
        RepeatOptions(iou_threshold=0)


def _eligible_plainly(entry: dict[str, Any], options: RepeatOptions) -> list[Any] | None:
    """``eligible_detections`` as first written (two passes, every detection through ``detection_box``): the
    reference its one-pass fast path must reproduce."""
    dets = entry.get("detections")
    if entry.get("failure") is not None or not dets:
        return None
    boxes = [(d, b) for d in dets if isinstance(d, Mapping) and (b := detection_box(d)) is not None]
    if not boxes or max(b[0] for _, b in boxes) < options.confidence_min:
        return None
    out = []
    for d, (conf, x, y, w, h) in boxes:
        if conf < options.confidence_min or conf > options.confidence_max:  # a NaN conf passes both comparisons
            continue
        area = abs(w * h)
        if w == 0 or h == 0 or area < options.min_area or area > options.max_area:
            continue
        out.append((str(entry.get("file", "")), str(d.get("category")), x, y, w, h, conf))
    return out


@pytest.mark.parametrize("options", [RepeatOptions(), RepeatOptions(confidence_min=0.0, min_area=0.01, max_area=1.0),
                                     RepeatOptions(confidence_max=0.5)])
def test_eligible_detections_read_odd_detections_as_the_plain_reading_does(options: RepeatOptions) -> None:
    rng = random.Random(3)
    odd = [0, 1, 0.0005, 1e-05, 0.0, -0.0, 1.0, 0.1, 0.2, 0.09999999, float("nan"), float("inf"), -0.5, True, "0.3",
           "x", None, 2]

    def value() -> Any:
        return rng.choice(odd) if rng.random() < 0.2 else rng.random() * rng.choice([1, 0.5, 0.1, 0.01])

    def detection() -> Any:
        if rng.random() < 0.03:
            return rng.choice([None, 1, "s", [1], {}])
        d: dict[str, Any] = {}
        if rng.random() < 0.95:
            d["category"] = rng.choice(["1", "2", "3", 1, None])
        if rng.random() < 0.95:
            d["conf"] = value()
        if rng.random() < 0.95:
            box = [value() for _ in range(rng.choice([4] * 10 + [3, 5, 0]))]
            d["bbox"] = box if rng.random() < 0.95 else rng.choice([tuple(box), "1234", None, 5])
        return d

    for _ in range(30000):
        entry: dict[str, Any] = {"file": rng.choice(["a/b/c.jpg", 3, "x"])}
        if rng.random() < 0.1:
            entry["failure"] = "f"
        entry["detections"] = rng.choice([None, [], [detection() for _ in range(rng.randint(0, 6))]])
        assert repr(eligible_detections(entry, options)) == repr(_eligible_plainly(entry, options)), entry


@pytest.mark.parametrize("batch", [1, 50, 1024])
def test_a_large_folder_searched_in_batches_counts_as_one_at_a_time(monkeypatch: pytest.MonkeyPatch,
                                                                   batch: int) -> None:
    """A folder as ``bench/repeat_search.py`` makes them (uniform animal boxes, jittered rocks in a third of the
    images), fed an entry at a time as the merge feeds it: handed over to the batched search at 300 candidates, every
    location (suspicious or not) has the counts, confidences and files of the search that never hands over."""
    rng = random.Random(batch)
    entries = []
    for i in range(1500):
        dets = []
        for (x, y, w, h), cat in (((0.40, 0.30, 0.10, 0.08), "1"), ((0.62, 0.12, 0.20, 0.25), "2")):
            if rng.random() < 0.33:
                dets.append({"category": cat, "conf": round(rng.uniform(0.05, 0.99), 3),
                             "bbox": [x + rng.uniform(-0.015, 0.015) * w, y + rng.uniform(-0.015, 0.015) * h,
                                      w * (1 + rng.uniform(-0.015, 0.015)), h * (1 + rng.uniform(-0.015, 0.015))]})
        for _ in range(rng.randint(0, 3)):
            w, h = rng.uniform(0.02, 0.5), rng.uniform(0.02, 0.5)
            dets.append({"category": rng.choice("123"), "conf": round(rng.uniform(0.05, 0.99), 3),
                         "bbox": [rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h]})
        entries.append({"file": f"site/cam/{i:07d}.jpg", "detections": dets})

    def locations(batched_from: float) -> list[list[Any]]:
        monkeypatch.setattr(repeats, "_BATCHED_FROM", batched_from)
        monkeypatch.setattr(repeats, "_BATCH", batch)
        options = RepeatOptions()
        folder = repeats._Folder(options.iou_threshold)
        for entry in entries:
            folder.add_rows(eligible_detections(entry, options) or [], options)
        assert (folder._batched is not None) is (batched_from < 10**9)
        folder.suspicious("site/cam", options)  # flushes what waits
        return folder.locations

    one_at_a_time, batched = locations(10**9), locations(300)
    assert len(one_at_a_time) > 2000 and sum(loc[0] for loc in one_at_a_time) > len(one_at_a_time) + 500
    assert batched == one_at_a_time


# ---------------------------------------------------------------- pinned rules (a mutation audit found them unpinned)

def test_a_location_started_by_a_detection_without_a_readable_confidence_reports_the_others_range() -> None:
    """A NaN confidence passes the filters (as in MegaDetector) but must not become the location's range: the
    document would hold NaN, which is not JSON."""
    finder = RepeatFinder()
    finder.add(_img("cam/000.jpg", ("1", BOX, float("nan"))))
    for i in range(1, 20):
        finder.add(_img(f"cam/{i:03d}.jpg", ("1", BOX, 0.3 + i / 100)))
    (loc,) = finder.result()["locations"]
    assert (loc["count"], loc["conf_min"], loc["conf_max"]) == (20, 0.31, 0.49)


def test_files_listed_zero_lists_no_files() -> None:
    finder = RepeatFinder(RepeatOptions(files_listed=0))
    for i in range(20):
        finder.add(_img(f"cam/{i:03d}.jpg", ("1", BOX, 0.5)))
    assert [(r["count"], r["files"]) for r in finder.result()["locations"]] == [(20, [])]


def test_images_at_the_containers_root_are_one_folder() -> None:
    finder = RepeatFinder()
    for i in range(20):
        finder.add(_img(f"{i:03d}.jpg", ("1", BOX, 0.5)))
    assert [(r["folder"], r["count"]) for r in finder.result()["locations"]] == [("", 20)]


def test_ties_rank_by_folder_then_by_the_order_found_whatever_order_the_folders_come_in() -> None:
    """The fan-in hands the folders' findings over in any order: the document (and its ids) must not depend on it."""
    def found(folder: str, order: int, count: int) -> dict[str, Any]:
        return {"folder": folder, "category": "1", "bbox": BOX, "count": count, "conf_min": 0.5, "conf_max": 0.5,
                "files": [f"{folder}/{order}.jpg"], "_order": order}

    scrambled = [found("b", 0, 20), found("a", 7, 20), found("a", 2, 20), found("c", 1, 30)]
    doc = repeats.rank_locations(scrambled, RepeatOptions(), 0)
    assert [(r["id"], r["files"], r["count"]) for r in doc["locations"]] == [
        ("r00001", ["c/1.jpg"], 30), ("r00002", ["a/2.jpg"], 20), ("r00003", ["a/7.jpg"], 20),
        ("r00004", ["b/0.jpg"], 20)]
    assert [r["_order"] for r in scrambled if r["folder"] == "a"] == [7, 2]  # the input is not changed
    assert "_order" not in doc["locations"][0]
    assert repeats.rank_locations(list(reversed(scrambled)), RepeatOptions(), 0) == doc


def test_skipped_folders_are_listed_in_name_order_with_a_nested_folder_after_its_parent() -> None:
    finder = RepeatFinder(RepeatOptions(max_folder_detections=2))
    for name in ["a/1.jpg", "a/b/1.jpg", "a/b/2.jpg", "a/b/3.jpg", "a/c.jpg", "a/d.jpg"]:
        finder.add(_img(name, ("1", BOX, 0.5)))
    listed = finder.result()["skipped_folders"]["listed"]
    assert listed == [{"folder": "a", "detections": 3}, {"folder": "a/b", "detections": 3}]


def test_a_skipped_folder_of_exactly_the_largest_cap_is_offered_the_search_at_that_cap() -> None:
    largest = repeats.MAX_FOLDER_DETECTIONS
    hint = repeats.skipped_summary([("cam", largest)], RepeatOptions())["hint"]
    assert f"--max-folder-detections {largest}" in hint
    hint = repeats.skipped_summary([("cam", largest + 1)], RepeatOptions())["hint"]
    assert "--max-folder-detections" not in hint


def test_removal_marks_a_detection_exactly_when_the_search_would_count_it() -> None:
    """Phase 2 applies the search's filters at their bounds: a confidence at ``confidence_min`` or an area at
    ``max_area`` is counted and so removed; one above ``confidence_max`` or below ``min_area`` is neither."""
    from core.repeats import RepeatRemoval

    area = abs(BOX[2] * BOX[3])
    options = RepeatOptions(confidence_min=0.1, confidence_max=0.6, min_area=area * 0.97, max_area=area)
    shrunk = [BOX[0], BOX[1], BOX[2] * 0.98, BOX[3] * 0.98]  # IoU 0.96 with BOX, area below min_area
    dets = [{"category": "1", "bbox": BOX, "conf": 0.1}, {"category": "1", "bbox": BOX, "conf": 0.6},
            {"category": "1", "bbox": BOX, "conf": 0.61}, {"category": "1", "bbox": shrunk, "conf": 0.5}]
    entry = {"file": "cam/1.jpg", "detections": dets}
    counted = [row[-1] for row in eligible_detections(entry, options) or []]
    assert counted == [0.1, 0.6]
    removal = RepeatRemoval([{"folder": "cam", "category": "1", "bbox": BOX}], options)
    assert [d["conf"] for d in removal.apply(entry)["detections"]] == [-0.1, -0.6, 0.61, 0.5]
    assert removal.marked == 2


def test_at_an_iou_threshold_of_one_removal_marks_the_identical_boxes_the_search_counted() -> None:
    from core.repeats import RepeatRemoval

    options = RepeatOptions(iou_threshold=1.0, occurrence_threshold=3)
    entries = [_img(f"cam/{i}.jpg", ("1", BOX, 0.5)) for i in range(3)]
    finder = RepeatFinder(options)
    for e in entries:
        finder.add(e)
    locations = finder.result()["locations"]
    assert [r["count"] for r in locations] == [3]
    removal = RepeatRemoval(locations, options)
    assert [removal.apply(e)["detections"][0]["conf"] for e in entries] == [-0.5] * 3


def test_removal_leaves_a_failed_entry_as_it_is_even_with_detections() -> None:
    """The search never counts a failed image's detections (``eligible_detections``), so phase 2 never marks them."""
    from core.repeats import RepeatRemoval

    failed = {**_img("cam/1.jpg", ("1", BOX, 0.5)), "failure": "inference failure"}
    assert eligible_detections(failed, RepeatOptions()) is None
    removal = RepeatRemoval([{"folder": "cam", "category": "1", "bbox": BOX}])
    assert removal.apply(failed) == failed and removal.marked == 0
