"""Results zip, one pass against parallel parts: ``python bench/results_zip.py [--images 20000] [--copies 8]``.

What it measures: the zip of one finished task's linked files, built the two ways ``orchestrations.results_zip``
has, on the same files in the same Azurite:

    single   ``adapters.results_bundle.write_zip``: every file deflated by one activity (below ``PART_BYTES``)
    parts    ``adapters.zip_parts``: the plan, ``--workers`` part activities at a time (threads here, as the
             Functions host runs ``maxConcurrentActivityFunctions`` of them), the combine, the clean

The task is a real one: ``bench/control_plane.py`` runs ``--images`` images through devhost and the simulated pool
first (results, CSV, COCO, Camtrap DP, Zooniverse; options this script does not know are passed to it). ``--copies K`` then writes each linked file K times over (its
bytes repeated: the same compression, K times the size) to stand for a task K times larger. Prints and saves
``bench/results/results_zip-<N>x<K>.json``: bytes, wall and CPU of this process per way, us of CPU per image, the
longest activity, and the single pass extrapolated to ten million images (why the parts exist: the app's
``functionTimeout`` is 10 minutes an activity). The parts' combine here copies the deflated bytes through this
process (Azurite has no Put Block From URL); on Azure the service copies them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.control_plane import machine_facts, save_record, storage_for  # noqa: E402


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _container_of(store: Any, task_id: str) -> str:
    for container in store.service.list_containers():
        if next(iter(store.list_names(container.name, f"results/{task_id}/")), None):
            return str(container.name)
    raise SystemExit(f"the control-plane run left no results for {task_id}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from activities.results_zip import run_build
    from adapters import zip_parts
    from adapters.blobs import BlobStore, service_client
    from adapters.results_bundle import linked_blobs, write_zip
    from core import contracts as c
    from core.zipformat import part_inputs

    load = os.getloadavg()
    with storage_for(args.connection) as connection, tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "control_plane.json"
        done = subprocess.run([sys.executable, str(REPO / "bench" / "control_plane.py"), "--images", str(args.images),
                               "--images-per-shard", "10000", "--connection", connection,
                               "--out", str(record), *args.control_plane], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"bench/control_plane.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        store = BlobStore(service_client(connection))
        task = json.loads(record.read_text())["task_id"]
        container = _container_of(store, task)
        linked = linked_blobs(store, container, task)
        if args.copies > 1:
            for name in linked:
                body = store.read_bytes(container, name)
                store.write_bytes(container, name, body * args.copies)
            linked = linked_blobs(store, container, task)
        images = args.images * args.copies
        total = sum(f["size"] for f in linked.values())

        single, single_wall, single_cpu = _timed(lambda: write_zip(store, container, task))
        single_bytes = store.size_or_none(container, single["zip"])

        def parts_way() -> dict[str, Any]:
            walls: dict[str, float] = {}
            t = time.perf_counter()
            planned = run_build(store, container, task, args.part_bytes)
            walls["plan"] = time.perf_counter() - t

            def part(asked: c.ResultsZipPartInput) -> tuple[c.ResultsZipPartOutput, float]:
                start = time.perf_counter()
                return zip_parts.deflate_part(store, container, asked), time.perf_counter() - start

            t = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                made = list(pool.map(part, part_inputs(task, planned["plan"])))
            walls["parts"] = time.perf_counter() - t
            walls["longest_part"] = max(w for _, w in made)
            t = time.perf_counter()
            out = zip_parts.combine(store, container, c.ResultsZipCombineInput(
                task_id=task, plan=planned["plan"], parts=[p for p, _ in made]))
            walls["combine"] = time.perf_counter() - t
            t = time.perf_counter()
            zip_parts.clean_parts(store, container, task, planned["plan"].get("build", ""))
            walls["clean"] = time.perf_counter() - t
            return {"output": out, "parts": len(made), "walls_s": {k: round(v, 3) for k, v in walls.items()}}

        parts, parts_wall, parts_cpu = _timed(parts_way)
        with zipfile.ZipFile(io.BytesIO(store.read_bytes(container, parts["output"]["blob"]))) as zf:
            if zf.testzip() is not None or len(zf.namelist()) != len(linked):
                raise SystemExit("the parts' zip does not read back whole")
        per_image_single = single_cpu / images
        longest_parts = max(parts["walls_s"]["plan"], parts["walls_s"]["longest_part"], parts["walls_s"]["combine"])
        return {
            "images": images, "control_plane_images": args.images, "copies": args.copies, "files": len(linked),
            "files_bytes": total, "bytes_per_image": round(total / images, 1), "part_bytes": args.part_bytes,
            "workers": args.workers,
            "single": {"wall_s": round(single_wall, 3), "cpu_s": round(single_cpu, 3), "zip_bytes": single_bytes,
                       "cpu_us_per_image": round(per_image_single * 1e6, 2), "files": len(single["files"])},
            "parts": {"wall_s": round(parts_wall, 3), "cpu_s": round(parts_cpu, 3), "zip_bytes": parts["output"]["bytes"],
                      "cpu_us_per_image": round(parts_cpu / images * 1e6, 2), "parts": parts["parts"],
                      "walls_s": parts["walls_s"], "longest_activity_s": round(longest_parts, 3)},
            "single_wall_s_at_10M_extrapolated": round(single_wall / images * 10_000_000, 1),
            "note": "the single pass's wall scales with the bytes; the parts' longest activity with PART_BYTES "
                    "(and the combine, which Azure does server side)",
            "machine": machine_facts(load), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=20_000, help="images of the control-plane task that makes the files")
    p.add_argument("--copies", type=int, default=1, help="each file's bytes repeated this many times")
    p.add_argument("--part-bytes", type=int, default=0, help="default: adapters.zip_parts.PART_BYTES")
    p.add_argument("--workers", type=int, default=8, help="parts at a time (host.json maxConcurrentActivityFunctions)")
    p.add_argument("--connection", default="", help="an existing Azurite's connection string (default: start one)")
    p.add_argument("--out", default="")
    args, args.control_plane = p.parse_known_args(argv)  # the rest goes to bench/control_plane.py (e.g. its polls)
    if not args.part_bytes:
        from adapters.zip_parts import PART_BYTES
        args.part_bytes = PART_BYTES
    record = run(args)
    save_record(record, args.out, f"results_zip-{args.images}x{args.copies}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
