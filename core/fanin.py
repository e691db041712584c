"""The parallel fan-in's pure parts: which shards each merge part takes, how fragments make the results' bytes, and
how folders are grouped for the repeated-detection search.

Why this module exists: the merge used to stream every shard through one activity (~190 us per image: hours for ten
million images, far past ``functionTimeout``). Now fixed ranges of shards are merged by parallel activities
(``activities.fanin``), each into fragments that the combine step composes into the same bytes the single pass
wrote. The byte layout of the results JSON is the single pass's (``activities.merge``): a head, then the entries,
each preceded by ``",\\n  "`` except the first, preceded by ``"\\n  "``, then ``"\\n ]\\n}\\n"``. A part writes every
entry with the comma, so the combine drops exactly one byte: the first byte of the first non-empty fragment. Each
entry is ``entry_json``'s bytes (``gpu_batch.formats.entries``: compact, ASCII, one line), which both merges use, as
does the GPU worker's merge view.

Must not: do I/O, or read the clock.
"""
from __future__ import annotations

import json
import math
from array import array
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

from core import mdformat
# the entries' bytes, shared with the GPU worker's merge view; re-exported here for the merges
from gpu_batch.formats.entries import ENTRY_SEPARATOR as ENTRY_SEPARATOR
from gpu_batch.formats.entries import entry_fragment as entry_fragment
from gpu_batch.formats.entries import entry_json as entry_json

MAX_PARTS = 10_000  # parts per merge; a block blob holds 50,000 committed blocks (see adapters.compose)
# parts per merge of a task started since OrchestrationKnobs.merge_max_parts (Settings.from_env sets it): the task's
# execution schedules about six calls a part (merge, exports, Zooniverse parts) and each retry round again the calls
# not yet done, and the Durable extension drops every action of an execution past maxOrchestrationActions, 100,000,
# so the task never ends (devhost row 47; devhost fails it):
# 10,000 parts (a TRAPBATCH_MERGE_IMAGES_PER_PART of a few images at ten million) made ~60,000 on the first round.
# 1,000 parts of a 10M-image task hold 10,000 images each (~2 s to merge); the default knob makes 50.
SAFE_MAX_PARTS = 1_000
MAX_SHARDS_PER_PART = 1_000  # each shard costs a listing and two reads (~10-30 ms) whatever its size
SEARCH_DETECTIONS_PER_GROUP = 400_000  # eligible detections per repeat-search activity (~20-60 s at ~50-150 us)
RESULTS_TAIL = mdformat.RESULTS_TAIL


