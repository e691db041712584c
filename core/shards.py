"""Image selection and shard planning, streaming so a 10M-image container never sits in memory at once.

Pure: it takes an iterable of blob names (the storage adapter lists them in lexicographic order, as Azure does) and
yields shards. Deterministic: the same listing and request give the same shards, which is what makes the task id a
promise ("same request, same work").
"""
from __future__ import annotations

import random
from itertools import islice
from typing import Iterable, Iterator

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
