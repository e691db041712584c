"""Reuse a previous generation's results (``"only_new": true``): per shard of a re-run, what need not run again.

Why: a re-run over a container where a few images were added or replaced should cost the GPU time of those few. For
each shard of the new generation this activity finds the previous generation's entries for the shard's images whose
name AND ETag are unchanged (the ETags both enumerations recorded: ``layout.shard_etags_blob``) and whose entry is
final (a success or a permanent failure; a retryable failure or an image never processed runs again). It writes them
as the shard's *attempt 0* (``attempt-0.results.json``, read first by every reader of a shard's attempts), with
``attempt-0.json`` listing every image of the shard (``activities.shard_results.shard_manifest``), and rewrites
attempt 1's manifest to the images still to run. A shard with nothing left to run is then done without the pool
(the task orchestrator starts it as done); the merge emits each image once (reused entries are final results).
Attempt 0 also gets its coverage summary (``layout.attempt_coverage_blob``), as a worker's attempt does, so the
poll counts the shard without parsing the reused entries.

Photos cut short (``activities.shard_results.shard_damaged``) carry over with their entries: a reused success that the
previous generation named damaged (its results' ``info.trapbatch.damaged``, read from the documents this step parses
anyway, so free) is named again in attempt 0's ``info.trapbatch.damaged`` and, as a worker names its own, in
``layout.attempt_damaged_blob`` tied to attempt 0's results ETag. Why: its ETag is unchanged, so the photo is still
the same bytes cut short; without this a re-run's count and ``damaged.csv`` would drop every damaged photo it reused.

How the previous entries are found, in bounded memory: each enumeration records the name range of each shard it cut
(``layout.shard_ranges_blob``, one small blob per manifest write); a new shard reads only the previous shards whose
range holds one of its names, one at a time, keeping only the entries it reuses. A call reads the range blobs once
and indexes them (``PreviousRanges``): finding a shard's previous shards is a binary search, not a pass over every
previous range. Container listings and image lists (whose units are name ranges, ``core.imagelist.unit_bounds``) are
cut in name order, so that is one or two previous shards per new shard; an image list enumerated by an earlier
release, whose units were spread by a hash, costs more reads, never other answers. A previous generation enumerated
before ETags were recorded has no ranges: nothing is reused and every image runs again (as with ``rerun``). Images
deleted since are in no new shard, so they are simply not carried over.

Idempotent: a retried call finds attempt 0's manifest (every image) and writes the same blobs again (the summary
and the list of photos cut short after the results whose new ETag they name). A resumed run (its generation listed
again, maybe cut otherwise) finds the earlier run's attempt 0 only where its listing cut the shard alike: that
listing deleted any attempt 0 not made from its own manifest (``activities.replaced_images.drop_earlier_reuse``: by
the ``listing_run`` stamp the manifests carry, or the same fields but for it), so this step reads the shard as that
listing cut it. It stamps attempt 0 with that listing's run, which the shard's ETags document names (``listing``:
``activities.carried_results.etags_document``), not with the stamp of the manifest it read the shard in.
Must not: reuse an entry whose image's ETag changed or is unknown on either side; send a reused image to the pool.
"""
from __future__ import annotations

import bisect
import itertools
import logging
from typing import Any, Callable, Mapping, Sequence

import azure.durable_functions as df

from activities.enumerate import RECHECK_IMAGES
from activities.shard_results import shard_attempt_results, shard_manifest
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.blobs import BlobStore
from core import contracts as c
from core import mdformat
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import jsonio
from gpu_batch.manifest import ShardManifest, coverage_summary, is_failure, is_final
from gpu_batch.formats.entries import damaged_document

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def previous_ranges(store: BlobStore, settings: Settings, previous: str) -> list[tuple[str, str, str]]:
    """``(shard, first name, last name)`` of every shard of the previous generation that recorded its range, of the
    shards its last listing cut only (below the ``shards`` its summary, ``layout.enumeration_blob``, records).

    Why the count: a key is listed again when its failed or terminated run is resumed (``api.starters``), and a
    listing that finds fewer images (some deleted meanwhile) cuts fewer shards; the earlier listing's range blobs,
    manifests, ETags and results of the shards past the new count stayed (no listing deleted them). The merge reads
    only the shards below the count, so those shards are in no result the previous generation served, yet this step
    found its images in them too, with the same ETags, and the later one won: an ``only_new`` re-run took an image's
    entry from a run that was not served.
    A summary without a count (none written) keeps every range, as before."""
    summary = store.read_json_or_none(settings.container, layout.enumeration_blob(previous))
    count = summary.get("shards") if isinstance(summary, dict) else None
    ranges: list[tuple[str, str, str]] = []
    for name in store.list_names(settings.container, layout.shard_ranges_prefix(previous)):
        for row in store.read_json(settings.container, name) or []:
            if isinstance(count, int) and _shard_number(str(row[0])) >= count:
                continue
            ranges.append((str(row[0]), str(row[1]), str(row[2])))
    return ranges


