"""A dropped request or a marker is acted on once per blob version, however often its event arrives (Azurite).

Why: deployed, the drop trigger's source is Event Grid. The storage extension's webhook puts each delivered event on
the host's blob-trigger queue, and ``BlobQueueTriggerExecutor`` runs the function for every message whose blob still
exists, with no blob receipts and, for this source, no ETag check (azure-sdk-for-net
``Microsoft.Azure.WebJobs.Extensions.Storage.Blobs``: ``Config/BlobsExtensionConfigProvider.cs``
``ProcessEventsAsync``, ``Listeners/BlobQueueTriggerExecutor.cs``). Event Grid delivers at least once
(``articles/event-grid/delivery-and-retry.md``), and a function that fails after the start (its answer could not be
written) runs again from the queue; ``container_ready`` is redelivered by Event Grid itself, for up to 24 h. A
``"rerun": true`` request delivered twice then either ran the whole task again (after the first re-run ended) or
wrote ``<name>.json.error.json`` "still running" beside a request that had started. devhost's receipts (once per blob
version) hid it: these tests call the functions directly, as a second delivery does.
"""
from __future__ import annotations

import asyncio
import json
import threading
from enum import Enum
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from adapters.blobs import BlobStore
from api import arrivals, starters
from core.errors import SourceBusy
from gpu_batch import layout
from gpu_batch.tests.test_storage_refs import deadline_clock  # noqa: F401 - the fixture: the SDKs' waits on a clock
from gpu_batch.tests.test_storage_refs import resolver  # noqa: F401 - the fixture: getaddrinfo for *.invalid


class _Runtime(Enum):
    Running = "Running"
    Completed = "Completed"
    Failed = "Failed"


class Client:
    """The durable client's calls the starters make, over instances kept here."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.starts: list[str] = []

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        found = self.instances.get(instance_id)
        if found is None:
            return SimpleNamespace(runtime_status=None, input_=None, custom_status=None, output=None)
        ended = found["runtime"] == "Completed"
        final = {"stage": "completed", "images": 3, "failed": 0}
        return SimpleNamespace(runtime_status=_Runtime(found["runtime"]), input_=json.dumps(found["input"]),
                               custom_status=final if ended else {"stage": found.get("stage", "detecting")},
                               output={"task_id": instance_id, **final} if ended else None)

    async def start_new(self, name: str, instance_id: str, client_input: Any = None) -> str:
        self.starts.append(instance_id)
        self.instances[instance_id] = {"runtime": "Running", "input": client_input}
        return instance_id

    def end_all(self) -> None:
        for found in self.instances.values():
            found["runtime"] = "Completed"


class _Stream:
    """The trigger's ``func.InputStream``: its name is ``<container>/<blob>`` (the BlobTrigger metadata)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def read(self, size: int = -1) -> bytes:
        return self._data if size < 0 else self._data[:size]


def _deliver(store: BlobStore, client: Client, name: str) -> None:
    """One delivery of the drop's event: the function runs over the blob as it is now."""
    data = store.read_bytes(layout.INCOMING_CONTAINER, name)
    fn = starters.task_dropped._function.get_user_function().__wrapped__  # no durable client binding
    asyncio.run(fn(_Stream(f"{layout.INCOMING_CONTAINER}/{name}", data), client))


@pytest.fixture(autouse=True)
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of the starters (``BUSY_TRY_WAIT_S`` before a busy drop fails), recorded instead of slept."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(starters.asyncio, "sleep", sleep)
    return waits


FINAL = {"stage": "completed", "started": "2026-12-07T21:00:00+00:00", "images": 3, "failed": 0,
         "finished": "2026-12-07T21:05:00+00:00"}


def _run_ends(client: Client, task_id: str, status: dict[str, Any] = FINAL) -> None:
    """The end of the task's running run, as orchestrations.task ``_tell`` calls it: the activity that writes the
    run's ended marker and the done files of the drops that joined it, with the input the orchestrator gives it."""
    from activities import notify as notify_activity

    run = client.instances[task_id]["input"]["run"]
    fn = notify_activity.answer_joined_drops._function.get_user_function()  # type: ignore[attr-defined]
    fn({"task_id": task_id, "run": run, "status": status, "run_job": layout.pool_job_id(task_id, run)})


def _marker_with_an_image_list_handed_over(source: str, store: BlobStore) -> str:
    """A marker naming a one-image list in ``source``, handed over to the drop trigger as ``container_ready`` does
    (its hand-over blob in ``incoming``, whose name this returns)."""
    store.write_bytes(source, "list.txt", b"a.jpg\n")
    store.write_bytes(source, "a.jpg", b"not really a jpeg")
    store.write_json(source, layout.READY_MARKER, {"image_list": "list.txt"})
    handoff = layout.marker_handoff_blob(source)
    store.write_json(layout.INCOMING_CONTAINER, handoff, {"marker_container": source})
    return handoff


def test_a_rerun_drop_delivered_again_neither_runs_again_nor_is_refused(source: str, store: BlobStore,
                                                                       unique_name: str) -> None:
    client = Client()
    store.write_json(layout.INCOMING_CONTAINER, f"{unique_name}-first.json", {"container": source})
    _deliver(store, client, f"{unique_name}-first.json")
    client.end_all()
    name = f"{unique_name}-again.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "rerun": True})
    _deliver(store, client, name)
    assert len(client.starts) == 2
    _deliver(store, client, name)  # redelivered while the re-run runs
    client.end_all()
    _deliver(store, client, name)  # ... and after it ended
    assert len(client.starts) == 2, "a redelivered event ran the task again"
    assert store.read_json_or_none(layout.INCOMING_CONTAINER, layout.drop_error_blob(name)) is None
    receipt = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))
    assert receipt["started"] is True and receipt["id"] == client.starts[1]
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "rerun": True})  # a new version
    _deliver(store, client, name)
    assert len(client.starts) == 3, "a request written again is a new request"


