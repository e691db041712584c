"""Stand-ins for ``torch.cuda``'s streams and events, so the CUDA stages' own code runs on a CPU in tests.

Why: ``devices.CudaStages`` orders its work with streams and events only; with these in their place its prepare,
decode (nvJPEG's path falls back to torchvision's CPU decode when the device is the CPU), letterbox, forward and NMS
are the real ones on CPU tensors. Used by the bench script's and the decode-share tuner's tests.
"""
from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch


class FakeEvent:
    def __init__(self, enable_timing: bool = False) -> None:
        self.recorded = False

    def record(self, stream: Any = None) -> None:
        self.recorded = True

    def synchronize(self) -> None:
        assert self.recorded, "waited on an event never recorded"

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: FakeEvent) -> float:
        return 1.0


class FakeStream:
    made: list[FakeStream] = []

    def __init__(self, device: Any = None, priority: int = 0) -> None:
        self.priority, self.synced, self.cuda_stream = priority, 0, 0
        FakeStream.made.append(self)

    def synchronize(self) -> None:
        self.synced += 1

    def wait_event(self, event: FakeEvent) -> None:
        assert event.recorded, "a stream waits on an event never recorded"


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the stream and event calls ``devices`` and the bench make (undone by ``monkeypatch``)."""
    FakeStream.made = []
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None)
