"""POST /api/tasks/{id}/terminate {"target": "zip"} end to end: devhost, Azurite, the simulated pool.

A results zip build that stands still (its first activity held, as one whose action the Durable extension dropped
would) shows ``building`` with ``updated`` on GET .../results; the terminate ends that build's instance
(``core.ids.results_zip_instance_id``), not the task's; a second terminate is refused; the next GET starts a build
again under the same instance id, which ends ``ready`` with a zip of exactly the task's linked files. The unit tests
(tests/unit/test_after_task_runs.py) fake the task hub; here devhost's terminate (fidelity row 48) and its
management status are the real ones.
"""
from __future__ import annotations

import io
import zipfile
from typing import Any, Iterator

import pytest

from adapters.blobs import BlobStore
from gpu_batch import layout
from tests.integration.test_repeat_search import FUNCTION_KEY, answers, api, completed_task
from tests.waiting import held, wait_until

IMAGES = {"camA": 9, "camB/night": 5}


@pytest.fixture
def host(storage_connection: str, unique_name: str, store: BlobStore,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A devhost whose tasks' linked files are all "large" (above 16 bytes), so every GET .../results of a finished
    task asks for a zip, and a small task's images to run."""
    from devhost.host import DevHost
    import function_app

    env = {"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "-state",
           "TRAPBATCH_POOL": "simulated", "TRAPBATCH_MODEL": "MDV5A", "TRAPBATCH_POLL_MIN_S": "0.5",
           "TRAPBATCH_POLL_MAX_S": "1", "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES": "16"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    store.ensure_container(unique_name)
    for folder, n in IMAGES.items():
        for i in range(n):
            store.write_bytes(unique_name, f"{folder}/img{i:03d}.jpg", b"x")
    h = DevHost(function_app.app, storage_connection, task_hub="h" + unique_name[:12], port=0, blob_poll_s=0.5,
                function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def test_a_zip_build_that_stands_still_is_terminated_through_the_tasks_route_and_built_again(
        host: Any, store: BlobStore, unique_name: str) -> None:
    """The way out of a stalled zip build (README, GET .../results ``zip.stalled``'s hint), through devhost: until
    now only unit-tested against a faked task hub."""
    from adapters.results_bundle import linked_blobs, zip_path
    from core import contracts as c
    from core.ids import results_zip_instance_id

    base, container = host.base_url, unique_name + "-state"
    task_id, _ = completed_task(base, unique_name, "zip-stuck")
    results, terminate = f"{base}/api/tasks/{task_id}/results", f"{base}/api/tasks/{task_id}/terminate"
    instance = results_zip_instance_id(task_id)

    def zip_state(url: str = results) -> dict[str, Any]:
        answer = api.get(url, timeout=120)
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()["zip"]
        return state

    release = held(host, c.BUILD_RESULTS_ZIP)
    try:
        first = zip_state()  # the first GET above the size starts the build
        assert first["state"] == "building" and first["files_bytes"] > first["above_bytes"] == 16, first
        building = wait_until(lambda: (lambda z: z if z.get("updated") else None)(zip_state()), 120, "zip building")
        assert building["state"] == "building" and "stalled" not in building, building  # it changed a moment ago
        assert "GET this again in a minute" in building["hint"], building
        started = host.get_status(instance)
        assert started is not None and started["runtimeStatus"] == "Running", started
        # no second build starts while one runs, ?zip=rebuild neither (README): the same instance still runs
        assert zip_state(results + "?zip=rebuild")["state"] == "building"
        assert host.get_status(instance)["createdTime"] == started["createdTime"]

        ended = api.post(terminate, json={"target": "zip", "reason": "zip stuck"}, timeout=120)
        assert ended.status_code == 202, ended.text
        said = ended.json()
        assert said["terminated"] is True and said["target"] == "zip" and said["id"] == task_id, said
        assert said["stage"] == "starting" and said["status_url"] == results, said  # a zip build names no stage
        assert "a step already under way runs to its end" in said["hint"], said
        assert f"GET /api/tasks/{task_id}/results again, which starts a new build" in said["hint"], said
        gone = wait_until(lambda: (lambda s: s if s and s["runtimeStatus"] == "Terminated" else None)(
            host.get_status(instance)), 60, "zip build terminated")
        assert gone["createdTime"] == started["createdTime"] and "zip stuck" in str(gone["output"]), gone
        task = api.get(f"{base}/api/tasks/{task_id}", timeout=120).json()
        assert task["runtime_status"] == "Completed" and task["stage"] == "completed", task  # the task's run untouched

        again = api.post(terminate, json={"target": "zip"}, timeout=120)
        assert again.status_code == 409, again.text
        assert again.json()["error"] == (f"no results zip build of task {task_id} is running (the last one is "
                                         "Terminated)"), again.json()
        assert f"GET /api/tasks/{task_id}/results" in again.json()["hint"], again.json()

        # the contract for a terminated build: the next GET builds anew (not 'failed' until ?zip=rebuild)
        anew = zip_state()
        assert anew["state"] == "building" and "stalled" not in anew, anew
        rebuilt = host.get_status(instance)
        # a new instance under the id: running again where it was Terminated (createdTime has whole seconds only, so
        # a build started within the second of the first may show the same time: never earlier)
        assert rebuilt["runtimeStatus"] in ("Pending", "Running") and rebuilt["createdTime"] >= started["createdTime"]
        assert "zip stuck" not in str(rebuilt.get("output") or ""), rebuilt
    finally:
        release.set()  # both held calls run now: the terminated build's (its result unread) and the new one's

    def ready() -> dict[str, Any] | None:
        answer = api.get(results, timeout=120).json()
        return answer if answer["zip"]["state"] == "ready" else None

    wait_until(ready, 180, "the zip built again")
    # the zip and its manifest are written before the build's last steps (its parts cleaned), so the GET can say
    # ready while the instance still runs: wait for it to complete
    finished = wait_until(lambda: (lambda s: s if s["runtimeStatus"] != "Running" else None)(
        host.get_status(instance)), 120, "the zip build's instance completed")
    assert finished["runtimeStatus"] == "Completed" and finished["createdTime"] == rebuilt["createdTime"], finished
    # the terminated build's held call, let go with the new one's, runs on beside it (README, the terminate row) and
    # writes its own zip and manifest too, before or after the new build's: the manifest written last names its zip,
    # which the GET hands out, and keeps the other for its links (core.zip_builds). Both are of the current files,
    # each whole under a name of its own. Which one is handed out is the order of the two writes: not asserted.
    manifest_blob = layout.results_zip_manifest_blob(task_id)

    def both_written() -> dict[str, Any] | None:
        found = store.read_json_or_none(container, manifest_blob) or {}
        return found if len(found.get("previous", [])) == 1 else None

    manifest = wait_until(both_written, 120, "the terminated build's manifest too")
    builds = {manifest["zip"], manifest["previous"][0]["zip"]}
    done = ready()
    assert done is not None and done["zip"]["blob"] == manifest["zip"], (done, manifest)
    assert finished["output"]["blob"] in builds and len(builds) == 2, (finished, manifest)
    zipped, files = done["zip"], linked_blobs(store, container, task_id)
    assert done["links"]["zip"] and zipped["files"] == len(files) >= 3, done
    for blob in builds:
        with zipfile.ZipFile(io.BytesIO(store.read_bytes(container, blob))) as zf:
            assert zf.testzip() is None
            assert sorted(zf.namelist()) == sorted(zip_path(task_id, name) for name in files)
            for name in files:
                assert zf.read(zip_path(task_id, name)) == store.read_bytes(container, name), (blob, name)
    assert answers.undescribed() == []
