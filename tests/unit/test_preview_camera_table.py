"""The preview page's camera table (``activities.previews._camera_visits``) reads ``camera-visits.csv`` a row at a
time and keeps only the rows it lists.

Why: the camera is MegaDetector's camera folder, so camera-day folders make a camera per folder: ten million images
in folders of ten are a million rows. Read whole, each row a dict twice, the table held ~1.4 kB of heap a camera
(1.4 GB at a million, ``bench/camera_table.py``) in the previews activity, for a page that lists ``CAMERAS_LISTED``.
"""
from __future__ import annotations

import gc
import tracemalloc

from activities import previews
from bench.camera_table import OneBlobStore as _Store
from bench.camera_table import visits_csv as _csv
from gpu_batch import layout


def test_the_camera_table_counts_every_camera_and_lists_the_first() -> None:
    n = previews.CAMERAS_LISTED + 7
    table = previews._camera_visits(_Store(_csv(n)), "c", "t1", "")
    assert table is not None
    assert table["total"] == n and len(table["rows"]) == previews.CAMERAS_LISTED
    assert table["visits"] == sum(5 + i % 30 for i in range(n))
    # flagged: at least MOSTLY_BLANK_VISITS visits, 80 % or more of them blank
    assert table["flagged"] == sum(1 for i in range(n) if 5 + i % 30 >= 20 and i % 25 >= 0.8 * (5 + i % 30))
    assert table["rows"][0]["deploymentID"] == "site-0000/cam/2024-06-01" and table["interval"] == "60"
    assert table["threshold"] == "0.2" and table["blob"] == f"c/{layout.camera_visits_blob('t1', '')}"
    assert previews._camera_visits(_Store(_csv(0)), "c", "t1", "") is None  # a header alone: no table


def test_the_camera_tables_heap_does_not_grow_with_the_cameras() -> None:
    sizes = (2_000, 20_000)
    stores = {n: _Store(_csv(n)) for n in sizes}
    previews._camera_visits(stores[sizes[0]], "c", "t1", "")  # first allocations (modules, codecs) are no table's
    peaks = {}
    for n, store in stores.items():
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            assert previews._camera_visits(store, "c", "t1", "")["total"] == n  # type: ignore[index]
            peaks[n] = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    per_camera = (peaks[sizes[1]] - peaks[sizes[0]]) / (sizes[1] - sizes[0])
    assert per_camera < 100, (peaks, per_camera)  # bytes a camera; the table read whole and held: ~1,450
