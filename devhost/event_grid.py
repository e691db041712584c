"""Event Grid triggers fed with Blob Storage ``BlobCreated`` events, delivered and retried as an Event Grid
subscription on the storage account's system topic would.

In Azure, an event subscription (infra/hooks/postdeploy.sh creates it) sends ``Microsoft.Storage.BlobCreated`` events
whose subject matches its filter to the function's webhook (``/runtime/webhooks/eventgrid?functionName=...``). Azurite
has no Event Grid, so devhost polls instead and publishes the same event: one per blob version (receipts by ETag, as a
rewrite is a new ``BlobCreated``). Each event is then delivered the way Event Grid delivers it (``Deliveries``), with
the policy and schedule of MicrosoftDocs/azure-docs ``articles/event-grid/delivery-and-retry.md`` (ms.date
02/09/2026), for trapbatch's subscription: endpoint type webhook, no dead-letter destination, the default retry
policy (``DeliveryPolicy``):

* "Event Grid waits 30 seconds for a response after delivering a message. After 30 seconds, if the endpoint doesn't
  respond, Event Grid queues the message for retry": a try without an answer by then counts as failed, and the next
  try follows on the schedule while the first one still runs (its late answer is not counted; Event Grid may, "on a
  best effort basis", drop the retry on an answer within 3 minutes, so devhost's redelivery is the stricter case).
* The tries after a failure follow "10 seconds, 30 seconds, 1 minute, 5 minutes, 10 minutes, 30 minutes, 1 hour, 3
  hours, 6 hours, every 12 hours up to 24 hours", each after the failure before it (the docs' own example counts so:
  with max delivery attempts 10 and a 30-minute time to live, "a maximum of 6 delivery attempts happen"), and not
  sooner than the answer's own minimum ("408 Request Timeout: retry after 2 minutes or more", "503 Service
  Unavailable: retry after 30 seconds or more"). Event Grid adds "a small randomization" and may skip retries to an
  unhealthy endpoint; devhost keeps the schedule exactly.
* Only 200-204 are deliveries; the answers Event Grid does not retry for a webhook endpoint (400, 401, 403, 413)
  drop the event at once, as does the last of "Maximum number of attempts" (default 30) and a due try past the
  "Event time-to-live" (default 1440 minutes; "checked ONLY at the next scheduled delivery attempt"). Without a
  dead-letter destination (trapbatch sets none) the event is then dropped; devhost logs an error naming the blob.

What devhost's delivery answers is the Event Grid extension's answer (azure-sdk-for-net
``Microsoft.Azure.WebJobs.Extensions.EventGrid`` ``Config/EventGridExtensionConfigProvider.cs``
``ProcessEventsAsync``): 202 once the function has returned, 500 when it raised (or ran past host.json
``functionTimeout``). devhost calls the function itself, so the other answers (a bad key's 401, a malformed body's
400) cannot come from it; the policy still classifies every answer as Event Grid does.

``--event-grid-retry-scale`` scales the schedule and the time to live (not the 30-s wait for an answer, which is about
how fast the function answers) for tests and demos; 1.0, the default, is Event Grid's. An event's tries, the time of
its next one and when it was published are kept in Azurite beside the receipts (``devhost.store``), so a devhost that
restarts goes on with the schedule: it neither forgets a pending retry nor runs it at once. The publish time is when
devhost first saw the blob version (a marker written while devhost was stopped is published when it starts).

A subscription is given to devhost as ``function=subject-ends-with``, and devhost supports the one form trapbatch uses:
``/blobs/<name>``, a blob called ``<name>`` at the top of any container. Such blobs are found with one prefix listing
per container (``name_starts_with``), never by listing whole image containers.

Event shape (Event Grid schema; docs: event-grid/event-schema-blob-storage.md)::

    {"topic": "/subscriptions/.../storageAccounts/<account>", "subject":
     "/blobServices/default/containers/<container>/blobs/<name>", "eventType": "Microsoft.Storage.BlobCreated",
     "id": ..., "dataVersion": "", "data": {"api": "PutBlob", "url": ..., "eTag": ..., "blobType": "BlockBlob", ...}}
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Protocol

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost.functions import AppIndex, EventGridTrigger
from devhost.hostjson import HostConfig
from devhost.store import Store
from devhost.triggers import invoke

logger = logging.getLogger("devhost.eventgrid")
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
RECEIPT_PREFIX = "eventgrid:"  # receipts share the blob-trigger receipts table, under their own function key

# Event Grid's delivery policy (articles/event-grid/delivery-and-retry.md; module docstring).
RESPONSE_WAIT_S = 30.0  # "Event Grid waits 30 seconds for a response after delivering a message"
RETRY_STEPS_S = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0)
LATER_RETRY_STEP_S = 12 * 3600.0  # "Every 12 hours up to 24 hours"
MAX_DELIVERY_ATTEMPTS = 30  # "Maximum number of attempts ... The default value is 30"
EVENT_TTL_S = 1440 * 60.0  # "Event time-to-live (TTL) ... The default value is 1440 minutes"
DELIVERED = frozenset(range(200, 205))  # "only the following HTTP response codes as successful deliveries: 200-204"
NOT_RETRIED = frozenset({400, 401, 403, 413})  # "errors for which Event Grid doesn't retry delivery": Webhook
RETRY_AT_LEAST_S = {408: 120.0, 503: 30.0}  # "Retry after 2 minutes or more", "Retry after 30 seconds or more"
FUNCTION_RETURNED, FUNCTION_FAILED = 202, 500  # the Event Grid extension's answers (ProcessEventsAsync)
STOP_WAIT_S = 10.0  # what a stop gives the poller and the running tries together (the blob poller gets as long)


@dataclass(frozen=True)
class Subscription:
    function: str
    blob_name: str  # a top-level blob name: the subscription's subjectEndsWith is "/blobs/<blob_name>"

    @classmethod
    def parse(cls, text: str) -> "Subscription":
        function, sep, ends_with = text.partition("=")
        name = ends_with.removeprefix("/blobs/")
        if not sep or not function or not ends_with.startswith("/blobs/") or not name or "/" in name:
            raise ValueError(f"event grid subscription {text!r}: expected function=/blobs/<name> (a blob name at the "
                             "top of a container), e.g. container_ready=/blobs/trapbatch-ready.json")
        return cls(function, name)


@dataclass(frozen=True)
class DeliveryPolicy:
    """An event subscription's retry policy and Event Grid's schedule, ``scale`` times as long (``scale`` < 1: tests
    and demos see the whole schedule in seconds; the wait for an answer is not scaled)."""

    scale: float = 1.0
    max_attempts: int = MAX_DELIVERY_ATTEMPTS
    ttl_s: float = EVENT_TTL_S
    response_wait_s: float = RESPONSE_WAIT_S

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"event grid retry scale {self.scale!r}: expected a positive number (1.0: Event Grid's "
                             "own schedule; 0.01: a hundred times faster)")
        if not 1 <= self.max_attempts <= MAX_DELIVERY_ATTEMPTS:
            raise ValueError(f"max delivery attempts {self.max_attempts}: Event Grid takes 1 to 30")

    def retry_delay_s(self, failed_try: int, status: int | None) -> float:
        """Seconds from the failure of try ``failed_try`` (1 for the first delivery) to the next try; ``status``:
        the answer (None: no answer within ``response_wait_s``)."""
        step = RETRY_STEPS_S[failed_try - 1] if failed_try <= len(RETRY_STEPS_S) else LATER_RETRY_STEP_S
        return max(step, RETRY_AT_LEAST_S.get(status or 0, 0.0)) * self.scale

    def expired(self, published_at: float, now: float) -> bool:
        """Whether the event's time to live has passed (Event Grid checks it only when a try is due)."""
        return now - published_at >= self.ttl_s * self.scale


