"""Cancel answers by stage: only while pool work can still be stopped (the shard groups read the marker at polls)."""
from __future__ import annotations

import asyncio
import json
from enum import Enum
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from adapters import clients
from api import starters

TASK = "task-0123456789abcdef0123"


class _Runtime(Enum):
    Running = "Running"
    Completed = "Completed"


class FakeClient:
    def __init__(self, runtime: str, stage: str) -> None:
        self.status = SimpleNamespace(runtime_status=_Runtime(runtime), custom_status={"stage": stage}, output=None)

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        return self.status


def _cancel(client: FakeClient) -> tuple[int, dict[str, Any]]:
    handler = starters.cancel_task._function.get_user_function().__wrapped__  # http_edge(cancel_task), no binding
    req = func.HttpRequest("POST", f"http://h/api/tasks/{TASK}/cancel", body=b"", route_params={"task_id": TASK})
    response = asyncio.run(handler(req, client))
    return response.status_code, json.loads(response.get_body())


@pytest.mark.parametrize("stage", ["merging", "publishing"])
def test_cancel_after_detection_answers_409_with_a_hint_and_writes_no_marker(stage: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "store", lambda s=None: pytest.fail("no cancel marker may be written"))
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    status, body = _cancel(FakeClient("Running", stage))
    assert status == 409 and stage in body["error"] and "ends on its own" in body["hint"]


def test_cancel_of_a_finished_task_answers_409() -> None:
    status, body = _cancel(FakeClient("Completed", "completed"))
    assert status == 409 and "not running" in body["error"]
