"""A resumed run's listing carries earlier results into its shards' attempt 1: of images it cut into another shard
than the earlier listing, and of those the shard's own attempt 2 or later finished.

Why: a failed or terminated run is resumed by its request posted again plainly (``api.starters``): the same key is
listed again and its shards are cut anew *by count* (``core.shards.plan_shards``). Images added meanwhile that sort
before others move every later shard's boundary by as many names (deleted ones, the other way), and each reader of a
shard's attempts takes entries by image *name* for the images of that shard's manifest only (the worker's
``gpu_batch.worker.results.load_resumable_state``, the poll, the merge: ``activities.shard_results``). So the K
images a shard gained from its neighbour ran again on the GPU, their results left in the neighbour's attempts, where
no reader takes them (the neighbour's manifest no longer names them): 100 images added early in a 10M-image task of
10,000 a shard re-ran ~100,000 (``bench/resume_listing.py --resume-add``).

What: before this listing writes shard ``i``'s ETags (``layout.shard_etags_blob``), the names of the shard that its
earlier listing did not put there (``activities.replaced_images.earlier_etags``) are looked up in the earlier ETags of
the neighbouring shards, outward, as long as such a name sorts beyond the earlier range read so far (``CARRY_REACH``
shards each way at most; on the left past shards the earlier listing did not cut: more shards now, the last ones'
names its last shards held). A name found there with this listing's ETag has its best final entry (a success or a
permanent failure) in that shard's attempts copied into shard ``i``'s attempt 1 results
(``layout.attempt_results_blob``), which the resumed attempt 1's worker reads and keeps, as every other reader of the
shard. A success its earlier results named cut short stays named (``info.trapbatch.damaged``), as
``activities.reuse`` does. The neighbour's copy stays where it is, and is never merged: its manifest no longer names
it (``gpu_batch.formats.entries.merge_entries`` takes manifest names only).

The shard's own later attempts, the same way: a resumed run's shard groups start again at attempt 1
(``orchestrations.shards``), whose worker keeps only what its own output already holds
(``gpu_batch.worker.results.load_resumable_state``). So an image whose only final entry was in the earlier run's
attempt 2 or later of the same shard ran again on the GPU (a node lost mid-shard: attempt 1 did 3,000 of 10,000,
attempt 2 the other 7,000, then the run failed or was terminated: the resume ran the 7,000 again). Merging was not
wrong (every reader takes the best entry by name over all attempts), it cost GPU time. Now the best final entries of
the shard's names that the earlier listing put in this shard with the ETag they have now (exactly those
``drop_replaced_results`` left in its attempts) are copied from its attempts 2 and later into attempt 1 too, in the
same rewrite, photos cut short named as above: the resumed attempt 1 runs only what no attempt finished. Attempt 0
(an ``only_new`` key's reused copies) is not read: every reader takes it first, and the resumed run's reuse step
writes it again for this listing (``activities.reuse``), whose attempt 1 manifest still names an image only carried
(the served generation has no final entry for it); its worker keeps the carried entry and runs nothing for it, and
the merge takes each image once. The later attempts stay as they are: the resumed run's attempt 2 writes into the
earlier run's attempt 2 results (``activities.pool.prepare_resubmission`` rewrites its manifest, or keeps one that
still fits), its worker keeping their final entries of the images its manifest names, which the ETag rule below
makes right, and dropping the others at its first flush: they are in attempt 1 now, and a rewritten manifest also
names any image whose only final entry is there (one a late worker of the ended run wrote after this read: not
carried; ``activities.pool._done_only_there``), so nothing is lost there.
Attempt 1's coverage summary, list of photos cut short and every merge view that names attempt 1's results no longer
match its ETag after the rewrite, so their readers parse the results instead, as after ``drop_replaced_results``.

Sound because of ``activities.replaced_images``'s rule, kept by every listing: a shard's attempts hold, for each name of
its ETags document, only entries of the bytes of that ETag (a listing drops those of names replaced or unknown before
it writes the document, and carries in only entries whose ETag matches). An image replaced since has another ETag and
is carried nowhere; one added since is in no earlier document: both run again, as before.

Parallel batches: ``write_shard_manifests`` calls run side by side, each writing its shards in order, so a neighbour's
document may already be this listing's. Each document this listing writes therefore names it (``listing``: its run,
``activities.enumerate``'s ``listing_run``) and keeps what a neighbour needs of the earlier one (``before``: its name
range, and the ETags of its names that left the shard, ``moved``; the names that stayed are in no other shard of this
listing). A blob's write is atomic and Azure Storage strongly consistent ("subsequent reads see the latest update",
azure-docs articles/storage/blobs/concurrency-manage.md): a neighbour's read finds either document whole.

At least once: an activity may run again ("each called activity function will be executed at least once", Durable
Task's ``TaskActivity`` reference). A call run again after it wrote the shard's document finds its own ETags there:
no name is new to the shard, and its later attempts were carried before the document was written: nothing is carried
(``_unchanged``: the document names this listing). One run again before that (it failed in between) drops the carried
entries with those of every name new to the shard (``drop_replaced_results``) and carries them again; those of its
own later attempts it finds final in attempt 1 already and leaves (no rewrite). The document it
writes keeps the ``before`` its first write recorded. A late worker of the ended run (its job is closed before the
listing) flushes its results conditionally (``gpu_batch.worker.sources.BlobSink``): our rewrite of attempt 1, also
conditional (``BlobStore.update_json``), makes its next flush fail instead of being lost or losing ours.

Only a listing with a run id carries (``listing_run``: every run a post starts has one), and only where the key was
listed to the end before (its enumeration summary, read once a call): a first listing reads no neighbour. Costs, per
shard with names new to it: no more read of its own ETags document (read once, the drop takes it: ``found``), one of
each neighbour's looked at, and where one holds such names, a listing of its blobs and a read of each of its attempts'
results (one held at a time: ``_final_entries``), then a read and a conditional rewrite of the shard's attempt 1
results. Per shard with names unchanged in it (most shards of a resumed listing): one listing of its blobs; where it
has an attempt 2 or later, a read of each of those attempts' results, one at a time and of each only the entries of
its names, and that same read and rewrite of attempt 1 where one of them holds a final entry attempt 1 lacks. The
listings of the blobs are the write call's one listing of each shard folder (``activities.shard_folders``), which the
drop and the coverage read too: a left neighbour the same call cuts is not listed again; a right one it cuts is listed
here before its turn and again in its turn (its drop must not read names from before it), and one another call cuts
is listed at each use."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from activities.shard_folders import ShardFolders
from adapters.blobs import BlobStore
from gpu_batch import layout
from gpu_batch.formats import jsonio
from gpu_batch.formats.entries import best_entries, damaged_in
from gpu_batch.manifest import is_failure, is_final

logger = logging.getLogger(__name__)

CARRY_REACH = 3  # neighbouring shards looked at each way: names moved by up to three shards' worth are carried


def etags_document_of(store: BlobStore, container: str, key: str, sid: str, strict: bool = False) -> Any:
    """Shard ``sid``'s ETags document as it is now (None: none, or, unless ``strict``, not JSON).

    ``strict`` for the shard's OWN document, which decides whether its earlier results stand: read as "none
    recorded", an unreadable one kept every result of the shard by name, unchecked against the ETags (the rule of
    ``activities.replaced_images``), so it raises instead, as that module's own read does, and the call fails and is
    retried. A neighbour's unreadable document only means nothing is carried from it: those images run again."""
    data = store.read_bytes_or_none(container, layout.shard_etags_blob(key, sid))
    if strict:
        return jsonio.loads(data) if data is not None else None
    try:
        return jsonio.loads(data) if data is not None else None
    except (ValueError, UnicodeDecodeError):
        return None


