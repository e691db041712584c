"""Repeated-detection search cost per image by folder size: ``python bench/repeat_search.py [--sizes 500 5000 50000]``.

Why: the search runs per camera folder, and folders of 10,000-100,000 images are normal; a search whose cost per
image grows with the folder (every animal's box starts a candidate, and each new detection was compared with every
candidate near its centre) turns a 10M-image task's fan-in into hours. This times ``core.repeats.RepeatFinder`` (the
same folder search the fan-in runs per folder with ``search_folder``) on one folder of N images with a realistic mix:
0-3 "animal" boxes per image anywhere, of any size (2-50 % of each side), plus five fixed "rocks" that each appear in
about a third of the images, moving by up to 1.5 % of their size (``--jitter``; the detector's box for a still object
moves by a few pixels) (the true repeats), confidences uniform in [0.05, 0.99]. The
detections are generated before the clock starts. Prints one line per size (CPU microseconds per image and per
eligible detection, the candidates each detection was compared with on average, which no machine load changes, and
the locations found) and, with ``--json``, the same as JSON. Pure CPU, no storage; the collector's thresholds are the
function app's (``core.collector``).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import collector  # noqa: E402
from core.repeats import RepeatFinder  # noqa: E402

ROCKS = [([0.40, 0.30, 0.10, 0.08], "1"), ([0.05, 0.70, 0.12, 0.20], "1"), ([0.62, 0.12, 0.20, 0.25], "2"),
         ([0.41, 0.30, 0.10, 0.08], "2"), ([0.80, 0.80, 0.05, 0.04], "1")]


def folder_entries(n: int, seed: int = 1, jitter: float = 0.015) -> list[dict[str, Any]]:
    """One folder of ``n`` images; each rock's box moves by up to ``jitter`` of its own width / height per image."""
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        dets = []
        for (x, y, w, h), cat in ROCKS:
            if rng.random() < 0.33:
                box = [x + rng.uniform(-jitter, jitter) * w, y + rng.uniform(-jitter, jitter) * h,
                       w * (1 + rng.uniform(-jitter, jitter)), h * (1 + rng.uniform(-jitter, jitter))]
                dets.append({"category": cat, "bbox": box, "conf": round(rng.uniform(0.05, 0.99), 3)})
        for _ in range(rng.randint(0, 3)):
            w, h = rng.uniform(0.02, 0.5), rng.uniform(0.02, 0.5)
            dets.append({"category": rng.choice("123"), "bbox": [rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h],
                         "conf": round(rng.uniform(0.05, 0.99), 3)})
        entries.append({"file": f"site/cam/{i:07d}.jpg", "detections": dets})
    return entries


def measure(n: int, jitter: float = 0.015, repeats: int = 3) -> dict[str, Any]:
    """Best of ``repeats`` runs, times ``5,000 / n`` for folders under 5,000 images (the least CPU: what the code
    costs, not what else the machine did; a 500-image folder is a ~7 ms run, and on this shared machine one run in
    three of it can take twice as long)."""
    entries = folder_entries(n, jitter=jitter)
    best = math.inf
    for _ in range(max(1, repeats) * max(1, 5_000 // n)):
        finder = RepeatFinder()
        start = time.process_time()
        for entry in entries:
            finder.add(entry)
        result = finder.result()
        best = min(best, time.process_time() - start)
    cpu = best
    return {"images": n, "cpu_s": round(cpu, 3), "us_per_image": round(cpu / n * 1e6, 1),
            "us_per_detection": round(cpu / max(finder.detections_considered, 1) * 1e6, 2),
            "detections_considered": finder.detections_considered,
            "compared_per_detection": round(finder.compared / max(finder.detections_considered, 1), 2),
            "ious_per_detection": round(finder.ious / max(finder.detections_considered, 1), 2),
            "locations": len(result["locations"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5_000, 50_000], help="images per folder")
    parser.add_argument("--jitter", type=float, default=0.015,
                        help="how far a rock's box moves between images, as a share of its side (default 0.015)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; the least CPU is reported")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON as well")
    args = parser.parse_args(argv)
    collector.apply()  # the function app's thresholds: the search as the app's worker process runs it
    rows = [measure(n, args.jitter, args.repeats) for n in args.sizes]
    for r in rows:
        print(f"{r['images']:>8} images/folder: {r['us_per_image']:>8.1f} us/image  {r['us_per_detection']:>6.2f} "
              f"us/detection  {r['compared_per_detection']:>6.2f} candidates met/detection  "
              f"{r['ious_per_detection']:>5.2f} IoUs/detection  "
              f"({r['detections_considered']} detections, {r['locations']} repeated locations)")
    if len(rows) > 1:
        print(f"growth {rows[0]['images']} -> {rows[-1]['images']} images/folder: "
              f"{rows[-1]['us_per_image'] / rows[0]['us_per_image']:.2f}x per image")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
