"""LocalPool against Azurite with a stand-in worker command (the real worker has its own tests).

Its task and job model copies Azure Batch's (MicrosoftDocs/azure-docs articles/batch/batch-job-task-error-checking.md:
every task ends "completed", with a result and exit code; a terminated job accepts no more tasks).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from gpu_batch import layout
from gpu_batch.pool import JobClosed, JobState, ShardTask, TaskResult, TaskState, make_pool
from tests.waiting import wait_until

FAKE_WORKER = r'''
import os, sys, time
server = os.environ.get("FAKE_SERVER")  # as the resident client: a server to start (a file, once it is up) if none is
if server and not os.path.exists(server):
    time.sleep(float(os.environ.get("FAKE_SERVER_START_S", "0")))  # its imports
    open(server, "w").close()
if sys.argv[1:] == ["--ready"]:  # the client's --ready: the server is up, no shard
    print("ready")
    sys.exit(0)
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
blob = args["--manifest-blob"]
fault = os.environ.get("TRAPBATCH_WORKER_FAULT", "")
print("worker for", blob, "fault", fault, "conn set", bool(os.environ.get("TRAPBATCH_STORAGE_CONNECTION")),
      "threads", os.environ.get("OMP_NUM_THREADS"))
print("argv", " ".join(sys.argv[1:]))
print("gpu", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
sys.stdout.flush()
if "sleep" in blob:
    time.sleep(float(blob.split("sleep")[1].split(".")[0]) / 10)
if fault.startswith("exit:"):
    sys.exit(int(fault[5:]))
flush_dir = os.environ.get("FAKE_FLUSH_DIR")
if flush_dir and ("graceful" in blob or "stubborn" in blob):  # the real worker's SIGTERM: flush, then exit 143
    import signal
    mark = os.path.join(flush_dir, os.path.basename(blob))
    def flush(*_):
        # a flush takes a moment (FAKE_FLUSH_S, 0.5 s unless told); a kill 0.2 s after the SIGTERM left it unwritten
        time.sleep(float(os.environ.get("FAKE_FLUSH_S", "0.5")))
        open(mark + ".flushed", "w").close()
        sys.exit(143)
    signal.signal(signal.SIGTERM, flush if "graceful" in blob else signal.SIG_IGN)
    with open(mark + ".ready.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(mark + ".ready.tmp", mark + ".ready")
    time.sleep(3600)
if "hang" in blob or fault == "hang":
    time.sleep(3600)
sys.exit(0)
'''




@pytest.fixture
def pool_args(storage_connection: str, unique_name: str, tmp_path: Path,
              request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    yield {"connection_string": storage_connection, "log_container": unique_name, "table": unique_name + "pool",
           "worker_command": [sys.executable, str(script)], "worker_env": {"EXTRA": "1"}}
    _stop_runners_left(unique_name + "pool", request.node.nodeid)


def _runners_of(table: str) -> list[tuple[int, str]]:
    """The live local_runner processes of ``table``'s tasks (pid, command line), from /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = entry.read_bytes().split(b"\0")
            state = (entry.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        line = [a.decode(errors="replace") for a in args if a]
        if "gpu_batch.pool.local_runner" in line and ("--table", table) in zip(line, line[1:]) and state != "Z":
            found.append((int(entry.parent.name), " ".join(line)))
    return found


def _stop_runners_left(table: str, test: str) -> None:
    """After a test: a runner of its pool still running once its own checks have had time to end it (a heartbeat's
    look at a task ended meanwhile) is stopped with its worker, and said in a warning that names the test. Why: such
    a runner outlived the test's Azurite, and then ran on with its hung stand-in worker for up to an hour after the
    suite, unnoticed (seen once after a CI run); the warning says which test left it."""
    if not sys.platform.startswith("linux") or not _runners_of(table):
        return
    deadline = time.monotonic() + 30
    while (left := _runners_of(table)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid, _ in left:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if left:
        import warnings

        warnings.warn(f"{test} left LocalPool runners running 30 s after it ended (killed now): "
                      + "; ".join(line for _, line in left))


def task(name: str, attempt: int = 1) -> ShardTask:
    return ShardTask(f"{name}-a{attempt}", "state", f"tasks/t/{name}.json", name, attempt)


def states(pool: Any, job: str) -> dict[str, Any]:
    return {i.task_id: i for i in pool.poll(job)}


def all_done(pool: Any, job: str, n: int) -> dict[str, Any] | None:
    s = states(pool, job)
    return s if len(s) == n and all(i.state is TaskState.completed for i in s.values()) else None


def test_queues_beyond_concurrency_runs_all_and_keeps_logs(pool_args: dict[str, Any], storage_connection: str) -> None:
    pool = make_pool("local", max_concurrent=2, **pool_args)
    pool.ensure_job("job1")
    pool.submit("job1", [task("sleep10"), task("sleep11"), task("sleep12")])
    first = states(pool, "job1")
    assert sum(i.state in (TaskState.preparing, TaskState.running) for i in first.values()) == 2
    assert sum(i.state is TaskState.active for i in first.values()) == 1
    done = wait_until(lambda: all_done(pool, "job1", 3), 60, "all three tasks")
    assert all(i.result is TaskResult.success and i.exit_code == 0 for i in done.values())
    log = BlobServiceClient.from_connection_string(storage_connection).get_blob_client(
        pool_args["log_container"], layout.pool_log_blob("job1", "sleep10-a1")).download_blob().readall().decode()
    assert "worker for tasks/t/sleep10.json" in log and "conn set True" in log
    # no connection string or key in the task table
    rows = TableServiceClient.from_connection_string(storage_connection).get_table_client(pool_args["table"])
    for row in rows.list_entities():
        assert "AccountKey" not in json.dumps(dict(row), default=str)


def test_the_operators_worker_tuning_ends_every_workers_command(pool_args: dict[str, Any],
                                                                storage_connection: str) -> None:
    pool = make_pool("local", max_concurrent=1, worker_tuning=("--stage-threads", "2"), **pool_args)
    pool.ensure_job("job1")
    pool.submit("job1", [task("tuned")])
    wait_until(lambda: all_done(pool, "job1", 1), 60, "the task")
    log = _log(storage_connection, pool_args["log_container"], "job1", "tuned-a1")
    assert "argv --manifest-container state --manifest-blob tasks/t/tuned.json --stage-threads 2" in log


def _log(connection: str, container: str, job: str, task_id: str) -> str:
    return BlobServiceClient.from_connection_string(connection).get_blob_client(
        container, layout.pool_log_blob(job, task_id)).download_blob().readall().decode()


def test_concurrent_workers_share_the_cores_unless_the_environment_says_otherwise(
        pool_args: dict[str, Any], storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of ``max_concurrent`` workers gets cores // max_concurrent OpenMP threads (at least one); a value the
    operator set (environment or worker_env) is passed through unchanged."""
    from gpu_batch.pool.local import worker_threads

    assert (worker_threads(2, cores=16), worker_threads(3, cores=16), worker_threads(4, cores=2)) == (8, 5, 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("jobt", [task("shares")])
    wait_until(lambda: all_done(pool, "jobt", 1), 60, "the task")
    cores = os.cpu_count() or 1
    assert f"threads {cores}" in _log(storage_connection, pool_args["log_container"], "jobt", "shares-a1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    pool.submit("jobt", [task("told")])
    wait_until(lambda: all_done(pool, "jobt", 2), 60, "the second task")
    assert "threads 3" in _log(storage_connection, pool_args["log_container"], "jobt", "told-a1")


def test_idempotent_submit_failure_exit_code_and_fault_injection(pool_args: dict[str, Any]) -> None:
    pool = make_pool("local", max_concurrent=2, faults={"bad/1": "exit:3"}, **pool_args)
    pool.submit("job2", [task("ok"), task("bad")])
    pool.submit("job2", [task("ok")])  # same id again: not a second task
    done = wait_until(lambda: all_done(pool, "job2", 2), 60, "both tasks")
    assert done["ok-a1"].result is TaskResult.success
    assert done["bad-a1"].result is TaskResult.failure and done["bad-a1"].exit_code == 3
    assert "exited with code 3" in done["bad-a1"].failure_message


def test_runner_killed_is_detected_as_failure(pool_args: dict[str, Any]) -> None:
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("job3", [task("hang")])
    running = wait_until(lambda: (lambda s: s if s["hang-a1"].state is TaskState.running else None)(
        states(pool, "job3")), 30, "the task to run")
    row = TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"]).get_entity("job3", "hang-a1")
    os.killpg(int(row["Pid"]), signal.SIGKILL)
    done = wait_until(lambda: all_done(pool, "job3", 1), 30, "the dead runner to be noticed")
    assert done["hang-a1"].result is TaskResult.failure and "died" in done["hang-a1"].failure_message
    assert running  # it was running before the kill


def test_a_runner_killed_alone_leaves_no_worker_behind(pool_args: dict[str, Any]) -> None:
    """Only the runner dies (kill -9 of its pid, not its group): its worker must not keep running beside the next
    attempt of the shard (the kernel's parent-death signal, and LocalPool killing the runner's process group)."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("job6", [task("hang")])
    wait_until(lambda: (lambda s: s if s["hang-a1"].state is TaskState.running else None)(states(pool, "job6")),
               30, "the task to run")
    row = TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"]).get_entity("job6", "hang-a1")
    runner = int(row["Pid"])
    wait_until(lambda: _group_size(runner) >= 2, 30, "the worker to start under its runner")
    os.kill(runner, signal.SIGKILL)
    done = wait_until(lambda: all_done(pool, "job6", 1), 30, "the dead runner to be noticed")
    assert done["hang-a1"].result is TaskResult.failure and "died" in done["hang-a1"].failure_message
    wait_until(lambda: _group_size(runner) == 0, 30, "no process of the runner's group to be left")


def test_a_task_ended_by_a_pool_that_missed_the_runners_pid_stops_its_worker(pool_args: dict[str, Any]) -> None:
    """A cancel that read the row before the runner recorded its pid marks it completed without killing anything;
    the runner sees that at its next heartbeat and stops the worker instead of leaving it running."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("job7", [task("hang")])
    wait_until(lambda: (lambda s: s if s["hang-a1"].state is TaskState.running else None)(states(pool, "job7")),
               30, "the task to run")
    table = TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"])
    runner = int(table.get_entity("job7", "hang-a1")["Pid"])
    wait_until(lambda: _group_size(runner) >= 2, 30, "the worker to start under its runner")
    table.update_entity({"PartitionKey": "job7", "RowKey": "hang-a1", "State": "completed", "Result": "failure",
                         "FailureMessage": "terminated: cancelled by the user"})
    wait_until(lambda: _group_size(runner) == 0, 60, "the runner to stop its worker and exit")
    assert table.get_entity("job7", "hang-a1")["FailureMessage"] == "terminated: cancelled by the user"  # kept


def _group_size(pgid: int) -> int:
    """Live (non-zombie) processes in process group ``pgid``, from /proc."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            count += 1
    return count


def test_a_task_with_its_own_limit_is_terminated_at_it_not_at_the_pools(pool_args: dict[str, Any]) -> None:
    """``ShardTask.max_seconds``: the limit the app decided for the task's run (its decided settings), whatever the
    pool object was built with; a task without one keeps the pool's."""
    pool = make_pool("local", max_concurrent=2, max_task_seconds=21600, **pool_args)
    limited = ShardTask("hang-a1", "state", "tasks/t/hang.json", "hang", 1, max_seconds=2)
    pool.submit("job6", [limited, task("hangtoo")])
    done = wait_until(lambda: (lambda s: s if s["hang-a1"].state is TaskState.completed else None)(states(pool, "job6")),
                      30, "the task's own deadline")
    assert done["hang-a1"].result is TaskResult.failure
    assert "timed out: ran longer than 2 s" in done["hang-a1"].failure_message
    assert done["hangtoo-a1"].state is TaskState.running  # the pool's 6 h
    pool.cancel("job6")


def test_hung_task_is_terminated_at_its_deadline_and_cancel_works(pool_args: dict[str, Any]) -> None:
    """As Azure Batch ends a task at its maxWallClockTime (batch-job-task-error-checking.md, "Constraint errors": "The
    exit code is set to 0xC000013A", failure code TaskEnded): an exit code that is not the worker's (137, killed) and
    the failure code TaskEnded, which is what tells the app that the pool ended it (gpu_batch.exit_codes.pool_ended).
    Before, the task ended with no exit code and no failure code, a model Batch does not follow."""
    from gpu_batch.exit_codes import TASK_ENDED, pool_ended
    from gpu_batch.pool.local import KILLED_EXIT_CODE

    pool = make_pool("local", max_concurrent=2, max_task_seconds=2, **pool_args)
    pool.submit("job4", [task("hang")])
    done = wait_until(lambda: all_done(pool, "job4", 1), 30, "the deadline")
    ended = done["hang-a1"]
    assert ended.result is TaskResult.failure and "timed out: ran longer than 2 s" in ended.failure_message
    assert (ended.exit_code, ended.failure_code) == (KILLED_EXIT_CODE, TASK_ENDED) == (137, "TaskEnded")
    assert ended.failure_message.startswith("TaskEnded: ") and ended.end_time
    assert pool_ended(ended.exit_code, ended.failure_code, ended.failure_message)
    pool2 = make_pool("local", max_concurrent=2, **pool_args)
    pool2.submit("job5", [task("hang"), task("hangtoo")])
    wait_until(lambda: all(i.state is TaskState.running for i in states(pool2, "job5").values()), 30, "both running")
    pool2.cancel("job5", "hang-a1")
    s = states(pool2, "job5")
    assert s["hang-a1"].state is TaskState.completed and "cancelled" in s["hang-a1"].failure_message
    # Batch's Terminate Task: TaskEnded too, and (it ran) an exit code of the operating system's
    assert (s["hang-a1"].exit_code, s["hang-a1"].failure_code) == (KILLED_EXIT_CODE, TASK_ENDED)
    pool2.cancel("job5")
    assert all_done(pool2, "job5", 2)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_a_cancelled_worker_gets_its_sigterm_and_time_to_flush_before_any_kill(pool_args: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    """As ``docker stop``: SIGTERM, then SIGKILL after a grace (``STOP_GRACE_S``). The real worker flushes its
    results and exits 143 on the SIGTERM (gpu_batch.worker.__main__ SigtermStop); the stand-in here takes half a
    second to. Before, the pool's SIGKILL 0.2 s after its SIGTERM, and the runner's kill of its worker on the
    SIGTERM, left nothing flushed. The task's end is the pool's all the same (TaskEnded, 137), and its log is kept."""
    from gpu_batch.exit_codes import TASK_ENDED
    from gpu_batch.pool.local import KILLED_EXIT_CODE

    flushed = tmp_path / "flushed"
    flushed.mkdir()
    pool = make_pool("local", max_concurrent=2,
                     **{**pool_args, "worker_env": {**pool_args["worker_env"], "FAKE_FLUSH_DIR": str(flushed)}})
    pool.submit("jobg", [task("graceful"), task("graceful2")])
    wait_until(lambda: (flushed / "graceful.json.ready").exists() and (flushed / "graceful2.json.ready").exists(),
               60, "both workers to be ready for their SIGTERM")
    pool.cancel("jobg", "graceful-a1")
    s = states(pool, "jobg")
    assert s["graceful-a1"].state is TaskState.completed and "cancelled" in (s["graceful-a1"].failure_message or "")
    assert (s["graceful-a1"].exit_code, s["graceful-a1"].failure_code) == (KILLED_EXIT_CODE, TASK_ENDED)
    wait_until(lambda: (flushed / "graceful.json.flushed").exists(), 60, "the cancelled worker's flush")
    pool.close_job("jobg")  # the job's close ends the other alike
    wait_until(lambda: (flushed / "graceful2.json.flushed").exists(), 60, "the closed job's worker's flush")
    log = wait_until(lambda: states(pool, "jobg")["graceful-a1"].log, 60, "the cancelled task's log named")
    container, _, name = log.partition("/")
    text = BlobServiceClient.from_connection_string(pool_args["connection_string"]).get_blob_client(
        container, name).download_blob().readall().decode()
    assert "worker for tasks/t/graceful.json" in text


def test_a_host_stop_during_a_cancelled_workers_grace_leaves_it_its_flush(
        pool_args: dict[str, Any], storage_connection: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel, then devhost's stop (its SIGINT to the runner) while the cancelled worker flushes: the task has
    ended (the pool recorded it), so there is nothing to hand back, and the worker keeps the rest of its grace to
    flush (devhost waits as long for its processes before it kills them). Before, the runner's SIGINT handler killed
    the worker at once, and what it was flushing was lost, as the pool's quick kill lost it before the grace."""
    from gpu_batch.pool import local

    flushed = tmp_path / "flushed"
    flushed.mkdir()
    env = {**pool_args["worker_env"], "FAKE_FLUSH_DIR": str(flushed), "FAKE_FLUSH_S": "3"}
    pool = make_pool("local", max_concurrent=1, **{**pool_args, "worker_env": env})
    pool.submit("jobhs", [task("graceful")])
    wait_until(lambda: (flushed / "graceful.json.ready").exists(), 60, "the worker to be ready for its SIGTERM")
    runner = int(TableServiceClient.from_connection_string(storage_connection).get_table_client(
        pool_args["table"]).get_entity("jobhs", "graceful-a1")["Pid"])
    pool.cancel("jobhs", "graceful-a1")
    monkeypatch.setenv(local.HOST_STOPPING_ENV, str(os.getpid()))  # as devhost's stop says so, before its SIGINT
    os.kill(runner, signal.SIGINT)  # within the worker's 3 s flush
    wait_until(lambda: _gone(runner), 120, "the runner to exit")
    assert (flushed / "graceful.json.flushed").exists()
    s = states(pool, "jobhs")["graceful-a1"]
    assert s.state is TaskState.completed and "cancelled" in (s.failure_message or ""), s


def test_a_worker_that_ignores_its_sigterm_is_killed_once_its_grace_is_over(pool_args: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    """The grace is a bound: a worker that does not stop on SIGTERM (SIG_IGN here) is killed after it, by its runner
    (``--stop-grace``) or else by the pool (``STOP_SLACK_S`` later); the runner exits too."""
    flushed = tmp_path / "flushed"
    flushed.mkdir()
    pool = make_pool("local", max_concurrent=1, stop_grace_seconds=1.0,
                     **{**pool_args, "worker_env": {**pool_args["worker_env"], "FAKE_FLUSH_DIR": str(flushed)}})
    pool.submit("jobs", [task("stubborn")])
    wait_until(lambda: (flushed / "stubborn.json.ready").exists(), 60, "the worker to be ready")
    worker = int((flushed / "stubborn.json.ready").read_text())
    runner = int(TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"]).get_entity("jobs", "stubborn-a1")["Pid"])
    pool.cancel("jobs")
    assert states(pool, "jobs")["stubborn-a1"].state is TaskState.completed
    wait_until(lambda: _gone(worker) and _gone(runner), 120, "the worker and its runner to be ended after the grace")
    assert not (flushed / "stubborn.json.flushed").exists()


def test_a_new_pool_object_on_the_same_table_sees_and_finishes_running_tasks(pool_args: dict[str, Any]) -> None:
    first = make_pool("local", max_concurrent=1, **pool_args)
    first.submit("job6", [task("sleep15"), task("sleep5")])
    del first  # the host that launched them is gone; the runners live on
    second = make_pool("local", max_concurrent=1, **pool_args)
    done = wait_until(lambda: all_done(second, "job6", 2), 60, "both tasks via the new pool object")
    assert all(i.result is TaskResult.success for i in done.values())


def test_close_job_ends_its_tasks_and_refuses_new_ones(pool_args: dict[str, Any]) -> None:
    """As AzureBatchPool closes a job: its unfinished tasks are terminated (Batch's Task - Terminate: failure code
    TaskEnded, an exit code for the one that ran), the never-started ones too (Job - Terminate alone would leave them
    "active"), and the job accepts no more tasks."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("job7", [task("hang"), task("hangtoo")])  # one runs, one waits for the free slot
    wait_until(lambda: states(pool, "job7")["hang-a1"].state is TaskState.running, 30, "the first task to run")
    pid = int(TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"]).get_entity("job7", "hang-a1")["Pid"])
    pool.close_job("job7")
    done = all_done(pool, "job7", 2)
    assert done and all(i.result is TaskResult.failure and "job was closed" in (i.failure_message or "")
                        and i.failure_code == "TaskEnded" for i in done.values())
    assert (done["hang-a1"].exit_code, done["hangtoo-a1"].exit_code) == (137, None)  # it ran; it never started
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 30, "the runner to be gone")
    with pytest.raises(JobClosed, match="job7 is closed"):
        pool.submit("job7", [task("late")])
    pool.close_job("job7")  # idempotent
    pool.close_job("never-used")  # nothing to close: no error
    other = make_pool("local", max_concurrent=1, **pool_args)  # every pool object on the same tables agrees
    with pytest.raises(JobClosed):
        other.submit("job7", [task("later", 2)])
    other.submit("job8", [task("ok")])  # other jobs are untouched
    assert wait_until(lambda: all_done(other, "job8", 1), 60, "job8's task")["ok-a1"].result is TaskResult.success


def test_a_task_that_slipped_in_while_the_job_closed_never_starts(pool_args: dict[str, Any]) -> None:
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.close_job("job9")
    # A submission that checked the job before close_job marked it, and wrote its task after: the row as submit writes it
    TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"]).create_entity({"PartitionKey": "job9", "RowKey": "slow-a1", "State": "active",
                                           "Spec": json.dumps(task("slow").to_dict()), "Submitted": "x"})
    info = states(pool, "job9")["slow-a1"]
    assert info.state is TaskState.completed and "job was closed" in (info.failure_message or "")
    assert info.start_time is None  # never started


def test_a_job_terminated_outside_trapbatch_leaves_its_queued_tasks_active_as_batch_does(
        pool_args: dict[str, Any]) -> None:
    """``az batch job stop`` (REST Job - Terminate; azure-batch 15 ``begin_terminate_job``): the running task
    ends (TaskEnded, an exit code), the active one "will remain in the active state" and never starts, the job
    accepts no tasks and reports ``closed`` (what the app asks when a poll brings no news: activities.pool.check_job);
    trapbatch's close_job afterwards ends the task left active, as AzureBatchPool's does."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("job10", [task("hang"), task("hangtoo")])  # one runs, one waits for the slot
    wait_until(lambda: states(pool, "job10")["hang-a1"].state is TaskState.running, 30, "the first task to run")
    assert pool.job_state("job10") is JobState.active
    pool.terminate_job("job10")
    ended = states(pool, "job10")["hang-a1"]
    assert (ended.state, ended.failure_code, ended.exit_code) == (TaskState.completed, "TaskEnded", 137)
    time.sleep(1.0)  # the freed slot: a pass (the terminate's kick, the polls) would have started the other by now
    assert states(pool, "job10")["hangtoo-a1"].state is TaskState.active
    assert pool.job_state("job10") is JobState.closed
    with pytest.raises(JobClosed, match="job10 is closed"):
        pool.submit("job10", [task("late")])
    pool.terminate_job("job10")  # terminated already: left as it is
    pool.close_job("job10")
    left = states(pool, "job10")["hangtoo-a1"]
    assert (left.state, left.failure_code, left.exit_code) == (TaskState.completed, "TaskEnded", None)


def test_a_job_disabled_outside_trapbatch_starts_no_task_until_it_is_enabled(pool_args: dict[str, Any]) -> None:
    """``az batch job disable --disable-tasks wait`` (REST Job - Disable): "No new Tasks are started under the Job
    until it moves back to active state"; the job reports ``disabled`` until ``enable``."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.disable_job("job11")
    pool.submit("job11", [task("ok")])
    time.sleep(1.0)
    assert states(pool, "job11")["ok-a1"].state is TaskState.active
    assert pool.job_state("job11") is JobState.disabled
    pool.enable_job("job11")
    assert pool.job_state("job11") is JobState.active
    assert wait_until(lambda: all_done(pool, "job11", 1), 60, "the task to run")["ok-a1"].result is TaskResult.success


def test_a_job_deleted_outside_trapbatch_loses_its_tasks_and_refuses_more_until_created_again(
        pool_args: dict[str, Any]) -> None:
    """``az batch job delete`` (REST Job - Delete: "Deleting a Job also deletes all Tasks that are part of that Job"):
    the running task is killed and every task is gone, the job reports ``deleted`` and refuses tasks (``JobClosed``,
    as AzureBatchPool for Batch's 404 JobNotFound, saying what to do) until ``ensure_job`` creates it again, as Batch's
    Job - Add does under the id once the deletion is done (what a SUBMIT with ``create_job`` does: activities.pool)."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.ensure_job("job12")
    pool.submit("job12", [task("hang"), task("hangtoo")])
    wait_until(lambda: states(pool, "job12")["hang-a1"].state is TaskState.running, 30, "the first task to run")
    pool.delete_job("job12")
    assert states(pool, "job12") == {} and pool.job_state("job12") is JobState.deleted
    with pytest.raises(JobClosed, match="job12 was deleted.*Post the same request again"):
        pool.submit("job12", [task("late")])
    assert states(pool, "job12") == {}
    pool.ensure_job("job12")
    assert pool.job_state("job12") is JobState.active
    pool.submit("job12", [task("ok")])
    assert wait_until(lambda: all_done(pool, "job12", 1), 60, "the task to run")["ok-a1"].result is TaskResult.success


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_changes_lists_only_what_changed_after_the_cursor(pool_args: dict[str, Any], storage_connection: str) -> None:
    """The model AzureBatchPool.changes has (Batch's stateTransitionTime filter): a cursor, then only the tasks whose
    state changed after it, each change reported (a repeat within the overlap is allowed, a loss is not)."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.ensure_job("jobc")
    pool.submit("jobc", [task("sleep5"), task("sleep6")])
    wait_until(lambda: all_done(pool, "jobc", 2), 60, "the first two tasks")
    rows = TableServiceClient.from_connection_string(storage_connection).get_table_client(pool_args["table"])
    last = max(float(r["Changed"]) for r in rows.query_entities("PartitionKey eq 'jobc'"))
    cursor = repr(last)  # right after their last change: they are old news
    assert pool.changes("jobc", cursor).tasks == []
    assert float(pool.cursor()) < last + 5.0  # a fresh cursor reaches back (the overlap) and would report them
    pool.submit("jobc", [task("sleep20")])
    seen: dict[str, list[str]] = {}

    def finished() -> bool:
        nonlocal cursor
        found = pool.changes("jobc", cursor)
        assert float(found.cursor) >= float(cursor)  # the cursor never goes back
        cursor = found.cursor
        for info in found.tasks:
            seen.setdefault(info.task_id, []).append(info.state.value)
        return "completed" in seen.get("sleep20-a1", [])

    wait_until(finished, 60, "the new task to complete")
    assert set(seen) == {"sleep20-a1"}  # the two old tasks never came back
    assert "running" in seen["sleep20-a1"] or "preparing" in seen["sleep20-a1"]
    with pytest.raises(ValueError, match="not a LocalPool change cursor"):
        pool.changes("jobc", "2026-12-01T10:00:00Z")


def test_on_a_machine_with_several_gpus_each_running_task_gets_the_least_used_one(
        pool_args: dict[str, Any], storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker asks for ``cuda``, GPU 0 unless told: on a two-GPU machine both shards shared it."""
    import gpu_batch.pool.local as local

    monkeypatch.setattr(local, "detect_gpu_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pool = make_pool("local", max_concurrent=2, **pool_args)
    pool.ensure_job("jobg")
    pool.submit("jobg", [task("sleep30"), task("sleep31"), task("sleep2")])
    wait_until(lambda: all_done(pool, "jobg", 3), 60, "all three tasks")
    blobs = BlobServiceClient.from_connection_string(storage_connection)

    def gpu(name: str) -> str:
        log = blobs.get_blob_client(pool_args["log_container"], layout.pool_log_blob("jobg", f"{name}-a1"))
        return next(line.split()[1] for line in log.download_blob().readall().decode().splitlines()
                    if line.startswith("gpu "))

    assert {gpu("sleep30"), gpu("sleep31")} == {"0", "1"} and gpu("sleep2") in ("0", "1")
    chosen = make_pool("local", max_concurrent=2, **{**pool_args, "worker_env": {"CUDA_VISIBLE_DEVICES": "1"}})
    assert chosen._free_gpu([]) is None  # the operator chose: left alone


def test_a_task_that_recorded_its_exit_after_the_snapshot_keeps_it_at_its_deadline(pool_args: dict[str, Any]) -> None:
    """The deadline check worked from the scheduler's snapshot: a runner that recorded its exit just after it was
    overwritten with "timed out" (no exit code), and its pid, perhaps reused since, was signalled."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("job7", [task("sleep1")])
    done = wait_until(lambda: all_done(pool, "job7", 1), 30, "the task")
    assert done["sleep1-a1"].exit_code == 0
    snapshot = dict(pool.table.get_entity("job7", "sleep1-a1"))
    snapshot["State"] = TaskState.running.value  # as the scheduler read it a moment before the runner finished
    killed: list[Any] = []
    pool._kill = killed.append  # type: ignore[method-assign]
    pool._refresh_and_fail_if_running(snapshot, "timed out: ran longer than 1 s and was terminated", kill=True)
    after = states(pool, "job7")["sleep1-a1"]
    assert after.exit_code == 0 and after.result is TaskResult.success and killed == []


def _zombie_children() -> set[int]:
    """This process's children that have exited and were never waited for (state Z), from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


def test_finished_runners_are_reaped_not_left_as_zombies(pool_args: dict[str, Any], storage_connection: str) -> None:
    """A runner records its task's end in the table and then exits; the scheduler only looked at (and waited for) the
    runners of tasks still running, so every runner that ended normally stayed a <defunct> child of the host (devhost
    showed 12 after a few tasks) until the host exited."""
    pool = make_pool("local", max_concurrent=2, **pool_args)
    pool.submit("jobz", [task("sleep2"), task("sleep3"), task("sleep4")])
    wait_until(lambda: all_done(pool, "jobz", 3), 60, "the three tasks")
    rows = TableServiceClient.from_connection_string(storage_connection).get_table_client(pool_args["table"])
    runners = {int(r["Pid"]) for r in rows.query_entities("PartitionKey eq 'jobz'")}
    assert len(runners) == 3
    wait_until(lambda: states(pool, "jobz") and not runners & _zombie_children(), 30,
               "the pool to wait for its ended runners")


def _rows(pool_args: dict[str, Any], job: str) -> dict[str, dict[str, Any]]:
    """The job's task rows read from the table itself: the pool object is not called (no poll, no scheduling pass)."""
    table = TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"])
    return {r["RowKey"]: dict(r) for r in table.query_entities("PartitionKey eq @j", parameters={"j": job})}


def _rows_completed(pool_args: dict[str, Any], job: str, n: int) -> dict[str, dict[str, Any]] | None:
    rows = _rows(pool_args, job)
    return rows if len(rows) == n and all(r["State"] == "completed" for r in rows.values()) else None


def test_queued_tasks_start_as_a_slot_frees_without_anyone_polling(pool_args: dict[str, Any]) -> None:
    """Azure Batch schedules an active task onto a node as soon as one is free, whoever polls. LocalPool started a
    queued task only in a scheduling pass, run when the orchestrator polled (TRAPBATCH_POLL_MIN_S, 30 s by default):
    41 images in 10-image shards took 155.7 s for 31.7 s of node time, one shard starting every 30 s. Here nothing
    polls after the submission, which starts the first task only (concurrency 1)."""
    from datetime import datetime

    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("jobq", [task("sleep3"), task("sleep4"), task("sleep5")])
    rows = wait_until(lambda: _rows_completed(pool_args, "jobq", 3), 60, "all three tasks, with no poll")
    assert all(r["Result"] == "success" and r["ExitCode"] == 0 for r in rows.values())
    order = sorted(rows.values(), key=lambda r: float(r["StartedAt"]))
    for before, after in zip(order, order[1:]):  # still one at a time: each started after the one before ended
        assert float(after["StartedAt"]) >= datetime.fromisoformat(before["EndTime"]).timestamp()
    runners = {int(r["Pid"]) for r in rows.values()}
    wait_until(lambda: not runners & _zombie_children(), 30, "the ended runners to be waited for, with no poll")
    wait_until(lambda: pool._watcher is None, 30, "the pool's watcher to end, nothing being left")


def test_a_slot_freed_by_a_time_limit_starts_the_next_task_without_a_poll(pool_args: dict[str, Any]) -> None:
    """Batch ends a task at its maxWallClockTime whoever polls, and its node takes the next task; LocalPool checked
    the limit only in a scheduling pass, so without a poll a hung task held its slot for ever."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    limited = ShardTask("hang-a1", "state", "tasks/t/hang.json", "hang", 1, max_seconds=2)
    pool.submit("jobl", [limited, task("sleep2")])
    rows = wait_until(lambda: _rows_completed(pool_args, "jobl", 2), 60, "both tasks, with no poll")
    assert (rows["hang-a1"]["ExitCode"], rows["hang-a1"]["FailureCode"]) == (137, "TaskEnded")
    assert "timed out: ran longer than 2 s" in rows["hang-a1"]["FailureMessage"]
    assert rows["sleep2-a1"]["ExitCode"] == 0


def test_a_slot_freed_by_a_cancel_starts_the_next_task_without_a_poll(pool_args: dict[str, Any]) -> None:
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("jobk", [task("hang"), task("sleep2")])
    wait_until(lambda: _rows(pool_args, "jobk")["hang-a1"]["State"] == "running", 30, "the first task to run")
    pool.cancel("jobk", "hang-a1")
    rows = wait_until(lambda: _rows_completed(pool_args, "jobk", 2), 60, "the queued task, with no poll")
    assert (rows["hang-a1"]["ExitCode"], rows["hang-a1"]["FailureCode"]) == (137, "TaskEnded")
    assert rows["sleep2-a1"]["ExitCode"] == 0


def test_the_watcher_gives_up_on_unreachable_storage_and_the_next_call_starts_it_again(
        pool_args: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage gone (Azurite stopped, a test module's at its end): the watcher tries a few passes, then stops rather
    than try for ever; the next call through the pool runs a pass of its own and starts it again."""
    import gpu_batch.pool.local as local

    monkeypatch.setattr(local, "SWEEP_S", 0.01)
    pool = make_pool("local", max_concurrent=1, **pool_args)
    passes: list[float] = []

    def unreachable() -> float | None:
        passes.append(1.0)
        raise ConnectionError("storage away")

    monkeypatch.setattr(pool, "_schedule_locked", unreachable)
    pool.cancel("jobu")  # a cancel wants a pass: it starts the watcher
    wait_until(lambda: pool._watcher is None, 30, "the watcher to give up")
    assert len(passes) == 3
    monkeypatch.undo()
    pool.submit("jobu", [task("hang")])
    assert pool._watcher is not None and pool._watcher.is_alive()  # a task runs: watched again
    pool.cancel("jobu")
    wait_until(lambda: pool._watcher is None, 30, "the watcher to end, nothing being left")


def test_a_task_ended_between_the_runners_check_and_its_start_stays_ended(
        storage_connection: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminate (a cancel, the job closed: LocalPool._terminate) that lands between the runner's read of its
    task and its "running" write was overwritten by that plain merge: the task turned back to running and its worker
    ran the whole shard. The write is now conditional on the row read, so the runner sees the end and stops."""
    from azure.data.tables import TableClient, UpdateMode

    from gpu_batch.pool import local_runner

    table = TableServiceClient.from_connection_string(storage_connection).get_table_client(unique_name + "race")
    table.create_table()
    table.create_entity({"PartitionKey": "job", "RowKey": "t-a1", "State": "preparing"})
    real_get, ended = TableClient.get_entity, []

    def get_then_terminated(self: TableClient, *args: Any, **kwargs: Any) -> Any:
        row = real_get(self, *args, **kwargs)
        if not ended:  # the pool's terminate, right after this read
            ended.append(True)
            table.update_entity({"PartitionKey": "job", "RowKey": "t-a1", "State": "completed",
                                 "FailureCode": "TaskEnded"}, mode=UpdateMode.MERGE)
        return row

    monkeypatch.setattr(TableClient, "get_entity", get_then_terminated)
    monkeypatch.setenv("TRAPBATCH_STORAGE_CONNECTION", storage_connection)
    marker = tmp_path / "worker-ran"
    code = local_runner.main(["--table", table.table_name, "--job", "job", "--task", "t-a1", "--log-container",
                              unique_name, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert code == 143 and not marker.exists()
    row = real_get(table, "job", "t-a1")
    assert row["State"] == "completed" and row["FailureCode"] == "TaskEnded"


def test_resident_workers_run_one_task_per_server_with_all_its_cores(
        pool_args: dict[str, Any], storage_connection: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """With the resident worker every task hands its shard to the one server of its socket (one per
    ``CUDA_VISIBLE_DEVICES``), which runs one shard at a time: three slots on a CPU machine made two tasks "running"
    while they waited, their wait counting against their time limit (reproduced: three 6-image shards, 12 s limit,
    all three killed as timed out, none accepted), and the server kept the first client's cores // 3 threads. The
    pool now runs one task per server, as a Batch node with taskSlotsPerNode 1, each with the server's cores."""
    import gpu_batch.pool.local as local

    monkeypatch.setattr(local, "detect_gpu_count", lambda: 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("TRAPBATCH_RESIDENT_SOCKET", raising=False)
    with caplog.at_level("WARNING", logger="gpu_batch.pool.local"):
        pool = make_pool("local", max_concurrent=3, resident=True, **pool_args)
    assert pool.max_concurrent == 1  # type: ignore[attr-defined]
    assert "runs 1 task(s) at once, not 3" in caplog.text and "TRAPBATCH_WORKER_RESIDENT=0" in caplog.text
    pool.submit("jobr", [task("sleep8"), task("sleep9"), task("sleep7")])
    done = wait_until(lambda: all_done(pool, "jobr", 3), 60, "the three tasks")
    spans = sorted((i.start_time, i.end_time) for i in done.values())
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans  # one at a time
    cores = os.cpu_count() or 1
    assert f"threads {cores}" in _log(storage_connection, pool_args["log_container"], "jobr", "sleep7-a1")
    assert make_pool("local", max_concurrent=3, **pool_args).max_concurrent == 3  # type: ignore[attr-defined]

    monkeypatch.setattr(local, "detect_gpu_count", lambda: 2)  # one server per GPU: the pool pins each task to one
    assert make_pool("local", max_concurrent=4, resident=True, **pool_args).max_concurrent == 2  # type: ignore
    assert make_pool("local", max_concurrent=1, resident=True, **pool_args).max_concurrent == 1  # type: ignore
    for chosen in ({"CUDA_VISIBLE_DEVICES": "0,1"}, {"TRAPBATCH_RESIDENT_SOCKET": "/run/tb/w.sock"}):  # one server
        one = make_pool("local", max_concurrent=2, resident=True, **{**pool_args, "worker_env": chosen})
        assert one.max_concurrent == 1  # type: ignore[attr-defined]


def test_the_resident_servers_start_is_paid_while_the_first_task_prepares_not_inside_its_limit(
        pool_args: dict[str, Any], storage_connection: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first task's client started the resident server inside the task's own time limit, so a slow machine
    could end the first shard as timed out while torch still imported. The runner now starts it first, with the
    client's ``--ready``, while the task is ``preparing`` (as a Batch node's start task runs it before the node's
    tasks), and the limit counts from ``running``, as Batch's maxWallClockTime counts from the task's start. Here a
    4 s server start against a 3 s limit: the first task timed out; now both tasks succeed."""
    import gpu_batch.pool.local as local

    monkeypatch.setattr(local, "detect_gpu_count", lambda: 0)
    server = tmp_path / "server-up"
    env = {**pool_args["worker_env"], "FAKE_SERVER": str(server), "FAKE_SERVER_START_S": "4"}
    pool = make_pool("local", resident=True, max_task_seconds=3, **{**pool_args, "worker_env": env})
    pool.submit("jobp", [task("first"), task("second")])
    wait_until(lambda: states(pool, "jobp")["first-a1"].state is TaskState.preparing and not server.exists(), 20,
               "the first task preparing while its server starts")
    done = wait_until(lambda: all_done(pool, "jobp", 2), 60, "both tasks")
    assert all(i.result is TaskResult.success for i in done.values()), {k: i.failure_message for k, i in done.items()}
    up = server.stat().st_mtime
    first = done["first-a1"]
    assert datetime.fromisoformat(first.start_time or "").timestamp() >= up  # its clock started once the server was up
    log = _log(storage_connection, pool_args["log_container"], "jobp", "first-a1")
    assert "ready" in log and "exited 0 after" in log and "the task's time limit counts from here" in log


def test_a_runner_started_while_storage_is_away_waits_for_it_then_runs_and_records_its_task(tmp_path: Path) -> None:
    """Storage (Azurite, its state on disk) is stopped as the runner starts, and started again ~12 s later: the runner
    must mark its task running once storage answers, run the command and record its exit. It died at its first
    table read instead (the tables SDK gives up on a refused connection after ~5 s), so the pool later found a dead
    runner and failed the attempt: every shard launched during a storage outage cost one of its attempts."""
    import subprocess
    import time

    from devhost.azurite import PortReservation, start_azurite

    location = tmp_path / "azurite"
    held = PortReservation(3)  # no other pytest worker is handed these ports while storage is away
    azurite = start_azurite(location=location, ports=held.ports)
    ports = held.ports
    connection = azurite.connection_string
    TableServiceClient.from_connection_string(connection).create_table("outagepool").create_entity(
        {"PartitionKey": "job", "RowKey": "t-a1", "State": "preparing"})
    azurite.stop()
    runner = subprocess.Popen(
        [sys.executable, "-m", "gpu_batch.pool.local_runner", "--table", "outagepool", "--job", "job", "--task",
         "t-a1", "--log-container", "logs", "--", sys.executable, "-c", "print('worked')"],
        env={**os.environ, "TRAPBATCH_STORAGE_CONNECTION": connection}, cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(12)
        azurite = start_azurite(location=location, ports=ports)
        out = runner.communicate(timeout=180)[0].decode(errors="replace")
        row = TableServiceClient.from_connection_string(connection).get_table_client("outagepool").get_entity(
            "job", "t-a1")
        assert (runner.returncode, row["State"], row["Result"], row["ExitCode"]) == (0, "completed", "success", 0), \
            out[-3000:]
    finally:
        runner.kill()
        azurite.stop()
        held.close()


def _running_row(pool_args: dict[str, Any], job: str, task_id: str, pid: int, heartbeat_age: float,
                 **fields: Any) -> None:
    """A running task as a runner records it (``Pid`` and, when given, ``process_identity.record``'s fields), written
    straight into the table: its pid is a process of the test's choosing."""
    import time

    TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"]).create_entity({"PartitionKey": job, "RowKey": task_id, "State": "running",
                                           "Spec": json.dumps(task(task_id.rsplit("-a", 1)[0]).to_dict()),
                                           "Submitted": "x", "StartedAt": time.time(), "Pid": pid,
                                           "Heartbeat": time.time() - heartbeat_age, **fields})


def test_a_live_runner_whose_heartbeat_is_old_is_not_dead(pool_args: dict[str, Any]) -> None:
    """A storage outage stops every heartbeat (the runner writes it to the table) for its length: a runner whose
    process still runs on this machine is alive however old its heartbeat, not ended at 60 s (every running shard an
    attempt lost once storage answered again, its live worker racing the next attempt). Here the runner is stopped
    (SIGSTOP: alive, writing nothing) and its heartbeat set two minutes back."""
    import time

    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("jobl", [task("hang")])
    wait_until(lambda: states(pool, "jobl")["hang-a1"].state is TaskState.running, 30, "the task to run")
    table = TableServiceClient.from_connection_string(pool_args["connection_string"]).get_table_client(
        pool_args["table"])
    row = table.get_entity("jobl", "hang-a1")
    assert row.get("PidStart") and row.get("PidHost")  # the runner recorded which process it is
    runner = int(row["Pid"])
    os.kill(runner, signal.SIGSTOP)
    try:
        table.update_entity({"PartitionKey": "jobl", "RowKey": "hang-a1", "Heartbeat": time.time() - 120})
        assert states(pool, "jobl")["hang-a1"].state is TaskState.running  # a pass ran: still running
        assert _group_size(runner) >= 2  # and nothing was killed
    finally:
        os.kill(runner, signal.SIGCONT)
    pool.cancel("jobl")


def test_a_runner_whose_pid_is_another_process_now_is_dead_and_that_process_is_left_alone(
        pool_args: dict[str, Any]) -> None:
    """The pid exists, but with another start time: the recorded runner ended and the kernel gave its pid to another
    process (after a reboot, or once pids wrapped). Dead, with a fresh heartbeat even; and the process that holds the
    pid now, a process group leader here, is not signalled."""
    import subprocess

    from gpu_batch.pool import process_identity

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        recorded = process_identity.record(other.pid)
        recorded["PidStart"] = str(int(recorded["PidStart"]) - 1)
        pool = make_pool("local", max_concurrent=1, **pool_args)  # (it makes the table)
        _running_row(pool_args, "jobr", "reused-a1", other.pid, 0, **recorded)
        info = states(pool, "jobr")["reused-a1"]
        assert info.state is TaskState.completed and "died" in (info.failure_message or "")
        assert other.poll() is None  # not killed
    finally:
        other.kill()
        other.wait()


def test_a_runner_whose_process_is_gone_is_dead_at_once(pool_args: dict[str, Any]) -> None:
    import subprocess

    from gpu_batch.pool import process_identity

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = process_identity.record(ended.pid)  # before it is waited for, as the pool records its runner's
    ended.wait()
    pool = make_pool("local", max_concurrent=1, **pool_args)
    _running_row(pool_args, "jobg", "gone-a1", ended.pid, 0, **recorded)
    info = states(pool, "jobg")["gone-a1"]
    assert info.state is TaskState.completed and "died" in (info.failure_message or "")


def test_a_row_without_the_runners_start_time_keeps_the_heartbeat_rule(pool_args: dict[str, Any]) -> None:
    """Rows written before the start time was recorded, or on another machine, container or boot (another
    ``PidHost``): this machine cannot check their process, so a heartbeat older than 60 s is death, as before, and a
    fresh one life. A pid gone here is death for an old row, as before; for another machine's row it says nothing,
    and the process of that pid here is not signalled when the row ends."""
    import subprocess

    def sleeper() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)

    alive, alive_too, bystander = sleeper(), sleeper(), sleeper()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    elsewhere = {"PidStart": "12345", "PidHost": "another-boot/pid:[1]"}
    pool = make_pool("local", max_concurrent=5, **pool_args)
    try:
        _running_row(pool_args, "jobo", "oldfresh-a1", alive.pid, 0)
        _running_row(pool_args, "jobo", "oldstale-a1", alive_too.pid, 120)
        _running_row(pool_args, "jobo", "oldgone-a1", gone.pid, 0)
        _running_row(pool_args, "jobo", "elsefresh-a1", gone.pid, 0, **elsewhere)
        _running_row(pool_args, "jobo", "elsestale-a1", bystander.pid, 120, **elsewhere)
        s = states(pool, "jobo")
        assert {k: v.state.value for k, v in s.items()} == {
            "oldfresh-a1": "running", "oldstale-a1": "completed", "oldgone-a1": "completed",
            "elsefresh-a1": "running", "elsestale-a1": "completed"}
        assert all("died" in (s[k].failure_message or "") for k in ("oldstale-a1", "oldgone-a1", "elsestale-a1"))
        assert alive_too.wait(10) == -signal.SIGTERM  # an old row's runner group is stopped, as before
        assert bystander.poll() is None  # another machine's pid is not this machine's process
    finally:
        for proc in (alive, alive_too, bystander):
            proc.kill()
            proc.wait()


def test_a_runner_sent_sigint_in_a_process_that_is_not_stopping_is_run_again(pool_args: dict[str, Any],
                                                                              storage_connection: str) -> None:
    """A SIGINT that is not devhost's stop (``kill -INT`` on a runner, a test's): its task is requeued and this pool,
    whose process goes on, runs it again, and the tasks queued behind it. Before, the first runner exit 130 set a
    process-wide "host stopping" flag that nothing cleared, and the runner marked the task as requeued by this
    process: this process (a devhost serving on, a pytest worker) never started that task or any other again."""
    pool = make_pool("local", max_concurrent=1, **pool_args)
    table = TableServiceClient.from_connection_string(storage_connection).get_table_client(pool_args["table"])
    try:
        pool.submit("jobstray", [task("hang"), task("next")])
        row = wait_until(lambda: (lambda r: r if r["State"] == "running" and r.get("Pid") else None)(
            table.get_entity("jobstray", "hang-a1")), 60, "the task running")
        os.kill(int(row["Pid"]), signal.SIGINT)
        again = wait_until(lambda: (lambda r: r if r["State"] == "running" and r.get("Pid") not in (None, row["Pid"])
                                    else None)(table.get_entity("jobstray", "hang-a1")), 90, "the task run again")
        pool.cancel("jobstray", "hang-a1")  # the slot frees: the task queued behind it runs too
        wait_until(lambda: table.get_entity("jobstray", "next-a1")["State"] != "active", 90, "the next task started")
        assert again["Pid"] != row["Pid"]
    finally:
        pool.close_job("jobstray")


def test_a_runner_sent_sigint_requeues_its_task_and_this_process_starts_no_more(
        pool_args: dict[str, Any], storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT is the host stopping (devhost's Ctrl-C, devhost/stopping.py): the runner kills its worker and puts the
    task back in the queue, as Batch requeues the tasks of a node removed with ``requeue``; no pool of this (stopping)
    process starts it or the task queued behind it, and a pool of the next process runs both. Before, SIGINT ended
    the runner by KeyboardInterrupt, its task was then found with a dead runner and failed (an attempt spent), and
    the scheduler started the queued task into the freed slot while the host was stopping."""
    from gpu_batch.pool import local

    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("jobint", [task("hang"), task("next")])
    table = TableServiceClient.from_connection_string(storage_connection).get_table_client(pool_args["table"])
    row = wait_until(lambda: (lambda r: r if r["State"] == "running" and r.get("Pid") else None)(
        table.get_entity("jobint", "hang-a1")), 60, "the task running")
    monkeypatch.setenv(local.HOST_STOPPING_ENV, str(os.getpid()))  # as devhost's stop says so, before its SIGINT
    os.kill(int(row["Pid"]), signal.SIGINT)
    wait_until(lambda: table.get_entity("jobint", "hang-a1")["State"] == "active", 30, "the task requeued")
    wait_until(lambda: not pool._children, 30, "the runner to exit and be waited for")
    s = states(pool, "jobint")  # a scheduling pass, after the runner's exit was seen
    assert {t: i.state for t, i in s.items()} == {"hang-a1": TaskState.active, "next-a1": TaskState.active}, s
    wait_until(lambda: pool._watcher is None, 30, "the stopping pool's scheduler to end")  # it would start them
    monkeypatch.delenv(local.HOST_STOPPING_ENV)  # the next process: a pool made now runs them
    again = make_pool("local", max_concurrent=2, **{**pool_args, "faults": {"hang-a1": "exit:0"}})
    again._schedule()
    done = wait_until(lambda: all_done(again, "jobint", 2), 60, "both tasks to run")
    assert all(i.result is TaskResult.success for i in done.values()), done


def test_a_pass_that_read_a_runner_before_it_handed_its_task_back_leaves_the_task_queued(
        pool_args: dict[str, Any], storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner sent SIGINT puts its task back (``active``) and exits; a scheduling pass that had read the row while
    it still said ``running`` finds that runner gone. The pass must leave the requeued task to be started again, not
    fail it as "the worker's runner process died": before, it read the row again, saw it unfinished and completed it
    as a failure, so a Ctrl-C at the wrong moment spent an attempt (and the test of a stray SIGINT timed out)."""
    import subprocess

    from gpu_batch.pool import local, process_identity

    monkeypatch.setenv(local.HOST_STOPPING_ENV, str(os.getpid()))  # nothing starts: the row stays as submitted
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("jobpass", [task("hang")])
    wait_until(lambda: pool._watcher is None, 30, "the stopping pool's scheduler to end")
    monkeypatch.delenv(local.HOST_STOPPING_ENV)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # the runner, exited after its requeue
    read = pool.table.query_entities

    def before_the_requeue(*args: Any, **kwargs: Any) -> list[Any]:
        entities = list(read(*args, **kwargs))
        for e in entities:  # as read a moment before the runner's requeue landed
            e.update(State=TaskState.running.value, Pid=gone.pid, **{process_identity.START_FIELD: "1",
                                                                       process_identity.HOST_FIELD: "elsewhere/1"})
        return entities

    monkeypatch.setattr(pool.table, "query_entities", before_the_requeue)
    monkeypatch.setattr(local, "DEAD_AFTER_S", -1.0)  # the snapshot's runner counts as dead whatever its beat
    with pool._lock:
        pool._schedule_locked()
    row = TableServiceClient.from_connection_string(storage_connection).get_table_client(
        pool_args["table"]).get_entity("jobpass", "hang-a1")
    assert row["State"] == TaskState.active.value, row


SLOW_STORAGE_IMPORT = r'''
import os, sys, time


class _SlowAzure:
    """Holds up the runner's first storage-library import: a SIGINT sent meanwhile comes while it starts."""

    def find_spec(self, name, path=None, target=None):
        if name == "azure.core" and os.environ.get("SLOW_IMPORT_MARK"):
            with open(os.environ.pop("SLOW_IMPORT_MARK"), "w") as f:
                f.write(str(os.getpid()))
            time.sleep(3)
        return None


sys.meta_path.insert(0, _SlowAzure())
'''


def test_a_runner_sent_sigint_while_it_starts_hands_its_task_back(
        pool_args: dict[str, Any], storage_connection: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner starting as the host stops gets devhost's SIGINT while it still imports its libraries (a third of a
    second idle, more under load): it must hand its task back as a started one does, not die of KeyboardInterrupt
    (the task then found with a dead runner and failed at the next start, an attempt spent)."""
    from gpu_batch.pool import local

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_STORAGE_IMPORT)
    mark = tmp_path / "importing"
    env = {"PYTHONPATH": os.pathsep.join([str(hooks), os.getcwd()]), "SLOW_IMPORT_MARK": str(mark)}
    pool = make_pool("local", max_concurrent=1, **{**pool_args, "worker_env": env})
    pool.submit("jobearly", [task("hang")])
    wait_until(lambda: mark.exists() and mark.read_text(), 60, "the runner to import its storage library")
    monkeypatch.setenv(local.HOST_STOPPING_ENV, str(os.getpid()))  # as devhost's stop says so, before its SIGINT
    os.kill(int(mark.read_text()), signal.SIGINT)
    wait_until(lambda: not pool._children, 60, "the runner to exit and be waited for")
    row = TableServiceClient.from_connection_string(storage_connection).get_table_client(
        pool_args["table"]).get_entity("jobearly", "hang-a1")
    assert row["State"] == TaskState.active.value, row  # handed back: the next start runs the same attempt


def test_a_process_that_imports_the_pool_keeps_its_own_ctrl_c() -> None:
    """Only the runner's own process keeps an early SIGINT for later (``local_runner``'s top): devhost, the CLI and
    pytest import the pool, and the runner module with it, and must still stop on Ctrl-C."""
    import subprocess

    code = ("import signal, gpu_batch.pool.local; "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True", out


def test_a_pass_of_another_pool_object_during_a_launch_leaves_a_task_requeued_before_its_pid_was_recorded(
        pool_args: dict[str, Any], storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner that hands its task back before the pool recorded its pid (an early SIGINT: the requeue writes
    ``active`` with ``Pid`` 0, then the pool's unconditional merge of the pid lands) leaves an ``active`` row naming
    that gone runner. The next launch claims the row as ``preparing`` and records the new runner's pid only after
    starting it; a pass of another pool object on the same table in between (another process's, or the pool cache's
    for another configuration) must not read the gone runner's pid as this launch's and fail the task as "the worker's
    runner process died": that spent an attempt of a shard nothing had failed, and the new runner found its task
    completed. The claim names no runner (``Pid`` 0) until the launch records one."""
    import subprocess

    from gpu_batch.pool import local, process_identity

    monkeypatch.setenv(local.HOST_STOPPING_ENV, str(os.getpid()))  # nothing starts: the row stays as submitted
    pool = make_pool("local", max_concurrent=1, **pool_args)
    pool.submit("joblaunch", [task("hang")])
    wait_until(lambda: pool._watcher is None, 30, "the stopping pool's scheduler to end")
    monkeypatch.delenv(local.HOST_STOPPING_ENV)
    gone = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    recorded = process_identity.record(gone.pid)
    gone.communicate(b"")  # the runner that handed the task back, exited
    table = TableServiceClient.from_connection_string(storage_connection).get_table_client(pool_args["table"])
    table.update_entity({"PartitionKey": "joblaunch", "RowKey": "hang-a1", "Pid": gone.pid, **recorded})

    other = make_pool("local", max_concurrent=1, **pool_args)
    seen: list[str] = []
    popen = subprocess.Popen

    def launching(args: list[str], **kwargs: Any) -> Any:
        if "gpu_batch.pool.local_runner" in args:  # the row is claimed, the runner not yet started
            with other._lock:
                other._schedule_locked()
            seen.append(table.get_entity("joblaunch", "hang-a1")["State"])
            return popen([sys.executable, "-c", "pass"], **kwargs)  # a stand-in runner: the row is what is tested
        return popen(args, **kwargs)

    monkeypatch.setattr(local.subprocess, "Popen", launching)
    with pool._lock:
        pool._schedule_locked()
    assert seen == [TaskState.preparing.value], seen
