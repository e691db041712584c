"""The app, the dev host and the worker type-check under ``mypy --strict`` (pyproject.toml [tool.mypy])."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STRICT = ["core", "adapters", "devhost", "cli", "activities", "orchestrations", "api", "function_app.py",
          "tests/orchestrations", "gpu_batch/worker", "gpu_batch/pool", "gpu_batch/manifest.py", "gpu_batch/layout.py"]


def test_strict_packages_type_check() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", *STRICT], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
