"""Fan-in: stream every shard's results into one MegaDetector format-1.6 file.

Why streamed: at 10M images the merged document is gigabytes; entries are written shard by shard to a temporary file
and uploaded once, so memory holds one shard at a time. Idempotent: the same shard results and the same
``completed_at`` (passed in by the orchestrator, never read from the clock here) give the same bytes.
Every image of every manifest appears exactly once: results from later attempts fill what earlier ones missed, and
images no attempt covered get a ``failure`` entry (never silently dropped). The same pass draws the preview page's
per-category samples (``gpu_batch.formats.previewsample``) into a small side blob, so the preview step never reads the
big file, looks for repeated detections (``core.repeats``, MegaDetector's RDE phase 1) for the preview site to list, and
writes the one-row-per-image CSV (``gpu_batch.formats.detections_csv``) beside the JSON.

Since the parallel fan-in (``orchestrations.fanin``, ``activities.fanin``) new orchestrations no longer call these
activities: one activity over every shard takes ~190 us per image, hours for ten million images. They stay
registered for orchestrations started before (their history names them), and ``run_merge`` /
``run_remove_repeats`` are the reference the fan-in is tested against byte for byte (tests/integration/test_fanin.py);
the fan-in reuses ``_merged_shard`` and ``_results_info`` so both read shards and describe results the same way.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import tempfile
from typing import Any

import azure.durable_functions as df

from activities.decided import task_settings
from activities.shard_results import shard_attempt_results, shard_blobs, shard_manifest
from adapters import clients
from adapters.blobs import BlobStore
from core import contracts as c
from core import fanin, mdformat
from core.failures import failures_without_secrets
from core.repeats import RepeatFinder, RepeatOptions, RepeatRemoval
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats.detections_csv import CSV_COLUMNS, csv_row
from gpu_batch.formats.previewsample import PreviewSampler
from gpu_batch.layout import REPEATS_REMOVED
from gpu_batch.manifest import REASON_LISTED_NOT_FOUND

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def task_threshold(store: BlobStore, settings: Settings, task_id: str, model: str) -> float:
    """The threshold of the task's CSV and preview (and exports): its request's ``preview_threshold``, else the app's
    setting, else the model's typical threshold (``Settings.threshold_for``)."""
    request = store.read_json_or_none(settings.container, layout.request_blob(task_id)) or {}
    return settings.threshold_for(model, request.get("preview_threshold"))


def _results_info(task_id: str, model: str, completed_at: str, enumeration: dict[str, Any],
                  removed_ids: list[str] | None, failure_reasons: dict[str, int] | None = None) -> dict[str, Any]:
    """The ``info`` block of the results file (and of the preview sample, which the page reads it from).

    ``detector_metadata`` as MegaDetector writes it (Timelapse and MegaDetector's tools read default thresholds from
    it); ``trapbatch.failure_reasons`` counts the failed images by reason (``gpu_batch.manifest``);
    ``trapbatch.not_images`` says which files the listing passed over (``core.notimages``), so the results file
    itself tells what it does not cover."""
    trapbatch: dict[str, Any] = {"task_id": task_id, "container": enumeration.get("container"),
                                 "prefix": enumeration.get("prefix", "")}
    if failure_reasons is not None:
        trapbatch["failure_reasons"] = dict(sorted(failure_reasons.items()))
    if enumeration.get("not_images"):  # files the listing passed over, by kind with examples (core.notimages)
        trapbatch["not_images"] = enumeration["not_images"]
    listed = enumeration.get("image_list")
    if isinstance(listed, dict):  # the explicit list the images came from (core.imagelist)
        trapbatch["image_list"] = {k: listed.get(k) for k in ("blob", "sha256", "rows", "excluded", "not_found")}
    if removed_ids is not None:
        trapbatch["repeated_detections_removed"] = {
            "locations": list(removed_ids), "blob": layout.repeats_blob(task_id),
            "how": "confidence negated, as MegaDetector's repeat detection elimination does"}
    return {"detector": mdformat.detector_file(model),
            "detection_completion_time": mdformat.completion_time(completed_at),
            "format_version": mdformat.FORMAT_VERSION, "detector_metadata": mdformat.detector_metadata(model),
            "trapbatch": trapbatch}


