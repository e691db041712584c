from __future__ import annotations

import pytest

from collections import Counter

from core.shards import (FOLDER_WEIGHT, Leaf, first_n_satisfied, folder_weight_estimate, group_leaves,
                         group_shards, is_image_name, leaf_weight, merge_level, missing_images, plan_shards, sample_key,
                         select_images, selected_counts, shard_batches)

NAMES = [f"cam{c}/img{i:03d}.JPG" for c in range(3) for i in range(20)] + ["cam0/notes.txt", "cam1/.hidden.jpg"]


def test_only_megadetector_image_extensions_are_selected() -> None:
    assert is_image_name("a/b.jpeg") and is_image_name("x.PNG") and is_image_name("y.gif")
    assert not is_image_name("a/b.txt") and not is_image_name("a/.b.jpg") and not is_image_name("a.jpg.json")
    assert len(list(select_images(NAMES))) == 60


def test_first_n_keeps_listing_order() -> None:
    assert list(select_images(NAMES, first_n=5)) == NAMES[:5]


def test_sample_is_deterministic_in_listing_order_and_seed_dependent() -> None:
    a = list(select_images(NAMES, sample_n=10, seed=1))
    assert a == list(select_images(NAMES, sample_n=10, seed=1))
    assert a == [n for n in NAMES if n in set(a)] and len(a) == 10 and len(set(a)) == 10
    assert a != list(select_images(NAMES, sample_n=10, seed=2))
    assert len(list(select_images(NAMES, sample_n=100))) == 60


@pytest.mark.parametrize("n, per", [(0, 3), (1, 3), (7, 3), (9, 3), (10, 1)])
def test_shards_cover_every_image_once_in_order(n: int, per: int) -> None:
    images = [f"i{k}" for k in range(n)]
    shards = list(plan_shards(images, per))
    assert [x for s in shards for x in s] == images
    assert all(1 <= len(s) <= per for s in shards)


def test_groups_and_missing() -> None:
    assert group_shards(5, 2) == [[0, 1], [2, 3], [4]]
    assert group_shards(0, 2) == []
    assert missing_images(["a", "b", "c"], ["c", "a", "zzz"]) == ["b"]


# ---------------------------------------------------------------- the task's in-flight limit over its groups

from hypothesis import given, strategies as st  # noqa: E402

from core.shards import group_count_limit, in_flight_shares  # noqa: E402


@given(st.integers(1, 5000), st.integers(1, 300), st.integers(1, 400))
def test_groups_never_outnumber_the_limit_and_shares_never_pass_it(shards: int, per_group: int, limit: int) -> None:
    groups = group_shards(shards, group_count_limit(shards, per_group, limit))
    sizes = [len(g) for g in groups]
    shares = in_flight_shares(sizes, limit)
    assert sum(sizes) == shards and len(groups) <= limit
    assert sum(shares) == min(limit, shards)  # the whole limit is handed out (or every shard, if fewer)
    assert all(1 <= share <= size for share, size in zip(shares, sizes))  # each group can progress
    # as even as the sizes allow: a group held below its size is within one of the largest share
    assert all(share >= max(shares) - 1 for share, size in zip(shares, sizes) if share < size)


def test_in_flight_shares_rule_examples() -> None:
    assert in_flight_shares([200] * 25, 100) == [4] * 25  # 25 groups used to put 2,500 in flight
    assert in_flight_shares([4, 4, 4, 4, 4, 3], 7) == [2, 1, 1, 1, 1, 1]  # the rest, lowest group first
    assert in_flight_shares([10, 1, 10], 12) == [6, 1, 5]  # a small group's unused share goes to the others
    assert in_flight_shares([3, 2], 100) == [3, 2]  # never more than a group's shards
    assert group_count_limit(23, 4, 5) == 5 and group_count_limit(23, 4, 100) == 4


