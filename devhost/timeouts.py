"""``functionTimeout`` (host.json) for the functions devhost invokes itself (activities, blob triggers).

On Azure the host stops waiting for an invocation that runs past ``functionTimeout``, fails it with
``FunctionTimeoutException("Timeout value of <hh:mm:ss> was exceeded by function: Functions.<name>")`` (the WebJobs
SDK's ``FunctionExecutor``) and restarts the language worker process. An activity that times out therefore fails, and
the orchestrator sees that failure. devhost cannot kill a Python thread: it fails the invocation the same way and
abandons the thread, which runs on in the background (a daemon thread, so it does not keep devhost alive).
"""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable


class FunctionTimeout(Exception):
    """The invocation ran past functionTimeout; the message is the WebJobs SDK's."""


def timespan(seconds: float) -> str:
    """.NET ``TimeSpan.ToString()`` ("c" format): ``[d.]hh:mm:ss[.fffffff]``."""
    ticks = round(seconds * 10_000_000)
    days, rest = divmod(ticks, 864_000_000_000)
    hours, rest = divmod(rest, 36_000_000_000)
    minutes, rest = divmod(rest, 600_000_000)
    secs, frac = divmod(rest, 10_000_000)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    if days:
        text = f"{days}.{text}"
    if frac:
        text += f".{frac:07d}"
    return text


def timeout_message(seconds: float, function_name: str) -> str:
    return f"Timeout value of {timespan(seconds)} was exceeded by function: Functions.{function_name}"


def call_with_timeout(function_name: str, call: Callable[[], Any], timeout_s: float | None) -> Any:
    """Run ``call()`` (awaiting its result if it returns an awaitable, on a fresh event loop) and return its result;
    raise ``FunctionTimeout`` if it is not done within ``timeout_s`` seconds (None: no limit, run in this thread)."""
    if timeout_s is None:
        return _run(call)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = _run(call)
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"invocation-{function_name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise FunctionTimeout(timeout_message(timeout_s, function_name))
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _run(call: Callable[[], Any]) -> Any:
    result = call()
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    return result
