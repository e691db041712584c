"""Done files for the requests that join a running task: a request dropped into ``incoming`` whose task another
request (another drop, or an HTTP post) had started and that still runs gets its own ``<name>.done.json`` when that run
ends, the same file the run writes beside the drop that started it (``{"id": task_id, **status}``: activities.notify
``write_drop_answer``).

Why: the run knows only its own drop (its input's ``drop``); a request that found its task running was told to watch
another request's done file, or that none would come (started over HTTP), though the README promises one beside each
dropped request.

How, with no lock and no joined drop missed: each side writes, then reads what the other writes.

* The joining starter (``join``) first registers the drop under the run it found running
  (``layout.joined_drop_blob``), then reads the run's ended marker (``layout.run_ended_blob``); if it is there, the
  run has ended (or is ending) and the starter writes the done file itself, from the marker's status.
* The run's end (``end_run``, activity ``answer_joined_drops`` in ``orchestrations.task._tell``) first writes the
  ended marker with its final status, then lists the registry and writes each registered drop's done file.

A drop that joins while the run ends: either its registration came before the run's listing (the run writes its
file), or the listing came before it, and so did the marker, which the starter then reads (it writes the file). Both
may write it: the same content, so it does not matter which write lands last. Storage gives the order needed: a blob
whose write was answered is seen by every later read and listing ("Azure Storage was designed to embrace a strong
consistency model that guarantees that after the service performs an insert or update operation, subsequent read or
list operations return the latest update": "Manage concurrency in Blob Storage", learn.microsoft.com,
azure/storage/blobs/concurrency-manage).

Per run (the registry and the marker are under the run's id): a later run of the task, a resume or a ``"rerun"``,
answers only the drops that joined it, and a drop that joined an earlier run keeps that run's end; the ended marker of
a run never tells a drop joining a later run that the task ended. A run terminated before its end writes no marker
itself: the terminate through the app's API writes it, with a ``terminated`` status, and answers the joined drops
(adapters.terminated_drops, through ``answer_registered`` with the same order); the run that resumes its work (a post
of the same request, which ends the terminated run first: its input's ``ends_run``) answers them at its own end, over
that status.

Blocking (storage calls): call it off the event loop. Nothing here holds a secret: drop names and statuses only.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from adapters.blobs import BlobStore
from gpu_batch import layout

logger = logging.getLogger(__name__)


def done_file(task_id: str, status: dict[str, Any]) -> dict[str, Any]:
    """What a done file holds: the task's id and its final status, as the run writes beside its own drop."""
    return {"id": task_id, **status}


def ended_status(store: BlobStore, container: str, task_id: str, run: str) -> dict[str, Any] | None:
    """The final status run ``run`` of the task wrote in its ended marker, or None: it has not ended (yet)."""
    marker = store.read_json_or_none(container, layout.run_ended_blob(task_id, run))
    status = marker.get("status") if isinstance(marker, dict) else None
    return status if isinstance(status, dict) else None


def join(store: BlobStore, container: str, task_id: str, run: str, drop: str) -> dict[str, Any] | None:
    """Register ``drop`` (``incoming/<drop>``) as joining run ``run`` of the task, THEN read the run's ended marker:
    where the run has ended, write the drop's done file now and return the status written; None: the run's end
    writes it. ``container``: the task-state container (``Settings.container``). The order is what makes the race
    with ``end_run`` safe (the module's docstring)."""
    store.write_json(container, layout.joined_drop_blob(task_id, run, drop), {"drop": drop})
    status = ended_status(store, container, task_id, run)
    if status is None:
        return None
    store.write_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"), done_file(task_id, status))
    logger.info("task %s: run %s had ended: wrote the done file of joined drop %s", task_id, run, drop)
    return status


def end_run(store: BlobStore, container: str, task_id: str, run: str, status: dict[str, Any],
            ended_runs: Sequence[str] = ()) -> list[str]:
    """Write run ``run``'s ended marker with its final ``status``, THEN write the done file of every drop registered
    as joining it, and of every drop registered as joining one of ``ended_runs``: the runs this run ended when it
    started (terminated, or failed by the platform, and resumed by this one), which wrote no done file, or one that
    says ``terminated`` (adapters.terminated_drops: written by the terminate, it is overwritten here with this run's
    end). Returns the drops answered. Idempotent: a retried call writes the same files. A registry entry that is not
    one ``join`` wrote (no drop name in it, or a name that is no drop request) is passed over.

    Why no marker for an ended run: no request joins it any more (the starter finds it ended, or this run running,
    which it joins instead), so its registry no longer grows; a request that had joined it was told its end would be
    written beside it, and the run that resumed the work is the one whose end that is."""
    store.write_json(container, layout.run_ended_blob(task_id, run), ended_marker(task_id, run, status))
    return answer_registered(store, container, task_id, [run, *(r for r in ended_runs if r != run)], status)


def ended_marker(task_id: str, run: str, status: dict[str, Any]) -> dict[str, Any]:
    """What run ``run``'s ended marker holds (``ended_status`` reads its ``status``)."""
    return {"task_id": task_id, "run": run, "status": status}


class AnswersCut(Exception):
    """``answer_registered`` stopped as its ``stop`` said, ``answered`` (the drops written so far) written, the others
    not."""

    def __init__(self, answered: list[str]) -> None:
        super().__init__(f"stopped after {len(answered)} done files")
        self.answered = answered


def answer_registered(store: BlobStore, container: str, task_id: str, runs: Sequence[str], status: dict[str, Any],
                      keep: Callable[[Any], bool] | None = None,
                      stop: Callable[[], bool] | None = None) -> list[str]:
    """Write the done file of every drop registered as joining one of ``runs`` (their registries, in that order),
    each drop once, with ``status``; the second half of ``end_run``, whose marker must be written first. Returns the
    drops answered (a file ``keep`` kept included). ``keep``: None writes each file (a run's end); else each file is
    written only over a version ``keep`` does not accept (None: no file), conditionally on the version read
    (``BlobStore.update_json``), so a file another writer puts there meanwhile is judged again, not lost. ``stop``:
    asked before each file; True raises ``AnswersCut`` (a caller with a deadline: adapters.terminated_drops)."""
    answered: list[str] = []
    for one in runs:
        try:
            prefix = layout.joined_drops_prefix(task_id, one)
        except ValueError:  # not a run id: a run started before runs had ids registered no joined drop
            continue
        for entry in store.list_names(container, prefix):
            doc = store.read_json_or_none(container, entry)
            drop = doc.get("drop") if isinstance(doc, dict) else None
            if not isinstance(drop, str) or not layout.is_drop_request(drop):
                logger.warning("task %s: joined-drop entry %s names no dropped request: passed over", task_id, entry)
                continue
            if drop in answered:  # it joined this run and one it ended: one file, the same content
                continue
            if stop is not None and stop():
                raise AnswersCut(answered)
            blob = layout.drop_answer_blob(drop, "done")
            if keep is None:
                store.write_json(layout.INCOMING_CONTAINER, blob, done_file(task_id, status))
            else:
                store.update_json(layout.INCOMING_CONTAINER, blob,
                                  lambda found: None if keep(found) else done_file(task_id, status))
            answered.append(drop)
    if answered:
        logger.info("task %s: run %s: wrote the done files of %d joined drops", task_id, runs[0] if runs else "?",
                    len(answered))
    return answered
