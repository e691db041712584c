"""A task terminated (or failed) after its results were complete and served keeps them: only the word of its end was
cut short (its notification retries, the done file, the event), the last steps of the orchestrator.

Why: an operator who terminated a task whose notification receiver stayed down (up to ~30 minutes of retries on
durable timers after the results) saw it "terminated", had its results answered 409 "ended terminated without
results", and a plain post of the same request resumed the run in place: it merged again over the results being
served (deleting their exports and lists first) for nothing. A terminated instance's custom status is the one its
replay set, which names the finished stage (api.starters ``_stage`` cites dtfx).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import azure.functions as func
import pytest

from api import starters
from core.contracts import Stage
from core.requests import parse_task_request
from tests.unit.test_task_hub_unavailable import COMPLETED, Hub, _settings

BODY = {"container": "photos", "model": "MDV5A"}


def _answer(runtime: str, stage: str) -> tuple[int, dict[str, Any]]:
    task_id = parse_task_request(BODY).task_id_for()
    return 200, {**COMPLETED, "instanceId": task_id, "runtimeStatus": runtime,
                 "customStatus": {"stage": stage, "images": 10, "failed": 0}}


@pytest.mark.parametrize("runtime", ["Terminated", "Failed"])
@pytest.mark.parametrize("stage", [Stage.completed, Stage.completed_with_errors])
def test_a_task_ended_after_its_results_shows_them_and_is_found_not_resumed(
        runtime: str, stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)  # no storage
    monkeypatch.setattr(starters, "_generations", lambda *a: {})
    hub = Hub(_answer(runtime, stage))
    task_id = parse_task_request(BODY).task_id_for()

    assert asyncio.run(starters.start_task(hub, BODY, _settings())) == (False, task_id)
    assert hub.started == []  # nothing resumed over the served results
    handler = starters.get_task._function.get_user_function().__wrapped__  # http_edge(get_task), no binding
    req = func.HttpRequest("GET", f"http://h/api/tasks/{task_id}", body=b"", route_params={"task_id": task_id})
    shown = json.loads(asyncio.run(handler(req, hub)).get_body())
    assert shown["stage"] == stage and shown["runtime_status"] == runtime, shown
    info = asyncio.run(starters.finished_task(hub, task_id, "results"))  # not 409: they are there
    assert info["stage"] == stage


@pytest.mark.parametrize("runtime, shown", [("Terminated", Stage.terminated), ("Failed", Stage.failed)])
def test_a_task_ended_before_its_results_is_still_shown_ended_and_resumed(
        runtime: str, shown: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)
    monkeypatch.setattr(starters, "_generations", lambda *a: {})
    hub = Hub(_answer(runtime, Stage.detecting))
    assert asyncio.run(starters.start_task(hub, BODY, _settings()))[0] is True and hub.started  # resumed
    assert starters._stage(runtime, {"stage": Stage.detecting}) == shown
