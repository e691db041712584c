"""POST /api/tasks/{id}/terminate: the app's own way to end a task's run (a stalled one above all), with the function
key every task route takes, instead of the Durable management API's system-key URL.

The SDK's real ``DurableOrchestrationClient`` is driven, its HTTP calls answered as the Durable extension answers
them (azure-functions-durable-extension ``HttpApiHandler``: a status read 200/202 with the instance, 404 without one;
``HandleTerminateInstanceRequestAsync``: 404 for an unknown instance, 410 Gone for a finished one (Completed, Failed,
Terminated), else 202 with the terminate queued, so the instance still reads Running until it is processed).
"""
from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.durable_functions as df
import azure.functions as func
import pytest

from api import starters
from devhost.http_server import binding_json
from gpu_batch import layout

TASK = "task-0123456789abcdef0123"
FINISHED = ("Completed", "Failed", "Terminated")


class Extension(df.DurableOrchestrationClient):
    """The SDK's client, its management API calls answered from ``instance`` as the extension does. ``at_once``: the
    instance reads Terminated right after the terminate (devhost's engine) rather than still Running (Azure, where
    dtfx processes the queued message later). ``ends_at_terminate``: the instance ends by itself (this runtime
    status) just before the terminate arrives."""

    def __init__(self, runtime: str | None, stage: str = "detecting", owner: str = "", at_once: bool = False,
                 ends_at_terminate: str = "") -> None:
        super().__init__(binding_json("http://127.0.0.1:7071", "hub"))
        self.instance = None if runtime is None else {
            "name": "task_orchestrator", "instanceId": TASK, "runtimeStatus": runtime,
            "createdTime": "2026-01-01T00:00:00Z", "lastUpdatedTime": "2026-01-02T00:00:00Z",
            "input": json.dumps({"run": "r1", **({"owner": owner} if owner else {})}), "output": None,
            "customStatus": {"stage": stage}}
        self.terminates: list[str] = []

        async def get(url: str) -> list[Any]:
            if self.instance is None:
                return [404, ""]
            return [200 if self.instance["runtimeStatus"] in FINISHED else 202, dict(self.instance)]

        async def post(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
            assert "/terminate?reason=" in url, url
            self.terminates.append(url)
            if self.instance is None:
                return [404, None]
            if ends_at_terminate:
                self.instance["runtimeStatus"] = ends_at_terminate
            if self.instance["runtimeStatus"] in FINISHED:
                return [410, None]
            if at_once:
                self.instance["runtimeStatus"] = "Terminated"
            return [202, None]

        self._get_async_request = get
        self._post_async_request = post

    def reason(self) -> str:
        return parse_qs(urlsplit(self.terminates[-1]).query)["reason"][0]


def _terminate(client: Extension, body: Any = None, headers: dict[str, str] | None = None,
               raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    handler = starters.terminate_task._function.get_user_function().__wrapped__  # http_edge(terminate_task)
    data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
    req = func.HttpRequest("POST", f"http://h/api/tasks/{TASK}/terminate", body=data, route_params={"task_id": TASK},
                           headers={"content-type": "application/json", **(headers or {})})
    response = asyncio.run(handler(req, client))
    return response.status_code, json.loads(response.get_body())


@pytest.mark.parametrize("at_once", [False, True])
@pytest.mark.parametrize("runtime", ["Running", "Pending"])
def test_a_running_task_is_terminated_and_told_how_to_resume(runtime: str, at_once: bool) -> None:
    """202 whether the instance still reads Running after the terminate (Azure: the message is queued) or reads
    Terminated at once (devhost); the hint says its pool work runs on until the request is posted again, which ends
    it and resumes, names the pool job, and says how to drop the task instead."""
    client = Extension(runtime, "detecting", at_once=at_once)
    status, body = _terminate(client)
    assert status == 202, body
    assert body["terminated"] is True and body["run"] == "r1" and body["stage"] == "detecting"
    assert len(client.terminates) == 1 and f"/instances/{TASK}/terminate?" in client.terminates[0]
    assert client.reason() == f"terminated through POST /api/tasks/{TASK}/terminate"
    hint = body["hint"]
    assert "stage becomes 'terminated'" in hint and f"GET /api/tasks/{TASK} shows it" in hint
    assert f"pool job {layout.pool_job_id(TASK, 'r1')}) runs on until you post the same request again" in hint
    assert "which ends that work and resumes the task from the results already written" in hint
    assert "Pool jobs by hand" in hint


def test_a_task_awaiting_confirmation_may_be_terminated_but_cancel_is_named_as_the_better_tool() -> None:
    client = Extension("Running", "awaiting_confirmation")
    status, body = _terminate(client)
    assert status == 202 and len(client.terminates) == 1, body
    assert f"POST /api/tasks/{TASK}/cancel is the better tool" in body["hint"]
    assert "sent nothing to the pool" in body["hint"] and "pool job" not in body["hint"]


def test_a_task_telling_of_its_end_is_said_to_keep_its_results() -> None:
    """A run whose results are complete and served, still Running while it tells of its end (the notification's
    retries): terminated, it keeps its finished stage (api.starters ``_stage``) and a post of its request finds it;
    the hint must not send the operator to resume pool work that is over."""
    client = Extension("Running", "completed")
    status, body = _terminate(client)
    assert status == 202 and body["stage"] == "completed", body
    assert "results stay complete and served" in body["hint"] and "pool job" not in body["hint"]
    client = Extension("Running", "cancelled")  # an end without results, told likewise: no pool work left to end
    status, body = _terminate(client)
    assert status == 202 and "its pool work had ended already" in body["hint"] and "pool job" not in body["hint"]


def test_a_failed_run_telling_of_its_end_whose_job_stayed_open_is_not_said_to_have_ended_its_pool_work() -> None:
    """A run telling of its failure whose failure handling could not close its pool job says so in its status's
    error ("could not be closed and may still run tasks", orchestrations.task ``task_orchestrator``); the 202 said
    "its pool work had ended already", contradicting it. It now names the job, says it may still run tasks and that
    posting the request again ends it (the run was terminated: api.starters ``_ended_runs``). Fails without the
    change."""
    from core.contracts import JOB_MAY_STILL_RUN

    job = layout.pool_job_id(TASK, "r1")
    client = Extension("Running", "failed")
    assert client.instance is not None
    client.instance["customStatus"] = {
        "stage": "failed", "pool_job": job,
        "error": f"no image was processed (the pool job {job} {JOB_MAY_STILL_RUN}: sign in with 'az batch ...')"}
    status, body = _terminate(client)
    assert status == 202 and body["stage"] == "failed", body
    hint = body["hint"]
    assert "its pool work had ended already" not in hint, hint
    assert f"could not close its pool job {job}, which may still run tasks" in hint, hint
    assert "post the same request again, without \"rerun\" or \"only_new\", which ends that job" in hint, hint
    # its failure handling closed the job: as before
    client = Extension("Running", "failed")
    assert client.instance is not None
    client.instance["customStatus"] = {"stage": "failed", "pool_job": job, "error": "no image was processed"}
    status, body = _terminate(client)
    assert status == 202 and "its pool work had ended already" in body["hint"], body


@pytest.mark.parametrize("stage", ["cancelled", "expired", "estimated"])
def test_an_end_without_results_terminated_while_telling_warns_that_a_plain_post_now_resumes_it(stage: str) -> None:
    """Terminated while telling of such an end, the task shows 'terminated' (api.starters ``_stage``), so a plain
    post of its request resumes it (a cancelled task's pool work runs after all) where before it found the task
    ended; the stalled hint warned of it (core.stall), the 202 did not. Fails without the change."""
    status, body = _terminate(Extension("Running", stage))
    assert status == 202 and body["stage"] == stage, body
    hint = body["hint"]
    assert "its pool work had ended already" in hint and "pool job" not in hint, hint
    assert "resumes it instead of finding it" in hint and "post it again only to run it after all" in hint, hint
    status, body = _terminate(Extension("Running", "failed"))  # resumed by a plain post terminated or not
    assert status == 202 and "instead of finding it" not in body["hint"], body


def test_the_reason_is_sent_bounded_and_without_secrets() -> None:
    client = Extension("Running")
    reason = "stalled; the hook https://hooks.example.org/x?sig=SECRET1 & more"
    status, body = _terminate(client, {"reason": reason})
    assert status == 202, body
    sent = client.reason()
    # the URL's query is taken out (core.errors.without_secrets); the rest arrives whole, its '&' quoted by the SDK
    assert sent == "stalled; the hook https://hooks.example.org/x?[redacted] & more", sent

    for bad, said in [({"reason": "r" * 201}, "longer than 200"), ({"reason": 5}, "must be a string"),
                      ({"why": "x"}, "unknown field"), (["x"], "must be a JSON object"),
                      ({"reason": "a\nb"}, "control characters")]:
        client = Extension("Running")
        status, body = _terminate(client, bad)
        assert status == 400 and said in body["error"], (bad, body)
        assert client.terminates == []
    client = Extension("Running")
    status, body = _terminate(client, raw=b"not json")
    assert status == 400 and client.terminates == [], body


@pytest.mark.parametrize("runtime, stage, said", [
    ("Terminated", "detecting", "post the same request again, without \"rerun\" or \"only_new\", to resume it"),
    ("Failed", "detecting", "post the same request again, without \"rerun\" or \"only_new\", to resume it"),
    ("Completed", "completed", f"GET /api/tasks/{TASK} shows how it ended")])
def test_a_task_not_running_answers_409_and_terminates_nothing(runtime: str, stage: str, said: str) -> None:
    client = Extension(runtime, stage)
    status, body = _terminate(client)
    assert status == 409 and "is not running" in body["error"] and said in body["hint"], body
    assert client.terminates == []


@pytest.mark.parametrize("ended", ["Completed", "Failed"])
def test_a_task_that_ended_by_itself_just_before_the_terminate_answers_409_not_202(ended: str) -> None:
    """The extension answers 410 Gone, which the SDK's ``terminate`` takes as success (it raises for 404 and
    unexpected codes only): the status read after the terminate tells the task ended by itself."""
    client = Extension("Running", "merging", ends_at_terminate=ended)
    status, body = _terminate(client)
    assert status == 409 and "ended by itself before the terminate" in body["error"], body
    assert "nothing was terminated" in body["hint"]


def test_an_unknown_task_is_404_and_a_malformed_id_too() -> None:
    client = Extension(None)
    status, body = _terminate(client)
    assert status == 404 and f"no task {TASK}" in body["error"] and client.terminates == [], body
    handler = starters.terminate_task._function.get_user_function().__wrapped__
    req = func.HttpRequest("POST", "http://h/api/tasks/nope/terminate", body=b"", route_params={"task_id": "nope"})
    assert asyncio.run(handler(req, client)).status_code == 404


def _principal(oid: str, roles: tuple[str, ...] = ()) -> dict[str, str]:
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid}] + [
        {"typ": "roles", "val": r} for r in roles]
    raw = json.dumps({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}).encode()
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(raw).decode(), "X-MS-CLIENT-PRINCIPAL-ID": oid}


