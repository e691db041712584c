"""The parallel fan-in's pure parts (core.fanin): part ranges, the byte layout of fragments, search groups."""
from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import fanin
from gpu_batch import layout


@given(shards=st.integers(0, 5000), per_shard=st.integers(1, 20_000), per_part=st.integers(1, 500_000))
def test_parts_cover_every_shard_once_in_order_and_stay_bounded(shards: int, per_shard: int, per_part: int) -> None:
    images = shards * per_shard
    parts = fanin.plan_parts(shards, images, per_part, max_parts=200)
    covered = [s for first, n in parts for s in range(first, first + n)]
    assert covered == list(range(shards))
    assert len(parts) <= 200
    wanted = min(per_part // per_shard, fanin.MAX_SHARDS_PER_PART)
    if wanted >= 1 and -(-shards // 200) <= wanted:  # the knob decided, not the cap on parts
        assert all(n * per_shard <= per_part and n <= fanin.MAX_SHARDS_PER_PART for _, n in parts)
        assert all(n == wanted for _, n in parts[:-1])  # and as large as it allows
    if parts:
        assert all(n >= 1 for _, n in parts)


def test_ten_million_images_in_default_shards_are_fifty_parts() -> None:
    parts = fanin.plan_parts(1000, 10_000_000, 200_000)
    assert len(parts) == 50 and parts[0] == (0, 20) and parts[-1] == (980, 20)
    tiny = fanin.plan_parts(1_000_000, 10_000_000, 200_000)  # shards of 10 images: their I/O bounds a part
    assert len(tiny) == 1000 and tiny[0] == (0, fanin.MAX_SHARDS_PER_PART)


@pytest.mark.parametrize("sizes", [[], [0, 0], [5], [0, 7, 0, 3], [4, 4, 4]])
def test_json_fragments_drop_exactly_the_first_comma(sizes: list[int]) -> None:
    entries = [[{"file": f"p{p}/{i}.jpg", "detections": []} for i in range(n)] for p, n in enumerate(sizes)]
    fragments = [b"".join(fanin.entry_fragment(e) for e in part) for part in entries]
    head = fanin.results_head({"format_version": "1.6"})
    body = b"".join(fragments[p][off:off + n] for p, off, n in fanin.json_ranges([len(f) for f in fragments]))
    doc = json.loads(head + body + fanin.RESULTS_TAIL)
    assert doc["images"] == [e for part in entries for e in part]
    if body:
        assert body.startswith(b"\n  {")


def test_search_groups_keep_folders_whole_and_in_order_with_one_range_per_part() -> None:
    # part 0: folders a, b; part 1: b (continued), c; part 2: c (continued), d
    indexes = [[["a", 0, 100, 3], ["b", 100, 50, 2]], [["b", 0, 40, 1], ["c", 40, 60, 5]],
               [["c", 0, 30, 2], ["d", 30, 10, 1]]]
    groups = fanin.plan_search_groups(indexes, per_group=6)
    assert [g["folders"] for g in groups] == [["a", "b"], ["c"], ["d"]]
    assert groups[0]["ranges"] == [[0, 0, 150], [1, 0, 40]]
    assert groups[1]["ranges"] == [[1, 40, 60], [2, 0, 30]]  # c is 7 detections: a group of its own
    assert groups[2]["ranges"] == [[2, 30, 10]]
    # where each folder's search can end: the index (in its group's ranges) of the last range holding its lines
    assert [g["last"] for g in groups] == [{"a": 0, "b": 1}, {"c": 1}, {"d": 0}]
    assert fanin.plan_search_groups([[], []]) == []


def test_a_folder_over_the_cap_is_in_no_group_but_named_with_its_count_and_no_range_holds_its_lines() -> None:
    """A folder's search grows with the square of its eligible detections: above ``max_folder_detections`` it is
    left out (MegaDetector's maxImagesPerFolder) and recorded; the groups around it end before it, so no group reads
    its lines (one line a part, parsed whole). At the cap itself a folder is still searched."""
    # part 0: a, big, c; part 1: big (continued), c (continued), d
    indexes = [[["a", 0, 10, 2], ["big", 10, 500, 6], ["c", 510, 20, 2]],
               [["big", 0, 300, 5], ["c", 300, 10, 1], ["d", 310, 10, 3]]]
    plan = fanin.plan_search(indexes, per_group=100, max_folder_detections=10)
    assert plan.skipped == [("big", 11)]
    assert [g["folders"] for g in plan.groups] == [["a"], ["c", "d"]]
    assert plan.groups[0]["ranges"] == [[0, 0, 10]]
    assert plan.groups[1]["ranges"] == [[0, 510, 20], [1, 300, 20]]  # from c's offset: big's lines are before it
    assert fanin.plan_search(indexes, per_group=100, max_folder_detections=11).skipped == []
    assert fanin.plan_search(indexes, per_group=100).skipped == []  # no cap
    assert fanin.plan_search_groups(indexes, 100, 10) == plan.groups
    everything_skipped = fanin.plan_search(indexes, per_group=100, max_folder_detections=1)
    assert everything_skipped.groups == [] and [f for f, _ in everything_skipped.skipped] == ["a", "big", "c", "d"]


def test_a_folder_in_parts_out_of_name_order_ends_at_its_last_range() -> None:
    # an image list's shards are not in name order: folder a is in parts 0 and 2, b in part 1 only
    indexes = [[["a", 0, 10, 1]], [["b", 0, 10, 1]], [["a", 0, 10, 1]]]
    (group,) = fanin.plan_search_groups(indexes, per_group=10)
    assert group["ranges"] == [[0, 0, 10], [1, 0, 10], [2, 0, 10]] and group["last"] == {"a": 2, "b": 1}


def test_a_part_stays_within_the_knob_when_shards_do_not_divide_the_images_evenly() -> None:
    # 95 images in 10 shards: shards of 10 (the last of 5), so 9 shards make a 90-image part, not 10 shards (95)
    assert fanin.plan_parts(10, 95, 90) == [(0, 9), (9, 1)]


def test_the_results_head_is_the_single_pass_bytes_with_the_images_key_on_its_own_line() -> None:
    head = fanin.results_head({"format_version": "1.6"})
    assert head.startswith(b'{\n "info": {\n  "format_version": "1.6"\n },\n "detection_categories": {')
    assert head.endswith(b'"\n },\n "images": [')  # the categories' closing brace, then the key: no stray line


def test_search_groups_fill_to_the_knob_from_zero_after_a_skipped_folder_and_never_start_empty() -> None:
    counts = {"a": 2, "b": 2, "c": 2, "d": 2}
    indexes = [[[f, 10 * i, 10, n] for i, (f, n) in enumerate(counts.items())]]
    assert [g["folders"] for g in fanin.plan_search_groups(indexes, per_group=6)] == [["a", "b", "c"], ["d"]]
    # a folder larger than a group is a group of its own, with no empty group before it
    assert [g["folders"] for g in fanin.plan_search_groups([[["a", 0, 10, 9]]], per_group=6)] == [["a"]]
    # after a skipped folder the next group counts from zero: c and d (6) fill one group
    skipping = [[["a", 0, 10, 2], ["big", 10, 10, 50], ["c", 20, 10, 3], ["d", 30, 10, 3]]]
    plan = fanin.plan_search(skipping, per_group=6, max_folder_detections=10)
    assert [g["folders"] for g in plan.groups] == [["a"], ["c", "d"]]


def test_folders_are_planned_in_name_order_whatever_order_the_parts_name_them() -> None:
    # an image list's parts are not in name order: z in part 0, b and a (over the cap) later
    indexes = [[["z", 0, 10, 1]], [["b", 0, 10, 1], ["y", 10, 10, 20]], [["a", 0, 10, 30]]]
    plan = fanin.plan_search(indexes, per_group=1, max_folder_detections=10)
    assert [g["folders"] for g in plan.groups] == [["b"], ["z"]]
    assert plan.skipped == [("a", 30), ("y", 20)]


def _reference_plan(indexes: list[list[list[Any]]], per_group: int, cap: int | None) -> fanin.SearchPlan:
    """The plan as first written, plainly: each folder's rows in a list, folders in name order, groups filled to
    ``per_group``, a folder over ``cap`` skipped and ending the group before it."""
    where: dict[str, list[tuple[int, int, int, int]]] = {}
    for part, rows in enumerate(indexes):
        for folder, offset, length, count in rows:
            where.setdefault(folder, []).append((part, offset, length, count))
    groups: list[list[str]] = [[]]
    loads, skipped = [0], []
    for folder in sorted(where):
        count = sum(r[3] for r in where[folder])
        if cap is not None and count > cap:
            skipped.append((folder, count))
            groups.append([])
            loads.append(0)
        elif groups[-1] and loads[-1] + count > per_group:
            groups.append([folder])
            loads.append(count)
        else:
            groups[-1].append(folder)
            loads[-1] += count
    plans = []
    for folders in (g for g in groups if g):
        spans: dict[int, tuple[int, int]] = {}
        for folder in folders:
            for part, offset, length, _ in where[folder]:
                lo, hi = spans.get(part, (offset, offset + length))
                spans[part] = (min(lo, offset), max(hi, offset + length))
        parts = sorted(spans)
        plans.append({"folders": folders, "ranges": [[p, spans[p][0], spans[p][1] - spans[p][0]] for p in parts],
                      "last": {f: max(parts.index(p) for p, *_ in where[f]) for f in folders}})
    return fanin.SearchPlan(plans, skipped)


@given(rows=st.lists(st.tuples(st.integers(0, 4), st.sampled_from("abcdefghij"), st.integers(0, 30)), max_size=40),
       per_group=st.integers(1, 60), cap=st.one_of(st.none(), st.integers(0, 40)))
def test_the_plan_is_the_plain_one_for_folders_in_any_parts_and_order(rows: list[tuple[int, str, int]],
                                                                      per_group: int, cap: int | None) -> None:
    indexes: list[list[list[Any]]] = [[] for _ in range(5)]
    for part, folder, count in rows:
        at = sum(r[2] for r in indexes[part])
        indexes[part].append([folder, at, 10 + count, count])
    assert fanin.plan_search(indexes, per_group, cap) == _reference_plan(indexes, per_group, cap)


class _IndexStore:
    """The parts' folder indexes as a store holds them (read back as each is asked for); plans written, counted."""

    def __init__(self, docs: list[bytes]) -> None:
        self.docs = {layout.merge_part_blob("t", p, "folders-index.json"): doc for p, doc in enumerate(docs)}
        self.written = 0

    def read_json(self, container: str, name: str) -> Any:
        return json.loads(self.docs[name])

    def write_bytes(self, container: str, name: str, data: bytes, content_type: str) -> None:
        self.written += 1


def test_planning_the_search_holds_the_folders_rows_not_every_parts_index_and_group() -> None:
    """A collection kept in camera-day folders has a folder with detections for every ten images (a million at ten
    million): the plan held every part's parsed index and every group's plan at once, ~470 bytes a folder (470 MB);
    now one part's index and one group at a time beside each folder's name and rows (~200 bytes)."""
    from activities import fanin as fa

    def docs(folders: int, parts: int = 10) -> list[bytes]:
        per = folders // parts
        return [json.dumps([[f"site{f // 1000:04d}/2024-06-{f % 1000:04d}", 4800 * (f - p * per), 4800, 12]
                            for f in range(p * per, (p + 1) * per)]).encode() for p in range(parts)]

    sizes = (5_000, 40_000)
    stores = {n: _IndexStore(docs(n)) for n in sizes}
    peaks = {}
    for n, store in stores.items():
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            groups = fa.plan_groups(store, "c", "t", 10, 12_000)  # type: ignore[arg-type]
            peaks[n] = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert groups == n * 12 // 12_000 and store.written == groups + 1  # and the skipped folders' list
    per_folder = (peaks[sizes[1]] - peaks[sizes[0]]) / (sizes[1] - sizes[0])
    assert per_folder < 300, (peaks, per_folder)  # bytes a folder; every index and group held: ~450
