"""Where the CLI finds the app and its credentials: flags, then environment, then a config file.

    --url / TRAPBATCH_URL / url                     the app's base address, e.g. https://func-api-xyz.azurewebsites.net
    --key / TRAPBATCH_KEY / key                     a function key (the command that prints it: docs/cli.md;
                                                    devhost prints its own)
    --token / TRAPBATCH_TOKEN / token               a bearer token, where the app identifies callers (easyauth)
    --auth-client-id / TRAPBATCH_AUTH_CLIENT_ID / auth_client_id
                                                    the app's Entra ID application (infra's authClientId): the CLI
                                                    then gets a token for api://<id> from your Azure sign-in and
                                                    renews it before it expires (instead of a fixed --token)
    --storage-connection / TRAPBATCH_STORAGE_CONNECTION / storage_connection
                                                    how ``results`` reads blobs: a connection string (Azurite locally);
                                                    without one, the signed-in Azure identity (DefaultAzureCredential)

The config file is TOML, ``$TRAPBATCH_CONFIG`` or ``$XDG_CONFIG_HOME/trapbatch/config.toml`` (default
``~/.config/trapbatch/config.toml``). Secrets (key, token, connection string) are never printed: ``Config``'s repr
and ``describe`` show only where each came from.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import SplitResult, urlsplit

from cli.errors import EXIT_USAGE, CliError

FIELDS = {"url": "TRAPBATCH_URL", "key": "TRAPBATCH_KEY", "token": "TRAPBATCH_TOKEN",
          "auth_client_id": "TRAPBATCH_AUTH_CLIENT_ID", "storage_connection": "TRAPBATCH_STORAGE_CONNECTION"}
SECRET = frozenset({"key", "token", "storage_connection"})


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("TRAPBATCH_CONFIG"):
        return Path(env["TRAPBATCH_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "trapbatch" / "config.toml"


@dataclass(frozen=True)
class Config:
    url: str = ""
    key: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    auth_client_id: str = ""
    storage_connection: str = field(default="", repr=False)
    sources: Mapping[str, str] = field(default_factory=dict)  # field -> "flag" | "env NAME" | "file PATH"

    def describe(self) -> dict[str, str]:
        """What is set and from where, with secrets shown only as set/unset."""
        out = {}
        for name in FIELDS:
            value = getattr(self, name)
            shown = ("set" if value else "not set") if name in SECRET else (value or "not set")
            out[name] = f"{shown}" + (f" ({self.sources[name]})" if name in self.sources else "")
        return out

    def require_url(self) -> str:
        """The app's base address (``check_url``): a usage error before anything is sent when there is none or it
        is not one."""
        if not self.url:
            raise CliError("no trapbatch address is configured",
                           "pass --url, set TRAPBATCH_URL, or write url = \"https://<app>.azurewebsites.net\" into "
                           f"{config_path(os.environ)} (devhost prints its address at start, e.g. http://127.0.0.1:7071)",
                           EXIT_USAGE)
        return check_url(self.url, self.sources.get("url", ""))


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # a local devhost: plain http allowed, nothing to wait for
EXAMPLES = "https://<app>.azurewebsites.net for Azure, http://127.0.0.1:7071 for devhost"


def _where(source: str) -> str:
    """Where a url came from (``Config.sources``): the flag, the variable, or the config file's url."""
    if source.startswith("env "):
        return source[4:]
    if source.startswith("file "):
        return f"url in {source[5:]}"
    return "--url"


def _fix(source: str, value: str) -> str:
    """How to give ``value`` where the url came from: a person fixes the place that holds the typo."""
    if source.startswith("env "):
        return f"set {source[4:]}={value}"
    if source.startswith("file "):
        return f'write url = "{value}" in {source[5:]}'
    return f"pass --url {value}"


