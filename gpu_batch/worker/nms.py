"""Per-category non-maximum suppression with torchvision's kernel, without importing the torchvision package.

Why this module exists: the worker needs one function of torchvision on its CPU path, ``ops.batched_nms``, but
``import torchvision`` runs the whole package (``models`` -> ``ops`` -> ``roi_align`` -> ``torch._dynamo``): about
1.4 s of a worker process's ~3.2 s of imports, paid by every shard and every test process. The NMS kernel itself is
a C++ op in torchvision's compiled library (``_C_stable.so`` in 0.29), which ``torch.ops.load_library`` registers
as ``torch.ops.torchvision.nms`` in milliseconds. This module finds that library through
``importlib.util.find_spec("torchvision")`` (which locates the package without executing it), loads it once, and
reproduces ``batched_nms``'s per-category logic around the op.

Parity: ``batched_nms`` here gives EXACTLY what ``torchvision.ops.batched_nms`` of **torchvision 0.29.1** (the
pinned version) gives: the same kept indices in the same order, because it runs the same kernel on the same tensors
built by the same tensor operations, and picks between torchvision's two strategies at the same size thresholds
(``CPU_LOOP_ABOVE_NUMEL`` / ``CUDA_LOOP_ABOVE_NUMEL``, from ``torchvision/ops/boxes.py``):

* coordinate offset (small inputs): every box is shifted by ``category x (max coordinate + 1)`` so that boxes of
  different categories cannot overlap, then one NMS call;
* per-category loop (large inputs): one NMS call per category, the kept indices merged and sorted by score.

The two strategies can keep different boxes near ties and float rounding (the offset changes coordinates), so the
threshold matters as much as the arithmetic. Exact parity is what the worker's correctness checks rest on: the GPU
oracle compares our detections with MegaDetector's (which calls torchvision), and the tests compare detections across
batch sizes (a batch's box count, hence the strategy, depends on the batch size). ``gpu_batch/tests/test_nms.py``
checks the thresholds against the installed torchvision's source: whoever upgrades torchvision must re-read its
``batched_nms`` and update this module if it changed.

If the library cannot be found or loaded, or has no ``nms`` op, ``batched_nms`` falls back to ``import torchvision``
and its own ``batched_nms`` (logged once, at INFO). Only float boxes are supported (torchvision also accepts
quantized ones, which the worker never has).

Must not: import torchvision at module level, or use torchvision's private attributes.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

logger = logging.getLogger(__name__)

MATCHES_TORCHVISION = "0.29.1"
# torchvision's batched_nms switches from the coordinate offset to the per-category loop above these ``boxes.numel()``
# (4 per box): 1,000 boxes on the CPU, 25,000 on other devices.
CPU_LOOP_ABOVE_NUMEL = 4000
CUDA_LOOP_ABOVE_NUMEL = 100_000

_LIBRARY_NAMES = ("_C_stable", "_C")  # torchvision 0.29 ships _C_stable; older releases _C


def find_ops_library() -> Path | None:
    """The path of torchvision's compiled ops library (``_C_stable`` or ``_C`` with an extension suffix), or None.

    ``find_spec`` of a top-level package finds it on ``sys.path`` without running its ``__init__``.
    """
    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in _LIBRARY_NAMES:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = Path(folder) / f"{name}{suffix}"
                if path.is_file():
                    return path
    return None


@dataclass(frozen=True, slots=True)
class Backend:
    """How ``batched_nms`` runs in this process: ``nms`` = torchvision's op (loaded library), or ``package`` =
    torchvision's own ``batched_nms`` (fallback); ``source`` says which, for logs and tests."""

    source: str
    nms: Callable[..., Any] | None = None
    package: Callable[..., Any] | None = None


SOURCE_LIBRARY = "torchvision-ops-library"
SOURCE_PACKAGE = "torchvision-package"

_lock = threading.Lock()
_backend: Backend | None = None


def _load_library() -> tuple[Callable[..., Any] | None, str]:
    """torchvision's ``nms`` op after loading its library, or None and why not."""
    path = find_ops_library()
    if path is None:
        return None, "torchvision's compiled ops library was not found"
    try:
        # Loading it again (e.g. torchvision imported later loads the same file) is a no-op: the dynamic loader
        # returns the library already mapped, so its ops are registered once.
        torch.ops.load_library(str(path))  # type: ignore[no-untyped-call]
    except (OSError, ImportError, RuntimeError) as exc:
        return None, f"loading {path} failed: {type(exc).__name__}: {exc}"
    try:
        op = torch.ops.torchvision.nms
    except (AttributeError, RuntimeError) as exc:
        return None, f"{path} has no torchvision::nms op ({exc})"
    return op, ""


def backend() -> Backend:
    """This process's backend, chosen (and the library loaded) on first use."""
    global _backend
    with _lock:
        if _backend is None:
            op, why = _load_library()
            if op is not None:
                _backend = Backend(SOURCE_LIBRARY, nms=op)
                logger.debug("NMS uses torchvision's ops library directly")
            else:
                import torchvision.ops

                logger.info("NMS uses the torchvision package (imported now): %s", why)
                _backend = Backend(SOURCE_PACKAGE, package=torchvision.ops.batched_nms)
        return _backend


def reset_backend() -> None:
    """Forget the chosen backend (tests); the next call chooses again. A loaded library stays loaded."""
    global _backend
    with _lock:
        _backend = None


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
                ) -> torch.Tensor:
    """Indices (int64) of the boxes kept by NMS within each group, in decreasing order of score.

    ``boxes``: N x 4 ``(x1, y1, x2, y2)``; ``scores``: N; ``groups``: N integer categories (boxes in different groups
    never suppress each other); a box is dropped when its IoU with a kept, higher-scoring box exceeds
    ``iou_threshold``. Same result as ``torchvision.ops.batched_nms`` (see the module doc).
    """
    b = backend()
    if b.package is not None:
        kept: torch.Tensor = b.package(boxes, scores, groups, iou_threshold)
        return kept
    assert b.nms is not None
    limit = CPU_LOOP_ABOVE_NUMEL if boxes.device.type == "cpu" else CUDA_LOOP_ABOVE_NUMEL
    if boxes.numel() > limit and not torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]
        return _per_group(b.nms, boxes, scores, groups, iou_threshold)
    return _offset(b.nms, boxes, scores, groups, iou_threshold)


def _offset(nms: Callable[..., Any], boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
            iou_threshold: float) -> torch.Tensor:
    """One NMS call over boxes moved apart by group: group g is shifted by g x (largest coordinate + 1)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    one = torch.ones((), dtype=boxes.dtype, device=boxes.device)
    shift = groups.to(boxes) * (boxes.max() + one)
    kept: torch.Tensor = nms(boxes + shift[:, None], scores, iou_threshold)
    return kept


def _per_group(nms: Callable[..., Any], boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
               iou_threshold: float) -> torch.Tensor:
    """One NMS call per group; the union of what each kept, by decreasing score (the same sort torchvision uses)."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for g in torch.unique(groups):
        members = torch.where(groups == g)[0]
        keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.where(keep)[0]
    return kept[scores[kept].sort(descending=True)[1]]
