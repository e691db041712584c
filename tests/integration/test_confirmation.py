"""Word before and after: a task above TRAPBATCH_CONFIRM_ABOVE_IMAGES waits for POST .../confirm (or expires, or is
cancelled) with nothing in the pool; a dropped request gets its estimate and its done file beside it."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import requests

from adapters.blobs import BlobStore
from core.contracts import Stage
from gpu_batch import layout
from tests.api_session import DiagnosingSession
from tests.integration.conftest import upload_images
from tests.openapi_answers import described_answers_fixture, recording
from tests.waiting import wait_until

FUNCTION_KEY = "confirmation-tests-function-key"
api = DiagnosingSession()
api.headers["x-functions-key"] = FUNCTION_KEY
answers = recording(api)  # every JSON answer of the app, checked against its OpenAPI description after each test


described_answers = described_answers_fixture(answers)  # each JSON answer fully described (tests/openapi_answers.py)


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from devhost.host import DevHost
    import function_app

    monkeypatch.setenv("TRAPBATCH_CONFIRM_ABOVE_IMAGES", "2")
    monkeypatch.setenv("TRAPBATCH_CONFIRM_TIMEOUT_S", "600")
    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="c" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def _stage(host: Any, task_id: str) -> str:
    return str(api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json()["stage"])


def _pool_rows(app_env: dict[str, str], task_id: str) -> int:
    """Pool tasks LocalPool was given for this task (its jobs are ``<task>_<run>``; gpu_batch.layout.pool_job_id)."""
    from azure.data.tables import TableServiceClient

    table = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_table_client("trapbatchpool")
    try:
        return sum(1 for e in table.list_entities() if layout.task_of_pool_job(str(e["PartitionKey"])) == task_id)
    except Exception:  # noqa: BLE001 - no table yet: no pool task at all
        return 0


def test_a_large_task_waits_with_its_estimate_and_runs_once_confirmed(host: Any, app_env: dict[str, str],
                                                                      store: BlobStore, unique_name: str) -> None:
    upload_images(store, unique_name, 4, corrupt=0)
    base = host.base_url
    early = api.post(f"{base}/api/tasks/nobody-here/confirm", timeout=120)
    assert early.status_code == 404
    started = api.post(f"{base}/api/tasks", json={"container": unique_name}, timeout=120).json()
    task_id = started["id"]
    wait_until(lambda: _stage(host, task_id) == Stage.awaiting_confirmation, 120, "awaiting confirmation")
    status = api.get(f"{base}/api/tasks/{task_id}", timeout=120).json()
    assert status["estimate"]["images"] == 4 and status["estimate"]["gpu_hours"] > 0
    assert _pool_rows(app_env, task_id) == 0  # nothing reaches the pool before the confirmation
    confirmed = api.post(f"{base}/api/tasks/{task_id}/confirm", timeout=120)
    assert confirmed.status_code == 202 and confirmed.json()["confirmed"] is True
    final = host.wait_for(task_id, timeout=300)
    assert final["runtimeStatus"] == "Completed" and final["output"]["stage"] == Stage.completed
    assert _pool_rows(app_env, task_id) >= 1  # its shard reached the pool once confirmed
    again = api.post(f"{base}/api/tasks/{task_id}/confirm", timeout=120)
    assert again.status_code == 409 and "not awaiting confirmation" in again.json()["error"]


def test_a_dropped_request_gets_its_estimate_then_its_done_file_and_cancel_ends_the_wait(
        host: Any, store: BlobStore, unique_name: str, incoming: str) -> None:
    upload_images(store, unique_name, 3, corrupt=0)
    name = f"{unique_name}.json"
    store.write_bytes(layout.INCOMING_CONTAINER, name, json.dumps({"container": unique_name}).encode())
    estimate = wait_until(lambda: store.read_json_or_none(layout.INCOMING_CONTAINER,
                                                          layout.drop_answer_blob(name, "estimate")), 120, "estimate")
    assert estimate["stage"] == Stage.awaiting_confirmation and estimate["estimate"]["images"] == 3
    task_id = estimate["id"]
    cancelled = api.post(f"{host.base_url}/api/tasks/{task_id}/cancel", timeout=120)
    assert cancelled.status_code == 202
    done = wait_until(lambda: store.read_json_or_none(layout.INCOMING_CONTAINER, layout.drop_answer_blob(name, "done")),
                      120, "done file")
    assert done["id"] == task_id and done["stage"] == Stage.cancelled
    assert host.wait_for(task_id, timeout=60)["runtimeStatus"] == "Completed"
    # the answers are not taken for new requests
    assert not layout.is_drop_request(layout.drop_answer_blob(name, "done"))
    assert not layout.is_drop_request(layout.drop_answer_blob(name, "estimate"))


def test_the_cli_says_how_to_confirm_and_confirms(host: Any, app_env: dict[str, str], store: BlobStore,
                                                   unique_name: str) -> None:
    """The real CLI against devhost: a waiting task's line names 'trapbatch confirm', which lets it run; ``submit
    --wait --yes`` confirms on its own; ``--yes`` without ``--wait`` is refused before anything is sent."""
    from tests.integration.test_cli import trapbatch

    upload_images(store, unique_name, 6, corrupt=0)  # three in each folder: each folder's task waits (above 2)
    key = {"key": FUNCTION_KEY}
    refused = trapbatch("submit", "--container", unique_name, "--yes", url=host.base_url, **key)
    assert refused.returncode == 2 and "add --wait" in refused.stderr
    started = trapbatch("submit", "--container", unique_name, "--prefix", "cam0/", "--json", url=host.base_url, **key)
    task_id = json.loads(started.stdout)["id"]
    wait_until(lambda: _stage(host, task_id) == Stage.awaiting_confirmation, 120, "awaiting confirmation")
    shown = trapbatch("status", task_id, url=host.base_url, **key)
    said = " ".join(shown.stdout.split())  # the table may wrap the line
    assert "awaiting confirmation: 3 images" in said and f"trapbatch confirm {task_id}" in said
    assert _pool_rows(app_env, task_id) == 0
    confirmed = trapbatch("confirm", task_id, "--wait", "--plain", url=host.base_url, **key)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert f"confirmed {task_id}" in confirmed.stdout and "completed" in confirmed.stdout
    again = trapbatch("confirm", task_id, url=host.base_url, **key)
    assert again.returncode == 4 and "not awaiting confirmation" in again.stderr

    yes = trapbatch("submit", "--container", unique_name, "--prefix", "cam1/", "--wait", "--yes", "--plain",
                    url=host.base_url, **key)
    assert yes.returncode == 0, yes.stdout + yes.stderr
    assert "confirmed task" in yes.stdout and "completed" in yes.stdout
    assert "confirmed: " in yes.stdout and "nothing runs until" not in yes.stdout  # it was confirmed for them


def test_a_request_dropped_while_a_posted_task_waits_gets_its_own_done_file_when_the_task_ends(
        host: Any, store: BlobStore, unique_name: str, incoming: str) -> None:
    """End to end on devhost: a task posted over HTTP waits for confirmation (it runs); the same request dropped
    into ``incoming`` joins it (``"started": false``) and its receipt names its own done file; cancelled, the run's
    end writes that file beside the dropped request, with the final status (orchestrations.task ``_tell``, activity
    ``answer_joined_drops``). Before, the receipt said no done file would come."""
    upload_images(store, unique_name, 3, corrupt=0)
    task_id = api.post(f"{host.base_url}/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
    wait_until(lambda: _stage(host, task_id) == Stage.awaiting_confirmation, 120, "awaiting confirmation")
    name = f"{unique_name}.json"
    store.write_bytes(layout.INCOMING_CONTAINER, name, json.dumps({"container": unique_name}).encode())
    receipt = wait_until(lambda: store.read_json_or_none(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name)),
                         120, "receipt")
    done_name = layout.drop_answer_blob(name, "done")
    assert receipt["started"] is False and receipt["id"] == task_id
    assert receipt["done_file"] == f"{layout.INCOMING_CONTAINER}/{done_name}" and "HTTP post" in receipt["hint"]
    assert api.post(f"{host.base_url}/api/tasks/{task_id}/cancel", timeout=120).status_code == 202
    done = wait_until(lambda: store.read_json_or_none(layout.INCOMING_CONTAINER, done_name), 120, "done file")
    final = host.wait_for(task_id, timeout=60)
    assert final["runtimeStatus"] == "Completed"
    assert done == {"id": task_id, **{k: v for k, v in final["output"].items() if k != "task_id"}}
