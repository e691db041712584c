"""``python -m gpu_batch.worker``: run one shard manifest through the detector and write its results.

Blob mode (Azure Batch tasks, the local pool):
    python -m gpu_batch.worker --manifest-container C --manifest-blob B [--device auto|cpu|cuda]
        [--batch-size N] [--workers N] [--flush-seconds S] [--log-seconds S] [--compile]
        [--cudnn-benchmark | --no-cudnn-benchmark] [--cudnn-benchmark-limit N] [--hw-decode auto|on|off]
        [--stage-threads N] [--cpu-decode-share F|auto] [--stream-priority normal|high]
    Storage from TRAPBATCH_STORAGE_CONNECTION or TRAPBATCH_STORAGE_ACCOUNT_URL (+ managed identity). Images come from
    the manifest's source_container, results go to output_container/output_blob, with a progress counter beside them
    and, after the last flush, the attempt's coverage summary (``layout.attempt_coverage_blob``; the poll reads it
    instead of the results: ``gpu_batch.manifest.coverage_summary``).
Local mode (bench, tests):
    python -m gpu_batch.worker --manifest-file M.json --image-root DIR --output-file OUT.json [...]

Exit codes: 0 shard processed (per-image failures are data in the output); 2 bad arguments or unreadable manifest;
3 model cannot be resolved or loaded; 4 output not writable; 5 the images' storage account cannot be opened (secret
missing or unreadable: see ``gpu_batch.storage_refs``), or DNS says its host does not exist (image reads found so for
``sources.GONE_AFTER_S``: the shard stops there, its results so far flushed, ``sources.SourceGone``; a shard whose
reads all failed so sooner waits at its end until then, ``_wait_for_missing_host``); 73 another run of the same
attempt wrote its results since this one read or last wrote them (this run stopped without writing more:
``gpu_batch.exit_codes.OUTPUT_TAKEN``); 143 stopped by SIGTERM at its next stop check, its results so far flushed
(``SigtermStop``; a second SIGTERM gets the default action: it ends the process, except as a container's first
process, which only SIGKILL ends).
The last stdout line is a one-line JSON summary:
{"images", "done", "failed", "retryable", "failure_reasons", "damaged", "skipped_resumed", "seconds", "img_s", ...}:
"failed" counts every failed image, "retryable" those the next attempt runs again, "failure_reasons" all of them by
``failure_reason`` (``gpu_batch.manifest``), "damaged" the successes that were JPEGs cut short (decoded as far as they
go, named in ``layout.attempt_damaged_blob``: ``results``); "seconds" runs from after the imports
("import_s") to the last result, "model_load_s" is manifest + model ready, "first_batch_s" the first batch's
results, "steady_img_s" the rate after that, "stages" the per-stage seconds (see ``pipeline.ShardSummary``),
"first_batch_unix" the first batch's wall-clock time and "start_to_first_batch_s" the seconds from the start of the
process the pool launched (this one, or ``gpu_batch.worker.client``) to the first batch's results; "model_cache_hit"
whether the model came loaded from a resident worker's cache (always false here); "decode" the decoder chosen for
the shard's JPEGs (``nvimgcodec-hw``, ``nvjpeg-cuda`` or ``cpu``) with "decode_reason" why, and on CUDA
"decoded_by" the images each decoder actually decoded (refusals fall back per image; see ``hwdecode``);
"first_steps_s" the seconds from the shard's start (as "first_batch_s") to the first time each pipeline step happened
(``pipeline_start``, ``prepared``, ``submitted``, ``stage_started``, ``staged``, ``launched``, ``finished``): where a
shard's time to its first batch goes.

``run_shard`` is the one function that runs a shard: this CLI calls it once, the node-resident worker
(``gpu_batch.worker.resident``) once per request with its model cache and a stop check; both give the same exit
codes and summary.

Must not: hold pipeline logic; this is the shell that maps problems to exit codes.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, Protocol, Sequence, TypeVar

from gpu_batch import exit_codes  # torch-free, like everything imported before main sets up the environment
from gpu_batch.manifest import DEVICES  # the app checks TRAPBATCH_DEVICE against the same tuple
from gpu_batch.sdk_logging import quiet_azure_sdk
from gpu_batch.worker.resident_protocol import process_start_unix

if TYPE_CHECKING:  # the real imports wait until main has set up the environment torch reads (see _run)
    from gpu_batch.manifest import ShardManifest
    from gpu_batch.worker.cuda_check import CudaProbe
    from gpu_batch.worker.hwdecode import DecodeSelection
    from gpu_batch.worker.loader import LoadedModel
    from gpu_batch.worker.pipeline import PipelineOptions, ShardSummary
    from gpu_batch.worker.results import CoverageTarget, ResultSink, ResultWriter, ViewTarget
    from gpu_batch.worker.sources import ImageSource

# The exit codes are a contract with the app, which fails a task at once on those no retry can fix.
EXIT_OK = exit_codes.OK
EXIT_BAD_INPUT = exit_codes.BAD_INPUT
EXIT_MODEL = exit_codes.MODEL
EXIT_OUTPUT = exit_codes.OUTPUT
EXIT_SOURCE = exit_codes.SOURCE
EXIT_OUTPUT_TAKEN = exit_codes.OUTPUT_TAKEN
EXIT_STORAGE_UNAVAILABLE = exit_codes.STORAGE_UNAVAILABLE
EXIT_CANCELLED = exit_codes.CANCELLED

logger = logging.getLogger("gpu_batch.worker")
T = TypeVar("T")


class _Usage(Exception):
    pass


class _StorageUnavailable(Exception):
    """Storage did not answer a read the shard cannot start without (``exit_codes.STORAGE_UNAVAILABLE``)."""


class ShardCancelled(Exception):
    """Raised by a ``stop_check`` to stop the shard between batches (the resident worker's client went away, or the
    CLI got SIGTERM: ``SigtermStop``)."""


class ModelCache(Protocol):
    """Loaded models kept between shards by a resident worker, keyed by ``_model_key``."""

    def get(self, key: Hashable) -> tuple[Path, LoadedModel] | None: ...

    def put(self, key: Hashable, value: tuple[Path, LoadedModel]) -> None: ...


@dataclass(slots=True)
class ShardOutcome:
    """What one shard run gives its caller: the exit code and, when the shard ran to the end, its summary."""

    code: int
    summary: dict[str, Any] | None = None
    # work left for after the answer (``run_shard``'s ``defer_view``): the merge view, written while the GPU runs
    # the next shard instead of before this one ends
    after: Callable[[], None] | None = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpu_batch.worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest-container")
    p.add_argument("--manifest-blob")
    p.add_argument("--manifest-file")
    p.add_argument("--image-root", help="local mode: folder the manifest's image names are relative to")
    p.add_argument("--output-file", help="local mode: results file (default: the manifest's output_blob name)")
    p.add_argument("--model", help="override the manifest's model (MDV5A, MDV5B, a path, or blob://c/name)")
    p.add_argument("--device", choices=DEVICES, default=None,
                   help="default: TRAPBATCH_DEVICE (the local pool passes the app's setting), else auto")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--flush-seconds", type=float, default=5.0)
    p.add_argument("--log-seconds", type=float, default=30.0)
    p.add_argument("--compile", action="store_true",
                   help="wrap the network in torch.compile: ~16%% faster in steady state on an H200, after 26-49 s "
                        "to the first batch (warm/cold compile cache; eager: 11 s); pays from ~30,000 images a process "
                        "or on a resident worker, which keeps the compiled model")
    tuning = p.add_mutually_exclusive_group()
    tuning.add_argument("--cudnn-benchmark", dest="cudnn_benchmark", action="store_const", const=True, default=None,
                        help="always run cuDNN's per-shape algorithm search (default: only for shards of "
                             "10,000+ images, where its seconds of start-up pay back)")
    tuning.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_const", const=False,
                        help="never run it: fastest start, slower forward passes")
    p.add_argument("--cudnn-benchmark-limit", type=int, default=None,
                   help="algorithms cuDNN tries per convolution when tuning (torch's default 10; 0 = all)")
    p.add_argument("--hw-decode", choices=("auto", "on", "off"), default=None,
                   help="decode JPEGs on the GPU's hardware JPEG engine (nvImageCodec): auto = where CUDA is used and "
                        "the engine works (default; TRAPBATCH_HW_DECODE sets it when this option is absent), on = "
                        "require it (exit 2 without it), off = nvJPEG's CUDA backend as before")
    p.add_argument("--stage-threads", type=_stage_threads, default=1,
                   help="batches decoded and letterboxed at once (1-4; default 1), each with its own CUDA stream and "
                        "hardware decoder: for a forward pass faster than one stage thread (e.g. with --compile)")
    p.add_argument("--cpu-decode-share", type=_share, default=0.0,
                   help="CUDA: the fraction of JPEGs (0-1; default 0) the fetch threads decode exactly with PIL and "
                        "upload, so that the GPU's JPEG decoder has fewer to do; spread evenly over the shard; auto: "
                        "moved during the shard to where the stage thread stops limiting it")
    p.add_argument("--stream-priority", choices=("normal", "high"), default="normal",
                   help="CUDA: the priority of the streams that decode, letterbox and run NMS beside the forward "
                        "pass (default normal); high lets their small kernels go ahead of the forward pass's")
    p.add_argument("--log-level", default="INFO")
    return p


def _share(text: str) -> float | str:
    """``--cpu-decode-share``: a fraction from 0 to 1, or ``auto``."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1 or auto, not {text!r}")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1 or auto, not {value}")
    return value


