"""A task's run terminated through ``POST /api/tasks/{id}/terminate`` writes the done files its end would have
(api.terminated_answers, adapters.terminated_drops), over Azurite: beside the dropped request that started it and
beside the requests that joined it, saying ``terminated``; the run that resumes it writes its end over them; a run
terminated while telling of its end keeps the files it wrote (and has the ones it had not written say that end).

Before: none was written, and whoever waited for ``<name>.done.json`` waited for ever unless the request was posted
again (README, "a terminated run that is never resumed answers none").
"""
from __future__ import annotations

import asyncio
import json
from enum import Enum
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from activities import notify as notify_activity
from adapters.blobs import BlobStore
from api import starters, terminated_answers
from gpu_batch import layout

STARTED = "2026-12-07T21:00:00+00:00"
FINAL = {"stage": "completed", "started": STARTED, "images": 3, "failed": 0, "finished": "2026-12-07T21:05:00+00:00"}


class _Runtime(Enum):
    Running = "Running"
    Completed = "Completed"
    Terminated = "Terminated"


class Client:
    """The durable client's calls the starters and the terminate route make, over instances kept here (the
    terminate is processed at once, as devhost's engine does)."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.starts: list[dict[str, Any]] = []

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        found = self.instances.get(instance_id)
        if found is None:
            return SimpleNamespace(runtime_status=None, input_=None, custom_status=None, output=None)
        return SimpleNamespace(runtime_status=_Runtime(found["runtime"]), input_=json.dumps(found["input"]),
                               custom_status=dict(found["custom"]), output=None)

    async def start_new(self, name: str, instance_id: str, client_input: Any = None) -> str:
        self.starts.append(client_input)
        self.instances[instance_id] = {"runtime": "Running", "input": client_input,
                                       "custom": {"stage": "starting"}}
        return instance_id

    async def terminate(self, instance_id: str, reason: str) -> None:
        self.instances[instance_id]["runtime"] = "Terminated"


def _drop(store: BlobStore, client: Client, name: str, request: dict[str, Any]) -> dict[str, Any]:
    """Drop ``request`` as ``incoming/<name>`` and deliver its event; returns its receipt."""
    store.write_json(layout.INCOMING_CONTAINER, name, request)
    data = store.read_bytes(layout.INCOMING_CONTAINER, name)
    fn = starters.task_dropped._function.get_user_function().__wrapped__  # no durable client binding
    stream = SimpleNamespace(name=f"{layout.INCOMING_CONTAINER}/{name}", read=lambda size=-1: data)
    asyncio.run(fn(stream, client))
    return store.read_json(layout.INCOMING_CONTAINER, layout.drop_receipt_blob(name))


def _terminate(client: Client, task_id: str, reason: str) -> tuple[int, dict[str, Any]]:
    handler = starters.terminate_task._function.get_user_function().__wrapped__  # http_edge(terminate_task)
    req = func.HttpRequest("POST", f"http://h/api/tasks/{task_id}/terminate",
                           body=json.dumps({"reason": reason}).encode(), route_params={"task_id": task_id},
                           headers={"content-type": "application/json"})
    response = asyncio.run(handler(req, client))
    return response.status_code, json.loads(response.get_body())


def _tell(task_id: str, task_input: dict[str, Any], status: dict[str, Any], joined: bool = True) -> None:
    """The end of a run as orchestrations.task ``_tell`` writes its files: the done file beside its own drop, then
    the joined drops' (``_answer_joined_drops``: with the runs it ended, ``ended_runs``)."""
    run = task_input["run"]
    job = layout.pool_job_id(task_id, run)
    if task_input.get("drop"):
        notify_activity.drop_answer._function.get_user_function()(  # type: ignore[attr-defined]
            {"task_id": task_id, "drop": task_input["drop"], "kind": "done", "status": status, "run_job": job})
    if joined:
        ended = [r for r in [*task_input.get("ends_earlier", []), task_input.get("ends_run", "")] if r and r != run]
        notify_activity.answer_joined_drops._function.get_user_function()(  # type: ignore[attr-defined]
            {"task_id": task_id, "run": run, "status": status, "run_job": job,
             **({"ended_runs": ended} if ended else {})})


