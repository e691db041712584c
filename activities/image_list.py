"""The parallel enumeration's other source of names: a request's explicit image list (``core.imagelist``).

Why beside ``activities.enumerate`` rather than in it: the listing of a container and the reading of a list are two
ways to fill the same listing parts (``{"names": [...]}`` per unit and part), from which the same
``write_shard_manifests`` cuts the same kind of shards. ``activities.enumerate`` hands over to this module at the top
of ``run_plan_listing`` and ``run_list_part`` when the request names a list; everything after the parts is shared.

* ``run_plan_image_list`` downloads the list (checking its hash against the one the task id was made from: a list
  replaced after the POST fails the task rather than running other images under the same id), drops excluded rows,
  keeps the first ``first_n`` rows when asked, and spreads the rows over units by name range (``core.imagelist.
  unit_bounds``, cut from a sample of the names: a name listed twice lands in one unit), each a JSON-lines blob;
* ``run_list_image_part`` reads its unit, keeps each name once, sorts by name, and checks the existence of a bounded
  slice (``checks_per_call``): each folder's run of neighbouring names by one delimiter listing, the rest (a name
  alone in its folder, names a listing did not confirm) by parallel HEAD requests (``existing_sorted``). A list of
  ten million names in a few thousand folders costs a few thousand listings instead of ten million HEADs (~1.5 ms of
  CPU and one read transaction each; ``bench/image_list_check.py``). It writes the names found as the listing part,
  and the names not found and the metadata beside it (``layout.listing_list_part_blob``);
* ``write_list_shards`` (called by ``run_write_shards``) writes, per shard, the listed names not found that its
  results report and the metadata of its images (``layout.shard_list_blob``), read by the merge and the exports.

Must not: send a name that is not in the container to the pool, or drop it: it is reported as a failed entry of
reason ``listed_not_found``.
"""
from __future__ import annotations

import logging
import io
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Iterable, Iterator, Mapping, Sequence

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from adapters.blobs import BlobStore
from adapters.block_writer import BlobSpool, BlockBlobWriter
from adapters.image_lists import open_image_list
from adapters.storage_errors import OWN_ACCOUNT, SOURCE_ACCOUNT, asking_dns_again, source_listing
from core import contracts as c
from core.errors import TrapbatchError
from core import exportparts
from core.imagelist import (SAMPLE_PER_UNIT, FolderRun, ListedImage, blob_name, folder_runs, sampled, scan,
                            unit_bounds, unit_in)
from core.requests import TaskRequest
from core.settings import Settings
from core.shards import ListingLimits
from gpu_batch import layout
from gpu_batch.formats import camtrapdp, jsonio

logger = logging.getLogger(__name__)

# rows of a list unit (a few MB of JSON lines; each of its parts reads and sorts it whole, so a unit is about one
# part: at 100,000 rows and 20,000 checks a call, reading units cost more CPU than checking the names did)
LIST_ROWS_PER_UNIT = 50_000
MAX_LIST_UNITS = 256  # units written at once (one streamed blob each)
UNIT_BLOCKS_BUDGET = 32 * 1024 * 1024  # the units' blocks in memory while the plan writes them, all together
MIN_UNIT_BLOCK_BYTES = 256 * 1024  # (256 units: 64 MB)
MAX_UNIT_BLOCK_BYTES = 4 * 1024 * 1024  # (a unit of 50,000 rows is ~5 MB)
# existence checks of one list part (listings, and HEADs for what they did not confirm, HEAD_THREADS at a time;
# ~65 s of CPU when a credential may not list and every name is a HEAD)
CHECKS_PER_CALL = 50_000
HEAD_THREADS = 32
LIST_EXTRA_PER_NAME = 2  # blobs not in a folder run that its listing may read per name, before HEADs take over
LIST_EXTRA_MIN = 1_000


class ImageListChanged(TrapbatchError, RuntimeError):
    """The list blob no longer holds the bytes the task id was made from: the task fails rather than run others."""


def checks_per_call(limits: ListingLimits) -> int:
    return max(1, min(CHECKS_PER_CALL, limits.names_per_call))


