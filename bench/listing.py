"""Listing benchmark: ``python bench/listing.py --images N [--connection CONN] [--page-size 5000]``.

What it measures: the CPU a listing costs per blob in this process (``time.thread_time`` of the listing thread, so
Azurite's own CPU and other processes on a shared machine are not counted; best of ``--repeat``), listing a whole
container of N zero-byte blobs (``site<s>/cam<c>/IMG_<i>.JPG``, as ``bench/control_plane.py`` makes them), page by
page, the way the enumeration activities do:

    sdk_list_blobs      ContainerClient.list_blobs().by_page(): (name, etag) per blob; what list_images_part used
                        before adapters.listing (BlobProperties from the generated model deserializer)
    sdk_walk_blobs      ContainerClient.walk_blobs(delimiter="/") over one flat folder level: what plan_listing used
    sdk_list_blob_names ContainerClient.list_blob_names(): names only (the SDK's cheaper path, ElementTree + lookups);
                        what BlobStore.list_names used
    fast                adapters.listing.iter_pages: (name, etag, size) per blob, what BlobStore's listings use now
    fast_delimiter      the same with delimiter "/" (plan_listing's one level)

Record (printed, and saved to ``bench/results/listing-<N>.json`` or ``--out``): per way, ``cpu_us_per_blob`` (best),
all runs, wall seconds, the blob count it saw (each way must see all N), and the machine's load before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.control_plane import _git_commit, image_names, upload  # noqa: E402


def ways(container: Any, page_size: int) -> dict[str, Callable[[], int]]:
    """Each way lists the whole container and returns how many blobs it saw."""
    from azure.storage.blob import BlobPrefix

    from adapters import listing

    def sdk_list_blobs() -> int:
        n = 0
        for page in container.list_blobs(results_per_page=page_size).by_page():
            n += len([(b.name, b.etag) for b in page])
        return n

    def sdk_walk_blobs() -> int:  # the blobs sit two folders deep: list the deepest level, one folder
        n = 0
        for page in container.walk_blobs(name_starts_with=FOLDER, delimiter="/", results_per_page=page_size).by_page():
            n += len([b.name for b in page if not isinstance(b, BlobPrefix)])
        return n

    def sdk_list_blob_names() -> int:
        n = 0
        for page in container.list_blob_names(results_per_page=page_size).by_page():
            n += len(list(page))
        return n

    def fast() -> int:
        return sum(len(page.blobs) for page in listing.iter_pages(container, None, page_size))

    def fast_delimiter() -> int:
        return sum(len(page.blobs) for page in listing.iter_pages(container, FOLDER, page_size, "/"))

    return {"sdk_list_blobs": sdk_list_blobs, "sdk_walk_blobs": sdk_walk_blobs,
            "sdk_list_blob_names": sdk_list_blob_names, "fast": fast, "fast_delimiter": fast_delimiter}


FOLDER = "site000/cam00/"  # where bench_names puts every blob (one folder, so the delimiter listing sees all)


def bench_names(n: int) -> list[str]:
    return image_names(n, per_folder=n)


def measure(fn: Callable[[], int], repeat: int) -> dict[str, Any]:
    runs, walls, seen = [], [], 0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.thread_time()
        seen = fn()
        runs.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {"blobs": seen, "cpu_us_per_blob": round(min(runs) / max(seen, 1) * 1e6, 2),
            "cpu_s_runs": [round(r, 4) for r in runs], "wall_s_best": round(min(walls), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from azure.storage.blob import BlobServiceClient

    from adapters import listing

    azurite = None
    connection = args.connection
    if not connection:
        from devhost.azurite import start_azurite

        azurite = start_azurite()
        connection = azurite.connection_string
    try:
        container_name = args.container or f"listing{args.images}"
        service = BlobServiceClient.from_connection_string(connection)
        container = service.get_container_client(container_name)
        have = (sum(len(p.blobs) for p in listing.iter_pages(container, FOLDER)) if container.exists() else 0)
        upload_s = 0.0
        if have != args.images:
            if have:
                raise SystemExit(f"container {container_name} holds {have} blobs, not {args.images}: name another")
            upload_s = upload(connection, container_name, bench_names(args.images))
            print(f"uploaded {args.images:,} blobs in {upload_s:.1f} s", flush=True)
        load_before = os.getloadavg()
        results = {}
        for name, fn in ways(container, args.page_size).items():
            fn()  # warm: connection, imports
            results[name] = measure(fn, args.repeat)
            print(f"{name:20s} {results[name]['cpu_us_per_blob']:8.2f} us CPU/blob  ({results[name]['blobs']} blobs)",
                  flush=True)
            if results[name]["blobs"] != args.images:
                raise SystemExit(f"{name} saw {results[name]['blobs']} blobs of {args.images}")
    finally:
        if azurite is not None:
            azurite.stop()
    base = results["sdk_list_blobs"]["cpu_us_per_blob"]
    return {
        "images": args.images, "page_size": args.page_size, "repeat": args.repeat, "ways": results,
        "speedup_vs_sdk_list_blobs": {k: round(base / v["cpu_us_per_blob"], 2) for k, v in results.items()
                                      if v["cpu_us_per_blob"]},
        "upload_s": round(upload_s, 1),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
                    "git_commit": _git_commit(), "storage": "Azurite"},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--page-size", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3, help="runs per way; the best counts")
    p.add_argument("--connection", default="", help="an existing Azurite's connection string (default: start one)")
    p.add_argument("--container", default="", help="default listing<N>; reused when it holds exactly N blobs")
    p.add_argument("--out", default="", help="default bench/results/listing-<N>.json")
    args = p.parse_args(argv)
    record = run(args)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"listing-{args.images}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["speedup_vs_sdk_list_blobs"]))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
