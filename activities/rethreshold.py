"""A finished task's CSV and preview sample at another threshold (``POST /api/tasks/{id}/previews``).

Why a pass over the results file: the CSV counts the detections of each image at the threshold, which no summary
kept by the merge holds; the same pass draws the preview sample again (``gpu_batch.formats.previewsample``, seeded by
the task id, so the sections hold the sample the merge would have drawn at this threshold, and the counts are exact).
Memory stays bounded: the results are downloaded to a temporary file and read one entry at a time
(``core.mdformat.iter_images``), the CSV is written to a temporary file and uploaded in blocks.

Scale: one pass handles about two million images inside the app's ``functionTimeout``. A results file larger than
``PART_BYTES`` in the merge's layout (one entry per line) is passed over in parallel instead: ``run_rethreshold``
answers the byte ranges of its entries (``parts``), ``run_rethreshold_part`` passes over the entries whose line
starts in its range (ranged reads; ``core.rethresholds.owned_lines``) and writes its CSV rows and its sampler's state
(``layout.rethreshold_work_prefix``), ``run_rethreshold_combine`` composes the CSV (header, then the parts' rows in
order) and absorbs the states in order, and ``run_rethreshold_clean`` deletes the parts' work. The bytes are the
single pass's: the rows in the results' order, and the sampler's sample does not depend on how the entries were
split (``gpu_batch.formats.previewsample``; ``tests/integration/test_rethreshold_parts.py``).

The CSV at the new threshold is written **beside** the task's own (``detections[.<variant>].threshold-0.35.csv``,
``gpu_batch.layout.threshold_csv_blob``), never over it: ``detections.csv`` stays the CSV at the request's threshold
(what the exports were cut at), and MegaDetector users keep one CSV per threshold they looked at, with the threshold
in the name and in every row. The preview sample is replaced (it is what the page is rendered from; the page shows
its threshold), so the page follows the last threshold asked for.

Must not: write the results file (it is only read here), or the exports.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

import azure.durable_functions as df
from azure.core.exceptions import ResourceNotFoundError

from activities.exports import read_results_head
from adapters import clients
from adapters.blob_files import ResultsNotFound
from adapters.block_writer import BlockBlobWriter, open_blob
from adapters.blobs import BlobStore
from adapters.compose import compose_blob, delete_prefix, read_range
from core import contracts as c
from core import mdformat
from core import rethresholds
from core.errors import TrapbatchError
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import jsonio
from gpu_batch.formats.detections_csv import CSV_COLUMNS, csv_row
from gpu_batch.formats.previewsample import PreviewSampler

logger = logging.getLogger(__name__)
bp = df.Blueprint()


PART_BYTES = 256 * 1024 * 1024  # of the results' entries per parallel part (0.7-1.4M images, ~8 us of CPU each)


def _old_sample(store: BlobStore, container: str, task_id: str, variant: str) -> dict[str, Any]:
    old = store.read_json_or_none(container, layout.preview_sample_blob(task_id, variant))
    if old is None:
        raise TrapbatchError(f"task {task_id} has no preview sample ({container}/"
                             f"{layout.preview_sample_blob(task_id, variant)})", "the merge writes it; run it first")
    return dict(old)


def _write_sample(store: BlobStore, container: str, task_id: str, variant: str, old: dict[str, Any],
                  sampler: PreviewSampler, images: int) -> None:
    sample = {**sampler.result(), "info": old.get("info", {}),
              "detection_categories": old.get("detection_categories", mdformat.DETECTION_CATEGORIES), "images": images}
    store.write_bytes(container, layout.preview_sample_blob(task_id, variant),
                      json.dumps(sample, ensure_ascii=False).encode("utf-8"), "application/json")


def _entry_ranges(store: BlobStore, container: str, name: str, part_bytes: int) -> list[list[int]] | None:
    """The byte ranges of a large results file's entries for the parallel parts; None for a file one pass handles,
    or one not in the merge's layout (``read_results_head``: the single pass reads any layout)."""
    size = store.size_or_none(container, name)
    if size is None or size <= part_bytes:
        return None
    try:
        _, start = read_results_head(store, container, name)
    except ValueError:
        return None
    return [list(r) for r in rethresholds.entry_ranges(start, size - len(mdformat.RESULTS_TAIL), part_bytes)]


