"""Start and stop the Azurite storage emulator that the demo, devhost and the tests use.

Why: every storage-touching piece of trapbatch is tested against real Azure Storage protocol (Azurite from npm,
installed into ``node_modules`` by ``make setup``), never an in-memory fake. This module owns the one way to launch it:
loopback only, free ports, telemetry off (Azurite otherwise tries to reach an Application Insights host), and stopped
by their PIDs. It never installs anything itself; it tells the user which command to run instead.

One process per service (``azurite-blob``, ``azurite-queue``, ``azurite-table``), not the combined ``azurite``: each
Azurite process serves every request on one JavaScript thread, and stock, its in-memory store looks a blob up by scanning
the account's blobs (LokiJS indexes only the query's first field, ``accountName``, in
``LokiBlobMetadataStore.createBlob``/``getBlob``), so one batch delete of a few hundred blobs held the combined
process for seconds and every table read behind it waited: the durable status reads of ``GET /api/tasks/{id}``
answered in up to 12 s at ten million images' shape (bench/RESULTS.md, ninth session). Azure's Blob and Table
services are separate services and do not queue one's requests behind the other's; separate processes keep that
independence in the stand-in. Same ports, same connection string, same ``--location`` folder (each service keeps its
own files there).

Stock, that scan also makes every blob request slower with each blob the account holds (36-88 ms at 100,000), and
every ten minutes Azurite's garbage collector (``BlobGCManager.markSweep``) holds the process for its whole pass,
which lost blobs whose names repeat across containers and took 39.8 s at 20,000 blobs and 5,000 deleted ones. The
blob service starts through ``azurite_blob.js``, which fixes the collector and starts each lookup from the index of
names (2-8 ms at 100,000; devhost/README.md fidelity row 23). Keep one Azurite's store small all the same: the
tests start one per module.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite could not be found or started; the message says what to do."""


class PortReservation:
    """``count`` loopback ports that no one else is handed while this is open, which Azurite can still listen on:
    for a test that stops Azurite and starts it again on the same ports (its clients keep the connection string).

    Why: between the stop and the start the ports are free, and another pytest worker's port-0 pick (a bind to port 0,
    as ``PortReservation`` itself makes) may be given one; the restart then fails (``PortTaken``) or, worse, the
    clients reach the stranger. Each port here is held by a socket bound with ``SO_REUSEADDR`` that never listens.
    On Linux a bind without ``SO_REUSEADDR``, port 0's pick included, conflicts with it (torvalds/linux
    ``net/ipv4/inet_connection_sock.c``, ``inet_csk_bind_conflict``: two sockets share an address and port only when
    both set ``SO_REUSEADDR`` and the earlier one does not listen; a port-0 pick skips ports with a conflict, and one
    asked with ``SO_REUSEADDR`` skips shared ones too), so no one is handed these ports, while Node's listeners (libuv
    binds with ``SO_REUSEADDR``) bind beside it (seen on 6.18; ``tests/devhost/test_azurite_services.py``); a
    connection to a port where nothing listens is refused as if the port were free (outage tests see what they saw).
    A program that binds a fixed port with ``SO_REUSEADDR`` is not kept out; none of the tests does.
    Elsewhere (BSD, macOS: an identical address needs ``SO_REUSEPORT``) it holds nothing and only picks the ports."""

    def __init__(self, count: int = 3) -> None:
        self._sockets: list[socket.socket] = []
        ports: list[int] = []
        try:
            for _ in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", 0))
                    ports.append(int(s.getsockname()[1]))
                except BaseException:
                    s.close()
                    raise
                if sys.platform.startswith("linux"):
                    self._sockets.append(s)
                else:
                    s.close()
        except BaseException:
            self.close()  # the ones bound already, not left to the garbage collector
            raise
        self.ports = tuple(ports)

    def close(self) -> None:
        for s in self._sockets:
            s.close()
        self._sockets.clear()

    def __enter__(self) -> "PortReservation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connection_string(blob_port: int, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


SERVICES = ("blob", "queue", "table")


BLOB_WITH_GC_FIX = Path(__file__).resolve().parent / "azurite_blob.js"
NO_TELEMETRY = Path(__file__).resolve().parent / "azurite_no_telemetry.js"


