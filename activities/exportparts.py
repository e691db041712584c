"""The exports fanned out: parts over the merge parts' ranges of the results, a combine, the Zooniverse batches.

Why: one exports activity (``activities.exports``) handles about 1.9M images within ``functionTimeout``; a
ten-million-image task needs every step bounded, and it spools every format to the instance's small local disk
(``core.scratch``). ``orchestrations.exports`` runs these instead, for one merge part too (a merge recorded before
that keeps the single activity on replay):

* ``run_exports_part``: one merge part's entries (``core.exportparts.part_ranges``: a byte range of the results,
  one entry per line), exactly as the single activity treats them (image sizes from the entries, a ranged header
  read only for an entry without them; the image list's rows from the part's first shard on), written as four
  fragments (COCO images and annotations, each item with its leading comma; Camtrap DP media and observations rows)
  plus the part's deployment facts, and its timed images' event records (``core.camtrap_events``, 50 bytes an
  image, read from the Camtrap DP lines it writes). The entries are read by ranges and the fragments streamed to
  their blobs as written, the workers' view lines straight into them (``ViewLines(direct=...)``): nothing on the
  local disk.
  Memory: a few 2 MiB slices of one shard's view (``mergeview.STREAMED``: 24-40 MB of heap in all for shards of
  10,000-100,000 images, where a 100,000-image shard's view held whole took 226 MB: ``bench/exports_memory.py``) or
  one entry at a time, the fragments' blocks (4 x 4 MB), and the event records (~0.18 kB an image of the part).
* ``run_exports_combine``: composes ``coco.json``, ``media.csv`` and ``observations.csv`` from the fragments with
  ``adapters.compose`` (server side where the service allows; a part's observations and COCO images as
  ``activities.exportevents`` linked them to their events, its media rows as it gave photos without a capture time
  their deployment's first), writes ``deployments.csv`` and ``datapackage.json``
  from the combined deployments,
  appends the event-level observations ``exports_events`` grouped from every part's records (a camera's images may
  be in several parts; for parts recorded before that step, it groups them itself, unlinked); the fragments stay
  until ``exports_zooniverse_clean``. When the parts' deployment
  facts conflict (``core.exportparts.conflicts``) it writes nothing and says so: the parts named run again.
* ``run_exports_zooniverse``: the Zooniverse batches as one activity over the whole results, for orchestrations
  whose combine ran before the Zooniverse fan-out (its output has no ``zooniverse_parts``); newer ones fan out
  (``activities.zooniverseparts``).

Same bytes as the single activity (tests/integration/test_exports_fanout.py). Idempotent.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from contextlib import ExitStack
from typing import Any, Iterable, Iterator, Mapping

import azure.durable_functions as df
from azure.core.exceptions import ResourceNotFoundError

from activities.decided import task_settings
from activities.exports import (CameraDaysWriter, LineBuffer, ListMetadata, ViewLines, _write_zooniverse,
                               count_size_unknown, needs_no_size, prepare, read_results_head, sized,
                               sizes_unknown_why, unmatched_clock_corrections, write_camera_visits,
                               write_descriptor, write_events)
from activities.fanin import iter_export_views, range_lines
from activities.shard_results import shards_damaged
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.block_writer import BlockBlobWriter, open_blob
from adapters.blob_files import ResultsNotFound
from adapters.blobs import BlobStore
from adapters.compose import Piece, compose_blob
from adapters.image_sizes import SizeMisses
from core import contracts as c
from core import camtrap_events, exportparts, mdformat, zooniverse
from core.failures import failures_without_secrets
from core.fanin import json_ranges
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import camtrapdp, coco, jsonio
from gpu_batch.formats.entries import mark_cut_short
from gpu_batch.formats.zooniverse_rows import left_out_cut_short
from gpu_batch.formats.mergeview import STREAMED

logger = logging.getLogger(__name__)
bp = df.Blueprint()
FRAGMENTS = ("images", "annotations", "media", "observations")
EVENTS = "events"  # the part's event records (core.camtrap_events.EventRecords), beside the fragments
INDEX = "event-index"  # the part's share of the events' index (activities.exportevents)
LINKED = "observations-linked"  # the part's observations with their events' ids (activities.exportevents)
FRAMES = "event-frames"  # the part's time-grouped photos' places in their events (activities.exportevents)
IMAGES_LINKED = "images-linked"  # the part's COCO images with seq_id, seq_num_frames, frame_num (the same)
# the stand-in (a second before the first capture time) of each deployment whose photos without one the part
# holds (activities.exportevents), and
# the part's media rows with those times in (camtrapdp.stand_in_media)
STAND_INS = "stand-ins"
MEDIA_LINKED = "media-linked"
# The part's deployment facts (``CamtrapBuilder.deployment_facts``, JSON), beside the fragments: a row per camera
# folder, 100-190 bytes each, so 10-19 MB for a ten-million-image task in 100-image folders. They went through the
# part's output, and so twice into the task orchestrator's history (the part's result, the combine's input), which
# every later replay of the task reads again; now only the blob's size does.
DEPLOYMENTS = "deployments"
EVENT_ROWS = "events.csv"  # the event rows, in the work folder (appended to observations.csv)
FRAGMENT_BLOCK_BYTES = 4 * 1024 * 1024  # each fragment's block in memory while it is written


def _work(task_id: str, variant: str) -> str:
    return layout.exports_prefix(task_id, variant) + ".parts/"


def work_prefix(task_id: str, variant: str) -> str:
    """Where the parts' fragments are, until ``exports_zooniverse_clean`` deletes them."""
    return _work(task_id, variant)


