"""Memory of one ``exports_part`` call per shard size: ``python bench/exports_memory.py [--images 10000 50000 100000]``.

Why: an exports part reads its shards' merge views one at a time (``activities.exports.ViewLines``); a request may
ask for shards of up to 100,000 images (``core.requests.MAX_IMAGES_PER_SHARD``) and an activity shares a Flex
Consumption instance with seven others, so what one view costs the Python heap decides whether large shards fit.

What it does, per size N: writes into Azurite (``devhost.azurite``, or ``--connection``) one shard of N images as a
worker and the merge leave it (``site<s>/cam<c>/IMG_<i>.JPG`` names, ``gpu_batch.pool.simulated.synthetic_entry``
results with detections, sizes and capture times, 0.5 % permanent failures; the attempt's results, manifest and merge
view with every export section, made with an image list's ``site`` column; the shard's list document, the enumeration,
the request and the results file), then, in a fresh process, calls ``activities.exportparts.run_exports_part`` over
that shard under ``tracemalloc`` and prints the call's Python-heap peak above the heap before it, the process's
``ru_maxrss`` before and after, and whether every format came from the view (the entries not read); and, in
another process without tracemalloc (which slows Python's allocations), the call's seconds and CPU seconds. Each
size's setup and calls run in processes of their own, one after the other, so none sees another's heap.

Record (printed, and saved to ``bench/results/exports-memory.json`` or ``--out``): per size, those figures and the
machine's load before and after.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASK = "task-exports-memory"
SOURCE = "exports-memory-images"
CONTAINER = "exports-memory"
PER_FOLDER = 2000  # images per camera folder, as bench/control_plane.py's default
FAILED_EVERY = 200  # one permanent failure in this many images


def _settings(connection: str, container: str) -> Any:
    from core.settings import Settings

    return Settings.from_env({"AzureWebJobsStorage": connection, "TRAPBATCH_CONTAINER": container})


def setup(connection: str, container: str, images: int) -> dict[str, Any]:
    """One shard of ``images`` images with its worker's merge view, as the merge leaves it for the exports."""
    from activities.fanin import record_merged
    from adapters.blobs import BlobStore, service_client
    from bench.control_plane import image_names
    from core import fanin, mdformat
    from gpu_batch import layout
    from gpu_batch.formats.mergeview import ListedRows, build_view, read_view
    from gpu_batch.manifest import REASON_UNDECODABLE, plain_etag
    from gpu_batch.pool.simulated import CATEGORIES, synthetic_entry

    settings = _settings(connection, container)
    store = BlobStore(service_client(connection))
    store.ensure_container(container)
    sid = layout.shard_id(0)
    names = image_names(images, PER_FOLDER)
    entries = [mdformat.failure_entry(n, mdformat.FAILURE_IMAGE_ACCESS, REASON_UNDECODABLE) if i % FAILED_EVERY == 7
               else synthetic_entry(n, 1, 0.0, seed=5) for i, n in enumerate(names)]
    model = "MDV5A"
    threshold = settings.threshold_for(model)
    store.write_json(container, layout.request_blob(TASK), {"container": SOURCE, "model": model,
                                                             "request_name": "exports memory", "caller": "bench"})
    store.write_json(container, layout.enumeration_blob(TASK), {
        "container": SOURCE, "prefix": "", "images": images, "shards": 1,
        "image_list": {"metadata_columns": ["site"]}})
    rows = {n: {"site": n.rsplit("/", 1)[0]} for n in names}
    store.write_compact_json(container, layout.shard_list_blob(TASK, sid), {"not_found": [], "metadata": rows})
    manifest_etag = store.write_bytes(container, layout.manifest_blob(TASK, sid, 1),
                                      json.dumps({"task_id": TASK, "shard_id": sid, "images": names}).encode())
    doc = {"images": entries, "detection_categories": dict(CATEGORIES),
           "info": {"format_version": "1.6", "detector": model}}
    results_etag = store.write_bytes(container, layout.attempt_results_blob(TASK, sid, 1),
                                     json.dumps(doc).encode("utf-8"))
    del doc
    # the merge's record that it took the shard from these results (the exports take views of those only)
    record_merged(store, container, TASK, 0, store.list_etags(container, layout.shard_prefix(TASK, sid)))
    list_etag = store.list_etags(container, layout.shard_list_blob(TASK, sid))[layout.shard_list_blob(TASK, sid)]
    view = build_view(TASK, threshold, names, entries, results_etag, manifest_etag,
                      listed=ListedRows(plain_etag(list_etag), ("site",), rows))
    assert view is not None
    store.write_bytes(container, layout.attempt_view_blob(TASK, sid, 1), view)
    parsed = read_view(view)
    assert parsed is not None and parsed.coco and parsed.camtrap and parsed.zooniverse, "a view without every section"
    info = {"format_version": "1.6", "detector": model, "detection_completion_time": "2026-12-05T10:00:00Z"}
    results = fanin.results_head(info) + parsed.json[1:] + fanin.RESULTS_TAIL
    store.write_bytes(container, layout.results_blob(TASK), results)
    return {"images": images, "view_bytes": len(view), "results_bytes": len(results),
            "json_bytes": len(parsed.json)}


