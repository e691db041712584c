"""Where activities and the HTTP edge get their settings and clients (storage, source accounts, the GPU pool).

Settings are read from the environment at call time (cheap, and tests can change them; the ones a task's outputs
depend on are then replaced by those its run decided when it started, ``activities.decided``); clients are cached per
process by their connection values (``functools.cache``), so a burst of activities shares one client. The pool is
created under a lock: ``functools.cache`` lets concurrent first calls each build one, and a local or simulated pool
keeps state per object (its worker processes, its concurrency limit, the simulated tasks), so shards submitted through
an object the cache then dropped were unknown to every later poll (a 10M-shape benchmark waited forever on three of
five shard groups whose first submissions raced).
"""
from __future__ import annotations

import functools
import os
import threading

from adapters.blobs import BlobStore, blob_store, deadline_blob_store
from adapters.identity import app_credential
from adapters.transport import shared_session_options, shared_session_transport
from core.deadline import Deadline
from core.errors import SourceBusy, SourceNotAllowed, SourceUnavailable
from core.requests import normalize_account_url
from core.settings import Settings
from gpu_batch.pool import GpuPool
from gpu_batch.storage_refs import (SecretStoreUnavailable, SourceAccessError, SourceRef, deadline_storage_options,
                                    missing_host_not_retried, secret_reader_from_env, source_service)

# A secret store that did not answer is passing: try again, nothing to grant or create.
SECRET_STORE_BUSY = ("retry in a minute; the secret store (TRAPBATCH_KEY_VAULT_URL) did not answer. If it persists, "
                     "check the Key Vault's health and throttling in the Azure portal")


def settings() -> Settings:
    return Settings.from_env(os.environ)


def store(s: Settings | None = None, deadline: Deadline | None = None) -> BlobStore:
    """trapbatch's own account: the process's shared client (``blob_store``), or with a ``deadline`` a client of
    the caller's own whose calls end by it (``deadline_blob_store``: Event Grid's delivery of a marker)."""
    connection = (s or settings()).storage_connection
    return blob_store(connection) if deadline is None else deadline_blob_store(connection, deadline)


def source_store(s: Settings, account_url: str = "", credential_secret: str = "", *,
                 deadline: bool | Deadline = False) -> BlobStore:
    """Where a task's images are read from: trapbatch's own account, or the one the request named.

    Not cached: the secret is read at each use, so a rotated SAS takes effect at the next activity. Only the app's
    identity is shared (``adapters.identity.app_credential``: its token is asked for once, not per call), and the
    connections: the storage client and the Key Vault client made here send through the process's shared session
    (``adapters.transport.shared_session_options``), so they hold no sockets of their own (each held its own until a
    cyclic garbage collection, rare here: ``core.collector``), and nothing needs closing when the caller is done.

    ``deadline``: the caller must answer within a deadline (the edges' check of a request, ``api.starters.
    _check_source``): another account's host that DNS says does not exist then fails at the first try, not after the
    storage SDK's ~84 s of back-offs (``storage_refs.missing_host_not_retried``). True (the drop trigger: it can wait
    out the SDK's other retries): that alone. A ``Deadline`` (Event Grid's 30-s delivery of a marker,
    ``api.arrivals``; an HTTP POST, which Azure's front end cuts at 230 s, ``api.starters.POST_CHECKS_DEADLINE_S``):
    also every storage and Key Vault request, and every retry, ends by it
    (``storage_refs.deadline_storage_options``, ``key_vault_reader``'s ``time_left``), trapbatch's own account too
    (``store``); a call it cut short is busy, as a storage account that did not answer. Activities keep the SDK's
    default: they ask DNS again themselves.

    A secret store that did not answer (``SecretStoreUnavailable``: no connection, a timeout, 408, 429 or 5xx, or
    the managed identity's token endpoint did not answer) is ``SourceBusy``: 503 with Retry-After at the edge, and a
    busy failure an activity's orchestration waits out. Any other failure to open the account is ``SourceUnavailable``
    (400: a secret to create, a role to grant).
    """
    ref = SourceRef(account_url, credential_secret)
    until = deadline if isinstance(deadline, Deadline) else None
    if ref.is_own_account:
        return store(s, until)
    check_source_allowed(s, account_url)
    if credential_secret and s.notify_secret and credential_secret.casefold() == s.notify_secret.casefold():
        # (Key Vault names are case-insensitive)
        # the sources' vault may hold the app's own secrets too (without TRAPBATCH_APP_KEY_VAULT_URL, or an old copy
        # left there): named as a storage credential, the signing key would be read and sent to the account in a
        # request's query string
        raise SourceNotAllowed(f"secret {credential_secret!r} signs this app's notifications; it is no storage "
                               "credential", "name the Key Vault secret that holds the account's SAS token or "
                               "connection string")
    # The app's identity reads the vault and, without a secret, the account: as AppCredential, so that its token
    # endpoint not answering fails as TokenEndpointUnavailable, busy, not as a refused identity (adapters.identity)
    credential = app_credential()
    shared = shared_session_options()
    options = (deadline_storage_options(until.left, try_timeouts=until.try_timeouts, **shared) if until is not None
               else {"retry_policy": missing_host_not_retried() if deadline else None, "client_options": shared})
    try:
        return BlobStore(source_service(ref, lambda: store(s).service,
                                        secret_reader_from_env(s.secret_store_env(), credential=credential,
                                                               transport=shared_session_transport(),
                                                               time_left=until.left if until else None,
                                                               try_timeouts=until.try_timeouts if until else None),
                                        credential=credential, **options))
    except SecretStoreUnavailable as exc:
        raise SourceBusy(str(exc), SECRET_STORE_BUSY) from None
    except SourceAccessError as exc:
        refused = SourceUnavailable(str(exc), "see README 'Images in another storage account'")
        refused.missing_host = exc.missing_host  # a vault host DNS said is missing: the drop trigger asks again
        raise refused from None


