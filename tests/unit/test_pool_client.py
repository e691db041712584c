"""adapters.clients.pool: concurrent first calls share one pool object.

A local or simulated pool keeps state per object (worker processes, the concurrency limit, simulated tasks); with
``functools.cache`` alone, concurrent first calls each built one and the cache kept the last, so the shards submitted
through the others were unknown to every later poll (a 10M-shape benchmark hung on three of five shard groups)."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from adapters import clients
from core.settings import Settings

AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT5"
           "0uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;")


def test_concurrent_first_calls_get_one_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpu_batch.pool as pools

    real = pools.make_pool

    def slow_make_pool(kind: str, **kwargs: Any) -> Any:
        time.sleep(0.2)  # a construction long enough for every thread to arrive while it runs
        return real(kind, **kwargs)

    monkeypatch.setattr(pools, "make_pool", slow_make_pool)
    clients._pool.cache_clear()
    settings = Settings.from_env({"AzureWebJobsStorage": AZURITE, "TRAPBATCH_POOL": "simulated",
                                  "TRAPBATCH_CONTAINER": "pool-client-test"})
    got: list[Any] = []
    barrier = threading.Barrier(6)

    def first_call() -> None:
        barrier.wait()
        got.append(clients.pool(settings))

    threads = [threading.Thread(target=first_call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    clients._pool.cache_clear()
    assert len(got) == 6 and len({id(p) for p in got}) == 1
