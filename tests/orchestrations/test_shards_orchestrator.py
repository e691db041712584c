"""Branches of the shard-group orchestrator (``run_shards``), replayed by the real Durable SDK with a scripted pool."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from core import contracts as c
from core.contracts import ShardStatus, Stage
from core.settings import OrchestrationKnobs
from gpu_batch import exit_codes
from gpu_batch.layout import parse_pool_task_id, pool_job_id, pool_task_id, shard_id
from gpu_batch.pool import JobClosed
from gpu_batch.pool.base import closed_outside_hint
from orchestrations.shards import _unreachable, run_shards
from tests.orchestrations.replay import HarnessError, Run, run_orchestrator

TASK = "task-0123456789abcdef0123"
IMAGES = 10  # images per shard in these tests


def knobs(**overrides: Any) -> dict[str, Any]:
    return OrchestrationKnobs(**overrides).to_dict()


def row(pool_task: str, missing: int = 0, failed: int = 0, images: int = IMAGES,
        seconds: float | None = None) -> c.CompletedShard:
    sid, attempt = parse_pool_task_id(pool_task)
    out: c.CompletedShard = {"task_id": pool_task, "shard_id": sid, "attempt": attempt, "result": "success",
                             "exit_code": 0, "failure_message": None, "images": images, "covered": images - missing,
                             "failed": failed, "missing": missing}
    if seconds is not None:
        out["seconds"] = seconds
    return out


class Pool:
    """The pool activities, scripted. A pool task completes once it has been polled ``runs_for`` times (default 1),
    reporting ``missing[pool task id]`` images still missing (default 0); ``cancel_on_poll`` makes that poll (1-based)
    report the cancel marker; ``resubmit`` answers the resubmit activity for every shard (default: each shard's next
    attempt is submitted);
    ``extra_rows`` adds rows (e.g. stale ones) to a given poll; ``counter[(pool task, n)]`` is what the running
    attempt's counter blob says at its n-th poll (default n). Unfinished tasks are reported "running"."""

    def __init__(self, runs_for: dict[str, int] | None = None, missing: dict[str, int] | None = None,
                 cancel_on_poll: int | None = None, resubmit: dict[str, Any] | None = None,
                 extra_rows: dict[int, list[c.CompletedShard]] | None = None,
                 counter: dict[tuple[str, int], int] | None = None, max_polls: int = 200,
                 seconds: dict[str, float] | None = None) -> None:
        self.runs_for = runs_for or {}
        self.seconds = seconds or {}  # pool task id -> its wall time, as the poll reports it (absent: not known)
        self.counter = counter or {}
        self.max_polls = max_polls
        self.requests: list[Any] = []
        self.missing = missing or {}
        self.cancel_on_poll = cancel_on_poll
        self.resubmit = resubmit
        self.extra_rows = extra_rows or {}
        self.polled: dict[str, int] = {}
        self.polls = 0

    def __call__(self, name: str, payload: Any) -> Any:
        assert payload["task_id"] == TASK
        if name == c.SUBMIT:
            return {"submitted": len(payload["shards"])}
        if name == c.POLL:
            self.polls += 1
            if self.polls > self.max_polls:
                raise HarnessError("the orchestrator keeps polling")
            self.requests.append(payload)
            rows, states = [], {}
            for tid in payload["task_ids"]:
                self.polled[tid] = self.polled.get(tid, 0) + 1
                if self.polled[tid] >= self.runs_for.get(tid, 1):
                    rows.append(row(tid, self.missing.get(tid, 0), seconds=self.seconds.get(tid)))
                else:
                    states[tid] = "running"
            rows += self.extra_rows.get(self.polls, [])
            # the counter blob of a running attempt: one image per poll so far (``counter`` overrides)
            progress = {tid: self.counter.get((tid, self.polled.get(tid, 0)), self.polled.get(tid, 0))
                        for tid in payload.get("running", []) if tid in states}
            # a round about no task asks the pool nothing, so it has no cursor but the one it was given (run_poll)
            cursor = f"cursor-{self.polls}" if payload["task_ids"] else payload.get("since") or ""
            return {"cancelled": self.polls == self.cancel_on_poll, "completed": rows, "running": len(states),
                    "queued": 0, "images_in_progress": sum(progress.values()), "cursor": cursor,
                    "states": states, "progress": progress}
        if name == c.RESUBMIT:
            out = []
            for sid, attempt in payload["shards"]:
                answer = self.resubmit or {"missing": self.missing.get(pool_task_id(sid, attempt - 1), 0),
                                           "submitted": True}
                out.append({"shard_id": sid, "attempt": attempt, **answer})
            return {"shards": out}
        if name == c.CANCEL:
            return {"cancelled": True}
        raise HarnessError(f"unexpected activity {name}")


def run_group(shards: int, pool: Pool, **knob_overrides: Any) -> Run:
    return run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(**knob_overrides),
                                         "shards": [shard_id(i) for i in range(shards)]}, pool,
                            instance_id=f"{TASK}-shards-0000")


def pool_ids(*pairs: tuple[int, int]) -> list[str]:
    return [pool_task_id(shard_id(i), a) for i, a in pairs]


def test_submits_no_more_than_max_in_flight_and_refills_as_shards_finish() -> None:
    s0, s1, s2, s3 = (shard_id(i) for i in range(4))
    pool = Pool(runs_for={pool_task_id(s1, 1): 3})
    run = run_group(4, pool, max_in_flight=2)

    assert run.status == "Completed"
    assert [call["shards"] for call in run.inputs(c.SUBMIT)] == [[[s0, 1], [s1, 1]], [[s2, 1]], [[s3, 1]]]
    assert [call["task_ids"] for call in run.inputs(c.POLL)] == [
        pool_ids((0, 1), (1, 1)), pool_ids((1, 1), (2, 1)), pool_ids((1, 1), (3, 1))]
    assert run.output["cancelled"] is False
    assert run.output["done"] == 4 and run.output["images_done"] == 4 * IMAGES
    assert run.custom_status["stage"] == Stage.detecting and run.custom_status["done"] == 4


def test_continues_as_new_before_the_history_passes_its_threshold_and_goes_on_from_there() -> None:
    """The decision reads the generation's history (``history_so_far``) in a replay-safe way: the harness fails any
    replay that takes another path than the episode that first ran it."""
    s0, s1 = shard_id(0), shard_id(1)
    # s0 needs 40 polls; with a 200-event threshold a generation holds far fewer.
    pool = Pool(runs_for={pool_task_id(s0, 1): 40})
    run = run_group(2, pool, max_in_flight=1, history_events=200, poll_min_s=30, poll_max_s=300)

    assert run.status == "Completed"
    assert len(run.continued_as_new) >= 2
    assert max(run.history_events) <= 200 and len(run.history_events) == run.executions
    first = run.continued_as_new[0]
    assert first["task_id"] == TASK and first["knobs"] == knobs(max_in_flight=1, history_events=200)
    assert first["max_in_flight"] == 1  # the group's share travels with it
    assert first["state"][s1] == {"attempt": 1, "status": ShardStatus.pending}
    assert first["state"][s0]["status"] == ShardStatus.submitted and first["state"][s0]["pool"] == "running"
    assert first["delay"] == 300.0  # polls without completions: 30 -> ... -> 300, carried over
    assert first["shards"] == [s0, s1]
    # The next generation does not submit s0 again and keeps its back-off.
    assert [(call.execution, call.input["shards"]) for call in run.calls(c.SUBMIT)] == [
        (0, [[s0, 1]]), (run.executions - 1, [[s1, 1]])]
    assert [t.delay_s for t in run.orchestrator_timers if t.execution == 1][0] == 300.0
    # Each generation's first poll asks by id (no cursor), and every FULL_POLL_EVERY-th (a task deleted outside
    # trapbatch is named unknown then); the others pass the cursor of the poll before.
    from orchestrations.shards import FULL_POLL_EVERY

    for execution in range(run.executions):
        polls = [call for call in run.calls(c.POLL) if call.execution == execution]
        assert [i for i, p in enumerate(polls) if "since" not in p.input] == list(range(0, len(polls),
                                                                                        FULL_POLL_EVERY))
        assert all(p.input["since"] == polls[i - 1].result["cursor"]
                   for i, p in enumerate(polls) if i % FULL_POLL_EVERY)
    assert max(len([p for p in run.calls(c.POLL) if p.execution == e]) for e in range(run.executions)) > FULL_POLL_EVERY
    # No empty generation at the end: the last one still had work (it finished s0 and ran s1).
    assert [call for call in run.calls(c.POLL) if call.execution == run.executions - 1]
    assert "continued" not in run.output
    assert {k: run.output[k] for k in ("cancelled", "shards", "done", "images_done")} == {
        "cancelled": False, "shards": 2, "done": 2, "images_done": 2 * IMAGES}


def test_a_group_continues_as_new_by_the_round_size_it_started_with() -> None:
    """``round_events`` is recorded in the group's input when the task starts it and carried through
    ``continue_as_new``, so a release that changes ``ROUND_EVENTS`` does not move where a running generation goes on
    as new (that changes its replayed actions: the extension fails the group, and so the task); a group started
    before it was recorded uses the value of then."""
    from orchestrations.shards import LEGACY_ROUND_EVENTS

    def generations(extra: dict[str, Any]) -> tuple[list[int], list[Any]]:
        pool = Pool(runs_for={pool_task_id(shard_id(0), 1): 40})
        run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_in_flight=1, history_events=200,
                                                                             poll_min_s=30, poll_max_s=300),
                                            "shards": [shard_id(0)], **extra}, pool)
        assert run.status == "Completed", run.error
        return run.history_events, run.continued_as_new

    legacy, legacy_inputs = generations({})
    assert generations({"round_events": LEGACY_ROUND_EVENTS})[0] == legacy
    wide, wide_inputs = generations({"round_events": 150})
    assert max(wide[:-1]) < min(legacy[:-1])  # a larger round: each generation stops earlier
    assert {i["round_events"] for i in wide_inputs} == {150}
    assert {i["round_events"] for i in legacy_inputs} == {LEGACY_ROUND_EVENTS}


@pytest.mark.parametrize("threshold", [200, 400])
def test_every_generation_stays_under_the_history_threshold_whatever_the_polls(threshold: int) -> None:
    """Many polls (long shards, three at a time, a poll that fails now and then and is retried, resubmissions):
    the history of every generation, as the harness built it for the SDK, stays at or under the threshold."""
    shards = 4
    runs_for = {pool_task_id(shard_id(i), 1): 25 + 7 * i for i in range(shards)}
    runs_for.update({pool_task_id(shard_id(i), 2): 15 for i in range(shards)})
    pool = Pool(runs_for=runs_for, missing={pool_task_id(shard_id(i), 1): 2 for i in range(0, shards, 2)},
                max_polls=2000)
    calls = {"n": 0}

    def flaky(name: str, payload: Any) -> Any:
        if name == c.POLL:
            calls["n"] += 1
            if calls["n"] % 9 == 0:
                raise ConnectionError("pool service busy")
        return pool(name, payload)

    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_in_flight=3, history_events=threshold,
                                                                         poll_min_s=30, poll_max_s=60),
                                        "shards": [shard_id(i) for i in range(shards)]}, flaky)

    assert run.status == "Completed" and run.output["done"] == shards
    assert pool.polls > 60
    assert len(run.continued_as_new) >= 2
    assert max(run.history_events) <= threshold
    # the threshold is used, not wasted: a generation that went on as new had filled most of it
    assert min(run.history_events[:-1]) > threshold - 2 * 80


def test_gives_a_shard_up_after_max_attempts() -> None:
    s0 = shard_id(0)
    pool = Pool(missing={pool_task_id(s0, 1): 4, pool_task_id(s0, 2): 3})
    run = run_group(1, pool, max_attempts=2)

    assert run.status == "Completed"
    assert run.inputs(c.RESUBMIT) == [{"task_id": TASK, "job_id": TASK, "shards": [[s0, 2]]}]
    assert [call["task_ids"] for call in run.inputs(c.POLL)] == [pool_ids((0, 1)), pool_ids((0, 2))]
    assert run.output["given_up"] == 1 and run.output["done"] == 0
    assert run.output["images_missing"] == 3 and run.output["images_done"] == IMAGES - 3
    assert run.output["resubmissions"] == 1
    assert run.custom_status["given_up"] == 1 and run.custom_status["images_missing"] == 3