def _etags_in(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items() if v} if isinstance(value, dict) else {}


def earlier_listing(doc: Any, run: str) -> tuple[str, str, dict[str, str]] | None:
    """What the listing before ``run`` recorded for a shard whose ETags document is ``doc``: its name range and the
    ETags of the names that may sit in another shard of ``run``'s listing; None when it recorded none."""
    if not isinstance(doc, dict):
        return None
    if doc.get("listing") == run:  # rewritten by this listing already: what it kept of the earlier document
        before = doc.get("before")
        if not isinstance(before, dict):
            return None
        span = before.get("range")
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(s, str) for s in span)):
            return None
        return span[0], span[1], _etags_in(before.get("moved"))
    etags = _etags_in(doc.get("etags"))
    return (min(etags), max(etags), etags) if etags else None


def etags_document(now: Mapping[str, str], run: str, found: Any) -> dict[str, Any]:
    """The ETags document this listing writes for a shard: ``now``, its images' ETags, and (``run``) what a neighbour
    of this listing needs of ``found``, the document it replaces (``earlier_listing``); a document this listing wrote
    already keeps its ``before``."""
    doc: dict[str, Any] = {"etags": dict(now)}
    if not run:
        return doc
    doc["listing"] = run
    if isinstance(found, dict) and found.get("listing") == run:
        if "before" in found:
            doc["before"] = found["before"]
        return doc
    earlier = earlier_listing(found, run)
    if earlier is not None:
        low, high, etags = earlier
        doc["before"] = {"range": [low, high], "moved": {n: e for n, e in etags.items() if n not in now}}
    return doc


