"""Every activity and orchestrator of function_app.py raises without secrets (``core.failures``), and the published
worker indexes the wrapped functions as it indexed them before (sync or async, the same binding types).

Why: the worker records a raised exception's message and ``traceback.format_exception`` text, causes included
(azure-functions-runtime ``utils/tracing.py``), and the Durable extension keeps them in the History table's
TaskFailed (``Reason``, ``Details``) or the failed instance's output (``core/failures.py`` cites the code).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from api.edge import http_edge
from core.failures import failures_without_secrets
from devhost import worker_indexing


def _app_functions() -> list[Any]:
    """``app.get_functions()`` once per app (a second call refuses every name as a duplicate), kept where
    ``devhost.functions.index_app`` keeps it."""
    import function_app
    app: Any = function_app.app
    if getattr(app, "_devhost_functions", None) is None:
        app._devhost_functions = app.get_functions()
    return list(app._devhost_functions)


def _own_function(function: Any) -> Callable[..., Any]:
    """The function the app wrote: under the Durable SDK's orchestrator handle (``orchestrator_function``) and
    client middleware (``functools.wraps``), and ``core.failures``' wrapper."""
    fn = function.get_user_function()
    fn = getattr(fn, "orchestrator_function", fn)
    return inspect.unwrap(fn)


async def _coroutine() -> None: ...


def _plain() -> None: ...


def _generator() -> Any:
    yield


# The code of core.failures' wrappers (a coroutine, a plain and a generator function) and of api.edge's catch: a
# wrapper is known by its code, not by MARK, which functools.wraps copies onto every wrapper around it.
_WITHOUT_SECRETS = {failures_without_secrets(fn).__code__ for fn in (_coroutine, _plain, _generator)}
_EDGE = http_edge(_coroutine).__wrapped__.__code__  # type: ignore[attr-defined]


def _chain(function: Any) -> list[Callable[..., Any]]:
    """The app's function and each one it wraps (``__wrapped__``), from the one the worker calls to the app's own:
    under the Durable SDK's orchestrator handle (``orchestrator_function``) and client middleware."""
    fn = function.get_user_function()
    fn = getattr(fn, "orchestrator_function", fn)
    chain = [fn]
    while getattr(chain[-1], "__wrapped__", None) is not None:
        chain.append(chain[-1].__wrapped__)
    return chain


def test_every_function_of_every_trigger_type_raises_without_secrets() -> None:
    """Activities and orchestrators (their failure kept in the task hub) and the HTTP, blob and Event Grid triggers:
    the worker sends the host the same ``serialize_exception`` of any failed invocation, whatever its trigger
    (azure-functions-runtime ``handle_event.invocation_request``), which the host logs ("Executed 'Functions.<name>'
    (Failed, ...)" with the message and stack) into Application Insights. An HTTP handler's wrapper is outside
    ``http_edge``'s catch, so an exception still gets the answer it names (a stand-in would be a 500)."""
    functions = _app_functions()
    by_type: dict[str, int] = {}
    unwrapped, inside_the_edge = [], []
    for f in functions:
        kind = f.get_trigger().type
        by_type[kind] = by_type.get(kind, 0) + 1
        codes = [getattr(fn, "__code__", None) for fn in _chain(f)]
        wrapped = [n for n, code in enumerate(codes) if code in _WITHOUT_SECRETS]
        if not wrapped:
            unwrapped.append(f.get_function_name())
        elif kind == "httpTrigger" and (_EDGE not in codes or wrapped[0] > codes.index(_EDGE)):
            inside_the_edge.append(f.get_function_name())
    assert by_type.get("activityTrigger", 0) > 40 and by_type.get("orchestrationTrigger", 0) >= 7, by_type
    assert {"httpTrigger", "blobTrigger", "eventGridTrigger"} <= set(by_type), by_type
    assert not unwrapped, (f"{unwrapped} raise their exceptions as they are: put @failures_without_secrets "
                           "(core.failures) directly above their def, under the trigger's decorators (an HTTP "
                           "handler: @http_edge, which applies it)")
    assert not inside_the_edge, f"{inside_the_edge}: use @http_edge, not @failures_without_secrets under it"


def test_the_worker_indexes_the_wrapped_functions_as_the_app_wrote_them() -> None:
    """``Registry.add_indexed_function``: ``is_async`` from ``inspect.iscoroutinefunction`` (a wrapper that turned a
    coroutine function into a plain one would hand the worker a coroutine as the activity's result), the binding
    types from ``typing.get_type_hints``."""
    functions, _loader, meta = worker_indexing._worker_modules()
    meta.load_binding_registry()
    registry = functions.Registry()
    protos = worker_indexing.worker_protos()
    checked = 0
    for f in _app_functions():  # every trigger type: HTTP, blob and Event Grid functions are wrapped too
        info = registry.add_indexed_function(f, protos)
        own = _own_function(f)
        assert info.is_async == inspect.iscoroutinefunction(own), f.get_function_name()
        hints = typing.get_type_hints(own)
        # an orchestrator's trigger is bound to the Durable SDK's handle (orchestrator_function), not the app's def
        durable_handle = f.get_trigger().type == "orchestrationTrigger"
        for name, param in info.input_types.items():
            if name in hints and hints[name] is not typing.Any and f.get_trigger().name == name and not durable_handle:
                assert param.pytype == hints[name], (f.get_function_name(), name)
        checked += 1
    assert checked > 60


