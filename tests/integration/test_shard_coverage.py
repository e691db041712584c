"""A shard's coverage from the workers' coverage summaries equals the coverage from parsing every attempt's results.

The summaries are written by the worker's own code (``ResultWriter`` with ``BlobSink``s and a ``CoverageTarget``,
as ``gpu_batch.worker.__main__`` wires them) into Azurite, whose ETags are the identity a summary is checked by.
Each shard is counted both ways (``activities.shard_results.summarized_coverage`` and ``parsed_coverage``), and the
resubmission's image list both ways, in the cases that make the summaries usable and those that must not be trusted:
a resubmitted shard with retryable and permanent failures, an attempt without a summary, a stale summary, a reused
attempt 0, an attempt that ran more than the previous one left (a late flush after the resubmission), a summary
that lists no names, attempts that wrote nothing (first or later), and seeded random histories of all of these.
"""
from __future__ import annotations

import json
import random
import sys
from typing import Any, Mapping

import pytest

from activities.pool import resubmit_one, run_resubmit, run_submit
from activities.shard_results import (done_images, images_to_rerun, parsed_coverage, shard_coverage,
                                      summarized_coverage)
from adapters.blobs import BlobStore, service_client
from core.settings import Settings
from core.shards import missing_images
from gpu_batch import layout
from gpu_batch import manifest as contract
from gpu_batch.pool import JobClosed, JobState
from gpu_batch.pool.local import LocalPool
from gpu_batch.worker.results import CoverageTarget, ResultWriter, detections_entry, failure_entry
from gpu_batch.worker.sources import BlobSink

TASK = "task-0123456789abcdef0123"
DET = {"category": "1", "conf": 0.8, "bbox": [0.1, 0.1, 0.2, 0.2]}


class ReadSpy(BlobStore):
    """The real adapter, recording the names of the blobs whose content it reads."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: list[str] = []

    def read_bytes(self, container: str, name: str) -> bytes:
        self.reads.append(name)
        return super().read_bytes(container, name)


class NullPool:
    def ensure_job(self, job_id: str) -> None:
        pass

    def submit(self, job_id: str, tasks: list[object]) -> None:
        pass


@pytest.fixture
def env(storage_connection: str, unique_name: str) -> tuple[Settings, ReadSpy]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name})
    store = ReadSpy(service_client(storage_connection))
    store.ensure_container(settings.container)
    return settings, store


def _write_manifest(store: BlobStore, settings: Settings, sid: str, attempt: int, images: list[str]) -> None:
    m = contract.ShardManifest(task_id=TASK, shard_id=sid, attempt=attempt, source_container="src",
                               images=tuple(images), output_container=settings.container,
                               output_blob=layout.attempt_results_blob(TASK, sid, attempt), model="m.pt")
    store.write_json(settings.container, layout.manifest_blob(TASK, sid, attempt), m.to_dict())


def _entry(name: str, outcome: str) -> dict[str, Any]:
    if outcome == "ok":
        return detections_entry(name, [DET], 640, 480)
    if outcome == "perm":
        return failure_entry(name, "image access failure", contract.REASON_UNDECODABLE)
    if outcome == "retry":
        return failure_entry(name, "image access failure", contract.REASON_DOWNLOAD)
    if outcome == "old":  # a failure from before kinds existed: counts as permanent
        return {"file": name, "failure": "image access failure", "detections": None}
    raise ValueError(outcome)


def _run_attempt(store: BlobStore, settings: Settings, sid: str, attempt: int, outcomes: Mapping[str, str],
                 summary: bool = True, limit: int | None = None) -> None:
    """What the worker does for one attempt: read its manifest (and ETag), write the results of ``outcomes`` (names
    left out are never written) and, with ``summary``, its coverage summary after the last flush."""
    name = layout.manifest_blob(TASK, sid, attempt)
    download = store.service.get_blob_client(settings.container, name).download_blob()
    images = list(dict.fromkeys(json.loads(download.readall())["images"]))
    target = None
    if summary:
        target = CoverageTarget(BlobSink(store.service, settings.container,
                                         layout.attempt_coverage_blob(TASK, sid, attempt)),
                                images, str(download.properties.etag), limit or contract.COVERAGE_NAMES_LIMIT)
    writer = ResultWriter(BlobSink(store.service, settings.container, layout.attempt_results_blob(TASK, sid, attempt)),
                          {"detector": "test"}, flush_seconds=60, coverage=target)
    writer.start()
    for n, outcome in outcomes.items():
        writer.add(_entry(n, outcome))
    writer.close()


def _resubmit(store: BlobStore, settings: Settings, sid: str, attempt: int) -> list[str]:
    """The next attempt's manifest, written by the real resubmission; its images."""
    resubmit_one(TASK, TASK, sid, attempt, settings, store, NullPool())  # type: ignore[arg-type]
    doc = store.read_json_or_none(settings.container, layout.manifest_blob(TASK, sid, attempt))
    return list(doc["images"]) if doc else []


