"""``activities.listing_leftovers``: how the end of a listing finds the shard folders earlier listings of the key left
past its count, on a stub store. They are found by a delimiter listing of the key's shards folder, whose pages may
hold a subset of the results, none at all, with a marker to the rest (learn.microsoft.com rest/api/storageservices/
enumerating-blob-resources): every page is followed to the end, and every shard folder at the count or past it goes,
gaps or not. Azurite with the real listing: tests/integration/test_listing_leftovers.py."""
from __future__ import annotations

from typing import Any, Iterator, cast

import pytest

from activities import listing_leftovers
from adapters import listing
from adapters.blobs import BlobStore
from adapters.listing import ListedPage
from core.settings import Settings
from gpu_batch import layout

SETTINGS = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
TASK = "t"
JOB = "t_r261201120000ab12"


def _folders(*indexes: int) -> list[str]:
    return [layout.shard_prefix(TASK, layout.shard_id(i)) for i in indexes]


class _Store:
    """The shards folder's delimiter listing as the pages given (BlobStore follows the markers: see the last test),
    no batch blobs, and the run's cancel marker when given."""

    def __init__(self, *pages: ListedPage, marker: dict[str, Any] | None = None) -> None:
        self.pages = pages
        self.marker = marker
        self.levels: list[str] = []

    def iter_level_pages(self, container: str, prefix: str, page_size: int = 5000) -> Iterator[ListedPage]:
        self.levels.append(prefix)
        yield from self.pages

    def list_names(self, container: str, prefix: str = "") -> Iterator[str]:
        return iter(())

    def read_json_or_none(self, container: str, name: str) -> Any:
        return self.marker if name == layout.cancel_marker(JOB) else None


@pytest.fixture()
def deleted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    gone: list[str] = []

    def delete_prefix(store: Any, container: str, prefix: str) -> int:
        gone.append(prefix)
        return 1

    monkeypatch.setattr(listing_leftovers, "delete_prefix", delete_prefix)
    return gone


def _drop(store: _Store, shards: int) -> int:
    return listing_leftovers.drop_past_count(TASK, SETTINGS, cast(BlobStore, store), shards, None, JOB)


def test_every_shard_folder_past_the_count_goes_gaps_or_not_highest_first(deleted: list[str]) -> None:
    """A terminated run's parallel manifest writes can leave a gap (shard 2 missing, 4 and 7 written): the probe of
    ``shards``, ``shards + 1``, ... stopped at the first empty shard and left everything after it for good. Fails
    without the change (nothing past the gap at the count goes)."""
    root = layout.shards_prefix(TASK)
    store = _Store(ListedPage([], _folders(0, 1), "m1"), ListedPage([], [], "m2"),  # a short page, an empty one
                   ListedPage([], [*_folders(4, 7, 100_000), root + "notes/"], None))

    assert _drop(store, 2) == 3

    assert deleted == _folders(100_000, 7, 4)
    assert store.levels == [root]


def test_a_replaced_run_deletes_no_shard_folder(deleted: list[str]) -> None:
    """The run's cancel marker names the run that replaced it: the folders past its count may be that run's."""
    store = _Store(ListedPage([], _folders(0, 3, 5), None), marker={"superseded_by": "r261201130000cd34"})

    assert _drop(store, 2) == 0

    assert deleted == []


def test_a_listing_that_found_no_images_lists_and_deletes_nothing(deleted: list[str]) -> None:
    store = _Store(ListedPage([], _folders(0, 1), None))

    assert _drop(store, 0) == 0

    assert deleted == [] and store.levels == []


def test_a_delimiter_listing_follows_every_marker_an_empty_page_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``BlobStore.iter_level_pages`` (``listing.iter_pages``) does with a page that holds a subset of the
    results, or none, and a marker: it asks for the next page, so a folder past such a page is still found."""
    pages = {None: ListedPage([], _folders(0), "m1"), "m1": ListedPage([], [], "m2"),
             "m2": ListedPage([], _folders(9), None)}
    asked: list[str | None] = []

    def list_page(container: Any, prefix: str | None = None, marker: str | None = None, page_size: int | None = None,
                  delimiter: str | None = None) -> ListedPage:
        assert delimiter == "/"
        asked.append(marker)
        return pages[marker]

    monkeypatch.setattr(listing, "list_page", list_page)
    found = [p for page in listing.iter_pages(cast(Any, None), layout.shards_prefix(TASK), 5000, "/")
             for p in page.prefixes]

    assert found == _folders(0, 9) and asked == [None, "m1", "m2"]
