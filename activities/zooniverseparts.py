"""The Zooniverse batches fanned out: parts over the merge parts' ranges of the results, combines over groups of
batches, a clean-up; the same bytes as the single pass (``activities.exports._write_zooniverse``).

Why: that single pass reads the whole results file (once per 128 batches), far past ``functionTimeout`` at ten
million images. It writes image ``i`` (the ``i``-th eligible entry of the results) into batch
``BatchAssigner(n, batches).batch(i)``, each batch's rows in results order under the header. The assignment needs
only ``i`` and the totals, so (``orchestrations.exports``, after ``exports_combine`` gave the counts):

* ``run_zooniverse_part``: one merge part's entries (the byte range ``exports_part`` read, one entry per line), the
  image list's rows from its first shard on, as the single pass sees them; its eligible images get the indexes
  ``before``, ``before + 1``, ... and their rows go to one work blob grouped by batch (in results order inside a
  batch), with an index blob of ``[batch, offset, length]``. Memory: two integers per eligible image of the part
  (the rows wait in a temporary file). A different eligible count than the exports part reported fails the activity
  (the results changed under the step). When every shard of the part has its worker's merge view with Zooniverse's
  rows (``gpu_batch.formats.mergeview``), the rows come from the views and the entries are not read.
* ``run_zooniverse_combine``: batches ``first`` .. ``first + count - 1``, each composed (``adapters.compose``: Put
  Block From URL, or streamed on Azurite) from the header and each part's range of that batch, in part order; the
  groups (``core.exportparts.zooniverse_groups``) bound the ranges per activity.
* ``run_zooniverse_clean``: deletes the work blobs and the batches an earlier run wrote beyond this run's count.

Scale, measured (one shared CPU core, no I/O): a part assigns and writes ~25,000 rows/s, so a merge part of
``TRAPBATCH_MERGE_IMAGES_PER_PART`` (200,000) images takes ~8 s plus its range's download and one upload.

Every step is idempotent (the same inputs give the same blobs). Tested byte for byte against the single pass in
tests/integration/test_exports_fanout.py.
"""
from __future__ import annotations

import tempfile
from array import array
from concurrent.futures import ThreadPoolExecutor

import azure.durable_functions as df

from activities.decided import task_settings
from activities.exportparts import _csv_line, _lines, work_prefix
from activities.exports import ListMetadata, prepare, read_results_head, write_view_rows
from activities.fanin import export_views, range_lines
from activities.shard_results import shards_damaged
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.blob_files import delete_under
from adapters.blobs import BlobStore
from adapters.block_writer import BlockBlobWriter
from adapters.compose import Piece, compose_blob, delete_prefix
from core import contracts as c
from core import zooniverse
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats.entries import mark_cut_short

bp = df.Blueprint()
PARALLEL_BATCHES = 4  # batches composed at once by a combine (each with adapters.compose's own threads)
CSV_TYPE = "text/csv; charset=utf-8"


def _work(task_id: str, variant: str) -> str:
    return layout.exports_prefix(task_id, variant) + ".zooniverse-parts/"


def _rows_blob(task_id: str, variant: str, part: int) -> str:
    return f"{_work(task_id, variant)}{part:05d}.rows"


def _index_blob(task_id: str, variant: str, part: int) -> str:
    return f"{_work(task_id, variant)}{part:05d}.index.json"


