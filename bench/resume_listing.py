"""What a resumed listing costs: ``python bench/resume_listing.py --images N --images-per-shard S [--preload]``.

What it measures: the storage requests and the CPU of a task's listing (the parallel enumeration's activities:
plan, list parts, sample, shard manifests, summary) the first time a key is listed, and again when the run is resumed
(a failed or terminated run posted again plainly, ``api.starters``: the same key listed again, its shard manifests
written again under the same shard ids). A resumed listing also reads, for each shard, the ETags the earlier listing
recorded (``activities.replaced_images``: one Get Blob a shard, a 404 on a first listing) and drops the earlier
results of the images whose ETag changed or is unknown, which then run again.

How (faithful to a resume, not the activities called by hand): devhost serves ``function_app.py`` in this process
over Azurite (``bench/control_plane.py``'s names and upload, or ``--preload``) with ``TRAPBATCH_CONFIRM_ABOVE_IMAGES``
1, so a run waits in stage ``awaiting_confirmation`` right after its listing and nothing else touches storage then.
``POST /api/tasks`` starts the first run; once it waits, it is terminated (``DevHost.terminate``, as an operator's
terminate) and the same request is posted again plainly, which resumes it (``"started": true``: a new run of the same
key, with its own run id, that replaces the terminated one); the second listing is measured up to its own wait.
``--resume-add K`` uploads K new images that sort before every other name before the resume (a relisting that moves
every shard's boundary names by K): each shard then finds the K names new to it in its neighbour's earlier ETags
(``activities.carried_results``, whose requests are counted apart too) and carries their earlier results, so only the
K added images run again (this benchmark's first run is terminated before its pool work, so there are none to copy,
unless ``--with-results``).
``--with-results`` writes, before the resume, each shard's attempt 1 results as its worker would have (a success for
every image of its manifest, ``write_results``; their requests are not counted) but the last shard's: a resumed
listing of a key whose results are present, where the carry and the coverage (``activities.shard_results
.earlier_coverage``) parse them and find those shards done. The last shard is left to run so that the resumed run
still waits for its confirmation (``orchestrations.task``: it counts the images still to run; with none it went on to
the merge and exports).

Counted at the HTTP transport (azure-core's ``RequestsTransport.send``: every attempt the pipeline sends, retries
included: azure-core 1.41 ``pipeline/_base.py``, ``_TransportRunner``, the pipeline's last node, calls the transport's
``send`` for each request the retry policies above it pass on), attributed to the activity whose invocation (or a
thread pool it submitted to) sent it, by kind: GET (Get Blob), HEAD (properties, exists), LIST (List Blobs,
``comp=list``), PUT (Put Blob, blocks, create container), DELETE; with the 404s among them and the bytes of the
answers' bodies (``Content-Length``). The ETags read (``drop_replaced_results``, per shard, or on a resumed listing
``etags_document_of`` before it) is counted apart, with its CPU (its thread's), and so are the requests of
``carry_moved_results``. CPU: this process's (``time.process_time``: devhost, the orchestrator replays, every
activity and the status poller; Azurite is another process) per 1,000 images of the listing, and the listing
activities' own (devhost's counters, their threads).

Record (printed, and saved to ``bench/results/resume_listing-<N>-<S>.json`` or ``--out``): ``first`` and ``resumed``,
each with ``requests`` (listing activities, by kind), ``requests_by_activity``, ``etags_read`` (shards, requests,
404s, bytes, CPU, per shard), ``carried`` (shards that looked for names new to them in their neighbours' earlier
ETags, the requests that took, and ``moved_images``: the names found there with the same ETag, whose earlier results
are carried, not run again), ``rerun_images`` (the names ``replaced`` finds in their shard less ``moved_images``:
they run again; 0 with nothing changed; images new since count too, while names moved into a shard no earlier
listing wrote are not counted, and run as well, having no results there), ``dropped_entries`` (result entries
removed), ``process_cpu_s_per_1000_images``, ``listing_activity_cpu_s_per_1000_images``; and
``resume_minus_first``: what the resume adds, per shard and per 1,000 images; ``shard_folder_listings`` (List Blobs
of one shard's folder, ``layout.shard_prefix``: in a resumed listing they are its readers' of the shard, drop, carry
and coverage, ``activities.shard_folders``), with ``per_shard``. Request counts are exact; CPU figures on a shared
machine are loose.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import inspect
import os
import sys
import threading
import time
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.control_plane import FUNCTION_KEY, image_names, machine_facts, save_record, upload  # noqa: E402

LISTING_ACTIVITIES = ("plan_listing", "list_images_part", "choose_sample", "write_shard_manifests",
                      "finish_enumeration")
ETAGS_READ = "etags_read"  # the tag of the requests drop_replaced_results sends
CARRIED = "carried_results"  # the tag of the requests carry_moved_results sends
SHARD_FOLDER = re.compile(r"(^|/)shards/s\d{5,}/$")  # a List Blobs of one shard's folder (layout.shard_prefix)


def request_kind(method: str, url: str) -> str:
    """The kind of a Blob service request: LIST (``comp=list``, a container's blobs or the account's containers),
    else its HTTP method (GET, HEAD, PUT, DELETE, ...)."""
    query = parse_qs(urlsplit(url).query)
    if method.upper() == "GET" and "list" in query.get("comp", []):
        return "LIST"
    return method.upper()


def shard_folder(url: str) -> str:
    """The shard folder a List Blobs request lists (its ``prefix`` is one shard's ``layout.shard_prefix``), else ""."""
    prefix = (parse_qs(urlsplit(url).query).get("prefix") or [""])[0]
    return prefix if SHARD_FOLDER.search(prefix) else ""


class RequestCounter:
    """Counts the HTTP requests this process sends, by the tag of the thread that sent them (the activity running in
    it, ``tagged``), and by kind; a thread pool's tasks carry their submitter's tag (``install``)."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()  # (tag, kind) -> requests
        self.not_found: Counter[tuple[str, str]] = Counter()
        self.bytes_in: Counter[tuple[str, str]] = Counter()  # answers' bodies (Content-Length)
        self.shard_folders: Counter[str] = Counter()  # List Blobs by shard folder listed (SHARD_FOLDER), any tag

    def tag(self) -> str:
        return getattr(self.local, "tag", "") or ""

    def tagged(self, tag: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` run with its requests counted under ``tag`` (the tag it ran under before, after)."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = self.tag()
            self.local.tag = tag
            try:
                return fn(*args, **kwargs)
            finally:
                self.local.tag = before
        return wrapper

    def record(self, tag: str, kind: str, status: int, length: int, folder: str = "") -> None:
        with self.lock:
            if folder:
                self.shard_folders[folder] += 1
            self.counts[(tag, kind)] += 1
            if status == 404:
                self.not_found[(tag, kind)] += 1
            self.bytes_in[(tag, kind)] += length

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.not_found.clear()
            self.bytes_in.clear()
            self.shard_folders.clear()

    def install(self) -> None:
        from azure.core.pipeline.transport import RequestsTransport

        counter = self
        send = RequestsTransport.send

        def counted_send(transport: Any, request: Any, **kwargs: Any) -> Any:
            response = send(transport, request, **kwargs)
            try:
                length = int(response.headers.get("Content-Length") or 0)
            except (TypeError, ValueError):
                length = 0
            kind = request_kind(request.method, request.url)
            counter.record(counter.tag(), kind, response.status_code, length,
                           shard_folder(request.url) if kind == "LIST" else "")
            return response

        setattr(RequestsTransport, "send", counted_send)
        submit = concurrent.futures.ThreadPoolExecutor.submit

        def submit_tagged(pool: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            tag = counter.tag()
            return submit(pool, counter.tagged(tag, fn) if tag else fn, *args, **kwargs)

        setattr(concurrent.futures.ThreadPoolExecutor, "submit", submit_tagged)

    def by_kind(self, tags: tuple[str, ...]) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (tag, kind), n in self.counts.items():
            if tag in tags:
                out[kind] += n
        return dict(sorted(out.items()))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            tags = sorted({t for t, _ in self.counts})
            return {
                "by_tag": {t or "(untagged: devhost, HTTP functions)": {k: n for (tt, k), n in
                                                                         sorted(self.counts.items()) if tt == t}
                           for t in tags},
                "not_found": {f"{t}/{k}": n for (t, k), n in sorted(self.not_found.items())},
                "bytes_in": {f"{t}/{k}": n for (t, k), n in sorted(self.bytes_in.items())},
            }


class EtagsReads:
    """Per listing: how many shards ``drop_replaced_results`` compared, the CPU it took (its thread's), how many
    images it found replaced (``replaced``: their earlier results go, they run again) and entries it removed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.shards = self.rerun_images = self.dropped_entries = self.without_earlier = 0
        self.carry_shards = self.moved_images = self.moved_counted = 0
        self.cpu_s = 0.0

    def install(self, counter: RequestCounter) -> None:
        from activities import carried_results
        from activities import enumerate as enumeration
        from activities import replaced_images

        drop = getattr(enumeration, "drop_replaced_results")  # the name run_write_shards calls
        replaced = replaced_images.replaced
        earlier = replaced_images.earlier_etags
        reads = self

        def timed_drop(*args: Any, **kwargs: Any) -> int:
            cpu = time.thread_time()
            try:
                removed = int(counter.tagged(ETAGS_READ, drop)(*args, **kwargs))
            finally:
                with reads.lock:
                    reads.shards += 1
                    reads.cpu_s += time.thread_time() - cpu
            with reads.lock:
                reads.dropped_entries += removed
            return removed

        def counted_replaced(*args: Any, **kwargs: Any) -> set[str]:
            stale: set[str] = replaced(*args, **kwargs)
            with reads.lock:
                reads.rerun_images += len(stale)
            return stale

        def counted_earlier(*args: Any, **kwargs: Any) -> Any:
            found = earlier(*args, **kwargs)
            if found is None:
                with reads.lock:
                    reads.without_earlier += 1
            return found

        carry = getattr(enumeration, "carry_moved_results")  # the names run_write_shards calls
        read_doc = getattr(enumeration, "etags_document_of")  # a resumed listing reads the ETags here, drop after
        found_in = getattr(carried_results, "_found_in_neighbours")  # looked up by carry_moved_results at each call

        def counted_carry(*args: Any, **kwargs: Any) -> int:
            with reads.lock:
                reads.carry_shards += 1
            return int(counter.tagged(CARRIED, carry)(*args, **kwargs))

        def counted_found(*args: Any, **kwargs: Any) -> dict[int, list[str]]:
            found: dict[int, list[str]] = found_in(*args, **kwargs)
            moved = sum(len(names) for names in found.values())
            with reads.lock:
                reads.moved_images += moved
                if args[5] is not None:  # ``own``: the shard had earlier ETags, so ``replaced`` counted them
                    reads.moved_counted += moved
            return found

        setattr(enumeration, "carry_moved_results", counted_carry)
        def timed_read(*args: Any, **kwargs: Any) -> Any:
            cpu = time.thread_time()
            try:
                return counter.tagged(ETAGS_READ, read_doc)(*args, **kwargs)
            finally:
                with reads.lock:
                    reads.cpu_s += time.thread_time() - cpu

        setattr(enumeration, "etags_document_of", timed_read)
        setattr(carried_results, "_found_in_neighbours", counted_found)
        setattr(enumeration, "drop_replaced_results", timed_drop)
        replaced_images.replaced = counted_replaced  # looked up by drop_replaced_results at each call
        replaced_images.earlier_etags = counted_earlier


def per_shard(value: float, shards: int) -> float | None:
    return round(value / shards, 3) if shards else None


def listing_figures(counter: RequestCounter, reads: EtagsReads, images: int, shards: int, process_cpu_s: float,
                    activity_cpu: dict[str, float], wall_s: float) -> dict[str, Any]:
    """One listing's record (module doc)."""
    snap = counter.snapshot()
    etags = {k: n for (t, k), n in counter.counts.items() if t == ETAGS_READ}
    etags_404 = sum(n for (t, _), n in counter.not_found.items() if t == ETAGS_READ)
    etags_bytes = sum(n for (t, _), n in counter.bytes_in.items() if t == ETAGS_READ)
    carried = {k: n for (t, k), n in counter.counts.items() if t == CARRIED}
    carried_bytes = sum(n for (t, _), n in counter.bytes_in.items() if t == CARRIED)
    listing_cpu = sum(activity_cpu.get(a, 0.0) for a in LISTING_ACTIVITIES)
    thousands = images / 1000 if images else 1
    return {
        "images": images, "shards": shards, "wall_s": round(wall_s, 2),
        "requests": counter.by_kind(LISTING_ACTIVITIES + (ETAGS_READ, CARRIED)),
        "requests_total": sum(counter.by_kind(LISTING_ACTIVITIES + (ETAGS_READ, CARRIED)).values()),
        "requests_by_activity": snap["by_tag"], "not_found": snap["not_found"], "bytes_in": snap["bytes_in"],
        "etags_read": {"shards": reads.shards, "shards_without_earlier_etags": reads.without_earlier,
                       "requests": dict(sorted(etags.items())), "not_found": etags_404, "bytes_in": etags_bytes,
                       "cpu_s": round(reads.cpu_s, 4),
                       "requests_per_shard": per_shard(sum(etags.values()), reads.shards),
                       "bytes_per_shard": per_shard(etags_bytes, reads.shards),
                       "cpu_ms_per_shard": per_shard(reads.cpu_s * 1000, reads.shards)},
        "carried": {"shards": reads.carry_shards, "requests": dict(sorted(carried.items())),
                    "bytes_in": carried_bytes, "moved_images": reads.moved_images},
        "rerun_images": reads.rerun_images - reads.moved_counted, "dropped_entries": reads.dropped_entries,
        "shard_folder_listings": {"requests": sum(counter.shard_folders.values()),
                                  "folders": len(counter.shard_folders),
                                  "per_shard": per_shard(sum(counter.shard_folders.values()), shards),
                                  "most_of_one_folder": max(counter.shard_folders.values(), default=0)},
        "process_cpu_s": round(process_cpu_s, 3),
        "process_cpu_s_per_1000_images": round(process_cpu_s / thousands, 4),
        "listing_activity_cpu_s": round(listing_cpu, 3),
        "listing_activity_cpu_s_per_1000_images": round(listing_cpu / thousands, 4),
        "activity_cpu_s": {k: round(v, 3) for k, v in sorted(activity_cpu.items(), key=lambda kv: -kv[1]) if v},
    }


def difference(first: dict[str, Any], resumed: dict[str, Any]) -> dict[str, Any]:
    """What the resumed listing adds over the first: requests by kind, and per shard and per 1,000 images."""
    kinds = sorted(set(first["requests"]) | set(resumed["requests"]))
    extra = {k: resumed["requests"].get(k, 0) - first["requests"].get(k, 0) for k in kinds}
    shards, thousands = resumed["shards"] or 1, (resumed["images"] or 1) / 1000
    total = sum(extra.values())
    return {"requests": extra, "requests_total": total, "requests_per_shard": round(total / shards, 3),
            "requests_per_1000_images": round(total / thousands, 3),
            "etags_bytes_per_shard": resumed["etags_read"]["bytes_per_shard"],
            "etags_cpu_ms_per_shard": resumed["etags_read"]["cpu_ms_per_shard"],
            "process_cpu_s_per_1000_images": round(resumed["process_cpu_s_per_1000_images"]
                                                   - first["process_cpu_s_per_1000_images"], 4),
            "listing_activity_cpu_s_per_1000_images": round(resumed["listing_activity_cpu_s_per_1000_images"]
                                                            - first["listing_activity_cpu_s_per_1000_images"], 4)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devhost.azurite import start_azurite

    if args.preload:
        from bench.preloaded_azurite import start_preloaded_azurite

        azurite: Any = start_preloaded_azurite()
    else:
        azurite = start_azurite()
    connection = azurite.connection_string
    try:
        return _run(args, azurite, connection)
    finally:
        azurite.stop()


def _run(args: argparse.Namespace, azurite: Any, connection: str) -> dict[str, Any]:
    container = f"resume{args.images}"
    names = image_names(args.images, args.images_per_folder)
    if args.preload:
        upload_s = azurite.preload(upload, container, names)
    else:
        upload_s = upload(connection, container, names)
    print(f"created {len(names):,} blobs in {upload_s:.1f} s", flush=True)
    os.environ.update({
        "AzureWebJobsStorage": connection, "TRAPBATCH_POOL": "simulated", "TRAPBATCH_CONTAINER": f"state{args.images}",
        "TRAPBATCH_MODEL": "MDV5A", "TRAPBATCH_CONFIRM_ABOVE_IMAGES": "1",  # each run waits after its listing
    })
    counter, reads = RequestCounter(), EtagsReads()
    counter.install()
    reads.install(counter)
    import requests

    import function_app
    from devhost.host import DevHost

    host = DevHost(function_app.app, connection, task_hub=f"resume{args.images}", port=0, blob_poll_s=30,
                   activity_workers=args.activity_workers, function_key=FUNCTION_KEY)
    for name, (fn, param) in list(host.index.activities.items()):
        if not inspect.iscoroutinefunction(fn):  # devhost runs an async one on its loop: left untagged
            host.index.activities[name] = (counter.tagged(name, fn), param)
    load_before = os.getloadavg()
    host.start()
    headers = {"x-functions-key": FUNCTION_KEY}
    body = {"container": container, "images_per_shard": args.images_per_shard, "model": "MDV5A",
            "request_name": f"resume benchmark {args.images}"}

    def status(task_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{host.base_url}/api/tasks/{task_id}", headers=headers, timeout=120).json())

    def listing(sizes: tuple[int, int] | None = None) -> tuple[str, dict[str, Any]]:
        """One listing's figures; ``sizes``: its (images, shards) where the status shows only those still to run
        (``--with-results``: the waiting status counts the work, ``orchestrations.task``)."""
        counter.reset()
        reads.reset()
        activity_before = dict(host.engine.metrics.snapshot()["activities"])
        cpu, t0 = time.process_time(), time.perf_counter()
        r = requests.post(f"{host.base_url}/api/tasks", json=body, headers=headers, timeout=120)
        r.raise_for_status()
        if not r.json().get("started"):
            raise SystemExit(f"the post did not start a run: {r.json()}")
        task_id = str(r.json()["id"])
        deadline = time.perf_counter() + args.timeout_s
        while True:
            st = status(task_id)
            listed = any(t == "finish_enumeration" for t, _ in list(counter.counts))  # this run's summary written
            if st.get("stage") == "awaiting_confirmation" and st.get("runtime_status") == "Running" and listed:
                break
            if st.get("runtime_status") in ("Completed", "Failed"):
                raise SystemExit(f"the run ended before its confirmation wait: {st}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the listing did not end within {args.timeout_s} s: {st}")
            time.sleep(args.status_interval)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
        after = host.engine.metrics.snapshot()["activities"]
        activity_cpu = {k: v["cpu_s"] - (activity_before.get(k) or {}).get("cpu_s", 0.0) for k, v in after.items()}
        images, shards = sizes or (int(st.get("images") or 0), int(st.get("shards") or 0))
        figures = listing_figures(counter, reads, images, shards, cpu, activity_cpu, wall)
        return task_id, figures

    try:
        task_id, first = listing()
        print(f"first listing: {first['requests']} etags read {first['etags_read']['requests']}", flush=True)
        host.terminate(task_id, "resume benchmark: terminated after its listing")
        deadline = time.perf_counter() + 120
        while status(task_id).get("runtime_status") != "Terminated":
            if time.perf_counter() > deadline:
                raise TimeoutError("the first run was not terminated within 120 s")
            time.sleep(0.2)
        results = write_results(connection, f"state{args.images}") if args.with_results else 0
        added: list[str] = []
        if args.resume_add:
            added = [f"0000new/IMG_{i:07d}.JPG" for i in range(args.resume_add)]  # before every other name
            upload(connection, container, added)
        total = first["images"] + len(added)
        _, resumed = listing((total, -(-total // args.images_per_shard)) if args.with_results else None)
        resumed["results_written"] = results
        print(f"resumed listing: {resumed['requests']} etags read {resumed['etags_read']['requests']}, "
              f"carried {resumed['carried']['requests']} ({resumed['carried']['moved_images']} images found in a "
              f"neighbour's earlier ETags: their results, where any, carried), rerun images {resumed['rerun_images']}",
              flush=True)
    finally:
        host.stop()
    return {
        "images": args.images, "images_per_shard": args.images_per_shard, "resume_add": args.resume_add,
        "with_results": bool(args.with_results),
        "how": "devhost + Azurite: POST /api/tasks, wait in awaiting_confirmation (TRAPBATCH_CONFIRM_ABOVE_IMAGES=1), "
               "terminate, POST the same request plainly (a resume: same key, new run id), wait again",
        "first": first, "resumed": resumed, "resume_minus_first": difference(first, resumed),
        "upload_s": round(upload_s, 1), "preloaded": bool(args.preload),
        "machine": machine_facts(load_before),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(connection: str, container: str) -> int:
    """Write each shard's attempt 1 results as its worker would have (a success, no detection, for every image of the
    shard's attempt 1 manifest) but the last shard's (module doc), in parallel; returns how many shards got them. Not
    counted: the counter is reset when the resumed listing starts."""
    from adapters.blobs import BlobStore, service_client
    from gpu_batch import layout

    store = BlobStore(service_client(connection))
    manifests = [n for n in store.list_names(container, "tasks/") if n.endswith("/attempt-1.json") and "/shards/" in n]
    manifests = sorted(manifests)[:-1]  # the last shard runs: the resumed run waits for its confirmation

    def write(name: str) -> None:
        manifest = store.read_json(container, name)
        entries = [{"file": f, "max_detection_conf": 0.0, "detections": []} for f in manifest["images"]]
        store.write_compact_json(container, layout.attempt_results_blob(manifest["task_id"], manifest["shard_id"], 1),
                                 {"images": entries, "info": {"trapbatch": {"task_id": manifest["task_id"],
                                                                            "shard_id": manifest["shard_id"],
                                                                            "attempt": 1}}})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(write, manifests))
    print(f"wrote attempt 1 results of {len(manifests):,} shards", flush=True)
    return len(manifests)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--images-per-shard", type=int, default=20)
    p.add_argument("--images-per-folder", type=int, default=2000)
    p.add_argument("--activity-workers", type=int, default=8)
    p.add_argument("--status-interval", type=float, default=0.25)
    p.add_argument("--timeout-s", type=float, default=1800.0)
    p.add_argument("--preload", action="store_true",
                   help="create the blobs inside Azurite (bench/preloaded_azurite.py; every blob then has the same "
                        "ETag, which the comparison does not mind)")
    p.add_argument("--resume-add", type=int, default=0, metavar="K",
                   help="before the resume, add K images that sort before all others (every shard boundary moves)")
    p.add_argument("--with-results", action="store_true",
                   help="before the resume, write every shard's attempt 1 results but the last's (a success for each "
                        "image): a resumed listing of a key with results present")
    p.add_argument("--out", default="", help="default bench/results/resume_listing-<N>-<S>[-addK][-results].json")
    args = p.parse_args(argv)
    record = run(args)
    summary = {"first": {k: record["first"][k] for k in ("images", "shards", "requests", "etags_read", "rerun_images",
                                                          "process_cpu_s_per_1000_images",
                                                          "listing_activity_cpu_s_per_1000_images")},
               "resumed": {k: record["resumed"][k] for k in ("images", "shards", "requests", "etags_read",
                                                              "carried", "rerun_images", "dropped_entries",
                                                              "shard_folder_listings", "wall_s",
                                                              "process_cpu_s_per_1000_images",
                                                              "listing_activity_cpu_s_per_1000_images")},
               "resume_minus_first": record["resume_minus_first"]}
    name = f"resume_listing-{args.images}-{args.images_per_shard}" + (f"-add{args.resume_add}"
                                                                      if args.resume_add else "") + (
        "-results" if args.with_results else "") + ".json"
    save_record(record, args.out, name, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
