"""The exports activity against Azurite: COCO equal to MegaDetector's md_to_coco reading the same images, a Camtrap
DP package frictionless accepts, Zooniverse batches covering each non-excluded image once, for both variants."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from PIL import Image

from activities.exports import run_exports
from adapters.blobs import BlobStore, service_client
from core import mdformat
from core.settings import Settings
from gpu_batch import layout
from tests.camtrap_media import blob_name, by_blob_name
from tests.unit.test_camtrapdp import validate

from megadetector.postprocessing import md_to_coco  # the oracle (requirements/oracle.txt)
TASK = "task-00112233445566778899"


def _image(size: tuple[int, int], fmt: str = "JPEG", orientation: int | None = None) -> bytes:
    im = Image.new("RGB", size, (30, 120, 60))
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[274] = orientation
        im.save(buf, fmt, exif=exif.tobytes())
    else:
        im.save(buf, fmt)
    return buf.getvalue()


IMAGES = {"siteA/cam1/a.jpg": _image((96, 72)), "siteA/cam1/b.jpg": _image((640, 480), orientation=6),
          "siteA/cam2/c.png": _image((50, 40), "PNG"), "siteA/cam2/d.jpg": _image((120, 90)),
          "siteA/cam2/e.jpg": _image((64, 48))}


def _results() -> dict[str, Any]:
    det = lambda cat, conf, box: {"category": cat, "conf": conf, "bbox": box}  # noqa: E731
    return mdformat.build_output([
        {"file": "siteA/cam1/a.jpg", "detections": [det("1", 0.93, [0.1, 0.2, 0.3, 0.4]),
                                                    det("2", 0.12, [0.5, 0.5, 0.1, 0.1])]},
        {"file": "siteA/cam1/b.jpg", "detections": [det("1", 0.55, [0.25, 0.125, 0.5, 0.5])]},  # EXIF-turned
        {"file": "siteA/cam2/c.png", "detections": []},
        {"file": "siteA/cam2/d.jpg", "detections": [det("3", 0.3, [0.0, 0.0, 0.5, 0.5])]},
        {"file": "siteA/cam2/e.jpg", "detections": [det("1", -0.9, [0.2, 0.2, 0.1, 0.1])]},  # a removed repeat
        mdformat.failure_entry("siteA/cam2/broken.jpg", mdformat.FAILURE_IMAGE_ACCESS, "undecodable"),
    ], {"detector": "MDV5A", "detection_completion_time": "2026-12-01T10:00:00"})


@pytest.fixture
def task(storage_connection: str, unique_name: str, tmp_path: Path) -> tuple[Settings, BlobStore, Path]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s",
                                  "TRAPBATCH_ZOONIVERSE_BATCH_SIZE": "2", "TRAPBATCH_EXPORT_LICENSE": "CC-BY-4.0",
                                  "TRAPBATCH_EXPORT_ATTRIBUTION": "Univ. of X"})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(unique_name)
    store.ensure_container(settings.container)
    folder = tmp_path / "images"
    for name, data in IMAGES.items():
        store.write_bytes(unique_name, name, data)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    store.write_json(settings.container, layout.enumeration_blob(TASK), {"container": unique_name, "prefix": "",
                                                                         "images": 6, "shards": 1})
    store.write_json(settings.container, layout.request_blob(TASK), {"container": unique_name, "model": "MDV5A",
                                                                     "request_name": "site A", "caller": "ana"})
    for variant in ("", layout.REPEATS_REMOVED):
        store.write_json(settings.container, layout.results_blob(TASK, variant), _results())
    return settings, store, folder


def _get(store: BlobStore, url: str) -> bytes:
    """The blob at ``url`` (a media filePath), fetched by plain HTTP with a read SAS of its container: the storage
    service, not this test, decodes the URL's path into the blob name."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container = url[len(store.endpoint) + 1:].split("/", 1)[0]
    sas = generate_container_sas(store.account, container, account_key=store.service.credential.account_key,
                                 permission=ContainerSasPermissions(read=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    with urlopen(f"{url}?{sas}", timeout=60) as answer:
        return bytes(answer.read())


AWKWARD = ["Cerro Alto../IMG 0005.JPG", "50% cover?/IMG+0002#1.JPG", "Ñandú/Zoë's cam #2/IMG 1.JPG",
           "~backup/a,b \"q\".jpg", ".hidden cam/日本.jpg"]


def test_media_file_paths_are_urls_that_read_back_awkward_names_and_carry_no_sas(
        storage_connection: str, unique_name: str, tmp_path: Path) -> None:
    """Camtrap DP media filePath is the image's URL (the standard's "externally hosted files"): for names with a
    space, '#', '%', '?', a run of dots, a comma or quote, a leading '.' or '~' and non-ASCII letters, each URL
    fetched by plain HTTP from Azurite gives that blob back, and the package stays valid. The app's connection string
    here carries a SAS (azure-storage-blob writes it into a client's ``url``): no filePath or description holds it."""
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    store = BlobStore(service_client(storage_connection))
    sas = generate_account_sas(store.account, store.service.credential.account_key,
                               ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions(read=True, write=True, list=True, create=True, add=True,
                                                     delete=True), datetime.now(timezone.utc) + timedelta(hours=1))
    with_sas = f"BlobEndpoint={store.endpoint};SharedAccessSignature={sas}"
    settings = Settings.from_env({"AzureWebJobsStorage": with_sas, "TRAPBATCH_CONTAINER": unique_name + "s"})
    assert "sig=" in BlobStore(service_client(with_sas)).service.url  # what BlobStore.endpoint must not use
    store.ensure_container(unique_name)
    store.ensure_container(settings.container)
    data = {name: _image((32 + i, 24)) for i, name in enumerate(AWKWARD)}
    for name, image in data.items():
        store.write_bytes(unique_name, name, image)
    store.write_json(settings.container, layout.enumeration_blob(TASK), {"container": unique_name, "prefix": "",
                                                                         "images": len(AWKWARD), "shards": 1})
    store.write_json(settings.container, layout.request_blob(TASK), {"container": unique_name, "model": "MDV5A"})
    store.write_json(settings.container, layout.results_blob(TASK), mdformat.build_output(
        [{"file": name, "detections": []} for name in AWKWARD],
        {"detector": "MDV5A", "detection_completion_time": "2026-12-01T10:00:00"}))
    run_exports(TASK, settings, BlobStore(service_client(with_sas)))
    package = tmp_path / "camtrap-dp"
    package.mkdir()
    for name in layout.CAMTRAP_DP_FILES:
        (package / name).write_bytes(store.read_bytes(settings.container, layout.camtrap_dp_blob(TASK, name)))
    report = validate(package)
    assert report.valid, report.flatten(["type", "note"])
    written = b"".join((package / name).read_bytes() for name in layout.CAMTRAP_DP_FILES)
    assert b"sig=" not in written and sas.split("sig=")[1].encode() not in written
    paths = [m["filePath"] for m in _csv_file(package / "media.csv")]
    assert [blob_name(p) for p in paths] == AWKWARD
    assert all(p.startswith(f"{store.endpoint}/{unique_name}/") and ".." not in p for p in paths)
    assert [_get(store, p) for p in paths] == [data[n] for n in AWKWARD]


def _csv(store: BlobStore, container: str, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.read_bytes(container, name).decode("utf-8"))))


