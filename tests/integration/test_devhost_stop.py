"""Ctrl-C (SIGINT) on ``python -m devhost`` with a task's shard running on the local pool's resident worker: devhost
stops within seconds, leaves none of the app's processes behind (the pool's runner, its client, the resident server),
and its next start finishes the task, the interrupted shard resumed, not resubmitted (devhost/stopping.py).

Why a devhost subprocess: a signal and the processes left after it are what is tested (tests/integration/test_chaos.py
kills devhost outright instead; the runners then go on without it, by design)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from adapters.blobs import BlobStore
from tests.integration.conftest import upload_images
from tests.integration.test_chaos import DevhostProcess, attempts_of, pool_row
from tests.integration.test_end_to_end import api, check_results, finished_status
from tests.waiting import wait_until


def processes_naming(*texts: str) -> list[str]:
    """Live processes (not zombies) whose command line holds any of ``texts``, as ``pid: command``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and any(t in cmd for t in texts):
            found.append(f"{entry.name}: {cmd}")
    return found


def test_ctrl_c_stops_devhost_and_the_pools_processes_and_a_restart_resumes_the_shard(
        app_env: dict[str, str], store: BlobStore, unique_name: str, storage_connection: str,
        tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="stop-", dir="/tmp"))  # a socket path must stay under 108 bytes
    socket = folder / "worker.sock"
    resident = {"TRAPBATCH_WORKER_RESIDENT": "1", "TRAPBATCH_RESIDENT_SOCKET": str(socket),
                "TRAPBATCH_RESIDENT_IDLE_S": "120"}
    # the first shard's client hangs at its start, so the Ctrl-C meets it running (one resident server: the others
    # wait in the queue); the next start has no fault, and the same attempt runs to its end
    hanging = {**app_env, **resident, "TRAPBATCH_WORKER_FAULTS": json.dumps({"s00000/1": "hang"})}
    host = DevhostProcess(hanging, "q" + unique_name[:12], tmp_path / "devhost.log").start()
    state = app_env["TRAPBATCH_CONTAINER"]
    try:
        names = upload_images(store, unique_name, 12, corrupt=0)
        task_id = api.post(host.base + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
        row = wait_until(lambda: (lambda r: r if r and r.get("State") == "running" and r.get("Pid") else None)(
            pool_row(storage_connection, task_id, "s00000", 1)), 180, "the first shard running")
        wait_until(lambda: socket.with_name(socket.name + ".pid").exists(), 60, "the resident worker")
        assert processes_naming(task_id, str(socket))  # the runner, its client and the server run now
        assert host.proc is not None
        stopped_at = time.monotonic()
        host.proc.send_signal(signal.SIGINT)
        code = host.proc.wait(60)  # seconds with the fix; before it, the runner and the server outlived devhost
        took = time.monotonic() - stopped_at
        log = host.log_path.read_text()
        assert code == 0 and took < 60, (code, took, log[-3000:])
        try:  # gone when devhost has exited (a moment for the kernel to finish a kill)
            wait_until(lambda: not processes_naming(task_id, str(socket)), 10, "the app's processes to end")
        except AssertionError:
            raise AssertionError(f"left running after devhost stopped: {processes_naming(task_id, str(socket))}")
        requeued = pool_row(storage_connection, task_id, "s00000", 1)
        assert requeued is not None and requeued["State"] == "active", requeued  # back in the queue, not failed
        assert requeued["RowKey"] == row["RowKey"]
        # what it did, said: the activities' grace, the processes by pid, the time it took
        assert "devhost: stopping (Ctrl-C again stops at once)" in log, log[-3000:]
        assert f"{row['Pid']} (-m gpu_batch.pool.local_runner" in log and "devhost: stopped in" in log, log[-3000:]

        host.env = {**host.env, "TRAPBATCH_WORKER_FAULTS": ""}
        host.start()
        status = wait_until(lambda: finished_status(host.base, task_id), 300, "task completion after the restart")
        assert status["runtime_status"] == "Completed" and status["stage"] == "completed", status
        assert status["images"] == 12 and status["missing"] == 0 and status["resubmissions"] == 0, status
        assert attempts_of(store, state, task_id) == {"s00000": [1], "s00001": [1], "s00002": [1]}
        check_results(store, app_env, task_id, names)
    finally:
        host.stop()
        for line in processes_naming(str(socket)) + (processes_naming(task_id) if "task_id" in locals() else []):
            try:  # without the fix: do not leave them to the next test
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(folder, ignore_errors=True)