def test_a_drop_that_finds_its_task_started_by_another_request_is_told_where_its_end_is(
        source: str, store: BlobStore, unique_name: str) -> None:
    """The same request dropped twice at once, or again after its task ended: the run writes ``<drop>.done.json``
    beside the one drop that started it only. The other drop's ``.task.json`` said ``"started": false`` and its
    ``.done.json`` never came: the operator waiting for it waited for ever. Found by dropping ``d1.json`` and
    ``d2.json`` with the same request on devhost: ``d1.done.json`` came, ``d2.done.json`` never did."""
    client = Client()
    first, second, later = (f"{unique_name}-{n}.json" for n in ("first", "second", "later"))
    store.write_json(layout.INCOMING_CONTAINER, first, {"container": source})
    store.write_json(layout.INCOMING_CONTAINER, second, {"container": source})
    _deliver(store, client, first)
    _deliver(store, client, second)  # while the task the first started runs
    assert len(client.starts) == 1
    receipt = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(second))
    assert receipt["started"] is False and receipt["id"] == client.starts[0]
    done_of_second = layout.drop_answer_blob(second, "done")
    assert receipt["done_file"] == f"{layout.INCOMING_CONTAINER}/{done_of_second}"
    assert f"started by the dropped request {first}" in receipt["hint"] and done_of_second in receipt["hint"]
    _run_ends(client, client.starts[0])  # its own done file comes from the run's end, beside it
    assert store.read_json(layout.INCOMING_CONTAINER, done_of_second) == {"id": client.starts[0], **FINAL}
    client.end_all()
    store.write_json(layout.INCOMING_CONTAINER, later, {"container": source})
    _deliver(store, client, later)  # after the task ended: its final status is written beside it at once
    assert len(client.starts) == 1
    receipt = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(later))
    done = layout.drop_answer_blob(later, "done")
    assert receipt["started"] is False and receipt["done_file"] == f"{layout.INCOMING_CONTAINER}/{done}"
    assert store.read_json(layout.INCOMING_CONTAINER, done) == {"id": client.starts[0], "stage": "completed",
                                                                "images": 3, "failed": 0}


def test_a_drop_that_joins_a_task_awaiting_confirmation_is_told_where_its_estimate_is(
        source: str, store: BlobStore, unique_name: str) -> None:
    """The estimate of a task over the confirmation threshold is written beside the drop that started it; a second
    drop of the same request got neither that estimate nor word of it (a helper's exploration on devhost)."""
    client = Client()
    first, second = (f"{unique_name}-{n}.json" for n in ("first", "second"))
    for name in (first, second):
        store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    _deliver(store, client, first)
    client.instances[client.starts[0]]["stage"] = "awaiting_confirmation"
    _deliver(store, client, second)
    receipt = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(second))
    estimate = f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob(first, 'estimate')}"
    assert receipt["started"] is False and receipt["estimate_file"] == estimate
    assert f"its estimate is in {estimate}, confirm it with POST /api/tasks/{client.starts[0]}/confirm" in \
        receipt["hint"]
    assert receipt["done_file"] == f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob(second, 'done')}"


def test_a_drop_that_joins_a_task_running_since_an_http_post_gets_its_own_done_file_when_the_run_ends(
        source: str, store: BlobStore, unique_name: str) -> None:
    """A task posted over HTTP has no drop of its own: a request dropped while it ran was told "no done file will
    come", though the README promises one beside each dropped request. Now the drop registers with the run (the
    task-state container), and the run's end writes its done file, with the run's final status as the run writes it
    beside its own drop (``{"id", **status}``). A drop delivered again changes nothing; one that joins after the
    run's end (the orchestration still running, telling of it) writes its own file from the run's ended marker."""
    client = Client()
    task_id = asyncio.run(starters.start_task(client, {"container": source}, starters.clients.settings()))[1]
    name, late = f"{unique_name}-drop.json", f"{unique_name}-late.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    _deliver(store, client, name)
    _deliver(store, client, name)  # its event delivered again
    receipt = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))
    done = layout.drop_answer_blob(name, "done")
    assert receipt["started"] is False and receipt["id"] == task_id
    assert receipt["done_file"] == f"{layout.INCOMING_CONTAINER}/{done}" and "started by an HTTP post" in \
        receipt["hint"]
    assert store.read_json_or_none(layout.INCOMING_CONTAINER, done) is None  # not before the run ends

    _run_ends(client, task_id)
    assert store.read_json(layout.INCOMING_CONTAINER, done) == {"id": task_id, **FINAL}

    store.write_json(layout.INCOMING_CONTAINER, late, {"container": source})
    _deliver(store, client, late)  # the orchestration still runs (its notification), its run has ended
    late_receipt = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(late))
    assert late_receipt["done_file"] == f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob(late, 'done')}"
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(late, "done")) == {"id": task_id,
                                                                                                 **FINAL}


def test_a_drop_that_joined_an_earlier_run_is_not_answered_by_a_rerun(source: str, store: BlobStore,
                                                                        unique_name: str) -> None:
    """A ``"rerun"`` of the task is a new run with its own registry: the request that joined the first run keeps
    that run's end, and the re-run writes beside the requests that joined it only."""
    client = Client()
    task_id = asyncio.run(starters.start_task(client, {"container": source}, starters.clients.settings()))[1]
    name = f"{unique_name}-drop.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    _deliver(store, client, name)
    _run_ends(client, task_id)
    client.end_all()
    assert asyncio.run(starters.start_task(client, {"container": source, "rerun": True},
                                           starters.clients.settings())) == (True, task_id)
    _run_ends(client, task_id, {**FINAL, "stage": "failed"})
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(name, "done")) == {"id": task_id,
                                                                                                 **FINAL}


