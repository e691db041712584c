"""A task whose storage throttles loses no image: the whole path (devhost, Azurite, LocalPool, the real CPU worker on
the tiny checkpoint) with the task's blob traffic refused in bursts of Azure Storage's 503 ServerBusy.

What goes through the throttling proxy (``tests.integration.storage_faults``): every blob request of the Functions
app's activities and of the local pool's runners and workers. They take their storage from ``AzureWebJobsStorage``
(``Settings.storage_connection``; the pool hands it to its runners and workers as ``TRAPBATCH_STORAGE_CONNECTION``),
here a connection string whose ``BlobEndpoint`` is the proxy. What does not: devhost's own state (its task hub, the
drop-container poller, the web front), which is given Azurite's connection directly, as the Durable extension's task
hub is the platform's and not the app's; and tables (the local pool's task table): the proxy is blob-only.

Two copies of the same images run as two tasks side by side, one calm and one throttled (only the requests that name
the throttled task's container or id are refused: the calm task is the reference its results must equal). Throttled
in bursts, some SDK calls run out of their own retries: the activity fails and the orchestration's busy retry
(``orchestrations.retries``) calls it again; a worker's image read fails and the shard's next attempt runs it again.

Time: the storage SDK waits 15 s + 3^n s (+-3 s) between its own tries (azure-storage-blob ``ExponentialRetry``; no
setting of trapbatch changes it), the orchestration 15 s, doubling, before a busy retry (``BUSY_FIRST_DELAY_S``).
Here both are shortened, the SDK's defaults in this process and, by a ``sitecustomize`` on ``PYTHONPATH``, in the
pool's runner and worker processes, the orchestration's constant in this process, where devhost runs the
orchestrators: how many tries each makes, and what a caller does when they run out, are unchanged. 75-95 s here
(~45 s of CPU) with the 2-core machine shared (load average 7), the throttled task ~60 s of it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from collections import Counter
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import pytest

from adapters.blobs import BlobStore
from devhost.azurite import ACCOUNT, Azurite, connection_string
from gpu_batch.manifest import ShardManifest
from orchestrations.retries import STORAGE_RETRY
from tests.integration.conftest import upload_images
from tests.integration.storage_faults import SDK_TRIES, StorageFaultProxy, Throttling
from tests.integration.test_end_to_end import FUNCTION_KEY, api, check_results
from tests.waiting import wait_until

# The storage SDK's back-off between its own tries, shortened: ~0.4 s, 0.2 s, 0.13 s instead of ~18 s, 24 s, 42 s.
SDK_BACKOFF = {"initial_backoff": 0.1, "increment_base": 0.3, "random_jitter_range": 0.05}
SITECUSTOMIZE = f'''"""tests/integration/test_storage_throttling.py: azure-storage-blob's back-off shortened."""
try:
    from azure.storage.blob._shared.policies import ExponentialRetry as _Retry
    _d = _Retry.__init__.__defaults__
    _Retry.__init__.__defaults__ = ({SDK_BACKOFF["initial_backoff"]!r}, {SDK_BACKOFF["increment_base"]!r}) + \\
        _d[2:4] + ({SDK_BACKOFF["random_jitter_range"]!r},)
except Exception:
    pass
