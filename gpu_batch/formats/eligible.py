"""The repeated-detection search's inputs, per entry: which detections it considers, and a folder's rows of them.

Why here, in the worker's package: the merge view (``gpu_batch.formats.mergeview``) that a GPU worker writes for a
clean shard carries its eligible detections per folder, in the merge's own bytes, so the merge composes them
without reading each entry again (issue 11). ``core.repeats`` (the search) and ``activities.fanin`` (the merge
parts) import them from here: one set of rules on both sides. MegaDetector's rules (``repeat_detections_core``),
see ``core.repeats``.

Must not: do I/O.
"""
from __future__ import annotations

import posixpath
from collections.abc import Mapping  # typing's isinstance is slow (per detection)
from dataclasses import dataclass
from typing import Any

from gpu_batch.formats import jsonio


# The most eligible detections one folder may hold and still be searched (``RepeatOptions.max_folder_detections``;
# the app's default is TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS, ``core.settings``). Why a cap: a folder's search time
# grows with the square of its eligible detections (what it scales with, not its images: an empty image costs
# nothing) and a folder is searched by one activity, so a folder of millions passes the activity's time limit and
# memory; MegaDetector's own ``maxImagesPerFolder`` skips such a folder the same way. 800,000 is twice the repeat
# search's group size: about 1-1.5 min and 600 MB.
DEFAULT_MAX_FOLDER_DETECTIONS = 800_000


@dataclass(frozen=True, slots=True)
class RepeatOptions:
    confidence_min: float = 0.1
    confidence_max: float = 1.0
    iou_threshold: float = 0.9
    occurrence_threshold: int = 20
    min_area: float = 0.0
    max_area: float = 0.2
    files_listed: int = 10  # file names kept per suspicious location (the first ones)
    # a folder with more eligible detections is not searched but named in the list (``core.repeats``, skipped)
    max_folder_detections: int = DEFAULT_MAX_FOLDER_DETECTIONS

    def __post_init__(self) -> None:
        if not 0 < self.iou_threshold <= 1:  # the index's bound (``_Folder``) needs a positive threshold
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_folder_detections < 1:
            raise ValueError(f"max_folder_detections must be at least 1, got {self.max_folder_detections}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RepeatOptions":
        """The options a repeats document (or an activity input) records; keys it lacks take the defaults."""
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})


def detection_box(d: Mapping[str, Any]) -> tuple[float, float, float, float, float] | None:
    """``(conf, x, y, w, h)`` of a detection, or None for a malformed one (skipped: it must not stop a merge)."""
    try:
        x, y, w, h = (float(v) for v in d["bbox"])
        return float(d.get("conf", 0.0)), x, y, w, h
    except (KeyError, TypeError, ValueError):
        return None


# One eligible detection as the search sees it: (file, category, x, y, w, h, conf). Plain JSON-ready values, so the
# fan-in can write a folder's detections to a side blob and search the folder in another activity.
Eligible = tuple[str, str, float, float, float, float, float]


def eligible_detections(entry: Mapping[str, Any], options: RepeatOptions) -> list[Eligible] | None:
    """The detections of a result entry the search considers, in entry order; None when the entry takes no part
    (a failure, no detections, or nothing at ``confidence_min``: MegaDetector's ``max_detection_conf`` check)."""
    dets = entry.get("detections")
    if entry.get("failure") is not None or not dets:
        return None
    # one pass (issue 11: per-image CPU): a dict whose bbox is a list of 4 floats and whose conf is a float is read
    # directly, anything else by ``detection_box``; ``top`` is ``max`` of the confs (the first of equals, and a
    # leading NaN stays, as ``max`` keeps it)
    cmin, cmax, amin, amax = options.confidence_min, options.confidence_max, options.min_area, options.max_area
    name: str | None = None
    out: list[Eligible] = []
    top: float | None = None
    for d in dets:
        if d.__class__ is dict:
            bbox, conf = d.get("bbox"), d.get("conf", 0.0)
            if bbox.__class__ is list and len(bbox) == 4 and conf.__class__ is float:
                x, y, w, h = bbox
                if not (x.__class__ is float and y.__class__ is float and w.__class__ is float
                        and h.__class__ is float):
                    b = detection_box(d)
                    if b is None:
                        continue
                    conf, x, y, w, h = b
            else:
                b = detection_box(d)
                if b is None:
                    continue
                conf, x, y, w, h = b
        elif isinstance(d, Mapping):
            b = detection_box(d)
            if b is None:
                continue
            conf, x, y, w, h = b
        else:
            continue
        if top is None or conf > top:
            top = conf
        if conf < cmin or conf > cmax:
            continue
        area = abs(w * h)
        if w == 0 or h == 0 or area < amin or area > amax:
            continue
        if name is None:
            name = str(entry.get("file", ""))
        out.append((name, str(d.get("category")), x, y, w, h, conf))
    if top is None or top < cmin:
        return None
    return out


class FolderRows:
    """A part's eligible detections per folder, in stream order, held as JSON (``gpu_batch.formats.jsonio``: one piece
    of bytes per entry, a few dozen bytes per detection for the part's duration) with their counts."""

    def __init__(self) -> None:
        self.text: dict[str, list[bytes]] = {}
        self.count: dict[str, int] = {}
        self._dirnames: dict[str, str] = {}  # posixpath.dirname per directory prefix (it depends on that only)

    def add(self, eligible: list[Eligible]) -> None:
        """One entry's eligible detections (all in its folder): one dump of the list with its brackets off, which
        is the rows joined by ",", as b",".join of each row's dump would give."""
        name = eligible[0][0]
        head = name[:name.rfind("/") + 1]
        folder = self._dirnames.get(head)
        if folder is None:
            folder = self._dirnames[head] = posixpath.dirname(name)
        self.text.setdefault(folder, []).append(jsonio.dumps(eligible)[1:-1])
        self.count[folder] = self.count.get(folder, 0) + len(eligible)

    def absorb(self, folder: str, rows: bytes, count: int) -> None:
        """``count`` detections of ``folder`` whose pieces ``add`` made and joined elsewhere (a shard's merge view,
        ``gpu_batch.formats.mergeview``): pieces joined by ``,`` and then joined again by ``,`` are the same bytes."""
        if rows:
            self.text.setdefault(folder, []).append(rows)
            self.count[folder] = self.count.get(folder, 0) + count

    def __len__(self) -> int:
        return len(self.text)
