"""A resident worker's per-shard storage and Key Vault clients hold no sockets and ask for no token past their shard.

A node-resident worker (``gpu_batch.worker.resident``) runs thousands of shards a day in one process. Each shard built
its own account's ``BlobServiceClient`` (``sources.blob_service_from_env``), a Key Vault reader
(``storage_refs.secret_reader_from_env``) and, for another account, that account's client
(``storage_refs.source_service``): each with a ``requests.Session`` whose pooled sockets (the image reads run on many
threads) stayed open until a cyclic garbage collection, and each with a fresh ``DefaultAzureCredential``, whose empty
token cache asks the node's IMDS again. Measured here: the process's open descriptors across 20 shards run in one
process through ``run_shard`` (as the server runs them) with the garbage collector off, and the credentials made
across 20 shards' clients; and that the secret is still read at each shard (a rotated SAS takes effect at the next).
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import (AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas)

from gpu_batch import storage_refs
from gpu_batch.manifest import ShardManifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker import __main__ as cli
from gpu_batch.worker import sources

SHARDS = 20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The garbage collector off, as between a resident server's rare cyclic collections; on again after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def _account_sas(service: BlobServiceClient) -> str:
    return generate_account_sas(str(service.account_name), service.credential.account_key,
                                ResourceTypes(service=True, container=True, object=True),
                                AccountSasPermissions(read=True, list=True),
                                expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))


def test_twenty_shards_in_one_process_leave_no_sockets_open(storage_connection: str, unique_name: str,
                                                            small_input_checkpoint: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, no_gc: None) -> None:
    """Shards reading another account's images (its SAS from the secret store) on 8 threads, as a resident server
    runs them: the open descriptors after 20 shards are at most the fetch threads' connections more than after
    the first (without the change: +5.5 per shard)."""
    from gpu_batch.worker.faults import Fault
    from gpu_batch.worker.resident import ModelCache

    admin = BlobServiceClient.from_connection_string(storage_connection)
    images, state, out = unique_name + "img", unique_name + "state", unique_name + "out"
    for name in (images, state, out):
        admin.create_container(name)
    names = [f"cam/{i}.jpg" for i in range(8)]
    for i, name in enumerate(names):
        admin.get_blob_client(images, name).upload_blob(jpeg_bytes(textured(64, 48, i)))
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"src": _account_sas(admin)}))
    for key in [k for k in os.environ if k.startswith("TRAPBATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(sources.CONNECTION_ENV, storage_connection)
    monkeypatch.setenv(storage_refs.LOCAL_SECRETS_ENV, str(secrets))
    monkeypatch.setenv("TRAPBATCH_MODEL_CACHE", str(tmp_path / "models"))
    models = ModelCache()
    counts = []
    for shard in range(SHARDS):
        doc = ShardManifest(task_id="task-fd", shard_id=f"s{shard}", attempt=1, source_container=images,
                            images=tuple(names), output_container=out, output_blob=f"s{shard}.json",
                            model=str(small_input_checkpoint), detection_threshold=0.005,
                            source_account_url=admin.url.rstrip("/"), source_credential_secret="src").to_dict()
        blob = f"m/s{shard}.json"
        admin.get_blob_client(state, blob).upload_blob(json.dumps(doc))
        args = cli.parse_args(["--manifest-container", state, "--manifest-blob", blob, "--device", "cpu",
                               "--workers", "8", "--batch-size", "1", "--flush-seconds", "0.2"], os.environ)
        assert not isinstance(args, int)
        outcome = cli.run_shard(args, dict(os.environ), Fault.from_env({}), process_started=time.time(),
                                models=models)
        assert outcome.code == cli.EXIT_OK and outcome.summary is not None
        assert outcome.summary["done"] == len(names) and outcome.summary["failed"] == 0
        time.sleep(0.2)  # the shard's own threads (writer, readers) have ended
        counts.append(_open_fds())
    # the shared session keeps at most one connection per fetch thread that read at once (8 here; its pool holds
    # up to node_clients.POOL_CONNECTIONS): which peak a shard reaches varies, so the first shard need not have opened
    # them all; without the change the count grew by ~5.5 every shard (21 -> 125)
    assert counts[-1] - counts[0] <= 8, f"open descriptors after each shard: {counts}"


class CountingCredential:
    """Stands in for ``DefaultAzureCredential``: each instance is a fresh token cache, so its first token is a request
    to the node's IMDS (azure-identity ``TOKEN_CACHING.md``); ``made`` counts instances, ``asked`` those requests."""

    made = 0
    asked = 0

    def __init__(self, **kwargs: Any) -> None:
        type(self).made += 1
        self._token: AccessToken | None = None

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self._token is None:
            type(self).asked += 1
            self._token = AccessToken("t", int(time.time()) + 3600)
        return self._token

    def close(self) -> None:
        pass


def _session_of(client: Any) -> Any:
    """The ``requests.Session`` a storage client sends through (a child client's transport wraps its parent's)."""
    transport = client._pipeline._transport
    while not hasattr(transport, "session"):
        transport = transport._transport
    return transport.session


class FakeSecretClient:
    """Stands in for ``azure.keyvault.secrets.SecretClient``: answers ``value`` (a SAS, rotated by the test) and records
    the credential and transport each client was made with."""

    value = "sv=2025-01-05&sig=first"
    reads = 0
    made: list[tuple[Any, Any]] = []

    def __init__(self, vault_url: str, credential: Any, **kwargs: Any) -> None:
        type(self).made.append((credential, kwargs.get("transport")))

    def get_secret(self, name: str) -> Any:
        type(self).reads += 1
        return SimpleNamespace(value=type(self).value)


