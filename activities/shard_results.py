"""Reading what the GPU workers wrote for a shard: every attempt's results, their coverage, a running attempt's counter.

Why one module: the poll (coverage decides what to resubmit), the resubmission (which images are missing) and the
merge (which entry wins) must read attempts the same way; unreadable results count as none everywhere. An image is
covered by a success or a permanent failure; a retryable failure (``failure_kind``, see ``gpu_batch.manifest``)
leaves it missing, so it is resubmitted, and the rules are ``core.mdformat``'s, which the merge uses too.

The poll and the resubmission need only counts and the few names still missing, so they first try the coverage
summaries the workers write beside their results (``layout.attempt_coverage_blob``; ``gpu_batch.manifest``): one
listing of the shard (with ETags) and one small read per attempt, instead of parsing every attempt's results. They
parse the results, as the merge does, whenever a summary cannot be trusted: an attempt with results but no summary
(an older worker or app, a worker that died before its last flush, too many names left not final), a summary
whose ETag is not the results blob's now (stale or torn), or attempts that did not run exactly what the previous
ones left (``gpu_batch.manifest.combine_coverage``). An attempt that wrote no results (an exit 69, a crash) covers
nothing and needs no summary (``summarized_coverage``). Both ways give the same numbers
(tests/integration/test_shard_coverage.py).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Iterator

from azure.core.exceptions import ResourceNotFoundError

from adapters.blobs import BlobStore
from core import mdformat
from core.settings import Settings
from core.shards import missing_images
from gpu_batch import layout
from gpu_batch import manifest as contract
from gpu_batch.formats import jsonio
from gpu_batch.formats.entries import damaged_in

logger = logging.getLogger(__name__)
PROGRESS_READ_LIMIT = 4096  # a progress counter is a few bytes; anything larger is not one


def shard_blobs(store: BlobStore, settings: Settings, task_id: str, sid: str) -> set[str]:
    """The names under the shard's prefix, in one listing: a reader given them reads only blobs that exist (the merge
    of a shard went from five requests to three: each costs ~5 ms of SDK CPU here, and two were reads that 404)."""
    return set(store.list_names(settings.container, layout.shard_prefix(task_id, sid)))


def shard_attempt_results(store: BlobStore, settings: Settings, task_id: str, sid: str,
                          listed: set[str] | None = None,
                          damaged: set[str] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Result entries of each attempt of a shard, oldest attempt first; unreadable results count as none.
    ``listed``: the shard's names from ``shard_blobs`` (else it is listed here). ``damaged``, when given, gains the
    names each parsed document's ``info.trapbatch.damaged`` lists (photos cut short: ``gpu_batch.formats.entries.
    damaged_in``), as each attempt is yielded. Why here: a reader that parses the results anyway (the merge's entry
    path, the reuse step) gets them with no read of its own, and from the document itself, which is atomic with its
    entries, where ``layout.attempt_damaged_blob`` may be missing or stale (a worker that died between the writes)."""
    attempts: list[tuple[int, str]] = []
    names = listed if listed is not None else store.list_names(settings.container, layout.shard_prefix(task_id, sid))
    for name in names:
        attempt = layout.attempt_of_results_blob(name)
        if attempt is not None:
            attempts.append((attempt, name))
    for attempt, name in sorted(attempts):
        try:
            doc = jsonio.loads(store.read_bytes(settings.container, name))
            entries = doc.get("images") if isinstance(doc, dict) else None
        except (ValueError, UnicodeDecodeError):
            entries = None
        if not isinstance(entries, list):
            logger.warning("task %s shard %s attempt %d: results are not valid JSON; ignoring them", task_id, sid, attempt)
            continue
        if damaged is not None:
            damaged.update(damaged_in(doc))
        yield [e for e in entries if isinstance(e, dict)]


def shard_manifest(store: BlobStore, settings: Settings, task_id: str, sid: str,
                   listed: set[str] | None = None) -> dict[str, Any]:
    """The manifest that lists every image of the shard: attempt 1's, as the enumeration wrote it, except in a re-run
    with ``only_new`` that reuses some of the shard's results (``activities.reuse``): there attempt 0's lists them all
    (its results are the reused entries) and attempt 1's only the images still to run. Poll, resubmission and merge
    read the shard's images here, so reused entries count as final results and each image is merged once.
    ``listed``: the shard's names from ``shard_blobs``; attempt 0's manifest is then read only if it is there."""
    reused_name = layout.manifest_blob(task_id, sid, 0)
    reused = (store.read_json_or_none(settings.container, reused_name)
              if listed is None or reused_name in listed else None)
    if isinstance(reused, dict):
        return reused
    first: dict[str, Any] = store.read_json(settings.container, layout.manifest_blob(task_id, sid, 1))
    return first


