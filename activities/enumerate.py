"""Enumerate a task's images and write its shard manifests to blob storage.

Why an activity: listing a container is I/O (forbidden in orchestrators), and the image list must never enter the
Durable history (plain tables, and 10M names would not fit): the manifests go to blob, the orchestrator gets counts.
Re-running it writes the same manifests (deterministic listing order and sampling), so a retried activity is harmless.

Two ways, same manifests (``tests/integration/test_parallel_enumeration.py`` compares them):

* ``enumerate_images`` (``run_enumerate``): one activity lists the whole container in one stream. Kept for
  orchestrations started before the parallel enumeration (their histories name it) and as the reference.
* the parallel enumeration, driven by ``orchestrations.enumeration``: ``plan_listing`` lists one or two levels of
  virtual folders and groups them into units; ``list_images_part`` lists a bounded slice of one unit and writes its
  image names as a listing part (units run in parallel, each a chain of calls carrying the service's continuation
  marker); ``choose_sample`` merges the parts' smallest sample keys (``sample_n``); ``write_shard_manifests`` cuts a
  batch of shards from the part slices the orchestrator computed from counts; ``finish_enumeration`` writes the
  summary. Each is bounded in time by ``core.shards.ListingLimits``, whatever the container holds.
"""
from __future__ import annotations

import heapq
import logging
from typing import Any, Callable, Iterable, Iterator, Mapping

import azure.durable_functions as df

from activities import decided, image_list, listing_leftovers
from activities.carried_results import CARRY_REACH, carry_moved_results, etags_document, etags_document_of
from activities.replaced_images import UNREAD, drop_replaced_results
from activities.shard_folders import ShardFolders
from activities.shard_results import earlier_coverage
from activities.superseded import refuse_if_superseded, superseded_by
from adapters import clients
from adapters.blobs import BlobStore
from adapters.compose import delete_prefix
from adapters.storage_errors import source_listing
from core import contracts as c
from core import notimages
from core.errors import without_secrets
from core.failures import failures_without_secrets
from core.nearby import NEARBY_NAMES, nearby, parent_folder
from core.requests import TaskRequest
from core.settings import Settings
from core.shards import (FOLDER_WEIGHT, Leaf, ListingLimits, folder_weight_estimate, group_leaves, is_image_name,
                         merge_level, plan_shards, sample_key, select_images)
from gpu_batch import layout
from gpu_batch.formats import camtrapdp, jsonio
from gpu_batch.manifest import ShardManifest, ViewList

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def _listed(request: TaskRequest, names: Iterator[str]) -> Iterator[str]:
    """``names`` (a lazy listing of the images' account) read under ``source_listing``: its pages are requested as
    they are consumed, after this returns."""
    with source_listing(request.source_account_url, request.container):
        yield from names


def run_enumerate(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore,
                  source: BlobStore | None = None) -> c.EnumerateOutput:
    """Write the shard manifests; ``source`` lists the images when they are in another account."""
    store.ensure_container(settings.container)
    settings = decided.decide(task_id, request.model, settings, store)  # before any manifest (activities.decided)
    if request.image_list:  # only orchestrations from before image lists call this; they never carry one
        raise ValueError(f"task {task_id}: an image list is enumerated by the parallel enumeration only")
    names = _listed(request, (source or store).list_names(request.container, request.prefix))
    selected = select_images(names, request.first_n, request.sample_n, request.seed)
    images = 0
    shards = 0
    for index, chunk in enumerate(plan_shards(selected, request.images_per_shard)):
        _write_manifest(task_id, request, settings, store, index, chunk)
        images += len(chunk)
        shards += 1
    _write_summary(task_id, request, settings, store, images, shards)
    return {"images": images, "shards": shards}


