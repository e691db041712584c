"""Enumerate and merge against Azurite: manifests in blob, counts out; merge covers every image once."""
from __future__ import annotations

import html
import json
from typing import Any

from activities.enumerate import run_enumerate
from activities.merge import run_merge
from gpu_batch.layout import csv_blob, preview_sample_blob, repeats_blob, results_blob
from activities.pool import resubmit_one
from activities.shard_results import shard_coverage
from adapters.preview_folders import existing_preview_folder
from adapters.blobs import BlobStore, service_client
from core import mdformat
from core.requests import parse_task_request
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.manifest import ShardManifest, ViewBasis

import pytest

from tests.recording_pool import RecordingPool


@pytest.fixture
def env(storage_connection: str, unique_name: str) -> tuple[Settings, BlobStore, str]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s"})
    store = BlobStore(service_client(storage_connection))
    source = unique_name
    store.ensure_container(source)
    for cam in ("a", "b"):
        for i in range(5):
            store.write_bytes(source, f"{cam}/img{i}.jpg", b"x")
    store.write_bytes(source, "a/readme.txt", b"not an image")
    return settings, store, source


def test_enumerate_writes_manifests_and_returns_only_counts(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, source = env
    request = parse_task_request({"container": source, "images_per_shard": 4, "model": "m.pt"})
    out = run_enumerate(request.task_id, request, settings, store)
    assert out == {"images": 10, "shards": 3}
    manifests = [ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(request.task_id, f"s{i:05d}", 1)))
                 for i in range(3)]
    listed = [im for m in manifests for im in m.images]
    assert listed == sorted(f"{c}/img{i}.jpg" for c in "ab" for i in range(5))
    assert all(m.model == "m.pt" and m.source_container == source for m in manifests)
    # deterministic: a re-run writes the same manifests
    assert run_enumerate(request.task_id, request, settings, store) == out
    again = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(request.task_id, "s00000", 1)))
    assert again == manifests[0]


