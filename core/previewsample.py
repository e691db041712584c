"""Per-category preview samples, drawn while the merge streams, so the preview step never loads the merged file.

Why this module exists: a multi-million-image task's merged results run to gigabytes, more than a Functions worker
should hold, but the preview page shows at most ``SAMPLE_PER_CATEGORY`` images per category. Reservoir sampling
(Algorithm R) draws a uniform sample in one pass, holding only the sample. Seeded by the task id and fed in the
merge's fixed order (shard by shard, manifest order), it is deterministic: a re-run gives the same page.

Must not: do I/O. The merge activity feeds entries in; the previews activity reads the result.
"""
from __future__ import annotations

import random
from typing import Any, Mapping

CATEGORIES = ("detections", "near_misses", "empty", "failures")
SAMPLE_PER_CATEGORY = 120
NEAR_MISS_FLOOR = 0.1  # below the preview threshold but worth a look: where a lower threshold would add images
HISTOGRAM_BINS = 1000  # top confidence in steps of 0.001: the page's slider moves in steps of 0.01


def top_confidence(entry: Mapping[str, Any]) -> float:
    confs = [d.get("conf") for d in entry.get("detections") or [] if isinstance(d, Mapping)]
    return max((float(c) for c in confs if isinstance(c, (int, float))), default=0.0)


def histogram_bin(top: float) -> int:
    return min(HISTOGRAM_BINS, max(0, int(top * HISTOGRAM_BINS)))


def preview_category(entry: Mapping[str, Any], threshold: float) -> str:
    """Which preview section an image belongs to, by its most confident detection."""
    if entry.get("failure") is not None:
        return "failures"
    top = top_confidence(entry)
    if top >= threshold:
        return "detections"
    if top >= NEAR_MISS_FLOOR:
        return "near_misses"
    return "empty"


class PreviewSampler:
    """Uniform per-category samples of at most ``size`` entries each, plus exact per-category totals and a histogram
    of each processed image's top confidence (so the page's counts follow its threshold slider exactly)."""

    def __init__(self, seed: str, threshold: float, size: int = SAMPLE_PER_CATEGORY) -> None:
        if size < 1:
            raise ValueError(f"sample size must be at least 1, got {size}")
        self.threshold, self.size = threshold, size
        self._rng = random.Random(seed)  # str seeds hash with SHA-512: the same in every process
        self.totals: dict[str, int] = {c: 0 for c in CATEGORIES}
        self._samples: dict[str, list[dict[str, Any]]] = {c: [] for c in CATEGORIES}
        self.histogram = [0] * (HISTOGRAM_BINS + 1)

    def add(self, entry: Mapping[str, Any]) -> None:
        category = preview_category(entry, self.threshold)
        if category != "failures":
            self.histogram[histogram_bin(top_confidence(entry))] += 1
        seen = self.totals[category]
        self.totals[category] = seen + 1
        sample = self._samples[category]
        if len(sample) < self.size:
            sample.append(dict(entry))
        else:
            slot = self._rng.randrange(seen + 1)
            if slot < self.size:
                sample[slot] = dict(entry)

    def result(self) -> dict[str, Any]:
        """JSON-ready: threshold, totals and each category's sample sorted by file name."""
        return {"threshold": self.threshold, "sample_size": self.size, "totals": dict(self.totals),
                "max_conf_histogram": list(self.histogram),
                "samples": {c: sorted(s, key=lambda e: str(e.get("file", ""))) for c, s in self._samples.items()}}
