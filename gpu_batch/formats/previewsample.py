"""Per-category preview samples, drawn while the merge streams, so the preview step never loads the merged file.

Why this module exists: a multi-million-image task's merged results run to gigabytes, more than a Functions worker
should hold, but the preview page shows at most ``SAMPLE_PER_CATEGORY`` images per category. Each image gets a key, a
hash of the task id (the seed) and its file name, and each category keeps the ``size`` images with the smallest keys
(bottom-k sampling): a uniform sample without replacement, holding only the sample. Because an image's key does not
depend on where it came in the stream, the samples of parts of the stream combine exactly (``absorb``): the fan-in's
parallel parts (``activities.fanin``) each sample their shards and the combined sample is the one a single pass over
all of them would draw, however the shards were split. Deterministic: a re-run gives the same page.

Per kind too (``KIND_SAMPLE``, a page of the preview): at 10M images a rare kind (people, whom ecologists must
review for privacy) can have a count and no picture among the uniform sample's 120 detections, so each kind of the
detections (one category at the threshold, or "several") keeps its own bottom-k by the same key. The same key makes
the page's union of the two (the uniform sample's images of a kind and the kind's own) again "every image of the
kind below some key": still a uniform sample of the kind. A state written before these samples existed (a fan-in
part or worker view of older code) holds only the uniform sample: its detections of each kind below the largest
key it kept are all of that part's such images, so they stand in, and the combined kind sample is cut at that key
(``_kind_bound``): exact, only smaller (with such a part the page shows about what it showed before).

Must not: do I/O. The merge activities feed entries in; the previews activity reads the result.
"""
from __future__ import annotations

import hashlib
import heapq
import struct
from hashlib import sha256
from collections.abc import Mapping  # not typing's: its isinstance is several times slower, per detection
from typing import Any

from gpu_batch.formats.entries import is_exif_time

CATEGORIES = ("detections", "near_misses", "empty", "failures")
SAMPLE_PER_CATEGORY = 120
KIND_SAMPLE = 24  # images per kind of the detections: one page of a section (activities.previews.PAGE_SIZE)
SEVERAL = "several"  # the kind of an image with boxes of more than one category at the threshold
_NO_BOUND = (1 << 64, "")  # above every (key, file): no cut
NEAR_MISS_FLOOR = 0.1  # below the preview threshold but worth a look: where a lower threshold would add images
HISTOGRAM_BINS = 1000  # top confidence in steps of 0.001: the page's slider moves in steps of 0.01

_FIRST_8_BYTES = struct.Struct(">Q").unpack_from  # int.from_bytes(digest[:8], "big") without the slice


def top_confidence(entry: Mapping[str, Any]) -> float:
    """The largest conf of the entry's detections (numbers only), 0.0 when none: ``max`` of them, whose rules it
    keeps (the first of equals; a leading NaN stays). One pass, a dict with a float conf read directly (issue 11)."""
    top: float | None = None
    for d in entry.get("detections") or ():
        if d.__class__ is dict or isinstance(d, Mapping):
            c = d.get("conf")
            if c.__class__ is float:
                if top is None or c > top:
                    top = c
            elif isinstance(c, (int, float)):
                v = float(c)
                if top is None or v > top:
                    top = v
    return 0.0 if top is None else top


def histogram_bin(top: float) -> int:
    return min(HISTOGRAM_BINS, max(0, int(top * HISTOGRAM_BINS)))


def preview_category(entry: Mapping[str, Any], threshold: float, top: float | None = None) -> str:
    """Which preview section an image belongs to, by its most confident detection (``top``, when known)."""
    if entry.get("failure") is not None:
        return "failures"
    if top is None:
        top = top_confidence(entry)
    if top >= threshold:
        return "detections"
    if top >= NEAR_MISS_FLOOR:
        return "near_misses"
    return "empty"


