"""The ten-million record's arithmetic (``bench/extrapolate_control_plane.py``): which figure comes from which run."""
from __future__ import annotations

from typing import Any

import pytest

from bench.extrapolate_control_plane import extrapolate


def record(images: int, cpu: float, shape_of: int | None = None, **walls: float) -> dict[str, Any]:
    return {"images": images, "shape_of": shape_of, "scale_model": {"scale": 1} if shape_of else None,
            "runtime_status": "Completed", "control_plane_cpu_s": cpu, "control_plane_cpu_share_of_gpu": 0.0,
            "max_history_events_per_instance": 900 if shape_of else 200, "instances": 6 if shape_of else 2,
            "shards": 1000 if shape_of else 100, "status_p50_s": 0.02, "status_p99_s": 0.3, "status_max_s": 0.5,
            "status_polls": 40, "peak_rss_mb": 700.0,
            "functions": {"activities": {n: {"max_wall_s": w} for n, w in walls.items()}}}


def test_cpu_is_k_times_the_full_run_plus_the_scale_model_and_the_rest_comes_from_the_right_run() -> None:
    full = record(1_000_000, 30.0, merge_part=15.0, clean_merge_work=44.0)
    shape = record(10_000, 50.0, shape_of=10_000_000, merge_part=7.5, clean_merge_work=17.5, plan_listing=9.0)
    r = extrapolate(full, shape, 10_000_000, "full.json", "shape.json")
    assert r["extrapolated"] is True and "EXTRAPOLATED" in r["note"] and r["sources"]["k"] == 10
    assert r["control_plane_cpu_s"] == 350.0 and r["control_plane_cpu_share_of_gpu"] == round(350 / 40_000, 5)
    assert (r["max_history_events_per_instance"], r["instances"], r["shards"]) == (900, 6, 1000)  # the shape's
    assert r["max_activity"] == "clean_merge_work" and r["max_activity_s"] == 44.0  # the larger of the two runs
    assert r["activity_walls"]["plan_listing"] == {"full_max_wall_s": 0.0, "shape_max_wall_s": 9.0}
    assert r["failure_rates"] == {"full": 0.0, "shape": 0.0} and r["resubmissions"] == {"full": 0, "shape": 0}
    failing = extrapolate({**full, "failure_rate": 0.0005, "resubmissions": 100},
                          {**shape, "failure_rate": 0.2, "resubmissions": 950}, 10_000_000)
    assert failing["failure_rates"] == {"full": 0.0005, "shape": 0.2}  # the record says what each run simulated
    assert failing["resubmissions"] == {"full": 100, "shape": 950}


def test_the_sources_must_be_a_full_run_and_a_model_of_the_size() -> None:
    full = record(1_000_000, 30.0)
    shape = record(10_000, 50.0, shape_of=10_000_000)
    with pytest.raises(SystemExit, match="not a full-size run|scale model, not"):
        extrapolate(shape, shape, 10_000_000)
    with pytest.raises(SystemExit, match="not a scale model of 20,000,000"):
        extrapolate(full, shape, 20_000_000)
    with pytest.raises(SystemExit, match="completed"):
        extrapolate({**full, "runtime_status": "Failed"}, shape, 10_000_000)
