"""Zooniverse manifests of captures (``core.captures``): sorted runs of records per part, then one merge that writes
the batches. Taken instead of the per-image manifests when the task's image list defines captures, or its request
asks for subjects of visits (``zooniverse_visit_frames``: each part's records keyed by its share of the frames the
events step numbered, ``activities.exportevents``).

Why this shape: a capture's images may sit in any shards (a captures file is not required to list them together),
so no part can write a subject's row alone, unlike the per-image rows (``activities.zooniverseparts``). Each part
turns its images into records and writes them sorted, in runs of at most ``RUN_RECORDS`` (memory per activity stays
bounded whatever the part holds); the combine merges every run by key, so each capture's records come out together,
counts the subjects and the largest one (the header's image columns), assigns batches over the subjects' ordinals
(``core.zooniverse.BatchAssigner``, seeded as the per-image manifests) and writes each batch, cutting a capture
longer than ``max_frames`` into its subjects as its records stream past (``core.captures.tally``, ``subjects``), so
no capture is held whole, however many photos it has (a captures file whose clock stuck may make millions one).

* ``run_captures_part`` (fan-out: ``exports_captures_part`` per merge part, in parallel): the part's entries (the byte
  range ``exports_part`` read) and the image list's rows, as ``exports_zooniverse_part`` reads them. The single
  exports activity calls ``write_runs`` over the whole results itself.
* ``run_captures_combine`` (``exports_captures_combine``, one call): the merge and the batches, in three passes
  (``combine``): nothing on the local disk, which a Flex Consumption instance shares, 0.8 GB, among every activity it
  runs (``core.scratch``), while the runs grow with the task (~150 bytes an image, 1.5 GB at ten million). Memory:
  8 bytes per subject (its batch; and a split visit's parts, ``core.captures.SplitVisits``), 8 per capture longer
  than ``max_frames`` (its count, ``core.captures.Tally.long``), one subject's records at a time (``max_frames`` at
  most, whatever its capture's size: a capture of 200,000 photos peaked at 46 MB of heap held whole, 3.5 MB cut as
  it streams, this module's buffers set small), 32 MB of run reads, 32 MB of bucket blocks and as much in flight
  (one block a bucket, on ``WRITE_THREADS`` threads), then one bucket (~32 MB) at a time: ~180 MB at ten million
  subjects, of the ~256 MB an activity's share of an instance's 2 GB is (``instanceMemoryMB``, eight activities).
  CPU, measured here: ~5 us an image in a part, ~3 in the combine's merges (``tests/integration/
  test_zooniverse_captures.py`` checks the fan-out's bytes equal the single pass's and the whole captures', and
  every capture's images there in rank order).

Records come from the workers' merge views (their per-image rows read back, ``view_records``) when every shard of
the part has one, else from the entries. Every step is idempotent; the work blobs go with the
fan-out's clean-up (``exports_zooniverse_clean`` deletes this prefix too) or, on the single path, at once.
"""
from __future__ import annotations

import csv
import heapq
import io
import struct
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable, Iterable, Iterator

import azure.durable_functions as df

from activities.decided import task_settings
from activities.exportparts import FRAMES, _fragment, _lines
from activities.exports import ExportContext, ListMetadata, prepare, read_results_head
from activities.fanin import export_views, range_lines
from activities.shard_results import shards_damaged
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.block_writer import BlockBlobWriter
from adapters.blob_files import delete_under
from adapters.blobs import BlobStore
from adapters.compose import delete_prefix
from core import camtrap_events, captures, zooniverse
from core import contracts as c
from core.captures import CaptureColumns
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import camtrapdp, csvline, jsonio
from gpu_batch.formats.entries import mark_cut_short
from gpu_batch.formats.mergeview import ShardView

bp = df.Blueprint()
RUN_RECORDS = 200_000  # records sorted in memory at once (a merge part's images; ~100 MB at most)
READ_BUDGET = 32 * 1024 * 1024  # the combine's read buffers, all runs together
READ_BYTES = 4 * 1024 * 1024  # at most this much of one run is read at a time ...
MIN_READ_BYTES = 256 * 1024  # ... and at least this much (a thousand runs: 256 MB, fifty million images)
BUCKET_BYTES = 32 * 1024 * 1024  # rows per bucket blob, about: what the combine's last pass holds at once
MAX_BUCKETS = 64  # bucket blobs written at once, each through one block of
BUCKET_BLOCK_BYTES = 512 * 1024  # (32 MB of blocks at most)
WRITE_THREADS = 8  # the combine's concurrent blob requests
_ROW_HEAD = struct.Struct("<II")  # a bucket's row: its batch, its length, then the row
CSV_TYPE = "text/csv; charset=utf-8"


