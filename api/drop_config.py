"""A dropped request the app cannot act on because one of its own settings is wrong (``core.settings`` raised
``ConfigError``, e.g. ``TRAPBATCH_KEEP_REPLACED_DAYS=3``): answered beside it as ``<name>.error.json``, naming the
setting and what to set, as a request sent over HTTP is answered (``500`` with the same error and hint).

Why: ``api.starters.task_dropped`` read the settings before anything else, so the error left the function; the
platform ran the trigger again at once, five times in all, and then wrote a poison message (host.json
``extensions.blobs.poisonBlobThreshold``; devhost/README.md fidelity row 5), and whoever dropped the request got no
answer at all (seen on devhost). Tries again do not help: a setting changes only when the operator changes it (on
Azure that restarts the app), and the trigger does not run again for a blob version it gave up on, so the answer
says to write the request again once the setting is fixed; that version's start then deletes this file
(``task_dropped``), as for any refusal.

Nothing is answered when the settings that reach trapbatch's own storage are what is wrong (``AzureWebJobsStorage``
missing): then nothing can be written, and the error goes to the platform as before.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from adapters.blobs import BlobStore
from core.errors import ConfigError
from core.settings import storage_connection
from gpu_batch import layout

# a request is far smaller (api.starters.MAX_BODY_BYTES); only the version's ETag is needed here
_READ_AT_MOST = 1


def answer(wrong: ConfigError, container: str, name: str, env: Mapping[str, str],
           store_for: Callable[[str], BlobStore]) -> bool:
    """Write ``<name>.error.json`` for the dropped request ``container/name`` refused by the app's setting error
    ``wrong``; ``store_for`` makes the store of a connection string. False: nothing written (trapbatch's own storage
    cannot be reached by these settings, so the caller raises ``wrong`` for the platform). True also when the request
    is gone or replaced since (its newer version has an event of its own). Blocking: call it off the event loop."""
    try:
        connection = storage_connection(env)
    except ConfigError:
        return False
    store = store_for(connection)
    version = store.read_version_or_none(container, name, _READ_AT_MOST)
    if version is None:
        return True
    refusal: dict[str, Any] = wrong.to_dict()
    refusal["hint"] = (f"{refusal.get('hint') or 'fix the app setting the error names'}; this is the app's setting, "
                       "not the request's: once the operator has fixed it, write the request again (this version is "
                       "not tried again)")
    refusal["request_etag"] = version[2]
    store.write_json(container, layout.drop_error_blob(name), refusal)
    return True
