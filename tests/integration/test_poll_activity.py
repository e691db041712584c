"""The poll activity (``activities.pool.run_poll``) against Azurite: it asks the pool only about what changed, once
per round, and reads progress from the workers' small counters, never from their results.

The pool is scripted behind our own ``GpuPool`` Protocol (its real implementations have their own tests,
gpu_batch/tests/test_pool_*.py); storage is Azurite.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import pytest

from activities.pool import run_poll
from adapters.blobs import BlobStore, service_client
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.pool import (JobClosed, JobDisabled, JobState, PoolChanges, ShardTask, TaskInfo, TaskResult, TaskState,
                            make_pool)
from tests.waiting import wait_until

TASK = "task-0123456789abcdef0123"


class ReadSpy(BlobStore):
    """The real adapter, recording the names of the blobs whose content it reads."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: list[str] = []

    def read_bytes(self, container: str, name: str) -> bytes:
        self.reads.append(name)
        return super().read_bytes(container, name)

    def read_bytes_or_none(self, container: str, name: str) -> bytes | None:
        self.reads.append(name)
        return super().read_bytes_or_none(container, name)


class ScriptedPool:
    def __init__(self, tasks: dict[str, TaskState], changed: list[str],
                 times: dict[str, tuple[str, str]] | None = None) -> None:
        self.tasks, self.changed = tasks, changed
        self.times = times or {}  # pool task -> (start time, end time), as the pool reports them
        self.calls: list[tuple[str, Any]] = []
        self.job = JobState.active  # what job_state answers
        self.job_asks = 0  # job_state calls (not in ``calls``: those are the task listings)

    def _info(self, tid: str) -> TaskInfo:
        state = self.tasks[tid]
        done = state is TaskState.completed
        start, end = self.times.get(tid, (None, None))
        return TaskInfo(tid, state, TaskResult.success if done else None, 0 if done else None, start_time=start,
                        end_time=end)

    def poll(self, job_id: str, task_ids: Sequence[str] | None = None) -> list[TaskInfo]:
        self.calls.append(("poll", list(task_ids or [])))
        return [self._info(t) for t in task_ids or self.tasks if t in self.tasks]

    def cursor(self) -> str:
        self.calls.append(("cursor", None))
        return "cursor-1"

    def changes(self, job_id: str, since: str) -> PoolChanges:
        self.calls.append(("changes", since))
        return PoolChanges([self._info(t) for t in self.changed], "cursor-2")

    def job_state(self, job_id: str) -> JobState:
        self.job_asks += 1
        return self.job


@pytest.fixture
def setup(storage_connection: str, unique_name: str) -> tuple[Settings, ReadSpy]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name})
    store = ReadSpy(service_client(storage_connection))
    store.ensure_container(settings.container)
    for sid in ("s00000", "s00001", "s00002"):
        store.write_json(settings.container, layout.manifest_blob(TASK, sid, 1), {"images": ["a.jpg", "b.jpg"]})
    done = {"images": [{"file": "a.jpg", "detections": []}, {"file": "b.jpg", "detections": []}]}
    store.write_json(settings.container, layout.attempt_results_blob(TASK, "s00000", 1), done)
    for sid, n in (("s00001", 1), ("s00002", 2)):  # running: a counter, and results the poll must not read
        store.write_bytes(settings.container, layout.attempt_progress_blob(TASK, sid, 1),
                          json.dumps({"images_done": n}).encode())
        store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 1), done)
    return settings, store