def _both_ways(store: BlobStore, settings: Settings, sid: str) -> tuple[contract.ShardCoverage | None, dict[str, int]]:
    """The summaries' answer (None: not usable) and the parsed one, after checking that every caller agrees."""
    summarized = summarized_coverage(store, settings, TASK, sid)
    parsed = parsed_coverage(store, settings, TASK, sid)
    assert shard_coverage(store, settings, TASK, sid) == parsed
    images = store.read_json(settings.container, layout.manifest_blob(
        TASK, sid, 0 if store.exists(settings.container, layout.manifest_blob(TASK, sid, 0)) else 1))["images"]
    expected = missing_images(images, done_images(store, settings, TASK, sid))
    assert images_to_rerun(store, settings, TASK, sid, images) == expected
    if summarized is not None:
        assert summarized.counts == parsed
        assert summarized.not_final == frozenset(expected)
    return summarized, parsed


NAMES = [f"cam{i % 3}/IMG_{i:04d}.JPG" for i in range(12)]


def test_a_resubmitted_shard_counts_the_same_from_summaries_without_reading_results(
        env: tuple[Settings, ReadSpy]) -> None:
    settings, store = env
    sid = "s00001"
    _write_manifest(store, settings, sid, 1, NAMES + NAMES[:2])  # a name listed twice counts once
    first = {NAMES[0]: "ok", NAMES[1]: "ok", NAMES[2]: "perm", NAMES[3]: "old", NAMES[4]: "retry",
             NAMES[5]: "retry", NAMES[6]: "ok"}  # 7..11 never written (the attempt died... then flushed, closed)
    _run_attempt(store, settings, sid, 1, first)
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is not None
    assert parsed == {"images": 12, "covered": 5, "failed": 2, "retryable": 2, "missing": 7}

    second_images = _resubmit(store, settings, sid, 2)
    assert second_images == NAMES[4:6] + NAMES[7:]
    _run_attempt(store, settings, sid, 2, {NAMES[4]: "ok", NAMES[5]: "retry", NAMES[7]: "perm", NAMES[8]: "ok",
                                           NAMES[9]: "retry"})  # 10, 11 never written again
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is not None
    assert parsed == {"images": 12, "covered": 8, "failed": 3, "retryable": 2, "missing": 4}

    third_images = _resubmit(store, settings, sid, 3)
    _run_attempt(store, settings, sid, 3, {n: "ok" for n in third_images})
    store.reads.clear()
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is not None and parsed["missing"] == 0 and parsed["covered"] == 12
    store.reads.clear()
    shard_coverage(store, settings, TASK, sid)
    assert store.reads and all(n.endswith(".coverage.json") for n in store.reads)  # no results, no manifest


