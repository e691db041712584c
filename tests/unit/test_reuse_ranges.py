"""``activities.reuse.PreviousRanges``: the previous shards a new shard reads are exactly those a pass over every
previous range found, in the same order, with name-ordered and hash-spread (overlapping) ranges alike."""
from __future__ import annotations

import bisect
import random

import pytest

from activities.reuse import PreviousRanges


def _every_range(ranges: list[tuple[str, str, str]], names: list[str]) -> list[tuple[str, str, str]]:
    """What the call did before the index: each previous range in turn, kept when one of ``names`` is in it."""
    kept = []
    for sid, low, high in ranges:
        at = bisect.bisect_left(names, low)
        if at < len(names) and names[at] <= high:
            kept.append((sid, low, high))
    return kept


def _name(i: int) -> str:
    return f"site{i % 7}/cam{i % 3}/{i:06d}.jpg"


@pytest.mark.parametrize("spread", [False, True])
def test_the_index_finds_what_a_pass_over_every_range_found(spread: bool) -> None:
    rnd = random.Random(7)
    everything = sorted({_name(rnd.randrange(100_000)) for _ in range(3_000)})
    order = rnd.sample(everything, len(everything)) if spread else everything  # spread: an old image list's units
    ranges = []
    for j in range(0, len(order), 25):
        shard = order[j: j + 25]
        ranges.append((f"s{j // 25:05d}", min(shard), max(shard)))
    rnd.shuffle(ranges)  # range blobs come in the order of their first shard, not of their names
    index = PreviousRanges(ranges)
    assert len(index) == len(ranges)
    for _ in range(300):
        first = rnd.randrange(len(everything))
        names = sorted(rnd.sample(everything[first: first + 60], min(30, len(everything) - first)))
        names += sorted(_name(100_000 + rnd.randrange(1_000)) for _ in range(rnd.randrange(2)))  # names not seen
        names.sort()
        assert index.holding(names) == _every_range(ranges, names)
    assert index.holding([]) == [] and PreviousRanges([]).holding(everything[:3]) == []


def test_a_wide_range_early_on_is_found_without_hiding_the_narrow_ones_after_it() -> None:
    ranges = [("s00000", "a", "z"), ("s00001", "b", "c"), ("s00002", "d", "e"), ("s00003", "x", "y")]
    index = PreviousRanges(ranges)
    assert index.holding(["d1"]) == [ranges[0], ranges[2]]
    assert index.holding(["c", "x"]) == [ranges[0], ranges[1], ranges[3]]  # both ends are in their ranges
    assert index.holding(["0"]) == [] and index.holding(["zz"]) == []
