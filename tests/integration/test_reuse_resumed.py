"""``only_new``'s reuse step (``activities.reuse``) when its run is resumed or replaced: the key (generation) is listed
again, and what a run's reuse step wrote must follow the listing the run that finishes made.

Enumerations made in Azurite by the real parallel enumeration (``test_parallel_enumeration.run_parallel``), each run
with its own pool job (``run_job``: its own listing folder), as ``api.starters`` resumes a terminated run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, cast

import pytest

from activities import decided, listing_leftovers, reuse

from activities.enumerate import run_write_shards
from activities.merge import _merged_shard
from activities.reuse import run_reuse
from activities.pool import run_stop_groups
from activities.shard_results import shard_manifest
from activities.superseded import refuse_if_superseded
from adapters.blobs import BlobStore
from core import contracts as c
from core.errors import RunSuperseded
from core.requests import TaskRequest
from core.settings import Settings
from gpu_batch import layout
from tests.integration.test_parallel_enumeration import SMALL, env, manifests, run_parallel  # noqa: F401 - fixture
from gpu_batch.worker.results import load_resumable_state
from tests.integration.test_carried_results import _Sink
from tests.integration.test_reuse import NEW, OLD, _first_run

FIRST_JOB = layout.pool_job_id(OLD, "r260101120000ab12")
SECOND_JOB = layout.pool_job_id(OLD, "r260101130000cd34")


def _outcome(settings: Settings, store: BlobStore, shards: int) -> tuple[list[str], list[str], dict[str, Any], int]:
    """After the reuse: every shard's images as the merge reads them, what goes to the pool, the merged entries by
    file (each file once) and how many of them are missing (left to the pool)."""
    read = [n for i in range(shards) for n in shard_manifest(store, settings, NEW, layout.shard_id(i))["images"]]
    sent = sorted(n for shard in manifests(settings, store, NEW) for n in shard)
    merged: dict[str, Any] = {}
    missing = 0
    for i in range(shards):
        entries, gaps = _merged_shard(store, settings, NEW, i, None)
        missing += gaps
        for entry in entries:
            assert entry["file"] not in merged, entry["file"]
            merged[entry["file"]] = entry
    return read, sent, merged, missing


def test_a_resumed_run_reuses_on_its_own_listing_not_on_the_manifests_its_first_runs_reuse_wrote(
        env: tuple[Settings, BlobStore, str]) -> None:
    """An ``only_new`` re-run terminated after its reuse step, then resumed (a plain post: the same generation, listed
    again). Images were added and one replaced meanwhile, so the second listing cuts the shards otherwise. The reuse
    step read each shard's attempt 0 manifest first (a retried call's "every image"), which the first run's reuse had
    written for the first listing: the resumed run sent the pool the first listing's names, an image added since ran
    nowhere and the merge read the first listing's shards (an image in two shards, another in none)."""
    settings, store, container = env
    request, served = _first_run(settings, store, container)
    request = dataclasses.replace(request, rerun=True, only_new=True)  # the re-run's request, which its resume keeps
    _, first = run_parallel(settings, store, NEW, request, SMALL, run_job=FIRST_JOB)
    run_reuse(NEW, OLD, 0, first["shards"], settings, store)  # the first run's reuse; then it is terminated
    replaced, added = "cams/site0/cam1/02.jpg", ["a/added.jpg", "cams/site0/cam0/00a.jpg"]
    store.write_bytes(container, replaced, b"other bytes")
    for name in added:
        store.write_bytes(container, name, b"")

    _, second = run_parallel(settings, store, NEW, request, SMALL, run_job=SECOND_JOB)  # the resumed run
    listing = manifests(settings, store, NEW)
    out = run_reuse(NEW, OLD, 0, second["shards"], settings, store)

    read, sent, merged, missing = _outcome(settings, store, second["shards"])
    assert read == [n for shard in listing for n in shard]
    assert sent == sorted([replaced, *added, "a/x.jpg"])  # "a/x.jpg": only a retryable failure before
    assert sorted(merged) == sorted(read) and missing == len(sent) == sum(out["to_run"])
    assert all(merged[n] == served[n] for n in read if n not in sent)


