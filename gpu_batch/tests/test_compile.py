"""``--compile``: the torch.compile'd network gives the eager network's detections (CPU, fp32); where the machine
lacks what Triton builds its kernel launchers with (a C compiler, Python's headers), the shard runs eager and says why.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_batch.tests.conftest import run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.tests.test_oracle import compare


def _shard(tmp_path: Path, checkpoint: Path, n: int, size: tuple[int, int], seed: int) -> tuple[Path, Path]:
    """``n`` textured JPEGs in ``tmp_path/images`` and a local manifest naming them."""
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"img{i}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(textured(size[0], size[1], seed + i)))
    return folder, write_manifest(tmp_path / "m.json", names, str(checkpoint))


@pytest.mark.slow  # TorchInductor compiles C++ kernels: minutes on a 2-core CI machine
def test_compiled_worker_matches_eager_worker(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    # Importing torch's compiler in this process (other tests do) writes its default into the variable; the worker
    # would then rightly treat it as explicitly chosen.
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    folder, manifest = _shard(tmp_path, checkpoint, 4, (640, 480), 7)
    results = {}
    node = tmp_path / "batch-node-shared"  # as on an Azure Batch node: the compile cache must land there
    for mode, extra in (("eager", []), ("compiled", ["--compile"])):
        out = tmp_path / f"{mode}.json"
        proc = run_worker_cli(["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file",
                               str(out), "--device", "cpu", "--workers", "2", "--batch-size", "2", *extra],
                              env_extra={"AZ_BATCH_NODE_SHARED_DIR": str(node)}, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert summary_line(proc)["compiled"] is (mode == "compiled")
        results[mode] = {e["file"]: e for e in json.loads(out.read_text())["images"]}
    assert compare(results["compiled"], results["eager"], coord_tol=1e-3, conf_tol=0.005) >= 8
    cache = node / "trapbatch" / "inductor-cache"
    assert cache.is_dir() and any(p.is_file() for p in cache.rglob("*"))  # a later shard's compile starts warm


def test_compile_blocker_names_what_triton_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton builds each kernel's launcher with a C compiler (CC, gcc or clang) against Python.h
    (triton/runtime/build.py); without either, a compiled shard fails at its first batch, on every attempt."""
    import sysconfig

    from gpu_batch.worker.caches import compile_blocker

    bin_dir, include = tmp_path / "bin", tmp_path / "include"
    bin_dir.mkdir()
    include.mkdir()
    paths = dict(sysconfig.get_paths(), include=str(include))
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: paths)
    reason = compile_blocker({"PATH": str(bin_dir)})
    assert reason is not None and "no C compiler" in reason and "install gcc" in reason
    gcc = bin_dir / "gcc"
    gcc.write_text("#!/bin/sh\n")
    gcc.chmod(0o755)
    reason = compile_blocker({"PATH": str(bin_dir)})
    assert reason is not None and "Python.h" in reason and "-dev" in reason
    (include / "Python.h").write_text("")
    assert compile_blocker({"PATH": str(bin_dir)}) is None
    gcc.unlink()
    cc = tmp_path / "my-cc"
    cc.write_text("#!/bin/sh\n")
    cc.chmod(0o755)
    assert compile_blocker({"PATH": str(bin_dir), "CC": str(cc)}) is None  # CC, as Triton reads it


def test_compile_without_a_c_compiler_runs_eager_and_says_why(tmp_path: Path, checkpoint: Path) -> None:
    folder, manifest = _shard(tmp_path, checkpoint, 2, (320, 240), 3)
    proc = run_worker_cli(["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file",
                           str(tmp_path / "out.json"), "--device", "cpu", "--workers", "2", "--compile"],
                          env_extra={"PATH": str(tmp_path / "no-such-bin"), "CC": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_line(proc)
    assert summary["compiled"] is False and summary["done"] == 2 and "no C compiler" in summary["compile_skipped"]
    assert "--compile was asked for, but no C compiler" in proc.stderr


def test_the_detect_heads_grids_are_made_inside_a_compiled_graph_and_never_cached_from_it(checkpoint: Path) -> None:
    """A grid cached from inside a compiled graph is a graph output; under CUDA graphs (``reduce-overhead``) the next
    replay overwrites it while the cache still holds it. Compiled (no C compiler needed with ``aot_eager``), the
    head makes its grids in the graph, leaves the cache alone and gives the eager network's output."""
    import torch

    from gpu_batch.worker.loader import load_model
    from gpu_batch.worker.yolov5_modules import Detect

    network = load_model(checkpoint, device="cpu").network
    (head,) = [m for m in network.modules() if isinstance(m, Detect)]
    x = torch.rand(2, 3, 128, 192)
    with torch.inference_mode():
        compiled = torch.compile(network, backend="aot_eager", dynamic=False)
        got = [compiled(x)[0] for _ in range(2)]
        assert "_trapbatch_grids" not in head.__dict__ or not head.__dict__["_trapbatch_grids"]
        want = network(x)[0]  # eager: fills the cache, as before
    assert head.__dict__["_trapbatch_grids"]
    for out in got:
        torch.testing.assert_close(out, want)