def _write_manifest(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, index: int,
                    chunk: list[str], list_columns: tuple[str, ...] = (), run: str = "") -> ShardManifest:
    """Write the shard's attempt 1 manifest, every image of ``chunk``, and return it. ``list_columns``: an image list's
    metadata columns; the worker then makes the view's export lines with the shard's list document
    (``ShardManifest.merge_view_list``), which this batch writes before the shards are run. ``run``: the listing's
    run (the call's ``listing_run``), stamped as the manifest's ``listing_run``: the same in every execution of the
    call (an activity's input is), unlike the settings, so that a late duplicate of the call knows the attempt 0 its
    run's reuse step made from it (``activities.replaced_images.drop_earlier_reuse``)."""
    sid = layout.shard_id(index)
    views = settings.merge_views
    manifest = ShardManifest(
        task_id=task_id, shard_id=sid, attempt=1, source_container=request.container, images=tuple(chunk),
        output_container=settings.container, output_blob=layout.attempt_results_blob(task_id, sid, 1),
        model=request.model, detection_threshold=settings.detection_threshold,
        source_account_url=request.source_account_url, source_credential_secret=request.credential_secret,
        merge_view_threshold=(settings.threshold_for(request.model, request.preview_threshold)
                              if views else None),
        merge_view_list=(ViewList(layout.shard_list_blob(task_id, sid), list_columns,
                                  layout.list_facts_blob(task_id) if camtrapdp.wants_first_facts(list_columns) else "")
                         if views and list_columns else None),
        listing_run=run,
    )
    # compact orjson (gpu_batch.formats.jsonio): a manifest holds a shard's names; json.dumps with an indent was most of
    # the shard-writing activity's CPU per image. The worker reads any JSON (ShardManifest.from_dict of json.loads).
    store.write_compact_json(settings.container, layout.manifest_blob(task_id, sid, 1), manifest.to_dict())
    return manifest


def _write_summary(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, images: int,
                   shards: int, **extra: Any) -> None:
    summary = {"images": images, "shards": shards, "container": request.container, "prefix": request.prefix,
               "source_account_url": request.source_account_url, "credential_secret": request.credential_secret,
               **extra}
    store.write_json(settings.container, layout.enumeration_blob(task_id), summary)
    store.write_json(settings.container, layout.request_blob(task_id), request.to_dict())
    logger.info("task %s: enumerated %d images into %d shards", task_id, images, shards)


# ---------------------------------------------------------------- parallel enumeration

def run_plan_listing(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore,
                     source: BlobStore | None = None, limits: ListingLimits = ListingLimits(),
                     run: str = "") -> c.PlanListingOutput:
    """List one level of virtual folders under the request's prefix (two while there are few folders), within
    ``limits.plan_items`` blobs and ``limits.plan_folders`` folders, and write the listing units. A level too large to
    list within that budget (a flat folder of millions of blobs) stays one folder leaf: it is then listed in bounded
    calls, one after another. When
    the budget runs out part way through the second level, the folders left whole weigh what their expanded siblings
    held (``core.shards.folder_weight_estimate``), so the units share them instead of the last unit taking them all.

    The run's first activity: it decides the app settings the run's outputs follow (``activities.decided``), before
    ``write_shard_manifests`` writes any manifest with them. ``run``: the run's pool job, whose own working files the
    listing writes (``layout.listing_work_prefix``; "": the task's, as before); the output names it (``listing_run``)
    so that the orchestration passes it to the listing's later calls, which then read and write there."""
    store.ensure_container(settings.container)
    decided.decide(task_id, request.model, settings, store)
    src = source or store
    if request.image_list:  # an explicit list names the images: no listing of the container (activities.image_list)
        return image_list.run_plan_image_list(task_id, request, settings, store, src, limits, run)
    budget = limits.plan_items
    etags: dict[str, str] = {}
    sizes: dict[str, int] = {}
    with source_listing(request.source_account_url, request.container):  # a deleted account: not busy (its docstring)
        prefixes, names, complete = src.list_level(request.container, request.prefix, budget, limits.page_size,
                                                   etags, sizes, max_prefixes=limits.plan_folders)
    near = _nearby(src, request) if complete and not prefixes and not names else None  # the prefix names nothing
    leaves: list[Leaf]
    if not complete:
        leaves = [{"prefix": request.prefix}]
    else:
        budget -= len(prefixes) + len(names)  # below zero after a level of many folders: no second level then
        leaves = merge_level(prefixes, names)
        if len(prefixes) < limits.expand_below:
            expanded: list[Leaf] = []
            contents: list[list[Leaf]] = []  # each expanded folder's leaves
            kept: list[tuple[Leaf, int]] = []  # the folders left unexpanded, with the weight of what was seen of them
            for leaf in leaves:
                folder = leaf.get("prefix")
                seen = 0
                if folder is not None and budget > 0:
                    with source_listing(request.source_account_url, request.container):
                        sub_prefixes, sub_names, sub_complete = src.list_level(request.container, folder, budget,
                                                                               limits.page_size, etags, sizes)
                    budget -= len(sub_prefixes) + len(sub_names)
                    if sub_complete:
                        contents.append(merge_level(sub_prefixes, sub_names))
                        expanded.extend(contents[-1])
                        continue
                    seen = FOLDER_WEIGHT * len(sub_prefixes) + len(sub_names)
                if folder is not None:
                    kept.append((leaf, seen))
                expanded.append(leaf)
            if contents:  # the budget ran out part way: the folders kept whole weigh what their siblings held
                for leaf, seen in kept:
                    weight = folder_weight_estimate(contents, seen)
                    if weight != FOLDER_WEIGHT:
                        leaf["weight"] = weight
            leaves = expanded
    passed_over = notimages.NotImages()  # the blobs beside the folders that are not images: the plan drops them here
    for leaf in leaves:
        if "prefix" not in leaf and not is_image_name(leaf.get("name", "")):
            passed_over.add(leaf["name"], sizes.get(leaf["name"]))
    leaves = [leaf for leaf in leaves if "prefix" in leaf or is_image_name(leaf.get("name", ""))]
    for leaf in leaves:
        if leaf.get("name", "") in etags:
            leaf["etag"] = etags[leaf["name"]]
    units = group_leaves(leaves, limits.max_units)
    for u, unit in enumerate(units):
        store.write_json(settings.container, layout.listing_unit_blob(task_id, u, run), unit)
    store.write_json(settings.container, layout.listing_plan_blob(task_id, run),
                     {"units": len(units), "leaves": len(leaves), "limits": limits.to_dict()})
    logger.info("task %s: listing plan of %d units over %d folders and blobs", task_id, len(units), len(leaves))
    out = c.PlanListingOutput(units=len(units), leaves=len(leaves), images_per_write=limits.images_per_write)
    if run:
        out["listing_run"] = run
    if near is not None:
        out["nearby"] = near
    if passed_over.files:
        store.write_json(settings.container, layout.listing_not_images_blob(task_id, run=run), passed_over.to_dict())
        out["not_images"] = passed_over.files
    return out


