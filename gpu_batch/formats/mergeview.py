"""The merge's view of one shard: what a merge part makes of the shard's entries, written once by the GPU worker.

Why: a merge part read every shard's results, parsed every entry and formatted it again (its JSON in the merged
file, its CSV line, its place in the preview sample, the repeat search's rows, the counts): about 20 us of the
control plane's CPU per image, a sixth of the 120 it spent (issue 11 asks for 40 in all: 1 % of the GPU time at
250 images/s). The GPU node's CPUs idle while the GPU works, and the worker holds the final results anyway: so for
an attempt that finished every image of its manifest, the worker writes this view beside its results
(``layout.attempt_view_blob``), and the merge part composes its bytes instead (``activities.fanin``). A resubmitted
attempt's view covers the whole shard: its manifest names the first manifest and the earlier results
(``ShardManifest.merge_view_basis``), which the worker reads when it has finished (``whole_shard``) and merges before
its own entries, as the merge would; the view names each earlier results blob with its ETag. Without that, a task
with a few retryable failures spent twice the control plane's CPU (``bench/RESULTS.md``, fifteenth session).

``ShardFormatter`` is the merge part's own per-image code, used by both sides: the worker feeds it the attempts'
entries as the merge would (``merge_entries`` over the manifest, from the results' bytes as the merge parses them),
the merge part feeds it every shard that has no usable view (reused results, an image list's names not found, a
repeats-removed variant, a worker that wrote none or an older worker's attempt of several) and ``absorb``s the views
of the others. The output bytes are the same either way (``tests/unit/test_mergeview.py``, and the fan-in's
integration tests).

A view is trusted only for the exact documents it was made from (every attempt's results), as the coverage summary is
(``gpu_batch.manifest``): the results blob's ETag that Put Blob returned and the manifest's as the worker read it,
and only for the task and threshold it was made with (the app's setting may have changed since the manifest was
written). Anything else, or a view that does not parse, and the merge reads the entries as before.

The exports use it too: its COCO lines (``coco_lines``: they depend only
on the entry, the threshold and the categories) and its Camtrap DP lines (``camtrap_lines``, with placeholders for
the task's completion time, classifier and images' URL prefix, which the exports put in) and its Zooniverse rows
(``zooniverse_lines``, with a placeholder for the attribution and license settings) are what an exports activity
writes for it; when all
three are there, the exports do not read the shard's entries at all. A task started from an image list with
metadata columns gets lines made with each image's row (``ListedRows``, read by the worker from the shard's list
document that its manifest names: ``ShardManifest.merge_view_list``); the view names that document's ETag and the
columns, and the exports use its lines only for the list and columns they have (``activities.fanin.clean_view``).
Without this the exports formatted every entry of such a task (1.5 % of the GPU time in control-plane CPU instead of
0.7 %; ``bench/RESULTS.md``, fifteenth session). A Camtrap DP media row's comments depend on its deployment's first
coordinates and camera, which a shard alone does not know: when the list's columns give any, the enumeration writes
each deployment's first values over the whole list (``layout.list_facts_blob``), the manifest names that document
too (``ViewList.given``) and the view's Camtrap DP lines start from them (its ETag in the header); the exports check
each view's first facts against those before it all the same (``activities.exports.ViewLines``), as the exports'
parts are checked against each other (``core.exportparts``).

Layout: one line of JSON (the header: version, identity, counts, the preview sampler's state, the folders' sizes,
COCO's, Camtrap DP's and Zooniverse's sizes and counts, the photos cut short), ``\\n``, then the entries' JSON
fragments, their CSV lines, each folder's rows, COCO's image and annotation lines, Camtrap DP's media and observation
lines, and Zooniverse's rows and their lengths (4-byte little-endian integers), back to back. A view without a
section reads as one without those lines (the exports then format the entries); code older than a section does not
see it (its ranged reads stop before it, and a whole view it reads is longer than its header says, so it takes the
entries).

Must not: do I/O (``whole_shard`` reads through the caller's reader).
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from gpu_batch.formats import camtrapdp, coco, csvline, jsonio, zooniverse_rows
from gpu_batch.formats.detections_csv import CsvLines
from gpu_batch.formats.eligible import FolderRows, RepeatOptions, eligible_detections
from gpu_batch.formats.entries import (DETECTION_CATEGORIES, damaged_in, entry_fragment, failure_counts, merge_entries,
                                       summarize)
from gpu_batch.formats.previewsample import PreviewSampler
from gpu_batch.manifest import ShardManifest, ViewBasis, ViewList, plain_etag

# The view's form and the form of the export lines in it. 3: COCO image lines write an EXIF ``datetime`` as
# ``YYYY-MM-DD HH:MM:SS`` (``gpu_batch.formats.coco.cct_datetime``; 2 copied ``YYYY:MM:DD HH:MM:SS``, which
# dateutil reads as today's date), and Camtrap DP media lines percent-encode a ``filePath`` its pattern refuses
# (``camtrapdp.media_file_path``). A view's COCO lines never held a box of unknown size (``coco_lines``: none then).
# 4: Zooniverse lines quote a field that starts with a space (``csvline.manifest_field``: the Panoptes CLI reads
# manifests with ``skipinitialspace``, which dropped the space from a photo's name). 5: results entries are ASCII, a
# non-ASCII character ``\uXXXX``-escaped as MegaDetector writes its results (``entries.entry_json``). 6: a
# deployment's timestamp-issue facts are flags (``camtrapdp``: no time, clock corrected, zone assumed), so a time
# written as UTC for want of a utc_offset makes timestampIssues true. 7: a COCO image line of a failure whose
# ``failure_reason`` is undecodable carries COCO Camera Traps' ``"corrupt": true`` (``coco.convert_entry``). 8: a
# COCO annotation line with a pixel ``bbox`` carries COCO's ``area`` and ``"iscrowd": 0`` (``coco.convert_entry``). The
# lines of a photo cut short are made by the exports, not taken from a view: a view that names one is not used for
# export lines (``activities.fanin.iter_export_views``). 8: a deployment's span facts are its earliest and latest
# capture instants (``camtrapdp.earlier``); 7's compared them as text, so a camera whose clock fell back at summer
# time's end started after it ended, and the exports combine a view's facts as they are. 9: a Camtrap DP media line's
# ``filePath`` is the image's URL, ``MEDIA_BASE`` and the blob name percent-encoded (``camtrapdp.media_url``); 8's
# held the blob name, so a version-8 view is no view and the exports write that shard's rows from its entries, with
# the URL: a package never mixes URLs and relative paths. 10: a Camtrap DP media line places a photo's EXIF time in
# its own EXIF offset (the entry's ``exif_metadata``, ``camtrapdp.exif_offset``), as do the deployments' span facts;
# 9's code placed it in UTC, so an app of version 9 must not take a newer worker's lines (it would write a camera's
# photos of formatted shards at +00:00 beside a view's at +02:00), nor this app a version-9 view's. 11: a CSV line's
# guard (``detections_csv.spreadsheet_safe``) also quotes a name that starts with ``'``, a line feed or a NUL, so
# every cell that starts with ``'`` had one added (10's wrote ``'=x.jpg`` for both ``=x.jpg`` and ``'=x.jpg``).
# The worker image is deployed apart from the app, so an app may read views an older worker wrote: ``_header`` takes
# only views of this version, so a version-2 view is no view (``read_view``/``read_view_part`` give None) and the
# merge and the exports format that shard's entries themselves, instead of mixing the old lines with new ones in one
# file; an older app likewise ignores a newer worker's views. Raise it whenever a line a view holds changes.
# A header field added (``damaged``) is no new version: an older app reads past it, and this one reads a view
# without it as one whose worker did not name the photos cut short (``ShardView.damaged`` None).
VIEW_VERSION = 11
COUNTS = ("images", "failed", "with_detections", "detections", "empty")


class ShardFormatter:
    """A merge part's per-image work over its shards, in stream order: the merged JSON's fragments and the CSV lines
    (returned per shard), and, kept, the counts, failure reasons, preview sample and the repeat search's rows
    (``search``: False for the repeats-removed variant, which searches nothing)."""

    def __init__(self, task_id: str, threshold: float, search: bool = True) -> None:
        self.threshold = threshold
        self.sampler = PreviewSampler(task_id, threshold)
        self.lines = CsvLines(threshold)  # per-task constants hoisted; each row built with one join (issue 11)
        self.folders = FolderRows()
        self.options = RepeatOptions()
        self.search = search
        self.counts = dict.fromkeys(COUNTS, 0)
        self.reasons: dict[str, int] = {}
        self.considered = 0

    def add_shard(self, entries: Sequence[Mapping[str, Any]]) -> tuple[bytes, bytes]:
        """One shard's merged entries: their JSON fragments and CSV lines, the rest kept."""
        for key, value in summarize(entries, self.threshold).items():
            self.counts[key] += value
        for reason, n in failure_counts(entries).items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        fragments: list[bytes] = []
        table: list[str] = []
        sample, fragment, line = self.sampler.add, entry_fragment, self.lines.line
        for entry in entries:
            sample(entry)
            fragments.append(fragment(entry))
            table.append(line(entry))
            if self.search:
                eligible = eligible_detections(entry, self.options)
                if eligible:
                    self.considered += len(eligible)
                    self.folders.add(eligible)
        return b"".join(fragments), "".join(table).encode("utf-8")

    def absorb(self, view: "ShardView") -> None:
        """A shard's view, as if its entries had been given to ``add_shard`` (whose bytes the view holds)."""
        for key in COUNTS:
            self.counts[key] += view.counts[key]
        for reason, n in view.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        self.sampler.absorb(view.sample)
        if self.search:
            self.considered += view.considered
            for folder, count, rows in view.folders:
                self.folders.absorb(folder, rows, count)