def test_what_the_worker_sends_the_host_of_a_wrapped_failure_holds_no_secret() -> None:
    """The published worker's own ``serialize_exception`` (message and stack trace) over an exception with a SAS in
    its message and in its cause; the control: the same function unwrapped sends the SAS."""
    from azure_functions_runtime.utils.tracing import serialize_exception

    protos = SimpleNamespace(RpcException=lambda message, stack_trace: (message, stack_trace))

    def list_part(payload: Any) -> None:
        try:
            raise OSError("Max retries exceeded with url: /c?restype=container&sv=2022&sig=WORKERSECRET")
        except OSError as cause:
            raise ConnectionError("AccountKey=KEYSECRET; Authorization: Basic dXNlcjpXT1JLRVI=") from cause

    for fn, leaks in ((list_part, True), (failures_without_secrets(list_part), False)):
        with pytest.raises(Exception) as raised:
            fn({})
        message, stack = serialize_exception(raised.value, protos)
        sent = message + "\n" + stack
        assert message.startswith("ConnectionError: ")
        assert all(("WORKERSECRET" in sent, "KEYSECRET" in sent, "dXNlcjpXT1JLRVI" in sent)) is leaks, sent
    assert "OSError: Max retries exceeded with url: /c?[redacted]" in stack, stack


SAS = "https://acct.blob.core.windows.net/c/b.jpg?sv=2022-11-02&sig=EDGESECRET"


def _sent(exc: BaseException) -> str:
    """What the worker sends the host of a failed invocation (its own ``serialize_exception``)."""
    from azure_functions_runtime.utils.tracing import serialize_exception

    protos = SimpleNamespace(RpcException=lambda message, stack_trace: (message, stack_trace))
    message, stack = serialize_exception(exc, protos)
    return message + "\n" + stack


def _request() -> Any:
    import azure.functions as func

    return func.HttpRequest("GET", "http://localhost/api/tasks", body=b"")


def test_an_http_handler_keeps_its_answers_and_logs_a_failure_without_secrets(
        caplog: pytest.LogCaptureFixture) -> None:
    """A trapbatch error whose text holds a SAS answers its own status (no stand-in's 500); any other failure
    answers 500 and logs its traceback without the SAS. The worker's log handler sends ``self.format(record)``, the
    traceback included (azure-functions-python-worker ``dispatcher.py``, ``AsyncLoggingHandler.emit``): before,
    ``logger.exception`` sent the SAS into Application Insights."""
    from core.errors import ContainerNotFound

    async def missing(req: Any) -> Any:
        raise ContainerNotFound(f"no container at {SAS}", "check the URL")

    async def broken(req: Any) -> Any:
        try:
            raise OSError(f"Max retries exceeded with url: {SAS}")
        except OSError as cause:
            raise RuntimeError(f"listing failed: {SAS}") from cause

    answer = asyncio.run(http_edge(missing)(_request()))
    assert answer.status_code == 404 and "EDGESECRET" in answer.get_body().decode()  # the caller's own URL
    caplog.set_level(logging.ERROR, logger="api.edge")
    answer = asyncio.run(http_edge(broken)(_request()))
    assert answer.status_code == 500 and "EDGESECRET" not in answer.get_body().decode()
    [record] = [r for r in caplog.records if r.name == "api.edge"]
    logged = logging.Formatter().format(record)
    assert "broken failed" in logged and "RuntimeError" in logged and "Max retries exceeded" in logged, logged
    assert "EDGESECRET" not in logged, logged


def test_a_failure_while_an_http_handler_answers_leaves_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in ``http_edge``'s own answer escapes with the handler's exception as its context, which the worker
    sends in the stack (``traceback.format_exception``): cleaned by the wrapper outside the catch."""
    import api.edge as edge

    async def broken(req: Any) -> Any:
        raise OSError(f"Max retries exceeded with url: {SAS}")

    def cannot_answer(exc: BaseException) -> Any:
        raise ValueError("the answer could not be built")

    monkeypatch.setattr(edge, "error_response", cannot_answer)
    for fn, leaks in ((edge.http_edge(broken).__wrapped__, True), (edge.http_edge(broken), False)):  # type: ignore
        with pytest.raises(Exception) as raised:
            asyncio.run(fn(_request()))
        sent = _sent(raised.value)
        assert "the answer could not be built" in sent and ("EDGESECRET" in sent) is leaks, sent


@pytest.mark.parametrize("name, argument", [
    ("task_dropped", SimpleNamespace(name="incoming/request.json")),
    ("container_ready", SimpleNamespace(event_type="Microsoft.Storage.BlobCreated",
                                        subject="/blobServices/default/containers/cams/blobs/trapbatch-ready.json")),
])
def test_a_failed_blob_or_event_grid_trigger_sends_the_host_no_secret(
        monkeypatch: pytest.MonkeyPatch, name: str, argument: Any) -> None:
    """The app's own blob and Event Grid functions (under the Durable client middleware), their settings failing with
    a SAS in the text: what the worker sends the host has none; the control, the function under the wrapper, sends
    it."""
    from adapters import clients

    def settings() -> Any:
        raise ConnectionError(f"Max retries exceeded with url: {SAS}")

    monkeypatch.setattr(clients, "settings", settings)
    [function] = [f for f in _app_functions() if f.get_function_name() == name]
    wrapper = next(fn for fn in _chain(function) if getattr(fn, "__code__", None) in _WITHOUT_SECRETS)
    for fn, leaks in ((wrapper.__wrapped__, True), (wrapper, False)):  # type: ignore[attr-defined]
        with pytest.raises(Exception) as raised:
            asyncio.run(fn(argument, None))
        sent = _sent(raised.value)
        assert "Max retries exceeded" in sent and ("EDGESECRET" in sent) is leaks, sent
