"""Choosing the JPEG decoder (hardware engine, nvJPEG CUDA, CPU), per-image fallback bookkeeping, the summary.

The choice and the bookkeeping are pure logic and run on the CPU; the probe runs against the real nvImageCodec
package (requirements/worker.txt) to show that it falls back cleanly without a GPU. Decoding on the engine itself
needs a GPU with one (the last test, skipped elsewhere with its reason).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from gpu_batch.tests.conftest import run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker import hwdecode
from gpu_batch.worker.batching import Prepared
from gpu_batch.worker.hwdecode import (DECODER_CPU, DECODER_HW, DECODER_NVJPEG, DecodeCounts, HwDecodeUnavailable,
                                       choose_decoder, create_hw_decoder, decode_mode, probe_hw_decoder,
                                       route_decoded)
from gpu_batch.worker.preprocess import letterbox_geometry

_cuda = torch.cuda.is_available()


def _never() -> hwdecode.ProbeResult:
    raise AssertionError("the hardware probe must not run here")


def _absent(_: int) -> hwdecode.ProbeResult:
    return None, "nvidia-nvimgcodec is not importable (ImportError: test)"


def test_the_cpu_decodes_with_pil_and_never_probes() -> None:
    chosen = choose_decoder("cpu", "auto", _never)
    assert chosen.choice.decoder == DECODER_CPU and chosen.hw is None and "cpu" in chosen.choice.reason
    assert choose_decoder("cpu", "off", _never).choice.decoder == DECODER_CPU


def test_hardware_decode_required_on_the_cpu_is_refused_with_the_reason() -> None:
    with pytest.raises(HwDecodeUnavailable, match="runs on cpu, not CUDA"):
        choose_decoder("cpu", "on", _never)


def test_switched_off_keeps_todays_gpu_path_without_probing() -> None:
    chosen = choose_decoder("cuda", "off", _never)
    assert chosen.choice == hwdecode.DecodeChoice(DECODER_NVJPEG, "hardware decode switched off (--hw-decode off)")
    assert chosen.hw is None


def test_package_missing_reports_todays_gpu_path_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # what Python does for a module that is absent
    hw, why = create_hw_decoder(0)
    assert hw is None and why.startswith("nvidia-nvimgcodec is not importable (ModuleNotFoundError")
    chosen = choose_decoder("cuda", "auto", lambda: (hw, why))
    assert chosen.choice.decoder == DECODER_NVJPEG and chosen.hw is None
    assert chosen.choice.reason == f"no hardware decoder: {why}"
    with pytest.raises(HwDecodeUnavailable, match="is unavailable: nvidia-nvimgcodec is not importable"):
        choose_decoder("cuda", "on", lambda: (hw, why))


def test_a_working_probe_selects_the_hardware_decoder_it_built() -> None:
    built = object()  # stands for the decoder the probe returns; never asked to decode here
    chosen = choose_decoder("cuda", "auto", lambda: (built, "hardware JPEG decoder available"))  # type: ignore[arg-type,return-value]
    assert chosen.choice == hwdecode.DecodeChoice(DECODER_HW, "hardware JPEG decoder available") and chosen.hw is built
    assert choose_decoder("cuda", "on", lambda: (built, "ok")).hw is built


@pytest.mark.skipif(_cuda, reason="shows the CPU-only behaviour; this machine has CUDA")
def test_the_real_package_probe_falls_back_cleanly_without_a_gpu() -> None:
    pytest.importorskip("nvidia.nvimgcodec", reason="nvidia-nvimgcodec (requirements/worker.txt) not installed")
    hw, why = create_hw_decoder(0)
    assert hw is None
    assert why.startswith(("nvImageCodec cannot create a hardware decoder", "the hardware decoder failed",
                           "this GPU has no hardware JPEG decoder")), why
    assert choose_decoder("cuda", "auto", lambda: (hw, why)).choice.decoder == DECODER_NVJPEG


def _dockerfile_env(name: str) -> str:
    """The value the worker image's Dockerfile gives ``name`` (its last ``ENV name=value``)."""
    values = [line.split("=", 1)[1].strip() for line in
              (Path(__file__).resolve().parents[1] / "Dockerfile").read_text().splitlines()
              if line.startswith(f"ENV {name}=")]
    assert values, f"gpu_batch/Dockerfile sets no {name}"
    return values[-1]


