"""``python -m devhost`` with a setting it refuses: one line saying which and why, exit 2, nothing started (as for a
missing AzureWebJobsStorage or a bad callers file), not a traceback."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from devhost.__main__ import cli_settings_line, main
from devhost.http_server import REQUEST_BODY_LIMIT_SETTING


def test_a_negative_request_body_limit_is_one_line_and_exit_2(storage_connection: str, unique_name: str,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A storage that answers, so that without the check devhost got as far as building its HTTP front, where the
    setting raised ValueError through ``main``."""
    monkeypatch.setenv(REQUEST_BODY_LIMIT_SETTING, "-1")
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    assert main(["--app", "tests.devhost.sample_app:app", "--port", "0", "--hub", unique_name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"devhost: {REQUEST_BODY_LIMIT_SETTING}=-1: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def _azurite_pids_under(location: Path) -> list[int]:
    """Processes whose command line names ``location`` (Azurite's ``--location``), found through /proc."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if str(location).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.parametrize("bad", [["--callers", "{missing}"], ["--event-grid", "no-equals-sign"],
                                 ["--event-grid-retry-scale", "0"]],
                         ids=["callers-file", "event-grid", "event-grid-retry-scale"])
def test_a_bad_argument_with_azurite_leaves_no_azurite_running(bad: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``--with-azurite`` with an argument devhost refuses: exit 2 with one line, and no Azurite of this run left
    behind (it used to start Azurite first and return 2 without stopping it: three orphaned node processes).
    ``start_azurite`` is given free ports instead of the fixed 10000-10002 so that the test clashes with nothing."""
    import devhost.azurite

    real_start = devhost.azurite.start_azurite
    monkeypatch.setattr(devhost.azurite, "start_azurite",
                        lambda location, ports: real_start(location=location, ports=None))
    monkeypatch.setenv("AzureWebJobsStorage", "")  # restored after main() set it to the Azurite it started
    location = tmp_path / "azurite"
    argv = [arg.replace("{missing}", str(tmp_path / "no-such-callers.json")) for arg in bad]
    try:
        assert main(["--with-azurite", "--azurite-location", str(location), "--key-file", str(tmp_path / "key"),
                     "--port", "0", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("devhost: ") and err.count("\n") == 1, err
        assert _azurite_pids_under(location) == []
    finally:
        for pid in _azurite_pids_under(location):  # without the fix: do not leave them to the next test
            os.kill(pid, signal.SIGKILL)


def test_with_azurite_on_a_port_another_program_holds_is_one_line_and_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--with-azurite`` takes the fixed ports 10000-10002; one held by another program (an Azurite already running,
    say) was an AzuriteError traceback. The squatter stands in for 10000, the other two ports are reserved ones
    (``PortReservation``, held until the test ends: Azurite listens beside the reservation): ports picked free and
    released at once could be handed to another pytest worker's server first, and the error then named that port,
    not ``taken``."""
    import socket

    import devhost.azurite

    real_start = devhost.azurite.start_azurite
    monkeypatch.setenv("AzureWebJobsStorage", "")
    location = tmp_path / "azurite"
    with socket.socket() as squatter, devhost.azurite.PortReservation(2) as others:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(5)
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(devhost.azurite, "start_azurite", lambda location, ports: real_start(
            location=location, ports=(taken, others.ports[0], others.ports[1])))
        try:
            assert main(["--with-azurite", "--azurite-location", str(location), "--key-file", str(tmp_path / "key"),
                         "--port", "0"]) == 2
        finally:
            for pid in _azurite_pids_under(location):
                os.kill(pid, signal.SIGKILL)
    err = capsys.readouterr().err
    assert err.startswith("devhost: --with-azurite: ") and f"port {taken}" in err and "Traceback" not in err, err
    assert _azurite_pids_under(location) == []


# ``python -m devhost`` as a test starts it: --with-azurite on free ports (not the fixed 10000-10002, which would
# clash with other pytest workers), and, with "term-after-port-file", a SIGTERM the moment the port file is written:
# what a caller does that stops devhost as soon as ``wait_for_port_file`` returns.
_DEVHOST = """
import os, signal, sys
import devhost.__main__ as cli
import devhost.azurite as azurite
real_start = azurite.start_azurite
azurite.start_azurite = lambda location, ports: real_start(location=location, ports=None)
if sys.argv[1] == "term-after-port-file":
    real_write = cli.write_port_file
    def write_then_term(*args):
        real_write(*args)
        os.kill(os.getpid(), signal.SIGTERM)
    cli.write_port_file = write_then_term
sys.exit(cli.main(sys.argv[2:]))
"""


def _start_devhost(tmp_path: Path, mode: str, app: str) -> tuple["subprocess.Popen[bytes]", Path, Path]:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    location, port_file = tmp_path / "azurite", tmp_path / "devhost.port"
    env = {**os.environ, "AzureWebJobsStorage": "",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root), os.environ.get("PYTHONPATH", "")])}
    with open(tmp_path / "devhost.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", _DEVHOST, mode, "--with-azurite", "--azurite-location",
                                 str(location), "--app", app, "--port", "0", "--port-file", str(port_file),
                                 "--key-file", str(tmp_path / "key"), "--hub", "sigtermhub"],
                                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, location, port_file


def test_sigterm_while_the_app_is_still_loading_stops_the_azurite_devhost_started(tmp_path: Path) -> None:
    """``--with-azurite`` starts Azurite (processes in sessions of their own) before it imports the app, which takes
    seconds; a SIGTERM then (a caller giving up on a slow start, ``kill``) ended devhost by the default action, no
    ``finally`` ran, and the three Azurite processes were left running. It must end devhost through its clean-up."""
    from tests.waiting import wait_until

    (tmp_path / "slow_loading_app.py").write_text(
        "import pathlib, time\npathlib.Path(__file__).with_name('loading').touch()\ntime.sleep(120)\napp = None\n")
    proc, location, _ = _start_devhost(tmp_path, "plain", "slow_loading_app:app")
    azurites = lambda: [pid for pid in _azurite_pids_under(location) if pid != proc.pid]  # noqa: E731
    try:
        wait_until(lambda: (tmp_path / "loading").exists() or proc.poll() is not None, 120, "the app to be loading")
        assert proc.poll() is None, (tmp_path / "devhost.log").read_text()
        assert len(azurites()) == 3  # started, before the app
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        wait_until(lambda: not azurites(), 30, "the Azurite processes to end")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in azurites():  # without the fix: do not leave them to the next test
            os.kill(pid, signal.SIGKILL)


def test_sigterm_as_soon_as_the_port_file_is_written_is_a_clean_stop(tmp_path: Path) -> None:
    """The port file says devhost is ready, so a caller may stop it the moment it appears: the SIGTERM handler must
    already be installed (it was installed after the file was written: the default action ended devhost with the file
    left behind and its Azurite running)."""
    proc, location, port_file = _start_devhost(tmp_path, "term-after-port-file", "tests.devhost.sample_app:app")
    try:
        code = proc.wait(120)
        assert code == 0, (code, (tmp_path / "devhost.log").read_text()[-3000:])
        assert not port_file.exists()
        assert _azurite_pids_under(location) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in _azurite_pids_under(location):
            os.kill(pid, signal.SIGKILL)


AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # published


def test_devhost_tells_the_trapbatch_command_its_settings_for_an_azurite_on_other_ports_too() -> None:
    """README: devhost "prints the function key and the settings the trapbatch command needs". Pointed (through
    AzureWebJobsStorage) at an Azurite started on other ports, since 10000-10002 were taken, it printed the key alone;
    the connection string is named, not printed, and a real account gets no such line."""
    other_ports = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
                   "BlobEndpoint=http://127.0.0.1:41000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:41001/"
                   "devstoreaccount1;TableEndpoint=http://127.0.0.1:41002/devstoreaccount1;")
    line = cli_settings_line("http://127.0.0.1:41071", "k3y", other_ports, own_azurite=False)
    assert line is not None and "export TRAPBATCH_URL=http://127.0.0.1:41071 TRAPBATCH_KEY=k3y" in line
    assert '--storage-connection "$AzureWebJobsStorage"' in line and AZURITE_KEY not in line
    default = cli_settings_line("http://127.0.0.1:7071", "k", "UseDevelopmentStorage=true", own_azurite=False)
    assert default is not None and "--storage-connection UseDevelopmentStorage=true" in default
    assert "UseDevelopmentStorage=true" in (cli_settings_line("http://h", "k", other_ports, own_azurite=True) or "")
    real = "DefaultEndpointsProtocol=https;AccountName=partner;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net"
    assert cli_settings_line("http://127.0.0.1:7071", "k", real, own_azurite=False) is None


def test_azurite_ports_taken_say_how_to_run_devhost_on_other_ones(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``--with-azurite`` takes 10000-10002 only: with one of them held by another program (another user's Azurite)
    it ended with "port 10000 is held by another program", and nothing said how to run devhost at all then."""
    from devhost import azurite

    def taken(**kwargs: object) -> None:
        raise azurite.PortTaken("port 10000 is held by another program (another Azurite?), not the azurite-blob "
                                "started for it")

    monkeypatch.setattr(azurite, "start_azurite", taken)
    assert main(["--with-azurite", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("devhost: --with-azurite: port 10000 is held by another program") and err.count("\n") == 1
    assert "without --with-azurite, AzureWebJobsStorage set to its connection string" in err, err
