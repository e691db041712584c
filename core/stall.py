"""Whether a running task has stalled: no change of its orchestration for longer than any of its waits explains.

Why: on Azure an action the Durable extension refuses (an activity the app does not have, one action past
``maxOrchestrationActions``, a retry interval over six days, a sub-orchestration id it rejects) is dropped without a
trace, and the instance stays Running for ever with no failure recorded (``OutOfProcOrchestrationShim``
``ProcessAsyncActionsV2`` swallows the faulted call; devhost README, fidelity rows 45 and 47). A lost message or a
platform bug ends the same way. trapbatch guards against the known causes (``tests/unit/test_registered_functions.py``,
``core.fanin.SAFE_MAX_PARTS``), but whatever the cause, a task that never moves again must not show "running" for ever
with nothing said: ``GET /api/tasks/{id}`` adds ``stalled`` (this module), with what to do, and so does each row of
``GET /api/tasks`` (``api.starters._list_liveness``; a detecting task's once its own update alone is past the bound).

The clock read is the orchestration's ``lastUpdatedTime``: the Azure Storage provider writes it at every episode, as
the last new event's time (dtfx ``DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs`` ``UpdateStateAsync``:
``["LastUpdatedTime"] = newEvents.Last().Timestamp``; devhost does the same, fidelity row 34). An orchestration gets an
episode whenever an activity, a timer or a sub-orchestration it waits on ends, so the longest a healthy one goes
without an update is bounded by the code (``quiet_limit_s``): the longest activity (host.json ``functionTimeout``;
twice, for one attempt lost with its host, whose message comes back after the work-item queue's visibility timeout
and runs again), plus the longest durable timer the stage sets, plus ``SLACK_S`` for queues and scale-out.
The bounds of the orchestrators (``orchestrations/``, which core may not import) are mirrored here and pinned to them by
``tests/unit/test_stall.py``. Pure: no clock of its own (``now`` is passed), no I/O.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from core.contracts import Stage
from core.settings import CONFIRM_TIMEOUT_MAX_S, OrchestrationKnobs

# host.json ``functionTimeout`` (00:30:00): the longest one activity runs on Azure (test_stall pins it to host.json)
FUNCTION_TIMEOUT_S = 30 * 60
# orchestrations.retries.BUSY_MAX_DELAY_S: the longest timer before a busy step is called again (every stage's steps)
BUSY_MAX_DELAY_S = 300.0
# the longest timer of orchestrations.task.NOTIFY_RETRY (30 s doubling, 6 attempts: 480 s), while a task that has
# ended tells of its end (the notification, the Event Grid event): its stage is final, its runtime still Running
NOTIFY_MAX_DELAY_S = 480.0
# what no bound covers: control and work-item queues polled every few seconds (host.json maxQueuePollingInterval 10 s)
# and a scale-out under load; generous, since calling a task that moves "stalled" sends a person to terminate it
SLACK_S = 15 * 60.0

# Stages whose work is done and whose run only tells of its end (orchestrations.task ``_tell``) while Running
_TELLING = frozenset({Stage.completed, Stage.completed_with_errors, Stage.failed, Stage.cancelled, Stage.expired,
                      Stage.estimated})


def longest_wait_s(stage: str, knobs: OrchestrationKnobs) -> float | None:
    """The longest durable timer a task's orchestrations set in ``stage`` (None: a stage a task never shows while it
    runs, such as ``terminated``, which is judged never).

    * ``starting`` (no episode yet), ``enumerating``, ``merging``, ``publishing``: a busy step's retry,
      ``BUSY_MAX_DELAY_S`` (the other retries wait seconds).
    * ``awaiting_confirmation``: the confirmation wait, ``confirm_timeout_s`` up to ``CONFIRM_TIMEOUT_MAX_S`` (six
      days): a task waiting for a person until its deadline is not stalled; past it, it should have ended ``expired``.
    * ``detecting``: the shard groups' poll delay, which doubles up to ``poll_max_s``, or a busy retry. A group waiting
      out an outage (``orchestrations.shards`` "Outages") or a worker's exit 69 back-off goes on polling at that delay,
      so its updates go on too: that is judged by the groups' newest update (``api.starters._child_progress``).
    * a finished stage while still Running (telling of its end): the notification's retries, ``NOTIFY_MAX_DELAY_S``.
    """
    if stage in (Stage.starting, Stage.enumerating, Stage.merging, Stage.publishing):
        return BUSY_MAX_DELAY_S
    if stage == Stage.awaiting_confirmation:
        return max(float(min(knobs.confirm_timeout_s, CONFIRM_TIMEOUT_MAX_S)), BUSY_MAX_DELAY_S)
    if stage == Stage.detecting:
        return max(float(knobs.poll_max_s), BUSY_MAX_DELAY_S)
    if stage in _TELLING:
        return max(NOTIFY_MAX_DELAY_S, BUSY_MAX_DELAY_S)
    return None


def quiet_limit_s(stage: str, knobs: OrchestrationKnobs) -> float | None:
    """How long a running task in ``stage`` may go without an update before it is called stalled (None: never):
    the stage's longest timer, two activities' ``functionTimeout`` and ``SLACK_S`` (the module docstring says why)."""
    wait = longest_wait_s(stage, knobs)
    return None if wait is None else wait + 2 * FUNCTION_TIMEOUT_S + SLACK_S


def stalled(stage: str, task_id: str, now: datetime, updated: datetime | None,
            knobs: OrchestrationKnobs) -> dict[str, Any] | None:
    """The status's ``stalled`` for a RUNNING task (the caller checks the runtime status), or None: not stalled, or
    not known (no update time, or a stage never judged). ``updated``: the task orchestration's last update, or in
    ``detecting`` the newest of it and its shard groups'. Past ``quiet_limit_s``: ``since`` (the last update),
    ``seconds`` without one, ``limit_seconds`` (the stage's bound) and ``hint``, what the operator does."""
    limit = quiet_limit_s(stage, knobs)
    if updated is None or limit is None:
        return None
    quiet = (now - updated).total_seconds()
    if quiet <= limit:
        return None
    return {"since": updated.isoformat(), "seconds": int(quiet), "limit_seconds": int(limit),
            "hint": stalled_hint(task_id, stage, quiet, limit)}


def stalled_hint(task_id: str, stage: str, quiet_s: float, limit_s: float) -> str:
    """What to do about a stalled task. Why these steps: nothing in the platform will end such an instance (the
    extension records no failure for an action it dropped, and logs none either: devhost README row 45), so a person
    looks for the cause, then terminates the run and posts the request again, which resumes it (README, "a failed or
    terminated task also starts again without it, resuming from the results its attempts already wrote"; the new run
    first ends the terminated run's shard groups and pool job). The terminate is the app's own route
    (``api.starters.terminate_task``, function-key auth like every task route), not the Durable management API, whose
    system key an operator may not have.

    A run stalled ``awaiting_confirmation`` (past its deadline: ``longest_wait_s``) is told to cancel or confirm it
    first: its wait is a ``task_any`` of the deadline's timer and the confirm and cancel events (orchestrations.task
    ``_confirmed``), and an event is no scheduled action (the extension drops a refused action, such as a timer,
    without a trace: devhost README row 45, none of whose refusals is of a wait; a wait is no action it counts, row
    47): raised (``api.starters`` ``confirm_task``, ``cancel_task``), it reaches the wait, the timer lost or not, and
    ends the run as it was meant to end, with nothing left to resume. Terminate is for a run that does not answer even
    that.

    A run stalled while telling of its end (``_TELLING`` but ``failed``) is not resumed: a completed one keeps its
    stage and results when terminated and a post of its request finds it, running nothing (api.starters ``_stage``),
    so "once its stage is 'terminated'" never came; a cancelled, expired or estimated one shows 'terminated', and a
    post of its request resumes it, running what its end had not (a cancelled task's pool work)."""
    look = (f"the task's orchestration has not changed for {quiet_s / 3600:.1f} hours, longer than any wait of stage "
            f"{stage} explains ({limit_s / 3600:.1f} hours at most), so it may never move again: on Azure an action "
            "the Durable extension refuses is dropped without failing the task or logging it. Look in the function "
            f"app's logs (Application Insights traces mentioning {task_id}) for the last step it took and any error; ")
    head = look + f"then terminate it (POST /api/tasks/{task_id}/terminate)"
    if stage == Stage.awaiting_confirmation:  # past its deadline: the timer is what did not fire, the events may
        return look + (f"then end it with POST /api/tasks/{task_id}/cancel (it ends 'cancelled' at once), or run it "
                       f"after all with POST /api/tasks/{task_id}/confirm: its wait for either stays open even if its "
                       "deadline's timer was lost, the timer being only one of the things it waits on. If it still "
                       f"shows awaiting_confirmation a few minutes after that, terminate it (POST /api/tasks/{task_id}"
                       "/terminate) and, once its stage is 'terminated', post the same request again, without "
                       "\"rerun\" or \"only_new\", which lists its images and waits for confirmation again")
    if stage in _TELLING and stage != Stage.failed:
        told = (f", which stops only the word of its end (the notification, the answer file beside a dropped request, "
                f"the Event Grid event): it had ended {stage}")
        if stage in (Stage.completed, Stage.completed_with_errors):
            return head + told + (" and its results stay complete and served; it keeps showing that stage, and a post "
                                  "of the same request finds it, it does not run again")
        return head + told + (" with nothing left to run, and shows 'terminated' then; post the same request again "
                              "only to run it after all (a resumed run)")
    return head + (" and, once its stage is 'terminated', post the same request again, without \"rerun\" or "
                   "\"only_new\", which ends the pool work the terminated run left and resumes it from the results "
                   "its pool tasks already wrote")


# The runs after a task that GET /api/tasks/{id}/repeats shows, by the terminate route's ``target``
# (``core.requests.TERMINATE_TARGETS``): the repeat removal (orchestrations.repeats) and the repeat search run again
# (orchestrations.repeat_search). Their waits, whatever their stage, are their steps' retries alone
# (orchestrations.retries: a busy step's at most ``BUSY_MAX_DELAY_S``); neither sets a timer of its own, waits for an
# event or starts a sub-orchestration (tests/unit/test_repeat_runs.py reads their code for that).
REPEAT_RUNS = {"removal": "repeat removal", "search": "repeat search"}
# Every run after a task the terminate route ends: the repeat runs, and the two GET /api/tasks/{id}/results shows,
# the preview re-render (orchestrations.rerender, POST .../previews: previews.rerender) and the results zip build
# (orchestrations.results_zip, GET .../results above the zip size: zip). Their waits are likewise their steps'
# retries alone (the same test reads their code).
AFTER_TASK_RUNS = {**REPEAT_RUNS, "previews": "preview re-render", "zip": "results zip build"}


def after_task_route(target: str, task_id: str) -> str:
    """The route whose answer shows the run ``target`` (a key of ``AFTER_TASK_RUNS``)."""
    return f"GET /api/tasks/{task_id}/{'repeats' if target in REPEAT_RUNS else 'results'}"


def repeat_quiet_limit_s() -> float:
    """How long a running repeat removal or search (or any run of ``AFTER_TASK_RUNS``) may go without an update
    before it is called stalled: a busy retry's wait, two activities' ``functionTimeout`` and ``SLACK_S``, as a task's
    working stage (``quiet_limit_s``)."""
    return BUSY_MAX_DELAY_S + 2 * FUNCTION_TIMEOUT_S + SLACK_S


def repeat_stalled(target: str, task_id: str, now: datetime, updated: datetime | None,
                   shown: bool = True) -> dict[str, Any] | None:
    """The ``stalled`` of a RUNNING run after the task (``target``: a key of ``AFTER_TASK_RUNS``; the caller checks
    the runtime status), or None, as ``stalled`` says of a task. Why: the removal, the search, the re-render and the
    zip build are orchestrations too, so an action the extension drops leaves them Running for ever as it does a
    task; while one runs, the next of its kind may not start (``api.repeat_search.ensure_idle``; the instance id of
    each is one per task), so a stalled one blocks it for good. ``shown``: whether the route that shows it
    (``after_task_route``) does (False: a run of results a re-run has replaced since)."""
    if updated is None:
        return None
    limit = repeat_quiet_limit_s()
    quiet = (now - updated).total_seconds()
    if quiet <= limit:
        return None
    return {"since": updated.isoformat(), "seconds": int(quiet), "limit_seconds": int(limit),
            "hint": repeat_stalled_hint(target, task_id, quiet, limit, shown)}


def _blocks_and_again(target: str, task_id: str) -> tuple[str, str]:
    """(what a running ``target`` holds up, how to start it again once terminated)."""
    if target == "removal":
        return ("no other repeat removal or search of the task, nor a re-render of its previews, can start",
                f"send the same choice again (POST /api/tasks/{task_id}/repeats with the same \"keep\" or \"remove\" "
                "and \"search\"), which writes the repeats-removed results again")
    if target == "search":
        return ("no other repeat removal or search of the task can start",
                f"start the search again (POST /api/tasks/{task_id}/repeats/search with the same options)")
    if target == "previews":
        return ("no other re-render of the task's previews can start",
                f"post the re-render again (POST /api/tasks/{task_id}/previews with the same threshold)")
    return ("the results answer says its zip is 'building' and no other build of it starts (zip=rebuild neither)",
            f"GET /api/tasks/{task_id}/results again, which starts a new build")


def repeat_stalled_hint(target: str, task_id: str, quiet_s: float, limit_s: float, shown: bool = True) -> str:
    """What to do about a stalled run after the task: look for the cause, terminate it through the app's route
    (``target`` in its body; the function key, as ``stalled_hint`` says why), then start it again, which the
    terminate allows: the extension starts an instance id again once it has ended (``api.edge.start_once``). A run
    not ``shown`` (of results a re-run has replaced) is never seen 'terminated' there: the next start is refused until
    the platform has processed the terminate."""
    what = AFTER_TASK_RUNS[target]
    blocks, again = _blocks_and_again(target, task_id)
    route = after_task_route(target, task_id)
    return (f"the {what}'s orchestration has not changed for {quiet_s / 3600:.1f} hours, longer than any of its "
            f"waits explains ({limit_s / 3600:.1f} hours at most), so it may never move again: on Azure an action the "
            f"Durable extension refuses is dropped without failing it or logging it, and until it ends {blocks}. "
            f"Look in the function app's logs (Application Insights traces mentioning {task_id}) for the last step "
            f"it took and any error; then terminate it (POST /api/tasks/{task_id}/terminate {{\"target\": "
            f"\"{target}\"}}) and, "
            + (f"once {route} shows it 'terminated', {again}" if shown and target != "zip" else
               f"once the platform has processed the terminate (a moment later), {again}" if shown else
               f"{again} (it was of results a re-run has replaced since, which {route} does not show: until the "
               "platform has processed the terminate, a moment later, that is refused 409 still)"))
