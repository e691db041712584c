"""A drop refused because a service was busy waits a minute before it fails, since the platform's tries come one
right after another; its refusal says so.

Why: the drop trigger's tries are the storage extension's blob-trigger queue releasing the failed message with a
visibility timeout of zero; host.json has no setting that spaces them. Storage extension 5.x builds that queue's
``QueuesOptions`` from ``BlobsOptions`` alone (azure-sdk-for-net
``Microsoft.Azure.WebJobs.Extensions.Storage.Blobs/src/Listeners/SharedBlobQueueListenerFactory.cs``
``BlobsOptionsToQueuesOptions``: batch size, new-batch threshold and ``MaxDequeueCount = PoisonBlobThreshold``), so
``extensions.queues.visibilityTimeout`` does not reach it, and ``QueueProcessor.CompleteProcessingMessageAsync``
releases a failed message with ``QueuesOptions.VisibilityTimeout``, whose default is ``TimeSpan.Zero``
(``Microsoft.Azure.WebJobs.Extensions.Storage.Common/src/Shared/Queues/QueueProcessor.cs``, ``QueuesOptions.cs``;
azure-sdk-for-net#34269: "Since starting v5, the host.json only applies to queue triggers, and not blob triggers").
The Event Grid source puts its events on the same queue (``Config/BlobsExtensionConfigProvider.cs``
``ProcessEventsAsync``). Five quick tries did not outlast a minute's outage, so the trigger waits
``BUSY_TRY_WAIT_S`` before it fails on purpose: the five span five minutes or more.
"""
from __future__ import annotations

from api import starters
from core.errors import SourceBusy


def test_a_busy_drop_refusal_says_when_the_next_try_comes() -> None:
    refusal = starters.refusal_of(SourceBusy("the images' account did not answer", "try later"), '"0x1"',
                                  starters.DROP_TRIGGER_RETRIES)
    assert refusal["hint"].startswith(
        "nothing to do yet: the drop trigger runs again by itself, a minute after each failure (1 of 5 tries failed "
        "so far)"), refusal["hint"]
    assert starters.BUSY_TRY_WAIT_S == 60.0

