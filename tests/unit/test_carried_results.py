"""activities.carried_results: which earlier entries a resumed run's listing carries to the shard it now cuts an image
in, from which neighbour, and what the ETags document it writes keeps for the neighbours (the end-to-end cases, through
the real parallel enumeration in Azurite, are tests/integration/test_carried_results.py)."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator, cast

from activities.carried_results import carry_moved_results, earlier_listing, etags_document
from adapters.blobs import BlobStore
from gpu_batch import layout

KEY, BOX, RUN = "task-x", "state", "task-x_r2"


class _Store:
    """What the module asks of a BlobStore, in memory."""

    def __init__(self, blobs: dict[str, Any]) -> None:
        self.blobs = {name: json.dumps(value).encode() for name, value in blobs.items()}
        self.read: list[str] = []

    def read_bytes_or_none(self, container: str, name: str) -> bytes | None:
        self.read.append(name)
        return self.blobs.get(name)

    def list_names(self, container: str, prefix: str = "") -> Iterator[str]:
        return iter(sorted(n for n in self.blobs if n.startswith(prefix)))

    def update_json(self, container: str, name: str, change: Callable[[Any], Any]) -> Any:
        new = change(json.loads(self.blobs[name]) if name in self.blobs else None)
        if new is not None:
            self.blobs[name] = json.dumps(new).encode()
        return new

    def doc(self, name: str) -> Any:
        return json.loads(self.blobs[name])


def _ok(name: str) -> dict[str, Any]:
    return {"file": name, "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 1, 1]}]}


def _retry(name: str) -> dict[str, Any]:
    return {"file": name, "failure": "image access failure", "detections": None, "failure_kind": "retryable"}


def _etags(index: int) -> str:
    return layout.shard_etags_blob(KEY, layout.shard_id(index))


def _results(index: int, attempt: int = 1) -> str:
    return layout.attempt_results_blob(KEY, layout.shard_id(index), attempt)


def test_the_document_written_keeps_for_the_neighbours_the_earlier_range_and_the_names_that_left() -> None:
    earlier = {"etags": {"a": "1", "b": "2", "c": "3"}}
    doc = etags_document({"b": "2", "c": "3", "d": "4"}, RUN, earlier)
    assert doc == {"etags": {"b": "2", "c": "3", "d": "4"}, "listing": RUN,
                   "before": {"range": ["a", "c"], "moved": {"a": "1"}}}
    assert earlier_listing(doc, RUN) == ("a", "c", {"a": "1"})  # a neighbour of this listing reads what it kept
    assert earlier_listing(doc, "task-x_r3") == ("b", "d", {"b": "2", "c": "3", "d": "4"})  # a later listing: its own
    assert etags_document({"b": "2", "c": "3", "d": "4"}, RUN, doc) == doc  # a call run again keeps the first's
    assert etags_document({"b": "2"}, "", earlier) == {"etags": {"b": "2"}}  # a listing without a run id: as before
    assert "before" not in etags_document({"b": "2"}, RUN, None)  # nothing before it


def test_a_shard_cut_past_the_earlier_listing_takes_final_entries_over_a_retryable_failure_it_holds() -> None:
    """Shard 2 is new (no earlier ETags): its names were in shard 1, whose document this listing wrote already. A
    retryable failure in its own attempt 1 (from a listing before ETags) gives way; an image replaced since (other
    ETag) is not carried, nor one whose only entry is a retryable failure."""
    store = _Store({
        _etags(1): {"etags": {"e": "5"}, "listing": RUN,
                    "before": {"range": ["c", "h"], "moved": {"f": "6", "g": "7", "h": "8"}}},
        _results(1): {"images": [_ok("f"), _retry("g")]},
        _results(1, 2): {"images": [_ok("h")], "info": {"trapbatch": {"damaged": ["h"]}}},
        _results(2): {"images": [_retry("f")], "info": {"trapbatch": {"attempt": 1}}},
    })
    now = {"f": "6", "g": "7", "h": "9"}
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 2, ["f", "g", "h"], now, None, RUN) == 1
    assert store.doc(_results(2)) == {"images": [_ok("f")], "info": {"trapbatch": {"attempt": 1}}}


def test_a_photo_cut_short_stays_named_and_a_missing_attempt_1_is_written() -> None:
    store = _Store({
        _etags(0): {"etags": {"a": "1", "b": "2"}},  # not rewritten yet: the earlier listing's
        _results(0): {"images": [_ok("a")]},
        _results(0, 2): {"images": [_ok("b")], "info": {"trapbatch": {"damaged": ["b"]}}},
        _etags(1): {"etags": {"c": "3"}},
    })
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 1, ["b", "c"], {"b": "2", "c": "3"},
                               json.loads(store.blobs[_etags(1)]), RUN) == 1
    doc = store.doc(_results(1))
    assert doc["images"] == [_ok("b")] and doc["info"]["trapbatch"]["damaged"] == ["b"]


def test_neighbours_are_read_only_while_a_new_name_sorts_beyond_the_earlier_ranges_read() -> None:
    """An image added inside the shard's earlier range is in no neighbour: none is read. One added between the left
    neighbour's range and the shard's: that neighbour only. A call run again (the document is its own): none."""
    store = _Store({_etags(i): {"etags": {f"{i}a": "1", f"{i}c": "1"}} for i in range(5)})
    own = json.loads(store.blobs[_etags(2)])
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 2, ["2a", "2b", "2c"], {"2b": "9"}, own, RUN) == 0
    assert store.read == []
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 2, ["1z", "2a", "2c"], {"1z": "9"}, own, RUN) == 0
    assert store.read == [_etags(1)]
    store.read.clear()
    mine = etags_document({"1z": "9", "2a": "1"}, RUN, own)
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 2, ["1z", "2a"], {"1z": "9"}, mine, RUN) == 0
    assert store.read == []


def test_a_neighbours_attempts_are_held_one_at_a_time_and_only_the_names_carried() -> None:
    """The neighbour's attempts are read whole to find the few names carried; at 100,000 images a shard each parses to
    a few hundred MB. Every attempt's entries were held until the last was read: the peak grew with the attempts
    (six here: nearly three times one attempt's parse). Now about one attempt's, whatever the number of attempts."""
    import tracemalloc

    from gpu_batch.formats import jsonio

    def entry(name: str) -> dict[str, Any]:
        return {"file": name, "max_detection_conf": 0.9,
                "detections": [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.2, 0.3, 0.4]} for _ in range(3)]}

    names = [f"a/{i:05d}.jpg" for i in range(3_000)]
    store = _Store({_etags(0): {"etags": {n: "1" for n in names}},
                    **{_results(0, attempt): {"images": [entry(n) for n in names]} for attempt in range(1, 7)},
                    _etags(1): {"etags": {"b": "1"}}})
    tracemalloc.start()
    try:
        jsonio.loads(store.blobs[_results(0)])
        one_attempt = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        carried = carry_moved_results(cast(BlobStore, store), BOX, KEY, 1, [names[-1], "b"], {names[-1]: "1"},
                                      json.loads(store.blobs[_etags(1)]), RUN)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert carried == 1 and store.doc(_results(1))["images"] == [entry(names[-1])]
    assert peak < 2 * one_attempt, (peak, one_attempt)


def _gone(name: str) -> dict[str, Any]:
    return {"file": name, "failure": "image access failure", "detections": None, "failure_kind": "permanent"}


def test_the_shards_own_later_attempts_carry_their_final_entries_into_attempt_1() -> None:
    """A node lost mid-shard: attempt 1 did "a", attempt 2 "b" (cut short) and failed "c" (retryable), attempt 3 found
    "d" undecodable; "e" was replaced since (other ETag: never carried, though an entry were left), "f" only failed
    retryably. The resumed attempt 1's worker keeps only its own output's entries: attempt 1 gets b, named cut short,
    and d. Attempt 0 (an ``only_new`` key's reused copies, which stand there for every reader) is not read."""
    store = _Store({
        _etags(0): {"etags": {n: "1" for n in "abcdef"}, "listing": "task-x_r1"},
        _results(0, 0): {"images": [_ok("c")]},
        _results(0): {"images": [_ok("a"), _retry("f")], "info": {"trapbatch": {"attempt": 1}}},
        _results(0, 2): {"images": [_ok("b"), _retry("c"), _ok("e")], "info": {"trapbatch": {"damaged": ["b", "e"]}}},
        _results(0, 3): {"images": [_gone("d"), _retry("f")]},
    })
    now = {**{n: "1" for n in "abcdf"}, "e": "2"}
    found = json.loads(store.blobs[_etags(0)])
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 0, list("abcdef"), now, found, RUN) == 2
    assert store.doc(_results(0)) == {"images": [_ok("a"), _retry("f"), _ok("b"), _gone("d")],
                                      "info": {"trapbatch": {"attempt": 1, "damaged": ["b"]}}}
    assert _results(0, 0) not in store.read
    store.read.clear()  # carried already: the later attempts are read again (a call run again before its document)
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 0, list("abcdef"), now, found, RUN) == 0


