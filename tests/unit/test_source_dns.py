"""A source account (or the Key Vault holding its credential) whose host name DNS says does not exist is a refusal
(400, with the host and what to check), not "busy": a deleted or misspelt account on the allow-list was answered 503
"retry in a minute" and waited out by the orchestrations for many minutes. A resolver that did not answer (EAI_AGAIN)
or a refused connection stays busy. The SDK's own clients and transport build the exception chain (the resolver is
patched, ``gpu_batch.tests.test_storage_refs.resolver``)."""
from __future__ import annotations

from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from adapters import clients, image_lists
from adapters.blobs import BlobStore
from core.errors import SourceBusy, SourceUnavailable
from core.requests import parse_task_request
from core.settings import Settings
from gpu_batch.storage_refs import key_vault_reader
from gpu_batch.tests.test_pool_azure_batch import FakeCredential
from gpu_batch.tests.test_storage_refs import resolver  # noqa: F401 - the fixture: getaddrinfo's answer for *.invalid
from gpu_batch.tests.test_storage_refs import NO_SUCH_ACCOUNT, NO_SUCH_NAME, NO_SUCH_VAULT, RESOLVER_DOWN, refused_url
from orchestrations.retries import is_busy

ANSWERS = [(*NO_SUCH_NAME[0], False), (*NO_SUCH_NAME[1], False), (*RESOLVER_DOWN, True)]


def _settings(account: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                              "TRAPBATCH_KEY_VAULT_URL": NO_SUCH_VAULT, "TRAPBATCH_SOURCE_ACCOUNTS": account})


def _store(account_url: str) -> BlobStore:
    """The source account as a SAS makes it (``storage_refs.client_from_secret``), the storage SDK's retries off."""
    return BlobStore(BlobServiceClient(account_url, credential="sv=2024-01-01&sig=abc", retry_total=0))


def _as_orchestrator_sees_it(exc: BaseException) -> Exception:
    return Exception(f"Activity function 'enumerate_images' failed: {type(exc).__name__}: {exc}")


def _check(err: BaseException, busy: bool, host: str) -> None:
    assert "sig=" not in str(err) and "sig=" not in getattr(err, "hint", "")
    if busy:
        assert isinstance(err, SourceBusy) and err.status_code == 503, err
        assert is_busy(_as_orchestrator_sees_it(err))
    else:
        assert isinstance(err, SourceUnavailable) and err.status_code == 400, err
        assert f"host name {host} does not resolve" in err.message, err.message
        assert f"{host} does not resolve" in err.hint and "source_account_url" in err.hint, err.hint
        assert "grant" not in err.hint and not is_busy(_as_orchestrator_sees_it(err))


@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_the_edge_refuses_a_source_account_whose_host_does_not_exist(
        errno: int, text: str, busy: bool, resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``api.starters._check_source`` lists the request's container in the (allowed) account: 400 naming the host
    for EAI_NONAME / EAI_NODATA, 503 for EAI_AGAIN."""
    from api import starters

    resolver(errno, text)
    monkeypatch.setattr(starters.clients, "source_store", lambda *a: _store(NO_SUCH_ACCOUNT))
    request = parse_task_request({"container": "images", "source_account_url": NO_SUCH_ACCOUNT}, "MDV5A")
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        starters._check_source(request, _settings(NO_SUCH_ACCOUNT))
    assert "cannot list container 'images'" in failed.value.message
    _check(failed.value, busy, "nosuchaccount.invalid")


@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_an_image_list_in_an_account_whose_host_does_not_exist_is_refused(
        errno: int, text: str, busy: bool, resolver: Any) -> None:
    """``adapters.image_lists.open_image_list`` (the edge and the enumeration read lists through it)."""
    resolver(errno, text)
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        with image_lists.open_image_list(_store(NO_SUCH_ACCOUNT), "images", "l.csv", 10**6):
            pass
    _check(failed.value, busy, "nosuchaccount.invalid")


def test_a_refused_connection_to_the_source_account_is_still_busy(resolver: Any) -> None:
    with pytest.raises(SourceBusy):
        with image_lists.open_image_list(_store(refused_url()), "images", "l.csv", 10**6):
            pass


@pytest.mark.parametrize("errno, text, busy", ANSWERS)
def test_a_key_vault_whose_host_does_not_exist_is_a_refusal_at_the_edge(
        errno: int, text: str, busy: bool, resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``clients.source_store`` reading the request's secret from the (real ``SecretClient``) vault: 400
    ``SourceUnavailable`` naming the vault's host and ``TRAPBATCH_KEY_VAULT_URL``, 503 ``SourceBusy`` for EAI_AGAIN."""
    resolver(errno, text)
    monkeypatch.setattr(clients, "secret_reader_from_env",
                        lambda env, **kw: key_vault_reader(NO_SUCH_VAULT, credential=FakeCredential()))
    partner = "https://partnerphotos.blob.core.windows.net"
    with pytest.raises((SourceBusy, SourceUnavailable)) as failed:
        clients.source_store(_settings(partner), partner, "partner-sas")
    err = failed.value
    assert isinstance(err, SourceBusy if busy else SourceUnavailable), err
    assert is_busy(_as_orchestrator_sees_it(err)) is busy
    if not busy:
        assert "host name nosuchvault.invalid does not resolve" in err.message
        assert "TRAPBATCH_KEY_VAULT_URL" in err.message and err.status_code == 400
