"""Shard start-up: process start to first batch, worker CLI vs the resident client (cold and warm server).

    python bench/shard_startup.py [--device cpu|cuda|auto] [--model PATH|MDV5A] [--images N] [--runs N]

Each run is one shard of ``--images`` synthetic JPEGs in local mode (the same arguments for both), launched the way a
pool launches a task: a fresh ``python -m gpu_batch.worker`` (CLI) or ``python -m gpu_batch.worker.client``
(resident; ``TRAPBATCH_WORKER_RESIDENT=1`` in the pools). "start to first batch" runs from just before the process
is spawned to the wall-clock time of the shard's first batch of results (the summary's ``first_batch_unix``); the
summary's own ``start_to_first_batch_s`` (from the process start in /proc) is printed beside it.

* cli:         every run a fresh process: interpreter, torch imports, model load, warm-up, first batch;
* client cold: the first client run on a node without a server: it starts one (imports, model load);
* client warm: later client runs: the server has torch imported and the model loaded (``model_cache_hit``).

Without ``--model`` a tiny random-weight checkpoint of ``--arch`` is built (start-up, not accuracy, is measured; on a
GPU use the real network's size, e.g. ``--arch yolov5x6`` or ``--model MDV5A`` where it can be downloaded).
Issue 14's target: <= 2 s on a warm node on an H100/H200.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _images(folder: Path, n: int) -> list[str]:
    from gpu_batch.tests.imagegen import jpeg_bytes, textured

    names = [f"cam/img{i:03d}.jpg" for i in range(n)]
    (folder / "cam").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(textured(1024, 768, 7 + i)))
    return names


def _run(module: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    spawned = time.time()
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=900)
    wall = time.time() - spawned
    if proc.returncode != 0:
        raise SystemExit(f"{module} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"spawn_to_first_batch_s": round(summary["first_batch_unix"] - spawned, 3),
            "start_to_first_batch_s": summary.get("start_to_first_batch_s"), "wall_s": round(wall, 3),
            "import_s": summary.get("import_s"), "model_load_s": summary.get("model_load_s"),
            "first_batch_s": summary.get("first_batch_s"), "model_cache_hit": summary.get("model_cache_hit"),
            "device": summary.get("device")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--model", default=None)
    p.add_argument("--arch", default="yolov5n6")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--runs", type=int, default=3, help="runs of the CLI and of the warm client (median reported)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="the shard's batch size (default 1: the first batch is then one image's forward pass)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tbstart", dir="/tmp"))
    sock = work / "w.sock"
    try:
        model = args.model
        if model is None:
            from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

            model = str(write_test_checkpoint(work / f"bench_{args.arch}.pt", arch=args.arch, seed=0))
        names = _images(work / "images", args.images)
        manifest = work / "m.json"
        manifest.write_text(json.dumps({"task_id": "bench", "shard_id": "s0", "attempt": 1, "source_container": "-",
                                        "images": names, "output_container": "-", "output_blob": "out.json",
                                        "model": model, "detection_threshold": 0.005}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # carried wheels too
        env.update(PYTHONPATH=pythonpath, TRAPBATCH_RESIDENT_SOCKET=str(sock), TRAPBATCH_RESIDENT_IDLE_S="120")

        def shard_args(i: int) -> list[str]:  # a fresh output each run, so no run resumes another's results
            return ["--manifest-file", str(manifest), "--image-root", str(work / "images"), "--output-file",
                    str(work / f"out{i}.json"), "--device", args.device, "--batch-size", str(args.batch_size)]

        rows: dict[str, list[dict[str, Any]]] = {"cli": [], "client cold": [], "client warm": []}
        n = 0
        for _ in range(args.runs):
            n += 1
            rows["cli"].append(_run("gpu_batch.worker", shard_args(n), env))
        n += 1
        rows["client cold"].append(_run("gpu_batch.worker.client", shard_args(n), env))
        for _ in range(args.runs):
            n += 1
            rows["client warm"].append(_run("gpu_batch.worker.client", shard_args(n), env))
        print(f"shard start-up, {args.images} images, batch {args.batch_size}, device {rows['cli'][0]['device']}, "
              f"model {Path(model).name if os.path.exists(model) else model}; seconds, median of the runs")
        print(f"{'':12} {'runs':>4} {'spawn->1st batch':>17} {'/proc start->1st':>17} {'import':>7} "
              f"{'model ready':>11} {'cache hit':>9}")
        for name, runs in rows.items():
            def med(key: str) -> float:
                return statistics.median(float(r[key] or 0.0) for r in runs)

            print(f"{name:12} {len(runs):>4} {med('spawn_to_first_batch_s'):>17.2f} "
                  f"{med('start_to_first_batch_s'):>17.2f} {med('import_s'):>7.2f} {med('model_load_s'):>11.2f} "
                  f"{str(runs[-1]['model_cache_hit']):>9}")
        print(json.dumps(rows))
    finally:
        from gpu_batch.worker.resident_protocol import stop_server

        stop_server(sock)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
