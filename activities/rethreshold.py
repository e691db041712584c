"""A finished task's CSV and preview sample at another threshold (``POST /api/tasks/{id}/previews``).

Why a pass over the results file: the CSV counts the detections of each image at the threshold, which no summary
kept by the merge holds; the same pass draws the preview sample again (``gpu_batch.formats.previewsample``, seeded by
the task id, so the sections hold the sample the merge would have drawn at this threshold, and the counts are exact).
Memory stays bounded: the results are downloaded to a temporary file and read one entry at a time
(``core.mdformat.iter_images``), the CSV is written to a temporary file and uploaded in blocks. Scale: one activity,
like the exports (activities/exports.py), so about two million images fit in the app's ``functionTimeout``; larger tasks
need the pass split by byte ranges of the results, not done yet.

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
import tempfile

import azure.durable_functions as df

from adapters import clients
from adapters.blob_files import download_to
from adapters.blobs import BlobStore
from core import contracts as c
from core import mdformat
from core.errors import TrapbatchError
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats.detections_csv import CSV_COLUMNS, csv_row
from gpu_batch.formats.previewsample import PreviewSampler

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def run_rethreshold(task_id: str, threshold: float, variant: str, settings: Settings,
                    store: BlobStore) -> c.RethresholdOutput:
    """Write the variant's CSV at ``threshold`` beside its own CSV and replace its preview sample."""
    container = settings.container
    old = store.read_json_or_none(container, layout.preview_sample_blob(task_id, variant))
    if old is None:
        raise TrapbatchError(f"task {task_id} has no preview sample ({container}/"
                             f"{layout.preview_sample_blob(task_id, variant)})", "the merge writes it; run it first")
    sampler = PreviewSampler(task_id, threshold)
    images = 0
    csv_name = layout.threshold_csv_blob(task_id, threshold, variant)
    with tempfile.TemporaryFile("w+b") as results, tempfile.TemporaryFile("w+b") as table_file:
        download_to(store, container, layout.results_blob(task_id, variant), results)
        results.seek(0)
        table = io.TextIOWrapper(table_file, encoding="utf-8", newline="", write_through=True)
        rows = csv.writer(table)
        rows.writerow(CSV_COLUMNS)
        for entry in mdformat.iter_images(results):
            sampler.add(entry)
            rows.writerow(csv_row(entry, threshold))
            images += 1
        table.flush()
        table_file.seek(0)
        store.upload_file(container, csv_name, table_file, "text/csv; charset=utf-8")
        table.detach()
    sample = {**sampler.result(), "info": old.get("info", {}),
              "detection_categories": old.get("detection_categories", mdformat.DETECTION_CATEGORIES), "images": images}
    store.write_bytes(container, layout.preview_sample_blob(task_id, variant),
                      json.dumps(sample, ensure_ascii=False).encode("utf-8"), "application/json")
    logger.info("task %s: %d images at threshold %s%s: %s", task_id, images, threshold,
                f" ({variant})" if variant else "", sampler.totals)
    return {"variant": variant, "threshold": threshold, "csv_blob": csv_name, "images": images,
            "counts": dict(sampler.totals)}


@bp.activity_trigger(input_name="payload", activity=c.RETHRESHOLD)
def rethreshold_results(payload: c.RethresholdInput) -> c.RethresholdOutput:
    s = clients.settings()
    return run_rethreshold(payload["task_id"], float(payload["threshold"]), payload.get("variant", ""), s,
                           clients.store(s))
