"""How often a resumed listing lists each shard's blob folder (``layout.shard_prefix``), counted, not timed.

Why: per shard, a resumed listing's write call (``activities.enumerate.run_write_shards``) has several readers of the
shard's blobs: the drop of results of images replaced since (``activities.replaced_images``), the carry of earlier
results (``activities.carried_results``, the shard's own later attempts and its neighbours') and the coverage that
decides which shards need no pool task (``activities.shard_results.earlier_coverage``). Each listed the folder on its
own: 2 to 4 List Blobs a shard where one does (~4,000 at 10M images of 1,000 shards). The listings are counted by a
store that records the prefix of every listing call (``_Listings``), in Azurite, over the real parallel enumeration
(``tests/integration/test_carried_results.py``'s first run: results present, one shard with an attempt 2).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

from adapters import listing
from adapters.blobs import BlobStore
from core.settings import Settings
from gpu_batch import layout
from tests.integration.test_carried_results import CUT_SHORT, SECOND_JOB, TASK, _first_run, _merged, _run_again
from tests.integration.test_parallel_enumeration import SMALL, env, manifests, run_parallel  # noqa: F401 - fixture


class _Listings(BlobStore):
    """The store, counting its listing calls by prefix (each one List Blobs or more: a shard folder's is one page)."""

    def __init__(self, store: BlobStore) -> None:
        super().__init__(store.service)
        self.by_prefix: Counter[str] = Counter()

    def list_names(self, container: str, prefix: str = "") -> Iterator[str]:
        self.by_prefix[prefix] += 1
        yield from super().list_names(container, prefix)

    def list_etags(self, container: str, prefix: str) -> dict[str, str]:
        self.by_prefix[prefix] += 1
        return super().list_etags(container, prefix)

    def iter_level_pages(self, container: str, prefix: str, page_size: int = 5000) -> Iterator[listing.ListedPage]:
        self.by_prefix[prefix] += 1
        yield from super().iter_level_pages(container, prefix, page_size)

    def list_level(self, container: str, prefix: str, max_items: int, page_size: int = 5000, *args: Any,
                   **kwargs: Any) -> tuple[list[str], list[str], bool]:
        self.by_prefix[prefix] += 1
        return super().list_level(container, prefix, max_items, page_size, *args, **kwargs)

    def list_blobs_page(self, container: str, prefix: str, marker: str | None,
                        page_size: int = 5000) -> tuple[list[listing.ListedBlob], str | None]:
        self.by_prefix[prefix] += 1
        return super().list_blobs_page(container, prefix, marker, page_size)

    def folders(self, shards: int) -> list[int]:
        """How many times each shard folder below ``shards`` was listed, by index."""
        return [self.by_prefix[layout.shard_prefix(TASK, layout.shard_id(i))] for i in range(shards)]


def _resumed(settings: Settings, store: BlobStore, container: str, change: Any = None) -> tuple[_Listings, int]:
    """The first run (results present), ``change`` made to the container, then the resumed run's listing through a
    counting store; returns it and the resumed listing's shard count."""
    request, _ = _first_run(settings, store, container)
    if change is not None:
        change(manifests(settings, store, TASK))
    counted = _Listings(store)
    run_parallel(settings, counted, TASK, request, SMALL, run_job=SECOND_JOB)
    return counted, len(manifests(settings, store, TASK))


def test_a_resumed_listing_lists_each_shard_folder_once(env: tuple[Settings, BlobStore, str]) -> None:
    """Nothing changed since: the carry (the shard's own attempt 2 and later) and the coverage each listed the folder
    (2 a shard). One listing now serves both: 1 a shard."""
    settings, store, container = env
    counted, shards = _resumed(settings, store, container)
    assert shards > 4
    assert counted.folders(shards) == [1] * shards
    assert _run_again(settings, store) == []


def test_a_resumed_listing_after_a_replacement_and_insertions_lists_each_shard_folder_once_a_call(
        env: tuple[Settings, BlobStore, str]) -> None:
    """Two images added before all others (every boundary moves: each shard finds names in its left neighbour's earlier
    ETags) and one replaced (its shard's drop lists too): the drop, the carry's own and its neighbour's, and the
    coverage listed up to 4 times a shard. Now once a shard by its own write call; a shard is listed once more only by
    the next batch's call (``SMALL`` cuts 2 shards a call), whose first shard takes results from it: that call never
    wrote it, so it lists it itself."""
    settings, store, container = env
    replaced: list[str] = []

    def change(before: list[list[str]]) -> None:
        for i in range(2):  # under a shard's worth: each shard's new names are in its left neighbour only
            store.write_bytes(container, f"0/new-{i}.jpg", b"")
        replaced.append(before[2][1])
        store.write_bytes(container, replaced[0], b"other bytes")

    counted, shards = _resumed(settings, store, container, change)
    per_call = SMALL.images_per_write // 3  # shards a write call cuts (images_per_shard 3)
    firsts = set(range(per_call, shards, per_call))  # each later call's first shard looks into its left neighbour
    assert counted.folders(shards) == [1 + (i + 1 in firsts) for i in range(shards)]
    assert sorted(_run_again(settings, store)) == sorted([*(f"0/new-{i}.jpg" for i in range(2)), *replaced])
    _merged(settings, store)


def test_a_shard_finished_by_a_later_attempt_alone_is_done_after_its_one_listing(
        env: tuple[Settings, BlobStore, str]) -> None:
    """A shard whose attempt 1 wrote nothing and whose attempt 2 finished every image: the carry writes attempt 1's
    results (the entries of attempt 2) after the folder's one listing, and the coverage, which reads attempt 1 first
    (none: nothing finished), must see that blob: the shard is done, no pool task. Read from a listing that missed the
    write, it went to the pool, its worker finding nothing to do (~13 s of a GPU node); and a shard partly finished
    in attempt 2 only was not counted ``partly``."""
    settings, store, container = env
    request, done = _first_run(settings, store, container)
    before = manifests(settings, store, TASK)
    j = next(i for i, shard in enumerate(before) if CUT_SHORT not in shard and len(shard) == 3)
    k = next(i for i, shard in enumerate(before) if i != j and CUT_SHORT not in shard and len(shard) == 3)
    for i, finished in ((j, before[j]), (k, before[k][:2])):
        sid = layout.shard_id(i)
        store.delete_if_exists(settings.container, layout.attempt_results_blob(TASK, sid, 1))
        store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 2),
                         {"images": [done[n] for n in finished]})

    counted = _Listings(store)
    _, out = run_parallel(settings, counted, TASK, request, SMALL, run_job=SECOND_JOB)
    assert manifests(settings, store, TASK) == before
    assert counted.folders(len(before)) == [1] * len(before)
    assert [i for i, _, _ in out["done"]] == [i for i in range(len(before)) if i != k]
    assert out.get("partly") == [[k, 2]]
    assert _run_again(settings, store) == [before[k][2]]


def test_after_deletions_a_shard_folder_is_listed_again_in_its_own_turn(env: tuple[Settings, BlobStore, str]) -> None:
    """The first two images deleted meanwhile: every boundary moves left, each shard finds names in its right
    neighbour's earlier ETags and its carry lists that folder before the neighbour's turn. That listing is not kept
    for the neighbour's own readers (its drop would read names from before its turn: activities.shard_folders), so
    each folder but the first is listed twice (4 times before: drop, carry, coverage, and the left neighbour's
    carry), the first once; nothing runs again."""
    settings, store, container = env

    def change(before: list[list[str]]) -> None:
        for name in before[0][:2]:
            store.delete_if_exists(container, name)

    counted, shards = _resumed(settings, store, container, change)
    assert counted.folders(shards) == [1] + [2] * (shards - 1)
    assert _run_again(settings, store) == []
