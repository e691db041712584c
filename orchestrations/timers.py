"""Waiting days in an orchestration: durable timers chained until a time, each at most ``core.expiry.MAX_TIMER_STEP``
(why: core/expiry.py). One place for the sweeps that wait so (``orchestrations.zip_sweep``,
``orchestrations.replaced_sweep``); the preview expiry waits likewise but also for the event that moves its time
(``orchestrations.expiry``). Deterministic code only: the times come from the context's replayed clock.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Generator

import azure.durable_functions as df

from core.expiry import next_timer


def wait_until(context: df.DurableOrchestrationContext, until: datetime) -> Generator[Any, Any, None]:
    """Yield timers until the orchestration's clock reaches ``until`` (none when it has already)."""
    fire = next_timer(context.current_utc_datetime, until)
    while fire is not None:
        yield context.create_timer(fire)
        fire = next_timer(context.current_utc_datetime, until)
