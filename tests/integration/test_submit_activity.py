"""The SUBMIT activity (``activities.pool.run_submit``) against Azurite: a shard group's first SUBMIT, tried again
after Batch stayed busy, never creates again a pool job that an earlier try created and an operator deleted since.

AzureBatchPool is driven at the HTTP transport level (``FakeBatch`` of gpu_batch/tests/test_pool_azure_batch.py,
here holding the account's jobs as Batch does: REST Job - Add answers 409 JobExists for a job it has and, while it
deletes one, 409 JobBeingDeleted; Task - Add Collection answers 404 JobNotFound for a job it no longer has and 409
JobBeingDeleted for one it deletes: BatchErrorCodeStrings JobExists "The specified job exists", JobNotFound "The job
on which an operation was attempted is not present in the Batch account", JobBeingDeleted "A job operation was
attempted which is not permitted when the job is in the process of being deleted"; azure-batch 15
``begin_delete_job``: "All update operations on a Job that is in deleting state will fail with status code 409
(Conflict)"). LocalPool and SimulatedPool are the real ones, their ``delete_job`` doing what ``az batch job delete``
does.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Iterator

import pytest

from activities.pool import run_submit
from adapters.blobs import BlobStore, service_client
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.pool import JobClosed, JobState, ShardTask
from gpu_batch.pool.azure_batch import BatchUnavailable
from gpu_batch.pool.local import LocalPool
from gpu_batch.pool.simulated import SimulatedPool
from gpu_batch.tests.test_pool_azure_batch import FakeBatch, _batch_error, _fake_time, _Response, posts
from gpu_batch.tests.test_pool_azure_batch import pool as batch_pool

TASK = "task-0123456789abcdef0123"
JOB = layout.pool_job_id(TASK, "r261206200000ab12")


@pytest.fixture
def env(storage_connection: str, unique_name: str) -> tuple[Settings, BlobStore]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(settings.container)
    return settings, store


class BatchAccount(FakeBatch):
    """Batch's jobs as the service keeps them: Job - Add creates one (201), or answers 409 JobExists, or 409
    JobBeingDeleted while ``deleting`` holds it; Task - Add Collection answers 404 JobNotFound for a job it does not
    have, 409 JobBeingDeleted for one it deletes, 503 ServerBusy while ``busy`` (an outage), else adds the tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: set[str] = set()
        self.deleting: set[str] = set()
        self.busy = False
        self.created = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        path = request.url.split("?")[0].split(".com", 1)[1]
        if request.method == "POST" and path == "/jobs":
            self.requests.append(request)
            job = json.loads(request.content)["id"]
            if job in self.deleting:
                return _Response(request, 409, _batch_error("JobBeingDeleted"))
            if job in self.jobs:
                return _Response(request, 409, _batch_error("JobExists"))
            self.jobs.add(job)
            self.created += 1
            return _Response(request, 201, None)
        if request.method == "POST" and path.endswith("/addtaskcollection"):
            job = path.split("/")[2]
            if job in self.deleting:
                self.requests.append(request)
                return _Response(request, 409, _batch_error("JobBeingDeleted"))
            if job not in self.jobs:
                self.requests.append(request)
                return _Response(request, 404, _batch_error("JobNotFound"))
            if self.busy:
                self.requests.append(request)
                return _Response(request, 503, _batch_error("ServerBusy"))
        return super().send(request, **kwargs)

    def sleep(self, duration: float) -> None:
        """azure-core's retries of a 503 pause through the transport: not in a test."""

    def delete(self, job: str, done: bool) -> None:
        """'az batch job delete': the job is deleting, then (``done``) gone."""
        self.jobs.discard(job)
        (self.deleting.discard if done else self.deleting.add)(job)


