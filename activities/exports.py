"""Exports of a finished results file: COCO Camera Traps, a Camtrap DP package and Zooniverse subject manifests.

Why a step of its own after the merge: the merge streams the shards into the results file (MegaDetector format 1.6);
the exports are other views of that same file, for the tools ecologists hand data to, and reading the finished file
keeps the merge's single pass unchanged and lets each variant (the original, the repeats-removed one) be exported
alike. Memory stays small: the results are downloaded to a temporary file and read with ``ijson`` one entry at a
time (``core.mdformat.iter_images``), every export is written to temporary files and uploaded in blocks, and the
Zooniverse batches are written a group of files at a time. Each entry is parsed once for all three formats: its
Zooniverse row is made in the same pass and kept in a temporary file (its length and, once the eligible count that
the shuffle needs is known, its batch in memory: 16 bytes per image, ~30 MB at this activity's bound) and then
handed to its batch (``_write_zooniverse_rows``); rows are taken from the workers' merge views when every shard's
view has them. When the views hold every format's lines for every shard (``ViewLines``), the entries are not
downloaded or parsed at all: the results' head comes from a ranged read.
An explicit image list's metadata (``ListMetadata``) is read one shard's document at a time, in step with the
results, and goes into every export: COCO image fields (``gpu_batch.formats.coco.list_fields``), Camtrap DP media,
deployments and events (``gpu_batch.formats.camtrapdp``) and Zooniverse subject columns (``core.zooniverse``).

Since the one-part fan-out this single activity runs only for orchestrations recorded before it
(``orchestrations.exports``): its temporary files take ~2.7 kB an image of the Functions instance's local disk,
which a Flex Consumption instance has 0.8 GB of for all its activities (``core.scratch``); the parts
(``activities.exportparts``) stream instead, and are the same bytes.

Writes ``results/<task>/exports[/<variant>]/`` (names in ``gpu_batch.layout``): ``coco.json``
(``gpu_batch.formats.coco``), ``camtrap-dp/`` (``gpu_batch.formats.camtrapdp``), ``zooniverse/batch-NNN.csv``
(``core.zooniverse``). Idempotent: the same results give the same bytes (stable ids, a seeded shuffle), and batches an
earlier run wrote beyond this run's count are deleted.

Scale, measured: ~3,200 images/s on one shared CPU core without size reads (50,000 images in 16 s, Azurite), so
one activity exports about 1.9M images within the app's ``functionTimeout`` (10 min, host.json). COCO's pixel sizes
come from the entries themselves (the worker writes ``width``/``height``, ``gpu_batch.formats.coco.entry_size``), so
results written by today's worker need no image read; only entries without them (results written before, entries a
re-run reused from them) add one ranged header GET per image (16 at a time), the fallback. So this activity runs only
for a merge of one part, for an orchestration whose merge predates the fan-out, and as the fallback when the parts'
deployments conflict: a merge of several parts fans out (``orchestrations.exports``: ``exports_part`` per merge part in
parallel, ``exports_combine`` composing COCO and Camtrap DP, ``activities.exportparts``; the Zooniverse batches per part
and per group of batches, ``activities.zooniverseparts``). A task far above ~1.9M images that takes this activity (the
fallback) can still see its exports fail after their retries and complete with ``exports_error`` in its status
(orchestrations/task.py).

Must not: change the results, or read whole images (COCO's pixel sizes come from the entry, else from each image's
first bytes, ``adapters.image_sizes``; ``TRAPBATCH_EXPORT_IMAGE_SIZES=false`` skips even that).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tempfile
from array import array
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import azure.durable_functions as df

from activities.decided import task_settings
from activities.fanin import iter_export_views
from activities.shard_results import shards_damaged
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.blob_files import delete_under, download_to
from adapters.block_writer import BlockBlobWriter
from adapters.blobs import BlobStore
from adapters.compose import read_range
from adapters.image_sizes import (SIZE_NOT_FOUND, SIZE_NOT_READ, SIZE_UNDECODABLE, SIZE_UNREADABLE,
                                  SIZE_UNSAFE_NAME, SizeMisses, with_sizes)
from core import contracts as c
from core import camtrap_events, captures, mdformat, zooniverse
from core.exportparts import combine_deployments, follows_first
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import camtrapdp, coco, csvline, jsonio
from gpu_batch.formats.entries import mark_cut_short
from gpu_batch.formats.zooniverse_rows import left_out_cut_short
from gpu_batch.formats.mergeview import STREAMED, ShardView, TornView

logger = logging.getLogger(__name__)
bp = df.Blueprint()

OPEN_BATCH_FILES = 128  # Zooniverse batches written per pass over the results (open file handles stay bounded)
HEAD_READ = 64 * 1024
IMAGES_KEY = b'\n "images": ['  # the results' top-level key, on a line of its own (core.fanin.results_head)


def read_results_head(store: BlobStore, container: str, name: str) -> tuple[dict[str, Any], int]:
    """The head of a results file trapbatch's merge wrote (``mdformat.results_head``: every field but ``images``)
    and the offset just after the images array's ``[``, from ranged reads of its first bytes (64 KiB, more only
    for a longer head); ValueError for a file without that layout."""
    size = HEAD_READ
    while True:
        data = read_range(store, container, name, 0, size)
        at = data.find(IMAGES_KEY)
        if at >= 0:
            start = at + len(IMAGES_KEY)
            return mdformat.results_head(io.BytesIO(data[:start] + b"]}")), start
        if len(data) < size:
            raise ValueError(f"{name}: no images array")
        size *= 4


def sized(settings: Settings, store: BlobStore, container: str, entries: Iterator[dict[str, Any]],
          needs_size: Callable[[dict[str, Any]], str | None],
          misses: SizeMisses | None = None) -> Iterator[tuple[dict[str, Any], tuple[int, int] | None]]:
    """``adapters.image_sizes.with_sizes`` of the entries (each failed read recorded in ``misses``); with
    ``export_image_sizes`` off (``needs_size`` then names no image), each entry with None directly, without its
    thread pool and chunks."""
    if not settings.export_image_sizes:
        return ((entry, None) for entry in entries)
    return with_sizes(store, container, entries, needs_size, misses=misses)


def count_size_unknown(entry: dict[str, Any], size: tuple[int, int] | None,
                       needs_size: Callable[[dict[str, Any]], str | None], misses: SizeMisses) -> bool:
    """Whether ``entry`` is a success whose COCO boxes stay relative (no size in it, none read); one that no read
    was asked for is recorded in ``misses`` here (``SIZE_NOT_READ``), a read that failed was by ``with_sizes``."""
    if entry.get("failure") is not None or size is not None or coco.entry_size(entry) is not None:
        return False
    if needs_size(entry) is None:
        misses.add(str(entry.get("file")), SIZE_NOT_READ)
    return True


# What to do about each reason an image's size is unknown (``sizes_unknown_why``), in this order
_RERUN = "then post the same request with \"only_new\": true to write the exports again (it reuses every result)"
_SIZE_HINTS = (
    (SIZE_UNREADABLE, "the app could not read these images from their container (the GPU nodes read them for "
                      "detection): give the app's identity (id-api-*) Storage Blob Data Reader on the images' "
                      f"account, or renew the secret the request's credential_secret names, {_RERUN}"),
    (SIZE_NOT_READ, "TRAPBATCH_EXPORT_IMAGE_SIZES was off when the run started, so no image's size was read: set it "
                    f"to true, {_RERUN}"),
    (SIZE_NOT_FOUND, "deleted or renamed since detection: nothing can read their size now"),
    (SIZE_UNDECODABLE, "their bytes do not give an image's size here"),
    (SIZE_UNSAFE_NAME, "names with '.' or '..' folders are never read (storage would read another blob)"),
)


def sizes_unknown_why(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The exports' ``sizes_unknown_why`` (None: every size known): ``SizeMisses``'s reasons, first names and first
    error, and what to do. Why: ``sizes_unknown`` alone, a bare count, said neither why these images' COCO boxes
    stayed relative nor whether anything could be done (the reasons were only in the log)."""
    if not record:
        return None
    reasons = record.get("reasons") or {}
    said = [text for why, text in _SIZE_HINTS if reasons.get(why)]
    hint = ("their COCO boxes stay relative (bbox_relative: x, y, width, height as fractions of the image, as COCO "
            "Camera Traps allows; a tool that wants pixels multiplies by the image's size); " + "; ".join(said))
    return {**record, "hint": hint}