def sample_key(seed: str, file: str) -> int:
    """An image's place in the sample order: the first 8 bytes of SHA-256(seed, NUL, file), the same in every process."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{file}".encode("utf-8")).digest()[:8], "big")


class PreviewSampler:
    """Uniform per-category samples of at most ``size`` entries each, plus exact per-category totals and a histogram
    of each processed image's top confidence (so the page's counts follow its threshold slider exactly)."""

    def __init__(self, seed: str, threshold: float, size: int = SAMPLE_PER_CATEGORY,
                 kind_size: int = KIND_SAMPLE) -> None:
        if size < 1 or kind_size < 1:
            raise ValueError(f"sample sizes must be at least 1, got {size} and {kind_size}")
        self.seed, self.threshold, self.size, self.kind_size = seed, threshold, size, kind_size
        self.totals: dict[str, int] = {c: 0 for c in CATEGORIES}
        # per category a max-heap (negated keys) of the smallest keys so far, and the entries it holds by file
        self._heaps: dict[str, list[tuple[int, str]]] = {c: [] for c in CATEGORIES}
        self._kept: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in CATEGORIES}
        self.histogram = [0] * (HISTOGRAM_BINS + 1)
        # images with an EXIF capture time (``datetime``, ``YYYY:MM:DD HH:MM:SS``, which sorts as text) and the
        # first and last of them: the page says when the photos were taken, and a camera clock never set shows
        self.captured, self.first, self.last = 0, "", ""
        # images of the detections by the kinds they show at the threshold, as the page's chips split them: one kind
        # (by category id), or several; MegaDetector's preview counts its "detections_animal" ... pages the same way
        self.kinds: dict[str, int] = {}
        self.several = 0
        # per kind (a category id, or SEVERAL) a bottom-``kind_size`` sample, as the categories' (same keys)
        self._kind_heaps: dict[str, list[tuple[int, str]]] = {}
        self._kind_kept: dict[str, dict[str, dict[str, Any]]] = {}
        # (key, file): the kind samples are exact only below it, lowered by an absorbed state of older code
        self._kind_bound: tuple[int, str] = _NO_BOUND

    def _capture(self, when: Any) -> None:
        if is_exif_time(when):
            self.captured += 1
            if not self.first or when < self.first:
                self.first = when
            if when > self.last:
                self.last = when

    def add(self, entry: Mapping[str, Any]) -> None:
        # preview_category, histogram_bin and sample_key inlined (issue 11: per-image CPU); the same rules
        top = top_confidence(entry)
        if entry.get("failure") is not None:
            category = "failures"
            self.totals[category] += 1
        else:
            category = ("detections" if top >= self.threshold else "near_misses" if top >= NEAR_MISS_FLOOR
                        else "empty")
            self.totals[category] += 1
            self.histogram[min(HISTOGRAM_BINS, max(0, int(top * HISTOGRAM_BINS)))] += 1
        when = entry.get("datetime")
        if when is not None:
            self._capture(when)
        file = entry.get("file", "")
        if file.__class__ is not str:
            file = str(file)
        key = _FIRST_8_BYTES(sha256(f"{self.seed}\0{file}".encode("utf-8")).digest())[0]  # sample_key's
        self._offer(category, key, file, entry)
        if category == "detections":
            kind = self._kind(entry)
            if kind == SEVERAL:
                self.several += 1
            else:
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self._offer_kind(kind, key, file, entry)

    def _kind(self, entry: Mapping[str, Any]) -> str:
        """The kind the page's chips file a detections image under: its one category at the threshold, or SEVERAL."""
        # type(d) is dict first: a results entry's detections are dicts, and the typing.Mapping check costs ~0.5 us
        kinds = {str(d.get("category")) for d in entry.get("detections") or ()
                 if (type(d) is dict or isinstance(d, Mapping)) and isinstance(d.get("conf"), (int, float))
                 and d["conf"] >= self.threshold}
        return kinds.pop() if len(kinds) == 1 else SEVERAL

    def _offer_kind(self, kind: str, key: int, file: str, entry: Mapping[str, Any]) -> None:
        if kind not in self._kind_heaps:
            self._kind_heaps[kind], self._kind_kept[kind] = [], {}
        self._offer_to(self._kind_heaps[kind], self._kind_kept[kind], self.kind_size, key, file, entry)

    def _offer(self, category: str, key: int, file: str, entry: Mapping[str, Any]) -> None:
        self._offer_to(self._heaps[category], self._kept[category], self.size, key, file, entry)

    @staticmethod
    def _offer_to(heap: list[tuple[int, str]], kept: dict[str, dict[str, Any]], size: int, key: int, file: str,
                  entry: Mapping[str, Any]) -> None:
        if file in kept:  # the same image twice (never from a merge): keep the first
            return
        if len(heap) < size:
            heapq.heappush(heap, (-key, file))
        elif (-key, file) > heap[0]:  # a smaller key (ties by name) than the largest kept
            _, dropped = heapq.heapreplace(heap, (-key, file))
            del kept[dropped]
        else:
            return
        kept[file] = dict(entry)

    def state(self) -> dict[str, Any]:
        """JSON-ready partial state (totals and the kept entries with their keys), for ``absorb`` elsewhere."""
        return {"threshold": self.threshold, "sample_size": self.size, "totals": dict(self.totals),
                "histogram": list(self.histogram), "captured": [self.captured, self.first, self.last],
                "kinds": dict(self.kinds), "several": self.several,
                "kept": {c: [[-k, f, self._kept[c][f]] for k, f in sorted(self._heaps[c], reverse=True)]
                         for c in CATEGORIES},
                "kind_sample_size": self.kind_size, "kind_bound": list(self._kind_bound),
                "kind_kept": {kind: [[-k, f, self._kind_kept[kind][f]] for k, f in sorted(heap, reverse=True)]
                              for kind, heap in sorted(self._kind_heaps.items())}}

    def absorb(self, state: Mapping[str, Any]) -> None:
        """Add another sampler's ``state`` (same seed and size): the result is as if its entries had been added here."""
        for category, n in state["totals"].items():
            self.totals[category] += int(n)
        for i, n in enumerate(state.get("histogram") or []):
            self.histogram[i] += int(n)
        captured, first, last = state.get("captured") or (0, "", "")
        if captured:
            self.captured += int(captured)
            for when in (str(first), str(last)):
                if not self.first or when < self.first:
                    self.first = when
                if when > self.last:
                    self.last = when
        for kind, n in (state.get("kinds") or {}).items():
            self.kinds[str(kind)] = self.kinds.get(str(kind), 0) + int(n)
        self.several += int(state.get("several") or 0)
        for category, kept in state["kept"].items():
            for key, file, entry in kept:
                self._offer(category, int(key), str(file), entry)
        self._absorb_kinds(state)

    def _absorb_kinds(self, state: Mapping[str, Any]) -> None:
        """The other state's kind samples; from its uniform sample when it has none (older code: see the module's
        docstring), the kind samples then cut below the largest key that sample kept, where it was full."""
        kind_kept = state.get("kind_kept")
        if isinstance(kind_kept, Mapping):
            bound = tuple(state.get("kind_bound") or _NO_BOUND)
            offered = [(str(kind), kept, int(state.get("kind_sample_size") or 0)) for kind, kept in kind_kept.items()]
        else:
            detections = (state.get("kept") or {}).get("detections") or []
            offered = [(self._kind(entry), [[key, file, entry]], 0) for key, file, entry in detections]
            full = int((state.get("totals") or {}).get("detections") or 0) > len(detections)  # some were left out
            bound = max((int(k), str(f)) for k, f, _ in detections) if full and detections else _NO_BOUND
        self._kind_bound = min(self._kind_bound, (int(bound[0]), str(bound[1])))
        for kind, kept, size in offered:
            if 0 < size < self.kind_size and len(kept) >= size:  # a full sample smaller than ours: exact below its top
                self._kind_bound = min(self._kind_bound, max((int(k), str(f)) for k, f, _ in kept))
            for key, file, entry in kept:
                self._offer_kind(kind, int(key), str(file), entry)

    def result(self) -> dict[str, Any]:
        """JSON-ready: threshold, totals, the capture times' count and span, the detections' images by kind, and each
        category's sample sorted by file name."""
        return {"threshold": self.threshold, "sample_size": self.size, "totals": dict(self.totals),
                "max_conf_histogram": list(self.histogram),
                "capture_times": {"images": self.captured, "first": self.first, "last": self.last},
                "kind_totals": {"kinds": dict(sorted(self.kinds.items())), "several": self.several},
                "samples": {c: [self._kept[c][f] for f in sorted(self._kept[c])] for c in CATEGORIES},
                "kind_samples": self.kind_samples()}

    def kind_samples(self) -> dict[str, list[dict[str, Any]]]:
        """Each kind's sample (the kinds of ``kind_totals``: a category id or SEVERAL) sorted by file name: its
        ``kind_size`` smallest keys, fewer where an absorbed older state's sample cut it (``_kind_bound``)."""
        out = {}
        for kind, heap in sorted(self._kind_heaps.items()):
            files = sorted(f for k, f in heap if (-k, f) <= self._kind_bound)
            out[kind] = [self._kind_kept[kind][f] for f in files]
        return out
