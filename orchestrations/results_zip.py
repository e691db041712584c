"""Build the zip of a finished task's downloadable files (``GET /api/tasks/{id}/results`` asks for it above
``TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES``). One activity (``activities.results_zip``); an orchestration because the
zip of gigabytes takes longer than an HTTP request should live, and its instance (``<task>-zip``) tells the results
route that a build is under way."""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from orchestrations.retries import STORAGE_RETRY, call

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=c.RESULTS_ZIP_ORCHESTRATOR)
def zip_results(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.ResultsZipOutput]:
    data: c.ResultsZipInput = context.get_input()
    built: c.ResultsZipOutput = yield from call(context, c.BUILD_RESULTS_ZIP, STORAGE_RETRY,
                                                c.ResultsZipInput(task_id=data["task_id"]))
    return built