def test_summaries_that_cannot_be_trusted_fall_back_to_the_same_numbers(env: tuple[Settings, ReadSpy]) -> None:
    settings, store = env
    outcomes = {NAMES[0]: "ok", NAMES[1]: "retry", NAMES[2]: "perm"}

    # an attempt with results and no summary (an older worker; one that died before its last flush)
    _write_manifest(store, settings, "s00002", 1, NAMES[:5])
    _run_attempt(store, settings, "s00002", 1, outcomes)
    _resubmit(store, settings, "s00002", 2)
    _run_attempt(store, settings, "s00002", 2, {NAMES[1]: "ok", NAMES[3]: "retry"}, summary=False)
    summarized, parsed = _both_ways(store, settings, "s00002")
    assert summarized is None and parsed == {"images": 5, "covered": 3, "failed": 1, "retryable": 1, "missing": 2}

    # a stale summary: the results were rewritten after it (a restart of the attempt, a fault), so their ETag moved
    _write_manifest(store, settings, "s00003", 1, NAMES[:5])
    _run_attempt(store, settings, "s00003", 1, outcomes)
    assert summarized_coverage(store, settings, TASK, "s00003") is not None
    doc = store.read_json(settings.container, layout.attempt_results_blob(TASK, "s00003", 1))
    doc["images"] = [_entry(n, "ok") for n in NAMES[:4]]
    store.write_json(settings.container, layout.attempt_results_blob(TASK, "s00003", 1), doc)
    summarized, parsed = _both_ways(store, settings, "s00003")
    assert summarized is None and parsed["covered"] == 4

    # a torn summary (not JSON) and one of another version
    _write_manifest(store, settings, "s00004", 1, NAMES[:5])
    _run_attempt(store, settings, "s00004", 1, outcomes)
    coverage_blob = layout.attempt_coverage_blob(TASK, "s00004", 1)
    good = store.read_bytes(settings.container, coverage_blob)
    for bad in (good[: len(good) // 2], json.dumps({**json.loads(good), "version": 99}).encode()):
        store.write_bytes(settings.container, coverage_blob, bad)
        summarized, parsed = _both_ways(store, settings, "s00004")
        assert summarized is None and parsed["covered"] == 2

    # too many names not final: the summary lists none, and the reader parses
    _write_manifest(store, settings, "s00005", 1, NAMES)
    _run_attempt(store, settings, "s00005", 1, outcomes, limit=3)
    assert json.loads(store.read_bytes(settings.container, layout.attempt_coverage_blob(TASK, "s00005", 1)))[
        "unwritten"] is None
    summarized, parsed = _both_ways(store, settings, "s00005")
    assert summarized is None and parsed["missing"] == 10


def test_attempts_that_ran_other_images_than_the_previous_ones_left_are_parsed(
        env: tuple[Settings, ReadSpy]) -> None:
    """Attempt 2 was cut while attempt 1 still wrote (a resident worker's late flush after its task ended), so it ran
    an image attempt 1 then finished too; attempt 3's manifest lacks an image attempt 2 left. Every summary matches
    its results and the counts even add up to the shard's images, but only the chain of manifests (each attempt ran
    exactly what the previous left) shows that they overlap and miss one: the reader must parse."""
    settings, store = env
    sid = "s00006"
    _write_manifest(store, settings, sid, 1, NAMES[:6])
    _run_attempt(store, settings, sid, 1, {NAMES[0]: "ok"}, summary=False)
    assert _resubmit(store, settings, sid, 2) == NAMES[1:6]
    _run_attempt(store, settings, sid, 1, {NAMES[0]: "ok", NAMES[1]: "ok"})  # the late flush, then its summary
    _run_attempt(store, settings, sid, 2, {NAMES[1]: "ok", NAMES[2]: "ok", NAMES[3]: "retry"})
    _write_manifest(store, settings, sid, 3, NAMES[3:5])  # without NAMES[5], which attempt 2 never wrote
    _run_attempt(store, settings, sid, 3, {NAMES[3]: "ok", NAMES[4]: "retry"})
    sums = [json.loads(store.read_bytes(settings.container, layout.attempt_coverage_blob(TASK, sid, a)))
            for a in (1, 2, 3)]
    assert sum(d["final"] for d in sums) + len(sums[-1]["retryable"] + sums[-1]["unwritten"]) == 6
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is None
    assert parsed == {"images": 6, "covered": 4, "failed": 0, "retryable": 1, "missing": 2}


def test_a_reused_attempt_0_without_a_summary_is_parsed(env: tuple[Settings, ReadSpy]) -> None:
    """An ``only_new`` re-run's attempt 0 as an app from before summaries wrote it (reused entries, no summary): the
    shard is parsed. (``activities.reuse`` now writes one: tests/integration/test_reuse.py.)"""
    settings, store = env
    sid = "s00007"
    _write_manifest(store, settings, sid, 0, NAMES[:4])
    store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 0),
                     {"images": [_entry(NAMES[0], "ok")]})
    _write_manifest(store, settings, sid, 1, NAMES[1:4])
    _run_attempt(store, settings, sid, 1, {NAMES[1]: "ok", NAMES[2]: "retry"})
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is None and parsed == {"images": 4, "covered": 2, "failed": 0, "retryable": 1, "missing": 2}


