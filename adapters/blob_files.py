"""Whole blobs to and from local files, for steps that stream files larger than memory (the exports).

Why not in ``adapters.blobs``: that module is shared by every activity; these two operations serve the exports,
which read a finished results file (gigabytes at 10M images) from a temporary file, twice, with bounded memory.
"""
from __future__ import annotations

from typing import IO

from azure.core.exceptions import ResourceNotFoundError

from adapters.blobs import BlobStore
from core.errors import TrapbatchError


class ResultsNotFound(TrapbatchError, LookupError):
    """The results file an export was asked for does not exist (yet)."""


def download_to(store: BlobStore, container: str, name: str, fp: IO[bytes]) -> int:
    """Stream blob ``name`` into ``fp`` in chunks (the SDK's ``readinto``); returns the bytes written."""
    try:
        return int(store.service.get_blob_client(container, name).download_blob().readinto(fp))
    except ResourceNotFoundError:
        raise ResultsNotFound(f"{container}/{name} does not exist",
                              "exports are written from a finished results file: wait for the merge") from None


def delete_under(store: BlobStore, container: str, prefix: str, keep: set[str]) -> int:
    """Delete the blobs under ``prefix`` that are not in ``keep`` (e.g. manifest batches an earlier run wrote more of);
    returns how many went."""
    client = store.service.get_container_client(container)
    gone = 0
    for name in list(client.list_blob_names(name_starts_with=prefix)):
        if name not in keep:
            try:
                client.delete_blob(name)
                gone += 1
            except ResourceNotFoundError:  # deleted meanwhile by a concurrent run: the same outcome
                pass
    return gone