def run_zooniverse_part(payload: c.ExportsZooniversePartInput, settings: Settings,
                        store: BlobStore) -> c.ExportsZooniversePartOutput:
    task_id, variant, part = payload["task_id"], payload["variant"], payload["part"]
    refuse_if_superseded(store, settings, payload, "a Zooniverse part")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    results_name = layout.results_blob(task_id, variant)
    head, start = read_results_head(store, container, results_name)
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    options = ctx.manifest
    assigner = zooniverse.BatchAssigner(payload["eligible"], payload["batches"], options.shuffle, options.seed)
    length_of = array("q")
    with tempfile.TemporaryFile("w+b") as rows:
        index = payload["before"]
        views = export_views(store, settings, task_id, payload["first_shard"], int(payload.get("shards", 0)), ctx.cut,
                             ctx.plain(), "zooniverse", *ctx.view_list())
        from_views = views is not None and all(v.zooniverse is not None for v in views)
        if views is not None and from_views:  # the workers' views hold the part's rows (issue 11): no entry is read
            index += write_view_rows(views, rows, length_of, options)
            if index > payload["eligible"]:
                raise ValueError(f"part {part}: more eligible images than the {payload['rows']} counted")
        listed = ListMetadata(store, container, task_id, ctx.list_shards, payload["first_shard"])
        entries = () if from_views else range_lines(store, container, results_name, start + payload["offset"],
                                                    payload["length"])  # streamed: no copy on the local disk
        # photos cut short: left out as the exports part counting ``rows`` left them out (its output said so)
        cut_short = (shards_damaged(store, settings, task_id, payload["first_shard"], int(payload.get("shards", 0)))
                     if payload.get("cut_short") and not from_views else frozenset())
        for entry in mark_cut_short(_lines(entries), cut_short):
            metadata = listed.get(str(entry["file"]))  # every entry, so the walk keeps step with the shards
            if zooniverse.excluded(entry):
                continue
            if index >= payload["eligible"]:
                raise ValueError(f"part {part}: more eligible images than the {payload['rows']} counted")
            index += 1
            data = zooniverse.row_line(entry, options, ctx.categories, metadata).encode("utf-8")
            length_of.append(len(data))
            rows.write(data)
        found = index - payload["before"]
        batch_of = assigner.batch_range(payload["before"], index)  # the part's eligible images, in results order
        if found != payload["rows"]:
            raise ValueError(f"part {part}: {found} eligible images, the exports part counted {payload['rows']}")
        # Group by batch, keeping results order inside a batch: each batch's byte range in the work blob (the index).
        sizes: dict[int, int] = {}
        for b, n in zip(batch_of, length_of):
            sizes[b] = sizes.get(b, 0) + n
        table, total = [], 0
        for b in sorted(sizes):
            table.append([b, total, sizes[b]])
            total += sizes[b]
        # Written in that order as a stream (only the part's rows, ~150 bytes an image, wait on the local disk:
        # core.scratch): a counting sort of the rows by batch, then each row read back from the spool.
        rank = {b: k for k, b in enumerate(sorted(sizes))}
        starts = array("q", [0]) * (len(rank) + 1)
        for b in batch_of:
            starts[rank[b] + 1] += 1
        for k in range(len(rank)):
            starts[k + 1] += starts[k]
        order = array("q", [0]) * len(length_of)
        for i, b in enumerate(batch_of):
            order[starts[rank[b]]] = i
            starts[rank[b]] += 1
        offsets, at = array("q"), 0
        for n in length_of:
            offsets.append(at)
            at += n
        with BlockBlobWriter(store, container, _rows_blob(task_id, variant, part), "application/octet-stream") as out:
            for i in order:
                rows.seek(offsets[i])
                out.write(rows.read(length_of[i]))
    store.write_json(container, _index_blob(task_id, variant, part), table)
    return {"part": part, "rows": found, "bytes": total}


def run_zooniverse_combine(payload: c.ExportsZooniverseCombineInput, settings: Settings, store: BlobStore) -> int:
    """Compose batches ``first`` .. ``first + count - 1``; returns how many."""
    task_id, variant, first, count = payload["task_id"], payload["variant"], payload["first"], payload["count"]
    refuse_if_superseded(store, settings, payload, "a Zooniverse combine")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    head, _ = read_results_head(store, container, layout.results_blob(task_id, variant))
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    header = _csv_line(zooniverse.columns(ctx.manifest))
    ranges: dict[int, list[Piece]] = {b: [] for b in range(first, first + count)}
    for part in payload["parts"]:
        for b, offset, length in store.read_json(container, _index_blob(task_id, variant, part)):
            if b in ranges and length:
                ranges[b].append((_rows_blob(task_id, variant, part), offset, length))

    def compose(b: int) -> None:
        if not ranges[b]:
            raise ValueError(f"batch {b + 1}: no part wrote rows for it")
        compose_blob(store, container, layout.zooniverse_batch_blob(task_id, b + 1, variant), [header, *ranges[b]],
                     CSV_TYPE)

    with ThreadPoolExecutor(PARALLEL_BATCHES) as pool:
        list(pool.map(compose, sorted(ranges)))
    return count


def run_zooniverse_clean(payload: c.ExportsZooniverseCleanInput, settings: Settings, store: BlobStore) -> int:
    """Delete the work blobs (this fan-out's and exports_combine's fragments) and stale batches; returns how many
    blobs went."""
    task_id, variant = payload["task_id"], payload["variant"]
    refuse_if_superseded(store, settings, payload, "the Zooniverse cleanup")  # a terminated run's late call
    container = settings.container
    gone = delete_prefix(store, container, _work(task_id, variant))
    gone += delete_prefix(store, container, work_prefix(task_id, variant))  # exports_combine's fragments
    keep = {layout.zooniverse_batch_blob(task_id, b + 1, variant) for b in range(payload["batches"])}
    return gone + delete_under(store, container, layout.exports_prefix(task_id, variant) + "zooniverse/", keep)


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_ZOONIVERSE_PART)
@failures_without_secrets
def exports_zooniverse_part(payload: c.ExportsZooniversePartInput) -> c.ExportsZooniversePartOutput:
    s = clients.settings()
    return run_zooniverse_part(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_ZOONIVERSE_COMBINE)
@failures_without_secrets
def exports_zooniverse_combine(payload: c.ExportsZooniverseCombineInput) -> int:
    s = clients.settings()
    return run_zooniverse_combine(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_ZOONIVERSE_CLEAN)
@failures_without_secrets
def exports_zooniverse_clean(payload: c.ExportsZooniverseCleanInput) -> int:
    s = clients.settings()
    return run_zooniverse_clean(payload, s, clients.store(s))
