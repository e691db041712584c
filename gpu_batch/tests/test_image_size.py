"""Every successful entry carries its image's ``width``/``height`` as decoded, on every decode path; failures none.

Why it matters: the exports turn MegaDetector's normalized boxes into pixels (COCO) from these two numbers instead of
reading every image again (trapbatch issue 11). The expected sizes here come from how each test image was built
(stored size, and the EXIF orientation MegaDetector's ``load_image`` turns by: 3 = 180 degrees, 6 and 8 = 90, the
mirrored ones not at all), never from the worker's own decode. Paths covered on the CPU:

* the CPU stages end to end (``run_images``: PIL decode and OpenCV letterbox in the fetch threads);
* the CUDA stages' own code run with CPU tensors: the JPEG-header geometry with the EXIF turn, the batched
  ``decode_jpeg`` and its rotation, the exact PIL decode of what nvJPEG should not take (truncated, PNG), and the
  exact-PIL fallback when the JPEG decoder refuses a file or disagrees on its size.

The oracle test (test_oracle.py) also compares the sizes with MegaDetector's own ``--include_image_size`` output, on
CPU and, where a GPU is present, with nvJPEG.
"""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker import devices
from gpu_batch.worker.batching import Prepared
from gpu_batch.worker.detector import Detector
from gpu_batch.worker.loader import LoadedModel, load_model
from gpu_batch.worker.pipeline import PipelineOptions, ShardSummary, run_images
from gpu_batch.worker.preprocess import letterbox_torch_batch
from gpu_batch.worker.results import FileSink, ResultWriter
from gpu_batch.worker.sources import LocalFolderSource

