"""A write-only file object that streams into a block blob: staged blocks, one commit at close.

Why: the results zip (activities/results_zip.py) runs to gigabytes and is written by ``zipfile`` as a stream, and the
merge parts' fragments and the captures combine's buckets are written once, front to back; holding them in memory or
on the Functions instance's small temporary disk (``core.scratch``) is not an option. What fits one Put Blob
(``blob_requests.PUT_LIMIT``) and no block yet is written with one, as ``BlobStore.upload_file`` writes it. Memory holds one block
(``block_bytes``); Azure allows 50,000 blocks per blob, so 8 MiB blocks reach ~390 GiB. Nothing is visible under the
blob's name until ``close`` commits the block list, so a reader never sees half a zip; an exception inside the
``with`` leaves the staged blocks uncommitted (the service discards them after a week).

Not seekable: ``zipfile`` then writes each member's sizes in a data descriptor after its data, as the zip format
allows for streams.
"""
from __future__ import annotations

import base64
import io
import secrets
from collections import deque
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings

from adapters import blob_requests
from adapters.blobs import BlobStore

BLOCK_BYTES = 8 * 1024 * 1024
# "A block blob can include up to 50,000 blocks" (Azure Storage, "Understanding block blobs"; Put Block List refuses
# more with 400 BlockListTooLong): refused here before the 50,001st block is uploaded, not at the commit after all
MAX_BLOCKS = 50_000


class BlockLimitError(RuntimeError):
    """A blob written in blocks would need more than ``MAX_BLOCKS`` of them."""


SHARED_BUILD = b"000"  # the ids every writer stages unless it asks for its own (``new_build``)
_BUILD_BYTES = 4


def new_build() -> bytes:
    """Random bytes that make one writer's block ids its own (``block_id``'s ``build``), for a blob that two writers
    may write at once: a results zip, whose terminated build's activity runs on beside the next build (README, the
    terminate row). With the ids every writer shares, the second writer's Put Block replaces the first's block of the
    same id ("the last uploaded block with that ID will be committed on the next successful Put Block List", REST
    Put Block), so a commit could join the two builds' blocks into one corrupt zip. The cost: a failed writer's
    blocks are not written over by the next writer's but stay uncommitted until a commit drops them (a blob holds
    at most 100,000 uncommitted blocks, REST Put Block List), so only the zip's writers use it."""
    return secrets.token_bytes(_BUILD_BYTES)


def block_id(index: int, build: bytes = SHARED_BUILD) -> str:
    """The id of a blob's ``index``-th block, for every block the project stages (this writer, ``BlobStore``'s large
    writes, ``adapters.compose``): ``build`` then the index in 5 digits (under ``MAX_BLOCKS``), Base64. The default
    ``build`` gives the ids of earlier releases (``f"{index:08d}"``); a ``new_build`` of 4 bytes gives 9, whose
    Base64 has the same 12 characters (and the SDK sends that text Base64-encoded again: 16 on the wire either way).

    Why one function and one length: "For a given blob, all block IDs must be the same length. If a block is uploaded
    with a block ID of a different length than the block IDs for any existing uncommitted blocks, the service
    returns error response code 400" (REST Put Block, Remarks), and that holds for the uncommitted blocks a failed
    writer leaves under the name for up to a week ("Any uncommitted blocks will also be garbage collected if there
    are no successful calls to Put Block or Put Block List on the same blob within a week"; a Put Block List drops
    every uncommitted block it does not name): a writer with ids of another length would be refused until they
    expire. The SDK's chunked ``upload_blob`` stages ids of its own lengths, so it is not used for names the project
    writes."""
    if not 0 <= index < 100_000:
        raise ValueError(f"block index {index} has more than 5 digits; a blob holds at most {MAX_BLOCKS} blocks")
    return base64.b64encode(build + f"{index:05d}".encode()).decode()


