"""Fan-in: stream every shard's results into one MegaDetector format-1.6 file.

Why streamed: at 10M images the merged document is gigabytes; entries are written shard by shard to a temporary file
and uploaded once, so memory holds one shard at a time. Idempotent: the same shard results and the same
``completed_at`` (passed in by the orchestrator, never read from the clock here) give the same bytes.
Every image of every manifest appears exactly once: results from later attempts fill what earlier ones missed, and
images no attempt covered get a ``failure`` entry (never silently dropped). The same pass draws the preview page's
per-category samples (``core.previewsample``) into a small side blob, so the preview step never reads the big file,
looks for repeated detections (``core.repeats``, MegaDetector's RDE phase 1) for the preview site to list, and writes
the one-row-per-image CSV (``core.exports``) beside the JSON.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import tempfile
from typing import Any, Iterator

import azure.durable_functions as df
from azure.storage.blob import ContentSettings

from activities import context
from activities.enumerate import enumeration_blob
from adapters.blobs import BlobStore
from core import mdformat
from core.exports import CSV_COLUMNS, csv_row
from core.ids import shard_id
from core.previewsample import PreviewSampler
from core.repeats import RepeatFinder, RepeatRemoval
from core.settings import Settings
from gpu_batch.manifest import manifest_blob_name

logger = logging.getLogger(__name__)
bp = df.Blueprint()
_ATTEMPT_RE = re.compile(r"/attempt-(\d+)\.results\.json$")


# Variants of a task's results: "" the merged detections; "repeats-removed" the same with the repeated detections a
# person chose to remove marked as false positives (``core.repeats.RepeatRemoval``).
REPEATS_REMOVED = "repeats-removed"


def results_blob(task_id: str, variant: str = "") -> str:
    return f"results/{task_id}/detections{'.' + variant if variant else ''}.json"


def csv_blob(task_id: str, variant: str = "") -> str:
    return f"results/{task_id}/detections{'.' + variant if variant else ''}.csv"


def preview_sample_blob(task_id: str, variant: str = "") -> str:
    return f"results/{task_id}/preview-sample{'.' + variant if variant else ''}.json"


def repeats_blob(task_id: str) -> str:
    return f"results/{task_id}/repeated-detections.json"


def shard_attempt_results(store: BlobStore, settings: Settings, task_id: str, sid: str) -> Iterator[list[dict[str, Any]]]:
    """Result entries of each attempt of a shard, oldest attempt first; unreadable results count as none."""
    attempts: list[tuple[int, str]] = []
    for name in store.list_names(settings.container, f"tasks/{task_id}/shards/{sid}/"):
        m = _ATTEMPT_RE.search(name)
        if m:
            attempts.append((int(m.group(1)), name))
    for attempt, name in sorted(attempts):
        try:
            doc = json.loads(store.read_bytes(settings.container, name))
            entries = doc.get("images") if isinstance(doc, dict) else None
        except (ValueError, UnicodeDecodeError):
            entries = None
        if not isinstance(entries, list):
            logger.warning("task %s shard %s attempt %d: results are not valid JSON; ignoring them", task_id, sid, attempt)
            continue
        yield [e for e in entries if isinstance(e, dict)]


def run_merge(task_id: str, model: str, completed_at: str, settings: Settings, store: BlobStore,
              removal: RepeatRemoval | None = None, removed_ids: list[str] | None = None) -> dict[str, Any]:
    """Merge every shard's results; with ``removal``, write the repeats-removed variant instead (no new search)."""
    variant = REPEATS_REMOVED if removal is not None else ""
    enumeration = store.read_json(settings.container, enumeration_blob(task_id))
    counts = {"images": 0, "failed": 0, "with_detections": 0, "detections": 0, "empty": 0, "missing": 0}
    info = {
        "detector": model.rsplit("/", 1)[-1] or "unknown",
        "detection_completion_time": completed_at,
        "format_version": mdformat.FORMAT_VERSION,
        "trapbatch": {"task_id": task_id, "container": enumeration.get("container"),
                      "prefix": enumeration.get("prefix", "")},
    }
    if removal is not None:
        info["trapbatch"]["repeated_detections_removed"] = {  # type: ignore[index]
            "locations": list(removed_ids or []), "blob": repeats_blob(task_id),
            "how": "confidence negated, as MegaDetector's repeat detection elimination does"}
    sampler = PreviewSampler(task_id, settings.preview_threshold)
    repeats = RepeatFinder() if removal is None else None
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as table_file:
        table = io.TextIOWrapper(table_file, encoding="utf-8", newline="", write_through=True)
        rows = csv.writer(table)
        rows.writerow(CSV_COLUMNS)
        head = json.dumps({"info": info, "detection_categories": mdformat.DETECTION_CATEGORIES}, indent=1)
        out.write((head[:-2] + ',\n "images": [').encode("utf-8"))
        first = True
        for index in range(int(enumeration["shards"])):
            sid = shard_id(index)
            manifest = store.read_json(settings.container, manifest_blob_name(task_id, sid, 1))
            entries, missing = mdformat.merge_entries(manifest["images"],
                                                      shard_attempt_results(store, settings, task_id, sid))
            counts["missing"] += missing
            if removal is not None:
                entries = [removal.apply(e) for e in entries]
            for key, value in mdformat.summarize(entries, settings.preview_threshold).items():
                counts[key] += value
            for entry in entries:
                sampler.add(entry)
                if repeats is not None:
                    repeats.add(entry)
                out.write((("\n  " if first else ",\n  ") + json.dumps(entry, ensure_ascii=False)).encode("utf-8"))
                rows.writerow(csv_row(entry, settings.preview_threshold))
                first = False
        out.write(b"\n ]\n}\n")
        out.seek(0)
        store.service.get_blob_client(settings.container, results_blob(task_id, variant)).upload_blob(
            out, overwrite=True)
        table.flush()
        table_file.seek(0)
        store.service.get_blob_client(settings.container, csv_blob(task_id, variant)).upload_blob(
            table_file, overwrite=True, content_settings=ContentSettings(content_type="text/csv; charset=utf-8"))
        table.detach()  # the temporary file closes itself
    sample = {**sampler.result(), "info": info, "detection_categories": mdformat.DETECTION_CATEGORIES,
              "images": counts["images"]}
    store.write_bytes(settings.container, preview_sample_blob(task_id, variant),
                      json.dumps(sample, ensure_ascii=False).encode("utf-8"), "application/json")
    if repeats is not None:
        found = repeats.result()
        store.write_bytes(settings.container, repeats_blob(task_id), json.dumps(
            {"task_id": task_id, **found}, ensure_ascii=False).encode("utf-8"), "application/json")
        counts["repeated_locations"] = len(found["locations"])
    else:
        assert removal is not None
        counts["detections_marked"] = removal.marked
    logger.info("task %s: merged %d images (%d failed, %d missing)%s", task_id, counts["images"], counts["failed"],
                counts["missing"], f", {removal.marked} repeated detections marked" if removal is not None else "")
    return {"results_blob": results_blob(task_id, variant), "csv_blob": csv_blob(task_id, variant),
            "repeats_blob": repeats_blob(task_id),
            "container": settings.container, **counts}


def run_remove_repeats(task_id: str, model: str, completed_at: str, remove: list[str], settings: Settings,
                       store: BlobStore) -> dict[str, Any]:
    """The repeats-removed variant of a task's results, for the location ids in ``remove``."""
    found = store.read_json(settings.container, repeats_blob(task_id))
    chosen = [loc for loc in found["locations"] if loc["id"] in set(remove)]
    return run_merge(task_id, model, completed_at, settings, store, RepeatRemoval(chosen), sorted(remove))


@bp.activity_trigger(input_name="payload", activity="merge_results")
def merge_results(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    return run_merge(payload["task_id"], payload["model"], payload["completed_at"], s, context.store(s))


@bp.activity_trigger(input_name="payload", activity="remove_repeated_detections")
def remove_repeated_detections(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    return run_remove_repeats(payload["task_id"], payload["model"], payload["completed_at"], payload["remove"], s,
                              context.store(s))
