"""The merge as a parallel fan-in: parts over fixed ranges of shards, a combine, and the repeat search by folders.

Why: the single merge activity took ~190 us per image, hours for ten million images, far past ``functionTimeout``.
Here every activity is bounded whatever the task size (``activities.fanin`` says what each does):

    merge_part  x ceil(images / merge_images_per_part)   in parallel, about ``merge_images_per_part`` images each
    merge_combine                                        composes the results from the parts' fragments
    search_repeats x groups                              in parallel, about 400,000 eligible detections each
    rank_repeats                                         the repeated-detections document
                                                         (both best effort: ``repeat_search_error`` says why not)
    clean_merge_work                                     deletes the parts' work blobs (best effort)

The parts also count the photos cut short (``activities.shard_results.shard_damaged``) and the combine lists them
all in ``layout.damaged_blob`` when there are any; the merge output then carries ``damaged`` and a few examples
(``damaged_status`` words them for a status). The variant's parts count them too and return their first few names
instead of a list: removing repeated detections changes no photo, so its output names the original's list.

Used with ``yield from`` by the task orchestrator (``fan_in(...)`` where it called the merge) and the repeats removal
(``variant=REPEATS_REMOVED``: parts mark the chosen locations, no search). Deterministic code only: the completion
time comes from the orchestration clock, everything else from the activities' outputs.

A failed part (or search group) does not re-run the others: the fan-out waits on a durable timer and calls again only
the activities that had not succeeded when the failure surfaced (``STORAGE_RETRY.attempts`` rounds at most;
``orchestrations.retries.call_all``), with plain ``call_activity`` for the reason given there
(azure-functions-durable-python#603).
``task_all`` fails as soon as one child fails (the SDK's ``WhenAllTask``); children that were still running then may
run twice, which the activities allow (they write the same bytes).

The repeat search comes after the results, CSV and preview sample are written and is only a report about them: when
its groups or its ranking fail after their retries (a folder too large for one activity, say; folders over
``max_folder_detections`` are left out by the plan for that reason), the merge still returns, with
``repeat_search_error`` and no ``repeated_locations``, and the task completes with its results; its status says so and
how to run the search again (``orchestrations.task``).
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.errors import failure_line
from core.fanin import MAX_PARTS, plan_parts
from core.settings import OrchestrationKnobs
from gpu_batch.layout import (REPEATS_REMOVED, csv_blob, damaged_blob, merge_work_prefix, repeats_blob,
                               results_blob)
from orchestrations.retries import STORAGE_RETRY, call, call_all

COUNTS = ("images", "failed", "with_detections", "detections", "empty", "missing")


def damaged_status(merged: c.MergeOutput) -> dict[str, Any] | None:
    """A status's ``damaged`` (the task's, and a repeat removal's: the same photos): how many photos were JPEGs cut
    short (decoded as far as they go, with gray fill, as MegaDetector does: their results stand, but what the camera
    did not write was never seen), the first few, where the list of all of them is, and what to do; None when there
    were none (or a merge recorded before they were counted, which an orchestration replaying its history gets
    back)."""
    count = int(merged.get("damaged", 0))
    if not count:
        return None
    return {"count": count, "examples": list(merged.get("damaged_examples", []))[: c.DAMAGED_EXAMPLES],
            "blob": merged.get("damaged_blob", ""),
            "hint": "JPEGs cut short (no end-of-image marker: power lost mid-write, a partial copy), detected as far as "
                    "they go; copy them again from the cards, then post the request again with \"only_new\": true"}


def fan_in(context: df.DurableOrchestrationContext, task_id: str, model: str, images: int, shards: int,
           knobs: OrchestrationKnobs, variant: str = "",
           remove: list[str] | None = None, search: str | None = None,
           remove_blob: str | None = None, run_job: str = "") -> Generator[Any, Any, c.MergeOutput]:
    """Merge every shard's results (or write the repeats-removed ``variant`` for the location ids ``remove`` of the
    list ``search``: the parts refuse to mark anything when the task's list is another one). ``remove_blob``: the
    parts read the ids from it instead of each carrying them (``contracts.PREPARE_REMOVAL``). ``run_job``: the pool
    job of the task's run, in every call's input (not when ""): a call of a run terminated and replaced since writes
    nothing (``activities.superseded``; inputs only, so histories replay as they ran)."""
    def of_run(payload: Any) -> Any:
        if run_job:
            payload["run_job"] = run_job
        return payload

    completed_at = context.current_utc_datetime.isoformat()
    payloads: list[c.MergePartInput] = []
    plan = plan_parts(shards, images, knobs.merge_images_per_part, knobs.merge_max_parts or MAX_PARTS)
    for part, (first, count) in enumerate(plan):
        payload = c.MergePartInput(task_id=task_id, part=part, first_shard=first, shards=count)
        if variant:
            payload["variant"] = variant
            if remove_blob:
                payload["remove_blob"] = remove_blob
            else:
                payload["remove"] = list(remove or [])
            if search is not None:
                payload["search"] = search
        payloads.append(of_run(payload))
    parts: list[c.MergePartOutput] = yield from call_all(context, c.MERGE_PART, payloads)
    rows: list[dict[str, Any]] = [dict(p) for p in parts]
    counts = {k: sum(int(r[k]) for r in rows) for k in COUNTS}
    reasons: dict[str, int] = {}
    for p in parts:
        for reason, n in p["failure_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    failure_reasons = dict(sorted(reasons.items()))
    combine = c.MergeCombineInput(task_id=task_id, model=model, completed_at=completed_at, variant=variant,
                                  json_bytes=[p["json_bytes"] for p in parts], csv_bytes=[p["csv_bytes"] for p in parts],
                                  images=counts["images"], failure_reasons=failure_reasons)
    if variant == REPEATS_REMOVED:
        combine["removed"] = sorted(remove or [])
    else:
        combine["detections_per_group"] = knobs.repeat_search_detections_per_group
        combine["max_folder_detections"] = knobs.repeat_max_folder_detections
        damaged = sum(int(p.get("damaged", 0)) for p in parts)  # absent from parts recorded before: none
        if damaged:  # only then: a combine input without it is what it was before
            combine["damaged_bytes"] = [int(p.get("damaged_bytes", 0)) for p in parts]
    combined: c.MergeCombineOutput = yield from call(context, c.MERGE_COMBINE, STORAGE_RETRY, of_run(combine))
    merged: c.MergeOutput = {
        "results_blob": results_blob(task_id, variant), "csv_blob": csv_blob(task_id, variant),
        "repeats_blob": repeats_blob(task_id), "failure_reasons": failure_reasons, "container": combined["container"],
        "images": counts["images"], "failed": counts["failed"], "with_detections": counts["with_detections"],
        "detections": counts["detections"], "empty": counts["empty"], "missing": counts["missing"]}
    if combined.get("exports_parts"):  # absent from a combine that ran before the exports fan-out: single exports
        merged["parts"] = [[first, count, p["json_bytes"]] for (first, count), p in zip(plan, parts)]
    if combined.get("exports_one_part"):  # absent from a combine recorded before: one part's exports stay single
        merged["exports_fan_out"] = True
    if variant == REPEATS_REMOVED:
        merged["detections_marked"] = sum(p["marked"] for p in parts)
        damaged = sum(int(p.get("damaged", 0)) for p in parts)  # absent from parts recorded before: none
        if damaged:  # the same photos as the original's list, which the original's merge wrote
            merged["damaged"] = damaged
            merged["damaged_blob"] = damaged_blob(task_id)
            # the first part's that has any, as the original's combine takes them from that part's rows
            merged["damaged_examples"] = next((list(p["damaged_examples"]) for p in parts
                                               if p.get("damaged_examples")), [])
    else:
        if "damaged_bytes" in combine:  # the combine wrote the list of photos cut short
            merged["damaged"] = damaged
            merged["damaged_blob"] = damaged_blob(task_id)
            merged["damaged_examples"] = list(combined.get("damaged_examples", []))
        groups = combined["search_groups"]
        try:  # the results are written: a search failing after its retries must not fail the task that holds them
            yield from call_all(context, c.SEARCH_REPEATS, [of_run(c.SearchRepeatsInput(task_id=task_id, group=g))
                                                            for g in range(groups)])
            ranked: c.RankRepeatsOutput = yield from call(context, c.RANK_REPEATS, STORAGE_RETRY, of_run(
                c.RankRepeatsInput(task_id=task_id, groups=groups,
                                   detections_considered=sum(p["detections_considered"] for p in parts))))
        except Exception as exc:  # noqa: BLE001 - the activity's last failure; POST .../repeats/search runs it again
            merged["repeat_search_error"] = failure_line(exc)
        else:
            merged["repeated_locations"] = ranked["locations"]
            if ranked.get("folders_skipped"):  # folders over max_folder_detections, which the document names
                merged["repeat_folders_skipped"] = ranked["folders_skipped"]
                merged["repeat_detections_skipped"] = ranked.get("detections_skipped", 0)
    clean = c.CleanMergeWorkInput(task_id=task_id)
    if variant:
        clean["variant"] = variant
    try:  # the results are written; the work blobs (as large as they are) only cost storage from here on
        yield from call(context, c.CLEAN_MERGE_WORK, STORAGE_RETRY, of_run(clean))
    except Exception as exc:  # noqa: BLE001 - best effort: leftovers under tasks/<task>/merge*/ harm nothing ...
        # ... but cost storage (as much as the results): said in the status, with how to delete them (status only)
        merged["work_left"] = work_left(merged["container"], merge_work_prefix(task_id, variant), exc)
    return merged


def work_left(container: str, prefix: str, exc: BaseException) -> str:
    """The status's ``work_left``: a best-effort cleanup that failed after its retries, which work blobs it left and
    how to delete them. Why said: nothing else deletes them, and a merge's are as large as the results.
    ``container``: the state container, "" where the caller does not know its name (the app's
    ``TRAPBATCH_CONTAINER``). The command names the account and ``--auth-mode login``: without an account az has
    none to call, and without login it takes the account key from ARM (azure-cli storage
    ``validate_client_parameters``), which the deployed account, shared-key access off, refuses.

    The command comes first, the cleanup's words last, and the blobs are named once (in the command): a status over
    its budget cuts this text to 400 characters (core.status_size ``_NOTES``, and ``_FLOORS`` keeps those 400), which
    the command fits for a 63-character container and the longest work prefix. Why: with the container and prefix
    named first and the cleanup's 200 characters before the command, that cut, then the halving down to
    "the work blobs under <container>…", left no command."""
    container = container or "$TRAPBATCH_CONTAINER"
    return (f"work blobs were not deleted; the results do not need them: to stop paying for their storage, delete them "
            f"with 'az storage blob delete-batch --account-name <account> --auth-mode login --source {container} "
            f"--pattern \"{prefix}*\"' (<account>: the app's storage account, azd's AZURE_STORAGE_ACCOUNT_NAME). "
            f"Deleting them failed with: {failure_line(exc, 200)}")
