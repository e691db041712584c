"""A point in time by which a caller must have its answer, for the clients that serve it.

Why: Event Grid waits 30 s for the answer to a delivery (``api.arrivals``), and the storage and Key Vault SDKs'
own retries and timeouts take minutes to give up. One ``Deadline`` is handed to every client a delivery builds
(``adapters.clients.store``, ``source_store``), which bound each request and each back-off by what is left of it
(``gpu_batch.storage_refs.deadline_storage_options``), so the calls together end by it, not each call by its own.

Must not: read the environment or sleep; the clock is injected (tests move a fake one), monotonic by default.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True, slots=True)
class Deadline:
    """``at``: when, on ``clock`` (monotonic seconds), the caller must have its answer. ``try_timeouts``: each
    request's (connection, read) timeouts at most, for a caller whose whole deadline is long (an HTTP POST's, minutes:
    an account that answers slowly must not fail for it); None: the short ones a 30-s caller needs
    (``gpu_batch.storage_refs.DEADLINE_TRY_CONNECT_S`` and ``DEADLINE_TRY_READ_S``). Either way, never past ``at``."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    try_timeouts: tuple[float, float] | None = None

    @classmethod
    def within(cls, seconds: float, clock: Callable[[], float] = time.monotonic,
               try_timeouts: tuple[float, float] | None = None) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(clock() + seconds, clock, try_timeouts)

    def left(self) -> float:
        """Seconds until the deadline; 0 or less once it passed."""
        return self.at - self.clock()
