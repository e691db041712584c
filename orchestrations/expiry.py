"""Take a task's preview pages off the public website when the request's ``previews_expire_days`` have passed.

Why an orchestration of its own (instance ``<task>-expiry``, started by the task's last activity) rather than a timer
in the task orchestration: a task waiting days for a timer would stay ``Running``, so it would count against its
caller's running tasks, hold its output back, and keep its (large) history loaded for replay; the expiry's own
history is a few events. Timers are chained, at most ``core.expiry.MAX_TIMER_STEP`` each (why: core/expiry.py).
A ``DELETE /api/tasks/{id}/previews`` before the time leaves nothing to delete: the expiry then deletes 0 blobs.
Deterministic code only.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Generator

import azure.durable_functions as df

from core import contracts as c
from core.contracts import Stage
from core.expiry import next_timer
from core.failures import failures_without_secrets
from orchestrations.retries import STORAGE_RETRY, call

bp = df.Blueprint()


def moved_to(result: Any) -> str:
    """The time an ``EXPIRY_MOVED_EVENT`` names ("" when the re-run wants none), whether its data arrives as a dict or
    as its JSON text.

    Why the text: the SDK client's ``raise_event`` (what ``activities.expiry`` calls) posts ``json.dumps(data)`` as
    the JSON body, a JSON string, and the Durable extension stores that string as the event's data
    (``HttpApiHandler.HandleRaiseEventRequestAsync``: ``ConvertToJToken``), so on Azure ``wait_for_external_event``
    gives ``'{"expires": ...}'`` (azure-functions-durable-python#295; devhost README, fidelity row 36). Histories
    recorded before devhost stored it so hold a dict. Deterministic: the event's data is in the history."""
    data = json.loads(result) if isinstance(result, str) else result
    if data is None:
        return ""
    if not isinstance(data, dict):
        raise TypeError(f"the {c.EXPIRY_MOVED_EVENT} event carries {data!r}, not {{\"expires\": ...}} as "
                        "activities/expiry.py sends it: the pages stay until DELETE /api/tasks/{id}/previews")
    return str(data.get("expires") or "")


@bp.orchestration_trigger(context_name="context", orchestration=c.EXPIRY_ORCHESTRATOR)
@failures_without_secrets
def expire_previews(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.ExpiryStatus]:
    data: c.ExpiryInput = context.get_input()
    # the status and output show the time as read, never the text as given: Python reads an ISO time whatever the length
    # of its fraction, so the text is unbounded, and a status over 16 KB fails the orchestration (core/status_size.py)
    until = datetime.fromisoformat(data["expires"])
    expires = until.isoformat()
    context.set_custom_status(c.ExpiryStatus(stage="waiting", expires=expires))
    fire = next_timer(context.current_utc_datetime, until)
    while fire is not None:
        # a re-run of the task may move the time (activities.expiry): the event, or the timer, whichever comes first
        # (waiting for an event adds no action to the history, so an expiry that was waiting replays unchanged)
        timer = context.create_timer(fire)
        moved = context.wait_for_external_event(c.EXPIRY_MOVED_EVENT)
        winner = yield context.task_any([timer, moved])
        if winner == moved:
            timer.cancel()
            expires = moved_to(moved.result)
            if not expires:  # the re-run asked for none: its pages stay
                ended = c.ExpiryStatus(stage=Stage.cancelled, deleted=0)
                context.set_custom_status(ended)
                return ended
            until = datetime.fromisoformat(expires)
            expires = until.isoformat()
            context.set_custom_status(c.ExpiryStatus(stage="waiting", expires=expires))
        fire = next_timer(context.current_utc_datetime, until)
    gone: c.DeletePreviewsOutput = yield from call(context, c.DELETE_PREVIEWS, STORAGE_RETRY,
                                                   c.DeletePreviewsInput(task_id=data["task_id"]))
    done = c.ExpiryStatus(stage=Stage.completed, expires=expires, deleted=gone["deleted"])
    context.set_custom_status(done)
    return done
