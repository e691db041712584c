"""Crashes on the real local stack: devhost killed (SIGKILL) in each stage of one task, a worker process killed
mid-shard, the resident worker server killed while it serves a shard, Azurite stopped and started again.

What must hold after every fault: the task resumes and ends ``completed``; its results file lists every image of the
listing exactly once (``check_results``); no shard attempt runs an image a finished earlier attempt of it had
already written (only the missing ones run again); the status counts what happened.

Why a devhost subprocess and not the in-process ``DevHost``: only a process can be killed outright, as a Functions
instance is when it is recycled or crashes; the pool's runners live in their own sessions and outlive it
(gpu_batch.pool.local), as Batch nodes outlive the Functions instance that submitted their tasks.

The kills at random moments and the storage outages take over a minute each here: they are marked slow (CI skips
them; TRAPBATCH_RUN_SLOW=1 runs them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from adapters.blobs import BlobStore
from core import contracts as c
from devhost.port_file import wait_for_port_file
from gpu_batch import layout
from gpu_batch.manifest import ShardManifest
from tests.integration.conftest import upload_images
from tests.integration.test_end_to_end import FUNCTION_KEY, api, check_results, finished_status
from tests.integration.test_end_to_end import host  # noqa: F401 - the in-process devhost fixture
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class DevhostProcess:
    """``python -m devhost`` on a fixed task hub, started again after each kill on the same one.

    Each start takes a port of devhost's own (``--port 0 --port-file``, devhost/port_file.py): a port picked here, or
    kept across a kill, could be taken by another test module's Azurite before devhost binds it, and the wait would
    pass on that stranger. ``base`` follows the running process, so callers read it anew after each start."""

    def __init__(self, env: dict[str, str], hub: str, log_path: Path) -> None:
        self.env = {**os.environ, **env, "TRAPBATCH_DEVHOST_FUNCTION_KEY": FUNCTION_KEY}
        self.hub = hub
        self.base = ""  # set by each start
        self.log_path = log_path
        self.port_file = log_path.with_suffix(".port")
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.log_offset = 0  # where the running process's lines begin in the log

    def start(self) -> "DevhostProcess":
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", "0", "--port-file",
                                          str(self.port_file), "--hub", self.hub], cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.base = wait_for_port_file(self.port_file, self.proc, 120, self.log_path)
        return self

    def kill(self) -> None:
        """SIGKILL devhost's whole process group (not the pool's runners: they run in sessions of their own)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def logged(self, text: str) -> bool:
        """Whether the running process (not an earlier, killed one) has logged ``text``."""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return text.encode() in log.read()


def scheduled_activities(connection: str, hub: str) -> set[str]:
    """The names of the activities devhost has scheduled and not yet finished (its ``<hub>Activities`` table)."""
    table = TableServiceClient.from_connection_string(connection).get_table_client(hub + "Activities")
    try:
        return {str(e["Name"]) for e in table.list_entities()}
    except Exception:  # noqa: BLE001 - the table is made by devhost at its start; none yet is none scheduled
        return set()


def kill_when(host: DevhostProcess, what: str, condition: Callable[[], Any], timeout: float = 240) -> None:
    """Kill devhost as soon as ``condition()`` holds, then start it again."""
    wait_until(condition, timeout, what, interval=0.05)
    host.kill()
    host.start()


def attempts_of(store: BlobStore, state: str, task_id: str) -> dict[str, list[int]]:
    """Shard id -> the attempts whose manifests were written (``layout.manifest_blob``)."""
    import re

    found: dict[str, list[int]] = {}
    for name in store.list_names(state, f"tasks/{task_id}/shards/"):
        m = re.search(r"/(s\d{5})/attempt-(\d+)\.json$", name)
        if m and name == layout.manifest_blob(task_id, m[1], int(m[2])):
            found.setdefault(m[1], []).append(int(m[2]))
    return {sid: sorted(a) for sid, a in found.items()}


def check_only_missing_ran_again(store: BlobStore, state: str, task_id: str) -> None:
    """Each later attempt of a shard names only images no earlier attempt's results held (a resumed attempt keeps
    what it finds; a new one is given the missing ones)."""
    for sid, attempts in attempts_of(store, state, task_id).items():
        done: set[str] = set()
        for attempt in attempts:
            manifest = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, sid, attempt)))
            assert not done & set(manifest.images), (sid, attempt, sorted(done & set(manifest.images)))
            results = store.read_json_or_none(state, manifest.output_blob) or {"images": []}
            done |= {im["file"] for im in results["images"] if not im.get("failure")}


