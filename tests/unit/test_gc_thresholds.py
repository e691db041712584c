"""Loading the function app raises the collector's thresholds (function_app.py's docstring says why)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core import collector

ROOT = Path(__file__).resolve().parents[2]


def test_loading_the_app_sets_the_collectors_thresholds() -> None:
    probe = "import gc; before = gc.get_threshold(); import function_app; print(before, gc.get_threshold())"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=True)
    before, after = done.stdout.strip().rsplit(") (", 1)
    assert before == "(700, 10, 10"  # CPython's default, so the app's setting is what changes it
    assert after == ", ".join(map(str, collector.THRESHOLDS)) + ")"
    assert collector.THRESHOLDS[0] >= 10_000  # raised well past the default, as the module's docstring argues
