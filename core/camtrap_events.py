"""Camtrap DP events: each camera's images grouped into sequences by time, one event-level observation per kind.

Why: media-level observations (one per detection) are what machine learning wants; ecologists count *events*
(Camtrap DP 1.0: event-level observations "should be mutually exclusive, so that their count can be summed"), and a
camera trap fires bursts, so ten frames of one deer are one visit. Without them every partner re-derives sequences
by hand from the timestamps. The grouping is MegaDetector's (``data_management.cct_json_utils.create_sequences``,
``SequenceOptions.episode_interval_seconds`` 60): a deployment's images in capture-time order, a new sequence
whenever the gap to the previous image exceeds the interval (``TRAPBATCH_EVENT_INTERVAL_S``). An image list's own
sequence (``seq_id``..., already the ``eventID`` of that image's media-level observations) takes precedence: its
images are one event per deployment and id, whatever their gaps.

What an event row says (observationLevel ``event``, no ``mediaID``: Camtrap DP links an event's media by
``deploymentID`` and timestamps between ``eventStart`` and ``eventEnd``): one row per kind detected in any of its
images (``animal``, ``human``, ``vehicle``; ``unknown`` for other categories), ``count`` the most boxes of that kind
in one image (a minimum number of individuals, never a sum over frames that see the same animal twice),
``classificationProbability`` the highest confidence of that kind; an event without detections is one ``blank`` row.
Images without a capture time (the detection time stands in for theirs) and failed images are in no event: their
order in time is unknown.

How, at any scale: each exports step reads the Camtrap DP lines it writes anyway (from the entries or the workers'
views: ``EventTap.feed``) and keeps per timed image 42 bytes of numbers (``EventRecords``); the fanned-out exports'
parts hand theirs to the combine as a fragment. The combine sorts each part's records in place and then takes one
deployment at a time from all parts (a camera's images may be in any of them), so it holds the records (~420 MB at
ten million timed images) and one camera's copy, and appends the event rows to ``observations.csv``. The rows depend
only on the records, never on where the parts were cut: the single activity and the fan-out write the same bytes.

Must not: do I/O.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator, Sequence

import numpy as np

from gpu_batch.formats import camtrapdp, csvline

DEFAULT_INTERVAL_S = 60.0  # MegaDetector's SequenceOptions.episode_interval_seconds
KINDS = ("animal", "human", "vehicle", "unknown")  # observation types an event counts (blank: none of them)
_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}
_COUNT_MAX = np.iinfo(np.uint16).max
_MAGIC = b"trapbatch-events-1\n"


@dataclass
class EventRecords:
    """One record per timed, successful image: its deployment and list sequence (indexes into ``deployments`` and
    ``sequences``; sequence -1 for none), capture time (epoch seconds and the timestamp's offset in minutes, to
    write the event's start and end as the media rows wrote them), and per kind (``KINDS``) its boxes and highest
    confidence."""

    deployments: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    deployment: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    sequence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    epoch: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, len(KINDS)), np.uint16))
    best: np.ndarray = field(default_factory=lambda: np.zeros((0, len(KINDS)), np.float32))

    def __len__(self) -> int:
        return int(self.epoch.shape[0])

    def to_bytes(self) -> bytes:
        """The records as one document (an exports part's ``events`` fragment)."""
        out = io.BytesIO()
        out.write(_MAGIC)
        np.savez(out, deployments=np.array(self.deployments, dtype=np.str_),
                 sequences=np.array(self.sequences, dtype=np.str_), deployment=self.deployment,
                 sequence=self.sequence, epoch=self.epoch, offset=self.offset, counts=self.counts, best=self.best)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EventRecords":
        if not data.startswith(_MAGIC):
            raise ValueError("not an events fragment of this version")
        with np.load(io.BytesIO(data[len(_MAGIC):]), allow_pickle=False) as doc:
            return cls([str(d) for d in doc["deployments"]], [str(s) for s in doc["sequences"]],
                       doc["deployment"], doc["sequence"], doc["epoch"], doc["offset"], doc["counts"], doc["best"])


class EventTap:
    """Reads the Camtrap DP media and observation lines an exports step writes, a chunk at a time (one entry's, or
    one view's: a chunk holds each of its images' media row and all their observation rows), and keeps the records.
    ``reset`` forgets everything fed (the exports found the views' lines unusable and write the entries instead)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._deployments: dict[str, int] = {}
        self._sequences: dict[str, int] = {}
        self._deployment: list[int] = []
        self._sequence: list[int] = []
        self._epoch: list[int] = []
        self._offset: list[int] = []
        self._counts: list[tuple[int, ...]] = []
        self._best: list[tuple[float, ...]] = []

    def feed(self, media: str, observations: str) -> None:
        if not media:
            return
        found: dict[str, tuple[str, list[int], list[float]]] = {}  # mediaID -> (eventID, counts, best)
        if observations:
            for row in csv.reader(io.StringIO(observations)):
                if len(row) < 26 or row[6] != "media":
                    continue
                seen = found.get(row[2])
                if seen is None:
                    seen = found[row[2]] = (row[3], [0] * len(KINDS), [0.0] * len(KINDS))
                kind = _KIND_INDEX.get(row[7])
                if kind is None:  # blank
                    continue
                seen[1][kind] += 1
                try:
                    probability = float(row[25])
                except ValueError:
                    probability = 0.0
                if probability > seen[2][kind]:
                    seen[2][kind] = probability
        for row in csv.reader(io.StringIO(media)):
            if len(row) < 11:
                continue
            seen = found.get(row[0])
            if seen is None or row[10].startswith(camtrapdp.NO_CAPTURE_TIME):
                continue  # failed (no observation at all) or no capture time: in no event
            try:
                at = datetime.fromisoformat(row[3])
            except ValueError:
                continue
            offset = at.utcoffset()
            if offset is None:
                continue
            self._deployment.append(self._deployments.setdefault(row[1], len(self._deployments)))
            self._sequence.append(self._sequences.setdefault(seen[0], len(self._sequences)) if seen[0] else -1)
            self._epoch.append(int(at.timestamp()))
            self._offset.append(int(offset.total_seconds()) // 60)
            self._counts.append(tuple(min(n, _COUNT_MAX) for n in seen[1]))
            self._best.append(tuple(seen[2]))

    def records(self) -> EventRecords:
        n = len(self._epoch)
        return EventRecords(list(self._deployments), list(self._sequences),
                            np.array(self._deployment, dtype=np.int32), np.array(self._sequence, dtype=np.int32),
                            np.array(self._epoch, dtype=np.int64), np.array(self._offset, dtype=np.int16),
                            np.array(self._counts, dtype=np.uint16).reshape(n, len(KINDS)),
                            np.array(self._best, dtype=np.float32).reshape(n, len(KINDS)))


def _timestamp(epoch: int, offset_minutes: int) -> str:
    """A capture time as ``camtrapdp.camtrap_timestamp`` writes it (``isoformat`` in the image's own offset)."""
    zone = timezone(timedelta(minutes=offset_minutes))
    return datetime.fromtimestamp(epoch, zone).isoformat()


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


def _sorted_runs(parts: Sequence[EventRecords]) -> tuple[list[str], list[str], list[np.ndarray]]:
    """Renumber every part's deployments and sequences by name over all parts and sort each part's records by
    (deployment, sequence, time), in place, one array at a time (memory: the records and one array's copy). Returns
    the names and, per part, where each deployment's records start (``len(deployments) + 1`` offsets)."""
    deployments = sorted({d for p in parts for d in p.deployments})
    sequences = sorted({s for p in parts for s in p.sequences})
    dep_index = {d: i for i, d in enumerate(deployments)}
    seq_index = {s: i for i, s in enumerate(sequences)}
    bounds = []
    for p in parts:
        if len(p):
            p.deployment = np.array([dep_index[d] for d in p.deployments], dtype=np.int32)[p.deployment]
            # [-1]: a record without a sequence (-1) stays -1
            p.sequence = np.array([seq_index[s] for s in p.sequences] + [-1], dtype=np.int32)[p.sequence]
            order = np.lexsort((p.epoch, p.sequence, p.deployment))
            for name in ("deployment", "sequence", "epoch", "offset", "counts", "best"):
                setattr(p, name, getattr(p, name)[order])
        p.deployments, p.sequences = deployments, sequences
        bounds.append(np.searchsorted(p.deployment, np.arange(len(deployments) + 1)))
    return deployments, sequences, bounds


def events(parts: Sequence[EventRecords], interval_s: float = DEFAULT_INTERVAL_S) -> Iterator[Event]:
    """The events of the parts' records (reordered in place), by deployment name, then list sequence (time-grouped
    images first), then time: the same however the images were cut into parts. A deployment at a time, so memory
    stays the records' own plus one deployment's (a camera's images may be in any of the parts)."""
    deployments, sequences, bounds = _sorted_runs(parts)
    for d, deployment in enumerate(deployments):
        pieces = [(p, int(b[d]), int(b[d + 1])) for p, b in zip(parts, bounds) if b[d + 1] > b[d]]
        if not pieces:
            continue
        if len(pieces) == 1:  # already in order
            p, lo, hi = pieces[0]
            seq, epoch, offset = p.sequence[lo:hi], p.epoch[lo:hi], p.offset[lo:hi]
            counts, best = p.counts[lo:hi], p.best[lo:hi]
        else:
            seq, epoch, offset, counts, best = (np.concatenate([getattr(p, name)[lo:hi] for p, lo, hi in pieces])
                                                for name in ("sequence", "epoch", "offset", "counts", "best"))
            order = np.lexsort((epoch, seq))
            seq, epoch, offset, counts, best = seq[order], epoch[order], offset[order], counts[order], best[order]
        n = len(epoch)
        new = np.ones(n, dtype=bool)
        new[1:] = (seq[1:] != seq[:-1]) | ((seq[1:] < 0) & (np.diff(epoch) > interval_s))
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n) - 1
        most, top = np.maximum.reduceat(counts, starts, axis=0), np.maximum.reduceat(best, starts, axis=0)
        for i, (first, last) in enumerate(zip(starts.tolist(), ends.tolist())):
            start = _timestamp(int(epoch[first]), int(offset[first]))
            listed = sequences[int(seq[first])] if seq[first] >= 0 else ""
            key = hashlib.sha1(f"{deployment}\x00{listed}\x00{start}".encode("utf-8")).hexdigest()[:16]
            yield Event(deployment, key, listed or key, start, _timestamp(int(epoch[last]), int(offset[last])),
                        last - first + 1, tuple(int(c) for c in most[i]), tuple(float(b) for b in top[i]))


def event_rows(event: Event, classified_by: str, completed_at: str) -> list[list[str]]:
    """An event's observation rows (``camtrapdp.OBSERVATION_COLUMNS`` order)."""
    rows = []
    for i, kind in enumerate(KINDS):
        if event.counts[i]:
            rows.append((kind, "" if kind == "unknown" else str(event.counts[i]), f"{event.best[i]:.4g}"))
    if not rows:
        rows.append(("blank", "", ""))
    return [[f"{event.key}_{kind}", event.deployment, "", event.event_id, event.start, event.end, "event", kind, "", "",
             count, "", "", "", "", "", "", "", "", "", "", "", "machine", classified_by, completed_at, probability,
             "", ""] for kind, count, probability in rows]


def event_lines(parts: Sequence[EventRecords], classified_by: str, completed_at: str,
                interval_s: float = DEFAULT_INTERVAL_S) -> Iterator[tuple[str, int]]:
    """The event rows of the parts' records (``events``) as CSV text (``csv.writer``'s) and how many rows it holds,
    a few thousand rows a chunk."""
    chunk: list[str] = []
    for event in events(parts, interval_s):
        chunk.extend(csvline.line(row) for row in event_rows(event, classified_by, completed_at))
        if len(chunk) >= 4096:
            yield "".join(chunk), len(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk), len(chunk)
