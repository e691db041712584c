"""The trapbatch HTTP API as Python calls, with every failure turned into a ``CliError`` that says what to do next.

The routes (api/starters.py): ``POST/GET /api/tasks``, ``GET /api/tasks/{id}``, ``.../results``, ``POST .../cancel``,
``POST .../terminate``, ``GET/POST .../repeats``, ``POST .../repeats/search``. Errors come back as ``{"error", "hint"}``
(api/edge.py); the hint is shown in the CLI's words (``CliError.app_hint``, ``cli.hints``: a route as its command, a
JSON field as its flag).
The key travels only in the ``x-functions-key`` header (never in a URL, which proxies and logs keep) and is never
printed.
"""
from __future__ import annotations

import os
import re
import socket
import ssl
import sys
import time
from typing import Any, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from cli.config import LOOPBACK_HOSTS, Config, config_path
from cli.errors import CliError
from cli.hints import with_task_id

DEFAULT_TIMEOUT_S = 60.0
# GET /api/tasks may work up to api.starters.INSTANCE_LIST_TIMEOUT_S (200 s) before it answers its own 503 with what
# to do, inside Azure's 230 s for an HTTP response: the CLI waits longer than both, so the app's answer is shown. So
# does a terminate (its done files' writes, up to api.starters.POST_ANSWER_S).
LIST_TIMEOUT_S = 240.0
# Transient failures (a connection dropped, an instance scaling out, the platform throttling) are tried again: at most
# this many requests, waiting the answer's Retry-After (at most RETRY_AFTER_MAX_S) or a backoff. The app's own 429
# and 503, which carry its {"error", "hint"}, are its answer and are shown at once.
ATTEMPTS = 5
RETRY_AFTER_MAX_S = 300.0
_BACKOFF_S = (2.0, 5.0, 15.0, 30.0)
# Retried for any request: the request did not run (429 too many tasks, 503 unavailable). Retried only for a request
# that may run twice (GETs, DELETE, and POST /api/tasks, whose task id is the request's): 500, 502 (also Azure's answer
# when a function took more than 230 s, which went on running), 504, a timeout or a dropped connection.
_NOT_RUN = frozenset({429, 503})
_TASK_ID = re.compile(r"task-[0-9a-f]{20}")
_MAYBE_RUN = frozenset({500, 502, 504})
TOKEN_MARGIN_S = 300.0  # a token is renewed this long before it expires (Entra ID access tokens live 60-90 minutes)


