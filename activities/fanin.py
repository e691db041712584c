"""The parallel fan-in's activities: merge a range of shards into fragments, compose them, search folders in groups.

Why: one activity merging every shard (``activities.merge``, ~190 us per image) takes hours at ten million images,
far past ``functionTimeout``. ``orchestrations.fanin`` runs these instead, each bounded whatever the task size:

* ``run_merge_part``: shards ``first_shard .. +shards`` (``core.fanin.plan_parts``: about
  ``merge_images_per_part`` images), exactly as the single pass treats them (each manifest image once, later
  attempts filling gaps, ``failure`` entries for the rest, the variant's removals), written as a JSON fragment and a
  CSV fragment (``core.fanin``'s byte layout), a preview-sampler state, and for the repeat search each folder's
  eligible detections in stream order (one line per folder, folders in name order, with a byte-offset index);
  returns the part's counts. Memory: one shard's entries plus the part's eligible detections (a few columns each).
  A shard whose last worker wrote a merge view that still names its blobs (``clean_view``; the view of a shard that
  ran again covers every attempt) is not read entry by entry:
  the part composes the view's bytes (``gpu_batch.formats.mergeview``: the same bytes, made on the GPU node).
  Per shard it records which results blobs it merged, with their ETags (``record_merged``): the exports take a
  worker's view only of those (``was_merged``). The photos cut short come with the view (``ShardView.damaged``, every
  attempt's) or with the entries read, else from the workers' lists (``activities.shard_results.shard_damaged``),
  and the shard's record names them for the exports (``record_merged``).
* ``run_merge_combine``: composes the results JSON (head, fragments, tail) and the CSV (header, fragments) with
  ``adapters.compose`` (server side where the service has Put Block From URL), absorbs the parts' sampler states
  into the preview sample, and plans the repeat search's folder groups from the parts' small indexes
  (``core.fanin.plan_search_groups``). Time per part and per folder, not per image or byte.
* ``run_search_repeats``: one group of folders; reads, per part, one byte range holding its folders' lines, and feeds
  each folder's ``core.repeats.FolderSearch`` its detections in stream order (part order, then line order).
* ``run_rank_repeats``: ranks what the groups found (``core.repeats.rank_locations``) into the repeats blob.
* ``run_clean_merge_work``: deletes the work blobs (as large as the results) once the results are written.

The results JSON and CSV are byte-identical to the single pass's (a test compares them in Azurite); so is the
repeats document. Idempotent: the same shard results and ``completed_at`` give the same bytes. Must not: hold a
part's entries, or the results, in memory at once.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from typing import Any, Iterator

import azure.durable_functions as df
from azure.core.exceptions import ResourceNotFoundError

from activities.decided import task_settings
from activities.merge import _merged_shard, _results_info, task_threshold
from activities.readme import drop_readme
from activities.shard_results import shard_damaged, shard_manifest
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.block_writer import BlockBlobWriter
from adapters.blobs import BlobStore
from adapters.compose import Piece, compose_blob, delete_prefix, read_range
from core import contracts as c
from core import fanin, mdformat
from core.errors import RepeatListChanged
from core.failures import failures_without_secrets
from core.repeats import FolderSearch, RepeatRemoval, list_search_id, rank_locations
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import jsonio
from gpu_batch.formats.detections_csv import CSV_COLUMNS, spreadsheet_safe, unguarded
from gpu_batch.formats.eligible import FolderRows, RepeatOptions
from gpu_batch.formats.mergeview import HEAD_BYTES, LongHeader, ShardFormatter, ShardView, TornView, read_view_part
from gpu_batch.formats.previewsample import PreviewSampler
from gpu_batch.layout import REPEATS_REMOVED
from gpu_batch.manifest import REASON_LISTED_NOT_FOUND, plain_etag

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def run_read_enumeration(task_id: str, settings: Settings, store: BlobStore) -> c.EnumerateOutput:
    """The enumeration's counts, for an orchestration that does not carry them (the repeats removal)."""
    doc = store.read_json(settings.container, layout.enumeration_blob(task_id))
    return {"images": int(doc["images"]), "shards": int(doc["shards"])}


def _removal(store: BlobStore, settings: Settings, task_id: str, remove: list[str], search: str | None) -> RepeatRemoval:
    """The chosen locations of the task's list, matched with the options that list was made with (a search run again
    may have used other ones). ``search``: the list the ids were chosen from; a replaced list fails the part."""
    found = store.read_json(settings.container, layout.repeats_blob(task_id))
    if search is not None and list_search_id(found) != search:
        raise RepeatListChanged(f"task {task_id}: the repeated-detection list is now search {list_search_id(found)!r}, "
                                f"not {search!r} whose location ids this removal names",
                                f"GET /api/tasks/{task_id}/repeats and choose again from the current list")
    chosen = [loc for loc in found["locations"] if loc["id"] in set(remove)]
    return RepeatRemoval(chosen, RepeatOptions.from_dict(found.get("options") or {}))


def _chosen_ids(store: BlobStore, settings: Settings, payload: c.MergePartInput) -> list[str]:
    """The location ids a removal's part marks: from the blob its first step wrote, or (parts scheduled before that
    step existed) from the input itself."""
    if "remove_blob" in payload:
        return list(store.read_json(settings.container, payload["remove_blob"])["remove"])
    return list(payload.get("remove", []))


