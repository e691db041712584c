"""Overlap of the three per-batch stages: build the input batch, run the network, post-process its output.

Why this module exists: around each forward pass there is CPU work before it (JPEG decode set-up, letterbox,
host-to-device copies) and after it (NMS, whose result must come back to the host, and MegaDetector formatting).
Done one after another on one thread the GPU idles during both. Here each stage has its own thread, one batch
apart::

    "stage" thread: stage(N+1)      main thread: launch(N)      "post" thread: finish(N-1)

so a forward pass is always queued while the neighbouring batches are prepared and post-processed. The same driver
runs on CPU and on CUDA (only the ``BatchStages`` differ), which is how the CPU test suite exercises the ordering,
error handling and out-of-memory fallback of the GPU path.

Error rules, as MegaDetector's: one image that cannot be decoded is one "image access failure" (with the reason its
decode gave); a batch whose inference fails makes each of its images an "inference failure" (reason ``inference``,
retryable: the next attempt runs them again, on another node); out of GPU memory, the batch is split in halves and
retried unpadded on the main thread. Nothing here decides an exit code.

Must not: decode images or run the network itself (``devices`` does) or write results (entries go to ``emit``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from gpu_batch import manifest as contract
from gpu_batch.worker.preprocess import CaptureTime, LetterboxGeometry
from gpu_batch.worker.results import FAILURE_IMAGE_OPEN, FAILURE_INFER, failure_entry

logger = logging.getLogger(__name__)

Entry = dict[str, Any]


@dataclass(slots=True)
class Prepared:
    """One image after the fetch/decode threads: ready to be batched, or already a failure."""

    name: str
    geometry: LetterboxGeometry | None = None
    pixels: np.ndarray | None = None  # CPU: letterboxed HxWx3 uint8; CUDA: original HxWx3 uint8 (non-JPEG input)
    failure: str | None = None  # MegaDetector's failure string
    failure_reason: str | None = None  # why (gpu_batch.manifest.FAILURE_REASONS); None with a failure: inference
    jpeg: bytes | None = None  # CUDA: JPEG bytes, decoded on the GPU together with the whole batch (nvJPEG)
    rotation: int = 0  # degrees counter-clockwise (EXIF orientation), applied after the GPU decode
    captured: CaptureTime | None = None  # EXIF DateTimeOriginal and offsets (``preprocess.image_capture_time``)
    uploaded: torch.Tensor | None = None  # CUDA: ``pixels`` already on the GPU (a JPEG of the CPU-decoded share)
    # a JPEG without its end-of-image marker, decoded as far as it goes (``formats.jpeg_end.jpeg_cut_short``): its entry is
    # MegaDetector's as ever; the attempt names it among the damaged photos (``results.ResultWriter.add``)
    damaged: bool = False


@dataclass(slots=True)
class Staged:
    """A batch ready for the network: ``batch`` rows 0..len(items)-1 are ``items``; later rows are tail padding."""

    items: list[Prepared]
    failed: list[Prepared] = field(default_factory=list)  # decode failures found while staging
    batch: torch.Tensor | None = None
    ready: Any = None  # CUDA event recorded after the batch was written


@dataclass(slots=True)
class Launched:
    """A forward pass queued on the device; ``prediction`` may not be computed yet."""

    items: list[Prepared]
    prediction: torch.Tensor
    started: Any = None  # CUDA timing events around the forward pass
    done: Any = None


class BatchStages(Protocol):
    """The device-specific halves of the pipeline (see ``devices``)."""

    def stage(self, items: list[Prepared], pad_to: int | None) -> Staged: ...

    def launch(self, staged: Staged) -> Launched: ...

    def finish(self, launched: Launched) -> list[Entry]: ...

    def release_memory(self) -> None: ...


def prepared_failure(item: Prepared) -> Entry:
    """The failure entry of an image that failed before or while staging (``item.failure`` set).

    Without a reason, an image that could not be opened counts as undecodable and any other failure as inference.
    """
    failure = item.failure or FAILURE_INFER
    reason = item.failure_reason or (contract.REASON_UNDECODABLE if failure == FAILURE_IMAGE_OPEN
                                     else contract.REASON_INFERENCE)
    return failure_entry(item.name, failure, reason)


def inference_failure(item: Prepared) -> Entry:
    """The failure entry of an image whose batch failed in the network or its post-processing."""
    return failure_entry(item.name, FAILURE_INFER, contract.REASON_INFERENCE)


class StageClock:
    """Seconds per named stage, added from several threads; tells which stage limits throughput. Also the moment
    each named step first happened (``first``), which says where a shard's time to its first batch goes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._firsts: dict[str, float] = {}

    def first(self, key: str) -> None:
        """Note ``time.monotonic()`` under ``key`` unless the key was noted before (cheap after that)."""
        if key not in self._firsts:
            with self._lock:
                self._firsts.setdefault(key, time.monotonic())

    def firsts(self) -> dict[str, float]:
        with self._lock:
            return dict(self._firsts)

    def add(self, key: str, seconds: float) -> None:
        with self._lock:
            self._seconds[key] = self._seconds.get(key, 0.0) + seconds

    def since(self, key: str, t0: float) -> None:
        self.add(key, time.monotonic() - t0)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seconds)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


