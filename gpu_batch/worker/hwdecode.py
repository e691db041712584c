"""Which decoder turns a shard's JPEGs into pixels, and the GPU's hardware JPEG engine through nvImageCodec.

Why this module exists: the A100/H100/H200 have hardware JPEG decode engines beside the SMs. Today's CUDA path
(``torchvision.io.decode_jpeg`` on the device) uses nvJPEG's CUDA backend, which decodes on the SMs that the forward
passes need (bench/RESULTS.md: on an H100 the batched decode and letterbox take ~15 % of the GPU's time). nvImageCodec
(``nvidia-nvimgcodec-cu13``, with ``nvidia-nvjpeg``) exposes nvJPEG's hardware backend in Python: a ``Decoder`` limited
to ``Backend(BackendKind.HW_GPU_ONLY)`` decodes a batch of ``CodeStream``s into device ``Image``s, ``None`` at each
position it could not decode (``Decoder.decode`` docstring in the installed package, 0.9.0). Its hardware plugin is
registered only where ``nvjpegCreateEx(NVJPEG_BACKEND_HARDWARE)`` succeeds and it accepts only baseline JPEGs with
4:4:4/4:2:2/4:2:0/4:4:0/gray sampling that ``nvjpegDecodeBatchedSupported`` allows (NVIDIA/nvImageCodec
``extensions/nvjpeg/hw_decoder.cpp``: ``isPlatformSupported``, ``canDecodeImpl``); everything else comes back None.

The three decoders, reported in the shard summary as ``decode`` (with ``decode_reason``):

* ``nvimgcodec-hw``: CUDA in use, the package imports, and a hardware decoder can be created and decodes a probe
  JPEG (``probe_hw_decoder``: once per process and device, so a resident worker probes once for all its shards).
  JPEGs the engine rejects fall back per image to today's path (``nvjpeg-cuda``, then the exact PIL decode); nothing
  is lost. ``decoded_by`` in the summary counts which decoder each image actually went through.
* ``nvjpeg-cuda``: today's CUDA path (``devices.CudaStages``), when CUDA is in use but the hardware decoder is off or
  unavailable.
* ``cpu``: the device is the CPU (PIL, exactly as MegaDetector).

EXIF orientation: decoded with ``apply_exif_orientation=False`` and then rotated exactly as today's GPU path does
(``Prepared.rotation``, read from the header by ``devices.gpu_decodable_jpeg``: orientations 3/6/8 only, mirrored ones
ignored as MegaDetector ignores them), so both GPU decoders see the same geometry. nvImageCodec's own orientation
handling would also apply mirrored orientations, which MegaDetector does not.

Choice: ``--hw-decode auto|on|off`` on the worker's command line, else ``TRAPBATCH_HW_DECODE`` (same values; unset:
``auto``). ``on`` requires the hardware decoder: without it the shard is a usage error (exit 2), as ``--device cuda``
without a GPU is, so a benchmark never measures the wrong decoder by accident. ``off`` keeps today's path.

nvImageCodec logs at import, to stderr, that its JPEG 2000 and TIFF extensions find no nvJPEG2000/nvTIFF library:
harmless, only its JPEG decoders are used (and only their hardware backend).

Must not: decide batching or failures (``devices`` and ``batching`` do), or read the environment itself
(``__main__`` passes the mode and its environment in).
"""
from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

logger = logging.getLogger(__name__)

DECODER_HW = "nvimgcodec-hw"
DECODER_NVJPEG = "nvjpeg-cuda"
DECODER_CPU = "cpu"
DECODERS = (DECODER_HW, DECODER_NVJPEG, DECODER_CPU)

MODES = ("auto", "on", "off")
ENV_MODE = "TRAPBATCH_HW_DECODE"

# A baseline 4:2:0 JPEG of an ordinary size, as camera traps write them: the probe decodes it on the engine.
_PROBE_SIZE = (640, 480)


class HwDecodeUnavailable(RuntimeError):
    """``--hw-decode on`` (or ``TRAPBATCH_HW_DECODE=on``) on a node where the hardware decoder cannot be used."""


