"""The app settings a task's outputs follow, decided once when its run starts (``core.settings.DecidedSettings``).

Why: activities read the app settings at each call. An operator who changes one while a task runs (on Azure an app
setting change restarts the app, and the activities in flight run again under the new value) used to get one task
whose outputs follow two values: shards with two detection thresholds, CSV rows and counts at one preview threshold
and exports at another, events grouped at two intervals. Here the run's first enumeration activity decides them
(``decide``), before any shard manifest is written, into one blob per generation (``layout.decided_settings_blob``),
and every activity whose output depends on them overlays them on the environment's (``task_settings``): the
manifests, the pool submissions, the merge, the exports, and what works on the results later (a repeat removal, a
re-render's exports), so all of one generation's outputs follow the same values.

Orchestrations are unchanged: the blob is found from the task id (the generation's key) every activity already
takes, so no activity is added, removed or reordered and recorded histories replay as before. A generation
enumerated before this existed has no blob: its activities keep reading the environment, as they did.
"""
from __future__ import annotations

import json

from adapters.blobs import BlobStore
from core.settings import DecidedSettings, Settings
from gpu_batch import layout


def decide(task_id: str, model: str, settings: Settings, store: BlobStore) -> Settings:
    """Write the generation's decided settings from ``settings`` (the environment's now) unless it has them, and
    return ``settings`` with the ones that hold applied.

    The first writer wins (a create that fails when the blob exists): a retried enumeration activity, or one run
    again after an app restart, keeps what its first try decided, and so does a later run of the same generation (a
    failed task posted again without ``rerun``), which resumes from the results its attempts already wrote: its new
    shards must follow the values those did. ``"rerun": true`` starts a new generation, which decides afresh."""
    decided = DecidedSettings.decide(settings, model)
    data = json.dumps(decided.to_dict(), indent=1).encode("utf-8")
    if store.create_bytes(settings.container, layout.decided_settings_blob(task_id), data):
        return decided.apply(settings)
    return task_settings(settings, store, task_id)


def task_settings(settings: Settings, store: BlobStore, task_id: str) -> Settings:
    """``settings`` with the values the generation ``task_id`` decided when its run started; ``settings`` itself for a
    generation enumerated before decided settings existed (no blob: today's environment, as then)."""
    doc = store.read_json_or_none(settings.container, layout.decided_settings_blob(task_id))
    return settings if doc is None else DecidedSettings.from_dict(doc).apply(settings)