class LineBuffer:
    """Text for a stream, handed on in chunks of about ``chunk`` writes: a ``TextIOWrapper`` over a file opened
    for reading too resets its decoder on every ``write`` (CPython's ``textiowrapper_write``), a Python call per
    row that cost more than building the row. ``flush`` hands on the rest; the stream then has every byte."""

    def __init__(self, out: IO[str], chunk: int = 512) -> None:
        self.out, self.chunk = out, chunk
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)
        if len(self.parts) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.out.write("".join(self.parts))
            self.parts.clear()


def _text(fp: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(fp, encoding="utf-8", newline="", write_through=True)


def _upload_text(store: BlobStore, container: str, name: str, wrapper: io.TextIOWrapper, content_type: str) -> None:
    wrapper.flush()
    raw: Any = wrapper.buffer  # the temporary file under the wrapper
    raw.seek(0)
    store.upload_file(container, name, raw, content_type)


def _entries(fp: IO[bytes]) -> Iterator[dict[str, Any]]:
    fp.seek(0)
    return mdformat.iter_images(fp)


class ListMetadata:
    """The image list's metadata of each results entry, read shard by shard (``layout.shard_list_blob``) in step
    with the results, which hold the shards' entries in shard order: memory is one shard's rows, not the list's.

    ``get(file)`` looks in the current shard, then moves on when the next shard holds the file (an entry of a later
    shard means the earlier ones are done). It must see every entry, in order, and each shard's document names
    every image it reports (``activities.image_list.write_list_shards``). ``shards`` 0 (no metadata columns) reads
    nothing."""

    def __init__(self, store: BlobStore, container: str, task_id: str, shards: int, first: int = 0) -> None:
        """``first``: the shard the walk starts at (an exports part's first shard)."""
        self.store, self.container, self.task_id, self.shards = store, container, task_id, shards
        self.first = first
        self.index = -1
        self.current: dict[str, dict[str, str]] = {}
        self.upcoming: dict[str, dict[str, str]] | None = None

    def _load(self, index: int) -> dict[str, dict[str, str]]:
        data = self.store.read_bytes_or_none(self.container, layout.shard_list_blob(self.task_id,
                                                                                   layout.shard_id(index)))
        doc = jsonio.loads(data) if data is not None else None
        return dict((doc or {}).get("metadata") or {})

    def get(self, file: str) -> dict[str, str] | None:
        if self.shards == 0:
            return None
        if self.index < 0:
            self.index, self.current = self.first, self._load(self.first)
        while file not in self.current and self.index + 1 < self.shards:
            if self.upcoming is None:
                self.upcoming = self._load(self.index + 1)
            if file not in self.upcoming:
                return None
            self.index, self.current, self.upcoming = self.index + 1, self.upcoming, None
        return self.current.get(file)


def write_view_rows(views: list[ShardView], rows: IO[bytes], lengths: "array[int]",
                    options: zooniverse.ManifestOptions) -> int:
    """The views' Zooniverse rows with the task's attribution and license (``options``) into ``rows``, each row's
    length onto ``lengths``: what ``zooniverse.row_line`` of every eligible entry would have made (the views'
    threshold is the exports' and their categories MegaDetector's: ``activities.fanin.export_views``). Every view must
    have rows. Returns how many."""
    middle = zooniverse.quoted_options(options)[0]
    count = 0
    for view in views:
        assert view.zooniverse is not None
        data, sizes = view.zooniverse.filled(middle)
        rows.write(data)
        lengths.extend(sizes)
        count += len(sizes)
    return count


def needs_no_size(entry: dict[str, Any]) -> str | None:
    """No image's header is read: COCO's lines come from the merge views, whose entries all have sizes."""
    return None


class RestartableStream(Protocol):
    """A fragment's byte stream that can drop what it got so far (``activities.exportparts``: a blob written in
    blocks, whose staged blocks are then written over)."""

    def write(self, data: bytes) -> int: ...

    def restart(self) -> None: ...


class ViewLines:
    """What the workers' merge views give an exports activity (``activities.fanin.iter_export_views``): COCO's lines
    when every view has them, Camtrap DP's when every view has them and the task's values fit in them, Zooniverse's
    rows when every view has them; each format alone (``coco`` / ``camtrap`` / ``zooniverse`` False: the entries are
    formatted for it, as before). ``complete``: all three, so the entries need not be read at all.

    Why spooled: a format's lines are usable only if every shard's view has them, which is known after the last view,
    and a part's views held in memory take ~2.6 kB an image (500 MB for 200,000 images, one activity of eight on an
    instance). Each view's lines go to a temporary file per format as the view is read, a slice at a time (a view
    read ``mergeview.STREAMED``: one view's sections held took ~2.3 kB an image, 226 MB for a shard of 100,000,
    ``bench/exports_memory.py``), and the view is dropped; ``write`` copies the usable formats' files into the
    exports' streams. ``rows``: the manifest options with which Zooniverse's rows are spooled too
    (``write_zooniverse``); without it only their count is kept. ``direct`` (an exports part, whose fragments stream
    to blobs): COCO's and Camtrap DP's lines go straight into the fragments, in the order ``write`` would copy them,
    and a format found unusable at a later view is restarted (``RestartableStream.restart``: what it got is
    discarded) for the entries to write whole, so nothing is spooled on the local disk (``core.scratch``; ~1.3 kB an
    image). A context manager: leaving it closes the files."""

    def __init__(self, views: Iterable[ShardView | None] | None, camtrap: camtrapdp.CamtrapBuilder,
                 rows: zooniverse.ManifestOptions | None = None,
                 direct: Mapping[str, "RestartableStream"] | None = None,
                 events: camtrap_events.EventTap | None = None) -> None:
        self._files = ExitStack()
        self._direct = direct
        self._events = events  # fed every Camtrap DP line written, for the event rows (core.camtrap_events)
        self._spool: dict[str, Any] = {k: self._files.enter_context(tempfile.TemporaryFile("w+b"))
                                       for k in (("rows",) if direct else
                                                 ("images", "annotations", "media", "observations", "rows"))}
        if direct:
            self._spool.update({k: direct[k] for k in ("images", "annotations", "media", "observations")})
        self._lengths = array("q")
        self._counts = {"images": 0, "annotations": 0, "media": 0, "observations": 0, "rows": 0}
        self._deployments: list[list[list[Any]]] = []
        # each deployment's first coordinates and camera so far, from the task's given ones (an exports part run
        # again) and the views before: a view whose own first ones differ has other media comments (``_agrees``)
        self._first: dict[str, list[Any]] = {dep: [lat, lon, str(camera or "")] if lat is not None and lon is not None
                                              else [None, None, str(camera or "")]
                                              for dep, (lat, lon, camera) in camtrap.given.items()}
        middle = zooniverse.quoted_options(rows)[0] if rows is not None else None
        self.coco = self.camtrap = self.zooniverse = False
        seen = False
        try:
            for view in views or ():
                if view is None:  # a shard without a usable view: every format from the entries
                    seen = False
                    break
                if not seen:
                    seen = self.coco = self.camtrap = self.zooniverse = True
                try:
                    self._add(view, camtrap, middle)
                except TornView:  # as a view that does not parse: what it wrote is dropped below
                    seen = False
                    break
                if not (self.coco or self.camtrap or self.zooniverse):
                    break  # every format from the entries: no further view is read
        except BaseException:
            self.close()
            raise
        if not seen:
            self.coco = self.camtrap = self.zooniverse = False
        self.complete = self.coco and self.camtrap and self.zooniverse
        if not self.camtrap and events is not None:  # the entries write Camtrap DP: what the views fed is dropped
            events.reset()
        if direct:  # a format the views turned out not to hold: its lines so far are discarded, the entries write it
            for usable, names in ((self.coco, ("images", "annotations")), (self.camtrap, ("media", "observations"))):
                if not usable:
                    for name in names:
                        direct[name].restart()

    def _add(self, view: ShardView, camtrap: camtrapdp.CamtrapBuilder, middle: str | None) -> None:
        """One view's lines of each format still usable, a slice at a time (``mergeview.ExportSections``: a view
        read whole and held took ~2.3 kB an image, 226 MB for a shard of 100,000). ``TornView`` when a section reads
        back short: the caller then takes the view as unusable, whatever it wrote of it."""
        spool, counts = self._spool, self._counts
        lines = view.export_sections()
        if self.coco:
            if lines.coco is None:
                self.coco = False
            else:
                for name in ("images", "annotations"):
                    for data in lines.slices(name):
                        spool[name].write(data)
                counts["images"] += lines.coco[0]
                counts["annotations"] += lines.coco[1]
        if self.camtrap:
            facts = lines.camtrap_facts(camtrap.completed_at, camtrap.classified_by, camtrap.media_base)
            if facts is None or lines.camtrap is None or not self._agrees(facts):
                self.camtrap = False
                self._deployments.clear()
            else:
                for media, observations, held in lines.camtrap_lines(camtrap.completed_at, camtrap.classified_by,
                                                                     camtrap.media_base):
                    spool["media"].write(media)
                    spool["observations"].write(observations)
                    if self._events is not None:  # each image's media row with all its observation rows
                        self._events.feed(media.decode("utf-8"), held.decode("utf-8"))
                counts["media"] += lines.camtrap[0]
                counts["observations"] += lines.camtrap[1]
                self._deployments.append(facts)
        if self.zooniverse:
            if lines.zooniverse is None:
                self.zooniverse = False
            elif middle is None:
                counts["rows"] += lines.zooniverse
            else:
                for data, sizes in lines.zooniverse_rows(middle):
                    spool["rows"].write(data)
                    self._lengths.extend(sizes)
                    counts["rows"] += len(sizes)

    def _agrees(self, facts: list[list[Any]]) -> bool:
        """Whether a view's deployment facts start from the first coordinates and camera the views before it (and
        the given ones) ended with, so its media comments are the single pass's (``CamtrapBuilder._deployment_fields``
        puts an image's values that differ from its deployment's into its comments; a view knows its own shard's
        first values only): ``core.exportparts.follows_first``, between views as between parts."""
        return follows_first(self._first, facts)

    def close(self) -> None:
        self._files.close()

    def __enter__(self) -> "ViewLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def eligible(self) -> int:
        """The Zooniverse subjects of the views' shards (``zooniverse`` must be True)."""
        return self._counts["rows"]

    def write_zooniverse(self, rows: IO[bytes], lengths: "array[int]") -> int:
        """The views' Zooniverse rows (spooled with the ``rows`` options) into ``rows``, their lengths onto
        ``lengths``: what ``write_view_rows`` of every view would have written. Returns how many."""
        assert self.zooniverse and len(self._lengths) == self._counts["rows"]
        _copy(self._spool["rows"], rows)
        lengths.extend(self._lengths)
        return self._counts["rows"]

    def write(self, writer: coco.CocoWriter, images: IO[str], annotations: IO[str], builder: camtrapdp.CamtrapBuilder,
              media: "LineBuffer", observations: "LineBuffer", continued: bool) -> None:
        """Each usable format's lines from the views, before the entries' own: COCO's into the writer's streams and
        their counts into its counts (what ``writer.add`` of every entry would have written; each line carries its
        leading comma, and ``continued`` False, the whole document, drops the very first one of each stream, as
        ``CocoWriter`` writes no comma before its first line); Camtrap DP's, with the task's values, into the tables,
        and their counts and deployments into ``builder`` (what ``builder.add_lines`` of every entry would have
        made)."""
        if self.coco and not self._direct:  # the workers made COCO's lines (issue 11): the entries go to the others
            for stream, name in ((images, "images"), (annotations, "annotations")):
                stream.flush()
                _copy(self._spool[name], stream.buffer, 0 if continued else 1)  # type: ignore[attr-defined]
        if self.coco:
            writer.counts["images"] += self._counts["images"]
            writer.counts["annotations"] += self._counts["annotations"]
        if self.camtrap and not self._direct:  # and Camtrap DP's
            for buffer, name in ((media, "media"), (observations, "observations")):
                buffer.flush()
                buffer.out.flush()
                _copy(self._spool[name], buffer.out.buffer)  # type: ignore[attr-defined]
        if self.camtrap:
            builder.counts["media"] += self._counts["media"]
            builder.counts["observations"] += self._counts["observations"]
            combine_deployments(builder, self._deployments)

    def add(self, entry: dict[str, Any], size: tuple[int, int] | None, metadata: dict[str, str] | None,
            writer: coco.CocoWriter, builder: camtrapdp.CamtrapBuilder, media: "LineBuffer",
            observations: "LineBuffer") -> None:
        """One entry's COCO and Camtrap DP lines, for the formats the views do not hold."""
        if not self.coco:
            writer.add(entry, size, metadata)
        if not self.camtrap:
            row, rows = builder.add_lines(entry, metadata)
            media.write(row)
            observations.write(rows)
            if self._events is not None:
                self._events.feed(row, rows)


def _copy(source: IO[bytes], target: IO[bytes], skip: int = 0) -> None:
    """``source`` from its byte ``skip`` to its end appended to ``target``, a megabyte at a time."""
    end = source.seek(0, io.SEEK_END)
    source.seek(min(skip, end))
    while chunk := source.read(1 << 20):
        target.write(chunk)


def _write_zooniverse(store: BlobStore, container: str, task_id: str, variant: str, results: IO[bytes],
                      options: zooniverse.ManifestOptions, categories: dict[str, str], eligible: int,
                      open_files: int, shards: int = 0,
                      cut_short: frozenset[str] = frozenset()) -> c.ExportsZooniverseOutput:
    """Write the manifest batches; returns how many, with the rows written (``subjects``) and the photos cut short
    left out. Each pass over the results writes up to ``open_files``. ``cut_short``: the photos cut short
    (``activities.shard_results.shards_damaged``), left out as every other export leaves them out
    (``zooniverse.excluded``). Why ``eligible`` may exceed the rows: it comes from exports parts recorded before
    photos cut short were left out, which counted them; the rows they would have taken stay empty, each other row in
    the batch its place was assigned, and the rows written are counted for the summary instead."""
    batches = zooniverse.batch_count(eligible, options)
    targets = zooniverse.BatchAssigner(eligible, batches, options.shuffle, options.seed).batch_range(0, eligible)
    index = left_out = 0  # rows written and photos cut short left out, counted again by each pass
    for first in range(0, batches, open_files):
        group = range(first, min(first + open_files, batches))
        with ExitStack() as files:
            outs = {b: _text(files.enter_context(tempfile.TemporaryFile("w+b"))) for b in group}
            writers = {b: csv.writer(out) for b, out in outs.items()}
            for w in writers.values():
                w.writerow(zooniverse.columns(options))
            listed = ListMetadata(store, container, task_id, shards if options.metadata_columns else 0)
            index = left_out = 0
            for entry in mark_cut_short(_entries(results), cut_short):
                metadata = listed.get(str(entry["file"]))  # every entry, so the walk keeps step with the shards
                if zooniverse.excluded(entry):
                    left_out += left_out_cut_short(entry)
                    continue
                if index >= eligible:
                    raise ValueError(f"task {task_id}: more eligible images than the {eligible} counted (the results "
                                     "changed under the step)")
                b = targets[index]
                index += 1
                if b in writers:
                    writers[b].writerow(zooniverse.row(entry, options, categories, metadata))
            for b, out in outs.items():
                _upload_text(store, container, layout.zooniverse_batch_blob(task_id, b + 1, variant), out,
                             "text/csv; charset=utf-8")
                out.detach()
    prefix = layout.exports_prefix(task_id, variant) + "zooniverse/"
    delete_under(store, container, prefix, {layout.zooniverse_batch_blob(task_id, b + 1, variant)
                                            for b in range(batches)})
    made = c.ExportsZooniverseOutput(batches=batches, subjects=index)
    if left_out:
        made["cut_short"] = left_out
    return made


def _write_zooniverse_rows(store: BlobStore, container: str, task_id: str, variant: str, rows: IO[bytes],
                           lengths: "array[int]", options: zooniverse.ManifestOptions, open_files: int) -> int:
    """``_write_zooniverse`` from the rows the exports' pass already made (``rows``: each eligible image's
    ``zooniverse.row_line`` in UTF-8, in results order, back to back; ``lengths``: each one's length), so the results
    are parsed once for every format (or not at all: ``ViewLines.write_zooniverse``); the same batches, byte for
    byte. Returns how many."""
    eligible = len(lengths)
    batches = zooniverse.batch_count(eligible, options)
    assigner = zooniverse.BatchAssigner(eligible, batches, options.shuffle, options.seed)
    header = csvline.manifest_line(zooniverse.columns(options)).encode("utf-8")
    targets = assigner.batch_range(0, eligible)  # 8 bytes per image, the assignment made once for every pass
    for first in range(0, batches, open_files):
        group = range(first, min(first + open_files, batches))
        with ExitStack() as files:
            outs = {b: files.enter_context(tempfile.TemporaryFile("w+b")) for b in group}
            for out in outs.values():
                out.write(header)
            rows.seek(0)
            read = rows.read
            for length, b in zip(lengths, targets):
                data = read(length)
                target = outs.get(b)
                if target is not None:
                    target.write(data)
            for b, out in outs.items():
                out.seek(0)
                store.upload_file(container, layout.zooniverse_batch_blob(task_id, b + 1, variant), out,
                                  "text/csv; charset=utf-8")
    prefix = layout.exports_prefix(task_id, variant) + "zooniverse/"
    delete_under(store, container, prefix, {layout.zooniverse_batch_blob(task_id, b + 1, variant)
                                            for b in range(batches)})
    return batches


@dataclass(frozen=True)
class ExportContext:
    """What every exports step derives from the task's request, enumeration and results head."""

    task_id: str
    variant: str
    container: str
    request: dict[str, Any]
    enumeration: dict[str, Any]
    info: dict[str, Any]
    categories: dict[str, str]
    model: str
    cut: float
    completed_at: str
    title: str
    manifest: zooniverse.ManifestOptions
    list_shards: int
    license: str
    # the ETag of the deployments' first facts the enumeration wrote for the workers' views (``layout.
    # list_facts_blob``), "" where it wrote none: a view's Camtrap DP lines must have started from exactly those
    given_etag: str = ""
    data_license: str = ""  # the Camtrap DP package's data licence, "" for the images' (``license``)
    # the images' URL prefix, ``<account blob endpoint>/<container>/`` (``media_base``): Camtrap DP media filePath
    media_base: str = ""

    def camtrap(self, given: Mapping[str, Sequence[Any]] | None = None) -> camtrapdp.CamtrapBuilder:
        return camtrapdp.CamtrapBuilder(threshold=self.cut, detection_categories=self.categories,
                                        completed_at=self.completed_at,
                                        classified_by=mdformat.classified_by(self.model,
                                                                             str(self.info.get("detector") or "")),
                                        given=given or {}, utc_offset=self.utc_offset(),
                                        clock_shifts=self.clock_shifts(), cameras=self.cameras(),
                                        media_base=self.media_base)

    def cameras(self) -> camtrapdp.CameraRule:
        """The request's camera rule: its ``camera_depth`` folders below its ``prefix`` are an image's camera (its
        deployment, COCO location, visits and days), MegaDetector's camera folder without one."""
        depth = self.request.get("camera_depth")
        if not isinstance(depth, int) or isinstance(depth, bool):
            return camtrapdp.MEGADETECTOR_CAMERAS
        return camtrapdp.CameraRule(str(self.request.get("prefix") or ""), depth)

    def clock_shifts(self) -> dict[str, int]:
        """The request's ``clock_corrections`` (camera folder -> seconds to add), {} for none."""
        value = self.request.get("clock_corrections")
        return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}

    def event_interval_s(self, settings: Settings) -> float:
        """The request's ``event_interval_s``, else the app's ``TRAPBATCH_EVENT_INTERVAL_S`` (core.camtrap_events)."""
        value = self.request.get("event_interval_s")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else settings.event_interval_s

    def utc_offset(self) -> str:
        """The request's ``utc_offset`` (the cameras' zone, for Camtrap DP's capture times), "" for none."""
        return str(self.request.get("utc_offset") or "")

    def plain(self) -> bool:
        """Whether these exports are what a worker's merge view assumes for its lines: the original variant and
        MegaDetector's categories (``activities.fanin.export_views``; the image list's rows: ``view_columns``)."""
        return not self.variant and self.categories == mdformat.DETECTION_CATEGORIES

    def plain_camtrap(self) -> bool:
        """``plain``, and the view's Camtrap DP lines hold this task's capture times: a view writes times without a
        zone as UTC and each camera's clock as read, so a task with a ``utc_offset`` or ``clock_corrections`` formats
        its entries instead (its Zooniverse rows, which hold no time, still come from the views). So with a
        ``camera_depth``: a view's COCO locations, media and observation deployments and deployment facts are by
        MegaDetector's camera folders, the workers' rule (``gpu_batch.formats.mergeview``)."""
        return (self.plain() and not self.utc_offset() and not self.clock_shifts()
                and self.cameras() == camtrapdp.MEGADETECTOR_CAMERAS)

    def view_list(self) -> tuple[tuple[str, ...], str]:
        """(``view_columns``, ``given_etag``): the image-list rows and first facts a view's export lines must have
        been made with (``activities.fanin.clean_view``)."""
        return self.view_columns(), self.given_etag

    def view_columns(self) -> tuple[str, ...]:
        """The image list's metadata columns a view's export lines must have been made with: () for a task without
        them, whose views' lines must have no list rows (``activities.fanin.clean_view``)."""
        return self.manifest.metadata_columns if self.list_shards else ()

    def captures(self) -> captures.CaptureColumns | None:
        """How the task's image list defines captures, else whether the request asks for captures made of visits
        (``zooniverse_visit_frames``): its Zooniverse subjects are then captures (``activities.zooniverse_captures``);
        None: one subject per image."""
        listed = captures.capture_columns(self.manifest.metadata_columns) if self.list_shards else None
        frames = self.request.get("zooniverse_visit_frames")
        if listed is None and isinstance(frames, int) and not isinstance(frames, bool) and frames > 0:
            return captures.visit_captures(min(frames, self.manifest.max_frames))  # no subject above the app's cap
        return listed

    def coco_info(self) -> dict[str, Any]:
        """COCO's ``info``: the ``version`` and ``description`` COCO Camera Traps requires (``coco.INFO_VERSION``, the
        document's form), then the detector and when it ran, as MegaDetector's results say them."""
        return {"version": coco.INFO_VERSION, "description": f"trapbatch {self.task_id}: {self.title}",
                "detector": self.info.get("detector"), "detection_completion_time": self.completed_at,
                "detector_metadata": mdformat.detector_metadata(self.model)}


