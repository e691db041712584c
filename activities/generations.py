"""Generations of a task (re-runs): promote a finished one.

Why activities: both are storage I/O that the task orchestrator orders (``orchestrations.task``). Promotion is the
last step of a re-run that completed: it points ``results/<task>/current.json`` at the new generation (see
``adapters.generations`` for why a pointer rather than a copy) and then takes the previous generation's preview pages
off the public static website (they would otherwise stay public with nothing left to delete them: ``DELETE
.../previews`` acts on the served generation), and so are the pages of any other re-run generation, one that was
terminated or failed after its previews step (``unserved_generations_with_pages``). The previous generation's results
files stay where they are, until the sweep the run starts next deletes them days later (``core.replaced``).
Must not: touch the previous generation's results before the pointer moved; run before the new results are complete.
"""
from __future__ import annotations

import logging

import azure.durable_functions as df

from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.blobs import BlobStore
from adapters.preview_folders import delete_preview_folder
from core import contracts as c
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def run_promote(task_id: str, generation: str, previous: str | None, settings: Settings,
                store: BlobStore) -> c.PromoteOutput:
    """Serve ``generation`` (a run id) from now on; ``previous`` is the generation served until now (None: none).
    Idempotent: a retry rewrites the same pointer and finds the old pages already gone."""
    key = layout.generation_key(task_id, generation)
    store.write_json(settings.container, layout.current_generation_blob(task_id), {"generation": generation})
    deleted = 0
    if previous is not None and previous != generation:
        deleted = delete_preview_folder(store, settings, layout.generation_key(task_id, previous)) or 0
    for other in unserved_generations_with_pages(store, settings, task_id, generation, previous):
        deleted += delete_preview_folder(store, settings, layout.generation_key(task_id, other)) or 0
    logger.info("task %s: generation %s promoted (previous %r, %d preview blobs taken offline)", task_id, generation,
                previous, deleted)
    return {"promoted": key, "previews_deleted": deleted}


def unserved_generations_with_pages(store: BlobStore, settings: Settings, task_id: str, served: str,
                                    previous: str | None) -> list[str]:
    """The task's re-run generations (run ids) other than ``served`` and ``previous`` whose pages are still online
    (their folder record, ``layout.preview_folder_blob``, is there), in name order.

    Why: a re-run terminated after its previews step and before its promotion left its pages on the public website,
    and nothing deleted them: ``DELETE .../previews`` and the expiry act on the served generation, and a promotion
    took only ``previous``'s off; the run after it is a new generation (``"rerun": true``) whose ``previous`` is the
    generation served before both. Only a run that serves a generation promotes (one task run at a time, and a
    terminated run's late promotion is refused, activities.superseded), so once the pointer names ``served`` no other
    re-run generation's pages are served: every one found here is a terminated or failed run's. The first
    generation's pages (the task id's) go only as ``previous``, as before. One listing of ``results/<task>/runs/`` a
    level deep, and one small read per generation."""
    runs = layout.results_prefix(task_id) + "runs/"
    found: list[str] = []
    for page in store.iter_level_pages(settings.container, runs):
        for prefix in page.prefixes:
            run = prefix[len(runs):].rstrip("/")
            if run in (served, previous):
                continue
            try:
                key = layout.generation_key(task_id, run)
            except ValueError:  # not a generation's folder
                continue
            if store.exists(settings.container, layout.preview_folder_blob(key)):
                found.append(run)
    return sorted(found)


@bp.activity_trigger(input_name="payload", activity=c.PROMOTE)
@failures_without_secrets
def promote_generation(payload: c.PromoteInput) -> c.PromoteOutput:
    s = clients.settings()
    # a terminated run's: it would serve its generation over the run that replaced it
    refuse_if_superseded(clients.store(s), s, payload, "the promotion of its generation")
    return run_promote(payload["task_id"], payload["generation"], payload.get("previous"), s, clients.store(s))
