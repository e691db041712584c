"""The preview page's camera table by camera count: ``python bench/camera_table.py [--cameras 10000 100000 1000000]``.

Why: the camera is MegaDetector's camera folder (``camtrapdp.camera_folder``), so a collection kept in camera-day
folders has one camera per folder, and ``camera-visits.csv`` a row per camera (ten million images in folders of ten:
a million rows). The previews activity reads it for the page's table (``activities.previews._camera_visits``), which
lists ``CAMERAS_LISTED`` of them and counts the rest.

What it does, per count N, in a fresh process each: makes the CSV of N cameras (``core.camtrap_events.
camera_visits_csv``), serves it from an in-memory stand-in of a blob (whole and by ranges, as ``BlobReader`` reads
it), and calls ``_camera_visits`` under ``tracemalloc``: prints the CSV's size, the call's CPU seconds and its heap
peak above the heap before it (the CSV's own bytes excluded), one JSON line per count. Never a test: timings depend
on the machine (``tests/unit/test_preview_camera_table.py`` holds the heap bound).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class MemoryBlob:
    """A blob client of a bytes object, answering what ``adapters.block_writer.BlobReader`` asks."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_blob_properties(self) -> Any:
        return SimpleNamespace(size=len(self.data), etag='"e"')

    def download_blob(self, offset: int, length: int, **_: Any) -> Any:
        piece = self.data[offset:offset + length]
        return SimpleNamespace(readall=lambda: piece)


class OneBlobStore:
    """One blob, readable whole (``read_bytes_or_none``) and by ranges (``service.get_blob_client``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.service = SimpleNamespace(get_blob_client=lambda container, name: MemoryBlob(self.data))

    def read_bytes_or_none(self, container: str, name: str) -> bytes | None:
        return self.data


def visits_csv(cameras: int) -> bytes:
    """``camera-visits.csv`` of ``cameras`` camera-day folders, a hundred a site, visits and blanks varied."""
    from core import camtrap_events as ev

    kinds = len(ev.KINDS)
    return ev.camera_visits_csv([ev.CameraVisits(f"site-{i // 100:04d}/cam/2024-06-{i % 28 + 1:02d}",
                                                 "2024-06-01T00:00:00+00:00", "2024-06-02T00:00:00+00:00", 86400,
                                                 10 + i % 50, 5 + i % 30, tuple((i + k) % 5 for k in range(kinds)),
                                                 i % 25) for i in range(cameras)], 60, 0.2)


def measure(cameras: int) -> dict[str, object]:
    from activities import previews

    store = OneBlobStore(visits_csv(cameras))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cpu = time.process_time()
    table = previews._camera_visits(store, "c", "t", "")
    cpu = time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert table is not None and table["total"] == cameras
    return {"cameras": cameras, "csv_mb": round(len(store.data) / 1e6, 1), "cpu_s": round(cpu, 2),
            "heap_peak_mb": round(peak / 1e6, 1), "heap_bytes_per_camera": round(peak / cameras)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the measured child
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    for n in args.cameras:
        child = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True,
                               check=True)
        print(child.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
