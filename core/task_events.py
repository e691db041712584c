"""Word when a task ends, for Azure: one CloudEvents 1.0 event per final stage, published to an Event Grid custom topic.

Pure: the event and the request body. ``activities/task_events.py`` sends it (Entra ID token of the app's managed
identity, role "EventGrid Data Sender" on the topic; the topic takes no access key: infra/app/task-events.bicep); the
task orchestrator calls that activity once when the task ends, only where ``TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT`` is
set (``OrchestrationKnobs.task_events``), retrying with back-off as it retries a notification.

Why CloudEvents 1.0 rather than the Event Grid schema: it is the CNCF standard that Event Grid takes and delivers
natively (a topic created with ``inputSchema: CloudEventSchemaV1_0``), so a subscriber is not tied to Azure's own
envelope, and its ``subject`` and ``type`` are what Event Grid subscriptions filter on. The topic's input schema must
match: a CloudEvents body posted to an Event Grid schema topic is refused with 400.

The event (``type`` ``trapbatch.task.<stage>``, stages: completed, completed_with_errors, failed, cancelled, expired,
estimated)::

    {"specversion": "1.0", "id": "<task id>/<run>/<stage>", "source": "/trapbatch", "subject": "/tasks/<task id>",
     "type": "trapbatch.task.completed", "time": "<finished, RFC 3339>", "datacontenttype": "application/json",
     "data": {"task_id": ..., "run": ..., "stage": ..., "images": ..., ...}}

``data`` is what a ``notify_url`` receives (``core.notify.public_status``, ``run`` included): no preview address
(unguessable on purpose), no secrets, no owner. ``id`` is the same on every retry of one task run's final stage,
so a subscriber can drop a repeat (source + id identify an event, CloudEvents 1.0 "id").
"""
from __future__ import annotations

import json
from typing import Any, Mapping
from urllib.parse import urlsplit

from core.notify import public_status

SOURCE = "/trapbatch"
TYPE_PREFIX = "trapbatch.task."
# Event Grid's publish API for custom topics (event-grid/post-to-custom-topic.md; the SDKs' default api-version)
API_VERSION = "2018-01-01"
CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
# The Entra ID scope of Event Grid data-plane tokens (azure-eventgrid's DEFAULT_EVENTGRID_SCOPE)
TOKEN_SCOPE = "https://eventgrid.azure.net/.default"


def event_type(stage: str) -> str:
    return TYPE_PREFIX + stage


def task_event(task_id: str, status: Mapping[str, Any], run: str = "") -> dict[str, Any]:
    """The CloudEvents 1.0 event of a task run's final ``status`` (a ``TaskStatus`` with a ``stage``)."""
    stage = str(status["stage"])
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "/".join(p for p in (task_id, run, stage) if p),
        "source": SOURCE,
        "subject": f"/tasks/{task_id}",
        "type": event_type(stage),
        "datacontenttype": "application/json",
        "data": public_status(task_id, status, run),
    }
    if status.get("finished"):
        event["time"] = str(status["finished"])
    return event


def batch_body(events: list[dict[str, Any]]) -> bytes:
    """What one publish request carries: a JSON array of events (``application/cloudevents-batch+json``)."""
    return json.dumps(events, separators=(",", ":")).encode("utf-8")


def publish_url(endpoint: str) -> str:
    """The topic endpoint (``https://<topic>.<region>-1.eventgrid.azure.net/api/events``, as the topic's ``endpoint``
    property gives it) with the api-version the publish API requires."""
    return f"{endpoint}{'&' if '?' in endpoint else '?'}api-version={API_VERSION}"


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be a topic endpoint (None when it can): an Entra ID token is only sent over HTTPS."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        return f"TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT={endpoint!r} is not an https URL"
    return None
