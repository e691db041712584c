"""A running task that no longer moves is said to be stalled, with what to do; one that waits as it should is not.

Why: on Azure an action the Durable extension refuses is dropped without failing the instance (devhost README rows
45 and 47), so such a task showed "running" for ever. ``core.stall`` judges by the orchestration's
``lastUpdatedTime`` (dtfx ``AzureTableTrackingStore.UpdateStateAsync`` writes it at every episode) against the longest
wait the stage's code has; ``GET /api/tasks/{id}`` answers ``updated`` and ``stalled``. The API tests drive the SDK's
real client (its status parsing included) with the management API's answers as the extension gives them.
"""
from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from api import starters
from core import stall
from core.contracts import Stage
from core.ids import shards_instance_id
from core.settings import CONFIRM_TIMEOUT_MAX_S, OrchestrationKnobs
from tests.unit.test_task_hub_unavailable import Hub

ROOT = Path(__file__).resolve().parents[2]
TASK = "task-0123456789abcdef0123"
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)
KNOBS = OrchestrationKnobs()


# ---------------------------------------------------------------- the bounds are the code's own


def test_the_function_timeout_is_host_jsons() -> None:
    hours, minutes, seconds = (int(x) for x in json.loads((ROOT / "host.json").read_text())["functionTimeout"]
                               .split(":"))
    assert stall.FUNCTION_TIMEOUT_S == hours * 3600 + minutes * 60 + seconds


def test_the_longest_timers_are_the_orchestrators_own() -> None:
    from orchestrations import retries, task

    assert stall.BUSY_MAX_DELAY_S == retries.BUSY_MAX_DELAY_S
    policy = task.NOTIFY_RETRY
    assert stall.NOTIFY_MAX_DELAY_S == max(policy.delay_s(n) for n in range(1, policy.attempts))


def test_the_task_orchestrator_sets_no_timer_the_bounds_do_not_know() -> None:
    """Every durable timer of the task and shard-group orchestrators (the confirmation wait, busy and plain retries,
    the groups' polls): a new one must be added to ``core.stall.longest_wait_s`` too, or a task waiting on it would
    be called stalled."""
    texts = {p.name: p.read_text() for p in (ROOT / "orchestrations").glob("*.py")}
    timers = {name: len(re.findall(r"create_timer\(", text)) for name, text in texts.items()}
    # expiry.py is an orchestration of its own (the previews' expiry), and timers.py's chained wait serves only
    # zip_sweep.py and replaced_sweep.py (a results zip build's sweep, a replaced generation's): never the task's, nor a
    # run after it whose liveness is judged (core.stall.AFTER_TASK_RUNS)
    assert {k: v for k, v in timers.items() if v} == {"task.py": 1, "retries.py": 2, "shards.py": 1, "expiry.py": 1,
                                                      "timers.py": 1}
    assert sorted(name for name, text in texts.items() if "wait_until" in text and name != "timers.py") == [
        "replaced_sweep.py", "zip_sweep.py"]


# ---------------------------------------------------------------- the pure judgement, at its boundaries


@pytest.mark.parametrize("stage", [Stage.starting, Stage.enumerating, Stage.merging, Stage.publishing])
def test_a_working_stage_is_stalled_just_past_two_activity_timeouts_a_busy_retry_and_the_slack(stage: str) -> None:
    limit = stall.BUSY_MAX_DELAY_S + 2 * stall.FUNCTION_TIMEOUT_S + stall.SLACK_S
    assert stall.quiet_limit_s(stage, KNOBS) == limit
    assert stall.stalled(stage, TASK, NOW, NOW - timedelta(seconds=limit), KNOBS) is None
    note = stall.stalled(stage, TASK, NOW, NOW - timedelta(seconds=limit + 1), KNOBS)
    assert note is not None
    assert note["since"] == (NOW - timedelta(seconds=limit + 1)).isoformat()
    assert note["seconds"] == int(limit + 1) and note["limit_seconds"] == int(limit)
    # the app's own route (function key), not the Durable management API's system-key URL, which an operator may lack
    assert f"terminate it (POST /api/tasks/{TASK}/terminate)" in note["hint"]
    assert "durabletask" not in note["hint"] and "code=" not in note["hint"]
    assert "post the same request again, without \"rerun\" or \"only_new\", which ends the pool work" in note["hint"]
    assert TASK in note["hint"].split("terminate it")[0]  # the logs to search name the task


