"""``only_new``'s reuse step (``activities.reuse``) on enumerations made in Azurite by the real parallel enumeration.

The enumeration records each image's ETag (from the listing pages and the plan's single blobs) and each shard's name
range; the reuse step carries over exactly the final entries of images whose name and ETag are unchanged, and writes
the rest as attempt 1, so the poll, the resubmission and the merge see every image of the shard once.
"""
from __future__ import annotations

from typing import Any

from activities.merge import _merged_shard
from activities.reuse import run_reuse
from activities.shard_results import (done_images, parsed_coverage, shard_coverage, shard_damaged,
                                      shard_manifest, summarized_coverage)
from adapters.blobs import BlobStore
from core.requests import TaskRequest
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats.entries import damaged_in
from gpu_batch.formats.entries import damaged_document
from tests.integration.test_parallel_enumeration import SMALL, env, manifests, run_parallel  # noqa: F401 - fixture

OLD = "task-old"
NEW = layout.generation_key(OLD, "r260101120000ab12")


def _images(settings: Settings, store: BlobStore, key: str) -> list[str]:
    return [n for shard in manifests(settings, store, key) for n in shard]


def _first_run(settings: Settings, store: BlobStore, container: str) -> tuple[TaskRequest, dict[str, Any]]:
    """Enumerate the first generation and write a result for each image: a success, except one retryable failure."""
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    run_parallel(settings, store, OLD, request, SMALL)
    entries: dict[str, Any] = {}
    for i, shard in enumerate(manifests(settings, store, OLD)):
        docs = []
        for name in shard:
            entry: dict[str, Any] = {"file": name, "max_detection_conf": 0.5,
                                     "detections": [{"category": "1", "conf": 0.5, "bbox": [0.1, 0.1, 0.2, 0.2]}]}
            if name == "a/x.jpg":
                entry = {"file": name, "failure": "image access failure", "detections": None,
                         "failure_kind": "retryable", "failure_reason": "auth"}
            entries[name] = entry
            docs.append(entry)
        store.write_json(settings.container, layout.attempt_results_blob(OLD, layout.shard_id(i), 1), {"images": docs})
    return request, entries


