"""Function keys, as the Functions host enforces them (azure-functions-host
``src/WebJobs.Script.WebHost/Security/Authentication/Keys/AuthenticationLevelHandler.cs``).

A request's key is the ``x-functions-key`` header or, only when that header is absent, the ``code`` query parameter
(ASP.NET query names are case-insensitive). A route with ``auth_level=FUNCTION`` needs a function key, a host key or
the master key; ``ADMIN`` needs the master key; ``ANONYMOUS`` needs nothing. Otherwise the host answers 401. The Durable
extension's public webhooks (``/runtime/webhooks/durabletask/``) need its system key (``durabletask_extension``) or the
master key; the management URLs the extension hands out carry it as ``code=``.

devhost has one host key (``function_key``: ``TRAPBATCH_DEVHOST_FUNCTION_KEY`` or generated), a master key and a
system key derived from it (so they are stable while the function key is).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

FUNCTION_KEY_ENV = "TRAPBATCH_DEVHOST_FUNCTION_KEY"
KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"


def _derive(key: str, purpose: str) -> str:
    return hmac.new(key.encode(), purpose.encode(), hashlib.sha256).hexdigest()[:40]


@dataclass(frozen=True)
class Keys:
    function_key: str

    @property
    def master_key(self) -> str:
        return _derive(self.function_key, "master")

    @property
    def system_key(self) -> str:
        """The Durable extension's system key (``durabletask_extension``)."""
        return _derive(self.function_key, "durabletask_extension")

    @classmethod
    def from_env(cls, function_key: str | None = None, environ: Mapping[str, str] = os.environ) -> "Keys":
        key = function_key or environ.get(FUNCTION_KEY_ENV, "") or secrets.token_urlsafe(32)
        return cls(key)

    def level(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The authorization level a request's key gives: admin, function, system or anonymous."""
        value = headers.get(KEY_HEADER)
        if value is None:
            value = next((v for k, v in query.items() if k.lower() == KEY_QUERY), None)
        if not value:
            return "anonymous"
        if hmac.compare_digest(value, self.master_key):
            return "admin"
        if hmac.compare_digest(value, self.function_key):
            return "function"
        if hmac.compare_digest(value, self.system_key):
            return "system"
        return "anonymous"

    def allows(self, required: str, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether a request may call a route that requires ``required`` (anonymous, function, admin, system)."""
        if required == "anonymous":
            return True
        have = self.level(headers, query)
        if have == "admin":
            return True
        return have == required


def key_from_file_or_new(path: Path, function_key: str | None = None,
                         environ: Mapping[str, str] = os.environ) -> tuple[Keys, str]:
    """For ``python -m devhost``: the key given (argument, then ``TRAPBATCH_DEVHOST_FUNCTION_KEY``); else the one in
    ``path`` from an earlier run (keys persist on Azure too); else a new one, written to ``path`` (mode 0600).
    Returns the keys and a phrase saying where the key came from."""
    if function_key or environ.get(FUNCTION_KEY_ENV):
        return Keys.from_env(function_key, environ), ("--function-key" if function_key else f"${FUNCTION_KEY_ENV}")
    if path.exists() and path.read_text().strip():
        return Keys(path.read_text().strip()), f"kept in {path}"
    keys = Keys.from_env(None, {})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.function_key + "\n")
    return keys, f"generated, written to {path}"
