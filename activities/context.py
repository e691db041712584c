"""Where activities get their settings and clients.

Settings are read from the environment at call time (cheap, and tests can change them); clients are cached per
process by their connection values (``functools.cache`` in the adapters), so a burst of activities shares one client.
"""
from __future__ import annotations

import os

from adapters.blobs import BlobStore, blob_store
from core.errors import SourceUnavailable
from core.settings import Settings
from gpu_batch.storage_refs import SourceAccessError, SourceRef, secret_reader_from_env, source_service


def settings() -> Settings:
    return Settings.from_env(os.environ)


def store(s: Settings | None = None) -> BlobStore:
    return blob_store((s or settings()).storage_connection)


def source_store(s: Settings, account_url: str = "", credential_secret: str = "") -> BlobStore:
    """Where a task's images are read from: trapbatch's own account, or the one the request named.

    Not cached: the secret is read at each use, so a rotated SAS takes effect at the next activity.
    """
    ref = SourceRef(account_url, credential_secret)
    if ref.is_own_account:
        return store(s)
    try:
        return BlobStore(source_service(ref, lambda: store(s).service, secret_reader_from_env(s.secret_store_env())))
    except SourceAccessError as exc:
        raise SourceUnavailable(str(exc), "see README 'Images in another storage account'") from None
