"""The Functions app's managed identity (App Service's identity endpoint) when that endpoint does not answer.

The real credential classes (azure-identity 1.27.0, ``DefaultAzureCredential`` as the app builds it) against a stand-in
endpoint on loopback (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``, as App Service and Azure Functions set them), as
gpu_batch/tests/test_storage_refs.py does for the nodes' IMDS. Wording and paths: ``adapters.identity`` and
``gpu_batch.storage_refs.token_endpoint_did_not_answer``.
"""
from __future__ import annotations

import http.server
import json
import threading
from typing import Any, Iterator

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

from adapters.blobs import service_client
from adapters.identity import TokenEndpointUnavailable
from adapters.storage_errors import storage_error
from core.errors import StorageAccessDenied, StorageUnavailable
from gpu_batch.tests.token_endpoint import serve_tokens, storage_requests
from orchestrations.retries import is_busy

PASSING = ["refused", "500-page", "503-json"]
CONFIGURATION = ["400-json"]


class _Endpoint(http.server.BaseHTTPRequestHandler):
    mode = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.mode == "500-page":
            body, status, kind = b"<html>Internal Server Error</html>", 500, "text/html"
        else:  # App Service's JSON error body: {"statusCode", "message", "correlationId"}
            status = 503 if self.mode == "503-json" else 400
            message = ("An unexpected error occured while fetching the AAD Token." if status == 503
                       else "Unable to load the proper Managed Identity.")
            body, kind = json.dumps({"statusCode": status, "message": message, "correlationId": "x"}).encode(), \
                "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _identity_endpoint_at(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """The App Service managed identity environment (IDENTITY_ENDPOINT/HEADER) pointing at a stand-in on ``port``,
    with every other credential source's variables removed, so the app's credential asks only that endpoint. The
    app's shared credentials are dropped: one kept from an earlier test whose endpoint had this port holds its token."""
    from adapters.identity import forget_app_credentials

    forget_app_credentials()
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "AZURE_TOKEN_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{port}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "stand-in-header")


