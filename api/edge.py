"""The one place exceptions become HTTP answers: ``{"error", "hint"}`` with the status the error names.

Why a decorator: every handler used to catch ``TrapbatchError`` itself, and anything else (a storage hiccup, a bug)
escaped as a bare 500 with the Functions host's own text. ``http_edge`` catches everything at the edge: trapbatch's
errors answer with their status, storage SDK errors go through the one map (``adapters.storage_errors``), and
anything else is logged with its traceback and answered 500 with a hint, never with internals.

The event-loop rule, for every ``async def`` handler in ``api/`` (HTTP, blob drop, Event Grid): nothing blocking runs
on the loop. The Python worker runs ``async def`` functions on its one event loop and only sync functions in its
thread pool (``PYTHON_THREADPOOL_THREAD_COUNT``), so a blocking call in an async function stalls every other
invocation of that worker process, status polls included ("Improve throughput performance of Python apps in Azure
Functions", https://learn.microsoft.com/azure/azure-functions/python-scale-performance-reference, section Async; the
worker's maintainers in Azure/azure-functions-python-worker#236: a blocking request "blocks the entire event loop";
#744 adds the sync pool's setting). devhost does the same (devhost/README.md, fidelity row 12). Storage
(``adapters.blobs.BlobStore``, azure-storage-blob, tables, Key Vault) is synchronous: a handler groups its storage
work into one sync helper and awaits ``asyncio.to_thread(helper, ...)``; the Durable client's calls
(``await client.get_status(...)``) are aiohttp and stay on the loop. ``tests/integration/test_event_loop.py`` checks
that a slow storage call of one request does not hold up another, and that no ``async def`` in ``api/`` calls the
storage helpers directly.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any, Awaitable, Callable, Coroutine, ParamSpec

import azure.functions as func

from adapters.storage_errors import HANDLED, storage_error
from adapters.task_hub import read_status as read_status  # re-exported: the routes read statuses through the edge
from core.errors import InternalError, TaskHubUnavailable, TrapbatchError, without_secrets
from core.failures import failures_without_secrets, without_secrets_raised

logger = logging.getLogger(__name__)
P = ParamSpec("P")


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=1), status_code=status, mimetype="application/json",
                             headers=headers or None)


def error_response(exc: BaseException) -> func.HttpResponse:
    """The answer for any exception: its own status when it is trapbatch's, 500 with a hint otherwise."""
    err = as_trapbatch_error(exc)
    return json_response(err.status_code, err.to_dict(), err.headers)


def as_trapbatch_error(exc: BaseException) -> TrapbatchError:
    if isinstance(exc, TrapbatchError):
        return exc
    if isinstance(exc, HANDLED):
        return storage_error(exc)
    return InternalError(f"internal error ({type(exc).__name__})",
                         "this is a trapbatch bug or an unforeseen failure: retry, and if it persists report it "
                         "with the time of the request (the function log has the details)")


def http_edge(handler: Callable[P, Awaitable[func.HttpResponse]]
              ) -> Callable[P, Coroutine[Any, Any, func.HttpResponse]]:
    """Wrap an HTTP handler so no exception leaves it unanswered. ``functools.wraps`` keeps the signature and the
    annotations the Functions worker binds by.

    Without secrets, as every function of the app (``core.failures``): the traceback a 5xx logs is the exception's
    through ``without_secrets_raised`` (the worker's log handler formats a record with its ``exc_info`` traceback and
    sends that text to the host, which keeps it in Application Insights: azure-functions-python-worker
    ``dispatcher.py``, ``AsyncLoggingHandler.emit`` -> ``Dispatcher.on_logging``), and ``failures_without_secrets``
    wraps the edge itself, outside its catch: an answer stays the one the exception names (a 404 whose text held a
    SAS is no stand-in's 500), and a failure while answering, which the worker records with the handler's exception
    as its context (``serialize_exception``: ``traceback.format_exception``), leaves without secrets."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> func.HttpResponse:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - this is the edge: everything gets an answer
            err = as_trapbatch_error(exc)
            if err.status_code >= 500:
                logger.error("%s failed: %s", handler.__name__, without_secrets(err.message),
                             exc_info=without_secrets_raised(exc))
            return error_response(err)

    return failures_without_secrets(wrapper)


ACTIVE_RUNTIMES = frozenset({"Running", "Pending", "ContinuedAsNew"})


async def start_once(client: Any, orchestrator: str, instance_id: str, payload: Any) -> bool:
    """Start ``orchestrator`` as ``instance_id``; False when another request started it a moment before (the caller
    answers as for one already running: 409, or nothing to do). Why: the follow-up routes check the instance and
    then start it, and the extension refuses to start an id that is running or pending
    (``OverridableExistingInstanceStates`` = NonRunningStates, devhost README row 1): two requests at once, two
    GETs of the results that both start the zip build, got the loser a 500 "trapbatch bug"."""
    try:
        await client.start_new(orchestrator, instance_id, payload)
    except Exception:
        status = await read_status(client, instance_id)
        runtime = getattr(getattr(status, "runtime_status", None), "value", getattr(status, "runtime_status", None))
        if runtime in ACTIVE_RUNTIMES:
            return False
        raise
    return True
