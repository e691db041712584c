"""An exports part's Python heap does not grow with its shard (``activities.exports.ViewLines`` reads each merge
view's export sections a slice at a time, ``gpu_batch.formats.mergeview.ExportSections``).

Why: a request may ask for shards of 100,000 images and an activity shares its Flex Consumption instance with seven
others; a view's sections read whole and held took ~2.3 kB of heap an image (226 MB at 100,000:
``bench/exports_memory.py``). With small slices and fragment blocks, the heap of a part of 2,000 images and of one of
20,000 (each one shard, built as the merge leaves it, in Azurite) must differ by what the part keeps per image by
design (its event records, ~150 bytes), far from a view's worth.
"""
from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from activities import exportparts
from bench.exports_memory import run_part, setup
from gpu_batch.formats import mergeview

SIZES = (2_000, 20_000)


def test_an_exports_parts_heap_does_not_grow_with_its_shard(storage_connection: str, unique_name: str,
                                                             monkeypatch: Any) -> None:
    monkeypatch.setattr(mergeview, "SLICE_BYTES", 64 * 1024)
    monkeypatch.setattr(exportparts, "FRAGMENT_BLOCK_BYTES", 256 * 1024)
    monkeypatch.setattr(exportparts, "range_lines", lambda *a, **k: pytest.fail("the entries were read: the view's "
                                                                                "lines were not used"))
    calls = {n: run_part(storage_connection, f"{unique_name}{n}", setup(storage_connection, f"{unique_name}{n}",
                                                                        n)["json_bytes"]) for n in SIZES}
    calls[SIZES[0]]()  # once before: the clients' and modules' first allocations are no part's
    peaks = {}
    for n, call in calls.items():
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            out = call()
            peaks[n] = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert out["images"] == n and out["observations"] > n // 2
    per_image = (peaks[SIZES[1]] - peaks[SIZES[0]]) / (SIZES[1] - SIZES[0])
    assert per_image < 500, (peaks, per_image)  # bytes an image; a view held whole: ~2,300