def _done(store: BlobStore, name: str) -> Any:
    return store.read_json_or_none(layout.INCOMING_CONTAINER, layout.drop_answer_blob(name, "done"))


def test_a_terminated_run_answers_its_drop_and_the_joined_ones_and_the_resuming_run_writes_its_end_over_them(
        source: str, store: BlobStore, unique_name: str) -> None:
    client = Client()
    first, second = f"{unique_name}-first.json", f"{unique_name}-second.json"
    receipt = _drop(store, client, first, {"container": source})
    task_id, started = receipt["id"], client.starts[0]
    assert receipt["started"] is True and started["drop"] == first and started["answers_joined"] is True
    joined = _drop(store, client, second, {"container": source})
    assert joined["started"] is False and joined["done_file"].endswith(layout.drop_answer_blob(second, "done"))
    client.instances[task_id]["custom"] = {"stage": "detecting", "started": STARTED, "images": 3}

    code, answer = _terminate(client, task_id, "the receiver is gone")
    assert code == 202 and answer["run"] == started["run"]
    assert answer["drop_answers"] == {"written": True, "stage": "terminated",
                                      "done_file": f"{layout.INCOMING_CONTAINER}/"
                                                   f"{layout.drop_answer_blob(first, 'done')}", "joined": 1}
    for name in (first, second):
        done = _done(store, name)
        assert done is not None, f"no done file beside {name}"
        assert done["id"] == task_id and done["stage"] == "terminated" and done["run"] == started["run"]
        assert done["reason"] == "the receiver is gone" and done["terminated_in"] == "detecting"
        assert done["started"] == STARTED
        assert 'post the same request again, without "rerun" or "only_new"' in done["hint"]
        assert "writes this file again" in done["hint"]
    # a request joining the terminated run now (its status read before the terminate) reads the marker: answered
    late = f"{unique_name}-late.json"
    store.write_json(layout.INCOMING_CONTAINER, late, {"container": source})
    from adapters import joined_drops
    status = joined_drops.join(store, source + "-state", task_id, started["run"], late)
    assert status is not None and status["stage"] == "terminated" and _done(store, late)["stage"] == "terminated"

    # the same request posted again (over HTTP: the resuming run has no drop of its own) resumes the task ...
    assert asyncio.run(starters.start_task(client, {"container": source}, starters.clients.settings())) == \
        (True, task_id)
    resumed = client.starts[-1]
    assert resumed["ends_run"] == started["run"] and "drop" not in resumed
    # ... and its end writes over every file that said terminated, its own drop's included (registered by the
    # terminate), once each
    resumed_end = {**FINAL, "started": "2026-12-07T22:00:00+00:00"}
    _tell(task_id, resumed, resumed_end)
    for name in (first, second, late):
        assert _done(store, name) == {"id": task_id, **resumed_end}, name


def test_a_run_terminated_while_telling_of_its_end_keeps_the_files_it_wrote_and_writes_its_end_where_it_had_not(
        source: str, store: BlobStore, unique_name: str) -> None:
    """Its done file and its joined drops' name its end (its ``started``, an ended stage): left as they are. A run
    terminated before it wrote them gets its end written, not ``terminated`` (a finished task is not resumed by a
    post: "post it again" would be the wrong word)."""
    client = Client()
    first, second = f"{unique_name}-first.json", f"{unique_name}-second.json"
    task_id = _drop(store, client, first, {"container": source})["id"]
    _drop(store, client, second, {"container": source})
    started = client.starts[0]
    client.instances[task_id]["custom"] = {**FINAL, "notification": {"sent": False, "status_code": 0, "reason": "x"}}
    _tell(task_id, started, FINAL)  # told, then terminated while its notification was tried again
    etags = {n: store.etag_or_none(layout.INCOMING_CONTAINER, layout.drop_answer_blob(n, "done"))
             for n in (first, second)}
    code, answer = _terminate(client, task_id, "the receiver stayed down")
    assert code == 202 and answer["drop_answers"]["written"] is True and answer["drop_answers"]["stage"] == "completed"
    for name in (first, second):
        assert store.etag_or_none(layout.INCOMING_CONTAINER, layout.drop_answer_blob(name, "done")) == etags[name], \
            f"the run's own done file beside {name} was written over"
        assert _done(store, name) == {"id": task_id, **FINAL}

    other = Client()  # the same, terminated before its end wrote anything
    third, fourth = f"{unique_name}-third.json", f"{unique_name}-fourth.json"
    store.ensure_container(f"{source}-b")  # another task
    task_id = _drop(store, other, third, {"container": f"{source}-b"})["id"]
    _drop(store, other, fourth, {"container": f"{source}-b"})
    other.instances[task_id]["custom"] = dict(FINAL)
    code, answer = _terminate(other, task_id, "stuck telling")
    assert code == 202 and answer["drop_answers"]["stage"] == "completed"
    for name in (third, fourth):
        assert _done(store, name) == {"id": task_id, **FINAL}, name


