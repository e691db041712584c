"""Source-account credentials by secret name: Key Vault requests at the HTTP transport level, local secrets files,
and telling a SAS token from a connection string."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.transport import HttpTransport

from gpu_batch.storage_refs import (KEY_VAULT_ENV, LOCAL_SECRETS_ENV, SourceAccessError, SourceRef,
                                    client_from_secret, secret_reader_from_env, source_service)
from gpu_batch.tests.test_pool_azure_batch import FakeCredential, _Response

VAULT = "https://trapbatch-kv.vault.azure.net"


class FakeVault(HttpTransport):  # type: ignore[misc]
    """Answers like Key Vault: a 401 challenge to the first, unauthenticated request, then the secret or 404."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.requests: list[Any] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append(request)
        if "Authorization" not in request.headers:
            response = _Response(request, 401, None)
            response.headers["WWW-Authenticate"] = ('Bearer authorization="https://login.microsoftonline.com/tenant", '
                                                    'resource="https://vault.azure.net"')
            return response
        name = request.url.split("?")[0].rsplit("/secrets/", 1)[1].split("/")[0]
        if name not in self.secrets:
            return _Response(request, 404, {"error": {"code": "SecretNotFound", "message": f"{name} not found"}})
        return _Response(request, 200, {"value": self.secrets[name], "id": f"{VAULT}/secrets/{name}/abc"})

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __exit__(self, *a: Any) -> None: ...


def test_key_vault_secret_is_read_with_the_apps_identity() -> None:
    vault = FakeVault({"partner-sas": "sv=2025-01-05&sr=c&sp=rl&sig=abc"})
    read = secret_reader_from_env({KEY_VAULT_ENV: VAULT}, transport=vault, credential=FakeCredential())
    assert read is not None
    assert read("partner-sas") == "sv=2025-01-05&sr=c&sp=rl&sig=abc"
    last = vault.requests[-1]
    assert last.method == "GET" and last.url.startswith(f"{VAULT}/secrets/partner-sas/?api-version=")  # latest version
    assert last.headers["Authorization"] == "Bearer entra-token"
    with pytest.raises(SourceAccessError, match="no secret named 'missing'"):
        read("missing")


def test_local_secrets_file_and_no_store(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"partner-sas": "sv=1&sig=x"}))
    read = secret_reader_from_env({LOCAL_SECRETS_ENV: str(path)})
    assert read is not None and read("partner-sas") == "sv=1&sig=x"
    with pytest.raises(SourceAccessError, match="no secret named 'other'"):
        read("other")
    assert secret_reader_from_env({}) is None
    with pytest.raises(SourceAccessError, match="no secret store is configured"):
        source_service(SourceRef("https://p.blob.core.windows.net", "partner-sas"), lambda: None, None)


