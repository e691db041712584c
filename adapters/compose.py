"""Compose one block blob from literal bytes and byte ranges of other blobs, without reading them through memory.

Why: the parallel fan-in (``activities.fanin``) leaves each part's results as fragment blobs; the results file is
their concatenation (plus a head and a tail). Azure builds it server side: each range becomes a block with Put Block
From URL (``stage_block_from_url``; the source authorized by a short-lived read SAS when the app holds the account
key, or by the app's bearer token, ``x-ms-copy-source-authorization``, with a managed identity), then one Put Block
List commits them in order. No byte passes through the Functions worker, so the combine takes time per block, not
per byte. Limits (Azure Storage, "Scalability and performance targets for Blob storage" and the Put Block From URL
reference): a block blob has at most 50,000 committed blocks; a block at most 4000 MiB (service version 2019-12-12
on); block ids of one blob must all have the same length. Ranges are cut into ``SERVER_BLOCK`` (100 MiB) blocks,
under every version's limit, so 50,000 blocks hold 4.8 TiB.

Azurite (3.35) answers Put Block From URL with 501 ``APINotImplemented``. There, and on any service that does, the
same blocks are copied through this process instead, ``STREAM_BLOCK`` bytes at a time (memory bounded by the
block size times the copy threads; time proportional to the bytes), and ``compose_blob`` says which way it went.
Tests run against Azurite, so only that path is exercised there; the block plan and the commit are shared.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, Sequence, Union

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobSasPermissions, ContentSettings, generate_blob_sas

from adapters import blob_requests
from adapters.blobs import BlobStore
from adapters.block_writer import MAX_BLOCKS, SHARED_BUILD, block_id

logger = logging.getLogger(__name__)

SERVER_BLOCK = 100 * 1024 * 1024
STREAM_BLOCK = 8 * 1024 * 1024
THREADS = 8

# A piece of the composed blob: literal bytes, or (blob name in the same container, offset, length)
Piece = Union[bytes, tuple[str, int, int]]


class ComposeError(RuntimeError):
    """The pieces need more blocks than a block blob may hold."""




def _blocks(pieces: Sequence[Piece], chunk: int) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, bytes):
            if piece:
                out.append(piece)
            continue
        name, offset, length = piece
        for start in range(offset, offset + length, chunk):
            out.append((name, start, min(chunk, offset + length - start)))
    if len(out) > MAX_BLOCKS:
        raise ComposeError(f"{len(out)} blocks needed, a block blob holds {MAX_BLOCKS}")
    return out


def _source_auth(store: BlobStore, source: BlobClient) -> tuple[str, str | None]:
    """The source URL and the keyword arguments that authorize Put Block From URL to read it."""
    credential = store.service.credential
    key = getattr(credential, "account_key", None)
    if key:
        sas = generate_blob_sas(source.account_name or store.account, source.container_name, source.blob_name,
                                account_key=key, permission=BlobSasPermissions(read=True),
                                expiry=datetime.now(timezone.utc) + timedelta(hours=1))
        return f"{source.url}?{sas}", None
    token = credential.get_token("https://storage.azure.com/.default").token
    return source.url, f"Bearer {token}"


_server_side_refused: set[str] = set()  # accounts that answered APINotImplemented (Azurite)


class Composed(NamedTuple):
    """How ``compose`` wrote a blob (``"server"`` or ``"streamed"``) and the ETag its Put Block List answered."""

    mode: str
    etag: str


def compose_blob(store: BlobStore, container: str, name: str, pieces: Sequence[Piece],
                 content_type: str | None = None, stream_block: int = STREAM_BLOCK) -> str:
    """Write ``container/name`` as the concatenation of ``pieces``; returns ``"server"`` or ``"streamed"``."""
    return compose(store, container, name, pieces, content_type, stream_block).mode


def compose(store: BlobStore, container: str, name: str, pieces: Sequence[Piece], content_type: str | None = None,
            stream_block: int = STREAM_BLOCK, build: bytes = SHARED_BUILD) -> Composed:
    """``compose_blob``, answering the committed version's ETag too. ``build``: a ``block_writer.new_build`` where
    another writer may compose the same name meanwhile (a results zip), so this commit names its own blocks alone."""
    target = store.service.get_blob_client(container, name)
    mode = "streamed" if store.account in _server_side_refused else "server"
    blocks = _blocks(pieces, SERVER_BLOCK if mode == "server" else stream_block)

    def stage(item: tuple[int, Piece]) -> None:
        i, piece = item
        if isinstance(piece, bytes):
            target.stage_block(block_id(i, build), piece)
            return
        source_name, offset, length = piece
        source = store.service.get_blob_client(container, source_name)
        if mode == "server":
            url, auth = _source_auth(store, source)
            target.stage_block_from_url(block_id(i, build), url, source_offset=offset, source_length=length,
                                        source_authorization=auth)
        else:
            target.stage_block(block_id(i, build), source.download_blob(offset=offset, length=length).readall())

    staged: set[int] = set()
    if mode == "server":
        first = next((i for i, p in enumerate(blocks) if not isinstance(p, bytes)), None)
        if first is not None:
            try:
                stage((first, blocks[first]))
                staged.add(first)
            except HttpResponseError as exc:
                if exc.status_code != 501 and getattr(exc, "error_code", None) != "APINotImplemented":
                    raise
                logger.info("storage account %s has no Put Block From URL (Azurite?): copying blocks through this "
                            "process instead", store.account)
                _server_side_refused.add(store.account)
                return compose(store, container, name, pieces, content_type, stream_block, build)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(stage, [(i, p) for i, p in enumerate(blocks) if i not in staged]))
    settings = ContentSettings(content_type=content_type) if content_type else None
    ids: list[Any] = [block_id(i, build) for i in range(len(blocks))]  # the SDK takes ids or BlobBlock objects
    committed = target.commit_block_list(ids, content_settings=settings)
    return Composed(mode, str((committed or {}).get("etag") or ""))


def read_range(store: BlobStore, container: str, name: str, offset: int, length: int) -> bytes:
    """``length`` bytes of a blob from ``offset`` (one ranged GET; fewer where the range passes its end): how a
    repeat-search group reads its folders and the merge and exports read the workers' views
    (``adapters.blob_requests.get_range``, about half the SDK's CPU per request)."""
    return blob_requests.get_range(store.service.get_blob_client(container, name), offset, length)


def delete_prefix(store: BlobStore, container: str, prefix: str) -> int:
    """Delete every blob under ``prefix`` (the fan-in's work blobs, once the results are written); how many."""
    client = store.service.get_container_client(container)
    return delete_names(store, container, list(client.list_blob_names(name_starts_with=prefix)))


def delete_names(store: BlobStore, container: str, names: list[str]) -> int:
    """Delete the blobs ``names`` (in batches; one already gone is no failure); how many were named."""
    client = store.service.get_container_client(container)
    for start in range(0, len(names), 256):  # a blob batch takes at most 256 sub-requests
        batch = names[start:start + 256]
        try:
            answers = list(client.delete_blobs(*batch, raise_on_any_failure=False))
            # one already gone (404) is no failure here; any other refused sub-request is retried alone below
            # (Azurite, e.g., refuses every sub-request of a batch in the "$web" container with 400)
            # (and a batch refused as a whole answers once, for all of its sub-requests)
            left = ([n for n, a in zip(batch, answers) if not (200 <= a.status_code < 300 or a.status_code == 404)]
                    if len(answers) == len(batch) else batch)
        except HttpResponseError:  # no batch API on this service: one by one
            left = batch
        for name in left:
            try:
                client.delete_blob(name)
            except ResourceNotFoundError:
                pass
    return len(names)
