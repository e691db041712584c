"""The parallel enumeration's orchestration (``orchestrations.enumeration``), replayed by the real Durable SDK with
scripted activities: rounds of parallel listing calls, retries of the failed calls only, first_n and sample_n, and
the shard batches cut from counts. (Against Azurite, with the real activities: tests/integration/
test_parallel_enumeration.py.)"""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df
import pytest

from core import contracts as c
from orchestrations.enumeration import enumerate_in_parallel
from orchestrations.retries import STORAGE_RETRY
from tests.orchestrations.replay import HarnessError, Run, run_orchestrator

TASK = "task-0123456789abcdef0123"


def _orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.EnumerateOutput]:
    data = context.get_input()
    return (yield from enumerate_in_parallel(context, data["task_id"], data["request"]))


def script(parts: list[list[int]], per_write: int = 10, fail: dict[tuple[int, int], int] | None = None,
           sample_counts: list[int] | None = None) -> Any:
    """Unit u's part p finds ``parts[u][p]`` images; ``fail[(u, p)]`` failures before that call succeeds."""
    failures = dict(fail or {})

    def answer(name: str, p: Any) -> Any:
        assert p["task_id"] == TASK
        if name == c.PLAN_LISTING:
            return {"units": len(parts), "leaves": 2 * len(parts), "images_per_write": per_write}
        if name == c.LIST_PART:
            key = (p["unit"], p["part"])
            if failures.get(key):
                failures[key] -= 1
                raise ConnectionError("storage throttled")
            return {"images": parts[p["unit"]][p["part"]], "listed": 50, "more": p["part"] + 1 < len(parts[p["unit"]])}
        if name == c.CHOOSE_SAMPLE:
            assert sample_counts is not None
            return {"counts": sample_counts}
        if name == c.WRITE_SHARDS:
            return {"shards": p["count"], "images": sum(s["take"] for s in p["slices"])}
        if name == c.FINISH_ENUMERATION:
            return {"images": p["images"], "shards": p["shards"]}
        raise HarnessError(name)

    return answer


def run(request: dict[str, Any], answer: Any) -> Run:
    r = run_orchestrator(_orchestrator, {"task_id": TASK, "request": {"container": "cams", "images_per_shard": 4,
                                                                       **request}}, answer, instance_id=TASK)
    return r


def test_units_list_in_parallel_rounds_and_shards_are_cut_from_counts() -> None:
    r = run({}, script([[5], [3, 0, 6], [2, 1]], per_write=8))

    assert r.status == "Completed" and r.output == {"images": 17, "shards": 5}
    rounds = [(p["unit"], p["part"]) for p in r.inputs(c.LIST_PART)]
    assert rounds == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (1, 2)]  # one call per unfinished unit per round
    writes = r.inputs(c.WRITE_SHARDS)
    assert [(w["first"], w["count"]) for w in writes] == [(0, 2), (2, 2), (4, 1)]
    # parts in listing order: (0,0)=5 (1,0)=3 (1,1)=0 (1,2)=6 (2,0)=2 (2,1)=1; shards of 4
    assert writes[0]["parts"] == [[0, 0], [1, 0]] and writes[0]["slices"] == [
        {"part": 0, "skip": 0, "take": 5}, {"part": 1, "skip": 0, "take": 3}]
    assert writes[1]["parts"] == [[1, 2], [2, 0]] and writes[1]["slices"] == [
        {"part": 0, "skip": 0, "take": 6}, {"part": 1, "skip": 0, "take": 2}]
    assert writes[2]["parts"] == [[2, 1]] and writes[2]["slices"] == [{"part": 0, "skip": 0, "take": 1}]
    assert not any(w["sampled"] for w in writes) and not r.calls(c.CHOOSE_SAMPLE)
    assert r.inputs(c.FINISH_ENUMERATION)[0]["found"] == 17 and r.inputs(c.FINISH_ENUMERATION)[0]["parts"] == 6


def test_a_failed_listing_call_is_retried_after_a_timer_and_finished_ones_are_kept() -> None:
    r = run({}, script([[1], [2], [3]], fail={(1, 0): 2}))

    assert r.status == "Completed" and r.output["images"] == 6
    calls = [(p["unit"], p["part"]) for p in r.inputs(c.LIST_PART)]
    # unit 0 had succeeded: never listed again; unit 2 was still running when unit 1 failed: called again (idempotent)
    assert calls == [(0, 0), (1, 0), (2, 0), (1, 0), (2, 0), (1, 0), (2, 0)]
    assert [t.delay_s for t in r.orchestrator_timers] == [STORAGE_RETRY.delay_s(1), STORAGE_RETRY.delay_s(2)]


