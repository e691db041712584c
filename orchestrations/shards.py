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
from typing import Any, Generator

import azure.durable_functions as df

from core.ids import pool_task_id
from core.settings import OrchestrationKnobs
from orchestrations import names

bp = df.Blueprint()

# Pool calls are I/O against a remote service: retry transient failures a few times before failing the task.
POOL_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


def _progress(state: dict[str, dict[str, Any]], pool: dict[str, int] | None = None) -> dict[str, int]:
    pool = pool or {}
    counts = {"shards": len(state), "pending": 0, "submitted": 0, "done": 0, "given_up": 0,
              "images_done": 0, "images_failed": 0, "images_missing": 0, "resubmissions": 0,
              "images_in_progress": pool.get("images_in_progress", 0),
              "pool_running": pool.get("running", 0), "pool_queued": pool.get("queued", 0)}
    for s in state.values():
        counts[s["status"]] += 1
        counts["images_done"] += s.get("covered", 0)
        counts["images_failed"] += s.get("failed", 0)
        counts["images_missing"] += s.get("missing", 0) if s["status"] == "given_up" else 0
        counts["resubmissions"] += s["attempt"] - 1
    return counts


@bp.orchestration_trigger(context_name="context", orchestration=names.SHARDS_ORCHESTRATOR)
def run_shards(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    data = context.get_input()
    task_id: str = data["task_id"]
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    state: dict[str, dict[str, Any]] = data.get("state") or {
        sid: {"attempt": 1, "status": "pending"} for sid in data["shards"]}
    delay = float(data.get("delay") or knobs.poll_min_s)
    polls = 0
    pool_view: dict[str, int] = {}
    while True:
        in_flight = [sid for sid, s in state.items() if s["status"] == "submitted"]
        pending = [sid for sid, s in state.items() if s["status"] == "pending"]
        to_submit = pending[: max(0, knobs.max_in_flight - len(in_flight))]
        if to_submit:
            yield context.call_activity_with_retry(names.SUBMIT, POOL_RETRY, {
                "task_id": task_id, "shards": [[sid, state[sid]["attempt"]] for sid in to_submit]})
            for sid in to_submit:
                state[sid]["status"] = "submitted"
            in_flight += to_submit
        context.set_custom_status({"stage": "detecting", **_progress(state, pool_view)})
        if not in_flight:
            break
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        poll = yield context.call_activity_with_retry(names.POLL, POOL_RETRY, {
            "task_id": task_id, "task_ids": [pool_task_id(sid, state[sid]["attempt"]) for sid in in_flight]})
        pool_view = {k: int(poll.get(k, 0)) for k in ("images_in_progress", "running", "queued")}
        if poll["cancelled"]:
            yield context.call_activity(names.CANCEL, {
                "task_id": task_id, "task_ids": [pool_task_id(sid, state[sid]["attempt"]) for sid in in_flight]})
            context.set_custom_status({"stage": "cancelled", **_progress(state)})
            return {"cancelled": True, **_progress(state)}
        resubmits = []
        for row in poll["completed"]:
            s = state[row["shard_id"]]
            if row["attempt"] != s["attempt"] or s["status"] != "submitted":
                continue  # a stale report about an older attempt
            s.update(covered=row["covered"], failed=row["failed"], missing=row["missing"])
            if row["missing"] == 0:
                s["status"] = "done"
            elif s["attempt"] < knobs.max_attempts:
                s["attempt"] += 1
                resubmits.append((row["shard_id"], context.call_activity_with_retry(names.RESUBMIT, POOL_RETRY, {
                    "task_id": task_id, "shard_id": row["shard_id"], "attempt": s["attempt"]})))
            else:
                s["status"] = "given_up"
        if resubmits:
            outcomes = yield context.task_all([task for _, task in resubmits])
            for (sid, _), outcome in zip(resubmits, outcomes):
                # A resubmitted shard stays "submitted" under its new attempt number; if storage shows nothing
                # missing any more (results landed late), the shard is done.
                if not outcome["submitted"]:
                    state[sid].update(status="done", missing=0, covered=state[sid].get("covered", 0)
                                      + state[sid].get("missing", 0))
        delay = knobs.poll_min_s if poll["completed"] else min(delay * 2, knobs.poll_max_s)
        polls += 1
        if polls >= knobs.polls_per_generation:
            context.continue_as_new({"task_id": task_id, "knobs": knobs.to_dict(), "state": state, "delay": delay,
                                     "shards": list(state)})
            return {"continued": True}
    return {"cancelled": False, **_progress(state)}
