"""Camtrap DP events: each camera's images grouped into sequences by time, one event-level observation per kind.

Why: media-level observations (one per detection) are what machine learning wants; ecologists count *events*
(Camtrap DP 1.0: event-level observations "should be mutually exclusive, so that their count can be summed"), and a
camera trap fires bursts, so ten frames of one deer are one visit. Without them every partner re-derives sequences
by hand from the timestamps. The grouping is MegaDetector's (``data_management.cct_json_utils.create_sequences``,
``SequenceOptions.episode_interval_seconds`` 60): a deployment's images in capture-time order, a new sequence
whenever the gap to the previous image exceeds the interval (the request's ``event_interval_s``, else
``TRAPBATCH_EVENT_INTERVAL_S``). An image list's own
sequence (``seq_id``..., already the ``eventID`` of that image's media-level observations) takes precedence: its
images are one event per deployment and id, whatever their gaps.

Where a list gives some photos of a camera a sequence and not others, one rule keeps a deployment's events
mutually exclusive in time, as Camtrap DP wants them (event-level observations "should be mutually exclusive, so
that their count can be summed"; a reader links a photo to each event of its deployment whose ``eventStart`` ..
``eventEnd`` holds its timestamp: R camtrapdp's ``read_camtrapdp``, "Add eventID to media"): a photo without a
sequence whose capture time lies within a sequence's span (its first to its last photo, in the same deployment)
is of that visit (``_join_list_spans``: its media-level rows get the sequence's id, its boxes count in that event;
within two overlapping sequences' spans, the one that started last, then the later id), and the photos grouped by
time are cut wherever a sequence lies between two of them, so no time-grouped event spans a listed photo. Two
sequences of the list that overlap each other are kept as the list gives them: their ids are the list's own.

What an event row says (observationLevel ``event``, no ``mediaID``: Camtrap DP links an event's media by
``deploymentID`` and timestamps between ``eventStart`` and ``eventEnd``): one row per kind detected in any of its
images (``animal``, ``human``, ``vehicle``; ``unknown`` for other categories), ``count`` the most boxes of that kind
in one image (a minimum number of individuals, never a sum over frames that see the same animal twice),
``classificationProbability`` the highest confidence of that kind; an event without detections is one ``blank`` row,
unless one of its photos was cut short (``camtrapdp.CUT_SHORT_COMMENT``: its media-level observation is ``unknown``,
its grey part may hold an animal): then the event has an ``unknown`` row (no count, no confidence) and is no blank
visit in ``camera-visits.csv`` and ``camera-days.csv`` but one of their ``unknown_visits``.
Images without a capture time (a stand-in is written for theirs: ``camtrapdp.stand_in_media``) and failed images
are in no event: their order in time is unknown. The media-level observations of a photo in a time-grouped event
carry its ``eventID`` (``EventIndex``, ``link_observations``: filled after the grouping, as a photo's event depends on
photos that may be in other exports parts), and its COCO image the same id as ``seq_id`` with ``seq_num_frames`` and
``frame_num`` (``EventFrames``, ``link_coco_images``).

How, at any scale: each exports step reads the Camtrap DP lines it writes anyway (from the entries or the workers'
views: ``EventTap.feed``) and keeps per timed image 50 bytes of numbers (``EventRecords``); the fanned-out exports'
parts hand theirs to the combine as a fragment. The combine sorts each part's records in place and then takes one
deployment at a time from all parts (a camera's images may be in any of them; small cameras, as camera-day folders
make them, many at a time: ``_small_cameras``), so it holds the records (477 MiB at ten million timed images) and
one camera's times and order (18-22 bytes a photo; its boxes, confidences and photos are gathered
``RECORDS_PER_GATHER`` at a time, ``_Gather``), formats at most ``EVENTS_PER_RUN`` events at a time,
and appends the event rows to ``observations.csv`` (``bench/camtrap_events.py``: 558-900 MiB and 11-25 s of CPU at
ten million images, the index included and the frames streamed, from 1,000 cameras to one folder holding them
all; bench/RESULTS.md twenty-seventh session). Each camera's visits are summed up as they go (``CameraVisits``:
``camera-visits.csv`` and the preview page's table), and counted by day with its photos (``CameraDays``:
``camera-days.csv``, a camera's table at a time, 32 bytes a date with photos, at most ``MAX_CAMERA_DAYS`` dates). The
rows depend only on the records, never on where the parts were cut: the single activity and the fan-out write the
same bytes.

Must not: do I/O.
"""
from __future__ import annotations

import bisect
import csv
import functools
import hashlib
import io
import itertools
import json
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from gpu_batch.formats import camtrapdp, csvline, jsonio
from gpu_batch.formats.detections_csv import spreadsheet_safe

DEFAULT_INTERVAL_S = 60.0  # MegaDetector's SequenceOptions.episode_interval_seconds
KINDS = ("animal", "human", "vehicle", "unknown")  # observation types an event counts (blank: none of them)
_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}
_COUNT_MAX = np.iinfo(np.uint16).max
_MAGIC = b"trapbatch-events-3\n"
_MAGIC_2 = b"trapbatch-events-2\n"  # parts recorded before the records named their photos (no ``media``)


@dataclass
class EventRecords:
    """One record per timed, successful image: its deployment and list sequence (indexes into ``deployments`` and
    ``sequences``; sequence -1 for none), capture time (epoch seconds and the timestamp's offset in minutes, to
    write the event's start and end as the media rows wrote them), per kind (``KINDS``) its boxes and highest
    confidence, and its ``mediaID`` as a number (``media_number``: COCO's ``seq_id``/``frame_num`` name the photo,
    ``EventFrames``; empty in records of parts written before, which then get none)."""

    deployments: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    deployment: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    sequence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    epoch: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, len(KINDS)), np.uint16))
    best: np.ndarray = field(default_factory=lambda: np.zeros((0, len(KINDS)), np.float32))
    media: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def __len__(self) -> int:
        return int(self.epoch.shape[0])

    def to_bytes(self) -> bytes:
        """The records as one document (an exports part's ``events`` fragment)."""
        out = io.BytesIO()
        out.write(_MAGIC)
        # the names as JSON (numpy's fixed-width strings would drop a name's trailing NULs)
        names = json.dumps([self.deployments, self.sequences], ensure_ascii=False).encode("utf-8")
        np.savez(out, names=np.frombuffer(names, dtype=np.uint8), deployment=self.deployment,
                 sequence=self.sequence, epoch=self.epoch, offset=self.offset, counts=self.counts, best=self.best,
                 media=self.media)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EventRecords":
        """Records of this version, or of the one before (a part recorded before the upgrade: no ``media``)."""
        magic = _MAGIC if data.startswith(_MAGIC) else _MAGIC_2 if data.startswith(_MAGIC_2) else None
        if magic is None:
            raise ValueError("not an events fragment of this version")
        with np.load(io.BytesIO(data[len(magic):]), allow_pickle=False) as doc:
            deployments, sequences = json.loads(doc["names"].tobytes().decode("utf-8"))
            media = doc["media"] if "media" in doc.files else np.zeros(0, np.uint64)
            return cls(deployments, sequences, doc["deployment"], doc["sequence"], doc["epoch"], doc["offset"],
                       doc["counts"], doc["best"], media)

    def named(self) -> bool:
        """Whether the records name their photos (``media``): parts written before did not."""
        return len(self.media) == len(self)


def media_number(media_id: str) -> int:
    """A ``camtrapdp.media_id`` (16 hex digits of the file's SHA-1) as the number records keep (8 bytes, not a
    string's 70); 0 for anything else (never a real photo's: 2^-64)."""
    try:
        return int(media_id, 16) if len(media_id) == 16 else 0
    except ValueError:
        return 0


def _rows(text: str) -> Iterable[list[str]]:
    """The CSV rows of ``text`` (``csv.writer``'s); split directly when nothing in it is quoted (the usual case: no
    comma, quote or line break in any name), a third of the reader's cost."""
    if '"' in text:
        return csv.reader(io.StringIO(text))
    return (line.split(",") for line in text.split("\r\n") if line)


def _observations(text: str) -> Iterable[tuple[str, str, str, str, str]]:
    """``(mediaID, eventID, observationLevel, observationType, classificationProbability)`` of each observation
    row; without quoting, from two bounded splits (the eight fields before and the three after), not 28 fields."""
    if '"' in text:
        return ((row[2], row[3], row[6], row[7], row[25]) for row in csv.reader(io.StringIO(text)) if len(row) >= 26)
    return _plain_observations(text)


def _plain_observations(text: str) -> Iterator[tuple[str, str, str, str, str]]:
    for line in text.split("\r\n"):
        head = line.split(",", 8)
        if len(head) == 9:
            tail = head[8].rsplit(",", 3)
            if len(tail) == 4:
                yield head[2], head[3], head[6], head[7], tail[1]


class _Clock:
    """Media timestamps (``camtrapdp.camtrap_timestamp``'s ``YYYY-MM-DDTHH:MM:SS+HH:MM``) as epoch seconds and the
    offset in minutes; each day and zone parsed once (a camera's images share them), the time of day added."""

    def __init__(self) -> None:
        self._days: dict[str, tuple[int, int]] = {}  # date and zone -> (epoch of its midnight, offset minutes)

    def __call__(self, stamp: str) -> tuple[int, int]:
        """ValueError for a timestamp without a zone or that does not parse."""
        if len(stamp) == 25 and stamp[10] == "T" and stamp[13] == ":" and stamp[16] == ":":
            day = stamp[:10] + stamp[19:]
            known = self._days.get(day)
            if known is None:
                known = self._days[day] = self(stamp[:11] + "00:00:00" + stamp[19:]) \
                    if stamp[11:19] != "00:00:00" else self._parse(stamp)
            return known[0] + int(stamp[11:13]) * 3600 + int(stamp[14:16]) * 60 + int(stamp[17:19]), known[1]
        return self._parse(stamp)

    @staticmethod
    def _parse(stamp: str) -> tuple[int, int]:
        at = datetime.fromisoformat(stamp)
        offset = at.utcoffset()
        if offset is None:
            raise ValueError(f"{stamp}: no zone")
        return int(at.timestamp()), int(offset.total_seconds()) // 60