class DeliveryStore(Protocol):
    """Where pending deliveries are kept across restarts (``devhost.store.Store``: Azurite)."""

    def save_delivery(self, function: str, blob_name: str, etag: str, fields: dict[str, Any]) -> None: ...

    def delete_delivery(self, function: str, blob_name: str, etag: str) -> None: ...

    def deliveries(self, function: str) -> list[dict[str, Any]]: ...


@dataclass
class PendingEvent:
    """One published event on its way to one subscription's function."""

    function: str
    blob: str  # "<container>/<blob name>", for logs and keys
    etag: str
    event: dict[str, Any]  # Event Grid schema JSON, the same on every try (same id), as Event Grid redelivers it
    published_at: float  # wall clock (time.time): survives a restart
    tries: int = 0  # tries started
    next_try_at: float = 0.0  # wall clock
    started_at: float | None = field(default=None, compare=False)  # the latest try, while it has no answer counted

    def fields(self) -> dict[str, Any]:
        return {"Event": json.dumps(self.event), "PublishedAt": self.published_at, "Tries": self.tries,
                "NextTryAt": self.next_try_at}

    @classmethod
    def from_fields(cls, function: str, entity: Mapping[str, Any]) -> "PendingEvent":
        return cls(function, str(entity["BlobName"]), str(entity["Etag"]), json.loads(entity["Event"]),
                   float(entity["PublishedAt"]), int(entity["Tries"]), float(entity["NextTryAt"]))


