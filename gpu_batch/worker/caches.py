"""Where the worker keeps what outlives one shard: downloaded models and TorchInductor's compiled kernels.

Why a module of its own, free of torch: the compile cache must be chosen before torch is imported, because importing
torch's compiler writes its default into ``TORCHINDUCTOR_CACHE_DIR`` (after which it looks "explicitly set").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


def model_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``TRAPBATCH_MODEL_CACHE``; on an Azure Batch node its shared folder; else ``~/.cache/trapbatch/models``.

    Why the node's shared folder: each shard runs in a fresh ``--rm`` container whose home directory dies with it,
    so a cache there would download the ~280 MB checkpoint again for every shard. Batch mounts the node's root
    (``AZ_BATCH_NODE_SHARED_DIR`` included) into container tasks, and downloads land by atomic rename, so
    concurrent tasks on one node share one copy safely.
    """
    env = os.environ if env is None else env
    configured = env.get("TRAPBATCH_MODEL_CACHE")
    if configured:
        return Path(configured)
    shared = env.get("AZ_BATCH_NODE_SHARED_DIR")
    if shared:
        return Path(shared) / "trapbatch" / "models"
    return Path.home() / ".cache" / "trapbatch" / "models"


def compile_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where ``--compile`` should keep TorchInductor's compiled kernels, or None to leave torch's default.

    Compiling YOLOv5x6 from a cold cache took 41 s before the first batch on the H100 and 16 s with a warm one
    (bench/RESULTS.md). Torch's default, under ``/tmp``, dies with each shard's container; the node's shared folder
    keeps it for every later shard on that node. An explicit ``TORCHINDUCTOR_CACHE_DIR`` always wins.
    """
    env = os.environ if env is None else env
    if env.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(env["TORCHINDUCTOR_CACHE_DIR"])
    shared = env.get("AZ_BATCH_NODE_SHARED_DIR")
    return Path(shared) / "trapbatch" / "inductor-cache" if shared else None
