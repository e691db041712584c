"""POST /api/tasks/{id}/repeats/search end to end: devhost, Azurite, the simulated pool (seeded synthetic results).

The simulated pool puts one of three fixed "rock" boxes into about 30 % of each folder's images, so each rock recurs in
about a tenth of its folder; folders of different sizes give places with graded counts. The lists the API shows must
be exactly what ``core.repeats`` finds offline in the task's merged results with the same options: a stricter
occurrence threshold gives fewer places, a looser one more. A removal must name the list it chose from.
"""
from __future__ import annotations

import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from adapters.blobs import BlobStore, service_client
from core.repeats import RepeatFinder, RepeatOptions, RepeatRemoval, eligible_detections
from devhost.azurite import Azurite
from gpu_batch import layout
from tests.api_session import DiagnosingSession
from tests.openapi_answers import AnswerRecorder
from tests.waiting import held, wait_until

FUNCTION_KEY = "repeat-search-tests-key"
api = DiagnosingSession()
api.headers["x-functions-key"] = FUNCTION_KEY
answers = AnswerRecorder()  # every JSON answer of the app, checked against its OpenAPI description at the end
api.hooks["response"].append(lambda response, *args, **kwargs: answers.record(response))
ENDED = ("Completed", "Failed", "Terminated")
FOLDERS = {"camA": 600, "camB": 300, "camC": 120, "camD/night": 40}


@pytest.fixture(scope="module")
def images(azurite: Azurite) -> str:
    """The tasks' images, ``FOLDERS``' 1,060 names, written once for the module. Why: each test posts a task over them
    and checks what it made in its own state container and task hub, and none writes to the images' container, so a
    copy per test was ~1,060 of each test's requests. The tests' tasks share a task id (it follows from the request);
    what they read outside their state container is not named by it alone (a preview folder has a random part)."""
    store = BlobStore(service_client(azurite.connection_string))
    container = "images" + uuid.uuid4().hex[:12]
    store.ensure_container(container)
    names = [f"{folder}/img{i:04d}.jpg" for folder, n in FOLDERS.items() for i in range(n)]
    with ThreadPoolExecutor(8) as pool:  # the SDK client keeps 10 connections
        list(pool.map(lambda name: store.write_bytes(container, name, b"x"), names))
    return container