def test_a_joined_drop_whose_tasks_status_cannot_be_read_after_the_start_still_gets_its_receipt(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task hub failing the joined drop's status read (a 500 or no answer: ``TaskHubUnavailable``) leaves the
    receipt with a hint to read the task's end, instead of raising: the platform's tries come at once and could all
    fail on it, and the request would end poisoned without a receipt, though its task was found."""
    import aiohttp

    class HubFailsAfterTheStart(Client):
        failing = False

        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            if self.failing:
                raise aiohttp.ClientConnectionError("the management API did not answer")
            return await super().get_status(instance_id, *args, **kwargs)

    client = HubFailsAfterTheStart()
    first, second = (f"{unique_name}-{n}.json" for n in ("first", "second"))
    for name in (first, second):
        store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    _deliver(store, client, first)
    start_task = starters.start_task

    async def then_the_hub_fails(*args: Any, **kwargs: Any) -> Any:
        found = await start_task(*args, **kwargs)
        client.failing = True
        return found

    monkeypatch.setattr(starters, "start_task", then_the_hub_fails)
    _deliver(store, client, second)
    receipt = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(second))
    assert receipt["started"] is False and receipt["id"] == client.starts[0] and "done_file" not in receipt
    assert receipt["hint"] == f"read the end of task {client.starts[0]} with GET /api/tasks/{client.starts[0]}"


def test_a_drop_whose_answer_failed_is_answered_on_the_retry_as_started(source: str, store: BlobStore,
                                                                        unique_name: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The start succeeded, writing ``<name>.task.json`` failed: the platform runs the function again."""
    client = Client()
    store.write_json(layout.INCOMING_CONTAINER, f"{unique_name}-first.json", {"container": source})
    _deliver(store, client, f"{unique_name}-first.json")
    client.end_all()
    name = f"{unique_name}-rerun.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "rerun": True})
    write_json = BlobStore.write_json
    failures = [layout.drop_receipt_blob(name)]

    def flaky(self: BlobStore, container: str, blob: str, value: Any) -> str:
        if blob in failures:
            failures.remove(blob)
            raise ConnectionError("storage went away")
        return write_json(self, container, blob, value)

    monkeypatch.setattr(BlobStore, "write_json", flaky)
    with pytest.raises(ConnectionError):
        _deliver(store, client, name)
    _deliver(store, client, name)
    assert len(client.starts) == 2
    assert store.read_json_or_none(layout.INCOMING_CONTAINER, layout.drop_error_blob(name)) is None
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))["started"] is True


def test_a_rerun_marker_redelivered_after_its_run_ended_starts_nothing(source: str, store: BlobStore) -> None:
    client = Client()
    store.write_json(source, layout.READY_MARKER, {})
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    asyncio.run(fn(event, client))
    client.end_all()
    store.write_json(source, layout.READY_MARKER, {"rerun": True})
    asyncio.run(fn(event, client))
    client.end_all()
    asyncio.run(fn(event, client))  # Event Grid's retry or a duplicate
    assert len(client.starts) == 2
    assert store.read_json_or_none(source, layout.ready_error_blob()) is None
    assert store.read_json(source, layout.ready_receipt_blob())["started"] is True


def test_a_corrected_request_or_marker_that_starts_takes_the_earlier_refusal_away(source: str, store: BlobStore,
                                                                                  unique_name: str) -> None:
    """Version 1 was refused (``<name>.json.error.json``), version 2, corrected, started: the refusal stayed beside
    the answer, saying the request was refused while its task ran."""
    client = Client()
    name = f"{unique_name}-fixed.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "first_n": -1})
    _deliver(store, client, name)
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    _deliver(store, client, name)
    assert len(client.starts) == 1 and store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))
    assert not store.exists(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))

    store.write_json(source, layout.READY_MARKER, {"first_n": "many"})
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    asyncio.run(fn(event, client))
    assert store.exists(source, layout.ready_error_blob())
    store.write_json(source, layout.READY_MARKER, {})
    asyncio.run(fn(event, client))
    # the same request as the drop's above: answered with that task, which runs already
    assert store.read_json(source, layout.ready_receipt_blob())["id"] == client.starts[0]
    assert not store.exists(source, layout.ready_error_blob())


def test_a_refusal_written_after_a_newer_version_replaced_the_request_is_withdrawn(source: str, store: BlobStore,
                                                                                  unique_name: str,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    """Version 1 (invalid) and version 2 (valid) handled at once: version 2 started and deleted the refusals it
    found, then version 1's refusal was written, standing beside the answer of a task that runs. A refusal now names
    its version and is withdrawn when the request was replaced meanwhile; the newer version's own refusal stays."""
    client = Client()
    name = f"{unique_name}-race.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "first_n": -1})
    write_json = BlobStore.write_json

    raced: list[bool] = []

    def overtaken(self: BlobStore, container: str, blob: str, value: Any) -> str:
        if blob == layout.drop_error_blob(name) and not raced:
            raced.append(True)  # before version 1's refusal is written, version 2 replaces the request and starts
            write_json(self, container, name, {"container": source})
            _deliver(store, client, name)
        return write_json(self, container, blob, value)

    monkeypatch.setattr(BlobStore, "write_json", overtaken)
    _deliver(store, client, name)
    monkeypatch.setattr(BlobStore, "write_json", write_json)
    assert len(client.starts) == 1 and store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))
    assert not store.exists(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
    # a newer invalid version's own refusal names that version and stays
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "first_n": -2})
    _deliver(store, client, name)
    refusal = store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
    assert refusal["request_etag"] == store.etag_or_none(layout.INCOMING_CONTAINER, name)


