"""A repeat removal or repeat search run after a task that no longer moves is said to be stalled, and an operator ends
it through the task's terminate route (``"target"``), as a task's own run.

Why: both are orchestrations, so on Azure an action the Durable extension drops leaves one Running for ever (devhost
README rows 45 and 47), and while one runs no other removal or search of the task may start (``api.repeat_search.
ensure_idle``): GET .../repeats showed it "merging" for ever, every new removal or search was refused 409 "wait until
it completed", and the terminate route answered for the task's run only. The SDK's real client is driven, its
management API answered as the extension answers it (tests/unit/test_api_terminate.py says how).
"""
from __future__ import annotations

import ast
import asyncio
import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.durable_functions as df
import azure.functions as func
import pytest

from adapters import clients
from api import repeat_runs, repeat_search, starters
from core import stall
from core.contracts import Stage
from core.errors import RepeatsBusy
from core.ids import repeat_search_instance_id, repeats_instance_id
from core.requests import TERMINATE_TARGETS
from core.settings import OrchestrationKnobs
from devhost.http_server import binding_json

ROOT = Path(__file__).resolve().parents[2]
TASK = "task-0123456789abcdef0123"
REMOVAL, SEARCH = repeats_instance_id(TASK), repeat_search_instance_id(TASK)
FINISHED = ("Completed", "Failed", "Terminated")
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


SERVED_KEY = getattr(repeat_runs, "_served_key", None)  # the route's own, which the fixture below replaces


@pytest.fixture(autouse=True)
def served_results_are_the_tasks_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """No storage here: the terminate's read of the served results (``repeat_runs._served_key``) finds the task's own
    (a test of a re-run's served results patches it again)."""
    async def served(task_id: str) -> str:
        return task_id

    monkeypatch.setattr(repeat_runs, "_served_key", served, raising=False)


# ---------------------------------------------------------------- the bounds are the code's own