@pytest.mark.parametrize("variant", ["", layout.REPEATS_REMOVED])
def test_exports_of_a_results_file(task: tuple[Settings, BlobStore, Path], tmp_path: Path, variant: str) -> None:
    settings, store, folder = task
    dated = _results()
    dated["images"][0]["datetime"] = "2024:06:01 06:20:00"  # an EXIF capture time, as MegaDetector writes it
    store.write_json(settings.container, layout.results_blob(TASK, variant), dated)
    out = run_exports(TASK, settings, store, variant=variant)
    assert out["threshold"] == 0.2  # MDV5A's typical threshold: the request set none
    assert out["coco"] == layout.coco_blob(TASK, variant) and out["sizes_unknown"] == 0
    assert (out["images"], out["annotations"], out["zooniverse_subjects"], out["zooniverse_batches"]) == (6, 3, 5, 3)

    # COCO: what MegaDetector's md_to_coco makes of the same results file, reading the same images itself
    results_file = tmp_path / "detections.json"
    results_file.write_bytes(store.read_bytes(settings.container, layout.results_blob(TASK, variant)))
    theirs = md_to_coco.md_to_coco(str(results_file), str(tmp_path / "md.coco.json"), image_folder=str(folder),
                                   confidence_threshold=0.2, verbose=False)
    mine = store.read_json(settings.container, out["coco"])
    strip = lambda doc: [{k: v for k, v in a.items() if k != "id"} for a in doc["annotations"]]  # noqa: E731
    # md_to_coco's images, each with its camera folder as location (COCO Camera Traps tools want one), and one
    # deliberate difference: md_to_coco copies the EXIF datetime, which dateutil (so MegaDetector's create_sequences)
    # reads as today's date; we write it YYYY-MM-DD HH:MM:SS, the form COCO Camera Traps names
    assert [im["datetime"] for im in theirs["images"] if "datetime" in im] == ["2024:06:01 06:20:00"]
    dashed = [{**im, "datetime": im["datetime"].replace(":", "-", 2)} if "datetime" in im else im
              for im in theirs["images"]]
    visit = ("seq_id", "seq_num_frames", "frame_num")  # a photo with a capture time is a visit's (tested below)
    # and another: the image that failed to load (undecodable) gets the format's "corrupt", which md_to_coco never
    # writes (gpu_batch/formats/coco.py's module doc)
    assert [{k: v for k, v in im.items() if k not in visit} for im in mine["images"]] == \
        [{**im, "location": im["file_name"].rsplit("/", 1)[0],
          **({"corrupt": True} if im["file_name"] == "siteA/cam2/broken.jpg" else {})} for im in dashed]
    assert mine["images"][0]["datetime"] == "2024-06-01 06:20:00"
    assert [(im["seq_num_frames"], im["frame_num"]) for im in mine["images"] if "seq_id" in im] == [(1, 0)]
    # and COCO's area and iscrowd on each pixel box, which md_to_coco leaves out and pycocotools' COCOeval reads
    assert strip(mine) == [{**a, "area": round(a["bbox"][2] * a["bbox"][3], 3), "iscrowd": 0} for a in strip(theirs)]
    assert mine["categories"] == theirs["categories"]
    assert mine["info"]["confidence_threshold"] == 0.2
    # the two info fields COCO Camera Traps requires: the version of trapbatch's document form, and a description
    assert (mine["info"]["version"], mine["info"]["description"]) == ("1.0", f"trapbatch {TASK}: site A")
    assert mine["info"]["detector_metadata"]["typical_detection_threshold"] == 0.2
    turned = next(i for i in mine["images"] if i["file_name"] == "siteA/cam1/b.jpg")
    assert (turned["width"], turned["height"]) == (480, 640)  # EXIF orientation 6, as MegaDetector sees it

    # Camtrap DP: the four files, valid for frictionless with the 1.0.2 profile
    package = tmp_path / "camtrap-dp"
    package.mkdir()
    for name in layout.CAMTRAP_DP_FILES:
        (package / name).write_bytes(store.read_bytes(settings.container, layout.camtrap_dp_blob(TASK, name, variant)))
    report = validate(package)
    assert report.valid, report.flatten(["type", "note"])
    descriptor = json.loads((package / "datapackage.json").read_text())
    assert descriptor["contributors"] == [{"title": "ana", "role": "contact"},
                                          {"title": "Univ. of X", "role": "rightsHolder"}]  # TRAPBATCH_EXPORT_ATTRIBUTION
    assert {lic["scope"] for lic in descriptor["licenses"]} == {"data", "media"}
    # the media files are not in the package: each filePath is the image's URL in trapbatch's own account (Azurite's
    # http://127.0.0.1:<port>/devstoreaccount1), which the description names (camtrapdp.media_location)
    images = store.read_json(settings.container, layout.enumeration_blob(TASK))["container"]
    assert f"container {images} of trapbatch's own storage account" in descriptor["description"]
    paths = [m["filePath"] for m in _csv_file(package / "media.csv")]
    assert all(p.startswith(f"{store.endpoint}/{images}/") for p in paths) and store.endpoint.startswith("http://")
    named = [blob_name(p) for p in paths]
    assert sorted(named) == sorted([*IMAGES, "siteA/cam2/broken.jpg"])  # the failed one was never uploaded here
    assert all(_get(store, p) == IMAGES[name] for p, name in zip(paths, named) if name in IMAGES)

    # Zooniverse: batches of at most 2, every image but the failed one exactly once
    rows = [r for b in range(1, 4) for r in _csv(store, settings.container, layout.zooniverse_batch_blob(TASK, b, variant))]
    assert sorted(r["image_name_1"] for r in rows) == sorted(n for n in IMAGES)
    assert {r["attribution"] for r in rows} == {"Univ. of X"} and {r["license"] for r in rows} == {"CC-BY-4.0"}
    by_file = {r["#file"]: r for r in rows}
    assert (by_file["siteA/cam1/a.jpg"]["#detector_top_category"], by_file["siteA/cam1/a.jpg"]["#detector_max_conf"]) \
        == ("animal", "0.93")
    assert by_file["siteA/cam2/e.jpg"]["#detector_top_category"] == "empty"  # the removed repeat does not count


