"""The Durable boundary: function names, the task stages, and the shape of every input, output and custom status.

Why one module: orchestrators and activities talk only through JSON that Durable stores in its history (plain
tables), so the two sides never see each other's code. With ``dict[str, Any]`` on both sides ``mypy --strict``
checked nothing across that boundary; these ``TypedDict``s make it check every key and value type, and the names
below are used by the decorators *and* the call sites. A ``TypedDict`` is a plain ``dict`` at run time, so the JSON
in the history is unchanged. The Functions worker binds activity parameters by their annotation: it refuses
generic aliases such as ``dict[str, Any]`` (see ``tests/platform``), but a ``TypedDict`` is a class and passes.

Names are stored in Durable history: choose once, never rename.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

# ---------------------------------------------------------------- names
TASK_ORCHESTRATOR = "task_orchestrator"
SHARDS_ORCHESTRATOR = "run_shards"
REPEATS_ORCHESTRATOR = "remove_repeats"
REPEAT_SEARCH_ORCHESTRATOR = "search_repeats_again"

ENUMERATE = "enumerate_images"
SUBMIT = "submit_shards"
POLL = "poll_shards"
RESUBMIT = "resubmit_shards"
CANCEL = "cancel_pool_tasks"
CLOSE_JOB = "close_pool_job"
STOP_GROUPS = "stop_shard_groups"
# what a failed task's ``error`` adds when its failure handling could not close its pool job (orchestrations.task
# ``task_orchestrator``): the terminate route's 202 reads it there (api.starters ``_terminated_hint``), the only place
# the status says so. Status text only: replay compares actions, never the status
JOB_MAY_STILL_RUN = "could not be closed and may still run tasks"
MERGE = "merge_results"
PREVIEWS = "render_previews"
REMOVE_REPEATS = "remove_repeated_detections"
NOTIFY = "notify_task_end"
DROP_ANSWER = "write_drop_answer"
PUBLISH_EVENT = "publish_task_event"
ANSWER_JOINED_DROPS = "answer_joined_drops"  # done files beside the requests dropped while the run ran (_tell)
CONFIRM_EVENT = "confirm"  # the external event POST /api/tasks/{id}/confirm raises on a task awaiting confirmation
CANCEL_EVENT = "cancel"  # POST /api/tasks/{id}/cancel on a task awaiting confirmation (nothing is in the pool yet)
# GET /api/tasks without ?limit=: the newest this many tasks. One number for the handler, its OpenAPI default and the
# CLI's ``list --limit`` (README and docs/cli.md state it; tests/unit/test_openapi.py checks they agree)
TASK_LIST_LIMIT = 50
# a custom status key: a step waiting out a busy service ({step, reason, attempt, of, at}; orchestrations.retries),
# or a shard group waiting out a pool outage ({step, reason, at, since, until}; orchestrations.shards "Outages")
WAITING_KEY = "waiting"
# a custom status key: a shard group's shards whose workers exited 69 and wait to be tried again, spending no attempt
# ({shards, reason, since, until, at}; orchestrations.shards "Unavailable exits"); the task's status adds what to check
UNREACHABLE_KEY = "unreachable"
EXPIRY_MOVED_EVENT = "expiry_moved"  # a re-run's own expiry for a waiting one: {"expires": ISO time, or "" for none}


# what stands for the run in the event names of a run without an id (started before runs had ids): no run id is it
# (gpu_batch.layout.run_id: "r", digits, hex)
RUN_WITHOUT_ID = "without-id"


def run_event(event: str, run: str) -> str:
    """The name under which the API raises ``event`` (CONFIRM_EVENT, CANCEL_EVENT) for run ``run`` of a task, the run
    its status read found: ``<event>-<run>``, ``<event>-without-id`` for a run without an id (started before runs had
    ids; ``RUN_WITHOUT_ID``). Why in the name, not only in the data: a task's runs are executions of one instance id,
    so a run that replaced the one read between the read and the raise gets the event; it waits for its own run's
    names (and the plain ones, which an earlier release raised) and never for another run's, so such an event finds
    no wait and is never acted on. Not the plain name for a run without an id: such a run is replaced by a run with
    one (every start makes an id), which waits for the plain names too, so it was confirmed or cancelled by the event
    raised for the run it replaced. An ignored event in the data could not be waited past: the SDK hands an event
    raised before a wait (the usual case: the replacing run is still listing) to every later wait of its name
    (azure-functions-durable-python #507), and the extension's shim awaits a re-made ``task_any`` on its new waits
    alone (``ProcessAsyncActionsV2``; devhost README rows 26 and 31). Run ids are lowercase letters and digits
    (gpu_batch.layout.run_id): the name fits the raiseEvent route's path as it is, and two runs' names differ in more
    than case (the extension's .NET context matches event names ignoring case, ``DurableOrchestrationContext``
    ``pendingExternalEvents``, OrdinalIgnoreCase; the Python SDK, which decides, exactly)."""
    return f"{event}-{run or RUN_WITHOUT_ID}"


class Stage(StrEnum):
    """Where a task (or a repeat removal) is; the ``stage`` of every custom status and of ``GET /api/tasks/{id}``."""

    starting = "starting"  # started, before the orchestrator's first status
    enumerating = "enumerating"
    detecting = "detecting"
    merging = "merging"
    searching = "searching"  # a repeated-detection search run again (POST /api/tasks/{id}/repeats/search)
    publishing = "publishing"
    completed = "completed"
    completed_with_errors = "completed_with_errors"
    cancelled = "cancelled"
    failed = "failed"
    terminated = "terminated"  # stopped by POST /api/tasks/{id}/terminate or the Durable management API
    estimated = "estimated"  # a "dry_run" request: enumerated and estimated (core/estimate.py), nothing submitted
    awaiting_confirmation = "awaiting_confirmation"  # above TRAPBATCH_CONFIRM_ABOVE_IMAGES: waits for POST .../confirm
    expired = "expired"  # never confirmed within TRAPBATCH_CONFIRM_TIMEOUT_S; nothing was submitted


FINISHED = (Stage.completed, Stage.completed_with_errors)


class ShardStatus(StrEnum):
    pending = "pending"
    submitted = "submitted"
    done = "done"
    given_up = "given_up"


# ---------------------------------------------------------------- orchestrator inputs

class TaskInput(TypedDict):
    task_id: str
    request: dict[str, Any]  # core.requests.TaskRequest.to_dict()
    knobs: dict[str, Any]  # core.settings.OrchestrationKnobs.to_dict()
    run: NotRequired[str]  # this run's id (gpu_batch.layout.run_id): its pool work goes to a job of its own
    owner: NotRequired[str]  # the verified caller id (api/callers.py, TRAPBATCH_CALLER_AUTH=easyauth); absent: no owner
    drop: NotRequired[str]  # the name of the dropped request (incoming/<name>.json) that started it: answers go beside
    # The blob version that asked for this run, ``<container>/<blob>@<ETag>`` (a drop or a marker; api.starters
    # drop_origin): a redelivered event of that version finds the run it started instead of running or refusing again
    origin: NotRequired[str]
    # A re-run (``"rerun": true``): the generation this run is (its state and results under
    # ``gpu_batch.layout.generation_key(task_id, generation)``; absent or "": the task's first generation) ...
    generation: NotRequired[str]
    # ... and the generation whose results the task serves until this one completes and is promoted (absent: none).
    previous: NotRequired[str]
    # True for tasks started by code whose re-runs move a waiting preview expiry (orchestrations.task
    # _schedule_expiry): absent in tasks started before, whose history has no such activity to replay
    moves_expiry: NotRequired[bool]
    # The run of this task that was terminated before this one started (its ``run``; "" for one started before runs
    # had ids): terminating an orchestration leaves its shard groups and its pool job running (Durable Functions
    # ``TerminateAsync``: "no effect on any in-flight activity function executions or sub-orchestrations"), so this
    # run ends that run's pool work before its own (orchestrations.task ``_end_terminated_run``); or that the
    # platform failed with its work running (its status not ``failed``, or its output DTFx's non-determinism:
    # api.starters ``_ended_runs``). Absent: none
    ends_run: NotRequired[str]
    # ... and, ended before it (oldest first), the runs that an earlier run was to end and may not have: a run
    # terminated or failed while it ended the run it replaced (api.starters ``_ended_runs``). Absent: none
    ends_earlier: NotRequired[list[str]]
    # True for runs started by code whose end writes the done file of each request dropped while it ran, which found
    # it started by another request (orchestrations.task ``_answer_joined_drops``, adapters.joined_drops). Absent in
    # runs started before: their history has no such activity to replay, and the drop trigger tells a request that
    # joins one of them what it told before (api.starters ``_joined_drop_answer``)
    answers_joined: NotRequired[bool]
    # True for runs started by code whose promotion starts the sweep that deletes the replaced generation days later
    # (orchestrations.task ``_sweep_replaced``, core.replaced). Absent in runs started before: their history has no
    # such activity to replay, and the generation they replace stays, as it did
    sweeps_replaced: NotRequired[bool]


class ShardState(TypedDict):
    """One shard as the shard-group orchestrator tracks it (travels through ``continue_as_new``)."""

    attempt: int
    status: str  # ShardStatus
    covered: NotRequired[int]
    failed: NotRequired[int]
    missing: NotRequired[int]
    pool: NotRequired[str]  # the in-flight attempt's pool state as last reported: "queued" or "running"
    running: NotRequired[int]  # images the running attempt has done so far (its counter blob)
    seen: NotRequired[int]  # images of this shard shown as done so far; never decreases (the status's progress)
    ended: NotRequired[int]  # attempts whose pool task ended (each counted once) ...
    timed: NotRequired[int]  # ... of which this many came with start and end times ...
    node_s: NotRequired[float]  # ... summing to this many seconds of node time (core.cost)
    pool_error: NotRequired[str]  # the pool ended its last attempt (TaskEnded, or no exit code), not the worker: why
    unfixable: NotRequired[str]  # an attempt ended with an exit no retry should fix (gpu_batch.exit_codes): why
    gave_up: NotRequired["GivenUpShard"]  # a given-up shard: how its last attempt ended (absent in states of before)
    # its attempt's RESUBMIT stayed busy through its retries (orchestrations.shards "Outages", groups with
    # outage_limit_s only): made again, first, by a later round's RESUBMIT; until then the pool is not asked about it
    owed: NotRequired[bool]
    # worker exits 69 that spent none of max_attempts (orchestrations.shards "Unavailable exits", groups with
    # unavailable_wait_s only), since the first of them (ISO time); and when the attempt one left owed may be made
    unavailable: NotRequired[int]
    unavailable_since: NotRequired[str]
    retry_at: NotRequired[str]
    # of ``unavailable``, those of waits an attempt past start-up ended (groups with unavailable_restarts only): the
    # back-off of the wait under way counts from the next one
    unavailable_earlier: NotRequired[int]
    # the worker's words for the exit 69 that left the shard's attempt owed (the status's ``unreachable`` note), kept
    # until its next attempt ends otherwise or the shard is done without it (a RESUBMIT that found nothing missing)
    unavailable_reason: NotRequired[str]
    # the owed attempt an exit 69 left is in no RESUBMIT yet (groups with unavailable_wait_s only): the pool cannot
    # know it, so its RESUBMIT keeps the round's change cursor (orchestrations.shards)
    unsent: NotRequired[bool]
    # images of the shard whose results an ``only_new`` re-run reused from the served generation (its attempt 0, set
    # by the task orchestrator at the start, never changed): counted in ``covered`` though no pool attempt ran them
    reused: NotRequired[int]
    # a resumed run's images of the shard with a final result already when its listing ran (an earlier run's, or
    # carried into attempt 1; set by the task orchestrator at the start, never changed): those of a shard that starts
    # done, or ``EnumerateOutput.partly``'s. Absent in states of before, and where none
    earlier: NotRequired[int]


class ShardsInput(TypedDict):
    task_id: str
    job_id: NotRequired[str]  # the run's pool job (default: the task id)
    knobs: dict[str, Any]
    shards: list[str]
    state: NotRequired[dict[str, ShardState]]  # set by continue_as_new, or by the task for ``only_new`` reuse
    delay: NotRequired[float]  # the poll back-off carried over by continue_as_new
    max_in_flight: NotRequired[int]  # this group's share of TRAPBATCH_MAX_IN_FLIGHT (core.shards.in_flight_shares)
    cursor: NotRequired[str]  # the pool's change cursor (GpuPool.changes), carried over by continue_as_new
    # the history events one round may add (orchestrations.shards.round_events when the group started), so a release
    # that changes its formula does not move a running group's continue_as_new (a changed replay)
    round_events: NotRequired[int]
    # Set by the task for groups started since (orchestrations.shards "Outages"): a pool step (submit, poll, resubmit)
    # whose service stays busy through its busy retries does not fail the group; the group fails only once its pool
    # steps have been out of reach this many seconds in a row. Absent (a group started by an earlier release): such a
    # step fails the group, as it did then, so its history replays unchanged. Carried over by continue_as_new.
    outage_limit_s: NotRequired[int]
    outage: NotRequired["PoolOutage"]  # the outage under way when the generation went on as new (absent: none)
    # Set (True) by the task for groups started since, with outage_limit_s (orchestrations.shards "Outages"): a group
    # that fails over an outage stops the run's other groups (STOP_GROUPS) first. Absent: it does not, as before, so a
    # group started by an earlier release replays unchanged. Carried over by continue_as_new.
    outage_stops: NotRequired[bool]
    # Set (True) by the task for groups started since, with outage_limit_s: a round that asks the pool about no task (a
    # SUBMIT stayed busy with nothing in flight, or every shard in flight is owed) reads the cancel marker all the
    # same (a POLL of no task), so a cancel or a stop reaches the group while Batch is out of reach. Absent: no such
    # read, as before, so a group started by an earlier release replays unchanged. Carried over by continue_as_new.
    reads_cancel: NotRequired[bool]
    # Set by the task for groups started since (orchestrations.shards "Unavailable exits"): a worker exit 69 (a
    # service out of its reach) spends none of a shard's max_attempts for this many seconds from the shard's first
    # such exit; its next attempt is made after a back-off. Absent: such an exit is counted as any, as before, so a
    # group started by an earlier release replays unchanged. Carried over by continue_as_new.
    unavailable_wait_s: NotRequired[int]
    # Set (True) by the task for groups started since, with unavailable_wait_s: that wait counts from the shard's
    # first exit 69 since its last attempt that got past start-up (ran, or wrote results), not since its first ever,
    # so a second outage hours later spends no attempt either. Absent: from its first ever, as before, so a group
    # started by an earlier release replays unchanged. Carried over by continue_as_new.
    unavailable_restarts: NotRequired[bool]


class PoolOutage(TypedDict):
    """A shard group's pool or storage out of reach: since when, and the last step that ran out of busy retries."""

    since: str  # ISO time of the first call of the first round that ran out of busy retries
    step: str  # the activity (c.SUBMIT, c.POLL, c.RESUBMIT) that last did
    reason: str  # the service's words (orchestrations.retries.busy_reason)


class RepeatsInput(TypedDict):
    task_id: str
    model: str
    request_name: str
    remove: list[str]
    search: NotRequired[str]  # the search id of the list the ids come from (core.repeats.list_search_id)
    # core.settings.OrchestrationKnobs.to_dict() when the removal started: its merge parts are planned from these, on
    # every replay alike (a removal started before they were recorded: orchestrations.repeats.LEGACY_KNOBS)
    knobs: NotRequired[dict[str, Any]]
    # True from this release's starter: the removal begins with PREPARE_REMOVAL (the variant's files derived from an
    # earlier removal deleted, ``remove`` written to a blob that the merge parts read instead of each carrying the
    # list); a removal started before it was recorded has none and replays without that step
    prepare: NotRequired[bool]


class PrepareRemovalInput(TypedDict):
    task_id: str  # the generation key (gpu_batch.layout.generation_key)
    remove: list[str]


class PrepareRemovalOutput(TypedDict):
    deleted: int  # files of an earlier removal deleted
    remove_blob: str  # the location ids to mark, for the merge parts (gpu_batch.layout.removal_choice_blob)


class RepeatSearchInput(TypedDict):
    """A repeated-detection search run again over a finished task's shard results (orchestrations.repeat_search)."""

    task_id: str
    model: str
    request_name: str
    search: str  # the new list's id, minted by the starter
    options: dict[str, Any]  # core.repeats.RepeatOptions.to_dict()
    knobs: dict[str, Any]  # core.settings.OrchestrationKnobs.to_dict() (part and group sizes)


# ---------------------------------------------------------------- activities

class EnumerateInput(TypedDict):
    task_id: str
    request: dict[str, Any]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]
    # a PLAN_LISTING call: the run whose own listing folder the listing uses (gpu_batch.layout.listing_work_prefix)
    listing_run: NotRequired[str]


