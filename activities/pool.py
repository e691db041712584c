"""Submit, poll and cancel shard tasks on the GPU pool; write resubmission manifests.

Why these are activities: the pool is I/O. They take and return only ids and counts (never image lists, credentials or
SAS tokens), so the Durable history stays small and secret-free. A shard attempt is done when its pool task completed
AND its results cover every image of its manifest; ``poll_shards`` reports that coverage so the orchestrator can
decide, deterministically, what to resubmit. ``resubmit_shard`` recomputes the missing images from storage (the source
of truth) and submits only those as the next attempt.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Iterable, Mapping

import azure.durable_functions as df
from azure.core.exceptions import AzureError, HttpResponseError

from activities.decided import task_settings
from activities.shard_results import (images_to_rerun, progress_count, shard_attempt_results, shard_blobs,
                                     shard_coverage, shard_manifest)
from adapters import clients
from adapters.blobs import BlobStore
from core import contracts as c
from core import mdformat
from core.cost import attempt_seconds
from core.errors import without_secrets
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import exit_codes, layout
from gpu_batch import manifest as contract
from gpu_batch.formats import jsonio
from gpu_batch.manifest import ShardManifest, ViewBasis
from gpu_batch.pool import GpuPool, JobClosed, JobDisabled, JobState, ShardTask, TaskInfo, TaskState
from gpu_batch.pool.base import closed_outside_hint

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def _shard_task(settings: Settings, task_id: str, sid: str, attempt: int) -> ShardTask:
    """The pool task of a shard attempt, with the time limit in ``settings`` (the run's decided one, as the
    activities pass them: ``activities.decided``), not the one the process's pool object was built with."""
    return ShardTask(task_id=layout.pool_task_id(sid, attempt), manifest_container=settings.container,
                     manifest_blob=layout.manifest_blob(task_id, sid, attempt), shard_id=sid, attempt=attempt,
                     max_seconds=settings.knobs.max_task_seconds)


def run_submit(task_id: str, job: str, shards: Iterable[tuple[str, int]], settings: Settings, store: BlobStore,
               pool: GpuPool, create_job: bool = True) -> c.SubmitOutput:
    """Submit the shards' attempts to the run's pool job; with ``create_job`` (a shard group's first SUBMIT, or an
    input of before ``SubmitInput.create_job``) create the job first if it is missing, unless the run's job was in the
    pool before (``_ensure_job_once``).

    Without it the job is taken as it is, as ``_submit_to_existing_job`` does for a RESUBMIT: the group has had a task
    in the job, so a job missing now was deleted outside trapbatch, and the pool refuses the submission (AzureBatchPool:
    ``JobClosed`` for 404 JobNotFound; LocalPool and SimulatedPool likewise after their ``delete_job``), which fails
    the group saying what to do. Created again, it hid that deletion and the group went on spending the GPU pool in a
    job the operator had deleted (``orchestrations.shards``, "A job deleted outside trapbatch")."""
    if create_job:
        _ensure_job_once(job, settings, store, pool)
    tasks = [_shard_task(settings, task_id, str(sid), int(attempt)) for sid, attempt in shards]
    pool.submit(job, tasks)
    logger.info("task %s: submitted %d shard attempts", task_id, len(tasks))
    return {"submitted": len(tasks)}


