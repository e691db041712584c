"""devhost runs a v2-model Durable app through the real SDK replay, with its state in Azurite."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from devhost.host import DevHost
from tests.devhost import sample_app
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]




@pytest.fixture
def host(storage_connection: str, unique_name: str) -> Iterator[DevHost]:
    h = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.3)
    h.start()
    yield h
    h.stop()


def test_activities_fan_out_fan_in_custom_status_and_async_activity(host: DevHost) -> None:
    iid = host.start_orchestration("fanout", ["Tokyo", "Seattle", "London"])
    st = host.wait_for(iid, 30)
    assert st["runtimeStatus"] == "Completed"
    assert st["output"] == {"results": ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], "doubled": {"n": 6}}
    assert st["customStatus"] == {"stage": "doubled", "n": 3}


def test_timer_caught_activity_failure_and_sub_orchestrations(host: DevHost) -> None:
    iid = host.start_orchestration("features")
    st = host.wait_for(iid, 30)
    out = st["output"]
    assert st["runtimeStatus"] == "Completed", st
    # as the extension words a Python activity's failure (devhost fidelity row 32)
    assert out["caught"].startswith("Activity function 'say_hello' failed:  ValueError: activity exploded for Boom")
    assert out["child"] == {"results": ["Hello Oslo!"], "doubled": {"n": 2}}
    assert out["child2"]["results"] == ["Hello Rome!"]
    assert out["waited"] >= 0.3  # the durable timer really waited (real clock)
    assert host.get_status("fixed-child-id")["runtimeStatus"] == "Completed"  # explicit sub-orchestration id


def test_external_event_wins_task_any_and_timeout_wins_without_it(host: DevHost) -> None:
    waiting = host.start_orchestration("approval", 60)
    wait_until(lambda: host.get_status(waiting)["runtimeStatus"] == "Running", 10, "approval to run")
    host.raise_event(waiting, "Approve", {"by": "alice"})
    assert host.wait_for(waiting, 30)["output"] == {"approved": {"by": "alice"}}
    early = host.start_orchestration("approval", 60)
    host.raise_event(early, "Approve", {"by": "bob"})  # raised before the orchestrator waits: buffered
    assert host.wait_for(early, 30)["output"] == {"approved": {"by": "bob"}}
    timeout = host.start_orchestration("approval", 0.3)
    assert host.wait_for(timeout, 30)["output"] == {"approved": None}


def test_continue_as_new_restarts_with_new_input_and_small_history(host: DevHost) -> None:
    iid = host.start_orchestration("counter", {"n": 0, "target": 3})
    st = host.wait_for(iid, 30)
    assert st["output"] == {"n": 3} and st["input"] == {"n": 3, "target": 3}
    doc = host.store.load_history(iid)
    assert doc is not None
    names = [e.get("Name") for e in doc["history"] if e["EventType"] == 4]
    assert names == ["say_hello"]  # only the last generation's history is kept


def test_retry_options_retry_until_success_or_attempts_run_out(host: DevHost) -> None:
    sample_app.ATTEMPTS.clear()
    iid = host.start_orchestration("retrying", {"ok": ["a:2", "b:1", "c:3"], "fail": "d:9"})
    st = host.wait_for(iid, 60)
    assert st["runtimeStatus"] == "Completed", st
    assert st["output"]["ok"] == ["a:2 ok after 2", "b:1 ok after 1", "c:3 ok after 3"]
    assert st["output"]["after"] == "Hello after-retries!"
    assert st["output"]["failed"].startswith("Activity function 'flaky' failed:  RuntimeError: flaky d:9 failed on "
                                             "attempt 3")
    assert sample_app.ATTEMPTS["d:9"] == 3  # max_number_of_attempts honoured


def test_terminate_stops_a_running_orchestration(host: DevHost) -> None:
    iid = host.start_orchestration("sleepy")
    wait_until(lambda: host.get_status(iid)["customStatus"] == "sleeping", 10, "sleepy to start")
    host.terminate(iid, "enough")
    st = host.wait_for(iid, 10)
    assert st["runtimeStatus"] == "Terminated" and st["output"] == "enough"


def test_orchestrator_exception_fails_the_instance_with_its_message(host: DevHost) -> None:
    """The output is the extension's: "Orchestrator function '<name>' failed: <error>" (azure-functions-durable-extension
    src/WebJobs.Extensions.DurableTask/Listener/OutOfProcOrchestrationShim.cs ScheduleDurableTaskEvents)."""
    st = host.wait_for(host.start_orchestration("failing"), 30)
    assert st["runtimeStatus"] == "Failed" and st["output"].startswith("Orchestrator function 'failing' failed: "
                                                                       "orchestrator bug"), st


def test_non_deterministic_replay_fails_the_orchestration(host: DevHost) -> None:
    """A replay that schedules another activity where history has one fails the orchestration, as DTFx's
    TaskOrchestrationContext.HandleTaskScheduledEvent does (Azure/durabletask src/DurableTask.Core/
    TaskOrchestrationContext.cs; more cases in test_fidelity.py)."""
    sample_app.NONDET_FLAG.update(value="a", activity="say_hello", kind="activity")
    iid = host.start_orchestration("nondet")
    wait_until(lambda: host.get_status(iid)["customStatus"] == "waiting", 20, "the first step to be done")
    sample_app.NONDET_FLAG["activity"] = "Double"  # replay now schedules Double where history has say_hello
    try:
        host.raise_event(iid, "Go")
        st = host.wait_for(iid, 30)
    finally:
        sample_app.NONDET_FLAG.update(value="a", activity="say_hello", kind="activity")
    assert st["runtimeStatus"] == "Failed" and "Non-Deterministic workflow detected" in st["output"]


def test_completion_for_an_unscheduled_task_id_is_rejected(host: DevHost) -> None:
    iid = host.start_orchestration("sleepy")
    wait_until(lambda: host.get_status(iid)["runtimeStatus"] == "Running", 10, "sleepy to run")
    from devhost import history as h

    host.store.add_message(iid, h.event(h.TASK_COMPLETED, TaskScheduledId=42, Result='"x"'),
                           host.store.get_instance(iid)["ExecutionId"])
    host.engine.wake.set()
    st = host.wait_for(iid, 10)
    assert st["runtimeStatus"] == "Failed" and "never scheduled" in st["output"]


def test_http_trigger_and_durable_client_through_the_management_api(host: DevHost) -> None:
    r = requests.post(host.base_url + "/api/orchestrators/fanout", json=["Oslo", "Rome"], timeout=10)
    assert r.status_code == 202
    links = r.json()
    assert links["statusQueryGetUri"].startswith(host.base_url)
    iid = links["id"]
    status = wait_until(lambda: (lambda b: b if b["runtimeStatus"] == "Completed" else None)(
        requests.get(f"{host.base_url}/api/status/{iid}", timeout=10).json()), 30, "completion via client")
    assert status["output"]["results"] == ["Hello Oslo!", "Hello Rome!"]
    direct = requests.get(links["statusQueryGetUri"], timeout=10)
    assert direct.status_code == 200 and direct.json()["output"] == status["output"]
    # raise_event and terminate through the SDK client
    waiting = host.start_orchestration("approval", 60)
    assert requests.post(f"{host.base_url}/api/events/{waiting}/Approve", json={"ok": 1}, timeout=10).status_code == 202
    # the SDK posts the data's JSON as a JSON string, which reaches the orchestrator as such (fidelity row 36)
    assert host.wait_for(waiting, 30)["output"] == {"approved": '{"ok": 1}'}
    sleeper = host.start_orchestration("sleepy")
    assert requests.post(f"{host.base_url}/api/terminate/{sleeper}", timeout=10).status_code == 202
    assert host.wait_for(sleeper, 10)["runtimeStatus"] == "Terminated"
    # the public webhook needs the extension's system key, which the management URLs carry as code=
    assert requests.get(f"{host.base_url}/runtime/webhooks/durabletask/instances/nope", timeout=10).status_code == 401
    missing = requests.get(links["statusQueryGetUri"].replace(iid, "nope"), timeout=10)
    assert missing.status_code == 404
    assert requests.get(host.base_url + "/api/nothing-here", timeout=10).status_code == 404


def test_blob_trigger_fires_once_per_blob_version_even_after_restart(storage_connection: str, unique_name: str) -> None:
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(storage_connection)
    try:
        blobs.create_container("drops")
    except Exception:
        pass
    name = f"{unique_name}.json"
    blobs.get_blob_client("drops", name).upload_blob(json.dumps(["Drop"]), overwrite=True)

    def fanouts(h: DevHost) -> list[dict[str, Any]]:
        return [i for i in h.store.list_instances() if i.get("Name") == "fanout"]

    h = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.2).start()
    try:
        wait_until(lambda: fanouts(h), 20, "the blob trigger to start an orchestration")
        time.sleep(1.0)  # several more polls
        assert len(fanouts(h)) == 1
    finally:
        h.stop()
    h = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.2).start()
    try:
        time.sleep(1.0)
        assert len(fanouts(h)) == 1  # receipts survive the restart
        blobs.get_blob_client("drops", name).upload_blob(json.dumps(["Again"]), overwrite=True)
        wait_until(lambda: len(fanouts(h)) == 2, 20, "the overwritten blob to fire again")
    finally:
        h.stop()


def test_the_containers_blob_triggers_watch_exist_once_devhost_runs(storage_connection: str,
                                                                    unique_name: str) -> None:
    """As a deployment creates them (infra/main.bicep: ``incoming``), so a local drop is not lost in a container
    nobody made; a container that exists is left as it is."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(storage_connection)
    for name in ("drops", "poisoned"):
        try:
            blobs.delete_container(name)
        except ResourceNotFoundError:
            pass
    blobs.create_container("drops")
    blobs.get_blob_client("drops", "kept.txt").upload_blob(b"kept")
    h = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.2).start()
    try:
        assert blobs.get_container_client("poisoned").exists()
        assert blobs.get_blob_client("drops", "kept.txt").download_blob().readall() == b"kept"
    finally:
        h.stop()


