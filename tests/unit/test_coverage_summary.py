"""The coverage summary (``gpu_batch.manifest``): what the worker writes, what the app accepts, and that combining
the summaries of chained attempts gives exactly ``core.mdformat.coverage`` over their entries (seeded random shards;
the same against Azurite, through the worker's writer: tests/integration/test_shard_coverage.py)."""
from __future__ import annotations

import json
import random
from typing import Any

from core import mdformat
from gpu_batch import manifest as contract

OUTCOMES = ("ok", "perm", "old", "retry", None)


def _entry(name: str, outcome: str) -> dict[str, Any]:
    if outcome == "ok":
        return {"file": name, "detections": []}
    if outcome == "old":  # a failure without a kind (an older worker): permanent
        return {"file": name, "failure": "image access failure", "detections": None}
    reason = contract.REASON_UNDECODABLE if outcome == "perm" else contract.REASON_TIMEOUT
    return {"file": name, "failure": "image access failure", "detections": None, **contract.failure_fields(reason)}


def _summary(entries: dict[str, dict[str, Any]], images: list[str], etag: str, manifest_etag: str = "m",
             limit: int = contract.COVERAGE_NAMES_LIMIT) -> contract.CoverageSummary:
    doc = contract.coverage_summary(entries, images, etag, manifest_etag, limit)
    parsed = contract.read_coverage_summary(json.dumps(doc).encode())
    assert parsed is not None and parsed.matches(f'"{etag}"')  # quoted as Put Blob returns it, or not
    return parsed


def test_chained_attempts_combine_to_the_parsed_coverage() -> None:
    rng = random.Random(7)
    for _ in range(300):
        shard = [f"cam{i % 4}/{i:03d}.jpg" for i in range(rng.randint(1, 40))]
        manifest = shard + rng.sample(shard, rng.randint(0, min(3, len(shard))))  # names listed twice
        images, attempts, summaries = manifest, [], []
        for attempt in range(rng.randint(1, 4)):
            entries = {}
            for name in dict.fromkeys(images):
                outcome = rng.choice(OUTCOMES)
                if outcome is not None:
                    entries[name] = _entry(name, outcome)
            attempts.append(list(entries.values()))
            summaries.append(_summary(entries, images, f"0x{attempt}"))
            images = [n for n in dict.fromkeys(images) if n not in entries or not contract.is_final(entries[n])]
        combined = contract.combine_coverage("m", summaries)
        assert combined is not None
        assert combined.counts == mdformat.coverage(manifest, attempts)
        assert combined.not_final == set(shard) - mdformat.final_files(attempts)


def test_summaries_that_do_not_chain_or_describe_other_documents_are_refused() -> None:
    names = ["a", "b", "c", "d"]
    first = {"a": _entry("a", "ok"), "b": _entry("b", "retry")}
    s1 = _summary(first, names, "0x1")
    assert contract.combine_coverage("m", [s1]) is not None
    assert contract.combine_coverage("other", [s1]) is None  # the shard's manifest is not the one the worker ran
    assert contract.combine_coverage("", [s1]) is None and contract.combine_coverage("m", []) is None
    assert contract.combine_coverage("m", [s1, _summary({}, ["b", "c"], "0x2")]) is None  # lost "d"
    assert contract.combine_coverage("m", [s1, _summary({}, ["b", "c", "d"], "0x2")]) is not None
    assert contract.combine_coverage("m", [_summary({**first, "x": _entry("x", "ok")}, names, "0x1")]) is None
    unlisted = _summary(first, names, "0x1", limit=2)  # three names not final: over the limit, none listed
    assert unlisted.retryable is None and unlisted.unwritten is None
    assert contract.combine_coverage("m", [unlisted]) is None
    assert not s1.matches("0x2") and not s1.matches("")


def test_only_well_formed_summaries_are_read() -> None:
    good = contract.coverage_summary({"a": _entry("a", "ok")}, ["a", "b"], "0x1", "m")
    assert contract.read_coverage_summary(json.dumps(good).encode()) is not None
    bad = [b"", b"{", b"[]", json.dumps({**good, "version": 2}).encode(), json.dumps({**good, "final": True}).encode(),
           json.dumps({**good, "images": -1}).encode(), json.dumps({**good, "results_etag": None}).encode(),
           json.dumps({**good, "retryable": None}).encode(), json.dumps({**good, "unwritten": [1]}).encode()]
    assert [contract.read_coverage_summary(data) for data in bad] == [None] * len(bad)
    assert contract.read_coverage_summary(None) is None