@dataclass(frozen=True, slots=True)
class ShardView:
    """A parsed view (``read_view``): the identity it was made for, and what ``ShardFormatter`` made of the shard."""

    task_id: str
    threshold: float
    results_etag: str
    manifest_etag: str
    counts: Mapping[str, int]
    reasons: Mapping[str, int]
    considered: int
    sample: Mapping[str, Any]
    json: bytes
    csv: bytes
    folders: list[tuple[str, int, bytes]] = field(default_factory=list)
    # COCO's image and annotation lines of the shard as an exports part writes them (each with its leading comma),
    # and how many of each; None when a success has no size (the exports then read that image's header)
    coco: tuple[bytes, bytes, int, int] | None = None
    # Camtrap DP's media and observation lines with COMPLETED_AT and CLASSIFIED_BY standing for the task's values, their
    # counts, and the deployments' facts (``CamtrapBuilder.deployment_facts``); None when a name, a failure or a
    # listed value holds NUL (``camtrap_lines``)
    camtrap: "CamtrapLines | None" = None
    # Zooniverse's rows of the shard's eligible images, with MIDDLE standing for the task's attribution and license;
    # None when a name holds NUL
    zooniverse: "ZooniverseLines | None" = None
    # a last attempt's view of the whole shard: the earlier attempts' results blobs it merged, name -> ETag
    # (``build_view``'s ``earlier``); empty for the view of a shard's only attempt
    earlier: Mapping[str, str] = field(default_factory=dict)
    # the image list's shard document the export lines were made with (its ETag as read) and the metadata columns;
    # "" and () for lines made without an image list's rows
    list_etag: str = ""
    list_columns: tuple[str, ...] = ()
    list_given_etag: str = ""  # the deployments' first facts the Camtrap DP lines started from ("" none)
    # a view read ``STREAMED``: its export sections where they lie in the blob, read a slice at a time (``coco``,
    # ``camtrap`` and ``zooniverse`` are then None); None for a view whose sections are held
    exports: "ExportSections | None" = None
    # the photos cut short that the results it was made from name (every attempt's ``info.trapbatch.damaged``,
    # sorted: ``build_view``'s ``damaged``); None for a view of a worker that did not name them (the merge then reads
    # the attempts' lists, ``activities.shard_results.shard_damaged``)
    damaged: tuple[str, ...] | None = None

    def export_sections(self) -> "ExportSections":
        """The view's export sections to read a slice at a time (``ExportSections``): where they lie in the blob for
        a view read ``STREAMED``, else over the bytes this view holds."""
        if self.exports is not None:
            return self.exports
        held: dict[str, bytes] = {}
        if self.coco is not None:
            held.update(images=self.coco[0], annotations=self.coco[1])
        if self.camtrap is not None:
            held.update(media=self.camtrap.media, observations=self.camtrap.observations)
        if self.zooniverse is not None:
            held.update(rows=self.zooniverse.rows, lengths=_little_endian(self.zooniverse.lengths))

        def read(name: str, offset: int, length: int) -> bytes:
            return _exact(held[name][offset:offset + length], length, name)

        return ExportSections(
            read, {name: len(data) for name, data in held.items()},
            self.coco[2:] if self.coco is not None else None,
            (self.camtrap.media_count, self.camtrap.observation_count, self.camtrap.deployments)
            if self.camtrap is not None else None,
            len(self.zooniverse.lengths) if self.zooniverse is not None else None)

    def matches(self, task_id: str, threshold: float, results_etag: str, manifest_etag: str,
                earlier: Mapping[str, str] | None = None) -> bool:
        """Whether this view was made for this task's threshold from exactly these results and manifest blobs, and
        (``earlier``: the shard's other results blobs, name -> ETag, as listed now) from exactly those earlier
        attempts: a view of attempt 1 alone must find no other results, a last attempt's view every one it merged."""
        others = {name: plain_etag(etag) for name, etag in (earlier or {}).items()}
        return (self.task_id == task_id and self.threshold == threshold and bool(self.results_etag)
                and self.results_etag == plain_etag(results_etag) and self.manifest_etag == plain_etag(manifest_etag)
                and all(others.values()) and dict(self.earlier) == others)