def decode_mode(cli_value: str | None, env: Mapping[str, str]) -> str:
    """The hardware-decode mode: the command line's value, else ``TRAPBATCH_HW_DECODE``, else ``auto``.

    Raises ``ValueError`` naming the variable when the environment holds something else.
    """
    if cli_value:
        return cli_value
    value = env.get(ENV_MODE, "").strip().lower()
    if not value:
        return "auto"
    if value not in MODES:
        raise ValueError(f"{ENV_MODE}={env.get(ENV_MODE)!r}: expected one of {', '.join(MODES)}")
    return value


@dataclass(frozen=True, slots=True)
class DecodeChoice:
    """The decoder a shard uses for its JPEGs and why (``decode`` / ``decode_reason`` in the summary)."""

    decoder: str
    reason: str


@dataclass(frozen=True, slots=True)
class DecodeSelection:
    """A ``DecodeChoice`` and, for ``nvimgcodec-hw``, the decoder that implements it."""

    choice: DecodeChoice
    hw: HwJpegDecoder | None = None


ProbeResult = tuple["HwJpegDecoder | None", str]


def default_selection(device_type: str) -> DecodeSelection:
    """Today's decoder for the device, for callers that chose nothing (tests, direct ``run_images`` callers)."""
    if device_type == "cuda":
        return DecodeSelection(DecodeChoice(DECODER_NVJPEG, "hardware decode not considered by the caller"))
    return DecodeSelection(DecodeChoice(DECODER_CPU, f"device is {device_type}: exact PIL decode"))


def driver_capability_hint(env: Mapping[str, str]) -> str:
    """What to fix when the hardware decoder is missing in a container whose driver capabilities leave it out, else "".

    Why: the NVIDIA container runtime mounts only the driver libraries of the capabilities that
    ``NVIDIA_DRIVER_CAPABILITIES`` names (libnvidia-container ``nvc_info.c``: libnvcuvid and libnvidia-encode belong to
    ``video``), and NVIDIA's CUDA images set ``compute,utility``. nvJPEG's hardware backend then cannot be created
    inside the container even on an H100, and the probe's own answer ("this GPU has no hardware JPEG decoder") would
    send the operator after the GPU rather than the image: NVIDIA's answers in NVIDIA/CUDALibrarySamples#132 (nvJPEG
    hardware decode in Docker on an H100) and NVIDIA/DALI#2362 name ``video`` as the fix. Unset (a process outside
    a container, as the benchmarks run), ``all`` or a list with ``video``: nothing to say.
    """
    caps = env.get("NVIDIA_DRIVER_CAPABILITIES")
    if caps is None:
        return ""
    names = {c.strip().lower() for c in caps.split(",")}
    if names & {"all", "video"}:
        return ""
    return (f"NVIDIA_DRIVER_CAPABILITIES={caps!r} leaves out 'video', whose driver libraries nvJPEG's hardware backend "
            "needs in a container: set it to compute,utility,video (gpu_batch/Dockerfile does)")


def choose_decoder(device_type: str, mode: str, probe: Callable[[], ProbeResult],
                   env: Mapping[str, str] | None = None) -> DecodeSelection:
    """Pick the shard's decoder from the device, the mode and (only when it matters) the hardware probe.

    ``probe`` returns the ready decoder or None with the reason; it is not called on the CPU or with ``off``.
    Raises ``HwDecodeUnavailable`` for ``on`` when the probe finds no usable hardware decoder (or the device is
    the CPU). ``env``: the worker's environment, read only for ``driver_capability_hint``, which is added to the
    reason when the probe finds no decoder.
    """
    if mode not in MODES:
        raise ValueError(f"hardware-decode mode {mode!r}: expected one of {', '.join(MODES)}")
    if device_type != "cuda":
        if mode == "on":
            raise HwDecodeUnavailable("hardware JPEG decode was required (--hw-decode on / TRAPBATCH_HW_DECODE=on) "
                                      f"but the worker runs on {device_type}, not CUDA")
        return DecodeSelection(DecodeChoice(DECODER_CPU, f"device is {device_type}: exact PIL decode"))
    if mode == "off":
        return DecodeSelection(DecodeChoice(DECODER_NVJPEG, "hardware decode switched off (--hw-decode off)"))
    hw, why = probe()
    if hw is not None:
        return DecodeSelection(DecodeChoice(DECODER_HW, why), hw)
    hint = driver_capability_hint(env or {})
    why = f"{why}; {hint}" if hint else why
    if mode == "on":
        raise HwDecodeUnavailable(f"hardware JPEG decode was required (--hw-decode on / TRAPBATCH_HW_DECODE=on) "
                                  f"but is unavailable: {why}")
    return DecodeSelection(DecodeChoice(DECODER_NVJPEG, f"no hardware decoder: {why}"))


