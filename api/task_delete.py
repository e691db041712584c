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
import time
from typing import Any, Awaitable, Callable

import azure.durable_functions as df
import azure.functions as func

from adapters import clients
from adapters.task_deletion import Deleted, delete_task_blobs, has_blobs
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
# How long one request waits, once the blobs are gone, for the platform to process the terminates of the task's
# timers (``_end_timers``): the Azure Storage provider polls an idle control queue at most every
# ``maxQueuePollingInterval`` (host.json: 10 s; durable-functions-azure-storage-provider.md, "Queue polling": the
# delay backs off while the queue is empty, up to that), then replays the orchestrator. Never past ``ANSWER_BY_S``
# from the request's start, which leaves the purges and the answer well within the 230 s
TIMERS_WAIT_S = 30.0
ANSWER_BY_S = 195.0


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
    """Delete the task's blobs (``adapters.task_deletion``), then the histories of its instances (timers ended first).

    Each instance is purged by its own id: the Azure Storage provider's purge of one id deletes that instance's row,
    its history partition and its large-message blobs, nothing of its sub-orchestrations (durabletask
    ``AzureTableTrackingStore.PurgeInstanceHistoryAsync(instanceId)`` -> ``DeleteAllDataForOrchestrationInstance``:
    the instance's own partition key; ext ``HttpApiHandler.HandleDeleteHistoryByIdRequestAsync``), so the task's
    shard groups and helpers, whose ids all start with the task id (``core.ids``), are listed by that prefix and
    purged one by one (devhost's ``Engine.purge`` deletes one instance likewise)."""
    task_id = req.route_params["task_id"]
    caller = await authorize_task(req, client, task_id)  # 404 unknown (to a caller), 403 another caller's
    if not is_task_id(task_id):
        raise TaskNotFound(f"no task {task_id}", "check the id against GET /api/tasks")
    s = clients.settings()
    store = clients.store(s)
    return await run_deletion(
        client, task_id, caller.operator, lambda: task_instances(client, task_id),
        lambda budget_s: asyncio.to_thread(delete_task_blobs, store, s, task_id, budget_s),
        lambda: asyncio.to_thread(has_blobs, store, s, task_id))


