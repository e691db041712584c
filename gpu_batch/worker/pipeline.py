"""The shard pipeline: fetch -> decode -> letterbox -> batch -> infer -> NMS -> write, with bounded memory.

Why this module exists: throughput. Downloads and decodes run in a thread pool (blob I/O, PIL and OpenCV release
the GIL), at most ``prefetch`` images are in flight or waiting, images are batched by letterboxed shape (batching
images of different shapes would need extra padding, which changes detections; camera-trap shards are nearly all
one shape), inference runs in fp16/channels_last on CUDA with the letterbox on the GPU, NMS runs batched, and a
background thread flushes results. One bad image produces one ``failure`` entry and the shard goes on.

Must not: parse the command line or decide exit codes (``__main__`` does), or read the environment.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from gpu_batch.worker.detector import Detector
from gpu_batch.worker.loader import LoadedModel
from gpu_batch.worker.preprocess import (_EXIF_ORIENTATION, _EXIF_ROTATIONS, ImageAccessError, LetterboxGeometry,
                                         decode_image, letterbox_cpu, letterbox_geometry, letterbox_torch)
from gpu_batch.worker.results import (FAILURE_IMAGE_OPEN, FAILURE_INFER, ResultWriter, detections_entry,
                                      failure_entry)
from gpu_batch.worker.sources import ImageSource, SourceError

logger = logging.getLogger(__name__)

CPU_BATCH_SIZE = 2
MAX_CUDA_BATCH = 64


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """Tuning knobs; the defaults suit one GPU with 8-16 cores, or a CPU laptop."""

    batch_size: int | None = None  # None: fitted to GPU memory on CUDA, CPU_BATCH_SIZE on CPU
    workers: int = 16  # concurrent fetch+decode threads
    prefetch: int | None = None  # images in flight or waiting; default 4 x batch size (at least 2 x workers)
    flush_seconds: float = 5.0
    log_seconds: float = 30.0
    shard_label: str = ""


@dataclass(slots=True)
class ShardSummary:
    images: int
    done: int = 0
    failed: int = 0
    skipped_resumed: int = 0
    seconds: float = 0.0
    batch_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "done": self.done, "failed": self.failed,
                "skipped_resumed": self.skipped_resumed, "seconds": round(self.seconds, 3),
                "img_s": round(self.done / self.seconds, 3) if self.seconds > 0 else 0.0}


@dataclass(slots=True)
class _Prepared:
    name: str
    geometry: LetterboxGeometry | None = None
    pixels: Any = None  # CPU: letterboxed HxWx3 uint8 ndarray; CUDA: original HxWx3 uint8 ndarray, or None if...
    failure: str | None = None
    jpeg: bytes | None = None  # ...CUDA: the JPEG bytes, decoded on the GPU with the whole batch (nvJPEG)
    rotation: int = 0  # degrees counter-clockwise (EXIF orientation), applied after GPU decode


@dataclass(slots=True)
class _Buckets:
    by_shape: dict[tuple[int, int], list[_Prepared]] = field(default_factory=dict)
    count: int = 0


def fit_batch_size(model: LoadedModel, shape: tuple[int, int] = (1280, 1280)) -> int:
    """A batch size from the GPU's total memory, without probing (probing cost seconds of start-up per shard).

    32 letterboxed 1280-pixel images of YOLOv5x6 in fp16 need well under 40 GB; batches that still run out of memory
    are split in two and retried (``run_batch``), so the guess only has to be safe, not exact.
    """
    if model.device.type != "cuda":
        return CPU_BATCH_SIZE
    total_gb = torch.cuda.get_device_properties(model.device).total_memory / 2**30
    for need_gb, batch in ((40, 32), (20, 16), (10, 8), (5, 4)):
        if total_gb >= need_gb:
            return batch
    return 1


def probe_batch_size(model: LoadedModel, shape: tuple[int, int] = (1280, 1280)) -> int:
    """The largest power-of-two batch (<= MAX_CUDA_BATCH) whose forward pass fits in ~80% of free GPU memory."""
    if model.device.type != "cuda":
        return CPU_BATCH_SIZE
    dtype = torch.float16 if model.half else torch.float32
    best = 1
    b = 1
    while b <= MAX_CUDA_BATCH:
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(model.device)
            free, _total = torch.cuda.mem_get_info(model.device)
            base = torch.cuda.memory_allocated(model.device)
            with torch.inference_mode():
                x = torch.zeros((b, 3, *shape), device=model.device, dtype=dtype).contiguous(
                    memory_format=torch.channels_last)
                model.network(x)
            peak = torch.cuda.max_memory_allocated(model.device) - base
            del x
            if peak > 0.8 * free:
                break
            best = b
        except torch.cuda.OutOfMemoryError:
            break
        b *= 2
    torch.cuda.empty_cache()
    return best


def gpu_decodable_jpeg(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, rotation) as MegaDetector would see a plain RGB/grayscale JPEG, or None for the CPU path.

    Reads only the header. Anything unusual (not JPEG, CMYK, no end-of-image marker, i.e. truncated, which
    MegaDetector gray-fills through PIL) goes through the exact CPU decode instead.
    """
    try:
        if data.rstrip(b"\0")[-2:] != b"\xff\xd9":
            return None
        image = Image.open(io.BytesIO(data))
        if image.format != "JPEG" or image.mode not in ("RGB", "L"):
            return None
        rotation = 0
        try:
            rotation = _EXIF_ROTATIONS.get(image._getexif().get(_EXIF_ORIENTATION), 0)  # type: ignore[attr-defined]
        except Exception:  # no or unreadable EXIF: MegaDetector ignores it too
            rotation = 0
        w, h = image.size
        if w * h > (Image.MAX_IMAGE_PIXELS or 0) * 2:
            return None  # let the CPU path raise the decompression-bomb failure
        return (w, h, rotation) if rotation in (90, 270) else (h, w, rotation)
    except Exception:  # the CPU path will report what is wrong with it
        return None


