"""The routes and answers about a finished task's hand-off that came after the task itself: re-rendering its previews
at another threshold, its preview expiry, its results zip (separate from ``api.starters`` to keep that module's size
in check; ``api.starters.get_results`` calls ``extend_results``).

    POST /api/tasks/{id}/previews   {"threshold": t}: page, counts and a CSV at t   202 {status_url}; 409 while one runs

``GET /api/tasks/{id}/results`` then also shows: ``results.thresholds`` (the CSVs at other thresholds, per variant),
``previews.rerender`` (the last re-render's state and threshold; the page shows the last threshold rendered),
``previews.expiry`` (when the pages come off the website, and whether they have), and, when the linked files together
exceed ``TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES``, ``zip``: ``ready`` with ``links.zip`` (read-only, like every link), or
``building`` (the first GET above the size starts the build, ``orchestrations.results_zip``; GET again).

All of it is the served generation's (``adapters.generations``): once a re-run's results are served, a re-render
renders its page and writes its CSVs, and the zip holds its files.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.core.exceptions import AzureError

from adapters import clients, share_links
from adapters.blobs import BlobStore
from adapters.generations import served_key
from adapters.preview_folders import existing_preview_folder
from adapters.results_bundle import linked_blobs, zip_is_current
from api.edge import http_edge, json_response, start_once
from api.starters import ACTIVE, _base_url, _runtime, authorize_task, finished_task, page_labels
from core import contracts as c
from core.errors import failure_message
from core.ids import expiry_instance_id, repeats_instance_id, rerender_instance_id, results_zip_instance_id
from core.requests import parse_json_body, parse_rerender
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()


async def _instance(client: df.DurableOrchestrationClient, instance_id: str) -> dict[str, Any] | None:
    """An orchestration's runtime status and custom status, or None when there is no such instance."""
    status = await client.get_status(instance_id)
    runtime = _runtime(status)
    if runtime is None:
        return None
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    out: dict[str, Any] = {"runtime_status": runtime, **custom}
    if runtime == "Failed":
        out["stage"], out["error"] = c.Stage.failed, failure_message(str(status.output or ""))
    return out


