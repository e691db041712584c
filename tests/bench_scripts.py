"""Loading a ``bench/`` script as a module, for the tests of the logic some benchmarks hold (bench/ is no package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_bench(script: str) -> ModuleType:
    """``bench/<script>`` as a module named ``bench_<stem>``, registered in ``sys.modules`` first (dataclasses and
    pickling look their module up there while it is executed)."""
    path = ROOT / "bench" / script
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
