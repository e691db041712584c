"""``DELETE /api/tasks/{id}``: delete a task and everything trapbatch stored for it (``core.task_deletion`` says what,
and in which order; README, "Deleting a task").

Same caller rules as cancel and terminate (``api.starters.authorize_task``: 404 for an unknown task, 403 for another
caller's). Refused (409, with what to do first) while any orchestration of the task still works: its run, a repeat
removal or search, a preview re-render, a zip build, a terminated run's shard groups. Answers 200 with the counts once
nothing is left, or 202 when the blobs took longer than this request may (``DELETE_BUDGET_S``): what was deleted
stays deleted, and the same DELETE sent again goes on (the CLI sends it again by itself).

Why synchronous rather than an orchestration of its own: a finished task of 10M images holds some 10-25 thousand
blobs (measured per shard in the README, "Deleting a task"), which batch deletes of 256 remove in well under the
budget; a task re-run many times may hold more, and then the 202 hands the rest to the next request. An orchestration
would itself leave a history to purge and a status to serve for a task that no longer exists.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from adapters import clients
from adapters.task_deletion import delete_task_blobs, has_blobs
from api.edge import http_edge, json_response
from core import task_deletion
from core.errors import TaskNotFound
from core.ids import is_task_id
from api.starters import _all_instances, authorize_task

logger = logging.getLogger(__name__)
bp = df.Blueprint()

# Seconds of blob deletion one request does before it answers 202: an HTTP function must answer within 230 s on
# Azure (functions-scale.md, "Function app time-out duration"); the rest of the 230 s is for the task hub's listing,
# the terminates and purges, and a last batch of deletes begun just before the budget ran out.
DELETE_BUDGET_S = 150.0


def _runtime(status: Any) -> str | None:
    rs = getattr(status, "runtime_status", None)
    return rs.value if rs is not None else None


async def task_instances(client: df.DurableOrchestrationClient, task_id: str) -> list[tuple[str, str | None]]:
    """(instance id, runtime status) of the task's instance and every helper instance of it (ids ``<task>-...``),
    all pages of the management API's instance list (``api.starters._all_instances``)."""
    statuses = await _all_instances(client, task_id, keep=lambda iid: task_deletion.belongs_to(task_id, iid))
    return [(str(s.instance_id), _runtime(s)) for s in statuses]


@bp.route(route="tasks/{task_id}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def delete_task(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Delete the task's blobs (``adapters.task_deletion``), then the histories of its finished instances."""
    task_id = req.route_params["task_id"]
    caller = await authorize_task(req, client, task_id)  # 404 unknown (to a caller), 403 another caller's
    if not is_task_id(task_id):
        raise TaskNotFound(f"no task {task_id}", "check the id against GET /api/tasks")
    instances = await task_instances(client, task_id)
    s = clients.settings()
    store = clients.store(s)
    if task_id not in {iid for iid, _ in instances} and not (
            caller.operator and (instances or await asyncio.to_thread(has_blobs, store, s, task_id))):
        # no task: nothing to delete, or (for an operator) only blobs or helpers left by a task whose history was
        # purged through the management API, which this deletes too
        raise TaskNotFound(f"no task {task_id}", "check the id against GET /api/tasks; a task deleted already "
                                                  "answers 404")
    plan = task_deletion.plan(task_id, instances)
    if plan.refusals:
        error, hint = task_deletion.refusal_text(task_id, plan.refusals)
        return json_response(409, {"error": error, "hint": hint})
    deleted = await asyncio.to_thread(delete_task_blobs, store, s, task_id, DELETE_BUDGET_S)
    blobs = {"state": deleted.state, "web": deleted.web}
    if not deleted.done:
        logger.info("task %s: deletion under way, %d blobs deleted in this request", task_id, deleted.state + deleted.web)
        return json_response(202, {"id": task_id, "deleted": False, "blobs": blobs,
                                   "hint": f"the task holds more blobs than one request deletes: send DELETE "
                                           f"/api/tasks/{task_id} again to go on (what went stays gone)"},
                             {"Retry-After": "0"})
    logger.info("task %s: deleted (%d blobs)", task_id, deleted.state + deleted.web)
    return json_response(200, {"id": task_id, "deleted": True, "blobs": blobs,
                               "hint": "the task's results, working state and preview pages are gone; its images "
                                       "and dropped request files are unchanged"})
