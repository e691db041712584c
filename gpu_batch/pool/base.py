"""The GPU pool contract: submit shard tasks, poll their state, cancel them, close the job when the task ends.

Mirrors Azure Batch's task-state model (active -> preparing -> running -> completed, with a success/failure result and
an exit code) so the orchestration logic is the same whether shards run on Azure Batch or on this machine
(``LocalPool``). Everything here is plain data, importable without torch or any Azure package.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Protocol, Sequence


class TaskState(str, Enum):
    active = "active"
    preparing = "preparing"
    running = "running"
    completed = "completed"


class TaskResult(str, Enum):
    success = "success"
    failure = "failure"


@dataclass(frozen=True, slots=True)
class ShardTask:
    """One attempt of one shard. ``task_id`` is deterministic (``<shard>-a<attempt>``), so resubmitting is a no-op.

    ``max_seconds``: the attempt's wall-clock limit, past which the pool ends it (0: the pool's own
    ``max_task_seconds``). Why per task: the app decides the limit once per run of a trapbatch task (its decided
    settings, ``core.settings.DecidedSettings``), while one pool object, built from the app settings of the moment,
    serves every task of the process."""

    task_id: str
    manifest_container: str
    manifest_blob: str
    shard_id: str
    attempt: int
    max_seconds: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"task_id": self.task_id, "manifest_container": self.manifest_container,
                             "manifest_blob": self.manifest_blob, "shard_id": self.shard_id, "attempt": self.attempt}
        if self.max_seconds:
            d["max_seconds"] = self.max_seconds
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ShardTask":
        return cls(str(d["task_id"]), str(d["manifest_container"]), str(d["manifest_blob"]), str(d["shard_id"]),
                   int(d["attempt"]), int(d.get("max_seconds") or 0))

    def worker_args(self) -> list[str]:
        """The worker's arguments for this attempt; the same for the CLI and the resident client (``worker_module``)."""
        return ["--manifest-container", self.manifest_container, "--manifest-blob", self.manifest_blob]


WORKER_MODULE = "gpu_batch.worker"
RESIDENT_CLIENT_MODULE = "gpu_batch.worker.client"


# What the resident client (``RESIDENT_CLIENT_MODULE``) takes, alone, to start its server and wait until it takes
# shards (``gpu_batch.worker.client.wait_ready``); LocalPool runs it while a task prepares. Here, not imported from
# the client: the Functions app's package holds no gpu_batch/worker/.
READY_ARG = "--ready"


def worker_module(resident: bool) -> str:
    """The module a pool task runs with ``python -m``, followed by ``ShardTask.worker_args()``.

    Resident: ``gpu_batch.worker.client``, which hands the shard to the node's resident worker (start-up paid once
    per node) and exits with the shard's exit code; the pool's task model is unchanged (one task per shard attempt,
    exit code = the shard's outcome, per-image resume). Otherwise the worker CLI, one fresh process per shard.
    """
    return RESIDENT_CLIENT_MODULE if resident else WORKER_MODULE


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One pool task as the pool reports it.

    ``failure_code``: the pool's code for how a failed task failed (Azure Batch's ``failureInfo.code``; the local
    pools give the same codes for what they model). Why beside the exit code: a task the pool ended at its time limit
    or by a terminate (``gpu_batch.exit_codes.TASK_ENDED``) carries an operating-system exit code as well, so the
    exit code alone cannot tell it from a worker's own exit."""

    task_id: str
    state: TaskState
    result: TaskResult | None = None
    exit_code: int | None = None
    failure_message: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    log: str | None = None
    failure_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "state": self.state.value,
                "result": self.result.value if self.result else None, "exit_code": self.exit_code,
                "failure_message": self.failure_message, "start_time": self.start_time, "end_time": self.end_time,
                "log": self.log, "failure_code": self.failure_code}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskInfo":
        return cls(str(d["task_id"]), TaskState(d["state"]), TaskResult(d["result"]) if d.get("result") else None,
                   d.get("exit_code"), d.get("failure_message"), d.get("start_time"), d.get("end_time"), d.get("log"),
                   d.get("failure_code"))


