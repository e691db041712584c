"""GET /api/tasks/{id} sums its shard groups' progress from ONE instance query (their custom statuses, no inputs),
fast at 50 groups, and its images-done count never goes backwards.

The Durable management API is a loopback aiohttp server answering the instance list as the extension does (pages of
at most 100 with ``x-ms-continuation-token``; azure-functions-durable-extension HttpApiHandler.cs, as devhost does).
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from api import starters
from core.estimate import live_rate
from core.ids import shards_instance_id

TASK = "task-0123456789abcdef0123"


class ManagementApi:
    """Instances by id; ``/instances/`` lists them by prefix, 100 a page, counting requests and recording queries."""

    def __init__(self, instances: dict[str, dict[str, Any]], runtimes: dict[str, str] | None = None) -> None:
        self.instances = instances
        self.runtimes = runtimes or {}  # an instance's runtimeStatus, "Running" unless named here
        self.queries: list[dict[str, str]] = []

    async def list(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        prefix = request.query.get("instanceIdPrefix", "")
        ids = sorted(i for i in self.instances if i.startswith(prefix))
        start = int(request.headers.get("x-ms-continuation-token") or 0)
        page = ids[start:start + 100]
        body = [{"instanceId": i, "runtimeStatus": self.runtimes.get(i, "Running"), "customStatus": self.instances[i],
                 "createdTime": "2026-12-01T10:00:00Z", "lastUpdatedTime": "2026-12-01T10:00:00Z"} for i in page]
        token = str(start + 100) if start + 100 < len(ids) else ""
        return web.json_response(body, headers={"x-ms-continuation-token": token})


class Client:
    """What describe_task uses of the SDK's DurableOrchestrationClient: the task's status and the binding's URL."""

    def __init__(self, base: str, task_status: dict[str, Any]) -> None:
        self._orchestration_bindings = SimpleNamespace(rpc_base_url=base)
        self.task_status = task_status
        self.status_reads = 0

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        self.status_reads += 1
        assert instance_id == TASK  # a group's status is never read one by one
        return SimpleNamespace(runtime_status=SimpleNamespace(value="Running"), custom_status=self.task_status,
                               output=None)


def group_status(done: int, progress: int) -> dict[str, Any]:
    return {"stage": "detecting", "shards": 200, "done": done, "images_done": done * 10, "images_progress": progress,
            "images_in_progress": progress - done * 10, "pool_running": 4, "pool_queued": 0, "flag": True}


def with_api(instances: dict[str, dict[str, Any]], body: Any, runtimes: dict[str, str] | None = None) -> Any:
    async def main() -> Any:
        api = ManagementApi(instances, runtimes)
        app = web.Application()
        app.router.add_get("/runtime/webhooks/durabletask/instances/", api.list)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            return await body(f"http://127.0.0.1:{port}/runtime/webhooks/durabletask/", api)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


TASK_STATUS = {"stage": "detecting", "images": 100_000, "shards": 10_000, "groups": 50,
               "started": "2026-12-01T10:00:00+00:00"}


def test_fifty_groups_are_summed_from_one_query_without_inputs_well_under_a_second() -> None:
    groups = {shards_instance_id(TASK, g): group_status(done=g, progress=g * 10 + 3) for g in range(50)}
    groups[shards_instance_id(TASK, 60)] = group_status(done=999, progress=99_999)  # an older run's extra group
    groups["task-ffffffffffffffffffff-shards-0000"] = group_status(done=999, progress=99_999)  # another task

    async def body(base: str, api: ManagementApi) -> Any:
        client = Client(base, TASK_STATUS)
        timings = []
        for _ in range(40):
            t0 = time.perf_counter()
            out = await starters.describe_task(client, TASK)
            timings.append(time.perf_counter() - t0)
        return out, sorted(timings), api, client

    out, timings, api, client = with_api(groups, body)
    assert out["images_done"] == sum(g * 10 + 3 for g in range(50))  # images_progress, summed over this run's groups
    assert out["shards_done"] == sum(range(50)) and out["shards_running"] == 200
    assert len(api.queries) == 40  # one instance query per status request (50 groups fit one page)
    assert all(q["showInput"] == "false" and q["instanceIdPrefix"] == f"{TASK}-shards-" for q in api.queries)
    assert client.status_reads == 40
    assert timings[int(len(timings) * 0.99) - 1] < 1.0  # p99, on this loopback stand-in


