"""A resumed run's listing carries earlier results of images it cut into another shard (``activities.carried_results``).

A failed or terminated run posted again lists its key again and cuts the shards anew by count: images added meanwhile
that sort before others (deleted ones, the other way) move every later shard's boundary. Enumerations made in Azurite
by the real parallel enumeration, each run with its own pool job (``run_job``: its own listing folder), as
``api.starters`` resumes a terminated run; several shard-writing batches (``SMALL``), so a neighbour's ETags document
is found both rewritten by the resumed listing already and not yet.
"""
from __future__ import annotations

from typing import Any, cast

import pytest

from activities import listing_leftovers
from activities.enumerate import run_write_shards
from activities.fanin import clean_view, run_merge_part
from activities.merge import _merged_shard, task_threshold
from activities.pool import run_stop_groups
from adapters.blobs import BlobStore
from core import contracts as c
from core.requests import TaskRequest
from core.settings import Settings
from gpu_batch import layout
from gpu_batch import manifest as contract
from gpu_batch.formats.entries import damaged_in
from gpu_batch.formats.mergeview import EarlierAttempt, build_view
from gpu_batch.worker.results import failure_entry, load_resumable_state
from tests.integration.test_parallel_enumeration import SMALL, env, manifests, run_parallel  # noqa: F401 - fixture

TASK = "task-carried"
FIRST_JOB = layout.pool_job_id(TASK, "r260101120000ab12")
SECOND_JOB = layout.pool_job_id(TASK, "r260101130000cd34")
CUT_SHORT = "a/b/c/d/e/f.jpg"  # done by its shard's attempt 2, cut short (a photo decoded as far as it goes)


def _entry(name: str, run: int) -> dict[str, Any]:
    """A success whose detection says which run made it and for which image."""
    return {"file": name, "max_detection_conf": 0.5,
            "detections": [{"category": "1", "conf": 0.5, "bbox": [0.1, 0.1, 0.2, 0.2], "by": f"{run}:{name}"}]}


class _Sink:
    """The resumed attempt 1's output as its worker reads it (``load_resumable_state``)."""

    def __init__(self, store: BlobStore, container: str, name: str) -> None:
        self.store, self.container, self.name = store, container, name

    def read(self) -> bytes | None:
        return self.store.read_bytes_or_none(self.container, self.name)

    def write(self, data: bytes) -> str | None:
        raise AssertionError("not written here")

    def describe(self) -> str:
        return self.name


def _first_run(settings: Settings, store: BlobStore, container: str) -> tuple[TaskRequest, dict[str, Any]]:
    """Listed, every image done by its shard's attempt 1 but ``CUT_SHORT``, which its attempt 1 could not read and
    its attempt 2 did, cut short; then terminated and replaced."""
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST_JOB)
    done: dict[str, Any] = {}
    for i, shard in enumerate(manifests(settings, store, TASK)):
        entries = [_entry(n, 1) for n in shard if n != CUT_SHORT]
        done.update((e["file"], e) for e in entries)
        if CUT_SHORT in shard:
            entries.append(failure_entry(CUT_SHORT, "image access failure", contract.REASON_DOWNLOAD))
            done[CUT_SHORT] = _entry(CUT_SHORT, 1)
            store.write_json(settings.container, layout.attempt_results_blob(TASK, layout.shard_id(i), 2),
                             {"images": [done[CUT_SHORT]], "info": {"trapbatch": {"damaged": [CUT_SHORT]}}})
        store.write_json(settings.container, layout.attempt_results_blob(TASK, layout.shard_id(i), 1),
                         {"images": entries})
    run_stop_groups({"task_id": TASK, "job_id": FIRST_JOB, "reason": "terminated", "superseded_by": "r2"},
                    settings, store)
    return request, done


def _run_again(settings: Settings, store: BlobStore) -> list[str]:
    """What the resumed run's attempt 1 of each shard runs (its manifest less what its worker keeps of the results
    there: ``load_resumable_state``), done then as its worker writes it (what it kept, with the photos cut short among
    them, and what it ran); returns those names."""
    ran: list[str] = []
    for i, shard in enumerate(manifests(settings, store, TASK)):
        blob = layout.attempt_results_blob(TASK, layout.shard_id(i), 1)
        kept, cut_short = load_resumable_state(_Sink(store, settings.container, blob), shard)
        todo = [n for n in shard if n not in kept]
        ran += todo
        store.write_json(settings.container, blob, {"images": [*kept.values(), *(_entry(n, 2) for n in todo)],
                                                    "info": {"trapbatch": {"damaged": sorted(cut_short)}}})
    return ran


