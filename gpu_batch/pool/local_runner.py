"""Runs one LocalPool task: the worker command, its log, its heartbeat, and its exit, recorded in the task table.

Started by ``LocalPool`` in a new process session, so it outlives a host that is killed (a host that stops sends it
SIGINT: below). The storage connection comes from ``TRAPBATCH_STORAGE_CONNECTION`` in the environment (never from
arguments, which ``ps`` shows).

The task is ``preparing`` from its launch until the worker starts, then ``running``: the runner marks it running and
restamps ``StartedAt`` and ``StartTime`` then, so its time limit counts from there, as Batch's ``maxWallClockTime``
is "measured from the time the Task starts" (TaskConstraints.MaxWallClockTime, learn.microsoft.com
dotnet/api/microsoft.azure.batch.taskconstraints.maxwallclocktime), its ``executionInfo.startTime``. With
``--prepare`` (LocalPool's resident workers: the client's ``--ready``) a command runs first, while the task is
preparing, at most ``--prepare-seconds``, with a heartbeat: the resident server starts there, not inside the first
task's limit, as a Batch node's start task starts it before the node's tasks. A preparation that fails is logged
and the worker runs all the same (its client then runs the shard itself, as without one).

SIGINT (the host stopping: ``python -m devhost`` sends it to the processes the app started on Ctrl-C,
devhost/stopping.py) puts the task back in the queue: the worker is killed, the task is ``active`` again and its
runner exits ``REQUEUED_EXIT``, so a pool pass runs it again (a stopping host's none: its next start's), as Azure Batch
requeues the tasks of a node removed with ``nodeDeallocationOption: requeue`` ("Terminate running Task processes and
requeue the Tasks. The Tasks will run again when a Compute Node is available": ``ComputeNodeDeallocationOption``,
learn.microsoft.com dotnet/api/microsoft.azure.batch.common.computenodedeallocationoption). The same attempt runs
again and resumes from the results its worker flushed (the worker's per-image resume), so a Ctrl-C costs the shard
none of its attempts. Why: the runner ran on after devhost stopped (it outlives its host by design, for a host that is
*killed*), against an Azurite devhost had stopped, until its storage retries gave up minutes later; its shard was
then found with a dead runner and failed.

SIGTERM is LocalPool ending the task (a cancel, its time limit, its job closed), which has recorded the end
itself: the worker got the SIGTERM too (the pool signals the runner's process group) and is given ``--stop-grace``
seconds (``LocalPool.STOP_GRACE_S``, ``docker stop``'s 10) to flush its results and exit, then killed; the runner
uploads its log and exits 143 without overwriting the recorded end. A SIGINT during that grace (the host stopping
just after a cancel) changes nothing: the task has ended, so none is handed back, and the worker is not killed
before its grace is over.
"""
from __future__ import annotations

import signal

# In the runner's process only (``python -m``; LocalPool imports this module for REQUEUED_EXIT and keeps its own
# Ctrl-C): a SIGINT that comes while the libraries below load (a third of a second on an idle machine, more under
# load) is kept, and ``main`` hands the task back once it can. Why: a runner LocalPool launched just as devhost began
# to stop died of KeyboardInterrupt there, and its task, found with a dead runner at the next start, spent an attempt.
# Only the interpreter's own start-up, before this line, is left without it.
_EARLY_SIGINT: list[int] = []
if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda signum, frame: _EARLY_SIGINT.append(signum))

import argparse  # noqa: E402 - after the early SIGINT handler (above)
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError, ServiceRequestError,
                                   ServiceResponseError)
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient

from gpu_batch import layout
from gpu_batch.pool import process_identity

T = TypeVar("T")
# How long the runner waits out storage that does not answer (no connection, a timeout, a 408, 429 or 5xx) where it
# cannot go on without it: reading and marking its task running, and recording the exit. The worker waits out as long
# for its results (gpu_batch.worker.results.ResultWriter.OUTAGE_S). Why: the tables SDK gives up on a refused
# connection after ~5 s, and the runner then died: the pool found a dead runner and failed the attempt, so every shard
# launched during a storage outage lost one of its attempts, and a worker's exit that ended in one was never recorded.
STORAGE_OUTAGE_S = 300.0
STORAGE_RETRY_S = 2.0
REQUEUED_EXIT = 130  # 128 + SIGINT: the runner put its task back in the queue where it could (logged by the pool only)


def _through_outage(call: Callable[[], T]) -> T:
    """``call()``, tried again every ``STORAGE_RETRY_S`` while storage does not answer, for up to ``STORAGE_OUTAGE_S``;
    any other error (a 404, a failed condition) is the caller's at once."""
    deadline = time.monotonic() + STORAGE_OUTAGE_S
    while True:
        try:
            return call()
        except (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError):
            pass
        except HttpResponseError as exc:
            status = exc.status_code
            if status is None or (status < 500 and status not in (408, 429)):
                raise
        if time.monotonic() >= deadline:
            return call()  # the last try: its error is the caller's
        time.sleep(STORAGE_RETRY_S)


