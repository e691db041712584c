"""Generations of a task (re-runs): promote a finished one.

Why activities: both are storage I/O that the task orchestrator orders (``orchestrations.task``). Promotion is the
last step of a re-run that completed: it points ``results/<task>/current.json`` at the new generation (see
``adapters.generations`` for why a pointer rather than a copy) and then takes the previous generation's preview pages
off the public static website (they would otherwise stay public with nothing left to delete them: ``DELETE
.../previews`` acts on the served generation). The previous generation's results files stay where they are.
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
    logger.info("task %s: generation %s promoted (previous %r, %d preview blobs taken offline)", task_id, generation,
                previous, deleted)
    return {"promoted": key, "previews_deleted": deleted}


@bp.activity_trigger(input_name="payload", activity=c.PROMOTE)
@failures_without_secrets
def promote_generation(payload: c.PromoteInput) -> c.PromoteOutput:
    s = clients.settings()
    # a terminated run's: it would serve its generation over the run that replaced it
    refuse_if_superseded(clients.store(s), s, payload, "the promotion of its generation")
    return run_promote(payload["task_id"], payload["generation"], payload.get("previous"), s, clients.store(s))