def test_a_done_file_the_run_wrote_for_its_end_is_kept_though_the_status_read_had_it_detecting(
        source: str, store: BlobStore, unique_name: str) -> None:
    """The run ended between the terminate's status read and its own writes (its ``drop_answer`` ran, or ran after
    the terminate, as queued calls do): the file naming its end is not written over with ``terminated``."""
    client = Client()
    first = f"{unique_name}-first.json"
    task_id = _drop(store, client, first, {"container": source})["id"]
    started = client.starts[0]
    client.instances[task_id]["custom"] = {"stage": "publishing", "started": STARTED}
    _tell(task_id, started, FINAL, joined=False)
    code, answer = _terminate(client, task_id, "late")
    assert code == 202 and answer["drop_answers"]["written"] is True
    assert _done(store, first) == {"id": task_id, **FINAL}
    # an earlier run's end (another ``started``) is no end of this run: written over
    client.instances[task_id] = {"runtime": "Running", "input": started,
                                 "custom": {"stage": "detecting", "started": "2026-12-07T23:00:00+00:00"}}
    assert _terminate(client, task_id, "again")[0] == 202
    assert _done(store, first)["stage"] == "terminated"


def test_a_failed_write_leaves_the_202_and_says_so(source: str, store: BlobStore, unique_name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client()
    first = f"{unique_name}-first.json"
    task_id = _drop(store, client, first, {"container": source})["id"]
    client.instances[task_id]["custom"] = {"stage": "detecting", "started": STARTED}

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("storage went away at https://acct.blob.core.windows.net/c/b?sv=1&sig=SECRET")

    monkeypatch.setattr(BlobStore, "update_json", refused)
    code, answer = _terminate(client, task_id, "r")
    assert code == 202 and answer["terminated"] is True
    assert answer["drop_answers"]["written"] is False and "SECRET" not in json.dumps(answer)
    assert "storage went away" in answer["drop_answers"]["reason"]
    assert f"GET /api/tasks/{task_id}" in answer["drop_answers"]["hint"]


def test_a_run_without_an_id_answers_its_own_drop_alone(source: str, store: BlobStore, unique_name: str) -> None:
    """A run started before runs had ids has no registry of joined drops: its own drop's file only, and no run's
    marker; a status without ``started`` names no end, so nothing there is taken for the run's own."""
    from adapters import terminated_drops
    from core import terminated_status

    drop, state = f"{unique_name}-old.json", f"{source}-state"
    store.write_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"), {"id": "t", "stage": "failed"})
    status = terminated_status.terminated_status({"stage": "detecting"}, "", "r", "h", "2026-12-08T00:00:00+00:00")
    assert status == {"stage": "terminated", "run": "", "terminated_in": "detecting", "reason": "r",
                      "terminated_at": "2026-12-08T00:00:00+00:00", "hint": "h"}
    answered = terminated_drops.answer_terminated_run(store, state, "task-x", "", drop, [], status, "")
    assert answered == {"written": True, "stage": "terminated", "done_file": f"{layout.INCOMING_CONTAINER}/"
                        f"{layout.drop_answer_blob(drop, 'done')}", "joined": 0}
    assert _done(store, drop) == {"id": "task-x", **status}
    assert list(store.list_names(state, "tasks/task-x/")) == []
    assert not terminated_status.names_end({"stage": "completed"}, "")
    assert not terminated_status.names_end({"stage": "terminated", "started": STARTED}, STARTED)
    assert terminated_status.names_end({"stage": "cancelled", "started": STARTED}, STARTED)


def test_a_run_started_over_http_that_none_joined_says_nothing_of_done_files_yet_answers_a_late_joiner(
        source: str, store: BlobStore, unique_name: str) -> None:
    """No done file to write: the 202 has no ``drop_answers``; the run's ended marker is written all the same, so a
    request that joins it as it is terminated (its status read before) gets its file from the marker."""
    from adapters import joined_drops

    client = Client()
    task_id = asyncio.run(starters.start_task(client, {"container": source}, starters.clients.settings()))[1]
    run = client.starts[0]["run"]
    client.instances[task_id]["custom"] = {"stage": "enumerating", "started": STARTED}
    code, answer = _terminate(client, task_id, "r")
    assert code == 202 and "drop_answers" not in answer
    late = f"{unique_name}-late.json"
    status = joined_drops.join(store, f"{source}-state", task_id, run, late)
    assert status is not None and status["stage"] == "terminated" and status["terminated_in"] == "enumerating"
    assert _done(store, late) == {"id": task_id, **status}


def test_a_run_that_replaced_the_terminated_one_before_the_status_was_read_again_lends_it_nothing(
        source: str, store: BlobStore, unique_name: str) -> None:
    """The status read again after the terminate (for the run's last word) found a later run of the task already
    started (the request dropped again at once: the platform had processed the terminate): its status is that run's,
    so the files of the terminated run are written from the status read before the terminate, not from the later
    run's stage and ``started`` (which would also have kept a done file of that later run's end as this run's)."""
    client = Client()
    first = f"{unique_name}-first.json"
    task_id = _drop(store, client, first, {"container": source})["id"]
    started = client.starts[0]
    client.instances[task_id]["custom"] = {"stage": "detecting", "started": STARTED, "images": 3}
    later = {**started, "run": "r20261207T230000Z-abcdef", "ends_run": started["run"]}
    terminate, reads = client.terminate, []

    async def terminated_then_replaced(instance_id: str, reason: str) -> None:
        await terminate(instance_id, reason)
        reads.append(0)

    original = client.get_status

    async def get_status(instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if reads:
            reads.append(0)
            if len(reads) > 2:  # the route's own read after the terminate saw it; the next finds the later run
                client.instances[instance_id] = {"runtime": "Running", "input": later, "custom": {
                    "stage": "failed", "started": "2026-12-07T23:00:00+00:00", "error": "the later run's"}}
        return await original(instance_id, *args, **kwargs)

    client.terminate, client.get_status = terminated_then_replaced, get_status  # type: ignore[method-assign]
    code, answer = _terminate(client, task_id, "r")
    assert code == 202 and answer["run"] == started["run"], answer
    assert len(reads) > 2, "the status was not read again after the terminate: the test tests nothing"
    done = _done(store, first)
    assert done["stage"] == "terminated" and done["run"] == started["run"], done
    assert done["terminated_in"] == "detecting" and done["started"] == STARTED, done


def test_a_done_file_a_later_run_of_the_task_wrote_is_not_written_over_with_terminated(
        source: str, store: BlobStore, unique_name: str) -> None:
    """The 202 writes one file after another (many joined drops: minutes); a later run of the task (the request
    dropped again once the platform had processed the terminate, ended fast) may have written its end beside the
    same requests before the 202 reached them: that end is newer than this run's ``terminated`` and stays. An
    earlier run's end (another task's too, as a run's own end treats it) is written over."""
    client = Client()
    first, second, third = (f"{unique_name}-{n}.json" for n in ("first", "second", "third"))
    task_id = _drop(store, client, first, {"container": source})["id"]
    _drop(store, client, second, {"container": source})
    _drop(store, client, third, {"container": source})
    client.instances[task_id]["custom"] = {"stage": "detecting", "started": STARTED}
    later_end = {"id": task_id, **FINAL, "started": "2026-12-07T21:30:00.25+00:00", "stage": "failed"}
    earlier_end = {"id": task_id, **FINAL, "started": "2026-12-07T20:00:00+00:00"}
    store.write_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(first, "done"), later_end)
    store.write_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(second, "done"), later_end)
    store.write_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(third, "done"), earlier_end)
    code, answer = _terminate(client, task_id, "r")
    assert code == 202 and answer["drop_answers"]["written"] is True, answer
    assert _done(store, first) == later_end and _done(store, second) == later_end
    assert _done(store, third)["stage"] == "terminated"