def test_pages_are_followed_past_one_hundred_groups_and_old_groups_still_count() -> None:
    groups = {shards_instance_id(TASK, g): group_status(done=1, progress=13) for g in range(250)}
    groups[shards_instance_id(TASK, 7)] = {"stage": "detecting", "images_done": 20, "images_in_progress": 5}  # older

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 250}), TASK), api

    out, api = with_api(groups, body)
    assert out["images_done"] == 249 * 13 + 25 and len(api.queries) == 3


def test_the_images_done_count_never_goes_backwards_while_groups_move_on() -> None:
    """Each group's images_progress never decreases (the shard orchestrator's test proves it); a shard that
    completes moves its images from in-progress to done, which the old sum (done + in progress) could show as a
    drop when its counter had counted retryable failures. The status follows images_progress."""
    steps = [(0, 9), (0, 14), (1, 14), (1, 18)]  # (done shards, images_progress) of group 0, over time
    seen = []

    async def body(base: str, api: ManagementApi) -> Any:
        client = Client(base, {**TASK_STATUS, "groups": 1})
        for done, progress in steps:
            # a completion where 3 images failed retryably: done*10 - 3 final, nothing in progress
            api.instances[shards_instance_id(TASK, 0)] = {**group_status(done, progress),
                                                          "images_done": done * 7, "images_in_progress": 0
                                                          if done else progress}
            seen.append((await starters.describe_task(client, TASK))["images_done"])

    with_api({}, body)
    assert seen == [9, 14, 14, 18] and seen == sorted(seen)


def test_a_reruns_progress_sums_its_own_groups_not_those_of_the_earlier_run() -> None:
    run = "r261201120000ab12"
    groups = {shards_instance_id(TASK, g): group_status(done=50, progress=500) for g in range(3)}  # the earlier run
    groups.update({shards_instance_id(TASK, g, run): group_status(done=g, progress=g * 10 + 1) for g in range(2)})

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 2, "groups_run": run}), TASK)

    out = with_api(groups, body)
    assert out["images_done"] == 1 + 11 and out["shards_done"] == 0 + 1


def test_the_rate_counts_detected_images_since_the_pool_work_began() -> None:
    """A re-run with only_new began with 90,000 of its 100,000 images reused, and waited two days for confirmation:
    the rate counted all 95,000 done images over the two days (0.55 img/s, ETA hours), where the pool detected
    5,000 in 100 s (50 img/s, 100 s left). Counted from ``detecting_since`` and without the reused images it says so.
    """
    now = datetime.now(timezone.utc)
    status = {**TASK_STATUS, "groups": 1, "reused": 90_000, "started": (now - timedelta(days=2)).isoformat(),
              "detecting_since": (now - timedelta(seconds=100)).isoformat()}
    groups = {shards_instance_id(TASK, 0): group_status(done=0, progress=95_000)}

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, status), TASK)

    out = with_api(groups, body)
    assert out["images_done"] == 95_000
    assert 5_000 / 160 <= out["images_per_second"] <= 50.0  # 100 s ago, and up to a minute on a loaded machine
    assert 100 <= out["eta_seconds"] <= 160


def test_the_rate_leaves_out_the_images_of_a_resumed_runs_shards_that_started_done() -> None:
    """A resumed run whose listing found 90,000 of its 100,000 images' shards finished by the earlier run (status
    ``earlier``: they start done, no pool task ran them): the rate is the pool's 5,000 in 100 s, not 95,000."""
    now = datetime.now(timezone.utc)
    status = {**TASK_STATUS, "groups": 1, "earlier": 90_000,
              "detecting_since": (now - timedelta(seconds=100)).isoformat()}
    groups = {shards_instance_id(TASK, 0): group_status(done=0, progress=95_000)}

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, status), TASK)

    out = with_api(groups, body)
    assert out["images_done"] == 95_000
    assert 5_000 / 160 <= out["images_per_second"] <= 50.0  # 100 s ago, and up to a minute on a loaded machine
    assert 100 <= out["eta_seconds"] <= 160


def test_a_task_from_before_detecting_since_still_gets_a_rate_from_its_start() -> None:
    now = datetime.now(timezone.utc)
    status = {**TASK_STATUS, "groups": 1, "started": (now - timedelta(seconds=1000)).isoformat()}
    groups = {shards_instance_id(TASK, 0): group_status(done=0, progress=10_000)}

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, status), TASK)

    out = with_api(groups, body)
    assert 10_000 / 1060 <= out["images_per_second"] <= 10.0 and 9_000 <= out["eta_seconds"] <= 9_540