def test_attempts_that_wrote_nothing_cover_nothing_given_the_shard_names_where_they_came_first() -> None:
    """An attempt without results (an exit 69, a crash before its first flush) has no summary: left out, it covers
    nothing, so the next attempt ran what the one before it left. Where such attempts came first, the oldest summary
    names another manifest's ETag: with the shard's names it counts, only if that attempt ran exactly them."""
    rng = random.Random(11)
    for _ in range(300):
        shard = [f"cam{i % 4}/{i:03d}.jpg" for i in range(rng.randint(1, 40))]
        manifest = shard + rng.sample(shard, rng.randint(0, min(3, len(shard))))
        images, attempts, summaries = manifest, [], []
        for attempt in range(rng.randint(1, 5)):
            if rng.random() < 0.4:  # wrote nothing: no results, no summary
                continue
            entries = {n: _entry(n, o) for n in dict.fromkeys(images) if (o := rng.choice(OUTCOMES)) is not None}
            attempts.append(list(entries.values()))
            summaries.append(_summary(entries, images, f"0x{attempt}", f"m{attempt}"))  # the attempt's own manifest
            images = [n for n in dict.fromkeys(images) if n not in entries or not contract.is_final(entries[n])]
        combined = contract.combine_coverage("m", summaries, manifest)
        if not summaries:
            assert combined is None
            continue
        assert combined is not None
        assert combined.counts == mdformat.coverage(manifest, attempts)
        assert combined.not_final == set(shard) - mdformat.final_files(attempts)
        # the oldest attempt with results ran another set of names than the shard's: not trusted
        assert contract.combine_coverage("m", summaries, list(dict.fromkeys(manifest))[1:] + ["x"]) is None
        assert contract.combine_coverage("m", summaries, manifest + ["x"]) is None


def test_random_histories_with_gaps_stale_manifests_and_late_flushes_never_count_more_than_parsing() -> None:
    """Whatever the attempts ran, a summary answer is the parsed one, or there is none. Histories: attempts that
    wrote nothing first, in the middle or last (left out of ``summaries``; the shard's names passed only where the
    first ones wrote nothing, as ``activities.shard_results.summarized_coverage`` does, else the manifest's ETag), a
    manifest built from an older state, one that leaves out a name, a late flush of an earlier attempt (its entries
    grow after the next attempt's manifest was cut), the oldest attempt with results run on another manifest."""
    rng = random.Random(45)
    trusted = 0
    for _ in range(3000):
        shard = [f"cam{i % 4}/{i:03d}.jpg" for i in range(rng.randint(1, 12))]
        manifest = shard + rng.sample(shard, rng.randint(0, min(3, len(shard))))
        runs: list[tuple[list[str], dict[str, dict[str, Any]], str]] = []  # (images, entries, manifest ETag)
        history: list[list[str]] = [manifest]  # what each resubmission would have been cut from
        images = manifest
        first_wrote = False
        for attempt in range(rng.randint(1, 5)):
            if attempt:
                roll = rng.random()
                if roll < 0.15 and len(history) > 1:  # cut from an older state
                    images = rng.choice(history[:-1])
                elif roll < 0.25 and len(images) > 1:  # a name left out
                    images = images[1:]
            elif rng.random() < 0.1:  # the oldest attempt ran another manifest (a subset, or the shard's reordered)
                images = rng.choice((manifest[1:] or manifest, list(reversed(manifest))))
            if rng.random() < 0.35:  # wrote nothing (no results, no summary): the next runs what it was to run
                history.append(images)
                continue
            entries = {n: _entry(n, o) for n in dict.fromkeys(images) if (o := rng.choice(OUTCOMES)) is not None}
            runs.append((images, entries, "m" if attempt == 0 and images is manifest else f"m{attempt}"))
            first_wrote = first_wrote or attempt == 0
            if runs and rng.random() < 0.15:  # a late flush of an earlier attempt: more of its names final
                late = rng.randrange(len(runs))
                l_images, l_entries, l_etag = runs[late]
                grown = {**{n: _entry(n, "ok") for n in dict.fromkeys(l_images) if rng.random() < 0.3}, **l_entries}
                runs[late] = (l_images, grown, l_etag)
            images = [n for n in dict.fromkeys(images) if n not in entries or not contract.is_final(entries[n])]
            history.append(images)
        if not runs:
            continue
        summaries = [_summary(e, i, f"0x{k}", etag) for k, (i, e, etag) in enumerate(runs)]
        # as summarized_coverage: the shard's names only where the first attempt (here attempt 0) wrote nothing
        combined = contract.combine_coverage("m", summaries, None if first_wrote else manifest)
        if combined is None:
            continue
        trusted += 1
        parsed = [list(e.values()) for _, e, _ in runs]
        assert combined.counts == mdformat.coverage(manifest, parsed)
        assert combined.not_final == set(shard) - mdformat.final_files(parsed)
    assert trusted > 500
