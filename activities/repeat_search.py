"""The activities of a repeated-detection search run again over a finished task (``orchestrations.repeat_search``).

Why: the merge searched with MegaDetector's default phase-1 options and then deleted its work blobs; a person who
wants another occurrence threshold, IoU threshold, size limit or confidence range needs the eligible detections
again, and which detections are eligible depends on those options. So the search is redone from the shard results,
in the fan-in's shape and with its code (``activities.fanin``), bounded per activity whatever the task size:

* ``run_search_part``: shards ``first_shard .. +shards`` merged exactly as the fan-in's parts merge them
  (``activities.merge._merged_shard``: each manifest image once, later attempts filling gaps), each entry's eligible
  detections under the new options written per folder (``activities.fanin.write_folders``) in the work folder
  ``payload["work"]``. It writes no results, CSV or sample: those do not depend on the options.
* ``run_plan_search``: the folder groups from the parts' indexes (``activities.fanin.plan_groups``), leaving out
  the folders over the options' ``max_folder_detections``, which the new list names.

Then the fan-in's own ``search_repeats`` (per group) and ``rank_repeats`` run with the options and the work folder in
their input; ``rank_repeats`` replaces the task's repeats document. Must not: change any result file.
"""
from __future__ import annotations

import logging

import azure.durable_functions as df

from activities.fanin import plan_groups, write_folders
from activities.merge import _merged_shard
from adapters import clients
from adapters.blobs import BlobStore
from core import contracts as c
from core.failures import failures_without_secrets
from core.settings import Settings
from gpu_batch.formats.eligible import FolderRows, RepeatOptions, eligible_detections

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def run_search_part(payload: c.SearchPartInput, settings: Settings, store: BlobStore) -> c.SearchPartOutput:
    task_id, part, work = payload["task_id"], payload["part"], payload["work"]
    options = RepeatOptions.from_dict(payload["options"])
    folders = FolderRows()
    considered = 0
    for index in range(payload["first_shard"], payload["first_shard"] + payload["shards"]):
        entries, _ = _merged_shard(store, settings, task_id, index, None)
        for entry in entries:
            eligible = eligible_detections(entry, options)
            if eligible:
                considered += len(eligible)
                folders.add(eligible)
    write_folders(store, settings.container, task_id, part, folders, work)
    logger.info("task %s: repeat search part %d: %d eligible detections in %d folders", task_id, part, considered,
                len(folders))
    return {"part": part, "detections_considered": considered}


def run_plan_search(payload: c.PlanSearchInput, settings: Settings, store: BlobStore) -> c.PlanSearchOutput:
    groups = plan_groups(store, settings.container, payload["task_id"], payload["parts"],
                         payload["detections_per_group"], payload["work"],
                         payload.get("max_folder_detections", settings.knobs.repeat_max_folder_detections))
    return {"groups": groups}


@bp.activity_trigger(input_name="payload", activity=c.SEARCH_PART)
@failures_without_secrets
def repeat_search_part(payload: c.SearchPartInput) -> c.SearchPartOutput:
    s = clients.settings()
    return run_search_part(payload, s, clients.store(s))


@bp.activity_trigger(input_name="payload", activity=c.PLAN_SEARCH)
@failures_without_secrets
def plan_repeat_search(payload: c.PlanSearchInput) -> c.PlanSearchOutput:
    s = clients.settings()
    return run_plan_search(payload, s, clients.store(s))