def run_plan_image_list(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, source: BlobStore,
                        limits: ListingLimits, run: str = "") -> c.PlanListingOutput:
    """Write the list's units and the listing plan (with the list's summary, for the enumeration summary).

    The list's read asks DNS again about a host it found missing before that is a refusal (``asking_dns_again``, as
    ``source_listing`` does for a listing): one "no such name", a blip of an account that exists, failed the task.
    A request that names no ``source_account_url`` reads its list from trapbatch's own account, whose refusal names
    that account's setting (``OWN_ACCOUNT``). ``run``: the listing's own working files
    (``layout.listing_work_prefix``)."""
    account = SOURCE_ACCOUNT if request.source_account_url else OWN_ACCOUNT
    with asking_dns_again():
        return _plan_image_list(task_id, request, settings, store, source, limits, account, run)


def _plan_image_list(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, source: BlobStore,
                     limits: ListingLimits, account: tuple[str, str], run: str = "") -> c.PlanListingOutput:
    """``run_plan_image_list``'s work.

    One pass parses and validates the list (``core.imagelist.scan``) and keeps its taken rows (not excluded, the
    first ``first_n``) as the JSON lines the units hold; the sample that cuts the units and the spread over them read
    those lines. Before, both parsed and validated the CSV again: three passes at ~2.4 us a row each, the largest
    per-image cost of a task started from a list (``bench/RESULTS.md``, seventeenth session)."""
    # the list read by ranges, its kept rows spooled to a blob, the units streamed to theirs: nothing on the local
    # disk, which eight activities share (core.scratch; a list may be 256 MiB and its rows as much again)
    with open_image_list(source, request.container, request.image_list, settings.image_list_max_bytes,
                         account) as fp, \
            BlobSpool(store, settings.container, layout.listing_list_rows_blob(task_id, run)) as lines:
        taken = 0

        def keep(item: ListedImage) -> None:
            nonlocal taken
            if request.first_n is not None and taken >= request.first_n:
                return
            taken += 1
            name = blob_name(request.prefix, item.path)
            lines.write(jsonio.dumps([name, dict(item.metadata)] if item.metadata else [name]) + b"\n")

        summary = scan(fp, request.image_list, keep)
        if summary.sha256 != request.image_list_sha256:
            raise ImageListChanged(f"task {task_id}: image list {request.image_list!r} changed after the task was "
                                   "posted", "post the request again: the new list is a task of its own")
        rows = taken  # the list's images, or its first first_n
        # rows per unit: LIST_ROWS_PER_UNIT, or fewer with small limits (tests spread a few rows over units)
        units = max(1, min(MAX_LIST_UNITS, -(-rows // max(1, min(LIST_ROWS_PER_UNIT, limits.names_per_call)))))
        bounds = _unit_bounds(lines, rows, units)
        block = min(MAX_UNIT_BLOCK_BYTES, max(MIN_UNIT_BLOCK_BYTES, UNIT_BLOCKS_BUDGET // units))
        with ExitStack() as stack:
            outs = [stack.enter_context(BlockBlobWriter(store, settings.container,
                                                        layout.listing_list_unit_blob(task_id, u, run),
                                                        "application/x-ndjson", block)) for u in range(units)]
            for line in _rows_of(lines):
                outs[unit_in(str(jsonio.loads(line)[0]), bounds)].write(line)
    for u in range(units):  # the unit documents the listing parts read: an image list instead of leaves
        store.write_json(settings.container, layout.listing_unit_blob(task_id, u, run), [{"image_list": u}])
    store.write_json(settings.container, layout.listing_plan_blob(task_id, run),
                     {"units": units, "leaves": 0, "limits": limits.to_dict(),
                      "image_list": {**summary.to_dict(), "blob": request.image_list, "taken": taken}})
    logger.info("task %s: image list %s of %d rows (%d excluded) spread over %d units", task_id, request.image_list,
                summary.rows, summary.excluded, units)
    out = c.PlanListingOutput(units=units, leaves=0, images_per_write=limits.images_per_write)
    if run:
        out["listing_run"] = run
    return out


def _rows_of(lines: BlobSpool) -> Iterator[bytes]:
    """The plan's kept rows (one JSON line each, ``\\n`` included), from the start of ``lines`` (a spool: read
    through a buffer, which is detached after so the spool stays open for the next pass)."""
    lines.seek(0)
    reader = io.BufferedReader(lines, 4 * 1024 * 1024)
    try:
        yield from reader
    finally:
        reader.detach()


def _unit_bounds(lines: BlobSpool, rows: int, units: int) -> list[str]:
    """The names that cut the plan's ``rows`` kept rows (``lines``) into ``units`` name ranges (``core.imagelist.
    unit_bounds``), from a sample of about ``SAMPLE_PER_UNIT`` names per unit."""
    if units <= 1:
        return []
    every = max(1, rows // (units * SAMPLE_PER_UNIT))
    names = (str(jsonio.loads(line)[0]) for line in _rows_of(lines))
    return unit_bounds([name for name in names if sampled(name, every)], units)


def _unit_rows(store: BlobStore, settings: Settings, task_id: str, unit: int,
               run: str = "") -> list[tuple[str, dict[str, str]]]:
    """The unit's names, each once (its first row's metadata), sorted by name."""
    data = store.read_bytes(settings.container, layout.listing_list_unit_blob(task_id, unit, run))
    rows: dict[str, dict[str, str]] = {}
    for line in data.splitlines():
        if line:
            item = jsonio.loads(line)
            rows.setdefault(str(item[0]), item[1] if len(item) > 1 else {})
    return sorted(rows.items())


def existing(source: BlobStore, container: str, names: Iterable[str], threads: int = HEAD_THREADS) -> list[str | None]:
    """Each blob's ETag, None when it does not exist, by HEAD requests ``threads`` at a time (answers in the order of
    ``names``; the ETag comes with the HEAD at no extra cost, for a later ``only_new`` re-run)."""
    names = list(names)
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(threads, len(names))) as pool:
        return list(pool.map(lambda n: source.etag_or_none(container, n), names))


def existing_sorted(source: BlobStore, container: str, names: Sequence[str],
                    threads: int = HEAD_THREADS) -> list[str | None]:
    """``existing`` for a sorted run of names (a list part's), at a fraction of the requests: each folder's run of
    two or more names is confirmed by one delimiter listing from the prefix they share (``core.imagelist.
    folder_runs``; ~2.5 us of CPU per blob listed, ``adapters.listing``, where a HEAD costs ~1.5 ms). The listing
    stops when it has found every name of the run, passed the run's last name, or read ``LIST_EXTRA_PER_NAME``
    blobs per name that are not in it (a few names far apart in a large folder); whatever it did not confirm is
    asked by HEAD, so a name is never reported missing on a listing's word, whatever order the service lists in."""
    refused: list[str] = []  # a listing the credential may not make (a SAS with read but not list permission)

    def confirm(run: FolderRun) -> dict[str, str]:
        wanted, last = set(run.names), run.names[-1]
        budget = LIST_EXTRA_PER_NAME * len(run.names) + LIST_EXTRA_MIN
        found: dict[str, str] = {}
        extra = 0
        if refused:
            return found
        try:
            for page in source.iter_level_pages(container, run.prefix, min(5000, len(run.names) + budget)):
                passed = False
                for blob in page.blobs:
                    if blob.name in wanted:
                        found[blob.name] = blob.etag
                    else:
                        extra += 1
                    passed = passed or blob.name > last
                extra += len(page.prefixes)
                if passed or extra > budget or len(found) == len(wanted):
                    break
        except HttpResponseError as exc:
            if isinstance(exc, ResourceNotFoundError):
                raise  # the container is gone: the HEADs would say no better
            # a credential that may read but not list (a SAS with sp=r: 403 AuthorizationPermissionMismatch), or a
            # listing the service refuses for another reason: every name by HEAD, as before listings were used
            refused.append(f"{type(exc).__name__}: {exc}")
        return found

    confirmed: dict[str, str] = {}
    runs = [run for run in folder_runs(list(names)) if len(run.names) > 1]
    if runs:
        with ThreadPoolExecutor(max_workers=min(threads, len(runs))) as pool:
            for found in pool.map(confirm, runs):
                confirmed.update(found)
    if refused:
        logger.info("image list check in %s: listing refused (%s); each name asked by HEAD instead", container,
                    refused[0])
    rest = [name for name in names if name not in confirmed]
    asked = dict(zip(rest, existing(source, container, rest, threads)))
    return [confirmed[name] if name in confirmed else asked[name] for name in names]


def run_list_image_part(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, unit: int,
                        part: int, source: BlobStore, run: str = "") -> c.ListPartOutput:
    """Check part ``part`` of list unit ``unit`` (``checks_per_call`` names of the sorted unit) and write its names
    found as the listing part, its names not found and its metadata beside it."""
    plan = store.read_json(settings.container, layout.listing_plan_blob(task_id, run))
    per_call = checks_per_call(ListingLimits(**plan["limits"]))
    rows = _unit_rows(store, settings, task_id, unit, run)
    chunk = rows[part * per_call:(part + 1) * per_call]
    with source_listing(request.source_account_url, request.container):  # not busy when DNS says no such host
        found_flags = existing_sorted(source, request.container, [name for name, _ in chunk])
    found = [name for (name, _), etag in zip(chunk, found_flags) if etag is not None]
    etags = [etag for etag in found_flags if etag is not None]
    missing = [name for (name, _), etag in zip(chunk, found_flags) if etag is None]
    metadata = {name: md for name, md in chunk if md}
    # compact orjson (gpu_batch.formats.jsonio), as the container listing's parts: per-image documents
    store.write_compact_json(settings.container, layout.listing_part_blob(task_id, unit, part, run),
                             {"names": found, "etags": etags})
    store.write_compact_json(settings.container, layout.listing_list_part_blob(task_id, unit, part, run),
                             {"not_found": missing, "metadata": metadata})
    if missing:
        logger.info("task %s: list unit %d part %d: %d of %d names not found", task_id, unit, part, len(missing),
                    len(chunk))
    return {"images": len(found), "listed": len(chunk), "more": (part + 1) * per_call < len(rows),
            "not_found": len(missing)}


def write_list_shards(task_id: str, settings: Settings, store: BlobStore, first: int,
                      shards: list[list[str]], parts: list[tuple[int, int]], not_found: list[list[int]],
                      run: str = "") -> None:
    """Per shard ``first + i`` (images ``shards[i]``), its image-list document: the metadata of its images and of
    the names not found it reports (``not_found``: ``[unit, part, shard]``, the parts whose names it reports)."""
    infos: dict[tuple[int, int], Any] = {}

    def info(key: tuple[int, int]) -> Any:
        if key not in infos:
            infos[key] = jsonio.loads(store.read_bytes(settings.container,
                                                       layout.listing_list_part_blob(task_id, *key, run)))
        return infos[key]

    plan = store.read_json(settings.container, layout.listing_plan_blob(task_id, run))
    columns = (plan.get("image_list") or {}).get("metadata_columns") or []
    with_metadata = bool(columns)
    # the batch's rows in results order, when the list can give deployments first facts (``write_first_facts``)
    ordered: list[tuple[str, Mapping[str, str] | None]] | None = [] if camtrapdp.wants_first_facts(columns) else None
    for key in parts:
        info(key)
    for index, images in enumerate(shards, start=first):
        reported = [(u, p) for u, p, s in not_found if s == index]
        names_missing = [n for key in reported for n in info(key)["not_found"]]
        metadata: dict[str, Any] = {}
        if with_metadata:  # every name, so the exports' walk (activities.exports.ListMetadata) finds each shard's
            for name in (*images, *names_missing):
                metadata[name] = next((info(key)["metadata"][name] for key in infos
                                       if name in info(key)["metadata"]), {})
        store.write_compact_json(settings.container, layout.shard_list_blob(task_id, layout.shard_id(index)),
                                 {"not_found": names_missing, "metadata": metadata})
        if ordered is not None:  # in results order: the shard's images, then the names not found it reports
            ordered.extend((name, metadata.get(name)) for name in (*images, *names_missing))
    if ordered is not None:
        store.write_compact_json(settings.container, layout.list_facts_part_blob(task_id, first),
                                 camtrapdp.first_facts(ordered))


def write_first_facts(task_id: str, settings: Settings, store: BlobStore) -> None:
    """Each deployment's first coordinates and camera over the whole list, in results order (the batches' facts in
    shard order, ``core.exportparts.first_facts``), for the workers' views (``layout.list_facts_blob``).

    Why: a Camtrap DP media row's comments hold an image's coordinates or camera when they differ from its
    deployment's first ones, which a worker knows for its own shard only; with a list whose coordinates vary image
    to image (GPS), every shard's view disagreed with the task's first values and the exports formatted every entry
    (``activities.exports.ViewLines``). Called by the enumeration's last step, before any shard runs."""
    found = {first: name for name in store.list_names(settings.container, layout.list_facts_parts_prefix(task_id))
             if (first := layout.list_facts_part_of(task_id, name)) is not None}
    batches = [jsonio.loads(store.read_bytes(settings.container, found[first])) for first in sorted(found)]
    store.write_compact_json(settings.container, layout.list_facts_blob(task_id), exportparts.first_facts(batches))


def list_summary(store: BlobStore, settings: Settings, task_id: str, not_found: int, run: str = "") -> dict[str, Any]:
    """The list's part of the enumeration summary (``enumeration.json``): its blob, hash, counts and columns."""
    plan = store.read_json(settings.container, layout.listing_plan_blob(task_id, run))
    return {**plan.get("image_list", {}), "not_found": not_found}