def test_a_summary_for_another_manifest_is_not_trusted(env: tuple[Settings, ReadSpy]) -> None:
    """The shard manifest was rewritten after the worker read it: its ETag is not the summary's any more."""
    settings, store = env
    sid = "s00008"
    _write_manifest(store, settings, sid, 1, NAMES[:3])
    _run_attempt(store, settings, sid, 1, {n: "ok" for n in NAMES[:3]})
    assert summarized_coverage(store, settings, TASK, sid) is not None
    _write_manifest(store, settings, sid, 1, NAMES[:5])
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is None and parsed == {"images": 5, "covered": 3, "failed": 0, "retryable": 0, "missing": 2}


def test_a_shard_without_results_is_counted_from_its_manifest(env: tuple[Settings, ReadSpy]) -> None:
    settings, store = env
    _write_manifest(store, settings, "s00009", 1, NAMES[:3])
    summarized, parsed = _both_ways(store, settings, "s00009")
    assert summarized is None and parsed == {"images": 3, "covered": 0, "failed": 0, "retryable": 0, "missing": 3}


def test_a_resubmission_tried_again_keeps_the_manifest_its_running_attempt_reads(
        env: tuple[Settings, ReadSpy]) -> None:
    """A RESUBMIT activity that failed after writing and submitting one shard's attempt (a Batch outage on another
    shard) is tried again while that attempt runs: recomputing its manifest from the results then left out the
    images the attempt had finished, and a requeued task (a preempted Spot node) rewrote its results without them."""
    settings, store = env
    sid = "s00007"
    _write_manifest(store, settings, sid, 1, NAMES)
    _run_attempt(store, settings, sid, 1, {n: "ok" for n in NAMES[:4]})
    assert _resubmit(store, settings, sid, 2) == NAMES[4:]
    _run_attempt(store, settings, sid, 2, {n: "ok" for n in NAMES[4:7]}, summary=False)  # running: partial results
    submitted: list[object] = []

    class Pool(NullPool):
        def submit(self, job_id: str, tasks: list[object]) -> None:
            submitted.extend(tasks)

    out = resubmit_one(TASK, TASK, sid, 2, settings, store, Pool())  # type: ignore[arg-type]
    assert out == {"shard_id": sid, "attempt": 2, "missing": len(NAMES) - 4, "submitted": True}
    assert store.read_json(settings.container, layout.manifest_blob(TASK, sid, 2))["images"] == NAMES[4:]
    assert len(submitted) == 1  # submitted again: Batch answers TaskExists for a task it has


def test_a_resubmission_of_several_shards_asks_the_pool_once_not_twice_a_shard(env: tuple[Settings, ReadSpy]) -> None:
    """Each resubmitted shard cost the pool a job check (Azure Batch: a create-job answered 409 JobExists) and an
    add-collection of one task: 2 requests a shard, thousands at ten million images. RESUBMIT now writes every
    shard's manifest first, then submits their tasks together: one submission, which AzureBatchPool sends at most 100
    tasks a request (REST Task - Add Collection), so ceil(n / 100) requests for n shards; no job check (the test
    below says why). A shard with nothing missing adds nothing. A submission that fails fails the activity, as one
    shard's did; its retry finds every manifest written and submits them as they are (task ids are deterministic)."""
    settings, store = env
    done = {"s00010": 4, "s00011": len(NAMES), "s00012": 2}
    for sid, ok in done.items():
        _write_manifest(store, settings, sid, 1, NAMES)
        _run_attempt(store, settings, sid, 1, {n: "ok" for n in NAMES[:ok]})
    calls: list[tuple[str, Any]] = []

    class Pool(NullPool):
        fail = True

        def ensure_job(self, job_id: str) -> None:
            calls.append(("ensure_job", job_id))

        def submit(self, job_id: str, tasks: list[Any]) -> None:
            calls.append(("submit", [t.task_id for t in tasks]))
            if self.fail:
                raise ConnectionError("the pool did not answer")

    shards = [(sid, 2) for sid in done]
    with pytest.raises(ConnectionError):
        run_resubmit(TASK, TASK, shards, settings, store, Pool())  # type: ignore[arg-type]
    assert calls == [("submit", ["s00010-a2", "s00012-a2"])]  # no job check: the job exists (the test below)
    calls.clear()
    Pool.fail = False
    out = run_resubmit(TASK, TASK, shards, settings, store, Pool())  # type: ignore[arg-type]
    assert calls == [("submit", ["s00010-a2", "s00012-a2"])]
    assert out == {"shards": [{"shard_id": "s00010", "attempt": 2, "missing": len(NAMES) - 4, "submitted": True},
                              {"shard_id": "s00011", "attempt": 2, "missing": 0, "submitted": False},
                              {"shard_id": "s00012", "attempt": 2, "missing": len(NAMES) - 2, "submitted": True}]}
    for sid, ok in (("s00010", 4), ("s00012", 2)):
        assert store.read_json(settings.container, layout.manifest_blob(TASK, sid, 2))["images"] == NAMES[ok:]