class EnumerateOutput(TypedDict):
    images: int
    shards: int
    not_images: NotRequired[dict[str, Any]]  # core.notimages.NotImages.summary(): files listed but not run, by kind
    cancelled: NotRequired[bool]  # POST .../cancel came while the images were listed (the run's cancel marker)
    nearby: NotRequired[dict[str, Any]]  # the prefix named nothing: what is near it (core.nearby; the plan's)
    # a resumed listing: the shards finished already, [index, covered, failed] in shard order, from the write calls'
    # outputs (``WriteShardsOutput.done``; orchestrations.enumeration adds them; never in the summary activity's output)
    done: NotRequired[list[list[int]]]
    # a resumed listing: of the other shards, [index, covered] of those with some images final already, in shard order
    # (``WriteShardsOutput.partly``, gathered as ``done``)
    partly: NotRequired[list[list[int]]]


class SubmitInput(TypedDict):
    task_id: str
    job_id: str
    shards: list[tuple[str, int]]  # (shard id, attempt); JSON brings each pair back as a two-item list
    # False: submit to the job as it is, never create it (a shard group's SUBMIT once it has had a task in the job:
    # orchestrations.shards "A job deleted outside trapbatch"). Absent (True): create it first if missing, as every
    # SUBMIT did before, so an activity already queued, or a recorded history, behaves as it did; unless a SUBMIT of
    # the run found the job in the pool before (its marker: activities.pool._ensure_job_once), a retried first SUBMIT
    # or another group's, which takes the job as it is
    create_job: NotRequired[bool]


