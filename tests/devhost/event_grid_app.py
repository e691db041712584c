"""An app with Event Grid triggers: a slow one, to see what devhost does with a delivery still running when it stops,
and a quick one that records each call, to count deliveries."""
from __future__ import annotations

import asyncio
import threading

import azure.functions as func

app = func.FunctionApp()
STARTED = threading.Event()  # the function was called
FINISHED = threading.Event()  # the function returned
RUN_S = 1.5
CALLS: list[tuple[str, str]] = []  # (subject, event id) of each quick_ready call
QUICK_CALLED = threading.Event()


@app.event_grid_trigger(arg_name="event")
async def slow_ready(event: func.EventGridEvent) -> None:
    STARTED.set()
    await asyncio.sleep(RUN_S)
    FINISHED.set()


@app.event_grid_trigger(arg_name="event")
def quick_ready(event: func.EventGridEvent) -> None:
    CALLS.append((event.subject, event.id))
    QUICK_CALLED.set()
