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
together), so a folder's candidates are dropped as soon as the stream leaves it. The parallel fan-in
(``activities.fanin``) instead collects each folder's ``eligible_detections`` in the same order and runs
``search_folder`` per folder; ``rank_locations`` makes the same document either way. Candidates are indexed by size
and place (``_Folder``), and a large folder is searched a batch of detections at a time with numpy (``_Batched``),
so the search costs about the same per image in a folder of 500 images as in one of 50,000 (1.4x in
``bench/repeat_search.py``). Past that a folder's time grows with the square of its eligible detections (one
folder, bench/repeat_search.py's boxes: 50,000 images 1.1 s, 200,000 6.8 s, 800,000 62 s and +590 MB, 2,000,000 303 s
and +1.17 GB), so a folder with more than ``RepeatOptions.max_folder_detections`` is not searched but named in the
document's ``skipped_folders`` (as MegaDetector's ``maxImagesPerFolder`` skips a folder), here and in the fan-in's
plan (``core.fanin.plan_search``) alike.

Must not: do I/O or change any result; it only reports.
"""
from __future__ import annotations

import functools
import logging
import math
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence  # typing's isinstance is slow (per detection)
from typing import Any

# what the search considers, shared with the GPU worker's merge view; re-exported here for the app's modules
from gpu_batch.formats.eligible import DEFAULT_MAX_FOLDER_DETECTIONS as DEFAULT_MAX_FOLDER_DETECTIONS
from gpu_batch.formats.eligible import Eligible as Eligible
from gpu_batch.formats.eligible import RepeatOptions as RepeatOptions
from gpu_batch.formats.eligible import detection_box as detection_box
from gpu_batch.formats.eligible import eligible_detections as eligible_detections

logger = logging.getLogger(__name__)

_SLACK = 0.01  # widens the size classes and reach past the exact bound, against rounding at the edges
_MIN_CELL = 1e-9
_CELL_REACHES = 2  # a cell is two reaches wide: a candidate is filed in 2 x 2 cells, not 3 x 3 (see _Folder)
_BATCHED_FROM = 8192  # candidates from which a folder is searched a batch at a time with numpy (``_Batched``)
_BATCH = 1024  # detections per batch there
# odd multipliers that spread a cell's numbers over an int64 key (``_Batched``): any values would give the same counts
_HASH_X, _HASH_Y, _HASH_W, _HASH_H, _HASH_CATEGORY = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1


# The id of a repeats document ("search"): the list the merge wrote has none and is ORIGINAL_SEARCH; a search run
# again (POST /api/tasks/{id}/repeats/search, orchestrations.repeat_search) writes its own. A removal names the id of
# the list it chose from, so ids of a replaced list (r00001 ... are assigned afresh by each search) are refused.
ORIGINAL_SEARCH = "merge"


def list_search_id(doc: Mapping[str, Any]) -> str:
    """The search id of a repeats document."""
    return str(doc.get("search") or ORIGINAL_SEARCH)


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


# A candidate location, as a list (made once per candidate, and almost every detection of an animal starts one: a
# list costs a tenth of a dataclass's ``__init__``): occurrences, least and greatest confidence, the files listed
# (the first ``files_listed``), category, and its box x, y, w, h (its first detection's). Its rank among the
# folder's candidates is its place in ``_Folder.locations``.
_Location = list[Any]
COUNT, CONF_MIN, CONF_MAX, FILES, CATEGORY, BOX = 0, 1, 2, 3, 4, 5

# A candidate as its cells hold it: width, height, centre x, centre y, x, y, x + w, y + h, w * h (its box's numbers as
# ``iou`` computes them, once) and the location.
_Filed = tuple[float, float, float, float, float, float, float, float, float, _Location]


def _count(loc: _Location, file: str, conf: float, files_listed: int) -> None:
    """One more occurrence of a location: its count, its confidence range, and the file listed (the first
    ``files_listed`` files, each once in a row)."""
    loc[COUNT] += 1
    if conf < loc[CONF_MIN]:
        loc[CONF_MIN] = conf
    if conf > loc[CONF_MAX]:
        loc[CONF_MAX] = conf
    listed = loc[FILES]
    if len(listed) < files_listed and (not listed or listed[-1] != file):
        listed.append(file)


def _new_location(file: str, category: str, conf: float, x: float, y: float, w: float, h: float,
                  files_listed: int) -> _Location:
    """A location started by a detection, counted once (``_count`` from count 0, confidences 1.0 and 0.0)."""
    return [1, conf if conf < 1.0 else 1.0, conf if conf > 0.0 else 0.0, [file] if files_listed > 0 else [],
            category, x, y, w, h]


class _Folder:
    """The candidate locations of one folder, indexed so a detection meets only candidates that can reach the IoU.

    Why an index over size as well as place: camera folders hold 10,000-100,000 images, and almost every detection of
    an animal starts a candidate of its own, so comparing each detection with every candidate (or with every
    candidate whose centre lies near) grows with the square of the folder. Bound (``t`` the IoU threshold, here 0.9;
    boxes A, B with positive width and height; ``d`` the distance of their centres along x):

    * ``IoU >= t`` needs ``min(wA, wB) / max(wA, wB) >= t`` (and the same for heights): the intersection is at most
      ``min(wA, wB) * hA`` while the union is at least ``wA * hA``. So ``|ln wA - ln wB| <= -ln t``.
    * ``IoU >= t`` needs ``d <= (1 - t) * max(wA, wB)``: the intersection's width is at most
      ``(wA + wB) / 2 - d`` and must be at least ``t * max(wA, wB)`` (the intersection is at least ``t`` times the
      larger area, and its height at most the smaller height). The same holds along y with heights.

    Candidates are indexed by ``(category, kw, kh)`` and then by centre cell ``(ix, iy)``: ``kw = floor(ln w / 2L)``
    with ``L`` a little more than ``-ln t``, so a match is in the detection's width class or in the one neighbour on
    the side its width is nearer to (at most 2 x 2 size classes). In class ``k`` (largest width ``W``) the reach is
    ``R = (1 - t) W / t``: a box that matches a candidate of width ``w < W`` is at most ``w / t`` wide, so the larger
    of the two sides is under ``W / t`` and its centre lies within ``R`` of the candidate's. Cells are ``2R`` wide,
    and a candidate is filed in every cell that its reach ``[c - R, c + R]`` touches (2 x 2, rarely 1 x 1: a span of
    ``2R`` touches at most two cells of ``2R`` along each axis), so a detection looks up ONE cell per size class: at
    most four lookups, whatever the folder size, and it still meets every candidate with ``IoU >= t``, so the counts
    equal a comparison with all of them (MegaDetector's own search, with a quadtree index over centres, counts the
    same pairs). Cells of ``2R`` rather than ``R`` file each candidate in 4 cells instead of 9 (filing is most of the
    work: almost every detection of an animal starts a candidate) for a few more IoU comparisons per lookup. Boxes
    with a non-positive or non-finite side are never indexed: their IoU with anything is 0 (``iou``), so they only
    ever start a candidate. A folder that grows past ``_BATCHED_FROM`` candidates is searched on by ``_Batched``.
    """

    def __init__(self, iou_threshold: float) -> None:
        self.locations: list[_Location] = []
        # (category, kw, kh) -> cell -> candidates: a size class with no candidate costs one lookup. A cell's key is
        # ``(ix << 20) + iy``, an int (cheaper to make and hash than the pair); two cells more than 2**19 cells
        # apart along y may share a key, which costs only the sieve's time, as the sieve and the IoU decide
        self.classes: dict[tuple[str, int, int], dict[int, list[_Filed]]] = {}
        self._span = max(-math.log(iou_threshold), 1e-3) * (1 + _SLACK)  # largest |ln side ratio| of a match
        self._step = 2 * self._span  # log-size class width: a match is in the class or in one neighbour
        self._reach = (1 - iou_threshold) * (1 + _SLACK)  # centre distance per unit of the larger side
        self._t = iou_threshold
        self._cells: dict[int, float] = {}  # class -> cell size (twice the reach of a match with the class)
        self.compared = 0  # candidates a detection met in its cells, summed: the index's work
        self.ious = 0  # of those, the ones that passed the size and centre bounds and had their IoU computed
        # The bounds above as a sieve before the IoU (``add``): a candidate of width ``lw`` can match a detection of
        # width ``w`` only if ``w * t <= lw <= w / t`` and its centre is within ``(1 - t) * max(w, lw)``; widened by
        # _SLACK (and 1e-9 against t = 1), so nothing that reaches the threshold is sieved out.
        self._ratio_lo = iou_threshold * (1 - _SLACK)
        self._ratio_hi = (1 + _SLACK) / iou_threshold
        self._distance = (1 - iou_threshold + 1e-9) * (1 + _SLACK)
        self._batched: _Batched | None = None  # the search from ``_BATCHED_FROM`` candidates on

    def _cell(self, k: int) -> float:
        size = self._cells.get(k)
        if size is None:
            reach = self._reach / self._t * math.exp((k + 1) * self._step)  # R of the class (docstring)
            size = self._cells[k] = max(_CELL_REACHES * reach, _MIN_CELL)
        return size

    def add_rows(self, rows: Iterable[Sequence[Any]], options: RepeatOptions) -> int:
        """Each ``(file, category, x, y, w, h, conf)`` row in order, as a detection of the folder; returns how many.
        From ``_BATCHED_FROM`` candidates on, ``_Batched`` searches the rest of the folder (when numpy imports)."""
        if self._batched is not None:
            return self._batched.add(rows)
        remaining = iter(rows)
        n = self._add_rows(remaining, options)
        if self._batched is not None:  # the folder grew large in this call: the rest goes to the batched search
            n += self._batched.add(remaining)
        return n

    def _add_rows(self, rows: Iterator[Sequence[Any]], options: RepeatOptions) -> int:
        """``add_rows`` one detection at a time, until the folder holds ``_BATCHED_FROM`` candidates.

        One loop over a batch, with everything it reads bound to locals first and the size classes, the cell sizes
        and the counting written out inline: it runs once per eligible detection of the task, and at 10M images a
        method call or attribute read per detection is a measurable share of the control plane (``bench/RESULTS.md``,
        twelfth session). A candidate's numbers are read by index as the sieve needs them (most fail on the first
        or second), not unpacked: unpacking touches every number of the candidate, and at 50,000 images per folder
        the candidates are far past the processor's caches.
        """
        log, floor, inf = math.log, math.floor, math.inf
        classes, cell_sizes, cell, locations = self.classes, self._cells, self._cell, self.locations
        span, step = self._span, self._step
        ratio_lo, ratio_hi, distance = self._ratio_lo, self._ratio_hi, self._distance
        threshold, files_listed = options.iou_threshold, options.files_listed
        batched_from = _BATCHED_FROM if _numpy_imports() else math.inf
        compared = ious = n = 0
        for file, category, x, y, w, h, conf in rows:
            n += 1
            file, category = str(file), str(category)
            x, y, w, h, conf = float(x), float(y), float(w), float(h), float(conf)
            matched = False
            # finite and positive sides (a NaN fails every comparison), finite corners: the box can be indexed
            indexable = 0 < w < inf and 0 < h < inf and -inf < x < inf and -inf < y < inf
            if indexable:
                cx, cy = x + w / 2, y + h / 2
                x2, y2, area = x + w, y + h, w * h  # as ``iou`` computes them
                # the side's own size class, and the (at most two) classes that hold every side within ``_span``
                # of it in log space
                ln = log(w)
                own_w = floor(ln / step)
                kws = ((own_w - 1, own_w) if ln - own_w * step < span
                       else (own_w, own_w + 1) if (own_w + 1) * step - ln <= span else (own_w,))
                ln = log(h)
                own_h = floor(ln / step)
                khs = ((own_h - 1, own_h) if ln - own_h * step < span
                       else (own_h, own_h + 1) if (own_h + 1) * step - ln <= span else (own_h,))
                w_lo, w_hi, h_lo, h_hi = w * ratio_lo, w * ratio_hi, h * ratio_lo, h * ratio_hi
                rx, ry = distance * w_hi, distance * h_hi  # w_hi >= max(w, lw) once lw passed the sieve
                for kw in kws:
                    sx = cell_sizes.get(kw) or cell(kw)
                    for kh in khs:
                        cells = classes.get((category, kw, kh))
                        if not cells:
                            continue
                        found = cells.get((floor(cx / sx) << 20) + floor(cy / (cell_sizes.get(kh) or cell(kh))))
                        if not found:
                            continue
                        compared += len(found)
                        for c in found:
                            # the sieve (__init__), then ``iou(box, loc.bbox)`` inlined: the same float operations
                            # in the same order (``min``/``max`` as conditionals that pick the same operand), so
                            # the same value and the same decisions
                            if not w_lo <= c[0] <= w_hi or not h_lo <= c[1] <= h_hi:
                                continue
                            if not -rx <= c[2] - cx <= rx or not -ry <= c[3] - cy <= ry:
                                continue
                            ious += 1
                            lx, ly, lx2, ly2, larea, loc = c[4:]
                            iw = (lx2 if lx2 < x2 else x2) - (lx if lx > x else x)
                            ih = (ly2 if ly2 < y2 else y2) - (ly if ly > y else y)
                            if iw < 0 or ih < 0:
                                continue
                            inter = iw * ih
                            union = area + larea - inter
                            if union > 0 and inter / union >= threshold:
                                matched = True  # like MegaDetector, one detection may count for several
                                # ``_count(loc, file, conf, files_listed)``, written out (a call per match)
                                loc[0] += 1
                                if conf < loc[1]:
                                    loc[1] = conf
                                if conf > loc[2]:
                                    loc[2] = conf
                                listed = loc[3]
                                if len(listed) < files_listed and (not listed or listed[-1] != file):
                                    listed.append(file)
            if matched:
                continue
            loc = _new_location(file, category, conf, x, y, w, h, files_listed)
            locations.append(loc)
            if indexable:
                sx, sy = cell_sizes.get(own_w) or cell(own_w), cell_sizes.get(own_h) or cell(own_h)
                rx, ry = sx / _CELL_REACHES, sy / _CELL_REACHES  # the reach
                cells = classes.get((category, own_w, own_h))
                if cells is None:
                    cells = classes[(category, own_w, own_h)] = {}
                x0, x1 = floor((cx - rx) / sx), floor((cx + rx) / sx)
                y0, y1 = floor((cy - ry) / sy), floor((cy + ry) / sy)
                filed: _Filed = (w, h, cx, cy, x, y, x2, y2, area, loc)  # one tuple for all its cells
                if x1 == x0 + 1 and y1 == y0 + 1:  # 2 x 2 cells, as almost always: their keys written out
                    x0 <<= 20
                    x1 <<= 20
                    keys: Iterable[int] = (x0 + y0, x0 + y1, x1 + y0, x1 + y1)
                else:  # each cell once (a key twice would count a detection twice for this candidate)
                    keys = [(ix << 20) + iy for ix in range(x0, x1 + 1) for iy in range(y0, y1 + 1)]
                for key in keys:  # the cells' keys (see ``classes``)
                    bucket = cells.get(key)
                    if bucket is None:
                        cells[key] = [filed]
                    else:
                        bucket.append(filed)
            if len(locations) >= batched_from:
                self._batched = _Batched(self, options)  # files every candidate again, this one included
                self.classes = {}
                break
        self.compared += compared
        self.ious += ious
        return n

    def suspicious(self, folder_name: str, options: RepeatOptions) -> list[dict[str, Any]]:
        """The folder's candidates with enough occurrences, in the order they were found (``_order``)."""
        if self._batched is not None:
            self._batched.flush()
        return [{"folder": folder_name, "category": loc[CATEGORY], "bbox": loc[BOX:BOX + 4], "count": loc[COUNT],
                 "conf_min": loc[CONF_MIN], "conf_max": loc[CONF_MAX], "files": list(loc[FILES]), "_order": order}
                for order, loc in enumerate(self.locations) if loc[COUNT] >= options.occurrence_threshold]


