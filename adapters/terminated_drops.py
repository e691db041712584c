"""The done files of a task's run terminated through ``POST /api/tasks/{id}/terminate``: beside the dropped request
that started it (its input's ``drop``) and beside each request dropped while it ran that joined it
(adapters.joined_drops), written by the API right after the terminate was accepted (api.starters ``terminate_task``).

Why: a terminated orchestration runs no step of its own again ("Terminating an orchestration instance has no effect
on any in-flight activity function executions or sub-orchestrations", Durable Functions ``TerminateAsync``,
learn.microsoft.com; dtfx completes it Terminated in ``TaskOrchestrationContext.HandleExecutionTerminatedEvent``), so
its end (orchestrations.task ``_tell``) never writes those files: whoever waited for ``<name>.done.json`` waited for
ever unless the request was posted again.

What is written: the status ``terminated_status`` makes (stage ``terminated``, the run, the reason, the hint to post
the same request again to resume), or, for a run terminated while it told of its end (its status in an ended stage:
``TELLING``), that end itself (``told_status``): it was the run's word, and a finished task is not resumed by a post
(api.starters ``_stage`` keeps showing it finished), so "terminated, post it again" would send people the wrong way.

What is never written over: a done file naming this run's end (``names_end``: its ``started`` is the run's, and its
stage is an ended one, not ``terminated``). The run may have written it before the terminate reached it, or write it
after (a ``drop_answer`` or ``answer_joined_drops`` call already queued or running runs on after a terminate, as the
quote says): each file is written only over a version that does not name that end, conditionally on the version read
(``BlobStore.update_json``: If-Match, or If-None-Match ``*`` where there was none), so the run's own late write lands
over ours and ours never lands over the run's.

How, so that a request joining the run at this moment is still answered (adapters.joined_drops: each side writes,
then reads the other's): the run's own drop is registered in its registry of joined drops, the run's ended marker is
written (unless it already names the run's end, whose status is then the one written), then the own drop's file (the
one the request that started the run waits for: first, where the answer's deadline cuts the rest short), and the
registry is listed and answered: ``joined_drops.answer_registered``, the second half of a run's own end. The own drop's registration
makes the run that resumes this one answer it too (its ``answer_joined_drops`` lists the registries of the runs it
ended, ``ended_runs``), with its final status over ``terminated``, however the request was posted again.

Nor over a later run's word (``later_run``: a done file of the task whose ``started`` is after this run's): a run
replaced before the terminate is answered 409 before this runs (api.starters ``_replaced_meanwhile``), but one that
resumes it right after (the request dropped again) may write its end while the 202 is still writing; a resuming run's
end written after these files writes over them. Nothing here holds a secret: the reason is cleaned at the edge
(``core.validate.parse_terminate``), the hint names the task, the run and its pool job. Blocking: off the event loop.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from adapters import joined_drops
from adapters.blobs import BlobStore
from core.terminated_status import later_run, names_end
from gpu_batch import layout

logger = logging.getLogger(__name__)


def answer_terminated_run(store: BlobStore, container: str, task_id: str, run: str, drop: str,
                          ended_runs: Sequence[str], status: dict[str, Any], started: str,
                          stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Write the done files of run ``run`` of the task (``""``: started before runs had ids, no registry) with
    ``status``, over none naming the run's end (the run started at ``started``). ``drop``: its own dropped request
    ("" for an HTTP post); ``ended_runs``: the runs it ended when it started (their requests were still unanswered);
    ``container``: the task-state container. Returns ``{"written": True, "stage", "done_file"?, "joined"}``: the stage
    written (the run's own end where its marker named it), the own drop's file, how many other drops were answered.
    ``stop``: asked before each joined drop's file (the caller's deadline: api.terminated_answers); once it says so,
    the others are left and ``{"written": False, "stage", "done_file"?, "joined", "cut": True}`` is returned. The own
    drop's file comes first, right after the marker: it is the one the request that started the run waits for."""
    def kept(found: Any) -> bool:  # the run's own end, or a later run's word
        return names_end(found, started) or later_run(found, task_id, started)

    own = {"done_file": f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob(drop, 'done')}"} if drop else {}
    if not run:  # no registry: the own drop's file alone
        if drop:
            store.update_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"),
                              lambda found: None if kept(found) else joined_drops.done_file(task_id, status))
        return {"written": True, "stage": status.get("stage"), **own, "joined": 0}
    if drop:  # registered as a joined drop: the resuming run's end answers it too (module docstring)
        store.write_json(container, layout.joined_drop_blob(task_id, run, drop), {"drop": drop})
    marker = store.update_json(container, layout.run_ended_blob(task_id, run),
                               lambda found: None if isinstance(found, dict) and names_end(found.get("status"), started)
                               else joined_drops.ended_marker(task_id, run, status))
    written = marker["status"] if isinstance(marker, dict) and isinstance(marker.get("status"), dict) else status
    if drop:
        store.update_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"),
                          lambda found: None if kept(found) else joined_drops.done_file(task_id, written))
    try:
        answered = joined_drops.answer_registered(store, container, task_id,
                                                  [run, *(r for r in ended_runs if r != run)], written, keep=kept,
                                                  stop=stop)
    except joined_drops.AnswersCut as cut:
        joined = len([d for d in cut.answered if d != drop])
        logger.warning("task %s: run %s terminated: done files cut short after %d joined drops", task_id, run, joined)
        return {"written": False, "stage": written.get("stage"), **own, "joined": joined, "cut": True}
    logger.info("task %s: run %s terminated: done files answered %s (own drop %s, %d in all)", task_id, run,
                written.get("stage"), drop or "none", len(answered))
    return {"written": True, "stage": written.get("stage"), **own, "joined": len([d for d in answered if d != drop])}
