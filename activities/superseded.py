"""Refuse the late writes of a task's run that a later run replaced: a run terminated (or failed by the platform
while its work ran), then resumed or re-run.

Why: terminating an orchestration stops it alone; "Terminating an orchestration instance has no effect on any in-flight
activity function executions or sub-orchestrations that were started by the terminated orchestration" (Durable
Functions, ``IDurableOrchestrationClient.TerminateAsync``, learn.microsoft.com). The activity messages it had queued run
too: the Azure Storage provider hands out work-item queue messages and dtfx's ``TaskActivityDispatcher`` runs them
without reading the orchestration's state (durabletask ``AzureStorageOrchestrationService.cs``
``LockNextTaskActivityWorkItem``; devhost does the same, its fidelity row 49). A fan-out of merge parts would then run
on, eight at a time (host.json ``maxConcurrentActivityFunctions``), for as long as its queue lasts. A plain post resumes
the terminated run under the same key (``api.starters._generations``), so its listing, merge, exports, publishing calls
and word of its end (notification, a dropped request's answer file, the Event Grid event: activities.notify,
task_events) wrote over the new run's, or told of an old end as if it were current: another listing's names, manifests
and summary; merge parts of other sizes under the names the new combine composes, and a late combine that found "another
merge's" results deleted what the new results were made into (``activities.fanin.drop_made_from_other_results``) and
rewrote the served file's head; exports read from the new results file at the old run's byte ranges; the merge's work
deleted under the new merge; pages; a promotion; a "completed" or "failed" of the old run delivered after the new run
started.

A failed run: one whose own failure handling ran (its status ``failed``) has nothing left to refuse, since the Durable
Task Framework fails an execution only once every task it started has ended (``TaskOrchestrationExecutor.ExecuteCore``:
``if (!this.context.HasOpenTasks)``; devhost README, fidelity row 26: a shard group's failure fails the SDK's
``task_all`` at once, but the task stays Running until the other groups and the fan-out's activities have ended). One
the platform failed at once, open tasks or not (a replay that breaks determinism: a release that changed the task
orchestrator deployed while it ran), leaves them running as a terminate does: the run after it ends it as it ends a
terminated one (``api.starters._ended_runs``: a Failed run whose status is not ``failed``, or whose failure is DTFx's
"Non-Deterministic workflow detected").

How: the new run first writes the terminated run's cancel marker with ``superseded_by`` (orchestrations.task
``_end_terminated_run``, activities.pool ``run_stop_groups``). Each guarded activity carries its run's pool job
(``run_job``, absent in calls made before it existed: they are not guarded) and reads that marker before it writes:
one small read. The listing's summary call reads its ``cancel_job``'s where it has no ``run_job``
(``activities.enumerate.summary_run_job``): a run started before runs had ids is replaced too (its job: the task
id). Must not: refuse a run cancelled by POST .../cancel (its marker has no ``superseded_by``: a cancelled
run's groups end and it writes nothing after them anyway), nor a call without ``run_job``. Must not lose the mark: a
shard group of the replaced run (terminate does not reach it) failing afterwards asks for the same marker to stop its
run's other groups, and writes one only where there is none (activities.pool ``run_stop_groups``: created with
If-None-Match, so a replacing run's marker written at the same moment is not lost either); nor does a cancel whose
run was replaced between its read of the task's status and its marker write (api.cancel_marker: written only over
the version it read, and a marker naming a replacing run is kept; the cancel answers 409).

What it does not close: a guarded activity already past its check when the marker is written finishes its writes. For
the merge, exports and publishing the new run reaches the same step only after its listing and its pool work (minutes
at least). The listing is the new run's first step after the marker, so a listing call of the terminated run may be
running then (one slice of ``names_per_call`` names, seconds): each run with an id keeps its listing's working files
(plan, units, parts, cursors, sample, tallies) in a folder of its own (``layout.listing_work_prefix``,
``orchestrations.enumeration``), so that call writes its own run's part and cursor, never the new run's part of the
same number (before, it did: with images uploaded in between, the new run's shards were cut from a part it had not
counted, an image lost or run twice: tests/integration/test_superseded_run.py); the end of a run's listing deletes
its own folder and the folders of the runs started before it or that it replaced
(``activities.enumerate.drop_earlier_listings``, ``activities.listing_leftovers``), and a replaced run's late summary
call (below) deletes none of another run, whatever its run id's second says of the order of the runs (ids carry their
starters' clocks), nor the shards past its count (the new run's, maybe), so it leaves the new run's listing alone. What the listing makes for the later
steps keeps the task's names, which the pool and the resubmission read: a ``write_shard_manifests`` call reads the
marker again every ``RECHECK_IMAGES`` images (so it writes at most that many images' manifests, from its own listing,
after the marker), and a ``finish_enumeration`` call past its check still writes the summary; the new run writes those
only after its whole listing. An ``only_new`` re-run's reuse call (``activities.reuse``: each shard's attempt 0, as
its own listing cut the shard) reads the marker again after a shard's reads and before its writes, every
``RECHECK_IMAGES`` images: its reads were of its own run's listing, and the resumed run lists the generation again
before its own reuse step (which writes every shard's attempt 0 anew; its listing deleted the earlier run's,
``activities.replaced_images.drop_earlier_reuse``), so a late call stops at the first shard after the marker.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from adapters.blobs import BlobStore
from adapters.task_deletion import run_of_deleted_task
from core.errors import RunSuperseded
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)


def superseded_by(store: BlobStore, settings: Settings, job: str) -> str | None:
    """The run that replaced the run of pool job ``job`` (its cancel marker's ``superseded_by``; "" when the marker
    did not say which), or None: not replaced (no marker, or a cancel's marker without it)."""
    marker = store.read_json_or_none(settings.container, layout.cancel_marker(job))
    by = marker.get("superseded_by") if isinstance(marker, dict) else None
    return None if by is None else str(by)


def refuse_if_superseded(store: BlobStore, settings: Settings, payload: Mapping[str, Any], what: str) -> None:
    """Raise ``RunSuperseded`` when the run that made this call (``payload["run_job"]``) was replaced by a later run
    of its task, or its task was deleted after it started (``adapters.task_deletion.run_of_deleted_task``: a marker
    written then went with the task's blobs); return otherwise, and at once for a call without ``run_job``.
    ``what``: the step, for the words."""
    job = payload.get("run_job")
    if not job:
        return
    by = superseded_by(store, settings, str(job))
    if by is None:
        if run_of_deleted_task(store, settings, str(job)):  # the task was deleted after this run started
            logger.warning("task %s: %s of run job %s not done: the task was deleted", payload.get("task_id"), what,
                           job)
            raise RunSuperseded(f"task {payload.get('task_id')}: {what} of the run with pool job {job} was not done: "
                                "the task was deleted (DELETE /api/tasks/{id}) after that run started",
                                "nothing to do: a deleted task writes nothing more")
        return
    logger.warning("task %s: %s of run job %s not done: run %s replaced that run", payload.get("task_id"), what, job,
                   by or "?")
    raise RunSuperseded(f"task {payload.get('task_id')}: {what} of the run with pool job {job} was not done: that run "
                        f"was terminated (or failed with its work running) and run {by or '?'} of the task replaces "
                        "it",
                        "nothing to do: the run that replaces it writes the task's results; follow GET /api/tasks/<id>")
