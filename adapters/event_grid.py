"""Publish events to an Event Grid custom topic over azure-core's HTTP pipeline, with an Entra ID token.

Why not the azure-eventgrid SDK: one POST of a JSON array is all trapbatch sends, and azure-core (already here for
storage and Batch) gives the same pipeline the SDK builds: a bearer-token policy for the scope
``https://eventgrid.azure.net/.default`` (refreshing tokens before they expire), the user agent, and a transport
that tests replace (``transport=``), as ``gpu_batch/pool/azure_batch.py`` does for Batch. The request is the one
event-grid/post-to-custom-topic.md describes, with ``Authorization: Bearer`` in place of ``aeg-sas-key``
(event-grid/authenticate-with-microsoft-entra-id.md): the topic has local (key) auth disabled.

No retries here (``retry_total=0``): the orchestrator retries a failed publish on durable timers
(orchestrations/task.py), which outlasts an activity and costs no compute while it waits. A topic that did not answer,
or answered "later" (408, 429, 5xx), or whose token the app's identity endpoint did not give
(``adapters.identity.AppCredential``), is ``TopicUnavailable``: a name ``orchestrations.retries.BUSY_TYPES`` counts
busy (new with it, so publishes recorded as ``PublishFailed`` replay as they were judged). A topic host that DNS
says does not exist (a misspelt endpoint: ``gpu_batch.storage_refs.unresolvable_host``) is not "did not answer":
``PublishFailed``.
"""
from __future__ import annotations

import json
from typing import Any

from azure.core import PipelineClient
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import (BearerTokenCredentialPolicy, HeadersPolicy, RetryPolicy,
                                          UserAgentPolicy)
from azure.core.rest import HttpRequest

from adapters.identity import TokenEndpointUnavailable, app_credential
from core import task_events
from gpu_batch.storage_refs import service_did_not_answer


class PublishFailed(RuntimeError):
    """The topic did not take the event (or could not be reached); the orchestrator retries."""


class TopicUnavailable(PublishFailed):
    """The topic, or the app's token endpoint, did not answer or answered "later": a passing cause, waited out as a
    busy service."""


class EventGridPublisher:
    """Posts CloudEvents to one custom topic. ``credential``: a TokenCredential (by default the app's shared one,
    ``adapters.identity.app_credential``: DefaultAzureCredential, which picks the app's managed identity through
    ``AZURE_CLIENT_ID``)."""

    def __init__(self, endpoint: str, credential: Any = None, transport: Any = None) -> None:
        self.endpoint = endpoint
        if credential is None:
            credential = app_credential()
        policies = [HeadersPolicy(), UserAgentPolicy("trapbatch"), RetryPolicy(retry_total=0),
                    BearerTokenCredentialPolicy(credential, task_events.TOKEN_SCOPE)]
        kwargs = {"transport": transport} if transport is not None else {}
        self._client = PipelineClient(base_url=endpoint, policies=policies, **kwargs)

    def publish(self, events: list[dict[str, Any]]) -> int:
        """POST ``events`` in one request; the topic's status code (200 when taken). Raises ``PublishFailed``."""
        request = HttpRequest("POST", task_events.publish_url(self.endpoint),
                              headers={"Content-Type": task_events.CONTENT_TYPE},
                              content=task_events.batch_body(events))
        host = request.url.split("/")[2]
        try:
            response = self._client.send_request(request)
        except AzureError as exc:  # no answer: DNS, TLS, connection, or no token for the identity
            failed = (TopicUnavailable if isinstance(exc, TokenEndpointUnavailable) or service_did_not_answer(exc)
                      else PublishFailed)
            raise failed(f"publishing to {host} failed: {type(exc).__name__}: {_first_line(exc)}") from None
        if not 200 <= response.status_code < 300:
            failed = (TopicUnavailable if response.status_code >= 500 or response.status_code in (408, 429)
                      else PublishFailed)
            raise failed(f"{host} answered {response.status_code}: {_error_message(response)}")
        return int(response.status_code)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().split("\n") or [""])[0][:300]


def _error_message(response: Any) -> str:
    """Event Grid's ``{"error": {"code", "message"}}`` (what a missing role or a schema mismatch says), shortened."""
    try:
        error = json.loads(response.text()).get("error", {})
        return f"{error.get('code', '')}: {error.get('message', '')}"[:300]
    except (ValueError, AttributeError):
        return response.reason or ""
