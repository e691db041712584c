"""A GPU pool that records the shard tasks submitted to it and runs none: for tests of what the app asks of a pool
(the real pools have tests of their own)."""
from __future__ import annotations

from gpu_batch.pool import ShardTask


class RecordingPool:
    def __init__(self) -> None:
        self.submitted: list[ShardTask] = []

    def ensure_job(self, job_id: str) -> None:
        pass

    def submit(self, job_id: str, tasks: list[ShardTask]) -> None:
        self.submitted.extend(tasks)