def test_python_m_devhost_on_port_0_writes_the_port_it_listens_on_to_its_port_file(
        storage_connection: str, unique_name: str, tmp_path: Path) -> None:
    """``--port 0 --port-file``: the port comes from devhost's own bind, never from a caller's pick that another
    program may take first (a CI run's requests reached another module's Azurite that way); the file is written once
    devhost listens, names this very process, and is removed at a clean stop."""
    from devhost.azurite import _listening_inodes, _socket_inodes
    from devhost.port_file import read_port_file, wait_for_port_file

    port_file = tmp_path / "devhost.port"
    port_file.write_text(json.dumps({"port": 1, "pid": 1, "base_url": "http://127.0.0.1:1"}))  # an earlier run's
    env = {**os.environ, "AzureWebJobsStorage": storage_connection}
    log = tmp_path / "devhost.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devhost", "--app", "tests.devhost.sample_app:app", "--port",
                                 "0", "--port-file", str(port_file), "--hub", unique_name, "--key-file",
                                 str(tmp_path / "function-key")], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = wait_for_port_file(port_file, proc, 120, log)
        port = int(base.rsplit(":", 1)[1])
        assert read_port_file(port_file) == {"port": port, "pid": proc.pid, "base_url": f"http://127.0.0.1:{port}"}
        assert port != 0 and _listening_inodes(port) & _socket_inodes(proc.pid)  # this devhost holds it
        assert requests.get(f"{base}/api/none", timeout=30).status_code == 404
        assert f"on {base}/api/" in log.read_text()  # the startup line names it too
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not port_file.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_kill_9_mid_orchestration_then_restart_completes_each_step_once(storage_connection: str, unique_name: str,
                                                                      tmp_path: Path) -> None:
    """Each start takes a port of devhost's own (``--port 0 --port-file``); the restarted devhost, on another port,
    resumes the same task hub, and the management URL the first one handed out works once its origin is the new
    one's (its system key survives the restart)."""
    from devhost.port_file import wait_for_port_file

    marker = tmp_path / "ran.txt"
    port_file = tmp_path / "devhost.port"
    env = {**os.environ, "AzureWebJobsStorage": storage_connection, "SAMPLE_SLOW_S": "0.6"}
    env.pop("TRAPBATCH_DEVHOST_FUNCTION_KEY", None)  # devhost generates a key, keeps it in --key-file, prints it
    cmd = [sys.executable, "-m", "devhost", "--app", "tests.devhost.sample_app:app", "--port", "0", "--port-file",
           str(port_file), "--hub", unique_name, "--key-file", str(tmp_path / "function-key")]
    log = open(tmp_path / "devhost.log", "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = wait_for_port_file(port_file, proc, 120, tmp_path / "devhost.log")
        r = requests.post(f"{base}/api/orchestrators/slow_steps", json=str(marker), timeout=10)
        iid, status_url = r.json()["id"], r.json()["statusQueryGetUri"]
        assert status_url.startswith(base + "/")
        wait_until(lambda: marker.exists() and marker.read_text().count("ran") >= 1, 30, "the first step")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        first_base, base = base, wait_for_port_file(port_file, proc, 120, tmp_path / "devhost.log")
        status_url = base + status_url.removeprefix(first_base)
        key = (tmp_path / "function-key").read_text().strip()
        log_text = wait_until(lambda: (lambda t: t if "function key (kept in" in t else None)(
            (tmp_path / "devhost.log").read_text()), 30, "devhost to print its key again")
        assert f"function key (generated, written to {tmp_path / 'function-key'}): {key}" in log_text
        assert f"function key (kept in {tmp_path / 'function-key'}): {key}" in log_text  # the same key after restart
        assert requests.get(f"{base}/api/secure/echo", headers={"x-functions-key": key}, timeout=10).status_code == 200
        final = wait_until(lambda: (lambda b: b if b.get("runtimeStatus") in ("Completed", "Failed") else None)(
            requests.get(status_url, timeout=10).json()), 60, "completion")  # the key survives the restart
        assert final["runtimeStatus"] == "Completed", final
        assert final["output"] == ["slept"] * 4  # every step's result present exactly once
        runs = marker.read_text().count("ran")
        assert 4 <= runs <= 5  # at-least-once: the step in flight at the kill may run twice, no more
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_storage_error_between_history_and_effects_loses_no_work(host: DevHost) -> None:
    """The dispatcher saves an episode's history, then the instance row, then queues the work it scheduled. A storage
    error after the history (here: the instance row's write fails once, as an Azurite connection reset did in a
    20,000-image benchmark run) used to leave the scheduled activities recorded but never queued: the instance hung.
    The Durable extension abandons such a work item and loses nothing; devhost now repairs it the same way."""
    store = host.store
    original = store.put_instance
    failures: list[str] = []

    def put_instance_failing_once(iid: str, **fields: Any) -> None:
        # fail the first write that follows a saved episode whose work is not yet queued
        if not failures and fields.get("Status") == "Running" and "CustomStatus" in fields:
            failures.append(iid)
            raise ConnectionResetError(104, "Connection reset by peer (injected)")
        original(iid, **fields)

    store.put_instance = put_instance_failing_once  # type: ignore[method-assign]
    try:
        iid = host.start_orchestration("fanout", ["Tokyo", "Seattle", "London"])
        st = host.wait_for(iid, 120)
    finally:
        store.put_instance = original  # type: ignore[method-assign]
    assert failures == [iid]  # the fault was hit, in this instance's first episode
    assert st["runtimeStatus"] == "Completed"
    assert st["output"] == {"results": ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], "doubled": {"n": 6}}


