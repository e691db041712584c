"""A source account or its secret store that is busy or did not answer is "try again" (503, busy-counted), never
"grant access" (400): a throttled Key Vault or a storage account answering ServerBusy once failed the request (or the
task, after three quick calls) with advice to create a secret or grant a role that was there all along."""
from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobServiceClient

from adapters import clients, image_lists
from adapters.blobs import BlobStore
from adapters.identity import TokenEndpointUnavailable
from core.errors import SourceBusy, SourceUnavailable
from core.settings import Settings
from gpu_batch.storage_refs import NO_ACCESS_HINT, key_vault_reader
from gpu_batch.tests.test_pool_azure_batch import FakeCredential, _Response
from gpu_batch.tests.test_storage_refs import _BusyVault
from orchestrations.retries import is_busy
from tests.unit.test_busy_retries import _StorageAnswers

PARTNER = "https://partnerphotos.blob.core.windows.net"
VAULT = "https://sources.vault.azure.net"


def _settings() -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_KEY_VAULT_URL": VAULT,
                              "TRAPBATCH_SOURCE_ACCOUNTS": PARTNER})


def _as_orchestrator_sees_it(exc: BaseException) -> Exception:
    return Exception(f"Activity function 'enumerate_images' failed: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("status, code, busy", [(429, "Throttled", True), (503, "ServiceUnavailable", True),
                                                (500, "InternalServerError", True), (403, "Forbidden", False)])
def test_a_secret_store_that_did_not_answer_is_busy_and_a_refusal_is_not(
        status: int, code: str, busy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``clients.source_store`` with the Key Vault reader the app builds, over a vault that answers ``status``."""
    def reader(env: Any, **kwargs: Any) -> Any:
        return key_vault_reader(VAULT, transport=_BusyVault(status, code), credential=FakeCredential())

    monkeypatch.setattr(clients, "secret_reader_from_env", reader)
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        clients.source_store(_settings(), PARTNER, "partner-sas")
    err = failed.value
    if busy:
        assert isinstance(err, SourceBusy) and err.status_code == 503, err
        assert err.headers == {"Retry-After": "30"} and "retry" in err.hint and "did not answer" in err.message
        assert is_busy(_as_orchestrator_sees_it(err))
    else:
        assert isinstance(err, SourceUnavailable) and err.status_code == 400, err
        assert "Key Vault Secrets User" in err.message
        assert not is_busy(_as_orchestrator_sees_it(err))


def test_a_source_unavailable_recorded_by_an_earlier_release_is_still_not_busy() -> None:
    """Histories hold the failure's type name: what was SourceUnavailable replays as judged then (three calls)."""
    assert not is_busy(Exception("Activity function 'enumerate_images' failed: SourceUnavailable: Key Vault "
                                 "https://v did not answer the read of secret 'x' (see README)"))


class _ListAnswers(_StorageAnswers):
    """The source account answering every request with the error (``raised`` instead: nothing answers, a connection
    refused, a timeout); with ``opens``, but for its blob's properties, so the image list opens."""

    def __init__(self, status: int, code: str, raised: Exception | None = None, opens: bool = False) -> None:
        super().__init__(status, code)
        self.raised, self.opens = raised, opens

    def send(self, request: Any, **kwargs: Any) -> Any:
        if self.raised is not None:
            raise self.raised
        if self.opens and request.method == "HEAD":
            response = _Response(request, 200, None)
            response.headers = {"Content-Length": "9", "ETag": '"0x1"', "x-ms-blob-type": "BlockBlob",
                                "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}
            return response
        return super().send(request, **kwargs)


def _source(status: int, code: str, raised: Exception | None = None, opens: bool = False) -> BlobStore:
    return BlobStore(BlobServiceClient(PARTNER, transport=_ListAnswers(status, code, raised, opens), retry_total=0))


BUSY_ANSWERS = [(503, "ServerBusy", None), (500, "InternalError", None), (500, "OperationTimedOut", None),
                (429, "TooManyRequests", None), (0, "", ServiceRequestError("connection refused")),
                (0, "", ServiceResponseError("read timed out")),
                (0, "", TokenEndpointUnavailable("the app's managed identity got no token: its token endpoint did "
                                                 "not answer. ManagedIdentityCredential: 503, busy"))]
REFUSALS = [(403, "AuthorizationPermissionMismatch", None), (403, "AuthenticationFailed", None),
            (400, "InvalidQueryParameterValue", None)]


def _check(err: BaseException, busy: bool) -> None:
    assert "sig=" not in str(err)
    if busy:
        assert isinstance(err, SourceBusy) and err.status_code == 503, err
        assert err.headers == {"Retry-After": "30"} and err.hint.startswith("retry") and "grant" not in err.message
        assert is_busy(_as_orchestrator_sees_it(err))
    else:
        assert isinstance(err, SourceUnavailable) and err.status_code == 400, err
        assert err.hint == NO_ACCESS_HINT
        assert not is_busy(_as_orchestrator_sees_it(err))


@pytest.mark.parametrize("status, code, raised, busy", [(*a, True) for a in BUSY_ANSWERS] +
                         [(*a, False) for a in REFUSALS])
def test_the_edge_answers_a_busy_source_account_503_and_a_refusing_one_400(
        status: int, code: str, raised: Exception | None, busy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``api.starters._check_source``'s listing of the request's container in the (allowed) source account."""
    from api import starters
    from core.requests import parse_task_request

    monkeypatch.setattr(starters.clients, "source_store", lambda *a, **kw: _source(status, code, raised))
    request = parse_task_request({"container": "images", "source_account_url": PARTNER}, "MDV5A")
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        starters._check_source(request, _settings())
    assert "cannot list container 'images'" in failed.value.message
    _check(failed.value, busy)


@pytest.mark.parametrize("status, code, raised, busy", [(*a, True) for a in BUSY_ANSWERS] +
                         [(*a, False) for a in REFUSALS])
def test_an_image_list_that_a_busy_account_does_not_serve_is_busy_at_its_open_and_while_it_is_read(
        status: int, code: str, raised: Exception | None, busy: bool) -> None:
    """``adapters.image_lists.open_image_list``: its first request (the blob's properties) fails, or (the
    properties answer) its first ranged read does."""
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        with image_lists.open_image_list(_source(status, code, raised), "images", "l.csv", 10**6):
            pass
    assert "cannot read image list 'l.csv'" in failed.value.message
    _check(failed.value, busy)
    if raised is not None:
        return
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        with image_lists.open_image_list(_source(status, code, opens=True), "images", "l.csv", 10**6) as fp:
            fp.read()
    assert "cannot read image list 'l.csv'" in failed.value.message
    _check(failed.value, busy)


def test_a_busy_own_account_is_named_in_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request without ``source_account_url`` reads the app's own account: the message named no account at all
    ("cannot list container 'images' in : ...")."""
    from api import starters
    from core.requests import parse_task_request

    request = parse_task_request({"container": "images"}, "MDV5A")
    monkeypatch.setattr(starters.clients, "source_store", lambda *a, **kw: _source(503, "ServerBusy"))
    with pytest.raises(SourceBusy) as failed:
        starters._check_source(request, _settings())
    assert failed.value.message.startswith("cannot list container 'images' in storage account 'partnerphotos': ")
