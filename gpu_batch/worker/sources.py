"""Where the worker gets bytes: images from a blob container or a local folder, and the storage client itself.

Why this module exists: the pipeline only needs ``fetch(name) -> bytes``; keeping storage here lets the pipeline be
tested on a folder and lets the blob path use many concurrent downloads (the pipeline calls ``fetch`` from a
thread pool; ``BlobServiceClient`` is thread-safe). Storage configuration comes from the environment:
``TRAPBATCH_STORAGE_CONNECTION`` (a connection string, e.g. Azurite's) or ``TRAPBATCH_STORAGE_ACCOUNT_URL`` with
``DefaultAzureCredential`` (managed identity on Batch nodes).

Why failures are classified here: only the source knows whether a read failed because of the image (it no longer
exists: permanent) or because of the storage account or the network (401/403, 429/503, a timeout: the next attempt
runs the image again). ``SourceError.reason`` is one of ``gpu_batch.manifest.FAILURE_REASONS``. Reads tell of
the whole account: a host name DNS says does not exist (``account_not_found``: deleted after the task's enumeration,
say) fails every image alike, so once such reads have failed for ``GONE_AFTER_S`` with none reaching the service in
between (a blob, or an HTTP error such as a 404, says the host resolves), ``BlobImageSource`` remembers it
(``gone``) and the worker stops the shard on it (exit 5, ``gpu_batch.exit_codes.SOURCE``) instead of failing each
image through the SDK's retries. A shard whose every read
failed so in less time than that does not end on it either: the worker waits at its end, asking DNS again
(``BlobImageSource.wait_for_host``), until the host resolves (its images are read again) or ``GONE_AFTER_S`` have
passed (exit 5 all the same).

Must not: decode images or interpret results.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from gpu_batch import manifest as contract
from gpu_batch.storage_refs import HOST_ASK_EVERY_S, HOST_GONE_AFTER_S

if TYPE_CHECKING:  # imported where raised at run time, as OutputNotWritable is
    from gpu_batch.worker.results import OutputTaken

CONNECTION_ENV = "TRAPBATCH_STORAGE_CONNECTION"
ACCOUNT_URL_ENV = "TRAPBATCH_STORAGE_ACCOUNT_URL"


class SourceError(Exception):
    """One image could not be read (becomes that image's ``image access failure``, with ``reason``)."""

    def __init__(self, message: str, reason: str = contract.REASON_DOWNLOAD) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return contract.FAILURE_REASONS[self.reason] == contract.RETRYABLE


ARCHIVED_CODES = frozenset({"BlobArchived", "BlobBeingRehydrated"})  # REST "Blob Storage error codes"


def reason_for_status(status: int | None) -> str:
    """The failure reason of a storage answer with HTTP ``status`` (None: no answer at all)."""
    if status in (401, 403):
        return contract.REASON_AUTH
    if status in (429, 503):
        return contract.REASON_THROTTLED
    if status in (408, 504):
        return contract.REASON_TIMEOUT
    if status == 404:
        return contract.REASON_NOT_FOUND
    return contract.REASON_DOWNLOAD


def storage_error_reason(exc: BaseException) -> str:
    """Classify an exception raised while downloading one blob (azure-core's, or one the SDK let through).

    Retryable unless the blob is gone (404) or archived (its error code: Azure answers a read of a blob in the
    Archive tier, or one being rehydrated, 409 ``BlobArchived`` / ``BlobBeingRehydrated``), or the account itself is:
    a host name DNS says does not exist (``account_not_found``, ``storage_refs.unresolvable_host``: EAI_NONAME /
    EAI_NODATA on the chain, where a resolver that did not answer, EAI_AGAIN, or a refused connection stays
    ``download``). Timeouts are checked before the HTTP status because azure-core's timeout errors have none; an
    authentication error without a status (no token could be obtained) is ``auth``.
    """
    from azure.core import exceptions as az

    from gpu_batch.storage_refs import unresolvable_host

    if unresolvable_host(exc) is not None:
        return contract.REASON_ACCOUNT_NOT_FOUND
    if isinstance(exc, (az.ServiceRequestTimeoutError, az.ServiceResponseTimeoutError, TimeoutError)):
        return contract.REASON_TIMEOUT
    if isinstance(exc, az.HttpResponseError) and getattr(exc, "error_code", None) in ARCHIVED_CODES:
        return contract.REASON_ARCHIVED
    if isinstance(exc, az.HttpResponseError) and exc.status_code is not None:
        return reason_for_status(int(exc.status_code))
    if isinstance(exc, az.ResourceNotFoundError):
        return contract.REASON_NOT_FOUND
    if isinstance(exc, az.ClientAuthenticationError):
        return contract.REASON_AUTH
    return contract.REASON_DOWNLOAD


class StorageConfigError(Exception):
    """No usable storage configuration (whole-shard problem)."""


class ImageSource(Protocol):
    def fetch(self, name: str) -> bytes: ...


class LocalFolderSource:
    """Images under a local folder; names are paths relative to it (no escaping the folder)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def fetch(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise SourceError(f"{name!r} is outside the image root", contract.REASON_NOT_FOUND)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise SourceError(f"cannot read {name!r}: {exc}", contract.REASON_NOT_FOUND) from exc
        except PermissionError as exc:
            raise SourceError(f"cannot read {name!r}: {exc}", contract.REASON_AUTH) from exc
        except TimeoutError as exc:
            raise SourceError(f"cannot read {name!r}: {exc}", contract.REASON_TIMEOUT) from exc
        except OSError as exc:  # an I/O error of a network share, say: try again on the next attempt
            raise SourceError(f"cannot read {name!r}: {exc}", contract.REASON_DOWNLOAD) from exc


def _blob_imports() -> Any:
    try:
        from azure.storage import blob
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageConfigError("azure-storage-blob is not installed; install the worker requirements "
                                 "(pip install -r requirements/worker.txt)") from exc
    return blob


def blob_service_from_env(env: Mapping[str, str] | None = None) -> Any:
    """A ``BlobServiceClient`` from TRAPBATCH_STORAGE_CONNECTION or TRAPBATCH_STORAGE_ACCOUNT_URL.

    Made per shard, but with the process's shared session and managed-identity credential
    (``node_clients``): a resident worker's shards no longer each hold pooled sockets until a cyclic garbage
    collection, nor ask the node's IMDS for a token each."""
    from gpu_batch.worker import node_clients

    env = os.environ if env is None else env
    problem = storage_config_problem(env)
    if problem is not None:
        raise StorageConfigError(problem)
    blob = _blob_imports()
    connection = env.get(CONNECTION_ENV)
    shared = node_clients.shared_session_options()
    if connection:
        return blob.BlobServiceClient.from_connection_string(connection, max_single_get_size=64 << 20, **shared)
    return blob.BlobServiceClient(env[ACCOUNT_URL_ENV], credential=node_clients.node_credential(),
                                  max_single_get_size=64 << 20, **shared)


def storage_config_problem(env: Mapping[str, str]) -> str | None:
    """Why ``blob_service_from_env`` cannot build a client from ``env`` (neither setting is there), else None.

    Why apart: the worker CLI asks before it imports torch (``__main__._check_before_imports``), so a task without
    storage settings is told so at once instead of after seconds of imports; nothing here imports the SDK."""
    if env.get(CONNECTION_ENV) or env.get(ACCOUNT_URL_ENV):
        return None
    return (f"set {CONNECTION_ENV} (connection string) or {ACCOUNT_URL_ENV} (with a managed identity) so the worker "
            "can reach blob storage")


# Where a source account's URL comes from, for what the worker says when its host does not resolve.
SOURCE_ACCOUNT_SETTING = "the request's source_account_url (an account on TRAPBATCH_SOURCE_ACCOUNTS)"


# How long reads must keep finding the images' account's host missing from DNS (no read reaching the service in
# between) before the shard stops on it (``SourceGone``). Why not at the first: on Azure a lookup of an existing
# account's host can say "no such name" for a while (``storage_refs.HOST_GONE_AFTER_S`` cites the reports: up to
# ~120 s), and a shard stopped on such a blip cost an attempt and counted as the shard's first unfixable exit. An alias
# of that one number (was a copy of it), under the worker's own name, which tests set (``GONE_AFTER_S``).
GONE_AFTER_S = HOST_GONE_AFTER_S
# How often ``BlobImageSource.wait_for_host`` asks DNS again about a missing host while a shard's end waits on it:
# often enough that a host back after a blip is read again within seconds, and one lookup costs next to nothing
# (``storage_refs.HOST_ASK_EVERY_S``, aliased as the grace is).
ASK_AGAIN_EVERY_S = HOST_ASK_EVERY_S


class SourceGone(Exception):
    """The images' storage account cannot be read at all (DNS says its host does not exist): a whole-shard problem.

    Why an exception of the shard: every image of the shard is in that account, so each would fail alike (and each
    only after the SDK's retries, about a minute); retryable, every attempt resubmitted them all. The worker stops the
    shard and exits ``exit_codes.SOURCE``, which the orchestration takes as unfixable at its second time."""


class BlobImageSource:
    """Images in one container; ``fetch`` downloads a whole blob (called concurrently by the pipeline).

    ``setting``: where the account's URL was given, for the message when its host does not resolve
    (``SOURCE_ACCOUNT_SETTING``, or the worker's storage setting for images in trapbatch's own account). A read whose
    host DNS says does not exist fails its image as ``account_not_found``, retryable (a lookup can say so for a while
    of an account that exists: ``GONE_AFTER_S``; and an account restored, or a name fixed, must read those images
    again); once such reads have failed for ``gone_after_s`` (default ``GONE_AFTER_S``) with no read reaching
    the service in between, ``gone`` says what they found and ``raise_if_gone`` raises it as ``SourceGone``;
    ``wait_for_host`` holds a shard's end that came sooner. ``clock``: monotonic seconds, ``sleep``: the wait's
    (None: the class's
    ``monotonic`` and ``sleep``, which a test of the whole worker replaces for the sources its run builds, as
    ``ResultWriter.retry_sleep``)."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def __init__(self, service: Any, container: str, setting: str = SOURCE_ACCOUNT_SETTING, *,
                 gone_after_s: float | None = None, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.container = service.get_container_client(container)
        self.setting = setting
        self.gone_after_s = GONE_AFTER_S if gone_after_s is None else gone_after_s
        self.gone: str | None = None  # what the reads that found the host missing for gone_after_s say
        self._clock = clock if clock is not None else type(self).monotonic
        self._sleep = sleep if sleep is not None else type(self).sleep
        self._missing_since: float | None = None  # the first of the reads that found it missing since the last success
        self._missing_host = ""  # the host those reads found missing
        self._gone_lock = threading.Lock()

    def fetch(self, name: str) -> bytes:
        from azure.core.exceptions import AzureError

        from gpu_batch.storage_refs import unresolvable_host

        # the HTTP layer would read another blob (a manifest listed before the app passed such names over)
        if contract.has_dot_segment(name):
            raise SourceError(f"{name!r} has a '.' or '..' folder, which the HTTP layer resolves to another blob: "
                              "not read", contract.REASON_NOT_FOUND)
        try:
            data = bytes(self.container.download_blob(name, max_concurrency=1).readall())
        except (AzureError, OSError) as exc:  # OSError: a socket error or timeout the SDK let through
            host = unresolvable_host(exc)
            if host is not None:
                self._host_missing(host, name)
                raise SourceError(f"cannot download {name!r}: the images' storage account's host name "
                                  f"{host or '(in its URL)'} does not resolve (DNS: no such name); the next attempt "
                                  "reads it again", contract.REASON_ACCOUNT_NOT_FOUND) from exc
            status = getattr(exc, "status_code", None)
            if status is not None:  # the account's service answered (a 404, a 403): its host resolves
                self._host_answered()
            raise SourceError(f"cannot download {name!r}: {type(exc).__name__}" + (f" ({status})" if status else ""),
                              storage_error_reason(exc)) from exc
        self._host_answered()
        return data

    def _host_answered(self) -> None:
        """A read reached the account's service (its blob, or an HTTP error from it): the host resolved after all,
        so the reads that found it missing before were a blip, not a deleted account."""
        if self._missing_since is not None:
            with self._gone_lock:
                if self.gone is None:
                    self._missing_since = None

    def _host_missing(self, host: str, name: str | None) -> None:
        """Count a read of ``name`` (None: a lookup of ``wait_for_host``) that found the account's host missing;
        ``gone`` once such reads span ``gone_after_s``."""
        from gpu_batch.storage_refs import unresolvable_hint

        now = self._clock()
        with self._gone_lock:
            if self._missing_since is None:
                self._missing_since = now
            self._missing_host = host or self._missing_host or self._url_host()
            lasted = now - self._missing_since
            if self.gone is None and lasted >= self.gone_after_s:
                said = unresolvable_hint(host, "the images' storage account", self.setting)
                self.gone = (f"{said} (every read for {lasted:.0f} s, the last {name!r})" if name is not None else
                             f"{said} (every read and DNS lookup for {lasted:.0f} s, the last a lookup at the "
                             "shard's end)")

    def _url_host(self) -> str:
        """The host of the container's URL: the one to ask about when the failure's chain did not name it."""
        from urllib.parse import urlsplit

        url = getattr(self.container, "url", "")
        return (urlsplit(url).hostname or "") if isinstance(url, str) else ""

    def host_missing(self) -> bool:
        """Whether reads found the account's host missing with none succeeding since the first of them: what
        ``wait_for_host`` would wait on."""
        with self._gone_lock:
            return self._missing_since is not None

    def wait_for_host(self, check: Callable[[], None] | None = None) -> bool:
        """Hold a shard's end while its images' account's host is missing: ask DNS about it again every
        ``ASK_AGAIN_EVERY_S`` until it resolves (True: read the images that failed so again) or reads and lookups
        have found it missing for ``gone_after_s`` since the first such read (``SourceGone``, as ``raise_if_gone``).

        False at once when there is nothing to wait for (no read found the host missing, a read succeeded since the
        first that did, or no host to ask about), and False when ``gone_after_s`` passed with DNS not saying either
        way (EAI_AGAIN: nothing says the account is gone, so the shard ends as it would have). ``check`` is called
        before each lookup (the shard's stop check: a resident worker's client that went away stops the wait too).

        Why: the account is judged gone only after ``GONE_AFTER_S`` of such reads, and a shard whose every read
        failed so sooner (a small one, or an attempt that resubmitted only those images) ended with each image a
        retryable ``account_not_found``; every attempt then did the same, and a deleted account's task ended
        ``completed_with_errors`` with every image failed rather than failed as ``SourceGone`` (exit 5) says. One
        lookup is asked rather than one more read: a read of a missing host takes the storage SDK's retries, about a
        minute, to say what a lookup says at once (``storage_refs.host_resolves``)."""
        from gpu_batch.storage_refs import host_resolves

        while True:
            self.raise_if_gone()
            if check is not None:
                check()
            with self._gone_lock:
                since, host = self._missing_since, self._missing_host
            if since is None or not host:
                return False
            answer = host_resolves(host)
            if answer:
                return True
            if answer is False:
                self._host_missing(host, None)
                self.raise_if_gone()
            left = since + self.gone_after_s - self._clock()
            if left <= 0:
                return False
            self._sleep(min(ASK_AGAIN_EVERY_S, left))

    def raise_if_gone(self) -> None:
        """``SourceGone`` once reads found the account's host missing for ``gone_after_s`` (the pipeline's stop check
        calls it)."""
        gone = self.gone
        if gone is not None:
            raise SourceGone(gone)


class BlobSink:
    """A results document in a blob (replaced on every flush; block blob uploads are atomic).

    Once ``read`` (``load_resumable``) has been called, every write is conditional: it replaces the blob only if its
    ETag is still the one read or last written (If-Match), or, when the blob was absent, only if it still is
    (If-None-Match: *). A failed condition raises ``OutputTaken``: another run of this shard attempt (Batch reran the
    task on a lost node while this process lived on) wrote the results, and a blind overwrite would replace them
    with this run's smaller set. (Put Blob honours If-Match / If-None-Match and answers 412 when they fail: docs
    rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations; Azurite too, tested in
    gpu_batch/tests/test_two_writers.py.) Sinks that are never read (progress counter, coverage summary, merge view) write
    unconditionally: the app checks those against the results' ETag they name.
    """

    def __init__(self, service: Any, container: str, name: str) -> None:
        self.client = service.get_blob_client(container, name)
        self.container, self.name = container, name
        self._guarded = False  # set by ``read``: from then on, writes are conditional
        self._etag: str | None = None  # the ETag as the service sent it (quotes kept); None: the blob was absent
        self._taken: OutputTaken | None = None
        # digests of the payloads whose writes raised since the last acknowledged one: any may have landed all the
        # same (every try's answer lost), and then the blob holds it under an ETag this sink never saw (``_own_write``)
        self._unacknowledged: set[bytes] = set()

    def read(self) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = self.client.download_blob()
            data = bytes(download.readall())  # the SDK reads every range at the first response's ETag
        except ResourceNotFoundError:
            self._guarded, self._etag = True, None
            return None
        self._guarded, self._etag = True, str(getattr(download.properties, "etag", "") or "") or None
        return data

    def write(self, data: bytes) -> str | None:
        """Upload ``data`` in one request (the worker's documents are far below the SDK's 64 MiB single-put size;
        above it the SDK uploads blocks, still one commit); returns the new ETag, which Put Blob and Put Block List
        return in their response (the coverage summary names the results by it: ``gpu_batch.manifest``)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError

        from gpu_batch.worker.results import OutputNotWritable

        if self._taken is not None:
            raise self._taken
        conditions: dict[str, Any] = {}
        if self._guarded:
            conditions = ({"etag": self._etag, "match_condition": MatchConditions.IfNotModified} if self._etag
                          else {"match_condition": MatchConditions.IfMissing})
        try:
            response = self.client.upload_blob(data, overwrite=True, **conditions)
            etag = response.get("etag") if isinstance(response, dict) else None
        except AzureError as exc:
            if not (self._guarded and condition_failed(exc)):
                self._unacknowledged.add(hashlib.sha256(data).digest())
                raise OutputNotWritable(f"cannot write results to blob {self.container}/{self.name}: "
                                        f"{type(exc).__name__}: {exc}") from exc
            etag = self._own_write(data, exc)
            if etag is None:  # the blob holds this run's unacknowledged write: replace it, on its own ETag
                self._unacknowledged.clear()
                return self.write(data)
        self._unacknowledged.clear()
        if self._guarded:
            self._etag = str(etag) if etag else None
        return str(etag).strip('"') if etag else None

    def _own_write(self, data: bytes, failed: BaseException) -> str | None:
        """The ETag of the blob when it holds exactly ``data``, after a failed condition; None when it holds this
        run's unacknowledged writes (its ETag becomes the condition of the next try); else ``OutputTaken``.

        Why: azure-core retries a request whose answer was lost (a timeout, a reset connection); when the first
        try had landed, the retry's condition names the ETag it replaced and fails, though the blob holds this
        run's own bytes. Likewise a flush whose every try lost its answer (``OutputNotWritable``) may have landed:
        the next flush's condition then fails on this run's own earlier bytes. Only a blob with other bytes was
        written by another run."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        from gpu_batch.worker.results import OutputNotWritable, OutputTaken

        try:
            download = self.client.download_blob()
            current, etag = bytes(download.readall()), str(getattr(download.properties, "etag", "") or "")
        except ResourceNotFoundError:
            current, etag = None, ""
        except AzureError as exc:  # cannot tell yet: the next flush tries the same condition again
            raise OutputNotWritable(f"cannot write results to blob {self.container}/{self.name}: its condition failed "
                                    f"and it cannot be read back: {type(exc).__name__}: {exc}") from exc
        if current == data and etag:
            return etag
        if current is not None and etag and hashlib.sha256(current).digest() in self._unacknowledged:
            self._guarded, self._etag = True, etag
            return None
        self._taken = OutputTaken(
            f"results blob {self.container}/{self.name} was replaced by another run of this shard attempt since this "
            f"run read or wrote it ({type(failed).__name__}); this run stops without writing more, the other run's "
            "results are kept (Batch reran the task, e.g. after losing this node)")
        raise self._taken from failed

    def describe(self) -> str:
        return f"blob {self.container}/{self.name}"


def condition_failed(exc: BaseException) -> bool:
    """Whether a storage error says a write's If-Match / If-None-Match condition failed: 412 ``ConditionNotMet``
    (If-Match), or 409 ``BlobAlreadyExists`` (If-None-Match: * on a blob that exists; some services answer that 412
    too). A 412 for a lease (``LeaseIdMissing``) is not one: nothing here leases results."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    if status == 412:
        return code is None or code == "ConditionNotMet"
    return status == 409 and code == "BlobAlreadyExists"


def blob_reader(service: Any, container: str) -> Callable[[str], tuple[bytes, str]]:
    """A reader of whole blobs in ``container`` with the ETag each was read at (``mergeview.BlobReader``: a later
    attempt's merge view reads the shard's first manifest and earlier results through it)."""
    from azure.core.exceptions import AzureError

    def read(name: str) -> tuple[bytes, str]:
        try:
            download = service.get_blob_client(container, name).download_blob()
            return bytes(download.readall()), str(getattr(download.properties, "etag", "") or "")
        except AzureError as exc:
            raise ValueError(f"cannot read blob {container}/{name}: {type(exc).__name__}: {exc}") from exc

    return read


def blob_etag(service: Any, container: str, name: str) -> str:
    """A blob's ETag now (one Get Blob Properties): which version a cached ``blob://`` model must be."""
    return str(service.get_blob_client(container, name).get_blob_properties().etag)


def download_blob_to(service: Any, container: str, name: str, dest: Path) -> None:
    """Stream one blob to a local file (used for ``blob://`` models)."""
    with dest.open("wb") as f:
        service.get_blob_client(container, name).download_blob(max_concurrency=4).readinto(f)