def test_a_task_awaiting_confirmation_is_not_stalled_before_its_deadline() -> None:
    knobs = OrchestrationKnobs(confirm_timeout_s=86400)
    rest = 2 * stall.FUNCTION_TIMEOUT_S + stall.SLACK_S
    assert stall.stalled(Stage.awaiting_confirmation, TASK, NOW, NOW - timedelta(seconds=86400 + rest), knobs) is None
    assert stall.stalled(Stage.awaiting_confirmation, TASK, NOW, NOW - timedelta(seconds=86401 + rest), knobs)
    # the default waits six days, the longest timer: five days without a word is a person not yet deciding
    assert stall.stalled(Stage.awaiting_confirmation, TASK, NOW, NOW - timedelta(days=5), KNOBS) is None
    assert stall.quiet_limit_s(Stage.awaiting_confirmation, OrchestrationKnobs(confirm_timeout_s=10 ** 9)) == \
        CONFIRM_TIMEOUT_MAX_S + rest  # the wait is cut at six days (orchestrations.task _confirmed)


def test_detecting_allows_the_groups_longest_poll_delay() -> None:
    rest = 2 * stall.FUNCTION_TIMEOUT_S + stall.SLACK_S
    slow = OrchestrationKnobs(poll_min_s=600.0, poll_max_s=7200.0)
    assert stall.quiet_limit_s(Stage.detecting, slow) == 7200.0 + rest
    assert stall.stalled(Stage.detecting, TASK, NOW, NOW - timedelta(seconds=7200 + rest), slow) is None
    assert stall.stalled(Stage.detecting, TASK, NOW, NOW - timedelta(seconds=7201 + rest), slow) is not None
    assert stall.quiet_limit_s(Stage.detecting, KNOBS) == stall.BUSY_MAX_DELAY_S + rest  # 300 s either way


def test_a_finished_stage_still_running_allows_the_notifications_retries() -> None:
    rest = 2 * stall.FUNCTION_TIMEOUT_S + stall.SLACK_S
    for stage in (Stage.completed, Stage.failed, Stage.cancelled, Stage.expired):
        assert stall.quiet_limit_s(stage, KNOBS) == stall.NOTIFY_MAX_DELAY_S + rest


def test_no_update_time_or_a_stage_never_running_is_never_judged() -> None:
    assert stall.stalled(Stage.enumerating, TASK, NOW, None, KNOBS) is None
    assert stall.stalled(Stage.terminated, TASK, NOW, NOW - timedelta(days=30), KNOBS) is None
    assert stall.stalled("no-such-stage", TASK, NOW, NOW - timedelta(days=30), KNOBS) is None


# ---------------------------------------------------------------- GET /api/tasks/{id}


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")  # as the extension answers it: whole seconds (devhost row 34)


def _get(hub: Hub) -> dict[str, Any]:
    handler = starters.get_task._function.get_user_function().__wrapped__  # http_edge(get_task), no binding
    req = func.HttpRequest("GET", f"http://h/api/tasks/{TASK}", body=b"", route_params={"task_id": TASK})
    response = asyncio.run(handler(req, hub))
    body: dict[str, Any] = json.loads(response.get_body())
    assert response.status_code == 200, body
    return body


def _running(custom: dict[str, Any], updated: datetime, runtime: str = "Running") -> Hub:
    return Hub((202, {"name": "task_orchestrator", "instanceId": TASK, "runtimeStatus": runtime,
                      "createdTime": "2026-01-01T00:00:00Z", "lastUpdatedTime": _stamp(updated),
                      "input": json.dumps({"task_id": TASK, "run": "r1", "request": {},
                                           "knobs": OrchestrationKnobs().to_dict()}),
                      "output": None, "customStatus": custom}))


