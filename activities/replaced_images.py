"""A resumed run's listing drops the results its earlier runs wrote for images replaced since (same name, new ETag).

Why: a failed or terminated run is resumed by its request posted again plainly (``api.starters``): the same key
(generation) is listed again, its shard manifests are written again under the same shard ids, and every reader of a
shard's attempts keeps what they already hold by image *name*: the worker skips the images its output blob already
has (``gpu_batch.worker.results.load_resumable_state``), the poll counts them covered, the merge emits them
(``activities.shard_results``). A result entry carries no ETag, so an image overwritten in place between the runs
(new bytes, same name) that lands in the same shard kept the old bytes' detections.

The rule is ``activities.reuse``'s (an ``only_new`` re-run): an earlier entry stands only for an image whose ETag is
known and unchanged. The ETags the earlier listing recorded for the shard (``layout.shard_etags_blob``) are compared
with this listing's before it writes its own over them: the entries of every image of the new shard whose ETag
changed, or is unknown on either side (not in the earlier listing's shard: its entries, if any, came from a listing
before that one), are removed from each attempt's results document, so no reader sees them and the image runs again
(unless the earlier listing put it, unchanged, in a neighbouring shard: ``activities.carried_results`` then copies its
entry there into this shard's attempt 1).
A shard whose earlier listing recorded no ETags at all (the first listing of the key, or one by a release before
ETags were recorded) is left as it is. So a listing that found no images, which keeps the earlier listing's shards
and results (``activities.listing_leftovers.drop_past_count``), keeps them for the images back as they were, with the
same ETag, only: every write of a blob, an upload or a copy back, gives it a new ETag, and it runs again.

Each document is rewritten conditionally on the version read (``BlobStore.update_json``: Put Blob with ``If-Match``),
so a worker of the ended run still flushing (its job is closed before the listing, ``orchestrations.task``) never has
its write lost under ours, and its next conditional flush on the old ETag fails (``OutputTaken``) instead of writing
the removed entries back. The attempt's coverage summary, list of photos cut short and merge view each name the ETag
of the results they describe, so after the rewrite they no longer match and their readers parse the results instead
(``gpu_batch.manifest.CoverageSummary.matches``, ``gpu_batch.formats.mergeview``); the document's own list of photos
cut short (``info.trapbatch.damaged``) loses the removed names with their entries.

A resumed ``only_new`` re-run's listing also deletes the earlier run's attempt 0 (``drop_earlier_reuse``): its
manifest lists the shard as the earlier listing cut it, and every reader takes it first; the resumed run's reuse step
writes attempt 0 again for its own listing. An attempt 0 made from this listing's own manifest (a late duplicate of
this listing's own call: both stamped with the call's ``listing_run``) or equal to it but for the stamp (so an earlier
listing's that cut the shard alike too, as before the stamp) is kept, its entries of images replaced since removed as
every other attempt's.

Idempotent: the removal runs before this listing's ETags are written, so a retried call compares against the same
earlier ETags and finds nothing left to remove."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

from activities.shard_folders import ShardFolders
from adapters.blobs import BlobStore
from gpu_batch import layout
from gpu_batch.formats import jsonio
from gpu_batch.manifest import ShardManifest

logger = logging.getLogger(__name__)


UNREAD: Any = object()  # ``earlier_etags``' document when its caller did not read it


def earlier_etags(store: BlobStore, container: str, key: str, sid: str, found: Any = UNREAD) -> dict[str, str] | None:
    """The ETags the last listing of ``key`` recorded for shard ``sid`` (names without one left out); None when it
    recorded none (no such blob, not the expected document, or one without any ETag: a listing whose parts a release
    before ETags wrote and whose shards this one cut, ``{"etags": {}}``; read as recorded, every name of the shard
    was "unknown" and all its results went). ``found``: the document as the caller read it already (a resumed
    listing, which carries results too: ``activities.carried_results.etags_document_of``), else it is read here."""
    if found is UNREAD:
        data = store.read_bytes_or_none(container, layout.shard_etags_blob(key, sid))
        found = jsonio.loads(data) if data is not None else None
    etags = found.get("etags") if isinstance(found, dict) else None
    if not isinstance(etags, dict):
        return None
    return {str(k): str(v) for k, v in etags.items() if v} or None


def replaced(shard: list[str], before: Mapping[str, str], now: Mapping[str, str]) -> set[str]:
    """The names of ``shard`` whose earlier entries cannot stand: ETag changed, or unknown on either side."""
    return {n for n in shard if not before.get(n) or before.get(n) != now.get(n)}


def drop_earlier_reuse(store: BlobStore, container: str, key: str, sid: str, names: list[str],
                       written: ShardManifest, folders: ShardFolders | None = None) -> list[str]:
    """Delete attempt 0 of shard ``sid`` of ``key`` (``names``: the shard's blobs), which only an ``only_new`` re-run's
    reuse step writes (``activities.reuse``), unless it was made from ``written``, the manifest this listing just wrote
    for the shard: its manifest first, the one that misleads; returns the names that went.

    Why: attempt 0's manifest lists every image of the shard *as the listing that reuse step followed cut it*, and
    every reader takes it before attempt 1's (``activities.shard_results.shard_manifest``), the reuse step itself too
    (a retried call's "every image"). A resumed ``only_new`` run lists the key again and writes attempt 1's manifest
    anew, every image of its own listing; the earlier run's attempt 0 stayed, so with images added or deleted
    meanwhile its reuse step, its pool work and its merge followed the earlier listing's shards: an image added since
    ran nowhere, one moved to the next shard was in two (tests/integration/test_reuse_resumed.py). Nothing is lost:
    attempt 0 holds only entries copied from the served generation, which the resumed run's reuse step, always run
    (``api.starters.resumed_request`` keeps ``only_new``), copies again for its own listing.

    Why kept when made from ``written`` (the reuse step's attempt 0 manifest is the listing's attempt 1 manifest as
    attempt 0, stamped with the listing's run: ``activities.reuse.reuse_shard``): an activity runs at least once
    ("each called activity function will be executed at least once", Durable Task's ``TaskActivity`` reference,
    learn.microsoft.com; "in error cases it might be invoked multiple times", Azure/durabletask wiki,
    Writing-Task-Activities), and this listing's own call may
    run again late, its queue message back after its output was taken, once its run's reuse step wrote attempt 0 (a run
    without an id keeps its listing's parts, and a run with one when the best-effort deletion of its folder failed,
    ``activities.listing_leftovers.drop_own_listing``). That call finds its own earlier ETags and deleted that fresh
    attempt 0, which nothing writes again: a shard reused whole is done without the pool, and the merge lost every
    image it reused (tests/integration/test_reuse_resumed.py). It is known by the listing's stamp (``_made_from``),
    not only by every field: one that the settings or the release shape differs where a release was deployed or an app
    setting changed between the two executions. Such an attempt 0 lists the shard as this listing cuts it (the same
    call, the same input, the same names), so it misleads no reader; a field the settings shape keeps the first
    execution's value, which the run's reuse step followed and its later attempts follow
    (``activities.pool.prepare_resubmission`` reads the shard's first manifest). Its entries of images replaced since
    go as every attempt's (``drop_replaced_results``). Costs one read of attempt 0's manifest, only where there is
    one. ``folders``: the call's shard folders (``activities.shard_folders``), told of each blob deleted."""
    own = f"{layout.shard_prefix(key, sid)}attempt-0."
    manifest = layout.manifest_blob(key, sid, 0)
    reuse = sorted((n for n in names if n.startswith(own)), key=lambda n: n != manifest)
    if not reuse or (manifest in reuse and _made_from(store, container, manifest, written)):
        return []
    for name in reuse:
        store.delete_if_exists(container, name)
        if folders is not None:
            folders.deleted(layout.shard_index(sid), name)
    logger.info("%s shard %s: an earlier run's reused results (attempt 0) dropped: this listing's run reuses for its "
                "own shards", key, sid)
    return reuse


def _made_from(store: BlobStore, container: str, name: str, written: ShardManifest) -> bool:
    """Whether manifest blob ``name`` (attempt 0's) was made from ``written`` (``activities.reuse.reuse_shard``
    copies it as attempt 0); False for one missing or unreadable.

    By the listing's stamp where both carry one (``ShardManifest.listing_run``: the listing call's ``listing_run``,
    which its input holds, so every execution of the call stamps the same: an activity runs on its queued message's
    ``TaskScheduledEvent.Input``, redelivered as it was, Azure/durabletask ``TaskActivityDispatcher
    .OnProcessWorkItemAsync``; each run has its own): the same listing. Else, as before the stamp, by every other
    field: an attempt 0 that lists the shard as this listing cuts it misleads no reader, whichever listing it came
    from, and keeping it leaves nothing to a race (a late call of a replaced run, past its ``activities.superseded``
    check, finding the replacing run's fresh attempt 0 of the same cut: by stamps alone it deleted that, which
    nothing writes again).
    Why not by every field alone: a field that the app's settings or release shape can differ between two executions of
    one call, a release deployed or an app setting changed between them (an app restart runs the activities in flight
    again): a field a later release adds or writes otherwise, a setting the generation's decided ones
    (``activities.decided``) leave to the environment, such as the output container, or one a decided document of an
    earlier release lacks; the duplicate then deleted its own run's attempt 0 (``drop_earlier_reuse``'s loss). Where
    either has none (an attempt 0 of a release before the stamp, or a run without an id: ``listing_run`` ""), every
    other field is compared, as before the stamp (and where the stamps differ)."""
    try:
        found = ShardManifest.from_dict(jsonio.loads(store.read_bytes_or_none(container, name) or b"null"))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return False
    if found.listing_run and found.listing_run == written.listing_run:
        return True
    return dataclasses.replace(found, listing_run="") == dataclasses.replace(
        written, attempt=0, output_blob=layout.attempt_results_blob(written.task_id, written.shard_id, 0),
        listing_run="")


def drop_replaced_results(store: BlobStore, container: str, key: str, sid: str, shard: list[str],
                          now: Mapping[str, str], reuses: ShardManifest | None = None, found: Any = UNREAD,
                          folders: ShardFolders | None = None) -> int:
    """Remove, from every attempt's results of shard ``sid`` of ``key``, the entries of the images of ``shard`` that
    were replaced since the last listing (``replaced``); ``now``: this listing's ETags. Returns how many entries went.
    Call it before this listing writes its own ETags for the shard.

    ``reuses``: where the key is an ``only_new`` re-run's (its request's ``only_new``, which its resumed runs keep),
    the manifest this listing wrote for the shard; an attempt 0 not made from it goes too (``drop_earlier_reuse``), at
    the cost of one listing of the shard's blobs (the write call's one: ``folders``); other keys (None) never have an
    attempt 0, and a shard whose images are unchanged is still left unread. ``found``: the shard's ETags document,
    where the caller read it already. ``folders``: the write call's shard folders (``activities.shard_folders``),
    whose one listing of the shard's folder the carry and the coverage read after this (told of the attempt 0 blobs
    deleted here); else listed here."""
    before = earlier_etags(store, container, key, sid, found)
    if before is None:  # no listing of the key before (attempt 0 is written only after one recorded ETags)
        return 0
    stale = replaced(shard, before, now)
    if not stale and reuses is None:
        return 0
    names = (sorted(folders.names(layout.shard_index(sid))) if folders is not None
             else list(store.list_names(container, layout.shard_prefix(key, sid))))
    gone = set(drop_earlier_reuse(store, container, key, sid, names, reuses, folders)) if reuses is not None else set()
    if not stale:
        return 0
    removed = 0
    for name in names:
        attempt = layout.attempt_of_results_blob(name)
        if attempt is None or name in gone:  # an attempt 0 deleted above
            continue
        counted: list[int] = []

        def without(doc: Any) -> Any:
            counted[:] = [0]  # update_json may call it again, on a version written meanwhile
            entries = doc.get("images") if isinstance(doc, dict) else None
            if not isinstance(entries, list):
                return None  # unreadable results count as none everywhere (activities.shard_results)
            kept = [e for e in entries if not (isinstance(e, dict) and e.get("file") in stale)]
            if len(kept) == len(entries):
                return None
            counted[:] = [len(entries) - len(kept)]
            own = (doc.get("info") or {}).get("trapbatch") if isinstance(doc.get("info"), dict) else None
            if isinstance(own, dict) and isinstance(own.get("damaged"), list):
                own["damaged"] = [n for n in own["damaged"] if n not in stale]
            return {**doc, "images": kept}

        store.update_json(container, name, without)
        removed += sum(counted)
    if removed:
        logger.info("%s shard %s: %d earlier result(s) dropped: their images were replaced since the last listing "
                    "(new ETag) and run again", key, sid, removed)
    return removed
