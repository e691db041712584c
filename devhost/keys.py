"""Function keys, as the Functions host enforces them (azure-functions-host
``src/WebJobs.Script.WebHost/Security/Authentication/Keys/AuthenticationLevelHandler.cs``).

A request's key is the ``x-functions-key`` header or, only when that header is absent, the ``code`` query parameter
(ASP.NET query names are case-insensitive). A route with ``auth_level=FUNCTION`` needs a function key, a host key or
the master key; ``ADMIN`` needs the master key; ``ANONYMOUS`` needs nothing. Otherwise the host answers 401. The Durable
extension's public webhooks (``/runtime/webhooks/durabletask/``) need its system key (``durabletask_extension``) or the
master key; the management URLs the extension hands out carry it as ``code=``.

devhost has one host key (``function_key``: ``TRAPBATCH_DEVHOST_FUNCTION_KEY`` or generated), a master key and a
system key derived from it (so they are stable while the function key is).

Callers (``--callers FILE`` / ``TRAPBATCH_DEVHOST_CALLERS``): a JSON file ``{"<function key>": {"id": ..., "name":
..., "roles": [...]}}``. Each of its keys is a further function key, and a request made with one carries that
caller's identity as App Service Authentication (Easy Auth) would set it: ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON
``{auth_typ, claims, name_typ, role_typ}``), ``-ID``, ``-NAME``, ``-IDP`` (``devhost.http_server`` strips
client-supplied copies first, as the platform does). See api/callers.py and devhost/README.md.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

FUNCTION_KEY_ENV = "TRAPBATCH_DEVHOST_FUNCTION_KEY"
CALLERS_ENV = "TRAPBATCH_DEVHOST_CALLERS"
PRINCIPAL_PREFIX = "x-ms-client-principal"  # X-MS-CLIENT-PRINCIPAL, -ID, -NAME, -IDP: only the platform sets these
OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"


def _derive(key: str, purpose: str) -> str:
    return hmac.new(key.encode(), purpose.encode(), hashlib.sha256).hexdigest()[:40]


class CallersFileError(ValueError):
    """The callers file is not ``{"<key>": {"id": str, "name": str, "roles": [str]}}``."""


@dataclass(frozen=True)
class CallerIdentity:
    id: str
    name: str = ""
    roles: tuple[str, ...] = ()

    def principal_headers(self) -> dict[str, str]:
        """The headers App Service Authentication sets for a caller signed in with Microsoft Entra ID."""
        claims = [{"typ": OBJECT_ID_CLAIM, "val": self.id}, {"typ": "name", "val": self.name}]
        claims += [{"typ": "roles", "val": role} for role in self.roles]
        principal = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
        return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode(),
                "X-MS-CLIENT-PRINCIPAL-ID": self.id, "X-MS-CLIENT-PRINCIPAL-NAME": self.name,
                "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}


def parse_callers(data: Any) -> dict[str, CallerIdentity]:
    if not isinstance(data, dict):
        raise CallersFileError('the callers file must be a JSON object {"<function key>": {"id": ..., "name": ..., '
                               '"roles": [...]}}')
    out = {}
    for key, entry in data.items():
        if not isinstance(key, str) or len(key) < 16:
            raise CallersFileError(f"callers file: key {key!r} is shorter than 16 characters")
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise CallersFileError(f"callers file: the entry for key {key[:4]}... needs a non-empty string 'id'")
        roles = entry.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise CallersFileError(f"callers file: 'roles' of {entry['id']!r} must be a list of strings")
        name = entry.get("name", "")
        out[key] = CallerIdentity(id=entry["id"], name=name if isinstance(name, str) else "", roles=tuple(roles))
    return out


def load_callers(path: str | Path) -> dict[str, CallerIdentity]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CallersFileError(f"cannot read the callers file {path}: {exc}") from None
    return parse_callers(data)


@dataclass(frozen=True)
class Keys:
    function_key: str
    callers: Mapping[str, CallerIdentity] = field(default_factory=dict)

    @property
    def master_key(self) -> str:
        return _derive(self.function_key, "master")

    @property
    def system_key(self) -> str:
        """The Durable extension's system key (``durabletask_extension``)."""
        return _derive(self.function_key, "durabletask_extension")

    @classmethod
    def from_env(cls, function_key: str | None = None, environ: Mapping[str, str] = os.environ,
                 callers: Mapping[str, CallerIdentity] | None = None) -> "Keys":
        key = function_key or environ.get(FUNCTION_KEY_ENV, "") or secrets.token_urlsafe(32)
        return cls(key, dict(callers or {}))

    @staticmethod
    def presented(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The key a request presents: the header, else (only when the header is absent) ``code``."""
        value = headers.get(KEY_HEADER)
        if value is None:
            value = next((v for k, v in query.items() if k.lower() == KEY_QUERY), None)
        return value

    def caller(self, headers: Mapping[str, str], query: Mapping[str, str]) -> CallerIdentity | None:
        """The callers-file identity whose key the request presents, if any."""
        value = self.presented(headers, query)
        if not value:
            return None
        return next((ident for key, ident in self.callers.items() if hmac.compare_digest(value, key)), None)

    def level(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The authorization level a request's key gives: admin, function, system or anonymous."""
        value = self.presented(headers, query)
        if not value:
            return "anonymous"
        if hmac.compare_digest(value, self.master_key):
            return "admin"
        if hmac.compare_digest(value, self.function_key):
            return "function"
        if hmac.compare_digest(value, self.system_key):
            return "system"
        if self.caller(headers, query) is not None:  # a callers-file key is a further function key
            return "function"
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
