"""Deleting a task: what ``core.task_deletion`` plans from the task hub's instances (what refuses, what is ended, what
is purged and in which order), the prefixes it deletes, and ``trapbatch delete`` (sends DELETE until done)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from cli import main as cli_main
from core import task_deletion as td
from core.ids import replaced_sweep_instance_id

TASK = "task-0123456789abcdef0123"
OTHER = "task-0123456789abcdef0124"


def test_the_prefixes_hold_the_task_alone_and_every_generation() -> None:
    assert td.state_prefixes(TASK) == (f"tasks/{TASK}/", f"results/{TASK}/")
    assert td.web_prefix(TASK) == f"{TASK}-"
    from gpu_batch import layout

    for key in (TASK, layout.generation_key(TASK, "r202612070000ab12")):  # a re-run's folder too
        assert layout.preview_folder_name(key, "00ff").startswith(td.web_prefix(TASK))
        assert layout.results_blob(key).startswith(td.state_prefixes(TASK)[1])
        assert layout.manifest_blob(key, "s00001", 1).startswith(td.state_prefixes(TASK)[0])
    assert not layout.preview_folder_name(OTHER, "00ff").startswith(td.web_prefix(TASK))


# a replaced generation's sweep (orchestrations.replaced_sweep) waits TRAPBATCH_KEEP_REPLACED_DAYS on timers: a
# deletion ends it as it ends the expiry, rather than refusing for a month
SWEEP = replaced_sweep_instance_id(TASK, "first", datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc))


def test_a_finished_task_is_purged_helpers_first_and_its_timers_are_ended() -> None:
    plan = td.plan(TASK, [(TASK, "Completed"), (f"{TASK}-shards-0000", "Completed"), (f"{TASK}-expiry", "Running"),
                          (f"{TASK}-zip", "Completed"), (f"{TASK}-zip-sweep-20261207T120000000000", "Pending"),
                          (f"{TASK}-repeats", "Terminated"), (OTHER, "Running"), (OTHER + "-expiry", "Running"),
                          (SWEEP, "Running")])
    assert plan.refusals == ()
    assert plan.to_end == (f"{TASK}-expiry", SWEEP, f"{TASK}-zip-sweep-20261207T120000000000")
    assert plan.to_purge[-1] == TASK
    assert sorted(plan.to_purge[:-1]) == sorted([f"{TASK}-shards-0000", f"{TASK}-expiry", f"{TASK}-zip",
                                                 f"{TASK}-zip-sweep-20261207T120000000000", f"{TASK}-repeats", SWEEP])


@pytest.mark.parametrize("running, words", [
    (TASK, f"POST /api/tasks/{TASK}/cancel"),
    (f"{TASK}-repeats", '{"target": "removal"}'),
    (f"{TASK}-repeat-search", '{"target": "search"}'),
    (f"{TASK}-previews", '{"target": "previews"}'),
    (f"{TASK}-zip", '{"target": "zip"}'),
    (f"{TASK}-shards-r202612070000ab12-0001", "post the same request again"),
])
def test_a_working_orchestration_refuses_the_deletion_and_says_what_to_end(running: str, words: str) -> None:
    plan = td.plan(TASK, [(TASK, "Completed"), (running, "Running")])
    assert [iid for iid, _ in plan.refusals] == [running]
    error, hint = td.refusal_text(TASK, plan.refusals)
    assert running in error and words in hint


def test_the_tasks_own_run_is_named_first_and_the_others_counted() -> None:
    plan = td.plan(TASK, [(f"{TASK}-shards-0000", "Running"), (TASK, "Pending"), (f"{TASK}-zip", "Running")])
    assert plan.refusals[0][0] == TASK
    error, hint = td.refusal_text(TASK, plan.refusals)
    assert f"({TASK}, {TASK}-shards-0000, {TASK}-zip)" in error
    assert hint.endswith(f"2 other orchestration(s) of the task run too: DELETE /api/tasks/{TASK} again says what "
                         "is left")


@pytest.mark.parametrize("running, command", [
    (TASK, f"(trapbatch cancel {TASK}) or end it now (trapbatch terminate {TASK})"),
    (f"{TASK}-repeats", f"(trapbatch terminate {TASK} --target removal)"),
    (f"{TASK}-repeat-search", f"(trapbatch terminate {TASK} --target search)"),
    (f"{TASK}-previews", f"(trapbatch terminate {TASK} --target previews)"),
    (f"{TASK}-zip", f"(trapbatch terminate {TASK} --target zip)"),
    (f"{TASK}-shards-0000", f"submit the same request again (the new run ends that work), cancel that run "
                            f"(trapbatch cancel {TASK})"),
])
def test_the_refusal_reads_as_commands_at_the_cli_each_said_once(running: str, command: str) -> None:
    """The 409's hint names routes, which ``trapbatch delete`` shows as its commands (cli.hints.translate). Before,
    the hint named both and the CLI printed each command twice ("(trapbatch cancel X, `trapbatch cancel`)"), and
    the others running were to be sent "DELETE again", which no command is."""
    alone = td.plan(TASK, [(running, "Running")])
    shown = cli_main.in_cli_words(td.refusal_text(TASK, alone.refusals)[1])
    assert command in shown
    assert "`" not in shown and "/api/" not in shown and "POST" not in shown
    with_another = td.plan(TASK, [(running, "Running"), (f"{TASK}-shards-0001", "Running")])
    shown = cli_main.in_cli_words(td.refusal_text(TASK, with_another.refusals)[1])
    assert shown.endswith(f"1 other orchestration(s) of the task run too: trapbatch delete {TASK} again says what is "
                          "left")


class _Session:
    """A requests.Session stand-in answering DELETE with the given (status, body) in order."""

    def __init__(self, *answers: tuple[int, dict[str, Any]]) -> None:
        import requests

        self.answers, self.sent, self.headers, self._requests = list(answers), [], {}, requests

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.sent.append((method, url, kwargs.get("timeout")))
        status, body = self.answers.pop(0)
        resp = self._requests.Response()
        resp.status_code, resp._content = status, json.dumps(body).encode()
        resp.headers = self._requests.structures.CaseInsensitiveDict({"Content-Type": "application/json"})
        return resp


def _run(session: _Session, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from cli.client import ApiClient

    monkeypatch.setattr(cli_main, "ApiClient", lambda config: ApiClient(config, session=session,  # type: ignore[arg-type]
                                                                        sleep=lambda s: None))
    return cli_main.main(["--url", "https://app.example", "--key", "k", "delete", TASK, *args])


def test_delete_sends_the_delete_again_until_the_app_says_deleted(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    session = _Session((202, {"id": TASK, "deleted": False, "blobs": {"state": 9000, "web": 0}, "hint": "again"}),
                       (200, {"id": TASK, "deleted": True, "blobs": {"state": 1000, "web": 20}, "instances": 4,
                              "hint": "gone"}))
    assert _run(session, monkeypatch, "--yes") == 0
    assert [(m, u) for m, u, _ in session.sent] == [("DELETE", f"https://app.example/api/tasks/{TASK}")] * 2
    assert all(timeout >= 230 for _, _, timeout in session.sent)  # the app deletes for up to 150 s per request
    captured = capsys.readouterr()
    assert "9000 files deleted so far" in captured.err
    assert f"deleted {TASK}: 1020 files, 4 task hub records; gone" in captured.out


def test_a_404_after_the_deletion_went_on_means_an_earlier_request_finished_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A request whose answer was lost (a timeout, a dropped connection, tried again by the client) may have purged
    the task: the next one's 404 is the deletion done, not an unknown task. A first request's 404 is the app's."""
    unknown = (404, {"error": f"no task {TASK}", "hint": "check the id"})
    session = _Session((202, {"id": TASK, "deleted": False, "blobs": {"state": 9000, "web": 0}, "hint": "again"}),
                       unknown)
    assert _run(session, monkeypatch, "--yes") == 0
    assert f"deleted {TASK}: an earlier request of this command finished it" in capsys.readouterr().out

    lost = _Session(unknown)
    real_request = lost.request

    def dropped_then_answered(method: str, url: str, **kwargs: Any) -> Any:
        if not lost.sent:  # the first try's answer never came: the client tries again, and its 404 is the answer
            lost.sent.append((method, url, kwargs.get("timeout")))
            import requests

            raise requests.exceptions.ConnectionError("connection reset")
        return real_request(method, url, **kwargs)

    lost.request = dropped_then_answered  # type: ignore[method-assign]
    assert _run(lost, monkeypatch, "--yes") == 0
    assert len(lost.sent) == 2 and "an earlier request of this command finished it" in capsys.readouterr().out
    assert _run(_Session(unknown), monkeypatch, "--yes") == 4  # never reached the app before: an unknown task


