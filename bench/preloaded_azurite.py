"""Azurite that holds a million real blobs: the benchmark's way past Azurite's O(N^2) PUTs (``bench/azurite_puts.py``).

``start_preloaded_azurite()`` starts Azurite as ``devhost.azurite.start_azurite`` does (in memory, one process per
service, loopback, free ports), except that the blob service runs from ``bench/azurite_preloaded_blob.js``: the same
Azurite server and store, which can also copy one blob under many names in one LokiJS batch. ``preload(container,
names)`` PUTs the first name through HTTP (Azurite makes that blob: its properties, etag and dates) and has Azurite
copy it under every other name. Everything after that (listings, reads, the task's own writes) goes through Azurite's
REST API and its own code, as for any blob.

Its lookups and listings are devhost's Azurite's (``devhost/azurite_blob.js``: a lookup starts from the index of
blob names, a listing sorts once per call). What stays Azurite's, not Azure's: each listing call still sorts every
blob under its prefix, and updates scan LokiJS's indexes; a benchmark's wall time and activity durations at this
size carry that cost; its CPU figures (the app's threads) do not. ``TRAPBATCH_BENCH_STOCK_AZURITE=1`` runs stock
Azurite's lookups and listings. Benchmark only.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from devhost.azurite import (PICK_TRIES, REPO_ROOT, SERVICES, Azurite, AzuriteError, PortReservation, PortTaken,
                             _wait_listening, azurite_executable, common_args)

LAUNCHER = Path(__file__).resolve().parent / "azurite_preloaded_blob.js"


class PreloadedAzurite(Azurite):
    """An ``Azurite`` whose blob service can be preloaded (module doc)."""

    def preload(self, connection_upload: Callable[[str, str, list[str]], float], container: str, names: list[str],
                timeout_s: float = 1800.0) -> float:
        """Create ``names`` in ``container`` as zero-byte blobs; returns the seconds it took.

        ``connection_upload(connection, container, names)`` PUTs blobs through HTTP (``bench.control_plane.upload``):
        it makes the container and the template blob."""
        if not names:
            return 0.0
        started = time.perf_counter()
        connection_upload(self.connection_string, container, names[:1])
        with tempfile.NamedTemporaryFile("w", suffix=".names", delete=False) as f:
            f.write("\n".join(names))
            names_file = f.name
        try:
            blob = self.processes["blob"]
            assert blob.stdin is not None and blob.stdout is not None
            blob.stdin.write((json.dumps({"container": container, "template": names[0],
                                          "names_file": names_file}) + "\n").encode())
            blob.stdin.flush()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                line = blob.stdout.readline().decode(errors="replace").strip()
                if not line:
                    if blob.poll() is not None:
                        raise AzuriteError(f"the preloading blob service exited with code {blob.returncode}")
                    continue
                if line.startswith("PRELOADED"):
                    return time.perf_counter() - started
                if line.startswith("ERROR"):
                    raise AzuriteError(f"preloading {container} failed: {line}")
            raise AzuriteError(f"preloading {len(names):,} blobs did not finish within {timeout_s:g} s")
        finally:
            Path(names_file).unlink(missing_ok=True)


def start_preloaded_azurite(heap_mb: int = 8192, timeout_s: float = 60.0) -> PreloadedAzurite:
    """Start Azurite in memory with a preloadable blob service; ``heap_mb`` is Node's heap limit for it (a million
    blob documents take about 1 GB); its ports are reserved (``PortReservation``) until it listens there, so no
    other program asking for a free port meanwhile (another pytest worker's Azurite) is handed one. Ports another
    program took all the same (one that binds fixed ports, or a platform where nothing can be held) are picked again,
    as ``start_azurite`` does."""
    for attempt in range(1, PICK_TRIES + 1):
        try:
            return _start_preloaded_once(heap_mb, timeout_s)
        except PortTaken:
            if attempt == PICK_TRIES:
                raise
    raise AssertionError("unreachable")


def _start_preloaded_once(heap_mb: int, timeout_s: float) -> PreloadedAzurite:
    held = PortReservation(len(SERVICES))
    ports = dict(zip(SERVICES, held.ports))
    common = common_args(None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    by_port: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        blob_args = ["node", f"--max-old-space-size={heap_mb}", str(LAUNCHER), *common,
                     "--blobHost", "127.0.0.1", "--blobPort", str(ports["blob"])]
        processes["blob"] = subprocess.Popen(blob_args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT)
        for service in ("queue", "table"):
            args = [str(azurite_executable(service)), *common,
                    f"--{service}Host", "127.0.0.1", f"--{service}Port", str(ports[service])]
            processes[service] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True)
        for service, proc in processes.items():
            by_port[ports[service]] = (f"azurite-{service}", proc)
        _wait_listening(by_port, time.monotonic() + timeout_s, None)
    except BaseException:
        Azurite(processes, ports["blob"], ports["queue"], ports["table"], None).stop(timeout=5.0)
        raise
    finally:
        held.close()  # Azurite's listeners hold the ports from here
    return PreloadedAzurite(processes, ports["blob"], ports["queue"], ports["table"], None)