def test_a_container_without_the_video_driver_libraries_is_named_as_the_reason() -> None:
    assert hwdecode.driver_capability_hint({}) == ""  # outside a container: nothing to say
    for caps in ("compute,utility,video", "all", " Video , compute"):
        assert hwdecode.driver_capability_hint({"NVIDIA_DRIVER_CAPABILITIES": caps}) == "", caps
    hint = hwdecode.driver_capability_hint({"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"})
    assert "NVIDIA_DRIVER_CAPABILITIES='compute,utility'" in hint and "compute,utility,video" in hint
    refused = (None, "this GPU has no hardware JPEG decoder (nvJPEG's hardware backend refused a baseline JPEG)")
    env = {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
    chosen = choose_decoder("cuda", "auto", lambda: refused, env)
    assert chosen.choice.decoder == DECODER_NVJPEG
    assert chosen.choice.reason == f"no hardware decoder: {refused[1]}; {hint}"
    with pytest.raises(HwDecodeUnavailable, match="leaves out 'video'"):
        choose_decoder("cuda", "on", lambda: refused, env)
    # with the capability present the probe's own reason stands alone; a working probe is never second-guessed
    assert choose_decoder("cuda", "auto", lambda: refused, {"NVIDIA_DRIVER_CAPABILITIES": "all"}).choice.reason == (
        f"no hardware decoder: {refused[1]}")
    built = object()
    working = choose_decoder("cuda", "auto", lambda: (built, "ok"), env)  # type: ignore[arg-type,return-value]
    assert working.choice.reason == "ok" and working.hw is built


def test_the_worker_image_asks_the_container_runtime_for_the_video_driver_libraries() -> None:
    """The Batch nodes run the worker in gpu_batch/Dockerfile's image: without ``video`` among its driver capabilities
    the JPEG engines of the A100/H100/H200 cannot be reached from it (``hwdecode.driver_capability_hint``)."""
    caps = _dockerfile_env("NVIDIA_DRIVER_CAPABILITIES")
    assert hwdecode.driver_capability_hint({"NVIDIA_DRIVER_CAPABILITIES": caps}) == ""
    assert {"compute", "utility"} <= {c.strip() for c in caps.split(",")}  # CUDA and nvidia-smi/NVML, as the base
    # and the GPUs themselves: unset, the NVIDIA runtime hook leaves the container as runc would, without any
    assert _dockerfile_env("NVIDIA_VISIBLE_DEVICES") == "all"


def test_the_probe_runs_once_per_process_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hwdecode, "_probes", {})
    calls: list[int] = []

    def create(index: int) -> hwdecode.ProbeResult:
        calls.append(index)
        return _absent(index)

    for _ in range(3):  # e.g. three shards of a resident worker
        assert probe_hw_decoder(0, create)[0] is None
    probe_hw_decoder(1, create)
    assert calls == [0, 1]


def test_the_mode_comes_from_the_option_then_the_environment() -> None:
    assert decode_mode(None, {}) == "auto"
    assert decode_mode(None, {"TRAPBATCH_HW_DECODE": " Off "}) == "off"
    assert decode_mode("on", {"TRAPBATCH_HW_DECODE": "off"}) == "on"
    with pytest.raises(ValueError, match="TRAPBATCH_HW_DECODE='maybe': expected one of auto, on, off"):
        decode_mode(None, {"TRAPBATCH_HW_DECODE": "maybe"})
    with pytest.raises(ValueError):
        choose_decoder("cuda", "sometimes", _never)


