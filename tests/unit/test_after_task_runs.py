"""A preview re-render (POST .../previews) or a results zip build (GET .../results above the zip size) that no longer
moves is said to be stalled where GET .../results shows it, and the task's terminate route ends it (``"target":
"previews"`` or ``"zip"``), as a repeat removal or search (tests/unit/test_repeat_runs.py, whose management API
double this reuses).

Why: both are orchestrations (``orchestrations.rerender``, ``orchestrations.results_zip``), so on Azure an action the
Durable extension drops leaves one Running for ever (devhost README rows 45 and 47), and each holds its one instance
id per task: a stalled re-render refused every later one 409 "wait until it completed", and a stalled zip build kept
the results answering ``zip: building`` for ever, ``?zip=rebuild`` included, with no way out but the Durable
management API's system key.
"""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from adapters import clients
from api import after_task
from core import stall
from core.ids import rerender_instance_id, results_zip_instance_id
from core.settings import Settings
from tests.unit.test_repeat_runs import (TASK, Extension, _hub, _instance, _now, _terminate,  # noqa: F401
                                         served_results_are_the_tasks_own)  # autouse: no storage read here

RERENDER, ZIP = rerender_instance_id(TASK), results_zip_instance_id(TASK)


def _with_runs(rerender: tuple[str, datetime] | None = None, zip_build: tuple[str, datetime] | None = None,
               **options: Any) -> Extension:
    """A completed task with its re-render and zip build as given (runtime, last update), of the task's own results."""
    hub = _hub(**options)
    if rerender is not None:
        hub.instances[RERENDER] = _instance(RERENDER, "rerender_previews", rerender[0], {
            "stage": "publishing", "key": TASK, "started": "2026-12-07T08:00:00+00:00", "threshold": 0.3, "csv": {},
            "previews": {}}, rerender[1], {"task_id": TASK, "threshold": 0.3, "variants": [""]})
    if zip_build is not None:
        hub.instances[ZIP] = _instance(ZIP, "zip_results", zip_build[0], None, zip_build[1], {"task_id": TASK})
    return hub


