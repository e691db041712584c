"""How ``python -m devhost`` stops on Ctrl-C (SIGINT) or SIGTERM: promptly, in order, and with nothing left running.

Why: a reviewer's Ctrl-C on a devhost with a task running left it running for over 25 s, until a SIGTERM ended it
by the default action, and the local pool's runner and resident worker (``gpu_batch/pool/local.py``: sessions of
their own, so that a *killed* host leaves them running, as Batch nodes outlive a recycled Functions instance) ran on
after it, against an Azurite devhost had stopped. Two causes: the interpreter's exit joins every activity thread
(``concurrent.futures`` joins its workers at exit), and an activity still running then met the stopped Azurite and
waited out the storage SDK's retries (minutes); and nothing told the app's processes to stop. Also, the SIGINT
handler stayed installed through that wait, so a second Ctrl-C did nothing.

The stop, first signal (``Stopper``): devhost says what it does, stops taking work, gives the activities in flight
``grace_s`` to finish (one still running then runs again at the next start: its work item stays in storage, as after a
kill), then sends SIGINT to every process the app started (``app_processes``: devhost's children; the resident worker
too, which its starter left, because devhost is their child subreaper, ``become_subreaper``), waits ``grace_s`` for
them and SIGKILLs what is left, with its process group; then Azurite stops and the process exits without waiting for
threads still running an activity. The local pool's runner hands its shard back on SIGINT (``local_runner``: the
task goes back to the queue, as Azure Batch requeues a task whose node is removed with ``requeue``), so it resumes at
the next start from the results it flushed, without spending one of the shard's attempts. A second signal stops at
once: the app's processes are SIGKILLed (a shard of theirs then counts as a failed attempt and is resubmitted with its
missing images at the next start), Azurite is stopped, and devhost exits.

A kill (SIGKILL) is unchanged: the runners go on without devhost and the next start takes them over.

Linux only for the process parts (``/proc``, ``prctl``); elsewhere devhost still stops its own threads promptly.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

STOP_GRACE_S = 10.0  # module docstring: for the activities in flight, then again for the app's processes
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
# In devhost's own environment, its pid while it stops (``announce_stop``); gpu_batch/pool/local.py reads the same name
STOPPING_ENV = "DEVHOST_STOPPING"


def announce_stop() -> None:
    """Tell the app, in this process, that the host is stopping, before any of its processes is sent SIGINT: the
    local pool then starts no task (its module docstring: Host stop), so none is started only to be stopped. Why the
    environment: devhost imports nothing of the app, and the app nothing of devhost; the value is this pid, so a
    child's inherited copy means nothing to the child. Why said, not inferred from a runner's SIGINT exit: a SIGINT
    that was no stop (``kill -INT`` on a runner) stopped the pool of a devhost that served on, for good."""
    os.environ[STOPPING_ENV] = str(os.getpid())


def withdraw_stop() -> None:
    """Undo ``announce_stop`` once ``main()`` returns (called in-process, as tests do, the caller goes on)."""
    if os.environ.get(STOPPING_ENV) == str(os.getpid()):
        del os.environ[STOPPING_ENV]


def become_subreaper() -> bool:
    """Make devhost the parent of every orphan among the processes below it (``prctl(PR_SET_CHILD_SUBREAPER)``,
    man 2 prctl: "a subreaper fulfills the role of init(1) for its descendant processes"). Why: the resident worker is
    started by a short-lived client of the pool's runner, in a session of its own; once that client exits, the server
    belonged to init and no stop of devhost could find it. The price: an orphan that exits while devhost runs (a
    resident worker idle for ``TRAPBATCH_RESIDENT_IDLE_S``, a worker whose runner was killed) is devhost's to wait
    for, which nothing else does (``OrphanReaper``). Returns whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class OrphanReaper:
    """Waits for the orphans devhost took in as their subreaper once they have exited, so they do not stay zombies.

    Why: with ``become_subreaper`` every orphan below devhost that exits (each idle exit of a resident worker, each
    worker whose runner the pool killed) stayed a ``<defunct>`` child of devhost until it exited: one process-table
    slot each, for a devhost that runs for days. Only zombies no ``subprocess.Popen`` of this process owns are waited
    for, and only once seen on two sweeps in a row: a Popen's own child waited for here would read as exit 0 to its
    owner (Popen takes ECHILD for 0), and the local pool keys on its runners' exit codes. devhost and the app start
    their processes with ``subprocess`` only (no ``multiprocessing``, no bare ``os.fork``)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._seen: set[int] = set()  # zombies not owned at the last sweep
        self._stop = threading.Event()

    def sweep(self) -> list[int]:
        """Wait for the zombie children seen unowned at the last sweep too; the pids waited for."""
        zombies = set(children(zombies=True))
        if not zombies:  # the usual case: no need to look for the Popen objects (a walk of the heap)
            self._seen = set()
            return []
        unowned = zombies - _popen_pids()
        reaped = []
        for pid in sorted(unowned & self._seen):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
            except ChildProcessError:  # its owner waited for it meanwhile
                pass
        self._seen = unowned - set(reaped)
        return reaped

    def start(self) -> "OrphanReaper":
        def run() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - a missed sweep is tried again at the next
                    pass

        threading.Thread(target=run, name="devhost-orphan-reaper", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


def _popen_pids() -> set[int]:
    """The pids of this process's ``subprocess.Popen`` objects not yet waited for (their owners wait for them)."""
    import gc
    import subprocess

    return {obj.pid for obj in gc.get_objects() if isinstance(obj, subprocess.Popen) and obj.returncode is None}