def _busy_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The source account's first existence check gets no answer (``SourceBusy`` through ``source_error``), the next
    ones are answered; returns the containers whose check failed."""
    from azure.core.exceptions import ServiceRequestError

    container_exists = BlobStore.container_exists
    failed: list[str] = []

    def busy_once(self: BlobStore, container: str) -> bool:
        if not failed:
            failed.append(container)
            raise ServiceRequestError("connection reset by peer")
        return container_exists(self, container)

    monkeypatch.setattr(BlobStore, "container_exists", busy_once)
    return failed


def test_a_drop_refused_only_because_a_service_was_busy_fails_so_the_platform_tries_it_again(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy failure (503 class) is not the request's fault: the refusal says so meanwhile, the function fails so
    the platform runs it again (poisonBlobThreshold tries), and the try that starts the task takes the refusal away."""
    client = Client()
    name = f"{unique_name}-busy.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    failed = _busy_once(monkeypatch)
    with pytest.raises(SourceBusy):
        _deliver(store, client, name)
    assert failed == [source] and client.starts == []
    refusal = store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
    assert "did not answer or is busy" in refusal["error"]
    assert refusal["hint"].startswith("nothing to do yet: the drop trigger runs again by itself")
    assert refusal["request_etag"] == store.etag_or_none(layout.INCOMING_CONTAINER, name)
    assert not store.exists(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))
    _deliver(store, client, name)  # the platform's next try
    assert len(client.starts) == 1
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))["started"] is True
    assert not store.exists(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
    _deliver(store, client, name)  # a redelivery of the answered version changes nothing
    assert len(client.starts) == 1 and not store.exists(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))


def test_a_marker_refused_only_because_a_service_was_busy_fails_so_event_grid_delivers_it_again(
        source: str, store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the drop above, for ``container_ready``: Event Grid delivers an event again after a failed delivery."""
    client = Client()
    store.write_json(source, layout.READY_MARKER, {})
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    _busy_once(monkeypatch)
    with pytest.raises(SourceBusy):
        asyncio.run(fn(event, client))
    refusal = store.read_json(source, layout.ready_error_blob())
    assert refusal["hint"].startswith("nothing to do yet: Event Grid delivers the marker's event again")
    assert client.starts == []
    asyncio.run(fn(event, client))
    assert len(client.starts) == 1 and store.read_json(source, layout.ready_receipt_blob())["started"] is True
    assert not store.exists(source, layout.ready_error_blob())
    asyncio.run(fn(event, client))  # redelivered after the answer
    assert len(client.starts) == 1


def test_a_handed_over_marker_refused_only_because_a_service_was_busy_fails_so_the_drop_trigger_tries_again(
        source: str, store: BlobStore, monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    """A marker with an image list is started by the drop trigger (its hand-over blob in ``incoming``): a busy
    failure fails that trigger, which the platform runs again, after ``BUSY_TRY_WAIT_S`` as for any drop: the
    drop trigger's tries are not spaced (tests/unit/test_drop_retry_spacing.py), and the refusal says "a minute
    after each failure"."""
    client = Client()
    handoff = _marker_with_an_image_list_handed_over(source, store)
    _busy_once(monkeypatch)
    with pytest.raises(SourceBusy):
        _deliver(store, client, handoff)
    assert store.read_json(source, layout.ready_error_blob())["hint"].startswith(
        "nothing to do yet: the drop trigger runs again by itself, a minute after each failure")
    assert slept == [starters.BUSY_TRY_WAIT_S]
    _deliver(store, client, handoff)
    assert len(client.starts) == 1 and store.read_json(source, layout.ready_receipt_blob())["started"] is True
    assert not store.exists(source, layout.ready_error_blob())


def test_a_busy_refusal_counts_the_platforms_tries_and_says_when_they_are_over(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal file outlives the platform's last try: the drop trigger's fifth (poisonBlobThreshold), then the
    blob goes to the poison queue. Its hint said "nothing to do yet: the drop trigger runs again" after that too, for
    ever. Now it counts the tries of the same version and the last says every try failed; the marker's (Event Grid,
    24 hours) says until when to wait."""
    from azure.core.exceptions import ServiceRequestError

    def never(self: BlobStore, container: str) -> bool:
        raise ServiceRequestError("connection reset by peer")

    monkeypatch.setattr(BlobStore, "container_exists", never)
    client, name = Client(), f"{unique_name}-stays-busy.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    hints = []
    for _ in range(5):  # host.json sets no poisonBlobThreshold: the default 5
        with pytest.raises(SourceBusy):
            _deliver(store, client, name)
        hints.append(store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))["hint"])
    assert all(h.startswith("nothing to do yet: the drop trigger runs again by itself") for h in hints[:-1]), hints
    assert "4 of 5 tries failed" in hints[-2]
    assert hints[-1].startswith("every try failed (the platform tries 5 times; 5 failures counted)") and "write the request again" in hints[-1], hints[-1]
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "first_n": 10})  # a new version: anew
    with pytest.raises(SourceBusy):
        _deliver(store, client, name)
    assert "1 of 5 tries failed" in store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))["hint"]

    store.write_json(source, layout.READY_MARKER, {})
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    for _ in range(2):
        with pytest.raises(SourceBusy):
            asyncio.run(fn(event, client))
    refusal = store.read_json(source, layout.ready_error_blob())
    assert refusal["busy_tries"] == 2 and "2 tries failed" in refusal["hint"], refusal
    assert refusal["hint"].startswith("nothing to do yet: Event Grid delivers the marker's event again, with back-off "
                                      "until "), refusal["hint"]
    assert client.starts == []


def test_a_busy_refusal_beside_an_unreadable_refusal_file_is_written_anew(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal file sits in ``incoming``, which callers write (and a marker's in their own container): one that is
    no longer JSON (edited by hand, emptied by a tool) must not stop the busy refusal from being written. Reading it
    for its count raised JSONDecodeError out of the trigger, so every try failed before writing, the unreadable file
    stayed, and the caller never read why."""
    from azure.core.exceptions import ServiceRequestError

    def never(self: BlobStore, container: str) -> bool:
        raise ServiceRequestError("connection reset by peer")

    monkeypatch.setattr(BlobStore, "container_exists", never)
    client, name = Client(), f"{unique_name}-unreadable-refusal.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    store.write_bytes(layout.INCOMING_CONTAINER, layout.drop_error_blob(name), b"{not json")
    with pytest.raises(SourceBusy):
        _deliver(store, client, name)
    refusal = store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
    assert refusal["busy_tries"] == 1 and "1 of 5 tries failed" in refusal["hint"], refusal

    store.write_json(source, layout.READY_MARKER, {})
    store.write_bytes(source, layout.ready_error_blob(), b"\xff\xfe not json either")
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    with pytest.raises(SourceBusy):
        asyncio.run(fn(event, client))
    assert store.read_json(source, layout.ready_error_blob())["busy_tries"] == 1


def test_a_receipt_that_is_no_longer_json_does_not_fail_every_later_delivery(
        source: str, store: BlobStore, unique_name: str) -> None:
    """The receipt sits in ``incoming`` too, which callers write: one edited into something that is not JSON raised
    JSONDecodeError out of the trigger at every delivery, of this version and of every corrected one after it (each
    poisoned after its 5 tries). Read as none, a redelivery of the version started changes nothing (``start_task``
    knows it by its origin) and a new version starts and is answered as ever."""
    client, name = Client(), f"{unique_name}-edited-receipt.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    _deliver(store, client, name)
    assert len(client.starts) == 1
    first = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))
    store.write_bytes(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name), b"\xff{edited by hand")
    _deliver(store, client, name)  # the same version again
    assert len(client.starts) == 1
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))["id"] == first["id"]

    store.write_bytes(source, layout.READY_MARKER, b"{}")
    store.write_bytes(source, layout.ready_receipt_blob(), b"not json")
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    asyncio.run(fn(event, client))
    receipt = store.read_json(source, layout.ready_receipt_blob())
    assert receipt["id"] == first["id"] and receipt["started"] is False, receipt  # the drop's task runs already


