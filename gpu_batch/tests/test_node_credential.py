"""The worker's shared managed-identity credential (``gpu_batch.worker.node_clients.node_credential``) when the
node's IMDS stops answering in the second half of its token's life: the token in hand keeps serving, and IMDS is
asked again every ``storage_refs.TOKEN_REFRESH_RETRY_S``, not at every request. Real azure-identity and azure-core
against a local stand-in for IMDS (``AZURE_POD_IDENTITY_AUTHORITY_HOST``), the clock moved by the test."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest

from gpu_batch.tests.token_endpoint import DAY_S, STORAGE, TokenEndpoint, serve_tokens, storage_requests

@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[TokenEndpoint]]:
    """The stand-in IMDS, the node's only identity (the SDK's own IMDS retries cut to none: each try is one request
    here), and a clock the test moves (``time.time``, which MSAL and azure-core read)."""
    from azure.identity._credentials import imds as sdk_imds

    handler, server = serve_tokens()
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_TOKEN_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setitem(sdk_imds.PIPELINE_SETTINGS, "retry_total", 0)
    yield handler
    server.shutdown()
    server.server_close()


def test_a_token_whose_refresh_failed_serves_on_and_imds_is_asked_again_only_every_so_often(
        imds: type[TokenEndpoint], monkeypatch: pytest.MonkeyPatch) -> None:
    """13 h after its token was issued (past MSAL's refresh point, halfway), IMDS stops answering. MSAL then hands
    back the token in hand with its ``refresh_on`` past, and azure-core's policy asks again at every request: each
    of a shard's reads asked IMDS (~5-13 s of the SDK's retries each where it does not answer, ~75 s for a 410), so
    without the change these 3 shards of 10 reads asked it 30 times. Now once, and again after
    ``TOKEN_REFRESH_RETRY_S``; IMDS back, the next try gets a new token."""
    from gpu_batch import storage_refs
    from gpu_batch.worker import node_clients

    now = {"offset": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + now["offset"])
    credential = node_clients.node_credential()
    assert storage_requests(credential, 3) == ["Bearer token-1"] * 3 and imds.asked == 1
    now["offset"] = 13 * 3600.0
    imds.up, imds.asked = False, 0
    for _ in range(3):
        assert storage_requests(credential, 10) == ["Bearer token-1"] * 10
    assert imds.asked == 1, f"IMDS asked {imds.asked} times for 30 reads"
    now["offset"] += storage_refs.TOKEN_REFRESH_RETRY_S + 1
    assert storage_requests(credential, 10) == ["Bearer token-1"] * 10
    assert imds.asked == 2
    imds.up = True
    now["offset"] += storage_refs.TOKEN_REFRESH_RETRY_S + 1
    assert storage_requests(credential, 3) == ["Bearer token-2"] * 3 and imds.asked == 3
    assert storage_requests(credential, 3) == ["Bearer token-2"] * 3 and imds.asked == 3  # fresh: no more asking


def test_an_expired_token_is_not_held_and_the_failure_is_the_callers(imds: type[TokenEndpoint],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Within 5 minutes of its expiry (where MSAL stops using a cached token) nothing is held: with IMDS silent the
    token request fails as it did (the worker's exit 69), at each use."""
    from azure.core.exceptions import ClientAuthenticationError

    from gpu_batch.worker import node_clients

    now = {"offset": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + now["offset"])
    credential = node_clients.node_credential()
    assert storage_requests(credential, 1) == ["Bearer token-1"]
    now["offset"] = DAY_S - 200.0
    imds.up, imds.asked = False, 0
    for tries in (1, 2):
        with pytest.raises(ClientAuthenticationError):
            storage_requests(credential, 1)
        assert imds.asked == tries