def prepare(task_id: str, settings: Settings, store: BlobStore, variant: str, threshold: float | None,
            head: dict[str, Any]) -> ExportContext:
    """The shared context of one variant's exports (``head``: ``mdformat.results_head`` of its results)."""
    container = settings.container
    request = store.read_json_or_none(container, layout.request_blob(task_id)) or {}
    enumeration = store.read_json(container, layout.enumeration_blob(task_id))
    info: dict[str, Any] = head.get("info") or {}
    categories: dict[str, str] = head.get("detection_categories") or dict(mdformat.DETECTION_CATEGORIES)
    model = str(request.get("model") or info.get("detector") or "")
    cut = settings.threshold_for(model, threshold if threshold is not None else request.get("preview_threshold"))
    manifest = zooniverse.ManifestOptions(
        threshold=cut, attribution=settings.export_attribution, license=settings.export_license,
        max_batch_size=settings.zooniverse_batch_size, max_frames=settings.zooniverse_max_frames,
        seed=int(hashlib.sha256(f"{task_id}/{variant}".encode()).hexdigest()[:8], 16),
        metadata_columns=tuple((enumeration.get("image_list") or {}).get("metadata_columns") or ()))
    shards = int(enumeration.get("shards") or 0)
    given = (store.list_etags(container, layout.list_facts_blob(task_id)).get(layout.list_facts_blob(task_id), "")
             if manifest.metadata_columns and camtrapdp.wants_first_facts(manifest.metadata_columns) else "")
    return ExportContext(task_id, variant, container, request, enumeration, info, categories, model, cut,
                         str(info.get("detection_completion_time") or ""), str(request.get("request_name") or task_id),
                         manifest, shards if manifest.metadata_columns else 0, settings.export_license, given,
                         settings.export_data_license, media_base(store, request, enumeration))


