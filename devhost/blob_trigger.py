"""Blob triggers: poll the watched containers and fire each blob version once, retrying failures as the host does.

A receipt (function, blob name, ETag) is written to the Receipts table once a blob version has been handled, so a
restart does not fire old blobs again, and a blob that is overwritten (new ETag) fires again, as with the Functions
host's blob-trigger receipts. At-least-once: a crash during the function fires it again after the restart.

A failing invocation (an exception, or running past host.json ``functionTimeout``) is tried again at once, up to
``extensions.blobs.poisonBlobThreshold`` tries in all (default 5); after the last failure a message goes to the
storage queue ``webjobs-blobtrigger-poison`` and the blob version is not tried again. The message is the storage
extension's ``BlobTriggerMessage`` JSON, base64-encoded as the extension's queue clients write it
(azure-sdk-for-net ``Microsoft.Azure.WebJobs.Extensions.Storage.Blobs``: ``Listeners/BlobTriggerMessage.cs``,
``QueueServiceClientProvider.cs``; docs: functions-bindings-storage-blob-trigger.md#poison-blobs):

    {"Type": "BlobTrigger", "FunctionId": "Host.Functions.<function>", "BlobType": "BlockBlob",
     "ContainerName": "<container>", "BlobName": "<blob>", "ETag": "\"0x8D...\""}
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from typing import Any, Callable

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost.functions import AppIndex, BlobTrigger
from devhost.hostjson import HostConfig
from devhost.store import Store
from devhost.triggers import invoke, try_at_once

logger = logging.getLogger("devhost.blob")
POISON_QUEUE = "webjobs-blobtrigger-poison"  # HostQueueNames.BlobTriggerPoisonQueue


def poison_message(function_name: str, container: str, blob_name: str, etag: str, blob_type: str = "BlockBlob") -> str:
    """``BlobTriggerMessage`` as the extension serializes it (property order included). ``ETag`` is Azure.Core's
    ``ETag.ToString()`` of the blob's properties: the header value, quotes included (a listing's ETag has none)."""
    if not etag.startswith('"'):
        etag = f'"{etag}"'
    return json.dumps({"Type": "BlobTrigger", "FunctionId": f"Host.Functions.{function_name}", "BlobType": blob_type,
                       "ContainerName": container, "BlobName": blob_name, "ETag": etag}, separators=(",", ":"))


class BlobPoller:
    def __init__(self, index: AppIndex, store: Store, blobs: BlobServiceClient, poll_s: float,
                 loop: asyncio.AbstractEventLoop, client_binding: Callable[[], str], connection_string: str,
                 config: HostConfig | None = None) -> None:
        self.index = index
        self.store = store
        self.blobs = blobs
        self.poll_s = poll_s
        self.loop = loop
        self.client_binding = client_binding
        self.config = config or HostConfig()
        self.connection_string = connection_string
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.index.blob_triggers:
            return
        for container in sorted({trigger.container for trigger in self.index.blob_triggers}):
            self._ensure_container(container)
        self._thread = threading.Thread(target=self._run, name="devhost-blobs", daemon=True)
        self._thread.start()

    def _ensure_container(self, container: str) -> None:
        """The container a blob trigger watches exists, as a deployment makes it (infra/main.bicep creates
        ``incoming``): a request dropped into it locally starts its task instead of going nowhere."""
        try:
            self.blobs.create_container(container)
            logger.info("created container %s, which blob trigger(s) watch", container)
        except ResourceExistsError:
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for trigger in self.index.blob_triggers:
                try:
                    self._scan(trigger)
                except ResourceNotFoundError:
                    pass  # the container does not exist yet
                except Exception:
                    logger.exception("blob trigger %s: scan failed", trigger.name)
            self._stop.wait(self.poll_s)

    def _scan(self, trigger: BlobTrigger) -> None:
        container = self.blobs.get_container_client(trigger.container)
        for props in container.list_blobs():
            if self._stop.is_set():
                return
            if not trigger.name_pattern.match(props.name):
                continue
            etag = str(props.etag)
            if self.store.has_receipt(trigger.name, props.name, etag):
                continue
            blob_type = str(getattr(props.blob_type, "value", props.blob_type) or "BlockBlob")
            done = try_at_once(logger, f"blob trigger {trigger.name}", props.name, self.config.poison_blob_threshold,
                               self._stop, lambda: self._invoke(trigger, container, props.name))
            if done is None:
                return
            if not done:
                self._poison(trigger, props.name, etag, blob_type)
            self.store.add_receipt(trigger.name, props.name, etag)

    def _invoke(self, trigger: BlobTrigger, container: Any, name: str) -> None:
        data = container.get_blob_client(name).download_blob().readall()
        stream = func.blob.InputStream(data=data, name=f"{trigger.container}/{name}",
                                       uri=container.get_blob_client(name).url, length=len(data))
        kwargs: dict[str, Any] = {trigger.arg_name: stream}
        if trigger.client_arg:
            kwargs[trigger.client_arg] = self.client_binding()
        logger.info("blob trigger %s fired for %s/%s", trigger.name, trigger.container, name)
        invoke(trigger.name, trigger.fn, kwargs, self.loop, self.config.function_timeout_s)

    def _poison(self, trigger: BlobTrigger, name: str, etag: str, blob_type: str) -> None:
        text = poison_message(trigger.name, trigger.container, name, etag, blob_type)
        queue = QueueClient.from_connection_string(self.connection_string, POISON_QUEUE)
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
        queue.send_message(base64.b64encode(text.encode("utf-8")).decode("ascii"))
        logger.error("blob trigger %s failed %d times for %s/%s: message written to queue %s", trigger.name,
                     self.config.poison_blob_threshold, trigger.container, name, POISON_QUEUE)
