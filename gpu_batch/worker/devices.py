"""How one image is prepared and one batch staged, launched and finished, on CPU and on CUDA.

Why this module exists: the two devices need different work to give MegaDetector's answers fast.

* CPU: decode with PIL and letterbox with OpenCV in the fetch threads (bit-identical with MegaDetector), stack,
  run the network in fp32.
* CUDA: the fetch threads only read JPEG headers; the stage thread decodes the whole batch with nvJPEG
  (``torchvision.io.decode_jpeg`` on the device) and letterboxes it on the GPU, on its own CUDA stream; the forward
  pass runs in fp16/channels_last on the main thread's stream; NMS and the copy of its result to the host run on a
  third stream in the post thread. Anything nvJPEG should not or cannot decode (CMYK, truncated, not a JPEG, a
  refusal) takes the exact CPU decode. Where the GPU has a hardware JPEG engine, ``hwdecode`` decodes the batch's
  JPEGs there first (nvImageCodec) and only what it refuses takes the nvJPEG CUDA path. Short batches are padded to
  the batch size: a new input shape would make cuDNN re-tune for seconds. ``--cpu-decode-share F`` has the fetch
  threads decode that fraction of the JPEGs exactly (PIL) and upload them, so the GPU's decoder has fewer to do;
  ``--stage-threads N`` stages N batches at once, each on a stream and hardware decoder of its own;
  ``--stream-priority high`` puts the stage, upload and NMS streams ahead of the forward pass's.
  ``torchvision.io`` is imported only by the CUDA path, when first needed: ``import torchvision`` costs ~1.4 s that
  a CPU shard has no use for.

Must not: decide batching, order or error policy (``batching`` and ``pipeline`` do) or touch result files.
"""
from __future__ import annotations

import io
import logging
import math
import threading
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from gpu_batch import manifest as contract
from gpu_batch.worker.batching import Entry, Launched, Prepared, Staged
from gpu_batch.worker.detector import Detector
from gpu_batch.formats.jpeg_end import ends_at_eoi, jpeg_cut_short
from gpu_batch.worker.hwdecode import (DECODER_CPU, DECODER_HW, DECODER_NVJPEG, DecodeCounts, HwJpegDecoder,
                                       route_decoded)
from gpu_batch.worker.loader import LoadedModel
from gpu_batch.worker.preprocess import (_EXIF_ORIENTATION, _EXIF_ROTATIONS, CaptureTime, ImageAccessError,
                                         LetterboxGeometry,
                                         decode_image, decode_image_and_time, image_capture_time, letterbox_cpu,
                                         letterbox_geometry, letterbox_torch_batch)
from gpu_batch.worker.results import FAILURE_IMAGE_OPEN, FAILURE_INFER, detections_entry
from gpu_batch.worker.sources import ImageSource, SourceError

logger = logging.getLogger(__name__)

CPU_BATCH_SIZE = 2


def fit_batch_size(model: LoadedModel) -> int:
    """A batch size from the GPU's total memory, without probing (probing cost seconds of start-up per shard).

    32 letterboxed 1280-pixel images of YOLOv5x6 in fp16 need well under 40 GB; batches that still run out of memory
    are split in two and retried (``batching``), so the guess only has to be safe, not exact.
    """
    if model.device.type != "cuda":
        return CPU_BATCH_SIZE
    total_gb = torch.cuda.get_device_properties(model.device).total_memory / 2**30
    for need_gb, batch in ((40, 32), (20, 16), (10, 8), (5, 4)):
        if total_gb >= need_gb:
            return batch
    return 1


