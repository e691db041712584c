"""Reading a request's image list blob (``core.imagelist``) from the images' storage account into a local file.

Why here: the edge (api/starters.py) and the enumeration (activities/image_list.py) read the same blob the same way,
and every storage answer must become an error a person can act on: a list that is not there, too large, or not
readable with the app's (or the secret's) access is a 4xx at the edge, never a 5xx and never a started task.

Must not: hold the list in memory (it is streamed to a temporary file the caller owns).
"""
from __future__ import annotations

import tempfile
from typing import IO

from azure.core.exceptions import AzureError, ResourceNotFoundError

from adapters.blobs import BlobStore
from core.errors import SourceUnavailable
from core.imagelist import ImageListInvalid, ImageListSummary, scan


def download_image_list(store: BlobStore, container: str, name: str, fp: IO[bytes], max_bytes: int) -> int:
    """Stream list blob ``container/name`` into ``fp`` (left at its start); returns its size in bytes."""
    where = f"image list {name!r} in container {container!r}"
    client = store.service.get_blob_client(container, name)
    try:
        size = int(client.get_blob_properties().size)
        if size > max_bytes:
            raise ImageListInvalid(f"{where} has {size} bytes, more than this trapbatch reads ({max_bytes})",
                                   "split the list into several requests, or ask the operator to raise "
                                   "TRAPBATCH_IMAGE_LIST_MAX_BYTES")
        client.download_blob().readinto(fp)
    except ResourceNotFoundError:
        raise ImageListInvalid(f"{where} does not exist", "upload the list into the images' container and name it "
                               "as 'image_list' (a blob name in that container, e.g. \"lists/season-1.csv\")") from None
    except AzureError as exc:
        raise SourceUnavailable(f"cannot read {where}: {type(exc).__name__}",
                                "the app (or the request's secret) needs read permission on that container") from None
    fp.seek(0)
    return size


def scan_image_list(store: BlobStore, container: str, name: str, max_bytes: int) -> ImageListSummary:
    """Download and check the whole list (``core.imagelist.scan``): its hash, counts and metadata columns, or the
    ``ImageListInvalid`` naming what to fix. Disk, not memory, holds it meanwhile."""
    with tempfile.TemporaryFile("w+b") as fp:
        download_image_list(store, container, name, fp, max_bytes)
        return scan(fp, name)
