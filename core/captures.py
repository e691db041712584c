"""Zooniverse subjects by capture: a camera's burst of images is one subject, as the seed workflow uploads them.

Why: the seed workflow (../shared/reference/seeds/001, its ``generate_manifest``) builds its manifest from a captures
file, one subject per capture (``capture_id``, or season, site, roll and capture) holding that capture's images in
order, because volunteers classify a capture, not a frame. When a task's image list carries those columns the
Zooniverse manifests are made of captures (``activities.zooniverse_captures``); without them, a request's
``zooniverse_visit_frames`` makes captures of visits, the photos the exports grouped by time (``visits``: the
pipeline's own step from timestamps to captures, for collections without a captures file); otherwise one subject per
image (``core.zooniverse``), as before.

How, in bounded memory at any scale: each image that would be in a manifest (``core.zooniverse.excluded`` says which
not) becomes a *record*, ``[capture key, rank, file, max conf, top category, metadata values]``; records are sorted by
(key, rank, file) in runs, runs are merged (``heapq.merge``), and consecutive records of a key are one capture. So a
capture may be spread over any shards and parts. No capture is held whole, however many images it has (a captures
file whose clock stuck may make millions of photos one): the merge is read twice, ``tally`` counting each capture as
it passes (a number kept only for one longer than ``max_frames``), ``subjects`` then making the subjects as it passes
(one subject, at most ``max_frames`` images, at a time). The subjects' order is their keys' order; which batch a
subject goes to is ``core.zooniverse.BatchAssigner`` over the subjects' ordinals, as for images.

* the key: the list's ``capture_id`` column where it has one, else ``season#site#roll#capture`` (the seed
  pipeline's capture id) where all four columns exist; an image whose key cells are blank is a subject of its own;
* the rank: the list's ``image_rank_in_capture`` or ``image`` column when a whole number, else the file name;
* a subject's hidden detector fields: the highest confidence of its images, and that image's top category;
* a capture of more than ``ManifestOptions.max_frames`` images (``TRAPBATCH_ZOONIVERSE_MAX_FRAMES``, default 20) is
  several subjects (``subjects``), each of at most that many in rank order, the hidden ``#capture_part`` saying which
  (``2 of 3``; empty for a capture that is one subject). Why: the manifest has one image column per image of its
  largest subject and every row carries them all, so one burst of 500 frames (or a captures file whose clock stuck,
  making every photo one capture) gave every row 500 columns, most empty; the Panoptes CLI makes each column of a row
  subject metadata (zooniverse/panoptes-cli ``subject_set.py``: ``metadata = dict(zip(cleaned_headers, row))``),
  must be told every image column (``-f``), and the classifier shows a subject's images as one flipbook a volunteer
  steps through (zooniverse/front-end-monorepo ``docs/arch/adr-49.md``). Panoptes itself sets no maximum on a
  subject's ``locations`` (zooniverse/panoptes ``app/schemas/subject_create_schema.rb``): the limit is ours, the
  same 20 as a request's visits (``core.requests.MAX_VISIT_FRAMES``).

Column names are matched as ``gpu_batch.formats.listfields`` matches them (case-insensitive, spaces and hyphens as
underscores). Must not: do I/O.
"""
from __future__ import annotations

import bisect
import re
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from core.zooniverse import ManifestOptions, metadata_column
from gpu_batch.formats import csvline
from gpu_batch.formats.listfields import integer
from gpu_batch.formats.zooniverse_rows import cell, facts

CAPTURE_ID = "capture_id"
CAPTURE_PARTS = ("season", "site", "roll", "capture")
RANK_COLUMNS = ("image_rank_in_capture", "image")
ALONE = "\x00"  # the key prefix of an image without a capture (before every real key): a subject of its own
FIXED = ["folder", "attribution", "license", "#capture_id", "#capture_part", "#images", "#detector_max_conf",
         "#detector_top_category", "#detector_threshold"]
_SEPARATORS = re.compile(r"[\s\-]+")


def _norm(column: str) -> str:
    return _SEPARATORS.sub("_", column.strip().lower())


@dataclass(frozen=True, slots=True)
class CaptureColumns:
    """The list's columns (as the list spells them) that make a capture's key, and the one that ranks its images;
    or, with ``visit_frames`` and no columns, captures made of visits (``visits``)."""

    key: tuple[str, ...]
    rank: str | None
    visit_frames: int = 0  # > 0: a visit's photos, at most this many a subject (the request's zooniverse_visit_frames)


