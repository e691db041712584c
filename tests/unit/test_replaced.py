"""The retention of a task's replaced generations (``core.replaced``): when one is deleted, which of the task's
blobs are that generation's, and what keeps it; and its setting, TRAPBATCH_KEEP_REPLACED_DAYS."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core import replaced, stall, zip_builds
from core.errors import ConfigError
from core.ids import is_task_id, replaced_sweep_instance_id
from core.settings import MAX_LINK_DAYS, Settings
from gpu_batch import layout

TASK = "task-0123456789abcdef0123"
RUN = "r260101120000ab12"
LATER = "r260201120000cd34"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _settings(**env: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **env})


def test_a_replaced_generation_goes_its_keep_days_after_the_promotion_and_never_for_zero() -> None:
    assert replaced.deletes_at(T0, 30) == T0 + timedelta(days=30)
    assert replaced.deletes_at(T0, replaced.FOREVER) is None


def test_no_keep_period_cuts_a_link_handed_out_or_a_step_still_running() -> None:
    """The floor is every link's longest life after the promotion (the last link minted a moment after it, valid
    MAX_LINK_DAYS) plus the longest a step of the replaced generation still running writes (STALE_WORK_S); a
    smaller keep, should one get past the settings, is raised to it."""
    assert replaced.MIN_KEEP_S == MAX_LINK_DAYS * 86_400 + stall.SLACK_S + zip_builds.STALE_WORK_S
    assert replaced.MIN_KEEP_S > MAX_LINK_DAYS * 86_400 + 15 * 60
    assert replaced.MIN_KEEP_DAYS == 8 and (replaced.MIN_KEEP_DAYS - 1) * 86_400 < replaced.MIN_KEEP_S
    assert replaced.deletes_at(T0, 1) == T0 + timedelta(seconds=replaced.MIN_KEEP_S)
    assert replaced.deletes_at(T0, replaced.MIN_KEEP_DAYS) == T0 + timedelta(days=replaced.MIN_KEEP_DAYS)


def test_the_setting_defaults_to_30_days_keeps_for_ever_at_0_and_refuses_less_than_the_floor() -> None:
    assert _settings().keep_replaced_days == replaced.DEFAULT_KEEP_DAYS == 30
    assert _settings(TRAPBATCH_KEEP_REPLACED_DAYS="0").keep_replaced_days == 0
    assert _settings(TRAPBATCH_KEEP_REPLACED_DAYS="8").keep_replaced_days == 8
    assert _settings(TRAPBATCH_KEEP_REPLACED_DAYS="365").keep_replaced_days == 365
    for bad in ("1", "7"):
        with pytest.raises(ConfigError, match="TRAPBATCH_KEEP_REPLACED_DAYS.*below 8 days"):
            _settings(TRAPBATCH_KEEP_REPLACED_DAYS=bad)
    for bad in ("-1", "forever", "2.5"):
        with pytest.raises(ConfigError, match="TRAPBATCH_KEEP_REPLACED_DAYS"):
            _settings(TRAPBATCH_KEEP_REPLACED_DAYS=bad)


def test_a_reruns_generation_is_its_own_two_folders() -> None:
    assert replaced.generation_roots(TASK, RUN) == (f"tasks/{TASK}/runs/{RUN}/", f"results/{TASK}/runs/{RUN}/")
    assert replaced.generation_roots(TASK, "") == (f"tasks/{TASK}/", f"results/{TASK}/")
    with pytest.raises(ValueError):
        replaced.generation_roots(TASK, "../x")  # never a folder a run id does not name


def test_the_first_generation_is_its_own_entries_at_the_top_of_the_tasks_folders_not_the_tasks() -> None:
    """The other generations, the pointer and the run-keyed folders every run of the task shares stay; every name
    layout gives a generation's state and results at the top is the first generation's."""
    first = [layout.request_blob(TASK), layout.enumeration_blob(TASK), layout.decided_settings_blob(TASK),
             layout.removal_choice_blob(TASK), layout.shards_prefix(TASK), layout.listing_prefix(TASK),
             layout.merge_work_prefix(TASK), layout.results_zip_work_prefix(TASK),
             layout.rethreshold_work_prefix(TASK, 0.3).split("original/")[0],
             layout.results_blob(TASK), layout.csv_blob(TASK), layout.results_blob(TASK, layout.REPEATS_REMOVED),
             layout.preview_sample_blob(TASK), layout.repeats_blob(TASK), layout.readme_blob(TASK),
             layout.preview_folder_blob(TASK), layout.previews_withdrawn_blob(TASK), layout.damaged_blob(TASK),
             layout.threshold_csv_blob(TASK, 0.35), layout.exports_prefix(TASK), layout.results_zip_folder(TASK)]
    for name in first:
        assert replaced.is_first_generation_entry(TASK, name), name
    job = layout.pool_job_id(TASK, RUN)
    tasks = [layout.cancel_marker(job), layout.pool_job_marker(job), layout.joined_drop_blob(TASK, RUN, "a.json"),
             layout.run_ended_blob(TASK, RUN), layout.pool_log_blob(job, "s00000-a1"),
             layout.task_prefix(layout.generation_key(TASK, LATER))]
    for name in tasks:  # as the level listing gives them: the folder at the top
        top = layout.task_prefix(TASK) + name[len(layout.task_prefix(TASK)):].split("/")[0] + "/"
        assert not replaced.is_first_generation_entry(TASK, top), top
    assert not replaced.is_first_generation_entry(TASK, layout.current_generation_blob(TASK))
    assert not replaced.is_first_generation_entry(TASK, layout.results_prefix(TASK) + "runs/")
    for root in (layout.task_prefix(TASK), layout.results_prefix(TASK)):  # the folder itself, another task's
        assert not replaced.is_first_generation_entry(TASK, root)
    assert not replaced.is_first_generation_entry(TASK, f"results/{TASK}x/detections.json")


@pytest.mark.parametrize(("served", "running", "run_generation", "run_previous", "why"), [
    (LATER, False, None, None, None),  # replaced, nothing runs: deleted
    (RUN, False, None, None, "served"),  # served again
    (LATER, True, LATER, LATER, None),  # a re-run of the served generation runs: it reads the served one only
    (LATER, True, RUN, None, "running"),  # a run writes it (a resumed run of that generation)
    (LATER, True, LATER, RUN, "running"),  # ... or reads it (an only_new re-run resumed with it as previous)
    (LATER, False, RUN, RUN, None),  # an ended run's inputs say nothing
])
def test_a_generation_is_kept_while_it_is_served_or_a_running_run_writes_or_reads_it(
        served: str, running: bool, run_generation: str | None, run_previous: str | None, why: str | None) -> None:
    assert replaced.keep_reason(RUN, served, running, run_generation, run_previous) == why


def test_the_first_generation_is_kept_while_served_or_written_by_a_first_generation_run() -> None:
    assert replaced.keep_reason("", "", False, None, None) == "served"  # no pointer: the first is served
    assert replaced.keep_reason("", RUN, True, None, None) == "running"  # a run without a generation: the first's
    assert replaced.keep_reason("", RUN, True, LATER, "") == "running"  # a re-run reading it
    assert replaced.keep_reason("", RUN, True, LATER, RUN) is None


def test_each_promotion_has_a_sweep_of_its_own_which_is_no_task() -> None:
    first = replaced_sweep_instance_id(TASK, replaced.sweep_label(""), T0)
    assert first == f"{TASK}-replaced-first-20260301T120000000000"
    assert replaced_sweep_instance_id(TASK, replaced.sweep_label(RUN), T0) == \
        f"{TASK}-replaced-{RUN}-20260301T120000000000"
    assert first != replaced_sweep_instance_id(TASK, "first", T0 + timedelta(microseconds=1))
    assert not is_task_id(first)


class _Client:
    """A durable client with one instance (``runtime`` None: none), whose input is ``input_``; records starts."""

    def __init__(self, runtime: str | None, input_: str = "") -> None:
        self.runtime, self.input_ = runtime, input_
        self.started: list[tuple[str, str, dict[str, object]]] = []

    async def get_status(self, iid: str, **options: object) -> object:
        from types import SimpleNamespace

        return SimpleNamespace(runtime_status=SimpleNamespace(value=self.runtime) if self.runtime else None,
                               input_=self.input_)

    async def start_new(self, name: str, iid: str, payload: dict[str, object]) -> None:
        self.started.append((name, iid, payload))


def test_the_promotion_starts_the_sweep_once_for_its_keep_days_and_none_to_keep_for_ever() -> None:
    """``schedule_replaced_sweep`` starts the sweep for the promotion's time plus the keep days; a retried call (the
    instance there) starts none and answers the time the sweep has; with 0 days none is started."""
    import asyncio

    from activities.replaced_generations import run_schedule
    from core import contracts as c

    iid = replaced_sweep_instance_id(TASK, RUN, T0)
    asked: c.ReplacedSweepSchedule = {"task_id": TASK, "generation": LATER, "replaced": RUN, "instance_id": iid}
    idle = _Client(None)
    out = asyncio.run(run_schedule(asked, idle, 30, busy_retry_attempts=6, now=T0))  # type: ignore[arg-type]
    at = (T0 + timedelta(days=30)).isoformat()
    assert out == {"generation": RUN, "deletes_at": at, "instance_id": iid, "scheduled": True}
    assert idle.started == [(c.REPLACED_SWEEP_ORCHESTRATOR, iid, {"task_id": TASK, "generation": RUN, "at": at,
                                                                  "busy_retry_attempts": 6,
                                                                  "rechecks_running": True})]
    there = _Client("Running", '{"task_id": "%s", "generation": "%s", "at": "%s"}' % (TASK, RUN, at))
    later = asyncio.run(run_schedule(asked, there, 30, now=T0 + timedelta(minutes=5)))  # type: ignore[arg-type]
    assert later == {"generation": RUN, "deletes_at": at, "instance_id": iid, "scheduled": False}
    assert there.started == []
    kept = _Client(None)
    assert asyncio.run(run_schedule(asked, kept, 0, now=T0)) == {  # type: ignore[arg-type]
        "generation": RUN, "deletes_at": None}
    assert kept.started == []


def test_a_running_run_is_read_off_the_tasks_status_and_an_ended_one_says_nothing() -> None:
    from activities.replaced_generations import task_run

    for runtime in ("Running", "Pending", "ContinuedAsNew"):
        assert task_run(_status(runtime, {"generation": LATER, "previous": ""})) == (True, LATER, "")
    assert task_run(_status("Running", {})) == (True, None, None)  # a first run: no generation, no previous
    for runtime in ("Completed", "Failed", "Terminated", None):
        assert task_run(_status(runtime, {"generation": RUN, "previous": ""})) == (False, None, None)


def _status(runtime: str | None, input_: dict[str, str]) -> object:
    import json
    from types import SimpleNamespace

    return SimpleNamespace(runtime_status=SimpleNamespace(value=runtime) if runtime else None,
                           input_=json.dumps(input_))


def test_the_sweep_calls_running_what_the_api_calls_running() -> None:
    """activities may not import api (test_layering): the set is written twice, and must say the same."""
    from activities.replaced_generations import ACTIVE
    from api.starters import ACTIVE as API_ACTIVE

    assert ACTIVE == API_ACTIVE