def _die_with_parent() -> None:
    """In the worker, before exec: the kernel kills it when this runner dies (PR_SET_PDEATHSIG), so a runner killed
    with SIGKILL leaves no worker running beside the next attempt of its shard. (LocalPool also kills the runner's
    whole process group when it finds the runner dead.)"""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _prepare(table: Any, key: dict[str, str], command: list[str], env: dict[str, str], seconds: float,
             log: Any) -> None:
    """Run ``command`` (its output into the task's log) while the task is preparing, beating its heartbeat so the
    pool does not take a long preparation for a dead runner; killed after ``seconds``. Never fails the task."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(5.0):
            try:
                table.update_entity({**key, "Heartbeat": time.time()}, mode=UpdateMode.MERGE)
            except Exception:  # a missed heartbeat is harmless (as in main's)
                pass

    threading.Thread(target=beat, daemon=True).start()
    started = time.monotonic()
    try:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                              timeout=seconds).returncode
        said = f"exited {code}"
    except subprocess.TimeoutExpired:
        said = f"still ran after {seconds:.0f} s and was killed"
    except OSError as exc:
        said = f"could not start: {exc}"
    finally:
        done.set()
    log.seek(0, os.SEEK_END)  # past what the command wrote through its own descriptor
    log.write(f"[local_runner] preparation ({' '.join(command)}) {said} after {time.monotonic() - started:.1f} s; "
              "the task's time limit counts from here\n".encode())
    log.flush()


def _mark_running(table: Any, key: dict[str, str]) -> bool:
    """Mark the task running unless it was ended meanwhile; False when it was. The write is conditional on the row
    read: a plain merge after a terminate's (``LocalPool._terminate``, between this runner's read and write) turned
    a completed task back to running, and its worker then ran the whole shard of a cancelled task or closed job.
    Another writer in between (the pool recording this runner's pid) only means reading again."""
    while True:
        row = _through_outage(lambda: table.get_entity(key["PartitionKey"], key["RowKey"]))
        if row.get("State") == "completed":
            return False
        try:
            # StartedAt and StartTime: the task's limit and reported start count from here (module docstring)
            _through_outage(lambda: table.update_entity(
                # Pid with its start time: LocalPool's liveness check (its module docstring: Liveness)
                {**key, "State": "running", "Pid": os.getpid(), **process_identity.record(os.getpid()),
                 "Heartbeat": time.time(), "StartedAt": time.time(),
                 "StartTime": datetime.now(timezone.utc).isoformat(),
                 "Changed": time.time()},  # Changed: LocalPool.changes
                mode=UpdateMode.MERGE, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified))
            return True
        except ResourceModifiedError:  # also a write that landed before its answer was lost: read again
            continue


def _requeue(table: Any, key: dict[str, str], launcher: str) -> bool:
    """Put this runner's task back in the queue (``active``) unless it has ended or is no longer this runner's;
    whether it did. ``launcher`` (``process_identity.identity`` of the pool's process that started this runner) is
    recorded as ``RequeuedBy``, a record only: which pools start the task again is theirs to say (``LocalPool``'s
    module docstring: Host stop; a stopping host's start none). One try, conditional on the row read: storage that
    does not answer leaves the task to the pool's dead-runner check (a failed attempt, resubmitted), never a second
    runner beside a cancelled task."""
    try:
        row = table.get_entity(key["PartitionKey"], key["RowKey"])
        if row.get("State") not in ("running", "preparing") or int(row.get("Pid") or os.getpid()) != os.getpid():
            return False
        table.update_entity({**key, "State": "active", "Pid": 0, "RequeuedBy": launcher, "Changed": time.time()},
                            mode=UpdateMode.MERGE, etag=row.metadata["etag"],
                            match_condition=MatchConditions.IfNotModified)
        return True
    except Exception:  # noqa: BLE001 - the pool's liveness check takes over (docstring)
        return False


def _upload_log(conn: str, container: str, name: str, log: Any) -> bool:
    """The worker's output to ``container/name``; whether it got there (the task's end is recorded either way: the
    log is a convenience)."""
    try:
        log.seek(0)
        blobs = BlobServiceClient.from_connection_string(conn)
        try:
            blobs.create_container(container)
        except ResourceExistsError:
            pass
        blobs.get_blob_client(container, name).upload_blob(log, overwrite=True)
        return True
    except Exception as exc:  # noqa: BLE001 - docstring
        print(f"could not upload the task log: {exc}", file=sys.stderr)
        return False


def _state(table: Any, job: str, task: str) -> str:
    return str(_through_outage(lambda: table.get_entity(job, task)).get("State", ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--table", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--log-container", required=True)
    p.add_argument("--fault", default="")
    p.add_argument("--prepare", default="", help="a JSON list: a command to run while the task is preparing")
    p.add_argument("--prepare-seconds", type=float, default=600.0)
    p.add_argument("--stop-grace", type=float, default=10.0, help="seconds between the worker's SIGTERM and its kill")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    conn = os.environ["TRAPBATCH_STORAGE_CONNECTION"]
    table = TableServiceClient.from_connection_string(conn).get_table_client(args.table)
    key = {"PartitionKey": args.job, "RowKey": args.task}
    env = dict(os.environ)
    log = tempfile.TemporaryFile()
    workers: list[subprocess.Popen[bytes]] = []
    launcher = process_identity.identity(os.getppid())  # the pool's process, read before it can have gone
    stopping = threading.Event()  # the pool ended the task and the worker was told to stop (``stop_worker``)

    def on_int(*_: object) -> None:  # the host stops (module docstring): the task goes back to the queue
        if stopping.is_set():
            # ... unless the pool ended it already (a cancel, its limit, its job closed): nothing to hand back, and
            # the worker keeps the rest of its grace to flush (devhost waits as long for its processes before it
            # kills them, devhost/stopping.py). Why: killed here, what it was flushing was lost after all
            return
        for worker in workers:
            worker.kill()
        _requeue(table, key, launcher)  # where storage does not answer, the pool's dead-runner check takes over
        sys.exit(REQUEUED_EXIT)  # a preparation running is killed by its subprocess.run, which this unwinds

    signal.signal(signal.SIGINT, on_int)
    if _EARLY_SIGINT:  # the host stopped while this runner was starting (top of the module)
        on_int()
    if args.prepare:
        if _state(table, args.job, args.task) == "completed":  # ended before this runner got going
            return 143
        _prepare(table, key, [str(a) for a in json.loads(args.prepare)], env, args.prepare_seconds, log)
    if not _mark_running(table, key):  # cancelled (or timed out, its job closed) before this runner got going
        return 143
    if args.fault:  # the shard's, not the preparation's
        env["TRAPBATCH_WORKER_FAULT"] = args.fault
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    workers.append(proc)

    from_pool: list[bool] = []  # the SIGTERM that asked for the stop came from the pool (the worker has it too)

    def stop_worker() -> None:
        """End the worker as ``docker stop`` ends a container, once ``stopping`` is set: SIGTERM, and SIGKILL once
        ``--stop-grace`` is over. Its SIGTERM flushes what it did and exits 143 (gpu_batch.worker.__main__
        SigtermStop), which a kill at once lost. Not sent again where the pool's SIGTERM asked for the stop: the pool
        signals the runner's process group, the worker in it, and a second one would end it at once (SigtermStop).
        A thread of its own, started before the handler: a signal handler that starts a thread can deadlock on
        ``threading``'s own lock when the signal lands while the main thread is starting one."""
        stopping.wait()
        if not from_pool:
            try:
                proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        if not done.wait(args.stop_grace):
            proc.kill()

    def on_term(*_: object) -> None:  # LocalPool ended the task (cancel, limit, job closed) and recorded its end
        from_pool.append(True)
        stopping.set()

    done = threading.Event()
    ended_elsewhere = threading.Event()
    threading.Thread(target=stop_worker, daemon=True).start()
    signal.signal(signal.SIGTERM, on_term)

    def beat() -> None:
        while not done.wait(5.0):
            try:
                if _state(table, args.job, args.task) == "completed":
                    # Cancelled or timed out by a pool that did not know this runner's pid yet (it is recorded just
                    # after the launch): stop the worker here, or it would run on beside the next attempt.
                    ended_elsewhere.set()
                    stopping.set()  # stop_worker sends the worker its SIGTERM
                    return
                table.update_entity({**key, "Heartbeat": time.time()}, mode=UpdateMode.MERGE)
            except Exception:  # missed: a pool on this machine checks this process itself; one elsewhere waits 60 s
                pass

    threading.Thread(target=beat, daemon=True).start()
    code = proc.wait()
    done.set()
    log_name = layout.pool_log_blob(args.job, args.task)
    if stopping.is_set() or ended_elsewhere.is_set():
        # the pool already recorded how this task ended: not overwritten; its log (what the worker said as it
        # stopped) is named beside that end
        if _upload_log(conn, args.log_container, log_name, log):
            try:
                table.update_entity({**key, "Log": f"{args.log_container}/{log_name}"}, mode=UpdateMode.MERGE)
            except Exception:  # noqa: BLE001 - the end is recorded; the log's name is a convenience
                pass
        return 143
    _upload_log(conn, args.log_container, log_name, log)
    message = "" if code == 0 else f"the worker exited with code {code}; see {args.log_container}/{log_name}"
    # FailureCode cleared: a terminate that came after the worker ended must not leave its TaskEnded on a result
    _through_outage(lambda: table.update_entity(
        {**key, "State": "completed", "Result": "success" if code == 0 else "failure", "ExitCode": code,
         "FailureMessage": message, "FailureCode": "", "Log": f"{args.log_container}/{log_name}",
         "EndTime": datetime.now(timezone.utc).isoformat(), "Changed": time.time()}, mode=UpdateMode.MERGE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
