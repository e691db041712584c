"""``bench/worker_throughput.py`` on the CPU: what a lent GPU's one call relies on runs end to end here first.

A GPU lease is 15 minutes a session; a bench that breaks after the images are written spends it. Checked: images
written ahead (``--images-only``) are reused, the worker and ceiling figures and the resident-node run (two shards
through one server, the second reusing its model) land in the record.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gpu_batch.tests.conftest import BENCH_ARCH, REPO_ROOT, bench_workdir


def test_the_worker_benchmark_runs_on_the_cpu_and_records_a_resident_node(tmp_path: Path,
                                                                         bench_checkpoint: Path) -> None:
    workdir = bench_workdir(tmp_path / "w", bench_checkpoint)  # its checkpoint there, as forward_modes.py leaves it
    bench = [sys.executable, str(REPO_ROOT / "bench" / "worker_throughput.py"), "--workdir", str(workdir),
             "--images", "6"]
    ahead = subprocess.run([*bench, "--images-only"], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert ahead.returncode == 0, ahead.stderr[-3000:]
    images = sorted((tmp_path / "w" / "images").glob("*.jpg"))
    assert len(images) == 6 and not list((tmp_path / "w" / "images").glob("*.part"))
    written = {p.name: p.stat().st_mtime_ns for p in images}
    proc = subprocess.run([*bench, "--skip-md", "--arch", BENCH_ARCH, "--workers", "2", "--resident-shards", "2",
                           "--resident-modes", "eager", "--resident-args", "", "--resident-args", "--stage-threads 2",
                           "--resident-warmup", "2", "--results-dir", str(tmp_path / "results"),
                           "--ceiling-iterations", "1"],
                          capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "w" / "images").glob("*.jpg")} == written  # reused
    (record_file,) = (tmp_path / "results").glob("worker_throughput-*-cpu-worker-only.json")
    record = json.loads(record_file.read_text())
    assert record["images"] == 6 and record["md_images"] == 0
    assert record["worker_img_s"] > 0 and record["ceiling_img_s"] > 0 and record["ceiling_iterations"] == 1
    assert record["resident_node_1_img_s"] > 0 and record["resident_node_2_img_s"] > 0  # one node run per variant
    servers: set[int | None] = set()
    for key, node_args in (("resident_node_1", ""), ("resident_node_2", "--stage-threads 2")):
        node = record["worker_detail"][key]
        assert node["shards"] == 2 and node["compiled"] is False and node["args"] == node_args
        # the model kept: loaded by the untimed warm-up shard, found by every timed one of every variant
        assert [s["model_cache_hit"] for s in node["per_shard"]] == [True, True]
        servers |= {s["server_pid"] for s in node["per_shard"]}
    first = record["worker_detail"]["resident_node_1"]["warmup"]
    assert first["images"] == 2 and first["model_cache_hit"] is False
    assert len(servers) == 1 and None not in servers  # one server for both variants: only the first paid its start
    for key in ("resident_node_1", "resident_node_2"):
        shards = record["worker_detail"][key]["per_shard"]
        assert all("main_wait_post_s" in s["stages"] for s in shards)  # where a node's shards waited
        assert all(s["first_steps_s"]["finished"] <= s["first_batch_s"] for s in shards)
    assert "with '--stage-threads 2' after a warm-up shard" in proc.stdout
    assert "node " in proc.stdout and "over 2 shards through one resident worker" in proc.stdout
    assert "last shard's stage seconds" in proc.stdout


def test_forward_modes_reports_each_mode_and_a_failing_or_slow_one_without_stopping(tmp_path: Path) -> None:
    # one workdir: the first run writes the checkpoint there, the second reuses it (as worker_throughput.py does)
    script = [sys.executable, str(REPO_ROOT / "bench" / "forward_modes.py"), "--arch", BENCH_ARCH, "--batch", "1",
              "--iters", "1", "--workdir", str(tmp_path)]
    proc = subprocess.run([*script, "--modes", "eager,no-such-mode", "--mode-timeout", "300"],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = json.loads(proc.stdout.strip().splitlines()[-1])["modes"]
    assert modes["eager"]["img_s"] > 0 and modes["eager"]["first_passes_s"] >= 0
    assert "no-such-mode" in modes["no-such-mode"]["error"] and modes["no-such-mode"]["error"].startswith("rc=")
    assert (tmp_path / f"md_bench_{BENCH_ARCH}.pt").is_file()
    slow = subprocess.run([*script, "--modes", "eager", "--mode-timeout", "0.01"],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert slow.returncode == 0, slow.stderr[-3000:]
    assert json.loads(slow.stdout.strip().splitlines()[-1])["modes"]["eager"]["error"] == "ran past 0.01 s"
