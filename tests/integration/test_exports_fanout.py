"""The exports fanned out (activities.exportparts over core.exportparts' ranges) write the same bytes as the single
activity (activities.exports.run_exports), for several splits of the results into merge parts, both variants, with
and without an image list's metadata (ListMetadata walked from each part's first shard)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from activities.exportparts import run_exports_combine, run_exports_part, run_exports_zooniverse
from activities.exports import run_exports
from adapters.blobs import BlobStore
from core import contracts as c
from core import fanin, mdformat
from core.exportparts import part_ranges
from core.settings import Settings
from gpu_batch import layout
from tests.integration.test_exports import LIST_COLUMNS, LIST_SHARDS, TASK, _results, task  # noqa: F401

SHARDS_OF_LIST = [3, 3]  # LIST_SHARDS' images per shard


def _write_fanin_results(store: BlobStore, container: str, variant: str, shard_sizes: list[int],
                         shards_per_part: int) -> list[list[int]]:
    """The results as the merge fan-in writes them; returns MergeOutput.parts."""
    doc = _results()
    entries, parts, fragments = doc["images"], [], []
    starts = [sum(shard_sizes[:i]) for i in range(len(shard_sizes))]
    for first in range(0, len(shard_sizes), shards_per_part):
        count = min(shards_per_part, len(shard_sizes) - first)
        lo = starts[first]
        hi = lo + sum(shard_sizes[first:first + count])
        data = b"".join(fanin.entry_fragment(e) for e in entries[lo:hi])
        parts.append([first, count, len(data)])
        fragments.append(data)
    body = b"".join(fragments)
    results = fanin.results_head(doc["info"]) + body[1:] + fanin.RESULTS_TAIL
    assert list(mdformat.iter_images(__import__("io").BytesIO(results))) == entries
    store.write_bytes(container, layout.results_blob(TASK, variant), results)
    return parts


def _snapshot(store: BlobStore, container: str, variant: str) -> dict[str, bytes]:
    prefix = layout.exports_prefix(TASK, variant)
    client = store.service.get_container_client(container)
    return {n: store.read_bytes(container, n) for n in client.list_blob_names(name_starts_with=prefix)}


def _fanned(settings: Settings, store: BlobStore, variant: str, parts: list[list[int]]) -> c.ExportsOutput:
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant=variant, part=p, first_shard=f, offset=o,
                                                length=n), settings, store) for p, f, o, n in part_ranges(parts)]
    combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant=variant, parts=outs), settings, store)
    assert not combined["conflict"]
    output = combined["output"]
    batches = run_exports_zooniverse(c.ExportsZooniverseInput(task_id=TASK, variant=variant,
                                                              eligible=output["zooniverse_subjects"]), settings, store)
    return {**output, "zooniverse_batches": batches}


SPLITS = [([3, 3], 1), ([3, 3], 2), ([1] * 6, 1), ([1] * 6, 4), ([2, 2, 2], 1), ([2, 0, 4], 1)]


@pytest.mark.parametrize("variant", ["", layout.REPEATS_REMOVED])
@pytest.mark.parametrize("listed,shard_sizes,shards_per_part",
                         [(False, sizes, per) for sizes, per in SPLITS]
                         # with a list, only the splits of its own shards (three images each) apply
                         + [(True, sizes, per) for sizes, per in SPLITS if sizes == SHARDS_OF_LIST])
def test_fanned_out_exports_are_the_single_activitys_bytes(task: Any, variant: str, listed: bool,
                                                            shard_sizes: list[int], shards_per_part: int) -> None:
    settings, store, _ = task
    if listed:
        enumeration = store.read_json(settings.container, layout.enumeration_blob(TASK))
        store.write_json(settings.container, layout.enumeration_blob(TASK),
                         {**enumeration, "shards": 2, "image_list": {"metadata_columns": LIST_COLUMNS}})
        for index, metadata in enumerate(LIST_SHARDS):
            store.write_json(settings.container, layout.shard_list_blob(TASK, layout.shard_id(index)),
                             {"not_found": [], "metadata": metadata})
    parts = _write_fanin_results(store, settings.container, variant, shard_sizes, shards_per_part)
    single = run_exports(TASK, settings, store, variant=variant)
    expected = _snapshot(store, settings.container, variant)
    for name in expected:
        store.delete(settings.container, name) if hasattr(store, "delete") else \
            store.service.get_blob_client(settings.container, name).delete_blob()
    fanned = _fanned(settings, store, variant, parts)
    assert fanned == single
    got = _snapshot(store, settings.container, variant)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