def test_delete_asks_first_and_a_no_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    session = _Session()
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    assert _run(session, monkeypatch) == 2
    assert session.sent == []


def test_delete_with_its_input_ended_sends_nothing_and_names_yes(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A script (no terminal, its standard input ended) gets no answer to the question: before, click's Abort for that
    EOF was said as 'stopped (Ctrl-C)', exit 130, with no word of --yes."""
    session = _Session()
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(""))
    assert _run(session, monkeypatch) == 2
    assert session.sent == []
    said = capsys.readouterr().err
    assert "nothing deleted" in said and f"trapbatch delete {TASK} --yes" in said and "Ctrl-C" not in said


def test_delete_refused_says_the_apps_reason(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    session = _Session((409, {"error": f"task {TASK} cannot be deleted while its orchestrations run ({TASK})",
                              "hint": "the task is running: cancel it"}))
    assert _run(session, monkeypatch, "--yes") == 4
    assert "cannot be deleted while its orchestrations run" in capsys.readouterr().err


class _Hub:
    """The task hub as the SDK's real client sees it through the management API (azure-functions-durable-extension
    ``HttpApiHandler``): terminate 404 unknown / 410 finished / 202 queued, where Azure shows the instance Terminated
    only once it has processed the message (``at_once`` False); purge by id 200 ``{"instancesDeleted": 1}`` / 404."""

    def __init__(self, instances: dict[str, str], at_once: bool) -> None:
        from azure.durable_functions import DurableOrchestrationClient
        from devhost.http_server import binding_json

        self.instances, self.at_once, self.calls = dict(instances), at_once, []
        self.on_purge: Any = lambda iid: None  # what else happens in the hub as an instance is purged
        self.ends_after: int | None = None  # the listings after which the platform has processed a terminate
        self.slept = 0.0
        self.client = DurableOrchestrationClient(binding_json("http://127.0.0.1:7071", "hub"))

        async def post(url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
            iid = url.split("/instances/")[1].split("/")[0]
            self.calls.append(("terminate", iid))
            if iid not in self.instances:
                return [404, None]
            if self.instances[iid] in ("Completed", "Failed", "Terminated"):
                return [410, None]
            if self.at_once:
                self.instances[iid] = "Terminated"
            return [202, None]

        async def delete(url: str, *args: Any, **kwargs: Any) -> list[Any]:
            iid = url.split("/instances/")[1].split("?")[0]
            self.calls.append(("purge", iid))
            found = self.instances.pop(iid, None)
            self.on_purge(iid)
            return [200, {"instancesDeleted": 1}] if found else [404, None]

        self.client._post_async_request = post  # type: ignore[method-assign]
        self.client._delete_async_request = delete  # type: ignore[method-assign]

    async def listed(self) -> list[tuple[str, str | None]]:
        if self.ends_after is not None:
            self.ends_after -= 1
            if self.ends_after < 0:  # the terminates queued so far are processed now
                for _, iid in [c for c in self.calls if c[0] == "terminate" and c[1] in self.instances]:
                    if self.instances[iid] == "Running":
                        self.instances[iid] = "Terminated"
        return list(self.instances.items())


def _delete(hub: _Hub, done: bool = True, operator: bool = False, blobs_left: bool = False) -> tuple[int, Any]:
    import asyncio

    from adapters.task_deletion import Deleted
    from api import task_delete

    async def delete_blobs(budget_s: float) -> Deleted:
        assert budget_s == task_delete.DELETE_BUDGET_S
        return Deleted(state=7, web=2, done=done)

    async def any_blobs() -> bool:
        return blobs_left

    now = [0.0]

    async def sleep(s: float) -> None:  # the wait for the timers' terminates, on a clock of its own
        now[0] += s
        hub.slept += s

    async def run() -> Any:
        from api.edge import http_edge

        @http_edge
        async def handler() -> Any:
            return await task_delete.run_deletion(hub.client, TASK, operator, hub.listed, delete_blobs, any_blobs,
                                                  clock=lambda: now[0], sleep=sleep)

        return await handler()

    response = asyncio.run(run())
    return response.status_code, json.loads(response.get_body())


def test_a_timer_the_platform_has_not_ended_yet_is_not_purged_and_the_delete_is_sent_again() -> None:
    """Azure queues a terminate (ext ``HandleTerminateInstanceRequestAsync`` 202): the expiry still reads Running
    after it, so the answer is 202 and nothing is purged; once it reads Terminated, the same DELETE purges every
    instance, the task's own last."""
    hub = _Hub({TASK: "Completed", f"{TASK}-expiry": "Running", f"{TASK}-shards-0000": "Completed"}, at_once=False)
    status, body = _delete(hub)
    assert status == 202 and body["deleted"] is False and "still ending" in body["hint"]
    assert hub.slept == task_delete_module().TIMERS_WAIT_S  # it waited for the platform, then answered
    assert [c for c in hub.calls if c[0] == "purge"] == []
    assert ("terminate", f"{TASK}-expiry") in hub.calls
    hub.instances[f"{TASK}-expiry"] = "Terminated"  # the platform processed the terminate
    status, body = _delete(hub)
    assert status == 200 and body == {"id": TASK, "deleted": True, "blobs": {"state": 7, "web": 2}, "instances": 3,
                                      "hint": body["hint"]}
    assert [iid for kind, iid in hub.calls if kind == "purge"] == [f"{TASK}-expiry", f"{TASK}-shards-0000", TASK]
    assert hub.instances == {}
    assert _delete(hub)[0] == 404  # deleted already