def run_part(connection: str, container: str, json_bytes: int) -> Callable[[], Any]:
    """The call ``measure`` makes (``run_exports_part`` over the shard ``setup`` wrote, whose results' images hold
    ``json_bytes``), its clients made beforehand."""
    import activities.exportparts as exportparts
    from adapters.blobs import BlobStore, service_client
    from core import contracts as c
    from core.exportparts import part_ranges

    settings = _settings(connection, container)
    store = BlobStore(service_client(connection))
    ((part, first, offset, length),) = part_ranges([[0, 1, json_bytes]])
    payload = c.ExportsPartInput(task_id=TASK, variant="", part=part, first_shard=first, offset=offset,
                                 length=length, shards=1)
    return lambda: exportparts.run_exports_part(payload, settings, store)


def measure(connection: str, container: str, json_bytes: int, traced: bool) -> dict[str, Any]:
    """One ``run_exports_part`` over the shard ``setup`` wrote: under tracemalloc (``traced``), else for its time."""
    import activities.exportparts as exportparts

    read_entries = []
    real_range_lines = getattr(exportparts, "range_lines")

    def range_lines(*args: Any, **kwargs: Any) -> Any:
        read_entries.append(True)
        return real_range_lines(*args, **kwargs)

    setattr(exportparts, "range_lines", range_lines)  # whether the entries were read (a format not from the view)
    call = run_part(connection, container, json_bytes)
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if traced:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started, cpu = time.perf_counter(), time.process_time()
    out = call()
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    common = {"from_views": not read_entries, "images": out["images"], "observations": out["observations"],
              "fragment_bytes": out["bytes"]}
    if not traced:
        return {**common, "seconds": round(seconds, 2), "cpu_s": round(cpu_s, 2)}
    return {**common, "heap_peak_mb": round((peak - base) / 2**20, 1),
            "ru_maxrss_mb_before": round(rss_before / 1024, 1), "ru_maxrss_mb_after": round(rss_after / 1024, 1)}


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, nargs="+", default=[10_000, 50_000, 100_000], help="shard sizes")
    p.add_argument("--connection", default="", help="a storage connection string (default: a fresh Azurite)")
    p.add_argument("--out", default="", help="the record's path (default bench/results/exports-memory.json)")
    p.add_argument("--setup", type=int, help=argparse.SUPPRESS)
    p.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    p.add_argument("--container", default=CONTAINER, help=argparse.SUPPRESS)
    p.add_argument("--untraced", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.setup is not None:
        print(json.dumps(setup(args.connection, args.container, args.setup)))
        return
    if args.measure is not None:
        print(json.dumps(measure(args.connection, args.container, args.measure, not args.untraced)))
        return
    from bench.control_plane import machine_facts, save_record, storage_for

    load = os.getloadavg()
    sizes: list[dict[str, Any]] = []
    with storage_for(args.connection) as connection:
        for n in args.images:
            container = f"{CONTAINER}-{n}"
            made = _child("--setup", str(n), "--connection", connection, "--container", container)
            where = ("--measure", str(made["json_bytes"]), "--connection", connection, "--container", container)
            timed = _child(*where, "--untraced")  # the time without tracemalloc's cost, in a process of its own
            got = _child(*where)
            sizes.append({**made, **got, "seconds": timed["seconds"], "cpu_s": timed["cpu_s"]})
            print(json.dumps(sizes[-1]), flush=True)
    save_record({"shards": sizes, "machine": machine_facts(load)}, args.out, "exports-memory.json",
                [{k: s[k] for k in ("images", "view_bytes", "heap_peak_mb", "ru_maxrss_mb_before",
                                    "ru_maxrss_mb_after", "seconds", "cpu_s", "from_views")} for s in sizes])


if __name__ == "__main__":
    main()