def test_an_activity_in_a_stale_listing_runs_once(host: DevHost, tmp_path: Path) -> None:
    """The activity dispatcher lists the work items, then submits each one not already running. A listing taken
    while an activity ran and read after it finished still shows it: devhost ran it again, and the second run's
    completion replaced the first's (a CI run: ``exports_combine`` succeeded, deleted its fragments, and the
    orchestrator was handed the second run's BlobNotFound). Here every listing also returns the rows earlier
    listings showed, as a slow listing would: each step must still run once."""
    marker = tmp_path / "ran.txt"
    store = host.engine.store
    real_list = store.list_activities
    seen: dict[str, dict[str, Any]] = {}
    stale_served: list[int] = []

    def stale_listing() -> list[dict[str, Any]]:
        rows = real_list()
        live = {r["PartitionKey"] + "/" + r["RowKey"] for r in rows}
        stale = [r for k, r in seen.items() if k not in live]
        stale_served.append(len(stale))
        seen.update({r["PartitionKey"] + "/" + r["RowKey"]: r for r in rows})
        return rows + stale

    store.list_activities = stale_listing  # type: ignore[method-assign]
    try:
        iid = host.start_orchestration("slow_steps", str(marker))
        st = host.wait_for(iid, 120)
        served_at_end = sum(1 for n in stale_served if n)
        wait_until(lambda: sum(1 for n in stale_served if n) >= served_at_end + 3, 60,
                   "three more listings with finished steps in them")
        wait_until(lambda: not host.engine._inflight or marker.read_text().count("ran") > 4, 60,
                   "no activity in flight (or a step run again)")
    finally:
        store.list_activities = real_list  # type: ignore[method-assign]
    assert st["runtimeStatus"] == "Completed", st
    assert st["output"] == ["slept"] * 4
    assert marker.read_text().count("ran") == 4  # each step once, though finished steps were listed again