def test_a_round_with_a_cursor_is_one_listing_of_changes_and_counters_of_running_tasks(
        setup: tuple[Settings, ReadSpy]) -> None:
    settings, store = setup
    tasks = {"s00000-a1": TaskState.completed, "s00001-a1": TaskState.running, "s00002-a1": TaskState.running,
             "s00400-a1": TaskState.completed}  # another group's task, in the same job
    pool = ScriptedPool(tasks, changed=["s00000-a1", "s00002-a1", "s00400-a1"],
                        times={"s00000-a1": ("2026-12-02 00:00:00+00:00", "2026-12-02 00:01:05.500000+00:00")})
    out = run_poll(TASK, TASK, ["s00000-a1", "s00001-a1", "s00002-a1"], settings, store, pool,
                   since="cursor-1", running=["s00001-a1"])

    assert pool.calls == [("changes", "cursor-1")]  # one listing; nothing asked by id
    assert [row["task_id"] for row in out["completed"]] == ["s00000-a1"]  # the other group's task is not ours
    assert out["completed"][0]["covered"] == 2 and out["completed"][0]["missing"] == 0
    assert out["completed"][0]["seconds"] == 65.5  # the pool task's wall time: node time for the task's cost
    assert out["states"] == {"s00002-a1": "running"} and out["cursor"] == "cursor-2"
    # s00001 runs (the orchestrator knew), s00002 was just seen running: both counters, no running results
    assert out["progress"] == {"s00001-a1": 1, "s00002-a1": 2} and out["images_in_progress"] == 3
    assert not [n for n in store.reads if n.endswith(".results.json") and "/s00000/" not in n]


def test_a_round_without_a_cursor_asks_by_id_and_starts_a_cursor(setup: tuple[Settings, ReadSpy]) -> None:
    settings, store = setup
    pool = ScriptedPool({"s00001-a1": TaskState.active, "s00002-a1": TaskState.running}, changed=[])
    out = run_poll(TASK, TASK, ["s00001-a1", "s00002-a1"], settings, store, pool)

    assert pool.calls == [("cursor", None), ("poll", ["s00001-a1", "s00002-a1"])]  # the cursor first
    assert out["cursor"] == "cursor-1" and out["completed"] == []
    assert out["states"] == {"s00001-a1": "queued", "s00002-a1": "running"}
    assert out["progress"] == {"s00002-a1": 2} and out["running"] == 1 and out["queued"] == 1
    assert not [n for n in store.reads if n.endswith(".results.json")]
    assert out["unknown"] == []


def test_a_round_without_a_cursor_names_the_tasks_the_pool_does_not_know(setup: tuple[Settings, ReadSpy]) -> None:
    """A submission that never reached the pool: the orchestrator submits it again (orchestrations/shards.py)."""
    settings, store = setup
    pool = ScriptedPool({"s00001-a1": TaskState.running}, changed=[])
    out = run_poll(TASK, TASK, ["s00000-a1", "s00001-a1", "s00002-a1"], settings, store, pool)
    assert out["unknown"] == ["s00000-a1", "s00002-a1"] and out["states"] == {"s00001-a1": "running"}
    with_cursor = run_poll(TASK, TASK, ["s00000-a1", "s00001-a1"], settings, store, pool, since="cursor-1")
    assert "unknown" not in with_cursor  # a listing of changes says nothing about tasks that did not change


def test_a_completed_task_without_start_and_end_times_has_no_seconds(setup: tuple[Settings, ReadSpy]) -> None:
    """The cost then counts the attempt as ended but not timed (core/cost.py says so in its note)."""
    settings, store = setup
    pool = ScriptedPool({"s00000-a1": TaskState.completed}, changed=[])
    out = run_poll(TASK, TASK, ["s00000-a1"], settings, store, pool)

    assert [row["task_id"] for row in out["completed"]] == ["s00000-a1"] and "seconds" not in out["completed"][0]


