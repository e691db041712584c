"""``devices.StageTimes``: the stage thread's split into decode and letterbox, read from events once complete."""
from __future__ import annotations

import threading

from gpu_batch.worker.devices import StageTimes


class FakeEvent:
    """A CUDA event's two calls StageTimes uses: ``query`` (complete?) and ``elapsed_time`` (ms to another)."""

    def __init__(self, at_ms: float, done: bool = True) -> None:
        self.at_ms, self.done = at_ms, done

    def query(self) -> bool:
        return self.done

    def elapsed_time(self, other: "FakeEvent") -> float:
        if not (self.done and other.done):
            raise RuntimeError("event not complete")
        return other.at_ms - self.at_ms


def test_completed_batches_are_split_into_decode_and_letterbox_seconds() -> None:
    times = StageTimes()
    times.add(0.05, (FakeEvent(0), FakeEvent(40), FakeEvent(50)))
    times.add(0.07, (FakeEvent(100), FakeEvent(130), FakeEvent(145)))
    snap = {key: round(value, 9) for key, value in times.snapshot().items()}
    assert snap == {"stage_decode_call_s": 0.12, "stage_decode_gpu_s": 0.07, "stage_letterbox_gpu_s": 0.025}


def test_a_batch_still_running_is_read_later_not_lost_nor_counted_twice() -> None:
    times = StageTimes()
    ready = FakeEvent(50, done=False)
    times.add(0.01, (FakeEvent(0), FakeEvent(40), ready))
    times.add(0.01, (FakeEvent(60), FakeEvent(70), FakeEvent(80)))  # complete, but after one that is not
    times.harvest()
    assert (times.decode_gpu_s, times.letterbox_gpu_s) == (0.0, 0.0)
    ready.done = True
    times.harvest()
    times.harvest()
    assert round(times.decode_gpu_s, 6) == 0.05 and round(times.letterbox_gpu_s, 6) == 0.02


def test_an_unreadable_timing_is_skipped_and_the_rest_still_counts() -> None:
    class NoTiming(FakeEvent):
        def elapsed_time(self, other: FakeEvent) -> float:
            raise RuntimeError("event was not created with timing")

    times = StageTimes()
    times.add(0.0, (NoTiming(0), FakeEvent(1), FakeEvent(2)))
    times.add(0.0, (FakeEvent(10), FakeEvent(13), FakeEvent(20)))
    snap = times.snapshot()
    assert round(snap["stage_decode_gpu_s"], 6) == 0.003 and round(snap["stage_letterbox_gpu_s"], 6) == 0.007


def test_two_threads_adding_and_harvesting_count_every_batch_once() -> None:
    times = StageTimes()

    def stage(n: int) -> None:
        for i in range(n):
            times.add(0.001, (FakeEvent(0), FakeEvent(2), FakeEvent(3)))
            times.harvest()

    threads = [threading.Thread(target=stage, args=(500,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = times.snapshot()
    assert round(snap["stage_decode_gpu_s"], 6) == 2.0 and round(snap["stage_letterbox_gpu_s"], 6) == 1.0
    assert round(snap["stage_decode_call_s"], 6) == 1.0
