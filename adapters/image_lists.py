"""Reading a request's image list blob (``core.imagelist``) from the images' storage account into a local file.

Why here: the edge (api/starters.py) and the enumeration (activities/image_list.py) read the same blob the same way,
and every storage answer must become an error a person can act on: a list that is not there, too large, or not
readable with the app's (or the secret's) access is a 4xx at the edge, never a 5xx and never a started task; an
account that is busy or did not answer is a 503 "retry" (``adapters.storage_errors.source_error``), and, in the
enumeration's activity, a failure its orchestration waits out.

Must not: hold the list in memory or on the local disk (it is read by ranges, ``open_image_list``).
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from typing import IO, Iterator
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from adapters.block_writer import BlobReader
from adapters.blobs import BlobStore
from adapters.storage_errors import SOURCE_ACCOUNT, source_error
from core.errors import SourceUnavailable
from core.imagelist import (MAX_NAME_CHARS, MAX_NAME_SEGMENTS, ImageListInvalid, ImageListSummary, ListedImage,
                            blob_name, scan)
from gpu_batch.storage_refs import NO_ACCESS_HINT


READ_BYTES = 4 * 1024 * 1024  # one ranged read of the list
NOT_THERE = ("upload the list into the images' container and name it as 'image_list' (a blob name in that container, "
             "e.g. \"lists/season-1.csv\")")
NO_ACCESS = NO_ACCESS_HINT
TOO_LARGE = "split the list into several requests, or ask the operator to raise TRAPBATCH_IMAGE_LIST_MAX_BYTES"


@contextmanager
def open_image_list(store: BlobStore, container: str, name: str, max_bytes: int,
                    account: tuple[str, str] = SOURCE_ACCOUNT) -> Iterator[IO[bytes]]:
    """List blob ``container/name`` as a seekable file read by ranges (``adapters.block_writer.BlobReader``: pinned
    to the version first seen), with every storage answer, at the open or while it is read, an error a person can
    act on. Nothing on the local disk: the enumeration's activity shares it (``core.scratch``). ``account``: which
    account ``store`` reads, for ``source_error``'s hint (``storage_errors.OWN_ACCOUNT`` for trapbatch's own)."""
    where = f"image list {name!r} in container {container!r}"
    host = _account_host(store)
    try:
        reader = BlobReader(store, container, name)
    except ResourceNotFoundError:
        raise ImageListInvalid(f"{where} does not exist", NOT_THERE) from None
    except AzureError as exc:
        raise source_error(exc, f"cannot read {where}", NO_ACCESS, host, account) from None
    if reader.size > max_bytes:
        raise ImageListInvalid(f"{where} has {reader.size} bytes, more than this trapbatch reads ({max_bytes})",
                               TOO_LARGE)
    try:
        with io.BufferedReader(reader, READ_BYTES) as fp:
            yield fp
    except ResourceModifiedError:
        raise SourceUnavailable(f"{where} was replaced while it was read",
                                "post the request again once the list is in place: the new list is a task of its "
                                "own") from None
    except ResourceNotFoundError:
        raise ImageListInvalid(f"{where} was deleted while it was read", NOT_THERE) from None
    except AzureError as exc:
        if isinstance(exc, HttpResponseError) and exc.status_code == 412:
            raise SourceUnavailable(f"{where} was replaced while it was read",
                                    "post the request again once the list is in place") from None
        raise source_error(exc, f"cannot read {where}", NO_ACCESS, host, account) from None


def _account_host(store: BlobStore) -> str:
    """The host of the account ``store`` reads (its URL's, never the SAS after it): what a refusal because DNS said
    a host does not exist carries as ``missing_host`` when the failure's chain does not name it
    (``source_error``'s ``account_host``), so that the drop trigger has a name to ask DNS about again."""
    return urlsplit(store.service.url).hostname or ""


def scan_image_list(store: BlobStore, container: str, name: str, max_bytes: int,
                    prefix: str = "", account: tuple[str, str] = SOURCE_ACCOUNT) -> ImageListSummary:
    """Read and check the whole list (``core.imagelist.scan``): its hash, counts and metadata columns, or the
    ``ImageListInvalid`` naming what to fix. Streamed from its blob: neither memory nor disk holds it.

    ``prefix``: the request's, which each path is below: the whole blob name must be a valid one ("cannot be more
    than 1,024 characters long", at most 254 path segments: REST Naming and Referencing Containers, Blobs, and
    Metadata); Azure answers a request for another with 400 (the emulator does not check), on every attempt, and
    the task fails without naming the row. ``account``: as ``open_image_list``'s."""
    def check(item: ListedImage) -> None:
        full = blob_name(prefix, item.path)
        if len(full) > MAX_NAME_CHARS:
            raise ImageListInvalid(f"{name}: {full[:80]!r}... is {len(full)} characters with the request's prefix, "
                                   f"more than a blob name may have ({MAX_NAME_CHARS})",
                                   "shorten the path in the list, or the request's 'prefix'")
        if full.count("/") >= MAX_NAME_SEGMENTS:
            raise ImageListInvalid(f"{name}: {full[:80]!r}... is {full.count('/') + 1} folders and name deep with "
                                   f"the request's prefix, more than a blob name may have ({MAX_NAME_SEGMENTS})",
                                   "shorten the path in the list, or the request's 'prefix'")

    with open_image_list(store, container, name, max_bytes, account) as fp:
        return scan(fp, name, check if prefix else None)