def test_an_activitys_first_completion_wins(host: DevHost) -> None:
    """DTFx processes a task's first completion and drops later ones; devhost's completion messages have one id per
    task, and a second one must not replace the first while it waits."""
    store = host.engine.store
    first = {"EventType": 5, "TaskScheduledId": 7, "Result": '"first"'}
    second = {"EventType": 6, "TaskScheduledId": 7, "Reason": "BlobNotFound"}
    store.add_message("first-wins", first, "exec", message_id="act-exec-000007", first_wins=True)
    store.add_message("first-wins", second, "exec", message_id="act-exec-000007", first_wins=True)
    queued = [m for m in store.list_messages() if m["InstanceId"] == "first-wins"]
    assert [store.message_event(m) for m in queued] == [first]
    store.delete_messages_of("first-wins")


def test_diagnostics_describe_a_live_host_its_pools_loop_and_threads(host: DevHost) -> None:
    """What the integration tests print when a request to devhost times out (devhost/diagnostics.py)."""
    from devhost.diagnostics import describe_live_hosts

    iid = host.start_orchestration("fanout", ["Tokyo"])
    host.wait_for(iid, 60)
    text = describe_live_hosts()
    assert f"host {host.base_url} (hub {host.hub}, rpc port {host.rpc_port})" in text
    assert "devhost HTTP pool: " in text and "activity pool: " in text and "pending tasks on the loop" in text
    assert "--- thread devhost-http" in text and "--- thread MainThread" in text
    host.stop()
    assert f"host {host.base_url}" not in describe_live_hosts()  # a stopped host is no longer described


