"""Enumerate a task's images and write its shard manifests to blob storage.

Why an activity: listing a container is I/O (forbidden in orchestrators), and the image list must never enter the
Durable history (plain tables, and 10M names would not fit): the manifests go to blob, the orchestrator gets counts.
Re-running it writes the same manifests (deterministic listing order and sampling), so a retried activity is harmless.
"""
from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df

from activities import context
from adapters.blobs import BlobStore
from core.ids import shard_id
from core.requests import TaskRequest
from core.settings import Settings
from core.shards import plan_shards, select_images
from gpu_batch.manifest import ShardManifest, manifest_blob_name, results_blob_name

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def enumeration_blob(task_id: str) -> str:
    return f"tasks/{task_id}/enumeration.json"


def run_enumerate(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore,
                  source: BlobStore | None = None) -> dict[str, Any]:
    """Write the shard manifests; ``source`` lists the images when they are in another account."""
    store.ensure_container(settings.container)
    names = (source or store).list_names(request.container, request.prefix)
    selected = select_images(names, request.first_n, request.sample_n, request.seed)
    images = 0
    shards = 0
    for index, chunk in enumerate(plan_shards(selected, request.images_per_shard)):
        sid = shard_id(index)
        manifest = ShardManifest(
            task_id=task_id, shard_id=sid, attempt=1, source_container=request.container, images=tuple(chunk),
            output_container=settings.container, output_blob=results_blob_name(task_id, sid, 1),
            model=request.model, detection_threshold=settings.detection_threshold,
            source_account_url=request.source_account_url, source_credential_secret=request.credential_secret,
        )
        store.write_json(settings.container, manifest_blob_name(task_id, sid, 1), manifest.to_dict())
        images += len(chunk)
        shards += 1
    summary = {"images": images, "shards": shards, "container": request.container, "prefix": request.prefix,
               "source_account_url": request.source_account_url, "credential_secret": request.credential_secret}
    store.write_json(settings.container, enumeration_blob(task_id), summary)
    store.write_json(settings.container, f"tasks/{task_id}/request.json", request.to_dict())
    logger.info("task %s: enumerated %d images into %d shards", task_id, images, shards)
    return {"images": images, "shards": shards}


@bp.activity_trigger(input_name="payload", activity="enumerate_images")
def enumerate_images(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    request = TaskRequest.from_dict(payload["request"])
    return run_enumerate(payload["task_id"], request, s, context.store(s),
                         context.source_store(s, request.source_account_url, request.credential_secret))