def summarized_coverage(store: BlobStore, settings: Settings, task_id: str,
                        sid: str) -> contract.ShardCoverage | None:
    """The shard's coverage from its attempts' coverage summaries, or None when they cannot be trusted for every
    attempt that has results (the callers then parse the results). Costs one listing of the shard and one read of a
    small blob per attempt; the results are never read, the manifest only where the shard's first attempts wrote no
    results.

    An attempt without results (an exit 69, a crash before its first flush) covers nothing: it is left out, as
    ``combine_coverage`` says. Where it was the shard's first, the oldest attempt with results must have run the whole
    shard, which only the shard manifest's names show (its summary names its own manifest's ETag): they are read then,
    one document of names, where giving up parsed that manifest and every attempt's results (megabytes for 10,000
    images) at each later poll and resubmission of the shard. An attempt with results but no summary still gives
    up, as before."""
    listed = store.list_etags(settings.container, layout.shard_prefix(task_id, sid))
    attempts = sorted((a, name) for name in listed if (a := layout.attempt_of_results_blob(name)) is not None)
    first = 0 if layout.manifest_blob(task_id, sid, 0) in listed else 1  # whose manifest lists the shard's images
    if not attempts or attempts[0][0] < first:
        return None
    summaries: list[contract.CoverageSummary] = []
    for attempt, name in attempts:
        summary_name = layout.attempt_coverage_blob(task_id, sid, attempt)
        if summary_name not in listed:
            return None
        summary = contract.read_coverage_summary(store.read_bytes_or_none(settings.container, summary_name))
        if summary is None or not summary.matches(listed[name]):
            return None
        summaries.append(summary)
    shard_names = None
    if attempts[0][0] > first:  # the first attempts wrote nothing: did the oldest with results run the whole shard?
        shard_names = _manifest_names(store, settings, layout.manifest_blob(task_id, sid, first))
        if shard_names is None:
            return None
    return contract.combine_coverage(listed.get(layout.manifest_blob(task_id, sid, first), ""), summaries, shard_names)