def images_where(request: Mapping[str, Any], enumeration: Mapping[str, Any]) -> tuple[str, str]:
    """The images' ``(container, account URL)``, the account "" for trapbatch's own: the request's
    ``source_account_url``, which ``core.requests`` refuses with a SAS or any other credential."""
    return (str(enumeration.get("container") or request.get("container") or ""),
            str(enumeration.get("source_account_url") or request.get("source_account_url") or "").rstrip("/"))


def media_base(store: BlobStore, request: Mapping[str, Any], enumeration: Mapping[str, Any]) -> str:
    """The images' URL prefix, ``<account blob endpoint>/<container>/``: Camtrap DP 1.0.2 media ``filePath`` is a
    "URL or relative path to the media file, respectively for externally hosted files or files that are part of the
    package" (media-table-schema.json), and the images are not in the package (``camtrapdp.media_url``). The account
    is the request's ``source_account_url``, else trapbatch's own (``store``, the app's: ``BlobStore.endpoint``,
    which never holds a connection string's SAS or key)."""
    container, account = images_where(request, enumeration)
    return f"{account or store.endpoint}/{container}/"


def contributors(ctx: ExportContext) -> list[dict[str, str]]:
    """The package's contributors: the request's ``caller`` (contact) and the operator's attribution (rights
    holder). The Data Package schema Camtrap DP builds on wants at least one, each with a title: without either, a
    rights holder that says it was not named, rather than an empty list a validator refuses."""
    people = []
    caller = str(ctx.request.get("caller") or "")
    if caller:
        people.append({"title": caller, "role": "contact"})
    if ctx.manifest.attribution:
        people.append({"title": ctx.manifest.attribution, "role": "rightsHolder"})
    return people or [{"title": f"not named: the owner of the images in container {ctx.request.get('container', '')} "
                                "(the operator names it with TRAPBATCH_EXPORT_ATTRIBUTION)", "role": "rightsHolder"}]