def test_an_attempt_that_wrote_nothing_covers_nothing_and_the_later_summaries_are_used(
        env: tuple[Settings, ReadSpy]) -> None:
    """Attempt 1 exited 69 (storage out of reach) or crashed before its first flush: no results, no summary. It covers
    nothing, so attempt 2 ran the whole shard and the summaries count the shard: every later poll and resubmission
    read one small summary per attempt and the shard manifest, not the results (megabytes at 10,000 images), as they
    did when the first attempt's missing summary made them give up."""
    settings, store = env
    sid = "s00013"
    _write_manifest(store, settings, sid, 1, NAMES + NAMES[:1])
    assert _resubmit(store, settings, sid, 2) == NAMES + NAMES[:1]
    _run_attempt(store, settings, sid, 2, {NAMES[0]: "ok", NAMES[1]: "perm", NAMES[2]: "retry", NAMES[3]: "ok"})
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is not None
    assert parsed == {"images": 12, "covered": 3, "failed": 1, "retryable": 1, "missing": 9}
    assert _resubmit(store, settings, sid, 3) == NAMES[2:3] + NAMES[4:]
    # attempt 3 wrote nothing either: a gap in the middle, which leaves attempt 4 what attempt 2 left
    assert _resubmit(store, settings, sid, 4) == NAMES[2:3] + NAMES[4:]
    _run_attempt(store, settings, sid, 4, {n: "ok" for n in NAMES[4:]})
    store.reads.clear()
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is not None and parsed["covered"] == 11 and summarized.not_final == {NAMES[2]}
    store.reads.clear()
    shard_coverage(store, settings, TASK, sid)
    assert not any(n.endswith(".results.json") for n in store.reads), store.reads


def test_an_attempt_after_one_that_wrote_nothing_must_have_run_the_whole_shard(env: tuple[Settings, ReadSpy]) -> None:
    """Attempt 1 wrote nothing, and attempt 2 ran fewer images than the shard's (a manifest from elsewhere; a
    re-run's attempt 0 whose reused results were never written while attempt 1 runs only the rest): the images it
    did not run are not covered, so the summaries are not trusted and the shard is parsed."""
    settings, store = env
    sid = "s00014"
    _write_manifest(store, settings, sid, 1, NAMES[:6])
    _write_manifest(store, settings, sid, 2, NAMES[1:6])
    _run_attempt(store, settings, sid, 2, {n: "ok" for n in NAMES[1:6]})
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is None and parsed == {"images": 6, "covered": 5, "failed": 0, "retryable": 0, "missing": 1}

    sid = "s00015"
    _write_manifest(store, settings, sid, 0, NAMES[:4])  # reuse wrote attempt 0's manifest, then died
    _write_manifest(store, settings, sid, 1, NAMES[1:4])
    _run_attempt(store, settings, sid, 1, {n: "ok" for n in NAMES[1:4]})
    summarized, parsed = _both_ways(store, settings, sid)
    assert summarized is None and parsed == {"images": 4, "covered": 3, "failed": 0, "retryable": 0, "missing": 1}


