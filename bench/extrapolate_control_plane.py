"""A ten-million-image control-plane record from two measured runs: ``python bench/extrapolate_control_plane.py``.

Why an extrapolation: ten million real blobs do not fit here (the preloading Azurite holds a million in ~5 GB; ten
million would need more memory than this machine has, and the benchmark process's own list of names with them).
What a 10M task's control plane does is known from two runs that are each measured, not simulated:

* the **full-size run** at a million images (``bench/control_plane.py --images 1000000 --preload``): every activity
  with its production size (images per shard, per merge part, per listing call, detections per search group), so
  per-image CPU and the walls of the activities whose size does not grow with the task;
* the **scale model at 10M's shape** (``--images 10000 --shape-of 10000000``): as many shards, shard groups, parts,
  search groups and export parts as a 10M task, so the orchestrations' histories, their replay CPU, status latency
  while they run, and the activities whose work is a count of those (combines, cleanups, the listing plan).

The record (``bench/results/control_plane-10000000.json``, ``"extrapolated": true``, both sources named):

    control_plane_cpu_s         k x the full run's CPU (k = 10M / 1M: every per-image cost, and k times the per-call
                                costs of 1M's calls, as many calls as 10M has) + the scale model's whole CPU (10M's
                                orchestration replays and per-call overheads once more): an upper bound
    control_plane_cpu_share_of_gpu  that / (10M / 250 img/s)
    max_history_events_per_instance, instances, status_*   the scale model's (10M's shape)
    max_activity_s              per activity, the larger of its longest call in the two runs: a size-bounded
                                activity's call is the full run's size at 10M; a count-driven one's is the scale
                                model's count at 10M (its full-run wall was at 1M's count, on an Azurite whose every
                                request slows with the blobs it holds)

Prints the record; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GPU_IMAGES_PER_S = 250.0


def extrapolate(full: dict[str, Any], shape: dict[str, Any], images: int,
                full_name: str = "", shape_name: str = "") -> dict[str, Any]:
    if full.get("shape_of") or full.get("scale_model"):
        raise SystemExit(f"{full_name}: a scale model, not a full-size run (give --full a run without --shape-of)")
    if shape.get("shape_of") != images:
        raise SystemExit(f"{shape_name}: not a scale model of {images:,} images (shape_of {shape.get('shape_of')})")
    if full.get("runtime_status") != "Completed" or shape.get("runtime_status") != "Completed":
        raise SystemExit("both runs must have completed")
    k = images / full["images"]
    cpu = k * full["control_plane_cpu_s"] + shape["control_plane_cpu_s"]
    gpu_s = images / GPU_IMAGES_PER_S
    walls: dict[str, dict[str, float]] = {}
    for source, record in (("full", full), ("shape", shape)):
        for name, f in record["functions"]["activities"].items():
            walls.setdefault(name, {"full_max_wall_s": 0.0, "shape_max_wall_s": 0.0})[f"{source}_max_wall_s"] = \
                float(f["max_wall_s"])
    longest = max(walls, key=lambda n: max(walls[n].values()), default="")
    return {
        "images": images, "extrapolated": True,
        "note": (f"EXTRAPOLATED, not run: {images:,} images from a full-size run of {full['images']:,} real images "
                 f"({full_name}) and a scale model with {images:,} images' shape ({shape_name}); see "
                 "bench/extrapolate_control_plane.py for each figure's source"),
        "sources": {"full": full_name, "shape": shape_name, "k": k},
        # the failure rate each run simulated and the resubmissions it made: a run with failures is extrapolated
        # from runs with failures (a scale model's shards are small, so it needs a higher rate to rerun as many)
        "failure_rates": {"full": full.get("failure_rate", 0.0), "shape": shape.get("failure_rate", 0.0)},
        "resubmissions": {"full": full.get("resubmissions", 0), "shape": shape.get("resubmissions", 0)},
        "control_plane_cpu_s": round(cpu, 3),
        "control_plane_cpu_s_parts": {"k_times_full": round(k * full["control_plane_cpu_s"], 3),
                                      "shape_model": round(shape["control_plane_cpu_s"], 3)},
        "gpu_s_at_250_img_s": round(gpu_s, 3),
        "control_plane_cpu_share_of_gpu": round(cpu / gpu_s, 5),
        "full_run_cpu_share_of_gpu": full["control_plane_cpu_share_of_gpu"],
        "max_history_events_per_instance": shape["max_history_events_per_instance"],
        "instances": shape["instances"], "shards": shape.get("shards"),
        "status_p50_s": shape["status_p50_s"], "status_p99_s": shape["status_p99_s"],
        "status_max_s": shape["status_max_s"], "status_polls": shape["status_polls"],
        "max_activity_s": round(max(walls[longest].values()), 3) if longest else 0.0, "max_activity": longest,
        "activity_walls": walls,
        "peak_rss_mb_full_run": full.get("peak_rss_mb"),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    results = REPO / "bench" / "results"
    p.add_argument("--full", default=str(results / "control_plane-1000000.json"))
    p.add_argument("--shape", default=str(results / "control_plane-10000-shape-of-10000000.json"))
    p.add_argument("--images", type=int, default=10_000_000)
    p.add_argument("--out", default=str(results / "control_plane-10000000.json"))
    args = p.parse_args(argv)
    full, shape = (json.loads(Path(f).read_text()) for f in (args.full, args.shape))
    record = extrapolate(full, shape, args.images, Path(args.full).name, Path(args.shape).name)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "activity_walls"}, indent=1))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