def test_listing_that_keeps_failing_fails_the_enumeration() -> None:
    r = run({}, script([[1], [2]], fail={(0, 0): STORAGE_RETRY.attempts}))
    assert r.status == "Failed" and "storage throttled" in (r.error or "")
    assert not r.calls(c.WRITE_SHARDS)


def test_first_n_stops_listing_when_the_first_units_hold_enough() -> None:
    r = run({"first_n": 6}, script([[4, 3, 9], [2, 2, 2, 2], [5, 5]]))

    assert r.status == "Completed" and r.output == {"images": 6, "shards": 2}
    assert all(p["max_images"] == 6 for p in r.inputs(c.LIST_PART))
    # round 1: every unit once; unit 0 (4) is unfinished, so round 2 goes on; then 4 + 3 >= 6: stop
    assert [(p["unit"], p["part"]) for p in r.inputs(c.LIST_PART)] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    slices = [s for w in r.inputs(c.WRITE_SHARDS) for s in w["slices"]]
    assert sum(s["take"] for s in slices) == 6


@pytest.mark.parametrize("sample_n, chooses", [(5, True), (9, False), (50, False)])
def test_sample_n_merges_the_parts_keys_only_when_it_selects_fewer_than_found(sample_n: int, chooses: bool) -> None:
    r = run({"sample_n": sample_n, "seed": 1}, script([[3], [4, 2]], sample_counts=[2, 2, 1]))

    assert r.status == "Completed"
    assert bool(r.calls(c.CHOOSE_SAMPLE)) == chooses
    if chooses:
        assert r.inputs(c.CHOOSE_SAMPLE)[0]["parts"] == [[0, 0], [1, 0], [1, 1]]
        assert r.output == {"images": 5, "shards": 2}
        assert all(w["sampled"] for w in r.inputs(c.WRITE_SHARDS))
    else:
        assert r.output == {"images": 9, "shards": 3}


def test_an_empty_listing_writes_no_shards() -> None:
    r = run({}, script([]))
    assert r.status == "Completed" and r.output == {"images": 0, "shards": 0}
    assert r.activity_names == [c.PLAN_LISTING, c.FINISH_ENUMERATION]


def test_history_stays_small_for_a_large_task() -> None:
    """32 units of 10M images at 200,000 names per call: two rounds, a few hundred events, all small."""
    parts = [[160_000, 152_500] for _ in range(32)]  # 10M images
    r = run({"images_per_shard": 10_000}, script(parts, per_write=200_000))

    assert r.status == "Completed" and r.output == {"images": 10_000_000, "shards": 1000}
    assert len(r.activities) == 1 + 64 + 50 + 1
    import json
    assert max(len(json.dumps(a.input)) for a in r.activities) < 2_000


JOB = TASK + "_r261201120000ab12"


def _run_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.EnumerateOutput]:
    data = context.get_input()
    return (yield from enumerate_in_parallel(context, data["task_id"], data["request"], run_job=data["run_job"]))


@pytest.mark.parametrize("run_job, plan_names_it", [(JOB, True), (JOB, False), ("", False)])
def test_a_runs_later_listing_calls_use_the_folder_its_plan_wrote(run_job: str, plan_names_it: bool) -> None:
    """A run's plan call asks for the run's own listing folder (``listing_run``: its pool job), so that a late call
    of a run it replaced never writes its part; the later calls carry the folder only where the plan's output names
    it: a plan recorded before runs listed apart (or run by the code of before) wrote in the task's folder, where
    those calls must read. A run without a pool job lists in the task's folder, as before."""
    calls: list[tuple[str, dict[str, Any]]] = []
    scripted = script([[5], [3, 2]], sample_counts=[1, 1, 1])

    def answer(name: str, p: Any) -> Any:
        calls.append((name, dict(p)))
        out = scripted(name, p)
        if name == c.PLAN_LISTING and plan_names_it:
            out = {**out, "listing_run": p["listing_run"]}
        return out

    r = run_orchestrator(_run_orchestrator, {"task_id": TASK, "request": {"container": "cams", "images_per_shard": 4,
                                                                          "sample_n": 3},
                                             "run_job": run_job}, answer, instance_id=TASK)
    assert r.status == "Completed", r.error
    names = {name for name, _ in calls}
    assert names == {c.PLAN_LISTING, c.LIST_PART, c.CHOOSE_SAMPLE, c.WRITE_SHARDS, c.FINISH_ENUMERATION}
    plan = [p for name, p in calls if name == c.PLAN_LISTING]
    assert all(p.get("listing_run") == (run_job or None) for p in plan)
    later = [p for name, p in calls if name != c.PLAN_LISTING]
    assert all(p.get("listing_run") == (run_job if plan_names_it else None) for p in later)
    assert all(p.get("run_job") == (run_job or None) for p in later)