def test_sas_token_and_connection_string_make_the_right_client() -> None:
    sas = client_from_secret("https://partner.blob.core.windows.net", "?sv=2025-01-05&sp=rl&sig=abc")
    assert sas.url.startswith("https://partner.blob.core.windows.net") and "sig=abc" in sas.url
    conn = client_from_secret("https://Partner.blob.core.windows.net/", "DefaultEndpointsProtocol=https;"
                              "AccountName=partner;AccountKey=a2V5;EndpointSuffix=core.windows.net")
    assert conn.account_name == "partner" and conn.credential.account_key == "a2V5"
    azurite = client_from_secret("http://127.0.0.1:10000/devstoreaccount1", "DefaultEndpointsProtocol=http;"
                                 "AccountName=devstoreaccount1;AccountKey=a2V5;"
                                 "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
    assert azurite.account_name == "devstoreaccount1"
    own = object()
    assert source_service(SourceRef(), lambda: own, None) is own


def test_a_blob_sas_url_gives_its_token_and_a_broken_connection_string_says_so() -> None:
    """A malformed connection string raised ValueError, answered 500 "this is a trapbatch bug"; the portal's "Blob
    SAS URL" pasted whole was taken as the token."""
    url = client_from_secret("https://partner.blob.core.windows.net",
                             "https://partner.blob.core.windows.net/cams?sv=2025-01-05&sp=rl&sig=abc")
    assert url.url.startswith("https://partner.blob.core.windows.net") and "sig=abc" in url.url
    assert "cams" not in url.url.split("?")[0]
    with pytest.raises(SourceAccessError, match="secret 'partner-sas' is not a usable connection string"):
        source_service(SourceRef("https://p.blob.core.windows.net", "partner-sas"), lambda: None,
                       lambda name: "BlobEndpoint=;SharedAccessSignature=sv=1&sig=x")


@pytest.mark.parametrize("secret", [
    "BlobEndpoint=http://169.254.169.254/metadata;SharedAccessSignature=sv=1&sig=x",
    "DefaultEndpointsProtocol=https;AccountName=other;AccountKey=a2V5;EndpointSuffix=core.windows.net",
    "BlobEndpoint=http://partner.blob.core.windows.net;SharedAccessSignature=sv=1&sig=x",
])
def test_a_connection_string_for_another_endpoint_than_the_requests_account_is_refused(secret: str) -> None:
    """The operator's allow-list (TRAPBATCH_SOURCE_ACCOUNTS) checks the request's account_url; a connection string
    names its own endpoint, which took the app and its workers to any host the secret named (the metadata
    endpoint, another account, plain http)."""
    with pytest.raises(SourceAccessError, match="not for the request's account https://partner.blob"):
        client_from_secret("https://partner.blob.core.windows.net", secret, "'partner-conn'")


class _BusyVault(FakeVault):
    """Key Vault answering every authenticated secret read with ``status`` (throttling, an outage, a refusal); the
    SDK's retry backoffs do not sleep."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__({})
        self.status, self.code = status, code

    def send(self, request: Any, **kwargs: Any) -> Any:
        if "Authorization" not in request.headers:
            return super().send(request, **kwargs)
        self.requests.append(request)
        return _Response(request, self.status, {"error": {"code": self.code, "message": "later"}})

    def sleep(self, duration: float) -> None: ...


def test_a_key_vault_that_did_not_answer_is_a_passing_failure_and_a_refusal_is_not() -> None:
    """Throttling (429), a 5xx or a timeout from Key Vault is ``SecretStoreUnavailable`` (the worker exits 69, worth
    another attempt); a refusal (403) stays a plain ``SourceAccessError`` (exit 5, unfixable)."""
    from gpu_batch.storage_refs import SecretStoreUnavailable

    for status, code in ((429, "Throttled"), (503, "ServiceUnavailable"), (500, "InternalServerError"),
                         (408, "RequestTimeout")):
        read = secret_reader_from_env({KEY_VAULT_ENV: VAULT}, transport=_BusyVault(status, code),
                                      credential=FakeCredential())
        assert read is not None
        with pytest.raises(SecretStoreUnavailable, match="did not answer the read of secret 'partner-sas'"):
            read("partner-sas")
    read = secret_reader_from_env({KEY_VAULT_ENV: VAULT}, transport=_BusyVault(403, "Forbidden"),
                                  credential=FakeCredential())
    assert read is not None
    with pytest.raises(SourceAccessError, match="Key Vault Secrets User") as refused:
        read("partner-sas")
    assert not isinstance(refused.value, SecretStoreUnavailable)


def test_the_worker_exits_69_when_the_images_secret_store_did_not_answer(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``__main__._open_images_and_output``: the secret store not answering is ``_StorageUnavailable`` (exit 69 in
    ``run_shard``), a secret it cannot read stays ``None`` (exit 5)."""
    from types import SimpleNamespace

    from gpu_batch import storage_refs
    from gpu_batch.storage_refs import SecretStoreUnavailable
    from gpu_batch.worker import __main__ as worker

    manifest = SimpleNamespace(source_account_url="https://partner.blob.core.windows.net",
                               source_credential_secret="partner-sas", source_container="images",
                               output_container="results", output_blob="out.json")
    for raised in (SecretStoreUnavailable("Key Vault did not answer"), SourceAccessError("no secret named 'x'")):
        def refuse(*a: Any, raised: Exception = raised) -> Any:
            raise raised
        monkeypatch.setattr(storage_refs, "source_service", refuse)
        if isinstance(raised, SecretStoreUnavailable):
            with pytest.raises(worker._StorageUnavailable, match="secret store did not answer"):
                worker._open_images_and_output(SimpleNamespace(), {}, True, object(), manifest, "t s a")  # type: ignore[arg-type]
        else:
            assert worker._open_images_and_output(SimpleNamespace(), {}, True, object(), manifest,  # type: ignore[arg-type]
                                                  "t s a") is None
            assert "images cannot be read" in caplog.text


def test_a_read_cut_off_mid_stream_is_a_passing_cause() -> None:
    """azure-core raises IncompleteReadError without a status code when a body stops mid-stream: a model download or
    manifest read cut off so was an unfixable exit (3 or 2), though the orchestrator already retries it as busy."""
    from azure.core.exceptions import HttpResponseError, IncompleteReadError, ResourceNotFoundError

    from gpu_batch.storage_refs import service_did_not_answer

    assert service_did_not_answer(IncompleteReadError("body cut off"))
    assert not service_did_not_answer(ResourceNotFoundError("no such blob"))
    assert not service_did_not_answer(HttpResponseError("odd"))
