"""The one exception tree of trapbatch; every error carries a ``hint`` telling the user what to do next.

    TrapbatchError(Exception)
    ├── ConfigError(TrapbatchError, KeyError)          a setting is missing or malformed
    ├── RequestInvalid(TrapbatchError, ValueError)     a task request (HTTP body / task.json) is bad
    │   ├── RequestTooLarge(RequestInvalid)            its body is larger than any request needs (413)
    │   └── UnsupportedContentType(RequestInvalid)     it is not sent as JSON (415)
    ├── ContainerNotFound(TrapbatchError, LookupError) a storage container does not exist
    ├── TaskNotFound(TrapbatchError, LookupError)      no task with that id
    ├── TaskNotFinished(TrapbatchError, RuntimeError)  the task has not completed yet (HTTP 409)
    ├── RepeatsBusy(TrapbatchError, RuntimeError)      a repeat search or removal of the task still runs (409)
    ├── RepeatListChanged(TrapbatchError, RuntimeError)  a removal names ids of a replaced repeats list (409)
    ├── TaskStillRunning(TrapbatchError, RuntimeError) a re-run asked for while the task runs (HTTP 409)
    ├── RunSuperseded(TrapbatchError, RuntimeError)    a late activity of a terminated run another run replaced
    ├── SourceUnavailable(TrapbatchError, PermissionError)  another account's images cannot be opened
    ├── SourceBusy(TrapbatchError, ConnectionError)    that account or its secret store did not answer (503)
    ├── SourceNotAllowed(TrapbatchError, PermissionError)   that account is not on the operator's allow-list (403)
    ├── CallerUnauthenticated(TrapbatchError, PermissionError)  no verified caller identity (401)
    ├── CallerForbidden(TrapbatchError, PermissionError)    the task belongs to another caller (403)
    ├── CallerLimitExceeded(RequestInvalid)                a request beyond the caller's limits (400)
    ├── TooManyActiveTasks(TrapbatchError)                 the caller runs as many tasks as allowed (429, Retry-After)
    ├── TaskHubUnavailable(TrapbatchError, ConnectionError)  the task hub could not be read (503, Retry-After)
    ├── InternalError(TrapbatchError, RuntimeError)    a bug or an unforeseen failure (HTTP 500; details in the log)
    └── StorageError(TrapbatchError)                   trapbatch's own storage failed (adapters.storage_errors maps
        ├── StorageUnavailable(StorageError, ConnectionError)     every azure-core exception to one of these)
        ├── StorageHostUnresolvable(StorageError)   its account's host name does not exist in DNS (500)
        ├── StorageAccessDenied(StorageError, PermissionError)
        ├── StorageConflict(StorageError)
        └── StorageNotFound(StorageError, LookupError)

A failure of one image is not an exception: it is data (a ``failure`` string in the results).
"""
from __future__ import annotations

import re


class TrapbatchError(Exception):
    """Base class; ``hint`` says what the user should do next."""

    status_code = 500
    # The host name DNS said does not exist, when that is why this error was raised ("" when the failure did not say
    # which); None otherwise. Not part of the message: ``adapters.storage_errors.after_dns_asked_again`` reads it at
    # the drop trigger, which asks DNS again before it writes a refusal that stays.
    missing_host: str | None = None

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        return {"error": self.message, "hint": self.hint}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the body (e.g. ``Retry-After``)."""
        return {}


class InstanceListTooSlow(TrapbatchError):
    """Listing the task hub's instances did not end in time (``api.starters.INSTANCE_LIST_TIMEOUT_S``): an HTTP
    function must answer within 230 s on Azure, and its own answer says what to do where the front end's cut would
    not."""

    status_code = 503


class ConfigError(TrapbatchError, KeyError):
    status_code = 500

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return TrapbatchError.__str__(self)


class RequestInvalid(TrapbatchError, ValueError):
    status_code = 400


class RequestTooLarge(RequestInvalid):
    status_code = 413


class UnsupportedContentType(RequestInvalid):
    status_code = 415


class TaskNotFinished(TrapbatchError, RuntimeError):
    """The task exists but has not reached a completed stage yet."""

    status_code = 409


class RepeatsBusy(TrapbatchError, RuntimeError):
    """A repeated-detection search or removal of the task is still running: one at a time, since each reads (and a
    search replaces) the task's repeats list."""

    status_code = 409