def _merged(settings: Settings, store: BlobStore) -> tuple[dict[str, Any], list[str]]:
    """The merge of every shard of the resumed listing: entries by file (each file once), and the photos cut short
    as the merge lists them (``damaged.csv``'s rows of its one part)."""
    merged: dict[str, Any] = {}
    shards = len(manifests(settings, store, TASK))
    for i in range(shards):
        entries, missing = _merged_shard(store, settings, TASK, i, None)
        assert missing == 0
        for entry in entries:
            assert entry["file"] not in merged, entry["file"]
            merged[entry["file"]] = entry
    out = run_merge_part({"task_id": TASK, "part": 0, "first_shard": 0, "shards": shards}, settings, store)
    assert out["missing"] == 0 and out["images"] == len(merged)
    rows = store.read_bytes_or_none(settings.container, layout.merge_part_blob(TASK, 0, "damaged.csv", ""))
    return merged, (rows or b"").decode().split()


@pytest.mark.parametrize("first", [2, 7], ids=["less-than-a-shard", "over-two-shards"])
def test_a_resumed_listing_after_insertions_runs_only_the_added_images(env: tuple[Settings, BlobStore, str],
                                                                       first: int) -> None:
    """Images added meanwhile before all others (``first`` of them: shards of 3) and in the middle, and one replaced:
    every later shard's boundary moved, and each such shard ran again the images at its head that the earlier listing
    had put in a shard before it (its whole self past a shard's worth). Now only the added and the replaced images run
    again; every other image is merged once, with the first run's detections, the photo cut short named once."""
    settings, store, container = env
    request, done = _first_run(settings, store, container)
    before = [n for shard in manifests(settings, store, TASK) for n in shard]
    added = [f"0/new-{i}.jpg" for i in range(first)] + ["cams/site0/cam0/00a.jpg"]
    replaced = before[5]
    for name in added:
        store.write_bytes(container, name, b"")
    store.write_bytes(container, replaced, b"other bytes")

    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)  # the resumed run's listing
    listing = manifests(settings, store, TASK)
    assert [n for shard in listing for n in shard][:first] == added[:first] and len(listing) > 5
    ran = _run_again(settings, store)

    assert sorted(ran) == sorted([*added, replaced])
    merged, damaged = _merged(settings, store)
    assert sorted(merged) == sorted(n for shard in listing for n in shard)
    assert all(merged[n] == done[n] for n in before if n != replaced)
    assert merged[replaced] == _entry(replaced, 2)
    assert damaged == [CUT_SHORT]


def test_a_resumed_listing_after_deletions_runs_nothing_again(env: tuple[Settings, BlobStore, str]) -> None:
    """The first two images deleted meanwhile: every shard's boundary moved the other way, each shard taking images the
    earlier listing put in the shard after it. Nothing runs again; every image left is merged once, as it was."""
    settings, store, container = env
    request, done = _first_run(settings, store, container)
    before = [n for shard in manifests(settings, store, TASK) for n in shard]
    for name in before[:2]:
        store.delete_if_exists(container, name)

    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)
    listing = manifests(settings, store, TASK)
    assert [n for shard in listing for n in shard] == before[2:]
    assert _run_again(settings, store) == []
    merged, damaged = _merged(settings, store)
    assert merged == {n: done[n] for n in before[2:]}
    assert damaged == [CUT_SHORT]


