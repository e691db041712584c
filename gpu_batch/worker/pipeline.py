"""The shard pipeline: fetch -> decode -> batch -> stage -> infer -> NMS -> write, with bounded memory.

Why this module exists: throughput with nothing lost. Downloads and decodes (or, on CUDA, JPEG header reads) run
in a thread pool (blob I/O, PIL and OpenCV release the GIL); at most ``prefetch`` images are in flight or waiting;
images are batched by letterboxed shape (mixing shapes would need extra padding, which changes detections;
camera-trap shards are nearly all one shape); batches then go through ``batching.BatchOverlap``, which overlaps
staging, the forward pass and post-processing of consecutive batches on three threads. A background thread flushes
results. One bad image produces one ``failure`` entry and the shard goes on.

Must not: parse the command line or decide exit codes (``__main__`` does), or read the environment.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from gpu_batch import manifest as contract
from gpu_batch.worker.batching import BatchOverlap, Entry, Prepared, StageClock, prepared_failure
from gpu_batch.worker.detector import Detector
from gpu_batch.worker.devices import CpuStages, CudaStages, decoded_by, describe_stages, make_stages
from gpu_batch.worker.hwdecode import DecodeSelection, default_selection
from gpu_batch.worker.loader import LoadedModel
from gpu_batch.worker.results import ResultWriter
from gpu_batch.worker.share_tuner import ShareTuner
from gpu_batch.worker.sources import ImageSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """Tuning knobs; the defaults suit one GPU with 8-16 cores, or a CPU laptop."""

    batch_size: int | None = None  # None: fitted to GPU memory on CUDA, devices.CPU_BATCH_SIZE on CPU
    workers: int = 16  # concurrent fetch+decode threads
    prefetch: int | None = None  # images in flight or waiting; default 4 x batch size (at least 2 x workers)
    flush_seconds: float = 5.0
    log_seconds: float = 30.0
    shard_label: str = ""
    # Tune conv algorithms once per input shape (seconds at start, faster after). None: only when the shard is long
    # enough to pay the tuning back (``cudnn_benchmark_pays``).
    cudnn_benchmark: bool | None = None
    cudnn_benchmark_limit: int | None = None  # algorithms tried per conv when tuning (torch's default: 10)
    # The JPEG decoder (``hwdecode.select_decoder``); None: today's for the device (nvJPEG CUDA, or PIL on the CPU).
    decode: DecodeSelection | None = None
    # Batches staged (decoded + letterboxed) at once, each on a thread, CUDA stream and hardware decoder of its own.
    stage_threads: int = 1
    # CUDA: the fraction of JPEGs the fetch threads decode exactly (PIL) and upload, instead of the GPU decoding them.
    cpu_decode_share: float = 0.0
    # CUDA: move that share during the shard to where staging stops limiting it (share_tuner; starts from the last
    # shard's share in this process, else 0).
    cpu_decode_auto: bool = False
    # CUDA: the side streams' priority (devices.STREAM_PRIORITIES): "high" puts staging and NMS before the forward.
    stream_priority: str = "normal"


# Stage figures that are not seconds to add up over a shard's runs (``ShardSummary.add_run``): the decode share the
# tuner started from and ended at (``share_tuner.ShareTuner.finish``).
_STAGES_FROM_FIRST_RUN = frozenset({"cpu_decode_share_start"})
_STAGES_FROM_LAST_RUN = frozenset({"cpu_decode_share_end"})


@dataclass(slots=True)
class ShardSummary:
    """What one shard did, for its one-line JSON summary (``__main__._summary_dict``) and the throughput log.

    One summary can span several ``run_images`` calls: the worker reads again the images whose reads found their
    account's host missing once it resolves (``__main__._wait_for_missing_host``). The counts stay one per image
    (``forget``), and each run's pipeline figures are added to the earlier runs' (``add_run``), so the summary
    describes the whole shard, not only its last run. ``seconds`` (set by the caller) and ``img_s`` are wall time from
    the shard's start to its end, the wait for that host included; ``steady_img_s`` and ``stages`` say how fast the
    pipeline ran while it ran.
    """

    images: int
    done: int = 0
    failed: int = 0
    retryable: int = 0  # of ``failed``: the ones the next attempt runs again
    failure_reasons: dict[str, int] = field(default_factory=dict)  # failed images by failure_reason
    damaged: int = 0  # of the successes: JPEGs cut short, decoded as far as they go (``formats.jpeg_end.jpeg_cut_short``)
    skipped_resumed: int = 0
    seconds: float = 0.0
    batch_size: int = 0
    # time.monotonic() bookkeeping for the steady-state rate, which leaves out start-up and pipeline fill.
    first_batch_at: float | None = None
    done_at_first_batch: int = 0
    last_result_at: float | None = None
    # Seconds per pipeline stage: where the main thread waited and how busy the stage/post threads and the GPU were.
    stages: dict[str, float] = field(default_factory=dict)
    # whether cuDNN tuned its algorithms (None: not on CUDA); the first run's choice (``_choose_cudnn_tuning``)
    cudnn_benchmark: bool | None = None
    decode: str | None = None  # the decoder chosen for the shard's JPEGs (hwdecode.DECODERS) and why
    decode_reason: str | None = None
    decoded_by: dict[str, int] | None = None  # CUDA: images per decoder that actually decoded them (fallbacks)
    # time.monotonic() of each step's first occurrence (StageClock.first): pipeline start, first image prepared,
    # first batch submitted, staging started and done, launched, post-processed; where the first batch's time goes.
    firsts: dict[str, float] = field(default_factory=dict)
    runs: int = 0  # ``run_images`` calls this summary has counted (``add_run``)

    def add_run(self, batch_size: int, stages: dict[str, float], decoded_by: dict[str, int] | None,
                firsts: dict[str, float]) -> None:
        """Count one ``run_images`` call's pipeline figures into the shard's.

        What is kept, and why: ``batch_size`` stays the first run's (the shard's batch size; a re-read sizes its own
        from the same options, and one number is reported). ``firsts`` keeps each step's earliest time: the first
        run's, and a later run's only for steps the first never reached (a first run whose reads all failed submitted
        no batch), so "where the first batch's time went" stays measured from the shard's start. ``stages`` seconds
        and ``decoded_by`` counts are added up: each is a total over the images and batches of the shard; the decode
        share tuner's start share stays the first run's and its end share is the last run's.
        """
        if self.runs == 0:
            self.batch_size = batch_size
        merged = dict(self.stages)
        for key, value in stages.items():
            if key in _STAGES_FROM_FIRST_RUN:
                merged.setdefault(key, value)
            elif key in _STAGES_FROM_LAST_RUN:
                merged[key] = value
            else:
                merged[key] = merged.get(key, 0.0) + value
        self.stages = merged
        if decoded_by is not None:
            counts = dict(self.decoded_by or {})
            for decoder, images in decoded_by.items():
                counts[decoder] = counts.get(decoder, 0) + images
            self.decoded_by = counts
        self.firsts = {**firsts, **self.firsts}
        self.runs += 1

    def forget(self, entries: Sequence[Entry]) -> None:
        """Take failed ``entries`` out of the counts before their images are read again (``run_images`` then counts
        their new results), so that ``done`` stays one per image of the shard."""
        for entry in entries:
            self.done -= 1
            if "failure" not in entry:
                continue
            self.failed -= 1
            reason = contract.failure_reason(entry) or contract.REASON_UNCLASSIFIED
            left = self.failure_reasons.get(reason, 0) - 1
            if left > 0:
                self.failure_reasons[reason] = left
            else:
                self.failure_reasons.pop(reason, None)
            if contract.failure_kind(entry) == contract.RETRYABLE:
                self.retryable -= 1

    def steady_img_s(self) -> float | None:
        """Images per second after the first batch's results (start-up, cuDNN tuning and pipeline fill excluded)."""
        if self.first_batch_at is None or self.last_result_at is None or self.last_result_at <= self.first_batch_at:
            return None
        return (self.done - self.done_at_first_batch) / (self.last_result_at - self.first_batch_at)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "done": self.done, "failed": self.failed, "retryable": self.retryable,
                "failure_reasons": dict(sorted(self.failure_reasons.items())), "damaged": self.damaged,
                "skipped_resumed": self.skipped_resumed, "seconds": round(self.seconds, 3),
                "img_s": round(self.done / self.seconds, 3) if self.seconds > 0 else 0.0}