def test_blobs_not_all_deleted_purge_nothing_and_answer_202() -> None:
    hub = _Hub({TASK: "Completed", f"{TASK}-zip": "Completed"}, at_once=True)
    status, body = _delete(hub, done=False)
    assert status == 202 and body["blobs"] == {"state": 7, "web": 2} and hub.instances == {
        TASK: "Completed", f"{TASK}-zip": "Completed"}


def test_an_operator_deletes_blobs_a_purged_tasks_history_left_and_a_caller_gets_404() -> None:
    hub = _Hub({}, at_once=True)
    assert _delete(hub, blobs_left=True)[0] == 404
    assert _delete(hub, operator=True, blobs_left=False)[0] == 404
    status, body = _delete(hub, operator=True, blobs_left=True)
    assert status == 200 and body["instances"] == 0


def test_a_run_of_the_task_started_while_its_helpers_are_purged_is_not_purged_but_refuses() -> None:
    """The Azure Storage provider's purge by id takes an instance in any state (durabletask
    ``AzureTableTrackingStore.PurgeInstanceHistoryAsync(instanceId)``: no status check), so a failed task resumed (its
    request posted or dropped again) between the listing and the purge of the task's own instance would lose its
    history while its pool work goes on: the task's own instance is purged only after listing once more."""
    hub = _Hub({TASK: "Failed", f"{TASK}-shards-0000": "Completed", f"{TASK}-zip": "Completed"}, at_once=True)

    def resumed(iid: str) -> None:
        if iid == f"{TASK}-shards-0000":
            hub.instances[TASK] = "Pending"  # start_new of the resumed run: Pending until its first episode

    hub.on_purge = resumed
    status, body = _delete(hub)
    assert status == 409 and f"({TASK})" in body["error"] and "cancel" in body["hint"]
    assert hub.instances == {TASK: "Pending"}  # the helpers went, the resumed run's instance stays
    assert ("purge", TASK) not in hub.calls