@pytest.mark.parametrize("when", ["after", "before"], ids=["after-its-etags", "before-its-etags"])
def test_a_listing_call_run_again_carries_nothing_twice_and_loses_nothing(
        env: tuple[Settings, BlobStore, str], monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """An activity runs at least once: a ``write_shard_manifests`` call of the resumed listing run again, once its run
    wrote its shards (it finds its own ETags: no name new to any shard), or after it carried and failed before it
    wrote a shard's ETags (that shard's earlier ETags document put back: it drops the carried entries and carries them
    again)."""
    monkeypatch.setattr(listing_leftovers, "drop_own_listing", lambda *args, **kwargs: 0)  # its parts still there
    settings, store, container = env
    request, done = _first_run(settings, store, container)
    before = [n for shard in manifests(settings, store, TASK) for n in shard]
    for name in ("0/new-1.jpg", "0/new-2.jpg"):
        store.write_bytes(container, name, b"")
    earlier = {i: store.read_bytes(settings.container, layout.shard_etags_blob(TASK, layout.shard_id(i)))
               for i in range(len(manifests(settings, store, TASK)))}
    calls: list[tuple[str, Any]] = []
    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB, calls=calls)
    writes = [p for name, p in calls if name == c.WRITE_SHARDS]
    p = writes[1]  # a batch after the first: its first shard's neighbour is another call's
    if when == "before":
        store.write_bytes(settings.container, layout.shard_etags_blob(TASK, layout.shard_id(p["first"])),
                          earlier[p["first"]])
    run_write_shards(TASK, TaskRequest.from_dict(p["request"]), settings, store, [tuple(x) for x in p["parts"]],
                     p["first"], p["count"], p["slices"], p["sampled"], p.get("not_found"), p.get("listing_run", ""))

    assert _run_again(settings, store) == ["0/new-1.jpg", "0/new-2.jpg"]
    merged, damaged = _merged(settings, store)
    assert merged == {**{n: done[n] for n in before}, **{n: _entry(n, 2) for n in ("0/new-1.jpg", "0/new-2.jpg")}}
    assert damaged == [CUT_SHORT]


def test_a_shard_merged_from_a_view_lists_only_its_own_photos_cut_short(env: tuple[Settings, BlobStore, str]) -> None:
    """The shard the earlier listing put the photo cut short in, after the deletions: its earlier attempt 2 names it,
    and its last attempt's worker made a view of the whole shard (``build_view`` names every earlier attempt's photos
    cut short), which the merge takes instead of the entries. It was listed by that shard too: twice."""
    settings, store, container = env
    request, _ = _first_run(settings, store, container)
    before = manifests(settings, store, TASK)
    j = next(i for i, shard in enumerate(before) if CUT_SHORT in shard)
    for name in before[0][:2]:
        store.delete_if_exists(container, name)
    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)
    assert CUT_SHORT not in manifests(settings, store, TASK)[j]
    _run_again(settings, store)
    sid = layout.shard_id(j)
    earlier = []
    for attempt in (1, 2):  # a third attempt's worker read them (mergeview.whole_shard) and ran nothing more
        name = layout.attempt_results_blob(TASK, sid, attempt)
        doc = store.read_json(settings.container, name)
        earlier.append(EarlierAttempt(name, store.etag_or_none(settings.container, name) or "", doc["images"],
                                      tuple(damaged_in(doc))))
    last = layout.attempt_results_blob(TASK, sid, 3)
    store.write_json(settings.container, last, {"images": []})
    listed = store.list_etags(settings.container, layout.shard_prefix(TASK, sid))
    threshold = task_threshold(store, settings, TASK, "MDV5A")
    view = build_view(TASK, threshold, manifests(settings, store, TASK)[j], [], listed[last],
                      listed[layout.manifest_blob(TASK, sid, 1)], earlier)
    assert view is not None
    store.write_bytes(settings.container, layout.attempt_view_blob(TASK, sid, 3), view)
    listed = store.list_etags(settings.container, layout.shard_prefix(TASK, sid))
    assert clean_view(store, settings, TASK, j, threshold, listed) is not None  # the merge takes it

    merged, damaged = _merged(settings, store)
    assert damaged == [CUT_SHORT]


class _Reads:
    """The store, counting the calls that name a given blob."""

    def __init__(self, store: BlobStore, blob: str) -> None:
        self._store, self._blob, self.reads = store, blob, 0

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._store, attr)
        if not callable(method):  # its service, for the block writer
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self.reads += sum(1 for a in args if a == self._blob)
            return method(*args, **kwargs)
        return call


