"""Blob triggers: poll the watched containers and fire each blob version once.

A receipt (function, blob name, ETag) is written to the Receipts table after the function returns, so a restart does
not fire old blobs again, and a blob that is overwritten (new ETag) fires again, as with the Functions host's
blob-trigger receipts. At-least-once: a crash during the function fires it again after the restart.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost.functions import AppIndex, BlobTrigger
from devhost.store import Store

logger = logging.getLogger("devhost.blob")


class BlobPoller:
    def __init__(self, index: AppIndex, store: Store, blobs: BlobServiceClient, poll_s: float,
                 loop: asyncio.AbstractEventLoop, client_binding: Callable[[], str]) -> None:
        self.index = index
        self.store = store
        self.blobs = blobs
        self.poll_s = poll_s
        self.loop = loop
        self.client_binding = client_binding
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.index.blob_triggers:
            return
        self._thread = threading.Thread(target=self._run, name="devhost-blobs", daemon=True)
        self._thread.start()

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
            data = container.get_blob_client(props.name).download_blob().readall()
            stream = func.blob.InputStream(data=data, name=f"{trigger.container}/{props.name}",
                                           uri=container.get_blob_client(props.name).url, length=len(data))
            kwargs: dict[str, Any] = {trigger.arg_name: stream}
            if trigger.client_arg:
                kwargs[trigger.client_arg] = self.client_binding()
            logger.info("blob trigger %s fired for %s/%s", trigger.name, trigger.container, props.name)
            try:
                result = trigger.fn(**kwargs)
                if asyncio.iscoroutine(result):
                    asyncio.run_coroutine_threadsafe(result, self.loop).result(timeout=300)
            except Exception:
                logger.exception("blob trigger %s failed for %s", trigger.name, props.name)
            self.store.add_receipt(trigger.name, props.name, etag)