def _found_in_neighbours(store: BlobStore, container: str, key: str, index: int, wanted: set[str],
                         own: tuple[str, str, dict[str, str]] | None, now: Mapping[str, str],
                         run: str) -> dict[int, list[str]]:
    """Of ``wanted`` (names of shard ``index`` new to it), those an earlier listing put in a neighbouring shard with
    the ETag they have now, by that shard's index."""
    found: dict[int, list[str]] = {}
    for step in (-1, 1):
        edge = None if own is None else (own[0] if step < 0 else own[1])
        j = index
        for _ in range(CARRY_REACH):
            j += step
            beyond = {n for n in wanted if edge is None or (n < edge if step < 0 else n > edge)}
            if j < 0 or not beyond:
                break
            earlier = earlier_listing(etags_document_of(store, container, key, layout.shard_id(j)), run)
            if earlier is None:  # on the left, a shard past the earlier listing's last (cut of names moved on)
                if step < 0:
                    continue
                break
            hits = sorted(n for n in beyond if earlier[2].get(n) == now[n])
            if hits:
                found[j] = hits
                wanted -= set(hits)
            edge = earlier[0] if step < 0 else earlier[1]
    return found


def _final_entries(store: BlobStore, container: str, key: str, sid: str, names: list[str],
                   since: int = 0, listed: set[str] | None = None) -> tuple[dict[str, Any], set[str]]:
    """The best final entries of ``names`` over shard ``sid``'s attempts from attempt ``since`` on, and which of those
    successes they named cut short. An attempt deleted meanwhile (an ``only_new`` key's attempt 0 that its own listing
    dropped) or unreadable counts as none, as everywhere (``activities.shard_results``). No attempt from ``since`` on:
    nothing read but the shard's listing. ``listed``: the names under the shard's folder (``ShardFolders.names``),
    else it is listed here.

    Memory: one attempt's parsed document at a time, and of each only the entries of ``names``. Why: a shard's
    attempts are read whole to find a few names (those the earlier listing cut on the other side of a boundary), and
    every attempt's entries were held until the last was read: at ``images_per_shard`` 100,000 (the most a request
    may ask, ``core.requests.MAX_IMAGES_PER_SHARD``) an attempt's results parse to a few hundred MB, and a shard
    with retries has several, beside the write call's own and those of the other activities on the instance."""
    wanted = set(names)
    if listed is None:
        listed = set(store.list_names(container, layout.shard_prefix(key, sid)))
    attempts = sorted((a, name) for name in listed
                      if (a := layout.attempt_of_results_blob(name)) is not None and a >= since)
    docs: list[list[dict[str, Any]]] = []
    named: set[str] = set()
    for _, name in attempts:
        try:
            doc = jsonio.loads(store.read_bytes_or_none(container, name) or b"null")
        except (ValueError, UnicodeDecodeError):
            continue
        entries = doc.get("images") if isinstance(doc, dict) else None
        if isinstance(entries, list):
            docs.append([e for e in entries if isinstance(e, dict) and e.get("file") in wanted])
            named.update(n for n in damaged_in(doc) if n in wanted)
        del doc, entries  # before the next attempt is read
    best = best_entries(docs)
    kept = {n: dict(best[n]) for n in names if n in best and is_final(best[n])}
    return kept, {n for n in kept if n in named and not is_failure(kept[n])}


def _unchanged(shard: list[str], now: Mapping[str, str], own: tuple[str, str, dict[str, str]] | None, found: Any,
               run: str) -> list[str]:
    """The names of ``shard`` whose earlier entries in the shard's own attempts stand (the earlier listing put them in
    this shard with the ETag they have now: what ``drop_replaced_results`` kept), and so may be carried from its later
    attempts; none when ``found`` is this listing's own document (a call run again after it carried: nothing left)."""
    if own is None or (isinstance(found, dict) and found.get("listing") == run):
        return []
    return [n for n in shard if now.get(n) and own[2].get(n) == now[n]]


