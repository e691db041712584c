"""The one storage error map, fed every exception class azure-core defines, and the HTTP edge's catch-all."""
from __future__ import annotations

import asyncio
import inspect
import json
import types
from typing import Any

import azure.core.exceptions as ax
import azure.functions as func
import pytest

from adapters.storage_errors import HANDLED, storage_error, storage_errors
from api.edge import http_edge
from core.errors import (InternalError, RequestInvalid, StorageAccessDenied, StorageConflict, StorageError,
                         StorageNotFound, StorageUnavailable, TrapbatchError)

# Every exception class azure-core exports: a new one in a future azure-core fails test_every_class_is_mapped.
SDK_EXCEPTIONS = sorted((cls for _, cls in inspect.getmembers(ax, inspect.isclass)
                         if issubclass(cls, Exception) and cls.__module__.startswith("azure.core")),
                        key=lambda cls: cls.__name__)
EXPECTED: dict[str, tuple[type[StorageError], int]] = {
    "ResourceNotFoundError": (StorageNotFound, 404),
    "ResourceExistsError": (StorageConflict, 409),
    "ResourceModifiedError": (StorageConflict, 409),
    "ResourceNotModifiedError": (StorageConflict, 409),
    "ClientAuthenticationError": (StorageAccessDenied, 502),
    "IncompleteReadError": (StorageUnavailable, 503),
    "ServiceRequestError": (StorageUnavailable, 503),
    "ServiceRequestTimeoutError": (StorageUnavailable, 503),
    "ServiceResponseError": (StorageUnavailable, 503),
    "ServiceResponseTimeoutError": (StorageUnavailable, 503),
}


def _make(cls: type[Exception]) -> Exception:
    url = "https://acct.blob.core.windows.net/c/b?sv=1&sig=SECRET"
    try:
        return cls(f"boom {url}")
    except (TypeError, AttributeError):  # the stream errors take the response they were raised for
        response = types.SimpleNamespace(request=f"GET {url}", reason="Bad", status_code=400, headers={},
                                         text=lambda: '{"error": {"code": "Bad", "message": "x"}}')
        return cls(response)


def test_every_class_is_mapped() -> None:
    names = {cls.__name__ for cls in SDK_EXCEPTIONS}
    assert {"AzureError", "HttpResponseError", "ResourceNotFoundError", "DeserializationError"} <= names
    for cls in SDK_EXCEPTIONS:
        assert issubclass(cls, HANDLED), f"{cls.__name__} has no row in adapters.storage_errors"


