"""A dropped request whose task had ended already gets the done file its task's run would have written (api.starters
``_joined_drop_answer``), through the SDK's real ``DurableOrchestrationClient`` answered as the extension does."""
from __future__ import annotations

import asyncio
import json

import pytest

from activities.notify import write_drop_answer
from api import starters
from core import contracts as c
from gpu_batch import layout
from tests.unit.test_joined_drops import Store  # the BlobStore calls of adapters.joined_drops, kept in memory
from tests.unit.test_task_hub_unavailable import COMPLETED, Hub

TASK = "task-0123456789abcdef0123"


STATE = "trapbatch"  # the task-state container (Settings.container), which holds the joined drops' registry
RUN = "r261207210000ab12"


@pytest.mark.parametrize("runtime", ["Completed", "Terminated"])
def test_an_ended_tasks_joined_drop_gets_the_done_file_its_run_wrote_not_what_the_run_added_after_it(
        runtime: str) -> None:
    """The run writes ``{"id", **status}`` beside its drop first, then notifies, publishes its event and adds what
    became of each (and of the done file, ``drop_answer``) to its output and custom status (orchestrations.task
    ``_tell``). The joined drop's file copied them, so it said ``drop_answer: {"written": false, ...}`` "that file
    will not come" of the other drop's file, in a file that came. Terminated while it told of its end: its output is
    the terminate's reason, its custom status the finished one (api.starters ``_stage``)."""
    status = c.TaskStatus(stage=c.Stage.completed, started="2026-01-01T00:00:00+00:00", images=3, failed=0,
                          finished="2026-01-01T01:00:00+00:00")
    ran = Store()
    write_drop_answer(c.DropAnswerInput(task_id=TASK, drop="first.json", kind="done", status=dict(status)),
                      ran)  # type: ignore[arg-type]
    [(place, by_the_run)] = ran.blobs.items()
    assert place == (layout.INCOMING_CONTAINER, layout.drop_answer_blob("first.json", "done"))
    told = {"drop_answer": {"written": False, "file": f"{layout.INCOMING_CONTAINER}/first.done.json",
                            "reason": "refused", "hint": "the task's outcome stands, but that file will not come"},
            "notification": {"sent": True, "status_code": 200, "reason": ""},
            "task_event": {"sent": True, "status_code": 200, "reason": ""}}
    hub = Hub((200, {**COMPLETED, "instanceId": TASK, "input": json.dumps({"task_id": TASK, "drop": "first.json"}),
                     "runtimeStatus": runtime, "customStatus": {**status, **told},
                     "output": {"task_id": TASK, **status, **told} if runtime == "Completed" else "stuck receiver"}))
    store = Store()
    answer = asyncio.run(starters._joined_drop_answer(hub, store, layout.INCOMING_CONTAINER,  # type: ignore[arg-type]
                                                      "second.json", TASK, STATE))
    done = layout.drop_answer_blob("second.json", "done")
    assert answer["done_file"] == f"{layout.INCOMING_CONTAINER}/{done}"
    assert store.blobs == {(layout.INCOMING_CONTAINER, done): by_the_run}


def test_a_request_written_again_while_its_earlier_version_runs_is_told_its_end_comes_beside_it() -> None:
    """A request written again under the same name (another ETag: a new request) for the same task, which its first
    version started and which still runs: the done file is this name's, so "not beside this request" was wrong."""
    running = {**COMPLETED, "instanceId": TASK, "runtimeStatus": "Running", "customStatus": {"stage": "detecting"},
               "input": json.dumps({"task_id": TASK, "drop": "site-a.json"})}
    answer = asyncio.run(starters._joined_drop_answer(Hub((200, running)), Store(),  # type: ignore[arg-type]
                                                      layout.INCOMING_CONTAINER, "site-a.json", TASK, STATE))
    assert answer["done_file"] == f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob('site-a.json', 'done')}"
    assert "not beside this request" not in answer["hint"] and "beside it" in answer["hint"], answer
    other = asyncio.run(starters._joined_drop_answer(Hub((200, running)), Store(),  # type: ignore[arg-type]
                                                     layout.INCOMING_CONTAINER, "site-b.json", TASK, STATE))
    # a run started by an earlier release (no ``answers_joined``) writes beside its own drop only, as it did
    assert other["done_file"] == answer["done_file"] and "not beside this request" in other["hint"], other


@pytest.mark.parametrize("started_by", ["site-a.json", ""])
def test_a_drop_joining_a_running_task_is_registered_with_its_run_and_told_its_own_done_file_comes(
        started_by: str) -> None:
    """The run (started by another drop, or over HTTP) writes the done file of each drop registered with it when it
    ends (adapters.joined_drops): the receipt names this request's own done file. Fails without the change: it named
    the other drop's file, or said none would come."""
    task_input = {"task_id": TASK, "run": RUN, "answers_joined": True, **({"drop": started_by} if started_by else {})}
    running = {**COMPLETED, "instanceId": TASK, "runtimeStatus": "Running", "customStatus": {"stage": "detecting"},
               "input": json.dumps(task_input)}
    store = Store()
    answer = asyncio.run(starters._joined_drop_answer(Hub((200, running)), store,  # type: ignore[arg-type]
                                                      layout.INCOMING_CONTAINER, "site-b.json", TASK, STATE))
    done = f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob('site-b.json', 'done')}"
    assert answer["done_file"] == done and f"beside this request too, to {done}" in answer["hint"], answer
    # adapters.terminated_drops, adapters.joined_drops: what a terminate writes, and what the resuming run does
    assert (f"a run terminated through POST /api/tasks/{TASK}/terminate has it say so, and the run that resumes it, "
            "when the same request is posted again, writes it again at its end") in answer["hint"]
    assert store.blobs == {(STATE, layout.joined_drop_blob(TASK, RUN, "site-b.json")): {"drop": "site-b.json"}}
    assert ("started by an HTTP post" in answer["hint"]) == (not started_by)


def test_a_drop_joining_a_run_whose_end_has_come_writes_its_done_file_itself() -> None:
    """The orchestration still runs (it tells of its end: the notification's retries), but its ended marker is
    written and its registry listed: the joining drop, registered after, writes its own done file from the marker."""
    status = {"stage": "completed", "images": 3, "failed": 0}
    store = Store()
    store.write_json(STATE, layout.run_ended_blob(TASK, RUN), {"task_id": TASK, "run": RUN, "status": status})
    running = {**COMPLETED, "instanceId": TASK, "runtimeStatus": "Running", "customStatus": status,
               "input": json.dumps({"task_id": TASK, "run": RUN, "answers_joined": True})}
    answer = asyncio.run(starters._joined_drop_answer(Hub((200, running)), store,  # type: ignore[arg-type]
                                                      layout.INCOMING_CONTAINER, "site-b.json", TASK, STATE))
    done = layout.drop_answer_blob("site-b.json", "done")
    assert answer["done_file"] == f"{layout.INCOMING_CONTAINER}/{done}" and "had ended already" in answer["hint"]
    assert store.blobs[(layout.INCOMING_CONTAINER, done)] == {"id": TASK, **status}
