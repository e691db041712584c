"""The task orchestrator: enumerate -> shard groups (sub-orchestrations) -> merge -> previews [-> promote].

A re-run (``"rerun": true``) is a new *generation* of the task (``TaskInput["generation"]``, a run id): everything it
writes (listing, manifests, attempt results, merge work, results, exports, previews) goes under its own key,
``gpu_batch.layout.generation_key(task_id, generation)``, which every activity takes in place of the task id, so the
previous generation's files are never touched and stay served. Only when the re-run completes (``completed`` or
``completed_with_errors``) does the ``promote_generation`` activity point the task at the new results; a re-run that is
cancelled, fails, expires or only estimates leaves the previous generation served. With ``"only_new": true`` the
re-run first reuses, per shard, the served generation's results of images whose name and ETag are unchanged
(``activities.reuse``, parallel calls after the enumeration): shards with nothing left to run start done in their
group's input and never reach the pool. Pool jobs, cancel markers, shard
group instance ids and notifications stay the task's (the groups' ids carry the run: ``core.ids.shards_instance_id``).

Deterministic code only. Its input is the normalized request plus a snapshot of the tuning knobs (orchestrators never
read the environment). Progress for people goes to ``custom_status``; the per-shard detail lives in the shard-group
sub-orchestrations, whose ids are derived from the task id so the status API can find them. A status that could pass
the extension's 16 KB (the final, failed or cancelled one, with its notes) goes through ``core.status_size.fit``;
the task's output keeps it whole.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Generator, Sequence, cast

import azure.durable_functions as df

from core import contracts as c
from core import failure_advice, nearby, notimages
from core.contracts import ShardStatus, Stage
from core.cost import node_price, task_cost
from core.errors import failure_line, quoted
from core.estimate import RESIDENT_SHARD_START_S, estimate
from core.expiry import expiry_time
from core.failures import failures_without_secrets
from core.ids import replaced_sweep_instance_id, shards_instance_id
from core.replaced import sweep_label
from core.repeats_status import merge_repeats_ref
from core.requests import TaskRequest
from core.settings import CONFIRM_TIMEOUT_MAX_S, OrchestrationKnobs
from core.shards import group_count_limit, group_shards, in_flight_shares
from core.status_size import fit
from gpu_batch.exit_codes import TASK_ENDED
from gpu_batch.layout import INCOMING_CONTAINER, drop_answer_blob, generation_key, pool_job_id, shard_id
from gpu_batch.manifest import REASON_ACCOUNT_NOT_FOUND, REASON_AUTH
from orchestrations.enumeration import enumerate_in_parallel
from orchestrations.exports import exports as run_exports
from orchestrations.fanin import damaged_status, fan_in
from orchestrations.retries import (POOL_RETRY, STORAGE_RETRY, RetryPolicy, call, call_all, note_actions,
                                   spend_reserve, unrefused)
from orchestrations.shards import UNAVAILABLE_WAIT_S, outage_limit_s, round_events

bp = df.Blueprint()


class NoImagesFound(ValueError):
    """Raised inside the orchestrator so the task ends Failed with a message the user can act on."""


def _where(request: dict[str, Any]) -> str:
    """Where the images were looked for, the prefix as the user wrote it (``quoted``: ``repr`` showed
    ``2024\\site-a`` as ``'2024\\\\site-a'``)."""
    return f"container {quoted(request['container'])}" + (f" under prefix {quoted(request['prefix'])}"
                                                           if request["prefix"] else "")


def _outcome(merged: c.MergeOutput, max_failed_fraction: float) -> tuple[Stage, float]:
    """``completed`` when every image was processed and no more than ``max_failed_fraction`` of them failed; a task
    that could not process some images (given up after every attempt) is never plainly ``completed``."""
    fraction = merged["failed"] / merged["images"] if merged["images"] else 0.0
    ok = merged["missing"] == 0 and fraction <= max_failed_fraction
    return (Stage.completed if ok else Stage.completed_with_errors), round(fraction, 6)


def _repeats_ref(task_id: str, merged: c.MergeOutput) -> c.RepeatsRef:
    """The status's ``repeated_detections`` from the merge (``core.repeats_status.merge_repeats_ref``): how many
    places, where the list is, and, when some folders were too large to search or the search failed, that and what to
    do. Fixed once the task ends: ``GET /api/tasks/{id}`` lays a list a search run again wrote over it
    (``core.repeats_status.current_repeats_ref``)."""
    return cast(c.RepeatsRef, merge_repeats_ref(task_id, merged))


def exports_hint(task_id: str) -> str:
    """What to do when a task's exports failed (its ``results.exports_hint``, beside ``exports_error``): no route
    builds only the exports again, but an ``only_new`` re-run reuses every result of the served generation (no image
    whose name and ETag are unchanged runs again) and writes a new generation's exports. Said in the status itself, so
    the API's answer and the notification carry it, not only the CLI (which said it alone; it words the field as its
    flag, ``cli.hints``)."""
    return ("the results JSON and CSV are complete; the COCO, Camtrap DP and Zooniverse exports were not written. "
            f"Write them again: post the same request with \"only_new\": true, a re-run of task {task_id} that "
            f"reuses every result and runs only new or changed images")


def _final_status(started: str, finished: str, enumeration: c.EnumerateOutput, outcomes: list[c.ShardsOutcome],
                  merged: c.MergeOutput, previews: c.PreviewsOutput, max_failed_fraction: float,
                  job_id: str, task_id: str) -> c.TaskStatus:
    stage, fraction = _outcome(merged, max_failed_fraction)
    return {
        "stage": stage, "failed_fraction": fraction, "max_failed_fraction": max_failed_fraction,
        "failure_reasons": merged.get("failure_reasons", {}),
        **({"failures_hint": failure_advice.failures_hint(merged.get("failure_reasons", {}), merged["failed"],
                                                          merged["images"])} if merged["failed"] else {}),
        "started": started, "finished": finished,
        "images": merged["images"], "failed": merged["failed"], "missing": merged["missing"],
        "with_detections": merged["with_detections"], "detections": merged["detections"], "empty": merged["empty"],
        "shards": enumeration["shards"],
        "resubmissions": sum(o.get("resubmissions", 0) for o in outcomes),
        "results": {"container": merged["container"], "blob": merged["results_blob"],
                    "csv": merged.get("csv_blob", "")},
        "repeated_detections": _repeats_ref(task_id, merged),
        "previews": previews,
        "pool_job": job_id,
    }


# The verb a failed task's message asks the request to be posted again with: "only_new" for an only_new re-run, which
# then reuses the served generation's results again ("rerun" alone would send every image to the pool); for a
# completed task's given-up shards, "only_new" with what it does (``_shards_given_up``)
RERUN = '"rerun": true'
ONLY_NEW = '"only_new": true (reusing the served results)'
ONLY_NEW_KEEPS = '"only_new": true (their images run again, with any new or changed ones; every other result is kept)'


def _shards_given_up(outcomes: list[c.ShardsOutcome], again: str = RERUN) -> dict[str, Any] | None:
    """The status's ``shards_given_up``: how many shards failed every attempt, how the first few ended (the worker's
    exit code and words, or the pool's), and what to do; None when none was. Why: their images are only counted as
    "not_processed", which says nothing of the cause (a crash, a kill for memory, the pool's time limit).

    ``again``: what to post the request with once the cause is fixed: ``ONLY_NEW_KEEPS`` for a task with results
    (their "not_processed" images are retryable, so an only_new re-run runs them and keeps every other result; "rerun"
    sent every image of the task to the pool again, ten million for some, for a few given-up shards)."""
    count = sum(o.get("given_up", 0) for o in outcomes)
    if not count:
        return None
    examples = [e for o in outcomes for e in o.get("given_up_examples", [])][: c.GIVEN_UP_EXAMPLES]
    if any(e.get("failure_code") == TASK_ENDED for e in examples):
        hint = ("the pool stopped them at their time limit: raise TRAPBATCH_MAX_TASK_SECONDS, then post the request "
                f"again with {again} (a smaller images_per_shard makes it another task, whose every image runs)")
    elif any(e.get("by") == "pool" for e in examples):
        hint = ("the pool could not run the worker: fix what it names (the pool's image, registry access, the node "
                f"start task), then post the request again with {again}")
    elif any(e.get("failure_reasons") for e in examples):  # the worker ran, and its images failed as retryable
        hint = retryable_hint({r for e in examples for r in e.get("failure_reasons", {})}, again)
    else:
        hint = ("the worker failed every attempt: its log (the pool task's stderr) says why; an exit 137 is a kill, "
                "most often for memory (a smaller --batch-size in TRAPBATCH_WORKER_TUNING, or a larger VM); fix it, "
                f"then post the request again with {again}")
    return {"count": count, "examples": examples, "hint": hint}


def retryable_hint(reasons: set[str], again: str = RERUN) -> str:
    """What to do about shards given up because their images failed as retryable on every attempt (``reasons``:
    ``gpu_batch.manifest`` failure reasons; the worker exited 0). Why apart from the crash hint: such a worker did not
    fail, the images' storage did (refused, busy, gone) or the network's batch did, and "its log says why; an exit 137
    is a kill" sent a person to the wrong place. ``again``: the verb of the status it is in, as for every other
    cause (``_shards_given_up``): a failed first run's error asks for "rerun" (it has no results to keep), so this
    hint, beside it, said "only_new" "to keep every other result" where there was none."""
    if REASON_AUTH in reasons:
        return f"{failure_advice.AUTH_ADVICE}; then post the request again with {again}"
    if REASON_ACCOUNT_NOT_FOUND in reasons:
        return (f"account_not_found, {failure_advice.ACCOUNT_NOT_FOUND_ADVICE}; then post the request again with "
                f"{again}")
    return (f"every attempt's reads or detections of them failed ({', '.join(sorted(reasons))}: storage busy, out of "
            "reach or timing out, or the GPU's batch failing; the pool task's stderr names each image); when that has "
            f"passed, post the request again with {again}")



class NothingProcessed(RuntimeError):
    """No image of the task was processed and every shard was given up: the task fails with the first reason."""


class PoolNeverRan(NothingProcessed):
    """No image of the task was processed, and the pool, not a worker's exit, ended the shards' attempts."""


def _pool_processed(outcomes: list[c.ShardsOutcome], earlier: Sequence[int] = ()) -> int:
    """Images a pool attempt of this run gave a final result (a success or a permanent failure: ``images_done``,
    which counts the failed too), not those an ``only_new`` re-run reused from the served generation
    (``images_reused``) nor a resumed run's final already at its listing (``earlier``, by group in ``outcomes``'
    order: ``_group_earlier``). Why: reused images are counted done from the start, so an ``only_new`` re-run whose
    pool never ran a worker counted as having processed images; it merged every new or changed image as
    "not_processed", ended ``completed_with_errors`` and was promoted over the served generation, where a first run
    fails with the pool's reason.

    A group that counted them shard by shard (``images_ran``, ``orchestrations.shards._images_ran``: each shard's
    coverage past what it started with, never below 0) is taken at its word. Why: the poll's coverage, over every
    attempt, can shrink below the listing's count (an earlier attempt's results blob deleted or torn between the
    listing and the poll); one sum less the earlier images then reached 0 though this run's pool processed images in
    other shards, and the task failed as "no image was processed". Replay: ``images_ran`` comes only from groups that
    ran this code and started with reused or earlier images; any other group counts as before (its ``images_done``
    less its ``images_reused`` and its ``earlier``), so a history whose groups ended under an earlier release sums
    what it summed then (the same sum, less the same ``earlier``), and decides as it did."""
    return sum(o["images_ran"] if "images_ran" in o else
               o.get("images_done", 0) - o.get("images_reused", 0) - (earlier[g] if g < len(earlier) else 0)
               for g, o in enumerate(outcomes))


def _group_earlier(groups: list[list[int]], finished: dict[int, tuple[int, int]],
                   partly: dict[int, int]) -> list[int]:
    """A resumed run's images final already at its listing, by shard group (``_finished_shards``'s covered, and
    ``_partly_covered``'s): what ``_pool_processed`` leaves out of a group that returns no ``images_ran``."""
    return [sum(finished[i][0] if i in finished else partly.get(i, 0) for i in group) for group in groups]


