"""What a worker process shares between its shards: the node's identity (one credential) and one HTTP session.

Why: a node-resident worker (``gpu_batch.worker.resident``) runs shard after shard in one process (thousands a day:
a 10,000-image shard takes ~25 s at 400 img/s), and each shard built its own account's client
(``sources.blob_service_from_env``), a Key Vault reader and, for images in another account, that account's client
(``__main__._open_images_and_output``). Each had

* a ``DefaultAzureCredential`` of its own: a credential caches its tokens in itself ("the in-memory cache may be
  cleared by creating a new credential instance", azure-identity ``TOKEN_CACHING.md``), so every shard asked the
  node's IMDS for a token again, for each resource, and held the credential's transport's sockets;
* a ``requests.Session`` of its own, whose pooled connections (the images are read on many threads) stayed open until
  a cyclic garbage collection, since azure-core's pipeline objects refer to each other: measured 5-6 descriptors more
  per shard (``gpu_batch/tests/test_resident_clients.py``).

Now they take ``node_credential()`` (one per identity environment) and send through ``shared_session_options()``'s
session (``session_owner=False``: a client's ``close`` leaves it open; azure-core 1.41
``pipeline/transport/_requests_basic.py``), whose connections are reused from shard to shard and bounded
(``storage_refs.SHARED_POOL_CONNECTIONS`` a host, enough for the fetch threads). Secrets are still read at each shard,
so a rotated SAS takes effect at the next shard. A one-shot worker runs one shard per process: for it nothing changes
but where its one credential and session are kept.

The Functions app does the same with its own (``adapters.identity.app_credential``,
``adapters.transport.shared_session_options``); the worker is deployed apart from the app and imports nothing of it
(``tests/unit/test_layering.py``).

Must not: read secrets or decide what a failure means (``gpu_batch.storage_refs`` does).
"""
from __future__ import annotations

import threading
from typing import Any

from gpu_batch import storage_refs

_CREDENTIALS: dict[tuple[Any, tuple[tuple[str, str], ...]], Any] = {}
_SESSION: list[Any] = []  # the process's one requests.Session, once made
_LOCK = threading.Lock()


def node_credential() -> Any:
    """The process's ``DefaultAzureCredential`` for the identity its environment names (in a
    ``storage_refs.RefreshSparingCredential``).

    Keyed by the identity-relevant variables of ``os.environ`` (what the credential reads when it is built; a resident
    worker swaps ``os.environ`` for each shard's, ``resident._swap_environ``): a shard whose client names another
    identity (``AZURE_CLIENT_ID``) gets a credential built for it, never one holding another identity's token. Shared
    use is safe: "the in-memory token cache provided by the Azure Identity library can be used by multiple threads
    concurrently" (``TOKEN_CACHING.md``). A failed token request is not remembered, so the next shard asks again and
    the worker judges that failure as before (exit 69 when IMDS did not answer): azure-identity 1.27.0
    ``_credentials/chained.py`` keeps only a credential that succeeded, ``_credentials/imds.py`` marks its endpoint
    available only once it answered. Also keyed by the class as ``azure.identity`` has it now, so a test that stands
    another class in gets its own.

    What sharing changes when IMDS stops answering: a credential that once had a token no longer probes first
    (``imds.py``: the 1-s probe runs only in a credential chain while ``_endpoint_available`` is unset), so a token
    request takes ``ImdsRetryPolicy``'s whole course before it fails (~5 s refused, ~24 s against 503s, ~75 s
    against 410s, IMDS being updated: riding that out is its point, and the probe let a 410 through to the same
    retries). Once its token has expired no shard can read its storage however fast that fails, and a quicker exit
    69 would only hand the shard back sooner (for an hour a 69 spends no attempt, ``ShardsInput.unavailable_wait_s``,
    then each does): left so. Before then the token in hand serves: a refresh that
    fails in the second half of its life is tried again only every ``storage_refs.TOKEN_REFRESH_RETRY_S``
    (``storage_refs.RefreshSparingCredential``, which this credential is wrapped in), not at every request."""
    from azure import identity

    maker = identity.DefaultAzureCredential
    key = (maker, storage_refs.identity_environment())
    with _LOCK:
        credential = _CREDENTIALS.get(key)
        if credential is None:
            credential = _CREDENTIALS[key] = storage_refs.RefreshSparingCredential(maker())
        return credential


def shared_session_options() -> dict[str, Any]:
    """Keyword arguments for an Azure SDK client (a storage client, a ``RequestsTransport``) that sends through the
    process's one ``requests.Session``: ``session`` and ``session_owner=False``.

    Made by ``storage_refs.new_shared_session`` (as azure-core makes its own, with a pool of 64 connections a host
    and no cookies: it carries every shard's requests, to every account and vault), as the Functions app's is;
    requests' ``trust_env`` on, as the worker's clients had it (a proxy is read from the environment at each
    request)."""
    with _LOCK:
        if not _SESSION:
            _SESSION.append(storage_refs.new_shared_session())
        return {"session": _SESSION[0], "session_owner": False}


def shared_session_transport() -> Any:
    """A ``RequestsTransport`` over the process's shared session, for a client that takes a transport (the Key Vault
    reader, ``storage_refs.secret_reader_from_env``)."""
    from azure.core.pipeline.transport import RequestsTransport

    return RequestsTransport(**shared_session_options())


def forget() -> None:
    """Drop the shared credentials (tests: an identity stand-in must not find an earlier test's token). The session
    stays: it holds nothing of any identity."""
    with _LOCK:
        _CREDENTIALS.clear()