@pytest.fixture
def endpoint(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    mode = str(request.param)
    server = None
    held = None
    if mode == "refused":  # a port nothing listens on, held so that no other test's server is handed it meanwhile
        from devhost.azurite import PortReservation

        held = PortReservation(1)
        port = held.ports[0]
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Endpoint", (_Endpoint,), {"mode": mode}))
        server.daemon_threads = True
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _identity_endpoint_at(monkeypatch, port)
    yield mode
    if server is not None:
        server.shutdown()
    if held is not None:
        held.close()


@pytest.mark.parametrize("endpoint", PASSING + CONFIGURATION, indirect=True)
def test_the_apps_storage_waits_out_an_identity_endpoint_that_does_not_answer_and_not_a_missing_identity(
        endpoint: str) -> None:
    """The app's own storage (``identity:`` connection, as in Azure) when its identity endpoint refuses the connection,
    answers a 500 page or App Service's 503 JSON: the credential's failure was a ClientAuthenticationError, mapped to
    StorageAccessDenied (502, "grant the role") at the HTTP edge and, in an activity, a failure that is not busy
    (three quick calls, then the task failed). Now busy: 503 at the edge, waited out by the orchestrations. A 400
    ("Unable to load the proper Managed Identity") stays a refusal with the role hint."""
    service = service_client("identity:https://127.0.0.1:9")  # the token is asked for before anything is sent
    with pytest.raises(ClientAuthenticationError) as failed:
        # retry_total=0: the storage SDK's own retries (3, ~1 minute: StorageRetryPolicy retries any AzureError, a
        # credential's too) come first in Azure; what is tested is what reaches trapbatch after them
        service.get_container_client("images").exists(retry_total=0)
    exc = failed.value
    mapped = storage_error(exc, "reading container images")
    as_orchestrator_sees_it = Exception(f"Activity function 'enumerate_images' failed: {type(exc).__name__}: {exc}")
    if endpoint in PASSING:
        assert isinstance(exc, TokenEndpointUnavailable), (endpoint, exc)
        assert isinstance(mapped, StorageUnavailable) and mapped.status_code == 503, mapped
        assert is_busy(as_orchestrator_sees_it), exc
        assert "stand-in-header" not in str(exc)
    else:
        assert not isinstance(exc, TokenEndpointUnavailable) and "Unable to load" in str(exc)
        assert isinstance(mapped, StorageAccessDenied) and "Storage Blob Data Owner" in mapped.hint
        assert not is_busy(as_orchestrator_sees_it)


def test_the_own_storage_clients_of_each_marker_delivery_reuse_the_apps_token_not_ask_for_one_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``deadline_blob_store`` (``api.arrivals._Delivery``: two clients of the app's own account per Event Grid
    delivery, a third in ``_check_source``) with an ``identity:`` connection, as in Azure: each client built an
    ``AppCredential`` of its own, so every delivery asked the identity endpoint for a token per client (a request
    no deadline bounds, inside Event Grid's 30 s) and left that credential's sockets to the cyclic garbage collector.
    They now use the process's shared client's credential, whose token is cached: one request for them all."""
    from adapters.blobs import blob_store, deadline_blob_store
    from core.deadline import Deadline

    handler, server = serve_tokens(expires_on=True)
    _identity_endpoint_at(monkeypatch, server.server_address[1])
    connection = "identity:https://127.0.0.1:9"  # nothing listens: the token is asked for before the refusal
    blob_store.cache_clear()
    try:
        for _ in range(3):
            store = deadline_blob_store(connection, Deadline.within(20.0))
            with pytest.raises(ServiceRequestError):
                store.service.get_container_client("images").exists(retry_total=0)
        with pytest.raises(ServiceRequestError):
            blob_store(connection).service.get_container_client("images").exists(retry_total=0)
    finally:
        blob_store.cache_clear()
        server.shutdown()
        server.server_close()
    assert handler.asked == 1, handler.paths


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def test_the_apps_identity_asks_its_endpoint_once_per_resource_however_many_clients_and_calls_use_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client the app builds with its identity (``source_store`` for each listing or shard step that reads
    another account, ``notify.send``'s vault reader, each Batch pool, the Event Grid publisher, the own account's
    clients) built an ``AppCredential`` of its own, whose fresh token cache asked App Service's identity endpoint
    again on first use (a request nothing bounds) and whose sockets stayed open until a cyclic garbage collection.
    They now share the process's one credential (``adapters.identity.app_credential``): one token request per
    resource for all of them, and no file descriptor more per call once the first has run."""
    from activities import notify
    from adapters import clients
    from adapters.blobs import blob_store
    from adapters.event_grid import EventGridPublisher
    from core.settings import Settings
    from tests.unit.test_task_events import ENDPOINT, FakeTopic

    # HTTP/1.1: the connection is kept open for the next token request, as a credential's transport keeps it
    handler, server = serve_tokens(expires_on=True)
    _identity_endpoint_at(monkeypatch, server.server_address[1])
    source = "https://127.0.0.1:9"  # nothing listens: each token is asked for before the refusal
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_SOURCE_ACCOUNTS": source})
    readers: list[Any] = []
    monkeypatch.setattr(notify, "secret_reader_from_env",
                        lambda env, credential=None, **_: readers.append(credential))  # no store: nothing sent
    batch = ("https://127.0.0.1:9", "gpu-shared", "acr.io/w:1", "client-guid",
             "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-nodes",
             "https://acct.blob.core.windows.net")

    def uses(round_: int) -> None:
        for _ in range(5):
            with pytest.raises(ServiceRequestError):
                clients.source_store(s, source, "").service.get_container_client("images").exists(retry_total=0)
        with pytest.raises(ServiceRequestError):
            blob_store(f"identity:{source}").service.get_container_client("images").exists(retry_total=0)
        EventGridPublisher(ENDPOINT, transport=FakeTopic()).publish([{"id": f"e{round_}"}])
        notify.send({"task_id": "t", "url": "https://example.org/hook", "status": {}}, ("example.org",), "key", {})
        readers.pop().get_token("https://vault.azure.net/.default")
        pool = clients._pool("azure_batch", "UseDevelopmentStorage=true", "trapbatch", 0, "", "", (),
                             batch[:1] + (f"gpu-{round_}",) + batch[2:], 3600)
        with pytest.raises(ServiceRequestError):
            pool.client.get_pool(pool.pool_id, retry_total=0)  # type: ignore[attr-defined]

    blob_store.cache_clear()
    clients._pool.cache_clear()
    try:
        uses(0)
        before = _open_fds()
        for round_ in range(1, 5):
            uses(round_)
        grown = _open_fds() - before
    finally:
        blob_store.cache_clear()
        clients._pool.cache_clear()
        server.shutdown()
        server.server_close()
    import collections

    asked = collections.Counter(path.split("resource=")[1] for path in handler.paths)
    assert grown <= 0 and list(asked.values()) == [1, 1, 1, 1], (f"{grown} more file descriptors after 4 more "
                                                                  f"rounds; token requests: {dict(asked)}")


@pytest.fixture
def moved_clock_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, float]]]:
    """App Service's identity endpoint (the stand-in) and a clock the test moves by ``now["offset"]`` seconds
    (``time.time``, which MSAL and azure-core read; their retry back-offs not waited)."""
    import time

    handler, server = serve_tokens(expires_on=True)
    _identity_endpoint_at(monkeypatch, server.server_address[1])
    now = {"offset": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + now["offset"])
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    yield handler, now
    server.shutdown()
    server.server_close()


