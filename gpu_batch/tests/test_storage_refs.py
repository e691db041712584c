"""Source-account credentials by secret name: Key Vault requests at the HTTP transport level, local secrets files,
and telling a SAS token from a connection string."""
from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any, Callable, Iterator

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
        def refuse(*a: Any, raised: Exception = raised, **_: Any) -> Any:
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


# The node's managed identity (IMDS) in front of every Key Vault and storage read of the worker: what azure-identity
# raises when the token endpoint does not answer, and when it answers that there is no such identity, produced by the
# real credentials against a local stand-in for IMDS (AZURE_POD_IDENTITY_AUTHORITY_HOST points them at it).
_IMDS_ANSWERS: dict[str, tuple[int, Any]] = {
    "400 identity not found": (400, {"error": "invalid_request", "error_description": "Identity not found"}),
    "403 refused": (403, {"error": "access_denied", "error_description": "Forbidden"}),
    "500 server error": (500, {"error": "server_error", "error_description": "An unexpected error occurred"}),
    "503 temporarily unavailable": (503, {"error": "temporarily_unavailable", "error_description": "IMDS updating"}),
    "500 not json": (500, "Internal Server Error"),
    "429 not json": (429, "Too many requests"),
}
PASSING = ["refused", "timeout", "500 server error", "503 temporarily unavailable", "500 not json", "429 not json"]
CONFIGURATION = ["400 identity not found", "403 refused"]


@pytest.fixture
def imds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A stand-in IMDS that behaves as ``request.param`` says: refuses connections, never answers, or answers one of
    ``_IMDS_ANSWERS``. The SDK's own retries are cut to none (their end is what the worker meets)."""
    import http.server
    import threading

    from azure.identity._credentials import imds as sdk_imds

    behaviour = request.param
    server = None
    held = None
    if behaviour == "refused":  # nothing listens there; held so that no other test's server is handed the port
        from devhost.azurite import PortReservation

        held = PortReservation(1)
        port = held.ports[0]
    else:
        stop = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if behaviour == "timeout":
                    stop.wait(10)
                    return
                status, body = _IMDS_ANSWERS[behaviour]
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None: ...

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_TOKEN_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setitem(sdk_imds.PIPELINE_SETTINGS, "retry_total", 0)
    monkeypatch.setitem(sdk_imds.PIPELINE_SETTINGS, "read_timeout", 1)
    yield behaviour
    if server is not None:
        stop.set()
        server.shutdown()
    if held is not None:
        held.close()


