"""``wait_until`` for tests: poll a condition instead of sleeping a fixed time (as durabletask's tests do); and
``held``, which makes a devhost run wait on one of its activities until the test lets it go."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Return the first truthy value of ``predicate()``; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def held(host: Any, activity: str) -> threading.Event:
    """Hold every call of ``activity`` in devhost ``host`` until the returned event is set (at most 5 minutes): a run
    waiting on it stands still, as one whose action the extension dropped would (devhost runs activities in its own
    threads). A held call runs the activity once let go: an activity under way runs to its end, terminated or not."""
    release = threading.Event()
    fn, param = host.index.activities[activity]

    def holding(**kwargs: Any) -> Any:
        release.wait(300)
        return fn(**kwargs)

    host.index.activities[activity] = (holding, param)
    return release