def _ensure_job_once(job: str, settings: Settings, store: BlobStore, pool: GpuPool) -> None:
    """Create the run's pool job if missing, unless it was in the pool before: then take it as it is.

    Why: a group's first SUBMIT (``create_job``) may be tried again for long (Batch answering 503 or 429 while its
    tasks are added: ``AzureBatchPool.submit`` fails ``BatchUnavailable`` and the shard group retries it through the
    outage), and each try began with ``ensure_job``. A job an operator deleted meanwhile ('az batch job delete', the
    portal) was created again under its id by the next try, since Batch's Job - Add succeeds once the deletion is done:
    the deletion undone, the GPU pool spending on. So the first SUBMIT that finds the job in the pool (created, or
    there already: 409 JobExists) leaves ``layout.pool_job_marker``, and a SUBMIT that finds the marker, a retried
    one or another group's first, submits to the job as it is: a job gone (404 JobNotFound) or being deleted
    (409 JobBeingDeleted: Job - Delete, "All update operations on a Job that is in deleting state will fail with
    status code 409 (Conflict)", azure-batch 15 ``begin_delete_job``) is refused as ``JobClosed`` with
    ``closed_outside_hint``'s advice, as for a later SUBMIT. The marker is a blob, not job metadata, which goes with
    the deleted job; it is written after ``ensure_job`` answered, so a marker always means the job was there (one
    whose Job - Add failed leaves none, and the next try creates it). Per run: each run has a job of its own.
    The decision is the activity's, from storage, not the orchestrator's, so histories replay as they ran; a SUBMIT
    whose run has no marker (its earlier SUBMITs ran in an older release) creates the job, as before."""
    marker = layout.pool_job_marker(job)
    if store.exists(settings.container, marker):
        logger.info("pool job %s: in the pool before (%s); submitted to as it is, not created again", job, marker)
        return
    pool.ensure_job(job)
    store.write_json(settings.container, marker, {"job_id": job})


LOG_READ_LIMIT = 1024 * 1024  # a worker log larger than this is not read for its last error


def worker_message(store: BlobStore, info: TaskInfo) -> str:
    """The worker's last error line from the pool task's log (LocalPool: one blob; Batch: ``stderr.txt`` in a folder),
    its secrets removed (``without_secrets``); empty when there is none or it cannot be read (the exit code still
    says what kind of failure it was)."""
    if not info.log:
        return ""
    container, _, name = info.log.partition("/")
    if name.endswith("/"):
        name += "stderr.txt"
    try:
        size = store.size_or_none(container, name)
        if size is None or size > LOG_READ_LIMIT:
            return ""
        return without_secrets(exit_codes.worker_error_message(
            store.read_bytes(container, name).decode("utf-8", "replace")))
    except AzureError:
        return ""


def retryable_reasons(store: BlobStore, settings: Settings, task_id: str, sid: str, attempt: int) -> dict[str, int]:
    """The attempt's retryable failures by ``failure_reason`` (``gpu_batch.manifest``), from its results; empty when
    they cannot be read. Why: a worker that exits 0 with images failed as retryable (every read refused with a 403,
    throttled, timed out) leaves them missing, and a shard given up so said only "exited 0 without results for N
    image(s)": not that storage refused, nor what to do. Read only for the shard's last attempt
    (``_completed_row``), that exited 0 and left retryable failures (the coverage says so): one read of its results."""
    try:
        doc = jsonio.loads(store.read_bytes(settings.container, layout.attempt_results_blob(task_id, sid, attempt)))
    except (AzureError, ValueError, UnicodeDecodeError):
        return {}
    entries = doc.get("images") if isinstance(doc, dict) else None
    retryable = [e for e in entries or [] if isinstance(e, dict) and contract.failure_kind(e) == contract.RETRYABLE]
    return dict(sorted(mdformat.failure_counts(retryable).items()))


