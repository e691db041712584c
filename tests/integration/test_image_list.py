"""An explicit image list, in Azurite: the parallel enumeration (real replay) cuts shards of exactly the listed images
and reports the names not found; end to end on devhost, a list of 5 of 10 images gives exactly those 5, the task id
follows the list's content, a bad list is a 400, and the exports carry the list's metadata (Zooniverse columns, COCO
Camera Traps locations, Camtrap DP deployments per site, the package still valid)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.blobs import BlobStore
from core import mdformat
from core.imagelist import scan
from core.requests import TaskRequest
from core.settings import Settings
from core.shards import ListingLimits
from gpu_batch import layout
from gpu_batch.formats import camtrapdp
from gpu_batch.manifest import ShardManifest, ViewList
from tests.camtrap_media import blob_name
from tests.integration.conftest import upload_images
from tests.integration.test_end_to_end import api, finished_status, host  # noqa: F401  (the devhost fixture)
from tests.integration.test_parallel_enumeration import manifests, run_parallel
from tests.unit.test_camtrapdp import validate
from tests.waiting import wait_until

# 12 images in the container; the list names 7 of them (one twice, one flagged), two that are not there
LISTED = [f"cam{i % 2}/{i:02d}.jpg" for i in range(12)]


def _list_csv(rows: list[tuple[str, str, str]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["site", "path", "invalid"])
    w.writerows(rows)
    return out.getvalue().encode("utf-8")


@pytest.mark.parametrize("limits", [ListingLimits(), ListingLimits(names_per_call=2, images_per_write=4)],
                         ids=["one unit", "small parts"])
@pytest.mark.parametrize("run_job", ["", "task-" + "1" * 20 + "_r261201120000ab12"], ids=["task's folder", "run's"])
def test_enumeration_of_a_list_writes_exactly_its_images_and_reports_the_missing(
        storage_connection: str, unique_name: str, store: BlobStore, limits: ListingLimits, run_job: str) -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    for name in LISTED:
        store.write_bytes(unique_name, "root/" + name, b"")
    wanted = ["cam0/00.jpg", "cam1/03.jpg", "cam0/04.jpg", "cam1/07.jpg", "cam0/08.jpg", "cam1/11.jpg"]
    rows = [(f"s{i}", n, "0") for i, n in enumerate(wanted)]
    rows += [("dup", "cam1/03.jpg", "0"), ("flagged", "cam0/02.jpg", "1"), ("gone", "cam9/x.jpg", "0"),
             ("gone", "cam9/y.jpg", "")]
    data = _list_csv(rows)
    store.write_bytes(unique_name, "lists/season.csv", data)
    request = TaskRequest(container=unique_name, prefix="root", images_per_shard=2, image_list="lists/season.csv",
                          image_list_sha256=scan(io.BytesIO(data), "l").sha256)
    task_id = "task-" + "1" * 20
    _, out = run_parallel(settings, store, task_id, request, limits, run_job)
    shards = manifests(settings, store, task_id)
    assert [n for s in shards for n in s] == sorted("root/" + n for n in wanted)  # units are name ranges: in order
    assert out == {"images": 6, "shards": 3}
    side = [store.read_json(settings.container, layout.shard_list_blob(task_id, layout.shard_id(i))) for i in range(3)]
    assert sorted(n for s in side for n in s["not_found"]) == ["root/cam9/x.jpg", "root/cam9/y.jpg"]
    assert side[0]["metadata"]  # every image of the shard, with its row's columns
    for shard, doc in zip(shards, side):
        assert set(shard) <= set(doc["metadata"])
    assert {doc["metadata"].get("root/cam1/03.jpg", {}).get("site") for doc in side} >= {"s1"}  # the first row wins
    summary = store.read_json(settings.container, layout.enumeration_blob(task_id))
    listed = summary["image_list"]
    assert (listed["rows"], listed["excluded"], listed["not_found"], listed["metadata_columns"]) == (10, 1, 2, ["site"])
    if run_job:  # the list's working files were the run's own (units, parts, plan): gone once its listing ended,
        # and none in the task's folder (activities.listing_leftovers)
        assert store.read_json_or_none(settings.container, layout.listing_plan_blob(task_id)) is None
        assert not list(store.list_names(settings.container, layout.listing_work_prefix(task_id, run_job)))
        assert not [n for n in store.list_names(settings.container, layout.listing_prefix(task_id))
                    if layout.is_listing_work_file(task_id, n)]
    # each manifest names its shard's list document and the columns: the worker makes the view's export lines with
    # the rows (gpu_batch.formats.mergeview); the app's default on a local pool asks for views
    assert settings.merge_views
    for i in range(3):
        sid = layout.shard_id(i)
        manifest = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(task_id, sid, 1)))
        assert manifest.merge_view_list == ViewList(layout.shard_list_blob(task_id, sid), ("site",))

    # the merge's view of a shard: its images, then the names not found that it reports, as failures with a reason
    from activities.merge import _merged_shard

    entries = [e for i in range(3) for e in _merged_shard(store, settings, task_id, i, None)[0]]
    failed = {e["file"]: e for e in entries if e.get("failure_reason") == "listed_not_found"}
    assert set(failed) == {"root/cam9/x.jpg", "root/cam9/y.jpg"}
    assert all(e["failure"] == mdformat.FAILURE_IMAGE_ACCESS and e["failure_kind"] == "permanent"
               for e in failed.values())
    assert mdformat.failure_counts(entries)["listed_not_found"] == 2


def test_a_list_with_coordinates_gives_the_views_each_deployments_first_ones_over_every_batch(
        storage_connection: str, unique_name: str, store: BlobStore) -> None:
    """A list whose coordinates vary image to image (a camera's GPS): the enumeration writes each deployment's first
    coordinates and camera in results order over all its batches (``layout.list_facts_blob``), which every manifest
    names for the worker's view; the exports' own pass over the same rows finds the same first values."""
    from gpu_batch.formats.camtrapdp import first_facts

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    names = [f"cam{i % 2}/{i:02d}.jpg" for i in range(12)]
    for name in names:
        store.write_bytes(unique_name, name, b"")
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["path", "site", "lat", "lon", "camera"])
    for i, name in enumerate(names):  # cam0's first rows give no coordinates; cam1's camera only from its third
        coords = ("", "") if name.startswith("cam0/") and i < 4 else (f"-2.{i:02d}", f"34.{i:02d}")
        w.writerow([name, "J01", *coords, f"C{i}" if name.startswith("cam0/") or i >= 5 else ""])
    data = out.getvalue().encode("utf-8")
    store.write_bytes(unique_name, "lists/gps.csv", data)
    request = TaskRequest(container=unique_name, images_per_shard=2, image_list="lists/gps.csv",
                          image_list_sha256=scan(io.BytesIO(data), "l").sha256)
    task_id = "task-" + "2" * 20
    run_parallel(settings, store, task_id, request, ListingLimits(names_per_call=2, images_per_write=4))
    facts = store.read_json(settings.container, layout.list_facts_blob(task_id))
    rows = {}
    for i in range(6):
        rows.update(store.read_json(settings.container, layout.shard_list_blob(task_id, layout.shard_id(i)))["metadata"])
    shards = manifests(settings, store, task_id)
    ordered = [n for s in shards for n in s]
    assert len(shards) == 6 and len(list(store.list_names(settings.container,
                                                          layout.list_facts_parts_prefix(task_id)))) > 1
    expected = {dep: [lat, lon, camera] for dep, _, _, _, _, lat, lon, camera in first_facts(
        (n, rows[n]) for n in ordered)}
    assert facts == expected and facts["cam0@J01"] == [-2.04, 34.04, "C0"] and facts["cam1@J01"][2] == "C5"
    for i in range(6):
        sid = layout.shard_id(i)
        manifest = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(task_id, sid, 1)))
        assert manifest.merge_view_list == ViewList(layout.shard_list_blob(task_id, sid), ("site", "lat", "lon",
                                                                                             "camera"),
                                                    layout.list_facts_blob(task_id))


def test_first_n_takes_the_lists_first_rows(storage_connection: str, unique_name: str, store: BlobStore) -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    for name in LISTED:
        store.write_bytes(unique_name, name, b"")
    data = json.dumps([{"file": "cam1/11.jpg", "invalid": 1}, "cam1/09.jpg", "nope/1.jpg", "cam0/00.jpg",
                       "cam0/02.jpg"]).encode()
    store.write_bytes(unique_name, "l.json", data)
    request = TaskRequest(container=unique_name, first_n=3, image_list="l.json",
                          image_list_sha256=scan(io.BytesIO(data), "l").sha256)
    task_id = "task-" + "2" * 20
    _, out = run_parallel(settings, store, task_id, request, ListingLimits(names_per_call=1))
    assert sorted(n for s in manifests(settings, store, task_id) for n in s) == ["cam0/00.jpg", "cam1/09.jpg"]
    assert out["images"] == 2
    assert store.read_json(settings.container, layout.enumeration_blob(task_id))["image_list"]["not_found"] == 1


def test_a_list_changed_after_the_post_fails_the_enumeration(storage_connection: str, unique_name: str,
                                                             store: BlobStore) -> None:
    from activities.enumerate import run_plan_listing
    from activities.image_list import ImageListChanged

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "l.json", b'["a.jpg"]')
    request = TaskRequest(container=unique_name, image_list="l.json", image_list_sha256="0" * 64)
    with pytest.raises(ImageListChanged, match="changed after the task was posted"):
        run_plan_listing("task-" + "3" * 20, request, settings, store)


def test_a_list_is_read_by_ranges_of_one_version_and_planned_without_local_disk(
        storage_connection: str, unique_name: str, store: BlobStore, monkeypatch: Any) -> None:
    """The plan reads the list from its blob (ranged reads pinned to the version first seen: a list replaced while
    it is read is an error, never a mix of two lists), spools its rows to a blob it deletes after, and streams the
    units: the instance's local disk is shared by eight activities (core.scratch)."""
    from activities import image_list as image_list_activity
    from activities.enumerate import run_plan_listing
    from adapters import image_lists
    from core.errors import SourceUnavailable
    from core.imagelist import ImageListInvalid, scan
    from devhost.scratch_disk import ScratchDisk

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    store.ensure_container(settings.container)
    rows = "path,site\n" + "".join(f"cam{i % 7}/img{i:05d}.jpg,s{i % 3}\n" for i in range(3000))
    store.write_bytes(unique_name, "l.csv", rows.encode())
    monkeypatch.setattr(image_lists, "READ_BYTES", 1000)  # many ranged reads
    with image_lists.open_image_list(store, unique_name, "l.csv", 10**9) as fp:
        summary = scan(fp, "l.csv")
    assert summary.rows == 3000 and summary.bytes == len(rows)

    with pytest.raises(ImageListInvalid, match="more than this trapbatch reads"):
        with image_lists.open_image_list(store, unique_name, "l.csv", len(rows) - 1):
            pass
    with pytest.raises(SourceUnavailable, match="replaced while it was read"):
        with image_lists.open_image_list(store, unique_name, "l.csv", 10**9) as fp:
            fp.read(500)
            store.write_bytes(unique_name, "l.csv", rows.replace("s1", "s9").encode())  # another list, same size
            fp.read()
    store.write_bytes(unique_name, "l.csv", rows.encode())

    monkeypatch.setattr(image_list_activity, "LIST_ROWS_PER_UNIT", 400)  # several units
    task_id = "task-" + "4" * 20
    request = TaskRequest(container=unique_name, image_list="l.csv", image_list_sha256=summary.sha256)
    with ScratchDisk() as disk:
        plan = run_plan_listing(task_id, request, settings, store)
    assert disk.created == 0 and disk.peak == 0
    assert plan["units"] > 3
    listed = []
    for u in range(plan["units"]):
        data = store.read_bytes(settings.container, layout.listing_list_unit_blob(task_id, u))
        listed += [json.loads(line)[0] for line in data.splitlines()]
    assert sorted(listed) == sorted(f"cam{i % 7}/img{i:05d}.jpg" for i in range(3000))
    assert not store.exists(settings.container, layout.listing_list_rows_blob(task_id))  # the spool went


def test_a_list_of_5_of_10_images_gives_exactly_those_5(host, app_env: dict[str, str], store: BlobStore,  # noqa: F811
                                                        unique_name: str, tmp_path: Path) -> None:
    names = upload_images(store, unique_name, 10, corrupt=0)
    chosen = [names[i] for i in (1, 2, 5, 7, 8)]
    rows = [{"file": n, "site": f"site-{i}", "image_no_upload": 0} for i, n in enumerate(chosen)]
    rows += [{"file": names[9], "image_no_upload": 1}, {"file": "cam0/missing.jpg", "site": "lost"}]
    store.write_bytes(unique_name, "lists/five.json", json.dumps(rows).encode())
    body = {"container": unique_name, "image_list": "lists/five.json", "request_name": "list"}
    r = api.post(host.base_url + "/api/tasks", json=body, timeout=60)
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]

    # the task id follows the list's content: the same blob name with other rows is another task
    bad = [({**body, "image_list": "lists/none.json"}, "does not exist"),
           ({**body, "image_list": "lists/empty.json"}, "names no images"),
           ({**body, "image_list": "lists/bad.csv"}, "no path column"),
           ({**body, "image_list": "lists/five.json", "sample_n": 2}, "cannot be combined"),
           # a blob name is at most 1,024 characters, the request's prefix included
           ({**body, "prefix": "p" * 1015}, "more than a blob name may have"),
           # and at most 254 path segments: Azure answers 400 for another, the emulator does not check
           ({**body, "prefix": "p/" * 253}, "more than a blob name may have (254)")]
    store.write_bytes(unique_name, "lists/empty.json", b"[]")
    store.write_bytes(unique_name, "lists/bad.csv", b"site,when\nx,y\n")
    for wrong, message in bad:
        answer = api.post(host.base_url + "/api/tasks", json=wrong, timeout=60)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
        assert answer.json()["hint"]

    status = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
    assert status["runtime_status"] == "Completed", status
    assert status["images"] == 6 and status["failed"] == 1
    assert status["failure_reasons"] == {"listed_not_found": 1}
    container = app_env["TRAPBATCH_CONTAINER"]
    doc = store.read_json(container, layout.results_blob(task_id))
    files = [im["file"] for im in doc["images"] if not im.get("failure")]
    assert sorted(files) == sorted(chosen)
    failed = [im for im in doc["images"] if im.get("failure")]
    assert [(im["file"], im["failure_reason"]) for im in failed] == [("cam0/missing.jpg", "listed_not_found")]
    mdformat.validate(doc, expected_files=[*chosen, "cam0/missing.jpg"])
    assert doc["info"]["trapbatch"]["image_list"]["blob"] == "lists/five.json"
    # the real worker made each shard's view with the list's rows, read from the document its manifest names
    from gpu_batch.formats.mergeview import read_view

    columns = tuple(store.read_json(container, layout.enumeration_blob(task_id))["image_list"]["metadata_columns"])
    views = 0
    for i in range(status["shards"]):
        listed = store.list_etags(container, layout.shard_prefix(task_id, layout.shard_id(i)))
        view = read_view(store.read_bytes(container, layout.attempt_view_blob(task_id, layout.shard_id(i), 1)))
        assert view is not None and columns and view.list_columns == columns
        assert view.list_etag == listed[layout.shard_list_blob(task_id, layout.shard_id(i))].strip('"')
        views += 1
    assert views == status["shards"] > 1

    # Zooniverse: the 5 found images, not the flagged one nor the missing one, with the list's columns
    batches = status["results"]["exports"]["zooniverse_batches"]
    manifest: list[dict[str, Any]] = []
    for b in range(1, batches + 1):
        text = store.read_bytes(container, layout.zooniverse_batch_blob(task_id, b)).decode("utf-8")
        manifest += list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["#file"] for r in manifest) == sorted(chosen)
    assert {r["#file"]: r["site"] for r in manifest} == {n: f"site-{i}" for i, n in enumerate(chosen)}

    # COCO Camera Traps: the list's "site" is each image's location (the missing image's too); Camtrap DP: each
    # camera folder at each site is a deployment, and the package still validates
    coco_doc = store.read_json(container, layout.coco_blob(task_id))
    assert {im["file_name"]: im.get("location") for im in coco_doc["images"]} == \
        {**{n: f"site-{i}" for i, n in enumerate(chosen)}, "cam0/missing.jpg": "lost"}
    package = tmp_path / "camtrap-dp"
    package.mkdir()
    for name in layout.CAMTRAP_DP_FILES:
        (package / name).write_bytes(store.read_bytes(container, layout.camtrap_dp_blob(task_id, name)))
    report = validate(package)
    assert report.valid, report.flatten(["type", "note"])
    with (package / "media.csv").open(encoding="utf-8", newline="") as f:
        media = {blob_name(m["filePath"]): m["deploymentID"] for m in csv.DictReader(f)}
    assert media == {**{n: f"{camtrapdp.camera_folder(n) or '(root)'}@site-{i}" for i, n in enumerate(chosen)},
                     "cam0/missing.jpg": "cam0@lost"}

    # the same request posted again is the same task; the same blob holding another list is another task
    again = api.post(host.base_url + "/api/tasks", json=body, timeout=60)
    assert again.status_code == 200 and again.json()["id"] == task_id
    estimate = {**body, "dry_run": True}  # enumerates only: nothing more runs in the background
    before = api.post(host.base_url + "/api/tasks", json=estimate, timeout=60).json()["id"]
    # (its enumeration reads the list again and checks the hash: wait, or the change below would fail it)
    assert wait_until(lambda: finished_status(host.base_url, before), 120, "estimate")["stage"] == "estimated"
    store.write_bytes(unique_name, "lists/five.json", json.dumps(rows[:4]).encode())
    after = api.post(host.base_url + "/api/tasks", json=estimate, timeout=60)
    assert after.status_code == 202 and after.json()["id"] not in (before, task_id)
    done = wait_until(lambda: finished_status(host.base_url, after.json()["id"]), 120, "estimate")
    assert done["stage"] == "estimated" and done["images"] == 4
    # an estimate posted again is the same, ended task (its figures from that listing); with rerun it counts again
    # (`trapbatch estimate --fresh`)
    again = api.post(host.base_url + "/api/tasks", json={**estimate, "rerun": True}, timeout=60)
    assert again.status_code == 202 and again.json()["id"] == after.json()["id"], again.text
    fresh = wait_until(lambda: (lambda st: st if st and st.get("finished") != done["finished"] else None)(
        finished_status(host.base_url, after.json()["id"])), 120, "the estimate run again")
    assert fresh["stage"] == "estimated" and fresh["images"] == 4