def test_a_busy_drop_waits_a_minute_before_it_fails_and_a_refused_one_does_not_wait(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    """The platform's next try comes right after a failure (tests/unit/test_drop_retry_spacing.py), so five tries
    did not outlast a minute's outage; the trigger waits ``BUSY_TRY_WAIT_S`` first, with its refusal already written
    (a reader sees why at once). A request refused for good is answered and the trigger ends at once."""
    from azure.core.exceptions import ServiceRequestError

    client, name = Client(), f"{unique_name}-waits.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source, "first_n": -1})
    _deliver(store, client, name)  # refused for good: a bad field
    assert slept == [] and store.exists(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))

    def never(self: BlobStore, container: str) -> bool:
        raise ServiceRequestError("connection reset by peer")

    monkeypatch.setattr(BlobStore, "container_exists", never)
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    with pytest.raises(SourceBusy):
        _deliver(store, client, name)
    assert slept == [starters.BUSY_TRY_WAIT_S]
    assert "a minute after each failure" in store.read_json(layout.INCOMING_CONTAINER,
                                                           layout.drop_error_blob(name))["hint"]


class _DnsTime:
    """The drop trigger's DNS waits (``adapters.storage_errors._clock`` / ``_sleep``) on a clock that moves only when
    they sleep."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from adapters import storage_errors

        self.now, self.slept = 1000.0, list[float]()
        monkeypatch.setattr(storage_errors, "_clock", lambda: self.now)
        monkeypatch.setattr(storage_errors, "_sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _no_such_name_once(monkeypatch: pytest.MonkeyPatch, named: bool) -> list[str]:
    """The request's container check fails once because DNS said its host does not exist: with the chain the
    storage SDK builds, naming ``nosuchaccount.invalid`` (``named``), or a bare ``gaierror`` that names no host (the
    account URL's is asked: here the app's own, Azurite's 127.0.0.1, which resolves). Later checks are answered."""
    import socket

    from azure.core.exceptions import ServiceRequestError

    from gpu_batch.tests.test_storage_refs import NO_SUCH_ACCOUNT, _blob_failure

    failure = (_blob_failure(NO_SUCH_ACCOUNT) if named else
               ServiceRequestError("Failed to resolve", error=socket.gaierror(socket.EAI_NONAME,
                                                                               "Name or service not known")))
    container_exists = BlobStore.container_exists
    failed: list[str] = []

    def missing_once(self: BlobStore, container: str) -> bool:
        if not failed:
            failed.append(container)
            raise failure
        return container_exists(self, container)

    monkeypatch.setattr(BlobStore, "container_exists", missing_once)
    return failed


@pytest.mark.parametrize("back", [True, False])
def test_a_drop_whose_account_host_dns_said_is_missing_is_refused_only_if_it_still_is_two_minutes_later(
        back: bool, source: str, store: BlobStore, unique_name: str, resolver: Any, monkeypatch: pytest.MonkeyPatch,
        slept: list[float]) -> None:
    """A refusal written beside a dropped request stays, and on Azure a lookup of an existing account's host can say
    "no such name" for up to ~120 s (Azure/azure-storage-python#541). The drop trigger asks DNS again
    (``adapters.storage_errors.after_dns_asked_again``): a host that resolves again is busy (the refusal says the
    trigger runs again, and it fails so that it does; the next try starts the task); one still missing after
    ``DROP_HOST_GONE_AFTER_S`` is the refusal as before. Before, the first such answer refused the request for good."""
    import socket

    from adapters.storage_errors import DROP_HOST_GONE_AFTER_S

    resolver(socket.EAI_NONAME, "Name or service not known")
    failed = _no_such_name_once(monkeypatch, named=True)
    if back:  # the lookups after the failure find the host again
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "nosuchaccount.invalid":
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]
            return real(host, *args, **kwargs)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    time = _DnsTime(monkeypatch)
    client, name = Client(), f"{unique_name}-dns.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    if not back:
        _deliver(store, client, name)  # refused for good, as before, once the grace has passed
        refusal = store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
        assert "host name nosuchaccount.invalid does not resolve" in refusal["error"], refusal
        assert "retrying does not help" in refusal["hint"] and "busy_tries" not in refusal, refusal
        assert sum(time.slept) == pytest.approx(DROP_HOST_GONE_AFTER_S) and slept == [], time.slept
        return
    with pytest.raises(SourceBusy):
        _deliver(store, client, name)
    assert failed == [source] and client.starts == [] and time.slept == [15.0]
    refusal = store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))
    assert "nosuchaccount.invalid resolves again" in refusal["error"], refusal
    assert refusal["hint"].startswith("nothing to do yet: the drop trigger runs again by itself"), refusal
    _deliver(store, client, name)  # the platform's next try
    assert len(client.starts) == 1 and not store.exists(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))


