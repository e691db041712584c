"""A resumed run's later attempts follow its own listing, not the attempt manifests its terminated run wrote.

A resumed run (a plain post of a terminated run's request: the same key, listed again) starts its shard groups at
attempt 1 (``orchestrations.shards``: a group's first input has no state), so its attempt 2 has the same manifest blob
(``layout.manifest_blob``) as the terminated run's attempt 2, which the listing leaves where it is. The resubmission
kept any attempt manifest it found (idempotency for a retried RESUBMIT): the resumed run's attempt 2 ran the
terminated run's missing images as the earlier listing cut the shard. Enumerations made in Azurite by the real
parallel enumeration, each run with its own pool job, as ``api.starters`` resumes a terminated run.
"""
from __future__ import annotations

from typing import Any

from activities.pool import run_resubmit, run_stop_groups
from activities.shard_results import images_to_rerun
from adapters.blobs import BlobStore
from core.requests import TaskRequest
from core.settings import Settings
from gpu_batch import layout
from gpu_batch import manifest as contract
from gpu_batch.worker.results import detections_entry, failure_entry, load_resumable_state
from tests.integration.test_carried_results import _Sink
from tests.integration.test_parallel_enumeration import SMALL, env, manifests, run_parallel  # noqa: F401 - fixture
from tests.recording_pool import RecordingPool

TASK = "task-resumed"
FIRST_JOB = layout.pool_job_id(TASK, "r260101120000ab12")
SECOND_JOB = layout.pool_job_id(TASK, "r260101130000cd34")
SID = layout.shard_id(0)
DET = {"category": "1", "conf": 0.8, "bbox": [0.1, 0.1, 0.2, 0.2]}


def _results(settings: Settings, store: BlobStore, attempt: int, ok: list[str], retry: list[str]) -> None:
    """An attempt's results as its worker leaves them: successes, and retryable failures (a read refused)."""
    entries: list[dict[str, Any]] = [detections_entry(n, [DET], 640, 480) for n in ok]
    entries += [failure_entry(n, "image access failure", contract.REASON_DOWNLOAD) for n in retry]
    store.write_json(settings.container, layout.attempt_results_blob(TASK, SID, attempt), {"images": entries})


def _resubmit(settings: Settings, store: BlobStore, job: str) -> tuple[list[str], dict[str, Any]]:
    """The shard's attempt 2 as the run of ``job`` resubmits it (the real RESUBMIT): its manifest's images, and the
    answer."""
    out = run_resubmit(TASK, job, [(SID, 2)], settings, store, RecordingPool())  # type: ignore[arg-type]
    doc = store.read_json(settings.container, layout.manifest_blob(TASK, SID, 2))
    return list(doc["images"]), dict(out["shards"][0])


def _terminated_run(settings: Settings, store: BlobStore, container: str) -> tuple[TaskRequest, list[str]]:
    """The first run: listed, shard 0's attempt 1 left its last two images missing (retryable failures), attempt 2
    resubmitted for them; then the run was terminated and replaced (its cancel marker names the new run)."""
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST_JOB)
    shard = manifests(settings, store, TASK)[0]
    _results(settings, store, 1, ok=shard[:1], retry=shard[1:])
    images, _ = _resubmit(settings, store, FIRST_JOB)
    assert images == shard[1:]
    run_stop_groups({"task_id": TASK, "job_id": FIRST_JOB, "reason": "terminated", "superseded_by": "r2"},
                    settings, store)
    return request, shard


def _resumed_with_one_added_first(settings: Settings, store: BlobStore, container: str) -> tuple[list[str], list[str]]:
    """The terminated run (``_terminated_run``), then an image added before all others and the resumed run's listing:
    (the terminated run's shard 0 names, the resumed listing's shard 0, which gains the added image and loses the old
    shard's last one to shard 1)."""
    request, old = _terminated_run(settings, store, container)
    store.write_bytes(container, "a-a.jpg", b"")
    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)  # the resumed run's listing
    shard = manifests(settings, store, TASK)[0]
    assert shard == ["a-a.jpg", *old[:2]]
    return old, shard


