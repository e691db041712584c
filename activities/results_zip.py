"""The activities that build a task's results zip (``adapters.results_bundle`` says what it holds and why).

Up to ``zip_parts.PART_BYTES`` of files, ``build_results_zip`` writes the zip in one pass; above, it writes nothing
and answers the plan of parallel parts (``adapters.zip_parts``), which ``results_zip_part``, ``results_zip_combine``
and ``results_zip_clean`` carry out. A history recorded before parts existed holds a built zip, never a plan, so it
replays as before.

At its end a build starts its sweep (``schedule_results_zip_sweep``, an activity with the orchestration client binding:
an orchestrator cannot start an independent orchestration in Python, as ``activities.expiry`` says), which days later
runs ``sweep_results_zip_folder`` (``core.zip_builds`` says why and when).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import azure.durable_functions as df

from adapters import clients, zip_parts
from adapters.blobs import BlobStore
from adapters.late_writes import write_unless_deleted
from adapters.results_bundle import sweep_zips, write_zip
from adapters.task_hub import read_status
from core import contracts as c
from core import zip_builds
from core.failures import failures_without_secrets
from gpu_batch import layout

logger = logging.getLogger(__name__)

bp = df.Blueprint()


def run_build(store: BlobStore, container: str, task_id: str, part_bytes: int | None = None) -> c.ResultsZipOutput:
    """The zip in one pass when its files are small enough, else the plan of its parts (``part_bytes``: default
    ``zip_parts.PART_BYTES``, read at the call)."""
    part_bytes = part_bytes or zip_parts.PART_BYTES
    made = zip_parts.plan(store, container, task_id, part_bytes)
    if sum(f["size"] for f in made["files"]) > part_bytes:
        return c.ResultsZipOutput(blob=layout.results_zip_blob(task_id, made.get("build", "")),
                                  files=len(made["files"]), bytes=0, plan=made)
    written = write_zip(store, container, task_id, {f["name"]: dict(f) for f in made["files"]},  # one listing
                        made.get("build", ""))  # the zip under the build's own name
    return c.ResultsZipOutput(blob=written["zip"], files=len(written["files"]), bytes=written["bytes"])


def _zip_written(task_id: str, made: c.ResultsZipOutput) -> list[str]:
    """What a build's one pass or combine wrote: its zip and the manifest, none for a plan or a stale build."""
    return [] if "plan" in made or not made["bytes"] else [made["blob"], layout.results_zip_manifest_blob(task_id)]


# A zip build's steps write nothing for a task deleted since they began, and delete what they wrote once it was
# (``adapters.late_writes``): a build terminated before the deletion has its queued or running steps run on.
def build_unless_deleted(store: BlobStore, container: str, task_id: str,
                         started_s: float | None = None) -> c.ResultsZipOutput:
    """``run_build``, guarded."""
    return write_unless_deleted(store, container, task_id, "the results zip's build",
                                lambda: run_build(store, container, task_id), lambda made: _zip_written(task_id, made),
                                started_s)


def part_unless_deleted(store: BlobStore, container: str, asked: c.ResultsZipPartInput,
                        started_s: float | None = None) -> c.ResultsZipPartOutput:
    """``zip_parts.deflate_part``, guarded."""
    task_id = asked["task_id"]
    return write_unless_deleted(
        store, container, task_id, f"the results zip's part {asked['part']}",
        lambda: zip_parts.deflate_part(store, container, asked),
        lambda _: [layout.results_zip_part_blob(task_id, asked["part"], asked.get("build", ""))], started_s)


def combine_unless_deleted(store: BlobStore, container: str, asked: c.ResultsZipCombineInput,
                           started_s: float | None = None) -> c.ResultsZipOutput:
    """``zip_parts.combine``, guarded."""
    task_id = asked["task_id"]
    return write_unless_deleted(store, container, task_id, "the results zip's combine",
                                lambda: zip_parts.combine(store, container, asked),
                                lambda made: _zip_written(task_id, made), started_s)


@bp.activity_trigger(input_name="payload", activity=c.BUILD_RESULTS_ZIP)
@failures_without_secrets
def build_results_zip(payload: c.ResultsZipInput) -> c.ResultsZipOutput:
    s = clients.settings()
    return build_unless_deleted(clients.store(s), s.container, payload["task_id"])


@bp.activity_trigger(input_name="payload", activity=c.RESULTS_ZIP_PART)
@failures_without_secrets
def results_zip_part(payload: c.ResultsZipPartInput) -> c.ResultsZipPartOutput:
    s = clients.settings()
    return part_unless_deleted(clients.store(s), s.container, payload)


@bp.activity_trigger(input_name="payload", activity=c.RESULTS_ZIP_COMBINE)
@failures_without_secrets
def results_zip_combine(payload: c.ResultsZipCombineInput) -> c.ResultsZipOutput:
    s = clients.settings()
    return combine_unless_deleted(clients.store(s), s.container, payload)


@bp.activity_trigger(input_name="payload", activity=c.RESULTS_ZIP_CLEAN)
@failures_without_secrets
def results_zip_clean(payload: c.ResultsZipCleanInput) -> int:
    s = clients.settings()
    return zip_parts.clean_parts(clients.store(s), s.container, payload["task_id"], payload.get("build", ""))


async def run_schedule_sweep(payload: c.ResultsZipSweepSchedule, client: df.DurableOrchestrationClient,
                             busy_retry_attempts: int = 0, now: datetime | None = None) -> c.ResultsZipSweepScheduled:
    """Start the build's sweep (``payload["instance_id"]``) for ``zip_builds.SWEEP_AFTER_S`` after ``now`` (default:
    this host's clock), unless that instance is there already: this call retried after it started it (a sweep's time
    is never moved, and one build has one sweep). ``busy_retry_attempts``: the app's knob, recorded in its input
    (orchestrations.retries). A task hub that could not be read fails the call (``read_status``), to be tried again."""
    instance = payload["instance_id"]
    status = await read_status(client, instance)
    if getattr(status, "runtime_status", None) is not None:
        return c.ResultsZipSweepScheduled(scheduled=False, instance_id=instance)
    at = ((now or datetime.now(timezone.utc)) + timedelta(seconds=zip_builds.SWEEP_AFTER_S)).isoformat()
    await client.start_new(c.RESULTS_ZIP_SWEEP_ORCHESTRATOR, instance, c.ResultsZipSweepInput(
        task_id=payload["task_id"], at=at, busy_retry_attempts=busy_retry_attempts))
    logger.info("task %s: its results zips are swept at %s (%s)", payload["task_id"], at, instance)
    return c.ResultsZipSweepScheduled(scheduled=True, instance_id=instance, at=at)


@bp.activity_trigger(input_name="payload", activity=c.SCHEDULE_RESULTS_ZIP_SWEEP)
@bp.durable_client_input(client_name="client")
@failures_without_secrets
async def schedule_results_zip_sweep(payload: c.ResultsZipSweepSchedule,
                                     client: df.DurableOrchestrationClient) -> c.ResultsZipSweepScheduled:
    s = clients.settings()
    return await run_schedule_sweep(payload, client, s.knobs.busy_retry_attempts)


@bp.activity_trigger(input_name="payload", activity=c.SWEEP_RESULTS_ZIPS)
@failures_without_secrets
def sweep_results_zip_folder(payload: c.ResultsZipInput) -> c.ResultsZipSweepOutput:
    s = clients.settings()
    return c.ResultsZipSweepOutput(deleted=sweep_zips(clients.store(s), s.container, payload["task_id"],
                                                      datetime.now(timezone.utc)))
