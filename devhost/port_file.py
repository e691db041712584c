"""``python -m devhost --port 0 --port-file PATH``: devhost tells its caller the port it bound, so no caller picks one.

Why: a caller that picks a "free" port (bind port 0, close it) and hands it to a devhost it starts leaves a window in
which any other program may bind that port first: under ``pytest -n`` on a loaded machine another module's Azurite
did (a CI run's blob requests reached another module's ``azurite-table``), and a wait that only asks whether
*something* answers HTTP there passes on the stranger. With ``--port 0`` the kernel hands devhost a port in the same
``bind`` that takes it, and the port file says which, written only once devhost listens on it.

The file is one JSON object, ``{"port": 51234, "pid": 4242, "base_url": "http://127.0.0.1:51234"}``, replaced
atomically (a reader sees all of it or none) and removed when devhost stops cleanly. ``pid`` is the devhost process's:
a reader compares it with the process it started, so a file left by an earlier, killed devhost is never taken for
the new one's. This module must not start anything; ``wait_for_port_file`` only watches.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any


def write_port_file(path: Path, port: int, base_url: str) -> None:
    """Write ``path`` (atomically: a temporary file beside it, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid(), "base_url": base_url}) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_port_file(path: Path) -> None:
    """Remove ``path`` if it still names this process (a devhost started later with the same file keeps its own)."""
    if (read_port_file(path) or {}).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def read_port_file(path: Path) -> dict[str, Any] | None:
    """The file's object, or ``None`` while there is none (or it is not yet a whole one)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class DevhostDidNotStart(RuntimeError):
    """The devhost process exited, or wrote no port file in time; the message carries its log's tail."""


def wait_for_port_file(path: Path, proc: subprocess.Popen[Any], timeout_s: float,
                       log_path: Path | None = None) -> str:
    """Wait until the devhost process ``proc`` has written ``path``; return its base URL (``http://127.0.0.1:N``).

    Only a file whose ``pid`` is ``proc``'s counts (one from an earlier devhost is stale); ``proc`` exiting first
    fails at once, with the tail of ``log_path``. Generous ``timeout_s`` on loaded machines: devhost imports the app
    and the Durable SDK before it listens (seconds idle, tens of seconds at 5x load)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = read_port_file(path)
        if found and found.get("pid") == proc.pid and isinstance(found.get("base_url"), str):
            return str(found["base_url"])
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
            what = f"exited with code {proc.returncode}" if proc.returncode is not None else \
                f"wrote no port file within {timeout_s:.0f} s"
            raise DevhostDidNotStart(f"devhost (pid {proc.pid}) {what} ({path}). Its log:\n{tail}")
        time.sleep(0.1)