class RepeatListChanged(TrapbatchError, RuntimeError):
    """A removal names location ids of a repeats list that a search run again has replaced (ids are assigned afresh
    by each search, so ``r00001`` may now be another place)."""

    status_code = 409


class TaskStillRunning(TrapbatchError, RuntimeError):
    """``"rerun": true`` for a task that is still running: a task runs one generation at a time."""

    status_code = 409


class RunSuperseded(TrapbatchError, RuntimeError):
    """An activity of a task's run that was terminated and that a later run replaced (``activities.superseded``):
    it writes nothing. Nobody waits for it (its orchestration is gone); the log says why it stopped."""


class SourceUnavailable(TrapbatchError, PermissionError):
    """The task's images are in another storage account that cannot be opened (missing secret, no access)."""

    status_code = 400
    # True when the refusal is about trapbatch's own storage account, which a request without source_account_url
    # reads its images from (``adapters.storage_errors.source_error`` with ``OWN_ACCOUNT``): the type stays the
    # images' account's (activities fail with its name, which the orchestrations judge), so what is made of it later
    # (``storage_errors.host_missing_busy``) reads this field, not the message, to name the right account.
    own_account: bool = False


class SourceBusy(TrapbatchError, ConnectionError):
    """The images' storage account, or the secret store holding its credential, did not answer or answered "later"
    (no connection, a timeout, 408, 429 or 5xx, or the app's token endpoint did not answer): retrying later usually
    works, where ``SourceUnavailable`` needs someone to fix a secret or a role. A type of its own, not a
    ``SourceUnavailable``: activities fail with its name, which ``orchestrations.retries.BUSY_TYPES`` counts busy,
    and failures recorded as ``SourceUnavailable`` by earlier releases replay as they were judged."""

    status_code = 503
    retry_after_s = 30

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class SourceNotAllowed(TrapbatchError, PermissionError):
    """A request named a storage account outside ``TRAPBATCH_SOURCE_ACCOUNTS``: refused before any credential of the
    app (managed-identity token or named secret) could be sent there."""

    status_code = 403


class CallerUnauthenticated(TrapbatchError, PermissionError):
    """``TRAPBATCH_CALLER_AUTH=easyauth`` and the request carries no (valid) App Service Authentication identity."""

    status_code = 401


class CallerForbidden(TrapbatchError, PermissionError):
    """The caller is known but the task is another caller's (operators may act on every task)."""

    status_code = 403


class CallerLimitExceeded(RequestInvalid):
    """The request asks for more than the operator allows one caller (``TRAPBATCH_CALLER_*``)."""

    status_code = 400


class TooManyActiveTasks(TrapbatchError):
    """The caller already runs ``TRAPBATCH_CALLER_MAX_ACTIVE_TASKS`` tasks."""

    status_code = 429

    def __init__(self, message: str, hint: str = "", retry_after_s: int = 60) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class TaskHubUnavailable(TrapbatchError, ConnectionError):
    """The Durable task hub could not be read: its storage throttled or failed and the extension's management API
    answered 500 (``HttpApiHandler`` catches the exception and answers "Something went wrong while processing your
    request"), or it did not answer at all. Never "no such task": see ``adapters.task_hub.read_status``."""

    status_code = 503
    retry_after_s = 30

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ContainerNotFound(TrapbatchError, LookupError):
    status_code = 404

    def __str__(self) -> str:
        return TrapbatchError.__str__(self)


class TaskNotFound(TrapbatchError, LookupError):
    status_code = 404

    def __str__(self) -> str:
        return TrapbatchError.__str__(self)


class InternalError(TrapbatchError, RuntimeError):
    """What the HTTP edge answers for an exception nobody foresaw; the traceback goes to the log, not the caller."""

    status_code = 500


class StorageError(TrapbatchError):
    """Storage answered something trapbatch cannot use (a malformed or unexpected response)."""

    status_code = 502


