"""Images in someone else's storage account: how a task names them, and how each reader gets in.

Why this module exists: ecologists' photos usually sit in their own storage account, not trapbatch's. A task can name
that account (``source_account_url``) and, where trapbatch's managed identity has no role on it, the *name* of a
Key Vault secret holding a SAS token or a connection string (``credential_secret``). Only names travel: the request,
the orchestration history (plain tables), shard manifests and pool task settings never hold the secret. Whatever
needs the images (enumeration, preview thumbnails, every worker) reads the secret right before use, with its own
identity, so a rotated SAS is picked up by the next reader.

Secret stores: Key Vault (``TRAPBATCH_KEY_VAULT_URL``, with ``DefaultAzureCredential``), or, for local runs and tests
only, a JSON file of name -> value (``TRAPBATCH_LOCAL_SECRETS_FILE``), the way Azurite stands in for storage.

Shared by the Functions app and the GPU worker (like ``manifest.py``); must not import either side.
"""
from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

# What to do when another account refuses a read lives beside the failure reason it explains (``REASON_AUTH``), where
# the app's core, which may not import this module, reads it too (core.failure_advice); re-exported for the worker's
# and adapters' messages
from gpu_batch.manifest import NO_ACCESS_HINT as NO_ACCESS_HINT

KEY_VAULT_ENV = "TRAPBATCH_KEY_VAULT_URL"
LOCAL_SECRETS_ENV = "TRAPBATCH_LOCAL_SECRETS_FILE"

SecretReader = Callable[[str], str]
E = TypeVar("E", bound=BaseException)

class SourceAccessError(Exception):
    """The source account or its credential cannot be used; the message says what to fix. ``missing_host``: the
    host DNS said does not exist when that is why (a Key Vault's: ``key_vault_reader``), else None."""

    missing_host: str | None = None


class SecretStoreUnavailable(SourceAccessError):
    """The secret store did not answer (no connection, a timeout, a 408, 429 or 5xx, after the SDK's own retries): a
    passing cause, which the GPU worker exits retryable for (``exit_codes.STORAGE_UNAVAILABLE``), not as a secret it
    cannot read (``exit_codes.SOURCE``, unfixable: twice in a row failed the whole task over Key Vault throttling).
    A ``SourceAccessError`` still, so the app's callers, which answer any of them alike, need no change."""


def service_did_not_answer(exc: BaseException) -> bool:
    """Whether an Azure SDK call failed for a passing cause: no answer (a connection or timeout error, which azure-core
    raises without a status), or an answer that says "later": 408, 429 or 5xx (Azure Storage's ServerBusy 503,
    OperationTimedOut and InternalError 500; Key Vault's throttling 429). A 404, 401, 403 or any other 4xx is about
    the request and stays so. So is a credential that could not get a token, except when the token endpoint did
    not answer (``token_endpoint_did_not_answer``)."""
    from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, IncompleteReadError,
                                       ServiceRequestError, ServiceResponseError)

    if isinstance(exc, HttpResponseError) and getattr(exc, "status_code", None) is not None:
        status = int(exc.status_code)  # type: ignore[arg-type]
        return status >= 500 or status in (408, 429)
    if isinstance(exc, ClientAuthenticationError):  # no status: raised by the credential, before any request went out
        return token_endpoint_did_not_answer(exc)
    # IncompleteReadError: a body cut off mid-stream (no status), as orchestrations.retries.BUSY_TYPES counts it
    return (isinstance(exc, (ServiceRequestError, ServiceResponseError, IncompleteReadError, ConnectionError,
                             TimeoutError))
            and unresolvable_host(exc) is None)  # DNS said the host does not exist: no retry makes it exist


# getaddrinfo's answers for a host name that does not exist (EAI_NONAME, NXDOMAIN: glibc's "Name or service not
# known", [Errno -2]; EAI_NODATA, the name without an address: "No address associated with hostname", [Errno -5]), as
# cli.client reads them; unlike EAI_AGAIN ("Temporary failure in name resolution", [Errno -3]: the resolver did not
# answer) or a refused or reset connection, which pass. The platform's own numbers (socket's constants), not glibc's.
_NO_SUCH_NAME = frozenset(code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None)


def unresolvable_host(exc: BaseException) -> str | None:
    """The host name DNS said does not exist, when that is why the request behind ``exc`` failed (a deleted or
    misspelt storage account or Key Vault: permanent, unlike a resolver that did not answer); None otherwise, and ""
    when the chain does not say which host.

    Read from the ``socket.gaierror``'s errno (``_NO_SUCH_NAME``), not from the message, anywhere on the chain the
    transport built. With azure-core 1.41 over requests 2.34 and urllib3 2.8 (requirements/): the SDK's retries off
    (``Retry(total=False)``, ``RequestsTransport``), urllib3 re-raises its own ``NameResolutionError`` and azure-core
    wraps it as ``ServiceRequestError(err, error=err)`` (``inner_exception``, no ``__cause__``); urllib3 raised it
    ``from`` the ``gaierror`` (``urllib3/connection.py`` ``_new_conn``) and keeps the connection (``.conn.host``,
    the host asked for). Through requests with retries it arrives as ``ConnectionError(MaxRetryError(reason=...))``
    (``args``, ``reason``): walked alike. (Source accounts and vaults are read with the sync clients only.)

    Behind a proxy (``HTTPS_PROXY``) the name that failed is the proxy's: urllib3 connects to the proxy and raises
    ``ProxyError("Unable to connect to proxy", NameResolutionError(...))`` (``urllib3/connectionpool.py``
    ``urlopen``), and the account's own name was never looked up (the proxy resolves it). None then: no account to
    call missing, and the failure stays one to reach the service (``service_did_not_answer``).
    """
    from urllib3.exceptions import ProxyError  # azure-core's requests transport's own

    seen: set[int] = set()
    todo: list[Any] = [exc]
    host = ""
    found = False
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ProxyError):
            return None  # the proxy's name, not the service's (docstring)
        named = getattr(getattr(item, "conn", None), "host", None) or getattr(item, "_host", None)
        if isinstance(named, str) and named and not host:
            host = named
        if isinstance(item, socket.gaierror) and item.errno in _NO_SUCH_NAME:
            found = True
        todo.extend([*item.args, getattr(item, "reason", None), getattr(item, "inner_exception", None),
                     item.__cause__, item.__context__])
    return host if found else None


def host_resolves(host: str, port: int = 443) -> bool | None:
    """Whether DNS finds ``host`` now: True; False when it says there is no such name (``_NO_SUCH_NAME``); None when
    it gave no answer either way (EAI_AGAIN: the resolver did not answer, or any other error of the lookup).

    Asked as urllib3 asks before each connection (``socket.getaddrinfo`` for a stream socket:
    ``urllib3/util/connection.py`` ``create_connection``), so the answer is the one the next read would get. Used
    where one lookup says more than one more read: the worker's wait at a shard's end for a host reads found
    missing (``gpu_batch.worker.sources.BlobImageSource.wait_for_host``), where a read would take the SDK's retries,
    about a minute, to say the same."""
    try:
        socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return False if exc.errno in _NO_SUCH_NAME else None
    except (OSError, UnicodeError):  # UnicodeError: a name the IDNA codec refuses
        return None
    return True


