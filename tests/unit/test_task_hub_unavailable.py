"""A task hub whose storage throttles or fails is a 503 with Retry-After, never "no such task".

The Durable extension's management API answers a storage exception with 500 and an error body
(azure-functions-durable-extension ``HttpApiHandler.HandleRequestAsync``'s catch-all,
``HttpRequestMessageExtensions.CreateErrorResponse``); the Python SDK's ``get_status`` takes any 500 for "the
instance failed" and returns a status built from that body, with no runtime status: what a missing instance gives.
These tests drive the SDK's real ``DurableOrchestrationClient`` with its HTTP call answered as the extension does.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import azure.durable_functions as df
import azure.functions as func
import pytest

from api import starters
from core.errors import TaskHubUnavailable
from core.requests import parse_task_request
from core.settings import Settings
from devhost.http_server import binding_json

# The body CreateErrorResponse(InternalServerError, "Something went wrong...", e) writes for a throttled table read.
HUB_ERROR = {"Message": "Something went wrong while processing your request",
             "ExceptionMessage": "Server Busy: The server is currently unable to receive requests.",
             "ExceptionType": "Azure.RequestFailedException", "StackTrace": "   at ..."}
COMPLETED = {"name": "task_orchestrator", "instanceId": "x", "runtimeStatus": "Completed",
             "createdTime": "2026-01-01T00:00:00Z", "lastUpdatedTime": "2026-01-02T00:00:00Z",
             "input": json.dumps({"run": "r1"}), "output": None, "customStatus": {"stage": "completed"}}


class Hub(df.DurableOrchestrationClient):
    """The SDK's client; the management API's answers come from ``answer`` (status, body) instead of HTTP."""

    def __init__(self, answer: Any) -> None:
        super().__init__(binding_json("http://127.0.0.1:7071", "hub"))
        self.answer = answer
        self.started: list[str] = []

        async def get(url: str) -> list[Any]:
            if isinstance(self.answer, BaseException):
                raise self.answer
            return list(self.answer)

        async def post(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
            self.started.append(url)
            return [202, {"id": "x"}]

        self._get_async_request = get
        self._post_async_request = post


def _settings() -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})


@pytest.mark.parametrize("answer", [(500, HUB_ERROR), aiohttp.ClientConnectionError("reset by peer"),
                                    asyncio.TimeoutError()])
def test_a_status_read_the_hub_could_not_answer_is_503_with_retry_after(answer: Any) -> None:
    """Before: 404 "no task task-..." for a running task (a CLI's status --wait stopped there), or a 500 'bug'."""
    task_id = "task-0123456789abcdef0123"
    handler = starters.get_task._function.get_user_function().__wrapped__  # http_edge(get_task), no binding
    req = func.HttpRequest("GET", f"http://h/api/tasks/{task_id}", body=b"", route_params={"task_id": task_id})
    response = asyncio.run(handler(req, Hub(answer)))
    body = json.loads(response.get_body())
    assert response.status_code == 503, body
    assert response.headers.get("Retry-After") == "30"
    assert "task hub could not be read" in body["error"] and "retry" in body["hint"]
    assert "Server Busy" not in body["error"]  # the platform's exception text stays in the log


def test_a_missing_instance_is_still_not_found() -> None:
    """The extension answers an unknown id 404 with no body: that stays "no task"."""
    task_id = "task-0123456789abcdef0123"
    handler = starters.get_task._function.get_user_function().__wrapped__
    req = func.HttpRequest("GET", f"http://h/api/tasks/{task_id}", body=b"", route_params={"task_id": task_id})
    response = asyncio.run(handler(req, Hub((404, ""))))
    assert response.status_code == 404


def test_posting_a_completed_task_again_while_the_hub_is_throttled_starts_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same request posted again names the same task, which completed: it must not run again. With the status
    read answered 500, the task read as absent and ``start_new`` restarted the completed instance (the extension lets
    a Completed id be started again): the whole run's GPU work a second time."""
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)  # no storage here
    monkeypatch.setattr(starters, "_generations", lambda *a: {})
    hub = Hub((500, HUB_ERROR))
    body = {"container": "photos", "model": "MDV5A"}
    with pytest.raises(TaskHubUnavailable):
        asyncio.run(starters.start_task(hub, body, _settings()))
    assert hub.started == []
    hub.answer = (200, {**COMPLETED, "instanceId": parse_task_request(body).task_id_for()})
    assert asyncio.run(starters.start_task(hub, body, _settings()))[0] is False and hub.started == []


@pytest.mark.parametrize("payload", [{"task_id": "task-0123456789abcdef0123", "expires": "", "move": True},
                                     {"task_id": "task-0123456789abcdef0123", "expires": "2027-01-01T00:00:00"}])
def test_scheduling_a_preview_expiry_while_the_hub_is_throttled_fails_the_activity_instead_of_guessing(
        payload: Any) -> None:
    """``schedule_preview_expiry`` reads the expiry's status to know whether one waits. A throttled read answered as
    "none waits": a re-run's move (``expires`` "") was dropped, so the first run's time took the re-run's pages off
    the website, and a new expiry was started over the waiting one (which the extension refuses: a failure that
named no cause). Now the activity fails (TaskHubUnavailable) and
    the task's STORAGE_RETRY tries it again; fails without the change."""
    from activities.expiry import run_schedule_expiry

    hub = Hub((500, HUB_ERROR))
    raised: list[Any] = []

    async def raise_event(*args: Any, **kwargs: Any) -> None:
        raised.append(args)

    hub.raise_event = raise_event  # type: ignore[method-assign]
    with pytest.raises(TaskHubUnavailable, match="task hub could not be read"):
        asyncio.run(run_schedule_expiry(payload, hub))  # type: ignore[arg-type]
    assert hub.started == [] and raised == []