class TokenSource:
    """Bearer tokens for the app's Entra ID application (Easy Auth's ``allowedAudiences`` holds ``api://<id>``), from
    the signed-in Azure identity (``DefaultAzureCredential``: az login, environment, managed identity), renewed
    ``TOKEN_MARGIN_S`` before they expire: a ``--wait`` of hours outlives any one token."""

    def __init__(self, client_id: str, credential: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.scope = f"api://{client_id}/.default"
        self._credential = credential
        self._clock = clock
        self._token = ""
        self._expires = 0.0

    def __call__(self) -> str:
        if not self._token or self._clock() > self._expires - TOKEN_MARGIN_S:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
            try:
                got = self._credential.get_token(self.scope)
            except Exception as exc:  # noqa: BLE001 - azure-identity raises several kinds; all mean the same here
                raise CliError(f"cannot get a token for {self.scope} from your Azure sign-in ({type(exc).__name__})",
                               "sign in (az login) with an account the app's Entra ID application lets in, or pass "
                               "--token") from None
            self._token, self._expires = str(got.token), float(got.expires_on)
        return self._token


def _api_error(resp: requests.Response) -> tuple[str, str]:
    """The ``{"error", "hint"}`` of an error answer, or ("", "") when the body is not one."""
    try:
        body = resp.json()
    except ValueError:
        return "", ""
    if isinstance(body, dict):
        return str(body.get("error") or ""), str(body.get("hint") or "")
    return "", ""


class ApiClient:
    def __init__(self, config: Config, timeout_s: float = DEFAULT_TIMEOUT_S,
                 session: requests.Session | None = None, tokens: Callable[[], str] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base = config.require_url()
        scheme, host = urlsplit(self.base).scheme, urlsplit(self.base).hostname or ""
        if (scheme == "http" and host not in LOOPBACK_HOSTS
                and (config.key or config.token or config.auth_client_id)):
            raise CliError(f"{self.base} is plain http: the function key or token would cross the network unencrypted",
                           "use the app's https:// address (Azure serves only https; http:// is for a local devhost)")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = "trapbatch-cli"
        if config.key:
            self.session.headers["x-functions-key"] = config.key
        if config.token:
            self.session.headers["Authorization"] = f"Bearer {config.token}"
        self.tokens = tokens or (TokenSource(config.auth_client_id) if config.auth_client_id and not config.token
                                 else None)
        self.sleep = sleep
        self._has_key = bool(config.key)
        self._has_token = bool(config.token or self.tokens)

    def __repr__(self) -> str:  # never the key
        return f"ApiClient({self.base!r})"

    # ------------------------------------------------------------------ routes

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        retried: set[int] = set()
        try:  # the same request finds the same task, so it is tried again
            return self._call("POST", "/api/tasks", json=body, repeatable=True, retried=retried)
        except CliError as exc:
            # A re-run whose first POST started it but whose answer was lost (a timeout, a dropped connection): the
            # POST tried again finds it running (409), which is the answer the first POST would have given
            found = _TASK_ID.search(exc.message)
            if body.get("rerun") and retried and " 409: " in exc.message and "still running" in exc.message and found:
                return {"id": found.group(0), "started": True, "hint": "started by the first try of this request, "
                        "whose answer was lost; this one found it running"}
            raise

    def list(self, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", "/api/tasks", params={"limit": str(limit)}, timeout_s=max(self.timeout_s,
                                                                                            LIST_TIMEOUT_S))

    def status(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{_seg(task_id)}")

    def results(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{_seg(task_id)}/results")

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/cancel")

    def terminate(self, task_id: str, reason: str = "", target: str = "task") -> dict[str, Any]:
        """``target``: the task's run ("task", sent as no field), or its repeat "removal" or "search"."""
        body = {**({"reason": reason} if reason else {}), **({"target": target} if target != "task" else {})}
        # the app writes the run's done files before its 202, up to its answer deadline (api.terminated_answers):
        # waited for as the task list is (not repeatable: sent again, a terminate made is answered 409)
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/terminate", json=body or None,
                          timeout_s=max(self.timeout_s, LIST_TIMEOUT_S))

    def confirm(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/confirm")

    def repeats(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{_seg(task_id)}/repeats")

    def choose_repeats(self, task_id: str, choice: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/repeats", json=choice)

    def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/previews", json={"threshold": threshold})
    def delete_task(self, task_id: str, retried: set[int] | None = None) -> dict[str, Any]:
        """``DELETE /api/tasks/{id}``: one request (the app answers within ``api.task_delete.DELETE_BUDGET_S`` of
        deleting, so the list's longer timeout); the caller sends it again while the answer says ``deleted: false``.
        ``retried``: the tries the app may have run though their answers were lost (``_call``)."""
        return self._call("DELETE", f"/api/tasks/{_seg(task_id)}", timeout_s=max(self.timeout_s, LIST_TIMEOUT_S),
                          retried=retried)

    def delete_previews(self, task_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/tasks/{_seg(task_id)}/previews")

    def search_repeats(self, task_id: str, options: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/repeats/search", json=options)

    # ------------------------------------------------------------------ transport

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None,
              timeout_s: float | None = None, repeatable: bool = False,
              retried: set[int] | None = None) -> dict[str, Any]:
        """One API call, tried again on transient failures (``ATTEMPTS``): any request the app did not run (429,
        503), and a request that may run twice (``repeatable``, GET and DELETE) also on 500/502/504, a timeout or a
        dropped connection. The wait is the app's ``Retry-After`` where it gives one."""
        repeatable = repeatable or method in ("GET", "DELETE")
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                resp = self._send(method, path, json, params, timeout_s or self.timeout_s)
            except CliError as exc:
                if last or not repeatable or not getattr(exc, "transient", False):
                    raise
                self._pause(attempt, None, exc.message)
                if retried is not None:  # the app may have run this try: the caller may need to know
                    retried.add(attempt)
                continue
            transient = resp.status_code in _NOT_RUN or (repeatable and resp.status_code in _MAYBE_RUN)
            # the app's own refusal ({"error", "hint"}: too many running tasks, an instance list too slow to read)
            # is its answer, shown at once; a platform's (the front end's, a host scaling out) is tried again, and so
            # is the app's own 503 with Retry-After (its storage or task hub busy: it asks to be asked again)
            app_says_retry = resp.status_code == 503 and bool(resp.headers.get("Retry-After"))
            if transient and (not _api_error(resp)[0] or app_says_retry):
                if not last:
                    self._pause(attempt, resp.headers.get("Retry-After"), f"{method} {path} answered "
                                f"{resp.status_code}")
                    if retried is not None and resp.status_code not in _NOT_RUN:
                        retried.add(attempt)
                    continue
            return self._answer(resp, method, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, attempt: int, retry_after: str | None, why: str) -> None:
        wait = _BACKOFF_S[min(attempt, len(_BACKOFF_S)) - 1]
        if retry_after and retry_after.strip().isdigit():
            wait = min(float(retry_after), RETRY_AFTER_MAX_S)
        print(f"trapbatch: {why}; trying again in {wait:.0f} s ({attempt + 1}/{ATTEMPTS})", file=sys.stderr,
              flush=True)
        self.sleep(wait)

    def _send(self, method: str, path: str, json: Any, params: dict[str, str] | None,
              timeout_s: float) -> requests.Response:
        url = self.base + path
        headers = {"Authorization": f"Bearer {self.tokens()}"} if self.tokens is not None else None
        try:
            # no redirects: requests would turn a POST into a GET on a 301 and forward x-functions-key to wherever
            # the redirect points (its rebuild_auth strips only Authorization)
            resp = self.session.request(method, url, json=json, params=params, timeout=timeout_s, headers=headers,
                                        allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            if _plain_http(exc):  # an https:// address whose server answered in plain http (a local devhost)
                plain = urlunsplit(urlsplit(self.base)._replace(scheme="http"))
                raise CliError(f"{self.base} does not speak https: its server answered in plain http",
                               f"for a local devhost (it serves plain http) use {plain}; an Azure app's address is "
                               "https://<app>.azurewebsites.net, without a port (check --url, TRAPBATCH_URL or url "
                               f"in {config_path(os.environ)})") from None
            raise CliError(f"TLS with {self.base} failed: {type(exc).__name__} ({_ssl_reason(exc) or 'no reason'})",
                           "check the address (https:// for Azure, http:// for a local devhost); a certificate not "
                           "trusted behind a proxy that inspects TLS: set REQUESTS_CA_BUNDLE to its CA file") from None
        except requests.exceptions.Timeout:
            raise _transient(CliError(f"{self.base} did not answer {method} {path} within {timeout_s:.0f} s",
                                      "retry; if it keeps happening the app may be scaling out or overloaded: look "
                                      "at its log (Application Insights, or devhost.log)")) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:  # the network: may pass on its own
            host = urlsplit(self.base).hostname or ""
            if _unknown_host(exc):  # DNS says the name does not exist: a typo, which no wait heals (a resolver
                # that cannot answer now says EAI_AGAIN, "temporary failure", and is tried again below)
                raise CliError(f"cannot reach {self.base}: DNS knows no host {host}",
                               "check the host name in --url, TRAPBATCH_URL or url in "
                               f"{config_path(os.environ)} (an Azure app's: az functionapp show -g <group> -n <app> "
                               "--query defaultHostName)") from None
            if _refused(exc) and host in LOOPBACK_HOSTS:
                # nothing listens on this machine: no wait heals that (a cold Azure app may refuse for a moment,
                # a devhost that is not started does not start by itself)
                raise CliError(f"cannot reach {self.base}: nothing is listening there (connection refused)",
                               "is devhost running? python -m devhost --with-azurite (it prints the address to use); "
                               "or check the port in --url, TRAPBATCH_URL or url in "
                               f"{config_path(os.environ)}") from None
            raise _transient(CliError(f"cannot reach {self.base} ({type(exc).__name__})",
                                      "check the address (--url, TRAPBATCH_URL or url in "
                                      f"{config_path(os.environ)}) and that the app or devhost is running "
                                      "(python -m devhost prints its address)")) from None
        except requests.exceptions.RequestException as exc:  # a URL or header requests refuses: never heals
            raise CliError(f"cannot send {method} {path} to {self.base} ({type(exc).__name__})",
                           "check the address (--url, TRAPBATCH_URL or url in "
                           f"{config_path(os.environ)}; e.g. https://<app>.azurewebsites.net, or "
                           "http://127.0.0.1:7071 for devhost) and that the key or token has no line break") from None
        if 300 <= resp.status_code < 400:
            where = resp.headers.get("Location", "?")
            raise CliError(f"{method} {path} was redirected ({resp.status_code}) to {where}",
                           "use that address as --url / TRAPBATCH_URL (Azure redirects http:// to https://); the CLI "
                           "follows no redirect, so the key never goes where you did not point it")
        return resp

    def _answer(self, resp: requests.Response, method: str, path: str) -> dict[str, Any]:
        if resp.status_code < 400:
            try:
                body = resp.json()
            except ValueError:
                raise CliError(f"{method} {path} answered {resp.status_code} with something that is not JSON",
                               f"is {self.base} a trapbatch app? Its API is under /api/tasks") from None
            if not isinstance(body, dict):
                raise CliError(f"{method} {path} answered an unexpected {type(body).__name__}",
                               f"is {self.base} a trapbatch app?")
            return body
        raise self._error(resp, method, path)

    def _error(self, resp: requests.Response, method: str, path: str) -> CliError:
        code = resp.status_code
        error, hint = _api_error(resp)
        hint = with_task_id(hint, path)  # "GET /api/tasks/<id>/repeats" of a request about that task: its id
        what = f"{method} {path} answered {code}" + (f": {error}" if error else "")
        if code == 401:
            if error:  # the app's own 401 (a caller identity is required): its hint says how to sign in
                return CliError(what, hint or "sign in: pass --token or set TRAPBATCH_TOKEN", app_hint=True)
            # no app answer: the host refused the key, or App Service Authentication (Easy Auth, infra's
            # authClientId) refused the request before the app ran: it wants an Entra ID token as well as the key
            sent = " and ".join(w for w, has in (("function key", self._has_key), ("token", self._has_token)) if has)
            return CliError(f"{self.base} refused the request ({sent or 'no key or token was sent'})",
                            "a function key: set TRAPBATCH_KEY, pass --key, or put key = \"...\" into the config "
                            "file (Azure: "
                            "az functionapp keys list -g <group> -n <app> --query functionKeys.default -o tsv; "
                            "devhost prints its key at start); where the app has App Service Authentication "
                            "(infra's authClientId) a token too: --auth-client-id <that id> "
                            "(TRAPBATCH_AUTH_CLIENT_ID) gets and renews one from your Azure sign-in (az login)")
        if code == 403 and not error:
            # the platform's refusal before the app ran: App Service answers "Error 403 - This web app is stopped."
            # for an app stopped (or disabled by a spending or quota limit), and a plain 403 for a request its access
            # restrictions refuse (learn.microsoft.com, archive/blogs/waws "Azure Web Apps: Error 403 - This web app
            # is stopped"); the app's own 403 (another caller's task) carries its {"error", "hint"}
            return CliError(f"{method} {path} answered 403 without an explanation from the app",
                            "Azure refused it before the app ran: an app that is stopped (az functionapp start -g "
                            "<group> -n <app>; a subscription's spending or quota limit stops it too) or whose "
                            "access restrictions or private endpoint keep this network out answers so; else check "
                            f"that {self.base} is the trapbatch app's address")
        if code == 429:
            after = resp.headers.get("Retry-After")
            return CliError(what, (hint or "wait, then retry") + (f" (the app says: retry after {after} s)"
                                                                 if after else ""), app_hint=True)
        if code < 500 and not error:  # the app answers every other 4xx with its {"error", "hint"}: another server
            # answered (a wrong port: Azurite's blob service answers GET /api/tasks with 400), or a wrong path prefix
            return CliError(f"{method} {path} answered {code} without an explanation",
                            f"is {self.base} the trapbatch app (its API is under /api/tasks), and as new as this CLI? "
                            "If not, another server answers there: check the port and the path in --url, "
                            "TRAPBATCH_URL or url in "
                            f"{config_path(os.environ)}")
        if code >= 500:
            return CliError(what or f"{method} {path} answered {code}",
                            hint or "the app failed: retry, and if it persists look at its log (Application "
                            "Insights, or devhost.log) around this time", app_hint=True)
        # a 409 is the task's state refusing the request (validation answers 400): its prose is about the task
        return CliError(what, hint or "check the request (trapbatch --help, docs/cli.md)", app_hint=True,
                        about_task=code == 409 and path.startswith("/api/tasks/"))


def _refused(exc: BaseException) -> bool:
    """Whether a connection error was a refusal (nothing listens at the port): requests wraps urllib3's
    ``NewConnectionError`` (in ``MaxRetryError.reason``), raised from the socket's ``ConnectionRefusedError``."""
    return _caused_by(exc, lambda item: isinstance(item, ConnectionRefusedError))


# getaddrinfo's answers for a name that does not exist (NXDOMAIN; EAI_NODATA: it exists without an address), as
# opposed to EAI_AGAIN, a resolver that cannot answer now
_NO_SUCH_NAME = frozenset(code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None)


def _unknown_host(exc: BaseException) -> bool:
    """Whether a connection error was DNS saying the host does not exist: requests wraps urllib3's
    ``NameResolutionError`` (in ``MaxRetryError.reason``), raised from the resolver's ``socket.gaierror``."""
    return _caused_by(exc, lambda item: isinstance(item, socket.gaierror) and item.errno in _NO_SUCH_NAME)


# OpenSSL's reasons for a server that answered a TLS hello in plain text: "wrong version number" (1.1, 3.0, 3.1),
# "record layer failure" or "packet length too long" (3.2 and later read the text as a record's header)
_PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})


def _ssl_reason(exc: BaseException) -> str:
    """The OpenSSL reason (``WRONG_VERSION_NUMBER``, ``CERTIFICATE_VERIFY_FAILED``) of the ``ssl.SSLError`` that
    requests wraps (``SSLError`` of urllib3's ``SSLError`` of it), "" when there is none."""
    reasons: list[str] = []

    def has_reason(item: BaseException) -> bool:
        if isinstance(item, ssl.SSLError) and item.reason:
            reasons.append(str(item.reason))
            return True
        return False

    _caused_by(exc, has_reason)
    return reasons[0] if reasons else ""


def _plain_http(exc: BaseException) -> bool:
    return _ssl_reason(exc) in _PLAIN_HTTP_REASONS


def _caused_by(exc: BaseException, found: Callable[[BaseException], bool]) -> bool:
    """Whether ``exc`` or an exception it wraps (its args, urllib3's ``reason``, its cause or context) is ``found``."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if found(item):
            return True
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


def _transient(error: CliError) -> CliError:
    """Mark ``error`` as a failure that may pass on its own (a timeout, a connection that could not be made)."""
    error.transient = True  # type: ignore[attr-defined]
    return error


def _seg(value: str) -> str:
    """One path segment, escaped: an id typed by a person must not turn into another route."""
    return quote(value, safe="")
