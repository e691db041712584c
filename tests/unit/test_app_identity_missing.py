"""The Functions app on App Service with no managed identity enabled: a configuration to fix, never a busy service.

App Service sets ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` only when the app has a managed identity
(MicrosoftDocs/azure-docs issue #81108: "For those environment variables to be available, you'd have to enable
managed identity on your application first"); azure-identity 1.27.0 ``_credentials/managed_identity.py`` then falls
back to ``ImdsCredential``, which App Service does not serve, and words the failure "ManagedIdentityCredential
authentication unavailable, no response from the IMDS endpoint." (``_credentials/imds.py``, the probe and the
request alike). azure-identity's TROUBLESHOOTING.md, "Azure App Service and Azure Functions Managed Identity", names
that case "The environment variables configured by the App Services host weren't present" and its fix "Ensure the
managed identity has been properly configured on the App Service". ``WEBSITE_SITE_NAME`` is what tells the app it
runs on App Service (articles/app-service/reference-app-settings.md: "Read-only. App name.").

The same words on a machine that is not App Service (a VM, a Batch node) stay a token endpoint that did not answer
(gpu_batch/tests/test_storage_refs.py), as do App Service's own endpoint's failures (tests/unit/test_app_identity.py).
"""
from __future__ import annotations

from typing import Iterator

import pytest
from azure.core.exceptions import ClientAuthenticationError

from adapters.blobs import service_client
from adapters.identity import AppCredential, TokenEndpointUnavailable
from adapters.storage_errors import source_error, storage_error
from core.errors import SourceBusy, SourceUnavailable, StorageAccessDenied, StorageUnavailable
from gpu_batch.storage_refs import SecretStoreUnavailable, SourceAccessError, key_vault_reader
from gpu_batch.tests.test_storage_refs import VAULT, FakeVault
from orchestrations.retries import is_busy

ON_APP_SERVICE = "app-service"
ELSEWHERE = "elsewhere"


@pytest.fixture
def imds_silent(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """No App Service identity endpoint; "IMDS" a loopback port nothing listens on (refused at once, as the SDK's
    probe finds 169.254.169.254 on App Service: no answer). ``request.param``: whether ``WEBSITE_SITE_NAME`` is set.
    The port is held (``PortReservation``: bound, never listening) for the whole test: one bound and released at once
    could be handed to another pytest worker's server (an Azurite), which would then answer as "IMDS"."""
    from azure.identity._credentials import imds as sdk_imds

    from adapters.identity import forget_app_credentials
    from devhost.azurite import PortReservation

    held = PortReservation(1)
    port = held.ports[0]
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT",
                 "IMDS_ENDPOINT", "AZURE_TOKEN_CREDENTIALS", "WEBSITE_SITE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000a11d")  # as infra/app/api.bicep sets it
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setitem(sdk_imds.PIPELINE_SETTINGS, "retry_total", 0)
    if request.param == ON_APP_SERVICE:
        monkeypatch.setenv("WEBSITE_SITE_NAME", "func-api-abc")
    forget_app_credentials()  # the app's shared one is built anew, with retry_total 0 (read when it is built)
    try:
        yield str(request.param)
    finally:
        held.close()


