"""When a task's preview pages come off the public website, and the durable timers that wait for it.

Why chained timers: the Durable docs say that for Python apps "Durable timers are limited to six days" and to use the
timer API in a loop for longer delays (learn.microsoft.com/azure/azure-functions/durable/durable-functions-timers).
Newer extension versions split long timers themselves (the Python SDK's ``LongTimerTask``, used only when the host
sends ``maximumShortTimerDuration`` and replay schema V3, which older extensions and other storage providers do not),
so trapbatch never asks for more than ``MAX_TIMER_STEP`` at once: the same history on every extension version.

Must not: read a clock. The orchestrator passes its own ``current_utc_datetime``.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

MAX_TIMER_STEP = timedelta(days=6)  # at most the six days Python's durable timers were limited to


def expiry_time(finished: datetime, days: int, day_s: int = 86400) -> datetime:
    """``days`` after ``finished``; ``day_s`` is 86400 except in tests (TRAPBATCH_PREVIEWS_EXPIRE_DAY_S)."""
    return finished + timedelta(seconds=days * day_s)


def next_timer(now: datetime, until: datetime, step: timedelta = MAX_TIMER_STEP) -> datetime | None:
    """When the next timer of the wait for ``until`` fires (at most ``step`` from ``now``); None once it is reached."""
    now, until = _utc(now), _utc(until)
    if now >= until:
        return None
    return min(until, now + step)


def _utc(moment: datetime) -> datetime:
    """Naive times are UTC (the orchestration clock's and the stored ISO times' zone): comparable either way."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
