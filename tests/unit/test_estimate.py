"""core/estimate.py: the arithmetic of a dry run's estimate, and the settings it reads."""
from __future__ import annotations

import math

import pytest

from core.errors import ConfigError
from core.estimate import DEFAULT_WORKER_IMAGES_PER_S, RESIDENT_SHARD_START_S, SHARD_START_S, estimate
from core.settings import Settings


def test_one_node_runs_every_shard_one_after_another() -> None:
    est = estimate(images=1_000_000, shards=100, images_per_shard=10_000, worker_images_per_s=250.0, pool_nodes=1,
                   node_price_per_hour=2.0)
    busy = 1_000_000 / 250 + 100 * SHARD_START_S  # 4,000 s of images, 1,000 s of worker starts
    assert est["gpu_hours"] == round(busy / 3600, 4)
    assert est["wall_seconds"] == busy  # one node: wall time is the busy time
    assert est["cost"] == round(busy / 3600 * 2.0, 2)
    assert est["nodes_used"] == 1


def test_more_nodes_shorten_the_wall_time_but_not_the_gpu_hours_or_cost() -> None:
    one = estimate(1_000_000, 100, 10_000, 250.0, pool_nodes=1, node_price_per_hour=2.0)
    ten = estimate(1_000_000, 100, 10_000, 250.0, pool_nodes=10, node_price_per_hour=2.0)
    assert ten["gpu_hours"] == one["gpu_hours"] and ten["cost"] == one["cost"]
    assert ten["wall_seconds"] == one["wall_seconds"] / 10


def test_wall_time_is_never_shorter_than_the_largest_shard() -> None:
    """Sixteen nodes cannot split two shards: two run, fourteen are not used."""
    est = estimate(images=20_000, shards=2, images_per_shard=10_000, worker_images_per_s=200.0, pool_nodes=16)
    assert est["nodes_used"] == 2
    assert est["wall_seconds"] == 10_000 / 200 + SHARD_START_S


def test_a_resident_worker_makes_only_each_nodes_first_shard_pay_the_full_start() -> None:
    new_each = estimate(1_000_000, 100, 10_000, 250.0, pool_nodes=4, node_price_per_hour=2.0)
    resident = estimate(1_000_000, 100, 10_000, 250.0, pool_nodes=4, node_price_per_hour=2.0,
                        warm_shard_start_s=RESIDENT_SHARD_START_S)
    busy = 1_000_000 / 250 + 4 * SHARD_START_S + 96 * RESIDENT_SHARD_START_S  # four nodes: four cold starts
    assert resident["gpu_hours"] == round(busy / 3600, 4) < new_each["gpu_hours"]
    assert resident["wall_seconds"] == math.ceil(busy / 4) and resident["cost"] < new_each["cost"]
    assert resident["warm_shard_start_s"] == RESIDENT_SHARD_START_S and new_each["warm_shard_start_s"] is None
    assert "resident worker" in resident["assumes"] and "resident" not in new_each["assumes"]
    # one shard a node: every shard is a node's first, as without a resident worker
    few = estimate(20_000, 2, 10_000, 200.0, pool_nodes=4, warm_shard_start_s=RESIDENT_SHARD_START_S)
    assert few["gpu_hours"] == estimate(20_000, 2, 10_000, 200.0, pool_nodes=4)["gpu_hours"]


def test_the_largest_shard_bounds_the_wall_time_when_the_shards_are_uneven() -> None:
    """Two nodes split 95 s of busy time into 47.5 s each, but the full shard alone takes 50 s of images after its
    10 s start: the wall time is that shard's 60 s."""
    est = estimate(images=15_000, shards=2, images_per_shard=10_000, worker_images_per_s=200.0, pool_nodes=16)
    assert est["wall_seconds"] == 10_000 / 200 + SHARD_START_S


