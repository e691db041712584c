"""One zip of a finished task's downloadable files, for ``GET /api/tasks/{id}/results`` above a size.

Why: above ``TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES`` (50 MiB by default) a partner faces dozens of links (results, CSVs,
COCO, Camtrap DP, Zooniverse batches, per variant); one zip is one download. Built on demand (the results route
starts ``orchestrations.results_zip``), not at the end of the task, because the set of files grows afterwards (a
repeats-removed variant, CSVs at other thresholds): the zip's manifest records each file's etag when it was read and
the zip's own ETag as its build committed it, and the results route rebuilds a zip that no longer matches
(``zip_is_current``). Each build writes a zip of its own name (``layout.results_zip_blob``) and its manifest names it:
a link handed out serves that build's zip whatever another build commits later; the zips of earlier builds stay while
their links may be used (``core.zip_builds``), and go at a later build's end (``write_manifest``) or GET.

``write_zip`` builds the zip of up to ``adapters.zip_parts.PART_BYTES`` of files in one pass (``activities.
results_zip``); a larger set is deflated in parallel parts and composed by ``adapters.zip_parts`` into a zip of the
same members and manifest. Streamed, memory bounded whatever the size: each file is read from storage in chunks into
``zipfile`` (deflated, zip64), which writes into ``adapters.block_writer.BlockBlobWriter`` (one 8 MiB block in
memory). Paths in the zip are ``<task>/<path under results/<task>/>``, e.g. ``task-.../detections.json``,
``task-.../exports/coco.json`` (a re-run's: ``<task>-runs-<run>/...``, ``layout.download_label``).

Must not: put anything but the linked files in the zip (never the preview sample, the folder record, or itself).
"""
from __future__ import annotations

import logging
import zipfile
from datetime import datetime, timezone
from typing import Any

from azure.core.exceptions import AzureError

from adapters import share_links
from adapters.block_writer import BlockBlobWriter, new_build
from adapters.blobs import BlobStore
from adapters.compose import delete_names
from core import zip_builds, zipformat
from core.errors import StorageConflict
from gpu_batch import layout

logger = logging.getLogger(__name__)


def linked_blobs(store: BlobStore, container: str, task_id: str) -> dict[str, dict[str, Any]]:
    """Every linked file of the task (``share_links.result_files``) with its ``size``, ``etag`` and ``modified``
    (ISO 8601), by blob name, from one listing of the task's results folder."""
    names = set(share_links.all_names(share_links.result_files(store, container, task_id)))
    client = store.service.get_container_client(container)
    return {b.name: {"size": int(b.size), "etag": str(b.etag), "modified": b.last_modified.isoformat()}
            for b in client.list_blobs(name_starts_with=layout.results_prefix(task_id)) if b.name in names}


def zip_path(task_id: str, name: str) -> str:
    """A file's path in the zip: under one folder named for the task (a re-run's: ``<task>-runs-<run>``,
    ``layout.download_label``), as under ``results/<task>/``."""
    return layout.download_label(task_id) + "/" + name[len(layout.results_prefix(task_id)):]


def member_info(task_id: str, name: str, file: dict[str, Any]) -> zipfile.ZipInfo:
    """The zip entry of blob ``name`` as ``core.zipformat`` writes it for a zip built in parts: the blob's last
    modified time (UTC), a regular file readable by all (``-rw-r--r--``), deflated. Why: ``zf.open(name, "w")``
    dates every member 1980-01-01 and makes it ``-rw-------`` with no file type, so a zip of up to
    ``zip_parts.PART_BYTES`` unpacked into files only their owner may read (on a shared server, not the colleagues),
    all dated 1980, while a larger task's zip carried the real dates: the same download differed by size alone."""
    info = zipfile.ZipInfo(zip_path(task_id, name), date_time=zipformat.zip_time(file["modified"]))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix: external_attr holds the mode, as core.zipformat's _MADE_BY says
    info.external_attr = zipformat.FILE_MODE
    return info


