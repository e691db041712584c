"""A repeated-detection search run again over a finished task with other phase-1 options, then its preview page.

Why an orchestration: which detections take part depends on the options (confidence range, size), so the search
reads every shard's results again, in parallel parts as the fan-in does (``orchestrations.fanin``), then searches
the folders in parallel groups with the fan-in's own activities; minutes for millions of images, longer than an HTTP
request should live. The new list replaces the task's repeats document (its ``search`` id tells the lists apart), and
the page is rendered again so its repeated-places section shows the new list. A search that fails after its retries
fails this orchestration before the list is replaced: the task's results and its current list stay as they were, and
``GET .../repeats`` shows the search failed with its error (``api.repeat_search.search_status``), so it can simply be
started again. Deterministic code only: the options, the search id and the sizes come in the input, the time from the
orchestration clock.

    repeat_search_part x parts      the eligible detections under the new options, per folder
    plan_repeat_search              folder groups (folders over the options' max_folder_detections left out)
    search_repeats x groups         the fan-in's search, with the options and this work folder
    rank_repeats                    the new repeats document (replaces the current one)
    clean_merge_work                the work blobs (best effort)
    render_previews                 the page, with the new repeated places
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.contracts import Stage
from core.failures import failures_without_secrets
from core.fanin import MAX_PARTS, plan_parts
from core.settings import OrchestrationKnobs
from gpu_batch.layout import REPEAT_SEARCH_WORK, merge_work_prefix
from orchestrations.fanin import work_left
from orchestrations.retries import STORAGE_RETRY, call, call_all

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=c.REPEAT_SEARCH_ORCHESTRATOR)
@failures_without_secrets
def search_repeats_again(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.RepeatSearchStatus]:
    data: c.RepeatSearchInput = context.get_input()
    task_id, options, work = data["task_id"], data["options"], REPEAT_SEARCH_WORK
    knobs = OrchestrationKnobs.from_dict(data["knobs"])
    status: c.RepeatSearchStatus = c.RepeatSearchStatus(stage=Stage.searching, started=context.current_utc_datetime.isoformat(),
                                  search=data["search"], options=options)
    context.set_custom_status(status)
    enumeration: c.EnumerateOutput = yield from call(context, c.READ_ENUMERATION, STORAGE_RETRY,
                                                     c.ReadEnumerationInput(task_id=task_id))
    plan = plan_parts(enumeration["shards"], enumeration["images"], knobs.merge_images_per_part,
                      knobs.merge_max_parts or MAX_PARTS)
    parts: list[c.SearchPartOutput] = yield from call_all(context, c.SEARCH_PART, [
        c.SearchPartInput(task_id=task_id, part=p, first_shard=first, shards=count, options=options, work=work)
        for p, (first, count) in enumerate(plan)])
    plan_input = c.PlanSearchInput(task_id=task_id, parts=len(parts),
                                   detections_per_group=knobs.repeat_search_detections_per_group, work=work)
    if options.get("max_folder_detections") is not None:  # absent from a search started before the cap: the default
        plan_input["max_folder_detections"] = int(options["max_folder_detections"])
    planned: c.PlanSearchOutput = yield from call(context, c.PLAN_SEARCH, STORAGE_RETRY, plan_input)
    groups = planned["groups"]
    yield from call_all(context, c.SEARCH_REPEATS, [c.SearchRepeatsInput(task_id=task_id, group=g, options=options,
                                                                        work=work) for g in range(groups)])
    considered = sum(p["detections_considered"] for p in parts)
    ranked: c.RankRepeatsOutput = yield from call(context, c.RANK_REPEATS, STORAGE_RETRY, c.RankRepeatsInput(
        task_id=task_id, groups=groups, detections_considered=considered, options=options, work=work,
        search=data["search"], searched=status["started"]))
    status = {**status, "stage": Stage.publishing, "parts": len(parts), "groups": groups,
              "detections_considered": considered, "locations": ranked["locations"]}
    if ranked.get("folders_skipped"):  # folders over the options' max_folder_detections: the new list names them
        status["folders_skipped"] = ranked["folders_skipped"]
        status["detections_skipped"] = ranked.get("detections_skipped", 0)
    context.set_custom_status(status)
    try:  # the list is written; the work blobs (a few columns per eligible detection) only cost storage from here on
        yield from call(context, c.CLEAN_MERGE_WORK, STORAGE_RETRY, c.CleanMergeWorkInput(task_id=task_id,
                                                                                          variant=work))
    except Exception as exc:  # noqa: BLE001 - best effort: leftovers under tasks/<task>/merge.repeat-search/ harm
        # nothing but cost storage: said in the status, with how to delete them (status only, no action)
        status = {**status, "work_left": work_left("", merge_work_prefix(task_id, work), exc)}
    previews: c.PreviewsOutput = yield from call(context, c.PREVIEWS, STORAGE_RETRY, c.PreviewsInput(
        task_id=task_id, model=data["model"], request_name=data.get("request_name", ""), only_if_published=True))
    status = {**status, "stage": Stage.completed, "finished": context.current_utc_datetime.isoformat(),
              "previews": previews}
    context.set_custom_status(status)
    return status