T = TypeVar("T")
O = TypeVar("O")


@dataclass(slots=True)
class Routed(Generic[T, O]):
    """What became of a batch sent to the hardware decoder: images it decoded, and the rest, for today's path."""

    accepted: list[tuple[T, O]]
    fallback: list[T]


def route_decoded(items: Sequence[T], outputs: Sequence[O | None], expected: Callable[[T], tuple[int, int]],
                  shape: Callable[[O], tuple[int, ...]]) -> Routed[T, O]:
    """Keep each output whose shape is the item's ``expected`` (height, width) with 3 channels; the rest fall back.

    Why a shape check and not only ``None``: the header read (PIL) fixed each image's letterbox geometry; an output
    of another size or channel count (a decoder that disagrees on the file) goes to the path that decides such files
    today, as nvJPEG's disagreements do. A short or long ``outputs`` (a decoder bug) sends the unmatched to fallback.
    """
    routed: Routed[T, O] = Routed([], [])
    for i, item in enumerate(items):
        out = outputs[i] if i < len(outputs) else None
        if out is not None and tuple(shape(out)) == (*expected(item), 3):
            routed.accepted.append((item, out))
        else:
            routed.fallback.append(item)
    return routed


class DecodeCounts:
    """Which decoder each image of a shard went through (last decode wins: a batch re-staged after an out-of-memory
    split is not counted twice). Written by the stage thread, or the main thread while it retries a batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, str] = {}

    def record(self, name: str, decoder: str) -> None:
        with self._lock:
            self._by_name[name] = decoder

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for decoder in self._by_name.values():
                out[decoder] = out.get(decoder, 0) + 1
            return dict(sorted(out.items()))


class HwJpegDecoder:
    """nvImageCodec's ``Decoder`` restricted to the hardware backend, decoding to HxWx3 uint8 RGB CUDA tensors.

    Decodes on the caller's CUDA stream (``cuda_stream=``): nvImageCodec allocates each output with
    ``cudaMallocAsync`` on that stream and frees it with ``cudaFreeAsync`` there (NVIDIA/nvImageCodec
    ``python/image.cpp``, ``Image::initDeviceBuffer``), so the letterbox kernels queued after it on the same stream
    read it safely, and the tensors (``torch.as_tensor`` over the image's ``__cuda_array_interface__``, which keeps the
    ``Image`` alive) need no copy. One call at a time: the stage thread decodes, but a batch retried after an
    out-of-memory split is staged on the main thread meanwhile, and nvImageCodec does not promise that a ``Decoder``
    may be used from two threads at once.
    """

    def __init__(self, module: Any, decoder: Any, device_index: int) -> None:
        self._nvimgcodec, self._decoder, self.device_index = module, decoder, device_index
        self._lock = threading.Lock()
        self._siblings: dict[int, HwJpegDecoder] = {}
        self._params = module.DecodeParams(apply_exif_orientation=False, color_spec=module.ColorSpec.SRGB,
                                           sample_format=module.SampleFormat.I_RGB)

    def decode(self, datas: Sequence[Any], stream: Any) -> list[Any]:
        """One batched call; a tensor per input, None where the engine refused it. Raises what nvImageCodec raises.

        ``datas``: each JPEG as ``bytes`` or a 1-D uint8 NumPy array (e.g. over pinned memory), both handed to
        nvImageCodec without a copy (its ``CodeStream`` keeps a reference); anything else is copied into bytes.
        ``stream``: a ``torch.cuda.Stream`` (the stage stream) or None for the current one.
        """
        import torch

        device = torch.device("cuda", self.device_index)
        cuda_stream = (stream if stream is not None else torch.cuda.current_stream(device)).cuda_stream
        code_streams = [self._nvimgcodec.CodeStream(d if isinstance(d, bytes) or hasattr(d, "__array_interface__")
                                                    else bytes(d)) for d in datas]
        with self._lock:
            images = self._decoder.decode(code_streams, params=self._params, cuda_stream=cuda_stream)
        return [None if img is None else torch.as_tensor(img, device=device) for img in images]

    def sibling(self, index: int) -> HwJpegDecoder:
        """The ``index``-th other hardware decoder on the same device (from 1), for another stage thread; this one if
        it cannot be built (they then share this one's lock: correct, only not concurrent). Built once and kept: a
        resident worker's shards, one after another, reuse them."""
        with self._lock:
            if index not in self._siblings:
                try:
                    self._siblings[index] = HwJpegDecoder(
                        self._nvimgcodec, _new_decoder(self._nvimgcodec, self.device_index), self.device_index)
                except Exception as exc:  # noqa: BLE001 - whatever nvImageCodec raises: sharing still decodes
                    logger.warning("hardware JPEG decoder %d could not be built (%s: %s); stage threads share one",
                                   index, type(exc).__name__, exc)
                    self._siblings[index] = self
            return self._siblings[index]


def _new_decoder(module: Any, device_index: int) -> Any:
    """nvImageCodec's ``Decoder`` on ``device_index`` restricted to the hardware backend."""
    return module.Decoder(device_id=device_index, backends=[module.Backend(module.BackendKind.HW_GPU_ONLY)])


def _probe_jpeg() -> tuple[bytes, Any]:
    import numpy as np
    from PIL import Image

    w, h = _PROBE_SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)  # baseline, 4:2:0
    data = buf.getvalue()
    return data, np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # writable: torch.from_numpy warns otherwise


