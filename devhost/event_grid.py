"""Event Grid triggers fed with Blob Storage ``BlobCreated`` events, as an Event Grid subscription on the storage
account's system topic would deliver them.

In Azure, an event subscription (infra/hooks/postdeploy.sh creates it) sends ``Microsoft.Storage.BlobCreated`` events
whose subject matches its filter to the function's webhook (``/runtime/webhooks/eventgrid?functionName=...``). Azurite
has no Event Grid, so devhost polls instead and builds the same event: one per blob version (receipts by ETag, as a
rewrite is a new ``BlobCreated``), at least once, retried when the function fails, then dropped with an error log (the
platform retries with back-off for up to 24 h and then drops or dead-letters).

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
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost.functions import AppIndex, EventGridTrigger
from devhost.hostjson import HostConfig
from devhost.store import Store
from devhost.triggers import invoke, try_at_once

logger = logging.getLogger("devhost.eventgrid")
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
RECEIPT_PREFIX = "eventgrid:"  # receipts share the blob-trigger receipts table, under their own function key


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


def blob_created_event(account: str, container: str, name: str, url: str, etag: str, length: int,
                       content_type: str) -> func.EventGridEvent:
    return func.EventGridEvent(
        id=str(uuid.uuid4()), topic=f"/subscriptions/devhost/resourceGroups/devhost/providers/"
                                    f"Microsoft.Storage/storageAccounts/{account}",
        subject=f"/blobServices/default/containers/{container}/blobs/{name}", event_type=BLOB_CREATED,
        event_time=datetime.now(timezone.utc), data_version="",
        data={"api": "PutBlob", "contentType": content_type, "contentLength": length, "blobType": "BlockBlob",
              "url": url, "eTag": etag, "sequencer": etag})


class EventGridPoller:
    def __init__(self, index: AppIndex, store: Store, blobs: BlobServiceClient, subscriptions: list[Subscription],
                 poll_s: float, loop: asyncio.AbstractEventLoop, client_binding: Callable[[], str],
                 config: HostConfig | None = None) -> None:
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.pairs:
            return
        self._thread = threading.Thread(target=self._run, name="devhost-eventgrid", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:
                logger.exception("event grid: scan failed")
            self._stop.wait(self.poll_s)

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
                    self._deliver(trigger, container.name, props)

    def _deliver(self, trigger: EventGridTrigger, container: str, props: Any) -> None:
        etag = str(props.etag)
        key = f"{container}/{props.name}"
        if self.store.has_receipt(RECEIPT_PREFIX + trigger.name, key, etag):
            return
        blob = self.blobs.get_blob_client(container, props.name)
        event = blob_created_event(self.blobs.account_name or "devstoreaccount1", container, props.name, blob.url,
                                   etag, int(props.size or 0),
                                   str(getattr(props.content_settings, "content_type", "") or ""))
        attempts = self.config.poison_blob_threshold
        done = try_at_once(logger, f"event grid trigger {trigger.name}", key, attempts, self._stop,
                           lambda: self._invoke(trigger, event))
        if done is None:
            return
        if not done:
            logger.error("event grid trigger %s failed %d times for %s: event dropped (Azure retries for up to 24 h, "
                         "then drops it or dead-letters it)", trigger.name, attempts, key)
        self.store.add_receipt(RECEIPT_PREFIX + trigger.name, key, etag)

    def _invoke(self, trigger: EventGridTrigger, event: func.EventGridEvent) -> None:
        kwargs: dict[str, Any] = {trigger.arg_name: event}
        if trigger.client_arg:
            kwargs[trigger.client_arg] = self.client_binding()
        logger.info("event grid trigger %s fired for %s", trigger.name, event.subject)
        invoke(trigger.name, trigger.fn, kwargs, self.loop, self.config.function_timeout_s)
