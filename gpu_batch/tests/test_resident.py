"""The node-resident worker and its client, with real processes, a tiny real checkpoint and images in Azurite.

What is checked: shards through one server give the CLI's results, and the second reuses the loaded model (no import,
no model load); two clients starting at once start one server; a server that dies mid-shard makes the client exit
with the retryable code and the next attempt resumes from what was flushed; a terminated client stops its shard on
the server, which then takes the next; LocalPool with TRAPBATCH_WORKER_RESIDENT=1 runs a shard end to end; the
client imports no torch; the pools' command lines follow the setting.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from gpu_batch import exit_codes
from gpu_batch.pool import ShardTask, TaskResult, TaskState, make_pool
from gpu_batch.pool.base import RESIDENT_CLIENT_MODULE, WORKER_MODULE, worker_module
from gpu_batch.tests.conftest import REPO_ROOT, summary_line
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from tests.waiting import wait_until

CPU = ["--device", "cpu", "--workers", "2", "--batch-size", "1", "--flush-seconds", "0.2"]


class Shards:
    """Images and shard manifests in Azurite, and the environment a worker process gets."""

    def __init__(self, connection: str, prefix: str, checkpoint: Path, socket_path: Path) -> None:
        self.connection, self.prefix, self.checkpoint, self.socket_path = connection, prefix, checkpoint, socket_path
        self.service = BlobServiceClient.from_connection_string(connection)
        self.images, self.state, self.results = prefix + "img", prefix + "state", prefix + "out"
        for c in (self.images, self.state, self.results):
            self.service.create_container(c)

    def put_images(self, names: list[str], seed: int) -> list[str]:
        for i, name in enumerate(names):
            self.service.get_blob_client(self.images, name).upload_blob(jpeg_bytes(textured(256, 192, seed + i)))
        return names

    def manifest(self, shard: str, images: list[str], output: str, attempt: int = 1,
                 merge_view_threshold: float | None = None) -> list[str]:
        doc = {"task_id": "task-res", "shard_id": shard, "attempt": attempt, "source_container": self.images,
               "images": images, "output_container": self.results, "output_blob": output,
               "model": str(self.checkpoint), "detection_threshold": 0.005,
               "merge_view_threshold": merge_view_threshold}
        blob = f"tasks/task-res/{shard}/attempt-{attempt}-{output}.json"
        self.service.get_blob_client(self.state, blob).upload_blob(json.dumps(doc), overwrite=True)
        return ["--manifest-container", self.state, "--manifest-blob", blob]

    def output(self, name: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.service.get_blob_client(self.results, name).download_blob().readall())
        except ResourceNotFoundError:
            return None
        return doc

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env.update(TRAPBATCH_STORAGE_CONNECTION=self.connection, TRAPBATCH_RESIDENT_SOCKET=str(self.socket_path),
                   TRAPBATCH_RESIDENT_IDLE_S="300", TRAPBATCH_MODEL_CACHE=str(self.socket_path.parent / "models"))
        env.update(extra)
        return env

    def run(self, module: str, args: list[str], timeout: float = 300, **extra: str
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", module, *args, *CPU], capture_output=True, text=True,
                              env=self.env(**extra), cwd=REPO_ROOT, timeout=timeout)

    def start(self, module: str, args: list[str], log: Path, **extra: str) -> subprocess.Popen[bytes]:
        with open(log, "wb") as err:
            return subprocess.Popen([sys.executable, "-m", module, *args, *CPU], stdout=subprocess.PIPE, stderr=err,
                                    env=self.env(**extra), cwd=REPO_ROOT)

    def server_pid(self) -> int | None:
        pid_file = Path(str(self.socket_path) + ".pid")
        return int(pid_file.read_text()) if pid_file.exists() else None

    def server_log(self) -> str:
        log = Path(str(self.socket_path) + ".log")
        return log.read_text(errors="replace") if log.exists() else ""


def _stop_servers(folder: Path) -> None:
    for pid_file in folder.glob("*.pid"):
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not _alive(pid), 20, f"resident server {pid} to exit")
        except (ValueError, ProcessLookupError, OSError):
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def shards(storage_connection: str, unique_name: str, small_input_checkpoint: Path) -> Iterator[Shards]:
    """The test network at 256 px (``conftest.small_input_checkpoint``): the 256x192 images run at their own size, not
    scaled up to 1280x960 (~1/25 of the forward pass); what is compared here (CLI against resident worker, model
    reuse, stops, exits) does not depend on the input size, and both sides of each comparison run the same model."""
    folder = Path(tempfile.mkdtemp(prefix="tbres", dir="/tmp"))  # short: a Unix socket path has at most 107 bytes
    try:
        yield Shards(storage_connection, unique_name, small_input_checkpoint, folder / "w.sock")
    finally:
        _stop_servers(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _same_results(a: dict[str, Any], b: dict[str, Any]) -> None:
    ea, eb = ({e["file"]: e for e in doc["images"]} for doc in (a, b))
    assert sorted(ea) == sorted(eb)
    for name, x in ea.items():
        y = eb[name]
        assert ("failure" in x) == ("failure" in y), name
        # every success carries its image's size (all test images are 256 x 192), as the CLI writes it
        assert (x.get("width"), x.get("height")) == (y.get("width"), y.get("height")) == (
            (None, None) if "failure" in x else (256, 192)), name
        assert len(x.get("detections", [])) == len(y.get("detections", [])), name
        for dx, dy in zip(x.get("detections", []), y.get("detections", [])):
            assert dx["category"] == dy["category"]
            assert abs(dx["conf"] - dy["conf"]) < 1e-4
            assert all(abs(p - q) < 1e-4 for p, q in zip(dx["bbox"], dy["bbox"]))
    assert a["info"]["trapbatch"]["complete"] is b["info"]["trapbatch"]["complete"] is True


def test_two_shards_through_one_server_match_two_cli_runs_and_the_second_reuses_the_model(shards: Shards) -> None:
    first = shards.put_images([f"cam1/a{i}.jpg" for i in range(4)], 10)
    second = shards.put_images([f"cam2/b{i}.jpg" for i in range(4)], 50)
    for shard, images in (("s0", first), ("s1", second)):
        cli = shards.run(WORKER_MODULE, shards.manifest(shard, images, f"{shard}-cli.json"))
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert summary_line(cli)["model_cache_hit"] is False
    runs = []
    for shard, images in (("s0", first), ("s1", second)):
        proc = shards.run(RESIDENT_CLIENT_MODULE, shards.manifest(shard, images, f"{shard}-res.json",
                                                                  merge_view_threshold=0.2))
        assert proc.returncode == 0, proc.stderr[-3000:] + shards.server_log()[-3000:]
        assert "runs this shard" in proc.stderr and "INFO gpu_batch.worker: task=task-res" in proc.stderr
        runs.append(summary_line(proc))
        # the Azure SDK's INFO is a record per blob request (gpu_batch.sdk_logging): in no log of either path
        assert not any("http_logging_policy" in log for log in (cli.stderr, proc.stderr, shards.server_log()))
    for shard in ("s0", "s1"):
        cli_doc, res_doc = shards.output(f"{shard}-cli.json"), shards.output(f"{shard}-res.json")
        assert cli_doc is not None and res_doc is not None
        _same_results(cli_doc, res_doc)
    one, two = runs
    assert one["done"] == two["done"] == 4 and one["failed"] == two["failed"] == 0
    assert one["resident"]["server_pid"] == two["resident"]["server_pid"]  # one server took both
    assert (one["resident"]["shard_number"], two["resident"]["shard_number"]) == (1, 2)
    assert one["model_cache_hit"] is False and two["model_cache_hit"] is True  # no model load the second time
    assert one["resident"]["server_import_s"] > 0 and two["import_s"] < 0.5  # torch was imported once, by the server
    for summary in runs:  # measured from the client process's start, which the pool launched
        assert summary["start_to_first_batch_s"] > 0
    # each shard's merge view, written by the server after it answered (while the next shard could run), names the
    # results blob as stored (gpu_batch.formats.mergeview)
    from gpu_batch import layout
    from gpu_batch.formats.mergeview import read_view

    container = shards.service.get_container_client(shards.results)
    for shard in ("s0", "s1"):
        name = layout.attempt_view_blob("task-res", shard, 1)
        wait_until(lambda: container.get_blob_client(name).exists(), 60, f"the merge view of {shard}")
        view = read_view(container.download_blob(name).readall())
        results_etag = str(container.get_blob_client(f"{shard}-res.json").get_blob_properties().etag)
        assert view is not None and view.counts["images"] == 4 and view.results_etag == results_etag.strip('"')
    print(f"start to first batch: first shard {one['start_to_first_batch_s']} s (server cold), "
          f"second {two['start_to_first_batch_s']} s (model cached)")


def test_two_clients_at_once_start_exactly_one_server(shards: Shards, tmp_path: Path) -> None:
    images = shards.put_images([f"cam/c{i}.jpg" for i in range(2)], 90)
    procs = [shards.start(RESIDENT_CLIENT_MODULE, shards.manifest(f"p{i}", images, f"p{i}.json"),
                          tmp_path / f"p{i}.log") for i in range(2)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs
    summaries = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    assert len({s["resident"]["server_pid"] for s in summaries}) == 1
    assert sorted(s["resident"]["shard_number"] for s in summaries) == [1, 2]
    assert sum("started a resident worker" in log for log in logs) == 1
    assert shards.server_log().count("imports took") == 1


def test_a_server_that_dies_mid_shard_makes_the_client_exit_retryable_and_the_next_attempt_resumes(
        shards: Shards) -> None:
    images = shards.put_images([f"cam/d{i:02d}.jpg" for i in range(8)], 130)
    args = shards.manifest("s0", images, "d.json")
    # crash_after:3 ends the process running the shard, here the server (as it ends a CLI worker).
    crashed = shards.run(RESIDENT_CLIENT_MODULE, args, TRAPBATCH_WORKER_FAULT="crash_after:3")
    assert crashed.returncode == exit_codes.SERVER_LOST, crashed.stderr[-3000:]
    assert "died during the shard" in crashed.stderr
    partial = shards.output("d.json")
    assert partial is not None and partial["info"]["trapbatch"]["complete"] is False
    kept = {e["file"] for e in partial["images"]}
    assert 3 <= len(kept) < 8
    resumed = shards.run(RESIDENT_CLIENT_MODULE, args)  # a new server is started for the retry
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = summary_line(resumed)
    assert summary["skipped_resumed"] == len(kept) and summary["done"] == 8 - len(kept)
    assert summary["resident"]["shard_number"] == 1
    final = shards.output("d.json")
    assert final is not None and final["info"]["trapbatch"]["complete"] is True
    assert sorted(e["file"] for e in final["images"]) == sorted(images)
    assert all((e["width"], e["height"]) == (256, 192) for e in final["images"])  # kept and new entries alike


def test_a_server_killed_outright_mid_shard_gives_the_retryable_code(shards: Shards, tmp_path: Path) -> None:
    images = shards.put_images([f"cam/k{i:02d}.jpg" for i in range(40)], 170)
    proc = shards.start(RESIDENT_CLIENT_MODULE, shards.manifest("s0", images, "k.json"), tmp_path / "k.log")
    try:
        wait_until(lambda: "runs this shard" in (tmp_path / "k.log").read_text(), 120, "the server to take the shard")
        pid = shards.server_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == exit_codes.SERVER_LOST, (tmp_path / "k.log").read_text()[-3000:]


def test_a_terminated_client_stops_its_shard_and_the_server_takes_the_next(shards: Shards, tmp_path: Path) -> None:
    images = shards.put_images([f"cam/t{i:02d}.jpg" for i in range(40)], 210)
    log = tmp_path / "t.log"
    proc = shards.start(RESIDENT_CLIENT_MODULE, shards.manifest("s0", images, "t.json"), log)
    try:
        wait_until(lambda: len((shards.output("t.json") or {}).get("images", [])) >= 1, 240,
                   "the shard's first flushed results")
        proc.send_signal(signal.SIGTERM)  # as LocalPool's cancel (killpg) and Batch's terminate do
        # through the client's handler (client._exit_on_sigterm), which a container's first process needs
        assert proc.wait(timeout=30) == exit_codes.CANCELLED
    finally:
        proc.kill()
    wait_until(lambda: "stopped after" in shards.server_log(), 120, "the server to stop the shard between batches")
    stopped = shards.output("t.json")  # what it had is flushed, still incomplete, for the next attempt to resume
    assert stopped is not None and stopped["info"]["trapbatch"]["complete"] is False
    assert 1 <= len(stopped["images"]) < 40
    small = shards.put_images(["cam/next.jpg"], 250)
    nxt = shards.run(RESIDENT_CLIENT_MODULE, shards.manifest("s1", small, "n.json"))
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    summary = summary_line(nxt)
    assert summary["resident"]["shard_number"] == 2 and summary["model_cache_hit"] is True
    assert summary["resident"]["server_pid"] == shards.server_pid()


def test_local_pool_with_the_resident_setting_runs_a_shard_end_to_end(shards: Shards) -> None:
    images = shards.put_images([f"cam/l{i}.jpg" for i in range(3)], 300)
    args = shards.manifest("s00000", images, "l.json")
    env = {k: v for k, v in shards.env().items() if k.startswith("TRAPBATCH_")}
    pool = make_pool("local", connection_string=shards.connection, log_container=shards.state,
                     table=shards.prefix + "pool", max_concurrent=1, worker_env=env,
                     worker_command=None, resident=True)
    assert pool.worker_command[-1] == RESIDENT_CLIENT_MODULE  # type: ignore[attr-defined]
    pool.worker_command += CPU  # type: ignore[attr-defined]
    pool.submit("job1", [ShardTask("s00000-a1", args[1], args[3], "s00000", 1)])

    def finished() -> Any:
        infos = pool.poll("job1")
        return infos[0] if infos and infos[0].state is TaskState.completed else None

    info = wait_until(finished, 300, "the resident shard task to complete", interval=1.0)
    log = shards.service.get_blob_client(shards.state, info.log.split("/", 1)[1]).download_blob().readall().decode()
    assert info.result is TaskResult.success and info.exit_code == 0, log[-3000:]
    assert "runs this shard" in log
    # the server was started, and its imports done, while the task prepared (client.wait_ready), before its clock
    assert "is ready (pid" in log and ", started now" in log and "exited 0 after" in log
    assert log.index("the task's time limit counts from here") < log.index("runs this shard")
    assert json.loads(log.strip().splitlines()[-1])["model_cache_hit"] is False
    doc = shards.output("l.json")
    assert doc is not None and doc["info"]["trapbatch"]["complete"] is True
    assert sorted(e["file"] for e in doc["images"]) == sorted(images)


def test_the_client_imports_no_torch_and_no_azure_package() -> None:
    code = ("import sys, gpu_batch.worker.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'azure', 'numpy')))")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    print(f"client import: {time.monotonic() - started:.2f} s")


def test_the_clients_help_prints_the_workers_options_and_starts_no_server(tmp_path: Path) -> None:
    """README "The GPU worker" names ``python -m gpu_batch.worker.client`` as each pool task's command; its
    ``--help`` was forwarded as a shard: a resident server started (torch imported, idle for minutes after), the help
    went to its log and the client said "bad worker arguments". It prints the options it forwards, exit 0, with no
    server and no torch."""
    socket_path = tmp_path / "r" / "worker.sock"
    code = ("import sys; from gpu_batch.worker import client; code = client.main(['--help']); "
            "sys.stdout.flush(); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')); "
            "raise SystemExit(code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                         env={**os.environ, "TRAPBATCH_RESIDENT_SOCKET": str(socket_path),
                              "TRAPBATCH_RESIDENT_IDLE_S": "1"})  # a server it wrongly starts goes at once
    assert out.returncode == 0, out.stderr
    assert "python -m gpu_batch.worker.client" in out.stdout and "--manifest-container" in out.stdout
    assert "--ready" in out.stdout and out.stdout.rstrip().endswith("[]"), out.stdout
    assert not socket_path.parent.exists() or list(socket_path.parent.iterdir()) == []


def test_the_client_takes_for_help_what_the_workers_parser_takes_for_it() -> None:
    """An abbreviation of ``--help`` that the worker's parser takes for it (``allow_abbrev``) is help here too, not
    a shard forwarded to a server; what the parser refuses or takes as another option is forwarded."""
    import contextlib
    import io

    from gpu_batch.worker.__main__ import _parser
    from gpu_batch.worker.client import asks_for_help

    for args in (["-h"], ["--help"], ["--he"], ["--hel"], ["--manifest-blob", "b", "--help"]):
        assert asks_for_help(args), args
        with pytest.raises(SystemExit) as shown, contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(args)
        assert shown.value.code == 0, args  # the worker's parser printed its help for them too
    for args in (["--h"], ["--hw-decode", "on"], ["--manifest-blob", "--help-me"], ["--ready"]):
        assert not asks_for_help(args), args


def test_the_resident_flag_chooses_the_module_the_pools_run() -> None:
    assert worker_module(False) == "gpu_batch.worker" and worker_module(True) == "gpu_batch.worker.client"
    from gpu_batch.tests.test_pool_azure_batch import FakeBatch, pool, shard

    for resident, module in ((False, "gpu_batch.worker"), (True, "gpu_batch.worker.client")):
        fake = FakeBatch()
        batch = pool(fake, resident=resident)
        batch.ensure_job("job")
        batch.submit("job", [shard("s00000", 1)])
        sent = json.loads(fake.requests[-1].content)["value"][0]
        assert sent["commandLine"] == (f"/opt/venv/bin/python -m {module} --manifest-container trapbatch "
                                       "--manifest-blob tasks/task-x/shards/s00000/attempt-1.json --device cuda")


def test_without_a_usable_resident_path_the_client_runs_the_shard_itself(shards: Shards) -> None:
    images = shards.put_images(["cam/f0.jpg", "cam/f1.jpg"], 330)
    too_long = "/tmp/" + "x" * 120 + "/w.sock"  # longer than a Unix socket path may be
    proc = shards.run(RESIDENT_CLIENT_MODULE, shards.manifest("s0", images, "f.json"),
                      TRAPBATCH_RESIDENT_SOCKET=too_long)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running the shard in this process" in proc.stderr
    summary = summary_line(proc)
    assert summary["done"] == 2 and "resident" not in summary and summary["import_s"] > 0
    doc = shards.output("f.json")
    assert doc is not None and doc["info"]["trapbatch"]["complete"] is True
    assert not Path(too_long).parent.exists()


def _start_server_from(package_root: Path, socket_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """A resident server run from ``package_root`` (a copy of the repository's gpu_batch, possibly edited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env["PYTHONPATH"] = str(package_root)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gpu_batch.worker.resident", "serve", "--socket",
                                 str(socket_path), "--idle-exit", "inf"], stdout=out, stderr=out, env=env,
                                cwd=package_root)