def create_hw_decoder(device_index: int) -> ProbeResult:
    """Try to build a working hardware decoder on ``device_index``: import, create, decode a probe JPEG.

    Returns the decoder and why it was chosen, or None and why not (never raises).
    """
    try:
        from nvidia import nvimgcodec
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install failing in its own way
        return None, f"nvidia-nvimgcodec is not importable ({type(exc).__name__}: {exc})"
    try:
        decoder = _new_decoder(nvimgcodec, device_index)
    except Exception as exc:  # noqa: BLE001 - no driver, no device, no nvJPEG library
        return None, f"nvImageCodec cannot create a hardware decoder ({type(exc).__name__}: {exc})"
    hw = HwJpegDecoder(nvimgcodec, decoder, device_index)
    try:
        import torch

        data, expected = _probe_jpeg()
        out = hw.decode([data], None)[0]
        torch.cuda.synchronize(device_index)
    except Exception as exc:  # noqa: BLE001 - a decode that fails outright: the engine is unusable here
        return None, f"the hardware decoder failed on a probe JPEG ({type(exc).__name__}: {exc})"
    if out is None:
        return None, "this GPU has no hardware JPEG decoder (nvJPEG's hardware backend refused a baseline JPEG)"
    if tuple(out.shape) != expected.shape:
        return None, f"the hardware decoder returned shape {tuple(out.shape)} for a {expected.shape} probe JPEG"
    diff = (out.cpu().int() - torch.from_numpy(expected).int()).abs().max().item()
    if diff > 8:  # decoders differ by a level or two of rounding; more means it decodes something else
        return None, f"the hardware decoder's probe JPEG differs from PIL's by {diff} levels"
    return hw, f"hardware JPEG decoder available (nvImageCodec, probe JPEG within {diff} levels of PIL)"


_probes: dict[int, ProbeResult] = {}
_probe_lock = threading.Lock()


def probe_hw_decoder(device_index: int, create: Callable[[int], ProbeResult] = create_hw_decoder) -> ProbeResult:
    """``create_hw_decoder``'s answer for this device, worked out once per process (a resident worker keeps it)."""
    with _probe_lock:
        if device_index not in _probes:
            _probes[device_index] = create(device_index)
            hw, why = _probes[device_index]
            logger.info("hardware JPEG decode on cuda:%d: %s (%s)", device_index,
                        "available" if hw is not None else "unavailable", why)
        return _probes[device_index]


def select_decoder(device: str, mode: str, env: Mapping[str, str] | None = None) -> DecodeSelection:
    """``choose_decoder`` for a worker device string (``cuda``, ``cuda:1``, ``cpu``) with the process-wide probe."""
    device_type, _, index = device.partition(":")
    if device_type == "cuda" and not index:
        import torch

        index = str(torch.cuda.current_device())
    return choose_decoder(device_type, mode, lambda: probe_hw_decoder(int(index or 0)), env)
