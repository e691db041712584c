"""Submit, poll and cancel shard tasks on the GPU pool; write resubmission manifests.

Why these are activities: the pool is I/O. They take and return only ids and counts (never image lists, credentials or
SAS tokens), so the Durable history stays small and secret-free. A shard attempt is done when its pool task completed
AND its results cover every image of its manifest; ``poll_shards`` reports that coverage so the orchestrator can
decide, deterministically, what to resubmit. ``resubmit_shard`` recomputes the missing images from storage (the source
of truth) and submits only those as the next attempt.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any

import azure.durable_functions as df

from activities import context
from activities.merge import shard_attempt_results
from adapters.blobs import BlobStore
from core.ids import pool_job_id, pool_task_id
from core.settings import Settings
from core.shards import missing_images
from gpu_batch.manifest import ShardManifest, manifest_blob_name, results_blob_name
from gpu_batch.pool import GpuPool, ShardTask, TaskState

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def cancel_marker(task_id: str) -> str:
    return f"tasks/{task_id}/cancel-requested.json"


@functools.cache
def _pool(kind: str, connection: str, container: str, concurrency: int, device: str, model_cache: str,
          faults: tuple[tuple[str, str], ...], batch: tuple[str, ...], max_task_seconds: int,
          secret_env: tuple[tuple[str, str], ...] = ()) -> GpuPool:
    from gpu_batch.pool import make_pool

    if kind == "local":
        worker_env = {"TRAPBATCH_STORAGE_CONNECTION": connection, "TRAPBATCH_DEVICE": device, **dict(secret_env)}
        if model_cache:
            worker_env["TRAPBATCH_MODEL_CACHE"] = model_cache
        return make_pool("local", connection_string=connection, log_container=container,
                         max_concurrent=concurrency or None, worker_env=worker_env, faults=dict(faults),
                         max_task_seconds=max_task_seconds)
    account_url, pool_id, image, identity, storage_url = batch
    return make_pool("azure_batch", account_url=account_url, pool_id=pool_id, image=image,
                     worker_identity_client_id=identity, storage_account_url=storage_url,
                     max_task_seconds=max_task_seconds, key_vault_url=dict(secret_env).get("TRAPBATCH_KEY_VAULT_URL", ""))


def pool_for(settings: Settings) -> GpuPool:
    return _pool(settings.pool, settings.storage_connection, settings.container, settings.local_concurrency,
                 settings.device, settings.model_cache, tuple(sorted(settings.worker_faults.items())),
                 (settings.batch_account_url, settings.batch_pool_id, settings.worker_image,
                  settings.worker_identity, settings.storage_account_url),
                 settings.knobs.max_task_seconds, tuple(sorted(settings.secret_store_env().items())))


def _shard_task(settings: Settings, task_id: str, sid: str, attempt: int) -> ShardTask:
    return ShardTask(task_id=pool_task_id(sid, attempt), manifest_container=settings.container,
                     manifest_blob=manifest_blob_name(task_id, sid, attempt), shard_id=sid, attempt=attempt)


def run_submit(task_id: str, shards: list[list[Any]], settings: Settings, pool: GpuPool) -> dict[str, Any]:
    job = pool_job_id(task_id)
    pool.ensure_job(job)
    tasks = [_shard_task(settings, task_id, str(sid), int(attempt)) for sid, attempt in shards]
    pool.submit(job, tasks)
    logger.info("task %s: submitted %d shard attempts", task_id, len(tasks))
    return {"submitted": len(tasks)}


def shard_coverage(store: BlobStore, settings: Settings, task_id: str, sid: str) -> dict[str, int]:
    """How many of the shard's images have a result entry (from any attempt), and how many of those are failures."""
    manifest = store.read_json(settings.container, manifest_blob_name(task_id, sid, 1))
    entries: dict[str, bool] = {}
    for attempt_entries in shard_attempt_results(store, settings, task_id, sid):
        for e in attempt_entries:
            name = e.get("file")
            if isinstance(name, str):
                entries[name] = entries.get(name, True) and e.get("failure") is not None
    images = manifest["images"]
    covered = sum(1 for n in images if n in entries)
    failed = sum(1 for n in images if entries.get(n))
    return {"images": len(images), "covered": covered, "failed": failed, "missing": len(images) - covered}