def test_ignores_a_stale_report_about_an_older_attempt() -> None:
    s0 = shard_id(0)
    a1, a2 = pool_task_id(s0, 1), pool_task_id(s0, 2)
    # Attempt 1 leaves 5 missing; the poll after the resubmission reports attempt 1 again (late, stale) while
    # attempt 2 still runs; the poll after that completes attempt 2.
    pool = Pool(runs_for={a2: 2}, missing={a1: 5}, extra_rows={2: [row(a1, missing=5)]})
    run = run_group(1, pool, max_attempts=3)

    assert run.status == "Completed"
    assert run.inputs(c.RESUBMIT) == [{"task_id": TASK, "job_id": TASK, "shards": [[s0, 2]]}]  # no attempt 3
    assert [call["task_ids"] for call in run.inputs(c.POLL)] == [[a1], [a2], [a2]]
    assert run.output["done"] == 1 and run.output["images_missing"] == 0 and run.output["resubmissions"] == 1


def test_shard_is_done_when_the_resubmission_finds_nothing_missing() -> None:
    s0 = shard_id(0)
    pool = Pool(missing={pool_task_id(s0, 1): 2}, resubmit={"missing": 0, "submitted": False})
    run = run_group(1, pool)

    assert run.status == "Completed"
    assert run.inputs(c.RESUBMIT) == [{"task_id": TASK, "job_id": TASK, "shards": [[s0, 2]]}]
    assert len(run.calls(c.POLL)) == 1  # nothing left in flight: no attempt 2 to watch
    assert run.output["done"] == 1 and run.output["submitted"] == 0
    assert run.output["images_done"] == IMAGES and run.output["images_missing"] == 0


def test_resubmits_only_the_shard_with_missing_images_as_its_next_attempt() -> None:
    s0, s1, s2 = (shard_id(i) for i in range(3))
    pool = Pool(missing={pool_task_id(s1, 1): 3})
    run = run_group(3, pool)

    assert run.status == "Completed"
    assert run.inputs(c.RESUBMIT) == [{"task_id": TASK, "job_id": TASK, "shards": [[s1, 2]]}]
    assert [call["shards"] for call in run.inputs(c.SUBMIT)] == [[[s0, 1], [s1, 1], [s2, 1]]]  # only the first
    assert [call["task_ids"] for call in run.inputs(c.POLL)] == [pool_ids((0, 1), (1, 1), (2, 1)), pool_ids((1, 2))]
    assert run.output["done"] == 3 and run.output["resubmissions"] == 1
    assert run.output["images_done"] == 3 * IMAGES and run.output["images_missing"] == 0


def test_a_transient_resubmit_failure_is_retried_after_a_durable_timer_for_all_shards_at_once() -> None:
    """One resubmit activity per poll, retried by an explicit timer (not call_activity_with_retry: #603)."""
    s0, s1 = shard_id(0), shard_id(1)
    pool = Pool(missing={pool_task_id(s0, 1): 2, pool_task_id(s1, 1): 4})
    failures = {"left": 1}

    def flaky(name: str, payload: Any) -> Any:
        if name == c.RESUBMIT and failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("pool service busy")
        return pool(name, payload)

    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(), "shards": [s0, s1]}, flaky)

    assert run.status == "Completed"
    assert [(call.input["shards"], call.error is None) for call in run.calls(c.RESUBMIT)] == [
        ([[s0, 2], [s1, 2]], False), ([[s0, 2], [s1, 2]], True)]
    assert [t.delay_s for t in run.timers if not t.retry][1] == 2.0  # the retry's durable timer, after the first poll's
    assert [call["task_ids"] for call in run.inputs(c.POLL)] == [pool_ids((0, 1), (1, 1)), pool_ids((0, 2), (1, 2))]
    assert run.output["done"] == 2 and run.output["resubmissions"] == 2


def test_cancel_marker_cancels_the_pool_tasks_in_flight_and_stops() -> None:
    s0, s1, s2 = (shard_id(i) for i in range(3))
    pool = Pool(runs_for={pool_task_id(s1, 1): 5}, cancel_on_poll=2)
    run = run_group(3, pool, max_in_flight=2)

    assert run.status == "Completed"
    assert [call["shards"] for call in run.inputs(c.SUBMIT)] == [[[s0, 1], [s1, 1]], [[s2, 1]]]
    assert run.inputs(c.CANCEL) == [{"task_id": TASK, "job_id": TASK, "task_ids": pool_ids((1, 1), (2, 1))}]
    assert run.activity_names[-1] == c.CANCEL  # nothing after the cancel
    assert len(run.calls(c.POLL)) == 2
    assert run.output["cancelled"] is True
    assert run.custom_status["stage"] == Stage.cancelled


def test_poll_delay_doubles_up_to_the_maximum_and_resets_after_a_completion() -> None:
    s0, s1 = shard_id(0), shard_id(1)
    pool = Pool(runs_for={pool_task_id(s0, 1): 5, pool_task_id(s1, 1): 2})
    run = run_group(2, pool, max_in_flight=1, poll_min_s=30, poll_max_s=200)

    assert run.status == "Completed"
    assert [t.delay_s for t in run.orchestrator_timers] == [30, 60, 120, 200, 200, 30, 60]
    # Each poll happens when its timer has fired, on the orchestration clock.
    fire_times = [t.fire_at for t in run.orchestrator_timers]
    assert fire_times == sorted(fire_times)
    assert run.output["done"] == 2



@pytest.mark.parametrize("exit_code, fails", [(3, True), (5, True), (2, True), (4, False), (1, False),
                                              (exit_codes.OUTPUT_TAKEN, False)])
def test_a_worker_exit_no_retry_can_fix_fails_the_group_on_its_second_attempt_with_the_workers_message(
        exit_code: int, fails: bool) -> None:
    """Not on the first: the same exits come from passing causes (a model download cut short, a storage timeout
    reading the manifest, a node whose GPU is gone), and one node's hiccup failed a whole run. The failing group
    stops the run's other groups (STOP_GROUPS: they would otherwise go on for hours before the task could fail)."""
    s0 = shard_id(0)
    pool = Pool()

    def failing_worker(name: str, payload: Any) -> Any:
        attempts = [pool_task_id(s0, a) for a in (1, 2, 3)]
        if name == c.POLL and set(attempts) & set(payload["task_ids"]):
            tid = next(t for t in attempts if t in payload["task_ids"])
            failed = {**row(tid, missing=IMAGES), "result": "failure", "exit_code": exit_code,
                      "failure_message": f"the worker exited with code {exit_code}"}
            if exit_code == 3:
                failed["worker_message"] = "model '/models/md.pt' cannot be loaded: not a checkpoint"
            return {"cancelled": False, "completed": [failed], "running": 0, "queued": 0, "images_in_progress": 0}
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": sid, "attempt": a, "missing": IMAGES, "submitted": True}
                               for sid, a in payload["shards"]]}
        if name == c.STOP_GROUPS:
            return {"stopped": True}
        return pool(name, payload)

    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=3), "shards": [s0]},
                           failing_worker)

    if fails:
        assert run.status == "Failed" and len(run.calls(c.RESUBMIT)) == 1
        assert f"worker exit code {exit_code}" in (run.error or "") and f"shard {s0} attempt 2" in (run.error or "")
        [stop] = run.calls(c.STOP_GROUPS)
        assert stop.input["job_id"] == pool_job_id(TASK) and f"worker exit code {exit_code}" in stop.input["reason"]
        if exit_code == 3:
            assert "the model cannot be loaded" in (run.error or "") and "not a checkpoint" in (run.error or "")
    else:  # output hiccups, crashes and a run that lost its output to another run of the attempt: the missing
        # images get their next attempts, then the shard gives up
        assert run.status == "Completed" and len(run.calls(c.RESUBMIT)) == 2 and run.calls(c.STOP_GROUPS) == []


def _first_attempt_exits(exit_code: int, max_attempts: int) -> Any:
    """One shard whose first attempt's worker exits ``exit_code`` (the rest run as the simulated pool runs them)."""
    s0 = shard_id(0)
    a1 = pool_task_id(s0, 1)
    pool = Pool()

    def worker(name: str, payload: Any) -> Any:
        if name == c.POLL and a1 in payload["task_ids"]:
            failed = {**row(a1, missing=IMAGES), "result": "failure", "exit_code": exit_code,
                      "failure_message": f"the worker exited with code {exit_code}"}
            return {"cancelled": False, "completed": [failed], "running": 0, "queued": 0, "images_in_progress": 0}
        if name == c.STOP_GROUPS:
            return {"stopped": True}
        return pool(name, payload)

    return run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=max_attempts), "shards": [s0]},
                            worker)


def test_an_unfixable_exit_that_passes_on_the_next_attempt_fails_nothing() -> None:
    """A node whose model download was cut short (exit 3): the shard's next attempt, on another node, runs."""
    run = _first_attempt_exits(3, max_attempts=3)
    assert run.status == "Completed" and run.output["done"] == 1 and run.calls(c.STOP_GROUPS) == []


def test_an_unfixable_exit_on_a_shards_last_attempt_fails_at_once() -> None:
    run = _first_attempt_exits(5, max_attempts=1)
    assert run.status == "Failed" and run.calls(c.RESUBMIT) == [] and len(run.calls(c.STOP_GROUPS)) == 1


def test_a_stop_marker_that_cannot_be_written_leaves_the_workers_failure_the_tasks() -> None:
    """Exits 2 and 5 often come with storage trouble: the marker's write failing replaced the worker's message."""
    s0 = shard_id(0)
    a1 = pool_task_id(s0, 1)
    pool = Pool()

    def worker(name: str, payload: Any) -> Any:
        if name == c.POLL and a1 in payload["task_ids"]:
            failed = {**row(a1, missing=IMAGES), "result": "failure", "exit_code": 5,
                      "failure_message": "the worker exited with code 5"}
            return {"cancelled": False, "completed": [failed], "running": 0, "queued": 0, "images_in_progress": 0}
        if name == c.STOP_GROUPS:
            raise ConnectionError("storage timeout writing the marker")
        return pool(name, payload)

    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=1), "shards": [s0]}, worker)
    assert run.status == "Failed" and "worker exit code 5" in (run.error or "")
    assert "storage timeout" not in (run.error or "")


def test_a_shard_the_pool_never_started_reports_the_pools_reason_when_it_gives_up() -> None:
    """Azure Batch ends a task before its command runs when it cannot pull the container image (failureInfo, no exit
    code: batch-job-task-error-checking.md); each attempt is retried (a registry hiccup passes), and a shard that
    gives up says why in the group's outcome, for the task to fail with it rather than hide it."""
    s0, s1 = shard_id(0), shard_id(1)
    pool = Pool()
    reason = "ContainerPullImageFailed: Failed to pull image myacr.azurecr.io/trapbatch-worker:1.0"

    def unstarted(name: str, payload: Any) -> Any:
        if name == c.POLL:
            out = pool(name, payload)
            out["completed"] = [{**r, "result": "failure", "exit_code": None, "failure_message": reason,
                                 "covered": 0, "missing": IMAGES} if r["shard_id"] == s0 else r
                                for r in out["completed"]]
            return out
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": sid, "attempt": a, "missing": IMAGES, "submitted": True}
                               for sid, a in payload["shards"]]}
        return pool(name, payload)

    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=3), "shards": [s0, s1]},
                           unstarted)
    assert run.status == "Completed" and len(run.calls(c.RESUBMIT)) == 2  # attempts 2 and 3 of shard 0
    assert (run.output["given_up"], run.output["done"]) == (1, 1)
    assert (run.output["pool_error_shards"], run.output["pool_error"]) == (1, reason)


def _every_attempt_ends(ended: dict[str, Any]) -> Any:
    """The pool activities, with every attempt of shard 0 completed as ``ended`` says (nothing covered)."""
    s0 = shard_id(0)
    pool = Pool()

    def script(name: str, payload: Any) -> Any:
        if name == c.POLL:
            out = pool(name, payload)
            out["completed"] = [{**r, "result": "failure", "covered": 0, "missing": IMAGES, **ended}
                                if r["shard_id"] == s0 else r for r in out["completed"]]
            return out
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": sid, "attempt": a, "missing": IMAGES, "submitted": True}
                               for sid, a in payload["shards"]]}
        return pool(name, payload)
    return script