class _LateCall:
    """The store as a late reuse call of the terminated run sees it: on its first read of the served generation's
    shards (after it read the shard of its own generation) the replacing run ``meanwhile`` does its work."""

    def __init__(self, store: BlobStore, meanwhile: Callable[[], None]) -> None:
        self._store, self._meanwhile, self._served = store, meanwhile, f"{layout.task_prefix(OLD)}shards/"

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._store, attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._meanwhile is not None and any(isinstance(a, str) and a.startswith(self._served) for a in args):
                meanwhile, self._meanwhile = self._meanwhile, None
                meanwhile()
            return method(*args, **kwargs)
        return call


def test_a_late_reuse_call_of_a_terminated_run_writes_nothing_over_the_run_that_replaced_it(
        env: tuple[Settings, BlobStore, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The reuse call of an ``only_new`` re-run terminated while its calls were queued runs late (terminate does not
    reach a queued activity: activities.superseded). It read its shard as its own listing cut it; meanwhile the run
    that replaces it wrote the terminated run's cancel marker and listed the generation again, an image added before
    all others (every shard cut otherwise) and the first shard's second image replaced. The late call then wrote the
    first shard's attempt 0 as that earlier listing cut it, with the replaced image's old entry, and the resumed run's
    reuse step took that manifest for the shard's images. Now the late call, which carries its run's pool job, reads
    the marker after its reads and before its writes, and writes nothing."""
    monkeypatch.setattr(reuse, "RECHECK_IMAGES", 1)  # the marker read before every shard's writes
    settings, store, container = env
    request, served = _first_run(settings, store, container)
    request = dataclasses.replace(request, rerun=True, only_new=True)
    _, first = run_parallel(settings, store, NEW, request, SMALL, run_job=FIRST_JOB)
    replaced, added = manifests(settings, store, NEW)[0][1], "a-a.jpg"
    second: dict[str, Any] = {}

    def replacing_run() -> None:
        run_stop_groups({"task_id": OLD, "job_id": FIRST_JOB, "reason": "terminated", "superseded_by": "r2"},
                        settings, store)
        store.write_bytes(container, replaced, b"other bytes")
        store.write_bytes(container, added, b"")
        second.update(run_parallel(settings, store, NEW, request, SMALL, run_job=SECOND_JOB)[1])

    late = cast(BlobStore, _LateCall(store, replacing_run))
    with pytest.raises(RunSuperseded):
        run_reuse(NEW, OLD, 0, first["shards"], settings, late,
                  lambda: refuse_if_superseded(store, settings, {"task_id": NEW, "run_job": FIRST_JOB}, "the reuse"))
    listing = manifests(settings, store, NEW)
    out = run_reuse(NEW, OLD, 0, second["shards"], settings, store)  # the resumed run's reuse step

    read, sent, merged, missing = _outcome(settings, store, second["shards"])
    assert read == [n for shard in listing for n in shard] and read[0] == added
    assert sent == sorted([replaced, added, "a/x.jpg"])  # "a/x.jpg": only a retryable failure before
    assert sorted(merged) == sorted(read) and missing == len(sent) == sum(out["to_run"])
    assert all(merged[n] == served[n] for n in read if n not in sent)



def test_a_reuse_call_reads_the_marker_again_once_recheck_images_were_read_since(
        env: tuple[Settings, BlobStore, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Between a shard's reads and its writes, once ``RECHECK_IMAGES`` images were read since the last time, shards
    that wrote nothing (nothing to reuse) counted too; never for a shard that writes nothing."""
    settings, store, container = env
    request, _ = _first_run(settings, store, container)
    _, first = run_parallel(settings, store, NEW, request, SMALL, run_job=FIRST_JOB)
    for name in manifests(settings, store, NEW)[0]:  # the first shard's images all replaced: nothing to reuse
        store.write_bytes(container, name, b"other bytes")
    run_parallel(settings, store, NEW, request, SMALL, run_job=SECOND_JOB)
    monkeypatch.setattr(reuse, "RECHECK_IMAGES", 6)  # two shards of 3
    reads: list[int] = []
    out = run_reuse(NEW, OLD, 0, 4, settings, store, lambda: reads.append(len(reads)))
    assert out["reused"][0] == 0 and all(out["reused"][1:])
    assert len(reads) == 2  # before the writes of the second shard (3 + 3 read) and of the fourth


def _late_duplicate(settings: Settings, store: BlobStore, calls: list[tuple[str, Any]],
                    monkeypatch: pytest.MonkeyPatch, redeployed: bool) -> None:
    """The first ``write_shard_manifests`` call of ``calls`` run again, delivered late; ``redeployed``: after a
    release or an app setting changed the detection threshold its manifests apply."""
    _, p = next(call for call in calls if call[0] == c.WRITE_SHARDS)
    if redeployed:
        as_decided = decided.task_settings
        monkeypatch.setattr(decided, "task_settings", lambda *args: dataclasses.replace(
            as_decided(*args), detection_threshold=0.25))
    run_write_shards(NEW, TaskRequest.from_dict(p["request"]), settings, store, [tuple(x) for x in p["parts"]],
                     p["first"], p["count"], p["slices"], p["sampled"], p.get("not_found"), p.get("listing_run", ""))


@pytest.mark.parametrize(("run_job", "redeployed"), [("", False), (SECOND_JOB, False), (SECOND_JOB, True)],
                         ids=["run-without-id", "folder-left", "folder-left-redeployed"])
def test_a_late_duplicate_of_a_listing_call_keeps_the_attempt_0_its_own_run_reused_for_the_same_shard(
        env: tuple[Settings, BlobStore, str], monkeypatch: pytest.MonkeyPatch, run_job: str,
        redeployed: bool) -> None:
    """An activity runs at least once: a ``write_shard_manifests`` call whose output was taken runs again when its
    queue message comes back (its host stopped before deleting it), minutes later, while its parts are there: a run
    without an id keeps its listing's files in the task's folder, and a run with one keeps its folder when that
    best-effort deletion failed (``listing_leftovers.drop_own_listing``). Its run's reuse step had written attempt 0
    meanwhile; the duplicate's listing found earlier ETags (its own call's) and deleted that attempt 0, so a shard
    reused whole (done, sent to no pool) merged none of its images and the others lost their reused entries.

    ``redeployed``: the duplicate runs after a release or an app setting changed how its manifests come out (here the
    detection threshold it applies), so its manifest differs from the one the reuse step copied in a field the
    settings shape; the attempt 0 is still known as the run's own by the listing's stamp (``listing_run``)."""
    if run_job:  # the run's listing folder stayed (its deletion failed: logged, best effort)
        monkeypatch.setattr(listing_leftovers, "drop_own_listing", lambda *args, **kwargs: 0)
    settings, store, container = env
    request, served = _first_run(settings, store, container)
    request = dataclasses.replace(request, rerun=True, only_new=True)
    calls: list[tuple[str, Any]] = []
    _, listed = run_parallel(settings, store, NEW, request, SMALL, run_job=run_job, calls=calls)
    listing = manifests(settings, store, NEW)
    out = run_reuse(NEW, OLD, 0, listed["shards"], settings, store)
    assert out["to_run"].count(0) > 1  # shards reused whole: done without the pool

    _late_duplicate(settings, store, calls, monkeypatch, redeployed)
    if redeployed:  # the two manifests differ in that field, and both carry the listing's stamp
        first = store.read_json(settings.container, layout.manifest_blob(NEW, layout.shard_id(0), 1))
        reused = store.read_json_or_none(settings.container, layout.manifest_blob(NEW, layout.shard_id(0), 0))
        assert reused is not None, "the duplicate deleted its own run's attempt 0"
        assert first["detection_threshold"] == 0.25 != reused["detection_threshold"]
        assert first["listing_run"] == reused["listing_run"] == SECOND_JOB

    read, _, merged, _ = _outcome(settings, store, listed["shards"])
    assert read == [n for shard in listing for n in shard]
    assert sorted(merged) == sorted(read)
    lost = [n for n in read if n != "a/x.jpg" and merged[n] != served[n]]
    assert lost == []  # every reused entry merged ("a/x.jpg": only a retryable failure before, left to the pool)


def test_a_late_duplicate_of_a_resumed_runs_listing_call_keeps_the_attempt_0_its_reuse_wrote_over_one_cut_alike(
        env: tuple[Settings, BlobStore, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``only_new`` re-run terminated after its reuse step and resumed, nothing changed meanwhile: the resumed
    listing cuts every shard alike, so it keeps the earlier run's attempt 0 (equal to its manifest but for the
    stamp: ``activities.replaced_images._made_from``), and its reuse step, reading the shard there, wrote attempt 0
    again with the EARLIER run's stamp. A late duplicate of the resumed run's listing call, run after a release or an
    app setting changed the detection threshold, then knew that attempt 0 neither by its stamp nor by its fields and
    deleted it, which nothing writes again: a shard reused whole merged none of its images. The reuse step stamps
    attempt 0 with the listing its shard's ETags document names (the one it reuses on)."""
    monkeypatch.setattr(listing_leftovers, "drop_own_listing", lambda *args, **kwargs: 0)  # its deletion failed
    settings, store, container = env
    request, served = _first_run(settings, store, container)
    request = dataclasses.replace(request, rerun=True, only_new=True)
    _, first = run_parallel(settings, store, NEW, request, SMALL, run_job=FIRST_JOB)
    run_reuse(NEW, OLD, 0, first["shards"], settings, store)  # the first run's reuse; then it is terminated

    calls: list[tuple[str, Any]] = []
    _, second = run_parallel(settings, store, NEW, request, SMALL, run_job=SECOND_JOB, calls=calls)  # resumed
    listing = manifests(settings, store, NEW)
    zero = layout.manifest_blob(NEW, layout.shard_id(0), 0)
    assert store.read_json(settings.container, zero)["listing_run"] == FIRST_JOB  # kept: the same cut
    out = run_reuse(NEW, OLD, 0, second["shards"], settings, store)
    assert out["to_run"].count(0) > 1  # shards reused whole: done without the pool
    assert store.read_json(settings.container, zero)["listing_run"] == SECOND_JOB

    _late_duplicate(settings, store, calls, monkeypatch, redeployed=True)
    assert store.read_json_or_none(settings.container, zero) is not None, "the duplicate deleted attempt 0"
    read, _, merged, _ = _outcome(settings, store, second["shards"])
    assert read == [n for shard in listing for n in shard]
    assert sorted(merged) == sorted(read)
    assert [n for n in read if n != "a/x.jpg" and merged[n] != served[n]] == []  # every reused entry merged


def test_a_resumed_run_keeps_what_its_earlier_runs_later_attempt_did_beside_the_reused_results(
        env: tuple[Settings, BlobStore, str]) -> None:
    """An ``only_new`` re-run whose reuse left "a/x.jpg" to the pool (only a retryable failure served): its attempt 1
    failed it again, its attempt 2 did it; then the run was terminated and resumed, nothing changed meanwhile. The
    resumed listing carries that attempt 2's entry into attempt 1 (``activities.carried_results``); the resumed reuse
    step rewrites attempt 0 and attempt 1's manifest ("a/x.jpg" still to run, as the served results have it): attempt
    1's worker keeps the carried entry and runs nothing, and the merge takes every image once, the reused ones from
    the served generation and "a/x.jpg" from that attempt 2."""
    settings, store, container = env
    request, served = _first_run(settings, store, container)
    request = dataclasses.replace(request, rerun=True, only_new=True)
    _, first = run_parallel(settings, store, NEW, request, SMALL, run_job=FIRST_JOB)
    run_reuse(NEW, OLD, 0, first["shards"], settings, store)
    j = next(i for i, shard in enumerate(manifests(settings, store, NEW)) if "a/x.jpg" in shard)
    sid = layout.shard_id(j)
    done = {"file": "a/x.jpg", "max_detection_conf": 0.5,
            "detections": [{"category": "1", "conf": 0.5, "bbox": [0.1, 0.1, 0.2, 0.2], "by": "attempt 2"}]}
    store.write_json(settings.container, layout.attempt_results_blob(NEW, sid, 1), {"images": [served["a/x.jpg"]]})
    store.write_json(settings.container, layout.attempt_results_blob(NEW, sid, 2), {"images": [done]})
    run_stop_groups({"task_id": NEW, "job_id": FIRST_JOB, "reason": "terminated", "superseded_by": "r2"},
                    settings, store)

    _, second = run_parallel(settings, store, NEW, request, SMALL, run_job=SECOND_JOB)  # the resumed run
    out = run_reuse(NEW, OLD, 0, second["shards"], settings, store)
    assert sum(out["to_run"]) == 1
    to_run = store.read_json(settings.container, layout.manifest_blob(NEW, sid, 1))["images"]
    kept, _ = load_resumable_state(_Sink(store, settings.container, layout.attempt_results_blob(NEW, sid, 1)), to_run)
    assert to_run == ["a/x.jpg"] and kept == {"a/x.jpg": done}  # its worker runs nothing

    read, _, merged, missing = _outcome(settings, store, second["shards"])
    assert sorted(merged) == sorted(read) and missing == 0
    assert merged == {**{n: served[n] for n in read}, "a/x.jpg": done}
