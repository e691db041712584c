"""Azurite runs one process per storage service, so a busy Blob service does not hold the Table service's answers.

Why it matters: devhost reads an orchestration's status from tables; with the combined ``azurite`` process every table
read waited behind any long blob request (a batch delete held it for seconds at ten million images' shape). Azure's
Blob and Table services do not queue behind each other. The test freezes the blob process outright (SIGSTOP) and
expects tables and queues to answer anyway; with one process for all three they would not answer at all.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.azurite import SERVICES, Azurite, start_azurite


def test_each_service_is_its_own_process_and_a_frozen_blob_service_holds_no_table_read(tmp_path: Path) -> None:
    azurite = start_azurite(log_path=tmp_path / "azurite.log")
    try:
        pids = azurite.pids
        assert sorted(pids) == sorted(SERVICES)
        assert len(set(pids.values())) == 3
        os.kill(pids["blob"], signal.SIGSTOP)
        try:
            tables = TableServiceClient.from_connection_string(azurite.connection_string)
            queues = QueueServiceClient.from_connection_string(azurite.connection_string)
            started = time.monotonic()
            table = tables.create_table("frozenblobcheck")
            table.create_entity({"PartitionKey": "p", "RowKey": "r", "value": 1})
            assert table.get_entity("p", "r")["value"] == 1
            queues.create_queue("frozen-blob-check").send_message("hello")
            # Generous for a loaded CI machine; a combined process would never answer while its blob side is frozen
            # (the SDK's own retries would run for minutes before failing).
            assert time.monotonic() - started < 60
        finally:
            os.kill(pids["blob"], signal.SIGCONT)
    finally:
        azurite.stop()
    assert all(proc.poll() is not None for proc in azurite.processes.values())


def test_the_services_share_one_location_folder_and_keep_state_across_a_restart(tmp_path: Path) -> None:
    """Stopped and started again on the same ports (as the outage tests do: their clients keep the connection
    string), with the ports reserved (``PortReservation``) for the whole time: while Azurite is away nothing listens
    there (connections are refused, as to a free port), yet no bind that asks the kernel for a free port, as every
    port-0 pick of another pytest worker does, can be handed one, and Azurite listens there again."""
    import errno
    import socket

    import pytest

    from devhost.azurite import PortReservation

    location = tmp_path / "state"
    held = PortReservation(3)
    try:
        first = start_azurite(location=location, ports=held.ports)
        try:
            TableServiceClient.from_connection_string(first.connection_string).create_table("keptacrossrestart")
            QueueServiceClient.from_connection_string(first.connection_string).create_queue("kept-across-restart")
        finally:
            first.stop()
        for port in held.ports:  # the outage
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            with socket.socket() as stranger, pytest.raises(OSError) as refused:
                stranger.bind(("127.0.0.1", port))  # what a port-0 pick respects: the kernel skips the port
            assert refused.value.errno == errno.EADDRINUSE
        second = start_azurite(location=location, ports=held.ports)
        try:
            tables = [t.name for t in TableServiceClient.from_connection_string(second.connection_string).list_tables()]
            queues = [q.name for q in QueueServiceClient.from_connection_string(second.connection_string).list_queues()]
            assert "keptacrossrestart" in tables
            assert "kept-across-restart" in queues
        finally:
            second.stop()
    finally:
        held.close()


def test_a_port_another_program_took_is_an_error_not_a_silent_stranger(tmp_path: Path) -> None:
    """Ports are picked free and bound a moment later; a program that took one in between answers at once while the
    Azurite meant for it exits (EADDRINUSE). Starting must fail then, not hand out a connection string that reaches
    the other program (a CI run saw bare HTTP 400s to every blob request of one test module so). The other two
    ports are held (``PortReservation``; Azurite listens beside it) while it starts: ports picked free and released
    at once could be handed to another pytest worker's server first, and the error then named that port."""
    import socket

    import pytest

    from devhost.azurite import AzuriteError, PortReservation

    with socket.socket() as squatter, PortReservation(2) as others:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(5)
        taken = squatter.getsockname()[1]
        with pytest.raises(AzuriteError, match=f"port {taken}"):
            start_azurite(ports=(taken, others.ports[0], others.ports[1]), log_path=tmp_path / "azurite.log")