def _fail_if_the_pool_never_ran(outcomes: list[c.ShardsOutcome], images: int, pool_shards: int,
                                again: str = RERUN, earlier: Sequence[int] = ()) -> None:
    """Fail the task, with the pool's own reason, when not one image was processed and shards gave up because the
    pool ended their attempts, not the worker (``gpu_batch.exit_codes.pool_ended``). Azure Batch: a container image it
    cannot pull or a task that cannot start (``failureInfo``, no exit code); its time limit (``failureInfo.code``
    TaskEnded, with an exit code of the operating system's, 0xC000013A in batch-job-task-error-checking.md
    "Constraint errors"). Why: the fan-in would otherwise mark every image "inference failure" and the task would end
    ``completed_with_errors``, a failure hidden behind a file of failures. Processed: by a pool attempt of this run,
    counted shard by shard (``_pool_processed``); ``pool_shards``: the shards sent to the pool (an ``only_new``
    re-run's shards whose every image was reused are not: they are done from the start); ``again``: the verb of the
    request to post again (``ONLY_NEW`` for such a re-run: ``"rerun"`` alone would detect every reused image
    again). ``earlier``, by group (``_group_earlier``): a resumed run's images in shards that started done
    (``_finished_shards``), and those final already in the shards it sent to the pool (``_partly_covered``: the
    poll's coverage counts them), in ``images_done`` though no pool task of this run ran them; counted as processed,
    they kept a resumed run whose pool ran nothing from this failure (its other images merged as failures,
    ``completed_with_errors``)."""
    shards = sum(o.get("pool_error_shards", 0) for o in outcomes)
    if _pool_processed(outcomes, earlier) > 0 or not images or any(o.get("cancelled") for o in outcomes):
        return
    if not shards:
        _fail_if_every_worker_failed(outcomes, pool_shards, again)
        return
    reason = next(o["pool_error"] for o in outcomes if o.get("pool_error"))
    # named before the pool's words, so that a long quote cut at the status's 500 characters leaves it; a pool job
    # left open is not added here but after that cut (task_orchestrator: ended["job_error"]), so its command stays
    how = ("TaskEnded: it stopped them at their time limit, TRAPBATCH_MAX_TASK_SECONDS, unless they were terminated"
           if reason.startswith(TASK_ENDED) else "it could not start the worker, or stopped it")
    raise PoolNeverRan(f"no image was processed: the pool itself ended every attempt of {shards} shard(s) ({how}). "
                       "Fix what it names (the pool's image, registry access, the node start task, the time limit), "
                       f"then post the request again with {again}. The pool said: {reason[:200]}")


