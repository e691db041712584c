"""The MegaDetector oracle's yolov5 package patches PIL and torch globally on import (through ultralytics); the root
conftest's autouse fixture undoes it after each test, so devhost, which runs in the test process, never meets the
patched ``PIL.Image.open`` (an offline pip "AutoUpdate" on every file PIL cannot identify).

The leak itself is shown in a fresh interpreter: in the test process an earlier test on the same xdist worker may
already have imported yolov5 (test_loader does), and a cached import patches nothing the second time, which made
the in-process form of this check order-dependent (it failed in CI). The undoing is shown in-process: the first test
installs ultralytics' own replacements, the next one (pytest runs a file's tests in order; ``--dist loadfile``
keeps a file on one worker) finds the originals back."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

_LEAK_PROBE = """
import torch
from PIL import Image
import ultralytics.utils.checks  # what yolov5.utils.general imports (test_loader imports yolov5.utils)
print(Image.open.__module__, torch.save is torch.serialization.save)
"""


def test_importing_the_oracles_yolov5_replaces_pil_open_and_torch_save() -> None:
    env = {**os.environ, "YOLO_CONFIG_DIR": "/tmp/trapbatch-yolo-config", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _LEAK_PROBE], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    module, save_is_original = done.stdout.split()[-2:]
    assert module != "PIL.Image"  # ultralytics/utils/patches.py
    assert save_is_original == "False"  # ultralytics/utils/__init__.py


def test_a_test_that_installs_the_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("YOLO_CONFIG_DIR", "/tmp/trapbatch-yolo-config")
    import ultralytics.utils
    import ultralytics.utils.patches

    # What the import does when it is the first; assigned plainly (not through monkeypatch) as the import does.
    Image.open = ultralytics.utils.patches.image_open  # type: ignore[assignment]
    torch.save = ultralytics.utils.patches.torch_save
    assert Image.open.__module__ != "PIL.Image"


def test_the_next_test_gets_the_originals_back() -> None:
    import torch

    assert Image.open.__module__ == "PIL.Image"
    assert torch.save is torch.serialization.save