class EventTap:
    """Reads the Camtrap DP media and observation lines an exports step writes, a chunk at a time (one entry's, or
    one view's: a chunk holds each of its images' media row and all their observation rows), and keeps the records.
    ``reset`` forgets everything fed (the exports found the views' lines unusable and write the entries instead)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._deployments: dict[str, int] = {}
        self._sequences: dict[str, int] = {}
        self._deployment = array("l")
        self._sequence = array("l")
        self._epoch = array("q")
        self._offset = array("l")
        self._counts = array("q")  # len(KINDS) per record
        self._best = array("d")  # len(KINDS) per record
        self._media = array("Q")
        self._time = _Clock()

    def feed(self, media: str, observations: str) -> None:
        if not media:
            return
        # mediaID -> [eventID, boxes of each kind (KINDS), best confidence of each kind]
        found: dict[str, list[Any]] = {}
        if observations:
            kinds = _KIND_INDEX
            for mid, event, level, kind_name, probability_text in _observations(observations):
                if level != "media":
                    continue
                seen = found.get(mid)
                if seen is None:
                    seen = found[mid] = [event, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0]
                kind = kinds.get(kind_name)
                if kind is None:  # blank
                    continue
                seen[kind + 1] += 1
                try:
                    probability = float(probability_text)
                except ValueError:
                    continue
                if probability > seen[kind + 5]:
                    seen[kind + 5] = probability
        unknown_time = camtrapdp.NO_CAPTURE_TIME
        for row in _rows(media):
            if len(row) < 11:
                continue
            seen = found.get(row[0])
            if seen is None or row[10].startswith(unknown_time):
                continue  # failed (no observation at all) or no capture time: in no event
            try:
                epoch, offset = self._time(row[3])
            except ValueError:
                continue
            self._deployment.append(self._deployments.setdefault(row[1], len(self._deployments)))
            self._sequence.append(self._sequences.setdefault(seen[0], len(self._sequences)) if seen[0] else -1)
            self._epoch.append(epoch)
            self._offset.append(offset)
            self._counts.extend(seen[1:5])
            self._best.extend(seen[5:9])
            self._media.append(media_number(row[0]))

    def records(self) -> EventRecords:
        n = len(self._epoch)
        width = len(KINDS)
        return EventRecords(list(self._deployments), list(self._sequences),
                            np.array(self._deployment, dtype=np.int32), np.array(self._sequence, dtype=np.int32),
                            np.array(self._epoch, dtype=np.int64), np.array(self._offset, dtype=np.int16),
                            np.minimum(np.array(self._counts, dtype=np.int64), _COUNT_MAX).astype(np.uint16)
                            .reshape(n, width),
                            np.array(self._best, dtype=np.float32).reshape(n, width),
                            np.array(self._media, dtype=np.uint64))


@functools.lru_cache(maxsize=256)
def _zone_suffix(minutes: int) -> str:
    """An offset as ``isoformat`` writes it (``+05:30``, ``-03:00``, ``+00:00``)."""
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _timestamps(epoch: np.ndarray, offset: np.ndarray) -> list[str]:
    """Capture times as ``camtrapdp.camtrap_timestamp`` writes them (``isoformat`` in each image's own offset), a
    whole array at once."""
    local = (epoch + offset.astype(np.int64) * 60).astype("datetime64[s]")
    return [t + _zone_suffix(o) for t, o in zip(np.datetime_as_string(local, unit="s").tolist(), offset.tolist())]


@dataclass(frozen=True)
class Event:
    deployment: str
    key: str  # a hash of the deployment, the list's sequence and the start: the rows' observationID prefix
    event_id: str  # the list's sequence, else the key
    start: str
    end: str
    images: int
    counts: tuple[int, ...]
    best: tuple[float, ...]


def _sorted_runs(parts: Sequence[EventRecords]) -> tuple[list[str], list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """Renumber every part's deployments and sequences by name over all parts and sort each part's records by
    (deployment, sequence, time), in place, one array at a time (memory: the records and one array's copy). Returns
    the names and, per part, the deployments it holds (sorted) and where each one's records start (and the end).

    Why not where every deployment starts in every part (``len(deployments) + 1`` offsets each): 8 bytes a camera
    a part, 400 MB at a million cameras (camera-day folders) and fifty parts; a part holds its own few."""
    deployments = sorted({d for p in parts for d in p.deployments})
    sequences = sorted({s for p in parts for s in p.sequences})
    dep_index = {d: i for i, d in enumerate(deployments)}
    seq_index = {s: i for i, s in enumerate(sequences)}
    held = []
    for p in parts:
        if len(p):
            p.deployment = np.array([dep_index[d] for d in p.deployments], dtype=np.int32)[p.deployment]
            # [-1]: a record without a sequence (-1) stays -1
            p.sequence = np.array([seq_index[s] for s in p.sequences] + [-1], dtype=np.int32)[p.sequence]
            order = np.lexsort((p.epoch, p.sequence, p.deployment))
            for name in ("deployment", "sequence", "epoch", "offset", "counts", "best") + (("media",) if p.named()
                                                                                           else ()):
                setattr(p, name, getattr(p, name)[order])
        p.deployments, p.sequences = deployments, sequences
        cuts = np.flatnonzero(np.concatenate([[True], p.deployment[1:] != p.deployment[:-1]])) if len(p) else \
            np.zeros(0, np.int64)
        held.append((p.deployment[cuts], np.append(cuts, len(p)).astype(np.int64)))
    return deployments, sequences, held


class _Holdings:
    """Which parts hold records of which deployments (``_sorted_runs``' ``held``), merged over all parts once:
    each (deployment, part) as one entry, by deployment, then part, with where its records start and end.

    Why: ``_cameras`` asks for every deployment in turn, and searching each part for it (one ``searchsorted`` a part
    a camera) cost ~85 us a camera at fifty parts where a camera's photos are in one part or two, a sixth of what a
    camera grouped alone costs (``bench/camtrap_events.py --mixed``, 5,000 cameras: 512 -> 420-430 us a camera).
    Here one search of the merged entries finds a range's, and only the parts that hold it are touched. 24 bytes an
    entry (``held`` holds 12, and is let go): a part holds its own few deployments, so the entries are about the
    cameras plus the parts."""

    def __init__(self, held: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        sizes = [len(ids) for ids, _ in held]
        deployment = np.concatenate([np.zeros(0, np.int32), *(ids for ids, _ in held)]).astype(np.int32, copy=False)
        by = np.argsort(deployment, kind="stable")  # stably: a deployment's entries in the parts' order
        self._deployment = deployment[by]
        del deployment
        self._part = np.repeat(np.arange(len(held), dtype=np.int32), sizes)[by]
        self._start = np.concatenate([np.zeros(0, np.int64), *(at[:-1] for _, at in held)]).astype(np.int64)[by]
        self._end = np.concatenate([np.zeros(0, np.int64), *(at[1:] for _, at in held)]).astype(np.int64)[by]

    def pieces(self, low: int, high: int) -> list[tuple[int, int, int]]:
        """Of each part holding records of deployments ``low`` to ``high - 1``, in the parts' order: its index and
        where those records start and end (they are contiguous: a part is sorted by deployment)."""
        a, b = np.searchsorted(self._deployment, (low, high)).tolist()
        if b - a <= 1 or high - low == 1:  # one deployment: one entry a part, in the parts' order
            return list(zip(self._part[a:b].tolist(), self._start[a:b].tolist(), self._end[a:b].tolist()))
        by = np.argsort(self._part[a:b], kind="stable")  # each part's entries, by deployment
        part = self._part[a:b][by]
        firsts = np.flatnonzero(np.concatenate([[True], part[1:] != part[:-1]]))
        lasts = np.append(firsts[1:], len(part)) - 1
        return list(zip(part[firsts].tolist(), self._start[a:b][by][firsts].tolist(),
                        self._end[a:b][by][lasts].tolist()))


@dataclass(frozen=True)
class _Camera:
    """A run of one deployment's events, as lists (``_cameras``), with what the camera's visits count of them."""

    deployment: str
    keys: list[str]
    ids: list[str]
    starts: list[str]
    ends: list[str]
    images: list[int]
    most: list[list[int]]
    top: list[list[float]]
    visits: "CameraVisits"  # this run's share of the camera's visits (first, last and span: the whole camera's)
    days: "CameraDays | None"  # this run's visits by day, and on the camera's first run its photos by day; None:
    # a camera whose photos fall on more than MAX_CAMERA_DAYS dates (no rows in camera-days.csv)
    continued: bool  # a later run of the same deployment
    timed: np.ndarray  # the run's events grouped by time (no list sequence): their start and end epochs, offsets
    start_epoch: np.ndarray
    end_epoch: np.ndarray
    start_offset: np.ndarray
    # on a camera's first run, where some of its photos have no list sequence: its sequences' spans (first and
    # last epoch) and ids, in the order ``_join_list_spans`` reads them, for ``EventIndex`` (a joined photo's id)
    spans: tuple[np.ndarray, np.ndarray, list[str]] | None = None


EVENTS_PER_RUN = 16384  # events formatted at a time (~10 MB of strings and lists): a timelapse camera of a million
# photos is a million events
RECORDS_PER_GATHER = 1 << 20  # a camera's records whose boxes and confidences are reordered at a time


class _Gather:
    """One deployment's per-kind boxes and confidences in its sorted order, a range of records at a time.

    Why not reordered whole, as its times are: when one camera holds every image of the task (a folder of ten
    million), a copy of all its ``counts`` and ``best`` (24 bytes a record) came on top of the records themselves;
    a range at a time is bounded by ``RECORDS_PER_GATHER`` (``bench/camtrap_events.py``)."""

    def __init__(self, pieces: Sequence[tuple[EventRecords, int, int]], order: np.ndarray | None) -> None:
        self._pieces = pieces
        self._order = order  # sorted position -> index in the pieces' concatenation; None: one piece, in order
        self._starts = np.cumsum([0] + [hi - lo for _, lo, hi in pieces])

    def __call__(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``counts`` and ``best`` of sorted positions ``a`` to ``b``."""
        if self._order is None:
            p, lo, _ = self._pieces[0]
            return p.counts[lo + a:lo + b], p.best[lo + a:lo + b]
        at = self._order[a:b]
        which = np.searchsorted(self._starts, at, "right") - 1
        counts = np.empty((b - a, len(KINDS)), np.uint16)
        best = np.empty((b - a, len(KINDS)), np.float32)
        for k in np.unique(which).tolist():
            mine = which == k
            p, lo, _ = self._pieces[k]
            local = at[mine] - self._starts[k] + lo
            counts[mine], best[mine] = p.counts[local], p.best[local]
        return counts, best

    def media(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Of each sorted position, the piece it comes from (an index into the pieces) and its photo's number
        (``EventRecords.media``; 0 in a piece written before records named their photos)."""
        if self._order is None:
            p, lo, _ = self._pieces[0]
            which = np.zeros(len(positions), np.intp)
            return which, p.media[lo + positions] if p.named() else np.zeros(len(positions), np.uint64)
        at = self._order[positions]
        which = np.searchsorted(self._starts, at, "right") - 1
        media = np.zeros(len(positions), np.uint64)
        for k in np.unique(which).tolist():
            p, lo, _ = self._pieces[k]
            if p.named():
                mine = which == k
                media[mine] = p.media[at[mine] - self._starts[k] + lo]
        return which, media


def _most(gather: _Gather, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most boxes and the best confidence of each kind in each event (sorted positions ``first`` to ``last``),
    gathered ``RECORDS_PER_GATHER`` records at a time (one event may hold a timelapse camera's every photo)."""
    most = np.zeros((len(first), len(KINDS)), np.uint16)  # boxes and confidences are never negative
    top = np.zeros((len(first), len(KINDS)), np.float32)
    for a in range(int(first[0]), int(last[-1]) + 1, RECORDS_PER_GATHER):
        b = min(a + RECORDS_PER_GATHER, int(last[-1]) + 1)
        lo, hi = int(np.searchsorted(last, a, "left")), int(np.searchsorted(first, b, "left"))  # events met
        cuts = np.maximum(first[lo:hi], a) - a
        counts, best = gather(a, b)
        np.maximum(most[lo:hi], np.maximum.reduceat(counts, cuts, axis=0), out=most[lo:hi])
        np.maximum(top[lo:hi], np.maximum.reduceat(best, cuts, axis=0), out=top[lo:hi])
    return most, top


_NO_SPANS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))


def _list_spans(seq: np.ndarray, epoch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deployment's list sequences (records sorted by sequence, then time) as their first and last epochs and
    their indexes, in the order of their starts, then of their ids (the sequences' indexes are in name order)."""
    listed = np.flatnonzero(seq >= 0)
    if not len(listed):
        return _NO_SPANS
    s, e = seq[listed], epoch[listed]
    firsts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    lasts = np.append(firsts[1:], len(s)) - 1
    names, lo, hi = s[firsts], e[firsts], e[lasts]
    ranked = np.lexsort((names, lo))
    return lo[ranked], hi[ranked], names[ranked]


def _max_table(ends: np.ndarray) -> list[np.ndarray]:
    """The spans' ends (in ``_list_spans`` order) as ``table[k][i]``, the latest end of spans ``i - 2**k + 1`` to
    ``i`` (from 0 where fewer precede): what ``_holders`` steps back over. log2 of the spans' count levels (17 at
    100,000 sequences of one deployment)."""
    table = [np.asarray(ends, np.int64)]
    while (1 << (len(table) - 1)) < len(ends):
        previous, step = table[-1], 1 << (len(table) - 1)
        level = previous.copy()
        level[step:] = np.maximum(previous[step:], previous[:-step])
        table.append(level)
    return table


def _holders(starts: np.ndarray, table: Sequence[np.ndarray], epochs: np.ndarray) -> np.ndarray:
    """Which span (of ``starts`` and ends, ``_max_table``, in ``_list_spans`` order) holds each of ``epochs``: of
    those that do, the last in that order, so the one that started last; -1 for none.

    Why not walk back from the last span started, as before: where a sequence spans the deployment (a list whose
    ids repeat, ``1`` every day) every span started since is passed over for each photo, 145 s for 200,000 photos
    beside 20,000 sequences. Here each photo steps back by halving jumps over runs of spans that all ended before
    it (``table``): the latest span that holds it lies after them, so log2 of the spans' count steps."""
    at = np.asarray(epochs, np.int64)
    i = np.searchsorted(starts, at, "right") - 1
    for k in range(len(table) - 1, -1, -1):
        live = np.flatnonzero(i >= 0)
        ended = live[table[k][i[live]] < at[live]]  # spans i - 2**k + 1 .. i all ended before: the holder is earlier
        i[ended] -= 1 << k
    i[i >= 0] = np.where(table[0][i[i >= 0]] >= at[i >= 0], i[i >= 0], -1)
    return np.maximum(i, -1)


def _holder(starts: Sequence[int], table: Sequence[np.ndarray], epoch: int) -> int:
    """``_holders`` of one epoch (``EventIndex.event_id``, per media-level row: a few microseconds)."""
    i = bisect.bisect_right(starts, epoch) - 1
    for k in range(len(table) - 1, -1, -1):
        if i >= 0 and table[k][i] < epoch:
            i -= 1 << k
    return i if i >= 0 and table[0][i] >= epoch else -1


def _join_list_spans(spans: tuple[np.ndarray, np.ndarray, np.ndarray], seq: np.ndarray, epoch: np.ndarray,
                     offset: np.ndarray, order: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """A deployment's records (sorted by sequence, then time) with each photo without a sequence whose time lies
    within a sequence's span (``_holders``) given that sequence, sorted again (stably: at one time, the joined
    photos before the list's, in both a single part and many), and the order of the records now (``order``, an
    index into the pieces' concatenation, composed with the new one; None: nobody joined, all as it was)."""
    starts, ends, names = spans
    timed = np.flatnonzero(seq < 0)
    held = _holders(starts, _max_table(ends), epoch[timed])
    inside = np.flatnonzero(held >= 0)
    if not len(inside):
        return seq, epoch, offset, order
    joined = seq.copy()
    joined[timed[inside]] = names[held[inside]]
    again = np.lexsort((epoch, joined))
    if len(again) < 2 ** 31:
        again = again.astype(np.int32)
    return (joined[again], epoch[again], offset[again],
            again if order is None else order[again])


SMALL_CAMERA_RECORDS = 1024  # a camera of at most this many records is grouped beside others (``_small_cameras``)
SMALL_CAMERAS_RECORDS = 4096  # small cameras' records grouped at a time: their events' strings and lists (a few
# MB), as a camera's run of ``EVENTS_PER_RUN`` events holds at most


def _cameras(parts: Sequence[EventRecords], interval_s: float,
             frames: "EventFrames | None" = None) -> Iterator[_Camera]:
    """Each deployment's events, by deployment name, then list sequence (time-grouped images first), then time: the
    same however the images were cut into parts. A deployment at a time, so memory stays the records' own plus one
    deployment's sequences, times and order (14 and 4-8 bytes a record: a camera's images may be in any of the
    parts), and its events as strings and lists at most ``EVENTS_PER_RUN`` at a time (a run of the same deployment
    with ``continued``). ``frames`` gets each time-grouped photo's place in its event.

    Small cameras (at most ``SMALL_CAMERA_RECORDS`` records) are grouped many at a time, up to
    ``SMALL_CAMERAS_RECORDS`` records (``_small_cameras``): a camera's own chain of numpy calls cost ~320 us, 5-6
    minutes at a million cameras (camera-day folders, bench/RESULTS.md forty-eighth session), and ~420-530 us where
    a list's sequences lie beside photos without one (those are joined for many cameras at once:
    ``_join_cameras``); the bytes written are the same (tests/unit/test_camtrap_events.py holds the two ways to
    each other)."""
    deployments, sequences, held = _sorted_runs(parts)
    total = np.zeros(len(deployments), np.int64)  # each deployment's records
    for ids, at in held:
        if len(ids):
            total[ids] += np.diff(at)
    batch = min(SMALL_CAMERAS_RECORDS, EVENTS_PER_RUN)
    limit = min(SMALL_CAMERA_RECORDS, batch, MAX_CAMERA_DAYS)  # one run, its days never too many to count
    alone = np.flatnonzero(total > limit)
    holdings = _Holdings(held)
    del held
    d = 0
    for big in [*alone.tolist(), len(deployments)]:
        while d < big:  # the small cameras before it, ``batch`` records at a time (at least a camera)
            reach = np.cumsum(total[d:min(big, d + batch)])
            end = d + max(1, int(np.searchsorted(reach, batch, "right")))
            pieces = holdings.pieces(d, end)
            if pieces:
                yield from _small_cameras([(parts[i], lo, hi) for i, lo, hi in pieces], [i for i, _, _ in pieces],
                                          deployments, sequences, interval_s, frames)
            d = end
        if big < len(deployments):
            pieces = holdings.pieces(big, big + 1)
            if pieces:
                yield from _camera_runs([(parts[i], lo, hi) for i, lo, hi in pieces], [i for i, _, _ in pieces],
                                        deployments[big], sequences, interval_s, frames)
            d = big + 1


def _camera_runs(pieces: Sequence[tuple[EventRecords, int, int]], owners: Sequence[int], deployment: str,
                 sequences: Sequence[str], interval_s: float, frames: "EventFrames | None") -> Iterator[_Camera]:
    """One deployment's events (its records in ``pieces``, of the parts ``owners``), ``EVENTS_PER_RUN`` at a time."""
    order: np.ndarray | None = None
    if len(pieces) == 1:  # already in order
        p, lo, hi = pieces[0]
        seq, epoch, offset = p.sequence[lo:hi], p.epoch[lo:hi], p.offset[lo:hi]
        gather = _Gather(pieces, None)
    else:  # reordered an array at a time: one camera may hold every image of the task
        seq = np.concatenate([p.sequence[lo:hi] for p, lo, hi in pieces])
        epoch = np.concatenate([p.epoch[lo:hi] for p, lo, hi in pieces])
        order = np.lexsort((epoch, seq))
        if len(order) < 2 ** 31:
            order = order.astype(np.int32)
        seq, epoch = seq[order], epoch[order]
        offset = np.concatenate([p.offset[lo:hi] for p, lo, hi in pieces])[order]
        gather = _Gather(pieces, order)
    spans = _list_spans(seq, epoch)
    if len(spans[0]) and seq[0] < 0:  # photos without a sequence beside the list's (those sort first)
        seq, epoch, offset, order = _join_list_spans(spans, seq, epoch, offset, order)
        if order is not None:
            gather = _Gather(pieces, order)
    else:
        spans = _NO_SPANS  # nothing to link to them: no photo of the camera is without a sequence
    n = len(epoch)
    new = np.ones(n, dtype=bool)
    new[1:] = (seq[1:] != seq[:-1]) | ((seq[1:] < 0) & (np.diff(epoch) > interval_s))
    if len(spans[0]):  # a time-grouped event never spans a sequence: cut where one starts between two photos
        timed_end = int(np.searchsorted(seq, 0))  # the photos without a sequence sort first (-1)
        new[1:timed_end] |= np.diff(np.searchsorted(spans[0], epoch[:timed_end], "right")) != 0
    firsts = np.flatnonzero(new)
    del new
    if n < 2 ** 31:  # half the size: a timelapse camera's photos are each an event
        firsts = firsts.astype(np.int32)
    early, late = int(np.argmin(epoch)), int(np.argmax(epoch))
    ends = _timestamps(epoch[[early, late]], offset[[early, late]])
    for at in range(0, len(firsts), EVENTS_PER_RUN):
        first = firsts[at:at + EVENTS_PER_RUN]
        last = np.append(firsts[at + 1:at + EVENTS_PER_RUN + 1], n)[:len(first)] - 1
        starts = _timestamps(epoch[first], offset[first])
        listed = [sequences[i] if i >= 0 else "" for i in seq[first].tolist()]
        keys = [_event_key(deployment, name, start) for name, start in zip(listed, starts)]
        most, top = _most(gather, first, last)
        visits = CameraVisits(deployment, ends[0], ends[1], int(epoch[late] - epoch[early]),
                              int((last - first + 1).sum()), len(first),
                              tuple(int(k) for k in (most > 0).sum(axis=0)), int((~most.any(axis=1)).sum()))
        if at == 0:  # the camera's photos by day, once (None: too many dates to count by)
            photo_days = _photo_days(deployment, epoch, offset)
        days = None if photo_days is None else _event_days(deployment, epoch[first], offset[first], most)
        if at == 0 and days is not None and photo_days is not None:
            days = CameraDays.join([days, photo_days])
        timed = seq[first] < 0
        if frames is not None:  # every event's photos: a list's sequence is a visit too (Zooniverse subjects)
            frames.take(gather, owners, first, last, [int(key, 16) for key in keys])
        yield _Camera(deployment, keys, [name or key for name, key in zip(listed, keys)], starts,
                      _timestamps(epoch[last], offset[last]), (last - first + 1).tolist(), most.tolist(),
                      top.tolist(), visits, days, at > 0, timed, epoch[first][timed], epoch[last][timed],
                      offset[first][timed],
                      (spans[0], spans[1], [sequences[i] for i in spans[2].tolist()]) if at == 0 else None)


_NO_SPAN_IDS: tuple[np.ndarray, np.ndarray, list[str]] = (_NO_SPANS[0], _NO_SPANS[1], [])


_Spans = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # first and last epochs, ids, and the cameras'
# bounds in them (``_join_cameras``)


def _join_cameras(dep: np.ndarray, seq: np.ndarray, epoch: np.ndarray, offset: np.ndarray, order: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, _Spans
                             ] | None:
    """``_join_list_spans`` for many cameras at once (records sorted by deployment, sequence, time, as
    ``_small_cameras`` sorts them): of each camera with a list's sequences beside photos without one (mixed), its
    sequences' spans in ``_list_spans`` order, each photo without a sequence within one given the one
    ``_holders`` picks, sorted again (stably, by deployment first: each camera's records as its own sort leaves
    them). None where no camera is mixed. Also returns, of each record, how many sequences of its camera start at
    or before its time (where that changes between two photos grouped by time, a sequence starts between them:
    ``_camera_runs``' cut), and the spans with each camera's bounds in them (``_span_ids``).

    Why: a mixed camera grouped alone (``_camera_runs``) cost ~420-530 us of numpy calls (bench/camtrap_events.py
    --mixed), where a captures file covers only some photos every camera of it. How, over all cameras at once:
    each record's time as its camera's number, then the rank of its time among the group's (``np.unique``), one
    number ``key``: a camera's keys all lie above an earlier camera's, so ``_holders`` over the keys of every
    camera's spans finds only the record's own camera's (an earlier one's spans all end below its key, a later
    one's all start above it), and counting the starts at or before a key counts the record's camera's, plus a
    number the same for all of that camera's records."""
    n = len(seq)
    opens = np.flatnonzero(np.concatenate([[True], dep[1:] != dep[:-1]]))  # each camera's first record
    closes = np.append(opens[1:], n) - 1
    mixed = (seq[opens] < 0) & (seq[closes] >= 0)  # photos without a sequence sort first, the list's last
    if not mixed.any():
        return None
    camera = np.repeat(np.arange(len(opens), dtype=np.int64), np.diff(np.append(opens, n)))
    in_mixed = mixed[camera]
    _, rank = np.unique(epoch, return_inverse=True)
    key = camera * (int(rank.max()) + 1) + rank.reshape(-1)  # at most SMALL_CAMERAS_RECORDS squared: no overflow
    listed = np.flatnonzero(in_mixed & (seq >= 0))
    s, c = seq[listed], camera[listed]
    firsts = np.flatnonzero(np.concatenate([[True], (s[1:] != s[:-1]) | (c[1:] != c[:-1])]))
    lasts = np.append(firsts[1:], len(s)) - 1
    lo, hi, names, owner = listed[firsts], listed[lasts], s[firsts], c[firsts]
    ranked = np.lexsort((names, epoch[lo], owner))  # by camera, then as ``_list_spans`` ranks a camera's
    lo, hi, names, owner = lo[ranked], hi[ranked], names[ranked], owner[ranked]
    starts = key[lo]
    spans = (epoch[lo], epoch[hi], names, np.searchsorted(owner, np.arange(len(opens) + 1)))
    timed = np.flatnonzero(in_mixed & (seq < 0))
    held = _holders(starts, _max_table(key[hi]), key[timed])
    inside = np.flatnonzero(held >= 0)
    if len(inside):
        joined = seq.copy()
        joined[timed[inside]] = names[held[inside]]
        again = np.lexsort((epoch, joined, dep)).astype(np.int32)  # at most SMALL_CAMERAS_RECORDS records
        dep, seq, epoch, offset, key = dep[again], joined[again], epoch[again], offset[again], key[again]
        order = again if order is None else order[again]
    return dep, seq, epoch, offset, order, np.searchsorted(starts, key, "right"), spans


def _span_ids(spans: _Spans, c: int, sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Camera ``c``'s sequences' spans (``_join_cameras``) as ``_Camera.spans`` holds them (``_camera_runs``'): its
    own arrays, not views that would keep the group's alive in the ``EventIndex``."""
    a, b = int(spans[3][c]), int(spans[3][c + 1])
    if a == b:
        return _NO_SPAN_IDS
    return spans[0][a:b].copy(), spans[1][a:b].copy(), [sequences[i] for i in spans[2][a:b].tolist()]


def _small_cameras(pieces: Sequence[tuple[EventRecords, int, int]], owners: Sequence[int], deployments: Sequence[str],
                   sequences: Sequence[str], interval_s: float, frames: "EventFrames | None") -> Iterator[_Camera]:
    """The events of many small cameras (their records in ``pieces``, of the parts ``owners``; each camera one run),
    each camera's ``_Camera`` as ``_camera_runs`` makes it, from one pass of numpy calls over them all: sorted by
    (deployment, sequence, time) at once (stably, so equal times keep the parts' order, as a camera's own sort
    does), the photos without a sequence of cameras that also have a list's joined to its spans
    (``_join_cameras``), cut where the deployment changes too, and each camera's first and last photo, visits and
    days reduced over the cameras' ranges."""
    order: np.ndarray | None = None
    if len(pieces) == 1:  # already in order
        p, lo, hi = pieces[0]
        dep, seq, epoch, offset = p.deployment[lo:hi], p.sequence[lo:hi], p.epoch[lo:hi], p.offset[lo:hi]
    else:
        dep = np.concatenate([p.deployment[lo:hi] for p, lo, hi in pieces])
        seq = np.concatenate([p.sequence[lo:hi] for p, lo, hi in pieces])
        epoch = np.concatenate([p.epoch[lo:hi] for p, lo, hi in pieces])
        order = np.lexsort((epoch, seq, dep)).astype(np.int32)  # at most SMALL_CAMERAS_RECORDS records
        dep, seq, epoch = dep[order], seq[order], epoch[order]
        offset = np.concatenate([p.offset[lo:hi] for p, lo, hi in pieces])[order]
    joined = _join_cameras(dep, seq, epoch, offset, order) if len(sequences) else None
    if joined is not None:
        dep, seq, epoch, offset, order, window, span_of = joined
    gather = _Gather(pieces, order)
    n = len(epoch)
    new = np.ones(n, dtype=bool)
    new[1:] = (dep[1:] != dep[:-1]) | (seq[1:] != seq[:-1]) | ((seq[1:] < 0) & (np.diff(epoch) > interval_s))
    if joined is not None:  # a time-grouped event never spans a sequence: cut where one starts between two photos
        new[1:] |= (seq[1:] < 0) & (seq[:-1] < 0) & (window[1:] != window[:-1])
    first = np.flatnonzero(new).astype(np.int32)
    last = np.append(first[1:], n).astype(np.int32) - 1
    camera = dep[first]  # each event's
    opens = np.flatnonzero(np.concatenate([[True], camera[1:] != camera[:-1]]))  # each camera's first event
    bounds = np.append(opens, len(first))
    start = first[opens]  # each camera's first record
    photos = np.diff(np.append(start, n))
    names = [deployments[i] for i in camera.tolist()]
    starts = _timestamps(epoch[first], offset[first])
    listed = [sequences[i] if i >= 0 else "" for i in seq[first].tolist()]
    keys = [_event_key(name, sequence, at) for name, sequence, at in zip(names, listed, starts)]
    most, top = _most(gather, first, last)
    # each camera's earliest and latest photo: the first record at its least and at its most time (argmin, argmax)
    low, high = np.minimum.reduceat(epoch, start), np.maximum.reduceat(epoch, start)
    at_low, at_high = np.flatnonzero(epoch == np.repeat(low, photos)), np.flatnonzero(epoch == np.repeat(high, photos))
    early, late = at_low[np.searchsorted(at_low, start)], at_high[np.searchsorted(at_high, start)]
    earliest, latest = _timestamps(epoch[early], offset[early]), _timestamps(epoch[late], offset[late])
    with_kind = np.add.reduceat((most > 0).astype(np.int64), opens, axis=0).tolist()
    blank = np.add.reduceat((~most.any(axis=1)).astype(np.int64), opens).tolist()
    # each camera's days: its photos on each, and the visits that start on each (``_photo_days``, ``_event_days``)
    cams = len(opens)
    owner = np.concatenate([np.repeat(np.arange(cams), photos), np.repeat(np.arange(cams), np.diff(bounds))])
    local = _local_days(epoch, offset)
    day = np.concatenate([local, local[first]])
    rows = np.zeros((len(day), len(DAY_COUNTS)), np.int32)
    rows[:n, 0] = 1
    rows[n:, 1] = 1
    rows[n:, 2:2 + len(KINDS)] = most > 0
    rows[n:, -1] = ~most.any(axis=1)
    by = np.lexsort((day, owner))
    owner, day, rows = owner[by], day[by], rows[by]
    cut = np.flatnonzero(np.concatenate([[True], (owner[1:] != owner[:-1]) | (day[1:] != day[:-1])]))
    days, day_counts = day[cut], np.add.reduceat(rows, cut, axis=0).astype(np.int32)
    day_bounds = np.searchsorted(owner[cut], np.arange(cams + 1)).tolist()
    # the time-grouped events (no list sequence), for the index
    timed = seq[first] < 0
    held = np.flatnonzero(timed)
    timed_start, timed_end, timed_offset = epoch[first[held]], epoch[last[held]], offset[first[held]]
    timed_bounds = np.searchsorted(held, bounds).tolist()
    if frames is not None:  # every event's photos: a list's sequence is a visit too (Zooniverse subjects)
        frames.take(gather, owners, first, last, [int(key, 16) for key in keys])
    ends = _timestamps(epoch[last], offset[last])
    images = (last - first + 1).tolist()
    ids = [sequence or key for sequence, key in zip(listed, keys)]
    most_rows, top_rows = most.tolist(), top.tolist()
    span = (high - low).tolist()
    for c, (a, b, count) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), photos.tolist())):
        name = names[a]
        visits = CameraVisits(name, earliest[c], latest[c], span[c], count, b - a, tuple(with_kind[c]), blank[c])
        t0, t1 = timed_bounds[c], timed_bounds[c + 1]
        yield _Camera(name, keys[a:b], ids[a:b], starts[a:b], ends[a:b], images[a:b], most_rows[a:b], top_rows[a:b],
                      visits, CameraDays(name, days[day_bounds[c]:day_bounds[c + 1]],
                                         day_counts[day_bounds[c]:day_bounds[c + 1]]),
                      False, timed[a:b], timed_start[t0:t1], timed_end[t0:t1], timed_offset[t0:t1],
                      _NO_SPAN_IDS if joined is None else _span_ids(span_of, c, sequences))


class FrameSink(Protocol):
    """Where a part's frames go as the grouping finds them (a blob writer, a file)."""

    def write(self, data: bytes, /) -> int: ...


_FRAMES_MAGIC = b"trapbatch-event-frames-1\n"
_FRAME = np.dtype([("media", "<u8"), ("key", "<u8"), ("frame", "<u4"), ("frames", "<u4")])  # 24 bytes a photo


class EventFrames:
    """Each time-grouped photo's place in its event, by exports part: what COCO Camera Traps' ``seq_id``,
    ``seq_num_frames`` and ``frame_num`` say of it (``link_coco_images``).

    Why from the grouping: a photo's frame number depends on the photos before it in its event, which may be in
    other parts (a camera's photos are cut wherever a part ends); the grouping sees them all in order. The numbers
    are MegaDetector's (``cct_json_utils.create_sequences``): frames counted from 0 in capture-time order, equal
    times in the results' order (the sorts are stable over the parts in order), ``seq_num_frames`` the event's
    photos; ``seq_id`` the event's key (the ``eventID`` of its Camtrap DP rows when grouped by time), not
    create_sequences' per-location counter, so the two exports name a visit alike. Photos of an image list's sequence
    are numbered too (their visit, for Zooniverse subjects: ``core.captures.visits``), but their COCO images keep the
    list's fields (``link_coco_images`` leaves an image with a ``seq_id``); a photo without one that joined such a
    sequence gets its numbers under the list's id (``EventIndex.sequence_names``), not the key.

    Memory: with ``sink`` (a part's open binary stream, asked for at its first photo: the events step streams each
    part's share to a blob) only the sinks' buffers, as a share is written as the cameras come; without, 24 bytes a
    photo until ``to_bytes`` (the single activity's one part). A share read back (``from_bytes``, sorted by photo then)
    answers ``find``."""

    def __init__(self, parts: int = 0, sink: Callable[[int], FrameSink] | None = None) -> None:
        self._taken: list[list[bytes]] = [[] for _ in range(parts)]
        self._sink = sink
        self._open: dict[int, FrameSink] = {}
        self._media = self._key = np.zeros(0, np.uint64)  # a share read back: its photos, sorted
        self._frame = self._frames = np.zeros(0, np.uint32)

    def take(self, gather: _Gather, owners: Sequence[int], first: np.ndarray, last: np.ndarray,
             keys: Sequence[int]) -> None:
        """The photos of time-grouped events (sorted positions ``first`` to ``last``, ids ``keys``), a range of
        ``RECORDS_PER_GATHER`` at a time (one event may be a timelapse camera's every photo), each to the part it
        came from (``owners``: the part of each of the gather's pieces)."""
        sizes = (last.astype(np.int64) - first + 1)
        ends = np.cumsum(sizes)
        ids = np.array(keys, dtype=np.uint64)
        for a in range(0, int(ends[-1]), RECORDS_PER_GATHER):
            at = np.arange(a, min(a + RECORDS_PER_GATHER, int(ends[-1])), dtype=np.int64)
            event = np.searchsorted(ends, at, "right")
            frame = at - (ends[event] - sizes[event])
            which, media = gather.media(first[event] + frame)
            for k in np.unique(which).tolist():
                mine = (which == k) & (media != 0)
                if mine.any():
                    rows = np.empty(int(mine.sum()), _FRAME)
                    rows["media"], rows["key"], rows["frame"], rows["frames"] = (
                        media[mine], ids[event[mine]], frame[mine], sizes[event[mine]])
                    self._add(owners[k], rows.tobytes())

    def _add(self, part: int, rows: bytes) -> None:
        if self._sink is None:
            self._taken[part].append(rows)
            return
        out = self._open.get(part)
        if out is None:
            out = self._open[part] = self._sink(part)
            out.write(_FRAMES_MAGIC)
        out.write(rows)

    def held(self, part: int) -> bool:
        """Whether any photo of ``part`` (an index into the parts grouped) was taken."""
        return bool(self._taken[part]) or part in self._open

    def to_bytes(self, part: int) -> bytes:
        """The share of ``part`` (an index into the parts grouped, without ``sink``) as one document; forgets it."""
        taken, self._taken[part] = self._taken[part], []
        return _FRAMES_MAGIC + b"".join(taken)

    @classmethod
    def from_bytes(cls, data: bytes) -> "EventFrames":
        if not data.startswith(_FRAMES_MAGIC) or (len(data) - len(_FRAMES_MAGIC)) % _FRAME.itemsize:
            raise ValueError("not an event frames document of this version")
        found = cls()
        rows = np.frombuffer(data, _FRAME, offset=len(_FRAMES_MAGIC))
        rows = rows[np.argsort(rows["media"], kind="stable")]
        # each column contiguous: searchsorted on a structured array's field view copies it on every call
        found._media, found._key = np.ascontiguousarray(rows["media"]), np.ascontiguousarray(rows["key"])
        found._frame, found._frames = np.ascontiguousarray(rows["frame"]), np.ascontiguousarray(rows["frames"])
        return found

    def __len__(self) -> int:
        return int(self._media.shape[0])

    def find(self, media_id: str) -> tuple[str, int, int] | None:
        """``(seq_id, seq_num_frames, frame_num)`` of the photo with ``media_id`` (``camtrapdp.media_id``), None for
        a photo of no time-grouped event (a document read back with ``from_bytes``)."""
        number = media_number(media_id)
        i = int(np.searchsorted(self._media, np.uint64(number)))
        if not number or i >= len(self._media) or int(self._media[i]) != number:
            return None
        return f"{int(self._key[i]):016x}", int(self._frames[i]), int(self._frame[i])

    def find_many(self, media_ids: Sequence[str]) -> list[tuple[str, int, int] | None]:
        """``find`` of each of ``media_ids``, in one search of the photos: a search per photo cost ~3 us of numpy's
        per-call overhead, half of ``link_coco_images``' time (``bench/control_plane_inmemory.py``)."""
        numbers = np.array([media_number(m) for m in media_ids], dtype=np.uint64)
        found: list[tuple[str, int, int] | None] = [None] * len(numbers)
        if not len(self._media) or not len(numbers):
            return found
        at = np.minimum(np.searchsorted(self._media, numbers), len(self._media) - 1)
        for j in np.flatnonzero((self._media[at] == numbers) & (numbers != 0)).tolist():
            i = at[j]
            found[j] = f"{int(self._key[i]):016x}", int(self._frames[i]), int(self._frame[i])
        return found


def events(parts: Sequence[EventRecords], interval_s: float = DEFAULT_INTERVAL_S) -> Iterator[Event]:
    """The events of the parts' records (reordered in place), in ``event_lines``' order."""
    for camera in _cameras(parts, interval_s):
        for i, key in enumerate(camera.keys):
            yield Event(camera.deployment, key, camera.ids[i], camera.starts[i], camera.ends[i], camera.images[i],
                        tuple(camera.most[i]), tuple(camera.top[i]))


@dataclass(frozen=True)
class CameraVisits:
    """One camera's visits at a glance (a row of ``camera-visits.csv`` and of the preview page's table): what an
    ecologist checks first, cameras that saw nothing and cameras that fire at nothing (mostly blank visits: vegetation
    or sun in front of the lens), without loading the package into R."""

    deployment: str
    first: str
    last: str
    span_s: int  # first to last capture: a lower bound of the camera's time in the field
    images: int
    visits: int
    with_kind: tuple[int, ...]  # visits with a box of each kind (KINDS; unknown: also a photo cut short with no
    # box), each visit once per kind it had: they may add up to more than ``visits`` (README "camera-visits.csv")
    blank: int  # visits with none of them

    def plus(self, more: "CameraVisits") -> "CameraVisits":
        """This camera's visits and ``more`` of them (a later run of its events)."""
        return CameraVisits(self.deployment, self.first, self.last, self.span_s, self.images + more.images,
                            self.visits + more.visits,
                            tuple(a + b for a, b in zip(self.with_kind, more.with_kind)), self.blank + more.blank)


DAY_COUNTS = ("photos", "visits", *(f"{kind}_visits" for kind in KINDS), "blank_visits")  # a camera-day's counts


@dataclass(frozen=True)
class CameraDays:
    """One camera's days: for each local date (days since 1970-01-01 in its photos' own offsets) that has a photo,
    ``DAY_COUNTS``: its timed photos, the visits that start that day, those with a box of each kind, the blank ones.
    Only the days with photos are held (32 bytes each); ``camera_days_lines`` writes the days between as zeros."""

    deployment: str
    day: np.ndarray  # sorted, unique (int32)
    counts: np.ndarray  # (days, len(DAY_COUNTS)) int32

    @staticmethod
    def empty(deployment: str) -> "CameraDays":
        return CameraDays(deployment, np.zeros(0, np.int32), np.zeros((0, len(DAY_COUNTS)), np.int32))

    @staticmethod
    def join(pieces: Sequence["CameraDays"]) -> "CameraDays":
        """One camera's pieces (its photos, its runs of events) as one table, in one pass: joined two at a time, a
        camera of a million runs' worth of days was quadratic (657 s of CPU for one ten-million-photo folder). Runs
        in time order (the usual case) are only concatenated, the day they share added up; others are sorted."""
        day = np.concatenate([p.day for p in pieces])
        if not len(day):
            return CameraDays.empty(pieces[0].deployment)
        counts = np.concatenate([p.counts for p in pieces])
        if np.any(day[1:] < day[:-1]):
            order = np.argsort(day, kind="stable")
            day, counts = day[order], counts[order]
        starts = np.flatnonzero(np.concatenate([[True], day[1:] != day[:-1]]))
        if len(starts) < len(day):
            day, counts = day[starts], np.add.reduceat(counts, starts, axis=0).astype(np.int32)
        return CameraDays(pieces[0].deployment, day, counts)


def _local_days(epoch: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Each capture's date in its own offset, as days since 1970-01-01 (floor: before 1970 too)."""
    return ((epoch + offset.astype(np.int64) * 60) // 86400).astype(np.int32)


def _by_day(deployment: str, day: np.ndarray, rows: np.ndarray) -> CameraDays:
    """``rows`` (one per item, ``DAY_COUNTS`` wide) summed by ``day``."""
    if not len(day):
        return CameraDays(deployment, np.zeros(0, np.int32), np.zeros((0, len(DAY_COUNTS)), np.int32))
    unique, inverse = np.unique(day, return_inverse=True)
    counts = np.zeros((len(unique), len(DAY_COUNTS)), np.int64)
    np.add.at(counts, inverse.ravel(), rows)
    return CameraDays(deployment, unique.astype(np.int32), counts.astype(np.int32))


def _event_days(deployment: str, epoch: np.ndarray, offset: np.ndarray, most: np.ndarray) -> CameraDays:
    """A run's events (start times, most boxes of each kind) counted on the day each starts."""
    rows = np.zeros((len(epoch), len(DAY_COUNTS)), np.int64)
    rows[:, 1] = 1
    rows[:, 2:2 + len(KINDS)] = most > 0
    rows[:, -1] = ~most.any(axis=1)
    return _by_day(deployment, _local_days(epoch, offset), rows)


MAX_CAMERA_DAYS = 36_600  # a camera's dates with a photo: past a century's worth its clock is not one to count by


def _photo_days(deployment: str, epoch: np.ndarray, offset: np.ndarray) -> CameraDays | None:
    """A camera's photos counted by day, ``RECORDS_PER_GATHER`` at a time (one folder may hold every photo); None
    past ``MAX_CAMERA_DAYS`` dates (memory stays a few MB a camera whatever its clock says)."""
    pieces = [CameraDays.empty(deployment)]
    held = 0
    for a in range(0, len(epoch), RECORDS_PER_GATHER):
        day = _local_days(epoch[a:a + RECORDS_PER_GATHER], offset[a:a + RECORDS_PER_GATHER])
        unique, counts = np.unique(day, return_counts=True)
        rows = np.zeros((len(unique), len(DAY_COUNTS)), np.int32)
        rows[:, 0] = counts
        pieces.append(CameraDays(deployment, unique.astype(np.int32), rows))
        held += len(unique)
        if held > MAX_CAMERA_DAYS:  # perhaps dates counted twice (a day in two ranges): count them once
            pieces = [CameraDays.join(pieces)]
            held = len(pieces[0].day)
            if held > MAX_CAMERA_DAYS:
                return None
    return CameraDays.join(pieces)


CAMERA_DAYS_COLUMNS = ("deploymentID", "date", *DAY_COUNTS, "event_interval_s", "threshold")
MAX_IDLE_DAYS = 366  # a camera's days without a photo written as zeros, at most this many in a row: a longer gap is
# a camera that was not out (or a clock that jumped), not a year of empty nights
DAYS_PER_CHUNK = 65536  # rows of camera-days.csv formatted at a time


def camera_days_lines(cameras: Iterable[CameraDays], interval_s: float, threshold: float) -> Iterator[str]:
    """``camera-days.csv`` as text chunks: a row per camera and date from its first photo's to its last's, the days
    without a photo too (all zeros: the camera is taken as working from its first photo to its last, as nothing
    else says when it was set up, taken down or stopped; but not across a gap of more than ``MAX_IDLE_DAYS``), each
    with ``DAY_COUNTS`` and the interval and threshold the visits were grouped and counted at. The rows of a
    detection history or of trap effort (camera-days), without rebuilding them from the photos in R."""
    yield csvline.line(CAMERA_DAYS_COLUMNS)
    for cam in cameras:
        yield from camera_days_rows(cam, interval_s, threshold)


_FEW_DAYS = 64  # a camera's dates with photos written without numpy (``camera_days_rows``)


@functools.lru_cache(maxsize=1 << 16)
def _date_text(day: int) -> str:
    """A date (days since 1970-01-01) as ``np.datetime_as_string`` writes it: a collection's few dates, each
    formatted once, rather than a numpy call a camera."""
    return str(np.datetime_as_string(np.datetime64(day, "D")))


def camera_days_rows(cam: CameraDays, interval_s: float, threshold: float) -> Iterator[str]:
    """One camera's rows of ``camera_days_lines`` (none for a camera without days), ``DAYS_PER_CHUNK`` at a time."""
    tail = f",{interval_s:g},{threshold:g}\r\n"
    zeros = "," + ",".join("0" * len(DAY_COUNTS))
    where = csvline.field(spreadsheet_safe(cam.deployment))  # a table for spreadsheets: never a formula
    if len(cam.day) <= _FEW_DAYS:  # the same rows without numpy's cost a call (a camera a folder: a million)
        lines: list[str] = []
        previous = None
        for d, counts in zip(cam.day.tolist(), cam.counts.tolist()):
            if previous is not None and d - previous - 1 <= MAX_IDLE_DAYS:  # the days without a photo before
                lines.extend(f"{where},{_date_text(empty)}{zeros}{tail}" for empty in range(previous + 1, d))
            lines.append(f"{where},{_date_text(d)},{','.join(map(str, counts))}{tail}")
            previous = d
        if lines:
            yield "".join(lines)
        return
    for a in range(0, len(cam.day), DAYS_PER_CHUNK):  # days with photos, a chunk at a time, and the gaps before
        day = cam.day[a:a + DAYS_PER_CHUNK].astype(np.int64)
        previous = np.concatenate([[cam.day[a - 1] if a else day[0] - 1], day[:-1]])
        idle = day - previous - 1  # the days without a photo before each
        idle[idle > MAX_IDLE_DAYS] = 0
        rows = []
        for d, gap, counts in zip(day.tolist(), idle.tolist(), cam.counts[a:a + DAYS_PER_CHUNK].tolist()):
            for empty in range(d - gap, d):
                rows.append((empty, zeros))
            rows.append((d, "," + ",".join(map(str, counts))))
        dates_text = np.datetime_as_string(np.array([d for d, _ in rows], dtype="datetime64[D]")).tolist()
        yield "".join(f"{where},{date}{counts}{tail}" for date, (_, counts) in zip(dates_text, rows))


CAMERA_VISITS_COLUMNS = ("deploymentID", "first_capture", "last_capture", "days", "images", "visits",
                         *(f"{kind}_visits" for kind in KINDS), "blank_visits", "event_interval_s", "threshold")


def camera_visits_csv(cameras: Sequence[CameraVisits], interval_s: float, threshold: float) -> bytes:
    """``camera-visits.csv``: a row per camera (``CAMERA_VISITS_COLUMNS``), the interval and threshold the visits
    were grouped and counted at on every row, so that tables of several tasks can be stacked and still say so."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CAMERA_VISITS_COLUMNS)
    for cam in cameras:
        writer.writerow(camera_visits_row(cam, interval_s, threshold))
    return out.getvalue().encode("utf-8")


def camera_visits_row(cam: CameraVisits, interval_s: float, threshold: float) -> list[Any]:
    """One camera's row of ``camera-visits.csv`` (for ``csv.writer``)."""
    return [spreadsheet_safe(cam.deployment), cam.first, cam.last, f"{cam.span_s / 86400:.2f}", cam.images,
            cam.visits, *cam.with_kind, cam.blank, f"{interval_s:g}", f"{threshold:g}"]


class VisitsSink(Protocol):
    """Where ``event_lines`` puts each camera's visits, its runs joined, once the camera is done: a list, or a
    writer of ``camera-visits.csv`` that holds none of them (``activities.exports.CameraVisitsWriter``)."""

    def append(self, visits: CameraVisits, /) -> Any: ...


_INDEX_MAGIC = b"trapbatch-event-index-1\n"
_FEW_EVENTS = 64  # a camera's events counted beside others' (``EventIndex._shares``); more: searched
_NAMES_AT_A_TIME = 4096  # cameras counted at a time (at most 262,144 events' indexes and times)


class EventIndex:
    """Each deployment's events grouped by time (those of no list sequence), as sorted start and end times: what a
    media-level observation needs to name its event (``link_observations``). An image's event is the one whose span
    holds its capture time: a deployment's time-grouped events are disjoint spans in time order. 18 bytes an event;
    ``to_bytes`` writes the deployments one exports part holds (its fragment of the index). With them, of a
    deployment where some photos have a list sequence and others none, the sequences' spans and ids: a photo
    without one whose time lies within one is of that sequence (``_join_list_spans``; no time-grouped event
    overlaps such a span, so at most one of the two kinds holds a time)."""

    def __init__(self) -> None:
        # every deployment's time-grouped events as added, in three flat arrays (a camera's runs come one after
        # another), and where each deployment's are in them: its slot in ``_lo``/``_hi`` (one range; a deployment
        # added again after another gets its further ranges in ``_more``). Why not arrays of each camera's own:
        # three of them, a tuple and a list, ~680 bytes a camera besides its events, and a collection in
        # camera-day folders has a camera a folder (a million at ten million images in folders of ten)
        self._start, self._end, self._offset = array("q"), array("q"), array("h")
        self._where: dict[str, int] = {}
        self._lo, self._hi = array("q"), array("q")
        self._more: dict[str, list[tuple[int, int]]] = {}
        self._lists: dict[str, tuple[list[int], list[int], list[int]]] = {}
        self._ids: dict[tuple[str, int], str] = {}
        self._stamps: dict[str, list[str]] = {}
        # deployment -> its list sequences' spans and ids (``_Camera.spans``), as added, then as read back with
        # the table of their ends (``_max_table``, for ``_holder``)
        self._spans: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        self._listed: dict[str, tuple[list[int], list[int], list[np.ndarray], list[str]]] = {}
        # those sequences' event keys (``_event_key``, the ``EventFrames`` key of their photos): (deployment, id) ->
        # key as added; key -> id as read back (``sequence_names``)
        self._keys: dict[tuple[str, str], int] = {}
        self._named: dict[str, str] = {}

    def add(self, camera: _Camera) -> None:
        if len(camera.start_epoch):
            at = len(self._start)
            self._start.frombytes(camera.start_epoch.astype(np.int64).tobytes())
            self._end.frombytes(camera.end_epoch.astype(np.int64).tobytes())
            self._offset.frombytes(camera.start_offset.astype(np.int16).tobytes())
            slot = self._where.get(camera.deployment)
            if slot is None:
                self._where[camera.deployment] = len(self._lo)
                self._lo.append(at)
                self._hi.append(len(self._start))
            elif self._hi[slot] == at and camera.deployment not in self._more:  # the camera's next run
                self._hi[slot] = len(self._start)
            else:
                self._more.setdefault(camera.deployment, []).append((at, len(self._start)))
        if camera.spans is not None and len(camera.spans[0]):
            self._spans[camera.deployment] = camera.spans
        if camera.deployment in self._spans:  # the first run came first: its sequences' keys, in whichever run
            for key, name, timed in zip(camera.keys, camera.ids, camera.timed.tolist()):
                if not timed:
                    self._keys[(camera.deployment, name)] = int(key, 16)

    def deployments(self) -> set[str]:
        """The deployments added that have time-grouped events, or list sequences beside photos without one."""
        return set(self._where) | set(self._spans)

    def lookup(self) -> "EventIndex":
        """Every deployment added, ready for ``event_id`` (the single exports activity's whole index)."""
        return EventIndex.from_bytes(self.to_bytes({d: None for d in self.deployments()}))

    def _arrays(self, deployment: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The deployment's events: views of the flat arrays where they are one range (no copy: ``to_bytes`` slices
        them for each part that holds the camera, and lets them go before it returns, so the arrays can grow again),
        joined where they are several."""
        slot = self._where[deployment]
        ranges = [(self._lo[slot], self._hi[slot]), *self._more.get(deployment, ())]
        views = [(np.frombuffer(self._start, np.int64, hi - lo, lo * 8),
                  np.frombuffer(self._end, np.int64, hi - lo, lo * 8),
                  np.frombuffer(self._offset, np.int16, hi - lo, lo * 2)) for lo, hi in ranges]
        if len(views) == 1:
            return views[0]
        return (np.concatenate([v[0] for v in views]), np.concatenate([v[1] for v in views]),
                np.concatenate([v[2] for v in views]))

    def to_bytes(self, windows: Mapping[str, tuple[int, int] | None]) -> bytes:
        """The index of the deployments in ``windows`` (those with time-grouped events) as one document: of each,
        the events that overlap its window (first and last epoch of a part's photos of it: a camera of a million
        photos spread over five parts gives each part its own fifth), all of them for None."""
        names = sorted(d for d in windows if d in self._where or d in self._spans)
        start, end, offset, sizes = self._shares(names, windows)
        listed: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}  # of the names with list sequences
        for name in names:
            spans = self._spans.get(name)
            if spans is None:
                continue
            first, last, ids = spans
            window = windows[name]
            if window is not None and len(first):  # the sequences around the window's photos (they may overlap)
                kept = np.flatnonzero((last >= window[0]) & (first <= window[1]))
                first, last, ids = first[kept], last[kept], [ids[i] for i in kept.tolist()]
            listed[name] = (first, last, ids)
        out = io.BytesIO()
        out.write(_INDEX_MAGIC)
        encoded = json.dumps([names, [listed[name][2] if name in listed else [] for name in names]]
                             if any(len(f) for f, _, _ in listed.values()) else names,
                             ensure_ascii=False).encode("utf-8")
        empty = np.zeros(0, np.int64)
        np.savez(out, names=np.frombuffer(encoded, dtype=np.uint8), sizes=sizes, start=start, end=end, offset=offset,
                 list_start=np.concatenate([f for f, _, _ in listed.values()]).astype(np.int64) if listed else empty,
                 list_end=np.concatenate([t for _, t, _ in listed.values()]).astype(np.int64) if listed else empty,
                 list_key=np.array([self._keys.get((name, i), 0) for name, (_, _, ids) in listed.items()
                                    for i in ids], dtype=np.uint64))
        return out.getvalue()

    def _shares(self, names: Sequence[str], windows: Mapping[str, tuple[int, int] | None]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Of each of ``names``, its time-grouped events that overlap its window (all of them for None): their start
        and end epochs and start offsets, one name's after another's, and how many each name has.

        Why not a name at a time, as before: a part of a collection in camera-day folders holds tens of thousands
        of cameras of a few events each, and a few numpy calls a camera (~15 us) were the events step's next cost
        after the grouping. The cameras of at most ``_FEW_EVENTS`` events have their window's range counted
        ``_NAMES_AT_A_TIME`` at a time (a camera's spans are disjoint and in order, so those before its window and
        those within it are counts; a camera whose spans are not in order is searched as before), others searched;
        then runs of ranges that follow each other in the flat arrays are copied as one slice."""
        slots = [self._where.get(name, -1) for name in names]
        if not any(slot >= 0 for slot in slots):
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16),
                    np.zeros(len(names), np.int64))
        if any(name in self._more for name in names):  # a camera added again after another (never by the grouping)
            return self._shares_one_by_one(names, windows)
        lows, highs = np.frombuffer(self._lo, np.int64), np.frombuffer(self._hi, np.int64)
        index = np.array(slots, np.int64)
        has = index >= 0
        a = np.where(has, lows[np.maximum(index, 0)], 0)
        b = np.where(has, highs[np.maximum(index, 0)], 0)
        least, most = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        w0 = np.array([w[0] if w is not None else least for w in (windows[name] for name in names)], np.int64)
        w1 = np.array([w[1] if w is not None else most for w in (windows[name] for name in names)], np.int64)
        starts, ends = np.frombuffer(self._start, np.int64), np.frombuffer(self._end, np.int64)
        lo, hi = np.zeros(len(names), np.int64), b - a
        few = np.flatnonzero((hi > 0) & (hi <= _FEW_EVENTS))
        searched = np.flatnonzero(hi > _FEW_EVENTS).tolist()
        for g in range(0, len(few), _NAMES_AT_A_TIME):
            group = few[g:g + _NAMES_AT_A_TIME]
            size = hi[group]
            which = np.repeat(np.arange(len(group)), size)  # each event's name, by its place in the group
            at = np.repeat(a[group] - np.cumsum(size) + size, size) + np.arange(int(size.sum()))
            st, en = starts[at], ends[at]
            same = which[1:] == which[:-1]
            unsorted = np.unique(which[1:][same & ((st[1:] < st[:-1]) | (en[1:] < en[:-1]))])
            lo[group] = np.bincount(which[en < w0[group][which]], minlength=len(group))
            hi[group] = np.bincount(which[st <= w1[group][which]], minlength=len(group))
            searched.extend(group[unsorted].tolist())
        for k in searched:  # as the one at a time did (a window of None: all of them)
            if w0[k] != least or w1[k] != most:
                lo[k] = np.searchsorted(ends[a[k]:b[k]], w0[k], "left")
                hi[k] = np.searchsorted(starts[a[k]:b[k]], w1[k], "right")
        sizes = np.maximum(hi - lo, 0)
        first = a + lo
        keep = np.flatnonzero(sizes)
        if not len(keep):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16), sizes
        begin, stop = first[keep], first[keep] + sizes[keep]
        runs = np.flatnonzero(np.concatenate([[True], begin[1:] != stop[:-1]]))  # ranges that follow each other
        total = int(sizes.sum())
        out: list[np.ndarray] = [np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, np.int16)]
        flat: list[np.ndarray] = [starts, ends, np.frombuffer(self._offset, np.int16)]
        filled = 0
        for x, y in zip(begin[runs].tolist(), np.append(stop[runs[1:] - 1], stop[-1:]).tolist()):
            for target, source in zip(out, flat):
                target[filled:filled + y - x] = source[x:y]
            filled += y - x
        return out[0], out[1], out[2], sizes

    def _shares_one_by_one(self, names: Sequence[str], windows: Mapping[str, tuple[int, int] | None]
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``_shares`` a name at a time (a deployment whose events are in several ranges)."""
        arrays = []
        empty = np.zeros(0, np.int64)
        for name in names:
            start, end, offset = self._arrays(name) if name in self._where else (empty, empty, np.zeros(0, np.int16))
            window = windows[name]
            if window is not None:  # disjoint spans in order: the ends are sorted as the starts are
                lo, hi = int(np.searchsorted(end, window[0], "left")), int(np.searchsorted(start, window[1], "right"))
                start, end, offset = start[lo:hi], end[lo:hi], offset[lo:hi]
            arrays.append((start, end, offset))
        return (np.concatenate([x[0] for x in arrays]), np.concatenate([x[1] for x in arrays]),
                np.concatenate([x[2] for x in arrays]), np.array([len(x[0]) for x in arrays], dtype=np.int64))

    @classmethod
    def from_bytes(cls, data: bytes) -> "EventIndex":
        if not data.startswith(_INDEX_MAGIC):
            raise ValueError("not an event index of this version")
        index = cls()
        with np.load(io.BytesIO(data[len(_INDEX_MAGIC):]), allow_pickle=False) as doc:
            names = json.loads(doc["names"].tobytes().decode("utf-8"))
            bounds = np.concatenate([[0], np.cumsum(doc["sizes"])]).tolist()
            start, end, offset = doc["start"].tolist(), doc["end"].tolist(), doc["offset"].tolist()
            # an index written before the sequences' spans: names alone, and no span (none is joined then)
            first = doc["list_start"].tolist() if "list_start" in doc.files else []
            last = doc["list_end"].tolist() if "list_end" in doc.files else []
            # an index written before the sequences' keys: none (a joined photo's COCO seq_id is then its key)
            keys = doc["list_key"].tolist() if "list_key" in doc.files else []
        names, ids = (names, [[] for _ in names]) if not names or isinstance(names[0], str) else names
        for name, lo, hi in zip(names, bounds[:-1], bounds[1:]):
            index._lists[name] = (start[lo:hi], end[lo:hi], offset[lo:hi])
        at = 0
        for name, sequences in zip(names, ids):
            if sequences:
                a, b = first[at:at + len(sequences)], last[at:at + len(sequences)]
                # the table as arrays: 8 bytes an entry where lists held an object each (log2 levels of a part's
                # share of the spans)
                index._listed[name] = (a, b, _max_table(np.array(b, np.int64)), sequences)
                for key, sequence in zip(keys[at:at + len(sequences)], sequences):
                    if key:
                        index._named[f"{key:016x}"] = sequence
                at += len(sequences)
        return index

    def sequence_names(self) -> Mapping[str, str]:
        """The list sequences of the index (read back), by their event's key as ``EventFrames.find`` gives it:
        what COCO calls the visit of a photo that joined one (``link_coco_images``), the list's ``seq_id`` its
        listed photos carry, not the key, which no COCO image of that visit has."""
        return self._named

    def holds(self, stamp: str) -> bool:
        """Whether any deployment's event spans the timestamp ``stamp`` (the detection time, which stands in for
        unknown capture times: only then must a photo without one be told from those in the event)."""
        epoch = _Clock()(stamp)[0]
        return any(self.event_id(deployment, epoch) is not None for deployment in {*self._lists, *self._listed})

    def event_id(self, deployment: str, epoch: int) -> str | None:
        """The id of the time-grouped event of ``deployment`` whose span holds ``epoch`` (the event rows'
        ``eventID``), None when none does (an index read back with ``from_bytes``)."""
        listed = self._listed.get(deployment)
        if listed is not None:  # a list's sequence whose span holds it (then no time-grouped event does)
            j = _holder(listed[0], listed[2], epoch)
            if j >= 0:
                return listed[3][j]
        found = self._lists.get(deployment)
        if found is None:
            return None
        starts, ends, offsets = found
        i = bisect.bisect_right(starts, epoch) - 1
        if i < 0 or epoch > ends[i]:
            return None
        key = self._ids.get((deployment, i))
        if key is None:
            stamps = self._stamps.get(deployment)
            if stamps is None:  # the deployment's start times formatted at once (per event, numpy costs ~20 us)
                stamps = self._stamps[deployment] = _timestamps(np.array(starts, np.int64), np.array(offsets, np.int16))
            key = self._ids[(deployment, i)] = _event_key(deployment, "", stamps[i])
        return key


def time_windows(part: EventRecords) -> dict[str, tuple[int, int]]:
    """Each deployment of a part's records that has photos grouped by time (no list sequence): the epochs of its
    first and last such photo (``EventIndex.to_bytes``: the part's share of the index)."""
    timed = part.sequence < 0
    deployment, epoch = part.deployment[timed], part.epoch[timed]
    if not len(epoch):
        return {}
    order = np.argsort(deployment, kind="stable")
    deployment, epoch = deployment[order], epoch[order]
    first = np.flatnonzero(np.concatenate([[True], deployment[1:] != deployment[:-1]]))
    low, high = np.minimum.reduceat(epoch, first), np.maximum.reduceat(epoch, first)
    return {part.deployments[d]: (lo, hi) for d, lo, hi in zip(deployment[first].tolist(), low.tolist(),
                                                               high.tolist())}


def _event_key(deployment: str, sequence: str, start: str) -> str:
    """An event's key: the observationID prefix of its rows, and the eventID of one not of a list's sequence."""
    return hashlib.sha1(f"{deployment}\x00{sequence}\x00{start}".encode("utf-8")).hexdigest()[:16]


def untimed_media(media: Iterable[str]) -> set[str]:
    """The mediaIDs of media lines (``camtrapdp.MEDIA_COLUMNS``) whose capture time is unknown (their timestamp is the
    detection time: in no event, whatever it falls in)."""
    marker = camtrapdp.NO_CAPTURE_TIME
    found = set()
    for line in media:
        if marker in line:
            row = next(csv.reader([line])) if '"' in line else line.split(",")
            if len(row) >= 11 and row[10].startswith(marker):
                found.add(row[0])
    return found


def _head_end(line: str) -> int:
    """Where the seventh field of an observation line starts (the fields a link reads and writes come before)."""
    at = -1
    for _ in range(6):
        at = line.find(",", at + 1)
        if at < 0:
            return len(line)
    return at


def link_observations(lines: Iterator[str], index: EventIndex, untimed: set[str],
                      moved: Mapping[str, str] | None = None) -> Iterator[str]:
    """Observation lines (``camtrapdp.OBSERVATION_COLUMNS``, as written, ``\\r\\n`` ended) with the ``eventID`` of
    each media-level one without one filled from ``index``: the time-grouped event its image belongs to, so that
    Camtrap DP users find a photo's event by id (its event-level rows carry the same one). A row of an image of a
    list's sequence keeps that id; of an image in ``untimed``, none. A row of an image in ``moved`` (mediaID -> the
    stand-in its media row got, ``camtrapdp.stand_in_media``) takes that time as ``eventStart`` and ``eventEnd``,
    its media row's, and no event: its capture time is unknown. ``lines`` may hold a quoted field's line breaks (a
    name with one): such a record is read whole with ``csv`` and written back as ``csv.writer`` writes it, which is
    how it was written."""
    clock = _Clock()
    stand_ins = moved or {}
    # the deployment and timestamp last looked up and their event (None: none, or no timestamp this export writes):
    # a photo's rows come one after the other, and its second and later rows need no lookup
    last: list[str | None] = [None, None, None]

    def linked(fields: list[str]) -> bool:
        """Fill ``fields[3]`` (the eventID) of a media-level row of a timed photo without one, or the times of a
        photo given a stand-in; whether it changed the row."""
        stamp = stand_ins.get(fields[2])
        if stamp is not None:
            fields[4] = fields[5] = stamp
            return True
        if fields[3] or fields[2] in untimed:
            return False
        if fields[1] != last[0] or fields[4] != last[1]:
            try:
                found = index.event_id(fields[1], clock(fields[4])[0])
            except ValueError:  # not a timestamp this export writes: in no event
                found = None
            last[:] = fields[1], fields[4], found
        key = last[2]
        if key:
            fields[3] = key
        return key is not None

    for line in lines:
        # quotes only after the seventh field (e.g. a classifier's name with a comma) leave the split exact; a line
        # with an odd number of them ends inside a quoted field, whose record goes on in the next line
        if '"' in line and (line.count('"') % 2 or '"' in line[:_head_end(line)]):
            row = next(csv.reader(itertools.chain([line], lines)))
            if len(row) > 6 and row[6] == "media":
                linked(row)
            out = io.StringIO()
            csv.writer(out).writerow(row)
            yield out.getvalue()
            continue
        head = line.split(",", 6)
        yield ",".join(head) if len(head) == 7 and head[6].startswith("media,") and linked(head) else line


_COCO_SEQUENCE_FIELDS = ("seq_id", "seq_num_frames", "frame_num")


def link_coco_images(lines: Iterable[str], frames: EventFrames,
                     names: Mapping[str, str] | None = None) -> Iterator[str]:
    """COCO Camera Traps image lines (``coco.CocoWriter``'s: one image a line, a leading comma or none) with each
    time-grouped photo's ``seq_id``, ``seq_num_frames`` and ``frame_num`` added from ``frames`` (after its other
    fields, in create_sequences' order). An image that has any of the three already (an image list's) keeps what it
    has and gets none: a list's frame number beside a sequence from time would describe two different visits.
    ``names``: the list sequences' ids by their keys (``EventIndex.sequence_names``): a photo without a sequence
    that joined one (``_join_list_spans``) gets the list's ``seq_id``, which its listed photos carry, so a COCO
    reader that groups images by ``seq_id`` finds that visit's photos together, as Camtrap DP's eventID does;
    without it (an index written before the keys) the event's key, which only that photo carries."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == _COCO_LINES_PER_SEARCH:
            yield from _link_coco_chunk(chunk, frames, names)
            chunk = []
    yield from _link_coco_chunk(chunk, frames, names)


_COCO_LINES_PER_SEARCH = 1024  # image lines whose photos one EventFrames.find_many looks up


def _link_coco_chunk(lines: Sequence[str], frames: EventFrames, names: Mapping[str, str] | None) -> Iterator[str]:
    """``link_coco_images`` of a few lines, their photos looked up together (``EventFrames.find_many``)."""
    images = []
    for line in lines:
        body = line.rstrip("\n")
        image = jsonio.loads(body[1 if body.startswith(",") else 0:]) if body.endswith("}") else None
        images.append(image if isinstance(image, dict) else None)
    places = frames.find_many([camtrapdp.media_id(str(image.get("id", ""))) for image in images if image is not None])
    at = 0
    for line, image in zip(lines, images):
        if image is None:
            yield line
            continue
        found = places[at]
        at += 1
        if found is None or any(name in image for name in _COCO_SEQUENCE_FIELDS):
            yield line
            continue
        key, count, frame = found
        body = line.rstrip("\n")
        seq_id = jsonio.dumps_text(names[key]) if names and key in names else f'"{key}"'
        yield f'{body[:-1]},"seq_id":{seq_id},"seq_num_frames":{count},"frame_num":{frame}}}{line[len(body):]}'


def event_lines(parts: Sequence[EventRecords], classified_by: str, completed_at: str,
                interval_s: float = DEFAULT_INTERVAL_S,
                cameras: VisitsSink | None = None,
                index: EventIndex | None = None,
                frames: EventFrames | None = None,
                days: Callable[[CameraDays], object] | None = None) -> Iterator[tuple[str, int, int]]:
    """The event rows of the parts' records (``events``, ``camtrapdp.OBSERVATION_COLUMNS`` order) as CSV text, with
    how many rows and events it holds, a few thousand rows a chunk, joined from constant fields rather than through
    ``csv.writer`` (a third of the cost per event; tests/unit/test_camtrap_events.py holds it to ``csv.writer``).
    ``cameras`` gets each camera's summary (``CameraVisits``) once its rows are made, ``index`` its time-grouped
    events (``EventIndex``), ``frames`` their photos' places in them (``EventFrames``), ``days`` each camera's
    photos and visits by day (``CameraDays``) as soon as the camera is done (one camera's table held at a time)."""
    field = csvline.field
    tail = f",,,,,,,,,,,,machine,{field(classified_by)},{field(completed_at)},"
    pending: list[CameraDays] = []  # the current camera's runs' days
    visits: CameraVisits | None = None  # the current camera's visits, its runs so far joined
    chunk: list[str] = []
    events_in_chunk = 0
    for camera in _cameras(parts, interval_s, frames):
        if index is not None:
            index.add(camera)
        if cameras is not None:
            if camera.continued and visits is not None:
                visits = visits.plus(camera.visits)
            else:
                if visits is not None:
                    cameras.append(visits)
                visits = camera.visits
        if days is not None:  # a camera's runs joined once it is done (``CameraDays.join``)
            if not camera.continued and pending:  # one run's days are joined already
                days(pending[0] if len(pending) == 1 else CameraDays.join(pending))
                pending.clear()
            pending.append(camera.days or CameraDays.empty(camera.deployment))
        where = field(camera.deployment)
        for key, name, start, end, most, top in zip(camera.keys, camera.ids, camera.starts, camera.ends, camera.most,
                                                    camera.top):
            head = f",{where},,{field(name)},{start},{end},event,"
            found = False
            for i, kind in enumerate(KINDS):
                if most[i]:
                    found = True
                    count = "" if kind == "unknown" else str(most[i])
                    # no confidence: only photos cut short made it unknown (camtrapdp.CUT_SHORT_COMMENT)
                    best = "" if kind == "unknown" and not top[i] else f"{top[i]:.4g}"
                    chunk.append(f"{key}_{kind}{head}{kind},,,{count}{tail}{best},,\r\n")
            if not found:
                chunk.append(f"{key}_blank{head}blank,,,{tail},,\r\n")
            events_in_chunk += 1
            if len(chunk) >= 4096:
                yield "".join(chunk), len(chunk), events_in_chunk
                chunk, events_in_chunk = [], 0
    if days is not None and pending:
        days(pending[0] if len(pending) == 1 else CameraDays.join(pending))
    if cameras is not None and visits is not None:
        cameras.append(visits)
    if chunk:
        yield "".join(chunk), len(chunk), events_in_chunk
