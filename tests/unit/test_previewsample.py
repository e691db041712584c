"""Preview samples: exact totals, bounded and uniform samples, deterministic per task."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

import random
from collections.abc import Mapping

from gpu_batch.formats.previewsample import PreviewSampler, preview_category, sample_key, top_confidence


def _entry(i: int, conf: float | None) -> dict[str, Any]:
    if conf is None:
        return {"file": f"img{i:06d}.jpg", "failure": "image access failure", "detections": None}
    dets = [] if conf == 0 else [{"category": "1", "conf": conf, "bbox": [0.1, 0.1, 0.2, 0.2]}]
    return {"file": f"img{i:06d}.jpg", "detections": dets}


def test_categories_follow_the_most_confident_detection() -> None:
    assert preview_category(_entry(0, None), 0.2) == "failures"
    assert preview_category(_entry(0, 0.9), 0.2) == "detections"
    assert preview_category(_entry(0, 0.2), 0.2) == "detections"
    assert preview_category(_entry(0, 0.15), 0.2) == "near_misses"
    assert preview_category(_entry(0, 0.05), 0.2) == "empty"
    assert preview_category(_entry(0, 0), 0.2) == "empty"


def test_totals_are_exact_and_samples_bounded_and_sorted() -> None:
    sampler = PreviewSampler("task-a", 0.2, size=10)
    confs = [0.9, 0.15, 0.0, None]
    for i in range(4003):
        sampler.add(_entry(i, confs[i % 4]))
    out = sampler.result()
    assert out["totals"] == {"detections": 1001, "near_misses": 1001, "empty": 1001, "failures": 1000}
    for category, sample in out["samples"].items():
        assert len(sample) == 10
        assert [e["file"] for e in sample] == sorted(e["file"] for e in sample)
        assert all(preview_category(e, 0.2) == category for e in sample)


def test_small_categories_are_kept_whole() -> None:
    sampler = PreviewSampler("t", 0.2, size=50)
    for i in range(7):
        sampler.add(_entry(i, 0.9))
    assert [e["file"] for e in sampler.result()["samples"]["detections"]] == [f"img{i:06d}.jpg" for i in range(7)]


def test_same_task_same_sample_other_task_other_sample() -> None:
    def draw(seed: str) -> list[str]:
        sampler = PreviewSampler(seed, 0.2, size=20)
        for i in range(5000):
            sampler.add(_entry(i, 0.9))
        return [e["file"] for e in sampler.result()["samples"]["detections"]]

    assert draw("task-1") == draw("task-1")
    assert draw("task-1") != draw("task-2")


def test_sample_is_uniform_over_the_stream() -> None:
    """Late entries are as likely to be shown as early ones (a truncating 'first N' would fail this)."""
    hits: Counter[int] = Counter()
    for run in range(300):
        sampler = PreviewSampler(f"seed-{run}", 0.2, size=10)
        for i in range(100):
            sampler.add(_entry(i, 0.9))
        for e in sampler.result()["samples"]["detections"]:
            hits[int(e["file"][3:9]) // 25] += 1  # four quarters of the stream
    expected = 300 * 10 / 4
    assert all(abs(hits[q] - expected) < 0.15 * expected for q in range(4)), hits


def test_sample_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PreviewSampler("t", 0.2, size=0)


@pytest.mark.parametrize("cuts", [[], [1], [17, 18, 400], [999], list(range(0, 1000, 37))])
def test_samples_of_parts_combine_to_the_sample_of_the_whole_however_split(cuts: list[int]) -> None:
    """The fan-in samples each range of shards apart; absorbing the parts' states must give exactly the single-pass
    sample, wherever the ranges begin and end (empty parts included)."""
    entries = [_entry(i, [0.9, 0.15, 0.0, None][i % 4]) for i in range(1000)]
    rng = random.Random(len(cuts))
    for e in entries[::3]:  # capture times in no order, a third of the images (failures have none)
        if e.get("failure") is None:
            e["datetime"] = (f"20{rng.randint(10, 25)}:0{rng.randint(1, 9)}:1{rng.randint(0, 9)} "
                             f"0{rng.randint(0, 9)}:00:00")
    whole = PreviewSampler("task-x", 0.2, size=25)
    for e in entries:
        whole.add(e)
    bounds = [0, *cuts, 1000]
    combined = PreviewSampler("task-x", 0.2, size=25)
    for lo, hi in zip(bounds, bounds[1:]):
        part = PreviewSampler("task-x", 0.2, size=25)
        for e in entries[lo:hi]:
            part.add(e)
        combined.absorb(json.loads(json.dumps(part.state())))  # through JSON, as between activities
    assert combined.result() == whole.result()
    assert all(len(s) == 25 for s in whole.result()["samples"].values())
    times = sorted(e["datetime"] for e in entries if "datetime" in e)
    assert whole.result()["capture_times"] == {"images": len(times), "first": times[0], "last": times[-1]}


def test_capture_times_count_exif_times_only() -> None:
    """The span counts MegaDetector's EXIF form only; nothing else an entry's ``datetime`` might hold."""
    sampler = PreviewSampler("task-x", 0.2)
    for i, when in enumerate(["2024:06:01 06:20:01", None, "", "2024-06-01T06:20:01+02:00", 5, "2023:01:02 03:04:05",
                              "2001-01-01T00:00:00"]):  # ISO without a zone is 19 characters too, and not EXIF's
        sampler.add({**_entry(i, 0.5), "datetime": when})
    assert sampler.result()["capture_times"] == {"images": 2, "first": "2023:01:02 03:04:05",
                                                  "last": "2024:06:01 06:20:01"}
    assert PreviewSampler("task-y", 0.2).result()["capture_times"] == {"images": 0, "first": "", "last": ""}


def test_top_confidence_is_max_of_the_numeric_confs() -> None:
    """The one-pass reading keeps ``max``'s rules: numbers only (bools count), the first of equals (-0.0 before
    0.0), a leading NaN stays, 0.0 when there is none."""
    rng = random.Random(5)
    odd = [0, 1, 0.0005, 1e-05, 0.0, -0.0, 1.0, 0.1, float("nan"), float("inf"), -0.5, True, False, "0.3", None, 2]
    for _ in range(50000):
        dets = [rng.choice([None, 1, "s", [1]]) if rng.random() < 0.05 else
                {"conf": rng.choice(odd) if rng.random() < 0.3 else rng.random()} for _ in range(rng.randint(0, 5))]
        entry = {"detections": rng.choice([None, dets])}
        confs = [d.get("conf") for d in entry["detections"] or [] if isinstance(d, Mapping)]
        want = max((float(c) for c in confs if isinstance(c, (int, float))), default=0.0)
        assert repr(top_confidence(entry)) == repr(want), entry


def test_detections_are_counted_by_the_kinds_they_show_at_the_threshold() -> None:
    """One kind (by category id) or several, as the page's chips split them; parts combine to the whole."""
    def entry(i: int, dets: list[tuple[str, float]]) -> dict[str, Any]:
        return {"file": f"k{i}.jpg", "detections": [{"category": c, "conf": v, "bbox": [0, 0, 1, 1]} for c, v in dets]}

    entries = [entry(0, [("1", 0.9), ("2", 0.1)]),  # animal only: the person is below the threshold
               entry(1, [("1", 0.9), ("2", 0.5)]),  # several
               entry(2, [("2", 0.3), ("2", 0.8)]),  # person only, twice
               entry(3, [("3", 0.05)]),  # no detection at the threshold: not counted
               {"file": "k4.jpg", "failure": "Failure image access", "detections": None}]
    whole = PreviewSampler("t", 0.2)
    for e in entries:
        whole.add(e)
    assert whole.result()["kind_totals"] == {"kinds": {"1": 1, "2": 1}, "several": 1}
    parts = [PreviewSampler("t", 0.2) for _ in range(2)]
    for k, e in enumerate(entries):
        parts[k % 2].add(e)
    combined = PreviewSampler("t", 0.2)
    for p in parts:
        combined.absorb(json.loads(json.dumps(p.state())))
    assert combined.result()["kind_totals"] == whole.result()["kind_totals"]