def _manifest_names(store: BlobStore, settings: Settings, name: str) -> list[str] | None:
    """The image names of manifest blob ``name``; None when it is missing or not a manifest (the caller parses)."""
    try:
        doc = jsonio.loads(store.read_bytes_or_none(settings.container, name) or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not all(isinstance(n, str) for n in images):
        return None
    return images


def parsed_coverage(store: BlobStore, settings: Settings, task_id: str, sid: str) -> dict[str, int]:
    """``shard_coverage`` by parsing the shard's manifest and every attempt's results (what summaries stand in for)."""
    manifest = shard_manifest(store, settings, task_id, sid)
    return mdformat.coverage(manifest["images"], shard_attempt_results(store, settings, task_id, sid))


def shard_coverage(store: BlobStore, settings: Settings, task_id: str, sid: str) -> dict[str, int]:
    """How many of the shard's images have a final result (from any attempt), and how many of those are permanent
    failures; ``missing`` counts the rest (never written, or only retryable failures, counted in ``retryable``).
    From the attempts' coverage summaries when they can be trusted, else by parsing the results."""
    summarized = summarized_coverage(store, settings, task_id, sid)
    return summarized.counts if summarized is not None else parsed_coverage(store, settings, task_id, sid)


def finished_coverage(store: BlobStore, settings: Settings, task_id: str, sid: str,
                      names: list[str]) -> dict[str, int] | None:
    """``names``' coverage (``core.mdformat.coverage``) over the shard's attempts 1 and later, when every one of them
    has a final result there (a success or a permanent failure); None when one has none, or ``names`` is empty.

    Why: a resumed run's listing (``activities.enumerate.run_write_shards``) learns here which shards, as it cut them,
    need no pool task: their attempts already finished every image (the earlier run's, and the entries the listing
    carried into attempt 1: ``activities.carried_results``); its shard groups start them done, as an ``only_new``
    re-run's reused shards (``orchestrations.task``). Before, each such shard's attempt 1 started a worker that found
    nothing to do (~13 s a fresh process on a GPU node: ``bench/RESULTS.md``). Parsed, not from the coverage
    summaries: the listing has just written the shard's manifest, whose new ETag no summary names
    (``gpu_batch.manifest.combine_coverage``), so they would say "parse" anyway. Attempt 0 (an ``only_new`` key's
    reused copies, which its reuse step writes again after the listing) is not read: the caller asks only for keys
    without it. Sound as the poll's rule (a shard is done when its results cover every image of its manifest): the
    names are those the listing just wrote, after it dropped the entries of images replaced since and carried in
    the earlier ones (``activities.replaced_images``, ``activities.carried_results``); a late worker of the ended run
    (its job closed before the listing) can only add entries. Costs one listing of the shard; where attempt 1 has
    results, a parse of each attempt's, one at a time (~10 MB at 10,000 images, a fraction of a second, where the
    pool task cost ~13 s of a GPU node). The merge then takes such a shard's entries by parsing too: the worker's
    merge view names the manifest before the listing rewrote it (``activities.fanin``), ~35 us an image on the
    Functions host, which a worker run again would have rebuilt on its node."""
    counts = earlier_coverage(store, settings, task_id, sid, names)
    return counts if counts is not None and counts["missing"] == 0 else None


def earlier_coverage(store: BlobStore, settings: Settings, task_id: str, sid: str,
                     names: list[str], listed: set[str] | None = None) -> dict[str, int] | None:
    """``names``' coverage (``core.mdformat.coverage``) over the shard's attempts 1 and later as a resumed run's
    listing finds it, whether or not it covers every name (``finished_coverage``: the shards that need no pool task);
    None when ``names`` is empty or attempt 1 has no results (nothing read: a shard the earlier run never started, or
    whose attempt 1 wrote nothing and had nothing carried in). Why the partial counts too: the images of a shard sent
    to the pool that are final already (``covered``) are not this run's pool's work. The poll's coverage
    (``activities.pool._completed_row``, over every attempt, the same names) counts them, and only grows, so the task
    leaves them out of what its pool processed (``orchestrations.task._fail_if_the_pool_never_ran``): else a resumed
    run whose pool never ran a worker ended ``completed_with_errors``, the pool's reason hidden. Same reads as
    ``finished_coverage`` (it is this pass): none where attempt 1 has no results, which may leave a shard's earlier
    images counted as processed (the conservative side: the task ends as its images say, as before). ``listed``: the
    names under the shard's folder as they are now (the listing's one listing of it, ``activities.shard_folders``,
    which counts the attempt 1 results the carry just wrote), else it is listed here."""
    if not names:
        return None
    if listed is None:
        listed = shard_blobs(store, settings, task_id, sid)
    ones = {n for n in listed if (a := layout.attempt_of_results_blob(n)) is not None and a >= 1}
    if layout.attempt_results_blob(task_id, sid, 1) not in ones:  # attempt 1 has run nothing: not all finished
        return None
    return mdformat.coverage(names, shard_attempt_results(store, settings, task_id, sid, ones))


def done_images(store: BlobStore, settings: Settings, task_id: str, sid: str) -> set[str]:
    """Names of the shard's images that must NOT be run again: a success or a permanent failure in some attempt."""
    return mdformat.final_files(shard_attempt_results(store, settings, task_id, sid))


def images_to_rerun(store: BlobStore, settings: Settings, task_id: str, sid: str, images: Iterable[str]) -> list[str]:
    """Of the shard's ``images`` (its manifest's, in order), those without a final result in any attempt: what a
    resubmission runs (never written, or only retryable failures). From the coverage summaries' names when they can
    be trusted, else ``core.shards.missing_images(images, done_images(...))`` over the parsed results."""
    summarized = summarized_coverage(store, settings, task_id, sid)
    if summarized is not None:
        return [name for name in images if name in summarized.not_final]
    return missing_images(images, done_images(store, settings, task_id, sid))


def shards_damaged(store: BlobStore, settings: Settings, task_id: str, first: int, count: int) -> frozenset[str]:
    """The photos cut short in shards ``first .. +count`` (an exports part's, or every shard for the single
    activity), for the exports to mark (``gpu_batch.formats.entries.mark_cut_short``): exactly those the merge
    listed in ``damaged.csv``. Empty at the cost of one request when the merge listed none (it writes
    ``layout.damaged_blob`` only when there are any: one list for both variants), else per shard the merge's record
    of it (``merged_damaged``: one small read), or for a shard merged before the record named them, one listing and
    ``shard_damaged``'s small reads of the workers' lists there are. Why the record first: the lists miss a name
    that only the shard's merge view or results hold (an attempt that died before its list), which the merge took
    into ``damaged.csv``. Memory: the names of those shards alone (an exports part's are at most its
    ``merge_images_per_part`` images, as the merge part holding them; the single activity's, its own bound of ~1.9M
    images), never the task's list; the names cut short, never every image's."""
    if count <= 0 or not store.exists(settings.container, layout.damaged_blob(task_id)):
        return frozenset()
    names: set[str] = set()
    for index in range(first, first + count):
        sid = layout.shard_id(index)
        recorded = merged_damaged(store, settings, task_id, sid)
        if recorded is not None:
            names.update(recorded)
            continue
        names.update(shard_damaged(store, settings, task_id, sid,
                                   store.list_etags(settings.container, layout.shard_prefix(task_id, sid))))
    return frozenset(names)


def merged_damaged(store: BlobStore, settings: Settings, task_id: str, sid: str) -> list[str] | None:
    """The shard's photos cut short as the merge listed them in ``damaged.csv``, from its record of the shard
    (``layout.shard_merged_blob``'s ``damaged``: ``activities.fanin.record_merged``); None where it recorded none
    (a merge before the record named them, or a shard without results, which has none: the caller then reads the
    workers' lists). Taken whatever the shard's blobs are now: the exports format the results file that same merge
    wrote, so its list, not a later worker's, is theirs."""
    record = store.read_json_or_none(settings.container, layout.shard_merged_blob(task_id, sid))
    named = record.get("damaged") if isinstance(record, dict) else None
    return [n for n in named if isinstance(n, str)] if isinstance(named, list) else None


def shard_damaged(store: BlobStore, settings: Settings, task_id: str, sid: str, listed: dict[str, str],
                  parsed: set[str] | None = None) -> list[str]:
    """The shard's photos cut short (JPEGs decoded as far as they go: successes whose entries are MegaDetector's), from
    each attempt's ``layout.attempt_damaged_blob``, sorted; ``listed``: the shard's blobs and ETags (one listing).
    ``parsed``: the names every attempt's results ``info`` gave a caller that parsed them all already (the merge's
    entry path: ``shard_attempt_results(damaged=...)``); None when it did not (the merge took the view of a worker
    that did not name them in it; a view that does, ``mergeview.ShardView.damaged``, stands for this call).

    Costs nothing for a shard without any (no such blob is listed). A list whose results ETag is not the results
    blob's now (the worker died between the two writes, or another run rewrote the results) is not trusted: the names
    come from that results document's ``info`` (``gpu_batch.formats.entries.damaged_in``), read here unless ``parsed``
    has them. Why every attempt's: a success is final, so an image cut short is run, and named, by one attempt only (a
    run of the same attempt that resumed keeps the names with the entries).

    A list that is missing although the results name photos cut short (the worker died after a flush of results that
    named one, before it wrote the list) is covered only where the caller parsed the results anyway (``parsed``): a
    shard whose last attempt died so has no merge view, so the merge reads its entries, and the names with them, at
    no extra cost; likewise every shard that reused results (``activities.reuse``) or ran with no view. A shard
    merged from the view of a later attempt that finished gets every attempt's names from that view: its worker read
    the earlier results for it and names them in it (``mergeview.whole_shard``, ``build_view``), with its own, so
    neither a list never written nor one an attempt died before loses a name, and the merge reads no list there.
    Not covered: such a view by a worker older than those names (``ShardView.damaged`` None), which this call reads
    lists for. Looking further would mean reading, for every shard with an attempt whose list is missing, that
    attempt's whole results, whether it named any or not, and a missing list is what every shard without photos cut
    short has: the read the side list exists to spare."""
    names: set[str] = set(parsed or ())
    for name, etag in listed.items():
        attempt = layout.attempt_of_results_blob(name)
        damaged_name = layout.attempt_damaged_blob(task_id, sid, attempt) if attempt is not None else ""
        if damaged_name not in listed:
            continue
        try:
            doc = json.loads(store.read_bytes_or_none(settings.container, damaged_name) or b"null")
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict) and contract.plain_etag(str(doc.get("results_etag") or "")) == contract.plain_etag(etag):
            found = doc.get("damaged")
            if isinstance(found, list):
                names.update(n for n in found if isinstance(n, str))
            continue
        if parsed is not None:  # the caller parsed these results: their names are in ``parsed`` already
            continue
        try:
            names.update(damaged_in(jsonio.loads(store.read_bytes(settings.container, name))))
        except (ValueError, UnicodeDecodeError, ResourceNotFoundError):
            logger.warning("task %s shard %s: results %s unreadable; its photos cut short are not listed", task_id,
                           sid, name)
    return sorted(names)


def progress_count(store: BlobStore, settings: Settings, task_id: str, sid: str, attempt: int) -> int | None:
    """Images a running attempt has done so far, from the small counter the worker rewrites after each flush of its
    results (``layout.attempt_progress_blob``; ``gpu_batch.worker.results.progress_document``); None when there is
    no readable counter yet. One read of a few bytes: the results themselves (megabytes for a large shard) are
    never read for progress."""
    data = store.read_bytes_or_none(settings.container, layout.attempt_progress_blob(task_id, sid, attempt))
    if not data or len(data) > PROGRESS_READ_LIMIT:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    done = doc.get("images_done") if isinstance(doc, dict) else None
    return done if isinstance(done, int) and not isinstance(done, bool) and done >= 0 else None
