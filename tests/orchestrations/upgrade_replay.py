"""Replay a recorded orchestration history against today's orchestrators, as Azure does after a deployment.

Azure keeps each running task's history in its task hub. After a deployment, the next event of an instance (a shard's
poll result, a timer) makes the Durable extension hand the new code the whole history plus that event. The new code
must then schedule, at each sequence number the history holds, an action of the same kind and name (DTFx
``TaskOrchestrationContext`` Handle*Event; devhost fidelity row 7: inputs are not compared), and it must read the
old activity results it is given without raising. This module cuts a history recorded by an earlier release
(``scripts/record_histories.py``) at every episode, as if the deployment had landed just before it, and checks both.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import azure.functions as func

from devhost import history as h

HISTORIES = Path(__file__).resolve().parent / "histories"
OUT_OF_PROC = "$OutOfProcData$:"
SCHEDULING = (h.TASK_SCHEDULED, h.TIMER_CREATED, h.SUBORCH_CREATED)
DELIVERED = (h.EXECUTION_STARTED, h.TASK_COMPLETED, h.TASK_FAILED, h.SUBORCH_COMPLETED, h.SUBORCH_FAILED,
             h.TIMER_FIRED, h.EVENT_RAISED)


@dataclass(frozen=True)
class Cut:
    """One moment a deployment could land in an instance's history: the episodes before ``episode`` stay in the
    history; the events that episode delivered (a completion, a timer, an event) arrive at the new code."""

    release: str
    instance_id: str
    name: str
    episode: int
    history: list[dict[str, Any]]  # what the new code is handed: the old episodes, then the delivered events
    recorded: list[list[Any]]  # what the old episodes scheduled, in sequence order ([actionType, name, instanceId])
    action_ids: list[int]
    input: Any
    parent_instance_id: str | None
    failed_here: bool = False  # the recorded run failed in this episode (the orchestrator raised, as it meant to)

    def __str__(self) -> str:
        return f"{self.release}: {self.name} {self.instance_id} episode {self.episode}"


def recordings() -> list[Path]:
    return sorted(HISTORIES.glob("*.json.gz"))


def load(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def episodes(history: list[dict[str, Any]]) -> list[int]:
    """Where each episode starts (the index of its ``OrchestratorStarted``)."""
    return [i for i, e in enumerate(history) if e["EventType"] == h.ORCHESTRATOR_STARTED]


def cuts(path: Path) -> Iterator[Cut]:
    doc = load(path)
    release = str(doc.get("release") or path.name)
    for inst in doc["instances"]:
        events = inst["history"]
        starts = episodes(events)
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(events)
            delivered = [e for e in events[start + 1:end] if e["EventType"] in DELIVERED]
            if not delivered:
                continue  # an episode that delivered nothing (the host's own bookkeeping): no deployment moment
            old = events[:start]
            scheduled_before = {e["EventId"] for e in old if e["EventType"] in SCHEDULING}
            keep = [i for i, sid in enumerate(inst["action_ids"]) if sid in scheduled_before]
            yield Cut(release, inst["instance_id"], str(inst["name"]), k,
                      [dict(e, IsPlayed=True) for e in old] + [events[start]] + delivered,
                      [inst["recorded"][i] for i in keep], [inst["action_ids"][i] for i in keep],
                      inst.get("input"), inst.get("parent_instance_id"),
                      any(e["EventType"] == h.EXECUTION_FAILED for e in events[start:end]))


def replay(cut: Cut, orchestrators: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    """The orchestrator's state (actions, custom status, output or error) after replaying ``cut`` with today's code,
    handed to it as the extension hands it (devhost's engine does the same)."""
    payload = {"history": cut.history, "instanceId": cut.instance_id, "isReplaying": False,
               "parentInstanceId": cut.parent_instance_id, "input": cut.input, **h.ORCHESTRATION_CONTEXT_FIELDS}
    try:
        return dict(json.loads(orchestrators[cut.name](func.OrchestrationContext(json.dumps(payload)))))
    except Exception as exc:  # the SDK reports an orchestrator's exception this way
        text = str(exc)
        if OUT_OF_PROC in text:
            state = dict(json.loads(text.split(OUT_OF_PROC, 1)[1]))
            state.setdefault("error", text.split(OUT_OF_PROC, 1)[0].strip())
            return state
        return {"error": text}


def verdict(cut: Cut, state: dict[str, Any]) -> str | None:
    """None when Azure would carry on with today's code from ``cut``; else what would fail the task."""
    if cut.failed_here:  # the instance ended here (Failed): no deployment finds it running at this moment
        return None
    if state.get("error"):
        return f"the orchestrator raised: {str(state['error'])[:2000]}"
    actions = [a for a in h.flatten(state.get("actions") or []) if a.get("actionType") != h.WAIT_FOR_EXTERNAL_EVENT]
    return h.nondeterminism_error(actions, cut.recorded, cut.action_ids)
