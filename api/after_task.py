"""The routes and answers about a finished task's hand-off that came after the task itself: re-rendering its previews
at another threshold, its preview expiry, its results zip (separate from ``api.starters`` to keep that module's size
in check; ``api.starters.get_results`` calls ``extend_results``).

    POST /api/tasks/{id}/previews   {"threshold": t}: page, counts and a CSV at t   202 {status_url}; 409 while one runs

``GET /api/tasks/{id}/results`` then also shows: ``results.thresholds`` (the CSVs at other thresholds, per variant),
``previews.rerender`` (the last re-render's state and threshold; the page shows the last threshold rendered),
``previews.expiry`` (when the pages come off the website, and whether they have), and, when the linked files together
exceed ``TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES``, ``zip``: ``ready`` with ``links.zip`` (read-only, like every link),
``building`` (the first GET above the size starts the build, ``orchestrations.results_zip``; GET again), or ``failed``
with the last build's ``error``: a failed build is not started again by every GET (each would fail alike, and the
answer would say "building" for ever), only by ``GET .../results?zip=rebuild`` or once its inputs changed (another
generation served, or a file written after the failed build started).

All of it is the served generation's (``adapters.generations``): once a re-run's results are served, a re-render
renders its page and writes its CSVs, and the zip holds its files.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Mapping

import azure.durable_functions as df
import azure.functions as func
from azure.core.exceptions import AzureError

from adapters import clients, share_links
from adapters.blobs import BlobStore
from adapters.generations import served_key
from adapters.preview_folders import existing_preview_folder
from adapters.results_bundle import drop_expired, linked_blobs, zip_is_current
from api import repeat_runs
from api.edge import http_edge, json_response, read_status, start_once
from api.starters import (ACTIVE, _base_url, _runtime, _task_input, authorize_task, finished_task, page_labels,
                          previews_gone)
from core import contracts as c
from core.errors import RequestInvalid, failure_message
from core.ids import expiry_instance_id, repeats_instance_id, rerender_instance_id, results_zip_instance_id
from core.requests import RERENDER_EXAMPLE, parse_json_body, parse_rerender
from core.settings import Settings
from core.zip_builds import named_zip
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()


async def _instance(client: df.DurableOrchestrationClient, instance_id: str, target: str = "",
                    task_id: str = "") -> dict[str, Any] | None:
    """An orchestration's runtime status and custom status, or None when there is no such instance. ``target``: the
    instance is that run after the task ``task_id`` (``api.repeat_runs``: "previews", "removal"), judged stalled as
    ``GET .../repeats`` judges a removal, with ``updated``; a terminated one's stage ``terminated``."""
    status = await read_status(client, instance_id)
    runtime = _runtime(status)
    if runtime is None:
        return None
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    out: dict[str, Any] = {"runtime_status": runtime, **custom}
    if runtime == "Failed":
        out["stage"], out["error"] = c.Stage.failed, failure_message(str(status.output or ""))
    if target:
        repeat_runs.add_liveness(out, target, task_id, status)
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
    threshold = parse_rerender(parse_json_body(req.get_body(), req.headers.get("content-type", ""),
                                           RERENDER_EXAMPLE, f"send only {RERENDER_EXAMPLE}"))
    status_url = f"{_base_url(req)}/api/tasks/{task_id}/results"
    s = clients.settings()
    key = await asyncio.to_thread(served_key, clients.store(s), s.container, task_id)  # a re-run's, once served
    for instance, what, target in ((rerender_instance_id(task_id), "a preview re-render", "previews"),
                                   (repeats_instance_id(task_id), "a repeated-detection removal", "removal")):
        running = await _instance(client, instance, target, task_id)
        if running is not None and running["runtime_status"] in ACTIVE:
            unshown = await repeat_runs.unshown_run(client, task_id, target, key)  # of results replaced since
            if unshown is not None:
                return json_response(409, {"error": unshown[0], "hint": unshown[1]})
            return _still_running(task_id, what, running, status_url)
    variants = await asyncio.to_thread(_rerender_variants, s, key)
    if variants is None:
        return json_response(409, {"error": f"task {task_id} has no preview pages to re-render",
                                   "hint": f"{previews_gone(task_id)}, or the task never reached its publishing "
                                           "stage; re-rendering would publish them again, so it is refused"})
    model, request_name = await page_labels(client, s, task_id, key)
    if not await start_once(client, c.RERENDER_ORCHESTRATOR, rerender_instance_id(task_id), c.RerenderInput(
            task_id=key, threshold=threshold, model=model, request_name=request_name, variants=variants,
            busy_retry_attempts=s.knobs.busy_retry_attempts, action_budget=s.knobs.action_budget)):
        running = await _instance(client, rerender_instance_id(task_id), "previews", task_id)  # a moment ago
        return _still_running(task_id, "a preview re-render", running or {}, status_url)
    logger.info("task %s: re-rendering previews at threshold %s", task_id, threshold)
    return json_response(202, {"id": task_id, "threshold": threshold, "status_url": status_url,
                               "csv": {v or "original": layout.threshold_csv_blob(key, threshold, v)
                                       for v in variants},
                               "hint": "the results are unchanged; the CSV at this threshold is written beside the "
                                       "task's own; GET the status_url: previews.rerender says when it is done"})


