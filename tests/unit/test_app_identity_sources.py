"""The app's identity reading what is not its own storage (a source account named without a secret, the Event Grid
topic) when its token endpoint does not answer: busy, as for its own storage (tests/unit/test_app_identity.py, whose
stand-in endpoint this uses), not a refusal. The GPU worker keeps DefaultAzureCredential and its own exit-69 rule."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError

from adapters import clients
from adapters.event_grid import EventGridPublisher, PublishFailed, TopicUnavailable
from adapters.identity import TokenEndpointUnavailable
from core.settings import Settings
from orchestrations.retries import is_busy
from tests.unit.test_app_identity import CONFIGURATION, PASSING, endpoint  # noqa: F401 - the fixture
from tests.unit.test_task_events import ENDPOINT, FakeCredential, FakeTopic

PARTNER = "https://partnerphotos.blob.core.windows.net"


def _as_orchestrator_sees_it(name: str, exc: BaseException) -> Exception:
    return Exception(f"Activity function '{name}' failed: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("endpoint", PASSING + CONFIGURATION, indirect=True)
def test_a_source_account_read_with_the_apps_identity_is_busy_when_its_token_endpoint_did_not_answer(
        endpoint: str) -> None:
    """An account the request names without a credential_secret is read with the app's identity: the enumeration's
    listing there failed as ClientAuthenticationError, not busy (three quick calls, then the task failed)."""
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_SOURCE_ACCOUNTS": PARTNER})
    source = clients.source_store(s, PARTNER, "")
    with pytest.raises(ClientAuthenticationError) as failed:  # the token is asked for before anything is sent
        source.service.get_container_client("images").exists(retry_total=0)
    busy = is_busy(_as_orchestrator_sees_it("enumerate_images", failed.value))
    assert busy is (endpoint in PASSING) and isinstance(failed.value, TokenEndpointUnavailable) is busy, failed.value


@pytest.mark.parametrize("endpoint", PASSING + CONFIGURATION, indirect=True)
def test_an_event_grid_publish_is_busy_when_the_apps_token_endpoint_did_not_answer(endpoint: str) -> None:
    topic = FakeTopic()
    with pytest.raises(PublishFailed) as failed:
        EventGridPublisher(ENDPOINT, transport=topic).publish([{"id": "e"}])
    busy = is_busy(_as_orchestrator_sees_it("publish_task_event", failed.value))
    assert busy is (endpoint in PASSING) and isinstance(failed.value, TopicUnavailable) is busy, failed.value
    assert "stand-in-header" not in str(failed.value)


@pytest.mark.parametrize("status, busy", [(503, True), (500, True), (429, True), (403, False), (400, False)])
def test_a_topic_answering_later_is_busy_and_a_refusal_is_not(status: int, busy: bool) -> None:
    topic = FakeTopic((status, {"error": {"code": "Later" if busy else "Refused", "message": "x"}}))
    with pytest.raises(PublishFailed) as failed:
        EventGridPublisher(ENDPOINT, credential=FakeCredential(), transport=topic).publish([{"id": "e"}])
    assert is_busy(_as_orchestrator_sees_it("publish_task_event", failed.value)) is busy, failed.value


@pytest.mark.parametrize("endpoint", PASSING + CONFIGURATION, indirect=True)
def test_the_batch_pool_client_is_busy_when_the_apps_token_endpoint_did_not_answer(endpoint: str) -> None:
    """The pool the app's submit and poll activities use (``clients._pool``, azure_batch): its Batch client took the
    app's token through a plain DefaultAzureCredential, so a silent endpoint failed a poll as not busy."""
    pool = clients._pool("azure_batch", "UseDevelopmentStorage=true", "trapbatch", 0, "", "", (),
                         ("https://acct.westeurope.batch.azure.com", f"gpu-{endpoint}", "acr.io/w:1", "client-guid",
                          "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/"
                          "userAssignedIdentities/id-nodes", "https://acct.blob.core.windows.net"), 3600)
    with pytest.raises(Exception) as failed:  # the token is asked for before anything is sent
        pool.poll("j", ["s00000-a1"])
    busy = is_busy(_as_orchestrator_sees_it("poll_shards", failed.value))
    assert busy is (endpoint in PASSING), failed.value