PROGRESS_READ_LIMIT = 4 * 1024 * 1024  # partial results larger than this are not read just to show progress


def partial_count(store: BlobStore, settings: Settings, task_id: str, sid: str, attempt: int) -> int:
    """Images a running attempt has flushed so far (the worker rewrites its results every few seconds)."""
    from azure.core.exceptions import ResourceNotFoundError

    client = store.service.get_blob_client(settings.container, results_blob_name(task_id, sid, attempt))
    try:
        if client.get_blob_properties().size > PROGRESS_READ_LIMIT:
            return 0
        doc = json.loads(client.download_blob().readall())
    except (ResourceNotFoundError, ValueError):
        return 0
    images = doc.get("images") if isinstance(doc, dict) else None
    return len(images) if isinstance(images, list) else 0


def run_poll(task_id: str, task_ids: list[str], settings: Settings, store: BlobStore, pool: GpuPool) -> dict[str, Any]:
    cancelled = store.exists(settings.container, cancel_marker(task_id))
    infos = pool.poll(pool_job_id(task_id), task_ids)
    completed: list[dict[str, Any]] = []
    running = queued = in_progress = 0
    for info in infos:
        if info.state == TaskState.completed:
            sid, _, attempt = info.task_id.rpartition("-a")
            row = {"task_id": info.task_id, "shard_id": sid, "attempt": int(attempt),
                   "result": info.result.value if info.result else None, "exit_code": info.exit_code,
                   "failure_message": info.failure_message}
            row.update(shard_coverage(store, settings, task_id, sid))
            completed.append(row)
        elif info.state == TaskState.running:
            running += 1
            sid, _, attempt = info.task_id.rpartition("-a")
            in_progress += partial_count(store, settings, task_id, sid, int(attempt))
        else:
            queued += 1
    return {"cancelled": cancelled, "completed": completed, "running": running, "queued": queued,
            "images_in_progress": in_progress}


def run_resubmit(task_id: str, sid: str, attempt: int, settings: Settings, store: BlobStore,
                 pool: GpuPool) -> dict[str, Any]:
    first = ShardManifest.from_dict(store.read_json(settings.container, manifest_blob_name(task_id, sid, 1)))
    done = [e["file"] for entries in shard_attempt_results(store, settings, task_id, sid) for e in entries
            if isinstance(e.get("file"), str)]
    missing = missing_images(first.images, done)
    if not missing:
        return {"missing": 0, "submitted": False}
    manifest = ShardManifest(
        task_id=task_id, shard_id=sid, attempt=attempt, source_container=first.source_container,
        images=tuple(missing), output_container=first.output_container,
        output_blob=results_blob_name(task_id, sid, attempt), model=first.model,
        detection_threshold=first.detection_threshold, source_account_url=first.source_account_url,
        source_credential_secret=first.source_credential_secret,
    )
    store.write_json(settings.container, manifest_blob_name(task_id, sid, attempt), manifest.to_dict())
    run_submit(task_id, [[sid, attempt]], settings, pool)
    logger.info("task %s shard %s: resubmitted %d missing images as attempt %d", task_id, sid, len(missing), attempt)
    return {"missing": len(missing), "submitted": True}


@bp.activity_trigger(input_name="payload", activity="submit_shards")
def submit_shards(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    return run_submit(payload["task_id"], payload["shards"], s, pool_for(s))


@bp.activity_trigger(input_name="payload", activity="poll_shards")
def poll_shards(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    return run_poll(payload["task_id"], payload["task_ids"], s, context.store(s), pool_for(s))


@bp.activity_trigger(input_name="payload", activity="resubmit_shard")
def resubmit_shard(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    return run_resubmit(payload["task_id"], payload["shard_id"], int(payload["attempt"]), s, context.store(s),
                        pool_for(s))


@bp.activity_trigger(input_name="payload", activity="cancel_pool_tasks")
def cancel_pool_tasks(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    pool = pool_for(s)
    job = pool_job_id(payload["task_id"])
    for tid in payload.get("task_ids") or [None]:
        pool.cancel(job, tid)
    return {"cancelled": True}
