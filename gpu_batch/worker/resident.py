"""``python -m gpu_batch.worker.resident serve --socket PATH``: a node-resident worker that keeps models loaded.

Why: a fresh worker process pays the torch import (~2 s on a CPU since torchvision is no longer imported on the CPU
path; 7-8 s with torchvision on the H100 node measured in November), the model load and CUDA/cuDNN start-up before
its first batch, on every shard. This server pays them once per node: it imports torch at start, keeps loaded
models in a small cache (``ModelCache``, keyed by model reference and device options, see ``__main__._model_key``)
and runs shard after shard, each through ``gpu_batch.worker.__main__.run_shard``, the same function the CLI runs,
so exit codes, summaries, per-image resume and results are the same.

The pool's task model does not change: each pool task still runs one process per shard attempt, now the thin
``gpu_batch.worker.client``, which forwards its command line here over a Unix socket (``resident_protocol``),
prints the streamed log and exits with the shard's exit code. The server runs one shard at a time (a second client
waits its turn); while a shard runs, the server watches the client's end of the connection, and when the client
goes away (SIGTERM from LocalPool's cancel or Batch's terminate, SIGKILL, a crash) it stops the shard between
batches, flushes the results so far (incomplete, so the next attempt resumes) and takes the next request.

Each shard runs with the environment its client sent (``os.environ`` is swapped for the shard's duration; only one
shard runs at a time) and in its client's working folder, so storage settings, managed-identity variables, fault
injection and local-mode paths act as in the CLI; the variables torch reads once at start (``PINNED_ENV``) keep the
server's values. ``OMP_NUM_THREADS``, which torch also reads once, each shard applies with ``torch.set_num_threads``
(``_shard_threads``; the server's own count when the shard sets none). Why: a server kept the thread count of the
client that started it (LocalPool gives each of its workers cores // its concurrency) for every later shard, whatever
that shard's task asked for: a server left from a run at concurrency 3 ran the next run's shards on a third of the
machine. The start-time faults (``hang``, ``exit:N``) are applied by the client, which is the pool task;
``crash_after:K`` ends this server, as it would end a CLI worker, and the client then exits with
``exit_codes.SERVER_LOST`` (retryable).

Two cases end the server instead of risking the next shard: a shard whose client went away but which does not stop
within ``STOP_GRACE_S`` (stuck outside the pipeline's stop checks: the next client then starts a fresh server), and
a shard that raised an unexpected exception (torch or CUDA state can no longer be trusted; the client gets exit 1,
as from a CLI that crashed with a traceback; a shard that was waiting for its turn is refused, not run).

A server refuses a shard whose client runs other worker code, or that asks for CUDA it lacks, and steps aside
(``resident_protocol``). On Azure Batch the pool's start task runs this server in the worker image with
``--idle-exit inf`` (``infra/app/batch.bicep``, parameter ``residentWorker``), so shards pay start-up once per node
(one that finds another server answering, which a task's client started in its own container before the start
task's server was up, takes the socket over once that one is gone instead of exiting: ``_stand_by``);
with ``--compile`` (parameter ``residentCompile``) every shard's network is compiled, which the node's first shard
pays and the rest reuse from the model cache.

The server exits after ``--idle-exit`` seconds without a shard (``TRAPBATCH_RESIDENT_IDLE_S``, default 600). It
logs to ``<socket>.log`` when the client started it, and writes its pid to ``<socket>.pid``.

Must not: hold pipeline logic or decide exit codes (``__main__.run_shard`` does).
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, Sequence

from gpu_batch import exit_codes
from gpu_batch.sdk_logging import quiet_azure_sdk
from gpu_batch.worker import resident_protocol as wire

if TYPE_CHECKING:
    from gpu_batch.worker.loader import LoadedModel

logger = logging.getLogger("gpu_batch.worker.resident")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the CLI's (exit_codes.worker_error_message reads it)
# Read by torch or CUDA once per process: a shard's environment cannot change them, so the server's values stay.
# TRITON_CACHE_DIR is read at each kernel build, but the server sets it beside its compile cache
# (``__main__.choose_compile_cache``) and a shard's environment lacks it: without the server's value Triton's
# default under a home the Batch task's user cannot write is back (``caches.triton_cache_dir``).
PINNED_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF",
              "CUDA_DEVICE_ORDER")
STOP_GRACE_S = 120.0  # how long a shard whose client went away may take to stop before the server gives up on it
BROKEN_REASON = ("a shard on this resident worker failed unexpectedly and it is exiting (its torch or CUDA state "
                 "can no longer be trusted)")


class ModelCache:
    """The last ``size`` loaded models, least recently used dropped first (a node usually runs one model)."""

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self._items: OrderedDict[Hashable, tuple[Path, LoadedModel]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[Path, LoadedModel] | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: tuple[Path, LoadedModel]) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class _Connection:
    """One client's connection: sends are serialised (the shard logs from several threads); a send that fails
    means the client is gone."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self.gone = threading.Event()

    def send(self, message: Mapping[str, Any]) -> None:
        if self.gone.is_set():
            return
        try:
            with self._lock:
                wire.send_message(self.sock, message)
        except OSError:
            self.gone.set()

    def watch(self) -> None:
        """Block until the client closes its end (it sends nothing more after its request), then flag it gone."""
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        self.gone.set()


