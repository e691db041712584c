"""AzureBatchPool's requests, asserted at the HTTP transport level (no Azure account is reachable here)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl

from gpu_batch.pool import ShardTask, TaskResult, TaskState, make_pool

API = "api-version=2025-06-01"


class _Response(HttpResponseImpl):  # type: ignore[misc]
    def __init__(self, request: Any, status: int, body: Any) -> None:
        super().__init__(request=request, internal_response=None, status_code=status,
                         headers={"content-type": "application/json"}, reason="", content_type="application/json",
                         stream_download_generator=None)
        self._content = json.dumps(body).encode() if body is not None else b""
        self._is_closed = True
        self._is_stream_consumed = True


class FakeBatch(HttpTransport):  # type: ignore[misc]
    """Records every request; answers like the Batch service would for the calls trapbatch makes."""

    def __init__(self, responses: dict[tuple[str, str], tuple[int, Any]] | None = None) -> None:
        self.requests: list[Any] = []
        self.responses = responses or {}

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append(request)
        path = request.url.split("?")[0].split(".com", 1)[1]
        status, body = self.responses.get((request.method, path), (201, None))
        if path.endswith("/addtaskcollection") and (request.method, path) not in self.responses:
            ids = [t["id"] for t in json.loads(request.content)["value"]]
            status, body = 200, {"value": [{"status": "success", "taskId": i} for i in ids]}
        return _Response(request, status, body)

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __exit__(self, *a: Any) -> None: ...


class FakeCredential:
    def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
        return AccessToken("entra-token", 9_999_999_999)

    def get_token_info(self, *scopes: str, **kw: Any) -> AccessTokenInfo:
        return AccessTokenInfo("entra-token", 9_999_999_999)


def pool(transport: FakeBatch) -> Any:
    return make_pool("azure_batch", account_url="https://acct.westeurope.batch.azure.com", pool_id="gpu",
                     image="myacr.azurecr.io/trapbatch-worker:1.0", worker_identity_client_id="client-guid",
                     storage_account_url="https://acct.blob.core.windows.net/", max_task_seconds=3600,
                     credential=FakeCredential(), transport=transport)


def shard(sid: str, attempt: int) -> ShardTask:
    return ShardTask(f"{sid}-a{attempt}", "trapbatch", f"tasks/task-x/shards/{sid}/attempt-{attempt}.json", sid, attempt)


def test_job_and_tasks_requests_are_exactly_what_batch_expects() -> None:
    t = FakeBatch()
    p = pool(t)
    p.ensure_job("task-0123456789abcdef0123")
    p.submit("task-0123456789abcdef0123", [shard("s00000", 1), shard("s00001", 2)])
    job, add = t.requests
    assert (job.method, job.url) == ("POST", f"https://acct.westeurope.batch.azure.com/jobs?{API}")
    assert json.loads(job.content) == {"id": "task-0123456789abcdef0123", "poolInfo": {"poolId": "gpu"},
                                       "displayName": "trapbatch task-0123456789abcdef0123"}
    assert job.headers["Authorization"] == "Bearer entra-token"
    assert add.url == f"https://acct.westeurope.batch.azure.com/jobs/task-0123456789abcdef0123/addtaskcollection?{API}"
    sent = {t["id"]: t for t in json.loads(add.content)["value"]}
    assert set(sent) == {"s00000-a1", "s00001-a2"}  # the SDK may reorder a collection
    first = sent["s00000-a1"]
    assert first["commandLine"] == ("python -m gpu_batch.worker --manifest-container trapbatch "
                                    "--manifest-blob tasks/task-x/shards/s00000/attempt-1.json")
    assert first["containerSettings"]["imageName"] == "myacr.azurecr.io/trapbatch-worker:1.0"
    assert "--gpus all" in first["containerSettings"]["containerRunOptions"]
    assert first["containerSettings"]["workingDirectory"] == "containerImageDefault"  # /app, where gpu_batch is
    # No bind-mount list: Batch then mounts the node's whole root, AZ_BATCH_NODE_SHARED_DIR included, where the
    # worker keeps its model and compile caches across the per-shard containers (worker.caches).
    assert "containerHostBatchBindMounts" not in first["containerSettings"]
    assert first["constraints"] == {"maxWallClockTime": "PT01H00M00S", "maxTaskRetryCount": 0}  # ISO 8601, 1 h
    assert first["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    env = {e["name"]: e["value"] for e in first["environmentSettings"]}
    assert env == {"TRAPBATCH_STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net/", "TRAPBATCH_DEVICE": "cuda",
                   "AZURE_CLIENT_ID": "client-guid"}
    for r in t.requests:  # no key, SAS or connection string ever leaves in a request
        body = (r.content or "") if isinstance(r.content, str) else (r.content or b"").decode()
        for secret_marker in ("sig=", "AccountKey", "SharedAccessSignature", "DefaultEndpointsProtocol"):
            assert secret_marker not in body and secret_marker not in r.url


def test_existing_job_and_existing_tasks_are_success() -> None:
    path = "/jobs/task-x/addtaskcollection"
    t = FakeBatch({("POST", "/jobs"): (409, {"code": "JobExists", "message": {"value": "The specified job already exists."}}),
                   ("POST", path): (200, {"value": [{"status": "clienterror", "taskId": "s00000-a1",
                                                     "error": {"code": "TaskExists", "message": {"value": "exists"}}}]})})
    p = pool(t)
    p.ensure_job("task-x")
    p.submit("task-x", [shard("s00000", 1)])  # resubmitting the same attempt raises nothing
    assert [r.method for r in t.requests] == ["POST", "POST"]


def test_poll_maps_batch_states_and_cancel_terminates() -> None:
    listing = {"value": [
        {"id": "s00000-a1", "state": "completed", "executionInfo": {"exitCode": 0, "result": "success",
                                                                     "retryCount": 0, "requeueCount": 0}},
        {"id": "s00001-a1", "state": "completed", "executionInfo": {
            "exitCode": 3, "result": "failure", "retryCount": 0, "requeueCount": 0,
            "failureInfo": {"category": "usererror", "message": "model cannot load"}}},
        {"id": "s00002-a1", "state": "running", "executionInfo": {"retryCount": 0, "requeueCount": 0}},
        {"id": "s00003-a1", "state": "active"},
        {"id": "s00004-a1", "state": "completed"},
    ]}
    t = FakeBatch({("GET", "/jobs/task-x/tasks"): (200, listing), ("POST", "/jobs/task-x/tasks/s00002-a1/terminate"): (204, None),
                   ("POST", "/jobs/task-x/terminate"): (202, None),
                   ("GET", "/jobs/task-x"): (200, {"id": "task-x", "state": "completed"})})
    p = pool(t)
    infos = {i.task_id: i for i in p.poll("task-x", ["s00000-a1", "s00001-a1", "s00002-a1", "s00003-a1"])}
    assert set(infos) == {"s00000-a1", "s00001-a1", "s00002-a1", "s00003-a1"}
    assert infos["s00000-a1"].state is TaskState.completed and infos["s00000-a1"].result is TaskResult.success
    assert infos["s00001-a1"].result is TaskResult.failure and infos["s00001-a1"].exit_code == 3
    assert infos["s00001-a1"].failure_message == "model cannot load"
    assert infos["s00002-a1"].state is TaskState.running and infos["s00003-a1"].state is TaskState.active
    assert "$select=id,state,executionInfo" in t.requests[0].url
    p.cancel("task-x", "s00002-a1")
    p.cancel("task-x")
    assert [(r.method, r.url.split("?")[0].split(".com")[1]) for r in t.requests[1:3]] == [
        ("POST", "/jobs/task-x/tasks/s00002-a1/terminate"), ("POST", "/jobs/task-x/terminate")]


def test_missing_settings_fail_with_the_variable_names() -> None:
    with pytest.raises(ValueError, match="TRAPBATCH_BATCH_ACCOUNT_URL"):
        make_pool("azure_batch", account_url="", pool_id="gpu", image="img")


def test_key_vault_url_reaches_the_nodes_as_a_setting() -> None:
    t = FakeBatch()
    p = make_pool("azure_batch", account_url="https://acct.westeurope.batch.azure.com", pool_id="gpu",
                  image="img:1", storage_account_url="https://acct.blob.core.windows.net/",
                  key_vault_url="https://kv.vault.azure.net/", credential=FakeCredential(), transport=t)
    p.submit("task-0123456789abcdef0123", [shard("s00000", 1)])
    env = {e["name"]: e["value"] for e in json.loads(t.requests[-1].content)["value"][0]["environmentSettings"]}
    assert env["TRAPBATCH_KEY_VAULT_URL"] == "https://kv.vault.azure.net/"
