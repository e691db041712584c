"""``GET /api/tasks/{id}`` answers only what its OpenAPI description (api/openapi.py ``TaskStatus``) says, field for
field and type for type, at every stage.

Why: the handler passes the task orchestration's custom status on whole (``api.starters._describe``), so every key
an orchestrator puts in it is an answer field; the description gave about a third of them (``started``, ``finished``,
``failed``, ``previews``, ``repeated_detections``, ``pool_job_error``... were missing), so a client generated from it
dropped them and a validator with ``additionalProperties: false`` refused the answer.

The answers checked are real ones: every custom status the task orchestrator set in the orchestration tests
(tests/orchestrations/test_task_orchestrator.py, test_generations.py and test_status_sizes.py, whose worst cases
hold every block at its largest, run here again with the harness recording each run), each shown as the API shows it
(the real ``get_task`` handler: while running, once it ended Completed or Failed, and terminated; a detecting task
with its shard groups' own statuses summed). They are validated against the description made strict
(tests/openapi_answers.py: every object the description gives properties for takes no other property). A field
added to a status without its description, or a value of another type than described, fails here.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
import json
from enum import Enum
from types import SimpleNamespace
from typing import Any, get_type_hints
from unittest import mock

import azure.functions as func
import pytest
from _pytest.mark.structures import ParameterSet

from adapters import clients
from api import openapi, starters
from core import contracts as c
from core.ids import shards_instance_id
from core.repeats import RepeatOptions
from tests.openapi_answers import undescribed
from tests.orchestrations import replay

# The orchestration tests whose task runs are shown through the API (module docstring).
SCENARIO_MODULES = ("tests.orchestrations.test_task_orchestrator", "tests.orchestrations.test_generations",
                    "tests.orchestrations.test_status_sizes")


def _combinations(fn: Any) -> list[dict[str, Any]]:
    """The keyword arguments of each case of a test function's ``pytest.mark.parametrize`` marks."""
    cases: list[dict[str, Any]] = [{}]
    for mark in getattr(fn, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names = [n.strip() for n in mark.args[0].split(",")] if isinstance(mark.args[0], str) else list(mark.args[0])
        values = [v.values if isinstance(v, ParameterSet) else (v if len(names) > 1 else (v,)) for v in mark.args[1]]
        cases = [{**case, **dict(zip(names, value))} for case, value in itertools.product(cases, values)]
    return cases


def recorded_runs(modules: tuple[str, ...] = SCENARIO_MODULES) -> list[tuple[replay.Run, Any]]:
    """Every orchestration run (with its input) the test functions of ``modules`` make, each case of each one.

    Their test functions are called with ``Harness.run`` recording, ``monkeypatch`` given where one takes it; one
    that takes another fixture is refused here, so it is noticed (and given it here)."""
    runs: list[tuple[replay.Run, Any]] = []
    original = replay.Harness.run

    def recording(self: Any, orchestrator: Any, input_: Any, *args: Any, **kwargs: Any) -> replay.Run:
        run = original(self, orchestrator, input_, *args, **kwargs)
        runs.append((run, input_))
        return run

    with mock.patch.object(replay.Harness, "run", recording):
        for name in modules:
            module = importlib.import_module(name)
            for fname, fn in vars(module).items():
                if not (fname.startswith("test_") and inspect.isfunction(fn)):
                    continue
                for kwargs in _combinations(fn):
                    fixtures = set(inspect.signature(fn).parameters) - set(kwargs)
                    assert fixtures <= {"monkeypatch"}, f"{name}.{fname} takes fixtures {fixtures}: give them here"
                    with pytest.MonkeyPatch.context() as patch:
                        fn(**kwargs, **({"monkeypatch": patch} if fixtures else {}))
    return runs


class _Runtime(Enum):
    Running = "Running"
    Completed = "Completed"
    Failed = "Failed"
    Terminated = "Terminated"


class _Client:
    """What the status route reads of the durable client: the task's status, input and output."""

    def __init__(self, statuses: dict[str, Any]) -> None:
        self.statuses = statuses

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        return self.statuses.get(instance_id, SimpleNamespace(runtime_status=None, custom_status=None, output=None,
                                                              input_=None))


class _NoList:
    def read_json_or_none(self, container: str, name: str) -> Any:
        return None


def answers_of(run: replay.Run, input_: Any, groups: list[replay.Run],
               noted: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    """``GET /api/tasks/{id}`` of ``run`` at each custom status it set (running), at its end (its runtime status)
    and terminated there; ``groups``: its shard-group runs, whose last statuses the detecting answers sum; ``noted``:
    shard-group statuses each shown as the task's first group at its last detecting status (``waiting``,
    ``unreachable``: the answer shows them)."""
    task_id = run.instance_id
    shown: list[tuple[Any, str, list[tuple[str, Any]]]] = [
        (status, "Running", [(g.instance_id, g.statuses[-1] if g.statuses else None) for g in groups])
        for status in run.statuses]
    if run.statuses:
        shown += [(run.statuses[-1], run.status, shown[-1][2]), (run.statuses[-1], "Terminated", shown[-1][2])]
    detecting = [status for status in run.statuses if status.get("stage") == c.Stage.detecting]
    if detecting and noted:
        first = shards_instance_id(task_id, 0, str(detecting[-1].get("groups_run") or ""))
        shown += [(detecting[-1], "Running", [(first, status)]) for status in noted]
    handler = starters.get_task._function.get_user_function().__wrapped__  # http_edge(get_task), no binding
    answers = []
    for custom, runtime, group_statuses in shown:
        async def instances(client: Any, prefix: str, *args: Any, listed: Any = group_statuses,
                            **kwargs: Any) -> list[Any]:
            return [SimpleNamespace(instance_id=i, custom_status=status) for i, status in listed
                    if i.startswith(prefix)]

        client = _Client({task_id: SimpleNamespace(runtime_status=_Runtime(runtime), custom_status=custom,
                                                   output=run.error, input_=json.dumps(input_))})
        req = func.HttpRequest("GET", f"http://h/api/tasks/{task_id}", body=b"", route_params={"task_id": task_id})
        with mock.patch.object(clients, "store", lambda s=None: _NoList()), \
                mock.patch.object(clients, "settings", lambda: SimpleNamespace(container="trapbatch")), \
                mock.patch.object(starters, "_all_instances", instances):
            response = asyncio.run(handler(req, client))
        assert response.status_code == 200, response.get_body()
        answers.append(json.loads(response.get_body()))
    return answers


@pytest.fixture(scope="module")
def task_answers() -> list[dict[str, Any]]:
    runs = recorded_runs()
    tasks = [(run, input_) for run, input_ in runs if run.name == c.TASK_ORCHESTRATOR]
    assert len(tasks) >= 50, len(tasks)
    groups = [run for run, _ in runs if run.name == c.SHARDS_ORCHESTRATOR]
    # every distinct group status that waits out a busy service or worker exits 69, shown once with one task
    noted = tuple({json.dumps(status, sort_keys=True): status for g in groups for status in g.statuses
                   if c.WAITING_KEY in status or c.UNREACHABLE_KEY in status}.values())
    assert noted
    answers = []
    for run, input_ in tasks:
        mine = [g for g in groups if g.instance_id.startswith(run.instance_id)]
        answers += answers_of(run, input_, mine, noted)
        noted = noted if not any(s.get("stage") == c.Stage.detecting for s in run.statuses) else ()
    return answers


def test_every_task_status_the_orchestration_tests_see_is_what_the_description_says(
        task_answers: list[dict[str, Any]]) -> None:
    wrong = undescribed("TaskStatus", *task_answers)
    assert wrong == [], "\n".join(wrong)
    # the answers cover every stage a task shows, and the blocks of a finished one
    stages = {answer["stage"] for answer in task_answers}
    assert stages >= {"enumerating", "detecting", "merging", "publishing", "completed", "completed_with_errors",
                      "cancelled", "failed", "terminated", "estimated", "awaiting_confirmation", "expired"}, stages
    seen = set().union(*task_answers)
    assert seen >= {"cost", "damaged", "shards_given_up", "pool_job_error", "previews", "results", "estimate",
                    "repeated_detections", "not_images", "notification", "task_event", "drop_answer", "joined_drops", "cut",
                    "served", "shards_done", "detecting_since", "work_left", "reused", "waiting",
                    "unreachable"}, sorted(seen)


def test_every_key_a_task_status_may_hold_is_described() -> None:
    """The keys of ``core.contracts.TaskStatus`` (the custom status the handler passes on), whether or not a test
    sets them: a key added there without its description fails here even before a test shows it."""
    described = openapi.description("http://h")["components"]["schemas"]["TaskStatus"]["properties"]
    keys = set(get_type_hints(c.TaskStatus)) - {"task_id"}  # task_id: the output's, not the status's
    assert sorted(keys - set(described)) == []


@pytest.mark.parametrize("typed, path", [
    (c.ExportsOutput, ("results", "exports")), (c.PreviewsOutput, ("previews",)), (c.ResultsRef, ("results",)),
    (c.RepeatsRef, ("repeated_detections",)), (c.GivenUpShard, ("shards_given_up", "examples", "items")),
    (c.NotifyOutput, ("notification",)), (c.PublishEventOutput, ("task_event",))])
def test_every_key_of_the_blocks_a_task_status_holds_is_described(typed: Any, path: tuple[str, ...]) -> None:
    """The blocks the status carries (their TypedDicts in core.contracts), NotRequired keys included."""
    node = openapi.description("http://h")["components"]["schemas"]["TaskStatus"]
    for key in path:
        node = node["items"] if key == "items" else node["properties"][key]
    keys = set(get_type_hints(typed))
    assert sorted(keys - set(node["properties"])) == []


@pytest.mark.parametrize("typed, schema, path", [
    (c.RemovalStatus, "Repeats", ("removal",)), (c.RepeatSearchStatus, "Repeats", ("searching",)),
    (c.RerenderStatus, "Results", ("previews", "rerender")), (c.ExpiryStatus, "Results", ("previews", "expiry")),
    (c.ResultsRef, "Repeats", ("removal", "results")), (c.PreviewsOutput, "Repeats", ("removal", "previews")),
    (RepeatOptions, "Repeats", ("searching", "options")), (RepeatOptions, "Repeats", ("options",))])
def test_every_key_of_the_statuses_after_the_task_is_described(typed: Any, schema: str, path: tuple[str, ...]) -> None:
    """GET .../repeats shows the removal's and the search's custom statuses, GET .../results the re-render's and
    the expiry's (api.after_task._instance): every key of their core.contracts TypedDicts is an answer field, and
    every field of the search options they and the list record (core.repeats.RepeatOptions.to_dict).
    tests/integration/test_repeat_search.py checks the real answers against the strict description."""
    node = openapi.description("http://h")["components"]["schemas"][schema]
    for key in path:
        node = node["properties"][key]
    assert sorted(set(get_type_hints(typed)) - set(node["properties"])) == []


# The orchestrations after a task whose custom statuses GET .../repeats and GET .../results show
# (api.after_task._instance, api.starters._removal_status, api.repeat_search.search_status): where in the description.
AFTER_TASK = {c.REPEATS_ORCHESTRATOR: "Repeats/properties/removal",
              c.REPEAT_SEARCH_ORCHESTRATOR: "Repeats/properties/searching",
              c.RERENDER_ORCHESTRATOR: "Results/properties/previews/properties/rerender",
              c.EXPIRY_ORCHESTRATOR: "Results/properties/previews/properties/expiry"}


def test_every_status_of_the_orchestrations_after_a_task_is_what_the_description_says() -> None:
    """Each custom status the removal, search, re-render and expiry orchestration tests saw, as the routes show it
    (with its runtime status; a failed one's stage and error), against the strict description."""
    runs = recorded_runs(("tests.orchestrations.test_repeats_orchestrator",
                          "tests.orchestrations.test_repeat_search_orchestrator",
                          "tests.orchestrations.test_after_task_orchestrators",
                          "tests.orchestrations.test_status_sizes"))
    wrong: list[str] = []
    shown: set[str] = set()
    for run, _ in runs:
        where = AFTER_TASK.get(run.name)
        if where is None:
            continue
        shown.add(run.name)
        answers = [{"runtime_status": "Running", **status} for status in run.statuses if isinstance(status, dict)]
        if answers and run.status == "Failed":
            answers.append({**answers[-1], "runtime_status": "Failed", "stage": "failed", "error": "boom"})
        wrong += [f"{run.name}: {line}" for line in undescribed(where, *answers)]
    assert shown == set(AFTER_TASK)
    assert sorted(set(wrong)) == []
