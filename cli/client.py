"""The trapbatch HTTP API as Python calls, with every failure turned into a ``CliError`` that says what to do next.

The routes (api/starters.py): ``POST/GET /api/tasks``, ``GET /api/tasks/{id}``, ``.../results``, ``POST .../cancel``,
``GET/POST .../repeats``, ``POST .../repeats/search``. Errors come back as ``{"error", "hint"}`` (api/edge.py); the hint is shown as it is. The key
travels only in the ``x-functions-key`` header (never in a URL, which proxies and logs keep) and is never printed.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import requests

from cli.config import Config, config_path
from cli.errors import CliError

DEFAULT_TIMEOUT_S = 60.0


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
                 session: requests.Session | None = None) -> None:
        self.base = config.require_url()
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = "trapbatch-cli"
        if config.key:
            self.session.headers["x-functions-key"] = config.key
        if config.token:
            self.session.headers["Authorization"] = f"Bearer {config.token}"
        self._has_key = bool(config.key)

    def __repr__(self) -> str:  # never the key
        return f"ApiClient({self.base!r})"

    # ------------------------------------------------------------------ routes

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/tasks", json=body)

    def list(self, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", "/api/tasks", params={"limit": str(limit)})

    def status(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{_seg(task_id)}")

    def results(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{_seg(task_id)}/results")

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/cancel")

    def confirm(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/confirm")

    def repeats(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{_seg(task_id)}/repeats")

    def choose_repeats(self, task_id: str, choice: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/repeats", json=choice)

    def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/previews", json={"threshold": threshold})
    def delete_previews(self, task_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/tasks/{_seg(task_id)}/previews")

    def search_repeats(self, task_id: str, options: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_seg(task_id)}/repeats/search", json=options)

    # ------------------------------------------------------------------ transport

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None) -> dict[str, Any]:
        url = self.base + path
        try:
            resp = self.session.request(method, url, json=json, params=params, timeout=self.timeout_s)
        except requests.exceptions.SSLError as exc:
            raise CliError(f"TLS with {self.base} failed: {type(exc).__name__}",
                           "check the address (https:// for Azure, http:// for a local devhost)") from None
        except requests.exceptions.Timeout:
            raise CliError(f"{self.base} did not answer {method} {path} within {self.timeout_s:.0f} s",
                           "retry; if it keeps happening the app may be scaling out or overloaded: look at its "
                           "log (Application Insights, or devhost.log)") from None
        except requests.exceptions.RequestException as exc:
            raise CliError(f"cannot reach {self.base} ({type(exc).__name__})",
                           "check the address (--url, TRAPBATCH_URL or url in "
                           f"{config_path(os.environ)}) and that the app or devhost is running "
                           "(python -m devhost prints its address)") from None
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
        what = f"{method} {path} answered {code}" + (f": {error}" if error else "")
        if code == 401:
            if error:  # the app's own 401 (a caller identity is required): its hint says how to sign in
                return CliError(what, hint or "sign in: pass --token or set TRAPBATCH_TOKEN")
            return CliError(f"{self.base} refused the function key" if self._has_key
                            else f"{self.base} needs a function key and none was given",
                            "set TRAPBATCH_KEY, pass --key, or put key = \"...\" into the config file (Azure: az "
                            "functionapp keys list -g <group> -n <app>; devhost prints its key at start)")
        if code == 404 and not error:
            return CliError(f"{method} {path} answered 404 without an explanation",
                            f"is {self.base} the trapbatch app (its API is under /api/tasks)?")
        if code == 429:
            after = resp.headers.get("Retry-After")
            return CliError(what, (hint or "wait, then retry") + (f" (the app says: retry after {after} s)"
                                                                 if after else ""))
        if code >= 500:
            return CliError(what or f"{method} {path} answered {code}",
                            hint or "the app failed: retry, and if it persists look at its log (Application "
                            "Insights, or devhost.log) around this time")
        return CliError(what, hint or "check the request (trapbatch --help, docs/cli.md)")


def _seg(value: str) -> str:
    """One path segment, escaped: an id typed by a person must not turn into another route."""
    return quote(value, safe="")