def _completed_row(info: TaskInfo, settings: Settings, store: BlobStore, task_id: str,
                   unavailable: int = 0) -> c.CompletedShard:
    """The poll's report of a completed pool task. ``unavailable``: the earlier attempts of its shard that spent
    none of its attempts (worker exits 69: orchestrations.shards "Unavailable exits"), so that the attempt number
    minus them is the attempts spent, as the orchestrator counts them to give a shard up."""
    sid, attempt = layout.parse_pool_task_id(info.task_id)
    coverage = shard_coverage(store, settings, task_id, sid)
    row: c.CompletedShard = {
        "task_id": info.task_id, "shard_id": sid, "attempt": attempt,
        "result": info.result.value if info.result else None, "exit_code": info.exit_code,
        "failure_message": without_secrets(info.failure_message) if info.failure_message else info.failure_message,
        "images": coverage["images"], "covered": coverage["covered"],
        "failed": coverage["failed"], "missing": coverage["missing"]}
    if info.failure_code:  # TaskEnded: the pool ended it, whatever the exit code (exit_codes.pool_ended)
        row["failure_code"] = info.failure_code
    # the worker's own words for an exit no attempt fixes, and for any failed exit that left images missing: a shard
    # given up after its attempts says why (orchestrations.shards: the status's shards_given_up), not only the pool's
    # "exited with code 1"; not for a task the pool ended (its log says nothing of that)
    failed_exit = info.exit_code not in (None, 0) and info.failure_code != exit_codes.TASK_ENDED
    if exit_codes.unfixable_reason(info.exit_code, info.failure_code) or (failed_exit and coverage["missing"]):
        row["worker_message"] = worker_message(store, info)[:1000]
    # the reasons say why a shard was given up, which only its last attempt can be: an earlier one is resubmitted
    # from the coverage summaries, and reading its whole results (megabytes for 10,000 images) in each poll for
    # every attempt with one throttled read would undo what the summaries save. The app's TRAPBATCH_MAX_ATTEMPTS;
    # the orchestrator's own snapshot differs only if the setting changed while the task ran (then the reason is
    # worded without them, or read once too often). Attempts that spent none (exits 69) are not counted: else, with
    # attempt numbers past max_attempts after such exits, every later attempt's whole results were read
    last = attempt - unavailable >= settings.knobs.max_attempts
    if last and info.exit_code == 0 and info.failure_code != exit_codes.TASK_ENDED and coverage.get("retryable"):
        reasons = retryable_reasons(store, settings, task_id, sid, attempt)
        if reasons:
            row["retryable_reasons"] = reasons
    # node time for the task's cost (core.cost): of the task's last run only, if Batch requeued it (a lower bound)
    seconds = attempt_seconds(info.start_time, info.end_time)
    if seconds is not None:
        row["seconds"] = round(seconds, 3)
    return row


