"""core/cost.py: the price table, the price a cost is computed at, pool-task times, and the cost block's arithmetic."""
from __future__ import annotations

from typing import Any

import pytest

from core.cost import (OVERRIDE_ENV, PRICE_REGION, VM_PRICES, attempt_seconds, cost_per_million, node_price,
                       task_cost, vm_price)
from core.settings import Settings
from tests.bench_scripts import load_bench

H100 = "Standard_NC40ads_H100_v5"
BATCH_ENV = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_POOL": "azure_batch",
             "TRAPBATCH_BATCH_ACCOUNT_URL": "https://b.eastus.batch.azure.com", "TRAPBATCH_BATCH_POOL_ID": "gpu",
             "TRAPBATCH_WORKER_IMAGE": "r.azurecr.io/w:1", "TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID": "/x",
             "TRAPBATCH_STORAGE_ACCOUNT_URL": "https://a.blob.core.windows.net"}


def test_cost_per_million_is_the_node_hour_price_over_the_images_a_node_hour_does() -> None:
    # 244 img/s = 878,400 images per node-hour; $6.98 / 0.8784 million images
    assert cost_per_million(6.98, 244.0) == pytest.approx(6.98 / (244 * 3600) * 1e6)
    assert round(cost_per_million(6.98, 244.0), 2) == 7.95
    assert cost_per_million(0.0, 10.0) == 0.0
    for price, rate in ((-1.0, 10.0), (1.0, 0.0)):
        with pytest.raises(ValueError):
            cost_per_million(price, rate)


def test_the_table_holds_the_t4_a100_and_h100_sizes_and_says_which_prices_were_verified() -> None:
    sizes = {p.vm_size for p in VM_PRICES.values()}
    assert {"Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4", H100} <= sizes
    assert all(p.usd_per_hour > 0 and p.source for p in VM_PRICES.values())
    assert vm_price("Standard_NC4as_T4_v3").verified is False  # type: ignore[union-attr]
    assert vm_price(H100).verified is True  # type: ignore[union-attr]


def test_lookups_ignore_case_because_batch_reports_sizes_in_lower_case() -> None:
    assert vm_price(H100.lower()) == vm_price(H100) == vm_price(f" {H100.upper()} ")


def test_a_listed_size_is_priced_at_its_list_price_with_region_and_source() -> None:
    price = node_price(H100)
    assert price.usd_per_hour == VM_PRICES[H100.lower()].usd_per_hour == 6.98
    assert PRICE_REGION in price.source and "list price" in price.source and price.note == ""


def test_an_unverified_list_price_is_used_but_says_so() -> None:
    price = node_price("Standard_NC4as_T4_v3")
    assert price.usd_per_hour == 0.526
    assert "unverified" in price.source and "unverified" in price.note and OVERRIDE_ENV in price.note


def test_an_unknown_size_has_no_price_and_a_note_naming_the_override() -> None:
    price = node_price("Standard_ND96isr_H200_v5")
    assert price.usd_per_hour is None and price.source == ""
    assert "Standard_ND96isr_H200_v5" in price.note and OVERRIDE_ENV in price.note and H100 in price.note


def test_no_size_is_a_local_pool_without_a_price() -> None:
    price = node_price("")
    assert price.usd_per_hour is None and "local pool" in price.note and OVERRIDE_ENV in price.note


@pytest.mark.parametrize("size", [H100, "Standard_ND96isr_H200_v5", ""])
def test_the_override_wins_over_any_list_price(size: str) -> None:
    price = node_price(size, 1.25)
    assert price.usd_per_hour == 1.25 and OVERRIDE_ENV in price.source and price.note == ""


@pytest.mark.parametrize("bad", [-0.5, float("inf"), float("nan")])
def test_an_impossible_override_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        node_price(H100, bad)


@pytest.mark.parametrize("start, end, seconds", [
    ("2026-12-02T00:00:00+00:00", "2026-12-02T00:01:30.500000+00:00", 90.5),  # LocalPool: datetime.isoformat()
    ("2026-12-02 00:00:00.250000+00:00", "2026-12-02 01:00:00.250000+00:00", 3600.0),  # Batch SDK: str(datetime)
    ("2026-12-02T00:00:00Z", "2026-12-02T00:00:10Z", 10.0),
    ("2026-12-02T00:00:00", "2026-12-02T00:00:07", 7.0),  # no zone: read as UTC on both sides
    (None, "2026-12-02T00:00:10Z", None),
    ("2026-12-02T00:00:10Z", None, None),
    ("not a time", "2026-12-02T00:00:10Z", None),
    ("2026-12-02T00:00:10Z", "2026-12-02T00:00:00Z", None),  # ends before it starts: not trusted
    ("2026-12-02T00:00:10Z", "2026-12-02T00:00:10Z", 0.0),  # ends as it starts: timed, at no node time
    ("2026-12-02T00:00:00", "2026-12-02T00:00:05+00:00", 5.0),  # one side without a zone: UTC, comparable
])
def test_attempt_seconds_from_the_pool_tasks_times(start: str | None, end: str | None, seconds: float | None) -> None:
    assert attempt_seconds(start, end) == seconds


