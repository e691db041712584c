"""``--cpu-decode-share auto`` (``share_tuner``): the share moves toward whichever of staging and fetching the main
thread did not wait for, stays within its bounds, carries over to the process's next shard, and, through the real
pipeline with the CUDA stages on a CPU, a slow stage thread makes the shard decode more of its JPEGs on the CPU with
nothing lost."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from gpu_batch.tests.fake_cuda import install
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker import share_tuner
from gpu_batch.worker.share_tuner import CEILING, STEP, ShareTuner, next_share


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    share_tuner.forget_learned()
    yield
    share_tuner.forget_learned()


@pytest.mark.parametrize("share, stage, fetch, expected", [
    (0.0, 0.30, 0.00, STEP),  # waited on staging: more JPEGs to the CPU
    (0.3, 0.00, 0.30, 0.3 - STEP),  # waited on fetching: the CPU has too many
    (0.3, 0.20, 0.25, 0.3 - STEP),  # both: the larger wait decides
    (0.3, 0.01, 0.02, 0.3),  # neither beyond noise (the forward pass is the limit): stays
    (0.0, 0.00, 0.50, 0.0),  # never below 0
    (CEILING, 0.9, 0.0, CEILING),  # never above the ceiling
])
def test_the_share_follows_the_wait_that_dominates(share: float, stage: float, fetch: float,
                                                   expected: float) -> None:
    assert next_share(share, stage, fetch, window_s=1.0) == pytest.approx(expected)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_tuner_acts_once_a_window_on_the_waits_grown_in_it_and_hands_its_share_to_the_next_shard() -> None:
    target = SimpleNamespace(share=0.5)  # a fixed share given before is not where auto starts
    waits = {"stage": 0.0, "fetch": 0.0}
    clock = Clock()
    tuner = ShareTuner(target, lambda: (waits["stage"], waits["fetch"]), "cuda:0", window_s=1.0, clock=clock)
    assert target.share == 0.0
    for _ in range(4):  # four windows in which the main thread waited 0.4 s on staging
        waits["stage"] += 0.4
        clock.now += 0.5
        tuner.tick()  # half a window: nothing yet
        clock.now += 0.5
        tuner.tick()
    assert target.share == pytest.approx(4 * STEP)
    waits["fetch"] += 0.9  # a window dominated by fetching; the stage's earlier waits are not counted again
    clock.now += 1.0
    tuner.tick()
    assert target.share == pytest.approx(3 * STEP)
    assert tuner.finish() == {"cpu_decode_share_start": 0.0, "cpu_decode_share_end": pytest.approx(3 * STEP),
                              "cpu_decode_share_changes": 5.0}
    nxt = SimpleNamespace(share=0.0)
    ShareTuner(nxt, lambda: (0.0, 0.0), "cuda:0", clock=clock)
    assert nxt.share == pytest.approx(3 * STEP)  # the process's next shard starts where this one ended
    other = SimpleNamespace(share=0.0)
    ShareTuner(other, lambda: (0.0, 0.0), "cuda:1", clock=clock)
    assert other.share == 0.0  # per device


def test_through_the_pipeline_a_slow_stage_thread_moves_jpegs_to_the_cpu_and_nothing_is_lost(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_batch.worker import devices, pipeline
    from gpu_batch.worker.loader import load_model
    from gpu_batch.worker.pipeline import PipelineOptions, ShardSummary, run_images
    from gpu_batch.worker.results import FileSink, ResultWriter
    from gpu_batch.worker.sources import LocalFolderSource

    install(monkeypatch)
    monkeypatch.setattr(share_tuner, "WINDOW_S", 0.2)
    slow_stage = devices.CudaStages.stage

    def stage(self: devices.CudaStages, items: list[Any], pad_to: int | None) -> Any:
        time.sleep(0.15)  # a stage thread slower than the fetch threads: the limit the share should relieve
        return slow_stage(self, items, pad_to)

    monkeypatch.setattr(devices.CudaStages, "stage", stage)
    monkeypatch.setattr(pipeline, "make_stages", lambda model, detector, hw, threads, share, priority:
                        devices.CudaStages(model, detector, hw, threads, share, priority))
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"im{i:02d}.jpg" for i in range(48)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(textured(96, 64, seed=i)))
    model = load_model(checkpoint, device="cpu")
    sink = FileSink(tmp_path / "out.json")
    writer = ResultWriter(sink, {"detector": "test"}, flush_seconds=60)
    writer.start()
    summary = ShardSummary(images=len(names))
    try:
        run_images(names, LocalFolderSource(folder), model, writer, 0.005,
                   PipelineOptions(batch_size=2, workers=2, cpu_decode_auto=True), summary)
    finally:
        writer.close()
    data = sink.read()
    assert data is not None
    entries = json.loads(data)["images"]
    assert sorted(e["file"] for e in entries) == names and not any("failure" in e for e in entries)
    assert summary.stages["cpu_decode_share_start"] == 0.0
    assert summary.stages["cpu_decode_share_end"] > 0.0 and summary.stages["cpu_decode_share_changes"] >= 1
    assert summary.decoded_by is not None and summary.decoded_by.get("cpu", 0) > 0  # some JPEGs went to the CPU
    assert sum(summary.decoded_by.values()) == len(names)
