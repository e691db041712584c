"""The whole path on one machine: HTTP / blob drop -> durable orchestration (real SDK replay in devhost) -> local pool
running the real worker on a real (tiny, random-weight) YOLOv5 checkpoint -> one merged MegaDetector file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from adapters.blobs import BlobStore
from core import mdformat
from gpu_batch import layout
from gpu_batch.layout import results_blob
from gpu_batch.manifest import ShardManifest
from tests.api_session import DiagnosingSession
from tests.integration.conftest import upload_images
from tests.openapi_answers import described_answers_fixture, recording
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]




def _read_for_scan(store: BlobStore, container: str, name: str) -> bytes | None:
    """A listed blob's bytes; None if it was deleted since the listing (it holds nothing now). Azurite answers a read
    racing a concurrent rewrite or delete with a 500 now and then on a loaded machine, and a read can outlast its
    socket deadline there (an error with no response at all): read again, and fail only if it keeps failing or Azurite
    answers with a 4xx, so no blob goes unscanned."""
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

    for attempt in range(6):
        try:
            return store.read_bytes(container, name)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            status = exc.status_code if isinstance(exc, HttpResponseError) else None
            if (status is not None and status < 500) or attempt == 5:
                if name not in set(store.list_names(container, name)):
                    return None  # deleted while the read failed: it holds nothing now
                code = getattr(exc, "error_code", None)
                raise AssertionError(f"could not read {container}/{name} to scan it ({type(exc).__name__}, "
                                     f"status {status}, code {code}): {str(exc)[:400]}") from exc
            time.sleep(1 + attempt)
    return None


def scan_start() -> datetime:
    """The moment from which ``places_holding`` scans blobs, taken before the secret it looks for exists. The service's
    Last-Modified has whole seconds: two seconds earlier covers its rounding and any clock step between processes."""
    return datetime.now(timezone.utc) - timedelta(seconds=2)


def places_holding(store: BlobStore, connection: str, forms: set[str], since: datetime,
                   except_blobs: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Every blob (by content) written since ``since`` and every table of the account whose text contains one of
    ``forms``. A secret made during a test can only be in a blob written after it was made, so blobs left by the
    worker's earlier tests (thousands, some still being deleted by their hosts) are not read: reading them only
    slowed the scan and made it fail on their reads."""
    from azure.data.tables import TableServiceClient

    found = []
    for container in store.service.list_containers():
        for blob in store.service.get_container_client(container.name).list_blobs():
            if f"{container.name}/{blob.name}" in except_blobs or blob.last_modified < since:
                continue
            data = _read_for_scan(store, container.name, blob.name)
            if data is not None and any(form.encode() in data for form in forms):
                found.append(f"blob {container.name}/{blob.name}")
    tables = TableServiceClient.from_connection_string(connection)
    for table in tables.list_tables():
        for entity in tables.get_table_client(table.name).list_entities():
            text = json.dumps({k: str(v) for k, v in entity.items()})
            if any(form in text for form in forms):
                found.append(f"table {table.name}")
    return found


def finished_status(base: str, task_id: str) -> dict[str, Any] | None:
    s = api.get(f"{base}/api/tasks/{task_id}", timeout=120).json()
    return s if s["runtime_status"] in ("Completed", "Failed", "Terminated") else None


def check_results(store: BlobStore, env: dict[str, str], task_id: str, names: list[str]) -> dict[str, Any]:
    doc = store.read_json(env["TRAPBATCH_CONTAINER"], results_blob(task_id))
    mdformat.validate(doc, expected_files=names)
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    assert validate_batch_results(doc)["validation_results"]["errors"] == []
    files = [im["file"] for im in doc["images"]]
    assert sorted(files) == names and len(files) == len(set(files))
    failures = {im["file"]: im["failure"] for im in doc["images"] if im.get("failure")}
    assert failures == {names_corrupt: "image access failure" for names_corrupt in failures}
    # the worker's image sizes reach the final results: every success has them, no failure does
    assert all(isinstance(im["width"], int) and isinstance(im["height"], int) for im in doc["images"]
               if not im.get("failure"))
    assert not any("width" in im for im in doc["images"] if im.get("failure"))
    return doc


# devhost, like the Functions host, answers 401 on /api/ routes without a function key (devhost/README.md).
FUNCTION_KEY = "integration-tests-function-key"
api = DiagnosingSession()
api.headers["x-functions-key"] = FUNCTION_KEY
answers = recording(api)  # every JSON answer of the app, checked against its OpenAPI description after each test