def _shard_number(sid: str) -> int:
    """The shard's index; past any count for a row that names no shard (never a shard of the listing)."""
    try:
        return layout.shard_index(sid)
    except ValueError:
        return 1 << 62


class PreviousRanges:
    """The previous generation's shard ranges, indexed to find those that can hold one of a shard's names.

    Why: a re-run's call looked at every previous range for each of its shards: tens of milliseconds per shard at
    100,000 previous shards, quadratic over the re-run. Sorted by first name with the running maximum of the last names
    (``_reach``), the ranges that can overlap ``[first, last]`` of a shard are found by two binary searches: those
    starting after ``last`` cannot, nor can any before the first position whose running maximum reaches ``first``.
    Ranges cut in name order (listings, image lists) overlap nothing else, so that is one or two candidates; the
    hash-spread ranges of an image list enumerated by an earlier release still overlap widely, and are all looked at
    as before. The answers keep the recorded order, so a name found in two previous shards resolves as it did.
    """

    def __init__(self, ranges: Sequence[tuple[str, str, str]]) -> None:
        self._ranges = list(ranges)
        lows = [low for _, low, _ in self._ranges]
        self._order = sorted(range(len(lows)), key=lows.__getitem__)  # already in order, usually: linear
        self._lows = [lows[i] for i in self._order]
        self._reach = list(itertools.accumulate((self._ranges[i][2] for i in self._order), max))

    def __len__(self) -> int:
        return len(self._ranges)

    def holding(self, names: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(shard, first, last)`` of the previous shards whose range holds one of ``names`` (sorted), in recorded
        order."""
        if not names or not self._ranges:
            return []
        stop = bisect.bisect_right(self._lows, names[-1])  # later ranges start after our last name
        start = bisect.bisect_left(self._reach, names[0], 0, stop)  # earlier ones all end before our first name
        hits: list[int] = []
        for position in range(start, stop):
            i = self._order[position]
            _, low, high = self._ranges[i]
            at = bisect.bisect_left(names, low)
            if at < len(names) and names[at] <= high:
                hits.append(i)
        return [self._ranges[i] for i in sorted(hits)]


def _etags(store: BlobStore, settings: Settings, key: str, sid: str) -> dict[str, str]:
    return _etags_and_listing(store, settings, key, sid)[0]


def _etags_and_listing(store: BlobStore, settings: Settings, key: str, sid: str) -> tuple[dict[str, str], str]:
    """The shard's ETags as its listing recorded them, and that listing's run (the document's ``listing``, the
    ``listing_run`` it stamped the shard's manifest with: ``activities.carried_results.etags_document``; "" for a
    run without an id)."""
    data = store.read_bytes_or_none(settings.container, layout.shard_etags_blob(key, sid))
    doc = jsonio.loads(data) if data is not None else None
    etags = doc.get("etags") if isinstance(doc, dict) else None
    listing = doc.get("listing") if isinstance(doc, dict) else None
    return ({str(k): str(v) for k, v in etags.items() if v} if isinstance(etags, dict) else {},
            listing if isinstance(listing, str) else "")


def reusable_entries(store: BlobStore, settings: Settings, previous: str, ranges: PreviousRanges,
                     etags: Mapping[str, str]) -> tuple[dict[str, Mapping[str, Any]], set[str]]:
    """The previous generation's final entries for the names in ``etags`` whose ETag is unchanged there, and which of
    those successes it named cut short (its attempts' ``info.trapbatch.damaged``)."""
    names = sorted(etags)
    found: dict[str, Mapping[str, Any]] = {}
    damaged: set[str] = set()
    for sid, low, high in ranges.holding(names):  # only previous shards whose range holds one of our names
        start = bisect.bisect_left(names, low)
        before = _etags(store, settings, previous, sid)
        same = {n for n in names[start: bisect.bisect_right(names, high)] if before.get(n) == etags[n]}
        if not same:
            continue
        named: set[str] = set()
        best = mdformat.best_entries(shard_attempt_results(store, settings, previous, sid, damaged=named))
        for name in same:
            entry = best.get(name)
            if entry is not None and is_final(entry):
                found[name] = entry
                if name in named and not is_failure(entry):
                    damaged.add(name)
    return found, damaged


def reuse_shard(key: str, previous: str, sid: str, ranges: PreviousRanges, settings: Settings,
                store: BlobStore, before_writes: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Write shard ``sid``'s attempt 0 (reused entries) and its attempt 1 (the rest); (reused, to run).
    ``before_writes``: called with the shard's number of images after every read and before the first write."""
    full = ShardManifest.from_dict(shard_manifest(store, settings, key, sid))
    etags, listing = _etags_and_listing(store, settings, key, sid)
    images = set(full.images)
    wanted = {n: e for n, e in etags.items() if n in images}
    found, damaged = reusable_entries(store, settings, previous, ranges, wanted) if wanted and ranges else ({}, set())
    if not found:
        return 0, len(full.images)
    if before_writes is not None:
        before_writes(len(full.images))
    to_run = tuple(n for n in full.images if n not in found)
    # Stamped with the listing the shard's ETags document names, not the stamp ``full`` has: where the listing kept
    # an earlier run's attempt 0 cut alike (``activities.replaced_images._made_from``), ``full`` is that one, and a late
    # duplicate of this run's listing call that a release or a setting changed knew it neither by stamp nor by fields
    # and deleted it (tests/integration/test_reuse_resumed.py). A retried call reads the same document: the same stamp.
    whole = ShardManifest(**{**_fields(full), "attempt": 0, "listing_run": listing,
                             "output_blob": layout.attempt_results_blob(key, sid, 0)})
    # Order matters for a retry: attempt 0's manifest first, so a retried call still sees every image of the shard.
    # compact orjson (gpu_batch.formats.jsonio): these documents hold a shard's names and entries; json.dumps with an
    # indent was a third of this activity's CPU per image (bench/RESULTS.md, seventeenth session)
    manifest_etag = store.write_compact_json(settings.container, layout.manifest_blob(key, sid, 0), whole.to_dict())
    own: dict[str, Any] = {"reused_from": previous}
    if damaged:  # as a worker names its own (gpu_batch.worker.results): sorted, beside the entries they describe
        own["damaged"] = sorted(damaged)
    results_etag = store.write_compact_json(settings.container, layout.attempt_results_blob(key, sid, 0), {
        "images": [found[n] for n in full.images if n in found], "info": {"trapbatch": own}})
    if damaged:  # what the merge reads instead of the results (activities.shard_results.shard_damaged)
        store.write_bytes(settings.container, layout.attempt_damaged_blob(key, sid, 0),
                          damaged_document(results_etag, damaged), "application/json")
    # As a worker does after its results: the poll counts this attempt from the summary (``shard_results``).
    store.write_compact_json(settings.container, layout.attempt_coverage_blob(key, sid, 0),
                             coverage_summary(found, full.images, results_etag, manifest_etag))
    run = ShardManifest(**{**_fields(full), "attempt": 1, "images": to_run,  # no merge view: two attempts now
                           "output_blob": layout.attempt_results_blob(key, sid, 1), "merge_view_threshold": None,
                           "listing_run": listing})
    store.write_compact_json(settings.container, layout.manifest_blob(key, sid, 1), run.to_dict())
    return len(found), len(to_run)


def _fields(manifest: ShardManifest) -> dict[str, Any]:
    return {f: getattr(manifest, f) for f in ShardManifest.__dataclass_fields__}


def run_reuse(key: str, previous: str, first: int, count: int, settings: Settings,
              store: BlobStore, still_ours: Callable[[], None] | None = None) -> c.ReuseOutput:
    """Shards ``first .. first + count - 1`` of generation ``key`` (``reuse_shard``).

    ``still_ours``: raises once a later run replaced the call's run (``activities.superseded``), asked again after a
    shard's reads and before its writes once ``RECHECK_IMAGES`` images were read since the last time (the shell read it
    before the call). Why: a run terminated while its calls were queued or running is resumed under the same
    generation, whose listing cuts its shards anew (images added, deleted or replaced meanwhile) and whose own reuse
    step follows; a late call of the terminated run read a shard as the earlier listing cut it and wrote its attempt 0
    (that listing's names, an entry of an image replaced since) after the new listing, and the resumed run's reuse
    step took that manifest for the shard's images (tests/integration/test_reuse_resumed.py). Now at most
    ``RECHECK_IMAGES`` images' worth of reads and writes after the marker, which the replacing run writes before its
    listing."""
    ranges = PreviousRanges(previous_ranges(store, settings, previous))  # read and indexed once per call
    unchecked = [0]  # images read since the marker was last read

    def before_writes(images: int) -> None:
        unchecked[0] += images
        if still_ours is not None and unchecked[0] >= RECHECK_IMAGES:
            still_ours()
            unchecked[0] = 0

    reused: list[int] = []
    to_run: list[int] = []
    for index in range(first, first + count):
        n_reused, n_run = reuse_shard(key, previous, layout.shard_id(index), ranges, settings, store, before_writes)
        if not n_reused:  # read, nothing written: its images count towards the next read of the marker all the same
            unchecked[0] += n_run
        reused.append(n_reused)
        to_run.append(n_run)
    logger.info("generation %s shards %d..%d: %d images reused from %s, %d to run", key, first, first + count - 1,
                sum(reused), previous, sum(to_run))
    return {"reused": reused, "to_run": to_run}


@bp.activity_trigger(input_name="payload", activity=c.REUSE)
@failures_without_secrets
def reuse_previous_results(payload: c.ReuseInput) -> c.ReuseOutput:
    s = clients.settings()
    store = clients.store(s)
    what = "the reuse of the served results"
    refuse_if_superseded(store, s, payload, what)  # a terminated run's late call (none without ``run_job``)

    def still_ours() -> None:
        refuse_if_superseded(store, s, payload, what)

    return run_reuse(payload["task_id"], payload["previous"], payload["first"], payload["count"], s, store, still_ours)
