"""choose_sample (activities.enumerate.run_choose_sample): the same threshold and per-part counts as one merge of
every part's keys, with one part's keys in memory at a time (a merge of them all held ~2.3 GB at ten million images,
past a whole Flex instance)."""
from __future__ import annotations

import heapq
import json
import random
import tracemalloc
from bisect import bisect_right
from types import SimpleNamespace
from typing import Any

import pytest

from activities.enumerate import run_choose_sample
from core.shards import sample_key
from gpu_batch import layout

TASK = "task-00112233445566778899"


class Store:
    """Blobs as JSON text, read back as the real store reads them (a fresh document per read)."""

    def __init__(self) -> None:
        self.blobs: dict[str, str] = {}

    def read_json(self, container: str, name: str) -> Any:
        return json.loads(self.blobs[name])

    def write_json(self, container: str, name: str, value: Any) -> str:
        self.blobs[name] = json.dumps(value)
        return "etag"


def _parts(store: Store, sizes: list[int], sample_n: int, seed: int) -> list[tuple[int, int]]:
    """Each part's sample file as run_list_part writes it: its ``sample_n`` smallest keys, sorted."""
    rng = random.Random(seed)
    parts = []
    for i, size in enumerate(sizes):
        names = [f"cam{i}/img{rng.getrandbits(40):012x}.jpg" for _ in range(size)]
        keys = heapq.nsmallest(sample_n, (sample_key(seed, n) for n in names))
        store.write_json("c", layout.listing_sample_blob(TASK, i % 3, i), keys)
        parts.append((i % 3, i))
    return parts


def _merged(store: Store, parts: list[tuple[int, int]], sample_n: int) -> tuple[list[str], list[int]]:
    """What one merge of every part's keys chooses (the implementation this replaced)."""
    keys = [[tuple(k) for k in store.read_json("c", layout.listing_sample_blob(TASK, u, p))] for u, p in parts]
    chosen = list(heapq.merge(*keys))[:sample_n]
    threshold = chosen[-1] if chosen else ("", "")
    return list(threshold), [bisect_right(k, threshold) for k in keys]


@pytest.mark.parametrize("sizes, sample_n", [
    ([500, 800, 0, 1200, 30], 700),  # fewer than the images: a threshold inside the parts
    ([500, 800, 0, 1200, 30], 2530),  # exactly all of them
    ([500, 800], 10_000),  # more than there are
    ([0, 0], 5),  # nothing listed
    ([1], 1),
])
def test_the_threshold_and_counts_are_one_merges(sizes: list[int], sample_n: int) -> None:
    store = Store()
    parts = _parts(store, sizes, sample_n, seed=sum(sizes) + sample_n)
    request = SimpleNamespace(sample_n=sample_n)
    out = run_choose_sample(TASK, request, SimpleNamespace(container="c"), store, parts)  # type: ignore[arg-type]
    threshold, counts = _merged(store, parts, sample_n)
    assert out["counts"] == counts and sum(counts) == min(sample_n, sum(sizes))
    assert store.read_json("c", layout.sample_threshold_blob(TASK)) == {"key": threshold}


def test_only_one_part_is_held_at_a_time() -> None:
    """Twenty parts of 5,000 keys, a sample of all of them: the peak stays near one part's keys, not twenty."""
    store = Store()
    parts = _parts(store, [5_000] * 20, 100_000, seed=3)
    one_part = len(store.blobs[layout.listing_sample_blob(TASK, *parts[0])])
    request = SimpleNamespace(sample_n=100_000)
    tracemalloc.start()
    try:
        out = run_choose_sample(TASK, request, SimpleNamespace(container="c"), store, parts)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out["counts"] == [5_000] * 20
    # one part read and held as tuples is ~10x its text (measured 3.2 MB for 330 KB); the merge of all twenty held
    # 22.6 MB: the bound does not grow with the number of parts
    assert peak < 15 * one_part, (peak, one_part)