MAX_STAGE_THREADS = 4


def _stage_threads(text: str) -> int:
    """``--stage-threads``: 1..MAX_STAGE_THREADS (each staged batch holds a letterboxed batch in GPU memory)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_STAGE_THREADS}, not {text!r}")
    if not 1 <= value <= MAX_STAGE_THREADS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_STAGE_THREADS}, not {value}")
    return value



def parse_args(argv: Sequence[str] | None, env: Mapping[str, str] | None = None) -> argparse.Namespace | int:
    """The parsed command line, or the exit code when argparse refused it (it already printed why) or printed help.

    ``--device`` left out is ``TRAPBATCH_DEVICE`` of ``env`` (the environment the local pool gives its workers, the
    app's setting; for the resident worker, the shard client's), else ``auto``."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_BAD_INPUT if exc.code else EXIT_OK
    if args.device is None:
        args.device = (env or {}).get("TRAPBATCH_DEVICE", "").strip().lower() or "auto"
        if args.device not in DEVICES:
            print(f"TRAPBATCH_DEVICE is {args.device!r}; use one of {', '.join(DEVICES)}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return args


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = parse_args(argv, env)
    if isinstance(args, int):
        return args
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level.upper() != "DEBUG":
        quiet_azure_sdk()  # one INFO record per blob request otherwise (gpu_batch.sdk_logging)

    from gpu_batch.worker.faults import Fault, FaultSpecError

    try:
        fault = Fault.from_env(env)
    except FaultSpecError as exc:
        logger.error("%s", exc)
        return EXIT_BAD_INPUT
    fault.at_start()

    if args.compile:  # before torch is imported: importing its compiler writes its own default into the variable
        choose_compile_cache(env)
    stop = SigtermStop.install()
    try:
        outcome = run_shard(args, env, fault, process_started=process_start_unix(),
                            stop_check=stop.check if stop is not None else None)
    finally:
        if stop is not None:
            stop.restore()
    if outcome.summary is not None:
        print(json.dumps(outcome.summary), flush=True)
    return outcome.code


class SigtermStop:
    """SIGTERM stops the shard at its next stop check, its results so far flushed (exit ``EXIT_CANCELLED``); a second
    SIGTERM gets the default action at once.

    Why: SIGTERM is how a process is asked to stop (``docker stop``: SIGTERM, then SIGKILL after a grace period),
    and without a handler the worker lost the results since its last flush, twice over where it
    is a container's first process: Batch hands a container task's options to ``docker create`` and runs its command
    line "in the container" (REST ``TaskContainerSettings``), and if that command is the container's first process
    the kernel delivers it no signal it has no handler for, bar SIGKILL and SIGSTOP (pid_namespaces(7), "The namespace
    init process"), so the shard ran on until the SIGKILL. The next attempt resumes from what was flushed. LocalPool
    ends a task alike (its cancel, time limit, job close: SIGTERM to the runner's process group, this worker in it,
    and SIGKILL after ``STOP_GRACE_S``; ``gpu_batch.pool.local_runner`` ``stop_worker``), so this handler is what
    a local cancel flushes through too.
    For the same reason a second SIGTERM, which gets the default action, does not end a container's first process.
    Installed only by this CLI, in its main thread (Python runs handlers there), and restored after the shard, so a
    caller that runs ``main`` in-process (the resident client's fall-back, tests) keeps its own handler afterwards.
    """

    def __init__(self) -> None:
        self._asked = threading.Event()
        self._previous: Any = signal.SIG_DFL

    @classmethod
    def install(cls) -> "SigtermStop | None":
        """The handler, installed (None where this is not the main thread, which cannot install one)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        stop = cls()
        stop._previous = signal.signal(signal.SIGTERM, stop._on_sigterm)
        return stop

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._asked.set()  # no logging here: a handler may run inside a logging call; check() says it
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the second one is not caught

    def check(self) -> None:
        """The shard's stop check: raises ``ShardCancelled`` once a SIGTERM came."""
        if self._asked.is_set():
            raise ShardCancelled("SIGTERM (the pool ended this task: a terminate, its time limit, or a node "
                                 "going away); the next attempt resumes from the results flushed here")

    def restore(self) -> None:
        # None: the handler before was not set from Python (signal.getsignal); the default is the nearest there is
        signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)


def choose_compile_cache(env: Mapping[str, str]) -> None:
    """Point TorchInductor, and Triton under it, at the node's compile cache; must run before torch is imported
    (``caches``; Triton's own default is under a home the Batch task's user cannot write: ``caches.triton_cache_dir``).
    """
    from gpu_batch.worker.caches import compile_cache_dir, triton_cache_dir

    cache = compile_cache_dir(env)
    if cache is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        os.environ["TRITON_CACHE_DIR"] = str(triton_cache_dir(cache, env))


def run_shard(args: argparse.Namespace, env: Mapping[str, str], fault: Any, *, process_started: float,
              models: ModelCache | None = None, stop_check: Callable[[], None] | None = None,
              defer_view: bool = False) -> ShardOutcome:
    """Run the shard ``args`` name; the exit code and summary, the same for the CLI and the resident worker.

    ``fault`` is the ``faults.Fault`` of this run (its start-time part already applied by the caller);
    ``process_started`` the wall-clock start of the process the pool launched (for ``start_to_first_batch_s``);
    ``models`` a resident worker's model cache (None: load the model); ``stop_check`` is called between results and
    raises ``ShardCancelled`` to stop the shard, whose results so far are then flushed (exit ``EXIT_CANCELLED``);
    ``defer_view``: the merge view is not written before returning but left to the outcome's ``after`` (a resident
    worker runs it once it has answered, so the GPU does not wait on it; a process that exits must not defer).
    """
    try:
        return _run(args, env, fault, process_started, models, stop_check, defer_view)
    except _Usage as exc:
        logger.error("%s", exc)
        return ShardOutcome(EXIT_BAD_INPUT)
    except _StorageUnavailable as exc:
        logger.error("%s", exc)
        return ShardOutcome(EXIT_STORAGE_UNAVAILABLE)
    except ShardCancelled as exc:
        logger.warning("shard stopped before it ran: %s", exc)
        return ShardOutcome(EXIT_CANCELLED)


