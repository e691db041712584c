"""POST /api/tasks answers within Azure's 230-s HTTP limit when the images' account does not answer.

Azure's front end cuts an HTTP function's answer at 230 s (devhost/README.md row 28): the caller gets a 502 saying
nothing while the function runs on. The POST's storage and Key Vault calls are bound by
``api.starters.POST_CHECKS_DEADLINE_S`` with the storage SDK's own timeouts a try (``POST_TRY_TIMEOUTS``), so an
account that accepts connections and never answers ends in the app's own 503 with Retry-After, which the CLI waits
out; with the SDKs' retries the same took over 300 s.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Iterator

import azure.functions as func
import pytest

from adapters.blobs import BlobStore
from api import starters
from gpu_batch.tests.test_storage_refs import DeadlineClock, _Spending
from gpu_batch.tests.test_storage_refs import deadline_clock  # noqa: F401 - the fixture: the SDKs' waits on a clock
from tests.integration.test_drop_redelivery import Client

PARTNER = "https://partnerimages.blob.core.windows.net"


@pytest.fixture
def hanging_partner(app_env: dict[str, str], deadline_clock: DeadlineClock, tmp_path: Any,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[_Spending]:
    """Another account, allowed and with its SAS in the local secrets file, whose every request hangs until its
    timeouts (on the test's clock): the transport every deadline client builds (``deadline_storage_options``)."""
    from azure.core.pipeline import transport as transports

    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"images-sas": "sv=2024-01-01&sig=abc"}))
    monkeypatch.setenv("TRAPBATCH_LOCAL_SECRETS_FILE", str(secrets))
    monkeypatch.setenv("TRAPBATCH_SOURCE_ACCOUNTS", PARTNER)
    monkeypatch.setattr(starters, "_clock", deadline_clock)
    spending = _Spending(deadline_clock, "hang")
    monkeypatch.setattr(transports, "RequestsTransport", lambda **kwargs: spending)
    yield spending


def _post(body: dict[str, Any], client: Client) -> func.HttpResponse:
    fn = starters.post_task._function.get_user_function().__wrapped__  # http_edge (answers), no durable binding
    req = func.HttpRequest(method="POST", url="http://localhost/api/tasks",
                           headers={"content-type": "application/json"}, body=json.dumps(body).encode())
    return asyncio.run(fn(req, client))


def test_a_post_whose_images_account_never_answers_is_the_apps_503_well_inside_the_front_ends_230_s(
        hanging_partner: _Spending, deadline_clock: DeadlineClock, store: BlobStore) -> None:
    """Every try is sent with the storage SDK's own timeouts (20 s to connect, 60 s to read), none past the
    deadline, and a retry only while a try as long as the last fits: two tries of 80 s, then the app's 503 with
    Retry-After (the CLI waits it out and posts again), all within ``POST_CHECKS_DEADLINE_S``; no task started."""
    client = Client()
    started = deadline_clock.now
    hanging_partner.left = lambda: started + starters.POST_CHECKS_DEADLINE_S - deadline_clock.now
    answer = _post({"container": "images", "source_account_url": PARTNER, "credential_secret": "images-sas"}, client)
    spent = deadline_clock.now - started
    body = json.loads(answer.get_body())
    assert answer.status_code == 503 and answer.headers.get("Retry-After"), (answer.status_code, body)
    assert "did not answer or is busy" in body["error"] + body["hint"], body
    assert spent <= starters.POST_CHECKS_DEADLINE_S < 230 - 30, (spent, deadline_clock.slept)
    sent = [(connect, read) for connect, read, _ in hanging_partner.timeouts]
    assert sent[0] == starters.POST_TRY_TIMEOUTS and len(sent) == 2, hanging_partner.timeouts
    assert all(connect + read <= left + 1e-9 for connect, read, left in hanging_partner.timeouts)
    assert client.starts == []


class _SlowHub(Client):
    """A task hub whose management API takes ``answer_s`` to read a status (the SDK waits up to 240 s a call)."""

    answer_s = 5.0

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.answer_s)
        return await super().get_status(instance_id, *args, **kwargs)


def test_a_post_whose_task_hub_answers_too_late_is_the_apps_503_before_the_front_ends_230_s(
        app_env: dict[str, str], store: BlobStore, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks end by ``POST_CHECKS_DEADLINE_S``, but the durable client's calls after them (the task's status,
    the start) had no bound but the SDK's 240 s a call: a slow task hub answered after the front end's 230 s, a bare
    502. The whole POST now answers within ``POST_ANSWER_S`` (scaled down here): the app's 503 with Retry-After."""
    images = f"{unique_name}-img"
    store.ensure_container(images)
    monkeypatch.setattr(starters, "POST_ANSWER_S", 1.0)
    client = _SlowHub()
    started = time.monotonic()
    answer = _post({"container": images}, client)
    spent = time.monotonic() - started
    body = json.loads(answer.get_body())
    assert answer.status_code == 503 and answer.headers.get("Retry-After"), (answer.status_code, body)
    assert spent < _SlowHub.answer_s, spent
    assert client.starts == []
