"""``core.failures.failures_without_secrets``: what an activity or orchestrator raises leaves it without secrets, as
the platform records it (message and ``traceback.format_exception``, causes included), its type name and every line
of its message kept for the orchestrations that read them."""
from __future__ import annotations

import asyncio
import inspect
import traceback
import typing
from typing import Any, Generator

import pytest

from core.errors import failure_message
from core.failures import MARK, FailureWithoutSecrets, failures_without_secrets, without_secrets_raised
from orchestrations.retries import failed_type, is_busy

SAS = "sv=2022-11-02&sp=r&sig=RAISEDSECRET%3D"


class ServiceRequestError(Exception):
    """Named as azure-core's, whose text names the request's URL (requests: "Max retries exceeded with url")."""


class HttpResponseError(Exception):
    """Named as azure-core's; the storage SDK's message has the service's error code on a later line."""


def _read_manifest(payload: dict[str, Any]) -> dict[str, Any]:
    try:
        raise ConnectionError(f"HTTPSConnectionPool(host='acct.blob.core.windows.net', port=443): Max retries "
                              f"exceeded with url: /work/m.json?{SAS} (Caused by ConnectTimeoutError())")
    except ConnectionError as cause:
        failure = ServiceRequestError(f"<urllib3 error> url: /work/m.json?{SAS}")
        failure.add_note(f"while reading https://acct.blob.core.windows.net/work/m.json?{SAS}")
        raise failure from cause


def _recorded(exc: BaseException) -> str:
    """What the Python worker sends the host of a raised exception (azure-functions-runtime ``serialize_exception``:
    ``f"{type(exc).__name__}: {exc}"`` and ``traceback.format_exception``)."""
    return f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))


