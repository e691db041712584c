"""Start on arrival: a marker blob written at the top of an image container starts a task over that container.

Why: the design's "blob-drop trigger for new containers". Uploads of millions of images take hours and arrive in any
order, so "a new image arrived" cannot start anything; the uploader (a person, AzCopy in a script, a camera station's
sync job) writes ``trapbatch-ready.json`` last to say "all here". The marker may be empty or hold request fields
(``prefix``, ``model``, ``images_per_shard``, ``request_name``, ...); its container is the task's container.

How it arrives: in Azure, an Event Grid subscription on the storage account's system topic sends ``BlobCreated``
events whose subject ends with ``/blobs/trapbatch-ready.json`` (a marker at the top of a container; created by
infra/hooks/postdeploy.sh) to this Event Grid trigger; Flex Consumption supports blob triggers only through Event
Grid anyway, and a blob trigger cannot watch every container. devhost delivers the same events by polling
(``devhost/event_grid.py``). Event Grid delivers at least once, and a marker rewritten with the same content gives
the same request, hence the same task id: nothing new starts while that task runs or after it completed.

The answer goes beside the marker: ``trapbatch-ready.task.json`` (the task id) or ``trapbatch-ready.json.error.json``
(why it was refused, and what to do). Markers in trapbatch's own containers are ignored.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import azure.durable_functions as df
import azure.functions as func

from adapters import clients
from adapters.blobs import BlobStore
from adapters.storage_errors import MARKER_HOST_GONE_AFTER_S, after_dns_asked_again, host_missing_busy
from api.starters import (BUSY_TRY_WAIT_S, DROP_TRIGGER_RETRIES, EVENT_GRID_RETRIES, Retries, answered_version, busy,
                          caller_writable_json, drop_origin, read_request_blob, refusal_of, start_task,
                          withdraw_overtaken_refusal)
from core.deadline import Deadline
from core.errors import RequestInvalid, TrapbatchError
from core.failures import failures_without_secrets
from core.requests import MAX_BODY_BYTES, parse_json_body
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()
BLOB_CREATED = "Microsoft.Storage.BlobCreated"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# The wall clock the count of a missing host across Event Grid's deliveries reads (``_missing_across_deliveries``):
# deliveries may run in different processes, so the time is written into the refusal file. Tests replace it.
_now: Callable[[], datetime] = _utc_now

# Event Grid "waits 30 seconds for a response after delivering a message. After 30 seconds, if the endpoint hasn't
# responded, the message is queued for retry" (MicrosoftDocs articles/event-grid/delivery-and-retry.md; devhost row
# 17). A marker's delivery answers within MARKER_DELIVERY_DEADLINE_S in all (``_Delivery``): its storage and Key Vault
# calls end by then (short timeouts and back-offs, ``gpu_batch.storage_refs.deadline_storage_options``), where the
# SDKs' own took ~84 s of back-offs for a 503 and minutes for a request that hangs, so Event Grid stopped waiting,
# delivered again while the first delivery still ran, and a refusal the first wrote late was overwritten by the next
# one's busy answer. The last MARKER_ANSWER_S of it are kept for writing the answer (a busy refusal too): the reads
# and checks end MARKER_ANSWER_S before. The 10 s left of Event Grid's 30 are for what no timeout bounds (a DNS lookup,
# a credential's token request, the durable client's calls: ``deadline_storage_options``) and for the time before the
# function starts, which the 20 s do not count and Event Grid's 30 do (a cold start, the host's queue): a delivery
# that times out so is delivered again, and the receipts by ETag keep it from starting a second task.
MARKER_DELIVERY_DEADLINE_S = 20.0
MARKER_ANSWER_S = 5.0
# The delivery's clock (monotonic seconds): tests give a fake one that moves when the SDKs' back-offs sleep.
_clock: Callable[[], float] = time.monotonic


@dataclasses.dataclass(frozen=True, slots=True)
class _Delivery:
    """One Event Grid delivery of a marker: its deadlines and the clients of trapbatch's own account bound by them,
    built for this delivery only (the activities' shared client keeps the SDK's policy)."""

    checks: Deadline  # the marker's reads and the start's checks end by then
    reads: BlobStore  # trapbatch's own account, bound by ``checks``
    answers: BlobStore  # ... bound by the whole deadline: the answer (receipt, refusal) is written after the checks

    @classmethod
    def begin(cls, s: Settings) -> _Delivery:
        whole = Deadline.within(MARKER_DELIVERY_DEADLINE_S, _clock)
        checks = Deadline(whole.at - MARKER_ANSWER_S, _clock)
        return cls(checks, clients.store(s, checks), clients.store(s, whole))


def marker_request(container: str, raw: bytes) -> dict[str, object]:
    """The task request a marker stands for: its fields (if any) over the container it sits in."""
    if len(raw) > MAX_BODY_BYTES:
        raise RequestInvalid(f"{layout.READY_MARKER} is {len(raw)} bytes", f"keep it under {MAX_BODY_BYTES} bytes: it "
                             "holds request fields, not data")
    fields = parse_json_body(raw) if raw.strip() else {}
    if not isinstance(fields, dict):
        raise RequestInvalid(f"{layout.READY_MARKER} must hold a JSON object of request fields (or nothing)",
                             'e.g. {"prefix": "2024/", "model": "MDV5A"}')
    if fields.get("container", container) != container:
        raise RequestInvalid(f"{layout.READY_MARKER} in container {container!r} names container "
                             f"{fields['container']!r}", "a marker starts a task over its own container: drop "
                             "'container', or put the marker in that container")
    return {**fields, "container": container}


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
@failures_without_secrets
async def container_ready(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """A ``BlobCreated`` event for a marker starts the task over its container (see the module docstring).

    A marker that names an ``image_list`` is handed to the drop trigger instead (``trapbatch-ready.<container>.json``
    in ``incoming``): its start reads the whole list (up to ``TRAPBATCH_IMAGE_LIST_MAX_BYTES``, tens of seconds at
    millions of rows), and this function runs inside Event Grid's delivery, which "waits 30 seconds for a response"
    and then retries, and after failed deliveries may "delay all subsequent retries and new deliveries for some
    time - in some cases up to several hours" (MicrosoftDocs articles/event-grid/delivery-and-retry.md); the
    extension answers the delivery only when the function has returned (EventGridExtensionConfigProvider). The blob
    trigger queues its events and runs the function from the host's own queue, under ``functionTimeout``.

    Storage SDK errors propagate: the platform redelivers the event (a transient failure must not become a refusal).
    A refusal only because a service was busy (``api.starters.busy``) is written, saying Event Grid delivers the event
    again (``api.starters.EVENT_GRID_RETRIES`` cites how), and then raised so that it does. Every storage and Key
    Vault call ends within ``MARKER_DELIVERY_DEADLINE_S`` (``_Delivery``); one it cut short is busy or propagates,
    as a service that did not answer, never a refusal that stays."""
    container = layout.ready_marker_container(event.subject)
    if event.event_type != BLOB_CREATED or container is None:
        return
    s = clients.settings()
    if _own(container, s):
        return
    delivery = _Delivery.begin(s)
    marker = None
    try:
        marker = await _read_marker(delivery.reads, container)
        if marker is None:
            return  # deleted since the event was sent, or answered already: nothing to start
        request = marker_request(container, marker[0])
    except TrapbatchError as exc:
        await _refuse(delivery.answers, container, exc, marker[1] if marker else "", EVENT_GRID_RETRIES)
        if busy(exc):
            raise  # Event Grid delivers the event again
        return
    if request.get("image_list"):
        await asyncio.to_thread(delivery.answers.write_json, layout.INCOMING_CONTAINER,
                                layout.marker_handoff_blob(container), {"marker_container": container})
        logger.info("marker in container %s names an image list: handed to the drop trigger", container)
        return
    await start_from_marker(client, container, (request, marker[1]), s, delivery)


async def _read_marker(store: BlobStore, container: str) -> tuple[bytes, str] | None:
    """The marker's bytes and ETag (``api.starters.read_request_blob``); None when it is gone, or when this version
    was answered already: Event Grid delivers at least once and retries a failed delivery for up to 24 h
    (articles/event-grid/delivery-and-retry.md), and a ``rerun`` marker must not run again for it."""
    marker = await asyncio.to_thread(read_request_blob, store, container, layout.READY_MARKER)
    if marker is None:
        return None
    receipt = await asyncio.to_thread(caller_writable_json, store, container, layout.ready_receipt_blob())
    if answered_version(receipt, marker[1]):
        logger.info("marker in container %s: this version was answered already (a redelivered event)", container)
        return None
    return marker


async def start_from_marker(client: df.DurableOrchestrationClient, container: str,
                            marker: tuple[dict[str, object], str] | None, s: Settings,
                            delivery: _Delivery | None = None) -> None:
    """Start the task a marker stands for and answer beside it: ``trapbatch-ready.task.json``, or
    ``trapbatch-ready.json.error.json`` when refused. ``marker``: its request and ETag, already read (None: read it
    here, as the drop trigger does for a handed-over marker, so what starts is the marker's own request, never the
    hand-over's). The marker's version is the task's ``origin``: a redelivery starts nothing (``start_task``).

    A refusal only because a service was busy (``api.starters.busy``) is written and then raised, so that the trigger
    that called runs again: Event Grid for ``container_ready`` (which spaces its tries itself), the drop trigger for a
    handed-over marker, after ``api.starters.BUSY_TRY_WAIT_S`` (that trigger's tries come one right after another,
    ``DROP_TRIGGER_RETRIES``).

    A refusal because DNS said a host does not exist (``missing_host``: the images' account, its vault, trapbatch's
    own account) stays once written, and on Azure an existing account's host can say so for a while: the drop
    trigger asks DNS again for up to two minutes first (``adapters.storage_errors.after_dns_asked_again``); Event
    Grid's delivery has no such time, so its deliveries count the grace (``_missing_across_deliveries``).

    ``delivery``: Event Grid's (``container_ready``), whose calls end by its deadlines; None (the drop trigger, a blob
    trigger under ``functionTimeout``): the storage SDK's own policy, as before."""
    if _own(container, s):
        return
    retried_by = DROP_TRIGGER_RETRIES if marker is None else EVENT_GRID_RETRIES
    store = delivery.reads if delivery else clients.store(s)
    answers = delivery.answers if delivery else store
    etag = ""
    try:
        if marker is None:
            read = await _read_marker(store, container)
            if read is None:
                logger.warning("marker in container %s was handed over but is gone or answered: nothing to start",
                               container)
                return
            marker = marker_request(container, read[0]), read[1]
        request, etag = marker
        started, task_id = await start_task(client, request, s,
                                            origin=drop_origin(container, layout.READY_MARKER, etag),
                                            deadline=delivery.checks if delivery else None)
    except TrapbatchError as refused:
        exc, missing = refused, dict[str, str]()
        if retried_by is DROP_TRIGGER_RETRIES:  # a refusal written here stays: a missing host is asked about again
            exc = await asyncio.to_thread(after_dns_asked_again, refused)  # (not in Event Grid's 30-s delivery)
        elif refused.missing_host:  # Event Grid's deliveries count the grace instead
            previous = await asyncio.to_thread(caller_writable_json, answers, container, layout.ready_error_blob())
            exc, missing = _missing_across_deliveries(refused, previous, etag, _now(), s.marker_host_gone_after_s)
        await _refuse(answers, container, exc, etag, retried_by, missing)
        if busy(exc):
            if retried_by is DROP_TRIGGER_RETRIES:  # its next try comes at once: wait first, as task_dropped does
                await asyncio.sleep(BUSY_TRY_WAIT_S)
            raise exc  # the trigger that called runs again (retried_by)
        return
    await asyncio.to_thread(answers.write_json, container, layout.ready_receipt_blob(),
                            {"id": task_id, "started": started, "status_path": f"/api/tasks/{task_id}",
                             "request_etag": etag})
    # an earlier version's refusal, now answered by this one: left there, it said the corrected marker was refused
    await asyncio.to_thread(answers.delete_if_exists, container, layout.ready_error_blob())
    logger.info("marker in container %s: task %s %s", container, task_id, "started" if started else "already known")