def test_no_later_attempt_is_read_without_one_nor_by_a_call_that_finds_its_own_document() -> None:
    """Most shards have attempt 1 only: one listing of the shard, no results read. A call run again after it wrote
    the shard's document (its own ETags, ``listing``: this run) carried everything before: nothing listed or read."""
    store = _Store({_etags(0): {"etags": {"a": "1", "b": "1"}}, _results(0): {"images": [_ok("a")]},
                    _results(1): {"images": []}, _results(1, 2): {"images": [_ok("b")]}})
    listed: list[str] = []
    lister = store.list_names

    def list_names(container: str, prefix: str = "") -> Iterator[str]:
        listed.append(prefix)
        return lister(container, prefix)
    store.list_names = list_names  # type: ignore[method-assign]
    found = json.loads(store.blobs[_etags(0)])
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 0, ["a", "b"], {"a": "1", "b": "1"}, found, RUN) == 0
    assert store.read == [] and listed == [layout.shard_prefix(KEY, layout.shard_id(0))]
    listed.clear()
    mine = etags_document({"b": "1"}, RUN, {"etags": {"b": "1"}})
    assert carry_moved_results(cast(BlobStore, store), BOX, KEY, 1, ["b"], {"b": "1"}, mine, RUN) == 0
    assert store.read == [] and listed == []
