"""The parallel enumeration: list a container's virtual folders in parallel activities, then cut the shard manifests.

Why: one activity listing a whole container in one stream (``enumerate_images``) costs ~23 us of CPU per blob, so
ten million blobs were half an hour in one activity, far past ``functionTimeout``. Here:

1. ``plan_listing`` lists one or two levels of virtual folders (delimiter ``/``) and writes *units*: consecutive
   folders and single blobs, in listing order;
2. each unit is listed by a chain of ``list_images_part`` calls, each bounded (``core.shards.ListingLimits``) and
   carrying the service's continuation marker to the next; the units' chains run in parallel, in rounds (one call
   per unfinished unit, then ``task_all``);
3. with ``sample_n``, ``choose_sample`` merges the parts' smallest seeded keys; with ``first_n``, pure arithmetic
   on the part counts;
4. ``write_shard_manifests`` calls, in parallel, each write a batch of shards from the part slices computed here
   (``core.shards.shard_batches``), exactly the shards the single stream would have cut;
5. ``finish_enumeration`` writes the summary, with what the listings passed over (files that are not images,
   ``core.notimages``: the plan and each part that passed over any wrote a tally, which it adds up).

What it must not do: hold image names. The orchestration history is plain tables with ~64 KB messages, so only counts
and part numbers pass through it; the names, and the service's continuation markers (which may encode a blob name:
Azurite's are the next name), stay in the listing blobs (``gpu_batch.layout.listing_*``).
Use as ``enumeration = yield from enumerate_in_parallel(context, task_id, request)``.

Retries: activities are idempotent (the same input lists and writes the same blobs), so a failed round is retried
for the calls that did not succeed, after a durable timer (``orchestrations.retries.call_all``; for the reason given
there, azure-functions-durable-python#603, not with ``call_activity_with_retry``). ``task_all`` fails as soon as
one call fails (the SDK's ``WhenAllTask.try_set_value``); the calls that had succeeded by then keep their results.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.imagelist import not_found_by_batch
from core.requests import TaskRequest
from core.shards import (TooManyShards, first_n_satisfied, selected_counts, shard_batches,
                         too_many_shards)
from orchestrations.retries import STORAGE_RETRY, call, call_all

IMAGES_PER_WRITE = 200_000  # images of the shards one write_shard_manifests call writes (about 10 s of blob writes)


def enumerate_in_parallel(context: df.DurableOrchestrationContext, task_id: str, request: dict[str, Any],
                          cancel_job: str = "", max_shards: int = 0,
                          run_job: str = "") -> Generator[Any, Any, c.EnumerateOutput]:
    """Enumerate the request's images into shard manifests; returns the counts (``EnumerateOutput``), and
    ``cancelled`` when the cancel marker of the run's pool job ``cancel_job`` was written meanwhile. More shards
    than ``max_shards`` (the task's knob; 0: a task started before the limit, unchecked) raise ``TooManyShards``
    before any manifest is written. ``run_job``: the run's pool job, in every call's input (not when ""): a call
    of a run terminated and replaced since writes nothing (``activities.superseded``): its queued listing parts and
    manifest writes would otherwise write another listing's names under the key the replacing run lists into.

    The run's listing also keeps its working files (plan, units, parts, cursors, sample, tallies) in a folder of its
    own (``listing_run``, ``layout.listing_work_prefix``): a call of the terminated run already past that check (the
    replacing run lists right after it writes the marker) then writes its own listing's files, never the new run's
    part of the same number, read against the new run's counts. The plan says where it wrote (its output's
    ``listing_run``: absent in recorded histories from before, whose later calls keep the task's listing folder)."""
    listing_run = ""

    def of_run(payload: Any) -> Any:
        if run_job:
            payload["run_job"] = run_job
        if listing_run:
            payload["listing_run"] = listing_run
        return payload

    plan_input = of_run(c.EnumerateInput(task_id=task_id, request=request))
    if run_job:
        plan_input["listing_run"] = run_job
    plan: c.PlanListingOutput = yield from call(context, c.PLAN_LISTING, STORAGE_RETRY, plan_input)
    listing_run = plan.get("listing_run", "")
    units = plan["units"]
    parsed = TaskRequest.from_dict(request)
    first_n, sample_n = parsed.first_n, parsed.sample_n

    counts: list[list[int]] = [[] for _ in range(units)]  # images of each part, per unit
    missing: list[list[int]] = [[] for _ in range(units)]  # an image list's names not found, per part, per unit
    passed_over: list[tuple[int, int]] = []  # [unit, part] of the parts that passed over files not images
    unfinished = set(range(units))
    while unfinished:
        active = sorted(unfinished)
        payloads = []
        for u in active:
            payload = c.ListPartInput(task_id=task_id, request=request, unit=u, part=len(counts[u]))
            if first_n is not None:
                payload["max_images"] = first_n
            payloads.append(of_run(payload))
        outputs: list[c.ListPartOutput] = yield from call_all(context, c.LIST_PART, payloads)
        for u, out in zip(active, outputs):
            counts[u].append(out["images"])
            missing[u].append(out.get("not_found", 0))
            if out.get("not_images"):
                passed_over.append((u, len(counts[u]) - 1))
            if not out["more"]:
                unfinished.discard(u)
        if first_n is not None and unfinished:
            last = first_n_satisfied([sum(n) for n in counts], [u not in unfinished for u in range(units)], first_n)
            if last is not None:  # the first N images are listed: later units are not needed
                unfinished = set()

    parts = [(u, p) for u in range(units) for p in range(len(counts[u]))]
    found = [n for unit in counts for n in unit]
    sampled = sample_n is not None and sample_n < sum(found)
    if sampled:
        chosen: c.ChooseSampleOutput = yield from call(context, c.CHOOSE_SAMPLE, STORAGE_RETRY, of_run(
            c.ChooseSampleInput(task_id=task_id, request=request, parts=parts)))
        selected = chosen["counts"]
    else:
        selected = selected_counts(found, first_n)

    too_many = too_many_shards(sum(selected), parsed.images_per_shard, max_shards)
    if too_many:  # before a single manifest is written
        raise TooManyShards(too_many)
    batches = shard_batches(selected, parsed.images_per_shard, plan.get("images_per_write", IMAGES_PER_WRITE))
    writes = []
    for batch in batches:
        used = [s["part"] for s in batch["slices"]]
        slices = [{"part": k, "skip": s["skip"], "take": s["take"]} for k, s in enumerate(batch["slices"])]
        writes.append(of_run(c.WriteShardsInput(
            task_id=task_id, request=request, parts=[parts[p] for p in used], first=batch["first"],
            count=batch["count"], slices=slices, sampled=sampled)))
    not_found = [n for unit in missing for n in unit]
    if any(not_found):  # an image list's names not found: each part's are reported by one shard (core.imagelist)
        for write, extra in zip(writes, not_found_by_batch(batches, parts, selected, not_found,
                                                           parsed.images_per_shard)):
            write["not_found"] = extra
    written: list[c.WriteShardsOutput] = yield from call_all(context, c.WRITE_SHARDS, writes)
    images = sum(w["images"] for w in written)
    shards = sum(w["shards"] for w in written)
    finish = c.FinishEnumerationInput(task_id=task_id, request=request, images=images, shards=shards,
                                      found=sum(found), parts=len(parts))
    if any(not_found):
        finish["not_found"] = sum(not_found)
    if plan.get("not_images"):
        finish["not_images_plan"] = True
    if passed_over:
        finish["not_images_parts"] = passed_over
    if cancel_job:
        finish["cancel_job"] = cancel_job
    result: c.EnumerateOutput = yield from call(context, c.FINISH_ENUMERATION, STORAGE_RETRY, of_run(finish))
    if "nearby" in plan:  # the prefix named nothing: the task's error says what is near it
        result["nearby"] = plan["nearby"]
    done = [[int(i), int(n), int(f)] for w in written for i, n, f in w.get("done", [])]
    if done:  # a resumed listing's shards finished already (WriteShardsOutput.done): their groups start them done
        result["done"] = sorted(done)
    partly = [[int(i), int(n)] for w in written for i, n in w.get("partly", [])]
    if partly:  # and its other shards' images final already (WriteShardsOutput.partly): not this run's pool's work
        result["partly"] = sorted(partly)
    return result