def _kind_entries(n: int) -> list[dict[str, Any]]:
    """Mostly animals, a few people (1 in 97), some several-kind images, some below the threshold."""
    out = []
    for i in range(n):
        dets = [{"category": "2" if i % 97 == 0 else "1", "conf": 0.9, "bbox": [0, 0, 1, 1]}]
        if i % 13 == 0:
            dets.append({"category": "3", "conf": 0.5, "bbox": [0, 0, 1, 1]})
        if i % 5 == 0:
            dets = [{"category": "1", "conf": 0.05, "bbox": [0, 0, 1, 1]}]
        out.append({"file": f"img{i:06d}.jpg", "detections": dets})
    return out


def _old_state(sampler: PreviewSampler) -> dict[str, Any]:
    """A state as the code before kind samples wrote it: none of their fields."""
    state = json.loads(json.dumps(sampler.state()))
    for name in ("kind_kept", "kind_bound", "kind_sample_size"):
        del state[name]
    return state


def test_each_kind_keeps_its_own_sample_of_the_smallest_keys() -> None:
    """A rare kind gets pictures the uniform sample has none of; each kind's sample is its images' smallest keys."""
    entries = _kind_entries(20000)
    sampler = PreviewSampler("task-k", 0.2, size=10, kind_size=6)
    for e in entries:
        sampler.add(e)
    out = sampler.result()
    assert set(out["kind_samples"]) == {"1", "2", "several"}
    for kind, sample in out["kind_samples"].items():
        of_kind = [e["file"] for e in entries if sampler._kind(e) == kind and preview_category(e, 0.2) == "detections"]
        want = sorted(sorted(of_kind, key=lambda f: (sample_key("task-k", f), f))[:6])
        assert [e["file"] for e in sample] == want, kind
    assert not [e for e in out["samples"]["detections"] if e["detections"][0]["category"] == "2"]  # the case at hand