def test_a_drop_whose_own_account_host_dns_said_is_missing_asks_about_that_accounts_host(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    """The same for trapbatch's own account (the request names no source account), with a failure whose chain names
    no host: the own account's host (Azurite's, which resolves) is asked, and the drop is busy, not refused for good
    (a blip of the own account's name refused the request beside which the refusal could then be written)."""
    failed = _no_such_name_once(monkeypatch, named=False)
    time = _DnsTime(monkeypatch)
    client, name = Client(), f"{unique_name}-own.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    with pytest.raises(SourceBusy):
        _deliver(store, client, name)
    assert failed == [source] and time.slept == [15.0] and client.starts == []
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_error_blob(name))["busy_tries"] == 1
    _deliver(store, client, name)
    assert len(client.starts) == 1


@pytest.mark.parametrize("back, shortened", [(True, False), (False, False), (False, True)])
def test_a_marker_whose_account_host_dns_said_is_missing_is_refused_only_at_a_delivery_two_minutes_later(
        back: bool, shortened: bool, source: str, store: BlobStore, resolver: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``container_ready`` runs inside Event Grid's delivery, which "waits 30 seconds for a response" (no time for the
    drop trigger's two-minute DNS wait), so the grace is counted across deliveries instead: the first "no such name"
    is written as busy with when the host was first found missing (``host_missing_since``) and fails the delivery, so
    Event Grid delivers again (10 s, 30 s, 1 min, 5 min, ... for 24 h: articles/event-grid/delivery-and-retry.md);
    a delivery that finds the host again starts the task; one that still finds it missing
    ``MARKER_HOST_GONE_AFTER_S`` after the first writes the refusal as before. Before, the first such answer refused
    the marker for good (a refusal beside a marker stays: nobody writes the marker again for a blip). ``shortened``:
    the grace a test sets (``TRAPBATCH_MARKER_HOST_GONE_AFTER_S``, for devhost's scaled Event Grid schedule) counts
    instead of the platform's 120 s."""
    import socket
    from datetime import datetime, timedelta, timezone

    from adapters import storage_errors
    from gpu_batch.tests.test_storage_refs import NO_SUCH_ACCOUNT, _blob_failure

    resolver(socket.EAI_NONAME, "Name or service not known")
    failure, down = _blob_failure(NO_SUCH_ACCOUNT), [True]
    container_exists = BlobStore.container_exists

    def missing_while_down(self: BlobStore, container: str) -> bool:
        if down[0]:
            raise failure
        return container_exists(self, container)

    monkeypatch.setattr(BlobStore, "container_exists", missing_while_down)
    dns = _DnsTime(monkeypatch)  # the drop trigger's in-delivery DNS wait must not run here
    now = [datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)]
    monkeypatch.setattr(arrivals, "_now", lambda: now[0])
    client = Client()
    store.write_json(source, layout.READY_MARKER, {})
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    grace = storage_errors.MARKER_HOST_GONE_AFTER_S
    assert grace >= 120
    if shortened:
        grace = 2.5
        monkeypatch.setenv("TRAPBATCH_MARKER_HOST_GONE_AFTER_S", str(grace))
    first = now[0]
    for tries, after in enumerate([0.0, min(10.0, grace / 2), grace - 1.0], start=1):  # deliveries within the grace
        now[0] = first + timedelta(seconds=after)
        with pytest.raises(SourceBusy):
            asyncio.run(fn(event, client))
        refusal = store.read_json(source, layout.ready_error_blob())
        assert "host name nosuchaccount.invalid does not resolve" in refusal["error"], refusal
        assert refusal["hint"].startswith("nothing to do yet: Event Grid delivers the marker's event again"), refusal
        assert refusal["host_missing_since"] == first.isoformat() and refusal["busy_tries"] == tries, refusal
        assert refusal["missing_host"] == "nosuchaccount.invalid", refusal
    assert client.starts == [] and dns.slept == []
    now[0] = first + timedelta(seconds=grace)
    if back:
        down[0] = False
        asyncio.run(fn(event, client))
        assert len(client.starts) == 1 and store.read_json(source, layout.ready_receipt_blob())["started"] is True
        assert not store.exists(source, layout.ready_error_blob())
        return
    asyncio.run(fn(event, client))  # refused for good, as before, once the grace has passed
    refusal = store.read_json(source, layout.ready_error_blob())
    assert "host name nosuchaccount.invalid does not resolve" in refusal["error"], refusal
    assert "retrying does not help" in refusal["hint"], refusal
    assert not {"busy_tries", "host_missing_since", "missing_host"} & set(refusal), refusal
    assert client.starts == [] and dns.slept == []


@pytest.mark.parametrize("answer", ["no such name", "resolver down"])
def test_a_markers_delivery_learns_its_images_host_is_missing_within_event_grids_30_s(
        answer: str, source: str, store: BlobStore, resolver: Any, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The marker path with the clients it really builds (``clients.source_store``, a SAS from the secrets file) and
    DNS saying the images' host does not exist: the delivery answers (busy, ``host_missing_since``) with no storage
    SDK back-off. Before, the SDK's retries waited 18 + 24 + 42 s (±3) first, past Event Grid's 30-s wait for an
    answer (articles/event-grid/delivery-and-retry.md), so each delivery timed out and overlapped the next, and a
    refusal written after the wait was overwritten by the next delivery's busy answer. A resolver that did not
    answer (EAI_AGAIN) still gets the SDK's retries (busy, a passing cause: Event Grid delivers again anyway)."""
    from gpu_batch.tests.test_storage_refs import NO_SUCH_ACCOUNT, NO_SUCH_NAME, RESOLVER_DOWN

    resolver(*(NO_SUCH_NAME[0] if answer == "no such name" else RESOLVER_DOWN))
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"images-sas": "sv=2024-01-01&sig=abc"}))
    monkeypatch.setenv("TRAPBATCH_LOCAL_SECRETS_FILE", str(secrets))
    monkeypatch.setenv("TRAPBATCH_SOURCE_ACCOUNTS", NO_SUCH_ACCOUNT)
    store.write_json(source, layout.READY_MARKER, {"source_account_url": NO_SUCH_ACCOUNT,
                                                   "credential_secret": "images-sas"})
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    client = Client()
    with pytest.raises(SourceBusy):
        asyncio.run(fn(event, client))
    refusal = store.read_json(source, layout.ready_error_blob())
    assert client.starts == [] and refusal["busy_tries"] == 1, refusal
    if answer == "resolver down":
        assert len(resolver.slept) == 3, resolver.slept
        return
    assert refusal["missing_host"] == "nosuchaccount.invalid" and "host_missing_since" in refusal, refusal
    assert resolver.slept == [], resolver.slept  # the storage SDK's back-offs were ~84 s


