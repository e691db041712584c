"""Re-render a finished task's preview pages, their counts and a CSV at another threshold (POST .../previews).

Why an orchestration and not the HTTP call itself: the CSV needs one pass over the results file (``activities.
rethreshold``), minutes for millions of images, longer than an HTTP request should live. One variant after another
(the original results, and the repeats-removed ones when they exist): the pass, then the page from the new sample.
A results file too large for one pass (``rethreshold_results`` answers its ``parts``) is passed over by parallel
parts, composed, and their work deleted; a history recorded before parts existed has no ``parts`` and replays as
before.
Deterministic code only: the threshold and the variants come in the input (the starter checked which exist).
``task_id`` is the served generation's key (``gpu_batch.layout.generation_key``: a re-run's files and its preview
folder, whose sample the merge seeded with that key), recorded in the status as ``key``.
"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.contracts import Stage
from core.failures import failures_without_secrets
from orchestrations.retries import STORAGE_RETRY, call, call_all

bp = df.Blueprint()


def variant_key(variant: str) -> str:
    """How a variant is named in statuses and answers (as ``adapters.share_links.result_files`` names them)."""
    return variant or "original"


@bp.orchestration_trigger(context_name="context", orchestration=c.RERENDER_ORCHESTRATOR)
@failures_without_secrets
def rerender_previews(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.RerenderStatus]:
    data: c.RerenderInput = context.get_input()
    task_id, threshold = data["task_id"], data["threshold"]
    started = context.current_utc_datetime.isoformat()
    status = c.RerenderStatus(stage=Stage.publishing, key=task_id, started=started, threshold=threshold, csv={},
                              previews={})
    context.set_custom_status(status)
    for variant in data["variants"]:
        asked = c.RethresholdInput(task_id=task_id, threshold=threshold, variant=variant)
        done: c.RethresholdOutput = yield from call(context, c.RETHRESHOLD, STORAGE_RETRY, asked)
        if done.get("parts"):  # too large for one pass: its parts in parallel, then composed
            parts: list[c.RethresholdPartOutput] = yield from call_all(context, c.RETHRESHOLD_PART, [
                c.RethresholdPartInput(task_id=task_id, threshold=threshold, variant=variant, part=k, offset=offset,
                                       length=length) for k, (offset, length) in enumerate(done["parts"])])
            done = yield from call(context, c.RETHRESHOLD_COMBINE, STORAGE_RETRY, c.RethresholdCombineInput(
                task_id=task_id, threshold=threshold, variant=variant, parts=parts))
            yield from call(context, c.RETHRESHOLD_CLEAN, STORAGE_RETRY, asked)
        page: c.PreviewsOutput = yield from call(context, c.PREVIEWS, STORAGE_RETRY, c.PreviewsInput(
            task_id=task_id, model=data["model"], request_name=data.get("request_name", ""), variant=variant,
            only_if_published=True))
        status["csv"][variant_key(variant)] = done["csv_blob"]
        status["previews"][variant_key(variant)] = page
        context.set_custom_status(status)
    status["stage"] = Stage.completed
    status["finished"] = context.current_utc_datetime.isoformat()
    context.set_custom_status(status)
    return status