@pytest.mark.parametrize("deletion_done, code", [(True, "JobNotFound"), (False, "JobBeingDeleted")])
def test_a_first_submit_tried_again_after_batch_stayed_busy_does_not_create_the_deleted_job_again(
        env: tuple[Settings, BlobStore], deletion_done: bool, code: str) -> None:
    """The group's first SUBMIT created the job, then Batch answered 503 while its tasks were added, past
    ``SUBMIT_DEADLINE_S`` (``BatchUnavailable``: the shard group tries the SUBMIT again, through the outage). The
    operator deleted the job meanwhile. The next try of the same SUBMIT, ``create_job`` still true, sent Job - Add
    first, which Batch answers 201 once the deletion is done: the job was created again under its id and the group
    went on spending the GPU pool. It now finds the job's marker, sends no Job - Add, and the submission is refused
    with what happened and what to do; so is another group's first SUBMIT of the same run."""
    settings, store = env
    account = BatchAccount()
    pool = batch_pool(account)
    _fake_time(pool)
    account.busy = True
    with pytest.raises(BatchUnavailable, match="HTTP 503 ServerBusy"):
        run_submit(TASK, JOB, [("s00000", 1)], settings, store, pool)
    assert account.jobs == {JOB} and account.created == 1
    account.delete(JOB, done=deletion_done)  # 'az batch job delete', while the group waits out the outage
    account.busy = False
    for shards in ([("s00000", 1)], [("s00100", 1)]):  # the SUBMIT tried again; another group's first SUBMIT
        account.requests.clear()
        with pytest.raises(JobClosed, match=f"{JOB} was deleted \\({code}\\).*Post the same request again, without"):
            run_submit(TASK, JOB, shards, settings, store, pool)
        assert posts(account) == [("POST", f"/jobs/{JOB}/addtaskcollection")]  # no Job - Add
    assert account.created == 1 and JOB not in account.jobs


def test_a_first_submit_creates_the_job_once_and_a_later_one_submits_to_it_as_it_is(
        env: tuple[Settings, BlobStore]) -> None:
    """The marker is left by the SUBMIT that found the job in the pool, whether it created it (201) or another
    group had (409 JobExists); after it, a first SUBMIT sends no Job - Add and its tasks go to the job."""
    settings, store = env
    account = BatchAccount()
    pool = batch_pool(account)
    run_submit(TASK, JOB, [("s00000", 1)], settings, store, pool)
    assert posts(account) == [("POST", "/jobs"), ("POST", f"/jobs/{JOB}/addtaskcollection")]
    assert store.exists(settings.container, layout.pool_job_marker(JOB))
    account.requests.clear()
    run_submit(TASK, JOB, [("s00100", 1)], settings, store, pool)
    assert posts(account) == [("POST", f"/jobs/{JOB}/addtaskcollection")] and account.created == 1

    other = layout.pool_job_id(TASK, "r261206210000cd34")  # another run: a job of its own, created by an older try
    account.jobs.add(other)
    account.requests.clear()
    run_submit(TASK, other, [("s00000", 1)], settings, store, pool)  # 409 JobExists: there, so marked
    assert posts(account) == [("POST", "/jobs"), ("POST", f"/jobs/{other}/addtaskcollection")]
    assert store.exists(settings.container, layout.pool_job_marker(other))


class _Outage:
    """The pool's ``submit`` fails once as Batch's outage makes it fail (``BatchUnavailable``); all else is the
    pool's own."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.failing = pool, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    def submit(self, job_id: str, tasks: list[ShardTask]) -> None:
        if self.failing:
            self.failing = False
            raise BatchUnavailable("Azure Batch kept failing to add tasks (HTTP 503 ServerBusy)")
        self.pool.submit(job_id, tasks)


@pytest.fixture(params=["local", "simulated"])
def local_pool(request: pytest.FixtureRequest, storage_connection: str, unique_name: str) -> Iterator[Any]:
    if request.param == "local":
        yield LocalPool(storage_connection, log_container=unique_name, table=unique_name + "pool", max_concurrent=1,
                        worker_command=[sys.executable, "-c", "pass"])
    else:
        pool = SimulatedPool(storage_connection)
        yield pool
        pool._writers.shutdown(wait=True)


def test_on_the_local_pools_a_first_submit_tried_again_does_not_create_the_deleted_job_again(
        env: tuple[Settings, BlobStore], local_pool: Any) -> None:
    """LocalPool and SimulatedPool honour the same model: their ``ensure_job`` creates a deleted job again, as Batch's
    Job - Add does once the deletion is done, so the retried first SUBMIT must not ask it; the submission is refused
    (``JobClosed``, saying what to do) and the job's tasks stay gone."""
    settings, store = env
    pool = _Outage(local_pool)
    with pytest.raises(BatchUnavailable):
        run_submit(TASK, JOB, [("s00000", 1)], settings, store, pool)  # type: ignore[arg-type]
    local_pool.delete_job(JOB)  # 'az batch job delete' while the group waits out the outage
    with pytest.raises(JobClosed, match="was deleted.*Post the same request again"):
        run_submit(TASK, JOB, [("s00000", 1)], settings, store, pool)  # type: ignore[arg-type]
    assert local_pool.job_state(JOB) is JobState.deleted and local_pool.poll(JOB) == []