def work_prefix(task_id: str, variant: str) -> str:
    """Under the per-image fan-out's work prefix, so its clean-up takes these too."""
    return layout.exports_prefix(task_id, variant) + ".zooniverse-parts/captures/"


def _run_blob(task_id: str, variant: str, part: int, run: int) -> str:
    return f"{work_prefix(task_id, variant)}{part:05d}-{run:04d}.jsonl"


def write_runs(store: BlobStore, ctx: ExportContext, part: int, records_in: Iterable[list[Any]]) -> tuple[int, int]:
    """``records_in`` as sorted runs of at most ``RUN_RECORDS``; (records, runs)."""
    runs = records = 0
    batch: list[list[Any]] = []

    def flush() -> None:
        nonlocal runs
        batch.sort(key=captures.sort_key)
        data = b"".join(jsonio.dumps(r) + b"\n" for r in batch)
        store.write_bytes(ctx.container, _run_blob(ctx.task_id, ctx.variant, part, runs), data,
                          "application/x-ndjson")
        runs += 1
        batch.clear()

    for rec in records_in:
        batch.append(rec)
        records += 1
        if len(batch) >= RUN_RECORDS:
            flush()
    if batch:
        flush()
    return records, runs


def entry_records(ctx: ExportContext, key: CaptureColumns, entries: Iterable[dict[str, Any]],
                  listed: ListMetadata) -> Iterator[list[Any]]:
    """The records of the entries in the manifests, each with its list row (every entry is looked up, so the walk
    keeps step with the shards)."""
    for entry in entries:
        metadata = listed.get(str(entry["file"]))
        if not zooniverse.excluded(entry):
            yield captures.record(entry, metadata, key, ctx.manifest, ctx.categories)


def view_records(ctx: ExportContext, key: CaptureColumns, views: list[ShardView]) -> Iterator[list[Any]]:
    """The same records from the workers' merge views: their per-image manifest rows (made with the list's rows,
    ``activities.fanin.export_views`` checked), read back field by field. The entries are then not read at all."""
    for view in views:
        assert view.zooniverse is not None
        data, lengths = view.zooniverse.filled(",,,")  # attribution and license empty: not part of a record
        rows = 0
        for fields in csv.reader(io.StringIO(data.decode("utf-8"), newline="")):  # one reader over the shard's rows
            rows += 1
            yield captures.record_from_row(fields, key, ctx.manifest)
        if rows != len(lengths):
            raise ValueError(f"task {ctx.task_id}: a view's Zooniverse rows read back as {rows}, not {len(lengths)}")


def _views(settings: Settings, store: BlobStore, ctx: ExportContext, first: int, shards: int) -> list[ShardView] | None:
    """Every shard's view with its Zooniverse rows made for this task's list, else None (then the entries)."""
    if not shards:
        return None
    views = export_views(store, settings, ctx.task_id, first, shards, ctx.cut, ctx.plain(), "zooniverse",
                         *ctx.view_list())
    return views if views is not None and all(v.zooniverse is not None for v in views) else None


def run_captures_part(payload: c.ExportsCapturesPartInput, settings: Settings,
                      store: BlobStore) -> c.ExportsCapturesPartOutput:
    task_id, variant, part = payload["task_id"], payload["variant"], payload["part"]
    refuse_if_superseded(store, settings, payload, "a captures part")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    results_name = layout.results_blob(task_id, variant)
    head, start = read_results_head(store, container, results_name)
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    key = ctx.captures()
    if key is None:
        raise ValueError(f"task {task_id}: neither its image list nor its request defines captures")
    share = store.read_bytes_or_none(container, _fragment(task_id, variant, part, FRAMES)) if key.visit_frames else None
    visits = camtrap_events.EventFrames.from_bytes(share) if share is not None else None
    views = _views(settings, store, ctx, payload["first_shard"], int(payload.get("shards", 0)))
    if views is not None:  # the workers' rows: no entry is downloaded or parsed
        records, runs = write_runs(store, ctx, part, _of_visits(view_records(ctx, key, views), key, visits))
        return {"part": part, "records": records, "runs": runs}
    entries = range_lines(store, container, results_name, start + payload["offset"], payload["length"])  # streamed
    listed = ListMetadata(store, container, task_id, ctx.list_shards, payload["first_shard"])
    # photos cut short are in no capture (a capture of nothing else is none: zooniverse.excluded)
    cut_short = shards_damaged(store, settings, task_id, payload["first_shard"], int(payload.get("shards", 0)))
    records, runs = write_runs(store, ctx, part, _of_visits(entry_records(ctx, key, mark_cut_short(_lines(entries),
                                                                                                   cut_short), listed),
                                                            key, visits))
    return {"part": part, "records": records, "runs": runs}