class SubmitOutput(TypedDict):
    submitted: int


class PoolTasksInput(TypedDict):
    """Input of the poll and of the cancel: the pool tasks of shard attempts in flight."""

    task_id: str
    job_id: str
    task_ids: list[str]
    since: NotRequired[str]  # poll: the pool's change cursor; ask only about tasks changed since (absent: ask by id)
    running: NotRequired[list[str]]  # poll: in-flight tasks known to run, whose progress counters to read
    # poll: in-flight tasks whose shard had this many worker exits 69 that spent no attempt (ShardState.unavailable;
    # groups with unavailable_wait_s only, else absent): the attempts the task's attempt number counts that are not
    # spent, so the poll knows which attempt is a shard's last (activities.pool._completed_row)
    unavailable: NotRequired[dict[str, int]]


class CompletedShard(TypedDict):
    """A pool task that completed, with what its shard's results cover (from every attempt so far)."""

    task_id: str
    shard_id: str
    attempt: int
    result: str | None
    exit_code: int | None
    failure_message: str | None
    images: int
    covered: int
    failed: int
    missing: int
    worker_message: NotRequired[str]  # the worker's last error, when it exited with a code no retry can fix
    # the pool's failure code (TaskInfo.failure_code), when it gave one: TaskEnded = the pool ended the task (its time
    # limit, a terminate), whatever the exit code (gpu_batch.exit_codes.pool_ended); absent in outputs of before
    failure_code: NotRequired[str]
    # the pool task's wall time (end - start; core.cost.attempt_seconds), when known: of its last run only, when Batch
    # ran it again after a Spot preemption (startTime is the latest start), so node time is a lower bound
    seconds: NotRequired[float]
    # the attempt's retryable failures by failure_reason (auth, throttled, ...), when it was the shard's last
    # (TRAPBATCH_MAX_ATTEMPTS) and its worker exited 0 and left some (activities.pool.retryable_reasons): a shard
    # given up so says why its images have no result; absent in outputs of before
    retryable_reasons: NotRequired[dict[str, int]]


class PollOutput(TypedDict):
    cancelled: bool
    completed: list[CompletedShard]
    running: int  # of the tasks this poll reported (with ``since``: only those that changed)
    queued: int
    images_in_progress: int
    cursor: NotRequired[str]  # pass as the next poll's ``since``
    states: NotRequired[dict[str, str]]  # in-flight pool task -> "queued" | "running", for those reported
    progress: NotRequired[dict[str, int]]  # running pool task -> images done so far (its counter blob)
    # a full reconciliation (no ``since``) only: asked-about tasks the pool does not know (a submission that never
    # reached it); the orchestrator submits them again (a submit of a known id is a no-op: Batch's "TaskExists" is
    # success in AzureBatchPool.submit). On Batch "unknown" is exact: its poll lists all four task states
    # (BatchTaskState: active, preparing, running, completed; tests/.../test_pool_azure_batch.py pins the filters)
    unknown: NotRequired[list[str]]


class ResubmitInput(TypedDict):
    """Shards whose missing images become their next attempt (``attempt`` is that next attempt's number). One
    activity for all of a poll's resubmissions: a fan-out of retried activities is what #603 hangs on."""

    task_id: str
    job_id: str
    shards: list[tuple[str, int]]


class Resubmitted(TypedDict):
    shard_id: str
    attempt: int
    missing: int
    submitted: bool  # False: storage shows nothing missing any more (results landed late), so the shard is done


class ResubmitOutput(TypedDict):
    shards: list[Resubmitted]


class CancelOutput(TypedDict):
    cancelled: bool


class CloseJobInput(TypedDict):
    """End a run's pool job: its remaining tasks stop and the job stops counting against the account's active jobs."""

    task_id: str
    job_id: str


class CloseJobOutput(TypedDict):
    closed: bool


class StopGroupsInput(TypedDict):
    """A shard group that fails the task asks the run's other groups to stop (the run's cancel marker)."""

    task_id: str
    job_id: str
    reason: str
    # The run that replaces the run of ``job_id`` (a terminated run's, orchestrations.task ``_end_terminated_run``):
    # recorded in the marker, so that run's late activities write nothing (activities.superseded). Absent: a group's
    superseded_by: NotRequired[str]


class StopGroupsOutput(TypedDict):
    stopped: bool


class MergeInput(TypedDict):
    task_id: str
    model: str
    completed_at: str


class RemoveRepeatsInput(TypedDict):
    task_id: str
    model: str
    remove: list[str]
    completed_at: str


class MergeOutput(TypedDict):
    results_blob: str
    csv_blob: str
    repeats_blob: str
    container: str
    images: int
    failed: int
    with_detections: int
    detections: int
    empty: int
    missing: int
    failure_reasons: NotRequired[dict[str, int]]  # failed images by failure_reason (gpu_batch.manifest)
    repeated_locations: NotRequired[int]  # the merge of the detections
    # folders the repeat search left out (over max_folder_detections) and their eligible detections; absent: none
    repeat_folders_skipped: NotRequired[int]
    repeat_detections_skipped: NotRequired[int]
    # the repeat search (or its ranking) failed after its retries: the error's first line. The results stand; there
    # is no repeats document (``repeated_locations`` absent) until POST .../repeats/search runs it again
    repeat_search_error: NotRequired[str]
    detections_marked: NotRequired[int]  # the repeats-removed variant
    # [first shard, shards, JSON fragment bytes] of each fan-in part: where its entries are in the results file, so
    # the exports can fan out over the same ranges (orchestrations.exports)
    parts: NotRequired[list[list[int]]]
    exports_fan_out: NotRequired[bool]  # one part's exports fan out too (MergeCombineOutput.exports_one_part)
    # photos cut short (JPEGs decoded as far as they go; their results stand), the list of all of them and the first
    # few; absent: none, or a merge from before they were counted
    damaged: NotRequired[int]
    damaged_blob: NotRequired[str]
    damaged_examples: NotRequired[list[str]]
    # a best-effort cleanup failed after its retries: which work blobs it left and how to delete them (they cost
    # storage, nothing else reads them); absent: none left
    work_left: NotRequired[str]


class PreviewsInput(TypedDict):
    task_id: str
    model: str
    request_name: str
    variant: NotRequired[str]
    # true after the task (re-render, repeat search, removal): render only while the task's pages are published, so
    # pages deleted (DELETE .../previews) or expired never come back on the public website
    only_if_published: NotRequired[bool]
    # the merge's repeated-detection search failed (MergeOutput.repeat_search_error): the page says so and how to run
    # it again, instead of showing no repeats section at all
    repeat_search_error: NotRequired[str]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class PreviewsOutput(TypedDict):
    """No page path: this is stored in the orchestration history; the folder's random part stays out of it."""

    container: str
    counts: dict[str, int]
    expires: NotRequired[str]  # the request's previews_expire_days: when the pages come off (ISO time, UTC)
    expiry_error: NotRequired[str]  # why no expiry could be scheduled (the pages then stay until deleted)
    not_published: NotRequired[str]  # only_if_published and the pages were deleted or expired: why nothing was written
    # images the page wanted a picture of and has none (activities.previews._Pictures.report): count, of, reasons,
    # examples, error, hint; absent when every picture was made
    pictures_missing: NotRequired[dict[str, Any]]
    # the results README (activities.readme.publish_readme) could not be written: why, and that the results stand
    readme_error: NotRequired[str]


# ---------------------------------------------------------------- custom status and outputs

class ResultsRef(TypedDict):
    container: str
    blob: str
    csv: str
    exports: NotRequired["ExportsRef"]  # activities.exports: COCO, Camtrap DP and Zooniverse beside the results
    exports_error: NotRequired[str]  # why the exports are missing (the results themselves are complete)
    # with exports_error: what to do (orchestrations.task.exports_hint; a removal's, repeats.removal_exports_hint)
    exports_hint: NotRequired[str]


class RepeatsRef(TypedDict):
    locations: int
    blob: str  # "" when the search failed (no document was written)
    folders_skipped: NotRequired[int]  # folders not searched (over max_folder_detections); the document names them
    detections_skipped: NotRequired[int]  # ... holding this many eligible detections
    error: NotRequired[str]  # the search failed after its retries: why (its first line)
    hint: NotRequired[str]  # what to do about the skipped folders or the failed search


class ShardCounts(TypedDict, total=False):
    """Shard and image counts of one shard group; the status API sums the integers over groups."""

    shards: int
    pending: int
    submitted: int
    done: int
    given_up: int
    images_done: int
    images_failed: int
    images_missing: int
    resubmissions: int
    images_in_progress: int
    pool_running: int
    pool_queued: int
    images_progress: int  # images done so far, final or counted by running shards; never decreases
    attempts_ended: int  # shard attempts whose pool task ended ...
    attempts_timed: int  # ... of which this many had start and end times ...
    node_seconds: float  # ... summing to this much node time (a float: the status API's sum of integers skips it)
    # submitted shards whose next attempt waits out an exit 69's back-off (orchestrations.shards "Unavailable exits"):
    # in no RESUBMIT yet, so neither pool_queued nor pool_running, nor counted in resubmissions
    unavailable_waiting: int


