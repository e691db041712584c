"""``bench/decode_rates.py`` on the CPU: its variant notation, its PIL rates end to end, and its CUDA paths (engine,
staging through the worker's own ``CudaStages.stage``, the forward load) with CUDA's stream and event calls faked.

Why fakes here: the script's CUDA variants run only on a lent GPU, whose minutes a script error would spend; the
fakes stand in for ``torch.cuda.Stream``/``stream``/``Event`` only, while the decode (nvJPEG's path falls back to
torchvision's CPU decode with the device the CPU), the letterbox and the network are the real ones.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import decode_rates as dr
from gpu_batch.tests.conftest import REPO_ROOT
from gpu_batch.tests.fake_cuda import FakeStream, install
from gpu_batch.tests.imagegen import jpeg_bytes, textured


def test_variants_parse_with_their_modifiers_and_bad_ones_are_named() -> None:
    v = dr.parse_variants("pil:16, engine:2+load+high ,stage:1+share0.3+load,engine:1+pinned,stage:1+b64+load")
    assert [x.label for x in v] == ["pil:16", "engine:2+load+high", "stage:1+load+share0.3", "engine:1+pinned",
                                    "stage:1+load+b64"]
    assert v[3].pinned and not v[0].pinned and v[4].batch == 64 and v[0].batch is None
    assert (v[2].kind, v[2].threads, v[2].load, v[2].high, v[2].share) == ("stage", 1, True, False, 0.3)
    for bad, said in (("gpu:1", "KIND:THREADS"), ("pil:0", "1-64 threads"), ("pil", "KIND:THREADS"),
                      ("engine:1+share0.3", "unknown modifier 'share0.3'"), ("stage:1+share2", "fraction from 0"),
                      ("stage:1+fast", "unknown modifier 'fast'"), ("stage:1+pinned", "unknown modifier 'pinned'"),
                      ("pil:4+b64", "unknown modifier 'b64'"), ("engine:1+b0", "unknown modifier 'b0'")):
        with pytest.raises(ValueError, match=said):
            dr.parse_variants(bad)


def test_every_job_runs_once_whatever_the_threads_and_an_error_is_raised_after_all_stop() -> None:
    seen: list[int] = []
    dr.run_on_threads(list(range(50)), 4, lambda _i, job: seen.append(job))
    assert sorted(seen) == list(range(50))

    def fails(_i: int, job: int) -> None:
        if job == 7:
            raise RuntimeError("decoder broke")

    with pytest.raises(RuntimeError, match="decoder broke"):
        dr.run_on_threads(list(range(20)), 3, fails)


def test_the_script_measures_pil_here_and_skips_cuda_variants_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(textured(320, 240, seed=i)))
    record = tmp_path / "rates.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "decode_rates.py"), "--images-dir", str(folder),
                           "--variants", "pil:1,pil:2,engine:1+load,stage:2", "--record", str(record)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(record.read_text())
    assert data["images"] == 4 and data["device"] == "cpu"
    assert data["variants"]["pil:1"]["img_s"] > 0 and data["variants"]["pil:2"]["img_s"] > 0
    assert data["variants"]["engine:1+load"] == {"skipped": "needs CUDA (this machine has none)"}
    assert "stage:2" in proc.stdout and "skipped" in proc.stdout


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch)


class FakeHw:
    """The hardware decoder's two calls: a batched decode (None for what it refuses) and a sibling per thread."""

    def __init__(self) -> None:
        self.calls = 0
        self.siblings: list[int] = []

    def decode(self, datas: list[bytes], stream: Any) -> list[Any]:
        from gpu_batch.worker.preprocess import decode_image

        self.calls += 1
        return [None if i == 0 else torch.from_numpy(decode_image(d).copy()) for i, d in enumerate(datas)]

    def sibling(self, index: int) -> FakeHw:
        self.siblings.append(index)
        return self


def _gpu(checkpoint: Path, hw: Any) -> dr.Gpu:
    from gpu_batch.worker.detector import Detector
    from gpu_batch.worker.loader import load_model

    gpu = dr.Gpu.__new__(dr.Gpu)
    gpu.model = load_model(checkpoint, device="cpu")
    gpu.detector = Detector(gpu.model, 0.005)
    gpu.hw, gpu.hw_reason = hw, "fake"
    gpu.x = torch.rand(2, 3, 64, 64)
    return gpu