def _missing_across_deliveries(refused: TrapbatchError, previous: Any, etag: str, now: datetime,
                               grace_s: float = MARKER_HOST_GONE_AFTER_S) -> tuple[TrapbatchError, dict[str, str]]:
    """What an Event Grid delivery of marker version ``etag`` answers for ``refused``, a refusal because DNS said
    ``refused.missing_host`` does not exist: ``refused`` itself (the refusal, as before) once the marker's refusal
    file (``previous``) says a delivery of the same version found the same host missing ``grace_s`` or more before
    ``now`` (``MARKER_HOST_GONE_AFTER_S``; only tests shorten it, ``Settings.marker_host_gone_after_s``); else busy
    (``host_missing_busy``), with the fields that record since when (``missing_host``, ``host_missing_since``) for
    the refusal file, which the next delivery reads.

    Why: a refusal beside a marker stays, and on Azure an existing account's host can say "no such name" for up to
    ~120 s; the drop trigger waits that out in one run (``after_dns_asked_again``), but Event Grid waits 30 s for a
    delivery's answer, so the grace is counted across its deliveries (``MARKER_HOST_GONE_AFTER_S`` cites their
    schedule). A delivery that finds the host again starts the task, and the start deletes the file. The file sits
    where callers write: a ``host_missing_since`` that is no time, or one after ``now``, starts the count anew."""
    host = str(refused.missing_host or "")
    first = _host_missing_since(previous, etag, host)
    if first is not None and first <= now and (now - first).total_seconds() >= grace_s:
        return refused, {}
    first = first if first is not None and first <= now else now
    until = first + timedelta(seconds=grace_s)
    said = (f"{refused.message}; Event Grid delivers the marker's event again, and a delivery from "
            f"{until.isoformat()} on that still finds its host name {host} missing refuses the marker (on Azure an "
            "existing account's host can be missing from DNS for a moment)")
    return host_missing_busy(refused, said), {"missing_host": host, "host_missing_since": first.isoformat()}


