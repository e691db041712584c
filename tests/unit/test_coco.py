"""COCO Camera Traps export agrees with MegaDetector's own ``md_to_coco`` on the same results file."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from core import mdformat
from gpu_batch.formats import coco

from megadetector.postprocessing import md_to_coco  # the oracle (requirements/oracle.txt)

SIZES = {"cam1/a.jpg": (640, 480), "cam1/b.jpg": (1920, 1080), "cam2/c.png": (97, 61), "cam2/d.jpg": (800, 600)}


def results() -> dict[str, Any]:
    dets_a = [{"category": "1", "conf": 0.91, "bbox": [0.1234, 0.2, 0.3, 0.41]},
              {"category": "2", "conf": 0.15, "bbox": [0.5, 0.5, 0.25, 0.125]},  # exactly at md_to_coco's default
              {"category": "3", "conf": 0.149, "bbox": [0.0, 0.0, 1.0, 1.0]},  # just below it
              {"category": "1", "conf": -0.8, "bbox": [0.6, 0.6, 0.1, 0.1]}]  # a removed repeat
    return mdformat.build_output([
        {"file": "cam1/a.jpg", "detections": dets_a},
        {"file": "cam1/b.jpg", "datetime": "2024:06:01 06:20:00", "detections": []},  # MegaDetector's EXIF form
        mdformat.failure_entry("cam1/broken.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable"),
        {"file": "cam2/c.png", "detections": [{"category": "3", "conf": 0.77777, "bbox": [0.33333, 0.1, 0.5, 0.5]}],
         "exif_note": 1.23456},  # a non-standard field, carried over and rounded
        {"file": "cam2/d.jpg", "width": 800, "height": 600,
         "detections": [{"category": "2", "conf": 0.5, "bbox": [0.1, 0.1, 0.1, 0.1]}]},
    ], {"detector": "md_v5a.0.0.pt", "detection_completion_time": "2026-12-01 10:00:00"})


def ours(path: Path, threshold: float) -> dict[str, Any]:
    with path.open("rb") as fp:
        head = mdformat.results_head(fp)
        fp.seek(0)
        images, annotations, out = io.StringIO(), io.StringIO(), io.StringIO()
        writer = coco.CocoWriter(images, annotations, threshold, head["detection_categories"])
        for entry in mdformat.iter_images(fp):
            writer.add(entry, SIZES.get(entry["file"]))
    writer.finish(out, {"description": "test"})
    return json.loads(out.getvalue())


def without_ids(doc: dict[str, Any]) -> dict[str, Any]:
    """md_to_coco numbers annotations with uuid1 (random): compare everything else."""
    return {**doc, "annotations": [{k: v for k, v in a.items() if k != "id"} for a in doc["annotations"]]}


def located(doc: dict[str, Any]) -> dict[str, Any]:
    """md_to_coco's document with what trapbatch adds: each image's camera folder as its ``location`` (MegaDetector's
    ``image_file_to_camera_folder``; ``(root)`` for an image in none)."""
    from megadetector.utils.ct_utils import image_file_to_camera_folder

    return {**doc, "images": [{**im, "location": im.get("location", image_file_to_camera_folder(im["file_name"])
                                                       or "(root)")} for im in doc["images"]]}


def dashed(doc: dict[str, Any]) -> dict[str, Any]:
    """md_to_coco's document with the one field we write differently on purpose: an image's ``datetime`` in
    MegaDetector's EXIF form (``2024:06:01 06:20:00``, which md_to_coco copies and dateutil reads as today's date) as
    ``2024-06-01 06:20:00``, the form COCO Camera Traps names (see coco's module doc)."""
    return {**doc, "images": [{**im, "datetime": im["datetime"].replace(":", "-", 2)} if "datetime" in im else im
                              for im in doc["images"]]}


def corrupt(doc: dict[str, Any]) -> dict[str, Any]:
    """md_to_coco's document with the format's ``corrupt`` flag, which it never writes, on the image that failed to
    load (``failure_reason`` undecodable; see coco's module doc)."""
    return {**doc, "images": [{**im, "corrupt": True} if im["file_name"] == "cam1/broken.jpg" else im
                              for im in doc["images"]]}


def with_area(doc: dict[str, Any]) -> dict[str, Any]:
    """md_to_coco's document with COCO's ``area`` (w * h of the pixel box, rounded as every float) and
    ``"iscrowd": 0`` on each annotation with a ``bbox``, which it leaves out and pycocotools' COCOeval and
    MMDetection's loader read (see coco's module doc)."""
    return {**doc, "annotations": [{**a, "area": round(a["bbox"][2] * a["bbox"][3], coco.PRECISION), "iscrowd": 0}
                                   if "bbox" in a else a for a in doc["annotations"]]}


@pytest.mark.parametrize("threshold", [0.15, 0.2, 0.0])
def test_same_document_as_md_to_coco(tmp_path: Path, threshold: float) -> None:
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    theirs = md_to_coco.md_to_coco(str(path), str(tmp_path / "md.coco.json"), confidence_threshold=threshold, verbose=False,
                                   image_filename_to_size={k: list(v) for k, v in SIZES.items()},
                                   info={"description": "test"})
    mine = ours(path, threshold)
    assert [im.get("datetime") for im in theirs["images"] if "datetime" in im] == ["2024:06:01 06:20:00"]
    assert without_ids(mine) == without_ids(with_area(corrupt(located(dashed(theirs)))))
    assert len({a["id"] for a in mine["annotations"]}) == len(mine["annotations"])
    assert mine["annotations"], "the comparison must cover some boxes"


def test_annotation_ids_are_stable_and_an_unknown_size_keeps_the_normalized_box(tmp_path: Path) -> None:
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    assert ours(path, 0.2) == ours(path, 0.2)
    image, anns = coco.convert_entry({"file": "x.jpg", "detections": [{"category": "1", "conf": 0.9,
                                                                     "bbox": [0.1, 0.2, 0.3, 0.4]}]},
                                     None, 0.2, {"1": "animal"})
    assert "width" not in image and anns[0]["bbox_relative"] == [0.1, 0.2, 0.3, 0.4] and "bbox" not in anns[0]
    assert "area" not in anns[0] and "iscrowd" not in anns[0]  # no pixel box, no pixel area


def test_an_entry_that_carries_its_size_needs_none_from_the_caller() -> None:
    """The worker writes each image's width/height (MegaDetector's --include_image_size keys): the exports then pass
    no size (no image read), and the entry's own wins over one passed."""
    entry = {"file": "x.jpg", "width": 1000, "height": 500,
             "detections": [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4]}]}
    assert coco.entry_size(entry) == (1000, 500)
    for given in (None, (1, 1)):
        image, anns = coco.convert_entry(entry, given, 0.2, {"1": "animal"})
        assert (image["width"], image["height"]) == (1000, 500)
        assert anns[0]["bbox"] == [100.0, 100.0, 300.0, 200.0] and "bbox_relative" not in anns[0]
        assert (anns[0]["area"], anns[0]["iscrowd"]) == (60000.0, 0)
    assert coco.entry_size({"file": "y.jpg", "detections": []}) is None  # older results: the exports read the size


