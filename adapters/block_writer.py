"""A write-only file object that streams into a block blob: staged blocks, one commit at close.

Why: the results zip (activities/results_zip.py) runs to gigabytes and is written by ``zipfile`` as a stream; holding
it in memory or on the Functions instance's small temporary disk is not an option. Memory holds one block
(``block_bytes``); Azure allows 50,000 blocks per blob, so 8 MiB blocks reach ~390 GiB. Nothing is visible under the
blob's name until ``close`` commits the block list, so a reader never sees half a zip; an exception inside the
``with`` leaves the staged blocks uncommitted (the service discards them after a week).

Not seekable: ``zipfile`` then writes each member's sizes in a data descriptor after its data, as the zip format
allows for streams.
"""
from __future__ import annotations

import base64
import io
from types import TracebackType
from typing import Any

from azure.storage.blob import BlobBlock, ContentSettings

from adapters.blobs import BlobStore

BLOCK_BYTES = 8 * 1024 * 1024


class BlockBlobWriter(io.RawIOBase):
    def __init__(self, store: BlobStore, container: str, name: str, content_type: str = "application/zip",
                 block_bytes: int = BLOCK_BYTES) -> None:
        super().__init__()
        self._blob = store.service.get_blob_client(container, name)
        self._content_type = content_type
        self._block_bytes = block_bytes
        self._buffer = bytearray()
        self._blocks: list[BlobBlock] = []
        self._failed = False
        self.bytes_written = 0

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

    def _stage(self, chunk: bytes) -> None:
        block_id = base64.b64encode(f"{len(self._blocks):08d}".encode()).decode()
        self._blob.stage_block(block_id, chunk)
        self._blocks.append(BlobBlock(block_id=block_id))

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._failed:
                if self._buffer or not self._blocks:
                    self._stage(bytes(self._buffer))
                    self._buffer.clear()
                self._blob.commit_block_list(self._blocks,
                                             content_settings=ContentSettings(content_type=self._content_type))
        finally:
            super().close()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self._failed = True  # leave the staged blocks uncommitted: no half zip under the name
        self.close()