def _orchestration_imports(module: str) -> set[Path]:
    """The files of ``module`` and of every ``orchestrations`` module it imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = ROOT / (todo.pop().replace(".", "/") + ".py")
        if path in seen or not path.exists():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("orchestrations"):
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]
    return seen


@pytest.mark.parametrize("module", ["orchestrations.repeats", "orchestrations.repeat_search",
                                    "orchestrations.rerender", "orchestrations.results_zip"])
def test_the_repeat_orchestrations_wait_on_nothing_but_their_steps_retries(module: str) -> None:
    """``core.stall.repeat_quiet_limit_s`` knows one timer, a busy retry's (``retries.BUSY_MAX_DELAY_S``, pinned in
    test_stall): a timer, an event wait or a sub-orchestration added to any run after a task (or to what it calls:
    the fan-in, the exports) must be added there too, or a run waiting on it would be called stalled. The re-render
    and the zip build are judged so too (``core.stall.AFTER_TASK_RUNS``)."""
    files = _orchestration_imports(module)
    assert ROOT / "orchestrations" / "retries.py" in files
    assert ROOT / "orchestrations" / "fanin.py" in files or not module.endswith("repeats")
    waits = {p.name: [w for w in ("create_timer(", "wait_for_external_event(", "call_sub_orchestrator(",
                                  "continue_as_new(") if w in p.read_text()] for p in files}
    assert {name: found for name, found in waits.items() if found} == {"retries.py": ["create_timer("]}


def test_a_repeat_run_is_judged_as_a_tasks_working_stage() -> None:
    limit = stall.repeat_quiet_limit_s()
    assert limit == stall.quiet_limit_s(Stage.merging, OrchestrationKnobs())
    assert stall.repeat_stalled("removal", TASK, NOW, NOW - timedelta(seconds=limit)) is None
    assert stall.repeat_stalled("removal", TASK, NOW, None) is None
    note = stall.repeat_stalled("removal", TASK, NOW, NOW - timedelta(seconds=limit + 1))
    assert note is not None and note["seconds"] == int(limit + 1) and note["limit_seconds"] == int(limit)
    assert f'POST /api/tasks/{TASK}/terminate {{"target": "removal"}}' in note["hint"]
    assert f"POST /api/tasks/{TASK}/repeats with the same \"keep\" or \"remove\"" in note["hint"]
    assert "durabletask" not in note["hint"] and "code=" not in note["hint"]
    search = stall.repeat_stalled("search", TASK, NOW, NOW - timedelta(hours=3))
    assert search is not None and '{"target": "search"}' in search["hint"]
    assert f"POST /api/tasks/{TASK}/repeats/search" in search["hint"]


def test_every_repeat_target_has_its_instance_and_its_words() -> None:
    assert set(stall.AFTER_TASK_RUNS) == set(repeat_runs.INSTANCE_IDS) == set(TERMINATE_TARGETS) - {"task"}
    assert set(stall.REPEAT_RUNS) == {"removal", "search"}


# ---------------------------------------------------------------- the management API, as the extension answers it


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")  # as the extension answers it: whole seconds (devhost row 34)


class Extension(df.DurableOrchestrationClient):
    """The SDK's client over several instances (by id), answered as the extension answers: a status read 200/202,
    404 for none; a terminate 404 for none, 410 Gone for a finished one, else 202 (the instance still Running, or,
    with ``at_once``, Terminated at once). ``ends_at_terminate``: the instance ends so just before it arrives."""

    def __init__(self, instances: dict[str, dict[str, Any]], at_once: bool = False,
                 ends_at_terminate: str = "") -> None:
        super().__init__(binding_json("http://127.0.0.1:7071", "hub"))
        self.instances = instances
        self.terminates: list[str] = []

        def instance_of(url: str) -> str:
            return urlsplit(url).path.split("/instances/", 1)[1].split("/")[0]

        async def get(url: str) -> list[Any]:
            found = self.instances.get(instance_of(url))
            if found is None:
                return [404, ""]
            return [200 if found["runtimeStatus"] in FINISHED else 202, dict(found)]

        async def post(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
            assert "/terminate?reason=" in url, url
            self.terminates.append(url)
            found = self.instances.get(instance_of(url))
            if found is None:
                return [404, None]
            if ends_at_terminate:
                found["runtimeStatus"] = ends_at_terminate
            if found["runtimeStatus"] in FINISHED:
                return [410, None]
            if at_once:
                found["runtimeStatus"] = "Terminated"
            return [202, None]

        self._get_async_request = get
        self._post_async_request = post

    def terminated(self) -> list[tuple[str, str]]:
        """(instance id, reason) of each terminate sent."""
        return [(urlsplit(u).path.split("/instances/", 1)[1].split("/")[0], parse_qs(urlsplit(u).query)["reason"][0])
                for u in self.terminates]


def _instance(instance_id: str, name: str, runtime: str, custom: dict[str, Any] | None, updated: datetime,
              inputs: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "instanceId": instance_id, "runtimeStatus": runtime, "createdTime": "2026-01-01T00:00:00Z",
            "lastUpdatedTime": _stamp(updated), "input": json.dumps(inputs), "output": None, "customStatus": custom}


def _hub(removal: tuple[str, dict[str, Any] | None, datetime] | None = None,
         search: tuple[str, dict[str, Any] | None, datetime] | None = None, owner: str = "",
         **options: Any) -> Extension:
    """A completed task, and its removal and search as given (runtime, custom status, last update)."""
    instances = {TASK: _instance(TASK, "task_orchestrator", "Completed", {"stage": "completed"}, NOW,
                                 {"task_id": TASK, "request": {}, **({"owner": owner} if owner else {})})}
    if removal is not None:
        instances[REMOVAL] = _instance(REMOVAL, "remove_repeats", removal[0], removal[1], removal[2],
                                       {"task_id": TASK, "remove": ["r00001"], "search": "merge"})
    if search is not None:
        instances[SEARCH] = _instance(SEARCH, "search_repeats_again", search[0], search[1], search[2],
                                      {"task_id": TASK, "search": "s1", "options": {}})
    return Extension(instances, **options)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# ---------------------------------------------------------------- GET /api/tasks/{id}/repeats


def _call(route: Any, hub: Extension, method: str, path: str, body: bytes = b"",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """``route`` (a registered HTTP function) called as the host would, under ``http_edge``: status and JSON body."""
    handler = route._function.get_user_function().__wrapped__  # http_edge(route)
    req = func.HttpRequest(method, f"http://h/api/tasks/{TASK}{path}", body=body, route_params={"task_id": TASK},
                           headers={"content-type": "application/json", **(headers or {})})
    response = asyncio.run(handler(req, hub))
    return response.status_code, json.loads(response.get_body())


def _repeats(hub: Extension, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    found = {"locations": [{"id": "r00001"}], "options": {}, "search": "merge"}
    monkeypatch.setattr(starters, "_served_repeats", lambda s, task_id: (TASK, found))  # no storage here
    monkeypatch.setattr(clients, "settings", lambda: None)
    code, body = _call(starters.task_repeats, hub, "GET", "/repeats")
    assert code == 200, body
    return body


def test_a_quiet_running_removal_and_search_are_said_stalled_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: neither carried ``updated`` nor ``stalled``; a removal the extension left Running showed 'merging'
    for ever."""
    quiet = _now() - timedelta(hours=3)
    shown = _repeats(_hub(("Running", {"stage": "merging", "locations": 1}, quiet),
                          ("Running", {"stage": "searching", "search": "s1"}, quiet)), monkeypatch)
    for key, target in (("removal", "removal"), ("searching", "search")):
        run = shown[key]
        assert run["updated"] == quiet.isoformat(), run
        assert run["stalled"]["since"] == quiet.isoformat() and run["stalled"]["seconds"] >= 3 * 3600, run
        assert f'POST /api/tasks/{TASK}/terminate {{"target": "{target}"}}' in run["stalled"]["hint"]