class BatchOverlap:
    """Runs batches through ``stages`` with one batch in each stage at a time; emits entries on the caller's thread.

    ``submit`` may block until an older batch has been launched (bounded memory: at most ``stage_threads`` + 2
    batches exist at once). ``drain`` finishes everything submitted. Use as a context manager so that the stage
    threads always stop.

    ``stage_threads`` > 1 stages that many batches at once (``stages.stage`` must then be safe to call from several
    threads); batches are still launched, finished and emitted in the order they were submitted. Why: with the
    compiled forward pass a single stage thread (decode + letterbox) is the likely limit (``devices.StageTimes``).
    """

    def __init__(self, stages: BatchStages, emit: Callable[[list[Entry]], None], clock: StageClock,
                 pad_to: int | None = None, label: str = "", stage_threads: int = 1) -> None:
        if stage_threads < 1:
            raise ValueError(f"stage_threads must be at least 1, not {stage_threads}")
        self._stages, self._emit, self._clock = stages, emit, clock
        self._pad_to, self._label, self._stage_threads = pad_to, label, stage_threads
        self._stager = ThreadPoolExecutor(max_workers=stage_threads, thread_name_prefix="stage")
        self._poster = ThreadPoolExecutor(max_workers=1, thread_name_prefix="post")
        self._staged: deque[tuple[list[Prepared], Future[Staged]]] = deque()
        self._posted: deque[tuple[list[Prepared], Future[list[Entry]]]] = deque()

    def __enter__(self) -> BatchOverlap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for executor in (self._stager, self._poster):
            executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, items: list[Prepared]) -> None:
        self._staged.append((items, self._stager.submit(self._timed_stage, items)))
        while len(self._staged) > self._stage_threads:
            self._launch_next()

    def drain(self) -> None:
        while self._staged:
            self._launch_next()
        while self._posted:
            self._finish_next()

    def _timed_stage(self, items: list[Prepared]) -> Staged:
        t0 = time.monotonic()
        self._clock.first("stage_started")
        try:
            return self._stages.stage(items, self._pad_to)
        finally:
            self._clock.since("stage_thread_busy_s", t0)
            self._clock.first("staged")

    def _timed_finish(self, launched: Launched) -> list[Entry]:
        t0 = time.monotonic()
        try:
            return self._stages.finish(launched)
        finally:
            self._clock.since("post_thread_busy_s", t0)
            self._clock.first("finished")

    def _launch_next(self) -> None:
        items, future = self._staged.popleft()
        t0 = time.monotonic()
        try:
            staged = future.result()
        except Exception as exc:  # noqa: BLE001 - the serial path decides per batch, and per image where it can
            logger.warning("%s staging %d images failed (%s: %s); retrying them serially", self._label,
                           len(items), type(exc).__name__, exc)
            self.run_serial(items)
            return
        finally:
            self._clock.since("main_wait_stage_s", t0)
        self._emit([prepared_failure(it) for it in staged.failed])
        if staged.batch is None:
            return
        t0 = time.monotonic()
        try:
            launched = self._stages.launch(staged)
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its images, not the shard
            good = staged.items
            del staged  # frees the batch before a retry on out-of-memory
            self._batch_failed(good, exc)
            return
        finally:
            self._clock.since("main_launch_s", t0)
        self._clock.first("launched")
        self._posted.append((launched.items, self._poster.submit(self._timed_finish, launched)))
        del launched
        while len(self._posted) > 1:
            self._finish_next()

    def _finish_next(self) -> None:
        items, future = self._posted.popleft()
        t0 = time.monotonic()
        try:
            entries = future.result()
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its images, not the shard
            self._batch_failed(items, exc)
            return
        finally:
            self._clock.since("main_wait_post_s", t0)
        self._emit(entries)

    def _batch_failed(self, items: list[Prepared], exc: BaseException) -> None:
        if _is_oom(exc) and len(items) > 1:
            self._stages.release_memory()
            logger.info("%s out of memory on a batch of %d: splitting it", self._label, len(items))
            self.run_serial(items)
            return
        logger.warning("%s batch of %d failed: %s: %s", self._label, len(items), type(exc).__name__, exc)
        self._emit([inference_failure(it) for it in items])

    def run_serial(self, items: list[Prepared]) -> None:
        """All three stages on this thread, without tail padding; out of memory splits the batch in halves."""
        staged: Staged | None = None
        try:
            staged = self._stages.stage(items, None)
            self._emit([prepared_failure(it) for it in staged.failed])
            if staged.batch is None:
                return
            entries = self._stages.finish(self._stages.launch(staged))
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its images, not the shard
            good = staged.items if staged is not None else items
            del staged
            if _is_oom(exc) and len(good) > 1:
                self._stages.release_memory()
                half = len(good) // 2
                self.run_serial(good[:half])
                self.run_serial(good[half:])
                return
            logger.warning("%s batch of %d failed: %s: %s", self._label, len(good), type(exc).__name__, exc)
            self._emit([prepared_failure(it) if it.failure else inference_failure(it) for it in good])
            return
        self._emit(entries)