def package_licenses(ctx: ExportContext) -> list[dict[str, str]] | None:
    """The Camtrap DP package's ``licenses``: the profile wants, once any is given, one for the data ("the content
    of the package") and one for the media; the images' licence (TRAPBATCH_EXPORT_LICENSE, the Zooniverse
    manifests' too) is the media's, and the data's unless TRAPBATCH_EXPORT_DATA_LICENSE names another (Camtrap DP's
    example: CC0-1.0 data, CC BY media). Each an identifier as ``name`` or a URL as ``path``
    (``camtrapdp.license_entry``). None without a media licence, or when a value is one the Data Package schema
    refuses (the settings take any value, ``core.settings._license`` says why): no licence is claimed, and the log
    says so, rather than an invalid package written."""
    if not ctx.license:
        if ctx.data_license:
            logger.warning("task %s: TRAPBATCH_EXPORT_DATA_LICENSE is set without TRAPBATCH_EXPORT_LICENSE: the "
                           "Camtrap DP package names no licence (it wants one for the media too)", ctx.task_id)
        return None
    data = camtrapdp.license_entry(ctx.data_license or ctx.license, "data")
    media = camtrapdp.license_entry(ctx.license, "media")
    if data is None or media is None:
        logger.warning("task %s: the licence settings %r / %r are no Data Package licence (an identifier such as "
                       "CC-BY-4.0, or a URL): the Camtrap DP package names none", ctx.task_id, ctx.license,
                       ctx.data_license)
        return None
    return [data, media]


