"""The in-memory control-plane benchmark (``bench/control_plane_inmemory.py``) at a tiny size, so it keeps running as
the activities under it change (it stopped once: the merge parts began writing through ``BlockBlobWriter``, which
asks the store for ``service`` blob clients, and the benchmark's in-memory store had none). The figures are for
bench/RESULTS.md, not for this test: it checks that every stage runs and prints its output's digest, and that a
merge part that composes the workers' views (``VIEWS=1``) writes the same bytes as one that reads the entries."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("merge", "search", "exports")


def run_bench(images: int, **env: str) -> dict[str, str]:
    """The benchmark over ``images`` images, one repeat: each stage's output digest."""
    proc = subprocess.run([sys.executable, "bench/control_plane_inmemory.py", str(images)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "R": "1", **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in STAGES:
        assert re.search(rf"^{stage} +[0-9.]+ us/image$", proc.stdout, re.MULTILINE), proc.stdout
    digests = dict(re.findall(r"^(\w+) out ([0-9a-f]{32})$", proc.stdout, re.MULTILINE))
    assert set(digests) == set(STAGES), proc.stdout
    return digests


def test_every_stage_runs_and_the_workers_views_give_the_same_bytes() -> None:
    # 3,000 images: three shards of 1,000 and two folders of 2,000 (the benchmark's sizes), in a few seconds
    assert run_bench(3000, VIEWS="1") == run_bench(3000)
