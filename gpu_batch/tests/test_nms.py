"""``gpu_batch.worker.nms`` against ``torchvision.ops.batched_nms``: same indices in the same order, in both of
torchvision's strategies, through the fallback too; the thresholds match the installed torchvision; and a worker
process on the CPU path never imports the torchvision package."""
from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
import torchvision

from gpu_batch.tests.conftest import REPO_ROOT, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker import nms
from gpu_batch.worker.nms import batched_nms

IOU = 0.45
SMALL = [0, 1, 2, 7, 60, 400, 999, 1000]  # numel <= 4000: torchvision's coordinate offset on the CPU
LARGE = [1001, 1700, 3000]  # numel > 4000: its per-category loop on the CPU


def _inputs(n: int, seed: int, categories: int, ties: bool, far_ids: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlapping boxes, scores (with many equal values when ``ties``), categories; some exact duplicates."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * (200 if far_ids else 1200)
    wh = torch.rand(n, 2, generator=g) * (10 if far_ids else 150) + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = (torch.randint(0, 12, (n,), generator=g).float() / 12 if ties else torch.rand(n, generator=g))
    groups = torch.randint(0, categories, (n,), generator=g)
    if far_ids:
        groups = groups + 20_000  # large offsets: float32 rounding of the shifted boxes changes some IoUs
    if n >= 4:  # exact duplicates (same box, score and category) and same boxes in other categories
        boxes[n // 2: n // 2 + n // 4] = boxes[: n // 4]
        scores[n // 2: n // 2 + n // 8] = scores[: n // 8]
        groups[n // 2: n // 2 + n // 8] = groups[: n // 8]
    return boxes, scores, groups


@pytest.fixture
def strategies(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts the strategy ``batched_nms`` used (wrapping, not replacing, its two functions)."""
    calls = {"offset": 0, "loop": 0}

    def spy(name: str, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def wrapped(*args: Any) -> torch.Tensor:
            calls[name] += 1
            return fn(*args)
        return wrapped

    monkeypatch.setattr(nms, "_offset", spy("offset", nms._offset))
    monkeypatch.setattr(nms, "_per_group", spy("loop", nms._per_group))
    nms.reset_backend()
    yield calls
    nms.reset_backend()


def _assert_same(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, what: str) -> torch.Tensor:
    mine = batched_nms(boxes, scores, groups, IOU)
    theirs = torchvision.ops.batched_nms(boxes, scores, groups, IOU)
    assert mine.dtype == theirs.dtype == torch.int64, what
    assert mine.tolist() == theirs.tolist(), what
    return mine


@pytest.mark.parametrize("n", SMALL + LARGE)
def test_same_indices_and_order_as_torchvision_on_random_inputs(n: int, strategies: dict[str, int]) -> None:
    kept_any = 0
    for seed in range(6):
        for categories in (1, 3, 97, min(max(n, 1), 500)):  # up to one per box
            for ties in (False, True):
                kept = _assert_same(*_inputs(n, seed, categories, ties), f"n={n} seed={seed} c={categories} t={ties}")
                kept_any += len(kept)
                if n >= 4 and categories == 1:
                    assert len(kept) < n  # the inputs do overlap: something was suppressed
    assert nms.backend().source == nms.SOURCE_LIBRARY
    assert kept_any >= (n > 0)
    if n == 0:
        return
    expected = "loop" if n * 4 > nms.CPU_LOOP_ABOVE_NUMEL else "offset"
    other = "offset" if expected == "loop" else "loop"
    assert strategies[expected] == 48 and strategies[other] == 0, strategies


def test_empty_input_gives_an_empty_int64_tensor(strategies: dict[str, int]) -> None:
    empty = torch.empty((0, 4))
    kept = _assert_same(empty, torch.empty((0,)), torch.empty((0,), dtype=torch.int64), "empty")
    assert kept.shape == (0,)


def test_the_strategies_disagree_on_some_inputs_and_each_size_follows_torchvisions_choice(
        strategies: dict[str, int]) -> None:
    """Far-apart category ids make the offset strategy round the shifted boxes: it then keeps other boxes than the
    per-category loop. Parity therefore needs torchvision's size threshold, not just its arithmetic."""
    op = nms.backend().nms
    assert op is not None
    disagreeing = 0
    for n in (300, 1000, 1001, 2000):
        for seed in range(12):
            boxes, scores, groups = _inputs(n, seed, 3, ties=False, far_ids=True)
            mine = _assert_same(boxes, scores, groups, f"far ids n={n} seed={seed}")
            by_offset = nms._offset(op, boxes, scores, groups, IOU).tolist()
            by_loop = nms._per_group(op, boxes, scores, groups, IOU).tolist()
            if by_offset != by_loop:
                disagreeing += 1
                assert mine.tolist() == (by_loop if n * 4 > nms.CPU_LOOP_ABOVE_NUMEL else by_offset)
    assert disagreeing >= 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_as_torchvision_on_cuda_in_both_strategies() -> None:
    nms.reset_backend()
    for n in (500, 26_000):  # CUDA's threshold is 25,000 boxes
        for seed in range(3):
            boxes, scores, groups = (t.cuda() for t in _inputs(n, seed, 97, ties=seed == 1))
            mine = batched_nms(boxes, scores, groups, IOU)
            assert mine.device.type == "cuda"
            assert mine.tolist() == torchvision.ops.batched_nms(boxes, scores, groups, IOU).tolist()


def test_thresholds_match_the_installed_torchvision() -> None:
    """The guard for torchvision upgrades: this module copies logic from one torchvision version."""
    installed = importlib.metadata.version("torchvision").split("+")[0]
    spec = importlib.util.find_spec("torchvision")
    assert spec is not None and spec.submodule_search_locations
    source = (Path(list(spec.submodule_search_locations)[0]) / "ops" / "boxes.py").read_text(encoding="utf-8")
    hint = (f"torchvision {installed} is installed; gpu_batch/worker/nms.py reproduces batched_nms of torchvision "
            f"{nms.MATCHES_TORCHVISION}. Re-read batched_nms, _batched_nms_coordinate_trick and "
            "_batched_nms_vanilla in torchvision/ops/boxes.py, update nms.py to match (size thresholds, offset "
            "arithmetic, loop and sort, the compiled library's name), set MATCHES_TORCHVISION, and rerun this file")
    assert installed == nms.MATCHES_TORCHVISION, hint
    choice = re.search(r'boxes\.numel\(\) > \((\d[\d_]*) if boxes\.device\.type == "cpu" else (\d[\d_]*)\)', source)
    assert choice is not None, hint
    assert (int(choice[1]), int(choice[2])) == (nms.CPU_LOOP_ABOVE_NUMEL, nms.CUDA_LOOP_ABOVE_NUMEL), hint
    assert "max_coordinate + torch.tensor(1).to(boxes)" in source and "sort(descending=True)" in source, hint


def test_the_library_is_torchvisions_compiled_ops_library() -> None:
    path = nms.find_ops_library()
    assert path is not None and path.parent == Path(torchvision.__file__).parent
    assert path.name.startswith("_C") and any(path.name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)


@pytest.mark.parametrize("locator", ["missing", "unloadable"])
def test_without_the_library_it_falls_back_to_the_torchvision_package(
        locator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        strategies: dict[str, int]) -> None:
    bogus = tmp_path / "_C_stable.so"
    bogus.write_bytes(b"not a shared library")
    monkeypatch.setattr(nms, "find_ops_library", lambda: None if locator == "missing" else bogus)
    nms.reset_backend()
    with caplog.at_level(logging.INFO, logger="gpu_batch.worker.nms"):
        for n in (50, 1500):
            _assert_same(*_inputs(n, 3, 5, ties=True), f"fallback n={n}")
    assert nms.backend().source == nms.SOURCE_PACKAGE
    assert strategies == {"offset": 0, "loop": 0}  # torchvision's own batched_nms ran
    reasons = [r.getMessage() for r in caplog.records if r.name == "gpu_batch.worker.nms"]
    assert len(reasons) == 1 and ("not found" if locator == "missing" else "loading") in reasons[0], reasons


def test_a_cpu_worker_process_never_imports_torchvision(checkpoint: Path, tmp_path: Path) -> None:
    """A fresh process imports the CPU path and runs a two-image shard (with detections, so NMS ran). Nor does the
    model load import sympy (``yolov5_modules.FusedConv2d``: the meta device's first use imported it)."""
    names = []
    for i, (w, h) in enumerate([(640, 480), (500, 700)]):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg_bytes(textured(w, h, seed=i)))
        names.append(f"{i}.jpg")
    manifest = write_manifest(tmp_path / "m.json", names, str(checkpoint))
    out = tmp_path / "out.json"
    code = (
        "import json, sys\n"
        "import gpu_batch.worker.pipeline\n"
        "after_import = sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision')\n"
        "from gpu_batch.worker.__main__ import main\n"
        f"rc = main(['--manifest-file', {str(manifest)!r}, '--image-root', {str(tmp_path)!r}, '--output-file', "
        f"{str(out)!r}, '--device', 'cpu', '--workers', '2', '--log-level', 'WARNING'])\n"
        "from gpu_batch.worker import nms\n"
        "after_shard = sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'sympy'))\n"
        "print(json.dumps({'rc': rc, 'after_import': after_import, 'after_shard': after_shard, "
        "'backend': nms.backend().source}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    summary, report = lines[-2], lines[-1]
    assert report == {"rc": 0, "after_import": [], "after_shard": [], "backend": nms.SOURCE_LIBRARY}, report
    assert summary["done"] == 2
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert all(img.get("detections") for img in doc["images"]), "no detections: NMS had nothing to do"
    print(f"worker import_s {summary['import_s']} start_to_first_batch_s {summary['start_to_first_batch_s']}")