def zip_is_current(manifest: Any, current: dict[str, dict[str, Any]], zip_etag: str | None) -> bool:
    """The zip recorded in ``manifest`` holds exactly ``current``'s files, each as it is now (same etag), and is the
    zip blob there now: ``zip_etag`` (the ETag of the blob ``manifest`` names, ``core.zip_builds.named_zip``; None
    when there is none) is the one its build committed.

    Why the zip's own ETag: before each build wrote a name of its own, every build wrote the same blob name, and a
    terminated build's activity runs on beside the next build (README, the terminate row): a stale zip committed over
    the one a manifest was written for was ``ready`` by the files alone. A manifest of then still names that one
    name, which a build of the release before may still write; and a build's combine retried writes its own name
    again. A manifest written before it recorded ``zip_etag`` (earlier releases) is judged as then: the files, and
    that the zip blob exists."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or zip_etag is None:
        return False
    if "zip_etag" in manifest and str(manifest["zip_etag"]).strip('"') != zip_etag.strip('"'):
        return False
    return {n: f.get("etag") for n, f in manifest["files"].items()} == {n: f["etag"] for n, f in current.items()}


def write_manifest(store: BlobStore, container: str, task_id: str, files: dict[str, dict[str, Any]], size: int,
                   zip_etag: str, build: str, now: datetime | None = None) -> dict[str, Any]:
    """Write the zip's manifest (after the zip: ``zip``, the blob name of the build ``build``, ``bytes``,
    ``zip_etag`` as its commit answered, unquoted, each file's ``size`` and ``etag`` as listed before it was read,
    and ``previous``, the zips of earlier builds kept for their links, ``core.zip_builds.replacing``); returns it.
    Then delete the zips no link can use any more (``drop_zips``).

    Why the commit's ETag and not one read afterwards: another build may have committed the same name in between
    (``zip_is_current``). A commit that answered no ETag (Azure and Azurite always answer one) records none rather
    than an empty one, which no zip would match: the results route would build again for ever. Why a read-modify-write
    (``BlobStore.update_json``): two builds ending at once (a terminated one beside the next) each hand the zip the
    manifest named on to ``previous``; a plain write of the later would drop the one the earlier named, whose links
    were then cut by a later delete. ``now``: the time the zips are replaced at (default: this host's clock)."""
    when = now or datetime.now(timezone.utc)
    name = layout.results_zip_blob(task_id, build)
    manifest: dict[str, Any] = {"task_id": task_id, "zip": name, "bytes": size}
    if zip_etag.strip('"'):
        manifest["zip_etag"] = zip_etag.strip('"')
    manifest["files"] = {n: {"size": f["size"], "etag": f["etag"]} for n, f in files.items()}
    gone: list[str] = []

    def replace(found: Any) -> dict[str, Any]:
        manifest["previous"], gone[:] = zip_builds.replacing(found, task_id, name, when)
        return manifest

    written: dict[str, Any] = store.update_json(container, layout.results_zip_manifest_blob(task_id), replace)
    drop_zips(store, container, task_id, written, gone, when)
    return written


def drop_zips(store: BlobStore, container: str, task_id: str, manifest: dict[str, Any], gone: list[str],
              now: datetime) -> int:
    """Delete the zips ``gone`` (past their links, already out of ``manifest``) and those ``manifest`` neither names
    nor keeps that no build can still name (``core.zip_builds.orphans``), from one listing of the zips' folder; how
    many. A failure is logged, not raised: the zip and its manifest are written, and the next build's end deletes
    what is left (a build's step failed here would be built again for nothing)."""
    folder = layout.results_zip_folder(task_id)
    try:
        listed = [(b.name, b.last_modified)
                  for b in store.service.get_container_client(container).list_blobs(name_starts_with=folder)]
        doomed = sorted(set(gone) | set(zip_builds.orphans(listed, manifest, task_id, now)))
        delete_names(store, container, doomed)
    except AzureError as exc:
        logger.warning("task %s: the results zips of earlier builds were not deleted (%s); the next build will",
                       task_id, type(exc).__name__)
        return 0
    if doomed:
        logger.info("task %s: %d results zips of earlier builds deleted, no link can use them", task_id, len(doomed))
    return len(doomed)


def drop_expired(store: BlobStore, container: str, task_id: str, manifest: Any, now: datetime) -> list[str]:
    """Delete the zips ``manifest`` keeps whose links have all ended (``core.zip_builds.expired``), then take them
    out of the manifest (conditionally: a build's manifest written meanwhile is left as it is); which. Why at a GET,
    not only at the next build's end: with no build after it, a replaced zip stayed, its storage paid, for ever. A
    failure is logged, not raised (the answer does not depend on it): the next GET or build tries again."""
    gone = zip_builds.expired(manifest, task_id, now)
    if not gone:
        return []
    try:
        delete_names(store, container, gone)
        store.update_json(container, layout.results_zip_manifest_blob(task_id),
                          lambda found: zip_builds.without(found, task_id, gone))
    except (AzureError, StorageConflict) as exc:
        logger.warning("task %s: %d results zips past their links were not deleted (%s); the next GET or build will",
                       task_id, len(gone), type(exc).__name__)
        return []
    logger.info("task %s: %d results zips of earlier builds deleted, no link can use them", task_id, len(gone))
    return gone


def sweep_zips(store: BlobStore, container: str, task_id: str, now: datetime) -> int:
    """Delete the zips of generation ``task_id`` that no link can use any more and no build will name: those its
    manifest keeps past their links (``core.zip_builds.expired``, then taken out of it, as ``drop_expired``) and
    those it neither names nor keeps past ``ORPHAN_S`` (``core.zip_builds.orphans``; with no manifest, no zip of it was
    ever linked); how many. What a build's sweep does (``activities.results_zip``), days after the build's end
    (``core.zip_builds.SWEEP_AFTER_S``), so that a zip goes even when no GET or build of the generation comes again.
    Raises on a storage failure, unlike ``drop_zips`` and ``drop_expired``: a sweep is the last chance its zips have,
    and its activity is tried again (``STORAGE_RETRY``)."""
    manifest = store.read_json_or_none(container, layout.results_zip_manifest_blob(task_id))
    gone = zip_builds.expired(manifest, task_id, now)
    delete_names(store, container, gone)
    if gone:
        store.update_json(container, layout.results_zip_manifest_blob(task_id),
                          lambda found: zip_builds.without(found, task_id, gone))
    listed = [(b.name, b.last_modified) for b in store.service.get_container_client(container).list_blobs(
        name_starts_with=layout.results_zip_folder(task_id))]
    orphans = zip_builds.orphans(listed, manifest, task_id, now)
    delete_names(store, container, orphans)
    if gone or orphans:
        logger.info("task %s: swept %d results zips no link can use", task_id, len(gone) + len(orphans))
    return len(gone) + len(orphans)


def write_zip_blob(store: BlobStore, container: str, task_id: str,
                   files: dict[str, dict[str, Any]], build: str) -> tuple[int, str]:
    """Write the zip of ``files`` under ``layout.results_zip_blob`` of the build ``build`` (a name no other build
    writes), in blocks of its own (``block_writer.new_build``: the same build's attempt before, or a build of an
    earlier release writing the one name of then, cannot join its blocks to this one's); its size and ETag."""
    with BlockBlobWriter(store, container, layout.results_zip_blob(task_id, build), build=new_build()) as out:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for blob in sorted(files):
                with zf.open(member_info(task_id, blob, files[blob]), "w", force_zip64=True) as member:
                    for chunk in store.service.get_blob_client(container, blob).download_blob().chunks():
                        member.write(chunk)
    return out.bytes_written, out.etag


def write_zip(store: BlobStore, container: str, task_id: str, files: dict[str, dict[str, Any]] | None = None,
              build: str | None = None) -> dict[str, Any]:
    """Write the zip and then its manifest; returns the manifest (``zip``, ``bytes``, ``zip_etag``, ``files``,
    ``previous``). ``files``: ``linked_blobs``' answer when the caller has just listed them; ``build``: the build's
    id (its plan's, ``contracts.ZipPlan.build``; default a new one)."""
    if files is None:
        files = linked_blobs(store, container, task_id)  # etags before reading: a file changed meanwhile reads stale
    build = zip_builds.new_build() if build is None else build
    size, etag = write_zip_blob(store, container, task_id, files, build)
    manifest = write_manifest(store, container, task_id, files, size, etag, build)
    logger.info("task %s: results zip written, %d files, %d bytes", task_id, len(files), size)
    return manifest
