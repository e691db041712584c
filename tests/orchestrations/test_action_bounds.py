"""Actions per execution (devhost README row 47): ``orchestrations.actions``' bounds against the harness's count, and
their value at the real limits against the Durable extension's ``maxOrchestrationActions`` (host.json, default
100,000; ext ``ContextImplementations/DurableOrchestrationContext.cs`` ``IncrementActionsOrThrowException``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core import contracts as c
from core.fanin import SAFE_MAX_PARTS
from core.settings import ACTION_BUDGET, MAX_BUSY_RETRY_ATTEMPTS, MAX_HISTORY_EVENTS, OrchestrationKnobs, Settings
from devhost.hostjson import HostConfig
from orchestrations.actions import (after_task_actions, call_actions, call_all_actions, shard_generation_actions,
                                   task_actions)
from orchestrations.rerender import rerender_previews
from orchestrations.results_zip import zip_results
from orchestrations.retries import STORAGE_RETRY, call, call_all
from orchestrations.shards import round_events, run_shards
from orchestrations.task import task_orchestrator
from tests.orchestrations.replay import Harness, Run
from tests.orchestrations.test_shards_orchestrator import WorstRoundsPool, each_call_busy, outage_group
from tests.orchestrations.test_task_orchestrator import REQUEST, TASK, activities

ROOT = Path(__file__).resolve().parents[2]
ENV = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def failing_first(answer: Any, failures: int, error: type[Exception] = ConnectionError) -> Any:
    """``answer``, with each call of each activity and payload failing ``failures`` times before it gets through
    (a ``ConnectionError``: busy, ``orchestrations.retries.is_busy``). A payload's calls are counted as they are
    delivered, so every member of a ``call_all`` round fails until its round ``failures + 1``: the worst case."""
    seen: dict[str, int] = {}

    def script(name: str, payload: Any) -> Any:
        key = f"{name}:{json.dumps(payload, sort_keys=True)}"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= failures:
            raise error(f"{name} did not answer (call {seen[key]})")
        return answer(name, payload)
    return script


MEMBERS = 3


def steps(context: Any) -> Any:
    """One ``call`` and one ``call_all`` over ``MEMBERS`` payloads."""
    one = yield from call(context, "one", STORAGE_RETRY, {"n": -1})
    many = yield from call_all(context, "many", [{"n": n} for n in range(MEMBERS)])
    return [one, many]


@pytest.mark.parametrize(("busy", "error"), [(4, ConnectionError), (0, ValueError), (6, ConnectionError)])
def test_call_and_call_all_schedule_what_the_bounds_say_when_every_attempt_but_the_last_fails(
        busy: int, error: type[Exception]) -> None:
    """Every call of every round fails until the last attempt the policy allows (busy failures: the input's
    ``busy_retry_attempts``; others: the policy's 3): the harness counts exactly ``call_actions`` +
    ``call_all_actions``, so those cannot drift from ``orchestrations.retries``."""
    most = max(STORAGE_RETRY.attempts, busy)
    run = Harness(failing_first(lambda name, payload: payload["n"], most - 1, error)).run(
        steps, {"busy_retry_attempts": busy})

    assert run.status == "Completed", run.error
    assert run.output == [-1, list(range(MEMBERS))]
    assert len(run.calls("many")) == MEMBERS * most  # every member again in every round
    assert run.actions == [call_actions(STORAGE_RETRY, busy) + call_all_actions(MEMBERS, STORAGE_RETRY, busy)]


@pytest.mark.parametrize(("attempts", "threshold"), [(3, 200), (5, 500), (8, 700), (8, 2000)])
def test_no_shard_group_generation_schedules_more_than_its_bound(attempts: int, threshold: int) -> None:
    """The shard group's worst rounds (tests/orchestrations/test_shards_orchestrator.py ``WorstRoundsPool``: each
    round makes all four pool calls, each failing busy until its last attempt): no generation schedules more than
    ``shard_generation_actions``."""
    shards = 8
    run = outage_group(shards, each_call_busy(WorstRoundsPool(shards), attempts - 1),
                       extra={"round_events": round_events(attempts)}, busy_retry_attempts=attempts,
                       max_in_flight=3, history_events=threshold)

    assert run.status == "Completed", run.error
    bound = shard_generation_actions(threshold, round_events(attempts), attempts)
    step = call_actions(STORAGE_RETRY, attempts)
    assert max(run.actions) <= bound, (run.actions, bound)
    if run.continued_as_new:  # a generation that went on as new comes within a round and a STOP_GROUPS of it
        assert max(run.actions[:-1]) >= bound - (2 + 4 * step) - step, (run.actions, bound)


BUDGET = 40  # actions: the task below reaches it in its merge, after its pool work


def budget_task() -> c.TaskInput:
    knobs = {**OrchestrationKnobs(busy_retry_attempts=4).to_dict(), "action_budget": BUDGET}
    return {"task_id": TASK, "request": {**REQUEST, "notify_url": "https://hooks.example.org/trapbatch"},
            "knobs": knobs, "run": "r260101000000beef", "answers_joined": True}  # the joined drops' done files too


def budget_answers() -> Any:
    answer = activities(images=25, shards=3)

    def script(name: str, payload: Any) -> Any:
        if name == c.NOTIFY:
            return {"sent": True, "status_code": 200}
        return answer(name, payload)
    return script


def test_a_task_past_its_action_budget_fails_itself_closing_up_and_telling_inside_the_bound() -> None:
    """Every call fails busy three times before it gets through (4 busy attempts): the task's steps pass its
    ``action_budget`` in the merge. It fails there itself, saying what to do, and still tells of its end (its
    reserve), all within ``task_actions`` (the harness refuses more, as the extension would at its limit). Before the
    budget it scheduled on until the extension dropped its actions, in the shim: the task never ended, no word."""
    harness = Harness(failing_first(budget_answers(), 3), {c.SHARDS_ORCHESTRATOR: run_shards},
                      max_actions=task_actions(BUDGET, 4))
    run: Run = harness.run(task_orchestrator, budget_task(), instance_id=TASK)

    assert run.status == "Failed"
    assert "more than 40 actions in one execution" in run.custom_status["error"]
    assert "post the same request again later" in run.custom_status["error"]
    assert run.custom_status["stage"] == "failed"
    assert run.calls(c.NOTIFY)[-1].result == {"sent": True, "status_code": 200}  # told, past the budget
    assert len(run.actions) == 1 and BUDGET < run.actions[0] <= task_actions(BUDGET, 4)
    assert run.calls(c.CLOSE_JOB)  # closed after the pool work, before the merge


def test_the_bounds_at_the_real_limits_stay_under_the_extensions_limit() -> None:
    """At ``core.settings.MAX_BUSY_RETRY_ATTEMPTS`` (20) and ``MAX_HISTORY_EVENTS``, with every retry spent: the task
    orchestrator (any size: its budget, ``ACTION_BUDGET``, then its end) and a shard group's generation stay under
    host.json's ``maxOrchestrationActions`` (the extension's 100,000 where host.json sets none) with a margin. Without
    the budget they would not: the merge's six fan-outs over ``SAFE_MAX_PARTS`` parts alone pass it."""
    limit = HostConfig.from_dict(json.loads((ROOT / "host.json").read_text())).max_orchestration_actions
    assert limit == 100_000
    assert Settings.from_env(ENV).knobs.action_budget == ACTION_BUDGET
    busy = MAX_BUSY_RETRY_ATTEMPTS
    assert task_actions(ACTION_BUDGET, busy) <= 0.95 * limit
    assert shard_generation_actions(MAX_HISTORY_EVENTS, round_events(busy), busy) <= 0.3 * limit
    assert 6 * call_all_actions(SAFE_MAX_PARTS, STORAGE_RETRY, busy) > limit  # why the budget


