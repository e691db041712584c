"""Azurite's garbage collector must not delete the data of live blobs (devhost/azurite_blob.js says how it did).

The collector deletes every extent that its list of blobs (``LokiBlobMetadataStore.listAllBlobs``, paged) does not
name. Stock azurite-blob 3.35 pages that list by blob name alone, across containers, so same-named blobs at a page
boundary are left out and their data is deleted ten minutes later (a live run: 3 of 18,000 blobs unreadable, HTTP
500, after 26 minutes). devhost starts the blob service with the listing paged by document id.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from devhost.azurite import BLOB_WITH_GC_FIX, REPO_ROOT, azurite_executable, start_azurite

HARNESS = Path(__file__).with_name("azurite_gc_listing.js")


def _harness(*args: str) -> dict[str, object]:
    """Run the Node harness with ``args``; its one JSON line."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: Azurite needs Node 20+ (see README)", pytrace=False)
    proc = subprocess.run([node, str(HARNESS), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def _listing(names: int, containers: int) -> dict[str, object]:
    return _harness(str(names), str(containers))


def test_the_collectors_listing_names_every_blob_when_names_repeat_across_containers() -> None:
    r = _listing(6000, 3)
    assert r["blobs"] == 18000
    assert r["fixed_unreferenced"] == 0
    # Stock Azurite leaves blobs out (one per page boundary falling inside a group of same-named blobs). If this
    # fails, Azurite fixed its listing: devhost/azurite_blob.js can go.
    assert r["stock_unreferenced"] == 3


def test_the_fixed_listing_keeps_the_originals_filters_and_pages_through_the_store_in_order() -> None:
    r = _listing(500, 3)
    filters = r["filters"]
    assert isinstance(filters, dict) and len(filters) == 4
    for combination, outcome in filters.items():
        assert outcome["same"] and outcome["got"] == outcome["want"], combination
    assert filters["false-false"]["want"] < filters["true-true"]["want"] == 1500  # the filters do leave blobs out


def test_devhost_starts_the_blob_service_with_the_fixed_listing() -> None:
    assert azurite_executable("blob") == BLOB_WITH_GC_FIX
    assert azurite_executable("queue").name == "azurite-queue"
    with start_azurite() as azurite:
        args = subprocess.run(["ps", "-o", "args=", "-p", str(azurite.pids["blob"])], capture_output=True,
                              text=True).stdout
        assert str(BLOB_WITH_GC_FIX) in args


@pytest.mark.parametrize("variant", ["stock", "fixed"])
def test_a_collector_pass_deletes_exactly_the_unreferenced_extents(variant: str) -> None:
    """A whole pass (``BlobGCManager.markSweep``) over Azurite's in-memory extent store: 3,000 extents that blobs
    refer to keep their data and records, 1,000 that none refers to lose both; the fixed sweep (one batch of record
    removals: the stock one held Azurite for 39.8 s at 20,000 blobs and 5,000 dead extents) removes exactly as the
    stock one does."""
    assert _harness("sweep", variant) == {"live_records": 3000, "live_data": 3000, "dead_records": 0, "dead_data": 0,
                                          "records": 3000}
