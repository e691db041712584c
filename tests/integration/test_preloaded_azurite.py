"""The benchmark's preloading Azurite (``bench/preloaded_azurite.py``, ``bench/azurite_preloaded_blob.js``) answers as
the stock ``azurite-blob`` does: the same listings page by page (names, folder prefixes, continuation markers) for
blobs PUT through HTTP and for blobs it preloaded, the same lookups, overwrites and deletes. It changes only what
those answers cost at a million blobs; ``bench/control_plane.py --preload`` relies on that to run a million real
images."""
from __future__ import annotations

from typing import Any, Iterator

import pytest
from azure.core.exceptions import ResourceNotFoundError

from adapters.blobs import BlobStore, service_client
from bench.control_plane import upload
from bench.preloaded_azurite import PreloadedAzurite, start_preloaded_azurite
from devhost.azurite import Azurite
from tests.azurite_listings import LISTINGS, NAMES, walk


@pytest.fixture(scope="module")
def preloaded() -> Iterator[PreloadedAzurite]:
    azurite = start_preloaded_azurite(heap_mb=1024)
    try:
        yield azurite
    finally:
        azurite.stop()


def test_listings_match_the_stock_azurite_page_by_page(preloaded: PreloadedAzurite, stock_azurite: Azurite,
                                                       unique_name: str) -> None:
    stock_connection = stock_azurite.connection_string
    upload(stock_connection, unique_name, NAMES)  # stock azurite-blob, every blob PUT
    upload(preloaded.connection_string, "put", NAMES)  # the preloading server, every blob PUT
    preloaded.preload(upload, "pre", NAMES)  # the preloading server, one PUT and the rest copied
    for prefix, delimiter, size in LISTINGS:
        want = walk(stock_connection, unique_name, prefix, delimiter, size)
        assert want, (prefix, delimiter, size)
        assert walk(preloaded.connection_string, "put", prefix, delimiter, size) == want, (prefix, delimiter, size)
        assert walk(preloaded.connection_string, "pre", prefix, delimiter, size) == want, (prefix, delimiter, size)
    everything = walk(stock_connection, unique_name, None, None, 5000)
    assert everything[0][0] == NAMES  # the grid above covers real listings, not empty ones
    # a lookup by name finds the blob of its own container (the same names are in "put" and "pre")
    store = BlobStore(service_client(preloaded.connection_string))
    store.write_bytes("put", "top.jpg", b"put")
    store.write_bytes("pre", "site1/readme.txt", b"pre")
    assert store.read_bytes("put", "top.jpg") == b"put" and store.read_bytes("pre", "top.jpg") == b""
    assert store.read_bytes("pre", "site1/readme.txt") == b"pre" and store.read_bytes("put", "site1/readme.txt") == b""


def test_preloaded_blobs_are_read_replaced_and_deleted_like_put_ones(preloaded: PreloadedAzurite) -> None:
    names = [f"cam{c}/IMG_{i:05d}.JPG" for c in range(5) for i in range(2000)]
    preloaded.preload(upload, "many", names)
    store = BlobStore(service_client(preloaded.connection_string))
    service = store.service
    template = service.get_blob_client("many", names[0]).get_blob_properties()
    copy = service.get_blob_client("many", names[7777]).get_blob_properties()
    assert copy.size == 0 == template.size and copy.blob_type == template.blob_type == "BlockBlob"
    assert copy.name == names[7777] and service.get_blob_client("many", names[7777]).download_blob().readall() == b""
    with pytest.raises(ResourceNotFoundError):
        service.get_blob_client("many", "cam0/IMG_99999.JPG").get_blob_properties()
    store.write_bytes("many", names[42], b"replaced")  # overwrite a preloaded blob
    assert store.read_bytes("many", names[42]) == b"replaced"
    service.get_blob_client("many", names[43]).delete_blob()
    listed = [name for page in walk(preloaded.connection_string, "many", "cam0/", None, 5000) for name in page[0]]
    assert len(listed) == 1999 and names[43] not in listed and names[42] in listed
    assert sorted(store.list_names("many")) == sorted(n for n in names if n != names[43])


def test_a_preload_names_a_template_that_exists(preloaded: PreloadedAzurite) -> None:
    from devhost.azurite import AzuriteError

    def no_put(connection: str, container: str, names: list[str]) -> float:
        return 0.0  # the template is never PUT

    with pytest.raises(AzuriteError, match="template blob"):
        preloaded.preload(no_put, "nothing-here", ["a.jpg", "b.jpg"])


def test_its_ports_are_handed_to_no_one_else_while_it_starts(monkeypatch: Any) -> None:
    """The ports are picked before Azurite binds them (seconds later on a loaded machine); a free-port pick by
    another pytest worker in between, a bind that asks the kernel for a port, must not be handed one (it then
    started its own Azurite there, and one module's requests reached the other's). While the services start, a
    plain bind of each port, which such a pick respects, is refused."""
    import errno
    import socket

    import bench.preloaded_azurite as module

    refused: list[int] = []
    real = module._wait_listening

    def bind_first(ports: dict[int, Any], *args: Any) -> None:
        for port in ports:  # the services were only just spawned: none of them has bound its port yet
            with socket.socket() as stranger:
                try:
                    stranger.bind(("127.0.0.1", port))
                except OSError as exc:
                    refused.append(exc.errno)
        real(ports, *args)

    monkeypatch.setattr(module, "_wait_listening", bind_first)
    azurite = start_preloaded_azurite(heap_mb=256)
    try:
        assert refused == [errno.EADDRINUSE] * 3
        BlobStore(service_client(azurite.connection_string)).ensure_container("started")
    finally:
        azurite.stop()


def test_free_ports_another_azurite_took_are_picked_again(preloaded: PreloadedAzurite,
                                                         monkeypatch: Any) -> None:
    """Where the reservation holds nothing (not Linux) or a program binds fixed ports (``SO_REUSEADDR`` set), the
    picked ports may still be another Azurite's by the time the services bind them: ``PortTaken``, and the caller
    asked for no ports in particular, so they are picked again, as ``start_azurite`` does (the re-pick 19376d4 added
    went with ae0ce0f's reservation). The first pick here is the module's own preloading Azurite's ports."""
    import bench.preloaded_azurite as module
    from azure.storage.blob import BlobServiceClient

    class Stranger(module.PortReservation):
        def __init__(self, count: int = 3) -> None:
            super().__init__(0)
            self.ports = (preloaded.table_port, preloaded.queue_port, preloaded.blob_port)

    picks = iter([Stranger])
    real = module.PortReservation
    monkeypatch.setattr(module, "PortReservation", lambda count=3: next(picks, real)(count))
    fresh = start_preloaded_azurite(heap_mb=256)
    try:
        assert {fresh.blob_port, fresh.queue_port, fresh.table_port}.isdisjoint(
            {preloaded.blob_port, preloaded.queue_port, preloaded.table_port})
        BlobServiceClient.from_connection_string(fresh.connection_string).create_container("picked-again")
        assert "picked-again" not in [c.name for c in BlobServiceClient.from_connection_string(
            preloaded.connection_string).list_containers()]
    finally:
        fresh.stop()
