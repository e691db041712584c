"""Is the node's NVIDIA driver new enough for the CUDA this worker image's torch was built for?

Why a check of its own: when the driver is older than the CUDA build of torch, ``torch.cuda.is_available()`` is just
False (with at most a warning), so the worker either runs on the CPU for hours or says only "no CUDA device". On an
Azure Batch node the driver comes with the pool's VM image and torch with the worker image, so the two drift apart
independently; the message names both versions and the driver to ask for.

How: torch's ``torch.version.cuda`` (the CUDA it was built for) against the CUDA version the driver supports,
``cuDriverGetVersion`` from ``libcuda.so.1`` (via ctypes, without initialising CUDA), with the driver's own version
from ``nvidia-smi`` for the message. Every probed value can be injected (``CudaProbe``), so the logic is tested on CPU.

Must stay importable without torch: torch is imported only when the probe runs.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass

# The oldest Linux driver that runs each CUDA release: NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit and
# Corresponding Driver Versions" (the GA release of each minor version).
TOOLKIT_DRIVERS: dict[tuple[int, int], str] = {
    (11, 8): "520.61.05",
    (12, 0): "525.60.13", (12, 1): "530.30.02", (12, 2): "535.54.03", (12, 3): "545.23.06",
    (12, 4): "550.54.14", (12, 5): "555.42.02", (12, 6): "560.28.03", (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}
# The oldest driver of each CUDA major version: with CUDA minor version compatibility it runs every minor release of
# that major for most programs (NVIDIA's "Supported Drivers and CUDA Toolkit Versions": R535 runs CUDA 12.x, R580
# runs CUDA 13.x).
MAJOR_DRIVERS: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


class CudaDriverMismatch(RuntimeError):
    """CUDA was requested, and this node cannot give it to the worker; the message says why and what to change."""


@dataclass(frozen=True)
class CudaProbe:
    """What the worker sees. ``driver_cuda`` is cuDriverGetVersion's number (12020 = CUDA 12.2); None: no driver."""

    torch_version: str
    torch_cuda: str | None  # torch.version.cuda; None for a CPU-only build of torch
    cuda_available: bool  # torch.cuda.is_available()
    driver_cuda: int | None
    driver_version: str | None = None  # e.g. "535.161.08", from nvidia-smi

    @classmethod
    def of_this_machine(cls) -> "CudaProbe":
        import torch

        return cls(torch_version=str(torch.__version__), torch_cuda=torch.version.cuda,
                   cuda_available=bool(torch.cuda.is_available()), driver_cuda=driver_cuda_version(),
                   driver_version=nvidia_driver_version())


def driver_cuda_version() -> int | None:
    """The CUDA version the installed driver supports (``cuDriverGetVersion``), or None when there is no driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return version.value or None


def nvidia_driver_version() -> str | None:
    """The driver's version as ``nvidia-smi`` reports it, or None."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=15).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.strip().splitlines()
    return (lines[0].strip() or None) if lines else None


def _version(text: str) -> tuple[int, int]:
    major, _, rest = text.partition(".")
    return int(major), int(rest.partition(".")[0] or 0)


def _from_driver_number(number: int) -> tuple[int, int]:
    return number // 1000, (number % 1000) // 10


def required_driver(cuda: tuple[int, int]) -> str | None:
    """The oldest Linux driver for that CUDA release, if this module knows it."""
    return TOOLKIT_DRIVERS.get(cuda)


def cuda_problem(requested_device: str, probe: CudaProbe | None = None) -> str | None:
    """Why the worker cannot use CUDA on this node, or None when it can (or was not asked to).

    ``requested_device``: ``cuda`` (the GPU is required: every problem is reported), ``auto`` (the CPU is acceptable,
    so only a driver that is present but cannot run this torch is reported, since the CPU run that follows is then
    an accident), ``cpu`` (nothing to check). The probe is taken here unless given.
    """
    if not requested_device.startswith(("cuda", "auto")):
        return None
    probe = probe or CudaProbe.of_this_machine()
    if probe.cuda_available:
        return None  # an older driver can still run it (CUDA minor version compatibility): nothing to report
    required = _version(probe.torch_cuda) if probe.torch_cuda else None
    driver = _from_driver_number(probe.driver_cuda) if probe.driver_cuda else None
    if requested_device == "auto" and (required is None or driver is None):
        return None  # no CUDA build or no GPU driver: a CPU run is what "auto" means
    if required is None:
        return (f"CUDA was requested, but the worker image's torch {probe.torch_version} is a CPU-only build: "
                "rebuild the worker image with a CUDA build of torch")
    want = f"{required[0]}.{required[1]}"
    if driver is None:
        return (f"CUDA was requested, but no NVIDIA driver is visible to the worker (libcuda.so.1 cannot be "
                f"loaded); the worker image is built for CUDA {want} (torch {probe.torch_version}): run it on a GPU "
                f"VM size whose node image has an NVIDIA driver >= {required_driver(required) or '?'} "
                "(Azure Batch gives container tasks the GPUs itself)")
    have = f"{driver[0]}.{driver[1]}"
    installed = f" {probe.driver_version}" if probe.driver_version else ""
    if driver < required:
        needed = (MAJOR_DRIVERS.get(required[0]) if driver[0] < required[0] else None) or required_driver(required)
        advice = f"use a node image with NVIDIA driver >= {needed}" if needed else \
            f"use a node image whose NVIDIA driver supports CUDA {want}"
        return (f"the node's NVIDIA driver{installed} supports CUDA {have}, but the worker image is built for CUDA "
                f"{want} (torch {probe.torch_version}): {advice}, or a worker image built for CUDA <= {have}")
    return (f"CUDA was requested and the node's NVIDIA driver{installed} supports CUDA {have} (the worker image needs "
            f"{want}), but torch {probe.torch_version} finds no usable GPU: the GPU is not visible in this container "
            "(CUDA_VISIBLE_DEVICES, or a VM size without a GPU) or is in a bad state (see nvidia-smi)")


def require_cuda(requested_device: str, probe: CudaProbe | None = None) -> None:
    """Raise ``CudaDriverMismatch`` with ``cuda_problem``'s message when there is one."""
    problem = cuda_problem(requested_device, probe)
    if problem:
        raise CudaDriverMismatch(problem)
