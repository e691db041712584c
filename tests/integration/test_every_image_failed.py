"""Honest outcomes when every image of a task failed: the task's status names the cause and what to do."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import upload_images
from tests.integration.test_end_to_end import FUNCTION_KEY, api, finished_status
from tests.waiting import wait_until


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str):  # type: ignore[no-untyped-def]
    from devhost.host import DevHost
    import function_app

    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="f" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def test_a_task_whose_every_read_was_refused_fails_saying_storage_refused_and_what_to_grant(  # type: ignore[no-untyped-def]
        host, app_env, store, unique_name, monkeypatch) -> None:
    """The GPU nodes' reads refused (403: a SAS with list but no read permission, a node identity without its role)
    on every attempt: the worker exits 0 with each image a retryable ``auth`` failure, the shard is given up and the
    task fails with nothing processed. It said only "the worker exited 0 without results for 4 image(s). Fix what it
    names", naming nothing, and its hint spoke of crashes and exit 137; now the reason says auth and the hint says
    which permission or role the nodes need."""
    monkeypatch.setenv("TRAPBATCH_MAX_ATTEMPTS", "1")  # the fault refuses attempt 1's reads; no attempt reads again
    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00000/1": "fetch_error:403"}))
    upload_images(store, unique_name, 4, corrupt=0)
    task_id = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
    status: dict[str, Any] = wait_until(lambda: finished_status(host.base_url, task_id), 240, "the task's end")
    assert status["runtime_status"] == "Failed" and status["stage"] == "failed", status
    assert "no image was processed" in status["error"] and "auth 4" in status["error"], status["error"]
    given_up = status["shards_given_up"]
    assert given_up["examples"][0]["failure_reasons"] == {"auth": 4}, given_up
    assert "refused the GPU nodes' reads" in given_up["hint"] and "Storage Blob Data Reader" in given_up["hint"]
    assert "137" not in given_up["hint"], given_up