'''
BUSY_FIRST_DELAY_S = 0.5  # the orchestration's first wait after a busy failure (15 s in the app), doubling
IMAGES = 8  # two shards of TRAPBATCH_IMAGES_PER_SHARD (4), the first image corrupt
TIMEOUT_S = 400  # ~20 s (calm) and ~70 s (throttled) here; CI machines are loaded
# Paths only the pool's workers and runners write: a shard attempt's results, progress, coverage and merge view, and
# a runner's log
WORKER_WRITES = re.compile(r"/shards/s\d+/attempt-\d+\.(results\.json|progress\.json|coverage\.json|view)|/logs/")


@pytest.fixture
def short_backoffs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from azure.storage.blob._shared.policies import ExponentialRetry

    from orchestrations import retries

    defaults = ExponentialRetry.__init__.__defaults__
    # (initial_backoff, increment_base, retry_total, retry_to_secondary, random_jitter_range), as the sitecustomize
    assert defaults is not None and len(defaults) == 5 and defaults[2] == SDK_TRIES - 1, defaults
    monkeypatch.setattr(ExponentialRetry.__init__, "__defaults__",
                        (SDK_BACKOFF["initial_backoff"], SDK_BACKOFF["increment_base"]) + defaults[2:4] +
                        (SDK_BACKOFF["random_jitter_range"],))
    monkeypatch.setattr(retries, "BUSY_FIRST_DELAY_S", BUSY_FIRST_DELAY_S)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[StorageFaultProxy]:
    with StorageFaultProxy(azurite.blob_port, Throttling()) as p:
        yield p


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str, azurite: Azurite, proxy: StorageFaultProxy,
         short_backoffs: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """devhost on Azurite directly; the app it runs (and the pool's workers) on the proxy's blob endpoint."""
    from devhost.host import DevHost
    import function_app

    monkeypatch.setenv("AzureWebJobsStorage", connection_string(proxy.port, azurite.queue_port, azurite.table_port))
    h = DevHost(function_app.app, azurite.connection_string, task_hub="h" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def start_task(host: Any, container: str) -> str:
    r = api.post(host.base_url + "/api/tasks", json={"container": container, "max_failed_fraction": 0.2},
                 timeout=120)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def finished(host: Any, task_id: str) -> dict[str, Any] | None:
    """The task's status once it ended; None before, or while its storage answers the status route 503 (the status
    reads the task's blobs too: the edge answers a busy account so, with a hint to retry)."""
    answer = api.get(f"{host.base_url}/api/tasks/{task_id}", timeout=120)
    if answer.status_code == 503:
        return None
    assert answer.status_code == 200, answer.text
    status: dict[str, Any] = answer.json()
    return status if status["runtime_status"] in ("Completed", "Failed", "Terminated") else None


def activity_outcomes(host: Any, task_id: str) -> tuple[list[tuple[str, str]], set[str]]:
    """The failed activities of the task and its shard groups, ``(name, reason)``, and the names of those that
    completed, from their Durable histories (the events the management API's ``showHistory`` lists)."""
    from devhost import history as h

    failed, completed = [], set()
    for inst in host.store.list_instances():
        if not inst["InstanceId"].startswith(task_id):
            continue
        events = (host.store.load_history(inst["InstanceId"]) or {}).get("history", [])
        names = {e["EventId"]: e.get("Name") for e in events if e["EventType"] == h.TASK_SCHEDULED}
        for e in events:
            if e["EventType"] == h.TASK_FAILED:
                failed.append((names.get(e["TaskScheduledId"], "?"), e.get("Reason", "")))
            elif e["EventType"] == h.TASK_COMPLETED:
                completed.add(names.get(e["TaskScheduledId"], "?"))
    return failed, completed


def result_files(host: Any, task_id: str) -> dict[str, Any]:
    """The names of the task's result files as ``GET .../results`` links them (the links left out: they name the
    task)."""
    answer = api.get(f"{host.base_url}/api/tasks/{task_id}/results", timeout=120)
    assert answer.status_code == 200, answer.text
    files = answer.json()["links"]["files"]

    def names(value: Any) -> Any:
        return {k: names(v) for k, v in value.items()} if isinstance(value, dict) else "link"

    return {k: names(v) for k, v in files.items()}


def same_detections(calm: list[dict[str, Any]], busy: list[dict[str, Any]]) -> list[str]:
    """Where the two runs' entries differ, beyond the last digit of a number: a re-run image goes through the network
    in another batch than before (a CPU batch is not padded), whose sums may differ in their last bits and turn the
    truncated confidence's third decimal, or a box's rounding to whole pixels."""
    differences = []
    for a, b in zip(calm, busy, strict=True):
        plain = {k: v for k, v in a.items() if k != "detections"}, {k: v for k, v in b.items() if k != "detections"}
        if plain[0] != plain[1] or (a.get("detections") is None) != (b.get("detections") is None):
            differences.append(f"{a['file']}: {a} != {b}")
            continue
        da, db = a.get("detections") or [], b.get("detections") or []
        close = len(da) == len(db) and all(
            x["category"] == y["category"] and abs(x["conf"] - y["conf"]) <= 0.0011 and
            all(abs(p - q) <= 1.01 / min(a["width"], a["height"]) for p, q in zip(x["bbox"], y["bbox"]))
            for x, y in zip(da, db))
        if not close:
            differences.append(f"{a['file']}: {da} != {db}")
    return differences


def test_a_task_whose_storage_throttles_loses_no_image(host: Any, app_env: dict[str, str], store: BlobStore,
                                                        unique_name: str, proxy: StorageFaultProxy) -> None:
    calm, busy = unique_name + "-calm", unique_name + "-busy"
    names = upload_images(store, calm, IMAGES, corrupt=1)
    assert upload_images(store, busy, IMAGES, corrupt=1) == names
    calm_id = start_task(host, calm)
    # only the throttled task's requests are refused: by its container's name, then also by its id, which its
    # state's and its preview pages' blob names hold (the few state requests before its id is known pass)
    proxy.throttling.targets.append(f"/{busy}")
    # and the first image read of the throttled task (a worker's: the app reads images only for the previews, after
    # the merge) is refused until the SDK gives up: that image fails retryable and the shard's next attempt reads it
    proxy.throttling.openings.append((re.compile(rf"^GET /{ACCOUNT}/{busy}/"), SDK_TRIES))
    # and the merge's first read of a part's sample is refused for three of its activity's calls (the SDK's tries
    # each), more than a failure that is not busy gets: only the busy retries see the task through
    proxy.throttling.openings.append((re.compile(r"^GET /[^ ]+/merge/part-\d+\.sample\.json$"),
                                      STORAGE_RETRY.attempts * SDK_TRIES + 1))
    proxy.throttling.enabled = True
    busy_id = start_task(host, busy)
    proxy.throttling.targets.append(busy_id)
    calm_status = wait_until(lambda: finished(host, calm_id), TIMEOUT_S, "the calm task's end")
    status = wait_until(lambda: finished(host, busy_id), TIMEOUT_S, "the throttled task's end")
    proxy.throttling.enabled = False  # what follows reads the results
    failed, completed = activity_outcomes(host, busy_id)
    refused = proxy.refused()
    summary = (f"proxy: {dict(proxy.counts())}; SDK calls refused {SDK_TRIES} times or more: "
               f"{sorted(proxy.exhausted())}; failed activities: {[(n, r[:160]) for n, r in failed]}")

    assert calm_status["runtime_status"] == "Completed", calm_status
    assert status["runtime_status"] == "Completed" and status["stage"] == "completed", \
        json.dumps(status)[:2000] + "\n" + summary
    assert (status["images"], status["failed"]) == (calm_status["images"], calm_status["failed"]) == (IMAGES, 1)
    # every image has exactly one entry (check_results), and the same as without throttling
    calm_doc = check_results(store, app_env, calm_id, names)
    busy_doc = check_results(store, app_env, busy_id, names)
    assert same_detections(calm_doc["images"], busy_doc["images"]) == [], summary
    files = result_files(host, busy_id)
    assert files == result_files(host, calm_id) and "coco.json" in files["original"]["exports"], files

    # the worker's first image read failed in the SDK, and the shard's second attempt ran that image
    opened = next(k for k in proxy.throttling.opened if k.startswith(f"GET /{ACCOUNT}/{busy}/"))
    assert proxy.exhausted().get(opened) == SDK_TRIES, summary
    image = unquote(urlsplit(opened.split(" ", 1)[1]).path.split(f"/{busy}/", 1)[1])
    reran = [ShardManifest.from_dict(store.read_json(app_env["TRAPBATCH_CONTAINER"], name)).images
             for name in store.list_names(app_env["TRAPBATCH_CONTAINER"], f"tasks/{busy_id}/shards/")
             if name.endswith("/attempt-2.json")]
    assert any(image in images for images in reran), (image, reran, summary)
    # the throttling was real: the calm task was never refused, the throttled one in bursts, and the app's and the
    # workers' requests both went through the proxy and were both refused
    assert refused and not any(calm in s.path or calm_id in s.path for s in refused)
    assert all(busy in s.path or busy_id in s.path for s in refused)
    assert any(s.method == "PUT" and WORKER_WRITES.search(s.path) and not s.refusal for s in proxy.seen), summary
    assert any(not WORKER_WRITES.search(s.path) and f"/{busy}/" not in s.path for s in refused), summary
    # some SDK calls ran out of their own tries, and the orchestration called their activities again: the task's
    # history holds activities that failed on ServerBusy and then completed, one of them (the merge's sample read)
    # after more calls than a failure that is not busy gets
    busy_failures = Counter(name for name, reason in failed if "ServerBusy" in reason)
    assert {name for name in busy_failures if name in completed}, summary
    assert len(proxy.throttling.opened) == 2 and max(busy_failures.values()) >= STORAGE_RETRY.attempts, summary