def _task_model(store: BlobStore, settings: Settings, task_id: str) -> str:
    """The task's model as its request named it (a part's input carries no model; the threshold may depend on it)."""
    request = store.read_json_or_none(settings.container, layout.request_blob(task_id)) or {}
    return str(request.get("model", ""))


def run_merge_part(payload: c.MergePartInput, settings: Settings, store: BlobStore) -> c.MergePartOutput:
    task_id, part = payload["task_id"], payload["part"]
    refuse_if_superseded(store, settings, payload, f"merge part {part}")  # a terminated run's queued part
    settings = task_settings(settings, store, task_id)  # the threshold its run decided (activities.decided)
    variant = payload.get("variant", "")
    removal = (_removal(store, settings, task_id, _chosen_ids(store, settings, payload), payload.get("search"))
               if variant == REPEATS_REMOVED else None)
    threshold = task_threshold(store, settings, task_id, _task_model(store, settings, task_id))
    formatter = ShardFormatter(task_id, threshold, search=removal is None)
    missing = viewed = 0
    damaged: list[str] = []  # the part's photos cut short (both variants: a removal changes no photo)
    container = settings.container
    # streamed into their blobs as written (a part's fragments are ~100 MB at its default size; the instance's
    # local disk is shared by eight activities: core.scratch)
    with BlockBlobWriter(store, container, layout.merge_part_blob(task_id, part, "json", variant),
                         "application/octet-stream") as out, \
            BlockBlobWriter(store, container, layout.merge_part_blob(task_id, part, "csv", variant),
                            "text/csv; charset=utf-8") as table_file:
        for index in range(payload["first_shard"], payload["first_shard"] + payload["shards"]):
            listed = store.list_etags(container, layout.shard_prefix(task_id, layout.shard_id(index)))
            view = (clean_view(store, settings, task_id, index, threshold, listed, not_found_after=True)
                    if removal is None else None)
            named: set[str] | None = None  # photos cut short that the parsed results name (entry path only)
            if view is not None:  # the worker's bytes for this shard: nothing to parse or format here
                formatter.absorb(view)
                json_part, csv_part = view.json, view.csv
                extra = listed_not_found(store, settings, task_id, index, listed)
                if extra:  # an image list's names not found that the shard reports: after its images, as merged
                    extra_json, extra_csv = formatter.add_shard(extra)
                    json_part, csv_part = json_part + extra_json, csv_part + extra_csv
                viewed += 1
            else:
                named = set()
                entries, shard_missing = _merged_shard(store, settings, task_id, index, removal, set(listed), named)
                missing += shard_missing
                json_part, csv_part = formatter.add_shard(entries)
            if view is not None and view.damaged is not None:  # every attempt's, atomic with the view: no list read
                cut_short = list(view.damaged)
            else:  # the variant too (always the entry path: its names come with the entries read), an older view
                cut_short = shard_damaged(store, settings, task_id, layout.shard_id(index), listed, named)
            if cut_short and not own_only(view):  # of this shard's images only (own_only, of_shard)
                cut_short = of_shard(store, settings, task_id, index, listed, cut_short,
                                     None if view is not None else {e.get("file") for e in entries})
            if removal is None:
                record_merged(store, container, task_id, index, listed, cut_short)
            damaged += cut_short
            out.write(json_part)  # one write per shard: the same bytes as one per entry
            table_file.write(csv_part)
    json_bytes, csv_bytes = out.bytes_written, table_file.bytes_written
    store.write_bytes(container, layout.merge_part_blob(task_id, part, "sample.json", variant),
                      json.dumps(formatter.sampler.state(), ensure_ascii=False).encode("utf-8"), "application/json")
    if removal is None:
        write_folders(store, container, task_id, part, formatter.folders)
    logger.info("task %s merge part %d: %d of %d shards from the workers' merge views", task_id, part, viewed,
                payload["shards"])
    result: c.MergePartOutput = {
        "part": part, **formatter.counts, "missing": missing,  # type: ignore[typeddict-item]
        "failure_reasons": dict(sorted(formatter.reasons.items())), "json_bytes": json_bytes, "csv_bytes": csv_bytes,
        "detections_considered": formatter.considered, "marked": removal.marked if removal is not None else 0}
    if damaged and removal is not None:  # the variant: the original's damaged.csv lists them; its first few suffice
        result["damaged"], result["damaged_examples"] = len(damaged), damaged[: c.DAMAGED_EXAMPLES]
    elif damaged:  # only then: a part without any returns what it returned before (the output is kept in the history)
        rows = damaged_rows(damaged)
        store.write_bytes(container, layout.merge_part_blob(task_id, part, "damaged.csv", variant), rows, "text/csv")
        result["damaged"], result["damaged_bytes"] = len(damaged), len(rows)
    return result