def test_a_moving_or_ended_repeat_run_is_not_stalled_and_a_terminated_one_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fresh, long_ago = _now() - timedelta(minutes=2), _now() - timedelta(days=2)
    shown = _repeats(_hub(("Running", {"stage": "merging"}, fresh),
                          ("Completed", {"stage": "completed", "search": "s1", "locations": 0}, long_ago)),
                     monkeypatch)
    assert shown["removal"]["updated"] == fresh.isoformat() and "stalled" not in shown["removal"]
    assert shown["searching"]["updated"] == long_ago.isoformat() and "stalled" not in shown["searching"]
    # a terminated run's custom status still names the stage it was in: shown as 'terminated', never stalled
    shown = _repeats(_hub(("Terminated", {"stage": "merging"}, long_ago),
                          ("Terminated", {"stage": "searching", "search": "s1"}, long_ago)), monkeypatch)
    for key in ("removal", "searching"):
        assert shown[key]["stage"] == "terminated" and shown[key]["runtime_status"] == "Terminated", shown[key]
        assert "stalled" not in shown[key]


def test_a_stalled_run_that_refuses_a_new_removal_or_search_says_to_terminate_it_not_to_wait() -> None:
    """Before: "wait until GET .../repeats shows it completed, then retry", for a run that never completes."""
    note = stall.repeat_stalled("search", TASK, NOW, NOW - timedelta(hours=3))
    with pytest.raises(RepeatsBusy) as raised:
        repeat_search.ensure_idle(TASK, None, {"runtime_status": "Running", "search": "s1", "stalled": note})
    assert "stalled" in raised.value.message and '{"target": "search"}' in raised.value.hint
    note = stall.repeat_stalled("removal", TASK, NOW, NOW - timedelta(hours=3))
    with pytest.raises(RepeatsBusy) as raised:
        repeat_search.ensure_idle(TASK, {"runtime_status": "Running", "stalled": note}, None)
    assert '{"target": "removal"}' in raised.value.hint
    with pytest.raises(RepeatsBusy) as raised:  # one that moves: wait, as before
        repeat_search.ensure_idle(TASK, {"runtime_status": "Running"}, None)
    assert raised.value.hint.startswith("wait until")


# ---------------------------------------------------------------- POST /api/tasks/{id}/terminate {"target": ...}


