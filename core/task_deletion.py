"""What deleting a task (``DELETE /api/tasks/{id}``, ``trapbatch delete``) removes, in which order, and what it must
refuse: the pure part, with no storage or task hub calls (``adapters.task_deletion`` deletes the blobs,
``api.task_delete`` reads the task hub and answers).

Why a task can be deleted: camera traps photograph people (privacy requests), projects end, and at millions of
images a task's results, exports, zips and per-shard working state are large. What goes:

* the state container's ``tasks/<task>/`` (manifests, shard results, listing parts, cancel markers, pool logs: every
  name of ``gpu_batch.layout`` below ``task_prefix``) and ``results/<task>/`` (every generation's results, READMEs,
  exports, zips, ``current.json``, the record of the preview folder);
* the static website's ``<task>-*`` folders: every generation's preview folder is ``<task>-<random>`` or
  ``<task>-runs-<run>-<random>`` (``layout.preview_folder_name``), so one prefix finds them without the records;
* the task hub's instances whose ids start with the task id (``core.ids``: the task, its shard groups
  ``<task>-shards-*``, ``<task>-expiry``, ``<task>-zip`` and its sweeps ``<task>-zip-sweep-*``, ``<task>-repeats``,
  ``<task>-repeat-search``, ``<task>-previews``, the sweeps of replaced generations
  ``<task>-replaced-*``). A task id has a fixed length (``core.ids.is_task_id``), so no other
  task's id starts with it.

What stays: the user's images and the request files they dropped in ``incoming`` (and trapbatch's answers beside
them, which are the user's record of what they asked), the pool's completed Batch jobs (README, "Deleting a
task"), and the deletion's own mark (``tombstone_blob``).

The order makes a deletion cut short anywhere (a timeout, a storage error) finished by sending it again: blobs first,
then the helper instances' histories, the task's own instance last. While the task's instance exists the task is
known (its owner is read from its input, ``api.starters.authorize_task``) and the same request posted again finds it
instead of starting a fresh task over half-deleted state; once it is gone everything else is gone too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from core.ids import (expiry_instance_id, repeat_search_instance_id, repeats_instance_id, rerender_instance_id,
                      results_zip_instance_id)
from gpu_batch import layout

ACTIVE = frozenset({"Running", "Pending", "ContinuedAsNew"})  # the runtime statuses of an instance that still runs
# The runs after a task, by the ``target`` of ``POST /api/tasks/{id}/terminate`` that ends one (api.repeat_runs)
_AFTER_TASK = {"removal": repeats_instance_id, "search": repeat_search_instance_id, "previews": rerender_instance_id,
               "zip": results_zip_instance_id}
# Each target's run in the refusal's words (the terminate route's "target" names it for the request)
_AFTER_TASK_WORDS = {"removal": "repeat removal", "search": "repeat search", "previews": "preview re-render",
                     "zip": "results zip build"}


# The deletion's mark, ``deleted/<task>.json`` in the state container, outside the task's prefixes so that it stays:
# a preview render of the task running while the task is deleted (a terminated run's or re-render's activity runs on,
# Durable fidelity row 49 in devhost/README.md) may write its page and thumbnails after the deletion listed the
# website; it reads this mark after its last write (``adapters.preview_folders.withdrawn``) and deletes what it wrote,
# as it does for pages taken off by ``DELETE .../previews``. The mark says when the deletion began and, once the
# task's blobs are all gone, when that was: a render that began before then is one of the deleted task's (one that
# begins later finds its preview sample gone and writes nothing), while the fresh task of the same request renders
# only after the task's instance is purged, which follows, and after its own listing and detection.
TOMBSTONE_PREFIX = "deleted/"
# How much later than the deletion's end a render may have begun and still count as before it: the app's instances'
# clocks differ by far less, and a fresh task cannot even start until the deletion's purge, after that end.
CLOCK_MARGIN_S = 10.0


def tombstone_blob(task_or_key: str) -> str:
    """The deletion mark of the task of ``task_or_key`` (a task id, or a generation key ``<task>/runs/<run>``)."""
    return f"{TOMBSTONE_PREFIX}{task_or_key.split('/', 1)[0]}.json"


def tombstone(task_id: str, began_s: float, done_s: float | None = None) -> dict[str, object]:
    """The mark's content: the task, when this request of its deletion began and (once no blob of it is left) when
    that was, in seconds since the epoch."""
    mark: dict[str, object] = {"task": task_id, "deleted_at_s": began_s}
    if done_s is not None:
        mark["done_at_s"] = done_s
    return mark


def deleted_since(mark: object, started_s: float) -> bool:
    """Whether a render that began at ``started_s`` belongs to a task deleted since (``mark``; None: no deletion):
    it began before the deletion was done (within ``CLOCK_MARGIN_S``), or the deletion is still under way."""
    if not isinstance(mark, dict):
        return False
    if mark.get("done_at_s") is None:
        return True
    try:
        return started_s < float(mark["done_at_s"]) + CLOCK_MARGIN_S
    except (TypeError, ValueError):
        return True  # a mark that cannot be read still says the task was deleted


def run_started_s(run: str) -> float | None:
    """When run ``run`` (``gpu_batch.layout.run_id``: ``r<UTC yymmddHHMMSS><hex>``) started, in seconds since the
    epoch, to the second; None for anything else (a job of a release before runs had ids)."""
    if len(run) < 14 or not run.startswith("r") or not run[1:13].isdigit():
        return None
    try:
        return datetime.strptime(run[1:13], "%y%m%d%H%M%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def deleted_run(mark: object, job: str) -> bool:
    """Whether pool job ``job`` (``<task>_<run>``, or the task id alone before runs had ids) is a run of a task the
    deletion ``mark`` deleted (None: no deletion): a run started before the deletion began. Why: a terminated run's
    queued activities run on after its orchestration ended (``activities.superseded``), and their writes after the
    deletion would be left of a deleted task; its superseding marker went with the task's blobs. A run started later
    is a fresh task's (which starts only after the purge) or one resumed while the deletion ran, which refused it."""
    if not isinstance(mark, dict):
        return False
    started = run_started_s(job.split("_", 1)[1] if "_" in job else "")
    if started is None:
        return True  # a run without an id: from before runs had them, so the deleted task's
    try:  # to the second, as run ids are: a fresh run in the deletion's own second (a devhost) is not refused
        return started < float(int(float(mark["deleted_at_s"])))
    except (KeyError, TypeError, ValueError):
        return True