def test_the_answer_says_when_the_task_last_changed_and_that_it_stalled() -> None:
    """Before: the answer had neither; a task whose orchestration the extension left Running for ever showed
    "enumerating" for ever, with nothing to tell a person to act."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    quiet = now - timedelta(hours=3)
    shown = _get(_running({"stage": Stage.enumerating}, quiet))
    assert shown["updated"] == quiet.isoformat()
    assert shown["stalled"]["since"] == quiet.isoformat()
    assert shown["stalled"]["seconds"] >= 3 * 3600
    assert f"POST /api/tasks/{TASK}/terminate" in shown["stalled"]["hint"]

    fresh = now - timedelta(minutes=1)
    shown = _get(_running({"stage": Stage.enumerating}, fresh))
    assert shown["updated"] == fresh.isoformat() and "stalled" not in shown


def test_an_ended_task_or_one_awaiting_its_confirmation_is_not_stalled() -> None:
    long_ago = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
    shown = _get(_running({"stage": Stage.completed}, long_ago, runtime="Completed"))
    assert shown["updated"] == long_ago.isoformat() and "stalled" not in shown
    shown = _get(_running({"stage": Stage.awaiting_confirmation, "images": 10}, long_ago))
    assert "stalled" not in shown


def test_a_detecting_task_moves_with_its_shard_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task orchestration has no episode while it waits on its groups: their newest update is the task's, from the
    one listing the progress already reads; a group without a status counts too. All groups quiet: stalled."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    task_quiet = now - timedelta(hours=5)
    group_times = [now - timedelta(hours=5), now - timedelta(minutes=2)]

    async def instances(*args: Any, **kwargs: Any) -> list[Any]:
        statuses: list[Any] = [None, {"stage": "detecting", "images_done": 3, "images_progress": 3}]
        return [SimpleNamespace(instance_id=shards_instance_id(TASK, g), custom_status=statuses[g],
                                runtime_status=SimpleNamespace(value="Running"), last_updated_time=group_times[g])
                for g in range(2)]

    monkeypatch.setattr(starters, "_all_instances", instances)
    custom = {"stage": Stage.detecting, "groups": 2, "images": 10, "shards": 2}
    shown = _get(_running(custom, task_quiet))
    assert shown["updated"] == group_times[1].isoformat() and "stalled" not in shown

    group_times[1] = now - timedelta(hours=4)  # the last group went quiet too
    shown = _get(_running(custom, task_quiet))
    assert shown["updated"] == group_times[1].isoformat()
    assert shown["stalled"]["since"] == group_times[1].isoformat()

    group_times[:] = [now - timedelta(hours=6), now - timedelta(hours=6)]  # the task's own is the newer
    assert _get(_running(custom, task_quiet))["updated"] == task_quiet.isoformat()


def _listed(monkeypatch: pytest.MonkeyPatch, tasks: dict[str, tuple[str, datetime | None]],
            group_times: dict[str, datetime], limit: int = 50) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """GET /api/tasks over running ``tasks`` (id: (stage, own lastUpdatedTime); a detecting one with 2 shard groups)
    whose groups last changed at ``group_times[task id]``: the rows by id, and the prefixes of every instance listing
    after the tasks' own (``_all_instances``, a shard group listing each)."""
    listings: list[str] = []

    async def instances(client: Any, prefix: str, *args: Any, **kwargs: Any) -> list[Any]:
        if prefix == "task-":  # the tasks' own listing
            return [SimpleNamespace(instance_id=i, custom_status={"stage": stage, "groups": 2, "images": 10},
                                    created_time=NOW - timedelta(days=n), runtime_status=SimpleNamespace(
                                        value="Running"), last_updated_time=updated)
                    for n, (i, (stage, updated)) in enumerate(tasks.items())]
        listings.append(prefix)
        task_id = next(i for i in tasks if prefix.startswith(i))
        return [SimpleNamespace(instance_id=shards_instance_id(task_id, g), custom_status=None,
                                runtime_status=SimpleNamespace(value="Running"), last_updated_time=group_times[task_id])
                for g in range(2)]

    async def inputs(client: Any, task_ids: list[str], timeout_s: float = 0) -> list[dict[str, Any]]:
        return [{"task_id": i, "request": {}, "knobs": OrchestrationKnobs().to_dict()} for i in task_ids]

    monkeypatch.setattr(starters, "_all_instances", instances)
    monkeypatch.setattr(starters, "_task_inputs", inputs)
    handler = starters.list_tasks._function.get_user_function().__wrapped__
    req = func.HttpRequest("GET", "http://h/api/tasks", body=b"", params={"limit": str(limit)})
    response = asyncio.run(handler(req, Hub((200, []))))
    assert response.status_code == 200, response.get_body()
    return {row["id"]: row for row in json.loads(response.get_body())["tasks"]}, listings


