"""Write a results variant's README (``layout.readme_blob``) from what its results folder holds now.

Why here, and called by the previews activity (``activities.previews.render_previews``): that activity is the last
step of every flow that changes a variant's files: the task's run (after the merge and the exports: the final list of
files), a re-render (after its CSV at another threshold), a repeat removal (after the variant's results and exports)
and a repeat search (after the new list). Writing the README there keeps it true after each of them, and adds no
activity to any orchestration, so histories recorded before it replay unchanged. A removal's first step deletes the
variant's README with its other stale files (``activities.fanin.run_prepare_removal``).

What it lists is exactly what ``adapters.share_links.result_files`` finds for the variant, the set the results answer
links, ``trapbatch results`` downloads and the results zip holds, plus the README itself; the facts come from small
blobs (the request, the preview sample the merge wrote with the results' ``info``, the decided settings, damaged.csv),
never from the results file, whatever its size.

Must not: write anything but the README; put a secret, a SAS or the credential secret's name in it.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from datetime import datetime, timezone

from azure.core.exceptions import AzureError

from activities.decided import task_settings
from activities.merge import task_threshold
from adapters import share_links
from adapters.blobs import BlobStore
from adapters.preview_folders import existing_preview_folder, withdrawn
from adapters.storage_errors import storage_error
from core import notimages
from core.errors import StorageUnavailable, TrapbatchError
from core.readme import ReadmeFacts, readme_name, readme_text
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)

_RUNS = "/runs/"  # layout.generation_key: a re-run's files are under <task>/runs/<run>


def _damaged_count(store: BlobStore, container: str, key: str) -> int:
    data = store.read_bytes_or_none(container, layout.damaged_blob(key))
    if not data:
        return 0
    rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    next(rows, None)  # the header, "file"
    return sum(1 for row in rows if row and row[0])


def readme_facts(store: BlobStore, settings: Settings, key: str, variant: str,
                 now: datetime | None = None) -> ReadmeFacts | None:
    """The facts of generation ``key``'s ``variant``, or None when it has no preview sample (no merge wrote it)."""
    container = settings.container
    doc = store.read_json_or_none(container, layout.preview_sample_blob(key, variant))
    if not isinstance(doc, dict):
        return None
    request = store.read_json_or_none(container, layout.request_blob(key)) or {}
    info = doc.get("info") or {}
    own = info.get("trapbatch") or {}
    model = str(request.get("model") or info.get("detector") or "")
    threshold = task_threshold(store, task_settings(settings, store, key), key, model)
    page = doc.get("threshold")
    removed = own.get("repeated_detections_removed")
    listed = own.get("image_list")
    task_id, _, generation = key.partition(_RUNS)
    return ReadmeFacts(
        task_id=task_id, generation=generation, variant=variant,
        request_name=str(request.get("request_name") or ""),
        container=str(own.get("container") or request.get("container") or ""),
        prefix=str(own.get("prefix") or request.get("prefix") or ""),
        account_url=str(request.get("source_account_url") or ""),  # an endpoint; the secret's name stays out
        image_list=str(listed.get("blob") or "") if isinstance(listed, dict) else "",
        model=model, detector=str(info.get("detector") or ""), threshold=float(threshold),
        page_threshold=float(page) if isinstance(page, (int, float)) and float(page) != float(threshold) else None,
        images=int(doc.get("images") or 0), failed=int((doc.get("totals") or {}).get("failures") or 0),
        damaged=_damaged_count(store, container, key), detected=str(info.get("detection_completion_time") or ""),
        removed_places=len(removed.get("locations") or []) if isinstance(removed, dict) else None,
        not_images=notimages.describe(own["not_images"]) if isinstance(own.get("not_images"), dict) else "",
        published=not withdrawn(store, settings, key) and existing_preview_folder(store, settings, key) is not None,
        written=(now or datetime.now(timezone.utc)).replace(microsecond=0).isoformat())