def test_a_claims_challenge_answered_with_a_new_token_ends_the_held_one(imds: type[TokenEndpoint],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A resource that refuses a token with a CAE claims challenge (azure-core's ``on_challenge``, Key Vault's
    ``ChallengeAuthPolicy``: ``authorize_request(..., claims=...)``) says that token was revoked. The claims request
    gets a new token from IMDS (MSAL ``acquire_token_for_client`` with ``claims_challenge`` falls back to no cached
    token), which MSAL caches in place of the old one. Without the change the wrapper kept handing out the revoked
    token it held to every other client (each then refused again) until its next try; now the next request gets
    the new one, from MSAL's cache (no further IMDS request)."""
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy
    from azure.core.rest import HttpRequest

    from gpu_batch.worker import node_clients

    now = {"offset": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + now["offset"])
    credential = node_clients.node_credential()
    assert storage_requests(credential, 1) == ["Bearer token-1"]
    now["offset"] = 13 * 3600.0
    imds.up = False
    assert storage_requests(credential, 2) == ["Bearer token-1"] * 2  # held: the refresh failed
    imds.up, imds.asked = True, 0
    challenged = BearerTokenCredentialPolicy(credential, STORAGE)
    request = PipelineRequest(HttpRequest("GET", "https://own.blob.core.windows.net/c/b.jpg"), PipelineContext(None))
    challenged.authorize_request(request, STORAGE, claims='{"access_token":{"nbf":{"essential":true,"value":"1"}}}')
    assert request.http_request.headers["Authorization"] == "Bearer token-2" and imds.asked == 1
    assert storage_requests(credential, 2) == ["Bearer token-2"] * 2, "the revoked token was handed out again"
    assert imds.asked == 1


class _ScriptedInner:
    """A credential whose refresh failed as MSAL's does (the token in hand back, its ``refresh_on`` past) unless a
    claims request gets a new one; ``hold`` makes the next non-claims request wait until ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.hold = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.current = "token-1"

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        self.calls.append(dict(options or {}))
        now = time.time()
        if (options or {}).get("claims"):
            self.current = "token-2"
            return AccessTokenInfo(self.current, int(now + DAY_S), refresh_on=int(now + DAY_S / 2))
        served = self.current  # read from the cache before the try, as MSAL's fallback hands back
        if self.hold.is_set():
            self.hold.clear()
            self.entered.set()
            assert self.release.wait(60), "the test never released the refresh try"
        return AccessTokenInfo(served, int(now + DAY_S / 2), refresh_on=int(now - 1))


def test_a_refresh_try_that_outlasts_the_retry_pause_is_not_joined_by_another_caller(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """IMDS's own retries against 410s take ~75 s, more than ``TOKEN_REFRESH_RETRY_S``: while one caller's try was
    still in flight, the next caller past the pause started a second try, and every 30 s another reading thread
    stalled in one. One try at a time: the others get the token in hand until it ends."""
    from gpu_batch import storage_refs

    now = {"offset": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + now["offset"])
    inner = _ScriptedInner()
    credential = storage_refs.RefreshSparingCredential(inner)
    assert credential.get_token_info(STORAGE).token == "token-1" and len(inner.calls) == 1  # refresh failed: held
    now["offset"] += storage_refs.TOKEN_REFRESH_RETRY_S + 1
    inner.hold.set()
    trying = threading.Thread(target=credential.get_token_info, args=(STORAGE,), daemon=True)
    trying.start()
    assert inner.entered.wait(60)
    now["offset"] += storage_refs.TOKEN_REFRESH_RETRY_S + 1  # the try still in flight past the pause
    assert credential.get_token_info(STORAGE).token == "token-1"
    assert len(inner.calls) == 2, "a second refresh try started while one was in flight"
    inner.release.set()
    trying.join(60)
    assert not trying.is_alive()


def test_a_refresh_try_in_flight_when_a_claims_challenge_is_answered_does_not_hold_the_revoked_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A try started before a CAE claims challenge came back, after the challenge's new token, with the token it
    read from MSAL's cache before (the revoked one), and the wrapper held that again for 30 s: every client it was
    handed to was refused again. A try that began before a claims answer holds nothing."""
    from gpu_batch import storage_refs

    now = {"offset": 0.0}
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + now["offset"])
    inner = _ScriptedInner()
    credential = storage_refs.RefreshSparingCredential(inner)
    assert credential.get_token_info(STORAGE).token == "token-1"  # refresh failed: held
    now["offset"] += storage_refs.TOKEN_REFRESH_RETRY_S + 1
    inner.hold.set()
    late: list[Any] = []
    trying = threading.Thread(target=lambda: late.append(credential.get_token_info(STORAGE)), daemon=True)
    trying.start()
    assert inner.entered.wait(60)
    claims = '{"access_token":{"nbf":{"essential":true,"value":"1"}}}'
    assert credential.get_token_info(STORAGE, options={"claims": claims}).token == "token-2"
    inner.release.set()
    trying.join(60)
    assert late and late[0].token == "token-1"
    assert credential.get_token_info(STORAGE).token == "token-2", "the revoked token was held again"