class _StreamHandler(logging.Handler):
    """Sends each log record of the running shard to its client, formatted as the CLI formats its log."""

    def __init__(self, conn: _Connection, level: int) -> None:
        super().__init__(level)
        self.conn = conn
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.send({"type": "log", "line": self.format(record)})
        except Exception:  # noqa: BLE001 - logging must never break the shard
            self.handleError(record)


class Server:
    def __init__(self, socket_path: Path, idle_exit_s: float, cache_size: int = 2,
                 compile_models: bool = False) -> None:
        self.socket_path = socket_path
        self.idle_exit_s = idle_exit_s
        self.compile_models = compile_models  # every shard's network through torch.compile (``serve --compile``)
        self.models = ModelCache(cache_size)
        self.shards_served = 0
        self.import_s = 0.0
        self._shard_lock = threading.Lock()
        self._active = 0  # connections being served or waiting for the shard lock
        self._active_lock = threading.Lock()
        self._last_activity = time.monotonic()
        self._broken = threading.Event()  # a shard failed unexpectedly: finish the request, then exit
        self._stepped_aside = threading.Event()  # a shard was refused (resident_protocol): exit once idle
        self._inode: int | None = None  # the socket file this server bound
        self._cuda: bool | None = None
        self.threads: int | None = None  # torch's intra-op threads as this server started (prepare, else first shard)
        # the code this process runs: hashed now, at start, since files edited later are not what it imported
        self.code = wire.code_fingerprint()

    @property
    def broken(self) -> bool:
        return self._broken.is_set()

    def prepare(self) -> None:
        """Import torch and the worker once, before the first request (what every CLI run pays)."""
        from gpu_batch.worker import __main__ as cli

        started = time.monotonic()
        cli.choose_compile_cache(os.environ)
        cli._import_worker_modules()
        self.import_s = time.monotonic() - started
        import torch

        self.threads = torch.get_num_threads()
        logger.info("resident worker pid %d: imports took %.1fs; shards' networks %s", os.getpid(), self.import_s,
                    "compiled (torch.compile)" if self.compile_models else "eager unless a shard asks for --compile")

    def bind(self) -> socket.socket | None:
        """Listen on the socket; None when another server already answers there."""
        path = self.socket_path
        wire.private_folder(path.parent)  # SharedFolder (an OSError) for /tmp itself and other users' folders
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                return None  # a live server: leave it be
            except OSError:
                path.unlink(missing_ok=True)  # a stale socket of a server that died
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old_umask)
        listener.listen(16)
        listener.settimeout(1.0)
        self._inode = os.stat(path).st_ino
        Path(str(path) + ".pid").write_text(str(os.getpid()), encoding="ascii")
        return listener

    def serve_forever(self, listener: socket.socket) -> None:
        inode = os.stat(self.socket_path).st_ino
        try:
            while True:
                try:
                    sock, _ = listener.accept()
                except socket.timeout:
                    if self._broken.is_set():
                        logger.error("resident worker pid %d: exiting after a shard failed unexpectedly", os.getpid())
                        return
                    with self._active_lock:
                        if self._active == 0 and self._stepped_aside.is_set():
                            logger.info("resident worker pid %d: stepped aside after %d shards, exiting",
                                        os.getpid(), self.shards_served)
                            return
                        idle = self._active == 0 and time.monotonic() - self._last_activity > self.idle_exit_s
                    if idle:
                        logger.info("resident worker pid %d: idle for %.0fs after %d shards, exiting", os.getpid(),
                                    self.idle_exit_s, self.shards_served)
                        return
                    continue
                with self._active_lock:
                    self._active += 1
                threading.Thread(target=self._serve_one, args=(sock,), name="resident-request", daemon=True).start()
        finally:
            listener.close()
            try:  # remove the socket only if it is still ours (not a successor's after a stale-socket takeover)
                if os.stat(self.socket_path).st_ino == inode:
                    self.socket_path.unlink()
                    Path(str(self.socket_path) + ".pid").unlink(missing_ok=True)
            except OSError:
                pass

    def _serve_one(self, sock: socket.socket) -> None:
        conn = _Connection(sock)
        try:
            request = wire.recv_message(sock)
            if request is None:
                return
            if request.get("type") == "ready":  # a pool preparing a task (client.wait_ready): accept() runs only
                reason = self.refusal(request)  # after prepare(), so an answer means the imports are done
                if reason:
                    self.step_aside(reason)
                    conn.send({"type": "refused", "reason": reason})
                else:
                    conn.send({"type": "ready", "pid": os.getpid(), "shards_served": self.shards_served})
                return
            if request.get("type") != "run":
                conn.send({"type": "done", "exit_code": 2, "summary": None,
                           "error": f"unknown request type {request.get('type')!r}"})
                return
            reason = self.refusal(request)
            if reason:
                self.step_aside(reason)
                conn.send({"type": "refused", "reason": reason})
                return
            with self._shard_lock:  # one shard at a time: the GPU, os.environ and the root logger are the server's
                if conn.gone.is_set():
                    return
                if self._broken.is_set():  # a shard failed while this one waited: the server is on its way out
                    conn.send({"type": "refused", "reason": BROKEN_REASON})
                    return
                self.shards_served += 1
                conn.send({"type": "accepted", "pid": os.getpid(), "shards_served": self.shards_served})
                threading.Thread(target=conn.watch, name="resident-watch", daemon=True).start()
                finished = threading.Event()
                threading.Thread(target=_stop_watchdog, args=(conn, finished), name="resident-stop-watchdog",
                                 daemon=True).start()
                try:
                    code, summary, after = self._run(request, conn)
                except Exception:  # noqa: BLE001 - answered as a crashed CLI would be; then the server exits
                    # Broken before the lock is released, so no shard waiting for its turn is accepted and then lost
                    # with the exiting server (exit 75, an attempt spent); the socket goes now, so such a client's
                    # second try starts a fresh server.
                    logger.exception("resident worker: the shard failed unexpectedly")
                    self._broken.set()
                    self.step_aside(BROKEN_REASON)
                    conn.send({"type": "done", "exit_code": 1, "summary": None})
                    return
                finally:
                    finished.set()
                conn.send({"type": "done", "exit_code": code, "summary": summary})
                if after is not None:  # the merge view: written while the next shard runs (gpu_batch.formats.mergeview)
                    threading.Thread(target=_after_shard, args=(after,), name="resident-merge-view",
                                     daemon=True).start()
        except wire.ProtocolError as exc:
            logger.warning("resident worker: bad request: %s", exc)
        except Exception:  # noqa: BLE001 - answered as a crashed CLI would be; then the server exits
            logger.exception("resident worker: the shard failed unexpectedly")
            self._broken.set()
            conn.send({"type": "done", "exit_code": 1, "summary": None})
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self._active_lock:
                self._active -= 1
                self._last_activity = time.monotonic()

    def refusal(self, request: Mapping[str, Any]) -> str:
        """Why this server must not run the shard (``resident_protocol``), or "" when it may."""
        code = request.get("code")
        if code is not None and code != self.code:
            return (f"this resident worker runs other worker code ({self.code}) than the task ({code}): an updated "
                    "image or checkout")
        if wire.wants_cuda([str(a) for a in request.get("argv") or []]) and not self.cuda_available():
            return "the shard asks for --device cuda and this resident worker has no CUDA device"
        return ""

    def cuda_available(self) -> bool:
        if self._cuda is None:
            import torch

            self._cuda = bool(torch.cuda.is_available())
        return self._cuda

    def step_aside(self, reason: str) -> None:
        """Stop taking shards: remove the socket now (if it is still this server's), so the next client starts a
        server of its own, and exit once the requests in hand are answered."""
        if not self._stepped_aside.is_set():
            logger.warning("resident worker pid %d: stepping aside: %s", os.getpid(), reason)
        self._stepped_aside.set()
        try:
            if self._inode is not None and os.stat(self.socket_path).st_ino == self._inode:
                self.socket_path.unlink()
                Path(str(self.socket_path) + ".pid").unlink(missing_ok=True)
        except OSError:
            pass

    def _run(self, request: Mapping[str, Any], conn: _Connection
             ) -> tuple[int, dict[str, Any] | None, Callable[[], None] | None]:
        """Run one shard with the request's command line and environment; its exit code, summary and the work left
        for after the answer (``ShardOutcome.after``)."""
        import torch

        from gpu_batch.worker import __main__ as cli
        from gpu_batch.worker.faults import Fault, FaultSpecError

        if self.threads is None:
            self.threads = torch.get_num_threads()
        argv = [str(a) for a in request.get("argv") or []]
        env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        process_started = float(request.get("process_started") or time.time())
        root = logging.getLogger()
        saved_level, saved_env, saved_cwd = root.level, dict(os.environ), os.getcwd()
        handler: logging.Handler | None = None
        try:
            _swap_environ(env)
            # in this thread, which runs the forward pass; the shard's own threads start with it (torch's lazy
            # per-thread init reads the count set here)
            torch.set_num_threads(_shard_threads(env, self.threads))
            cwd = request.get("cwd")
            if isinstance(cwd, str) and os.path.isdir(cwd):
                os.chdir(cwd)  # local-mode paths are the client's (one shard at a time: the folder is ours)
            args = cli.parse_args(argv, env)  # argparse's own messages go to this server's stderr
            if isinstance(args, int):
                conn.send({"type": "log", "line": f"bad worker arguments: {' '.join(argv)}"})
                return args, None, None
            args.compile = args.compile or self.compile_models  # the node's choice: its compile is paid once here
            level = logging.getLevelName(args.log_level.upper())
            handler = _StreamHandler(conn, level if isinstance(level, int) else logging.INFO)
            root.addHandler(handler)
            root.setLevel(min(handler.level, logging.INFO))
            try:
                fault = Fault.from_env(env)
            except FaultSpecError as exc:
                logging.getLogger("gpu_batch.worker").error("%s", exc)
                return cli.EXIT_BAD_INPUT, None, None

            def stop_check() -> None:
                if conn.gone.is_set():
                    raise cli.ShardCancelled("the client went away (terminated or killed)")

            try:
                outcome = cli.run_shard(args, env, fault, process_started=process_started, models=self.models,
                                        stop_check=stop_check, defer_view=True)
            except Exception:
                logging.getLogger("gpu_batch.worker").exception("the shard failed unexpectedly")  # to the client too
                raise
            summary = outcome.summary
            if summary is not None:
                summary["resident"] = {"server_pid": os.getpid(), "shard_number": self.shards_served,
                                       "server_import_s": round(self.import_s, 3), "models_cached": len(self.models),
                                       "torch_threads": torch.get_num_threads()}
            return outcome.code, summary, outcome.after
        finally:
            if handler is not None:
                root.removeHandler(handler)
            root.setLevel(saved_level)
            _swap_environ(saved_env, keep=())
            os.chdir(saved_cwd)
            torch.set_num_threads(self.threads)