def test_a_shard_smaller_than_its_size_takes_its_own_images_and_wall_time_rounds_up() -> None:
    """100 images in one shard of up to 10,000 take 0.5 s after the 10 s start, not 50 s; the wall time is a lower
    bound, so 10.5 s is 11 s, never 10."""
    est = estimate(images=100, shards=1, images_per_shard=10_000, worker_images_per_s=200.0)
    assert est["wall_seconds"] == 11


def test_no_shards_start_no_worker_even_a_resident_one() -> None:
    est = estimate(0, 0, 10_000, node_price_per_hour=5.0, warm_shard_start_s=RESIDENT_SHARD_START_S)
    assert (est["gpu_hours"], est["wall_seconds"], est["cost"]) == (0, 0, 0)


def test_no_price_configured_gives_no_cost_rather_than_zero() -> None:
    assert estimate(100, 1, 10_000)["cost"] is None


def test_nothing_to_do_costs_nothing() -> None:
    est = estimate(0, 0, 10_000, node_price_per_hour=5.0)
    assert (est["gpu_hours"], est["wall_seconds"], est["cost"]) == (0, 0, 0)


@pytest.mark.parametrize("kwargs", [{"images": -1}, {"shards": -1}, {"images_per_shard": 0}, {"worker_images_per_s": 0},
                                    {"pool_nodes": 0}, {"node_price_per_hour": -1}, {"warm_shard_start_s": -1}])
def test_impossible_inputs_are_refused(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"images": 10, "shards": 1, "images_per_shard": 10, **kwargs}
    with pytest.raises(ValueError):
        estimate(**args)  # type: ignore[arg-type]


def test_settings_default_to_the_measured_h100_rate_and_read_the_three_variables() -> None:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    knobs = Settings.from_env(base).knobs
    assert (knobs.worker_images_per_s, knobs.pool_nodes, knobs.node_price_per_hour) == (
        DEFAULT_WORKER_IMAGES_PER_S, 1, 0.0) and DEFAULT_WORKER_IMAGES_PER_S == 244
    knobs = Settings.from_env({**base, "TRAPBATCH_WORKER_IMAGES_PER_S": "90.5", "TRAPBATCH_POOL_NODES": "16",
                               "TRAPBATCH_NODE_PRICE_PER_HOUR": "0.526"}).knobs
    assert (knobs.worker_images_per_s, knobs.pool_nodes, knobs.node_price_per_hour) == (90.5, 16, 0.526)
    for bad in ({"TRAPBATCH_WORKER_IMAGES_PER_S": "0"}, {"TRAPBATCH_POOL_NODES": "0"},
                {"TRAPBATCH_NODE_PRICE_PER_HOUR": "-1"}, {"TRAPBATCH_WORKER_IMAGES_PER_S": "nan"}):
        with pytest.raises(ConfigError):
            Settings.from_env({**base, **bad})


def test_a_dry_run_estimates_warm_starts_exactly_when_the_pool_runs_resident_workers() -> None:
    from core.settings import OrchestrationKnobs
    from orchestrations.task import _estimate

    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_POOL_NODES": "2"}
    plain = Settings.from_env(base).knobs
    resident = Settings.from_env({**base, "TRAPBATCH_WORKER_RESIDENT": "true"}).knobs
    assert (plain.worker_resident, resident.worker_resident) == (False, True)
    assert OrchestrationKnobs.from_dict(resident.to_dict()) == resident  # snapshotted into the orchestration's input
    assert OrchestrationKnobs.from_dict({k: v for k, v in resident.to_dict().items() if k != "worker_resident"}
                                        ).worker_resident is False  # an input from before the field: as before
    found = {"images": 100_000, "shards": 10}
    assert _estimate(found, plain)["warm_shard_start_s"] is None  # type: ignore[arg-type]
    warm = _estimate(found, resident)  # type: ignore[arg-type]
    assert warm["warm_shard_start_s"] == RESIDENT_SHARD_START_S
    assert warm["gpu_hours"] < _estimate(found, plain)["gpu_hours"]  # type: ignore[arg-type]
