"""Invoke a trigger function as the host does (devhost's blob and Event Grid pollers), and try a blob trigger again.

Invocation: an ``async def`` function runs on the host's event loop (where the Durable SDK's session lives), any other
in a thread; either way an invocation running past host.json ``functionTimeout`` fails with the WebJobs SDK's
``FunctionTimeout`` (devhost.timeouts). Retries of a blob trigger (``try_at_once``): a failing invocation is tried
again at once, up to ``extensions.blobs.poisonBlobThreshold`` tries in all; the poison message after the last failure
is the caller's, as is the receipt that keeps the blob version from firing again. Event Grid deliveries are retried
on Event Grid's own schedule instead (``devhost.event_grid.Deliveries``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from typing import Any, Callable

from devhost.timeouts import FunctionTimeout, call_with_timeout, timeout_message


def invoke(function_name: str, fn: Callable[..., Any], kwargs: dict[str, Any], loop: asyncio.AbstractEventLoop,
           timeout_s: float | None) -> None:
    """Call the trigger function ``fn(**kwargs)``; raise what it raised, or ``FunctionTimeout``."""
    if inspect.iscoroutinefunction(fn):
        future = asyncio.run_coroutine_threadsafe(fn(**kwargs), loop)
        try:
            future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise FunctionTimeout(timeout_message(timeout_s or 0, function_name)) from None
    else:
        call_with_timeout(function_name, lambda: fn(**kwargs), timeout_s)


def try_at_once(logger: logging.Logger, what: str, key: str, attempts: int, stop: threading.Event,
                call: Callable[[], None]) -> bool | None:
    """``call()`` until it succeeds, ``attempts`` tries at most, each failure logged as a warning naming ``what``
    (the trigger) and ``key`` (the blob).

    Returns True when a try succeeded, False when every try failed, None when ``stop`` was set first (devhost is
    shutting down: the caller writes no receipt, so the blob version fires again after a restart).
    """
    for attempt in range(1, attempts + 1):
        if stop.is_set():
            return None
        try:
            call()
            return True
        except Exception as exc:
            logger.warning("%s failed for %s (try %d of %d): %s", what, key, attempt, attempts, exc)
    return False