def test_nothing_detected_yet_gives_no_rate_and_no_eta() -> None:
    assert live_rate(1000, 400, 400, 50.0) == (0.0, None)
    assert live_rate(1000, 0, 0, 50.0) == (0.0, None)
    assert live_rate(1000, 500, 0, 0.0) == (0.0, None)
    assert live_rate(1000, 500, 100, 40.0) == (10.0, 50)


def test_a_shard_group_waiting_out_a_busy_service_is_shown_in_the_tasks_status() -> None:
    """A group's poll waiting minutes on a busy Batch account (orchestrations.retries) is seen in the task's status,
    not only in the group's own: the first group that waits."""
    waiting = {"step": "poll_shards", "reason": "(ServerBusy) ServerBusy", "attempt": 2, "of": 8,
               "at": "2026-12-05T15:10:00+00:00"}
    groups = {shards_instance_id(TASK, 0): group_status(done=1, progress=10),
              shards_instance_id(TASK, 1): {**group_status(done=1, progress=10), "waiting": waiting}}

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 2}), TASK)

    out = with_api(groups, body)
    assert out["waiting"] == waiting and out["images_done"] == 20

    async def calm(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 1}), TASK)

    assert "waiting" not in with_api({shards_instance_id(TASK, 0): group_status(done=1, progress=10)}, calm)


def test_the_eta_is_rounded_and_never_negative() -> None:
    assert live_rate(1000, 600, 0, 10.0) == (60.0, 7)  # 6.67 s left: rounded, not cut to 6
    assert live_rate(1000, 1200, 0, 10.0) == (120.0, 0)  # more done than listed: no time left, never negative


def test_shards_waiting_out_worker_exits_69_are_shown_in_the_tasks_status_with_why_and_what_to_check() -> None:
    """Each group's ``unreachable`` note (orchestrations.shards "Unavailable exits") is summed into one in the task's
    status: the shards of every group, the worker's words and since of the earliest first exit, the earliest until and
    next try, and what to check; without it a pool idled an hour by a firewall showed only shards not running."""
    early = {"shards": 2, "reason": "github.com, the download host of model 'MDV5A', did not answer",
             "since": "2026-12-05T15:00:00+00:00", "until": "2026-12-05T16:00:00+00:00",
             "at": "2026-12-05T15:04:00+00:00"}
    late = {"shards": 3, "reason": "the images' secret store did not answer", "since": "2026-12-05T15:02:00+00:00",
            "until": "2026-12-05T16:02:00+00:00", "at": "2026-12-05T15:03:00+00:00"}
    groups = {shards_instance_id(TASK, 0): {**group_status(done=1, progress=10), "unreachable": late},
              shards_instance_id(TASK, 1): {**group_status(done=1, progress=10), "unreachable": early},
              shards_instance_id(TASK, 2): group_status(done=1, progress=10)}

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 3}), TASK)

    note = with_api(groups, body)["unreachable"]
    assert {k: note[k] for k in ("shards", "reason", "since", "until", "at")} == {
        "shards": 5, "reason": early["reason"], "since": early["since"], "until": early["until"],
        "at": late["at"]}, note
    assert "169.254.169.254" in note["check"] and "stderr.txt" in note["check"]

    async def calm(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 1}), TASK)

    assert "unreachable" not in with_api({shards_instance_id(TASK, 0): group_status(done=1, progress=10)}, calm)


def test_shards_waiting_out_an_exit_69_back_off_are_counted_in_the_tasks_status_so_the_shards_add_up() -> None:
    """A group counts a shard whose next attempt waits out an exit 69's back-off as ``unavailable_waiting``, neither
    running nor queued (it is in no pool task): the task's status says so in ``shards_waiting``, and the CLI's line
    shows it, so done + running + queued + waiting is every submitted shard; without it those shards (before, shown
    queued) vanished from the counts: "0/4 done, 0 running, 0 queued"."""
    from cli.progress import progress_line

    groups = {shards_instance_id(TASK, 0): {**group_status(done=1, progress=10), "pool_running": 1, "pool_queued": 1,
                                            "unavailable_waiting": 3},
              shards_instance_id(TASK, 1): {**group_status(done=2, progress=10), "pool_running": 0, "pool_queued": 0,
                                            "unavailable_waiting": 2}}

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 2, "shards": 10}), TASK)

    out = with_api(groups, body)
    assert (out["shards_done"], out["shards_running"], out["shards_queued"], out["shards_waiting"]) == (3, 1, 1, 5)
    assert out["shards_done"] + out["shards_running"] + out["shards_queued"] + out["shards_waiting"] == out["shards"]
    assert "3/10 done, 1 running, 1 queued, 5 waiting to be tried again, " in progress_line(out), progress_line(out)
    assert " waiting to be tried again" not in progress_line({**out, "shards_waiting": 0})