def test_enumerate_prefix_and_first_n(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, source = env
    request = parse_task_request({"container": source, "prefix": "b/", "first_n": 3, "model": "m"})
    assert run_enumerate(request.task_id, request, settings, store) == {"images": 3, "shards": 1}


def test_enumerate_missing_container_says_what_to_do(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, source = env
    from core.errors import ContainerNotFound

    request = parse_task_request({"container": "no-such-container-x", "model": "m"})
    with pytest.raises(ContainerNotFound) as info:
        run_enumerate(request.task_id, request, settings, store)
    assert "no-such-container-x" in info.value.message and info.value.hint


def _write_results(store: BlobStore, settings: Settings, m: ShardManifest, entries: list[dict[str, object]] | str) -> None:
    data = entries if isinstance(entries, str) else json.dumps({"images": entries})
    store.write_bytes(settings.container, m.output_blob, data.encode())


def test_merge_combines_attempts_marks_missing_and_is_idempotent(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, source = env
    request = parse_task_request({"container": source, "images_per_shard": 5, "model": "models/m.pt"})
    run_enumerate(request.task_id, request, settings, store)
    tid = request.task_id
    m0 = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00000", 1)))
    m1 = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00001", 1)))
    det = {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}
    # shard 0: attempt 1 crashed after 2 images; attempt 2 (only the missing 3) completes
    _write_results(store, settings, m0, [{"file": m0.images[0], "detections": [det]},
                                         {"file": m0.images[1], "detections": []}])
    assert shard_coverage(store, settings, tid, "s00000")["missing"] == 3

    pool = RecordingPool()
    assert resubmit_one(tid, tid, "s00000", 2, settings, store, pool) == {  # type: ignore[arg-type]
        "shard_id": "s00000", "attempt": 2, "missing": 3, "submitted": True}
    m0b = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00000", 2)))
    assert list(m0b.images) == list(m0.images[2:])
    assert pool.submitted[0].task_id == "s00000-a2"  # type: ignore[attr-defined]
    # its worker's merge view covers the whole shard: the first manifest and the earlier attempt's results
    assert m0b.merge_view_threshold == m0.merge_view_threshold is not None
    assert m0b.merge_view_basis == ViewBasis(layout.manifest_blob(tid, "s00000", 1), (m0.output_blob,))
    _write_results(store, settings, m0b, [{"file": f, "detections": []} for f in m0b.images])
    # shard 1: corrupt output on attempt 1 (ignored), one image never covered
    _write_results(store, settings, m1, "{not json")
    out = run_merge(tid, "models/m.pt", "2026-11-22T00:00:00", settings, store)
    assert out["images"] == 10 and out["missing"] == 5 and out["with_detections"] == 1
    doc = store.read_json(settings.container, results_blob(tid))
    mdformat.validate(doc, expected_files=list(m0.images) + list(m1.images))
    assert doc["info"]["detector"] == "m.pt" and doc["info"]["format_version"] == "1.6"
    # as MegaDetector's run_detector_batch writes it (and the worker's own shard files): %Y-%m-%d %H:%M:%S, UTC
    assert doc["info"]["detection_completion_time"] == "2026-11-22 00:00:00"
    import csv
    import io


    table = list(csv.DictReader(io.StringIO(store.read_bytes(settings.container, csv_blob(tid)).decode("utf-8"))))
    assert [r["file"] for r in table] == [im["file"] for im in doc["images"]]  # one row per image, same order
    assert sum(r["status"] == "failed" for r in table) == out["failed"] and table[0]["animal_count"] == "1"
    first = store.read_bytes(settings.container, results_blob(tid))
    run_merge(tid, "models/m.pt", "2026-11-22T00:00:00", settings, store)
    assert store.read_bytes(settings.container, results_blob(tid)) == first


def _merged_task_of_jpegs(settings: Settings, store: BlobStore, source: str, cams: tuple[str, ...], per_cam: int
                          ) -> str:
    """A merged task over real JPEGs (so thumbnails are made), shards of 5: each camera's ``img0.jpg`` with one
    detection and ``a/img0.jpg`` with a capture time; the task id."""
    import io

    from PIL import Image

    for cam in cams:
        for i in range(per_cam):
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), (10 * i, 80, 120)).save(buf, "JPEG")
            store.write_bytes(source, f"{cam}/img{i}.jpg", buf.getvalue())
    request = parse_task_request({"container": source, "images_per_shard": 5, "model": "m.pt"})
    tid = request.task_id
    shards = run_enumerate(tid, request, settings, store)["shards"]
    det = {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}
    for index in range(shards):
        m = ShardManifest.from_dict(store.read_json(settings.container,
                                                    layout.manifest_blob(tid, layout.shard_id(index), 1)))
        _write_results(store, settings, m, [{"file": f, "detections": [det] if f.endswith("0.jpg") else [],
                                             **({"datetime": "2024:06:01 06:20:01"} if f == "a/img0.jpg" else {})}
                                            for f in m.images])
    run_merge(tid, "m.pt", "2026-11-22T00:00:00", settings, store)
    return tid


def test_previews_render_from_the_merge_sample_without_reading_the_merged_file(
        env: tuple[Settings, BlobStore, str]) -> None:
    from activities.previews import run_previews

    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a", "b"), 5)
    sample = store.read_json(settings.container, preview_sample_blob(tid))
    assert sample["totals"] == {"detections": 2, "near_misses": 0, "empty": 8, "failures": 0}
    store.service.get_blob_client(settings.container, results_blob(tid)).delete_blob()
    out = run_previews(tid, "/srv/node-models/m.pt", "my survey", settings, store)
    assert out["counts"] == {**sample["totals"], "repeats": 0}
    folder = existing_preview_folder(store, settings, tid)
    assert folder is not None and folder.startswith(f"{tid}-") and folder not in json.dumps(out)
    page = store.read_bytes(settings.web_container, f"{folder}/index.html").decode()
    assert "my survey" in page and "a/img0.jpg" in page and "b/img0.jpg" in page
    # the model by its file name, as the results' info.detector names it: a public page shows no path of the nodes
    assert "model <b>m.pt</b>" in page and "node-models" not in page
    assert page.count('"taken": "2024-06-01 06:20:01"') == 1  # the capture time shown beside the name
    assert "Taken 2024-06-01 06:20:01 to 2024-06-01 06:20:01 (the cameras' clocks, from EXIF): 1 of 10 images; " \
           "the rest have no capture time." in html.unescape(page) and "clocks look wrong" not in page
    assert 'id="visits"' not in page  # no exports ran: no table of camera visits
    thumbs = store.list_names(settings.web_container, f"{folder}/thumbs/")
    assert len(list(thumbs)) == 10
    assert list(store.list_names(settings.web_container, f"{tid}/")) == []  # nothing at the guessable address
    assert 'id="search-failed"' not in page
    store.service.get_blob_client(settings.container, repeats_blob(tid)).delete_blob()  # as after a failed search
    run_previews(tid, "m.pt", "my survey", settings, store, repeat_search_error="storage throttled")
    failed = html.unescape(store.read_bytes(settings.web_container, f"{folder}/index.html").decode())
    assert "The search for repeated detections failed (storage throttled)" in failed
    assert f"trapbatch repeats {tid} --search" in failed and 'id="repeats"' not in failed
    run_previews(tid, "m.pt", "my survey", settings, store)  # a re-render keeps the same folder
    assert existing_preview_folder(store, settings, tid) == folder
    # the page a re-render rewrites in place carries Cache-Control: no-cache, which the static website serves with it
    # (it sends no caching headers of its own: storage-blob-static-website.md), so no browser shows the old page
    props = store.service.get_blob_client(settings.web_container, f"{folder}/index.html").get_blob_properties()
    assert (props.content_settings.content_type, props.content_settings.cache_control) == (
        "text/html; charset=utf-8", "no-cache")



def test_pictures_the_page_could_not_make_are_in_the_output_and_on_the_page(
        env: tuple[Settings, BlobStore, str], storage_connection: str) -> None:
    """A page whose images the app cannot read (a partner's account that refuses its key, an expired SAS) or that
    were deleted since detection says so: ``pictures_missing`` in the output (the task status's ``previews``, which
    the CLI and the notification show) counts them by why, with the read's error and what to do, and each caption
    says why it has no picture. It used to swallow every read failure: a page of captions, a status with no word."""
    import base64
    import re

    from activities.previews import run_previews

    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a", "b"), 5)
    wrong_key = base64.b64encode(b"not the account key").decode()
    refused = BlobStore(service_client(re.sub(r"AccountKey=[^;]+", f"AccountKey={wrong_key}", storage_connection)))
    out = run_previews(tid, "m.pt", "", settings, store, source_store=refused)
    missing = out["pictures_missing"]
    assert (missing["count"], missing["of"], missing["reasons"]) == (10, 10, {"unreadable": 10})
    assert missing["examples"] == ["a/img0.jpg", "a/img1.jpg", "a/img2.jpg"]
    assert missing["error"].startswith("a/img") and "storage refused" in missing["error"]
    assert "AccountKey" not in json.dumps(out) and "Storage Blob Data Reader" in missing["hint"]
    assert "POST /api/tasks/{id}/previews" in missing["hint"]
    folder = existing_preview_folder(store, settings, tid)
    page = store.read_bytes(settings.web_container, f"{folder}/index.html").decode()
    assert page.count("no picture: the image could not be read for this page") == 10
    assert list(store.list_names(settings.web_container, f"{folder}/thumbs/")) == []

    store.service.get_blob_client(source, "b/img3.jpg").delete_blob()  # deleted since detection
    out = run_previews(tid, "m.pt", "", settings, store)
    assert out["pictures_missing"]["reasons"] == {"not_found": 1} and out["pictures_missing"]["count"] == 1
    assert "error" not in out["pictures_missing"] and "deleted since detection" in out["pictures_missing"]["hint"]
    page = store.read_bytes(settings.web_container, f"{folder}/index.html").decode()
    assert page.count("no picture: the image is no longer in its container") == 1
    store.write_bytes(source, "b/img3.jpg", b"not a jpeg")  # bytes that do not decode for the page
    assert run_previews(tid, "m.pt", "", settings, store)["pictures_missing"]["reasons"] == {"undecodable": 1}


def test_the_preview_page_lists_each_cameras_visits_and_flags_mostly_blank_ones(
        env: tuple[Settings, BlobStore, str]) -> None:
    """The exports' camera-visits.csv becomes the page's table; a camera whose visits are mostly blank is marked."""
    from activities.exports import run_exports
    from activities.previews import CAMERAS_LISTED, MOSTLY_BLANK_VISITS, downloaded_path, run_previews
    from core import camtrap_events as ev
    from gpu_batch.layout import REPEATS_REMOVED

    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a", "b"), 5)
    out = run_exports(tid, settings, store)
    assert (out["cameras"], out["events"]) == (1, 1)  # one image has a capture time: camera a, one visit
    run_previews(tid, "m.pt", "", settings, store)
    folder = existing_preview_folder(store, settings, tid)
    page = html.unescape(store.read_bytes(settings.web_container, f"{folder}/index.html").decode())
    assert 'id="visits"' in page and "camera visits: 1 visit at 1 camera" in page
    assert "<td><code>a</code></td>" in page and "mostly blank" not in page
    # its photos column counts the timed photos (camera-visits.csv's images), not every photo of the camera
    assert ">timed photos</th>" in page and "<th>photos</th>" not in page
    assert f"{settings.container}/{layout.camera_visits_blob(tid)}" in page
    # and where a downloaded copy has it (trapbatch results --previews: previews/index.html, exports/...)
    assert " ".join(page.split()).count("<code>../exports/camera-visits.csv</code> from this page in a downloaded") == 1
    assert downloaded_path(tid, REPEATS_REMOVED, layout.camera_visits_blob(tid, REPEATS_REMOVED)) == \
        "../../exports/repeats-removed/camera-visits.csv"  # previews/repeats-removed/index.html's
    # what the counts are, exactly: a visit is in each kind it had (an animal and a photo cut short with nothing
    # detected: animal and unknown, core.camtrap_events), and blank only without any
    said = " ".join(page.split())
    assert "once for each kind it has, so the kinds may add up to more than the visits" in said
    assert "blank when none has a box and none was cut short" in said

    def camera(name: str, visits: int, blank: int) -> ev.CameraVisits:
        return ev.CameraVisits(name, "2024-06-01T06:00:00+00:00", "2024-06-03T06:00:00+00:00", 172800, visits * 2,
                               visits, (visits - blank, 0, 0, 0), blank)

    many = [camera("cam<1>", MOSTLY_BLANK_VISITS, MOSTLY_BLANK_VISITS - 4),  # 80 %: flagged
            camera("cam2", MOSTLY_BLANK_VISITS, MOSTLY_BLANK_VISITS - 5),  # 75 %: not
            camera("cam3", MOSTLY_BLANK_VISITS - 1, MOSTLY_BLANK_VISITS - 1),  # too few visits to say
            *(camera(f"z{k:04d}", 3, 0) for k in range(CAMERAS_LISTED))]
    store.write_bytes(settings.container, layout.camera_visits_blob(tid), ev.camera_visits_csv(many, 60, 0.2))
    run_previews(tid, "m.pt", "", settings, store)
    page = store.read_bytes(settings.web_container, f"{folder}/index.html").decode()
    assert "<code>cam&lt;1&gt;</code> ⚠" in page and page.count('class="mostly-blank"') == 1
    flat = " ".join(page.split())
    assert "1 camera has mostly blank visits</b> (80% or more of at least 20, marked below)" in flat
    assert f"the first {CAMERAS_LISTED} cameras are listed here" in flat and "z0996" in page and "z0997" not in page
    assert f"{3 * CAMERAS_LISTED + 3 * MOSTLY_BLANK_VISITS - 1} visits at {CAMERAS_LISTED + 3} cameras" in page
    assert "with other kinds" not in page  # no camera saw another kind: no column for it
    store.write_bytes(settings.container, layout.camera_visits_blob(tid), ev.camera_visits_csv([], 60, 0.2))
    run_previews(tid, "m.pt", "", settings, store)  # no photo with a capture time: no table
    assert 'id="visits"' not in store.read_bytes(settings.web_container, f"{folder}/index.html").decode()


@pytest.mark.parametrize("when", ["thumbnails", "page"])
def test_pages_deleted_while_a_render_runs_stay_off_the_website(env: tuple[Settings, BlobStore, str], when: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A render past its checks (a repeat search's, a re-render's) when the pages are deleted: whether the deletion
    lands while it writes thumbnails into the old folder or after it made a new one for its page, nothing it wrote
    stays on the website, no folder is recorded, and no later render (even a task's own) publishes again."""
    from activities import previews
    from adapters.preview_folders import delete_preview_folder, withdrawn

    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a",), 4)
    previews.run_previews(tid, "m.pt", "", settings, store)
    old = existing_preview_folder(store, settings, tid)
    assert old is not None and list(store.list_names(settings.web_container, old + "/"))

    deleted: list[int | None] = []
    if when == "thumbnails":  # the deletion lands after the first thumbnails went into the old folder
        make = previews._Pictures.make_all

        def make_all(self: Any, files: list[str]) -> Any:
            out = make(self, files[:1])
            deleted.append(delete_preview_folder(store, settings, tid))
            return {**out, **make(self, files[1:])}
        monkeypatch.setattr(previews._Pictures, "make_all", make_all)
    else:  # the deletion landed before the render made its folder: it makes a new one, then writes the page
        folder = previews.preview_folder

        def preview_folder(*args: Any) -> str:
            deleted.append(delete_preview_folder(store, settings, tid))
            return folder(*args)
        monkeypatch.setattr(previews, "preview_folder", preview_folder)
    out = previews.run_previews(tid, "m.pt", "", settings, store, only_if_published=True)
    assert deleted and deleted[0] and "not published again" in out["not_published"]
    assert list(store.list_names(settings.web_container, f"{tid}-")) == []  # neither the old folder nor a new one
    assert existing_preview_folder(store, settings, tid) is None and withdrawn(store, settings, tid)
    monkeypatch.undo()
    assert "not_published" in previews.run_previews(tid, "m.pt", "", settings, store)
    assert list(store.list_names(settings.web_container, f"{tid}-")) == []


def test_merge_finds_repeated_detections_and_the_preview_lists_them(env: tuple[Settings, BlobStore, str]) -> None:
    import io

    from PIL import Image

    from activities.previews import run_previews

    settings, store, source = env
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 80, 70)).save(buf, "JPEG")
    for i in range(22):
        store.write_bytes(source, f"site/cam7/img{i:02d}.jpg", buf.getvalue())
    request = parse_task_request({"container": source, "prefix": "site/", "images_per_shard": 8, "model": "m.pt"})
    tid = request.task_id
    assert run_enumerate(tid, request, settings, store)["shards"] == 3
    rock = {"category": "1", "conf": 0.31, "bbox": [0.5, 0.6, 0.1, 0.1]}  # the same "animal" in every frame
    for sid in ("s00000", "s00001", "s00002"):
        m = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1)))
        _write_results(store, settings, m, [{"file": f, "detections": [rock]} for f in m.images])
    out = run_merge(tid, "m.pt", "2026-11-22T00:00:00", settings, store)
    assert out["repeated_locations"] == 1 and out["repeats_blob"] == repeats_blob(tid)
    found = store.read_json(settings.container, repeats_blob(tid))["locations"]
    assert [(r["folder"], r["count"], r["bbox"]) for r in found] == [("site/cam7", 22, rock["bbox"])]
    previews = run_previews(tid, "m.pt", "", settings, store)
    assert previews["counts"]["repeats"] == 1
    page = store.read_bytes(settings.web_container, f"{existing_preview_folder(store, settings, tid)}/index.html"
                            ).decode()
    assert "repeated detections" in page and "22 times in site/cam7" in page
    # named as a downloaded copy has it (previews/index.html, repeated-detections.json beside that folder), not only
    # by its storage path, which is in neither the download nor the zip
    assert "repeated-detections.json, beside this page&#39;s folder in a downloaded copy" in page
    assert '"location": "r00001"' in page and 'id="rde-request"' in page
    assert "example pictures not shown" not in page
    assert_script_parses(page)

    # an example deleted since detection: its place says so instead of showing one picture fewer without a word
    gone = found[0]["files"][0]
    store.service.get_blob_client(source, gone).delete_blob()
    run_previews(tid, "m.pt", "", settings, store)
    page = store.read_bytes(settings.web_container, f"{existing_preview_folder(store, settings, tid)}/index.html"
                            ).decode()
    assert (f"22 times in site/cam7 (r00001); 1 of its 3 example pictures not shown: {gone} (no picture: the image "
            "is no longer in its container)") in page


