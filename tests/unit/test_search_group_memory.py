"""A repeat-search group (``activities.fanin.run_search_repeats``) ends each folder's search after the last range
holding its lines, so it holds the candidates of the folders being read, not of all of its folders: measured with
tracemalloc against the same group read from a plan without the ends (how every group ran before)."""
from __future__ import annotations

import json
import random
import tracemalloc
from typing import Any

import pytest

from activities import fanin as fanin_activities
from core import fanin
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import jsonio

FOLDERS, PER_FOLDER = 40, 150


class Store:
    """The two blob calls the activity makes besides its ranged reads."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.written: dict[str, bytes] = {}

    def read_json(self, container: str, name: str) -> Any:
        return self.plan

    def write_bytes(self, container: str, name: str, data: bytes, content_type: str | None = None) -> None:
        self.written[name] = data


def folder_lines() -> tuple[bytes, list[list[Any]]]:
    rng = random.Random(11)
    lines, index = [], []
    offset = 0
    for f in range(FOLDERS):
        folder = f"site/cam{f:03d}"
        rows = []
        for i in range(PER_FOLDER):  # scattered boxes: nearly every detection files a candidate of its own
            w, h = rng.uniform(0.01, 0.2), rng.uniform(0.01, 0.2)
            rows.append([f"{folder}/IMG_{i:05d}.JPG", "1", rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h,
                         rng.uniform(0.2, 0.9)])
        line = jsonio.dumps([folder, rows]) + b"\n"
        index.append([folder, offset, len(line), len(rows)])
        lines.append(line)
        offset += len(line)
    return b"".join(lines), index


def search(monkeypatch: Any, with_ends: bool) -> tuple[int, bytes]:
    data, index = folder_lines()
    (plan,) = fanin.plan_search_groups([index], per_group=10 ** 9)
    if not with_ends:
        del plan["last"]
    monkeypatch.setattr(fanin_activities, "SEARCH_READ_BYTES", 64 * 1024)  # the group's range read in pieces
    monkeypatch.setattr(fanin_activities, "read_range", lambda store, c, n, o, length: data[o:o + length])
    store = Store(plan)
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_CONTAINER": "s"})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fanin_activities.run_search_repeats({"task_id": "t", "group": 0}, settings, store)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, store.written[layout.repeat_search_blob("t", 0, "found.json")]


def test_a_group_holds_the_folder_being_read_not_all_of_its_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    search(monkeypatch, with_ends=True)  # the first call's imports are not the group's memory
    ended, found = search(monkeypatch, with_ends=True)
    held, found_before = search(monkeypatch, with_ends=False)
    assert found == found_before and json.loads(found) is not None  # the same findings either way
    assert ended * 6 < held, (ended, held)  # forty folders' candidates at the end, before
