"""Zooniverse manifests of captures (``core.captures``): sorted runs of records per part, then one merge that writes
the batches. Taken instead of the per-image manifests when the task's image list defines captures.

Why this shape: a capture's images may sit in any shards (a captures file is not required to list them together),
so no part can write a subject's row alone, unlike the per-image rows (``activities.zooniverseparts``). Each part
turns its images into records and writes them sorted, in runs of at most ``RUN_RECORDS`` (memory per activity stays
bounded whatever the part holds); the combine merges every run by key, so each capture comes out whole, counts the
subjects and the largest capture (the header's image columns), assigns batches over the subjects' ordinals
(``core.zooniverse.BatchAssigner``, seeded as the per-image manifests) and writes each batch.

* ``run_captures_part`` (fan-out: ``exports_captures_part`` per merge part, in parallel): the part's entries (the byte
  range ``exports_part`` read) and the image list's rows, as ``exports_zooniverse_part`` reads them. The single
  exports activity calls ``write_runs`` over the whole results itself.
* ``run_captures_combine`` (``exports_captures_combine``, one call): the merge and the batches. Memory: 48 bytes per
  subject (a row's place, length, split, images, batch and order); the runs (~150 bytes an image) and the rows wait
  on the local disk. CPU, measured here: ~5 us an image in a part, ~3 in the combine (``tests/integration/
  test_zooniverse_captures.py`` checks the fan-out's bytes equal the single pass's, and every capture whole).

Records and rows are the entries' own values: the workers' merge views (which hold per-image rows) are not used here,
so such a task reads its entries once more for the manifests. Every step is idempotent; the work blobs go with the
fan-out's clean-up (``exports_zooniverse_clean`` deletes this prefix too) or, on the single path, at once.
"""
from __future__ import annotations

import csv
import heapq
import io
import tempfile
from array import array
from typing import IO, Any, Callable, Iterable, Iterator

import azure.durable_functions as df

from activities.exportparts import _lines
from activities.exports import ExportContext, ListMetadata, prepare, read_results_head
from activities.fanin import export_views
from adapters import clients
from adapters.blob_files import delete_under, download_to
from adapters.blobs import BlobStore
from adapters.compose import delete_prefix
from core import captures, zooniverse
from core import contracts as c
from core.captures import CaptureColumns
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import csvline, jsonio
from gpu_batch.formats.mergeview import ShardView

bp = df.Blueprint()
RUN_RECORDS = 200_000  # records sorted in memory at once (a merge part's images; ~100 MB at most)
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
    container = settings.container
    results_name = layout.results_blob(task_id, variant)
    head, start = read_results_head(store, container, results_name)
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    key = ctx.captures()
    if key is None:
        raise ValueError(f"task {task_id}: its image list defines no captures")
    views = _views(settings, store, ctx, payload["first_shard"], int(payload.get("shards", 0)))
    if views is not None:  # the workers' rows: no entry is downloaded or parsed
        records, runs = write_runs(store, ctx, part, view_records(ctx, key, views))
        return {"part": part, "records": records, "runs": runs}
    with tempfile.TemporaryFile("w+b") as entries:
        store.service.get_blob_client(container, results_name).download_blob(
            offset=start + payload["offset"], length=payload["length"]).readinto(entries)
        listed = ListMetadata(store, container, task_id, ctx.list_shards, payload["first_shard"])
        records, runs = write_runs(store, ctx, part, entry_records(ctx, key, _lines(entries), listed))
    return {"part": part, "records": records, "runs": runs}


def _records(fp: IO[bytes]) -> Iterator[list[Any]]:
    fp.seek(0)
    for line in fp:
        if line.strip():
            yield jsonio.loads(line)