# Measured on an H100 with YOLOv5x6 at batch 32 (bench/RESULTS.md, 2026-11-22): tuning costs about 2.8 s before the
# first batch and makes the forward passes about 7 % faster (263 vs 245 img/s), so it pays from about 10,000 images.
CUDNN_TUNING_MIN_IMAGES = 10_000
CUDNN_BENCHMARK_LIMIT_DEFAULT = 10  # torch.backends.cudnn.benchmark_limit as torch starts


def cudnn_benchmark_pays(images: int) -> bool:
    """Whether cuDNN's per-shape algorithm search pays for itself on a shard of ``images``.

    Why a rule and not always-on: the search runs every candidate algorithm of every convolution once at the
    shard's batch shape; on a short shard that start-up costs more than the faster kernels then save.
    """
    return images >= CUDNN_TUNING_MIN_IMAGES


class _Throughput:
    def __init__(self, every: float, label: str, total: int) -> None:
        self.every, self.label, self.total = every, label, total
        self.start = self.last = time.monotonic()
        self.done_at_last = 0

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            rate = (done - self.done_at_last) / (now - self.last)
            logger.info("%s %d/%d images, %.1f img/s (last %.0fs), %.1f img/s overall", self.label, done,
                        self.total, rate, now - self.last, done / (now - self.start))
            self.last, self.done_at_last = now, done