def test_a_view_of_a_shards_only_attempt_names_its_own_photos_cut_short_and_no_manifest_is_read(
        env: tuple[Settings, BlobStore, str]) -> None:
    """A shard never cut otherwise, one attempt, its worker's view naming a photo of it cut short (the common case: a
    task with one photo cut short in 10,000 has one in most shards). Such a view names only its worker's own photos,
    which are of its manifest: the merge lists the photo without reading the shard's manifest (~0.5 MB at 10,000
    images), as it did before the filter of names another listing cut elsewhere (``fanin.of_shard``)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST_JOB)
    shards = manifests(settings, store, TASK)
    sid, images = layout.shard_id(0), shards[0]
    for i, shard in enumerate(shards):
        doc: dict[str, Any] = {"images": [_entry(n, 1) for n in shard]}
        if i == 0:
            doc["info"] = {"trapbatch": {"damaged": [images[1]]}}
        store.write_json(settings.container, layout.attempt_results_blob(TASK, layout.shard_id(i), 1), doc)
    results = layout.attempt_results_blob(TASK, sid, 1)
    listed = store.list_etags(settings.container, layout.shard_prefix(TASK, sid))
    threshold = task_threshold(store, settings, TASK, "MDV5A")
    view = build_view(TASK, threshold, images, [_entry(n, 1) for n in images], listed[results],
                      listed[layout.manifest_blob(TASK, sid, 1)], damaged=[images[1]])
    assert view is not None
    store.write_bytes(settings.container, layout.attempt_view_blob(TASK, sid, 1), view)
    listed = store.list_etags(settings.container, layout.shard_prefix(TASK, sid))
    assert clean_view(store, settings, TASK, 0, threshold, listed) is not None  # the merge takes it

    counted = _Reads(store, layout.manifest_blob(TASK, sid, 1))
    out = run_merge_part({"task_id": TASK, "part": 0, "first_shard": 0, "shards": len(shards)}, settings,
                         cast(BlobStore, counted))
    rows = store.read_bytes(settings.container, layout.merge_part_blob(TASK, 0, "damaged.csv", "")).decode().split()
    assert out["damaged"] == 1 and rows == [images[1]]
    assert counted.reads == 0


def test_a_resumed_listing_fails_on_an_unreadable_etags_document_of_its_own_shard_rather_than_keep_its_results(
        env: tuple[Settings, BlobStore, str]) -> None:
    """A shard's own earlier ETags document decides which of its earlier results stand (``activities.replaced_images``):
    one that cannot be parsed is no "none recorded", under which every result of the shard was kept by name, unchecked
    (an image replaced since kept the old bytes' detections); the call fails, to be retried, as the module's own read
    always did. A neighbour's unreadable document only carries nothing."""
    settings, store, container = env
    request, _ = _first_run(settings, store, container)
    store.write_bytes(settings.container, layout.shard_etags_blob(TASK, layout.shard_id(1)), b"{not json")
    with pytest.raises(AssertionError, match="'write_shard_manifests' failed.*JSONDecodeError"):  # the activity's
        run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)


def test_a_resumed_listing_runs_only_what_no_attempt_of_the_shard_finished(
        env: tuple[Settings, BlobStore, str]) -> None:
    """A node lost mid-shard: the shard's attempt 1 wrote nothing, its attempt 2 did two images and failed the third
    (retryable), its attempt 3 found that one undecodable; the photo cut short's own attempt 2 did it. Then the run
    ended, and its request, posted again, lists the same images in the same shards. The resumed attempt 1's worker
    keeps only its own output's entries, so it ran again everything only a later attempt had finished. Now those
    entries are carried into attempt 1 (ETag unchanged): only an image replaced since runs again; every image is
    merged once, with the earlier detections, the photo cut short named once."""
    settings, store, container = env
    request, done = _first_run(settings, store, container)
    before = manifests(settings, store, TASK)
    j = next(i for i, shard in enumerate(before) if CUT_SHORT not in shard and len(shard) == 3)
    a, b, c = before[j]
    sid = layout.shard_id(j)
    store.delete_if_exists(settings.container, layout.attempt_results_blob(TASK, sid, 1))
    undecodable = failure_entry(c, "image access failure", contract.REASON_UNDECODABLE)
    store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 2), {"images": [
        done[a], done[b], failure_entry(c, "image access failure", contract.REASON_DOWNLOAD)]})
    store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 3), {"images": [undecodable]})
    done[c] = undecodable
    store.write_bytes(container, b, b"other bytes")  # replaced since: its attempt 2 entry is not carried

    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)
    assert manifests(settings, store, TASK) == before
    assert _run_again(settings, store) == [b]
    merged, damaged = _merged(settings, store)
    assert merged == {**{n: done[n] for shard in before for n in shard}, b: _entry(b, 2)}
    assert damaged == [CUT_SHORT]