def test_sample_is_the_smallest_seeded_keys_whatever_the_listing_order() -> None:
    images = NAMES[:60]
    chosen = list(select_images(images, sample_n=7, seed=5))
    assert set(chosen) == set(sorted(images, key=lambda n: sample_key(5, n))[:7])
    assert set(select_images(list(reversed(images)), sample_n=7, seed=5)) == set(chosen)  # mergeable across parts


def test_sample_is_roughly_uniform_over_seeds() -> None:
    images = [f"cam/{i:02d}.jpg" for i in range(40)]
    seeds = 2000
    hits = Counter(n for seed in range(seeds) for n in select_images(images, sample_n=10, seed=seed))
    expected = seeds * 10 / 40  # 500 each; binomial sd ~19
    assert set(hits) == set(images)
    assert all(abs(h - expected) < 0.25 * expected for h in hits.values()), hits.most_common(3)


def test_merge_level_restores_listing_order_of_a_page() -> None:
    # the SDK gives a page's prefixes first; "a-b/" < "a.jpg" < "a/" in the service's order
    leaves = merge_level(["a-b/", "a/", "c/"], ["a.jpg", "b.jpg", "d.png"])
    assert leaves == [{"prefix": "a-b/"}, {"name": "a.jpg"}, {"prefix": "a/"}, {"name": "b.jpg"}, {"prefix": "c/"},
                      {"name": "d.png"}]


@pytest.mark.parametrize("folders, names, units", [(10, 0, 4), (3, 0, 8), (0, 5, 4), (50, 200, 7)])
def test_leaves_group_into_consecutive_balanced_units(folders: int, names: int, units: int) -> None:
    leaves = merge_level([f"f{i:03d}/" for i in range(folders)], [f"n{i:03d}.jpg" for i in range(names)])
    groups = group_leaves(leaves, units)
    assert [leaf for g in groups for leaf in g] == leaves and all(groups)
    assert len(groups) == max(1, min(units, folders))
    weights = [sum(FOLDER_WEIGHT if "prefix" in leaf else 1 for leaf in g) for g in groups]
    assert max(weights) <= 2 * sum(weights) / len(groups) + FOLDER_WEIGHT


def test_first_n_counts_and_when_later_units_are_not_needed() -> None:
    assert selected_counts([3, 0, 4, 5], 5) == [3, 0, 2, 0]
    assert selected_counts([3, 4]) == [3, 4]
    assert first_n_satisfied([3, 9, 1], [True, False, False], 5) == 1  # unit 1 already has enough
    assert first_n_satisfied([3, 1, 9], [True, False, False], 5) is None  # unit 1 may have more before unit 2
    assert first_n_satisfied([3, 1, 9], [True, True, False], 5) == 2


@pytest.mark.parametrize("counts, per, batch", [([5, 0, 7, 1], 3, 6), ([10], 4, 1), ([], 3, 9), ([2, 2, 2], 2, 100)])
def test_shard_batches_cut_the_concatenated_parts_like_the_single_stream(counts: list[int], per: int,
                                                                           batch: int) -> None:
    parts = [[f"p{p}-{i}" for i in range(n)] for p, n in enumerate(counts)]
    stream = [x for part in parts for x in part]
    shards: list[list[str]] = []
    for b in shard_batches(counts, per, batch):
        names = [x for s in b["slices"] for x in parts[s["part"]][s["skip"]: s["skip"] + s["take"]]]
        cut = list(plan_shards(names, per))
        assert len(cut) == b["count"] and b["first"] == len(shards)
        shards += cut
    assert shards == list(plan_shards(stream, per))


