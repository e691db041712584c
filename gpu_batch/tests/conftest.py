"""Worker test fixtures: one tiny random-weight checkpoint per session, built by our own make_test_checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_ARCH = "yolov5n6"  # the P6 / stride-64 family of MDv5 (yolov5x6), at the smallest width


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    return write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "md_test_yolov5n6.pt", arch=TEST_ARCH, seed=0)


SMALL_INPUT = 256  # small_input_checkpoint's image size: 320x240 test images run at 256x192, not 1280x960


@pytest.fixture(scope="session")
def small_input_checkpoint(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``checkpoint``'s network, with ``{"image_size": 256}`` in its ``megadetector_info.json`` (as MDv1000 files
    carry theirs): the worker runs it at 256 px. For the CLI tests whose subject is not the network's input (exit
    codes, resuming, faults, two writers): a forward pass costs ~1/25 of one at 1280 px, and each image still gets
    ~25 detections. The same bytes plus one archive member, so nothing is built or calibrated again."""
    return with_small_input(checkpoint, tmp_path_factory.mktemp("ckpt-small") / "md_test_yolov5n6_256.pt")


def with_small_input(checkpoint: Path, path: Path) -> Path:
    """``checkpoint`` copied to ``path`` with ``{"image_size": SMALL_INPUT}`` added as its ``megadetector_info.json``
    (where make_test_checkpoint._build puts metadata): the same network, run at 256 px."""
    shutil.copyfile(checkpoint, path)
    with zipfile.ZipFile(path, "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{root}/megadetector_info.json", json.dumps({"image_size": SMALL_INPUT}))
    return path


BENCH_ARCH = "yolov5n"  # what the CPU rehearsals of bench/ pass as --arch


@pytest.fixture(scope="session")
def bench_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint bench/worker_throughput.py writes into its workdir (``md_bench_<arch>.pt``: this arch, seed 0),
    built once (its calibration is ~7 CPU seconds), with ``SMALL_INPUT`` as its input size (``with_small_input``);
    ``bench_workdir`` puts a copy where a test's bench reuses it.

    Why 256 px: the CPU rehearsals of bench/ (test_bench_worker.py, test_gpu_session.py) check that each step runs
    and records its figures, not what the figures are; at the bench's 1280 px every forward pass of YOLOv5n on a CPU
    took ~2 s (the worker, the ceiling, two resident-node variants and the forward modes: ~30 s of each rehearsal),
    at 256 px ~1/25 of that. Every step still loads the checkpoint and runs the same code at the size it reads."""
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    folder = tmp_path_factory.mktemp("bench-ckpt")
    full = write_test_checkpoint(folder / "full" / f"md_bench_{BENCH_ARCH}.pt", arch=BENCH_ARCH)
    return with_small_input(full, folder / f"md_bench_{BENCH_ARCH}.pt")


def bench_workdir(path: Path, checkpoint: Path) -> Path:
    """``path`` as a bench --workdir holding ``checkpoint`` already (the benches reuse one they find there, as on a
    warm device); a copy, so a bench that wrote over it could not change another test's."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, path / checkpoint.name)
    return path


def write_manifest(path: Path, images: Sequence[str], model: str, **overrides: Any) -> Path:
    doc = {"task_id": "task-test", "shard_id": "s0", "attempt": 1, "source_container": "images",
           "images": list(images), "output_container": "results", "output_blob": "out.json", "model": model,
           "detection_threshold": 0.005, **overrides}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def run_worker_cli(args: Sequence[str], env_extra: dict[str, str] | None = None, timeout: float = 240
                   ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "gpu_batch.worker", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=timeout)


def summary_line(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no stdout; stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.fixture(autouse=True)
def _no_shared_node_credential() -> Iterator[None]:
    """Each test starts without the worker process's shared credential (``gpu_batch.worker.node_clients``): an
    identity stand-in must not find an earlier test's token."""
    from gpu_batch.worker import node_clients

    node_clients.forget()
    yield
    node_clients.forget()
