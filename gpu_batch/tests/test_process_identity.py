"""process_identity: a pid with its start time and this machine's boot names one process (LocalPool's liveness)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpu_batch.pool import process_identity as pi

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")


def test_this_process_checks_alive_and_any_mismatch_is_not():
    me = pi.record(os.getpid())
    assert set(me) == {pi.START_FIELD, pi.HOST_FIELD} and me[pi.HOST_FIELD] == pi.host_key()
    assert pi.check(os.getpid(), me[pi.START_FIELD], me[pi.HOST_FIELD]) is pi.Liveness.ALIVE
    assert pi.check(os.getpid(), str(int(me[pi.START_FIELD]) + 1), me[pi.HOST_FIELD]) is pi.Liveness.REUSED
    assert pi.check(os.getpid(), me[pi.START_FIELD], "another-boot/pid:[1]") is pi.Liveness.ELSEWHERE
    assert pi.check(os.getpid(), None, None) is pi.Liveness.UNKNOWN  # a row written before these fields
    assert pi.check(os.getpid(), "not a number", me[pi.HOST_FIELD]) is pi.Liveness.UNKNOWN
    assert pi.check(999_999_999, me[pi.START_FIELD], me[pi.HOST_FIELD]) is pi.Liveness.GONE
    assert pi.check(0, me[pi.START_FIELD], me[pi.HOST_FIELD]) is pi.Liveness.UNKNOWN


def test_an_ended_process_is_gone_as_a_zombie_and_once_waited_for():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    rec = pi.record(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: a zombie
    assert pi.check_row({"Pid": child.pid, **rec}) is pi.Liveness.GONE
    child.wait()
    assert pi.check_row({"Pid": child.pid, **rec}) is pi.Liveness.GONE


def test_without_proc_every_answer_is_unknown(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pi.sys, "platform", "darwin")
    assert pi.host_key() is None and pi.record(os.getpid()) == {}
    assert pi.check(os.getpid(), "1", "x/pid:[1]") is pi.Liveness.UNKNOWN


def test_the_host_key_names_this_boot_and_this_pid_namespace():
    """Two containers share a kernel's boot id but not their pids: the key must tell them apart."""
    with open(pi.BOOT_ID_PATH, encoding="ascii") as f:
        boot = f.read().strip()
    assert pi.host_key() == f"{boot}/{os.readlink('/proc/self/ns/pid')}"


def test_a_command_name_with_parentheses_and_spaces_does_not_shift_the_fields():
    """A process may name itself anything (``/proc/self/comm``, 15 bytes): "a) Z 1 (b" read from the first ")"
    looked like a zombie with another start time."""
    child = subprocess.Popen([sys.executable, "-c", "import time\n"
                              "open('/proc/self/comm', 'w').write('a) Z 1 (b')\n"
                              "print('named', flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"named\n"
        rec = pi.record(child.pid)
        assert pi.check_row({"Pid": child.pid, **rec}) is pi.Liveness.ALIVE
    finally:
        child.kill()
        child.wait()


def test_another_processs_zombie_under_the_recorded_pid_is_reused_not_gone():
    """Only the runner's own group may be stopped: a pid that is now another process's zombie is REUSED (which the
    pool leaves alone), not GONE (whose group it would signal)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    rec = pi.record(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie, with another start time than recorded
    try:
        other = {**rec, pi.START_FIELD: str(int(rec[pi.START_FIELD]) - 1)}
        assert pi.check_row({"Pid": child.pid, **other}) is pi.Liveness.REUSED
    finally:
        child.wait()
