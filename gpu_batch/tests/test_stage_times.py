"""``devices.StageTimes`` (the stage thread's split into decode and letterbox, read from events once complete) and
``devices.ShareCounter`` (which JPEGs the fetch threads decode instead of the GPU)."""
from __future__ import annotations

import threading

import pytest

from gpu_batch.worker.devices import ShareCounter, StageTimes


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


@pytest.mark.parametrize("share, picked", [(0.0, 0), (0.25, 25), (0.4, 40), (0.5, 50), (1.0, 100)])
def test_a_decode_share_picks_that_fraction_of_the_images_spread_evenly(share: float, picked: int) -> None:
    counter = ShareCounter(share)
    picks = [counter.pick() for _ in range(100)]
    assert sum(picks) == picked
    if 0 < share <= 0.5:  # never two in a row: the engine and the CPU share every batch
        assert not any(a and b for a, b in zip(picks, picks[1:]))
    for start in range(0, 100, 20):  # every stretch of 20 images has its share, give or take one
        assert abs(sum(picks[start:start + 20]) - 20 * share) <= 1


def test_a_decode_share_counts_every_call_once_across_threads() -> None:
    counter = ShareCounter(0.25)
    picked: list[bool] = []
    lock = threading.Lock()

    def fetch() -> None:
        for _ in range(1000):
            p = counter.pick()
            with lock:
                picked.append(p)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(picked) == 4000 and sum(picked) == 1000


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_a_decode_share_outside_0_to_1_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="fraction from 0 to 1"):
        ShareCounter(share)


class FakeStream:
    """``torch.cuda.Stream``'s constructor, recorded: CUDA streams cannot be made without a GPU."""

    made: list["FakeStream"] = []

    def __init__(self, device: object = None, priority: int = 0) -> None:
        self.device, self.priority = device, priority
        FakeStream.made.append(self)


@pytest.mark.parametrize("choice, priority", [("normal", 0), ("high", -1)])
def test_every_side_stream_takes_the_chosen_priority(choice: str, priority: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage, post and further stage threads' streams: all beside the forward pass, all at one priority."""
    from types import SimpleNamespace

    from gpu_batch.worker import devices

    FakeStream.made = []
    monkeypatch.setattr(devices.torch.cuda, "Stream", FakeStream)
    model = SimpleNamespace(device="cuda:0")
    stages = devices.CudaStages(model, object(), hw=None, stage_threads=2, stream_priority=choice)  # type: ignore
    seen: list[object] = []
    for _ in range(2):  # the first thread to stage takes the stage stream, the second gets a stream of its own
        thread = threading.Thread(target=lambda: seen.append(stages._thread_resources()[0]))
        thread.start()
        thread.join()
    assert seen[0] is stages.stage_stream and seen[1] is not stages.stage_stream
    assert len(FakeStream.made) == 3 and {s.priority for s in FakeStream.made} == {priority}
    assert {s.device for s in FakeStream.made} == {"cuda:0"}


def test_an_unknown_stream_priority_is_refused_by_name() -> None:
    from gpu_batch.worker.devices import stream_priority_value

    with pytest.raises(ValueError, match="'urgent': expected one of normal, high"):
        stream_priority_value("urgent")
