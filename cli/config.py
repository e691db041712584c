"""Where the CLI finds the app and its credentials: flags, then environment, then a config file.

    --url / TRAPBATCH_URL / url                     the app's base address, e.g. https://func-api-xyz.azurewebsites.net
    --key / TRAPBATCH_KEY / key                     a function key (az functionapp keys list; devhost prints its own)
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
        if not self.url:
            raise CliError("no trapbatch address is configured",
                           "pass --url, set TRAPBATCH_URL, or write url = \"https://<app>.azurewebsites.net\" into "
                           f"{config_path(os.environ)} (devhost prints its address at start, e.g. http://127.0.0.1:7071)",
                           EXIT_USAGE)
        return self.url.rstrip("/")


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
