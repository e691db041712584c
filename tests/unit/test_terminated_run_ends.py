"""A run started after a terminated one ends that run's pool work first (``TaskInput.ends_run``).

Terminating an orchestration ends it alone: "Terminating an orchestration instance has no effect on any in-flight
activity function executions or sub-orchestrations that were started by the terminated orchestration" (Durable
Functions, ``IDurableOrchestrationClient.TerminateAsync``). Its shard groups went on submitting into its pool job
beside the new run's, and nothing closed that job. The starter names the run to end; the task orchestrator ends it
(tests/orchestrations/test_task_orchestrator.py). Driven through the SDK's real client, the management API's answers
scripted as in tests/unit/test_task_hub_unavailable.py.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import azure.durable_functions as df
import pytest

from api import starters
from core.requests import parse_task_request
from core.settings import Settings
from devhost.http_server import binding_json

BODY = {"container": "photos", "model": "MDV5A"}


class Hub(df.DurableOrchestrationClient):
    """The SDK's client: the instance's status is ``status``; a start records the input it was given."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(binding_json("http://127.0.0.1:7071", "hub"))
        self.inputs: list[Any] = []

        async def get(url: str) -> list[Any]:
            return [200, status]

        async def post(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
            self.inputs.append(json.loads(data) if isinstance(data, str) else data)
            return [202, {"id": status["instanceId"]}]

        self._get_async_request = get
        self._post_async_request = post


def _started_input(monkeypatch: pytest.MonkeyPatch, runtime: str, last: dict[str, Any],
                   body: dict[str, Any] | None = None, stage: str | None = None,
                   output: Any = None) -> dict[str, Any]:
    """The input of the run a post of ``body`` starts after the task's last run (``runtime``, input ``last``, its
    status's stage ``stage``: ``failed`` for a failed run, as its own failure handling leaves it, else ``detecting``;
    "" for no status at all; ``output`` the instance's output, a failed one's failure)."""
    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)  # no storage
    monkeypatch.setattr(starters, "_generations", lambda *a: {})
    body = body or BODY
    status = {"name": "task_orchestrator", "instanceId": parse_task_request(BODY).task_id_for(),
              "runtimeStatus": runtime, "createdTime": "2026-01-01T00:00:00Z",
              "lastUpdatedTime": "2026-01-02T00:00:00Z", "input": json.dumps({"request": {}, **last}),
              "output": output,
              "customStatus": {"stage": stage or ("failed" if runtime == "Failed" else "detecting")} if stage != ""
              else None}
    hub = Hub(status)
    started, _ = asyncio.run(starters.start_task(hub, body, Settings.from_env(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true"})))
    assert started and len(hub.inputs) == 1
    data = hub.inputs[0]
    return json.loads(data) if isinstance(data, str) else data  # start_new encodes its input twice


@pytest.mark.parametrize("body", [BODY, {**BODY, "rerun": True}])
def test_a_start_after_a_terminated_run_names_that_run_to_end(monkeypatch: pytest.MonkeyPatch,
                                                              body: dict[str, Any]) -> None:
    """A resume (plain post) and a re-run alike: the terminated run's groups and job outlive it either way. Fails
    without the change: the input named no run to end, and the terminated run's pool work went on."""
    started = _started_input(monkeypatch, "Terminated", {"run": "r260101000000ab12"}, body)
    assert started["ends_run"] == "r260101000000ab12"
    assert started["run"] != "r260101000000ab12"  # the new run has a job of its own


def test_a_terminated_run_from_before_run_ids_names_the_task_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run without a ``run`` had the task id as its pool job (``layout.pool_job_id(task, "")``)."""
    assert _started_input(monkeypatch, "Terminated", {})["ends_run"] == ""


def test_a_failed_run_passes_on_the_run_it_was_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that failed ending the terminated run's job says to post the request again: that post tries again."""
    started = _started_input(monkeypatch, "Failed", {"run": "r2", "ends_run": "r1"})
    assert started["ends_run"] == "r1"


@pytest.mark.parametrize("runtime", ["Failed", "Completed"])
def test_a_run_that_ended_by_itself_is_not_ended_again(monkeypatch: pytest.MonkeyPatch, runtime: str) -> None:
    """It closed its own job (or said it could not, ``pool_job_error``): no step, so its input is as before."""
    body = {**BODY, "rerun": True} if runtime == "Completed" else BODY
    assert "ends_run" not in _started_input(monkeypatch, runtime, {"run": "r1"}, body)


@pytest.mark.parametrize("runtime", ["Terminated", "Failed"])
def test_a_run_that_ended_before_ending_its_terminated_run_passes_that_run_on(monkeypatch: pytest.MonkeyPatch,
                                                                              runtime: str) -> None:
    """Run r2 was to end the terminated run r1 (its ``ends_run``) and was itself terminated (or failed) before that
    was done: a Batch outage held its close of r1's job in its retries, and the operator terminated it. The next run
    ends r2's pool work and r1's too; else r1's groups and job ran on unended, and no later run ever named r1 again.
    Fails without the change: only r2 was named (``ends_run``), nothing earlier."""
    last = {"run": "r3", "ends_run": "r2", "ends_earlier": ["r1"]}
    started = _started_input(monkeypatch, runtime, last)
    if runtime == "Terminated":  # r3 itself was terminated: it is ended last, after what it was to end
        assert started["ends_run"] == "r3" and started["ends_earlier"] == ["r1", "r2"]
    else:  # r3 failed by itself (its own job closed): what it was to end
        assert started["ends_run"] == "r2" and started["ends_earlier"] == ["r1"]


def test_the_runs_passed_on_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Terminated again and again, each run names the ones before: the most recent ``ENDS_RUNS_MAX`` are kept (each
    costs the next run two short calls), the oldest of which earlier runs have had the most tries to end."""
    earlier = [f"r{i}" for i in range(40)]
    started = _started_input(monkeypatch, "Terminated", {"run": "r99", "ends_run": "r40", "ends_earlier": earlier})
    ended = [*started["ends_earlier"], started["ends_run"]]
    assert len(ended) == starters.ENDS_RUNS_MAX and ended[-3:] == ["r39", "r40", "r99"]


@pytest.mark.parametrize(("stage", "body"), [(stage, body) for stage in ("detecting", "enumerating", "merging", "")
                                              for body in (BODY, {**BODY, "rerun": True})]
                         + [("completed", {**BODY, "rerun": True})])
def test_a_run_the_platform_failed_with_its_work_running_is_ended_like_a_terminated_one(
        monkeypatch: pytest.MonkeyPatch, stage: str, body: dict[str, Any]) -> None:
    """Failed, but its status is not the ``failed`` its own failure handling sets (orchestrations.task
    ``task_orchestrator``): the Durable Task Framework failed it at once, open tasks or not, as it does a replay that
    breaks determinism (a release that changed the task orchestrator deployed while it ran:
    ``TaskOrchestrationExecutor.ExecuteCore``'s ``catch (NonDeterministicOrchestrationException)``), with the status
    that replay set (``detecting`` mid fan-out; none where it set none). Its shard groups, activities and pool tasks
    run on and its job was never closed, as after a terminate: the new run ends it and its groups get ids of their own
    (``ends_run``). (A finished stage with a plain post is found, not resumed: only a re-run then.) Fails without the
    change: nothing was named, and the resumed run's groups met the failed run's, still running, under the same ids.
    """
    started = _started_input(monkeypatch, "Failed", {"run": "r1", "ends_run": "r0"}, body, stage=stage)
    assert started["ends_run"] == "r1" and started["ends_earlier"] == ["r0"]


def test_a_run_that_failed_by_itself_ends_only_what_it_was_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its status says ``failed``: its failure handling ran, which the framework lets end the execution only once
    every shard group and activity it started has ended (``ExecuteCore``: ``if (!this.context.HasOpenTasks)``;
    devhost README, fidelity row 26), and it closed its job: only what it was itself to end is passed on."""
    started = _started_input(monkeypatch, "Failed", {"run": "r1", "ends_run": "r0"}, stage="failed")
    assert started["ends_run"] == "r0" and "ends_earlier" not in started


# A failed instance's output on Azure: DTFx stores the failure's ``Result`` (its message) as the instance's Output,
# or ``FailureDetails.ToString()`` ("<type>: <message>") where the failure has details (durabletask
# ``AzureTableTrackingStore``: ``executionCompleted.FailureDetails?.ToString() ?? executionCompleted.Result``;
# ``TaskOrchestrationContext.FailOrchestration``: the reason is ``failure.Message``)
NONDETERMINISM = ("Non-Deterministic workflow detected: A previous execution of this orchestration scheduled a "
                  "sub-orchestration task with sequence ID 9 and name 'run_shards' (version '', instance ID "
                  "'t-shards-0000'), but the current replay execution hasn't (yet?) scheduled this task. Was a change "
                  "made to the orchestrator code after this instance had already started running?")


@pytest.mark.parametrize("output", [
    NONDETERMINISM, f"DurableTask.Core.Exceptions.NonDeterministicOrchestrationException: {NONDETERMINISM}"])
def test_a_run_the_platform_failed_is_ended_even_where_the_failing_replay_set_stage_failed(
        monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    """The status of a run the platform failed is the one its failing replay set (DTFx ``ExecuteCore`` returns
    ``GetStatus()`` after ``FailOrchestration``; the out-of-process shim sets the Python replay's last custom status
    before it schedules that replay's actions: ``OutOfProcOrchestrationShim.ScheduleDurableTaskEvents``; devhost
    README, row 43), and that replay is a release's other code: one that raises earlier than the recorded run did (an
    input of before it does not read) sets ``failed`` in its own failure handling without scheduling the groups, and
    DTFx then meets the recorded shard groups with no action of that replay and fails the instance at once, open tasks
    or not (``NonDeterministicOrchestrationException``, caught outside ``if (!this.context.HasOpenTasks)``): stage
    ``failed``, its groups and job running on. Its output says so, whatever the stage. Fails without the change: only
    the stage was read, and the run was taken for one that failed by itself."""
    started = _started_input(monkeypatch, "Failed", {"run": "r1", "ends_run": "r0"}, stage="failed", output=output)
    assert started["ends_run"] == "r1" and started["ends_earlier"] == ["r0"]


@pytest.mark.parametrize("output", [
    "Orchestrator function 'task_orchestrator' failed: shard group t-shards-0001 failed: Non-Deterministic workflow "
    "detected: ...",  # a group the platform failed: the task's own failure handling ran, after its other groups
    "Orchestrator function 'task_orchestrator' failed: no images (.jpg, .jpeg, .png, .gif) found in photos/",
    None])
def test_a_run_that_failed_by_itself_is_not_ended_whatever_its_failure_says(monkeypatch: pytest.MonkeyPatch,
                                                                           output: str | None) -> None:
    """The task orchestrator's own failure (the shim's "Orchestrator function '<name>' failed: ...", held until
    nothing it started is open) names no run to end, even where its words quote a shard group's non-determinism."""
    started = _started_input(monkeypatch, "Failed", {"run": "r1"}, stage="failed", output=output)
    assert "ends_run" not in started and "ends_earlier" not in started