@pytest.fixture
def host(storage_connection: str, unique_name: str, images: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from devhost.host import DevHost
    import function_app

    env = {"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "-state",
           "TRAPBATCH_POOL": "simulated", "TRAPBATCH_MODEL": "MDV5A", "TRAPBATCH_POLL_MIN_S": "0.5",
           "TRAPBATCH_POLL_MAX_S": "1", "TRAPBATCH_IMAGES_PER_SHARD": "100",
           "TRAPBATCH_MERGE_IMAGES_PER_PART": "300",  # four parts
           "TRAPBATCH_REPEAT_SEARCH_DETECTIONS_PER_GROUP": "200",  # several search groups
           "TRAPBATCH_ZOONIVERSE_BATCH_SIZE": "100"}  # Zooniverse batches fanned out over the four parts
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    h = DevHost(function_app.app, storage_connection, task_hub="h" + unique_name[:12], port=0, blob_poll_s=0.5,
                function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def offline(doc: dict[str, Any], options: RepeatOptions) -> list[dict[str, Any]]:
    """The places core.repeats finds in the merged results, streamed in their order (the merge's own search)."""
    finder = RepeatFinder(options)
    for entry in doc["images"]:
        finder.add(entry)
    locations: list[dict[str, Any]] = finder.result()["locations"]
    return locations


def search(base: str, task_id: str, body: dict[str, Any], session: Any = None) -> dict[str, Any]:
    """Run the task's repeat search again and wait for it (``session``: another module's keyed session)."""
    session = session or api
    started = session.post(f"{base}/api/tasks/{task_id}/repeats/search", json=body, timeout=120)
    assert started.status_code == 202, started.text
    sid = started.json()["search"]

    def finished() -> dict[str, Any] | None:
        listed = session.get(f"{base}/api/tasks/{task_id}/repeats", timeout=120).json()
        state = listed["searching"]
        return listed if state and state["search"] == sid and state["runtime_status"] in ENDED else None

    listed = wait_until(finished, 180, f"repeat search {sid}")
    assert listed["searching"]["runtime_status"] == "Completed", listed["searching"]
    assert listed["search"] == sid
    return listed


def check_folder_cap(base: str, task_id: str, doc: dict[str, Any], merged: dict[str, Any]) -> None:
    """A search with max_folder_detections below camA's eligible detections: camA is not searched, the list is what
    core.repeats finds offline with that cap, and the list, the search's status and the page name camA."""
    sizes: dict[str, int] = {}
    for entry in doc["images"]:
        rows = eligible_detections(entry, RepeatOptions())
        if rows:
            folder = posixpath.dirname(entry["file"])
            sizes[folder] = sizes.get(folder, 0) + len(rows)
    cap = max(n for folder, n in sizes.items() if folder != "camA")
    assert sizes["camA"] > cap and merged["skipped_folders"] is None  # the merge's cap (800,000) left out nothing
    assert merged["search_options"]["max_folder_detections"] == 800_000
    capped = search(base, task_id, {"max_folder_detections": cap})
    expected = offline(doc, RepeatOptions(max_folder_detections=cap))
    assert capped["locations"] == expected and expected and all(loc["folder"] != "camA" for loc in expected)
    assert capped["search_options"] == {**merged["search_options"], "max_folder_detections": cap}
    skipped = capped["skipped_folders"]
    assert skipped["folders"] == 1 and skipped["listed"] == [{"folder": "camA", "detections": sizes["camA"]}]
    assert f"trapbatch repeats {task_id} --search --max-folder-detections {sizes['camA']}" in skipped["hint"]
    assert (capped["searching"]["folders_skipped"], capped["searching"]["detections_skipped"]) == (1, sizes["camA"])
    page = api.get(api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()["previews"]["local_url"],
                   timeout=120).text
    assert f"Not searched: 1 folder with {sizes['camA']} eligible detections, camA ({sizes['camA']})" in page


def completed_task(base: str, container: str, request_name: str) -> tuple[str, dict[str, Any]]:
    """A task over ``container``'s images, posted and waited for until it completed: its id and last status."""
    r = api.post(f"{base}/api/tasks", json={"container": container, "request_name": request_name}, timeout=120)
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    status = wait_until(lambda: (lambda s: s if s["runtime_status"] in ENDED else None)(
        api.get(f"{base}/api/tasks/{task_id}", timeout=120).json()), 240, "task completion")
    assert status["stage"] == "completed", status
    return task_id, status


def test_searching_again_replaces_the_list_with_what_core_finds_offline_and_removals_name_their_list(
        host: Any, store: BlobStore, unique_name: str, images: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    base, container = host.base_url, unique_name + "-state"
    task_id, status = completed_task(base, images, "rde")
    doc = store.read_json(container, layout.results_blob(task_id))
    url = f"{base}/api/tasks/{task_id}/repeats"
    check_fanned_zooniverse(store, container, task_id, status, doc)

    merged = api.get(url, timeout=120).json()  # the merge's list: MegaDetector's defaults
    default = offline(doc, RepeatOptions())
    assert merged["search"] == "merge" and merged["searched"] is None and merged["searching"] is None
    assert merged["locations"] == default and len(default) >= 3
    assert merged["search_options"]["occurrence_threshold"] == 20

    for body, field in (({"iou_threshold": 0.2}, "iou_threshold"), ({"occurrence_threshold": 1}, "occurrence_threshold"),
                        ({"confidence_min": 0.7, "confidence_max": 0.6}, "confidence_min"),
                        ({"max_folder_detections": 3_000_001}, "max_folder_detections")):
        bad = api.post(f"{url}/search", json=body, timeout=120)
        assert bad.status_code == 400 and field in bad.json()["error"] and bad.json()["hint"], bad.text
    assert api.post(f"{url}/search", data=b"x", headers={"Content-Type": "text/plain"}, timeout=120).status_code == 415

    check_folder_cap(base, task_id, doc, merged)

    strict = search(base, task_id, {"occurrence_threshold": 45})
    expected_strict = offline(doc, RepeatOptions(occurrence_threshold=45))
    assert strict["locations"] == expected_strict and 0 < len(expected_strict) < len(default)
    assert strict["search_options"] == {**merged["search_options"], "occurrence_threshold": 45}
    assert strict["options"] == RepeatOptions(occurrence_threshold=45).to_dict()
    assert strict["searching"]["locations"] == len(expected_strict)

    loose_body = {"occurrence_threshold": 8, "iou_threshold": 0.85, "confidence_max": 0.95,
                  "max_suspicious_detection_size": 0.1}
    loose_options = RepeatOptions(occurrence_threshold=8, iou_threshold=0.85, confidence_max=0.95, max_area=0.1)
    loose = search(base, task_id, loose_body)
    expected_loose = offline(doc, loose_options)
    assert loose["locations"] == expected_loose and len(expected_loose) > len(default)
    assert loose["search"] != strict["search"]
    assert list(store.list_names(container, layout.merge_work_prefix(task_id, layout.REPEAT_SEARCH_WORK))) == []
    assert store.read_json(container, layout.results_blob(task_id)) == doc  # a search changes no result

    # the page lists the new places, and its removal request names the new list
    page = api.get(api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()["previews"]["local_url"],
                   timeout=120).text
    assert f'data-section="repeats">{len(expected_loose)}</span>' in page and loose["search"] in page

    # a removal by the ids of a replaced list is refused; one naming the current list removes with its options
    first = expected_loose[0]["id"]
    for stale in ({"remove": [first]}, {"remove": [first], "search": strict["search"]}):
        refused = api.post(url, json=stale, timeout=120)
        assert refused.status_code == 409 and "is now search" in refused.json()["error"], refused.text
        assert loose["search"] in refused.json()["hint"]
    for typo, said in (({"kep": [first]}, "unknown field"), ({}, "exactly one"), ({"keep": first}, "must be a list")):
        refused = api.post(url, json=typo, timeout=120)  # a malformed choice is a 400, not "the list changed"
        assert refused.status_code == 400 and said in refused.json()["error"], refused.text
    started = api.post(url, json={"remove": [first], "search": loose["search"]}, timeout=120)
    assert started.status_code == 202, started.text
    done = wait_until(lambda: _ended_removal(url), 180, "repeat removal")
    removal = RepeatRemoval([expected_loose[0]], loose_options)
    cleaned = [removal.apply(entry) for entry in doc["images"]]
    assert done["runtime_status"] == "Completed" and done["search"] == loose["search"], done
    assert done["detections_marked"] == removal.marked >= 8
    # its merge parts were planned with the app's knobs, recorded when it started (TRAPBATCH_MERGE_IMAGES_PER_PART)
    from core.ids import repeats_instance_id

    started_with = host.engine.status(repeats_instance_id(task_id))["input"]
    assert started_with["knobs"]["merge_images_per_part"] == 300
    assert store.read_json(container, layout.results_blob(task_id, layout.REPEATS_REMOVED))["images"] == cleaned
    check_both_variants_handed_off(host, store, container, task_id, monkeypatch, tmp_path)
    # every answer above (status, results, repeats before and after searches and a removal, the 202s, the 4xx) has
    # each of its fields described in GET /api/openapi.json, with its type: a generated client keeps them all
    assert answers.undescribed() == []


def check_both_variants_handed_off(host: Any, store: BlobStore, container: str, task_id: str,
                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the repeats-removed variant beside the original, every file of both reaches people apart: the results zip
    (built here in parallel parts, through devhost's replay) and ``trapbatch results``' folder each hold every linked
    file at its own path, byte for byte (the variants' exports share file names)."""
    import io
    import zipfile

    from adapters import zip_parts
    from adapters.results_bundle import linked_blobs, zip_path
    from cli.download import blob_service, download

    files = linked_blobs(store, container, task_id)
    prefix = layout.results_prefix(task_id)
    relative = {name: name[len(prefix):] for name in files}
    assert {"exports/coco.json", f"exports/{layout.REPEATS_REMOVED}/coco.json"} <= set(relative.values())
    monkeypatch.setenv("TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES", "1")
    monkeypatch.setattr(zip_parts, "PART_BYTES", 1 + sum(f["size"] for f in files.values()) // 5)  # five parts
    url = f"{host.base_url}/api/tasks/{task_id}/results"
    ready = wait_until(lambda: (lambda a: a if a["zip"]["state"] == "ready" else None)(
        api.get(url, timeout=120).json()), 180, "the results zip")
    with zipfile.ZipFile(io.BytesIO(requests.get(ready["links"]["zip"], timeout=60).content)) as zf:
        assert zf.testzip() is None and sorted(zf.namelist()) == sorted(zip_path(task_id, n) for n in files)
        for name in files:
            assert zf.read(zip_path(task_id, name)) == store.read_bytes(container, name), name
    assert list(store.list_names(container, layout.results_zip_work_prefix(task_id))) == []

    answer = api.get(url, timeout=120).json()
    status = api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json()
    folder = tmp_path / "handed-off"
    download(blob_service(os.environ["AzureWebJobsStorage"], ""), answer, status, folder)
    for name, path in relative.items():
        assert (folder / path).read_bytes() == store.read_bytes(container, name), path


def check_fanned_zooniverse(store: BlobStore, container: str, task_id: str, status: dict[str, Any],
                            doc: dict[str, Any]) -> None:
    """The exports of a four-part merge ran through the function app's fan-out (activities.zooniverseparts): every
    subject in exactly one batch, batches within one row of each other, rows in results order, no work left."""
    exports = status["results"]["exports"]
    subjects = [e["file"] for e in doc["images"] if e.get("failure") is None]
    assert exports["zooniverse_subjects"] == len(subjects) > 1000
    assert exports["zooniverse_batches"] == -(-len(subjects) // 100)
    order = {name: i for i, name in enumerate(subjects)}
    batches = []
    for b in range(1, exports["zooniverse_batches"] + 1):
        lines = store.read_bytes(container, layout.zooniverse_batch_blob(task_id, b)).decode("utf-8").splitlines()
        assert lines[0].startswith("image_name_1,folder,")
        batches.append([line.split(",")[0] for line in lines[1:]])
    assert sorted(n for rows in batches for n in rows) == sorted(subjects)
    assert max(map(len, batches)) - min(map(len, batches)) <= 1
    assert all([order[n] for n in rows] == sorted(order[n] for n in rows) for rows in batches)
    assert batches[0] != subjects[:len(batches[0])]  # shuffled
    names = list(store.list_names(container, layout.exports_prefix(task_id)))
    assert not [n for n in names if "/.zooniverse-parts/" in n or "/.parts/" in n], names


def _ended_removal(url: str) -> dict[str, Any] | None:
    """The removal's status once it ended; None meanwhile, and for a poll that timed out: devhost runs the removal's
    activities in its own process, and on a loaded two-core CI machine one GET once took over 30 s to answer while
    they ran (the deadline of the wait still holds)."""
    try:
        removal = api.get(url, timeout=120).json()["removal"]
    except requests.Timeout:
        return None
    return removal if removal and removal["runtime_status"] in ENDED else None


def test_a_repeat_search_or_removal_that_stands_still_is_terminated_through_the_tasks_route_and_started_again(
        host: Any, store: BlobStore, images: str) -> None:
    """POST /api/tasks/{id}/terminate {"target": "search"} (or "removal"), with the function key alone, ends the task's
    search or removal run after it, through devhost's terminate (fidelity row 48); GET .../repeats then shows it
    'terminated' with its last update, and a new one starts under the same instance id. Before, the route ended
    the task's run only (here: 409, the task completed), and a search that never ended refused every later search
    and removal of the task for good."""
    from core import contracts as c

    base = host.base_url
    task_id, _ = completed_task(base, images, "rde-stuck")
    url, terminate = f"{base}/api/tasks/{task_id}/repeats", f"{base}/api/tasks/{task_id}/terminate"

    release = held(host, c.SEARCH_PART)
    try:
        started = api.post(f"{url}/search", json={"occurrence_threshold": 45}, timeout=120)
        assert started.status_code == 202, started.text
        running = wait_until(lambda: (lambda s: s if s and s["runtime_status"] == "Running" and s.get("updated")
                                      else None)(api.get(url, timeout=120).json()["searching"]), 120, "search running")
        assert "stalled" not in running, running  # it changed a moment ago
        refused = api.post(f"{url}/search", json={}, timeout=120)
        assert refused.status_code == 409 and refused.json()["hint"].startswith("wait until"), refused.text
        ended = api.post(terminate, json={"target": "search", "reason": "search stuck"}, timeout=120)
        assert ended.status_code == 202, ended.text
        assert ended.json()["target"] == "search" and ended.json()["stage"] == "searching", ended.json()
        # of the served results (read from storage after the terminate: api.repeat_runs._served_key), so shown
        assert f"/api/tasks/{task_id}/repeats shows it)" in ended.json()["hint"], ended.json()
        gone = wait_until(lambda: (lambda s: s if s["runtime_status"] == "Terminated" else None)(
            api.get(url, timeout=120).json()["searching"]), 60, "search terminated")
        assert gone["stage"] == "terminated" and gone["updated"] and "stalled" not in gone, gone
        again = api.post(terminate, json={"target": "search"}, timeout=120)
        assert again.status_code == 409 and "no repeat search" in again.json()["error"], again.text
        assert api.get(url, timeout=120).json()["search"] == "merge"  # the list it would have replaced stands
    finally:
        release.set()
    search(base, task_id, {"occurrence_threshold": 45})  # the same instance id starts again, and completes

    release = held(host, c.PREPARE_REMOVAL)
    try:
        first = api.get(url, timeout=120).json()
        chosen = api.post(url, json={"remove": [first["locations"][0]["id"]], "search": first["search"]},
                          timeout=120)
        assert chosen.status_code == 202, chosen.text
        ended = api.post(terminate, json={"target": "removal"}, timeout=120)
        assert ended.status_code == 202 and ended.json()["target"] == "removal", ended.text
        gone = wait_until(lambda: _ended_removal(url), 60, "removal terminated")
        assert gone["runtime_status"] == "Terminated" and gone["stage"] == "terminated", gone
    finally:
        release.set()
    task_itself = api.post(terminate, json={}, timeout=120)  # the default target is still the task's run
    assert task_itself.status_code == 409 and "is not running" in task_itself.json()["error"], task_itself.text
    assert answers.undescribed() == []


def test_a_rerender_that_stands_still_is_terminated_through_the_tasks_route_and_posted_again(
        host: Any, store: BlobStore, images: str) -> None:
    """POST /api/tasks/{id}/terminate {"target": "previews"} ends the task's preview re-render through devhost's
    terminate (fidelity row 48); GET .../results then shows previews.rerender 'terminated' with its last update, a
    second terminate is refused (409, pointing at GET .../results), and the re-render posted again starts under the
    same instance id and completes. Before, the route refused the target (400), and a re-render that never ended
    refused every later one for good."""
    from core import contracts as c

    base = host.base_url
    task_id, _ = completed_task(base, images, "rerender-stuck")
    results, terminate = f"{base}/api/tasks/{task_id}/results", f"{base}/api/tasks/{task_id}/terminate"

    def rerender(state: str) -> dict[str, Any] | None:
        found = (api.get(results, timeout=120).json().get("previews") or {}).get("rerender")
        return found if found and found["runtime_status"] == state else None

    release = held(host, c.RETHRESHOLD)
    try:
        started = api.post(f"{base}/api/tasks/{task_id}/previews", json={"threshold": 0.4}, timeout=120)
        assert started.status_code == 202, started.text
        running = wait_until(lambda: rerender("Running"), 120, "re-render running")
        assert running["updated"] and "stalled" not in running, running  # it changed a moment ago
        refused = api.post(f"{base}/api/tasks/{task_id}/previews", json={"threshold": 0.5}, timeout=120)
        assert refused.status_code == 409 and refused.json()["hint"].startswith("wait until"), refused.text
        ended = api.post(terminate, json={"target": "previews", "reason": "re-render stuck"}, timeout=120)
        assert ended.status_code == 202, ended.text
        assert ended.json()["target"] == "previews" and ended.json()["status_url"] == results, ended.json()
        gone = wait_until(lambda: rerender("Terminated"), 60, "re-render terminated")
        assert gone["stage"] == "terminated" and gone["updated"] and "stalled" not in gone, gone
        again = api.post(terminate, json={"target": "previews"}, timeout=120)
        assert again.status_code == 409 and "no preview re-render" in again.json()["error"], again.text
        assert f"GET /api/tasks/{task_id}/results" in again.json()["hint"], again.json()
    finally:
        release.set()
    posted = api.post(f"{base}/api/tasks/{task_id}/previews", json={"threshold": 0.4}, timeout=120)
    assert posted.status_code == 202, posted.text  # the same instance id starts again
    completed = wait_until(lambda: rerender("Completed"), 120, "re-render completed")
    assert completed["threshold"] == 0.4, completed
    assert answers.undescribed() == []