def _fragment(task_id: str, variant: str, part: int, name: str) -> str:
    return f"{_work(task_id, variant)}{part:05d}.{name}"


def _given(task_id: str, variant: str) -> str:
    """The deployments' first facts a combine found the parts disagree on (``core.exportparts.first_facts``)."""
    return f"{_work(task_id, variant)}deployments.json"


def _lines(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The entries of a byte range of the results (whole lines: ``activities.fanin.range_lines``)."""
    for line in lines:
        text = line.strip().rstrip(b",")
        if text:
            entry = jsonio.loads(text)
            if isinstance(entry, dict):
                yield entry


def run_exports_part(payload: c.ExportsPartInput, settings: Settings, store: BlobStore,
                     source: BlobStore | None = None) -> c.ExportsPartOutput:
    task_id, variant, part = payload["task_id"], payload["variant"], payload["part"]
    refuse_if_superseded(store, settings, payload, "an exports part")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    results_name = layout.results_blob(task_id, variant)
    head, start = read_results_head(store, container, results_name)
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    # run again after a combine found its deployments' first facts differ from the task's: start from the task's
    camtrap = ctx.camtrap(store.read_json(container, _given(task_id, variant)) if payload.get("given") else None)
    counts = {"eligible": 0, "sizes_unknown": 0, "cut_short": 0}
    misses = SizeMisses()
    sizes: dict[str, int] = {}
    # the fragments stream into their blobs as written, the entries from theirs: nothing on the instance's local
    # disk, which eight activities share (core.scratch; a part's fragments are ~1 kB an image)
    with ExitStack() as stack:
        files = {k: stack.enter_context(BlockBlobWriter(store, container, _fragment(task_id, variant, part, k),
                                                        "application/octet-stream", FRAGMENT_BLOCK_BYTES))
                 for k in FRAGMENTS}
        buffered = {k: io.BufferedWriter(f, 1 << 16) for k, f in files.items()}
        text = {k: io.TextIOWrapper(buffered[k], encoding="utf-8", newline="", write_through=True)
                for k in FRAGMENTS}
        writer = coco.CocoWriter(text["images"], text["annotations"], ctx.cut, ctx.categories, continued=True,
                                 cameras=ctx.cameras())
        media, observations = LineBuffer(text["media"]), LineBuffer(text["observations"])

        def needs_size(entry: dict[str, Any]) -> str | None:
            if not settings.export_image_sizes or entry.get("failure") is not None or coco.entry_size(entry):
                return None
            return str(entry.get("file"))

        listed = ListMetadata(store, container, task_id, ctx.list_shards, payload["first_shard"])
        tap = camtrap_events.EventTap()
        with ViewLines(iter_export_views(store, settings, task_id, payload["first_shard"],
                                         int(payload.get("shards", 0)), ctx.cut, ctx.plain_camtrap(), STREAMED,
                                         *ctx.view_list()), camtrap,
                       direct={k: _Fragment(buffered[k], files[k]) for k in FRAGMENTS}, events=tap) as views:
            views.write(writer, text["images"], text["annotations"], camtrap, media, observations, continued=True)
        if views.coco:
            needs_size = needs_no_size
        if views.complete:  # every format's lines are in the views (issue 11): the part's entries are not read
            counts["eligible"] = views.eligible()
        entries = (() if views.complete else
                   range_lines(store, container, results_name, start + payload["offset"], payload["length"]))
        # the part's photos cut short, marked on their entries for every format (their shards' views are not used)
        cut_short = (frozenset() if views.complete else
                     shards_damaged(store, settings, task_id, payload["first_shard"], int(payload.get("shards", 0))))
        for entry, size in (() if views.complete else sized(settings, source or store,
                                                             str(ctx.enumeration.get("container", "")),
                                                             mark_cut_short(_lines(entries), cut_short),
                                                             needs_size, misses)):
            counts["sizes_unknown"] += count_size_unknown(entry, size, needs_size, misses)
            metadata = listed.get(str(entry["file"]))
            views.add(entry, size, metadata, writer, camtrap, media, observations)
            counts["eligible"] += not zooniverse.excluded(entry)
            counts["cut_short"] += left_out_cut_short(entry)
        writer.flush()
        media.flush()
        observations.flush()
        for name, fp in files.items():
            text[name].flush()
            sizes[name] = fp.bytes_written
    # the part's timed images for the combine's event rows (core.camtrap_events: a deployment may span parts)
    events = tap.records().to_bytes()
    store.write_bytes(container, _fragment(task_id, variant, part, EVENTS), events, "application/octet-stream")
    sizes[EVENTS] = len(events)
    facts = json.dumps(camtrap.deployment_facts(), ensure_ascii=False).encode("utf-8")  # as the output was
    store.write_bytes(container, _fragment(task_id, variant, part, DEPLOYMENTS), facts, "application/json")
    sizes[DEPLOYMENTS] = len(facts)
    out: c.ExportsPartOutput = {
        "part": part, "images": writer.counts["images"], "annotations": writer.counts["annotations"],
        "observations": camtrap.counts["observations"], "eligible": counts["eligible"],
        "sizes_unknown": counts["sizes_unknown"], "bytes": sizes, "link": True, "media_base": camtrap.media_base}
    if counts["cut_short"]:
        out["zooniverse_cut_short"] = counts["cut_short"]
    if camtrap.clock_matched:
        out["clock_matched"] = sorted(camtrap.clock_matched)
    missed = misses.to_dict()
    if missed is not None:  # why, for the combine (absent: every size known)
        out["sizes_unknown_why"] = missed
    return out


def part_facts(store: BlobStore, container: str, task_id: str, variant: str,
               part: c.ExportsPartOutput) -> list[list[Any]]:
    """A part's deployment facts: from its ``DEPLOYMENTS`` fragment, or from its output where it was recorded before
    the fragment existed (a history replayed after an upgrade)."""
    if "deployments" in part:
        return part["deployments"]
    return list(json.loads(store.read_bytes(container, _fragment(task_id, variant, part["part"], DEPLOYMENTS))))


class _Fragment:
    """A fragment's stream as ``ViewLines`` writes the views' lines into it (``activities.exports.RestartableStream``):
    bytes below the text layer, in order with what the entries write later; ``restart`` drops them all."""

    def __init__(self, buffer: "io.BufferedWriter[BlockBlobWriter]", blob: BlockBlobWriter) -> None:
        self.buffer, self.blob = buffer, blob  # the buffer under the fragment's text layer, over its blob

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def restart(self) -> None:
        self.buffer.flush()
        self.blob.restart()


DEPLOYMENTS_BLOCK_BYTES = 4 * 1024 * 1024  # deployments.csv's block in memory while the combine writes it


def write_deployments(store: BlobStore, container: str, name: str, camtrap: camtrapdp.CamtrapBuilder) -> int:
    """``deployments.csv`` of the combined deployments, streamed to its blob a row at a time (``csv.writer``'s bytes,
    as ``_csv_line`` makes them); returns its size. Why: a collection in camera-day folders has a deployment per
    folder (MegaDetector's camera folder), a million at ten million images in folders of ten, and the table made
    whole (its rows, their lines, then their join: 231 MB of CSV) held ~560 MB beside the deployments (~650 MB) in the
    combine, where a Flex instance's 4 GB are shared by up to eight activities."""
    with BlockBlobWriter(store, container, name, "text/csv; charset=utf-8", DEPLOYMENTS_BLOCK_BYTES) as blob:
        text = io.TextIOWrapper(io.BufferedWriter(blob, 1 << 16), encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(camtrapdp.DEPLOYMENT_COLUMNS)
        for row in camtrap.iter_deployment_rows():
            writer.writerow(row)
        text.flush()
        text.detach().detach()  # the blob commits as the with block ends
    return blob.bytes_written


def _csv_line(row: list[Any]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out).writerow(row)
    return out.getvalue().encode("utf-8")


def _pieces(task_id: str, variant: str, parts: list[c.ExportsPartOutput], name: str, comma: bool,
            linked: Mapping[int, int] | None = None, linked_name: str = "") -> list[Piece]:
    """The parts' fragments ``name`` in order; ``comma``: the first non-empty one without its leading comma.
    ``linked``: the parts whose fragment ``linked_name`` (of that size) stands in for theirs (``exports_link_part``
    wrote it)."""
    chosen = [(linked_name, linked[p["part"]]) if linked and p["part"] in linked else (name, p["bytes"][name])
              for p in parts]
    if comma:
        return [(_fragment(task_id, variant, parts[i]["part"], chosen[i][0]), skip, length)
                for i, skip, length in json_ranges([size for _, size in chosen])]
    return [(_fragment(task_id, variant, p["part"], fragment), 0, size) for p, (fragment, size) in zip(parts, chosen)
            if size]


def _event_records(store: BlobStore, container: str, task_id: str, variant: str,
                   parts: list[c.ExportsPartOutput]) -> list[camtrap_events.EventRecords]:
    """The parts' event records; none when a part recorded before the parts wrote them (its images' times are
    unknown here, and events of the other parts alone would split or miss some)."""
    if any(EVENTS not in p["bytes"] for p in parts):
        return []
    return read_event_records(store, container, task_id, variant, [p["part"] for p in parts])


def read_event_records(store: BlobStore, container: str, task_id: str, variant: str,
                       parts: list[int]) -> list[camtrap_events.EventRecords]:
    return [camtrap_events.EventRecords.from_bytes(store.read_bytes(container, _fragment(task_id, variant, p, EVENTS)))
            for p in parts]


def run_exports_combine(payload: c.ExportsCombineInput, settings: Settings,
                        store: BlobStore) -> c.ExportsCombineOutput:
    task_id, variant, parts = payload["task_id"], payload["variant"], payload["parts"]
    refuse_if_superseded(store, settings, payload, "the exports' combine")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    facts = [part_facts(store, container, task_id, variant, p) for p in parts]
    first = exportparts.first_facts(facts)
    head, _ = read_results_head(store, container, layout.results_blob(task_id, variant))
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    redo = [parts[i]["part"] for i in exportparts.parts_to_redo(facts, first)]
    # parts whose media filePaths are not this combine's: recorded before they were URLs (no media_base: blob
    # names), or with another account or container; a package never mixes them (camtrapdp.media_url)
    other_paths = [p["part"] for p in parts if p.get("media_base", "") != ctx.media_base and p["part"] not in redo]
    if redo or other_paths:  # they run again from the task's first facts (bounded, whatever the size)
        store.write_json(container, _given(task_id, variant), first)
        if redo:
            logger.info("task %s exports: deployments %s have other first coordinates or cameras in parts %s: those "
                        "run again from the task's", task_id, exportparts.conflicts(facts), redo)
        if other_paths:
            logger.info("task %s exports: parts %s wrote media filePaths other than %s (written before filePath was "
                        "the image's URL): those run again", task_id, other_paths, ctx.media_base)
        return {"conflict": True, "redo": sorted(redo + other_paths)}
    del first  # held only to find the parts to run again: a few hundred bytes a deployment
    camtrap = ctx.camtrap()
    exportparts.combine_deployments(camtrap, facts)
    del facts  # the parts' facts, now in the deployments
    writer = coco.CocoWriter(io.StringIO(), io.StringIO(), ctx.cut, ctx.categories, cameras=ctx.cameras())
    # a linked part's images carry their events' seq_id, seq_num_frames and frame_num (activities.exportevents)
    linked_images = {int(part): int(size) for part, size in payload.get("linked_images") or []}
    compose_blob(store, container, layout.coco_blob(task_id, variant),
                 [writer.head(ctx.coco_info()).encode("utf-8"),
                  *_pieces(task_id, variant, parts, "images", True, linked_images, IMAGES_LINKED),
                  coco.IMAGES_TO_ANNOTATIONS.encode("utf-8"), *_pieces(task_id, variant, parts, "annotations", True),
                  writer.tail().encode("utf-8")], "application/json")
    # the event rows streamed to a fragment of their own (hundreds of MB at ten million images), composed last;
    # grouped by exports_events before (its output in the payload), else here (parts recorded before that step)
    events_csv = f"{_work(task_id, variant)}{EVENT_ROWS}"
    grouped = payload.get("events")
    visits: str | None = None
    if grouped is None:
        records = _event_records(store, container, task_id, variant, parts)
        with ExitStack() as stack:
            blob = stack.enter_context(BlockBlobWriter(store, container, events_csv, "application/octet-stream",
                                                       FRAGMENT_BLOCK_BYTES))
            # parts recorded before they kept event records: the days are unknown, not none (no table at all)
            days = stack.enter_context(CameraDaysWriter(store, ctx, ctx.event_interval_s(settings))) if records \
                else None
            stream = io.TextIOWrapper(io.BufferedWriter(blob, 1 << 16), encoding="utf-8", newline="")
            cameras: list[camtrap_events.CameraVisits] = []
            events, event_rows = write_events(stream, camtrap, records, ctx.event_interval_s(settings), cameras,
                                              days=days)
            stream.flush()
            stream.detach().detach()  # the blobs commit as the with block ends
        rows_bytes, camera_count = blob.bytes_written, len(cameras)
        # parts recorded before they kept event records: the visits are unknown, not none (no table, not an empty one)
        visits = write_camera_visits(store, ctx, cameras, ctx.event_interval_s(settings)) if records else None
        camera_days: str | None = days.name if days is not None else None
    else:
        events, event_rows, rows_bytes = grouped["events"], grouped["event_observations"], grouped["rows_bytes"]
        visits, camera_count = grouped["camera_visits"], grouped["cameras"]
        camera_days = grouped.get("camera_days")  # absent: grouped before the days were counted
    linked = {int(part): int(size) for part, size in payload.get("linked") or []}
    # a part whose photos without a capture time got their deployment's first (activities.exportevents)
    linked_media = {int(part): int(size) for part, size in payload.get("linked_media") or []}
    for name, columns in (("media", camtrapdp.MEDIA_COLUMNS), ("observations", camtrapdp.OBSERVATION_COLUMNS)):
        tail: list[Piece] = [(events_csv, 0, rows_bytes)] if name == "observations" and event_rows else []
        # a linked part's rows name their events (activities.exportevents)
        pieces = (_pieces(task_id, variant, parts, name, False, linked, LINKED) if name == "observations" else
                  _pieces(task_id, variant, parts, name, False, linked_media, MEDIA_LINKED))
        compose_blob(store, container, layout.camtrap_dp_blob(task_id, f"{name}.csv", variant),
                     [_csv_line(columns), *pieces, *tail], "text/csv; charset=utf-8")
    write_deployments(store, container, layout.camtrap_dp_blob(task_id, "deployments.csv", variant), camtrap)
    write_descriptor(store, ctx, camtrap, events, ctx.event_interval_s(settings))
    # The fragments stay until exports_zooniverse_clean: a combine run again (its completion lost, as Durable's
    # at-least-once delivery allows) must find them; deleting them here made every retry fail with BlobNotFound.
    prefix = layout.exports_prefix(task_id, variant)
    eligible = sum(p["eligible"] for p in parts)
    out: c.ExportsCombineOutput = {"conflict": False, "zooniverse_parts": True, "output": {
        "container": container, "prefix": prefix, "coco": layout.coco_blob(task_id, variant),
        "camtrap_dp": prefix + "camtrap-dp/", "zooniverse": prefix + "zooniverse/",
        "zooniverse_batches": zooniverse.batch_count(eligible, ctx.manifest), "threshold": ctx.cut,
        "images": sum(p["images"] for p in parts), "annotations": sum(p["annotations"] for p in parts),
        "observations": sum(p["observations"] for p in parts), "deployments": len(camtrap.deployments),
        "zooniverse_subjects": eligible, "sizes_unknown": sum(p["sizes_unknown"] for p in parts),
        "events": events, "event_observations": event_rows}}
    cut_short = sum(int(p.get("zooniverse_cut_short", 0)) for p in parts)
    if cut_short:
        out["output"]["zooniverse_cut_short"] = cut_short
    if visits is not None:
        out["output"]["camera_visits"] = visits
        if camera_days is not None:
            out["output"]["camera_days"] = camera_days
        out["output"]["cameras"] = camera_count
    if ctx.captures() is not None:  # the manifests are of captures (activities.zooniverse_captures), not of images
        out["zooniverse_captures"] = True
    why = sizes_unknown_why(SizeMisses.combine(p.get("sizes_unknown_why") for p in parts))
    if why is not None:
        out["output"]["sizes_unknown_why"] = why
    matched = {folder for p in parts for folder in p.get("clock_matched", ())}
    unmatched_clock_corrections(task_id, camtrap, out["output"], matched)
    return out


def run_exports_zooniverse(payload: c.ExportsZooniverseInput, settings: Settings,
                           store: BlobStore) -> c.ExportsZooniverseOutput:
    """The Zooniverse batches of the whole results (one activity; see the module doc); returns how many, the rows
    written and the photos cut short left out. The photos cut short stay out, as the fanned-out batches leave them
    out (``shards_damaged``: every shard's names cut short, held while the batches are written; nothing read when
    ``damaged.csv`` lists none). Why here too: histories from before the Zooniverse fan-out still run this activity,
    which put those photos' grey parts before volunteers. Why the counts: ``payload["eligible"]`` (the combine's,
    recorded before those photos were left out) counted them, and the task's summary showed it as the subjects."""
    task_id, variant = payload["task_id"], payload["variant"]
    refuse_if_superseded(store, settings, payload, "the Zooniverse batches")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    try:  # read by ranges, not copied to the local disk (gigabytes at millions of images: core.scratch)
        results = open_blob(store, settings.container, layout.results_blob(task_id, variant))
    except ResourceNotFoundError:
        raise ResultsNotFound(f"{settings.container}/{layout.results_blob(task_id, variant)} does not exist",
                              "exports are written from a finished results file: wait for the merge") from None
    with results:
        ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), mdformat.results_head(results))
        cut_short = shards_damaged(store, settings, task_id, 0, int(ctx.enumeration.get("shards") or 0))
        return _write_zooniverse(store, settings.container, task_id, variant, results, ctx.manifest, ctx.categories,
                                 payload["eligible"], 128, ctx.list_shards, cut_short)


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_PART)
@failures_without_secrets
def exports_part(payload: c.ExportsPartInput) -> c.ExportsPartOutput:
    s = clients.settings()
    store = clients.store(s)
    enumeration = store.read_json(s.container, layout.enumeration_blob(payload["task_id"]))
    source = clients.source_store(s, enumeration.get("source_account_url", ""), enumeration.get("credential_secret", ""))
    return run_exports_part(payload, s, store, source)


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_COMBINE)
@failures_without_secrets
def exports_combine(payload: c.ExportsCombineInput) -> c.ExportsCombineOutput:
    s = clients.settings()
    return run_exports_combine(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_ZOONIVERSE)
@failures_without_secrets
def exports_zooniverse(payload: c.ExportsZooniverseInput) -> c.ExportsZooniverseOutput:
    s = clients.settings()
    return run_exports_zooniverse(payload, s, clients.store(s))