def test_the_task_list_says_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list row carries ``updated`` and ``stalled`` as GET /api/tasks/{id} has them; a task that is not detecting
    is judged by its own orchestration's update, without reading any shard group."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    quiet = now - timedelta(hours=3)
    ids = [f"task-{n:020x}" for n in (1, 2)]
    rows, listings = _listed(monkeypatch, {ids[0]: (Stage.merging, quiet), ids[1]: (Stage.enumerating, now)}, {})
    assert rows[ids[0]]["updated"] == quiet.isoformat() and rows[ids[0]]["stalled"]["since"] == quiet.isoformat()
    assert rows[ids[1]]["updated"] == now.isoformat() and "stalled" not in rows[ids[1]]
    assert listings == []


def test_the_task_list_says_a_detecting_task_stalled_when_its_shard_groups_went_quiet_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a row detecting carried neither ``updated`` nor ``stalled`` (its groups, which are what moves, were
    not read for the list), so an operator listing tasks never saw the stage most likely to stall at 10M images. A
    detecting task whose own orchestration is too quiet has its groups read: all quiet, it is stalled, as GET says;
    one of them changed a moment ago, it is not, and its ``updated`` is that group's."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    task_quiet = now - timedelta(hours=6)
    ids = [f"task-{n:020x}" for n in (1, 2)]
    groups = {ids[0]: now - timedelta(hours=5), ids[1]: now - timedelta(minutes=2)}
    rows, listings = _listed(monkeypatch, {i: (Stage.detecting, task_quiet) for i in ids}, groups)
    assert rows[ids[0]]["updated"] == groups[ids[0]].isoformat()
    assert rows[ids[0]]["stalled"]["since"] == groups[ids[0]].isoformat()
    assert f"POST /api/tasks/{ids[0]}/terminate" in rows[ids[0]]["stalled"]["hint"]
    assert rows[ids[1]]["updated"] == groups[ids[1]].isoformat() and "stalled" not in rows[ids[1]]
    assert sorted(listings) == sorted(shards_instance_id(i, 0)[: -len("0000")] for i in ids)
    assert "note" not in rows[ids[0]] and "note" not in rows[ids[1]]