def test_a_token_whose_refresh_failed_serves_the_apps_clients_without_asking_at_each_request(
        moved_clock_endpoint: tuple[Any, dict[str, float]]) -> None:
    """The app's shared credential (``app_credential``) 13 h into its token's day, past MSAL's refresh point, with
    the identity endpoint silent: MSAL hands back the token in hand, due already, and azure-core's policy asked again
    at each request (four requests to the endpoint each, with azure-core's back-offs between: ~5 s a request), 12
    times for these 3 clients' 12 requests. Now the token serves and the endpoint is tried again every
    ``storage_refs.TOKEN_REFRESH_RETRY_S`` (``storage_refs.RefreshSparingCredential``)."""
    from adapters.identity import app_credential
    from gpu_batch.storage_refs import TOKEN_REFRESH_RETRY_S

    handler, now = moved_clock_endpoint

    assert storage_requests(app_credential(), 2) == ["Bearer token-1"] * 2 and handler.asked == 1
    now["offset"] = 13 * 3600.0
    handler.up = False
    asked = handler.asked
    for _ in range(3):
        assert storage_requests(app_credential(), 4) == ["Bearer token-1"] * 4
    tries = handler.asked - asked
    assert 0 < tries <= 4, f"the endpoint was asked {tries} times for 12 requests"  # one try, with its retries
    handler.up = True
    now["offset"] += TOKEN_REFRESH_RETRY_S + 1
    assert storage_requests(app_credential(), 2) == ["Bearer token-2"] * 2


def test_a_token_whose_refresh_failed_serves_get_token_callers_too(
        moved_clock_endpoint: tuple[Any, dict[str, float]]) -> None:
    """``adapters.compose._source_auth`` asks the app's credential for a token with ``get_token`` at each block it
    stages from a URL (Put Block From URL's ``x-ms-copy-source-authorization``), not through a policy that keeps
    it. 13 h into the token's day with the identity endpoint silent, each such call went to MSAL, which asked the
    endpoint (four requests with azure-core's retries) before handing back the token in hand: 6 blocks, 24 requests.
    ``get_token`` now serves the held token as ``get_token_info`` does (``storage_refs.RefreshSparingCredential``):
    one try, then the next after ``TOKEN_REFRESH_RETRY_S``."""
    from adapters.identity import app_credential
    from gpu_batch.storage_refs import TOKEN_REFRESH_RETRY_S

    handler, now = moved_clock_endpoint
    storage = "https://storage.azure.com/.default"
    assert app_credential().get_token(storage).token == "token-1" and handler.asked == 1
    now["offset"] = 13 * 3600.0
    handler.up = False
    asked = handler.asked
    assert [app_credential().get_token(storage).token for _ in range(6)] == ["token-1"] * 6
    tries = handler.asked - asked
    assert 0 < tries <= 4, f"the endpoint was asked {tries} times for 6 blocks"  # one try, with its retries
    handler.up = True
    now["offset"] += TOKEN_REFRESH_RETRY_S + 1
    assert app_credential().get_token(storage).token == "token-2"
