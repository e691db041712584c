"""The tests' HTTP session to devhost: on a timeout it prints what every live devhost is doing before it re-raises.

Why: a CI run's status request waited 120 s inside devhost and left no clue where (devhost/diagnostics.py); the
next one prints the loop's tasks, the pools' queues and every thread's stack into the failing test's report."""
from __future__ import annotations

import sys
from typing import Any

import requests

from devhost.diagnostics import describe_live_hosts


class DiagnosingSession(requests.Session):
    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        try:
            return super().request(*args, **kwargs)
        except requests.exceptions.Timeout:
            sys.stderr.write(describe_live_hosts())
            raise