def own_only(view: ShardView | None) -> bool:
    """Whether the photos cut short that ``view`` names are all of its shard's manifest, so that ``of_shard`` has
    nothing to leave out: a view of a shard's only attempt (no ``earlier``) that names them (``damaged``) names its
    worker's own, which are of the images it was given (``gpu_batch.worker.results``: the names it keeps from an
    earlier run of the attempt are those of its manifest, ``load_resumable_state``). Only earlier attempts' lists,
    which a resumed listing's cut may have left naming another shard's images, need the filter. Why: the filter reads
    the shard's manifest (~0.5 MB at 10,000 images) for every shard with a photo cut short, where the merge took the
    view to read nothing of the kind; a task with one photo cut short in 10,000 has one in most shards."""
    return view is not None and view.damaged is not None and not view.earlier


def of_shard(store: BlobStore, settings: Settings, task_id: str, index: int, listed: dict[str, str],
             names: list[str], images: set[Any] | None) -> list[str]:
    """Of ``names`` (photos cut short that shard ``index``'s attempts name), those of the shard's manifest: ``images``,
    its merged entries' files, or where the merge took the worker's view (None) the manifest's, read then (only for a
    shard naming any, and not for a view naming only its own: ``own_only``). Why: a resumed run's listing cuts the
    shards anew, so a shard's attempts may hold entries, and names cut short, of images an earlier listing put there and
    this one in another shard, which merges them, carried (``activities.carried_results``) or run again; the merge takes
    a shard's entries by its manifest's names only (``merge_entries``), and the attempts' lists of names cut short
    (``shard_damaged``; a view's, ``gpu_batch.formats.mergeview.build_view``, names every earlier attempt's) were taken
    whole: such a photo was listed twice in ``damaged.csv``, or, run again and not cut short, by the shard that no
    longer holds it."""
    if images is None:
        images = set(shard_manifest(store, settings, task_id, layout.shard_id(index), set(listed))["images"])
    return [n for n in names if n in images]


DAMAGED_HEADER = b"file\r\n"


def damaged_rows(names: list[str]) -> bytes:
    """CSV rows of ``names`` (one column, quoted where a name needs it), as the ``csv`` module writes them. A name
    that starts like a formula (``=``, ``+``, ``-``, ``@``...) or with ``'`` gets a leading apostrophe, as in
    detections.csv (``spreadsheet_safe``: a cell that starts with ``'`` had one added, remove one): the
    results' README.txt says a spreadsheet opens this list, and blob names are chosen by whoever uploads the images
    (``activities.previews`` reads it back with ``unguarded``)."""
    text = io.StringIO(newline="")
    rows = csv.writer(text)
    for name in names:
        rows.writerow([spreadsheet_safe(name)])
    return text.getvalue().encode("utf-8")


def write_damaged(store: BlobStore, container: str, task_id: str, sizes: list[int]) -> list[str]:
    """Compose ``layout.damaged_blob`` (a ``file`` header, then each part's rows in part order) from the parts'
    fragments of ``sizes`` bytes, or delete one an earlier merge of this generation left when none has any; returns
    the first few names (``c.DAMAGED_EXAMPLES``, as the blobs are named) for the status. Why composed: a card of
    photos cut short is as many rows as photos, and the combine holds none of them."""
    name = layout.damaged_blob(task_id)
    if not any(sizes):
        store.delete_if_exists(container, name)
        return []
    pieces: list[Piece] = [DAMAGED_HEADER]
    pieces += [(layout.merge_part_blob(task_id, p, "damaged.csv"), 0, n) for p, n in enumerate(sizes) if n > 0]
    compose_blob(store, container, name, pieces, "text/csv; charset=utf-8")
    first = next(p for p, n in enumerate(sizes) if n > 0)
    text = read_range(store, container, layout.merge_part_blob(task_id, first, "damaged.csv"), 0,
                      min(sizes[first], 16 * 1024)).decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if sizes[first] > 16 * 1024:
        rows = rows[:-1]  # the last row may be cut by the range
    return [unguarded(row[0]) for row in rows if row][: c.DAMAGED_EXAMPLES]  # the names, not their guarded cells


def merged_results(listed: dict[str, str]) -> dict[str, str]:
    """The shard's attempt results blobs in ``listed`` (a shard's listing) with their ETags."""
    return {name: etag for name, etag in listed.items() if layout.attempt_of_results_blob(name) is not None}


def record_merged(store: BlobStore, container: str, task_id: str, index: int, listed: dict[str, str],
                  damaged: list[str] | None = None) -> None:
    """Write which results blobs (and ETags) the merge took shard ``index`` from (``layout.shard_merged_blob``), from
    the listing it merged by: the view it composed was checked against it, and the entries it read were listed in
    it. None for a shard without results (its exports take no view). Why: the exports run after the merge and
    checked a view only against the shard's blobs as they were then; a results blob rewritten after the merge (a
    late worker of the same attempt) with a view to match gave exports that differ from the results file.

    ``damaged``: the shard's photos cut short exactly as this merge put them in ``damaged.csv`` (its view's, or the
    entries' and the workers' lists), recorded as ``"damaged"`` (``[]`` for none) for the exports to mark
    (``activities.shard_results.shards_damaged``). Why: the exports read no view's header nor results for them, and
    the workers' lists alone miss a name only a view or the results hold (an attempt that died before its list);
    a record without the key (a merge before it) leaves the exports to those lists, as before."""
    results = merged_results(listed)
    if results:
        record: dict[str, Any] = {"results": results}
        if damaged is not None:
            record["damaged"] = damaged
        store.write_compact_json(container, layout.shard_merged_blob(task_id, layout.shard_id(index)), record)