def check_source_allowed(s: Settings, account_url: str) -> None:
    """Refuse an account outside ``TRAPBATCH_SOURCE_ACCOUNTS`` before any secret is read or any request is made:
    otherwise a caller could make the app send its managed-identity token, or a named secret, to a host they chose."""
    if account_url and normalize_account_url(account_url) not in s.source_accounts:
        allowed = ", ".join(s.source_accounts) or "none: only this app's own storage account"
        raise SourceNotAllowed(f"storage account {account_url!r} is not one this trapbatch may read from",
                               f"the operator lists the accounts requests may name in TRAPBATCH_SOURCE_ACCOUNTS "
                               f"(now: {allowed})")


@functools.cache
def _pool(kind: str, connection: str, container: str, concurrency: int, device: str, model_cache: str,
          faults: tuple[tuple[str, str], ...], batch: tuple[str, ...], max_task_seconds: int,
          secret_env: tuple[tuple[str, str], ...] = (), simulated_failure_rate: float = 0.0,
          resident: bool = False, tuning: tuple[str, ...] = ()) -> GpuPool:
    from gpu_batch.pool import make_pool

    if kind == "simulated":  # the control-plane benchmark's pool (bench/control_plane.py); no detector
        return make_pool("simulated", connection_string=connection, failure_rate=simulated_failure_rate)
    if kind == "local":
        worker_env = {"TRAPBATCH_STORAGE_CONNECTION": connection, "TRAPBATCH_DEVICE": device, **dict(secret_env)}
        if model_cache:
            worker_env["TRAPBATCH_MODEL_CACHE"] = model_cache
        return make_pool("local", connection_string=connection, log_container=container,
                         max_concurrent=concurrency or None, worker_env=worker_env, faults=dict(faults),
                         max_task_seconds=max_task_seconds, resident=resident, worker_tuning=tuning)
    account_url, pool_id, image, identity, identity_resource_id, storage_url = batch
    # the app's identity as AppCredential: its token endpoint not answering is busy (adapters.identity), not refused
    return make_pool("azure_batch", credential=app_credential(), account_url=account_url, pool_id=pool_id, image=image,
                     worker_identity_client_id=identity, identity_resource_id=identity_resource_id,
                     storage_account_url=storage_url, log_container=container,
                     max_task_seconds=max_task_seconds, key_vault_url=dict(secret_env).get("TRAPBATCH_KEY_VAULT_URL", ""),
                     resident=resident, worker_tuning=tuning)


_POOL_LOCK = threading.Lock()


def pool(s: Settings) -> GpuPool:
    """The GPU pool the settings name, one per process and configuration (see the module doc for the lock)."""
    with _POOL_LOCK:
        return _pool(s.pool, s.storage_connection, s.container, s.local_concurrency,
                     s.device, s.model_cache, tuple(sorted(s.worker_faults.items())),
                     (s.batch_account_url, s.batch_pool_id, s.worker_image, s.worker_identity,
                      s.worker_identity_resource_id, s.storage_account_url),
                     s.knobs.max_task_seconds, tuple(sorted(s.secret_store_env().items())), s.simulated_failure_rate,
                     s.worker_resident, s.worker_tuning)
