"""An app with one slow Event Grid trigger, to see what devhost does with a delivery still running when it stops."""
from __future__ import annotations

import asyncio
import threading

import azure.functions as func

app = func.FunctionApp()
STARTED = threading.Event()  # the function was called
FINISHED = threading.Event()  # the function returned
RUN_S = 1.5


@app.event_grid_trigger(arg_name="event")
async def slow_ready(event: func.EventGridEvent) -> None:
    STARTED.set()
    await asyncio.sleep(RUN_S)
    FINISHED.set()
