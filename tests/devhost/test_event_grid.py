"""devhost delivers Event Grid events as Event Grid does: the retry schedule, the 30-s wait for an answer, the answers
it does not retry, max delivery attempts and time to live, and a schedule that survives a restart.

The platform's rules: MicrosoftDocs/azure-docs ``articles/event-grid/delivery-and-retry.md`` (ms.date 02/09/2026;
quoted in ``devhost/event_grid.py``). These tests drive ``Deliveries`` on a clock that moves only when they move it.
"""
from __future__ import annotations

import logging
import threading
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


@pytest.mark.parametrize("status, at_least", [(404, 10.0), (408, 120.0), (429, 10.0), (500, 10.0), (503, 30.0)])
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
    with pytest.raises(ValueError, match="1 to 30"):
        DeliveryPolicy(max_attempts=31)
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