def _host_missing_since(previous: Any, etag: str, host: str) -> datetime | None:
    """When a delivery of marker version ``etag`` first found ``host`` missing from DNS, as its refusal file
    (``previous``) says; None when it says nothing of the kind (another version, another host, no such field, or
    one that is not an aware ISO time)."""
    if not (isinstance(previous, dict) and etag and previous.get("request_etag") == etag
            and previous.get("missing_host") == host and isinstance(previous.get("host_missing_since"), str)):
        return None
    try:
        since = datetime.fromisoformat(previous["host_missing_since"])
    except ValueError:
        return None
    return since if since.tzinfo is not None else None


def _own(container: str, s: Settings) -> bool:
    """Markers in trapbatch's own containers are ignored."""
    if container in {s.container, s.web_container, layout.INCOMING_CONTAINER}:
        logger.warning("marker in trapbatch's own container %s ignored", container)
        return True
    return False


async def _refuse(store: BlobStore, container: str, exc: TrapbatchError, etag: str, retried_by: Retries,
                  extra: dict[str, str] | None = None) -> None:
    """Write the marker's refusal, naming the version it refuses (``etag``, when read) and, for a busy failure, who
    tries again (``retried_by``: ``api.starters.refusal_of``), with ``extra`` fields (``_missing_across_deliveries``'
    count), and withdraw it when a newer marker replaced this one meanwhile
    (``api.starters.withdraw_overtaken_refusal``)."""
    previous = (await asyncio.to_thread(caller_writable_json, store, container, layout.ready_error_blob())
                if busy(exc) else None)  # its count of busy tries goes on (refusal_of)
    await asyncio.to_thread(store.write_json, container, layout.ready_error_blob(),
                            {**refusal_of(exc, etag, retried_by, "marker", previous, _now()), **(extra or {})})
    logger.warning("marker in container %s %s: %s", container,
                   "not started yet, a service was busy (the trigger runs again)" if busy(exc) else "refused",
                   exc.message)
    await asyncio.to_thread(withdraw_overtaken_refusal, store, container, layout.READY_MARKER,
                            layout.ready_error_blob(), etag)