@pytest.mark.parametrize("cls", SDK_EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_each_sdk_exception_becomes_a_storage_error_with_a_hint(cls: type[Exception]) -> None:
    err = storage_error(_make(cls), "reading results")
    kind, status = EXPECTED.get(cls.__name__, (StorageError, 502))
    assert type(err) is kind and err.status_code == status
    assert err.message.startswith("reading results: ") and cls.__name__ in err.message
    assert err.hint and "SECRET" not in str(err)  # never the request URL: it may carry a SAS


@pytest.mark.parametrize("status, kind, code", [
    (401, StorageAccessDenied, 502), (403, StorageAccessDenied, 502), (404, StorageNotFound, 404),
    (409, StorageConflict, 409), (412, StorageConflict, 409), (429, StorageUnavailable, 503),
    (500, StorageUnavailable, 503), (503, StorageUnavailable, 503), (400, StorageError, 502),
    (408, StorageUnavailable, 503), (502, StorageUnavailable, 503), (504, StorageUnavailable, 503),
    (501, StorageError, 502),
])
def test_a_plain_http_response_error_is_judged_by_its_status(status: int, kind: type[StorageError], code: int) -> None:
    exc = ax.HttpResponseError(message="x")
    exc.status_code = status
    err = storage_error(exc)
    assert type(err) is kind and err.status_code == code


def test_the_context_manager_translates_and_chains() -> None:
    with pytest.raises(StorageNotFound) as info:
        with storage_errors("reading the manifest"):
            raise ax.ResourceNotFoundError("gone")
    assert isinstance(info.value.__cause__, ax.ResourceNotFoundError)
    with pytest.raises(KeyError):  # not a storage exception: untouched
        with storage_errors():
            raise KeyError("x")


def _call(exc: BaseException) -> tuple[int, dict[str, Any]]:
    @http_edge
    async def handler(req: func.HttpRequest) -> func.HttpResponse:
        raise exc

    response = asyncio.run(handler(func.HttpRequest("GET", "http://h/api/tasks", body=b"")))
    return response.status_code, json.loads(response.get_body())


@pytest.mark.parametrize("cls", SDK_EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_the_http_edge_answers_every_sdk_exception_with_error_and_hint(cls: type[Exception]) -> None:
    status, body = _call(_make(cls))
    assert status == EXPECTED.get(cls.__name__, (StorageError, 502))[1]
    assert set(body) == {"error", "hint"} and body["hint"] and "SECRET" not in json.dumps(body)


def test_the_http_edge_answers_trapbatch_errors_with_their_status_and_bugs_with_500() -> None:
    assert _call(RequestInvalid("bad field", "fix it")) == (400, {"error": "bad field", "hint": "fix it"})
    status, body = _call(ZeroDivisionError("secret internals"))
    assert status == InternalError.status_code == 500
    assert "ZeroDivisionError" in body["error"] and "secret internals" not in json.dumps(body) and body["hint"]


def test_the_edge_keeps_what_the_functions_worker_binds_by() -> None:
    async def handler(req: func.HttpRequest, client: str) -> func.HttpResponse:
        raise AssertionError

    wrapped = http_edge(handler)
    assert inspect.signature(wrapped) == inspect.signature(handler)
    assert wrapped.__name__ == "handler" and inspect.iscoroutinefunction(wrapped)
    assert issubclass(StorageError, TrapbatchError)


def test_a_follow_up_started_by_another_request_a_moment_before_is_not_a_500() -> None:
    """The follow-up routes check their instance, then start it; the extension refuses an id that is running or
    pending, so the loser of two requests at once (two GETs that both start the results zip) got a 500."""
    import asyncio
    from enum import Enum
    from types import SimpleNamespace

    from api.edge import start_once

    class Runtime(Enum):
        Running = "Running"
        Failed = "Failed"

    class Client:
        def __init__(self, refuse: bool, runtime: str) -> None:
            self.refuse, self.runtime, self.started = refuse, runtime, []  # type: ignore[var-annotated]

        async def start_new(self, name: str, instance_id: str, payload: Any) -> str:
            if self.refuse:
                raise RuntimeError("An instance with ID 'x' already exists.")
            self.started.append(instance_id)
            return instance_id

        async def get_status(self, instance_id: str) -> Any:
            return SimpleNamespace(runtime_status=Runtime(self.runtime))

    assert asyncio.run(start_once(Client(False, "Failed"), "o", "x", {})) is True
    assert asyncio.run(start_once(Client(True, "Running"), "o", "x", {})) is False
    with pytest.raises(RuntimeError, match="already exists"):  # refused for another reason: not hidden
        asyncio.run(start_once(Client(True, "Failed"), "o", "x", {}))


def test_a_storage_sdk_failure_read_by_a_person_names_the_services_error_code() -> None:
    """The storage SDK's first line ("Operation returned an invalid status ''") names no error; its code is on the
    next line. A task failed by one showed only that first line."""
    from core.errors import failure_message

    text = ("Activity function 'merge_part' failed:  ResourceNotFoundError: Operation returned an invalid status "
            "'The specified container does not exist.'\nErrorCode:ContainerNotFound\nContent: <?xml ...> \n stack")
    assert failure_message(text) == ("Operation returned an invalid status 'The specified container does not "
                                     "exist.' (ContainerNotFound)")
    assert failure_message("Activity function 'x' failed:  ValueError: bad\nErrorCode:Other") == "bad"


@pytest.mark.parametrize("own", [True, False])
@pytest.mark.parametrize("failure", [ax.ServiceRequestError("connection timed out"),
                                     ax.HttpResponseError("server busy", response=None)])
def test_a_busy_answer_from_the_account_the_images_are_read_from_names_that_account(failure: Exception,
                                                                                     own: bool) -> None:
    """A request without source_account_url reads its images from trapbatch's own account (``OWN_ACCOUNT``): when that
    account did not answer or was busy, the hint named "the images' storage account", which the request did not name,
    instead of trapbatch's own account and its setting. The type stays ``SourceBusy``, which the orchestrations judge
    (``orchestrations.retries.is_busy``)."""
    from adapters.storage_errors import OWN_ACCOUNT, SOURCE_ACCOUNT, source_error
    from core.errors import SourceBusy

    if isinstance(failure, ax.HttpResponseError):
        failure.status_code = 503
    busy = source_error(failure, "cannot read list.csv", "grant a role", "acct.blob.core.windows.net",
                        OWN_ACCOUNT if own else SOURCE_ACCOUNT)
    assert type(busy) is SourceBusy
    assert ("AzureWebJobsStorage" in busy.hint) is own, busy.hint
    assert ("the images' storage account" in busy.hint) is not own, busy.hint