def _terminate(hub: Extension, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    return _call(starters.terminate_task, hub, "POST", "/terminate", b"" if body is None else json.dumps(body).encode(),
                 headers)


@pytest.mark.parametrize("at_once", [False, True])
@pytest.mark.parametrize("target, instance, stage", [("removal", REMOVAL, "merging"),
                                                     ("search", SEARCH, "searching")])
def test_a_running_repeat_run_is_terminated_and_told_how_to_start_again(target: str, instance: str, stage: str,
                                                                         at_once: bool) -> None:
    """Before: the route read the task (Completed) and answered 409 "not running": a stalled removal or search had
    no way out but the Durable management API's system key."""
    quiet = _now() - timedelta(hours=3)
    hub = _hub(("Running", {"stage": "merging"}, quiet), ("Running", {"stage": "searching"}, quiet), at_once=at_once)
    status, body = _terminate(hub, {"target": target})
    assert status == 202, body
    assert body["terminated"] is True and body["target"] == target and body["stage"] == stage, body
    assert body["status_url"] == f"http://h/api/tasks/{TASK}/repeats"
    assert hub.terminated() == [(instance, f"terminated through POST /api/tasks/{TASK}/terminate (target {target})")]
    assert f"GET /api/tasks/{TASK}/repeats" in body["hint"] and "'terminated'" in body["hint"]
    assert (f"POST /api/tasks/{TASK}/repeats with the same" if target == "removal" else
            f"POST /api/tasks/{TASK}/repeats/search") in body["hint"]


def test_the_task_itself_stays_the_default_target() -> None:
    status, body = _terminate(_hub(("Running", {"stage": "merging"}, NOW)), {"target": "task"})
    assert status == 409 and "is not running (stage: completed)" in body["error"], body  # the task's own answer


@pytest.mark.parametrize("removal", [None, ("Completed", {"stage": "completed"}, NOW),
                                     ("Terminated", {"stage": "merging"}, NOW)])
def test_no_repeat_run_running_answers_409_and_terminates_nothing(removal: Any) -> None:
    hub = _hub(removal)
    status, body = _terminate(hub, {"target": "removal"})
    assert status == 409 and f"no repeat removal of task {TASK} is running" in body["error"], body
    assert f"GET /api/tasks/{TASK}/repeats" in body["hint"] and hub.terminates == []


def test_a_repeat_run_that_ended_by_itself_just_before_the_terminate_answers_409() -> None:
    hub = _hub(search=("Running", {"stage": "publishing"}, NOW), ends_at_terminate="Completed")
    status, body = _terminate(hub, {"target": "search"})
    assert status == 409 and "ended by itself before the terminate" in body["error"], body


def test_a_bad_target_or_reason_is_refused_400_with_nothing_sent() -> None:
    for bad, said in [({"target": "repeats"}, "'target' must be one of task, removal, search"),
                      ({"target": 1}, "'target' must be one of"),
                      ({"target": "removal", "reason": "a\nb"}, "control characters")]:
        hub = _hub(("Running", {"stage": "merging"}, NOW))
        status, body = _terminate(hub, bad)
        assert status == 400 and said in body["error"], (bad, body)
        assert hub.terminates == []


def _principal(oid: str) -> dict[str, str]:
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid}]
    raw = json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}).encode()
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(raw).decode(), "X-MS-CLIENT-PRINCIPAL-ID": oid}


def test_with_easyauth_only_the_tasks_owner_may_terminate_its_repeat_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task's owner rules (its input's owner), and the reason names who ended it, as for the task's run."""
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("TRAPBATCH_CALLER_AUTH", "easyauth")
    hub = _hub(("Running", {"stage": "merging"}, NOW), owner="ana-oid")
    status, body = _terminate(hub, {"target": "removal"}, headers=_principal("bo-oid"))
    assert status == 403 and hub.terminates == [], body
    status, body = _terminate(hub, {"target": "removal", "reason": "stuck"}, headers=_principal("ana-oid"))
    assert status == 202 and hub.terminated() == [(REMOVAL, "stuck (by ana-oid)")], body


def test_a_stalled_removal_refusing_a_re_render_says_to_terminate_it_not_to_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A running removal refuses a re-render (POST .../previews, 409 "wait until it completed"), which a stalled one
    never does: the hint is then the removal's stalled hint."""
    from api import after_task

    monkeypatch.setattr(after_task, "parse_rerender", lambda body: 0.3)
    monkeypatch.setattr(clients, "settings", lambda: type("S", (), {"container": "c"}))  # the served results: the
    monkeypatch.setattr(clients, "store", lambda s: None)                                # task's own
    monkeypatch.setattr(after_task, "served_key", lambda store, container, task_id: task_id)
    for updated, said in ((_now() - timedelta(hours=3), '{"target": "removal"}'), (_now(), "wait until it completed")):
        hub = _hub(("Running", {"stage": "merging"}, updated))
        code, body = _call(after_task.post_previews, hub, "POST", "/previews", b'{"threshold": 0.3}')
        assert code == 409 and said in body["hint"], body
        assert ("stalled" in body["error"]) == (said != "wait until it completed"), body


# ---------------------------------------------------------------- a run of results a re-run has replaced since