class _MergeStreams:
    """The two files the merge streams into (the results JSON and the CSV), and everything that watches the entries.

    Why a class: one pass over the shards feeds the JSON, the CSV, the counts, the preview sampler and the repeat
    search; holding them together keeps that pass a short loop (``add``) and memory bounded by one shard.
    """

    def __init__(self, threshold: float, sampler: PreviewSampler, repeats: RepeatFinder | None) -> None:
        self.threshold = threshold
        self.sampler = sampler
        self.repeats = repeats
        self.counts = {"images": 0, "failed": 0, "with_detections": 0, "detections": 0, "empty": 0, "missing": 0}
        self.failure_reasons: dict[str, int] = {}
        self.out = tempfile.TemporaryFile("w+b")
        self.table_file = tempfile.TemporaryFile("w+b")
        self.table = io.TextIOWrapper(self.table_file, encoding="utf-8", newline="", write_through=True)
        self.rows = csv.writer(self.table)
        self.rows.writerow(CSV_COLUMNS)
        self.first = True  # the head is written at upload, once the failure counts for ``info`` are known

    def add(self, entries: list[dict[str, Any]], missing: int) -> None:
        self.counts["missing"] += missing
        for key, value in mdformat.summarize(entries, self.threshold).items():
            self.counts[key] += value
        for reason, n in mdformat.failure_counts(entries).items():
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + n
        for entry in entries:
            self.sampler.add(entry)
            if self.repeats is not None:
                self.repeats.add(entry)
            self.out.write((b"\n  " if self.first else fanin.ENTRY_SEPARATOR) + fanin.entry_json(entry))
            self.rows.writerow(csv_row(entry, self.threshold))
            self.first = False

    def upload(self, store: BlobStore, container: str, results_name: str, csv_name: str,
               info: dict[str, Any]) -> None:
        self.out.write(b"\n ]\n}\n")
        self.out.seek(0)
        with tempfile.TemporaryFile("w+b") as whole:
            head = json.dumps({"info": info, "detection_categories": mdformat.DETECTION_CATEGORIES}, indent=1)
            whole.write((head[:-2] + ',\n "images": [').encode("utf-8"))
            shutil.copyfileobj(self.out, whole, 8 * 1024 * 1024)
            whole.seek(0)
            store.upload_file(container, results_name, whole)
        self.table.flush()
        self.table_file.seek(0)
        store.upload_file(container, csv_name, self.table_file, "text/csv; charset=utf-8")

    def close(self) -> None:
        self.table.detach()  # the temporary file closes itself
        self.out.close()
        self.table_file.close()


