"""The wire between ``gpu_batch.worker.client`` and the node-resident worker (``gpu_batch.worker.resident``).

Why a module of its own, free of torch and of every Azure package: the client must start in a fraction of a second,
so it imports only this, ``exit_codes`` and ``faults``; the server shares the same framing and socket rules.

Protocol: one Unix-domain stream connection per shard. Each message is a 4-byte big-endian length and that many
bytes of UTF-8 JSON (an object with a ``type``).
    client -> server   {"type": "run", "argv": [worker CLI args], "env": {environment}, "cwd": client's folder,
                        "process_started": unix s, "client_pid": n}
    client -> server   ... "code": code_fingerprint() of the client's worker package (absent from older clients)
    client -> server   {"type": "ready", "code": ...}   (instead of run: a pool preparing a task, ``client.wait_ready``)
    server -> client   {"type": "ready", "pid": n, "shards_served": n}   (its imports are done: it takes shards now;
                       a server older than this message answers "done" with exit code 2, as ready all the same)
    server -> client   {"type": "accepted", "pid": server pid, "shards_served": n}   (the shard is now the server's)
                       {"type": "refused", "reason": "..."}   (instead of accepted: the server steps aside, below)
                       {"type": "log", "line": "..."}   (any number: the shard's log, formatted as the CLI's)
                       {"type": "done", "exit_code": n, "summary": {...} | null}
A server refuses a shard it must not run: its worker code differs from the client's (``code``: an image updated
while a node's server, started by the pool's start task, still runs the old one; a local checkout edited while a
server idles), the shard asks for CUDA and the server has none (a start task's container without the GPUs), or the
shard waited for its turn while the shard before it failed unexpectedly (the server then exits). It
then steps aside at once (removes its socket, exits when its requests are answered), so the client's second try
starts a server of its own or runs the shard itself.

The client sends nothing after ``run``: the server reads its end only to notice the client closing it (terminated,
killed, crashed), which stops the shard between batches. The client's whole environment travels with the request
(storage settings, fault injection) because the server runs each shard with the environment of the task that asked,
and in its working folder (local-mode paths are relative to it);
the socket lives in a folder only its user can enter (0700) and is itself 0600, and a client sends nothing to a
listener that runs as another user (``SO_PEERCRED``, else the socket file's owner;
``client._check_server_user``).

Settings (environment; documented with the others in ``core/settings.py``):
    TRAPBATCH_RESIDENT_SOCKET   the server's socket (default: ``resident/worker[-<CUDA_VISIBLE_DEVICES>].sock`` in
                                the node's shared folder ``AZ_BATCH_NODE_SHARED_DIR/trapbatch``, else in
                                ``~/.cache/trapbatch``); its folder is made this user's alone (0700), so it must be
                                a folder of its own: one with the sticky bit (``/tmp`` itself) or another user's is
                                refused (``private_folder``) and the client runs the shard itself
    TRAPBATCH_RESIDENT_IDLE_S   seconds a server waits without a shard before it exits (default 600)
    TRAPBATCH_RESIDENT_START_S  seconds a client waits for a server it started to answer (default 300)
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any, Mapping

logger = logging.getLogger(__name__)

SOCKET_ENV = "TRAPBATCH_RESIDENT_SOCKET"
IDLE_ENV = "TRAPBATCH_RESIDENT_IDLE_S"
START_ENV = "TRAPBATCH_RESIDENT_START_S"
COMPILE_ENV = "TRAPBATCH_RESIDENT_COMPILE"  # a server started without ``--compile`` compiles when this is on
DEFAULT_IDLE_S = 600.0
DEFAULT_START_S = 300.0
MAX_MESSAGE = 64 << 20  # a request carries a command line and an environment; anything near this is garbage
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with its terminating NUL (unix(7))
_HEADER = struct.Struct(">I")
_IMPORTED_AT = time.time()


class ProtocolError(Exception):
    """The other end sent something that is not a message of this protocol."""


def send_message(sock: socket.socket, message: Mapping[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None when the other end closed the connection (before or between messages)."""
    head = _read_exactly(sock, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise ProtocolError(f"message of {size} bytes announced")
    body = _read_exactly(sock, size)
    if body is None:
        return None
    try:
        message = json.loads(body.decode("utf-8"))
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("not a message object")
    return message


class SharedFolder(OSError):
    """The socket's folder is not one this user may make private (``private_folder``)."""


def private_folder(folder: Path) -> None:
    """Create ``folder`` if needed and make it this user's alone (0700), as the socket, its lock, log and pid need.

    Raises ``SharedFolder`` for a folder this must not change: one with the sticky bit (``/tmp``, ``/dev/shm``: a
    ``TRAPBATCH_RESIDENT_SOCKET`` right inside it made them 0700 when run as their owner, root, and every other
    user's and daemon's temporary files stopped working; as anyone else the chmod failed and the server died with a
    traceback) or one another user owns.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    fix = (f"set {SOCKET_ENV} to a path inside a folder of the resident worker's own, e.g. "
           f"{folder / 'trapbatch' / 'worker.sock'}")
    if st.st_mode & stat.S_ISVTX:
        raise SharedFolder(f"{folder} is a shared folder (sticky bit), which the resident worker does not make "
                           f"private: {fix}")
    if st.st_uid != os.geteuid():
        raise SharedFolder(f"{folder} belongs to user {st.st_uid}, not to this user ({os.geteuid()}): {fix}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(folder, 0o700)


def default_socket_path(env: Mapping[str, str]) -> Path:
    """``TRAPBATCH_RESIDENT_SOCKET``, else one socket per node (per visible GPU set) in the node-shared folder.

    Why per ``CUDA_VISIBLE_DEVICES``: a server runs one shard at a time on the GPUs it was started with; tasks pinned
    to different GPUs of one node need servers of their own.
    """
    configured = env.get(SOCKET_ENV)
    if configured:
        return Path(configured)
    shared = env.get("AZ_BATCH_NODE_SHARED_DIR")
    base = Path(shared) / "trapbatch" if shared else Path.home() / ".cache" / "trapbatch"
    gpus = "".join(c for c in env.get("CUDA_VISIBLE_DEVICES", "") if c.isalnum() or c in ",-").replace(",", "_")
    return base / "resident" / (f"worker-{gpus}.sock" if gpus else "worker.sock")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over the worker package's Python files (relative path and bytes; ``tests`` left out), hex, 16 chars.

    Why the files rather than a version string: any edit changes what a shard would run, and nobody has to remember
    to bump anything. About 30 small files: a few milliseconds, once per process.
    """
    package = Path(__file__).resolve().parents[1]  # gpu_batch/
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "tests":
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def wants_cuda(argv: list[str]) -> bool:
    """Whether the worker command line asks for ``--device cuda`` (the CLI's default, ``auto``, does not insist); the
    last ``--device`` counts, as argparse takes it."""
    device = ""
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            device = argv[i + 1]
        elif arg.startswith("--device="):
            device = arg.split("=", 1)[1]
    return device == "cuda"


def float_setting(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds; unset: ``default``. A value that is not one also gives ``default``, with a
    warning naming the variable: these run on the pool's nodes, where refusing would fail every shard, and saying
    nothing left a typo unnoticed."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value > 0 and value != float("inf"):
        return value
    logger.warning("%s=%r is not a positive number of seconds: %g s is used (write e.g. %s=600)", name, raw, default,
                   name)
    return default


ON_WORDS = ("1", "true", "yes", "on")
OFF_WORDS = ("0", "false", "no", "off")


def bool_setting(env: Mapping[str, str], name: str) -> bool:
    """``1``/``true``/``yes``/``on`` (any case) is on; ``0``/``false``/``no``/``off`` or nothing is off; any other
    word is off too, with a warning naming the variable (``float_setting`` says why not a refusal)."""
    raw = env.get(name, "").strip().lower()
    if raw and raw not in ON_WORDS + OFF_WORDS:
        logger.warning("%s=%r is neither on (1, true, yes, on) nor off (0, false, no, off): taken as off", name, raw)
    return raw in ON_WORDS


def process_start_unix() -> float:
    """When this process started (wall clock), from ``/proc`` (10 ms resolution); else when this module was imported.

    Why: "process start to first batch" is the start-up a pool task pays; the CLI and the client both report it, so
    interpreter start and imports are counted, not only what follows them.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5); the text after ")" starts at field 3
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT


def stop_server(socket_path: Path, grace_s: float = 15.0) -> int:
    """End the server that wrote ``<socket_path>.pid``, if any: SIGTERM, then SIGKILL after ``grace_s``.

    For whoever started a server for a run of its own (``make demo``, the benchmarks); returns its pid, 0 when none
    had started. Files beside the socket stay for the caller to remove.
    """
    try:
        pid = int(Path(f"{socket_path}.pid").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return 0
    if pid <= 0:
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not process_ended(pid):
            time.sleep(0.1)
        if not process_ended(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return pid


def process_ended(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie (where no init reaps orphans, as in some containers)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
