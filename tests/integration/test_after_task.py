"""What acts on a finished task, end to end through devhost and Azurite with the real worker on a tiny checkpoint:
a re-render at another threshold (page counts and CSV rows as the data says, results byte-identical), the results
zip (exactly the linked files, downloaded anonymously by its link, rebuilt when the files change) and the preview
expiry of ``previews_expire_days`` (with a day of a few seconds: TRAPBATCH_PREVIEWS_EXPIRE_DAY_S, tests only)."""
from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import pytest
import requests

from adapters import share_links
from gpu_batch import layout
from gpu_batch.formats.detections_csv import CSV_COLUMNS, csv_row
from gpu_batch.formats.previewsample import preview_category, top_confidence
from tests.integration.conftest import upload_images
from tests.integration.test_end_to_end import FUNCTION_KEY, api, finished_status
from tests.integration.test_repeat_search import search
from tests.readme_listing import listed_paths
from tests.waiting import wait_until


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from devhost.host import DevHost
    import function_app

    monkeypatch.setenv("TRAPBATCH_PREVIEWS_EXPIRE_DAY_S", "3")
    monkeypatch.setenv("TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES", "1")  # every task's files are "large": a zip is offered
    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="h" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def _done(url: str, key: str) -> Any:
    state = api.get(url, timeout=120).json()["previews"].get(key)
    return state if state and state.get("runtime_status") in ("Completed", "Failed") else None


def _csv_text(entries: list[dict[str, Any]], threshold: float) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(csv_row(entry, threshold))
    return out.getvalue().encode("utf-8")


