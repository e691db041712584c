"""Closed doors between callers (TRAPBATCH_CALLER_AUTH=easyauth), through devhost's callers file and the real app:
two callers posting the same request get two tasks, each sees and acts on its own only (403 otherwise), the
per-caller limits answer 400 / 429, and an operator sees and acts on every task."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import requests

from devhost.keys import parse_callers
from tests.integration.conftest import upload_images
from tests.waiting import wait_until

HOST_KEY = "callers-tests-host-key-0123"
ANA, BO, OPS = "ana-key-0123456789abcdef", "bo-key-0123456789abcdef0", "ops-key-0123456789abcdef"
CALLERS: dict[str, dict[str, Any]] = {ANA: {"id": "aaaaaaaa-0000-0000-0000-000000000001", "name": "ana@example.org", "roles": ["reader"]},
           BO: {"id": "bbbbbbbb-0000-0000-0000-000000000002", "name": "bo@example.org"},
           OPS: {"id": "cccccccc-0000-0000-0000-000000000003", "name": "ops@example.org",
                 "roles": ["trapbatch.operator"]}}
ANA_ID, BO_ID = CALLERS[ANA]["id"], CALLERS[BO]["id"]


def _session(key: str) -> requests.Session:
    s = requests.Session()
    s.headers["x-functions-key"] = key
    return s


ana, bo, ops, keyonly = _session(ANA), _session(BO), _session(OPS), _session(HOST_KEY)


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from devhost.host import DevHost
    import function_app

    for k, v in {"TRAPBATCH_CALLER_AUTH": "easyauth", "TRAPBATCH_CALLER_MAX_IMAGES_PER_TASK": "100",
                 "TRAPBATCH_CALLER_MAX_ACTIVE_TASKS": "1", "TRAPBATCH_CALLER_MIN_IMAGES_PER_SHARD": "2",
                 # every first attempt hangs: the tasks keep running until cancelled
                 "TRAPBATCH_WORKER_FAULTS": json.dumps({"s00000/1": "hang", "s00001/1": "hang"})}.items():
        monkeypatch.setenv(k, v)
    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="c" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=HOST_KEY, callers=parse_callers(CALLERS))
    h.start()
    try:
        yield h
    finally:  # hanging workers of a failed test must not hold the pool's slots for the tests after it
        try:
            for t in ops.get(f"{h.base_url}/api/tasks", timeout=120).json().get("tasks", []):
                if t.get("runtime_status") in ("Running", "Pending"):
                    ops.post(f"{h.base_url}/api/tasks/{t['id']}/cancel", timeout=120)
                    h.wait_for(t["id"], timeout=60)
        finally:
            h.stop()


def _ids(session: requests.Session, base: str) -> set[str]:
    r = session.get(f"{base}/api/tasks", timeout=120)
    assert r.status_code == 200, r.text
    return {t["id"] for t in r.json()["tasks"]}


def test_two_callers_cannot_see_or_cancel_each_others_tasks_and_an_operator_sees_all(host, store, unique_name  # type: ignore[no-untyped-def]
                                                                                      ) -> None:
    base = host.base_url
    upload_images(store, unique_name, 8, corrupt=0)
    body: dict[str, Any] = {"container": unique_name, "first_n": 8}
    # a function key alone is no identity; forged Easy Auth headers do not get through devhost (nor Easy Auth)
    r = keyonly.post(f"{base}/api/tasks", json=body, timeout=120)
    assert r.status_code == 401 and "Entra ID" in r.json()["hint"]
    assert keyonly.get(f"{base}/api/tasks", headers={"X-MS-CLIENT-PRINCIPAL-ID": ANA_ID}, timeout=120).status_code == 401

    # the same request by two callers: two tasks; a body-supplied caller is replaced by the verified id
    ra = ana.post(f"{base}/api/tasks", json={**body, "caller": BO_ID}, timeout=120)
    rb = bo.post(f"{base}/api/tasks", json=body, timeout=120)
    assert ra.status_code == 202 and rb.status_code == 202, (ra.text, rb.text)
    task_a, task_b = ra.json()["id"], rb.json()["id"]
    assert task_a != task_b
    started = host.get_status(task_a)["input"]
    assert started["owner"] == ANA_ID and started["request"]["caller"] == ANA_ID
    assert host.get_status(task_b)["input"]["owner"] == BO_ID
    # posting it again is the same task (idempotent), not a second one and not a 429
    again = ana.post(f"{base}/api/tasks", json=body, timeout=120)
    assert again.status_code == 200 and again.json() == {**again.json(), "id": task_a, "started": False}

    assert _ids(ana, base) == {task_a} and _ids(bo, base) == {task_b}
    listed = ops.get(f"{base}/api/tasks", timeout=120).json()["tasks"]
    assert {t["id"]: t.get("owner") for t in listed} == {task_a: ANA_ID, task_b: BO_ID}

    for method, path in (("GET", ""), ("GET", "/results"), ("POST", "/cancel"), ("GET", "/repeats"),
                         ("POST", "/repeats")):
        r = bo.request(method, f"{base}/api/tasks/{task_a}{path}", json={"remove": "all"}, timeout=120)
        assert r.status_code == 403, (method, path, r.text)
        assert "another caller" in r.json()["error"] and r.json()["hint"]
    assert ana.get(f"{base}/api/tasks/{task_b}", timeout=120).status_code == 403
    assert ana.get(f"{base}/api/tasks/{task_a}", timeout=120).status_code == 200
    assert ops.get(f"{base}/api/tasks/{task_b}", timeout=120).status_code == 200
    assert ana.get(f"{base}/api/tasks/task-0123456789abcdef0123", timeout=120).status_code == 404

    # limits: a running task is all ana may have (429); images and shard size are bounded (400); operators exempt
    busy = ana.post(f"{base}/api/tasks", json={**body, "first_n": 7}, timeout=120)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "300" and busy.json()["hint"], busy.text
    for bad in ({"container": unique_name}, {**body, "first_n": 101}, {**body, "images_per_shard": 1}):
        r = bo.post(f"{base}/api/tasks", json=bad, timeout=120)
        assert r.status_code == 400 and r.json()["hint"], (bad, r.text)
    by_ops = ops.post(f"{base}/api/tasks", json={"container": unique_name, "images_per_shard": 1, "first_n": 1},
                      timeout=120)
    assert by_ops.status_code == 202, by_ops.text

    # cancel: the owner may, an operator may. Wait for the detecting stage, not for running shards: with two local
    # workers, whichever task's shards were queued first hold both, and the other's shards wait behind them.
    for session, task in ((ana, task_a), (ops, task_b)):
        wait_until(lambda: session.get(f"{base}/api/tasks/{task}", timeout=120).json().get("stage") == "detecting",
                   120, "the task to reach the detecting stage")
        r = session.post(f"{base}/api/tasks/{task}/cancel", timeout=120)
        assert r.status_code == 202, r.text
    for task in (task_a, task_b):
        final = host.wait_for(task, timeout=120)
        assert final["output"]["stage"] == "cancelled"
    # ana's task is over: she may start another now
    later = ana.post(f"{base}/api/tasks", json={**body, "first_n": 2}, timeout=120)
    assert later.status_code == 202, later.text
    assert _ids(ana, base) == {task_a, later.json()["id"]}
    for task in (by_ops.json()["id"], later.json()["id"]):  # their workers hang too: stop them before teardown
        assert ops.post(f"{base}/api/tasks/{task}/cancel", timeout=120).status_code == 202
        assert host.wait_for(task, timeout=120)["output"]["stage"] == "cancelled"
