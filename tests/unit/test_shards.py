from __future__ import annotations

import pytest

from core.shards import group_shards, is_image_name, missing_images, plan_shards, select_images

NAMES = [f"cam{c}/img{i:03d}.JPG" for c in range(3) for i in range(20)] + ["cam0/notes.txt", "cam1/.hidden.jpg"]


def test_only_megadetector_image_extensions_are_selected() -> None:
    assert is_image_name("a/b.jpeg") and is_image_name("x.PNG") and is_image_name("y.gif")
    assert not is_image_name("a/b.txt") and not is_image_name("a/.b.jpg") and not is_image_name("a.jpg.json")
    assert len(list(select_images(NAMES))) == 60


def test_first_n_keeps_listing_order() -> None:
    assert list(select_images(NAMES, first_n=5)) == NAMES[:5]


def test_sample_is_deterministic_sorted_and_seed_dependent() -> None:
    a = list(select_images(NAMES, sample_n=10, seed=1))
    assert a == list(select_images(NAMES, sample_n=10, seed=1))
    assert a == sorted(a) and len(a) == 10 and len(set(a)) == 10
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