def test_web_serves_a_blob_as_the_static_website_does(host: DevHost) -> None:
    """/web/ stands for the storage account's static website, which answers with the blob's stored Content-Type and
    Cache-Control (a blob stored without a type: application/octet-stream), not a type guessed from the name."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContentSettings

    try:
        host.blobs.create_container("$web")
    except ResourceExistsError:
        pass
    web = host.blobs.get_container_client("$web")
    folder = uuid.uuid4().hex
    web.upload_blob(f"{folder}/index.html", b"<p>hi</p>", content_settings=ContentSettings(
        content_type="text/html; charset=utf-8", cache_control="no-cache"))
    web.upload_blob(f"{folder}/raw.html", b"<p>raw</p>")
    page = requests.get(f"{host.base_url}/web/{folder}/", timeout=30)
    assert page.status_code == 200 and page.text == "<p>hi</p>"
    assert (page.headers["Content-Type"], page.headers["Cache-Control"]) == ("text/html; charset=utf-8", "no-cache")
    raw = requests.get(f"{host.base_url}/web/{folder}/raw.html", timeout=30)
    assert raw.headers["Content-Type"] == "application/octet-stream" and "Cache-Control" not in raw.headers


def test_the_address_devhost_gives_is_one_a_client_can_use() -> None:
    """devhost printed ``export TRAPBATCH_URL=http://0.0.0.0:7071`` for a wildcard bind (the CLI refuses plain http
    to a host that is not loopback when a key is sent) and ``http://::1:7071`` for IPv6 (no URL at all)."""
    from cli.config import check_url

    for bound, reached in (("0.0.0.0", "http://127.0.0.1:7071"), ("::", "http://[::1]:7071"),
                           ("::1", "http://[::1]:7071"), ("127.0.0.1", "http://127.0.0.1:7071")):
        host = DevHost.__new__(DevHost)
        host.host, host.port = bound, 7071
        assert host.base_url == reached and check_url(host.base_url) == reached


