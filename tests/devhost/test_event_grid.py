"""devhost delivers Event Grid events as Event Grid does: the retry schedule, the 30-s wait for an answer, the answers
it does not retry, max delivery attempts and time to live, and a schedule that survives a restart.

The platform's rules: MicrosoftDocs/azure-docs ``articles/event-grid/delivery-and-retry.md`` (ms.date 02/09/2026;
quoted in ``devhost/event_grid.py``). These tests drive ``Deliveries`` on a clock that moves only when they move it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import pytest

from devhost.event_grid import EVENT_TTL_S, MAX_DELIVERY_ATTEMPTS, Deliveries, DeliveryPolicy, blob_created_event

BLOB = "photos/trapbatch-ready.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class MemoryStore:
    """``event_grid.DeliveryStore`` in a dict (Azurite's: ``test_a_restart_resumes_the_schedule_from_azurite``)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}

    def save_delivery(self, function: str, blob_name: str, etag: str, fields: dict[str, Any]) -> None:
        self.rows[(function, blob_name, etag)] = {"BlobName": blob_name, "Etag": etag, **fields}

    def delete_delivery(self, function: str, blob_name: str, etag: str) -> None:
        self.rows.pop((function, blob_name, etag), None)

    def deliveries(self, function: str) -> list[dict[str, Any]]:
        return [dict(row) for (f, _, _), row in self.rows.items() if f == function]


def _inline(run: Callable[[], None]) -> None:
    run()


def _event() -> dict[str, Any]:
    return blob_created_event("devstoreaccount1", "photos", "trapbatch-ready.json",
                              "http://127.0.0.1:10000/devstoreaccount1/photos/trapbatch-ready.json", "0x8D1", 2,
                              "application/json")


def _run_until_done(deliveries: Deliveries, clock: Clock, limit: int = 100) -> None:
    """Step, moving the clock to each next due time, until nothing is pending (tries answer at once)."""
    for _ in range(limit):
        due = deliveries.step()
        if due is None:
            return
        if deliveries.wake.is_set():  # an answer came: count it at this same time
            deliveries.wake.clear()
            continue
        clock.now += due
    raise AssertionError(f"still pending after {limit} steps: {deliveries.pending}")


def _tries(answers: list[int] | Callable[[int], int], clock: Clock) -> tuple[list[float], Callable[..., int]]:
    """A ``deliver`` that answers ``answers[n]`` at try n (or ``answers(n)``), and the clock's times of its tries."""
    times: list[float] = []

    def deliver(function: str, event: dict[str, Any]) -> int:
        times.append(clock.now)
        n = len(times) - 1
        return answers(n) if callable(answers) else answers[n]
    return times, deliver


@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_a_failing_delivery_is_tried_on_event_grids_schedule_until_its_time_to_live_has_passed(
        scale: float, caplog: pytest.LogCaptureFixture) -> None:
    """"10 seconds, 30 seconds, 1 minute, 5 minutes, 10 minutes, 30 minutes, 1 hour, 3 hours, 6 hours, every 12 hours
    up to 24 hours", each after the failure before it, ``scale`` times as long; the time to live (1440 minutes,
    scaled too) is "checked ONLY at the next scheduled delivery attempt", where the event is dropped with an error
    log naming the blob. Before, devhost tried five times at once (poisonBlobThreshold) and dropped the event."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries(lambda n: 500, clock)
    deliveries = Deliveries(store, deliver, DeliveryPolicy(scale=scale), clock=clock, spawn=_inline)
    start = clock.now
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    assert store.rows  # kept in storage before the first try
    with caplog.at_level(logging.INFO, logger="devhost.eventgrid"):
        _run_until_done(deliveries, clock)
    after = [0, 10, 40, 100, 400, 1000, 2800, 6400, 17200, 38800, 82000]  # seconds after the first try
    assert [round((t - start) / scale, 3) for t in times] == after
    assert clock.now - start == pytest.approx((82000 + 12 * 3600) * scale)  # the due try past the TTL is not made
    assert 82000 < EVENT_TTL_S < 82000 + 12 * 3600 and len(times) < MAX_DELIVERY_ATTEMPTS
    dropped = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dropped) == 1 and BLOB in dropped[0].getMessage() and "time to live" in dropped[0].getMessage()
    assert "write trapbatch-ready.json again" in dropped[0].getMessage()
    assert not store.rows and not deliveries.pending


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_an_answer_event_grid_does_not_retry_drops_the_event_at_once(status: int,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """For a webhook endpoint Event Grid does not retry 400, 401, 403 and 413; without a dead-letter destination the
    event is dropped ("The following table describes the types of endpoints and errors for which Event Grid doesn't
    retry delivery")."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries([status], clock)
    deliveries = Deliveries(store, deliver, clock=clock, spawn=_inline)
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    with caplog.at_level(logging.ERROR, logger="devhost.eventgrid"):
        _run_until_done(deliveries, clock)
    assert len(times) == 1 and not store.rows
    assert f"answered {status}, which Event Grid does not retry" in caplog.text and BLOB in caplog.text


@pytest.mark.parametrize("status, at_least", [(404, 10.0), (408, 120.0), (429, 10.0), (500, 10.0), (503, 30.0),
                                             (205, 10.0)])
def test_other_failures_are_retried_no_sooner_than_their_answer_allows(status: int, at_least: float) -> None:
    """"All other failure codes follow the standard exponential back-off model", some with a minimum ("408 Request
    Timeout: Retry after 2 minutes or more", "503 Service Unavailable: Retry after 30 seconds or more"); 404 is not
    among a webhook's unretried answers. The second try then succeeds (202): delivered, nothing left."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries([status, 202], clock)
    deliveries = Deliveries(store, deliver, clock=clock, spawn=_inline)
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    _run_until_done(deliveries, clock)
    assert [t - times[0] for t in times] == [0.0, at_least] and not store.rows


@pytest.mark.parametrize("status", [200, 204])
def test_an_answer_from_200_to_204_delivers_the_event_at_its_first_try(status: int) -> None:
    """"Event Grid considers only the following HTTP response codes as successful deliveries: 200 OK, 201 Created,
    202 Accepted, 203 Non-Authoritative Information, 204 No Content" (205 is retried: the test above)."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries([status], clock)
    deliveries = Deliveries(store, deliver, clock=clock, spawn=_inline)
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    _run_until_done(deliveries, clock)
    assert len(times) == 1 and not store.rows


def test_a_function_that_raises_is_the_extensions_500_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    """``deliver`` raising (the function raised, or ran past ``functionTimeout``) is the Event Grid extension's 500: a
    failed try, tried again on the schedule, its exception in the warning; not a delivery."""
    clock, store = Clock(), MemoryStore()
    times: list[float] = []

    def deliver(function: str, event: dict[str, Any]) -> int:
        times.append(clock.now)
        if len(times) == 1:
            raise RuntimeError("the blob service said no")
        return 202

    deliveries = Deliveries(store, deliver, clock=clock, spawn=_inline)
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    with caplog.at_level(logging.INFO, logger="devhost.eventgrid"):
        _run_until_done(deliveries, clock)
    assert [t - times[0] for t in times] == [0.0, 10.0] and not store.rows
    assert "answered 500 (RuntimeError: the blob service said no)" in caplog.text
    assert "delivered at try 2" in caplog.text


@pytest.mark.parametrize("late_answer_at", [37.0, 45.0])
def test_a_late_answer_is_not_counted_and_the_schedule_runs_from_the_30_s_mark(
        late_answer_at: float, caplog: pytest.LogCaptureFixture) -> None:
    """A try counted failed after 30 s without an answer stays failed: its late 202, whether it comes before the next
    try (37 s) or while that one runs (45 s), neither delivers the event nor stands for the next try's answer. The
    next try is 10 s after the 30-s mark even when the poller looks later (35 s), and the one after it 30 s after
    that try's own answer (500 at 50 s), not after it started."""
    clock, store = Clock(), MemoryStore()
    answers, runs = [202, 500], list[Callable[[], None]]()  # try 1's (late) answer, then try 2's
    deliveries = Deliveries(store, lambda f, e: answers.pop(0), clock=clock, spawn=runs.append)
    start = clock.now
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    deliveries.step()  # try 1 starts
    clock.now = start + 35  # the poller looks late
    assert deliveries.step() == 5.0  # failed at 30 s: the next try at 40 s
    for at in sorted({late_answer_at, 40.0}):
        clock.now = start + at
        if at == late_answer_at:
            runs[0]()  # try 1 answers 202, late
        with caplog.at_level(logging.INFO, logger="devhost.eventgrid"):
            deliveries.step()
    assert len(runs) == 2 and deliveries.pending  # try 2 started, the event not delivered by try 1's 202
    clock.now = start + 50
    runs[1]()  # try 2 answers 500
    assert deliveries.step() == 30.0 and deliveries.pending
    [row] = store.rows.values()
    assert (row["Tries"], row["NextTryAt"] - start) == (2, 80.0)
    assert "try 1 for photos/trapbatch-ready.json answered 202 after Event Grid stopped waiting" in caplog.text


def test_the_next_due_time_is_the_soonest_of_all_pending_events() -> None:
    """With two events pending, ``step`` says when the sooner one is due (the poller sleeps until then)."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries(lambda n: 500, clock)
    deliveries = Deliveries(store, deliver, clock=clock, spawn=_inline)
    start = clock.now
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    deliveries.step()  # fails: the next try at 10 s
    clock.now = start + 3
    deliveries.publish("container_ready", "other/trapbatch-ready.json", "0x8D2", _event())
    deliveries.step()  # fails: the next try at 13 s
    assert deliveries.step() == 7.0
    clock.now = start + 10
    deliveries.step()
    assert [t - start for t in times] == [0.0, 3.0, 10.0]


def test_a_closed_delivery_starts_no_try_and_keeps_the_event_for_the_next_start() -> None:
    """At a stop (``close``) a due try is not made; the event stays in storage with its schedule, for the next start."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries(lambda n: 500, clock)
    deliveries = Deliveries(store, deliver, clock=clock, spawn=_inline)
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    deliveries.step()
    deliveries.close()
    clock.now += 60
    deliveries.step()
    assert len(times) == 1 and [row["Tries"] for row in store.rows.values()] == [1]


def test_the_time_to_live_runs_from_the_first_publish_across_restarts(caplog: pytest.LogCaptureFixture) -> None:
    """A restart keeps when the event was published: with a 40-s time to live, tries at 0 and 10 s (each devhost
    started afresh before it), and the try due at 40 s, exactly when the time to live ends, is not made."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries(lambda n: 500, clock)
    policy = DeliveryPolicy(ttl_s=40.0)
    start = clock.now
    Deliveries(store, deliver, policy, clock=clock, spawn=_inline).publish("container_ready", BLOB, "0x8D1", _event())
    with caplog.at_level(logging.ERROR, logger="devhost.eventgrid"):
        for _ in range(5):
            deliveries = Deliveries(store, deliver, policy, clock=clock, spawn=_inline)  # a restart before each try
            deliveries.load(["container_ready"])
            deliveries.step()
            if deliveries.step() is None:  # the try's answer counted (500: rescheduled), or the event dropped
                break
            clock.now = max(row["NextTryAt"] for row in store.rows.values())
    assert [t - start for t in times] == [0.0, 10.0] and not store.rows and clock.now - start == 40.0
    assert "time to live (40 s) has passed after 2 tries" in caplog.text


def test_an_event_whose_time_to_live_passed_while_devhost_was_stopped_is_dropped_not_delivered() -> None:
    """A retry due at 10 s, devhost stopped until 50 s, time to live 45 s: the try due now is past the time to live
    and dropped, not made late with a stale event."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries(lambda n: 500, clock)
    policy = DeliveryPolicy(ttl_s=45.0)
    deliveries = Deliveries(store, deliver, policy, clock=clock, spawn=_inline)
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    deliveries.step()
    clock.now += 50
    again = Deliveries(store, deliver, policy, clock=clock, spawn=_inline)
    again.load(["container_ready"])
    assert again.step() is None and len(times) == 1 and not store.rows


def test_drain_waits_for_a_running_try_only_until_it_ends_and_says_when_one_still_runs() -> None:
    """``drain`` (devhost's stop) says False while a try still runs, returns as soon as it ends (not at the end of its
    timeout), and counts its answer; a try whose thread could not start is not waited for."""
    clock, store = Clock(), MemoryStore()
    release = threading.Event()

    def deliver(function: str, event: dict[str, Any]) -> int:
        assert release.wait(30), "the test never released the try"
        return 202

    deliveries = Deliveries(store, deliver, clock=clock)  # the try in a thread of its own
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    deliveries.step()
    deliveries.close()
    assert deliveries.drain(0.05) is False and store.rows
    timer = threading.Timer(0.2, release.set)
    timer.start()
    began = time.monotonic()
    assert deliveries.drain(20) is True and time.monotonic() - began < 10
    assert not store.rows and not deliveries.pending  # its 202 counted
    timer.join()

    def no_thread(run: Callable[[], None]) -> None:
        raise RuntimeError("can't start new thread")

    broken = Deliveries(MemoryStore(), deliver, clock=clock, spawn=no_thread)
    broken.publish("container_ready", BLOB, "0x8D1", _event())
    with pytest.raises(RuntimeError):
        broken.step()
    assert broken.drain(0) is True


def test_the_event_is_dropped_when_its_last_delivery_attempt_fails(caplog: pytest.LogCaptureFixture) -> None:
    """"Maximum number of attempts" (1 to 30, default 30): the event is dropped when its last try fails, not at the
    next scheduled time."""
    clock, store = Clock(), MemoryStore()
    times, deliver = _tries(lambda n: 500, clock)
    deliveries = Deliveries(store, deliver, DeliveryPolicy(max_attempts=3), clock=clock, spawn=_inline)
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    with caplog.at_level(logging.ERROR, logger="devhost.eventgrid"):
        _run_until_done(deliveries, clock)
    assert [t - times[0] for t in times] == [0.0, 10.0, 40.0] and clock.now - times[0] == 40.0
    assert "try 3 of 3 (max delivery attempts) failed" in caplog.text and BLOB in caplog.text
    for bad_attempts in (0, 31):
        with pytest.raises(ValueError, match="1 to 30"):
            DeliveryPolicy(max_attempts=bad_attempts)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number"):
            DeliveryPolicy(scale=bad)


def test_a_try_without_an_answer_in_30_s_is_tried_again_while_it_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    """"Event Grid waits 30 seconds for a response after delivering a message. After 30 seconds, if the endpoint
    doesn't respond, Event Grid queues the message for retry": the second try starts 30 s + 10 s after the first
    while the first still runs, with the same event (same id); the first one's late answer is not counted."""
    clock, store = Clock(), MemoryStore()
    release, calls = threading.Event(), list[tuple[float, str]]()

    def deliver(function: str, event: dict[str, Any]) -> int:
        calls.append((clock.now, event["id"]))
        if len(calls) == 1:
            assert release.wait(30), "the test never released the first try"
            return 500
        return 202

    deliveries = Deliveries(store, deliver, DeliveryPolicy(scale=1.0), clock=clock)  # each try in a thread
    start = clock.now
    deliveries.publish("container_ready", BLOB, "0x8D1", _event())
    assert deliveries.step() == 30.0  # the first try runs; Event Grid waits 30 s for its answer
    clock.now += 30
    assert deliveries.step() == 10.0 and deliveries.pending  # no answer: failed, the next try in 10 s
    clock.now += 10
    deliveries.step()  # the second try starts, the first still runs
    assert deliveries.wake.wait(30) and deliveries.step() is None and not store.rows  # delivered (202)
    assert [(t - start, i) for t, i in calls] == [(0.0, calls[0][1]), (40.0, calls[0][1])]
    deliveries.wake.clear()
    release.set()  # the first try's answer, late
    with caplog.at_level(logging.INFO, logger="devhost.eventgrid"):
        assert deliveries.wake.wait(30) and deliveries.step() is None
    assert "try 1 for photos/trapbatch-ready.json answered 500 after Event Grid stopped waiting" in caplog.text


def test_a_restart_resumes_the_schedule_from_azurite(storage_connection: str, unique_name: str) -> None:
    """A restart neither loses a pending retry nor makes it at once: the tries so far and the next try's time are kept
    in Azurite beside the receipts (``Store.save_delivery``); a try that was running when devhost stopped counts as
    one that got no answer (the next try 30 s + its step after it started)."""
    from devhost.store import Store

    clock = Clock()
    store = Store(storage_connection, unique_name)
    times, deliver = _tries([500], clock)
    first = Deliveries(store, deliver, clock=clock, spawn=_inline)
    start = clock.now
    event = _event()
    first.publish("container_ready", BLOB, "0x8D1", event)
    first.step()
    assert first.step() == 10.0  # the first try failed: the next in 10 s

    clock.now += 4  # devhost stops and starts again
    again = Deliveries(Store(storage_connection, unique_name), lambda f, e: pytest.fail("not yet"), clock=clock,
                       spawn=lambda run: None)  # a try that never answers: devhost stops while it runs
    again.load(["container_ready", "other"])
    [pending] = again.pending.values()
    assert (pending.tries, pending.next_try_at - start, pending.event) == (1, 10.0, event)
    assert again.step() == 6.0  # not at once
    clock.now += 6
    again.step()  # the second try starts, and devhost stops before it answers

    clock.now += 5
    calls, deliver = _tries([202], clock)
    third = Deliveries(Store(storage_connection, unique_name), deliver, clock=clock, spawn=_inline)
    third.load(["container_ready"])
    [pending] = third.pending.values()
    assert (pending.tries, pending.next_try_at - start) == (2, 10.0 + 30 + 30)
    assert third.step() == 10.0 + 30 + 30 - 15  # waits for the step after the unanswered try, not at once
    clock.now = start + 70
    third.step()
    assert third.step() is None and calls == [start + 70] and store.deliveries("container_ready") == []


def test_the_retry_scale_comes_from_the_flag_else_the_environment_else_is_the_platforms(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One knob, ``--event-grid-retry-scale`` or ``$TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE``, default 1.0 (Event
    Grid's own schedule); a value that is no positive number is refused (``python -m devhost`` exits 2 with it)."""
    from devhost.__main__ import _retry_scale

    monkeypatch.delenv("TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE", raising=False)
    assert _retry_scale(None) == 1.0 and _retry_scale(0.05) == 0.05
    monkeypatch.setenv("TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE", "0.01")
    assert _retry_scale(None) == 0.01 and _retry_scale(2.0) == 2.0
    for bad in ("fast", "0", "-1"):
        monkeypatch.setenv("TRAPBATCH_DEVHOST_EVENT_GRID_RETRY_SCALE", bad)
        with pytest.raises(ValueError, match="positive number"):
            _retry_scale(None)


def test_a_delivery_running_when_devhost_stops_finishes_is_counted_and_leaves_no_thread(
        storage_connection: str, unique_name: str) -> None:
    """``DevHost.stop`` lets a try that is running finish (within the 10 s it gives its pollers) before it stops the
    loop the function runs on, counts its answer, and starts no try after it: a host draining at shutdown. Before,
    each try ran on a thread of its own that stop neither waited for nor counted: the function was cut off mid-run
    when the loop stopped, its thread stayed blocked until host.json's ``functionTimeout`` (30 min), and the delivery
    stayed pending in Azurite, so the next start delivered the event again."""
    from azure.storage.blob import BlobServiceClient

    from devhost.event_grid import Subscription
    from devhost.host import DevHost
    from devhost.store import Store
    from tests.devhost import event_grid_app

    event_grid_app.STARTED.clear()
    event_grid_app.FINISHED.clear()
    blobs = BlobServiceClient.from_connection_string(storage_connection)
    blobs.create_container(unique_name).upload_blob("ready.json", b"{}")
    h = DevHost(event_grid_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.2,
                event_grid=[Subscription.parse("slow_ready=/blobs/ready.json")]).start()
    try:
        assert event_grid_app.STARTED.wait(60), "the event was never delivered"
    finally:
        h.stop()
    assert event_grid_app.FINISHED.is_set()  # not cut off by the stop
    assert not [t for t in threading.enumerate() if t.name == "devhost-eventgrid-delivery" and t.is_alive()]
    assert Store(storage_connection, unique_name).deliveries("slow_ready") == []  # its 202 counted: not delivered again
    blobs.delete_container(unique_name)


def test_each_blob_version_is_delivered_once_and_a_left_retry_waits_for_its_time(storage_connection: str,
                                                                               unique_name: str) -> None:
    """The poller publishes a blob version once (its receipt), however often it sees it again: one delivery, and none
    for a blob whose name only starts with the subscription's (``ready.json.old``). A retry a previous devhost left
    pending in Azurite, its receipt never written (stopped between the two writes), is taken up with its schedule
    (next try in an hour): not published again as a new event and delivered at once."""
    import json

    from azure.storage.blob import BlobServiceClient

    from devhost.event_grid import Subscription
    from devhost.host import DevHost
    from devhost.store import Store
    from tests.devhost import event_grid_app

    blobs = BlobServiceClient.from_connection_string(storage_connection)
    container = blobs.create_container(unique_name)
    container.upload_blob("ready.json", b"{}")
    [listed] = container.list_blobs()  # its ETag as the poller reads it: a listing's, without a GET's quotes
    now = time.time()
    Store(storage_connection, unique_name).save_delivery(
        "quick_ready", f"{unique_name}/ready.json", str(listed.etag),
        {"Event": json.dumps(_event()), "PublishedAt": now, "Tries": 1, "NextTryAt": now + 3600})
    fresh = f"{unique_name}-new"
    event_grid_app.QUICK_CALLED.clear()
    h = DevHost(event_grid_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.1,
                event_grid=[Subscription.parse("quick_ready=/blobs/ready.json")]).start()
    try:
        new = blobs.create_container(fresh)
        new.upload_blob("ready.json.old", b"{}")  # the subscription's subject ends with /blobs/ready.json: not this
        new.upload_blob("ready.json", b"{}")
        assert event_grid_app.QUICK_CALLED.wait(60), "the new blob's event was never delivered"
        time.sleep(1.5)  # many more scans
    finally:
        h.stop()
    subjects = [subject for subject, _ in event_grid_app.CALLS if unique_name in subject]
    assert subjects == [f"/blobServices/default/containers/{fresh}/blobs/ready.json"]
    [row] = Store(storage_connection, unique_name).deliveries("quick_ready")
    assert (row["Tries"], row["NextTryAt"]) == (1, now + 3600)
    blobs.delete_container(unique_name)
    blobs.delete_container(fresh)
