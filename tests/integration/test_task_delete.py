"""``DELETE /api/tasks/{id}`` end to end through devhost and Azurite with the real worker on a tiny checkpoint: a
finished task's blobs go (working state, results of every kind, zip, preview folder), another task's stay, a running
orchestration of the task refuses the deletion (409), and afterwards the task is unknown (404) and its request
starts a fresh task."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import requests

from devhost import history as h
from gpu_batch import layout
from tests.integration.conftest import upload_images
from tests.integration.test_end_to_end import FUNCTION_KEY, answers, api, described_answers, finished_status  # noqa: F401
from tests.waiting import wait_until


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from devhost.host import DevHost
    import function_app

    monkeypatch.setenv("TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES", "1")  # every task's files are "large": a zip is offered
    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="h" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def _names(store: Any, container: str, prefix: str) -> list[str]:
    if not store.container_exists(container):
        return []
    return sorted(store.list_names(container, prefix))


def _task_blobs(store: Any, state: str, task: str) -> dict[str, list[str]]:
    return {"tasks": _names(store, state, layout.task_prefix(task)),
            "results": _names(store, state, layout.results_prefix(task)),
            "web": _names(store, layout.STATIC_WEBSITE_CONTAINER, task + "-")}


def _kinds(names: list[str], task: str) -> Counter[str]:
    """Blobs of ``tasks/<task>/`` by kind: the file name of a shard's, the folder of others (the README's sizes)."""
    out: Counter[str] = Counter()
    for name in names:
        parts = name[len(layout.task_prefix(task)):].split("/")
        out[f"shards/*/{parts[-1].split('-', 1)[0] if parts[-1].startswith('attempt') else parts[-1]}"
            if parts[0] == "shards" else parts[0]] += 1
    return out


def test_a_finished_task_is_deleted_with_all_its_blobs_and_another_tasks_stay(host, app_env, store,  # type: ignore[no-untyped-def]
                                                                              unique_name) -> None:
    upload_images(store, unique_name, 10, corrupt=1)
    state = app_env["TRAPBATCH_CONTAINER"]
    request = {"container": unique_name, "max_failed_fraction": 0.5, "previews_expire_days": 30}
    task = api.post(host.base_url + "/api/tasks", json=request, timeout=120).json()["id"]
    other = api.post(host.base_url + "/api/tasks", json={**request, "first_n": 3}, timeout=120).json()["id"]
    for t in (task, other):
        assert wait_until(lambda t=t: finished_status(host.base_url, t), 240, "the task")["stage"] in (
            "completed", "completed_with_errors")
    results_url = f"{host.base_url}/api/tasks/{task}/results"
    wait_until(lambda: (lambda a: a if a["zip"]["state"] == "ready" else None)(
        api.get(results_url, timeout=120).json()), 120, "the results zip")
    wait_until(lambda: host.store.get_instance(f"{task}-zip")["Status"] == "Completed", 120, "the zip build's end")
    before = _task_blobs(store, state, task)
    assert all(before.values()), before  # working state, results, and a preview folder
    assert any(n.startswith(layout.results_zip_folder(task)) for n in before["results"])
    kept = _task_blobs(store, state, other)
    print("blobs of a finished 10-image task of 3 shards:", {k: len(v) for k, v in before.items()},
          dict(_kinds(before["tasks"], task)))

    # a run after the task still running refuses the deletion and says how to end it; the task's blobs stay
    now = h.ts(h.utcnow())
    host.store.put_instance(f"{task}-repeats", Name="repeat_removal", Status="Running", Input="", InputIsNull=True,
                            Output="", CustomStatus="", Error="", CreatedTime=now, UpdatedTime=now, ExecutionId="e",
                            ParentInstanceId="")
    refused = api.delete(f"{host.base_url}/api/tasks/{task}", timeout=240)
    assert refused.status_code == 409, refused.text
    assert f"({task}-repeats)" in refused.json()["error"]
    assert '"target": "removal"' in refused.json()["hint"]
    assert _task_blobs(store, state, task) == before
    host.store.put_instance(f"{task}-repeats", Status="Completed")

    # a request out of time deletes nothing more and says it is not done (the API's 202: send it again)
    import os

    from adapters.task_deletion import delete_task_blobs
    from core.settings import Settings

    assert delete_task_blobs(store, Settings.from_env(os.environ), task, 0.0).done is False
    assert _task_blobs(store, state, task) == before

    def hub_ids(prefix: str) -> list[str]:
        return [i["InstanceId"] for i in host.store.query_instances(prefix=prefix, top=1000)[0]]

    ours = set(hub_ids(task)) - {task}
    deleted = api.delete(f"{host.base_url}/api/tasks/{task}", timeout=240)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True
    assert deleted.json()["blobs"] == {"state": len(before["tasks"]) + len(before["results"]),
                                       "web": len(before["web"])}
    assert _task_blobs(store, state, task) == {"tasks": [], "results": [], "web": []}
    assert _task_blobs(store, state, other) == kept
    assert list(store.list_names(unique_name))  # the images stay
    # every instance of the task is purged (its groups, the zip build and its sweep, the expiry, which was waiting
    # on its timer: terminated first), the other task's stay
    assert deleted.json()["instances"] == len(ours) + 1 and hub_ids(task) == []
    assert f"{task}-expiry" in ours and any(i.startswith(f"{task}-zip-sweep-") for i in ours)
    assert other in hub_ids(other)
    assert api.get(f"{host.base_url}/api/tasks/{task}", timeout=120).status_code == 404
    assert api.delete(f"{host.base_url}/api/tasks/{task}", timeout=240).status_code == 404
    again = api.post(host.base_url + "/api/tasks", json=request, timeout=120)
    assert again.status_code == 202 and again.json()["id"] == task  # a fresh task under the same id


def test_a_running_task_is_not_deleted(host, app_env, store) -> None:  # type: ignore[no-untyped-def]
    """Its run first: the answer names the task and says to cancel or terminate it; nothing is deleted."""
    task = "task-0000000000000000000a"
    now = h.ts(h.utcnow())
    host.store.put_instance(task, Name="task_orchestrator", Status="Running", Input=json.dumps({"task_id": task}),
                            Output="", CustomStatus=json.dumps({"stage": "detecting"}), Error="", CreatedTime=now,
                            UpdatedTime=now, ExecutionId="e", ParentInstanceId="")
    store.ensure_container(app_env["TRAPBATCH_CONTAINER"])
    store.write_bytes(app_env["TRAPBATCH_CONTAINER"], layout.request_blob(task), b"{}")
    refused = api.delete(f"{host.base_url}/api/tasks/{task}", timeout=240)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == f"task {task} cannot be deleted while its orchestrations run ({task})"
    assert f"/api/tasks/{task}/cancel" in refused.json()["hint"]
    assert store.exists(app_env["TRAPBATCH_CONTAINER"], layout.request_blob(task))
    unknown = api.delete(f"{host.base_url}/api/tasks/task-0000000000000000000b", timeout=240)
    assert unknown.status_code == 404, unknown.text
    assert requests.delete(f"{host.base_url}/api/tasks/{task}", timeout=60).status_code == 401  # no key


def test_a_purge_by_id_takes_that_instance_alone_not_its_sub_orchestrations(host) -> None:  # type: ignore[no-untyped-def]
    """Why the deletion purges each instance of the task by its own id: the Azure Storage provider's purge by id
    deletes the one instance's row, history and large messages (durabletask ``AzureTableTrackingStore.
    PurgeInstanceHistoryAsync(instanceId)`` -> ``DeleteAllDataForOrchestrationInstance``), not its children; devhost's
    purge does the same."""
    parent, child = "task-0000000000000000000c", "task-0000000000000000000c-shards-0000"
    now = h.ts(h.utcnow())
    for iid, up in ((parent, ""), (child, parent)):
        host.store.put_instance(iid, Name="x", Status="Completed", Input="", InputIsNull=True, Output="",
                                CustomStatus="", Error="", CreatedTime=now, UpdatedTime=now, ExecutionId="e",
                                ParentInstanceId=up)
    assert host.engine.purge(parent) is True
    assert host.store.get_instance(parent) is None and host.store.get_instance(child) is not None


def test_a_render_running_while_the_task_is_deleted_takes_back_what_it_wrote(storage_connection: str,
                                                                            unique_name: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A preview render outlives the task's deletion (a terminated run's or re-render's activity runs on: Durable
    fidelity row 49): the deletion lands after its first thumbnails, and the render writes the rest and its page after
    the website was listed. It reads the deletion's mark after its last write and deletes what it wrote: nothing of
    the task stays public. A render that begins after the deletion is done (the fresh task's) is not taken back."""
    from activities import previews
    from adapters.blobs import BlobStore, service_client
    from adapters.preview_folders import existing_preview_folder, withdrawn
    from adapters.task_deletion import delete_task_blobs
    from core import task_deletion
    from core.settings import Settings
    from tests.integration.test_enumerate_merge import _merged_task_of_jpegs

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s"})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(unique_name)
    tid = _merged_task_of_jpegs(settings, store, unique_name, ("a",), 4)
    previews.run_previews(tid, "m.pt", "", settings, store)
    assert list(store.list_names(settings.web_container, f"{tid}-"))

    deleted: list[bool] = []
    make = previews._Pictures.make_all

    def make_all(self: Any, files: list[str]) -> Any:
        out = make(self, files[:1])
        deleted.append(delete_task_blobs(store, settings, tid, 150.0).done)
        return {**out, **make(self, files[1:])}

    monkeypatch.setattr(previews._Pictures, "make_all", make_all)
    out = previews.run_previews(tid, "m.pt", "", settings, store)
    assert deleted == [True] and "not_published" in out
    assert list(store.list_names(settings.web_container, f"{tid}-")) == []
    assert existing_preview_folder(store, settings, tid) is None
    mark = store.read_json(settings.container, task_deletion.tombstone_blob(tid))
    assert mark["task"] == tid
    assert not withdrawn(store, settings, tid, since=mark["done_at_s"] + task_deletion.CLOCK_MARGIN_S)
