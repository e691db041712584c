"""Image selection and shard planning, streaming so a 10M-image container never sits in memory at once.

Pure: it takes an iterable of blob names (the storage adapter lists them in lexicographic order, as Azure does) and
yields shards. Deterministic: the same listing and request give the same shards, which is what makes the task id a
promise ("same request, same work").
"""
from __future__ import annotations

import random
from itertools import islice
from typing import Iterable, Iterator, Sequence

# MegaDetector's own image extensions (ct_utils / path_utils IMG_EXTENSIONS), compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".gif", ".png")


def is_image_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(IMAGE_EXTENSIONS) and not lower.rsplit("/", 1)[-1].startswith(".")


def select_images(names: Iterable[str], first_n: int | None = None, sample_n: int | None = None,
                  seed: int | None = None) -> Iterator[str]:
    """Filter to images, then keep the first N, or a seeded uniform sample of N (reservoir, then sorted)."""
    images = (n for n in names if is_image_name(n))
    if first_n is not None:
        yield from islice(images, first_n)
        return
    if sample_n is None:
        yield from images
        return
    rng = random.Random(seed or 0)
    reservoir: list[str] = []
    for i, name in enumerate(images):
        if i < sample_n:
            reservoir.append(name)
        else:
            j = rng.randint(0, i)
            if j < sample_n:
                reservoir[j] = name
    yield from sorted(reservoir)


def plan_shards(images: Iterable[str], images_per_shard: int) -> Iterator[list[str]]:
    """Cut a stream of image names into consecutive shards of at most ``images_per_shard``."""
    if images_per_shard < 1:
        raise ValueError("images_per_shard must be >= 1")
    it = iter(images)
    while True:
        chunk = list(islice(it, images_per_shard))
        if not chunk:
            return
        yield chunk


def group_shards(shard_count: int, shards_per_group: int) -> list[list[int]]:
    """Shard indices split into groups, one sub-orchestration each."""
    return [list(range(start, min(start + shards_per_group, shard_count)))
            for start in range(0, shard_count, shards_per_group)]


def missing_images(manifest_images: Iterable[str], covered: Iterable[str]) -> list[str]:
    """Images of a manifest that have no result entry yet, in manifest order."""
    done = set(covered)
    return [name for name in manifest_images if name not in done]


def group_count_limit(shard_count: int, shards_per_group: int, max_in_flight: int) -> int:
    """Shards per group for a task: ``shards_per_group``, raised just enough that there are no more groups than
    ``max_in_flight`` (each group needs a share of at least one pool task to make progress)."""
    needed = -(-shard_count // max(1, max_in_flight))  # ceil
    return max(shards_per_group, needed, 1)


def in_flight_shares(group_sizes: Sequence[int], max_in_flight: int) -> list[int]:
    """Each shard group's share of the task's ``TRAPBATCH_MAX_IN_FLIGHT`` pool tasks.

    The rule (deterministic, computed once by the task orchestrator and passed in each group's input): the highest
    level ``L`` such that ``sum(min(size, L)) <= max_in_flight``; each group gets ``min(size, L)``; what is left goes
    one by one to the groups still larger than their share, lowest group number first. So no group gets more than
    it has shards, the shares never sum past ``max_in_flight``, and every group gets at least one when there are no
    more groups than ``max_in_flight`` (``group_count_limit``). Shares are fixed for the task's life: a group that
    finishes early does not hand its share on (the tail of a task may run below the limit).
    """
    sizes = [max(0, s) for s in group_sizes]
    limit = max(0, max_in_flight)
    if sum(sizes) <= limit:
        return list(sizes)
    lo, hi = 0, max(sizes)
    while lo < hi:  # the highest level whose capped sum fits
        mid = (lo + hi + 1) // 2
        if sum(min(s, mid) for s in sizes) <= limit:
            lo = mid
        else:
            hi = mid - 1
    shares = [min(s, lo) for s in sizes]
    left = limit - sum(shares)
    for g, size in enumerate(sizes):
        if left <= 0:
            break
        if size > shares[g]:
            shares[g] += 1
            left -= 1
    return shares