def was_merged(store: BlobStore, container: str, task_id: str, index: int, listed: dict[str, str]) -> bool:
    """Whether shard ``index``'s results blobs in ``listed`` are exactly those the merge took it from, with the same
    ETags (``record_merged``). False without a record: a merge that ran before records existed, or none yet."""
    name = layout.shard_merged_blob(task_id, layout.shard_id(index))
    if name not in listed:
        return False
    record = store.read_json_or_none(container, name)
    return isinstance(record, dict) and record.get("results") == merged_results(listed)


# how a shard's list document that reports no names not found starts (``activities.image_list.write_list_shards``:
# compact JSON, ``not_found`` first)
NONE_NOT_FOUND = b'{"not_found":[],'


def listed_not_found(store: BlobStore, settings: Settings, task_id: str, index: int,
                     listed: dict[str, str]) -> list[dict[str, Any]]:
    """The failed entries of the image list's names not found that shard ``index`` reports (``activities.
    image_list``), as the merge puts them after the shard's own images (``activities.merge._merged_shard``); none
    for a shard without a list document (read only when ``listed`` shows one). A document's first bytes say when it
    reports none: it is read whole only otherwise, as it holds every image's row (44 MB of Python heap parsed, at
    100,000 images: ``bench/exports_memory.py``)."""
    name = layout.shard_list_blob(task_id, layout.shard_id(index))
    if name not in listed:
        return []
    try:
        if read_range(store, settings.container, name, 0, len(NONE_NOT_FOUND)) == NONE_NOT_FOUND:
            return []
    except ResourceNotFoundError:  # deleted since the listing: as read_json_or_none finds it
        return []
    doc = store.read_json_or_none(settings.container, name)
    names = (doc or {}).get("not_found") or []
    return [mdformat.failure_entry(n, mdformat.FAILURE_IMAGE_ACCESS, REASON_LISTED_NOT_FOUND) for n in names]


def clean_view(store: BlobStore, settings: Settings, task_id: str, index: int, threshold: float,
               listed: dict[str, str], part: str = "merge", not_found_after: bool = False,
               columns: tuple[str, ...] | None = None, given_etag: str = "",
               merged: bool = False) -> ShardView | None:
    """The worker's merge view of shard ``index`` when the merge may use it instead of the entries: the view of the
    shard's last attempt that wrote results, which covers every attempt (a resubmitted attempt's worker merges the
    earlier results into it: ``ShardManifest.merge_view_basis``); the shard reused no results; and the view names the results and first manifest as they are now and exactly the
    earlier results listed now (``listed``: the shard's blobs and ETags, from the one listing the entry path needs
    too), this task and this threshold (``gpu_batch.formats.mergeview``). Reads the view's header and the sections
    of ``part`` (``mergeview.PARTS``): one or two ranged reads. An image-list shard's view covers its own images
    only: ``not_found_after`` when the caller puts the list's names not found after them (the merge part:
    ``listed_not_found``), else such a shard has no usable view unless it reports none (one more small read).
    ``columns`` (the exports'): the image list's metadata columns the view's export lines must have been made with,
    from the shard's list document as listed now; () for lines made without list rows. None (the merge's): the
    view's merge sections, which no list row changes, whatever its export lines were made with. ``given_etag``
    (with ``columns``): the deployments' first facts the view's Camtrap DP lines must have started from
    (``layout.list_facts_blob`` as it is now; "" none). ``merged`` (the exports'): only a view of the results the
    merge took the shard from (``was_merged``), so the exports agree with the results file; one more small read."""
    sid = layout.shard_id(index)
    results = {a: name for name in listed if (a := layout.attempt_of_results_blob(name)) is not None}
    if not results:
        return None
    last = max(results)
    view_name = layout.attempt_view_blob(task_id, sid, last)
    manifest_name = layout.manifest_blob(task_id, sid, 1)
    if view_name not in listed or manifest_name not in listed or layout.manifest_blob(task_id, sid, 0) in listed:
        return None
    if merged and not was_merged(store, settings.container, task_id, index, listed):
        return None
    if not not_found_after and listed_not_found(store, settings, task_id, index, listed):
        return None
    # HEAD_BYTES may pass the end of a small view: Get Blob answers a range that ends beyond the blob with the bytes up
    # to its end (only a start beyond it is 416), and the SDK sizes the download from Content-Range, "unless it is over
    # the end of the file" (azure-storage-blob 12.31, _download.py, _initial_request); Azurite does the same
    # (tests/integration/test_fanin.py reads views far smaller than HEAD_BYTES)
    def fetch(offset: int, length: int) -> bytes:
        try:
            return read_range(store, settings.container, view_name, offset, length)
        except ResourceNotFoundError as exc:  # deleted while a STREAMED view's sections are read: not used then
            raise TornView(f"{view_name}: deleted since the listing") from exc

    try:
        view = read_view_part(read_range(store, settings.container, view_name, 0, HEAD_BYTES), fetch, part)
    except (ResourceNotFoundError, TornView):  # deleted since the listing (its task's work cleaned up): the entries
        return None
    except LongHeader as exc:  # the shard loses the fast path: said, since it costs control-plane CPU per image
        logger.warning("task %s shard %s: the worker's merge view is not used, its entries are read instead: %s",
                       task_id, sid, exc)
        return None
    earlier = {name: listed[name] for attempt, name in results.items() if attempt != last}
    if view is None or not view.matches(task_id, threshold, listed[results[last]], listed[manifest_name], earlier):
        return None
    if columns is not None and not _made_with_list(view, columns, listed.get(layout.shard_list_blob(task_id, sid)),
                                                   given_etag):
        return None
    return view


