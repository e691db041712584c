"""A task's outputs follow the app settings decided when its run started, whatever the environment says later.

On Azure an app setting changed while a task runs restarts the app, and the activities in flight run again under
the new value; every activity read the environment at each call, so one task's shards got two detection thresholds,
its CSV rows two preview thresholds and its exports a third (``activities.decided``). Here the orchestrators run
under the SDK's replay (tests/orchestrations/replay.py) with the app's real registered activities, each reading the
environment as on Azure, against Azurite; the environment changes between the run's first activity and the rest, and
then at every activity call of the merge and the exports.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Generator

import azure.durable_functions as df
import pytest

from adapters import clients
from adapters.blobs import BlobStore
from core import contracts as c
from core.requests import parse_task_request
from core.settings import OrchestrationKnobs
from gpu_batch import layout
from gpu_batch.manifest import ShardManifest
from orchestrations.enumeration import enumerate_in_parallel
from orchestrations.exports import exports
from orchestrations.fanin import fan_in
from tests.integration.conftest import upload_images
from tests.orchestrations.replay import run_orchestrator
from tests.recording_pool import RecordingPool

MODEL = "MDV5A"
# The environment when the task's run starts, and the one an operator changed it to while the task ran: every value
# the task's outputs depend on differs.
AT_START = {"TRAPBATCH_PREVIEW_THRESHOLD": "0.3", "TRAPBATCH_DETECTION_THRESHOLD": "0.01",
            "TRAPBATCH_MERGE_VIEWS": "off", "TRAPBATCH_EVENT_INTERVAL_S": "60", "TRAPBATCH_EXPORT_IMAGE_SIZES": "false",
            "TRAPBATCH_EXPORT_LICENSE": "CC-BY-4.0", "TRAPBATCH_EXPORT_ATTRIBUTION": "Univ. A",
            "TRAPBATCH_ZOONIVERSE_BATCH_SIZE": "5", "TRAPBATCH_MAX_TASK_SECONDS": "1234"}
CHANGED = {"TRAPBATCH_PREVIEW_THRESHOLD": "0.6", "TRAPBATCH_DETECTION_THRESHOLD": "0.05",
           "TRAPBATCH_MERGE_VIEWS": "on", "TRAPBATCH_EVENT_INTERVAL_S": "1800", "TRAPBATCH_EXPORT_IMAGE_SIZES": "true",
           "TRAPBATCH_EXPORT_LICENSE": "CC0-1.0", "TRAPBATCH_EXPORT_ATTRIBUTION": "Univ. B",
           "TRAPBATCH_ZOONIVERSE_BATCH_SIZE": "3", "TRAPBATCH_MAX_TASK_SECONDS": "99"}
IMAGES = 16


class Environment:
    """The app settings as the activities read them (``adapters.clients.settings``: the process environment)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.now: dict[str, str] = {}

    def set(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self.monkeypatch.setenv(name, value)
        self.now = values


def registered_activities() -> dict[str, Callable[[Any], Any]]:
    """The app's activity functions by activity name, as the Functions host calls them: function_app.py indexed as
    devhost indexes it (once per app object: the SDK refuses to index an app twice)."""
    import function_app
    from devhost.functions import index_app

    return {name: fn for name, (fn, _) in index_app(function_app.app).activities.items()}


@pytest.fixture
def env(storage_connection: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> Environment:
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", unique_name + "-state")
    monkeypatch.setenv("TRAPBATCH_POOL", "local")
    return Environment(monkeypatch)


def _enumeration(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.EnumerateOutput]:
    data = context.get_input()
    return (yield from enumerate_in_parallel(context, data["task_id"], data["request"]))


def _merge_and_exports(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    d = context.get_input()
    merged = yield from fan_in(context, d["task_id"], MODEL, d["images"], d["shards"],
                               OrchestrationKnobs(merge_images_per_part=4))
    exported = yield from exports(context, d["task_id"], "", merged)
    return {"merged": merged, "exports": exported}


def activities(env: Environment, after: Callable[[str], None] = lambda name: None) -> Callable[[str, Any], Any]:
    """The registered activities, ``after(name)`` run after each call (where a test changes the environment)."""
    registered = registered_activities()

    def answer(name: str, payload: Any) -> Any:
        try:
            return registered[name](payload)
        finally:
            after(name)

    return answer


def enumerate_task(env: Environment, key: str, request: dict[str, Any], then: dict[str, str] | None = None) -> Any:
    """The parallel enumeration of generation ``key``, the environment becoming ``then`` after its first activity."""
    def changed(name: str) -> None:
        if then is not None and name == c.PLAN_LISTING:
            env.set(then)

    run = run_orchestrator(_enumeration, {"task_id": key, "request": request}, activities(env, changed),
                           instance_id=key.replace("/", "-"))
    assert run.status == "Completed", run.error
    return run.output


def manifests(store: BlobStore, container: str, key: str, shards: int) -> list[ShardManifest]:
    return [ShardManifest.from_dict(store.read_json(container, layout.manifest_blob(key, layout.shard_id(i), 1)))
            for i in range(shards)]


def write_results(store: BlobStore, container: str, key: str, shards: int) -> None:
    """What the workers would write: detections either side of both preview thresholds, no image sizes (COCO's then
    come from the images, if the exports read them), capture times five minutes apart per camera (one event each at
    60 s, one event in all at 1800 s)."""
    for m in manifests(store, container, key, shards):
        entries = []
        for name in m.images:
            i = int(name.rsplit(" ", 1)[1][:3])
            entries.append({"file": name, "datetime": f"2024:05:01 10:{(i // 2) * 5:02d}:00", "detections": [
                {"category": "1", "conf": 0.45, "bbox": [0.1, 0.1, 0.2, 0.2]},
                {"category": "2", "conf": 0.75 if i % 3 else 0.2, "bbox": [0.5, 0.5, 0.1, 0.1]}]})
        store.write_bytes(container, m.output_blob, json.dumps({"images": entries}).encode())


def outputs(store: BlobStore, container: str, key: str) -> dict[str, bytes]:
    """Every file of the task's results and exports, by name (deleted, so that a next run must write them again)."""
    names = [n for n in store.list_names(container, layout.results_prefix(key))]
    found = {n: store.read_bytes(container, n) for n in names}
    for n in names:
        store.service.get_blob_client(container, n).delete_blob()
    return found


def merge_and_export(env: Environment, key: str, counts: c.EnumerateOutput,
                     after: Callable[[str], None] = lambda name: None) -> Any:
    run = run_orchestrator(_merge_and_exports, {"task_id": key, **counts}, activities(env, after),
                           instance_id=key + "-merge")
    assert run.status == "Completed", run.error
    return run.output


@pytest.fixture
def task(env: Environment, store: BlobStore, unique_name: str) -> tuple[str, c.EnumerateOutput, dict[str, Any]]:
    """A task enumerated under ``AT_START``, the environment ``CHANGED`` from its second activity on, then its
    shards' results written; (its id, its counts, its request)."""
    upload_images(store, unique_name, IMAGES, corrupt=0)
    parsed = parse_task_request({"container": unique_name, "images_per_shard": 4, "model": MODEL})
    request, tid = parsed.to_dict(), parsed.task_id
    env.set(AT_START)
    counts = enumerate_task(env, tid, request, then=CHANGED)
    assert counts["shards"] == 4 and env.now is CHANGED
    write_results(store, unique_name + "-state", tid, counts["shards"])
    return tid, counts, request


def test_shards_merge_and_exports_follow_the_settings_decided_when_the_run_started(
        env: Environment, store: BlobStore, unique_name: str, task: Any) -> None:
    """Every manifest has the detection threshold and merge views of the start, though written under the changed
    environment; the merge and the exports write, while the environment flips at every activity call, the bytes
    they write under the start's environment alone: the CSV and counts, the preview sample, the exports (threshold,
    events' interval, licence and attribution, image sizes, Zooniverse batch size)."""
    tid, counts, _ = task
    state = unique_name + "-state"
    for m in manifests(store, state, tid, counts["shards"]):
        assert (m.detection_threshold, m.merge_view_threshold) == (0.01, None), m.shard_id

    env.set(AT_START)
    reference = merge_and_export(env, tid, counts)
    expected = outputs(store, state, tid)

    def flip(name: str) -> None:
        env.set(CHANGED if env.now is AT_START else AT_START)

    env.set(CHANGED)
    flipped = merge_and_export(env, tid, counts, flip)
    got = outputs(store, state, tid)
    assert flipped == reference
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], name

    sample = json.loads(got[layout.preview_sample_blob(tid)])
    assert sample["threshold"] == 0.3
    assert flipped["exports"]["threshold"] == 0.3
    assert flipped["exports"]["zooniverse_batches"] == math.ceil(flipped["exports"]["zooniverse_subjects"] / 5) > 1
    package = json.loads(got[layout.camtrap_dp_blob(tid, "datapackage.json")])
    assert {"name": "CC-BY-4.0", "scope": "data"} in package["licenses"]
    assert {"title": "Univ. A", "role": "rightsHolder"} in package["contributors"]
    days = got[layout.camera_days_blob(tid)].decode().splitlines()
    assert len(days) > 1 and all(line.endswith(",60,0.3") for line in days[1:]), days
    coco = json.loads(got[layout.coco_blob(tid)])
    assert not any("width" in image for image in coco["images"])  # TRAPBATCH_EXPORT_IMAGE_SIZES=false at the start


def test_a_generation_without_decided_settings_reads_the_environment_and_a_rerun_decides_afresh(
        env: Environment, store: BlobStore, unique_name: str, task: Any) -> None:
    """A task enumerated before decided settings existed has no blob: its merge takes the environment's threshold,
    as every activity did. The same generation enumerated again (a failed task posted again, which resumes from the
    results its attempts wrote) keeps its decided values; a re-run (a new generation) decides afresh."""
    tid, counts, request = task
    state = unique_name + "-state"
    env.set(CHANGED)
    enumerate_task(env, tid, request)  # resumed under the changed environment: the generation's values stand
    for m in manifests(store, state, tid, counts["shards"]):
        assert (m.detection_threshold, m.merge_view_threshold) == (0.01, None), m.shard_id

    rerun = layout.generation_key(tid, "r250101000000ab12")
    enumerate_task(env, rerun, request)
    for m in manifests(store, state, rerun, counts["shards"]):
        assert (m.detection_threshold, m.merge_view_threshold) == (0.05, 0.6), m.shard_id
    assert json.loads(store.read_bytes(state, layout.decided_settings_blob(tid)))["preview_threshold"] == 0.3

    store.service.get_blob_client(state, layout.decided_settings_blob(tid)).delete_blob()  # as before this existed
    merge_and_export(env, tid, counts)
    assert json.loads(store.read_bytes(state, layout.preview_sample_blob(tid)))["threshold"] == 0.6


def test_pool_submissions_take_the_time_limit_decided_when_the_run_started(
        env: Environment, store: BlobStore, unique_name: str, task: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRAPBATCH_MAX_TASK_SECONDS as the run decided it reaches every submission and resubmission (the shard
    groups' activities), though the environment says otherwise by then; a generation without decided settings
    takes the environment's."""
    tid, counts, _ = task
    pool = RecordingPool()
    monkeypatch.setattr(clients, "pool", lambda s: pool)
    registered = registered_activities()
    env.set(CHANGED)
    registered[c.SUBMIT]({"task_id": tid, "job_id": tid, "shards": [["s00000", 1], ["s00001", 1]]})
    state = unique_name + "-state"
    store.service.get_blob_client(state, layout.attempt_results_blob(tid, "s00002", 1)).delete_blob()
    registered[c.RESUBMIT]({"task_id": tid, "job_id": tid, "shards": [["s00002", 2]]})
    assert [(t.task_id, t.max_seconds) for t in pool.submitted] == [("s00000-a1", 1234), ("s00001-a1", 1234),
                                                                    ("s00002-a2", 1234)]
    store.service.get_blob_client(state, layout.decided_settings_blob(tid)).delete_blob()
    registered[c.SUBMIT]({"task_id": tid, "job_id": tid, "shards": [["s00003", 1]]})
    assert pool.submitted[-1].max_seconds == 99