def run_poll(task_id: str, job: str, task_ids: list[str], settings: Settings, store: BlobStore, pool: GpuPool,
             since: str | None = None, running: list[str] | None = None,
             unavailable: Mapping[str, int] | None = None) -> c.PollOutput:
    """One poll round of a shard group: what changed among its in-flight pool tasks, and its running ones' progress.

    Without ``since`` the pool is asked about every id in ``task_ids`` (a full reconciliation, once per generation of
    the group); with it, ONE listing of the job's tasks changed after that cursor (``GpuPool.changes``), of which the
    group's in-flight ids are kept (a repeat from the cursor's overlap, or another group's task, is dropped here). The
    returned cursor is for the next round. Completed tasks get their shard's coverage (what the orchestrator decides
    on), from the attempts' small coverage summaries where they can be trusted, else from their results
    (``activities.shard_results``). Progress comes from the counters of the tasks the orchestrator knows to run
    (``running``) plus those this round found running: a few bytes each, never the results (``unavailable``: the
    exits 69 of each task's shard that spent no attempt, so its shard's last attempt is known: ``_completed_row``).
    A full reconciliation
    also names the asked-about tasks the pool does not know (``unknown``): a submission that never reached it would
    otherwise leave its shard "submitted" for ever. A round that finds the run's cancel marker says only that, without
    asking the pool: the group cancels its tasks next and ends, so a cancel during a Batch outage that the group
    outlasts (orchestrations/shards.py "Outages") is not held up until Batch answers. A round about no task (no
    ``task_ids``: a group whose SUBMIT stays busy with nothing else in flight, or whose every shard in flight waits for
    its next attempt) reads the marker and asks the pool nothing, so a cancel or a stop gets through while Batch is
    out of reach; it returns the cursor it was given (``since``), the pool having seen no newer one, so the group's
    next poll lists the changes after it instead of asking by id (as the empty cursor it once returned made it).
    A round in which no task completed also asks the job's state, and fails when the job was terminated, deleted or
    disabled outside trapbatch (``check_job``): its queued tasks would never change.
    """
    cancelled = store.exists(settings.container, layout.cancel_marker(job))
    if cancelled or not task_ids:  # no pool call, which Batch may refuse: the marker is all it needs
        return {"cancelled": cancelled, "completed": [], "running": 0, "queued": 0, "images_in_progress": 0,
                "cursor": since or "", "states": {}, "progress": {}}
    wanted = set(task_ids)
    try:
        if since:
            found = pool.changes(job, since)
            infos, cursor = [i for i in found.tasks if i.task_id in wanted], found.cursor
        else:
            cursor = pool.cursor()  # before asking: a change after this is in the next round's listing
            infos = pool.poll(job, task_ids)
    except HttpResponseError:  # a listing refused because the job is gone (404 JobNotFound) says so
        check_job(pool, job, len(task_ids))
        raise
    completed: list[c.CompletedShard] = []
    states: dict[str, str] = {}
    for info in infos:
        if info.state == TaskState.completed:
            completed.append(_completed_row(info, settings, store, task_id, (unavailable or {}).get(info.task_id, 0)))
        else:
            states[info.task_id] = "running" if info.state == TaskState.running else "queued"
    if not completed:  # a round without news: is the job still one whose tasks run? (check_job)
        check_job(pool, job, len(task_ids))
    finished = {row["task_id"] for row in completed}
    now_running = {tid for tid in running or [] if tid in wanted and states.get(tid, "running") == "running"}
    now_running |= {tid for tid, state in states.items() if state == "running"}
    progress: dict[str, int] = {}
    for tid in sorted(now_running - finished):
        sid, attempt = layout.parse_pool_task_id(tid)
        done = progress_count(store, settings, task_id, sid, attempt)
        if done is not None:
            progress[tid] = done
    out: c.PollOutput = {"cancelled": cancelled, "completed": completed,
                         "running": sum(1 for s in states.values() if s == "running"),
                         "queued": sum(1 for s in states.values() if s == "queued"),
                         "images_in_progress": sum(progress.values()), "cursor": cursor, "states": states,
                         "progress": progress}
    if not since:  # asked by id: an id the pool left out is one it does not know (GpuPool.poll)
        known = {info.task_id for info in infos}
        out["unknown"] = [tid for tid in task_ids if tid not in known]
    return out


def check_job(pool: GpuPool, job: str, in_flight: int) -> None:
    """Fail the poll when the run's pool job was ended or paused outside trapbatch; return when it is active.

    Why: a job terminated outside trapbatch (``az batch job stop``, the portal) ends its running tasks, but "If
    there are any Tasks in the Job in the active state, they will remain in the active state" (REST Job - Terminate;
    azure-batch 15 ``begin_terminate_job``), and a disabled one starts none until enabled ("No new Tasks are started
    under the Job until it moves back to active state", REST Job - Disable). Those tasks never change, so a group
    whose in-flight tasks were all still queued polled them for ever: no change, no completion, no resubmission (the
    only step that met the closed job, as ``JobClosed``), and the task never ended. Asked only in a round without a
    completed task (``run_poll``): one Job - Get per quiet round of a group, at most ``TRAPBATCH_MAX_IN_FLIGHT``
    groups every ``TRAPBATCH_POLL_MAX_S`` (100 per 300 s by default).

    Closed or deleted: ``JobClosed``, which fails the group, and so the task, saying what happened and what to do
    (``closed_outside_hint``); each other group meets it at its own next quiet round (or SUBMIT), and the task's close
    of the job then terminates the tasks left active. Why this is never trapbatch's own close: a run's groups have all
    ended before the task closes its job, and a cancelled round returns before the pool is asked. Disabled:
    ``JobDisabled``, a busy failure, so the group waits it out as an outage (``orchestrations.shards`` "Outages"): its
    status's ``waiting`` note carries this reason (the first 200 characters: ``retries.busy_reason``) and until when;
    enabled again, the group goes on; else it fails at its outage limit."""
    state = pool.job_state(job)
    if state in (JobState.closed, JobState.deleted):
        how = "terminated" if state is JobState.closed else "deleted"
        raise JobClosed(f"the pool job was {how} while {in_flight} shard attempt(s) of this group were in flight; "
                        f"Batch runs none of its tasks still queued: {closed_outside_hint(job)}")
    if state is JobState.disabled:
        raise JobDisabled(f"the pool job was disabled outside trapbatch: none of its tasks starts until 'az batch job "
                          f"enable --job-id {job}'; the shard group waits for that up to its outage limit, then fails")


