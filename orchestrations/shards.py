"""Shard-group sub-orchestrator: submit shard attempts, watch them with durable timers, resubmit what is missing.

Deterministic code only (no I/O, no clock, no random): every fact about the outside world arrives as an activity
result. The state (attempt, status, last known pool state and progress per shard) travels in the input, so
``continue_as_new`` keeps the history short however long the shards run. A generation goes on as new before its
history would pass ``history_events`` (``TRAPBATCH_HISTORY_EVENTS``): each episode replays the whole history of its
generation, so replay cost follows the history's size, not the number of polls.

In flight: at most the group's share of ``TRAPBATCH_MAX_IN_FLIGHT`` (``max_in_flight`` in the input, set by the task
orchestrator with ``core.shards.in_flight_shares``; an input without it, from before shares, uses the whole knob).

Polls cost what changed: the first poll of each generation asks the pool about every in-flight task by id (a full
reconciliation, which also returns the pool's change cursor); later polls pass that cursor and get only the tasks
whose state changed since (``GpuPool.changes``). So the orchestrator remembers which attempts run (``pool``), and asks
for the progress counters of those only. An in-flight attempt the full reconciliation finds unknown to the pool (its
submission never reached it) is submitted again, so no shard waits for ever on a task that does not exist.

A shard is done when its pool task completed AND its results cover every image of its manifest. Otherwise its missing
images (only those) become the next attempt, up to ``max_attempts``; after that the shard is given up and the merge
writes a ``failure`` entry for each image still missing.

Outages: a pool step (SUBMIT, POLL, RESUBMIT) whose Batch account or storage stays busy or out of reach through its
busy retries (``orchestrations.retries``: ``TRAPBATCH_BUSY_RETRY_ATTEMPTS``, ~18 minutes at 8) raises
``ServiceStayedBusy``. In a group whose input has ``outage_limit_s`` (every group a task starts since that field) that
does not fail the group, as the shards keep running on the pool whatever the orchestrator can see: the round is one
without news (the poll delay doubles to ``poll_max_s`` as after any quiet poll), the next poll asks by id (a full
reconciliation: the cursor is dropped), and the group's status carries a ``waiting`` note (``c.WAITING_KEY``: the
step, the service's words, ``since`` the outage began, ``until`` the group gives up, ``at`` the next try). A failed
SUBMIT leaves its shards pending (submitted again next round: pool task ids are deterministic, so one added already is
not added twice); a failed SUBMIT of shards the pool did not know leaves them to the next poll, which names them
unknown again; a failed RESUBMIT keeps the poll's completions (each attempt's end and node time counted once) and
leaves its shards ``owed`` (``c.ShardState``): the pool is not asked about their next attempt until a later round's
RESUBMIT, made for them first (RESUBMIT is idempotent: ``activities.pool.run_resubmit``), gets through, and the poll
after that asks by id. Why not forget the completions for the next poll to report again: the failed RESUBMIT may
have added some of the next attempts (one shard after another) that then ran, and ended, during the outage; asked
about the older attempt only, the group counted neither their node time nor their resubmission, could call a shard
done while its next attempt still ran, and (a cursor taken after such an attempt ended) waited up to
``FULL_POLL_EVERY`` rounds to see one that left images missing. The outage lasts
while each round has a step that ran out of busy retries, and ends with the first round that has none; it travels
through ``continue_as_new`` (``ShardsInput.outage``). A step that runs out once the outage has lasted
``outage_limit_s`` fails the group (``PoolOutOfReach``), saying since when and what to do. A cancel that a poll
reads while Batch is out of reach (the marker is in storage) ends the group cancelled, as asked, even though the
CANCEL of its pool tasks fails busy: the task's close of the pool job, its next step, ends them, or says it could not
(``pool_job_error``); before, the group failed over the outage, the task too, and the cancel was lost. Other
failures fail the group as before, and a group whose input lacks ``outage_limit_s`` (started by an earlier release)
fails at the first step that stays busy, as it did when it ran, so its history replays unchanged.

With ``outage_stops`` in its input as well (every group a task starts since that field), the group that fails over
an outage first stops the run's other groups (STOP_GROUPS, best effort, as for a worker failure no attempt fixes):
the task fails when one group's outage reaches the limit, as the Durable extension sends the task's next action (its
pool job's close) only once every group has ended (devhost README, row 26); before, each went on until its own
outage reached the limit, or its shards ended. So does a group that fails for any other reason it raises (a pool
step's failure that is not busy, after its retries: the job closed outside trapbatch, a refusal, a fault of ours):
the SDK's ``task_all`` fails the task orchestrator at that first failure, but the shim holds the task's close of
the job (its next action: ``Task.WhenAll``) and the framework keeps the task Running, its status still ``detecting``
(orchestrations.task sets ``failed`` once that close has returned), until every other group has ended
(``TaskOrchestrationExecutor.ExecuteCore``: ``if (!this.context.HasOpenTasks)``), which without the stop took as
long as their shards did, hours maybe, for a task that fails anyway (a post of the request meanwhile finds it
running). The stop is the group's last action before it raises, so a group that raised under an earlier release
(Failed then, never replayed) and one that raises under this one replay alike. Only a group the platform ends
(terminated, or failed by its replay) stops nothing. A group started without the field does not, as before. With
``reads_cancel`` (every group a task starts since that field), a round that asks the pool about no task (a SUBMIT
stayed busy with nothing else in flight, or every shard in flight is owed) reads the cancel marker all the same, with
a POLL about no task (``activities.pool.run_poll`` asks the pool nothing then): before, such a group saw neither a
cancel nor a stop until Batch answered, up to its outage limit. A group started without it reads none, as before.
That POLL passes the group's change cursor and gets it back (the pool was not asked, so there is no newer one):
before, it answered none, so the next poll asked by id, a full reconciliation after every round spent waiting out
an exit 69's back-off. Only the POLL's input and output changed (inputs are not part of the replay check: devhost
README, row 7), so a recorded history, whose POLL answered no cursor, replays as it ran.

A job deleted outside trapbatch: the SUBMIT that creates the run's pool job (``activities.pool.run_submit``) is a
group's first only. Once the group has had a task in the job (``_in_the_job``), each later SUBMIT (the next wave of
its pending shards, or shards a poll by id found unknown) says ``create_job: false`` and submits to the job as it is,
as a RESUBMIT does: a job missing then was deleted ('az batch job delete', the portal), the pool refuses
(``JobClosed``) and the group fails saying what to do, as ``activities.pool.check_job`` says for a deleted job. Why:
each round SUBMITs its next wave before it polls, so a job an operator deleted to stop the run was created again
under its id and the group went on, its deleted in-flight tasks later found unknown and run again: the deletion
silently undone, the GPU pool spending on. Known per group, from its own state: the run's groups share one job and
each one's first SUBMIT may create it, and a first SUBMIT that stayed busy through an outage (Batch answering 503
while its tasks were added) is tried again after a deletion. So the activity, not this code, decides whether a first
SUBMIT creates the job: only where no SUBMIT of the run found the job in the pool before (its marker in storage,
``activities.pool._ensure_job_once``); a retried first SUBMIT, or another group's, takes the job as it is and is
refused as a later one is. Only the SUBMIT's input changed (inputs are not part of the replay check: devhost README,
row 7), so a recorded history replays as it ran; an input without the field creates the job where the run has no
marker, as before.

Unavailable exits: with ``unavailable_wait_s`` in its input (every group a task starts since that field), a worker
exit ``STORAGE_UNAVAILABLE`` (69: storage, Key Vault, a model's host or the node's identity endpoint, IMDS, did not
answer the worker's first reads; nothing was written) spends none of the shard's ``max_attempts`` while the shard's
first such exit was less than ``unavailable_wait_s`` ago (``UNAVAILABLE_WAIT_S``). Its next attempt is owed, as
after a RESUBMIT that stayed busy, and made only once a back-off has passed (``poll_min_s`` doubling to
``poll_max_s`` with each such exit: ``ShardState.retry_at``); its RESUBMIT, the first to hold that attempt
(``ShardState.unsent``), keeps the round's change cursor, where one made again after an outage has the next poll ask
by id. Past the wait, a 69 counts as any exit, so the shard ends after at most ``max_attempts`` more. Why: a node
whose IMDS stopped answering past its token's expiry exits 69 in seconds, so, idle again at once, it took most of
the queued attempts, and every shard it took was given up after three, minutes into the outage, with a failure entry
for each of its images though nothing was wrong with them. A group started without the field counts a 69 as any
exit, as before, so its history replays unchanged. While shards wait so, the group's status says so
(``c.UNREACHABLE_KEY``: how many, the worker's own words for the first one's exit, since when, until when its exits
spend no attempt, and the next try), as its ``waiting`` note says an outage: a 69 on every attempt is mostly a
misconfiguration (a node without outbound internet downloading a published model, a firewall), which idles the pool
up to ``unavailable_wait_s`` before any shard is given up, and the counts alone showed only shards "queued".

With ``unavailable_restarts`` as well (every group a task starts since that field), the wait counts from the shard's
first 69 since its last attempt that got past start-up (``UnavailableWaits.restart``: it wrote results, or its worker
exited with a code that comes only after start-up, ``PAST_START_UP``), each new wait's back-off from ``poll_min_s``
again. Why: a shard that met a short outage early, then ran (an attempt that wrote results and failed later, or
ended with images missing), counted each 69 of a second short outage hours later at once, as its first 69 was long
past, and was given up with a failure entry for images that were fine. Bounded all the same: each restart follows
an attempt that spent one of ``max_attempts``, so a shard has at most ``max_attempts`` + 1 waits. A group started
without the field keeps one wait from the shard's first 69 ever, as before, so its history replays unchanged.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Generator, cast

import azure.durable_functions as df
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType

from core import contracts as c
from core.contracts import ShardStatus, Stage
from core.failures import failures_without_secrets
from core.settings import OrchestrationKnobs
from gpu_batch.exit_codes import (CANCELLED, OK, OUTPUT, OUTPUT_TAKEN, SERVER_LOST, STORAGE_UNAVAILABLE, TASK_ENDED,
                                  pool_ended, unfixable_reason)
from gpu_batch.layout import parse_pool_task_id, pool_job_id, pool_task_id
from orchestrations.retries import (POOL_RETRY, STORAGE_RETRY, ServiceStayedBusy, busy_reason, call, failed_type,
                                   is_busy, show_waiting, spend_reserve)

bp = df.Blueprint()

RUNNING, QUEUED = "running", "queued"

# History events one awaited task adds: its TaskScheduled/TimerCreated, its completion, and the episode boundary
# (OrchestratorCompleted + OrchestratorStarted) around the completion's delivery. Each of our awaits is one task.
EVENTS_PER_TASK = 4


def round_events(busy_retry_attempts: int = 0) -> int:
    """History events one poll round can add at most: the poll timer, the poll, a SUBMIT again of the shards the
    poll named unknown, a resubmission and the next submission (each an activity call through ``call``: every
    attempt, and a retry timer between two attempts, as many as a busy failure may make: ``busy_retry_attempts``), a
    cancel, and the generation's closing events. A round of an outage (module docstring) adds no more: a step that
    ran out of busy retries made the calls counted here, and the round makes none after it but the next round's. (A
    cancel or a STOP_GROUPS ends a round in place of its last calls, so counting the cancel too is a margin; a round
    that reads only the cancel marker makes its POLL in place of the poll. One exception, once, as the group ends:
    the STOP_GROUPS of a group failing over an outage, ``outage_stops``, follows its last step, which may be the
    round's fourth call, so that generation may pass ``history_events`` by that call's events.)

    Groups started before the SUBMIT of unknown shards was counted recorded the three-call value (72 at 3 busy
    attempts, 192 at 8) in their input and replay with it (``ShardsInput.round_events``); only groups started since
    get this one.

    Why a generation that passes ``history_events`` (the STOP_GROUPS above; or a threshold below one worst round:
    ``MIN_HISTORY_EVENTS``, 200, holds one up to 6 busy attempts, 188 events, not 7, 220, nor the default 8, 252;
    such a group goes on as new after every round) is no fault to fix: the threshold is a replay-cost target, not a
    platform limit (the Durable runtime stores a history of any length; a long one costs memory and load time at
    each replay: ``IDurableOrchestrationContext.ContinueAsNew``'s remarks), and the overshoot is bounded. A
    generation holds at most the larger of ``history_events`` and its first SUBMIT plus one round, plus, once, as
    the group fails, the STOP_GROUPS call (``2 * attempts - 1`` tasks of 4 events: 60 at 8 busy attempts, 156 at
    the most, 20). Nothing carries history from one generation to the next (``continue_as_new`` starts each from
    its input: state, delay, outage), so no number of rounds out of reach, or of generations, makes one longer
    (the orchestration tests measure each generation: ``test_no_generation_passes_its_threshold_...``). A one-round
    generation costs a poll by id at its start (no cursor yet), which the deployment chose with its small value."""
    call_tasks = 2 * max(POOL_RETRY.attempts, busy_retry_attempts) - 1
    return EVENTS_PER_TASK * (1 + 4 * call_tasks + 1) + 4


# What a group recorded as ``ShardsInput.round_events`` before busy retries (tests/orchestrations/
# test_replay_constants.py pins it): ``round_events()`` as it was then, when a round counted three calls (poll,
# resubmission, next submission) of three attempts each. A group started since records
# ``round_events(knobs.busy_retry_attempts)``.
ROUND_EVENTS = 72
# What a group started before ``ShardsInput.round_events`` was recorded replays with: ROUND_EVENTS then. Where a
# generation continues as new decides which actions it schedules, so a running group must keep its own value
# (tests/orchestrations/test_replay_constants.py).
LEGACY_ROUND_EVENTS = 72

# How long a group waits out its pool steps being out of reach (module docstring, "Outages") before it fails, at the
# least: 6 hours, or a pool task's time limit where that is longer (``outage_limit_s``). Why: long enough for a
# regional Batch or Storage incident that the shards, running on regardless, would have outlasted anyway (a
# ten-million-image task is hours of GPU time; failing it over a 30-minute outage costs its shards' restart); no
# longer than a pool task may run (TRAPBATCH_MAX_TASK_SECONDS, 6 hours by default), so by then every shard that ran
# when the outage began has ended, and a person, told, does better than a group polling on: a pool or credentials
# gone for good answer busy too (a network error), and the failure closes the job, which stops the nodes' cost.
OUTAGE_LIMIT_S = 6 * 3600

# How long a shard's worker exits STORAGE_UNAVAILABLE (69) spend none of its attempts, from its first (module
# docstring, "Unavailable exits"), for a group started now (``ShardsInput.unavailable_wait_s``). Why an hour and not
# OUTAGE_LIMIT_S: an identity endpoint's, storage's or a resolver's blip lasts minutes, and a 69 that lasts an hour
# is seldom a passing one (a firewall that resets every connection to a model's host, a node without a resolver:
# ``gpu_batch.worker.loader``), while the pool's nodes, paid for, mostly wait meanwhile. About ten attempts of each such
# shard in that hour at the default poll knobs: back-offs of 30, 60, 120, 240 s, then 300 s, each after the poll
# that saw the exit (the orchestration tests count 9 before the hour, then the 3 counted ones).
UNAVAILABLE_WAIT_S = 3600


def outage_limit_s(knobs: OrchestrationKnobs) -> int:
    """``ShardsInput.outage_limit_s`` for a group started now (recorded in its input: a later release that changes
    the rule does not move a running group's end)."""
    return max(OUTAGE_LIMIT_S, int(knobs.max_task_seconds))


class PoolOutOfReach(ServiceStayedBusy):
    """A group's pool steps stayed out of reach longer than its ``outage_limit_s``: the group, and so the task, fails
    saying since when and what to do."""


def _outage_goes_on(context: df.DurableOrchestrationContext, outage: c.PoolOutage | None, busy: ServiceStayedBusy,
                    tried_at: datetime, limit_s: int) -> c.PoolOutage:
    """The outage with ``busy`` (a step that ran out of busy retries, first called at ``tried_at``) added: it began
    then, or earlier with ``outage``. Raises ``PoolOutOfReach`` once it has lasted ``limit_s``."""
    since = outage["since"] if outage else tried_at.isoformat()
    lasted_s = (context.current_utc_datetime - datetime.fromisoformat(since)).total_seconds()
    if lasted_s >= limit_s:
        show_waiting(context, None)
        # what to do before the service's words: a status shows the first 500 characters (core.errors.failure_line).
        # Posted again as it was, a failed task resumes its own run from what its pool tasks wrote (api.starters
        # ``_generations``); with "rerun" or "only_new" it would be a new run, reusing only a completed one's results.
        if failed_type(busy) == "JobDisabled":  # not an outage: a job someone disabled (activities.pool.check_job)
            raise PoolOutOfReach(
                f"the pool job stayed disabled outside trapbatch (Batch starts none of its tasks until 'az batch job "
                f"enable'; a shard group waits {limit_s / 3600:g} hours at most, its pool steps held up since "
                f"{since}, {lasted_s / 3600:.1f} hours): the task ends that job; post the same request again, without "
                "\"rerun\" or \"only_new\", and leave its new job enabled: it resumes from the results its pool tasks "
                f"wrote. {busy.step} said: {busy.reason}") from busy
        raise PoolOutOfReach(
            f"the pool or its storage has been out of reach since {since} ({lasted_s / 3600:.1f} hours; a shard "
            f"group waits {limit_s / 3600:g} at most): once Azure Batch and Storage answer again, post the same "
            "request again, without \"rerun\" or \"only_new\": it resumes from the results its pool tasks wrote "
            f"(those still running may finish meanwhile). {busy.step} stayed busy through every retry: "
            f"{busy.reason}") from busy
    return c.PoolOutage(since=since, step=busy.step, reason=busy.reason)


def _outage_note(outage: c.PoolOutage, limit_s: int, at: datetime) -> dict[str, Any]:
    """The status's ``waiting`` note while an outage lasts (module docstring); ``at``: when the next step is tried."""
    until = datetime.fromisoformat(outage["since"]) + timedelta(seconds=limit_s)
    return {"step": outage["step"], "reason": outage["reason"], "at": at.isoformat(), "since": outage["since"],
            "until": until.isoformat()}


def _pool_step(context: df.DurableOrchestrationContext, name: str, payload: Any, outlast: bool,
               awaited: list[int]) -> Generator[Any, Any, tuple[Any, ServiceStayedBusy | None]]:
    """``call`` of a pool activity through ``POOL_RETRY``, counted in ``awaited``: its result and None, or, with
    ``outlast`` (the module docstring's "Outages"), None and the ``ServiceStayedBusy`` it would raise otherwise. A
    busy failure that ``call`` raised as it is (``TRAPBATCH_BUSY_RETRY_ATTEMPTS`` at 3: no more calls than any
    other failure) counts as one too; any other failure propagates."""
    try:
        value = yield from counted(call(context, name, POOL_RETRY, payload), awaited)
    except Exception as exc:  # noqa: BLE001 - the step's last failure, as ``call`` raises it
        if not outlast or not (isinstance(exc, ServiceStayedBusy) or is_busy(exc)):
            raise
        if isinstance(exc, ServiceStayedBusy):
            return None, exc
        return None, ServiceStayedBusy(str(exc), step=name, reason=busy_reason(exc))
    return value, None


# The events that complete a task this orchestrator awaits (activities and timers; it raises and awaits no external
# events and starts no sub-orchestrations): the SDK resumes the orchestrator once per such event
# (TaskOrchestrationExecutor.process_event).
_COMPLETIONS = frozenset({HistoryEventType.TASK_COMPLETED, HistoryEventType.TASK_FAILED, HistoryEventType.TIMER_FIRED})


def history_so_far(context: df.DurableOrchestrationContext, awaited: int) -> int:
    """Events of this generation's history up to the orchestrator's current point, read from the history itself.

    The SDK hands the orchestrator the whole history of its generation as ``context.histories`` (azure-functions-
    durable 1.7.0, ``models/DurableOrchestrationContext.py``: ``self._histories``, property ``histories``), the same
    list ``TaskOrchestrationExecutor.execute`` walks, resuming the generator at each completion event. Its length is
    not replay-safe: a later episode's replay would see a longer list at the same point of the code and decide
    differently (non-determinism). The position of the ``awaited``-th completion event is replay-safe: history is
    append-only and this orchestrator waits on one task at a time, so its n-th completion is always the n-th
    completion event, wherever the replay is.
    """
    seen = 0
    for index, event in enumerate(context.histories):
        if event.event_type in _COMPLETIONS:
            seen += 1
            if seen == awaited:
                return index + 1
    return len(context.histories)


def counted(inner: Generator[Any, Any, Any], tally: list[int]) -> Generator[Any, Any, Any]:
    """``yield from inner``, counting in ``tally[0]`` the tasks it waited on (completed or failed)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            task = inner.throw(error) if error is not None else inner.send(value)
        except StopIteration as stop:
            return stop.value
        try:
            value, error = (yield task), None
        except Exception as exc:  # noqa: BLE001 - a failed task, handed back to ``inner`` as the SDK raised it
            value, error = None, exc
        tally[0] += 1


def _progress(state: dict[str, c.ShardState]) -> c.ShardCounts:
    """The group's counts for its status and outcome. A shard whose next attempt waits out an exit 69's back-off
    (``unsent``: in no RESUBMIT yet) has no pool task: it counts as ``unavailable_waiting``, not ``pool_queued``,
    and that attempt is no resubmission until its RESUBMIT is made (a group cancelled meanwhile made none)."""
    counts: dict[str, int] = {
        "shards": len(state), "pending": 0, "submitted": 0, "done": 0, "given_up": 0,
        "images_done": 0, "images_failed": 0, "images_missing": 0, "resubmissions": 0,
        "images_in_progress": 0, "pool_running": 0, "pool_queued": 0, "images_progress": 0,
        "attempts_ended": 0, "attempts_timed": 0, "unavailable_waiting": 0}
    node_seconds = 0.0
    for s in state.values():
        counts["attempts_ended"] += s.get("ended", 0)
        counts["attempts_timed"] += s.get("timed", 0)
        node_seconds += s.get("node_s", 0.0)
        counts[s["status"]] += 1
        counts["images_done"] += s.get("covered", 0)
        counts["images_failed"] += s.get("failed", 0)
        counts["images_missing"] += s.get("missing", 0) if s["status"] == ShardStatus.given_up else 0
        unsent = s["status"] == ShardStatus.submitted and bool(s.get("unsent"))
        counts["resubmissions"] += s["attempt"] - 1 - unsent
        counts["images_progress"] += max(s.get("seen", 0), s.get("covered", 0))
        if unsent:
            counts["unavailable_waiting"] += 1
        elif s["status"] == ShardStatus.submitted:
            running = s.get("pool") == RUNNING
            counts["pool_running" if running else "pool_queued"] += 1
            counts["images_in_progress"] += s.get("running", 0) if running else 0
    return cast(c.ShardCounts, {**counts, "node_seconds": round(node_seconds, 3)})


def _unreachable(state: dict[str, c.ShardState], wait_s: int, now: datetime) -> dict[str, Any]:
    """The status's ``unreachable`` note (module docstring, "Unavailable exits"), as ``{c.UNREACHABLE_KEY: note}``, or
    {} when no shard waits so: the submitted shards whose last attempt exited 69 within the wait and whose next one
    is not running yet (in no RESUBMIT yet, or queued in the pool); the reason and since of the earliest such exit.
    Only while their wait lasts at ``now`` (the orchestration's time): a shard deferred just before its wait ended
    spends an attempt at its next exit, so a note kept past ``until`` said "no attempt spent until" a past time."""
    waiting = [s for s in state.values() if s["status"] == ShardStatus.submitted and "unavailable_reason" in s
               and "unavailable_since" in s and s.get("pool") != RUNNING
               and datetime.fromisoformat(s["unavailable_since"]) + timedelta(seconds=wait_s) > now]
    if not wait_s or not waiting:
        return {}
    first = min(waiting, key=lambda s: datetime.fromisoformat(s["unavailable_since"]))
    since = datetime.fromisoformat(first["unavailable_since"])
    note: dict[str, Any] = {"shards": len(waiting), "reason": first["unavailable_reason"],
                            "since": since.isoformat(), "until": (since + timedelta(seconds=wait_s)).isoformat()}
    retry_ats = [datetime.fromisoformat(s["retry_at"]) for s in waiting if s.get("unsent") and "retry_at" in s]
    if retry_ats:
        note["at"] = min(retry_ats).isoformat()
    return {c.UNREACHABLE_KEY: note}


# The worker's words for an exit 69 as the ``unreachable`` note keeps them: the status stays small (core.status_size)
UNREACHABLE_REASON_CHARS = 300


def _outcome(state: dict[str, c.ShardState], cancelled: bool) -> c.ShardsOutcome:
    # A cast: mypy wants every optional key spelled out when a TypedDict is built from ** items.
    out = cast(c.ShardsOutcome, {"cancelled": cancelled, **_progress(state)})
    errors = [s["pool_error"] for s in state.values() if s["status"] == ShardStatus.given_up and s.get("pool_error")]
    if errors:
        out["pool_error_shards"], out["pool_error"] = len(errors), errors[0]
    examples = [s["gave_up"] for s in state.values() if s["status"] == ShardStatus.given_up and "gave_up" in s]
    if examples:  # the first few only: the outcome goes into the task's history (``given_up`` counts them all)
        out["given_up_examples"] = examples[: c.GIVEN_UP_EXAMPLES]
    reused = [s["reused"] for s in state.values() if "reused" in s]
    if reused:  # only_new: what of images_done no pool attempt ran (the task tells the pool's work apart by it)
        out["images_reused"] = sum(reused)
    if reused or any("earlier" in s for s in state.values()):
        out["images_ran"] = _images_ran(state)
    return out


def _images_ran(state: dict[str, c.ShardState]) -> int:
    """Of ``images_done``, those this run's pool attempts gave a final result, shard by shard: each shard's coverage
    past what it started with (``reused``: an ``only_new`` re-run's; ``earlier``: a resumed run's, final already in
    its listing), never below 0. Why per shard: the poll's coverage is over every attempt, an earlier run's too, and
    it can shrink below the listing's count (an earlier attempt's results blob deleted, or replaced by a torn write,
    between the listing and the poll); subtracted from the group's or the task's sum, one such shard hid what the
    pool ran in the others, and a run whose pool processed images failed as "no image was processed"
    (``orchestrations.task._fail_if_the_pool_never_ran``). Returned only by a group whose state has such a count
    (``_outcome``): one started without (by an earlier release, whose starting coverage it cannot tell apart) returns
    none, and the task counts it as before."""
    return sum(max(0, s.get("covered", 0) - s.get("reused", 0) - s.get("earlier", 0)) for s in state.values())


def _why_given_up(sid: str, row: c.CompletedShard, by_pool: bool) -> c.GivenUpShard:
    """How a shard's last attempt ended, in words a person can act on: the pool's reason when it ended the attempt
    (its time limit: TaskEnded), else the worker's exit code and its own last error (or the pool's message)."""
    code, failure_code = row.get("exit_code"), row.get("failure_code")
    said = row.get("worker_message") or row.get("failure_message") or ""
    if by_pool:
        reason = said or str(failure_code or "no message")
        if failure_code and not reason.startswith(failure_code):
            reason = f"{failure_code}: {reason}"
        if failure_code == TASK_ENDED:
            reason += " (the pool's time limit, TRAPBATCH_MAX_TASK_SECONDS, or a terminate)"
    elif not code:  # it exited 0 (or gave no code) but results for some images are missing
        reason = f"the worker exited {code} without results for {row['missing']} image(s)" + (f": {said}" if said
                                                                                            else "")
        if row.get("retryable_reasons"):  # why: their reads (or their batch) failed, by reason
            reason += (" (failed as retryable: " + ", ".join(f"{k} {n}" for k, n in row["retryable_reasons"].items())
                       + ")")
    else:
        reason = f"the worker exited {code}{_EXIT_MEANS.get(code, '')}: {said or 'no message; see the task log'}"
    why = c.GivenUpShard(shard=sid, attempts=row["attempt"], exit_code=code, by="pool" if by_pool else "worker",
                         reason=reason[: c.GIVEN_UP_REASON_CHARS])
    if failure_code:
        why["failure_code"] = failure_code
    if not by_pool and not code and row.get("retryable_reasons"):  # state and outcome only: no action
        why["failure_reasons"] = dict(row["retryable_reasons"])
    return why


# What a worker's exit code says beyond its message (gpu_batch.exit_codes; 137 = 128 + SIGKILL).
_EXIT_MEANS = {OUTPUT: " (its results could not be written)", 137: " (killed: most often out of memory)",
               SERVER_LOST: " (the node's resident worker went away mid-shard)",
               CANCELLED: " (stopped by SIGTERM, as a terminate or a node going away sends; its results so far kept)"}


def _unknown_shards(state: dict[str, c.ShardState], unknown: list[str]) -> list[str]:
    """Shards whose in-flight attempt the pool said it does not know (a full reconciliation's ``unknown``), in
    shard order. A history recorded before polls reported them has none, so it replays unchanged."""
    lost = []
    for tid in unknown:
        s = _current(state, tid)
        if s is not None and s["status"] == ShardStatus.submitted:
            lost.append(parse_pool_task_id(tid)[0])
    return sorted(set(lost))


def _in_the_job(state: dict[str, c.ShardState]) -> bool:
    """Whether the group has had a task in the run's pool job (module docstring, "A job deleted outside
    trapbatch"): a shard in flight (``owed`` ones too: their earlier attempt was submitted) or given up, or one with
    a pool attempt ended or past its first. Not "any shard not pending": a re-run's reused shards start ``done``
    with no pool task (``orchestrations.task._reused_state``). A state of before ``ended`` whose only shards left
    the pool done at their first attempt reads as not in the job: its SUBMIT creates the job, as before."""
    return any(s["status"] in (ShardStatus.submitted, ShardStatus.given_up) or s.get("ended") or s["attempt"] > 1
               for s in state.values())


def _pool_ids(state: dict[str, c.ShardState], shards: list[str]) -> list[str]:
    return [pool_task_id(sid, state[sid]["attempt"]) for sid in shards]


def _current(state: dict[str, c.ShardState], pool_task: str) -> c.ShardState | None:
    """The shard state a report about ``pool_task`` may change: its shard's in-flight attempt, else None (stale)."""
    try:
        sid, attempt = parse_pool_task_id(pool_task)
    except ValueError:
        return None
    s = state.get(sid)
    if s is None or attempt != s["attempt"] or s["status"] != ShardStatus.submitted:
        return None
    return s


def _show(s: c.ShardState) -> None:
    """Raise the images shown as done for this shard to what is known now; never lower them."""
    s["seen"] = max(s.get("seen", 0), s.get("covered", 0) + s.get("running", 0))


class ShardUnfixable(RuntimeError):
    """A worker exited with a code no further attempt can fix (``gpu_batch.exit_codes``): the task fails now, with the
    worker's own message, instead of resubmitting every shard ``max_attempts`` times for the same failure."""


def _unfixable(row: c.CompletedShard) -> ShardUnfixable | None:
    reason = unfixable_reason(row["exit_code"], row.get("failure_code"))  # TaskEnded: the exit code is not the worker's
    if reason is None or row["missing"] == 0:
        return None
    said = row.get("worker_message") or row["failure_message"] or "no message; see the pool task's log"
    return ShardUnfixable(f"{reason} (shard {row['shard_id']} attempt {row['attempt']}, worker exit code "
                          f"{row['exit_code']}): {said}")


# Worker exits that come only once the worker got past its start-up, the reads an exit 69 stands for (the manifest,
# the images' account and its secret, the model: gpu_batch.worker.__main__._run, in that order): 0 after the shard
# ran, OUTPUT when the results found or written fail, OUTPUT_TAKEN at a results write. Not BAD_INPUT, MODEL or SOURCE
# (start-up failures themselves), nor an exit the pool gave (``pool_ended``) or any other (137 killed, 1 a crash:
# start-up or not, the code does not say), unless results were written (``restart``). SERVER_LOST is such a crash:
# the resident worker died after it accepted the shard, which it does before ``run_shard`` reads the manifest
# (gpu_batch.worker.resident ``Server._serve_one``: "accepted", then ``_run``), so at start-up as well as mid-shard.
PAST_START_UP = frozenset({OK, OUTPUT, OUTPUT_TAKEN})


class UnavailableWaits:
    """A group's rule for worker exits ``STORAGE_UNAVAILABLE`` (module docstring, "Unavailable exits"): ``now`` (the
    orchestration's replay-safe time), ``wait_s`` from a shard's first such exit, and the back-off's bounds;
    ``restarts`` (``ShardsInput.unavailable_restarts``): an attempt that got past start-up ends the wait, so a
    shard's next 69 opens a new one (``restart``)."""

    def __init__(self, now: datetime, wait_s: int, first_s: float, most_s: float, restarts: bool = False) -> None:
        self.now, self.wait_s, self.first_s, self.most_s = now, wait_s, first_s, most_s
        self.restarts = restarts

    def restart(self, s: c.ShardState, row: c.CompletedShard, by_pool: bool, wrote: bool) -> None:
        """With ``restarts``: end the shard's wait when ``row``'s attempt got past start-up (the outage its first 69
        met was over for it): it wrote results (``wrote``: the shard covers more images than before it), or its worker
        exited with a code that comes only after start-up (``PAST_START_UP``). The shard's next 69 then opens a wait
        of its own, its back-off from ``first_s`` again. The exits 69 of earlier waits stay in ``unavailable`` (its
        attempts not spent, so the attempt number less them is what was spent)."""
        if not self.restarts or "unavailable_since" not in s or row.get("exit_code") == STORAGE_UNAVAILABLE:
            return
        if wrote or (not by_pool and row.get("exit_code") in PAST_START_UP):
            del s["unavailable_since"]
            s["unavailable_earlier"] = s.get("unavailable", 0)

    def defer(self, s: c.ShardState, row: c.CompletedShard, by_pool: bool) -> bool:
        """Whether ``row``'s attempt (which left images missing) spends none of the shard's attempts: its worker
        exited 69 and the shard's first such exit (since ``restart`` last ended a wait) was less than ``wait_s`` ago.
        If so, counted and the next attempt's earliest time set (``retry_at``)."""
        if by_pool or row.get("exit_code") != STORAGE_UNAVAILABLE:
            return False
        since = s.get("unavailable_since") or self.now.isoformat()
        if (self.now - datetime.fromisoformat(since)).total_seconds() >= self.wait_s:
            return False
        waited = s.get("unavailable", 0) + 1
        s["unavailable"], s["unavailable_since"] = waited, since
        s["unsent"] = True  # its next attempt is in no RESUBMIT yet: the pool cannot have it (the round loop)
        said = row.get("worker_message") or row.get("failure_message") or "no message; see the pool task's log"
        s["unavailable_reason"] = said[:UNREACHABLE_REASON_CHARS]  # the status's note (_unreachable)
        this_wait = waited - s.get("unavailable_earlier", 0)  # a state without restarts: every one so far
        backoff = min(self.first_s * 2 ** min(this_wait - 1, 16), self.most_s)
        s["retry_at"] = (self.now + timedelta(seconds=backoff)).isoformat()
        return True


def _due(s: c.ShardState, now: datetime) -> bool:
    """Whether an owed shard's RESUBMIT may be made now: at once, unless an unavailable exit set its ``retry_at``."""
    retry_at = s.get("retry_at")
    return retry_at is None or datetime.fromisoformat(retry_at) <= now


def _record_completions(state: dict[str, c.ShardState], completed: list[c.CompletedShard],
                        max_attempts: int, waits: UnavailableWaits | None = None) -> tuple[int, list[str]]:
    """Update the state from the poll's completed pool tasks: how many were news (not stale reports about an older
    attempt), and the shards whose missing images need a next attempt now. ``waits``: the group's rule for exits 69
    (``UnavailableWaits``; None: counted as any exit), whose next attempt is owed for later instead.

    Raises ``ShardUnfixable`` for a worker failure no attempt can fix."""
    to_resubmit = []
    fresh = 0
    for row in completed:
        s = state[row["shard_id"]]
        if row["attempt"] != s["attempt"] or s["status"] != ShardStatus.submitted:
            continue  # a stale report about an older attempt
        spent = s["attempt"] - s.get("unavailable", 0)  # attempts counted against max_attempts
        failure = _unfixable(row)
        if failure is not None:
            # Twice, or with no attempt left: the task fails now. Once: another attempt (another node) runs it, as
            # these exits also come from passing causes (a model download cut short, a storage timeout reading the
            # manifest, a node whose GPU fell off the bus); for a truly unfixable one that costs one more start of
            # each shard that met it (at most the group's in-flight share), against failing a whole run on one node.
            if s.get("unfixable") or spent >= max_attempts:
                raise failure
            s["unfixable"] = str(failure)[:300]
        fresh += 1
        _count_node_time(s, row)
        wrote = row["covered"] > s.get("covered", 0)  # this attempt wrote results (UnavailableWaits.restart)
        s["covered"], s["failed"], s["missing"] = row["covered"], row["failed"], row["missing"]
        # The pool ended it, not a worker exit: failure code TaskEnded (its time limit, with an exit code of the
        # operating system's), or a failure without an exit code. A row of before failure codes has none, and is
        # judged as it was then, so a recorded history replays unchanged.
        by_pool = pool_ended(row.get("exit_code"), row.get("failure_code"), row.get("failure_message"))
        if waits is not None:
            waits.restart(s, row, by_pool, wrote)
        if by_pool:
            s["pool_error"] = str(row.get("failure_message") or row.get("failure_code"))[:300]
        else:
            s.pop("pool_error", None)
        s["running"] = 0
        s.pop("pool", None)
        s.pop("unavailable_reason", None)  # an exit 69 deferred below says it again (UnavailableWaits.defer)
        _show(s)
        if row["missing"] == 0:
            s["status"] = ShardStatus.done
        elif waits is not None and waits.defer(s, row, by_pool):  # made once its back-off passed (the round loop)
            s["attempt"] += 1
            s["pool"], s["owed"] = QUEUED, True
        elif spent < max_attempts:
            s["attempt"] += 1
            s["pool"] = QUEUED
            to_resubmit.append(row["shard_id"])
        else:
            s["status"] = ShardStatus.given_up
            s["gave_up"] = _why_given_up(row["shard_id"], row, by_pool)  # state and outcome only: no action
    return fresh, to_resubmit


def _count_node_time(s: c.ShardState, row: c.CompletedShard) -> None:
    """Add an ended attempt's node time to its shard (the task's cost, core.cost). Called once per attempt: only for
    fresh reports, so a report repeated by the change cursor's overlap is not counted twice."""
    s["ended"] = s.get("ended", 0) + 1
    seconds = row.get("seconds")
    if isinstance(seconds, (int, float)) and seconds >= 0:
        s["timed"] = s.get("timed", 0) + 1
        s["node_s"] = round(s.get("node_s", 0.0) + float(seconds), 3)


def _record_pool_view(state: dict[str, c.ShardState], poll: c.PollOutput) -> None:
    """The pool states and progress counters the poll reported, for the attempts still in flight."""
    for tid, pool_state in (poll.get("states") or {}).items():
        s = _current(state, tid)
        if s is not None:
            s["pool"] = RUNNING if pool_state == RUNNING else QUEUED
    for tid, images in (poll.get("progress") or {}).items():
        s = _current(state, tid)
        if s is not None and isinstance(images, int):
            s["running"] = max(s.get("running", 0), images)  # a counter read late never lowers what was seen
            _show(s)


# A poll asked by id (no cursor) names the tasks the pool does not know (``PollOutput.unknown``): one deleted outside
# trapbatch, or a submission it never received, is resubmitted then. Only changes are asked otherwise, and such a
# task never changes: with only each generation's first poll asking by id, one waited up to ~10 hours (1,000
# history events at ~8 a round of 300 s). Asking by id costs a listing of the group's in-flight tasks.
FULL_POLL_EVERY = 12


@bp.orchestration_trigger(context_name="context", orchestration=c.SHARDS_ORCHESTRATOR)
@failures_without_secrets
def run_shards(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.ShardsOutcome]:
    """The group (``_run_shards``); one that fails (over an outage, or for any other reason it raises) stops the
    run's other groups first, where its input has ``outage_stops`` (module docstring, "Outages"). A worker failure no
    attempt fixes (``ShardUnfixable``) has stopped them already."""
    data: c.ShardsInput = context.get_input()
    try:
        return (yield from _run_shards(context, data))
    except Exception as failure:  # noqa: BLE001 - raised again below, after the stop
        if data.get("outage_stops") and data.get("outage_limit_s") and not isinstance(failure, ShardUnfixable):
            yield from _stop_the_run(context, data["task_id"], data.get("job_id") or pool_job_id(data["task_id"]),
                                     str(failure))
        raise


def _stop_the_run(context: df.DurableOrchestrationContext, task_id: str, job_id: str,
                  reason: str) -> Generator[Any, Any, None]:
    """Ask the run's other shard groups to stop (STOP_GROUPS: the run's cancel marker, which each reads at its next
    poll), before this one fails the task. Best effort: the group's own failure is the task's, and a marker that
    cannot be written (storage out of reach too) leaves the others to end as the job closes or at their own bound.
    Never refused for the action budget (``retries.spend_reserve``): the group's last action."""
    spend_reserve(context)
    try:
        yield from call(context, c.STOP_GROUPS, STORAGE_RETRY, c.StopGroupsInput(
            task_id=task_id, job_id=job_id, reason=reason))
    except Exception:  # noqa: BLE001 - the failure that stops the run is what the task reports
        pass


def _run_shards(context: df.DurableOrchestrationContext,
                data: c.ShardsInput) -> Generator[Any, Any, c.ShardsOutcome]:
    task_id = data["task_id"]
    job_id = data.get("job_id") or pool_job_id(task_id)
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    limit = int(data.get("max_in_flight") or knobs.max_in_flight)
    state: dict[str, c.ShardState] = data.get("state") or {
        sid: c.ShardState(attempt=1, status=ShardStatus.pending) for sid in data["shards"]}
    delay = float(data.get("delay") or knobs.poll_min_s)
    round_events = int(data.get("round_events") or LEGACY_ROUND_EVENTS)
    outage_limit = int(data.get("outage_limit_s") or 0)  # 0: a pool step that stays busy fails the group (before)
    outage: c.PoolOutage | None = data.get("outage") if outage_limit else None
    # the group's failure over an outage stops the others (run_shards): carried to the next generation
    stops = bool(data.get("outage_stops")) and outage_limit > 0
    # a round that asks the pool about no task reads the cancel marker all the same (module docstring, "Outages")
    reads_cancel = bool(data.get("reads_cancel")) and outage_limit > 0
    # worker exits 69 spend no attempt for this long from a shard's first (module docstring, "Unavailable exits") ...
    unavailable_wait = int(data.get("unavailable_wait_s") or 0)
    # ... of the outage under way: an attempt that got past start-up opens a new wait for the shard's next 69
    unavailable_restarts = bool(data.get("unavailable_restarts")) and unavailable_wait > 0
    # The status comes first in every generation, before its first step is awaited (a SUBMIT in the first generation,
    # or in one gone on as new in an outage): on Azure an episode whose generation has set none stores none (only the
    # work item that went on as new keeps the status carried over: devhost README, fidelity row 33), so while that
    # SUBMIT retried a busy Batch the group showed no counts and no note that it waits (retries.show_waiting notes
    # only a status that is there). Went on as new in an outage, its note comes first too, so those retries keep
    # since and until. Custom status is no history action: replay is unchanged
    context.set_custom_status({"stage": Stage.detecting, **_progress(state),
                               **_unreachable(state, unavailable_wait, context.current_utc_datetime)})
    if outage is not None:
        show_waiting(context, _outage_note(outage, outage_limit, context.current_utc_datetime))
    cursor = ""  # each generation starts with a full reconciliation by id, which returns a fresh cursor
    awaited = [0]  # tasks this generation has waited on (history_so_far)
    polls = 0
    while True:
        gave_up = False  # a pool step of this round ran out of busy retries (only with outage_limit)
        in_flight = [sid for sid, s in state.items() if s["status"] == ShardStatus.submitted]
        pending = [sid for sid, s in state.items() if s["status"] == ShardStatus.pending]
        to_submit = pending[: max(0, limit - len(in_flight))]
        if to_submit:
            tried_at = context.current_utc_datetime
            submit = c.SubmitInput(task_id=task_id, job_id=job_id,
                                   shards=[(sid, state[sid]["attempt"]) for sid in to_submit])
            if _in_the_job(state):  # a job missing now was deleted outside trapbatch (module docstring)
                submit["create_job"] = False
            _, busy = yield from _pool_step(context, c.SUBMIT, submit, outage_limit > 0, awaited)
            if busy is None:
                for sid in to_submit:
                    state[sid]["status"], state[sid]["pool"] = ShardStatus.submitted, QUEUED
                in_flight += to_submit
            else:  # they stay pending: submitted again next round
                outage, gave_up = _outage_goes_on(context, outage, busy, tried_at, outage_limit), True
        context.set_custom_status({"stage": Stage.detecting, **_progress(state),
                                   **_unreachable(state, unavailable_wait, context.current_utc_datetime)})
        if not in_flight and not gave_up:
            break
        if outage is not None:  # shown through the round (its steps' own retries add their attempt): the next try
            show_waiting(context, _outage_note(outage, outage_limit,
                                               context.current_utc_datetime + timedelta(seconds=delay)))
        if polls and history_so_far(context, awaited[0]) + round_events > knobs.history_events:
            next_input = c.ShardsInput(task_id=task_id, job_id=job_id, knobs=knobs.to_dict(), state=state,
                                       delay=delay, shards=list(state), max_in_flight=limit,
                                       round_events=round_events)
            if outage_limit:
                next_input["outage_limit_s"] = outage_limit
                if outage is not None:
                    next_input["outage"] = outage
                if stops:
                    next_input["outage_stops"] = True
                if reads_cancel:
                    next_input["reads_cancel"] = True
            if unavailable_wait:
                next_input["unavailable_wait_s"] = unavailable_wait
                if unavailable_restarts:
                    next_input["unavailable_restarts"] = True
            context.continue_as_new(next_input)
            return {"continued": True}
        wake = context.current_utc_datetime + timedelta(seconds=delay)
        # an attempt owed after an exit 69 is made when its back-off ends, not up to a poll delay later (no such
        # attempt in a group without unavailable_wait_s: its timers are as before). Only a back-off still to come:
        # one that passed while its RESUBMIT stayed busy is due at once (_due), as any owed attempt, and held every
        # round of an outage to poll_min_s instead of the group's own back-off
        retry_ats = [at for s in state.values() if s.get("owed") and "retry_at" in s
                     if (at := datetime.fromisoformat(s["retry_at"])) > context.current_utc_datetime]
        if retry_ats:
            wake = min(wake, max(min(retry_ats), context.current_utc_datetime + timedelta(seconds=knobs.poll_min_s)))
        yield context.create_timer(wake)
        awaited[0] += 1
        poll: c.PollOutput | None = None
        fresh = 0
        resubmits: list[str] = []
        # not the owed (only with outage_limit): their next attempt may not be in the pool, nor its manifest written
        asked = [sid for sid in in_flight if not state[sid].get("owed")]
        if asked:  # else a submission stayed busy and nothing else runs, or only owed resubmissions: below
            request = c.PoolTasksInput(task_id=task_id, job_id=job_id, task_ids=_pool_ids(state, asked),
                                       running=[tid for sid, tid in zip(asked, _pool_ids(state, asked))
                                                if state[sid].get("pool") == RUNNING])
            # which attempt is a shard's last (the poll reads its whole results only then); none in a group without
            # unavailable_wait_s, whose POLL inputs stay as they were (an input is not part of DTFx's replay check)
            unspent = {pool_task_id(sid, state[sid]["attempt"]): n for sid in asked
                       if (n := state[sid].get("unavailable", 0))}
            if unspent:
                request["unavailable"] = unspent
            if cursor and polls % FULL_POLL_EVERY:  # every FULL_POLL_EVERY-th poll asks by id again (below)
                request["since"] = cursor
            tried_at = context.current_utc_datetime
            poll, busy = yield from _pool_step(context, c.POLL, request, outage_limit > 0, awaited)
            if busy is not None:  # no news this round
                outage, gave_up = _outage_goes_on(context, outage, busy, tried_at, outage_limit), True
        elif reads_cancel:  # the cancel marker only: a POLL about no pool task asks the pool nothing (run_poll)
            marker_only = c.PoolTasksInput(task_id=task_id, job_id=job_id, task_ids=[], running=[])
            if cursor:  # given back as it is (run_poll): the next poll lists changes after it, not asks by id
                marker_only["since"] = cursor
            tried_at = context.current_utc_datetime
            poll, busy = yield from _pool_step(context, c.POLL, marker_only, True, awaited)
            if busy is not None:  # storage out of reach too: read again next round
                outage, gave_up = _outage_goes_on(context, outage, busy, tried_at, outage_limit), True
        if poll is not None:
            cursor = poll.get("cursor") or ""
            if poll["cancelled"]:
                try:  # none in flight (a SUBMIT stayed busy): the task's close of the job ends what it may have added
                    if in_flight:
                        yield context.call_activity(c.CANCEL, c.PoolTasksInput(
                            task_id=task_id, job_id=job_id, task_ids=_pool_ids(state, in_flight)))
                except Exception as exc:  # noqa: BLE001 - Batch out of reach: cancelled all the same (docstring)
                    if not outage_limit or not is_busy(exc):
                        raise
                context.set_custom_status({"stage": Stage.cancelled, **_progress(state)})
                return _outcome(state, cancelled=True)
            _record_pool_view(state, poll)
            lost = _unknown_shards(state, poll.get("unknown") or [])
            if lost:  # a submission the pool never received: submit it again (a known id would be a no-op)
                tried_at = context.current_utc_datetime
                # their shards were submitted to the job: not created again (module docstring)
                _, busy = yield from _pool_step(context, c.SUBMIT, c.SubmitInput(
                    task_id=task_id, job_id=job_id, shards=[(sid, state[sid]["attempt"]) for sid in lost],
                    create_job=False), outage_limit > 0, awaited)
                if busy is not None:  # the next poll, by id, names them unknown again
                    outage, gave_up = _outage_goes_on(context, outage, busy, tried_at, outage_limit), True
            try:
                waits = (UnavailableWaits(context.current_utc_datetime, unavailable_wait, knobs.poll_min_s,
                                          knobs.poll_max_s, restarts=unavailable_restarts)
                         if unavailable_wait else None)
                fresh, resubmits = _record_completions(state, poll["completed"], knobs.max_attempts, waits)
            except ShardUnfixable as failure:  # the run's other groups stop too (activities.pool.run_stop_groups)
                yield from _stop_the_run(context, task_id, job_id, str(failure))
                raise failure
        owed: list[str] = []
        if poll is not None or not asked:  # a poll that stayed busy leaves them to a later round, as the rest
            # (one an exit 69 left owes its RESUBMIT only once its back-off passed: _due)
            owed = [sid for sid, s in state.items() if s.get("owed") and _due(s, context.current_utc_datetime)]
            resubmits = owed + [sid for sid in resubmits if sid not in owed]
        if resubmits:
            tried_at = context.current_utc_datetime
            resubmitted: c.ResubmitOutput | None
            resubmitted, busy = yield from _pool_step(context, c.RESUBMIT, c.ResubmitInput(
                task_id=task_id, job_id=job_id, shards=[(sid, state[sid]["attempt"]) for sid in resubmits]),
                outage_limit > 0, awaited)
            if busy is not None:  # made again in a later round, before the pool is asked about them (docstring)
                for sid in resubmits:
                    state[sid]["owed"] = True
                    state[sid].pop("unsent", None)  # this RESUBMIT may have added its attempt
                fresh = 0
                outage, gave_up = _outage_goes_on(context, outage, busy, tried_at, outage_limit), True
            elif any(not state[sid].get("unsent") for sid in owed):
                # an owed attempt may have been added, and have ended, before this round's cursor; not one an exit 69
                # left owed whose attempt no RESUBMIT held before (``unsent``, groups with unavailable_wait_s only):
                # added after the cursor, the next listing of changes has it, so no poll by id each time a node exits 69
                cursor = ""
            for outcome in resubmitted["shards"] if resubmitted is not None else []:
                # A resubmitted shard stays "submitted" under its new attempt number; if storage shows nothing
                # missing any more (results landed late), the shard is done, and no attempt was added.
                s = state[outcome["shard_id"]]
                s.pop("owed", None)
                s.pop("retry_at", None)
                s.pop("unsent", None)
                if not outcome["submitted"]:
                    s["covered"] = s.get("covered", 0) + s.get("missing", 0)
                    s["status"], s["missing"], s["attempt"] = ShardStatus.done, 0, s["attempt"] - 1
                    s.pop("pool", None)
                    # no attempt of it ends any more: the words an exit 69 left (the status's note) would ride in the
                    # state each continue_as_new carries, up to UNREACHABLE_REASON_CHARS a shard
                    s.pop("unavailable_reason", None)
                    _show(s)
        if gave_up:
            cursor = ""  # the next poll asks by id: a full reconciliation after the outage
        elif outage is not None:  # every step of this round got through: the outage is over
            outage = None
            show_waiting(context, None)
        delay = knobs.poll_min_s if fresh else min(delay * 2, knobs.poll_max_s)
        polls += 1
    return _outcome(state, cancelled=False)