class Starting(Extension):
    """``Extension`` that also answers a start as the extension does: 202 with the id, or an error answer for an id
    still running or pending (``OverridableExistingInstanceStates``, devhost README row 1), which the SDK raises."""

    def __init__(self, instances: dict[str, dict[str, Any]]) -> None:
        super().__init__(instances)
        self.started: list[str] = []
        terminate = self._post_async_request

        async def post(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
            if "/orchestrators/" not in url:
                return list(await terminate(url, data, *args, **kwargs))
            instance = url.rsplit("/", 1)[1]
            found = self.instances.get(instance)
            if found is not None and found["runtimeStatus"] in ("Running", "Pending"):
                return [500, f"An Orchestration instance with the ID '{instance}' already exists."]
            self.started.append(instance)
            return [202, {"id": instance}]

        self._post_async_request = post


def _replaced_generation_hub(updated: datetime, target: str) -> Starting:
    """A completed task whose served results are a re-run's (``SERVED``); its ``target`` run of the results before
    (the task's own key) still Running since ``updated``."""
    hub = _hub(*((("Running", {"stage": "merging"}, updated), None) if target == "removal" else
                 (None, ("Running", {"stage": "searching", "search": "s1"}, updated))))
    return Starting(hub.instances)


SERVED = f"{TASK}/runs/r2"


@pytest.mark.parametrize("target", ["removal", "search"])
@pytest.mark.parametrize("quiet", [False, True])
def test_a_run_of_replaced_results_that_blocks_a_new_one_says_how_to_end_it(
        target: str, quiet: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET .../repeats shows the served generation's removal and search only, but a run of the results a re-run has
    replaced still holds the instance id: a new removal or search is refused (409) until it ends. Before: the removal
    was refused "wait until it completed (GET .../repeats)", which never showed it, and a stalled one never ends; a
    stalled search's hint said to wait until GET .../repeats showed it 'terminated'."""
    from api import after_task, repeat_search as search_route

    found = {"locations": [{"id": "r00001"}], "options": {}, "search": "merge"}
    monkeypatch.setattr(starters, "_served_repeats", lambda s, task_id: (SERVED, found))
    monkeypatch.setattr(search_route, "served_key", lambda store, container, task_id: SERVED)
    monkeypatch.setattr(clients, "settings", lambda: type("S", (), {"container": "c", "knobs": OrchestrationKnobs()}))
    monkeypatch.setattr(clients, "store", lambda s: None)

    async def labels(*args: Any) -> tuple[str, str]:
        return "MDV5A", ""

    monkeypatch.setattr(starters, "page_labels", labels)
    assert after_task  # (imported for its routes' registration only)
    updated = _now() - (timedelta(hours=3) if quiet else timedelta(minutes=2))
    hub = _replaced_generation_hub(updated, target)
    if target == "removal":
        code, body = _call(starters.task_repeats, hub, "POST", "/repeats", b'{"remove": ["r00001"]}')
    else:
        code, body = _call(search_route.post_repeat_search, hub, "POST", "/repeats/search", b"{}")
    assert code == 409 and hub.started == [], body
    assert "a re-run has replaced since" in body["error"], body
    assert f'POST /api/tasks/{TASK}/terminate {{"target": "{target}"}}' in body["hint"], body
    assert "shows it 'terminated'" not in body["hint"] and "wait until it completed" not in body["hint"], body
    assert ("stalled" in body["error"]) == quiet, body
    # the served generation's GET shows neither
    _, shown = _call(starters.task_repeats, _replaced_generation_hub(updated, target), "GET", "/repeats")
    assert shown["removal"] is None and shown["searching"] is None, shown


def test_a_terminate_that_ends_a_run_started_after_the_one_it_read_says_so() -> None:
    """The route reads the run, then terminates the instance id, which names whichever run holds it then: should the
    run read end by itself in between and another removal start (the id is free again once it ended), the terminate
    ends the new one. The extension's terminate takes no condition on the execution, so the answer must say what was
    ended: 409 naming the new one, as the task's route answers (api.starters ``_replaced_meanwhile``). Before: 202
    with the stage of the run read and "send the same choice again", as though the run read had been terminated."""
    quiet = _now() - timedelta(hours=3)
    hub = _hub(("Running", {"stage": "merging"}, quiet))
    terminate = hub._post_async_request

    async def post(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
        # the removal read ends, and a new one starts under its id, just before the terminate arrives
        hub.instances[REMOVAL].update(createdTime=_stamp(_now()), lastUpdatedTime=_stamp(_now()),
                                      customStatus={"stage": "starting"})
        return list(await terminate(url, data, *args, **kwargs))

    hub._post_async_request = post
    status, body = _terminate(hub, {"target": "removal"})
    assert status == 409 and hub.terminated()[0][0] == REMOVAL, body
    assert "ended by itself" in body["error"] and "took its place" in body["error"], body
    assert f"GET /api/tasks/{TASK}/repeats shows it" in body["hint"], body
    assert f'POST /api/tasks/{TASK}/terminate {{"target": "removal"}} again' in body["hint"], body


# ---------------------------------------------------------------- GET /api/tasks/{id} points at a stalled one


def _task_status(hub: Extension) -> dict[str, Any]:
    hub.instances[TASK]["customStatus"] = {"stage": "completed", "repeated_detections": {"locations": 1,
                                                                                         "blob": "r.json"}}
    code, body = _call(starters.get_task, hub, "GET", "")
    assert code == 200, body
    return body


@pytest.mark.parametrize("target", ["removal", "search"])
def test_the_tasks_status_points_at_a_stalled_removal_or_search(target: str, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A finished task's status (and trapbatch status) said nothing of a removal or search that may never end, which
    refuses every later one: GET .../repeats alone said so. Now repeated_detections.stalled names it, with where to
    look, and the CLI shows it in its words."""
    from cli import main as cli_main
    from tests.openapi_answers import undescribed

    monkeypatch.setattr(clients, "settings", lambda: type("S", (), {"container": "c"}))
    monkeypatch.setattr(clients, "store", lambda s=None: type("Store", (), {
        "read_json_or_none": lambda self, container, name: {"search": "s1", "locations": []}})())
    quiet = _now() - timedelta(hours=3)
    run = ("Running", {"stage": "merging" if target == "removal" else "searching", "search": "s1"}, quiet)
    status = _task_status(_hub(*((run, None) if target == "removal" else (None, run))))
    pointer = status["repeated_detections"]["stalled"]
    assert pointer["target"] == target and pointer["since"] == quiet.isoformat(), pointer
    assert f"GET /api/tasks/{TASK}/repeats" in pointer["hint"], pointer
    assert f'POST /api/tasks/{TASK}/terminate {{"target": "{target}"}}' in pointer["hint"], pointer
    assert undescribed("TaskStatus", status) == []
    assert "stalled" not in _task_status(_hub(("Running", {"stage": "merging"}, _now())))["repeated_detections"]

    class Client:
        def status(self, task_id: str) -> dict[str, Any]:
            return status

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["status", TASK]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "STALLED" in said and f"trapbatch terminate {TASK} --target {target}" in said, said


@pytest.mark.parametrize("target", ["removal", "search"])
def test_a_terminated_run_of_replaced_results_is_not_said_to_show_on_get_repeats(
        target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET .../repeats shows the served results' removal and search only (api.repeat_runs ``unshown_run``); the 202
    for one of results a re-run has replaced since said "GET .../repeats shows it" and to send the choice or the
    search again, as though of the served results. It now says the route does not show it, when a new one may start,
    and that the served results are unchanged; with the served results unreadable it says it may not show it. Fails
    without the change."""
    async def served(task_id: str) -> str:
        return SERVED

    monkeypatch.setattr(repeat_runs, "_served_key", served)
    quiet = _now() - timedelta(hours=3)
    hub = _replaced_generation_hub(quiet, target)
    status, body = _terminate(hub, {"target": target})
    assert status == 202 and body["target"] == target, body
    hint = body["hint"]
    assert f"GET /api/tasks/{TASK}/repeats shows it" not in hint, hint
    assert f"a re-run has replaced since, which GET /api/tasks/{TASK}/repeats does not show" in hint, hint
    assert "never seen 'terminated' there" in hint and "refused 409 until then" in hint, hint
    assert "the served results are unchanged" in hint, hint

    async def unreadable(task_id: str) -> None:
        return None

    monkeypatch.setattr(repeat_runs, "_served_key", unreadable)
    status, body = _terminate(_replaced_generation_hub(quiet, target), {"target": target})
    assert status == 202, body
    assert (f"GET /api/tasks/{TASK}/repeats shows it, unless it was of results a re-run has replaced since"
            in body["hint"]), body


def test_the_served_results_read_after_a_terminate_failing_leaves_the_202(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminate is made when the served results are read: a failure there (storage, settings) is no error
    answer, but "not known" (None)."""
    def unavailable() -> None:
        raise RuntimeError("storage unavailable")

    monkeypatch.setattr(clients, "settings", unavailable)
    assert SERVED_KEY is not None and asyncio.run(SERVED_KEY(TASK)) is None