def test_a_shard_batch_ended_at_its_time_limit_on_every_attempt_fails_the_task_with_the_pools_reason(
        setup: tuple[Settings, ReadSpy]) -> None:
    """batch-job-task-error-checking.md, "Constraint errors": a task past its maximum time "is marked as completed.
    The exit code is set to 0xC000013A" (-1073741510) with failureInfo code TaskEnded. The real chain: AzureBatchPool
    over Batch's answers (the transport fake of gpu_batch/tests/test_pool_azure_batch.py), the poll activity, the
    shard group replayed by the Durable SDK, the task's check. Before, only a failure without an exit code counted as
    the pool's: every attempt looked like a worker's exit, and the task went on to merge and ended
    ``completed_with_errors`` with every image an "inference failure" instead of failing with the pool's reason."""
    from gpu_batch.tests.test_pool_azure_batch import FakeBatch
    from gpu_batch.tests.test_pool_azure_batch import pool as batch_pool
    from orchestrations.shards import run_shards
    from orchestrations.task import PoolNeverRan, _fail_if_the_pool_never_ran
    from tests.orchestrations.replay import run_orchestrator

    settings, store = setup
    sid = "s00003"
    store.write_json(settings.container, layout.manifest_blob(TASK, sid, 1), {"images": ["a.jpg", "b.jpg"]})

    def timed_out(attempt: int) -> dict[str, Any]:
        return {"id": layout.pool_task_id(sid, attempt), "state": "completed",
                "stateTransitionTime": "2100-01-01T06:00:00Z",  # after any cursor the poll starts from
                "executionInfo": {"startTime": "2100-01-01T00:00:00Z", "endTime": "2100-01-01T06:00:00Z",
                                  "exitCode": -1073741510, "result": "failure", "retryCount": 0, "requeueCount": 0,
                                  "failureInfo": {"category": "servererror", "code": "TaskEnded",
                                                  "message": "The task exceeded its maximum wall clock time"}}}

    batch = batch_pool(FakeBatch(tasks={TASK: [timed_out(a) for a in (1, 2, 3)]}))

    def activities(name: str, payload: Any) -> Any:
        if name == "submit_shards":
            return {"submitted": len(payload["shards"])}
        if name == "poll_shards":
            return run_poll(TASK, payload["job_id"], payload["task_ids"], settings, store, batch,
                            since=payload.get("since"), running=payload.get("running"))
        if name == "resubmit_shards":
            return {"shards": [{"shard_id": s, "attempt": a, "missing": 2, "submitted": True}
                               for s, a in payload["shards"]]}
        raise AssertionError(f"unexpected activity {name}")

    knobs = {"max_attempts": 3, "poll_min_s": 1, "poll_max_s": 1}
    run = run_orchestrator(run_shards, {"task_id": TASK, "job_id": TASK, "knobs": knobs, "shards": [sid]},
                           activities, instance_id=f"{TASK}-shards-0000")
    assert run.status == "Completed" and (run.output["given_up"], run.output["images_done"]) == (1, 0)
    assert run.output["pool_error_shards"] == 1
    assert run.output["pool_error"] == "TaskEnded: The task exceeded its maximum wall clock time"
    with pytest.raises(PoolNeverRan, match="no image was processed") as failed:
        _fail_if_the_pool_never_ran([run.output], 2, 1)  # 2 images, 1 shard sent to the pool
    assert "TaskEnded" in str(failed.value) and "time limit, TRAPBATCH_MAX_TASK_SECONDS" in str(failed.value)


class CrashingPool(ScriptedPool):
    """Its one task ended with the worker's exit ``code`` (not an unfixable one), leaving its images missing."""

    def __init__(self, code: int, failure_code: str | None = None) -> None:
        super().__init__({"s00003-a1": TaskState.completed}, changed=[])
        self.code, self.failure_code = code, failure_code

    def _info(self, tid: str) -> TaskInfo:
        return TaskInfo(tid, TaskState.completed, TaskResult.failure, self.code,
                        failure_message=f"the worker exited with code {self.code}", log="logs/s00003-a1.log",
                        failure_code=self.failure_code)


def test_a_crashed_attempt_that_left_images_missing_carries_the_workers_own_words(
        setup: tuple[Settings, ReadSpy]) -> None:
    """A shard given up after its attempts says why in the status (orchestrations.shards, shards_given_up): for
    exits no retry fixes the worker's last error line was read, for the others (1, 4, 137...) only the pool's
    "exited with code 1" was kept. Not for a task the pool ended at its time limit: its log says nothing of that."""
    settings, store = setup
    store.write_json(settings.container, layout.manifest_blob(TASK, "s00003", 1), {"images": ["c.jpg"]})
    store.ensure_container("logs")
    store.write_bytes("logs", "s00003-a1.log", b"2026-12-05 10:00:00 INFO gpu_batch: loading\n"
                     b"2026-12-05 10:00:09 ERROR gpu_batch.worker: results cannot be written: "
                     b"403 AuthorizationFailure\n")
    for code, failure_code, said in ((4, None, "403 AuthorizationFailure"), (1, None, "403 AuthorizationFailure"),
                                     (137, "TaskEnded", None)):
        row = run_poll(TASK, TASK, ["s00003-a1"], settings, store, CrashingPool(code, failure_code))["completed"][0]
        assert row["missing"] == 1 and (said in row["worker_message"] if said else "worker_message" not in row), row