def combine(store: BlobStore, ctx: ExportContext, runs: list[str]) -> c.ExportsCapturesCombineOutput:
    """Merge the runs into captures and write the batches (deleting batches an earlier run wrote beyond them)."""
    container, options = ctx.container, ctx.manifest
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for i, name in enumerate(runs):
            fp = open(f"{folder}/{i}.jsonl", "w+b")  # noqa: SIM115 - closed below, with the directory
            files.append(fp)
            download_to(store, container, name, fp)
        try:
            with tempfile.TemporaryFile("w+b") as spool:
                # each subject's row, made now in two pieces (its image names, the rest) and padded when written
                lengths, splits, counts = array("q"), array("q"), array("q")
                widest = images = 0
                for capture in captures.group(heapq.merge(*(_records(f) for f in files), key=captures.sort_key)):
                    names, rest = captures.row_parts(capture, options)
                    head, tail = names.encode("utf-8"), rest.encode("utf-8")
                    spool.write(head + tail)
                    lengths.append(len(head) + len(tail))
                    splits.append(len(head))
                    counts.append(len(capture.files))
                    widest = max(widest, len(capture.files))
                    images += len(capture.files)
                batches = _write_batches(store, ctx, spool, lengths, splits, counts, widest)
        finally:
            for fp in files:
                fp.close()
    delete_under(store, container, layout.exports_prefix(ctx.task_id, ctx.variant) + "zooniverse/",
                 {layout.zooniverse_batch_blob(ctx.task_id, b + 1, ctx.variant) for b in range(batches)})
    return {"subjects": len(lengths), "images": images, "batches": batches, "widest": widest}


def _write_batches(store: BlobStore, ctx: ExportContext, spool: IO[bytes], lengths: "array[int]",
                   splits: "array[int]", counts: "array[int]", widest: int) -> int:
    """Each subject's row into its batch (``BatchAssigner`` over the subjects' ordinals), in key order inside a
    batch, a batch at a time: a counting sort of the ordinals by batch, then each batch's rows read from the spool."""
    options = ctx.manifest
    n = len(lengths)
    batches = zooniverse.batch_count(n, options)
    if not batches:
        return 0
    batch_of = zooniverse.BatchAssigner(n, batches, options.shuffle, options.seed).batch_range(0, n)
    offsets = array("q", [0]) * n
    at = 0
    for i, length in enumerate(lengths):
        offsets[i] = at
        at += length
    starts = array("q", [0]) * (batches + 1)
    for b in batch_of:
        starts[b + 1] += 1
    for b in range(batches):
        starts[b + 1] += starts[b]
    order = array("q", [0]) * n
    cursor = array("q", starts)
    for i, b in enumerate(batch_of):
        order[cursor[b]] = i
        cursor[b] += 1
    header = csvline.line(captures.columns(options, widest)).encode("utf-8")
    for b in range(batches):
        with tempfile.TemporaryFile("w+b") as out:
            out.write(header)
            for k in range(starts[b], starts[b + 1]):
                i = order[k]
                spool.seek(offsets[i])
                row = spool.read(lengths[i])
                out.write(row[:splits[i]] + b"," * (widest - counts[i]) + row[splits[i]:])
            out.seek(0)
            store.upload_file(ctx.container, layout.zooniverse_batch_blob(ctx.task_id, b + 1, ctx.variant), out,
                              CSV_TYPE)
    return batches


def run_captures_combine(payload: c.ExportsCapturesCombineInput, settings: Settings,
                         store: BlobStore) -> c.ExportsCapturesCombineOutput:
    task_id, variant = payload["task_id"], payload["variant"]
    head, _ = read_results_head(store, settings.container, layout.results_blob(task_id, variant))
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    runs = [_run_blob(task_id, variant, part, run) for part, count in payload["runs"] for run in range(count)]
    return combine(store, ctx, runs)


def write_single(settings: Settings, store: BlobStore, ctx: ExportContext, key: CaptureColumns,
                 entries: Callable[[], Iterable[dict[str, Any]]]) -> c.ExportsCapturesCombineOutput:
    """The single exports activity's manifests of captures: the whole task as one part (from the workers' views
    when every shard has one, else from ``entries()``), merged, written, tidied."""
    views = _views(settings, store, ctx, 0, int(ctx.enumeration.get("shards") or 0))
    records = (view_records(ctx, key, views) if views is not None else
               entry_records(ctx, key, entries(), ListMetadata(store, ctx.container, ctx.task_id, ctx.list_shards)))
    _, runs = write_runs(store, ctx, 0, records)
    out = combine(store, ctx, [_run_blob(ctx.task_id, ctx.variant, 0, r) for r in range(runs)])
    delete_prefix(store, ctx.container, work_prefix(ctx.task_id, ctx.variant))
    return out


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_CAPTURES_PART)
def exports_captures_part(payload: c.ExportsCapturesPartInput) -> c.ExportsCapturesPartOutput:
    s = clients.settings()
    return run_captures_part(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_CAPTURES_COMBINE)
def exports_captures_combine(payload: c.ExportsCapturesCombineInput) -> c.ExportsCapturesCombineOutput:
    s = clients.settings()
    return run_captures_combine(payload, s, clients.store(s))