def test_twenty_shards_clients_ask_for_one_credential_and_read_the_secret_each_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The own account by managed identity, a Key Vault configured, images in another account by identity (even
    shards) or by a SAS in the vault (odd ones): one credential for the process, not three per shard (without the
    change: 60), and one session; the secret is read at each shard that needs it, so a rotated SAS is the next
    shard's."""
    import azure.identity
    import azure.keyvault.secrets

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", CountingCredential)
    monkeypatch.setattr(CountingCredential, "made", 0)
    monkeypatch.setattr(azure.keyvault.secrets, "SecretClient", FakeSecretClient)
    monkeypatch.setattr(FakeSecretClient, "made", [])
    monkeypatch.setattr(FakeSecretClient, "value", FakeSecretClient.value)
    env = {sources.ACCOUNT_URL_ENV: "https://own.blob.core.windows.net",
           storage_refs.KEY_VAULT_ENV: "https://vault.vault.azure.net"}
    args = cli.parse_args(["--manifest-container", "c", "--manifest-blob", "b", "--device", "cpu"], env)
    assert not isinstance(args, int)
    sessions, sas = set(), []
    for shard in range(SHARDS):
        if shard == 11:
            FakeSecretClient.value = "sv=2025-01-05&sig=rotated"
        service = sources.blob_service_from_env(env)
        manifest = ShardManifest(task_id="t", shard_id=f"s{shard}", attempt=1, source_container="images",
                                 images=("a.jpg",), output_container="out", output_blob="o.json", model="m",
                                 detection_threshold=0.1, source_account_url="https://other.blob.core.windows.net",
                                 source_credential_secret="src" if shard % 2 else "")
        opened = cli._open_images_and_output(args, env, True, service, manifest, "label")
        assert opened is not None
        source = opened[0]
        assert isinstance(source, sources.BlobImageSource)
        for client in (service, source.container):
            sessions.add(id(_session_of(client)))
        if shard % 2:
            sas.append(source.container.url.split("?", 1)[1])
    assert CountingCredential.made <= 1, f"{CountingCredential.made} credentials for {SHARDS} shards"
    assert len(sessions) == 1, f"{len(sessions)} sessions for {SHARDS} shards"
    assert FakeSecretClient.reads == SHARDS // 2
    assert sas == ["sv=2025-01-05&sig=first"] * 5 + ["sv=2025-01-05&sig=rotated"] * 5
    assert {id(transport.session) for _, transport in FakeSecretClient.made} <= sessions


def test_a_shards_fetch_threads_at_once_keep_their_connections_in_the_shared_session(
        storage_connection: str, unique_name: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The shard's 16 fetch threads (``pipeline.PipelineOptions.workers``) read images from one account at once
    through the shared session: with requests' pool of 10 connections a host, each connection returned past the
    tenth was closed ("Connection pool is full, discarding connection") and a later read opened a new one."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from gpu_batch.worker.pipeline import PipelineOptions

    threads = PipelineOptions().workers
    monkeypatch.setenv(sources.CONNECTION_ENV, storage_connection)
    container = BlobServiceClient.from_connection_string(storage_connection).create_container(unique_name)
    for i in range(threads):
        container.upload_blob(f"img{i}.jpg", b"x" * 1000)
    service = sources.blob_service_from_env()
    barrier = threading.Barrier(threads)

    def fetch(i: int) -> None:
        blob = service.get_blob_client(unique_name, f"img{i}.jpg")
        barrier.wait(timeout=60)  # all at once, as the fetch threads read
        for _ in range(3):
            assert blob.download_blob().readall() == b"x" * 1000

    caplog.set_level("WARNING", logger="urllib3.connectionpool")
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fetch, range(threads)))
    finally:
        container.delete_container()
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()], "connections were discarded"


@pytest.mark.parametrize("images_account, secret", [("", ""), ("https://other.blob.core.windows.net", "src")])
def test_a_shard_whose_clients_need_no_identity_makes_no_credential(
        storage_connection: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images_account: str,
        secret: str) -> None:
    """A worker on a connection string (LocalPool, devhost, Azurite) whose images are its own account's, or another's
    by a SAS from a local secrets file, asks no managed identity for anything: it builds no ``DefaultAzureCredential``
    and so imports no ``azure.identity`` (~0.15 s here) on its way to the first batch, as before the shared
    credential (issue 14: a one-shot worker's start-up time)."""
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", CountingCredential)
    monkeypatch.setattr(CountingCredential, "made", 0)
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"src": "sv=2025-01-05&sig=x"}))
    env = {sources.CONNECTION_ENV: storage_connection, storage_refs.LOCAL_SECRETS_ENV: str(secrets)}
    args = cli.parse_args(["--manifest-container", "c", "--manifest-blob", "b", "--device", "cpu"], env)
    assert not isinstance(args, int)
    manifest = ShardManifest(task_id="t", shard_id="s", attempt=1, source_container="images", images=("a.jpg",),
                             output_container="out", output_blob="o.json", model="m", detection_threshold=0.1,
                             source_account_url=images_account, source_credential_secret=secret)
    opened = cli._open_images_and_output(args, env, True, sources.blob_service_from_env(env), manifest, "label")
    assert opened is not None
    assert CountingCredential.made == 0