def _jpegs(n: int) -> list[bytes]:
    return [jpeg_bytes(textured(160, 120, seed=i)) for i in range(n)]


def test_a_variants_own_batch_size_wins_over_the_runs(fake_cuda: None, checkpoint: Path) -> None:
    hw = FakeHw()
    dr.measure(dr.Variant("engine", 1, batch=5), _jpegs(10), 4, 2, _gpu(checkpoint, hw))
    assert hw.calls == 2  # 5 + 5, not 4 + 4 + 2


def test_engine_variant_decodes_in_batches_on_each_threads_own_decoder_and_stream(fake_cuda: None,
                                                                                  checkpoint: Path) -> None:
    hw = FakeHw()
    gpu = _gpu(checkpoint, hw)
    figures = dr.engine_rate(gpu, _jpegs(10), dr.Variant("engine", 2, high=True), batch=4)
    assert hw.calls == 3 and hw.siblings == [1]  # batches of 4, 4, 2; the second thread's decoder
    assert figures["refused"] == 3 and figures["img_s"] > 0 and figures["call_ms"] is not None
    assert [s.priority for s in FakeStream.made] == [-1, -1] and sum(s.synced for s in FakeStream.made) == 3
    assert dr.engine_rate(_gpu(checkpoint, None), _jpegs(2), dr.Variant("engine", 1), 4) == {
        "skipped": "no hardware JPEG decoder: fake"}


def test_pinned_engine_variant_hands_the_decoder_arrays_copied_before_the_clock(
        fake_cuda: None, checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    seen: list[Any] = []

    class Recording(FakeHw):
        def decode(self, datas: list[Any], stream: Any) -> list[Any]:
            seen.extend(datas)
            return super().decode([bytes(d) for d in datas], stream)

    # torch's pinned allocator needs CUDA: here the copies are plain arrays, what matters is what reaches the decoder
    monkeypatch.setattr(dr, "pinned_copies", lambda datas: [np.frombuffer(d, np.uint8).copy() for d in datas])
    jpegs = _jpegs(5)
    figures = dr.engine_rate(_gpu(checkpoint, Recording()), jpegs, dr.Variant("engine", 1, pinned=True), batch=4)
    assert figures["refused"] == 2 and len(seen) == 5  # one refusal a batch, as the fake decoder does
    assert all(isinstance(d, np.ndarray) and d.tobytes() == j for d, j in zip(seen, jpegs))


def test_stage_variant_runs_the_workers_own_prepare_and_stage_under_a_forward_load(fake_cuda: None,
                                                                                   checkpoint: Path) -> None:
    gpu = _gpu(checkpoint, None)  # the nvJPEG path: torchvision's decode_jpeg, here on the CPU
    datas = _jpegs(9) + [b"not a jpeg"]
    figures = dr.measure(dr.Variant("stage", 2, load=True, high=True, share=0.5), datas, 4, 2, gpu)
    assert figures["failed"] == 1  # the broken file, reported as the worker reports it, nothing else lost
    assert figures["decoded_by"] == {"cpu": 4, "nvjpeg-cuda": 5}  # half the JPEGs decoded on the fetch threads
    assert figures["img_s"] > 0 and figures["load_img_s"] >= 0 and figures["call_ms"] is not None
    assert figures["stage_letterbox_gpu_s"] > 0  # the stage's own split, as the worker reports it
    assert FakeStream.made and {s.priority for s in FakeStream.made} == {-1}


def test_a_staging_that_fails_is_reported_and_the_variant_ends(fake_cuda: None, checkpoint: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage thread that raises must not leave the producer waiting on a full queue (a lent GPU's call would hang
    to its limit): the variant ends with the error, which the script records and goes on."""
    from gpu_batch.worker import devices

    def broken(self: Any, items: Any, pad_to: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access (simulated)")

    monkeypatch.setattr(devices.CudaStages, "stage", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        dr.stage_rate(_gpu(checkpoint, None), _jpegs(40), dr.Variant("stage", 1), batch=2, workers=2)