def resubmit_one(task_id: str, job: str, sid: str, attempt: int, settings: Settings, store: BlobStore,
                 pool: GpuPool) -> c.Resubmitted:
    """One shard's next attempt: its manifest (``prepare_resubmission``), then its pool task, unless nothing is
    missing. ``run_resubmit`` does the same for many shards with one submission."""
    out = prepare_resubmission(task_id, sid, attempt, settings, store)
    if out["submitted"]:
        _submit_to_existing_job(task_id, job, [(sid, attempt)], settings, pool)
    return out


def _submit_to_existing_job(task_id: str, job: str, shards: Iterable[tuple[str, int]], settings: Settings,
                            pool: GpuPool) -> None:
    """Submit resubmitted attempts to the run's job without creating it (``run_submit`` with ``create_job=False``).

    Why: a resubmission follows its shard's first submission to that job, which created it, so a job missing now
    was deleted outside trapbatch. Created again under its id (Azure Batch: Job - Add succeeds once the deletion is
    done), it hid that: the group's other attempts went with the old job (Job - Delete "also deletes all Tasks that
    are part of that Job"), ``check_job`` found the new one active, and the group waited up to
    ``orchestrations.shards.FULL_POLL_EVERY`` polls to find them unknown, then ran them all again in a job the
    operator had deleted. Submitted to it as it is, the pool refuses (AzureBatchPool: ``JobClosed``, job deleted) and
    the group fails saying what to do, as ``check_job`` does for a deleted job."""
    tasks = [_shard_task(settings, task_id, str(sid), int(attempt)) for sid, attempt in shards]
    pool.submit(job, tasks)
    logger.info("task %s: resubmitted %d shard attempts", task_id, len(tasks))


def prepare_resubmission(task_id: str, sid: str, attempt: int, settings: Settings,
                         store: BlobStore) -> c.Resubmitted:
    """The manifest of a shard's next attempt, written (its missing images only), and whether its pool task is to be
    submitted (``submitted``: False when nothing is missing any more); the caller submits it."""
    first = ShardManifest.from_dict(shard_manifest(store, settings, task_id, sid))  # every image of the shard
    # successes and permanent failures are final; retryable failures (download, auth, throttling) run again
    missing = images_to_rerun(store, settings, task_id, sid, first.images)
    # The attempt's manifest as an earlier try of this activity wrote it, if one did (a RESUBMIT retried after a
    # Batch outage on another shard): kept as it is and submitted again (task ids are deterministic, so a task
    # already added is not added twice). Computed afresh, it would leave out the images the running attempt has
    # finished, and a requeued task (a Spot node preempted) would then rewrite its results without them.
    written = store.read_json_or_none(settings.container, layout.manifest_blob(task_id, sid, attempt))
    if written is not None and written.get("images") and _still_fits(written["images"], first.images, missing):
        logger.info("task %s shard %s: attempt %d's manifest was written already; submitted again", task_id, sid,
                    attempt)
        return {"shard_id": sid, "attempt": attempt, "missing": len(written["images"]), "submitted": True}
    if not missing:
        return {"shard_id": sid, "attempt": attempt, "missing": 0, "submitted": False}
    listed = shard_blobs(store, settings, task_id, sid)  # one listing for both: what is kept, the view's basis
    named = _done_only_there(store, settings, task_id, sid, attempt, first.images, listed) | set(missing)
    manifest = ShardManifest(
        task_id=task_id, shard_id=sid, attempt=attempt, source_container=first.source_container,
        images=tuple(n for n in first.images if n in named) if len(named) > len(missing) else tuple(missing),
        output_container=first.output_container,
        output_blob=layout.attempt_results_blob(task_id, sid, attempt), model=first.model,
        detection_threshold=first.detection_threshold, source_account_url=first.source_account_url,
        source_credential_secret=first.source_credential_secret, merge_view_threshold=first.merge_view_threshold,
        merge_view_basis=(_view_basis(store, settings, task_id, sid, attempt, listed)
                          if first.merge_view_threshold is not None else None),
        merge_view_list=first.merge_view_list,
    )
    store.write_json(settings.container, layout.manifest_blob(task_id, sid, attempt), manifest.to_dict())
    logger.info("task %s shard %s: resubmitted %d missing images as attempt %d", task_id, sid, len(missing), attempt)
    return {"shard_id": sid, "attempt": attempt, "missing": len(missing), "submitted": True}


