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


class _MarkerStore:
    """A store whose cancel marker is written over nothing (``update_json`` with none there)."""

    def update_json(self, container: str, name: str, change: Any) -> Any:
        return change(None)


def _post(route: str, client: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any]]:
    """POST /api/tasks/{TASK}/{route} (cancel, confirm) through its handler, the marker store ``_MarkerStore``."""
    monkeypatch.setattr(clients, "store", lambda s=None: _MarkerStore())
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    handler = getattr(starters, f"{route}_task")._function.get_user_function().__wrapped__
    req = func.HttpRequest("POST", f"http://h/api/tasks/{TASK}/{route}", body=b"", route_params={"task_id": TASK})
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


class RecordingClient(FakeClient):
    def __init__(self, runtime: str, stage: str) -> None:
        super().__init__(runtime, stage)
        self.status.input_ = json.dumps({"run": "r1"})
        self.events: list[tuple[str, str]] = []

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        self.events.append((instance_id, name))


@pytest.mark.parametrize("stage, event, said", [
    ("starting", True, "when its listing of the images does"), ("enumerating", True, "before any pool work"),
    ("awaiting_confirmation", True, "nothing was submitted"), ("detecting", False, "next poll")])
def test_a_cancel_before_the_pool_work_reaches_the_listing_and_the_confirmation_wait(
        stage: str, event: bool, said: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel while the images were listed wrote a marker only the shard groups' polls read: the task then waited
    six days for a confirmation, or ended 'estimated', or sent its first shards to the pool. And a confirmation that
    came just before a cancel of a waiting task left the task running with '202 nothing was submitted'."""
    from core import contracts as c
    from gpu_batch import layout

    written: list[str] = []

    class Store:
        def update_json(self, container: str, name: str, change: Any) -> Any:  # no marker there yet
            written.append(name)
            return change(None)

    monkeypatch.setattr(clients, "store", lambda s=None: Store())
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    client = RecordingClient("Running", stage)
    status, body = _cancel(client)
    assert status == 202 and body["cancel_requested"] and said in body["hint"]
    assert written == [layout.cancel_marker(layout.pool_job_id(TASK, "r1"))]
    assert client.events == ([(TASK, "cancel-r1")] if event else [])  # run r1's own (core.contracts.run_event)


def test_the_run_cancelled_is_the_one_whose_stage_was_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel read the task's stage, then, in a second status read, which run it was. Run r1, waiting for
    confirmation, terminated and resumed between the two as run r2 (still listing), had r2's marker written and the
    cancel event raised (r1's stage called for it): r2, which the caller never saw, was cancelled, while r1's marker
    (written by r2, naming it: api.cancel_marker) was never looked at. Now both come from one read: the cancel is
    r1's, finds it replaced, answers 409 and raises nothing. Fails without the change (202, r2's marker, the event)."""
    from gpu_batch import layout

    class Replaced(RecordingClient):
        """r1 awaiting confirmation at the first read; r2 listing at every later one."""

        def __init__(self) -> None:
            super().__init__("Running", "awaiting_confirmation")
            self.reads = 0

        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            if self.reads == 1:
                return self.status
            return SimpleNamespace(runtime_status=_Runtime("Running"), custom_status={"stage": "enumerating"},
                                   output=None, input_=json.dumps({"run": "r2"}))

    markers = {layout.cancel_marker(layout.pool_job_id(TASK, "r1")): {"reason": "terminated", "superseded_by": "r2"}}
    written: list[str] = []

    class Store:
        def update_json(self, container: str, name: str, change: Any) -> Any:
            new = change(markers.get(name))
            if new is not None:
                written.append(name)
            return new

    monkeypatch.setattr(clients, "store", lambda s=None: Store())
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    client = Replaced()
    status, body = _cancel(client)
    assert status == 409 and "(run r1)" in body["error"] and "run r2" in body["error"], body
    assert written == [] and client.events == []
    # the replacing run writes that marker for a run the platform failed with its work running too (api.starters
    # _ended_runs): the words say so, as activities.superseded's refusal does
    assert "was terminated (or failed with its work running) and run r2" in body["error"], body


@pytest.mark.parametrize("route", ["cancel", "confirm"])
@pytest.mark.parametrize("run, name, data", [("r1", "-r1", {"run": "r1"}), ("", "-without-id", {})])
def test_the_event_names_the_run_whose_status_was_read(route: str, run: str, name: str, data: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The event goes to the task's instance id, whose current run may have replaced the one read since the read:
    raised under the read run's own name (and data naming it), only that run waits for it (orchestrations.task
    ``_confirmed``; tests/orchestrations/test_task_orchestrator.py has the runs' side). A run without an id (started
    before runs had ids) has names of its own too (``<event>-without-id``): the plain ones, which it waits for as
    before, a run with an id that replaced it waits for as well. Fails without the change (the plain name, ``{}``,
    for any run)."""
    class Raising(FakeClient):
        def __init__(self) -> None:
            super().__init__("Running", "awaiting_confirmation")
            self.status.input_ = json.dumps({"run": run} if run else {})
            self.raised: list[tuple[str, str, Any]] = []

        async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
            self.raised.append((instance_id, name, data))

    client = Raising()
    assert _post(route, client, monkeypatch)[0] == 202
    assert client.raised == [(TASK, route + name, data)]


@pytest.mark.parametrize("route, stage", [("cancel", "awaiting_confirmation"), ("cancel", "detecting"),
                                          ("confirm", "awaiting_confirmation")])
def test_a_run_replaced_as_its_event_was_raised_is_answered_409_naming_the_run_now_running(
        route: str, stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run r1 read, then terminated and resumed as r2 before the event (or, detecting, the marker alone) reached it:
    r2 does not act on r1's event, so '202 confirmed' (or 'cancel requested') was false for the run now running. The
    answer now says r2 was not confirmed (or cancelled) and how to do it; the event raised was r1's. A status that
    cannot be read then leaves the answer as it was (the event was raised). Fails without the change (202)."""
    from core.errors import TaskHubUnavailable

    class Replacing(RecordingClient):
        """r1 at the first read; at the next, r2 (or a hub that cannot be read)."""

        def __init__(self, later: Any) -> None:
            super().__init__("Running", stage)
            self.later = later
            self.reads = 0

        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            if self.reads == 1:
                return self.status
            if isinstance(self.later, Exception):
                raise self.later
            return self.later

    def post(client: Any) -> tuple[int, dict[str, Any]]:
        return _post(route, client, monkeypatch)

    r2 = SimpleNamespace(runtime_status=_Runtime("Running"), custom_status={"stage": "enumerating"}, output=None,
                         input_=json.dumps({"run": "r2"}))
    client = Replacing(r2)
    status, body = post(client)
    assert status == 409, body
    done = "confirmed" if route == "confirm" else "cancelled"
    assert "(run r1) was replaced by run r2" in body["error"] and f"run r2 was not {done}" in body["error"], body
    assert f"POST /api/tasks/{TASK}/{route} again" in body["hint"]
    assert client.events == ([] if stage == "detecting" else [(TASK, f"{route}-r1")])

    unread = Replacing(TaskHubUnavailable("the task hub could not be read", "retry"))
    assert post(unread)[0] == 202


@pytest.mark.parametrize("route", ["cancel", "confirm"])
def test_a_task_that_ends_before_its_event_is_raised_answers_409_not_500(route: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A task awaiting confirmation that ended (its wait timed out 'expired', or it was terminated) between the
    status read and the event: the Durable extension answers the raise 410 Gone (HttpApiHandler
    HandleRaiseEventRequestAsync; devhost/http_server.py), which the SDK raises as a bare Exception, and the edge
    answered 500 "internal error ... report it". Now it says the task ended meanwhile (409). A failed raise of a task
    still running is still raised. Fails without the change (500)."""
    class Ending(RecordingClient):
        def __init__(self, ends: bool) -> None:
            super().__init__("Running", "awaiting_confirmation")
            self.ends = ends

        async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
            if self.ends:  # the wait timed out just now
                self.status = SimpleNamespace(runtime_status=_Runtime("Completed"), custom_status={"stage": "expired"},
                                              output=None, input_=self.status.input_)
                raise Exception(f"Instance with ID {instance_id} is gone: either completed or failed")
            raise Exception("Webhook returned unrecognized status code 500")

    def post(client: Any) -> tuple[int, dict[str, Any]]:
        return _post(route, client, monkeypatch)

    status, body = post(Ending(ends=True))
    assert status == 409 and "ended while the" in body["error"] and "(stage: expired)" in body["error"], body
    assert f"GET /api/tasks/{TASK}" in body["hint"]
    status, body = post(Ending(ends=False))
    assert status == 500, body