@bp.route(route="tasks/{task_id}/previews", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def post_previews(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Re-render the task's preview pages (each results variant), their counts and a CSV at another threshold; the
    results files are only read."""
    task_id = req.route_params["task_id"]
    await authorize_task(req, client, task_id)
    await finished_task(client, task_id, "previews")
    threshold = parse_rerender(parse_json_body(req.get_body(), req.headers.get("content-type", "")))
    status_url = f"{_base_url(req)}/api/tasks/{task_id}/results"
    for instance, what in ((rerender_instance_id(task_id), "a preview re-render"),
                           (repeats_instance_id(task_id), "a repeated-detection removal")):
        running = await _instance(client, instance)
        if running is not None and running["runtime_status"] in ACTIVE:
            return json_response(409, {"error": f"{what} for task {task_id} is still running",
                                       "hint": f"wait until it completed (GET {status_url}), then retry"})
    s = clients.settings()
    key = await asyncio.to_thread(served_key, clients.store(s), s.container, task_id)  # a re-run's, once served
    variants = await asyncio.to_thread(_rerender_variants, s, key)
    if variants is None:
        return json_response(409, {"error": f"task {task_id} has no preview pages to re-render",
                                   "hint": "they were deleted (DELETE .../previews or previews_expire_days), or the "
                                           "task never reached its publishing stage; re-rendering would publish "
                                           "them again, so it is refused"})
    model, request_name = await page_labels(client, s, task_id, key)
    if not await start_once(client, c.RERENDER_ORCHESTRATOR, rerender_instance_id(task_id), c.RerenderInput(
            task_id=key, threshold=threshold, model=model, request_name=request_name, variants=variants)):
        return json_response(409, {"error": f"a preview re-render for task {task_id} is still running",
                                   "hint": f"wait until it completed (GET {status_url}), then retry"})
    logger.info("task %s: re-rendering previews at threshold %s", task_id, threshold)
    return json_response(202, {"id": task_id, "threshold": threshold, "status_url": status_url,
                               "csv": {v or "original": layout.threshold_csv_blob(key, threshold, v)
                                       for v in variants},
                               "hint": "the results are unchanged; the CSV at this threshold is written beside the "
                                       "task's own; GET the status_url: previews.rerender says when it is done"})


def _rerender_variants(s: Settings, task_id: str) -> list[str] | None:
    """The results variants a re-render renders, or None when the task has no preview folder (deleted or never
    published). Blocking: ``post_previews`` runs it off the event loop (``api.edge`` module docstring)."""
    store = clients.store(s)
    if existing_preview_folder(store, s, task_id) is None:
        return None
    return [v for v in share_links.VARIANTS if store.exists(s.container, layout.results_blob(task_id, v))]


def _zip_state(store: BlobStore, s: Settings, task_id: str) -> tuple[dict[str, Any], bool]:
    """(what the answer says about the zip, whether a build must start)."""
    current = linked_blobs(store, s.container, task_id)
    total = sum(f["size"] for f in current.values())
    base = {"files": len(current), "files_bytes": total, "above_bytes": s.results_zip_above_bytes}
    if total <= s.results_zip_above_bytes:
        return {**base, "state": "not_needed"}, False
    manifest = store.read_json_or_none(s.container, layout.results_zip_manifest_blob(task_id))
    if zip_is_current(manifest, current) and store.exists(s.container, layout.results_zip_blob(task_id)):
        return {**base, "state": "ready", "blob": layout.results_zip_blob(task_id), "bytes": manifest["bytes"]}, False
    return {**base, "state": "building", "hint": "one zip of these files is being written; GET this again in a "
                                                 "minute or so for its link"}, True


async def extend_results(client: df.DurableOrchestrationClient, s: Settings, store: BlobStore, task_id: str,
                         files: dict[str, dict[str, Any]], answer: dict[str, Any], generation: str = "") -> None:
    """Add what came after the task to ``GET /api/tasks/{id}/results``'s ``answer`` (see the module doc), for the
    served ``generation``: its zip (one build at a time per task, of the generation served when it started; a zip of
    another generation is never current, so the next GET builds the served one's) and its last re-render (one at a
    time per task: a re-render of another generation is not this one's, ``null``); the task's preview expiry, which
    takes the served generation's pages off (``activities.expiry``)."""
    key = layout.generation_key(task_id, generation)
    answer["results"]["thresholds"] = {v: e.get("thresholds", {}) for v, e in files.items()}
    previews = answer.setdefault("previews", {})
    rerender = await _instance(client, rerender_instance_id(task_id))
    previews["rerender"] = rerender if rerender is None or rerender.get("key", task_id) == key else None
    previews["expiry"] = await _instance(client, expiry_instance_id(task_id))  # the task's: it takes the served pages
    state, build = await asyncio.to_thread(_zip_state, store, s, key)
    if build:
        running = await _instance(client, results_zip_instance_id(task_id))
        if running is None or running["runtime_status"] not in ACTIVE:
            if await start_once(client, c.RESULTS_ZIP_ORCHESTRATOR, results_zip_instance_id(task_id),
                                c.ResultsZipInput(task_id=key)):  # else another GET started it a moment ago
                logger.info("task %s: results zip build started (%d bytes of files)", task_id, state["files_bytes"])
        elif running.get("stage") == c.Stage.failed:
            state["error"] = running.get("error", "")
    answer["zip"] = state
    links = answer.get("links")
    if state["state"] == "ready" and isinstance(links, dict) and "files" in links:
        try:
            zipped = await asyncio.to_thread(share_links.read_links, store, s.container, [state["blob"]], s.link_days)
            links["zip"] = zipped.urls[state["blob"]]
        except AzureError as exc:  # the other links failed alike; get_results already said why
            links["zip_error"] = f"no link: {type(exc).__name__}"
