"""``python -m gpu_batch.worker.client <worker CLI args>``: run one shard on the node's resident worker.

What a pool task runs instead of ``python -m gpu_batch.worker`` when ``TRAPBATCH_WORKER_RESIDENT=1``
(``gpu_batch.pool.base.worker_module``). It takes the worker CLI's arguments, imports nothing heavy (no torch, no
Azure package: it starts in about 0.1 s), connects to the node's resident worker (``gpu_batch.worker.resident``;
socket from ``TRAPBATCH_RESIDENT_SOCKET`` or ``resident_protocol.default_socket_path``), starts one when none
answers, forwards the shard, prints the streamed log on stderr and the summary as the last stdout line, and exits
with the shard's exit code, so the pool task's exit code is the shard's outcome exactly as with the CLI.

* Starting a server: under an exclusive ``flock`` on ``<socket>.lock``, so clients starting at once start one
  server; the server runs in a session of its own (``setsid``), so it outlives this client and a pool's
  process-group kill of the task; it exits after ``TRAPBATCH_RESIDENT_IDLE_S`` without a shard.
* The server dies mid-shard (after it accepted the shard): exit ``exit_codes.SERVER_LOST`` (75, EX_TEMPFAIL), which the
  app retries like any crash; the next attempt resumes from the results the shard flushed.
* The server refuses the shard (its worker code differs from this client's, the shard asks for CUDA and the
  server has none, or the shard before it failed unexpectedly; ``resident_protocol``): it steps aside, and the
  second try starts a server from this client's code (or, where that cannot be had, the shard runs in this
  process).
* The resident path cannot be used at all (socket path too long, the server cannot start or never answers, it went
  away before accepting the shard, what listens on the socket runs as another user): the shard runs in this
  process through the CLI's ``main`` (logged as such).
* Cancellation: when this process ends (SIGTERM, SIGKILL) the kernel closes its socket and the server stops the
  shard between batches. SIGTERM exits with ``exit_codes.CANCELLED`` through a handler (``_exit_on_sigterm``): as a
  container's first process the kernel would not deliver it otherwise (pid_namespaces(7)).
* ``--ready`` (the only argument): no shard; start the server if none answers and wait until it takes shards
  (``wait_ready``). LocalPool runs this while a task is ``preparing``, before the task's clock starts, as a Batch
  node's start task runs the server before its tasks (``gpu_batch.pool.local``, Resident workers).
* ``-h``/``--help``: the worker CLI's options, which the client forwards, printed here (exit 0); no server is
  started and no shard run (a ``--help`` forwarded as a shard started a server that idled on for
  ``TRAPBATCH_RESIDENT_IDLE_S``, whose log got the help while the client said "bad worker arguments").
* Faults (tests): the start-time faults of ``TRAPBATCH_WORKER_FAULT`` (``hang``, ``exit:N``) act here, in the
  process the pool watches; the others travel with the environment to the server.

Must not: import torch or anything that does (``tests`` check the start time).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from gpu_batch import exit_codes
from gpu_batch.worker import resident_protocol as wire
logger = logging.getLogger("gpu_batch.worker.client")


class ResidentUnavailable(Exception):
    """The resident path cannot be used for this shard; it runs in this process instead."""


def _connect(path: Path) -> socket.socket | None:
    """A connection to whatever listens at ``path`` (None when nothing does), once it is known to run as this user.

    Raises ``ResidentUnavailable`` when the listener runs as another user (``_check_server_user``).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    try:
        _check_server_user(sock, path)
    except ResidentUnavailable:
        sock.close()
        raise
    return sock


def _check_server_user(sock: socket.socket, path: Path) -> None:
    """Refuse a listener that runs as another user than this process (the kernel's ``SO_PEERCRED``, unix(7)).

    Why: the request carries the task's whole environment, storage credentials included. The server's own socket is
    0600 in a 0700 folder, but the client connects to whatever it finds at the path first: with
    ``TRAPBATCH_RESIDENT_SOCKET`` in a folder others can write to (``/tmp``), another user's process listening
    there first was handed those credentials. Where Python offers no ``SO_PEERCRED`` (macOS: the local pool runs
    this client there too) the socket file's owner stands in for it: ``bind`` creates the file as the listener's
    user. Nothing was checked there before, so a listener of another user in ``/tmp`` got the environment.
    """
    uid = _listener_uid(sock, path)
    mine = os.geteuid()
    if uid is None:
        raise ResidentUnavailable(f"cannot tell which user listens on {path} (its socket file is gone), so the shard "
                                  f"(and its storage credentials) is not handed to it; point {wire.SOCKET_ENV} at a "
                                  "path in a folder only this user can write to")
    if uid != mine:
        raise ResidentUnavailable(f"the process listening on {path} runs as user {uid}, not as this task's user "
                                  f"{mine}, so the shard (and its storage credentials) is not handed to it; point "
                                  f"{wire.SOCKET_ENV} at a path in a folder only this user can write to")