@dataclass(frozen=True, slots=True)
class EarlierAttempt:
    """An earlier attempt's results as a last attempt's worker read them (``build_view``'s ``earlier``): the blob's
    name, its ETag as read and its entries as the merge parses them."""

    name: str
    etag: str
    entries: Sequence[Any]
    damaged: tuple[str, ...] = ()  # the photos cut short its ``info`` names (``entries.damaged_in``)


@dataclass(frozen=True, slots=True)
class WholeShard:
    """What a later attempt's view is made over besides its own results (``whole_shard``)."""

    images: tuple[str, ...]  # the first manifest's: every image of the shard
    manifest_etag: str
    earlier: list[EarlierAttempt]


# a blob's name in the output container -> (its bytes, its ETag); raises ValueError when it cannot read it
BlobReader = Callable[[str], tuple[bytes, str]]


@dataclass(frozen=True, slots=True)
class ListedRows:
    """An image list's rows of one shard as the worker read them (``list_rows``): the document's ETag, the task's
    metadata columns, and each image's row (name -> column -> value)."""

    etag: str
    columns: tuple[str, ...]
    rows: Mapping[str, Mapping[str, str]]
    # the deployments' first coordinates and camera over the whole list (deployment -> [latitude, longitude,
    # camera]) and that document's ETag; empty when the manifest names none or it cannot be read
    given: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    given_etag: str = ""

    def of(self, name: str) -> Mapping[str, str] | None:
        """An image's row, as ``activities.exports.ListMetadata.get`` gives the exports (None when not listed)."""
        return self.rows.get(name)


def list_rows(where: ViewList, read: BlobReader) -> ListedRows:
    """The shard's list document that ``where`` names, through ``read``. Raises ValueError when it cannot be read or
    is not one (the view is then made without export lines that need it)."""
    data, etag = read(where.blob)
    doc = jsonio.loads(data)
    rows = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(rows, dict) or not all(isinstance(v, dict) for v in rows.values()):
        raise ValueError(f"{where.blob}: not an image-list shard document")
    given: dict[str, Sequence[Any]] = {}
    given_etag = ""
    if where.given:
        try:  # without them the view's Camtrap DP lines are those of its own shard's first values, as before
            data, read_etag = read(where.given)
            facts = jsonio.loads(data)
            if isinstance(facts, dict) and all(isinstance(v, list) and len(v) == 3 for v in facts.values()):
                given, given_etag = facts, plain_etag(read_etag)
        except ValueError:
            pass
    return ListedRows(plain_etag(etag), tuple(where.columns), rows, given, given_etag)


def whole_shard(basis: ViewBasis, read: BlobReader) -> WholeShard:
    """The shard's first manifest and earlier results that ``basis`` names, through ``read`` (the caller's storage),
    with the photos cut short each of those results names (no further read: the merge, which takes this shard's
    view instead of those results, learns them from the view). Raises ValueError when one of them cannot be read or
    does not parse as the merge would take it (the merge skips results that do not parse; a view that merged them
    anyway, or left them out, would not be its bytes): no view then."""
    manifest_bytes, manifest_etag = read(basis.manifest)
    images = ShardManifest.from_dict(jsonio.loads(manifest_bytes)).images
    earlier: list[EarlierAttempt] = []
    for name in basis.results:
        data, etag = read(name)
        doc = jsonio.loads(data)
        entries = doc.get("images") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"{name}: not a results document")
        earlier.append(EarlierAttempt(name, etag, entries, tuple(damaged_in(doc))))
    return WholeShard(images, manifest_etag, earlier)