def _fail_if_every_worker_failed(outcomes: list[c.ShardsOutcome], pool_shards: int, again: str = RERUN) -> None:
    """Not one image processed, every shard given up, the pool ended none of them: the workers failed every attempt
    (a crash, a kill for memory, results that could not be written). Fail the task with the first worker's exit code
    and words, instead of ``completed_with_errors`` over a file of "not_processed" failures.

    Replay: this raises where a task of before went on to merge. Only outcomes that carry ``given_up_examples`` count,
    and only a shard group running this code returns them; the decision is taken once every group's result is in the
    task's history, so a history whose groups ended under an earlier release has none and merges as it did. (The
    recorded histories, scripts/record_histories.py, could not reach it either: their crashed shard is resubmitted and
    succeeds, so images were processed.)"""
    given_up = sum(o.get("given_up", 0) for o in outcomes)
    shards = pool_shards  # those sent to the pool (of a task without reuse, every shard of the groups)
    if not given_up or given_up != shards or any(o.get("given_up") and "given_up_examples" not in o for o in outcomes):
        return
    # a group that gave none up (one an only_new re-run reused whole, a resumed run's started done) names none
    first = next(e for o in outcomes for e in o.get("given_up_examples", []))
    raise NothingProcessed(f"no image was processed: every attempt of {given_up} shard(s) failed; {first['reason']} "
                           f"(shard {first['shard']}, attempt {first['attempts']}). Fix what it names, then post the "
                           f"request again with {again}")


def _first_line(exc: BaseException, limit: int = 500) -> str:
    """What a person sees of a failure in the status (``core.errors.failure_line``)."""
    return failure_line(exc, limit)


# How an operator ends a pool job the task could not close. The Batch account takes Entra ID only: azure-cli's batch
# data-plane commands need 'az batch account login' (aad mode) first, else they stop at "Specify batch account..."
# or fetch the shared key the account refuses (azure-cli batch/_validators.py validate_client_parameters; README,
# docs/deploy.md "Pool jobs by hand"). It reaches the status, the output and the notify/publish activities' inputs;
# replay compares actions' kinds and names, never inputs (DTFx; devhost/history.py), so a change of it replays.
_END_JOB_BY_HAND = ("sign in with 'az batch account login -n <account> -g <group>', then end it with "
                    "'az batch job stop --job-id {job}' (docs/deploy.md \"Pool jobs by hand\")")


def _job_left_open(job_id: str, exc: BaseException) -> str:
    """``pool_job_error``: the job its work has ended in could not be closed. The command that ends it comes before
    the close's words, within 400 characters for a job id of Batch's 64 (gpu_batch.layout ``pool_job_id``). Why: a
    status over its budget cuts this text to 400 characters (core.status_size, ``_NOTES`` and ``_FLOORS``), which
    with those words (up to 200) first left "sign in with 'az batch accoun…" and no command."""
    return (f"the pool job {job_id} could not be closed: its tasks have ended, but it counts against the account's "
            f"active jobs until ended: {_END_JOB_BY_HAND.format(job=job_id)}. Closing it failed with: "
            f"{_first_line(exc, 200)}")


class TerminatedRunGoesOn(RuntimeError):
    """The pool job of the task's terminated run (or of one the platform failed while its work ran) could not be
    ended: this run does not start beside it."""


def _end_terminated_run(context: df.DurableOrchestrationContext, task_id: str, ended_run: str,
                        run: str) -> Generator[Any, Any, None]:
    """Stop the pool work of the task's run that was terminated (``TaskInput.ends_run``) before this run starts its own.

    Why: terminating an orchestration ends it alone. "Terminating an orchestration instance has no effect on any
    in-flight activity function executions or sub-orchestrations that were started by the terminated orchestration"
    (Durable Functions, ``IDurableOrchestrationClient.TerminateAsync``, learn.microsoft.com); devhost's terminate does
    not cascade either (devhost/engine.py). So that run's shard groups went on submitting, polling and resubmitting
    into its pool job, whose tasks ran on, billed, beside this run's (the same shards, the same attempts' results
    blobs), and nothing ever closed the job: the run that would close it was gone, and the job counted against the
    Batch account's active jobs for good. First that run's cancel marker (STOP_GROUPS, as a failing group writes it):
    each of its groups cancels its own tasks at its next poll and ends without resubmitting anything; then its job is
    closed (its unfinished tasks end; a closed or unknown job is fine). A failure after the retries fails this run
    with the command that ends the job by hand: it does not run beside work it could not stop, and posting the request
    again tries again (``api.starters`` carries ``ends_run`` from a run that failed).

    A run the platform failed while its work ran is ended so too (``api.starters._ended_runs``: a Failed run whose
    status is not the ``failed`` its own failure handling sets): the Durable Task Framework fails a replay that breaks
    determinism at once, its shard groups, activities and pool tasks running on as after a terminate."""
    job = pool_job_id(task_id, ended_run)
    try:
        yield from call(context, c.STOP_GROUPS, STORAGE_RETRY, c.StopGroupsInput(
            task_id=task_id, job_id=job, superseded_by=run,
            reason=f"the run was terminated (or failed with its work running); run {run or '?'} of the task replaces it"
        ))  # its late merge and publishing calls write nothing either (activities.superseded)
        yield from _close_job(context, task_id, job)
    except Exception as exc:  # noqa: BLE001 - said with what to do; the original failure is in the words
        raise TerminatedRunGoesOn(
            f"the pool job {job} of this task's terminated (or failed) run could not be ended, and its shard work may "
            f"still run: {_END_JOB_BY_HAND.format(job=job)}, then post the request again. Ending it failed with: "
            f"{_first_line(exc, 200)}") from None


def _close_job(context: df.DurableOrchestrationContext, task_id: str, job_id: str) -> Generator[Any, Any, None]:
    """End the run's pool job: unfinished tasks stop and the job no longer counts against the account's active jobs
    (100-300 per Batch account). Best effort when the task is failing anyway: the original failure is what counts."""
    yield from call(context, c.CLOSE_JOB, POOL_RETRY, c.CloseJobInput(task_id=task_id, job_id=job_id))


@bp.orchestration_trigger(context_name="context", orchestration=c.TASK_ORCHESTRATOR)
@failures_without_secrets
def task_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.TaskStatus]:
    """Run the task; whatever ends it (completion, cancel, any failure) also ends its pool job, and a failure leaves
    stage ``failed`` with the reason in the status (not the last stage it reached)."""
    data: c.TaskInput = context.get_input()
    task_id = data["task_id"]
    job_id = pool_job_id(task_id, data.get("run", ""))
    started = context.current_utc_datetime.isoformat()
    pool_used = [False]
    ended: dict[str, Any] = {}  # the pool work's outcomes once every shard group returned (_run_task)
    try:
        summary = yield from _run_task(context, data, job_id, started, pool_used, ended)
    except Exception as exc:
        # the failure path's calls are never refused for the action budget (retries.ActionLedger): bounded by
        # orchestrations.actions.task_end_actions, inside the room the budget leaves below the extension's limit
        spend_reserve(context)
        error = _first_line(exc)
        if ended.get("job_error"):  # closed after the pool work, and that failed (_run_task): said after the cut.
            # Why: inside the failure (up to ~460 characters of the pool's or the worker's words when no image was
            # processed) the 500-character cut dropped the command that ends the job; the close's own words are in
            # pool_job_error, as in a completed or cancelled task's status (status text only: replay is unchanged)
            error = error.rstrip() + (f" (the pool job {job_id} could not be closed, pool_job_error says why: "
                                      f"{_END_JOB_BY_HAND.format(job=job_id)})")
        if pool_used[0]:
            try:
                yield from _close_job(context, task_id, job_id)
            except Exception:  # noqa: BLE001 - keep the original failure, and say the job is still open
                # no later run closes it (each run has a job of its own): an open job counts against the account's
                # active jobs and its running tasks hold their nodes until their wall-clock limit
                error = error.rstrip() + (f" (the pool job {job_id} {c.JOB_MAY_STILL_RUN}: "
                                          f"{_END_JOB_BY_HAND.format(job=job_id)})")
        failed = c.TaskStatus(stage=Stage.failed, started=started, error=error,
                              finished=context.current_utc_datetime.isoformat())
        if pool_used[0] or ended:  # shard groups ran (their first submit creates the job, activities.pool): name it.
            # A task that failed before (listing, too many shards) has no job; naming one sent people looking for it
            failed["pool_job"] = job_id
        if ended:  # it failed after the pool work: what that work did and cost (status only, no action)
            _add_pool_work(failed, ended["work"], ended["outcomes"], OrchestrationKnobs.from_dict(data["knobs"]),
                           ended.get("reused"), ended.get("earlier", 0), ended.get("earlier_groups", ()))
        if ended.get("job_error"):
            failed["pool_job_error"] = ended["job_error"]
        context.set_custom_status(fit(failed))
        yield from _tell(context, data, failed)
        raise
    spend_reserve(context)  # word of the end goes out whatever the task's steps scheduled (retries.ActionLedger)
    yield from _tell(context, data, summary)
    return {"task_id": task_id, **summary}