def _listener_uid(sock: socket.socket, path: Path) -> int | None:
    """The user id the process listening on ``sock`` runs as: the kernel's ``SO_PEERCRED`` where Python has it
    (Linux), else the owner of the socket file at ``path`` (None when it is gone)."""
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is not None:
        try:
            _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
            return int(uid)
        except OSError:
            pass
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def _spawn_server(path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``resident serve`` in a session of its own, logging to ``<socket>.log``."""
    log = open(str(path) + ".log", "ab")  # noqa: SIM115 - handed to the child, closed here right after
    try:
        return subprocess.Popen([sys.executable, "-m", "gpu_batch.worker.resident", "serve", "--socket", str(path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(env),
                                start_new_session=True, close_fds=True)
    finally:
        log.close()


def connect_or_start(path: Path, env: Mapping[str, str]) -> tuple[socket.socket, bool]:
    """A connection to the resident server at ``path``, starting it first when none answers; and whether we did.

    Raises ``ResidentUnavailable`` when none can be reached.
    """
    if len(str(path).encode()) > wire.UNIX_PATH_MAX:
        raise ResidentUnavailable(f"socket path {path} is longer than {wire.UNIX_PATH_MAX} bytes")
    sock = _connect(path)
    if sock is not None:
        return sock, False
    try:
        wire.private_folder(path.parent)
        lock = open(str(path) + ".lock", "a+b")  # noqa: SIM115 - held until the server answers
    except OSError as exc:
        raise ResidentUnavailable(f"cannot prepare {path.parent}: {exc}") from exc
    deadline = time.monotonic() + wire.float_setting(env, wire.START_ENV, wire.DEFAULT_START_S)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a client starting a server holds it until the server listens
        sock = _connect(path)  # another client may have started it while we waited for the lock
        if sock is not None:
            return sock, False
        proc = _spawn_server(path, env)
        logger.info("started a resident worker (pid %d) on %s", proc.pid, path)
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock is not None:
                return sock, True
            if proc.poll() is not None:
                raise ResidentUnavailable(f"the resident worker exited with code {proc.returncode} before it "
                                          f"listened; see {path}.log")
            time.sleep(0.05)
        raise ResidentUnavailable(f"the resident worker did not listen on {path} within "
                                  f"{wire.float_setting(env, wire.START_ENV, wire.DEFAULT_START_S):.0f}s")
    except OSError as exc:
        raise ResidentUnavailable(f"cannot start a resident worker: {exc}") from exc
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def run_on_server(argv: Sequence[str], env: Mapping[str, str], process_started: float) -> int:
    """Forward the shard, relay its log and summary; its exit code. ``ResidentUnavailable`` before it is accepted."""
    path = wire.default_socket_path(env)
    sock, _ = connect_or_start(path, env)
    with sock:
        try:
            wire.send_message(sock, {"type": "run", "argv": list(argv), "env": dict(env), "cwd": os.getcwd(),
                                     "process_started": process_started, "client_pid": os.getpid(),
                                     "code": wire.code_fingerprint()})
            first = wire.recv_message(sock)
        except (OSError, wire.ProtocolError) as exc:
            raise ResidentUnavailable(f"the resident worker on {path} did not take the shard: {exc}") from exc
        if first is not None and first.get("type") == "refused":  # it stepped aside: the next try starts another
            raise ResidentUnavailable(f"the resident worker on {path} refused the shard: {first.get('reason')}")
        if first is None or first.get("type") != "accepted":
            raise ResidentUnavailable(f"the resident worker on {path} did not take the shard: {first!r}")
        logger.info("resident worker pid %s on %s runs this shard (its shard number %s)", first.get("pid"), path,
                    first.get("shards_served"))
        return _relay(sock, first)


def _relay(sock: socket.socket, accepted: Mapping[str, Any]) -> int:
    while True:
        try:
            message = wire.recv_message(sock)
        except (OSError, wire.ProtocolError) as exc:
            message, problem = None, f"{type(exc).__name__}: {exc}"
        else:
            problem = "the connection closed"
        if message is None:
            # The shard belonged to the server, which is gone: whatever it flushed stays for the next attempt.
            logger.error("the resident worker (pid %s) died during the shard (%s); exiting %d so the shard is "
                         "retried", accepted.get("pid"), problem, exit_codes.SERVER_LOST)
            return exit_codes.SERVER_LOST
        kind = message.get("type")
        if kind == "log":
            sys.stderr.write(str(message.get("line", "")) + "\n")
            sys.stderr.flush()
        elif kind == "done":
            summary = message.get("summary")
            if summary is not None:
                print(json.dumps(summary), flush=True)
            return int(message.get("exit_code", 1))


READY_ARG = "--ready"  # gpu_batch.pool.base.READY_ARG, which the pool sends


def wait_ready(env: Mapping[str, str]) -> int:
    """Bring the resident server of ``env``'s socket up and wait until it takes shards (its torch import done): 0, or
    1 when none can be had (the task's client then meets the same and runs the shard itself, as before).

    Why: a server started by a task's client paid its start-up inside that task's time limit. "Ready" is an answer
    to a ``ready`` request, which the server gives only once its imports are done (it accepts connections after
    ``Server.prepare``; the socket is bound before, so a connection alone says nothing). A server that refuses
    (other worker code) steps aside, and the second try starts a current one, as ``main`` does for a shard."""
    path = wire.default_socket_path(env)
    wait_s = wire.float_setting(env, wire.START_ENV, wire.DEFAULT_START_S)
    for attempt in (1, 2):
        try:
            sock, started = connect_or_start(path, env)
        except ResidentUnavailable as exc:
            logger.warning("resident worker unavailable (%s); the task's client will meet the same", exc)
            return 1
        with sock:
            sock.settimeout(wait_s)
            try:
                wire.send_message(sock, {"type": "ready", "code": wire.code_fingerprint()})
                answer = wire.recv_message(sock)
            except (OSError, wire.ProtocolError) as exc:
                logger.warning("the resident worker on %s did not say it was ready: %s", path, exc)
                return 1
        if answer is None or answer.get("type") == "refused":  # it closed (idle exit) or stepped aside: once more
            logger.warning("the resident worker on %s %s", path, f"refused: {answer.get('reason')}" if answer
                           else "closed the connection")
            continue
        logger.info("the resident worker on %s is ready (pid %s%s)", path, answer.get("pid"),
                    ", started now" if started else "")
        return 0
    return 1


HELP_ARGS = {"-h", "--help"}


def asks_for_help(argv: Sequence[str]) -> bool:
    """``-h``, ``--help``, or an abbreviation of it that the worker's parser takes for it (argparse's
    ``allow_abbrev``: ``--he``, ``--hel``; ``--h`` is ambiguous there, beside ``--hw-decode``)."""
    return any(a in HELP_ARGS or (len(a) > 3 and "--help".startswith(a)) for a in argv)


def print_help() -> int:
    """The client's usage: the worker CLI's own options, which it forwards unchanged, and ``--ready``; 0.

    Why here: an operator reading a pool task's command line asks the client for ``--help``; forwarded as a shard,
    it started a resident server (torch imported, idle for ``TRAPBATCH_RESIDENT_IDLE_S``) to be told "bad worker
    arguments", the help itself in the server's log. The worker's parser module imports no torch, so this stays as
    light as the client."""
    from gpu_batch.worker.__main__ import _parser

    parser = _parser()
    parser.prog = "python -m gpu_batch.worker.client"
    parser.description = (f"Run one shard on this node's resident worker (started when none answers; socket: "
                          f"{wire.SOCKET_ENV}), with the options of python -m gpu_batch.worker, forwarded as they "
                          f"are; the shard runs in this process when the resident path cannot be used. "
                          f"{READY_ARG} alone: no shard, start the server and wait until it takes shards.")
    parser.print_help()
    return 0


def _apply_start_faults(env: Mapping[str, str]) -> None:
    """``hang`` and ``exit:N`` act in the process the pool watches, as they do in the CLI."""
    from gpu_batch.worker.faults import Fault, FaultSpecError

    try:
        fault = Fault.from_env(env)
    except FaultSpecError:
        return  # the server reports it with the CLI's exit code
    fault.at_start()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM ends the client (``exit_codes.CANCELLED``), which closes its socket: the server stops the shard.

    Why a handler, when SIGTERM's default action ends a process too: where a Batch container task's command line is
    the container's first process (Batch runs it "in the container" it made with ``docker create``), the kernel
    delivers no signal to it that it has no handler for, bar SIGKILL and SIGSTOP (pid_namespaces(7)), so a
    ``docker stop`` went unheard until the grace period's SIGKILL, with the server running the shard on meanwhile.
    A shard run in this process (``cli.main``) has the CLI's own handler meanwhile (``SigtermStop``), which flushes
    its results first."""
    raise SystemExit(exit_codes.CANCELLED)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    process_started = wire.process_start_unix()
    argv = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if env is None else env)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if asks_for_help(argv):
        return print_help()
    if argv == [READY_ARG]:  # no shard, so no start-time fault: a ``hang`` is the shard's, not the preparation's
        return wait_ready(env)
    _apply_start_faults(env)
    for attempt in (1, 2):  # a second try: a server may close (idle exit) just as this client connects
        try:
            return run_on_server(argv, env, process_started)
        except ResidentUnavailable as exc:
            problem = exc
            if attempt == 1:
                logger.warning("resident worker unavailable (%s); trying once more", exc)
    logger.warning("resident worker unavailable (%s); running the shard in this process", problem)
    from gpu_batch.worker import __main__ as cli  # torch is imported only on this path

    return cli.main(argv, env)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # the process's own; main() run in-process leaves the caller's
    raise SystemExit(main())
