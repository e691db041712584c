"""The one map from storage SDK exceptions to trapbatch's errors, each with a hint that says what to do next.

Why one map: handlers used to catch ``AzureError`` here and there and let the rest through as HTTP 500s with a
traceback. Like httpx's mapping of transport errors, this names every azure-core exception type once; the HTTP edge
(``api.edge``) and the blob-drop edge use it, and a test feeds it every exception class azure-core defines.

``source_error`` is its counterpart for the storage account a task's images are in, which may be someone else's: a
refusal there is the request's to fix (400 ``SourceUnavailable``, with what to grant), a busy or silent account is
not (503 ``SourceBusy``).
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, ContextManager, Iterator
from urllib.parse import urlsplit

from azure.core import exceptions as ax

from adapters.identity import TokenEndpointUnavailable, translated
from core.errors import (SourceBusy, SourceUnavailable, StorageAccessDenied, StorageConflict, StorageError,
                         StorageHostUnresolvable, StorageNotFound, StorageUnavailable, TrapbatchError)
from gpu_batch.storage_refs import (HOST_ASK_EVERY_S, HOST_GONE_AFTER_S, NO_ACCESS_HINT, resolves_again,
                                   service_did_not_answer, unresolvable_hint, unresolvable_host)

_RETRY = "retry in a minute; if it persists, check the storage account's health in the Azure portal"
_REACH = ("trapbatch cannot reach its storage account: check AzureWebJobsStorage (locally: is Azurite running?) "
          "and the network; then retry")
_ROLE = ("the Function App's identity (or key) was refused by its storage account: infra/ grants the app's identity "
         "(id-api-*) 'Storage Blob Data Owner' on the account (a new assignment takes a few minutes to apply), or "
         "fix AzureWebJobsStorage")
# Where the app's storage account is named (core.settings.Settings.from_env reads them in this order)
_STORAGE_SETTING = ("AzureWebJobsStorage (or AzureWebJobsStorage__accountName / AzureWebJobsStorage__blobServiceUri) "
                    "in the Function App settings (locally: local.settings.json or the environment)")
_UNEXPECTED = "storage answered something trapbatch did not expect: retry; if it persists, report it with the log"

# Most specific first: the first class the exception is an instance of decides.
_MAP: tuple[tuple[type[BaseException], type[StorageError], str, str], ...] = (
    (ax.ResourceNotFoundError, StorageNotFound, "not found in storage", "check the name, or wait until the task "
                                                                       "has written it"),
    (ax.ResourceExistsError, StorageConflict, "already exists in storage", "retry; another request wrote it first"),
    (ax.ResourceModifiedError, StorageConflict, "was changed by someone else meanwhile", "retry the request"),
    (ax.ResourceNotModifiedError, StorageConflict, "was not modified (a conditional request)", "retry the request"),
    (TokenEndpointUnavailable, StorageUnavailable, "trapbatch's managed identity got no token (its endpoint did not "
                                                   "answer)", _RETRY),
    (ax.ClientAuthenticationError, StorageAccessDenied, "storage refused trapbatch's credentials", _ROLE),
    (ax.IncompleteReadError, StorageUnavailable, "a storage download ended early", _RETRY),
    (ax.DecodeError, StorageError, "a storage response could not be decoded", _UNEXPECTED),
    (ax.TooManyRedirectsError, StorageError, "storage redirected too many times", _UNEXPECTED),
    (ax.ODataV4Error, StorageError, "storage answered with an error", _UNEXPECTED),
    (ax.HttpResponseError, StorageError, "storage answered with an error", _UNEXPECTED),  # by status below
    (ax.ServiceRequestTimeoutError, StorageUnavailable, "a storage request timed out", _RETRY),
    (ax.ServiceResponseTimeoutError, StorageUnavailable, "a storage response timed out", _RETRY),
    (ax.ServiceRequestError, StorageUnavailable, "storage could not be reached", _REACH),
    (ax.ServiceResponseError, StorageUnavailable, "storage dropped the connection", _RETRY),
    (ax.StreamConsumedError, StorageError, "a storage stream was read twice", _UNEXPECTED),
    (ax.StreamClosedError, StorageError, "a storage stream was closed early", _UNEXPECTED),
    (ax.ResponseNotReadError, StorageError, "a storage response was used before it was read", _UNEXPECTED),
    (ax.DeserializationError, StorageError, "a storage response could not be read", _UNEXPECTED),
    (ax.SerializationError, StorageError, "a storage request could not be written", _UNEXPECTED),
    (ax.AzureError, StorageError, "storage failed", _UNEXPECTED),
)
HANDLED: tuple[type[BaseException], ...] = tuple(cls for cls, *_ in _MAP)


def _by_status(status: int | None) -> tuple[type[StorageError], str, str] | None:
    """An ``HttpResponseError`` without a more specific class: its HTTP status decides."""
    if status in (401, 403):
        return StorageAccessDenied, "storage refused the request", _ROLE
    if status == 404:
        return StorageNotFound, "not found in storage", "check the name"
    if status in (409, 412):
        return StorageConflict, "storage reported a conflict", "retry the request"
    if status in (408, 429, 500, 502, 503, 504):
        return StorageUnavailable, f"storage is busy or unavailable (HTTP {status})", _RETRY
    return None


def storage_error(exc: BaseException, what: str = "") -> TrapbatchError:
    """The trapbatch error for a storage SDK exception (``exc`` itself if it already is one).

    A ``ServiceRequestError`` whose host name DNS says does not exist (``storage_refs.unresolvable_host``: EAI_NONAME
    or EAI_NODATA on the chain azure-core 1.41 / urllib3 2.8 build) is ``StorageHostUnresolvable``, naming the host
    and the setting to fix: the account is misspelt or deleted, and the 503 "retry in a minute" of
    ``StorageUnavailable`` sent operators waiting. A resolver that did not answer (EAI_AGAIN) stays
    ``StorageUnavailable``.

    The message names ``what`` was being done and the SDK's error code, never the request URL (it may carry a SAS).
    """
    if isinstance(exc, TrapbatchError):
        return exc
    if isinstance(exc, ax.ServiceRequestError) and (host := unresolvable_host(exc)) is not None:
        missing = StorageHostUnresolvable(f"{what + ': ' if what else ''}storage host name {host or '(in its URL)'} "
                                          f"does not resolve ({type(exc).__name__})",
                                          unresolvable_hint(host, "trapbatch's storage account", _STORAGE_SETTING))
        missing.missing_host = host
        return missing
    if isinstance(exc, ax.ClientAuthenticationError):  # a credential that is not AppCredential: tell the same apart
        exc = translated(exc)
    for cls, kind, message, hint in _MAP:
        if isinstance(exc, cls):
            break
    else:
        raise TypeError(f"{type(exc).__name__} is not a storage SDK exception") from exc
    if cls is ax.HttpResponseError:
        kind, message, hint = _by_status(getattr(exc, "status_code", None)) or (kind, message, hint)
    code = getattr(exc, "error_code", None)
    detail = f" ({type(exc).__name__}{', ' + str(code) if code else ''})"
    return kind(f"{what + ': ' if what else ''}{message}{detail}", hint)


@contextlib.contextmanager
def storage_errors(what: str = "") -> Iterator[None]:
    """Turn any storage SDK exception raised inside into ``storage_error(exc, what)``."""
    try:
        yield
    except HANDLED as exc:
        raise storage_error(exc, what) from exc


_SOURCE_BUSY = ("retry in a minute: the images' storage account did not answer or is busy (or the token endpoint of "
                "trapbatch's managed identity did not answer); nothing needs granting. If it persists, check that "
                "account's health in the Azure portal")
# The same for trapbatch's own account, where a request without source_account_url reads its images (OWN_ACCOUNT):
# ``source_error``'s busy answer about it, and ``host_missing_busy``'s
_OWN_ACCOUNT_BUSY = ("retry in a minute: trapbatch's own storage account (where a request without source_account_url "
                     "reads its images) did not answer or is busy (or the token endpoint of trapbatch's managed "
                     "identity did not answer); nothing needs granting. If it persists, check that account's health "
                     f"in the Azure portal and {_STORAGE_SETTING}")


# Which account a ``source_error`` is about and where its URL is set, for the hint of a host DNS says does not exist
# (``unresolvable_hint``'s ``what`` and ``setting``): the account the request names (``source_account_url``), or
# trapbatch's own, which a request without one reads its images from (``api.starters._check_source``): its hint named
# "the request's source_account_url", which that request did not name, where the fix is the app's storage setting.
SOURCE_ACCOUNT = ("the storage account", "its URL (the request's source_account_url)")
OWN_ACCOUNT = ("trapbatch's storage account", _STORAGE_SETTING)


def source_error(exc: ax.AzureError, what: str, hint: str, account_host: str = "",
                 account: tuple[str, str] = SOURCE_ACCOUNT) -> SourceBusy | SourceUnavailable:
    """The error for a failed request to the storage account a task's images are in: ``SourceBusy`` when it did not
    answer or answered "later", else ``SourceUnavailable`` with ``hint`` (what to grant or fix).

    "Later" is ``gpu_batch.storage_refs.service_did_not_answer``'s rule: no answer (a connection error, a timeout, a
    download cut short), 408, 429 or any 5xx, or a managed-identity token endpoint that did not answer
    (``TokenEndpointUnavailable``, or the same failure of a plain credential). Azure Storage's own "retry" answers
    are all 5xx: ``ServerBusy`` (503), ``InternalError`` and ``OperationTimedOut`` (500) (REST "Common REST API
    error codes", learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes: "The server encountered
    an internal error. Please retry the request."). A 403 (``AuthorizationPermissionMismatch``,
    ``AuthenticationFailed``) or a 404 stays ``SourceUnavailable``: no retry fixes a missing role or a wrong SAS.
    Nor a host name DNS says does not exist (``storage_refs.unresolvable_host``: a deleted or misspelt account that
    is on the allow-list), which gets a hint of its own instead of ``hint`` (naming ``account``: ``SOURCE_ACCOUNT``,
    or ``OWN_ACCOUNT`` for trapbatch's own); a resolver that did not answer is busy. A busy answer about
    ``OWN_ACCOUNT`` stays ``SourceBusy`` (the type ``orchestrations.retries.is_busy`` judges by) but its hint names
    that account and its setting, not "the images' storage account" the request did not name.

    The message names ``what`` was being done and the SDK's exception type and error code, never the request URL
    (it may carry a SAS). The refusal of a missing host carries it as ``missing_host`` (``account_host``, the account
    URL's, when the chain does not name it), which the drop trigger asks DNS about again (``after_dns_asked_again``),
    and ``own_account`` when ``account`` is ``OWN_ACCOUNT``, so that a busy answer made of it names that account.
    """
    host = unresolvable_host(exc)
    if host is not None:
        missing = SourceUnavailable(f"{what}: host name {host or '(in the account URL)'} does not resolve "
                                    f"({type(exc).__name__})",
                                    unresolvable_hint(host, *account))
        missing.missing_host = host or account_host
        missing.own_account = account == OWN_ACCOUNT
        return missing
    if isinstance(exc, TokenEndpointUnavailable) or service_did_not_answer(exc):
        code = getattr(exc, "error_code", None)
        return SourceBusy(f"{what}: the storage account did not answer or is busy ({type(exc).__name__}"
                          f"{', ' + str(code) if code else ''})",
                          _OWN_ACCOUNT_BUSY if account == OWN_ACCOUNT else _SOURCE_BUSY)
    return SourceUnavailable(f"{what}: {type(exc).__name__}", hint)


@contextlib.contextmanager
def source_errors(what: str, hint: str) -> Iterator[None]:
    """Turn any storage SDK exception raised inside into ``source_error(exc, what, hint)``: for requests to the
    images' account only (never trapbatch's own, whose failures are ``storage_error``'s). Not chained (``from
    None``), as at the edge: the SDK's exception may name the request's URL."""
    try:
        yield
    except ax.AzureError as exc:
        raise source_error(exc, what, hint) from None


# How long a listing of the images' account that found its host missing from DNS asks DNS again (every
# SOURCE_HOST_ASK_EVERY_S) before it calls the account missing (``source_listing``): ``storage_refs.resolves_again``,
# whose constants cite why (on Azure a lookup of an account that exists can say "no such name" for up to ~120 s), and a
# refusal then failed the whole task's enumeration. The activity may wait that long (host.json functionTimeout 30 min).
# The HTTP edge does not wait: a refused request is sent again.
SOURCE_HOST_GONE_AFTER_S = HOST_GONE_AFTER_S
SOURCE_HOST_ASK_EVERY_S = HOST_ASK_EVERY_S
# The waits' clock (monotonic seconds) and sleep: tests give a fake clock that moves when it sleeps.
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def _host_still_missing(host: str) -> bool:
    """Whether DNS still says ``host`` does not exist after asking it again for ``SOURCE_HOST_GONE_AFTER_S``
    (``storage_refs.resolves_again``): False as soon as it resolves (or its resolver does not answer: no longer a
    "no such name" to act on)."""
    return resolves_again(host, SOURCE_HOST_GONE_AFTER_S, every_s=SOURCE_HOST_ASK_EVERY_S, clock=_clock,
                          sleep=_sleep) is False


@contextlib.contextmanager
def _source_listing_errors(what: str, hint: str, account_host: str) -> Iterator[None]:
    """``source_errors``, but a host DNS says does not exist is asked again (``_host_still_missing``) before it is a
    refusal; one that resolves again is ``SourceBusy``, which the orchestration waits out and lists again. When the
    failure's chain does not name the host (``unresolvable_host`` gives ""), ``account_host``, the account URL's, is
    asked: it is the one the listing looked up (before, such a failure was a refusal at the first answer)."""
    try:
        yield
    except ax.AzureError as exc:
        host = unresolvable_host(exc)
        if host is not None and (host or account_host) and not _host_still_missing(host or account_host):
            raise SourceBusy(f"{what}: the storage account's host name {host or account_host} did not resolve for a "
                             f"moment ({type(exc).__name__})", _SOURCE_BUSY) from None
        raise source_error(exc, what, hint) from None


def source_listing(account_url: str, container: str) -> ContextManager[None]:
    """Around the enumeration's requests to the images' account (``activities.enumerate``, ``activities.image_list``)
    when a request names another one (``account_url``): its SDK errors become ``source_error``'s, as at the edge.

    Why: an activity fails with its exception's type name, which the orchestration judges (``orchestrations.retries.
    is_busy``), and the raw ``ServiceRequestError`` is busy, so an account deleted (or misspelt on the allow-list)
    after the task started was waited out for ~18 minutes of busy retries. A host DNS says does not exist is now
    ``SourceUnavailable`` (not busy) naming the host and what to check (``storage_refs.unresolvable_host``), once DNS
    asked again for ``SOURCE_HOST_GONE_AFTER_S`` still says so (``SourceBusy`` when it resolves meanwhile); what did
    not answer or answered "later" is ``SourceBusy`` (busy, as the raw transport errors and ``ServerBusy`` were), a
    refusal (403) ``SourceUnavailable`` (was ``HttpResponseError``/``ClientAuthenticationError``: not busy either).
    One difference: a 5xx without a "retry" error code (a gateway's 502) was not busy as ``HttpResponseError`` and is
    ``SourceBusy`` now, as the edge judges it. Failures recorded by earlier releases keep their text, so replays judge
    them as before. The app's own account (no ``account_url``) is left alone: its failures are trapbatch's."""
    if not account_url:
        return contextlib.nullcontext()
    return _source_listing_errors(f"cannot list container {container!r} in {account_url}", NO_ACCESS_HINT,
                                  urlsplit(account_url).hostname or "")


# How long the drop trigger asks DNS again about a host a dropped request's checks found missing before it writes the
# refusal (``after_dns_asked_again``): the platform's blip lasts up to ~120 s (``storage_refs.HOST_GONE_AFTER_S``), and
# the trigger may run that long (host.json functionTimeout 30 min; the listener keeps its message hidden meanwhile).
DROP_HOST_GONE_AFTER_S = HOST_GONE_AFTER_S


def after_dns_asked_again(exc: TrapbatchError) -> TrapbatchError:
    """What the drop trigger answers for ``exc`` once DNS was asked again about the host it found missing
    (``exc.missing_host``, set by ``source_error`` and ``storage_error``; ``storage_refs.resolves_again`` for up to
    ``DROP_HOST_GONE_AFTER_S``): ``exc`` itself when DNS still says "no such name" (the refusal, as before), or when
    ``exc`` is about something else or names no host; else busy, so the trigger runs again (``api.starters.busy``):
    ``StorageUnavailable`` for trapbatch's own account, ``SourceBusy`` for the images' account or its vault.

    Why: a refusal written beside a dropped request stays (nobody resends a dropped file), and on Azure a lookup of
    an account that exists can say "no such name" for a while; one such answer refused the request for good, where
    a synchronous HTTP caller that got 400 could send it again. The HTTP edge does not call this: it answers at
    once. Blocking (sleeps): call it off the event loop."""
    host = exc.missing_host
    if not host:
        return exc
    answer = resolves_again(host, DROP_HOST_GONE_AFTER_S, every_s=SOURCE_HOST_ASK_EVERY_S, clock=_clock,
                            sleep=_sleep)
    if answer is False:
        return exc
    return host_missing_busy(exc, f"{exc.message}; its host name {host} "
                             + ("resolves again" if answer else "then got no answer from DNS either way"))


@contextlib.contextmanager
def asking_dns_again() -> Iterator[None]:
    """Around work whose storage errors are already ``source_error``'s (an image list's read, ``open_image_list``): a
    refusal because DNS said a host does not exist is raised only once DNS asked again still says so
    (``after_dns_asked_again``); busy if the host resolves again meanwhile. Blocking (sleeps): off the event loop."""
    try:
        yield
    except TrapbatchError as exc:
        answer = after_dns_asked_again(exc)
        if answer is exc:
            raise
        raise answer from None


def host_missing_busy(exc: TrapbatchError, said: str) -> TrapbatchError:
    """``exc``, a refusal because DNS said a host does not exist, as busy (``api.starters.busy``) with the message
    ``said``: ``StorageUnavailable`` for trapbatch's own account (``storage_error``'s), ``SourceBusy`` for the images'
    account or its vault. For the triggers that ask DNS again before such a refusal stays (``after_dns_asked_again``,
    ``api.arrivals``' count across Event Grid's deliveries).

    A ``SourceUnavailable`` about trapbatch's own account (``own_account``: ``source_error`` with ``OWN_ACCOUNT``, a
    request without source_account_url) stays ``SourceBusy``, the type ``orchestrations.retries.is_busy`` and
    ``api.starters.busy`` judge by, but its hint names that account and its setting, not "the images' storage
    account" the request did not name."""
    if isinstance(exc, StorageError):
        return StorageUnavailable(said, _RETRY)
    if isinstance(exc, SourceUnavailable) and exc.own_account:
        return SourceBusy(said, _OWN_ACCOUNT_BUSY)
    return SourceBusy(said, _SOURCE_BUSY)