def _made_with_list(view: ShardView, columns: tuple[str, ...], etag: str | None, given_etag: str = "") -> bool:
    """Whether a view's export lines were made with the image-list rows the exports would use: none for a task
    without metadata columns, else the shard's list document as it is now (its ETag), the task's columns and the
    deployments' first facts as they are now (or none on both sides)."""
    if not columns:
        return not view.list_etag
    return (bool(etag) and view.list_etag == plain_etag(etag or "") and view.list_columns == tuple(columns)
            and view.list_given_etag == plain_etag(given_etag))


def iter_export_views(store: BlobStore, settings: Settings, task_id: str, first_shard: int, shards: int,
                      threshold: float, plain: bool, part: str = "exports",
                      columns: tuple[str, ...] = (), given_etag: str = "") -> Iterator[ShardView | None]:
    """The workers' merge views of shards ``first_shard .. +shards`` (``clean_view``) for an exports activity at
    ``threshold``, whose COCO, Camtrap DP and Zooniverse lines it may write instead of formatting the entries
    (``gpu_batch.formats.mergeview``; ``part``: the sections read, ``"zooniverse"`` for Zooniverse's rows alone,
    ``mergeview.STREAMED`` for the exports' sections where they lie, read a slice at a time by the caller), one at a
    time, so a caller holds one shard's lines, not a part's (~2.6 kB an image: 500 MB for a part of 200,000 images),
    or with ``STREAMED`` a few slices of them (a shard of 100,000 images' lines held took 226 MB). Yields ``None``
    and stops at the first shard without a usable view, or at once when there is none to use; a view is usable only
    of the results the merge took its shard from (``was_merged``): the exports then agree with the results file.
    Nor is the view of a shard with photos cut short (``ShardView.damaged``, else ``shard_damaged``): the worker
    made its lines as of whole photos, and the exports treat those apart (``gpu_batch.formats.entries.CUT_SHORT``).
    ``plain``: the exports have MegaDetector's categories and the original variant (what a view's lines assume);
    ``columns``, ``given_etag``: the image list's metadata columns and first facts (``clean_view``)."""
    if not plain or shards <= 0:
        yield None
        return
    for index in range(first_shard, first_shard + shards):
        listed = store.list_etags(settings.container, layout.shard_prefix(task_id, layout.shard_id(index)))
        view = clean_view(store, settings, task_id, index, threshold, listed, part, columns=columns,
                          given_etag=given_etag, merged=True)
        if view is not None and (view.damaged if view.damaged is not None else
                                 shard_damaged(store, settings, task_id, layout.shard_id(index), listed)):
            view = None  # photos cut short: their lines are the exports' (gpu_batch.formats.entries.CUT_SHORT)
        yield view
        if view is None:
            return


def export_views(store: BlobStore, settings: Settings, task_id: str, first_shard: int, shards: int, threshold: float,
                 plain: bool, part: str = "exports", columns: tuple[str, ...] = (),
                 given_etag: str = "") -> list[ShardView] | None:
    """Every view ``iter_export_views`` gives, or None unless every shard has a usable one (for a section as small
    as Zooniverse's rows, ~130 bytes an image)."""
    found = []
    for view in iter_export_views(store, settings, task_id, first_shard, shards, threshold, plain, part, columns,
                                  given_etag):
        if view is None:
            return None
        found.append(view)
    return found


def write_folders(store: BlobStore, container: str, task_id: str, part: int, folders: FolderRows,
                  work: str = "") -> None:
    """Each folder's eligible detections as one JSON line ``[folder, [[file, cat, x, y, w, h, conf], ...]]``, folders
    in name order (``gpu_batch.formats.jsonio``'s compact form), and the index ``[[folder, offset, length, detections],
    ...]`` the combine plans from (in the work folder ``work``: the merge's, or a search run again's)."""
    index: list[list[Any]] = []
    with BlockBlobWriter(store, container, layout.merge_part_blob(task_id, part, "folders.jsonl", work),
                         "application/x-ndjson") as lines:
        for folder in sorted(folders.text):
            line = b"[" + jsonio.dumps(folder) + b",[" + b",".join(folders.text[folder]) + b"]]\n"
            index.append([folder, lines.bytes_written, len(line), folders.count[folder]])
            lines.write(line)
    store.write_bytes(container, layout.merge_part_blob(task_id, part, "folders-index.json", work),
                      json.dumps(index, ensure_ascii=False).encode("utf-8"), "application/json")