def service_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an Azurite service process: ``base`` (default: this process's) with
    ``azurite_no_telemetry.js`` preloaded, ``--require`` added to ``NODE_OPTIONS`` after whatever it holds. Why:
    Azurite loads the Application Insights SDK as it starts even with ``--disableTelemetry``, which it then never
    uses; that was a third of each service's start CPU, and the tests start three services per module (the file says
    where Azurite does it). The path is quoted, so a checkout path with spaces works: nodejs.org "Command-line API",
    ``NODE_OPTIONS``: "If an option value contains a space, it can be escaped using double quotes" (and a backslash
    escapes the next character, nodejs/node pull 24065)."""
    env = dict(os.environ if base is None else base)
    quoted = '"' + str(NO_TELEMETRY).replace("\\", "\\\\").replace('"', '\\"') + '"'
    env["NODE_OPTIONS"] = " ".join(filter(None, [env.get("NODE_OPTIONS", "").strip(), f"--require {quoted}"]))
    return env


def azurite_executable(service: str, stock: bool = False) -> Path:
    """``node_modules/.bin/azurite-<service>`` (``SERVICES``), else the same name on PATH.

    The blob service of ``node_modules`` starts through ``azurite_blob.js``: the same entry point with its garbage
    collector fixed (its listing skipped blobs whose names repeat across containers and deleted their data; its sweep
    held the process for minutes) and its lookups and listings made cheaper, answers unchanged (the file says how).
    ``stock`` starts it as published (the tests compare answers with it). An Azurite found only on PATH runs as it
    is."""
    name = f"azurite-{service}"
    exe = REPO_ROOT / "node_modules" / ".bin" / name
    if exe.exists():
        if (service == "blob" and not stock
                and (REPO_ROOT / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js").exists()):
            return BLOB_WITH_GC_FIX
        return exe
    found = shutil.which(name)
    if found:
        return Path(found)
    raise AzuriteError(
        f"Azurite is not installed (looked for {exe}). Run `make setup` (it runs `npm install` in the repo root), "
        "or `npm install` yourself; Node 20+ is needed."
    )


@dataclass
class Azurite:
    """A running Azurite: one process per storage service (module doc)."""

    processes: dict[str, subprocess.Popen[bytes]]
    blob_port: int
    queue_port: int
    table_port: int
    log_path: Path | None

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    @property
    def pids(self) -> dict[str, int]:
        return {service: proc.pid for service, proc in self.processes.items()}

    def stop(self, timeout: float = 10.0) -> None:
        running = [p for p in self.processes.values() if p.poll() is None]
        for proc in running:
            # SIGINT: azurite-table saves its store and exits on SIGINT only (its main.js has no SIGTERM handler, so
            # SIGTERM ends it without saving); azurite-blob and azurite-queue handle both.
            _signal_service(proc, signal.SIGINT)
        for proc in running:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_service(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)

    def __enter__(self) -> "Azurite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_service(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to a service's process and, when it leads a process group of its own (every service here is
    started with ``start_new_session``), to the whole group. Why: an ``azurite-<service>`` found on PATH may be a
    wrapper that runs node as its child (``_owner`` counts that child's port as the service's); signalled alone,
    the wrapper ended and left the child running, listening on the port."""
    if proc.poll() is not None:
        return  # ended: its pid may be another process's by now
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signum)
            return
    except ProcessLookupError:
        return
    except (OSError, AttributeError):  # no process groups here (AttributeError: not POSIX): the process alone
        pass
    proc.send_signal(signum)


def _wait_listening(ports: dict[int, tuple[str, subprocess.Popen[bytes]]], deadline: float,
                    log_path: Path | None, settle_s: float = 0.5) -> None:
    """Until every port answers as its own Azurite process. A port is picked free and taken a moment later, so another
    program (another test module's Azurite, under ``pytest -n``) may have bound it in between: the port then answers at
    once while the Azurite meant for it exits on EADDRINUSE, on a loaded machine seconds later. Where the kernel says
    which process listens (Linux ``/proc``) the port counts only when it is ours, and one held by another process
    raises ``PortTaken`` at once; elsewhere, after ``settle_s``, every process must still run. Without these looks the
    caller talked to the other program: bare HTTP 400s to every blob request, and a CI run whose blob requests reached
    another module's ``azurite-table`` ("The specified resource name contains invalid characters", no error code)."""
    owned = _wait_ports(ports, deadline, log_path)
    if not owned:
        time.sleep(settle_s)
    _raise_if_exited(ports, log_path)


class PortTaken(AzuriteError):
    """Another process listens on a port an Azurite service was started on."""


def _raise_if_exited(ports: dict[int, tuple[str, subprocess.Popen[bytes]]], log_path: Path | None) -> None:
    for port, (name, proc) in ports.items():
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise PortTaken(f"Azurite ({name}) exited with code {proc.returncode} while starting on port {port} "
                            f"(another program may hold that port). Its log:\n{tail}")