LISTED = {  # an image list's rows (core.imagelist metadata: text values, columns as the list spells them)
    "cam1/a.jpg": {"Site": "B04", "date time": "2024-05-01 06:30:00", "seq_id": "S1#B04#1#1", "Frame": "2",
                   "season": "S1", "roll": "", "sequence": "other"},
    "cam1/b.jpg": {"Site": "B04", "frame_num": "two", "num_frames": "3", "rights_holder": "ZSL", "season": "S1"},
    "cam1/broken.jpg": {"site": "B05", "season": "S2"},
    "cam2/c.png": {"location": "B06", "site": "B06-alias"},
    "cam2/d.jpg": {"location": "B07", "datetime": "2024-05-02T10:00:00"},
}


def with_list(path: Path, threshold: float, entries_datetime: bool = False) -> dict[str, Any]:
    with path.open("rb") as fp:
        head = mdformat.results_head(fp)
        fp.seek(0)
        images, annotations, out = io.StringIO(), io.StringIO(), io.StringIO()
        writer = coco.CocoWriter(images, annotations, threshold, head["detection_categories"])
        for entry in mdformat.iter_images(fp):
            if entries_datetime and entry["file"] == "cam2/d.jpg":
                entry = {**entry, "datetime": "2024:05:02 09:59:58"}  # as MegaDetector writes EXIF times
            writer.add(entry, SIZES.get(entry["file"]), LISTED.get(entry["file"]))
    writer.finish(out, {"description": "test", "version": "1"})
    return json.loads(out.getvalue())