def test_with_easyauth_only_the_owner_or_an_operator_may_terminate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another caller's task answers 403 and is not terminated; the owner's terminate names the owner in the reason
    kept with the run (who ended it); without an identity: 401."""
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("TRAPBATCH_CALLER_AUTH", "easyauth")
    client = Extension("Running", owner="ana-oid")
    status, body = _terminate(client, headers=_principal("bo-oid"))
    assert status == 403 and client.terminates == [], body
    status, body = _terminate(client, headers={})
    assert status == 401 and client.terminates == [], body
    status, body = _terminate(client, {"reason": "stuck"}, headers=_principal("ana-oid"))
    assert status == 202 and client.reason() == "stuck (by ana-oid)", body
    client = Extension("Running", owner="ana-oid")
    status, body = _terminate(client, headers=_principal("op-oid", ("trapbatch.operator",)))
    assert status == 202 and len(client.terminates) == 1, body


def test_a_terminated_tasks_missing_results_say_to_post_the_request_again_to_resume_not_to_rerun() -> None:
    """A terminated task is resumed by the same request posted again (README: "a failed or terminated task also
    starts again without it"); its results answer said to post it with "rerun": true, which starts a new generation
    and runs every image again. Fails without the change."""
    from api.starters import _no_results_hint

    hint = _no_results_hint(TASK, {"runtime_status": "Terminated", "stage": "terminated"})
    assert "rerun\": true" not in hint and "post the same request again" in hint and "resume" in hint, hint
    cancelled = _no_results_hint(TASK, {"runtime_status": "Completed", "stage": "cancelled"})
    assert "\"rerun\": true" in cancelled, cancelled  # a cancelled task is run again only as a re-run


def test_a_reason_that_is_not_text_is_refused_400_not_500() -> None:
    """JSON may carry a lone surrogate (``"\\ud800"``), which Python's json reads into a str that no UTF-8 holds: the
    SDK's ``terminate`` quotes the reason into its URL (``urllib.parse.quote``, UTF-8 strict) and raised
    UnicodeEncodeError, answered 500 "a trapbatch bug". It is the caller's text: 400, nothing sent."""
    client = Extension("Running")
    status, body = _terminate(client, raw=b'{"reason": "stalled \\ud800 since Monday"}')
    assert status == 400 and "'reason'" in body["error"] and client.terminates == [], body


@pytest.mark.parametrize("stage, said", [
    ("starting", "it had sent nothing to the pool"), ("enumerating", "it had sent nothing to the pool"),
    ("merging", "its pool work had ended"), ("publishing", "its pool work had ended")])
def test_a_run_without_pool_work_running_is_not_said_to_leave_a_pool_job_to_end(stage: str, said: str) -> None:
    """The pool job is made by a shard group's first submit (activities.pool ``_ensure_job_once``), in stage
    detecting, and closed once the groups end, before merging (orchestrations.task ``_run_task``). A run terminated
    before or after that has no pool work running: the 202 said its pool work and pool job "run on" until a post and
    to end that job by hand to drop the task, sending the operator after a job that does not exist or was closed
    (a stalled merge is a main case: its fan-outs are the largest, 35fa9f8)."""
    client = Extension("Running", stage)
    status, body = _terminate(client)
    assert status == 202 and body["stage"] == stage, body
    hint = body["hint"]
    assert said in hint and "pool job" not in hint and "runs on" not in hint, hint
    assert "stage becomes 'terminated'" in hint, hint
    assert "post the same request again, without \"rerun\" or \"only_new\", to resume it" in hint, hint


@pytest.mark.parametrize("stage, waiting, said", [
    ("enumerating", {"step": "close_pool_job", "reason": "ServiceUnavailable"},
     "it was still ending the pool work the task's earlier terminated (or failed) runs left"),
    ("enumerating", None, "it may still have been ending the pool work"),
    ("starting", None, "it had not yet ended the pool work"),
    ("enumerating", {"step": "enumerate_images", "reason": "ServerBusy"}, "")])
def test_a_resumed_run_terminated_while_ending_its_predecessors_work_says_that_work_may_run_on(
        stage: str, waiting: dict[str, Any] | None, said: str) -> None:
    """A run that replaced a terminated one (input ``ends_run``, ``ends_earlier``) first ends that run's shard groups
    and pool job, in stage enumerating (orchestrations.task ``_end_terminated_run``), the job's close held in its
    retries for as long as a Batch outage lasts. Terminated there, the 202 said "it had sent nothing to the pool",
    true of it alone: the earlier run's job may still be open and run tasks, and posting the request again ends it
    too (api.starters ``_ended_runs`` passes a terminated run's ``ends_run`` on). Said so, with the wait the status
    shows; a wait on a later step (the listing's) means the earlier work was ended: the words are as before. Fails
    without the change."""
    client = Extension("Running", stage)
    assert client.instance is not None
    client.instance["input"] = json.dumps({"run": "r3", "ends_run": "r2", "ends_earlier": ["r1"]})
    client.instance["customStatus"] = {"stage": stage, **({"waiting": waiting} if waiting else {})}
    status, body = _terminate(client)
    assert status == 202 and body["run"] == "r3", body
    hint = body["hint"]
    if not said:
        assert "it had sent nothing to the pool (it was starting or listing the images)" in hint, hint
        assert "pool job" not in hint, hint
        return
    assert said in hint and "it had sent nothing to the pool itself" in hint, hint
    assert f"pool jobs {layout.pool_job_id(TASK, 'r1')}, {layout.pool_job_id(TASK, 'r2')}" in hint, hint
    assert layout.pool_job_id(TASK, "r3") not in hint, hint  # its own job was never made
    assert "post the same request again, without \"rerun\" or \"only_new\", which ends that work too" in hint
    if waiting:
        assert "waiting on its step close_pool_job (ServiceUnavailable)" in hint, hint


def _hub_error() -> list[Any]:
    """The extension's management API when the task hub's storage fails (HttpApiHandler's catch-all 500 body)."""
    return [500, {"Message": "Something went wrong while processing your request", "ExceptionMessage": "busy",
                  "ExceptionType": "Azure.RequestFailedException"}]


def test_a_terminate_sent_whose_status_cannot_be_read_after_it_answers_202_not_503() -> None:
    """The status read after the terminate (to tell a 410 apart) may find the task hub busy (TaskHubUnavailable).
    The terminate was queued by then: answered 503 "retry", the CLI sent it again (it retries the app's 503 with
    Retry-After for any request) and got 409 "is not running (stage: terminated)", exit 4, for a terminate that was
    made. As confirm's read after its raise (111abc5), the 202 stands."""
    client = Extension("Running", "detecting")
    get = client._get_async_request

    async def busy_after_the_terminate(url: str) -> list[Any]:
        return _hub_error() if client.terminates else await get(url)

    client._get_async_request = busy_after_the_terminate  # type: ignore[method-assign]
    status, body = _terminate(client)
    assert status == 202 and body["terminated"] is True and len(client.terminates) == 1, body
    assert f"pool job {layout.pool_job_id(TASK, 'r1')})" in body["hint"], body


def test_a_terminate_the_extension_fails_while_the_task_runs_answers_503_retry_not_a_bug() -> None:
    """The extension answers its catch-all 500 when the task hub's storage fails during the terminate (HttpApiHandler
    ``HandleRequestAsync``; its InvalidOperationException for an instance no longer running is told apart by the
    status read after it). The SDK raises a bare Exception for it; with the task still running that was re-raised:
    500 "this is a trapbatch bug ... report it", which no client retries. It is the hub: 503, retry."""
    client = Extension("Running", "detecting")

    async def hub_fails(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
        client.terminates.append(url)
        return _hub_error()

    client._post_async_request = hub_fails  # type: ignore[method-assign]
    status, body = _terminate(client)
    assert status == 503 and "retry" in body["hint"] and "bug" not in body["hint"], body
    assert "terminate" in body["error"], body


def test_a_run_replaced_between_the_read_and_the_terminate_is_not_answered_as_the_run_terminated() -> None:
    """A task's runs are executions of one instance id, and the terminate names the instance, not the run: the run
    read (r1) ended and a plain post resumed the task as run r2 between the status read and the terminate (another
    operator terminated r1 and posted the request again), so the terminate reached r2, or, arriving before r2 started,
    was answered 410 and reached nothing. The 202 named r1 and its stage, and told the operator r1's pool job runs on
    and is to be ended by hand, with nothing said of r2, as confirm and cancel had answered before 111abc5. The status
    read after the terminate shows the run now: 409 naming both, and what to do about r2."""
    client = Extension("Running", "detecting")
    post = client._post_async_request

    async def replaced_first(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
        assert client.instance is not None
        client.instance["input"] = json.dumps({"run": "r2"})  # r1 terminated, the request posted again: r2 runs
        client.instance["customStatus"] = {"stage": "enumerating"}
        return await post(url, data, *args, **kwargs)

    client._post_async_request = replaced_first  # type: ignore[method-assign]
    status, body = _terminate(client)
    assert status == 409 and len(client.terminates) == 1, body
    assert "run r1" in body["error"] and "run r2" in body["error"] and "replaced" in body["error"], body
    assert layout.pool_job_id(TASK, "r1") not in json.dumps(body), body  # r1's job is r2's to end (ends_run)
    assert f"GET /api/tasks/{TASK}" in body["hint"] and f"POST /api/tasks/{TASK}/terminate" in body["hint"], body


def test_the_terminate_answer_still_promises_the_tasks_run_and_describes_a_repeat_runs() -> None:
    """A client generated from the description before targets (``Terminated``: id, terminated, run, stage required)
    reads ``run`` of every task terminate's 202. Before: ``Terminated`` required ``target`` instead of ``run``, so a
    task's answer without its run passed the description (and a generated client made ``run`` optional)."""
    from tests.openapi_answers import schema_name_of, undescribed

    status, task_answer = _terminate(Extension("Running", "detecting"))
    assert status == 202 and task_answer["run"] == "r1", task_answer
    schema = schema_name_of("POST", f"/api/tasks/{TASK}/terminate", 202)
    assert schema is not None
    assert undescribed(schema, task_answer) == []
    assert undescribed(schema, {k: v for k, v in task_answer.items() if k != "target"}) == []  # as answered before
    assert undescribed(schema, {k: v for k, v in task_answer.items() if k != "run"}) != []
    repeat_answer = {"id": TASK, "terminated": True, "target": "removal", "stage": "merging",
                     "status_url": f"http://h/api/tasks/{TASK}/repeats", "hint": "send the same choice again"}
    assert undescribed(schema, repeat_answer) == []
    assert undescribed(schema, {**repeat_answer, "target": "task"}) != []  # a task's answer names its run