def _run_job(data: c.TaskInput) -> str:
    """The run's pool job that its calls carry as ``run_job`` (activities.superseded), "" for a run without an id
    (started before runs had ids: replaced too, its job being the task id, yet its calls' inputs stay those of before;
    only its listing summary checks, by ``cancel_job``: activities.enumerate.summary_run_job)."""
    return pool_job_id(data["task_id"], data["run"]) if data.get("run") else ""


def _tell(context: df.DurableOrchestrationContext, data: c.TaskInput,
          status: c.TaskStatus) -> Generator[Any, Any, None]:
    """Word that the task ended: the done file beside a dropped request, the request's ``notify_url``, and the Event
    Grid event where a topic is configured. Each is best effort: none changes how the task ended. Whether the
    ``notify_url`` was told, and whether the event was published, is then added to the status (``notification``,
    ``task_event``), so word that never arrived is seen in ``GET /api/tasks/{id}``, not only in the app's log.

    Each call carries the run's pool job (``run_job``): a run terminated while it told of its end (a receiver that is
    down keeps it there for up to ~15 minutes of retries; terminate leaves the call in flight or queued to run) and
    replaced by a later run of the task has that late call refused (activities.superseded), not delivered as if it were
    the current run's word.
    The notification and the event also name the run, so a receiver can tell runs apart.

    The done files of the requests dropped while it ran that joined it (``_answer_joined_drops``) come right after its
    own drop's, before the notification's retries can hold the run for minutes."""
    unwritten = yield from _drop_answer(context, data, "done", status)
    unjoined = yield from _answer_joined_drops(context, data, status)
    told = yield from _notify(context, data, status)
    published = yield from _publish_event(context, data, status)
    if unwritten is not None:  # someone waiting for <name>.done.json learns here that it will not come
        status["drop_answer"] = unwritten
    if unjoined is not None:  # ... and those waiting beside the requests that joined it
        status["joined_drops"] = unjoined
    if told is not None:
        status["notification"] = told
    if published is not None:
        status["task_event"] = published
    if unwritten is not None or unjoined is not None or told is not None or published is not None:
        context.set_custom_status(fit(status))


def _drop_answer(context: df.DurableOrchestrationContext, data: c.TaskInput, kind: str,
                 status: c.TaskStatus) -> Generator[Any, Any, dict[str, Any] | None]:
    """``incoming/<name>.<kind>.json`` beside the dropped request that started the task, if one did. Best effort: the
    task's outcome stands whether or not its answer file could be written. Returns ``{"written": False, "file",
    "reason", "hint"}`` when every attempt failed (the status then says so: the file someone waits for will not come,
    and where to read the same instead), else None. (Status content only: the actions are the same whatever it
    returns.)"""
    drop = data.get("drop")
    if not drop:
        return None
    asked = c.DropAnswerInput(task_id=data["task_id"], drop=drop, kind=kind, status=dict(status))
    if _run_job(data):  # a replaced run's late file is not written over the replacing run's (activities.superseded)
        asked["run_job"] = _run_job(data)
    try:
        yield from call(context, c.DROP_ANSWER, STORAGE_RETRY, asked)
    except Exception as exc:  # noqa: BLE001 - every attempt failed; the activity logged why
        return {"written": False, "file": f"{INCOMING_CONTAINER}/{drop_answer_blob(drop, kind)}",
                "reason": failure_line(exc, 300), "hint": drop_answer_hint(data["task_id"])}
    return None


def _answer_joined_drops(context: df.DurableOrchestrationContext, data: c.TaskInput,
                         status: c.TaskStatus) -> Generator[Any, Any, dict[str, Any] | None]:
    """Write this run's ended marker with its final status, then ``incoming/<name>.done.json`` beside each request
    dropped while it ran that found it started by another request (another drop or an HTTP post) and registered as
    joining it (adapters.joined_drops: the order, and the joining drop's, leave none unanswered). Each holds what the
    run writes beside its own drop (``status`` as it is before ``_tell`` adds what became of its word).

    Only in a run whose input says its starter knows of this (``answers_joined``) and that has a run id (the
    registry is the run's): a run started by an earlier release would meet, replayed past this point, an activity its
    history does not have, and the drops that join it are told what they were told before. Best effort, as the own
    drop's file: returns ``{"written": False, "reason", "hint"}`` when every attempt failed (said in the status as
    ``joined_drops``), else None (status content only: the actions are the same whatever it returns)."""
    run = str(data.get("run") or "")
    if not data.get("answers_joined") or not run:
        return None
    asked = c.JoinedDropsInput(task_id=data["task_id"], run=run, status=dict(status), run_job=_run_job(data))
    ended = [r for r in [*data.get("ends_earlier", []), data.get("ends_run", "")] if r and r != run]
    if ended:  # the requests that joined the runs this one ended and resumed: theirs wrote no done file
        asked["ended_runs"] = ended
    try:
        yield from call(context, c.ANSWER_JOINED_DROPS, STORAGE_RETRY, asked)
    except Exception as exc:  # noqa: BLE001 - every attempt failed; the activity logged why
        return {"written": False, "reason": failure_line(exc, 300), "hint": joined_drops_hint(data["task_id"])}
    return None


def joined_drops_hint(task_id: str) -> str:
    """What to do when the done files of the requests that joined the task could not all be written (the status's
    ``joined_drops.hint``): as for the own drop's (``drop_answer_hint``)."""
    return (f"the task's outcome stands, but the done files beside the requests dropped while it ran may not come: "
            f"read the same status with GET /api/tasks/{task_id} instead. If storage refused the write, the app's "
            "identity (id-api-*) needs Storage Blob Data Owner on trapbatch's storage account (infra/ grants it)")


def drop_answer_hint(task_id: str) -> str:
    """What to do when a dropped request's answer file could not be written (the status's ``drop_answer.hint``):
    nothing writes it again, so whoever waits for it reads the same status from the API; and the app's write access
    to ``incoming`` is what the next drops need (a refusal is the usual cause, ``adapters.storage_errors``)."""
    return (f"the task's outcome stands, but that file will not come: read the same status with GET "
            f"/api/tasks/{task_id} instead. If storage refused the write, the app's identity (id-api-*) needs "
            "Storage Blob Data Owner on trapbatch's storage account (infra/ grants it) for the next drops' answers")


