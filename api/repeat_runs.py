"""The runs after a task: the repeat removal and the repeat search run again, which ``GET /api/tasks/{id}/repeats``
shows, and the preview re-render and the results zip build, which ``GET /api/tasks/{id}/results`` shows
(``previews.rerender``, ``zip``): whether one has stalled, and ending one through ``POST /api/tasks/{id}/terminate
{"target": ...}`` (``core.stall.AFTER_TASK_RUNS``).

Why: all are orchestrations (``orchestrations.repeats``, ``.repeat_search``, ``.rerender``, ``.results_zip``), so an
action the Durable extension drops leaves one Running for ever, failing nothing, exactly as a task (``core.stall``);
and each holds its one instance id per task while it runs: no other removal or search of the task may start
(``api.repeat_search.ensure_idle``), no other re-render (``api.after_task.post_previews``), and the zip stays
"building" for good, with no way out but the Durable management API's system key. Their statuses carry ``updated``
and ``stalled`` (``add_liveness``) and the task's terminate route ends them (``terminate_repeat_run``), with the same
auth, owner and reason rules as a task's terminate (``api.starters.terminate_task`` checks those, then calls here).
The platform's terminate semantics are the task's: ``terminate_task``'s docstring cites them.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable

import azure.durable_functions as df
import azure.functions as func

from adapters import clients
from adapters.generations import served_key
from adapters.task_hub import read_status
from api.edge import ACTIVE_RUNTIMES, json_response
from core.contracts import Stage
from core.errors import RepeatsBusy, TaskHubUnavailable, without_secrets
from core.ids import repeat_search_instance_id, repeats_instance_id, rerender_instance_id, results_zip_instance_id
from core.stall import AFTER_TASK_RUNS, REPEAT_RUNS, after_task_route, repeat_stalled

logger = logging.getLogger(__name__)

# ``target`` of the terminate route -> the run's instance id (one per task: a new run replaces the last)
INSTANCE_IDS: dict[str, Callable[[str], str]] = {"removal": repeats_instance_id, "search": repeat_search_instance_id,
                                                 "previews": rerender_instance_id, "zip": results_zip_instance_id}


def updated_time(status: Any) -> datetime | None:
    """An instance's ``lastUpdatedTime``, timezone-aware (UTC), or None (as ``api.starters._updated_time``: the
    extension answers it as ``...Z``; a naive one is taken as UTC)."""
    when = getattr(status, "last_updated_time", None)
    if not isinstance(when, datetime):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def add_liveness(out: dict[str, Any], target: str, task_id: str, status: Any, shown: bool = True) -> None:
    """Add to a repeat run's answer (``out``, with its ``runtime_status``) ``updated``, its orchestration's
    ``lastUpdatedTime`` (which the platform writes at each episode: ``core.stall``), and, while it runs, ``stalled``
    once that is longer ago than its waits explain (``core.stall.repeat_stalled``). A terminated one says so in its
    ``stage``: its custom status still names the stage it was in (``merging``), which read as still under way."""
    if out.get("runtime_status") == "Terminated":
        out["stage"] = Stage.terminated
    updated = updated_time(status)
    if updated is None:
        return
    out["updated"] = updated.isoformat()
    if out.get("runtime_status") in ACTIVE_RUNTIMES:
        note = repeat_stalled(target, task_id, datetime.now(timezone.utc), updated, shown)
        if note is not None:
            out["stalled"] = note


async def refuse_unshown_run(client: df.DurableOrchestrationClient, task_id: str, target: str, key: str) -> None:
    """``RepeatsBusy`` (409) while the task's removal or search (``target``) runs for results other than the served
    generation ``key`` (``unshown_run``)."""
    found = await unshown_run(client, task_id, target, key)
    if found is not None:
        raise RepeatsBusy(*found)


async def unshown_run(client: df.DurableOrchestrationClient, task_id: str, target: str,
                      key: str) -> tuple[str, str] | None:
    """(error, hint) of a 409 while the task's run ``target`` (removal, search, previews) runs for results other than
    the served generation ``key``: one started before a re-run's results were served; None when none such runs.
    GET .../repeats and GET .../results show the served generation's runs only (``api.starters._removal_status``,
    ``api.repeat_search.search_status``, ``api.after_task.extend_results``), so ``ensure_idle`` passes it, yet it
    holds the one instance id a new run starts under, and the start was refused with "wait until it completed (GET
    ...)", which never showed it, also when it had stalled and would never end. The hint says how to end it
    (``terminate_repeat_run`` takes any generation's)."""
    what = AFTER_TASK_RUNS[target]
    status = await read_status(client, INSTANCE_IDS[target](task_id), show_input=True)
    runtime = getattr(getattr(status, "runtime_status", None), "value", None)
    if runtime not in ACTIVE_RUNTIMES or _started_key(status, task_id) == key:
        return None
    out: dict[str, Any] = {"runtime_status": runtime}
    add_liveness(out, target, task_id, status, shown=False)
    stalled = out.get("stalled")
    terminate = f"POST /api/tasks/{task_id}/terminate {{\"target\": \"{target}\"}}"
    return (f"a {what} of task {task_id} is still running, of results a re-run has replaced since "
            f"({after_task_route(target, task_id)} shows the served results' only)"
            + (f", and has not changed since {stalled['since']}: stalled" if stalled else ""),
            stalled["hint"] if stalled else
            f"it holds the task's one {what} until it ends: wait a while, or, if you no longer need it, terminate it "
            f"({terminate}) and send yours again (refused 409 still until the platform has processed the terminate, "
            "a moment later)")


def _started_key(status: Any, task_id: str) -> str:
    """The generation key a repeat run was started for (its input's ``task_id``; the task's own when it has none)."""
    raw = getattr(status, "input_", None)
    started = json.loads(raw) if isinstance(raw, str) else raw if isinstance(raw, dict) else {}
    return str(started.get("task_id", task_id)) if isinstance(started, dict) else task_id


async def _state(client: df.DurableOrchestrationClient, instance_id: str,
                 task_id: str = "") -> tuple[str | None, str, Any, str]:
    """(runtime status or None when there is no such instance, the stage its custom status names or "", its
    ``createdTime``: which run holds the id, and the generation key it was started for: ``_started_key``)."""
    status = await read_status(client, instance_id, show_input=True)
    runtime = getattr(getattr(status, "runtime_status", None), "value", None)
    custom = status.custom_status if isinstance(getattr(status, "custom_status", None), dict) else {}
    return (runtime, str(custom.get("stage") or ""), getattr(status, "created_time", None),
            _started_key(status, task_id))


async def _served_key(task_id: str) -> str | None:
    """The served generation's key (``adapters.generations.served_key``, what GET .../repeats and .../results show
    the runs of), or None when it cannot be read: the terminate is made by then, and its 202 stands without it."""
    try:
        s = clients.settings()
        return await asyncio.to_thread(served_key, clients.store(s), s.container, task_id)
    except Exception as exc:  # noqa: BLE001 - said in the hint as not known; the terminate itself was made
        logger.warning("task %s: the served results could not be read after a terminate: %s", task_id,
                       without_secrets(str(exc)))
        return None


async def terminate_repeat_run(client: df.DurableOrchestrationClient, task_id: str, target: str, reason: str,
                               base_url: str) -> func.HttpResponse:
    """End the task's running run after it (``target``: removal, search, previews, zip) now, as
    ``api.starters.terminate_task`` ends a task's run: the SDK's ``terminate`` (the extension queues it; the instance
    reads Terminated once processed), the status read again after it, since the SDK takes the extension's 410 Gone
    for a run that ended meanwhile as success. 409 when none runs; 503 when the task hub failed the terminate with
    the run still running. The terminate names the instance id alone (ext ``HttpApiHandler.
    HandleTerminateInstanceRequestAsync`` reads the id's status, then ``TerminateAsync(instanceId, reason)``: no
    execution id), so a run that ended after the read and another started under the id in between is the one ended:
    the read after it compares ``createdTime`` and answers 409 naming the new one (``_replaced_meanwhile``)."""
    what = AFTER_TASK_RUNS[target]
    instance = INSTANCE_IDS[target](task_id)
    route = after_task_route(target, task_id)
    status_url = base_url + route.removeprefix("GET ")
    runtime, stage, created, key = await _state(client, instance, task_id)
    if runtime not in ACTIVE_RUNTIMES:
        ended = "none ever ran" if runtime is None else f"the last one is {runtime}"
        return json_response(409, {"error": f"no {what} of task {task_id} is running ({ended})",
                                   "hint": f"nothing was terminated; {route} shows the {what}'s state; a task's own "
                                           "run is terminated without \"target\""})
    try:
        await client.terminate(instance, reason)
    except Exception as exc:  # the SDK raises a bare Exception for 404 and any unexpected answer
        after, _, _, _ = await _state(client, instance, task_id)
        if after in ACTIVE_RUNTIMES:  # the extension's catch-all 500 (its storage failing), or no answer
            raise TaskHubUnavailable(f"the terminate of the {what} of task {task_id} was not accepted by the task "
                                     f"hub ({without_secrets(str(exc))})", "retry in a minute: the task hub's storage "
                                     "is busy or failing; a terminate sent twice ends it once") from exc
        return _ended_meanwhile(task_id, target, after)
    try:
        after, _, after_created, _ = await _state(client, instance, task_id)
    except TaskHubUnavailable:  # the terminate was queued: a 503 "retry" would have it sent again and answered 409
        after, after_created = runtime, created
    if after is not None and after_created != created:  # another run holds the id: the terminate named the id
        return _replaced_meanwhile(task_id, target, after_created)
    if after not in ACTIVE_RUNTIMES and after != "Terminated":
        return _ended_meanwhile(task_id, target, after)  # the extension's 410, which the SDK does not raise
    logger.info("task %s: %s terminated through the API (stage %s)", task_id, what, stage or "?")
    shown: bool | None = True  # the zip build's route shows whichever build holds its id
    if target != "zip":  # a run of results a re-run has replaced since is not shown (``unshown_run``)
        served = await _served_key(task_id)
        shown = None if served is None else served == key
    return json_response(202, {"id": task_id, "terminated": True, "target": target, "stage": stage or Stage.starting,
                               "status_url": status_url, "hint": terminated_hint(task_id, target, stage, shown)})


def _replaced_meanwhile(task_id: str, target: str, created: Any) -> func.HttpResponse:
    """The 409 for a terminate made as the run read ended and another run took the instance id (``created``: its
    ``createdTime``). Why not the 202: the terminate names the instance, not the run ("Terminate events are not
    supposed to target any particular execution ID", the extension's ``DurableClient.TerminateAsync``; 410 while
    none runs), so it ended the new run if that had started by then, else nothing, and the 202's words were the run
    read's. As the task's own (``api.starters._replaced_meanwhile``)."""
    what = AFTER_TASK_RUNS[target]
    when = created.isoformat() if isinstance(created, datetime) else str(created)
    route = after_task_route(target, task_id)
    logger.info("task %s: terminate of the %s made as another (created %s) replaced it", task_id, what, when)
    return json_response(409, {
        "error": f"the {what} of task {task_id} this terminate was for ended by itself, and another {what} (created "
                 f"{when}) took its place while the terminate was made; a terminate ends the one running when the "
                 "platform takes it: that one if it had started by then, else none",
        "hint": f"{route} shows it: if it still runs and is to end, POST /api/tasks/{task_id}/terminate "
                f"{{\"target\": \"{target}\"}} again; if it was terminated and was wanted, start it again"})


def _ended_meanwhile(task_id: str, target: str, runtime: str | None) -> func.HttpResponse:
    what = AFTER_TASK_RUNS[target]
    logger.info("task %s: %s not terminated: it ended meanwhile (%s)", task_id, what, runtime)
    return json_response(409, {"error": f"the {what} of task {task_id} ended by itself before the terminate "
                                        f"({runtime})",
                               "hint": f"nothing was terminated; {after_task_route(target, task_id)} shows how it "
                                       "ended"})


def terminated_hint(task_id: str, target: str, stage: str, shown: bool | None = True) -> str:
    """The 202's next steps. A terminate stops the orchestration only: an activity already running runs to its end
    (README, the terminate row), so what a step under way writes may still be written. A re-render's page and CSVs are
    written over by the next at the same threshold; a zip build's parts are never handed out (``links.zip`` only for
    a zip whose manifest matches the current files and names that very zip blob by its ETag, so never one the
    terminated build committed late: ``adapters.results_bundle.zip_is_current``).

    ``shown``: whether the run was of the served results, whose runs alone GET .../repeats and .../results show
    (``unshown_run``); False: of results a re-run has replaced since, never seen 'terminated' there, and what it
    wrote is of those results alone, so nothing of the served ones is to be done again; None: not known (the served
    results could not be read), said so."""
    if target == "zip":
        return (f"the build stops once the platform has processed the terminate (a moment later; until then GET "
                f"/api/tasks/{task_id}/results still says 'building'); a step already under way runs to its end, and "
                "no zip is handed out (links.zip) until a build of the current files has ended: GET "
                f"/api/tasks/{task_id}/results again, which starts a new build")
    route = after_task_route(target, task_id)
    if shown is False:
        start = {"removal": f"POST /api/tasks/{task_id}/repeats", "search": f"POST /api/tasks/{task_id}/repeats/search",
                 "previews": f"POST /api/tasks/{task_id}/previews"}[target]
        return (f"it was of results a re-run has replaced since, which {route} does not show (it shows the served "
                f"results' only), so it is never seen 'terminated' there: it ends once the platform has processed the "
                f"terminate, a moment later (a new {AFTER_TASK_RUNS[target]} is refused 409 until then); a step "
                "already under way runs to its end, nothing after it runs. What it wrote is of those replaced results "
                f"alone: the served results are unchanged, and a {AFTER_TASK_RUNS[target]} of them starts as usual "
                f"({start})")
    unsure = "" if shown else ", unless it was of results a re-run has replaced since, which it does not show"
    then = (f"it shows 'terminated' once the platform has processed the terminate ({route} shows it{unsure}); a step "
            "already under way runs to its end, nothing after it runs; ")
    if target == "previews":
        return then + ("the results are unchanged; the page and the CSV at its threshold may be part-written: post "
                       f"the re-render again (POST /api/tasks/{task_id}/previews with the same threshold), which "
                       "writes them again, or another threshold")
    if target == "removal":
        done = ("its repeats-removed results and their exports were written, the page of them may not be"
                if stage == Stage.publishing else "its repeats-removed results are not complete")
        return then + (f"{done}: send the same choice again (POST /api/tasks/{task_id}/repeats with the same \"keep\" "
                       "or \"remove\" and \"search\"), which writes them again, or choose again")
    if stage == Stage.publishing:
        return then + (f"its new list had replaced the one before (GET /api/tasks/{task_id}/repeats shows it), the "
                       "preview page may still show the list before it; a search run again renders the page")
    return then + ("the list stays the one before it unless its last step (ranking the places) was under way, which "
                   f"still writes the new one (GET /api/tasks/{task_id}/repeats shows which list is current: its "
                   f"'search'); start the search again with POST /api/tasks/{task_id}/repeats/search")

