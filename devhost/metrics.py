"""Counters for benchmarks: CPU per function, activity wall time, history events per instance (bench/control_plane.py).

Why here: devhost runs every orchestrator episode and activity itself, so it can measure them per kind of function,
which the Functions host reports only through Application Insights. Instrumentation only: nothing here changes what
devhost does. CPU is the invoking thread's (``time.thread_time``): an orchestrator episode's replay (not the host's
storage reads and writes around it), an activity's body (in its invocation thread). Always on; the cost is two clock
reads per invocation.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FunctionStats:
    calls: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    max_wall_s: float = 0.0

    def add(self, cpu_s: float, wall_s: float) -> None:
        self.calls += 1
        self.cpu_s += cpu_s
        self.wall_s += wall_s
        self.max_wall_s = max(self.max_wall_s, wall_s)

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "cpu_s": round(self.cpu_s, 4), "wall_s": round(self.wall_s, 4),
                "max_wall_s": round(self.max_wall_s, 4)}


@dataclass
class Metrics:
    orchestrators: dict[str, FunctionStats] = field(default_factory=dict)
    activities: dict[str, FunctionStats] = field(default_factory=dict)
    history_events: dict[str, int] = field(default_factory=dict)  # instance id -> most events in one execution
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def orchestrator(self, name: str, cpu_s: float, wall_s: float) -> None:
        with self._lock:
            self.orchestrators.setdefault(name, FunctionStats()).add(cpu_s, wall_s)

    def activity(self, name: str, cpu_s: float, wall_s: float) -> None:
        with self._lock:
            self.activities.setdefault(name, FunctionStats()).add(cpu_s, wall_s)

    def history(self, instance_id: str, events: int) -> None:
        with self._lock:
            if events > self.history_events.get(instance_id, 0):
                self.history_events[instance_id] = events

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"orchestrators": {k: v.to_dict() for k, v in self.orchestrators.items()},
                    "activities": {k: v.to_dict() for k, v in self.activities.items()},
                    "history_events": dict(self.history_events)}


class Timer:
    """``with Timer() as t: ...`` then ``t.cpu_s``, ``t.wall_s`` (this thread's CPU, and wall-clock seconds)."""

    def __enter__(self) -> "Timer":
        self._cpu, self._wall = time.thread_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = time.thread_time() - self._cpu
        self.wall_s = time.perf_counter() - self._wall