async def run_deletion(client: df.DurableOrchestrationClient, task_id: str, operator: bool,
                       instances_of: Callable[[], Awaitable[list[tuple[str, str | None]]]],
                       delete_blobs: Callable[[float], Awaitable[Deleted]],
                       any_blobs: Callable[[], Awaitable[bool]], clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> func.HttpResponse:
    """The deletion once the caller may act on the task: ``instances_of`` lists the task's instances, ``delete_blobs``
    deletes its blobs within a budget (seconds), ``any_blobs`` says whether any is left (passed in: the unit tests
    give their own); ``clock`` and ``sleep`` time the wait for the timers' terminates (``TIMERS_WAIT_S``)."""
    began = clock()
    instances = await instances_of()
    if task_id not in {iid for iid, _ in instances} and not (operator and (instances or await any_blobs())):
        # no task: nothing to delete, or (for an operator) only blobs or helpers left by a task whose history was
        # purged through the management API, which this deletes too
        raise TaskNotFound(f"no task {task_id}", "check the id against GET /api/tasks; a task deleted already "
                                                  "answers 404")
    plan = task_deletion.plan(task_id, instances)
    if plan.refusals:
        return _refused(task_id, plan)
    await _end_timers(client, task_id, plan.to_end)  # before the blobs: their timers then fire on nothing
    deleted = await delete_blobs(DELETE_BUDGET_S)
    blobs = {"state": deleted.state, "web": deleted.web}
    if not deleted.done:
        logger.info("task %s: deletion under way, %d blobs deleted in this request", task_id, deleted.state + deleted.web)
        return _again(task_id, blobs, "the task holds more blobs than one request deletes")
    # the histories last, the task's own after its helpers' (core.task_deletion: a deletion cut short is finished by
    # sending it again, which needs the task's instance to know the task and its owner); listed again, since a run
    # after the task may have started while the blobs went
    plan = task_deletion.plan(task_id, await instances_of())
    # a terminate the platform has not processed yet (it queues it: api.starters.terminate_task): waited for here,
    # within the answer's time, rather than answered 202 at once: a small task's blobs go in a second, and the
    # CLI's resends, one right after the other, could all come before the hub polls its control queue again
    wait_until = min(began + ANSWER_BY_S, clock() + TIMERS_WAIT_S)
    while plan.to_end and not plan.refusals and clock() < wait_until:
        await sleep(1.0)
        plan = task_deletion.plan(task_id, await instances_of())
    if plan.refusals:
        return _refused(task_id, plan)
    if plan.to_end:
        await _end_timers(client, task_id, plan.to_end)
        return _again(task_id, blobs, "a timer of the task (its preview expiry, a zip sweep or a replaced generation's sweep) is still ending")
    purged = await _purge(client, [i for i in plan.to_purge if i != task_id])
    # the task's own instance after listing once more: a run of the task started while its helpers went (its request
    # posted again, a request dropped for it: a failed or terminated task resumes) runs under the task's own id, and
    # the Azure Storage provider's purge by id takes an instance whatever its state (``_end_timers``), which would
    # leave that run's pool work going with no history, no status and no way to cancel it
    plan = task_deletion.plan(task_id, await instances_of())
    if plan.refusals:
        return _refused(task_id, plan)
    if plan.to_end:
        await _end_timers(client, task_id, plan.to_end)
        return _again(task_id, blobs, "a timer of the task (its preview expiry, a zip sweep or a replaced "
                                      "generation's sweep) is still ending")
    purged += await _purge(client, list(plan.to_purge))
    logger.info("task %s: deleted (%d blobs, %d instances)", task_id, deleted.state + deleted.web, purged)
    return json_response(200, {"id": task_id, "deleted": True, "blobs": blobs, "instances": purged,
                               "hint": "the task's results, working state, preview pages and task hub records are "
                                       "gone; its images and dropped request files are unchanged; post the same "
                                       "request again to start a fresh task"})


async def _purge(client: df.DurableOrchestrationClient, instance_ids: list[str]) -> int:
    """Purge each instance's history by its id, in order; how many the task hub deleted."""
    purged = 0
    for instance_id in instance_ids:
        result = await client.purge_instance_history(instance_id)  # 404, gone already: 0 (the SDK's parse)
        purged += int(getattr(result, "instances_deleted", 0) or 0)
    return purged


def _refused(task_id: str, plan: task_deletion.Plan) -> func.HttpResponse:
    error, hint = task_deletion.refusal_text(task_id, plan.refusals)
    return json_response(409, {"error": error, "hint": hint})


def _again(task_id: str, blobs: dict[str, int], why: str) -> func.HttpResponse:
    """The 202 of a deletion this request did not finish: the same DELETE goes on from what is left."""
    return json_response(202, {"id": task_id, "deleted": False, "blobs": blobs,
                               "hint": f"{why}: send DELETE /api/tasks/{task_id} again to go on (what went stays "
                                       "gone)"}, {"Retry-After": "1"})


async def _end_timers(client: df.DurableOrchestrationClient, task_id: str, instance_ids: tuple[str, ...]) -> None:
    """Terminate the task's waiting timers (``core.task_deletion.is_timer``): a running instance is never purged.

    Why terminate first: the Azure Storage provider's purge by id deletes whatever it finds, running or not
    (durabletask ``DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs`` ``PurgeInstanceHistoryAsync
    (instanceId)``: no state check; devhost README, fidelity row 46), while the timer's message stays in the control
    queue and would fire on an instance with no history. A terminated instance is finished, and purgeable. The
    terminate is queued and processed as an episode of its own (``api.starters.terminate_task``), so the caller lists
    the instances again before it purges; the SDK takes the extension's 410 (ended already) as success, and an
    instance gone meanwhile (404) is nothing to end."""
    for instance_id in instance_ids:
        try:
            await client.terminate(instance_id, f"task {task_id} deleted (DELETE /api/tasks/{task_id})")
        except Exception as exc:  # noqa: BLE001 - the SDK raises a bare Exception for 404; listed again afterwards
            logger.info("task %s: terminate of %s answered %s", task_id, instance_id, type(exc).__name__)
