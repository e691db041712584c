"""Whether the process a LocalPool task row names is still that very process: its pid, start time and machine.

Why this module exists: LocalPool counted a runner dead when its heartbeat in the task table was older than
``DEAD_AFTER_S`` (60 s), even while its process ran, because a pid alone may name another process after a reboot or
once the kernel reuses it. So a storage outage longer than a minute (no heartbeat can be written, none read) cost every
running shard an attempt once storage came back, and the live worker raced its replacement. A pid together with the
process's start time (``/proc/<pid>/stat`` field 22, ``starttime``: clock ticks since boot, proc(5)) names one
process of one boot, and the boot id (``/proc/sys/kernel/random/boot_id``, a new random UUID at every boot, proc(5))
with the pid namespace (``/proc/self/ns/pid``, namespaces(7): a pid means something only inside its namespace; two
containers share a kernel's boot id but not their pids) says whether this machine can check it at all. Where it can,
the process's presence decides and the heartbeat's age does not matter. Where the row names another machine, container or boot, ``check`` answers
``ELSEWHERE``: only the heartbeat can tell, and this machine's process of that pid, if any, is not the runner. Where
it cannot tell at all (a row written before these fields, a system without ``/proc``), ``UNKNOWN``: the caller keeps
its old rule.

Must not: signal anything, or read the task table (``gpu_batch.pool.local`` does both). Linux only; elsewhere every
answer is ``UNKNOWN`` (fail safe: the old rule).
"""
from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Any, Mapping

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# The task-table fields beside ``Pid`` (strings: start ticks pass 2**31 after ~8 months up at 100 Hz, past what a
# table's Int32 holds)
START_FIELD = "PidStart"
HOST_FIELD = "PidHost"
_STARTTIME_INDEX = 19  # field 22 of /proc/<pid>/stat, counted from field 3 (the state), after the ")" ending comm


class Liveness(str, Enum):
    ALIVE = "alive"  # that process runs on this machine (not a zombie)
    GONE = "gone"  # no process with that pid here, or only its zombie: it ended
    REUSED = "reused"  # the pid is another process's now: the recorded one ended (and its process group with it)
    ELSEWHERE = "elsewhere"  # recorded on another machine, container or boot: the pid means nothing here
    UNKNOWN = "unknown"  # this machine cannot tell: a row without the fields, or no /proc here


def host_key() -> str | None:
    """This boot of this machine and this pid namespace, ``"<boot id>/pid:[<inode>]"``; None where ``/proc`` cannot
    say (not Linux, or it is not mounted)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from the state on; None when there is no such process. OSError when it
    exists but cannot be read. The command name may hold spaces and parentheses, so the split is after its last ")"."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot; None when it does not exist or cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fields = _stat(pid)
    except OSError:
        return None
    return int(fields[_STARTTIME_INDEX]) if fields else None


def record(pid: int) -> dict[str, str]:
    """The fields to store beside ``Pid`` for process ``pid`` (called by its parent before it is waited for, or by the
    process itself, so the pid cannot have been reused yet); empty where this machine cannot say."""
    host, start = host_key(), start_ticks(pid)
    if host is None or start is None:
        return {}
    return {START_FIELD: str(start), HOST_FIELD: host}


def identity(pid: int) -> str:
    """One string that names process ``pid`` of this boot and container (``record``'s fields after the pid), for a
    row that must tell that very process from a later one of the same pid (``local_runner``'s requeue names the
    pool's process that must not start the task again)."""
    fields = record(pid)
    return f"{pid}/{fields.get(START_FIELD, '')}/{fields.get(HOST_FIELD, '')}"


def check(pid: int, start: Any, host: Any) -> Liveness:
    """Whether the process recorded as ``pid`` with ``start`` ticks on ``host`` (``record``'s fields, as read back from
    the table: None when absent) still runs."""
    if not pid or start in (None, "") or not host:
        return Liveness.UNKNOWN
    here = host_key()
    if here is None:
        return Liveness.UNKNOWN
    if str(host) != here:
        return Liveness.ELSEWHERE
    try:
        expected = int(start)
        fields = _stat(pid)
    except (ValueError, OSError):  # a field this module did not write, or a process /proc will not show
        return Liveness.UNKNOWN
    if fields is None:
        return Liveness.GONE
    if int(fields[_STARTTIME_INDEX]) != expected:  # before the state: another process's zombie is still not ours
        return Liveness.REUSED
    return Liveness.GONE if fields[0] in ("Z", "X") else Liveness.ALIVE  # a zombie: a child not yet waited for


def check_row(row: Mapping[str, Any]) -> Liveness:
    """``check`` of a LocalPool task row's ``Pid`` and its ``record`` fields."""
    return check(int(row.get("Pid") or 0), row.get(START_FIELD), row.get(HOST_FIELD))