def test_the_task_list_reads_no_shard_group_of_a_detecting_task_whose_own_update_is_recent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own update recent, it cannot be stalled (the newest of it and its groups' is newer still): the list reads
    none of its groups, and says neither ``stalled`` nor an ``updated`` its groups' may be newer than."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    task_id = "task-00000000000000000001"
    rows, listings = _listed(monkeypatch, {task_id: (Stage.detecting, now - timedelta(minutes=30))},
                             {task_id: now - timedelta(days=3)})
    assert listings == []
    assert "stalled" not in rows[task_id] and "updated" not in rows[task_id] and "note" not in rows[task_id]


def test_the_task_list_reads_the_shard_groups_of_a_detecting_task_whose_own_update_is_not_known(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An own update that is not known proves nothing recent: the row is judged by its groups' updates, as
    GET /api/tasks/{id} judges it (``_describe``: the newest of the task's own, here none, and its groups'). Before,
    such a row passed the gate as if it were recent: no group read, no ``updated``, no ``stalled`` and no ``note``,
    while GET said it stalled. (The extension always writes ``lastUpdatedTime``, HttpApiHandler.cs ``ConvertFrom``,
    ``status.LastUpdatedTime.ToString("s") + "Z"``, but the SDK leaves it None when a payload lacks it.)"""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [f"task-{n:020x}" for n in (1, 2)]
    groups = {ids[0]: now - timedelta(hours=5), ids[1]: now - timedelta(minutes=2)}
    rows, listings = _listed(monkeypatch, {i: (Stage.detecting, None) for i in ids}, groups)
    assert sorted(listings) == sorted(shards_instance_id(i, 0)[: -len("0000")] for i in ids)
    assert rows[ids[0]]["stalled"]["since"] == groups[ids[0]].isoformat()
    assert rows[ids[1]]["updated"] == groups[ids[1]].isoformat() and "stalled" not in rows[ids[1]]
    assert "note" not in rows[ids[0]] and "note" not in rows[ids[1]]


def test_the_task_list_reads_the_shard_groups_of_a_few_quiet_detecting_tasks_at_most(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub with many old detecting tasks must not make the list slow: the newest ``LIST_GROUP_READS`` are read,
    the rest left unjudged with a note saying where to look; rows past ``limit`` are not read at all. README gives the
    bound."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"for the newest {starters.LIST_GROUP_READS} at most, `LIST_GROUP_READS`" in readme
    bound_min = stall.quiet_limit_s(Stage.detecting, OrchestrationKnobs()) / 60  # which long detections pass
    assert f"`quiet_limit_s`, {bound_min:.0f} minutes by default" in readme
    monkeypatch.setattr(starters, "LIST_GROUP_READS", 2)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [f"task-{n:020x}" for n in range(1, 6)]  # created newest first
    quiet = now - timedelta(days=2)
    rows, listings = _listed(monkeypatch, {i: (Stage.detecting, quiet) for i in ids}, dict.fromkeys(ids, quiet),
                             limit=4)
    assert sorted(listings) == sorted(shards_instance_id(i, 0)[: -len("0000")] for i in ids[:2])
    assert [i for i in ids[:4] if "stalled" in rows[i]] == ids[:2]
    for task_id in ids[2:4]:
        assert "stalled" not in rows[task_id] and "updated" not in rows[task_id]
        assert f"GET /api/tasks/{task_id}" in rows[task_id]["note"]
        # its own orchestration's quiet is no sign of a stall while it detects (it waits on its groups): the note
        # says so, rather than that the quiet is longer than the stage explains
        assert "as it waits on its shard groups while they detect" in rows[task_id]["note"]
        assert "explains" not in rows[task_id]["note"]


def test_the_task_list_note_of_an_unread_task_whose_own_update_is_not_known_does_not_claim_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``LIST_GROUP_READS``, a row left unjudged because its own update is not known was told "has not changed
    for longer than stage detecting's bound", which nothing showed; its note says what is known instead."""
    monkeypatch.setattr(starters, "LIST_GROUP_READS", 1)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [f"task-{n:020x}" for n in (1, 2)]  # created newest first: the first one's groups are read
    rows, _ = _listed(monkeypatch, {i: (Stage.detecting, None) for i in ids}, dict.fromkeys(ids, now))
    assert "note" not in rows[ids[0]]
    note = rows[ids[1]]["note"]
    assert "last update is not known" in note and "has not changed" not in note
    assert f"GET /api/tasks/{ids[1]}" in note and "stalled" not in rows[ids[1]]


def test_the_task_list_answers_when_a_detecting_tasks_groups_cannot_be_read_in_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The group listing gets what is left of the list's deadline; one that runs out leaves its row unjudged, with a
    note, rather than failing the whole list."""
    from core.errors import InstanceListTooSlow

    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [f"task-{n:020x}" for n in (1, 2)]
    timeouts: list[float] = []
    real = starters._child_progress

    async def slow(client: Any, task_id: str, groups: int, run: str = "", timeout_s: float | None = None) -> Any:
        timeouts.append(float(timeout_s or 0))
        if task_id == ids[1]:
            raise InstanceListTooSlow("listing the task hub's instances did not end", "purge")
        return await real(client, task_id, groups, run, timeout_s)

    monkeypatch.setattr(starters, "_child_progress", slow)
    quiet = now - timedelta(days=2)
    rows, _ = _listed(monkeypatch, {ids[0]: (Stage.detecting, quiet), ids[1]: (Stage.detecting, quiet)},
                      dict.fromkeys(ids, quiet))
    assert rows[ids[0]]["stalled"]["since"] == quiet.isoformat()
    assert "stalled" not in rows[ids[1]] and "in the time left for the list" in rows[ids[1]]["note"]
    assert timeouts and all(0 < t <= starters.INSTANCE_LIST_TIMEOUT_S for t in timeouts)


@pytest.mark.parametrize("stage", [Stage.completed, Stage.completed_with_errors])
def test_a_task_stalled_telling_of_its_completion_is_not_told_to_wait_for_terminated_and_resume(stage: str) -> None:
    """A run that completed and was telling of its end (its status final, its runtime still Running: the notification,
    the answer file, the Event Grid event) keeps its finished stage when terminated (api.starters ``_stage``), and a
    post of its request finds it and runs nothing (the terminate route's own 202 says so). The hint told the operator
    to wait until its stage is 'terminated', which it never shows, then to post the request again to resume it from
    its pool tasks' results: a wait for ever, then a post that does nothing."""
    limit = stall.quiet_limit_s(stage, KNOBS)
    assert limit is not None
    note = stall.stalled(stage, TASK, NOW, NOW - timedelta(seconds=limit + 1), KNOBS)
    assert note is not None
    hint = note["hint"]
    assert f"terminate it (POST /api/tasks/{TASK}/terminate)" in hint, hint
    assert "once its stage is 'terminated'" not in hint and "resumes it" not in hint, hint
    assert "results stay complete and served" in hint and "does not run again" in hint, hint


@pytest.mark.parametrize("stage", [Stage.cancelled, Stage.expired, Stage.estimated])
def test_a_task_stalled_telling_of_an_end_without_work_left_is_not_told_to_post_it_again(stage: str) -> None:
    """Cancelled, expired (never confirmed) or estimated (a dry run): nothing was left to run. Terminated, the task
    shows 'terminated', and a post of its request resumes it: a cancelled task's pool work runs after all. The hint
    said to post it again, "which ... resumes it from the results its pool tasks already wrote"."""
    limit = stall.quiet_limit_s(stage, KNOBS)
    assert limit is not None
    hint = stall.stalled(stage, TASK, NOW, NOW - timedelta(seconds=limit + 1), KNOBS)["hint"]  # type: ignore[index]
    assert f"terminate it (POST /api/tasks/{TASK}/terminate)" in hint, hint
    assert "resumes it" not in hint and f"it had ended {stage}" in hint, hint
    assert "post the same request again only to run it" in hint, hint


def test_a_task_stalled_awaiting_confirmation_is_told_to_cancel_or_confirm_it_first() -> None:
    """Past its deadline the task's timer is what did not fire; its wait is a task_any of that timer and the confirm
    and cancel events (orchestrations.task ``_confirmed``), which stay open whatever became of the timer. The hint
    sent the operator straight to terminate it and post the request again, which lists every image again and waits
    for confirmation again, where cancel (or confirm) most likely ends the wait as meant. Terminate stays the way out
    should that not move it. Fails without the change."""
    import inspect

    from orchestrations import task as task_orchestration

    code = inspect.getsource(task_orchestration._confirmed)
    assert "context.task_any([*confirms, *cancels, timer])" in code  # the events are waited on beside the timer
    limit = stall.quiet_limit_s(Stage.awaiting_confirmation, KNOBS)
    assert limit is not None
    note = stall.stalled(Stage.awaiting_confirmation, TASK, NOW, NOW - timedelta(seconds=limit + 1), KNOBS)
    assert note is not None
    hint = note["hint"]
    cancel, confirm = hint.find(f"POST /api/tasks/{TASK}/cancel"), hint.find(f"POST /api/tasks/{TASK}/confirm")
    terminate = hint.find(f"POST /api/tasks/{TASK}/terminate")
    assert 0 <= cancel < terminate and 0 <= confirm < terminate, hint
    assert "still shows awaiting_confirmation" in hint and "once its stage is 'terminated'" in hint, hint