class _BusyAccount:
    """A storage account on loopback that answers every request 503 ``ServerBusy``, as Azure Storage does over its
    scale targets (``tests.integration.storage_faults`` cites the answer), each answer ``spend_s`` seconds after
    the request on the test's clock (``deadline_clock``: the first answer after ``first_s``). ``requests``: how many
    came."""

    def __init__(self, clock: Any, spend_s: float, first_s: float) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        account = self

        class Handler(BaseHTTPRequestHandler):
            def _busy(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                clock.spend(first_s if account.requests == 0 else spend_s)
                account.requests += 1
                body = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
                        b"<Message>Operations per second is over the account limit.</Message></Error>")
                self.send_response(503, "Operations per second is over the account limit.")
                self.send_header("x-ms-error-code", "ServerBusy")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_DELETE = _busy

            def log_message(self, *args: Any) -> None: ...

        self.requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/partner"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def busy_account(request: pytest.FixtureRequest, deadline_clock: Any) -> Iterator[_BusyAccount]:
    """``_BusyAccount`` with ``(spend_s, first_s)`` from the test's parameter."""
    spend_s, first_s = request.param
    account = _BusyAccount(deadline_clock, spend_s, first_s)
    yield account
    account.close()


@pytest.mark.parametrize("busy_account", [(0.2, 0.2), (0.2, 16.0)], ids=["busy", "busy at the deadline"],
                         indirect=True)
def test_a_markers_delivery_whose_images_account_stays_busy_answers_busy_within_its_deadline(
        busy_account: _BusyAccount, deadline_clock: Any, source: str, store: BlobStore, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The marker path with the clients it really builds, the images' account answering 503 ServerBusy to every
    request: the delivery retries with short back-offs while its deadline allows
    (``arrivals.MARKER_DELIVERY_DEADLINE_S`` less ``MARKER_ANSWER_S`` for the checks), then writes the busy refusal
    (Event Grid delivers again) and fails, all within the deadline: Event Grid waits 30 s for the answer
    (articles/event-grid/delivery-and-retry.md). With the storage SDK's own policy the back-offs alone were 18 + 24 +
    42 s (±3), so the delivery timed out and the next one overlapped it. "at the deadline": the first 503 comes
    after the checks' deadline; nothing is retried and the refusal still says busy, never a refusal that stays."""
    monkeypatch.setattr(arrivals, "_clock", deadline_clock)
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"images-sas": "sv=2024-01-01&sig=abc"}))
    monkeypatch.setenv("TRAPBATCH_LOCAL_SECRETS_FILE", str(secrets))
    monkeypatch.setenv("TRAPBATCH_SOURCE_ACCOUNTS", busy_account.url)
    store.write_json(source, layout.READY_MARKER, {"source_account_url": busy_account.url,
                                                   "credential_secret": "images-sas"})
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    client = Client()
    started = deadline_clock.now
    with pytest.raises(SourceBusy):
        asyncio.run(fn(event, client))
    spent = deadline_clock.now - started
    assert spent <= arrivals.MARKER_DELIVERY_DEADLINE_S, (spent, deadline_clock.slept)
    refusal = store.read_json(source, layout.ready_error_blob())
    assert "did not answer or is busy" in refusal["error"] and refusal["busy_tries"] == 1, refusal
    assert refusal["hint"].startswith("nothing to do yet: Event Grid delivers the marker's event again"), refusal
    assert client.starts == [] and not store.exists(source, layout.ready_receipt_blob())
    if busy_account.requests == 1:  # the first answer came after the checks' deadline: no retry
        assert spent >= arrivals.MARKER_DELIVERY_DEADLINE_S - arrivals.MARKER_ANSWER_S and deadline_clock.slept == []
        return
    assert busy_account.requests == 4 and len(deadline_clock.slept) == 3, deadline_clock.slept
    assert sum(deadline_clock.slept) <= 5.0, deadline_clock.slept