def visit_captures(frames: int) -> CaptureColumns:
    """Captures made of visits, at most ``frames`` photos a subject (no image list defines them)."""
    return CaptureColumns((), None, frames)


# a photo's visit: its id, photos and place in it (``core.camtrap_events.EventFrames.find`` by file), None for none
VisitOf = Callable[[str], "tuple[str, int, int] | None"]


def visits(records: Iterable[list[Any]], visit_of: VisitOf, frames: int) -> Iterator[list[Any]]:
    """Records whose key and rank are their photo's visit and place in it: a visit of at most ``frames`` photos is
    one subject keyed by its id (the Camtrap DP event's key: its eventID when grouped by time, the prefix of its
    observationIDs for an image list's sequence), a longer one is subjects of ``frames`` photos in capture-time order
    keyed ``<id>#1``, ``<id>#2``...; a photo in no visit (no capture time) stays a subject of its own.

    Why split rather than one subject a visit: a visit is every photo a camera took with gaps under the event
    interval (a grazing herd can give hundreds), while a Zooniverse subject is a flipbook a volunteer steps through;
    Snapshot Safari's captures are one trigger's burst, three photos. A part's record carries its ``#capture_part``
    (``2 of 3``) and its visit's id after the record's fields, as ``subjects`` labels a list's capture split; the
    part counts the visit's frames, photos left out of the manifests (flagged, cut short) included, so the combine
    labels the parts again by those the manifests hold (``SplitVisits``)."""
    for rec in records:
        found = visit_of(str(rec[2]))
        if found is not None:
            seq_id, count, frame = found
            if count <= frames:
                rec[0] = seq_id
            else:
                rec[0] = f"{seq_id}#{frame // frames + 1}"
                rec[6:] = [part_label(frame // frames + 1, -(-count // frames)), seq_id]
            rec[1] = frame
        yield rec


def part_label(part: int, parts: int) -> str:
    """``#capture_part`` of the ``part``-th (1-based) of ``parts`` subjects a capture was split into: ``2 of 3``
    (words, not ``2/3``, which a spreadsheet would read as a date)."""
    return f"{part} of {parts}"


def part_numbers(label: str) -> tuple[int, int]:
    """``part_label``'s two numbers."""
    part, parts = label.split(" of ")
    return int(part), int(parts)


def capture_columns(metadata_columns: Sequence[str]) -> CaptureColumns | None:
    """How the list's columns define captures; None when they do not (one subject per image)."""
    by_name = {_norm(c): c for c in reversed(metadata_columns)}  # the first spelling of a name wins
    rank = next((by_name[r] for r in RANK_COLUMNS if r in by_name), None)
    if CAPTURE_ID in by_name:
        return CaptureColumns((by_name[CAPTURE_ID],), rank)
    if all(p in by_name for p in CAPTURE_PARTS):
        return CaptureColumns(tuple(by_name[p] for p in CAPTURE_PARTS), rank)
    return None


def capture_key(metadata: Mapping[str, str] | None, columns: CaptureColumns, file: str) -> str:
    values = [str((metadata or {}).get(c, "")).strip() for c in columns.key]
    if not values or not all(values):  # no columns: captures of visits, keyed after (``visits``)
        return ALONE + file
    return "#".join(values)


def record(entry: Mapping[str, Any], metadata: Mapping[str, str] | None, columns: CaptureColumns,
           options: ManifestOptions, categories: Mapping[str, str]) -> list[Any]:
    """An image's record (the caller leaves out images ``core.zooniverse.excluded`` keeps out of manifests)."""
    file, _folder, conf, top = facts(entry, options.threshold, categories)
    listed = [cell((metadata or {}).get(c, "")) for c in options.metadata_columns]
    return _record(file, conf, top, listed, columns, options)


def record_from_row(fields: Sequence[str], columns: CaptureColumns, options: ManifestOptions) -> list[Any]:
    """``record`` of an image from its per-image manifest row (``core.zooniverse.columns`` order, read back with
    ``csv.reader``), as the workers' merge views hold them: the same record, without the entry."""
    file, conf, top, listed = fields[0], float(fields[5]), fields[6], list(fields[8:])
    return _record(file, conf, top, listed, columns, options)


def _record(file: str, conf: float, top: str, listed: list[str], columns: CaptureColumns,
            options: ManifestOptions) -> list[Any]:
    row = dict(zip(options.metadata_columns, listed))
    rank_text = row.get(columns.rank, "") if columns.rank else ""
    rank = integer(rank_text) if rank_text.strip() else None
    return [capture_key(row, columns, file), rank if rank is not None else 2**62, file, conf, top, listed]


def sort_key(rec: Sequence[Any]) -> tuple[str, int, str]:
    return rec[0], rec[1], rec[2]


@dataclass(slots=True)
class Capture:
    """One subject: its key ("" for an image alone), its images in order, its detector fields and metadata;
    ``part``: its ``#capture_part`` when it is one of the subjects a capture was split into (``part_label``), else "";
    ``visit``: the id of the visit it is a part of, when ``visits`` split one (``SplitVisits``), else ""."""

    key: str
    files: list[str]
    conf: float
    top: str
    metadata: list[str]
    part: str = ""
    visit: str = ""


class SplitVisits:
    """The parts of each split visit (``visits``) that reach the manifests, seen in the combine's first pass, so that
    its second labels each part by them (``relabelled``).

    Why: ``visits`` numbers a visit's parts by its frames, which count every photo the events step grouped, photos
    the manifests leave out (flagged, cut short: a camera whose battery died mid-burst) included, so a visit of 21
    frames at 20 a subject whose last photo was cut short said ``1 of 2`` of its one subject, and an ecologist looked
    for the second. Memory: a few numbers per split visit in the first pass, then only the visits whose parts
    are not all there."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, list[int]]] = {}

    def see(self, visit: str, part: str) -> None:
        """A subject that is the ``part`` (``part_label``) of ``visit`` ("" for none: nothing to note)."""
        if visit:
            number, parts = part_numbers(part)
            self._seen.setdefault(visit, (parts, []))[1].append(number)

    def settle(self) -> dict[str, list[int]]:
        """Each split visit some of whose parts the manifests lack, with the parts they hold, in order."""
        lacking: dict[str, list[int]] = {}
        for visit, (parts, present) in self._seen.items():
            present.sort()
            if present != list(range(1, parts + 1)):
                lacking[visit] = present
        self._seen.clear()
        return lacking


@dataclass(slots=True)
class Tally:
    """The combine's first pass over the sorted records (``tally``): what the second (``subjects``) and the batches
    need, without holding a capture. ``long``: the image count of each capture of more than ``max_frames`` images,
    in key order (8 bytes each), so that the second pass can label its parts (``2 of 3``) as they stream past."""

    max_frames: int
    subjects: int = 0
    images: int = 0
    widest: int = 0  # images in the largest subject: the manifests' image columns
    long: "array[int]" = field(default_factory=lambda: array("q"))
    split_visits: SplitVisits = field(default_factory=SplitVisits)

    def capture(self, first: Sequence[Any], count: int) -> None:
        """A capture of ``count`` records, ``first`` the first of them in rank order."""
        self.images += count
        if count > self.max_frames:
            self.long.append(count)
            self.subjects += -(-count // self.max_frames)
            self.widest = max(self.widest, self.max_frames)
            return
        self.subjects += 1
        self.widest = max(self.widest, count)
        self.split_visits.see(str(first[7]) if len(first) > 7 else "", str(first[6]) if len(first) > 6 else "")


def _alone_or_new(key: str, current: str | None) -> bool:
    """Whether a record of ``key`` starts a capture after one of ``current`` (an image alone is always one)."""
    return key != current or key.startswith(ALONE)


def tally(records: Iterable[Sequence[Any]], max_frames: int) -> Tally:
    """The combine's first pass: counts each capture of the ``records`` (sorted by ``sort_key``) as they stream
    past, keeping a number only for a capture split into several subjects (``Tally.long``, 8 bytes) and for each
    part of a split visit (``SplitVisits``): memory does not grow with a capture's images."""
    out = Tally(max_frames)
    key: str | None = None
    first: Sequence[Any] = ()
    count = 0
    for rec in records:
        k = str(rec[0])
        if not _alone_or_new(k, key):
            count += 1
            continue
        if key is not None:
            out.capture(first, count)
        key, first, count = k, rec, 1
    if key is not None:
        out.capture(first, count)
    return out


def subjects(records: Iterable[Sequence[Any]], max_frames: int, long: Iterable[int]) -> Iterator[Capture]:
    """The Zooniverse subjects of the ``records`` (sorted by ``sort_key``; consecutive records of one key are one
    capture), made as they stream past: a capture of at most ``max_frames`` images is one, a longer one is subjects
    of ``max_frames`` images (the last one fewer) in its rank order, each with its ``part`` (``part_label``), the
    capture's key and metadata (its first image's), and the detector fields of its own images (a volunteer sees only
    those): the highest confidence, the first image that has it. See the module doc for why.

    ``long``: ``tally(records).long`` of the same records, a longer capture's image count, in key order: a
    capture's first subject is known to be one of several when its ``max_frames + 1``-th image arrives, and its
    ``of n`` then comes from there. So memory holds one subject, ``max_frames`` images, however long the capture (a
    captures file whose clock stuck may make millions of photos one); holding the capture whole took ~230 bytes an
    image (its names and scores: 46 MB of heap for 200,000). Raises ValueError when the records are not those
    ``long`` was counted from."""
    counts = iter(long)
    current: Capture | None = None
    key = ""
    count = seen = parts = 0  # the current capture's images (when long), those seen, its subjects (0: one so far)
    for rec in records:
        k = str(rec[0])
        if current is not None and not _alone_or_new(k, key):
            seen += 1
            file, conf, top = str(rec[2]), float(rec[3]), str(rec[4])
            if len(current.files) < max_frames:
                current.files.append(file)
                if conf > current.conf:  # the first of the best
                    current.conf, current.top = conf, top
                continue
            if not parts:  # its (max_frames + 1)-th image: a long capture, whose count the first pass noted
                count = next(counts, 0)
                parts = -(-count // max_frames)
                if count < seen:
                    raise ValueError(_changed(key, count, seen))
                current.part, current.visit = part_label(1, parts), ""
            yield current
            current = Capture(key, [file], conf, top, current.metadata, part_label((seen - 1) // max_frames + 1, parts))
            continue
        if current is not None:
            if parts and seen != count:
                raise ValueError(_changed(key, count, seen))
            yield current
        key, seen, parts = k, 1, 0
        current = Capture(k, [str(rec[2])], float(rec[3]), str(rec[4]), [str(v) for v in rec[5]],
                          str(rec[6]) if len(rec) > 6 else "", str(rec[7]) if len(rec) > 7 else "")
    if current is not None:
        if parts and seen != count:
            raise ValueError(_changed(key, count, seen))
        yield current
    if next(counts, None) is not None:
        raise ValueError(_changed("", 0, 0))


def _changed(key: str, counted: int, seen: int) -> str:
    what = f"capture {key!r} counted {counted} images in the first pass and {seen} in the second" if key else \
        "the first pass counted more long captures than the second met"
    return (f"{what}: the captures runs changed between the combine's passes (rewritten while it ran?); run the "
            "exports again: submit the same request, its finished shards are reused")


def relabelled(capture: Capture, lacking: Mapping[str, list[int]]) -> Capture:
    """``capture`` with its ``#capture_part`` counting the parts of its visit the manifests hold (``lacking``:
    ``SplitVisits.settle``), empty when it is the only one (as a visit that is one subject); its key stays, the
    Camtrap DP frames' (``<id>#3`` may be ``2 of 2``)."""
    present = lacking.get(capture.visit) if capture.visit else None
    if present is not None:
        at = bisect.bisect_left(present, part_numbers(capture.part)[0])
        capture.part = part_label(at + 1, len(present)) if len(present) > 1 else ""
    return capture


def columns(options: ManifestOptions, images: int) -> list[str]:
    """The header of a manifest whose largest subject has ``images`` images."""
    fixed = [f"image_name_{i}" for i in range(1, images + 1)] + FIXED
    return fixed + [metadata_column(c, fixed) for c in options.metadata_columns]


def row_parts(capture: Capture, options: ManifestOptions) -> tuple[str, str]:
    """The subject's row in two pieces, the image names' fields and the rest (from the comma before ``folder``,
    ``\\r\\n`` ended): a row can be made before the widest capture is known, and padded when it is written."""
    first = capture.files[0]
    rest = [first.rsplit("/", 1)[0] if "/" in first else "", options.attribution, options.license,
            "" if capture.key.startswith(ALONE) else capture.key, capture.part, len(capture.files), capture.conf,
            capture.top,
            options.threshold, *capture.metadata]
    names = ",".join([csvline.manifest_field(f) for f in capture.files])
    return names, "," + csvline.manifest_line([cell(v) for v in rest])


def row_line(capture: Capture, options: ManifestOptions, images: int) -> str:
    """The subject's CSV line (``\\r\\n`` ended, as ``csv.writer`` writes it), padded to ``images`` image columns
    (the missing ones empty)."""
    names, rest = row_parts(capture, options)
    return names + "," * (images - len(capture.files)) + rest