def test_devhost_killed_in_every_stage_of_one_task_resumes_each_time_and_loses_nothing(
        app_env: dict[str, str], store: BlobStore, unique_name: str, storage_connection: str,
        tmp_path: Path) -> None:
    """One task, devhost SIGKILLed and started again while it lists the images (or just after, where the listing
    ran between two looks), while workers run, while it merges, while it writes the exports and while it renders the
    previews."""
    names = upload_images(store, unique_name, 12, corrupt=1)
    hub = "c" + unique_name[:12]
    host = DevhostProcess(app_env, hub, tmp_path / "devhost.log").start()
    state = app_env["TRAPBATCH_CONTAINER"]
    try:
        task_id = api.post(host.base + "/api/tasks", json={"container": unique_name, "max_failed_fraction": 0.1},
                           timeout=120).json()["id"]  # 1 corrupt image of 12
        # 12 images list in well under a second: where both listing steps ran between two looks (a loaded machine's
        # table queries are slow), the kill comes just after the listing, as the enumeration is written, not never
        kill_when(host, "the listing", lambda: {c.LIST_PART, c.PLAN_LISTING} & scheduled_activities(
            storage_connection, hub) or store.read_json_or_none(state, layout.enumeration_blob(task_id)))
        # a worker has flushed part of its shard: the runners go on without devhost
        kill_when(host, "a worker's first flushed results", lambda: any(
            (store.read_json_or_none(state, layout.attempt_results_blob(task_id, f"s{i:05d}", 1)) or {}).get("images")
            for i in range(3)))
        kill_when(host, "the merge", lambda: {c.MERGE_PART, c.MERGE_COMBINE} &
                  scheduled_activities(storage_connection, hub))
        kill_when(host, "the exports", lambda: any(n.startswith("exports") for n in scheduled_activities(
            storage_connection, hub)))
        kill_when(host, "the previews", lambda: c.PREVIEWS in scheduled_activities(storage_connection, hub))
        status = wait_until(lambda: finished_status(host.base, task_id), 300, "task completion")
        assert host.kills == 5
        assert status["runtime_status"] == "Completed" and status["stage"] == "completed", status
        assert status["images"] == 12 and status["missing"] == 0 and status["failed"] == 1, status
        check_results(store, app_env, task_id, names)
        check_only_missing_ran_again(store, state, task_id)
        assert status["results"]["exports"]["images"] == 12, status
        res = api.get(f"{host.base}/api/tasks/{task_id}/results", timeout=120).json()
        assert api.get(res["previews"]["local_url"], timeout=120).status_code == 200
    finally:
        host.stop()


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def pool_row(connection: str, task_id: str, sid: str, attempt: int) -> dict[str, Any] | None:
    """The local pool's row of a shard attempt (``gpu_batch.pool.local``), in whichever job of the task holds it."""
    table = TableServiceClient.from_connection_string(connection).get_table_client("trapbatchpool")
    try:
        rows = [dict(e) for e in table.query_entities("RowKey eq @r", parameters={"r": f"{sid}-a{attempt}"})
                if layout.task_of_pool_job(str(e["PartitionKey"])) == task_id]
    except ResourceNotFoundError:  # the pool makes its table at its first submission
        return None
    return rows[0] if rows else None


def check_second_attempt_ran_only_the_missing(store: BlobStore, state: str, task_id: str, sid: str,
                                              flushed: int) -> None:
    first = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, sid, 1)))
    second = ShardManifest.from_dict(store.read_json(state, layout.manifest_blob(task_id, sid, 2)))
    kept = [im["file"] for im in store.read_json(state, first.output_blob)["images"]]
    assert len(kept) == flushed  # what the killed attempt had flushed stays
    assert list(second.images) == [n for n in first.images if n not in kept]  # only the missing ones ran again