def test_an_image_lists_columns_become_coco_camera_traps_fields(tmp_path: Path) -> None:
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    doc = with_list(path, 0.2, entries_datetime=True)
    images = {im["id"]: im for im in doc["images"]}
    a, b, broken, c, d = (images[f] for f in ("cam1/a.jpg", "cam1/b.jpg", "cam1/broken.jpg", "cam2/c.png",
                                               "cam2/d.jpg"))
    assert (a["location"], a["datetime"], a["seq_id"], a["frame_num"]) == ("B04", "2024-05-01 06:30:00",
                                                                           "S1#B04#1#1", 2)
    # the rest under one object, by the list's own names; an empty cell says nothing; a second alias is rest
    assert a["image_list_metadata"] == {"season": "S1", "sequence": "other"}
    # an integer field that is not one stays in the rest; the other fields are typed
    assert (b["seq_num_frames"], b["rights_holder"], "frame_num" in b) == (3, "ZSL", False)
    assert b["image_list_metadata"] == {"frame_num": "two", "season": "S1"}
    # a failed image keeps md_to_coco's three fields, plus where it was taken (and, undecodable, the format's corrupt)
    assert broken == {"id": "cam1/broken.jpg", "file_name": "cam1/broken.jpg", "failure": mdformat.FAILURE_IMAGE_ACCESS,
                      "corrupt": True, "location": "B05", "image_list_metadata": {"season": "S2"}}
    assert (c["location"], c["image_list_metadata"], c["exif_note"]) == ("B06", {"site": "B06-alias"}, 1.235)
    # the entry's own datetime (EXIF, from MegaDetector; written as dateutil reads it) stands; the list's joins the rest
    assert (d["datetime"], d["image_list_metadata"]) == ("2024-05-02 09:59:58", {"datetime": "2024-05-02T10:00:00"})
    assert b["datetime"] == "2024-06-01 06:20:00"  # the entry's own, no list value
    # the annotations do not change with a list
    assert without_ids(doc)["annotations"] == without_ids(ours(path, 0.2))["annotations"]


def test_with_a_list_the_document_passes_megadetectors_coco_camera_traps_check(tmp_path: Path) -> None:
    """MegaDetector's own CCT integrity check (it requires a string ``location`` on every image when asked to, and
    refuses ``sequence``/``sequence_id`` as image fields) accepts the document an image list fills."""
    from megadetector.data_management.integrity_check_json_db import IntegrityCheckOptions, integrity_check_json_db

    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    doc = with_list(path, 0.2)
    options = IntegrityCheckOptions()
    options.bRequireLocation, options.verbose, options.nThreads, options.requireInfo = True, False, 1, True
    sorted_categories, data, _ = integrity_check_json_db(doc, options)
    assert len(data["images"]) == 5 and sorted_categories
    assert all(isinstance(im["location"], str) for im in doc["images"])


