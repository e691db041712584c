"""The exports step of a task or a repeats removal: one activity for a merge of one part, fanned out beyond.

Why: the single exports activity (``activities.exports``) handles about 1.9M images within ``functionTimeout``.
When the merge had more than one part, ``exports_part`` runs per merge part in parallel (``core.exportparts``),
``exports_combine`` composes COCO and Camtrap DP, and ``exports_zooniverse`` writes the batches (still one
activity over the whole results). A one-part merge, and an orchestration whose merge output has no ``parts`` (its
history predates them), call the single activity as before, so existing histories replay unchanged. Deterministic.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.exportparts import part_ranges
from orchestrations.retries import STORAGE_RETRY, call, call_all


def exports(context: df.DurableOrchestrationContext, task_id: str, variant: str,
            merged: c.MergeOutput) -> Generator[Any, Any, c.ExportsOutput]:
    ranges = part_ranges(merged.get("parts") or [])
    if len(ranges) <= 1:
        single: c.ExportsOutput = yield from call(context, c.EXPORTS, STORAGE_RETRY,
                                                  c.ExportsInput(task_id=task_id, variant=variant))
        return single
    parts: list[c.ExportsPartOutput] = yield from call_all(context, c.EXPORTS_PART, [
        c.ExportsPartInput(task_id=task_id, variant=variant, part=part, first_shard=first, offset=offset,
                           length=length) for part, first, offset, length in ranges])
    combined: c.ExportsCombineOutput = yield from call(context, c.EXPORTS_COMBINE, STORAGE_RETRY,
                                                      c.ExportsCombineInput(task_id=task_id, variant=variant,
                                                                            parts=parts))
    if combined["conflict"] or "output" not in combined:
        fallback: c.ExportsOutput = yield from call(context, c.EXPORTS, STORAGE_RETRY,
                                                    c.ExportsInput(task_id=task_id, variant=variant))
        return fallback
    output = combined["output"]
    batches: int = yield from call(context, c.EXPORTS_ZOONIVERSE, STORAGE_RETRY, c.ExportsZooniverseInput(
        task_id=task_id, variant=variant, eligible=output["zooniverse_subjects"]))
    return {**output, "zooniverse_batches": batches}
