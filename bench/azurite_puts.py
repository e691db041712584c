"""How fast Azurite accepts zero-byte blob PUTs as its account fills: why a million real blobs is out of reach here.

usage: ``python bench/azurite_puts.py [--blobs N] [--step K]`` (defaults 20,000 and 5,000). Starts Azurite (in memory,
``devhost.azurite``), PUTs K blobs at a time the way ``bench/control_plane.py`` uploads (aiohttp, 64 at once, one
container SAS) and prints each step's rate against the number of blobs already there.

Why the rate falls: Azurite's in-memory blob store (``LokiBlobMetadataStore.createBlob``) looks the blob up with a
LokiJS ``findOne`` on {accountName, containerName, name, snapshot}; LokiJS answers a multi-field query from the
binary index of its first field only, ``accountName``, the same for every blob, then checks each document: every
PUT costs time in proportion to the blobs already stored, so N PUTs cost O(N^2). Azure's storage has no such cost.
Benchmark only; prints numbers, asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.control_plane import image_names, upload  # noqa: E402
from devhost.azurite import start_azurite  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blobs", type=int, default=20_000)
    p.add_argument("--step", type=int, default=5_000)
    args = p.parse_args(argv)
    names = image_names(args.blobs, per_folder=2000)
    with start_azurite() as azurite:
        print(f"{'blobs before':>12} {'PUTs':>6} {'seconds':>8} {'PUTs/s':>8}", flush=True)
        for first in range(0, len(names), args.step):
            chunk = names[first:first + args.step]
            started = time.perf_counter()
            upload(azurite.connection_string, "photos", chunk)
            took = time.perf_counter() - started
            print(f"{first:>12,} {len(chunk):>6,} {took:>8.1f} {len(chunk) / took:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
