"""A large task's results zip, deflated in parallel parts and composed: plan, part, combine, clean.

Why: ``adapters.results_bundle.write_zip`` deflates every file in one process (13 us of CPU an image here for a
task's usual files, ``bench/results_zip.py``): minutes for a ten-million-image task, tens of GB with its
repeats-removed variant and CSVs at other thresholds, growing towards the app's ``functionTimeout`` for one activity;
a part's time does not grow with the task. Here the files, in zip order,
are cut into parts of ``PART_BYTES`` (``core.zipformat.cut``); each part activity deflates its chunks into one work
blob (a chunk that is not its file's last ends with a sync flush, so the chunks of a file concatenate into one
deflate stream) and answers each chunk's CRC-32 and deflated length; the combine composes the zip from the members'
headers, the work blobs' byte ranges and the central directory (``adapters.compose.compose``: server side on
Azure, streamed where the service lacks Put Block From URL, as Azurite does) and writes the manifest last, as
``write_zip`` does, so the results route serves it only once it is whole.

Consistent with the files: the plan records each file's etag from one listing; a part reads its ranges only while
that etag still holds (``If-Match``). A file rewritten meanwhile (a re-render's CSV, a repeat search run again) makes
the part answer ``changed`` and the combine write nothing: the manifest is not updated, so the next
``GET /api/tasks/{id}/results`` finds no current zip and builds again. Two builds at once (a terminated build's
step runs on beside the next build): each plan names work blobs of its own (``ZipPlan.build``), each composes the zip
in blocks of its own (``block_writer.new_build``) and its manifest records the ETag its commit answered, so the
results route hands out only the zip a manifest was written for (``results_bundle.zip_is_current``), under a name of
the build's own (``layout.results_zip_blob``), which no other build's late commit can change.

Must not: write anything under the zip's own name but a whole zip; leave its work blobs behind, or delete those
of a build that may be running (``clean_parts``).
"""
from __future__ import annotations

import logging
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from adapters.block_writer import BlockBlobWriter, new_build
from adapters.blobs import BlobStore
from adapters.compose import Piece, compose, delete_names
from adapters.results_bundle import linked_blobs, write_manifest, zip_path
from core import contracts as c
from core import zipformat
from core.zip_builds import STALE_WORK_S  # the bound of a running build's work (why ~22 h: there)
from core.zip_builds import new_build as new_zip_build
from gpu_batch import layout

logger = logging.getLogger(__name__)

PART_BYTES = 256 * 1024 * 1024  # of the files' bytes per part (a few seconds of deflate; tens of parts at 10M)
LEVEL = 6  # zlib's default, as zipfile's ZIP_DEFLATED uses


def plan(store: BlobStore, container: str, task_id: str, part_bytes: int = PART_BYTES) -> c.ZipPlan:
    """The task's linked files in zip order (by name, as ``write_zip``) and the chunks of each part."""
    listed = linked_blobs(store, container, task_id)
    files = [c.ZipFileEntry(name=n, size=f["size"], etag=f["etag"], modified=f["modified"])
             for n, f in sorted(listed.items())]
    parts = [[list(chunk) for chunk in part] for part in zipformat.cut([f["size"] for f in files], part_bytes)]
    return c.ZipPlan(files=files, parts=parts, build=new_zip_build())  # work blobs of this build's own


def deflate_part(store: BlobStore, container: str, asked: c.ResultsZipPartInput) -> c.ResultsZipPartOutput:
    """Deflate the part's chunks, in order, into its work blob; each chunk's CRC-32 and deflated length."""
    task_id, part = asked["task_id"], asked["part"]
    done: list[list[int]] = []
    try:
        with BlockBlobWriter(store, container, layout.results_zip_part_blob(task_id, part, asked.get("build", "")),
                             "application/octet-stream") as out:
            for name, etag, offset, length, last in asked["chunks"]:
                crc, before = 0, out.bytes_written
                deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)  # raw deflate, as zip members hold
                if length:
                    stream = store.service.get_blob_client(container, name).download_blob(
                        offset=offset, length=length, etag=etag, match_condition=MatchConditions.IfNotModified)
                    for data in stream.chunks():
                        crc = zlib.crc32(data, crc)
                        out.write(deflate.compress(data))
                out.write(deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH))
                done.append([crc, out.bytes_written - before])
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        logger.info("task %s: zip part %d: %s changed while it was read (%s); no zip this time", task_id, part,
                    name, type(exc).__name__)
        return c.ResultsZipPartOutput(part=part, chunks=[], changed=name)
    return c.ResultsZipPartOutput(part=part, chunks=done)