def _run(args: argparse.Namespace, env: Mapping[str, str], fault: Any, process_started: float,
         models: ModelCache | None, stop_check: Callable[[], None] | None, defer_view: bool = False) -> ShardOutcome:
    """Run one shard and return its exit code; each helper below owns one step and the exit code of its failure.

    Why the steps stay in this order: the shard's clock starts after the imports, the CUDA warm-up overlaps the model
    load, and the images' account is checked (exit 5) before the model is downloaded (exit 3).
    """
    blob_mode = _is_blob_mode(args)
    local_manifest = _check_before_imports(args, env, blob_mode)
    imports_started = time.monotonic()
    _import_worker_modules()
    from gpu_batch.worker import faults
    from gpu_batch.worker.devices import start_cuda_warmup
    from gpu_batch.worker.pipeline import ShardSummary, run_images
    from gpu_batch.worker.results import OutputNotWritable, OutputTaken, ResultWriter
    from gpu_batch.worker.sources import SourceGone

    # The shard's clock starts here, after the imports, as the benchmark times MegaDetector from after its imports;
    # the import time is reported separately.
    started = time.monotonic()
    import_s = started - imports_started

    service, manifest, manifest_etag = _read_manifest(args, env, blob_mode, local_manifest, stop_check)
    label = f"task={manifest.task_id} shard={manifest.shard_id} attempt={manifest.attempt}"
    device = _choose_device(args.device)
    start_cuda_warmup(device)  # overlaps CUDA/cuDNN/nvJPEG initialisation with the model download and load
    pending_decode = _choose_decode_in_background(args, env, device)  # the engine probe overlaps them too
    try:
        opened = _open_images_and_output(args, env, blob_mode, service, manifest, label, stop_check)
    except (_StorageUnavailable, ShardCancelled):  # a stop in a DNS wait too
        _settle(pending_decode)
        raise
    if opened is None:
        _settle(pending_decode)
        return ShardOutcome(EXIT_SOURCE)
    source, sink = opened
    images_source = source  # unwrapped: the one that knows whether its account's host is missing
    shard_check = _with_source_check(source, stop_check)
    source = fault.wrap_source(source, manifest.attempt)

    if stop_check is not None:
        stop_check()
    _check_compile(args, env, label)
    try:
        loaded = _cached_detector(args, env, service, manifest, device, label, models, stop_check)
    except (_StorageUnavailable, ShardCancelled):  # a stop in a DNS wait too
        _settle(pending_decode)
        raise
    if loaded is None:
        _settle(pending_decode)
        return ShardOutcome(EXIT_MODEL)
    path, model, cache_hit = loaded
    decode = pending_decode()  # counted in "model ready": what the load did not hide of the probe is start-up too
    model_loaded_s = time.monotonic() - started
    logger.info("%s %s %s on %s (fp16=%s, compiled=%s) in %.1fs", label,
                "reused the loaded" if cache_hit else "loaded", path, device, model.half, args.compile, model_loaded_s)

    images = list(dict.fromkeys(manifest.images))  # a name listed twice gets one entry
    summary = ShardSummary(images=len(images))
    resumed = _load_finished_results(sink, images, label)
    if resumed is None:
        return ShardOutcome(EXIT_OUTPUT)
    kept, kept_damaged = resumed
    summary.skipped_resumed = len(kept)
    todo = [name for name in images if name not in kept]
    info = _results_info(manifest, path)
    writer = ResultWriter(sink, info, initial=kept, flush_seconds=args.flush_seconds,
                          on_flushed=fault.after_flush, flush_at_new=fault.crash_threshold,
                          progress=_progress_sink(blob_mode, service, manifest),
                          coverage=_coverage_target(blob_mode, service, manifest, images, manifest_etag),
                          view=_view_target(blob_mode, service, manifest, manifest_etag),
                          damaged=kept_damaged, damaged_sink=_damaged_sink(blob_mode, service, manifest))
    options = _pipeline_options(args, label, decode)
    logger.info("%s %d images, %d already done, %d to process", label, len(images), len(kept), len(todo))
    try:
        writer.start()
        run_images(todo, source, model, writer, manifest.detection_threshold, options, summary, shard_check)
        _wait_for_missing_host(images_source, todo, writer, summary, label, shard_check, lambda names: run_images(
            names, source, model, writer, manifest.detection_threshold, options, summary, shard_check))
        writer.close(_completed_info(info), view_later=defer_view)
    except SourceGone as exc:
        return _source_gone(writer, label, todo, exc)
    except OutputNotWritable as exc:
        logger.error("%s %s", label, exc)
        return ShardOutcome(EXIT_OUTPUT)
    except OutputTaken as exc:  # no summary, coverage summary or merge view: the attempt's output is the other run's
        logger.error("%s %s", label, exc)
        return ShardOutcome(EXIT_OUTPUT_TAKEN)
    except ShardCancelled as exc:
        return _stopped(writer, label, todo, exc)
    if fault.kind == "corrupt_output":
        sink.write(faults.CORRUPT_BYTES)
    summary.seconds = time.monotonic() - started
    logger.info("%s finished: %s", label, summary.to_dict())
    return ShardOutcome(EXIT_OK, _summary_dict(summary, args, device, started, import_s, model_loaded_s,
                                               process_started, cache_hit), writer.write_view if defer_view else None)


def _with_source_check(source: ImageSource, stop_check: Callable[[], None] | None) -> Callable[[], None] | None:
    """The pipeline's stop check: ``stop_check``, and before it the images' source's own (a ``BlobImageSource``
    raises ``SourceGone`` once a read found its account's host missing); ``stop_check`` alone for other sources.

    Why stop the shard: each image of it is in that account, so each would fail alike, after the SDK's retries
    (about a minute each: hours for a shard), and every attempt resubmitted them all. Stopped at the first result
    after such reads have failed for ``sources.GONE_AFTER_S`` (not at the first: a lookup can say so for a while of an
    account that exists), the shard exits 5 (``exit_codes.SOURCE``), with the host and what to check (a shard that
    runs out of images sooner waits for it at its end: ``_wait_for_missing_host``)."""
    from gpu_batch.worker.sources import BlobImageSource

    if not isinstance(source, BlobImageSource):
        return stop_check
    raise_if_gone = source.raise_if_gone

    def check() -> None:
        raise_if_gone()
        if stop_check is not None:
            stop_check()
    return check


def _wait_for_missing_host(source: ImageSource, todo: Sequence[str], writer: ResultWriter, summary: ShardSummary,
                           label: str, shard_check: Callable[[], None] | None,
                           read_again: Callable[[list[str]], None]) -> None:
    """Before a shard ends whose only images left to do failed as ``account_not_found`` (every failure of this run is
    one, and no read succeeded since the first), wait until its account's host resolves again, then read those
    images again (``read_again``), or until ``sources.GONE_AFTER_S`` have passed since the first such read:
    ``SourceGone``, which the caller turns into exit 5 with the results so far flushed, as on a longer shard
    (``sources.BlobImageSource.wait_for_host``).

    Why: the shard stops on a missing host only once such reads have lasted ``GONE_AFTER_S``, so a shard that failed
    every read so sooner (a small one, or the attempt that resubmitted only those images) ended with exit 0 and every
    image a retryable failure, at every attempt: a deleted account's task ended ``completed_with_errors`` with all
    its images failed instead of failing on the account (``orchestrations.shards``: exit 5 twice ends the task with
    the worker's message). A shard with a failure of any other reason is not held: a blob's 404 says nothing of the
    account, and those images end as they are.

    The re-read runs on the shard's ``summary``: its failed entries are taken out of the counts first
    (``ShardSummary.forget``), and the pipeline adds the re-read's figures to the first run's (``add_run``).

    On a resident worker the wait holds the server's one-shard lock, and that is no loss: each server is given one
    task at a time (Batch's ``taskSlotsPerNode: 1``; LocalPool caps its tasks at its resident servers), so no other
    shard waits on the lock, and the task holds its slot while it waits, lock or not. Handing the shard back instead
    (an exit a retry follows) would spend an attempt, and the next attempt's run would start the grace again: no run
    would see ``GONE_AFTER_S`` pass, the case this wait exists for. A client that goes away stops the wait at the
    next lookup (``shard_check``)."""
    from gpu_batch.worker.sources import ASK_AGAIN_EVERY_S, BlobImageSource

    if not isinstance(source, BlobImageSource):
        return
    while source.host_missing():
        failed = _failed_for_missing_host(writer, todo)
        if not failed:
            return
        logger.warning("%s %d images failed because their storage account's host does not resolve; asking DNS again "
                       "every %.0f s, for up to %.0f s after the first such read, before the shard ends", label,
                       len(failed), ASK_AGAIN_EVERY_S, source.gone_after_s)
        if not source.wait_for_host(shard_check):
            return
        logger.info("%s the images' storage account's host resolves again: reading its %d images again", label,
                    len(failed))
        summary.forget(failed)
        read_again([entry["file"] for entry in failed])