def test_random_histories_with_attempts_that_wrote_nothing_count_as_parsing(env: tuple[Settings, ReadSpy]) -> None:
    """Seeded random shard histories, each step counted both ways (``_both_ways`` asserts that a usable summary
    answer is the parsed one): attempts that wrote nothing first, in the middle and last; an ``only_new`` re-run's
    attempt 0 with reused results, or with its manifest only (reuse died before the results); a manifest built from
    an older state (a RESUBMIT's manifest from before the previous attempt wrote), or one that leaves out a name; a
    late flush of an earlier attempt; a results blob that is empty or torn; the shard manifest rewritten with the
    same names or others. Why: an image the summaries call final where parsing does not is an image the merge writes
    no result for. (``tests/unit/test_coverage_summary.py`` runs thousands of such histories without storage.)"""
    settings, store = env
    rng = random.Random(45)
    trusted_after_gap = 0
    for case in range(48):
        sid = f"r{case:05d}"
        shard = NAMES[: rng.randint(1, 8)]
        manifest = shard + rng.sample(shard, rng.randint(0, min(2, len(shard))))  # names listed twice
        first = 1
        if rng.random() < 0.35:  # an only_new re-run: attempt 0's manifest lists the whole shard
            first = 0
            _write_manifest(store, settings, sid, 0, manifest)
            if rng.random() < 0.6:  # reused final entries as attempt 0, attempt 1 runs the rest
                reused = {n: rng.choice(("ok", "perm", "old")) for n in shard if rng.random() < 0.5}
                _run_attempt(store, settings, sid, 0, reused)
                _write_manifest(store, settings, sid, 1, [n for n in manifest if n not in reused])
            else:  # reuse died after attempt 0's manifest: attempt 1's is still the whole shard
                _write_manifest(store, settings, sid, 1, manifest)
        else:
            _write_manifest(store, settings, sid, 1, manifest)
        ran: dict[int, dict[str, str]] = {}  # attempt: the outcomes it wrote
        manifests = {1: list(store.read_json(settings.container, layout.manifest_blob(TASK, sid, 1))["images"])}
        for attempt in range(1, rng.randint(2, 6)):
            if attempt > 1:
                if rng.random() < 0.2 and attempt - 2 in manifests:  # built from an older state
                    _write_manifest(store, settings, sid, attempt, manifests[attempt - 2])
                    images = manifests[attempt - 2]
                else:
                    images = _resubmit(store, settings, sid, attempt)
                    if len(images) > 1 and rng.random() < 0.2:  # one name left out (a manifest from elsewhere)
                        images = images[1:]
                        _write_manifest(store, settings, sid, attempt, images)
                if not images:
                    break
                manifests[attempt] = images
            roll = rng.random()
            if roll < 0.35:  # wrote nothing (an exit 69, a crash before its first flush)
                pass
            elif roll < 0.42:  # a results blob that is empty or torn, no summary
                store.write_bytes(settings.container, layout.attempt_results_blob(TASK, sid, attempt),
                                  rng.choice((b"", b'{"images": [{"file": ')), "application/json")
            else:
                outcomes = {n: o for n in dict.fromkeys(manifests[attempt])
                            if (o := rng.choice(("ok", "perm", "old", "retry", None))) is not None}
                ran[attempt] = outcomes
                _run_attempt(store, settings, sid, attempt, outcomes, summary=rng.random() < 0.9)
            if ran and rng.random() < 0.15:  # a late flush of an earlier attempt (a resident worker), with its summary
                late = rng.choice(sorted(ran))
                more = {n: "ok" for n in dict.fromkeys(manifests.get(late, manifest)) if rng.random() < 0.3}
                ran[late] = {**more, **ran[late]}
                _run_attempt(store, settings, sid, late, ran[late])
            if rng.random() < 0.1:  # the shard manifest rewritten: the same names reordered, or one more
                names = list(reversed(manifest)) if rng.random() < 0.5 else manifest + [f"new/{case}.jpg"]
                _write_manifest(store, settings, sid, first, names)
            summarized, _ = _both_ways(store, settings, sid)
            listed = store.list_names(settings.container, layout.shard_prefix(TASK, sid))
            with_results = sorted(a for n in listed if (a := layout.attempt_of_results_blob(n)) is not None)
            trusted_after_gap += summarized is not None and bool(with_results) and with_results[0] > first
    assert trusted_after_gap > 5  # the histories did reach the summaries past leading attempts that wrote nothing