class ShardProgress(ShardCounts):
    """Custom status of a shard-group orchestration."""

    stage: str  # Stage


class GivenUpShard(TypedDict, total=False):
    """How the last attempt of a shard that was given up ended, for the task's status (``shards_given_up``): without
    it a shard that failed every attempt shows as images "not_processed" and nothing says why."""

    shard: str
    attempts: int
    exit_code: int | None  # the worker's exit code (or the operating system's, when the pool ended it)
    failure_code: str  # the pool's failure code (TaskEnded: its time limit or a terminate), when it gave one
    by: str  # "worker": its own exit; "pool": the pool ended the attempt (gpu_batch.exit_codes.pool_ended)
    reason: str  # the worker's or the pool's words, at most GIVEN_UP_REASON_CHARS
    # the last attempt's retryable failures by failure_reason, when the worker exited 0 leaving some (the images'
    # storage refused or was busy, the GPU batch failed): ``orchestrations.task`` picks the status's hint from them
    failure_reasons: dict[str, int]


GIVEN_UP_REASON_CHARS = 300
GIVEN_UP_EXAMPLES = 10  # given-up shards described per group and per status: histories and the status stay small


class ShardsOutcome(ShardCounts, total=False):
    """What a shard-group orchestration returns: ``continued`` (it went on as new), or its final counts."""

    continued: bool
    cancelled: bool
    # given-up shards whose last attempt the pool ended, not the worker (an image it could not pull, a task that could
    # not start: no exit code; its time limit: failure code TaskEnded), and the pool's reason for the first of them
    pool_error_shards: int
    pool_error: str
    # the first GIVEN_UP_EXAMPLES given-up shards (in shard order) and how each ended; ``given_up`` counts them all.
    # Absent in outcomes of before (and where none was given up)
    given_up_examples: list[GivenUpShard]
    # of ``images_done``, the images reused from the served generation (``ShardState.reused``), which no pool attempt
    # ran; absent where the group started with none (and from groups of before, whose states had no such count)
    images_reused: int
    # of ``images_done``, those this run's pool attempts gave a final result: per shard, its coverage past its
    # ``reused`` and ``earlier`` (ShardState), never below 0 (orchestrations.shards._images_ran). Only from a group
    # whose state has either count; absent from the others and from groups of before (the task counts them as before)
    images_ran: int


class TaskStatus(TypedDict, total=False):
    """Custom status (and, with ``task_id``, the output) of a task orchestration; keys appear stage by stage."""

    task_id: str
    stage: str  # Stage
    started: str
    detecting_since: str  # stage detecting: when the pool work began (the live rate counts from here, not ``started``)
    finished: str
    error: str
    pool_job: str
    pool_job_error: str  # the run's pool job could not be closed after its work ended: what to run
    generation: str  # a re-run's run id (its results are under gpu_batch.layout.generation_key); absent: the first
    groups_run: str  # the run in the shard groups' instance ids (core.ids.shards_instance_id); absent: none
    images: int
    shards: int
    groups: int
    failed: int
    missing: int
    failed_fraction: float  # failed / images; "completed" needs it <= max_failed_fraction and nothing missing
    failure_reasons: dict[str, int]  # failed images by failure_reason: "auth", "undecodable", "not_processed"...
    failures_hint: str  # failed > 0: how many, why and what to do (core.failure_advice); absent: none failed
    max_failed_fraction: float
    with_detections: int
    detections: int
    empty: int
    resubmissions: int
    reused: int  # a re-run with ``only_new``: images whose previous results were reused (not sent to the pool)
    # a resumed run: images its listing found with a final result already (an earlier run's): those of the shards
    # finished already (no pool task), and those of the shards sent to the pool for the rest of their images
    earlier: int
    not_images: dict[str, Any]  # files listed but not run (core.notimages summary: total, largest kinds); absent: none
    notification: "NotifyOutput"  # what became of the request's notify_url POST (absent: none was asked for)
    task_event: "PublishEventOutput"  # what became of the Event Grid event (absent: no topic configured)
    drop_answer: dict[str, Any]  # the done file beside a dropped request could not be written: file, reason
    joined_drops: dict[str, Any]  # ... nor those of the requests dropped while it ran that joined it: reason, hint
    results: ResultsRef
    repeated_detections: RepeatsRef
    previews: PreviewsOutput
    estimate: dict[str, Any]  # core.estimate.estimate(): a "dry_run" task's images, shards, GPU-hours, wall time, cost
    cost: dict[str, Any]  # core.cost.task_cost(): measured node time, rate and, where a price is known, USD
    # shards given up after every attempt: {"count", "examples": [GivenUpShard...], "hint"}; absent: none
    shards_given_up: dict[str, Any]
    images_done: int  # a cancelled or failed task: images with a final result when the pool work ended
    # photos cut short, decoded as far as they go (their results stand; copy them again from the cards):
    # {"count", "examples": [the first few names], "blob": the full list (layout.damaged_blob), "hint"}; absent: none
    damaged: dict[str, Any]
    work_left: str  # MergeOutput.work_left: work blobs a cleanup left, and how to delete them; absent: none
    # a re-run promoted over a generation with results: which one it replaced and when that one is deleted
    # (ReplacedSweepScheduled; with ``error`` and no time when no sweep could be scheduled: orchestrations.task
    # ``_sweep_replaced``); absent: none replaced, or a run started before
    replaced: dict[str, Any]
    cut: str  # core.status_size.fit: what was shortened to fit the 16 KB status (absent: nothing; the output is whole)


class RemovalStatus(TypedDict, total=False):
    """Custom status and output of a repeated-detection removal."""

    stage: str  # Stage
    started: str
    finished: str
    search: str  # the search id of the list the removed locations came from
    locations: int
    detections_marked: int
    results: ResultsRef
    previews: PreviewsOutput
    # photos cut short, as TaskStatus's (removing repeated detections changes no photo): the same count, examples and
    # list (``layout.damaged_blob``, the original's); absent: none, or a removal that ran before they were counted
    damaged: dict[str, Any]
    work_left: str  # MergeOutput.work_left: work blobs a cleanup left, and how to delete them; absent: none
    cut: str  # as TaskStatus's


class RepeatSearchStatus(TypedDict, total=False):
    """Custom status and output of a repeated-detection search run again."""

    stage: str  # Stage: searching, publishing, completed
    started: str
    finished: str
    search: str
    options: dict[str, Any]  # core.repeats.RepeatOptions.to_dict()
    parts: int
    groups: int
    detections_considered: int
    locations: int
    folders_skipped: int  # folders not searched (over max_folder_detections), which the new list names
    detections_skipped: int
    previews: PreviewsOutput
    work_left: str  # MergeOutput.work_left: work blobs a cleanup left, and how to delete them; absent: none


# ---------------------------------------------------------------- exports (activities.exports)

EXPORTS = "write_exports"


class ExportsInput(TypedDict):
    """Write the exports of a finished results file (``variant``: "" the merged detections, or
    ``gpu_batch.layout.REPEATS_REMOVED``). Everything else (model, threshold, source of the images) the activity reads
    from the task's stored request and the results' own ``info``."""

    task_id: str
    variant: NotRequired[str]
    threshold: NotRequired[float]  # overrides the request's preview_threshold / the model's typical threshold
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsRef(TypedDict):
    """Where a variant's exports are (blob names in ``container``): small whatever the task size, since the final
    status is limited to 16 KB; the Zooniverse batches are ``zooniverse`` + ``batch-001.csv`` ... up to the count."""

    container: str
    prefix: str
    coco: str
    camtrap_dp: str  # the package's folder (datapackage.json, deployments.csv, media.csv, observations.csv)
    zooniverse: str  # the manifests' folder
    zooniverse_batches: int
    threshold: float


class ExportsOutput(ExportsRef):
    images: int
    annotations: int
    observations: int
    deployments: int
    zooniverse_subjects: int
    sizes_unknown: int  # images whose size could not be read: their COCO boxes stay normalized (bbox_relative)
    # photos cut short (damaged.csv) left out of the Zooniverse subjects, which would show volunteers their grey
    # part; absent when none (and from exports written before they were left out)
    zooniverse_cut_short: NotRequired[int]
    # why (adapters.image_sizes.SizeMisses: reasons, the first names, the first error) and what to do
    # (activities.exports.sizes_unknown_why: hint); absent when sizes_unknown is 0, and from exports written before it
    sizes_unknown_why: NotRequired[dict[str, Any]]
    # subjects are captures (core.captures): the images they hold; absent: one subject per image
    zooniverse_capture_images: NotRequired[int]
    # Camtrap DP events (a camera's visits, core.camtrap_events) and their event-level observation rows; absent from
    # exports written before them
    events: NotRequired[int]
    event_observations: NotRequired[int]
    # camera-visits.csv (core.camtrap_events.CameraVisits) and its rows; absent when the visits are unknown
    camera_visits: NotRequired[str]
    # camera-days.csv (core.camtrap_events.CameraDays: a row per camera and day); absent when unknown, as above, or
    # grouped by an events step recorded before it counted days
    camera_days: NotRequired[str]
    cameras: NotRequired[int]
    # the request's clock_corrections folders that match no camera folder (so corrected nothing), each with the
    # folder it may have meant; absent when all matched
    clock_corrections_unmatched: NotRequired[list[str]]  # the first 10 (activities.exports.UNMATCHED_SHOWN) ...
    clock_corrections_unmatched_count: NotRequired[int]  # ... of this many, when there are more