described_answers = described_answers_fixture(answers)  # each JSON answer fully described (tests/openapi_answers.py)


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str):  # type: ignore[no-untyped-def]
    from devhost.host import DevHost
    import function_app

    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="h" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def test_http_start_runs_to_one_merged_file_with_every_image_once(host, app_env, store, unique_name,  # type: ignore[no-untyped-def]
                                                                   storage_connection, tmp_path) -> None:  # type: ignore[no-untyped-def]
    since = scan_start()
    names = upload_images(store, unique_name, 10, corrupt=1)
    whole = store.read_bytes(unique_name, names[5])  # cut short, but decodable: a success named damaged
    store.write_bytes(unique_name, names[5], whole[: len(whole) * 9 // 10])
    body = {"container": unique_name, "request_name": "e2e", "max_failed_fraction": 0.1,  # 1 corrupt image of 10
            "event_interval_s": 120, "clock_corrections": {"cam-x/": 3600}}  # kept for the exports
    r = api.post(host.base_url + "/api/tasks", json=body, timeout=120)
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    assert r.json()["status_url"].endswith(f"/api/tasks/{task_id}")
    # the same request again is the same task, not a second one
    again = api.post(host.base_url + "/api/tasks", json={**body, "request_name": "other label",
                                                               "max_failed_fraction": 0.5}, timeout=120)
    assert again.status_code == 200 and again.json()["id"] == task_id and again.json()["started"] is False
    # a setting that differs is said, not silently dropped (a label is no setting)
    assert again.json()["not_applied"] == ["max_failed_fraction"], again.json()
    assert "max_failed_fraction differs from the task's and was not applied: it applies" in again.json()["hint"]
    status = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
    assert status["runtime_status"] == "Completed", status
    assert status["stage"] == "completed" and status["images"] == 10 and status["failed"] == 1
    assert status["failed_fraction"] == 0.1 and status["max_failed_fraction"] == 0.1
    # the corrupt image is a failure, never "damaged"; the one cut short is named, and listed beside the results
    assert status["damaged"]["count"] == 1 and status["damaged"]["examples"] == [names[5]], status
    damaged_list = store.read_bytes(app_env["TRAPBATCH_CONTAINER"], layout.damaged_blob(task_id)).decode()
    assert damaged_list.splitlines() == ["file", names[5]]
    doc = check_results(store, app_env, task_id, names)
    stored = store.read_json(app_env["TRAPBATCH_CONTAINER"], layout.request_blob(task_id))
    assert (stored["event_interval_s"], stored["clock_corrections"]) == (120, {"cam-x": 3600})
    assert doc["images"][0]["file"] == names[0]
    assert [im["failure"] for im in doc["images"] if im.get("failure")] == ["image access failure"]
    assert sum(len(im["detections"]) for im in doc["images"] if not im.get("failure")) > 0  # real network, real boxes
    res = api.get(f"{host.base_url}/api/tasks/{task_id}/results", timeout=120)
    assert res.status_code == 200 and res.json()["results"]["blob"] == results_blob(task_id)
    check_exports_and_links(store, storage_connection, app_env, status, res.json(), doc, since)
    check_readme(store, storage_connection, app_env, task_id, res.json(), status, tmp_path / "download")
    check_zooniverse_folder(storage_connection, res.json(), status, doc, unique_name, damaged={names[5]})
    page = api.get(res.json()["previews"]["local_url"], timeout=120)
    assert page.status_code == 200 and task_id in page.text
    previews = res.json()["previews"]
    assert previews["public_url"] == f"https://trapbatchweb.z6.web.core.windows.net/{previews['blob']}"
    check_preview_folder_is_unguessable(host, store, app_env, storage_connection, task_id, res.json()["previews"],
                                        since)
    listed = api.get(f"{host.base_url}/api/tasks", timeout=120).json()
    assert [t["id"] for t in listed["tasks"]] == [task_id]  # its shard-group orchestrations are not tasks
    assert listed["tasks"][0]["stage"] == "completed" and listed["tasks"][0]["images"] == 10
    assert api.get(f"{host.base_url}/api/tasks?limit=0", timeout=120).status_code == 400
    check_repeat_removal(host, store, app_env, task_id, doc, storage_connection, tmp_path / "removed")


def check_exports_and_links(store, connection: str, app_env, status: dict[str, Any],  # type: ignore[no-untyped-def]
                            answer: dict[str, Any], doc: dict[str, Any], since: datetime) -> None:
    """The merge is followed by the exports; GET .../results links every file read-only, and no link is stored."""
    from urllib.parse import parse_qs, urlsplit

    exports = status["results"]["exports"]
    assert exports["images"] == 10 and exports["sizes_unknown"] == 0
    # every photo but the corrupt one, and the one cut short (damaged.csv), which volunteers would see half grey
    assert exports["zooniverse_subjects"] == 8 and exports["zooniverse_cut_short"] == 1
    assert exports["coco"] == layout.coco_blob(status["id"])
    files = answer["links"]["files"]["original"]
    assert requests.get(files["results"], timeout=120).json() == doc  # no credential but the link
    assert requests.get(files["damaged"], timeout=120).text.splitlines()[0] == "file"  # the photos cut short
    coco = requests.get(files["exports"]["coco.json"], timeout=120).json()
    assert [im["file_name"] for im in coco["images"]] == [im["file"] for im in doc["images"]]
    assert set(files["exports"]) >= {"camtrap-dp/datapackage.json", "camtrap-dp/media.csv", "zooniverse/batch-001.csv"}
    signature = parse_qs(urlsplit(files["results"]).query)["sig"][0]
    assert places_holding(store, connection, {signature}, since) == []  # not in history, statuses or any blob


def check_readme(store, connection: str, app_env, task_id: str, answer: dict[str, Any],  # type: ignore[no-untyped-def]
                 status: dict[str, Any], out: Path, variant: str = "") -> None:
    """Each results variant has a README (``core.readme``) that lists exactly the files it has (those the results
    answer names, in storage now, and itself), and ``trapbatch results``' download and the results zip carry it, each
    file it lists beside it. Its facts: the task, the images' container, the counts and the preview site."""
    import io
    import zipfile

    from adapters.results_bundle import write_zip
    from cli.download import blob_service, download
    from tests.readme_listing import listed_paths

    container, key = app_env["TRAPBATCH_CONTAINER"], variant or "original"
    files = answer["results"]["files"][key]
    assert files["readme"] == layout.readme_blob(task_id, variant)
    assert answer["links"]["files"][key]["readme"].split("?")[0].endswith("/" + files["readme"])
    names = [n for v in files.values() for n in (v.values() if isinstance(v, dict) else [v])]
    prefix = layout.results_prefix(task_id)
    text = store.read_bytes(container, layout.readme_blob(task_id, variant)).decode("utf-8")
    listed = listed_paths(text)
    assert sorted(listed) == sorted(n[len(prefix):] for n in names), text  # no file left out, none made up
    assert all(store.exists(container, prefix + path) for path in listed)
    flat = " ".join(text.split())
    assert task_id in flat and f'container "{answer["source"]["container"]}"' in flat, text
    assert f"{status['images']} images, {status['failed']} failed" in flat and "1 cut short" in flat, text
    assert ("not published" in flat) != ("published on the web" in flat)
    downloaded = download(blob_service(connection, ""), answer, status, out)
    got = {f.path.relative_to(out).as_posix() for f in downloaded}
    assert set(listed) <= got and (out / listed[0]).read_text(encoding="utf-8") == text
    zipped = store.read_bytes(container, write_zip(store, container, task_id)["zip"])
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        members = {n.split("/", 1)[1] for n in zf.namelist()}
        assert set(listed) <= members and zf.read(f"{task_id}/{listed[0]}").decode("utf-8") == text


def check_zooniverse_folder(connection: str, answer: dict[str, Any], status: dict[str, Any], doc: dict[str, Any],
                            container: str, damaged: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """The results answer names the images' container, and `trapbatch zooniverse` puts every photo of the task's
    manifest beside it from there, byte for byte as they are all small (tests/integration/test_zooniverse_upload.py
    shrinks photos)."""
    import tempfile

    from cli.download import blob_service
    from cli.zooniverse_upload import manifests, prepare, source_location

    assert answer["source"] == {"container": container, "account_url": ""}
    service = blob_service(connection, "")
    variant, files = manifests(answer, status, None)
    # a photo cut short (``damaged``) is no subject: volunteers would see its grey part (the exports leave it out)
    subjects = sorted(im["file"] for im in doc["images"] if not im.get("failure") and im["file"] not in damaged)
    with tempfile.TemporaryDirectory() as folder:
        [report] = prepare(service, service, source_location(answer)[0], files, Path(folder))
        assert (variant, report.photos, report.problems) == ("original", len(subjects), [])
        assert report.copied == len(subjects)
        written = {p.relative_to(report.manifest.parent).as_posix(): p.read_bytes()
                   for p in report.manifest.parent.rglob("*.jpg")}
        assert set(written) == set(subjects)
        assert written == {name: service.get_blob_client(container, name).download_blob().readall()
                           for name in subjects}


def check_preview_folder_is_unguessable(host, store, app_env, connection: str, task_id: str,  # type: ignore[no-untyped-def]
                                        previews: dict[str, Any], since: datetime) -> None:
    """The static website is public and task ids are request hashes: the preview folder carries 128 random bits,
    kept out of the orchestration history and status (plain tables) and every other blob."""
    import re

    from gpu_batch.layout import preview_folder_blob

    folder = previews["folder"]
    assert re.fullmatch(re.escape(task_id) + r"-[0-9a-f]{32}", folder), folder
    assert previews["blob"] == f"{folder}/index.html"
    assert api.get(f"{host.base_url}/web/{task_id}/index.html", timeout=120).status_code == 404
    token = folder.rsplit("-", 1)[1]
    assert token not in api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).text
    own = {f"{app_env['TRAPBATCH_CONTAINER']}/{preview_folder_blob(task_id)}"}
    assert places_holding(store, connection, {token}, since, except_blobs=own) == []


def check_repeat_removal(host, store, app_env, task_id: str, doc: dict[str, Any],  # type: ignore[no-untyped-def]
                         connection: str, out: Path) -> None:
    """Phase 2 of repeated-detection elimination through HTTP, the orchestration and the re-merge.

    The tiny random-weight network gives no repeated boxes on these tiny images (and phase 1 is tested against
    MegaDetector's own search elsewhere), so a "rock" is added to the cam0 images' shard results and named in the
    task's repeated-detection list; the re-merge must mark exactly those detections and change nothing else.
    """
    from gpu_batch.layout import REPEATS_REMOVED, repeats_blob, threshold_csv_blob

    url = f"{host.base_url}/api/tasks/{task_id}/repeats"
    listed = api.get(url, timeout=120)
    assert listed.status_code == 200 and listed.json()["removal"] is None
    assert isinstance(listed.json()["locations"], list)
    container = app_env["TRAPBATCH_CONTAINER"]
    rock = {"category": "1", "conf": 0.3, "bbox": [0.4, 0.4, 0.1, 0.1]}
    for name in store.list_names(container, f"tasks/{task_id}/shards/"):
        if name.endswith(".results.json"):
            results = store.read_json(container, name)
            for im in results["images"]:
                if im["file"].startswith("cam0/") and not im.get("failure"):
                    im["detections"] = [*im["detections"], rock]
            store.write_json(container, name, results)
    found = store.read_json(container, repeats_blob(task_id))
    location = {"id": "r00001", "folder": "cam0", "category": "1", "bbox": rock["bbox"], "count": 20,
                "conf_min": 0.3, "conf_max": 0.3, "files": ["cam0/img 002.jpg"]}
    store.write_json(container, repeats_blob(task_id), {**found, "locations": [location]})
    assert api.post(url, json={"remove": ["r09999"]}, timeout=120).status_code == 400
    # what an earlier removal left (a CSV at another threshold): made from results the new removal replaces
    stale = threshold_csv_blob(task_id, 0.5, REPEATS_REMOVED)
    store.write_bytes(container, stale, b"file,status\n")
    started = api.post(url, json={"keep": []}, timeout=120)
    assert started.status_code == 202, started.text
    assert started.json()["removing"] == ["r00001"]
    done = wait_until(lambda: (lambda r: r if r and r.get("runtime_status") in ("Completed", "Failed") else None)(
        api.get(url, timeout=120).json()["removal"]), 120, "repeat removal")
    rocks = [im["file"] for im in doc["images"] if im["file"].startswith("cam0/") and not im.get("failure")]
    assert done["runtime_status"] == "Completed" and done["detections_marked"] == len(rocks) > 0, done
    cleaned = store.read_json(container, results_blob(task_id, REPEATS_REMOVED))
    mdformat.validate(cleaned, expected_files=[im["file"] for im in doc["images"]])
    for before, after in zip(doc["images"], cleaned["images"]):
        expected = dict(before)
        if before["file"] in rocks:
            expected["detections"] = [*before["detections"], {**rock, "conf": -0.3}]
        assert after == expected
    assert store.read_json(container, results_blob(task_id)) == doc  # the original results are left alone
    assert not store.exists(container, stale)  # no link or zip hands it out beside the new results
    # the variant's own README, written when the removal published: its files now (not the stale CSV); the
    # original's still lists exactly the original's
    answer = api.get(f"{host.base_url}/api/tasks/{task_id}/results", timeout=120).json()
    status = api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json()
    check_readme(store, connection, app_env, task_id, answer, status, out, REPEATS_REMOVED)
    check_readme(store, connection, app_env, task_id, answer, status, out.with_name(out.name + "-original"))
    text = store.read_bytes(container, layout.readme_blob(task_id, REPEATS_REMOVED)).decode("utf-8")
    assert "repeated detections at 1 place removed" in " ".join(text.split()) and stale.rsplit("/", 1)[1] not in text
    assert done["previews"]["blob"].endswith(f"/{REPEATS_REMOVED}/index.html")
    page = api.get(done["previews"]["local_url"], timeout=120)
    assert page.status_code == 200 and "repeated detections removed at 1 place" in page.text
    main_page = api.get(f"{host.base_url}/api/tasks/{task_id}/results", timeout=120).json()["previews"]
    assert done["previews"]["folder"] == main_page["folder"]  # one folder per task, its thumbnails shared

    # the pages come off the public website on request; the results stay
    gone = api.delete(f"{host.base_url}/api/tasks/{task_id}/previews", timeout=120)
    assert gone.status_code == 200 and gone.json()["deleted"] > 0, gone.text
    assert api.get(done["previews"]["local_url"], timeout=120).status_code == 404
    assert not list(store.list_names("$web", main_page["folder"] + "/"))
    assert api.delete(f"{host.base_url}/api/tasks/{task_id}/previews", timeout=120).status_code == 404
    assert store.read_json(container, results_blob(task_id)) == doc


def test_failed_shard_resubmits_only_its_missing_images(host, app_env, store, unique_name, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00001/1": "crash_after:1"}))
    names = upload_images(store, unique_name, 10, corrupt=0)
    r = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120)
    task_id = r.json()["id"]
    final = host.wait_for(task_id, timeout=240)
    assert final["runtimeStatus"] == "Completed", final
    assert final["output"]["resubmissions"] == 1 and final["output"]["missing"] == 0
    state = app_env["TRAPBATCH_CONTAINER"]
    first = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, "s00001", 1)))
    second = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, "s00001", 2)))
    done_in_first = [im["file"] for im in store.read_json(state, first.output_blob)["images"]]
    assert 0 < len(done_in_first) < len(first.images)  # the crash left part of the shard done
    assert list(second.images) == [n for n in first.images if n not in done_in_first]  # only the missing ones
    for sid in ("s00000", "s00002"):  # the healthy shards ran once
        assert not store.exists(state, layout.manifest_blob(task_id, sid, 2))
    # each finished attempt's coverage summary names its results as stored; the crashed one never wrote one
    from gpu_batch.manifest import read_coverage_summary

    for sid, attempt in (("s00000", 1), ("s00002", 1), ("s00001", 2)):
        summary = read_coverage_summary(store.read_bytes(state, layout.attempt_coverage_blob(task_id, sid, attempt)))
        etag = store.etag_or_none(state, layout.attempt_results_blob(task_id, sid, attempt))
        assert summary is not None and etag and summary.matches(etag)
    assert not store.exists(state, layout.attempt_coverage_blob(task_id, "s00001", 1))
    # each shard's last worker wrote the merge's view of the whole shard, which the merge composed
    # (gpu_batch.formats.mergeview): the healthy shards' of their one attempt; the crashed attempt wrote none, and the
    # resubmitted one's covers both attempts (its manifest named the first manifest and the crashed attempt's results)
    from gpu_batch.formats.mergeview import read_view

    assert second.merge_view_basis is not None and second.merge_view_basis.results == (first.output_blob,)
    for sid, attempt in (("s00000", 1), ("s00002", 1), ("s00001", 2)):
        view = read_view(store.read_bytes(state, layout.attempt_view_blob(task_id, sid, attempt)))
        assert view is not None and view.counts["images"] == len(
            ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, sid, 1))).images)
        earlier = {name: store.etag_or_none(state, name) or "" for name in
                   (layout.attempt_results_blob(task_id, sid, a) for a in range(1, attempt))}
        assert view.matches(task_id, view.threshold, store.etag_or_none(state, layout.attempt_results_blob(
            task_id, sid, attempt)) or "", store.etag_or_none(state, layout.manifest_blob(task_id, sid, 1)) or "",
            earlier)
    assert not store.exists(state, layout.attempt_view_blob(task_id, "s00001", 1))
    check_results(store, app_env, task_id, names)
    check_cost(host, task_id, final["output"])


