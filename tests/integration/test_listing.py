"""``adapters.listing`` lists exactly what the SDK's ``list_blobs``/``walk_blobs`` list, page for page, in Azurite.

The reference is azure-storage-blob itself, on the same container: names (spaces, unicode beyond the BMP, ``%``,
``+``, ``&``, characters that need XML escaping, text that looks like entities or character references, deep
prefixes), ETags and sizes, page boundaries and continuation markers with a
small page size, prefix filters, one-level delimiter listings, an empty container, a missing one, and a client that
holds a SAS instead of the account key (the request goes through the client's own pipeline, so its credential signs).
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import (BlobPrefix, BlobServiceClient, ContainerClient, ContainerSasPermissions,
                                generate_container_sas)

from adapters import listing
from adapters.blobs import BlobStore, service_client
from core.errors import ContainerNotFound
from devhost.azurite import Azurite

ROOT = Path(__file__).resolve().parents[2]

NAMES = [
    "plain.jpg", "with space.jpg", "dir with space/a b c.JPG", "ünïcödé/日本語/写真.jpg", "emoji/🦊 fox.jpg",
    "100%/50% off.jpg", "%20literal%2Fslash.jpg", "a+b/c+d.jpg", "amp&lt;/x&y.jpg", "lt<gt>/q\"uote'.jpg",
    "hash#/q?x=1.jpg", "semi;colon/comma,.jpg", "tilde~/star*.jpg", "trailing.dot./x.jpg",
    "&amp;&#65;&#x42;/&quot;&apos;.jpg", "a&b&c/<x>&<y>.jpg", "𝔥𝔢/ÅΩ  sep.jpg",
    "deep/1/2/3/4/5/6/7/8/9/leaf.jpg", "deep/1/2/x.jpg", "deep/1/y.jpg", "deep/z.jpg", "deep0.jpg", "deep-/w.jpg",
    *(f"many/{i:03d}.jpg" for i in range(23)),
]


def _sdk_pages(client: ContainerClient, prefix: str | None, page_size: int | None,
               delimiter: str | None = None) -> list[tuple[list[str], list[tuple[str, str, int]], str | None]]:
    """What the SDK lists, page by page: (prefixes, [(name, etag, size)], continuation)."""
    if delimiter:
        pages: Any = client.walk_blobs(name_starts_with=prefix, delimiter=delimiter, results_per_page=page_size)
    else:
        pages = client.list_blobs(name_starts_with=prefix, results_per_page=page_size)
    out = []
    for page in (pager := pages.by_page()):
        items = list(page)
        out.append(([str(i.name) for i in items if isinstance(i, BlobPrefix)],
                    [(str(i.name), str(i.etag).strip('"'), int(i.size)) for i in items
                     if not isinstance(i, BlobPrefix)],
                    pager.continuation_token or None))
    return out


def _fast_pages(client: ContainerClient, prefix: str | None, page_size: int | None,
                delimiter: str | None = None) -> list[tuple[list[str], list[tuple[str, str, int]], str | None]]:
    return [(p.prefixes, [tuple(b) for b in p.blobs], p.next_marker)  # type: ignore[misc]
            for p in listing.iter_pages(client, prefix, page_size, delimiter)]


@pytest.fixture(autouse=True)
def regex_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Azurite's bodies are in the service's compact form: every page here is read by the regex path (a fallback to
    ElementTree would leave that path untested against a live service)."""
    def refuse(body: bytes) -> listing.ListedPage:
        raise AssertionError(f"ElementTree fallback on a body from Azurite: {body[:300]!r}")

    monkeypatch.setattr(listing, "_parse_tree", refuse)


@pytest.fixture(scope="module")
def filled(azurite: Azurite) -> ContainerClient:
    """``NAMES`` in one container, written once for the module: its tests only list it (a copy per test was 46 of
    each of its 37 tests' requests)."""
    client = BlobServiceClient.from_connection_string(azurite.connection_string).create_container(
        "filled" + uuid.uuid4().hex[:12])
    for i, name in enumerate(NAMES):
        client.upload_blob(name, b"x" * (i * 37 % 101))  # sizes 0..100 bytes
    return client


PREFIXES = [None, "deep/", "deep", "dir with space/", "ünïcödé/", "100%/", "a+b/", "amp&lt;", "lt<", "many/",
            "nothing-here/"]


# every prefix in one page and in pages of 7; pages of one blob (a marker after each) on two of them
@pytest.mark.parametrize(("prefix", "page_size"), [(p, n) for p in PREFIXES for n in (None, 7)]
                         + [(None, 1), ("deep/", 1)])
