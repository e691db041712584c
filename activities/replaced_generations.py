"""A replaced generation's sweep: started by the promotion that replaced it, deleting it days later
(``core.replaced`` says what, when and why).

``schedule_replaced_sweep`` starts the sweep's orchestration (an activity with the orchestration client binding: an
orchestrator cannot start an independent orchestration in Python, as ``activities.expiry`` says), which waits and
then calls ``delete_replaced_generation`` until nothing of the generation is left. That call looks first at what
must not be deleted (``core.replaced.keep_reason``): the served generation (``current.json``), and a generation the
task's running run writes or reads (its orchestration input's ``generation`` and ``previous``); then it takes any
pages of the generation still on the public website off it (``delete_preview_folder``: a page whose folder record
went with the results would stay public with nothing left to find it), then deletes a bounded share of its blobs
(``adapters.replaced_generations``).
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any

import azure.durable_functions as df

from adapters import clients
from adapters.blobs import BlobStore
from adapters.generations import served_generation
from adapters.preview_folders import delete_preview_folder
from adapters.replaced_generations import delete_generation_share
from adapters.task_hub import read_status
from core import contracts as c
from core import replaced
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)

bp = df.Blueprint()

ACTIVE = {"Running", "Pending", "ContinuedAsNew"}  # runtime statuses of an orchestration not ended (api.starters)


async def run_schedule(payload: c.ReplacedSweepSchedule, client: df.DurableOrchestrationClient, keep_days: int,
                       busy_retry_attempts: int = 0, now: datetime | None = None) -> c.ReplacedSweepScheduled:
    """Start the sweep ``payload["instance_id"]`` of the replaced generation for ``core.replaced.deletes_at`` of
    ``now`` (default: this host's clock) and ``keep_days`` (TRAPBATCH_KEEP_REPLACED_DAYS), unless that instance is
    there already (this call retried after it started it: it keeps its time, which it says). ``keep_days`` 0: no
    sweep, and ``deletes_at`` None. A task hub that could not be read fails the call, to be tried again."""
    gone = payload["replaced"]
    at = replaced.deletes_at(now or datetime.now(timezone.utc), keep_days)
    if at is None:
        return c.ReplacedSweepScheduled(generation=gone, deletes_at=None)
    instance = payload["instance_id"]
    status = await read_status(client, instance, show_input=True)
    if getattr(status, "runtime_status", None) is not None:
        started = _input(status)
        return c.ReplacedSweepScheduled(generation=gone, deletes_at=str(started.get("at") or at.isoformat()),
                                        instance_id=instance, scheduled=False)
    await client.start_new(c.REPLACED_SWEEP_ORCHESTRATOR, instance, c.ReplacedSweepInput(
        task_id=payload["task_id"], generation=gone, at=at.isoformat(), busy_retry_attempts=busy_retry_attempts,
        rechecks_running=True))
    logger.info("task %s: generation %r, replaced by %s, is deleted at %s (%s)", payload["task_id"], gone,
                payload["generation"], at.isoformat(), instance)
    return c.ReplacedSweepScheduled(generation=gone, deletes_at=at.isoformat(), instance_id=instance, scheduled=True)


def _input(status: Any) -> dict[str, Any]:
    raw = getattr(status, "input_", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


@bp.activity_trigger(input_name="payload", activity=c.SCHEDULE_REPLACED_SWEEP)
@bp.durable_client_input(client_name="client")
@failures_without_secrets
async def schedule_replaced_sweep(payload: c.ReplacedSweepSchedule,
                                  client: df.DurableOrchestrationClient) -> c.ReplacedSweepScheduled:
    s = clients.settings()
    return await run_schedule(payload, client, s.keep_replaced_days, s.knobs.busy_retry_attempts)


def task_run(status: Any) -> tuple[bool, str | None, str | None]:
    """(running, its ``generation``, its ``previous``) of the task's orchestration status (``read_status``)."""
    runtime = getattr(getattr(status, "runtime_status", None), "value", None)
    if runtime not in ACTIVE:
        return False, None, None
    started = _input(status)
    generation, previous = started.get("generation"), started.get("previous")
    return (True, generation if isinstance(generation, str) else None,
            previous if isinstance(previous, str) else None)


def run_sweep_step(payload: c.ReplacedSweepStep, store: BlobStore, settings: Settings, running: bool,
                   run_generation: str | None, run_previous: str | None) -> c.ReplacedSweepStepOutput:
    """One share of the sweep, after the checks (``core.replaced.keep_reason``; ``running`` and the run's inputs:
    ``task_run``)."""
    task_id, gone = payload["task_id"], payload["generation"]
    served = served_generation(store, settings.container, task_id)
    why = replaced.keep_reason(gone, served, running, run_generation, run_previous)
    if why is not None:
        logger.info("task %s: replaced generation %r kept (%s)", task_id, gone, why)
        return c.ReplacedSweepStepOutput(deleted=0, done=True, kept=why)
    delete_preview_folder(store, settings, layout.generation_key(task_id, gone))  # None: none left (as a rule)
    deleted, done = delete_generation_share(store, settings.container, task_id, gone)
    return c.ReplacedSweepStepOutput(deleted=deleted, done=done)


@bp.activity_trigger(input_name="payload", activity=c.SWEEP_REPLACED)
@bp.durable_client_input(client_name="client")
@failures_without_secrets
async def delete_replaced_generation(payload: c.ReplacedSweepStep,
                                     client: df.DurableOrchestrationClient) -> c.ReplacedSweepStepOutput:
    s = clients.settings()
    running, generation, previous = task_run(await read_status(client, payload["task_id"], show_input=True))
    return await asyncio.to_thread(run_sweep_step, payload, clients.store(s), s, running, generation, previous)