def test_exports_are_idempotent_and_drop_batches_a_smaller_rerun_does_not_write(
        task: tuple[Settings, BlobStore, Path]) -> None:
    settings, store, _ = task
    first = run_exports(TASK, settings, store)
    coco_bytes = store.read_bytes(settings.container, first["coco"])
    batch = store.read_bytes(settings.container, layout.zooniverse_batch_blob(TASK, 2))
    again = run_exports(TASK, settings, store)
    assert again == first and store.read_bytes(settings.container, first["coco"]) == coco_bytes
    assert store.read_bytes(settings.container, layout.zooniverse_batch_blob(TASK, 2)) == batch
    bigger = Settings.from_env({"AzureWebJobsStorage": settings.storage_connection,
                                "TRAPBATCH_CONTAINER": settings.container, "TRAPBATCH_EXPORT_IMAGE_SIZES": "false"})
    out = run_exports(TASK, bigger, store, threshold=0.5)
    assert out["zooniverse_batches"] == 1 and out["threshold"] == 0.5 and out["sizes_unknown"] == 5
    names = list(store.list_names(settings.container, out["zooniverse"]))
    assert names == [layout.zooniverse_batch_blob(TASK, 1)]
    coco = store.read_json(settings.container, out["coco"])
    # COCO Camera Traps' normalized box (md_to_coco would refuse the file), which MegaDetector's visualize_db draws
    assert [a.get("bbox_relative") for a in coco["annotations"]] == [[0.1, 0.2, 0.3, 0.4],
                                                                     [0.25, 0.125, 0.5, 0.5]]
    assert not any("bbox" in a for a in coco["annotations"])  # mutually exclusive with bbox


