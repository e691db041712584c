"""The resumed-listing benchmark's counting (``bench/resume_listing.py``), checked without Azurite: the kind each
request is counted as, the activity it is charged to (a thread pool's tasks too: ``adapters.compose`` deletes in
one), and what the resume adds over the first listing.

Why it matters: bench/RESULTS.md quotes these counts as exact; a LIST counted as a GET, or a pool's deletions left
uncharged, would quietly misstate what a resume costs."""
from __future__ import annotations

import concurrent.futures
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests.bench_scripts import load_bench


def _bench() -> ModuleType:
    return load_bench("resume_listing.py")


def test_a_listing_is_counted_as_list_and_other_requests_by_their_method() -> None:
    kind = _bench().request_kind
    assert kind("GET", "http://127.0.0.1:10000/devstoreaccount1/state?restype=container&comp=list&prefix=a") == "LIST"
    assert kind("GET", "http://127.0.0.1:10000/devstoreaccount1/?comp=list") == "LIST"  # the account's containers
    assert kind("GET", "http://127.0.0.1:10000/devstoreaccount1/state/tasks/t/etags.json") == "GET"
    assert kind("PUT", "http://127.0.0.1:10000/devstoreaccount1/state/x?comp=block&blockid=AA") == "PUT"
    assert kind("head", "http://127.0.0.1:10000/devstoreaccount1/state/x") == "HEAD"
    assert kind("DELETE", "http://127.0.0.1:10000/devstoreaccount1/state/x") == "DELETE"


def test_requests_are_charged_to_the_activity_that_sent_them_its_thread_pools_included(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core.pipeline.transport import RequestsTransport

    def fake_send(transport: Any, request: Any, **kwargs: Any) -> Any:
        status = 404 if request.url.endswith("/missing") else 200
        return SimpleNamespace(status_code=status, headers={"Content-Length": "7"})

    # the patches install makes are undone with these at the test's end
    monkeypatch.setattr(RequestsTransport, "send", fake_send)
    monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "submit", concurrent.futures.ThreadPoolExecutor.submit)
    bench = _bench()
    counter = bench.RequestCounter()
    counter.install()

    def send(method: str, url: str) -> None:
        RequestsTransport.send(None, SimpleNamespace(method=method, url=url))  # type: ignore[arg-type]

    def activity() -> None:
        send("GET", "http://a/c?restype=container&comp=list")
        send("GET", "http://a/c/missing")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # as adapters.compose.delete_prefix deletes
            list(pool.map(lambda n: send("DELETE", f"http://a/c/{n}"), range(3)))
            pool.submit(send, "PUT", "http://a/c/x").result()

    counter.tagged("finish_enumeration", activity)()
    send("GET", "http://a/c/y")  # no activity: the host's own
    assert counter.by_kind(("finish_enumeration",)) == {"DELETE": 3, "GET": 1, "LIST": 1, "PUT": 1}
    assert counter.by_kind(("",)) == {"GET": 1}
    assert counter.not_found == {("finish_enumeration", "GET"): 1}
    assert counter.bytes_in[("finish_enumeration", "DELETE")] == 21
    counter.reset()
    assert counter.by_kind(("finish_enumeration",)) == {}


def test_the_difference_is_what_the_resume_adds_per_shard_and_per_thousand_images() -> None:
    bench = _bench()

    def listing(gets: int, cpu: float) -> dict[str, Any]:
        return {"images": 20_000, "shards": 1000, "requests": {"GET": gets, "PUT": 2001},
                "etags_read": {"bytes_per_shard": 1071.0, "cpu_ms_per_shard": 1.3},
                "process_cpu_s_per_1000_images": cpu, "listing_activity_cpu_s_per_1000_images": cpu / 2}

    extra = bench.difference(listing(1010, 0.3), listing(1011, 0.4))
    assert extra["requests"] == {"GET": 1, "PUT": 0} and extra["requests_total"] == 1
    assert extra["requests_per_shard"] == 0.001 and extra["requests_per_1000_images"] == 0.05
    assert extra["process_cpu_s_per_1000_images"] == pytest.approx(0.1)
    assert extra["listing_activity_cpu_s_per_1000_images"] == pytest.approx(0.05)


def test_images_whose_results_a_neighbour_carries_are_not_counted_as_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rerun_images``: the names ``replaced`` finds less those found in a neighbour's earlier ETags
    (``activities.carried_results``), where the shard had earlier ETags (else ``replaced`` never saw them)."""
    from activities import carried_results, replaced_images
    from activities import enumerate as enumeration

    for module, name in ((enumeration, "drop_replaced_results"), (enumeration, "carry_moved_results"),
                         (enumeration, "etags_document_of"), (replaced_images, "replaced"),
                         (replaced_images, "earlier_etags")):
        monkeypatch.setattr(module, name, getattr(module, name))  # what install replaces, put back at the end
    monkeypatch.setattr(carried_results, "_found_in_neighbours", lambda *args: {4: ["b", "c"]})
    monkeypatch.setattr(replaced_images, "replaced", lambda shard, before, now: {"a", "b", "c"})

    def carry(store: Any, container: str, key: str, index: int, shard: list[str], now: Any, found: Any,
              run: str) -> int:
        return len(carried_results._found_in_neighbours(store, container, key, index, set(shard), found, now, run))

    monkeypatch.setattr(enumeration, "carry_moved_results", carry)
    bench = _bench()
    counter, reads = bench.RequestCounter(), bench.EtagsReads()
    reads.install(counter)
    replaced_images.replaced(["a", "b", "c"], {}, {})
    enumeration.carry_moved_results(None, "c", "k", 5, ["a", "b", "c"], {}, ("a", "c", {}), "r")
    enumeration.carry_moved_results(None, "c", "k", 9, ["x", "y"], {}, None, "r")  # a shard without earlier ETags
    figures = bench.listing_figures(counter, reads, 10, 2, 0.0, {}, 1.0)
    assert figures["rerun_images"] == 1 and figures["carried"]["moved_images"] == 4
    assert figures["carried"]["shards"] == 2


def test_a_listing_of_one_shard_folder_is_told_from_other_listings() -> None:
    """``shard_folder_listings`` counts the List Blobs of a shard's own folder (``layout.shard_prefix``) only: the
    readers a resumed listing has per shard (activities.shard_folders), not the listing of the key's shards folder
    (``listing_leftovers._folders_past``) or of a listing part."""
    folder = _bench().shard_folder
    base = "http://127.0.0.1:10000/devstoreaccount1/state?restype=container&comp=list"
    assert folder(base + "&prefix=tasks/t-1/shards/s00012/") == "tasks/t-1/shards/s00012/"
    assert folder(base + "&prefix=tasks%2Ft-1%2Fshards%2Fs123456%2F") == "tasks/t-1/shards/s123456/"
    assert folder(base + "&prefix=tasks/t-1/shards/&delimiter=/") == ""
    assert folder(base + "&prefix=tasks/t-1/shards/s00012/attempt-1") == ""
    assert folder(base) == ""
