"""``--compile``: the torch.compile'd network gives the eager network's detections (CPU, fp32)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_batch.tests.conftest import run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.tests.test_oracle import compare


@pytest.mark.slow  # TorchInductor compiles C++ kernels: minutes on a 2-core CI machine
def test_compiled_worker_matches_eager_worker(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    # Importing torch's compiler in this process (other tests do) writes its default into the variable; the worker
    # would then rightly treat it as explicitly chosen.
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"img{i}.jpg" for i in range(4)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(textured(640, 480, 7 + i)))
    manifest = write_manifest(tmp_path / "m.json", names, str(checkpoint))
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
