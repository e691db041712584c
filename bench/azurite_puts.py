"""How fast Azurite accepts zero-byte blob PUTs as its account fills, stock and as devhost runs it.

usage: ``python bench/azurite_puts.py [--blobs N] [--step K] [--watch-s S] [--stock]`` (defaults 20,000, 5,000 and
0). Starts Azurite (in memory, ``devhost.azurite``; ``--stock``: its blob service as npm publishes it), PUTs K blobs at
a time the way ``bench/control_plane.py`` uploads (aiohttp, 64 at once, one container SAS) and prints each step's rate
against the number of blobs already there. With ``--watch-s``, it then reads one blob's properties every half second
for S seconds (660 spans a garbage collection: Azurite runs one at start and every ten minutes after the last ended,
``BlobGCManager``) and prints each read over a second and the longest: the collector's pass holds Azurite's one
thread throughout (``devhost/azurite_blob.js`` fixes what made that pass long).

Why the stock rate falls: Azurite's in-memory blob store (``LokiBlobMetadataStore.createBlob``) looks the blob up with
a LokiJS ``findOne`` on {accountName, containerName, name, snapshot}; LokiJS answers a multi-field query from the
binary index of its first field only, ``accountName``, the same for every blob, then checks each document: every
PUT costs time in proportion to the blobs already stored, so N PUTs cost O(N^2). devhost's blob service asks the
same query name first (``devhost/azurite_blob.js``, item 3). Azure's storage has no such cost. Benchmark only; prints
numbers, asserts nothing.
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
    p.add_argument("--watch-s", type=float, default=0.0, help="then probe Azurite this long (660: one collection)")
    p.add_argument("--stock", action="store_true", help="the blob service as npm publishes it, not devhost's")
    args = p.parse_args(argv)
    names = image_names(args.blobs, per_folder=2000)
    with start_azurite(stock_blob=args.stock) as azurite:
        print(f"azurite-blob: {'stock' if args.stock else 'devhost/azurite_blob.js'}", flush=True)
        print(f"{'blobs before':>12} {'PUTs':>6} {'seconds':>8} {'PUTs/s':>8}", flush=True)
        for first in range(0, len(names), args.step):
            chunk = names[first:first + args.step]
            started = time.perf_counter()
            upload(azurite.connection_string, "photos", chunk)
            took = time.perf_counter() - started
            print(f"{first:>12,} {len(chunk):>6,} {took:>8.1f} {len(chunk) / took:>8.0f}", flush=True)
        if args.watch_s > 0:
            watch(azurite.connection_string, "photos", names[0], args.watch_s)
    return 0


def watch(connection: str, container: str, name: str, seconds: float) -> None:
    """Read ``name``'s properties every half second for ``seconds``; print reads over 1 s and the longest."""
    from azure.storage.blob import BlobServiceClient

    # a read timeout past any pause, so the pause is measured, not cut at the SDK's 60 s
    blob = BlobServiceClient.from_connection_string(connection, read_timeout=900).get_blob_client(container, name)
    start = time.perf_counter()
    longest, reads = 0.0, 0
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        blob.get_blob_properties()
        took = time.perf_counter() - t
        reads += 1
        longest = max(longest, took)
        if took > 1.0:
            print(f"at {t - start:7.1f} s: one read took {took:.1f} s", flush=True)
        time.sleep(0.5)
    print(f"{reads} reads over {seconds:.0f} s, the longest {longest:.2f} s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