def build_view(task_id: str, threshold: float, manifest_images: Iterable[str], attempt_entries: Iterable[Any],
               results_etag: str, manifest_etag: str, earlier: Sequence[EarlierAttempt] = (),
               listed: ListedRows | None = None, damaged: Iterable[str] = ()) -> bytes | None:
    """The view of an attempt's results (the entries as the merge reads them from the results blob) for a shard whose
    manifest lists ``manifest_images``; None when the attempt left images without a final entry (the shard runs
    again). ``earlier``: for a later attempt, the shard's earlier attempts (oldest first), merged before it as the
    merge does (``merge_entries``), with ``manifest_images`` and ``manifest_etag`` then those of the shard's first
    manifest, which lists every image: the view covers the whole shard, so a shard that ran again is not merged entry
    by entry either (issue 11). ``listed``: the image list's rows of the shard (``list_rows``), with which the export
    lines are made (see the module doc). ``damaged``: the photos cut short that the attempt's results name
    (``entries.damaged_in``); the header names them with the earlier attempts' (``EarlierAttempt.damaged``), always,
    none as ``[]``. Why in the view: a merge that takes it reads no results, so the names must come with it, tied to
    the same ETags; the attempts' own lists (``layout.attempt_damaged_blob``) are best effort, and an earlier attempt
    that died before writing its list named its photos only in its results (``ShardView.damaged``)."""
    attempts = [[e for e in attempt.entries if isinstance(e, dict)] for attempt in earlier]
    entries, missing = merge_entries(manifest_images, [*attempts, [e for e in attempt_entries if isinstance(e, dict)]])
    if missing:
        return None
    formatter = ShardFormatter(task_id, threshold)
    json_bytes, csv_bytes = formatter.add_shard(entries)
    folders = [(folder, formatter.folders.count[folder], b",".join(pieces))
               for folder, pieces in formatter.folders.text.items()]
    header = {"version": VIEW_VERSION, "task_id": task_id, "threshold": threshold,
              "results_etag": plain_etag(results_etag), "manifest_etag": plain_etag(manifest_etag),
              "counts": formatter.counts, "failure_reasons": formatter.reasons, "considered": formatter.considered,
              "sample": formatter.sampler.state(), "json_bytes": len(json_bytes), "csv_bytes": len(csv_bytes),
              "folders": [[folder, count, len(rows)] for folder, count, rows in folders],
              "damaged": sorted({*damaged, *(name for attempt in earlier for name in attempt.damaged)})}
    if earlier:
        header["earlier_results"] = [[attempt.name, plain_etag(attempt.etag)] for attempt in earlier]
    if listed is not None:
        header["list"] = {"etag": listed.etag, "columns": list(listed.columns),
                          **({"given_etag": listed.given_etag} if listed.given_etag else {})}
    images, annotations, counts = coco_lines(entries, threshold, listed)
    if images is not None:
        header["coco"] = {"images_bytes": len(images), "annotations_bytes": len(annotations), **counts}
    camtrap = camtrap_lines(entries, threshold, listed)
    if camtrap is not None:
        header["camtrap"] = {"media_bytes": len(camtrap.media), "observations_bytes": len(camtrap.observations),
                             "media": camtrap.media_count, "observations": camtrap.observation_count,
                             "deployments": camtrap.deployments}
    zooniverse = zooniverse_lines(entries, threshold, listed)
    if zooniverse is not None:
        header["zooniverse"] = {"rows": len(zooniverse.lengths), "rows_bytes": len(zooniverse.rows)}
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")  # one line: no raw newline
    return b"".join([head, b"\n", json_bytes, csv_bytes, *(rows for _, _, rows in folders), images or b"",
                     annotations, *((camtrap.media, camtrap.observations) if camtrap is not None else ()),
                     *((zooniverse.rows, _little_endian(zooniverse.lengths)) if zooniverse is not None else ())])


def _little_endian(lengths: Sequence[int]) -> bytes:
    """A view's row lengths as 4-byte little-endian integers."""
    return struct.pack(f"<{len(lengths)}I", *lengths)


def _lengths(data: bytes) -> list[int]:
    """``_little_endian`` read back."""
    return list(struct.unpack(f"<{len(data) // 4}I", data))


@dataclass(frozen=True, slots=True)
class ZooniverseLines:
    """A shard's Zooniverse manifest rows: each eligible image's fixed columns (``zooniverse_rows.fixed_line`` with
    ``zooniverse_rows.MIDDLE`` for the task's attribution and license, MegaDetector's categories, the view's
    threshold) and ``\\r\\n``, in results order, and each row's length in bytes. An image list's metadata columns
    are not in them: the exports take them only when the task has no image list."""

    rows: bytes
    lengths: list[int]

    def filled(self, middle: str) -> tuple[bytes, list[int]]:
        """The rows with the task's ``,attribution,license,`` (quoted) in, and their lengths."""
        return _fill_rows(self.rows, self.lengths, middle)


def _fill_rows(rows: bytes, lengths: Sequence[int], middle: str) -> tuple[bytes, list[int]]:
    """Zooniverse rows (each with ``MIDDLE`` once) with ``middle`` in its place, and their lengths."""
    text = middle.encode("utf-8")
    delta = len(text) - len(MIDDLE_BYTES)
    return rows.replace(MIDDLE_BYTES, text), [n + delta for n in lengths]


MIDDLE_BYTES = zooniverse_rows.MIDDLE.encode("utf-8")


def _holds_nul(listed: ListedRows | None) -> bool:
    """Whether an image-list value holds NUL, the placeholders' character (their lines are then not made)."""
    return listed is not None and any("\x00" in str(value) for row in listed.rows.values() for value in row.values())


def zooniverse_lines(entries: Sequence[Mapping[str, Any]], threshold: float,
                     listed: ListedRows | None = None) -> ZooniverseLines | None:
    """The shard's Zooniverse rows at ``threshold`` (see ``ZooniverseLines``), each with its image-list row's values
    in ``listed.columns`` order after the fixed columns (``core.zooniverse.row_line``); None when a name or a listed
    value holds NUL (the placeholder's character)."""
    if any("\x00" in str(e.get("file", "")) for e in entries) or _holds_nul(listed):
        return None
    threshold = float(threshold)
    threshold_text = zooniverse_rows.threshold_field(threshold)
    columns = listed.columns if listed is not None else ()
    rows: list[bytes] = []
    lengths: list[int] = []
    field, cell = csvline.manifest_field, zooniverse_rows.cell
    for entry in entries:
        if zooniverse_rows.excluded(entry):
            continue
        text = zooniverse_rows.fixed_line(entry, threshold, DETECTION_CATEGORIES, zooniverse_rows.MIDDLE,
                                          threshold_text)
        if columns:
            row = (listed.of(str(entry["file"])) if listed is not None else None) or {}
            text += "".join(["," + field(cell(row.get(c, ""))) for c in columns])
        line = (text + csvline.TERMINATOR).encode("utf-8")
        rows.append(line)
        lengths.append(len(line))
    return ZooniverseLines(b"".join(rows), lengths)


# What a view's Camtrap DP lines hold in place of the task's completion time, classifier and images' URL prefix
# (``camtrapdp.CamtrapBuilder.media_base``: the account and container, which the worker is not told) (the exports
# replace them; NUL is in no blob name a view is made for, and in no value the exports put in their place)
COMPLETED_AT = "\x00completed_at\x00"
CLASSIFIED_BY = "\x00classified_by\x00"
MEDIA_BASE = "\x00media_base\x00"
COMPLETED_AT_BYTES, CLASSIFIED_BY_BYTES = COMPLETED_AT.encode("utf-8"), CLASSIFIED_BY.encode("utf-8")
MEDIA_BASE_BYTES = MEDIA_BASE.encode("utf-8")