def missing_host_not_retried() -> Any:
    """A retry policy for a storage client whose caller has a deadline: the storage SDK's own (``ExponentialRetry``
    with its defaults) except that a request DNS said has no such host (``unresolvable_host``) fails at once, as with
    ``retry_total=0``, instead of after the SDK's three back-offs. Timeouts, refused connections, a resolver that did
    not answer (EAI_AGAIN) and 408/429/5xx answers are retried as before.

    Why: the back-offs are 18, 24 and 42 s, ±3 each (Azure/azure-sdk-for-python
    ``sdk/storage/azure-storage-blob/azure/storage/blob/_shared/policies.py``, 12.31 here:
    ``ExponentialRetry(initial_backoff=15, increment_base=3, retry_total=3)``; ``StorageRetryPolicy.send`` calls
    ``increment``, which adds 1 to ``count``, before ``sleep``, so each back-off is ``15 + 3**count`` with count 1, 2,
    3), ~84 s before the caller learns what the first try already said. The edges' check of a request's container
    (``api.starters._check_source``) answers a caller that waits: an HTTP client, the drop trigger (which then asks
    DNS again itself, ``resolves_again``) and Event Grid's delivery of a marker, which "waits 30 seconds for a
    response" (MicrosoftDocs articles/event-grid/delivery-and-retry.md): each delivery then timed out and overlapped
    the next. Those tries could not tell a blip of an existing account's name (up to ~120 s, ``HOST_GONE_AFTER_S``)
    from a deleted account either: the callers that must, ask DNS (``resolves_again``, ``api.arrivals``' count
    across deliveries)."""
    return _missing_host_not_retried_policy()()


@functools.cache
def _missing_host_not_retried_policy() -> Any:
    """The class behind ``missing_host_not_retried``, made once (azure-storage-blob is imported lazily here, as
    throughout this module)."""
    from azure.storage.blob import ExponentialRetry

    class MissingHostNotRetried(ExponentialRetry):
        def increment(self, settings: dict[str, Any], request: Any, response: Any = None,
                      error: Any = None) -> bool:
            # False: "retries exhausted", on which StorageRetryPolicy.send raises the error it has
            if error is not None and unresolvable_host(error) is not None:
                return False
            return bool(super().increment(settings, request, response=response, error=error))

    return MissingHostNotRetried


# A client bound by a caller's deadline (``deadline_storage_options``, ``key_vault_reader``'s ``time_left``): each
# request's timeouts and each retry's back-off, far below the SDKs' own. Those are, for storage, connection 20 s and
# read 60 s a try and back-offs of 18, 24 and 42 s (azure-storage-blob 12.31 ``_shared/constants.py``
# CONNECTION_TIMEOUT, READ_TIMEOUT, set in ``_shared/base_client.py`` ``_create_pipeline``; ``missing_host_not_retried``
# cites the back-offs), ~400 s for four tries that hang; for Key Vault, azure-core's 300 s and 300 s a try
# (``azure/core/configuration.py`` ``ConnectionConfiguration``) and ten retries (``RetryPolicy``, 1.41). A caller such
# as Event Grid's 30-s delivery of a marker (``api.arrivals.MARKER_DELIVERY_DEADLINE_S``) cannot wait for either.
DEADLINE_TRY_CONNECT_S = 3.0  # a request's connection timeout, at most (an Azure endpoint connects in milliseconds)
DEADLINE_TRY_READ_S = 6.0  # a request's read timeout, at most (a small read or write answers within a second)
DEADLINE_BACKOFFS_S = (0.5, 1.0, 2.0)  # before the first, second and third retry, each +-DEADLINE_JITTER of it
DEADLINE_JITTER = 0.25
DEADLINE_MIN_TRY_S = 1.0  # a retry is made only if this much (or the last try's length, if longer) is left after
# its back-off
# The back-offs of a caller with a long deadline (``try_timeouts`` given: an HTTP POST's 170 s,
# ``api.starters.POST_CHECKS_DEADLINE_S``): the storage SDK's own (``missing_host_not_retried`` cites them), still
# only while they fit. Why not the short ones: they span ~3.5 s, so a 503 or a dropped connection lasting a few
# seconds, which the SDK's retries waited out for the POST before it had a deadline, failed it with a 503.
PATIENT_BACKOFFS_S = (18.0, 24.0, 42.0)


def deadline_timeouts(left: float, caps: tuple[float, float] | None = None) -> tuple[float, float]:
    """The connection and read timeouts of a request sent ``left`` seconds before its caller's deadline: ``caps``
    (None: the short ones above), and together never more than ``left`` (so a request that hangs ends by the
    deadline)."""
    cap_connect, cap_read = caps or (DEADLINE_TRY_CONNECT_S, DEADLINE_TRY_READ_S)
    connect = min(cap_connect, left / 2)
    return connect, min(cap_read, left - connect)


