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
