"""Start on arrival: a ``trapbatch-ready.json`` marker at the top of an image container starts one task over it,
through the Event Grid trigger (devhost delivers BlobCreated events as the subscription in infra/ would)."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from adapters.blobs import BlobStore
from devhost.event_grid import Subscription
from gpu_batch import layout
from tests.integration.conftest import upload_images
from tests.waiting import wait_until

FUNCTION_KEY = "arrival-tests-function-key"


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str) -> Iterator[Any]:
    from devhost.host import DevHost
    import function_app

    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="a" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY,
                event_grid=[Subscription.parse("container_ready=" + layout.READY_SUBJECT_ENDS_WITH)])
    h.start()
    yield h
    h.stop()


def test_a_marker_starts_one_task_over_its_container_and_a_rewrite_starts_nothing_new(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str) -> None:
    names = upload_images(store, unique_name, 3, corrupt=0)
    marker = json.dumps({"request_name": "arrived", "images_per_shard": 2}).encode()
    store.write_bytes(unique_name, layout.READY_MARKER, marker)
    receipt = wait_until(lambda: store.read_json_or_none(unique_name, layout.ready_receipt_blob()), 120,
                         "the marker's receipt")
    assert receipt["started"] is True and receipt["status_path"] == f"/api/tasks/{receipt['id']}"
    final = host.wait_for(receipt["id"], timeout=300)
    assert final["runtimeStatus"] == "Completed", final
    doc = store.read_json(app_env["TRAPBATCH_CONTAINER"], layout.results_blob(receipt["id"]))
    assert sorted(im["file"] for im in doc["images"]) == names  # the marker itself is not an image

    before = host.store.get_instance(receipt["id"])
    store.write_bytes(unique_name, layout.READY_MARKER, marker)  # rewritten, same content: a new BlobCreated event
    again = wait_until(lambda: (r := store.read_json_or_none(unique_name, layout.ready_receipt_blob())) and
                       r["started"] is False and r, 120, "the second receipt")
    assert again["id"] == receipt["id"]
    after = host.store.get_instance(receipt["id"])  # the same execution, not a restart of the finished task
    assert (after["CreatedTime"], after["Status"]) == (before["CreatedTime"], "Completed")


def test_a_bad_marker_gets_an_error_file_and_starts_nothing(host: Any, store: BlobStore, unique_name: str) -> None:
    upload_images(store, unique_name, 2, corrupt=0)
    store.write_bytes(unique_name, layout.READY_MARKER, b'{"container": "some-other-container"}')
    error = wait_until(lambda: store.read_json_or_none(unique_name, layout.ready_error_blob()), 120, "the error file")
    assert "names container 'some-other-container'" in error["error"] and error["hint"]
    assert store.read_json_or_none(unique_name, layout.ready_receipt_blob()) is None


def test_a_marker_with_an_image_list_is_started_by_the_drop_trigger_and_answered_beside_it(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str) -> None:
    """The start of a listed request reads the whole list: too long for Event Grid's delivery, which retries after
    30 s (articles/event-grid/delivery-and-retry.md), so container_ready hands the marker to the drop trigger (the
    blob trigger runs from the host's queue); the answer is beside the marker as for any marker."""
    names = upload_images(store, unique_name, 4, corrupt=0)
    store.write_bytes(unique_name, "lists/two.json", json.dumps([{"file": n} for n in names[:2]]).encode())
    store.write_bytes(unique_name, layout.READY_MARKER, json.dumps({"image_list": "lists/two.json"}).encode())
    handoff = wait_until(lambda: store.read_json_or_none(layout.INCOMING_CONTAINER,
                                                          layout.marker_handoff_blob(unique_name)),
                         120, "the hand-over")
    assert handoff == {"marker_container": unique_name}  # a pointer: the marker itself is read again
    receipt = wait_until(lambda: store.read_json_or_none(unique_name, layout.ready_receipt_blob()), 120,
                         "the marker's receipt")
    assert receipt["started"] is True
    final = host.wait_for(receipt["id"], timeout=300)
    assert final["runtimeStatus"] == "Completed", final
    doc = store.read_json(app_env["TRAPBATCH_CONTAINER"], layout.results_blob(receipt["id"]))
    assert sorted(im["file"] for im in doc["images"]) == sorted(names[:2])
    assert store.read_json_or_none(layout.INCOMING_CONTAINER,
                                   layout.drop_receipt_blob(layout.marker_handoff_blob(unique_name))) is None
