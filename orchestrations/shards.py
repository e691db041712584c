"""Shard-group sub-orchestrator: submit shard attempts, watch them with durable timers, resubmit what is missing.

Deterministic code only (no I/O, no clock, no random): every fact about the outside world arrives as an activity
result. The state (attempt and status per shard) travels in the input, so ``continue_as_new`` after
``polls_per_generation`` polls keeps the history short however long the shards run.

A shard is done when its pool task completed AND its results cover every image of its manifest. Otherwise its missing
images (only those) become the next attempt, up to ``max_attempts``; after that the shard is given up and the merge
writes a ``failure`` entry for each image still missing.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Generator, cast

import azure.durable_functions as df

from core import contracts as c
from core.contracts import ShardStatus, Stage
from core.settings import OrchestrationKnobs
from gpu_batch.exit_codes import unfixable_reason
from gpu_batch.layout import pool_job_id, pool_task_id
from orchestrations.retries import POOL_RETRY, call

bp = df.Blueprint()


def _progress(state: dict[str, c.ShardState], pool: dict[str, int] | None = None) -> c.ShardCounts:
    pool = pool or {}
    counts: dict[str, int] = {
        "shards": len(state), "pending": 0, "submitted": 0, "done": 0, "given_up": 0,
        "images_done": 0, "images_failed": 0, "images_missing": 0, "resubmissions": 0,
        "images_in_progress": pool.get("images_in_progress", 0),
        "pool_running": pool.get("running", 0), "pool_queued": pool.get("queued", 0)}
    for s in state.values():
        counts[s["status"]] += 1
        counts["images_done"] += s.get("covered", 0)
        counts["images_failed"] += s.get("failed", 0)
        counts["images_missing"] += s.get("missing", 0) if s["status"] == ShardStatus.given_up else 0
        counts["resubmissions"] += s["attempt"] - 1
    return cast(c.ShardCounts, counts)


def _outcome(state: dict[str, c.ShardState], cancelled: bool) -> c.ShardsOutcome:
    # A cast: mypy wants every optional key spelled out when a TypedDict is built from ** items.
    return cast(c.ShardsOutcome, {"cancelled": cancelled, **_progress(state)})


def _pool_ids(state: dict[str, c.ShardState], shards: list[str]) -> list[str]:
    return [pool_task_id(sid, state[sid]["attempt"]) for sid in shards]


class ShardUnfixable(RuntimeError):
    """A worker exited with a code no further attempt can fix (``gpu_batch.exit_codes``): the task fails now, with the
    worker's own message, instead of resubmitting every shard ``max_attempts`` times for the same failure."""


def _unfixable(row: c.CompletedShard) -> ShardUnfixable | None:
    reason = unfixable_reason(row["exit_code"])
    if reason is None or row["missing"] == 0:
        return None
    said = row.get("worker_message") or row["failure_message"] or "no message; see the pool task's log"
    return ShardUnfixable(f"{reason} (shard {row['shard_id']} attempt {row['attempt']}, worker exit code "
                          f"{row['exit_code']}): {said}")


def _record_completions(state: dict[str, c.ShardState], completed: list[c.CompletedShard],
                        max_attempts: int) -> list[str]:
    """Update the state from the poll's completed pool tasks; the shards whose missing images need a next attempt.

    Raises ``ShardUnfixable`` for a worker failure no attempt can fix."""
    to_resubmit = []
    for row in completed:
        s = state[row["shard_id"]]
        if row["attempt"] != s["attempt"] or s["status"] != ShardStatus.submitted:
            continue  # a stale report about an older attempt
        failure = _unfixable(row)
        if failure is not None:
            raise failure
        s["covered"], s["failed"], s["missing"] = row["covered"], row["failed"], row["missing"]
        if row["missing"] == 0:
            s["status"] = ShardStatus.done
        elif s["attempt"] < max_attempts:
            s["attempt"] += 1
            to_resubmit.append(row["shard_id"])
        else:
            s["status"] = ShardStatus.given_up
    return to_resubmit


@bp.orchestration_trigger(context_name="context", orchestration=c.SHARDS_ORCHESTRATOR)
def run_shards(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.ShardsOutcome]:
    data: c.ShardsInput = context.get_input()
    task_id = data["task_id"]
    job_id = data.get("job_id") or pool_job_id(task_id)
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    state: dict[str, c.ShardState] = data.get("state") or {
        sid: c.ShardState(attempt=1, status=ShardStatus.pending) for sid in data["shards"]}
    delay = float(data.get("delay") or knobs.poll_min_s)
    polls = 0
    pool_view: dict[str, int] = {}
    while True:
        in_flight = [sid for sid, s in state.items() if s["status"] == ShardStatus.submitted]
        pending = [sid for sid, s in state.items() if s["status"] == ShardStatus.pending]
        to_submit = pending[: max(0, knobs.max_in_flight - len(in_flight))]
        if to_submit:
            yield from call(context, c.SUBMIT, POOL_RETRY, c.SubmitInput(
                task_id=task_id, job_id=job_id, shards=[(sid, state[sid]["attempt"]) for sid in to_submit]))
            for sid in to_submit:
                state[sid]["status"] = ShardStatus.submitted
            in_flight += to_submit
        context.set_custom_status({"stage": Stage.detecting, **_progress(state, pool_view)})
        if not in_flight:
            break
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        poll: c.PollOutput = yield from call(context, c.POLL, POOL_RETRY, c.PoolTasksInput(
            task_id=task_id, job_id=job_id, task_ids=_pool_ids(state, in_flight)))
        pool_view = {"images_in_progress": poll.get("images_in_progress", 0), "running": poll.get("running", 0),
                     "queued": poll.get("queued", 0)}
        if poll["cancelled"]:
            yield context.call_activity(c.CANCEL, c.PoolTasksInput(task_id=task_id, job_id=job_id,
                                                                     task_ids=_pool_ids(state, in_flight)))
            context.set_custom_status({"stage": Stage.cancelled, **_progress(state)})
            return _outcome(state, cancelled=True)
        resubmits = _record_completions(state, poll["completed"], knobs.max_attempts)
        if resubmits:
            resubmitted: c.ResubmitOutput = yield from call(context, c.RESUBMIT, POOL_RETRY, c.ResubmitInput(
                task_id=task_id, job_id=job_id, shards=[(sid, state[sid]["attempt"]) for sid in resubmits]))
            for outcome in resubmitted["shards"]:
                # A resubmitted shard stays "submitted" under its new attempt number; if storage shows nothing
                # missing any more (results landed late), the shard is done.
                if not outcome["submitted"]:
                    s = state[outcome["shard_id"]]
                    s["covered"] = s.get("covered", 0) + s.get("missing", 0)
                    s["status"], s["missing"] = ShardStatus.done, 0
        delay = knobs.poll_min_s if poll["completed"] else min(delay * 2, knobs.poll_max_s)
        polls += 1
        if polls >= knobs.polls_per_generation:
            context.continue_as_new(c.ShardsInput(task_id=task_id, job_id=job_id, knobs=knobs.to_dict(), state=state,
                                                  delay=delay, shards=list(state)))
            return {"continued": True}
    return _outcome(state, cancelled=False)