def _merged_shard(store: BlobStore, settings: Settings, task_id: str, index: int,
                  removal: RepeatRemoval | None, listed: set[str] | None = None,
                  damaged: set[str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """One shard's entries (each manifest image exactly once, later attempts filling gaps, then the image list's names
    not found that the shard reports, ``activities.image_list``) and how many are missing. ``listed``: the shard's
    blob names, when the caller listed them already. ``damaged``, when given, gains the photos cut short that the
    attempts' results name (``shard_attempt_results``: from the documents read here anyway)."""
    sid = layout.shard_id(index)
    # after the shards ran: nothing is written there any more
    names = listed if listed is not None else shard_blobs(store, settings, task_id, sid)
    manifest = shard_manifest(store, settings, task_id, sid, names)  # every image, reused ones (attempt 0) included
    entries, missing = mdformat.merge_entries(manifest["images"],
                                              shard_attempt_results(store, settings, task_id, sid, names, damaged))
    list_name = layout.shard_list_blob(task_id, sid)
    listed = store.read_json_or_none(settings.container, list_name) if list_name in names else None
    if listed:  # an image list's names the container did not hold: failed entries, after the shard's own images
        entries += [mdformat.failure_entry(name, mdformat.FAILURE_IMAGE_ACCESS, REASON_LISTED_NOT_FOUND)
                    for name in listed.get("not_found", [])]
    if removal is not None:
        entries = [removal.apply(e) for e in entries]
    return entries, missing


def run_merge(task_id: str, model: str, completed_at: str, settings: Settings, store: BlobStore,
              removal: RepeatRemoval | None = None, removed_ids: list[str] | None = None) -> c.MergeOutput:
    """Merge every shard's results; with ``removal``, write the repeats-removed variant instead (no new search)."""
    variant = REPEATS_REMOVED if removal is not None else ""
    settings = task_settings(settings, store, task_id)  # the threshold its run decided (activities.decided)
    enumeration = store.read_json(settings.container, layout.enumeration_blob(task_id))
    threshold = task_threshold(store, settings, task_id, model)
    sampler = PreviewSampler(task_id, threshold)
    finder = RepeatFinder(RepeatOptions(max_folder_detections=settings.knobs.repeat_max_folder_detections))
    streams = _MergeStreams(threshold, sampler, finder if removal is None else None)
    try:
        for index in range(int(enumeration["shards"])):
            streams.add(*_merged_shard(store, settings, task_id, index, removal))
        failure_reasons = dict(sorted(streams.failure_reasons.items()))
        info = _results_info(task_id, model, completed_at, enumeration,
                             (removed_ids or []) if removal is not None else None, failure_reasons)
        streams.upload(store, settings.container, layout.results_blob(task_id, variant),
                       layout.csv_blob(task_id, variant), info)
    finally:
        streams.close()
    counts: dict[str, int] = streams.counts
    sample = {**sampler.result(), "info": {**info, "failure_reasons": failure_reasons},
              "detection_categories": mdformat.DETECTION_CATEGORIES, "images": counts["images"]}
    store.write_bytes(settings.container, layout.preview_sample_blob(task_id, variant),
                      json.dumps(sample, ensure_ascii=False).encode("utf-8"), "application/json")
    if streams.repeats is not None:
        found = streams.repeats.result(task_id)
        store.write_bytes(settings.container, layout.repeats_blob(task_id), json.dumps(
            {"task_id": task_id, **found}, ensure_ascii=False).encode("utf-8"), "application/json")
        counts["repeated_locations"] = len(found["locations"])
        if found.get("skipped_folders"):  # folders over max_folder_detections, as the fan-in reports them
            counts["repeat_folders_skipped"] = found["skipped_folders"]["folders"]
            counts["repeat_detections_skipped"] = found["skipped_folders"]["detections"]
    else:
        assert removal is not None
        counts["detections_marked"] = removal.marked
    logger.info("task %s: merged %d images (%d failed, %d missing)%s", task_id, counts["images"], counts["failed"],
                counts["missing"], f", {removal.marked} repeated detections marked" if removal is not None else "")
    return {"results_blob": layout.results_blob(task_id, variant), "csv_blob": layout.csv_blob(task_id, variant),
            "repeats_blob": layout.repeats_blob(task_id), "failure_reasons": failure_reasons,
            "container": settings.container, **counts}  # type: ignore[typeddict-item]


def run_remove_repeats(task_id: str, model: str, completed_at: str, remove: list[str], settings: Settings,
                       store: BlobStore) -> c.MergeOutput:
    """The repeats-removed variant of a task's results, for the location ids in ``remove``."""
    found = store.read_json(settings.container, layout.repeats_blob(task_id))
    chosen = [loc for loc in found["locations"] if loc["id"] in set(remove)]
    removal = RepeatRemoval(chosen, RepeatOptions.from_dict(found.get("options") or {}))  # the list's own options
    return run_merge(task_id, model, completed_at, settings, store, removal, sorted(remove))


@bp.activity_trigger(input_name="payload", activity=c.MERGE)
@failures_without_secrets
def merge_results(payload: c.MergeInput) -> c.MergeOutput:
    s = clients.settings()
    return run_merge(payload["task_id"], payload["model"], payload["completed_at"], s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.REMOVE_REPEATS)
@failures_without_secrets
def remove_repeated_detections(payload: c.RemoveRepeatsInput) -> c.MergeOutput:
    s = clients.settings()
    return run_remove_repeats(payload["task_id"], payload["model"], payload["completed_at"], payload["remove"], s,
                              clients.store(s))
