"""AzureBatchPool's requests, asserted at the HTTP transport level (no Azure account is reachable here), and what the
pool's nodes must satisfy: the worker image (gpu_batch/Dockerfile) and the node's NVIDIA driver (worker.cuda_check).

Platform rules these tests hold the pool to (MicrosoftDocs/azure-docs, articles/batch/ unless said otherwise):
batch-docker-container-workloads.md, batch-task-output-files.md, batch-efficient-list-queries.md,
batch-quota-limit.md (includes/azure-batch-limits.md), batch-job-task-error-checking.md, and the Batch REST
reference "OData filters in Azure Batch" (odata-filters-in-batch, "List tasks").
"""
from __future__ import annotations

import json
import math
import re
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl

from gpu_batch import layout
from gpu_batch.pool import JobClosed, JobQuotaReached, JobState, ShardTask, TaskResult, TaskState, make_pool
from gpu_batch.worker.cuda_check import CudaDriverMismatch, CudaProbe, cuda_problem, require_cuda

API = "api-version=2025-06-01"
ACCOUNT = "https://acct.westeurope.batch.azure.com"
NODE_IDENTITY = ("/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
                 "userAssignedIdentities/id-nodes")
REPO = Path(__file__).resolve().parents[2]


class _Response(HttpResponseImpl):  # type: ignore[misc]
    def __init__(self, request: Any, status: int, body: Any) -> None:
        super().__init__(request=request, internal_response=None, status_code=status,
                         headers={"content-type": "application/json"}, reason="", content_type="application/json",
                         stream_download_generator=None)
        self._content = json.dumps(body).encode() if body is not None else b""
        self._is_closed = True
        self._is_stream_consumed = True


# The one grammar the fake's task listing understands: what "List tasks" allows for id and state, joined by and/or.
_FILTER_TOKEN = re.compile(r"\s*(?:\(|\)|and\b|or\b|id eq '(?:[^']|'')*'|state eq '[a-z]+'"
                           r"|stateTransitionTime gt DateTime'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z')")


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00")


class FakeBatch(HttpTransport):  # type: ignore[misc]
    """Records every request; answers like the Batch service would for the calls trapbatch makes.

    ``tasks``: job id -> the tasks Batch holds for it (REST JSON). A task listing is answered from them as the
    service does: ``$filter`` (id / state terms and ``stateTransitionTime gt DateTime'...'`` in the round-trip
    format of Batch's own samples; anything else is a 400, as Batch answers an invalid property),
    ``$select``, and pages of at most 1,000 tasks linked by ``odata.nextLink``. ``after`` is called after each
    request, to change what Batch holds between two requests.
    """

    def __init__(self, responses: dict[tuple[str, str], tuple[int, Any]] | None = None,
                 tasks: dict[str, list[dict[str, Any]]] | None = None,
                 after: Callable[[Any], None] | None = None) -> None:
        self.requests: list[Any] = []
        self.responses = responses or {}
        self.tasks = tasks or {}
        self.after = after
        self.served: list[int] = []  # tasks returned by each task listing

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append(request)
        path = request.url.split("?")[0].split(".com", 1)[1]
        status, body = self.responses.get((request.method, path), (201, None))
        job = re.fullmatch(r"/jobs/([^/]+)/tasks", path)
        if request.method == "GET" and job and job.group(1) in self.tasks and (request.method, path) not in self.responses:
            status, body = self._list_tasks(request, job.group(1))
        if path.endswith("/addtaskcollection") and (request.method, path) not in self.responses:
            ids = [t["id"] for t in json.loads(request.content)["value"]]
            status, body = 200, {"value": [{"status": "success", "taskId": i} for i in ids]}
        response = _Response(request, status, body)
        if self.after:
            self.after(request)
        return response

    def _list_tasks(self, request: Any, job: str) -> tuple[int, Any]:
        query = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query).items()}
        flt = query.get("$filter", "")
        if _FILTER_TOKEN.sub("", flt).strip():
            return 400, {"code": "InvalidQueryParameterValue", "message": {"value": f"bad $filter {flt!r}"}}
        ids = {i.replace("''", "'") for i in re.findall(r"id eq '((?:[^']|'')*)'", flt)}
        states = set(re.findall(r"state eq '([a-z]+)'", flt))
        after = re.search(r"stateTransitionTime gt DateTime'([^']+)'", flt)
        rows = [t for t in self.tasks[job] if (not ids or t["id"] in ids) and (not states or t["state"] in states)
                and (after is None or _when(t["stateTransitionTime"]) > _when(after.group(1)))]
        if "$select" in query:
            keep = query["$select"].split(",")
            rows = [{k: v for k, v in t.items() if k in keep} for t in rows]
        start = int(query.get("$skiptoken", 0))
        page = rows[start:start + min(int(query.get("maxresults", 1000)), 1000)]
        self.served.append(len(page))
        body: dict[str, Any] = {"value": page}
        if start + len(page) < len(rows):
            rest = {k: v for k, v in query.items() if k not in ("$skiptoken", "api-version")}
            body["odata.nextLink"] = (f"{ACCOUNT}/jobs/{job}/tasks?"
                                      + urllib.parse.urlencode({**rest, "$skiptoken": start + len(page)}))
        return 200, body

    def task_listings(self) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(r.url).query).items()}
                for r in self.requests if r.method == "GET" and re.search(r"/jobs/[^/]+/tasks\?", r.url)]

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __exit__(self, *a: Any) -> None: ...


class FakeCredential:
    def get_token(self, *scopes: str, **kw: Any) -> AccessToken:
        return AccessToken("entra-token", 9_999_999_999)

    def get_token_info(self, *scopes: str, **kw: Any) -> AccessTokenInfo:
        return AccessTokenInfo("entra-token", 9_999_999_999)


def pool(transport: FakeBatch, **overrides: Any) -> Any:
    args: dict[str, Any] = dict(account_url=ACCOUNT, pool_id="gpu", image="myacr.azurecr.io/trapbatch-worker:1.0",
                                worker_identity_client_id="client-guid", identity_resource_id=NODE_IDENTITY,
                                storage_account_url="https://acct.blob.core.windows.net/", max_task_seconds=3600,
                                credential=FakeCredential(), transport=transport)
    return make_pool("azure_batch", **{**args, **overrides})


def shard(sid: str, attempt: int) -> ShardTask:
    return ShardTask(f"{sid}-a{attempt}", "trapbatch", f"tasks/task-x/shards/{sid}/attempt-{attempt}.json", sid, attempt)


def posts(t: FakeBatch) -> list[tuple[str, str]]:
    """(method, path) of every POST: the terminate call's poller GETs the job on a thread of its own."""
    return [(r.method, r.url.split("?")[0].split(".com")[1]) for r in t.requests if r.method == "POST"]


def _batch_error(code: str) -> dict[str, Any]:
    return {"code": code, "message": {"lang": "en-US", "value": code}}


# ---------------------------------------------------------------- jobs and tasks

def test_the_operators_worker_tuning_ends_every_tasks_command_line() -> None:
    t = FakeBatch()
    p = pool(t, worker_tuning=("--stage-threads", "2", "--compile"))
    p.submit("task-0123456789abcdef0123", [shard("s00000", 1)])
    (add,) = t.requests
    (task,) = json.loads(add.content)["value"]
    assert task["commandLine"] == ("/opt/venv/bin/python -m gpu_batch.worker --manifest-container trapbatch "
                                   "--manifest-blob tasks/task-x/shards/s00000/attempt-1.json --device cuda "
                                   "--stage-threads 2 --compile")


def test_a_task_with_its_own_limit_gets_it_as_its_wall_clock_time() -> None:
    """``ShardTask.max_seconds`` (the limit decided for the trapbatch task's run) wins over the pool's own."""
    t = FakeBatch()
    p = pool(t)  # max_task_seconds=3600
    p.submit("task-0123456789abcdef0123", [ShardTask("s00000-a1", "trapbatch", "m.json", "s00000", 1, max_seconds=90),
                                           shard("s00001", 1)])
    (add,) = t.requests
    sent = {task["id"]: task for task in json.loads(add.content)["value"]}
    assert sent["s00000-a1"]["constraints"]["maxWallClockTime"] == "PT01M30S"
    assert sent["s00001-a1"]["constraints"]["maxWallClockTime"] == "PT01H00M00S"