def check_url(url: str, source: str = "") -> str:
    """``url`` without a trailing slash when it is an app's base address: http or https, a host, no query, fragment,
    user or final ``/api`` (a path in front stays: a gateway may route the app by one). Why here: requests refused ``127.0.0.1:7071`` (no scheme) only when sending, and the transport
    took that for a network failure and waited 52 s over its retries before the same error; ``.../api`` reached the
    app as ``/api/api/tasks`` and came back as a 404 that did not say why. ``source`` (``Config.sources``) names
    where to fix it."""
    shown, where = url.strip(), _where(source)
    named = f"the app's address {shown!r}" if "@" not in shown else "the app's address"  # a password is not shown
    if "://" not in shown:  # 127.0.0.1:7071, func-api-x.azurewebsites.net
        guess = urlsplit("//" + shown)
        host = _hostname(guess) or ""
        scheme = "http" if host in LOOPBACK_HOSTS else "https"
        meant = f"{scheme}://{guess.netloc.rsplit('@', 1)[-1] or shown}"
        raise CliError(f"{named} ({where}) has no http:// or https://", f"{_fix(source, meant)} ({EXAMPLES})",
                       EXIT_USAGE)
    parts = urlsplit(shown)
    base = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    if parts.scheme.lower() not in ("http", "https"):
        raise CliError(f"{named} ({where}) is not http:// or https://",
                       f"{_fix(source, '<address>')}, e.g. {EXAMPLES}", EXIT_USAGE)
    if not _hostname(parts):
        raise CliError(f"{named} ({where}) names no host or a port that is none",
                       f"{_fix(source, '<address>')}, e.g. {EXAMPLES}", EXIT_USAGE)
    if parts.username is not None or parts.password is not None:
        raise CliError(f"the app's address ({where}) carries a user name or password",
                       f"{_fix(source, base)}; the key goes in --key, TRAPBATCH_KEY or key in the config file",
                       EXIT_USAGE)
    path = parts.path.rstrip("/")
    if path.endswith("/api") or parts.query or parts.fragment:
        fixed = base + path.removesuffix("/api")
        why = ("ends in /api, which the CLI adds itself (it asks for /api/tasks...)" if path.endswith("/api")
               else "has a query or fragment: the app's address is its scheme, host and any path in front of /api")
        raise CliError(f"{named} ({where}) {why}", f"drop it: {_fix(source, fixed)}",
                       EXIT_USAGE)
    # any other path stays: a gateway (API Management, Front Door, a reverse proxy) may route the app by a path
    return base + path


def _hostname(parts: SplitResult) -> str | None:
    """The host of ``parts``, None when there is none or its port is no port (``:99999``, ``:abc``)."""
    try:
        parts.port
    except ValueError:
        return None
    return parts.hostname or None


def _read_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CliError(f"cannot read the config file {path}: {type(exc).__name__}: {exc}",
                       'fix it (TOML, e.g. url = "https://..." and key = "...") or remove it', EXIT_USAGE) from None
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise CliError(f"unknown setting(s) in {path}: {', '.join(unknown)}", f"allowed: {', '.join(FIELDS)}",
                       EXIT_USAGE)
    bad = sorted(k for k, v in data.items() if not isinstance(v, str))
    if bad:
        raise CliError(f"setting(s) {', '.join(bad)} in {path} must be strings", 'quote them: key = "..."',
                       EXIT_USAGE)
    return {k: str(v) for k, v in data.items()}


def resolve(flags: Mapping[str, str | None], env: Mapping[str, str] | None = None) -> Config:
    """The configuration from ``flags`` (None: not given), then ``env``, then the config file."""
    env = os.environ if env is None else env
    path = config_path(env)
    from_file = _read_file(path)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, var in FIELDS.items():
        if flags.get(name):
            values[name], sources[name] = str(flags[name]), "flag"
        elif env.get(var):
            values[name], sources[name] = env[var], f"env {var}"
        elif from_file.get(name):
            values[name], sources[name] = from_file[name], f"file {path}"
    return Config(**values, sources=sources)