def _still_running(task_id: str, what: str, running: Mapping[str, Any], status_url: str) -> func.HttpResponse:
    """The 409 of a re-render refused by a re-render or a removal still running: wait for it, or, when it has stalled
    and may never end, its ``stalled`` hint (terminate it, then post again)."""
    stalled = running.get("stalled")
    if isinstance(stalled, Mapping):
        return json_response(409, {"error": f"{what} for task {task_id} is still running, but has not changed since "
                                            f"{stalled.get('since')}: stalled", "hint": str(stalled.get("hint"))})
    return json_response(409, {"error": f"{what} for task {task_id} is still running",
                               "hint": f"wait until it completed (GET {status_url}), then retry"})


def _rerender_variants(s: Settings, task_id: str) -> list[str] | None:
    """The results variants a re-render renders, or None when the task has no preview folder (deleted or never
    published). Blocking: ``post_previews`` runs it off the event loop (``api.edge`` module docstring)."""
    store = clients.store(s)
    if existing_preview_folder(store, s, task_id) is None:
        return None
    return [v for v in share_links.VARIANTS if store.exists(s.container, layout.results_blob(task_id, v))]


ZIP_REBUILD = "rebuild"  # GET .../results?zip=rebuild: build the zip again after a failed build


def wants_zip_rebuild(params: Mapping[str, str]) -> bool:
    """Whether ``GET .../results`` asks for the zip to be built again (``?zip=rebuild``). Any other value is refused
    (400) rather than ignored: a typo would otherwise answer the same failed build without saying why."""
    value = params.get("zip")
    if value is None:
        return False
    if value != ZIP_REBUILD:
        raise RequestInvalid(f"zip must be {ZIP_REBUILD!r}, got {value!r}",
                             f"GET .../results?zip={ZIP_REBUILD} builds the results zip again after a failed build; "
                             "leave zip out otherwise")
    return True


def _zip_state(store: BlobStore, s: Settings, task_id: str,
               now: datetime | None = None) -> tuple[dict[str, Any], bool, str]:
    """(what the answer says about the zip, whether a build is needed, the newest file's ``modified``: a failed build
    that started before it did not read these files, so it is tried again). ``ready`` only for the zip its manifest
    names (``core.zip_builds.named_zip``: its build's own name, which a terminated build's late commit never writes)
    and was written for (``zip_is_current``). The zips of earlier builds whose links have all ended by ``now``
    (default: this host's clock) are deleted (``results_bundle.drop_expired``)."""
    current = linked_blobs(store, s.container, task_id)
    total = sum(f["size"] for f in current.values())
    newest = max((str(f["modified"]) for f in current.values()), default="")
    base = {"files": len(current), "files_bytes": total, "above_bytes": s.results_zip_above_bytes}
    if total <= s.results_zip_above_bytes:
        return {**base, "state": "not_needed"}, False, newest
    manifest = store.read_json_or_none(s.container, layout.results_zip_manifest_blob(task_id))
    drop_expired(store, s.container, task_id, manifest, now or datetime.now(timezone.utc))  # none: no call
    name = named_zip(manifest, task_id)
    zip_etag = store.etag_or_none(s.container, name)  # one HEAD, as `exists` was
    if zip_is_current(manifest, current, zip_etag):
        return {**base, "state": "ready", "blob": name, "bytes": manifest["bytes"]}, False, newest
    return {**base, "state": "building", "hint": "one zip of these files is being written; GET this again in a "
                                                 "minute or so for its link"}, True, newest