IMAGE_SIZE = 256  # a small network input keeps the forward passes cheap; the sizes do not depend on it


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[274] = orientation
    return exif


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _images() -> dict[str, tuple[bytes, tuple[int, int] | None]]:
    """name -> (bytes, (width, height) MegaDetector decodes, or None for an image it fails)."""
    whole = jpeg_bytes(textured(320, 240, 5))
    gray16 = Image.fromarray((np.arange(60 * 90, dtype=np.uint16).reshape(60, 90) * 7))
    return {
        "plain.jpg": (jpeg_bytes(textured(320, 240, 1)), (320, 240)),
        "portrait.jpg": (jpeg_bytes(textured(180, 300, 2)), (180, 300)),
        "rot6.jpg": (jpeg_bytes(textured(400, 300, 3), exif=_exif(6)), (300, 400)),  # turned 90 degrees
        "rot8.jpg": (jpeg_bytes(textured(400, 300, 4), exif=_exif(8)), (300, 400)),  # turned 90 degrees
        "rot3.jpg": (jpeg_bytes(textured(400, 300, 6), exif=_exif(3)), (400, 300)),  # turned 180 degrees
        "mirror5.jpg": (jpeg_bytes(textured(400, 300, 7), exif=_exif(5)), (400, 300)),  # mirrored: not turned
        "gray.jpg": (jpeg_bytes(textured(200, 100, 8).convert("L")), (200, 100)),
        "rgba.png": (_png(textured(150, 90, 9).convert("RGBA")), (150, 90)),
        "truncated.jpg": (whole[: len(whole) * 2 // 3], (320, 240)),  # decoded with gray fill, as MegaDetector does
        "broken.jpg": (b"not an image at all", None),
        "gray16.png": (_png(gray16), None),  # MegaDetector opens it, then fails it at inference
    }


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> LoadedModel:
    # Letterboxed to a multiple of 64, the stride of the P6 test network (the worker picks 64 only at 1280 pixels).
    return replace(load_model(checkpoint, device="cpu", image_size=IMAGE_SIZE), stride=64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sized")
    for name, (data, _) in _images().items():
        (root / name).write_bytes(data)
    return root


def _assert_sizes(entries: dict[str, dict[str, Any]], names: list[str]) -> None:
    expected = {name: size for name, (_, size) in _images().items() if name in names}
    assert set(entries) == set(expected)
    for name, size in expected.items():
        entry = entries[name]
        if size is None:
            assert entry["failure"] and "width" not in entry and "height" not in entry, entry
        else:
            assert "failure" not in entry and isinstance(entry["detections"], list), entry
            assert (entry["width"], entry["height"]) == size, name
            assert type(entry["width"]) is int and type(entry["height"]) is int


def test_cpu_pipeline_writes_the_decoded_size_of_every_success(model: LoadedModel, folder: Path,
                                                               tmp_path: Path) -> None:
    names = sorted(_images())
    sink = FileSink(tmp_path / "out.json")
    writer = ResultWriter(sink, {"detector": "test"}, flush_seconds=60)
    writer.start()
    try:
        run_images(names, LocalFolderSource(folder), model, writer, 0.005,
                   PipelineOptions(batch_size=3, workers=2), ShardSummary(images=len(names)))
    finally:
        writer.close()
    data = sink.read()
    assert data is not None
    entries = {e["file"]: e for e in json.loads(data)["images"]}
    _assert_sizes(entries, names)
    assert sum(len(e.get("detections") or []) for e in entries.values()) > 0  # real detections, scaled by the sizes


def _cuda_stages_on_cpu(model: LoadedModel, cpu_decode_share: float = 0.0) -> devices.CudaStages:
    """The CUDA stages without their CUDA streams: ``_prepare`` and ``_decode`` then run on CPU tensors."""
    stages = devices.CudaStages.__new__(devices.CudaStages)
    stages.model, stages.detector = model, Detector(model, 0.005)
    stages.hw, stages.decoded_by = None, devices.DecodeCounts()  # nvJPEG's path (the hardware engine needs a GPU)
    stages.cpu_share = devices.ShareCounter(cpu_decode_share)
    stages._upload = torch.from_numpy  # type: ignore[method-assign] # "on the GPU": here, the CPU tensor
    return stages


def _through_cuda_stages(stages: devices.CudaStages, folder: Path, names: list[str]
                         ) -> tuple[dict[str, dict[str, Any]], dict[str, Prepared]]:
    """Each image through the CUDA stages' prepare, decode, letterbox and entries (failures as the driver makes them)."""
    from gpu_batch.worker.batching import prepared_failure

    source = LocalFolderSource(folder)
    entries: dict[str, dict[str, Any]] = {}
    prepared: dict[str, Prepared] = {}
    for name in names:
        it = stages.prepare(source, name)
        prepared[name] = it
        if it.failure is not None:
            entries[name] = prepared_failure(it)
            continue
        (pixels,) = stages._decode([it])
        if pixels is None or it.failure is not None:
            entries[name] = prepared_failure(it)
            continue
        g = it.geometry
        assert g is not None
        assert tuple(pixels.shape) == (g.orig_h, g.orig_w, 3), name  # the decoded pixels have the written size
        batch = letterbox_torch_batch([pixels], g)
        (entry,) = devices._entries(stages.detector, [it], stages.detector.forward(batch))
        entries[name] = entry
    return entries, prepared


def test_cuda_stages_write_the_decoded_size_from_the_jpeg_header_and_the_exact_decode(model: LoadedModel,
                                                                                      folder: Path) -> None:
    names = sorted(_images())
    entries, prepared = _through_cuda_stages(_cuda_stages_on_cpu(model), folder, names)
    _assert_sizes(entries, names)
    # Which path each image took: the JPEG decoder for plain JPEGs (EXIF turns included), PIL for the rest.
    header_path = {n for n, it in prepared.items() if it.rotation or it.geometry is not None and it.pixels is None}
    assert {"plain.jpg", "portrait.jpg", "rot6.jpg", "rot8.jpg", "rot3.jpg", "mirror5.jpg", "gray.jpg"} <= header_path
    assert (prepared["rot6.jpg"].rotation, prepared["rot8.jpg"].rotation, prepared["rot3.jpg"].rotation) == (270, 90,
                                                                                                             180)
    assert prepared["truncated.jpg"].pixels is not None and prepared["rgba.png"].pixels is not None


def test_the_cpu_decoded_share_of_jpegs_is_decoded_exactly_uploaded_and_sized_alike(model: LoadedModel,
                                                                                    folder: Path) -> None:
    from gpu_batch.worker.preprocess import decode_image

    names = ["plain.jpg", "portrait.jpg", "rot6.jpg", "rot8.jpg", "rot3.jpg", "gray.jpg"]
    stages = _cuda_stages_on_cpu(model, cpu_decode_share=0.5)
    entries, prepared = _through_cuda_stages(stages, folder, names)
    _assert_sizes(entries, names)
    on_cpu = [n for n in names if prepared[n].uploaded is not None]
    assert on_cpu == ["portrait.jpg", "rot8.jpg", "gray.jpg"]  # every other JPEG, spread over the shard
    for name in on_cpu:  # PIL's exact pixels (EXIF turn applied), uploaded; nothing left on the host
        it = prepared[name]
        assert it.jpeg is None and it.pixels is None and it.rotation == 0
        assert it.uploaded is not None
        assert np.array_equal(it.uploaded.numpy(), decode_image((folder / name).read_bytes()))
    assert all(prepared[n].jpeg is not None for n in names if n not in on_cpu)
    assert stages.decoded_by.counts() == {"cpu": 3, "nvjpeg-cuda": 3}


def test_a_cpu_decoded_jpeg_whose_upload_fails_is_staged_from_the_host_not_failed(model: LoadedModel,
                                                                                  folder: Path) -> None:
    """Out of GPU memory on a fetch thread's upload says nothing about the photo: it must reach the network."""
    names = ["plain.jpg", "portrait.jpg", "rot6.jpg", "gray.jpg"]
    stages = _cuda_stages_on_cpu(model, cpu_decode_share=1.0)

    def no_memory(pixels: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    stages._upload = no_memory  # type: ignore[method-assign]
    entries, prepared = _through_cuda_stages(stages, folder, names)
    _assert_sizes(entries, names)
    assert not any("failure" in e for e in entries.values())
    assert all(prepared[n].pixels is not None and prepared[n].uploaded is None for n in names)  # kept on the host
    assert stages.decoded_by.counts() == {"cpu": 4}


@pytest.mark.parametrize("refusal", ["raises", "wrong size"])
def test_cuda_stages_exact_pil_fallback_keeps_the_decoded_size(model: LoadedModel, folder: Path, refusal: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """When the JPEG decoder refuses a file or returns another size, the exact PIL decode decides, size included."""
    def refusing_decode(data: Any, device: Any = None) -> Any:
        if refusal == "raises":
            raise RuntimeError("nvJPEG refused it (simulated)")
        one = torch.zeros((3, 7, 5), dtype=torch.uint8)
        return [one for _ in data] if isinstance(data, list) else one

    monkeypatch.setattr(devices, "decode_jpeg_rgb", refusing_decode)
    names = ["plain.jpg", "portrait.jpg", "rot6.jpg", "rot8.jpg", "gray.jpg", "broken.jpg"]
    stages = _cuda_stages_on_cpu(model)
    entries, prepared = _through_cuda_stages(stages, folder, names)
    _assert_sizes(entries, names)
    for name in names[:-1]:  # all of them went through the fallback
        it = prepared[name]
        assert it.jpeg is None and it.pixels is not None, name


def test_pixels_reach_the_device_without_the_read_only_warning_in_every_workers_log() -> None:
    """PIL's pixels are a read-only array; ``torch.from_numpy`` on one warns once per process, i.e. in every GPU
    worker's log whenever it uploads a PNG or a CPU-decoded JPEG. A fresh process, warnings as errors (torch warns
    only once a process, so an earlier test could have used up the warning here)."""
    import subprocess
    import sys

    from gpu_batch.tests.conftest import REPO_ROOT

    code = ("import numpy as np, torch\n"
            "from gpu_batch.worker.devices import _to_device\n"
            "a = np.frombuffer(bytes(range(24)), np.uint8).reshape(2, 4, 3)\n"
            "assert not a.flags.writeable\n"
            "t = _to_device(a, torch.device('cpu'))\n"
            "assert t.shape == (2, 4, 3) and t.dtype == torch.uint8 and t.flatten().tolist() == list(range(24))\n")
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