def run_merge_combine(payload: c.MergeCombineInput, settings: Settings, store: BlobStore) -> c.MergeCombineOutput:
    task_id, variant = payload["task_id"], payload["variant"]
    # a terminated run's: it would delete what the run replacing it made of its results, then compose over them
    refuse_if_superseded(store, settings, payload, "the merge's combine")
    settings = task_settings(settings, store, task_id)  # the sample's threshold, as the parts' (activities.decided)
    container = settings.container
    enumeration = store.read_json(container, layout.enumeration_blob(task_id))
    removed = payload.get("removed") if variant == REPEATS_REMOVED else None
    info = _results_info(task_id, payload["model"], payload["completed_at"], enumeration,
                         (removed or []) if variant == REPEATS_REMOVED else None, payload["failure_reasons"])
    if variant != REPEATS_REMOVED:  # the variant's first step deletes its own (run_prepare_removal)
        drop_made_from_other_results(store, settings, task_id, info)
    json_sizes, csv_sizes = payload["json_bytes"], payload["csv_bytes"]
    pieces: list[Piece] = [fanin.results_head(info)]
    pieces += [(layout.merge_part_blob(task_id, p, "json", variant), off, n) for p, off, n in fanin.json_ranges(json_sizes)]
    pieces.append(fanin.RESULTS_TAIL)
    how = compose_blob(store, container, layout.results_blob(task_id, variant), pieces)
    header = io.StringIO(newline="")
    csv.writer(header).writerow(CSV_COLUMNS)
    table: list[Piece] = [header.getvalue().encode("utf-8")]
    table += [(layout.merge_part_blob(task_id, p, "csv", variant), 0, n) for p, n in enumerate(csv_sizes) if n > 0]
    compose_blob(store, container, layout.csv_blob(task_id, variant), table, "text/csv; charset=utf-8")

    sampler = PreviewSampler(task_id, task_threshold(store, settings, task_id, payload["model"]))
    for part in range(len(json_sizes)):
        sampler.absorb(store.read_json(container, layout.merge_part_blob(task_id, part, "sample.json", variant)))
    sample = {**sampler.result(), "info": {**info, "failure_reasons": dict(sorted(payload["failure_reasons"].items()))},
              "detection_categories": mdformat.DETECTION_CATEGORIES, "images": payload["images"]}
    store.write_bytes(container, layout.preview_sample_blob(task_id, variant),
                      json.dumps(sample, ensure_ascii=False).encode("utf-8"), "application/json")
    examples = (write_damaged(store, container, task_id, list(payload.get("damaged_bytes") or []))
                if variant != REPEATS_REMOVED else [])
    groups = 0
    if variant != REPEATS_REMOVED:
        groups = plan_groups(store, container, task_id, len(json_sizes),
                             payload.get("detections_per_group", fanin.SEARCH_DETECTIONS_PER_GROUP),
                             # a combine recorded before the cap existed: the app's setting, as the task's knobs say
                             max_folder_detections=payload.get("max_folder_detections",
                                                               settings.knobs.repeat_max_folder_detections))
    logger.info("task %s: combined %d merge parts (%s), %d repeat-search groups", task_id, len(json_sizes), how, groups)
    out: c.MergeCombineOutput = {"container": container, "search_groups": groups, "exports_parts": True,
                                 "exports_one_part": True}
    if examples:
        out["damaged_examples"] = examples
    return out


def drop_made_from_other_results(store: BlobStore, settings: Settings, task_id: str, info: dict[str, Any]) -> int:
    """Before the combine writes the results (``info``: their head's), delete what another merge's results under
    the same key were made into: the exports, the CSVs at other thresholds, the README and the repeated-detection
    list (not the repeats-removed variant's files); how many went. Another merge's: a results file there whose
    completion time is not this merge's (a failed or terminated run that a plain request resumes merges again under
    the same key, ``api.starters._generations``, and shards given up before may now have results). Why: when this
    run's repeat search or exports then failed, links and the results zip (``adapters.share_links``) handed out that
    list and those exports beside results they do not describe, while the status said no list and no exports were
    written. Missing is honest; stale is not (as ``run_prepare_removal`` for a removal). Not this merge's own files:
    a combine run again after the search and the exports wrote them ("each called activity function will be executed
    at least once", Durable Task's ``TaskActivity`` reference, learn.microsoft.com) finds its own results there, of
    its completion time, and deletes nothing."""
    from activities.exports import read_results_head  # here: activities.exports imports this module

    container = settings.container
    try:
        head, _ = read_results_head(store, container, layout.results_blob(task_id))
    except ResourceNotFoundError:  # no results yet: nothing was made from any
        return 0
    except ValueError:  # not the merge's layout: another's results all the same
        head = {}
    if (head.get("info") or {}).get("detection_completion_time") == info["detection_completion_time"]:
        return 0
    own = layout.exports_prefix(task_id)
    others = layout.exports_prefix(task_id, REPEATS_REMOVED)  # a folder under the original's: not ours to delete
    gone = sum(store.delete_if_exists(container, name) for name in list(store.list_names(container, own))
               if not name.startswith(others))
    gone += delete_prefix(store, container, layout.threshold_csv_prefix(task_id))
    gone += drop_readme(store, settings, task_id, "")
    gone += store.delete_if_exists(container, layout.repeats_blob(task_id))
    if gone:
        logger.info("task %s: %d files made from an earlier merge's results deleted before the results are written "
                    "again", task_id, gone)
    return gone


