"""The Camtrap DP events of a fanned-out exports step, before its combine: grouped once, then linked part by part.

Why a step of its own: a photo's event depends on the camera's other photos, which may be in any part, so the parts
cannot name it as they write their media-level observations. Without a name, Camtrap DP users had to find each
photo's event by deployment and time span. ``orchestrations.exports`` runs, after the parts:

* ``run_exports_events``: every part's event records (``core.camtrap_events``) grouped into events, a camera at a
  time; writes the event rows (a work blob the combine appends to ``observations.csv``), ``camera-visits.csv``, and
  for each part with time-grouped photos its share of the index (the events its photos span: 18 bytes an event) and
  of the frames (``EventFrames``: each of its time-grouped photos' event, place in it and the event's size).
* ``run_exports_link_part``, per such part in parallel: its observations fragment streamed again with each
  time-grouped photo's media-level rows given their event's id (``link_observations``), and its COCO images with
  their ``seq_id``, ``seq_num_frames`` and ``frame_num`` (``link_coco_images``), each into a fragment of its own
  (the part's own fragments stay as written, so a part run again cannot undo a link). A part with photos without
  a capture time in deployments that have capture times (in any part: the parts' deployment facts combined,
  ``part_stand_ins``) is linked too: its media rows get their deployment's start (a second before its first
  capture time: in no event) instead of the detection time, and their observations the same
  (``camtrapdp.stand_in_media``), into fragments of their own.

The combine then composes ``observations.csv`` and ``coco.json`` from the linked fragments: the bytes of the single
activity, which links its own lines the same way (``activities.exports.link_event_ids``, ``link_coco_images``).
Idempotent: each writes the same bytes. A part whose records were written before they named their photos, or a link
after an events step that numbered no frames (both recorded before), leaves its COCO images as they were.
Memory: the records (50 bytes a timed image), one camera's times and order, the index (18 bytes an event, ~240 a
camera) and the frames (24 bytes a time-grouped photo) for the grouping (``bench/camtrap_events.py``,
bench/RESULTS.md); ``camera-visits.csv`` and ``camera-days.csv`` are streamed as each camera is done (a camera a
folder in camera-day folders: a million of them at ten million images in folders of ten); for a link,
the part's shares (the events its photos span, ``time_windows``, and its own photos' frames) and, only when the
detection time falls inside an event, its photos without a capture time.
"""
from __future__ import annotations

import io
import json
import logging
from contextlib import ExitStack
from typing import Any, Iterable, Iterator

import azure.durable_functions as df

from activities.decided import task_settings
from activities.exportparts import (DEPLOYMENTS, EVENT_ROWS, FRAGMENT_BLOCK_BYTES, FRAMES, IMAGES_LINKED, INDEX,
                                    LINKED, MEDIA_LINKED, STAND_INS, _fragment, _work, read_event_records)
from activities.exports import (CameraDaysWriter, CameraVisitsWriter, link_coco_images, link_event_ids, prepare,
                                read_results_head, write_events, write_stand_ins)
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.block_writer import BlockBlobWriter, open_blob
from adapters.blobs import BlobStore
from core import camtrap_events, exportparts
from core import contracts as c
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()
FRAMES_BLOCK_BYTES = 256 * 1024  # each part's frames share buffers this much while the grouping writes it (50
# parts at ten million images: 12.5 MiB; ~900 blocks staged in all)


def run_exports_events(payload: c.ExportsEventsInput, settings: Settings, store: BlobStore) -> c.ExportsEventsOutput:
    task_id, variant = payload["task_id"], payload["variant"]
    refuse_if_superseded(store, settings, payload, "the exports' events")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    head, _ = read_results_head(store, container, layout.results_blob(task_id, variant))
    ctx = prepare(task_id, settings, store, variant, payload.get("threshold"), head)
    camtrap = ctx.camtrap()
    stand_ins = part_stand_ins(store, container, task_id, variant, payload["parts"])  # before the records' peak
    records = read_event_records(store, container, task_id, variant, payload["parts"])
    index = camtrap_events.EventIndex()
    rows_blob = f"{_work(task_id, variant)}{EVENT_ROWS}"
    with ExitStack() as shares:
        def share(i: int) -> BlockBlobWriter:
            """Part ``i``'s frames, streamed to its blob as the cameras come (held whole, they were 24 bytes a
            photo: 229 MiB more at ten million, bench/RESULTS.md); committed as the grouping ends."""
            return shares.enter_context(BlockBlobWriter(store, container, _fragment(
                task_id, variant, payload["parts"][i], FRAMES), "application/octet-stream", FRAMES_BLOCK_BYTES))

        frames = camtrap_events.EventFrames(len(records), share)
        days = shares.enter_context(CameraDaysWriter(store, ctx, ctx.event_interval_s(settings)))
        cameras = shares.enter_context(CameraVisitsWriter(store, ctx, ctx.event_interval_s(settings)))
        with BlockBlobWriter(store, container, rows_blob, "application/octet-stream", FRAGMENT_BLOCK_BYTES) as blob:
            stream = io.TextIOWrapper(io.BufferedWriter(blob, 1 << 16), encoding="utf-8", newline="")
            events, rows = write_events(stream, camtrap, records, ctx.event_interval_s(settings), cameras, index,
                                        frames, days)
            stream.flush()
            stream.detach().detach()  # the blob commits as the with block ends
    visits = cameras.name
    link = []
    for part, held, stand_in in zip(payload["parts"], records, stand_ins):
        windows = camtrap_events.time_windows(held)  # the events of its photos' spans, not of whole cameras
        if windows or stand_in:  # both written for each part linked: a link never reads an earlier run's
            store.write_bytes(container, _fragment(task_id, variant, part, INDEX), index.to_bytes(windows),
                              "application/octet-stream")
            store.write_bytes(container, _fragment(task_id, variant, part, STAND_INS),
                              json.dumps(stand_in, ensure_ascii=False).encode("utf-8"), "application/json")
            link.append(part)
    logger.info("task %s exports: %d events at %d cameras; %d of %d parts have photos grouped by time or given "
                "their deployment's first capture time", task_id, events, cameras.cameras, len(link),
                len(payload["parts"]))
    return {"events": events, "event_observations": rows, "rows_bytes": blob.bytes_written, "cameras": cameras.cameras,
            "camera_visits": visits, "camera_days": days.name, "link": link}