@pytest.mark.parametrize("cuts", [[], [1], [17, 18, 4000], list(range(0, 20000, 1371))])
def test_kind_samples_of_parts_combine_to_the_whole_and_are_deterministic(cuts: list[int]) -> None:
    entries = _kind_entries(20000)
    whole = PreviewSampler("task-k", 0.2, size=10, kind_size=6)
    for e in entries:
        whole.add(e)
    bounds = [0, *cuts, len(entries)]
    combined = PreviewSampler("task-k", 0.2, size=10, kind_size=6)
    for lo, hi in zip(bounds, bounds[1:]):
        part = PreviewSampler("task-k", 0.2, size=10, kind_size=6)
        for e in entries[lo:hi]:
            part.add(e)
        combined.absorb(json.loads(json.dumps(part.state())))
    assert combined.result() == whole.result()
    again = PreviewSampler("task-k", 0.2, size=10, kind_size=6)
    for e in entries:
        again.add(e)
    assert again.result()["kind_samples"] == whole.result()["kind_samples"]
    other = PreviewSampler("task-other", 0.2, size=10, kind_size=6)
    for e in entries:
        other.add(e)
    assert other.result()["kind_samples"] != whole.result()["kind_samples"]


def test_a_state_without_kind_samples_still_combines_and_what_it_gives_is_exact() -> None:
    """Parts written by older code (a deployment under way, a worker's view): they combine; each kind's sample is then
    the smallest keys of that kind below the smallest of the largest keys the old parts' uniform samples kept, nothing
    else (never an image that would not be in a single pass's kind sample)."""
    entries = _kind_entries(20000)
    whole = PreviewSampler("task-k", 0.2, size=40, kind_size=6)
    for e in entries:
        whole.add(e)
    parts = [PreviewSampler("task-k", 0.2, size=40, kind_size=6) for _ in range(3)]
    for i, e in enumerate(entries):
        parts[i * 3 // len(entries)].add(e)

    mixed = PreviewSampler("task-k", 0.2, size=40, kind_size=6)
    mixed.absorb(parts[0].state())
    mixed.absorb(_old_state(parts[1]))
    mixed.absorb(parts[2].state())
    assert {k: v for k, v in mixed.result().items() if k != "kind_samples"} == \
        {k: v for k, v in whole.result().items() if k != "kind_samples"}
    def cut_at(old: list[PreviewSampler]) -> dict[str, list[dict[str, Any]]]:
        cut = min(max((sample_key("task-k", e["file"]), e["file"]) for e in p.result()["samples"]["detections"])
                  for p in old)
        return {kind: kept for kind, sample in whole.result()["kind_samples"].items()
                if (kept := [e for e in sample if (sample_key("task-k", e["file"]), e["file"]) <= cut])}

    assert {k: v for k, v in mixed.result()["kind_samples"].items() if v} == cut_at([parts[1]])
    all_old = PreviewSampler("task-k", 0.2, size=40, kind_size=6)
    for p in parts:
        all_old.absorb(_old_state(p))
    assert {k: v for k, v in all_old.result()["kind_samples"].items() if v} == cut_at(parts)

    small = PreviewSampler("task-k", 0.2, size=40, kind_size=6)  # a part with few detections is whole: no cut
    for e in entries[:30]:
        small.add(e)
    only = PreviewSampler("task-k", 0.2, size=40, kind_size=6)
    only.absorb(_old_state(small))
    assert only.result() == small.result()