def test_a_worker_killed_mid_shard_is_resubmitted_with_only_its_missing_images(  # type: ignore[no-untyped-def]
        host, app_env: dict[str, str], store: BlobStore, unique_name: str, storage_connection: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker process (not its runner) is SIGKILLed after it flushed 2 of its 4 images: the runner reports the
    death (exit -9, not the worker's own code), and the next attempt gets the other 2."""
    # pause_after stops the worker (SIGSTOP) at exactly 2 flushed images: the kill then lands at a known point
    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00001/1": "pause_after:2"}))
    names = upload_images(store, unique_name, 10, corrupt=0)
    task_id = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
    state = app_env["TRAPBATCH_CONTAINER"]
    row = wait_until(lambda: (lambda r: r if r and r.get("Pid") else None)(
        pool_row(storage_connection, task_id, "s00001", 1)), 120, "the shard's runner")
    runner = int(row["Pid"])
    wait_until(lambda: len((store.read_json_or_none(state, layout.attempt_results_blob(task_id, "s00001", 1)) or
                            {}).get("images", [])) == 2, 120, "the worker's 2 flushed results")
    [worker] = wait_until(lambda: children_of(runner), 30, "the worker under its runner")
    os.kill(worker, signal.SIGKILL)
    final = host.wait_for(task_id, timeout=240)
    assert final["runtimeStatus"] == "Completed", final
    assert final["output"]["resubmissions"] == 1 and final["output"]["missing"] == 0, final["output"]
    check_second_attempt_ran_only_the_missing(store, state, task_id, "s00001", 2)
    check_results(store, app_env, task_id, names)
    killed = pool_row(storage_connection, task_id, "s00001", 1)
    assert killed is not None and killed["Result"] == "failure", killed


def test_the_resident_server_killed_while_it_serves_a_shard_loses_nothing(  # type: ignore[no-untyped-def]
        host, app_env: dict[str, str], store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """TRAPBATCH_WORKER_RESIDENT: the server (shared by the shards' clients) is SIGKILLed after it flushed 2 images
    of a shard; that shard's client ends with SERVER_LOST (retryable), a new server serves the next attempt, which
    gets only the missing images."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))  # a socket path must stay under 108 bytes
    socket = folder / "worker.sock"
    monkeypatch.setenv("TRAPBATCH_WORKER_RESIDENT", "1")
    monkeypatch.setenv("TRAPBATCH_RESIDENT_SOCKET", str(socket))
    monkeypatch.setenv("TRAPBATCH_RESIDENT_IDLE_S", "60")
    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00001/1": "pause_after:2"}))
    pid_file = Path(str(socket) + ".pid")
    try:
        names = upload_images(store, unique_name, 10, corrupt=0)
        task_id = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120).json()["id"]
        state = app_env["TRAPBATCH_CONTAINER"]
        wait_until(lambda: len((store.read_json_or_none(state, layout.attempt_results_blob(task_id, "s00001", 1)) or
                                {}).get("images", [])) == 2, 180, "the server's 2 flushed results of the shard")
        server = int(pid_file.read_text())
        os.kill(server, signal.SIGKILL)
        final = host.wait_for(task_id, timeout=240)
        assert final["runtimeStatus"] == "Completed", final
        assert final["output"]["resubmissions"] == 1 and final["output"]["missing"] == 0, final["output"]
        check_second_attempt_ran_only_the_missing(store, state, task_id, "s00001", 2)
        check_results(store, app_env, task_id, names)
        assert int(pid_file.read_text()) != server  # a new server took the retry
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_devhost_killed_every_few_seconds_until_the_task_ends_loses_nothing(
        app_env: dict[str, str], store: BlobStore, unique_name: str, tmp_path: Path) -> None:
    """devhost SIGKILLed at pseudo-random moments (0.3 to 3 s after each start; TRAPBATCH_CHAOS_SEED picks them)
    until its task has ended: whatever
    each kill interrupts (a replay, an activity, a history save, a sub-orchestration's start), the task ends complete.
    One shard's first attempt crashes, so a resubmission is among what the kills meet."""
    import random

    rng = random.Random(int(os.environ.get("TRAPBATCH_CHAOS_SEED", "7")))
    names = upload_images(store, unique_name, 16, corrupt=1)
    env = {**app_env, "TRAPBATCH_WORKER_FAULTS": json.dumps({"s00002/1": "crash_after:1"})}
    host = DevhostProcess(env, "r" + unique_name[:12], tmp_path / "devhost.log").start()
    try:
        task_id = api.post(host.base + "/api/tasks", json={"container": unique_name, "max_failed_fraction": 0.1},
                           timeout=120).json()["id"]
        deadline = time.monotonic() + 600
        while (status := finished_status(host.base, task_id)) is None:
            assert time.monotonic() < deadline, "the task did not end within 600 s of kills"
            time.sleep(rng.uniform(0.3, 3.0))  # devhost takes ~1.5 s to start: some kills meet a start
            if finished_status(host.base, task_id) is None:
                host.kill()
                host.start()
        print(f"{host.kills} kills; resubmissions {status.get('resubmissions')}, cost {status.get('cost')}")
        assert status["runtime_status"] == "Completed" and status["stage"] == "completed", status
        assert status["images"] == 16 and status["missing"] == 0 and status["failed"] == 1, status
        # the kills cost no pool work: the crashed shard ran twice, the others once, and the status says so
        assert status["resubmissions"] == 1, status
        assert (status["cost"]["attempts"], status["cost"]["images"]) == (status["shards"] + 1, 16), status
        assert attempts_of(store, app_env["TRAPBATCH_CONTAINER"], task_id) == {
            "s00000": [1], "s00001": [1], "s00002": [1, 2], "s00003": [1]}
        check_results(store, app_env, task_id, names)
        check_only_missing_ran_again(store, app_env["TRAPBATCH_CONTAINER"], task_id)
    finally:
        host.stop()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["workers_start", "workers_flushed", "merging"])
def test_azurite_stopped_for_20_s_and_started_again_loses_nothing(
        when: str, tiny_checkpoint: Path, unique_name: str, tmp_path: Path) -> None:
    """Storage goes away for ~20 s (every service: tables, queues, blobs), then comes back with the same state: as
    the workers start (they read their manifests and the model), once they have flushed results, or as the merge
    starts. devhost, the pool's runners and the workers ride it out, and the task ends complete."""
    from adapters.blobs import service_client
    from devhost.azurite import PortReservation, start_azurite

    location = tmp_path / "azurite"
    held = PortReservation(3)  # no other pytest worker is handed these ports while storage is away
    azurite = start_azurite(location=location, ports=held.ports, log_path=tmp_path / "azurite.log")
    ports = held.ports
    env = {"AzureWebJobsStorage": azurite.connection_string, "TRAPBATCH_CONTAINER": unique_name + "-state",
           "TRAPBATCH_POOL": "local", "TRAPBATCH_MODEL": str(tiny_checkpoint), "TRAPBATCH_POLL_MIN_S": "0.5",
           "TRAPBATCH_POLL_MAX_S": "1", "TRAPBATCH_IMAGES_PER_SHARD": "4", "TRAPBATCH_LOCAL_CONCURRENCY": "2",
           "TRAPBATCH_DEVICE": "cpu", "TRAPBATCH_PUBLIC_WEB_URL": "https://trapbatchweb.z6.web.core.windows.net/"}
    host = DevhostProcess(env, "a" + unique_name[:12], tmp_path / "devhost.log")
    try:
        store = BlobStore(service_client(azurite.connection_string))
        names = upload_images(store, unique_name, 12, corrupt=1)
        host.start()
        task_id = api.post(host.base + "/api/tasks", json={"container": unique_name, "max_failed_fraction": 0.1},
                           timeout=120).json()["id"]
        state = env["TRAPBATCH_CONTAINER"]
        if when == "workers_start":
            wait_until(lambda: pool_row(azurite.connection_string, task_id, "s00000", 1), 240, "the first submission")
        elif when == "workers_flushed":
            wait_until(lambda: any((store.read_json_or_none(state, layout.attempt_results_blob(
                task_id, f"s{i:05d}", 1)) or {}).get("images") for i in range(3)), 240,
                "a worker's first flushed results")
        else:
            wait_until(lambda: {c.MERGE_PART, c.MERGE_COMBINE} & scheduled_activities(
                azurite.connection_string, host.hub), 240, "the merge", interval=0.05)
        azurite.stop()
        time.sleep(20)
        azurite = start_azurite(location=location, ports=ports, log_path=tmp_path / "azurite.log")
        status = wait_until(lambda: finished_status(host.base, task_id), 480, "task completion")
        assert status["runtime_status"] == "Completed" and status["stage"] == "completed", status
        assert status["images"] == 12 and status["missing"] == 0 and status["failed"] == 1, status
        check_results(store, env, task_id, names)
        check_only_missing_ran_again(store, state, task_id)
    finally:
        host.stop()
        azurite.stop()
        held.close()