def plan_groups(store: BlobStore, container: str, task_id: str, parts: int, per_group: int, work: str = "",
                max_folder_detections: int | None = None) -> int:
    """Plan the search's folder groups from the parts' folder indexes (``core.fanin.plan_search``), write each
    group's plan and the folders left out for holding more than ``max_folder_detections`` eligible detections (None:
    the default cap, ``RepeatOptions``), and return how many groups there are. The skipped folders are written even
    when there are none, so a list from an earlier search in the same work folder is never read as this one's.
    Memory: the folders' rows (``core.fanin.search_groups``), one part's index as read and one group's plan (all
    the parts' indexes and every group held at once were ~450-520 bytes a folder: 524 MB at a million folders)."""
    def indexes() -> Iterator[Any]:
        for p in range(parts):
            yield store.read_json(container, layout.merge_part_blob(task_id, p, "folders-index.json", work))

    cap = max_folder_detections if max_folder_detections is not None else RepeatOptions().max_folder_detections
    skipped: list[tuple[str, int]] = []
    groups = 0
    for group in fanin.search_groups(indexes(), per_group, cap, skipped):
        store.write_bytes(container, layout.repeat_search_blob(task_id, groups, "plan.json", work),
                          json.dumps(group, ensure_ascii=False).encode("utf-8"), "application/json")
        groups += 1
    store.write_bytes(container, layout.repeat_search_skipped_blob(task_id, work), json.dumps(
        {"max_folder_detections": cap, "folders": skipped}, ensure_ascii=False).encode("utf-8"),
        "application/json")
    if skipped:
        logger.warning("task %s: %d folder(s) over %d eligible detections are not searched for repeats (largest: %s)",
                       task_id, len(skipped), cap, max(skipped, key=lambda f: f[1]))
    return groups


SEARCH_READ_BYTES = 16 << 20  # a repeat-search group reads its folders' lines this much at a time


def range_lines(store: BlobStore, container: str, name: str, offset: int, length: int,
                chunk: int | None = None) -> Iterator[bytes]:
    """The lines of ``length`` bytes of a blob from ``offset`` (whole lines: a range a plan names), read ``chunk``
    bytes at a time so a group's range is never held whole (a range can be a part's share of 400,000 detections)."""
    rest = b""
    end, chunk = offset + length, chunk or SEARCH_READ_BYTES
    while offset < end:
        data = read_range(store, container, name, offset, min(chunk, end - offset))
        if not data:
            raise ValueError(f"{name}: {end - offset} bytes of a planned range were not there (from {offset})")
        offset += len(data)
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        yield from (line for line in lines if line)
    if rest:
        yield rest


def run_search_repeats(payload: c.SearchRepeatsInput, settings: Settings, store: BlobStore) -> c.SearchRepeatsOutput:
    task_id, group = payload["task_id"], payload["group"]
    refuse_if_superseded(store, settings, payload, f"repeat search group {group}")
    container = settings.container
    work = payload.get("work", "")
    plan = store.read_json(container, layout.repeat_search_blob(task_id, group, "plan.json", work))
    options = RepeatOptions.from_dict(payload.get("options") or {})
    # each folder's search is fed as its lines come (part order, then line order: stream order) and ends after its
    # last line (the plan's "last": the range holding it; a folder's lines are contiguous in a range), so memory holds
    # the candidates of the folders being read and one chunk of lines, not the group's (a plan written before "last"
    # existed ends every folder after the last range)
    last: dict[str, int] = plan.get("last") or {}
    searches = {folder: FolderSearch(folder, options) for folder in plan["folders"]}
    done: dict[str, list[dict[str, Any]]] = {}

    def end(folder: str | None, index: int) -> None:
        if folder is not None and last.get(folder) == index and folder in searches:
            done[folder] = searches.pop(folder).suspicious()

    for index, (part, offset, length) in enumerate(plan["ranges"]):
        current: str | None = None
        for line in range_lines(store, container, layout.merge_part_blob(task_id, part, "folders.jsonl", work),
                                offset, length):
            folder, detections = jsonio.loads(line)
            if folder != current:
                end(current, index)
                current = folder
            search = searches.get(folder)
            if search is not None:
                search.add_rows(detections)
        end(current, index)
    found: list[dict[str, Any]] = []
    for folder in plan["folders"]:
        found.extend(done.pop(folder) if folder in done else searches.pop(folder).suspicious())
    store.write_bytes(container, layout.repeat_search_blob(task_id, group, "found.json", work),
                      json.dumps(found, ensure_ascii=False).encode("utf-8"), "application/json")
    return {"group": group, "locations": len(found)}


