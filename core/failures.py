"""``failures_without_secrets``: what an activity or orchestrator function raises leaves it without secrets.

Why: the platform keeps a failed function's exception in plain text where anyone who can read the task hub's tables
(or the instance's status) sees it, and an azure-core/requests exception names the request's URL with its SAS query
("Max retries exceeded with url: /c/b?sv=...&sig=...") or quotes a response body holding a key:

* an activity: the Python worker sends ``RpcException(message=f"{type(exc).__name__}: {exc}",
  stack_trace=traceback.format_exception(exc))``, the whole chain of causes included (azure-functions-runtime
  ``utils/tracing.py`` ``serialize_exception`` / ``marshall_exception_trace``; the <= 3.12 worker's
  ``dispatcher.py`` does the same); the host wraps both as ``Result: Failure\\nException: <message>\\nStack: <stack>``
  (azure-functions-host ``Workers/Rpc/MessageExtensions/RpcException.cs``); the Durable extension fails the task
  with Reason ``Activity function '<name>' failed: <message>`` and Details the JSON of that exception, the host's
  RpcException (stack included) as its inner exception (ext ``Listener/TaskActivityShim.cs``,
  ``OutOfProcExceptionHelpers.TryGetExceptionWithFriendlyMessage``, DTFx ``Utils.SerializeCause`` with the
  extension's ``ErrorSerializerSettingsFactory``): the TaskFailed event of the History table;
* an orchestrator: the SDK puts ``str(exc)`` in its state's ``error`` (azure-functions-durable
  ``TaskOrchestrationExecutor.get_orchestrator_state_str``) and the extension fails the instance with
  ``Orchestrator function '<name>' failed: <error>``, Details ``Message: <error>, StackTrace: ...``
  (ext ``Listener/OutOfProcOrchestrationShim.cs`` ``ScheduleDurableTaskEvents``): the instance's output and its
  ExecutionCompleted event, which every status reader sees;
* an HTTP, blob or Event Grid trigger: the worker answers any failed invocation alike, whatever its trigger
  (azure-functions-runtime ``handle_event.invocation_request``: ``serialize_exception``, as above; the <= 3.12
  worker's ``dispatcher._handle__invocation_request`` too), and the host logs it with its "Executed
  'Functions.<name>' (Failed, ...)" line, message and stack, into Application Insights. An HTTP handler's own
  catch (``api.edge.http_edge``) logs a 5xx's traceback, which the worker's log handler formats into the text it
  sends (``AsyncLoggingHandler.emit``), so that catch logs it through ``without_secrets_raised`` as well.

So the exception that leaves the function is the one raised when nothing of that text holds a secret (type, message
and traceback as they were), else a stand-in of the same type *name* (what the extension's wording, and so
``orchestrations.retries.is_busy``/``failed_type`` and ``core.errors.failure_message``, read) whose message is the
original's through ``core.errors.without_secrets`` (every line kept: a storage error's ``ErrorCode:`` line decides a
busy retry), with the original's frames (file, line, code: no values) and as notes the original's notes and the text
of its chained causes, all through the same: the worker records notes in the stack text, so a cause stays readable
there without its secrets. Raised ``from None``: the original chain itself is not recorded. (The Python <= 3.12
worker inside the host image, ``azure_functions_worker`` ``utils/tracing.py`` at 7e6acf3, sent only the frames
(``extract_tb``) as the stack, no message, cause or note; the message went all the same.)

What the worker's indexing sees stays the function's own (``functools.wraps``: signature, annotations through
``__wrapped__``, name), and a coroutine function stays one, a generator function too (the worker picks sync or async
with ``inspect.iscoroutinefunction``; the orchestrator SDK drives a generator). Put it directly above ``def``, under
``@bp.activity_trigger`` / ``@bp.orchestration_trigger`` / ``@bp.blob_trigger`` / ``@bp.event_grid_trigger`` /
``@bp.durable_client_input``. An HTTP handler gets it from ``@http_edge`` (``api.edge``), outside the edge's catch:
under it, a trapbatch error whose text held a secret would reach the edge as a stand-in, answered 500 instead of
its own status (tests/platform/test_worker_failures.py checks every function of every trigger type).
"""
from __future__ import annotations

import functools
import inspect
import traceback
from typing import Any, Callable, Generator, TypeVar

from core.errors import without_secrets

F = TypeVar("F", bound=Callable[..., Any])
MARK = "_trapbatch_failures_without_secrets"


class FailureWithoutSecrets(Exception):
    """Base of the stand-ins: a raised exception whose text held a secret, as its type name and cleaned text."""


_STAND_INS: dict[tuple[str, str], type[FailureWithoutSecrets]] = {}


def _stand_in_type(kind: type[BaseException]) -> type[FailureWithoutSecrets]:
    """A subclass of ``FailureWithoutSecrets`` named as ``kind`` (module and qualified name too, as a traceback prints
    it), one per type. Not a subclass of ``kind``: its constructor may want more than a message (``UnicodeError``,
    an SDK error's response), and nothing catches the stand-in by type, only the platform reads it."""
    key = (kind.__module__, kind.__qualname__)
    made = _STAND_INS.get(key)
    if made is None:
        made = type(kind.__name__, (FailureWithoutSecrets,), {"__module__": kind.__module__,
                                                              "__qualname__": kind.__qualname__,
                                                              "__doc__": FailureWithoutSecrets.__doc__})
        _STAND_INS[key] = made
    return made


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__: the worker words it as its own message then
        return ""


def without_secrets_raised(exc: BaseException) -> BaseException:
    """``exc`` itself when what the platform records of it (message and ``traceback.format_exception``, causes
    included) holds no secret, else its stand-in (the module docstring)."""
    recorded = "".join(traceback.format_exception(exc))
    message = _text(exc)
    clean_message = without_secrets(message)
    clean_recorded = without_secrets(recorded)
    if clean_message == message and clean_recorded == recorded:
        return exc
    stand_in = _stand_in_type(type(exc))(clean_message).with_traceback(exc.__traceback__)
    for note in getattr(exc, "__notes__", None) or ():
        stand_in.add_note(without_secrets(str(note)))
    chain = exc.__cause__ if exc.__cause__ is not None else None if exc.__suppress_context__ else exc.__context__
    if chain is not None:
        how = "It was raised from" if exc.__cause__ is not None else "It was raised while handling"
        stand_in.add_note(f"{how} (secrets removed):\n"
                          + without_secrets("".join(traceback.format_exception(chain))).rstrip())
    return stand_in


def failures_without_secrets(fn: F) -> F:
    """``fn`` (a function, coroutine function or generator function) whose raised exceptions leave it through
    ``without_secrets_raised``."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                clean = without_secrets_raised(exc)
                if clean is exc:
                    raise
                raise clean from None
        wrapper: Callable[..., Any] = run_async
    elif inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def run_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as exc:
                clean = without_secrets_raised(exc)
                if clean is exc:
                    raise
                raise clean from None
        wrapper = run_generator
    else:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                clean = without_secrets_raised(exc)
                if clean is exc:
                    raise
                raise clean from None
        wrapper = run
    setattr(wrapper, MARK, True)
    return wrapper  # type: ignore[return-value]
