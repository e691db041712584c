"""The task orchestrator: enumerate -> shard groups (sub-orchestrations) -> merge -> previews.

Deterministic code only. Its input is the normalized request plus a snapshot of the tuning knobs (orchestrators never
read the environment). Progress for people goes to ``custom_status``; the per-shard detail lives in the shard-group
sub-orchestrations, whose ids are derived from the task id so the status API can find them.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core.ids import shards_instance_id
from core.settings import OrchestrationKnobs
from core.shards import group_shards
from orchestrations import names

bp = df.Blueprint()

# Listing a container can hit transient storage throttling; a few retries spare the user a failed task.
STORAGE_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


class NoImagesFound(ValueError):
    """Raised inside the orchestrator so the task ends Failed with a message the user can act on."""


@bp.orchestration_trigger(context_name="context", orchestration=names.TASK_ORCHESTRATOR)
def task_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    data = context.get_input()
    task_id: str = data["task_id"]
    request: dict[str, Any] = data["request"]
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    started = context.current_utc_datetime.isoformat()
    context.set_custom_status({"stage": "enumerating", "started": started})

    enumeration = yield context.call_activity_with_retry(names.ENUMERATE, STORAGE_RETRY,
                                                         {"task_id": task_id, "request": request})
    if enumeration["images"] == 0:
        where = f"container {request['container']!r}" + (f" under prefix {request['prefix']!r}" if request["prefix"] else "")
        context.set_custom_status({"stage": "failed", "started": started,
                                   "error": f"no images found in {where}"})
        raise NoImagesFound(f"no images (.jpg, .jpeg, .png, .gif) found in {where}; check the container and prefix")

    groups = group_shards(enumeration["shards"], knobs.shards_per_group)
    context.set_custom_status({"stage": "detecting", "started": started, "images": enumeration["images"],
                               "shards": enumeration["shards"], "groups": len(groups)})
    children = [
        context.call_sub_orchestrator(
            names.SHARDS_ORCHESTRATOR,
            {"task_id": task_id, "knobs": knobs.to_dict(), "shards": [f"s{i:05d}" for i in group]},
            shards_instance_id(task_id, g))
        for g, group in enumerate(groups)
    ]
    outcomes = yield context.task_all(children)
    if any(o.get("cancelled") for o in outcomes):
        summary = {"stage": "cancelled", "started": started, "images": enumeration["images"],
                   "finished": context.current_utc_datetime.isoformat()}
        context.set_custom_status(summary)
        return {"task_id": task_id, **summary}

    context.set_custom_status({"stage": "merging", "started": started, "images": enumeration["images"],
                               "shards": enumeration["shards"]})
    merged = yield context.call_activity_with_retry(names.MERGE, STORAGE_RETRY, {
        "task_id": task_id, "model": request["model"], "completed_at": context.current_utc_datetime.isoformat()})

    context.set_custom_status({"stage": "publishing", "started": started, "images": enumeration["images"]})
    previews = yield context.call_activity_with_retry(names.PREVIEWS, STORAGE_RETRY, {
        "task_id": task_id, "model": request["model"], "request_name": request.get("request_name", "")})

    stage = "completed" if merged["missing"] == 0 else "completed_with_errors"
    summary = {
        "stage": stage, "started": started, "finished": context.current_utc_datetime.isoformat(),
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
    context.set_custom_status(summary)
    return {"task_id": task_id, **summary}