class _Store:
    """A BlobStore stand-in for ``has_blobs``: containers of names, listed by prefix."""

    def __init__(self, containers: dict[str, list[str]]) -> None:
        self.containers = containers

    def container_exists(self, container: str) -> bool:
        return container in self.containers

    def list_names_page(self, container: str, prefix: str, marker: str | None,
                        page_size: int = 5000) -> tuple[list[str], str | None]:
        return [n for n in sorted(self.containers[container]) if n.startswith(prefix)][:page_size], None


def test_an_operator_finds_a_preview_folder_left_alone_on_the_website() -> None:
    """A task whose state is gone but whose preview folder is still public is not 'unknown' to an operator's DELETE."""
    from adapters.task_deletion import has_blobs
    from core.settings import Settings

    s = Settings.from_env({"AzureWebJobsStorage": "x"})
    other_page = f"{OTHER}-00ff/index.html"
    assert not has_blobs(_Store({s.container: [f"tasks/{OTHER}/request.json"], s.web_container: [other_page]}),
                         s, TASK)
    assert not has_blobs(_Store({}), s, TASK)
    assert has_blobs(_Store({s.container: [], s.web_container: [f"{TASK}-00ff/index.html", other_page]}), s, TASK)
    assert has_blobs(_Store({s.container: [f"results/{TASK}/current.json"]}), s, TASK)


