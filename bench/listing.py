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
    parse_filter        adapters.listing.parse_listing and core.shards.is_image_name alone, on the same pages' bodies
                        fetched beforehand (no HTTP): the per-blob CPU of reading a page and keeping its images
    fast_delimiter      the same with delimiter "/" (plan_listing's one level)
    activity_sdk        the enumeration's listing activities (run_plan_listing, then run_list_part for every unit
                        and part, writing the listing parts to Azurite) with BlobStore's listings as they were before
                        adapters.listing (SdkListingStore below)
    activity_fast       the same activities with today's BlobStore

Record (printed, and saved to ``bench/results/listing-<N>.json`` or ``--out``): per way, ``cpu_us_per_blob`` (best),
all runs, wall seconds, the blob count it saw (each way must see all N), and the machine's load before and after.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.control_plane import image_names, machine_facts, save_record, storage_for, upload  # noqa: E402


def ways(container: Any, page_size: int) -> dict[str, Callable[[], int]]:
    """Each way lists the whole container and returns how many blobs it saw."""
    from azure.storage.blob import BlobPrefix

    from adapters import listing
    from core.shards import is_image_name

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

    bodies: list[bytes] = []  # every page's body as the service sent it, for parse_filter
    parse = listing.parse_listing

    def keep(chunks: Any) -> Any:
        bodies.append(b"".join(chunks))
        return parse([bodies[-1]])

    listing.parse_listing = keep  # list_page looks it up at each call
    try:
        fast()
    finally:
        listing.parse_listing = parse

    def parse_filter() -> int:
        return sum(len([b.name for b in parse([body]).blobs if is_image_name(b.name)]) for body in bodies)

    def fast_delimiter() -> int:
        return sum(len(page.blobs) for page in listing.iter_pages(container, FOLDER, page_size, "/"))

    return {"sdk_list_blobs": sdk_list_blobs, "sdk_walk_blobs": sdk_walk_blobs,
            "sdk_list_blob_names": sdk_list_blob_names, "fast": fast, "parse_filter": parse_filter,
            "fast_delimiter": fast_delimiter}


class SdkListingStore:
    """BlobStore with ``list_level`` and ``list_blobs_page`` as they were before ``adapters.listing`` (the SDK's
    ``walk_blobs``/``list_blobs``), for the activity-level comparison; everything else is today's BlobStore."""

    def __new__(cls, service: Any) -> Any:
        from azure.storage.blob import BlobPrefix

        from adapters.blobs import BlobStore, _etag
        from adapters.listing import ListedBlob

        class Store(BlobStore):
            def list_level(self, container: str, prefix: str, max_items: int, page_size: int = 5000,
                           etags: dict[str, str] | None = None, sizes: dict[str, int] | None = None,
                           max_prefixes: int | None = None) -> tuple[list[str], list[str], bool]:
                client = self.service.get_container_client(container)
                prefixes: list[str] = []
                names: list[str] = []
                pages: Any = client.walk_blobs(name_starts_with=prefix or None, delimiter="/",
                                               results_per_page=page_size).by_page()
                for page in pages:
                    for item in page:
                        (prefixes if isinstance(item, BlobPrefix) else names).append(str(item.name))
                        if etags is not None and not isinstance(item, BlobPrefix) and getattr(item, "etag", None):
                            etags[str(item.name)] = _etag(item.etag)
                        if sizes is not None and not isinstance(item, BlobPrefix):
                            sizes[str(item.name)] = int(item.size or 0)
                    full = (len(prefixes) + len(names) >= max_items if max_prefixes is None
                            else len(names) >= max_items or len(prefixes) >= max_prefixes)
                    if full and pages.continuation_token:
                        return prefixes, names, False
                return prefixes, names, True

            def list_blobs_page(self, container: str, prefix: str, marker: str | None,
                                page_size: int = 5000) -> tuple[list[ListedBlob], str | None]:
                client = self.service.get_container_client(container)
                pages: Any = client.list_blobs(name_starts_with=prefix or None,
                                               results_per_page=page_size).by_page(continuation_token=marker)
                items = [ListedBlob(str(b.name), _etag(b.etag), int(b.size)) for b in next(pages, [])]
                return items, pages.continuation_token or None

        return Store(service)


def activities(connection: str, container_name: str, store: Any, state: str) -> Callable[[], int]:
    """The enumeration's listing activities over the whole container, units and parts one after another."""
    from activities.enumerate import run_list_part, run_plan_listing
    from core.requests import TaskRequest
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": connection, "TRAPBATCH_CONTAINER": state})
    request = TaskRequest(container=container_name, model="MDV5A", images_per_shard=1000)

    def run() -> int:
        images = 0
        plan = run_plan_listing("bench-listing", request, settings, store)
        for unit in range(plan["units"]):
            part, more = 0, True
            while more:
                out = run_list_part("bench-listing", request, settings, store, unit, part)
                images, more, part = images + out["images"], out["more"], part + 1
        return images

    return run


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

    with storage_for(args.connection) as connection:
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
        from adapters.blobs import BlobStore

        for name, store in (("activity_sdk", SdkListingStore(service)), ("activity_fast", BlobStore(service))):
            fn = activities(connection, container_name, store, container_name + "-state")
            fn()
            results[name] = measure(fn, args.repeat)
            print(f"{name:20s} {results[name]['cpu_us_per_blob']:8.2f} us CPU/blob  ({results[name]['blobs']} images)",
                  flush=True)
    base = results["sdk_list_blobs"]["cpu_us_per_blob"]
    return {
        "images": args.images, "page_size": args.page_size, "repeat": args.repeat, "ways": results,
        "speedup_vs_sdk_list_blobs": {k: round(base / v["cpu_us_per_blob"], 2) for k, v in results.items()
                                      if v["cpu_us_per_blob"]},
        "upload_s": round(upload_s, 1),
        "machine": machine_facts(load_before),
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
    save_record(record, args.out, f"listing-{args.images}.json", record["speedup_vs_sdk_list_blobs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