def test_a_name_with_several_addresses_on_port_0_listens_on_one_port_for_all(storage_connection: str, unique_name: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``--host localhost --port 0`` where localhost is both ::1 and 127.0.0.1: each address got a port of its own from
    the kernel, and the URL (and port file) named the first one's, so a client trying the other address first reached
    whatever held that port there. Every address of the name listens on the one port devhost reports."""
    import socket

    real = socket.getaddrinfo

    def both(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "dual.test":  # resolves as a dual-stack localhost does, IPv6 first
            return real("::1", port, *args, **kwargs) + real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", both)
    h = DevHost(sample_app.app, storage_connection, task_hub=unique_name, host="dual.test", port=0).start()
    try:
        assert h.base_url == f"http://dual.test:{h.port}"
        for address in ("http://127.0.0.1", "http://[::1]"):
            r = requests.post(f"{address}:{h.port}/api/orchestrators/fanout", json=["Oslo"], timeout=30)
            assert r.status_code == 202, (address, r.status_code)
    finally:
        h.stop()


def test_a_port_taken_on_the_second_address_is_picked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Port 0 on a name with two addresses: the port the first address got may be another program's on the second;
    devhost lets go of the first and picks again rather than failing, or serving one address only."""
    import asyncio
    import socket

    from aiohttp import web

    from devhost import host as host_module

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    clash = {"left": 1}

    class ClashingOnce(web.TCPSite):
        def __init__(self, runner: web.BaseRunner, host: str, port: int) -> None:
            if port and clash["left"]:  # the first second-address bind meets the other program's port
                clash["left"], port = 0, taken.getsockname()[1]
            super().__init__(runner, host, port)

    monkeypatch.setattr(host_module.web, "TCPSite", ClashingOnce)
    monkeypatch.setattr(host_module, "_addresses", lambda host: ["::1", "127.0.0.1"])
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web.Application())
    try:
        loop.run_until_complete(runner.setup())
        port = host_module._listen(loop, runner, "dual.test", 0)
        assert clash["left"] == 0 and port != taken.getsockname()[1]
        for family, address in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
            with socket.socket(family) as probe:
                probe.settimeout(30)
                probe.connect((address, port))  # both addresses listen on the reported port
        assert len(runner.sites) == 2  # the clashing attempt's first site was let go
    finally:
        loop.run_until_complete(runner.cleanup())
        loop.close()
        taken.close()


def test_port_0_skips_a_first_address_of_a_family_the_machine_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--host localhost --port 0`` on a machine without IPv6 (a kernel booted with ipv6.disable=1; a container):
    the resolver still gives ::1 first, asyncio skips a family it cannot make a socket of (``create_server``: "bad
    family/type/protocol combination", no error) and the ::1 site listens nowhere. Its port read 0, the next
    address was bound at 0 (a kernel-chosen port) and devhost reported port 0, where before the whole name was
    bound and the IPv4 port reported."""
    import asyncio
    import errno
    import socket

    from aiohttp import web

    from devhost import host as host_module

    real_socket = socket.socket

    class NoIPv6(real_socket):  # type: ignore[misc,valid-type]
        def __init__(self, family: int = -1, *args: Any, **kwargs: Any) -> None:
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(host_module, "_addresses", lambda host: ["::1", "127.0.0.1"])
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web.Application())
    try:
        loop.run_until_complete(runner.setup())
        monkeypatch.setattr(socket, "socket", NoIPv6)
        port = host_module._listen(loop, runner, "dual.test", 0)
        monkeypatch.setattr(socket, "socket", real_socket)
        assert port != 0
        with socket.socket(socket.AF_INET) as probe:
            probe.settimeout(30)
            probe.connect(("127.0.0.1", port))  # the reported port is the one the usable address listens on
    finally:
        monkeypatch.setattr(socket, "socket", real_socket)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_an_idle_engine_backs_off_and_queued_work_still_starts_at_once(storage_connection: str,
                                                                       unique_name: str) -> None:
    """Idle, the dispatchers list their tables a few times, not ten times a second (engine docstring: Polling); and
    whatever the engine queues itself wakes them, so an orchestration with activities, a failing one, children and a
    durable timer runs to its end even where no poll would come for ten minutes."""
    h = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=30)
    listings = {"messages": 0, "activities": 0}
    list_messages, list_activities = h.store.list_messages, h.store.list_activities

    def counted_messages() -> Any:
        listings["messages"] += 1
        return list_messages()

    def counted_activities() -> Any:
        listings["activities"] += 1
        return list_activities()

    h.store.list_messages, h.store.list_activities = counted_messages, counted_activities  # type: ignore[method-assign]
    h.start()
    try:
        time.sleep(3)
        assert 1 <= listings["messages"] <= 10 and 1 <= listings["activities"] <= 10, listings  # 0.1 s polls: ~30
        h.engine.poll_s = h.engine.idle_poll_max_s = 600  # from here, only a wake starts a listing in time
        time.sleep(1.5)  # the loops' current waits (at most the 1 s back-off) end; the next ones are 600 s
        iid = h.start_orchestration("features")
        st = h.wait_for(iid, 120)
        assert st["runtimeStatus"] == "Completed", st
        assert st["output"]["child"] == {"results": ["Hello Oslo!"], "doubled": {"n": 2}}
        assert st["output"]["waited"] >= 0.3  # the timer's message was due, not polled for
    finally:
        h.stop()