def test_a_group_with_no_status_yet_is_shown_unknown_and_its_images_are_not_counted_lost() -> None:
    """A group's custom status is ``null`` until its first work item is stored, and on Azure again in any episode of
    a generation that set none yet (devhost README, fidelity rows 33 and 43); a group may not be listed yet at all.
    The task's status sums the groups that show counts, says how many do not (``groups_unknown``) and counts none of
    their images, done or missing, instead of failing or losing them."""
    from tests.openapi_answers import undescribed

    groups: dict[str, Any] = {shards_instance_id(TASK, 0): group_status(done=1, progress=13),
                              shards_instance_id(TASK, 1): None}  # listed, no status; group 2 not listed yet

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 3}), TASK)

    out = with_api(groups, body)
    assert out["groups_unknown"] == 2, out
    assert out["images_done"] == 13 and out["images_missing"] == 0 and out["images_failed"] == 0
    assert out["shards_done"] == 1 and out["shards_running"] == 4
    assert undescribed("TaskStatus", out) == [], undescribed("TaskStatus", out)

    async def known(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 1}), TASK)

    assert "groups_unknown" not in with_api({shards_instance_id(TASK, 0): group_status(done=1, progress=10)}, known)


def test_a_group_that_ended_without_a_status_is_said_ended_not_starting() -> None:
    """A group that failed or was terminated before its status was stored shows none, and never will: counted in
    ``groups_unknown`` ("starting", the CLI's "not reporting yet") it was said to be on its way. Now such groups,
    told apart by their instance's runtime status in the same listing, are ``groups_ended_without_counts``; their
    shards and images stay in none of the counts. Fails without the change (all three were ``groups_unknown``)."""
    from tests.openapi_answers import undescribed

    ids = [shards_instance_id(TASK, g) for g in range(4)]
    groups: dict[str, Any] = {ids[0]: group_status(done=1, progress=13), ids[1]: None, ids[2]: None, ids[3]: None}
    runtimes = {ids[1]: "Failed", ids[2]: "Terminated"}  # ids[3] Running: starting

    async def body(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 5}), TASK)

    out = with_api(groups, body, runtimes)
    assert out["groups_ended_without_counts"] == 2 and out["groups_unknown"] == 2, out  # group 4 is not listed yet
    assert out["images_done"] == 13 and out["images_missing"] == 0
    assert undescribed("TaskStatus", out) == [], undescribed("TaskStatus", out)
    runtimes[ids[3]] = "Failed"
    groups.pop(ids[3])  # not listed at all: not known to have ended

    async def four(base: str, api: ManagementApi) -> Any:
        return await starters.describe_task(Client(base, {**TASK_STATUS, "groups": 4}), TASK)

    out = with_api(groups, four, runtimes)
    assert out["groups_ended_without_counts"] == 2 and out["groups_unknown"] == 1, out
    assert "groups_ended_without_counts" not in with_api({ids[0]: group_status(done=1, progress=10)}, four)


def test_a_group_listed_twice_is_counted_once_among_the_known_groups() -> None:
    """``groups_unknown`` is the run's groups less the distinct ones that show counts: a listing that names a group
    twice (a page boundary moving under a listing, a test's fake) must not make it negative, which the description's
    ``minimum: 1`` refuses and a client would show as nonsense."""
    import asyncio
    from types import SimpleNamespace
    from unittest import mock

    listed = [SimpleNamespace(instance_id=shards_instance_id(TASK, 0), custom_status=group_status(done=1, progress=4))
              for _ in range(3)]

    async def instances(*args: Any, **kwargs: Any) -> list[Any]:
        return listed

    with mock.patch.object(starters, "_all_instances", instances):
        _, _, _, unknown, ended, _ = asyncio.run(starters._child_progress(mock.Mock(), TASK, 2))
    assert unknown == 1 and ended == 0
