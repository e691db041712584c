"""The worker CLI: exit codes, resume after a crash, and every fault-injection mode (real subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_batch.tests.conftest import REPO_ROOT, run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured


def _shard(tmp_path: Path, model: Path) -> tuple[Path, Path, list[str]]:
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"cam1/img{i:02d}.jpg" for i in range(8)]
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg_bytes(textured(320, 240, 40 + i)))
    return write_manifest(tmp_path / "m.json", names, str(model)), folder, names


@pytest.fixture
def shard(tmp_path: Path, small_input_checkpoint: Path) -> tuple[Path, Path, list[str]]:
    """8 images and their manifest, with the test network at 256 px (``conftest.small_input_checkpoint``): what these
    tests check (exit codes, resuming, faults) does not depend on the input size; ``shard_at_1280`` is the default's."""
    return _shard(tmp_path, small_input_checkpoint)


@pytest.fixture
def shard_at_1280(tmp_path: Path, checkpoint: Path) -> tuple[Path, Path, list[str]]:
    """The same shard with MegaDetector's input size (no metadata in the checkpoint: 1280 px)."""
    return _shard(tmp_path, checkpoint)


def _local(manifest: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    return ["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file", str(out),
            "--device", "cpu", "--workers", "2", *extra]


def test_local_run_writes_complete_md_document(shard_at_1280: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    manifest, folder, names = shard_at_1280
    proc = run_worker_cli(_local(manifest, folder, tmp_path / "out.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = summary_line(proc)
    assert summary["images"] == summary["done"] == 8 and summary["failed"] == 0 and summary["img_s"] > 0
    # where the time to the first batch went: each pipeline step's first moment, in the order the steps happen
    steps = summary["first_steps_s"]
    order = ["pipeline_start", "prepared", "submitted", "stage_started", "staged", "launched", "finished"]
    assert sorted(steps) == sorted(order)
    assert [steps[k] for k in order] == sorted(steps[k] for k in order)
    assert summary["model_load_s"] <= steps["pipeline_start"] and steps["finished"] <= summary["first_batch_s"]
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [e["file"] for e in doc["images"]] == sorted(names)
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert doc["info"]["format_version"] == "1.6" and doc["info"]["trapbatch"]["complete"] is True
    assert sum(len(e["detections"]) for e in doc["images"]) > 0
    assert "img/s" not in proc.stderr.split("finished")[0] or proc.stderr.count("img/s") < 8  # no per-image lines


def test_a_batch_task_without_the_shared_folder_warns_in_its_log(shard: tuple[Path, Path, list[str]],
                                                                  tmp_path: Path) -> None:
    """The warning reaches the task's stderr.txt, which Batch uploads (caches.node_cache_problem)."""
    manifest, folder, _ = shard
    proc = run_worker_cli(_local(manifest, folder, tmp_path / "out.json"), {"AZ_BATCH_NODE_ID": "tvm-1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("sees no AZ_BATCH_NODE_SHARED_DIR") == 1


def test_crash_after_k_then_restart_resumes(shard: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    manifest, folder, names = shard
    out = tmp_path / "out.json"
    crashed = run_worker_cli(_local(manifest, folder, out, "--batch-size", "1"),
                             {"TRAPBATCH_WORKER_FAULT": "crash_after:3"})
    assert crashed.returncode == 70, crashed.stderr[-2000:]
    partial = json.loads(out.read_text())
    done_before = {e["file"] for e in partial["images"]}
    assert 3 <= len(done_before) < 8 and partial["info"]["trapbatch"]["complete"] is False
    resumed = run_worker_cli(_local(manifest, folder, out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = summary_line(resumed)
    assert summary["skipped_resumed"] == len(done_before)
    assert summary["done"] == 8 - len(done_before)
    final = json.loads(out.read_text())
    assert sorted(e["file"] for e in final["images"]) == sorted(names)
    for e in partial["images"]:  # kept entries are carried over unchanged
        assert e in final["images"]


def test_sigterm_stops_the_shard_at_its_next_result_with_what_it_did_flushed_and_the_next_run_resumes(
        shard: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    """A terminate (``docker stop``'s SIGTERM; the CLI is a Batch container's first process): exit 143 with the results
    so far written, marked incomplete, not a death that loses them. The run pauses itself (``pause_after:3``) so that
    the signal comes mid-shard whatever the machine's speed; it is handled once the run is continued."""
    manifest, folder, names = shard
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["TRAPBATCH_WORKER_FAULT"] = "pause_after:3"
    proc = subprocess.Popen([sys.executable, "-m", "gpu_batch.worker",
                             *_local(manifest, folder, out, "--batch-size", "1", "--flush-seconds", "0.1")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"ended (status {status}) instead of pausing: {proc.stderr.read()[-3000:]}"
        os.kill(proc.pid, signal.SIGTERM)  # pending while it is stopped, handled as it goes on
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM" in err and "stopped after" in err
    partial = json.loads(out.read_text())
    done_before = {e["file"] for e in partial["images"]}
    assert 3 <= len(done_before) < len(names) and partial["info"]["trapbatch"]["complete"] is False
    resumed = run_worker_cli(_local(manifest, folder, out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert summary_line(resumed)["skipped_resumed"] == len(done_before)
    assert sorted(e["file"] for e in json.loads(out.read_text())["images"]) == sorted(names)


def test_a_second_sigterm_ends_the_process_at_once_and_restore_gives_back_the_handler_before() -> None:
    """``SigtermStop`` in a process of its own (the handler is process-wide): the first SIGTERM is only noted, and
    asked about at the next check; the second gets the default action; ``restore`` puts the caller's handler back."""
    script = """
import os, signal, sys
from gpu_batch.worker.__main__ import SigtermStop, ShardCancelled
mine = lambda *_: None
signal.signal(signal.SIGTERM, mine)
stop = SigtermStop.install()
stop.check()  # nothing asked yet
os.kill(os.getpid(), signal.SIGTERM)
try:
    stop.check()
    sys.exit("the first SIGTERM did not stop the shard")
except ShardCancelled as exc:
    print("cancelled:", exc, flush=True)
stop.restore()
assert signal.getsignal(signal.SIGTERM) is mine
stop = SigtermStop.install()
os.kill(os.getpid(), signal.SIGTERM)
print("still here", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("not reached", flush=True)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith("cancelled: SIGTERM")
    assert proc.stdout.splitlines()[1:] == ["still here"]


def test_exit_fault_exits_with_given_status(shard: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    manifest, folder, _ = shard
    proc = run_worker_cli(_local(manifest, folder, tmp_path / "out.json"), {"TRAPBATCH_WORKER_FAULT": "exit:9"})
    assert proc.returncode == 9
    assert not (tmp_path / "out.json").exists()


def test_hang_fault_never_finishes(shard: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    manifest, folder, _ = shard
    with pytest.raises(subprocess.TimeoutExpired):
        run_worker_cli(_local(manifest, folder, tmp_path / "out.json"), {"TRAPBATCH_WORKER_FAULT": "hang"},
                       timeout=8)
    assert not (tmp_path / "out.json").exists()


def test_corrupt_output_fault_leaves_invalid_json_and_exit_0(shard: tuple[Path, Path, list[str]],
                                                              tmp_path: Path) -> None:
    manifest, folder, _ = shard
    out = tmp_path / "out.json"
    proc = run_worker_cli(_local(manifest, folder, out), {"TRAPBATCH_WORKER_FAULT": "corrupt_output"})
    assert proc.returncode == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.read_text())
    # and a later attempt over the corrupt output starts over instead of failing
    again = run_worker_cli(_local(manifest, folder, out))
    assert again.returncode == 0 and summary_line(again)["skipped_resumed"] == 0
    assert len(json.loads(out.read_text())["images"]) == 8


def test_bad_fault_spec_is_exit_2(shard: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    manifest, folder, _ = shard
    proc = run_worker_cli(_local(manifest, folder, tmp_path / "o.json"), {"TRAPBATCH_WORKER_FAULT": "explode"})
    assert proc.returncode == 2 and "TRAPBATCH_WORKER_FAULT" in proc.stderr


def _torch_unimportable(tmp_path: Path) -> dict[str, str]:
    """The environment of a worker in which ``import torch`` fails: the usage errors below are said before the
    imports (``__main__._check_before_imports``), in a tenth of a second instead of after torch's 2-3 CPU seconds."""
    fake = tmp_path / "no-torch" / "torch"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("raise ImportError('torch imported before a usage error was said')\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), str(REPO_ROOT),
                                                        os.environ.get("PYTHONPATH")]))}


def test_unreadable_manifest_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("{not json")
    no_torch = _torch_unimportable(tmp_path)
    proc = run_worker_cli(["--manifest-file", str(tmp_path / "m.json"), "--image-root", str(tmp_path)], no_torch)
    assert proc.returncode == 2 and "cannot read the shard manifest" in proc.stderr, proc.stderr[-2000:]
    missing = run_worker_cli(["--manifest-file", str(tmp_path / "nope.json"), "--image-root", str(tmp_path)],
                             no_torch)
    assert missing.returncode == 2 and "cannot read the shard manifest" in missing.stderr, missing.stderr[-2000:]
    no_root = run_worker_cli(["--manifest-file", str(tmp_path / "m.json")], no_torch)
    assert no_root.returncode == 2 and "local mode needs --image-root" in no_root.stderr, no_root.stderr[-2000:]


def test_bad_arguments_are_exit_2(tmp_path: Path) -> None:
    assert run_worker_cli(["--bogus"]).returncode == 2
    assert run_worker_cli([]).returncode == 2
    no_torch = _torch_unimportable(tmp_path)
    proc = run_worker_cli(["--manifest-container", "c", "--manifest-blob", "b"], no_torch)  # no storage configured
    assert proc.returncode == 2 and "TRAPBATCH_STORAGE_CONNECTION" in proc.stderr, proc.stderr[-2000:]
    half = run_worker_cli(["--manifest-container", "c"], no_torch)
    assert half.returncode == 2 and "go together" in half.stderr, half.stderr[-2000:]
    mixed = run_worker_cli(["--manifest-container", "c", "--manifest-blob", "b", "--manifest-file", "m.json"],
                           no_torch)
    assert mixed.returncode == 2 and "give either" in mixed.stderr, mixed.stderr[-2000:]
    both = run_worker_cli(["--manifest-file", "m.json", "--cudnn-benchmark", "--no-cudnn-benchmark"])
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    for bad in ("0", "5", "two"):
        refused = run_worker_cli(["--manifest-file", "m.json", "--stage-threads", bad])
        assert refused.returncode == 2 and "--stage-threads" in refused.stderr and "1 to 4" in refused.stderr
    for bad in ("-0.1", "1.5", "nan", "half"):
        refused = run_worker_cli(["--manifest-file", "m.json", "--cpu-decode-share", bad])
        assert refused.returncode == 2 and "--cpu-decode-share" in refused.stderr and "0 to 1" in refused.stderr
    refused = run_worker_cli(["--manifest-file", "m.json", "--stream-priority", "urgent"])
    assert refused.returncode == 2 and "--stream-priority" in refused.stderr and "'normal', 'high'" in refused.stderr


def test_stage_threads_and_the_cpu_decode_share_reach_the_pipeline_options() -> None:
    from gpu_batch.worker.__main__ import _pipeline_options, parse_args

    args = parse_args(["--manifest-file", "m.json", "--stage-threads", "2", "--cpu-decode-share", "0.4",
                       "--stream-priority", "high"], {})
    assert not isinstance(args, int)
    options = _pipeline_options(args, "s")
    assert (options.stage_threads, options.cpu_decode_share, options.stream_priority) == (2, 0.4, "high")
    default = parse_args(["--manifest-file", "m.json"], {})
    assert not isinstance(default, int)
    plain = _pipeline_options(default, "s")
    assert (plain.stage_threads, plain.cpu_decode_share, plain.stream_priority) == (1, 0, "normal")
    assert plain.cpu_decode_auto is False and options.cpu_decode_auto is False
    auto = parse_args(["--manifest-file", "m.json", "--cpu-decode-share", "auto"], {})
    assert not isinstance(auto, int)
    tuned = _pipeline_options(auto, "s")
    assert (tuned.cpu_decode_share, tuned.cpu_decode_auto) == (0.0, True)  # auto starts at 0 (or the last shard's)


def test_cudnn_tuning_is_chosen_by_shard_length() -> None:
    """Tuning costs seconds per shard and saves a fraction of each forward pass: only long shards pay it back."""
    from gpu_batch.worker.pipeline import CUDNN_TUNING_MIN_IMAGES, cudnn_benchmark_pays

    assert not cudnn_benchmark_pays(2_000) and not cudnn_benchmark_pays(CUDNN_TUNING_MIN_IMAGES - 1)
    assert cudnn_benchmark_pays(CUDNN_TUNING_MIN_IMAGES) and cudnn_benchmark_pays(50_000)


def test_model_that_cannot_load_is_exit_3(shard: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    _, folder, names = shard
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for model in (str(bad), str(tmp_path / "absent.pt")):
        manifest = write_manifest(tmp_path / "m3.json", names, model)
        proc = run_worker_cli(_local(manifest, folder, tmp_path / "o.json"))
        assert proc.returncode == 3, proc.stderr[-2000:]
        assert "cannot be loaded" in proc.stderr


def test_unwritable_output_is_exit_4(shard: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    manifest, folder, _ = shard
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_worker_cli(_local(manifest, folder, blocker / "out.json"))
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "cannot write results" in proc.stderr


# --- --device and the node's CUDA driver (cuda_check), with injected probes -----------------------------------------

def _probe(**kw: object) -> object:
    from gpu_batch.worker.cuda_check import CudaProbe

    values: dict[str, object] = {"torch_version": "2.14.1+cu130", "torch_cuda": "13.0", "cuda_available": False,
                                 "driver_cuda": 12020, "driver_version": "535.161.08"}
    return CudaProbe(**{**values, **kw})  # type: ignore[arg-type]


def test_device_cuda_without_cuda_says_why(caplog: pytest.LogCaptureFixture) -> None:
    from gpu_batch.worker.__main__ import _choose_device, _Usage

    with pytest.raises(_Usage, match=r"driver 535\.161\.08 supports CUDA 12\.2, but the worker image is built for "
                                     r"CUDA 13\.0.*>= 580\.65\.06"):
        _choose_device("cuda", _probe())  # type: ignore[arg-type]
    with pytest.raises(_Usage, match="CPU-only build"):
        _choose_device("cuda", _probe(torch_cuda=None, driver_cuda=None))  # type: ignore[arg-type]
    with pytest.raises(_Usage, match="no NVIDIA driver is visible"):
        _choose_device("cuda", _probe(driver_cuda=None, driver_version=None))  # type: ignore[arg-type]
    assert _choose_device("cuda", _probe(cuda_available=True)) == "cuda"  # type: ignore[arg-type]
    assert _choose_device("cpu", _probe()) == "cpu"  # type: ignore[arg-type]


def test_device_auto_falls_back_to_the_cpu_and_warns_only_about_a_driver_mismatch(
        caplog: pytest.LogCaptureFixture) -> None:
    from gpu_batch.worker.__main__ import _choose_device

    with caplog.at_level("WARNING", logger="gpu_batch.worker"):
        assert _choose_device("auto", _probe()) == "cpu"  # type: ignore[arg-type]
    assert "running on the CPU, not CUDA" in caplog.text and "CUDA 12.2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gpu_batch.worker"):
        assert _choose_device("auto", _probe(driver_cuda=None, driver_version=None)) == "cpu"  # type: ignore[arg-type]
        assert _choose_device("auto", _probe(torch_cuda=None)) == "cpu"  # type: ignore[arg-type]
        assert _choose_device("auto", _probe(cuda_available=True)) == "cuda"  # type: ignore[arg-type]
    assert caplog.text == ""  # no GPU, or a CPU build: a CPU run is what "auto" means


def test_device_cuda_on_a_machine_without_cuda_is_exit_2_with_the_reason(shard: tuple[Path, Path, list[str]],
                                                                          tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    manifest, folder, _ = shard
    args = _local(manifest, folder, tmp_path / "o.json")
    proc = run_worker_cli([*args[:-4], "--device", "cuda", *args[-2:]])
    assert proc.returncode == 2
    assert "CUDA was requested" in proc.stderr or "no CUDA device is available" in proc.stderr


def test_the_device_defaults_to_the_apps_setting_in_the_workers_environment() -> None:
    """The local pool gives its workers TRAPBATCH_DEVICE (the app's setting) in their environment; without --device
    the worker runs on it (it used to ignore it and always chose "auto", a GPU where one exists)."""
    from gpu_batch.worker.__main__ import EXIT_BAD_INPUT, parse_args

    base = ["--manifest-file", "m.json"]
    assert parse_args(base, {}).device == "auto"  # type: ignore[union-attr]
    assert parse_args(base, {"TRAPBATCH_DEVICE": "cpu"}).device == "cpu"  # type: ignore[union-attr]
    assert parse_args(base, {"TRAPBATCH_DEVICE": " CUDA "}).device == "cuda"  # type: ignore[union-attr]
    assert parse_args([*base, "--device", "cuda"], {"TRAPBATCH_DEVICE": "cpu"}).device == "cuda"  # type: ignore[union-attr]
    assert parse_args(base, {"TRAPBATCH_DEVICE": "tpu"}) == EXIT_BAD_INPUT


class _StorageAnswering:
    """A blob service whose every manifest read raises ``exc`` (what the SDK raises once its own retries are spent)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_blob_client(self, container: str, blob: str) -> "_StorageAnswering":
        return self

    def download_blob(self) -> None:
        raise self.exc


def _http_error(status: int, code: str) -> Exception:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    exc = (ResourceNotFoundError if status == 404 else HttpResponseError)(f"ErrorCode:{code}")
    exc.status_code = status  # type: ignore[attr-defined]
    return exc


def test_a_manifest_read_that_storage_could_not_answer_is_retryable_and_a_bad_one_is_exit_2(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Storage out of reach, busy or timing out while the worker reads its manifest is a passing cause: the exit must
    not be one of ``UNFIXABLE`` (exit 2 twice in a row fails the whole task, orchestrations.shards), so a storage
    outage or throttling at a run's start (every worker reads its manifest first) costs one attempt, not the task.
    A manifest that is not there, or that storage refuses to the worker, stays exit 2."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseTimeoutError

    from gpu_batch import exit_codes
    from gpu_batch.worker import __main__ as worker
    from gpu_batch.worker import sources

    env = {"TRAPBATCH_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "TRAPBATCH_DEVICE": "cpu"}
    argv = ["--manifest-container", "state", "--manifest-blob", "tasks/t/shards/s00000/attempt-1.json"]
    passing = [ServiceRequestError("Connection refused"), ServiceResponseTimeoutError("read timed out"),
               _http_error(503, "ServerBusy"), _http_error(500, "InternalError"), _http_error(429, "TooManyRequests"),
               ConnectionResetError("reset by peer")]
    for exc in passing:
        monkeypatch.setattr(sources, "blob_service_from_env", lambda env, exc=exc: _StorageAnswering(exc))
        code = worker.main(argv, env)
        assert code == exit_codes.STORAGE_UNAVAILABLE and exit_codes.unfixable_reason(code) is None, (exc, code)
        assert "storage did not answer the manifest read" in caplog.text
        caplog.clear()
    for exc in (_http_error(404, "BlobNotFound"), _http_error(403, "AuthorizationFailure")):
        monkeypatch.setattr(sources, "blob_service_from_env", lambda env, exc=exc: _StorageAnswering(exc))
        assert worker.main(argv, env) == exit_codes.BAD_INPUT, exc
        assert "cannot read the shard manifest" in caplog.text
        caplog.clear()


class _ModelBlobAnswering:
    """A storage client whose model blob cannot be read: its properties and its download fail with ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_blob_client(self, container: str, blob: str) -> "_ModelBlobAnswering":
        return self

    def get_blob_properties(self) -> None:
        raise self.exc

    def download_blob(self, **kwargs: object) -> None:
        raise self.exc


def test_a_model_download_that_storage_could_not_answer_is_retryable_and_a_refused_one_is_exit_3(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A ``blob://`` model whose download storage did not answer (no connection, timeout, 5xx, 408, 429) is a passing
    cause like the manifest read's: exit 69, not 3 (exit 3 twice in a row fails the whole task). A model blob that
    is not there, or that storage refuses to the worker, stays exit 3."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseTimeoutError

    from gpu_batch import exit_codes
    from gpu_batch.worker import __main__ as worker
    from gpu_batch.worker import sources

    (tmp_path / "images").mkdir()
    manifest = write_manifest(tmp_path / "m.json", ["a.jpg"], "blob://models/md.pt")
    env = {"TRAPBATCH_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "TRAPBATCH_DEVICE": "cpu",
           "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    argv = _local(manifest, tmp_path / "images", tmp_path / "out.json")
    passing = [ServiceRequestError("Connection refused"), ServiceResponseTimeoutError("read timed out"),
               _http_error(503, "ServerBusy"), _http_error(429, "TooManyRequests"), _http_error(408, "Timeout")]
    for exc in passing:
        monkeypatch.setattr(sources, "blob_service_from_env", lambda env, exc=exc: _ModelBlobAnswering(exc))
        code = worker.main(argv, env)
        assert code == exit_codes.STORAGE_UNAVAILABLE and exit_codes.unfixable_reason(code) is None, (exc, code)
        assert "storage did not answer the download of model 'blob://models/md.pt'" in caplog.text
        caplog.clear()
    for exc in (_http_error(404, "BlobNotFound"), _http_error(403, "AuthorizationFailure")):
        monkeypatch.setattr(sources, "blob_service_from_env", lambda env, exc=exc: _ModelBlobAnswering(exc))
        assert worker.main(argv, env) == exit_codes.MODEL, exc
        assert "cannot be loaded" in caplog.text
        caplog.clear()
