"""Start and stop the Azurite storage emulator that the demo, devhost and the tests use.

Why: every storage-touching piece of trapbatch is tested against real Azure Storage protocol (Azurite from npm,
installed into ``node_modules`` by ``make setup``), never an in-memory fake. This module owns the one way to launch it:
loopback only, free ports, telemetry off (Azurite otherwise tries to reach an Application Insights host), and stopped
by its PID. It never installs anything itself; it tells the user which command to run instead.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite could not be found or started; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_string(blob_port: int, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


def azurite_executable() -> Path:
    exe = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if exe.exists():
        return exe
    found = shutil.which("azurite")
    if found:
        return Path(found)
    raise AzuriteError(
        f"Azurite is not installed (looked for {exe}). Run `make setup` (it runs `npm install` in the repo root), "
        "or `npm install` yourself; Node 20+ is needed."
    )


@dataclass
class Azurite:
    """A running Azurite process."""

    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    table_port: int
    log_path: Path | None

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def __enter__(self) -> "Azurite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_listening(ports: list[int], proc: subprocess.Popen[bytes], deadline: float, log_path: Path | None) -> None:
    pending = set(ports)
    while pending:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise AzuriteError(f"Azurite exited with code {proc.returncode} while starting. Its log:\n{tail}")
        for port in list(pending):
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    pending.discard(port)
        if time.monotonic() > deadline:
            proc.kill()
            raise AzuriteError(f"Azurite did not listen on ports {sorted(pending)} within the time limit")
        time.sleep(0.1)


def start_azurite(
    location: Path | None = None,
    ports: tuple[int, int, int] | None = None,
    log_path: Path | None = None,
    timeout_s: float = 60.0,
) -> Azurite:
    """Start Azurite on 127.0.0.1.

    Args:
        location: a folder for persistent state; ``None`` keeps everything in memory (tests).
        ports: (blob, queue, table); ``None`` picks free ports.
        log_path: where Azurite's stdout/stderr go (default: discarded).
    """
    exe = azurite_executable()
    blob_port, queue_port, table_port = ports or (free_port(), free_port(), free_port())
    args = [
        str(exe), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
        "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
        "--tableHost", "127.0.0.1", "--tablePort", str(table_port),
    ]
    if location is None:
        args.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        args += ["--location", str(location)]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ})
    _wait_listening([blob_port, queue_port, table_port], proc, time.monotonic() + timeout_s, log_path)
    return Azurite(proc, blob_port, queue_port, table_port, log_path)
