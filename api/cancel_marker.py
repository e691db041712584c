"""The cancel marker that POST /api/tasks/{id}/cancel writes for the run it found running, without writing over the
mark of a run that replaced it meanwhile.

Why: the cancel reads the task's status (which run is running), then writes that run's cancel marker. A run
terminated and replaced between the two has the replacing run write the same marker first, naming itself
(``superseded_by``: orchestrations.task ``_end_terminated_run``, activities.pool ``run_stop_groups``), and the
terminated run's queued calls are refused by it (activities.superseded). The cancel wrote its marker whatever was there,
and that mark was lost: the terminated run's late merge, publishing and notification calls wrote over the new run's
again. Now the write is conditional on the marker it read (``BlobStore.update_json``: If-None-Match / If-Match, read
again when another write came first), and a marker naming a replacing run is kept as it is: the run this cancel was
for ended already, and the run that replaced it is not the one the caller saw (``cancel_task`` says so, and cancels
nothing).

Nothing reads a marker's fields but ``superseded_by``: the shard groups' polls and the end of the listing stop at any
marker (activities.pool ``run_poll``, activities.enumerate), and a cancelled task's stage (``cancelled``) comes from
the groups' outcomes, not from the marker. ``by`` and ``requested`` are for a person reading the storage account.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from adapters.blobs import BlobStore
from gpu_batch import layout

BY = "a cancel (POST /api/tasks/<id>/cancel)"


def write_cancel_marker(store: BlobStore, container: str, job: str) -> str | None:
    """Write the cancel marker of the run with pool job ``job``; a marker there without ``superseded_by`` (an earlier
    cancel, a failing shard group's stop) is replaced, as before. Returns None when written, or, when the marker names
    a run that replaced this one, that run ("" if it did not say which), the marker left as it is."""
    replaced_by: list[str] = []

    def change(current: Any) -> dict[str, Any] | None:
        replaced_by.clear()
        by = current.get("superseded_by") if isinstance(current, dict) else None
        if by is not None:
            replaced_by.append(str(by))
            return None
        return {"requested": datetime.now(timezone.utc).isoformat(), "by": BY}

    store.update_json(container, layout.cancel_marker(job), change)
    return replaced_by[0] if replaced_by else None