def _of_visits(records: Iterable[list[Any]], key: CaptureColumns,
               visits: camtrap_events.EventFrames | None) -> Iterable[list[Any]]:
    """``records`` keyed by their photos' visits when the captures are visits (``core.captures.visits``; the part's
    share of the frames the events step numbered, ``activities.exportevents``); as they are otherwise. Without a
    share (no photo of the part grouped by time, or an events step recorded before it numbered them) every photo is
    a subject of its own."""
    if not key.visit_frames:
        return records
    find = visits.find if visits is not None else (lambda _: None)
    return captures.visits(records, lambda file: find(camtrapdp.media_id(file)), key.visit_frames)


def _records(store: BlobStore, container: str, name: str, chunk: int) -> Iterator[list[Any]]:
    """A run's records, read ``chunk`` bytes at a time: memory holds one range per run, the disk nothing."""
    size = store.size_or_none(container, name)
    if size is None:
        raise FileNotFoundError(f"{container}/{name}: a captures run the combine was told of is missing (deleted "
                                "while the exports ran?); submit the same request again: its finished shards are "
                                "reused and the exports written anew")
    for line in range_lines(store, container, name, 0, size, chunk):
        if line.strip():
            yield jsonio.loads(line)


def _merged(store: BlobStore, container: str, runs: list[str]) -> Iterator[list[Any]]:
    """Every record in key order: the runs merged as they stream from their blobs (consecutive records of a key are
    one capture, ``core.captures.tally`` and ``subjects`` take them as they pass)."""
    chunk = max(MIN_READ_BYTES, min(READ_BYTES, READ_BUDGET // max(len(runs), 1)))
    return heapq.merge(*(_records(store, container, r, chunk) for r in runs), key=captures.sort_key)


def _bucket_blob(ctx: ExportContext, bucket: int) -> str:
    return f"{work_prefix(ctx.task_id, ctx.variant)}rows-{bucket:04d}.bin"


def combine(store: BlobStore, ctx: ExportContext, runs: list[str]) -> c.ExportsCapturesCombineOutput:
    """Merge the runs into captures and write the batches (deleting batches an earlier run wrote beyond them).

    Nothing on the local disk (a Flex Consumption instance has 0.8 GB for every activity it runs: ``core.scratch``),
    memory bounded whatever the task size, and whatever a capture's size. Three passes: (1) merge the runs to count
    the subjects and the widest one (the batch assignment and the rows' padding need both; a capture of more than
    ``max_frames`` images is several subjects, so the padding is at most that many image columns), counting each
    capture's records as they pass (``core.captures.tally``: a number kept only per capture longer than
    ``max_frames``); (2) merge them again, making the subjects as the records pass (``core.captures.subjects``: one
    subject of ``max_frames`` images held at a time, a long capture's ``of n`` from pass 1's count), and append each
    subject's row to the work blob of its batch's bucket (a bucket: consecutive batches, about ``BUCKET_BYTES`` of
    rows, streamed in blocks); (3) read each bucket whole, split it into its batches (key order inside a batch, as
    the merge gave them) and write them. A split visit's parts are labelled by those the manifests hold
    (``core.captures.SplitVisits``: pass 1 sees them, pass 2 labels them)."""
    container, options = ctx.container, ctx.manifest
    counted = captures.tally(_merged(store, container, runs), options.max_frames)
    subjects, widest, images = counted.subjects, counted.widest, counted.images
    lacking = counted.split_visits.settle()
    batches = zooniverse.batch_count(subjects, options)
    if batches:
        run_bytes = sum(store.size_or_none(container, r) or 0 for r in runs)
        buckets = max(1, min(batches, MAX_BUCKETS, -(-run_bytes // BUCKET_BYTES)))
        per_bucket = -(-batches // buckets)
        buckets = -(-batches // per_bucket)
        batch_of = zooniverse.BatchAssigner(subjects, batches, options.shuffle, options.seed).batch_range(0, subjects)
        # the requests go out on a few threads: ten million images are ~5,000 blocks and ~1,000 batches, which one
        # after another would take minutes of round trips inside the activity's functionTimeout
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            with ExitStack() as stack:
                writers = [stack.enter_context(BlockBlobWriter(store, container, _bucket_blob(ctx, k),
                                                               "application/octet-stream", BUCKET_BLOCK_BYTES, pool,
                                                               in_flight=1))
                           for k in range(buckets)]
                made = captures.subjects(_merged(store, container, runs), options.max_frames, counted.long)
                for i, capture in enumerate(made):
                    names, rest = captures.row_parts(captures.relabelled(capture, lacking), options)
                    row = (names + "," * (widest - len(capture.files)) + rest).encode("utf-8")
                    b = batch_of[i]
                    writers[b // per_bucket].write(_ROW_HEAD.pack(b, len(row)) + row)
            header = csvline.manifest_line(captures.columns(options, widest)).encode("utf-8")
            for k in range(buckets):
                _write_bucket(store, ctx, _bucket_blob(ctx, k), header, pool)
    delete_under(store, container, layout.exports_prefix(ctx.task_id, ctx.variant) + "zooniverse/",
                 {layout.zooniverse_batch_blob(ctx.task_id, b + 1, ctx.variant) for b in range(batches)})
    return {"subjects": subjects, "images": images, "batches": batches, "widest": widest}


def _write_bucket(store: BlobStore, ctx: ExportContext, name: str, header: bytes, pool: Executor) -> None:
    """One bucket's rows into their batches, each batch one upload (on ``pool``); the bucket's blob is deleted
    after."""
    data = store.read_bytes(ctx.container, name)
    rows: dict[int, list[bytes]] = {}
    at, end = 0, len(data)
    while at < end:
        b, length = _ROW_HEAD.unpack_from(data, at)
        at += _ROW_HEAD.size
        rows.setdefault(b, []).append(data[at:at + length])
        at += length
    del data
    uploads = [pool.submit(_upload_batch, store, ctx, b, header + b"".join(rows.pop(b))) for b in sorted(rows)]
    for upload in uploads:
        upload.result()
    store.service.get_blob_client(ctx.container, name).delete_blob()


def _upload_batch(store: BlobStore, ctx: ExportContext, b: int, body: bytes) -> None:
    store.upload_file(ctx.container, layout.zooniverse_batch_blob(ctx.task_id, b + 1, ctx.variant), io.BytesIO(body),
                      CSV_TYPE)


def run_captures_combine(payload: c.ExportsCapturesCombineInput, settings: Settings,
                         store: BlobStore) -> c.ExportsCapturesCombineOutput:
    task_id, variant = payload["task_id"], payload["variant"]
    refuse_if_superseded(store, settings, payload, "the captures' combine")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    head, _ = read_results_head(store, settings.container, layout.results_blob(task_id, variant))
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    runs = [_run_blob(task_id, variant, part, run) for part, count in payload["runs"] for run in range(count)]
    return combine(store, ctx, runs)


def write_single(settings: Settings, store: BlobStore, ctx: ExportContext, key: CaptureColumns,
                 entries: Callable[[], Iterable[dict[str, Any]]],
                 visits: camtrap_events.EventFrames | None = None) -> c.ExportsCapturesCombineOutput:
    """The single exports activity's manifests of captures: the whole task as one part (from the workers' views
    when every shard has one, else from ``entries()``), merged, written, tidied; ``visits``: its photos' places in
    their visits, when the captures are visits."""
    views = _views(settings, store, ctx, 0, int(ctx.enumeration.get("shards") or 0))
    records = (view_records(ctx, key, views) if views is not None else
               entry_records(ctx, key, entries(), ListMetadata(store, ctx.container, ctx.task_id, ctx.list_shards)))
    _, runs = write_runs(store, ctx, 0, _of_visits(records, key, visits))
    out = combine(store, ctx, [_run_blob(ctx.task_id, ctx.variant, 0, r) for r in range(runs)])
    delete_prefix(store, ctx.container, work_prefix(ctx.task_id, ctx.variant))
    return out


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_CAPTURES_PART)
@failures_without_secrets
def exports_captures_part(payload: c.ExportsCapturesPartInput) -> c.ExportsCapturesPartOutput:
    s = clients.settings()
    return run_captures_part(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_CAPTURES_COMBINE)
@failures_without_secrets
def exports_captures_combine(payload: c.ExportsCapturesCombineInput) -> c.ExportsCapturesCombineOutput:
    s = clients.settings()
    return run_captures_combine(payload, s, clients.store(s))