def layout_zip(task_id: str, files: Sequence[c.ZipFileEntry], parts: Sequence[c.ResultsZipPartOutput],
               chunks: Sequence[Sequence[Sequence[Any]]], build: str = "") -> list[Piece]:
    """The zip as pieces to compose: each member's local header, then its chunks' deflated bytes (ranges of the
    parts' work blobs, of the plan's ``build``), then the central directory. ``chunks``: each part's chunks as
    planned."""
    by_file: dict[int, list[tuple[int, int, int, str, int]]] = {}  # file -> [(crc, raw, deflated, blob, offset)]
    for k, (planned, made) in enumerate(zip(chunks, parts)):
        if made["part"] != k or len(made["chunks"]) != len(planned):
            raise ValueError(f"zip part {k} answered for part {made['part']} with {len(made['chunks'])} chunks, "
                             f"{len(planned)} were planned")
        at = 0
        for (i, _offset, length, _last), (crc, deflated) in zip(planned, made["chunks"]):
            by_file.setdefault(int(i), []).append((crc, int(length), int(deflated),
                                                   layout.results_zip_part_blob(task_id, k, build), at))
            at += int(deflated)
    pieces: list[Piece] = []
    members: list[zipformat.Member] = []
    offset = 0
    for i, f in enumerate(files):
        pieces_of = by_file.get(i, [])
        if sum(raw for _, raw, _, _, _ in pieces_of) != f["size"] or not pieces_of:
            raise ValueError(f"the parts hold {sum(raw for _, raw, _, _, _ in pieces_of)} bytes of {f['name']}, "
                             f"which has {f['size']}")
        crc = 0
        for piece_crc, raw, _, _, _ in pieces_of:
            crc = zipformat.crc32_combine(crc, piece_crc, raw)
        member = zipformat.Member(name=zip_path(task_id, f["name"]), crc=crc, size=f["size"],
                                  compressed=sum(d for _, _, d, _, _ in pieces_of), offset=offset,
                                  modified=datetime.fromisoformat(f["modified"]))
        header = zipformat.local_header(member)
        pieces.append(header)
        pieces.extend((blob, at, deflated) for _, _, deflated, blob, at in pieces_of if deflated)
        members.append(member)
        offset += len(header) + member.compressed
    pieces.append(zipformat.central_directory(members, offset))
    return pieces


def combine(store: BlobStore, container: str, asked: c.ResultsZipCombineInput) -> c.ResultsZipOutput:
    """Compose the zip, under its build's own name (``layout.results_zip_blob``), and then write its manifest
    (``results_bundle.write_manifest``, with the ETag the compose's commit answered); nothing when a part saw a
    change."""
    task_id, files, parts = asked["task_id"], asked["plan"]["files"], asked["parts"]
    build = asked["plan"].get("build", "")  # none in a plan recorded before builds: the one zip name of then
    name = layout.results_zip_blob(task_id, build)
    changed = next((p["changed"] for p in parts if p.get("changed")), None)
    if changed:
        return c.ResultsZipOutput(blob=name, files=len(files), bytes=0, stale=changed)
    pieces = layout_zip(task_id, files, parts, asked["plan"]["parts"], build)
    composed = compose(store, container, name, pieces, "application/zip", build=new_build())  # blocks of its own
    size = sum(len(p) if isinstance(p, bytes) else p[2] for p in pieces)
    # each file's size and etag read here, from the plan (the payload's reads: tests/orchestrations/payload_reads.py)
    write_manifest(store, container, task_id, {f["name"]: {"size": f["size"], "etag": f["etag"]} for f in files}, size,
                   composed.etag, build)
    logger.info("task %s: results zip composed (%s) from %d parts, %d files, %d bytes", task_id, composed.mode,
                len(parts), len(files), size)
    return c.ResultsZipOutput(blob=name, files=len(files), bytes=size)


def clean_parts(store: BlobStore, container: str, task_id: str, build: str = "",
                now: datetime | None = None) -> int:
    """Delete the work blobs of this build (the plan's ``build``), the un-foldered ones (``build`` "": a plan
    recorded before plans named a build), and other builds' folders none of whose blobs is newer than
    ``STALE_WORK_S``; how many.

    Why not every build's: after ``POST .../terminate {"target": "zip"}`` the terminated build's clean runs on (an
    activity cannot be stopped) beside the next build under the same instance id; deleting the whole work folder
    there deleted the new build's parts between its parts and its combine, which then failed (and GET answered
    ``failed`` until ``?zip=rebuild``). A terminated build's folder is left while it may still be written, and goes
    at a later build's clean once past the bound. ``now``: the time to judge by (default: this host's clock; its
    skew from the service's Last-Modified is seconds, within ``core.stall.SLACK_S``).

    A clean whose input names no build (recorded by an earlier release) deletes the un-foldered blobs, its plan's
    own when that plan had no build, and stale folders; not every folder as it did, since the build beside it may
    be running (no running build writes un-foldered blobs beside a build of folders: the instance runs one build at
    a time, and every build started since folders came has its own). Its own folder, where its plan had a build (a
    clean scheduled by the release that brought folders but handed the clean no build), is left to a later clean
    past the bound."""
    prefix = layout.results_zip_work_prefix(task_id)
    names: dict[str, list[str]] = {}
    newest: dict[str, datetime] = {}
    for blob in store.service.get_container_client(container).list_blobs(name_starts_with=prefix):
        rest = blob.name[len(prefix):]
        folder = rest.split("/", 1)[0] if "/" in rest else ""
        names.setdefault(folder, []).append(blob.name)
        newest[folder] = max(newest.get(folder, blob.last_modified), blob.last_modified)
    before = (now or datetime.now(timezone.utc)) - timedelta(seconds=STALE_WORK_S)
    gone = [n for folder, listed in names.items() if folder in ("", build) or newest[folder] < before
            for n in listed]
    return delete_names(store, container, gone)