def test_history_events_past_their_maximum_are_refused() -> None:
    """A generation schedules about a quarter of its history's events as actions: above ``MAX_HISTORY_EVENTS`` one
    could pass the extension's limit (``shard_generation_actions``), so the setting stops the app instead."""
    from core.errors import ConfigError

    assert Settings.from_env({**ENV, "TRAPBATCH_HISTORY_EVENTS": str(MAX_HISTORY_EVENTS)}).knobs.history_events \
        == MAX_HISTORY_EVENTS
    with pytest.raises(ConfigError, match="above the maximum 100000"):
        Settings.from_env({**ENV, "TRAPBATCH_HISTORY_EVENTS": str(MAX_HISTORY_EVENTS + 1)})


@pytest.mark.parametrize("failures", [0, 3])
def test_a_budget_spent_by_the_shard_groups_still_closes_their_pool_job(failures: int) -> None:
    """Whatever the budget, a task whose shard groups ran closes their pool job: at a budget the groups fill to the
    last action, the close after the pool work was refused (ActionBudgetSpent, caught as a close that failed), the
    job left open ("could not be closed", ``pool_job_error``) and the failure path closed nothing (the pool work had
    ended), where the budget is there so that the job is closed and the task told. Within ``task_actions``: one close
    in all (the failure path closes only a job whose work did not end)."""
    for budget in range(1, 40):
        knobs = {**budget_task()["knobs"], "action_budget": budget}
        harness = Harness(failing_first(budget_answers(), failures), {c.SHARDS_ORCHESTRATOR: run_shards},
                          max_actions=task_actions(budget, 4))
        run: Run = harness.run(task_orchestrator, {**budget_task(), "knobs": knobs}, instance_id=TASK)

        assert run.status in ("Completed", "Failed"), (budget, run.error)
        if run.status == "Failed" and "pool_job" not in run.custom_status:
            continue  # failed before its shard groups: no job
        assert "pool_job_error" not in run.custom_status, (budget, run.custom_status)
        closes = [call for call in run.calls(c.CLOSE_JOB) if call.error is None]
        assert len(closes) == 1, (budget, run.calls(c.CLOSE_JOB))
        assert len(run.actions) == 1 and run.actions[0] <= task_actions(budget, 4), (budget, run.actions)


