"""The exports step of a task or a repeats removal: fanned out over the merge's parts, even one.

Why: the single exports activity (``activities.exports``) handles about 1.9M images within ``functionTimeout``, but
spools every format to the local disk (~2.7 kB an image: 540 MB at a one-part task's 200,000 images, of the 0.8 GB a
Flex Consumption instance has for all its activities, ``core.scratch``); the parts stream theirs to blobs.
``exports_part`` runs per merge part in parallel (``core.exportparts``), ``exports_events`` groups the Camtrap DP
events of all of them and ``exports_link_part`` gives the media-level rows of each part with time-grouped photos their
events' ids, and its COCO images their sequences, in parallel (``activities.exportevents``; parts recorded before
that step have no ``link`` and the combine groups the events itself, as it did; a part whose photos without a capture
time got their deployment's first capture time is linked again after it ran again for a conflict, below),
``exports_combine`` composes COCO and Camtrap DP and gives the eligible counts, then the Zooniverse batches fan out
too (``activities.zooniverseparts``): ``exports_zooniverse_part`` per part with eligible images in parallel (each
told how many eligible images precede it, the total and the batch count), ``exports_zooniverse_combine`` per group of
batches in parallel (``core.exportparts.zooniverse_groups``), then ``exports_zooniverse_clean``. When the task's image
list defines captures (the combine says ``zooniverse_captures``), the subjects are captures instead
(``activities.zooniverse_captures``): ``exports_captures_part`` per part, one ``exports_captures_combine``, the clean. The orchestrator
holds counts only. When the parts saw other first coordinates or cameras for a deployment (an image list's
metadata), the combine names the parts to run again from the task's first ones (``redo``), and combines again.
The path follows recorded outputs, so existing histories replay unchanged: a merge output without ``parts`` (or
with one part and no ``exports_fan_out``) takes the single activity, a conflict without ``redo`` the single activity too, and a combine output
without ``zooniverse_parts`` takes the single ``exports_zooniverse`` over the whole results. Deterministic.
"""
from __future__ import annotations

from typing import Any, Callable, Generator

import azure.durable_functions as df

from core import contracts as c
from core.exportparts import eligible_before, part_ranges, zooniverse_groups
from orchestrations.retries import STORAGE_RETRY, call, call_all


def single_zooniverse_output(output: c.ExportsOutput, made: int | c.ExportsZooniverseOutput) -> c.ExportsOutput:
    """The exports' output after the single ``exports_zooniverse`` (a combine recorded before the fan-out). Its
    counts replace the combine's: that combine's parts counted the photos cut short among the subjects, which the
    activity leaves out, so the summary named more subjects than the batches hold. An ``int`` is its answer recorded
    by a release before it counted (the batches alone): the output stays as that release made it."""
    if isinstance(made, int):
        return {**output, "zooniverse_batches": made}
    out: c.ExportsOutput = {**output, "zooniverse_batches": made["batches"], "zooniverse_subjects": made["subjects"]}
    if made.get("cut_short"):
        out["zooniverse_cut_short"] = made["cut_short"]
    return out