def _failed_build_stands(status: Any, key: str, newest: str) -> bool:
    """Whether the zip instance ``status`` is a failed build of these very inputs: the same generation ``key``, and
    no file written after it started. Only then is its failure the answer; otherwise a build of the new inputs may
    well succeed, and the GET starts it as for a first build."""
    if _runtime(status) != "Failed" or _task_input(status).get("task_id", key) != key:
        return False
    created = getattr(status, "created_time", None)
    if not isinstance(created, datetime) or not newest:
        return True
    try:
        return datetime.fromisoformat(newest) <= created
    except (TypeError, ValueError):  # an offset-naive time or odd text: judge by the generation alone
        return True


def _building_liveness(state: dict[str, Any], task_id: str, status: Any) -> None:
    """Add to a zip ``state`` 'building' its build's ``updated`` and, once it has not changed for longer than its
    waits explain, ``stalled``, whose hint (terminate it with ``"target": "zip"``, then GET again) replaces "GET this
    again in a minute": a build the Durable extension left Running for ever answered 'building' for ever, and no other
    build starts while it runs (``?zip=rebuild`` neither)."""
    liveness: dict[str, Any] = {"runtime_status": _runtime(status)}
    repeat_runs.add_liveness(liveness, "zip", task_id, status)
    state.update({k: liveness[k] for k in ("updated", "stalled") if k in liveness})
    if isinstance(state.get("stalled"), dict):
        state["hint"] = state["stalled"]["hint"]


async def extend_results(client: df.DurableOrchestrationClient, s: Settings, store: BlobStore, task_id: str,
                         files: dict[str, dict[str, Any]], answer: dict[str, Any], generation: str = "",
                         rebuild: bool = False) -> None:
    """Add what came after the task to ``GET /api/tasks/{id}/results``'s ``answer`` (see the module doc), for the
    served ``generation``: its zip (one build at a time per task, of the generation served when it started; a zip of
    another generation is never current, so the next GET builds the served one's; a failed build of the same inputs is
    answered ``failed`` until ``rebuild`` asks again, ``_failed_build_stands``) and its last re-render (one at a
    time per task: a re-render of another generation is not this one's, ``null``); the task's preview expiry, which
    takes the served generation's pages off (``activities.expiry``)."""
    key = layout.generation_key(task_id, generation)
    answer["results"]["thresholds"] = {v: e.get("thresholds", {}) for v, e in files.items()}
    previews = answer.setdefault("previews", {})
    rerender = await _instance(client, rerender_instance_id(task_id), "previews", task_id)  # stalled, terminated
    previews["rerender"] = rerender if rerender is None or rerender.get("key", task_id) == key else None
    previews["expiry"] = await _instance(client, expiry_instance_id(task_id))  # the task's: it takes the served pages
    state, build, newest = await asyncio.to_thread(_zip_state, store, s, key)
    if build:
        status = await read_status(client, results_zip_instance_id(task_id), show_input=True)
        if _runtime(status) in ACTIVE:  # the answer says building; one that may never end says so (api.repeat_runs)
            _building_liveness(state, task_id, status)
        elif not rebuild and _failed_build_stands(status, key, newest):
            state = {k: v for k, v in state.items() if k != "hint"}
            state.update(state="failed", error=failure_message(str(status.output or "")), hint=(
                f"the last build of the zip failed; GET /api/tasks/{task_id}/results?zip={ZIP_REBUILD} builds it "
                "again (once the cause is fixed, e.g. no file being rewritten); every file's own link in "
                "links.files works without it"))
        elif await start_once(client, c.RESULTS_ZIP_ORCHESTRATOR, results_zip_instance_id(task_id),
                              c.ResultsZipInput(task_id=key, busy_retry_attempts=s.knobs.busy_retry_attempts,
                                                action_budget=s.knobs.action_budget)):
            # (else another GET started it a moment ago)
            logger.info("task %s: results zip build started (%d bytes of files%s)", task_id, state["files_bytes"],
                        ", asked again" if rebuild else "")
    answer["zip"] = state
    links = answer.get("links")
    if state["state"] == "ready" and isinstance(links, dict) and "files" in links:
        try:
            zipped = await asyncio.to_thread(share_links.read_links, store, s.container, [state["blob"]], s.link_days)
            links["zip"] = zipped.urls[state["blob"]]
        except AzureError as exc:  # the other links failed alike; get_results already said why
            links["zip_error"] = f"no link: {type(exc).__name__}"