class StorageUnavailable(StorageError, ConnectionError):
    """Storage cannot be reached, timed out or throttles: retrying later usually works (``Retry-After``, which the
    CLI honours by trying again)."""

    status_code = 503
    retry_after_s = 30

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class StorageHostUnresolvable(StorageError):
    """DNS says trapbatch's own storage account's host name does not exist (a misspelt account name in
    ``AzureWebJobsStorage`` / ``AzureWebJobsStorage__accountName``, or a deleted account): a setting to fix, not a
    passing outage, so no ``Retry-After``, and not a name ``orchestrations.retries.BUSY_TYPES`` counts busy. A 500
    like ``ConfigError``, but a ``StorageError`` (no ``KeyError``: a ``except KeyError`` around a read must not take
    it for a missing key)."""

    status_code = 500


class StorageAccessDenied(StorageError, PermissionError):
    """trapbatch's own identity or key was refused by its storage account: a deployment problem, not the caller's."""

    status_code = 502


class StorageConflict(StorageError):
    """Someone else changed the blob at the same moment."""

    status_code = 409


class StorageNotFound(StorageError, LookupError):
    status_code = 404

    def __str__(self) -> str:
        return TrapbatchError.__str__(self)


# The Durable extension reports a failed orchestration as "Orchestrator function '<name>' failed: <error>"
# (OutOfProcOrchestrationShim; devhost fidelity: tests/devhost/test_devhost.py), and a parent failed by its
# sub-orchestration carries that around the child's error; a failed activity as "Activity function '<name>' failed:
# <Python type>: <error>" (devhost fidelity row 32): names of trapbatch's internals, nothing a user acts on.
_FUNCTION_FAILED = re.compile(r"^(?:Orchestrator function '[^']*' failed: )*"
                              r"(?:Activity function '[^']*' failed: (?: (?P<type>[A-Za-z_][A-Za-z0-9_]*):(?: |$))?)?")


# The storage SDK's HttpResponseError reads "Operation returned an invalid status '<reason>'" on its first line and
# the service's error code on the next ("ErrorCode:ContainerNotFound"; azure-storage-blob's process_storage_error).
_SDK_STATUS_LINE = "Operation returned an invalid status"
_ERROR_CODE = re.compile(r"\nErrorCode:\s*(?P<code>[A-Za-z0-9]+)")


def quoted(text: str) -> str:
    """``text`` in single quotes as the user wrote it: a name a request gave (a prefix, a blob) in a message.

    Why not ``repr``: it doubles a backslash (``'2024\\\\site-a'``), so a Windows-style prefix read as one with two
    backslashes, which is not what was sent; and it switches to double quotes around a name with an apostrophe. Only
    characters that would not show (an invisible format character such as U+200B; requests refuse control ones)
    are escaped, so a name that looks right but is not says why."""
    return "'" + "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text) + "'"


def failure_message(text: str) -> str:
    """A failed task's error as a user reads it: its first line, without the platform's nested function prefixes
    (an activity's exception without a message reads as its type); a storage SDK error's first line, which names
    no error, gets the service's error code from the line after. Without secrets (``without_secrets``): a failed
    orchestration's output is its activity's exception, whose connection error names the URL with its SAS query."""
    first = text.strip().split("\n")[0].rstrip()
    found = _FUNCTION_FAILED.match(first)
    rest = first[found.end():].strip() if found else first
    if rest.startswith(_SDK_STATUS_LINE) and (code := _ERROR_CODE.search(text)):
        rest = f"{rest} ({code.group('code')})"
    return without_secrets(rest or (found.group("type") if found and found.group("type") else "") or first)


