"""Streams into and out of blobs that keep the Functions instance's local disk free (adapters.block_writer,
core.scratch), against Azurite: what they write is what was written, in order, whatever the threads; a failure
commits nothing; a spool is read back and gone when closed; a reader sees one version of its blob."""
from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from azure.core.exceptions import ResourceModifiedError

import adapters.block_writer
from adapters.block_writer import BlobReader, BlobSpool, BlockBlobWriter, BlockLimitError, open_blob
from adapters.blobs import BlobStore


def _chunks(seed: int, total: int) -> list[bytes]:
    rng = random.Random(seed)
    out, left = [], total
    while left:
        n = min(left, rng.randint(1, 5000))
        out.append(bytes(rng.getrandbits(8) for _ in range(n)))
        left -= n
    return out


@pytest.mark.parametrize("threads", [0, 1, 4])
def test_a_writer_commits_its_blocks_in_order_whatever_the_threads(store: BlobStore, unique_name: str,
                                                                   threads: int) -> None:
    store.ensure_container(unique_name)
    chunks = _chunks(threads, 60_000)
    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        with BlockBlobWriter(store, unique_name, "w.bin", "application/octet-stream", 1024, pool, 3) as w:
            for chunk in chunks:
                w.write(chunk)
        assert w.bytes_written == 60_000
    finally:
        if pool:
            pool.shutdown()
    assert store.read_bytes(unique_name, "w.bin") == b"".join(chunks)
    blocks = store.service.get_blob_client(unique_name, "w.bin").get_block_list()[0]
    assert len(blocks) == 59  # 1024-byte blocks and the rest


def test_a_writer_whose_block_fails_commits_nothing_and_raises(store: BlobStore, unique_name: str,
                                                               monkeypatch: Any) -> None:
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "w.bin", b"the version before")
    with ThreadPoolExecutor(4) as pool:
        writer = BlockBlobWriter(store, unique_name, "w.bin", "application/octet-stream", 100, pool, 2)
        real = writer._blob.stage_block
        calls = []

        def flaky(block_id: str, data: bytes, **kwargs: Any) -> Any:
            calls.append(block_id)
            if len(calls) == 7:
                raise ConnectionError("storage throttled")
            return real(block_id, data, **kwargs)

        monkeypatch.setattr(writer._blob, "stage_block", flaky)
        with pytest.raises(ConnectionError, match="throttled"):
            with writer:
                for chunk in _chunks(1, 3000):
                    writer.write(chunk)
    assert store.read_bytes(unique_name, "w.bin") == b"the version before"


def test_a_writer_past_the_block_limit_fails_before_uploading_more_and_commits_nothing(
        store: BlobStore, unique_name: str, monkeypatch: Any) -> None:
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "w.bin", b"the version before")
    monkeypatch.setattr(adapters.block_writer, "MAX_BLOCKS", 3)
    writer = BlockBlobWriter(store, unique_name, "w.bin", "application/octet-stream", 10)
    with pytest.raises(BlockLimitError, match="w.bin: more than 3 blocks of 10 bytes"):
        with writer:
            writer.write(b"x" * 30)  # three blocks staged: the limit
            writer.write(b"y" * 10)  # a fourth is refused before it is sent
    assert store.read_bytes(unique_name, "w.bin") == b"the version before"
    uncommitted = store.service.get_blob_client(unique_name, "w.bin").get_block_list("uncommitted")[1]
    assert len(uncommitted) == 3


def test_a_small_write_is_one_put_blob_and_restart_drops_what_came_before(store: BlobStore, unique_name: str) -> None:
    store.ensure_container(unique_name)
    with BlockBlobWriter(store, unique_name, "empty.csv", "text/csv") as w:
        pass
    assert store.read_bytes(unique_name, "empty.csv") == b""
    with BlockBlobWriter(store, unique_name, "r.bin", "application/octet-stream", 10) as w:
        w.write(b"x" * 95)  # nine blocks staged
        w.restart()
        w.write(b"kept")
    assert store.read_bytes(unique_name, "r.bin") == b"kept" and w.bytes_written == 4


def test_a_spool_reads_back_what_was_written_and_its_blob_goes_with_it(store: BlobStore, unique_name: str) -> None:
    store.ensure_container(unique_name)
    chunks = _chunks(2, 20_000)
    with BlobSpool(store, unique_name, "spool.bin", block_bytes=1000) as spool:
        for chunk in chunks:
            spool.write(chunk)
        assert spool.seek(0, io.SEEK_END) == 20_000
        spool.seek(123)
        assert spool.read(1000) == b"".join(chunks)[123:1123]
        spool.seek(0)
        assert b"".join(iter(lambda: spool.read(4096), b"")) == b"".join(chunks)
        with pytest.raises(ValueError, match="written before it is read"):
            spool.write(b"late")
    assert not store.exists(unique_name, "spool.bin")
    with BlobSpool(store, unique_name, "never-read.bin", block_bytes=10) as spool:
        spool.write(b"y" * 100)  # blocks staged, never committed
    assert not store.exists(unique_name, "never-read.bin")


def test_a_reader_reads_ranges_of_the_version_it_first_saw(store: BlobStore, unique_name: str) -> None:
    store.ensure_container(unique_name)
    data = bytes(range(256)) * 100
    store.write_bytes(unique_name, "r.bin", data)
    with open_blob(store, unique_name, "r.bin", buffer_bytes=1000) as fp:
        fp.seek(25_000)
        assert fp.read(100) == data[25_000:25_100]
        fp.seek(0)
        assert fp.read() == data
    reader = io.BufferedReader(BlobReader(store, unique_name, "r.bin"), 1000)
    reader.read(10)
    store.write_bytes(unique_name, "r.bin", data[::-1])
    with pytest.raises(ResourceModifiedError):
        reader.read()


def test_after_a_failed_writer_every_other_writer_of_the_name_still_succeeds(store: BlobStore, unique_name: str,
                                                                            monkeypatch: Any) -> None:
    """REST Put Block: "For a given blob, the length of the value specified for the blockid parameter must be the
    same size for each block", uncommitted blocks included, which a failed writer leaves for up to a week (Azurite
    answers 400 InvalidBlobOrBlock as Azure does). The results zip is written one pass (BlockBlobWriter) or composed
    from parts (adapters.compose), and BlobStore writes large files in blocks: after a failed first writer, each
    must still be able to write the name."""
    from adapters import blob_requests
    from adapters.compose import compose_blob

    monkeypatch.setattr(blob_requests, "PUT_LIMIT", 1024)  # so BlobStore's large writes stage blocks here
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "src.bin", b"y" * 900)

    def failed_writer() -> None:
        with pytest.raises(RuntimeError):
            with BlockBlobWriter(store, unique_name, "r.zip", block_bytes=1000) as w:
                w.write(b"x" * 5000)
                raise RuntimeError("a file changed while it was read")
        uncommitted = store.service.get_blob_client(unique_name, "r.zip").get_block_list("uncommitted")[1]
        assert uncommitted  # what a failed writer leaves under the name

    failed_writer()
    compose_blob(store, unique_name, "r.zip", [b"head", ("src.bin", 0, 900)])
    assert store.read_bytes(unique_name, "r.zip") == b"head" + b"y" * 900
    failed_writer()
    store.write_bytes(unique_name, "r.zip", b"z" * 3000)
    assert store.read_bytes(unique_name, "r.zip") == b"z" * 3000
    failed_writer()
    store.upload_file(unique_name, "r.zip", io.BytesIO(b"w" * 2500))
    assert store.read_bytes(unique_name, "r.zip") == b"w" * 2500
