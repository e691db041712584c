"""Repeated detections: boxes that recur at the same place in many images of one camera folder.

Why this module exists: a branch, rock or sign that the detector mistakes for an animal shows up in the same spot in
hundreds of a camera's images. MegaDetector's workflow finds these with "repeat detection elimination" phase 1, a
notebook step a person runs and then reviews by eye. Here the same search runs automatically during the merge, and
the preview site lists what it found, so the person reviewing the task sees at once whether a cleanup is needed.

The rules are MegaDetector's (``repeat_detections_core``, default ``RepeatDetectionOptions``): per folder (the
image's directory), every detection with confidence in [0.1, 1.0] and box area at most 0.2 of the image is compared
with the candidate locations found so far in that folder; with IoU >= 0.9 and the same category it counts as another
occurrence of each such candidate, otherwise it starts a new candidate (whose box is that first detection's). A
candidate with at least 20 occurrences is suspicious. An oracle test runs MegaDetector's own folder search on the
same detections. Unlike MegaDetector, which holds all results in a DataFrame, this streams: entries arrive in the
merge's lexicographic order, in which a folder's images are contiguous (every name under ``folder/`` sorts
together), so a folder's candidates are dropped as soon as the stream leaves it.

Must not: do I/O or change any result; it only reports.
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any, Mapping

logger = logging.getLogger(__name__)

_CELL = 0.15  # spatial-hash cell: two boxes with IoU >= 0.9 have centres far closer than this in x and in y


@dataclass(frozen=True, slots=True)
class RepeatOptions:
    confidence_min: float = 0.1
    confidence_max: float = 1.0
    iou_threshold: float = 0.9
    occurrence_threshold: int = 20
    min_area: float = 0.0
    max_area: float = 0.2
    files_listed: int = 10  # file names kept per suspicious location (the first ones)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def detection_box(d: Mapping[str, Any]) -> tuple[float, float, float, float, float] | None:
    """``(conf, x, y, w, h)`` of a detection, or None for a malformed one (skipped: it must not stop a merge)."""
    try:
        x, y, w, h = (float(v) for v in d["bbox"])
        return float(d.get("conf", 0.0)), x, y, w, h
    except (KeyError, TypeError, ValueError):
        return None


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes (normalized), as MegaDetector's ``ct_utils.get_iou``."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = min(ax2, bx2) - max(a[0], b[0])
    ih = min(ay2, by2) - max(a[1], b[1])
    if iw < 0 or ih < 0:
        return 0.0
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass(slots=True)
class _Location:
    order: int
    category: str
    bbox: tuple[float, float, float, float]
    count: int = 0
    conf_min: float = 1.0
    conf_max: float = 0.0
    files: list[str] = field(default_factory=list)


class _Folder:
    def __init__(self) -> None:
        self.locations: list[_Location] = []
        self.cells: dict[tuple[int, int], list[_Location]] = {}

    @staticmethod
    def _cell(box: tuple[float, float, float, float]) -> tuple[int, int]:
        return int((box[0] + box[2] / 2) // _CELL), int((box[1] + box[3] / 2) // _CELL)

    def add(self, file: str, category: str, box: tuple[float, float, float, float], conf: float,
            options: RepeatOptions) -> None:
        cx, cy = self._cell(box)
        matched = False
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for loc in self.cells.get((cx + dx, cy + dy), ()):
                    if loc.category == category and iou(box, loc.bbox) >= options.iou_threshold:
                        matched = True  # like MegaDetector, one detection may count for several locations
                        _count(loc, file, conf, options)
        if not matched:
            loc = _Location(len(self.locations), category, box)
            _count(loc, file, conf, options)
            self.locations.append(loc)
            self.cells.setdefault((cx, cy), []).append(loc)


def _count(loc: _Location, file: str, conf: float, options: RepeatOptions) -> None:
    loc.count += 1
    loc.conf_min, loc.conf_max = min(loc.conf_min, conf), max(loc.conf_max, conf)
    if len(loc.files) < options.files_listed and (not loc.files or loc.files[-1] != file):
        loc.files.append(file)


class RepeatFinder:
    """Feed merged result entries in order with ``add``; ``result`` lists the suspicious locations."""

    def __init__(self, options: RepeatOptions | None = None) -> None:
        self.options = options or RepeatOptions()
        self._open: dict[str, _Folder] = {}
        self._closed: set[str] = set()
        self._found: list[dict[str, Any]] = []
        self.detections_considered = 0
        self._warned = False

    def add(self, entry: Mapping[str, Any]) -> None:
        name = str(entry.get("file", ""))
        for left in [f for f in self._open if f and not name.startswith(f + "/")]:
            self._close(left)
        dets = entry.get("detections")
        if entry.get("failure") is not None or not dets:
            return
        opts = self.options
        boxes = [(d, b) for d in dets if isinstance(d, Mapping) and (b := detection_box(d)) is not None]
        if not boxes or max(b[0] for _, b in boxes) < opts.confidence_min:
            return
        folder_name = posixpath.dirname(name)
        folder = self._open.get(folder_name)
        if folder is None:
            if folder_name in self._closed and not self._warned:
                logger.warning("repeated-detection search: folder %r seen again after the stream left it; results "
                               "are in name order?", folder_name)
                self._warned = True
            folder = self._open[folder_name] = _Folder()
        for d, (conf, x, y, w, h) in boxes:
            if conf < opts.confidence_min or conf > opts.confidence_max:
                continue
            area = abs(w * h)
            if w == 0 or h == 0 or area < opts.min_area or area > opts.max_area:
                continue
            self.detections_considered += 1
            folder.add(name, str(d.get("category")), (x, y, w, h), conf, opts)

    def _close(self, folder_name: str) -> None:
        folder = self._open.pop(folder_name)
        self._closed.add(folder_name)
        for loc in folder.locations:
            if loc.count >= self.options.occurrence_threshold:
                self._found.append({
                    "folder": folder_name, "category": loc.category, "bbox": list(loc.bbox), "count": loc.count,
                    "conf_min": loc.conf_min, "conf_max": loc.conf_max, "files": list(loc.files),
                    "_order": loc.order})

    def result(self) -> dict[str, Any]:
        """Suspicious locations, most occurrences first, with ids; ends the stream."""
        for folder in list(self._open):
            self._close(folder)
        ranked = sorted(self._found, key=lambda r: (-r["count"], r["folder"], r["_order"]))
        locations = [{"id": f"r{i + 1:05d}", **{k: v for k, v in r.items() if k != "_order"}}
                     for i, r in enumerate(ranked)]
        return {"options": self.options.to_dict(), "detections_considered": self.detections_considered,
                "locations": locations}


class RepeatRemoval:
    """Phase 2: mark the detections that make up chosen repeated locations as false positives.

    As MegaDetector's ``remove_repeat_detections`` does, a marked detection stays in the file with its confidence
    negated, so every threshold drops it while the original value can still be read back. A detection belongs to a
    location when it passes the same filters as in the search and has IoU >= the threshold with the location's box,
    in the same folder and category: exactly the detections the search counted for that location.
    """

    def __init__(self, locations: list[Mapping[str, Any]], options: RepeatOptions | None = None) -> None:
        self.options = options or RepeatOptions()
        self._by_folder: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
        for loc in locations:
            box = tuple(float(v) for v in loc["bbox"])
            self._by_folder.setdefault(str(loc["folder"]), []).append((str(loc["category"]), box))  # type: ignore[arg-type]
        self.marked = 0

    def apply(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """The entry with its matching detections' confidences negated (a new dict; the input is not changed)."""
        out = dict(entry)
        dets = entry.get("detections")
        places = self._by_folder.get(posixpath.dirname(str(entry.get("file", ""))))
        if not dets or not places or entry.get("failure") is not None:
            return out
        opts = self.options
        new = []
        for d in dets:
            box = detection_box(d) if isinstance(d, Mapping) else None
            if box is None:
                new.append(d)
                continue
            conf, x, y, w, h = box
            area = abs(w * h)
            eligible = (opts.confidence_min <= conf <= opts.confidence_max and w != 0 and h != 0
                        and opts.min_area <= area <= opts.max_area)
            if eligible and any(cat == str(d.get("category")) and iou((x, y, w, h), box) >= opts.iou_threshold
                                for cat, box in places):
                d = {**d, "conf": -conf}
                self.marked += 1
            new.append(d)
        out["detections"] = new
        return out
