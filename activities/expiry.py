"""The activities of a preview expiry: start its orchestration when the task ends, and delete the folder when due.

Why an activity starts the expiry: an orchestrator cannot start an independent orchestration in Python (the SDK has
sub-orchestrations, whose parent waits for them), and the task must complete when its work does
(orchestrations/expiry.py says why). The Durable docs' answer for non-.NET apps is an activity with the orchestration
client binding (``durable_client_input``), which any function may take. Idempotent: an expiry already waiting for
this task keeps its time (a rerun of the activity starts nothing new), except that a re-run of the task
(``move``) tells it the re-run's time, or that there is none: the first run's time would otherwise take the re-run's
pages off the website. The expiry's status is read with ``adapters.task_hub.read_status`` (the app's one reader of
instance statuses): a task hub that could not be read (the management API's 500 for throttled storage) fails the activity,
to be tried again (the task's ``STORAGE_RETRY``), instead of reading as "no expiry waits", which dropped a re-run's
move (the first run's time then took the re-run's pages off) or tried to start an expiry over the waiting one.
"""
from __future__ import annotations

import asyncio
import logging
import time

import azure.durable_functions as df

from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.generations import served_key
from adapters.blobs import BlobStore
from adapters.late_writes import write_unless_deleted
from adapters.preview_folders import README_VARIANTS, delete_preview_folder
from adapters.task_hub import read_status
from core import contracts as c
from core.failures import failures_without_secrets
from core.ids import expiry_instance_id
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()

WAITING = {"Running", "Pending"}


async def run_schedule_expiry(payload: c.ExpiryInput, client: df.DurableOrchestrationClient,
                              busy_retry_attempts: int = 0) -> c.ExpiryOutput:
    """Start the task's expiry orchestration, or move the waiting one's time. ``busy_retry_attempts``: the app's
    ``OrchestrationKnobs.busy_retry_attempts``, recorded in the new expiry's input (orchestrations.retries)."""
    instance = expiry_instance_id(payload["task_id"])
    status = await read_status(client, instance)  # TaskHubUnavailable rather than "none waits"
    runtime = getattr(getattr(status, "runtime_status", None), "value", None)
    if runtime in WAITING:
        if payload.get("move"):  # a re-run's pages: its own time (or none), not the first run's
            await client.raise_event(instance, c.EXPIRY_MOVED_EVENT, {"expires": payload["expires"]})
            logger.info("task %s: preview expiry moved to %s", payload["task_id"], payload["expires"] or "never")
            return {"scheduled": False, "instance_id": instance, "moved": True}
        return {"scheduled": False, "instance_id": instance}
    if not payload["expires"]:  # nothing waits and none is wanted
        return {"scheduled": False, "instance_id": instance}
    await client.start_new(c.EXPIRY_ORCHESTRATOR, instance, c.ExpiryInput(
        task_id=payload["task_id"], expires=payload["expires"],
        busy_retry_attempts=busy_retry_attempts))
    logger.info("task %s: preview pages expire at %s (%s)", payload["task_id"], payload["expires"], instance)
    return {"scheduled": True, "instance_id": instance}


@bp.activity_trigger(input_name="payload", activity=c.SCHEDULE_EXPIRY)
@bp.durable_client_input(client_name="client")
@failures_without_secrets
async def schedule_preview_expiry(payload: c.ExpiryInput,
                                  client: df.DurableOrchestrationClient) -> c.ExpiryOutput:
    s = clients.settings()
    # a terminated run's late call, once a later run replaced it: the expiry is the task's, not the run's (one
    # instance per task, ``expiry_instance_id``), so it would start one the replacing run did not ask for, or move
    # (a re-run's ``move``) the time the replacing run set, or end its expiry (``expires`` "")
    await asyncio.to_thread(refuse_if_superseded, clients.store(s), s, payload, "the preview expiry's scheduling")
    return await run_schedule_expiry(payload, client, s.knobs.busy_retry_attempts)


@bp.activity_trigger(input_name="payload", activity=c.DELETE_PREVIEWS)
@failures_without_secrets
def delete_previews_when_due(payload: c.DeletePreviewsInput) -> c.DeletePreviewsOutput:
    s = clients.settings()
    return expire_previews(clients.store(s), s, payload["task_id"])


def expire_previews(store: BlobStore, settings: Settings, task_id: str,
                    started_s: float | None = None) -> c.DeletePreviewsOutput:
    """Take the served generation's pages off the website (``delete_preview_folder``), unless the task was deleted
    since this call began (``started_s``, default now): the deletion terminates the expiry, but not this call if it
    runs already, and its previews-withdrawn file and READMEs written after the deletion listed the task's results
    would stay (``adapters.late_writes``: skipped, or deleted once written)."""
    started = time.time() if started_s is None else started_s
    # the pages the public sees now: a re-run promoted since the task ended serves its own (adapters.generations)
    key = served_key(store, settings.container, task_id)
    deleted = write_unless_deleted(
        store, settings.container, key, "the preview expiry", lambda: delete_preview_folder(store, settings, key),
        lambda _: [layout.previews_withdrawn_blob(key)] + [layout.readme_blob(key, v) for v in README_VARIANTS],
        started)
    logger.info("task %s: preview pages expired (%s files deleted)", task_id, deleted or 0)
    return {"deleted": deleted or 0}