def plan_parts(shards: int, images: int, images_per_part: int, max_parts: int = MAX_PARTS) -> list[tuple[int, int]]:
    """``(first shard, shard count)`` of each merge part, in order, covering ``range(shards)`` exactly.

    Shards hold ``ceil(images / shards)`` images (enumeration fills every shard but the last), so a part of
    ``images_per_part // that`` shards (at least one, at most ``MAX_SHARDS_PER_PART``: tiny shards cost their I/O)
    merges about ``images_per_part`` images: the activity's time is bounded by the knob, not by the task. Never more
    than ``max_parts`` parts (ranges grow instead).
    """
    if shards <= 0:
        return []
    per_shard = max(1, math.ceil(images / shards)) if images > 0 else 1
    size = max(1, min(images_per_part // per_shard, MAX_SHARDS_PER_PART), math.ceil(shards / max_parts))
    return [(first, min(size, shards - first)) for first in range(0, shards, size)]


def results_head(info: Mapping[str, Any]) -> bytes:
    """The results JSON up to and including ``"images": [`` (as the single-pass merge writes it)."""
    head = json.dumps({"info": info, "detection_categories": mdformat.DETECTION_CATEGORIES}, indent=1)
    return (head[:-2] + ',\n "images": [').encode("utf-8")


def json_ranges(sizes: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(part, offset, length)`` of each non-empty JSON fragment as it goes into the results: the first one without
    its leading comma (one byte), the others whole."""
    out: list[tuple[int, int, int]] = []
    for part, size in enumerate(sizes):
        if size > 0:
            skip = 0 if out else 1
            out.append((part, skip, size - skip))
    return out


class SearchPlan(NamedTuple):
    """The repeat search's folder groups, and the folders left out of every group."""

    groups: list[dict[str, Any]]
    # folders with more eligible detections than the cap, in name order, each with its count: not searched
    skipped: list[tuple[str, int]]


def plan_search(indexes: Iterable[Sequence[Sequence[Any]]], per_group: int = SEARCH_DETECTIONS_PER_GROUP,
                max_folder_detections: int | None = None) -> SearchPlan:
    """Group folders (in name order) for the parallel repeat search, from each part's folder index.

    ``indexes`` is, per part in order, that part's ``[folder, offset, length, detections]`` rows, folders in name
    order (``activities.fanin`` writes them). Folders are taken in name order into groups of about ``per_group``
    detections; a folder is never split (its search is sequential), so a folder larger than ``per_group`` is a group
    of its own. A folder with more than ``max_folder_detections`` eligible detections (None: no cap) is in no group
    but in ``skipped``: its search would take time growing with the square of its detections, past the activity's
    time limit and memory (``RepeatOptions.max_folder_detections``). A group's plan names, per part, the one byte
    range covering all its folders' lines there (its folders are contiguous in each part's file):
    ``{"folders": [...], "ranges": [[part, offset, length], ...]}``, parts in order, so reading the ranges in order
    gives each folder's detections in stream order. A skipped folder ends the group before it, so no range holds its
    lines (each is one line per part, and a line is parsed whole). ``"last"`` names, per folder, the index of
    the last range holding its lines: its search can end there, so a group holds the candidates of the folders being
    read, not of all of its folders (``activities.fanin.run_search_repeats``).
    """
    skipped: list[tuple[str, int]] = []
    groups = list(search_groups(indexes, per_group, max_folder_detections, skipped))
    return SearchPlan(groups, skipped)


def search_groups(indexes: Iterable[Sequence[Sequence[Any]]], per_group: int, max_folder_detections: int | None,
                  skipped: list[tuple[str, int]]) -> Iterator[dict[str, Any]]:
    """``plan_search``'s groups one at a time, as each is complete (a caller writes one and lets it go), the folders
    left out appended to ``skipped`` as they come (all of them once the groups are done). ``indexes`` is read a part
    at a time (each may be a part's index as it is read: only the folders' rows are kept, ``_FolderRows``)."""
    where = _FolderRows(indexes)
    current: list[str] = []
    load = 0
    for folder in sorted(where.first):
        count = where.count(folder)
        if max_folder_detections is not None and count > max_folder_detections:
            skipped.append((folder, count))
            if current:  # a group's ranges must not span the skipped folder's lines (read whole, a line a part)
                yield _group(current, where)
                current, load = [], 0
            continue
        if current and load + count > per_group:
            yield _group(current, where)
            current, load = [], 0
        current.append(folder)
        load += count
    if current:
        yield _group(current, where)


class _FolderRows:
    """The parts' index rows by folder: of each folder its last row read (``first``: the chain starts there) and of
    each row the folder's row read before it (``before``, -1: none), part, offset, length and detections, in flat
    arrays. Why not a list of tuples a folder: with the parts' parsed indexes all held, the plan took ~450-520 bytes
    a folder (a million folders of camera-day collections: 524 MB, bench/RESULTS.md forty-eighth session); this is
    the folder's name, a dict entry and 40 bytes a row, and only one part's parsed index is held at a time
    (tests/unit/test_fanin_plan.py: ~180 bytes a folder with ``activities.fanin.plan_groups``)."""

    def __init__(self, indexes: Iterable[Sequence[Sequence[Any]]]) -> None:
        self.first: dict[str, int] = {}
        self._before, self._part, self._offset, self._length, self._count = (array("q") for _ in range(5))
        for part, rows in enumerate(indexes):
            for folder, offset, length, count in rows:
                name = str(folder)
                self._before.append(self.first.get(name, -1))
                self.first[name] = len(self._part)
                self._part.append(part)
                self._offset.append(int(offset))
                self._length.append(int(length))
                self._count.append(int(count))

    def rows(self, folder: str) -> list[tuple[int, int, int, int]]:
        """``(part, offset, length, detections)`` of each of the folder's rows, in the order they were read."""
        row = self.first[folder]
        if self._before[row] < 0:  # the usual folder: in one part
            return [(self._part[row], self._offset[row], self._length[row], self._count[row])]
        found = []
        while row >= 0:
            found.append((self._part[row], self._offset[row], self._length[row], self._count[row]))
            row = self._before[row]
        found.reverse()
        return found

    def count(self, folder: str) -> int:
        """The folder's detections in all parts."""
        total, row = 0, self.first[folder]
        while row >= 0:
            total += self._count[row]
            row = self._before[row]
        return total


def plan_search_groups(indexes: Iterable[Sequence[Sequence[Any]]], per_group: int = SEARCH_DETECTIONS_PER_GROUP,
                       max_folder_detections: int | None = None) -> list[dict[str, Any]]:
    """``plan_search``'s groups alone."""
    return plan_search(indexes, per_group, max_folder_detections).groups


def _group(folders: list[str], where: _FolderRows) -> dict[str, Any]:
    spans: dict[int, list[int]] = {}
    held = [where.rows(folder) for folder in folders]
    for rows in held:
        for part, offset, length, _ in rows:
            span = spans.get(part)
            if span is None:
                spans[part] = [offset, offset + length]
            else:
                span[0], span[1] = min(span[0], offset), max(span[1], offset + length)
    order = {part: i for i, part in enumerate(sorted(spans))}
    return {"folders": folders, "ranges": [[part, lo, hi - lo] for part, (lo, hi) in sorted(spans.items())],
            "last": {folder: max(order[part] for part, *_ in rows) for folder, rows in zip(folders, held)}}