@dataclass(frozen=True, slots=True)
class CamtrapLines:
    """A shard's Camtrap DP media and observation lines (``camtrapdp.CamtrapBuilder.add_lines``) with
    ``COMPLETED_AT`` and ``CLASSIFIED_BY`` in place of the task's values, how many of each, and the deployments'
    facts (``[id, start, end, timestamp_issues, location, latitude, longitude, camera]``, start and end the
    capture times' span, "" for a deployment without any: the completion time stands in only once every part is
    combined, ``camtrapdp.CamtrapBuilder.deployment_rows``)."""

    media: bytes
    observations: bytes
    media_count: int
    observation_count: int
    deployments: list[list[Any]]

    def filled(self, completed_at: str, classified_by: str,
               media_base: str) -> tuple[str, str, list[list[Any]]] | None:
        """The lines and facts with the task's values in (``media_base``: the images' URL prefix, ``camtrapdp.
        CamtrapBuilder.media_base``), or None when a value would need CSV quoting (then the entries are formatted
        instead)."""
        facts = _filled_facts(self.deployments, completed_at, classified_by, media_base)
        if facts is None:
            return None
        return (_fill_camtrap(self.media, completed_at, classified_by, media_base),
                _fill_camtrap(self.observations, completed_at, classified_by, media_base), facts)


def _filled_facts(deployments: Sequence[Sequence[Any]], completed_at: str, classified_by: str,
                  media_base: str) -> list[list[Any]] | None:
    """The deployments' facts with the task's completion time in, or None when a task value would need CSV quoting
    (or holds NUL), or there is no ``media_base`` (a URL prefix: the lines' filePath is one): the view's Camtrap DP
    lines are then not the task's."""
    values = (completed_at, classified_by, media_base)
    if not media_base or not all(csvline.plain(v) for v in values) or any("\x00" in v for v in values):
        return None
    return [[completed_at if value == COMPLETED_AT else value for value in fact] for fact in deployments]


def _fill_camtrap(data: bytes, completed_at: str, classified_by: str, media_base: str) -> str:
    """Camtrap DP lines (whole lines: no placeholder is cut) with the task's values in."""
    return (data.decode("utf-8").replace(COMPLETED_AT, completed_at).replace(CLASSIFIED_BY, classified_by)
            .replace(MEDIA_BASE, media_base))


def camtrap_lines(entries: Sequence[Mapping[str, Any]], threshold: float,
                  listed: ListedRows | None = None) -> CamtrapLines | None:
    """The shard's Camtrap DP lines at ``threshold`` with MegaDetector's categories and each image's list row, if
    ``listed`` (see ``CamtrapLines``); None when a name, a failure or a listed value holds NUL."""
    if any("\x00" in str(e.get("file", "")) + str(e.get("failure") or "") for e in entries) or _holds_nul(listed):
        return None
    builder = camtrapdp.CamtrapBuilder(threshold=threshold, detection_categories=DETECTION_CATEGORIES,
                                       completed_at="", classified_by=CLASSIFIED_BY,
                                       given=listed.given if listed is not None else {}, media_base=MEDIA_BASE)
    builder.completed_at = COMPLETED_AT  # after __post_init__, which would read it as a time
    media: list[str] = []
    observations: list[str] = []
    for entry in entries:
        row, rows = builder.add_lines(entry, listed.of(str(entry["file"])) if listed is not None else None)
        media.append(row)
        observations.append(rows)
    facts = builder.deployment_facts()  # a deployment's span is its images' capture times, "" for none
    return CamtrapLines("".join(media).encode("utf-8"), "".join(observations).encode("utf-8"),
                        builder.counts["media"], builder.counts["observations"], facts)


def coco_lines(entries: Sequence[Mapping[str, Any]], threshold: float,
               listed: ListedRows | None = None) -> tuple[bytes | None, bytes, dict[str, int]]:
    """The shard's COCO image and annotation lines (``coco.CocoWriter`` of an exports part: each line with its
    leading comma) at ``threshold``, with MegaDetector's categories and each image's list row, if ``listed``;
    ``(None, b"", {})`` when a success has no size of its own (an exports activity reads such an image's header)."""
    if not all(e.get("failure") is not None or coco.entry_size(e) for e in entries):
        return None, b"", {}
    images, annotations = io.StringIO(), io.StringIO()
    writer = coco.CocoWriter(images, annotations, threshold, DETECTION_CATEGORIES, continued=True)
    for entry in entries:
        writer.add(entry, None, listed.of(str(entry["file"])) if listed is not None else None)
    writer.flush()
    return (images.getvalue().encode("utf-8"), annotations.getvalue().encode("utf-8"),
            {"images": writer.counts["images"], "annotations": writer.counts["annotations"]})


SLICE_BYTES = 2 * 1024 * 1024  # what ``ExportSections`` reads of a section at a time (read when it reads)


class TornView(ValueError):
    """A view's section read back shorter than its header says, or not laid out as a view's lines are (the blob
    changed or was cut since its header was read): the view is not used, as one that does not parse."""


def _exact(data: bytes, length: int, name: str) -> bytes:
    if len(data) != length:
        raise TornView(f"{length} bytes of the view's {name} asked for, {len(data)} read")
    return data