def _still_fits(written: list[str], shard: tuple[str, ...], missing: list[str]) -> bool:
    """Whether an attempt manifest found written (its ``images``) may be kept for the shard as listed now
    (``shard``: every image of its manifest) with ``missing`` still to run: it names only images of the shard, and
    every one still missing.

    Why: a resumed run (a terminated run's request posted again: the same key, listed again) starts its shard groups
    at attempt 1 (``orchestrations.shards``), so its attempt 2 has the blob of the terminated run's attempt 2, which
    that run wrote from its own listing and the relisting leaves in place. Kept as it was, the resumed run's attempt 2
    ran the images the terminated run missed, as the earlier listing cut the shard: images moved to another shard
    since (results no merge of this shard takes), not those added since, nor one replaced since whose earlier result
    the listing dropped (``activities.replaced_images``): an attempt spent on each shard, its images given up sooner
    (tests/integration/test_resumed_attempts.py). A manifest this run's own earlier try wrote always fits: it named
    the images missing then, of the same listing, and results only make fewer missing (an activity may run more than
    once: "each called activity function will be executed at least once", Durable Task's ``TaskActivity``
    reference). One that fits but came from the terminated run runs again at most images done since, whose entries
    its worker keeps (``gpu_batch.worker.results.load_resumable_state``) or runs again: costs GPU time, loses
    nothing. A retried try reads what the fresh path reads (the shard's manifest and coverage) before it decides."""
    names = set(shard)
    return all(n in names for n in written) and set(missing) <= set(written)


def _done_only_there(store: BlobStore, settings: Settings, task_id: str, sid: str, attempt: int,
                     shard: tuple[str, ...], listed: set[str]) -> set[str]:
    """The images of ``shard`` whose only final entry is in the results that attempt ``attempt``'s blob holds
    already, which a manifest written anew for that attempt must name too (its worker keeps them and runs nothing for
    them); ``listed``: the shard's blobs (``shard_blobs``). Empty where no such blob is: every shard but a resumed
    run's.

    Why: a resumed run's attempt numbers start again at 1 (``orchestrations.shards``), so its attempt N writes into
    the results an earlier run's attempt N left, and its worker keeps the entries of its own manifest's images only
    (``gpu_batch.worker.results.load_resumable_state``): its first flush drops the others. The resumed listing carries
    the earlier run's later attempts' final entries into attempt 1 (``activities.carried_results``), but not one
    written after it read them (a late worker of the ended run), nor any where attempt 1's results do not parse or the
    earlier listing recorded no ETags; such an image counts done (``images_to_rerun``), so a manifest of the missing
    images alone (one that no longer fits: ``_still_fits``) lost its only result, and the shard counted it missing
    again, given up when no attempt was left. Costs, only where that blob is, a parse of the shard's results (as
    ``images_to_rerun`` does without summaries, which such a shard seldom has)."""
    own = layout.attempt_results_blob(task_id, sid, attempt)
    if own not in listed:
        return set()
    names = set(shard)
    there = {n for n in mdformat.final_files(shard_attempt_results(store, settings, task_id, sid, {own}))
             if n in names}
    if not there:
        return set()
    return there - mdformat.final_files(shard_attempt_results(store, settings, task_id, sid, listed - {own}))


