"""Fault injection for tests of the pool's recovery logic: TRAPBATCH_WORKER_FAULT (never set in production).

Values:
    crash_after:K    os._exit(70) as soon as at least K images are written and flushed to the output
    pause_after:K    once exactly K images are flushed, stop this process with SIGSTOP (a node cut off while its
                     process lives on: the test runs the same attempt again, then resumes this one with SIGCONT)
    hang             sleep forever right after start (the pool must time the task out)
    exit:N           exit with status N immediately
    corrupt_output   process the shard, then overwrite the output with invalid JSON and exit 0
    fetch_error:STATUS[:TEXT]
                     on attempt 1 only, fetching an image whose name contains TEXT (every image when TEXT is left
                     out) fails as a storage answer with HTTP STATUS would (403: an expired SAS, 503: throttling,
                     404: gone), with the failure reason the blob source gives that status; later attempts read
                     normally (as after a SAS rotated before the retry)

Why this module exists: the local pool and the orchestration must be tested against real worker processes that
misbehave in the ways real ones do. Keeping the hooks in one place makes them easy to audit and keeps them out of
the pipeline logic. The environment is read by ``from_env`` at CLI start, never at import.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from gpu_batch.worker.sources import ImageSource

logger = logging.getLogger(__name__)

ENV_VAR = "TRAPBATCH_WORKER_FAULT"
CRASH_EXIT_CODE = 70
CORRUPT_BYTES = b'{"images": [ {"file": "truncated'


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # "none" | "crash_after" | "pause_after" | "hang" | "exit" | "corrupt_output" | "fetch_error"
    value: int = 0
    text: str = ""  # fetch_error: the part of an image name that selects the images that fail
    paused: list[bool] = field(default_factory=list, compare=False)  # pause_after: set once it has paused

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Fault":
        spec = env.get(ENV_VAR, "").strip()
        if not spec:
            return cls("none")
        kind, _, arg = spec.partition(":")
        if kind in ("hang", "corrupt_output") and not arg:
            return cls(kind)
        if kind in ("crash_after", "pause_after", "exit") and arg.strip().isdigit():
            return cls(kind, int(arg))
        status, _, text = arg.partition(":")
        if kind == "fetch_error" and status.strip().isdigit():
            return cls(kind, int(status), text)
        raise FaultSpecError(f"{ENV_VAR}={spec!r} is not one of crash_after:K, pause_after:K, hang, exit:N, "
                             "corrupt_output, fetch_error:STATUS[:TEXT]")

    @property
    def crash_threshold(self) -> int | None:
        """The results flushed at once when they reach this count (``ResultWriter.flush_at_new``), so that the fault
        acts on exactly that many."""
        return self.value if self.kind in ("crash_after", "pause_after") else None

    def at_start(self) -> None:
        """Apply faults that act before any work."""
        if self.kind == "exit":
            logger.warning("fault injection: exiting with status %d", self.value)
            os._exit(self.value)
        if self.kind == "hang":
            logger.warning("fault injection: hanging")
            while True:
                time.sleep(3600)

    def wrap_source(self, source: ImageSource, attempt: int) -> ImageSource:
        """The shard's image source, failing the chosen fetches when this is a ``fetch_error`` fault on attempt 1."""
        if self.kind != "fetch_error" or attempt != 1:
            return source
        logger.warning("fault injection: fetches of images matching %r fail with HTTP %d", self.text, self.value)
        return _FailingSource(source, self.value, self.text)

    def after_flush(self, n_written: int) -> None:
        if self.kind == "crash_after" and n_written >= self.value:
            logger.warning("fault injection: crashing after %d flushed results", n_written)
            os._exit(CRASH_EXIT_CODE)
        if self.kind == "pause_after" and n_written >= self.value and not self.paused:
            self.paused.append(True)
            logger.warning("fault injection: pausing (SIGSTOP) after %d flushed results", n_written)
            os.kill(os.getpid(), signal.SIGSTOP)


class _FailingSource:
    """An image source whose fetches of matching names fail like a storage answer with ``status``."""

    def __init__(self, inner: ImageSource, status: int, text: str) -> None:
        self.inner, self.status, self.text = inner, status, text

    def fetch(self, name: str) -> bytes:
        from gpu_batch.worker.sources import SourceError, reason_for_status

        if self.text in name:
            raise SourceError(f"cannot download {name!r}: injected HTTP {self.status}", reason_for_status(self.status))
        return self.inner.fetch(name)