def decode_jpeg_rgb(data: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    """``torchvision.io.decode_jpeg`` to RGB on ``device``: a tensor, or a list for a list (one nvJPEG batch).

    ``torchvision.io`` is imported on the first call: only the CUDA path decodes with it (see the module doc).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def start_cuda_warmup(device: torch.device | str) -> threading.Thread | None:
    """Initialise CUDA, cuDNN and nvJPEG on a side thread, overlapping the checkpoint download and load.

    Each costs a fraction of a second on first use (libraries, context, handles); here they stop adding up serially
    before the first batch. Failures are ignored: the real use reports them.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None

    def work() -> None:
        try:
            x = torch.zeros((1, 8, 32, 32), device=device, dtype=torch.float16).contiguous(
                memory_format=torch.channels_last)
            torch.nn.functional.conv2d(x, torch.zeros((8, 8, 3, 3), device=device, dtype=torch.float16))
            tiny = io.BytesIO()
            Image.new("RGB", (16, 16)).save(tiny, format="JPEG")
            decode_jpeg_rgb(torch.frombuffer(bytearray(tiny.getvalue()), dtype=torch.uint8), device)  # imports it
            torch.cuda.synchronize(device)
        except Exception as exc:  # noqa: BLE001 - a warm-up only
            logger.debug("CUDA warm-up failed: %s", exc)

    thread = threading.Thread(target=work, name="cuda-warmup", daemon=True)
    thread.start()
    return thread


def gpu_decodable_jpeg(data: bytes) -> tuple[int, int, int, CaptureTime | None] | None:
    """(height, width, rotation, capture time) as MegaDetector would see a plain RGB/grayscale JPEG, or None for the
    CPU path.

    Reads only the header. Anything unusual (not JPEG, CMYK, no end-of-image marker, i.e. truncated, which
    MegaDetector gray-fills through PIL) goes through the exact CPU decode instead. The marker may be followed by
    zeros or 0xFF fill (``formats.jpeg_end.ends_at_eoi``: cameras that pad a file to a sector or a preallocated
    size; bytes after the marker cannot change a decoded pixel, and a decoder that refuses them anyway, or sizes
    the image otherwise, falls back to the exact decode in ``CudaStages._decode``). Before, only zeros were skipped,
    and every 0xFF-padded photo of such a camera took the slow CPU decode. Other data after the marker (a motion
    photo's video) still goes to the CPU: whether nvJPEG reads past the marker is not documented.
    """
    try:
        if not ends_at_eoi(data):
            return None
        image = Image.open(io.BytesIO(data))
        if image.format != "JPEG" or image.mode not in ("RGB", "L"):
            return None
        rotation = 0
        # A grayscale JPEG is not turned: MegaDetector's load_image converts it to RGB first, and the copy has no
        # ``_getexif`` to read the orientation from (``preprocess.decode_image`` does the same on the CPU path).
        if image.mode == "RGB":
            try:
                exif = image._getexif()  # type: ignore[attr-defined]
                rotation = _EXIF_ROTATIONS.get(exif.get(_EXIF_ORIENTATION), 0)
            except Exception:  # noqa: BLE001 - no or unreadable EXIF: MegaDetector ignores it too
                rotation = 0
        captured = image_capture_time(image)  # the converted or turned copy MegaDetector reads keeps this EXIF
        w, h = image.size
        if w * h > (Image.MAX_IMAGE_PIXELS or 0) * 2:
            return None  # let the CPU path raise the decompression-bomb failure
        return (w, h, rotation, captured) if rotation in (90, 270) else (h, w, rotation, captured)
    except Exception:  # noqa: BLE001 - the CPU path will report what is wrong with it
        return None


def _entries(detector: Detector, items: list[Prepared], prediction: torch.Tensor) -> list[Entry]:
    """The entries of a batch, each with its image's size as decoded (``results.detections_entry``).

    The size is the letterbox geometry's original size, which every decode path sets from the image as MegaDetector
    decodes it, EXIF orientation applied: the decoded pixels (CPU, and the exact-PIL fallback of the GPU path, whose
    pixels must have that size or the batch does not stage) or the JPEG header with the EXIF turn (nvJPEG, whose
    output is checked against it). No image is read again for it.
    """
    dets = detector.nms(prediction)
    out = []
    for it, d in zip(items, dets):
        g = it.geometry
        assert g is not None
        out.append(detections_entry(it.name, Detector.to_md(d, g), width=g.orig_w, height=g.orig_h,
                                    captured=it.captured))
    return out


class CpuStages:
    """MegaDetector's own CPU path, batched: exact decode and letterbox in the fetch threads, fp32 forward."""

    pads_tail = False

    def __init__(self, model: LoadedModel, detector: Detector) -> None:
        self.model, self.detector = model, detector

    def default_batch_size(self) -> int:
        return CPU_BATCH_SIZE

    def prepare(self, source: ImageSource, name: str) -> Prepared:
        """Fetch and decode one image (a fetch thread). Never raises: problems become failures. A JPEG cut short
        (``formats.jpeg_end.jpeg_cut_short``) that decodes is marked ``damaged``, on the CPU and the CUDA path alike.

        Why fetching and decoding are told apart: a read that failed says nothing about the image (retryable unless
        the source says it is gone), while bytes that cannot be decoded fail the same way every time (permanent).
        And why only the decoder's own words make a photo ``undecodable`` (``preprocess.ImageAccessError``: what
        Pillow raises for bad input, ``preprocess.BAD_FILE_ERRORS``; nvJPEG's refusals go to that same exact decode):
        anything else raised here (a TypeError, an AttributeError, a RuntimeError of CUDA...) is a bug of the worker
        or a broken node, and made every photo it touched a permanent "corrupt" one, never run again, with nothing
        but a warning line to tell. It is ``worker_error`` instead: retryable, so it shows up as failed attempts and
        resubmissions, and logged with its traceback once per shard. The failure string stays MegaDetector's: its
        ``run_detector_batch`` writes "image access failure" for any exception while loading an image.
        """
        try:
            data = source.fetch(name)
        except SourceError as exc:
            logger.info("image %r: %s (%s)", name, exc, exc.reason)
            return Prepared(name, failure=FAILURE_IMAGE_OPEN, failure_reason=exc.reason)
        except Exception as exc:  # noqa: BLE001 - a source bug or an error its SDK let through: try it again later
            logger.warning("image %r: unexpected %s while fetching: %s", name, type(exc).__name__, exc)
            return Prepared(name, failure=FAILURE_IMAGE_OPEN, failure_reason=contract.REASON_DOWNLOAD)
        try:
            item = self._prepare(data, name)
            # both devices: the bytes are here, and only their tail is read (no second decode)
            item.damaged = item.failure is None and jpeg_cut_short(data)
            return item
        except ImageAccessError as exc:
            logger.info("image %r: %s (%s)", name, exc, exc.reason)
            return Prepared(name, failure=FAILURE_IMAGE_OPEN, failure_reason=exc.reason)
        except MemoryError as exc:  # the node's memory, not the photo: the next attempt runs it again
            logger.warning("image %r: out of memory while decoding (%s); the next attempt retries it", name, exc)
            return Prepared(name, failure=FAILURE_INFER, failure_reason=contract.REASON_INFERENCE)
        except Exception as exc:  # noqa: BLE001 - one image must never stop the shard; not the photo's doing
            self._worker_error(name, exc)
            return Prepared(name, failure=FAILURE_IMAGE_OPEN, failure_reason=contract.REASON_WORKER_ERROR)

    _worker_error_told = False  # this shard's stages logged a worker error's traceback (``_worker_error``)
    _worker_error_lock = threading.Lock()

    def _worker_error(self, name: str, exc: BaseException) -> None:
        """Log an unexpected exception while preparing ``name``: the first of the shard with its traceback (the
        stages live for one shard, ``pipeline.run_images``), the rest on a line each."""
        with self._worker_error_lock:
            first, self._worker_error_told = not self._worker_error_told, True
        if first:
            logger.error("image %r: unexpected %s while decoding (a worker error, not the photo: it is tried again "
                         "by the next attempt; traceback once per shard): %s", name, type(exc).__name__, exc,
                         exc_info=exc)
        else:
            logger.warning("image %r: unexpected %s while decoding (worker_error, tried again): %s", name,
                           type(exc).__name__, exc)

    def _prepare(self, data: bytes, name: str) -> Prepared:
        pixels, captured = decode_image_and_time(data)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            # MegaDetector accepts 16-bit grayscale (I;16) at load time, then fails it at inference.
            return Prepared(name, failure=FAILURE_INFER, failure_reason=contract.REASON_UNSUPPORTED)
        boxed, g = letterbox_cpu(pixels, self.model.image_size, self.model.stride)
        return Prepared(name, g, boxed, captured=captured)

    def stage(self, items: list[Prepared], pad_to: int | None) -> Staged:
        arrays = [it.pixels.transpose(2, 0, 1) for it in items if it.pixels is not None]
        return Staged(items=list(items), batch=torch.from_numpy(np.stack(arrays)) if arrays else None)

    def launch(self, staged: Staged) -> Launched:
        assert staged.batch is not None
        return Launched(staged.items, self.detector.forward(staged.batch))

    def finish(self, launched: Launched) -> list[Entry]:
        return _entries(self.detector, launched.items, launched.prediction)

    def release_memory(self) -> None:
        pass


class CudaStages(CpuStages):
    """nvJPEG decode and letterbox on a side stream, fp16 forward, NMS on a third stream (see the module doc)."""

    pads_tail = True

    def __init__(self, model: LoadedModel, detector: Detector, hw: HwJpegDecoder | None = None,
                 stage_threads: int = 1, cpu_decode_share: float = 0.0, stream_priority: str = "normal") -> None:
        super().__init__(model, detector)
        # The side streams' priority (``stream_priority_value``): "high" lets the stage, upload and NMS kernels take
        # SMs ahead of the forward pass's queued blocks, so a stage thread that waits on its own small kernels
        # (the engine's colour conversion, the letterbox) behind a forward pass waits less.
        self._priority = stream_priority_value(stream_priority)
        self.cpu_share = ShareCounter(cpu_decode_share)  # JPEGs the fetch threads decode exactly and upload
        self.hw = hw  # the hardware JPEG decoder (hwdecode), or None: nvJPEG's CUDA backend decodes every JPEG
        self.decoded_by = DecodeCounts()
        self.stage_stream = self._side_stream()
        # With several stage threads each has a stream and a hardware decoder of its own (nvImageCodec does not
        # promise a Decoder may be used from two threads at once); the first thread to stage takes these two.
        # nvJPEG's CUDA path needs nothing per thread: torchvision's decode_jpegs_cuda holds one decoder behind a
        # global mutex (torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp), so its callers take turns.
        self._own_per_thread = stage_threads > 1
        self._local = threading.local()
        self._claim_lock = threading.Lock()
        self._claims = 0
        self.post_stream = self._side_stream()
        self.forward_seconds = 0.0  # GPU time of the forward passes (CUDA events), read by the post thread only
        self.stage_times = StageTimes()  # the stage thread's split: decode call (CPU wall), decode and letterbox (GPU)

    def default_batch_size(self) -> int:
        return fit_batch_size(self.model)

    def _side_stream(self) -> Any:
        """A CUDA stream beside the main thread's (which runs the forward passes), at the shard's side priority."""
        return torch.cuda.Stream(device=self.model.device, priority=self._priority)  # type: ignore[no-untyped-call]

    def _prepare(self, data: bytes, name: str) -> Prepared:
        header = gpu_decodable_jpeg(data)
        if header is not None and not self.cpu_share.pick():
            h, w, rotation, captured = header
            g = letterbox_geometry(h, w, self.model.image_size, self.model.stride)
            return Prepared(name, g, jpeg=data, rotation=rotation, captured=captured)
        pixels, captured = decode_image_and_time(data)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            return Prepared(name, failure=FAILURE_INFER, failure_reason=contract.REASON_UNSUPPORTED)
        g = letterbox_geometry(pixels.shape[0], pixels.shape[1], self.model.image_size, self.model.stride)
        item = Prepared(name, g, np.ascontiguousarray(pixels), captured=captured)
        if header is not None:  # the CPU-decoded share: uploaded here, on this fetch thread, not on the stage thread
            assert item.pixels is not None
            try:
                item.uploaded, item.pixels = self._upload(item.pixels), None
            except Exception as exc:  # noqa: BLE001 - out of GPU memory, say: the image is fine, so it must not fail
                # The stage thread uploads host pixels as it does a PNG's, inside the batch whose out-of-memory
                # handling splits and retries; failing the image here would lose a good photo for good.
                logger.warning("image %r: upload after the exact decode failed (%s: %s); the stage thread uploads it",
                               name, type(exc).__name__, exc)
        return item

    def _upload(self, pixels: np.ndarray) -> torch.Tensor:
        """``pixels`` on the GPU, the copy complete (a fetch thread waits for it, so the stage stream may read it).

        On a stream of this fetch thread's own: on the default stream the copy would queue behind the forward passes
        the main thread launched there, and the forward passes behind the copies."""
        stream = getattr(self._local, "upload_stream", None)
        if stream is None:
            stream = self._side_stream()
            self._local.upload_stream = stream
        with torch.cuda.stream(stream):
            uploaded = _to_device(pixels, self.model.device)
        stream.synchronize()
        return uploaded

    def _thread_resources(self) -> tuple[Any, HwJpegDecoder | None]:
        """The CUDA stream and hardware decoder this thread stages with (shared unless there are several stage
        threads; a thread whose own decoder cannot be built shares the first one, which has a lock)."""
        if not self._own_per_thread:
            return self.stage_stream, self.hw
        mine = getattr(self._local, "resources", None)
        if mine is None:
            with self._claim_lock:
                index, self._claims = self._claims, self._claims + 1
            if index == 0:
                mine = (self.stage_stream, self.hw)
            else:
                stream = self._side_stream()
                mine = (stream, self.hw.sibling(index) if self.hw is not None else None)
            self._local.resources = mine
        return mine

    def _decode(self, items: list[Prepared], stream: Any = None, hw: HwJpegDecoder | None = None
                ) -> list[torch.Tensor | None]:
        """HxWx3 uint8 CUDA tensors (None for a failure): JPEGs decoded together, others uploaded."""
        device = self.model.device
        jpegs = [it for it in items if it.jpeg is not None]
        decoded: dict[int, torch.Tensor] = {}
        source: dict[int, str] = {}
        if jpegs and hw is not None:
            jpegs = self._decode_hw(hw, stream, jpegs, decoded, source)  # what the engine refused goes on below
        if jpegs:
            datas = [torch.frombuffer(bytearray(it.jpeg or b""), dtype=torch.uint8) for it in jpegs]
            outs: list[torch.Tensor | None]
            try:
                outs = list(decode_jpeg_rgb(datas, device))
            except RuntimeError:  # one bad file fails the batched call: decode one by one
                outs = []
                for d in datas:
                    try:
                        outs.append(decode_jpeg_rgb(d, device))
                    except RuntimeError:
                        outs.append(None)
            for it, img in zip(jpegs, outs):
                g = it.geometry
                assert g is not None and it.jpeg is not None
                if img is not None and it.rotation:
                    img = torch.rot90(img, it.rotation // 90, dims=(1, 2))
                if img is None or (img.shape[1], img.shape[2]) != (g.orig_h, g.orig_w):
                    try:  # nvJPEG refused it or disagrees on its size: the exact CPU decode decides
                        it.pixels = np.ascontiguousarray(decode_image(it.jpeg))
                    except ImageAccessError as exc:
                        it.failure, it.failure_reason = FAILURE_IMAGE_OPEN, exc.reason
                    it.jpeg = None
                    continue
                decoded[id(it)], source[id(it)] = img.permute(1, 2, 0), DECODER_NVJPEG
        out: list[torch.Tensor | None] = []
        for it in items:
            if it.failure is not None:
                out.append(None)
            elif id(it) in decoded:
                out.append(decoded[id(it)])
                self.decoded_by.record(it.name, source[id(it)])
            elif it.uploaded is not None:
                if stream is not None:  # allocated on a fetch thread's stream, read on this one
                    it.uploaded.record_stream(stream)
                out.append(it.uploaded)
                self.decoded_by.record(it.name, DECODER_CPU)
            else:
                assert it.pixels is not None
                out.append(_to_device(it.pixels, device))
                self.decoded_by.record(it.name, DECODER_CPU)
        return out

    def _decode_hw(self, hw: HwJpegDecoder, stream: Any, jpegs: list[Prepared], decoded: dict[int, torch.Tensor],
                   source: dict[int, str]) -> list[Prepared]:
        """Decode ``jpegs`` on the hardware engine in one call (HxWx3 into ``decoded``, rotated as the nvJPEG path
        rotates); returns those it refused or sized differently from their header, for the nvJPEG/PIL path."""
        try:
            outs = hw.decode([it.jpeg or b"" for it in jpegs], stream)
        except Exception as exc:  # noqa: BLE001 - the whole call failed: today's path decodes the batch
            logger.warning("hardware JPEG decode of %d images failed (%s: %s); using nvJPEG's CUDA backend",
                           len(jpegs), type(exc).__name__, exc)
            return jpegs
        routed = route_decoded(jpegs, outs, _stored_shape, lambda t: tuple(t.shape))
        for it, img in routed.accepted:
            if it.rotation:
                img = torch.rot90(img, it.rotation // 90, dims=(0, 1))
            decoded[id(it)], source[id(it)] = img, DECODER_HW
        return routed.fallback

    def stage(self, items: list[Prepared], pad_to: int | None) -> Staged:
        stream, hw = self._thread_resources()
        with torch.cuda.stream(stream):
            self.stage_times.harvest()
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(3)]  # type: ignore[no-untyped-call]
            marks[0].record(stream)
            t0 = time.monotonic()
            pixels = self._decode(items, stream, hw)
            decode_s = time.monotonic() - t0
            marks[1].record(stream)
            ok = [(px, it) for px, it in zip(pixels, items) if px is not None and it.failure is None]
            staged = Staged(items=[it for _, it in ok], failed=[it for it in items if it.failure is not None])
            if ok:
                first = ok[0][1].geometry
                assert first is not None
                h, w = first.padded_shape
                rows = max(pad_to or 0, len(ok))
                # Letterboxed pixels are whole numbers in 0..255, exact in fp16: staging in the network's dtype
                # halves the copy and makes the forward pass's cast a no-op.
                dtype = torch.float16 if self.model.half else torch.float32
                batch = torch.empty((rows, 3, h, w), dtype=dtype, device=self.model.device,
                                    memory_format=torch.channels_last)
                groups: dict[LetterboxGeometry, list[int]] = {}
                for i, (_, it) in enumerate(ok):
                    assert it.geometry is not None
                    groups.setdefault(it.geometry, []).append(i)
                for g, idx in groups.items():  # one set of kernels per original image size (usually one)
                    boxed = letterbox_torch_batch([ok[i][0] for i in idx], g)
                    if idx == list(range(idx[0], idx[0] + len(idx))):
                        batch[idx[0]:idx[0] + len(idx)] = boxed
                    else:
                        batch[torch.tensor(idx, device=self.model.device)] = boxed
                if len(ok) < rows:  # tail padding: copies of the last image, results dropped after the forward
                    batch[len(ok):] = batch[len(ok) - 1]
                staged.batch = batch
            marks[2].record(stream)
            staged.ready = marks[2]
            self.stage_times.add(decode_s, (marks[0], marks[1], marks[2]))
        return staged

    def launch(self, staged: Staged) -> Launched:
        assert staged.batch is not None
        main = torch.cuda.current_stream(self.model.device)
        main.wait_event(staged.ready)
        staged.batch.record_stream(main)  # allocated on the stage stream, consumed here
        started = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        started.record(main)
        prediction = self.detector.forward(staged.batch)[: len(staged.items)]
        done = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        done.record(main)
        return Launched(staged.items, prediction, started, done)

    def finish(self, launched: Launched) -> list[Entry]:
        with torch.cuda.stream(self.post_stream):
            self.post_stream.wait_event(launched.done)
            launched.prediction.record_stream(self.post_stream)  # allocated on the main stream, consumed here
            entries = _entries(self.detector, launched.items, launched.prediction)  # NMS ends with a host copy
        try:  # both events are complete once the NMS result reached the host
            self.forward_seconds += launched.started.elapsed_time(launched.done) / 1000.0
        except RuntimeError:  # a measurement only
            pass
        return entries

    def release_memory(self) -> None:
        torch.cuda.empty_cache()


class ShareCounter:
    """Picks a steady ``share`` of the calls to ``pick`` (thread-safe): call n (from 0) is picked when
    floor((n + 1) x share) > floor(n x share), so 0.25 picks every fourth, 0.4 two in five, spread evenly.

    Why: the GPU's JPEG engine is one decoder for the whole batch; the fetch threads' idle cores can take a share of
    the JPEGs (decoded exactly as MegaDetector decodes them, with PIL) so that the stage thread waits less on the
    engine. A fixed share keeps runs comparable while the best share is measured; ``--cpu-decode-share auto`` has
    ``share_tuner`` move it during the shard instead.
    """

    def __init__(self, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"a decode share is a fraction from 0 to 1, not {share}")
        self.share = share
        self._n = 0
        self._lock = threading.Lock()

    def pick(self) -> bool:
        share = self.share  # read once: ``share_tuner`` may change it while the fetch threads pick
        if share == 0.0:
            return False
        with self._lock:
            n, self._n = self._n, self._n + 1
        return math.floor((n + 1) * share) > math.floor(n * share)


class StageTimes:
    """Where the stage thread's time goes on CUDA: the decode call's wall seconds on that thread, and the GPU seconds
    of each batch's decode and letterbox on the stage stream (CUDA events, read once they have completed).

    Why: on an H200 (2026-12-04) the compiled forward ran 475-489 img/s alone but the worker's steady state stayed at
    369-374, with the single stage thread busy ~94 ms a batch of 32 in the eager run against ~65 ms for a compiled
    forward pass; these figures say whether the engine's decode or the letterbox kernels are what to speed up next.
    """

    def __init__(self) -> None:
        self.decode_call_s = 0.0
        self.decode_gpu_s = 0.0
        self.letterbox_gpu_s = 0.0
        self._pending: list[tuple[Any, Any, Any]] = []  # (start, decoded, ready) events of batches not yet read
        self._lock = threading.Lock()  # the stage thread, and the main thread retrying a batch, both stage

    def add(self, decode_call_s: float, marks: tuple[Any, Any, Any]) -> None:
        with self._lock:
            self.decode_call_s += decode_call_s
            self._pending.append(marks)

    def harvest(self) -> None:
        """Add the GPU times of the batches whose events have completed (all before the first that has not)."""
        with self._lock:
            done = 0
            for start, decoded, ready in self._pending:
                if not ready.query():
                    break
                try:
                    self.decode_gpu_s += start.elapsed_time(decoded) / 1000.0
                    self.letterbox_gpu_s += decoded.elapsed_time(ready) / 1000.0
                except RuntimeError:  # a measurement only
                    pass
                done += 1
            del self._pending[:done]

    def snapshot(self) -> dict[str, float]:
        self.harvest()
        return {"stage_decode_call_s": self.decode_call_s, "stage_decode_gpu_s": self.decode_gpu_s,
                "stage_letterbox_gpu_s": self.letterbox_gpu_s}


def _to_device(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """``pixels`` copied to ``device`` in one copy, on the current stream.

    Why not ``torch.from_numpy(pixels).to(device)``: PIL's pixels (``np.asarray`` of an image) are read-only, and
    ``from_numpy`` then warns in every GPU worker's log that writing to them would be undefined; ``torch.tensor``
    reads the array without that view and copies it straight to the device.
    """
    return torch.tensor(pixels, device=device)


def _stored_shape(item: Prepared) -> tuple[int, int]:
    """(height, width) of a JPEG as stored, i.e. before its EXIF rotation (``geometry`` is after it)."""
    g = item.geometry
    assert g is not None
    return (g.orig_w, g.orig_h) if item.rotation in (90, 270) else (g.orig_h, g.orig_w)


STREAM_PRIORITIES = ("normal", "high")


def stream_priority_value(name: str) -> int:
    """torch's priority number for ``--stream-priority`` (lower is higher; torch maps it into the device's range).

    Why a choice of two and not CUDA's range: the question the worker asks is only whether the side streams' small
    kernels should go ahead of the forward pass's, and torch's ``Stream`` clamps any number to what the GPU has.
    """
    if name not in STREAM_PRIORITIES:
        raise ValueError(f"stream priority {name!r}: expected one of {', '.join(STREAM_PRIORITIES)}")
    return -1 if name == "high" else 0


def make_stages(model: LoadedModel, detector: Detector, hw: HwJpegDecoder | None = None,
                stage_threads: int = 1, cpu_decode_share: float = 0.0, stream_priority: str = "normal") -> CpuStages:
    """The device's stages; ``hw``: the hardware JPEG decoder a CUDA shard uses first (``hwdecode``), if any;
    ``stage_threads``: how many threads will call ``stage`` at once (``BatchOverlap``); ``cpu_decode_share``: the
    fraction of a CUDA shard's JPEGs decoded exactly on the fetch threads instead (``ShareCounter``);
    ``stream_priority``: the CUDA side streams' priority (``stream_priority_value``)."""
    if model.device.type == "cuda":
        return CudaStages(model, detector, hw, stage_threads, cpu_decode_share, stream_priority)
    return CpuStages(model, detector)


def describe_stages(stages: CpuStages) -> dict[str, Any]:
    """Stage figures only the device knows (GPU forward seconds), for the shard summary."""
    if isinstance(stages, CudaStages):
        return {"gpu_forward_s": stages.forward_seconds, **stages.stage_times.snapshot()}
    return {}


def decoded_by(stages: CpuStages) -> dict[str, int] | None:
    """Images per decoder that actually decoded them (CUDA; None on the CPU, where PIL decodes every image)."""
    return stages.decoded_by.counts() if isinstance(stages, CudaStages) else None