def test_the_deletion_mark_is_the_tasks_and_dates_the_renders_it_takes_back() -> None:
    from gpu_batch import layout

    assert td.tombstone_blob(TASK) == td.tombstone_blob(layout.generation_key(TASK, "r202612070000ab12")) == (
        f"deleted/{TASK}.json")
    assert not any(td.tombstone_blob(TASK).startswith(p) for p in td.state_prefixes(TASK))  # it stays
    under_way = td.tombstone(TASK, 1_000_000.0)
    assert td.deleted_since(under_way, 999_000.0) and td.deleted_since(under_way, 1_000_500.0)
    done = td.tombstone(TASK, 1_000_000.0, 1_000_200.0)
    assert td.deleted_since(done, 999_000.0)  # the render began before the deletion
    assert td.deleted_since(done, 1_000_150.0)  # or while it ran (a terminated run's render starting late)
    assert td.deleted_since(done, 1_000_200.0 + td.CLOCK_MARGIN_S - 1)  # or so near its end that clocks may differ
    assert not td.deleted_since(done, 1_000_200.0 + td.CLOCK_MARGIN_S)  # a fresh task's render, later
    assert not td.deleted_since(None, 0.0)
    assert td.deleted_since({"task": TASK, "done_at_s": "?"}, 0.0)  # unreadable: the task was deleted all the same


def test_the_deletion_writes_its_mark_before_any_blob_goes() -> None:
    """A render that outlives the deletion reads the mark after its last write, so it must be there before the
    website is listed; each request of a deletion writes it again."""
    from adapters.task_deletion import delete_task_blobs

    s = __import__("core.settings", fromlist=["Settings"]).Settings.from_env({"AzureWebJobsStorage": "x"})
    store = _Store({s.container: [f"tasks/{TASK}/request.json"], s.web_container: [f"{TASK}-00ff/index.html"]})
    events: list[str] = []
    written: dict[str, Any] = {}

    def listed(container: str, prefix: str, marker: str | None, page_size: int = 5000) -> tuple[list[str], None]:
        events.append(f"list {prefix}")
        return [], None

    store.list_names_page = listed  # type: ignore[method-assign]
    store.write_json = lambda container, name, value: (events.append(f"mark {name}"),  # type: ignore[attr-defined]
                                                       written.update({name: value}))
    times = iter([1234.5, 1240.0])
    assert delete_task_blobs(store, s, TASK, 150.0, wall=lambda: next(times)).done  # type: ignore[arg-type]
    assert events[0] == f"mark deleted/{TASK}.json" and events[-1] == events[0] and len(events) == 5
    assert written == {f"deleted/{TASK}.json": {"task": TASK, "deleted_at_s": 1234.5, "done_at_s": 1240.0}}


def task_delete_module() -> Any:
    from api import task_delete

    return task_delete


def test_a_timer_ended_by_the_platform_a_few_seconds_later_is_purged_in_the_same_request() -> None:
    """The Azure Storage provider picks the queued terminate up at its next poll of the control queue (host.json
    ``maxQueuePollingInterval``, 10 s): a small task's blobs go sooner, so the request waits for it rather than
    answering 202 to a CLI that sends its ten requests one right after the other."""
    hub = _Hub({TASK: "Completed", f"{TASK}-expiry": "Running", f"{TASK}-zip": "Completed"}, at_once=False)
    hub.ends_after = 4  # the first listing, the one after the blobs, then three more polls
    status, body = _delete(hub)
    assert status == 200 and body["instances"] == 3 and hub.instances == {}
    assert 0 < hub.slept < task_delete_module().TIMERS_WAIT_S