@pytest.mark.parametrize("value,written", [
    ("2024:06:01 06:20:00", "2024-06-01 06:20:00"),  # MegaDetector's EXIF form
    ("2024-06-01 06:20:00", "2024-06-01 06:20:00"),  # already the format's form
    ("2024-05-02T10:00:00+02:00", "2024-05-02T10:00:00+02:00"),  # any other value as it is
    ("2024:06:01", "2024:06:01"), ("24:06:01 06:20:00 x", "24:06:01 06:20:00 x"),
    ("abcd:ef:gh ij:kl:mn", "abcd:ef:gh ij:kl:mn"), ("２０２４:06:01 06:20:00", "２０２４:06:01 06:20:00"),
    (1717222800, 1717222800),
])
def test_an_exif_datetime_is_written_as_dateutil_reads_it(value: Any, written: Any) -> None:
    """COCO Camera Traps' ``datetime`` is "any obvious format that dateutil knows how to parse": dateutil reads EXIF's
    ``2024:06:01 06:20:00`` as today at 06:20, so the EXIF form gets dashes in its date, and nothing else changes."""
    import dateutil.parser

    assert coco.cct_datetime(value) == written
    image, _ = coco.convert_entry({"file": "c/x.jpg", "datetime": value, "detections": []}, (4, 3), 0.2, {})
    assert image["datetime"] == written and list(image)[2:4] == ["width", "height"]
    if written == "2024-06-01 06:20:00":
        assert str(dateutil.parser.parse(written)) == "2024-06-01 06:20:00"
    assert coco.convert_entry({"file": "c/x.jpg", "detections": []}, (4, 3), 0.2, {})[0].get("datetime") is None


def test_an_image_lists_exif_datetime_is_written_as_an_entrys_is() -> None:
    """A list's datetime column fills ``datetime`` in the same form as an entry's EXIF time (one form a document);
    where the entry has its own, the list's value joins ``image_list_metadata`` as the list wrote it."""
    row = {"date time": "2024:05:01 06:30:00", "season": "S1"}
    image, _ = coco.convert_entry({"file": "c/x.jpg", "detections": []}, (4, 3), 0.2, {}, row)
    assert (image["datetime"], image["image_list_metadata"]) == ("2024-05-01 06:30:00", {"season": "S1"})
    failed = mdformat.failure_entry("c/y.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable")
    assert coco.convert_entry(failed, None, 0.2, {}, row)[0]["datetime"] == "2024-05-01 06:30:00"
    own, _ = coco.convert_entry({"file": "c/x.jpg", "datetime": "2024:05:02 09:59:58", "detections": []}, (4, 3), 0.2,
                                {}, row)
    assert (own["datetime"], own["image_list_metadata"]) == ("2024-05-02 09:59:58",
                                                             {"date time": "2024:05:01 06:30:00", "season": "S1"})


def test_without_metadata_an_image_is_md_to_cocos_with_its_camera_folder() -> None:
    entry = {"file": "x.jpg", "detections": []}
    assert coco.convert_entry(entry, (4, 3), 0.2, {"1": "animal"}, None) == \
        coco.convert_entry(entry, (4, 3), 0.2, {"1": "animal"}, {"empty": ""}) == \
        ({"id": "x.jpg", "file_name": "x.jpg", "width": 4, "height": 3, "location": "(root)"}, [])
    image, _ = coco.convert_entry({"file": "s/cam1/100RECNX/x.jpg", "detections": []}, (4, 3), 0.2, {})
    assert image["location"] == "s/cam1"  # the overflow folder is the same camera, as in Camtrap DP
    own, _ = coco.convert_entry({"file": "s/x.jpg", "location": "L9", "detections": []}, (4, 3), 0.2, {})
    assert own["location"] == "L9"  # an entry's own location stands


