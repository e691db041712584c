"""Image-list existence check: ``python bench/image_list_check.py [--images 20000] [--per-folder 2000]``.

What it measures: the CPU this process spends (``time.process_time``: every thread of it, not Azurite's) to tell
which of a list part's names exist, and with which ETag, in the two ways ``activities.image_list`` has:

    heads     ``existing``: one HEAD request per name, ``HEAD_THREADS`` at a time (what every list part did before)
    listings  ``existing_sorted``: one delimiter listing per folder's run of names, HEADs for what no listing
              confirmed (the names not there, a name alone in its folder)

over the same names, sorted as a list part holds them: ``--listed-share`` of a container of ``--images`` zero-byte
blobs in folders of ``--per-folder`` (``bench/control_plane.py``'s names), plus ``--missing`` names that are not
there. Both ways must give the same answers (the run stops otherwise). Prints and saves
``bench/results/image_list_check-<N>.json``: CPU and wall per way, us of CPU per name, the requests each sent.
Why it matters: a list of ten million names was ten million HEADs (~1.5 ms of CPU each here: a third of the GPU time
the task represents at 250 img/s); issue 11's target for the whole control plane is 1 %.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.control_plane import image_names, machine_facts, save_record, storage_for, upload  # noqa: E402


class CountingStore:
    """A ``BlobStore`` that counts the HEADs and listing pages sent through it."""

    def __init__(self, store: Any) -> None:
        self.store, self.heads, self.pages = store, 0, 0

    def etag_or_none(self, container: str, name: str) -> str | None:
        self.heads += 1
        return self.store.etag_or_none(container, name)  # type: ignore[no-any-return]

    def iter_level_pages(self, container: str, prefix: str, page_size: int = 5000) -> Any:
        for page in self.store.iter_level_pages(container, prefix, page_size):
            self.pages += 1
            yield page


def run(args: argparse.Namespace) -> dict[str, Any]:
    from adapters.blobs import blob_store
    from activities.image_list import existing, existing_sorted

    with storage_for(args.connection) as connection:
        container = f"imagelist{args.images}"
        present = image_names(args.images, args.per_folder)
        upload_s = upload(connection, container, present)
        print(f"uploaded {args.images:,} blobs in {upload_s:.1f} s", flush=True)
        rng = random.Random(7)
        asked = rng.sample(present, int(len(present) * args.listed_share))
        asked += [name.replace("IMG_", "GONE_") for name in rng.sample(present, int(len(present) * args.missing))]
        asked.sort()
        ways = {"heads": existing, "listings": existing_sorted}
        load_before = os.getloadavg()
        results: dict[str, Any] = {}
        answers: dict[str, list[str | None]] = {}
        for name, way in ways.items():
            store = CountingStore(blob_store(connection))
            way(store, container, asked[:50])  # type: ignore[arg-type]  # warm: connections, imports
            store.heads = store.pages = 0
            cpu, wall = time.process_time(), time.monotonic()
            answers[name] = way(store, container, asked)  # type: ignore[arg-type]
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            results[name] = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                             "cpu_us_per_name": round(cpu / len(asked) * 1e6, 2), "heads": store.heads,
                             "listing_pages": store.pages, "found": sum(a is not None for a in answers[name])}
            print(f"{name:9s} {results[name]['cpu_us_per_name']:9.2f} us CPU/name  {store.heads:6d} HEADs "
                  f"{store.pages:5d} listing pages  wall {wall:.1f} s", flush=True)
        if answers["heads"] != answers["listings"]:
            raise SystemExit("the two ways disagree: a bug in existing_sorted")
    return {
        "images": args.images, "per_folder": args.per_folder, "names_asked": len(asked),
        "listed_share": args.listed_share, "missing": args.missing, "ways": results,
        "cpu_ratio_heads_to_listings": round(results["heads"]["cpu_s"] / max(results["listings"]["cpu_s"], 1e-9), 1),
        "upload_s": round(upload_s, 1),
        "machine": machine_facts(load_before),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=20_000, help="blobs in the container")
    p.add_argument("--per-folder", type=int, default=2000)
    p.add_argument("--listed-share", type=float, default=0.9, help="share of the container's blobs the list names")
    p.add_argument("--missing", type=float, default=0.01, help="names not in the container, as a share of it")
    p.add_argument("--connection", default="", help="an existing Azurite's connection string (default: start one)")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    record = run(args)
    save_record(record, args.out, f"image_list_check-{args.images}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