def _prepare(source: ImageSource, name: str, model: LoadedModel) -> _Prepared:
    """Fetch and decode one image (worker thread). Never raises: problems become failures."""
    try:
        data = source.fetch(name)
        if model.device.type == "cuda":
            header = gpu_decodable_jpeg(data)
            if header is not None:
                h, w, rotation = header
                g = letterbox_geometry(h, w, model.image_size, model.stride)
                return _Prepared(name, g, jpeg=data, rotation=rotation)
        pixels = decode_image(data)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            # MegaDetector accepts 16-bit grayscale (I;16) at load time, then fails it at inference.
            return _Prepared(name, failure=FAILURE_INFER)
        if model.device.type == "cuda":
            g = letterbox_geometry(pixels.shape[0], pixels.shape[1], model.image_size, model.stride)
            return _Prepared(name, g, np.ascontiguousarray(pixels))
        boxed, g = letterbox_cpu(pixels, model.image_size, model.stride)
        return _Prepared(name, g, boxed)
    except (SourceError, ImageAccessError) as exc:
        logger.info("image %r: %s", name, exc)
        return _Prepared(name, failure=FAILURE_IMAGE_OPEN)
    except Exception as exc:  # noqa: BLE001 - one image must never stop the shard (e.g. cv2 errors on odd sizes)
        logger.warning("image %r: unexpected %s: %s", name, type(exc).__name__, exc)
        return _Prepared(name, failure=FAILURE_IMAGE_OPEN)


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