def _serve(socket_path: Path, log: Path, idle_exit: str) -> subprocess.Popen[bytes]:
    """``resident serve`` on ``socket_path`` from this checkout, logging to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gpu_batch.worker.resident", "serve", "--socket",
                                 str(socket_path), "--idle-exit", idle_exit], stdout=out, stderr=out, env=env,
                                cwd=REPO_ROOT)


def _ready_answer(socket_path: Path) -> dict[str, Any] | None:
    """The server's answer to a ``ready`` request (it takes shards), or None while none answers there."""
    import socket

    from gpu_batch.worker import resident_protocol as wire

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(str(socket_path))
            wire.send_message(sock, {"type": "ready", "code": wire.code_fingerprint()})
            answer = wire.recv_message(sock)
    except OSError:
        return None
    return answer if answer and answer.get("type") == "ready" else None


def test_the_nodes_server_stands_by_while_a_tasks_server_answers_and_takes_the_socket_when_it_is_gone(
        tmp_path: Path) -> None:
    """Azure Batch: a task may start while the start task still starts (waitForSuccess false); its client, finding no
    server, starts one in the task's own --rm container, which is killed with it and leaves its socket behind. The
    start task's server (``--idle-exit inf``) then found that one answering and exited 0, which ended the start task
    for good: every later task on the node started a server of its own. It now stands by and takes the socket over;
    a server a client starts (a finite idle exit) still leaves a live one be."""
    folder = Path(tempfile.mkdtemp(prefix="tbsb", dir="/tmp"))  # short: a Unix socket path has at most 107 bytes
    path = folder / "resident" / "w.sock"
    started: list[subprocess.Popen[bytes]] = []
    try:
        task_server = _serve(path, tmp_path / "task.log", "600")  # as a client in a task's container starts one
        started.append(task_server)
        first = wait_until(lambda: _ready_answer(path), 120, "the task's server to take shards")
        assert first["pid"] == task_server.pid
        node_server = _serve(path, tmp_path / "node.log", "inf")  # the start task's command (batch.bicep)
        started.append(node_server)
        wait_until(lambda: "takes the socket over" in (tmp_path / "node.log").read_text()
                   or node_server.poll() is not None, 120, "the node's server to stand by")
        assert node_server.poll() is None, (tmp_path / "node.log").read_text()  # not gone, as it was with exit 0
        another = _serve(path, tmp_path / "another.log", "600")  # another client's: it leaves the live one be
        started.append(another)
        assert another.wait(timeout=120) == 0
        assert "already answers" in (tmp_path / "another.log").read_text()
        task_server.kill()  # its container ends with its task: no clean-up, the socket file stays
        task_server.wait()
        assert path.exists()
        answer = wait_until(lambda: _ready_answer(path), 120, "the node's server to take the socket over")
        assert answer["pid"] == node_server.pid and node_server.poll() is None
        assert "this one listens now" in (tmp_path / "node.log").read_text()
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _edited_copy(tmp_path: Path) -> Path:
    root = tmp_path / "older"
    shutil.copytree(REPO_ROOT / "gpu_batch", root / "gpu_batch", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    with open(root / "gpu_batch" / "worker" / "pipeline.py", "a", encoding="utf-8") as f:
        f.write("\n# an older image's worker differs from the task's\n")
    return root


def test_a_server_running_other_worker_code_refuses_steps_aside_and_the_client_starts_a_current_one(
        shards: Shards, tmp_path: Path) -> None:
    """What a node sees after the worker image is updated while its start task's server still runs the old one."""
    from gpu_batch.worker import resident_protocol as wire

    stale = _start_server_from(_edited_copy(tmp_path), shards.socket_path, tmp_path / "stale.log")
    try:
        wait_until(lambda: shards.socket_path.exists(), 120, "the stale server to listen")
        images = shards.put_images(["cam/s0.jpg", "cam/s1.jpg"], 410)
        proc = shards.run(RESIDENT_CLIENT_MODULE, shards.manifest("s0", images, "s.json"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "refused the shard: this resident worker runs other worker code" in proc.stderr
        stale.wait(timeout=60)  # it stepped aside and exited once idle
        assert stale.returncode == 0
        assert "stepping aside" in (tmp_path / "stale.log").read_text()
        summary = summary_line(proc)
        assert summary["done"] == 2 and summary["resident"]["server_pid"] not in (stale.pid, None)
        assert summary["resident"]["server_pid"] == shards.server_pid()  # the current server took the socket
        doc = shards.output("s.json")
        assert doc is not None and doc["info"]["trapbatch"]["complete"] is True
        assert wire.code_fingerprint() != ""
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def test_a_pool_preparing_a_task_gets_a_current_server_when_the_running_one_has_other_worker_code(
        shards: Shards, tmp_path: Path) -> None:
    """``client --ready`` (LocalPool, while a task prepares) meets a server of an older worker image: the server
    refuses the ``ready`` and steps aside, and the one retry starts a current server and waits for its ``ready``, so
    the task's shard finds it up (the preparation's exit 0; exit 1 left the start to the task, inside its limit)."""
    from gpu_batch.pool.base import READY_ARG

    stale = _start_server_from(_edited_copy(tmp_path), shards.socket_path, tmp_path / "stale.log")
    try:
        wait_until(lambda: shards.socket_path.exists(), 120, "the stale server to listen")
        proc = subprocess.run([sys.executable, "-m", RESIDENT_CLIENT_MODULE, READY_ARG], capture_output=True,
                              text=True, env=shards.env(), cwd=REPO_ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "refused: this resident worker runs other worker code" in proc.stderr
        stale.wait(timeout=60)  # it stepped aside and exited, having no shard in hand
        assert stale.returncode == 0 and "stepping aside" in (tmp_path / "stale.log").read_text()
        current = shards.server_pid()
        assert current not in (None, stale.pid) and _alive(current)  # the retry's server holds the socket
        assert f"is ready (pid {current}, started now)" in proc.stderr
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def test_a_server_without_cuda_refuses_a_cuda_shard_and_steps_aside(shards: Shards, tmp_path: Path) -> None:
    """What a node sees if the start task's container did not get the GPUs: the task's client is told why."""
    import socket as sockets

    import torch

    from gpu_batch.worker import resident_protocol as wire

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA (the refusal is for a server that has none)")
    server = _start_server_from(REPO_ROOT, shards.socket_path, tmp_path / "server.log")
    try:
        wait_until(lambda: shards.socket_path.exists(), 120, "the server to listen")
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as sock:
            sock.connect(str(shards.socket_path))
            wire.send_message(sock, {"type": "run", "argv": ["--manifest-container", "x", "--manifest-blob", "y",
                                                             "--device", "cpu", "--device", "cuda"],
                                     "env": {}, "cwd": str(REPO_ROOT), "code": wire.code_fingerprint()})
            answer = wire.recv_message(sock)
        assert answer is not None and answer["type"] == "refused"
        assert "no CUDA device" in answer["reason"]
        assert not shards.socket_path.exists()  # gone at once: the client's next try starts another server
        server.wait(timeout=60)
        assert server.returncode == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_device_a_command_line_insists_on() -> None:
    from gpu_batch.worker.resident_protocol import wants_cuda

    assert wants_cuda(["--manifest-blob", "b", "--device", "cuda"])
    assert wants_cuda(["--device=cuda"])
    assert not wants_cuda(["--device", "cuda", "--device", "cpu"])  # argparse keeps the last
    assert not wants_cuda(["--device", "auto"]) and not wants_cuda([])


def test_a_checkout_edited_while_its_server_runs_gets_its_shards_refused(shards: Shards, tmp_path: Path) -> None:
    """The server hashes its code when it starts: files edited afterwards (a ``git pull`` while it idles) are not
    what it imported, so a client of the edited checkout is refused rather than served by the old code."""
    import socket as sockets

    from gpu_batch.worker import resident_protocol as wire

    root = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "gpu_batch", root / "gpu_batch", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    server = _start_server_from(root, shards.socket_path, tmp_path / "server.log")
    try:
        def fingerprint() -> str:
            return subprocess.run([sys.executable, "-c", "from gpu_batch.worker import resident_protocol as w; "
                                   "print(w.code_fingerprint())"], capture_output=True, text=True, cwd=root,
                                  env={**os.environ, "PYTHONPATH": str(root)}, check=True).stdout.strip()

        wait_until(lambda: shards.socket_path.exists(), 120, "the server to listen")
        before = fingerprint()
        with open(root / "gpu_batch" / "worker" / "pipeline.py", "a", encoding="utf-8") as f:
            f.write("\n# edited after the server started\n")
        edited = fingerprint()
        assert len(edited) == 16 and edited != before
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as sock:
            sock.connect(str(shards.socket_path))
            wire.send_message(sock, {"type": "run", "argv": ["--device", "cpu"], "env": {}, "cwd": str(root),
                                     "code": edited})
            answer = wire.recv_message(sock)
        assert answer is not None and answer["type"] == "refused", answer
        assert "other worker code" in answer["reason"]
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.parametrize("served, asked, compiled", [(True, False, True), (False, False, False), (False, True, True)])
def test_a_server_started_to_compile_compiles_every_shards_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                   served: bool, asked: bool, compiled: bool) -> None:
    """``serve --compile`` (the node's choice: its compile is paid by the first shard only, the compiled model staying
    in the cache) compiles shards whose command line does not ask for it; a shard that asks is compiled anyway."""
    import socket

    from gpu_batch.worker import __main__ as cli
    from gpu_batch.worker.resident import Server, _Connection

    seen: list[bool] = []

    def run_shard(args: Any, env: Any, fault: Any, **kwargs: Any) -> Any:
        seen.append(args.compile)
        return cli.ShardOutcome(0, {"done": 0})

    monkeypatch.setattr(cli, "run_shard", run_shard)
    server = Server(tmp_path / "s.sock", 60.0, compile_models=served)
    argv = ["--manifest-file", "m.json", "--image-root", str(tmp_path), "--device", "cpu",
            *(["--compile"] if asked else [])]
    mine, theirs = socket.socketpair()
    with mine, theirs:
        code, summary, _ = server._run({"argv": argv, "env": {}, "cwd": str(tmp_path)}, _Connection(mine))
    assert code == 0 and seen == [compiled] and summary is not None


def test_each_shard_runs_with_its_own_torch_threads_and_the_server_keeps_its_own(monkeypatch: pytest.MonkeyPatch,
                                                                                  tmp_path: Path) -> None:
    """torch reads OMP_NUM_THREADS once, so a server kept the count of the client that started it (a LocalPool worker's
    cores // concurrency) for every later shard: each shard now applies its own, and a shard that sets none (or a
    value torch.set_num_threads cannot take) runs with the server's."""
    import socket

    import torch

    from gpu_batch.worker import __main__ as cli
    from gpu_batch.worker.resident import Server, _Connection

    seen: list[int] = []

    def run_shard(args: Any, env: Any, fault: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return cli.ShardOutcome(0, {"done": 0})

    monkeypatch.setattr(cli, "run_shard", run_shard)
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the server's own count
    try:
        server = Server(tmp_path / "s.sock", 60.0)
        argv = ["--manifest-file", "m.json", "--image-root", str(tmp_path), "--device", "cpu"]
        after: list[int] = []
        reported: list[Any] = []
        for env in ({"OMP_NUM_THREADS": "1"}, {}, {"OMP_NUM_THREADS": "4,2"}, {"OMP_NUM_THREADS": "0"},
                    {"OMP_NUM_THREADS": "2"}):
            mine, theirs = socket.socketpair()
            with mine, theirs:
                code, summary, _ = server._run({"argv": argv, "env": env, "cwd": str(tmp_path)}, _Connection(mine))
            assert code == 0 and summary is not None
            after.append(torch.get_num_threads())
            reported.append(summary["resident"].get("torch_threads"))
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 3, 3, 3, 2] and after == [3] * 5
    assert reported == seen  # the summary says what the shard ran with


def test_a_shard_on_the_server_builds_into_the_servers_compile_caches_though_its_environment_names_none(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The server points TorchInductor and Triton at the node's caches as it starts (``choose_compile_cache``); each
    shard runs with its client's environment, which names neither, so without pinning them Triton went back to
    its default under the home of the Batch task's user, which that user cannot write (``caches.triton_cache_dir``).
    """
    import socket

    from gpu_batch.worker import __main__ as cli
    from gpu_batch.worker.resident import Server, _Connection

    seen: list[tuple[str | None, str | None]] = []

    def run_shard(args: Any, env: Any, fault: Any, **kwargs: Any) -> Any:
        seen.append((os.environ.get("TORCHINDUCTOR_CACHE_DIR"), os.environ.get("TRITON_CACHE_DIR")))
        return cli.ShardOutcome(0, {"done": 0})

    monkeypatch.setattr(cli, "run_shard", run_shard)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    cli.choose_compile_cache({"AZ_BATCH_NODE_SHARED_DIR": str(tmp_path / "shared")})
    servers = (os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["TRITON_CACHE_DIR"])
    server = Server(tmp_path / "s.sock", 60.0)
    argv = ["--manifest-file", "m.json", "--image-root", str(tmp_path), "--device", "cpu"]
    mine, theirs = socket.socketpair()
    with mine, theirs:
        code, _, _ = server._run({"argv": argv, "env": {"AZ_BATCH_TASK_ID": "s00000-a1"}, "cwd": str(tmp_path)},
                                 _Connection(mine))
    assert code == 0 and seen == [servers]
    assert servers[1] == str(tmp_path / "shared" / "trapbatch" / "inductor-cache" / "triton")
    assert (os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["TRITON_CACHE_DIR"]) == servers  # and after it


def test_serve_compiles_when_told_on_its_command_line_or_by_the_environment_it_starts_in() -> None:
    from gpu_batch.worker.resident import build_parser, compiles_models

    flagged, plain = (build_parser().parse_args(["serve", *extra]) for extra in (["--compile"], []))
    assert compiles_models(flagged, {}) is True and compiles_models(flagged, {"TRAPBATCH_RESIDENT_COMPILE": "0"})
    assert compiles_models(plain, {}) is False
    assert compiles_models(plain, {"TRAPBATCH_RESIDENT_COMPILE": "off"}) is False
    assert compiles_models(plain, {"TRAPBATCH_RESIDENT_COMPILE": "1"}) is True
    assert compiles_models(plain, {"TRAPBATCH_RESIDENT_COMPILE": " Yes "}) is True


@pytest.mark.slow  # TorchInductor compiles C++ kernels: minutes on a 2-core CI machine
def test_a_compiling_server_keeps_the_compiled_network_for_the_next_shard(shards: Shards) -> None:
    """A server started with TRAPBATCH_RESIDENT_COMPILE (which a client hands on to the server it starts) runs each
    shard compiled, keeps the compiled network in its model cache for the next shard, and gives the eager CLI's
    detections."""
    from gpu_batch.tests.test_oracle import compare

    first = shards.put_images([f"cam1/c{i}.jpg" for i in range(4)], 70)
    second = shards.put_images([f"cam2/d{i}.jpg" for i in range(4)], 90)
    runs, docs = [], {}
    for shard, images in (("s0", first), ("s1", second)):
        eager = shards.run(WORKER_MODULE, shards.manifest(shard, images, f"{shard}-cli.json"), timeout=900)
        assert eager.returncode == 0, eager.stderr[-3000:]
        proc = shards.run(RESIDENT_CLIENT_MODULE, shards.manifest(shard, images, f"{shard}-res.json"), timeout=900,
                          TRAPBATCH_RESIDENT_COMPILE="1")
        assert proc.returncode == 0, proc.stderr[-3000:] + shards.server_log()[-3000:]
        runs.append(summary_line(proc))
        docs[shard] = (shards.output(f"{shard}-cli.json"), shards.output(f"{shard}-res.json"))
    one, two = runs
    assert one["compiled"] is two["compiled"] is True and summary_line(eager)["compiled"] is False
    assert one["resident"]["server_pid"] == two["resident"]["server_pid"]
    assert one["model_cache_hit"] is False and two["model_cache_hit"] is True  # the compiled network, kept
    assert "shards' networks compiled (torch.compile)" in shards.server_log()
    for cli_doc, res_doc in docs.values():
        assert cli_doc is not None and res_doc is not None
        assert compare({e["file"]: e for e in res_doc["images"]}, {e["file"]: e for e in cli_doc["images"]},
                       coord_tol=1e-3, conf_tol=0.005) >= 1


def test_a_server_broken_by_a_shard_hands_the_next_waiting_shard_back_instead_of_accepting_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tasks on one node (a local pool running more workers than it has GPUs) wait on one server. When the running
    shard fails unexpectedly the server exits (its torch or CUDA state is no longer trusted); a shard waiting for its
    turn must then be refused, not accepted by the exiting server and lost with it (the client's exit 75 cost the
    shard an attempt), and the server's socket must be gone at once, so the client's second try starts a fresh
    server."""
    import socket as sockets
    import threading

    from gpu_batch.worker import resident_protocol as wire
    from gpu_batch.worker.resident import Server

    folder = Path(tempfile.mkdtemp(prefix="tbbrk", dir="/tmp"))  # short: a Unix socket path has at most 107 bytes
    server = Server(folder / "w.sock", 60.0)
    ran: list[list[str]] = []
    second_waits = threading.Event()

    def run(request: Any, conn: Any) -> Any:
        ran.append(list(request["argv"]))
        if len(ran) == 1:
            assert second_waits.wait(30)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return 0, {"done": 1}, None

    monkeypatch.setattr(server, "_run", run)
    listener = server.bind()
    assert listener is not None
    serving = threading.Thread(target=server.serve_forever, args=(listener,), daemon=True)
    serving.start()

    def request(sock: sockets.socket, name: str) -> None:
        sock.connect(str(server.socket_path))
        wire.send_message(sock, {"type": "run", "argv": [name], "env": {}, "cwd": str(folder),
                                 "code": wire.code_fingerprint()})

    try:
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as one, \
                sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as two:
            request(one, "first")
            first = wire.recv_message(one)
            assert first is not None and first["type"] == "accepted"
            request(two, "second")
            wait_until(lambda: server._active == 2, 30, "the second request to wait for its turn")
            second_waits.set()
            done = wire.recv_message(one)
            assert done is not None and done["type"] == "done" and done["exit_code"] == 1  # as a CLI's traceback
            second = wire.recv_message(two)
        assert second is not None and second["type"] == "refused", second
        assert "failed unexpectedly" in second["reason"]
        assert ran == [["first"]]  # the second shard never ran on the broken server
        assert not server.socket_path.exists()  # the next try starts a fresh server instead of reaching this one
        serving.join(30)
        assert not serving.is_alive() and server.broken
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _request_to_a_stranger(monkeypatch: pytest.MonkeyPatch, prefix: str) -> list[Any]:
    """What a listener at TRAPBATCH_RESIDENT_SOCKET received when the client took it for another user's (this process,
    with ``os.geteuid`` made to say otherwise): the client must refuse it (``ResidentUnavailable``) and send nothing."""
    import socket as sockets
    import threading

    from gpu_batch.worker import client
    from gpu_batch.worker import resident_protocol as wire

    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: a Unix socket path has at most 107 bytes
    path = folder / "w.sock"
    received: list[Any] = []
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        listener.settimeout(10)

        def accept() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    received.append(wire.recv_message(conn))
                except OSError:
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        own = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: own + 1)  # the listener (this process) is now another user
        try:
            with pytest.raises(client.ResidentUnavailable, match=f"runs as user {own}, not as this task's user"):
                client.run_on_server(["--manifest-container", "c", "--manifest-blob", "b"],
                                     {wire.SOCKET_ENV: str(path), "TRAPBATCH_STORAGE_CONNECTION": "AccountKey=secret"},
                                     time.time())
            thread.join(15)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return received


def test_the_client_hands_no_shard_to_a_listener_of_another_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request carries the task's environment, storage credentials included: with TRAPBATCH_RESIDENT_SOCKET in a
    folder others can write to, another user's process listening there first must get nothing (reproduced as root
    with a listener run as ``nobody`` in a 1777 folder: it printed the task's connection string)."""
    assert _request_to_a_stranger(monkeypatch, "tbusr") in ([], [None])  # closed without a byte: no environment


def test_a_socket_right_inside_a_shared_folder_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """TRAPBATCH_RESIDENT_SOCKET=/tmp/worker.sock made /tmp 0700 when the server or client ran as its owner (root in
    many containers), so every other user's and daemon's temporary files stopped working; as another user the chmod
    failed and the server died with a traceback. Both now refuse the folder, saying where to put the socket, and the
    client runs the shard itself."""
    from gpu_batch.worker import client
    from gpu_batch.worker import resident
    from gpu_batch.worker import resident_protocol as wire

    shared = Path(tempfile.mkdtemp(prefix="tbsh", dir="/tmp"))  # short: a Unix socket path has at most 107 bytes
    try:
        shared.chmod(0o1777)  # as /tmp
        sock = shared / "w.sock"
        with pytest.raises(OSError, match="sticky bit"):  # wire.SharedFolder
            resident.Server(sock, 1.0).bind()
        assert resident.main(["serve", "--socket", str(sock), "--idle-exit", "1"]) == 2
        with pytest.raises(client.ResidentUnavailable, match=f"set {wire.SOCKET_ENV} to a path inside a folder"):
            client.connect_or_start(sock, {wire.SOCKET_ENV: str(sock)})
        assert (shared.stat().st_mode & 0o7777) == 0o1777
        assert sorted(p.name for p in shared.iterdir()) == []  # no socket, lock, log or pid file left in it
        own = shared / "trapbatch"  # what the message proposes: a folder of its own inside, made private
        wire.private_folder(own)
        assert (own.stat().st_mode & 0o7777) == 0o700
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_without_so_peercred_the_client_checks_the_socket_files_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python has no ``SO_PEERCRED`` on macOS, where the local pool runs the resident client too: the check handed
    the shard (and the task's storage credentials) to whichever user listened there. The socket file's owner (its
    binder) stands in; a listener of another user gets nothing. Fails without the change (the request was sent)."""
    import socket as sockets

    monkeypatch.delattr(sockets, "SO_PEERCRED", raising=False)  # as on macOS
    assert _request_to_a_stranger(monkeypatch, "tbmac") in ([], [None])  # closed without a byte: no environment


@pytest.mark.parametrize("raw, expected, warned", [("", 300.0, False), ("45", 45.0, False), ("4s", 300.0, True),
                                                   ("-1", 300.0, True), ("inf", 300.0, True), ("nan", 300.0, True)])
def test_a_resident_seconds_setting_that_is_no_number_says_so(raw: str, expected: float, warned: bool,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """These run on the nodes (a refusal would fail every shard): a typo fell back to the default without a word."""
    from gpu_batch.worker import resident_protocol as wire

    with caplog.at_level("WARNING"):
        assert wire.float_setting({wire.START_ENV: raw}, wire.START_ENV, 300.0) == expected
    assert (wire.START_ENV in caplog.text) is warned


@pytest.mark.parametrize("raw, on, warned", [("", False, False), ("TRUE", True, False), ("off", False, False),
                                             ("ture", False, True)])
def test_a_resident_switch_with_an_unknown_word_is_off_and_says_so(raw: str, on: bool, warned: bool,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from gpu_batch.worker import resident_protocol as wire

    with caplog.at_level("WARNING"):
        assert wire.bool_setting({wire.COMPILE_ENV: raw}, wire.COMPILE_ENV) is on
    assert (wire.COMPILE_ENV in caplog.text) is warned