def test_a_failure_naming_a_sas_leaves_as_its_type_name_with_the_sas_removed() -> None:
    with pytest.raises(ServiceRequestError):  # the control: undecorated, the record holds the SAS
        _read_manifest({})
    try:
        _read_manifest({})
    except ServiceRequestError as exc:
        assert "RAISEDSECRET" in _recorded(exc)

    with pytest.raises(FailureWithoutSecrets) as raised:
        failures_without_secrets(_read_manifest)({})
    exc = raised.value
    assert type(exc).__name__ == "ServiceRequestError" and type(exc).__module__ == __name__
    assert str(exc) == "<urllib3 error> url: /work/m.json?[redacted]"
    record = _recorded(exc)
    assert "RAISEDSECRET" not in record and "sp=r" not in record, record
    # the cause stays readable in the record (the note), without its query
    assert "ConnectionError: HTTPSConnectionPool(host='acct.blob.core.windows.net', port=443)" in record, record
    assert "url: /work/m.json?[redacted] (Caused by ConnectTimeoutError())" in record, record
    assert "in _read_manifest\n" in record and "raise failure from cause" in record  # the original's frames
    assert "while reading https://acct.blob.core.windows.net/work/m.json?[redacted]" in record, record  # its note
    assert exc.__cause__ is None and exc.__suppress_context__
    # the Python <= 3.12 worker sends only the frames as the stack (azure_functions_worker utils/tracing.py,
    # extract_tb): the original's, not only the wrapper's
    assert "_read_manifest" in [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


def test_a_failure_without_secrets_leaves_as_it_was() -> None:
    """Type, object and traceback unchanged: most failures hold no secret, and their record keeps every detail."""
    original = ValueError("the container 'cams' does not exist\nErrorCode:ContainerNotFound")

    def fail(payload: dict[str, Any]) -> None:
        raise original

    with pytest.raises(ValueError) as raised:
        failures_without_secrets(fail)({})
    assert raised.value is original
    assert without_secrets_raised(original) is original


def test_the_extension_s_wording_of_a_cleaned_failure_still_says_busy_and_names_the_type() -> None:
    """``orchestrations.retries`` reads the Python type name and a storage error's ``ErrorCode:`` line from the
    extension's "Activity function '<name>' failed: <type>: <message>" (devhost fidelity row 32)."""
    def busy(payload: dict[str, Any]) -> None:
        raise HttpResponseError(f"Operation returned an invalid status 'Server Busy'\nRequestId:1\nTime:now\n"
                                f"ErrorCode:ServerBusy\nContent: <Error><Url>https://a.blob.core.windows.net/c/b?{SAS}"
                                "</Url></Error>")

    with pytest.raises(FailureWithoutSecrets) as raised:
        failures_without_secrets(busy)({})
    reason = Exception(f"Activity function 'merge' failed:  {type(raised.value).__name__}: {raised.value} \n details")
    assert is_busy(reason) and failed_type(reason) == "HttpResponseError"
    assert failure_message(str(reason)) == "Operation returned an invalid status 'Server Busy' (ServerBusy)"
    assert "RAISEDSECRET" not in str(reason)


async def _schedule(payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    if payload.get("fail"):
        raise PermissionError(f"https://kv.vault.azure.net/secrets/x?{SAS} refused")
    return {"scheduled": True}


def _orchestrator(context: dict[str, Any]) -> Generator[Any, Any, str]:
    first = yield "step 1"
    try:
        second = yield f"step 2 after {first}"
    except KeyError as exc:  # a failure thrown in by the SDK, caught by the orchestrator itself
        second = f"caught {exc}"
    if second == "fail":
        raise RuntimeError(f"Activity function 'x' failed:  ServiceRequestError: url: /c/b?{SAS} \n details")
    return f"done: {first}, {second}"


def test_coroutine_and_generator_functions_stay_so_and_are_cleaned_too() -> None:
    """The worker runs a coroutine function on its loop (``inspect.iscoroutinefunction``), the Durable SDK drives an
    orchestrator's generator with ``send`` and ``throw``: both pass through the wrapper."""
    schedule = failures_without_secrets(_schedule)
    assert inspect.iscoroutinefunction(schedule) and getattr(schedule, MARK)
    assert asyncio.run(schedule({})) == {"scheduled": True}
    with pytest.raises(FailureWithoutSecrets) as refused:
        asyncio.run(schedule({"fail": True}))
    assert type(refused.value).__name__ == "PermissionError" and "RAISEDSECRET" not in _recorded(refused.value)

    orchestrator = failures_without_secrets(_orchestrator)
    assert inspect.isgeneratorfunction(orchestrator)
    run = orchestrator({})
    assert next(run) == "step 1" and run.send("a") == "step 2 after a"
    with pytest.raises(StopIteration) as done:
        run.throw(KeyError("k"))
    assert done.value.value == "done: a, caught 'k'"
    run = orchestrator({})
    next(run)
    run.send("a")
    with pytest.raises(FailureWithoutSecrets) as failed:
        run.send("fail")
    assert type(failed.value).__name__ == "RuntimeError"
    assert str(failed.value) == "Activity function 'x' failed:  ServiceRequestError: url: /c/b?[redacted] \n details"


def _annotated(payload: ServiceRequestError, n: int = 1) -> HttpResponseError:
    raise NotImplementedError


def test_what_the_worker_s_indexing_reads_stays_the_function_s() -> None:
    """The worker indexes with ``inspect.signature`` and ``typing.get_type_hints`` (azure-functions-runtime
    ``functions.Registry.add_indexed_function``); string annotations (``from __future__ import annotations``) resolve
    in the function's own module, which ``get_type_hints`` finds through ``__wrapped__``."""
    wrapped = failures_without_secrets(_annotated)
    assert inspect.signature(wrapped) == inspect.signature(_annotated)
    assert typing.get_type_hints(wrapped) == {"payload": ServiceRequestError, "n": int, "return": HttpResponseError}
    assert wrapped.__name__ == "_annotated" and not inspect.iscoroutinefunction(wrapped)