# Exports fanned out (orchestrations.exports, activities.exportparts): parts over the merge parts' ranges of the
# results file, then a combine composing COCO and Camtrap DP, then the Zooniverse batches in one activity.
EXPORTS_PART = "exports_part"
EXPORTS_COMBINE = "exports_combine"
EXPORTS_ZOONIVERSE = "exports_zooniverse"


class ExportsPartInput(TypedDict):
    task_id: str
    variant: str
    part: int
    first_shard: int  # the part's image-list shards start here (ListMetadata)
    offset: int  # the part's bytes in the results' images array, from just after its "[" (core.exportparts)
    length: int
    threshold: NotRequired[float]
    shards: NotRequired[int]  # how many shards from first_shard (the workers' merge views hold their COCO lines)
    given: NotRequired[bool]  # again from the deployments' first facts the combine wrote (ExportsCombineOutput.redo)
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsPartOutput(TypedDict):
    part: int
    images: int
    annotations: int
    observations: int
    eligible: int
    sizes_unknown: int
    sizes_unknown_why: NotRequired[dict[str, Any]]  # SizeMisses.to_dict (absent: none, and from parts before it)
    bytes: dict[str, int]  # fragment name -> size (core.exportparts.FRAGMENTS)
    # gpu_batch.formats.camtrapdp.CamtrapBuilder.deployment_facts rows, from parts recorded before they wrote them to
    # their fragment (activities.exportparts.DEPLOYMENTS, its size in ``bytes``); absent from newer parts
    deployments: NotRequired[list[list[Any]]]
    # True from the parts that came with the events' own step: the orchestrator then groups the events
    # (EXPORTS_EVENTS) and links the parts' media-level rows to them (EXPORTS_LINK_PART) before the combine. Recorded
    # in the history, so an orchestration whose parts ran before goes on to the combine, which groups them itself.
    link: NotRequired[bool]
    # photos cut short (gpu_batch.formats.entries.CUT_SHORT) left out of the part's Zooniverse subjects, not counted in
    # ``eligible``; absent when none (and from parts recorded before they were left out)
    zooniverse_cut_short: NotRequired[int]
    # the clock_corrections folders that corrected an image's time in this part (absent when none, and from parts
    # recorded before it): the combine names the others as matching nothing
    clock_matched: NotRequired[list[str]]
    # the images' URL prefix the part's media filePaths start with (camtrapdp.CamtrapBuilder.media_base); absent from
    # parts recorded before filePath was the image's URL (blob names): the combine runs those again
    media_base: NotRequired[str]


# The Camtrap DP events before the combine (activities.exportevents): every part's records grouped into events, their
# rows, each camera's visits and each part's share of the index; then the media-level rows of each part with
# time-grouped photos given their eventIDs.
EXPORTS_EVENTS = "exports_events"
EXPORTS_LINK_PART = "exports_link_part"


class ExportsEventsInput(TypedDict):
    task_id: str
    variant: str
    parts: list[int]  # every part, in order
    threshold: NotRequired[float]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsEventsOutput(TypedDict):
    events: int
    event_observations: int  # the event rows, in the work blob the combine appends to observations.csv
    rows_bytes: int  # that blob's size
    cameras: int
    camera_visits: str  # the blob of camera-visits.csv
    camera_days: NotRequired[str]  # the blob of camera-days.csv (absent: recorded before it was written)
    # the parts with time-grouped photos (their media-level rows get their events' ids) or with photos without a
    # capture time in deployments with one (their media rows get the deployment's first: camtrapdp.stand_in_media)
    link: list[int]


class ExportsLinkPartInput(TypedDict):
    task_id: str
    variant: str
    part: int
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsLinkPartOutput(TypedDict):
    part: int
    bytes: int  # the linked observations fragment's size
    # the size of its COCO images with their seq_id, seq_num_frames and frame_num; absent where the events were
    # grouped before they numbered the frames (recorded before), or the part's records named no photo
    images_bytes: NotRequired[int]
    # the size of its media rows with their deployment's first capture time for photos without one; absent where it
    # had none to give (or was linked before they got it)
    media_bytes: NotRequired[int]


class ExportsCombineInput(TypedDict):
    task_id: str
    variant: str
    parts: list[ExportsPartOutput]
    threshold: NotRequired[float]
    # the events grouped before (EXPORTS_EVENTS) and the parts whose observations were linked, each as [part, bytes]
    # of its linked fragment; absent: the combine groups the events itself (parts recorded before)
    events: NotRequired[ExportsEventsOutput]
    linked: NotRequired[list[list[int]]]
    linked_images: NotRequired[list[list[int]]]  # the parts whose COCO images were numbered: [part, bytes]
    linked_media: NotRequired[list[list[int]]]  # the parts whose media rows got stand-in times: [part, bytes]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsCombineOutput(TypedDict):
    conflict: bool  # deployments' image-list facts differ between parts (see redo)
    # with a conflict: the parts to run again from the task's first facts (``given``), then combine again; a combine
    # recorded before answered a conflict without it, and the orchestrator then runs the single activity
    redo: NotRequired[list[int]]
    output: NotRequired[ExportsOutput]
    # True from the combine that came with the Zooniverse fan-out: the orchestrator then writes the batches with
    # EXPORTS_ZOONIVERSE_PART / _COMBINE / _CLEAN. Recorded in the history, so an orchestration whose combine ran
    # before keeps calling the single EXPORTS_ZOONIVERSE on replay.
    zooniverse_parts: NotRequired[bool]
    # True when the task's image list defines captures (core.captures): the orchestrator then writes the manifests
    # of captures with EXPORTS_CAPTURES_PART / _COMBINE instead of the per-image batches (absent on older records)
    zooniverse_captures: NotRequired[bool]


class ExportsZooniverseInput(TypedDict):
    task_id: str
    variant: str
    eligible: int
    threshold: NotRequired[float]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsZooniverseOutput(TypedDict):
    """What the single EXPORTS_ZOONIVERSE wrote. Releases before it returned the batch count alone (an ``int``,
    recorded in histories: orchestrations.exports.single_zooniverse_output reads both)."""

    batches: int
    # the rows written: the combine's count less the photos cut short, which it counted (recorded before they were
    # left out) and this activity leaves out
    subjects: int
    cut_short: NotRequired[int]  # those photos; absent when none


# The Zooniverse batches fanned out (activities.zooniverseparts): per merge part with eligible images, its manifest
# rows grouped by batch; then groups of batches composed from the parts' rows; then the work blobs and stale batches
# deleted.
EXPORTS_ZOONIVERSE_PART = "exports_zooniverse_part"
EXPORTS_ZOONIVERSE_COMBINE = "exports_zooniverse_combine"
EXPORTS_ZOONIVERSE_CLEAN = "exports_zooniverse_clean"


class ExportsZooniversePartInput(TypedDict):
    task_id: str
    variant: str
    part: int
    first_shard: int  # as ExportsPartInput
    offset: int
    length: int
    before: int  # eligible images in the parts before this one: its first eligible image's index in the results
    rows: int  # eligible images in this part (its ExportsPartOutput): a different count fails the activity
    eligible: int  # eligible images in the whole results (the shuffle permutes range(eligible))
    batches: int  # the batch count (ExportsOutput.zooniverse_batches of the combine)
    threshold: NotRequired[float]
    shards: NotRequired[int]  # as ExportsPartInput (the workers' merge views hold the part's rows)
    # True when the exports part left photos cut short out of ``rows`` (ExportsPartOutput.zooniverse_cut_short): this
    # part leaves them out too. Absent (parts counted before, and parts without any): the rows are counted as before
    cut_short: NotRequired[bool]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsZooniversePartOutput(TypedDict):
    part: int
    rows: int
    bytes: int


class ExportsZooniverseCombineInput(TypedDict):
    task_id: str
    variant: str
    parts: list[int]  # the parts that wrote rows, in order
    first: int  # the group's first batch, 0-based (its blob is batch-<first + 1>)
    count: int
    threshold: NotRequired[float]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsZooniverseCleanInput(TypedDict):
    task_id: str
    variant: str
    batches: int  # batches 1..batches stay; every other blob under the manifests' folder goes, as do the work blobs
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


# Zooniverse subjects by capture (core.captures, activities.zooniverse_captures): per merge part its records in
# sorted runs, then one combine that merges them into captures and writes the batches.
EXPORTS_CAPTURES_PART = "exports_captures_part"
EXPORTS_CAPTURES_COMBINE = "exports_captures_combine"


