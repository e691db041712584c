"""COCO Camera Traps export agrees with MegaDetector's own ``md_to_coco`` on the same results file."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from core import coco, mdformat

from megadetector.postprocessing import md_to_coco  # the oracle (requirements/oracle.txt)

SIZES = {"cam1/a.jpg": (640, 480), "cam1/b.jpg": (1920, 1080), "cam2/c.png": (97, 61), "cam2/d.jpg": (800, 600)}


def results() -> dict[str, Any]:
    dets_a = [{"category": "1", "conf": 0.91, "bbox": [0.1234, 0.2, 0.3, 0.41]},
              {"category": "2", "conf": 0.15, "bbox": [0.5, 0.5, 0.25, 0.125]},  # exactly at md_to_coco's default
              {"category": "3", "conf": 0.149, "bbox": [0.0, 0.0, 1.0, 1.0]},  # just below it
              {"category": "1", "conf": -0.8, "bbox": [0.6, 0.6, 0.1, 0.1]}]  # a removed repeat
    return mdformat.build_output([
        {"file": "cam1/a.jpg", "detections": dets_a},
        {"file": "cam1/b.jpg", "detections": []},
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


@pytest.mark.parametrize("threshold", [0.15, 0.2, 0.0])
def test_same_document_as_md_to_coco(tmp_path: Path, threshold: float) -> None:
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    theirs = md_to_coco.md_to_coco(str(path), str(tmp_path / "md.coco.json"), confidence_threshold=threshold, verbose=False,
                                   image_filename_to_size={k: list(v) for k, v in SIZES.items()},
                                   info={"description": "test"})
    mine = ours(path, threshold)
    assert without_ids(mine) == without_ids(theirs)
    assert len({a["id"] for a in mine["annotations"]}) == len(mine["annotations"])
    assert mine["annotations"], "the comparison must cover some boxes"


def test_annotation_ids_are_stable_and_an_unknown_size_keeps_the_normalized_box(tmp_path: Path) -> None:
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(results()))
    assert ours(path, 0.2) == ours(path, 0.2)
    image, anns = coco.convert_entry({"file": "x.jpg", "detections": [{"category": "1", "conf": 0.9,
                                                                     "bbox": [0.1, 0.2, 0.3, 0.4]}]},
                                     None, 0.2, {"1": "animal"})
    assert "width" not in image and anns[0]["md_bbox"] == [0.1, 0.2, 0.3, 0.4] and "bbox" not in anns[0]