# A URL's query string (what follows a "?" glued to a host or path and holding a "="): a SAS token travels so. The
# part before the "=" holds no "?": a look-ahead scanning to the line's end from each "?" took 24 s for 100 KB of
# "a?a?..." (a log line is read up to LOG_READ_LIMIT); so each "?" scans only to the next one (linear)
_QUERY = re.compile(r"(?<=[^\s?])\?[^\s'\"<>();?=]*=[^\s'\"<>();]+")
# a secret as a connection string, a SAS or an HTTP header names it, its "=" also percent-encoded ("%3D": a URL
# within a URL's query, as a redirect or an error's quoted request carries it, hides its "?" and "&" as "%3F" and
# "%26", where no word boundary precedes the name)
_SECRET_NAMES = r"(AccountKey|SharedAccessSignature|sig|client_secret|password)"
# ... or escaped for JSON ("\u0026sig\u003d...": .NET's System.Text.Json escapes "&" and "=" so in the text it
# writes, where no word boundary precedes the name); "&amp;sig=" (HTML) needs nothing more: ";" is a boundary
_NAMED_SECRET = re.compile(r"(?i)(?:\b|(?<=%26)|(?<=%3F)|(?<=\\u0026)|(?<=\\u003f))" + _SECRET_NAMES
                           + r"(=|%3D|\\u003d)[^\s;&'\"<>()]+")
# ... or as JSON or a Python dict prints it: "AccountKey": "..." (an SDK error's body, a settings dump), its quotes
# escaped once or more where that JSON sits inside other JSON or a quoted traceback (\"sig\": \"...\": a .NET
# exception serialized into Durable history's Details quotes the Python traceback that quoted the body). The value
# is scanned lazily to the first quote of its opening form, and only from a quoted key; at most three backslashes
# before a quote (JSON in JSON in JSON): an unbounded run was scanned again from each of its backslashes (200 s for
# 200 KB of them)
_QUOTED_SECRET = re.compile(r"(?i)(\\{0,3}[\"'])" + _SECRET_NAMES + r"\1(\s*:\s*)(\\{0,3}[\"'])[^\"'\n]*?\4")
# an HTTP Authorization header's Basic credentials (base64 of user:password) or Azure Storage's SharedKey
# signature ("SharedKey account:signature"): the scheme and the account stay. Basic only after a header's name
# ("the Basic tier" is a word); the gap allows ": ", "': '" and JSON-escaped quotes
_BASIC = re.compile(r"(?i)\b((?:proxy-)?authorization[\s\\\"':=]{0,8}basic\s+)[^\s'\"<>(),;\\]+")
_SHARED_KEY = re.compile(r"(?i)\b(SharedKey(?:Lite)?\s+[^\s:'\"<>(),;]+:)[^\s'\"<>(),;\\]+")
# a URL's user:password (https://user:pw@host/): the user and host stay. One start per run of scheme characters
# (the look-behind), so that "a.a.a..." is not scanned again from each dot
_USERINFO = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^\s/:@'\"<>]*):[^\s/@'\"<>]+@")
_BEARER = re.compile(r"(?i)\bBearer\s+[^\s'\"<>()]+")
REDACTED = "[redacted]"


def without_secrets(text: str) -> str:
    """``text`` without URL query strings, ``AccountKey=``/``SharedAccessSignature=``/``sig=`` values (also
    percent-encoded or JSON-escaped, or quoted as JSON keys, escaped quotes included), a URL's password, bearer
    tokens, an ``Authorization`` header's Basic credentials or a ``SharedKey`` signature. Why: the worker's words
    come from its log, where an exit 69's message carries an SDK exception's text, and that text names the request's
    URL with its query (requests: "Max retries exceeded with url: /c/b?sv=...&sig=..."): kept, a SAS would reach Durable
    history's plain tables, the shard group's ``unreachable`` note and ``shards_given_up``, which every status reader
    sees; an activity's failure (``failure_line``) names the same URLs in a status's ``error`` or ``waiting`` reason.
    The host, path and cause stay: they say what to check."""
    text = _QUERY.sub("?" + REDACTED, text)
    text = _NAMED_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _QUOTED_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{m.group(4)}{REDACTED}"
                              f"{m.group(4)}", text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _BASIC.sub(lambda m: m.group(1) + REDACTED, text)
    text = _SHARED_KEY.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER.sub("Bearer " + REDACTED, text)


def failure_line(exc: BaseException, limit: int = 500) -> str:
    """What a person sees of a failure in a status (custom status is limited to 16 KB, and tracebacks help no one):
    its first line (``failure_message``) without secrets (``without_secrets``: an SDK's connection error names the
    request's URL with its SAS query), at most ``limit`` characters, or the exception's type when it has none."""
    text = failure_message(str(exc)).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