class ExportsCapturesPartInput(TypedDict):
    task_id: str
    variant: str
    part: int
    first_shard: int  # as ExportsPartInput
    offset: int
    length: int
    threshold: NotRequired[float]
    shards: NotRequired[int]  # as ExportsPartInput: with every shard's merge view, the rows come from the views
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsCapturesPartOutput(TypedDict):
    part: int
    records: int  # images of the part that are in the manifests
    runs: int  # sorted runs written (work blobs)


class ExportsCapturesCombineInput(TypedDict):
    task_id: str
    variant: str
    runs: list[tuple[int, int]]  # (part, runs) of every part that wrote runs, in part order
    threshold: NotRequired[float]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class ExportsCapturesCombineOutput(TypedDict):
    subjects: int  # subjects written (an image without a capture is one; a capture split is several)
    images: int
    batches: int
    widest: int  # images of the largest subject: the manifests' image columns (at most ``max_frames``)


# ---------------------------------------------------------------- parallel fan-in (orchestrations.fanin)
# The merge as parallel parts over fixed ranges of shards, a combine that composes their fragments into the results
# without reading them, and the repeated-detection search in parallel groups of folders. MERGE and REMOVE_REPEATS
# stay registered (activities.merge) for orchestrations started before the fan-in; new ones use these.

READ_ENUMERATION = "read_enumeration"
# a new removal's first step (activities.fanin.run_prepare_removal): the repeats-removed variant's exports and
# threshold CSVs of an earlier removal go, so that no link or zip hands them out beside the new results, and the
# chosen ids are written once to a blob, which the merge parts read (each carried the list: 50 parts of a 10M-image
# task choosing 30,000 places put ~15 MB into the history, sent again at every episode)
PREPARE_REMOVAL = "prepare_removal"
MERGE_PART = "merge_part"
MERGE_COMBINE = "merge_combine"
SEARCH_REPEATS = "search_repeats"
RANK_REPEATS = "rank_repeats"
CLEAN_MERGE_WORK = "clean_merge_work"


class ReadEnumerationInput(TypedDict):
    task_id: str


class MergePartInput(TypedDict):
    task_id: str
    part: int
    first_shard: int
    shards: int  # shards first_shard .. first_shard + shards - 1
    variant: NotRequired[str]  # "" or gpu_batch.layout.REPEATS_REMOVED
    remove: NotRequired[list[str]]  # the variant's repeated locations to mark (ids in the repeats blob)
    remove_blob: NotRequired[str]  # instead of ``remove``: the blob holding them (PREPARE_REMOVAL wrote it)
    search: NotRequired[str]  # the variant: the search id of the list ``remove`` refers to (checked against the blob)
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


DAMAGED_EXAMPLES = 3  # photos cut short named in a task's status (``TaskStatus.damaged``); the list has them all


class MergePartOutput(TypedDict):
    part: int
    images: int
    failed: int
    with_detections: int
    detections: int
    empty: int
    missing: int
    failure_reasons: dict[str, int]
    json_bytes: int  # size of the part's JSON fragment (the combine trims the first fragment's leading comma)
    csv_bytes: int
    detections_considered: int  # eligible for the repeat search (0 for the variant: it does not search)
    marked: int  # repeated detections marked (the variant)
    # photos cut short in the part's shards (``activities.shard_results.shard_damaged``) and the bytes of its
    # ``damaged.csv`` fragment; absent: none (and from a part that ran before they were counted)
    damaged: NotRequired[int]
    damaged_bytes: NotRequired[int]
    # the repeats-removed variant's part: no fragment (the original's ``damaged.csv`` lists the same photos), its first
    # few names instead (``DAMAGED_EXAMPLES``), for the removal's status
    damaged_examples: NotRequired[list[str]]


class MergeCombineInput(TypedDict):
    task_id: str
    model: str
    completed_at: str
    variant: str
    json_bytes: list[int]  # per part, in part order
    csv_bytes: list[int]
    images: int
    failure_reasons: dict[str, int]
    removed: NotRequired[list[str]]  # the variant: the location ids removed, for the results' info block
    detections_per_group: NotRequired[int]  # repeat-search group size (default core.fanin.SEARCH_DETECTIONS_PER_GROUP)
    # folders with more eligible detections are not searched (TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS; default
    # core.repeats.RepeatOptions().max_folder_detections)
    max_folder_detections: NotRequired[int]
    # per part, the bytes of its ``damaged.csv`` fragment (photos cut short): the combine writes ``layout.damaged_blob``
    # from them; absent: no part found any (or parts that ran before they were counted)
    damaged_bytes: NotRequired[list[int]]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class MergeCombineOutput(TypedDict):
    container: str  # where the results are (the task-state container)
    search_groups: int  # repeat-search groups planned (0 for the variant)
    # True from the combine that came with the exports fan-out: fan_in then returns ``MergeOutput.parts``. Recorded in
    # the history, so an orchestration whose combine ran before keeps the single exports call when it replays.
    exports_parts: NotRequired[bool]
    # True from the combine that came with exports fanned out for one part too (``core.scratch``: the single exports
    # activity spools ~2.7 kB an image to the local disk): fan_in then sets ``MergeOutput.exports_fan_out``. Absent
    # from a combine recorded before, so such an orchestration keeps the single exports call when it replays.
    exports_one_part: NotRequired[bool]
    # the first few photos cut short of ``layout.damaged_blob`` (which it wrote), for the status; absent: none
    damaged_examples: NotRequired[list[str]]


class SearchRepeatsInput(TypedDict):
    task_id: str
    group: int
    options: NotRequired[dict[str, Any]]  # core.repeats.RepeatOptions.to_dict(); absent: the defaults (the merge)
    work: NotRequired[str]  # the work folder's name (gpu_batch.layout.merge_work_prefix); absent: the merge's
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class SearchRepeatsOutput(TypedDict):
    group: int
    locations: int


class RankRepeatsInput(TypedDict):
    task_id: str
    groups: int
    detections_considered: int
    options: NotRequired[dict[str, Any]]  # as SearchRepeatsInput
    work: NotRequired[str]
    search: NotRequired[str]  # a search run again: the new list's id, written into the document
    searched: NotRequired[str]  # ... and when it started (orchestration clock, ISO 8601)
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class RankRepeatsOutput(TypedDict):
    locations: int
    # folders the plan left out (over max_folder_detections) and their eligible detections; absent: none. Counts
    # only: the document names them (core.repeats.skipped_summary)
    folders_skipped: NotRequired[int]
    detections_skipped: NotRequired[int]


# A repeated-detection search run again (orchestrations.repeat_search): parts re-read the shard results for the
# eligible detections under other options, a plan groups their folders; then SEARCH_REPEATS and RANK_REPEATS as above.
SEARCH_PART = "repeat_search_part"
PLAN_SEARCH = "plan_repeat_search"


class SearchPartInput(TypedDict):
    task_id: str
    part: int
    first_shard: int
    shards: int
    options: dict[str, Any]  # core.repeats.RepeatOptions.to_dict()
    work: str


class SearchPartOutput(TypedDict):
    part: int
    detections_considered: int


class PlanSearchInput(TypedDict):
    task_id: str
    parts: int
    detections_per_group: int
    work: str
    max_folder_detections: NotRequired[int]  # the options' (absent: the default cap)


class PlanSearchOutput(TypedDict):
    groups: int


class CleanMergeWorkInput(TypedDict):
    task_id: str
    variant: NotRequired[str]
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


class CleanMergeWorkOutput(TypedDict):
    deleted: int


class NotifyInput(TypedDict):
    """The notification of a task's end (core/notify.py): sent to ``url`` once per final stage, or to the address in
    the secret ``url_secret`` names (the request's ``notify_url_secret``; ``url`` is then "")."""

    task_id: str
    url: str
    status: dict[str, Any]  # the final TaskStatus
    # the secret's name, never its value (the address): absent for a notify_url, so that such a task's input to this
    # activity is what it always was
    url_secret: NotRequired[str]
    # the task run's id and its pool job, for a run with an id (absent otherwise: the input of before). ``run`` is
    # the body's ``run``; ``run_job``: a terminated run's late notification is not sent once a later run replaced it
    # (activities.superseded)
    run: NotRequired[str]
    run_job: NotRequired[str]


class NotifyOutput(TypedDict):
    sent: bool
    status_code: int  # the receiver's answer; 0 when nothing was sent
    reason: str  # why nothing was sent ("" when sent)


class PublishEventInput(TypedDict):
    """The Event Grid event of a task's end (core/task_events.py): published once per final stage."""

    task_id: str
    run: str  # the task run's id ("" when none): part of the event id, so each run's end is an event of its own
    status: dict[str, Any]  # the final TaskStatus
    run_job: NotRequired[str]  # its run's pool job, for a run with an id: a replaced run's late event is not sent


class PublishEventOutput(TypedDict):
    sent: bool
    status_code: int  # the topic's answer; 0 when nothing was sent
    reason: str  # why nothing was sent ("" when sent)


# ---------------------------------------------------------------- answers beside a dropped request (activities.notify)

