"""GET /api/tasks shows each task in the stage GET /api/tasks/{id} shows it in: a task that failed or was terminated
says so, not the stage its last custom status named (``trapbatch list`` showed failed tasks as still "detecting").
A failed task's error reads without the Durable extension's nested "Orchestrator function '<name>' failed: "
prefixes, which name trapbatch's internals."""
from __future__ import annotations

import json

import requests

from devhost import history as h
from devhost.host import DevHost
from devhost.hostjson import HostConfig

KEY = "test-function-key"
NESTED = ("Orchestrator function 'task_orchestrator' failed: Orchestrator function 'run_shards' failed: "
          "the model could not be loaded: no file md_v5a.0.1.pt\nTraceback (most recent call last): ...")


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
        listed = requests.get(f"{host.base_url}/api/tasks", headers=headers, timeout=60)
        assert listed.status_code == 200, listed.text
        rows = {t["id"]: t for t in listed.json()["tasks"]}
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