def run_images(names: Sequence[str], source: ImageSource, model: LoadedModel, writer: ResultWriter,
               threshold: float, options: PipelineOptions, summary: ShardSummary,
               stop_check: Callable[[], None] | None = None) -> None:
    """Process ``names`` and add one entry per image to ``writer``; updates ``summary`` counts as it goes."""
    detector = Detector(model, threshold)
    if model.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # camera-trap shards are nearly one input shape: tune once
    batch_size = options.batch_size or fit_batch_size(model)
    summary.batch_size = batch_size
    prefetch = options.prefetch or max(4 * batch_size, 2 * options.workers)
    on_cuda = model.device.type == "cuda"
    meter = _Throughput(options.log_seconds, options.shard_label, len(names))
    buckets = _Buckets()

    def emit(entry: dict[str, Any]) -> None:
        writer.add(entry)
        summary.done += 1
        if "failure" in entry:
            summary.failed += 1
        meter.tick(summary.done)
        if writer.error is not None:
            raise writer.error
        if stop_check is not None:
            stop_check()

    def gpu_pixels(items: list[_Prepared]) -> list[torch.Tensor]:
        """HxWx3 uint8 CUDA tensors: JPEGs decoded together by nvJPEG, the rest uploaded from their CPU decode."""
        jpegs = [it for it in items if it.jpeg is not None]
        decoded: dict[int, torch.Tensor] = {}
        if jpegs:
            datas = [torch.frombuffer(bytearray(it.jpeg), dtype=torch.uint8) for it in jpegs]  # type: ignore[arg-type]
            try:
                outs: list[torch.Tensor | None] = list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=model.device))
            except RuntimeError:  # one bad file fails the batched call: decode one by one
                outs = []
                for d in datas:
                    try:
                        outs.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=model.device))
                    except RuntimeError:
                        outs.append(None)
            for it, img in zip(jpegs, outs):
                g = it.geometry
                assert g is not None
                if img is not None and it.rotation:
                    img = torch.rot90(img, it.rotation // 90, dims=(1, 2))
                if img is None or (img.shape[1], img.shape[2]) != (g.orig_h, g.orig_w):
                    try:  # nvJPEG refused it: the exact CPU decode decides
                        it.pixels = np.ascontiguousarray(decode_image(it.jpeg))  # type: ignore[arg-type]
                    except ImageAccessError:
                        it.failure = FAILURE_IMAGE_OPEN
                    it.jpeg = None
                    continue
                decoded[id(it)] = img.permute(1, 2, 0)
        return [decoded[id(it)] if id(it) in decoded
                else torch.empty(0) if it.failure
                else torch.from_numpy(it.pixels).to(model.device, non_blocking=True) for it in items]

    def run_batch(items: list[_Prepared]) -> None:
        try:
            if on_cuda:
                pixels = gpu_pixels(items)
                if any(it.failure for it in items):
                    for it in items:
                        if it.failure:
                            emit(failure_entry(it.name, it.failure))
                    pixels = [px for px, it in zip(pixels, items) if not it.failure]
                    items = [it for it in items if not it.failure]
                    if not items:
                        return
                batch = torch.stack([letterbox_torch(px, it.geometry)  # type: ignore[arg-type]
                                     for px, it in zip(pixels, items)])
            else:
                batch = torch.from_numpy(np.stack([it.pixels.transpose(2, 0, 1) for it in items]))
            dets = detector.nms(detector.forward(batch))
            entries = [detections_entry(it.name, Detector.to_md(d, it.geometry))  # type: ignore[arg-type]
                       for it, d in zip(items, dets)]
        except torch.cuda.OutOfMemoryError:
            if len(items) == 1:
                entries = [failure_entry(items[0].name, FAILURE_INFER)]
            else:  # split and retry rather than failing a whole batch
                torch.cuda.empty_cache()
                half = len(items) // 2
                run_batch(items[:half])
                run_batch(items[half:])
                return
        except Exception as exc:  # noqa: BLE001 - as MegaDetector: a failed batch fails its images, not the shard
            logger.warning("%s batch of %d failed: %s: %s", options.shard_label, len(items), type(exc).__name__, exc)
            entries = [failure_entry(it.name, FAILURE_INFER) for it in items]
        for entry in entries:
            emit(entry)

    # CUDA: decode + letterbox of batch N+1 runs on a side stream in a staging thread while batch N's forward pass
    # and NMS run here, so the GPU does not wait for the CPU side of JPEG decoding between batches.
    staged: deque[tuple[list[_Prepared], Future[Any]]] = deque()
    stager = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-stage") if on_cuda else None
    stage_stream = torch.cuda.Stream(device=model.device) if on_cuda else None

    def stage(items: list[_Prepared]) -> tuple[list[_Prepared], torch.Tensor | None, Any]:
        with torch.cuda.stream(stage_stream):
            pixels = gpu_pixels(items)
            ok = [(px, it) for px, it in zip(pixels, items) if not it.failure]
            batch = (torch.stack([letterbox_torch(px, it.geometry) for px, it in ok])  # type: ignore[arg-type]
                     if ok else None)
            if batch is not None and batch.shape[0] < batch_size:
                # A short (tail) batch would be a new input shape: with cudnn.benchmark that costs seconds of
                # re-tuning. Padding with copies of the last image costs a little compute instead.
                batch = torch.cat([batch, batch[-1:].expand(batch_size - batch.shape[0], -1, -1, -1)])
            event = torch.cuda.Event()
            event.record(stage_stream)
        return [it for _, it in ok], batch, event

    def run_staged(items_all: list[_Prepared], fut: Future[Any]) -> None:
        try:
            items, batch, event = fut.result()
        except Exception as exc:  # noqa: BLE001 - staging failed: the exact, unstaged path decides per batch
            logger.warning("%s staging of %d images failed (%s); retrying unstaged", options.shard_label,
                           len(items_all), exc)
            run_batch(items_all)
            return
        for it in items_all:
            if it.failure:
                emit(failure_entry(it.name, it.failure))
        if batch is None:
            return
        main = torch.cuda.current_stream(model.device)
        main.wait_event(event)
        batch.record_stream(main)
        try:
            dets = detector.nms(detector.forward(batch)[: len(items)])
            entries = [detections_entry(it.name, Detector.to_md(d, it.geometry))  # type: ignore[arg-type]
                       for it, d in zip(items, dets)]
        except torch.cuda.OutOfMemoryError:
            del batch
            run_batch(items)  # splits in halves
            return
        except Exception as exc:  # noqa: BLE001 - as MegaDetector: a failed batch fails its images, not the shard
            logger.warning("%s batch of %d failed: %s: %s", options.shard_label, len(items), type(exc).__name__, exc)
            entries = [failure_entry(it.name, FAILURE_INFER) for it in items]
        for entry in entries:
            emit(entry)

    def submit_batch(items: list[_Prepared]) -> None:
        if stager is None:
            run_batch(items)
            return
        staged.append((items, stager.submit(stage, items)))
        while len(staged) > 1:
            run_staged(*staged.popleft())

    def add_prepared(item: _Prepared) -> None:
        if item.failure is not None:
            emit(failure_entry(item.name, item.failure))
            return
        assert item.geometry is not None
        shape = item.geometry.padded_shape
        bucket = buckets.by_shape.setdefault(shape, [])
        bucket.append(item)
        buckets.count += 1
        if len(bucket) >= batch_size:
            del buckets.by_shape[shape]
            buckets.count -= len(bucket)
            submit_batch(bucket)
        elif buckets.count > 2 * batch_size:  # many odd shapes: run the largest partial bucket to bound memory
            largest = max(buckets.by_shape, key=lambda s: len(buckets.by_shape[s]))
            items = buckets.by_shape.pop(largest)
            buckets.count -= len(items)
            submit_batch(items)

    pending: set[Future[_Prepared]] = set()
    todo = iter(names)
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="fetch-decode") as pool:
        exhausted = False
        while True:
            while not exhausted and len(pending) < prefetch:
                name = next(todo, None)
                if name is None:
                    exhausted = True
                    break
                pending.add(pool.submit(_prepare, source, name, model))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                add_prepared(fut.result())
        for shape in list(buckets.by_shape):
            submit_batch(buckets.by_shape.pop(shape))
        while staged:
            run_staged(*staged.popleft())
    if stager is not None:
        stager.shutdown(wait=True)