def run_rank_repeats(payload: c.RankRepeatsInput, settings: Settings, store: BlobStore) -> c.RankRepeatsOutput:
    """Rank the groups' findings into the task's repeats document, replacing the one there. A search run again
    writes its ``search`` id and time first, so a reader can tell the lists apart (the merge's has neither). The
    folders the plan left out (``plan_groups``; none from a plan made before it wrote them) are named in the document
    and counted in the output (counts only: the output is kept in the orchestration's history)."""
    task_id, work = payload["task_id"], payload.get("work", "")
    refuse_if_superseded(store, settings, payload, "the repeat search's ranking")
    found: list[dict[str, Any]] = []
    for g in range(payload["groups"]):
        found.extend(store.read_json(settings.container, layout.repeat_search_blob(task_id, g, "found.json", work)))
    planned = store.read_json_or_none(settings.container, layout.repeat_search_skipped_blob(task_id, work)) or {}
    skipped = [(str(folder), int(n)) for folder, n in planned.get("folders") or []]
    options = RepeatOptions.from_dict(payload.get("options") or {})
    if planned.get("max_folder_detections"):  # the cap the plan used (the merge's comes from the knobs, not options)
        options = dataclasses.replace(options, max_folder_detections=int(planned["max_folder_detections"]))
    result = rank_locations(found, options, payload["detections_considered"], skipped, task_id)
    head: dict[str, Any] = {"task_id": task_id}
    if "search" in payload:
        head.update(search=payload["search"], searched=payload.get("searched", ""))
    store.write_bytes(settings.container, layout.repeats_blob(task_id), json.dumps(
        {**head, **result}, ensure_ascii=False).encode("utf-8"), "application/json")
    out: c.RankRepeatsOutput = {"locations": len(result["locations"])}
    if skipped:
        out["folders_skipped"] = len(skipped)
        out["detections_skipped"] = sum(n for _, n in skipped)
    return out


def run_clean_merge_work(payload: c.CleanMergeWorkInput, settings: Settings, store: BlobStore) -> c.CleanMergeWorkOutput:
    """Delete the fan-in's work blobs of one variant (fragments as large as the results themselves); not those of the
    run that replaced a terminated one, whose merge may be reading them (``activities.superseded``)."""
    refuse_if_superseded(store, settings, payload, "the merge's cleanup")
    deleted = delete_prefix(store, settings.container, layout.merge_work_prefix(payload["task_id"],
                                                                                payload.get("variant", "")))
    return {"deleted": deleted}


@bp.activity_trigger(input_name="payload", activity=c.CLEAN_MERGE_WORK)
@failures_without_secrets
def clean_merge_work(payload: c.CleanMergeWorkInput) -> c.CleanMergeWorkOutput:
    s = clients.settings()
    return run_clean_merge_work(payload, s, clients.store(s))


def run_prepare_removal(task_id: str, remove: list[str], settings: Settings,
                        store: BlobStore) -> c.PrepareRemovalOutput:
    """A new removal's first step: delete the repeats-removed variant's exports, threshold CSVs and README, then write
    the chosen ids to ``layout.removal_choice_blob`` for the merge parts.

    Why delete: they were made from the earlier removal's results. The new removal rewrites the results and (when its
    exports step succeeds) the exports, but never the CSVs at other thresholds (``POST .../previews`` writes those),
    and a failed exports step left the earlier ones: links and the results zip (``adapters.share_links``) handed them
    out beside the new results, counting detections the new file no longer has. Missing is honest; stale is not
    (``POST .../previews`` makes the threshold CSVs again, the status' ``exports_error`` says the exports failed).
    Why a blob: every merge part's input carried the whole list (``contracts.PREPARE_REMOVAL``).
    """
    gone = 0
    stale = (layout.exports_prefix(task_id, REPEATS_REMOVED), layout.threshold_csv_prefix(task_id, REPEATS_REMOVED))
    for prefix in stale:
        gone += delete_prefix(store, settings.container, prefix)
    # its README lists those files: gone with them, written again when the removal publishes (activities.readme)
    gone += drop_readme(store, settings, task_id, REPEATS_REMOVED)
    if gone:
        logger.info("task %s: %d files of an earlier repeated-detection removal deleted before the new one", task_id,
                    gone)
    name = layout.removal_choice_blob(task_id)
    store.write_json(settings.container, name, {"remove": sorted(remove)})
    return c.PrepareRemovalOutput(deleted=gone, remove_blob=name)


@bp.activity_trigger(input_name="payload", activity=c.PREPARE_REMOVAL)
@failures_without_secrets
def prepare_removal(payload: c.PrepareRemovalInput) -> c.PrepareRemovalOutput:
    s = clients.settings()
    return run_prepare_removal(payload["task_id"], payload["remove"], s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.READ_ENUMERATION)
@failures_without_secrets
def read_enumeration(payload: c.ReadEnumerationInput) -> c.EnumerateOutput:
    s = clients.settings()
    return run_read_enumeration(payload["task_id"], s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.MERGE_PART)
@failures_without_secrets
def merge_part(payload: c.MergePartInput) -> c.MergePartOutput:
    s = clients.settings()
    return run_merge_part(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.MERGE_COMBINE)
@failures_without_secrets
def merge_combine(payload: c.MergeCombineInput) -> c.MergeCombineOutput:
    s = clients.settings()
    return run_merge_combine(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.SEARCH_REPEATS)
@failures_without_secrets
def search_repeats(payload: c.SearchRepeatsInput) -> c.SearchRepeatsOutput:
    s = clients.settings()
    return run_search_repeats(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.RANK_REPEATS)
@failures_without_secrets
def rank_repeats(payload: c.RankRepeatsInput) -> c.RankRepeatsOutput:
    s = clients.settings()
    return run_rank_repeats(payload, s, clients.store(s))