def write_descriptor(store: BlobStore, ctx: ExportContext, camtrap: camtrapdp.CamtrapBuilder,
                     events: int = 0, interval_s: float = camtrap_events.DEFAULT_INTERVAL_S) -> None:
    """``datapackage.json`` of the variant's Camtrap DP package (``events``: how many events ``write_events`` wrote,
    grouped at ``interval_s``). Its description names the images' container and account (``camtrapdp.
    media_location``): media ``filePath`` is the image's URL there (``media_base``), not a file of the package."""
    licenses = package_licenses(ctx)
    where = camtrapdp.media_location(*images_where(ctx.request, ctx.enumeration))
    descriptor = camtrap.descriptor(
        f"trapbatch-{ctx.task_id}" + (f"-{ctx.variant}" if ctx.variant else ""), ctx.title, ctx.completed_at,
        contributors(ctx), licenses, event_interval_s=interval_s if events else None, media_where=where)
    store.write_json(ctx.container, layout.camtrap_dp_blob(ctx.task_id, "datapackage.json", ctx.variant), descriptor)


def write_events(out: "LineBuffer | IO[str]", camtrap: camtrapdp.CamtrapBuilder,
                 parts: Sequence[camtrap_events.EventRecords], interval_s: float,
                 cameras: camtrap_events.VisitsSink | None = None,
                 index: camtrap_events.EventIndex | None = None,
                 frames: camtrap_events.EventFrames | None = None,
                 days: "CameraDaysWriter | None" = None) -> tuple[int, int]:
    """The event-level observations of the parts' records (``core.camtrap_events``) appended to ``out``, with the
    media observations' classifier and time; returns how many events and how many rows. ``cameras`` gets each
    camera's visits (``write_camera_visits``), ``index`` the time-grouped events (``link_event_ids``), ``frames``
    their photos' places in them (``link_coco_images``), ``days`` each camera's days (``write_camera_visits``)."""
    events = rows = 0
    for text, n, found in camtrap_events.event_lines(parts, camtrap.classified_by, camtrap.completed_at, interval_s,
                                                     cameras, index, frames, days):
        out.write(text)
        rows += n
        events += found
    return events, rows


def link_event_ids(observations: IO[str], media: Callable[[], Iterable[str]], index: camtrap_events.EventIndex,
                   completed_at: str, out: IO[str], moved: Mapping[str, str] | None = None) -> None:
    """``observations`` (the Camtrap DP rows as written, from the start) to ``out`` with each time-grouped photo's
    media-level rows naming its event (``core.camtrap_events.link_observations``), and the photos in ``moved``
    (``write_stand_ins``) their media rows' stand-in times. ``media`` (the media rows) is read for the other photos
    without a capture time only when the detection time falls in some event (``completed_at``: the time their rows
    carry), which it practically never does."""
    untimed = camtrap_events.untimed_media(media()) if index.holds(completed_at) else set()
    buffer = LineBuffer(out)
    for line in camtrap_events.link_observations(iter(observations), index, untimed, moved):
        buffer.write(line)
    buffer.flush()


def write_stand_ins(media: Iterable[str], stand_ins: Mapping[str, str], out: IO[str]) -> dict[str, str]:
    """The media rows (as written, from the start) to ``out`` with each photo without a capture time of a deployment
    in ``stand_ins`` (``CamtrapBuilder.stand_ins``) given that deployment's start, a second before its first capture
    time (``camtrapdp.stand_in_media``: not the detection time, which lies outside the deployment, nor the first
    capture time, which is in its first event); returns those photos'
    mediaIDs and times, for their observations (``link_event_ids``)."""
    moved: dict[str, str] = {}
    buffer = LineBuffer(out)
    for line in camtrapdp.stand_in_media(media, stand_ins, moved):
        buffer.write(line)
    buffer.flush()
    return moved


def link_coco_images(images: Iterable[str], frames: camtrap_events.EventFrames, out: IO[str],
                     index: camtrap_events.EventIndex | None = None) -> None:
    """COCO's image lines (as written, from the start) to ``out`` with each time-grouped photo's ``seq_id``,
    ``seq_num_frames`` and ``frame_num`` (``core.camtrap_events.link_coco_images``; ``index``, read back: the list
    sequences' ids, for the photos that joined one)."""
    buffer = LineBuffer(out)
    for line in camtrap_events.link_coco_images(images, frames, index.sequence_names() if index else None):
        buffer.write(line)
    buffer.flush()


def write_camera_visits(store: BlobStore, ctx: "ExportContext", cameras: Sequence[camtrap_events.CameraVisits],
                        interval_s: float) -> str:
    """``camera-visits.csv`` beside the variant's other exports (a header alone when no photo has a capture time);
    returns its name. A row per camera is small (thousands of cameras: a few hundred kB), so it is one write."""
    name = layout.camera_visits_blob(ctx.task_id, ctx.variant)
    store.write_bytes(ctx.container, name, camtrap_events.camera_visits_csv(cameras, interval_s, ctx.cut),
                      "text/csv; charset=utf-8")
    return name