def test_a_port_counts_as_azurites_only_when_azurite_answers_there() -> None:
    """A bare connect counted another program's port as Azurite's; under load the Azurite meant for it exited
    (EADDRINUSE) after the settle wait, and starting handed out that port. Only Azurite's own answer
    (``Server: Azurite-...``) counts now, whenever it exits."""
    import socket
    import threading

    from devhost.azurite import _azurite_answers

    with socket.socket() as squatter:  # accepts connections, never answers
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(5)
        assert not _azurite_answers(squatter.getsockname()[1], timeout_s=0.5)

    with socket.socket() as web:  # answers HTTP, but is not Azurite
        web.bind(("127.0.0.1", 0))
        web.listen(5)

        def answer() -> None:
            conn, _ = web.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        assert not _azurite_answers(web.getsockname()[1])


def test_azurites_own_ports_answer_as_azurite(azurite: Azurite) -> None:
    from devhost.azurite import _azurite_answers

    assert all(_azurite_answers(port) for port in (azurite.blob_port, azurite.queue_port, azurite.table_port))


def test_a_port_another_azurite_holds_counts_as_taken_not_as_ours(azurite: Azurite) -> None:
    """The CI failure: a test module's blob port was, by the time its Azurite bound it, another module's
    ``azurite-table`` (ports are picked free and bound a moment later; two pytest workers picked the same one). That
    port answers ``Server: Azurite-Table``; the module's own blob process was still starting, so it had not yet exited
    on EADDRINUSE, and every blob request got the table service's "resource name contains invalid characters". Here a
    running process that is not the one listening stands for that slow starter: the port must not count as its."""
    import subprocess
    import sys

    import pytest

    from devhost.azurite import PortTaken, _azurite_answers, _wait_ports

    assert _azurite_answers(azurite.table_port, service="table")
    assert not _azurite_answers(azurite.table_port, service="blob")
    slow_starter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for name in ("azurite-blob", "azurite-table"):
            started = time.monotonic()
            with pytest.raises(PortTaken, match=f"port {azurite.table_port}"):
                _wait_ports({azurite.table_port: (name, slow_starter)}, time.monotonic() + 30, None)
            assert time.monotonic() - started < 20  # told at once, not at the deadline
    finally:
        slow_starter.kill()
        slow_starter.wait()


def test_free_ports_another_azurite_took_are_picked_again(azurite: Azurite, monkeypatch: Any) -> None:
    """Picking free ports again is what a lost race asks for: the caller asked for no ports in particular. The first
    pick here is handed another Azurite's ports (as a program binding fixed ports, or a platform where nothing can be
    held, may leave it)."""
    import devhost.azurite as module

    class Stranger(module.PortReservation):
        def __init__(self, count: int = 3) -> None:
            super().__init__(0)
            self.ports = (azurite.table_port, azurite.queue_port, azurite.blob_port)

    picks = iter([Stranger])
    real = module.PortReservation
    monkeypatch.setattr(module, "PortReservation", lambda count=3: next(picks, real)(count))
    fresh = start_azurite()
    try:
        assert {fresh.blob_port, fresh.queue_port, fresh.table_port}.isdisjoint(
            {azurite.blob_port, azurite.queue_port, azurite.table_port})
        container = "picked-again"
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(fresh.connection_string).create_container(container)
        assert container in [c.name for c in BlobServiceClient.from_connection_string(
            fresh.connection_string).list_containers()]
        assert container not in [c.name for c in BlobServiceClient.from_connection_string(
            azurite.connection_string).list_containers()]
    finally:
        fresh.stop()