def test_a_resumed_run_whose_listing_cut_the_shard_otherwise_resubmits_its_own_missing_images(
        env: tuple[Settings, BlobStore, str]) -> None:
    """An image added before all others meanwhile: the resumed run's shard 0 gains it, and the old shard's last image
    moves to shard 1. The resumed attempt 1 leaves the added image missing: its attempt 2 ran the terminated run's
    manifest instead, the moved image (shard 1's now: results no merge of shard 0 takes) and not the added one, which
    ran nowhere but attempt 1, an attempt spent."""
    settings, store, container = env
    old, shard = _resumed_with_one_added_first(settings, store, container)
    _results(settings, store, 1, ok=old[:2], retry=["a-a.jpg"])  # its attempt 1: the kept entry, two images run

    images, out = _resubmit(settings, store, SECOND_JOB)
    assert images == images_to_rerun(store, settings, TASK, SID, shard) == ["a-a.jpg"]
    assert out == {"shard_id": SID, "attempt": 2, "missing": 1, "submitted": True}


def test_a_resumed_run_resubmits_an_image_replaced_since_though_the_shard_is_cut_alike(
        env: tuple[Settings, BlobStore, str]) -> None:
    """The shard's first image, done by the terminated run's attempt 1, was replaced meanwhile (new bytes, same name):
    the resumed run's listing drops its old entry (``activities.replaced_images``), and the resumed attempt 1 fails to
    read it. Its attempt 2 ran the terminated run's manifest, which does not name it: it ran no second attempt."""
    settings, store, container = env
    request, old = _terminated_run(settings, store, container)
    store.write_bytes(container, old[0], b"other bytes")
    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)
    assert manifests(settings, store, TASK)[0] == old
    _results(settings, store, 1, ok=old[1:], retry=old[:1])

    images, out = _resubmit(settings, store, SECOND_JOB)
    assert images == [old[0]]
    assert out == {"shard_id": SID, "attempt": 2, "missing": 1, "submitted": True}


def test_a_resumed_run_keeps_the_terminated_runs_attempt_manifest_that_still_fits_its_listing(
        env: tuple[Settings, BlobStore, str]) -> None:
    """Nothing changed meanwhile: the terminated run's attempt 2 names exactly the images still missing, in this
    run's shard, so it is kept as it is (its partial results stay the worker's to resume), not written again."""
    settings, store, container = env
    request, old = _terminated_run(settings, store, container)
    run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)
    before = store.list_etags(settings.container, layout.manifest_blob(TASK, SID, 2))
    _results(settings, store, 1, ok=old[:2], retry=old[2:])  # the resumed attempt 1 got one more

    images, out = _resubmit(settings, store, SECOND_JOB)
    assert images == old[1:]
    assert out == {"shard_id": SID, "attempt": 2, "missing": 2, "submitted": True}
    assert store.list_etags(settings.container, layout.manifest_blob(TASK, SID, 2)) == before


def test_a_resumed_run_keeps_an_image_that_only_the_earlier_runs_attempt_2_finished_when_it_writes_that_attempt(
        env: tuple[Settings, BlobStore, str]) -> None:
    """The terminated run's attempt 2 finished an image after the resumed listing read its results (a late worker of
    the ended run, ``activities.carried_results``: not carried into attempt 1), and the resumed attempt 1 failed that
    image retryably: it counts done (final in attempt 2), so it is not missing. An image added before all others
    moves the terminated run's last image to shard 1, so its attempt 2 manifest no longer fits and is written anew
    for the missing image alone, into the same results blob: its worker keeps the entries of its manifest's images
    only (``load_resumable_state``) and its first flush dropped the image's only final entry, which then counted
    missing again (with no attempt left: given up, though it was done). Now the manifest also names it: kept, not
    run again."""
    settings, store, container = env
    old, shard = _resumed_with_one_added_first(settings, store, container)
    _results(settings, store, 2, ok=old[1:2], retry=old[2:])  # the ended run's late attempt 2, after the listing
    _results(settings, store, 1, ok=old[:1], retry=["a-a.jpg", old[1]])  # the resumed attempt 1
    assert images_to_rerun(store, settings, TASK, SID, shard) == ["a-a.jpg"]

    images, out = _resubmit(settings, store, SECOND_JOB)
    assert out == {"shard_id": SID, "attempt": 2, "missing": 1, "submitted": True}
    assert images == ["a-a.jpg", old[1]]
    kept, _ = load_resumable_state(_Sink(store, settings.container, layout.attempt_results_blob(TASK, SID, 2)),
                                   images)
    assert sorted(kept) == [old[1]]  # its worker keeps it and runs only "a-a.jpg"
    again, _ = _resubmit(settings, store, SECOND_JOB)  # a RESUBMIT run again keeps that manifest
    assert again == images


