"""Pure parts of what acts on a finished task: threshold CSV names, the re-render body, previews_expire_days, the
expiry's timer chain, the zip's settings and staleness rule."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from core.errors import ConfigError, RequestInvalid
from core.expiry import MAX_TIMER_STEP, expiry_time, next_timer
from core.requests import MAX_PREVIEWS_EXPIRE_DAYS, parse_rerender, parse_task_request
from core.settings import ACTION_BUDGET, Settings
from gpu_batch import layout

TASK = "task-0123456789abcdef0123"
NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize("t, label", [(0.35, "0.35"), (0.005, "0.005"), (1, "1"), (1.0, "1"), (0.123456, "0.123456")])
def test_threshold_csvs_sit_beside_the_tasks_own_with_the_threshold_in_the_name(t: float, label: str) -> None:
    assert layout.threshold_csv_blob(TASK, t) == f"results/{TASK}/detections.threshold-{label}.csv"
    assert layout.threshold_csv_blob(TASK, t, layout.REPEATS_REMOVED) == (
        f"results/{TASK}/detections.{layout.REPEATS_REMOVED}.threshold-{label}.csv")
    assert layout.threshold_csv_blob(TASK, t) != layout.csv_blob(TASK)
    assert layout.threshold_csv_blob(TASK, t).startswith(layout.threshold_csv_prefix(TASK))
    assert not layout.threshold_csv_blob(TASK, t, layout.REPEATS_REMOVED).startswith(layout.threshold_csv_prefix(TASK))


def test_the_rerender_body_needs_one_threshold_in_range() -> None:
    assert parse_rerender({"threshold": 0.35}) == 0.35
    assert parse_rerender({"threshold": 1}) == 1.0
    for body, message in (({}, "'threshold' is required"), ({"threshold": None}, "'threshold' is required"),
                          ({"threshold": 0.001}, "from 0.005 to 1"), ({"threshold": 2}, "from 0.005 to 1"),
                          ({"threshold": True}, "from 0.005 to 1"), ({"threshold": "0.3"}, "from 0.005 to 1"),
                          ({"threshold": 0.3, "variant": "x"}, "unknown field(s): variant"),
                          ([0.3], "must be a JSON object")):
        with pytest.raises(RequestInvalid) as info:
            parse_rerender(body)
        assert message in info.value.message and info.value.hint


def test_previews_expire_days_is_bounded_and_not_part_of_the_task_id() -> None:
    base = {"container": "cams"}
    assert parse_task_request(base).previews_expire_days is None
    r = parse_task_request({**base, "previews_expire_days": 30})
    assert r.previews_expire_days == 30 and r.task_id == parse_task_request(base).task_id
    assert r.to_dict()["previews_expire_days"] == 30
    for bad in (0, -1, MAX_PREVIEWS_EXPIRE_DAYS + 1, 1.5, "7", True):
        with pytest.raises(RequestInvalid, match="previews_expire_days"):
            parse_task_request({**base, "previews_expire_days": bad})


def test_expiry_time_counts_days_of_the_configured_length() -> None:
    assert expiry_time(NOW, 3) == NOW + timedelta(days=3)
    assert expiry_time(NOW, 3, day_s=2) == NOW + timedelta(seconds=6)


def test_timers_chain_in_steps_of_at_most_six_days_to_the_exact_time() -> None:
    until = NOW + timedelta(days=20, hours=5)
    assert next_timer(until, until) is None  # reached at the time itself: no timer for "now" (the loop never ends)
    fired, now = [], NOW
    while (fire := next_timer(now, until)) is not None:
        assert fire - now <= MAX_TIMER_STEP
        fired.append(fire)
        now = fire
    assert fired == [NOW + timedelta(days=6), NOW + timedelta(days=12), NOW + timedelta(days=18), until]
    assert next_timer(until + timedelta(seconds=1), until) is None
    # the orchestration clock may be naive: it is UTC, as the stored times are
    assert next_timer(NOW.replace(tzinfo=None), NOW + timedelta(hours=1)) == NOW + timedelta(hours=1)


def test_the_zip_size_and_the_expiry_day_are_settings() -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "x"})
    assert s.results_zip_above_bytes == 50 * 1024 * 1024 and s.knobs.previews_expire_day_s == 86400
    s = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES": "10",
                           "TRAPBATCH_PREVIEWS_EXPIRE_DAY_S": "2"})
    assert s.results_zip_above_bytes == 10 and s.knobs.previews_expire_day_s == 2
    with pytest.raises(ConfigError, match="TRAPBATCH_PREVIEWS_EXPIRE_DAY_S"):
        Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_PREVIEWS_EXPIRE_DAY_S": "0"})


def test_scheduling_an_expiry_keeps_a_waiting_one_unless_a_re_run_moves_it() -> None:
    import asyncio
    from types import SimpleNamespace

    from activities.expiry import run_schedule_expiry

    class Client:
        def __init__(self, runtime: str | None) -> None:
            self.runtime, self.started, self.raised = runtime, [], []  # type: ignore[var-annotated]

        async def get_status(self, iid: str) -> Any:
            return SimpleNamespace(runtime_status=SimpleNamespace(value=self.runtime) if self.runtime else None)

        async def start_new(self, name: str, iid: str, payload: Any) -> None:
            self.started.append(payload)

        async def raise_event(self, iid: str, name: str, data: Any) -> None:
            self.raised.append((name, data))

    waiting = Client("Running")
    assert asyncio.run(run_schedule_expiry({"task_id": "t", "expires": "2027-01-01T00:00:00"}, waiting))[
        "scheduled"] is False and waiting.raised == [] and waiting.started == []  # a retried activity: unchanged
    moved = asyncio.run(run_schedule_expiry({"task_id": "t", "expires": "", "move": True}, waiting))
    assert moved["moved"] is True and waiting.raised == [("expiry_moved", {"expires": ""})]
    idle = Client(None)
    assert asyncio.run(run_schedule_expiry({"task_id": "t", "expires": "", "move": True}, idle))["scheduled"] is False
    assert idle.started == []  # nothing waits and none is wanted
    assert asyncio.run(run_schedule_expiry({"task_id": "t", "expires": "2027-01-01T00:00:00", "move": True},
                                           idle, busy_retry_attempts=6))["scheduled"] is True
    # the new expiry records the app's busy-retry knob (orchestrations.retries.busy_attempts reads it there)
    assert idle.started == [{"task_id": "t", "expires": "2027-01-01T00:00:00", "busy_retry_attempts": 6}]


class _ZipClient:
    """A durable client whose results-zip instance is ``zip_runtime`` (its input names generation ``zip_key``, it
    started at ``zip_created``); every other instance does not exist. Records the builds started."""

    def __init__(self, zip_runtime: str | None, zip_key: str = TASK,
                 zip_created: datetime = NOW, output: str = "") -> None:
        from types import SimpleNamespace

        self.started: list[tuple[str, str, Any]] = []
        self.zip = SimpleNamespace(runtime_status=SimpleNamespace(value=zip_runtime) if zip_runtime else None,
                                   custom_status=None, output=output, input_=f'{{"task_id": "{zip_key}"}}',
                                   created_time=zip_created)

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        from types import SimpleNamespace

        from core.ids import results_zip_instance_id

        if instance_id == results_zip_instance_id(TASK):
            return self.zip
        return SimpleNamespace(runtime_status=None, custom_status=None, output=None)

    async def start_new(self, name: str, instance_id: str, payload: Any) -> None:
        self.started.append((name, instance_id, payload))


RUN = "r202603011200abc"  # a re-run's generation
ZIP_ERROR = "Orchestrator function 'zip_results' failed: ValueError: file rewritten while read"


def _zip_answer(client: _ZipClient, monkeypatch: pytest.MonkeyPatch, newest: datetime = NOW - timedelta(hours=1),
                rebuild: bool = False, generation: str = "") -> dict[str, Any]:
    import asyncio

    import api.after_task as at

    building = {"files": 9, "files_bytes": 10**10, "above_bytes": 1, "state": "building", "hint": "GET again"}
    monkeypatch.setattr(at, "_zip_state", lambda store, s, key: (dict(building), True, newest.isoformat()))
    answer: dict[str, Any] = {"results": {}, "links": {}}
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_BUSY_RETRY_ATTEMPTS": "5"})
    asyncio.run(at.extend_results(client, settings, None, TASK, {}, answer, generation,  # type: ignore[arg-type]
                                  rebuild=rebuild))
    return dict(answer["zip"])


def test_a_failed_zip_build_is_answered_failed_with_its_error_and_not_started_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    client = _ZipClient("Failed", output=ZIP_ERROR)
    for _ in range(2):  # every GET: the same answer, no new build
        zipped = _zip_answer(client, monkeypatch)
        assert zipped["state"] == "failed" and zipped["error"] == "ValueError: file rewritten while read"
        assert f"/api/tasks/{TASK}/results?zip=rebuild" in zipped["hint"] and "minute" not in zipped["hint"]
        assert zipped["files_bytes"] == 10**10
    assert client.started == []


def test_a_failed_zip_build_starts_again_when_asked_or_when_its_inputs_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from core import contracts as c
    from core.ids import results_zip_instance_id

    asked = _ZipClient("Failed", output=ZIP_ERROR)
    assert _zip_answer(asked, monkeypatch, rebuild=True)["state"] == "building"
    # the app's busy-retry knob and action budget travel in the input (orchestrations.retries reads them there)
    assert asked.started == [(c.RESULTS_ZIP_ORCHESTRATOR, results_zip_instance_id(TASK),
                              {"task_id": TASK, "busy_retry_attempts": 5, "action_budget": ACTION_BUDGET})]
    other = _ZipClient("Failed", zip_key=TASK, output=ZIP_ERROR)  # a re-run is served now: its files never tried
    assert _zip_answer(other, monkeypatch, generation=RUN)["state"] == "building"
    assert other.started[0][2]["task_id"] == layout.generation_key(TASK, RUN) != TASK
    rewritten = _ZipClient("Failed", output=ZIP_ERROR)  # a file written after the failed build started
    assert _zip_answer(rewritten, monkeypatch, newest=NOW + timedelta(minutes=1))["state"] == "building"
    assert len(rewritten.started) == 1
    running = _ZipClient("Running")  # one build at a time, asked or not
    assert _zip_answer(running, monkeypatch, rebuild=True)["state"] == "building" and running.started == []
    done = _ZipClient("Completed")  # a zip built before the files changed: as before, build the new one
    assert _zip_answer(done, monkeypatch)["state"] == "building" and len(done.started) == 1


def test_the_results_route_takes_zip_rebuild_and_refuses_other_values() -> None:
    import asyncio
    import json

    import azure.functions as func

    from api import starters
    from api.after_task import wants_zip_rebuild

    assert wants_zip_rebuild({}) is False and wants_zip_rebuild({"zip": "rebuild"}) is True
    handler = starters.get_results._function.get_user_function().__wrapped__  # http_edge(get_results), no binding
    req = func.HttpRequest("GET", f"http://h/api/tasks/{TASK}/results", body=b"", params={"zip": "yes"},
                           route_params={"task_id": TASK})
    response = asyncio.run(handler(req, _ZipClient(None)))
    body = json.loads(response.get_body())
    assert response.status_code == 400 and "zip must be 'rebuild'" in body["error"] and "zip=rebuild" in body["hint"]


def test_a_rerender_starts_with_the_apps_busy_retries_and_action_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-render's input carries ``action_budget`` (``orchestrations.retries.ActionLedger`` reads it there), as a
    task's, removal's and search's do: without it, its fan-out over the results' parts at many busy retries had no
    bound under the Durable extension's maxOrchestrationActions, past which the extension drops actions silently and
    the instance stays Running for ever (orchestrations.actions ``after_task_actions``)."""
    import asyncio
    import json

    import azure.functions as func

    import api.after_task as at
    from adapters import clients
    from core import contracts as c
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_BUSY_RETRY_ATTEMPTS": "5"})

    async def none(*args: Any, **kwargs: Any) -> Any:
        return None

    async def labels(*args: Any) -> tuple[str, str]:
        return "MDV5A", ""

    monkeypatch.setattr(clients, "settings", lambda: settings)
    monkeypatch.setattr(clients, "store", lambda s=None: None)
    monkeypatch.setattr(at, "authorize_task", none)
    monkeypatch.setattr(at, "finished_task", none)
    monkeypatch.setattr(at, "_instance", none)  # nothing running
    monkeypatch.setattr(at, "served_key", lambda store, container, task_id: task_id)
    monkeypatch.setattr(at, "_rerender_variants", lambda s, key: [""])
    monkeypatch.setattr(at, "page_labels", labels)
    started: list[Any] = []

    async def start_once(client: Any, name: str, instance_id: str, payload: Any) -> bool:
        started.append((name, payload))
        return True

    monkeypatch.setattr(at, "start_once", start_once)
    handler = at.post_previews._function.get_user_function().__wrapped__
    req = func.HttpRequest("POST", f"http://h/api/tasks/{TASK}/previews", body=b'{"threshold": 0.3}',
                           route_params={"task_id": TASK}, headers={"content-type": "application/json"})
    response = asyncio.run(handler(req, None))
    assert response.status_code == 202, json.loads(response.get_body())
    assert [(name, payload["busy_retry_attempts"], payload["action_budget"]) for name, payload in started] == [
        (c.RERENDER_ORCHESTRATOR, 5, ACTION_BUDGET)]