def _view_basis(store: BlobStore, settings: Settings, task_id: str, sid: str, attempt: int,
                listed: set[str]) -> ViewBasis:
    """What the resubmitted attempt's merge view covers besides its own results: the first manifest (every image of
    the shard) and the results of every earlier attempt that wrote any (``ShardManifest.merge_view_basis``). Without
    it a shard that ran again had no view, and its merge and exports cost ~35 us an image on the Functions host
    (1.44 % of the GPU time at a failure rate of 1 in 2,000; ``bench/RESULTS.md``); the worker does it on the GPU
    node's idle CPUs instead, as it does for a shard's only attempt."""
    earlier = sorted((found, name) for name in listed
                     if (found := layout.attempt_of_results_blob(name)) is not None and found < attempt)
    return ViewBasis(layout.manifest_blob(task_id, sid, 1), tuple(name for _, name in earlier))


def run_resubmit(task_id: str, job: str, shards: Iterable[tuple[str, int]], settings: Settings, store: BlobStore,
                 pool: GpuPool) -> c.ResubmitOutput:
    """Resubmit each shard's missing images as its next attempt: every manifest first, then ONE submission of
    their pool tasks. Idempotent: a retried call keeps the manifests written (``prepare_resubmission``) and the pool
    ignores task ids it already has.

    Why one submission: each shard's own cost a job check and an add-collection of one task (on Azure Batch a
    create-job answered 409 JobExists, then Task - Add Collection): 2 requests a shard, thousands in a
    ten-million-image task whose shards fail now and then. Now a RESUBMIT of n shards (a poll round's, at most its
    group's in-flight share) costs ceil(n / 100) requests (AzureBatchPool sends at most 100 tasks a request, the
    REST limit), and no job check: the job exists, or was deleted outside trapbatch (``_submit_to_existing_job``).
    Nothing else changes: the orchestrator makes the same
    RESUBMIT with the same shards and gets the same answer (replay), and a failure still fails the activity, which
    the orchestration retries or leaves the shards ``owed`` (``orchestrations.shards`` "Outages"). A task the pool
    refuses for itself (``TasksRefused``) no longer stops the shards after it: the pool adds the others, then names
    it."""
    settings = task_settings(settings, store, task_id)  # the time limit its run decided (activities.decided)
    out = [prepare_resubmission(task_id, str(sid), int(attempt), settings, store) for sid, attempt in shards]
    due = [(r["shard_id"], r["attempt"]) for r in out if r["submitted"]]
    if due:
        _submit_to_existing_job(task_id, job, due, settings, pool)
    return {"shards": out}


def run_cancel(job: str, task_ids: list[str], pool: GpuPool) -> c.CancelOutput:
    """Cancel the given pool tasks, or the whole job when none are given."""
    for tid in list[str | None](task_ids) or [None]:
        pool.cancel(job, tid)
    return {"cancelled": True}


def run_close_job(job: str, pool: GpuPool) -> c.CloseJobOutput:
    """End the run's pool job (its unfinished tasks stop). Idempotent: closing a closed or unknown job is fine."""
    pool.close_job(job)
    logger.info("pool job %s closed", job)
    return {"closed": True}


@bp.activity_trigger(input_name="payload", activity=c.SUBMIT)
@failures_without_secrets
def submit_shards(payload: c.SubmitInput) -> c.SubmitOutput:
    s = clients.settings()
    # the time limit the task's run decided (activities.decided); the pool object stays the process's one
    decided = task_settings(s, clients.store(s), payload["task_id"])
    return run_submit(payload["task_id"], payload["job_id"], payload["shards"], decided, clients.store(s),
                      clients.pool(s), create_job=payload.get("create_job", True))