class BlockBlobWriter(io.RawIOBase):
    """``pool``: stage blocks on its threads, at most ``in_flight`` of this writer's at once (memory: that many
    blocks more), so that many writers, or one long one, do not wait for one Put Block after another; ``close``
    waits for them all before the commit. ``build``: a ``new_build`` where another writer may stage blocks for the
    same name meanwhile; its commit then names this writer's blocks alone. ``etag``: the ETag the commit (or the one
    Put Blob) answered, the version this writer wrote even if another writer's commit has replaced it since."""

    def __init__(self, store: BlobStore, container: str, name: str, content_type: str | None = "application/zip",
                 block_bytes: int = BLOCK_BYTES, pool: Executor | None = None, in_flight: int = 2,
                 cache_control: str | None = None, build: bytes = SHARED_BUILD) -> None:
        super().__init__()
        self._build = build
        self._blob = store.service.get_blob_client(container, name)
        self._content_type = content_type
        self._cache_control = cache_control
        self._block_bytes = block_bytes
        self._buffer = bytearray()
        self._blocks: list[BlobBlock] = []
        self._failed = False
        self._pool, self._in_flight = pool, max(1, in_flight)
        self._pending: deque[Future[Any]] = deque()
        self.bytes_written = 0
        self.etag = ""  # the blob's ETag once ``close`` has written it

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self.bytes_written += len(view)
        while len(self._buffer) >= self._block_bytes:
            self._stage(bytes(self._buffer[: self._block_bytes]))
            del self._buffer[: self._block_bytes]
        return len(view)

    def restart(self) -> None:
        """Drop everything written so far: the blocks staged are written over by the next ones (same ids) and only
        those are committed."""
        self._drain()  # an old block still in flight must not land over a new one of the same id
        self._buffer.clear()
        self._blocks.clear()
        self.bytes_written = 0

    def _stage(self, chunk: bytes) -> None:
        if len(self._blocks) >= MAX_BLOCKS:
            raise BlockLimitError(
                f"{self._blob.blob_name}: more than {MAX_BLOCKS} blocks of {self._block_bytes} bytes, what a block blob "
                "holds; nothing was committed. Write it with larger blocks (block_bytes) or in several blobs")
        staged = block_id(len(self._blocks), self._build)
        self._blocks.append(BlobBlock(block_id=staged))
        if self._pool is None:
            self._blob.stage_block(staged, chunk)
            return
        while len(self._pending) >= self._in_flight:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._blob.stage_block, staged, chunk))

    def _drain(self) -> None:
        """Wait for the blocks in flight; the first failure is raised once all have ended."""
        failure: BaseException | None = None
        while self._pending:
            try:
                self._pending.popleft().result()
            except BaseException as exc:  # noqa: BLE001 - raised below, after the others
                failure = failure or exc
        if failure is not None:
            raise failure

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._failed:
                if not self._blocks and len(self._buffer) <= blob_requests.PUT_LIMIT:
                    # small (or empty): one Put Blob, as BlobStore.upload_file sends it, not a block and a commit
                    self.etag = blob_requests.put_blob(self._blob, bytes(self._buffer), self._content_type,
                                                       self._cache_control)
                    self._buffer.clear()
                    return
                if self._buffer or not self._blocks:
                    self._stage(bytes(self._buffer))
                    self._buffer.clear()
                self._drain()
                committed = self._blob.commit_block_list(
                    self._blocks, content_settings=ContentSettings(content_type=self._content_type,
                                                                   cache_control=self._cache_control))
                self.etag = str((committed or {}).get("etag") or "")
        finally:
            for future in self._pending:  # a failed writer: its blocks in flight end (uncommitted) before it closes
                future.cancel()
            while self._pending:
                try:
                    self._pending.popleft().result()
                except BaseException:  # noqa: BLE001, S110 - the writer failed already; these blocks are dropped
                    pass
            super().close()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self._failed = True  # leave the staged blocks uncommitted: no half zip under the name
        self.close()


class BlobSpool(io.RawIOBase):
    """A scratch file kept in a blob instead of on the local disk: written front to back, then read (``seek`` and
    ``read``, as ``activities.exports._copy`` reads a spool); the blob is deleted when the spool is closed.

    Why: an exports part spools the workers' view lines per format until it knows every shard had them (~800 bytes
    an image, 160 MB at a part's 200,000 images), more than its share of the instance's disk (``core.scratch``).
    The first ``seek`` or ``read`` commits what was written; writing after that is an error."""

    def __init__(self, store: BlobStore, container: str, name: str, block_bytes: int = 1024 * 1024) -> None:
        super().__init__()
        self._store, self._container, self._name = store, container, name
        self._writer: BlockBlobWriter | None = BlockBlobWriter(store, container, name, "application/octet-stream",
                                                               block_bytes)
        self._size = 0
        self._at = 0

    def writable(self) -> bool:
        return self._writer is not None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._writer is None:
            raise ValueError(f"{self._name}: a spool is written before it is read, not after")
        return self._writer.write(data)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._size = self._writer.bytes_written
            self._writer = None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._finish()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._writer.bytes_written if self._writer is not None else self._at

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        self._finish()
        end = self._size if size is None or size < 0 else min(self._size, self._at + size)
        if end <= self._at:
            return b""
        data = self._store.service.get_blob_client(self._container, self._name).download_blob(
            offset=self._at, length=end - self._at).readall()
        self._at += len(data)
        return bytes(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._writer is not None:  # never read: nothing to commit
                self._writer._failed = True
                self._writer.close()
                self._writer = None
            else:
                try:
                    self._store.service.get_blob_client(self._container, self._name).delete_blob()
                except ResourceNotFoundError:
                    pass
        finally:
            super().close()


class BlobReader(io.RawIOBase):
    """A blob read as a seekable file, by ranged downloads (wrap it in ``io.BufferedReader`` for large reads): what
    ``core.mdformat.iter_images`` reads a results file from, and ``core.imagelist.scan`` an image list, with nothing
    on the local disk (``core.scratch``). Every range is read on the condition that the blob is still the version
    first seen (its ETag): a blob replaced while it is read fails the read (``ResourceModifiedError``, HTTP 412)
    rather than mix two versions. Raises ``ResourceNotFoundError`` for a blob that is not there."""

    def __init__(self, store: BlobStore, container: str, name: str) -> None:
        super().__init__()
        self._blob = store.service.get_blob_client(container, name)
        properties = self._blob.get_blob_properties()
        self.size, self.etag = int(properties.size), str(properties.etag)
        self._size = self.size
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._size - self._at)
        if n <= 0:
            return 0
        data = self._blob.download_blob(offset=self._at, length=n, etag=self.etag,
                                        match_condition=MatchConditions.IfNotModified).readall()
        view[:len(data)] = data
        self._at += len(data)
        return len(data)


def open_blob(store: BlobStore, container: str, name: str, buffer_bytes: int = 4 * 1024 * 1024) -> io.BufferedReader:
    return io.BufferedReader(BlobReader(store, container, name), buffer_bytes)