def test_many_batches_are_written_a_group_of_files_per_pass(task: tuple[Settings, BlobStore, Path]) -> None:
    settings, store, _ = task
    one_each = Settings.from_env({"AzureWebJobsStorage": settings.storage_connection,
                                  "TRAPBATCH_CONTAINER": settings.container, "TRAPBATCH_ZOONIVERSE_BATCH_SIZE": "1",
                                  "TRAPBATCH_EXPORT_IMAGE_SIZES": "false"})
    out = run_exports(TASK, one_each, store, open_batch_files=2)  # five batches: three passes over the results
    assert out["zooniverse_batches"] == 5
    rows = [r for b in range(1, 6) for r in _csv(store, settings.container, layout.zooniverse_batch_blob(TASK, b))]
    assert sorted(r["#file"] for r in rows) == sorted(IMAGES) and len(rows) == 5
    in_one_pass = run_exports(TASK, one_each, store)
    assert in_one_pass == out  # the same seeded assignment however many passes write it
    assert [_csv(store, settings.container, layout.zooniverse_batch_blob(TASK, b))[0]["#file"] for b in range(1, 6)] \
        == [r["#file"] for r in rows]


# An image list's metadata for the results above, in two shards' documents (activities.image_list.write_list_shards:
# every name of the shard, an image without values too): the exports read it one shard at a time, in step.
LIST_SHARDS = [
    {"siteA/cam1/a.jpg": {"site": "J05", "datetime": "2024-05-01 06:30:00", "seq_id": "S1#J05#1#7", "frame": "1",
                          "latitude": "-2.33", "longitude": "34.83", "season": "S1"},
     "siteA/cam1/b.jpg": {"site": "J05", "datetime": "2024-05-01 06:30:02", "seq_id": "S1#J05#1#7", "frame": "2",
                          "latitude": "", "longitude": "", "season": "S1"},
     "siteA/cam2/c.png": {}},
    {"siteA/cam2/d.jpg": {"site": "J06", "datetime": "2024-05-03T07:00:00+02:00", "seq_id": "", "frame": "",
                          "latitude": "", "longitude": "", "season": "S2"},
     "siteA/cam2/e.jpg": {"site": "J06", "datetime": "", "seq_id": "", "frame": "", "latitude": "", "longitude": "",
                          "season": "S2"},
     "siteA/cam2/broken.jpg": {"site": "J06", "datetime": "", "seq_id": "", "frame": "", "latitude": "",
                               "longitude": "", "season": "S2"}},
]
LIST_COLUMNS = ["site", "datetime", "seq_id", "frame", "latitude", "longitude", "season"]


