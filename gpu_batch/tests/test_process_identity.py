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