# How long Event Grid's deliveries of a marker's event (``api.arrivals.start_from_marker``) must keep finding a host
# missing from DNS before the marker's refusal is written: the same grace as the drop trigger's, counted across
# deliveries instead of waited out in one. Why across: Event Grid "waits 30 seconds for a response after delivering a
# message" and then retries it, so a delivery cannot wait two minutes; it retries a failed delivery "on the following
# schedule on a best effort basis: 10 seconds, 30 seconds, 1 minute, 5 minutes, ..." and expires an event after 24 h
# (default event time-to-live 1440 minutes, 30 attempts) (MicrosoftDocs/azure-docs
# articles/event-grid/delivery-and-retry.md, "Retry schedule and duration"). So a host that stays missing is refused
# at about the fifth delivery (tries at 0, 10, 40, 100 and 400 s: ~7 minutes after the first), and one back by then
# starts the task. That holds because each delivery answers at once: the check's storage client does not retry a host
# DNS says does not exist (``storage_refs.missing_host_not_retried``); with the storage SDK's ~84 s of back-offs each
# delivery timed out, the next one overlapped it, and a refusal written after Event Grid stopped waiting was
# overwritten by the busy answer of the delivery that followed.
MARKER_HOST_GONE_AFTER_S = HOST_GONE_AFTER_S