def _confirmed(context: df.DurableOrchestrationContext, data: c.TaskInput, started: str,
               enumeration: c.EnumerateOutput, knobs: OrchestrationKnobs) -> Generator[Any, Any, c.TaskStatus | None]:
    """Above ``TRAPBATCH_CONFIRM_ABOVE_IMAGES`` the task waits, with its estimate in the status (and beside a dropped
    request), for POST /api/tasks/{id}/confirm: nothing reaches the pool before a person said yes. None when confirmed
    (or not needed); the ``expired`` status when the wait timed out, ``cancelled`` when POST .../cancel came first."""
    if not knobs.confirm_above_images or enumeration["images"] <= knobs.confirm_above_images:
        return None
    waiting = c.TaskStatus(stage=Stage.awaiting_confirmation, started=started, images=enumeration["images"],
                           shards=enumeration["shards"], estimate=_estimate(enumeration, knobs))
    if enumeration.get("not_images"):  # what the listing passed over, before a person says yes
        waiting["not_images"] = enumeration["not_images"]
    context.set_custom_status(waiting)
    unwritten = yield from _drop_answer(context, data, "estimate", waiting)
    if unwritten is not None:  # someone waits for the estimate file to confirm: say it will not come (status only)
        waiting["drop_answer"] = unwritten
        context.set_custom_status(waiting)
    # at most one timer step (six days): a longer timer becomes the SDK's LongTimerTask on newer extensions, whose
    # cancel() leaves its timer open, so the task would stay Running past a confirmation (core.settings)
    wait_s = min(knobs.confirm_timeout_s, CONFIRM_TIMEOUT_MAX_S)
    deadline = context.current_utc_datetime + timedelta(seconds=wait_s)
    # waited for once per execution: the SDK hands an event raised before any wait to EVERY later wait of its name
    # (azure-functions-durable-python#507; devhost README, row 31), so a second wait here would see a stale one.
    # Each under this run's own names too, which the API raises (core.contracts.run_event): an event it raised for
    # the run this one replaced (read before the replace, raised after) bears that run's names, which nothing here
    # waits for, so it confirms or cancels nothing. The plain names stay for the events an earlier release raised. A
    # wait takes no sequence number (its id is its name): the timer's is as before, and recorded histories replay.
    # A run without an id waits for its own names too (``<event>-without-id``), which the API raises for it: the
    # plain names, which a run with an id that replaced it waits for as well, would confirm or cancel that run.
    own = str(data.get("run") or "")
    confirms = [context.wait_for_external_event(c.CONFIRM_EVENT),
                context.wait_for_external_event(c.run_event(c.CONFIRM_EVENT, own))]
    cancels = [context.wait_for_external_event(c.CANCEL_EVENT),
               context.wait_for_external_event(c.run_event(c.CANCEL_EVENT, own))]
    note_actions(context, 1, "the confirmation's timer")  # one timer: six days at most, the extension's one piece
    timer = context.create_timer(deadline)
    winner = yield context.task_any([*confirms, *cancels, timer])
    if winner in confirms:
        timer.cancel()
        return None
    if winner in cancels:
        timer.cancel()
        cancelled = c.TaskStatus(stage=Stage.cancelled, started=started, images=enumeration["images"],
                                 finished=context.current_utc_datetime.isoformat())
        context.set_custom_status(cancelled)
        return cancelled
    expired = c.TaskStatus(stage=Stage.expired, started=started, images=enumeration["images"],
                           shards=enumeration["shards"], estimate=_estimate(enumeration, knobs),
                           finished=context.current_utc_datetime.isoformat(),
                           error=f"not confirmed within {wait_s} s: nothing was run; post the "
                                 "request again with \"rerun\": true to start over")
    context.set_custom_status(expired)
    return expired


def _estimate(enumeration: c.EnumerateOutput, knobs: OrchestrationKnobs) -> dict[str, Any]:
    price = node_price(knobs.pool_vm_size, knobs.node_price_per_hour).usd_per_hour  # the override, else list price
    return estimate(enumeration["images"], enumeration["shards"], knobs.images_per_shard, knobs.worker_images_per_s,
                    knobs.pool_nodes, price or 0.0,
                    warm_shard_start_s=RESIDENT_SHARD_START_S if knobs.worker_resident else None)


def _cost(work: c.EnumerateOutput, outcomes: list[c.ShardsOutcome], knobs: OrchestrationKnobs,
          images: int | None = None) -> dict[str, Any]:
    """What the pool work cost (core/cost.py): the images sent to the pool (``images`` instead where the work was cut
    short), the node time the shard groups summed from their attempts' pool tasks, at the override or the pool's list
    price."""
    return task_cost(images=work["images"] if images is None else images,
                     node_seconds=sum(float(o.get("node_seconds", 0.0)) for o in outcomes),
                     attempts=sum(o.get("attempts_ended", 0) for o in outcomes),
                     attempts_timed=sum(o.get("attempts_timed", 0) for o in outcomes),
                     vm_size=knobs.pool_vm_size, override_per_hour=knobs.node_price_per_hour)


# A receiver that is down gets the notification again after 30 s, 1, 2, 4 and 8 minutes (durable timers). The Event
# Grid event is retried the same way: long enough for a role assignment made at deployment to reach the topic.
NOTIFY_RETRY = RetryPolicy(attempts=6, first_delay_s=30.0, backoff=2.0)


def _notify(context: df.DurableOrchestrationContext, data: c.TaskInput,
            status: c.TaskStatus) -> Generator[Any, Any, c.NotifyOutput | None]:
    """One signed POST of the final status to the request's ``notify_url`` (core/notify.py), or to the address in
    the secret its ``notify_url_secret`` names, if it names one: what became of it (None: neither). Only the secret's
    name is passed: the activity reads the address, so it is in no input, output or history. A receiver that stays
    down does not change how the task ended. A request recorded before ``notify_url_secret`` existed has none: its
    activity input is what it always was."""
    url = data["request"].get("notify_url")
    url_secret = data["request"].get("notify_url_secret")
    if not url and not url_secret:
        return None
    payload = c.NotifyInput(task_id=data["task_id"], url=str(url or ""), status=dict(status))
    if url_secret:
        payload["url_secret"] = str(url_secret)
    if data.get("run"):  # the body names the run; a replaced run's late call is not sent (activities.superseded)
        payload["run"] = data["run"]
        payload["run_job"] = _run_job(data)
    try:
        told: c.NotifyOutput = yield from call(context, c.NOTIFY, NOTIFY_RETRY, payload)
    except Exception as exc:  # noqa: BLE001 - every attempt failed; the activity logged why
        return c.NotifyOutput(sent=False, status_code=0, reason=f"{_first_line(exc)} (after "
                                                                  f"{NOTIFY_RETRY.attempts} attempts)")
    return told


def _publish_event(context: df.DurableOrchestrationContext, data: c.TaskInput,
                   status: c.TaskStatus) -> Generator[Any, Any, c.PublishEventOutput | None]:
    """One CloudEvents event of the final status on the Event Grid custom topic (core/task_events.py), where
    ``TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT`` was set when the task started (the knob snapshots it). A topic that stays
    unreachable does not change how the task ended."""
    if not OrchestrationKnobs.from_dict(data["knobs"]).task_events:
        return None
    asked = c.PublishEventInput(task_id=data["task_id"], run=data.get("run", ""), status=dict(status))
    if _run_job(data):  # a replaced run's late event is not published (activities.superseded)
        asked["run_job"] = _run_job(data)
    try:
        published: c.PublishEventOutput = yield from call(context, c.PUBLISH_EVENT, NOTIFY_RETRY, asked)
    except Exception as exc:  # noqa: BLE001 - every attempt failed; the activity logged why
        return c.PublishEventOutput(sent=False, status_code=0, reason=f"{_first_line(exc)} (after "
                                                                       f"{NOTIFY_RETRY.attempts} attempts)")
    return published


