"""A re-render at another threshold over a results file cut into parallel parts, in Azurite: the CSV and the preview
sample are the single pass's bytes, wherever the parts are cut, and the parts' work is gone afterwards."""
from __future__ import annotations

import json
from typing import Any

import pytest

from activities import rethreshold
from activities.merge import run_merge
from activities.rethreshold import (run_rethreshold, run_rethreshold_clean, run_rethreshold_combine,
                                    run_rethreshold_part)
from core import contracts as c
from gpu_batch import layout
from orchestrations.rerender import rerender_previews
from tests.integration.test_fanin import MODEL, task, task_images  # noqa: F401  (fixtures: a task's shard results)
from tests.orchestrations.replay import T0, run_orchestrator


def outputs(settings: Any, store: Any, tid: str, threshold: float) -> tuple[bytes, Any]:
    csv = store.read_bytes(settings.container, layout.threshold_csv_blob(tid, threshold))
    sample = json.loads(store.read_bytes(settings.container, layout.preview_sample_blob(tid)))
    store.service.get_blob_client(settings.container, layout.threshold_csv_blob(tid, threshold)).delete_blob()
    return csv, sample


@pytest.mark.parametrize("part_bytes", [700, 2_003, 9_000])
def test_parts_give_the_single_pass_bytes(task: Any, part_bytes: int) -> None:  # noqa: F811
    settings, store, tid, counts = task
    run_merge(tid, MODEL, T0.isoformat(), settings, store)
    merged_sample = store.read_bytes(settings.container, layout.preview_sample_blob(tid))
    single = run_rethreshold(tid, 0.35, "", settings, store)
    assert "parts" not in single and single["images"] == counts["images"]
    expected = outputs(settings, store, tid, 0.35)
    store.write_bytes(settings.container, layout.preview_sample_blob(tid), merged_sample)  # as the merge left it

    plan = run_rethreshold(tid, 0.35, "", settings, store, part_bytes=part_bytes)
    ranges = plan["parts"]
    size = store.size_or_none(settings.container, layout.results_blob(tid))
    assert size is not None and len(ranges) == -(-(ranges[-1][0] + ranges[-1][1] - ranges[0][0]) // part_bytes) > 1
    assert not store.exists(settings.container, layout.threshold_csv_blob(tid, 0.35))  # a plan writes nothing
    parts = [run_rethreshold_part(c.RethresholdPartInput(task_id=tid, threshold=0.35, variant="", part=k,
                                                         offset=offset, length=length), settings, store)
             for k, (offset, length) in enumerate(ranges)]
    assert sum(p["images"] for p in parts) == counts["images"] and all(p["images"] for p in parts)
    combined = run_rethreshold_combine(c.RethresholdCombineInput(task_id=tid, threshold=0.35, variant="",
                                                                 parts=parts), settings, store)
    assert {k: v for k, v in combined.items()} == {k: v for k, v in single.items()}
    assert run_rethreshold_combine(c.RethresholdCombineInput(task_id=tid, threshold=0.35, variant="", parts=parts),
                                   settings, store) == combined  # run again (at-least-once): the same
    assert outputs(settings, store, tid, 0.35) == expected
    work = layout.rethreshold_work_prefix(tid, 0.35)
    assert list(store.list_names(settings.container, work))
    assert run_rethreshold_clean(c.RethresholdInput(task_id=tid, threshold=0.35, variant=""), settings, store) > 0
    assert list(store.list_names(settings.container, work)) == []
    assert run_rethreshold_clean(c.RethresholdInput(task_id=tid, threshold=0.35, variant=""), settings, store) == 0


def test_the_rerender_orchestration_runs_the_parts_with_the_real_activities(
        task: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    settings, store, tid, counts = task
    run_merge(tid, MODEL, T0.isoformat(), settings, store)
    merged_sample = store.read_bytes(settings.container, layout.preview_sample_blob(tid))
    run_rethreshold(tid, 0.2, "", settings, store)
    expected = outputs(settings, store, tid, 0.2)
    store.write_bytes(settings.container, layout.preview_sample_blob(tid), merged_sample)
    monkeypatch.setattr(rethreshold, "PART_BYTES", 1_500)
    bodies = {c.RETHRESHOLD: lambda p: run_rethreshold(p["task_id"], p["threshold"], p["variant"], settings, store),
              c.RETHRESHOLD_PART: lambda p: run_rethreshold_part(p, settings, store),
              c.RETHRESHOLD_COMBINE: lambda p: run_rethreshold_combine(p, settings, store),
              c.RETHRESHOLD_CLEAN: lambda p: run_rethreshold_clean(p, settings, store),
              c.PREVIEWS: lambda p: {"container": "$web", "counts": {}}}
    run = run_orchestrator(rerender_previews, {"task_id": tid, "threshold": 0.2, "model": MODEL, "request_name": "",
                                               "variants": [""]}, lambda name, p: bodies[name](p))
    assert run.status == "Completed", run.error
    assert run.activity_names.count(c.RETHRESHOLD_PART) > 3
    assert outputs(settings, store, tid, 0.2) == expected
    assert list(store.list_names(settings.container, layout.rethreshold_work_prefix(tid, 0.2))) == []