def _azurite_answers(port: int, timeout_s: float = 1.0, service: str = "") -> bool:
    """Whether an Azurite service answers HTTP on ``port``: every Azurite response carries ``Server: Azurite-Blob/...``
    (``-Queue``, ``-Table``; its storage-context middlewares); ``service`` (``blob``...) asks for that one. Why not a
    bare connect: another program that took the port first accepts connections too, and under load the Azurite meant
    for it may exit (EADDRINUSE) later than any fixed wait (a loaded CI run handed out such a port)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    expected = f"server: azurite-{service}".encode()
    return any(line.lower().startswith(expected) for line in head.split(b"\r\n"))


def _listening_inodes(port: int) -> set[int] | None:
    """The socket inodes listening on 127.0.0.1:``port`` (or any address), from the kernel's own table; ``None``
    where there is no ``/proc/net/tcp`` to read (not Linux)."""
    wanted = f"{port:04X}"
    inodes: set[int] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
            continue
        address, _, local_port = fields[1].partition(":")
        if local_port == wanted and address in ("0100007F", "00000000"):
            inodes.add(int(fields[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it, from each process's parent in ``/proc/<pid>/stat`` (its fourth field,
    after the command name in parentheses, which may hold any character)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def _owner(port: int, proc: subprocess.Popen[bytes]) -> bool | None:
    """Whether ``proc`` is what listens on ``port``: ``True``, ``False`` (another process does), or ``None`` when it
    cannot be told (no ``/proc``, or nothing listens yet). ``proc`` and its descendants count as one: an
    ``azurite-<service>`` on PATH may be a wrapper that runs node as a child instead of exec'ing it."""
    listening = _listening_inodes(port)
    if not listening:
        return None
    if listening & _socket_inodes(proc.pid):
        return True
    return any(listening & _socket_inodes(pid) for pid in _descendants(proc.pid) - {proc.pid})


def _wait_ports(ports: dict[int, tuple[str, subprocess.Popen[bytes]]], deadline: float,
                log_path: Path | None) -> bool:
    """Wait until each port answers as its Azurite service; returns whether every one was seen to be ours."""
    pending = dict(ports)
    all_owned = True
    while pending:
        _raise_if_exited(pending, log_path)
        for port, (name, proc) in list(pending.items()):
            if not _azurite_answers(port, service=name.removeprefix("azurite-")):
                owner = _owner(port, proc)
                if owner is False:
                    raise PortTaken(f"port {port} is held by another program (another Azurite?), not the {name} "
                                    "started for it")
                continue
            owner = _owner(port, proc)
            if owner is False:
                raise PortTaken(f"port {port} answers as Azurite but another process holds it, not the {name} "
                                "started for it")
            all_owned = all_owned and owner is True
            del pending[port]
        if time.monotonic() > deadline:
            raise AzuriteError(f"Azurite did not listen on ports {sorted(pending)} within the time limit")
        time.sleep(0.1)
    return all_owned


def common_args(location: Path | None) -> list[str]:
    """The arguments every Azurite service process gets: quiet, telemetry off, any API version, loose header checks,
    and its state in ``location`` (made if missing) or, for ``None``, in memory."""
    args = ["--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose"]
    if location is None:
        return [*args, "--inMemoryPersistence"]
    location.mkdir(parents=True, exist_ok=True)
    return [*args, "--location", str(location)]


def start_azurite(
    location: Path | None = None,
    ports: tuple[int, int, int] | None = None,
    log_path: Path | None = None,
    timeout_s: float = 60.0,
    stock_blob: bool = False,
) -> Azurite:
    """Start Azurite on 127.0.0.1.

    Args:
        location: a folder for persistent state; ``None`` keeps everything in memory (tests).
        ports: (blob, queue, table); ``None`` picks free ports, held (``PortReservation``) until Azurite listens on
            them, and picks again (up to ``PICK_TRIES`` times) when another program took one all the same (a program
            that binds a fixed port; where nothing can be held: ``_wait_listening``).
        log_path: where Azurite's stdout/stderr go (default: discarded).
        stock_blob: the blob service as npm publishes it, without ``azurite_blob.js``'s fixes (tests compare).
    """
    for attempt in range(1, PICK_TRIES + 1):
        held = PortReservation(len(SERVICES)) if ports is None else None  # no free-port pick is handed them meanwhile
        try:
            chosen = (held.ports[0], held.ports[1], held.ports[2]) if held is not None else ports
            assert chosen is not None  # held is None only when ports were given
            return _start_once(location, chosen, log_path, timeout_s, stock_blob)
        except PortTaken:
            if ports is not None or attempt == PICK_TRIES:
                raise
        finally:
            if held:
                held.close()  # Azurite's listeners hold the ports from here
    raise AssertionError("unreachable")


PICK_TRIES = 3


def _start_once(location: Path | None, ports: tuple[int, int, int], log_path: Path | None, timeout_s: float,
                stock_blob: bool) -> Azurite:
    blob_port, queue_port, table_port = ports
    common = common_args(location)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    processes: dict[str, subprocess.Popen[bytes]] = {}
    by_port: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        for service, port in zip(SERVICES, (blob_port, queue_port, table_port)):
            args = [str(azurite_executable(service, stock=stock_blob)), *common,
                    f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=service_env())
            processes[service] = proc
            by_port[port] = (f"azurite-{service}", proc)
        _wait_listening(by_port, time.monotonic() + timeout_s, log_path)
    except BaseException:
        Azurite(processes, blob_port, queue_port, table_port, log_path).stop(timeout=5.0)
        raise
    finally:
        if not isinstance(out, int):
            out.close()  # each child has its own copy of the descriptor
    return Azurite(processes, blob_port, queue_port, table_port, log_path)
