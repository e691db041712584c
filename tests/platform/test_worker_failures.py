"""Every activity and orchestrator of function_app.py raises without secrets (``core.failures``), and the published
worker indexes the wrapped functions as it indexed them before (sync or async, the same binding types).

Why: the worker records a raised exception's message and ``traceback.format_exception`` text, causes included
(azure-functions-runtime ``utils/tracing.py``), and the Durable extension keeps them in the History table's
TaskFailed (``Reason``, ``Details``) or the failed instance's output (``core/failures.py`` cites the code).
"""
from __future__ import annotations

import inspect
import typing
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from core.failures import MARK, failures_without_secrets
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


def test_every_activity_and_orchestrator_raises_without_secrets() -> None:
    kinds = {"activityTrigger", "orchestrationTrigger"}
    durable = [f for f in _app_functions() if f.get_trigger().type in kinds]
    assert len(durable) > 50  # ~50 activities and 7 orchestrators: the lookup found them
    unwrapped = []
    for f in durable:
        fn = f.get_user_function()
        fn = getattr(fn, "orchestrator_function", fn)
        if not getattr(fn, MARK, False):
            unwrapped.append(f.get_function_name())
    assert not unwrapped, (f"{unwrapped} raise their exceptions as they are: put @failures_without_secrets "
                           "(core.failures) directly above their def, under the trigger's decorators")


def test_the_worker_indexes_the_wrapped_functions_as_the_app_wrote_them() -> None:
    """``Registry.add_indexed_function``: ``is_async`` from ``inspect.iscoroutinefunction`` (a wrapper that turned a
    coroutine function into a plain one would hand the worker a coroutine as the activity's result), the binding
    types from ``typing.get_type_hints``."""
    functions, _loader, meta = worker_indexing._worker_modules()
    meta.load_binding_registry()
    registry = functions.Registry()
    protos = worker_indexing.worker_protos()
    checked = 0
    for f in _app_functions():
        if f.get_trigger().type != "activityTrigger":
            continue
        info = registry.add_indexed_function(f, protos)
        own = _own_function(f)
        assert info.is_async == inspect.iscoroutinefunction(own), f.get_function_name()
        hints = typing.get_type_hints(own)
        for name, param in info.input_types.items():
            if name in hints and hints[name] is not typing.Any and f.get_trigger().name == name:
                assert param.pytype == hints[name], (f.get_function_name(), name)
        checked += 1
    assert checked > 40


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
