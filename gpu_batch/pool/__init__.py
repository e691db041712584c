"""GPU pools: where shard tasks run. ``make_pool`` picks one by kind; importable without torch."""
from __future__ import annotations

from typing import Any

from gpu_batch.pool.base import (GpuPool, JobClosed, JobDisabled, JobQuotaReached, JobState, PoolChanges, ShardTask,
                                 TaskInfo, TaskResult, TaskState)

__all__ = ["GpuPool", "JobClosed", "JobDisabled", "JobQuotaReached", "JobState", "PoolChanges", "ShardTask", "TaskInfo",
           "TaskResult", "TaskState", "make_pool"]


def make_pool(kind: str, **kwargs: Any) -> GpuPool:
    if kind == "local":
        from gpu_batch.pool.local import LocalPool

        return LocalPool(**kwargs)
    if kind == "simulated":  # benchmark only: no detector (gpu_batch/pool/simulated.py)
        from gpu_batch.pool.simulated import SimulatedPool

        return SimulatedPool(**kwargs)
    if kind == "azure_batch":
        from gpu_batch.pool.azure_batch import AzureBatchPool

        return AzureBatchPool(**kwargs)
    raise ValueError(f"unknown pool kind {kind!r}: use 'local', 'azure_batch' or (benchmarks only) 'simulated'")
