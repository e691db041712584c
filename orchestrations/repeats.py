"""Repeated-detection removal: re-merge a finished task with chosen repeated locations marked, then its page.

Why an orchestration and not the HTTP call itself: the re-merge streams every shard's results again (minutes for
millions of images), longer than an HTTP request should live. Deterministic code only; the ids to remove come in
the input, the completion time from the orchestration clock, everything else from the activities.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from activities.merge import REPEATS_REMOVED
from orchestrations import names
from orchestrations.task import STORAGE_RETRY

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=names.REPEATS_ORCHESTRATOR)
def remove_repeats(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    data = context.get_input()
    task_id: str = data["task_id"]
    started = context.current_utc_datetime.isoformat()
    context.set_custom_status({"stage": "merging", "started": started, "locations": len(data["remove"])})
    merged = yield context.call_activity_with_retry(names.REMOVE_REPEATS, STORAGE_RETRY, {
        "task_id": task_id, "model": data["model"], "remove": data["remove"],
        "completed_at": context.current_utc_datetime.isoformat()})
    context.set_custom_status({"stage": "publishing", "started": started, "locations": len(data["remove"])})
    previews = yield context.call_activity_with_retry(names.PREVIEWS, STORAGE_RETRY, {
        "task_id": task_id, "model": data["model"], "request_name": data.get("request_name", ""),
        "variant": REPEATS_REMOVED})
    summary = {"stage": "completed", "started": started, "finished": context.current_utc_datetime.isoformat(),
               "locations": len(data["remove"]), "detections_marked": merged["detections_marked"],
               "results": {"container": merged["container"], "blob": merged["results_blob"],
                           "csv": merged.get("csv_blob", "")},
               "previews": previews}
    context.set_custom_status(summary)
    return summary