def _add_pool_work(status: c.TaskStatus, work: c.EnumerateOutput, outcomes: list[c.ShardsOutcome],
                   knobs: OrchestrationKnobs, reused: int | None = None, earlier: int = 0,
                   earlier_groups: Sequence[int] = ()) -> None:
    """A cancelled or failed task's status after its pool work: the images that got a final result, the failed
    ones, the shards given up and why, and the cost. Why: the node time was spent (and billed) whatever the ending,
    and without it such a status said nothing of what ran.

    ``reused``: an ``only_new`` re-run's reused images (None: no reuse step). Said (``reused``: of ``images_done``,
    those no pool attempt ran, beside an error that may say no image was processed), and its given-up shards' hint
    asks for ``ONLY_NEW`` as its error does (``_fail_if_the_pool_never_ran``): "rerun" beside it sent every reused
    image to the pool again, two pieces of advice in one status. Status text only: the actions are the same.
    ``earlier``: a resumed run's images in shards that started done (``_finished_shards``) or final already in those
    sent to the pool (``_partly_covered``), said (they stay in ``images_done``: they have their results);
    ``earlier_groups``: the same by group (``_group_earlier``), left out of the cost's images shard by shard as the
    nothing-processed failure leaves them out (``_pool_processed``), as no pool task of this run ran them."""
    status["images_done"] = sum(o.get("images_done", 0) for o in outcomes)
    status["failed"] = sum(o.get("images_failed", 0) for o in outcomes)
    if reused is not None:
        status["reused"] = reused
    given_up = _shards_given_up(outcomes, RERUN if reused is None else ONLY_NEW)
    if given_up is not None:
        status["shards_given_up"] = given_up
    # The images that got a result, not all those sent: the node time is that of the attempts that ran, so a task
    # cancelled after 80 of 280 images priced its rate as 280 images' (17.7 images per node-second where 5 ran).
    if earlier:
        status["earlier"] = earlier
    status["cost"] = _cost(work, outcomes, knobs, images=max(0, _pool_processed(outcomes, earlier_groups)))


def _run_task(context: df.DurableOrchestrationContext, data: c.TaskInput, job_id: str, started: str,
              pool_used: list[bool], ended: dict[str, Any]) -> Generator[Any, Any, c.TaskStatus]:
    task_id = data["task_id"]
    generation = data.get("generation", "")
    key = generation_key(task_id, generation)  # where this generation's state and results go (the task id at first)
    request = data["request"]
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    context.set_custom_status(c.TaskStatus(stage=Stage.enumerating, started=started))
    if "ends_run" in data:  # a run of this task was terminated: its pool work still goes on (only then: replay)
        # first those an earlier run was to end and may not have (``ends_earlier``, absent in inputs of before)
        for ended_run in [*data.get("ends_earlier", []), data["ends_run"]]:
            yield from _end_terminated_run(context, task_id, ended_run, data.get("run", ""))
    # a run with an id names its job in the calls that write the task's state and results: terminated and replaced,
    # its late calls write nothing (activities.superseded); a run without one (started before runs had ids) is replaced
    # too (its job is the task id), yet its calls' inputs stay those of before: only its listing summary checks
    # (``cancel_job``, activities.enumerate.summary_run_job)
    run_job = job_id if data.get("run") else ""

    enumeration: c.EnumerateOutput = yield from enumerate_in_parallel(context, key, request, job_id,
                                                                      knobs.max_shards, run_job=run_job)
    passed_over = enumeration.get("not_images")  # files listed that are not images (core.notimages), said everywhere
    if enumeration.get("cancelled"):  # POST .../cancel while the images were listed: nothing reaches the pool
        cancelled = c.TaskStatus(stage=Stage.cancelled, started=started, images=enumeration["images"],
                                 finished=context.current_utc_datetime.isoformat())
        context.set_custom_status(cancelled)
        return cancelled

    def noted(status: c.TaskStatus) -> c.TaskStatus:
        if passed_over:
            status["not_images"] = passed_over
        return status

    if enumeration["images"] == 0:
        if request.get("image_list"):
            listed = quoted(request["image_list"])
            raise NoImagesFound(f"none of the images of list {listed} exist in {_where(request)}; "
                                "the list's paths are blob names in the container, relative to the prefix, with '/' "
                                "between folders (not a Windows path such as site-a\\IMG_0001.JPG or D:\\...)")
        others = f"; {notimages.describe(passed_over)}" if passed_over else ""
        near = enumeration.get("nearby")  # absent in plans recorded before it: the words they had
        raise NoImagesFound(f"no images (.jpg, .jpeg, .png, .gif) found in {_where(request)}{others}; "
                            + (nearby.describe(request["prefix"], near) if near is not None
                               else "check the container and prefix"))
    reuse: c.ReuseOutput | None = None
    work = enumeration  # what goes to the pool: every image, or with only_new those not reused
    if request.get("only_new") and generation and "previous" in data:
        per_call = reuse_shards_per_call(knobs.reuse_images_per_call, TaskRequest.from_dict(request).images_per_shard)
        reuse = yield from _reuse(context, key, generation_key(task_id, data["previous"]), enumeration["shards"],
                                  per_call, run_job)
        work = c.EnumerateOutput(images=sum(reuse["to_run"]), shards=sum(1 for n in reuse["to_run"] if n))
        if passed_over:
            work["not_images"] = passed_over
    finished = _finished_shards(enumeration) if reuse is None else {}
    partly = _partly_covered(enumeration) if reuse is None else {}
    if finished or partly:  # a resumed run: shards whose images all have results already go to no pool task
        # (_finished_shards); the others' images final already are no work of its pool either (_partly_covered)
        work = c.EnumerateOutput(images=enumeration["images"] - sum(n for n, _ in finished.values())
                                 - sum(partly.values()),
                                 shards=enumeration["shards"] - len(finished))
        if passed_over:
            work["not_images"] = passed_over
    if request.get("dry_run"):  # an estimate only (core/estimate.py): stop before anything reaches the pool
        estimated = noted(c.TaskStatus(stage=Stage.estimated, started=started, images=enumeration["images"],
                                       shards=enumeration["shards"], finished=context.current_utc_datetime.isoformat(),
                                       estimate=_estimate(work, knobs)))
        context.set_custom_status(estimated)
        return estimated
    unconfirmed = yield from _confirmed(context, data, started, work, knobs)
    if unconfirmed is not None:  # expired, or cancelled while it waited
        return unconfirmed

    # No more groups than TRAPBATCH_MAX_IN_FLIGHT, each with a fixed share of it: the limit is the task's, whatever
    # the number of groups (core.shards.in_flight_shares has the rule).
    groups = group_shards(enumeration["shards"], group_count_limit(enumeration["shards"], knobs.shards_per_group,
                                                                   knobs.max_in_flight))
    shares = in_flight_shares([len(group) for group in groups], knobs.max_in_flight)
    detecting = c.TaskStatus(stage=Stage.detecting, started=started, images=enumeration["images"],
                             shards=enumeration["shards"], groups=len(groups), pool_job=job_id,
                             detecting_since=context.current_utc_datetime.isoformat())
    # A re-run's groups get ids of their own; so do those of a run that replaces a terminated one (``ends_run``),
    # whose groups may still run under the first generation's ids (terminate does not reach sub-orchestrations) until
    # their next poll finds their cancel marker: started again under those ids, they met an instance still running,
    # whose replacement DTFx does not promise (it de-duplicates no sub-orchestration start; devhost fidelity row 30)
    groups_run = data.get("run", "") if generation or "ends_run" in data else ""
    if groups_run:
        detecting["groups_run"] = groups_run
        if generation:
            detecting["generation"] = generation
    if reuse is not None:
        detecting["reused"] = sum(reuse["reused"])
    if finished or partly:  # images an earlier run finished (in shards that start done, or in part of those sent to
        # the pool): not this run's detections (live rate)
        detecting["earlier"] = enumeration["images"] - work["images"]
    context.set_custom_status(noted(detecting))
    children = []
    note_actions(context, len(groups), c.SHARDS_ORCHESTRATOR)  # one action each (retries.ActionLedger)
    for g, group in enumerate(groups):
        shards_input = c.ShardsInput(task_id=key, job_id=job_id, knobs=knobs.to_dict(),
                                     shards=[shard_id(i) for i in group], max_in_flight=shares[g],
                                     round_events=round_events(knobs.busy_retry_attempts),
                                     outage_limit_s=outage_limit_s(knobs),  # outlasts a Batch or storage outage
                                     outage_stops=True,  # the first group out of reach past it stops the others
                                     reads_cancel=True,  # a round with nothing to poll reads the cancel marker
                                     # a worker's exit 69 (a service out of its reach) spends no attempt for a while
                                     unavailable_wait_s=UNAVAILABLE_WAIT_S,
                                     # ... counted from the first since an attempt got past start-up
                                     unavailable_restarts=True)
        if reuse is not None:
            shards_input["state"] = _reused_state(group, reuse)
        elif finished or partly:
            shards_input["state"] = _finished_state(group, finished, partly)
        children.append(context.call_sub_orchestrator(c.SHARDS_ORCHESTRATOR, shards_input,
                                                      shards_instance_id(task_id, g, groups_run)))
    pool_used[0] = True
    outcomes: list[c.ShardsOutcome] = yield context.task_all(children)
    ended.update(work=work, outcomes=outcomes)
    if reuse is not None:  # a failed status's words (_add_pool_work)
        ended["reused"] = sum(reuse["reused"])
    if finished or partly:  # a cancelled or failed status's cost, and the nothing-processed failure, count the
        # images this run's pool tasks ran (_add_pool_work, _fail_if_the_pool_never_ran)
        ended["earlier"] = enumeration["images"] - work["images"]
        ended["earlier_groups"] = _group_earlier(groups, finished, partly)
    job_error = ""
    try:  # no pool work is left: free the job before the long merge
        with unrefused(context):  # the failure path closes no job whose work ended: refused, it stayed open
            yield from _close_job(context, task_id, job_id)
    except Exception as exc:  # noqa: BLE001 - every image ran: the results are still merged; the open job is said
        job_error = _job_left_open(job_id, exc)
        ended["job_error"] = job_error  # should the task fail from here on, its failed status says it too
    pool_used[0] = False
    _fail_if_the_pool_never_ran(outcomes, enumeration["images"], work["shards"],
                                ONLY_NEW if reuse is not None else RERUN, ended.get("earlier_groups", ()))
    if any(o.get("cancelled") for o in outcomes):
        cancelled = c.TaskStatus(stage=Stage.cancelled, started=started, images=enumeration["images"],
                                 finished=context.current_utc_datetime.isoformat(), pool_job=job_id)
        _add_pool_work(cancelled, work, outcomes, knobs, None if reuse is None else sum(reuse["reused"]),
                       ended.get("earlier", 0), ended.get("earlier_groups", ()))
        if job_error:
            cancelled["pool_job_error"] = job_error
        context.set_custom_status(fit(cancelled))
        return cancelled

    context.set_custom_status(noted(c.TaskStatus(stage=Stage.merging, started=started, images=enumeration["images"],
                                                 shards=enumeration["shards"])))
    merged: c.MergeOutput = yield from fan_in(context, key, request["model"], enumeration["images"],
                                              enumeration["shards"], knobs, run_job=run_job)
    exports: c.ExportsOutput | None = None
    exports_error = ""
    try:  # COCO, Camtrap DP, Zooniverse (orchestrations.exports); the results stand without them, so a failure is noted
        exports = yield from run_exports(context, key, "", merged, run_job=run_job)
    except Exception as exc:  # noqa: BLE001 - the activity's last failure after its retries
        exports_error = _first_line(exc)

    context.set_custom_status(noted(c.TaskStatus(stage=Stage.publishing, started=started,
                                                 images=enumeration["images"])))
    page = c.PreviewsInput(task_id=key, model=request["model"], request_name=request.get("request_name", ""))
    if merged.get("repeat_search_error"):  # absent otherwise: the input stays as recorded before
        page["repeat_search_error"] = merged["repeat_search_error"]
    if run_job:
        page["run_job"] = run_job
    previews: c.PreviewsOutput = yield from call(context, c.PREVIEWS, STORAGE_RETRY, page)
    if generation:  # a re-run's results are complete: from now on they are the task's
        promote = c.PromoteInput(task_id=task_id, generation=generation)
        if "previous" in data:
            promote["previous"] = data["previous"]
        if run_job:
            promote["run_job"] = run_job
        yield from call(context, c.PROMOTE, STORAGE_RETRY, promote)
    replaced = yield from _sweep_replaced(context, data)

    summary = _final_status(started, context.current_utc_datetime.isoformat(), enumeration, outcomes, merged, previews,
                            knobs.max_failed_fraction, job_id, task_id)
    if generation:
        summary["generation"] = generation
    if replaced is not None:
        summary["replaced"] = dict(replaced)
    if reuse is not None:
        summary["reused"] = sum(reuse["reused"])
    if finished or partly:
        summary["earlier"] = enumeration["images"] - work["images"]
    noted(summary)
    if job_error:
        summary["pool_job_error"] = job_error
    summary["cost"] = _cost(work, outcomes, knobs)
    given_up = _shards_given_up(outcomes, ONLY_NEW_KEEPS)  # the task has results (``_shards_given_up``)
    if given_up is not None:
        summary["shards_given_up"] = given_up
    damaged = damaged_status(merged)
    if damaged is not None:
        summary["damaged"] = damaged
    if merged.get("work_left"):  # a cleanup left the merge's work blobs: said, with how to delete them
        summary["work_left"] = merged["work_left"]
    if exports is not None:
        summary["results"]["exports"] = exports
    else:
        summary["results"]["exports_error"] = exports_error
        summary["results"]["exports_hint"] = exports_hint(task_id)
    yield from _schedule_expiry(context, data, knobs, summary)
    context.set_custom_status(fit(summary))
    return summary


