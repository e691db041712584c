"""GET /api/tasks shows each task in the stage GET /api/tasks/{id} shows it in: a task that failed or was terminated
says so, not the stage its last custom status named (``trapbatch list`` showed failed tasks as still "detecting").
A failed task's error reads without the Durable extension's nested "Orchestrator function '<name>' failed: "
prefixes, which name trapbatch's internals."""
from __future__ import annotations

import json
from typing import Any

import requests

from devhost import history as h
from devhost.host import DevHost
from devhost.hostjson import HostConfig

KEY = "test-function-key"
NESTED = ("Orchestrator function 'task_orchestrator' failed: Orchestrator function 'run_shards' failed: "
          "the model could not be loaded: no file md_v5a.0.1.pt\nTraceback (most recent call last): ...")


def _listed(base: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """GET /api/tasks's rows by task id."""
    listed = requests.get(f"{base}/api/tasks", headers=headers, timeout=60)
    assert listed.status_code == 200, listed.text
    return {t["id"]: t for t in listed.json()["tasks"]}


def test_the_task_list_and_one_tasks_status_agree_on_failed_and_terminated_tasks(storage_connection: str,
                                                                                  unique_name: str) -> None:
    import function_app

    host = DevHost(function_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig())
    now = h.ts(h.utcnow())
    tasks = {  # id: (runtime status, last custom status, output)
        "task-00000000000000000001": ("Failed", {"stage": "detecting", "images": 10}, NESTED),
        "task-00000000000000000002": ("Terminated", {"stage": "enumerating"}, "cancelled by the user"),
        "task-00000000000000000003": ("Completed", {"stage": "completed_with_errors", "images": 5}, None),
        "task-00000000000000000004": ("Failed", {"stage": "failed", "error": "no images found under 'x/'"}, NESTED),
    }
    for iid, (status, custom, output) in tasks.items():
        host.store.put_instance(iid, Name="task_orchestrator", Status=status, Input="", InputIsNull=True,
                                Output=json.dumps(output),
                                CustomStatus=json.dumps(custom), Error="", CreatedTime=now, UpdatedTime=now,
                                ExecutionId="e", ParentInstanceId="")
    host.start()
    try:
        headers = {"x-functions-key": KEY}
        rows = _listed(host.base_url, headers)
        one = {}
        for iid in tasks:
            r = requests.get(f"{host.base_url}/api/tasks/{iid}", headers=headers, timeout=60)
            assert r.status_code == 200, r.text
            one[iid] = r.json()
        stages = {iid: rows[iid]["stage"] for iid in tasks}
        assert stages == {iid: one[iid]["stage"] for iid in tasks}
        assert list(stages.values()) == ["failed", "terminated", "completed_with_errors", "failed"]
        assert one["task-00000000000000000001"]["error"] == "the model could not be loaded: no file md_v5a.0.1.pt"
        assert one["task-00000000000000000004"]["error"] == "no images found under 'x/'"
    finally:
        host.stop()


def test_the_task_list_reads_no_shard_groups_input_and_only_the_inputs_of_the_rows_it_shows(
        storage_connection: str, unique_name: str, monkeypatch: Any) -> None:
    """A page of the instance list with inputs made the extension read every shard group's input too (each holds its
    shards' state, in a blob when large) for every task the hub ever ran; now the list asks without inputs and reads
    the tasks' own, by id: only the rows shown for an operator, every task's for a caller (to see whose they are)."""
    import function_app
    from azure.durable_functions import DurableOrchestrationClient

    from api import starters

    host = DevHost(function_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig())
    tasks = [f"task-{i:020d}" for i in range(1, 8)]
    for i, iid in enumerate(tasks):
        created = h.ts(h.utcnow().replace(year=2026, month=1, day=1 + i))
        host.store.put_instance(iid, Name="task_orchestrator", Status="Completed",
                                Input=json.dumps({"task_id": iid, "request": {"request_name": f"site {i}"}}),
                                InputIsNull=False, Output="null", CustomStatus=json.dumps({"stage": "completed"}),
                                Error="", CreatedTime=created, UpdatedTime=created, ExecutionId="e",
                                ParentInstanceId="")
    host.store.put_instance(f"{tasks[0]}-shards-0000", Name="run_shards", Status="Completed",
                            Input=json.dumps({"state": {f"s{i:05d}": {"attempt": 1} for i in range(20_000)}}),
                            InputIsNull=False, Output="null", CustomStatus="", Error="", CreatedTime=h.ts(h.utcnow()),
                            UpdatedTime=h.ts(h.utcnow()), ExecutionId="e", ParentInstanceId="")
    listings: list[bool] = []
    reads: list[str] = []
    real_all, real_status = starters._all_instances, DurableOrchestrationClient.get_status

    async def all_instances(*args: Any, **kwargs: Any) -> Any:
        listings.append(bool(kwargs.get("show_input")))
        return await real_all(*args, **kwargs)

    async def get_status(self: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(instance_id)
        return await real_status(self, instance_id, *args, **kwargs)

    monkeypatch.setattr(starters, "_all_instances", all_instances)
    monkeypatch.setattr(DurableOrchestrationClient, "get_status", get_status)
    host.start()
    try:
        listed = requests.get(f"{host.base_url}/api/tasks?limit=3", headers={"x-functions-key": KEY}, timeout=60)
        assert listed.status_code == 200, listed.text
        answer = listed.json()
        assert [t["id"] for t in answer["tasks"]] == tasks[::-1][:3] and answer["total"] == 7
        assert [t["request_name"] for t in answer["tasks"]] == ["site 6", "site 5", "site 4"]
        assert listings == [False] and sorted(reads) == sorted(tasks[::-1][:3])
    finally:
        host.stop()


def test_the_task_list_says_a_detecting_task_stalled_from_its_shard_groups_updates(
        storage_connection: str, unique_name: str, monkeypatch: Any) -> None:
    """Through devhost's management API (the real instance listing, its ``lastUpdatedTime``): two tasks detecting
    whose own orchestrations are hours quiet (they wait on their groups); one's groups are quiet too, so it is
    stalled, the other's group changed a moment ago, so it is not, as GET /api/tasks/{id} answers each; a third
    detecting task whose own update is recent costs no listing of its groups. Before: no detecting row said either."""
    import datetime as dt

    import function_app

    from api import starters
    from core.ids import shards_instance_id
    from core.settings import OrchestrationKnobs

    host = DevHost(function_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig())
    now = h.utcnow()
    quiet, fresh = h.ts(now - dt.timedelta(hours=6)), h.ts(now - dt.timedelta(minutes=1))
    tasks = {f"task-{i:020d}": own for i, own in ((1, quiet), (2, quiet), (3, fresh))}
    groups = {"task-00000000000000000001": quiet, "task-00000000000000000002": fresh,
              "task-00000000000000000003": quiet}
    for i, (iid, own) in enumerate(tasks.items()):
        created = h.ts(now.replace(year=2026, month=1, day=1 + i))
        host.store.put_instance(iid, Name="task_orchestrator", Status="Running",
                                Input=json.dumps({"task_id": iid, "request": {},
                                                  "knobs": OrchestrationKnobs().to_dict()}),
                                InputIsNull=False, Output="null", CustomStatus=json.dumps(
                                    {"stage": "detecting", "groups": 2, "images": 10}),
                                Error="", CreatedTime=created, UpdatedTime=own, ExecutionId="e",
                                ParentInstanceId="")
        for g in range(2):
            host.store.put_instance(shards_instance_id(iid, g), Name="run_shards", Status="Running", Input="{}",
                                    InputIsNull=False, Output="null", CustomStatus="", Error="",
                                    CreatedTime=created, UpdatedTime=groups[iid] if g else quiet, ExecutionId="e",
                                    ParentInstanceId=iid)
    prefixes: list[str] = []
    real_all = starters._all_instances

    async def all_instances(client: Any, prefix: str, *args: Any, **kwargs: Any) -> Any:
        prefixes.append(prefix)
        return await real_all(client, prefix, *args, **kwargs)

    monkeypatch.setattr(starters, "_all_instances", all_instances)
    # no dispatcher: these Running instances have no history, which devhost's start-up would run them from (its
    # reconcile); the management API the list reads answers from storage alone
    monkeypatch.setattr(host.engine, "start", lambda: None)
    host.start()
    try:
        headers = {"x-functions-key": KEY}
        rows = _listed(host.base_url, headers)
        listings = list(prefixes)
        one = {iid: requests.get(f"{host.base_url}/api/tasks/{iid}", headers=headers, timeout=60).json()
               for iid in tasks}
        stalled, moving, recent = tasks
        assert rows[stalled]["stalled"]["since"] == one[stalled]["stalled"]["since"]
        assert rows[stalled]["updated"] == one[stalled]["updated"]
        assert "stalled" not in rows[moving] and "stalled" not in one[moving]
        assert rows[moving]["updated"] == one[moving]["updated"]
        assert "stalled" not in rows[recent] and "stalled" not in one[recent]
        assert sorted(listings) == sorted(["task-", shards_instance_id(stalled, 0)[: -len("0000")],
                                           shards_instance_id(moving, 0)[: -len("0000")]])
    finally:
        host.stop()