def test_the_202_stops_writing_before_the_front_ends_cut_and_says_what_it_left(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Azure's front end cuts an HTTP function at 230 s; the 202 writes each joined request's file in turn (three
    storage calls each, a slow or throttled account's retries much longer), so a run many requests joined took past
    it: the caller got a bare 502 for a terminate that was made (sent again: 409 "not running"). The writes stop by
    the POST's answer deadline (``POST_ANSWER_S``), the run's own drop first; ``drop_answers`` says how many were
    written and that the others were not. A clock that moves 80 s with each conditional write stands for the slow
    account."""
    client = Client()
    first = f"{unique_name}-first.json"
    joiners = [f"{unique_name}-j{i}.json" for i in range(3)]
    task_id = _drop(store, client, first, {"container": source})["id"]
    for name in joiners:
        _drop(store, client, name, {"container": source})
    client.instances[task_id]["custom"] = {"stage": "detecting", "started": STARTED}
    now = [1000.0]
    monkeypatch.setattr(starters, "_clock", lambda: now[0])
    update = BlobStore.update_json

    def slow_update(self: BlobStore, *args: Any, **kwargs: Any) -> Any:
        now[0] += 80.0
        return update(self, *args, **kwargs)

    monkeypatch.setattr(BlobStore, "update_json", slow_update)
    code, answer = _terminate(client, task_id, "r")
    assert code == 202 and answer["terminated"] is True, answer
    said = answer["drop_answers"]
    assert now[0] - 1000.0 <= starters.POST_ANSWER_S + 80.0, "it wrote on past the answer's deadline"
    assert said["written"] is False and said["stage"] == "terminated", said
    assert said["done_file"].endswith(layout.drop_answer_blob(first, "done")), said
    assert _done(store, first)["stage"] == "terminated"  # the run's own drop first
    written = [n for n in joiners if _done(store, n) is not None]
    assert said["joined"] == len(written) < len(joiners), said
    assert "230 s" in said["reason"] and "the others were not written" in said["reason"], said
    assert "post the same request again" in said["hint"], said


def test_the_done_files_wait_for_the_terminate_to_be_processed_and_tell_the_end_an_episode_under_way_reached(
        source: str, store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform processes a terminate once the episode under way has ended; that episode may be the run's end
    (its last activity's result: the final status set, its own drop's file scheduled, the joined drops' never). Read
    before it, the status said ``publishing``: the joined requests were told ``terminated``, "post it again", of a
    task that shows completed (a post finds it ended and writes nothing). The 202 waits for the instance to read
    Terminated (bounded), then writes its last status: the end."""
    client = Client()
    first, second = f"{unique_name}-first.json", f"{unique_name}-second.json"
    task_id = _drop(store, client, first, {"container": source})["id"]
    _drop(store, client, second, {"container": source})
    client.instances[task_id]["custom"] = {"stage": "publishing", "started": STARTED}
    monkeypatch.setattr(terminated_answers, "SETTLE_POLL_S", 0.0)
    reads_after = []
    original = client.get_status

    async def queued(instance_id: str, reason: str) -> None:  # Running until the episode under way has ended
        reads_after.append(0)

    async def get_status(instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if reads_after:
            reads_after.append(0)
            if len(reads_after) > 4:  # the episode ended with the run's end, then the terminate was processed
                client.instances[instance_id].update(runtime="Terminated", custom=dict(FINAL))
        return await original(instance_id, *args, **kwargs)

    client.terminate, client.get_status = queued, get_status  # type: ignore[method-assign]
    code, answer = _terminate(client, task_id, "r")
    assert code == 202 and answer["drop_answers"]["stage"] == "completed", answer
    for name in (first, second):
        assert _done(store, name) == {"id": task_id, **FINAL}, name
