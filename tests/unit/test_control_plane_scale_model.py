"""The control-plane benchmark's scale model (``bench/control_plane.py --shape-of M``): the sizes it divides and the
listing limits it installs, checked without a run (the run itself is tests/integration/test_control_plane_bench.py).

Why it matters: a scale-model record stands for a 10M-image task's orchestration shape in bench/RESULTS.md; if the
sizes stopped dividing (or the plan stopped taking its limits where the benchmark sets them), the record would quietly
describe a smaller task."""
from __future__ import annotations

import argparse
from types import ModuleType

import pytest

from tests.bench_scripts import load_bench


def _bench() -> ModuleType:
    return load_bench("control_plane.py")


def _args(**kw: int) -> argparse.Namespace:
    values = {"images": 100_000, "shape_of": 0, "images_per_shard": 10_000, "images_per_folder": 2000}
    values.update(kw)
    return argparse.Namespace(**values)


def test_without_a_shape_the_run_uses_the_request_and_production_sizes() -> None:
    shape = _bench().scale_model(_args())
    assert shape["scale"] == 1.0 and shape["env"] == {} and shape["listing"] is None
    assert shape["images_per_shard"] == 10_000 and shape["images_per_folder"] == 2000


def test_a_shape_of_ten_million_over_100k_images_divides_every_size_by_100() -> None:
    from core.settings import OrchestrationKnobs
    from core.shards import REUSE_IMAGES_PER_CALL, ListingLimits

    shape = _bench().scale_model(_args(shape_of=10_000_000))
    knobs, limits = OrchestrationKnobs(), ListingLimits()
    assert shape["scale"] == 100.0
    assert shape["images_per_shard"] == 100 and shape["images_per_folder"] == 20
    assert shape["env"]["TRAPBATCH_MERGE_IMAGES_PER_PART"] == str(knobs.merge_images_per_part // 100)
    assert shape["env"]["TRAPBATCH_REPEAT_SEARCH_DETECTIONS_PER_GROUP"] == str(
        knobs.repeat_search_detections_per_group // 100)
    assert shape["env"]["TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS"] == str(knobs.repeat_max_folder_detections // 100)
    assert shape["env"]["TRAPBATCH_REUSE_IMAGES_PER_CALL"] == str(REUSE_IMAGES_PER_CALL // 100)
    listing = shape["listing"]
    assert listing["names_per_call"] == limits.names_per_call // 100
    assert listing["images_per_write"] == limits.images_per_write // 100
    assert listing["page_size"] == limits.page_size // 100
    # counts are not sizes: the same number of units and plan entries as at full size
    assert listing["max_units"] == limits.max_units and listing["plan_items"] == limits.plan_items


def test_a_shape_smaller_than_the_run_is_refused() -> None:
    with pytest.raises(SystemExit, match="smaller than"):
        _bench().scale_model(_args(shape_of=1000))


def test_the_listing_limits_become_the_plans_defaults() -> None:
    from activities import enumerate as enumeration
    from core.shards import ListingLimits

    saved = enumeration.run_plan_listing.__defaults__
    try:
        _bench()._install_listing_limits({"names_per_call": 7, "images_per_write": 9, "page_size": 3,
                                          "plan_items": 20_000, "max_units": 32, "expand_below": 64})
        defaults, index = enumeration.run_plan_listing.__defaults__ or (), _bench().limits_default_index()
        assert defaults[index] == ListingLimits(names_per_call=7, images_per_write=9, page_size=3)
        others = [d for i, d in enumerate(defaults) if i != index]
        assert others == [d for i, d in enumerate(saved or ()) if i != index]  # e.g. ``run`` after it, as it was
    finally:
        enumeration.run_plan_listing.__defaults__ = saved