def with_list(settings: Settings, store: BlobStore) -> None:
    """The task above as started from an image list: ``LIST_COLUMNS``, its rows in the two shards' documents."""
    enumeration = store.read_json(settings.container, layout.enumeration_blob(TASK))
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {**enumeration, "shards": 2, "image_list": {"metadata_columns": LIST_COLUMNS}})
    for index, metadata in enumerate(LIST_SHARDS):
        store.write_json(settings.container, layout.shard_list_blob(TASK, layout.shard_id(index)),
                         {"not_found": [], "metadata": metadata})


@pytest.mark.parametrize("variant", ["", layout.REPEATS_REMOVED])
def test_an_image_lists_metadata_reaches_coco_and_camtrap_dp(task: tuple[Settings, BlobStore, Path], tmp_path: Path,
                                                             variant: str) -> None:
    settings, store, folder = task
    with_list(settings, store)
    out = run_exports(TASK, settings, store, variant=variant)

    # COCO: the recognised columns as COCO Camera Traps fields, the rest in image_list_metadata; without them the
    # images are still md_to_coco's
    mine = store.read_json(settings.container, out["coco"])
    images = {im["file_name"]: im for im in mine["images"]}
    a = images["siteA/cam1/a.jpg"]
    assert (a["location"], a["datetime"], a["seq_id"], a["frame_num"]) == ("J05", "2024-05-01 06:30:00",
                                                                           "S1#J05#1#7", 1)
    assert a["image_list_metadata"] == {"latitude": "-2.33", "longitude": "34.83", "season": "S1"}
    assert (images["siteA/cam2/d.jpg"]["location"], images["siteA/cam2/d.jpg"]["image_list_metadata"]) == \
        ("J06", {"season": "S2"})  # the second shard's rows: the walk moved on
    assert images["siteA/cam2/broken.jpg"]["location"] == "J06"  # a failed image keeps where it was taken
    # a row without a location: the camera folder, as without a list
    assert images["siteA/cam2/c.png"]["location"] == "siteA/cam2" and "image_list_metadata" not in images[
        "siteA/cam2/c.png"]
    results_file = tmp_path / "detections.json"
    results_file.write_bytes(store.read_bytes(settings.container, layout.results_blob(TASK, variant)))
    theirs = md_to_coco.md_to_coco(str(results_file), str(tmp_path / "md.coco.json"), image_folder=str(folder),
                                   confidence_threshold=0.2, verbose=False)
    listed = ("location", "datetime", "seq_id", "frame_num", "seq_num_frames", "image_list_metadata", "corrupt")
    assert [{k: v for k, v in im.items() if k not in listed} for im in mine["images"]] == theirs["images"]
    assert [im["file_name"] for im in mine["images"] if im.get("corrupt")] == ["siteA/cam2/broken.jpg"]

    # Camtrap DP: timestamps, deployments per folder and location with the list's coordinates, events; still valid
    package = tmp_path / "camtrap-dp"
    package.mkdir()
    for name in layout.CAMTRAP_DP_FILES:
        (package / name).write_bytes(store.read_bytes(settings.container, layout.camtrap_dp_blob(TASK, name, variant)))
    report = validate(package)
    assert report.valid, report.flatten(["type", "note"])
    deployments = {r["deploymentID"]: r for r in _csv_file(package / "deployments.csv")}
    assert set(deployments) == {"siteA/cam1@J05", "siteA/cam2", "siteA/cam2@J06"}
    j05 = deployments["siteA/cam1@J05"]
    # the list's times have no zone and the task gave none: written as UTC, an unknown time zone (an issue)
    assert (j05["locationID"], j05["latitude"], j05["longitude"], j05["timestampIssues"]) == \
        ("J05", "-2.33", "34.83", "true")
    assert (j05["deploymentStart"], j05["deploymentEnd"]) == ("2024-05-01T06:30:00+00:00", "2024-05-01T06:30:02+00:00")
    media = by_blob_name(_csv_file(package / "media.csv"))
    assert media["siteA/cam2/d.jpg"]["timestamp"] == "2024-05-03T07:00:00+02:00"
    assert media["siteA/cam1/a.jpg"]["mediaComments"] == 'image list: {"frame": "1", "season": "S1"}'
    assert media["siteA/cam2/c.png"]["deploymentID"] == "siteA/cam2"
    events = {o["mediaID"]: o["eventID"] for o in _csv_file(package / "observations.csv")}
    assert events[media["siteA/cam1/b.jpg"]["mediaID"]] == "S1#J05#1#7"
    # COCO: a photo grouped by time (the list's time, no list sequence) is a sequence of its own, named as its
    # Camtrap DP event; the list's sequence keeps the list's fields (no seq_num_frames made up for it)
    d = images["siteA/cam2/d.jpg"]
    assert (d["seq_id"], d["seq_num_frames"], d["frame_num"]) == (events[media["siteA/cam2/d.jpg"]["mediaID"]], 1, 0)
    assert "seq_num_frames" not in a and "seq_id" not in images["siteA/cam2/e.jpg"]  # e: no capture time

    # Zooniverse: the list's columns, as before
    rows = [r for b in range(1, out["zooniverse_batches"] + 1)
            for r in _csv(store, settings.container, layout.zooniverse_batch_blob(TASK, b, variant))]
    seasons = {n: md.get("season", "") for shard in LIST_SHARDS for n, md in shard.items() if n in IMAGES}
    assert {r["#file"]: r["season"] for r in rows} == seasons and seasons["siteA/cam2/d.jpg"] == "S2"


def _csv_file(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