def test_a_resubmission_to_a_job_deleted_outside_trapbatch_fails_job_closed_instead_of_creating_it_again(
        env: tuple[Settings, ReadSpy]) -> None:
    """A RESUBMIT follows its shards' first submission to the run's job, which created it (``run_submit``), so a job
    missing then was deleted outside trapbatch ('az batch job delete', the portal). Created again under its id, as
    RESUBMIT did (``ensure_job`` first), the group's other attempts, deleted with the old job, were no longer in the
    pool, yet ``check_job`` found the new job active: nothing said so, the shard group waited up to
    ``FULL_POLL_EVERY`` polls to find them unknown, then ran them all again in the job the operator had deleted. Here
    the pool is what Batch does: a job deleted is gone until created again, a submission to it is refused
    (AzureBatchPool: ``JobClosed`` for 404 JobNotFound)."""
    settings, store = env
    sid = "s00013"
    _write_manifest(store, settings, sid, 1, NAMES)
    _run_attempt(store, settings, sid, 1, {n: "ok" for n in NAMES[:4]})

    class Batch(NullPool):
        jobs: set[str] = set()
        added: list[str] = []

        def ensure_job(self, job_id: str) -> None:
            self.jobs.add(job_id)

        def submit(self, job_id: str, tasks: list[Any]) -> None:
            if job_id not in self.jobs:
                raise JobClosed(f"job {job_id} was deleted (JobNotFound)")
            self.added.extend(t.task_id for t in tasks)

    batch = Batch()
    run_submit(TASK, TASK, [(sid, 1)], settings, store, batch)  # type: ignore[arg-type]  # the first: creates the job
    batch.jobs.discard(TASK)  # deleted outside trapbatch while the attempt ran
    with pytest.raises(JobClosed, match="deleted"):
        run_resubmit(TASK, TASK, [(sid, 2)], settings, store, batch)  # type: ignore[arg-type]
    assert batch.jobs == set() and batch.added == [f"{sid}-a1"]


def test_a_later_submission_to_a_job_deleted_outside_trapbatch_fails_job_closed_on_the_local_pool(
        env: tuple[Settings, ReadSpy], storage_connection: str, unique_name: str) -> None:
    """A shard group's SUBMIT after its first (the next wave of pending shards) says ``create_job: false``
    (orchestrations.shards): on LocalPool, as on Batch, a job deleted meanwhile refuses it (``JobClosed``, saying
    what to do) and is not created again; its tasks stay gone. A SUBMIT without the field (an input of before it)
    is not created again either once a SUBMIT of this run left the job's marker (``activities.pool._ensure_job_once``);
    without a marker (a run whose SUBMITs ran in an older release) it creates the job again, as every SUBMIT did."""
    settings, store = env
    pool = LocalPool(storage_connection, log_container=unique_name, table=unique_name + "pool", max_concurrent=1,
                     worker_command=[sys.executable, "-c", "pass"])
    run_submit(TASK, TASK, [("s00020", 1)], settings, store, pool)  # the group's first: creates the job
    pool.delete_job(TASK)  # deleted outside trapbatch ('az batch job delete', the portal)
    with pytest.raises(JobClosed, match="was deleted.*Post the same request again"):
        run_submit(TASK, TASK, [("s00021", 1)], settings, store, pool, create_job=False)
    assert pool.job_state(TASK) is JobState.deleted and pool.poll(TASK) == []
    with pytest.raises(JobClosed, match="was deleted.*Post the same request again"):
        run_submit(TASK, TASK, [("s00021", 1)], settings, store, pool)  # no field, but the job's marker
    assert pool.job_state(TASK) is JobState.deleted and pool.poll(TASK) == []
    store.delete_if_exists(settings.container, layout.pool_job_marker(TASK))  # as before the marker existed
    run_submit(TASK, TASK, [("s00021", 1)], settings, store, pool)  # no field, no marker: created again, as before
    assert pool.job_state(TASK) is JobState.active and [i.task_id for i in pool.poll(TASK)] == ["s00021-a1"]
    pool.close_job(TASK)  # its runner ends with the test, not minutes after the suite's Azurite is gone
