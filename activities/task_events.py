"""Word when a task ends, for Azure subscribers: one CloudEvents event per final stage on the Event Grid custom topic
``TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT`` names (core/task_events.py says what; adapters/event_grid.py how).

The orchestrator calls this only where the setting was set when the task started (``OrchestrationKnobs.task_events``);
if it has been removed since, nothing is sent and the answer says why (no retry: retrying cannot change a setting).
A topic that cannot be reached or refuses the event raises, and the orchestrator retries with back-off
(orchestrations/task.py NOTIFY_RETRY); the task's outcome stands whatever happens here.
"""
from __future__ import annotations

import functools
import logging

import azure.durable_functions as df

from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.event_grid import EventGridPublisher
from core import contracts as c
from core import task_events
from core.failures import failures_without_secrets

logger = logging.getLogger(__name__)
bp = df.Blueprint()


def publish(payload: c.PublishEventInput, publisher: EventGridPublisher | None) -> c.PublishEventOutput:
    """Publish the event of ``payload``'s final status through ``publisher`` (None: no topic is configured)."""
    stage = str(payload["status"].get("stage", ""))
    if publisher is None:
        reason = "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT is not set"
        logger.warning("task %s: no %s event published: %s", payload["task_id"], stage, reason)
        return {"sent": False, "status_code": 0, "reason": reason}
    event = task_events.task_event(payload["task_id"], payload["status"], payload.get("run", ""))
    code = publisher.publish([event])
    logger.info("task %s: published %s (%s)", payload["task_id"], event["type"], event["id"])
    return {"sent": True, "status_code": code, "reason": ""}


@functools.cache
def _publisher(endpoint: str) -> EventGridPublisher:
    """One publisher per process and topic: its credential caches the identity's token between tasks."""
    return EventGridPublisher(endpoint)


@bp.activity_trigger(input_name="payload", activity=c.PUBLISH_EVENT)
@failures_without_secrets
def publish_task_event(payload: c.PublishEventInput) -> c.PublishEventOutput:
    s = clients.settings()
    # a terminated run's late event, once a later run replaced it: subscribers would act on an old end
    refuse_if_superseded(clients.store(s), s, payload, "the event of its end")
    endpoint = s.event_grid_topic_endpoint
    return publish(payload, _publisher(endpoint) if endpoint else None)