def rerender_answers(parts: int) -> Any:
    """A re-render whose original results need ``parts`` parallel parts (orchestrations.rerender)."""
    def script(name: str, payload: Any) -> Any:
        if name == c.RETHRESHOLD:
            return {"variant": payload["variant"], "threshold": 0.3, "images": 0, "counts": {}, "csv_blob": "x.csv",
                    "parts": [[k * 10, 10] for k in range(parts)]}
        if name == c.RETHRESHOLD_PART:
            return {"part": payload["part"], "images": 1, "csv_bytes": 1}
        if name == c.RETHRESHOLD_COMBINE:
            return {"variant": "", "threshold": 0.3, "csv_blob": "x.csv", "images": parts, "counts": {}}
        return 0 if name == c.RETHRESHOLD_CLEAN else {"container": "$web", "counts": {}}
    return script


def zip_answers(parts: int) -> Any:
    """A results zip planned in ``parts`` parts (orchestrations.results_zip)."""
    def script(name: str, payload: Any) -> Any:
        built = {"blob": "z.zip", "files": 1, "bytes": 0}
        if name == c.BUILD_RESULTS_ZIP:
            return {**built, "plan": {"files": [{"name": "a", "etag": "e", "size": 10 * parts}],
                                      "parts": [[[0, k * 10, 10, k == parts - 1]] for k in range(parts)]}}
        if name == c.RESULTS_ZIP_PART:
            return {"part": payload["part"], "bytes": 10}
        return {**built, "bytes": 10 * parts} if name == c.RESULTS_ZIP_COMBINE else 0
    return script


AFTER_TASK = [(rerender_previews, rerender_answers, {"task_id": TASK, "threshold": 0.3, "model": "MDV5A",
                                                     "request_name": "", "variants": [""]}),
              (zip_results, zip_answers, {"task_id": TASK})]


@pytest.mark.parametrize(("orchestrator", "answers", "data"), AFTER_TASK)
def test_a_rerender_or_results_zip_past_its_action_budget_fails_itself_inside_the_bound(
        orchestrator: Any, answers: Any, data: dict[str, Any]) -> None:
    """Every call fails busy three times before it gets through (4 busy attempts) over 8 parts: the fan-out passes
    the input's ``action_budget``, and the orchestration fails itself there, saying what to do, within
    ``after_task_actions`` (the harness refuses more, as the extension would at its limit: there, the instance stays
    Running for ever). The same run with room enough completes."""
    failing = {**data, "busy_retry_attempts": 4, "action_budget": BUDGET}
    run: Run = Harness(failing_first(answers(8), 3), max_actions=after_task_actions(BUDGET)).run(orchestrator,
                                                                                                  failing)
    assert run.status == "Failed", run.output
    assert f"more than {BUDGET} actions in one execution" in str(run.error)
    # said whole: a URL's query would be redacted from the failure (core.failures, core.errors.without_secrets)
    assert "GET .../results again later, with the query zip=rebuild" in str(run.error), run.error
    assert "a re-render: post it again later" in str(run.error), run.error
    assert len(run.actions) == 1 and run.actions[0] <= after_task_actions(BUDGET)

    roomy = {**failing, "action_budget": 1000}
    run = Harness(failing_first(answers(8), 3), max_actions=after_task_actions(1000)).run(orchestrator, roomy)
    assert run.status == "Completed", run.error
    assert BUDGET < run.actions[0] <= after_task_actions(1000)


def test_the_after_task_bound_at_the_real_limits_stays_under_the_extensions_limit() -> None:
    """The re-render and the zip start with the app's ``action_budget`` (api.after_task; tests/unit/test_after_task
    checks their inputs): bounded by it, under host.json's ``maxOrchestrationActions``. Without it a fan-out over
    5,000 parts at 20 busy attempts alone would pass that limit."""
    limit = HostConfig.from_dict(json.loads((ROOT / "host.json").read_text())).max_orchestration_actions
    assert after_task_actions(Settings.from_env(ENV).knobs.action_budget) <= 0.95 * limit
    assert call_all_actions(5000, STORAGE_RETRY, MAX_BUSY_RETRY_ATTEMPTS) > limit