def _failed_for_missing_host(writer: ResultWriter, todo: Sequence[str]) -> list[dict[str, Any]]:
    """The entries of ``todo``'s images that failed as ``account_not_found``; empty when any of them failed for
    another reason (or none failed so)."""
    from gpu_batch import manifest as contract

    wanted = set(todo)
    failed = []
    for entry in writer.snapshot():
        if entry["file"] not in wanted or not contract.is_failure(entry):
            continue
        if contract.failure_reason(entry) != contract.REASON_ACCOUNT_NOT_FOUND:
            return []
        failed.append(entry)
    return failed


def _reached(writer: ResultWriter, todo: Sequence[str]) -> int:
    """How many of ``todo``'s images have an entry in ``writer``: the "N" of a stopped shard's "stopped after N of M".

    Why not ``ShardSummary.done``: ``ShardSummary.forget`` takes a re-read's images out of ``done`` before the re-read
    (``_wait_for_missing_host``), though their first results stay in the writer and are flushed."""
    wanted = set(todo)
    return sum(1 for entry in writer.snapshot() if entry["file"] in wanted)


def _source_gone(writer: ResultWriter, label: str, todo: Sequence[str], why: BaseException) -> ShardOutcome:
    """A shard stopped because its images' account does not exist (``sources.SourceGone``): flush what it has (still
    marked incomplete: the images it did not reach stay missing, for the next attempt) and exit 5, the unfixable
    ``exit_codes.SOURCE``, which ends the task at its second time (``orchestrations.shards``) instead of every
    attempt failing every image. The error line naming the host comes last: the app reports the worker's last one
    (``exit_codes.worker_error_message``).

    "Stopped after N of M" counts the images of ``todo`` with an entry in ``writer``, not ``ShardSummary.done``: a
    stop partway through a re-read (``_wait_for_missing_host``) comes after ``ShardSummary.forget`` took the re-read
    images out of ``done``, though their first results are still there, and flushed."""
    from gpu_batch.worker.results import OutputNotWritable, OutputTaken

    try:
        writer.close()
    except OutputNotWritable as exc:
        logger.error("%s its results so far could not be written: %s", label, exc)
    except OutputTaken as exc:  # another run of the attempt wrote its results: they stand, as at any other exit 73
        logger.error("%s %s", label, exc)
        return ShardOutcome(EXIT_OUTPUT_TAKEN)
    logger.error("%s the shard's images cannot be read: %s; stopped after %d of %d images", label, why,
                 _reached(writer, todo), len(todo))
    return ShardOutcome(EXIT_SOURCE)


def _stopped(writer: ResultWriter, label: str, todo: Sequence[str], why: ShardCancelled) -> ShardOutcome:
    """A shard stopped on request: flush what it has (still marked incomplete) so the next attempt resumes there.

    "Stopped after N of M" counts the images of ``todo`` with an entry in ``writer``, as ``_source_gone`` does, not
    ``ShardSummary.done``: a stop partway through a re-read (``_wait_for_missing_host``) comes after
    ``ShardSummary.forget`` took the re-read images out of ``done``, though their first results are still there."""
    from gpu_batch.worker.results import OutputNotWritable, OutputTaken

    try:
        writer.close()
    except OutputNotWritable as exc:
        logger.error("%s stopped, and its results so far could not be written: %s", label, exc)
    except OutputTaken as exc:  # stopped anyway; the other run's results stay as they are
        logger.error("%s stopped: %s", label, exc)
    logger.warning("%s stopped after %d of %d images: %s", label, _reached(writer, todo), len(todo), why)
    return ShardOutcome(EXIT_CANCELLED)


def _import_worker_modules() -> None:
    """Import torch and every worker module a shard needs, before the shard's clock starts.

    Why a step of its own: the benchmark times MegaDetector from after its imports, so the summary's ``seconds``
    must leave out torch's import (reported as ``import_s``); the helpers below then find these modules already
    loaded. Why not at module top: ``main`` must choose the compile cache before torch is imported, and a bad
    argument should exit without paying for torch.
    """
    import torch  # noqa: F401

    import gpu_batch.manifest  # noqa: F401
    from gpu_batch.worker import faults, sources, caches, loader, devices, pipeline, results  # noqa: F401


def _is_blob_mode(args: argparse.Namespace) -> bool:
    """Whether the manifest comes from blob storage (Batch tasks, the local pool) rather than a file (bench, tests).

    Why refuse both and neither: the two modes read images and write results in different places, so a mix of
    their flags has no sensible meaning.
    """
    blob_mode = bool(args.manifest_container or args.manifest_blob)
    if blob_mode == bool(args.manifest_file):
        raise _Usage("give either --manifest-container and --manifest-blob, or --manifest-file")
    return blob_mode


def _check_before_imports(args: argparse.Namespace, env: Mapping[str, str], blob_mode: bool) -> ShardManifest | None:
    """Refuse, before torch is imported, what needs no torch to refuse; in local mode return the manifest, read here.

    Why: the imports cost 2-3 CPU seconds (more on a busy node), and a missing option, storage settings that are not
    there or a manifest file that cannot be read are exit 2 whatever torch says: they are told at once (a tenth of a
    second). In blob mode only the settings are checked here: the manifest's download stays after the imports, inside
    the shard's clock ("model_load_s" is manifest + model, as MegaDetector reads its image list after its imports);
    a local file (bench, tests) is read in milliseconds, so reading it here changes no figure.
    """
    from gpu_batch.manifest import ShardManifest
    from gpu_batch.worker.sources import storage_config_problem

    if blob_mode:
        if not (args.manifest_container and args.manifest_blob):
            raise _Usage("--manifest-container and --manifest-blob go together")
        problem = storage_config_problem(env)
        if problem is not None:
            raise _Usage(problem)
        return None
    if not args.image_root:
        raise _Usage("local mode needs --image-root")
    try:
        return ShardManifest.from_dict(json.loads(Path(args.manifest_file).read_bytes()))
    except Exception as exc:  # noqa: BLE001 - any failure to obtain a manifest is exit 2, with the reason logged
        raise _Usage(f"cannot read the shard manifest: {type(exc).__name__}: {exc}") from exc


