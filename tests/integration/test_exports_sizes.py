"""The exports read no image when the results carry each image's size (trapbatch issue 11), single and fanned out.

The worker writes ``width``/``height`` into every successful entry (gpu_batch/worker/results.py), so COCO's pixel
boxes need no image: this runs the exports on such results and counts every download of the images' container
(the ranged header GETs of ``adapters.image_sizes`` included): zero, and the COCO document is the one the ranged
reads give for the same results without sizes. Results without sizes (older results, re-runs reusing old entries)
still take the ranged-GET path, one read per successful image, counted here the same way.
"""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any, Iterator

import pytest
from azure.storage.blob import BlobClient

from activities.exports import run_exports
from gpu_batch import layout
from tests.integration import test_exports_fanout as fanout
from tests.integration.test_exports import IMAGES, TASK, _results, task  # noqa: F401

# Each image's size as MegaDetector decodes it (test_exports.IMAGES: b.jpg is 640 x 480 stored, EXIF-turned).
DECODED = {"siteA/cam1/a.jpg": (96, 72), "siteA/cam1/b.jpg": (480, 640), "siteA/cam2/c.png": (50, 40),
           "siteA/cam2/d.jpg": (120, 90), "siteA/cam2/e.jpg": (64, 48)}


def _sized_results() -> dict[str, Any]:
    """``_results()`` as the worker now writes it: every success with its image's width and height."""
    doc = copy.deepcopy(_results())
    for entry in doc["images"]:
        if entry.get("failure") is None:
            entry["width"], entry["height"] = DECODED[entry["file"]]
    return doc


@pytest.fixture
def image_gets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every download_blob call through the Blob SDK, as (container, blob)."""
    calls: list[tuple[str, str]] = []
    real = BlobClient.download_blob

    def counting(self: BlobClient, *args: Any, **kwargs: Any) -> Any:
        calls.append((self.container_name, self.blob_name))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "download_blob", counting)
    yield calls


def _image_reads(calls: list[tuple[str, str]]) -> list[str]:
    return [name for _, name in calls if name in IMAGES]


@pytest.mark.parametrize("variant", ["", layout.REPEATS_REMOVED])
def test_exports_of_sized_results_read_no_image_and_give_the_same_coco(task: Any, image_gets: list[tuple[str, str]],
                                                                       variant: str) -> None:
    settings, store, _ = task
    assert set(DECODED) == {n for n in IMAGES}
    # Results without sizes: one ranged read per successful image (the fallback), which this counter sees.
    unsized = run_exports(TASK, settings, store, variant=variant)
    assert unsized["sizes_unknown"] == 0 and sorted(set(_image_reads(image_gets))) == sorted(DECODED)
    coco_read = store.read_json(settings.container, unsized["coco"])

    store.write_json(settings.container, layout.results_blob(TASK, variant), _sized_results())
    image_gets.clear()
    sized = run_exports(TASK, settings, store, variant=variant)
    assert _image_reads(image_gets) == []  # no image GET at all
    assert image_gets, "the counter saw the results' own download"
    assert sized == unsized
    coco = store.read_json(settings.container, sized["coco"])
    assert coco["images"] == coco_read["images"] and coco["annotations"] == coco_read["annotations"]
    assert {i["file_name"]: (i["width"], i["height"]) for i in coco["images"] if "width" in i} == DECODED


@pytest.mark.parametrize("shard_sizes,shards_per_part", [([3, 3], 1), ([1] * 6, 4)])
def test_fanned_out_exports_of_sized_results_read_no_image(task: Any, image_gets: list[tuple[str, str]],
                                                           monkeypatch: pytest.MonkeyPatch, shard_sizes: list[int],
                                                           shards_per_part: int) -> None:
    settings, store, _ = task
    monkeypatch.setattr(fanout, "_results", _sized_results)  # the fan-in's results file, sizes included
    parts = fanout._write_fanin_results(store, settings.container, "", shard_sizes, shards_per_part)
    image_gets.clear()
    fanned = fanout._fanned(settings, store, "", parts)
    assert _image_reads(image_gets) == [] and image_gets
    assert fanned["sizes_unknown"] == 0 and fanned["images"] == 6
    coco = store.read_json(settings.container, fanned["coco"])
    assert {i["file_name"]: (i["width"], i["height"]) for i in coco["images"] if "width" in i} == DECODED
    assert all("bbox" in a and "bbox_relative" not in a for a in coco["annotations"])


@pytest.mark.parametrize("fanned_out", [False, True])
def test_images_whose_size_could_not_be_read_are_said_with_why_and_what_to_do(task: Any, fanned_out: bool) -> None:
    """An image deleted since detection and one whose bytes are no image keep relative COCO boxes: the exports say
    how many (``sizes_unknown``), and now why, which, the first error and what to do (a bare count before)."""
    settings, store, _ = task
    images = str(store.read_json(settings.container, layout.enumeration_blob(TASK))["container"])
    store.service.get_blob_client(images, "siteA/cam2/d.jpg").delete_blob()
    store.write_bytes(images, "siteA/cam1/a.jpg", b"not an image at all")
    if fanned_out:
        out = fanout._fanned(settings, store, "", fanout._write_fanin_results(store, settings.container, "", [3, 3], 1))
    else:
        out = run_exports(TASK, settings, store)
    assert out["sizes_unknown"] == 2
    why = out["sizes_unknown_why"]
    assert why["reasons"] == {"not_found": 1, "undecodable": 1}
    assert why["examples"] == ["siteA/cam1/a.jpg", "siteA/cam2/d.jpg"]
    assert why["error"] == "siteA/cam2/d.jpg: not found in storage (ResourceNotFoundError, BlobNotFound)"
    assert "bbox_relative" in why["hint"] and "deleted or renamed since detection" in why["hint"]
    assert "http" not in json.dumps(why)  # no request URL (it may hold a SAS)


def test_exports_told_to_read_no_size_say_the_setting_and_how_to_write_them_again(task: Any) -> None:
    settings, store, _ = task
    out = run_exports(TASK, replace(settings, export_image_sizes=False), store)
    assert out["sizes_unknown"] == 5 and out["sizes_unknown_why"]["reasons"] == {"not_read": 5}
    assert out["sizes_unknown_why"]["examples"] == ["siteA/cam1/a.jpg", "siteA/cam1/b.jpg", "siteA/cam2/c.png"]
    assert "TRAPBATCH_EXPORT_IMAGE_SIZES" in out["sizes_unknown_why"]["hint"]
    assert '"only_new": true' in out["sizes_unknown_why"]["hint"]