def test_a_zip_builds_sweep_is_started_once_for_when_every_zip_it_may_leave_can_go() -> None:
    """``schedule_results_zip_sweep`` starts the build's sweep (``sweep_results_zips``) at this host's clock plus
    ``core.zip_builds.SWEEP_AFTER_S``; a retried call (the instance there, waiting or ended) starts none, so one
    build never has two sweeps and a sweep's time is never moved. Fails without the change (no such activity)."""
    import asyncio
    from types import SimpleNamespace

    from activities.results_zip import run_schedule_sweep
    from core import contracts as c
    from core.zip_builds import SWEEP_AFTER_S

    class Client:
        def __init__(self, runtime: str | None) -> None:
            self.runtime, self.started = runtime, []  # type: ignore[var-annotated]

        async def get_status(self, iid: str) -> Any:
            return SimpleNamespace(runtime_status=SimpleNamespace(value=self.runtime) if self.runtime else None)

        async def start_new(self, name: str, iid: str, payload: Any) -> None:
            self.started.append((name, iid, payload))

    asked = {"task_id": f"{TASK}/runs/r1", "instance_id": f"{TASK}-zip-sweep-20260301T120000000000"}
    idle = Client(None)
    out = asyncio.run(run_schedule_sweep(asked, idle, busy_retry_attempts=6, now=NOW))  # type: ignore[arg-type]
    at = (NOW + timedelta(seconds=SWEEP_AFTER_S)).isoformat()
    assert out == {"scheduled": True, "instance_id": asked["instance_id"], "at": at}
    assert idle.started == [(c.RESULTS_ZIP_SWEEP_ORCHESTRATOR, asked["instance_id"],
                             {"task_id": asked["task_id"], "at": at, "busy_retry_attempts": 6})]
    for runtime in ("Running", "Pending", "Completed", "Failed"):
        there = Client(runtime)
        out = asyncio.run(run_schedule_sweep(asked, there, now=NOW))  # type: ignore[arg-type]
        assert out == {"scheduled": False, "instance_id": asked["instance_id"]} and there.started == []
