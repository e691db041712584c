"""Re-runs end to end on devhost with the local pool: ``"rerun": true`` runs a finished task again as a new generation
(its own pool job and results), while the previous results stay served until the new ones are complete.

The re-run is held in ``awaiting_confirmation`` (TRAPBATCH_CONFIRM_ABOVE_IMAGES) to look at the task between its
start and its completion without racing it; pool work is counted from LocalPool's table (one row per shard attempt)
and the manifests those rows ran."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterator

import pytest
import requests

from adapters.blobs import BlobStore
from core import contracts as c
from core.contracts import Stage
from gpu_batch import layout
from tests.camtrap_media import by_blob_name
from tests.api_session import DiagnosingSession
from tests.integration.conftest import upload_images
from tests.openapi_answers import described_answers_fixture, recording
from tests.waiting import wait_until

FUNCTION_KEY = "rerun-tests-function-key"
api = DiagnosingSession()
api.headers["x-functions-key"] = FUNCTION_KEY
answers = recording(api)  # every JSON answer of the app, checked against its OpenAPI description after each test


described_answers = described_answers_fixture(answers)  # each JSON answer fully described (tests/openapi_answers.py)


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from devhost.host import DevHost
    import function_app

    monkeypatch.setenv("TRAPBATCH_CONFIRM_ABOVE_IMAGES", "2")  # every run here waits for POST .../confirm
    monkeypatch.setenv("TRAPBATCH_CONFIRM_TIMEOUT_S", "600")
    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="r" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def status(host: Any, task_id: str) -> dict[str, Any]:
    return dict(api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120).json())


def confirm_and_finish(host: Any, task_id: str, timeout: float = 300) -> dict[str, Any]:
    wait_until(lambda: status(host, task_id)["stage"] == Stage.awaiting_confirmation, 120, "awaiting confirmation")
    assert api.post(f"{host.base_url}/api/tasks/{task_id}/confirm", timeout=120).status_code == 202
    return dict(wait_until(lambda: (lambda s: s if s["runtime_status"] in ("Completed", "Failed") and s["stage"] !=
                                    Stage.awaiting_confirmation else None)(status(host, task_id)), timeout, "task end"))


def pool_work(app_env: dict[str, str], store: BlobStore, key: str, job: str) -> list[str]:
    """The images of every shard attempt LocalPool was given in pool job ``job`` (manifests under ``key``)."""
    from azure.data.tables import TableServiceClient

    table = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_table_client("trapbatchpool")
    images: list[str] = []
    for row in table.query_entities("PartitionKey eq @j", parameters={"j": job}):
        sid, attempt = layout.parse_pool_task_id(str(row["RowKey"]))
        images += store.read_json(app_env["TRAPBATCH_CONTAINER"], layout.manifest_blob(key, sid, attempt))["images"]
    return sorted(images)


def results_files(store: BlobStore, app_env: dict[str, str], blob: str) -> list[str]:
    return sorted(im["file"] for im in store.read_json(app_env["TRAPBATCH_CONTAINER"], blob)["images"])


def test_rerun_runs_everything_again_under_a_new_job_and_the_old_results_stay_served_until_it_completes(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    names = upload_images(store, unique_name, 6, corrupt=0)
    base = host.base_url
    body = {"container": unique_name}
    first = api.post(f"{base}/api/tasks", json=body, timeout=120)
    assert first.status_code == 202, first.text
    task_id = first.json()["id"]
    early = api.post(f"{base}/api/tasks", json={**body, "rerun": True}, timeout=120)  # it is still running
    assert early.status_code == 409 and "still running" in early.json()["error"]
    assert "cancel" in early.json()["hint"]
    done = confirm_and_finish(host, task_id)
    assert done["stage"] == Stage.completed and "generation" not in done
    first_job = done["pool_job"]
    assert pool_work(app_env, store, task_id, first_job) == names
    old = api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()
    assert old["generation"] == "" and old["results"]["blob"] == layout.results_blob(task_id)
    old_page = old["previews"]["blob"]
    assert store.exists(app_env.get("TRAPBATCH_WEB_CONTAINER", "$web"), old_page)

    plain = api.post(f"{base}/api/tasks", json=body, timeout=120)  # without rerun a finished task is only found
    assert plain.status_code == 200 and plain.json() == {**plain.json(), "id": task_id, "started": False}
    again = api.post(f"{base}/api/tasks", json={**body, "rerun": True, "request_name": "again"}, timeout=120)
    assert again.status_code == 202 and again.json()["id"] == task_id and again.json()["started"] is True  # same id

    # while the re-run waits (and would run), the previous results are what the task serves
    wait_until(lambda: status(host, task_id)["stage"] == Stage.awaiting_confirmation, 120, "re-run waiting")
    assert status(host, task_id)["served"]["generation"] == ""  # the first run's results, while the re-run waits
    during = api.get(f"{base}/api/tasks/{task_id}/results", timeout=120)
    assert during.status_code == 200, during.text
    assert during.json()["results"] == old["results"] and during.json()["generation"] == ""
    assert during.json()["rerun"]["stage"] == Stage.awaiting_confirmation
    assert store.exists(app_env["TRAPBATCH_CONTAINER"], layout.current_generation_blob(task_id)) is False

    final = confirm_and_finish(host, task_id)
    assert final["stage"] == Stage.completed, final
    run = final["generation"]
    key = layout.generation_key(task_id, run)
    assert final["pool_job"] == layout.pool_job_id(task_id, run) != first_job
    assert pool_work(app_env, store, key, final["pool_job"]) == names  # everything ran again, once
    assert pool_work(app_env, store, task_id, first_job) == names  # and the first job got nothing new
    after = api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()
    assert after["generation"] == run and after["results"]["blob"] == layout.results_blob(key)
    assert "rerun" not in after
    assert results_files(store, app_env, layout.results_blob(key)) == names
    assert results_files(store, app_env, layout.results_blob(task_id)) == names  # old file kept (links handed out)
    # ... until TRAPBATCH_KEEP_REPLACED_DAYS (30) after the promotion, when its own sweep, waiting now, deletes it
    replaced = after["replaced"]
    assert replaced == final["replaced"] and replaced["generation"] == "" and replaced["scheduled"] is True
    goes = datetime.fromisoformat(replaced["deletes_at"]) - datetime.fromisoformat(final["finished"])
    assert timedelta(days=30) - timedelta(hours=1) < goes <= timedelta(days=30)
    sweep = host.get_status(replaced["instance_id"])
    assert sweep["input"] == {"task_id": task_id, "generation": "", "at": replaced["deletes_at"],
                              "busy_retry_attempts": sweep["input"]["busy_retry_attempts"], "rechecks_running": True}
    assert sweep["name"] == c.REPLACED_SWEEP_ORCHESTRATOR and sweep["runtimeStatus"] == "Running", sweep
    assert store.read_json(app_env["TRAPBATCH_CONTAINER"], layout.current_generation_blob(task_id)) == {
        "generation": run}
    # the previous generation's public pages went offline; the new generation has its own
    assert not store.exists("$web", old_page) and after["previews"]["blob"] != old_page
    assert store.exists("$web", after["previews"]["blob"])


    assert after["previews"]["rerender"] is None

    # the repeat search run again searches the served re-run's results and replaces its list, not the first's
    state = app_env["TRAPBATCH_CONTAINER"]
    first_list = store.read_json(state, layout.repeats_blob(task_id))
    listed = api.get(f"{base}/api/tasks/{task_id}/repeats", timeout=120).json()
    assert listed["blob"] == layout.repeats_blob(key) and listed["searching"] is None
    started = api.post(f"{base}/api/tasks/{task_id}/repeats/search", json={"occurrence_threshold": 3}, timeout=120)
    assert started.status_code == 202, started.text
    sid = started.json()["search"]
    searched = wait_until(lambda: (lambda r: r if r["searching"] and r["searching"]["runtime_status"] in (
        "Completed", "Failed") else None)(api.get(f"{base}/api/tasks/{task_id}/repeats", timeout=120).json()), 180,
        "the re-run's repeat search")
    assert searched["searching"]["runtime_status"] == "Completed", searched["searching"]
    assert searched["search"] == sid and store.read_json(state, layout.repeats_blob(key))["search"] == sid
    assert store.read_json(state, layout.repeats_blob(task_id)) == first_list  # the first generation's: untouched
    assert api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()["results"] == after["results"]

    # a re-render at another threshold renders the served re-run's page and writes its CSV beside the re-run's own
    rerendered = api.post(f"{base}/api/tasks/{task_id}/previews", json={"threshold": 0.5}, timeout=120)
    assert rerendered.status_code == 202, rerendered.text
    assert rerendered.json()["csv"] == {"original": layout.threshold_csv_blob(key, 0.5)}
    done_render = wait_until(lambda: (lambda r: r if r and r["stage"] == Stage.completed else None)(
        api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()["previews"]["rerender"]), 120,
        "the re-run's re-render")
    assert done_render["key"] == key and done_render["csv"] == {"original": layout.threshold_csv_blob(key, 0.5)}
    rows = store.read_bytes(state, layout.threshold_csv_blob(key, 0.5)).decode("utf-8").splitlines()
    assert len(rows) == 1 + len(names)
    assert not store.exists(state, layout.threshold_csv_blob(task_id, 0.5))  # the first generation's: untouched
    assert store.read_json(state, layout.preview_sample_blob(key))["threshold"] == 0.5
    assert api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()["results"]["thresholds"] == {
        "original": {"0.5": layout.threshold_csv_blob(key, 0.5)}}
    monkeypatch.setenv("TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES", "1")  # every hand-off is "large" (read per call)
    check_rerun_zip(host, store, app_env, task_id, key)
    check_title_after_a_cancelled_rerun(host, store, app_env, task_id, key, after["previews"]["blob"])


def check_title_after_a_cancelled_rerun(host: Any, store: BlobStore, app_env: dict[str, str], task_id: str,
                                        key: str, page: str) -> None:
    """A re-run under another name that ends without results leaves the earlier generation served; the task's input
    (its latest request) then holds the other name, and a re-render must still title the page with the name of the
    request that made the served results (its generation's own request.json)."""
    base = host.base_url
    assert store.read_json(app_env["TRAPBATCH_CONTAINER"], layout.request_blob(key))["request_name"] == "again"
    container = store.read_json(app_env["TRAPBATCH_CONTAINER"], layout.request_blob(key))["container"]
    third = api.post(f"{base}/api/tasks", json={"container": container, "rerun": True, "request_name": "third try"},
                     timeout=120)
    assert third.status_code == 202 and third.json()["id"] == task_id, third.text
    wait_until(lambda: status(host, task_id)["stage"] == Stage.awaiting_confirmation, 120, "third run waiting")
    assert api.post(f"{base}/api/tasks/{task_id}/cancel", timeout=120).status_code == 202
    ended = wait_until(lambda: (lambda s: s if s["stage"] == Stage.cancelled else None)(status(host, task_id)), 120,
                       "third run cancelled")
    assert ended["served"]["generation"] == key.rsplit("/", 1)[1]  # the status says which results are still served
    assert ended["served"]["results_url"].endswith(f"/api/tasks/{task_id}/results")
    served = api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()
    assert served["results"]["blob"] == layout.results_blob(key)  # still the second generation's
    assert served["rerun"]["stage"] == Stage.cancelled and "ended cancelled without results" in served["rerun"]["hint"]
    again = api.post(f"{base}/api/tasks/{task_id}/previews", json={"threshold": 0.6}, timeout=120)
    assert again.status_code == 202, again.text
    wait_until(lambda: (lambda r: r if r and r["stage"] == Stage.completed and r.get("threshold") == 0.6 else None)(
        api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()["previews"]["rerender"]), 120,
        "the re-render after the cancelled re-run")
    html = store.read_bytes("$web", page).decode("utf-8")
    assert "0.6" in html and "again" in html and "third try" not in html


def check_rerun_zip(host: Any, store: BlobStore, app_env: dict[str, str], task_id: str, key: str) -> None:
    """The served re-run's files zipped: under a folder named for the generation, the re-run's bytes."""
    import io
    import zipfile

    from adapters.results_bundle import linked_blobs

    url = f"{host.base_url}/api/tasks/{task_id}/results"
    ready = wait_until(lambda: (lambda a: a if a["zip"]["state"] == "ready" else None)(
        api.get(url, timeout=120).json()), 120, "the re-run's zip")
    container = app_env["TRAPBATCH_CONTAINER"]
    files = linked_blobs(store, container, key)
    assert layout.results_zip_build(key, ready["zip"]["blob"]) and ready["zip"]["files"] == len(files) >= 3
    label = layout.download_label(key)
    assert label == f"{task_id}-runs-{key.rsplit('/', 1)[1]}" and f"/download/{label}-results-" in ready["zip"]["blob"]
    got = requests.get(ready["links"]["zip"], timeout=60)
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert sorted(zf.namelist()) == sorted(f"{label}/{n[len(layout.results_prefix(key)):]}" for n in files)
        assert zf.read(f"{label}/detections.json") == store.read_bytes(container, layout.results_blob(key))
    assert not list(store.list_names(container, layout.results_zip_folder(task_id)))  # the first generation's: never


def test_only_new_runs_exactly_the_new_and_changed_images_and_merges_them_with_the_reused_results(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str) -> None:
    from tests.integration.conftest import _jpeg

    state = app_env["TRAPBATCH_CONTAINER"]
    names = upload_images(store, unique_name, 10, corrupt=0)  # 3 shards of 4 (TRAPBATCH_IMAGES_PER_SHARD)
    base = host.base_url
    body = {"container": unique_name}
    started = api.post(f"{base}/api/tasks", json=body, timeout=120)
    assert started.status_code == 202, started.text
    task_id = started.json()["id"]
    done = confirm_and_finish(host, task_id)
    assert done["stage"] == Stage.completed, done
    before = {im["file"]: im for im in store.read_json(state, layout.results_blob(task_id))["images"]}
    assert sorted(before) == names

    changed, deleted = "cam0/img 002.jpg", "cam1/img 003.jpg"
    added = ["cam1/img 100.jpg", "cam1/img 101.jpg"]
    store.write_bytes(unique_name, changed, _jpeg(1002))  # new bytes: a new ETag
    for i, name in enumerate(added):
        store.write_bytes(unique_name, name, _jpeg(2000 + i))
    store.service.get_blob_client(unique_name, deleted).delete_blob()
    now = sorted({*names, *added} - {deleted})

    again = api.post(f"{base}/api/tasks", json={**body, "only_new": True}, timeout=120)
    assert again.status_code == 202 and again.json()["id"] == task_id and again.json()["started"] is True
    final = confirm_and_finish(host, task_id)
    assert final["stage"] == Stage.completed, final
    key = layout.generation_key(task_id, final["generation"])
    # the pool ran exactly the new and the changed images, each once; the shard with no change had no pool task
    assert pool_work(app_env, store, key, final["pool_job"]) == sorted([changed, *added])
    assert final["reused"] == len(now) - 3 and final["images"] == len(now)
    after = store.read_json(state, layout.results_blob(key))["images"]
    files = [im["file"] for im in after]
    assert sorted(files) == now and len(files) == len(set(files))  # every image once, the deleted one dropped
    for im in after:
        if im["file"] not in (changed, *added):
            assert im == before[im["file"]]  # reused as the previous generation detected it
    served = api.get(f"{base}/api/tasks/{task_id}/results", timeout=120).json()
    assert served["generation"] == final["generation"] and served["results"]["blob"] == layout.results_blob(key)


def test_an_only_new_rerun_that_failed_posted_again_plainly_resumes_with_its_reuse(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str) -> None:
    """A failed or terminated run is resumed by its request posted again without "rerun" or "only_new" (the advice
    of orchestrations.shards' PoolOutOfReach and orchestrations.retries' _gave_up). When that run was an ``only_new``
    re-run, the resumed run must still reuse the served results: before, its input lost ``only_new`` and the pool
    detected every image again."""
    from tests.integration.conftest import _jpeg

    state = app_env["TRAPBATCH_CONTAINER"]
    names = upload_images(store, unique_name, 10, corrupt=0)  # 3 shards of 4 (TRAPBATCH_IMAGES_PER_SHARD)
    base = host.base_url
    body = {"container": unique_name}
    started = api.post(f"{base}/api/tasks", json=body, timeout=120)
    assert started.status_code == 202, started.text
    task_id = started.json()["id"]
    assert confirm_and_finish(host, task_id)["stage"] == Stage.completed
    changed, added = "cam0/img 002.jpg", ["cam1/img 100.jpg", "cam1/img 101.jpg"]
    store.write_bytes(unique_name, changed, _jpeg(1002))  # new bytes: a new ETag
    for i, name in enumerate(added):
        store.write_bytes(unique_name, name, _jpeg(2000 + i))
    now = sorted({*names, *added})

    rerun = api.post(f"{base}/api/tasks", json={**body, "only_new": True}, timeout=120)
    assert rerun.status_code == 202 and rerun.json()["id"] == task_id, rerun.text
    waiting = wait_until(lambda: (lambda s: s if s["stage"] == Stage.awaiting_confirmation else None)(
        status(host, task_id)), 120, "the only_new re-run waiting")
    assert waiting["images"] == 3  # the reuse step ran: only the changed and the added images wait for the pool
    host.terminate(task_id, "the re-run stopped before its pool work (as a failed run would)")
    wait_until(lambda: status(host, task_id)["runtime_status"] == "Terminated", 60, "the re-run terminated")

    resumed = api.post(f"{base}/api/tasks", json=body, timeout=120)  # as the failure's advice says: plainly
    assert resumed.status_code == 202 and resumed.json()["started"] is True, resumed.text
    again = wait_until(lambda: (lambda s: s if s["runtime_status"] == "Running"
                                and s["stage"] == Stage.awaiting_confirmation else None)(status(host, task_id)), 120,
                       "the resumed re-run waiting")
    assert again["images"] == 3, again  # still only those: the resumed run reuses as the re-run did
    final = confirm_and_finish(host, task_id)
    assert final["stage"] == Stage.completed and final["reused"] == len(now) - 3, final
    key = layout.generation_key(task_id, final["generation"])
    assert pool_work(app_env, store, key, final["pool_job"]) == sorted([changed, *added])
    files = [im["file"] for im in store.read_json(state, layout.results_blob(key))["images"]]
    assert sorted(files) == now and len(files) == len(set(files))


def _camera_jpeg(seed: int, taken: str) -> bytes:
    """A small JPEG with a trail camera's capture time (EXIF DateTimeOriginal)."""
    import io

    from PIL import Image

    from tests.integration.conftest import _jpeg

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = taken
    out = io.BytesIO()
    Image.open(io.BytesIO(_jpeg(seed))).save(out, "JPEG", exif=exif)
    return out.getvalue()


def _media(store: BlobStore, container: str, blob: str) -> dict[str, dict[str, str]]:
    import csv
    import io

    return dict(by_blob_name(csv.DictReader(io.StringIO(store.read_bytes(container, blob).decode()))))


def test_a_wrong_camera_clock_is_corrected_by_an_only_new_rerun_without_running_an_image(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str) -> None:
    """The preview page points out a clock that reads 2000; the same request again with clock_corrections and
    only_new reuses every result (no pool work) and the new generation's Camtrap DP times are corrected; the
    results keep the camera's clock as written."""
    state = app_env["TRAPBATCH_CONTAINER"]
    store.ensure_container(unique_name)
    for cam, day in (("camA", "2000:01:01"), ("camB", "2024:06:01")):
        for i in range(3):
            store.write_bytes(unique_name, f"{cam}/IMG_{i}.JPG",
                              _camera_jpeg(i + (10 if cam == "camB" else 0), f"{day} 00:00:{i * 10:02d}"))
    base = host.base_url
    body = {"container": unique_name}
    started = api.post(f"{base}/api/tasks", json=body, timeout=120)
    assert started.status_code == 202, started.text
    task_id = started.json()["id"]
    assert confirm_and_finish(host, task_id)["stage"] == Stage.completed
    first = _media(store, state, layout.camtrap_dp_blob(task_id, "media.csv"))
    assert first["camA/IMG_1.JPG"]["timestamp"] == "2000-01-01T00:00:10+00:00"

    shown = {"camera": "2000:01:01 00:00:00", "actual": "2024-06-01 05:00:00"}  # a photo's clock, and the truth
    again = api.post(f"{base}/api/tasks", json={**body, "only_new": True, "clock_corrections": {"camA": shown}},
                     timeout=120)
    assert again.status_code == 202 and again.json()["id"] == task_id, again.text
    final = dict(wait_until(lambda: (lambda s: s if s.get("generation") and s["runtime_status"] in (
        "Completed", "Failed") else None)(status(host, task_id)), 300, "the re-run's end"))
    assert final["stage"] == Stage.completed and final["reused"] == 6, final
    key = layout.generation_key(task_id, final["generation"])
    assert pool_work(app_env, store, key, str(final.get("pool_job") or "")) == []  # no image ran again
    media = _media(store, state, layout.camtrap_dp_blob(key, "media.csv"))
    assert media["camA/IMG_1.JPG"]["timestamp"] == "2024-06-01T05:00:10+00:00"
    assert "camera clock corrected by +770533200 s" in media["camA/IMG_1.JPG"]["mediaComments"]
    assert media["camB/IMG_1.JPG"]["timestamp"] == "2024-06-01T00:00:10+00:00"  # another camera: as it was
    results = {im["file"]: im for im in store.read_json(state, layout.results_blob(key))["images"]}
    assert results["camA/IMG_1.JPG"]["datetime"] == "2000:01:01 00:00:10"  # the results keep the camera's clock


def test_a_run_terminated_while_its_shards_run_has_its_pool_work_ended_by_the_run_that_resumes_it(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Terminate stops the orchestration alone ("no effect on any in-flight activity function executions or
    sub-orchestrations", Durable Functions ``TerminateAsync``; devhost's terminate does not cascade either): the
    terminated run's shard groups and their workers, here hung on both of LocalPool's two slots, ran on in its job.
    The run that resumes it first writes that run's cancel marker and closes its job: the hung workers end, its groups
    end at their next poll, and the resumed run's own shards (in groups of its own run) get the slots and complete.
    Before, the old job was never closed: its hung workers held both slots for good and the resumed run never ran."""
    task_id, old_job = _both_slots_held_by_hung_shards(host, store, unique_name, monkeypatch)
    host.terminate(task_id, "an operator ended it")
    wait_until(lambda: status(host, task_id)["runtime_status"] == "Terminated", 60, "the run terminated")
    monkeypatch.delenv("TRAPBATCH_WORKER_FAULTS")  # the resumed run's workers do not hang

    _resumed_run_completes_and_the_old_one_ended(host, app_env, unique_name, task_id, old_job, "terminated")


def test_a_task_terminated_through_the_api_resumes_when_posted_again_and_its_pool_work_is_ended(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str,
        monkeypatch: pytest.MonkeyPatch, incoming: str) -> None:
    """POST /api/tasks/{id}/terminate, with the function key alone (no Durable system key), ends a task whose work
    will never finish (both of LocalPool's slots held by hung workers: nothing the run waits on ever ends) at once;
    its answer says what follows, and a second terminate is refused as the task no longer runs. Then the same
    request posted plainly resumes it: the terminated run's job is closed (its hung workers end) and the task
    completes every image. Before, only the management API's system-key URL could terminate (404 here).

    A request dropped while it ran joined it: the terminate's 202 wrote its done file, saying ``terminated`` (before,
    none came until the request was posted again), and the resumed run's end writes its own over it
    (api.terminated_answers, adapters.terminated_drops)."""
    task_id, old_job = _both_slots_held_by_hung_shards(host, store, unique_name, monkeypatch)
    joined = f"{unique_name}-joined.json"
    store.write_json(incoming, joined, {"container": unique_name})
    receipt = wait_until(lambda: store.read_json_or_none(incoming, layout.drop_receipt_blob(joined)), 60, "receipt")
    assert receipt["started"] is False and receipt["id"] == task_id, receipt
    done = layout.drop_answer_blob(joined, "done")
    url = f"{host.base_url}/api/tasks/{task_id}/terminate"
    ended = api.post(url, json={"reason": "stalled: both workers hung"}, timeout=120)
    assert ended.status_code == 202, ended.text
    answer = ended.json()
    assert answer["terminated"] is True and answer["stage"] == Stage.detecting, answer
    assert f"pool job {old_job})" in answer["hint"] and "post the same request again" in answer["hint"], answer
    assert answer["drop_answers"] == {"written": True, "stage": "terminated", "joined": 1}, answer
    said = store.read_json(incoming, done)
    assert said["stage"] == "terminated" and said["reason"] == "stalled: both workers hung", said
    assert said["run"] == answer["run"] and said["terminated_in"] == Stage.detecting, said
    wait_until(lambda: status(host, task_id)["runtime_status"] == "Terminated", 60, "the run terminated")
    assert host.get_status(task_id)["output"] == "stalled: both workers hung"  # the reason, kept with the run
    assert status(host, task_id)["stage"] == Stage.terminated
    again = api.post(url, timeout=120)
    assert again.status_code == 409 and "is not running (stage: terminated)" in again.json()["error"], again.text
    monkeypatch.delenv("TRAPBATCH_WORKER_FAULTS")  # the resumed run's workers do not hang

    _resumed_run_completes_and_the_old_one_ended(host, app_env, unique_name, task_id, old_job, "terminated")
    final = wait_until(lambda: (lambda d: d if d and d.get("stage") == Stage.completed else None)(
        store.read_json_or_none(incoming, done)), 60, "the resumed run's end beside the joined drop")
    assert final["id"] == task_id and final["images"] == 8 and "reason" not in final, final


@pytest.mark.parametrize("replay_stage", [Stage.enumerating, Stage.failed])
def test_a_run_the_platform_failed_while_its_shards_run_has_its_pool_work_ended_by_the_run_that_resumes_it(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str,
        monkeypatch: pytest.MonkeyPatch, replay_stage: Stage) -> None:
    """The Durable Task Framework fails an execution whose replay breaks determinism at once, whatever it has open
    (``TaskOrchestrationExecutor.ExecuteCore``: ``catch (NonDeterministicOrchestrationException) {
    FailOrchestration }``, outside its ``if (!this.context.HasOpenTasks)``; devhost alike, fidelity row 7): here a
    release that changed the task orchestrator's actions, deployed while its shard groups ran (both of LocalPool's
    slots held by hung workers), and any message to the task (an event) replays it. Its groups, its workers and its
    job run on, as after a terminate, and its own failure handling (the job's close) never ran; its status is the one
    that replay set, not ``failed``. The plain post that resumes it ends it as it ends a terminated run
    (``api.starters._ended_runs``): its hung workers end, its groups end at their next poll, and the resumed run's
    shards, in groups of its own run, get the slots and complete. Fails without the change: the resumed run started
    its groups under the ids of the failed run's, still running, and the old job, never closed, kept both slots.
    ``replay_stage`` ``failed``: the failing replay set the stage the task's own failure handling sets (a release that
    raises earlier on the recorded input), and the failure's words (the instance's output) tell it apart (fails
    without ``api.starters._failed_by_platform``)."""
    import azure.durable_functions as df

    from core.ids import shards_instance_id

    task_id, old_job = _both_slots_held_by_hung_shards(host, store, unique_name, monkeypatch)

    def changed(context: df.DurableOrchestrationContext) -> Any:  # a release whose first action is another one
        context.set_custom_status({"stage": replay_stage})
        yield context.call_activity(c.CLOSE_JOB, {"task_id": task_id, "job_id": old_job})

    deployed = host.index.orchestrators[c.TASK_ORCHESTRATOR]
    host.index.orchestrators[c.TASK_ORCHESTRATOR] = df.Orchestrator.create(changed)
    try:
        host.raise_event(task_id, "anything", None)
        wait_until(lambda: status(host, task_id)["runtime_status"] == "Failed", 60, "the run failed by the platform")
    finally:
        host.index.orchestrators[c.TASK_ORCHESTRATOR] = deployed
    assert "Non-Deterministic" in str(host.get_status(task_id)), host.get_status(task_id)
    assert (host.get_status(task_id) or {}).get("customStatus", {}).get("stage") == replay_stage  # as that replay set
    assert (host.get_status(shards_instance_id(task_id, 0)) or {}).get("runtimeStatus") == "Running"  # runs on
    monkeypatch.delenv("TRAPBATCH_WORKER_FAULTS")  # the resumed run's workers do not hang

    _resumed_run_completes_and_the_old_one_ended(host, app_env, unique_name, task_id, old_job, "failed")


def _started_with_shard_0_finished(host: Any, state: str, store: BlobStore, unique_name: str,
                                   monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str], str]:
    """A task of 8 images in 2 shards of 4 (``TRAPBATCH_IMAGES_PER_SHARD``) started, confirmed and run until shard 0's
    attempt 1 finished while shard 1's worker hangs (``TRAPBATCH_WORKER_FAULTS``, left set for the caller to unset):
    (task id, the images' names in order, shard 0's attempt 1 results blob)."""
    import json

    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00001/1": "hang"}))  # shard 0 finishes, 1 hangs
    names = upload_images(store, unique_name, 8, corrupt=0)
    started = api.post(f"{host.base_url}/api/tasks", json={"container": unique_name}, timeout=120)
    assert started.status_code == 202, started.text
    task_id = started.json()["id"]
    wait_until(lambda: status(host, task_id)["stage"] == Stage.awaiting_confirmation, 120, "awaiting confirmation")
    assert api.post(f"{host.base_url}/api/tasks/{task_id}/confirm", timeout=120).status_code == 202
    first = layout.attempt_results_blob(task_id, layout.shard_id(0), 1)

    def shard_0_finished() -> bool:
        doc = store.read_json_or_none(state, first)
        return bool(doc and doc["info"]["trapbatch"].get("complete"))

    wait_until(shard_0_finished, 180, "shard 0's results complete")
    return task_id, names, first


def test_a_resumed_run_runs_again_an_image_replaced_in_place_since_the_run_it_resumes(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard of the terminated run finished (its results name every image), then one of its images was overwritten
    with other bytes (a new ETag, here a truncated JPEG) under the same name, and the plain post resumed the run,
    whose listing put it in the same shard id again. The resumed run must detect the new bytes: the image's final
    entry is the failure a truncated JPEG gets. Before, the worker, the poll and the merge kept the old bytes' entry
    by name (no ETag checked) and the image ended a success (activities.replaced_images)."""
    state = app_env["TRAPBATCH_CONTAINER"]
    task_id, names, first = _started_with_shard_0_finished(host, state, store, unique_name, monkeypatch)
    replaced = names[1]  # in shard 0 (names in order, 4 a shard), a success so far
    assert replaced in results_files(store, app_env, first)
    good = store.read_bytes(unique_name, replaced)
    store.write_bytes(unique_name, replaced, good[: len(good) // 3])  # other bytes under the same name
    host.terminate(task_id, "an operator ended it")
    wait_until(lambda: status(host, task_id)["runtime_status"] == "Terminated", 60, "the run terminated")
    monkeypatch.delenv("TRAPBATCH_WORKER_FAULTS")

    resumed = api.post(f"{host.base_url}/api/tasks", json={"container": unique_name}, timeout=120)  # plainly
    assert resumed.status_code == 202 and resumed.json()["started"] is True, resumed.text
    final = confirm_and_finish(host, task_id, timeout=300)
    assert final["stage"] == Stage.completed_with_errors and final["images"] == 8, final
    assert final["failed"] == 1 and final["missing"] == 0, final
    # shard 0's 3 images left final go with it to the pool, counted "earlier", not run by it (only the replaced one)
    assert final["earlier"] == 3 and final["cost"]["images"] == 5, final
    entries = {im["file"]: im for im in store.read_json(state, layout.results_blob(task_id))["images"]}
    assert sorted(entries) == names and "failure" in entries[replaced], entries[replaced]
    assert all("failure" not in im for name, im in entries.items() if name != replaced)


def test_a_resumed_run_whose_shards_all_finished_sends_nothing_to_the_pool_and_merges_every_image_once(
        host: Any, app_env: dict[str, str], store: BlobStore, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard 0 of the terminated run finished; shard 1's worker hung, and its results name every image (written here
    as a worker that finished just before the terminate would have). The plain post resumes the run: its listing
    finds both shards finished (``activities.shard_results.finished_coverage``), so its groups start them done, no
    pool task goes to its job and it needs no confirmation (nothing to run); the results hold each image once, the
    status counts the images in ``earlier``. Before, each shard's attempt 1 went to the pool again, a worker started
    for nothing."""
    from gpu_batch.worker.results import detections_entry

    state = app_env["TRAPBATCH_CONTAINER"]
    task_id, names, _ = _started_with_shard_0_finished(host, state, store, unique_name, monkeypatch)
    det = {"category": "1", "conf": 0.8, "bbox": [0.1, 0.1, 0.2, 0.2]}
    store.write_json(state, layout.attempt_results_blob(task_id, layout.shard_id(1), 1),
                     {"images": [detections_entry(n, [det], 640, 480) for n in names[4:]]})
    host.terminate(task_id, "an operator ended it")
    wait_until(lambda: status(host, task_id)["runtime_status"] == "Terminated", 60, "the run terminated")
    monkeypatch.delenv("TRAPBATCH_WORKER_FAULTS")

    resumed = api.post(f"{host.base_url}/api/tasks", json={"container": unique_name}, timeout=120)  # plainly
    assert resumed.status_code == 202 and resumed.json()["started"] is True, resumed.text
    # nothing to run: no confirmation either (a run with its 8 images to run waits for one, above 2)
    final = dict(wait_until(lambda: (lambda s: s if s["runtime_status"] in ("Completed", "Failed")
                                     or s["stage"] == Stage.awaiting_confirmation else None)(status(host, task_id)),
                            300, "the resumed run's end"))
    assert final["stage"] == Stage.completed and final["images"] == 8 and final["missing"] == 0, final
    assert final["earlier"] == 8 and final["cost"]["images"] == 0, final
    assert pool_work(app_env, store, task_id, final["pool_job"]) == []  # no pool task in the resumed run's job
    files = [im["file"] for im in store.read_json(state, layout.results_blob(task_id))["images"]]
    assert sorted(files) == sorted(names) and len(files) == len(set(files)), files


def _both_slots_held_by_hung_shards(host: Any, store: BlobStore, unique_name: str,
                                    monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A task over 8 images (2 shards of 4, ``TRAPBATCH_IMAGES_PER_SHARD``) confirmed, whose two first attempts hang
    on both of LocalPool's slots; its id and pool job. The next workers started do not hang."""
    import json

    monkeypatch.setenv("TRAPBATCH_WORKER_FAULTS", json.dumps({"s00000/1": "hang", "s00001/1": "hang"}))
    upload_images(store, unique_name, 8, corrupt=0)
    started = api.post(f"{host.base_url}/api/tasks", json={"container": unique_name}, timeout=120)
    assert started.status_code == 202, started.text
    task_id = started.json()["id"]
    wait_until(lambda: status(host, task_id)["stage"] == Stage.awaiting_confirmation, 120, "awaiting confirmation")
    assert api.post(f"{host.base_url}/api/tasks/{task_id}/confirm", timeout=120).status_code == 202
    running = wait_until(lambda: (lambda s: s if s.get("shards_running") == 2 else None)(status(host, task_id)), 180,
                         "both hung shards running")
    return task_id, running["pool_job"]


def _resumed_run_completes_and_the_old_one_ended(host: Any, app_env: dict[str, str], unique_name: str, task_id: str,
                                                 old_job: str, how: str) -> None:
    """A plain post of the same request resumes the run that ended ``how`` (terminated, failed) and completes every
    image in a job of its own; the old run's hung workers were ended (its job closed), its shard group ended at its
    cancel marker, and the resumed run's group has an id of its own run."""
    from azure.data.tables import TableServiceClient

    from core.ids import shards_instance_id
    from devhost.store import TERMINAL

    resumed = api.post(f"{host.base_url}/api/tasks", json={"container": unique_name}, timeout=120)  # plainly
    assert resumed.status_code == 202 and resumed.json()["started"] is True, resumed.text
    final = confirm_and_finish(host, task_id, timeout=300)  # ~30 s here: the rest is margin for a loaded machine

    assert final["stage"] == Stage.completed and final["pool_job"] != old_job, final
    assert final["images"] == 8 and final["failed"] == 0 and final["missing"] == 0, final
    pool = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_table_client("trapbatchpool")
    old_rows = list(pool.query_entities("PartitionKey eq @j", parameters={"j": old_job}))
    assert old_rows and {r["State"] for r in old_rows} == {"completed"}  # the hung workers were ended
    wait_until(lambda: (host.get_status(shards_instance_id(task_id, 0)) or {}).get("runtimeStatus") in TERMINAL, 120,
               f"the {how} run's shard group ending")
    assert host.get_status(shards_instance_id(task_id, 0, final["pool_job"].split("_", 1)[1])) is not None
