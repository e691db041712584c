"""Writes of a task's helper call (its preview expiry, a zip build's steps) that may run on after the task was deleted:
skipped when the deletion began before the call, taken back when it began during the call.

Why: ``DELETE /api/tasks/{id}`` ends the task's timers and is refused while a zip build runs, but neither a terminate
nor a purge stops an activity already running or queued ("Terminating an orchestration instance has no effect on any
in-flight activity function executions", Durable Functions ``TerminateAsync``; ``activities.superseded``; devhost
fidelity row 49): an expiry deleting the pages when the task was deleted, or a zip build terminated (``POST
.../terminate {"target": "zip"}``) before the deletion, writes its previews-withdrawn file, its zip, its manifest or
its parts after the deletion listed the task's prefixes, private blobs left after a ``200``. These calls carry no
run of their own (their inputs are recorded in histories and stay as they are), so the call's own start stands for
it, as a preview render's does (``adapters.preview_folders.withdrawn``): ``core.task_deletion.deleted_since`` counts
a call that began before the deletion was done (a fresh task of the same request starts only after the purge).

How, the render guard's order: the deletion writes its mark before it lists anything (``adapters.task_deletion
.delete_task_blobs``), so a write that ended before the mark is listed and deleted by it, and one that ended after it
finds the mark on the read after the call's last write and deletes what it wrote. One small read before (nothing is
written for a task whose deletion began), one after.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, TypeVar

from adapters.blobs import BlobStore
from adapters.compose import delete_names
from adapters.task_deletion import deleted_since
from core.errors import RunSuperseded

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _refused(key: str, what: str, taken_back: int | None) -> RunSuperseded:
    after = "" if taken_back is None else f"; the {taken_back} blob(s) it wrote after the deletion began were deleted"
    logger.warning("task %s: %s not done: the task was deleted%s", key, what, after)
    return RunSuperseded(f"task {key}: {what} was not done: the task was deleted (DELETE /api/tasks/{{id}}) while it "
                         f"was under way{after}", "nothing to do: a deleted task writes nothing more")


def write_unless_deleted(store: BlobStore, container: str, key: str, what: str, write: Callable[[], T],
                         wrote: Callable[[T], Iterable[str]], started_s: float | None = None) -> T:
    """``write()`` unless the task of ``key`` (a task id or generation key) was deleted since ``started_s`` (when the
    call began, seconds since the epoch; default now): then ``RunSuperseded`` and nothing written. After it, the same
    read: a deletion begun meanwhile deletes ``wrote(answer)`` (the names in ``container`` it wrote) and raises.
    ``what``: the step, for the words."""
    started = time.time() if started_s is None else started_s
    if deleted_since(store, container, key, started):
        raise _refused(key, what, None)
    answer = write()
    if deleted_since(store, container, key, started):
        raise _refused(key, what, delete_names(store, container, list(wrote(answer))))
    return answer