def test_a_captures_file_gives_zooniverse_subjects_of_whole_captures(host, app_env: dict[str, str],  # noqa: F811
                                                                      store: BlobStore, unique_name: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """devhost, LocalPool and the real worker; shards of four images, merge parts of four: the exports fan out and
    the captures, spread over every shard and part, come out whole in the seed's capture-id form, ranked."""
    monkeypatch.setenv("TRAPBATCH_MERGE_IMAGES_PER_PART", "4")
    names = upload_images(store, unique_name, 10, corrupt=0)
    plan = {0: ("1", "3"), 5: ("1", "1"), 8: ("1", "2"), 1: ("2", "1"), 2: ("2", "2"), 3: ("3", "2"),
            4: ("3", "1"), 6: ("3", "3"), 7: ("", "")}  # image -> (capture, rank); 7 has none; 9 is flagged
    text = io.StringIO(newline="")
    table = csv.writer(text)
    table.writerow(["season", "site", "roll", "capture", "image", "path", "invalid"])
    for i, name in enumerate(names):
        capture, rank = plan.get(i, ("4", "1"))
        table.writerow(["S1", "J05" if capture else "", "1", capture, rank, name, 1 if i == 9 else 0])
    store.write_bytes(unique_name, "captures.csv", text.getvalue().encode())
    r = api.post(host.base_url + "/api/tasks", json={"container": unique_name, "image_list": "captures.csv"},
                 timeout=60)
    assert r.status_code == 202, r.text
    status = wait_until(lambda: finished_status(host.base_url, r.json()["id"]), 240, "task completion")
    assert status["runtime_status"] == "Completed" and status["stage"] == "completed", status
    task_id = r.json()["id"]
    exports = status["results"]["exports"]
    assert (exports["zooniverse_subjects"], exports["zooniverse_capture_images"]) == (4, 9)
    container = app_env["TRAPBATCH_CONTAINER"]
    subjects = {}
    for b in range(1, exports["zooniverse_batches"] + 1):
        rows = csv.DictReader(io.StringIO(store.read_bytes(container, layout.zooniverse_batch_blob(task_id, b))
                                          .decode("utf-8"), newline=""))
        for row in rows:
            files = [row[f"image_name_{k}"] for k in (1, 2, 3) if row[f"image_name_{k}"]]
            subjects[row["#capture_id"] or files[0]] = files
    assert subjects == {"S1#J05#1#1": [names[5], names[8], names[0]], "S1#J05#1#2": [names[1], names[2]],
                        "S1#J05#1#3": [names[4], names[3], names[6]], names[7]: [names[7]]}
    merged = store.read_json(container, layout.results_blob(task_id))
    assert len(merged["images"]) == 9  # the flagged image is in no result, as before


def test_existence_by_listing_answers_as_the_heads_do_with_a_fraction_of_the_requests(
        unique_name: str, store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """``existing_sorted``: each folder's run of names is confirmed by a delimiter listing, the rest by HEAD; the
    answers (ETag or None, in order) are the HEADs' for every kind of name: folders with blobs the list does not
    name, subfolders, the container's root, unicode, missing names, a name alone in its folder, and two names far
    apart in a large folder (the listing gives up after its budget and HEADs take over)."""
    from activities import image_list
    from activities.image_list import existing, existing_sorted

    monkeypatch.setattr(image_list, "LIST_EXTRA_MIN", 50)
    store.ensure_container(unique_name)
    present = ([f"cam1/IMG_{i:04d}.JPG" for i in range(0, 400, 2)] + [f"cam1/sub/{i}.jpg" for i in range(5)]
               + ["root1.jpg", "root2.jpg", "ü 森/写真1.jpg", "ü 森/写真2.jpg", "lone/x.jpg"]
               + [f"big/{i:05d}.jpg" for i in range(600)])
    for name in present:
        store.write_bytes(unique_name, name, b"x")
    asked = sorted([f"cam1/IMG_{i:04d}.JPG" for i in range(100, 300)]  # half of them are not there
                   + ["cam1/sub/2.jpg", "cam1/sub/9.jpg", "root1.jpg", "root3.jpg", "ü 森/写真2.jpg", "lone/x.jpg",
                      "big/00001.jpg", "big/00598.jpg", "gone/a.jpg", "gone/b.jpg"])
    heads: list[str] = []
    levels: list[str] = []
    original_head, original_level = store.etag_or_none, store.iter_level_pages
    monkeypatch.setattr(store, "etag_or_none", lambda c, n: heads.append(n) or original_head(c, n))
    monkeypatch.setattr(store, "iter_level_pages", lambda c, p, size=5000: levels.append(p) or original_level(c, p,
                                                                                                               size))
    expected = existing(store, unique_name, asked)
    assert sorted(heads) == sorted(asked) and len(levels) == 0
    assert sum(e is not None for e in expected) == 100 + 1 + 1 + 1 + 1 + 2
    heads.clear()
    assert existing_sorted(store, unique_name, asked) == expected
    assert sorted(levels) == ["big/00", "cam1/IMG_0", "cam1/sub/", "gone/", "root"]  # one per run of two or more
    # HEADs only for what no listing confirmed: the names not there, the lone names, and big/'s far one
    assert sorted(heads) == sorted([n for n, e in zip(asked, expected) if e is None]
                                   + ["lone/x.jpg", "ü 森/写真2.jpg", "big/00598.jpg"])


def test_a_credential_that_may_read_but_not_list_gets_every_answer_by_head(
        unique_name: str, store: BlobStore, storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image list in another account is often opened with a SAS that reads but does not list (``sp=r``): the
    listing is refused (403 AuthorizationPermissionMismatch), and the part asks every name by HEAD, as before
    listings were used, with the same answers."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    from activities.image_list import existing_sorted

    store.ensure_container(unique_name)
    present = [f"cam/{i:03d}.jpg" for i in range(0, 40, 2)]
    for name in present:
        store.write_bytes(unique_name, name, b"x")
    asked = sorted(f"cam/{i:03d}.jpg" for i in range(40))
    service = BlobServiceClient.from_connection_string(storage_connection)
    key = service.credential.account_key
    read_only = generate_container_sas(str(service.account_name), unique_name, account_key=key,
                                       permission=ContainerSasPermissions(read=True),
                                       expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    reader = BlobStore(BlobServiceClient(service.url, credential=read_only))
    heads: list[str] = []
    original = reader.etag_or_none
    monkeypatch.setattr(reader, "etag_or_none", lambda c, n: heads.append(n) or original(c, n))
    answers = existing_sorted(reader, unique_name, asked)
    assert [a is not None for a in answers] == [n in present for n in asked]
    assert answers == existing_sorted(store, unique_name, asked)  # the same ETags as a store that may list
    assert sorted(heads) == asked


def test_a_listed_photo_put_in_the_container_afterwards_runs_alone_with_only_new(
        host, store: BlobStore, unique_name: str) -> None:  # noqa: F811
    """What the status's advice for ``listed_not_found`` says to do (core/failure_advice.py): put the photos under the
    names the list gives and post the same request again with only_new; only they run, the others keep their results
    (the advice was to correct the list, which is another task: its content is part of the id, and it ran every
    listed image again)."""
    names = upload_images(store, unique_name, 3, corrupt=0)
    listed = [*names, "cam0/late.jpg"]
    store.write_bytes(unique_name, "lists/late.csv", ("path\n" + "\n".join(listed) + "\n").encode())
    body = {"container": unique_name, "image_list": "lists/late.csv", "request_name": "late"}
    task_id = api.post(host.base_url + "/api/tasks", json=body, timeout=60).json()["id"]
    first = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
    assert first["failure_reasons"] == {"listed_not_found": 1}, first
    assert "put the photos in the container under the names the list gives" in first["failures_hint"], first

    store.write_bytes(unique_name, "cam0/late.jpg", store.read_bytes(unique_name, names[0]))
    again = api.post(host.base_url + "/api/tasks", json={**body, "only_new": True}, timeout=60)
    assert again.status_code == 202 and again.json()["id"] == task_id, again.text  # the same list: the same task
    second = wait_until(lambda: (lambda st: st if st and st.get("finished") != first["finished"] else None)(
        finished_status(host.base_url, task_id)), 240, "the only_new re-run")
    assert second["stage"] == "completed" and second["failed"] == 0, second
    assert second["images"] == len(listed) and second["reused"] == len(names), second  # only the late photo ran
