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
from gpu_batch.layout import shard_id
from orchestrations.retries import STORAGE_RETRY

bp = df.Blueprint()


class NoImagesFound(ValueError):
    """Raised inside the orchestrator so the task ends Failed with a message the user can act on."""


def _where(request: dict[str, Any]) -> str:
    return f"container {request['container']!r}" + (f" under prefix {request['prefix']!r}" if request["prefix"] else "")


def _final_status(started: str, finished: str, enumeration: c.EnumerateOutput, outcomes: list[c.ShardsOutcome],
                  merged: c.MergeOutput, previews: c.PreviewsOutput) -> c.TaskStatus:
    return {
        "stage": Stage.completed if merged["missing"] == 0 else Stage.completed_with_errors,
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
    }


@bp.orchestration_trigger(context_name="context", orchestration=c.TASK_ORCHESTRATOR)
def task_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.TaskStatus]:
    data: c.TaskInput = context.get_input()
    task_id = data["task_id"]
    request = data["request"]
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    started = context.current_utc_datetime.isoformat()
    context.set_custom_status(c.TaskStatus(stage=Stage.enumerating, started=started))

    enumeration: c.EnumerateOutput = yield context.call_activity_with_retry(
        c.ENUMERATE, STORAGE_RETRY, c.EnumerateInput(task_id=task_id, request=request))
    if enumeration["images"] == 0:
        context.set_custom_status(c.TaskStatus(stage=Stage.failed, started=started,
                                               error=f"no images found in {_where(request)}"))
        raise NoImagesFound(f"no images (.jpg, .jpeg, .png, .gif) found in {_where(request)}; "
                            "check the container and prefix")

    groups = group_shards(enumeration["shards"], knobs.shards_per_group)
    context.set_custom_status(c.TaskStatus(stage=Stage.detecting, started=started, images=enumeration["images"],
                                           shards=enumeration["shards"], groups=len(groups)))
    children = [
        context.call_sub_orchestrator(
            c.SHARDS_ORCHESTRATOR,
            c.ShardsInput(task_id=task_id, knobs=knobs.to_dict(), shards=[shard_id(i) for i in group]),
            shards_instance_id(task_id, g))
        for g, group in enumerate(groups)
    ]
    outcomes: list[c.ShardsOutcome] = yield context.task_all(children)
    if any(o.get("cancelled") for o in outcomes):
        summary = c.TaskStatus(stage=Stage.cancelled, started=started, images=enumeration["images"],
                               finished=context.current_utc_datetime.isoformat())
        context.set_custom_status(summary)
        return {"task_id": task_id, **summary}

    context.set_custom_status(c.TaskStatus(stage=Stage.merging, started=started, images=enumeration["images"],
                                           shards=enumeration["shards"]))
    merged: c.MergeOutput = yield context.call_activity_with_retry(c.MERGE, STORAGE_RETRY, c.MergeInput(
        task_id=task_id, model=request["model"], completed_at=context.current_utc_datetime.isoformat()))

    context.set_custom_status(c.TaskStatus(stage=Stage.publishing, started=started, images=enumeration["images"]))
    previews: c.PreviewsOutput = yield context.call_activity_with_retry(c.PREVIEWS, STORAGE_RETRY, c.PreviewsInput(
        task_id=task_id, model=request["model"], request_name=request.get("request_name", "")))

    summary = _final_status(started, context.current_utc_datetime.isoformat(), enumeration, outcomes, merged, previews)
    context.set_custom_status(summary)
    return {"task_id": task_id, **summary}