def part_stand_ins(store: BlobStore, container: str, task_id: str, variant: str,
                   parts: list[int]) -> list[dict[str, str]]:
    """Per part, the stand-in (``camtrapdp.stand_in_time``: a second before the first capture time) that its
    photos without one get, of each deployment that has one
    (``core.exportparts.stand_ins`` over the parts' deployment facts, read one part at a time); none at all when a
    part wrote no facts fragment (recorded before it did: its deployments' first times are unknown here)."""
    names = [_fragment(task_id, variant, part, DEPLOYMENTS) for part in parts]
    held = store.list_etags(container, _work(task_id, variant))
    if any(name not in held for name in names):
        return [{} for _ in parts]

    def facts() -> Iterator[list[list[Any]]]:
        for name in names:
            yield json.loads(store.read_bytes(container, name))

    return exportparts.stand_ins(facts())


def run_exports_link_part(payload: c.ExportsLinkPartInput, settings: Settings,
                          store: BlobStore) -> c.ExportsLinkPartOutput:
    task_id, variant, part = payload["task_id"], payload["variant"], payload["part"]
    refuse_if_superseded(store, settings, payload, "an exports link part")  # a terminated run's late call
    settings = task_settings(settings, store, task_id)  # the values its run decided (activities.decided)
    container = settings.container
    head, _ = read_results_head(store, container, layout.results_blob(task_id, variant))
    completed_at = prepare(task_id, settings, store, variant, None, head).camtrap().completed_at
    index = camtrap_events.EventIndex.from_bytes(store.read_bytes(container, _fragment(task_id, variant, part, INDEX)))
    with ExitStack() as stack:
        def text(name: str) -> io.TextIOWrapper:
            """A fragment's text, read 4 MB a request (a TextIOWrapper asks its buffer for 8 kB at a time, which
            BufferedReader.read1 passes on to the blob as such: 751 ranged GETs for 20,000 images' rows)."""
            wrapper = stack.enter_context(io.TextIOWrapper(open_blob(store, container, _fragment(
                task_id, variant, part, name)), encoding="utf-8", newline=""))
            wrapper._CHUNK_SIZE = FRAGMENT_BLOCK_BYTES  # type: ignore[attr-defined]
            return wrapper

        def media() -> Iterable[str]:  # only when the detection time falls inside an event
            return text("media")

        # absent: the events were grouped before photos without a capture time got their deployment's first
        stand_ins = json.loads(store.read_bytes_or_none(container, _fragment(task_id, variant, part, STAND_INS))
                               or b"{}")
        moved: dict[str, str] = {}
        media_bytes = None
        if stand_ins:  # the part's media rows with those times, and their observations' below
            with BlockBlobWriter(store, container, _fragment(task_id, variant, part, MEDIA_LINKED),
                                 "application/octet-stream", FRAGMENT_BLOCK_BYTES) as blob:
                out = io.TextIOWrapper(io.BufferedWriter(blob, 1 << 16), encoding="utf-8", newline="")
                moved = write_stand_ins(text("media"), stand_ins, out)
                out.flush()
                out.detach().detach()
            media_bytes = blob.bytes_written
        observations = text("observations")
        with BlockBlobWriter(store, container, _fragment(task_id, variant, part, LINKED), "application/octet-stream",
                             FRAGMENT_BLOCK_BYTES) as blob:
            out = io.TextIOWrapper(io.BufferedWriter(blob, 1 << 16), encoding="utf-8", newline="")
            link_event_ids(observations, media, index, completed_at, out, moved)
            out.flush()
            out.detach().detach()  # the blob commits as the with block ends
        linked: c.ExportsLinkPartOutput = {"part": part, "bytes": blob.bytes_written}
        if media_bytes is not None:
            linked["media_bytes"] = media_bytes
        # absent: the events were grouped before they numbered the frames, or from records that named no photo
        share = store.read_bytes_or_none(container, _fragment(task_id, variant, part, FRAMES))
        if share is None:
            return linked
        frames = camtrap_events.EventFrames.from_bytes(share)
        with BlockBlobWriter(store, container, _fragment(task_id, variant, part, IMAGES_LINKED),
                             "application/octet-stream", FRAGMENT_BLOCK_BYTES) as blob:
            out = io.TextIOWrapper(io.BufferedWriter(blob, 1 << 16), encoding="utf-8", newline="")
            link_coco_images(text("images"), frames, out, index)
            out.flush()
            out.detach().detach()
    linked["images_bytes"] = blob.bytes_written
    return linked


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_EVENTS)
@failures_without_secrets
def exports_events(payload: c.ExportsEventsInput) -> c.ExportsEventsOutput:
    s = clients.settings()
    return run_exports_events(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.EXPORTS_LINK_PART)
@failures_without_secrets
def exports_link_part(payload: c.ExportsLinkPartInput) -> c.ExportsLinkPartOutput:
    s = clients.settings()
    return run_exports_link_part(payload, s, clients.store(s))