@bp.activity_trigger(input_name="payload", activity=c.POLL)
@failures_without_secrets
def poll_shards(payload: c.PoolTasksInput) -> c.PollOutput:
    s = clients.settings()
    return run_poll(payload["task_id"], payload["job_id"], payload["task_ids"], s, clients.store(s), clients.pool(s),
                    since=payload.get("since"), running=payload.get("running"),
                    unavailable=payload.get("unavailable"))


@bp.activity_trigger(input_name="payload", activity=c.RESUBMIT)
@failures_without_secrets
def resubmit_shards(payload: c.ResubmitInput) -> c.ResubmitOutput:
    s = clients.settings()
    return run_resubmit(payload["task_id"], payload["job_id"], payload["shards"], s, clients.store(s),
                        clients.pool(s))


@bp.activity_trigger(input_name="payload", activity=c.CANCEL)
@failures_without_secrets
def cancel_pool_tasks(payload: c.PoolTasksInput) -> c.CancelOutput:
    s = clients.settings()
    return run_cancel(payload["job_id"], payload.get("task_ids") or [], clients.pool(s))


@bp.activity_trigger(input_name="payload", activity=c.STOP_GROUPS)
@failures_without_secrets
def stop_shard_groups(payload: c.StopGroupsInput) -> c.StopGroupsOutput:
    s = clients.settings()
    return run_stop_groups(payload, s, clients.store(s))


def run_stop_groups(payload: c.StopGroupsInput, settings: Settings, store: BlobStore) -> c.StopGroupsOutput:
    """Write the run's cancel marker, as POST .../cancel does, so the run's other shard groups stop at their next
    poll. Why: the task fails when one group fails, but the Durable extension sends the task's next action (its pool
    job's close) only once every group of its ``task_all`` has ended (devhost README, row 26): without this the others
    went on submitting and resubmitting for hours, the status saying ``detecting``, before the task ended failed.

    A stop (no ``superseded_by``) writes the marker only where none is; the run that replaces this one writes it
    whatever is there, naming itself (``superseded_by``). Why: terminate does not reach the groups, so a group of the
    replaced run may fail after that marker was written, and writing it anew without ``superseded_by`` let that run's
    late calls write again (``activities.superseded``). The groups stop at the marker that is there all the same."""
    marker = {"requested": datetime.now(timezone.utc).isoformat(), "by": "a failing shard group",
              "reason": payload["reason"][:500]}
    name = layout.cancel_marker(payload["job_id"])
    if payload.get("superseded_by") is not None:  # a terminated run's: its late activities write nothing either
        marker.update(by="the run that replaces it", superseded_by=payload["superseded_by"])
        store.write_json(settings.container, name, marker)
    elif not store.create_bytes(settings.container, name, json.dumps(marker, indent=1).encode("utf-8")):
        # A marker there already stops the groups (a cancel, another group's stop, or the run that replaced this one).
        # Written only where none is (first writer wins): a failing group of a replaced run (its CANCEL refused
        # after the new run closed its job) replaced the marker's ``superseded_by`` with its own words, and this
        # run's late calls, which activities.superseded refuses by it, wrote over the new run's again
        logger.info("task %s: the run's cancel marker is there already; kept as it is", payload["task_id"])
        return {"stopped": True}
    logger.info("task %s: the run's shard groups stop at their next poll (asked by %s)", payload["task_id"],
                marker["by"])
    return {"stopped": True}


@bp.activity_trigger(input_name="payload", activity=c.CLOSE_JOB)
@failures_without_secrets
def close_pool_job(payload: c.CloseJobInput) -> c.CloseJobOutput:
    s = clients.settings()
    return run_close_job(payload["job_id"], clients.pool(s))
