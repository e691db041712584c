"""``bench/gpu_session.sh`` rehearsed on the CPU (``DRY_RUN=1``): every step of a lent GPU's call runs here first.

Why: a lent GPU gives a session 15 minutes, and a call is up to 10 of them; a shell error in the session script (a
step that writes over another's log, a path that only exists on the device, one file too many for the device to
send back) spends them. Here the same script runs with tiny images, YOLOv5n and no MegaDetector: the background
images, the decode rates (PIL only on a CPU), the benchmark with a two-variant resident node, and the oracle and
engine steps (which skip without CUDA), each under its limit, leaving at most the 8 files the device returns.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gpu_batch.tests.conftest import BENCH_ARCH, REPO_ROOT, bench_workdir


def test_the_session_script_runs_every_step_on_the_cpu_and_leaves_what_the_device_returns(
        tmp_path: Path, bench_checkpoint: Path) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    # the benchmark's checkpoint already in its workdir, as on a warm device (test_bench_worker.py's forward modes
    # test writes one where there is none)
    work = bench_workdir(tmp_path / "work", bench_checkpoint)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "DRY_RUN": "1", "OUT": str(out), "BENCH_WORKDIR": str(work), "RESULTS_DIR": str(results),
           "PREGEN_IMAGES": "6", "STEP_ORACLE_S": "240", "STEP_HWDECODE_S": "240", "STEP_DECODE_S": "240",
           "DECODE_IMAGES": "4", "STEP_FORWARD_S": "300", "FORWARD_MODES": "eager", "FORWARD_ARCH": BENCH_ARCH,
           "FORWARD_BATCH": "1", "FORWARD_ITERS": "1",
           "STEP_BENCH_S": "600", "STEP_COMPILED_S": "1", "DECODE_COMPARE": "0",
           "BUDGET_S": "1500"}
    proc = subprocess.run(["bash", "bench/gpu_session.sh", "--images", "6", "--skip-md", "--arch", BENCH_ARCH,
                           "--workers", "2", "--resident-shards", "2", "--resident-modes", "eager",
                           "--resident-warmup", "2", "--resident-args", "", "--resident-args", "--stage-threads 2",
                           "--record-suffix=-dry", "--ceiling-iterations", "1"],
                          capture_output=True, text=True, timeout=1800, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = (out / "steps.txt").read_text()
    for done in ("images (background) rc=0", "decode rates rc=0", "forward modes rc=0", "bench rc=0"):
        assert done in steps, steps
    assert "oracle eager rc=" in steps and "hwdecode rc=" in steps and "oracle compiled rc=" in steps
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # what the device sends back of $OUT
    log = (out / "bench.log").read_text()
    assert "pil:1" in log and '"variants"' in log  # the decode rates' lines and record, kept before the benchmark's
    assert '"modes": {"eager": {"first_passes_s"' in log  # the forward modes' line
    assert "node " in log and "with '--stage-threads 2'" in log
    (record,) = out.glob("worker_throughput-*-cpu-worker-only-dry.json")  # copied from RESULTS_DIR, not the repo's
    data = json.loads(record.read_text())
    assert data["resident_node_1_img_s"] > 0 and data["resident_node_2_img_s"] > 0
    assert data["ceiling_img_s"] > 0 and data["ceiling_iterations"] == 1  # the bench's own arguments reached it
    assert list(results.glob("*.json")) and not list((REPO_ROOT / "bench" / "results").glob("*-dry.json"))
