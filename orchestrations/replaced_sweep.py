"""Delete a task's replaced generation days after the promotion that replaced it (``core.replaced`` says what, when
and why; ``activities.replaced_generations`` does it).

Why an orchestration of its own (instance ``<task>-replaced-<generation>-<promotion time>``, started by the promoting
run's ``schedule_replaced_sweep``): the run completes when its work does, and the task's status says when the
replaced generation goes (``replaced.deletes_at``) without the run waiting for it. Timers are chained, at most
``core.expiry.MAX_TIMER_STEP`` each (why: core/expiry.py), until ``at``; then one call after another deletes a
bounded share of the generation (``adapters.replaced_generations.CALL_BLOBS``) until nothing is left or the call
says it is kept: served again (it ends: the promotion that replaces it again starts a sweep of its own), or read or
written by the task's running run (it goes on as new, waiting ``core.replaced.RECHECK_S`` before it looks again: that
run may end without promoting, a resumed run failing before its promotion, a run stalled after it, and then nothing
else would delete the generation; a sweep whose input lacks ``rechecks_running``, started before, ends there, as it
did); past ``SHARES_PER_EPISODE`` calls it goes on as new (``continue_as_new``, its count in its input), so no
generation's size makes its history long.
Deterministic code only.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core import replaced
from core.failures import failures_without_secrets
from orchestrations.retries import STORAGE_RETRY, call
from orchestrations.timers import wait_until

bp = df.Blueprint()

SHARES_PER_EPISODE = 40  # calls of ~25,000 blobs each (a million blobs) before the history starts anew


@bp.orchestration_trigger(context_name="context", orchestration=c.REPLACED_SWEEP_ORCHESTRATOR)
@failures_without_secrets
def sweep_replaced_generation(context: df.DurableOrchestrationContext
                              ) -> Generator[Any, Any, c.ReplacedSweepOutput]:
    data: c.ReplacedSweepInput = context.get_input()
    yield from wait_until(context, datetime.fromisoformat(data["at"]))
    step = c.ReplacedSweepStep(task_id=data["task_id"], generation=data["generation"])
    swept = c.ReplacedSweepOutput(generation=data["generation"], deleted=data.get("deleted", 0))
    for _ in range(SHARES_PER_EPISODE):
        share: c.ReplacedSweepStepOutput = yield from call(context, c.SWEEP_REPLACED, STORAGE_RETRY, step)
        swept["deleted"] += share["deleted"]
        if share.get("kept"):
            swept["kept"] = share["kept"]
            if share["kept"] == replaced.RUNNING and data.get("rechecks_running"):  # again once that run may be over
                again = context.current_utc_datetime + timedelta(seconds=replaced.RECHECK_S)
                context.continue_as_new(c.ReplacedSweepInput(**{**data, "at": again.isoformat(),
                                                                "deleted": swept["deleted"]}))
                return swept
        if share["done"]:
            return swept
    context.continue_as_new(c.ReplacedSweepInput(**{**data, "deleted": swept["deleted"]}))  # its ``at`` is past
    return swept
