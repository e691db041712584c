"""GET /api/tasks/{id} sums its shard groups' progress, reading their statuses concurrently (bounded)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from api import starters
from core.ids import shards_instance_id

TASK = "task-0123456789abcdef0123"


class SlowClient:
    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.asked: list[str] = []

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(instance_id)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return SimpleNamespace(custom_status={"stage": "detecting", "images_done": 10, "done": 1, "flag": True})


def test_groups_are_read_concurrently_but_bounded_and_summed() -> None:
    client = SlowClient()
    totals = asyncio.run(starters._child_progress(client, TASK, 40))
    assert totals == {"images_done": 400, "done": 40}  # integers summed; strings and booleans left out
    assert sorted(client.asked) == sorted(shards_instance_id(TASK, g) for g in range(40))
    assert 1 < client.most <= starters.STATUS_READS_AT_ONCE