def test_a_port_its_service_listens_on_through_a_child_process_counts_as_its_own() -> None:
    """An ``azurite-blob`` found on PATH may be a wrapper that runs node as its child rather than exec'ing it (a shell
    script without ``exec``, a version manager's shim): the listening socket is then the child's, and the started
    process's own descriptors hold none. That must not read as "held by another program" (``PortTaken``, then three
    failed picks): the process and its descendants are the service. The child listens on a port of its own pick
    (port 0) and prints it: a port picked here and released for the child to bind could be handed to another pytest
    worker's server meanwhile, and the child's bind would then fail."""
    import subprocess
    import sys

    from devhost.azurite import _owner
    from tests.waiting import wait_until

    listener = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
                "print(s.getsockname()[1], flush=True); time.sleep(60)")
    wrapper = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{listener}"; true'],
                               start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert wrapper.stdout is not None
        said = wrapper.stdout.readline()  # once the child listens; b"" if it ended first
        assert said.strip().isdigit(), said
        port = int(said)
        wait_until(lambda: _owner(port, wrapper) is not None, 30, "the child to listen")
        assert _owner(port, wrapper) is True
    finally:
        os.killpg(wrapper.pid, signal.SIGKILL)
        wrapper.wait()
        if wrapper.stdout is not None:
            wrapper.stdout.close()


def test_stopping_a_service_started_through_a_wrapper_stops_its_child_too() -> None:
    """The wrapper ``azurite-<service>`` that ``_owner`` counts as the service (the test above) runs the service as
    its child; a stop that signalled the wrapper alone left that child running, listening on the port, after the
    wrapper ended (by the signal, or killed at the stop's timeout): a leaked process and a port taken for good. Each
    service runs in a session of its own (``start_new_session``), so its whole group is signalled."""
    import subprocess
    import sys

    from devhost.azurite import _descendants
    from tests.waiting import wait_until

    wrapper = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "import time; time.sleep(60)"; true'],
                               start_new_session=True)
    try:
        wait_until(lambda: len(_descendants(wrapper.pid)) > 1, 30, "the wrapper to start its child")
        child = max(_descendants(wrapper.pid) - {wrapper.pid})
        Azurite({"blob": wrapper}, 0, 0, 0, None).stop(timeout=5.0)
        assert wrapper.poll() is not None
        wait_until(lambda: not Path(f"/proc/{child}").exists()
                   or Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0] == "Z",
                   10, "the wrapper's child to end")
    finally:
        try:
            os.killpg(wrapper.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wrapper.wait()


def test_every_service_starts_without_the_telemetry_sdk_it_would_not_use(azurite: Azurite, tmp_path: Path,
                                                                         monkeypatch: Any) -> None:
    """devhost/azurite_no_telemetry.js is preloaded into each service (NODE_OPTIONS): with --disableTelemetry, which
    every start passes, ``require("applicationinsights")`` is an empty object, a third of a start's CPU saved; without
    it, the real package. The preload's path is quoted, so a checkout in a folder with spaces works too."""
    import json
    import shutil
    import subprocess

    from devhost import azurite as azurite_module
    from devhost.azurite import NO_TELEMETRY, service_env

    for pid in azurite.pids.values():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        options = [v for v in environ if v.startswith(b"NODE_OPTIONS=")]
        assert options and str(NO_TELEMETRY).encode() in options[0], options
        assert "--disableTelemetry" in Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    spaced = tmp_path / "a folder" / "no telemetry.js"
    spaced.parent.mkdir()
    shutil.copyfile(NO_TELEMETRY, spaced)
    monkeypatch.setattr(azurite_module, "NO_TELEMETRY", spaced)
    probe = ("const m = require('applicationinsights');"
             "console.log(JSON.stringify({keys: Object.keys(m).length, setup: typeof m.setup}))")
    node_modules = Path(azurite_module.__file__).resolve().parents[1] / "node_modules"
    env = service_env({**os.environ, "NODE_OPTIONS": "--no-warnings", "NODE_PATH": str(node_modules)})
    assert env["NODE_OPTIONS"].startswith("--no-warnings --require ")

    def loaded(*args: str) -> dict[str, Any]:
        proc = subprocess.run(["node", "-e", probe, "--", *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    assert loaded("--disableTelemetry") == {"keys": 0, "setup": "undefined"}
    real = loaded()  # the real SDK, where telemetry is wanted
    assert real["setup"] == "function" and real["keys"] > 5