@pytest.mark.parametrize("imds_silent", [ON_APP_SERVICE, ELSEWHERE], indirect=True)
def test_an_app_without_a_managed_identity_on_app_service_is_refused_not_busy(imds_silent: str) -> None:
    """On App Service the IMDS words mean the app has no identity: they were TokenEndpointUnavailable, so the app's
    storage answered 503 "retry in a minute" and every activity waited out ~18 minutes of busy retries, for a
    configuration no wait fixes. Elsewhere they stay busy."""
    service = service_client("identity:https://127.0.0.1:9")  # the token is asked for before anything is sent
    with pytest.raises(ClientAuthenticationError) as failed:
        service.get_container_client("images").exists(retry_total=0)
    exc = failed.value
    as_orchestrator_sees_it = Exception(f"Activity function 'enumerate_images' failed: {type(exc).__name__}: {exc}")
    mapped = storage_error(exc, "reading container images")
    source = source_error(exc, "listing container images", "grant read")
    if imds_silent == ELSEWHERE:
        assert isinstance(exc, TokenEndpointUnavailable) and is_busy(as_orchestrator_sees_it), exc
        assert isinstance(mapped, StorageUnavailable) and isinstance(source, SourceBusy)
        return
    assert not isinstance(exc, TokenEndpointUnavailable), exc
    assert not is_busy(as_orchestrator_sees_it), exc
    assert isinstance(mapped, StorageAccessDenied), mapped
    assert isinstance(source, SourceUnavailable), source
    assert "managed identity" in str(exc) and "IDENTITY_ENDPOINT" in str(exc), exc


@pytest.mark.parametrize("imds_silent", [ON_APP_SERVICE], indirect=True)
def test_a_key_vault_read_by_an_app_without_a_managed_identity_is_a_refusal(imds_silent: str) -> None:
    """The sources' Key Vault, read with the app's credential: was SecretStoreUnavailable (SourceBusy, 503)."""
    read = key_vault_reader(VAULT, transport=FakeVault({"partner-sas": "sv=x"}), credential=AppCredential())
    with pytest.raises(SourceAccessError) as failed:
        read("partner-sas")
    assert not isinstance(failed.value, SecretStoreUnavailable), failed.value


@pytest.mark.parametrize("imds_silent", [ON_APP_SERVICE], indirect=True)
def test_a_managed_identity_credential_alone_on_app_service_without_identity_is_not_busy_either(
        imds_silent: str) -> None:
    """``ManagedIdentityCredential`` outside a chain raises ``from`` the connection error, which reads busy: the
    translated failure must not carry that chain."""
    from azure.identity import ManagedIdentityCredential

    from gpu_batch.storage_refs import service_did_not_answer

    with pytest.raises(ClientAuthenticationError) as failed:
        AppCredential(ManagedIdentityCredential(client_id="00000000-0000-0000-0000-00000000a11d")).get_token(
            "https://storage.azure.com/.default")
    assert not service_did_not_answer(failed.value), failed.value
    assert isinstance(source_error(failed.value, "listing", "grant read"), SourceUnavailable)


@pytest.mark.parametrize("imds_silent", [ON_APP_SERVICE], indirect=True)
def test_an_app_whose_identity_endpoint_is_named_by_msi_endpoint_is_busy_when_it_does_not_answer(
        imds_silent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``MSI_ENDPOINT``/``MSI_SECRET`` are App Service's older names of the identity endpoint ("MSI_ENDPOINT can be
    used as an alias for IDENTITY_ENDPOINT", articles/app-service/overview-managed-identity.md, once required on Linux
    Consumption). With them set azure-identity 1.27.0 never asks IMDS (``_credentials/managed_identity.py``: only
    without ``IDENTITY_ENDPOINT`` and ``MSI_ENDPOINT`` does it pick ``ImdsCredential``), so an endpoint that did not
    answer is a busy endpoint, not an app without identity."""
    from gpu_batch.tests.test_storage_refs import refused_url

    with refused_url() as refused:
        monkeypatch.setenv("MSI_ENDPOINT", refused.replace("https:", "http:") + "/msi/token")
        monkeypatch.setenv("MSI_SECRET", "not-a-secret")
        with pytest.raises(ClientAuthenticationError) as failed:
            AppCredential().get_token("https://storage.azure.com/.default")  # DefaultAzureCredential, as the app's
    assert isinstance(failed.value, TokenEndpointUnavailable), repr(failed.value)
    assert is_busy(Exception(f"Activity function 'enumerate_images' failed: TokenEndpointUnavailable: {failed.value}"))
