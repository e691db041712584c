"""Enumerate a task's images and write its shard manifests to blob storage.

Why an activity: listing a container is I/O (forbidden in orchestrators), and the image list must never enter the
Durable history (plain tables, and 10M names would not fit): the manifests go to blob, the orchestrator gets counts.
Re-running it writes the same manifests (deterministic listing order and sampling), so a retried activity is harmless.
"""
from __future__ import annotations

import logging
import azure.durable_functions as df

from adapters import clients
from adapters.blobs import BlobStore
from core import contracts as c
from core.requests import TaskRequest
from core.settings import Settings
from core.shards import plan_shards, select_images
from gpu_batch import layout
from gpu_batch.manifest import ShardManifest

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def run_enumerate(task_id: str, request: TaskRequest, settings: Settings, store: BlobStore,
                  source: BlobStore | None = None) -> c.EnumerateOutput:
    """Write the shard manifests; ``source`` lists the images when they are in another account."""
    store.ensure_container(settings.container)
    names = (source or store).list_names(request.container, request.prefix)
    selected = select_images(names, request.first_n, request.sample_n, request.seed)
    images = 0
    shards = 0
    for index, chunk in enumerate(plan_shards(selected, request.images_per_shard)):
        sid = layout.shard_id(index)
        manifest = ShardManifest(
            task_id=task_id, shard_id=sid, attempt=1, source_container=request.container, images=tuple(chunk),
            output_container=settings.container, output_blob=layout.attempt_results_blob(task_id, sid, 1),
            model=request.model, detection_threshold=settings.detection_threshold,
            source_account_url=request.source_account_url, source_credential_secret=request.credential_secret,
        )
        store.write_json(settings.container, layout.manifest_blob(task_id, sid, 1), manifest.to_dict())
        images += len(chunk)
        shards += 1
    summary = {"images": images, "shards": shards, "container": request.container, "prefix": request.prefix,
               "source_account_url": request.source_account_url, "credential_secret": request.credential_secret}
    store.write_json(settings.container, layout.enumeration_blob(task_id), summary)
    store.write_json(settings.container, layout.request_blob(task_id), request.to_dict())
    logger.info("task %s: enumerated %d images into %d shards", task_id, images, shards)
    return {"images": images, "shards": shards}


@bp.activity_trigger(input_name="payload", activity=c.ENUMERATE)
def enumerate_images(payload: c.EnumerateInput) -> c.EnumerateOutput:
    s = clients.settings()
    request = TaskRequest.from_dict(payload["request"])
    return run_enumerate(payload["task_id"], request, s, clients.store(s),
                         clients.source_store(s, request.source_account_url, request.credential_secret))
