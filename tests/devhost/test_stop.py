"""Ctrl-C on ``python -m devhost`` while an activity runs (devhost/stopping.py): the activity gets a bounded grace, then
devhost exits without waiting for it (it runs again at the next start); a second Ctrl-C stops at once.

Before: the interpreter's exit joined the activity's thread, so devhost ran on for as long as the activity did (a
reviewer's: over 25 s, against an Azurite it had stopped, until SIGTERM), and a second Ctrl-C did nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, storage_connection: str, hub: str) -> tuple["subprocess.Popen[bytes]", str, Path]:
    from devhost.port_file import wait_for_port_file

    port_file, log = tmp_path / "devhost.port", tmp_path / "devhost.log"
    env = {**os.environ, "AzureWebJobsStorage": storage_connection}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devhost", "--app", "tests.devhost.sample_app:app", "--port",
                                 "0", "--port-file", str(port_file), "--hub", hub, "--key-file",
                                 str(tmp_path / "function-key")], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, wait_for_port_file(port_file, proc, 120, log), log


def _napping(base: str, seconds: float) -> str:
    """Start an orchestration whose one activity sleeps ``seconds``; its instance id."""
    return str(requests.post(f"{base}/api/orchestrators/napping", json=seconds, timeout=30).json()["id"])


def _nap_running(hub: str, storage_connection: str) -> bool:
    from azure.data.tables import TableServiceClient

    table = TableServiceClient.from_connection_string(storage_connection).get_table_client(hub + "Activities")
    try:
        return any(e["Name"] == "nap" for e in table.list_entities())
    except Exception:  # noqa: BLE001 - the table comes with the first work item
        return False


def test_ctrl_c_with_an_activity_running_exits_after_a_bounded_grace(storage_connection: str, unique_name: str,
                                                                      tmp_path: Path) -> None:
    proc, base, log = _start(tmp_path, storage_connection, unique_name)
    try:
        _napping(base, 600)
        wait_until(lambda: _nap_running(unique_name, storage_connection), 60, "the nap activity")
        time.sleep(0.5)  # taken by the dispatcher (it polls every 0.1 s while there is work)
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)  # the grace (10 s) and the stop; before, the 600-s nap
        text = log.read_text()
        assert code == 0, text[-3000:]
        assert "1 activity will run again at the next start" in text, text[-3000:]
        assert time.monotonic() - began < 60
        assert _nap_running(unique_name, storage_connection)  # its work item stays for the next start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_second_ctrl_c_stops_at_once(storage_connection: str, unique_name: str, tmp_path: Path) -> None:
    proc, base, log = _start(tmp_path, storage_connection, unique_name)
    try:
        _napping(base, 600)
        wait_until(lambda: _nap_running(unique_name, storage_connection), 60, "the nap activity")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: "devhost: stopping (Ctrl-C again stops at once)" in log.read_text(), 30,
                   "the stop's first line")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)  # at once: well inside the first one's 10-s grace on an idle machine
        assert code == 128 + signal.SIGINT, log.read_text()[-3000:]
        assert "devhost: stopping at once" in log.read_text()
        assert not (tmp_path / "devhost.port").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_stop_tells_the_app_before_its_processes_are_sent_sigint(monkeypatch: pytest.MonkeyPatch) -> None:
    """devhost's stop says, in its own environment, that the host is stopping (its pid under ``STOPPING_ENV``, the
    name the local pool reads: gpu_batch/pool/local.py Host stop) before its activities' grace and before any SIGINT,
    so the local pool starts no task to be stopped; ``main()`` takes it back as it returns. Before, the pool inferred
    it from a runner's SIGINT exit, and a SIGINT that was no stop stopped the pool of a devhost that served on, for
    good."""
    import threading
    from types import SimpleNamespace

    import devhost.__main__ as entry
    from devhost import stopping
    from gpu_batch.pool import local

    assert stopping.STOPPING_ENV == local.HOST_STOPPING_ENV  # the one name both sides use
    seen: dict[str, object] = {}

    def host_stop(grace_s: float, hurry: threading.Event) -> int:
        seen["grace"] = local.host_stopping()
        return 0

    def stop_processes(pids: list[int], *_: object) -> tuple[list[int], list[int]]:
        seen["sigint"] = local.host_stopping()
        return [], []

    monkeypatch.delenv(stopping.STOPPING_ENV, raising=False)
    monkeypatch.setattr(entry, "app_processes", lambda exclude: [])
    monkeypatch.setattr(entry, "stop_app_processes", stop_processes)
    host = SimpleNamespace(engine=SimpleNamespace(running_activities=lambda: 0), stop=host_stop)
    entry._stop_in_order(host, stopping.Stopper(), set())  # type: ignore[arg-type]
    assert seen == {"grace": True, "sigint": True}
    stopping.withdraw_stop()  # as main() does on its way out: a caller in this process goes on
    assert not local.host_stopping()


REAPER_SCRIPT = r'''
import subprocess, sys, time
from devhost.stopping import OrphanReaper, become_subreaper, children

assert become_subreaper()
owned = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])  # its owner waits for it, late
for _ in range(3):  # orphans: the shell exits at once, its sleep is this process's child once the shell has gone
    subprocess.run(["sh", "-c", "sleep 0.1 & exit 0"], check=True)
deadline = time.monotonic() + 60
while (len(children(zombies=True)) < 4 or children()) and time.monotonic() < deadline:
    time.sleep(0.1)
assert len(children(zombies=True)) == 4 and not children(), (children(zombies=True), children())
reaper = OrphanReaper()
first = reaper.sweep()  # seen once: not yet
second = reaper.sweep()
print("reaped", len(first), len(second), "left", children(zombies=True) == [owned.pid], "owned exit", owned.wait())
'''


def test_the_orphans_devhost_takes_in_are_waited_for_not_its_own_children() -> None:
    """devhost is its processes' child subreaper (``become_subreaper``), so each orphan below it that exits (a resident
    worker idle, a worker whose runner was killed) is its child to wait for; ``OrphanReaper`` does (on a second sweep
    that still finds it), and never waits for a child a ``subprocess.Popen`` owns, whose exit code its owner reads
    (7 here, not the 0 Popen reports after an ECHILD). Before, every one stayed a zombie until devhost exited. In a
    process of its own: a subreaper stays one for the rest of its process."""
    done = subprocess.run([sys.executable, "-c", REAPER_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "reaped 0 3 left True owned exit 7", done.stdout + done.stderr


def test_the_first_signal_tells_the_app_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal handler says the host is stopping itself, not only the orderly stop that follows it in the main
    thread: a second signal's kill of the app's processes must not meet a runner the pool started in between (a
    session of its own: it would outlive devhost, against a stopped Azurite)."""
    from devhost import stopping
    from gpu_batch.pool import local

    monkeypatch.delenv(stopping.STOPPING_ENV, raising=False)
    stopper = stopping.Stopper()
    stopper._on_signal(signal.SIGINT, None)
    assert stopper.requested.is_set() and local.host_stopping()
    stopping.withdraw_stop()