class DropAnswerInput(TypedDict):
    """Write ``incoming/<drop minus .json>.<kind>.json`` (``kind``: "done" when the task ended, "estimate" while it
    awaits confirmation) holding ``status``."""

    task_id: str
    drop: str
    kind: str
    status: dict[str, Any]
    run_job: NotRequired[str]  # its run's pool job, for a run with an id: a replaced run's late file is not written


class DropAnswerOutput(TypedDict):
    blob: str


class JoinedDropsInput(TypedDict):
    """Run ``run`` of the task ended with ``status``: write its ended marker, then the done file (``{"id": task_id,
    **status}``) beside each request dropped while it ran that joined it (adapters.joined_drops ``end_run``)."""

    task_id: str
    run: str
    status: dict[str, Any]
    run_job: str  # its run's pool job: a replaced run's late answers are not written (activities.superseded)
    # The runs this one ended (its input's ``ends_earlier`` and ``ends_run``, those with a run id): a terminated run
    # writes no done file, so the run that resumes it writes those of the requests that had joined it, with its own
    # end. Absent: none (and in calls scheduled before the field)
    ended_runs: NotRequired[list[str]]


class JoinedDropsOutput(TypedDict):
    answered: int  # the joined drops whose done file was written


# ---------------------------------------------------------------- parallel enumeration (orchestrations.enumeration)
# The orchestrator holds counts, part numbers and opaque listing markers; image names stay in the listing blobs.

PLAN_LISTING = "plan_listing"
LIST_PART = "list_images_part"
CHOOSE_SAMPLE = "choose_sample"
WRITE_SHARDS = "write_shard_manifests"
FINISH_ENUMERATION = "finish_enumeration"


class PlanListingOutput(TypedDict):
    units: int  # listing units, each listed by a chain of LIST_PART calls; units run in parallel
    leaves: int  # folders and single blobs the plan found
    images_per_write: int  # images of the shards one WRITE_SHARDS call writes
    not_images: NotRequired[int]  # files the plan's own listing passed over (layout.listing_not_images_blob)
    nearby: NotRequired[dict[str, Any]]  # nothing under the prefix: what the container holds near it (core.nearby)
    # the run whose own working files the plan wrote (its input's ``listing_run``), which the listing's later calls
    # then carry; absent: the task's listing folder (a plan asked without it, or made before runs listed apart)
    listing_run: NotRequired[str]


class ListPartInput(TypedDict):
    """List part ``part`` of unit ``unit``: from the unit's start (part 0), else from where part ``part - 1`` stopped
    (its cursor blob: the service's continuation marker may encode a blob name, so it stays out of the history)."""

    task_id: str
    request: dict[str, Any]
    unit: int
    part: int
    max_images: NotRequired[int]  # stop once this many images are found (first_n: later ones are not needed)
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]
    # The listing's own working files (gpu_batch.layout.listing_work_prefix): the plan's ``listing_run``; absent: the
    # task's listing folder (runs without an id, listings planned before)
    listing_run: NotRequired[str]


class ListPartOutput(TypedDict):
    images: int
    listed: int  # blobs seen, images or not
    more: bool  # False: the unit is fully listed
    not_found: NotRequired[int]  # an image list's names this part did not find in the container (activities.image_list)
    not_images: NotRequired[int]  # files this part passed over, not images (core.notimages; absent: none)


class ChooseSampleInput(TypedDict):
    task_id: str
    request: dict[str, Any]
    parts: list[tuple[int, int]]  # (unit, part) of every part, in listing order
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]
    # The listing's own working files (gpu_batch.layout.listing_work_prefix): the plan's ``listing_run``; absent: the
    # task's listing folder (runs without an id, listings planned before)
    listing_run: NotRequired[str]


class ChooseSampleOutput(TypedDict):
    counts: list[int]  # selected images per part, in the order of ``parts``


class WriteShardsInput(TypedDict):
    task_id: str
    request: dict[str, Any]
    parts: list[tuple[int, int]]  # (unit, part) of the parts the slices name, by slice ``part`` index
    first: int  # the first shard index this call writes
    count: int
    slices: list[dict[str, int]]  # core.shards.Slice, with ``part`` an index into ``parts``
    sampled: bool  # apply the sample threshold (sample_n smaller than the images found)
    not_found: NotRequired[list[list[int]]]  # image list: [unit, part, shard] whose names not found a shard reports
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]
    # The listing's own working files (gpu_batch.layout.listing_work_prefix): the plan's ``listing_run``; absent: the
    # task's listing folder (runs without an id, listings planned before)
    listing_run: NotRequired[str]


class WriteShardsOutput(TypedDict):
    shards: int
    images: int
    # a resumed listing (not an only_new key's): [shard index, covered, failed] of each shard of the call whose every
    # image has a final result in its attempts already (activities.shard_results.finished_coverage), which its shard
    # group starts done, with no pool task. Absent: none (a first listing; outputs of before)
    done: NotRequired[list[list[int]]]
    # a resumed listing: [shard index, covered] of each other shard of the call with some images final already
    # (activities.shard_results.earlier_coverage): sent to the pool, those images are not its work (they start counted
    # covered and "earlier": orchestrations.task._partly_covered). Absent: none (a first listing; outputs of before)
    partly: NotRequired[list[list[int]]]


class FinishEnumerationInput(TypedDict):
    task_id: str
    request: dict[str, Any]
    images: int
    shards: int
    found: int  # images found before first_n / sample_n
    parts: int
    not_found: NotRequired[int]  # image list: its names the container does not hold (failed entries in the results)
    # files listed but not run: the plan's (``not_images_plan``) and the parts' that passed over any, [unit, part]
    not_images_plan: NotRequired[bool]
    not_images_parts: NotRequired[list[tuple[int, int]]]
    cancel_job: NotRequired[str]  # the run's pool job, whose cancel marker says a cancel came during the listing
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]
    # The listing's own working files (gpu_batch.layout.listing_work_prefix): the plan's ``listing_run``; absent: the
    # task's listing folder (runs without an id, listings planned before)
    listing_run: NotRequired[str]


# ---------------------------------------------------------------- after the task: re-render, expiry, zip
# (orchestrations/rerender.py, orchestrations/expiry.py, orchestrations/results_zip.py)

RERENDER_ORCHESTRATOR = "rerender_previews"
EXPIRY_ORCHESTRATOR = "expire_previews"
RESULTS_ZIP_ORCHESTRATOR = "zip_results"
RESULTS_ZIP_SWEEP_ORCHESTRATOR = "sweep_results_zips"
RETHRESHOLD = "rethreshold_results"
RETHRESHOLD_PART = "rethreshold_part"
RETHRESHOLD_COMBINE = "rethreshold_combine"
RETHRESHOLD_CLEAN = "rethreshold_clean"
SCHEDULE_EXPIRY = "schedule_preview_expiry"
DELETE_PREVIEWS = "delete_preview_folder"
BUILD_RESULTS_ZIP = "build_results_zip"
RESULTS_ZIP_PART = "results_zip_part"
RESULTS_ZIP_COMBINE = "results_zip_combine"
RESULTS_ZIP_CLEAN = "results_zip_clean"
SCHEDULE_RESULTS_ZIP_SWEEP = "schedule_results_zip_sweep"
SWEEP_RESULTS_ZIPS = "sweep_results_zip_folder"


class RerenderInput(TypedDict):
    task_id: str
    threshold: float
    model: str
    request_name: str
    variants: list[str]  # "" (the original results) and/or gpu_batch.layout.REPEATS_REMOVED, those that exist
    # OrchestrationKnobs.busy_retry_attempts when it started (orchestrations.retries; none: started before the knob)
    busy_retry_attempts: NotRequired[int]
    # OrchestrationKnobs.action_budget when it started (orchestrations.retries.ActionLedger; none: started before it,
    # not checked, so its history replays as it ran)
    action_budget: NotRequired[int]


class RethresholdInput(TypedDict):
    task_id: str
    threshold: float
    variant: str


class RethresholdOutput(TypedDict):
    variant: str
    threshold: float
    csv_blob: str
    images: int
    counts: dict[str, int]  # images per preview section at the threshold (detections, near_misses, empty, failures)
    # a results file too large for one pass: the byte ranges of its entries that RETHRESHOLD_PART passes over in
    # parallel ([offset, length] each; ``images`` and ``counts`` are then RETHRESHOLD_COMBINE's to give)
    parts: NotRequired[list[list[int]]]


class RethresholdPartInput(TypedDict):
    task_id: str
    threshold: float
    variant: str
    part: int
    offset: int  # the part passes over the entries whose line starts in [offset, offset + length)
    length: int


class RethresholdPartOutput(TypedDict):
    part: int
    images: int
    csv_bytes: int


class RethresholdCombineInput(TypedDict):
    task_id: str
    threshold: float
    variant: str
    parts: list[RethresholdPartOutput]


class RerenderStatus(TypedDict, total=False):
    """Custom status and output of a re-render at another threshold."""

    stage: str  # Stage
    key: str  # the generation re-rendered (layout.generation_key; absent before re-runs could be: the task id)
    started: str
    finished: str
    threshold: float
    csv: dict[str, str]  # variant ("original" or "repeats-removed") -> the CSV at the threshold
    previews: dict[str, PreviewsOutput]  # variant -> the re-rendered page's counts