def test_a_folder_the_plan_kept_whole_weighs_its_estimate() -> None:
    """``weight`` (the plan's estimate for a folder it could not expand) is what ``group_leaves`` balances: three
    cameras of a site it expanded and two sites kept whole, each estimated at three cameras, make three units."""
    cams: list[Leaf] = [{"prefix": f"s0/c{k}/"} for k in range(3)]
    estimate = folder_weight_estimate([cams], 0)
    assert estimate == 3 * FOLDER_WEIGHT
    assert folder_weight_estimate([cams], 5 * FOLDER_WEIGHT) == 5 * FOLDER_WEIGHT  # what was seen, when more
    assert folder_weight_estimate([], 0) == FOLDER_WEIGHT
    sites: list[Leaf] = [{"prefix": "s1/", "weight": estimate}, {"prefix": "s2/", "weight": estimate}]
    groups = group_leaves(cams + sites, 3)
    assert groups == [cams, sites[:1], sites[1:]]
    weights = [leaf_weight(leaf) for leaf in [*cams, *sites, {"name": "a.jpg"}]]
    assert weights == [FOLDER_WEIGHT] * 3 + [estimate] * 2 + [1]


# ---------------------------------------------------------------- pinned values (a mutation audit found them unpinned)

def test_a_seeded_sample_is_the_same_across_releases() -> None:
    """Same request, same work: a request's ``sample_n`` (its seed defaults to 0, ``core.requests``) selects the
    same images in every release, so a task id names the same images whenever it is posted. The key and the chosen
    sample are recorded values: a change to the hash, its input or the default seed's key fails here."""
    assert sample_key(0, "cam/img001.jpg") == ("32c45b3dd9096735d56b1a16e2b17ac9", "cam/img001.jpg")
    names = [f"cam/{i:02d}.jpg" for i in range(10)]
    assert list(select_images(names, sample_n=3, seed=0)) == ["cam/01.jpg", "cam/07.jpg", "cam/08.jpg"]
    assert list(select_images(names, sample_n=3, seed=7)) == ["cam/02.jpg", "cam/03.jpg", "cam/04.jpg"]


def test_shard_sizes_below_one_are_refused_not_cut_into_nothing() -> None:
    """A size of 0 would cut no shard at all (every image silently left out) or divide by zero."""
    with pytest.raises(ValueError):
        list(plan_shards(["a.jpg"], 0))
    with pytest.raises(ValueError):
        shard_batches([3], 0, 10)


def test_shard_batches_are_whole_shards_within_the_batch_size_and_name_only_the_parts_they_read() -> None:
    """The batches (one write activity each, scheduled by the enumeration orchestrator, so their number is part of
    its history) hold ``images_per_batch // images_per_shard`` shards (at least one), and a slice of an empty part,
    or of a part outside the batch, is never named."""
    assert shard_batches([5, 0, 7, 1], 3, 7) == [
        {"first": 0, "count": 2, "slices": [{"part": 0, "skip": 0, "take": 5}, {"part": 2, "skip": 0, "take": 1}]},
        {"first": 2, "count": 2, "slices": [{"part": 2, "skip": 1, "take": 6}]},
        {"first": 4, "count": 1, "slices": [{"part": 3, "skip": 0, "take": 1}]}]
    assert [(b["first"], b["count"]) for b in shard_batches([10], 4, 6)] == [(0, 1), (1, 1), (2, 1)]


def test_in_flight_shares_never_exceed_a_small_groups_size_wherever_it_stands() -> None:
    """The rest of the limit goes only to groups larger than their share, even when a small group comes first
    (``group_shards`` puts the short group last, so the property test never puts it first)."""
    assert in_flight_shares([1, 10, 10], 6) == [1, 3, 2]


def test_group_leaves_cuts_where_half_a_leaf_passes_the_target() -> None:
    """A leaf joins the unit it would take past its share of the weight only if less than half of it lies beyond:
    weights 1000, 3000, 1000, 1000 in two units are 4000 + 2000, not 1000 + 5000."""
    leaves: list[Leaf] = [{"prefix": "a/"}, {"prefix": "b/", "weight": 3 * FOLDER_WEIGHT}, {"prefix": "c/"},
                          {"prefix": "d/"}]
    assert group_leaves(leaves, 2) == [leaves[:2], leaves[2:]]