def carry_moved_results(store: BlobStore, container: str, key: str, index: int, shard: list[str],
                        now: Mapping[str, str], found: Any, run: str, folders: ShardFolders | None = None) -> int:
    """Copy into shard ``index``'s attempt 1 results the earlier final entries of its images that the earlier listing
    put in a neighbouring shard, and those of its images left unchanged in it that only its own attempt 2 or later
    holds (see the module doc); ``now``: this listing's ETags of ``shard``; ``found``: the shard's ETags document as
    it was before this listing writes its own (``etags_document_of``). Call it after ``drop_replaced_results`` and
    before the document is written. Returns how many entries were carried. ``folders``: the write call's shard
    folders (``activities.shard_folders``): each folder read is listed there once a call, and told of the attempt 1
    results written here, which the coverage after this must see (a shard whose attempt 1 had no results before is
    done once its later attempts' entries are carried in); else each folder is listed here."""
    own = earlier_listing(found, "")  # the document itself, whoever wrote it: a call run again finds its own ETags
    wanted = {n for n in shard if now.get(n) and (own is None or n not in own[2])}
    stayed = _unchanged(shard, now, own, found, run)
    if not wanted and not stayed:
        return 0
    sources = _found_in_neighbours(store, container, key, index, wanted, own, now, run) if wanted else {}
    carried: dict[str, Any] = {}
    damaged: set[str] = set()
    for j, names in sorted(sources.items()):
        entries, cut_short = _final_entries(store, container, key, layout.shard_id(j), names,
                                            listed=folders.names(j) if folders is not None else None)
        carried.update(entries)
        damaged |= cut_short
    sid = layout.shard_id(index)
    if stayed:  # the shard's own later attempts (attempt 1's own entries are its worker's already); names disjoint
        entries, cut_short = _final_entries(store, container, key, sid, stayed, since=2,
                                            listed=folders.names(index) if folders is not None else None)
        later = set(entries)
        carried.update(entries)
        damaged |= cut_short
    else:
        later = set()
    if not carried:
        return 0
    added: list[int] = []
    from_later: list[int] = []

    def with_carried(doc: Any) -> Any:
        added[:] = [0]  # update_json may call it again, on a version written meanwhile
        from_later[:] = [0]
        if doc is None:
            doc = {"images": [], "info": {"trapbatch": {"task_id": key, "shard_id": sid, "attempt": 1}}}
        entries = doc.get("images") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            return None  # unreadable results: the worker starts the attempt over, so the images run again
        final = {e.get("file") for e in entries if isinstance(e, dict) and is_final(e)}
        names = [n for n in shard if n in carried and n not in final]  # a retryable failure there gives way
        if not names:
            return None
        added[:] = [len(names)]
        going = set(names)
        from_later[:] = [len(going & later)]
        kept = [e for e in entries if not (isinstance(e, dict) and e.get("file") in going)]
        out = {**doc, "images": [*kept, *(carried[n] for n in names)]}
        cut_short = sorted(going & damaged)
        raw_info = out.get("info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        raw_own = info.get("trapbatch")
        own_info: dict[str, Any] = raw_own if isinstance(raw_own, dict) else {}
        if cut_short:
            earlier = [n for n in own_info.get("damaged") or [] if isinstance(n, str)]
            out["info"] = {**info, "trapbatch": {**own_info, "damaged": sorted({*earlier, *cut_short})}}
        return out

    results = layout.attempt_results_blob(key, sid, 1)
    if store.update_json(container, results, with_carried) is not None and folders is not None:
        folders.wrote(index, results)  # written, or there already: either way the coverage reads it
    if added[0] > from_later[0]:
        logger.info("%s shard %s: %d earlier result(s) carried from the shard(s) %s, where the earlier listing cut "
                    "them: not run again", key, sid, added[0] - from_later[0],
                    ", ".join(layout.shard_id(j) for j in sorted(sources)))
    if from_later[0]:
        logger.info("%s shard %s: %d earlier result(s) of its attempt 2 or later carried into attempt 1, which the "
                    "resumed run starts with: not run again", key, sid, from_later[0])
    return added[0]
