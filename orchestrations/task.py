"""The task orchestrator: enumerate -> shard groups (sub-orchestrations) -> merge -> previews.

Deterministic code only. Its input is the normalized request plus a snapshot of the tuning knobs (orchestrators never
read the environment). Progress for people goes to ``custom_status``; the per-shard detail lives in the shard-group
sub-orchestrations, whose ids are derived from the task id so the status API can find them.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.contracts import Stage
from core.ids import shards_instance_id
from core.settings import OrchestrationKnobs
from core.shards import group_shards
from gpu_batch.layout import pool_job_id, shard_id
from orchestrations.enumeration import enumerate_in_parallel
from orchestrations.retries import POOL_RETRY, STORAGE_RETRY, call

bp = df.Blueprint()


class NoImagesFound(ValueError):
    """Raised inside the orchestrator so the task ends Failed with a message the user can act on."""


def _where(request: dict[str, Any]) -> str:
    return f"container {request['container']!r}" + (f" under prefix {request['prefix']!r}" if request["prefix"] else "")


def _outcome(merged: c.MergeOutput, max_failed_fraction: float) -> tuple[Stage, float]:
    """``completed`` when every image was processed and no more than ``max_failed_fraction`` of them failed; a task
    that could not process some images (given up after every attempt) is never plainly ``completed``."""
    fraction = merged["failed"] / merged["images"] if merged["images"] else 0.0
    ok = merged["missing"] == 0 and fraction <= max_failed_fraction
    return (Stage.completed if ok else Stage.completed_with_errors), round(fraction, 6)


def _final_status(started: str, finished: str, enumeration: c.EnumerateOutput, outcomes: list[c.ShardsOutcome],
                  merged: c.MergeOutput, previews: c.PreviewsOutput, max_failed_fraction: float,
                  job_id: str) -> c.TaskStatus:
    stage, fraction = _outcome(merged, max_failed_fraction)
    return {
        "stage": stage, "failed_fraction": fraction, "max_failed_fraction": max_failed_fraction,
        "failure_reasons": merged.get("failure_reasons", {}),
        "started": started, "finished": finished,
        "images": merged["images"], "failed": merged["failed"], "missing": merged["missing"],
        "with_detections": merged["with_detections"], "detections": merged["detections"], "empty": merged["empty"],
        "shards": enumeration["shards"],
        "resubmissions": sum(o.get("resubmissions", 0) for o in outcomes),
        "results": {"container": merged["container"], "blob": merged["results_blob"],
                    "csv": merged.get("csv_blob", "")},
        "repeated_detections": {"locations": merged.get("repeated_locations", 0),
                                "blob": merged.get("repeats_blob", "")},
        "previews": previews,
        "pool_job": job_id,
    }


def _first_line(exc: BaseException, limit: int = 500) -> str:
    """What a person sees of a failure in the status (custom status is limited to 16 KB, and tracebacks help no one)."""
    text = str(exc).strip().split("\n")[0] or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _close_job(context: df.DurableOrchestrationContext, task_id: str, job_id: str) -> Generator[Any, Any, None]:
    """End the run's pool job: unfinished tasks stop and the job no longer counts against the account's active jobs
    (100-300 per Batch account). Best effort when the task is failing anyway: the original failure is what counts."""
    yield from call(context, c.CLOSE_JOB, POOL_RETRY, c.CloseJobInput(task_id=task_id, job_id=job_id))


@bp.orchestration_trigger(context_name="context", orchestration=c.TASK_ORCHESTRATOR)
def task_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.TaskStatus]:
    """Run the task; whatever ends it (completion, cancel, any failure) also ends its pool job, and a failure leaves
    stage ``failed`` with the reason in the status (not the last stage it reached)."""
    data: c.TaskInput = context.get_input()
    task_id = data["task_id"]
    job_id = pool_job_id(task_id, data.get("run", ""))
    started = context.current_utc_datetime.isoformat()
    pool_used = [False]
    try:
        summary = yield from _run_task(context, data, job_id, started, pool_used)
    except Exception as exc:
        if pool_used[0]:
            try:
                yield from _close_job(context, task_id, job_id)
            except Exception:  # noqa: BLE001 - keep the original failure; the job is closed by its next run anyway
                pass
        context.set_custom_status(c.TaskStatus(stage=Stage.failed, started=started, error=_first_line(exc),
                                               finished=context.current_utc_datetime.isoformat(), pool_job=job_id))
        raise
    return {"task_id": task_id, **summary}


def _run_task(context: df.DurableOrchestrationContext, data: c.TaskInput, job_id: str, started: str,
              pool_used: list[bool]) -> Generator[Any, Any, c.TaskStatus]:
    task_id = data["task_id"]
    request = data["request"]
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    context.set_custom_status(c.TaskStatus(stage=Stage.enumerating, started=started))

    enumeration: c.EnumerateOutput = yield from enumerate_in_parallel(context, task_id, request)
    if enumeration["images"] == 0:
        raise NoImagesFound(f"no images (.jpg, .jpeg, .png, .gif) found in {_where(request)}; "
                            "check the container and prefix")

    groups = group_shards(enumeration["shards"], knobs.shards_per_group)
    context.set_custom_status(c.TaskStatus(stage=Stage.detecting, started=started, images=enumeration["images"],
                                           shards=enumeration["shards"], groups=len(groups), pool_job=job_id))
    children = [
        context.call_sub_orchestrator(
            c.SHARDS_ORCHESTRATOR,
            c.ShardsInput(task_id=task_id, job_id=job_id, knobs=knobs.to_dict(), shards=[shard_id(i) for i in group]),
            shards_instance_id(task_id, g))
        for g, group in enumerate(groups)
    ]
    pool_used[0] = True
    outcomes: list[c.ShardsOutcome] = yield context.task_all(children)
    yield from _close_job(context, task_id, job_id)  # no pool work is left: free the job before the long merge
    pool_used[0] = False
    if any(o.get("cancelled") for o in outcomes):
        cancelled = c.TaskStatus(stage=Stage.cancelled, started=started, images=enumeration["images"],
                                 finished=context.current_utc_datetime.isoformat(), pool_job=job_id)
        context.set_custom_status(cancelled)
        return cancelled

    context.set_custom_status(c.TaskStatus(stage=Stage.merging, started=started, images=enumeration["images"],
                                           shards=enumeration["shards"]))
    merged: c.MergeOutput = yield from call(context, c.MERGE, STORAGE_RETRY, c.MergeInput(
        task_id=task_id, model=request["model"], completed_at=context.current_utc_datetime.isoformat()))

    context.set_custom_status(c.TaskStatus(stage=Stage.publishing, started=started, images=enumeration["images"]))
    previews: c.PreviewsOutput = yield from call(context, c.PREVIEWS, STORAGE_RETRY, c.PreviewsInput(
        task_id=task_id, model=request["model"], request_name=request.get("request_name", "")))

    summary = _final_status(started, context.current_utc_datetime.isoformat(), enumeration, outcomes, merged, previews,
                            knobs.max_failed_fraction, job_id)
    context.set_custom_status(summary)
    return summary