@pytest.mark.parametrize("busy_account", [(1.0, 1.0)], indirect=True)
def test_a_markers_delivery_reads_trapbatchs_own_busy_account_within_its_deadline(
        busy_account: _BusyAccount, deadline_clock: Any, app_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The marker's own read (trapbatch's account) when that account answers 503 to everything: the storage error
    propagates (Event Grid delivers again; nothing could be written there anyway) within the checks' deadline,
    after short back-offs, from a client built for the delivery; the process's shared client keeps the storage
    SDK's policy (``ExponentialRetry``, 15-s initial back-off), which the activities use."""
    from azure.core.exceptions import HttpResponseError

    from adapters import clients

    monkeypatch.setattr(arrivals, "_clock", deadline_clock)
    monkeypatch.setenv("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName=partner;AccountKey=a2V5;"
                                              f"BlobEndpoint={busy_account.url};")
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/images/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    started = deadline_clock.now
    with pytest.raises(HttpResponseError) as failed:
        asyncio.run(fn(event, Client()))
    assert failed.value.status_code == 503
    spent = deadline_clock.now - started
    assert spent <= arrivals.MARKER_DELIVERY_DEADLINE_S - arrivals.MARKER_ANSWER_S, (spent, deadline_clock.slept)
    assert busy_account.requests == 4 and sum(deadline_clock.slept) <= 5.0, deadline_clock.slept
    shared = clients.store(clients.settings()).service._config.retry_policy
    assert shared.initial_backoff == 15 and shared.total_retries == 3
def test_a_handed_over_marker_whose_account_host_dns_said_is_missing_asks_dns_again_before_it_refuses(
        source: str, store: BlobStore, monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    """A marker with an image list is started by the drop trigger (its hand-over blob), which has the time to ask DNS
    again in one run (``after_dns_asked_again``), unlike Event Grid's delivery: a blip of the account's host name
    (here the own account's, which resolves when asked) is busy (the trigger runs again and starts the task), not
    the refusal that would stay beside the marker."""
    client = Client()
    handoff = _marker_with_an_image_list_handed_over(source, store)
    failed = _no_such_name_once(monkeypatch, named=False)
    time = _DnsTime(monkeypatch)
    with pytest.raises(SourceBusy):
        _deliver(store, client, handoff)
    assert failed == [source] and time.slept == [15.0] and client.starts == [], (failed, time.slept)
    refusal = store.read_json(source, layout.ready_error_blob())
    assert "resolves again" in refusal["error"] and "missing_host" not in refusal, refusal
    _deliver(store, client, handoff)
    assert len(client.starts) == 1 and not store.exists(source, layout.ready_error_blob())


def test_a_receipt_or_refusal_larger_than_trapbatch_writes_is_not_read_whole_and_is_written_anew(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Receipts and refusals sit where callers write, and were read whole: a file of any size (a caller's mistake, or
    abuse) was held in the Functions host's memory by the drop trigger and each Event Grid delivery. One larger than
    anything trapbatch writes there (``starters.CALLER_WRITABLE_MAX_BYTES``) is answered as a malformed one is: read
    as none (never more than the limit of it), then written anew, so the caller reads where its task stands. Each
    file here is valid JSON that, read whole, would be taken at its word (padded with white space past the limit)."""
    from azure.core.exceptions import ServiceRequestError

    limit = starters.CALLER_WRITABLE_MAX_BYTES

    def padded(value: dict[str, Any]) -> bytes:
        return json.dumps(value).encode().ljust(limit + 1)

    read_sizes: list[int] = []
    whole = BlobStore.read_bytes

    def read_bytes(self: BlobStore, container: str, name: str) -> bytes:
        data = whole(self, container, name)
        read_sizes.append(len(data))
        return data

    monkeypatch.setattr(BlobStore, "read_bytes", read_bytes)
    client, name = Client(), f"{unique_name}-huge-receipt.json"
    store.write_json(layout.INCOMING_CONTAINER, name, {"container": source})
    _deliver(store, client, name)
    first = store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))
    store.write_bytes(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name), padded(first))
    read_sizes.clear()
    _deliver(store, client, name)  # the same version again: still started once, its receipt written anew
    assert len(client.starts) == 1
    assert max(read_sizes) <= limit, "a file callers can write was read whole"
    assert store.size_or_none(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name)) < 1024
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))["id"] == first["id"]

    def never(self: BlobStore, container: str) -> bool:
        raise ServiceRequestError("connection reset by peer")

    monkeypatch.setattr(BlobStore, "container_exists", never)
    store.write_json(source, layout.READY_MARKER, {})
    etag = store.etag_or_none(source, layout.READY_MARKER)
    store.write_bytes(source, layout.ready_error_blob(),
                      padded({"error": "busy", "request_etag": etag, "busy_tries": 7,
                              "busy_since": "2026-12-06T01:00:00+00:00"}))
    event = SimpleNamespace(event_type=arrivals.BLOB_CREATED,
                            subject=f"/blobServices/default/containers/{source}/blobs/{layout.READY_MARKER}")
    fn = arrivals.container_ready._function.get_user_function().__wrapped__  # no durable client binding
    read_sizes.clear()
    with pytest.raises(SourceBusy):
        asyncio.run(fn(event, client))
    assert max(read_sizes, default=0) <= limit, "a file callers can write was read whole"
    refusal = store.read_json(source, layout.ready_error_blob())
    assert refusal["busy_tries"] == 1 and refusal["hint"].startswith("nothing to do yet"), refusal
