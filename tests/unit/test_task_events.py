"""The Event Grid event of a task's end: its CloudEvents shape (core/task_events.py), and the publish request the
activity sends, asserted at the HTTP transport level (no Azure topic is reachable here), as
gpu_batch/tests/test_pool_azure_batch.py asserts Batch requests.

Platform rules held here: event-grid/post-to-custom-topic.md (POST <topic endpoint>?api-version=2018-01-01, a JSON
array of events), event-grid/authenticate-with-microsoft-entra-id.md (``Authorization: Bearer`` with a token for
``https://eventgrid.azure.net/.default``, role "EventGrid Data Sender"), event-grid/cloud-event-schema.md and
CloudEvents 1.0 (required attributes specversion, id, source, type; ``application/cloudevents-batch+json``).
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport

from activities.task_events import publish
from adapters.event_grid import EventGridPublisher, PublishFailed
from core import task_events
from core.contracts import Stage
from core.errors import ConfigError
from core.settings import Settings
from gpu_batch.tests.test_pool_azure_batch import _Response  # a recorded answer, as the Batch tests build it
from gpu_batch.tests.test_storage_refs import resolver  # noqa: F401 - the fixture: getaddrinfo's answer for *.invalid

ENDPOINT = "https://trapbatch-events.westeurope-1.eventgrid.azure.net/api/events"
TASK = "task-0123456789abcdef0123"
STATUS: dict[str, Any] = {
    "stage": "completed", "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T01:00:00+00:00",
    "images": 25, "failed": 1, "missing": 0, "failed_fraction": 0.04, "with_detections": 7, "detections": 12,
    "empty": 17, "shards": 3, "resubmissions": 0,
    "results": {"container": "trapbatch", "blob": f"results/{TASK}/detections.json", "csv": ""},
    "previews": {"container": "$web", "prefix": "p/unguessable-0f3c/"}, "pool_job": TASK,
}


class FakeTopic(HttpTransport):  # type: ignore[misc]
    """Records every request; answers each with the next (status, body) of ``answers`` (then 200, as Event Grid
    answers a taken publish: an empty body)."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.requests: list[Any] = []
        self.answers = list(answers)

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append(request)
        status, body = self.answers.pop(0) if self.answers else (200, None)
        return _Response(request, status, body)

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __exit__(self, *args: Any) -> None: ...


class FakeCredential:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token", 9_999_999_999)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo("entra-token", 9_999_999_999)


def publisher(transport: FakeTopic, credential: FakeCredential | None = None) -> EventGridPublisher:
    return EventGridPublisher(ENDPOINT, credential=credential or FakeCredential(), transport=transport)


# ---------------------------------------------------------------------------------------------- the event
@pytest.mark.parametrize("stage", ["completed", "completed_with_errors", "failed", "cancelled", "expired", "estimated"])
def test_the_event_is_a_cloudevent_named_for_the_stage_and_subject_the_task(stage: str) -> None:
    event = task_events.task_event(TASK, {**STATUS, "stage": stage}, run="r1")
    assert event["specversion"] == "1.0" and event["source"] == "/trapbatch"
    assert event["type"] == f"trapbatch.task.{stage}" and event["subject"] == f"/tasks/{TASK}"
    assert event["id"] == f"{TASK}/r1/{stage}"  # the same on every retry: a subscriber can drop repeats
    assert event["time"] == STATUS["finished"] and event["datacontenttype"] == "application/json"
    assert event["data"]["task_id"] == TASK and event["data"]["stage"] == stage


def test_the_event_data_is_the_public_status_without_previews_or_the_pool_job() -> None:
    data = task_events.task_event(TASK, STATUS)["data"]
    assert data["previews"] == {"container": "$web"} and "pool_job" not in data  # the address is unguessable on purpose
    assert data["images"] == 25 and data["results"]["blob"] == f"results/{TASK}/detections.json"
    assert "unguessable" not in json.dumps(task_events.task_event(TASK, STATUS))


def test_a_status_without_a_finish_time_gives_no_time_and_no_run_gives_a_shorter_id() -> None:
    event = task_events.task_event(TASK, {"stage": Stage.failed, "error": "no images"})
    assert "time" not in event and event["id"] == f"{TASK}/failed" and event["data"]["error"] == "no images"