def test_rerender_zip_and_expiry_of_finished_tasks(host, app_env, store, unique_name) -> None:  # type: ignore[no-untyped-def]
    upload_images(store, unique_name, 8, corrupt=1)
    base = {"container": unique_name, "max_failed_fraction": 0.5}
    task = api.post(host.base_url + "/api/tasks", json=base, timeout=120).json()["id"]
    expiring = api.post(host.base_url + "/api/tasks", json={**base, "first_n": 3, "previews_expire_days": 1},
                        timeout=120).json()["id"]
    container = app_env["TRAPBATCH_CONTAINER"]
    for task_id in (task, expiring):
        status = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
        assert status["runtime_status"] == "Completed", status
    check_expiry(host, store, expiring, container)

    results_url = f"{host.base_url}/api/tasks/{task}/results"
    before = store.read_bytes(container, layout.results_blob(task))
    own_csv = store.read_bytes(container, layout.csv_blob(task))
    doc = store.read_json(container, layout.results_blob(task))
    first = api.get(results_url, timeout=120).json()
    default = store.read_json(container, layout.preview_sample_blob(task))["threshold"]
    tops = sorted({top_confidence(e) for e in doc["images"] if not e.get("failure") and e.get("detections")})
    at = {t: sum(1 for e in doc["images"] if preview_category(e, t) == "detections") for t in tops}
    threshold = next(t for t in tops if at[t] != at.get(default, sum(
        1 for e in doc["images"] if preview_category(e, default) == "detections")))  # one that changes the counts

    assert api.post(f"{host.base_url}/api/tasks/{task}/previews", json={"threshold": 7}, timeout=120).status_code == 400
    assert api.post(f"{host.base_url}/api/tasks/{task}/previews", json={}, timeout=120).status_code == 400
    for route in ("previews", "repeats", "repeats/search"):  # a malformed body: the route's own example, not a task's
        malformed = api.post(f"{host.base_url}/api/tasks/{task}/{route}", data=b"{nope", timeout=120,
                             headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400 and "container" not in malformed.json()["hint"], (route, malformed.text)
    started = api.post(f"{host.base_url}/api/tasks/{task}/previews", json={"threshold": threshold}, timeout=120)
    assert started.status_code == 202, started.text
    again = api.post(f"{host.base_url}/api/tasks/{task}/previews", json={"threshold": threshold}, timeout=120)
    done = wait_until(lambda: _done(results_url, "rerender"), 120, "the re-render")
    assert again.status_code in (202, 409)  # 409 while the first still ran
    assert done["runtime_status"] == "Completed" and done["threshold"] == threshold, done

    expected = {name: sum(1 for e in doc["images"] if preview_category(e, threshold) == name)
                for name in ("detections", "near_misses", "empty", "failures")}
    assert done["previews"]["original"]["counts"]["detections"] == expected["detections"]
    assert {k: done["previews"]["original"]["counts"][k] for k in expected} == expected
    sample = store.read_json(container, layout.preview_sample_blob(task))
    assert sample["threshold"] == threshold and sample["totals"] == expected
    page = api.get(first["previews"]["local_url"], timeout=120)
    assert page.status_code == 200 and str(threshold) in page.text

    assert store.read_bytes(container, layout.results_blob(task)) == before  # the results are only read
    assert store.read_bytes(container, layout.csv_blob(task)) == own_csv  # the task's own CSV stays
    csv_name = layout.threshold_csv_blob(task, threshold)
    assert started.json()["csv"]["original"] == csv_name
    assert store.read_bytes(container, csv_name) == _csv_text(doc["images"], threshold)

    answer = api.get(results_url, timeout=120).json()
    label = layout.threshold_label(threshold)
    assert answer["results"]["thresholds"]["original"] == {label: csv_name}
    link = answer["links"]["files"]["original"]["thresholds"][label]
    assert requests.get(link, timeout=120).content == _csv_text(doc["images"], threshold)  # no credential
    # the README, written again by the re-render: it lists the new CSV, exactly the files linked, and the page's
    # threshold now
    readme = store.read_bytes(container, layout.readme_blob(task)).decode("utf-8")
    names = share_links.all_names({"original": answer["results"]["files"]["original"]})
    assert sorted(listed_paths(readme)) == sorted(n[len(layout.results_prefix(task)):] for n in names), readme
    assert csv_name.rsplit("/", 1)[1] in listed_paths(readme)
    assert f"the preview page was last drawn at {threshold:g}" in " ".join(readme.split())

    check_zip(host, store, container, task, results_url)


def check_zip(host, store, container: str, task: str, results_url: str) -> None:  # type: ignore[no-untyped-def]
    """Above TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES the results answer offers one zip, built on first request."""
    from adapters.results_bundle import linked_blobs, zip_path

    ready = wait_until(lambda: (lambda a: a if a["zip"]["state"] == "ready" else None)(
        api.get(results_url, timeout=120).json()), 120, "the results zip")
    files = linked_blobs(store, container, task)
    assert ready["zip"]["files"] == len(files) >= 5
    got = requests.get(ready["links"]["zip"], timeout=60)  # anonymously, by its read-only link
    assert got.status_code == 200
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert sorted(zf.namelist()) == sorted(zip_path(task, name) for name in files)
        for name in files:
            assert zf.read(zip_path(task, name)) == store.read_bytes(container, name), name
    assert requests.put(ready["links"]["zip"], data=b"x", headers={"x-ms-blob-type": "BlockBlob"},
                        timeout=120).status_code == 403
    # a file changed since: the zip is stale, so the next answer builds it again rather than link the old one
    store.write_bytes(container, layout.csv_blob(task), b"file\n")
    assert api.get(results_url, timeout=120).json()["zip"]["state"] == "building"
    rebuilt = wait_until(lambda: (lambda a: a if a["zip"]["state"] == "ready" else None)(
        api.get(results_url, timeout=120).json()), 120, "the rebuilt zip")
    assert rebuilt["zip"]["blob"] != ready["zip"]["blob"]  # each build its own zip (layout.results_zip_blob)
    again = requests.get(rebuilt["links"]["zip"], timeout=60)
    with zipfile.ZipFile(io.BytesIO(again.content)) as zf:
        assert zf.read(zip_path(task, layout.csv_blob(task))) == b"file\n"
    # the link handed out before serves the zip it was for until it expires (core.zip_builds): a download under way
    # is not cut; a browser saves either as the one name, <task>-results.zip
    kept = requests.get(ready["links"]["zip"], timeout=60)
    assert kept.status_code == 200 and kept.content == got.content
    assert kept.headers["content-disposition"] == again.headers["content-disposition"] == \
        f'attachment; filename="{layout.download_label(task)}-results.zip"'
    # and each build started its sweep, waiting its timers (core.zip_builds.SWEEP_AFTER_S after the build's end): the
    # first zip goes then even if no GET or build of the task comes again
    from datetime import datetime, timedelta, timezone

    from core import contracts as c
    from core.ids import results_zip_instance_id

    prefix = results_zip_instance_id(task) + "-sweep-"
    sweeps = wait_until(lambda: (lambda found: found if len(found) >= 2 else None)(
        [i["InstanceId"] for i in host.store.list_instances() if i["InstanceId"].startswith(prefix)]), 60,
        "the builds' sweeps")
    for instance in sweeps:
        started = host.get_status(instance)
        assert started["name"] == c.RESULTS_ZIP_SWEEP_ORCHESTRATOR and started["runtimeStatus"] == "Running", started
        assert started["input"]["task_id"] == task
        assert datetime.fromisoformat(started["input"]["at"]) > datetime.now(timezone.utc) + timedelta(days=8)


def check_expiry(host, store, task: str, container: str) -> None:  # type: ignore[no-untyped-def]
    """previews_expire_days=1 with a 3-second day: the status says when, then the folder is gone."""
    status = api.get(f"{host.base_url}/api/tasks/{task}", timeout=120).json()
    assert status["previews"]["expires"] > status["finished"]
    url = f"{host.base_url}/api/tasks/{task}/results"
    done = wait_until(lambda: (lambda e: e if e and e.get("runtime_status") == "Completed" else None)(
        api.get(url, timeout=120).json()["previews"]["expiry"]), 120, "the preview expiry")
    assert done["deleted"] > 0 and done["expires"] == status["previews"]["expires"]
    answer = api.get(url, timeout=120).json()
    assert "error" in answer["previews"] and not list(store.list_names("$web", task + "-"))
    # the expiry made the README say so (adapters.preview_folders.restate_readmes), before anything rewrote it
    readme = " ".join(store.read_bytes(container, layout.readme_blob(task)).decode().split())
    assert "Preview: taken off the web at " in readme and "published on the web" not in readme
    refused = api.post(f"{host.base_url}/api/tasks/{task}/previews", json={"threshold": 0.5}, timeout=120)
    assert refused.status_code == 409 and "no preview pages" in refused.json()["error"]
    # a repeat search run again renders pages only while they are published: expired pages stay off the website
    listed = search(host.base_url, task, {"occurrence_threshold": 2}, api)
    assert "were deleted or expired" in listed["searching"]["previews"]["not_published"]
    assert not list(store.list_names("$web", task + "-"))
    assert "deleted" in api.get(url, timeout=120).json()["previews"]["error"]
    # the search wrote the README again: it no longer points at pages that are gone
    readme = " ".join(store.read_bytes(container, layout.readme_blob(task)).decode().split())
    assert "Preview: not published" in readme and "published on the web" not in readme


def test_a_waiting_expiry_moves_or_ends_when_a_re_run_says_so(host, app_env, store, unique_name) -> None:  # type: ignore[no-untyped-def]
    """The real expiry orchestration (through devhost's replay) and the activity that tells it (a re-run's
    ``move``): the first run's time took the re-run's pages off the website, days before the time its status
    showed, or when the re-run asked for no expiry at all.

    The event goes through the SDK's own client, as the activity sends it on Azure: its ``raise_event`` posts the
    data's JSON as a JSON string, which the extension keeps (devhost README, fidelity row 36), so the orchestrator
    gets the JSON text, not a dict. A fake client posting the dict itself hid that the expiry failed on Azure."""
    import asyncio
    from datetime import datetime, timedelta, timezone

    from azure.durable_functions import DurableOrchestrationClient

    from activities.expiry import run_schedule_expiry
    from core import contracts as c
    from core.ids import expiry_instance_id

    later = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
    for task_id, moved_to, stage in (("task-0000000000000000e001", "", "cancelled"),
                                     ("task-0000000000000000e002", (datetime.now(timezone.utc)
                                                                    - timedelta(seconds=1)).isoformat(), "completed")):
        instance = expiry_instance_id(task_id)
        host.start_orchestration(c.EXPIRY_ORCHESTRATOR, {"task_id": task_id, "expires": later}, instance)
        wait_until(lambda: (host.get_status(instance) or {}).get("runtimeStatus") == "Running", 60, "the expiry")
        # the activity's durable client binding, on devhost's loop (where the SDK's session lives)
        client = DurableOrchestrationClient(host.front.binding())
        out = asyncio.run_coroutine_threadsafe(run_schedule_expiry(
            {"task_id": task_id, "expires": moved_to, "move": True}, client), host._loop).result(60)
        assert out["moved"] is True
        st = host.wait_for(instance, 60)
        assert st["runtimeStatus"] == "Completed" and st["output"]["stage"] == stage, st
