"""What the exports spend on Camtrap DP events at ten million images: CPU and peak memory, measured.

Why: the events step (``activities.exportevents.run_exports_events``) holds every part's event records (42 bytes per
timed image, ``core.camtrap_events``) and groups them into events a camera at a time. Earlier figures for ten million
images were extrapolated from 200,000; this runs the combine's own code on ten million synthetic records and prints
what it took, so the README's bound is a measurement.

What it runs: records for ``--images`` timed images of ``--cameras`` cameras, in camera-folder order (as shards are cut
in name order), cut into ``--parts`` contiguous parts (as the merge parts are), each serialized as the part's
fragment (``EventRecords.to_bytes``) into a temporary folder by a child process. A fresh process then does what the
events step does (``activities.exportevents``): reads each fragment (``from_bytes``), writes every event row, each
camera's visits and every part's share of the index (``event_lines`` with ``cameras`` and an ``EventIndex``,
``camera_visits_csv``, ``to_bytes``), the rows into a counting sink; then links one part's media-level rows (one a
photo, ``link_observations``) and says what that cost a row. Its peak resident
memory (VmHWM) is measured against its own baseline after the imports, before the link (``grouping_peak...``: what
the events step holds) and at the end (``peak...``: the link is another activity on Azure, with only its part's share). Photos come in bursts of ``--burst`` a few
seconds apart, bursts minutes to days apart (``--burst 1``: every photo its own event, the worst case for time).
``--mixed``: every fourth burst of each camera is a list's sequence (its own id within the camera), the others
have none, as where a captures file covers only some photos: every camera's sequences' spans are then joined
(``_join_cameras``, many small cameras at a time; ``_camera_runs`` for a camera over ``SMALL_CAMERA_RECORDS``).

    python bench/camtrap_events.py --images 10000000 --cameras 1000 --parts 50 --burst 3

Prints one JSON line. Never a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_kib() -> int:
    """This process's peak resident set size (VmHWM), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def make_fragments(folder: Path, images: int, cameras: int, parts: int, burst: int, seed: int,
                   mixed: bool = False) -> int:
    """Write the parts' fragments; returns their total size in bytes."""
    import numpy as np

    from core import camtrap_events as ev
    from gpu_batch.formats import camtrapdp

    rnd = np.random.default_rng(seed)
    per_camera = -(-images // cameras)
    camera = np.minimum(np.arange(images) // per_camera, cameras - 1).astype(np.int32)
    # each camera's photos in time order: a burst's photos 0-4 s apart, bursts 2 minutes to 2 days apart
    gap = np.where(np.arange(images) % burst == 0, rnd.integers(120, 2 * 86400, images), rnd.integers(0, 5, images))
    start = np.int64(1_717_200_000)  # 2024-06-01
    epoch = np.empty(images, np.int64)
    for c in range(cameras):
        lo, hi = c * per_camera, min(images, (c + 1) * per_camera)
        epoch[lo:hi] = start + np.cumsum(gap[lo:hi])
    sequence = np.full(images, -1, np.int64)
    if mixed:  # each camera's bursts numbered from 0; every fourth one a list's sequence named by that number
        opens = np.arange(images) % burst == 0
        number = np.cumsum(opens) - 1
        first_of_camera = np.searchsorted(camera, np.arange(cameras))
        number -= number[np.minimum(first_of_camera, images - 1)][camera]
        sequence = np.where(number % 4 == 0, number, -1)
    counts = np.zeros((images, len(ev.KINDS)), np.uint16)
    kind = rnd.integers(0, 8, images)  # about half the photos blank, an animal in most of the rest
    counts[kind == 1, 0] = counts[kind == 2, 0] = 1
    counts[kind == 3, 0] = 2
    counts[kind == 4, 1] = 1
    counts[kind == 5, 2] = 1
    best = np.where(counts > 0, rnd.random((images, len(ev.KINDS)), dtype=np.float32), 0).astype(np.float32)
    names = [f"site{c // 20:03d}/cam{c % 20:02d}" for c in range(cameras)]
    # the photos' mediaIDs as the records keep them, of the names the link below gives its COCO lines
    media = np.fromiter((ev.media_number(camtrapdp.media_id(_photo(i))) for i in range(images)), np.uint64, images)
    total = 0
    bounds = np.linspace(0, images, parts + 1).astype(np.int64)
    for p, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        used = np.unique(camera[lo:hi])
        local = np.searchsorted(used, camera[lo:hi]).astype(np.int32)
        listed = np.unique(sequence[lo:hi][sequence[lo:hi] >= 0])
        mine = np.where(sequence[lo:hi] >= 0, np.searchsorted(listed, sequence[lo:hi]), -1).astype(np.int32)
        records = ev.EventRecords([names[c] for c in used.tolist()], [f"seq{k}" for k in listed.tolist()], local,
                                  mine, epoch[lo:hi].copy(), np.zeros(hi - lo, np.int16), counts[lo:hi].copy(),
                                  best[lo:hi].copy(), media[lo:hi].copy())
        data = records.to_bytes()
        (folder / f"{p:05d}.events").write_bytes(data)
        total += len(data)
    return total


def _photo(i: int) -> str:
    """The synthetic name of photo ``i`` (its mediaID is what the records keep)."""
    return f"img/{i:08d}.jpg"


def combine(folder: Path, interval_s: float) -> dict[str, object]:
    """The combine's work on the fragments in ``folder``, measured."""
    from core import camtrap_events as ev

    baseline = _peak_kib()
    t0, c0 = time.perf_counter(), time.process_time()
    parts = [ev.EventRecords.from_bytes(path.read_bytes()) for path in sorted(folder.glob("*.events"))]
    loaded = time.process_time() - c0
    class VisitsRows:
        """camera-visits.csv's rows formatted as each camera is done, counted (as exports_events streams them)."""

        def __init__(self) -> None:
            self.count, self.bytes, self._out = 0, len(ev.camera_visits_csv([], interval_s, 0.2)), io.StringIO()
            self._writer = csv.writer(self._out)

        def append(self, visits: ev.CameraVisits) -> None:
            self._writer.writerow(ev.camera_visits_row(visits, interval_s, 0.2))
            self.bytes += len(self._out.getvalue().encode("utf-8"))
            self._out.seek(0)
            self._out.truncate()
            self.count += 1

    cameras = VisitsRows()
    index = ev.EventIndex()
    shares: dict[int, object] = {}  # each part's frames, streamed to a file as exports_events streams them to blobs
    frames = ev.EventFrames(len(parts), lambda i: shares.setdefault(i, (folder / f"{i:05d}.frames").open("wb")))
    days_bytes = [0]  # camera-days.csv, each camera's rows formatted as it is done (as exports_events streams them)

    def days(camera: ev.CameraDays) -> None:
        days_bytes[0] += sum(len(text.encode("utf-8")) for text in ev.camera_days_rows(camera, interval_s, 0.2))

    rows = events = written = 0
    for text, n, found in ev.event_lines(parts, "MegaDetector v5a.0.0", "2026-12-04T00:00:00+00:00", interval_s,
                                         cameras, index, frames, days):
        written += len(text.encode("utf-8"))
        rows += n
        events += found
    for stream in shares.values():
        stream.close()  # type: ignore[attr-defined]
    frames_bytes = [(folder / f"{i:05d}.frames").stat().st_size for i in shares]
    index_bytes, first_share = [], b""
    for k, p in enumerate(parts):  # each part's share of the index, as exports_events writes it (and lets it go)
        share = index.to_bytes(ev.time_windows(p))
        index_bytes.append(len(share))
        first_share = share if k == 0 else first_share
    grouping_cpu = time.process_time() - c0
    grouping_peak = _peak_kib()  # exports_events' own (the link below is another activity's)
    # one part's link (exports_link_part) of its own observation rows, media-level, one per photo, as written
    part_index = ev.EventIndex.from_bytes(first_share)
    first = parts[0]
    sample = [f"x_1,{first.deployments[d]},m{k},,{stamp},{stamp},media,blank,,,,,,,,,,,,,,,machine,MD,t,,,\r\n"
              for k, (d, stamp) in enumerate(zip(first.deployment.tolist(), ev._timestamps(first.epoch, first.offset)))]
    l0 = time.process_time()
    linked = sum(1 for line in ev.link_observations(iter(sample), part_index, set()) if ",,20" not in line)
    link_cpu = time.process_time() - l0
    # and its COCO image lines numbered (link_coco_images): one a photo, as CocoWriter writes them
    part_frames = ev.EventFrames.from_bytes((folder / "00000.frames").read_bytes())
    images = [',{"id":"%s","file_name":"%s","width":2048,"height":1536,"datetime":"2024:06:01 05:00:00"}\n'
              % (_photo(i), _photo(i)) for i in range(len(first))]
    c1 = time.process_time()
    numbered_lines = sum(1 for line in ev.link_coco_images(iter(images), part_frames) if "frame_num" in line)
    coco_cpu = time.process_time() - c1
    return {"records": sum(len(p) for p in parts), "events": events, "event_rows": rows, "event_rows_bytes": written,
            "cameras": cameras.count, "camera_visits_bytes": cameras.bytes, "camera_days_bytes": days_bytes[0],
            "read_s_cpu": round(loaded, 2),
            "index_mib_all_parts": round(sum(index_bytes) / 2**20, 1),
            "frames_mib_all_parts": round(sum(frames_bytes) / 2**20, 1),
            "coco_lines_numbered": numbered_lines,
            "coco_link_us_per_image": round(coco_cpu / max(len(images), 1) * 1e6, 2),
            "link_one_part_rows": len(sample), "link_rows_with_event": linked,
            "link_us_per_row": round(link_cpu / max(len(sample), 1) * 1e6, 2),
            "cpu_s": round(grouping_cpu, 2), "wall_s": round(time.perf_counter() - t0, 2),
            "grouping_peak_rss_mib_above_baseline": round((grouping_peak - baseline) / 1024, 1),
            "peak_rss_mib_above_baseline": round((_peak_kib() - baseline) / 1024, 1),
            "baseline_rss_mib": round(baseline / 1024, 1),
            "us_per_event_cpu": round(grouping_cpu / max(events, 1) * 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--parts", type=int, default=50, help="merge parts (200,000 images each at ten million)")
    ap.add_argument("--burst", type=int, default=3, help="photos per burst (1: every photo its own event)")
    ap.add_argument("--mixed", action="store_true",
                    help="every fourth burst a list's sequence, the rest none (every camera's spans joined)")
    ap.add_argument("--interval-s", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--combine-only", type=Path, help=argparse.SUPPRESS)  # the measured child
    args = ap.parse_args()
    if args.combine_only:
        print(json.dumps(combine(args.combine_only, args.interval_s)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        size = make_fragments(folder, args.images, args.cameras, args.parts, args.burst, args.seed,
                              args.mixed)
        made = time.perf_counter() - t0
        child = subprocess.run([sys.executable, __file__, "--combine-only", str(folder),
                                "--interval-s", str(args.interval_s)], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        result = json.loads(child.stdout)
    print(json.dumps({"images": args.images, "cameras": args.cameras, "parts": args.parts, "burst": args.burst,
                      "mixed": args.mixed,
                      "fragments_mib": round(size / 2**20, 1), "made_s": round(made, 1), **result}))


if __name__ == "__main__":
    main()
