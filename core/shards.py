"""Image selection and shard planning, streaming so a 10M-image container never sits in memory at once.

Pure: it takes an iterable of blob names (the storage adapter lists them in lexicographic order, as Azure does) and
yields shards. Deterministic: the same listing and request give the same shards, which is what makes the task id a
promise ("same request, same work").

Two ways to the same shards: ``select_images`` + ``plan_shards`` over one listing stream (``run_enumerate``), and the
parallel enumeration (``orchestrations.enumeration``), which lists virtual folders in parallel *parts* and then cuts
shards from the parts' counts (``selected_counts``, ``shard_slices``). Both select the same images in the same
order, because the selection rules are mergeable:

* ``first_n``: the first N images of the global listing order (parts are concatenated in that order);
* ``sample_n``: the N images with the smallest seeded hash keys (``sample_key``: blake2b of the seed and the name,
  ties impossible in practice and broken by the name), kept in listing order. Every image is equally likely to be
  among them (a uniform sample without replacement) and each part can keep its own N smallest keys, which merge.
  (Before the parallel enumeration this was a seeded reservoir sample: a request with ``sample_n`` now selects a
  different, equally uniform, sample than it did then.)
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Iterable, Iterator, Sequence, TypedDict

from gpu_batch.manifest import has_dot_segment as has_dot_segment  # re-exported: requests and image lists use it

# MegaDetector's own image extensions (ct_utils / path_utils IMG_EXTENSIONS), compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".gif", ".png")


def is_image_name(name: str) -> bool:
    """Whether a listed blob is an image trapbatch runs: an image extension, not hidden, and no ``.``/``..`` folder
    (``has_dot_segment``: such a name would be read as another blob, so the listing passes it over and says so,
    ``core.notimages``). The dot check runs only on names holding ``/.`` or starting with ``.`` (a per-name cost)."""
    lower = name.lower()
    return (lower.endswith(IMAGE_EXTENSIONS) and not lower.rsplit("/", 1)[-1].startswith(".")
            and not (("/." in name or name[:1] == ".") and has_dot_segment(name)))


def select_images(names: Iterable[str], first_n: int | None = None, sample_n: int | None = None,
                  seed: int | None = None) -> Iterator[str]:
    """Filter to images, then keep the first N, or a seeded uniform sample of N (the N smallest ``sample_key``s),
    in listing order either way."""
    images = (n for n in names if is_image_name(n))
    if first_n is not None:
        yield from islice(images, first_n)
        return
    if sample_n is None:
        yield from images
        return
    smallest = heapq.nsmallest(sample_n, ((sample_key(seed, name), i, name) for i, name in enumerate(images)))
    yield from (name for _, _, name in sorted(smallest, key=lambda t: t[1]))


def sample_key(seed: int | None, name: str) -> tuple[str, str]:
    """The order of a seeded sample: the N images with the smallest keys are the sample.

    A 128-bit hash of seed and name (hex, so string order is numeric order), then the name (a tie-break that never
    matters in practice but keeps the choice exact). Independent of listing order and of how the listing is split.
    """
    digest = hashlib.blake2b(f"{seed or 0}\0{name}".encode("utf-8"), digest_size=16).hexdigest()
    return digest, name


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


# ---------------------------------------------------------------- parallel enumeration (pure parts)

@dataclass(frozen=True, slots=True)
class ListingLimits:
    """How the parallel enumeration splits its work; fixed when the plan is made and stored with it.

    Every activity is bounded whatever the container holds: the plan lists at most ``plan_items`` folder entries
    (one level, a second one while there are fewer than ``expand_below`` folders), a listing call at most about
    ``names_per_call`` blob names (whole pages of 5,000; a few us of listing CPU each with ``adapters.listing``, ~10x
    that through the SDK's ``list_blobs``: ``bench/RESULTS.md``), a shard-writing call about
    ``images_per_write`` images. Units (``max_units``) are what runs in parallel. Defaults suit production;
    tests pass small values to reach every branch with a few blobs.
    """

    max_units: int = 32
    plan_items: int = 20_000
    expand_below: int = 64
    names_per_call: int = 200_000
    images_per_write: int = 200_000
    page_size: int = 5000  # names per listing request (the service's maximum; tests use less to reach markers)
    # folders the plan's first level may hold, counted apart from ``plan_items`` blobs: 100,000 top-level folders are
    # 20 listing pages, and kept as one leaf they were listed flat, one page after another (2,000 pages at 10M images)
    plan_folders: int = 200_000

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Leaf(TypedDict, total=False):
    """One piece of the listing plan, in listing order: every blob under ``prefix`` (a virtual folder, listed flat),
    or one blob ``name`` the folder listing already saw (a blob beside the folders)."""

    prefix: str
    name: str
    etag: str  # a single blob's ETag, as the plan's listing saw it (``only_new`` compares them; absent: unknown)
    # a folder's listing cost, where the plan knows better than ``FOLDER_WEIGHT`` (``folder_weight_estimate``);
    # absent: ``FOLDER_WEIGHT`` (and from plans written before it)
    weight: int


def merge_level(prefixes: Iterable[str], names: Iterable[str]) -> list[Leaf]:
    """One page of a delimiter listing as leaves in listing order.

    Why sort: the service returns a page's BlobPrefix and Blob elements in one alphabetical order, but the Python SDK
    hands back the page's prefixes first and its blobs after (``BlobPrefixPaged._extract_data_cb``:
    ``segment.blob_prefixes + segment.blob_items``). The set of names under a prefix is one contiguous range of the
    order, so sorting the page by prefix and name restores the service's order (Python compares code points, which
    is UTF-8 byte order; that is the listing order for the names camera traps produce).
    """
    leaves = [Leaf(prefix=p) for p in prefixes] + [Leaf(name=n) for n in names]
    leaves.sort(key=lambda leaf: leaf.get("prefix") or leaf.get("name") or "")
    return leaves


FOLDER_WEIGHT = 1000  # a folder costs as much listing as this many single blobs the plan already saw (a guess)


def leaf_weight(leaf: Leaf) -> int:
    """A leaf's listing cost: its ``weight`` where the plan estimated one, else ``FOLDER_WEIGHT`` for a folder, 1 for
    a single blob."""
    if "prefix" not in leaf:
        return 1
    return max(1, int(leaf.get("weight") or FOLDER_WEIGHT))


def folder_weight_estimate(expanded: Sequence[Sequence[Leaf]], seen: int) -> int:
    """The weight of a folder the plan left unexpanded (its budget ran out) beside sibling folders it expanded: the
    mean weight of those siblings' contents (``expanded``, one list of leaves per sibling), or what the plan saw of the
    folder before giving up (``seen``, in the same weights), whichever is larger; ``FOLDER_WEIGHT`` at least.

    Why: the expanded siblings became one leaf per subfolder (``FOLDER_WEIGHT`` each), the unexpanded folders stayed one
    leaf of ``FOLDER_WEIGHT`` each however many subfolders they hold, so ``group_leaves`` put every unexpanded folder
    into the last unit: at 50 sites of 2,000 camera folders of 100 images, 8 of the 10 million images in one unit,
    listed one page after another (1,600 pages) while the other 31 units had finished."""
    sizes = [sum(leaf_weight(leaf) for leaf in contents) for contents in expanded]
    mean = sum(sizes) // len(sizes) if sizes else 0
    return max(FOLDER_WEIGHT, mean, seen)


def group_leaves(leaves: Sequence[Leaf], max_units: int) -> list[list[Leaf]]:
    """Consecutive leaves grouped into at most ``max_units`` listing units of about equal weight (``leaf_weight``:
    folders ``FOLDER_WEIGHT`` or the plan's estimate, single blobs 1), so units list in parallel and each stays in
    listing order."""
    if not leaves:
        return []
    weights = [leaf_weight(leaf) for leaf in leaves]
    total = sum(weights)
    units = max(1, min(max_units, sum(1 for leaf in leaves if "prefix" in leaf) or 1))
    target = total / units
    groups: list[list[Leaf]] = [[]]
    acc = 0.0
    for leaf, w in zip(leaves, weights):
        if groups[-1] and acc + w / 2 > target * len(groups) and len(groups) < units:
            groups.append([])
        groups[-1].append(leaf)
        acc += w
    return groups


def selected_counts(part_counts: Sequence[int], first_n: int | None = None) -> list[int]:
    """Images each part contributes, in order: all of them, or only the global first ``first_n``."""
    if first_n is None:
        return list(part_counts)
    out, left = [], first_n
    for n in part_counts:
        take = min(n, left)
        out.append(take)
        left -= take
    return out


def first_n_satisfied(unit_counts: Sequence[int], unit_done: Sequence[bool], first_n: int) -> int | None:
    """The unit that completes the first ``first_n`` images, once every unit before it is fully listed (so later units
    need no more listing); None while that is not known yet."""
    acc = 0
    for u, (n, done) in enumerate(zip(unit_counts, unit_done)):
        acc += n
        if acc >= first_n:
            return u
        if not done:
            return None
    return None


class Slice(TypedDict):
    """Images ``[skip, skip + take)`` of the selected images of listing part ``part`` (its index in listing order)."""

    part: int
    skip: int
    take: int


class ShardBatch(TypedDict):
    """Shards ``first .. first + count - 1``, cut from the concatenation of ``slices`` (one activity writes them)."""

    first: int
    count: int
    slices: list[Slice]


# Shards per task at most. Each shard is a pool task with its own start (seconds of a GPU node), its own manifest and
# results blobs (the merge reads them at ~10-30 ms each), and an entry in a shard group's state: a request with
# ``images_per_shard`` 1 over ten million images made ten million of each. 100,000 holds ten million images in shards
# of 100, far smaller than shards need to be. Read at replay time (tests/orchestrations/test_replay_constants.py).
MAX_SHARDS = 100_000

# Images one call of ``only_new``'s reuse step takes (``activities.reuse``), in whole shards: 10 shards of the default
# 10,000 images, what every call took when calls were 10 shards whatever their size. Sized by shards, 100,000 shards of
# 100 images made 10,000 calls in the task orchestrator's history (which never continues as new): ~20,000 events
# replayed, and ~1.7 MB of their inputs sent again, at every later episode. A task records the value when it starts
# (``OrchestrationKnobs.reuse_images_per_call``, ``TRAPBATCH_REUSE_IMAGES_PER_CALL``); read at start only.
REUSE_IMAGES_PER_CALL = 100_000


class TooManyShards(ValueError):
    """Raised by the enumeration before any manifest is written: the task ends Failed with what to post instead."""


def too_many_shards(images: int, images_per_shard: int, limit: int = MAX_SHARDS) -> str | None:
    """Why ``images`` in shards of ``images_per_shard`` are more shards than ``limit``; None when they fit (or
    ``limit`` is 0: unchecked)."""
    shards = -(-images // max(1, images_per_shard))
    if not limit or shards <= limit:
        return None
    return (f"{images} images in shards of {images_per_shard} make {shards} shards, more than the {limit} a "
            f"task may have (each is a pool task with its own start-up); nothing was run: post the request again "
            f"with \"images_per_shard\" of at least {-(-images // limit)} (or leave it out for the app's "
            f"default; it is another task)")


def shard_batches(counts: Sequence[int], images_per_shard: int, images_per_batch: int) -> list[ShardBatch]:
    """Cut the selected images (``counts`` per part, in listing order) into shards of ``images_per_shard``, as
    ``plan_shards`` cuts the single stream, and group the shards into batches of about ``images_per_batch`` images
    (at least one shard), each naming only the part slices it needs. Pure arithmetic on counts: no names."""
    if images_per_shard < 1:
        raise ValueError("images_per_shard must be >= 1")
    total = sum(counts)
    shards = -(-total // images_per_shard)
    per_batch = max(1, images_per_batch // images_per_shard)
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    batches: list[ShardBatch] = []
    for first in range(0, shards, per_batch):
        count = min(per_batch, shards - first)
        lo, hi = first * images_per_shard, min(total, (first + count) * images_per_shard)
        slices: list[Slice] = []
        for part, n in enumerate(counts):
            a, b = max(lo, starts[part]), min(hi, starts[part] + n)
            if a < b:
                slices.append({"part": part, "skip": a - starts[part], "take": b - a})
        batches.append({"first": first, "count": count, "slices": slices})
    return batches