# ---------------------------------------------------------------------------------------------- the request
def test_one_post_to_the_topic_with_an_entra_token_and_a_cloudevents_batch() -> None:
    topic, credential = FakeTopic(), FakeCredential()
    out = publish({"task_id": TASK, "run": "r1", "status": STATUS}, publisher(topic, credential))

    assert out == {"sent": True, "status_code": 200, "reason": ""}
    [request] = topic.requests
    assert request.method == "POST" and request.url == f"{ENDPOINT}?api-version=2018-01-01"
    assert request.headers["Authorization"] == "Bearer entra-token"
    assert credential.scopes == [("https://eventgrid.azure.net/.default",)]
    assert not any(h.lower() in ("aeg-sas-key", "aeg-sas-token") for h in request.headers)  # no access key
    assert request.headers["Content-Type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert "trapbatch" in request.headers["User-Agent"]
    body = json.loads(request.content)
    assert isinstance(body, list) and len(body) == 1
    [event] = body
    assert {"specversion", "id", "source", "type"} <= set(event)  # CloudEvents 1.0 required attributes
    assert event == task_events.task_event(TASK, STATUS, run="r1")


@pytest.mark.parametrize("status, body, needle", [
    (401, {"error": {"code": "Unauthorized", "message": "no EventGrid Data Sender role"}}, "401: Unauthorized"),
    (400, {"error": {"code": "BadRequest", "message": "input schema mismatch"}}, "input schema mismatch"),
    (503, None, "503"),
])
def test_a_refused_event_raises_so_the_orchestrator_retries(status: int, body: Any, needle: str) -> None:
    topic = FakeTopic((status, body))
    with pytest.raises(PublishFailed) as info:
        publish({"task_id": TASK, "run": "", "status": STATUS}, publisher(topic))
    assert needle in str(info.value) and "trapbatch-events.westeurope-1.eventgrid.azure.net" in str(info.value)
    assert len(topic.requests) == 1  # no retry inside the activity: the orchestrator's durable timers do that


def test_an_unreachable_topic_raises_publish_failed() -> None:
    from azure.core.exceptions import ServiceRequestError

    class Down(FakeTopic):
        def send(self, request: Any, **kwargs: Any) -> Any:
            raise ServiceRequestError("connection refused")

    with pytest.raises(PublishFailed, match="ServiceRequestError"):
        publish({"task_id": TASK, "run": "", "status": STATUS}, publisher(Down()))


@pytest.mark.parametrize("busy", [False, True])
def test_a_topic_whose_host_does_not_exist_is_not_waited_out_as_busy(busy: bool, resolver: Any) -> None:
    """The real transport on a topic host DNS says does not exist (a misspelt TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT):
    ``PublishFailed``, not the busy ``TopicUnavailable``, which a resolver that did not answer (EAI_AGAIN) still is
    (``gpu_batch.storage_refs.service_did_not_answer``)."""
    import socket

    from adapters.event_grid import TopicUnavailable

    resolver(*((socket.EAI_AGAIN, "Temporary failure in name resolution") if busy
               else (socket.EAI_NONAME, "Name or service not known")))
    topic = EventGridPublisher("https://nosuchtopic.invalid/api/events", credential=FakeCredential())
    with pytest.raises(PublishFailed, match="nosuchtopic.invalid") as info:
        publish({"task_id": TASK, "run": "", "status": STATUS}, topic)
    assert isinstance(info.value, TopicUnavailable) is busy


def test_without_a_topic_nothing_is_sent_and_the_answer_says_why() -> None:
    out = publish({"task_id": TASK, "run": "", "status": STATUS}, None)
    assert out == {"sent": False, "status_code": 0, "reason": "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT is not set"}


# ---------------------------------------------------------------------------------------------- the setting
def test_the_setting_turns_events_on_for_the_orchestrations_and_must_be_https() -> None:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert Settings.from_env(base).knobs.task_events is False
    on = Settings.from_env({**base, "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT": ENDPOINT})
    assert on.event_grid_topic_endpoint == ENDPOINT and on.knobs.task_events is True
    with pytest.raises(ConfigError, match="not an https URL"):
        Settings.from_env({**base, "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT": "http://topic.example/api/events"})


def test_a_wrong_topic_endpoint_names_a_command_that_prints_the_right_one() -> None:
    """The hint's command must run as given: azure-cli's ``az eventgrid topic show`` needs the topic (``--name/-n``)
    and its group (``--resource-group/-g``) or ``--ids``, as Event Grid's quickstart runs it
    (articles/event-grid/custom-event-quickstart.md: ``--query "endpoint" --output tsv``); without ``-o tsv`` it
    prints the endpoint as a JSON string, quotes and all."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                           "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT": "http://topic.example/api/events"})
    command = info.value.hint.split("`")[1]
    args = command.split()
    assert args[:4] == ["az", "eventgrid", "topic", "show"], command
    assert {"-g", "--resource-group"} & set(args) and {"-n", "--name"} & set(args), command
    assert "--query endpoint" in command and "-o tsv" in command, command
