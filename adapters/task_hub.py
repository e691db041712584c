"""Reading the Durable task hub through the SDK's client, as every caller should: a hub that could not be read is
``TaskHubUnavailable`` (503, Retry-After), never "no such instance". Here, not in api/, because activities read
statuses too (``activities.expiry``), and activities may not import the HTTP layer (tests/unit/test_layering.py)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from core.errors import TaskHubUnavailable

logger = logging.getLogger(__name__)

_HUB_HINT = ("retry in a minute: the task hub's storage is busy or failing (throttling at scale passes); if it "
             "persists, check the storage account's health in the Azure portal and the function log")


async def read_status(client: Any, instance_id: str, **options: Any) -> Any:
    """``client.get_status(instance_id, **options)``, but a task hub that could not be read raises
    ``TaskHubUnavailable`` (503, Retry-After) instead of reading as "no such instance".

    Why: when the task hub's storage throttles or fails, the extension's management API answers 500 with
    ``{"Message": "Something went wrong while processing your request", "ExceptionMessage", "ExceptionType",
    "StackTrace"}`` (azure-functions-durable-extension ``HttpApiHandler.HandleRequestAsync``, its catch-all;
    ``HttpRequestMessageExtensions.CreateErrorResponse``), and the Python SDK's ``get_status`` takes a 500 for "the
    instance failed" and returns ``DurableOrchestrationStatus.from_json`` of that error body: a status with no
    runtime status, exactly what a missing instance gives. The app then answered 404 "no task" for a running task
    (a CLI's ``status --wait`` stopped on it), and ``POST /api/tasks`` of a completed task started it over (the
    extension lets a Completed instance id be started again): hours of GPU for one storage hiccup. A connection to
    the management API that failed or timed out (aiohttp) is the same: the hub could not be read, not a bug."""
    try:
        status = await client.get_status(instance_id, **options)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise TaskHubUnavailable(f"the task hub could not be read for {instance_id} ({type(exc).__name__})",
                                 _HUB_HINT) from exc
    if getattr(status, "runtime_status", None) is None and getattr(status, "Message", None) is not None:
        # the error body's fields are set as attributes (DurableOrchestrationStatus.__init__'s **kwargs); the
        # exception's message is not shown (it is the platform's), its type is logged
        logger.warning("task hub status of %s answered an error: %s (%s)", instance_id, getattr(status, "Message"),
                       getattr(status, "ExceptionType", "?"))
        raise TaskHubUnavailable(f"the task hub could not be read for {instance_id} (the Durable management API "
                                 "answered an error)", _HUB_HINT)
    return status