def _credentials() -> dict[str, Any]:
    """The worker's DefaultAzureCredential (the developer-tool credentials left out: a developer's signed-in Azure CLI
    must not answer for the node) and a ManagedIdentityCredential alone (DefaultAzureCredential calls it directly once
    it gave a token, ``_successful_credential``)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    return {"DefaultAzureCredential": DefaultAzureCredential(
                exclude_cli_credential=True, exclude_developer_cli_credential=True,
                exclude_powershell_credential=True, exclude_shared_token_cache_credential=True,
                exclude_visual_studio_code_credential=True, exclude_broker_credential=True),
            "ManagedIdentityCredential": ManagedIdentityCredential()}


def _token_failure(credential: Any) -> BaseException:
    try:
        credential.get_token("https://vault.azure.net/.default")
    except BaseException as exc:  # noqa: BLE001 - whatever the SDK raises is what is classified
        return exc
    raise AssertionError("the stand-in IMDS gave a token")


@pytest.mark.parametrize("imds", PASSING + CONFIGURATION, indirect=True)
def test_a_token_endpoint_that_does_not_answer_is_a_passing_cause_and_a_missing_identity_is_not(imds: str) -> None:
    """The node's IMDS not answering (refused, timed out), or answering "later" (5xx, 429, after the SDK's retries), is
    a passing cause (exit 69): a Key Vault read through it exited 5, unfixable, and two such shards failed the task.
    No identity (IMDS's 400 "Identity not found") or a 403 stays the operator's to fix, with a message saying what."""
    from azure.core.exceptions import ClientAuthenticationError

    from gpu_batch.storage_refs import credential_hint, service_did_not_answer, token_endpoint_did_not_answer

    for name, credential in _credentials().items():
        exc = _token_failure(credential)
        assert isinstance(exc, ClientAuthenticationError) and exc.status_code is None, (name, exc)
        assert service_did_not_answer(exc) is (imds in PASSING), (name, exc)
        assert token_endpoint_did_not_answer(exc) is (imds in PASSING), (name, exc)
        if imds in CONFIGURATION:
            assert "AZURE_CLIENT_ID" in credential_hint(exc) and "id-nodes-*" in credential_hint(exc)


def test_credential_errors_as_azure_identity_raises_them_on_other_paths() -> None:
    """The ones the stand-in does not reach: the probe DefaultAzureCredential sends first on a real node
    (imds.py: CredentialUnavailableError ``from`` the connection error), the older 400 answer ("No identity has been
    assigned", ``from`` the HttpResponseError), a ClientAuthenticationError carrying IMDS's 503, and a Key Vault 401
    (the service's answer, not the credential's), and the chain's message when every credential was unavailable."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
    from azure.identity import ChainedTokenCredential, CredentialUnavailableError

    from gpu_batch.storage_refs import service_did_not_answer

    def raised_from(exc: BaseException, cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise exc from inner
        except BaseException as outer:  # noqa: BLE001
            return outer

    def status_error(cls: type, status: int, message: str) -> Any:
        err = cls(message=message)
        err.status_code = status
        return err

    probe = raised_from(CredentialUnavailableError(
        "ManagedIdentityCredential authentication unavailable, no response from the IMDS endpoint."),
        ServiceRequestError("Connection timed out"))
    no_identity = raised_from(CredentialUnavailableError(
        message="ManagedIdentityCredential authentication unavailable. No identity has been assigned to this "
                "resource. Error: Identity not found"), status_error(HttpResponseError, 400, "Identity not found"))
    imds_busy = status_error(ClientAuthenticationError, 503, "Service Unavailable")
    vault_401 = status_error(ClientAuthenticationError, 401, "Unauthorized")
    assert service_did_not_answer(probe) and service_did_not_answer(imds_busy)
    assert not service_did_not_answer(no_identity) and not service_did_not_answer(vault_401)

    class Unavailable:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise self.error

    class ManagedIdentityCredential(Unavailable): ...  # the chain names each credential by its class

    for inner, passing in ((probe, True), (no_identity, False)):
        chain = _token_failure(ChainedTokenCredential(
            Unavailable(CredentialUnavailableError("EnvironmentCredential authentication unavailable.")),
            ManagedIdentityCredential(inner)))
        assert chain.__cause__ is None and service_did_not_answer(chain) is passing, chain


@pytest.mark.parametrize("imds", ["refused", "500 server error", "400 identity not found"], indirect=True)
def test_a_key_vault_read_whose_identity_endpoint_did_not_answer_is_retryable_and_says_so(imds: str) -> None:
    from gpu_batch.storage_refs import SecretStoreUnavailable, key_vault_reader

    read = key_vault_reader(VAULT, transport=FakeVault({"partner-sas": "sv=1&sig=x"}),
                            credential=_credentials()["DefaultAzureCredential"])
    if imds == "400 identity not found":
        with pytest.raises(SourceAccessError) as refused:
            read("partner-sas")
        assert not isinstance(refused.value, SecretStoreUnavailable)
        assert "Identity not found" in str(refused.value) and "assigned to this machine" in str(refused.value)
    else:
        with pytest.raises(SecretStoreUnavailable, match="token endpoint did not answer"):
            read("partner-sas")


@pytest.mark.parametrize("imds", ["refused", "400 identity not found"], indirect=True)
def test_a_manifest_read_whose_identity_endpoint_did_not_answer_exits_69(
        imds: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's storage reads use the same credential and rule (``TRAPBATCH_STORAGE_ACCOUNT_URL``, a Batch node's
    configuration): its manifest read exits 69 when the token endpoint did not answer, 2 with what to do when there is
    no identity. No request reaches the account: the credential fails before one goes out. (The blob client is the
    one ``sources.blob_service_from_env`` builds, without the storage SDK's retries of the token request: ~80 s.)"""
    from azure.storage.blob import BlobServiceClient

    from gpu_batch import exit_codes
    from gpu_batch.worker import __main__ as worker
    from gpu_batch.worker import sources

    account = "https://trapbatchdata.blob.core.windows.net"
    monkeypatch.setattr(sources, "blob_service_from_env", lambda env: BlobServiceClient(
        account, credential=_credentials()["DefaultAzureCredential"], max_single_get_size=64 << 20, retry_total=0))
    env = {"TRAPBATCH_STORAGE_ACCOUNT_URL": account, "TRAPBATCH_DEVICE": "cpu"}
    code = worker.main(["--manifest-container", "state", "--manifest-blob", "tasks/t/s/attempt-1.json"], env)
    if imds == "refused":
        assert code == exit_codes.STORAGE_UNAVAILABLE and "token endpoint did not" in caplog.text
    else:
        assert code == exit_codes.BAD_INPUT and "assigned to this machine" in caplog.text


# A host name the test's resolver answers for (RFC 2606: ".invalid" never resolves, so nothing reaches a network even
# where the patch below did not apply); ``resolver`` decides with which getaddrinfo error.
NO_SUCH_ACCOUNT = "https://nosuchaccount.invalid"
NO_SUCH_VAULT = "https://nosuchvault.invalid"
NO_SUCH_NAME = [(socket.EAI_NONAME, "Name or service not known"),
                (socket.EAI_NODATA, "No address associated with hostname")]
RESOLVER_DOWN = (socket.EAI_AGAIN, "Temporary failure in name resolution")


class Resolver:
    """The ``resolver`` fixture: ``resolver(errno, text)`` makes getaddrinfo raise that ``socket.gaierror`` for
    ``*.invalid`` hosts; ``slept`` records the back-offs the SDKs' retry policies asked their transports to sleep
    (seconds), which are not slept."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.slept: list[float] = []

    def __call__(self, errno: int, text: str) -> None:
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str) and host.endswith(".invalid"):
                raise socket.gaierror(errno, text)
            return real(host, *args, **kwargs)
        self._monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    """``resolver(errno, text)``: getaddrinfo raises that ``socket.gaierror`` for ``*.invalid`` hosts (whatever this
    machine's resolver would say: -2 here, -3 where it cannot be reached), so the SDK's own client, transport and
    urllib3 build the chain as in production; other hosts resolve as usual. The SDKs' retries do not wait: their
    back-offs are recorded in ``resolver.slept`` instead.

    Why ``HttpTransport.sleep``, the base class's: every sync retry policy sleeps through the request's transport
    (azure-core ``RetryPolicy._sleep_backoff`` and the storage SDK's ``StorageRetryPolicy.sleep``:
    ``transport.sleep(backoff)``), and a container or blob client made from a service client sends through the
    storage SDK's ``TransportWrapper`` (``azure/storage/blob/_shared/base_client.py``), an ``HttpTransport`` that is
    no ``RequestsTransport`` and inherits ``HttpTransport.sleep``: ``time.sleep``. Patching ``RequestsTransport.sleep``
    alone left those waits real (18 + 24 + 42 s, ``test_the_resolver_fixture_quietens_every_sdk_retry_wait``)."""
    quiet = Resolver(monkeypatch)
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: quiet.slept.append(duration))
    return quiet


def test_the_resolver_fixture_quietens_every_sdk_retry_wait(resolver: Resolver) -> None:
    """A container client made from a service client retries through ``TransportWrapper``: its back-off is recorded,
    not slept (a short policy here, so that a fixture that missed it costs this test 2 s, not 84)."""
    import time

    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    resolver(*NO_SUCH_NAME[0])
    policy = ExponentialRetry(initial_backoff=1, increment_base=1, retry_total=1, random_jitter_range=0)
    client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc", retry_policy=policy)
    started = time.monotonic()
    with pytest.raises(Exception):
        next(iter(client.get_container_client("images").list_blob_names()))
    assert resolver.slept == [2.0] and time.monotonic() - started < 1.5, resolver.slept


class _Busy(HttpTransport):  # type: ignore[misc]
    """Answers every request 503 ServerBusy, as Azure Storage does when it asks to be retried."""

    def __init__(self) -> None:
        self.requests = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests += 1
        response = _Response(request, 503, None)
        response.headers["x-ms-error-code"] = "ServerBusy"
        return response

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __exit__(self, *a: Any) -> None: ...


@pytest.mark.parametrize("answer", ["no such name", "no data", "resolver down", "503"])
def test_a_deadlines_storage_client_does_not_retry_a_host_dns_says_does_not_exist_and_retries_the_rest(
        answer: str, resolver: Resolver) -> None:
    """``missing_host_not_retried``: a "no such name" (EAI_NONAME, EAI_NODATA) fails at the first try, with the
    chain ``unresolvable_host`` reads; a resolver that did not answer (EAI_AGAIN) and a 503 get the storage SDK's
    three retries and back-offs (18, 24, 42 s, ±3), as with its default policy."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import client_from_secret, missing_host_not_retried, unresolvable_host

    resolver(*{"no such name": NO_SUCH_NAME[0], "no data": NO_SUCH_NAME[1]}.get(answer, RESOLVER_DOWN))
    busy = _Busy()
    client = (BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc", transport=busy,
                                retry_policy=missing_host_not_retried()) if answer == "503" else
              client_from_secret(NO_SUCH_ACCOUNT, "sv=2024-01-01&sig=abc", retry_policy=missing_host_not_retried()))
    with pytest.raises((ServiceRequestError, HttpResponseError)) as failed:
        next(iter(client.get_container_client("images").list_blob_names()))
    if answer in ("no such name", "no data"):
        assert unresolvable_host(failed.value) == "nosuchaccount.invalid" and resolver.slept == []
        return
    assert unresolvable_host(failed.value) is None
    assert len(resolver.slept) == 3, resolver.slept
    assert all(abs(slept - mean) <= 3 for slept, mean in zip(resolver.slept, (18, 24, 42))), resolver.slept
    assert busy.requests == (4 if answer == "503" else 0)


class DeadlineClock:
    """The ``deadline_clock`` fixture: a monotonic clock (``now``, seconds) that moves only when a retry policy
    sleeps (recorded in ``slept``, as ``resolver.slept``) or a fake transport spends time (``spend``)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def deadline_clock(monkeypatch: pytest.MonkeyPatch) -> DeadlineClock:
    """``DeadlineClock``; the SDKs' retry waits (``HttpTransport.sleep``: the ``resolver`` fixture says why that one)
    move it instead of sleeping."""
    clock = DeadlineClock()

    def sleep(self: Any, duration: float) -> None:
        clock.slept.append(duration)
        clock.spend(duration)
    monkeypatch.setattr(HttpTransport, "sleep", sleep)
    return clock


class _Spending(HttpTransport):  # type: ignore[misc]
    """Storage or Key Vault that spends time on a ``DeadlineClock``: ``hang`` takes each request's whole connection
    and read timeouts and fails with a read timeout; ``503`` answers ServerBusy (Key Vault: ServiceUnavailable,
    after its 401 challenge) after ``answer_s``; ``429`` is Key Vault's throttling with a ``Retry-After`` of 30 s.
    ``timeouts``: each request's (connection, read) timeouts as sent, with the time left when it was sent."""

    def __init__(self, clock: DeadlineClock, answer: str, answer_s: float = 0.2) -> None:
        self.clock, self.answer, self.answer_s = clock, answer, answer_s
        self.timeouts: list[tuple[float, float, float]] = []
        self.left: Callable[[], float] = lambda: 0.0

    def send(self, request: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import ServiceResponseTimeoutError

        connect, read = kwargs["connection_timeout"], kwargs["read_timeout"]
        self.timeouts.append((connect, read, self.left()))
        if "vault.azure.net" in request.url and "Authorization" not in request.headers:
            return FakeVault({}).send(request)  # the challenge
        if self.answer == "hang":
            self.clock.spend(connect + read)
            raise ServiceResponseTimeoutError("Read timed out")
        self.clock.spend(self.answer_s)
        status = 429 if self.answer == "429" else 503
        response = _Response(request, status, {"error": {"code": "Throttled", "message": "later"}})
        response.headers["x-ms-error-code"] = "ServerBusy"
        if status == 429:
            response.headers["Retry-After"] = "30"
        return response

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __exit__(self, *a: Any) -> None: ...


@pytest.mark.parametrize("budget", [15.0, 4.0, 1.25, 0.5])
@pytest.mark.parametrize("answer", ["503", "hang", "429"])
@pytest.mark.parametrize("service", ["storage", "key vault"])
def test_a_deadlines_clients_spend_no_more_than_the_time_left_and_fail_as_not_answered(
        service: str, answer: str, budget: float, deadline_clock: DeadlineClock) -> None:
    """``deadline_storage_options`` and ``key_vault_reader(time_left=...)``, with a service that keeps answering
    503 (or 429 with a 30-s ``Retry-After``) or whose every request hangs until its timeouts: all the back-offs
    and all the requests' timeouts together fit in the time left (``budget``), each request is sent with timeouts
    that fit in what was left then, and the failure is one the callers class busy (``service_did_not_answer``,
    ``SecretStoreUnavailable``), never a refusal. The SDKs' own policies took 18 + 24 + 42 s of back-offs (storage)
    and 300 + 300 s a try (Key Vault) for the same, past Event Grid's 30-s wait for a marker's delivery."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import (SecretStoreUnavailable, deadline_storage_options, key_vault_reader,
                                        service_did_not_answer)

    start = deadline_clock.now
    left = lambda: start + budget - deadline_clock.now  # noqa: E731 - the caller's time_left
    spending = _Spending(deadline_clock, answer)
    spending.left = left
    failed: BaseException
    if service == "storage":
        client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc",
                                   **deadline_storage_options(left, spending))
        with pytest.raises(AzureError) as raised:
            next(iter(client.get_container_client("images").list_blob_names()))
        failed = raised.value
        assert service_did_not_answer(failed), failed
    else:
        read = key_vault_reader(VAULT, transport=spending, credential=FakeCredential(), time_left=left)
        with pytest.raises(SecretStoreUnavailable) as unavailable:
            read("partner-sas")
        failed = unavailable.value
    spent = deadline_clock.now - start
    assert spent <= budget, (spent, deadline_clock.slept, spending.timeouts)
    assert all(connect + read_s <= at_send + 1e-9 for connect, read_s, at_send in spending.timeouts), spending.timeouts
    tries = len([t for t in spending.timeouts if t[0] > 0])
    if answer == "429" or budget < 1.5:  # no back-off fits: the 30 s asked for, or the 0.5-s one and a 1-s try after it
        # (1.25 s: a 503 answered in 0.2 s leaves 1.05 s, enough for a back-off and a 0.2-s try, not a 1-s one)
        assert deadline_clock.slept == [], deadline_clock.slept
    elif budget == 15.0 and answer == "503":  # every retry fitted: three short back-offs
        assert len(deadline_clock.slept) == 3 and sum(deadline_clock.slept) <= 3.5 * 1.25, deadline_clock.slept
    assert tries >= 1


@pytest.mark.parametrize("service", ["storage", "key vault"])
def test_a_long_deadline_sends_each_try_with_the_timeouts_it_was_given_and_still_ends_by_the_deadline(
        service: str, deadline_clock: DeadlineClock) -> None:
    """``try_timeouts`` (an HTTP POST's: the storage SDK's own 20 s and 60 s a try, ``api.starters``): each request is
    sent with them while they fit, and with what is left once they do not; a retry only while a try as long as the
    last fits. A 170-s deadline over a service whose requests hang: two 80-s tries, then the busy failure, by the
    deadline. Without ``try_timeouts``, the short ones (3 s and 6 s) a 30-s caller needs."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import (DEADLINE_TRY_CONNECT_S, DEADLINE_TRY_READ_S, SecretStoreUnavailable,
                                        deadline_storage_options, deadline_timeouts, key_vault_reader)

    assert deadline_timeouts(100.0) == (DEADLINE_TRY_CONNECT_S, DEADLINE_TRY_READ_S)
    assert deadline_timeouts(100.0, (20.0, 60.0)) == (20.0, 60.0)
    assert deadline_timeouts(50.0, (20.0, 60.0)) == (20.0, 30.0)  # together never past the deadline
    start = deadline_clock.now
    left = lambda: start + 170.0 - deadline_clock.now  # noqa: E731 - the caller's time_left
    spending = _Spending(deadline_clock, "hang")
    spending.left = left
    if service == "storage":
        client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc",
                                   **deadline_storage_options(left, spending, try_timeouts=(20.0, 60.0)))
        with pytest.raises(AzureError):
            next(iter(client.get_container_client("images").list_blob_names()))
    else:
        read = key_vault_reader(VAULT, transport=spending, credential=FakeCredential(), time_left=left,
                                try_timeouts=(20.0, 60.0))
        with pytest.raises(SecretStoreUnavailable):
            read("partner-sas")
    # (Key Vault's may begin with its 401 challenge, which hangs not: azure-keyvault keeps a vault's challenge for the
    # process, so only the first test to use the vault sees it)
    assert {(connect, read_s) for connect, read_s, _ in spending.timeouts} == {(20.0, 60.0)}, spending.timeouts
    spent = deadline_clock.now - start
    assert 160.0 <= spent <= 170.0 and len(deadline_clock.slept) == 1, (spent, deadline_clock.slept)  # two tries


class _Blip(_Spending):
    """Storage or Key Vault answering 503 (``_Spending``'s) for the first ``blip_s`` seconds of its clock, then as
    a healthy service: a container that exists, the secret ``partner-sas``."""

    def __init__(self, clock: DeadlineClock, blip_s: float) -> None:
        super().__init__(clock, "503")
        self.until = clock.now + blip_s

    def send(self, request: Any, **kwargs: Any) -> Any:
        if self.clock.now < self.until:
            return super().send(request, **kwargs)
        self.clock.spend(self.answer_s)
        if "vault.azure.net" in request.url:
            return FakeVault({"partner-sas": "sv=x"}).send(request)
        return _Response(request, 200, None)


@pytest.mark.parametrize("service", ["storage", "key vault"])
def test_a_long_deadline_waits_out_a_blip_as_the_sdks_own_retries_did(
        service: str, deadline_clock: DeadlineClock) -> None:
    """An HTTP POST's deadline (170 s, ``try_timeouts``: ``api.starters.POST_CHECKS_DEADLINE_S``) over a service
    that answers 503 for 10 s, as a storage account or vault does for a few seconds now and then: the read succeeds,
    as it did with the SDKs' own retries before the POST had a deadline (storage: 18, 24, 42 s of back-offs; Key
    Vault: azure-core's ten retries). With a 30-s caller's short back-offs (0.5, 1, 2 s) all four tries fell in the
    blip: a 503 to the caller for a blip the SDK used to wait out, where 170 s allowed waiting."""
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import deadline_storage_options, key_vault_reader

    start = deadline_clock.now
    left = lambda: start + 170.0 - deadline_clock.now  # noqa: E731 - the caller's time_left
    blip = _Blip(deadline_clock, 10.0)
    blip.left = left
    if service == "storage":
        client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc",
                                   **deadline_storage_options(left, blip, try_timeouts=(20.0, 60.0)))
        assert client.get_container_client("images").exists()
    else:
        read = key_vault_reader(VAULT, transport=blip, credential=FakeCredential(), time_left=left,
                                try_timeouts=(20.0, 60.0))
        assert read("partner-sas") == "sv=x"
    assert deadline_clock.now - start <= 170.0, deadline_clock.slept


class _Trickle(http.server.BaseHTTPRequestHandler):
    """A storage account that answers a blob range's headers at once, then sends its 4 MiB 64 KiB at a time every
    ``pause_s``: each socket read well within any read timeout, the whole body ~20 s."""

    protocol_version = "HTTP/1.1"
    size = 4 * 1024 * 1024
    pause_s = 0.3

    def log_message(self, *args: Any) -> None: ...

    def do_GET(self) -> None:
        self.send_response(206)
        for name, value in {"Content-Length": str(self.size), "Content-Range": f"bytes 0-{self.size - 1}/{self.size}",
                            "ETag": '"0x1"', "x-ms-blob-type": "BlockBlob",
                            "Last-Modified": "Sun, 06 Dec 2026 10:00:00 GMT"}.items():
            self.send_header(name, value)
        self.end_headers()
        for _ in range(self.size // 65536):
            try:
                self.wfile.write(b"a" * 65536)
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            time.sleep(self.pause_s)


def test_a_deadlines_storage_client_reads_a_body_by_the_deadline_too() -> None:
    """A blob range read with a deadline (the image list's 4-MiB ranges at POST /api/tasks, ``adapters.image_lists``)
    from an account that sends slowly: the read ends by the deadline (give or take the storage SDK's own 1-s pause
    before its retry, which is then not sent), busy for the callers. Before, the deadline was checked only when a
    request went out and the read timeout bounds each socket read, not the body: the range took its whole ~20 s, a
    2-s deadline or not (and a 170-s POST's answer could come after the front end's 230 s)."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import deadline_storage_options, service_did_not_answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    start = time.monotonic()
    left = lambda: start + 2.0 - time.monotonic()  # noqa: E731 - the caller's time_left
    try:
        client = BlobServiceClient(f"http://127.0.0.1:{server.server_address[1]}/account", credential=None,
                                   **deadline_storage_options(left, try_timeouts=(1.0, 5.0)))
        with pytest.raises(AzureError) as failed:
            client.get_blob_client("images", "list.csv").download_blob(offset=0, length=_Trickle.size).readall()
    finally:
        server.shutdown()
        server.server_close()
    spent = time.monotonic() - start
    assert spent < 2.0 + 1.5, spent
    assert service_did_not_answer(failed.value), failed.value


def test_a_requests_timeouts_are_the_short_ones_and_share_what_is_left() -> None:
    """Connection 3 s and read 6 s at most; with less left, the connection gets half of it and the read the rest, so a
    request sent with 2 s left still has 1 s to read its answer (not 0: it would fail at once)."""
    from gpu_batch.storage_refs import deadline_timeouts

    assert deadline_timeouts(20.0) == (3.0, 6.0)
    assert deadline_timeouts(8.0) == (3.0, 5.0)
    assert deadline_timeouts(4.0) == (2.0, 2.0)
    assert deadline_timeouts(2.0) == (1.0, 1.0)


def _deadline_client(service: str, transport: Any, left: Callable[[], float]) -> Callable[[], Any]:
    """One read by a deadline's storage client (a container listing) or Key Vault reader (a secret) over
    ``transport``; it raises what that client raises."""
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import deadline_storage_options, key_vault_reader

    if service == "storage":
        client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc",
                                   **deadline_storage_options(left, transport))
        return lambda: next(iter(client.get_container_client("images").list_blob_names()))
    read = key_vault_reader(VAULT, transport=transport, credential=FakeCredential(), time_left=left)
    return lambda: read("partner-sas")


@pytest.mark.parametrize("service", ["storage", "key vault"])
def test_a_deadlines_clients_make_every_retry_that_fits_after_growing_back_offs(
        service: str, deadline_clock: DeadlineClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-offs of 0.5, 1 and 2 s (here without their jitter), each retry made when its back-off and a try as long
    as the last fit in what is left: a service answering 503 after 1 s, with 8 s, gets all four tries (7.5 s), the
    last one's time measured from when it was sent (after its back-off), not from before the back-off."""
    import random

    from azure.core.exceptions import AzureError

    from gpu_batch.storage_refs import SecretStoreUnavailable

    monkeypatch.setattr(random, "uniform", lambda low, high: (low + high) / 2)
    start = deadline_clock.now
    left = lambda: start + 8.0 - deadline_clock.now  # noqa: E731 - the caller's time_left
    spending = _Spending(deadline_clock, "503", answer_s=1.0)
    spending.left = left
    with pytest.raises((AzureError, SecretStoreUnavailable)):
        _deadline_client(service, spending, left)()
    assert deadline_clock.slept == [0.5, 1.0, 2.0]
    assert deadline_clock.now - start == pytest.approx(7.5)


class _BusyThenRefused(HttpTransport):  # type: ignore[misc]
    """Answers ServerBusy (503) and refuses the connection in turn (Key Vault: after its 401 challenge)."""

    def __init__(self) -> None:
        self.tries = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import ServiceRequestError

        if "vault.azure.net" in request.url and "Authorization" not in request.headers:
            return FakeVault({}).send(request)  # the challenge
        self.tries += 1
        if self.tries % 2 == 0:
            raise ServiceRequestError("[Errno 111] Connection refused")
        response = _Response(request, 503, {"error": {"code": "ServiceUnavailable", "message": "later"}})
        response.headers["x-ms-error-code"] = "ServerBusy"
        return response

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __exit__(self, *a: Any) -> None: ...


@pytest.mark.parametrize("service", ["storage", "key vault"])
def test_a_deadlines_clients_retry_three_times_at_most_whatever_the_mix_of_failures(
        service: str, deadline_clock: DeadlineClock) -> None:
    """Three retries in all, not three of each kind: the SDKs also count connection, read and status retries apart
    (3 each by default), so a service that answers 503 and refuses connections in turn got more with a larger total."""
    from azure.core.exceptions import AzureError

    from gpu_batch.storage_refs import SecretStoreUnavailable

    flaky = _BusyThenRefused()
    with pytest.raises((AzureError, SecretStoreUnavailable)):
        _deadline_client(service, flaky, lambda: 15.0)()
    assert flaky.tries == 4 and len(deadline_clock.slept) == 3, deadline_clock.slept


def test_a_deadline_that_passed_sends_nothing_and_is_a_service_that_did_not_answer() -> None:
    """A client whose caller's deadline has passed sends no request: ``ServiceRequestTimeoutError`` ("not sent"),
    busy for the callers (``service_did_not_answer``), with no URL (it may hold a SAS)."""
    from azure.core.exceptions import ServiceRequestTimeoutError
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import deadline_storage_options, service_did_not_answer

    sent = _Busy()
    client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc",
                               **deadline_storage_options(lambda: 0.0, sent))
    with pytest.raises(ServiceRequestTimeoutError) as failed:
        next(iter(client.get_container_client("images").list_blob_names()))
    assert sent.requests == 0 and service_did_not_answer(failed.value)
    assert "sig=" not in str(failed.value) and "nosuchaccount.invalid" in str(failed.value)


@pytest.mark.parametrize("answer", ["no such name", "resolver down"])
def test_a_deadlines_clients_do_not_retry_a_host_dns_says_does_not_exist(answer: str, resolver: Resolver) -> None:
    """As ``missing_host_not_retried``: with a deadline, a "no such name" fails at the first try (the callers ask
    DNS or count deliveries themselves), for storage and for Key Vault; a resolver that did not answer is retried
    while the deadline allows (it has 15 s here: three short back-offs)."""
    from azure.core.exceptions import ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import deadline_storage_options, key_vault_reader, unresolvable_host

    resolver(*(NO_SUCH_NAME[0] if answer == "no such name" else RESOLVER_DOWN))
    client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc",
                               **deadline_storage_options(lambda: 15.0))
    with pytest.raises(ServiceRequestError) as failed:
        next(iter(client.get_container_client("images").list_blob_names()))
    assert (unresolvable_host(failed.value) is not None) == (answer == "no such name")
    assert len(resolver.slept) == (0 if answer == "no such name" else 3), resolver.slept
    assert sum(resolver.slept) <= 3.5 * 1.25, resolver.slept
    resolver.slept.clear()
    read = key_vault_reader(NO_SUCH_VAULT, credential=FakeCredential(), time_left=lambda: 15.0)
    with pytest.raises(SourceAccessError):
        read("partner-sas")
    assert len(resolver.slept) == (0 if answer == "no such name" else 3), resolver.slept


@pytest.mark.parametrize("service", ["storage", "key vault"])
def test_a_deadlines_clients_do_not_retry_when_a_try_as_long_as_the_last_no_longer_fits(
        service: str, deadline_clock: DeadlineClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver that does not answer spends its own timeouts before EAI_AGAIN (glibc: 5 s a query, two attempts,
    ~10 s), which no request timeout bounds (``deadline_storage_options``: "What it cannot bound"). The retry was
    made whenever its back-off and ``DEADLINE_MIN_TRY_S`` fitted: after a 10-s try with 5 s left, a second 10-s try
    ended 5.5 s past the deadline (and a marker's delivery past Event Grid's 30 s, with the refusal still to write).
    A retry is now made only if a try as long as the last one fits too."""
    from azure.core.exceptions import ServiceRequestError
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.storage_refs import SecretStoreUnavailable, deadline_storage_options, key_vault_reader

    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            deadline_clock.spend(10.0)  # the resolver's own timeouts
            raise socket.gaierror(*RESOLVER_DOWN)
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    start = deadline_clock.now
    left = lambda: start + 15.0 - deadline_clock.now  # noqa: E731 - the caller's time_left
    if service == "storage":
        client = BlobServiceClient(NO_SUCH_ACCOUNT, credential="sv=2024-01-01&sig=abc",
                                   **deadline_storage_options(left))
        with pytest.raises(ServiceRequestError):
            next(iter(client.get_container_client("images").list_blob_names()))
    else:
        read = key_vault_reader(NO_SUCH_VAULT, credential=FakeCredential(), time_left=left)
        with pytest.raises(SecretStoreUnavailable):
            read("partner-sas")
    assert deadline_clock.now - start <= 15.0, (deadline_clock.now - start, deadline_clock.slept)
    assert deadline_clock.slept == [], deadline_clock.slept


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """An https URL on a loopback port nothing listens on while the ``with`` lasts: connection refused, a passing
    cause. The port is held (``PortReservation``: bound, never listening), as the ``imds`` fixture's is: a port bound
    and released at once could be handed to another pytest worker's server (an Azurite), which would then answer."""
    from devhost.azurite import PortReservation

    with PortReservation(1) as held:
        yield f"https://127.0.0.1:{held.ports[0]}"


def _blob_failure(account_url: str) -> BaseException:
    """What the storage SDK's own client raises for a container listing at ``account_url`` (its retries off)."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient(account_url, credential="sv=2024-01-01&sig=abc", retry_total=0)
    with pytest.raises(Exception) as failed:
        next(iter(client.get_container_client("images").list_blobs()))
    return failed.value


@pytest.mark.parametrize("errno, text", NO_SUCH_NAME)
def test_a_storage_host_dns_says_does_not_exist_is_no_passing_cause(errno: int, text: str, resolver: Any) -> None:
    """EAI_NONAME / EAI_NODATA on the chain the real client builds (``ServiceRequestError`` of urllib3's
    ``NameResolutionError`` from the ``gaierror``): a deleted or misspelt account, not one that did not answer."""
    from azure.core.exceptions import ServiceRequestError

    from gpu_batch.storage_refs import service_did_not_answer, unresolvable_host

    resolver(errno, text)
    exc = _blob_failure(NO_SUCH_ACCOUNT)
    assert isinstance(exc, ServiceRequestError), repr(exc)
    assert unresolvable_host(exc) == "nosuchaccount.invalid"
    assert not service_did_not_answer(exc)
    # requests' own wrapping (requests.ConnectionError(MaxRetryError(reason=NameResolutionError))) is read alike
    import requests
    from urllib3.exceptions import MaxRetryError

    wrapped = requests.ConnectionError(MaxRetryError(None, "/", exc.inner_exception))  # type: ignore[arg-type]
    assert unresolvable_host(ServiceRequestError(wrapped, error=wrapped)) == "nosuchaccount.invalid"


def test_a_resolver_that_did_not_answer_or_a_refused_connection_still_passes(resolver: Any) -> None:
    """EAI_AGAIN (no resolver reachable) and a refused connection are passing causes, as before."""
    from gpu_batch.storage_refs import service_did_not_answer, unresolvable_host

    resolver(*RESOLVER_DOWN)
    with refused_url() as refused:
        failures = (_blob_failure(NO_SUCH_ACCOUNT), _blob_failure(refused))
    for exc in failures:
        assert unresolvable_host(exc) is None, repr(exc)
        assert service_did_not_answer(exc), repr(exc)



@pytest.mark.parametrize("errno, text", NO_SUCH_NAME)
def test_a_proxy_host_dns_says_does_not_exist_is_not_the_accounts_host(
        errno: int, text: str, resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a proxy (``HTTPS_PROXY``, which requests honours) the name urllib3 resolves is the proxy's, and its
    ``NameResolutionError`` arrives inside ``ProxyError("Unable to connect to proxy", ...)``: the account's own name
    was never looked up, so the request's ``source_account_url`` must not be refused as a name that does not exist
    (400, "check its URL"); it stays what any failure to reach the account is (``service_did_not_answer``)."""
    from gpu_batch.storage_refs import service_did_not_answer, unresolvable_host

    resolver(errno, text)
    monkeypatch.setenv("HTTPS_PROXY", "http://corpproxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    exc = _blob_failure("https://partnerphotos.blob.core.windows.net")
    assert "proxy" in str(exc), repr(exc)  # the proxy's name is what failed to resolve
    assert unresolvable_host(exc) is None, repr(exc)
    assert service_did_not_answer(exc)


@pytest.mark.parametrize("errno, text, passing", [(*NO_SUCH_NAME[0], False), (*NO_SUCH_NAME[1], False),
                                                  (*RESOLVER_DOWN, True)])
def test_a_key_vault_whose_host_does_not_exist_is_refused_and_an_unreachable_resolver_is_not(
        errno: int, text: str, passing: bool, resolver: Any) -> None:
    """The real ``SecretClient`` (its retries included) on a vault host DNS says does not exist: ``SourceAccessError``
    naming the host and the setting (the worker exits 5), not ``SecretStoreUnavailable`` (exit 69, tried again)."""
    from gpu_batch.storage_refs import SecretStoreUnavailable, key_vault_reader

    resolver(errno, text)
    read = key_vault_reader(NO_SUCH_VAULT, credential=FakeCredential())
    with pytest.raises(SourceAccessError) as failed:
        read("partner-sas")
    assert isinstance(failed.value, SecretStoreUnavailable) is passing, failed.value
    if not passing:
        assert "host name nosuchvault.invalid does not resolve" in str(failed.value)
        assert KEY_VAULT_ENV in str(failed.value)
    with refused_url() as refused, pytest.raises(SecretStoreUnavailable):
        key_vault_reader(refused, credential=FakeCredential())("partner-sas")


@pytest.mark.parametrize("errno, text, passing", [(*NO_SUCH_NAME[0], False), (*RESOLVER_DOWN, True), (0, "", True)])
def test_the_worker_exits_5_when_the_images_vault_does_not_exist_and_69_when_dns_did_not_answer(
        errno: int, text: str, passing: bool, resolver: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``__main__._open_images_and_output`` with the vault the node's settings name: a host DNS says does not exist
    is the unfixable exit 5 (``None``), but only once DNS, asked again, still says so ``sources.GONE_AFTER_S`` later
    (before: at the first such answer); a resolver that did not answer is exit 69 (``_StorageUnavailable``), and so
    is one that stops answering while it is asked again (``errno`` 0: "no such name", then EAI_AGAIN)."""
    from types import SimpleNamespace

    from gpu_batch.worker import __main__ as worker

    time = _worker_dns_time(monkeypatch)
    if errno:
        resolver(errno, text)
    else:
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str) and host.endswith(".invalid"):
                raise socket.gaierror(*(NO_SUCH_NAME[0] if not time.slept else RESOLVER_DOWN))
            return real(host, *args, **kwargs)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)
    manifest = SimpleNamespace(source_account_url="https://partner.blob.core.windows.net",
                               source_credential_secret="partner-sas", source_container="images",
                               output_container="results", output_blob="out.json")
    call: tuple[Any, ...] = (SimpleNamespace(), {KEY_VAULT_ENV: NO_SUCH_VAULT}, True, object(), manifest, "t s a")
    if passing:
        with pytest.raises(worker._StorageUnavailable, match="secret store did not answer"):
            worker._open_images_and_output(*call)
        assert time.slept == ([] if errno else [15.0]), time.slept
    else:
        assert worker._open_images_and_output(*call) is None
        assert "nosuchvault.invalid does not resolve" in caplog.text
        assert sum(time.slept) == pytest.approx(120.0), time.slept


WORKER_STORAGE = ("DefaultEndpointsProtocol=https;AccountName=nosuchaccount;AccountKey=a2V5;"
                  "BlobEndpoint=https://nosuchaccount.invalid;")


@pytest.mark.parametrize("read", ["manifest", "model"])
@pytest.mark.parametrize("errno, text, passing", [(*NO_SUCH_NAME[0], False), (*NO_SUCH_NAME[1], False),
                                                  (*RESOLVER_DOWN, True)])
def test_the_worker_names_its_storage_setting_when_its_storage_host_does_not_exist(
        errno: int, text: str, passing: bool, read: str, resolver: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The worker's own storage (``TRAPBATCH_STORAGE_CONNECTION``, the real client and its retries) whose host DNS
    says does not exist, at the manifest read (exit 2) and at a ``blob://`` model's download (exit 3): an unfixable
    exit whose message names the host and the setting to fix, not only urllib3's "Failed to resolve". A resolver
    that did not answer stays exit 69 (another attempt)."""
    from azure.core.pipeline.transport import HttpTransport

    from gpu_batch import exit_codes
    from gpu_batch.tests.conftest import write_manifest
    from gpu_batch.worker import __main__ as worker

    resolver(errno, text)
    # the storage SDK's retries sleep through the sub-client's TransportWrapper, not the RequestsTransport
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)
    time = _worker_dns_time(monkeypatch)
    env = {"TRAPBATCH_STORAGE_CONNECTION": WORKER_STORAGE, "TRAPBATCH_DEVICE": "cpu",
           "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    if read == "manifest":
        argv = ["--manifest-container", "state", "--manifest-blob", "tasks/t/shards/s00000/attempt-1.json"]
        unfixable = exit_codes.BAD_INPUT
    else:
        (tmp_path / "images").mkdir()
        manifest = write_manifest(tmp_path / "m.json", ["a.jpg"], "blob://models/md.pt")
        argv = ["--manifest-file", str(manifest), "--image-root", str(tmp_path / "images"), "--output-file",
                str(tmp_path / "out.json"), "--device", "cpu"]
        unfixable = exit_codes.MODEL
    code = worker.main(argv, env)
    assert "a2V5" not in caplog.text
    if passing:
        assert code == exit_codes.STORAGE_UNAVAILABLE and time.slept == [], caplog.text
        return
    assert code == unfixable and exit_codes.unfixable_reason(code), (code, caplog.text)
    assert sum(time.slept) == pytest.approx(120.0), time.slept  # DNS asked again for GONE_AFTER_S first
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors, caplog.text
    assert "nosuchaccount.invalid does not resolve" in errors[-1], errors
    assert "TRAPBATCH_STORAGE_CONNECTION" in errors[-1] and "retrying does not help" in errors[-1], errors
    assert ("shard manifest" if read == "manifest" else "blob://models/md.pt") in errors[-1], errors


class FakeTime:
    """A clock that moves only when ``sleep`` is called (``storage_refs.resolves_again``'s seam)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_dns_is_asked_again_until_the_host_resolves_the_resolver_goes_quiet_or_the_grace_ends(
        resolver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``resolves_again``: "no such name" all along is False after the whole grace, in steps of ``every_s``; the
    first answer that is not "no such name" ends the wait with it (True: resolves, None: no answer)."""
    from gpu_batch.storage_refs import HOST_ASK_EVERY_S, HOST_GONE_AFTER_S, resolves_again

    assert HOST_GONE_AFTER_S >= 120  # Azure/azure-storage-python#541: "up to 120s"
    resolver(*NO_SUCH_NAME[0])
    time = FakeTime()
    assert resolves_again("nosuchaccount.invalid", clock=time.clock, sleep=time.sleep) is False
    assert sum(time.slept) == pytest.approx(HOST_GONE_AFTER_S) and max(time.slept) == HOST_ASK_EVERY_S, time.slept
    resolver(*RESOLVER_DOWN)
    time = FakeTime()
    assert resolves_again("nosuchaccount.invalid", clock=time.clock, sleep=time.sleep) is None
    assert time.slept == [HOST_ASK_EVERY_S]
    time = FakeTime()
    assert resolves_again("localhost", 30.0, every_s=10.0, clock=time.clock, sleep=time.sleep) is True
    assert time.slept == [10.0]
    assert resolves_again("nosuchaccount.invalid", 0.0, clock=time.clock, sleep=time.sleep) is False
    assert time.slept == [10.0]  # no grace: no wait, no ask


def _worker_dns_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The worker's DNS waits on a fake clock: ``BlobImageSource``'s class ``monotonic`` and ``sleep``, which its
    own-storage reads share (``__main__._read_through_dns_blips``)."""
    from gpu_batch.worker.sources import BlobImageSource

    time = FakeTime()
    monkeypatch.setattr(BlobImageSource, "monotonic", staticmethod(time.clock))
    monkeypatch.setattr(BlobImageSource, "sleep", staticmethod(time.sleep))
    return time


@pytest.mark.parametrize("read", ["manifest", "model"])
def test_the_worker_exits_69_when_its_storage_host_went_missing_and_dns_then_did_not_answer(
        read: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The worker's own storage host said "no such name" at the manifest read or the model download, and DNS asked
    again then gave no answer (EAI_AGAIN): nothing says the account is gone, so exit 69 (the shard runs again), not
    the unfixable 2 or 3 that one "no such name" gave (two such attempts failed the whole task)."""
    from azure.core.pipeline.transport import HttpTransport, RequestsTransport

    from gpu_batch import exit_codes
    from gpu_batch.tests.conftest import write_manifest
    from gpu_batch.worker import __main__ as worker

    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, duration: None)
    time = _worker_dns_time(monkeypatch)
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(*(NO_SUCH_NAME[0] if not time.slept else RESOLVER_DOWN))  # quiet after a wait
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    env = {"TRAPBATCH_STORAGE_CONNECTION": WORKER_STORAGE, "TRAPBATCH_DEVICE": "cpu",
           "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    if read == "manifest":
        argv = ["--manifest-container", "state", "--manifest-blob", "tasks/t/shards/s00000/attempt-1.json"]
    else:
        (tmp_path / "images").mkdir()
        manifest = write_manifest(tmp_path / "m.json", ["a.jpg"], "blob://models/md.pt")
        argv = ["--manifest-file", str(manifest), "--image-root", str(tmp_path / "images"), "--output-file",
                str(tmp_path / "out.json"), "--device", "cpu"]
    code = worker.main(argv, env)
    assert code == exit_codes.STORAGE_UNAVAILABLE, caplog.text
    assert time.slept == [15.0], time.slept
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "nosuchaccount.invalid did not resolve" in errors[-1] and "DNS then did not answer" in errors[-1], errors
    assert "a2V5" not in caplog.text


def test_the_worker_reads_its_manifest_again_when_its_storage_host_resolves_again(
        storage_connection: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A "no such name" for the worker's own storage (where the app wrote the manifest moments before) that DNS takes
    back 30 s later: the manifest is read again and the shard goes on. Before, the first such answer was exit 2,
    unfixable. The account is Azurite under a host name of the test's own ("gone-state", no dot: Azurite reads the
    account from the path), which getaddrinfo says does not exist until then."""
    from urllib.parse import urlsplit

    from azure.core.pipeline.transport import HttpTransport, RequestsTransport
    from azure.storage.blob import BlobServiceClient

    from gpu_batch.manifest import ShardManifest
    from gpu_batch.worker import __main__ as worker

    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, duration: None)
    time = _worker_dns_time(monkeypatch)
    service = BlobServiceClient.from_connection_string(storage_connection)
    state = service.create_container(unique_name)
    manifest = ShardManifest(task_id="task-h", shard_id="s1", attempt=1, source_container="images",
                             images=("a.jpg",), output_container=unique_name, output_blob="out.json", model="MDV5A")
    state.upload_blob("m.json", json.dumps(manifest.to_dict()))
    azurite = urlsplit(service.url)
    account = service.credential.account_name
    connection = (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={service.credential.account_key};"
                  f"BlobEndpoint=http://gone-state:{azurite.port}{azurite.path.rstrip('/')};")
    back_at = time.now + 30.0
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "gone-state":
            if time.now < back_at:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            host = azurite.hostname
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    args = worker._parser().parse_args(["--manifest-container", unique_name, "--manifest-blob", "m.json"])
    _, read, etag = worker._read_manifest(args, {"TRAPBATCH_STORAGE_CONNECTION": connection}, True)
    assert read == manifest and etag and time.slept == [15.0, 15.0], time.slept


def test_a_key_vault_read_whose_host_resolves_again_reads_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vault host DNS says does not exist (a ``gaierror`` whose chain names no host: the vault URL's is asked) that
    resolves again 30 s later, within ``host_grace_s``: the secret is read again and returned, not refused."""
    from azure.core.exceptions import ServiceRequestError

    from gpu_batch.storage_refs import key_vault_reader

    time = FakeTime()
    back_at = time.now + 30.0

    class BlippingVault(FakeVault):
        def send(self, request: Any, **kwargs: Any) -> Any:
            if time.now < back_at:
                raise ServiceRequestError("Failed to resolve",
                                          error=socket.gaierror(*NO_SUCH_NAME[0]))
            return super().send(request, **kwargs)

        def sleep(self, duration: float) -> None: ...

    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "trapbatch-kv.vault.azure.net":
            asked.append(host)
            if time.now < back_at:
                raise socket.gaierror(*NO_SUCH_NAME[0])
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    vault = BlippingVault({"partner-sas": "sv=2025-01-05&sr=c&sp=rl&sig=abc"})
    read = key_vault_reader(VAULT, transport=vault, credential=FakeCredential(), host_grace_s=120.0,
                            clock=time.clock, sleep=time.sleep)
    assert read("partner-sas") == "sv=2025-01-05&sr=c&sp=rl&sig=abc"
    assert time.slept == [15.0, 15.0] and len(asked) == 2, (time.slept, asked)
    refused = key_vault_reader(VAULT, transport=BlippingVault({}), credential=FakeCredential(), clock=time.clock,
                               sleep=time.sleep)  # the default grace on the fake clock: a wait would be seen
    back_at = time.now + 30.0  # the app's reader (no grace) refuses at the first such answer, as before
    with pytest.raises(SourceAccessError, match="does not resolve"):
        refused("partner-sas")
    assert time.slept == [15.0, 15.0]


def test_a_host_name_the_idna_codec_refuses_is_no_answer_from_dns() -> None:
    """``host_resolves`` answers None (no answer either way), not a ``UnicodeError`` out of the worker's or the drop
    trigger's wait, for a name the IDNA codec refuses (an empty or 64-character label), and the wait ends with it."""
    from gpu_batch.storage_refs import host_resolves, resolves_again

    time = FakeTime()
    assert resolves_again("x..invalid", 20.0, every_s=15.0, clock=time.clock, sleep=time.sleep) is None
    assert time.slept == [15.0], time.slept  # the IDNA refusal ends the wait as no answer at the first ask
    assert host_resolves("x..invalid") is None and host_resolves("a" * 64 + ".invalid") is None


def test_the_last_dns_wait_is_cut_to_the_grace_left(resolver: Any) -> None:
    """``resolves_again``: "no such name" all along for a 20 s grace asked every 15 s waits 15 s, then the 5 s left,
    not another 15 s past the grace (the worker's and the vault reader's remaining graces are seldom a multiple of
    15 s)."""
    from gpu_batch.storage_refs import resolves_again

    resolver(*NO_SUCH_NAME[0])
    time = FakeTime()
    assert resolves_again("nosuchaccount.invalid", 20.0, every_s=15.0, clock=time.clock, sleep=time.sleep) is False
    assert time.slept == [15.0, 5.0], time.slept


class _MissingVault(FakeVault):
    """Every request fails as a vault host DNS says does not exist (a ``gaierror`` whose chain names no host)."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import ServiceRequestError

        self.requests.append(request)
        raise ServiceRequestError("Failed to resolve", error=socket.gaierror(*NO_SUCH_NAME[0]))

    def sleep(self, duration: float) -> None: ...


class _BoundedTime(FakeTime):
    """``FakeTime`` that fails the test past 50 waits (a reader that never gives up would otherwise hang)."""

    def sleep(self, seconds: float) -> None:
        assert len(self.slept) < 50, "the reader kept asking DNS past its grace"
        super().sleep(seconds)


def test_a_key_vault_whose_reads_keep_missing_while_dns_says_it_resolves_gives_up_at_the_first_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A vault whose reads keep finding its host missing while each ask of DNS says it resolves (a flapping name):
    the grace is counted from the first such read, not started anew after each ask that resolved, so the read is
    refused ``host_grace_s`` later (the worker's exit 5), not tried for ever."""
    from gpu_batch.storage_refs import SecretStoreUnavailable, key_vault_reader

    monkeypatch.setattr("gpu_batch.storage_refs.host_resolves", lambda host, port=443: True)
    time = _BoundedTime()
    read = key_vault_reader(VAULT, transport=_MissingVault({}), credential=FakeCredential(), host_grace_s=120.0,
                            clock=time.clock, sleep=time.sleep)
    with pytest.raises(SourceAccessError, match="does not resolve") as failed:
        read("partner-sas")
    assert not isinstance(failed.value, SecretStoreUnavailable)
    assert failed.value.missing_host == "trapbatch-kv.vault.azure.net"
    assert sum(time.slept) == pytest.approx(120.0), time.slept


def test_a_key_vault_whose_resolver_stops_answering_while_asked_again_is_unavailable_not_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A vault read that found its host missing, then no answer from DNS when asked again (EAI_AGAIN): the resolver
    is what fails now, a passing cause (``SecretStoreUnavailable``: the worker's retryable exit 69) at once, saying
    so; not reads and asks until the grace ends and a refusal (exit 5, unfixable) even though DNS never again said
    "no such name" to an ask."""
    from gpu_batch.storage_refs import SecretStoreUnavailable, key_vault_reader

    monkeypatch.setattr("gpu_batch.storage_refs.host_resolves", lambda host, port=443: None)
    time = _BoundedTime()
    vault = _MissingVault({})
    read = key_vault_reader(VAULT, transport=vault, credential=FakeCredential(), host_grace_s=120.0,
                            clock=time.clock, sleep=time.sleep)
    with pytest.raises(SecretStoreUnavailable, match="DNS then did not answer"):
        read("partner-sas")
    assert time.slept == [15.0], time.slept


def test_a_published_models_download_host_that_does_not_resolve_is_not_said_to_be_the_workers_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A published model (``MDV5A``) is downloaded from its publisher's URL, not through the worker's storage: when
    DNS does not know that host (a node without internet) the error keeps the loader's advice (download the file
    elsewhere, put it on the nodes or in the models container), exit 3. Seen against devhost with ``submit --model
    MDV5A``: the task failed saying that the worker's storage account's host did not resolve and to check
    TRAPBATCH_STORAGE_CONNECTION, which was fine."""
    from gpu_batch import exit_codes

    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "github.com":  # the published models' host (gpu_batch.models.KNOWN_MODELS)
            raise socket.gaierror(*NO_SUCH_NAME[0])
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert _run_worker_on_mdv5a(tmp_path, monkeypatch) == exit_codes.MODEL, caplog.text
    error = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"][-1]
    assert "storage account" not in error and "TRAPBATCH_STORAGE_CONNECTION" not in error, error
    assert "could not download MDV5A" in error and "github.com" in error and "may be offline" in error, error


@pytest.mark.parametrize("cut", [TimeoutError("The read operation timed out"), ConnectionResetError(104, "reset")])
def test_a_published_models_download_that_timed_out_names_its_download_host_not_storage(
        cut: OSError, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A published model's download (``MDV5A``, from its publisher's URL) whose read timed out or was cut in every
    loader try stays a passing cause, exit 69 (another attempt runs the shard), but the message names the host that
    did not answer (github.com), not storage: "storage did not answer the download of model 'MDV5A'" sent an
    operator to check a storage account that was not involved. A ``blob://`` model keeps the storage wording
    (gpu_batch/tests/test_cli.py)."""
    from gpu_batch import exit_codes

    def download(url: str, dest: Path) -> None:  # urllib raises these bare once the response is being read
        assert url.startswith("https://github.com/"), url
        raise cut

    assert _run_worker_on_mdv5a(tmp_path, monkeypatch, download) == exit_codes.STORAGE_UNAVAILABLE, caplog.text
    error = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"][-1]
    assert "storage" not in error, error
    assert "github.com, the download host of model 'MDV5A', did not answer (another attempt runs the shard)" in error
    assert type(cut).__name__ in error, error


@pytest.mark.parametrize("cause", [
    urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")),
    urllib.error.URLError(ConnectionResetError(104, "Connection reset by peer")),
    urllib.error.HTTPError("https://github.com/x", 503, "Service Unavailable", {}, None),  # type: ignore[arg-type]
    urllib.error.HTTPError("https://github.com/x", 429, "Too Many Requests", {}, None),  # type: ignore[arg-type]
], ids=["dns-no-answer", "reset", "503", "429"])
def test_a_published_models_download_host_that_did_not_answer_for_now_is_another_attempt_not_a_failed_task(
        cause: OSError, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """urllib wraps what fails before the response (the resolver did not answer, the connection timed out or was
    refused) in ``URLError``, and a 5xx or 429 is an ``HTTPError``: all of them passing causes, yet they exited 3
    (``MODEL``, unfixable), so a few minutes' outage of the publisher's host at a shard's start failed the whole task
    at the second attempt. Now exit 69, another attempt; the host is named. A name DNS says does not exist (a node
    without internet) and a 404 stay exit 3 with the loader's advice (the tests above)."""
    from gpu_batch import exit_codes

    def download(url: str, dest: Path) -> None:
        raise cause

    assert _run_worker_on_mdv5a(tmp_path, monkeypatch, download) == exit_codes.STORAGE_UNAVAILABLE, caplog.text
    error = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"][-1]
    assert "github.com, the download host of model 'MDV5A', did not answer" in error, error


@pytest.mark.parametrize("cause", [
    urllib.error.HTTPError("https://github.com/x", 404, "Not Found", {}, None),  # type: ignore[arg-type]
    urllib.error.URLError(TimeoutError("timed out")),
    urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
], ids=["404", "connect-timeout", "refused"])
def test_a_published_models_download_that_is_not_there_or_never_connects_stays_a_model_failure(
        cause: OSError, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A 404 from the publisher (the file moved) is no outage, and a connection that timed out or was refused before
    any answer in every loader try is what a node without outbound internet meets (on Azure the name resolves):
    exit 3 with the loader's advice, as before, so such a pool fails the task at a shard's second attempt instead of
    trying every shard ``max_attempts`` times (``loader.download_did_not_answer``)."""
    from gpu_batch import exit_codes
    from gpu_batch.worker import loader

    def download(url: str, dest: Path) -> None:
        raise cause

    assert _run_worker_on_mdv5a(tmp_path, monkeypatch, download) == exit_codes.MODEL, caplog.text


@pytest.mark.parametrize("read", ["manifest", "vault", "model"])
def test_a_shard_stopped_while_the_worker_asks_dns_again_stops_at_the_next_ask(
        read: str, resolver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's own-storage and Key Vault DNS waits (``__main__._read_through_dns_blips``,
    ``storage_refs.key_vault_reader``'s ``host_grace_s``) honour the shard's stop check, as the image reads' wait
    does (``BlobImageSource.wait_for_host``): a resident worker whose client went away (``stop_check`` raises
    ``ShardCancelled``) stops within one ``ASK_AGAIN_EVERY_S``. Before, it asked DNS on for the whole
    ``GONE_AFTER_S`` (120 s, the resident server's own ``STOP_GRACE_S``, past which it exits and takes the shards
    waiting for their turn with it) and then ended the cancelled shard with the unfixable exit 2, 5 or 3."""
    from types import SimpleNamespace

    from azure.core.pipeline.transport import RequestsTransport

    from gpu_batch.tests.conftest import write_manifest
    from gpu_batch.worker import __main__ as worker
    from gpu_batch.worker.faults import Fault

    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: None)  # the storage SDK's retry waits
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, duration: None)
    resolver(*NO_SUCH_NAME[0])
    time = _worker_dns_time(monkeypatch)

    def stop_check() -> None:
        if time.slept:  # the client went away during the first wait
            raise worker.ShardCancelled("the client went away (terminated or killed)")

    if read == "vault":
        manifest: Any = SimpleNamespace(source_account_url="https://partner.blob.core.windows.net",
                                        source_credential_secret="partner-sas", source_container="images",
                                        output_container="results", output_blob="out.json")
        no_args: Any = SimpleNamespace()
        with pytest.raises(worker.ShardCancelled):
            worker._open_images_and_output(no_args, {KEY_VAULT_ENV: NO_SUCH_VAULT}, True, object(), manifest, "t s a",
                                           stop_check=stop_check)
    else:
        env = {"TRAPBATCH_STORAGE_CONNECTION": WORKER_STORAGE, "TRAPBATCH_DEVICE": "cpu",
               "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
        if read == "manifest":
            argv = ["--manifest-container", "state", "--manifest-blob", "tasks/t/shards/s00000/attempt-1.json"]
        else:
            (tmp_path / "images").mkdir()
            manifest_file = write_manifest(tmp_path / "m.json", ["a.jpg"], "blob://models/md.pt")
            argv = ["--manifest-file", str(manifest_file), "--image-root", str(tmp_path / "images"),
                    "--output-file", str(tmp_path / "out.json"), "--device", "cpu"]
        args = worker.parse_args(argv, env)
        assert not isinstance(args, int)
        outcome = worker.run_shard(args, env, Fault.from_env(env), process_started=0.0, stop_check=stop_check)
        assert outcome.code == worker.EXIT_CANCELLED, outcome
    assert time.slept == [15.0], time.slept


def test_a_published_models_download_host_that_did_not_answer_keeps_the_advice_for_nodes_that_cannot_reach_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A publisher host that said "later" (503) in every try is exit 69: every shard runs TRAPBATCH_MAX_ATTEMPTS
    times, and the task then fails with the first given-up shard's reason (the app keeps 300 characters of it). As
    exit 3 the loader's advice (place the file, or the models container) was in it; the exit-69 words alone said "did
    not answer" with nothing to do. The advice now comes before the cause's text."""
    from gpu_batch import exit_codes

    def download(url: str, dest: Path) -> None:
        raise urllib.error.HTTPError(url, 503, "Service Unavailable", {}, None)  # type: ignore[arg-type]

    assert _run_worker_on_mdv5a(tmp_path, monkeypatch, download) == exit_codes.STORAGE_UNAVAILABLE, caplog.text
    error = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"][-1]
    kept = f"the worker exited 69: {error}"[:300]  # orchestrations.shards._why_given_up, c.GIVEN_UP_REASON_CHARS
    assert "TRAPBATCH_MODELS_CONTAINER" in kept and "blob://" in kept, kept


def _run_worker_on_mdv5a(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         download: Callable[[str, Path], None] | None = None) -> int:
    """The worker's exit code for a one-image shard of the published MDV5A (downloaded from its publisher's URL, by
    ``download`` in place of urllib where given; the loader's own tries do not wait)."""
    from gpu_batch.tests.conftest import write_manifest
    from gpu_batch.worker import __main__ as worker
    from gpu_batch.worker import loader

    if download is not None:
        monkeypatch.setattr(loader, "_urllib_download", download)
    monkeypatch.setattr(loader, "DOWNLOAD_WAIT_S", 0.0)
    (tmp_path / "images").mkdir()
    manifest = write_manifest(tmp_path / "m.json", ["a.jpg"], "MDV5A")
    env = {"TRAPBATCH_STORAGE_CONNECTION": WORKER_STORAGE, "TRAPBATCH_DEVICE": "cpu",
           "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    argv = ["--manifest-file", str(manifest), "--image-root", str(tmp_path / "images"), "--output-file",
            str(tmp_path / "out.json"), "--device", "cpu"]
    return worker.main(argv, env)