def run_rethreshold(task_id: str, threshold: float, variant: str, settings: Settings,
                    store: BlobStore, part_bytes: int | None = None) -> c.RethresholdOutput:
    """Write the variant's CSV at ``threshold`` beside its own CSV and replace its preview sample; for a results file
    larger than ``part_bytes`` (``PART_BYTES``), answer the ranges its parts pass over instead (``parts``)."""
    container = settings.container
    old = _old_sample(store, container, task_id, variant)
    csv_name = layout.threshold_csv_blob(task_id, threshold, variant)
    ranges = _entry_ranges(store, container, layout.results_blob(task_id, variant),
                           PART_BYTES if part_bytes is None else part_bytes)
    if ranges is not None:
        logger.info("task %s: threshold %s%s over %d parts in parallel", task_id, threshold,
                    f" ({variant})" if variant else "", len(ranges))
        return {"variant": variant, "threshold": threshold, "csv_blob": csv_name, "images": 0, "counts": {},
                "parts": ranges}
    sampler = PreviewSampler(task_id, threshold)
    images = 0
    # read from its blob and written to its blob as it goes: nothing on the instance's local disk (core.scratch)
    try:
        results = open_blob(store, container, layout.results_blob(task_id, variant))
    except ResourceNotFoundError:
        raise ResultsNotFound(f"{container}/{layout.results_blob(task_id, variant)} does not exist",
                              "a threshold is applied to a finished results file: wait for the merge") from None
    with results, BlockBlobWriter(store, container, csv_name, "text/csv; charset=utf-8") as table_file:
        table = io.TextIOWrapper(io.BufferedWriter(table_file, 1 << 16), encoding="utf-8", newline="",
                                 write_through=True)
        rows = csv.writer(table)
        rows.writerow(CSV_COLUMNS)
        for entry in mdformat.iter_images(results):
            sampler.add(entry)
            rows.writerow(csv_row(entry, threshold))
            images += 1
        table.flush()
    _write_sample(store, container, task_id, variant, old, sampler, images)
    logger.info("task %s: %d images at threshold %s%s: %s", task_id, images, threshold,
                f" ({variant})" if variant else "", sampler.totals)
    return {"variant": variant, "threshold": threshold, "csv_blob": csv_name, "images": images,
            "counts": dict(sampler.totals)}


def _part_blob(task_id: str, threshold: float, variant: str, part: int, kind: str) -> str:
    return f"{layout.rethreshold_work_prefix(task_id, threshold, variant)}part-{part:05d}.{kind}"


def run_rethreshold_part(payload: c.RethresholdPartInput, settings: Settings,
                         store: BlobStore) -> c.RethresholdPartOutput:
    """One part's CSV rows and sampler state: the entries whose line starts in its byte range, read by ranges."""
    task_id, threshold, variant, part = payload["task_id"], float(payload["threshold"]), payload["variant"], \
        payload["part"]
    container, name = settings.container, layout.results_blob(task_id, variant)
    sampler = PreviewSampler(task_id, threshold)
    images = 0
    with BlockBlobWriter(store, container, _part_blob(task_id, threshold, variant, part, "csv"),
                         "text/csv; charset=utf-8") as table_file:  # streamed: nothing on the local disk
        table = io.TextIOWrapper(io.BufferedWriter(table_file, 1 << 16), encoding="utf-8", newline="",
                                 write_through=True)
        rows = csv.writer(table)
        size = store.size_or_none(container, name)
        if size is None:
            raise TrapbatchError(f"task {task_id}: results {container}/{name} are gone",
                                 "the task's results were deleted while it re-rendered; ask again if they are back")
        lines = rethresholds.owned_lines(lambda offset, length: read_range(store, container, name, offset, length),
                                         payload["offset"], payload["length"], size)
        for line in lines:
            text = line.strip().rstrip(b",")
            if not text:
                continue
            entry = jsonio.loads(text)
            if not isinstance(entry, dict):
                raise ValueError(f"{name}: a line at part {part} is not an entry: the file is not in the merge's "
                                 "layout")
            sampler.add(entry)
            rows.writerow(csv_row(entry, threshold))
            images += 1
        table.flush()
        written = table_file.bytes_written
    store.write_bytes(container, _part_blob(task_id, threshold, variant, part, "sample.json"),
                      json.dumps(sampler.state(), ensure_ascii=False).encode("utf-8"), "application/json")
    return {"part": part, "images": images, "csv_bytes": written}