def test_a_shard_the_pool_ended_at_its_time_limit_reports_the_pools_reason_whatever_the_exit_code() -> None:
    """Azure Batch ends a task at its maxWallClockTime with an exit code of the operating system's (0xC000013A) AND
    failureInfo code TaskEnded (batch-job-task-error-checking.md, "Constraint errors"); LocalPool ends one with 137
    and TaskEnded. The failure code, not the missing exit code, says the pool ended it. An exit code the worker uses
    for "no retry helps" (3) that comes with TaskEnded is not the worker's, so it does not fail the task either."""
    s0, s1 = shard_id(0), shard_id(1)
    reason = "TaskEnded: The task exceeded its maximum wall clock time"
    for exit_code in (-1073741510, 137, exit_codes.MODEL):
        run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=2), "shards": [s0, s1]},
                               _every_attempt_ends({"exit_code": exit_code, "failure_code": exit_codes.TASK_ENDED,
                                                    "failure_message": reason}))
        assert run.status == "Completed" and len(run.calls(c.RESUBMIT)) == 1, exit_code
        assert (run.output["given_up"], run.output["done"]) == (1, 1)
        assert (run.output["pool_error_shards"], run.output["pool_error"]) == (1, reason)


def test_a_group_keeps_how_its_first_given_up_shards_ended_and_no_more() -> None:
    """Each given-up shard's last exit code and the worker's words go into the group's outcome (the task's status
    says why its images were not processed), for the first GIVEN_UP_EXAMPLES shards only: the outcome is history."""
    pool = Pool()
    shards = c.GIVEN_UP_EXAMPLES + 2

    def crashing(name: str, payload: Any) -> Any:
        out = pool(name, payload)
        if name == c.POLL:
            out["completed"] = [{**r, "result": "failure", "exit_code": 1, "failure_code": "FailureExitCode",
                                 "failure_message": "The task exited with an exit code representing a failure",
                                 "worker_message": "RuntimeError: CUDA error: " + "x" * 400, "covered": 0,
                                 "missing": IMAGES} for r in out["completed"]]
        return out

    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=1, max_in_flight=shards),
                                        "shards": [shard_id(i) for i in range(shards)]}, crashing)
    assert run.status == "Completed" and run.output["given_up"] == shards
    examples = run.output["given_up_examples"]
    assert [e["shard"] for e in examples] == [shard_id(i) for i in range(c.GIVEN_UP_EXAMPLES)]
    assert examples[0]["exit_code"] == 1 and examples[0]["by"] == "worker" and examples[0]["attempts"] == 1
    assert examples[0]["reason"].startswith("the worker exited 1: RuntimeError: CUDA error: ")
    assert len(examples[0]["reason"]) == c.GIVEN_UP_REASON_CHARS


@pytest.mark.parametrize("code, means", [(143, "(stopped by SIGTERM, as a terminate or a node going away sends"),
                                         (75, "(the node's resident worker went away mid-shard)")])
def test_a_shard_given_up_on_the_workers_stop_or_lost_server_says_what_that_exit_means(code: int, means: str) -> None:
    """exit_codes.CANCELLED and SERVER_LOST are retried like any crash; a shard whose every attempt ended so is
    given up with words for the code, not a bare number (the worker's own last line may not say it)."""
    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=2), "shards": [shard_id(0)]},
                           _every_attempt_ends({"exit_code": code, "failure_code": "FailureExitCode",
                                                "failure_message": "The task exited with an exit code representing "
                                                                   "a failure"}))
    assert run.status == "Completed" and run.output["given_up"] == 1
    [example] = run.output["given_up_examples"]
    assert example["by"] == "worker" and example["attempts"] == 2
    assert example["reason"].startswith(f"the worker exited {code} {means}")


def test_an_exit_code_without_a_failure_code_is_the_workers_as_before() -> None:
    """A poll output of before failure codes (a recorded history replayed after a deployment): an exit code is the
    worker's, as it was judged then, so no pool error is recorded (tests/orchestrations/test_upgrade_replay.py)."""
    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=2), "shards": [shard_id(0)]},
                           _every_attempt_ends({"exit_code": 137, "failure_message": "TaskEnded: ended"}))
    assert run.status == "Completed" and run.output["given_up"] == 1 and "pool_error" not in run.output


# ---------------------------------------------------------------- fixed bugs (each failed on the code before them)

def test_a_resubmission_that_found_nothing_missing_is_not_counted_as_one() -> None:
    s0 = shard_id(0)
    pool = Pool(missing={pool_task_id(s0, 1): 2}, resubmit={"missing": 0, "submitted": False})
    run = run_group(1, pool)

    assert run.status == "Completed" and run.output["done"] == 1
    assert run.output["resubmissions"] == 0  # no attempt 2 was ever submitted
    assert run.custom_status["resubmissions"] == 0


def test_a_poll_with_only_stale_rows_does_not_reset_the_back_off() -> None:
    s0 = shard_id(0)
    a1, a2 = pool_task_id(s0, 1), pool_task_id(s0, 2)
    # attempt 1 leaves images missing; while attempt 2 runs (4 polls), polls 3 and 4 repeat attempt 1's late report
    pool = Pool(runs_for={a2: 4}, missing={a1: 5}, extra_rows={3: [row(a1, missing=5)], 4: [row(a1, missing=5)]})
    run = run_group(1, pool, poll_min_s=30, poll_max_s=1000)

    assert run.status == "Completed" and run.output["done"] == 1
    # poll 1 completes attempt 1 (reset to 30), then attempt 2 runs: 60, 120, 240 whatever the stale rows say
    assert [t.delay_s for t in run.orchestrator_timers] == [30, 30, 60, 120, 240]


def test_no_empty_generation_when_the_last_work_finishes_just_before_the_threshold() -> None:
    """Whatever poll the last completion lands on, the group ends in the generation that saw it. (The old knob
    ``polls_per_generation`` is in the input too, as a generation boundary the code before this fix honoured.)"""
    ended = set()
    for polls_needed in range(15, 19):
        pool = Pool(runs_for={pool_task_id(shard_id(0), 1): polls_needed})
        run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": {**knobs(history_events=200),
                                                                       "polls_per_generation": 16},
                                            "shards": [shard_id(0)]}, pool)
        ended.add(run.executions)
        assert run.status == "Completed" and run.output["done"] == 1
        for execution in range(run.executions):
            assert [c_ for c_ in run.calls(c.POLL) if c_.execution == execution], (polls_needed, execution)
    assert ended == {1, 2}  # the range crosses the generation boundary


def test_images_shown_done_never_go_backwards() -> None:
    """The counter of a running attempt counts retryable failures too; its completion may then cover fewer images
    than the counter said, and a counter read can come back lower (a restarted attempt). The shown count holds."""
    s0, s1 = shard_id(0), shard_id(1)
    a0 = pool_task_id(s0, 1)
    pool = Pool(runs_for={a0: 5, pool_task_id(s0, 2): 3, pool_task_id(s1, 1): 2},
                counter={(a0, 3): 9, (a0, 4): 4},  # 9 images at the 3rd poll, then a restarted worker says 4
                missing={a0: 3})
    run = run_group(2, pool, max_in_flight=2)

    assert run.status == "Completed" and run.output["done"] == 2
    shown = [s["images_progress"] for s in run.statuses if "images_progress" in s]
    assert shown == sorted(shown) and shown[-1] == 2 * IMAGES
    assert 19 in shown  # s1's 10 and the 9 of s0's counter, while s0 ran
    # the running attempts' counters were asked for only once their tasks were known to run
    assert pool.requests[0].get("running") == [] and a0 in pool.requests[1]["running"]


def test_node_time_sums_every_ended_attempt_once_for_the_tasks_cost() -> None:
    """Each attempt's pool-task seconds count once (a report repeated by the cursor's overlap does not count again),
    a failed attempt's time counts too (the node was paid for), and an attempt without times is counted as ended but
    not timed."""
    s0a1, s0a2, s1a1 = pool_task_id(shard_id(0), 1), pool_task_id(shard_id(0), 2), pool_task_id(shard_id(1), 1)
    pool = Pool(missing={s0a1: 3}, seconds={s0a1: 100.5, s0a2: 20.25},
                extra_rows={2: [row(s0a1, missing=3, seconds=100.5)]})  # poll 2 repeats attempt 1's end
    run = run_group(2, pool)

    assert run.status == "Completed" and run.output["done"] == 2 and run.output["resubmissions"] == 1
    assert (run.output["attempts_ended"], run.output["attempts_timed"]) == (3, 2)
    assert run.output["node_seconds"] == 120.75
    assert run.custom_status["node_seconds"] == 120.75