@functools.lru_cache(maxsize=1)
def _numpy_imports() -> bool:
    """Whether numpy can be imported (it is in the app's requirements; without it every folder stays in ``_Folder``)."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


class _Batched:
    """The same search over a large folder's candidates, a batch of detections at a time, with numpy.

    Why: in a folder of tens of thousands of images each detection's lookups in ``_Folder``'s dictionaries (and the
    candidates they hold) are memory accesses far past the caches, and the time per detection grew 2.4-2.6x from
    500 to 50,000 images per folder (``bench/RESULTS.md``, thirteenth session); here a batch's lookups, sieve and
    IoUs are array operations, and only the decisions that depend on order are a loop. ``_Folder`` hands a folder
    over once it holds ``_BATCHED_FROM`` candidates (its candidates filed again here), when numpy can be imported.

    The same index (size classes, cells of ``2R``, a candidate filed in the cells its reach touches: ``_Folder``),
    with each cell's key hashed into one int64 (``_HASH_*``), so cells may share a key: that costs only the sieve's
    time, because a match must also have the detection's category and a (detection, candidate) pair counts once
    however many keys lead to it. Per batch, in order of the rows:

    1. the pairs of each detection with the candidates from before the batch whose cells it looks up, through
       sorted keys; the sieve and the IoU on arrays, with the same float operations as ``_Folder.add_rows`` (and so
       the same decisions: ``min``/``max`` pick the same operand of finite numbers, and a box that is not finite or
       not positive is never filed);
    2. the pairs within the batch, among detections that met no earlier candidate (only those can start one);
    3. in order: a detection counts for each candidate it matched, earlier ones of the batch that started one
       included; one that matched none starts a candidate, which is then filed.

    Rows wait in ``pending`` until a batch is full or ``flush`` (``_Folder.suspicious``); the counts are the same as
    ``_Folder``'s, whatever the batch (``tests/unit/test_repeats.py`` runs the searches both ways).
    """

    def __init__(self, folder: "_Folder", options: RepeatOptions) -> None:
        import numpy  # not needed by a folder that never grows this large

        self.np = numpy
        self.folder, self.options = folder, options
        self.pending: list[Sequence[Any]] = []
        self.codes: dict[str, int] = {}
        self.keys = numpy.zeros(0, numpy.int64)  # the filings' keys, sorted
        self.owners = numpy.zeros(0, numpy.int64)  # the candidate (its place in ``folder.locations``) of each key
        self.boxes = numpy.zeros((max(1024, 2 * len(folder.locations)), 9))  # w h cx cy x y x2 y2 area, by place
        self.categories = numpy.zeros(len(self.boxes), numpy.int64)
        locations = folder.locations
        if locations:
            self._file(numpy.arange(len(locations)), [loc[CATEGORY] for loc in locations],
                       numpy.array([loc[BOX:BOX + 4] for loc in locations], dtype=numpy.float64))

    def add(self, rows: Iterable[Sequence[Any]]) -> int:
        n = 0
        for row in rows:
            self.pending.append(row)
            n += 1
            if len(self.pending) >= _BATCH:
                self.flush()
        return n

    def flush(self) -> None:
        if self.pending:
            rows, self.pending = self.pending, []
            self._batch(rows)

    def _code(self, category: str) -> int:
        code = self.codes.get(category)
        if code is None:
            code = self.codes[category] = len(self.codes) + 1
        return code

    def _numbers(self, xywh: Any) -> tuple[Any, ...]:
        """w, h, cx, cy, x, y, x2, y2, area as ``_Folder.add_rows`` computes them, whether each box can be filed,
        and its size classes (``ow``, ``oh``) and their natural logs."""
        np = self.np
        x, y, w, h = (xywh[:, i] for i in range(4))
        with np.errstate(invalid="ignore", over="ignore"):
            ok = (w > 0) & (w < np.inf) & (h > 0) & (h < np.inf) & np.isfinite(x) & np.isfinite(y)
            lw, lh = np.log(np.where(ok, w, 1.0)), np.log(np.where(ok, h, 1.0))
            step = self.folder._step
            ow, oh = np.floor(lw / step).astype(np.int64), np.floor(lh / step).astype(np.int64)
            numbers = np.stack([w, h, x + w / 2, y + h / 2, x, y, x + w, y + h, w * h], 1)
        return numbers, ok, ow, oh, lw, lh

    def _cells(self, k: Any) -> Any:
        """Cell sizes of size classes ``k`` (``_Folder._cell``)."""
        np, f = self.np, self.folder
        return np.maximum(_CELL_REACHES * (f._reach / f._t) * np.exp((k + 1) * f._step), _MIN_CELL)

    def _filings(self, numbers: Any, ok: Any, ow: Any, oh: Any, codes: Any) -> tuple[Any, Any]:
        """The keys of the cells each box's reach touches (2 x 2, fewer at a cell's edge) and the box of each."""
        np = self.np
        sx, sy = self._cells(ow), self._cells(oh)
        cx, cy = numbers[:, 2], numbers[:, 3]
        rx, ry = sx / _CELL_REACHES, sy / _CELL_REACHES
        with np.errstate(invalid="ignore"):  # boxes that are not ``ok`` cast nonsense here, never used
            x0, x1 = np.floor((cx - rx) / sx).astype(np.int64), np.floor((cx + rx) / sx).astype(np.int64)
            y0, y1 = np.floor((cy - ry) / sy).astype(np.int64), np.floor((cy + ry) / sy).astype(np.int64)
        keys, boxes = [], []
        index = np.arange(len(numbers))
        for ix, iy, take in ((x0, y0, ok), (x1, y0, ok & (x1 != x0)), (x0, y1, ok & (y1 != y0)),
                             (x1, y1, ok & (x1 != x0) & (y1 != y0))):
            keys.append(self._key(ix, iy, ow, oh, codes)[take])
            boxes.append(index[take])
        return np.concatenate(keys), np.concatenate(boxes)

    def _key(self, ix: Any, iy: Any, kw: Any, kh: Any, codes: Any) -> Any:
        return (ix * _HASH_X) ^ (iy * _HASH_Y) ^ (kw * _HASH_W) ^ (kh * _HASH_H) ^ (codes * _HASH_CATEGORY)

    def _file(self, places: Any, categories: list[str], xywh: Any) -> None:
        """File candidates (places in ``folder.locations``) in the sorted keys."""
        np = self.np
        numbers, ok, ow, oh, _, _ = self._numbers(xywh)
        codes = np.array([self._code(c) for c in categories], np.int64)
        need = int(places.max()) + 1 if len(places) else 0
        if need > len(self.boxes):
            size = max(need, 2 * len(self.boxes))
            self.boxes = np.concatenate([self.boxes, np.zeros((size - len(self.boxes), 9))])
            self.categories = np.concatenate([self.categories, np.zeros(size - len(self.categories), np.int64)])
        self.boxes[places] = numbers
        self.categories[places] = codes
        keys, boxes = self._filings(numbers, ok, ow, oh, codes)
        order = np.argsort(keys, kind="stable")
        keys, owners = keys[order], places[boxes[order]]
        at = np.searchsorted(self.keys, keys)
        self.keys, self.owners = np.insert(self.keys, at, keys), np.insert(self.owners, at, owners)

    def _lookups(self, numbers: Any, ok: Any, ow: Any, oh: Any, lw: Any, lh: Any, codes: Any) -> tuple[Any, Any]:
        """The keys each detection looks up (one cell per size class it can match, ``_Folder.add_rows``) and the
        detection of each."""
        np = self.np
        f = self.folder
        span, step = f._span, f._step
        nw = np.where(lw - ow * step < span, -1, np.where((ow + 1) * step - lw <= span, 1, 0))
        nh = np.where(lh - oh * step < span, -1, np.where((oh + 1) * step - lh <= span, 1, 0))
        keys, dets = [], []
        index = np.arange(len(numbers))
        for kw, kh, take in ((ow, oh, ok), (ow, oh + nh, ok & (nh != 0)), (ow + nw, oh, ok & (nw != 0)),
                             (ow + nw, oh + nh, ok & (nw != 0) & (nh != 0))):
            with np.errstate(invalid="ignore"):  # as in ``_filings``
                ix = np.floor(numbers[:, 2] / self._cells(kw)).astype(np.int64)
                iy = np.floor(numbers[:, 3] / self._cells(kh)).astype(np.int64)
            keys.append(self._key(ix, iy, kw, kh, codes)[take])
            dets.append(index[take])
        return np.concatenate(keys), np.concatenate(dets)

    def _pairs(self, keys: Any, dets: Any, sorted_keys: Any, owners: Any) -> tuple[Any, Any]:
        """Each (detection, owner) whose keys are equal (the pairs in key order: ``_matches`` orders them)."""
        np = self.np
        order = np.argsort(keys)  # sorted queries: each binary search starts where the last one ended (numpy)
        keys, dets = keys[order], dets[order]
        lo, hi = np.searchsorted(sorted_keys, keys, "left"), np.searchsorted(sorted_keys, keys, "right")
        count = hi - lo
        total = int(count.sum())
        if not total:
            return dets[:0], owners[:0]
        starts = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(total)
        return np.repeat(dets, count), owners[starts]

    def _matches(self, dets: Any, others: Any, numbers: Any, codes: Any, boxes: Any,
                 categories: Any) -> tuple[Any, Any]:
        """The pairs whose IoU reaches the threshold with the same category, each once, by detection."""
        np, f = self.np, self.folder
        if not len(dets):
            return dets, others
        w, h, cx, cy, x, y, x2, y2, area = (numbers[dets, i] for i in range(9))
        c = boxes[others]
        w_hi, h_hi = w * f._ratio_hi, h * f._ratio_hi
        keep = (w * f._ratio_lo <= c[:, 0]) & (c[:, 0] <= w_hi) & (h * f._ratio_lo <= c[:, 1]) & (c[:, 1] <= h_hi)
        keep &= (np.abs(c[:, 2] - cx) <= f._distance * w_hi) & (np.abs(c[:, 3] - cy) <= f._distance * h_hi)
        f.compared += len(dets)
        f.ious += int(keep.sum())
        iw = np.minimum(c[:, 6], x2) - np.maximum(c[:, 4], x)
        ih = np.minimum(c[:, 7], y2) - np.maximum(c[:, 5], y)
        inter = iw * ih
        union = area + c[:, 8] - inter
        positive = union > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            reaches = inter / np.where(positive, union, 1.0) >= self.options.iou_threshold
        keep &= (iw >= 0) & (ih >= 0) & positive & reaches & (categories[others] == codes[dets])
        span = int(others.max()) + 1 if len(others) else 1
        pairs = np.unique(dets[keep] * span + others[keep])  # once each, by detection
        return pairs // span, pairs % span

    def _batch(self, rows: list[Sequence[Any]]) -> None:
        np, folder, options = self.np, self.folder, self.options
        files, categories = [str(r[0]) for r in rows], [str(r[1]) for r in rows]
        values = np.array([r[2:7] for r in rows], dtype=np.float64)
        conf = values[:, 4].tolist()
        numbers, ok, ow, oh, lw, lh = self._numbers(values[:, :4])
        codes = np.array([self._code(c) for c in categories], np.int64)
        keys, dets = self._lookups(numbers, ok, ow, oh, lw, lh, codes)
        earlier_dets, earlier = self._matches(*self._pairs(keys, dets, self.keys, self.owners), numbers, codes,
                                              self.boxes, self.categories)
        met = np.zeros(len(rows), bool)
        met[earlier_dets] = True
        # within the batch: which detections that met no earlier candidate match each other
        own_keys, own = self._filings(numbers, ok & ~met, ow, oh, codes)
        order = np.argsort(own_keys, kind="stable")
        in_dets, in_others = self._pairs(keys, dets, own_keys[order], own[order])
        before = in_others < in_dets
        in_dets, in_others = self._matches(in_dets[before], in_others[before], numbers, codes, numbers, codes)
        matched: dict[int, list[int]] = {}
        for d, c in zip(earlier_dets.tolist(), earlier.tolist()):
            matched.setdefault(d, []).append(c)
        within: dict[int, list[int]] = {}
        for d, k in zip(in_dets.tolist(), in_others.tolist()):
            within.setdefault(d, []).append(k)
        locations, files_listed = folder.locations, options.files_listed
        started: dict[int, int] = {}  # detection of the batch -> its place in ``locations``
        for i, (file, category, value) in enumerate(zip(files, categories, conf)):
            places = matched.get(i, [])
            for k in within.get(i, ()):
                if k in started:
                    places.append(started[k])
            if places:
                for place in places:
                    _count(locations[place], file, value, files_listed)
                continue
            started[i] = len(locations)
            x, y, w, h = values[i, :4].tolist()
            locations.append(_new_location(file, category, value, x, y, w, h, files_listed))
        if started:
            new = np.array(list(started), np.int64)
            self._file(np.array(list(started.values()), np.int64), [categories[i] for i in started], values[new, :4])


class FolderSearch:
    """MegaDetector's folder search over one folder's eligible detections (``Eligible`` rows), fed in stream order
    in as many batches as come (a folder's detections may come from several parts of the fan-in)."""

    def __init__(self, folder_name: str, options: RepeatOptions | None = None) -> None:
        self.folder_name = folder_name
        self.options = options or RepeatOptions()
        self._folder = _Folder(self.options.iou_threshold)

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        self._folder.add_rows(rows, self.options)

    def suspicious(self) -> list[dict[str, Any]]:
        """Its suspicious locations, each with ``_order`` (rank among the folder's candidates) for ``rank_locations``."""
        return self._folder.suspicious(self.folder_name, self.options)


def search_folder(folder_name: str, detections: Iterable[Sequence[Any]],
                  options: RepeatOptions | None = None) -> list[dict[str, Any]]:
    """``FolderSearch`` over all of one folder's detections at once."""
    search = FolderSearch(folder_name, options)
    search.add_rows(detections)
    return search.suspicious()


# The most eligible detections ``max_folder_detections`` may be (core.requests refuses more, and so does
# TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS). Why: a folder is searched by one activity, in time growing with the square
# of its eligible detections (bench/repeat_search.py, one folder: 800,000 took 62 s and 590 MB, 2,000,000 took 303 s
# and 1.17 GB); 3,000,000 is about 11 minutes and 1.8 GB there, inside the activity's 30-minute limit (host.json
# functionTimeout) on a slower instance and its share of the instance's 4 GB, which up to 8 activities run on at once
# (maxConcurrentActivityFunctions). Near 5,000,000 one folder passes both.
MAX_FOLDER_DETECTIONS = 3_000_000
SKIPPED_LISTED = 100  # skipped folders a repeats document names (the rest are counted)


def skipped_summary(skipped: Sequence[tuple[str, int]], options: RepeatOptions,
                    task_id: str = "<task id>") -> dict[str, Any]:
    """What a repeats document says about the folders the search left out (``max_folder_detections``): how many, their
    eligible detections, the first ``SKIPPED_LISTED`` by name with their counts, and what to do about them (for
    ``task_id``: a task's id, or a generation's key, whose task the commands name)."""
    task_id = task_id.split("/", 1)[0]  # a re-run's key is <task>/runs/<run> (gpu_batch.layout.generation_key)
    largest = max(n for _, n in skipped)
    split = ("split such a folder into subfolders (by camera, site or date) in the tasks to come: the search is per "
             "folder")
    if largest <= MAX_FOLDER_DETECTIONS:
        todo = (f"search again with a higher cap: trapbatch repeats {task_id} --search --max-folder-detections "
                f"{largest} (POST /api/tasks/{task_id}/repeats/search {{\"max_folder_detections\": {largest}}}; at "
                f"most {MAX_FOLDER_DETECTIONS}, minutes per folder), or {split}")
    else:
        todo = f"{split} (at most {MAX_FOLDER_DETECTIONS} eligible detections fit one search activity)"
    return {"folders": len(skipped), "detections": sum(n for _, n in skipped),
            "listed": [{"folder": f, "detections": n} for f, n in skipped[:SKIPPED_LISTED]],
            "more": max(0, len(skipped) - SKIPPED_LISTED),
            "hint": f"each of these folders holds more than max_folder_detections ({options.max_folder_detections}) "
                    "eligible detections and was not searched (a folder's search takes time growing with the square "
                    f"of them); {todo}"}


def rank_locations(found: Iterable[Mapping[str, Any]], options: RepeatOptions, detections_considered: int,
                   skipped: Sequence[tuple[str, int]] = (), task_id: str = "<task id>") -> dict[str, Any]:
    """The repeated-detections document: locations most occurrences first (ties by folder, then order found), with
    ids; the same whether the folders were searched in one stream or in parallel. ``skipped``: the folders left out
    for holding more than ``max_folder_detections`` eligible detections, in name order with their counts
    (``skipped_folders``, only when there are some: a reader must not take their silence for no repeats)."""
    ranked = sorted(found, key=lambda r: (-r["count"], r["folder"], r["_order"]))
    locations = [{"id": f"r{i + 1:05d}", **{k: v for k, v in r.items() if k != "_order"}}
                 for i, r in enumerate(ranked)]
    doc = {"options": options.to_dict(), "detections_considered": detections_considered, "locations": locations}
    if skipped:
        doc["skipped_folders"] = skipped_summary(skipped, options, task_id)
    return doc


class RepeatFinder:
    """Feed merged result entries in order with ``add``; ``result`` lists the suspicious locations."""

    def __init__(self, options: RepeatOptions | None = None) -> None:
        self.options = options or RepeatOptions()
        self._open: dict[str, _Folder | None] = {}  # None: over max_folder_detections, no longer searched
        self._sizes: dict[str, int] = {}  # eligible detections of each open folder so far
        self._closed: set[str] = set()
        self._found: list[dict[str, Any]] = []
        self._skipped: list[tuple[str, int]] = []
        self.detections_considered = 0
        self.compared = 0  # candidates met in the index, over closed folders (bench/repeat_search.py reports it)
        self.ious = 0  # of those, the IoUs computed (past the sieve)
        self._warned = False

    def add(self, entry: Mapping[str, Any]) -> None:
        name = str(entry.get("file", ""))
        for left in [f for f in self._open if f and not name.startswith(f + "/")]:
            self._close(left)
        rows = eligible_detections(entry, self.options)
        if rows is None:
            return
        folder_name = posixpath.dirname(name)
        if folder_name not in self._open:
            if folder_name in self._closed and not self._warned:
                logger.warning("repeated-detection search: folder %r seen again after the stream left it; results "
                               "are in name order?", folder_name)
                self._warned = True
            self._open[folder_name] = _Folder(self.options.iou_threshold)
            self._sizes[folder_name] = 0
        self.detections_considered += len(rows)
        size = self._sizes[folder_name] = self._sizes[folder_name] + len(rows)
        if size > self.options.max_folder_detections:  # left out, as the fan-in's plan leaves it out of every group
            self._open[folder_name] = None  # its candidates go: memory stays bounded as the folder goes on
            return
        folder = self._open[folder_name]
        if folder is not None:
            folder.add_rows(rows, self.options)

    def _close(self, folder_name: str) -> None:
        folder = self._open.pop(folder_name)
        size = self._sizes.pop(folder_name)
        self._closed.add(folder_name)
        if folder is None:
            self._skipped.append((folder_name, size))
            return
        self._found.extend(folder.suspicious(folder_name, self.options))  # first: it ends a batched search's work
        self.compared += folder.compared
        self.ious += folder.ious

    def result(self, task_id: str = "<task id>") -> dict[str, Any]:
        """Suspicious locations, most occurrences first, with ids; ends the stream. ``task_id``: whose commands the
        skipped folders' hint names (``rank_locations``)."""
        for folder in list(self._open):
            self._close(folder)
        return rank_locations(self._found, self.options, self.detections_considered, sorted(self._skipped), task_id)


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