@dataclass(frozen=True, slots=True)
class PoolChanges:
    """What ``GpuPool.changes`` found: the job's tasks whose state changed after a cursor, and the next cursor.

    A cursor is opaque to callers (each pool has its own clock): pass the one a call returned to the next call. A
    change may be reported twice (cursors overlap a little, so that no change falls between two calls); a change
    is never left out.
    """

    tasks: list[TaskInfo]
    cursor: str


class JobClosed(RuntimeError):
    """A task was submitted to a job that ``close_job`` closed (on Azure Batch also one a whole-job cancel ended).

    Why an error rather than reopening the job: Azure Batch refuses tasks for a terminated job, and a closed job
    means its trapbatch task has ended, so a late submission is a bug in the caller; both pools raise this.
    """


def closed_outside_hint(job_id: str) -> str:
    """What a task whose pool job was terminated or deleted outside trapbatch fails with, after what happened: why
    it was not trapbatch (a run's job is closed only once its shards are done: ``orchestrations.task``) and what to do.
    Posted again as it was, a failed task resumes its run's generation in a pool job of its own (``api.starters``:
    each start has its own ``run``, so its own job), from the results its pool tasks wrote: no image is lost."""
    return (f"trapbatch closes a run's pool job only once its shards are done, so {job_id} was ended outside it ('az "
            "batch job stop' or 'delete', or the portal). Post the same request again, without \"rerun\" or "
            "\"only_new\": it resumes in a new pool job from the results its pool tasks wrote")


class JobState(str, Enum):
    """Where a pool job stands, as ``GpuPool.job_state`` reports it: Azure Batch's job states, folded to what a shard
    group must tell apart (azure-batch 15 ``BatchJobState``; REST Job - Disable, Job - Terminate, Job - Delete).

    ``active``: its tasks are scheduled (Batch: active, enabling). ``disabled``: none of its tasks starts until it is
    enabled again ("No new Tasks are started under the Job until it moves back to active state"; Batch: disabling,
    disabled). ``closed``: terminated; it accepts no tasks, and the tasks it left active stay active for ever ("If
    there are any Tasks in the Job in the active state, they will remain in the active state"; Batch: terminating,
    completed). ``deleted``: gone, or going (Batch: deleting, or 404 JobNotFound).
    """

    active = "active"
    disabled = "disabled"
    closed = "closed"
    deleted = "deleted"


class JobDisabled(RuntimeError):
    """The run's pool job was disabled outside trapbatch while shards were in flight: none of them starts until it is
    enabled again. A busy failure (``orchestrations.retries.BUSY_TYPES``): a shard group waits it out as an outage, up
    to its limit, with the reason in its status's ``waiting`` note, and then fails saying what to do."""


class JobQuotaReached(RuntimeError):
    """The Batch account holds as many active jobs as its quota allows, so this run's job cannot be created.

    Why its own error: Batch answers it with the same 409 as an existing job (``ActiveJobAndScheduleQuotaReached``),
    and taking it for "exists" lost the cause (the submission then failed with ``JobNotFound``).
    """


class GpuPool(Protocol):
    def ensure_job(self, job_id: str) -> None: ...

    def submit(self, job_id: str, tasks: Sequence[ShardTask]) -> None:
        """Add shard tasks to the job; ``JobClosed`` if the job was closed."""

    def poll(self, job_id: str, task_ids: Sequence[str] | None = None) -> list[TaskInfo]:
        """The state of the given tasks (all of the job's when None); unknown ids are left out."""

    def cursor(self) -> str:
        """A change cursor for now: ``changes(job, cursor())`` reports every state change after this call."""

    def changes(self, job_id: str, since: str) -> PoolChanges:
        """The job's tasks whose state changed after cursor ``since`` (one listing, whatever the job's size), with
        their current state and, for completed ones, how they ended; and the cursor for the next call."""

    def cancel(self, job_id: str, task_id: str | None = None) -> None: ...

    def job_state(self, job_id: str) -> JobState:
        """Where the job stands (``JobState``). A shard group asks when a poll round brought no news
        (``activities.pool.run_poll``): a job terminated, deleted or disabled outside trapbatch changes no task that
        was still active, so without asking, its group would wait on them for ever."""

    def close_job(self, job_id: str) -> None:
        """The job's trapbatch task has ended: stop whatever of it still runs and accept no more tasks.

        Idempotent: closing a closed (or never created) job is not an error.
        """
