"""``only_new``'s reuse step (``activities.reuse``) when its run is resumed or replaced: the key (generation) is listed
again, and what a run's reuse step wrote must follow the listing the run that finishes made.

Enumerations made in Azurite by the real parallel enumeration (``test_parallel_enumeration.run_parallel``), each run
with its own pool job (``run_job``: its own listing folder), as ``api.starters`` resumes a terminated run.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from activities.merge import _merged_shard
from activities.reuse import run_reuse
from activities.shard_results import shard_manifest
from adapters.blobs import BlobStore
from core.settings import Settings
from gpu_batch import layout
from tests.integration.test_parallel_enumeration import SMALL, env, manifests, run_parallel  # noqa: F401 - fixture
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