def write_readme(store: BlobStore, settings: Settings, key: str, variant: str = "",
                 now: datetime | None = None) -> str | None:
    """Write the README of generation ``key``'s ``variant`` listing the files it has now; its blob name, or None
    when the variant has no results (nothing to describe)."""
    found = share_links.result_files(store, settings.container, key).get(variant or "original")
    facts = readme_facts(store, settings, key, variant, now)
    if found is None or facts is None:
        return None
    name = layout.readme_blob(key, variant)
    prefix = layout.results_prefix(key)
    names = dict.fromkeys([*share_links.all_names({"variant": found}), name])
    files = [n[len(prefix):] for n in names if n.startswith(prefix)]
    text = readme_text(facts, files)
    store.write_bytes(settings.container, name, text.encode("utf-8"), "text/plain; charset=utf-8")
    logger.info("task %s: %s written (%d files listed)", key, name, len(files))
    return name


def drop_readme(store: BlobStore, settings: Settings, key: str, variant: str) -> bool:
    """Delete a variant's README (its files are about to be replaced); whether there was one."""
    return store.delete_if_exists(settings.container, layout.readme_blob(key, variant))


def publish_readme(store: BlobStore, settings: Settings, key: str, variant: str = "") -> str:
    """``write_readme``, best effort: "" when it went as it should, else why no README was written (logged, and said
    in the previews step's output, ``readme_error``, so the task's status says it rather than a log line alone).

    Why: the previews activity that calls it is the last step of a task whose results, exports and pages are all
    written, and of a re-render, a repeat search and a removal. A README that cannot be written (storage refusing the
    write, a fact it cannot read) failing that step made the activity's retries render every page again, and then
    failed the task at publishing, or the re-render, over a help text; the results stand without it. A README left
    from before stays (a removal's first step deleted the variant's stale one); the next previews step writes it
    again.

    A busy or unavailable storage account (503 ServerBusy, 500 OperationTimedOut, a timeout: ``StorageUnavailable``)
    is tried again, ``README_BUSY_WAITS_S`` apart: past what a partition can take, Azure Storage answers 503 Server
    Busy or 500 Operation Timeout and clients are to back off and retry (azure-docs
    ``storage/common/scalability-targets-standard-account.md``; devhost README row 23). The SDK's own four tries last
    a few seconds, and a busy spell longer than that left the task's results without their README while every other
    step, retried by the orchestrator, came through (the storage throttling test, in CI)."""
    for wait_s in (*README_BUSY_WAITS_S, None):
        try:
            write_readme(store, settings, key, variant)
            return ""
        except Exception as exc:  # noqa: BLE001 - a help text: the step's real work is done, and stands
            if wait_s is None or not _busy(exc):
                return _not_written(key, variant, exc)
            logger.info("task %s: storage busy writing the README of %r; trying again in %.0f s", key,
                        variant or "original", wait_s)
            time.sleep(wait_s)
    return ""  # not reached: the last pass returns


# Pauses before the README's write is tried again while storage answers busy (``publish_readme``): ~30 s in all,
# within the previews activity's time, each try itself the SDK's four
README_BUSY_WAITS_S = (5.0, 10.0, 15.0)


def _busy(exc: BaseException) -> bool:
    """Whether ``exc`` is storage saying it is busy or unavailable for now (worth a later try)."""
    if not isinstance(exc, (AzureError, TrapbatchError)):
        return False
    try:
        return isinstance(storage_error(exc), StorageUnavailable)
    except TypeError:  # an AzureError that is not a storage SDK one
        return False


def _not_written(key: str, variant: str, exc: BaseException) -> str:
    """Why the README of ``variant`` was not written, logged and said in the previews step's output."""
    # a storage error in the storage map's words (never the request URL, which may carry a SAS), else its type
    said = (storage_error(exc).message if isinstance(exc, (AzureError, TrapbatchError))
            else type(exc).__name__)
    logger.warning("task %s: the README of results variant %r could not be written (%s); the results are "
                   "complete without it", key, variant or "original", said)
    return (f"{readme_name(variant)} not written ({said[:300]}); the results are complete without it, and the "
            f"next re-render (POST /api/tasks/{key.partition(_RUNS)[0]}/previews) writes it again")