class _Buckets:
    """Prepared images grouped by padded input shape; full buckets become batches."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.by_shape: dict[tuple[int, int], list[Prepared]] = {}
        self.count = 0

    def add(self, item: Prepared) -> list[Prepared] | None:
        """Adds ``item``; returns a batch to run when one is due."""
        assert item.geometry is not None
        shape = item.geometry.padded_shape
        bucket = self.by_shape.setdefault(shape, [])
        bucket.append(item)
        self.count += 1
        if len(bucket) >= self.batch_size:
            return self._pop(shape)
        if self.count > 2 * self.batch_size:  # many odd shapes: run the largest partial bucket to bound memory
            return self._pop(max(self.by_shape, key=lambda s: len(self.by_shape[s])))
        return None

    def _pop(self, shape: tuple[int, int]) -> list[Prepared]:
        items = self.by_shape.pop(shape)
        self.count -= len(items)
        return items

    def rest(self) -> list[list[Prepared]]:
        return [self._pop(shape) for shape in list(self.by_shape)]


def run_images(names: Sequence[str], source: ImageSource, model: LoadedModel, writer: ResultWriter,
               threshold: float, options: PipelineOptions, summary: ShardSummary,
               stop_check: Callable[[], None] | None = None) -> None:
    """Process ``names`` and add one entry per image to ``writer``; updates ``summary`` as it goes.

    ``stop_check`` is called after each result; whatever it raises stops the shard (the stage threads are joined
    first). A ``writer`` that can no longer write raises its ``OutputNotWritable`` the same way.
    """
    detector = Detector(model, threshold)
    selection = options.decode or default_selection(model.device.type)
    summary.decode, summary.decode_reason = selection.choice.decoder, selection.choice.reason
    stages = make_stages(model, detector, selection.hw, options.stage_threads, options.cpu_decode_share,
                         options.stream_priority)
    if model.device.type == "cuda":
        _choose_cudnn_tuning(len(names), options, summary)
    batch_size = options.batch_size or stages.default_batch_size()
    prefetch = options.prefetch or max(4 * batch_size, 2 * options.workers)
    meter = _Throughput(options.log_seconds, options.shard_label, len(names))
    buckets = _Buckets(batch_size)
    clock = StageClock()
    clock.first("pipeline_start")
    damaged: set[str] = set()  # names the fetch threads found cut short (``Prepared.damaged``); few, if any
    emit = _result_emitter(writer, summary, meter, stop_check, damaged)

    tuner = _share_tuner(stages, options, clock, str(model.device))
    pending: set[Future[Prepared]] = set()
    todo = iter(names)
    pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="fetch-decode")

    def prepare(name: str) -> Prepared:
        item = stages.prepare(source, name)
        if item.damaged:  # before its future completes, so before its entry is emitted
            damaged.add(name)
        return item

    def submit(name: str) -> Future[Prepared]:
        return pool.submit(prepare, name)

    try:
        with BatchOverlap(stages, emit, clock, pad_to=batch_size if stages.pads_tail else None,
                          label=options.shard_label, stage_threads=options.stage_threads) as overlap:
            exhausted = False
            while True:
                if not exhausted:
                    exhausted = _fetch_ahead(todo, pending, prefetch, submit)
                if not pending:
                    break
                t0 = time.monotonic()
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                clock.since("main_wait_fetch_s", t0)
                clock.first("prepared")
                _batch_or_report(finished, buckets, overlap, emit, clock)
                if tuner is not None:
                    tuner.tick()
            for batch in buckets.rest():
                overlap.submit(batch)
            overlap.drain()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on a stop, queued downloads are dropped, not waited for
        # a second run on the same summary (a re-read after a missing host came back) adds to the first's figures
        seconds = {**clock.snapshot(), **describe_stages(stages), **(tuner.finish() if tuner else {})}
        summary.add_run(batch_size, seconds, decoded_by(stages), clock.firsts())


def _share_tuner(stages: CpuStages, options: PipelineOptions, clock: StageClock, device: str) -> ShareTuner | None:
    """``--cpu-decode-share auto`` on CUDA: the tuner of the fetch threads' decode share (``share_tuner``)."""
    if not options.cpu_decode_auto or not isinstance(stages, CudaStages):
        return None

    def waits() -> tuple[float, float]:
        seconds = clock.snapshot()
        return seconds.get("main_wait_stage_s", 0.0), seconds.get("main_wait_fetch_s", 0.0)

    return ShareTuner(stages.cpu_share, waits, device)