class NeverStartedPool(ScriptedPool):
    """Its one task never started: Batch's failure details name a resource URL with its SAS (a pre-processing or
    resource-file failure quotes the URL it could not read)."""

    def _info(self, tid: str) -> TaskInfo:
        return TaskInfo(tid, TaskState.completed, TaskResult.failure, None,
                        failure_message=("BlobAccessDenied: "
                                         "https://acct.blob.core.windows.net/c/b?sv=2025&sig=BATCHSECRET"),
                        failure_code="BlobAccessDenied")


def test_batchs_own_failure_message_loses_its_secrets_before_history_keeps_it(setup: tuple[Settings, ReadSpy]) -> None:
    """Batch's failure details reach the shard group's state, ``shards_given_up`` and Durable history (plain tables)
    as the poll reports them, as the worker's own words do (``core.errors.without_secrets``); the host, path and
    cause stay, and the row still says the pool ended the task (``exit_codes.pool_ended`` reads only that there is
    a message)."""
    from gpu_batch import exit_codes

    settings, store = setup
    store.write_json(settings.container, layout.manifest_blob(TASK, "s00003", 1), {"images": ["c.jpg"]})
    row = run_poll(TASK, TASK, ["s00003-a1"], settings, store,
                   NeverStartedPool({"s00003-a1": TaskState.completed}, changed=[]))["completed"][0]
    assert "BATCHSECRET" not in row["failure_message"] and "sv=2025" not in row["failure_message"], row
    assert row["failure_message"].startswith("BlobAccessDenied: https://acct.blob.core.windows.net/c/b?"), row
    assert exit_codes.pool_ended(row["exit_code"], row.get("failure_code"), row["failure_message"])


class UnreachablePool(ScriptedPool):
    """A Batch account out of reach: every call fails as the SDK's transport error does."""

    def poll(self, job_id: str, task_ids: Sequence[str] | None = None) -> list[TaskInfo]:
        raise ConnectionError("Connection aborted: the Batch endpoint did not answer")

    def cursor(self) -> str:
        raise ConnectionError("Connection aborted: the Batch endpoint did not answer")

    def changes(self, job_id: str, since: str) -> PoolChanges:
        raise ConnectionError("Connection aborted: the Batch endpoint did not answer")


@pytest.mark.parametrize("since", [None, "cursor-1"])
def test_a_cancel_is_reported_while_batch_is_out_of_reach(setup: tuple[Settings, ReadSpy], since: str | None) -> None:
    """The cancel marker (storage) is all a cancelled round needs: the group cancels its pool tasks next and ends
    (orchestrations/shards.py "Outages"), so the poll answers without asking the pool. Before, the pool's failure
    failed the poll, and a group outlasting a Batch outage did not see the cancel for up to its outage limit."""
    settings, store = setup
    store.write_json(settings.container, layout.cancel_marker(TASK), {"requested": "now"})
    out = run_poll(TASK, TASK, ["s00001-a1"], settings, store, UnreachablePool({}, changed=[]), since=since)
    assert out["cancelled"] is True and out["completed"] == []


@pytest.mark.parametrize("marker", [True, False])
def test_a_round_about_no_task_reads_the_cancel_marker_and_asks_the_pool_nothing(setup: tuple[Settings, ReadSpy],
                                                                                  marker: bool) -> None:
    """A group whose SUBMIT stays busy with nothing in flight reads the marker so (orchestrations/shards.py
    "Outages"): the answer is the marker's alone, cancelled or not, while Batch is out of reach."""
    settings, store = setup
    if marker:
        store.write_json(settings.container, layout.cancel_marker(TASK), {"requested": "now"})
    pool = UnreachablePool({}, changed=[])
    out = run_poll(TASK, TASK, [], settings, store, pool)
    assert out["cancelled"] is marker and out["completed"] == [] and out["cursor"] == ""
    assert pool.calls == []
    # given the group's cursor, it gives it back: the pool saw no newer one, and without it the next poll asks by id
    out = run_poll(TASK, TASK, [], settings, store, pool, since="cursor-7")
    assert out["cancelled"] is marker and out["completed"] == [] and out["cursor"] == "cursor-7"
    assert pool.calls == []