def test_the_enumeration_records_every_image_etag_and_each_shard_range(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    run_parallel(settings, store, OLD, TaskRequest(container=container, model="MDV5A", images_per_shard=3), SMALL)

    shards = manifests(settings, store, OLD)
    ranges = [row for name in store.list_names(settings.container, layout.shard_ranges_prefix(OLD))
              for row in store.read_json(settings.container, name)]
    assert len(ranges) == len(shards) > 3  # several manifest writes (SMALL.images_per_write)
    for (sid, low, high), images in zip(sorted(ranges), shards):
        assert (low, high) == (min(images), max(images))
        etags = store.read_json(settings.container, layout.shard_etags_blob(OLD, sid))["etags"]
        assert etags == {n: store.etag_or_none(container, n) for n in images}  # the plan's single blobs too


def test_reuse_carries_over_final_entries_of_unchanged_images_and_runs_the_rest(
        env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    request, before = _first_run(settings, store, container)
    changed, deleted, added = "cams/site0/cam1/02.jpg", "big/007.jpg", ["a/new.jpg", "zz/new.png"]
    store.write_bytes(container, changed, b"other bytes")
    store.service.get_blob_client(container, deleted).delete_blob()
    for name in added:
        store.write_bytes(container, name, b"")
    _, new = run_parallel(settings, store, NEW, request, SMALL)
    now = _images(settings, store, NEW)
    to_run_expected = sorted([changed, *added, "a/x.jpg"])  # "a/x.jpg": only a retryable failure before

    out = run_reuse(NEW, OLD, 0, new["shards"], settings, store)
    assert out == run_reuse(NEW, OLD, 0, new["shards"], settings, store)  # a retried call: the same answer
    assert sum(out["to_run"]) == len(to_run_expected) and sum(out["reused"]) == len(now) - len(to_run_expected)
    assert 0 in out["to_run"]  # a shard left with nothing to run (it starts done)
    sent = sorted(n for shard in manifests(settings, store, NEW) for n in shard)  # attempt 1: what goes to the pool
    assert sent == to_run_expected
    merged: list[dict[str, Any]] = []
    for i in range(new["shards"]):
        sid = layout.shard_id(i)
        coverage = shard_coverage(store, settings, NEW, sid)
        assert (coverage["covered"], coverage["missing"]) == (out["reused"][i], out["to_run"][i])
        summarized = summarized_coverage(store, settings, NEW, sid)  # attempt 0's summary, when something was reused
        assert (summarized is not None) == (out["reused"][i] > 0) and coverage == parsed_coverage(store, settings,
                                                                                                  NEW, sid)
        assert done_images(store, settings, NEW, sid).isdisjoint(sent)
        merged += _merged_shard(store, settings, NEW, i, None)[0]
    files = [e["file"] for e in merged]
    assert sorted(files) == sorted(now) and deleted not in files and len(set(files)) == len(files)
    assert all(e == before[e["file"]] for e in merged if e["file"] not in to_run_expected)


def test_a_previous_generation_without_recorded_etags_reuses_nothing(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    request, _ = _first_run(settings, store, container)
    for i in range(len(manifests(settings, store, OLD))):  # as enumerations from before ETags were recorded
        store.service.get_blob_client(settings.container, layout.shard_etags_blob(OLD, layout.shard_id(i))).delete_blob()
    _, new = run_parallel(settings, store, NEW, request, SMALL)

    out = run_reuse(NEW, OLD, 0, new["shards"], settings, store)
    assert sum(out["reused"]) == 0 and sum(out["to_run"]) == new["images"]
    assert not store.exists(settings.container, layout.manifest_blob(NEW, layout.shard_id(0), 0))


def _damaged(settings: Settings, store: BlobStore, key: str, shards: int) -> list[str]:
    """The generation's photos cut short as the merge parts find them (``shard_damaged`` over each shard's listing)."""
    return sorted(n for i in range(shards) for n in shard_damaged(
        store, settings, key, layout.shard_id(i), store.list_etags(settings.container,
                                                                   layout.shard_prefix(key, layout.shard_id(i)))))


def test_reuse_carries_the_photos_cut_short_of_the_entries_it_reuses(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    request, _ = _first_run(settings, store, container)
    kept, recopied = "cams/site0/cam1/01.jpg", "cams/site0/cam1/02.jpg"
    old = manifests(settings, store, OLD)
    for i, shard in enumerate(old):  # as the worker names them: in the results' info, then in the side file
        named = sorted({kept, recopied} & set(shard))
        if named:
            name = layout.attempt_results_blob(OLD, layout.shard_id(i), 1)
            doc = store.read_json(settings.container, name)
            etag = store.write_json(settings.container, name, {**doc, "info": {"trapbatch": {"damaged": named}}})
            store.write_bytes(settings.container, layout.attempt_damaged_blob(OLD, layout.shard_id(i), 1),
                              damaged_document(etag, named))
    assert _damaged(settings, store, OLD, len(old)) == [kept, recopied]
    store.write_bytes(container, recopied, b"copied again from the card")  # a new ETag: it runs, and is not named
    _, new = run_parallel(settings, store, NEW, request, SMALL)

    out = run_reuse(NEW, OLD, 0, new["shards"], settings, store)
    assert out == run_reuse(NEW, OLD, 0, new["shards"], settings, store)  # a retried call writes the same
    assert _damaged(settings, store, NEW, new["shards"]) == [kept]
    holder = next(sid for sid in map(layout.shard_id, range(new["shards"]))
                  if kept in shard_manifest(store, settings, NEW, sid)["images"])
    zero = store.read_json(settings.container, layout.attempt_results_blob(NEW, holder, 0))
    assert damaged_in(zero) == [kept]  # in the reused results too: a later re-run carries it on
    later = layout.generation_key(OLD, "r260102120000cd34")
    _, again = run_parallel(settings, store, later, request, SMALL)
    run_reuse(later, NEW, 0, again["shards"], settings, store)
    assert _damaged(settings, store, later, again["shards"]) == [kept]


def _write_results(settings: Settings, store: BlobStore, key: str, shards: int, conf: float) -> dict[str, Any]:
    """A success for every image of the key's first ``shards`` shards, ``conf`` telling which run wrote it."""
    entries: dict[str, Any] = {}
    for i in range(shards):
        sid = layout.shard_id(i)
        docs = [{"file": n, "max_detection_conf": conf,
                 "detections": [{"category": "1", "conf": conf, "bbox": [0.1, 0.1, 0.2, 0.2]}]}
                for n in store.read_json(settings.container, layout.manifest_blob(key, sid, 1))["images"]]
        entries.update((e["file"], e) for e in docs)
        store.write_json(settings.container, layout.attempt_results_blob(key, sid, 1), {"images": docs})
    return entries


def test_reuse_takes_no_entry_from_shards_past_the_count_of_the_previous_generations_last_listing(
        env: tuple[Settings, BlobStore, str]) -> None:
    """A key is listed again when its failed run is resumed; with images deleted meanwhile that listing cuts fewer
    shards, and what the earlier listing wrote for the shards past the new count stays (a release before the
    listing's end deleted it left all of it: its ranges, manifests, ETags and results). Those shards are in no
    result the served run merged, but the reuse step found the images that moved to lower shards in them too, with
    the same ETags, and took the stale entry (the later range won). Now it reads only the shards below the count
    the previous generation's summary records. Fails without the change (entries of the failed run reused)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    _, failed = run_parallel(settings, store, OLD, request, SMALL)
    _write_results(settings, store, OLD, failed["shards"], 0.9)  # the run that failed, on the first listing
    stale = {n: store.read_bytes(settings.container, n) for i in range(failed["shards"] - 4, failed["shards"])
             for n in store.list_names(settings.container, layout.shard_prefix(OLD, layout.shard_id(i)))}
    stale.update((n, store.read_bytes(settings.container, n))
                 for n in store.list_names(settings.container, layout.shard_ranges_prefix(OLD)))
    for i in range(12):  # deleted before the run was resumed: 4 shards fewer
        store.service.get_blob_client(container, f"big/{i:03d}.jpg").delete_blob()
    _, served = run_parallel(settings, store, OLD, request, SMALL, run_job=layout.pool_job_id(OLD, "r260101110000aa00"))
    assert served["shards"] == failed["shards"] - 4
    served_entries = _write_results(settings, store, OLD, served["shards"], 0.5)  # the resumed run's, served
    for name, data in stale.items():  # as a listing of a release that deleted nothing left them
        if not store.exists(settings.container, name):
            store.write_bytes(settings.container, name, data)
    assert any(layout.shard_index(row[0]) >= served["shards"]
               for n in store.list_names(settings.container, layout.shard_ranges_prefix(OLD))
               for row in store.read_json(settings.container, n))

    _, new = run_parallel(settings, store, NEW, request, SMALL)
    out = run_reuse(NEW, OLD, 0, new["shards"], settings, store)

    assert sum(out["reused"]) == new["images"] == len(served_entries)
    reused = [e for i in range(new["shards"])
              for e in store.read_json(settings.container,
                                       layout.attempt_results_blob(NEW, layout.shard_id(i), 0))["images"]]
    assert sorted(e["file"] for e in reused) == sorted(served_entries)
    assert [e for e in reused if e != served_entries[e["file"]]] == []
