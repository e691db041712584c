"""Deterministic identifiers.

The task id is a hash of the *normalized* request (the idea of a Luigi run id, seed 002): submitting the same request
twice addresses the same orchestration instance instead of starting a second job. Shard and pool-task ids derive from
it, so a resubmission after a crash is idempotent at every level. Shard ids, pool ids and blob names are
``gpu_batch.layout``'s; this module has the Durable instance ids.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Mapping

TASK_PREFIX = "task-"


def task_instance_id(normalized_request: Mapping[str, Any]) -> str:
    """``task-<20 hex>`` from the canonical JSON of a normalized request (key order and whitespace do not matter)."""
    canonical = json.dumps(normalized_request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return TASK_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def is_task_id(value: str) -> bool:
    body = value[len(TASK_PREFIX):]
    return value.startswith(TASK_PREFIX) and len(body) == 20 and all(c in "0123456789abcdef" for c in body)



def repeats_instance_id(task_id: str) -> str:
    """Instance id of a task's repeated-detection removal (one at a time per task; a new request replaces the last)."""
    return f"{task_id}-repeats"


def repeat_search_instance_id(task_id: str) -> str:
    """Instance id of a task's repeated-detection search run again (one at a time per task; a new one replaces the
    last)."""
    return f"{task_id}-repeat-search"


def repeat_search_id(started: datetime, random_hex: str) -> str:
    """The id of a repeats list made by a search run again: ``s<UTC time>-<random>``, readable and never reused (the
    time alone could repeat within a second). The merge's own list is ``core.repeats.ORIGINAL_SEARCH``."""
    return f"s{started.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{random_hex}"


def shards_instance_id(task_id: str, group: int, run: str = "") -> str:
    """Instance id of the sub-orchestration that drives shard group ``group`` of a task; a re-run's groups carry its
    ``run`` (``gpu_batch.layout.run_id``), so they never reuse the ids of the finished groups of an earlier run (a
    sub-orchestration started under the id of a completed instance was never started by devhost, and the task waited
    for it forever). Either way the ids start with ``<task>-shards-``, which the status API lists."""
    return f"{task_id}-shards-{run + '-' if run else ''}{group:04d}"


def rerender_instance_id(task_id: str) -> str:
    """Instance id of a task's preview re-render at another threshold (one at a time per task)."""
    return f"{task_id}-previews"


def expiry_instance_id(task_id: str) -> str:
    """Instance id of the durable timer that takes a task's preview pages off the website (``previews_expire_days``):
    an orchestration of its own, so the task itself completes when its work does."""
    return f"{task_id}-expiry"


def results_zip_instance_id(task_id: str) -> str:
    """Instance id of the build of a task's results zip (one at a time per task)."""
    return f"{task_id}-zip"


def results_zip_sweep_instance_id(zip_instance_id: str, ended: datetime) -> str:
    """Instance id of the sweep a results zip build starts at its end (``orchestrations.results_zip``): one per build,
    named by the build's instance and the time it ended on its orchestration's clock (the same at every replay), so a
    retried call finds its sweep started and a later build of the task starts one of its own."""
    return f"{zip_instance_id}-sweep-{ended.strftime('%Y%m%dT%H%M%S%f')}"


def replaced_sweep_instance_id(task_id: str, label: str, promoted: datetime) -> str:
    """Instance id of the sweep that deletes a replaced generation of a task (``orchestrations.replaced_sweep``;
    ``label``: ``core.replaced.sweep_label``), named by the promotion's time on the task's orchestration clock (the
    same at every replay): a retried call finds its sweep started, and a run that promotes again (a re-run resumed
    after it failed past its promotion) starts one of its own. Never ``is_task_id``: the task list leaves it out."""
    return f"{task_id}-replaced-{label}-{promoted.strftime('%Y%m%dT%H%M%S%f')}"