@pytest.mark.parametrize("max_attempts, attempt, unavailable, read", [
    (3, 1, 0, False), (1, 1, 0, True), (3, 3, 0, True),
    # attempt 3 after two exits 69 that spent no attempt (orchestrations.shards "Unavailable exits"): its first spent
    (3, 3, 2, False), (3, 5, 2, True)])
def test_an_attempt_that_exited_0_with_retryable_failures_reads_its_results_only_when_it_is_the_shards_last(
        storage_connection: str, unique_name: str, max_attempts: int, attempt: int, unavailable: int,
        read: bool) -> None:
    """The reasons of an attempt's retryable failures (``retryable_reasons``) only say why a shard was given up, which
    happens after its last attempt (``TRAPBATCH_MAX_ATTEMPTS``); an earlier one is resubmitted from its coverage
    summary. Reading them cost a read and parse of the attempt's whole results file (~10,000 entries, megabytes) in
    the poll activity for every attempt that exited 0 with one throttled read: at 10M images on a busy account,
    every one of 1,000 shards' first attempts, where the coverage summaries had kept the poll at a few small reads."""
    from activities.shard_results import shard_coverage
    from gpu_batch.formats.entries import failure_entry
    from gpu_batch.manifest import REASON_THROTTLED, coverage_summary

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name,
                                  "TRAPBATCH_MAX_ATTEMPTS": str(max_attempts)})
    store = ReadSpy(service_client(storage_connection))
    store.ensure_container(settings.container)
    sid = "s00000"
    manifest, results = layout.manifest_blob(TASK, sid, attempt), layout.attempt_results_blob(TASK, sid, attempt)
    if attempt > 1:  # the shard's every image, which the coverage is of
        store.write_json(settings.container, layout.manifest_blob(TASK, sid, 1), {"images": ["a.jpg", "b.jpg"]})
    store.write_json(settings.container, manifest, {"images": ["a.jpg", "b.jpg"]})
    entries = {"a.jpg": {"file": "a.jpg", "detections": []},
               "b.jpg": failure_entry("b.jpg", "image access failure", REASON_THROTTLED)}
    store.write_json(settings.container, results, {"images": list(entries.values())})
    etags = store.list_etags(settings.container, layout.shard_prefix(TASK, sid))
    store.write_json(settings.container, layout.attempt_coverage_blob(TASK, sid, attempt),
                     coverage_summary(entries, ["a.jpg", "b.jpg"], etags[results], etags[manifest]))
    store.reads.clear()
    # the coverage's own reads: none of the results from the summary of a first attempt; a parse of them when no
    # earlier attempt wrote any (activities.shard_results.summarized_coverage)
    shard_coverage(store, settings, TASK, sid)
    by_coverage = store.reads.count(results)
    store.reads.clear()

    tid = layout.pool_task_id(sid, attempt)
    out = run_poll(TASK, TASK, [tid], settings, store, ScriptedPool({tid: TaskState.completed}, []),
                   unavailable={tid: unavailable} if unavailable else None)

    [row] = out["completed"]
    assert (row["covered"], row["missing"]) == (1, 1)
    assert store.reads.count(results) == by_coverage + read, store.reads
    assert row.get("retryable_reasons") == ({REASON_THROTTLED: 1} if read else None)


@pytest.mark.parametrize("since", [None, "cursor-1"])
@pytest.mark.parametrize("job, raised, said", [
    (JobState.closed, JobClosed, "was terminated while 2 shard attempt"),
    (JobState.deleted, JobClosed, "was deleted while 2 shard attempt"),
    (JobState.disabled, JobDisabled, f"until 'az batch job enable --job-id {TASK}'"),
])
def test_a_round_without_news_fails_when_the_job_was_ended_or_disabled_outside_trapbatch(
        setup: tuple[Settings, ReadSpy], since: str | None, job: JobState, raised: type[Exception], said: str) -> None:
    """REST Job - Terminate: "If there are any Tasks in the Job in the active state, they will remain in the active
    state"; Job - Disable: none starts until the job is enabled. Such tasks never change, so a group whose tasks were
    all queued polled them for ever and the task never ended. A round that saw no task complete asks the job's state
    (activities.pool.check_job): closed or deleted fails the group, and so the task, saying what to do; disabled is
    a busy failure the group waits out as an outage (orchestrations/shards.py "Outages")."""
    settings, store = setup
    pool = ScriptedPool({"s00001-a1": TaskState.active, "s00002-a1": TaskState.active}, changed=[])
    pool.job = job
    with pytest.raises(raised, match=said) as failed:
        run_poll(TASK, TASK, ["s00001-a1", "s00002-a1"], settings, store, pool, since=since)
    assert pool.job_asks == 1
    if raised is JobClosed:
        assert 'Post the same request again, without "rerun" or "only_new"' in str(failed.value)