def test_without_a_list_the_document_passes_megadetectors_check_and_converts_back(tmp_path: Path) -> None:
    """MegaDetector's CCT integrity check with its defaults (a location on every image) and its ``cct_to_md``
    (which reads each image's location) take the document of results alone."""
    from megadetector.data_management.cct_to_md import cct_to_md
    from megadetector.data_management.integrity_check_json_db import IntegrityCheckOptions, integrity_check_json_db

    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    doc = ours(path, 0.2)
    options = IntegrityCheckOptions()
    options.verbose, options.nThreads = False, 1
    assert options.bRequireLocation  # MegaDetector's default
    _, data, _ = integrity_check_json_db(json.loads(json.dumps(doc)), options)
    assert len(data["images"]) == len(doc["images"])
    coco_file = tmp_path / "coco.json"
    # cct_to_md reads every image's height and width, which a failed image has none of
    coco_file.write_text(json.dumps({**doc, "images": [im for im in doc["images"] if "failure" not in im]}))
    back = cct_to_md(str(coco_file), str(tmp_path / "md.json"))
    assert {im["file"]: im["location"] for im in back["images"]} == {
        im["file_name"]: im["location"] for im in doc["images"] if "failure" not in im}


def test_annotation_id_is_uuid5_of_file_and_index() -> None:
    import random
    import uuid

    rng = random.Random(3)
    for _ in range(20_000):
        name = "".join(rng.choice("ab/é日\x00 ,#") for _ in range(rng.randrange(12)))
        index = rng.randrange(1000)
        assert coco.annotation_id(name, index) == str(uuid.uuid5(coco._ID_NAMESPACE, f"{name}#{index}"))


def test_images_that_failed_to_load_are_flagged_corrupt_as_the_format_asks() -> None:
    """COCO Camera Traps' image ``corrupt`` (MegaDetector's data_management/README.md: "use this flag to indicate
    that an image failed to load, e.g. in PIL"): a photo PIL could not open, and one cut short, which PIL opens only
    with LOAD_TRUNCATED_IMAGES; its boxes stay. Other failures (missing, refused) loaded nothing to be corrupt."""
    from gpu_batch.formats.entries import CUT_SHORT, mark_cut_short

    entries = [mdformat.failure_entry("c/broken.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable"),
               mdformat.failure_entry("c/gone.jpg", mdformat.FAILURE_IMAGE_ACCESS, "not_found"),
               {"file": "c/half.jpg", "width": 800, "height": 600,
                "detections": [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}]},
               {"file": "c/whole.jpg", "width": 800, "height": 600, "detections": []}]
    images, annotations = io.StringIO(), io.StringIO()
    writer = coco.CocoWriter(images, annotations, 0.2, mdformat.DETECTION_CATEGORIES)
    for entry in mark_cut_short(entries, {"c/half.jpg", "c/broken.jpg"}):
        writer.add(entry, None)
    writer.flush()
    out = {im["file_name"]: im for im in map(json.loads, images.getvalue().lstrip(",").split("\n,"))}
    assert {name: im.get("corrupt") for name, im in out.items()} == {
        "c/broken.jpg": True, "c/gone.jpg": None, "c/half.jpg": True, "c/whole.jpg": None}
    assert not any(CUT_SHORT in im for im in out.values())  # the exports' mark is no field of the document
    assert writer.counts["annotations"] == 1  # the photo cut short keeps its box


def test_every_pixel_box_has_cocos_area_and_iscrowd_as_cocoeval_reads_them(tmp_path: Path) -> None:
    """pycocotools' COCOeval reads ``iscrowd`` (computeIoU) and ``area`` (evaluateImg) of every ground-truth
    annotation, and MMDetection's loader ``area``: a KeyError without them. COCO's area of a box without segmentation
    is its width times height in pixels (pycocotools' loadRes); ``iscrowd`` is COCO's integer 0, not JSON's false."""
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    anns = ours(path, 0.0)["annotations"]
    assert anns and all(a["area"] == round(a["bbox"][2] * a["bbox"][3], coco.PRECISION) > 0 for a in anns)
    assert all(type(a["iscrowd"]) is int and a["iscrowd"] == 0 for a in anns)
