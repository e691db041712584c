"""What the done files of a run terminated through ``POST /api/tasks/{id}/terminate`` say, and which done files they
must not be written over: the pure part of ``adapters.terminated_drops`` (which says why and how they are written),
apart so that the API's async answer (``api.terminated_answers``) makes the status on the event loop without calling
into a storage adapter.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from core.contracts import FINISHED, Stage

# the stages a run's final status has: a run with one of them was telling of its end (orchestrations.task ``_tell``)
TELLING = (*FINISHED, Stage.cancelled, Stage.failed, Stage.expired, Stage.estimated)
# what the run adds to its final status after its done files (api.starters TOLD_AFTER_THE_DONE_FILE), and what a
# status read adds that the run's status never held (api.starters ``_describe``): in no done file
NOT_IN_A_DONE_FILE = ("task_id", "drop_answer", "joined_drops", "notification", "task_event", "id", "runtime_status",
                      "progress", "updated", "stalled")


def told_status(last: Mapping[str, Any]) -> dict[str, Any]:
    """The end a run telling of it had (its last status, ``stage`` in ``TELLING``), as its done file holds it."""
    return {k: v for k, v in last.items() if k not in NOT_IN_A_DONE_FILE}


def terminated_status(last: Mapping[str, Any], run: str, reason: str, hint: str, at: str) -> dict[str, Any]:
    """The status a done file of a run terminated before its end holds. ``last``: the run's last status (its stage
    then, its ``started``, which ``names_end`` compares); ``at``: when (ISO 8601)."""
    status: dict[str, Any] = {"stage": Stage.terminated.value, "run": run,
                              "terminated_in": str(last.get("stage") or Stage.starting.value), "reason": reason,
                              "terminated_at": at, "hint": hint}
    for key in ("started", "generation"):
        if last.get(key):
            status[key] = last[key]
    return status


def names_end(doc: Any, started: str) -> bool:
    """Whether ``doc`` (a done file, or an ended marker's status) tells of the end of the run that started at
    ``started``: the run's final status carries its ``started`` (orchestrations.task), a later or earlier run's
    another one; a ``terminated`` one (this module's) is no end the run told."""
    return (bool(started) and isinstance(doc, dict) and doc.get("started") == started
            and doc.get("stage") in TELLING)


def later_run(doc: Any, task_id: str, started: str) -> bool:
    """Whether ``doc`` (a done file) is of a run of task ``task_id`` started after the run that started at
    ``started``: a run that replaced it (a resume or a re-run, which the platform starts only once this run is
    terminated, so after the requests it answers had joined this one), whose end, or ``terminated``, is the newer word.
    Why: the 202 writes one file after another, and a later run started at once and ended fast may have written
    beside the same requests first (its end answers this run's registry too: ``ended_runs``). A file of another task
    is not judged here: a run's own end writes over it too (adapters.joined_drops ``end_run``)."""
    if not started or not isinstance(doc, dict) or doc.get("id") != task_id:
        return False
    try:
        return datetime.fromisoformat(str(doc.get("started") or "")) > datetime.fromisoformat(started)
    except (ValueError, TypeError):  # no ``started`` (a file of before), not a time, or one naive: none told
        return False
