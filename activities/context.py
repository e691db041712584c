"""Where activities get their settings and clients.

Settings are read from the environment at call time (cheap, and tests can change them); clients are cached per
process by their connection values (``functools.cache`` in the adapters), so a burst of activities shares one client.
"""
from __future__ import annotations

import os

from adapters.blobs import BlobStore, blob_store
from core.settings import Settings


def settings() -> Settings:
    return Settings.from_env(os.environ)


def store(s: Settings | None = None) -> BlobStore:
    return blob_store((s or settings()).storage_connection)