def _results(hub: Extension, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``extend_results`` adds to GET .../results (the zip's files above its size, not yet zipped)."""
    building = {"files": 9, "files_bytes": 10**10, "above_bytes": 1, "state": "building", "hint": "GET again"}
    monkeypatch.setattr(after_task, "_zip_state", lambda store, s, key: (dict(building), True, ""))
    answer: dict[str, Any] = {"results": {}, "links": {}}
    settings = Settings.from_env({"AzureWebJobsStorage": "x"})
    asyncio.run(after_task.extend_results(hub, settings, None, TASK, {}, answer))  # type: ignore[arg-type]
    return answer


def test_a_quiet_running_rerender_and_zip_build_are_said_stalled_with_what_to_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: previews.rerender showed 'publishing' and the zip 'building' ("GET this again in a minute") for ever."""
    from tests.openapi_answers import undescribed

    quiet = _now() - timedelta(hours=3)
    hub = _with_runs(("Running", quiet), ("Running", quiet))
    answer = _results(hub, monkeypatch)
    rerender, zipped = answer["previews"]["rerender"], answer["zip"]
    assert rerender["updated"] == quiet.isoformat() and rerender["stalled"]["since"] == quiet.isoformat(), rerender
    assert f'POST /api/tasks/{TASK}/terminate {{"target": "previews"}}' in rerender["stalled"]["hint"]
    assert f"POST /api/tasks/{TASK}/previews with the same threshold" in rerender["stalled"]["hint"]
    assert zipped["state"] == "building" and zipped["stalled"]["since"] == quiet.isoformat(), zipped
    assert f'POST /api/tasks/{TASK}/terminate {{"target": "zip"}}' in zipped["stalled"]["hint"]
    assert zipped["hint"] == zipped["stalled"]["hint"] and "a minute" not in zipped["hint"], zipped
    assert hub.terminates == [] and ZIP in hub.instances  # nothing ended or started by a GET
    described = {"id": TASK, "stage": "completed", "previews": answer["previews"], "zip": zipped,
                 "results": {"container": "c", "blob": "b"}}
    assert undescribed("Results", described) == []


def test_a_moving_rerender_or_zip_build_is_not_stalled_and_a_terminated_rerender_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = _now() - timedelta(minutes=2)
    answer = _results(_with_runs(("Running", fresh), ("Running", fresh)), monkeypatch)
    assert answer["previews"]["rerender"]["updated"] == fresh.isoformat()
    assert "stalled" not in answer["previews"]["rerender"] and "stalled" not in answer["zip"], answer
    assert answer["zip"]["hint"] == "GET again"
    answer = _results(_with_runs(("Terminated", fresh), ("Running", fresh)), monkeypatch)
    assert answer["previews"]["rerender"]["stage"] == "terminated", answer["previews"]


def test_a_stalled_rerender_refusing_the_next_says_to_terminate_it_not_to_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: 409 "wait until it completed" for a re-render that never completes."""
    monkeypatch.setattr(after_task, "parse_rerender", lambda body: 0.3)
    monkeypatch.setattr(clients, "settings", lambda: Settings.from_env({"AzureWebJobsStorage": "x"}))
    monkeypatch.setattr(clients, "store", lambda s=None: None)
    monkeypatch.setattr(after_task, "served_key", lambda store, container, task_id: task_id)
    handler = after_task.post_previews._function.get_user_function().__wrapped__
    for updated, said in ((_now() - timedelta(hours=3), '{"target": "previews"}'),
                          (_now(), "wait until it completed")):
        req = func.HttpRequest("POST", f"http://h/api/tasks/{TASK}/previews", body=b'{"threshold": 0.3}',
                               route_params={"task_id": TASK}, headers={"content-type": "application/json"})
        response = asyncio.run(handler(req, _with_runs(("Running", updated))))
        body = json.loads(response.get_body())
        assert response.status_code == 409 and said in body["hint"], body
        assert ("stalled" in body["error"]) == (said != "wait until it completed"), body


@pytest.mark.parametrize("at_once", [False, True])
@pytest.mark.parametrize("target, instance, said", [
    ("previews", RERENDER, f"POST /api/tasks/{TASK}/previews with the same threshold"),
    ("zip", ZIP, f"GET /api/tasks/{TASK}/results again, which starts a new build")])
def test_a_running_rerender_or_zip_build_is_terminated_and_told_how_to_start_again(
        target: str, instance: str, said: str, at_once: bool) -> None:
    """Before: the route refused the target (400: not one of task, removal, search)."""
    quiet = _now() - timedelta(hours=3)
    hub = _with_runs(("Running", quiet), ("Running", quiet), at_once=at_once)
    status, body = _terminate(hub, {"target": target})
    assert status == 202, body
    assert body["terminated"] is True and body["target"] == target, body
    assert body["status_url"] == f"http://h/api/tasks/{TASK}/results"
    assert hub.terminated() == [(instance, f"terminated through POST /api/tasks/{TASK}/terminate (target {target})")]
    assert f"GET /api/tasks/{TASK}/results" in body["hint"] and said in body["hint"], body
    from tests.openapi_answers import undescribed

    assert undescribed("TerminateAnswer", body) == []


@pytest.mark.parametrize("target", ["previews", "zip"])
def test_no_rerender_or_zip_build_running_answers_409_pointing_at_the_results(target: str) -> None:
    hub = _with_runs(("Completed", _now()), ("Failed", _now()))
    status, body = _terminate(hub, {"target": target})
    assert status == 409 and "is running" in body["error"] and hub.terminates == [], body
    assert f"GET /api/tasks/{TASK}/results" in body["hint"] and "/repeats" not in body["hint"], body


def test_their_stall_hints_name_their_own_route() -> None:
    now = _now()
    for target, again in (("previews", f"POST /api/tasks/{TASK}/previews"), ("zip", f"GET /api/tasks/{TASK}/results")):
        note = stall.repeat_stalled(target, TASK, now, now - timedelta(hours=3))
        assert note is not None and again in note["hint"] and f'{{"target": "{target}"}}' in note["hint"], note
        assert "/repeats" not in note["hint"], note


@pytest.mark.parametrize("quiet", [False, True])
def test_a_rerender_of_replaced_results_that_blocks_the_next_says_how_to_end_it(
        quiet: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET .../results shows the served generation's re-render only (previews.rerender null for another's), but a
    re-render of the results a re-run has replaced since still holds the instance id. Before: refused 409 "wait until
    it completed (GET .../results)", which never showed it; stalled, a hint to wait until GET .../results showed it
    'terminated'. As a removal's (tests/unit/test_repeat_runs.py)."""
    monkeypatch.setattr(after_task, "parse_rerender", lambda body: 0.3)
    monkeypatch.setattr(clients, "settings", lambda: Settings.from_env({"AzureWebJobsStorage": "x"}))
    monkeypatch.setattr(clients, "store", lambda s=None: None)
    monkeypatch.setattr(after_task, "served_key", lambda store, container, task_id: f"{task_id}/runs/r2")
    handler = after_task.post_previews._function.get_user_function().__wrapped__
    updated = _now() - (timedelta(hours=3) if quiet else timedelta(minutes=2))
    req = func.HttpRequest("POST", f"http://h/api/tasks/{TASK}/previews", body=b'{"threshold": 0.3}',
                           route_params={"task_id": TASK}, headers={"content-type": "application/json"})
    response = asyncio.run(handler(req, _with_runs(("Running", updated))))
    body = json.loads(response.get_body())
    assert response.status_code == 409 and "a re-run has replaced since" in body["error"], body
    assert f'POST /api/tasks/{TASK}/terminate {{"target": "previews"}}' in body["hint"], body
    assert "shows it 'terminated'" not in body["hint"] and "wait until it completed" not in body["hint"], body
    assert ("stalled" in body["error"]) == quiet, body


def test_a_terminated_rerender_of_replaced_results_is_not_said_to_show_on_get_results(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """GET .../results shows the served results' re-render only (api.repeat_runs ``unshown_run``): the 202 for one of
    results a re-run has replaced since says the route does not show it, as a removal's (tests/unit/
    test_repeat_runs.py). Fails without the change."""
    from api import repeat_runs

    async def served(task_id: str) -> str:
        return f"{task_id}/runs/r2"

    monkeypatch.setattr(repeat_runs, "_served_key", served)
    status, body = _terminate(_with_runs(("Running", _now() - timedelta(hours=3))), {"target": "previews"})
    assert status == 202, body
    assert f"which GET /api/tasks/{TASK}/results does not show" in body["hint"], body
    assert f"POST /api/tasks/{TASK}/previews)" in body["hint"] and "with the same threshold" not in body["hint"], body