def _nearby(src: BlobStore, request: TaskRequest) -> dict[str, Any]:
    """What the container holds nearest the request's prefix, under which there is nothing (``core.nearby``): the
    first folders of the deepest folder above it that holds anything (its files only counted: no image name enters
    the history), one listing request of ``NEARBY_NAMES`` a level, so the task's error says what to write instead."""
    folder = request.prefix
    while folder:
        folder = parent_folder(folder)
        with source_listing(request.source_account_url, request.container):
            prefixes, names, complete = src.list_level(request.container, folder, NEARBY_NAMES, NEARBY_NAMES)
        if prefixes or names:
            return nearby(folder, prefixes, len(names), not complete)
    return nearby("", [], 0, False)


MAX_REQUESTS_PER_CALL = 4000  # listing requests one ``run_list_part`` call makes at most (~50 ms each on Azure)


def run_list_part(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, unit: int, part: int,
                  source: BlobStore | None = None, max_images: int | None = None, run: str = "") -> c.ListPartOutput:
    """List one bounded slice of a unit, from where part ``part - 1`` stopped, and write its image names as part
    ``part``, and where the next part goes on (a cursor blob: the leaf and the service's continuation marker, which
    may encode a blob name, so it never enters the orchestration history). ``run``: the plan's ``listing_run``."""
    src = source or store
    if request.image_list:
        return image_list.run_list_image_part(task_id, request, settings, store, unit, part, src, run)
    plan = store.read_json(settings.container, layout.listing_plan_blob(task_id, run))
    limits = ListingLimits(**plan["limits"])
    leaves: list[Leaf] = store.read_json(settings.container, layout.listing_unit_blob(task_id, unit, run))
    leaf, marker = 0, None
    if part > 0:
        cursor = store.read_json(settings.container, layout.listing_cursor_blob(task_id, unit, part - 1, run))
        leaf, marker = int(cursor["leaf"]), cursor["marker"]
    images: list[str] = []
    etags: list[str] = []  # beside ``images``: each image's ETag ("" unknown), for a later ``only_new`` re-run
    passed_over = notimages.NotImages()
    listed = 0
    more = False
    while leaf < len(leaves):
        if listed >= limits.names_per_call or (max_images is not None and len(images) >= max_images):
            more = True
            store.write_json(settings.container, layout.listing_cursor_blob(task_id, unit, part, run),
                             {"leaf": leaf, "marker": marker})
            break
        item = leaves[leaf]
        folder = item.get("prefix")
        if folder is None:
            listed += 1
            if is_image_name(item.get("name", "")):  # the plan kept only images (and tallied the rest)
                images.append(item["name"])
                etags.append(item.get("etag", ""))
            leaf += 1
            continue
        with source_listing(request.source_account_url, request.container):  # not busy when DNS says no such host
            blobs, marker = src.list_blobs_page(request.container, folder, marker, limits.page_size)
        # a request counts as at least a share of the call's names: a unit of thousands of small or empty folders
        # (plan_folders) makes one request each, and a call stays within MAX_REQUESTS_PER_CALL of them
        listed += max(len(blobs), limits.names_per_call // MAX_REQUESTS_PER_CALL)
        for name, etag, size in blobs:
            if is_image_name(name):
                images.append(name)
                etags.append(etag)
            else:
                passed_over.add(name, size)
        if marker is None:
            leaf += 1
    # orjson (gpu_batch.formats.jsonio): the part is a per-image document (json.dumps with an indent was ~0.7 us per
    # image, orjson ~0.02); its readers (_selected_names, BlobStore.read_json) read any JSON
    store.write_compact_json(settings.container, layout.listing_part_blob(task_id, unit, part, run),
                             {"names": images, "etags": etags})
    if request.sample_n is not None:
        keys = heapq.nsmallest(request.sample_n, (sample_key(request.seed, n) for n in images))
        store.write_json(settings.container, layout.listing_sample_blob(task_id, unit, part, run), keys)
    out = c.ListPartOutput(images=len(images), listed=listed, more=more)
    if passed_over.files:
        store.write_json(settings.container, layout.listing_not_images_blob(task_id, unit, part, run),
                         passed_over.to_dict())
        out["not_images"] = passed_over.files
    return out


SAMPLE_BUCKET_HEX = 4  # choose_sample's first pass counts keys by the first 4 hex digits of their hash: 65,536 buckets


def run_choose_sample(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore,
                      parts: Iterable[tuple[int, int]], run: str = "") -> c.ChooseSampleOutput:
    """The ``sample_n``-th smallest sample key over all parts is the threshold (written to blob: it holds a name), and
    each part contributes its keys up to it.

    Why two passes over the parts, one part in memory at a time, rather than one merge of them all: a part keeps up to
    ``sample_n`` keys (~230 bytes each once read), so a sample of 200,000 or more from ten million images held every
    key at once, ~2.3 GB, past a whole Flex instance (2 GB, shared by its activities). The keys' hashes are uniform,
    so the first pass counts them by bucket (their first hex digits), which finds the bucket holding the threshold;
    the second keeps only that bucket's keys (~total / 65,536) and each part's count below it."""
    if request.sample_n is None:
        raise ValueError(f"task {task_id}: choose_sample needs a request with sample_n")
    parts = list(parts)

    def keys_of(unit: int, part: int) -> list[tuple[str, str]]:
        return [(str(k[0]), str(k[1])) for k in store.read_json(settings.container,
                                                                layout.listing_sample_blob(task_id, unit, part, run))]

    def bucket(key: tuple[str, str]) -> int:
        return int(key[0][:SAMPLE_BUCKET_HEX], 16)

    by_bucket = [0] * (16 ** SAMPLE_BUCKET_HEX)
    for unit, part in parts:
        for key in keys_of(unit, part):
            by_bucket[bucket(key)] += 1
    wanted = min(request.sample_n, sum(by_bucket))
    threshold: tuple[str, str] = ("", "")
    counts = [0] * len(parts)
    if wanted:
        before, target = 0, 0
        while before + by_bucket[target] < wanted:
            before += by_bucket[target]
            target += 1
        in_target: list[tuple[str, str]] = []
        below: list[int] = []  # each part's keys in buckets before the target's
        mine: list[list[tuple[str, str]]] = []  # and its keys in the target bucket
        for unit, part in parts:
            keys = [k for k in keys_of(unit, part) if bucket(k) <= target]
            below.append(sum(1 for k in keys if bucket(k) < target))
            mine.append([k for k in keys if bucket(k) == target])
            in_target.extend(mine[-1])
        threshold = sorted(in_target)[wanted - before - 1]
        counts = [n + sum(1 for k in keys if k <= threshold) for n, keys in zip(below, mine)]
    store.write_json(settings.container, layout.sample_threshold_blob(task_id, run), {"key": list(threshold)})
    return {"counts": counts}


def _selected_names(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, unit: int, part: int,
                    threshold: tuple[str, str] | None, run: str = "") -> list[tuple[str, str]]:
    """The part's selected names with their ETags ("" where the part recorded none: parts from before ETags)."""
    doc = jsonio.loads(store.read_bytes(settings.container, layout.listing_part_blob(task_id, unit, part, run)))
    names: list[str] = doc["names"]
    etags = doc.get("etags")
    pairs = list(zip(names, etags)) if isinstance(etags, list) and len(etags) == len(names) else [(n, "") for n in names]
    if threshold is None:
        return pairs
    return [(n, e) for n, e in pairs if sample_key(request.seed, n) <= threshold]


# images of manifests a ``write_shard_manifests`` call writes between two reads of its run's cancel marker (one read
# per shard at the default 10,000 images a shard: ~20 small reads in a call of 200,000 images, ~10 s of writes)
RECHECK_IMAGES = 10_000


def run_write_shards(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore,
                     parts: list[tuple[int, int]], first: int, count: int, slices: list[dict[str, int]],
                     sampled: bool, not_found: list[list[int]] | None = None, run: str = "",
                     still_ours: Callable[[], None] | None = None) -> c.WriteShardsOutput:
    """Write the manifests of shards ``first .. first + count - 1`` from the slices of the listing parts (of the
    listing ``run``, the plan's ``listing_run``), with the detection threshold and merge views the run decided
    (``activities.decided``: every batch alike).

    ``still_ours``: raises once a later run replaced the call's run (``activities.superseded``), asked again before a
    shard once ``RECHECK_IMAGES`` images were written since the last time. Why: the manifests keep the task's names
    (the pool and the resubmission read them), so a terminated run's call past its first check wrote the rest of its
    batch (~10 s) over whatever the run replacing it wrote meanwhile; now at most ``RECHECK_IMAGES`` images' worth
    (about half a second of writes) after the marker, and the replacing run writes its own only after its listing.

    A resumed listing (the key listed to the end before, not an ``only_new`` key) also returns, as ``done``, the
    shards whose every image has a final result already (``shard_results.finished_coverage``), which their shard
    groups start done: no pool task (``orchestrations.task._finished_shards``); and, as ``partly``, how many images
    of each other shard have a final result already ([index, covered]), which their groups start counted
    ``earlier``, not as this run's pool's work (``orchestrations.task._partly_covered``).

    Each shard folder of the call is listed once for all those readers (``activities.shard_folders``: they listed it
    2 to 4 times a shard), the names kept current by the blobs the call writes and deletes there."""
    settings = decided.task_settings(settings, store, task_id)
    threshold: tuple[str, str] | None = None
    if sampled:
        key = store.read_json(settings.container, layout.sample_threshold_blob(task_id, run))["key"]
        threshold = (str(key[0]), str(key[1]))

    etag_of: dict[str, str] = {}  # the batch's names with a known ETag (about images_per_write of them)
    # a resumed listing (the key listed to the end before) carries earlier results to the shards it now cuts them in
    carry = bool(run) and store.exists(settings.container, layout.enumeration_blob(task_id))
    list_columns: tuple[str, ...] = ()
    if request.image_list:
        plan = store.read_json(settings.container, layout.listing_plan_blob(task_id, run))
        list_columns = tuple(str(c) for c in (plan.get("image_list") or {}).get("metadata_columns") or ())

    def stream() -> Iterator[str]:
        for s in slices:
            unit, part = parts[s["part"]]
            pairs = _selected_names(task_id, request, settings, store, unit, part, threshold, run)
            for name, etag in pairs[s["skip"]: s["skip"] + s["take"]]:
                if etag:
                    etag_of[name] = etag
                yield name

    shards = images = 0
    done: list[list[int]] = []  # [index, covered, failed] of the shards whose images all have a final result
    partly: list[list[int]] = []  # [index, covered] of the others with some images final already
    written: list[list[str]] = []
    ranges: list[list[str]] = []
    unchecked = 0  # images written since the marker was last read (the shell read it before the call)
    folders = ShardFolders(store, settings.container, task_id, range(first, first + count), CARRY_REACH)
    for index, shard in enumerate(plan_shards(stream(), request.images_per_shard), start=first):
        if still_ours is not None and unchecked >= RECHECK_IMAGES:
            still_ours()
            unchecked = 0
        unchecked += len(shard)
        made = _write_manifest(task_id, request, settings, store, index, shard, list_columns, run)
        sid = layout.shard_id(index)
        folders.moved_to(index)  # after the manifest's write: a listing of the shard's folder from here on shows it
        etags = {n: etag_of.pop(n) for n in shard if n in etag_of}
        # a resumed run's listing: earlier results of images replaced since go before these ETags replace the earlier
        # (and an only_new key's attempt 0 made from another listing than this one: ShardManifest.listing_run)
        found = etags_document_of(store, settings.container, task_id, sid, strict=True) if carry else UNREAD
        drop_replaced_results(store, settings.container, task_id, sid, shard, etags,
                              reuses=made if request.only_new else None, found=found, folders=folders)
        if carry:  # and the earlier results of images the earlier listing cut into a neighbouring shard come here
            carry_moved_results(store, settings.container, task_id, index, shard, etags, found, run, folders)
            # a shard whose every image has a final result now needs no pool task (shard_results.finished_coverage);
            # not an only_new key's, whose reuse step, after the listing, decides its shards (orchestrations.task)
            # one whose images are final in part goes to the pool, its final ones counted apart (``partly``): not
            # this run's pool's work (orchestrations.task._fail_if_the_pool_never_ran), same pass, no extra read
            earlier = (None if request.only_new or not shard
                       else earlier_coverage(store, settings, task_id, sid, shard, folders.names(index)))
            if earlier is not None and earlier["missing"] == 0:
                done.append([index, earlier["covered"], earlier["failed"]])
            elif earlier is not None and earlier["covered"]:
                partly.append([index, earlier["covered"]])
        store.write_compact_json(settings.container, layout.shard_etags_blob(task_id, sid),
                                 etags_document(etags, run, found if carry else None))
        folders.wrote(index, layout.shard_etags_blob(task_id, sid))
        if shard:
            ranges.append([sid, min(shard), max(shard)])
        shards += 1
        images += len(shard)
        if request.image_list:  # a batch's shards: held as names only (about images_per_write of them)
            written.append(shard)
    store.write_json(settings.container, layout.shard_ranges_blob(task_id, first), ranges)
    if request.image_list:
        image_list.write_list_shards(task_id, settings, store, first, written, parts, not_found or [], run)
    if shards != count:
        raise RuntimeError(f"task {task_id}: shards {first}..{first + count - 1} came out as {shards} shards; the "
                           "listing parts changed under the enumeration")
    out: c.WriteShardsOutput = {"shards": shards, "images": images}
    if done:  # only where some are: an output of before, or of a first listing, stays as it was
        out["done"] = done
    if partly:
        out["partly"] = partly
    return out


def run_finish_enumeration(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, images: int,
                           shards: int, found: int, parts: int, not_found: int = 0, not_images_plan: bool = False,
                           not_images_parts: Iterable[tuple[int, int]] = (), cancel_job: str = "",
                           run: str = "") -> c.EnumerateOutput:
    """Write the enumeration summary. ``not_images_plan`` / ``not_images_parts``: the listings that passed over
    files that are not images (their tallies are added up here: ``core.notimages``). ``cancel_job``: the run's pool
    job, whose cancel marker (POST .../cancel during the listing, which only the shard groups' polls read otherwise)
    makes the output ``cancelled``: the task then ends before a confirmation wait, an estimate or a first submission
    (the answer is in this activity's output, so the orchestration's history gains no event for it); a marker that
    names a later run (``superseded_by``) keeps this end from deleting anything past its count, whatever ``run`` is
    (``listing_leftovers.drop_past_count``). ``run``: the
    plan's ``listing_run``, whose working files hold the tallies; once the summary is written, the listing folders of
    the task's runs started before it go (``drop_earlier_listings``), then what earlier listings of the key left past
    this one's shards, and this run's own listing folder (``activities.listing_leftovers``); a retried call that finds
    that folder gone answers from the summary it wrote."""
    out = listing_leftovers.finished_before(store, settings, task_id, run)
    if out is None:
        out = _finish(task_id, request, settings, store, images, shards, found, parts, not_found, not_images_plan,
                      not_images_parts, run, cancel_job)
    if cancel_job and store.exists(settings.container, layout.cancel_marker(cancel_job)):
        out["cancelled"] = True
    return out


def _finish(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore, images: int, shards: int,
            found: int, parts: int, not_found: int, not_images_plan: bool, not_images_parts: Iterable[tuple[int, int]],
            run: str, job: str) -> c.EnumerateOutput:
    firsts = listing_leftovers.batch_firsts(store, settings, task_id, request.images_per_shard, shards, run)
    extra: dict[str, Any] = {}
    if request.image_list:
        extra["image_list"] = image_list.list_summary(store, settings, task_id, not_found, run)
        if camtrapdp.wants_first_facts(extra["image_list"].get("metadata_columns") or ()):
            image_list.write_first_facts(task_id, settings, store)
    passed_over = notimages.NotImages()
    tallies = ([layout.listing_not_images_blob(task_id, run=run)] if not_images_plan else []) + [
        layout.listing_not_images_blob(task_id, u, p, run) for u, p in not_images_parts]
    for blob in tallies:
        passed_over.merge(store.read_json(settings.container, blob))
    if passed_over.files:
        extra["not_images"] = passed_over.to_dict()
        logger.info("task %s: %s", task_id, notimages.describe(passed_over.summary()))
    if run:  # what a retried call answers from once the run's listing folder is gone (listing_leftovers)
        extra["listing_run"] = run
    _write_summary(task_id, request, settings, store, images, shards, found=found, listing_parts=parts, **extra)
    drop_earlier_listings(task_id, settings, store, run)
    listing_leftovers.drop_past_count(task_id, settings, store, shards, firsts, run, job)  # job: whether replaced
    listing_leftovers.drop_own_listing(task_id, settings, store, run)
    out = c.EnumerateOutput(images=images, shards=shards)
    if passed_over.files:
        out["not_images"] = passed_over.summary()
    return out


def drop_earlier_listings(task_id: str, settings: Settings, store: BlobStore, run: str) -> int:
    """Delete the listing folders (``layout.listing_work_prefix``) of the runs of ``task_id`` (a generation's key)
    that started before ``run`` (this run's pool job; "": nothing, a listing in the task's folder) or that it replaced;
    returns how many blobs went. Why: each run with an id lists into a folder of its own, so every resumed run added
    one (a 10M-image listing's parts are ~1 GB of names) and nothing deleted them.

    Safe: no later step reads another run's listing (only the listing's own calls read its working files, each with
    its run's ``listing_run``; manifests, shard ranges, deployments and the summary keep the task's names and are not
    under ``runs/``). A run of the same key never lists beside this one: a key's runs are one orchestration instance,
    which the extension starts only when none is running (``api.starters``), and an estimate (``dry_run``) is a task of
    its own. So the runs before this one ended; a terminated one's late call may still write into its folder (it writes
    only there; a few blobs left, which the next run deletes). Only runs started before: a terminated run's own late
    summary call (past its check, ``activities.superseded``) must never delete the listing of the run that replaced
    it, and the ids' order alone does not promise that: a run id carries the wall clock of the instance that took the
    post (``api.starters``), so with clocks seconds apart the replacing run may bear the earlier second. Hence a run
    that was replaced deletes nothing: the folders are listed first and its cancel marker read after; the replacing
    run writes that marker (orchestrations.task ``_end_terminated_run``) before its first listing blob, and Azure
    Storage "was designed to embrace a strong consistency model that guarantees that when the service performs an
    insert or update operation, subsequent reads see the latest update" (azure-docs
    articles/storage/blobs/concurrency-manage.md): a folder found means its marker seen. A run this one replaced (its
    marker names this run) goes whatever its id's second says.
    Idempotent (a retried call, a folder already gone: nothing to delete); best effort: a failure is logged, the
    listing stands, and the next run of the task deletes them."""
    if not run:
        return 0
    root = layout.listing_runs_prefix(task_id)
    gone = 0
    try:
        folders = [p for page in store.iter_level_pages(settings.container, root) for p in page.prefixes]
        by = superseded_by(store, settings, run)
        if by is not None:  # a replaced run's late call: the later run's listing may be among them
            logger.info("task %s: earlier runs' listings left to the run %s that replaced run job %s", task_id,
                        by or "?", run)
            return 0
        task, mine = run.rsplit("_", 1)[0], run.rsplit("_", 1)[-1]
        for folder in folders:
            job = folder[len(root):].rstrip("/")
            if job == run or not job.startswith(f"{task}_"):  # its own, or a folder no run of the task named
                continue
            if layout.started_before(job, run) or superseded_by(store, settings, job) == mine:
                gone += delete_prefix(store, settings.container, folder)
    except Exception as exc:  # noqa: BLE001 - housekeeping: the listing is done whatever happens here
        logger.warning("task %s: earlier runs' listing folders under %s not deleted (the next run tries again): %s",
                       task_id, root, without_secrets(str(exc).split("\n", 1)[0] or type(exc).__name__))
        return gone
    if gone:
        logger.info("task %s: deleted %d blobs of earlier runs' listings under %s", task_id, gone, root)
    return gone


@bp.activity_trigger(input_name="payload", activity=c.ENUMERATE)
@failures_without_secrets
def enumerate_images(payload: c.EnumerateInput) -> c.EnumerateOutput:
    s = clients.settings()
    request = TaskRequest.from_dict(payload["request"])
    return run_enumerate(payload["task_id"], request, s, clients.store(s),
                         clients.source_store(s, request.source_account_url, request.credential_secret))


def listing_run_of_plan(payload: Any) -> str:
    """The run whose own working files a plan call writes: its ``listing_run``, which only an orchestration that
    passes it on to the later calls sets (``orchestrations.enumeration``); "" otherwise (the task's listing folder:
    calls scheduled before runs listed apart, whose later calls read there)."""
    return str(payload.get("listing_run") or "")


def _source(s: Settings, request: TaskRequest) -> BlobStore:
    return clients.source_store(s, request.source_account_url, request.credential_secret)


@bp.activity_trigger(input_name="payload", activity=c.PLAN_LISTING)
@failures_without_secrets
def plan_listing(payload: c.EnumerateInput) -> c.PlanListingOutput:
    s = clients.settings()
    refuse_if_superseded(clients.store(s), s, payload, "the listing's plan")  # a terminated run's late call
    request = TaskRequest.from_dict(payload["request"])
    return run_plan_listing(payload["task_id"], request, s, clients.store(s), _source(s, request),
                            run=listing_run_of_plan(payload))


@bp.activity_trigger(input_name="payload", activity=c.LIST_PART)
@failures_without_secrets
def list_images_part(payload: c.ListPartInput) -> c.ListPartOutput:
    s = clients.settings()
    refuse_if_superseded(clients.store(s), s, payload, f"listing part {payload['part']} of unit {payload['unit']}")
    request = TaskRequest.from_dict(payload["request"])
    return run_list_part(payload["task_id"], request, s, clients.store(s), payload["unit"], payload["part"],
                         _source(s, request), payload.get("max_images"), payload.get("listing_run", ""))


@bp.activity_trigger(input_name="payload", activity=c.CHOOSE_SAMPLE)
@failures_without_secrets
def choose_sample(payload: c.ChooseSampleInput) -> c.ChooseSampleOutput:
    s = clients.settings()
    refuse_if_superseded(clients.store(s), s, payload, "the sample's choice")  # a terminated run's late call
    return run_choose_sample(payload["task_id"], TaskRequest.from_dict(payload["request"]), s, clients.store(s),
                             [(int(u), int(p)) for u, p in payload["parts"]], payload.get("listing_run", ""))


@bp.activity_trigger(input_name="payload", activity=c.WRITE_SHARDS)
@failures_without_secrets
def write_shard_manifests(payload: c.WriteShardsInput) -> c.WriteShardsOutput:
    s = clients.settings()
    store = clients.store(s)
    what = "the shard manifests"
    refuse_if_superseded(store, s, payload, what)  # a terminated run's late call

    def still_ours() -> None:
        refuse_if_superseded(store, s, payload, what)

    return run_write_shards(payload["task_id"], TaskRequest.from_dict(payload["request"]), s, store,
                            [(int(u), int(p)) for u, p in payload["parts"]], payload["first"], payload["count"],
                            payload["slices"], payload["sampled"], payload.get("not_found"),
                            payload.get("listing_run", ""), still_ours)


def summary_run_job(payload: Mapping[str, Any]) -> str:
    """The pool job whose cancel marker says whether the run of a summary call was replaced: its ``run_job``, else
    its ``cancel_job``. Why both: a run started before runs had ids carries no ``run_job`` (``orchestrations.task``
    ``_run_job``), yet a later run replaces it too (``api.starters._ended_runs``: "" is such a run, whose job is the
    task id) and writes that job's marker naming itself, and the orchestrator gives the summary call its job as
    ``cancel_job`` (``orchestrations.enumeration``). Unchecked, its late call wrote its counts and request over the
    replacing run's summary (the merge reads its count of shards). Safe: only a run with an id replaces another
    (every start makes one, ``api.starters``), and the replaced job is never the replacing run's own."""
    return str(payload.get("run_job") or payload.get("cancel_job") or "")


@bp.activity_trigger(input_name="payload", activity=c.FINISH_ENUMERATION)
@failures_without_secrets
def finish_enumeration(payload: c.FinishEnumerationInput) -> c.EnumerateOutput:
    s = clients.settings()
    refuse_if_superseded(clients.store(s), s, {"task_id": payload["task_id"], "run_job": summary_run_job(payload)},
                         "the listing's summary")  # a terminated run's late call
    return run_finish_enumeration(payload["task_id"], TaskRequest.from_dict(payload["request"]), s, clients.store(s),
                                  payload["images"], payload["shards"], payload["found"], payload["parts"],
                                  payload.get("not_found", 0), payload.get("not_images_plan", False),
                                  [(int(u), int(p)) for u, p in payload.get("not_images_parts", [])],
                                  payload.get("cancel_job", ""), payload.get("listing_run", ""))