def test_the_cost_block_prices_node_time_at_the_list_price() -> None:
    block = task_cost(images=20_000, node_seconds=100.0, attempts=2, attempts_timed=2, vm_size=H100)
    assert block["images_per_node_second"] == 200.0
    assert block["usd"] == round(6.98 * 100 / 3600, 4)
    assert block["usd_per_million_images"] == round(6.98 / (200 * 3600) * 1e6, 2)
    assert block["usd_per_million_images"] == pytest.approx(block["usd"] / 20_000 * 1e6, rel=1e-3)
    assert (block["vm_size"], block["price_per_hour"]) == (H100, 6.98)
    assert "lower bound" in block["measures"] and "note" not in block


def test_the_cost_block_without_a_price_still_gives_node_time_and_rate() -> None:
    block = task_cost(images=41, node_seconds=20.5, attempts=3, attempts_timed=3, vm_size="")
    assert (block["node_seconds"], block["images_per_node_second"]) == (20.5, 2.0)
    assert block["price_per_hour"] is block["usd"] is block["usd_per_million_images"] is block["vm_size"] is None
    assert "local pool" in block["note"]


def test_attempts_without_times_are_said_to_be_left_out() -> None:
    block = task_cost(images=100, node_seconds=50.0, attempts=3, attempts_timed=2, vm_size=H100)
    assert "1 of 3 shard attempts had no start/end time" in block["note"]


def test_no_node_time_gives_no_rate_and_no_cost_per_image() -> None:
    block = task_cost(images=100, node_seconds=0.0, attempts=1, attempts_timed=0, vm_size=H100)
    assert block["images_per_node_second"] is None and block["usd_per_million_images"] is None
    assert block["usd"] == 0.0


@pytest.mark.parametrize("images, node_seconds, attempts, timed", [(1, 1.0, 1, 2), (-1, 1.0, 1, 1), (1, -1.0, 1, 1),
                                                                  (1, 1.0, 1, -1)])
def test_impossible_counts_are_refused(images: int, node_seconds: float, attempts: int, timed: int) -> None:
    with pytest.raises(ValueError):
        task_cost(images=images, node_seconds=node_seconds, attempts=attempts, attempts_timed=timed, vm_size="")


def test_node_time_without_images_has_a_cost_but_no_cost_per_image() -> None:
    """No image sent (every shard's images already covered) yet node time spent: the bill, and no rate of 0 that
    ``cost_per_million`` would refuse."""
    block = task_cost(images=0, node_seconds=10.0, attempts=1, attempts_timed=1, vm_size=H100)
    assert block["images_per_node_second"] is None and block["usd_per_million_images"] is None
    assert block["usd"] == round(6.98 * 10 / 3600, 4)


def test_the_cost_blocks_figures_keep_three_decimals() -> None:
    block = task_cost(images=1001, node_seconds=123.4567, attempts=1, attempts_timed=1, vm_size="")
    assert (block["node_seconds"], block["images_per_node_second"]) == (123.457, 8.108)


def test_settings_take_the_vm_size_for_a_batch_pool_only() -> None:
    assert Settings.from_env({**BATCH_ENV, "TRAPBATCH_POOL_VM_SIZE": f" {H100} "}).knobs.pool_vm_size == H100
    assert Settings.from_env(BATCH_ENV).knobs.pool_vm_size == ""
    local = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_POOL_VM_SIZE": H100}
    assert Settings.from_env(local).knobs.pool_vm_size == ""  # the local pool has no VM size


def test_the_notification_and_the_event_carry_the_cost_block() -> None:
    from core.notify import public_status

    block = task_cost(images=10, node_seconds=5.0, attempts=1, attempts_timed=1, vm_size=H100)
    assert public_status("task-0123456789abcdef0123", {"stage": "completed", "cost": block})["cost"] == block


def _bench_cost() -> Any:
    return load_bench("cost.py")


def test_the_bench_helper_prints_the_recorded_h100_rate_and_no_invented_rate_for_the_others(capsys) -> None:  # type: ignore[no-untyped-def]
    bench = _bench_cost()
    assert bench.main([]) == 0
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| Standard_")}
    assert set(rows) == {p.vm_size for p in VM_PRICES.values()}
    assert f"${cost_per_million(6.98, 243.8):.2f}" in rows[H100]
    assert all("rate not measured" in line for size, line in rows.items() if size != H100)


def test_the_bench_helper_adds_the_shard_start_up_the_node_pays_for(capsys) -> None:  # type: ignore[no-untyped-def]
    bench = _bench_cost()
    assert bench.main(["--rate", "244", "--vm-size", H100, "--shard-images", "10000"]) == 0
    out = capsys.readouterr().out
    per_node = 10_000 / (10_000 / 244 + 10.0)
    assert f"${cost_per_million(6.98, 244):.2f} |" in out and f"${cost_per_million(6.98, per_node):.2f} at" in out


def test_the_bench_helper_with_resident_workers_adds_the_warm_start_up_instead(capsys) -> None:  # type: ignore[no-untyped-def]
    bench = _bench_cost()
    assert bench.main(["--rate", "339", "--vm-size", H100, "--shard-images", "10000", "--resident"]) == 0
    out = capsys.readouterr().out
    per_node = 10_000 / (10_000 / 339 + 2.5)
    assert f"${cost_per_million(6.98, per_node):.2f} at {per_node:.1f} img/node-s" in out
    assert "+2.5 s warm resident start-up each" in out