class Deliveries:
    """Event Grid's side of a subscription: each published event is tried, and tried again on the schedule of
    ``policy`` until an answer in 200-204, an answer Event Grid does not retry, its last attempt, or a due try past
    its time to live (module docstring).

    ``deliver(function, event)`` posts one try and returns the HTTP answer (an exception counts as the extension's
    500, its answer when the function raised); it runs in a thread of its own per try (``spawn``), so a try that has
    not answered after ``policy.response_wait_s`` is counted failed and the next try starts on time while it still
    runs. ``step`` does the bookkeeping on the caller's thread (the poller's) and says
    how long until it has more to do; ``wake`` is set when an answer arrives. Every change of a pending event is
    written to ``store`` before the try it schedules starts, so a restart (``load``) resumes the schedule. At a stop,
    ``close`` starts no further try and ``drain`` lets the running ones answer and counts them, as a host that shuts
    down lets its running functions finish: a try cut off would leave its thread blocked on a stopped loop and its
    delivery pending, to be made again by the next start."""

    def __init__(self, store: DeliveryStore, deliver: Callable[[str, dict[str, Any]], int],
                 policy: DeliveryPolicy | None = None, clock: Callable[[], float] = time.time,
                 spawn: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.store, self.deliver, self.policy, self.clock = store, deliver, policy or DeliveryPolicy(), clock
        self.spawn = spawn or _daemon_thread
        self.wake = threading.Event()
        self.pending: dict[tuple[str, str, str], PendingEvent] = {}
        self._answers: queue.SimpleQueue[tuple[tuple[str, str, str], int, int, float, str]] = queue.SimpleQueue()
        self._idle = threading.Condition()  # notified when a try ends (``drain``)
        self._running = 0  # tries started and not yet answered, late ones included
        self._closed = False  # devhost is stopping: no try starts any more

    def load(self, functions: list[str]) -> None:
        """Take up the pending events a previous devhost left (their tries and next try time as it wrote them)."""
        for function in functions:
            for entity in self.store.deliveries(function):
                event = PendingEvent.from_fields(function, entity)
                self.pending[(function, event.blob, event.etag)] = event
                logger.info("event grid trigger %s: event for %s resumed after %d tries, next try at %s", function,
                            event.blob, event.tries, _iso(event.next_try_at))

    def known(self, function: str, blob: str, etag: str) -> bool:
        return (function, blob, etag) in self.pending

    def publish(self, function: str, blob: str, etag: str, event: dict[str, Any]) -> None:
        """A new event for ``function``: its first try is due now."""
        now = self.clock()
        pending = PendingEvent(function, blob, etag, event, published_at=now, next_try_at=now)
        self.store.save_delivery(function, blob, etag, pending.fields())
        self.pending[(function, blob, etag)] = pending

    def step(self) -> float | None:
        """Count the answers that came, the tries that timed out, start the tries that are due; returns the seconds
        until the next of these can happen without an answer (None: nothing pending)."""
        self._count_answers()
        now = self.clock()
        for event in list(self.pending.values()):
            if event.started_at is not None and now >= event.started_at + self.policy.response_wait_s:
                self._failed(event, None, event.started_at + self.policy.response_wait_s,
                             f"no answer within {self.policy.response_wait_s:g} s (the try still runs)")
        for event in list(self.pending.values()):
            if event.started_at is None and now >= event.next_try_at and not self._closed:
                if self.policy.expired(event.published_at, now):
                    self._drop(event, f"its time to live ({self.policy.ttl_s * self.policy.scale:g} s) has passed "
                                      f"after {event.tries} tries")
                else:
                    self._start(event, now)
        times = [e.started_at + self.policy.response_wait_s if e.started_at is not None else e.next_try_at
                 for e in self.pending.values()]
        return max(0.0, min(times) - self.clock()) if times else None

    def close(self) -> None:
        """Start no try from now on (devhost is stopping); what is pending stays in ``store`` for the next start."""
        with self._idle:
            self._closed = True

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the running tries to end, then count their answers (a delivered event is
        forgotten, a failed one rescheduled in ``store``); False when some still run. Call after ``close``, where no
        ``step`` runs at the same time."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            running = self._running
        self._count_answers()
        return running == 0

    def _count_answers(self) -> None:
        while True:
            try:
                key, attempt, status, at, why = self._answers.get_nowait()
            except queue.Empty:
                return
            self._answered(key, attempt, status, at, why)

    def _start(self, event: PendingEvent, now: float) -> None:
        # Written before the try (and before it counts here, so a failed write makes no phantom try): a devhost
        # stopped while it runs resumes as Event Grid does with a try that got no answer (the next try follows the
        # 30-s wait and the step), never at once and never not at all.
        tries = event.tries + 1
        next_try_at = now + self.policy.response_wait_s + self.policy.retry_delay_s(tries, None)
        self.store.save_delivery(event.function, event.blob, event.etag,
                                 {**event.fields(), "Tries": tries, "NextTryAt": next_try_at})
        event.tries, event.started_at, event.next_try_at = tries, now, next_try_at
        key, attempt, payload = (event.function, event.blob, event.etag), event.tries, dict(event.event)

        def run() -> None:
            try:
                try:
                    status, why = self.deliver(event.function, payload), ""
                except BaseException as exc:  # the endpoint's failure, whatever it is, is a failed try
                    status, why = FUNCTION_FAILED, f"{type(exc).__name__}: {exc}"
                self._answers.put((key, attempt, status, self.clock(), why))
                self.wake.set()
            finally:
                self._ended()

        with self._idle:
            self._running += 1
        try:
            self.spawn(run)
        except BaseException:
            self._ended()
            raise

    def _ended(self) -> None:
        with self._idle:
            self._running -= 1
            self._idle.notify_all()

    def _answered(self, key: tuple[str, str, str], attempt: int, status: int, at: float, why: str) -> None:
        event = self.pending.get(key)
        if event is None or event.tries != attempt or event.started_at is None:
            logger.info("event grid trigger %s: try %d for %s answered %d after Event Grid stopped waiting for it: "
                        "not counted", key[0], attempt, key[1], status)
            return
        event.started_at = None
        if status in DELIVERED:
            self._forget(event)
            if event.tries > 1:
                logger.info("event grid trigger %s: event for %s delivered at try %d", event.function, event.blob,
                            event.tries)
        elif status in NOT_RETRIED:
            self._drop(event, f"try {event.tries} answered {status}, which Event Grid does not retry")
        else:
            self._failed(event, status, at, f"answered {status}" + (f" ({why})" if why else ""))

    def _failed(self, event: PendingEvent, status: int | None, at: float, why: str) -> None:
        event.started_at = None
        if event.tries >= self.policy.max_attempts:
            self._drop(event, f"try {event.tries} of {self.policy.max_attempts} (max delivery attempts) failed: {why}")
            return
        delay = self.policy.retry_delay_s(event.tries, status)
        event.next_try_at = at + delay
        self.store.save_delivery(event.function, event.blob, event.etag, event.fields())
        logger.warning("event grid trigger %s failed for %s (try %d): %s; next try in %g s (at %s)", event.function,
                       event.blob, event.tries, why, delay, _iso(event.next_try_at))

    def _drop(self, event: PendingEvent, why: str) -> None:
        self._forget(event)
        name = event.blob.partition("/")[2]
        logger.error("event grid trigger %s: event for %s (version %s) dropped, as Event Grid drops it without a "
                     "dead-letter destination: %s. Nothing will deliver it again: write %s again (a new version is "
                     "a new BlobCreated event), after fixing what made the function fail", event.function,
                     event.blob, event.etag, why, name)

    def _forget(self, event: PendingEvent) -> None:
        self.pending.pop((event.function, event.blob, event.etag), None)
        self.store.delete_delivery(event.function, event.blob, event.etag)


def _daemon_thread(run: Callable[[], None]) -> None:
    threading.Thread(target=run, name="devhost-eventgrid-delivery", daemon=True).start()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")


def blob_created_event(account: str, container: str, name: str, url: str, etag: str, length: int,
                       content_type: str) -> dict[str, Any]:
    """The ``BlobCreated`` event of one blob version, in the Event Grid schema as delivered."""
    return {"id": str(uuid.uuid4()),
            "topic": f"/subscriptions/devhost/resourceGroups/devhost/providers/Microsoft.Storage/storageAccounts/"
                     f"{account}",
            "subject": f"/blobServices/default/containers/{container}/blobs/{name}", "eventType": BLOB_CREATED,
            "eventTime": datetime.now(timezone.utc).isoformat(), "dataVersion": "",
            "data": {"api": "PutBlob", "contentType": content_type, "contentLength": length, "blobType": "BlockBlob",
                     "url": url, "eTag": etag, "sequencer": etag}}


def function_event(event: Mapping[str, Any]) -> func.EventGridEvent:
    """What the function's ``func.EventGridEvent`` argument holds for ``event``."""
    return func.EventGridEvent(id=event["id"], data=event["data"], topic=event["topic"], subject=event["subject"],
                               event_type=event["eventType"], event_time=datetime.fromisoformat(event["eventTime"]),
                               data_version=event["dataVersion"])


class EventGridPoller:
    def __init__(self, index: AppIndex, store: Store, blobs: BlobServiceClient, subscriptions: list[Subscription],
                 poll_s: float, loop: asyncio.AbstractEventLoop, client_binding: Callable[[], str],
                 config: HostConfig | None = None, policy: DeliveryPolicy | None = None) -> None:
        by_name: Mapping[str, EventGridTrigger] = {t.name: t for t in index.event_grid_triggers}
        unknown = [s.function for s in subscriptions if s.function not in by_name]
        if unknown:
            raise ValueError(f"event grid subscription for {unknown}: the app has no Event Grid trigger of that name "
                             f"(it has {sorted(by_name) or 'none'})")
        self.pairs = [(s, by_name[s.function]) for s in subscriptions]
        for trigger in index.event_grid_triggers:
            if trigger.name not in {s.function for s in subscriptions}:
                logger.warning("event grid trigger %s has no subscription: devhost delivers it no events (pass "
                               "--event-grid %s=/blobs/<name>)", trigger.name, trigger.name)
        self.store, self.blobs, self.poll_s, self.loop = store, blobs, poll_s, loop
        self.client_binding = client_binding
        self.config = config or HostConfig()
        self.triggers = by_name
        self.deliveries = Deliveries(store, self._deliver, policy)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.pairs:
            return
        self.deliveries.load(sorted({trigger.name for _, trigger in self.pairs}))
        self._thread = threading.Thread(target=self._run, name="devhost-eventgrid", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scanning and starting tries, and give the tries still running the rest of 10 s to answer (counted,
        so a delivered event is not made again by the next start); the host stops the loop they run on next."""
        deadline = time.monotonic() + STOP_WAIT_S
        self._stop.set()
        self.deliveries.close()
        self.deliveries.wake.set()
        if not self._thread:
            return
        self._thread.join(timeout=STOP_WAIT_S)
        if self._thread.is_alive():  # stuck in a scan (Azurite slow): its step may still run, so count nothing here
            return
        try:
            if not self.deliveries.drain(max(0.0, deadline - time.monotonic())):
                logger.warning("event grid: a delivery still runs at the stop; it stays pending in Azurite and is "
                               "made again after the next start (at least once, as Event Grid)")
        except Exception:  # Azurite unreachable at the stop: the deliveries stay pending, made again after a start
            logger.exception("event grid: counting the last answers failed")

    def _run(self) -> None:
        next_scan = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_scan:
                try:
                    self.scan_once()
                except Exception:
                    logger.exception("event grid: scan failed")
                next_scan = time.monotonic() + self.poll_s
            self.deliveries.wake.clear()
            try:
                due = self.deliveries.step()
            except Exception:  # Azurite unreachable for a moment: the schedule goes on at the next pass
                logger.exception("event grid: delivery bookkeeping failed")
                due = self.poll_s
            wait = next_scan - time.monotonic()
            self.deliveries.wake.wait(max(0.0, min(wait, due) if due is not None else wait))

    def scan_once(self) -> None:
        for container in self.blobs.list_containers():
            for subscription, trigger in self.pairs:
                if self._stop.is_set():
                    return
                try:
                    found = [b for b in self.blobs.get_container_client(container.name).list_blobs(
                        name_starts_with=subscription.blob_name) if b.name == subscription.blob_name]
                except ResourceNotFoundError:
                    continue  # deleted while we looked
                for props in found:
                    self._publish(trigger, container.name, props)

    def _publish(self, trigger: EventGridTrigger, container: str, props: Any) -> None:
        """Publish the ``BlobCreated`` event of a blob version seen for the first time (its receipt: once per
        version, as Event Grid publishes one per write); ``Deliveries`` takes it from there."""
        etag = str(props.etag)
        key = f"{container}/{props.name}"
        if self.store.has_receipt(RECEIPT_PREFIX + trigger.name, key, etag):
            return
        if not self.deliveries.known(trigger.name, key, etag):  # else published before a restart, receipt unwritten
            blob = self.blobs.get_blob_client(container, props.name)
            event = blob_created_event(self.blobs.account_name or "devstoreaccount1", container, props.name,
                                       blob.url, etag, int(props.size or 0),
                                       str(getattr(props.content_settings, "content_type", "") or ""))
            self.deliveries.publish(trigger.name, key, etag, event)
        self.store.add_receipt(RECEIPT_PREFIX + trigger.name, key, etag)

    def _deliver(self, function: str, event: dict[str, Any]) -> int:
        """One try, answered as the Event Grid extension answers its webhook: 202 when the function returned; when it
        raised or ran past ``functionTimeout`` the exception goes to ``Deliveries``, which counts it as the
        extension's 500 (``ProcessEventsAsync``)."""
        trigger = self.triggers[function]
        kwargs: dict[str, Any] = {trigger.arg_name: function_event(event)}
        if trigger.client_arg:
            kwargs[trigger.client_arg] = self.client_binding()
        logger.info("event grid trigger %s fired for %s", trigger.name, event["subject"])
        invoke(trigger.name, trigger.fn, kwargs, self.loop, self.config.function_timeout_s)
        return FUNCTION_RETURNED
