"""Where the worker keeps what outlives one shard: downloaded models and TorchInductor's compiled kernels; and
whether this machine can compile at all.

Why a module of its own, free of torch: the compile cache must be chosen before torch is imported, because importing
torch's compiler writes its default into ``TORCHINDUCTOR_CACHE_DIR`` (after which it looks "explicitly set").
"""
from __future__ import annotations

import os
import shutil
import sysconfig
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


def node_cache_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why this shard's caches die with its container on an Azure Batch node, or None.

    Why: Batch mounts the node's root into a container task and sets ``AZ_BATCH_NODE_SHARED_DIR`` only while the
    task's ``containerHostBatchBindMounts`` is unset or names ``Shared``; "any unselected data paths have their
    associated environment variables removed" (batch-container-isolation-task.md). Without it the caches fall back
    to the ``--rm`` container's home: every shard downloads the ~280 MB checkpoint (and compiles) again, silently.
    """
    env = os.environ if env is None else env
    if env.get("AZ_BATCH_NODE_ID") and not env.get("AZ_BATCH_NODE_SHARED_DIR") and not env.get("TRAPBATCH_MODEL_CACHE"):
        return ("this Azure Batch task sees no AZ_BATCH_NODE_SHARED_DIR, so the model and compile caches die with its "
                "container and every shard downloads the model again: leave the task's containerHostBatchBindMounts "
                "unset, or include Shared in it (gpu_batch/pool/azure_batch.py), or set TRAPBATCH_MODEL_CACHE")
    return None


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


def triton_cache_dir(compile_cache: Path, env: Mapping[str, str] | None = None) -> Path:
    """Where Triton keeps what it builds when ``--compile`` uses ``compile_cache``: ``TRITON_CACHE_DIR``, else
    ``<compile_cache>/triton`` (torch's own layout for a fresh cache: ``torch/_inductor/utils.py`` ``fresh_cache``).

    Why not Triton's default, ``~/.triton/cache`` (``triton/knobs.py`` ``cache_knobs``): on an Azure Batch node the
    task runs as the pool's auto-user, whose uid Batch maps into the container (batch-docker-container-workloads.md,
    "For Linux, Batch maps the user/group permission to the container"); the worker image has no user of that uid
    (unless by chance: its one user, ``worker``, is the first one ``useradd`` makes), so its home there is ``/``
    (runc ``libcontainer/init_linux.go`` ``setupUser``: HOME, when not given, from the image's passwd, ``/`` when the
    uid is not there), or a node path the image lacks if Batch passes the host's HOME (its docs list no HOME among
    the variables it sets): neither can a non-admin user write. TorchInductor points Triton at its own cache only
    when it builds a kernel's autotuner (``triton_heuristics.py`` ``CachingAutotuner``); before that, code
    generation asks Triton for its backend (``torch/utils/_triton.py`` ``triton_hash_with_backend``), which builds
    Triton's CUDA driver module (``cuda_utils``) into Triton's cache (``triton/runtime/build.py``, ``os.makedirs``
    in ``runtime/cache.py``), so a compiled shard's first batch would fail there with a PermissionError (read from
    the sources of torch 2.14.1 and Triton 3.8.0; not yet seen on a node). On the node's shared folder the builds
    also outlive the ``--rm`` container.
    """
    env = os.environ if env is None else env
    configured = env.get("TRITON_CACHE_DIR")
    return Path(configured) if configured else compile_cache / "triton"


def compile_blocker(env: Mapping[str, str] | None = None) -> str | None:
    """Why ``--compile`` cannot work here, or None.

    Why: TorchInductor's GPU kernels are Triton kernels, and Triton builds each kernel's launcher as a C extension at
    run time: it needs a C compiler (``CC``, else ``gcc`` or ``clang`` on the PATH; ``triton/runtime/build.py``
    raises "Failed to find C compiler" otherwise) and Python's headers (``Python.h`` in ``sysconfig``'s include
    folder). Without them the first compiled batch raises, every shard fails and is resubmitted to fail again; the
    worker checks first and runs eager instead, saying why.
    """
    env = os.environ if env is None else env
    cc = env.get("CC")
    path = env.get("PATH")
    if not (cc and shutil.which(cc, path=path)) and not any(shutil.which(c, path=path) for c in ("gcc", "clang")):
        return ("no C compiler (CC, gcc or clang) for Triton to build its kernel launchers: install gcc (and "
                "libc6-dev) in the worker image")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return (f"no Python headers ({headers}) for Triton's kernel launchers: install the python3.x-dev package "
                "of the worker's Python")
    return None