class ExpiryInput(TypedDict):
    task_id: str
    expires: str  # ISO time (UTC) when the preview folder is deleted; "" (with ``move``): none any more
    move: NotRequired[bool]  # a re-run's: an expiry already waiting takes this time (or ends, for "")
    # its run's pool job, for a run with an id: a replaced run's late call starts or moves no expiry
    # (activities.superseded)
    run_job: NotRequired[str]
    # OrchestrationKnobs.busy_retry_attempts when it started (orchestrations.retries; none: started before the knob)
    busy_retry_attempts: NotRequired[int]


class ExpiryOutput(TypedDict):
    scheduled: bool  # False: an expiry of this task was already waiting, and keeps its own time
    instance_id: str
    moved: NotRequired[bool]  # the waiting expiry was told the re-run's time


class ExpiryStatus(TypedDict, total=False):
    stage: str  # "waiting", then Stage.completed (or Stage.cancelled: a re-run asked for no expiry)
    expires: str
    deleted: int  # blobs removed from the static website (0: the folder was gone already)


class DeletePreviewsInput(TypedDict):
    task_id: str


class DeletePreviewsOutput(TypedDict):
    deleted: int


class ResultsZipInput(TypedDict):
    task_id: str
    # OrchestrationKnobs.busy_retry_attempts when it started (orchestrations.retries; none: started before the knob)
    busy_retry_attempts: NotRequired[int]
    # OrchestrationKnobs.action_budget when it started (orchestrations.retries.ActionLedger; none: started before it,
    # not checked, so its history replays as it ran)
    action_budget: NotRequired[int]


class ZipFileEntry(TypedDict):
    """A file going into a large zip, as the plan listed it (``adapters.zip_parts``)."""

    name: str
    size: int
    etag: str
    modified: str  # ISO 8601, the member's date in the zip


class ZipPlan(TypedDict):
    files: list[ZipFileEntry]  # in zip order
    parts: list[list[list[Any]]]  # each part's chunks: [file index, offset, length, last] (core.zipformat.Chunk)
    # names this build's work blobs (layout.results_zip_part_blob) and its zip (layout.results_zip_blob), random: a
    # terminated build's part or combine still running cannot write over the next build's; absent in a plan recorded
    # before it (the names of then)
    build: NotRequired[str]


class ResultsZipOutput(TypedDict):
    blob: str
    files: int
    bytes: int  # the zip's size (0 while a plan is answered, or when a file changed while it was read)
    plan: NotRequired[ZipPlan]  # too large for one activity: the parts to deflate in parallel, then compose
    stale: NotRequired[str]  # a file that changed while the parts read it: no zip written (the next GET rebuilds)


class ResultsZipSweepSchedule(TypedDict):
    """SCHEDULE_RESULTS_ZIP_SWEEP's input: the sweep a build starts at its end (orchestrations.results_zip)."""

    task_id: str  # the generation whose zips' folder is swept (layout.generation_key, as ResultsZipInput's)
    instance_id: str  # the sweep's own (core.ids.results_zip_sweep_instance_id)


class ResultsZipSweepScheduled(TypedDict):
    scheduled: bool  # False: the instance was there already (a retried call), and keeps its time
    instance_id: str
    at: NotRequired[str]  # when the started sweep runs (ISO, UTC)


class ResultsZipSweepInput(TypedDict):
    """RESULTS_ZIP_SWEEP_ORCHESTRATOR's input."""

    task_id: str
    at: str  # ISO time (UTC): the build's end plus core.zip_builds.SWEEP_AFTER_S
    # OrchestrationKnobs.busy_retry_attempts when it started (orchestrations.retries)
    busy_retry_attempts: NotRequired[int]


class ResultsZipSweepOutput(TypedDict):
    deleted: int  # zips deleted (adapters.results_bundle.sweep_zips)


class ResultsZipPartInput(TypedDict):
    task_id: str
    part: int
    chunks: list[list[Any]]  # [name, etag, offset, length, last]
    build: NotRequired[str]  # the plan's (ZipPlan.build), when it has one


class ResultsZipPartOutput(TypedDict):
    part: int
    chunks: list[list[int]]  # [crc32, deflated length] of each chunk, in order
    changed: NotRequired[str]  # a file whose etag no longer matched: nothing written


class ResultsZipCombineInput(TypedDict):
    task_id: str
    plan: ZipPlan
    parts: list[ResultsZipPartOutput]


class ResultsZipCleanInput(TypedDict):
    task_id: str
    # the plan's (ZipPlan.build), when it has one: the clean deletes this build's work blobs and other builds' only
    # once no running build can own them (adapters.zip_parts.clean); absent in a clean recorded before it
    build: NotRequired[str]


# ---------------------------------------------------------------- generations (activities.generations)
PROMOTE = "promote_generation"


class PromoteInput(TypedDict):
    """Make ``generation`` the task's results (``current.json``) and take ``previous``'s preview pages offline, and
    those of any other re-run generation no run serves."""

    task_id: str
    generation: str
    previous: NotRequired[str]  # absent: no generation was served before this one
    # The pool job of the run that made this call (gpu_batch.layout.pool_job_id), absent in calls of before: a call
    # that runs after a later run replaced that one (terminated, then resumed or re-run) writes nothing
    # (activities.superseded)
    run_job: NotRequired[str]


# ---------------------------------------------------------------- a replaced generation's sweep
# (activities.replaced_generations, orchestrations.replaced_sweep, core.replaced)

REPLACED_SWEEP_ORCHESTRATOR = "sweep_replaced_generation"
SCHEDULE_REPLACED_SWEEP = "schedule_replaced_sweep"
SWEEP_REPLACED = "delete_replaced_generation"


class ReplacedSweepSchedule(TypedDict):
    """SCHEDULE_REPLACED_SWEEP's input: the promotion of ``generation`` replaced ``replaced``."""

    task_id: str  # the task id (not a generation key)
    generation: str  # the generation promoted (a run id)
    replaced: str  # the generation it replaced (a run id; "": the first)
    instance_id: str  # the sweep's own (core.ids.replaced_sweep_instance_id)


class ReplacedSweepScheduled(TypedDict):
    """What the task's status says of it (``TaskStatus.replaced``)."""

    generation: str  # the replaced generation (a run id; "": the first)
    # ISO time (UTC) when its files are deleted; None: TRAPBATCH_KEEP_REPLACED_DAYS=0 keeps them, and no sweep waits
    deletes_at: str | None
    instance_id: NotRequired[str]  # the sweep waiting for it
    scheduled: NotRequired[bool]  # False: that sweep was there already (a retried call), and keeps its time


class ReplacedSweepInput(TypedDict):
    """REPLACED_SWEEP_ORCHESTRATOR's input."""

    task_id: str
    generation: str  # the replaced generation (a run id; "": the first)
    at: str  # ISO time (UTC): core.replaced.deletes_at
    # OrchestrationKnobs.busy_retry_attempts when it started (orchestrations.retries)
    busy_retry_attempts: NotRequired[int]
    deleted: NotRequired[int]  # blobs deleted by the episodes before (continue_as_new); absent: none
    # True for sweeps started by code that looks again (core.replaced.RECHECK_S later) at a generation kept because
    # the task's running run reads or writes it. Absent in sweeps started before: such a sweep ends there, as it did
    # (its history has no later episode to replay)
    rechecks_running: NotRequired[bool]


class ReplacedSweepStep(TypedDict):
    """SWEEP_REPLACED's input: delete up to a call's share of the generation's blobs."""

    task_id: str
    generation: str


class ReplacedSweepStepOutput(TypedDict):
    deleted: int  # blobs deleted by this call
    done: bool  # nothing of the generation is left (or it is kept: ``kept``)
    kept: NotRequired[str]  # why nothing was deleted (core.replaced.keep_reason): "served" or "running"


class ReplacedSweepOutput(TypedDict):
    generation: str
    deleted: int  # blobs deleted in all
    kept: NotRequired[str]  # as ReplacedSweepStepOutput's


class PromoteOutput(TypedDict):
    promoted: str  # the generation key now served
    # blobs taken off the static website: the previous generation's preview folder, and any unserved re-run
    # generation's (activities.generations.unserved_generations_with_pages)
    previews_deleted: int



# ---------------------------------------------------------------- reuse (activities.reuse, ``only_new``)
REUSE = "reuse_previous_results"


class ReuseInput(TypedDict):
    """Reuse, for shards ``first .. first + count - 1`` of generation ``task_id`` (a generation key), the final
    results that generation ``previous`` (a generation key) has for the same images with unchanged ETags."""

    task_id: str
    previous: str
    first: int
    count: int
    # The pool job of the run that made this call, absent in calls of before and of runs without an id: a call that
    # runs after a later run replaced that one (terminated, then resumed: the same generation, listed again) writes
    # nothing (activities.superseded)
    run_job: NotRequired[str]


class ReuseOutput(TypedDict):
    reused: list[int]  # per shard, in order: images whose previous results were reused (its attempt 0)
    to_run: list[int]  # per shard: images its attempt 1 still runs (0: the shard is done without the pool)
