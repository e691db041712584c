"""``activities.listing_leftovers``' probe of a shard folder, on a stub store: a List Blobs page may hold a subset of
the results, none at all, with a marker to the rest (learn.microsoft.com rest/api/storageservices/
enumerating-blob-resources), and such a folder still holds blobs."""
from __future__ import annotations

from typing import Any, cast

from activities.listing_leftovers import _holds_blobs
from adapters.blobs import BlobStore
from core.settings import Settings


class _Pages:
    """Answers ``list_names_page`` with the pages given, in order, whatever the marker."""

    def __init__(self, *pages: tuple[list[str], str | None]) -> None:
        self.pages = list(pages)
        self.calls = 0

    def list_names_page(self, container: str, prefix: str, marker: str | None, page_size: int) -> Any:
        assert page_size == 1 and (marker is None) == (self.calls == 0)
        self.calls += 1
        return self.pages.pop(0)


SETTINGS = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})


def test_an_empty_page_with_a_marker_is_not_an_empty_folder() -> None:
    store = _Pages(([], "m1"), ([], "m2"), (["tasks/t/shards/s00004/attempt-1.json"], "m3"))
    assert _holds_blobs(cast(BlobStore, store), SETTINGS, "tasks/t/shards/s00004/")
    assert store.calls == 3


def test_a_complete_empty_listing_is_an_empty_folder_and_a_first_name_ends_the_probe() -> None:
    assert not _holds_blobs(cast(BlobStore, _Pages(([], None))), SETTINGS, "tasks/t/shards/s00004/")
    one = _Pages((["tasks/t/shards/s00004/etags.json"], "m"))
    assert _holds_blobs(cast(BlobStore, one), SETTINGS, "tasks/t/shards/s00004/") and one.calls == 1