def test_flat_listing_equals_the_sdk_page_for_page(filled: ContainerClient, prefix: str | None,
                                                   page_size: int | None) -> None:
    sdk = _sdk_pages(filled, prefix, page_size)
    fast = _fast_pages(filled, prefix, page_size)
    assert fast == sdk
    if prefix is None:
        assert sorted(n for _, blobs, _ in fast for n, _, _ in blobs) == sorted(NAMES)
        assert len(fast) == (1 if page_size is None else -(-len(NAMES) // page_size))


@pytest.mark.parametrize("page_size", [None, 3])
@pytest.mark.parametrize("prefix", [None, "deep/", "deep/1/", "many/", "ünïcödé/"])
def test_delimiter_listing_equals_the_sdks_walk(filled: ContainerClient, prefix: str | None,
                                                page_size: int | None) -> None:
    sdk = _sdk_pages(filled, prefix, page_size, "/")
    fast = _fast_pages(filled, prefix, page_size, "/")
    assert [(sorted(p), b, m) for p, b, m in fast] == [(sorted(p), b, m) for p, b, m in sdk]
    assert any(p for p, _, _ in fast) or prefix == "many/"


def test_blob_store_listings_use_the_fast_path_with_the_same_results(storage_connection: str,
                                                                     filled: ContainerClient) -> None:
    store = BlobStore(service_client(storage_connection))
    name = filled.container_name
    assert list(store.list_names(name)) == list(filled.list_blob_names())
    assert list(store.list_names(name, "deep/")) == list(filled.list_blob_names(name_starts_with="deep/"))
    blobs, marker = store.list_blobs_page(name, "", None, 5)
    more, _ = store.list_blobs_page(name, "", marker, 5)
    sdk = [(b.name, b.etag.strip('"'), b.size) for b in filled.list_blobs()]
    assert [tuple(b) for b in blobs + more] == sdk[:10]
    etags: dict[str, str] = {}
    prefixes, names, complete = store.list_level(name, "", 1000, 4, etags)
    walk = list(filled.walk_blobs(delimiter="/"))
    assert complete and sorted(prefixes) == sorted(b.name for b in walk if isinstance(b, BlobPrefix))
    assert names == [b.name for b in walk if not isinstance(b, BlobPrefix)]
    assert etags == {b.name: b.etag.strip('"') for b in walk if not isinstance(b, BlobPrefix)}
    _, _, complete = store.list_level(name, "", 3, 2)
    assert not complete


def test_empty_and_missing_containers(storage_connection: str, unique_name: str) -> None:
    service = BlobServiceClient.from_connection_string(storage_connection)
    empty = service.create_container(unique_name)
    assert _fast_pages(empty, None, None) == _sdk_pages(empty, None, None) == [([], [], None)]
    assert _fast_pages(empty, "x/", 5, "/") == [([], [], None)]
    missing = service.get_container_client(unique_name + "-missing")
    with pytest.raises(ResourceNotFoundError):
        listing.list_page(missing)
    with pytest.raises(ContainerNotFound):
        list(BlobStore(service).list_names(unique_name + "-missing"))
    with pytest.raises(ContainerNotFound):
        BlobStore(service).list_blobs_page(unique_name + "-missing", "", None)


def test_a_sas_client_lists_through_its_own_credential(filled: ContainerClient, storage_connection: str) -> None:
    """The SAS rides in the client's URL; a SAS without list permission, and a wrong key, are refused as the SDK
    refuses them (same exception class, status and error code)."""
    service = BlobServiceClient.from_connection_string(storage_connection)
    key = service.credential.account_key
    expiry = datetime.now(timezone.utc) + timedelta(hours=1)
    can_list = generate_container_sas(str(service.account_name), filled.container_name, account_key=key,
                                      permission=ContainerSasPermissions(list=True), expiry=expiry)
    sas_client = BlobServiceClient(service.url, credential=can_list).get_container_client(filled.container_name)
    assert _fast_pages(sas_client, "deep/", 2) == _sdk_pages(filled, "deep/", 2)
    read_only = generate_container_sas(str(service.account_name), filled.container_name, account_key=key,
                                       permission=ContainerSasPermissions(read=True), expiry=expiry)
    refused = BlobServiceClient(service.url, credential=read_only).get_container_client(filled.container_name)
    assert _refusal(refused) == ("HttpResponseError", 403, "AuthorizationPermissionMismatch")
    wrong_key = BlobServiceClient(service.url, credential={"account_name": str(service.account_name),
                                                           "account_key": "A" * 88})
    assert _refusal(wrong_key.get_container_client(filled.container_name))[1] == 403


def _refusal(client: ContainerClient) -> tuple[str, int | None, str | None]:
    """How both listings fail on ``client``: the same exception class, status and error code (asserted)."""
    with pytest.raises(HttpResponseError) as sdk:
        list(client.list_blobs())
    with pytest.raises(HttpResponseError) as fast:
        listing.list_page(client)
    seen = [(type(e.value).__name__, e.value.status_code, getattr(e.value, "error_code", None)) for e in (fast, sdk)]
    assert seen[0] == seen[1]
    return seen[0]


def test_the_listing_benchmark_records_every_way(storage_connection: str, unique_name: str, tmp_path: Path) -> None:
    """bench/listing.py at a small size (CI keeps the script working; the figures are for bench/RESULTS.md)."""
    out = tmp_path / "listing.json"
    proc = subprocess.run([sys.executable, "bench/listing.py", "--images", "40", "--page-size", "15", "--repeat", "2",
                           "--connection", storage_connection, "--container", unique_name, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["ways"]) == {"sdk_list_blobs", "sdk_walk_blobs", "sdk_list_blob_names", "fast", "parse_filter",
                              "fast_delimiter", "activity_sdk", "activity_fast"}
    assert all(w["blobs"] == 40 and w["cpu_us_per_blob"] > 0 and len(w["cpu_s_runs"]) == 2 for w in r["ways"].values())
    assert r["speedup_vs_sdk_list_blobs"]["sdk_list_blobs"] == 1.0