class LosingPool(Pool):
    """A pool that never received the first submission of ``lost`` (each a pool task id): until submitted again it
    knows nothing of it, leaves it out of every poll and, asked by id without a cursor, names it ``unknown``."""

    def __init__(self, lost: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lost = set(lost)
        self.known: set[str] = set()
        self.submits: list[list[tuple[str, int]]] = []

    def __call__(self, name: str, payload: Any) -> Any:
        if name == c.SUBMIT:
            self.submits.append([tuple(s) for s in payload["shards"]])
            for sid, attempt in payload["shards"]:
                tid = pool_task_id(sid, attempt)
                if tid in self.lost:
                    self.lost.discard(tid)  # lost once: the next submission arrives
                else:
                    self.known.add(tid)
            return {"submitted": len(payload["shards"])}
        if name == c.POLL:
            asked = payload["task_ids"]
            answer = super().__call__(name, {**payload, "task_ids": [t for t in asked if t in self.known]})
            if "since" not in payload:
                answer["unknown"] = [t for t in asked if t not in self.known]
            return answer
        return super().__call__(name, payload)


def test_a_submission_the_pool_never_received_is_submitted_again_after_the_reconciliation() -> None:
    """Without this the shard stayed "submitted" for ever: every later poll asks only for changes, and a task the
    pool does not know never changes (a benchmark whose pool lost submissions waited without end)."""
    lost = pool_task_id(shard_id(1), 1)
    pool = LosingPool({lost}, runs_for={pool_task_id(shard_id(0), 1): 3})
    run = run_group(2, pool, max_in_flight=2)
    assert run.status == "Completed", run.error
    assert pool.submits == [[(shard_id(0), 1), (shard_id(1), 1)], [(shard_id(1), 1)]]  # the same attempt, again
    assert run.output["done"] == 2 and run.output["given_up"] == 0


def test_a_poll_without_unknown_ids_submits_nothing_again() -> None:
    """Histories recorded before polls reported ``unknown`` replay unchanged: no key, no extra submission."""
    pool = Pool(runs_for={pool_task_id(shard_id(0), 1): 2})
    run = run_group(2, pool, max_in_flight=2)
    assert run.status == "Completed", run.error
    assert len(run.calls(c.SUBMIT)) == 1


# ---------------------------------------------------------------- outages (module docstring of orchestrations.shards)

OUTAGE_S = 6 * 3600
BUSY_CALLS = 4  # busy_retry_attempts in these tests: waits of 15, 30 and 60 s between a step's calls


def busy_for(pool: Pool, step: str, failures: int, error: Exception | None = None) -> Any:
    """``pool``, with the first ``failures`` calls of ``step`` failing as a Batch account out of reach does."""
    left = {"n": failures}

    def script(name: str, payload: Any) -> Any:
        if name == step and left["n"]:
            left["n"] -= 1
            raise error or ConnectionError("Connection aborted: the Batch endpoint did not answer")
        return pool(name, payload)
    return script


def outage_group(shards: int, script: Any, extra: dict[str, Any] | None = None, **knob_overrides: Any) -> Run:
    """A group as the task starts it since outages are outlasted (``outage_limit_s`` in its input)."""
    overrides = {"busy_retry_attempts": BUSY_CALLS, "poll_min_s": 30, "poll_max_s": 300, **knob_overrides}
    data = {"task_id": TASK, "knobs": knobs(**overrides), "shards": [shard_id(i) for i in range(shards)],
            "outage_limit_s": OUTAGE_S, **(extra or {})}
    return run_orchestrator(run_shards, data, script, instance_id=f"{TASK}-shards-0000")


def notes(run: Run) -> list[dict[str, Any]]:
    return [s[c.WAITING_KEY] for s in run.statuses if isinstance(s, dict) and c.WAITING_KEY in s]


def test_a_poll_that_stays_busy_past_its_retries_is_a_round_without_news_and_the_group_finishes_after() -> None:
    """Two rounds' polls run out of busy retries (4 calls each), the third round's gets through: the group waited
    with its normal back-off (30 s, then 60 s, then 120 s), said since when the pool was out of reach, asked by id
    after the outage, and finished; the note is gone once a round got through."""
    run = outage_group(1, busy_for(Pool(), c.POLL, 2 * BUSY_CALLS + 2))

    assert run.status == "Completed", run.error
    assert run.output["done"] == 1 and len(run.calls(c.POLL)) == 2 * BUSY_CALLS + 3
    timers = run.orchestrator_timers
    assert [t.delay_s for t in timers] == [30, 15, 30, 60, 60, 15, 30, 60, 120, 15, 30]
    since = timers[0].fire_at  # the first poll of the first round that ran out of retries
    outage = [n for n in notes(run) if "since" in n]
    assert {n["since"] for n in outage} == {since.isoformat()}
    assert {n["until"] for n in outage} == {(since + dt.timedelta(seconds=OUTAGE_S)).isoformat()}
    assert {n["step"] for n in outage} == {c.POLL} and all("Connection aborted" in n["reason"] for n in outage)
    # before each round's timer the note says when the next poll is; the poll's own retries then say which attempt
    # of how many, keeping since and until
    assert [n["at"] for n in outage if "attempt" not in n] == [timers[4].fire_at.isoformat(),
                                                               timers[8].fire_at.isoformat()]
    assert [n["attempt"] for n in outage if "attempt" in n] == [2, 3, 4, 2, 3]
    assert c.WAITING_KEY not in run.custom_status and run.custom_status["done"] == 1
    assert all("since" not in p for p in run.inputs(c.POLL))  # asked by id (the first poll after the outage too)


def test_a_resubmission_that_stays_busy_is_made_again_next_round_before_the_pool_is_asked_about_it() -> None:
    """The round's completions are kept (attempt 1's node time counts once); the shard is owed its attempt 2, which
    the next round resubmits with no poll before it (nothing else is in flight), and the poll after that asks about
    attempt 2 by id."""
    s0 = shard_id(0)
    a1 = pool_task_id(s0, 1)
    pool = Pool(missing={a1: 3}, seconds={a1: 50.0}, runs_for={pool_task_id(s0, 2): 1})
    run = outage_group(1, busy_for(pool, c.RESUBMIT, BUSY_CALLS))

    assert run.status == "Completed", run.error
    assert [call["shards"] for call in run.inputs(c.RESUBMIT)] == [[[s0, 2]]] * (BUSY_CALLS + 1)
    assert [call["task_ids"] for call in run.inputs(c.POLL)] == [[a1], [pool_task_id(s0, 2)]]
    assert "since" not in run.inputs(c.POLL)[1]
    assert [call.name for call in run.activities][-3:] == [c.RESUBMIT, c.RESUBMIT, c.POLL]
    assert run.output["done"] == 1 and run.output["resubmissions"] == 1
    assert (run.output["attempts_ended"], run.output["node_seconds"]) == (2, 50.0)
    assert {n["step"] for n in notes(run)} == {c.RESUBMIT} and c.WAITING_KEY not in run.custom_status


def test_a_submission_that_stays_busy_leaves_its_shards_pending_until_it_gets_through() -> None:
    """Nothing in flight, nothing to poll: the group waits its back-off and submits the same attempts again."""
    pool = Pool()
    run = outage_group(2, busy_for(pool, c.SUBMIT, BUSY_CALLS + 1))

    assert run.status == "Completed", run.error
    assert [call["shards"] for call in run.inputs(c.SUBMIT)] == [[[shard_id(0), 1], [shard_id(1), 1]]] * (
        BUSY_CALLS + 2)
    assert len(run.calls(c.POLL)) == 1 and run.output["done"] == 2
    assert [t.delay_s for t in run.orchestrator_timers] == [15, 30, 60, 30, 15, 60]
    assert {n["step"] for n in notes(run)} == {c.SUBMIT}


def test_busy_failures_with_no_more_calls_than_others_are_outlasted_too() -> None:
    """``TRAPBATCH_BUSY_RETRY_ATTEMPTS=3``: ``call`` raises the busy failure itself after 3 calls, not
    ``ServiceStayedBusy``; it is an outage all the same."""
    run = outage_group(1, busy_for(Pool(), c.POLL, 3), busy_retry_attempts=3)

    assert run.status == "Completed", run.error
    assert len(run.calls(c.POLL)) == 4 and run.output["done"] == 1
    assert [t.delay_s for t in run.orchestrator_timers] == [30, 2, 4, 60]


def test_a_failure_that_is_not_busy_still_fails_the_group() -> None:
    run = outage_group(1, busy_for(Pool(), c.POLL, 99, ValueError("InvalidQueryParameterValue")))

    assert run.status == "Failed" and len(run.calls(c.POLL)) == 3
    assert "InvalidQueryParameterValue" in (run.error or "")


def test_a_group_started_before_outages_were_outlasted_fails_at_its_first_step_that_stays_busy() -> None:
    """No ``outage_limit_s`` in its input: the poll that ran out of busy retries fails it, as it did then."""
    run = run_group(1, busy_for(Pool(), c.POLL, 99), busy_retry_attempts=BUSY_CALLS)

    assert run.status == "Failed" and len(run.calls(c.POLL)) == BUSY_CALLS
    assert (run.error or "").startswith(f"{c.POLL} failed {BUSY_CALLS} times over")
    assert len(run.orchestrator_timers) == 1 + BUSY_CALLS - 1


def test_an_outage_longer_than_the_limit_fails_the_group_saying_since_when_and_what_to_do() -> None:
    """Through several generations (``continue_as_new`` carries the outage and the limit), each one's history under
    its threshold with the failed calls and their timers counted; then the group fails, once the outage has lasted
    ``outage_limit_s``, with the time it began and the request to post."""
    from orchestrations.shards import round_events

    pool = Pool()
    run = outage_group(1, busy_for(pool, c.POLL, 10_000), extra={"round_events": round_events(BUSY_CALLS)},
                       history_events=200)

    assert run.status == "Failed" and pool.polls == 0
    error = run.error or ""
    since = run.orchestrator_timers[0].fire_at
    assert f"out of reach since {since.isoformat()}" in error
    assert "Connection aborted" in error and f"{c.POLL} stayed busy" in error
    # what to do, within the 500 characters a status shows (core.errors.failure_line): a failed task posted again as
    # it was resumes its run; "only_new" would start a new one, which reuses only a completed run's results
    assert error.index('post the same request again, without "rerun" or "only_new"') < error.index(c.POLL) < 500
    assert OUTAGE_S <= (run.orchestrator_timers[-1].fire_at - since).total_seconds() < OUTAGE_S + 3600
    assert len(run.continued_as_new) >= 2
    assert {i["outage_limit_s"] for i in run.continued_as_new} == {OUTAGE_S}
    assert {i["outage"]["since"] for i in run.continued_as_new} == {since.isoformat()}
    assert max(run.history_events) <= 200
    assert c.WAITING_KEY not in run.custom_status


def test_a_job_disabled_past_the_limit_fails_the_group_saying_so_not_that_batch_was_out_of_reach() -> None:
    """A pool job disabled outside trapbatch (``JobDisabled``, activities.pool.check_job) is waited out as an outage,
    the same rounds and timers; past the limit the failure says the job stayed disabled and what to do, where it
    said the pool was "out of reach" and to wait until "Azure Batch and Storage answer again", which they did."""
    from gpu_batch.pool import JobDisabled

    disabled = JobDisabled("the pool job was disabled outside trapbatch: none of its tasks starts until 'az batch "
                           f"job enable --job-id {TASK}'; the shard group waits for that up to its outage limit, "
                           "then fails")
    pool = Pool()
    run = outage_group(1, busy_for(pool, c.POLL, 10_000, error=disabled))
    outage = outage_group(1, busy_for(Pool(), c.POLL, 10_000))

    assert run.status == "Failed" and pool.polls == 0
    error = run.error or ""
    assert "out of reach" not in error and "answer again" not in error, error
    assert error.index("the pool job stayed disabled outside trapbatch") < error.index("'az batch job enable'")
    assert error.index('post the same request again, without "rerun" or "only_new"') < error.index(c.POLL) < 500
    assert f"--job-id {TASK}" in error  # the pool's words, which name the job
    # scheduled as any outage
    assert [t.fire_at for t in run.orchestrator_timers] == [t.fire_at for t in outage.orchestrator_timers]
    assert [a.name for a in run.activities] == [a.name for a in outage.activities]


class WorstRoundsPool(LosingPool):
    """From its fifth poll on, every poll round makes each pool call a round can make, all four: the poll, the
    SUBMIT again of a shard the poll names unknown, the RESUBMIT of a shard that came back with images missing, and
    the next round's SUBMIT of a pending shard into the slot a finished shard freed. Every shard's first submission
    is lost once (named unknown, submitted again), its attempt 1 leaves images missing, its attempt 2 finishes; the
    first three shards' attempts 2 run 1, 2 and 3 polls, which staggers the shards one poll apart (with three in
    flight). It returns no change cursor (as pools did before ``GpuPool.changes``), so every poll asks by id and so
    may name a task unknown."""

    def __init__(self, shards: int) -> None:
        ids = [shard_id(i) for i in range(shards)]
        super().__init__({pool_task_id(sid, 1) for sid in ids}, missing={pool_task_id(sid, 1): 2 for sid in ids},
                         runs_for={pool_task_id(ids[1], 2): 2, pool_task_id(ids[2], 2): 3}, max_polls=10 * shards)

    def __call__(self, name: str, payload: Any) -> Any:
        answer = super().__call__(name, payload)
        if name == c.RESUBMIT:  # the pool received it (``LosingPool`` loses first submissions only)
            self.known.update(pool_task_id(sid, attempt) for sid, attempt in payload["shards"])
        if name == c.POLL:
            answer["cursor"] = ""
        return answer


def each_call_busy(script: Any, failures: int) -> Any:
    """``script``, with each call of each pool step failing ``failures`` times (a Batch account out of reach) before
    the next attempt gets through: the most calls a step makes without running out of busy retries."""
    failed: dict[str, int] = {}

    def busy(name: str, payload: Any) -> Any:
        if failed.get(name, 0) < failures:
            failed[name] = failed.get(name, 0) + 1
            raise ConnectionError("Connection aborted: the Batch endpoint did not answer")
        failed[name] = 0
        return script(name, payload)
    return busy


# (busy_retry_attempts, history_events): the smallest of both, then pairs where a round budget of three calls
# (``round_events`` before the SUBMIT of unknown shards was counted) let a generation pass its threshold here (by 4,
# 28 and 36 events; 8 attempts is the default).
@pytest.mark.parametrize(("attempts", "threshold"), [(3, 200), (3, 300), (5, 500), (8, 700)])
def test_no_generation_passes_its_threshold_when_every_call_of_every_round_retries_as_long_as_it_may(
        attempts: int, threshold: int) -> None:
    """The worst round (``WorstRoundsPool``: a poll, a SUBMIT of the shards it named unknown, a RESUBMIT and the
    next SUBMIT, each failing busy ``attempts - 1`` times before it gets through) fits in ``round_events``, so a
    generation, which goes on as new before its next round could pass ``history_events``, never passes it."""
    from core.settings import MIN_HISTORY_EVENTS
    from orchestrations.shards import round_events

    assert MIN_HISTORY_EVENTS == 200  # the smallest threshold a deployment may set is among those tried
    shards = 8  # enough for that three-call budget to pass each threshold above (with 6 shards, two stay under)
    pool = WorstRoundsPool(shards)
    run = outage_group(shards, each_call_busy(pool, attempts - 1), extra={"round_events": round_events(attempts)},
                       busy_retry_attempts=attempts, max_in_flight=3, history_events=threshold)

    assert run.status == "Completed", run.error
    assert run.output["done"] == shards and run.output["resubmissions"] == shards
    submitted = [shard for call in pool.submits for shard in call]
    assert sorted(submitted) == sorted([(shard_id(i), 1) for i in range(shards)] * 2)  # lost once, then again
    assert len(run.calls(c.POLL)) == attempts * pool.polls  # every call failed attempts - 1 times first
    assert len(run.continued_as_new) >= 2
    assert max(run.history_events) <= threshold, run.history_events


class ChangesPool:
    """A pool that answers as ``GpuPool`` does where cursors matter (``activities.pool.run_poll``): asked by id, the
    asked tasks it knows, with their state now, and the ones it does not know (``unknown``); asked with a cursor,
    only the asked tasks that started or ended after it. Its clock is the number of pool calls so far (each call,
    failed or not, is one tick); a poll's cursor is the clock when it asks. A task runs ``runs[task]`` ticks (default
    1) from when it is added, then completes after ``seconds[task]`` of node time (default 10), leaving
    ``missing[task]`` images missing (default 0). A row's coverage is its shard's, from any attempt, as
    ``shard_coverage`` counts it: the latest ended attempt's missing images. The first ``busy_resubmits`` RESUBMIT
    calls add their first shard's attempt, then fail as a Batch account out of reach does (on the second shard)."""

    def __init__(self, missing: dict[str, int] | None = None, runs: dict[str, int] | None = None,
                 busy_resubmits: int = 0) -> None:
        self.missing = missing or {}
        self.runs = runs or {}
        self.seconds: dict[str, float] = {}
        self.busy_resubmits = busy_resubmits
        self.clock = 0
        self.added: dict[str, int] = {}  # pool task id -> the tick it was added at

    def _ends(self, tid: str) -> int:
        return self.added[tid] + self.runs.get(tid, 1)

    def _add(self, sid: str, attempt: int) -> None:
        self.added.setdefault(pool_task_id(sid, attempt), self.clock)  # a known id is a no-op (deterministic ids)

    def _row(self, tid: str) -> c.CompletedShard:
        sid, _ = parse_pool_task_id(tid)
        ended = [t for t in self.added if parse_pool_task_id(t)[0] == sid and self._ends(t) <= self.clock]
        latest = max(ended, key=lambda t: parse_pool_task_id(t)[1])
        return row(tid, self.missing.get(latest, 0), seconds=self.seconds.get(tid, 10.0))

    def __call__(self, name: str, payload: Any) -> Any:
        self.clock += 1
        if name == c.SUBMIT:
            for sid, attempt in payload["shards"]:
                self._add(sid, attempt)
            return {"submitted": len(payload["shards"])}
        if name == c.RESUBMIT:
            out = []
            for n, (sid, attempt) in enumerate(payload["shards"]):
                if n == 1 and self.busy_resubmits:
                    self.busy_resubmits -= 1
                    raise ConnectionError("Connection aborted: the Batch endpoint did not answer")
                self._add(sid, attempt)
                out.append({"shard_id": sid, "attempt": attempt, "missing": 1, "submitted": True})
            return {"shards": out}
        if name == c.POLL:
            since = int(payload.get("since") or -1)
            rows, states, unknown = [], {}, []
            for tid in payload["task_ids"]:
                if tid not in self.added:
                    unknown.append(tid)
                elif since >= 0 and not (self.added[tid] > since or since < self._ends(tid) <= self.clock):
                    continue  # no change after the cursor
                elif self._ends(tid) <= self.clock:
                    rows.append(self._row(tid))
                else:
                    states[tid] = "running"
            cursor = str(self.clock) if payload["task_ids"] else payload.get("since") or ""  # as run_poll does
            answer = {"cancelled": False, "completed": rows, "running": len(states), "queued": 0,
                      "images_in_progress": 0, "cursor": cursor, "states": states, "progress": {}}
            if since < 0:
                answer["unknown"] = unknown
            return answer
        if name == c.CANCEL:
            return {"cancelled": True}
        raise HarnessError(f"unexpected activity {name}")


def test_an_attempt_a_busy_resubmission_added_that_ended_before_the_next_cursor_is_not_missed() -> None:
    """A RESUBMIT of two shards adds shard 0's attempt 2, then stays busy on shard 1 through its retries. Attempt 2
    of shard 0 ends (images still missing) before the round after the outage asks the pool; its end must be seen by
    the next poll, not only by the next one asked by id (up to ``FULL_POLL_EVERY`` rounds, an hour at 300 s, later):
    a poll with a cursor taken after it ended never reports it."""
    s0, s1 = shard_id(0), shard_id(1)
    pool = ChangesPool(missing={pool_task_id(s0, 1): 3, pool_task_id(s1, 1): 3, pool_task_id(s0, 2): 1},
                       runs={pool_task_id(s1, 2): 40}, busy_resubmits=BUSY_CALLS)
    run = outage_group(2, pool, max_in_flight=2)

    assert run.status == "Completed", run.error
    resubmits = [call for call in run.calls(c.RESUBMIT) if call.error is None]
    third = next(n for n, call in enumerate(run.activities) if call.name == c.RESUBMIT and call.error is None
                 and call.input["shards"] == [[s0, 3]])
    polls_before = [call for call in run.activities[:third] if call.name == c.POLL]
    assert len(polls_before) <= 3, [p.input.get("since") for p in polls_before]
    assert [call.input["shards"] for call in resubmits][-1] == [[s0, 3]]


def test_an_attempt_a_busy_resubmission_added_counts_its_node_time_and_is_waited_for() -> None:
    """The same busy RESUBMIT; shard 0's attempt 2 covers every image during the outage. It ran (a node was paid
    for it, core.cost): its node time and its resubmission count, and the group does not end before the pool reports
    it ended."""
    s0, s1 = shard_id(0), shard_id(1)
    pool = ChangesPool(missing={pool_task_id(s0, 1): 3, pool_task_id(s1, 1): 3}, busy_resubmits=BUSY_CALLS)
    pool.seconds[pool_task_id(s0, 2)] = 40.0
    run = outage_group(2, pool, max_in_flight=2)

    assert run.status == "Completed", run.error
    assert run.output["done"] == 2 and run.output["resubmissions"] == 2
    assert (run.output["attempts_ended"], run.output["node_seconds"]) == (4, 10.0 + 10.0 + 40.0 + 10.0)
    asked = {tid for call in run.calls(c.POLL) if call.error is None for tid in call.input["task_ids"]}
    assert pool_task_id(s0, 2) in asked


def test_a_cancel_during_a_batch_outage_ends_the_group_cancelled_though_the_cancel_of_its_tasks_fails() -> None:
    """The poll reads the cancel marker (storage answers) but Batch does not: the CANCEL of the pool tasks fails as
    a Batch account out of reach does. The group ends cancelled, as asked, not failed over the outage: the task
    closes the pool job next, which ends the tasks (or says it could not)."""
    pool = Pool(runs_for={pool_task_id(shard_id(0), 1): 5}, cancel_on_poll=2)
    run = outage_group(1, busy_for(pool, c.CANCEL, 99))

    assert run.status == "Completed", run.error
    assert run.output["cancelled"] is True and len(run.calls(c.CANCEL)) >= 1
    assert run.custom_status["stage"] == Stage.cancelled


def test_a_cancel_whose_pool_cancel_fails_otherwise_still_fails_the_group() -> None:
    """Not busy (or a group started before outages were outlasted): the CANCEL's failure fails the group, as before."""
    pool = Pool(runs_for={pool_task_id(shard_id(0), 1): 5}, cancel_on_poll=2)
    run = outage_group(1, busy_for(pool, c.CANCEL, 99, ValueError("InvalidQueryParameterValue")))
    assert run.status == "Failed" and len(run.calls(c.CANCEL)) == 1
    old = run_group(1, busy_for(Pool(runs_for={pool_task_id(shard_id(0), 1): 5}, cancel_on_poll=2), c.CANCEL, 99))
    assert old.status == "Failed" and len(old.calls(c.CANCEL)) == 1


# ------------------------------------------- stops during an outage (``outage_stops``: orchestrations.shards "Outages")

def stopping(script: Any, marker: dict[str, Any]) -> Any:
    """``script``, with STOP_GROUPS writing the run's cancel marker (``marker["reason"]``), as run_stop_groups does."""
    def run(name: str, payload: Any) -> Any:
        if name == c.STOP_GROUPS:
            marker["reason"] = payload["reason"]
            return {"stopped": True}
        return script(name, payload)
    return run


def test_a_group_out_of_reach_past_its_limit_stops_the_runs_other_groups_first() -> None:
    """The task fails when its first group fails (devhost README row 26: its next action waits for every group):
    without the stop, the run's other groups went on until each reached its own limit, hours later maybe."""
    from orchestrations.shards import round_events

    marker: dict[str, Any] = {}
    run = outage_group(1, stopping(busy_for(Pool(), c.POLL, 10_000), marker),
                       extra={"round_events": round_events(BUSY_CALLS), "outage_stops": True}, history_events=200)

    assert run.status == "Failed" and "out of reach since" in (run.error or "")
    [stop] = run.calls(c.STOP_GROUPS)
    assert stop.input["job_id"] == pool_job_id(TASK) and "out of reach since" in stop.input["reason"]
    assert run.activities[-1].name == c.STOP_GROUPS  # the stop is the group's last action before it fails
    assert {i["outage_stops"] for i in run.continued_as_new} == {True}  # carried through continue_as_new


def test_a_stop_that_cannot_be_written_leaves_the_outage_the_tasks_failure() -> None:
    """STOP_GROUPS fails through its retries: the group still fails over the outage, saying so, not the marker's
    error. An hour's limit (read from the input as a group's recorded one is) reaches the stop in a few rounds."""
    def script(name: str, payload: Any) -> Any:
        if name == c.STOP_GROUPS:
            raise ValueError("AuthorizationFailure writing the marker")
        return busy_for(Pool(), c.POLL, 10_000)(name, payload)

    run = outage_group(1, script, extra={"outage_stops": True, "outage_limit_s": 3600})
    assert run.status == "Failed" and "out of reach since" in (run.error or "")
    assert "AuthorizationFailure" not in (run.error or "") and len(run.calls(c.STOP_GROUPS)) == 3


@pytest.mark.parametrize("stops", [True, False])
def test_a_group_that_fails_for_another_reason_stops_the_runs_other_groups_first(stops: bool) -> None:
    """A pool step refused for good (not busy, through its retries: here the RESUBMIT, the job closed outside
    trapbatch) fails the group, and the task's ``task_all`` at once; but the framework keeps the task Running, its
    status saying ``failed``, and holds its close of the job until every other group has ended (devhost README,
    row 26), which took as long as their shards did. So the group stops them first, as a group failing over an
    outage does; one started without ``outage_stops`` does not, as before. Fails without the change (no STOP_GROUPS).
    """
    marker: dict[str, Any] = {}
    pool = Pool(missing={pool_task_id(shard_id(0), 1): 2})  # the first attempt leaves images missing: a RESUBMIT
    refused = ValueError("JobClosed: the pool job was deleted while 1 shard attempt(s) of this group were in flight")
    run = outage_group(1, stopping(busy_for(pool, c.RESUBMIT, 99, refused), marker),
                       extra={"outage_stops": True} if stops else None)

    assert run.status == "Failed" and "JobClosed" in (run.error or "")
    if stops:
        [stop] = run.calls(c.STOP_GROUPS)
        assert stop.input["job_id"] == pool_job_id(TASK) and "JobClosed" in stop.input["reason"]
        assert run.activities[-1].name == c.STOP_GROUPS  # the stop is the group's last action before it fails
    else:
        assert run.calls(c.STOP_GROUPS) == []

def test_a_cancel_reaches_a_group_whose_submission_stays_busy_with_nothing_in_flight() -> None:
    """Nothing in flight, nothing to poll: the round reads the cancel marker with a POLL about no task, so a cancel
    (or another group's stop) sent during the outage ends the group at once, not once Batch answers (up to its
    limit). Nothing was submitted: no CANCEL of pool tasks (the task's close of the job ends any the busy SUBMIT
    added)."""
    pool = Pool(cancel_on_poll=1)
    run = outage_group(2, busy_for(pool, c.SUBMIT, 10_000), extra={"reads_cancel": True})

    assert run.status == "Completed", run.error
    assert run.output["cancelled"] is True and run.custom_status["stage"] == Stage.cancelled
    assert len(run.calls(c.SUBMIT)) == BUSY_CALLS and run.calls(c.CANCEL) == []
    assert [(p["task_ids"], "since" in p) for p in run.inputs(c.POLL)] == [([], False)]


def test_a_round_that_reads_only_the_marker_goes_on_as_before_when_there_is_none() -> None:
    """No cancel: the group submits again next round and finishes; a group started before the field reads nothing
    in such a round (``test_a_submission_that_stays_busy_leaves_its_shards_pending_until_it_gets_through``)."""
    run = outage_group(2, busy_for(Pool(), c.SUBMIT, BUSY_CALLS + 1), extra={"reads_cancel": True})

    assert run.status == "Completed", run.error
    assert run.output["done"] == 2 and len(run.calls(c.SUBMIT)) == BUSY_CALLS + 2
    assert [p["task_ids"] for p in run.inputs(c.POLL)] == [[], pool_ids((0, 1), (1, 1))]



def test_a_group_that_reads_the_marker_keeps_reading_it_after_going_on_as_new() -> None:
    from orchestrations.shards import round_events

    run = outage_group(1, busy_for(Pool(), c.SUBMIT, 10_000), history_events=200,
                       extra={"reads_cancel": True, "round_events": round_events(BUSY_CALLS)})

    assert run.status == "Failed" and len(run.continued_as_new) >= 2
    assert {i["reads_cancel"] for i in run.continued_as_new} == {True}
    assert {call.execution for call in run.calls(c.POLL)} == set(range(len(run.continued_as_new) + 1))

def test_a_generation_gone_on_as_new_in_an_outage_says_since_when_through_its_first_steps_retries() -> None:
    """The continued generation's first step (a SUBMIT) retries before the round sets its status: the note of each
    retry says since when the outage lasts and until when the group waits, as in any other round."""
    since = "2024-12-31T23:00:00+00:00"
    state = {shard_id(0): {"attempt": 1, "status": "submitted"}, shard_id(1): {"attempt": 1, "status": "pending"}}
    run = outage_group(2, busy_for(Pool(), c.SUBMIT, BUSY_CALLS + 1), max_in_flight=2,
                       extra={"state": state, "outage": {"since": since, "step": c.POLL, "reason": "Connection"}})

    assert run.status == "Completed", run.error
    retries = [n for n in notes(run) if "attempt" in n]
    assert [n["attempt"] for n in retries] == [2, 3, 4, 2]
    assert {(n["since"], n["until"]) for n in retries} == {(since, "2025-01-01T05:00:00+00:00")}


# ------------------------------ worker exits 69 (``unavailable_wait_s``: orchestrations.shards "Unavailable exits")

class UnavailablePool(Pool):
    """``Pool``, whose attempts below ``until`` of every shard exit STORAGE_UNAVAILABLE with every image missing (a
    node whose identity endpoint does not answer): at its first poll, as such a worker ends within seconds. Records,
    for each RESUBMIT, the number of POLLs made before it."""

    def __init__(self, until: int, said: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.until, self.resubmitted_after, self.said = until, list[int](), said

    def __call__(self, name: str, payload: Any) -> Any:
        if name == c.RESUBMIT:
            self.resubmitted_after.append(self.polls)
            return {"shards": [{"shard_id": sid, "attempt": attempt, "missing": IMAGES, "submitted": True}
                               for sid, attempt in payload["shards"]]}
        out = super().__call__(name, payload)
        if name == c.POLL:
            for r in out["completed"]:
                if r["attempt"] < self.until:
                    r.update(exit_code=exit_codes.STORAGE_UNAVAILABLE, result="failure", covered=0, missing=IMAGES,
                             failure_message="exited with code 69")
                    if self.said:  # the worker's last error line (activities.pool.worker_message)
                        r["worker_message"] = self.said
        return out


def unavailable_group(pool: UnavailablePool, wait_s: int | None) -> Run:
    extra: dict[str, Any] = {"reads_cancel": True}  # as the task starts a group: a round with nothing to ask polls
    if wait_s is not None:  # and a wait that an attempt past start-up ends (none here gets that far before its end)
        extra.update(unavailable_wait_s=wait_s, unavailable_restarts=True)
    return outage_group(1, pool, extra=extra, max_attempts=3)


def test_a_worker_that_could_not_reach_a_service_spends_no_attempt_and_is_tried_again_after_a_back_off() -> None:
    """Attempts 1-5 exit 69 (the node's IMDS out past its token's expiry), the sixth gets through: with
    ``max_attempts`` 3 the shard was given up after its third, each image a failure entry, minutes into an outage
    (each such attempt ends in seconds, and the node, idle again, takes the next). Now none of them counts, and each
    next attempt waits a back-off of 30 s doubling to ``poll_max_s`` (the rounds' timers between the exit's poll
    and the RESUBMIT add up to at least it)."""
    pool = UnavailablePool(until=6)
    run = unavailable_group(pool, 3600)

    assert run.status == "Completed", run.error
    assert run.output["done"] == 1 and run.output["given_up"] == 0 and run.output["images_done"] == IMAGES
    assert [call["shards"] for call in run.inputs(c.RESUBMIT)] == [[[shard_id(0), a]] for a in range(2, 7)]
    delays = [t.delay_s for t in run.orchestrator_timers]  # round k's timer comes before its poll k
    # the first exit is seen at poll 1; each later one at the poll after its RESUBMIT; waited from that poll's time
    waited = [sum(delays[seen:after]) for seen, after in
              zip([1] + [n + 1 for n in pool.resubmitted_after[:-1]], pool.resubmitted_after)]
    assert all(w >= need for w, need in zip(waited, [30, 60, 120, 240, 300])), (waited, delays)
    # without the wait it would have resubmitted at each exit's own poll
    assert pool.resubmitted_after != [1, 2, 3, 4, 5]


def test_each_poll_says_how_many_of_a_shards_attempts_spent_none_so_its_last_is_known() -> None:
    """The poll reads an attempt's whole results for the reasons of its retryable failures only when it is the shard's
    last (``activities.pool._completed_row``): its number less the exits 69 that spent none of ``max_attempts``.
    Without them, attempts 3 and on after two such exits (with ``max_attempts`` 3) were each taken for the last."""
    pool = UnavailablePool(until=4)
    run = unavailable_group(pool, 3600)

    assert run.status == "Completed", run.error
    asked = [(p["task_ids"], p.get("unavailable")) for p in run.inputs(c.POLL) if p["task_ids"]]
    s0 = shard_id(0)
    assert asked[0] == ([f"{s0}-a1"], None)
    assert asked[-1] == ([f"{s0}-a4"], {f"{s0}-a4": 3}), asked
    assert {tuple(ids): n for ids, n in asked}[(f"{s0}-a3",)] == {f"{s0}-a3": 2}


def test_the_resubmission_after_an_exit_69_keeps_the_change_cursor() -> None:
    """Shard 0's attempts 1-3 exit 69 while shard 1 runs on. Each next attempt of shard 0 is in no earlier RESUBMIT
    (one that stayed busy may have added it before the round's cursor, so the poll after it asks by id): added after
    the cursor, the next listing of changes has it. Before, each was followed by a poll by id of the group's every
    in-flight task, about every other poll while a node kept exiting 69."""
    s0, s1 = shard_id(0), shard_id(1)
    pool = UnavailablePool(until=4, runs_for={f"{s1}-a1": 30})
    run = outage_group(2, pool, extra={"reads_cancel": True, "unavailable_wait_s": 3600}, max_attempts=3)

    assert run.status == "Completed", run.error
    asked = [p for p in run.inputs(c.POLL) if f"{s1}-a1" in p["task_ids"]]
    assert {f"{s0}-a4"} <= {t for p in asked for t in p["task_ids"]}  # shard 0's attempts were made meanwhile
    by_id = [n for n, p in enumerate(asked) if "since" not in p]
    assert by_id == [0, 12, 24], by_id  # the generation's first and each FULL_POLL_EVERY-th round


def test_rounds_that_ask_about_no_task_keep_the_change_cursor() -> None:
    """A group whose every shard in flight waits out an exit 69's back-off asks the pool about no task in those rounds
    (a POLL that reads the cancel marker only): that POLL passes the group's cursor and gets it back (``run_poll``
    asks the pool nothing, so it has no newer one). Before, it answered no cursor, so the poll after each such wait,
    and after the RESUBMIT that keeps the cursor (``unsent``), asked by id: a full reconciliation of the group's every
    task in flight, each time a node exited 69."""
    from orchestrations.shards import FULL_POLL_EVERY

    pool = UnavailablePool(until=4)
    run = unavailable_group(pool, 3600)

    assert run.status == "Completed", run.error
    polls = run.inputs(c.POLL)
    empty = [p for p in polls if not p["task_ids"]]
    assert empty and all(p.get("since") for p in empty), empty  # each after the first poll's cursor
    asked = [n for n, p in enumerate(polls) if p["task_ids"]]
    by_id = [n for n in asked if "since" not in polls[n]]
    assert by_id == [n for n in asked if n % FULL_POLL_EVERY == 0], (by_id, asked)


def test_a_group_started_without_the_field_counts_an_exit_69_as_any_exit() -> None:
    """A group started by an earlier release (no ``unavailable_wait_s``) schedules what it did: attempts 2 and 3 at
    once, and the shard given up after its third, so a recorded history replays unchanged."""
    pool = UnavailablePool(until=6)
    run = unavailable_group(pool, None)

    assert run.status == "Completed", run.error
    assert run.output["given_up"] == 1 and run.output["images_missing"] == IMAGES
    assert [call["shards"] for call in run.inputs(c.RESUBMIT)] == [[[shard_id(0), 2]], [[shard_id(0), 3]]]
    assert pool.resubmitted_after == [1, 2]
    assert all("unavailable" not in p for p in run.inputs(c.POLL))  # its POLL inputs as they were


def test_exits_69_past_the_wait_count_again_so_the_shard_ends() -> None:
    """A 69 that never passes (a firewall resetting every connection to a model's host): once the shard's first such
    exit is ``unavailable_wait_s`` old, each counts, and the shard is given up after ``max_attempts`` more, saying
    how its last attempt ended. The wait's state travels through ``continue_as_new``."""
    pool = UnavailablePool(until=10_000, max_polls=400)
    run = unavailable_group(pool, 1800)

    assert run.status == "Completed", run.error
    assert run.output["given_up"] == 1 and run.output["images_missing"] == IMAGES
    [why] = run.output["given_up_examples"]
    assert why["exit_code"] == exit_codes.STORAGE_UNAVAILABLE and "exited 69" in why["reason"], why
    attempts = why["attempts"]
    assert 5 < attempts < 20, attempts  # the waited ones (about 1800 s of back-offs), then 3 counted
    total = sum(t.delay_s for t in run.orchestrator_timers)
    assert 1800 <= total <= 1800 + 4 * 300 + 3 * 300, total


@pytest.mark.parametrize("restarts", [True, None], ids=["restarts", "started-before-restarts"])
def test_the_unavailable_wait_is_carried_through_continue_as_new(restarts: bool | None) -> None:
    """``unavailable_wait_s`` and, as the group was started, ``unavailable_restarts`` (a group started before that
    field goes on as new without it: its next generation replays with the rule it started with)."""
    from orchestrations.shards import round_events

    pool = UnavailablePool(until=8)
    extra: dict[str, Any] = {"reads_cancel": True, "unavailable_wait_s": 3600, "round_events": round_events(BUSY_CALLS)}
    if restarts is not None:
        extra["unavailable_restarts"] = restarts
    run = outage_group(1, pool, history_events=200, max_attempts=3, extra=extra)

    assert run.status == "Completed", run.error
    assert run.output["done"] == 1 and run.output["given_up"] == 0
    assert len(run.continued_as_new) >= 1
    assert {i["unavailable_wait_s"] for i in run.continued_as_new} == {3600}
    assert {i.get("unavailable_restarts") for i in run.continued_as_new} == {restarts}



def test_a_back_off_that_passed_while_its_resubmission_stayed_busy_leaves_the_outage_back_off_as_it_is() -> None:
    """Attempt 1 exits 69; attempt 2's RESUBMIT, made once its back-off passed, stays busy for three rounds (a Batch
    outage). Its ``retry_at`` has passed, so it is due at once, as any owed resubmission: the rounds wait the group's
    own back-off (doubling to ``poll_max_s``), not ``poll_min_s`` each (up to ten times the rounds, each with its busy
    retries, for as long as an outage lasts)."""
    pool = UnavailablePool(until=2)
    run = unavailable_group(busy_for(pool, c.RESUBMIT, 3 * BUSY_CALLS), 3600)

    assert run.status == "Completed", run.error
    assert run.output["done"] == 1 and run.output["given_up"] == 0
    # the first poll's 30 s, the exit's back-off of 30 s, then each busy round's retries (15, 30, 60 s) and the
    # round's timer after it: 60, 120, 240 s, as in an outage without an exit 69
    assert [t.delay_s for t in run.orchestrator_timers][:14] == [30, 30, 15, 30, 60, 60, 15, 30, 60, 120, 15, 30, 60,
                                                                 240]


def test_a_group_without_the_field_schedules_exits_69_as_the_release_before_did_through_an_outage() -> None:
    """Replay compatibility, pinned: what ``run_shards`` of aa42745^ (the release before "Unavailable exits")
    scheduled for a group without ``unavailable_wait_s`` whose attempts 1 and 2 exit 69 and whose first RESUBMIT stays
    busy through two rounds; recorded with that commit's orchestrator in this harness. The same activities, inputs
    and timers now, so such a group's history replays unchanged at every episode (no recorded history in
    tests/orchestrations/histories holds an exit 69)."""
    pool = UnavailablePool(until=3)
    run = unavailable_group(busy_for(pool, c.RESUBMIT, 2 * BUSY_CALLS), None)

    s0 = shard_id(0)
    assert run.status == "Completed", run.error
    assert [(a.name, a.input.get("shards") or a.input.get("task_ids")) for a in run.activities] == [
        (c.SUBMIT, [[s0, 1]]), (c.POLL, [f"{s0}-a1"]), *[(c.RESUBMIT, [[s0, 2]])] * 4, (c.POLL, []),
        *[(c.RESUBMIT, [[s0, 2]])] * 4, (c.POLL, []), (c.RESUBMIT, [[s0, 2]]), (c.POLL, [f"{s0}-a2"]),
        (c.RESUBMIT, [[s0, 3]]), (c.POLL, [f"{s0}-a3"])]
    assert [t.fire_at.strftime("%H:%M:%S") for t in run.orchestrator_timers] == [
        "00:00:30", "00:00:45", "00:01:15", "00:02:15", "00:03:15", "00:03:30", "00:04:00", "00:05:00", "00:07:00",
        "00:11:00", "00:11:30"]


def test_a_shard_waiting_out_an_exit_69_back_off_is_neither_queued_in_the_pool_nor_resubmitted_yet() -> None:
    """Between an exit 69 and the RESUBMIT of its shard's next attempt (its back-off) no pool task exists: the status
    counted the shard as ``pool_queued`` and the attempt as a resubmission, and a group cancelled then reported a
    resubmission never made. It counts as ``unavailable_waiting`` instead, and as a resubmission once one was made."""
    pool = UnavailablePool(until=6, cancel_on_poll=2)  # poll 2 (the marker only) comes before the first RESUBMIT
    run = unavailable_group(pool, 3600)

    assert run.status == "Completed", run.error
    assert run.inputs(c.RESUBMIT) == [] and run.output["cancelled"] is True
    assert run.output["resubmissions"] == 0 and run.output["pool_queued"] == 0, run.output
    assert run.output["unavailable_waiting"] == 1 and run.output["submitted"] == 1
    waiting = [s for s in run.statuses if isinstance(s, dict) and s.get("unavailable_waiting")]
    assert waiting and all(s["pool_queued"] == 0 and s["resubmissions"] == 0 for s in waiting), run.statuses


def test_a_shard_after_exits_69_is_in_one_of_running_queued_or_waiting_and_its_resubmissions_were_made() -> None:
    """Through attempts 1 and 2 exiting 69 and 3 getting through, each status counts the submitted shard once (running,
    queued as a pool task, or waiting out its back-off) and no more resubmissions than RESUBMITs made."""
    pool = UnavailablePool(until=3)
    run = unavailable_group(pool, 3600)

    assert run.status == "Completed", run.error
    assert run.output["resubmissions"] == 2 and run.output["unavailable_waiting"] == 0
    detecting = [s for s in run.statuses if isinstance(s, dict) and s.get("stage") == Stage.detecting]
    assert all(s["pool_queued"] + s["pool_running"] + s["unavailable_waiting"] == s["submitted"] for s in detecting)
    assert [s["resubmissions"] for s in detecting if s["unavailable_waiting"]] == [0, 1], run.statuses


def test_while_shards_wait_out_exits_69_the_status_says_why_since_when_until_when_and_the_next_try() -> None:
    """A misconfiguration that exits 69 on every attempt (a node without outbound internet downloading a published
    model) idles the pool up to ``unavailable_wait_s``: the status showed only a shard "queued". Its ``unreachable``
    note says, while it lasts, the worker's words, since the first exit, until when exits spend no attempt, and the
    next try; gone once the shard got through."""
    said = "the model's download host did not answer: github.com timed out (no outbound internet from the node?)"
    pool = UnavailablePool(until=3, said=said)
    run = unavailable_group(pool, 3600)

    assert run.status == "Completed", run.error
    shown = [s[c.UNREACHABLE_KEY] for s in run.statuses if isinstance(s, dict) and c.UNREACHABLE_KEY in s]
    assert shown, run.statuses
    since = shown[0]["since"]
    assert all(n["shards"] == 1 and n["reason"] == said and n["since"] == since for n in shown), shown
    assert {n["until"] for n in shown} == {(dt.datetime.fromisoformat(since) + dt.timedelta(hours=1)).isoformat()}
    assert [n["at"] for n in shown if "at" in n] and all(n["at"] > since for n in shown if "at" in n), shown
    assert c.UNREACHABLE_KEY not in run.custom_status  # the third attempt got through


def test_the_unreachable_note_ends_with_the_wait_even_while_a_shard_deferred_late_waits_its_back_off() -> None:
    """A shard deferred just before its hour ended still waits out its back-off after ``until``: the note stayed, and
    the CLI said "no attempt spent until" a past time. It lists only the shards whose wait still lasts."""
    since = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    late = c.ShardState(attempt=7, status=ShardStatus.submitted, pool="queued", owed=True, unsent=True,
                        unavailable=6, unavailable_since=since.isoformat(), unavailable_reason="imds timed out",
                        retry_at=(since + dt.timedelta(seconds=3900)).isoformat())
    fresh = c.ShardState(**{**late, "unavailable_since": (since + dt.timedelta(seconds=3000)).isoformat(),
                            "unavailable_reason": "later words"})

    assert _unreachable({"a": late}, 3600, since + dt.timedelta(seconds=3599))[c.UNREACHABLE_KEY]["shards"] == 1
    assert _unreachable({"a": late}, 3600, since + dt.timedelta(seconds=3600)) == {}
    note = _unreachable({"a": late, "b": fresh}, 3600, since + dt.timedelta(seconds=3700))[c.UNREACHABLE_KEY]
    assert note["shards"] == 1 and note["reason"] == "later words"
    assert note["until"] == (since + dt.timedelta(seconds=6600)).isoformat()


class LandedLatePool(UnavailablePool):
    """``UnavailablePool``, whose RESUBMIT finds every image's results in storage (they landed late): not submitted."""

    def __call__(self, name: str, payload: Any) -> Any:
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": sid, "attempt": attempt, "missing": 0, "submitted": False}
                               for sid, attempt in payload["shards"]]}
        return super().__call__(name, payload)