def test_a_round_with_news_or_an_active_job_goes_on_as_before(setup: tuple[Settings, ReadSpy]) -> None:
    """A round that saw a task complete does not ask (the group is not stuck); a quiet one asks once, and an active
    job is no news."""
    settings, store = setup
    pool = ScriptedPool({"s00000-a1": TaskState.completed, "s00001-a1": TaskState.active}, changed=["s00000-a1"])
    pool.job = JobState.closed  # not asked: the completion is news, handled as ever (a resubmission meets JobClosed)
    out = run_poll(TASK, TASK, ["s00000-a1", "s00001-a1"], settings, store, pool, since="cursor-1")
    assert [row["task_id"] for row in out["completed"]] == ["s00000-a1"] and pool.job_asks == 0
    quiet = ScriptedPool({"s00001-a1": TaskState.active}, changed=[])
    out = run_poll(TASK, TASK, ["s00001-a1"], settings, store, quiet, since="cursor-1")
    assert out["completed"] == [] and out["cursor"] == "cursor-2" and quiet.job_asks == 1


class DeletedJobPool(ScriptedPool):
    """A job deleted outside trapbatch: Batch answers its task listing 404 JobNotFound."""

    def changes(self, job_id: str, since: str) -> PoolChanges:
        from azure.core.exceptions import ResourceNotFoundError

        raise ResourceNotFoundError("(JobNotFound) The specified job does not exist.")


def test_a_listing_refused_because_the_job_is_gone_says_it_was_deleted(setup: tuple[Settings, ReadSpy]) -> None:
    settings, store = setup
    pool = DeletedJobPool({}, changed=[])
    pool.job = JobState.deleted
    with pytest.raises(JobClosed, match="was deleted while 1 shard attempt"):
        run_poll(TASK, TASK, ["s00001-a1"], settings, store, pool, since="cursor-1")


def test_a_localpool_job_terminated_outside_trapbatch_ends_the_poll_instead_of_leaving_it_queued(
        setup: tuple[Settings, ReadSpy], storage_connection: str, unique_name: str) -> None:
    """The same on LocalPool, which copies Batch's model (terminate_job): the running attempt ends (a completion:
    news, handled as ever), the queued one stays queued for ever, and the next quiet round fails the group."""
    settings, store = setup
    pool = make_pool("local", connection_string=storage_connection, log_container=unique_name,
                     table=unique_name + "pool", max_concurrent=1,
                     worker_command=[sys.executable, "-c", "import time; time.sleep(3600)"])
    ids = ["s00001-a1", "s00002-a1"]
    pool.submit(TASK, [ShardTask(tid, settings.container, layout.manifest_blob(TASK, tid[:6], 1), tid[:6], 1)
                       for tid in ids])
    wait_until(lambda: any(i.state is TaskState.running for i in pool.poll(TASK, ids)), 30, "a task to run")
    first = run_poll(TASK, TASK, ids, settings, store, pool)
    assert first["completed"] == [] and sorted(first["states"].values()) == ["queued", "running"]
    pool.terminate_job(TASK)
    ended = run_poll(TASK, TASK, ids, settings, store, pool, since=first["cursor"])  # the running one ended
    assert [row["exit_code"] for row in ended["completed"]] == [137]
    with pytest.raises(JobClosed, match="was terminated while 1 shard attempt"):  # the queued one never will
        run_poll(TASK, TASK, [tid for tid in ids if tid not in {r["task_id"] for r in ended["completed"]}], settings,
                 store, pool, since=ended["cursor"])
    pool.close_job(TASK)
