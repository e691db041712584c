"""A source account or its secret store that is busy or did not answer is "try again" (503, busy-counted), never
"grant access" (400): a throttled Key Vault or a storage account answering ServerBusy once failed the request (or the
task, after three quick calls) with advice to create a secret or grant a role that was there all along."""
from __future__ import annotations

from typing import Any

import pytest

from adapters import clients
from core.errors import SourceBusy, SourceUnavailable
from core.settings import Settings
from gpu_batch.storage_refs import key_vault_reader
from gpu_batch.tests.test_pool_azure_batch import FakeCredential
from gpu_batch.tests.test_storage_refs import _BusyVault
from orchestrations.retries import is_busy

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