def test_a_shard_done_through_a_resubmit_not_submitted_carries_no_worker_words_into_the_next_generation() -> None:
    """A shard whose exit 69 left its attempt owed, then done because its RESUBMIT found the results in storage, kept
    the worker's words (up to UNREACHABLE_REASON_CHARS) in the state each continue_as_new carries: 300 B a shard."""
    s0, s1 = shard_id(0), shard_id(1)
    pool = LandedLatePool(until=2, said="W" * 300, runs_for={pool_task_id(s1, 1): 40})
    run = outage_group(2, pool, extra={"reads_cancel": True, "unavailable_wait_s": 3600}, history_events=200)

    assert run.status == "Completed", run.error
    assert run.continued_as_new, run.history_events
    carried = run.continued_as_new[0]["state"][s0]
    assert carried["status"] == ShardStatus.done and "unavailable_reason" not in carried, carried


def test_a_group_started_without_the_field_shows_no_unreachable_note() -> None:
    run = unavailable_group(UnavailablePool(until=2, said="identity endpoint did not answer"), None)

    assert run.status == "Completed", run.error
    assert not any(isinstance(s, dict) and c.UNREACHABLE_KEY in s for s in run.statuses)


class AttemptsPool(Pool):
    """``Pool``, where attempt n of every shard ends as ``ends[n]`` says (default: exit 0, every image covered):
    ``exit_code``, ``covered`` (the shard's images with results after it: of every attempt so far), and optionally
    ``failure_code``/``failure_message``; exit 69 as ``UnavailablePool`` reports it. RESUBMIT submits every attempt."""

    def __init__(self, ends: dict[int, dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ends = ends

    def __call__(self, name: str, payload: Any) -> Any:
        if name == c.RESUBMIT:
            return {"shards": [{"shard_id": sid, "attempt": attempt, "missing": IMAGES, "submitted": True}
                               for sid, attempt in payload["shards"]]}
        out = super().__call__(name, payload)
        if name == c.POLL:
            for r in out["completed"]:
                end = self.ends.get(r["attempt"])
                if end is not None:
                    covered = end.get("covered", 0)
                    r.update(exit_code=end["exit_code"], covered=covered, missing=IMAGES - covered,
                             result="failure", failure_message=end.get("failure_message", "exited with an error"))
                    if "failure_code" in end:
                        r["failure_code"] = end["failure_code"]
        return out


UNAVAILABLE = {"exit_code": exit_codes.STORAGE_UNAVAILABLE, "failure_message": "exited with code 69"}


def two_outages(second: dict[str, Any], restarts: bool | None) -> tuple[AttemptsPool, Run]:
    """One shard (``max_attempts`` 3) whose attempt 1 exits 69 (a short outage), whose attempt 2 runs for more than
    ``unavailable_wait_s`` (20 polls, past an hour) and ends as ``second`` says, leaving images missing, and whose
    attempts 3-6 exit 69 (a second short outage, hours after the first); attempt 7 gets through. A group as the task
    starts it (``unavailable_restarts``: True), or as the release before started it (None)."""
    covered = second.get("covered", 0)
    ends = {1: UNAVAILABLE, 2: second, **{a: {**UNAVAILABLE, "covered": covered} for a in (3, 4, 5, 6)}}
    pool = AttemptsPool(ends, runs_for={pool_task_id(shard_id(0), 2): 20})
    extra: dict[str, Any] = {"reads_cancel": True, "unavailable_wait_s": 3600}
    if restarts is not None:
        extra["unavailable_restarts"] = restarts
    return pool, outage_group(1, pool, extra=extra, max_attempts=3)


def test_a_second_outage_after_an_attempt_that_ran_spends_no_attempt_either() -> None:
    """The shard's wait counted from its first 69 ever: attempt 2 ran for over an hour, wrote half its images and
    exited 0 with the rest missing (their reads failed), so attempts 3 and 4, which met a second outage of minutes,
    each counted at once, and the shard was given up after attempt 4 with a failure entry for five images that were
    fine. Attempt 2 got past start-up, so attempt 3's 69 opens a wait of its own, its back-off from 30 s again."""
    _, run = two_outages({"exit_code": exit_codes.OK, "covered": IMAGES // 2}, restarts=True)

    assert run.status == "Completed", run.error
    assert run.output["done"] == 1 and run.output["given_up"] == 0, run.output
    assert [call["shards"] for call in run.inputs(c.RESUBMIT)] == [[[shard_id(0), a]] for a in range(2, 8)]
    notes_ = [s[c.UNREACHABLE_KEY] for s in run.statuses if isinstance(s, dict) and c.UNREACHABLE_KEY in s]
    waits = sorted({n["since"] for n in notes_})
    assert len(waits) == 2, notes_  # the first outage's wait, then the second's, an hour and more later
    first, second = (dt.datetime.fromisoformat(since) for since in waits)
    assert (second - first).total_seconds() > 3600
    for since in waits:  # each wait's first back-off is poll_min_s: the next try 30 s after its first 69
        at = min(dt.datetime.fromisoformat(n["at"]) for n in notes_ if n["since"] == since and "at" in n)
        assert (at - dt.datetime.fromisoformat(since)).total_seconds() == 30, (since, notes_)
    assert {n["until"] for n in notes_ if n["since"] == waits[1]} == {(second + dt.timedelta(hours=1)).isoformat()}


def test_a_group_started_without_restarts_counts_the_second_outage_as_before() -> None:
    """A group started by the release before ``unavailable_restarts`` (only ``unavailable_wait_s``) keeps one wait
    from the shard's first 69 ever, as it did when it ran, so its recorded history replays unchanged: attempt 3's 69
    counts and attempt 4 is resubmitted in that poll's round, and attempt 4's 69, the third counted, gives it up."""
    pool, run = two_outages({"exit_code": exit_codes.OK, "covered": IMAGES // 2}, restarts=None)

    assert run.status == "Completed", run.error
    assert run.output["given_up"] == 1 and run.output["images_missing"] == IMAGES // 2, run.output
    assert [call["shards"] for call in run.inputs(c.RESUBMIT)] == [[[shard_id(0), a]] for a in (2, 3, 4)]
    [why] = run.output["given_up_examples"]
    assert why["attempts"] == 4 and why["exit_code"] == exit_codes.STORAGE_UNAVAILABLE, why
    polls = [p["task_ids"] for p in run.inputs(c.POLL)]
    a3 = polls.index([pool_task_id(shard_id(0), 3)])
    assert polls[a3 + 1] == [pool_task_id(shard_id(0), 4)]  # resubmitted at once, with no back-off
    # (this group never goes on as new: test_the_unavailable_wait_is_carried_through_continue_as_new checks that a
    # group without the field does so without it)


@pytest.mark.parametrize("second, restarted", [
    # it wrote results (the shard covers more images after it): whatever its exit
    ({"exit_code": 137, "covered": 4}, True),  # killed (out of memory) mid-shard
    ({"exit_code": 3221225786, "failure_code": exit_codes.TASK_ENDED, "covered": 4}, True),  # the pool's time limit
    ({"exit_code": 1, "covered": 4}, True),
    ({"exit_code": exit_codes.SERVER_LOST, "covered": 4}, True),  # the resident worker died after a flush
    # none written: only an exit that comes after start-up says it got that far
    ({"exit_code": exit_codes.OUTPUT, "covered": 0}, True),  # its results could not be written
    # the resident worker died after it accepted the shard: before its manifest read as well as after (a crash)
    ({"exit_code": exit_codes.SERVER_LOST, "covered": 0}, False),
    ({"exit_code": 137, "covered": 0}, False),
    ({"exit_code": 1, "covered": 0}, False),  # a crash, maybe at start-up
    ({"exit_code": exit_codes.MODEL, "covered": 0}, False),  # a start-up failure itself (once: retried)
    ({"exit_code": None, "failure_message": "the container image could not be pulled", "covered": 0}, False),
    ({"exit_code": 3221225786, "failure_code": exit_codes.TASK_ENDED, "covered": 0}, False),
], ids=["killed-wrote", "time-limit-wrote", "crash-wrote", "server-lost-wrote", "output", "server-lost", "killed",
        "crash", "model", "never-started", "time-limit"])
def test_what_says_an_attempt_got_past_start_up(second: dict[str, Any], restarted: bool) -> None:
    """An attempt got past start-up (the reads an exit 69 stands for: the outage was over for it) when it wrote
    results, or when its worker exited with a code only a worker past start-up gives; then the second outage's 69s
    spend no attempt. Otherwise they count from the first 69 ever, and the shard is given up after attempt 4."""
    _, run = two_outages(second, restarts=True)

    assert run.status == "Completed", run.error
    assert (run.output["given_up"], run.output["done"]) == ((0, 1) if restarted else (1, 0)), run.output


# ---------------------------------------- a job deleted outside trapbatch (orchestrations.shards, module docstring)

class DeletingPool(Pool):
    """The pool activities as Azure Batch answers them around ``az batch job delete``: a SUBMIT creates the job
    (``ensure_job``) unless its input says ``create_job: false``; a submission to a job Batch no longer has is refused
    (AzureBatchPool: ``JobClosed`` for 404 JobNotFound). The job is deleted right after poll ``delete_after``."""

    def __init__(self, delete_after: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delete_after = delete_after
        self.job = False
        self.created = 0
        self.submits: list[list[str]] = []

    def __call__(self, name: str, payload: Any) -> Any:
        if name == c.SUBMIT:
            if payload.get("create_job", True) and not self.job:
                self.job, self.created = True, self.created + 1
            if not self.job:
                raise JobClosed(f"job {payload['job_id']} was deleted (JobNotFound): Batch accepts no tasks for a "
                                f"job it deletes or no longer has; {closed_outside_hint(payload['job_id'])}")
            self.submits.append([sid for sid, _ in payload["shards"]])
        answer = super().__call__(name, payload)
        if name == c.POLL and self.polls == self.delete_after:
            self.job = False  # deleted outside trapbatch: its tasks are gone with it
        return answer


def test_a_job_deleted_between_rounds_fails_the_group_at_its_next_submission_and_is_not_created_again() -> None:
    """Each round SUBMITs the next wave of pending shards before it polls: a job deleted to stop the run ('az batch
    job delete', the portal) was created again by that SUBMIT (``ensure_job``) and the group went on, spending the GPU
    pool in a job the operator had deleted. The group has had a task in the job, so its later SUBMITs do not create it:
    the pool refuses, and the group fails saying what happened and what to do."""
    pool = DeletingPool(delete_after=1)  # s0 ends at the first poll; the job is deleted; s1 and s2 still pending
    run = run_group(3, pool, max_in_flight=1)
    assert run.status == "Failed"
    assert "JobClosed" in (run.error or "") and "was deleted" in (run.error or "")
    assert "Post the same request again" in (run.error or "")  # closed_outside_hint: what to do
    assert pool.created == 1 and not pool.job  # created by the first SUBMIT only, never again
    assert pool.submits == [[shard_id(0)]]  # nothing of s1 reached a pool
    first, *later = run.inputs(c.SUBMIT)
    assert "create_job" not in first and later and all(s["create_job"] is False for s in later)


def test_a_submission_again_of_shards_the_pool_named_unknown_does_not_create_the_job() -> None:
    """The SUBMIT again of a shard a poll by id found unknown follows its first submission to the job: a job missing
    then was deleted, so it is not created again either."""
    lost = pool_task_id(shard_id(1), 1)
    pool = LosingPool({lost}, runs_for={pool_task_id(shard_id(0), 1): 3})
    run = run_group(2, pool, max_in_flight=2)
    assert run.status == "Completed", run.error
    first, again = run.inputs(c.SUBMIT)
    assert "create_job" not in first and again["create_job"] is False and again["shards"] == [[shard_id(1), 1]]


def test_a_reruns_first_submission_creates_the_job_though_its_reused_shards_start_done() -> None:
    """A re-run's reused shards start ``done`` without any pool task (``orchestrations.task._reused_state``): the
    group has had nothing in its job yet, so its first SUBMIT creates it; the next wave's does not."""
    state = {shard_id(0): {"attempt": 1, "status": ShardStatus.done, "covered": IMAGES, "seen": IMAGES},
             shard_id(1): {"attempt": 1, "status": ShardStatus.pending},
             shard_id(2): {"attempt": 1, "status": ShardStatus.pending}}
    pool = DeletingPool(delete_after=0)
    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_in_flight=1), "state": state,
                                        "shards": list(state)}, pool, instance_id=f"{TASK}-shards-0000")
    assert run.status == "Completed", run.error
    assert pool.created == 1 and pool.submits == [[shard_id(1)], [shard_id(2)]]
    first, second = run.inputs(c.SUBMIT)
    assert "create_job" not in first and second["create_job"] is False


def test_an_only_new_groups_reused_counts_survive_continue_as_new_and_resubmissions() -> None:
    """An ``only_new`` re-run's group returns the images it started with as reused (``images_reused``) however many
    generations and attempts its shards took: the state, ``reused`` included, is carried whole by
    ``continue_as_new``, and a completion's ``covered`` (which counts attempt 0's reused entries) never touches it.
    Why it matters: the task tells the pool's work from the reused by it (``orchestrations.task._pool_processed``).
    Guard only: today's behaviour."""
    s0, s1 = shard_id(0), shard_id(1)
    pool = Pool(runs_for={pool_task_id(s0, 1): 40}, missing={pool_task_id(s0, 1): 2})
    state = {s0: {"attempt": 1, "status": ShardStatus.pending, "covered": 4, "seen": 4, "reused": 4},
             s1: {"attempt": 1, "status": ShardStatus.done, "covered": 10, "seen": 10, "reused": 10}}
    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_in_flight=1, history_events=200,
                                                                        poll_min_s=30, poll_max_s=300),
                                        "shards": [s0, s1], "state": state}, pool, instance_id=f"{TASK}-shards-0000")

    assert run.status == "Completed"
    assert len(run.continued_as_new) >= 2
    assert all(i["state"][s0]["reused"] == 4 and i["state"][s1]["reused"] == 10 for i in run.continued_as_new)
    assert [call.input["shards"] for call in run.calls(c.RESUBMIT)] == [[[s0, 2]]]
    assert run.output["images_done"] == 2 * IMAGES and run.output["images_reused"] == 14
    assert run.output["resubmissions"] == 1


@pytest.mark.parametrize("start", ["earlier", "reused"])
def test_a_groups_images_ran_count_each_shards_coverage_past_its_start_never_below_zero(start: str) -> None:
    """A group started with each shard's images final already (a resumed run's ``earlier``, an ``only_new``
    re-run's ``reused``) returns what its pool attempts ran past them shard by shard (``images_ran``): shard 0's
    coverage shrank below its start (an earlier attempt's results deleted between the listing and the poll) and
    counts 0, not -4 taken off shard 1's 3. Why: the task judges "no image was processed" and prices the pool's work
    by it (``orchestrations.task._pool_processed``). A group started without such counts (by an earlier release)
    returns none: the task counts it as before."""
    s0, s1, s2 = shard_id(0), shard_id(1), shard_id(2)
    pool = Pool(missing={pool_task_id(s0, 1): IMAGES, pool_task_id(s1, 1): IMAGES - 3})
    state = {s0: {"attempt": 1, "status": ShardStatus.pending, "covered": 4, "seen": 4, start: 4},
             s1: {"attempt": 1, "status": ShardStatus.pending},
             s2: {"attempt": 1, "status": ShardStatus.done, "covered": IMAGES, "seen": IMAGES, start: IMAGES}}
    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=1), "shards": [s0, s1, s2],
                                        "state": state}, pool, instance_id=f"{TASK}-shards-0000")

    assert run.status == "Completed", run.error
    assert run.output["given_up"] == 2 and run.output["images_done"] == 0 + 3 + IMAGES
    assert run.output["images_ran"] == 3

    before = {sid: {k: v for k, v in st.items() if k != start} for sid, st in state.items()}
    run = run_orchestrator(run_shards, {"task_id": TASK, "knobs": knobs(max_attempts=1), "shards": [s0, s1, s2],
                                        "state": before}, Pool(missing={pool_task_id(s0, 1): IMAGES,
                                                                        pool_task_id(s1, 1): IMAGES - 3}),
                           instance_id=f"{TASK}-shards-0000")
    assert run.status == "Completed" and "images_ran" not in run.output


