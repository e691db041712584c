"""Sweep a generation's results zips days after a build ended: delete those no link can use any more and no build
will name (``adapters.results_bundle.sweep_zips``; ``core.zip_builds`` says which, and why a sweep).

Why an orchestration of its own (instance ``<task>-zip-sweep-<the build's end>``, started by the build's last activity,
``activities.results_zip``): the build's instance running tells the results route that a build is under way, so the
build cannot wait the days itself. Timers are chained, at most ``core.expiry.MAX_TIMER_STEP`` each (why:
core/expiry.py), until ``at`` (the build's end plus ``core.zip_builds.SWEEP_AFTER_S``). Deterministic code only.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.failures import failures_without_secrets
from orchestrations.retries import STORAGE_RETRY, call
from orchestrations.timers import wait_until

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=c.RESULTS_ZIP_SWEEP_ORCHESTRATOR)
@failures_without_secrets
def sweep_results_zips(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.ResultsZipSweepOutput]:
    data: c.ResultsZipSweepInput = context.get_input()
    yield from wait_until(context, datetime.fromisoformat(data["at"]))
    swept: c.ResultsZipSweepOutput = yield from call(context, c.SWEEP_RESULTS_ZIPS, STORAGE_RETRY,
                                                     c.ResultsZipInput(task_id=data["task_id"]))
    return swept
