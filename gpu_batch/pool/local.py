"""LocalPool: shard tasks as worker subprocesses on this machine, with Azure Batch's task-state model.

Why it looks like this: the pool must survive its host (devhost, or ``func host start``) being killed. Each task runs
under a small runner (``python -m gpu_batch.pool.local_runner``) started in its own process session, which outlives
the host, streams the worker's output to a log blob and records the exit in the task table itself. Task state lives
in a table (Azurite locally), so a new LocalPool on the same table sees every task. A scheduling pass marks tasks
whose runner died or overran their limit (``ShardTask.max_seconds``, else ``max_task_seconds``) as failed and starts
queued tasks into free slots. Connection strings travel only in the runners' environment, never in the table or the
logs.

Scheduling: Azure Batch puts an active task on a node as soon as one is free, whoever polls; so does LocalPool. While
its table holds unfinished tasks, each pool object runs a watcher thread (``_watch``) that waits for the runners it
started (none lingers as a zombie) and runs a pass when one of them exits, when ``cancel`` or ``close_job`` ended
tasks, at the nearest time limit, and at least every ``SWEEP_S`` seconds (a runner another process started, before a
restart, is no child of it: its end is seen at such a pass); it ends when nothing is left. Every call (``submit``,
``poll``, ``changes``) runs a pass too and starts the watcher when work is left, so a pool object made after a restart
takes over at its first call. Why: passes ran only at the orchestrator's polls, so a queued shard waited up to
``TRAPBATCH_POLL_MIN_S`` (30 s by default) for a free slot: 41 images in 10-image shards took 155.7 s for 31.7 s of
node time, one shard starting every 30 s. Within one object one pass runs at a time (activities call from several
threads). Several objects on one table (the pool cache's, one per configuration, or another process's) each
schedule: a claim is etag-checked, so no task starts twice, but each counts busy slots from its own snapshot, so two
passes at the same moment may start a task more than ``max_concurrent`` allows, as two polls through them could.
A task the pool ends itself (its time limit, ``cancel``, ``close_job``) is reported as Azure Batch reports one: failure
code ``TaskEnded`` (``gpu_batch.exit_codes.TASK_ENDED``) and, when it had started, an exit code that is not the
worker's (``KILLED_EXIT_CODE``; batch-job-task-error-checking.md "Constraint errors": a task past its maximum time
"is marked as completed. The exit code is set to 0xC000013A"), so the app meets on this machine what it meets on Batch.
Every state change stamps the row's ``Changed`` (seconds since the epoch, this machine's clock, which the runners
share), so ``changes`` lists only the rows changed after a cursor, as AzureBatchPool filters on Batch's
``stateTransitionTime``. Closed jobs (``close_job``) are rows of a second table, ``<table>jobs``, so that every
LocalPool on the same tables refuses tasks for them, as Azure Batch refuses tasks for a terminated job.

Jobs ended or paused outside trapbatch: ``terminate_job`` is what ``az batch job stop`` does to a Batch job (its
running tasks end, TaskEnded; its active ones stay active and never start; it accepts no tasks), ``disable_job`` and
``enable_job`` what ``az batch job disable --disable-tasks wait`` and ``enable`` do (no task of it starts meanwhile;
running ones go on), ``delete_job`` what ``az batch job delete`` does (its tasks deleted, running ones killed; it
refuses tasks, ``JobClosed``, until ``ensure_job`` creates it again), and ``job_state`` reports each as
``AzureBatchPool.job_state`` does, so the app's handling of them (``activities.pool.run_poll``, ``run_submit``) is
tested on this machine. ``close_job`` after a terminate or a disable ends every unfinished task, as on Batch.

Cores: the ``max_concurrent`` workers share this machine's cores. Each worker's torch would otherwise start one
OpenMP thread per core, so ``n`` concurrent CPU workers ran ``n`` x cores threads whose spin-waits burnt CPU without
work (a 12-image CPU shard beside other load: 10.1 s of CPU with the default threads, 7.8 s with one). A worker gets
``OMP_NUM_THREADS`` = cores // ``max_concurrent`` (at least 1) unless the environment or ``worker_env`` already sets
it (``worker_threads``). On a GPU node the forward pass runs on the GPU and this changes nothing measurable.

Resident workers (``resident=True``, TRAPBATCH_WORKER_RESIDENT): each task's client hands its shard to the server of
its socket (``gpu_batch.worker.resident_protocol.default_socket_path``: one per ``CUDA_VISIBLE_DEVICES``), which runs
one shard at a time. So the pool runs at most as many tasks at once as there are such servers (``resident_servers``:
one per GPU when the pool pins each task to a GPU and the socket is the default, else one), as a Batch node with its
resident server runs one task at a time (``taskSlotsPerNode: 1`` in infra/app/batch.bicep), and says so in the log
when TRAPBATCH_LOCAL_CONCURRENCY asked for more. Why: the extra tasks were "running" while they waited on the one
server, so their wait counted against their time limit (three 6-image CPU shards with a 12 s limit, concurrency 3:
all three killed as timed out, none accepted by the server), and the server, started by the first client, kept that
client's ``cores // max_concurrent`` OpenMP threads for every shard it ran one by one (a third of the machine at
concurrency 3). The server starts before a task's clock does: while the task is ``preparing``, its runner runs the
worker command with the one argument ``--ready`` (``gpu_batch.worker.client.wait_ready``: start the server if none
answers, wait until its imports are done), at most ``prepare_seconds``, and the task's limit counts from when the
runner marks it ``running`` (``local_runner``), as a Batch node's start task runs the server before its tasks and
``maxWallClockTime`` counts from a task's start. Why: the first task's client started the server inside the task's
own limit, so on a slow machine the first shard could time out while torch was still importing (a 12 s limit
against ~2-8 s of imports before the shard's first image). A preparing task is ended at ``prepare_seconds`` past
its limit (its runner stuck), and by the heartbeat as a running one.

Host stop: a runner sent SIGINT (``python -m devhost`` stopping on Ctrl-C, devhost/stopping.py) kills its worker
and puts its task back in the queue, ``active``, as Azure Batch requeues the tasks of a node removed with
``requeue`` (``local_runner`` says where Batch documents it); the same attempt then runs again at the host's next
start and resumes from the results its worker flushed. The row names the process that started the runner
(``RequeuedBy``, ``process_identity.identity``: a record only, dropped at the next launch).
While the host stops, no pool of its process starts a task (``host_stopping``): the queued ones, and the ones handed
back, wait for the next start, not started to be stopped again. Why: the scheduler thread started the next queued
shard into the slot the requeued one freed, after devhost had asked the app's processes to stop, and that runner was
left running. The host says so itself: ``python -m devhost`` sets ``HOST_STOPPING_ENV`` to its own pid in its own
environment as the first signal arrives (devhost/stopping.py), before any SIGINT; a pool reads it at every pass, and a
value that is not its own process's pid (a child's inherited copy) does not count. Why not inferred from a runner's
SIGINT exit (as before): a SIGINT that was no host's stop (``kill -INT`` on a runner, a test's) then stopped every pool
of a process that went on serving, for good: the task handed back and every queued one were never started again. Such
a task now runs again at this pool's next pass, as Batch runs a requeued task again.
A *killed* host is unchanged: its runners go on without it.

Liveness: a running task's runner is dead when its process is gone. The row records the runner's pid with the
process's start time and this machine's boot and pid namespace (``process_identity.record``: the pool right after
the launch, the runner when it marks the task running), so a pass on this machine tells the very process from a
later one that reuses its pid, and counts it alive however old its heartbeat: a storage outage of minutes, which
stops every heartbeat, no longer ends every running task once storage answers again (each of them one attempt lost,
and a live worker racing its replacement). Only a runner that cannot be checked here (``process_identity.Liveness
.ELSEWHERE``: another machine or container, or before a reboot) is dead once its heartbeat is older than
``DEAD_AFTER_S``, and a row written before these fields (``UNKNOWN``) is judged as before: dead once its pid is gone
here or its heartbeat is that old. A pid found reused, or recorded elsewhere, is not signalled (``_kill``): the
runner's process group is not the group of that number here.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from gpu_batch import layout
from gpu_batch.exit_codes import TASK_ENDED
from gpu_batch.pool import process_identity
from gpu_batch.pool.local_runner import REQUEUED_EXIT
from gpu_batch.pool.base import (READY_ARG, JobClosed, JobState, PoolChanges, ShardTask, TaskInfo, TaskResult,
                                 TaskState, closed_outside_hint, worker_module)

logger = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
WATCH_S = 0.25  # how often the watcher looks for its runners' exits (Popen.poll: no table read)
SWEEP_S = 5.0  # the longest the watcher goes without a pass while tasks are unfinished: dead runners, other processes'
# A runner this machine cannot check (process_identity.check: UNKNOWN, e.g. a row from another machine, container or
# boot, or one written before the runner's start time was recorded) is dead once its heartbeat is this old. A runner
# it can check is judged by its process alone (module docstring: Liveness).
DEAD_AFTER_S = 60.0
# Set by a stopping host to its own pid in its own environment (module docstring: Host stop); devhost names it too
HOST_STOPPING_ENV = "DEVHOST_STOPPING"
_CLOSED_JOBS = "closed"  # the partition of the jobs table that lists closed jobs (row key: the job id)
_DISABLED_JOBS = "disabled"  # the partition that lists jobs disabled outside trapbatch (disable_job)
_DELETED_JOBS = "deleted"  # the partition that lists jobs deleted outside trapbatch (delete_job), until ensure_job
# How far a change cursor reaches back: a writer stamps ``Changed`` a moment before its write lands, so a listing
# could miss a change stamped just before its cursor; repeats within the overlap are for the caller to ignore.
CHANGE_OVERLAP_S = 5.0
# The exit code of a task the pool ended while it ran (its time limit, a cancel, the job's close): 128 + SIGKILL, what a
# shell or docker reports for a process killed so (recorded at once, whether its worker then stops within its grace,
# STOP_GRACE_S, or is killed). Azure Batch documents
# 0xC000013A for a timed-out task (a Windows code; the SDK: "an operating system-defined exit code"): any code will do
# that is not one of the worker's (gpu_batch.exit_codes), and the failure code TaskEnded says the pool ended it.
KILLED_EXIT_CODE = 128 + int(signal.SIGKILL)
# How long a task the pool ends (its cancel, its time limit, its job's close or deletion) is given to stop after its
# SIGTERM before it is killed: ``docker stop``'s default (``--time``, 10 s). Why: the pool sent SIGKILL 0.2 s after
# the SIGTERM and the runner killed its worker on the SIGTERM at once, so the worker, which flushes its results and
# exits 143 on a SIGTERM (gpu_batch.worker.__main__ SigtermStop), lost the images done since its last flush; the next
# attempt of the shard, or the task posted again after a cancel, ran them again. The runner enforces the grace itself
# (``local_runner --stop-grace``); the pool's own SIGKILL comes ``STOP_SLACK_S`` later, for a runner that did not.
STOP_GRACE_S = 10.0
STOP_SLACK_S = 5.0
# gpu_batch.worker.resident_protocol.SOCKET_ENV, not imported: the Functions app's package holds no gpu_batch/worker/
SOCKET_ENV = "TRAPBATCH_RESIDENT_SOCKET"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def worker_threads(max_concurrent: int, cores: int | None = None) -> int:
    """OpenMP threads for one of ``max_concurrent`` workers sharing ``cores`` (this machine's, by default)."""
    available = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, available // max(1, max_concurrent))


def detect_gpu_count() -> int:
    """GPUs visible to ``nvidia-smi`` (without importing torch); 0 when there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def host_stopping() -> bool:
    """Whether the host of this process is stopping (module docstring: Host stop): ``HOST_STOPPING_ENV`` holds this
    process's pid, as devhost sets it."""
    return os.environ.get(HOST_STOPPING_ENV, "") == str(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


_FOREIGN = (process_identity.Liveness.REUSED, process_identity.Liveness.ELSEWHERE)


def _killpg_unless_foreign(row: Mapping[str, Any]) -> None:
    """SIGKILL the process group of the runner ``row`` names, unless its pid is another process's now (the group
    then is not the runner's; a group whose leader is gone but whose worker lives keeps the pid from reuse)."""
    pid = int(row.get("Pid") or 0)
    if pid and process_identity.check_row(row) not in _FOREIGN:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class LocalPool:
    def __init__(self, connection_string: str, log_container: str = layout.DEFAULT_STATE_CONTAINER, table: str = "trapbatchpool",
                 max_concurrent: int | None = None, worker_env: Mapping[str, str] | None = None,
                 faults: Mapping[str, str] | None = None, max_task_seconds: int = 21600,
                 worker_command: Sequence[str] | None = None, resident: bool = False,
                 worker_tuning: Sequence[str] = (), prepare_seconds: int = 600,
                 stop_grace_seconds: float = STOP_GRACE_S) -> None:
        if len(table) > 59:  # the jobs table's name adds 4 characters; Azure table names have at most 63
            raise ValueError(f"LocalPool table name {table!r} is longer than 59 characters")
        self.connection_string = connection_string
        self.log_container = log_container
        tables = TableServiceClient.from_connection_string(connection_string)
        self.table = tables.create_table_if_not_exists(table)
        self.jobs = tables.create_table_if_not_exists(table + "jobs")
        env_conc = os.environ.get("TRAPBATCH_LOCAL_CONCURRENCY")
        self.gpus = detect_gpu_count()
        self.worker_env = dict(worker_env or {})
        self.max_concurrent = max_concurrent or (int(env_conc) if env_conc else 0) or max(1, self.gpus)
        if resident and self.max_concurrent > self.resident_servers():  # module docstring: Resident workers
            servers = self.resident_servers()
            logger.warning("LocalPool %s: runs %d task(s) at once, not %d (TRAPBATCH_LOCAL_CONCURRENCY, default one "
                           "per GPU): with the resident worker (TRAPBATCH_WORKER_RESIDENT) its tasks share %d "
                           "server(s), each running one shard at a time, and a task waiting for one would spend its "
                           "time limit waiting. For more at once: one server per GPU (leave CUDA_VISIBLE_DEVICES and "
                           "%s unset on a machine with several GPUs), or TRAPBATCH_WORKER_RESIDENT=0 (one worker "
                           "process per task)", table, servers, self.max_concurrent, servers, SOCKET_ENV)
            self.max_concurrent = servers
        self.faults = dict(faults or {})
        self.max_task_seconds = max_task_seconds
        self.worker_command = list(worker_command or [sys.executable, "-m", worker_module(resident)])
        # resident: the worker command is the resident client, which ``--ready`` alone brings its server up with
        # (module docstring: Resident workers); it runs while the task is preparing, before its clock starts
        self.prepare_command = [*self.worker_command, READY_ARG] if resident else []
        self.prepare_seconds = prepare_seconds
        self.stop_grace_seconds = stop_grace_seconds  # STOP_GRACE_S
        self.worker_tuning = list(worker_tuning)  # TRAPBATCH_WORKER_TUNING, checked by core.worker_tuning
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # runners started here, until waited for (_reap_locked)
        self._lock = threading.Lock()  # activities poll from several threads; one scheduling pass at a time
        self._watcher: threading.Thread | None = None  # the scheduler thread while tasks are unfinished (_watch)
        self._wake = threading.Event()  # a pass is wanted now (a slot freed by cancel or close_job)

    # ---------------------------------------------------------------- API
    def ensure_job(self, job_id: str) -> None:
        """Local jobs are just a partition of the task table; one ``delete_job`` deleted is created again, as Batch's
        Job - Add creates a job under the id of one whose deletion is done. Hence the app asks it only until the run's
        job was in the pool (``activities.pool._ensure_job_once``), as it asks Batch."""
        try:
            self.jobs.delete_entity(_DELETED_JOBS, job_id)
        except ResourceNotFoundError:
            pass

    def submit(self, job_id: str, tasks: Sequence[ShardTask]) -> None:
        if tasks and self._is_closed(job_id):
            raise JobClosed(f"job {job_id} is closed (close_job): it accepts no tasks, as Azure Batch refuses tasks "
                            "for a terminated job")
        if tasks and self._is_deleted(job_id):  # as AzureBatchPool words Batch's 404 JobNotFound
            raise JobClosed(f"job {job_id} was deleted (JobNotFound): the pool accepts no tasks for a job it no "
                            f"longer has; {closed_outside_hint(job_id)}")
        for task in tasks:
            entity = {"PartitionKey": job_id, "RowKey": task.task_id, "State": TaskState.active.value,
                      "Spec": json.dumps(task.to_dict()), "Submitted": now_iso(), "Changed": time.time()}
            if task.max_seconds:  # its own limit (ShardTask.max_seconds); rows without one take the pool's
                entity["MaxSeconds"] = task.max_seconds
            try:
                self.table.create_entity(entity)
            except ResourceExistsError:
                pass  # deterministic ids: a resubmission of the same attempt is a no-op
        self._schedule()

    def poll(self, job_id: str, task_ids: Sequence[str] | None = None) -> list[TaskInfo]:
        self._schedule()
        rows = [dict(e) for e in self.table.query_entities("PartitionKey eq @j", parameters={"j": job_id})]
        wanted = set(task_ids) if task_ids is not None else None
        return [self._info(r) for r in rows if wanted is None or r["RowKey"] in wanted]

    def cursor(self) -> str:
        return repr(time.time() - CHANGE_OVERLAP_S)

    def changes(self, job_id: str, since: str) -> PoolChanges:
        """The job's tasks whose ``Changed`` stamp is after ``since``: one table query on the job's partition. This
        is also a scheduling pass, as ``poll`` is."""
        try:
            after = float(since)
        except ValueError:
            raise ValueError(f"{since!r} is not a LocalPool change cursor (seconds since the epoch)") from None
        self._schedule()
        listed_at = time.time()
        rows = [dict(e) for e in self.table.query_entities("PartitionKey eq @j and Changed gt @t",
                                                           parameters={"j": job_id, "t": after})]
        return PoolChanges(tasks=[self._info(r) for r in rows],
                           cursor=repr(max(after, listed_at - CHANGE_OVERLAP_S)))

    def cancel(self, job_id: str, task_id: str | None = None) -> None:
        self._terminate(job_id, task_id, "terminated: cancelled by the user")

    def close_job(self, job_id: str) -> None:
        """Close the job as AzureBatchPool closes one: no task is added or started after this, and every unfinished
        task ends (failure code TaskEnded; an exit code for those that had started), as Batch's Task - Terminate ends
        each (AzureBatchPool terminates a job's unfinished tasks before the job: Job - Terminate alone would leave the
        active ones "active").

        The job is marked closed first, so a submission racing with this is refused, or (if it got in before the
        mark) never started by any scheduler (``_schedule_locked``), which completes it as terminated. Idempotent.
        """
        self.jobs.upsert_entity({"PartitionKey": _CLOSED_JOBS, "RowKey": job_id, "ClosedAt": now_iso()},
                                mode=UpdateMode.REPLACE)
        self._terminate(job_id, None, "terminated: the job was closed")

    def terminate_job(self, job_id: str) -> None:
        """What ``az batch job stop`` (REST Job - Terminate) does outside trapbatch: the job accepts no tasks, its
        running (and preparing) tasks end as terminated (TaskEnded), and "If there are any Tasks in the Job in the
        active state, they will remain in the active state" (azure-batch 15 ``begin_terminate_job``): never started,
        never completed. A job closed already is left as it is (Batch answers 409 JobCompleted)."""
        try:
            self.jobs.create_entity({"PartitionKey": _CLOSED_JOBS, "RowKey": job_id, "ClosedAt": now_iso(),
                                     "Outside": True})
        except ResourceExistsError:
            return
        for row in [dict(e) for e in self.table.query_entities("PartitionKey eq @j", parameters={"j": job_id})]:
            if row["State"] in (TaskState.running.value, TaskState.preparing.value):
                self._kill(row)
                self._complete(row, KILLED_EXIT_CODE, "terminated: the job was terminated", TASK_ENDED)
        self._kick()

    def delete_job(self, job_id: str) -> None:
        """What ``az batch job delete`` (REST Job - Delete) does outside trapbatch: "Deleting a Job also deletes all
        Tasks that are part of that Job" (its running ones killed), and the job is gone: ``job_state`` says
        ``deleted`` and ``submit`` refuses it (``JobClosed``, as AzureBatchPool for Batch's 404 JobNotFound) until
        ``ensure_job`` creates it again (Batch: Job - Add succeeds under the id once the deletion is done). Marked
        first, so a submission racing with this is refused or its task deleted with the others."""
        self.jobs.upsert_entity({"PartitionKey": _DELETED_JOBS, "RowKey": job_id, "DeletedAt": now_iso()},
                                mode=UpdateMode.REPLACE)
        for row in [dict(e) for e in self.table.query_entities("PartitionKey eq @j", parameters={"j": job_id})]:
            if row["State"] in (TaskState.running.value, TaskState.preparing.value):
                self._kill(row)
            try:
                self.table.delete_entity(job_id, row["RowKey"])
            except ResourceNotFoundError:
                pass
        for mark in (_CLOSED_JOBS, _DISABLED_JOBS):  # a job created again under the id starts afresh
            try:
                self.jobs.delete_entity(mark, job_id)
            except ResourceNotFoundError:
                pass
        self._kick()  # their slots are free

    def disable_job(self, job_id: str) -> None:
        """What ``az batch job disable --disable-tasks wait`` does: no task of the job starts until ``enable_job``;
        running ones go on ("No new Tasks are started under the Job until it moves back to active state", REST Job -
        Disable)."""
        self.jobs.upsert_entity({"PartitionKey": _DISABLED_JOBS, "RowKey": job_id, "DisabledAt": now_iso()},
                                mode=UpdateMode.REPLACE)

    def enable_job(self, job_id: str) -> None:
        """What ``az batch job enable`` does: the job's active tasks are scheduled again."""
        try:
            self.jobs.delete_entity(_DISABLED_JOBS, job_id)
        except ResourceNotFoundError:
            pass
        self._kick()

    def job_state(self, job_id: str) -> JobState:
        """``deleted`` once ``delete_job`` deleted it (until ``ensure_job``), ``closed`` once ``close_job`` or
        ``terminate_job`` closed it, ``disabled`` while ``disable_job`` holds, else ``active`` (a job nothing was
        submitted to is active, as ``ensure_job`` makes none)."""
        if self._is_deleted(job_id):
            return JobState.deleted
        if self._closed_row(job_id) is not None:
            return JobState.closed
        try:
            self.jobs.get_entity(_DISABLED_JOBS, job_id)
        except ResourceNotFoundError:
            return JobState.active
        return JobState.disabled

    def _closed_row(self, job_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.jobs.get_entity(_CLOSED_JOBS, job_id))
        except ResourceNotFoundError:
            return None

    def _is_closed(self, job_id: str) -> bool:
        return self._closed_row(job_id) is not None

    def _is_deleted(self, job_id: str) -> bool:
        try:
            self.jobs.get_entity(_DELETED_JOBS, job_id)
        except ResourceNotFoundError:
            return False
        return True

    def _terminate(self, job_id: str, task_id: str | None, message: str) -> None:
        """End the tasks as Batch's Terminate Task does: failure code TaskEnded, and an exit code only for a task that
        had started (one never started has none)."""
        query = "PartitionKey eq @j" + (" and RowKey eq @t" if task_id else "")
        for row in [dict(e) for e in self.table.query_entities(query, parameters={"j": job_id, "t": task_id or ""})]:
            if row["State"] != TaskState.completed.value:
                self._kill(row)
                started = row["State"] != TaskState.active.value
                self._complete(row, KILLED_EXIT_CODE if started else None, message, TASK_ENDED)
        self._kick()  # their slots are free: the next queued tasks start now, not at the next poll

    # ---------------------------------------------------------- scheduling
    def _info(self, row: Mapping[str, Any]) -> TaskInfo:
        result = row.get("Result")
        return TaskInfo(task_id=row["RowKey"], state=TaskState(row["State"]),
                        result=TaskResult(result) if result else None,
                        exit_code=row.get("ExitCode") if row.get("ExitCode") is not None else None,
                        failure_message=row.get("FailureMessage") or None, start_time=row.get("StartTime"),
                        end_time=row.get("EndTime"), log=row.get("Log"), failure_code=row.get("FailureCode") or None)

    def _schedule(self) -> None:
        with self._lock:
            if self._schedule_locked() is not None or self._children:
                self._watch_locked()

    def _kick(self) -> None:
        """Have the watcher run a pass now, starting it if none runs."""
        with self._lock:
            self._watch_locked()
        self._wake.set()

    def _watch_locked(self) -> None:
        """Start the watcher unless it runs (a watcher that died of a bug is replaced)."""
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name=f"localpool-{self.table.table_name}",
                                             daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """The scheduler that runs whoever polls (module docstring: Scheduling), until no task is left unfinished and
        no runner of this object is left to wait for; it stops under the lock, so a call that then finds work starts
        another (``_watch_locked``)."""
        next_pass = time.monotonic()
        failures = 0  # passes failed in a row
        while True:
            kicked = self._wake.wait(WATCH_S)
            if kicked:
                self._wake.clear()
            with self._lock:
                ended = self._reap_locked()
                if not (kicked or ended or time.monotonic() >= next_pass):
                    continue
                try:
                    due = self._schedule_locked()
                except Exception as exc:  # storage unreachable: the calls that need it fail and say so themselves
                    failures += 1
                    if failures >= 3 and not self._children:  # (10 + 20 s) the next call's pass starts a watcher
                        logger.info("LocalPool %s: a scheduling pass failed again (%s); the watcher stops until the "
                                    "next call", self.table.table_name, exc)
                        self._watcher = None
                        return
                    logger.info("LocalPool %s: a scheduling pass failed (%s); trying again", self.table.table_name, exc)
                    due = min(SWEEP_S * 2 ** failures, 60.0)
                else:
                    failures = 0
                    if due is None and not self._children:
                        self._watcher = None
                        return
            next_pass = time.monotonic() + (SWEEP_S if due is None else due)

    def _schedule_locked(self) -> float | None:
        """One scheduling pass over the whole table. Returns the seconds until the next pass is due (the nearest time
        limit of a running task, at most ``SWEEP_S``), or None when no task is left unfinished."""
        self._reap_locked()
        rows = []
        for e in self.table.query_entities("State ne 'completed'"):
            row = dict(e)
            row["_etag"] = e.metadata["etag"]
            rows.append(row)
        busy = 0
        due = SWEEP_S
        on_gpu: list[int] = []  # the GPU of each task still running (a slot's count: the least used takes the next)
        now = time.time()
        for row in rows:
            if row["State"] not in (TaskState.running.value, TaskState.preparing.value):
                continue
            pid = int(row.get("Pid") or 0)
            started = float(row.get("StartedAt") or now)  # the runner restamps it when it marks the task running
            beat = float(row.get("Heartbeat") or started)
            limit = int(row.get("MaxSeconds") or self.max_task_seconds)
            if row["State"] == TaskState.preparing.value:  # its clock has not started (module docstring: Resident)
                limit += self.prepare_seconds
            if now - started > limit:
                # read again first: a runner that recorded its exit after the snapshot keeps it, and its pid (maybe
                # reused since) is not signalled
                # as Batch ends a task at its maxWallClockTime: an exit code that is not the worker's, and TaskEnded
                self._refresh_and_fail_if_running(row, f"timed out: ran longer than {limit} s and was terminated "
                                                       f"(exit code {KILLED_EXIT_CODE}: killed)",
                                                  kill=True, exit_code=KILLED_EXIT_CODE, failure_code=TASK_ENDED)
            elif self._runner_dead(row, pid, now - beat):
                # a worker that outlived its runner must not run beside the next attempt: killed without a grace
                self._kill(row, grace=False)
                self._refresh_and_fail_if_running(row, "the worker's runner process died without recording an exit "
                                                       "(killed, or the machine restarted)")
            else:
                busy += 1
                due = min(due, max(0.0, started + limit - now) + 0.05)  # the limit is past just after it
                if row.get("Gpu") is not None:
                    on_gpu.append(int(row["Gpu"]))
        queued = sorted((r for r in rows if r["State"] == TaskState.active.value), key=lambda r: r.get("Submitted", ""))
        jobs = {r["PartitionKey"] for r in queued}
        closed = {job: mark for job in jobs if (mark := self._closed_row(job)) is not None}
        held = {job for job in jobs if job in closed and closed[job].get("Outside")} | {
            job for job in jobs - set(closed) if self.job_state(job) is JobState.disabled}
        waiting = 0  # queued tasks left unstarted (or claimed meanwhile by another object's pass)
        for row in queued:
            if row["PartitionKey"] in held:  # terminated or disabled outside trapbatch: left active, as on Batch
                continue  # not waiting: nothing starts it until enable_job (or close_job ends it)
            if host_stopping():  # module docstring: Host stop
                continue  # not waiting: the host's next start runs it
            if row["PartitionKey"] in closed:  # submitted while close_job ran: never started, as on Batch
                self._complete(row, None, "terminated: the job was closed", TASK_ENDED)
                continue
            if busy >= self.max_concurrent:
                waiting += 1
                continue
            gpu = self._free_gpu(on_gpu)
            if self._launch(row, gpu):
                busy += 1
                due = min(due, int(row.get("MaxSeconds") or self.max_task_seconds) + 0.05)
                if gpu is not None:
                    on_gpu.append(gpu)
            else:
                waiting += 1
        return due if busy or waiting else None

    @staticmethod
    def _runner_dead(row: Mapping[str, Any], pid: int, beat_age: float) -> bool:
        """Whether the task's runner has died (module docstring: Liveness): its recorded process is gone where this
        machine can check it, whatever its heartbeat's age; else the old rule, its pid gone here or its heartbeat
        older than ``DEAD_AFTER_S``."""
        state = process_identity.check_row(row)
        if state is process_identity.Liveness.ALIVE:
            return False
        if state in (process_identity.Liveness.GONE, process_identity.Liveness.REUSED):
            return True
        if state is process_identity.Liveness.ELSEWHERE:  # the pid here is not the runner's
            return beat_age > DEAD_AFTER_S
        return bool(pid and not _alive(pid)) or beat_age > DEAD_AFTER_S

    def _reap_locked(self) -> bool:
        """Wait for the runners this object started that have exited, and forget them; whether any had.

        Why every one, at every pass: a runner records its task's end in the table itself and then exits, so its row
        is no longer among the unfinished ones a pass reads; waiting only for the runners of rows still running left
        every runner that ended normally a <defunct> child of the host (devhost: 12 after a few tasks) until it
        exited. ``Popen.poll`` waits without blocking; the table is not read."""
        ended = [key for key, proc in self._children.items() if proc.poll() is not None]
        for key in ended:
            if self._children[key].returncode == REQUEUED_EXIT:  # module docstring: Host stop
                logger.info("LocalPool %s: runner of %s handed its task back (SIGINT)%s", self.table.table_name, key,
                            "; the host is stopping: its next start runs it" if host_stopping() else
                            "; it runs again at the next pass")
            del self._children[key]
        return bool(ended)

    def _pins_gpus(self) -> bool:
        """Whether each task is pinned to one GPU of this machine (``_free_gpu``): several GPUs, none chosen already."""
        return self.gpus >= 2 and "CUDA_VISIBLE_DEVICES" not in {**os.environ, **self.worker_env}

    def resident_servers(self) -> int:
        """How many resident workers this pool's tasks reach: one per GPU where each task is pinned to a GPU and the
        socket is the default (one per ``CUDA_VISIBLE_DEVICES``), else one (a configured socket is the same path for
        every task). Each runs one shard at a time (module docstring: Resident workers)."""
        if self._pins_gpus() and not {**os.environ, **self.worker_env}.get(SOCKET_ENV):
            return self.gpus
        return 1

    def _free_gpu(self, on_gpu: list[int]) -> int | None:
        """The GPU the next task runs on, the least used one, when this machine has several and nothing chose
        already (``CUDA_VISIBLE_DEVICES`` set for the workers); None otherwise. Why: every worker asks for ``cuda``,
        which is GPU 0 unless told, so on a two-GPU machine both shards shared GPU 0 and the second sat idle (and the
        resident workers, one per ``CUDA_VISIBLE_DEVICES``, were one server taking shards one at a time)."""
        if not self._pins_gpus():
            return None
        return min(range(self.gpus), key=lambda g: (on_gpu.count(g), g))

    def _refresh_and_fail_if_running(self, row: dict[str, Any], message: str, kill: bool = False,
                                     exit_code: int | None = None, failure_code: str | None = None) -> None:
        """End the task as failed if it is still the run ``row`` (a pass's snapshot) found: read again, it is
        started (running or preparing) by the same runner. Why: between the pass's read and this one, its runner may
        have recorded its exit, or handed the task back on SIGINT (``active``, ``Pid`` 0; module docstring: Host stop)
        and exited; such a task is queued to run again, and failing it spent an attempt of a shard that nothing had
        failed."""
        try:
            fresh = dict(self.table.get_entity(row["PartitionKey"], row["RowKey"]))
        except ResourceNotFoundError:
            return
        started = (TaskState.running.value, TaskState.preparing.value)
        if fresh["State"] in started and int(fresh.get("Pid") or 0) == int(row.get("Pid") or 0):
            if kill:
                self._kill(fresh)
            self._complete(fresh, exit_code, message, failure_code)

    def _launch(self, row: dict[str, Any], gpu: int | None = None) -> bool:
        spec = ShardTask.from_dict(json.loads(row["Spec"]))
        etag = row.pop("_etag")
        row.pop("RequeuedBy", None)  # REPLACE: a requeue's mark goes with the new start
        # ... and so does any runner the row names: the claim names none (Pid 0) until the launch records its own
        # below. Why: a runner that handed the task back before this pool recorded its pid (an early SIGINT) left
        # ``active`` with that gone runner's pid (the record landed after the requeue), and another pool object's
        # pass between this claim and the record read it as this launch's runner, dead, and failed the task
        for field in (process_identity.START_FIELD, process_identity.HOST_FIELD):
            row.pop(field, None)
        row.update(State=TaskState.preparing.value, StartTime=now_iso(), StartedAt=time.time(), Heartbeat=time.time(),
                   Changed=time.time(), Pid=0)
        if gpu is not None:
            row["Gpu"] = gpu
        try:  # etag-checked: another process's scheduler may have claimed the task first
            self.table.update_entity(row, mode=UpdateMode.REPLACE, etag=etag,
                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        fault = self.faults.get(spec.task_id) or self.faults.get(f"{spec.shard_id}/{spec.attempt}") or ""
        env = {**os.environ, **self.worker_env, "TRAPBATCH_STORAGE_CONNECTION": self.connection_string}
        env.setdefault("OMP_NUM_THREADS", str(worker_threads(self.max_concurrent)))  # module docstring: Cores
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        args = [sys.executable, "-m", "gpu_batch.pool.local_runner", "--table", self.table.table_name,
                "--job", row["PartitionKey"], "--task", row["RowKey"], "--log-container", self.log_container,
                "--fault", fault, "--stop-grace", str(self.stop_grace_seconds)]
        if self.prepare_command:
            args += ["--prepare", json.dumps(self.prepare_command), "--prepare-seconds", str(self.prepare_seconds)]
        args += ["--"] + self.worker_command + spec.worker_args() + self.worker_tuning
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self._children[row["RowKey"] + "@" + row["PartitionKey"]] = proc
        # with its start time (module docstring: Liveness), read before the child can be waited for: its pid is its own
        self.table.update_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "Pid": proc.pid,
                                  **process_identity.record(proc.pid)}, mode=UpdateMode.MERGE)
        logger.info("job %s: started task %s (runner pid %d)", row["PartitionKey"], row["RowKey"], proc.pid)
        return True

    def _kill(self, row: Mapping[str, Any], grace: bool = True) -> None:
        """Stop the runner's whole process group (its worker too): SIGTERM now, SIGKILL once the grace is over
        (``STOP_GRACE_S``, from a timer thread: a cancel of several tasks does not wait grace after grace), or at once
        without ``grace``. Unless its pid is known to be another process's now or the row was recorded elsewhere
        (``process_identity.Liveness.REUSED``, ``ELSEWHERE``): the group of that number here is not the runner's
        (module docstring: Liveness)."""
        pid = int(row.get("Pid") or 0)
        if not pid or process_identity.check_row(row) in _FOREIGN:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        if not grace:
            time.sleep(0.2)
            _killpg_unless_foreign(dict(row))
            return
        timer = threading.Timer(self.stop_grace_seconds + STOP_SLACK_S, _killpg_unless_foreign, args=(dict(row),))
        timer.daemon = True
        timer.start()

    def _complete(self, row: Mapping[str, Any], exit_code: int | None, message: str | None,
                  failure_code: str | None = None) -> None:
        """Record how the task ended; a failure code leads its message, as AzureBatchPool words Batch's failureInfo
        (``<code>: <message>``)."""
        if failure_code and message:
            message = f"{failure_code}: {message}"
        self.table.update_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"],
                                  "State": TaskState.completed.value,
                                  "Result": TaskResult.success.value if exit_code == 0 else TaskResult.failure.value,
                                  "ExitCode": exit_code, "FailureMessage": message or "",
                                  "FailureCode": failure_code or "", "EndTime": now_iso(), "Changed": time.time()},
                                 mode=UpdateMode.MERGE)
        logger.info("job %s: task %s completed (exit %s) %s", row["PartitionKey"], row["RowKey"], exit_code,
                    message or "")