def test_a_group_shows_its_counts_from_its_first_episode_in_every_generation() -> None:
    """On Azure only the work item that goes on as new keeps the status carried over; any other episode that set none
    stores none (devhost README, fidelity row 33; ``Run.stored`` as dtfx stores it), and the task's status then counts
    nothing of the group (``api.starters._child_progress``). The group sets its status before its first step in every
    generation: before, its first SUBMIT came first, so while Batch stayed busy its status was none, without the
    note saying the SUBMIT waits (``retries.show_waiting`` notes only a status that is there)."""
    s0 = shard_id(0)
    pool = Pool(runs_for={pool_task_id(s0, 1): 40})
    run = outage_group(2, busy_for(pool, c.SUBMIT, 2), max_in_flight=1, history_events=200)

    assert run.status == "Completed", run.error
    assert len(run.continued_as_new) >= 2
    assert all(isinstance(s, dict) and s["shards"] == 2 for s in run.stored), [
        i for i, s in enumerate(run.stored) if not isinstance(s, dict)]
    assert any(s.get(c.WAITING_KEY, {}).get("step") == c.SUBMIT for s in run.stored[:3]), run.stored[:3]
    shown = [s["images_progress"] for s in run.stored]  # what the task sums (api.starters._child_progress)
    assert shown == sorted(shown)  # never lower from one work item to the next, generations included
