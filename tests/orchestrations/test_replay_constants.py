"""The constants and rules that decide which actions an orchestrator schedules, pinned.

Azure replays a running task's history against whatever code is deployed now (test_upgrade_replay.py). Code that an
orchestrator reads at replay time to decide how many activities to schedule, in what order, or when to continue as
new, is part of that history's meaning: a release that changes it makes a running task schedule other actions than
its history holds. The Durable extension fails the task when the kind or name differs at a sequence number; when
only the count grows it accepts the replay, and work is done twice (a merge part merging shards another part merged;
a shard group started twice). The recorded histories are too small to reach most of these limits, so they are
pinned here.

When a test here fails: record the value in the orchestration's input where the run starts (as
``ShardsInput.round_events``, ``RepeatsInput.knobs``), keep the old value as the fallback for inputs without it, and
only then change it here. A deliberate break instead goes in docs/deploy.md "Deploying while tasks run".
"""
from __future__ import annotations

import pytest

from core import fanin, shards
from core.exportparts import ZOONIVERSE_PIECES
from core.settings import OrchestrationKnobs
from gpu_batch.exit_codes import UNFIXABLE
from orchestrations import enumeration, replaced_sweep, repeats, retries
from orchestrations import shards as shard_groups
from orchestrations import task


def test_constants_read_at_replay_time_are_unchanged() -> None:
    assert {
        "core.fanin.MAX_PARTS": fanin.MAX_PARTS,
        "core.fanin.MAX_SHARDS_PER_PART": fanin.MAX_SHARDS_PER_PART,
        "core.exportparts.ZOONIVERSE_PIECES": ZOONIVERSE_PIECES,
        "orchestrations.enumeration.IMAGES_PER_WRITE": enumeration.IMAGES_PER_WRITE,
        "orchestrations.task.REUSE_SHARDS_PER_CALL": task.REUSE_SHARDS_PER_CALL,
        "orchestrations.task.REUSE_MAX_SHARDS_PER_CALL": task.REUSE_MAX_SHARDS_PER_CALL,
        "core.shards.MAX_SHARDS": shards.MAX_SHARDS,
        "orchestrations.task.NOTIFY_RETRY.attempts": task.NOTIFY_RETRY.attempts,
        "orchestrations.retries.STORAGE_RETRY.attempts": retries.STORAGE_RETRY.attempts,
        "orchestrations.retries.POOL_RETRY.attempts": retries.POOL_RETRY.attempts,
        "gpu_batch.exit_codes.UNFIXABLE": sorted(UNFIXABLE),
        "orchestrations.replaced_sweep.SHARES_PER_EPISODE": replaced_sweep.SHARES_PER_EPISODE,
    } == {
        "core.fanin.MAX_PARTS": 10_000,
        "core.fanin.MAX_SHARDS_PER_PART": 1_000,
        "core.exportparts.ZOONIVERSE_PIECES": 2_000,
        "orchestrations.enumeration.IMAGES_PER_WRITE": 200_000,
        "orchestrations.task.REUSE_SHARDS_PER_CALL": 10,
        "orchestrations.task.REUSE_MAX_SHARDS_PER_CALL": 500,
        "core.shards.MAX_SHARDS": 100_000,
        "orchestrations.task.NOTIFY_RETRY.attempts": 6,
        "orchestrations.retries.STORAGE_RETRY.attempts": 3,
        "orchestrations.retries.POOL_RETRY.attempts": 3,
        "gpu_batch.exit_codes.UNFIXABLE": [2, 3, 5],
        "orchestrations.replaced_sweep.SHARES_PER_EPISODE": 40,
    }, __doc__


def test_values_running_orchestrations_fall_back_to_are_those_of_before() -> None:
    """What a shard group or removal started by an earlier release replays with: the values that release used."""
    assert shard_groups.LEGACY_ROUND_EVENTS == 72
    assert repeats.LEGACY_KNOBS == {"merge_images_per_part": 200_000}


@pytest.mark.parametrize(("shard_count", "per_group", "max_in_flight", "size", "shares"), [
    (7, 3, 4, 3, [2, 1, 1]),
    (1000, 200, 100, 200, [20] * 5),
    (50_000, 200, 100, 500, [1] * 100),
    (101, 1, 100, 2, [2] * 49 + [1, 1]),
])
def test_the_shard_group_rule_is_unchanged(shard_count: int, per_group: int, max_in_flight: int, size: int,
                                           shares: list[int]) -> None:
    """The task orchestrator recomputes its groups from the enumeration's shard count on every replay."""
    assert shards.group_count_limit(shard_count, per_group, max_in_flight) == size
    groups = shards.group_shards(shard_count, size)
    assert shards.in_flight_shares([len(g) for g in groups], max_in_flight) == shares


@pytest.mark.parametrize(("shard_count", "images", "per_part", "plan_head", "parts"), [
    (7, 41, 200_000, [(0, 7)], 1),
    (4, 400_000, 200_000, [(0, 2), (2, 2)], 2),
    (50_000, 10_000_000, 200_000, [(0, 1000), (1000, 1000)], 50),
    (2_000_000, 10_000_000, 200_000, [(0, 1000), (1000, 1000)], 2_000),
    (20_000_000, 10_000_000, 200_000, [(0, 2000), (2000, 2000)], 10_000),
])
def test_the_merge_part_plan_is_unchanged(shard_count: int, images: int, per_part: int,
                                          plan_head: list[tuple[int, int]], parts: int) -> None:
    plan = fanin.plan_parts(shard_count, images, per_part)
    assert plan[:2] == plan_head and len(plan) == parts


@pytest.mark.parametrize(("images_per_call", "images_per_shard", "per_call"), [
    (0, 100, 10),  # an input without the knob (OrchestrationKnobs' default): 10 shards per call, as recorded
    (0, 10_000, 10),
    (100_000, 10_000, 10),
    (100_000, 100, 500),
    (100_000, 1_000, 100),
    (100_000, 300_000, 1),
])
def test_the_reuse_call_rule_is_unchanged(images_per_call: int, images_per_shard: int, per_call: int) -> None:
    """An only_new re-run recomputes its reuse calls from its knob and request on every replay."""
    assert task.reuse_shards_per_call(images_per_call, images_per_shard) == per_call
    assert OrchestrationKnobs.from_dict({}).reuse_images_per_call == 0