def children(zombies: bool = False) -> list[int]:
    """This process's children: the zombies among them with ``zombies``, else the live ones."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] == me and (stat[0] == "Z") == zombies:
            found.append(int(entry.name))
    return sorted(found)


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid from ``/proc/<pid>/stat`` (after the command, which may hold any
    character); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[0], int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def _running(pid: int) -> bool:
    found = _stat(pid)
    return found is not None and found[0] not in ("Z", "X")


def app_processes(exclude: set[int]) -> list[int]:
    """devhost's live children (not zombies) other than ``exclude`` (the Azurite devhost started, which it stops
    last): the processes the app started, and the orphans devhost took in as their subreaper."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is not None and stat[1] == me and stat[0] not in ("Z", "X") and pid not in exclude:
            found.append(pid)
    return sorted(found)


def describe(pid: int, width: int = 160) -> str:
    """``pid (command line)`` for the stop's message: from a Python module's ``-m`` on, cut to ``width``."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    cmd = cmd[cmd.find(" -m ") + 1:] if " -m " in cmd else cmd
    return f"{pid} ({cmd[:width]}{'...' if len(cmd) > width else ''})"


def _kill_group(pid: int, signum: int) -> None:
    """``signum`` to ``pid`` and, where it leads a process group (the pool's runners lead their own sessions), to
    that group: a runner's worker goes with it."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_app_processes(pids: list[int], grace_s: float, hurry: threading.Event,
                       exclude: set[int]) -> tuple[list[int], list[int]]:
    """SIGINT to each of ``pids``, and to each process that becomes devhost's child meanwhile (a resident worker whose
    starter has just ended, one started by an activity past its grace: ``app_processes`` but ``exclude``), up to
    ``grace_s`` in all (cut short by ``hurry``) for them to end; then SIGKILL to whatever still runs, with its process
    group. Returns the pids asked to stop and those that had to be killed."""
    deadline = time.monotonic() + grace_s
    asked: list[int] = []
    todo = list(pids)
    while todo:
        for pid in todo:
            try:
                os.kill(pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass
        asked += todo
        while any(_running(pid) for pid in asked) and time.monotonic() < deadline and not hurry.is_set():
            time.sleep(0.1)
        if time.monotonic() >= deadline or hurry.is_set():
            break
        todo = [pid for pid in app_processes(exclude) if pid not in asked]
    killed = [pid for pid in asked if _running(pid)]
    killed += [pid for pid in app_processes(exclude) if pid not in killed]
    for pid in dict.fromkeys(asked + killed):  # every group: a runner ended on SIGINT killed its worker already
        _kill_group(pid, signal.SIGKILL)
    return asked, killed


def kill_app_processes(exclude: set[int]) -> list[int]:
    """SIGKILL every process the app started and its process group (the second signal: at once)."""
    pids = app_processes(exclude)
    for pid in pids:
        _kill_group(pid, signal.SIGKILL)
    return pids


class Stopper:
    """SIGINT and SIGTERM: the first asks for the orderly stop (``requested``), the second stops at once
    (``at_once`` runs, then the process exits with 128 + the signal's number).

    Why the second one acts inside the handler: the orderly stop may be waiting (on the activities in flight, on a
    thread's join); a handler runs in the main thread between its waits, so it is the one way to stop at once."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.hurry = threading.Event()
        self.at_once: list[Callable[[], object]] = []  # run in order by the second signal; each one's errors ignored

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        announce_stop()  # at once: no pool starts a task from here, one a second signal's kill would leave running
        if not self.requested.is_set():
            self.requested.set()
            return
        self.hurry.set()
        print("devhost: stopping at once (a second signal): the app's processes are killed (a shard they ran is "
              "resubmitted with its missing images at the next start), Azurite is stopped", file=sys.stderr,
              flush=True)
        for step in self.at_once:
            try:
                step()
            except Exception:  # noqa: BLE001 - at once: the next step runs whatever this one met
                pass
        exit_now(128 + signum)


def exit_now(code: int) -> None:
    """End the process now, without the interpreter's join of threads still running an activity (module docstring):
    output flushed first."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def lingering_threads() -> list[threading.Thread]:
    """Threads other than this one still running: the interpreter's exit waits for those that are no daemons, and
    for every ``concurrent.futures`` worker, daemon or not (its ``_python_exit`` joins them; the activity workers are
    daemons, as the dispatcher thread that starts them is one)."""
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and t.is_alive()]