def test_job_and_tasks_requests_are_exactly_what_batch_expects() -> None:
    """batch-docker-container-workloads.md: no ``--gpus`` ("For container pools with GPU-enabled hardware, Batch will
    automatically enable GPU for container tasks"); ``--rm`` as in the doc's own examples; other run options are
    ``docker create`` arguments (``--shm-size``). batch-task-output-files.md: ``../std*.txt`` on task completion,
    to a virtual directory per task, here with the node identity instead of a SAS."""
    t = FakeBatch()
    p = pool(t)
    p.ensure_job("task-0123456789abcdef0123")
    p.submit("task-0123456789abcdef0123", [shard("s00000", 1), shard("s00001", 2)])
    job, add = t.requests
    assert (job.method, job.url) == ("POST", f"{ACCOUNT}/jobs?{API}")
    assert json.loads(job.content) == {"id": "task-0123456789abcdef0123", "poolInfo": {"poolId": "gpu"},
                                       "displayName": "trapbatch task-0123456789abcdef0123"}
    assert "onAllTasksComplete" not in json.loads(job.content)  # tasks are added incrementally: see close_job
    assert job.headers["Authorization"] == "Bearer entra-token"
    assert add.url == f"{ACCOUNT}/jobs/task-0123456789abcdef0123/addtaskcollection?{API}"
    sent = {t["id"]: t for t in json.loads(add.content)["value"]}
    assert set(sent) == {"s00000-a1", "s00001-a2"}  # the SDK may reorder a collection
    first = sent["s00000-a1"]
    assert first["commandLine"] == ("/opt/venv/bin/python -m gpu_batch.worker --manifest-container trapbatch "
                                    "--manifest-blob tasks/task-x/shards/s00000/attempt-1.json --device cuda")
    assert first["containerSettings"]["imageName"] == "myacr.azurecr.io/trapbatch-worker:1.0"
    options = first["containerSettings"]["containerRunOptions"].split()
    assert "--gpus" not in options and not any(o.startswith("--gpus") for o in options)
    assert options == ["--rm", "--shm-size", "8g"]
    assert first["containerSettings"]["workingDirectory"] == "containerImageDefault"  # /app, where gpu_batch is
    # No bind-mount list: Batch then mounts the node's whole root, AZ_BATCH_NODE_SHARED_DIR included, where the
    # worker keeps its model and compile caches across the per-shard containers (worker.caches).
    assert "containerHostBatchBindMounts" not in first["containerSettings"]
    # ISO 8601: 1 h to run; the task's folder on the node kept a day, not Batch's default 7 (best-practices.md)
    assert first["constraints"] == {"maxWallClockTime": "PT01H00M00S", "retentionTime": "P1D", "maxTaskRetryCount": 0}
    assert first["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    env = {e["name"]: e["value"] for e in first["environmentSettings"]}
    assert env == {"TRAPBATCH_STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net/", "TRAPBATCH_DEVICE": "cuda",
                   "AZURE_CLIENT_ID": "client-guid"}
    assert first["outputFiles"] == [{
        "filePattern": "../std*.txt",
        "destination": {"container": {
            "containerUrl": "https://acct.blob.core.windows.net/trapbatch",
            "path": "tasks/task-0123456789abcdef0123/logs/task-0123456789abcdef0123/s00000-a1",
            "identityReference": {"resourceId": NODE_IDENTITY}}},
        "uploadOptions": {"uploadCondition": "taskcompletion"}}]
    # The folder is layout's, with the separator Batch puts before each file name left to Batch.
    folder = first["outputFiles"][0]["destination"]["container"]["path"]
    assert folder + "/" == layout.pool_log_prefix("task-0123456789abcdef0123", "s00000-a1")
    assert sent["s00001-a2"]["outputFiles"][0]["destination"]["container"]["path"].endswith("/s00001-a2")
    for r in t.requests:  # no key, SAS or connection string ever leaves in a request
        body = (r.content or "") if isinstance(r.content, str) else (r.content or b"").decode()
        for secret_marker in ("sig=", "AccountKey", "SharedAccessSignature", "DefaultEndpointsProtocol"):
            assert secret_marker not in body and secret_marker not in r.url


def test_logs_go_to_the_configured_task_state_container() -> None:
    t = FakeBatch()
    pool(t, log_container="state2", storage_account_url="https://other.blob.core.windows.net").submit(
        "task-x", [shard("s00000", 1)])
    dest = json.loads(t.requests[-1].content)["value"][0]["outputFiles"][0]["destination"]["container"]
    assert dest["containerUrl"] == "https://other.blob.core.windows.net/state2"


def test_existing_job_and_existing_tasks_are_success() -> None:
    path = "/jobs/task-x/addtaskcollection"
    t = FakeBatch({("POST", "/jobs"): (409, {"code": "JobExists", "message": {"value": "The specified job already exists."}}),
                   ("POST", path): (200, {"value": [{"status": "clienterror", "taskId": "s00000-a1",
                                                     "error": {"code": "TaskExists", "message": {"value": "exists"}}}]})})
    p = pool(t)
    p.ensure_job("task-x")
    p.submit("task-x", [shard("s00000", 1)])  # resubmitting the same attempt raises nothing
    assert [r.method for r in t.requests] == ["POST", "POST"]


def test_the_accounts_job_quota_is_named_not_taken_for_an_existing_job() -> None:
    """Batch answers Job - Add with 409 for an existing job and for the account's active-job quota alike (service
    reply "code":"ActiveJobAndScheduleQuotaReached", "Active job and job schedule quota for the account has been
    reached."; includes/azure-batch-limits.md: 100-300 active jobs), and azure-batch 15 raises every 409 of
    create_job as ResourceExistsError. Taken for "exists", the cause was lost and the submit failed "JobNotFound"."""
    t = FakeBatch({("POST", "/jobs"): (409, _batch_error("ActiveJobAndScheduleQuotaReached"))})
    with pytest.raises(JobQuotaReached, match="quota of active jobs is reached") as info:
        pool(t).ensure_job("task-x")
    assert "cancel some" in str(info.value) and "batch-quota-limit" in str(info.value)
    other = FakeBatch({("POST", "/jobs"): (409, _batch_error("PoolBeingDeleted"))})
    with pytest.raises(Exception, match="PoolBeingDeleted"):
        pool(other).ensure_job("task-x")


def test_missing_settings_fail_with_the_variable_names() -> None:
    with pytest.raises(ValueError, match="TRAPBATCH_BATCH_ACCOUNT_URL"):
        make_pool("azure_batch", account_url="", pool_id="gpu", image="img")
    with pytest.raises(ValueError, match="TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID"):  # the log upload needs it
        make_pool("azure_batch", account_url=ACCOUNT, pool_id="gpu", image="img",
                  storage_account_url="https://acct.blob.core.windows.net/")


@pytest.mark.parametrize("url", [
    "https://acct.blob.core.windows.net/?sv=2024-11-04&ss=b&srt=co&sp=rwl&sig=abc%3D",  # an account SAS pasted in
    "https://acct.blob.core.windows.net/trapbatch",  # a container: the logs' containerUrl would be another's
    "https://user:key@acct.blob.core.windows.net/",
    "http://acct.blob.core.windows.net/",
    "acct.blob.core.windows.net",
    # urlsplit strips or drops these, so the parsed URL was fine while the raw value went into every task
    " https://acct.blob.core.windows.net", "\x01https://acct.blob.core.windows.net",
    "https://acct.blob.core.windows.net/\n", "https://acct.blob.core.win\tdows.net/",
])
def test_a_storage_url_that_would_carry_a_secret_or_another_container_into_every_task_is_refused(url: str) -> None:
    """Every task carries TRAPBATCH_STORAGE_ACCOUNT_URL (its environment; its output files' ``containerUrl`` is the
    URL plus ``/<container>``), and Batch takes a SAS in a ``containerUrl`` as the documented alternative to
    ``identityReference`` (batch-task-output-files.md), so it refuses nothing: the pool must. The refusal never
    repeats the query."""
    t = FakeBatch()
    with pytest.raises(ValueError, match="TRAPBATCH_STORAGE_ACCOUNT_URL must be the storage account's blob endpoint") \
            as refused:
        pool(t, storage_account_url=url).submit("task-x", [shard("s00000", 1)])
    assert "sig=" not in str(refused.value) and "key@" not in str(refused.value) and not t.requests
    for fine in ("https://acct.blob.core.windows.net/", "https://acct.blob.core.windows.net",
                 "https://acct.blob.core.chinacloudapi.cn/"):
        pool(FakeBatch(), storage_account_url=fine)


def test_key_vault_url_reaches_the_nodes_as_a_setting() -> None:
    t = FakeBatch()
    p = make_pool("azure_batch", account_url=ACCOUNT, pool_id="gpu", image="img:1",
                  storage_account_url="https://acct.blob.core.windows.net/", identity_resource_id=NODE_IDENTITY,
                  key_vault_url="https://kv.vault.azure.net/", credential=FakeCredential(), transport=t)
    p.submit("task-0123456789abcdef0123", [shard("s00000", 1)])
    env = {e["name"]: e["value"] for e in json.loads(t.requests[-1].content)["value"][0]["environmentSettings"]}
    assert env["TRAPBATCH_KEY_VAULT_URL"] == "https://kv.vault.azure.net/"


# ---------------------------------------------------------------- closing the job

def test_close_job_terminates_it_and_a_closed_job_is_no_error() -> None:
    """batch-quota-limit.md / includes/azure-batch-limits.md: only *active* jobs count against the account's
    100-300 job quota ("completed jobs have no limit"), so every task's job is terminated when the task ends."""
    t = FakeBatch({("POST", "/jobs/task-x/terminate"): (202, None),
                   ("GET", "/jobs/task-x"): (200, {"id": "task-x", "state": "completed"})}, tasks={"task-x": []})
    pool(t).close_job("task-x")
    (terminate,) = [r for r in t.requests if r.method == "POST"]
    assert terminate.url == f"{ACCOUNT}/jobs/task-x/terminate?{API}"
    assert json.loads(terminate.content) == {"terminateReason": "trapbatch task ended"}
    for status, code in ((409, "JobCompleted"), (409, "JobBeingTerminated"), (404, "JobNotFound")):
        # a closed job still lists its tasks (none unfinished); one never created answers the listing 404 too
        listing = (status, _batch_error(code)) if code == "JobNotFound" else (200, {"value": []})
        closed = FakeBatch({("POST", "/jobs/task-x/terminate"): (status, _batch_error(code)),
                            ("GET", "/jobs/task-x/tasks"): listing})
        pool(closed).close_job("task-x")  # already closed, closing, or never created: nothing to do
        assert posts(closed) == [("POST", "/jobs/task-x/terminate")]
    denied = FakeBatch({("POST", "/jobs/task-x/terminate"): (403, _batch_error("AuthorizationFailure"))},
                       tasks={"task-x": []})
    with pytest.raises(Exception, match="AuthorizationFailure"):
        pool(denied).close_job("task-x")


def test_close_job_terminates_the_jobs_unfinished_tasks_before_the_job() -> None:
    """REST Job - Terminate (and azure-batch's ``begin_terminate_job``): "If there are any Tasks in the Job in the
    active state, they will remain in the active state". A shard group failing on a worker's unfixable exit leaves
    its other attempts in flight; they stayed active under the terminated job, while LocalPool ends them. Now the
    unfinished tasks are found by one filtered listing (``$select=id``) and terminated, each by id, before the job;
    one that completed in between (409 TaskCompleted) or is gone (404 TaskNotFound) is no error."""
    tasks = [_task("s00000-a1", "completed", exitCode=3, result="failure"), _task("s00001-a1", "running"),
             _task("s00002-a1", "active"), _task("s00003-a1", "preparing"), _task("s00004-a2", "active")]
    t = FakeBatch({("POST", "/jobs/task-x/tasks/s00001-a1/terminate"): (204, None),
                   ("POST", "/jobs/task-x/tasks/s00002-a1/terminate"): (204, None),
                   ("POST", "/jobs/task-x/tasks/s00003-a1/terminate"): (409, _batch_error("TaskCompleted")),
                   ("POST", "/jobs/task-x/tasks/s00004-a2/terminate"): (404, _batch_error("TaskNotFound")),
                   ("POST", "/jobs/task-x/terminate"): (202, None),
                   ("GET", "/jobs/task-x"): (200, {"id": "task-x", "state": "completed"})}, tasks={"task-x": tasks})
    pool(t).close_job("task-x")
    assert posts(t) == [("POST", f"/jobs/task-x/tasks/{tid}/terminate")
                        for tid in ("s00001-a1", "s00002-a1", "s00003-a1", "s00004-a2")] + [
        ("POST", "/jobs/task-x/terminate")]  # the tasks first, the job last
    (listing,) = t.task_listings()
    assert listing["$filter"] == "state eq 'active' or state eq 'preparing' or state eq 'running'"
    assert listing["$select"] == "id"
    denied = FakeBatch({("POST", "/jobs/task-x/tasks/s00001-a1/terminate"):
                        (403, _batch_error("AuthorizationFailure"))}, tasks={"task-x": tasks[:2]})
    with pytest.raises(Exception, match="AuthorizationFailure"):
        pool(denied).close_job("task-x")


def test_submitting_to_a_terminated_job_raises_job_closed() -> None:
    """Said with what to do: trapbatch closes a run's job only after its shards, so one closed while they run was
    ended outside it, and the request posted again resumes in a job of its own."""
    t = FakeBatch({("POST", "/jobs/task-x/addtaskcollection"): (409, _batch_error("JobCompleted"))})
    with pytest.raises(JobClosed, match="task-x is closed .*Post the same request again, without \"rerun\""):
        pool(t).submit("task-x", [shard("s00000", 2)])


@pytest.mark.parametrize("status, code", [(404, "JobNotFound"), (409, "JobBeingDeleted")])
def test_submitting_to_a_deleted_job_raises_job_closed_saying_it_was_deleted(status: int, code: str) -> None:
    """A RESUBMIT submits to the job its shards' first submission created (``activities.pool.run_resubmit`` creates
    none), so a job Batch does not know, or is deleting (Job - Delete: "All update operations on a Job that is in
    deleting state will fail with status code 409 (Conflict)"; BatchErrorCodeStrings JobNotFound, JobBeingDeleted),
    was deleted outside trapbatch: JobClosed, which fails the shard group with what to do, as ``check_job`` does. It
    was the SDK's bare HttpResponseError, a refusal without the hint."""
    t = FakeBatch({("POST", "/jobs/task-x/addtaskcollection"): (status, _batch_error(code))})
    with pytest.raises(JobClosed, match=f"task-x was deleted \\({code}\\).*Post the same request again, without"):
        pool(t).submit("task-x", [shard("s00000", 2)])
    assert [r.method for r in t.requests] == ["POST"]  # no job created again under its id


def test_a_job_being_deleted_is_not_created_again_and_raises_job_closed() -> None:
    """Job - Add under the id of a job Batch is deleting: 409 JobBeingDeleted ("A job operation was attempted which is
    not permitted when the job is in the process of being deleted"): the run's job was deleted outside trapbatch, said
    with what to do, not the SDK's bare 409."""
    t = FakeBatch({("POST", "/jobs"): (409, _batch_error("JobBeingDeleted"))})
    with pytest.raises(JobClosed, match="task-x was deleted \\(JobBeingDeleted\\).*Post the same request again"):
        pool(t).ensure_job("task-x")


@pytest.mark.parametrize("status, body, state", [
    (200, {"id": "task-x", "state": "active"}, JobState.active),
    (200, {"id": "task-x", "state": "enabling"}, JobState.active),
    (200, {"id": "task-x", "state": "disabling"}, JobState.disabled),
    (200, {"id": "task-x", "state": "disabled"}, JobState.disabled),
    (200, {"id": "task-x", "state": "terminating"}, JobState.closed),
    (200, {"id": "task-x", "state": "completed"}, JobState.closed),
    (200, {"id": "task-x", "state": "deleting"}, JobState.deleted),
    (404, _batch_error("JobNotFound"), JobState.deleted),
    (200, {"id": "task-x", "state": "someday"}, JobState.active),  # a state Batch adds later fails no task
])
def test_job_state_is_one_job_get_of_its_state_folded_to_what_a_shard_group_tells_apart(
        status: int, body: dict[str, Any], state: JobState) -> None:
    """azure-batch 15 ``BatchJobState``: active, disabling, disabled, enabling, terminating, completed, deleting. A
    job terminated outside trapbatch leaves its active tasks active (REST Job - Terminate), a disabled one starts
    none (Job - Disable): the shard group asks this when a round brings no news (activities.pool.check_job)."""
    t = FakeBatch({("GET", "/jobs/task-x"): (status, body)})
    assert pool(t).job_state("task-x") is state
    (get,) = t.requests
    assert get.method == "GET" and get.url == f"{ACCOUNT}/jobs/task-x?{API}&$select=state"
    denied = FakeBatch({("GET", "/jobs/task-x"): (403, _batch_error("AuthorizationFailure"))})
    with pytest.raises(Exception, match="AuthorizationFailure"):
        pool(denied).job_state("task-x")


class FlakyBatch(FakeBatch):
    """Answers each addtaskcollection with ``answer(request number, task ids)`` -> (status, body); azure-core's own
    retries do not sleep (``sleep``). Past ``HOT_LOOP`` such requests it raises, as a submission that never stops
    asking would otherwise hang the test."""

    HOT_LOOP = 60

    def __init__(self, answer: Callable[[int, list[str]], tuple[int, Any]]) -> None:
        super().__init__()
        self.answer = answer
        self.adds: list[list[str]] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        if not request.url.split("?")[0].endswith("/addtaskcollection"):
            return super().send(request, **kwargs)
        self.requests.append(request)
        ids = [t["id"] for t in json.loads(request.content)["value"]]
        self.adds.append(ids)
        if len(self.adds) > self.HOT_LOOP:
            raise RuntimeError("the submission kept asking Batch with no end")
        status, body = self.answer(len(self.adds), ids)
        return _Response(request, status, body)

    def sleep(self, duration: float) -> None: ...


def _results(ids: list[str], status: Callable[[str], str] = lambda i: "success",
             code: str = "ServerBusy") -> dict[str, Any]:
    rows = []
    for i in ids:
        row: dict[str, Any] = {"status": status(i), "taskId": i}
        if row["status"] != "success":
            row["error"] = {"code": code, "message": {"value": code}}
        rows.append(row)
    return {"value": rows}


def _fake_time(p: Any) -> list[float]:
    """The pool's clock and sleep, made to pass at once; returns the sleeps it was asked for."""
    now, slept = [0.0], []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    p._clock, p._sleep = (lambda: now[0]), sleep
    return slept


def test_tasks_batch_answers_servererror_for_are_added_again_after_a_pause() -> None:
    """REST Task - Add Collection: a task answered "servererror" may be retried. The pool retries only those, after a
    growing pause (azure-batch 15's create_tasks retried them at once and for ever)."""
    t = FlakyBatch(lambda n, ids: (200, _results(ids, lambda i: "servererror" if n < 3 and i.endswith("1-a1")
                                                        else "success")))
    p = pool(t)
    slept = _fake_time(p)
    p.submit("task-x", [shard("s00000", 1), shard("s00001", 1)])
    assert t.adds == [["s00000-a1", "s00001-a1"], ["s00001-a1"], ["s00001-a1"]]
    assert slept == [2.0, 4.0]


def test_a_task_missing_from_batchs_answer_is_added_again_not_taken_for_added() -> None:
    """REST Task - Add Collection answers one TaskAddResult per task of the request (``value``: "The results of the
    add Task collection operation"); a task the answer leaves out was not confirmed added. It is sent again (an id
    Batch has already is TaskExists, success), after the same pause as a servererror; before, it counted as added and
    only the shard group's poll by id, every FULL_POLL_EVERY rounds (up to an hour), found it unknown."""
    t = FlakyBatch(lambda n, ids: (200, _results([i for i in ids if n > 1 or i != "s00001-a1"])))
    p = pool(t)
    slept = _fake_time(p)
    p.submit("task-x", [shard("s00000", 1), shard("s00001", 1), shard("s00002", 1)])
    assert t.adds == [["s00000-a1", "s00001-a1", "s00002-a1"], ["s00001-a1"]]
    assert slept == [2.0]
    never = FlakyBatch(lambda n, ids: (200, {"value": []}))
    p2 = pool(never)
    _fake_time(p2)
    with pytest.raises(Exception, match=r"no result for 1 task\(s\) \(s00000-a1\); 1 of 1 tasks not added"):
        p2.submit("task-x", [shard("s00000", 1)])


def test_a_batch_outage_fails_the_submission_at_its_deadline_with_the_reason() -> None:
    """An outage (5xx on every request) must end the activity with what happened, inside the host's functionTimeout
    (30 min), not spin until the host kills it."""
    from gpu_batch.pool.azure_batch import SUBMIT_DEADLINE_S, BatchUnavailable

    t = FlakyBatch(lambda n, ids: (503, _batch_error("ServerBusy")))
    p = pool(t)
    slept = _fake_time(p)
    with pytest.raises(BatchUnavailable, match=r"HTTP 503 ServerBusy; 2 of 2 tasks not added") as failed:
        p.submit("task-x", [shard("s00000", 1), shard("s00001", 1)])
    assert "azure.status.microsoft.com" in str(failed.value)
    assert sum(slept) <= SUBMIT_DEADLINE_S and max(slept) == 30.0 and slept[:3] == [2.0, 4.0, 8.0]
    t2 = FlakyBatch(lambda n, ids: (200, _results(ids, lambda i: "servererror")))
    p2 = pool(t2)
    _fake_time(p2)
    with pytest.raises(BatchUnavailable, match="servererror ServerBusy"):
        p2.submit("task-x", [shard("s00000", 1)])


def test_a_chunk_batch_finds_too_large_is_halved_and_a_refused_task_is_named() -> None:
    """413 RequestBodyTooLarge (the body's 1 MB): the chunk is halved, as the SDK does; at most 100 tasks a request
    (REST Task - Add Collection). A task refused for itself (clienterror other than TaskExists) fails the submission
    with Batch's code, after the others were added."""
    big = FlakyBatch(lambda n, ids: (413, _batch_error("RequestBodyTooLarge")) if len(ids) > 40 else (200, _results(ids)))
    pool(big).submit("task-x", [shard(f"s{i:05d}", 1) for i in range(150)])
    assert [len(a) for a in big.adds] == [100, 50, 25, 25, 25, 25, 25, 25]
    assert sorted(i for a in big.adds[2:] for i in a) == [f"s{i:05d}-a1" for i in range(150)]
    bad = FlakyBatch(lambda n, ids: (200, _results(ids, lambda i: "clienterror" if i == "s00001-a1" else "success",
                                                   code="InvalidPropertyValue")))
    with pytest.raises(Exception, match=r"refused 1 of 2 tasks for job task-x: s00001-a1: InvalidPropertyValue"):
        pool(bad).submit("task-x", [shard("s00000", 1), shard("s00001", 1)])
    assert len(bad.adds) == 1


# ---------------------------------------------------------------- polling

def _task(tid: str, state: str, changed: str = "2026-12-01T09:00:00Z", **execution: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": tid, "state": state, "commandLine": "python -m gpu_batch.worker ...",
                           "displayName": f"shard {tid}", "url": f"{ACCOUNT}/jobs/task-x/tasks/{tid}",
                           "stateTransitionTime": changed}
    if state != "active":
        row["executionInfo"] = {"retryCount": 0, "requeueCount": 0, "startTime": "2026-12-01T10:00:00Z", **execution}
    return row


def test_poll_maps_batch_states_and_cancel_terminates() -> None:
    tasks = [
        _task("s00000-a1", "completed", exitCode=0, result="success", endTime="2026-12-01T10:05:00Z"),
        _task("s00001-a1", "completed", exitCode=3, result="failure",
              failureInfo={"category": "usererror", "message": "model cannot load"}),
        _task("s00002-a1", "running"),
        _task("s00003-a1", "active"),
        _task("s00004-a1", "completed", exitCode=0, result="success"),
        _task("s00005-a1", "preparing"),
    ]
    t = FakeBatch({("POST", "/jobs/task-x/tasks/s00002-a1/terminate"): (204, None),
                   ("POST", "/jobs/task-x/terminate"): (202, None),
                   ("GET", "/jobs/task-x"): (200, {"id": "task-x", "state": "completed"})}, tasks={"task-x": tasks})
    p = pool(t)
    asked = ["s00000-a1", "s00001-a1", "s00002-a1", "s00003-a1", "s00005-a1", "s09999-a1"]
    infos = {i.task_id: i for i in p.poll("task-x", asked)}
    assert set(infos) == {"s00000-a1", "s00001-a1", "s00002-a1", "s00003-a1", "s00005-a1"}  # unknown ids left out
    assert infos["s00000-a1"].state is TaskState.completed and infos["s00000-a1"].result is TaskResult.success
    assert infos["s00000-a1"].exit_code == 0 and infos["s00000-a1"].end_time
    assert infos["s00000-a1"].log == "trapbatch/" + layout.pool_log_prefix("task-x", "s00000-a1")
    assert infos["s00001-a1"].result is TaskResult.failure and infos["s00001-a1"].exit_code == 3
    assert infos["s00001-a1"].failure_message == "model cannot load"
    assert infos["s00002-a1"].state is TaskState.running and infos["s00003-a1"].state is TaskState.active
    assert infos["s00005-a1"].state is TaskState.preparing
    assert infos["s00002-a1"].result is None and infos["s00002-a1"].log is None
    unfinished, completed = t.task_listings()
    assert unfinished["$select"] == "id,state"  # the in-flight tasks: their state only
    assert completed["$select"] == "id,state,executionInfo"  # what finished: with exit code, result, failure
    assert completed["$filter"].endswith("and state eq 'completed'")
    assert "state eq 'running'" in unfinished["$filter"] and "state eq 'completed'" not in unfinished["$filter"]
    # Batch's task states are exactly active | preparing | running | completed (BatchTaskState, azure-batch docs):
    # the two listings cover all four, so an id neither returns does not exist (the shard groups resubmit it)
    assert all(f"state eq '{st}'" in unfinished["$filter"] for st in ("active", "preparing", "running"))
    p.cancel("task-x", "s00002-a1")
    p.cancel("task-x")
    assert posts(t) == [("POST", "/jobs/task-x/tasks/s00002-a1/terminate"), ("POST", "/jobs/task-x/terminate")]


def test_cancelling_a_task_that_has_already_completed_is_no_error() -> None:
    """REST Task - Terminate: a completed task answers 409 "TaskCompleted" ("The specified task is already in a
    completed state."); the shard group's cancel list is its in-flight tasks as they were before its last poll, so a
    task may complete in between. One such answer used to fail the cancel, and the task ended "failed"."""
    for status, code in ((409, "TaskCompleted"), (404, "TaskNotFound"), (404, "JobNotFound"), (409, "JobCompleted")):
        t = FakeBatch({("POST", "/jobs/task-x/tasks/s00000-a1/terminate"): (status, _batch_error(code)),
                       ("POST", "/jobs/task-x/tasks/s00001-a1/terminate"): (204, None)})
        p = pool(t)
        p.cancel("task-x", "s00000-a1")
        p.cancel("task-x", "s00001-a1")
        assert posts(t) == [("POST", "/jobs/task-x/tasks/s00000-a1/terminate"),
                            ("POST", "/jobs/task-x/tasks/s00001-a1/terminate")], code
    denied = FakeBatch({("POST", "/jobs/task-x/tasks/s00000-a1/terminate"):
                        (403, _batch_error("AuthorizationFailure"))})
    with pytest.raises(Exception, match="AuthorizationFailure"):
        pool(denied).cancel("task-x", "s00000-a1")


def test_a_task_that_failed_before_it_ran_says_which_failure_by_its_code() -> None:
    """batch-job-task-error-checking.md: a task can fail before it runs (container image pull, resource files), with
    no exit code; ``failureInfo.code`` names which. It leads the failure message the shard status carries, and is
    carried on its own as ``failure_code``."""
    tasks = [_task("s00000-a1", "completed", result="failure",
                   failureInfo={"category": "usererror", "code": "ContainerPullImageFailed",
                                "message": "Failed to pull image myacr.azurecr.io/trapbatch-worker:1.0"}),
             _task("s00001-a1", "completed", result="failure", exitCode=TIMED_OUT_EXIT,
                   failureInfo={"category": "servererror", "code": "TaskEnded"})]
    infos = {i.task_id: i for i in pool(FakeBatch(tasks={"task-x": tasks})).poll("task-x", ["s00000-a1", "s00001-a1"])}
    assert infos["s00000-a1"].exit_code is None and infos["s00000-a1"].failure_code == "ContainerPullImageFailed"
    assert infos["s00000-a1"].failure_message == ("ContainerPullImageFailed: Failed to pull image "
                                                  "myacr.azurecr.io/trapbatch-worker:1.0")
    assert infos["s00001-a1"].failure_message == "TaskEnded"


def test_a_container_failure_says_its_reason_from_the_failure_details() -> None:
    """A container option Batch refuses (as epi2me-labs/wf-basecalling#6 quotes Batch's answer): the message is
    generic ("At least one value of specified task container settings is invalid") and the reason is in
    ``failureInfo.details``, name/value pairs the failure text used to drop. Their values follow the message, at most
    ``FAILURE_DETAILS_CHARS`` of them."""
    refused = "Some supplied docker options are not recognized or are unsupported: --gpus"
    details = [{"name": "ContainerSettings", "value": "--rm --gpus all"}, {"name": "Message", "value": refused}]
    long = [{"name": "Message", "value": "x" * 2000}]
    tasks = [_task(f"s0000{i}-a1", "completed", result="failure",
                   failureInfo={"category": "usererror", "code": "ContainerInvalidSettings",
                                "message": "At least one value of specified task container settings is invalid",
                                "details": d}) for i, d in enumerate((details, long, []))]
    infos = {i.task_id: i for i in pool(FakeBatch(tasks={"task-x": tasks})).poll(
        "task-x", ["s00000-a1", "s00001-a1", "s00002-a1"])}
    assert infos["s00000-a1"].failure_message == (
        "ContainerInvalidSettings: At least one value of specified task container settings is invalid "
        f"(--rm --gpus all; {refused})")
    from gpu_batch.pool.azure_batch import FAILURE_DETAILS_CHARS

    capped = infos["s00001-a1"].failure_message or ""
    assert capped.endswith("x…)") and len(capped.split(" (", 1)[1]) == FAILURE_DETAILS_CHARS + 1 == 501
    assert infos["s00002-a1"].failure_message == ("ContainerInvalidSettings: At least one value of specified task "
                                                  "container settings is invalid")  # no details: as before


def test_batchs_failure_code_and_message_are_cut_where_they_enter_trapbatch() -> None:
    """Batch's ``failureInfo`` texts are Batch's, unbounded: they travel in every poll's answer (the shard group's
    history), the given-up shards' examples and the task's status, whose 16 KB the extension enforces. The code is cut
    to ``FAILURE_CODE_CHARS`` (tests/orchestrations/test_status_sizes.py counts on it), the message to
    ``FAILURE_MESSAGE_CHARS``; a real code stays whole, so TaskEnded still says the pool ended the task."""
    from gpu_batch.exit_codes import TASK_ENDED, pool_ended

    tasks = [_task("s00000-a1", "completed", result="failure",
                   failureInfo={"category": "usererror", "code": "C" * 5000, "message": "m" * 20_000,
                                "details": [{"name": "Message", "value": "d" * 20_000}]}),
             _task("s00001-a1", "completed", result="failure", exitCode=TIMED_OUT_EXIT,
                   failureInfo={"category": "servererror", "code": "TaskEnded", "message": "m" * 20_000})]
    infos = {i.task_id: i for i in pool(FakeBatch(tasks={"task-x": tasks})).poll("task-x", ["s00000-a1", "s00001-a1"])}
    huge = infos["s00000-a1"]
    assert len(huge.failure_code or "") == 64 and len(huge.failure_message or "") <= 1000  # activities/pool.py's
    from gpu_batch.pool.azure_batch import FAILURE_CODE_CHARS, FAILURE_DETAILS_CHARS, FAILURE_MESSAGE_CHARS

    assert huge.failure_code == "C" * (FAILURE_CODE_CHARS - 1) + "…"
    assert huge.failure_message == (f"{huge.failure_code}: {'m' * (FAILURE_MESSAGE_CHARS - 1)}… "
                                    f"({'d' * (FAILURE_DETAILS_CHARS - 1)}…)")
    ended = infos["s00001-a1"]
    assert ended.failure_code == TASK_ENDED and pool_ended(ended.exit_code, ended.failure_code, ended.failure_message)
    assert ended.failure_message == f"TaskEnded: {'m' * (FAILURE_MESSAGE_CHARS - 1)}…"


# batch-job-task-error-checking.md, "Constraint errors": a task past its maximum time "is marked as completed. The exit
# code is set to 0xC000013A. The schedulingError field is marked as { category:"ServerError", code="TaskEnded"}".
TIMED_OUT_EXIT = -1073741510  # 0xC000013A as Batch's int32 exitCode


def test_a_task_batch_ended_at_its_time_limit_reports_its_exit_code_and_failure_code_taskended() -> None:
    """The exit code is the operating system's, not the worker's; ``failure_code`` TaskEnded is what says that the
    pool ended the task (``gpu_batch.exit_codes.pool_ended``), so the app does not take it for a worker's exit."""
    from gpu_batch.exit_codes import TASK_ENDED, pool_ended

    ended = _task("s00000-a1", "completed", result="failure", exitCode=TIMED_OUT_EXIT,
                  endTime="2026-12-01T16:00:00Z",
                  failureInfo={"category": "servererror", "code": "TaskEnded",
                               "message": "The task exceeded its maximum wall clock time"})
    worker = _task("s00001-a1", "completed", result="failure", exitCode=4,
                   failureInfo={"category": "usererror", "code": "FailureExitCode",
                                "message": "The task exited with an exit code representing a failure"})
    t = FakeBatch(tasks={"task-x": [ended, worker]})
    infos = {i.task_id: i for i in pool(t).changes("task-x", "2026-12-01T00:00:00+00:00").tasks}
    info = infos["s00000-a1"]
    assert (info.exit_code, info.failure_code) == (TIMED_OUT_EXIT, TASK_ENDED)
    assert info.failure_message == "TaskEnded: The task exceeded its maximum wall clock time"
    assert pool_ended(info.exit_code, info.failure_code, info.failure_message)
    own = infos["s00001-a1"]  # a worker's own failing exit: Batch's code for it is not the pool's doing
    assert (own.exit_code, own.failure_code) == (4, "FailureExitCode")
    assert not pool_ended(own.exit_code, own.failure_code, own.failure_message)


@pytest.mark.parametrize("code", [2, 3, 5, 4, 69, 73, 75])
def test_batch_retries_no_worker_exit_itself_and_the_app_judges_each_by_its_number(code: int) -> None:
    """Which worker exits another attempt can fix is the app's decision alone (``gpu_batch.exit_codes``: 2, 3 and 5
    unfixable; 4, 69, 73 and 75 run again by the orchestration): Batch must neither retry a failing exit nor act on
    it. REST "Task - Add" ``constraints.maxTaskRetryCount``: "The Batch service retries a Task if its exit code is
    nonzero ... If the maximum retry count is 0, the Batch service does not retry the Task after the first attempt";
    ``exitConditions`` (none sent) take a ``jobAction`` only under the job's ``onTaskFailure``
    ``performexitoptionsjobaction`` (none sent: the default is ``noaction``). A failing exit then comes back as its
    own number with Batch's ``failureInfo`` code ``FailureExitCode`` (microsoft/ga4gh-tes#705), which is not the
    pool's doing (``pool_ended``)."""
    from gpu_batch import exit_codes

    t = FakeBatch(tasks={"task-x": [_task("s00000-a1", "completed", result="failure", exitCode=code,
                                          failureInfo={"category": "usererror", "code": "FailureExitCode",
                                                       "message": "The task exited with an exit code representing "
                                                                  "a failure"})]})
    p = pool(t)
    p.ensure_job("task-x")
    p.submit("task-x", [shard("s00000", 1)])
    job, add = (json.loads(r.content) for r in t.requests[:2])
    assert not {"onTaskFailure", "constraints"} & set(job)
    (sent,) = add["value"]
    assert "exitConditions" not in sent and sent["constraints"]["maxTaskRetryCount"] == 0
    (info,) = p.poll("task-x", ["s00000-a1"])
    assert (info.exit_code, info.failure_code, info.result) == (code, "FailureExitCode", TaskResult.failure)
    assert not exit_codes.pool_ended(info.exit_code, info.failure_code, info.failure_message)
    assert bool(exit_codes.unfixable_reason(info.exit_code, info.failure_code)) is (code in (2, 3, 5))


def test_polling_a_shard_group_of_a_big_job_does_not_page_through_the_job() -> None:
    """batch-efficient-list-queries.md: filter and select every list query. The job holds 5,000 tasks (five pages
    of 1,000 when listed whole); a shard group polls its 100 in-flight tasks with a $filter on their ids and gets
    back exactly those: two requests per 40 ids, no paging, nothing else."""
    states = ("completed", "running", "active", "running", "completed")
    tasks = [_task(f"s{i:05d}-a1", states[i % 5], exitCode=0, result="success") if states[i % 5] == "completed"
             else _task(f"s{i:05d}-a1", states[i % 5]) for i in range(5000)]
    t = FakeBatch(tasks={"task-x": tasks})
    p = pool(t)
    asked = [f"s{i:05d}-a1" for i in range(2000, 2100)]
    infos = p.poll("task-x", asked)
    assert [i.task_id for i in infos] == asked
    assert [i.state.value for i in infos] == [states[i % 5] for i in range(2000, 2100)]
    listings = t.task_listings()
    assert len(listings) == 2 * math.ceil(100 / p.POLL_IDS_PER_REQUEST) == 6
    assert all("$skiptoken" not in q for q in listings)  # never a second page
    assert sum(t.served) == 100  # every asked task once; none of the other 4,900
    for q in listings:
        ids = re.findall(r"id eq '([^']+)'", q["$filter"])
        assert 0 < len(ids) <= p.POLL_IDS_PER_REQUEST and set(ids) <= set(asked)
        assert len(q["$filter"]) < 1200  # the URL stays small
    # The fake pages like Batch: listing the whole job (task_ids=None) takes five requests.
    whole = FakeBatch(tasks={"task-x": tasks})
    assert len(pool(whole).poll("task-x")) == 5000 and whole.served == [1000] * 5


def test_a_task_that_completes_between_the_two_lists_is_reported_completed() -> None:
    tasks = [_task("s00000-a1", "running"), _task("s00001-a1", "active")]

    def finish_after_first_listing(request: Any) -> None:
        if request.method == "GET" and tasks[0]["state"] == "running":
            tasks[0].update(state="completed", executionInfo={**tasks[0]["executionInfo"], "exitCode": 0,
                                                              "result": "success"})

    t = FakeBatch(tasks={"task-x": tasks}, after=finish_after_first_listing)
    infos = {i.task_id: i for i in pool(t).poll("task-x", ["s00000-a1", "s00001-a1"])}
    assert infos["s00000-a1"].state is TaskState.completed and infos["s00000-a1"].result is TaskResult.success
    assert infos["s00001-a1"].state is TaskState.active


def test_odd_ids_are_quoted_as_odata_strings() -> None:
    t = FakeBatch(tasks={"task-x": [_task("it's-a1", "running")]})
    (info,) = pool(t).poll("task-x", ["it's-a1"])
    assert info.state is TaskState.running
    assert "id eq 'it''s-a1'" in t.task_listings()[0]["$filter"]


def test_changes_is_one_listing_of_what_changed_after_the_cursor_whatever_the_jobs_size() -> None:
    """batch-efficient-list-queries.md ("Filtering on state transition times to download only changes since the
    last query"; the BatchMetrics sample's ``OnlyChangedAfter``: ``stateTransitionTime gt DateTime'{0:o}'``). A job
    of 5,000 tasks of which 7 changed after the cursor: one request, 7 tasks served, completed ones with their exit
    code in the same response, and a cursor from Batch's own transition times."""
    old = "2026-12-01T09:00:00Z"
    tasks = [_task(f"s{i:05d}-a1", "completed", old, exitCode=0, result="success") for i in range(5000)]
    changed = {"s00010-a1": ("running", "2026-12-01T10:00:01Z"), "s00011-a1": ("active", "2026-12-01T10:00:02Z"),
               "s04999-a1": ("preparing", "2026-12-01T10:00:03Z")}
    for i in range(3000, 3004):
        changed[f"s{i:05d}-a1"] = ("completed", f"2026-12-01T10:01:0{i - 3000}Z")
    for t in tasks:
        if t["id"] in changed:
            state, when = changed[t["id"]]
            t.update(state=state, stateTransitionTime=when)
            if state == "completed":
                t["executionInfo"].update(exitCode=70, result="failure", failureInfo={"message": "exit 70"})
    t = FakeBatch(tasks={"task-x": tasks})
    p = pool(t)
    found = p.changes("task-x", "2026-12-01T10:00:00+00:00")
    (listing,) = t.task_listings()  # ONE request
    assert listing["$filter"] == "stateTransitionTime gt DateTime'2026-12-01T10:00:00.0000000Z'"
    assert listing["$select"] == "id,state,stateTransitionTime,executionInfo"
    assert sum(t.served) == 7 and "$skiptoken" not in listing
    infos = {i.task_id: i for i in found.tasks}
    assert {k: infos[k].state.value for k in infos} == {k: v[0] for k, v in changed.items()}
    assert infos["s03003-a1"].exit_code == 70 and infos["s03003-a1"].result is TaskResult.failure
    assert infos["s03003-a1"].failure_message == "exit 70" and infos["s03003-a1"].log
    # the next cursor: the latest transition Batch reported (10:01:03) less the overlap, never before the last one
    assert datetime.fromisoformat(found.cursor) == datetime(2026, 12, 1, 10, 0, 3, tzinfo=timezone.utc)
    again = p.changes("task-x", found.cursor)  # the overlap repeats the four completions; nothing is lost
    assert {i.task_id for i in again.tasks} == {f"s{i:05d}-a1" for i in range(3000, 3004)}
    assert datetime.fromisoformat(again.cursor) == datetime.fromisoformat(found.cursor)
    quiet = FakeBatch(tasks={"task-x": [_task("s00000-a1", "running", old)]})
    nothing = pool(quiet).changes("task-x", found.cursor)
    assert nothing.tasks == [] and nothing.cursor == found.cursor  # no change: the cursor stays


class _Quiet(FakeBatch):
    """azure-core's own retries do not sleep here."""

    def sleep(self, duration: float) -> None: ...


@pytest.mark.parametrize("status, body", [(502, None), (503, None), (504, None), (429, None),
                                          (500, _batch_error("InternalServerError")),
                                          (503, _batch_error("ServerBusy"))])
def test_a_server_error_past_the_clients_retries_is_batch_unavailable_whatever_its_body(status: int, body: Any) -> None:
    """articles/batch/batch-retry-after-errors.md: "Internal server errors - these are standard 5xx status code HTTP
    response", throttling "429 or 503 status code HTTP responses with the Retry-after header", and "They can all be
    retried". A gateway's 502/504 or a 503/429 without Batch's JSON body carries none of the error codes by which the
    orchestrator tells a busy service (orchestrations.retries.is_busy), so every pool call but ``submit`` let it out
    as an HttpResponseError that failed the task; each now raises BatchUnavailable (busy by its type), with the status
    in its text. A refusal (4xx) stays what it was."""
    from azure.core.exceptions import HttpResponseError

    from gpu_batch.pool.azure_batch import BatchUnavailable

    calls: dict[str, tuple[tuple[str, str], Callable[[Any], Any]]] = {
        "ensure_job": (("POST", "/jobs"), lambda p: p.ensure_job("task-x")),
        "poll": (("GET", "/jobs/task-x/tasks"), lambda p: p.poll("task-x", ["s00000-a1"])),
        "changes": (("GET", "/jobs/task-x/tasks"), lambda p: p.changes("task-x", "2026-12-01T00:00:00+00:00")),
        "cancel": (("POST", "/jobs/task-x/tasks/s00000-a1/terminate"), lambda p: p.cancel("task-x", "s00000-a1")),
        "close_job": (("GET", "/jobs/task-x/tasks"), lambda p: p.close_job("task-x")),
        "close_job's terminate": (("POST", "/jobs/task-x/terminate"), lambda p: p.close_job("task-x")),
    }
    for name, (request, call) in calls.items():
        answers = {request: (status, body)}
        if name == "close_job's terminate":
            answers[("GET", "/jobs/task-x/tasks")] = (200, {"value": []})
        with pytest.raises(BatchUnavailable, match=rf"HTTP {status} ") as raised:
            call(pool(_Quiet(answers)))
        assert isinstance(raised.value.__cause__, HttpResponseError), name
        if body:
            assert body["code"] in str(raised.value), name
    refused = _Quiet({("GET", "/jobs/task-x/tasks"): (403, _batch_error("AuthorizationFailure"))})
    with pytest.raises(HttpResponseError, match="AuthorizationFailure"):
        pool(refused).poll("task-x", ["s00000-a1"])


def test_a_fresh_cursor_reaches_back_past_the_clock_skew_batch_allows() -> None:
    before = datetime.now(timezone.utc)
    cursor = datetime.fromisoformat(pool(FakeBatch()).cursor())
    assert before - timedelta(seconds=61) <= cursor <= before - timedelta(seconds=59)
    with pytest.raises(ValueError, match="not an AzureBatchPool change cursor"):
        pool(FakeBatch()).changes("task-x", "12.5")


# ---------------------------------------------------------------- the worker image

def test_tasks_name_the_images_interpreter_by_its_absolute_path() -> None:
    """batch-docker-container-workloads.md, "Troubleshoot container tasks": "Specify an absolute path in the task
    command line". The path is the Dockerfile's venv."""
    from gpu_batch.pool.azure_batch import WORKER_PYTHON

    dockerfile = (REPO / "gpu_batch" / "Dockerfile").read_text()
    venv = re.search(r"python3\.11 -m venv (\S+)", dockerfile)
    assert venv is not None and WORKER_PYTHON == f"{venv.group(1)}/bin/python"
    t = FakeBatch()
    pool(t).submit("task-x", [shard("s00000", 1)])
    (task,) = json.loads(t.requests[0].content)["value"]
    assert task["commandLine"].split()[0] == WORKER_PYTHON


def test_worker_image_leaves_the_node_shared_caches_alone() -> None:
    """batch-docker-container-workloads.md: everything under AZ_BATCH_NODE_ROOT_DIR (the shared folder included) is
    mapped into each container task; the worker keeps its caches there (worker.caches). The image must not point
    them into the container (ENV) or hide node folders (VOLUME)."""
    lines = [ln.strip() for ln in (REPO / "gpu_batch" / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    text = "\n".join(instructions)
    assert not any(ln.upper().startswith("VOLUME") for ln in instructions)
    for variable in ("TRAPBATCH_MODEL_CACHE", "TORCHINDUCTOR_CACHE_DIR", "AZ_BATCH_NODE_SHARED_DIR", "XDG_CACHE_HOME"):
        assert variable not in text
    assert "--gpus" not in text


def test_worker_image_can_compile_the_network() -> None:
    """``--compile`` (``serve --compile``, Bicep ``residentCompile``): TorchInductor's GPU kernels are Triton's, whose
    launchers are built at run time with CC/gcc/clang against Python.h (triton/runtime/build.py), so the image
    carries gcc, the C library's headers and the worker Python's headers (without them it runs eager, saying why)."""
    lines = [ln.strip() for ln in (REPO / "gpu_batch" / "Dockerfile").read_text().splitlines()]
    text = "\n".join(ln for ln in lines if ln and not ln.startswith("#"))
    (install,) = re.findall(r"apt-get install[^&]*", text)
    installed = set(install.replace("\\", " ").split())
    assert {"python3.11", "python3.11-venv", "gcc", "libc6-dev", "python3.11-dev"} <= installed
    assert "python3.11 -m venv" in text  # the headers are those of the Python the worker runs


# ---------------------------------------------------------------- the node's driver (worker.cuda_check)

def probe(torch_cuda: str | None, available: bool, driver_cuda: int | None, driver: str | None = None) -> CudaProbe:
    return CudaProbe(torch_version="2.14.1+cu130", torch_cuda=torch_cuda, cuda_available=available,
                     driver_cuda=driver_cuda, driver_version=driver)


def test_a_driver_older_than_the_images_cuda_is_named_with_the_driver_to_use() -> None:
    message = cuda_problem("cuda", probe("13.0", False, 12020, "535.161.08"))
    assert message == ("the node's NVIDIA driver 535.161.08 supports CUDA 12.2, but the worker image is built for "
                       "CUDA 13.0 (torch 2.14.1+cu130): use a node image with NVIDIA driver >= 580.65.06, or a worker "
                       "image built for CUDA <= 12.2")
    with pytest.raises(CudaDriverMismatch, match="supports CUDA 12.2"):
        require_cuda("cuda", probe("13.0", False, 12020, "535.161.08"))
    # same major version, older minor: the driver of that exact release
    assert "driver >= 570.26" in (cuda_problem("cuda", probe("12.8", False, 12020)) or "")
    # a release this module has no driver for: said in words
    assert "whose NVIDIA driver supports CUDA 13.7" in (cuda_problem("cuda", probe("13.7", False, 13000)) or "")


def test_a_usable_gpu_or_a_cpu_run_is_no_problem() -> None:
    assert cuda_problem("cuda", probe("13.0", True, 13000)) is None
    assert cuda_problem("cuda", probe("12.8", True, 12020)) is None  # minor version compatibility worked
    assert cuda_problem("cpu", probe("13.0", False, 12020)) is None
    assert cuda_problem("auto", probe("13.0", False, None)) is None  # no GPU at all: the CPU is what auto means
    assert cuda_problem("auto", probe(None, False, 13000)) is None  # a CPU-only torch
    require_cuda("cuda", probe("13.0", True, 13000))


def test_every_other_reason_cuda_is_unusable_is_said_plainly() -> None:
    # auto, but a driver that cannot run this torch: the CPU run that follows is an accident, so it is reported
    assert "supports CUDA 12.2" in (cuda_problem("auto", probe("13.0", False, 12020)) or "")
    assert "no NVIDIA driver is visible" in (cuda_problem("cuda", probe("13.0", False, None)) or "")
    assert "CPU-only build" in (cuda_problem("cuda", probe(None, False, 13000)) or "")
    assert "finds no usable GPU" in (cuda_problem("cuda", probe("13.0", False, 13000, "580.95.05")) or "")


def test_a_throttled_submission_past_the_clients_own_retries_waits_like_a_server_error() -> None:
    """429 TooManyRequests that outlasted azure-core's retries was raised at once (only 5xx waited), and the
    orchestration's two quick retries followed: now it waits and retries until the submission's deadline, as a 5xx."""
    t = FlakyBatch(lambda n, ids: (429, _batch_error("TooManyRequests")) if n < 8 else (200, _results(ids)))
    p = pool(t)
    slept = _fake_time(p)
    p.submit("task-x", [shard("s00000", 1)])
    assert t.adds[-1] == ["s00000-a1"] and slept and slept[0] == 2.0


def test_a_throttled_submission_comes_back_no_sooner_than_batchs_retry_after() -> None:
    """articles/batch/batch-retry-after-errors.md: Batch throttles with "429 or 503 status code HTTP responses with
    the Retry-after header", and a client that retries "too frequently or too quickly" is throttled again. azure-core
    honours the header only within its own three retries of the request; past them the submission waited its own
    2 s, 4 s ... and came back before Batch had asked. It now waits what the header asks when that is longer, in
    seconds or as an HTTP date."""
    for header, at_least in (("20", 20.0), ("1", 2.0)):
        answers: list[tuple[int, Any]] = [(429, _batch_error("TooManyRequests"))] * 4 + [(200, None)]

        class Throttling(FlakyBatch):
            def send(self, request: Any, **kwargs: Any) -> Any:
                response = super().send(request, **kwargs)
                if response.status_code == 429:
                    response.headers = {**response.headers, "Retry-After": header}
                return response

        t = Throttling(lambda n, ids: answers[n - 1] if answers[n - 1][1] else (200, _results(ids)))
        p = pool(t)
        slept = _fake_time(p)
        p.submit("task-x", [shard("s00000", 1)])
        assert len(t.adds) == 5 and slept == [at_least], header  # azure-core's own 3 retries, then one wait of ours
    from email.utils import format_datetime

    from gpu_batch.pool.azure_batch import _retry_after_s

    class _Refusal(Exception):
        def __init__(self, value: str) -> None:
            self.response = type("R", (), {"headers": {"Retry-After": value}})()

    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)
    assert 85 <= _retry_after_s(_Refusal(later)) <= 90
    assert _retry_after_s(_Refusal("soon")) == 0.0 and _retry_after_s(ValueError("no response")) == 0.0


def test_an_absurd_retry_after_is_not_slept_inside_the_client() -> None:
    """azure-core's ``RetryPolicy`` sleeps whatever ``Retry-After`` asks, unbounded, before each of its own retries
    (1.41 ``policies/_retry.py`` ``_sleep_for_retry``; ``is_retry`` retries any answer with the header, a POST
    too): a 429 or 503 asking for a day held the activity's call (a submission, a poll) three days, past the host's
    function timeout, before ``submit``'s own bound (``SUBMIT_DEADLINE_S``) was ever reached. An answer asking for
    longer than ``RETRY_AFTER_MAX_S`` now comes back to the caller at once: ``submit`` then says ``BatchUnavailable``
    (it cannot wait that long), and so does any other call (busy, waited out by the orchestration). A shorter one
    is still honoured by the client's own retries."""
    from gpu_batch.pool.azure_batch import RETRY_AFTER_MAX_S, BatchUnavailable

    class Throttling(FlakyBatch):
        def __init__(self, header: str, answer: Callable[[int, list[str]], tuple[int, Any]]) -> None:
            super().__init__(answer)
            self.header, self.slept = header, []  # type: list[float]

        def send(self, request: Any, **kwargs: Any) -> Any:
            response = super().send(request, **kwargs)
            if response.status_code in (429, 503):
                response.headers = {**response.headers, "Retry-After": self.header}
            return response

        def sleep(self, duration: float) -> None:
            self.slept.append(duration)

    day = Throttling("86400", lambda n, ids: (429, _batch_error("TooManyRequests")))
    p = pool(day)
    slept = _fake_time(p)
    with pytest.raises(BatchUnavailable):
        p.submit("task-x", [shard("s00000", 1)])
    assert day.slept == [] and slept == [] and len(day.adds) == 1
    day.responses[("GET", "/jobs/task-x/tasks")] = (503, _batch_error("ServerBusy"))
    with pytest.raises(BatchUnavailable):
        p.poll("task-x", ["s00000-a1"])
    assert day.slept == []
    short = Throttling(str(int(RETRY_AFTER_MAX_S)), lambda n, ids: (429, _batch_error("TooManyRequests")) if n < 3
                       else (200, _results(ids)))
    p = pool(short)
    _fake_time(p)
    p.submit("task-x", [shard("s00000", 1)])
    assert short.slept == [RETRY_AFTER_MAX_S] * 2 and len(short.adds) == 3
