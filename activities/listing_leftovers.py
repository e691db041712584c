"""What a listing leaves behind once it ends, and what goes then (``finish_enumeration``, after the summary).

A key (a generation: ``layout.generation_key``) is listed again when its failed or terminated run is resumed
(``api.starters``: a plain post resumes that run's generation). That listing writes every shard it cuts under the
same names as the earlier listing, but only the shards it cuts: with images deleted meanwhile it cuts fewer, and the
earlier listing's manifests, ETags and results of the shards past the new count, its ``shard-ranges-*`` blobs and an
image list's ``deployments-*`` parts of batches this listing did not write, all stayed. The merge, the exports and the
pool read only the shards below the count the summary records (``layout.enumeration_blob``); what read the rest was
an ``only_new`` re-run's reuse step (every ``shard-ranges-*`` blob: ``activities.reuse.previous_ranges``, which now
also stops at the count). The image list's first facts read every ``deployments-*`` part
(``activities.image_list.write_first_facts``), a stale one too, to the same answer: every row of the same list is in
some part of this listing, found or not, and a stale part comes after them, so it only repeats values they hold.
``drop_past_count`` deletes them all.

The listing's working files (plan, units, parts of names, cursors, sample keys, tallies: ~1 GB at 10M images) are
read only by the listing's own calls, each with its run's ``listing_run`` (``activities.enumerate``,
``activities.image_list``); the summary call is the last of them, and nothing after it (shard groups, merge, exports,
pages, the status API's estimate, the repeat search, a resumed run, a re-run) reads them: a resumed run lists again
into a folder of its own, a re-run into its own generation. So ``drop_own_listing`` deletes the run's own listing
folder once the summary is written, and the task's loose listing files from before runs listed apart (no run
without an id runs beside a run with one: a key's runs are one orchestration instance, ``api.starters``). A retried
summary call (an activity runs at least once: its output lost, it runs again) finds its folder gone and answers from
the summary it wrote (``finished_before``), which names its run for that (``listing_run``).

All best effort and idempotent: a failure is logged and leaves the blobs (readers ignore them; the next listing of the
key deletes them). Must not: delete a shard, range or part of the listing that replaced this run (a replaced run's
late summary call, past its check, deletes nothing past its count: its cancel marker is read after the listing of what
to delete and again before each shard's deletion, and the replacing run writes that marker before its first listing
blob; Azure Storage is strongly consistent, "subsequent reads see the latest update", azure-docs
articles/storage/blobs/concurrency-manage.md); delete anything of the shards below the count, the summary, the
deployments document or another run's listing folder (``activities.enumerate.drop_earlier_listings`` decides those).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from activities.superseded import superseded_by
from adapters.blobs import BlobStore
from adapters.compose import delete_prefix
from core import contracts as c
from core import notimages
from core.errors import RunSuperseded, without_secrets
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)


def batch_firsts(store: BlobStore, settings: Settings, task_id: str, images_per_shard: int, shards: int,
                 run: str) -> frozenset[int] | None:
    """The first shards of this listing's manifest writes (``core.shards.shard_batches``: every ``images_per_write //
    images_per_shard`` shards, the plan's limit), or None where its plan does not say (then only the count decides).
    Read before the run's listing folder goes (the plan is in it)."""
    plan = store.read_json_or_none(settings.container, layout.listing_plan_blob(task_id, run))
    limits = plan.get("limits") if isinstance(plan, dict) else None
    per_write = limits.get("images_per_write") if isinstance(limits, dict) else None
    if not isinstance(per_write, int) or per_write < 1 or images_per_shard < 1:
        return None
    return frozenset(range(0, shards, max(1, per_write // images_per_shard)))


def of_this_listing(shards: int, firsts: frozenset[int] | None) -> Callable[[int], bool]:
    """Whether a batch blob (``shard-ranges-<first>``, ``deployments-<first>``) is one this listing wrote."""
    return lambda first: first < shards and (firsts is None or first in firsts)


def drop_past_count(task_id: str, settings: Settings, store: BlobStore, shards: int, firsts: frozenset[int] | None,
                    run: str, job: str = "") -> int:
    """Delete what earlier listings of the key left beyond this one's ``shards`` (see the module's docstring);
    returns how many blobs went. ``run``: the listing's run (its ``listing_run``, "": the task's folder).

    Shard folders: every shard folder of the key whose index is ``shards`` or more (``_folders_past``), found by one
    delimiter listing of the key's shards folder, not by probing ``shards``, ``shards + 1``, ... up to the first shard
    with no blob: the manifest writes of a listing run in parallel (``orchestrations.enumeration``), so a run
    terminated while they ran can leave a gap (shard 12 missing, 13 to 20 written), and the probe stopped at the gap
    and left everything after it for good. Deleted from the highest down (a deletion cut short leaves the lowest of
    them; whatever is left, the next listing of the key finds again).

    ``job``: the run's pool job, whose cancel marker says whether a later run replaced this one (``_replaced``);
    ``run`` when not given. Not ``run`` alone: that is the plan's ``listing_run``, "" for a run without an id and for
    a run whose plan was made before runs listed apart (recorded histories), yet a later run replaces those too
    (``api.starters``: an id-less run's job is the task id), and their late summary call then deleted with no check.

    A listing that found no images (``shards`` 0) deletes nothing past it: the task then fails with "no images found
    ... check the container and prefix" (``orchestrations.task``), to be posted again once the images are there, and
    the earlier listing's shards hold the results its pool tasks wrote, which that resumed run takes again
    (``activities.shard_results.images_to_rerun``, by name, shard by shard) instead of running every image again,
    for the images found as they were (the same ETag; an upload or a copy back writes a blob anew, with a new ETag,
    and ``activities.replaced_images`` runs those again). Nothing reads them meanwhile (the run ends there)."""
    if shards == 0:
        return 0
    job = job or run
    gone = 0
    try:
        keep = of_this_listing(shards, firsts)
        batches = [name for prefix, first_of in ((layout.shard_ranges_prefix(task_id), layout.shard_ranges_first),
                                                 (layout.list_facts_parts_prefix(task_id), layout.list_facts_part_of))
                   for name in store.list_names(settings.container, prefix)
                   if (first := first_of(task_id, name)) is not None and not keep(first)]
        past = _folders_past(store, settings, task_id, shards)
        if not batches and not past:
            return 0
        if _replaced(store, settings, task_id, job):
            return 0
        gone += _delete(store, settings, batches)
        for index in past:
            if _replaced(store, settings, task_id, job):  # asked again before each shard: the window stays one shard's
                return gone
            gone += delete_prefix(store, settings.container, layout.shard_prefix(task_id, layout.shard_id(index)))
    except Exception as exc:  # noqa: BLE001 - housekeeping: readers stop at the count whatever is left
        logger.warning("task %s: what earlier listings left past shard %d not all deleted (the next listing of the "
                       "task tries again): %s", task_id, shards, _first_line(exc))
        return gone
    if gone:
        logger.info("task %s: deleted %d blobs earlier listings left past its %d shards", task_id, gone, shards)
    return gone


def drop_own_listing(task_id: str, settings: Settings, store: BlobStore, run: str) -> int:
    """Delete the run's own listing folder (``layout.listing_work_prefix``) and the task's loose listing files from
    before runs listed apart (``layout.is_listing_work_file``); how many blobs went. Nothing for a run without an id
    (``run`` ""), whose listing is those loose files. Called once the summary names the run (``finished_before``)."""
    if not run:
        return 0
    gone = 0
    try:
        # the plan first, alone: its absence is what tells a retried call that this end was done (``finished_before``).
        # Within the folder's deletion it could outlive the tallies the call reads (a blob batch's sub-requests each
        # succeed or fail on their own, "The response ... contains the results for each subrequest", learn.microsoft
        # .com/rest/api/storageservices/blob-batch; one refused is tried again alone: ``adapters.compose``), and a
        # retried call then found the plan, did the work again and failed for good on a tally already gone.
        gone += int(store.delete_if_exists(settings.container, layout.listing_plan_blob(task_id, run)))
        gone += delete_prefix(store, settings.container, layout.listing_work_prefix(task_id, run))
        loose = [blob.name for page in store.iter_level_pages(settings.container, layout.listing_prefix(task_id))
                 for blob in page.blobs if layout.is_listing_work_file(task_id, blob.name)]
        gone += _delete(store, settings, loose)
    except Exception as exc:  # noqa: BLE001 - housekeeping: the listing is done whatever happens here
        logger.warning("task %s: the listing's working files of run job %s not all deleted (the next run of the task "
                       "deletes its folder): %s", task_id, run, _first_line(exc))
        return gone
    logger.info("task %s: deleted the %d working files of run job %s's listing", task_id, gone, run)
    return gone


def finished_before(store: BlobStore, settings: Settings, task_id: str, run: str) -> c.EnumerateOutput | None:
    """What an earlier try of this run's summary call answered, when it got as far as deleting the run's listing
    folder (its plan is gone and the summary names the run), else None (the call does its work).

    Raises ``RunSuperseded`` when the plan is gone and the summary names another run (or none): the run's folder goes
    only at its own end (``drop_own_listing``) or at the end of a later run's listing (``activities.enumerate
    .drop_earlier_listings``), and every listing writes its plan first (its parts read it), so a later run's
    listing has ended since this one's: its summary and shards are the key's now. Such a call is a late copy of the
    run's own ("each called activity function will be executed at least once", Durable Task's ``TaskActivity``
    reference, learn.microsoft.com: a copy may run after its run ended by itself, which no cancel marker says), and
    doing the work again wrote the ended run's counts over the later summary (the merge then read fewer shards) and
    deleted the later run's shards past them."""
    if not run or store.exists(settings.container, layout.listing_plan_blob(task_id, run)):
        return None
    summary = store.read_json_or_none(settings.container, layout.enumeration_blob(task_id))
    if not isinstance(summary, dict) or summary.get("listing_run") != run:
        later = summary.get("listing_run") if isinstance(summary, dict) else None
        raise RunSuperseded(f"task {task_id}: the listing summary of the run with pool job {run} was not written: "
                            f"that run's listing folder is gone and a later listing ({later or '?'}) ended since",
                            "nothing to do: the later run's listing is the task's; follow GET /api/tasks/<id>")
    out = c.EnumerateOutput(images=int(summary["images"]), shards=int(summary["shards"]))
    if summary.get("not_images"):
        passed_over = notimages.NotImages()
        passed_over.merge(summary["not_images"])
        out["not_images"] = passed_over.summary()
    return out


def _folders_past(store: BlobStore, settings: Settings, task_id: str, shards: int) -> list[int]:
    """The indexes of the key's shard folders at ``shards`` or past it, highest first: one List Blobs with delimiter
    ``/`` of ``layout.shards_prefix``, which answers a ``BlobPrefix`` per folder ("a BlobPrefix element ... that
    acts as a placeholder for all blobs whose names begin with the same substring up to the appearance of the
    delimiter character", List Blobs, learn.microsoft.com/rest/api/storageservices/list-blobs), its pages followed
    to the end (``BlobStore.iter_level_pages``: a page "might contain a subset of the results and a marker value",
    even an empty one, Listing Blob storage resources, .../enumerating-blob-resources). A folder whose name is no
    shard's (``layout.shard_folder_index``) is left alone.

    Cost: "each BlobPrefix element returned counts toward the maximum result, just as each Blob element does" (the
    same page, the SDK's ``GetBlobsByHierarchyOptions.Delimiter``), and a page holds up to 5,000: so one request up
    to 5,000 shard folders, whatever the folders hold (a 10M-image task at the default 10,000 images a shard has
    1,000; the most a task may cut, ``core.shards.MAX_SHARDS`` 100,000, twenty), a few more where the service cuts
    a page short, under 100 bytes of response a folder. The probe it replaced made one request per folder left,
    and one more."""
    found = [index for page in store.iter_level_pages(settings.container, layout.shards_prefix(task_id))
             for prefix in page.prefixes
             if (index := layout.shard_folder_index(task_id, prefix)) is not None and index >= shards]
    return sorted(set(found), reverse=True)


def _replaced(store: BlobStore, settings: Settings, task_id: str, run: str) -> bool:
    by = superseded_by(store, settings, run) if run else None
    if by is not None:
        logger.info("task %s: what earlier listings left is left to the run %s that replaced run job %s", task_id,
                    by or "?", run)
    return by is not None


def _delete(store: BlobStore, settings: Settings, names: Iterable[str]) -> int:
    gone = 0
    for name in names:
        store.delete_if_exists(settings.container, name)
        gone += 1
    return gone


def _first_line(exc: Any) -> str:
    return without_secrets(str(exc).split("\n", 1)[0] or type(exc).__name__)