def exports(context: df.DurableOrchestrationContext, task_id: str, variant: str,
            merged: c.MergeOutput, run_job: str = "") -> Generator[Any, Any, c.ExportsOutput]:
    """``run_job``: the pool job of the task's run, in every call's input (not when ""): a call of a run terminated
    and replaced since writes nothing (``activities.superseded``; inputs only, so histories replay as they ran)."""
    def of_run(payload: Any) -> Any:
        if run_job:
            payload["run_job"] = run_job
        return payload

    ranges = part_ranges(merged.get("parts") or [])
    if not ranges or (len(ranges) == 1 and not merged.get("exports_fan_out")):
        single: c.ExportsOutput = yield from call(context, c.EXPORTS, STORAGE_RETRY,
                                                  of_run(c.ExportsInput(task_id=task_id, variant=variant)))
        return single
    shards = [int(p[1]) for p in merged.get("parts") or []]  # MergeOutput.parts: [first shard, shards, json bytes]
    parts: list[c.ExportsPartOutput] = yield from call_all(context, c.EXPORTS_PART, [
        of_run(c.ExportsPartInput(task_id=task_id, variant=variant, part=part, first_shard=first, offset=offset,
                                  length=length, shards=shards[part])) for part, first, offset, length in ranges])
    events: c.ExportsEventsOutput | None = None
    linked: list[c.ExportsLinkPartOutput] = []
    # parts of this release say "link"; for parts recorded before it (on replay) the combine groups the events itself
    if all(p.get("link") for p in parts):
        events = yield from call(context, c.EXPORTS_EVENTS, STORAGE_RETRY, of_run(c.ExportsEventsInput(
            task_id=task_id, variant=variant, parts=[p["part"] for p in parts])))
        linked = yield from call_all(context, c.EXPORTS_LINK_PART, [
            of_run(c.ExportsLinkPartInput(task_id=task_id, variant=variant, part=part)) for part in events["link"]])

    def combine_input() -> c.ExportsCombineInput:
        payload = c.ExportsCombineInput(task_id=task_id, variant=variant, parts=parts)
        if events is not None:
            payload["events"] = events
            payload["linked"] = [[k["part"], k["bytes"]] for k in linked]
            payload["linked_images"] = [[k["part"], k["images_bytes"]] for k in linked if "images_bytes" in k]
            media = [[k["part"], k["media_bytes"]] for k in linked if "media_bytes" in k]
            if media:  # absent from combines recorded before: their inputs stay as they were
                payload["linked_media"] = media
        of_run(payload)
        return payload

    combined: c.ExportsCombineOutput = yield from call(context, c.EXPORTS_COMBINE, STORAGE_RETRY, combine_input())
    if combined.get("conflict") and combined.get("redo") is not None:
        # parts that saw other first coordinates or cameras for a deployment: again, from the task's first ones
        redo = set(combined.get("redo") or [])
        again: list[c.ExportsPartOutput] = yield from call_all(context, c.EXPORTS_PART, [
            of_run(c.ExportsPartInput(task_id=task_id, variant=variant, part=part, first_shard=first, offset=offset,
                                      length=length, shards=shards[part], given=True))
            for part, first, offset, length in ranges if part in redo])
        by_part = {p["part"]: p for p in again}
        parts = [by_part.get(p["part"], p) for p in parts]
        # their media rows, written again, are linked again for their photos' stand-in times (only links that gave
        # some, which no history recorded before them holds: those replay as they were)
        relink = [k["part"] for k in linked if "media_bytes" in k and k["part"] in redo]
        if relink:
            fresh: list[c.ExportsLinkPartOutput] = yield from call_all(context, c.EXPORTS_LINK_PART, [
                of_run(c.ExportsLinkPartInput(task_id=task_id, variant=variant, part=part)) for part in relink])
            by_link = {k["part"]: k for k in fresh}
            linked = [by_link.get(k["part"], k) for k in linked]
        combined = yield from call(context, c.EXPORTS_COMBINE, STORAGE_RETRY, combine_input())
    if combined["conflict"] or "output" not in combined:
        fallback: c.ExportsOutput = yield from call(context, c.EXPORTS, STORAGE_RETRY,
                                                    of_run(c.ExportsInput(task_id=task_id, variant=variant)))
        return fallback
    output = combined["output"]
    if combined.get("zooniverse_captures"):  # subjects are captures: sorted runs per part, one merge writes them
        made = yield from _captures(context, task_id, variant, ranges, shards, of_run)
        return {**output, "zooniverse_subjects": made["subjects"], "zooniverse_batches": made["batches"],
                "zooniverse_capture_images": made["images"]}
    if not combined.get("zooniverse_parts"):  # a combine recorded before the Zooniverse fan-out
        made_single: int | c.ExportsZooniverseOutput = yield from call(
            context, c.EXPORTS_ZOONIVERSE, STORAGE_RETRY,
            of_run(c.ExportsZooniverseInput(task_id=task_id, variant=variant, eligible=output["zooniverse_subjects"])))
        return single_zooniverse_output(output, made_single)
    total, count = output["zooniverse_subjects"], output["zooniverse_batches"]
    zparts = [of_run(c.ExportsZooniversePartInput(task_id=task_id, variant=variant, part=part, first_shard=first,
                                                  offset=offset, length=length, before=before, rows=p["eligible"],
                                                  eligible=total, batches=count, shards=shards[part]))
              for (part, first, offset, length), p, before in zip(ranges, parts,
                                                                  eligible_before([p["eligible"] for p in parts]))
              if p["eligible"]]
    for zpart, p in zip(zparts, [p for p in parts if p["eligible"]]):
        if p.get("zooniverse_cut_short"):  # its eligible count left photos cut short out: the rows leave them out too
            zpart["cut_short"] = True
    written: list[c.ExportsZooniversePartOutput] = yield from call_all(context, c.EXPORTS_ZOONIVERSE_PART, zparts)
    with_rows = [w["part"] for w in written if w["rows"]]
    yield from call_all(context, c.EXPORTS_ZOONIVERSE_COMBINE, [
        of_run(c.ExportsZooniverseCombineInput(task_id=task_id, variant=variant, parts=with_rows, first=first,
                                               count=n))
        for first, n in zooniverse_groups(count, len(with_rows))])
    yield from call(context, c.EXPORTS_ZOONIVERSE_CLEAN, STORAGE_RETRY,
                    of_run(c.ExportsZooniverseCleanInput(task_id=task_id, variant=variant, batches=count)))
    return output


def _captures(context: df.DurableOrchestrationContext, task_id: str, variant: str,
              ranges: list[tuple[int, int, int, int]], shards: list[int],
              of_run: Callable[[Any], Any]) -> Generator[Any, Any, c.ExportsCapturesCombineOutput]:
    """The manifests of captures (``activities.zooniverse_captures``): every part's sorted runs in parallel, the
    merge that writes the batches, then the clean-up of the work blobs (the per-image fan-out's, which covers them)."""
    runs: list[c.ExportsCapturesPartOutput] = yield from call_all(context, c.EXPORTS_CAPTURES_PART, [
        of_run(c.ExportsCapturesPartInput(task_id=task_id, variant=variant, part=part, first_shard=first,
                                          offset=offset, length=length, shards=shards[part]))
        for part, first, offset, length in ranges])
    made: c.ExportsCapturesCombineOutput = yield from call(context, c.EXPORTS_CAPTURES_COMBINE, STORAGE_RETRY,
                                                           of_run(c.ExportsCapturesCombineInput(
                                                               task_id=task_id, variant=variant,
                                                               runs=[(r["part"], r["runs"]) for r in runs
                                                                     if r["runs"]])))
    yield from call(context, c.EXPORTS_ZOONIVERSE_CLEAN, STORAGE_RETRY,
                    of_run(c.ExportsZooniverseCleanInput(task_id=task_id, variant=variant, batches=made["batches"])))
    return made