def state_prefixes(task_id: str) -> tuple[str, str]:
    """The task's prefixes in the state container: its working state, then its results (every generation)."""
    return layout.task_prefix(task_id), layout.results_prefix(task_id)


def web_prefix(task_id: str) -> str:
    """The prefix of every preview folder of the task in the static website (all generations)."""
    return layout.download_label(task_id) + "-"


def belongs_to(task_id: str, instance_id: str) -> bool:
    """Whether ``instance_id`` is the task's own instance or one of its helpers (``<task>-...``)."""
    return instance_id == task_id or instance_id.startswith(task_id + "-")


def is_timer(task_id: str, instance_id: str) -> bool:
    """Whether the instance is one of the task's helpers that only wait on durable timers for days and then tidy up:
    the preview expiry (``orchestrations.expiry``), a zip build's sweep (``orchestrations.zip_sweep``) and a replaced
    generation's sweep (``orchestrations.replaced_sweep``, which waits ``TRAPBATCH_KEEP_REPLACED_DAYS``). Deleting the
    task ends them (terminate, then purge): what they would delete is deleted now. Any other running instance refuses
    the deletion."""
    return (instance_id == expiry_instance_id(task_id)
            or instance_id.startswith(results_zip_instance_id(task_id) + "-sweep-")
            or instance_id.startswith(f"{task_id}-replaced-"))


@dataclass(frozen=True, slots=True)
class Plan:
    """What the task hub's instances of one task mean for its deletion.

    ``refusals``: (instance id, what to do) of each instance that still works; the deletion waits for them.
    ``to_end``: timer helpers still waiting, to terminate before their purge. ``to_purge``: every instance, the
    helpers first (sorted), the task's own last."""

    refusals: tuple[tuple[str, str], ...] = ()
    to_end: tuple[str, ...] = ()
    to_purge: tuple[str, ...] = field(default_factory=tuple)


def _refusal(task_id: str, instance_id: str) -> str:
    """What the operator does about a running instance of the task before deleting it."""
    if instance_id == task_id:
        return (f"the task is running: cancel it (POST /api/tasks/{task_id}/cancel) or end it now "
                f"(POST /api/tasks/{task_id}/terminate), then delete it")
    for target, instance in _AFTER_TASK.items():
        if instance_id == instance(task_id):
            return (f"its {_AFTER_TASK_WORDS[target]} is running: wait for it to end, or end it (POST "
                    f'/api/tasks/{task_id}/terminate {{"target": "{target}"}}), then delete it')
    if instance_id.startswith(f"{task_id}-shards-"):
        return ("a shard group of a terminated (or failed) run still drives pool work: post the same request again "
                f"(the new run ends that work), cancel that run (POST /api/tasks/{task_id}/cancel), then delete the "
                "task")
    return "an orchestration of the task is still running: wait for it to end, then delete the task"


def plan(task_id: str, instances: Iterable[tuple[str, str | None]]) -> Plan:
    """The deletion's plan from the task hub's instances ``(id, runtime status)`` whose ids start with the task id
    (others are ignored)."""
    refusals: list[tuple[str, str]] = []
    to_end: list[str] = []
    ids: list[str] = []
    for instance_id, runtime in instances:
        if not belongs_to(task_id, instance_id):
            continue
        ids.append(instance_id)
        if runtime not in ACTIVE:
            continue
        if is_timer(task_id, instance_id):
            to_end.append(instance_id)
        else:
            refusals.append((instance_id, _refusal(task_id, instance_id)))
    refusals.sort(key=lambda r: (r[0] != task_id, r[0]))  # the task's own first: ending it is the first step
    helpers = sorted(i for i in set(ids) if i != task_id)
    return Plan(refusals=tuple(refusals), to_end=tuple(sorted(to_end)),
                to_purge=tuple(helpers + ([task_id] if task_id in ids else [])))


def refusal_text(task_id: str, refusals: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """The 409's error and hint for ``Plan.refusals`` (not empty): the first thing to do, and how many others run."""
    first_id, first_hint = refusals[0]
    names = ", ".join(i for i, _ in refusals[:5]) + (f" and {len(refusals) - 5} more" if len(refusals) > 5 else "")
    error = f"task {task_id} cannot be deleted while its orchestrations run ({names})"
    more = ("" if len(refusals) == 1 else f"; {len(refusals) - 1} other orchestration(s) of the task run too: "
            f"DELETE /api/tasks/{task_id} again says what is left")
    return error, first_hint + more
