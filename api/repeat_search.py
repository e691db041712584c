"""``POST /api/tasks/{id}/repeats/search``: run the repeated-detection search again with other phase-1 options.

    POST /api/tasks/{id}/repeats/search   {"occurrence_threshold": 10, ...} (or {})   202 {id, search, options, ...}

Why its own module: the search is a second writer of the task's repeats list, beside the removal that reads it
(``api.starters.task_repeats``); the rules that keep them apart live here, and ``task_repeats`` calls them:

* one at a time: a search is refused (409) while a search or a removal of the task runs, and so is a removal while a
  search runs (``ensure_idle``);
* the new list replaces the current one (there is one list per task, the one the page shows). It carries a
  ``search`` id, and the location ids (``r00001`` ...) are assigned afresh by each search, so a removal names the
  ``search`` of the list it chose from and is refused (409) when the list has changed since (``current_list``). A
  removal that names none means the merge's own list (``core.repeats.ORIGINAL_SEARCH``), as before searches could be
  run again. Both checks read state and then start, so two requests at the same moment may both pass; the removal's
  merge parts check the list's id again before marking anything (``activities.fanin._removal``).

The search is of the served generation (``adapters.generations``: a re-run's results once promoted), as the removal
is; its status shows on ``GET .../repeats`` only while that generation is served.

Devhost and the Functions host route by whole path segments: ``tasks/{task_id}/repeats/search`` and
``tasks/{task_id}/repeats`` never match the same path.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import datetime, timezone
from typing import Any, Mapping

import azure.durable_functions as df
import azure.functions as func

from adapters import clients
from adapters.generations import served_key
from api import repeat_runs
from api.edge import http_edge, json_response, read_status, start_once
from core import contracts as c
from core.errors import RepeatListChanged, RepeatsBusy, failure_message
from core.ids import repeat_search_id, repeat_search_instance_id
from core.repeats import ORIGINAL_SEARCH, list_search_id
from core.repeats_status import current_repeats_ref
from core.stall import REPEAT_RUNS
from core.requests import (SEARCH_EXAMPLE, parse_json_body, parse_repeat_search, recorded_search_fields,
                           repeat_search_fields, requested_list)
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()

_ACTIVE = {"Running", "Pending", "ContinuedAsNew"}


async def search_status(client: df.DurableOrchestrationClient, task_id: str, key: str | None = None
                        ) -> dict[str, Any] | None:
    """The state of the task's latest search run again (its custom status), or None when none ever ran; with
    ``key`` (a generation, ``layout.generation_key``), None too when that search was of another generation. With
    ``updated`` and, while it runs, ``stalled`` (``api.repeat_runs``)."""
    status = await read_status(client, repeat_search_instance_id(task_id), show_input=True)
    runtime = status.runtime_status.value if getattr(status, "runtime_status", None) is not None else None
    if runtime is None:
        return None
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    raw = getattr(status, "input_", None)
    started = json.loads(raw) if isinstance(raw, str) else raw if isinstance(raw, dict) else {}
    if key is not None and started.get("task_id", task_id) != key:
        return None
    # before its first custom status (Pending) the search and options come from its input
    out: dict[str, Any] = {"runtime_status": runtime, "search": started.get("search", ""),
                           "options": started.get("options", {}), **custom}
    if runtime == "Failed":
        out["stage"], out["error"] = c.Stage.failed, failure_message(str(status.output or ""))
    repeat_runs.add_liveness(out, "search", task_id, status)  # updated; stalled while it runs; terminated
    return out


async def current_repeats(client: df.DurableOrchestrationClient, task_id: str, key: str,
                          merged_ref: Mapping[str, Any]) -> dict[str, Any]:
    """A finished task's ``repeated_detections`` for its current list (``core.repeats_status.current_repeats_ref``):
    the merge's block, which its status holds from the task's end, with the list a search run again over the served
    generation ``key`` wrote laid over it. Costs one more status read per call (the search's); the list document is
    read only while a later search has not written its own.

    Those reads are an addition to a status that answered without them: when one fails (a busy task hub or storage),
    the status answers with the merge's block, as it did before they were added, and a ``note`` that says so and where
    the current list is shown, rather than failing as a whole."""
    try:
        searching = await search_status(client, task_id, key)
        if searching is None:  # the merge's list is the current one: nothing to read
            ref = current_repeats_ref(task_id, merged_ref, None, lambda: None, layout.repeats_blob(key))
        else:
            s = clients.settings()
            ref = await asyncio.to_thread(
                current_repeats_ref, task_id, merged_ref, searching,
                lambda: clients.store(s).read_json_or_none(s.container, layout.repeats_blob(key)),
                layout.repeats_blob(key))
        return {**ref, **await _stalled_pointer(client, task_id, key, searching)}
    except Exception as exc:  # noqa: BLE001 - any failure of the added reads: the status still answers
        logger.warning("task %s: the current repeated-detection list could not be read for its status (%s: %s)",
                       task_id, type(exc).__name__, str(exc)[:200])
        return {**merged_ref, "note": f"the latest repeated-detection search could not be read just now "
                                      f"({type(exc).__name__}): the count is the one the task ended with; "
                                      f"trapbatch repeats {task_id} shows the current list"}


async def _stalled_pointer(client: df.DurableOrchestrationClient, task_id: str, key: str,
                           searching: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"stalled": {target, since, hint}}`` when the served generation's repeat removal or search has stalled
    (``api.repeat_runs``), else {}: the task's status points at it, since until it ends no other removal or search
    starts, and only GET .../repeats said so. Costs the removal's status read (the search's is the caller's); one
    that fails leaves the pointer out (the status answers as before it was added)."""
    from api.starters import _removal_status

    try:
        removal = await _removal_status(client, task_id, key)
    except Exception as exc:  # noqa: BLE001 - an addition to the status: it answers without it
        logger.warning("task %s: the repeat removal could not be read for the status (%s)", task_id,
                       type(exc).__name__)
        removal = None
    for target, run in (("removal", removal), ("search", searching)):
        note = run.get("stalled") if run is not None else None
        if isinstance(note, Mapping):
            return {"stalled": {"target": target, "since": note.get("since"), "hint": (
                f"the {REPEAT_RUNS[target]} of this task has not changed since {note.get('since')} and may never end; "
                f"until it does no other repeat removal or search starts: GET /api/tasks/{task_id}/repeats says what "
                f"to do (terminate it with POST /api/tasks/{task_id}/terminate {{\"target\": \"{target}\"}}, then "
                "start it again)")}}
    return {}


def ensure_idle(task_id: str, removal: Mapping[str, Any] | None, searching: Mapping[str, Any] | None) -> None:
    """``RepeatsBusy`` (409) while a search or a removal of the task runs. One judged stalled (``api.repeat_runs``)
    may never end by itself: the hint is then its ``stalled`` hint (look at the logs, terminate it, start again)
    rather than to wait for it."""
    if searching is not None and searching["runtime_status"] in _ACTIVE:
        raise RepeatsBusy(f"a repeated-detection search of task {task_id} is still running "
                          f"(search {searching.get('search', '?')})" + _stalled_words(searching),
                          _stalled_hint(searching) or
                          f"wait until GET /api/tasks/{task_id}/repeats shows 'searching' completed, then retry")
    if removal is not None and removal["runtime_status"] in _ACTIVE:
        raise RepeatsBusy(f"a repeated-detection removal for task {task_id} is still running"
                          + _stalled_words(removal), _stalled_hint(removal) or
                          f"wait until GET /api/tasks/{task_id}/repeats shows it completed, then retry")


def _stalled_words(run: Mapping[str, Any]) -> str:
    note = run.get("stalled")
    return f", but has not changed since {note.get('since')}: stalled" if isinstance(note, Mapping) else ""


def _stalled_hint(run: Mapping[str, Any]) -> str:
    note = run.get("stalled")
    return str(note.get("hint") or "") if isinstance(note, Mapping) else ""


def current_list(body: Any, found: Mapping[str, Any], task_id: str) -> str:
    """The search id of the list a removal chose from, which must be the task's current list: ``RepeatListChanged``
    (409) otherwise. A removal naming no ``search`` chose from the merge's own list."""
    named = requested_list(body) or ORIGINAL_SEARCH
    current = list_search_id(found)
    if named != current:
        raise RepeatListChanged(
            f"the repeated-detection list of task {task_id} is now search {current!r}; the location ids given are "
            f"those of {named!r}" + (" (the merge's list)" if named == ORIGINAL_SEARCH else ""),
            f"GET /api/tasks/{task_id}/repeats, choose from its list and send its 'search' ({current!r}) with the "
            "choice")
    return current


def list_fields(found: Mapping[str, Any]) -> dict[str, Any]:
    """What GET .../repeats adds about the list: its id (to send back with a removal), when it was made, its
    options in the names POST .../repeats/search takes, and the folders it did not search (``skipped_folders``:
    each held more than ``max_folder_detections`` eligible detections; None when none was skipped), so an empty
    list is not read as a clean one."""
    return {"search": list_search_id(found), "searched": found.get("searched") or None,
            "search_options": recorded_search_fields(found.get("options") or {}),
            "skipped_folders": found.get("skipped_folders")}


@bp.route(route="tasks/{task_id}/repeats/search", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def post_repeat_search(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a search of the finished task's results with the options in the body; the new list replaces the
    current one and the preview page is rendered again."""
    from api.starters import _base_url, _removal_status, authorize_task, finished_task, page_labels

    task_id = req.route_params["task_id"]
    await authorize_task(req, client, task_id)
    await finished_task(client, task_id, "results to search")
    s = clients.settings()
    key = await asyncio.to_thread(served_key, clients.store(s), s.container, task_id)  # a re-run's, once served
    raw = req.get_body() or b""
    body = parse_json_body(raw, req.headers.get("content-type", ""), SEARCH_EXAMPLE,
                           f"send only the search options, e.g. {SEARCH_EXAMPLE}") if raw.strip() else {}
    options = parse_repeat_search(body, s.knobs.repeat_max_folder_detections)  # the folder cap left out: the app's
    # one search at a time per task, whichever generation it searched (they share the instance id): the served
    # generation's as GET .../repeats shows it, another's said so (refuse_unshown_run)
    ensure_idle(task_id, await _removal_status(client, task_id, key), await search_status(client, task_id, key))
    await repeat_runs.refuse_unshown_run(client, task_id, "search", key)
    search = repeat_search_id(datetime.now(timezone.utc), secrets.token_hex(3))
    model, request_name = await page_labels(client, s, task_id, key)
    if not await start_once(client, c.REPEAT_SEARCH_ORCHESTRATOR, repeat_search_instance_id(task_id),
                            c.RepeatSearchInput(task_id=key, model=model, request_name=request_name, search=search,
                                                options=options.to_dict(), knobs=s.knobs.to_dict())):
        await repeat_runs.refuse_unshown_run(client, task_id, "search", key)  # started a moment ago, or another's
        return json_response(409, {"error": f"a repeated-detection search for task {task_id} is still running",
                                   "hint": f"wait until it completed (GET {_base_url(req)}/api/tasks/{task_id}/"
                                           "repeats: 'searching'), then retry"})
    logger.info("task %s: repeated-detection search %s started with %s", task_id, search, options.to_dict())
    return json_response(202, {
        "id": task_id, "search": search, "options": repeat_search_fields(options),
        "status_url": f"{_base_url(req)}/api/tasks/{task_id}/repeats",
        "hint": "the new list replaces the current one when 'searching' in the status_url completes; removals "
                "must then name this list ('search')"})

