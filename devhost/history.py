"""History events and action types of the Durable replay protocol, as the Python SDK reads and writes them.

Sources: azure/durable_functions/models/history/HistoryEventType.py and models/actions/ActionType.py (SDK 1.7.0), and
../shared/reference/durable-replay-notes.md (the pitfalls: ``EventType`` must be an int, timestamps end in ``Z``,
``ExecutionStarted`` needs ``Version``, results and inputs are JSON strings).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

ISO = "%Y-%m-%dT%H:%M:%S.%fZ"

EXECUTION_STARTED, EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_TERMINATED = 0, 1, 2, 3
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
SUBORCH_CREATED, SUBORCH_COMPLETED, SUBORCH_FAILED = 7, 8, 9
TIMER_CREATED, TIMER_FIRED = 10, 11
ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED = 12, 13
EVENT_RAISED = 15

CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, CALL_SUBORCH, CALL_SUBORCH_WITH_RETRY = 0, 1, 2, 3
CONTINUE_AS_NEW, CREATE_TIMER, WAIT_FOR_EXTERNAL_EVENT = 4, 5, 6
CALL_ENTITY, CALL_HTTP, SIGNAL_ENTITY, WHEN_ANY, WHEN_ALL = 7, 8, 9, 11, 12

COMPLETIONS = (TASK_COMPLETED, TASK_FAILED, SUBORCH_COMPLETED, SUBORCH_FAILED)
SUPPORTED_ACTIONS = (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, CALL_SUBORCH, CALL_SUBORCH_WITH_RETRY, CONTINUE_AS_NEW,
                     CREATE_TIMER, WAIT_FOR_EXTERNAL_EVENT)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ts(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime(ISO)


def parse_ts(text: str) -> dt.datetime:
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6].ljust(6, '0')}"
    else:
        text += ".000000"
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)


def event(etype: int, event_id: int = -1, at: dt.datetime | None = None, **fields: Any) -> dict[str, Any]:
    return {"EventType": etype, "EventId": event_id, "IsPlayed": False, "Timestamp": ts(at or utcnow()), **fields}


def flatten(actions: list[Any]) -> list[dict[str, Any]]:
    """Atomic actions in the order the SDK assigns sequence numbers (compound WhenAll/WhenAny depth first)."""
    out: list[dict[str, Any]] = []
    for a in actions:
        if isinstance(a, list):
            out.extend(flatten(a))
        elif a.get("actionType") in (WHEN_ALL, WHEN_ANY):
            out.extend(flatten(a.get("compoundActions") or []))
        else:
            out.append(a)
    return out


def signature(action: dict[str, Any]) -> list[Any]:
    """What must be identical when an action is replayed (the non-determinism check)."""
    t = action["actionType"]
    if t == CREATE_TIMER:
        return [t]
    return [t, action.get("functionName"), action.get("input"), action.get("instanceId")]