def deadline_storage_options(time_left: Callable[[], float], transport: Any = None, *,
                             try_timeouts: tuple[float, float] | None = None,
                             **transport_kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for a storage client (``BlobServiceClient``) whose every call ends by a deadline:
    ``time_left()`` says how many seconds are left (0 or less: none). Its own client, never a shared one: the
    activities keep the SDK's policy (they have minutes, and the patience is worth it). ``try_timeouts``: each
    request's (connection, read) timeouts at most (``deadline_timeouts``' ``caps``; None: the short ones).

    * ``retry_policy``: ``missing_host_not_retried``'s (a host DNS says does not exist is not retried), with at most
      three retries after ``DEADLINE_BACKOFFS_S`` (with ``try_timeouts``: ``PATIENT_BACKOFFS_S``), and none whose
      back-off would leave less than ``DEADLINE_MIN_TRY_S``, or than the last try took, before the deadline
      (``_deadline_backoff``): the last failure is then raised (a 503's ``HttpResponseError``, a timeout), which the
      callers class busy (``service_did_not_answer``) as before, never as a refusal.
    * ``transport``: ``transport`` (None: a ``RequestsTransport`` of ``transport_kwargs``) wrapped so that each
      request is sent with ``deadline_timeouts(time_left())`` and none once the deadline passed
      (``ServiceRequestTimeoutError``, a request that did not go out: busy). Set on the transport, not in the retry
      policy: a storage client's sub-clients send through a ``TransportWrapper`` of it, which passes each request's
      keyword arguments on (``_shared/base_client.py``), and azure-core's ``RequestsTransport.send`` reads
      ``connection_timeout`` and ``read_timeout`` from them over its own (``azure/core/pipeline/transport/
      _requests_basic.py``; azure-core's own ``RetryPolicy._configure_timeout`` shortens ``connection_timeout`` the
      same way), so every request a try makes, and every try, is bounded.

    What it cannot bound: the DNS lookup before a connection (urllib3's ``create_connection`` calls
    ``getaddrinfo``, which takes no timeout: the resolver's own, ~5 s a query where it does not answer), and the
    token request of a credential (its own pipeline); callers keep a margin for them (``api.arrivals``: 20 s of
    Event Grid's 30). A streamed body (the storage SDK's blob download) is read by the deadline as well
    (``_DeadlineBody``), and so is one read through ``iter_bytes`` of a plain response (trapbatch's own small GETs:
    ``adapters.blob_requests``, ``adapters.listing``). A body the transport reads before ``send`` returns (a
    request sent without ``stream``: the SDKs' other operations, small answers) is bounded only a socket read at a
    time, by the read timeout."""
    if transport is None:
        from azure.core.pipeline.transport import RequestsTransport

        transport = RequestsTransport(**transport_kwargs)
    classes = _deadline_classes()
    return {"retry_policy": classes.storage_retry(time_left, _backoffs(try_timeouts)),
            "transport": classes.transport(transport, time_left, try_timeouts)}


def _backoffs(try_timeouts: tuple[float, float] | None) -> tuple[float, ...]:
    """A deadline's retry back-offs: ``PATIENT_BACKOFFS_S`` for a long one (``try_timeouts`` given), else the short
    ``DEADLINE_BACKOFFS_S``."""
    return DEADLINE_BACKOFFS_S if try_timeouts is None else PATIENT_BACKOFFS_S


def deadline_vault_options(time_left: Callable[[], float], transport: Any = None,
                           try_timeouts: tuple[float, float] | None = None) -> dict[str, Any]:
    """Keyword arguments for a Key Vault client (``SecretClient``) whose every read ends by a deadline, as
    ``deadline_storage_options``' for storage: each request bounded by ``deadline_timeouts``, at most three retries
    after ``DEADLINE_BACKOFFS_S`` (or the ``Retry-After`` a 429 or 503 asks for, when longer) while they fit before
    the deadline, and a vault host DNS says does not exist not retried (``key_vault_reader`` then asks DNS itself).
    Key Vault's client takes ``retry_policy`` in place of azure-core's ``RetryPolicy`` (azure-keyvault-secrets 4.12
    ``_generated/_configuration.py``: ``kwargs.get("retry_policy") or policies.RetryPolicy(**kwargs)``)."""
    if transport is None:
        from azure.core.pipeline.transport import RequestsTransport

        transport = RequestsTransport()
    classes = _deadline_classes()
    return {"retry_policy": classes.vault_retry(time_left, _backoffs(try_timeouts)),
            "transport": classes.transport(transport, time_left, try_timeouts)}


def _deadline_backoff(settings: dict[str, Any], retry: int, time_left: Callable[[], float],
                      asked: float = 0.0, backoffs: tuple[float, ...] = DEADLINE_BACKOFFS_S) -> bool:
    """Whether retry number ``retry`` (1, 2, 3) fits before the deadline: its back-off (``backoffs``:
    ``DEADLINE_BACKOFFS_S``, or ``PATIENT_BACKOFFS_S`` for a long deadline; jittered, at least ``asked``) and a try
    after it as long as the last one, at least ``DEADLINE_MIN_TRY_S`` (a long deadline's back-off is shortened to
    make room for that try, down to the short one). When it does, the back-off is kept in ``settings`` for the
    policy's sleep.

    The last try's length counts because part of a try is bounded by no timeout (``deadline_storage_options``): a
    resolver that does not answer spends its own ~10 s (glibc: 5 s a query, two attempts) before EAI_AGAIN, so with
    ``DEADLINE_MIN_TRY_S`` alone a retry after a 10-s try with 5 s left ended 5 s past the deadline. Measured on
    ``time_left`` (``settings["deadline_try_left"]``: what was left when the try was sent, set by the policies'
    ``configure_retries`` and here)."""
    import random

    left = time_left()
    took = max(float(settings.get("deadline_try_left", left)) - left, 0.0)
    index = min(max(retry, 1), len(backoffs)) - 1
    backoff = max(backoffs[index] * random.uniform(1 - DEADLINE_JITTER, 1 + DEADLINE_JITTER), asked)
    need = max(DEADLINE_MIN_TRY_S, took)
    if backoff + need > left:
        # A long deadline's back-off shrinks to leave room for the try (a try that hung 80 s still gets a second
        # one, as with the short back-offs), never below the short one's nor what the service asked for
        floor = max(DEADLINE_BACKOFFS_S[min(index, len(DEADLINE_BACKOFFS_S) - 1)], asked)
        if backoffs == DEADLINE_BACKOFFS_S or left - need < floor:
            return False
        backoff = left - need
    settings["deadline_backoff"] = backoff
    settings["deadline_try_left"] = left - backoff  # the next try is sent after the back-off
    return True


_DEADLINE_PASSED = "trapbatch_deadline_passed"


def _passed(error: E) -> E:
    """``error`` marked as raised because a caller's deadline passed (``deadline_passed``). A mark, not a subclass:
    the failure's type name is what callers judge (``orchestrations.retries.BUSY_TYPES`` reads it from an activity's
    failure text, in histories recorded before this mark)."""
    setattr(error, _DEADLINE_PASSED, True)
    return error


def deadline_passed(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by a deadline's client (``deadline_storage_options``, ``deadline_vault_options``)
    because the caller's deadline had passed: a request not sent, or a body whose read it cut. Nothing sent again
    through that client can succeed (the transport refuses every request past the deadline), so a caller that retries
    on its own (``adapters.listing.run_get``) stops there."""
    return getattr(exc, _DEADLINE_PASSED, False) is True


class _DeadlineClasses:
    """The classes behind ``deadline_storage_options`` and ``deadline_vault_options``."""

    def __init__(self, transport: Any, storage_retry: Any, vault_retry: Any) -> None:
        self.transport, self.storage_retry, self.vault_retry = transport, storage_retry, vault_retry


@functools.cache
def _deadline_classes() -> _DeadlineClasses:
    """Made once (the Azure SDKs are imported lazily here, as throughout this module)."""
    from urllib.parse import urlsplit

    from azure.core.exceptions import ServiceRequestTimeoutError, ServiceResponseTimeoutError
    from azure.core.pipeline import PipelineResponse
    from azure.core.pipeline.policies import RetryPolicy
    from azure.core.pipeline.transport import HttpTransport

    class DeadlineTransport(HttpTransport[Any, Any]):
        """Sends each request through ``inner`` with ``deadline_timeouts`` of the time left; none once it passed."""

        def __init__(self, inner: Any, time_left: Callable[[], float],
                     caps: tuple[float, float] | None = None) -> None:
            self._inner, self._time_left, self._caps = inner, time_left, caps

        def send(self, request: Any, **kwargs: Any) -> Any:
            left = self._time_left()
            if left <= 0:  # a ServiceRequestError: "the server did not receive the request", busy for the callers
                raise _passed(ServiceRequestTimeoutError(f"not sent: the caller's deadline passed before "
                                                         f"{request.method} to {urlsplit(request.url).hostname} "
                                                         "(the URL may hold a SAS)"))
            kwargs["connection_timeout"], kwargs["read_timeout"] = deadline_timeouts(left, self._caps)
            response = self._inner.send(request, **kwargs)
            # A body read after send, bounded as well: ``stream_download`` (the storage SDK's downloads), and
            # ``iter_bytes``/``iter_raw`` of a streamed ``azure.core.rest`` response (trapbatch's own Get Blob and
            # List Blobs, ``adapters.listing.run_get``; ``read()`` reads through ``iter_bytes``), which do not go
            # through ``stream_download`` (azure-core 1.41 ``rest/_http_response_impl.py``: both call the response's
            # ``_stream_download_generator`` themselves). A response not streamed was read whole before send returned.
            readers = ("stream_download", "iter_bytes", "iter_raw") if kwargs.get("stream") else ("stream_download",)
            for reader in readers:
                if callable(getattr(response, reader, None)):
                    setattr(response, reader, _DeadlineBody.wrap(response, self._time_left,
                                                                 urlsplit(request.url).hostname or "", reader))
            return response

        def open(self) -> None:
            self._inner.open()

        def close(self) -> None:
            self._inner.close()

        def __enter__(self) -> Any:
            self._inner.__enter__()
            return self

        def __exit__(self, *args: Any) -> None:
            self._inner.__exit__(*args)

        def sleep(self, duration: float) -> None:
            self._inner.sleep(duration)

    class _DeadlineBody:
        """A streamed body (``stream_download``'s chunks: a blob download, read after ``send`` returned) read by
        the deadline too. Why: the read timeout bounds each socket read, not the body: a 4-MiB range of an image
        list from an account sending ~70 KB/s took ~57 s, all past a deadline of a few seconds
        (``deadline_storage_options``: the deadline was checked only when a request went out), and POST
        /api/tasks' 170-s deadline then passed the front end's 230 s. Each chunk is now asked for only while the
        deadline has not passed, with the socket's timeout cut to what is left (urllib3 sets it again for the
        connection's next request); past it, ``ServiceResponseTimeoutError``: busy for the callers, as a read
        timeout is.

        Past the deadline the response is closed before that error (as azure-core's own chunk reader closes it on a
        failed read), closing its half-read connection: never returned to the pool, it was otherwise left to the
        garbage collector, and the response refers to itself through its wrapped ``stream_download``, so it stayed
        open until a cyclic collection (``core.collector``: rare in the app). A body already read to its end
        (urllib3 closed its file: every byte is in) is not failed: what is left of the iteration waits for
        nothing.

        What it bounds is a chunk at a time (the response's block size: azure-core's 4 KiB for these transports):
        a chunk is read whole (the socket file's buffered read fills it), each of its socket reads within what was
        left when it began, so only a server that sends less than a chunk over the whole deadline keeps a read past
        it; an Azure endpoint, however slow the network, sends a 4-KiB chunk in well under a second."""

        def __init__(self, chunks: Any, response: Any, time_left: Callable[[], float], host: str) -> None:
            self._chunks, self.response, self._time_left, self._host = chunks, response, time_left, host

        @classmethod
        def wrap(cls, response: Any, time_left: Callable[[], float], host: str,
                 reader: str = "stream_download") -> Callable[..., Any]:
            """``response``'s ``reader`` (a method that returns its body's chunks: ``stream_download``, or
            ``iter_bytes``/``iter_raw``) bounded by the deadline, to be set on ``response`` itself: so it refers to
            ``response`` weakly. Why: a strong reference made each response a cycle, which only a cyclic collection
            frees (``core.collector``: rare in the app), and a streamed response dropped unread (the storage SDK's
            retry policy drops a 503's to send the download again) held its socket until then."""
            import weakref

            method: Any = getattr(response, reader)
            function: Any = None
            if getattr(method, "__self__", None) is response:  # bound to it: its function, called on the weak one
                function, method = method.__func__, None
            owner = weakref.ref(response)

            def bounded(*args: Any, **kwargs: Any) -> Any:
                current = owner()  # alive: its stream_download is what is called
                chunks = function(current, *args, **kwargs) if function is not None else method(*args, **kwargs)
                return cls(chunks, current, time_left, host)
            return bounded

        def __iter__(self) -> Any:
            return self

        def __getattr__(self, name: str) -> Any:
            """The rest of the stream's attributes, its own (azure-core's ``StreamDownloadGenerator``). Why: the
            storage SDK reads more of the stream it is handed than its chunks (azure-storage-blob 12.31
            ``_download.py``: ``response.content_length`` after the first range, ``response.response.headers``):
            without them every download through a deadline client failed with an AttributeError (a marker's
            request read, an image list's ranges at POST /api/tasks)."""
            return getattr(self._chunks, name)

        def __next__(self) -> Any:
            left = self._time_left()
            internal = getattr(self.response, "internal_response", None)
            raw = getattr(internal, "raw", None)
            if left <= 0:
                if raw is not None and getattr(raw, "closed", False) is True:  # read to its end: no wait left
                    return next(self._chunks)
                if internal is not None:
                    internal.close()  # the connection with it: half read, it is never pooled again
                raise _passed(ServiceResponseTimeoutError(f"the caller's deadline passed while a body from "
                                                          f"{self._host} was read"))
            sock: Any = getattr(getattr(raw, "connection", None), "sock", None)
            timeout = sock.gettimeout() if sock is not None else None
            if timeout is not None and timeout > left:
                sock.settimeout(left)
            return next(self._chunks)

    class DeadlineStorageRetry(_missing_host_not_retried_policy()):  # type: ignore[misc]
        """The storage SDK's ``StorageRetryPolicy`` (``_shared/policies.py``: ``send`` calls ``increment``, which
        counts the retry, then ``sleep`` of ``get_backoff_time``) with ``_deadline_backoff``'s back-offs."""

        def __init__(self, time_left: Callable[[], float],
                     backoffs: tuple[float, ...] = DEADLINE_BACKOFFS_S) -> None:
            super().__init__(initial_backoff=0, increment_base=0, retry_total=len(backoffs),
                             random_jitter_range=0)
            self._time_left, self._backoffs = time_left, backoffs

        def configure_retries(self, request: Any) -> dict[str, Any]:
            settings: dict[str, Any] = super().configure_retries(request)
            settings["deadline_try_left"] = self._time_left()  # the first try's start (_deadline_backoff)
            return settings

        def increment(self, settings: dict[str, Any], request: Any, response: Any = None,
                      error: Any = None) -> bool:
            # False: "retries exhausted": send returns the response it has (a 503: HttpResponseError) or raises
            if not super().increment(settings, request, response=response, error=error):
                return False
            return _deadline_backoff(settings, int(settings["count"]), self._time_left, backoffs=self._backoffs)

        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            return float(settings.get("deadline_backoff", 0.0))

    class DeadlineVaultRetry(RetryPolicy[Any, Any]):
        """azure-core's ``RetryPolicy`` (``azure/core/pipeline/policies/_retry.py``: ``send`` calls ``increment``,
        then ``sleep``, which would otherwise sleep whatever ``Retry-After`` asks) with ``_deadline_backoff``'s."""

        def __init__(self, time_left: Callable[[], float],
                     backoffs: tuple[float, ...] = DEADLINE_BACKOFFS_S) -> None:
            super().__init__(retry_total=len(backoffs))
            self._time_left, self._backoffs = time_left, backoffs

        def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
            settings = super().configure_retries(options)
            settings["deadline_try_left"] = self._time_left()  # the first try's start (_deadline_backoff)
            return settings

        def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
            if error is not None and unresolvable_host(error) is not None:
                return False  # key_vault_reader asks DNS itself (host_grace_s); the app's caller does not wait
            if not super().increment(settings, response=response, error=error):
                return False
            asked = self.get_retry_after(response) if isinstance(response, PipelineResponse) else None
            return _deadline_backoff(settings, len(settings["history"]), self._time_left, float(asked or 0.0),
                                     self._backoffs)

        def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
            wait = float(settings.get("deadline_backoff", 0.0))
            if wait > 0:
                transport.sleep(wait)

    return _DeadlineClasses(DeadlineTransport, DeadlineStorageRetry, DeadlineVaultRetry)


# How long a "no such name" for a host trapbatch has just used (its own storage account, a Key Vault, a source account
# that enumeration listed) is asked about again before it counts as a host that does not exist, and how often. Why not
# at the first: on Azure a lookup of an account that exists can say "no such name" for a while
# (Azure/azure-storage-python#541: "[Errno -2] Name or service not known" from <account>.blob.core.windows.net during
# "live reconfigurations of the network fabric, which seem to take up to 120s"; azure-sdk-for-python#10685,
# azure-sdk-for-js#20161: intermittent "no such host" / ENOTFOUND for live endpoints).
HOST_GONE_AFTER_S = 120.0
HOST_ASK_EVERY_S = 15.0


def resolves_again(host: str, grace_s: float = HOST_GONE_AFTER_S, *, every_s: float = HOST_ASK_EVERY_S,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> bool | None:
    """Ask DNS about ``host`` again, every ``every_s`` seconds for up to ``grace_s`` (by ``clock``, monotonic
    seconds; ``sleep`` waits), after a request found it missing (``unresolvable_host``): True as soon as it resolves
    (read again); None as soon as the resolver gives no answer either way (``host_resolves``: no longer a "no such
    name" to act on, so a passing cause, as EAI_AGAIN is); False when it still said "no such name" at the end of
    the grace: the host does not exist, and the caller refuses as it did at the first such answer before.

    Why one helper: every place that used to take one such answer as final (the enumeration's listing, the worker's
    manifest, model and Key Vault reads, the drop trigger's checks) waits the same way; the worker's image reads wait
    at a shard's end too, counting reads as well (``gpu_batch.worker.sources.BlobImageSource.wait_for_host``). The
    first ask comes after one wait: the request that failed has just asked. ``clock`` and ``sleep`` are the test's
    seam (a fake clock that moves when ``sleep`` is called)."""
    deadline = clock() + max(0.0, grace_s)
    while True:
        left = deadline - clock()
        if left <= 0:
            return False
        sleep(min(every_s, left))
        answer = host_resolves(host)
        if answer is not False:
            return answer


def unresolvable_hint(host: str, what: str, setting: str) -> str:
    """What to do about ``what`` (e.g. "the storage account") whose host name does not resolve; ``setting`` says
    where its URL was given. No ';' before the advice: ``activities.notify`` keeps a reader's message up to one."""
    return (f"{what}'s host name {host or '(in its URL)'} does not resolve (DNS: no such name): check {setting} "
            f"for a misspelt name, and that {what} exists (not deleted); retrying does not help")


# How azure-identity words each case: token_endpoint_did_not_answer's docstring.
_MANAGED_IDENTITY_LINE = re.compile(r"ManagedIdentityCredential: ([^\n]*)")
_TOKEN_REQUEST_ERROR = re.compile(r"Token request error: \(([^)]*)\)\s*([^\n]*)")
_PASSING_OAUTH_ERRORS = frozenset({"server_error", "temporarily_unavailable"})
_PASSING_DESCRIPTION = re.compile(r"too many requests|throttl|temporar|transient|timed? ?out|try again|busy|updating",
                                  re.IGNORECASE)
_NO_ANSWER = "no response from the IMDS endpoint"
_NOT_JSON = re.compile(r"ManagedIdentityCredential authentication unavailable\.\s*$")
# App Service / Functions (IDENTITY_ENDPOINT): msal words the endpoint's error body "<statusCode>, <message>"; a request
# that got no answer, or no JSON, is raised as it is, in urllib3's / azure-core's words.
_APP_SERVICE = "App Service managed identity"
_APP_SERVICE_STATUS = re.compile(r"^\s*(\d{3})\s*,")
_TRANSPORT_FAILURE = re.compile(r"Failed to establish a new connection|Connection (?:refused|reset|aborted)|"
                                r"RemoteDisconnected|Max retries exceeded|timed? ?out|JSON is invalid|"
                                r"line \d+ column \d+ \(char \d+\)", re.IGNORECASE)


def managed_identity_problem(exc: BaseException) -> str:
    """What the managed identity credential said when it could not get a token (DefaultAzureCredential's message
    lists every credential it tried: this is the ManagedIdentityCredential line alone); empty when ``exc`` does not
    say."""
    text = str(getattr(exc, "message", None) or exc)
    line = _MANAGED_IDENTITY_LINE.search(text)
    if line:
        return line.group(1).strip()
    return text.strip() if text.lstrip().startswith(("ManagedIdentityCredential", "App Service managed identity")) else ""


def token_endpoint_did_not_answer(exc: BaseException) -> bool:
    """Whether a credential could not get a token because its token endpoint (the node's IMDS) did not answer, or
    answered "later": a passing cause, as ``service_did_not_answer``'s; not when no identity is assigned, IMDS does
    not know the one asked for, or it refused (400, 403), which the operator must fix.

    How azure-identity 1.27.0 (requirements/worker.txt; github.com/Azure/azure-sdk-for-python, tag
    azure-identity_1.27.0, under sdk/identity/azure-identity/azure/identity/) says which, on a VM or Batch node:

    * ``_credentials/imds.py`` ``ImdsCredential._request_token``: no answer (connection refused or reset, a timeout:
      azure-core's ``ServiceRequestError`` / ``ServiceResponseError``) raises ``CredentialUnavailableError(
      "ManagedIdentityCredential authentication unavailable, no response from the IMDS endpoint.")`` *from* that
      error (lines 148-151; lines 118-122 the same for the probe DefaultAzureCredential sends first); an answer that
      is not JSON (a 429 or 5xx of a proxy, say) raises ``CredentialUnavailableError("ManagedIdentityCredential
      authentication unavailable.")`` from the ``JSONDecodeError`` (146-147); the older 400 answer "No identity has
      been assigned to this resource" (132-141) and Docker Desktop's 403 "unreachable" (78) are configuration.
    * ``_internal/msal_managed_identity_client.py`` ``_request_token``: IMDS answered with an OAuth error body, after
      the pipeline retried 404, 410, 429 and 5xx (imds.py line 30): MSAL hands the body back and the status is lost,
      ``CredentialUnavailableError(get_unavailable_message("Token request error: (<error>) <description>"))``
      (lines 65-69), whose text says "no response from the IMDS endpoint" too (imds.py 154-155): the error code
      decides. IMDS answers a missing identity, or one AZURE_CLIENT_ID names that is not the node's, with 400
      ``(invalid_request) Identity not found`` (learn.microsoft.com entra/identity/managed-identities-azure-resources/
      how-to-use-vm-token, "Error handling"); RFC 6749 (4.1.2.1, 5.2) names ``server_error`` and
      ``temporarily_unavailable`` the codes of a server that cannot answer now. MSAL's own ``ManagedIdentityError``
      (a client error) is raised as ``ClientAuthenticationError`` (line 192): configuration.
    * ``_credentials/chained.py`` ``ChainedTokenCredential.get_token`` (DefaultAzureCredential's): when every
      credential was unavailable, ``ClientAuthenticationError(message=...)`` with one line ``<credential>: <its
      message>`` each (lines 23-39, 135-137, 159) and no ``__cause__``: only the ManagedIdentityCredential
      line tells which of the above happened.

    And on App Service and Azure Functions (``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` set, the Functions app's
    identity; ``_credentials/managed_identity.py`` picks ``AppServiceCredential``), through MSAL 1.x
    ``managed_identity.py`` ``_obtain_token_on_app_service``:

    * no answer: the pipeline's ``ServiceRequestError`` / ``ServiceResponseError`` (after its retries, ~5 s) is raised
      as it is (``_internal/msal_managed_identity_client.py`` lines 193-202), and the chain's line is its text,
      urllib3's ("Failed to establish a new connection: [Errno 111] Connection refused", "Read timed out");
    * an answer that is not JSON (a 5xx page): MSAL's ``json.loads`` raises ``JSONDecodeError`` ("Expecting value:
      line 1 column 1 (char 0)"; azure-core's ``DecodeError`` "JSON is invalid: ..." where no content type was
      sent), likewise;
    * a JSON error body: MSAL returns ``invalid_scope`` with the description ``"<statusCode>, <message>"``, raised as
      ``CredentialUnavailableError("App Service managed identity configuration not found in environment. Token
      request error: (invalid_scope) 503, ...")``: the status decides (5xx, 408, 429 passing; a 400 "Unable to load
      the proper Managed Identity" is configuration).
    """
    from azure.core.exceptions import (HttpResponseError, IncompleteReadError, ServiceRequestError,
                                       ServiceResponseError)

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # ImdsCredential raises ``from`` what the request raised
        seen.add(id(cause))
        if isinstance(cause, (ServiceRequestError, ServiceResponseError, IncompleteReadError, ConnectionError,
                              TimeoutError)):
            return True
        status = getattr(cause, "status_code", None) if isinstance(cause, HttpResponseError) else None
        if status is not None and (int(status) >= 500 or int(status) in (408, 429)):
            return True
        cause = cause.__cause__ or cause.__context__
    said = managed_identity_problem(exc)
    oauth = _TOKEN_REQUEST_ERROR.search(said)
    if oauth:  # IMDS answered with an error body: its code says whether it is about now or about the identity
        status = _APP_SERVICE_STATUS.match(oauth.group(2)) if _APP_SERVICE in said else None
        if status and (int(status.group(1)) >= 500 or int(status.group(1)) in (408, 429)):
            return True
        return oauth.group(1).strip() in _PASSING_OAUTH_ERRORS or bool(_PASSING_DESCRIPTION.search(oauth.group(2)))
    if said and not said.startswith(("ManagedIdentityCredential authentication unavailable", _APP_SERVICE)):
        return bool(_TRANSPORT_FAILURE.search(said))  # the credential raised what its request raised
    return _NO_ANSWER in said or bool(_NOT_JSON.search(said))


def credential_hint(exc: BaseException) -> str:
    """What to do when trapbatch's managed identity got no token for a reason no retry fixes (empty when ``exc`` is not
    such a failure)."""
    said = managed_identity_problem(exc)
    if not said:
        return ""
    return (f"the managed identity could not get a token ({said[:300]}); check that the identity exists and is "
            "assigned to this machine (the Batch pool's id-nodes-*, the app's id-api-*; infra/app/batch.bicep, "
            "api.bicep) and that AZURE_CLIENT_ID is its client id")


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a task's images are: trapbatch's own account (both empty), or another one."""

    account_url: str = ""
    credential_secret: str = ""  # a secret *name*; never a value

    @property
    def is_own_account(self) -> bool:
        return not self.account_url


def secret_reader_from_env(env: Mapping[str, str] | None = None, transport: Any = None,
                           credential: Any = None, host_grace_s: float = 0.0,
                           clock: Callable[[], float] = time.monotonic,
                           sleep: Callable[[float], None] = time.sleep,
                           time_left: Callable[[], float] | None = None,
                           try_timeouts: tuple[float, float] | None = None) -> SecretReader | None:
    """The configured secret store, or None when none is configured. ``credential``: Key Vault's token credential
    (None: ``DefaultAzureCredential``; the Functions app passes ``adapters.identity.AppCredential``);
    ``host_grace_s``, ``clock``, ``sleep``, ``time_left``, ``try_timeouts``: ``key_vault_reader``'s."""
    env = os.environ if env is None else env
    vault_url = env.get(KEY_VAULT_ENV, "")
    if vault_url:
        return key_vault_reader(vault_url, transport=transport, credential=credential, host_grace_s=host_grace_s,
                                clock=clock, sleep=sleep, time_left=time_left, try_timeouts=try_timeouts)
    local = env.get(LOCAL_SECRETS_ENV, "")
    if local:
        return local_file_reader(Path(local))
    return None


def key_vault_reader(vault_url: str, transport: Any = None, credential: Any = None, host_grace_s: float = 0.0,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep,
                     time_left: Callable[[], float] | None = None,
                     try_timeouts: tuple[float, float] | None = None) -> SecretReader:
    """Read secrets from the Key Vault at ``vault_url``; every failure is a ``SourceAccessError`` saying what to fix,
    or ``SecretStoreUnavailable`` when the vault did not answer.

    ``host_grace_s``: how long a vault host DNS says does not exist is asked about again (``resolves_again``, on
    ``clock`` and ``sleep``) before it is that refusal: the secret is read again when the host resolves again, and
    a resolver that stopped answering is ``SecretStoreUnavailable``. 0 (the app's: its edge answers at once, and a
    refused request is sent again) refuses at the first such answer. The GPU worker passes
    ``gpu_batch.worker.sources.GONE_AFTER_S``: on Azure a lookup of a host that exists can say "no such name" for a
    while (``HOST_GONE_AFTER_S``), and its exit 5 is unfixable (two such attempts ended the whole task).

    ``time_left``: for a caller with a deadline (Event Grid's delivery of a marker, ``api.arrivals``), how many
    seconds it has left: each read then ends by it (``deadline_vault_options``), where azure-core's defaults (300-s
    timeouts, ten retries) could hold it for minutes; a read the deadline cut short is ``SecretStoreUnavailable``
    (busy). None: azure-core's defaults. ``try_timeouts``: with ``time_left``, each request's (connection, read)
    timeouts at most (``deadline_timeouts``; None: the short ones)."""
    from urllib.parse import urlsplit

    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.keyvault.secrets import SecretClient

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    kwargs: dict[str, Any] = {"transport": transport} if transport is not None else {}
    if time_left is not None:  # a caller with a deadline
        kwargs = deadline_vault_options(time_left, transport, try_timeouts)
    client = SecretClient(vault_url, credential, **kwargs)

    vault_host = urlsplit(vault_url).hostname or ""

    def read(name: str) -> str:
        deadline: float | None = None
        while True:
            try:
                return read_once(name)
            except _VaultHostMissing as missing:
                asked = missing.host or vault_host
                now = clock()
                deadline = now + host_grace_s if deadline is None else deadline
                answer = resolves_again(asked, deadline - now, clock=clock, sleep=sleep) if asked else False
                if answer is False:
                    missing.refusal.missing_host = asked
                    raise missing.refusal from None
                if answer is None:
                    raise SecretStoreUnavailable(f"Key Vault {vault_url} did not answer the read of secret {name!r}: "
                                                 f"its host name {asked} did not resolve, and DNS then did not "
                                                 "answer") from None

    def read_once(name: str) -> str:
        try:
            value = client.get_secret(name).value
        except ResourceNotFoundError:
            raise SourceAccessError(f"Key Vault {vault_url} has no secret named {name!r}; create it (a SAS token "
                                    "with read and list permissions, or a connection string)") from None
        except AzureError as exc:
            host = unresolvable_host(exc)
            if host is not None:  # before service_did_not_answer, which says only "no": say why, and what to fix
                raise _VaultHostMissing(host, SourceAccessError(
                    f"cannot read secret {name!r} from Key Vault {vault_url}: "
                    + unresolvable_hint(host, "the Key Vault", KEY_VAULT_ENV))) from None
            if service_did_not_answer(exc):
                said = managed_identity_problem(exc)
                what = (f"the managed identity's token endpoint did not answer ({said[:300]})" if said
                        else f"{type(exc).__name__}: {str(exc)[:300]}")
                raise SecretStoreUnavailable(f"Key Vault {vault_url} did not answer the read of secret {name!r}: "
                                             f"{what}") from None
            hint = credential_hint(exc)
            if hint:
                raise SourceAccessError(f"cannot read secret {name!r} from Key Vault {vault_url}: {hint}") from None
            raise SourceAccessError(f"cannot read secret {name!r} from Key Vault {vault_url}: "
                                    f"{type(exc).__name__}; grant the identity reading it (the app's id-api-*, or "
                                    "the GPU nodes' id-nodes-*) 'Key Vault Secrets User' on the vault") from None
        if not value:
            raise SourceAccessError(f"secret {name!r} in Key Vault {vault_url} is empty")
        return str(value)

    return read


class _VaultHostMissing(Exception):
    """A Key Vault read found the vault's host missing from DNS (``host``, "" when the chain did not say): the
    ``refusal`` to raise unless DNS finds it again (``key_vault_reader``)."""

    def __init__(self, host: str, refusal: SourceAccessError) -> None:
        super().__init__(str(refusal))
        self.host = host
        self.refusal = refusal


def local_file_reader(path: Path) -> SecretReader:
    """Secrets from a JSON object file (local development and tests only)."""

    def read(name: str) -> str:
        try:
            secrets = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SourceAccessError(f"cannot read the local secrets file {path}: {type(exc).__name__}") from None
        value = secrets.get(name) if isinstance(secrets, dict) else None
        if not isinstance(value, str) or not value:
            raise SourceAccessError(f"the local secrets file {path} has no secret named {name!r}")
        return value

    return read


# The environment variables azure-identity 1.27.0 reads when it builds a credential (``_constants.py``
# ``EnvironmentVariables``: AZURE_CLIENT_ID, AZURE_TENANT_ID, IDENTITY_ENDPOINT, IDENTITY_HEADER, MSI_ENDPOINT,
# IMDS_ENDPOINT, ...), by prefix so that a name added later is covered too.
IDENTITY_ENV_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_")


def identity_environment(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The identity-relevant part of ``environ`` (None: ``os.environ``), as a key: a process shares one credential per
    value of it (the app's ``adapters.identity.app_credential``, the worker's ``node_clients.node_credential``), so
    an environment that names another identity never gets a credential holding another identity's token."""
    env = os.environ if environ is None else environ
    return tuple(sorted((name, value) for name, value in env.items() if name.startswith(IDENTITY_ENV_PREFIXES)))


# A shared credential's token whose refresh failed is handed out as it is for this long before the next try
# (``RefreshSparingCredential``): azure-identity's own pause between refresh tries for its other credentials
# (1.27.0 ``_constants.py`` DEFAULT_TOKEN_REFRESH_RETRY_DELAY, used by ``_internal/get_token_mixin.py``)
TOKEN_REFRESH_RETRY_S = 30.0
# ... and never within this of its expiry: MSAL takes a cached token that expires within 5 minutes for expired (msal
# 1.39 ``managed_identity.py``: "expires_in < 5*60: Then consider it expired")
TOKEN_HELD_UNTIL_S = 300.0


class RefreshSparingCredential:
    """``inner`` (a ``DefaultAzureCredential``), except that once a refresh of a token still in date has failed,
    that token is handed out as it is, for ``TOKEN_REFRESH_RETRY_S``, before the next refresh is tried.

    Why: a managed identity's token (~24 h) is due for a refresh halfway (msal 1.39 ``managed_identity.py``:
    ``refresh_in`` half of ``expires_in``), and a refresh that fails (IMDS not answering) hands back the token in hand
    with that ``refresh_on`` already past ("Fallback to the cached token", same file). azure-core's
    ``BearerTokenCredentialPolicy`` asks again while ``refresh_on`` is past (1.41 ``policies/_authentication.py``
    ``_should_refresh_token``), so each request then asked IMDS, through ``ImdsRetryPolicy``'s retries: measured
    ~5 s a request against a refused connection and ~24 s against 503s, ~75 s against 410s by the policy's own
    comment (azure-identity 1.27.0 ``_credentials/imds.py``). azure-identity's other credentials pause between
    refresh tries (``TOKEN_REFRESH_RETRY_S``); its managed identity, through MSAL, does not (MSAL throttles only a
    429 or 5xx answer, for 5 s: ``_ThrottledHttpClient``). A process that keeps one credential for hours (the
    resident GPU worker's ``node_clients.node_credential``: thousands of shards) met that in the second half of
    every token's life: an IMDS outage then stalled every image read of every shard, where a token was in hand.

    The token handed out meanwhile says ``refresh_on`` at the next try, so a client's policy asks again then, not at
    each request; one caller makes that try, the others get the token in hand. Within ``TOKEN_HELD_UNTIL_S`` of its
    expiry nothing is held: the request goes to ``inner`` and its failure is the caller's, as before.

    A token request with ``claims`` (a CAE challenge: the token in hand was revoked) is never answered from a held
    token (its key differs), and once ``inner`` answered it, no token held before is handed out again, nor held
    from a try that began before (it came back with the token MSAL's cache had then: the revoked one).

    One try at a time per key: a try can outlast ``TOKEN_REFRESH_RETRY_S`` (IMDS's retries against 410s, ~75 s),
    and callers past the pause meanwhile get the token in hand, not a try of their own (each try stalls its caller).

    Must not: hold a token of another identity (one wrapper per credential), or change what a failure raises."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._held: dict[str, tuple[Any, float]] = {}  # scopes and options -> (token handed out, next try at)
        self._trying: set[str] = set()  # keys whose held token a caller is trying to refresh now
        self._claims_answered = 0  # claims requests answered: a try begun before one holds nothing
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> Any:
        """``get_token_info``'s token as an ``AccessToken``; ``inner``'s own ``get_token`` for other arguments.

        Why not ``inner``'s alone: a caller that asks at each use instead of keeping the token in a policy
        (``adapters.compose._source_auth``, once per block it stages from a URL) went to MSAL at each call, which in
        the second half of the token's life asked the token endpoint before handing back the token in hand. The
        options are those azure-identity's ``get_token`` makes of the same arguments (1.27.0
        ``_internal/msal_managed_identity_client.py``, ``get_token``)."""
        if kwargs or not hasattr(self._inner, "get_token_info"):
            given = {name: value for name, value in (("claims", claims), ("tenant_id", tenant_id),
                                                     ("enable_cae", enable_cae)) if value}
            return self._inner.get_token(*scopes, **given, **kwargs)
        from azure.core.credentials import AccessToken

        options: dict[str, Any] = {"enable_cae": enable_cae}
        if claims:
            options["claims"] = claims
        if tenant_id:
            options["tenant_id"] = tenant_id
        token = self.get_token_info(*scopes, options=options)
        return AccessToken(token.token, int(token.expires_on))

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        """``inner``'s token, or the one held since a refresh failed (``RefreshSparingCredential``)."""
        key = repr((scopes, sorted((options or {}).items())))
        now = time.time()
        trying = False
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                token, retry_at = held
                if token.expires_on - now <= TOKEN_HELD_UNTIL_S:
                    del self._held[key]
                elif now < retry_at or key in self._trying:
                    return token
                else:  # this caller tries; the others keep the token in hand meanwhile
                    self._held[key] = (token, now + TOKEN_REFRESH_RETRY_S)
                    self._trying.add(key)
                    trying = True
            claims_seen = self._claims_answered
        try:
            if hasattr(self._inner, "get_token_info"):
                fresh = self._inner.get_token_info(*scopes, options=options)
            else:
                fresh = self._inner.get_token(*scopes, **dict(options or {}))
        finally:
            if trying:
                with self._lock:
                    self._trying.discard(key)
        if (options or {}).get("claims"):
            # A CAE claims challenge: a resource refused the token in hand as revoked, and ``inner`` has a new one
            # now (MSAL caches it in the old one's place: msal 1.39 ``managed_identity.py``, ``claims_challenge``).
            # A held token is that old one: handed out, it is refused again, so none is held past this.
            with self._lock:
                self._held.clear()
                self._claims_answered += 1
            claims_seen += 1
        return self._kept(key, fresh, claims_seen)

    def _kept(self, key: str, token: Any, claims_seen: int) -> Any:
        """``token``, or it with ``refresh_on`` at the next try when it came back due already (a refresh failed).
        Not held when a claims request was answered since the request began (``claims_seen``, the count then)."""
        from azure.core.credentials import AccessTokenInfo

        now = time.time()
        refresh_on = getattr(token, "refresh_on", None)
        with self._lock:
            if refresh_on is None or refresh_on > now or token.expires_on - now <= TOKEN_HELD_UNTIL_S:
                self._held.pop(key, None)
                return token
            if self._claims_answered != claims_seen:  # maybe the revoked token, read before the new one came
                return token
            retry_at = now + TOKEN_REFRESH_RETRY_S
            kept = AccessTokenInfo(token.token, int(token.expires_on), token_type=token.token_type,
                                   refresh_on=int(retry_at))
            self._held[key] = (kept, retry_at)
            return kept

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> RefreshSparingCredential:
        self._inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._inner.__exit__(*args)


# Connections a process's shared session keeps per host, and hosts kept. requests' own 10 (``HTTPAdapter``'s
# ``DEFAULT_POOLSIZE``) is one client's: the shared session serves every reading thread of the process at once (the
# worker's 16 fetch threads, ``pipeline.PipelineOptions.workers``; the app's activities, each reading with up to 16,
# ``adapters.image_sizes``), and a connection returned to a full pool is closed (urllib3 "Connection pool is full,
# discarding connection") and a later request opens a new TCP and TLS connection. Bounded so that a Functions
# instance stays far inside the sandbox's 600 active outbound connections (``adapters.transport``).
SHARED_POOL_CONNECTIONS = 64
SHARED_POOL_HOSTS = 16


def new_shared_session(maker: Any = None, **transport_kwargs: Any) -> Any:
    """A ``requests.Session`` for the Azure SDK clients of one process to share (``session=``, ``session_owner=False``:
    azure-core 1.41 ``pipeline/transport/_requests_basic.py``; a client's ``close`` leaves it open): made as azure-core
    makes its own (``maker``, None: ``RequestsTransport``, of ``transport_kwargs``; its ``open`` sets retries off in
    urllib3 and its bigger-block adapter), with a pool of ``SHARED_POOL_CONNECTIONS`` a host, and no cookies: it
    carries requests for every caller, account and vault, and neither Azure Storage nor Key Vault needs one."""
    from http.cookiejar import DefaultCookiePolicy

    if maker is None:
        from azure.core.pipeline.transport import RequestsTransport

        maker = RequestsTransport
    transport = maker(**transport_kwargs)
    transport.open()  # the session, initialised by azure-core's own _init_session
    session = transport.session
    for adapter in {id(a): a for a in session.adapters.values()}.values():  # azure-core's, one for both schemes
        adapter.init_poolmanager(SHARED_POOL_HOSTS, SHARED_POOL_CONNECTIONS)  # nothing pooled yet to lose
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def client_from_secret(account_url: str, secret: str, name: str = "", retry_policy: Any = None,
                       transport: Any = None, client_options: Mapping[str, Any] | None = None) -> Any:
    """A ``BlobServiceClient`` for ``account_url`` from a SAS token or a connection string (told apart by shape);
    a "Blob SAS URL" as the portal copies it gives its token. ``SourceAccessError`` for a connection string the SDK
    refuses (before, a ValueError that the API answered as a trapbatch bug). ``retry_policy``, ``transport``: the
    client's (None: the storage SDK's defaults; ``missing_host_not_retried`` for a caller with a deadline, or
    ``deadline_storage_options``' pair for one whose deadline is a time). ``client_options``: more of the client's
    keyword arguments (the app's: a shared session, ``adapters.transport.shared_session_options``)."""
    from azure.storage.blob import BlobServiceClient

    options: dict[str, Any] = {**(client_options or {}), "max_single_get_size": 64 << 20}
    if retry_policy is not None:
        options["retry_policy"] = retry_policy
    if transport is not None:
        options["transport"] = transport

    value = secret.strip()
    if value.lower().startswith(("https://", "http://")) and "?" in value:  # the portal's "Blob SAS URL"
        value = value.split("?", 1)[1]
    if "=" in value and ";" in value and any(k in value for k in ("AccountKey=", "SharedAccessSignature=",
                                                                  "BlobEndpoint=", "DefaultEndpointsProtocol=")):
        try:
            client = BlobServiceClient.from_connection_string(value, **options)
        except ValueError as exc:
            raise SourceAccessError(f"secret {name or 'of the request'} is not a usable connection string ({exc}); "
                                    "store the account's connection string as the portal shows it, or a SAS "
                                    "token with read and list permissions") from None
        # The request's account_url is what the operator's allow-list (TRAPBATCH_SOURCE_ACCOUNTS) checked; a
        # connection string names its own endpoint, which must be that account, not any host a secret names.
        endpoint = f"{client.scheme}://{client.primary_hostname}".lower().rstrip("/")
        if endpoint != account_url.lower().rstrip("/"):
            raise SourceAccessError(f"secret {name or 'of the request'} is a connection string for {endpoint}, not "
                                    f"for the request's account {account_url}; store that account's connection "
                                    "string (or a SAS token) under the secret, or name its account in the request")
        return client
    return BlobServiceClient(account_url, credential=value.lstrip("?"), **options)


def source_service(ref: SourceRef, own_service: Callable[[], Any], read_secret: SecretReader | None,
                   credential: Any = None, retry_policy: Any = None, transport: Any = None,
                   client_options: Mapping[str, Any] | None = None) -> Any:
    """The ``BlobServiceClient`` to read a task's images with.

    ``credential``: the token credential for an account named without a secret; None is ``DefaultAzureCredential``
    (the GPU nodes', whose failures the worker judges itself). The Functions app passes its own
    (``adapters.identity.AppCredential``), whose token endpoint not answering is a failure of its own type, which the
    orchestrations count busy. ``retry_policy``, ``transport``, ``client_options``: another account's client's
    (``client_from_secret``); trapbatch's own account's client is ``own_service``'s, which keeps its own."""
    if ref.is_own_account:
        return own_service()
    if not ref.credential_secret:
        from azure.storage.blob import BlobServiceClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        options = {**(client_options or {}), **{key: value for key, value in (("retry_policy", retry_policy),
                                                                              ("transport", transport))
                                                 if value is not None}}
        return BlobServiceClient(ref.account_url, credential=credential, max_single_get_size=64 << 20, **options)
    if read_secret is None:
        raise SourceAccessError(f"the task's images need secret {ref.credential_secret!r}, but no secret store is "
                                f"configured: set {KEY_VAULT_ENV}")
    return client_from_secret(ref.account_url, read_secret(ref.credential_secret), repr(ref.credential_secret),
                              retry_policy, transport, client_options)
