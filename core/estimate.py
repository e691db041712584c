"""What a task will cost before any GPU starts: images, shards, GPU-hours, wall time and list-price cost.

Pure arithmetic over what enumeration found and four settings (``core.settings``): the measured worker rate
(``TRAPBATCH_WORKER_IMAGES_PER_S``, default 244 img/s: one H100 on a 20,000-image shard, bench/RESULTS.md), the pool's
node count (``TRAPBATCH_POOL_NODES``), one node's price per hour (``TRAPBATCH_NODE_PRICE_PER_HOUR``, else the list
price of ``TRAPBATCH_POOL_VM_SIZE`` from ``core.cost``; neither known: no cost is given) and whether the nodes keep a
resident worker (``TRAPBATCH_WORKER_RESIDENT``). A request with ``"dry_run": true`` stops after enumeration with
stage ``estimated`` and this in its status (orchestrations/task.py); nothing goes to the pool.

The model: each shard is one worker process on one GPU node (one worker per node), which pays ``SHARD_START_S``
before its first result (interpreter, torch, model, first batch; core.requests) and then runs at the worker rate.
With a resident worker only a node's first shard pays ``SHARD_START_S``; its later ones reach the warm
server in ``RESIDENT_SHARD_START_S`` (a server that compiles pays ~50 s on its first shard instead of ~10, which the
estimate leaves out: the app does not know how the pool's start task runs it).
GPU-hours are the busy time of all shards. Wall time assumes the shards spread evenly over the nodes, but is never
shorter than the largest shard alone; it leaves out the time a new pool node takes to boot (minutes on Azure Batch)
and queueing behind other tasks, so it is a lower bound. The cost is busy node time at list price: nodes an
autoscaled pool keeps idle, and Spot discounts, are not in it.
"""
from __future__ import annotations

import math
from typing import Any

SHARD_START_S = 10.0  # seconds a worker spends before its first result (core.requests, bench/RESULTS.md)
# bench/RESULTS.md, H200, 2026-12-04: a warm resident node's 10,000-image shard had its first batch of 32 results
# 2.4 s after the client process started (0.26 s to a first batch of 4 small images), against ~10 s for a new process.
RESIDENT_SHARD_START_S = 2.5
DEFAULT_WORKER_IMAGES_PER_S = 244.0  # bench/RESULTS.md: one H100, YOLOv5x6, 20,000-image shard, end to end
DEFAULT_POOL_NODES = 1


def estimate(images: int, shards: int, images_per_shard: int, worker_images_per_s: float = DEFAULT_WORKER_IMAGES_PER_S,
             pool_nodes: int = DEFAULT_POOL_NODES, node_price_per_hour: float = 0.0,
             shard_start_s: float = SHARD_START_S, warm_shard_start_s: float | None = None) -> dict[str, Any]:
    """The estimate for ``images`` in ``shards`` shards of at most ``images_per_shard``, as a JSON-ready dict.

    ``warm_shard_start_s``: a resident worker's start on a node that already ran a shard (None: every shard starts
    a new worker, ``shard_start_s``). ``cost`` is None when no node price is configured (``node_price_per_hour`` 0)."""
    if images < 0 or shards < 0 or images_per_shard < 1:
        raise ValueError("images and shards must be >= 0 and images_per_shard >= 1")
    if worker_images_per_s <= 0 or pool_nodes < 1 or node_price_per_hour < 0 or (warm_shard_start_s or 0) < 0:
        raise ValueError("worker_images_per_s must be > 0, pool_nodes >= 1, node_price_per_hour and "
                         "warm_shard_start_s >= 0")
    parallel = max(1, min(pool_nodes, shards))
    cold = shards if warm_shard_start_s is None else min(shards, parallel)  # shards that start a new worker
    busy_s = images / worker_images_per_s + cold * shard_start_s + (shards - cold) * (warm_shard_start_s or 0.0)
    largest = min(images, images_per_shard)
    longest_shard_s = (largest / worker_images_per_s + shard_start_s) if shards else 0.0
    wall_s = max(busy_s / parallel, longest_shard_s)
    gpu_hours = busy_s / 3600
    return {
        "images": images,
        "shards": shards,
        "images_per_shard": images_per_shard,
        "gpu_hours": round(gpu_hours, 4),
        "wall_seconds": math.ceil(wall_s),
        "nodes_used": parallel,
        "cost": round(gpu_hours * node_price_per_hour, 2) if node_price_per_hour else None,
        "worker_images_per_s": worker_images_per_s,
        "pool_nodes": pool_nodes,
        "node_price_per_hour": node_price_per_hour,
        "shard_start_s": shard_start_s,
        "warm_shard_start_s": warm_shard_start_s,
        "assumes": "one worker per node at the measured rate, shards spread evenly"
                   + ("; a resident worker per node, so each node's later shards start warm"
                      if warm_shard_start_s is not None else "")
                   + "; node boot time, queueing, idle autoscaled nodes and Spot discounts are not included",
    }


def live_rate(images: int, done: int, reused: int, elapsed_s: float) -> tuple[float, int | None]:
    """A running task's images per second and seconds left, as its status shows them.

    Only images this run detected count (``done - reused``: a re-run with ``only_new`` starts with its reused images
    already done, which made the rate of a mostly reused task look hundreds of times faster than the pool), over the
    time since the pool work began (the caller passes the time since ``detecting_since``: before it, enumeration and a
    confirmation wait of up to days made the rate look slow). Nothing detected yet: rate 0 and no ETA.
    """
    detected = max(0, done - max(0, reused))
    if detected <= 0 or elapsed_s <= 0:
        return 0.0, None
    rate = detected / elapsed_s
    return rate, round(max(0, images - done) / rate)
