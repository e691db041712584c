"""The events step writes ``camera-visits.csv`` a row at a time as each camera is done
(``activities.exports.CameraVisitsWriter`` as ``event_lines``' ``cameras``), holding none of them.

Why: the camera is MegaDetector's camera folder, so camera-day folders make a camera a folder (a million at ten
million images in folders of ten); the step held every camera's visits (~390 bytes each) and then the table whole.
Same bytes as ``core.camtrap_events.camera_visits_csv`` of the list.
"""
from __future__ import annotations

import gc
import tracemalloc
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from activities import exports
from activities.exports import CameraVisitsWriter
from adapters.blobs import BlobStore
from bench.camtrap_events import make_fragments
from core import camtrap_events as ev
from gpu_batch import layout

COMPLETED = "2026-12-01T10:00:00+00:00"


def _parts(folder: Path, cameras: int) -> list[ev.EventRecords]:
    folder.mkdir()
    make_fragments(folder, 3 * cameras, cameras, 2, 3, 1)
    return [ev.EventRecords.from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.events"))]


def test_camera_visits_are_written_as_the_cameras_are_done(store: BlobStore, unique_name: str, tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    monkeypatch.setattr(exports, "VISITS_BLOCK_BYTES", 64 * 1024)  # several blocks at these sizes
    store.ensure_container(unique_name)
    ctx: Any = SimpleNamespace(task_id="t1", variant="", container=unique_name, cut=0.2)
    held = {}
    for cameras in (500, 5_000):
        parts = _parts(tmp_path / str(cameras), cameras)
        listed: list[ev.CameraVisits] = []
        tracemalloc.start()
        try:
            # first, traced: the grouping sorts the parts' records again (new arrays a photo) and frees the last
            deque(ev.event_lines(parts, "MD", COMPLETED, 60, listed), maxlen=0)
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            with CameraVisitsWriter(store, ctx, 60) as writer:
                deque(ev.event_lines(parts, "MD", COMPLETED, 60, writer), maxlen=0)
                gc.collect()
                held[cameras] = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert writer.cameras == len(listed) == cameras
        assert store.read_bytes(unique_name, layout.camera_visits_blob("t1")) == ev.camera_visits_csv(listed, 60, 0.2)
    per_camera = (held[5_000] - held[500]) / 4_500
    assert per_camera < 100, (held, per_camera)  # bytes a camera held; the visits listed: ~390


def test_a_grouping_that_fails_writes_no_camera_visits(store: BlobStore, unique_name: str) -> None:
    store.ensure_container(unique_name)
    ctx: Any = SimpleNamespace(task_id="t1", variant="", container=unique_name, cut=0.2)
    try:
        with CameraVisitsWriter(store, ctx, 60) as writer:
            writer.append(ev.CameraVisits("a", "", "", 0, 1, 1, (1, 0, 0, 0), 0))
            raise RuntimeError("the grouping failed")
    except RuntimeError:
        pass
    assert store.read_bytes_or_none(unique_name, layout.camera_visits_blob("t1")) is None