DAYS_BLOCK_BYTES = 4 * 1024 * 1024  # camera-days.csv's block in memory while it is written
VISITS_BLOCK_BYTES = 4 * 1024 * 1024  # camera-visits.csv's, the same


class CameraVisitsWriter:
    """``camera-visits.csv`` (``layout.camera_visits_blob``) streamed a row at a time as the grouping finishes each
    camera (``event_lines``' ``cameras``): the same bytes as ``write_camera_visits``, with no camera held. Why: the
    camera is MegaDetector's camera folder, so camera-day folders make a camera a folder (a million at ten million
    images in folders of ten), and the events step held each camera's visits (~390 bytes) and then the table whole
    (~200 more). ``cameras``: how many rows. Committed as the ``with`` block ends (nothing on an error)."""

    def __init__(self, store: BlobStore, ctx: "ExportContext", interval_s: float) -> None:
        self.name = layout.camera_visits_blob(ctx.task_id, ctx.variant)
        self._interval_s, self._threshold = interval_s, ctx.cut
        self._blob = BlockBlobWriter(store, ctx.container, self.name, "text/csv; charset=utf-8", VISITS_BLOCK_BYTES)
        self._text = io.TextIOWrapper(io.BufferedWriter(self._blob, 1 << 16), encoding="utf-8", newline="")
        self._writer = csv.writer(self._text)
        self._writer.writerow(camtrap_events.CAMERA_VISITS_COLUMNS)
        self.cameras = 0

    def append(self, visits: camtrap_events.CameraVisits) -> None:
        self._writer.writerow(camtrap_events.camera_visits_row(visits, self._interval_s, self._threshold))
        self.cameras += 1

    def __enter__(self) -> "CameraVisitsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self._text.flush()
        self._text.detach().detach()
        self._blob.__exit__(*exc)


class CameraDaysWriter:
    """``camera-days.csv`` (``layout.camera_days_blob``) streamed as the grouping finishes each camera
    (``write_events``' ``days``): a row per camera and day (a thousand cameras over a year: 365,000 rows), so only
    one camera's table is ever held. Committed as the ``with`` block ends (nothing on an error)."""

    def __init__(self, store: BlobStore, ctx: "ExportContext", interval_s: float) -> None:
        self.name = layout.camera_days_blob(ctx.task_id, ctx.variant)
        self._interval_s, self._threshold = interval_s, ctx.cut
        self._blob = BlockBlobWriter(store, ctx.container, self.name, "text/csv; charset=utf-8", DAYS_BLOCK_BYTES)
        self._blob.write(csvline.line(camtrap_events.CAMERA_DAYS_COLUMNS).encode("utf-8"))

    def __call__(self, camera: camtrap_events.CameraDays) -> None:
        for text in camtrap_events.camera_days_rows(camera, self._interval_s, self._threshold):
            self._blob.write(text.encode("utf-8"))

    def __enter__(self) -> "CameraDaysWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._blob.__exit__(*exc)