def test_the_wait_for_the_timers_stops_where_the_answer_must_go() -> None:
    from api import task_delete

    hub = _Hub({TASK: "Completed", f"{TASK}-expiry": "Running"}, at_once=False)
    now = [0.0]

    async def delete_blobs(budget_s: float) -> Any:
        from adapters.task_deletion import Deleted

        now[0] += task_delete.ANSWER_BY_S - 5  # the blobs took nearly all of the request's time
        return Deleted(state=1, web=0, done=True)

    async def sleep(s: float) -> None:
        now[0] += s
        hub.slept += s

    async def nothing() -> bool:
        return False

    import asyncio

    response = asyncio.run(task_delete.run_deletion(hub.client, TASK, False, hub.listed, delete_blobs, nothing,
                                                    clock=lambda: now[0], sleep=sleep))
    assert response.status_code == 202 and hub.slept == 5


def test_a_run_started_before_its_task_was_deleted_is_the_deleted_tasks() -> None:
    from datetime import datetime, timezone

    from gpu_batch import layout

    at = datetime(2026, 12, 7, 12, 0, 5, tzinfo=timezone.utc)
    mark = td.tombstone(TASK, at.timestamp())
    before = layout.pool_job_id(TASK, layout.run_id(datetime(2026, 12, 7, 11, 0, tzinfo=timezone.utc), "ab12"))
    after = layout.pool_job_id(TASK, layout.run_id(datetime(2026, 12, 7, 12, 0, 6, tzinfo=timezone.utc), "cd34"))
    assert td.run_started_s(layout.run_id(at, "ff")) == at.timestamp()
    assert td.deleted_run(mark, before) and not td.deleted_run(mark, after)
    same_second = layout.pool_job_id(TASK, layout.run_id(at, "ef56"))  # ids are to the second: the fresh task's
    assert not td.deleted_run(td.tombstone(TASK, at.timestamp() + 0.9), same_second)
    assert td.deleted_run(mark, TASK)  # a job of a release before runs had ids
    assert not td.deleted_run(None, before)  # no deletion
    assert td.run_started_s("r2612") is None and td.run_started_s("x261207120005ab") is None


def test_a_late_call_of_a_run_of_a_deleted_task_writes_nothing() -> None:
    """A terminated run's queued activities run on (devhost fidelity row 49); its superseding marker, which the guard
    reads, went with the task's blobs: the deletion mark refuses them instead. A fresh task's run is not refused."""
    from datetime import datetime, timezone

    from activities.superseded import refuse_if_superseded
    from core.errors import RunSuperseded
    from core.settings import Settings
    from gpu_batch import layout

    s = Settings.from_env({"AzureWebJobsStorage": "x"})
    blobs: dict[str, Any] = {}

    class Store:
        def read_json_or_none(self, container: str, name: str) -> Any:
            return blobs.get(name) if container == s.container else None

    old = layout.pool_job_id(TASK, layout.run_id(datetime(2026, 12, 7, 11, 0, tzinfo=timezone.utc), "ab12"))
    fresh = layout.pool_job_id(TASK, layout.run_id(datetime(2026, 12, 7, 13, 0, tzinfo=timezone.utc), "cd34"))
    refuse_if_superseded(Store(), s, {"task_id": TASK, "run_job": old}, "the merge")  # type: ignore[arg-type]
    blobs[td.tombstone_blob(TASK)] = td.tombstone(TASK, datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc).timestamp())
    with pytest.raises(RunSuperseded, match="the task was deleted"):
        refuse_if_superseded(Store(), s, {"task_id": TASK, "run_job": old}, "the merge")  # type: ignore[arg-type]
    refuse_if_superseded(Store(), s, {"task_id": TASK, "run_job": fresh}, "the merge")  # type: ignore[arg-type]
    other = layout.pool_job_id(OTHER, layout.run_id(datetime(2026, 12, 7, 11, 0, tzinfo=timezone.utc), "ab12"))
    refuse_if_superseded(Store(), s, {"task_id": OTHER, "run_job": other}, "the merge")  # type: ignore[arg-type]
