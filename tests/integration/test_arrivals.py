"""Start on arrival: a ``trapbatch-ready.json`` marker at the top of an image container starts one task over it,
through the Event Grid trigger (devhost delivers BlobCreated events as the subscription in infra/ would)."""
from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from adapters.blobs import BlobStore
from devhost.event_grid import Subscription
from gpu_batch import layout
from gpu_batch.tests.test_storage_refs import resolver  # noqa: F401 - the fixture: getaddrinfo for *.invalid
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


def test_a_marker_whose_images_host_stays_missing_ends_with_the_final_refusal_on_event_grids_schedule(
        app_env: dict[str, str], store: BlobStore, unique_name: str, resolver: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A marker whose images' account DNS says does not exist is answered busy (``host_missing_since``) and its
    delivery fails, so Event Grid delivers it again on its schedule (10 s, 30 s, 1 min, ... after each failure:
    articles/event-grid/delivery-and-retry.md); a delivery ``MARKER_HOST_GONE_AFTER_S`` after the first that still
    finds the host missing writes the final refusal (api.arrivals). Here the schedule runs 50 times faster
    (``event_grid_retry_scale``) and the app's grace is 1.5 s (TRAPBATCH_MARKER_HOST_GONE_AFTER_S): tries at 0, 0.2,
    0.8 and 2.0 s after each failure, so the fourth refuses (the third on a slow machine). Before, devhost tried five
    times at once and dropped the event, leaving the busy refusal beside the marker for ever."""
    from devhost.host import DevHost
    import function_app
    from gpu_batch.tests.test_storage_refs import NO_SUCH_ACCOUNT

    resolver(socket.EAI_NONAME, "Name or service not known")
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"images-sas": "sv=2024-01-01&sig=abc"}))
    for name, value in (("TRAPBATCH_LOCAL_SECRETS_FILE", str(secrets)), ("TRAPBATCH_SOURCE_ACCOUNTS", NO_SUCH_ACCOUNT),
                        ("TRAPBATCH_MARKER_HOST_GONE_AFTER_S", "1.5")):
        monkeypatch.setenv(name, value)
    scale = 0.02
    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="m" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY, event_grid_retry_scale=scale,
                event_grid=[Subscription.parse("container_ready=" + layout.READY_SUBJECT_ENDS_WITH)])
    store.ensure_container(unique_name)
    with caplog.at_level(logging.INFO, logger="devhost.eventgrid"), h:
        store.write_bytes(unique_name, layout.READY_MARKER, json.dumps(
            {"source_account_url": NO_SUCH_ACCOUNT, "credential_secret": "images-sas"}).encode())
        refusal = wait_until(lambda: (r := store.read_json_or_none(unique_name, layout.ready_error_blob()))
                             and "busy_tries" not in r and r, 60, "the final refusal")
        wait_until(lambda: not h.store.deliveries("container_ready"), 60, "the refusing try's answer (202)")
        fired = f"event grid trigger container_ready fired for /blobServices/default/containers/{unique_name}/"
        tries = [r.created for r in caplog.records if r.getMessage().startswith(fired)]  # (earlier tests' markers too)
    assert "host name nosuchaccount.invalid does not resolve" in refusal["error"], refusal
    assert "retrying does not help" in refusal["hint"], refusal
    assert not {"host_missing_since", "missing_host"} & set(refusal), refusal
    assert store.read_json_or_none(unique_name, layout.ready_receipt_blob()) is None
    assert len(tries) >= 2, caplog.text  # the first answered busy and failed; a later one refused (answered 202)
    assert resolver.slept == []  # each try answered at once (storage_refs.missing_host_not_retried)
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert all(gap >= step * scale for gap, step in zip(gaps, (10, 30, 60))), gaps  # never sooner than scheduled