def check_cost(host, task_id: str, output: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """The final status prices the node time of every attempt, the crashed one included (core/cost.py); the local
    pool has no VM size, so it gives the time and rate but no price, and says so."""
    cost = output["cost"]
    attempts = output["shards"] + output["resubmissions"]  # every attempt the pool ran, the crashed one included
    assert (cost["images"], cost["attempts"], cost["attempts_timed"]) == (10, attempts, attempts), cost
    # each attempt is a worker process that imports torch and loads a model before its first image: over a second
    assert cost["node_seconds"] > attempts * 1.0, cost
    assert cost["images_per_node_second"] == round(10 / cost["node_seconds"], 3)
    assert cost["vm_size"] is None and cost["price_per_hour"] is None and cost["usd"] is None
    assert "local pool" in cost["note"]
    status = api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json()
    assert status["cost"] == cost


def test_blob_drop_starts_the_same_task_and_bad_drop_gets_error_file(host, app_env, store, unique_name,  # type: ignore[no-untyped-def]
                                                                    incoming) -> None:
    names = upload_images(store, unique_name, 4, corrupt=0)
    store.write_bytes("incoming", f"{unique_name}.json", json.dumps({"container": unique_name}).encode())
    store.write_bytes("incoming", f"{unique_name}-bad.json", b'{"container": "Not_Valid"}')
    receipt = wait_until(lambda: store.read_json_or_none("incoming", f"{unique_name}.task.json"), 60, "drop receipt")
    error = wait_until(lambda: store.read_json_or_none("incoming", f"{unique_name}-bad.json.error.json"), 60, "error file")
    assert "not a valid blob container name" in error["error"] and error["hint"]
    final = host.wait_for(receipt["id"], timeout=240)
    assert final["runtimeStatus"] == "Completed", final
    check_results(store, app_env, receipt["id"], names)
    done = wait_until(lambda: store.read_json_or_none("incoming", f"{unique_name}.done.json"), 60, "done file")
    assert done["id"] == receipt["id"] and done["stage"] == "completed" and done["images"] == len(names)


def test_bad_http_input_gets_4xx_json_never_500(host, unique_name) -> None:  # type: ignore[no-untyped-def]
    base = host.base_url + "/api/tasks"
    cases = [
        (api.post(base, data=b"{nope", headers={"Content-Type": "application/json"}, timeout=120), 400),
        (api.post(base, json={"container": "x"}, timeout=120), 400),
        (api.post(base, json={"container": "no-such-container-" + unique_name[:10]}, timeout=120), 404),
        (api.get(base + "/task-00000000000000000000", timeout=120), 404),
        (api.get(base + "/nonsense", timeout=120), 404),
        (api.post(base, data=b'{"container": "x"}', headers={"Content-Type": "text/plain"}, timeout=120), 415),
        (api.post(base, json={"container": unique_name, "request_name": "x" * 70_000}, timeout=120), 413),
        (api.post(base, data=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"},
                       timeout=120), 413),
        (api.post(base, data=b"[" * 5_000 + b"]" * 5_000, headers={"Content-Type": "application/json"},
                       timeout=120), 400),  # nested deeper than the parser's stack: refused, never a 500
        (api.post(base, json={"container": unique_name, "first_n": 10**12}, timeout=120), 400),
        (api.post(base, json={"container": unique_name, "prefix": "a\u0000b"}, timeout=120), 400),
        # trapbatch's own containers hold no images: their files are not a caller's to list or read (a preview
        # folder's secret name, other callers' task ids)
        (api.post(base, json={"container": unique_name + "-state", "image_list": "results/t/preview-folder.txt"},
                  timeout=120), 400),
        (api.post(base, json={"container": "incoming"}, timeout=120), 400),
    ]
    for resp, code in cases:
        assert resp.status_code == code, resp.text
        assert set(resp.json()) == {"error", "hint"} and resp.json()["hint"]


def test_the_apps_own_account_named_by_its_url_still_refuses_its_own_containers(  # type: ignore[no-untyped-def]
        host, store, unique_name, monkeypatch) -> None:
    """An operator who lists the app's own account in TRAPBATCH_SOURCE_ACCOUNTS lets requests name it by URL: the
    app then reads it with its own identity, and its state container must stay out of reach that way too."""
    own = store.service.primary_endpoint.rstrip("/")
    monkeypatch.setenv("TRAPBATCH_SOURCE_ACCOUNTS", own)
    r = api.post(host.base_url + "/api/tasks", json={"container": unique_name + "-state", "source_account_url": own,
                                                     "image_list": "results/t/preview-folder.txt"}, timeout=120)
    assert r.status_code == 400 and "not images" in r.json()["error"], r.text


def test_devhost_killed_mid_task_resumes_and_loses_nothing(app_env, store, unique_name) -> None:  # type: ignore[no-untyped-def]
    """Each start takes a port of devhost's own (``--port 0 --port-file``, devhost/port_file.py: a port picked here
    could be taken by another module's Azurite before devhost binds it); the restarted devhost resumes the same task
    hub on whichever port it gets, and the client follows it there."""
    from devhost.port_file import wait_for_port_file

    names = upload_images(store, unique_name, 12, corrupt=1)
    hub = "k" + unique_name[:12]
    env = {**os.environ, **app_env, "TRAPBATCH_DEVHOST_FUNCTION_KEY": FUNCTION_KEY}
    log_path = Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / f"devhost-{hub}.log"
    port_file = log_path.with_suffix(".port")
    log = open(log_path, "ab")

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "devhost", "--port", "0", "--port-file", str(port_file),
                                 "--hub", hub], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    proc = launch()
    try:
        base = wait_for_port_file(port_file, proc, 120, log_path)
        task_id = api.post(base + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
        wait_until(lambda: api.get(f"{base}/api/tasks/{task_id}", timeout=120).json().get("stage") == "detecting",
                   120, "the task to reach the detecting stage")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc = launch()
        base = wait_for_port_file(port_file, proc, 120, log_path)
        status = wait_until(lambda: finished_status(base, task_id), 300, "task completion")
        assert status["runtime_status"] == "Completed", status
        assert status["images"] == 12 and status["missing"] == 0
        check_results(store, app_env, task_id, names)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


HUNG_ATTEMPT_LIMIT_S = 10  # the hung attempt's own pool limit (test_hung_shard_is_terminated_at_its_deadline_...)


def test_hung_shard_is_terminated_at_its_deadline_and_resubmitted(host, app_env, store, unique_name, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The pool ends an attempt that hangs at its time limit (TaskEnded) and the shard's next attempt runs it all.

    Two limits: the run's, TRAPBATCH_MAX_TASK_SECONDS, must exceed a healthy attempt's run time on a loaded CI machine
    (torch imports alone took over 30 s there once, and every attempt then ran into the deadline), so every healthy
    attempt gets 75 s; the hung attempt, whose end is the limit whatever it is, gets ``HUNG_ATTEMPT_LIMIT_S`` as its
    ``ShardTask.max_seconds`` (set here on its way into the in-process LocalPool). Why: waiting out 75 s was ~65 s of
    the test's ~87 s. Killed at 10 s on a machine slow enough that its worker was still importing torch, the attempt
    has still finished nothing, as a hung one has, and ends the same way."""
    from gpu_batch.pool.local import LocalPool

    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00000/1": "hang"}))
    monkeypatch.setenv("TRAPBATCH_MAX_TASK_SECONDS", "75")
    hung = layout.pool_task_id("s00000", 1)
    submit = LocalPool.submit

    def submit_with_a_short_limit_for_the_hung_attempt(self: LocalPool, job_id: str, tasks: Any) -> None:
        assert all(t.max_seconds == 75 for t in tasks)  # the run's limit reaches every attempt, resubmissions too
        submit(self, job_id, [replace(t, max_seconds=HUNG_ATTEMPT_LIMIT_S) if t.task_id == hung else t for t in tasks])

    monkeypatch.setattr(LocalPool, "submit", submit_with_a_short_limit_for_the_hung_attempt)
    names = upload_images(store, unique_name, 6, corrupt=0)
    task_id = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
    final = host.wait_for(task_id, timeout=480)
    assert final["runtimeStatus"] == "Completed", final
    assert final["output"]["resubmissions"] >= 1 and final["output"]["missing"] == 0
    from azure.data.tables import TableServiceClient

    (row,) = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_table_client(
        "trapbatchpool").query_entities("PartitionKey eq @j and RowKey eq @t",
                                        parameters={"j": final["output"]["pool_job"], "t": hung})
    assert row["FailureCode"] == "TaskEnded", dict(row)  # ended by the pool at its limit, not by the worker
    assert f"timed out: ran longer than {HUNG_ATTEMPT_LIMIT_S} s" in row["FailureMessage"], dict(row)
    state = app_env["TRAPBATCH_CONTAINER"]
    second = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, "s00000", 2)))
    first = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, "s00000", 1)))
    assert list(second.images) == list(first.images)  # the hung attempt finished nothing, so all of it is retried
    check_results(store, app_env, task_id, names)


def test_cancel_stops_pool_work_and_ends_the_task_cancelled(host, app_env, store, unique_name, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00000/1": "hang", "s00001/1": "hang"}))
    upload_images(store, unique_name, 8, corrupt=0)
    task_id = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
    wait_until(lambda: api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json().get("shards_running"),
               120, "shards to run")
    r = api.post(f"{host.base_url}/api/tasks/{task_id}/cancel", timeout=120)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    final = host.wait_for(task_id, timeout=120)
    assert final["runtimeStatus"] == "Completed" and final["output"]["stage"] == "cancelled"
    assert api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json()["stage"] == "cancelled"
    assert api.post(f"{host.base_url}/api/tasks/{task_id}/cancel", timeout=120).status_code == 409
    assert api.get(f"{host.base_url}/api/tasks/{task_id}/results", timeout=120).status_code == 409
    from azure.data.tables import TableServiceClient

    rows = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_table_client(
        "trapbatchpool").query_entities("PartitionKey eq @j", parameters={"j": final["output"]["pool_job"]})
    assert final["output"]["pool_job"].startswith(task_id + "_r")  # this run's own job
    assert {r["State"] for r in rows} == {"completed"}  # the hung workers were terminated


def test_images_in_another_account_are_read_with_a_sas_named_by_secret(host, app_env, store, storage_connection,  # type: ignore[no-untyped-def]
                                                                       tmp_path, monkeypatch) -> None:
    """A second Azurite plays the partner's storage account; the request names it and a secret, never the SAS.

    The SAS (container-scoped: read and list) lives in a local secrets file standing in for Key Vault. The images
    can only be reached through it (trapbatch's own account has no such container), and afterwards no table entity
    or blob of trapbatch's account, orchestration history and worker logs included, contains its signature.
    """
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from adapters.blobs import service_client
    from devhost.azurite import ACCOUNT, ACCOUNT_KEY, start_azurite

    since = scan_start()
    partner = start_azurite()
    try:
        photos = BlobStore(service_client(partner.connection_string))
        names = upload_images(photos, "partner-photos", 6, corrupt=1)
        sas = generate_container_sas(ACCOUNT, "partner-photos", account_key=ACCOUNT_KEY,
                                     permission=ContainerSasPermissions(read=True, list=True),
                                     expiry=datetime.now(timezone.utc) + timedelta(hours=1))
        signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
        secrets = tmp_path / "secrets.json"
        secrets.write_text(json.dumps({"partner-sas": sas}))
        monkeypatch.setenv("TRAPBATCH_LOCAL_SECRETS_FILE", str(secrets))
        account_url = f"http://127.0.0.1:{partner.blob_port}/{ACCOUNT}"
        assert not store.container_exists("partner-photos")
        body = {"container": "partner-photos", "source_account_url": account_url, "request_name": "partner"}
        outside = api.post(host.base_url + "/api/tasks", json={**body, "credential_secret": "partner-sas"},
                                timeout=120)  # the operator has not listed the partner's account yet
        assert outside.status_code == 403 and "TRAPBATCH_SOURCE_ACCOUNTS" in outside.json()["hint"], outside.text
        monkeypatch.setenv("TRAPBATCH_SOURCE_ACCOUNTS", account_url)

        refused = api.post(host.base_url + "/api/tasks", json={**body, "credential_secret": "no-such"},
                                timeout=120)
        assert refused.status_code == 400 and "no-such" in refused.json()["error"], refused.text
        leaked = api.post(host.base_url + "/api/tasks", json={**body, "source_account_url": account_url + "?" + sas},
                               timeout=120)
        assert leaked.status_code == 400 and "Key Vault" in leaked.json()["hint"]

        r = api.post(host.base_url + "/api/tasks", json={**body, "credential_secret": "partner-sas"}, timeout=120)
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        status = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
        assert status["runtime_status"] == "Completed" and status["images"] == 6 and status["failed"] == 1, status
        doc = check_results(store, app_env, task_id, names)
        assert sum(len(im["detections"]) for im in doc["images"] if not im.get("failure")) > 0
        folder = api.get(f"{host.base_url}/api/tasks/{task_id}/results", timeout=120).json()["previews"]["folder"]
        thumbs = list(store.list_names("$web", f"{folder}/thumbs/"))
        assert thumbs  # the preview step read the partner's images too
        # COCO's pixel boxes: every size comes from the worker's entries (no header read through the SAS any more;
        # that fallback, for results without sizes, is covered with trapbatch's own account in test_exports.py)
        exports = status["results"]["exports"]
        assert exports["images"] == 6 and exports["sizes_unknown"] == 0, status["results"]

        from urllib.parse import unquote

        forms = {signature, unquote(signature)}  # as it stands in the SAS, and decoded
        assert places_holding(store, storage_connection, forms, since) == []
        canary = f"{app_env['TRAPBATCH_CONTAINER']}/tasks/{task_id}/canary.txt"  # the scan does see a leak
        store.write_bytes(app_env["TRAPBATCH_CONTAINER"], canary.split("/", 1)[1], f"x{unquote(signature)}x".encode())
        assert places_holding(store, storage_connection, forms, since) == [f"blob {canary}"]
    finally:
        partner.stop()


def test_a_model_that_cannot_load_fails_the_task_on_a_second_attempt_with_the_workers_message(  # type: ignore[no-untyped-def]
        host, app_env, store, unique_name, tmp_path, monkeypatch) -> None:
    """Exit code 3 is one no attempt should fix (gpu_batch.exit_codes): a shard's second attempt that ends so fails
    the task with the worker's own log line in the status (not its first: a download cut short exits 3 too), no
    shard gets a third, the other shards' group stops, and the run's pool job is closed."""
    broken = tmp_path / "md_v5a.0.0.pt"
    broken.write_bytes(b"this is not a checkpoint")
    monkeypatch.setenv("TRAPBATCH_MODEL", str(broken))
    monkeypatch.setenv("TRAPBATCH_MAX_ATTEMPTS", "3")
    upload_images(store, unique_name, 8, corrupt=0)
    task_id = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
    final = host.wait_for(task_id, timeout=180)
    assert final["runtimeStatus"] == "Failed", final
    status = api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json()
    assert status["stage"] == "failed" and "the model cannot be loaded" in status["error"], status
    assert "cannot be loaded" in status["error"].split("):", 1)[1]  # the worker's own words follow the reason
    state = app_env["TRAPBATCH_CONTAINER"]
    assert not [n for n in store.list_names(state, f"tasks/{task_id}/shards/") if "attempt-3" in n]  # no third
    stop = store.read_json(state, layout.cancel_marker(status["pool_job"]))  # the run's other groups stop
    assert stop["by"] == "a failing shard group" and "the model cannot be loaded" in stop["reason"]
    from azure.data.tables import TableServiceClient

    rows = list(TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_table_client(
        "trapbatchpool").query_entities("PartitionKey eq @j", parameters={"j": status["pool_job"]}))
    assert rows and {r["State"] for r in rows} == {"completed"}  # nothing left running for this run


def test_a_403_on_the_first_attempt_is_retried_and_a_corrupt_image_runs_once(host, app_env, store, unique_name,  # type: ignore[no-untyped-def]
                                                                             monkeypatch) -> None:
    """Failure taxonomy end to end: an image whose download is refused (an expired SAS: retryable) on attempt 1 is
    missing, so attempt 2 runs it, and only it; the corrupt image (permanent) is never run again."""
    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00000/1": "fetch_error:403:img 002"}))
    names = upload_images(store, unique_name, 8, corrupt=1)  # cam0/img 000.jpg is the corrupt one
    body = {"container": unique_name, "max_failed_fraction": 0.2}
    task_id = api.post(host.base_url + "/api/tasks", json=body, timeout=120).json()["id"]
    status = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
    assert status["runtime_status"] == "Completed" and status["stage"] == "completed", status
    assert status["failed"] == 1 and status["failure_reasons"] == {"undecodable": 1}, status
    # and says what to do about it (core.failure_advice): a permanent failure no re-run changes
    assert status["failures_hint"].startswith("1 of 8 images failed (undecodable 1). undecodable: these stay failed"), \
        status
    state = app_env["TRAPBATCH_CONTAINER"]
    second = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, "s00000", 2)))
    assert list(second.images) == ["cam0/img 002.jpg"]  # only the refused download; not the corrupt image
    assert not store.exists(state, layout.manifest_blob(task_id, "s00001", 2))
    doc = check_results(store, app_env, task_id, names)
    by_name = {im["file"]: im for im in doc["images"]}
    assert "failure" not in by_name["cam0/img 002.jpg"]  # detected after the resubmission
    assert by_name["cam0/img 000.jpg"]["failure_kind"] == "permanent"


def test_five_identical_concurrent_posts_start_one_task(host, app_env, store, unique_name) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    upload_images(store, unique_name, 4, corrupt=0)
    body = {"container": unique_name, "request_name": "same"}
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: api.post(host.base_url + "/api/tasks", json=body, timeout=60), range(5)))
    assert all(a.status_code in (200, 202) for a in answers), [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1 and sum(a.json()["started"] for a in answers) == 1
    task_id = ids.pop()
    status = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
    assert status["runtime_status"] == "Completed", status
    from azure.data.tables import TableServiceClient

    rows = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_table_client(
        "trapbatchpool").query_entities("PartitionKey ge @a and PartitionKey lt @b",
                                        parameters={"a": task_id, "b": task_id + "~"})
    assert {r["PartitionKey"] for r in rows} == {status["pool_job"]}  # one run, one pool job