def _choose_cudnn_tuning(images: int, options: PipelineOptions, summary: ShardSummary) -> None:
    """Switch cuDNN's per-shape algorithm search on or off for this shard (CUDA only) and record the choice.

    Why per shard: the search only pays back on long shards (``cudnn_benchmark_pays``) unless the options force it;
    the summary reports which way it went so throughput figures can be compared.

    A later run on the same ``summary`` (the re-read after a missing host came back, ``ShardSummary.add_run``) keeps
    the first run's choice: its own image count is only the re-read's, which would turn tuning off for a long shard
    and report "off" for the whole of it, and the shard's convolutions are already tuned at its batch shape.
    """
    tune = options.cudnn_benchmark
    if summary.cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = summary.cudnn_benchmark
    else:
        torch.backends.cudnn.benchmark = cudnn_benchmark_pays(images) if tune is None else tune
        summary.cudnn_benchmark = torch.backends.cudnn.benchmark
    # always set: a resident server runs shard after shard in one process, and one shard's limit must not stay
    torch.backends.cudnn.benchmark_limit = (CUDNN_BENCHMARK_LIMIT_DEFAULT if options.cudnn_benchmark_limit is None
                                            else options.cudnn_benchmark_limit)
    logger.info("%s cuDNN algorithm tuning %s for %d images", options.shard_label,
                "on" if torch.backends.cudnn.benchmark else "off", images)


def _result_emitter(writer: ResultWriter, summary: ShardSummary, meter: _Throughput,
                    stop_check: Callable[[], None] | None,
                    damaged: set[str] | frozenset[str] = frozenset()) -> Callable[[list[Entry]], None]:
    """The callback every finished entry goes through: to ``writer``, into ``summary`` and the throughput log.
    ``damaged``: the names of JPEGs cut short; their entries go to the writer as such (never changed), and a success
    among them counts in ``summary.damaged``.

    Why one callback for the fetch failures and for ``BatchOverlap``'s results (which it emits on this thread):
    every image is counted and written the same way, and a writer error or a stop request is raised right after
    the result that revealed it. It also stamps the first and last result times ``ShardSummary.steady_img_s`` needs.
    """
    def emit(entries: list[Entry]) -> None:
        for entry in entries:
            cut_short = entry["file"] in damaged and "failure" not in entry
            writer.add(entry, damaged=cut_short)
            summary.done += 1
            summary.damaged += cut_short
            if "failure" in entry:
                summary.failed += 1
                reason = contract.failure_reason(entry) or contract.REASON_UNCLASSIFIED
                summary.failure_reasons[reason] = summary.failure_reasons.get(reason, 0) + 1
                if contract.failure_kind(entry) == contract.RETRYABLE:
                    summary.retryable += 1
            meter.tick(summary.done)
            if writer.error is not None:
                raise writer.error
            if stop_check is not None:
                stop_check()
        if entries:
            now = time.monotonic()
            summary.last_result_at = now
            if summary.first_batch_at is None:
                summary.first_batch_at, summary.done_at_first_batch = now, summary.done

    return emit


def _fetch_ahead(todo: Iterator[str], pending: set[Future[Prepared]], prefetch: int,
                 submit: Callable[[str], Future[Prepared]]) -> bool:
    """Start fetch+decode of the next names until ``prefetch`` are in flight; returns whether ``todo`` ran out.

    Why a bound: at most ``prefetch`` decoded images wait in memory, however long the shard.
    """
    while len(pending) < prefetch:
        name = next(todo, None)
        if name is None:
            return True
        pending.add(submit(name))
    return False


def _batch_or_report(finished: set[Future[Prepared]], buckets: _Buckets, overlap: BatchOverlap,
                     emit: Callable[[list[Entry]], None], clock: StageClock) -> None:
    """Route each prepared image: one that failed to load becomes its failure entry now; the rest go into
    ``buckets``, and a bucket that is due goes to ``overlap`` as a batch.

    Why report failures here: an image that could not be read or decoded has nothing to batch, and its failure is
    data in the results, not an error of the shard.
    """
    for fut in finished:
        item = fut.result()
        if item.failure is not None:
            emit([prepared_failure(item)])
            continue
        batch = buckets.add(item)
        if batch is not None:
            clock.first("submitted")  # before: the stage thread may start on it before ``submit`` returns
            overlap.submit(batch)