def run_rethreshold_combine(payload: c.RethresholdCombineInput, settings: Settings,
                            store: BlobStore) -> c.RethresholdOutput:
    """The CSV composed from the parts' rows (server side where the service can), the preview sample from their
    states: the single pass's bytes. Leaves the parts' work for ``run_rethreshold_clean`` (a combine run again, as
    Durable's at-least-once delivery allows, must find it)."""
    task_id, threshold, variant, parts = payload["task_id"], float(payload["threshold"]), payload["variant"], \
        payload["parts"]
    container = settings.container
    old = _old_sample(store, container, task_id, variant)
    csv_name = layout.threshold_csv_blob(task_id, threshold, variant)
    compose_blob(store, container, csv_name, [_csv_header(), *[
        (_part_blob(task_id, threshold, variant, p["part"], "csv"), 0, p["csv_bytes"]) for p in parts
        if p["csv_bytes"]]], "text/csv; charset=utf-8")
    sampler = PreviewSampler(task_id, threshold)
    for p in parts:
        sampler.absorb(store.read_json(container, _part_blob(task_id, threshold, variant, p["part"], "sample.json")))
    images = sum(p["images"] for p in parts)
    _write_sample(store, container, task_id, variant, old, sampler, images)
    logger.info("task %s: %d images at threshold %s%s from %d parts: %s", task_id, images, threshold,
                f" ({variant})" if variant else "", len(parts), sampler.totals)
    return {"variant": variant, "threshold": threshold, "csv_blob": csv_name, "images": images,
            "counts": dict(sampler.totals)}


def run_rethreshold_clean(payload: c.RethresholdInput, settings: Settings, store: BlobStore) -> int:
    """Delete the parts' work (idempotent: nothing left is nothing to delete)."""
    return delete_prefix(store, settings.container, layout.rethreshold_work_prefix(
        payload["task_id"], float(payload["threshold"]), payload["variant"]))


def _csv_header() -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out).writerow(CSV_COLUMNS)
    return out.getvalue().encode("utf-8")


@bp.activity_trigger(input_name="payload", activity=c.RETHRESHOLD_PART)
@failures_without_secrets
def rethreshold_part(payload: c.RethresholdPartInput) -> c.RethresholdPartOutput:
    s = clients.settings()
    return run_rethreshold_part(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.RETHRESHOLD_COMBINE)
@failures_without_secrets
def rethreshold_combine(payload: c.RethresholdCombineInput) -> c.RethresholdOutput:
    s = clients.settings()
    return run_rethreshold_combine(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.RETHRESHOLD_CLEAN)
@failures_without_secrets
def rethreshold_clean(payload: c.RethresholdInput) -> int:
    s = clients.settings()
    return run_rethreshold_clean(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.RETHRESHOLD)
@failures_without_secrets
def rethreshold_results(payload: c.RethresholdInput) -> c.RethresholdOutput:
    s = clients.settings()
    return run_rethreshold(payload["task_id"], float(payload["threshold"]), payload.get("variant", ""), s,
                           clients.store(s))