def _attempt(settings: Settings, store: BlobStore, sid: str, attempt: int, ok: list[str],
             failed: tuple[str, ...] = (), retry: tuple[str, ...] = ()) -> None:
    """Shard ``sid``'s attempt results: successes, permanent failures (a file not an image) and retryable ones."""
    entries: list[dict[str, Any]] = [detections_entry(n, [DET], 640, 480) for n in ok]
    entries += [failure_entry(n, "image decode failure", contract.REASON_UNDECODABLE) for n in failed]
    entries += [failure_entry(n, "image access failure", contract.REASON_DOWNLOAD) for n in retry]
    store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, attempt), {"images": entries})


def test_a_resumed_listing_names_the_shards_whose_every_image_has_a_final_result_already(
        env: tuple[Settings, BlobStore, str]) -> None:
    """The listing's output names, as it cut the shards, those finished (``WriteShardsOutput.done``, gathered in the
    enumeration's ``done``): their groups start them done and submit no pool task (orchestrations.task). Shard 0's
    attempt 1 did one image and its attempt 2 the others (carried into attempt 1 by the listing), shard 1's attempt 1
    all, one a permanent failure; shard 2 still has a retryable failure, the last shard never ran. A first listing,
    and the resumed listing of an only_new key (whose reuse step decides), name none. Shard 2's images final already
    are named too (``partly``), as the images of a shard sent to the pool that its pool need not run."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    _, first = run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST_JOB)
    assert "done" not in first and "partly" not in first
    shards = manifests(settings, store, TASK)
    assert len(shards) >= 4, shards
    s0, s1, s2 = (layout.shard_id(i) for i in range(3))
    _attempt(settings, store, s0, 1, ok=shards[0][:1], retry=tuple(shards[0][1:]))
    _attempt(settings, store, s0, 2, ok=shards[0][1:])
    _attempt(settings, store, s1, 1, ok=shards[1][:2], failed=tuple(shards[1][2:]))
    _attempt(settings, store, s2, 1, ok=shards[2][:2], retry=tuple(shards[2][2:]))
    run_stop_groups({"task_id": TASK, "job_id": FIRST_JOB, "reason": "terminated", "superseded_by": "r2"},
                    settings, store)

    _, resumed = run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)

    assert resumed["done"] == [[0, 3, 0], [1, 3, 1]], resumed
    # shard 2, sent to the pool, has 2 images final already: not the resumed run's pool's work (orchestrations.task)
    assert resumed["partly"] == [[2, 2]], resumed
    assert manifests(settings, store, TASK) == shards  # cut alike: nothing added or removed meanwhile
    assert images_to_rerun(store, settings, TASK, s0, shards[0]) == []


def test_an_only_new_keys_resumed_listing_names_no_finished_shard(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3, only_new=True)
    run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST_JOB)
    shard = manifests(settings, store, TASK)[0]
    _attempt(settings, store, layout.shard_id(0), 1, ok=shard)
    run_stop_groups({"task_id": TASK, "job_id": FIRST_JOB, "reason": "terminated", "superseded_by": "r2"},
                    settings, store)

    _, resumed = run_parallel(settings, store, TASK, request, SMALL, run_job=SECOND_JOB)

    assert "done" not in resumed and "partly" not in resumed
