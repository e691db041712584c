"""The MegaDetector oracle's yolov5 package patches PIL and torch globally on import (through ultralytics); the root
conftest's autouse fixture undoes it after each test, so devhost, which runs in the test process, never meets the
patched ``PIL.Image.open`` (an offline pip "AutoUpdate" on every file PIL cannot identify). The two tests run in
this order in one process (pytest runs a file's tests in order; ``--dist loadfile`` keeps a file on one worker)."""
from __future__ import annotations

import pytest
from PIL import Image


def test_importing_the_oracles_yolov5_replaces_pil_open_and_torch_save(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("YOLO_CONFIG_DIR", "/tmp/trapbatch-yolo-config")
    import yolov5.utils.torch_utils  # noqa: F401  (what test_loader's reference fusion imports)

    assert Image.open.__module__ != "PIL.Image"  # ultralytics/utils/patches.py
    assert torch.save is not torch.serialization.save


def test_the_next_test_gets_the_originals_back() -> None:
    import torch

    assert Image.open.__module__ == "PIL.Image"
    assert torch.save is torch.serialization.save