# Shards per reuse call (``activities.reuse``) of a task whose input has no ``reuse_images_per_call`` knob (started by
# a release that planned every call so): its history replays with them.
REUSE_SHARDS_PER_CALL = 10
# Shards per reuse call at most, however small: each costs about ten blob requests whatever its images (its manifest
# and ETags, its previous shards' ETags and results, four writes), so a call stays near a minute.
REUSE_MAX_SHARDS_PER_CALL = 500


def reuse_shards_per_call(images_per_call: int, images_per_shard: int) -> int:
    """Shards one reuse call takes: about ``images_per_call`` images (the task's knob) in whole shards, 1 to
    ``REUSE_MAX_SHARDS_PER_CALL``; ``REUSE_SHARDS_PER_CALL`` where the knob is 0 (an input recorded before it).
    Why by images: small shards in calls of 10 made 10,000 calls for 100,000 shards, all in the task orchestrator's
    history. Read at replay time: pinned in tests/orchestrations/test_replay_constants.py."""
    if images_per_call <= 0:
        return REUSE_SHARDS_PER_CALL
    return max(1, min(REUSE_MAX_SHARDS_PER_CALL, images_per_call // max(1, images_per_shard)))


def _reuse(context: df.DurableOrchestrationContext, key: str, previous: str, shards: int,
           per_call: int, run_job: str = "") -> Generator[Any, Any, c.ReuseOutput]:
    """``only_new``: per shard of this generation, the images whose results ``previous`` (a generation key) already
    has for the same name and ETag (``activities.reuse``, in parallel calls of ``per_call`` shards); counts only pass
    through history.

    ``run_job``: the run's pool job, in each call's input where the run has an id (the calls of a run without one
    keep the inputs of before): a run terminated while its calls were queued and resumed under the same generation
    has its late calls refused (activities.superseded), not writing attempt 0 from the shards its own listing cut
    over the resumed run's (tests/integration/test_reuse_resumed.py). Inputs only: the actions are those of before."""
    payloads = [c.ReuseInput(task_id=key, previous=previous, first=first, count=min(per_call, shards - first))
                for first in range(0, shards, per_call)]
    if run_job:
        for payload in payloads:
            payload["run_job"] = run_job
    outputs: list[c.ReuseOutput] = yield from call_all(context, c.REUSE, payloads)
    return c.ReuseOutput(reused=[n for out in outputs for n in out["reused"]],
                         to_run=[n for out in outputs for n in out["to_run"]])


def _reused_state(group: list[int], reuse: c.ReuseOutput) -> dict[str, c.ShardState]:
    """A shard group's starting state after reuse: a shard with nothing left to run is done (no pool task); the
    others start pending with their reused images already counted as covered, and as ``reused``: the group returns
    their sum (``ShardsOutcome.images_reused``), so the task tells the pool's work apart (``_pool_processed``).
    (A key of the sub-orchestration's input: replay compares actions, never inputs.)"""
    state: dict[str, c.ShardState] = {}
    for i in group:
        s = c.ShardState(attempt=1, status=ShardStatus.done if reuse["to_run"][i] == 0 else ShardStatus.pending)
        if reuse["reused"][i]:
            s["covered"] = s["seen"] = s["reused"] = reuse["reused"][i]
        state[shard_id(i)] = s
    return state


def _finished_shards(enumeration: c.EnumerateOutput) -> dict[int, tuple[int, int]]:
    """A resumed run's shards that need no pool task, by index: (covered, failed), from its listing
    (``EnumerateOutput.done``, ``activities.shard_results.finished_coverage``): every image of each has a final result
    in its attempts already, the earlier run's or one the listing carried into attempt 1
    (``activities.carried_results``). Why: its shard groups submitted attempt 1 of every shard, and each such pool
    task started a worker that found nothing to do (~13 s a fresh process on a GPU node, ``bench/RESULTS.md``): ~900
    for a ten-million-image task resumed at 90 %. Empty for a first listing, an ``only_new`` key's (its reuse step
    decides) and a listing recorded before (its write outputs have no ``done``): those replay as they ran."""
    return {int(i): (int(n), int(f)) for i, n, f in enumeration.get("done", [])}


def _partly_covered(enumeration: c.EnumerateOutput) -> dict[int, int]:
    """A resumed run's shards sent to the pool with some images final already, by index: how many
    (``EnumerateOutput.partly``, ``activities.shard_results.earlier_coverage``, the listing's same pass as
    ``_finished_shards``). Why: the poll's coverage (over every attempt) counts them, so a resumed run whose pool never
    ran a worker counted them as processed by its pool: it merged the rest as failures and ended
    ``completed_with_errors``, the pool's reason hidden (``_fail_if_the_pool_never_ran``). They are counted
    ``earlier`` instead, as the finished shards' images. Empty where ``_finished_shards`` is, and for a listing
    recorded before this field (it replays as it ran)."""
    return {int(i): int(n) for i, n in enumeration.get("partly", [])}


def _finished_state(group: list[int], finished: dict[int, tuple[int, int]],
                    partly: dict[int, int] | None = None) -> dict[str, c.ShardState]:
    """A shard group's starting state in a resumed run: a shard its listing found finished is done (no pool task),
    with its images counted covered (the merge takes their entries from its attempts, as for any done shard); the
    others start pending at attempt 1, as a group without a state, those with images final already (``partly``)
    counting them covered from the start, as an ``only_new`` re-run's reused ones (``_reused_state``): the poll's
    coverage, which counts them, only grows from there, and an attempt's results are new only past them
    (``orchestrations.shards``: ``wrote``). Each also keeps that starting count as ``earlier``, which the group never
    changes: it counts what its pool ran past it shard by shard (``ShardsOutcome.images_ran``), as the poll's
    coverage may shrink below it (``_pool_processed``). (A key of the sub-orchestration's input: replay compares
    actions, never inputs.)"""
    state: dict[str, c.ShardState] = {}
    for i in group:
        if i in finished:
            covered, failed = finished[i]
            state[shard_id(i)] = c.ShardState(attempt=1, status=ShardStatus.done, covered=covered, seen=covered,
                                              failed=failed, missing=0, earlier=covered)
        else:
            state[shard_id(i)] = c.ShardState(attempt=1, status=ShardStatus.pending)
            if (partly or {}).get(i):
                s = state[shard_id(i)]
                s["covered"] = s["seen"] = s["earlier"] = (partly or {})[i]
    return state


def _sweep_replaced(context: df.DurableOrchestrationContext,
                    data: c.TaskInput) -> Generator[Any, Any, c.ReplacedSweepScheduled | dict[str, Any] | None]:
    """Right after a re-run's promotion: start the sweep that deletes the generation it replaced (``data["previous"]``)
    TRAPBATCH_KEEP_REPLACED_DAYS later (``core.replaced``, ``activities.replaced_generations``), and say when in the
    status (``replaced``). Only in a run whose input says its starter knows of this (``sweeps_replaced``): a run
    started by an earlier release, replayed past its promotion, would meet an activity its history does not have (its
    replaced generation stays, as it did). Best effort: a failure is said (``replaced.error``), the task stands and the
    replaced generation stays. None: no sweep asked for (no generation with results was replaced)."""
    generation, previous = data.get("generation", ""), data.get("previous")
    if not data.get("sweeps_replaced") or not generation or previous is None or previous == generation:
        return None
    asked = c.ReplacedSweepSchedule(task_id=data["task_id"], generation=generation, replaced=previous,
                                    instance_id=replaced_sweep_instance_id(data["task_id"], sweep_label(previous),
                                                                           context.current_utc_datetime))
    try:
        scheduled: c.ReplacedSweepScheduled = yield from call(context, c.SCHEDULE_REPLACED_SWEEP, STORAGE_RETRY,
                                                              asked)
    except Exception as exc:  # noqa: BLE001 - every attempt failed; the replaced generation stays until deleted
        return {"generation": previous, "deletes_at": None,
                "error": f"no sweep was scheduled, the replaced generation stays: {_first_line(exc, 400)}"}
    return scheduled


def _schedule_expiry(context: df.DurableOrchestrationContext, data: c.TaskInput, knobs: OrchestrationKnobs,
                     summary: c.TaskStatus) -> Generator[Any, Any, None]:
    """The request's ``previews_expire_days``: an expiry orchestration of its own takes the pages off the website
    then (orchestrations/expiry.py), and the status says when. Best effort: a failure is noted, the task stands."""
    days = data["request"].get("previews_expire_days")
    # a re-run's pages replace the first run's: an expiry waiting for those moves (only for a task started with this
    # code: one already past this point under older code would meet an activity its history does not have)
    rerun = bool(data.get("generation")) and bool(data.get("moves_expiry"))
    if not days and not rerun:
        return
    expires = expiry_time(context.current_utc_datetime, int(days), knobs.previews_expire_day_s).isoformat() \
        if days else ""
    asked = c.ExpiryInput(task_id=data["task_id"], expires=expires)
    if rerun:
        asked["move"] = True
    if _run_job(data):  # a replaced run's late call moves no expiry the replacing run set (activities.superseded)
        asked["run_job"] = _run_job(data)
    try:
        yield from call(context, c.SCHEDULE_EXPIRY, STORAGE_RETRY, asked)
    except Exception as exc:  # noqa: BLE001 - every attempt failed; the pages stay until deleted
        # no ``expires`` then: a date in the status would say the pages go when nothing will take them off
        summary["previews"]["expiry_error"] = (f"no expiry was scheduled, the pages stay until deleted: "
                                               f"{_first_line(exc, 400)}")
        return
    if expires:  # only once an expiry waits for it (status content only: the actions are those of before)
        summary["previews"]["expires"] = expires