@dataclass(frozen=True, slots=True)
class ExportSections:
    """A view's export sections, read a slice (``SLICE_BYTES``) at a time: ``read(name, offset, length)`` gives
    ``length`` bytes of section ``name`` (``images`` and ``annotations``: COCO's lines; ``media`` and
    ``observations``: Camtrap DP's; ``rows`` and ``lengths``: Zooniverse's) from ``offset``, or raises ``TornView``.

    Why: an exports activity read a view's export sections whole and held them a few times over (the read, each
    section's copy, Camtrap DP's text with the task's values in, its bytes again): ~2.3 kB an image, 226 MB of
    Python heap for one shard of 100,000 images (``bench/exports_memory.py``), one activity of eight on an instance.
    A slice at a time, a view costs a few slices, whatever its shard's size.

    ``sizes``: each section's length; ``coco``: COCO's (images, annotations) counts; ``camtrap``: Camtrap DP's
    (media, observations) counts and the deployments' facts (``CamtrapLines.deployments``); ``zooniverse``: how
    many rows; each None when the view has no such lines."""

    read: Callable[[str, int, int], bytes]
    sizes: Mapping[str, int]
    coco: tuple[int, int] | None
    camtrap: tuple[int, int, list[list[Any]]] | None
    zooniverse: int | None

    def slices(self, name: str, whole: int = 1) -> Iterator[bytes]:
        """Section ``name``'s bytes in order, a slice at a time, each a multiple of ``whole`` bytes (else cut
        anywhere: for bytes copied as they are)."""
        size, step = self.sizes.get(name, 0), max(whole, SLICE_BYTES // whole * whole)
        for offset in range(0, size, step):
            yield self.read(name, offset, min(step, size - offset))

    def camtrap_facts(self, completed_at: str, classified_by: str, media_base: str) -> list[list[Any]] | None:
        """The deployments' facts with the task's values in (``CamtrapLines.filled``'s), or None when the view has
        no Camtrap DP lines or they cannot take the task's values."""
        if self.camtrap is None:
            return None
        return _filled_facts(self.camtrap[2], completed_at, classified_by, media_base)

    def camtrap_lines(self, completed_at: str, classified_by: str,
                      media_base: str) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Camtrap DP's lines with the task's values in, in UTF-8 (``camtrap_facts`` must not be None), a slice at
        a time: ``(media, observations, held)``, the media rows and observation rows to write next (each stream's
        pieces together are ``CamtrapLines.filled``'s text, encoded) and the observation rows of those media rows'
        images (``held``: ``observations`` itself, or rows yielded before). So each image's media row comes with all
        its observation rows, as ``core.camtrap_events.EventTap.feed`` reads them; pieces end at whole records."""
        values = [(COMPLETED_AT_BYTES, completed_at.encode("utf-8")),
                  (CLASSIFIED_BY_BYTES, classified_by.encode("utf-8")),
                  (MEDIA_BASE_BYTES, media_base.encode("utf-8"))]

        def fill(data: bytes) -> bytes:  # ASCII placeholders: in UTF-8 no other character's bytes hold them
            for placeholder, value in values:
                data = data.replace(placeholder, value)
            return data

        held = b""
        for media, observations, new in _aligned(_Records(self.read, "media", self.sizes.get("media", 0)),
                                                 _Records(self.read, "observations",
                                                          self.sizes.get("observations", 0))):
            if new:
                held = fill(observations)
            yield fill(media), held if new else b"", held

    def zooniverse_rows(self, middle: str) -> Iterator[tuple[bytes, list[int]]]:
        """Zooniverse's rows with ``middle`` in (``ZooniverseLines.filled``'s), about a slice of rows at a time,
        with their lengths."""
        count, size = self.zooniverse or 0, self.sizes.get("rows", 0)
        per = max(1, SLICE_BYTES * count // max(size, 1))
        offset = 0
        for first in range(0, count, per):
            n = min(per, count - first)
            lengths = _lengths(self.read("lengths", 4 * first, 4 * n))
            rows = self.read("rows", offset, sum(lengths))
            offset += len(rows)
            yield _fill_rows(rows, lengths, middle)


class _Records:
    """A CSV section (``csv.writer``'s records, each ended by CRLF outside quotes) read ``SLICE_BYTES`` at a time:
    ``buffer`` holds what was read and not yet taken, from a record's start."""

    def __init__(self, read: Callable[[str, int, int], bytes], name: str, size: int) -> None:
        self.read, self.name, self.size = read, name, size
        self.offset = 0
        self.buffer = b""

    def more(self) -> bool:
        """Read the next slice onto ``buffer``; False at the section's end."""
        if self.offset >= self.size:
            return False
        n = min(SLICE_BYTES, self.size - self.offset)
        self.buffer += self.read(self.name, self.offset, n)
        self.offset += n
        return True

    def take(self, end: int) -> bytes:
        piece, self.buffer = self.buffer[:end], self.buffer[end:]
        return piece

    def last_end(self, before: int | None = None) -> int:
        """Where the last whole record in ``buffer[:before]`` ends (just after its CRLF), 0 for none."""
        data = self.buffer
        cut = data.rfind(b"\r\n", 0, len(data) if before is None else before)
        while cut >= 0 and data.count(b'"', 0, cut) % 2:  # a CRLF inside a quoted field
            cut = data.rfind(b"\r\n", 0, cut)
        return cut + 2 if cut >= 0 else 0

    def end_of(self, start: int) -> int:
        """Where the record from ``start`` ends, reading on as needed; -1 when the section ends first."""
        at = start
        while True:
            at = self.buffer.find(b"\r\n", at)
            if at >= 0 and self.buffer.count(b'"', start, at) % 2 == 0:
                return at + 2
            if at >= 0:
                at += 2
                continue
            at = max(start, len(self.buffer) - 1)
            if not self.more():
                return -1

    def find_record(self, key: bytes) -> int:
        """Where the record that starts with ``key`` starts in ``buffer``, -1 when it is not there (yet)."""
        at = self.buffer.find(key)
        while at >= 0 and not ((at == 0 or self.buffer[at - 2:at] == b"\r\n")
                               and self.buffer.count(b'"', 0, at) % 2 == 0):
            at = self.buffer.find(key, at + 1)
        return at


MEDIA_ID_LENGTH = 16  # camtrapdp.media_id: the start of an image's media row and of its observations' ids


def _aligned(media: _Records, observations: _Records) -> Iterator[tuple[bytes, bytes, bool]]:
    """A view's Camtrap DP sections in pieces that keep each image's media row with its observation rows:
    ``(media rows, observation rows, new)``, ``new`` False when the observation rows are those of the piece before
    (a run of media rows longer than a slice, of images without any: failures), to read again, not to write.

    Both sections hold the images in one order (``camtrap_lines``): an image's media row starts with its media id and
    a comma, each of its observation rows with that id and ``_``. So the observation rows read so far, up to the last
    image's last one, belong to the media rows up to that image's own."""
    while True:
        cut = observations.last_end()
        while cut == 0 and observations.more():
            cut = observations.last_end()
        if cut == 0:
            if observations.buffer:
                raise TornView("the view's observations do not end with a whole record")
            break
        start = observations.last_end(cut - 2)
        key = observations.buffer[start:start + MEDIA_ID_LENGTH]
        while True:  # the last image's further rows
            while len(observations.buffer) < cut + MEDIA_ID_LENGTH + 1 and observations.more():
                pass
            if observations.buffer[cut:cut + MEDIA_ID_LENGTH + 1] != key + b"_":
                break
            cut = observations.end_of(cut)
            if cut < 0:
                raise TornView("the view's observations end inside a record")
        rows = observations.take(cut)
        new = True
        while (at := media.find_record(key + b",")) < 0:
            if len(media.buffer) >= SLICE_BYTES and (ready := media.last_end()):
                yield media.take(ready), rows, new  # images without observations: memory stays a slice or two
                new = False
            elif not media.more():
                raise TornView("an observation's media row is not in the view")
        end = media.end_of(at)
        if end < 0:
            raise TornView("the view's media rows end inside a record")
        yield media.take(end), rows, new
    while True:  # the images after the last with observations
        ready = media.last_end()
        if ready:
            yield media.take(ready), b"", True
        elif not media.more():
            if media.buffer:
                raise TornView("the view's media rows do not end with a whole record")
            return


HEAD_BYTES = 256 * 1024  # a first read that holds a view's header line (the preview sample is most of it)
# how far a reader reads on for a header that the first read did not end (``read_view_part``): the header grows with
# the model's categories (the preview sampler keeps a sample of each) and the shard's folders (one size each), 139 KB
# measured at 10,000 images and 3 categories; a longer one is refused (``LongHeader``), so a reader's memory is bounded
MAX_HEAD_BYTES = 16 * 1024 * 1024
# what each reader reads of a view's body: its entries' bytes, its exports' lines (COCO, Camtrap DP, Zooniverse),
# Zooniverse's rows alone, or the exports' lines where they lie, read a slice at a time (``ExportSections``)
STREAMED = "streamed"
PARTS = ("merge", "exports", "zooniverse", STREAMED)


def read_view(data: bytes | None) -> ShardView | None:
    """The view in ``data`` (a whole view blob), or None when it is not one this code can use (absent, torn, another
    version)."""
    header, at = _header(data)
    if header is None or data is None:
        return None
    return _assemble(header, data, at, len(data) - at, None)


def read_view_part(head: bytes | None, fetch: Callable[[int, int], bytes], part: str,
                   max_head_bytes: int = MAX_HEAD_BYTES) -> ShardView | None:
    """One reader's part of a view (``PARTS``) from the blob's first bytes ``head`` (``HEAD_BYTES`` of them, or the
    whole blob if shorter) and ``fetch(offset, length)``, a ranged read of the rest when ``head`` does not hold it:
    the merge reads a third of a view, the exports the rest (each ~3-8 MB per 10,000 images), Zooniverse's parts
    their rows. The other parts' sections come back empty (``b""``, no folders, no COCO, Camtrap DP or Zooniverse
    lines). ``STREAMED``: the exports' sections are not read but checked, and left where they lie, for the caller to
    read a slice at a time (``ShardView.exports``). A header that does not end within ``head`` is read on
    (``_read_on``). None as for ``read_view``; ``LongHeader`` when the header passes ``max_head_bytes``."""
    head = _read_on(head, fetch, max_head_bytes)
    header, at = _header(head)
    if header is None or head is None:
        return None
    try:
        sizes = _sizes(header)
    except (KeyError, TypeError, ValueError):
        return None
    merge_length = sizes["json"] + sizes["csv"] + sizes["folders"]
    if part == STREAMED:
        return _streamed(header, sizes, head, at, fetch)
    if part == "merge":
        start, length = 0, merge_length
    elif part == "zooniverse":
        start, length = sizes["total"] - sizes["zooniverse"], sizes["zooniverse"]
    else:
        start, length = merge_length, sizes["total"] - merge_length
    if at + start + length <= len(head):
        chunk = head[at + start:at + start + length]
    else:
        chunk = fetch(at + start, length) if length else b""
    if len(chunk) != length:
        return None
    return _assemble(header, chunk, -start, sizes["total"], part)


EXPORT_SECTIONS = ("images", "annotations", "media", "observations", "rows", "lengths")  # in the body's order


def _streamed(header: Mapping[str, Any], sizes: Mapping[str, int], head: bytes, at: int,
              fetch: Callable[[int, int], bytes]) -> ShardView | None:
    """A view read ``STREAMED``: its identity and counts, and its export sections where they lie in the blob
    (``ShardView.exports``), checked as the exports' part is when it is read whole (``_assemble``): the blob holds the
    whole body, and Zooniverse's lengths add up to its rows' bytes (read a slice at a time). None as for
    ``read_view``."""
    view = _assemble(header, b"", 0, sizes["total"], STREAMED)
    if view is None:
        return None
    try:
        c, t, z = header.get("coco"), header.get("camtrap"), header.get("zooniverse")
        own = [int((c or {}).get("images_bytes", 0)), int((c or {}).get("annotations_bytes", 0)),
               int((t or {}).get("media_bytes", 0)), int((t or {}).get("observations_bytes", 0)),
               int((z or {}).get("rows_bytes", 0)), 4 * int((z or {}).get("rows", 0))]
        lengths = dict(zip(EXPORT_SECTIONS, own))
        starts, position = {}, at + sizes["json"] + sizes["csv"] + sizes["folders"]
        for name, size in lengths.items():
            starts[name] = position
            position += size

        def read(name: str, offset: int, length: int) -> bytes:
            offset += starts[name]
            if offset + length <= len(head):  # the first read holds it (a small view: no further request)
                return _exact(head[offset:offset + length], length, name)
            return _exact(fetch(offset, length) if length else b"", length, name)

        sections = ExportSections(
            read, lengths, (int(c["images"]), int(c["annotations"])) if c is not None else None,
            (int(t["media"]), int(t["observations"]), [list(fact) for fact in t["deployments"]])
            if t is not None else None, int(z["rows"]) if z is not None else None)
        if sum(n for (n,) in _le_lengths(sections.slices("lengths", 4))) != lengths["rows"]:
            return None
        if sizes["total"] and not lengths["lengths"]:  # the blob holds the body's last byte too
            _exact(read("lengths", -1, 1), 1, "body")
    except (KeyError, TypeError, ValueError):  # TornView included
        return None
    return replace(view, exports=sections)


def _le_lengths(slices: Iterable[bytes]) -> Iterator[tuple[int]]:
    """Zooniverse's row lengths (4-byte little-endian integers) one at a time, without a list of a slice's."""
    for data in slices:
        yield from struct.iter_unpack("<I", data)


class LongHeader(ValueError):
    """A view's header line did not end within ``MAX_HEAD_BYTES``: the view is not used (the shard's entries are
    read instead), and the caller says so, since its shard has lost the fast path (a larger bound would restore it)."""


def _read_on(head: bytes | None, fetch: Callable[[int, int], bytes], limit: int) -> bytes | None:
    """``head`` and, when it is a whole first read (``HEAD_BYTES``) that holds no header end, the bytes after it up
    to the header's end: each further read as long as all read so far, starting one byte back, so that no range
    starts past the blob's end (Get Blob answers that with 416; a range that passes it gives the bytes up to it).
    Views written before this was read the same: only the reader changed. ``LongHeader`` past ``limit`` bytes."""
    if not head or len(head) < HEAD_BYTES or b"\n" in head:
        return head  # the whole blob (a shorter read), or the header's end is in it
    searched = 0
    while b"\n" not in head[searched:]:
        if len(head) >= limit:
            raise LongHeader(f"a view's header line does not end within its first {limit} bytes")
        asked = min(len(head), limit - len(head))
        more = fetch(len(head) - 1, asked + 1)
        if len(more) <= 1:
            return head  # the blob ends inside its header: torn, no view
        searched = len(head)
        head += more[1:]
        if len(more) < asked + 1:
            break
    return head


def _header(data: bytes | None) -> tuple[dict[str, Any] | None, int]:
    """The header line of a view and where its body starts; (None, 0) when there is none of this version."""
    if not data:
        return None, 0
    end = data.find(b"\n")
    try:
        header = json.loads(data[:end]) if end > 0 else None
    except (ValueError, UnicodeDecodeError):
        return None, 0
    if not isinstance(header, dict) or header.get("version") != VIEW_VERSION:
        return None, 0
    return header, end + 1


def _sizes(header: Mapping[str, Any]) -> dict[str, int]:
    """The byte length of each body section the header describes, and of the whole body (``total``)."""
    coco_part, camtrap, rows = header.get("coco") or {}, header.get("camtrap") or {}, header.get("zooniverse") or {}
    sizes = {"json": int(header["json_bytes"]), "csv": int(header["csv_bytes"]),
             "folders": sum(int(length) for _, _, length in header["folders"]),
             "coco": int(coco_part.get("images_bytes", 0)) + int(coco_part.get("annotations_bytes", 0)),
             "camtrap": int(camtrap.get("media_bytes", 0)) + int(camtrap.get("observations_bytes", 0)),
             "zooniverse": int(rows.get("rows_bytes", 0)) + 4 * int(rows.get("rows", 0))}
    if min(sizes.values()) < 0:
        raise ValueError("a negative section size")
    sizes["total"] = sum(sizes.values())
    return sizes


def _assemble(header: Mapping[str, Any], body: bytes, origin: int, total: int, part: str | None) -> ShardView | None:
    """The ``ShardView`` of a header and the body bytes read: the section at body offset ``o`` is at ``body[o +
    origin]`` (``origin`` is where the body starts in a whole view, or ``-start`` for the bytes of a part from body
    offset ``start`` on). ``total``: the body's length (a whole view's must match the header's); ``part`` None: the
    whole body, else only that part's sections are filled."""
    try:
        sizes = _sizes(header)
        if sizes["total"] != total:
            return None  # torn or padded: not the bytes the header describes
        wants_merge, wants_exports = part in (None, "merge"), part in (None, "exports")
        wants_rows = part in (None, "exports", "zooniverse")

        def section(offset: int, length: int) -> bytes:
            return body[offset + origin:offset + origin + length]

        json_bytes = section(0, sizes["json"]) if wants_merge else b""
        csv_bytes = section(sizes["json"], sizes["csv"]) if wants_merge else b""
        folders: list[tuple[str, int, bytes]] = []
        position = sizes["json"] + sizes["csv"]
        for folder, count, length in header["folders"]:
            if wants_merge:
                folders.append((str(folder), int(count), section(position, int(length))))
            position += int(length)
        coco_view: tuple[bytes, bytes, int, int] | None = None
        if header.get("coco") is not None and wants_exports:
            c = header["coco"]
            images = section(position, int(c["images_bytes"]))
            annotations = section(position + int(c["images_bytes"]), int(c["annotations_bytes"]))
            coco_view = (images, annotations, int(c["images"]), int(c["annotations"]))
        position += sizes["coco"]
        camtrap_view: CamtrapLines | None = None
        if header.get("camtrap") is not None and wants_exports:
            t = header["camtrap"]
            media = section(position, int(t["media_bytes"]))
            observations = section(position + int(t["media_bytes"]), int(t["observations_bytes"]))
            camtrap_view = CamtrapLines(media, observations, int(t["media"]), int(t["observations"]),
                                        [list(fact) for fact in t["deployments"]])
        position += sizes["camtrap"]
        rows_view: ZooniverseLines | None = None
        if header.get("zooniverse") is not None and wants_rows:
            z = header["zooniverse"]
            rows_bytes, count = int(z["rows_bytes"]), int(z["rows"])
            lengths = _lengths(section(position + rows_bytes, 4 * count))
            if len(lengths) != count or sum(lengths) != rows_bytes:
                return None
            rows_view = ZooniverseLines(section(position, rows_bytes), lengths)
        counts = {key: int(header["counts"][key]) for key in COUNTS}
        reasons = {str(k): int(v) for k, v in dict(header["failure_reasons"]).items()}
        sample = header["sample"]
        if not isinstance(sample, dict):
            return None
        earlier = {str(name): str(etag) for name, etag in header.get("earlier_results") or []}
        made_with = header.get("list") or {}
        list_columns = tuple(str(c) for c in made_with.get("columns") or ())
        named = header.get("damaged")  # absent: a worker that did not name them (``ShardView.damaged``)
        damaged = tuple(str(name) for name in named) if isinstance(named, list) else None
        return ShardView(str(header["task_id"]), float(header["threshold"]), str(header["results_etag"]),
                         str(header["manifest_etag"]), counts, reasons, int(header["considered"]), sample,
                         json_bytes, csv_bytes, folders, coco_view, camtrap_view, rows_view, earlier,
                         str(made_with.get("etag") or ""), list_columns, str(made_with.get("given_etag") or ""),
                         damaged=damaged)
    except (KeyError, TypeError, ValueError):
        return None