def assert_script_parses(page: str) -> None:
    """The page's inline script is valid JavaScript (node --check), so a template edit cannot break it silently."""
    import shutil
    import subprocess
    import tempfile

    node = shutil.which("node")
    assert node, "node is needed (it also runs Azurite)"
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as f:
        f.write(script)
    proc = subprocess.run([node, "--check", f.name], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_source_account_refs_travel_by_name_through_manifests_and_resubmits(
        env: tuple[Settings, BlobStore, str]) -> None:
    """Manifests (attempt 1 and resubmits) carry the source account and the secret *name*, nothing else."""
    settings, store, source = env
    request = parse_task_request({"container": source, "images_per_shard": 10, "model": "m.pt",
                                  "source_account_url": "https://partner.blob.core.windows.net",
                                  "credential_secret": "partner-sas"})
    tid = request.task_id
    run_enumerate(tid, request, settings, store, source=store)  # the partner account is played by our own here
    m1 = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00000", 1)))
    assert (m1.source_account_url, m1.source_credential_secret) == ("https://partner.blob.core.windows.net",
                                                                    "partner-sas")

    class NullPool:
        def ensure_job(self, job_id: str) -> None: ...
        def submit(self, job_id: str, tasks: list[object]) -> None: ...

    assert resubmit_one(tid, tid, "s00000", 2, settings, store, NullPool())["submitted"]  # type: ignore[arg-type]
    m2 = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00000", 2)))
    assert (m2.source_account_url, m2.source_credential_secret) == (m1.source_account_url, "partner-sas")


def test_blob_names_cannot_break_out_of_the_preview_script() -> None:
    import shutil
    import subprocess

    from activities.previews import script_json

    hostile = "cam/</script><script>alert('x')</script> & more.jpg"
    embedded = script_json({"file": hostile})
    assert "</script>" not in embedded and "<" not in embedded and "'" not in embedded
    node = shutil.which("node")
    assert node
    out = subprocess.run([node, "-e", f"const v = {embedded}; process.stdout.write(v.file)"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == hostile  # the name survives intact as data


def test_files_not_run_reach_the_results_info_and_the_preview_page(env: tuple[Settings, BlobStore, str]) -> None:
    """The enumeration summary's tally (core.notimages) is what the results file and the page say was not run."""
    from activities.previews import run_previews
    from core.notimages import NotImages

    settings, store, source = env
    request = parse_task_request({"container": source, "images_per_shard": 10, "model": "m.pt"})
    tid = request.task_id
    run_enumerate(tid, request, settings, store)
    tally = NotImages()
    for name in ("a/VID_0001.MP4", "a/VID_0002.MP4", "a/readme.txt"):
        tally.add(name, 5)
    summary = store.read_json(settings.container, layout.enumeration_blob(tid))
    store.write_json(settings.container, layout.enumeration_blob(tid), {**summary, "not_images": tally.to_dict()})
    m = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00000", 1)))
    _write_results(store, settings, m, [{"file": f, "detections": []} for f in m.images])
    run_merge(tid, "m.pt", "2026-11-22T00:00:00", settings, store)

    info = json.loads(store.read_bytes(settings.container, results_blob(tid)))["info"]
    assert info["trapbatch"]["not_images"] == tally.to_dict()
    assert info["trapbatch"]["not_images"]["kinds"][".mp4"]["examples"] == ["a/VID_0001.MP4", "a/VID_0002.MP4"]
    run_previews(tid, "m.pt", "", settings, store)
    folder = existing_preview_folder(store, settings, tid)
    page = store.read_bytes(settings.web_container, f"{folder}/index.html").decode()
    assert "Not run: 3 files are not images and were not run (.mp4 2, .txt 1)" in page
    assert "a/VID_0001.MP4" in page and "process_video" in page  # the video kind: an example and what to do