def _read_manifest(args: argparse.Namespace, env: Mapping[str, str], blob_mode: bool,
                   local: ShardManifest | None = None,
                   stop_check: Callable[[], None] | None = None) -> tuple[Any, ShardManifest, str]:
    """Fetch and parse the shard manifest; in blob mode also return the storage client it came through and the
    manifest blob's ETag as read (the coverage summary names the manifest by it; empty in local mode). ``local``:
    the local mode's manifest, already read by ``_check_before_imports``.

    Why failures become ``_Usage``: without a manifest there is no shard to run, which is exit 2; the reason is kept
    in the message for the log. Except when storage did not answer (``_storage_did_not_answer``): that is
    ``_StorageUnavailable``, a passing cause another attempt can get past (``exit_codes.STORAGE_UNAVAILABLE``). A
    host DNS says does not exist is asked about again first (``_read_through_dns_blips``, which ``stop_check`` stops):
    exit 2 only when it still does not exist ``sources.GONE_AFTER_S`` later.
    """
    from gpu_batch.manifest import ShardManifest
    from gpu_batch.worker import sources

    service = None
    etag = ""
    try:
        if blob_mode:
            if not (args.manifest_container and args.manifest_blob):
                raise _Usage("--manifest-container and --manifest-blob go together")
            service = sources.blob_service_from_env(env)
            blob = service.get_blob_client(args.manifest_container, args.manifest_blob)

            def read() -> tuple[Any, bytes]:
                got = blob.download_blob()
                return got, got.readall()
            download, raw = _read_through_dns_blips(
                read, _account_host(service),
                f"the manifest read of {args.manifest_container}/{args.manifest_blob}", stop_check)
            etag = str(getattr(download.properties, "etag", "") or "")
            manifest = ShardManifest.from_dict(json.loads(raw))
        elif local is not None:
            manifest = local
        else:
            if not args.image_root:
                raise _Usage("local mode needs --image-root")
            manifest = ShardManifest.from_dict(json.loads(Path(args.manifest_file).read_bytes()))
    except (_Usage, _StorageUnavailable, ShardCancelled):
        raise
    except sources.StorageConfigError as exc:
        raise _Usage(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any other failure to obtain a manifest is exit 2, with the reason logged
        from gpu_batch.storage_refs import credential_hint, managed_identity_problem

        if blob_mode and _storage_did_not_answer(exc):
            said = managed_identity_problem(exc)  # DefaultAzureCredential's message: its managed-identity line alone
            raise _StorageUnavailable(f"storage did not answer the manifest read of {args.manifest_container}/"
                                      f"{args.manifest_blob} (another attempt runs the shard): "
                                      + (f"the managed identity's token endpoint did not: {said[:500]}" if said
                                         else f"{type(exc).__name__}: {str(exc)[:500]}")) from exc
        missing = _storage_host_missing(exc, env) if blob_mode else ""
        if missing:  # exit 2 as before (storage_refs.service_did_not_answer says no); say what to fix
            raise _Usage(f"cannot read the shard manifest {args.manifest_container}/{args.manifest_blob}: "
                         + missing) from exc
        hint = credential_hint(exc) if blob_mode else ""
        raise _Usage(f"cannot read the shard manifest: {hint or f'{type(exc).__name__}: {exc}'}") from exc
    return service, manifest, etag


def _storage_host_missing(exc: BaseException, env: Mapping[str, str]) -> str:
    """What the operator fixes when DNS says the host of the worker's own storage account (the manifest's and a
    ``blob://`` model's) does not exist; "" when that is not why ``exc`` happened.

    Why: ``storage_refs.service_did_not_answer`` already leaves such a failure unfixable (exit 2 or 3, not 69), but
    its text was urllib3 2.8's ``NameResolutionError`` alone ("HTTPSConnection(host=...): Failed to resolve ...
    ([Errno -2] Name or service not known)", wrapped by azure-core 1.41 as ``ServiceRequestError``), which names
    neither the setting nor that no retry helps. ``storage_refs.unresolvable_host`` reads the ``gaierror`` on that
    chain (EAI_NONAME / EAI_NODATA, not EAI_AGAIN). The setting is the one ``sources.blob_service_from_env`` used:
    the connection string first (the local pool passes the app's storage connection), else the account URL (the
    Batch pool passes the app's TRAPBATCH_STORAGE_ACCOUNT_URL, ``pool.azure_batch``)."""
    from gpu_batch.storage_refs import unresolvable_hint, unresolvable_host

    host = unresolvable_host(exc)
    if host is None:
        return ""
    return unresolvable_hint(host, "the worker's storage account", _own_storage_setting(env))


def _account_host(service: Any) -> str:
    """The host of a storage client's account: the one to ask DNS about when a failure's chain did not name it."""
    host = getattr(service, "primary_hostname", "")
    return host if isinstance(host, str) else ""


def _read_through_dns_blips(read: Callable[[], T], account_host: str, what: str,
                            stop_check: Callable[[], None] | None = None) -> T:
    """``read()`` from the worker's own storage account, read again when it failed because DNS said the account's
    host does not exist (``storage_refs.unresolvable_host``) and DNS then finds it again
    (``storage_refs.resolves_again``, asked every ``sources.ASK_AGAIN_EVERY_S`` for up to ``sources.GONE_AFTER_S``
    from the first such failure). Still "no such name" then: the failure is raised as it came, and the caller exits
    as before (2 or 3, ``_storage_host_missing``'s message); a resolver that stopped answering: ``_StorageUnavailable``
    (exit 69, another attempt).

    Why: the app wrote this shard's manifest into that account moments before, and the model sits there too, so a
    "no such name" for it is most likely the platform's blip (up to ~120 s on Azure: ``storage_refs.HOST_GONE_AFTER_S``
    cites it), and exit 2 or 3 is unfixable (``exit_codes.UNFIXABLE``): two such attempts ended the whole task. The
    clock and sleep are ``sources.BlobImageSource``'s, the worker's one seam for its DNS waits; ``stop_check`` (the
    shard's) is called around each sleep (``_stoppable_sleep``)."""
    from gpu_batch.storage_refs import resolves_again, unresolvable_host
    from gpu_batch.worker.sources import ASK_AGAIN_EVERY_S, GONE_AFTER_S, BlobImageSource

    clock, sleep = BlobImageSource.monotonic, _stoppable_sleep(BlobImageSource.sleep, stop_check)
    deadline: float | None = None
    while True:
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - only a missing host is handled here; the rest goes to the caller
            host = unresolvable_host(exc)
            asked = host or account_host
            if host is None or not asked:
                raise
            now = clock()
            deadline = now + GONE_AFTER_S if deadline is None else deadline
            logger.warning("%s: storage's host name %s does not resolve (DNS: no such name); asking DNS again every "
                           "%.0f s for up to %.0f s", what, asked, ASK_AGAIN_EVERY_S, max(0.0, deadline - now))
            answer = resolves_again(asked, deadline - now, every_s=ASK_AGAIN_EVERY_S, clock=clock, sleep=sleep)
            if answer is False:
                raise
            if answer is None:
                raise _StorageUnavailable(f"storage's host name {asked} did not resolve at {what}, and DNS then did "
                                          "not answer (another attempt runs the shard)") from exc
            logger.info("%s: storage's host name %s resolves again: reading again", what, asked)


def _stoppable_sleep(sleep: Callable[[float], None],
                     stop_check: Callable[[], None] | None) -> Callable[[float], None]:
    """``sleep``, with the shard's ``stop_check`` called before and after it (None: ``sleep`` itself).

    Why: the worker's DNS waits before its pipeline (its own storage's host at the manifest read and the model
    download, the images' Key Vault's host) last up to ``sources.GONE_AFTER_S``, and nothing else checks for a stop
    meanwhile: a resident worker whose client went away (``resident``: ``ShardCancelled``) asked DNS on for the
    whole two minutes, its ``STOP_GRACE_S``, past which the server exits and takes the shards waiting for their
    turn with it, and then ended the cancelled shard with an unfixable exit. The image reads' wait checks at each
    lookup alike (``sources.BlobImageSource.wait_for_host``)."""
    if stop_check is None:
        return sleep

    def wait(seconds: float) -> None:
        stop_check()
        sleep(seconds)
        stop_check()
    return wait


def _own_storage_setting(env: Mapping[str, str]) -> str:
    """The setting that named the worker's own storage account, as ``sources.blob_service_from_env`` chose it."""
    from gpu_batch.worker.sources import ACCOUNT_URL_ENV, CONNECTION_ENV

    return (f"{CONNECTION_ENV} (a local pool gives its workers the app's AzureWebJobsStorage)"
            if env.get(CONNECTION_ENV) else
            f"{ACCOUNT_URL_ENV} (the Function App setting an Azure Batch pool gives its tasks)")


def _storage_did_not_answer(exc: BaseException) -> bool:
    """Whether a storage read failed for a passing cause (``storage_refs.service_did_not_answer``: no answer, or a
    408, 429 or 5xx). A 404, 403 or any other 4xx is about the request and stays so."""
    from gpu_batch.storage_refs import service_did_not_answer

    return service_did_not_answer(exc)


def _choose_device(requested: str, probe: CudaProbe | None = None) -> str:
    """Turn ``--device`` into ``"cuda"`` or ``"cpu"``.

    Why ``--device cuda`` without a GPU is a usage error rather than a fall-back to the CPU: the caller asked for a
    GPU, and a quiet CPU run would hide that the node has none. The error, and the warning when ``auto`` falls back
    to the CPU on a node whose driver is present but cannot run this torch, say why CUDA is unusable and what to
    change (``cuda_check.cuda_problem``). ``probe`` replaces what this machine reports (tests).
    """
    from gpu_batch.worker.cuda_check import cuda_problem

    if probe is None:
        import torch

        available = bool(torch.cuda.is_available())
    else:
        available = probe.cuda_available
    if requested == "auto":
        if available:
            return "cuda"
        problem = cuda_problem("auto", probe)
        if problem:
            logger.warning("--device auto: running on the CPU, not CUDA: %s", problem)
        return "cpu"
    if requested == "cuda" and not available:
        raise _Usage(cuda_problem("cuda", probe) or "--device cuda but no CUDA device is available")
    return requested


def _choose_decode(args: argparse.Namespace, env: Mapping[str, str], device: str) -> DecodeSelection:
    """The shard's JPEG decoder (``hwdecode.DecodeSelection``) from ``--hw-decode`` / ``TRAPBATCH_HW_DECODE``.

    Why a usage error when ``on`` cannot be honoured: as with ``--device cuda`` without a GPU, the caller asked for
    the hardware decoder, and quietly decoding another way would hide that the node lacks it.
    """
    from gpu_batch.worker import hwdecode

    try:
        return hwdecode.select_decoder(device, hwdecode.decode_mode(args.hw_decode, env), env)
    except (ValueError, hwdecode.HwDecodeUnavailable) as exc:
        raise _Usage(str(exc)) from exc


def _check_compile(args: argparse.Namespace, env: Mapping[str, str], label: str) -> None:
    """``--compile`` where this machine cannot compile (``caches.compile_blocker``): eager, saying why.

    Why not exit 2: the shard's images can still be run, and a resubmitted attempt would meet the same node image;
    the log and the summary's ``compile_skipped`` tell the operator what to install. Decided before the model
    cache is asked, so a resident worker caches the eager network under the eager key.
    """
    from gpu_batch.worker.caches import compile_blocker

    args.compile_skipped = None
    if args.compile:
        blocker = compile_blocker(env)
        if blocker is not None:
            logger.warning("%s --compile was asked for, but %s; running the network eager", label, blocker)
            args.compile, args.compile_skipped = False, blocker


def _choose_decode_in_background(args: argparse.Namespace, env: Mapping[str, str],
                                 device: str) -> Callable[[], DecodeSelection]:
    """``_choose_decode`` on a side thread where it probes the GPU's JPEG engine; call the result for the choice.

    Why: on CUDA with ``auto`` or ``on`` the choice imports nvImageCodec, loads its libraries, builds a hardware
    decoder and decodes a probe JPEG, and asks torch for the current device, which waits for CUDA's initialisation in
    the calling thread. In line, before the model load, that sat on every fresh process's path to its first batch:
    "model ready" measured 7-8 s on an H200 on 2026-12-04 (bench/RESULTS.md) against 0.8-1.0 s on an H100 before the
    probe existed. Where nothing is probed (the CPU, ``off``) the choice is made here, so a usage error still stops
    the shard before the model is loaded; ``on`` without an engine raises its ``_Usage`` when the result is asked for.
    """
    import concurrent.futures
    import threading

    from gpu_batch.worker import hwdecode

    try:
        mode = hwdecode.decode_mode(args.hw_decode, env)
    except ValueError as exc:
        raise _Usage(str(exc)) from exc
    if not device.startswith("cuda") or mode == "off":
        chosen = _choose_decode(args, env, device)
        return lambda: chosen
    pending: concurrent.futures.Future[DecodeSelection] = concurrent.futures.Future()

    def work() -> None:
        try:
            pending.set_result(_choose_decode(args, env, device))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it in the main thread
            pending.set_exception(exc)

    threading.Thread(target=work, name="decoder-probe", daemon=True).start()
    return pending.result


def _settle(pending_decode: Callable[[], DecodeSelection]) -> None:
    """Wait for the engine probe of a shard that ends early (exit 3, 5 or 69), whatever it found.

    Why: a CLI worker exits right after; a probe thread still inside nvImageCodec's or CUDA's initialisation while
    the interpreter shuts down could crash it and turn the shard's exit code into a signal's.
    """
    try:
        pending_decode()
    except Exception:  # noqa: BLE001 - the shard already failed for another reason, which is the one to report
        pass


def _open_images_and_output(args: argparse.Namespace, env: Mapping[str, str], blob_mode: bool, service: Any,
                            manifest: ShardManifest, label: str,
                            stop_check: Callable[[], None] | None = None) -> tuple[ImageSource, Any] | None:
    """Open where the shard's images come from and where its results go.

    Returns ``None`` (already logged) when the images' storage account cannot be opened, which ``_run`` turns into
    exit 5: that is a configuration problem (a missing or unreadable secret), not a bad manifest. Except when the
    secret store did not answer (``storage_refs.SecretStoreUnavailable``, which includes a vault host DNS said is
    missing and then gave no answer): ``_StorageUnavailable``, exit 69. A vault host DNS says is missing is exit 5
    only once it still is ``sources.GONE_AFTER_S`` later (``storage_refs.key_vault_reader``; ``stop_check`` stops
    that wait: ``_stoppable_sleep``).
    """
    from gpu_batch.worker import sources
    from gpu_batch.worker.results import FileSink

    if blob_mode:
        assert service is not None
        from gpu_batch import storage_refs
        from gpu_batch.worker import node_clients

        ref = storage_refs.SourceRef(manifest.source_account_url, manifest.source_credential_secret)
        try:
            own = service
            # a vault host DNS says is missing is asked about again first (key_vault_reader's host_grace_s), on the
            # clock of the worker's other DNS waits
            # the process's identity and session (node_clients: a resident worker's shards hold no sockets of their
            # own and ask IMDS for no token each); the secret itself is still read here, per shard
            # built only where a client can ask it for a token (a Key Vault, another account named without a
            # secret): a connection-string worker reading its own account or a SAS imports no azure.identity
            # (~0.15 s before the first batch, issue 14); None where nothing reads it
            needs_identity = bool(env.get(storage_refs.KEY_VAULT_ENV)) or not (ref.is_own_account
                                                                                or ref.credential_secret)
            credential = node_clients.node_credential() if needs_identity else None
            secrets = storage_refs.secret_reader_from_env(
                env, transport=node_clients.shared_session_transport(), credential=credential,
                host_grace_s=sources.GONE_AFTER_S, clock=sources.BlobImageSource.monotonic,
                sleep=_stoppable_sleep(sources.BlobImageSource.sleep, stop_check))
            image_service = storage_refs.source_service(ref, lambda: own, secrets, credential=credential,
                                                        client_options=node_clients.shared_session_options())
        except storage_refs.SecretStoreUnavailable as exc:  # a passing cause: exit 69, not 5
            raise _StorageUnavailable(f"{label} the images' secret store did not answer (another attempt runs the "
                                      f"shard): {exc}") from exc
        except storage_refs.SourceAccessError as exc:
            logger.error("%s images cannot be read: %s", label, exc)
            return None
        source: sources.ImageSource = sources.BlobImageSource(
            image_service, manifest.source_container,
            _own_storage_setting(env) if ref.is_own_account else sources.SOURCE_ACCOUNT_SETTING)
        sink: Any = sources.BlobSink(service, manifest.output_container, manifest.output_blob)
    else:
        source = sources.LocalFolderSource(args.image_root)
        sink = FileSink(args.output_file or manifest.output_blob)
    return source, sink


def _progress_sink(blob_mode: bool, service: Any, manifest: ShardManifest) -> ResultSink | None:
    """Where the attempt's progress counter goes (blob mode: beside its results, ``layout.attempt_progress_blob``;
    the orchestration's poll reads it); none for file outputs."""
    if not blob_mode:
        return None
    from gpu_batch import layout
    from gpu_batch.worker import sources

    return sources.BlobSink(service, manifest.output_container,
                            layout.attempt_progress_blob(manifest.task_id, manifest.shard_id, manifest.attempt))


def _damaged_sink(blob_mode: bool, service: Any, manifest: ShardManifest) -> ResultSink | None:
    """Where the attempt's list of photos cut short goes (blob mode: ``layout.attempt_damaged_blob``, which the merge
    reads; ``formats.entries.damaged_document``); none for file outputs, whose results' ``info`` names them."""
    if not blob_mode:
        return None
    from gpu_batch import layout
    from gpu_batch.worker import sources

    return sources.BlobSink(service, manifest.output_container,
                            layout.attempt_damaged_blob(manifest.task_id, manifest.shard_id, manifest.attempt))


def _coverage_target(blob_mode: bool, service: Any, manifest: ShardManifest, images: Sequence[str],
                     manifest_etag: str) -> CoverageTarget | None:
    """Where the finished attempt's coverage summary goes (blob mode: ``layout.attempt_coverage_blob``, which the
    poll reads instead of the results; ``gpu_batch.manifest.coverage_summary``); none for file outputs or when the
    manifest's ETag is unknown (the app then parses the results)."""
    if not blob_mode or not manifest_etag:
        return None
    from gpu_batch import layout
    from gpu_batch.worker import sources
    from gpu_batch.worker.results import CoverageTarget

    sink = sources.BlobSink(service, manifest.output_container,
                            layout.attempt_coverage_blob(manifest.task_id, manifest.shard_id, manifest.attempt))
    return CoverageTarget(sink, images, manifest_etag)


def _view_target(blob_mode: bool, service: Any, manifest: ShardManifest, manifest_etag: str) -> ViewTarget | None:
    """Where the finished attempt's merge view goes (blob mode: ``layout.attempt_view_blob``, which the merge reads
    instead of the entries; ``gpu_batch.formats.mergeview``) when the manifest asks for one
    (``merge_view_threshold``); none for file outputs or when the manifest's ETag is unknown. A resubmitted attempt's
    view covers the whole shard: it reads the blobs its manifest's ``merge_view_basis`` names when it has finished, and
    an image-list task's the shard's list document (``merge_view_list``)."""
    if not blob_mode or not manifest_etag or manifest.merge_view_threshold is None:
        return None
    from gpu_batch import layout
    from gpu_batch.worker import sources
    from gpu_batch.worker.results import ViewTarget

    sink = sources.BlobSink(service, manifest.output_container,
                            layout.attempt_view_blob(manifest.task_id, manifest.shard_id, manifest.attempt))
    return ViewTarget(sink, manifest.task_id, manifest.merge_view_threshold, manifest.images, manifest_etag,
                      manifest.merge_view_basis, sources.blob_reader(service, manifest.output_container),
                      manifest.merge_view_list)


def _load_detector(args: argparse.Namespace, env: Mapping[str, str], service: Any, manifest: ShardManifest,
                   device: str, label: str,
                   stop_check: Callable[[], None] | None = None) -> tuple[Path, LoadedModel] | None:
    """Resolve the checkpoint (``--model`` or the manifest's), load it onto ``device``, compile it if asked.

    Returns the checkpoint's local path and the model, or ``None`` (already logged) when it cannot be resolved or
    loaded, which ``_run`` turns into exit 3. Why the blob fetcher: a ``blob://`` model is downloaded through the
    storage client (the shard's own in blob mode, else one built from the environment). Except when the download
    failed because storage did not answer (``_storage_did_not_answer`` of the loader's cause): that raises
    ``_StorageUnavailable`` (``exit_codes.STORAGE_UNAVAILABLE``), as for the manifest read; a timeout or throttling
    on the model blob as exit 3, twice, failed the whole task although the next attempt would have loaded it. A
    published model's download that timed out or was cut is exit 69 too, its message naming the publisher's host
    (``_model_source_did_not_answer``), not storage. A
    host DNS says does not exist is asked about again first, as for the manifest (``_read_through_dns_blips``, which
    ``stop_check`` stops: its ``ShardCancelled`` is raised as it came, not as the loader's ``ModelLoadError``).
    """
    from gpu_batch.worker import sources
    from gpu_batch.worker.caches import model_cache_dir, node_cache_problem
    from gpu_batch.worker.loader import (ModelLoadError, compile_model, download_did_not_answer, load_model,
                                         resolve_model_file)

    model_ref = args.model or manifest.model
    problem = node_cache_problem(env)
    if problem:
        logger.warning("%s %s", label, problem)
    try:
        fetcher = version = None
        if service is not None or model_ref.startswith("blob://"):
            svc = service if service is not None else sources.blob_service_from_env(env)
            fetcher = lambda c, n, dest: _read_through_dns_blips(  # noqa: E731
                lambda: sources.download_blob_to(svc, c, n, dest), _account_host(svc),
                f"the download of model {model_ref!r}", stop_check)
            version = lambda c, n: sources.blob_etag(svc, c, n)  # noqa: E731
        path = resolve_model_file(model_ref, cache_dir=model_cache_dir(env), blob_fetcher=fetcher,
                                  blob_version=version)
        model = load_model(path, device=device)
        if args.compile:
            model = compile_model(model)
    except (ModelLoadError, sources.StorageConfigError) as exc:
        cause = exc.__cause__
        if isinstance(cause, ShardCancelled):  # stopped while DNS was asked again (the loader wraps what it met)
            raise cause from None
        if isinstance(cause, _StorageUnavailable):  # its host went missing, then DNS did not answer
            raise _StorageUnavailable(f"{label} {cause}") from exc
        if isinstance(exc, ModelLoadError) and cause is not None and (
                _storage_did_not_answer(cause) or (not model_ref.startswith("blob://")
                                                   and download_did_not_answer(cause))):
            raise _StorageUnavailable(f"{label} {_model_source_did_not_answer(model_ref)} (another attempt runs the "
                                      f"shard){_unreachable_advice(model_ref)}: {type(cause).__name__}: "
                                      f"{str(cause)[:500]}") from exc
        # only a blob:// model comes through the worker's storage: a published one comes from its publisher's URL,
        # whose host unknown to DNS (a node without internet) keeps the loader's advice (place the file yourself)
        missing = _storage_host_missing(cause, env) if cause is not None and model_ref.startswith("blob://") else ""
        if missing:  # exit 3 as before; the loader's text is urllib3's "Failed to resolve" alone
            logger.error("%s model %r cannot be downloaded: %s", label, model_ref, missing)
            return None
        logger.error("%s model %r cannot be loaded: %s", label, model_ref, exc)
        return None
    return path, model


def _model_source_did_not_answer(model_ref: str) -> str:
    """Who did not answer a model's download, for the exit-69 message: the worker's storage for a ``blob://`` model;
    for a published one (``MDV5A``) its publisher's download host (``gpu_batch.models.KNOWN_MODELS``' URL), which
    the loader reads with urllib, so a read that timed out or a reset connection there is not about storage (an
    operator told "storage did not answer" checked an account that was fine)."""
    from urllib.parse import urlsplit

    from gpu_batch.models import BLOB_SCHEME, known_model

    if model_ref.startswith(BLOB_SCHEME):
        return f"storage did not answer the download of model {model_ref!r}"
    known = known_model(model_ref)
    if known is not None:
        return f"{urlsplit(known.url).hostname}, the download host of model {model_ref!r}, did not answer"
    return f"reading model {model_ref!r} did not answer"


def _unreachable_advice(model_ref: str) -> str:
    """What to do when a published model's download host keeps not answering, for the exit-69 message ("" for a
    ``blob://`` model). Why: a connect timeout or refusal is also what a node without outbound internet meets on
    every attempt; exit 69 then runs every shard for an hour without spending attempts
    (``ShardsInput.unavailable_wait_s``), then ``TRAPBATCH_MAX_ATTEMPTS`` times, and the task fails with the first
    given-up shard's reason, of which the app keeps 300 characters (``core.contracts.GIVEN_UP_REASON_CHARS``): the
    advice comes before the cause's text so that it is kept (as exit 3 the loader's advice said it)."""
    from gpu_batch.models import BLOB_SCHEME

    if model_ref.startswith(BLOB_SCHEME):
        return ""
    return "; on nodes without internet, upload it to TRAPBATCH_MODELS_CONTAINER, request blob://<container>/<name>"


def _model_key(args: argparse.Namespace, manifest: ShardManifest, device: str,
               blob_version: Callable[[str], str | None] = lambda ref: None) -> Hashable:
    """What a loaded model is cached under: the model reference and the options that shape the loaded network.

    Why a local path also carries its identity (inode, size, modification and change times): a file rewritten in
    place is a different model, and two checkpoints of one architecture have one size. A ``blob://`` reference
    carries its blob's ETag now (``blob_version``; None when storage cannot be asked: the reference alone), as
    ``loader.resolve_model_file`` downloads an overwritten blob again. Known versions resolve to node-cache files
    checked against their published hash, so the reference itself names the weights.
    """
    ref = args.model or manifest.model
    from gpu_batch.models import BLOB_SCHEME, known_model

    identity: tuple[Any, ...] = (ref,)
    if ref.startswith(BLOB_SCHEME):
        identity = (ref, blob_version(ref))
    elif known_model(ref) is None:
        path = Path(ref).expanduser()
        try:
            st = path.stat()
            identity = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            return None  # not loadable anyway; never cached
    return (*identity, device, bool(args.compile))


def _blob_model_version(env: Mapping[str, str], service: Any) -> Callable[[str], str | None]:
    """The ETag now of a ``blob://`` model reference, for ``_model_key``; None when it cannot be read."""
    def version(ref: str) -> str | None:
        from gpu_batch.models import split_blob_model
        from gpu_batch.worker import sources

        blob = split_blob_model(ref)
        if blob is None:
            return None
        try:
            svc = service if service is not None else sources.blob_service_from_env(env)
            return sources.blob_etag(svc, *blob)
        except Exception:  # noqa: BLE001 - azure errors vary: the reference alone keys the model, as before
            return None
    return version


def _cached_detector(args: argparse.Namespace, env: Mapping[str, str], service: Any, manifest: ShardManifest,
                     device: str, label: str, models: ModelCache | None,
                     stop_check: Callable[[], None] | None = None) -> tuple[Path, LoadedModel, bool] | None:
    """``_load_detector`` through a resident worker's model cache; the third value says whether it was a hit."""
    key = _model_key(args, manifest, device, _blob_model_version(env, service)) if models is not None else None
    if models is not None and key is not None:
        hit = models.get(key)
        if hit is not None:
            return hit[0], hit[1], True
    loaded = _load_detector(args, env, service, manifest, device, label, stop_check)
    if loaded is None:
        return None
    if models is not None and key is not None:
        models.put(key, loaded)
    return loaded[0], loaded[1], False


def _load_finished_results(sink: ResultSink, images: list[str],
                           label: str) -> tuple[dict[str, dict[str, Any]], set[str]] | None:
    """The results an earlier attempt of this shard already wrote for ``images``, so a retry resumes, and which of
    them it named cut short (``results.load_resumable_state``).

    Returns ``None`` (already logged) when the output location cannot even be read, which ``_run`` turns into
    exit 4, the code for an output location the worker cannot use.
    """
    from gpu_batch.worker.results import load_resumable_state

    try:
        kept = load_resumable_state(sink, images)
    except Exception as exc:  # noqa: BLE001 - cannot even read the output location
        logger.error("%s output %s unreadable: %s", label, sink.describe(), exc)
        return None
    return kept


def _results_info(manifest: ShardManifest, path: Path) -> dict[str, Any]:
    """The results file's ``info`` block while the shard runs: ``complete`` stays false until the last result.

    Why: results are flushed while the shard runs, so whoever reads the file (a crashed attempt's, say) must be able
    to tell a partial file from a finished one.
    """
    return {"detector": Path(str(path)).name, "trapbatch": {
        "task_id": manifest.task_id, "shard_id": manifest.shard_id, "attempt": manifest.attempt,
        "detection_threshold": manifest.detection_threshold, "complete": False}}


def _completed_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The ``info`` fields written with the final flush: ``complete`` true and MegaDetector's completion time (UTC)."""
    done_info = {**info["trapbatch"], "complete": True}
    return {"trapbatch": done_info,
            "detection_completion_time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def _pipeline_options(args: argparse.Namespace, label: str,
                      decode: DecodeSelection | None = None) -> PipelineOptions:
    """The pipeline's tuning knobs from the command line; ``label`` prefixes its log lines; ``decode`` is the
    ``hwdecode.DecodeSelection`` of ``_choose_decode``."""
    from gpu_batch.worker.pipeline import PipelineOptions

    return PipelineOptions(batch_size=args.batch_size, workers=args.workers, flush_seconds=args.flush_seconds,
                           cudnn_benchmark=args.cudnn_benchmark,
                           cudnn_benchmark_limit=args.cudnn_benchmark_limit,
                           log_seconds=args.log_seconds, shard_label=label, decode=decode,
                           stage_threads=args.stage_threads,
                           cpu_decode_share=0.0 if args.cpu_decode_share == "auto" else args.cpu_decode_share,
                           cpu_decode_auto=args.cpu_decode_share == "auto",
                           stream_priority=args.stream_priority)


def _summary_dict(summary: ShardSummary, args: argparse.Namespace, device: str, started: float, import_s: float,
                  model_loaded_s: float, process_started: float, cache_hit: bool) -> dict[str, Any]:
    """The one-line JSON summary that ends stdout (fields in the module docstring).

    Why one line of JSON: the last stdout line is the worker's machine-readable result (``bench/worker_throughput.py``
    parses it), whatever was logged before it.
    """
    steady = summary.steady_img_s()
    first_unix = (time.time() - (time.monotonic() - summary.first_batch_at)
                  if summary.first_batch_at is not None else None)
    return {**summary.to_dict(), "batch_size": summary.batch_size, "device": device,
            "compiled": bool(args.compile), "compile_skipped": getattr(args, "compile_skipped", None),
            "cudnn_benchmark": summary.cudnn_benchmark, "import_s": round(import_s, 3),
            "decode": summary.decode, "decode_reason": summary.decode_reason, "decoded_by": summary.decoded_by,
            "model_load_s": round(model_loaded_s, 3),
            "model_cache_hit": cache_hit,
            "first_batch_s": (round(summary.first_batch_at - started, 3)
                              if summary.first_batch_at is not None else None),
            "first_batch_unix": round(first_unix, 3) if first_unix is not None else None,
            "start_to_first_batch_s": round(first_unix - process_started, 3) if first_unix is not None else None,
            "steady_img_s": round(steady, 3) if steady is not None else None,
            "stages": {k: round(v, 3) for k, v in sorted(summary.stages.items())},
            "first_steps_s": {k: round(v - started, 3)
                              for k, v in sorted(summary.firsts.items(), key=lambda kv: kv[1])}}


if __name__ == "__main__":
    raise SystemExit(main())