def _shard_threads(env: Mapping[str, str], default: int) -> int:
    """The intra-op threads a shard runs with: its ``OMP_NUM_THREADS``, the count a CLI worker's torch would start
    with (a positive whole number; anything else, such as OpenMP's nested ``4,2``, is ignored), else ``default``."""
    raw = env.get("OMP_NUM_THREADS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def _after_shard(work: Callable[[], None]) -> None:
    """Run a shard's deferred work (its merge view, best effort: the merge reads the entries without it)."""
    try:
        work()
    except Exception:  # noqa: BLE001 - never the server's end: the shard's results are written already
        logger.exception("resident worker: a shard's merge view failed")


def _stop_watchdog(conn: _Connection, finished: threading.Event) -> None:
    """End the server when a shard whose client went away has not stopped ``STOP_GRACE_S`` later.

    Why: the pipeline checks for a stop after each result; a shard stuck elsewhere (a download that never returns)
    would otherwise hold the server, and every later client would queue behind it.
    """
    while not finished.is_set():
        if conn.gone.wait(1.0):
            break
    if finished.is_set():
        return
    if not finished.wait(STOP_GRACE_S):
        logger.error("resident worker pid %d: a shard whose client went away did not stop within %.0fs; exiting",
                     os.getpid(), STOP_GRACE_S)
        logging.shutdown()
        os._exit(exit_codes.SERVER_LOST)  # retryable, as the client's exit when a server is lost


def _swap_environ(env: Mapping[str, str], keep: Sequence[str] = PINNED_ENV) -> None:
    """Make ``os.environ`` equal ``env``, except the ``keep`` variables, which stay as they are."""
    kept = {k: os.environ[k] for k in keep if k in os.environ}
    for k in list(os.environ):
        if k not in env and k not in kept:
            del os.environ[k]
    for k, v in env.items():
        if k not in kept and os.environ.get(k) != v:
            os.environ[k] = v


STANDBY_POLL_S = 0.5  # how often a node's server that found another one answering asks whether it is gone


def _stand_by(server: Server) -> socket.socket:
    """Wait until no other server answers on ``server``'s socket, then bind it (``Server.bind``; a dead one's stale
    socket is removed there). Nothing is imported meanwhile: a server standing by holds no memory and no GPU.

    Why: on an Azure Batch node the pool's start task runs the node's server (``--idle-exit inf``,
    infra/app/batch.bicep), and a task may start while the start task still pulls the image or starts
    (``waitForSuccess`` false: "other Tasks can start executing on the Compute Node while the StartTask is still
    running", REST StartTask). Its client, finding no server, starts one in its own ``--rm`` container, which ends
    with that task (``gpu_batch.worker.client``; batch-docker-container-workloads.md: each task runs in a container
    of its own). The start task's server then found that one answering and exited 0, so the start task was done and
    never run again: every later task on the node started a server of its own and paid start-up per shard. The same
    after a start task retried (``maxTaskRetryCount``) while tasks ran. Asked every ``STANDBY_POLL_S``, which is
    shorter than a container's start, so the next task's client finds this server rather than starting another.
    """
    while True:
        time.sleep(STANDBY_POLL_S)
        listener = server.bind()
        if listener is not None:
            logger.info("resident worker pid %d: the other server on %s is gone; this one listens now", os.getpid(),
                        server.socket_path)
            return listener


def build_parser() -> argparse.ArgumentParser:
    """The command line (infra/app/batch.bicep's start task runs ``serve --idle-exit inf``; tests/infra parses it)."""
    p = argparse.ArgumentParser(prog="python -m gpu_batch.worker.resident", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the resident worker on a Unix socket")
    serve.add_argument("--socket", help=f"socket path (default: {wire.SOCKET_ENV} or the node's default)")
    serve.add_argument("--idle-exit", type=float, default=None,
                       help=f"seconds without a shard before exiting (default: {wire.IDLE_ENV} or "
                            f"{wire.DEFAULT_IDLE_S:.0f})")
    serve.add_argument("--cache-size", type=int, default=2, help="loaded models kept (default 2)")
    serve.add_argument("--compile", action="store_true", default=None,
                       help="run every shard's network through torch.compile (as the worker's --compile; default: "
                            f"{wire.COMPILE_ENV}). On a GPU node that runs shard after shard: the compile (26-49 s "
                            "on an H200) is paid by the node's first shard only, since the compiled model stays in "
                            "the model cache, and the forward passes then run ~16 %% faster than eager")
    serve.add_argument("--log-level", default="INFO")
    return p


def compiles_models(args: argparse.Namespace, env: Mapping[str, str]) -> bool:
    """``serve --compile``, else TRAPBATCH_RESIDENT_COMPILE (what a client passes on to a server it starts)."""
    return bool(args.compile) if args.compile is not None else wire.bool_setting(env, wire.COMPILE_ENV)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    if args.log_level.upper() != "DEBUG":
        quiet_azure_sdk()  # one INFO record per blob request otherwise (gpu_batch.sdk_logging)
    path = Path(args.socket) if args.socket else wire.default_socket_path(os.environ)
    if len(str(path).encode()) > wire.UNIX_PATH_MAX:
        logger.error("socket path %s is longer than a Unix socket path may be (%d bytes)", path, wire.UNIX_PATH_MAX)
        return 2
    idle = args.idle_exit if args.idle_exit is not None else wire.float_setting(os.environ, wire.IDLE_ENV,
                                                                                wire.DEFAULT_IDLE_S)
    server = Server(path, idle, args.cache_size, compiles_models(args, os.environ))
    try:
        listener = server.bind()
    except OSError as exc:
        logger.error("the resident worker cannot listen on %s: %s", path, exc)
        return 2
    if listener is None and idle != float("inf"):
        logger.info("a resident worker already answers on %s", path)
        return 0
    if listener is None:
        logger.info("a resident worker already answers on %s; this one (--idle-exit inf: the node's own) takes the "
                    "socket over when that one is gone", path)
        try:
            listener = _stand_by(server)
        except OSError as exc:
            logger.error("the resident worker cannot listen on %s: %s", path, exc)
            return 2
    try:  # bound before the imports, so a client's connection waits in the backlog instead of starting another
        server.prepare()
        server.serve_forever(listener)
    except KeyboardInterrupt:
        pass
    # Non-zero after a shard broke the server: as a Batch start task (infra/app/batch.bicep) it is then started again
    # (maxTaskRetryCount); idle, stepped aside or interrupted it has nothing to redo.
    return exit_codes.SERVER_LOST if server.broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
