"""Loading the function app raises the collector's thresholds and keeps the Azure SDK's per-request logs out of the
host's (function_app.py's docstring says why)."""
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


def test_loading_the_app_keeps_the_sdks_request_logs_and_lets_its_warnings_through() -> None:
    """The Python worker hands the host INFO and above: without this, each blob request of an activity (azure-core's
    HttpLoggingPolicy, INFO) would be a trace in Application Insights (gpu_batch.sdk_logging)."""
    probe = ("import logging; logging.getLogger().setLevel(logging.INFO); "
             "sdk = logging.getLogger('azure.core.pipeline.policies.http_logging_policy'); "
             "before = sdk.isEnabledFor(logging.INFO); import function_app; "
             "print(before, sdk.isEnabledFor(logging.INFO), sdk.isEnabledFor(logging.WARNING), "
             "logging.getLogger('gpu_batch').isEnabledFor(logging.INFO))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=True)
    assert done.stdout.split() == ["True", "False", "True", "True"]  # trapbatch's own INFO still passes
