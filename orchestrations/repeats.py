"""Repeated-detection removal: re-merge a finished task with chosen repeated locations marked, then its page.

Why an orchestration and not the HTTP call itself: the re-merge reads every shard's results again (the parallel
fan-in of ``orchestrations.fanin``, minutes for millions of images), longer than an HTTP request should live. Deterministic code only; the ids to remove come in
the input, the completion time from the orchestration clock, everything else from the activities.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.contracts import Stage
from core.errors import failure_line
from gpu_batch.layout import REPEATS_REMOVED
from core.failures import failures_without_secrets
from core.settings import OrchestrationKnobs
from core.status_size import fit
from orchestrations.exports import exports as run_exports
from orchestrations.fanin import damaged_status, fan_in
from orchestrations.retries import STORAGE_RETRY, call

bp = df.Blueprint()

# A removal started before ``RepeatsInput.knobs`` was recorded planned its merge parts with the defaults of then; these
# are those values, pinned, so that a release changing a default does not re-plan (and so re-schedule or double-merge)
# the parts of a removal that is running (tests/orchestrations/test_replay_constants.py).
LEGACY_KNOBS: dict[str, Any] = {"merge_images_per_part": 200_000}


@bp.orchestration_trigger(context_name="context", orchestration=c.REPEATS_ORCHESTRATOR)
@failures_without_secrets
def remove_repeats(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.RemovalStatus]:
    data: c.RepeatsInput = context.get_input()
    task_id = data["task_id"]
    locations = len(data["remove"])
    started = context.current_utc_datetime.isoformat()
    head = c.RemovalStatus(started=started, locations=locations)
    if "search" in data:  # the list the ids come from (a starter before searches could run again sent none)
        head["search"] = data["search"]
    merging: c.RemovalStatus = {**head, "stage": Stage.merging}
    context.set_custom_status(merging)
    remove_blob: str | None = None
    if data.get("prepare"):  # absent from removals started before this step existed: they replay without it
        prepared: c.PrepareRemovalOutput = yield from call(
            context, c.PREPARE_REMOVAL, STORAGE_RETRY, c.PrepareRemovalInput(task_id=task_id, remove=data["remove"]))
        remove_blob = prepared["remove_blob"]
    enumeration: c.EnumerateOutput = yield from call(context, c.READ_ENUMERATION, STORAGE_RETRY,
                                                     c.ReadEnumerationInput(task_id=task_id))
    knobs = OrchestrationKnobs.from_dict(data.get("knobs") or LEGACY_KNOBS)
    merged: c.MergeOutput = yield from fan_in(context, task_id, data["model"], enumeration["images"],
                                              enumeration["shards"], knobs, REPEATS_REMOVED,
                                              data["remove"], data.get("search"), remove_blob)
    exports: c.ExportsOutput | None = None
    exports_error = ""
    try:  # the variant's COCO, Camtrap DP and Zooniverse exports; the variant stands without them
        exports = yield from run_exports(context, task_id, REPEATS_REMOVED, merged)
    except Exception as exc:  # noqa: BLE001 - the activity's last failure after its retries
        exports_error = failure_line(exc)
    publishing: c.RemovalStatus = {**head, "stage": Stage.publishing}
    context.set_custom_status(publishing)
    previews: c.PreviewsOutput = yield from call(context, c.PREVIEWS, STORAGE_RETRY, c.PreviewsInput(
        task_id=task_id, model=data["model"], request_name=data.get("request_name", ""), variant=REPEATS_REMOVED,
        only_if_published=True))
    summary: c.RemovalStatus = {
        **head, "stage": Stage.completed, "finished": context.current_utc_datetime.isoformat(),
        "detections_marked": merged.get("detections_marked", 0),
        "results": {"container": merged["container"], "blob": merged["results_blob"],
                    "csv": merged.get("csv_blob", "")},
        "previews": previews}
    damaged = damaged_status(merged)  # the task's photos cut short: a removal changes no photo (absent: none)
    if damaged is not None:
        summary["damaged"] = damaged
    if merged.get("work_left"):  # a cleanup left the merge's work blobs: said, with how to delete them
        summary["work_left"] = merged["work_left"]
    if exports is not None:
        summary["results"]["exports"] = exports
    else:
        summary["results"]["exports_error"] = exports_error
        summary["results"]["exports_hint"] = removal_exports_hint(task_id)
    context.set_custom_status(fit(summary))
    return summary


def removal_exports_hint(task_id: str) -> str:
    """What to do when a removal's exports failed (its ``results.exports_hint``, beside ``exports_error``), in the
    status itself so the API's answer says it, not only the CLI: the same choice sent again writes the variant again,
    its exports with it (a removal first deletes the variant's earlier exports, so nothing stale is served).
    ``task_id``: the removal's, a generation key for a re-run's (``<task>/runs/<run>``): the route and the command
    take the task's id."""
    task_id = task_id.split("/", 1)[0]
    return ("the repeats-removed results JSON and CSV are complete; their COCO, Camtrap DP and Zooniverse exports were "
            f"not written. Write them again: send the same choice again (POST /api/tasks/{task_id}/repeats with the "
            f"same \"keep\" or \"remove\" and \"search\"; trapbatch repeats {task_id} --keep ... or --remove ...)")
