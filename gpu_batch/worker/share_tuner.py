"""``--cpu-decode-share auto``: the share of JPEGs the fetch threads decode, moved to where staging stops limiting.

Why: on an H200 the stage thread (the JPEG engine's decode + letterbox, ~94 ms a batch of 32) held a compiled
worker at ~370 img/s while its forward pass alone ran 489 (bench/RESULTS.md, 2026-12-04). The fetch threads' idle
cores can decode a share of the JPEGs exactly (PIL) and upload them, but the share that pays depends on the GPU, its
engine, the JPEGs' size and the node's cores: too little leaves the stage thread the limit, too much makes the fetch
threads the limit. The main thread already measures which of the two it waits for (``StageClock``:
``main_wait_stage_s``, ``main_wait_fetch_s``), so a shard can find the share itself:

* every ``window_s`` of wall time, the waits' growth over the window is compared: the main thread waited on the
  stage thread for more than ``DOMINANT`` of the window and more than on the fetch threads -> one ``STEP`` more
  share; the other way round -> one step less; otherwise (the forward pass or NMS is the limit) it stays;
* the share stays within 0 and ``ceiling``;
* the last share of a shard is where the next shard of the same process starts (a resident worker's shards are
  alike: same node, usually the same cameras), so only a node's first shard pays the search.

Must not: decide which image is decoded where (``devices.ShareCounter`` spreads the share evenly), or read the
environment.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

logger = logging.getLogger(__name__)

STEP = 0.05
DOMINANT = 0.05  # of a window: waits shorter than this are noise, not a limit
WINDOW_S = 1.0
CEILING = 0.8

_learned: dict[str, float] = {}  # device -> the last share a shard of this process ended with
_learned_lock = threading.Lock()


def next_share(share: float, wait_stage_s: float, wait_fetch_s: float, window_s: float, step: float = STEP,
               ceiling: float = CEILING) -> float:
    """The share for the next window, from the main thread's waits over this one (see the module doc)."""
    floor = DOMINANT * window_s
    if wait_stage_s > floor and wait_stage_s > wait_fetch_s:
        share += step
    elif wait_fetch_s > floor and wait_fetch_s > wait_stage_s:
        share -= step
    return round(min(max(share, 0.0), ceiling), 6)


class Share(Protocol):
    share: float


class ShareTuner:
    """Adjusts ``target.share`` from ``waits()`` (main-thread seconds waited on staging and on fetching, cumulative)
    once a window; ``tick`` is called by the main thread as often as it likes (it only reads the clock)."""

    def __init__(self, target: Share, waits: Callable[[], tuple[float, float]], device: str,
                 window_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.target, self.waits, self.device, self.clock = target, waits, device, clock
        self.window_s = WINDOW_S if window_s is None else window_s
        with _learned_lock:
            target.share = _learned.get(device, 0.0)
        self.start_share = target.share
        self.changes = 0
        self._at = clock()
        self._last = waits()

    def tick(self) -> None:
        now = self.clock()
        if now - self._at < self.window_s:
            return
        stage, fetch = self.waits()
        share = next_share(self.target.share, stage - self._last[0], fetch - self._last[1], now - self._at)
        if share != self.target.share:
            self.changes += 1
            logger.debug("CPU decode share %.2f -> %.2f (waited %.3f s on staging, %.3f s on fetching in %.2f s)",
                         self.target.share, share, stage - self._last[0], fetch - self._last[1], now - self._at)
            self.target.share = share
        self._at, self._last = now, (stage, fetch)

    def finish(self) -> dict[str, float]:
        """Remember the share for this process's next shard; the figures for the shard summary's stages."""
        with _learned_lock:
            _learned[self.device] = self.target.share
        return {"cpu_decode_share_start": self.start_share, "cpu_decode_share_end": self.target.share,
                "cpu_decode_share_changes": float(self.changes)}


def forget_learned() -> None:
    """Tests: start from no learned share."""
    with _learned_lock:
        _learned.clear()