def run_exports(task_id: str, settings: Settings, store: BlobStore, source: BlobStore | None = None,
                variant: str = "", threshold: float | None = None,
                open_batch_files: int = OPEN_BATCH_FILES) -> c.ExportsOutput:
    """Write every export of one results variant; ``source`` reads the images (for COCO's sizes) when they are in
    another storage account; ``open_batch_files`` Zooniverse batches are written per pass over the results."""
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    results_name = layout.results_blob(task_id, variant)
    with tempfile.TemporaryFile("w+b") as results:
        try:  # the head alone: when the workers' views hold every line, the entries are not read (issue 11)
            head, downloaded = read_results_head(store, container, results_name)[0], False
        except ValueError:  # not the merge's layout: the whole file, read as any results file
            download_to(store, container, results_name, results)
            results.seek(0)
            head, downloaded = mdformat.results_head(results), True
        ctx = prepare(task_id, settings, store, variant, threshold, head)
        enumeration, categories, cut, manifest, list_shards = (ctx.enumeration, ctx.categories, ctx.cut, ctx.manifest,
                                                               ctx.list_shards)
        camtrap = ctx.camtrap()
        eligible = sizes_unknown = cut_short_out = 0
        cut_short: frozenset[str] | None = None  # the task's photos cut short, looked up once the entries are read
        misses = SizeMisses()
        with ExitStack() as files:
            tmp = {k: _text(files.enter_context(tempfile.TemporaryFile("w+b")))
                   for k in ("images", "annotations", "coco", "media", "observations", "deployments")}
            zooniverse_rows = files.enter_context(tempfile.TemporaryFile("w+b"))
            writer = coco.CocoWriter(tmp["images"], tmp["annotations"], cut, categories, cameras=ctx.cameras())
            media, observations = LineBuffer(tmp["media"]), LineBuffer(tmp["observations"])
            media.write(csvline.line(camtrapdp.MEDIA_COLUMNS))
            observations.write(csvline.line(camtrapdp.OBSERVATION_COLUMNS))

            def needs_size(entry: dict[str, Any]) -> str | None:
                if not settings.export_image_sizes or entry.get("failure") is not None or coco.entry_size(entry):
                    return None
                return str(entry.get("file"))

            by_capture = ctx.captures()  # subjects are captures: written below from the entries, not row by row
            listed = ListMetadata(store, container, task_id, list_shards)
            tap = camtrap_events.EventTap()
            views = files.enter_context(ViewLines(iter_export_views(
                store, settings, task_id, 0, int(enumeration.get("shards") or 0), cut, ctx.plain_camtrap(), STREAMED,
                *ctx.view_list()), camtrap, manifest, events=tap))
            lengths = array("q")
            views.write(writer, tmp["images"], tmp["annotations"], camtrap, media, observations, continued=False)
            if views.coco:
                needs_size = needs_no_size
            if views.zooniverse and by_capture is None:  # every shard's Zooniverse rows are in the views, in order
                eligible = views.write_zooniverse(zooniverse_rows, lengths)
            if not views.complete and not downloaded:  # the entries for the formats the views do not hold
                download_to(store, container, results_name, results)
            if not views.complete:  # marked on their entries for every format (their shards' views are not used)
                cut_short = shards_damaged(store, settings, task_id, 0, int(enumeration.get("shards") or 0))
            for entry, size in (() if views.complete else sized(settings, source or store,
                                                                 str(enumeration.get("container", "")),
                                                                 mark_cut_short(_entries(results), cut_short or
                                                                                frozenset()), needs_size, misses)):
                sizes_unknown += count_size_unknown(entry, size, needs_size, misses)
                metadata = listed.get(str(entry["file"]))  # every entry, in order (the walk keeps step)
                views.add(entry, size, metadata, writer, camtrap, media, observations)
                # subjects of one image or captures alike (activities.zooniverse_captures leaves them out of both),
                # as an exports part counts them: the fan-out's output and this one's agree
                cut_short_out += not views.zooniverse and left_out_cut_short(entry)
                if not views.zooniverse and by_capture is None and not zooniverse.excluded(entry):
                    eligible += 1
                    line = zooniverse.row_line(entry, manifest, categories, metadata).encode("utf-8")
                    zooniverse_rows.write(line)
                    lengths.append(len(line))
            cameras: list[camtrap_events.CameraVisits] = []
            index = camtrap_events.EventIndex()
            frames = camtrap_events.EventFrames(1)
            with CameraDaysWriter(store, ctx, ctx.event_interval_s(settings)) as days:
                events, event_rows = write_events(observations, camtrap, [tap.records()],
                                                  ctx.event_interval_s(settings), cameras, index, frames, days)
            media.flush()
            observations.flush()
            moved: dict[str, str] = {}
            stand_ins = camtrap.stand_ins()
            if stand_ins:  # photos without a capture time: their deployment's first, instead of the detection time
                restamped = _text(files.enter_context(tempfile.TemporaryFile("w+b")))
                tmp["media"].seek(0)
                moved = write_stand_ins(tmp["media"], stand_ins, restamped)
                tmp["media"].detach()
                tmp["media"] = restamped
            whole = index.lookup()  # read back: what a link part reads of its share (activities.exportevents)
            if index.deployments() or moved:  # the time-grouped photos' media-level rows name their events
                linked = _text(files.enter_context(tempfile.TemporaryFile("w+b")))
                tmp["observations"].seek(0)

                def media_rows() -> IO[str]:
                    tmp["media"].seek(0)
                    return tmp["media"]

                link_event_ids(tmp["observations"], media_rows, whole, camtrap.completed_at, linked, moved)
                tmp["observations"].detach()
                tmp["observations"] = linked
            places = camtrap_events.EventFrames.from_bytes(frames.to_bytes(0)) if frames.held(0) else None
            if places is not None:  # and COCO's images their events' seq_id, seq_num_frames and frame_num
                writer.flush()
                numbered = _text(files.enter_context(tempfile.TemporaryFile("w+b")))
                tmp["images"].seek(0)
                link_coco_images(tmp["images"], places, numbered, whole)
                tmp["images"].detach()
                tmp["images"] = writer.images = numbered
            writer.finish(tmp["coco"], ctx.coco_info())
            store_put = [(layout.coco_blob(task_id, variant), tmp["coco"], "application/json")]
            deployments = csv.writer(tmp["deployments"])
            deployments.writerow(camtrapdp.DEPLOYMENT_COLUMNS)
            deployments.writerows(camtrap.iter_deployment_rows())
            for name in ("deployments", "media", "observations"):
                store_put.append((layout.camtrap_dp_blob(task_id, f"{name}.csv", variant), tmp[name],
                                  "text/csv; charset=utf-8"))
            for name, wrapper, content_type in store_put:
                _upload_text(store, container, name, wrapper, content_type)
            write_descriptor(store, ctx, camtrap, events, ctx.event_interval_s(settings))
            visits = write_camera_visits(store, ctx, cameras, ctx.event_interval_s(settings))
            for wrapper in tmp.values():
                wrapper.detach()
            if by_capture is None:
                batches = _write_zooniverse_rows(store, container, task_id, variant, zooniverse_rows, lengths,
                                                 manifest, open_batch_files)
            else:
                from activities.zooniverse_captures import write_single

                def entries() -> Iterator[dict[str, Any]]:  # without every shard's view: the entries, read now
                    if not downloaded and views.complete:
                        download_to(store, container, results_name, results)
                    names = cut_short if cut_short is not None else shards_damaged(
                        store, settings, task_id, 0, int(enumeration.get("shards") or 0))
                    return mark_cut_short(_entries(results), names)

                made = write_single(settings, store, ctx, by_capture, entries, places)
                batches, eligible = made["batches"], made["subjects"]
    prefix = layout.exports_prefix(task_id, variant)
    logger.info("task %s: exports%s written: %d images, %d COCO boxes, %d observations, %d Zooniverse batches",
                task_id, f" ({variant})" if variant else "", writer.counts["images"], writer.counts["annotations"],
                camtrap.counts["observations"], batches)
    out: c.ExportsOutput = {
        "container": container, "prefix": prefix, "coco": layout.coco_blob(task_id, variant),
        "camtrap_dp": prefix + "camtrap-dp/", "zooniverse": prefix + "zooniverse/", "zooniverse_batches": batches,
        "threshold": cut, "images": writer.counts["images"], "annotations": writer.counts["annotations"],
        "observations": camtrap.counts["observations"], "deployments": len(camtrap.deployments),
        "zooniverse_subjects": eligible, "sizes_unknown": sizes_unknown, "events": events,
        "event_observations": event_rows, "camera_visits": visits, "cameras": len(cameras),
        "camera_days": days.name}
    if by_capture is not None:
        out["zooniverse_capture_images"] = made["images"]
    if cut_short_out:
        out["zooniverse_cut_short"] = cut_short_out
    why = sizes_unknown_why(misses.to_dict())
    if why is not None:
        out["sizes_unknown_why"] = why
    unmatched_clock_corrections(task_id, camtrap, out)
    return out


def unmatched_clock_corrections(task_id: str, camtrap: camtrapdp.CamtrapBuilder, out: c.ExportsOutput,
                                matched: Iterable[str] = ()) -> None:
    """Name in the exports' output (the task's status shows it) the clock corrections that corrected nothing: a
    folder misspelt, in another case or Unicode form, left a camera's times wrong without a word. ``matched``: the
    folders that corrected an image in one of the parts (the combine's builder saw no image)."""
    unmatched = camtrap.unmatched_clock_shifts(matched)
    if unmatched:
        # The status holds at most 16 KB (devhost README, row 8) and a request may name 1,000 folders of 1,024
        # characters: the first few, shortened, and how many; the log has them all.
        out["clock_corrections_unmatched"] = [_shortened(u) for u in unmatched[:UNMATCHED_SHOWN]]
        if len(unmatched) > UNMATCHED_SHOWN:
            out["clock_corrections_unmatched_count"] = len(unmatched)
        logger.warning("task %s: clock_corrections name no camera folder: %s", task_id, "; ".join(unmatched))


UNMATCHED_SHOWN = 10
UNMATCHED_CHARS = 240


def _shortened(text: str) -> str:
    return text if len(text) <= UNMATCHED_CHARS else text[:UNMATCHED_CHARS - 1] + "…"


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS)
@failures_without_secrets
def write_exports(payload: c.ExportsInput) -> c.ExportsOutput:
    s = clients.settings()
    store = clients.store(s)
    refuse_if_superseded(store, s, payload, "the exports")  # a terminated run's late call
    enumeration = store.read_json(s.container, layout.enumeration_blob(payload["task_id"]))
    source = clients.source_store(s, enumeration.get("source_account_url", ""), enumeration.get("credential_secret", ""))
    return run_exports(payload["task_id"], s, store, source, payload.get("variant", ""), payload.get("threshold"))