def test_cli_mode_errors_are_usage_errors() -> None:
    from gpu_batch.worker.__main__ import _choose_decode, _Usage

    with pytest.raises(_Usage, match="runs on cpu"):
        _choose_decode(argparse.Namespace(hw_decode="on"), {}, "cpu")
    with pytest.raises(_Usage, match="TRAPBATCH_HW_DECODE"):
        _choose_decode(argparse.Namespace(hw_decode=None), {"TRAPBATCH_HW_DECODE": "yes"}, "cpu")
    assert _choose_decode(argparse.Namespace(hw_decode=None), {}, "cpu").choice.decoder == DECODER_CPU


def test_the_engine_probe_runs_beside_the_model_load_and_its_errors_reach_the_shard(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the probe (nvImageCodec's import, libraries, a decoder, a probe JPEG) runs on a side thread: the call
    returns while the probe still works, and the shard asks for the choice only after its model load. Where nothing
    is probed the choice, and its usage errors, come at once, before a model is loaded."""
    import threading

    from gpu_batch.worker.__main__ import _choose_decode_in_background, _settle, _Usage

    with pytest.raises(_Usage, match="runs on cpu"):  # the real choice, at once
        _choose_decode_in_background(argparse.Namespace(hw_decode="on"), {}, "cpu")
    release = threading.Event()
    probed_on: list[str] = []
    ready = hwdecode.DecodeSelection(hwdecode.DecodeChoice(DECODER_NVJPEG, "no hardware decoder: test"))

    def slow_select(device: str, mode: str, env: Any = None) -> hwdecode.DecodeSelection:
        probed_on.append(threading.current_thread().name)
        if mode == "auto":
            assert release.wait(60)
        if mode == "on":
            raise HwDecodeUnavailable("hardware JPEG decode was required but is unavailable: test")
        return ready

    monkeypatch.setattr(hwdecode, "select_decoder", slow_select)
    pending = _choose_decode_in_background(argparse.Namespace(hw_decode=None), {}, "cuda:0")
    assert not release.is_set()  # returned while the probe is still blocked
    release.set()
    assert pending() is ready
    assert probed_on == ["decoder-probe"]

    required = _choose_decode_in_background(argparse.Namespace(hw_decode="on"), {}, "cuda:0")
    with pytest.raises(_Usage, match="required but is unavailable"):
        required()
    _settle(required)  # a shard ending early (exit 3, 5) waits for the probe and keeps its own exit code

    probed_on.clear()
    assert _choose_decode_in_background(argparse.Namespace(hw_decode="off"), {}, "cuda:0")() is ready
    assert probed_on == [threading.current_thread().name]  # nothing to probe: no thread
    with pytest.raises(_Usage, match="TRAPBATCH_HW_DECODE"):  # at once, not when the result is asked for
        _choose_decode_in_background(argparse.Namespace(hw_decode=None), {"TRAPBATCH_HW_DECODE": "yes"}, "cuda:0")


def test_routing_keeps_outputs_of_the_expected_shape_and_falls_back_for_the_rest() -> None:
    items = ["ok", "refused", "wrong-size", "gray", "ok-2", "missing"]
    expected = {"ok": (4, 6), "refused": (4, 6), "wrong-size": (4, 6), "gray": (4, 6), "ok-2": (6, 4),
                "missing": (4, 6)}
    outputs: list[np.ndarray | None] = [np.zeros((4, 6, 3)), None, np.zeros((6, 4, 3)), np.zeros((4, 6, 1)),
                                        np.zeros((6, 4, 3))]  # one short: the last item has no output
    routed = route_decoded(items, outputs, expected.__getitem__, lambda a: a.shape)
    assert [name for name, _ in routed.accepted] == ["ok", "ok-2"]
    assert routed.accepted[0][1] is outputs[0]
    assert routed.fallback == ["refused", "wrong-size", "gray", "missing"]
    assert len(routed.accepted) + len(routed.fallback) == len(items)  # no image lost


def test_decode_counts_count_each_image_once_by_its_last_decoder() -> None:
    counts = DecodeCounts()
    for name in ("a", "b", "c"):
        counts.record(name, DECODER_HW)
    counts.record("c", DECODER_NVJPEG)  # re-staged after an out-of-memory split, and refused the second time
    counts.record("d", DECODER_CPU)
    assert counts.counts() == {DECODER_CPU: 1, DECODER_HW: 2, DECODER_NVJPEG: 1}


def test_the_engine_is_checked_against_the_stored_shape_before_the_exif_rotation() -> None:
    from gpu_batch.worker.devices import _stored_shape

    g = letterbox_geometry(600, 400, 1280, 64)  # after a 90-degree EXIF rotation of a stored 400x600 (h x w) JPEG
    assert _stored_shape(Prepared("r", g, jpeg=b"x", rotation=90)) == (400, 600)
    assert _stored_shape(Prepared("u", g, jpeg=b"x", rotation=180)) == (600, 400)
    assert _stored_shape(Prepared("n", g, jpeg=b"x")) == (600, 400)


@pytest.fixture
def shard(tmp_path: Path, checkpoint: Path) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"img{i}.jpg" for i in range(3)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(textured(320, 240, 70 + i)))
    return write_manifest(tmp_path / "m.json", names, str(checkpoint)), folder


def _args(shard: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    manifest, folder = shard
    return ["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file", str(out),
            "--device", "cpu", "--workers", "2", *extra]


def test_a_cpu_run_reports_its_decoder_and_is_otherwise_unchanged(shard: tuple[Path, Path], tmp_path: Path) -> None:
    proc = run_worker_cli(_args(shard, tmp_path / "o.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = summary_line(proc)
    assert summary["done"] == 3 and summary["failed"] == 0
    assert summary["decode"] == DECODER_CPU and summary["decode_reason"] == "device is cpu: exact PIL decode"
    assert summary["decoded_by"] is None


def test_hardware_decode_required_on_the_cpu_is_exit_2(shard: tuple[Path, Path], tmp_path: Path) -> None:
    proc = run_worker_cli(_args(shard, tmp_path / "o.json"), {"TRAPBATCH_HW_DECODE": "on"})
    assert proc.returncode == 2
    assert "hardware JPEG decode was required" in proc.stderr and not (tmp_path / "o.json").exists()


@pytest.mark.skipif(not _cuda, reason="needs a CUDA GPU (hardware JPEG decode through nvImageCodec)")
def test_gpu_decode_batch_uses_the_engine_and_falls_back_per_image(checkpoint: Path) -> None:
    from PIL import Image

    from gpu_batch.worker.detector import Detector
    from gpu_batch.worker.devices import CudaStages
    from gpu_batch.worker.loader import load_model
    from gpu_batch.worker.preprocess import decode_image

    chosen = hwdecode.select_decoder("cuda", "auto")
    if chosen.hw is None:
        pytest.skip(f"this GPU has no usable hardware JPEG decoder: {chosen.choice.reason}")
    model = load_model(checkpoint, device="cuda")
    stages = CudaStages(model, Detector(model, 0.005), chosen.hw)
    exif = Image.Exif()
    exif[274] = 6
    files = {"plain": jpeg_bytes(textured(640, 480, 1)),
             "rotated": jpeg_bytes(textured(640, 480, 2), exif=exif),
             "gray": jpeg_bytes(textured(640, 480, 3).convert("L")),
             "progressive": jpeg_bytes(textured(640, 480, 4), progressive=True)}  # not baseline: engine refuses
    items = [stages._prepare(data, name) for name, data in files.items()]
    with torch.cuda.stream(stages.stage_stream):
        pixels = stages._decode(items, stages.stage_stream, stages.hw)
    torch.cuda.synchronize()
    for (name, data), px in zip(files.items(), pixels):
        assert px is not None
        want = decode_image(data)
        assert tuple(px.shape) == want.shape, name
        diff = (px.cpu().int() - torch.from_numpy(np.ascontiguousarray(want)).int()).abs()
        assert diff.float().mean().item() < 2.0, name  # decoders differ in rounding and chroma upsampling only
    counts: dict[str, Any] = stages.decoded_by.counts()
    assert counts.get(DECODER_HW, 0) >= 2 and sum(counts.values()) == len(files)


def test_the_probe_compares_against_a_writable_array() -> None:
    """torch.from_numpy on PIL's read-only array warned in every GPU worker's log (seen on an H200, 2026-12-04)."""
    import warnings

    data, expected = hwdecode._probe_jpeg()
    assert data[:2] == b"\xff\xd8" and expected.shape == (480, 640, 3) and expected.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(expected)


class _FakeNvImgCodec:
    """The three names of nvImageCodec that building a hardware decoder uses, recording what was built."""

    class BackendKind:
        HW_GPU_ONLY = "hw-gpu-only"

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.built = fail, []

    def Backend(self, kind: str) -> tuple[str, str]:  # noqa: N802 - nvImageCodec's name
        return ("backend", kind)

    def Decoder(self, device_id: int, backends: list[Any]) -> object:  # noqa: N802 - nvImageCodec's name
        if self.fail:
            raise RuntimeError("no more decoders")
        self.built.append((device_id, backends))
        return object()

    class DecodeParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    class ColorSpec:
        SRGB = "srgb"

    class SampleFormat:
        I_RGB = "i-rgb"


def test_a_second_stage_thread_gets_a_hardware_decoder_of_its_own_or_shares_the_first() -> None:
    module = _FakeNvImgCodec()
    first = hwdecode.HwJpegDecoder(module, object(), 1)
    second = first.sibling(1)
    assert second is not first and second.device_index == 1
    assert module.built == [(1, [("backend", "hw-gpu-only")])]  # the same device, the hardware backend only
    assert first.sibling(1) is second and len(module.built) == 1  # kept: the next shard's threads reuse it
    assert first.sibling(2) not in (first, second) and len(module.built) == 2
    broken = _FakeNvImgCodec(fail=True)
    lone = hwdecode.HwJpegDecoder(broken, object(), 0)
    assert lone.sibling(1) is lone  # sharing one decoder (it has a lock) still decodes


def test_jpegs_reach_the_engine_without_a_copy_as_bytes_or_as_arrays_over_pinned_memory() -> None:
    """nvImageCodec's CodeStream keeps a reference to bytes or a uint8 array; ``bytes(array)`` would copy every JPEG
    on the stage thread (1.6 MB each in the benchmark), and would lose the page-locked memory it may sit in."""
    received: list[Any] = []

    class Module(_FakeNvImgCodec):
        def CodeStream(self, data: Any) -> Any:  # noqa: N802 - nvImageCodec's name
            received.append(data)
            return data

    class Decoder:
        def decode(self, code_streams: list[Any], params: Any, cuda_stream: int) -> list[Any]:
            return [None] * len(code_streams)  # refused: the caller's fallback decodes them

    as_bytes, as_array, as_other = b"\xff\xd8jpeg", np.frombuffer(b"\xff\xd8array", np.uint8), bytearray(b"\xff\xd8x")
    hw = hwdecode.HwJpegDecoder(Module(), Decoder(), 0)
    out = hw.decode([as_bytes, as_array, as_other], SimpleNamespace(cuda_stream=7))
    assert out == [None, None, None]
    assert received[0] is as_bytes and received[1] is as_array  # no copy
    assert isinstance(received[2], bytes) and received[2] == bytes(as_other)
