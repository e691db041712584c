"""Build the zip of a finished task's downloadable files (``GET /api/tasks/{id}/results`` asks for it above
``TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES``). An orchestration because the zip of gigabytes takes longer than an HTTP
request should live, and its instance (``<task>-zip``) tells the results route that a build is under way.

``build_results_zip`` writes a zip of up to ``adapters.zip_parts.PART_BYTES`` itself; above, it answers a plan, whose
parts are deflated in parallel, composed, and their work deleted (``adapters.zip_parts``: the clean is handed the
plan's build and deletes that build's work, not the next build's after a terminate), so a ten-million-image
task's tens of GB are no single activity's work. A history recorded before plans existed replays as before.

After its last step a build starts its sweep (``orchestrations.zip_sweep``, one per build:
``core.ids.results_zip_sweep_instance_id``), which deletes, days later, the zips of the build's generation that no link
can use any more. Why not wait here: the build's instance running tells the results route that a build is under way.
Scheduled after the build's last step, so a build an earlier release started replays its history up to it unchanged.
A failed build starts none (no room is kept for it: its ``action_budget`` bounds it); the next build's sweep finds
what it left.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.failures import failures_without_secrets
from core.ids import results_zip_sweep_instance_id
from core.zipformat import part_inputs
from orchestrations.retries import STORAGE_RETRY, call, call_all

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=c.RESULTS_ZIP_ORCHESTRATOR)
@failures_without_secrets
def zip_results(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.ResultsZipOutput]:
    data: c.ResultsZipInput = context.get_input()
    asked = c.ResultsZipInput(task_id=data["task_id"])
    built: c.ResultsZipOutput = yield from call(context, c.BUILD_RESULTS_ZIP, STORAGE_RETRY, asked)
    made = built.get("plan")
    if made:
        parts: list[c.ResultsZipPartOutput] = yield from call_all(context, c.RESULTS_ZIP_PART,
                                                                   part_inputs(data["task_id"], made))
        built = yield from call(context, c.RESULTS_ZIP_COMBINE, STORAGE_RETRY,
                                c.ResultsZipCombineInput(task_id=data["task_id"], plan=made, parts=parts))
        cleaned = c.ResultsZipCleanInput(task_id=data["task_id"])
        if made.get("build"):
            cleaned["build"] = made["build"]  # its own work blobs, not the next build's (zip_parts.clean_parts)
        yield from call(context, c.RESULTS_ZIP_CLEAN, STORAGE_RETRY, cleaned)
    yield from call(context, c.SCHEDULE_RESULTS_ZIP_SWEEP, STORAGE_RETRY, c.ResultsZipSweepSchedule(
        task_id=data["task_id"],
        instance_id=results_zip_sweep_instance_id(context.instance_id, context.current_utc_datetime)))
    return built

