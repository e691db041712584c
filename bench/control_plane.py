"""Control-plane benchmark: ``python bench/control_plane.py --images N --images-per-shard S [--failure-rate F]``.

What it measures: everything trapbatch's Functions app does for a task of N images *except detection*: enumeration,
orchestration (task, shard groups), pool submissions and polls, resubmissions, the merge with its repeat search,
previews, and the status API while all that runs. The detector is replaced by ``gpu_batch.pool.simulated``
(``TRAPBATCH_POOL=simulated``, benchmark only), which completes each shard task at once with seeded synthetic
detections, so the figures are the control plane's alone.

How: Azurite (in memory, or ``--connection`` to an existing one) holds N real, zero-byte blobs (``--image-list``: and
a list naming every one of them, which the task starts from instead of a listing of the container) (only names matter to
the control plane) in camera folders (``site<s>/cam<c>/IMG_<i>.JPG``, ``--images-per-folder`` each); devhost serves
``function_app.py`` in this process; the task starts with ``POST /api/tasks`` and ``GET /api/tasks/{id}`` is polled
every ``--status-interval`` seconds until it ends. devhost's counters (``devhost.metrics``) give CPU per orchestrator
and activity, activity wall times and history events per instance.

Record (printed, and saved to ``bench/results/control_plane-<N>.json`` or ``--out``):

    wall_s                          POST to the final status
    orchestrator_cpu_s              CPU of every orchestrator replay (all instances, all episodes)
    activity_cpu_s                  CPU of every activity body (their invocation threads)
    control_plane_cpu_share_of_gpu  (orchestrator + activity CPU) / (N / 250 img/s): the share of the GPU time the task
                                    represents that the control plane costs
    max_history_events_per_instance the most history events one instance held in one execution (generation)
    max_activity_s                  the longest activity invocation (wall), and which one (max_activity)
    status_p99_s                    99th percentile latency of GET /api/tasks/{id} during the run (also p50, max)
    enumerate_s                     time in stage "enumerating" (from the polled statuses)
    merge_s                         time in stage "merging" (from the polled statuses; 0 if no poll saw it, then see
                                    ``functions``)
    repeat_search_s                 the repeat search: wall time of the fan-in's search_repeats + rank_repeats
                                    activities (summed over parallel calls), plus time inside RepeatFinder if the
                                    single-pass merge ran (repeat_search_cpu_s: the CPU of that time)
    functions                       per orchestrator and activity: calls, cpu_s, wall_s, max_wall_s
    peak_rss_mb                     this process's high-water mark (devhost, every activity, the poller, the names)
    activity_rss_growth_mb          with ``--activity-workers 1`` only: per activity, the most one call raised the
                                    process's resident memory above its level at the call's start (sampled every
                                    0.25 s): what an activity holds, which an Azure instance holds up to 8 times
    activity_heap_mb                with ``--activity-workers 1 --trace-memory`` only: per activity, the most one
                                    call raised the Python heap (tracemalloc) above its level when the call before
                                    ended; slows the run, so its CPU figures are not comparable
    activity_scratch_mb             with ``--activity-workers 1`` only: per activity, the most local disk one call's
                                    temporary files held at once (``devhost.scratch_disk``, exact; ``core.scratch``:
                                    a Flex Consumption instance has 0.8 GB for the up to 8 activities it runs)
    machine                         CPUs, load average before and after (this machine is shared), Python, git commit

Full size past Azurite's PUT rate (``--preload``): Azurite's PUTs slow down in proportion to the blobs it holds
(``bench/azurite_puts.py``), so a million blobs cannot be uploaded here; ``--preload`` has Azurite create them in one
batch and answers its lookups and listings at a cost that does not grow with the account
(``bench/preloaded_azurite.py``, ``bench/azurite_preloaded_blob.js``; same answers, checked against the stock
azurite-blob by ``tests/integration/test_preloaded_azurite.py``). The task then runs at full size: ``--images 1000000
--preload`` measures a million images' CPU, activity times and history, with no scale model.

Scale model (``--shape-of M``): the same run over N images, with every per-activity and per-shard size divided by
M / N (images per shard, per merge part, per listing call and page, per shard write, per folder, repeat-search
detections per group; counts such as shards per group, tasks in flight and the history threshold unchanged), so the
orchestration has the shape it would have at M images: as many shards, shard groups, listing, merge, search and
export activities, and as many history events per instance. What such a run measures at M's shape: history events per
instance, instances, status latency while it runs and how the orchestrations pace themselves. What it does NOT
measure: CPU or wall time per image or per activity at M (its per-shard and per-call overheads weigh M / N times more
per image than they would); those come from full-size runs. The record says ``"shape_of": M``.

The figures change with other work on the merge, the repeat search and the polls; rerun the same command to compare.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import tracemalloc
import time
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GPU_IMAGES_PER_S = 250.0  # the GPU throughput the control plane's cost is compared with (issue 11)
FUNCTION_KEY = "control-plane-benchmark-key"


def image_names(n: int, per_folder: int, cams_per_site: int = 10) -> list[str]:
    names = []
    for i in range(n):
        folder = i // per_folder
        names.append(f"site{folder // cams_per_site:03d}/cam{folder % cams_per_site:02d}/IMG_{i:08d}.JPG")
    return names


def upload(connection: str, container: str, names: list[str], concurrency: int = 64) -> float:
    """Create ``names`` as zero-byte blobs: plain PUTs with one container SAS over aiohttp, many at once (the SDK's
    per-call overhead made this the slowest part of a large run)."""
    import asyncio
    from datetime import datetime, timedelta, timezone
    from urllib.parse import quote

    import aiohttp
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    service = BlobServiceClient.from_connection_string(connection)
    try:
        service.create_container(container)
    except Exception:  # noqa: BLE001 - exists already
        pass
    sas = generate_container_sas(str(service.account_name), container, account_key=service.credential.account_key,
                                 permission=ContainerSasPermissions(write=True, create=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=12))
    base = service.url.rstrip("/") + "/" + container + "/"
    headers = {"x-ms-blob-type": "BlockBlob", "Content-Length": "0"}

    async def put_all() -> None:
        queue = iter(names)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def worker() -> None:
                for name in queue:
                    for attempt in range(5):
                        async with session.put(base + quote(name) + "?" + sas, data=b"", headers=headers) as resp:
                            if resp.status == 201:
                                break
                            if attempt == 4:
                                raise RuntimeError(f"upload of {name} failed: {resp.status} {await resp.text()}")
                        await asyncio.sleep(0.5)
            await asyncio.gather(*(worker() for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(put_all())
    return time.perf_counter() - started


class RepeatTimer:
    """Time spent in ``core.repeats.RepeatFinder`` (``add`` and ``result``), wrapped for this process only."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # the calling threads' CPU: steadier than wall time on a shared machine
        self._lock = threading.Lock()

    def install(self) -> bool:
        try:
            from core import repeats
        except ImportError:
            return False
        finder = getattr(repeats, "RepeatFinder", None)
        if finder is None:
            return False
        for attr in ("add", "result"):
            original = getattr(finder, attr, None)
            if original is not None:
                setattr(finder, attr, self._timed(original))
        return True

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - started
                    self.cpu_seconds += time.thread_time() - cpu
        return wrapper


class ActivityMemory(threading.Thread):
    """How far this process's resident memory rose above its level at each activity call's start, per activity (the
    most of any call), from samples every ``interval`` s. Only meaningful with one activity at a time
    (``--activity-workers 1``): with several, a rise belongs to whichever ran beside it too."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (perf_counter, RSS in MB)
        self.calls: list[tuple[float, float, str]] = []  # (start, end, activity)
        self.stop = threading.Event()
        from devhost.scratch_disk import ScratchDisk

        self.scratch = ScratchDisk()
        self.scratch_peaks: dict[str, int] = {}
        self.heap_peaks: dict[str, int] = {}
        self.heap_base = 0

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter(), self.rss_mb()))
            self.stop.wait(self.interval)

    def watch(self, metrics: Any) -> None:
        """Note each activity call's window from devhost's counters (called when a call ends, with its wall time),
        and the peak of its scratch files (``devhost.scratch_disk``: one activity at a time, so the peak since the
        last call's end is this call's)."""
        record = metrics.activity

        def activity(name: str, cpu_s: float, wall_s: float) -> None:
            now = time.perf_counter()
            self.calls.append((now - wall_s, now, name))
            peak = self.scratch.take_peak()
            self.scratch_peaks[name] = max(self.scratch_peaks.get(name, 0), peak)
            if tracemalloc.is_tracing():  # --trace-memory: the Python heap's peak above its level after the last call
                _, top = tracemalloc.get_traced_memory()
                self.heap_peaks[name] = max(self.heap_peaks.get(name, 0), top - self.heap_base)
                tracemalloc.reset_peak()
                self.heap_base = tracemalloc.get_traced_memory()[0]
            record(name, cpu_s, wall_s)
        metrics.activity = activity

    def heap_mb(self) -> dict[str, float] | None:
        """Per activity, the most one call raised the Python heap (``tracemalloc``: every allocation made through
        Python's allocators, exact, with orchestrator replays and the status poller beside it) above its level when
        the call before ended: what an instance, 2 GB for up to 8 activities, holds for it."""
        if not self.heap_peaks:
            return None
        return {name: round(peak / 1e6, 1) for name, peak in sorted(self.heap_peaks.items(), key=lambda kv: -kv[1])}

    def scratch_mb(self) -> dict[str, float]:
        """Per activity, the most local disk one call's temporary files held at once (``core.scratch``: an Azure
        instance has 0.8 GB for all the activities it runs)."""
        return {name: round(peak / 1e6, 2) for name, peak in
                sorted(self.scratch_peaks.items(), key=lambda kv: -kv[1]) if peak}

    def growth_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for start, end, name in self.calls:
            before = [mb for t, mb in self.samples if t <= start]
            # and the first sample after the call: a call shorter than a sample's interval is seen by that one
            inside = [mb for t, mb in self.samples if start <= t <= end + self.interval]
            if before and inside:
                out[name] = round(max(out.get(name, 0.0), max(inside) - before[-1]), 1)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class StatusPoller(threading.Thread):
    """GET /api/tasks/{id} every ``interval`` s: each call's latency, and when each stage was first seen."""

    def __init__(self, base: str, task_id: str, interval: float, t0: float) -> None:
        super().__init__(daemon=True)
        import requests

        self.session = requests.Session()
        self.session.headers["x-functions-key"] = FUNCTION_KEY
        self.url = f"{base}/api/tasks/{task_id}"
        self.interval = interval
        self.t0 = t0
        self.latencies: list[float] = []
        self.timeline: list[tuple[float, float, str]] = []  # (seconds since start, latency, stage it answered)
        self.stages: dict[str, float] = {}
        self.last: dict[str, Any] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.perf_counter()
            try:
                status = self.session.get(self.url, timeout=120).json()
            except Exception as exc:  # noqa: BLE001 - a failed status call is recorded as such
                status = {"error": str(exc)}
            now = time.perf_counter()
            self.latencies.append(now - started)
            stage = status.get("stage")
            self.timeline.append((round(started - self.t0, 3), round(now - started, 4), str(stage or "error")))
            if stage and stage not in self.stages:
                self.stages[stage] = now - self.t0
            self.last = status
            if status.get("runtime_status") in ("Completed", "Failed", "Terminated"):
                self.done.set()
                return
            self.done.wait(self.interval)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _stage_span(stages: dict[str, float], start: str, ends: tuple[str, ...], t_start: float = 0.0) -> float:
    begin = stages.get(start, t_start if start == "enumerating" else None)
    end = min((stages[s] for s in ends if s in stages), default=None)
    return round(end - begin, 3) if begin is not None and end is not None else 0.0


@contextlib.contextmanager
def storage_for(connection: str) -> Iterator[str]:
    """``connection``, or when it is empty a fresh Azurite's (``devhost.azurite``), stopped at the end: the smaller
    benchmarks' storage (``bench/listing.py``, ``bench/image_list_check.py``)."""
    if connection:
        yield connection
        return
    from devhost.azurite import start_azurite

    azurite = start_azurite()
    try:
        yield azurite.connection_string
    finally:
        azurite.stop()


def machine_facts(load_before: tuple[float, ...] | list[float]) -> dict[str, Any]:
    """Where a small benchmark ran (``bench/listing.py``, ``bench/image_list_check.py``): cores, load before and
    after, Python, the commit, the storage."""
    return {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "git_commit": _git_commit(), "storage": "Azurite"}


def save_record(record: dict[str, Any], out_arg: str, default_name: str, summary: Any = None) -> Path:
    """Write a benchmark's record to ``out_arg`` (else ``bench/results/<default_name>``) and print ``summary`` (the
    record without its machine facts by default) and where it went: every benchmark's ending."""
    out = Path(out_arg) if out_arg else REPO / "bench" / "results" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "machine"} if summary is None else summary, indent=1))
    print(f"saved {out}")
    return out


IMAGE_LIST = "lists/control-plane.csv"


def write_image_list(connection: str, container: str, names: list[str], kind: str = "site") -> str:
    """An image list naming every one of ``names`` in ``container``: a path column, and with ``site`` a ``site``
    column (each image's folder, which the exports carry as the location), with ``gps`` also each image's own
    latitude and longitude (a camera's GPS, a few metres apart from image to image), with ``captures`` the seed's
    captures columns (bursts of three); returns its blob name."""
    from azure.storage.blob import BlobServiceClient

    if kind == "gps":
        rows = ["path,site,latitude,longitude", *(f"{name},{name.rsplit('/', 1)[0]},-2.{i % 997:04d},34.{i % 991:04d}"
                                                   for i, name in enumerate(names))]
    elif kind == "site":
        rows = ["path,site", *(f"{name},{name.rsplit('/', 1)[0]}" for name in names)]
    elif kind == "captures":  # the seed's captures file: bursts of three neighbours, the Zooniverse subjects
        rows = ["path,season,site,roll,capture,image",
                *(f"{name},S1,{name.rsplit('/', 1)[0]},1,{i // 3},{i % 3 + 1}" for i, name in enumerate(names))]
    else:
        rows = ["path", *names]
    data = ("\n".join(rows) + "\n").encode("utf-8")
    BlobServiceClient.from_connection_string(connection).get_blob_client(container, IMAGE_LIST).upload_blob(
        data, overwrite=True)
    return IMAGE_LIST


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def scale_model(args: argparse.Namespace) -> dict[str, Any]:
    """The sizes a run over ``args.images`` uses to have the orchestration shape of ``args.shape_of`` images (see the
    module doc); without ``--shape-of``, the request's and the production defaults unchanged. ``--images-per-shard``
    and ``--images-per-folder`` are sizes at ``shape_of``'s scale."""
    from core.settings import OrchestrationKnobs
    from core.shards import REUSE_IMAGES_PER_CALL, ListingLimits

    scale = (args.shape_of / args.images) if args.shape_of else 1.0
    if scale < 1:
        raise SystemExit(f"--shape-of {args.shape_of} is smaller than --images {args.images}")

    def down(size: int) -> int:
        return max(1, round(size / scale))

    knobs, limits = OrchestrationKnobs(), ListingLimits()
    listing = {"names_per_call": down(limits.names_per_call), "images_per_write": down(limits.images_per_write),
               "page_size": min(limits.page_size, down(limits.page_size)), "plan_items": limits.plan_items,
               "max_units": limits.max_units, "expand_below": limits.expand_below}
    env = {} if not args.shape_of else {
        "TRAPBATCH_MERGE_IMAGES_PER_PART": str(down(knobs.merge_images_per_part)),
        "TRAPBATCH_REPEAT_SEARCH_DETECTIONS_PER_GROUP": str(down(knobs.repeat_search_detections_per_group)),
        # a folder is left out of the search at the same share of the cap as at full size
        "TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS": str(down(knobs.repeat_max_folder_detections)),
        # an only_new re-run's reuse step: as many calls as at full size
        "TRAPBATCH_REUSE_IMAGES_PER_CALL": str(down(REUSE_IMAGES_PER_CALL)),
    }
    return {"scale": scale, "images_per_shard": down(args.images_per_shard),
            "images_per_folder": down(args.images_per_folder), "env": env,
            "listing": listing if args.shape_of else None}


def _install_listing_limits(listing: dict[str, int] | None) -> None:
    """Benchmark only: the scale model's listing sizes as the plan's defaults (production always plans with
    ``ListingLimits()``; the plan records its limits, so every later listing call follows them)."""
    if not listing:
        return
    from activities import enumerate as enumeration
    from core.shards import ListingLimits

    index = limits_default_index()
    defaults = list(enumeration.run_plan_listing.__defaults__ or ())
    defaults[index] = ListingLimits(**listing)
    enumeration.run_plan_listing.__defaults__ = tuple(defaults)


def limits_default_index() -> int:
    """Where ``run_plan_listing``'s ``limits`` default sits among its defaults (found by name, so a parameter added
    after it does not break the benchmark)."""
    import inspect

    from activities import enumerate as enumeration
    from core.shards import ListingLimits

    names = list(inspect.signature(enumeration.run_plan_listing).parameters)
    defaults = enumeration.run_plan_listing.__defaults__ or ()
    index = names.index("limits") - (len(names) - len(defaults)) if "limits" in names else -1
    if not 0 <= index < len(defaults) or not isinstance(defaults[index], ListingLimits):
        raise SystemExit("activities.enumerate.run_plan_listing no longer has a `limits` default: update the benchmark")
    return index


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devhost.azurite import start_azurite

    azurite = None
    connection = args.connection
    if args.preload and connection:
        raise SystemExit("--preload starts its own Azurite: leave out --connection")
    if not connection:
        if args.preload:
            from bench.preloaded_azurite import start_preloaded_azurite

            azurite = start_preloaded_azurite()
        else:
            azurite = start_azurite()
        connection = azurite.connection_string
    load_before = os.getloadavg()
    container = f"bench{args.images}"
    shape = scale_model(args)
    names = image_names(args.images, shape["images_per_folder"])
    if args.preload:
        upload_s = azurite.preload(upload, container, names)
        print(f"preloaded {len(names):,} blobs in {upload_s:.1f} s", flush=True)
    else:
        upload_s = upload(connection, container, names)
        print(f"uploaded {len(names):,} blobs in {upload_s:.1f} s", flush=True)

    os.environ.update({
        "AzureWebJobsStorage": connection, "TRAPBATCH_POOL": "simulated", "TRAPBATCH_CONTAINER": f"state{args.images}",
        "TRAPBATCH_SIMULATED_FAILURE_RATE": str(args.failure_rate), "TRAPBATCH_POLL_MIN_S": str(args.poll_min_s),
        "TRAPBATCH_POLL_MAX_S": str(args.poll_max_s), "TRAPBATCH_MODEL": "MDV5A",
        **shape["env"],
    })
    _install_listing_limits(shape["listing"])
    repeat_timer = RepeatTimer()
    repeat_timed = repeat_timer.install()
    import function_app
    from core import contracts as c
    from devhost.host import DevHost

    host = DevHost(function_app.app, connection, task_hub=f"bench{args.images}", port=0, blob_poll_s=30,
                   activity_workers=args.activity_workers, function_key=FUNCTION_KEY)
    memory = ActivityMemory() if args.activity_workers == 1 and os.path.exists("/proc/self/statm") else None
    if memory is not None:
        memory.watch(host.engine.metrics)
        memory.scratch.__enter__()
        if args.trace_memory:
            tracemalloc.start()
            memory.heap_base = tracemalloc.get_traced_memory()[0]
        memory.start()
    host.start()
    try:
        import requests

        body = {"container": container, "images_per_shard": shape["images_per_shard"], "model": "MDV5A",
                "request_name": f"control-plane benchmark {args.images}"}
        if args.image_list:
            body["image_list"] = write_image_list(connection, container, names, args.image_list)
        if args.zooniverse_visit_frames:
            body["zooniverse_visit_frames"] = args.zooniverse_visit_frames
        t0 = time.perf_counter()
        r = requests.post(f"{host.base_url}/api/tasks", json=body, headers={"x-functions-key": FUNCTION_KEY},
                          timeout=60)
        r.raise_for_status()
        task_id = r.json()["id"]
        poller = StatusPoller(host.base_url, task_id, args.status_interval, t0)
        poller.start()
        if not poller.done.wait(args.timeout_s):
            raise TimeoutError(f"the task did not end within {args.timeout_s} s: {poller.last}")
        wall_s = time.perf_counter() - t0
        poller.join(5)
        metrics = host.engine.metrics.snapshot()
        rerun = (only_new_rerun(args, host, connection, container, body, names, metrics)
                 if args.only_new is not None else None)
    finally:
        if memory is not None:
            memory.stop.set()
            memory.scratch.__exit__(None, None, None)
        host.stop()
        if azurite is not None:
            azurite.stop()

    final = poller.last
    orchestrator_cpu = sum(f["cpu_s"] for f in metrics["orchestrators"].values())
    activity_cpu = sum(f["cpu_s"] for f in metrics["activities"].values())
    # the parallel fan-in searches in its own activities (core.repeats.search_folder); the single-pass merge, if an
    # older orchestration runs it, through RepeatFinder (timed by repeat_timer)
    searches = [metrics["activities"].get(name) or {} for name in (c.SEARCH_REPEATS, c.RANK_REPEATS)]
    search_wall = sum(float(f.get("wall_s", 0.0)) for f in searches)
    search_cpu = sum(float(f.get("cpu_s", 0.0)) for f in searches)
    longest = max(metrics["activities"].items(), key=lambda kv: kv[1]["max_wall_s"], default=("", {"max_wall_s": 0}))
    history = metrics["history_events"]
    gpu_s = args.images / GPU_IMAGES_PER_S
    stages = poller.stages
    record: dict[str, Any] = {
        "images": args.images, "images_per_shard": shape["images_per_shard"], "failure_rate": args.failure_rate,
        "images_per_folder": shape["images_per_folder"], "task_id": task_id,
        "shape_of": args.shape_of or None, "scale_model": shape if args.shape_of else None,
        "scale_model_note": (f"SIMULATED SIZE: {args.images:,} real blobs run with the orchestration shape of "
                             f"{args.shape_of:,} images (every per-shard and per-activity size divided by "
                             f"{shape['scale']:g}); history events, instances and status latency are at "
                             f"{args.shape_of:,}'s shape, CPU per image and activity times are not (module doc)"
                             ) if args.shape_of else None,
        "final_stage": final.get("stage"), "runtime_status": final.get("runtime_status"),
        "final_images": final.get("images"), "final_failed": final.get("failed"), "shards": final.get("shards"),
        "resubmissions": final.get("resubmissions"),
        "wall_s": round(wall_s, 3),
        "orchestrator_cpu_s": round(orchestrator_cpu, 3),
        "activity_cpu_s": round(activity_cpu, 3),
        "control_plane_cpu_s": round(orchestrator_cpu + activity_cpu, 3),
        "gpu_s_at_250_img_s": round(gpu_s, 3),
        "control_plane_cpu_share_of_gpu": round((orchestrator_cpu + activity_cpu) / gpu_s, 5) if gpu_s else None,
        "max_history_events_per_instance": max(history.values(), default=0),
        "max_history_instance": max(history, key=lambda k: history[k], default=""),
        "instances": len(history),
        "max_activity_s": round(longest[1]["max_wall_s"], 3), "max_activity": longest[0],
        "status_p99_s": round(percentile(poller.latencies, 0.99), 4),
        "status_p50_s": round(percentile(poller.latencies, 0.5), 4),
        "status_max_s": round(max(poller.latencies, default=0.0), 4), "status_polls": len(poller.latencies),
        # the slowest answers, when and in which stage: what a p99 miss was waiting behind
        "status_slowest": [list(t) for t in sorted(poller.timeline, key=lambda t: -t[1])[:8]],
        "enumerate_s": _stage_span(stages, "enumerating", ("detecting", "failed")),
        "merge_s": _stage_span(stages, "merging", ("publishing", "completed", "completed_with_errors", "failed")),
        "repeat_search_s": round(search_wall + (repeat_timer.seconds if repeat_timed else 0.0), 3),
        "repeat_search_cpu_s": round(search_cpu + (repeat_timer.cpu_seconds if repeat_timed else 0.0), 3),
        "stages_first_seen_s": {k: round(v, 3) for k, v in stages.items()},
        "upload_s": round(upload_s, 3),
        "preloaded": bool(args.preload), "image_list": args.image_list,
        "zooniverse_visit_frames": args.zooniverse_visit_frames,
        "functions": {"orchestrators": metrics["orchestrators"], "activities": metrics["activities"]},
        "settings": {"poll_min_s": args.poll_min_s, "poll_max_s": args.poll_max_s,
                     "activity_workers": args.activity_workers, "status_interval_s": args.status_interval},
        # the benchmark process's high-water mark (devhost, every activity, the status poller and the blob names):
        # what grows with the task here would grow in an Azure Functions instance too
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # with --activity-workers 1 only: per activity, the most its calls raised the process's RSS (0.25 s samples)
        "activity_rss_growth_mb": memory.growth_mb() if memory is not None else None,
        # with --activity-workers 1 only: per activity, the most local disk one call's temporary files held at once
        "activity_scratch_mb": memory.scratch_mb() if memory is not None else None,
        # with --activity-workers 1 --trace-memory only: per activity, the most one call raised the Python heap
        "activity_heap_mb": memory.heap_mb() if memory is not None else None,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
                    "git_commit": _git_commit(), "simulated": "pool: gpu_batch.pool.simulated (no detector); "
                    "storage: Azurite, one process per service unless --connection names another "
                    "(devhost/azurite.py)" + ("; blobs preloaded, and Azurite's blob lookups and listings made "
                    "cheaper without changing their answers (bench/preloaded_azurite.py)" if args.preload else "")
                    + "; host: devhost"},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if rerun is not None:
        record["only_new_rerun"] = rerun
    return record


def only_new_rerun(args: argparse.Namespace, host: Any, connection: str, container: str, body: dict[str, Any],
                   names: list[str], before: dict[str, Any]) -> dict[str, Any]:
    """``--only-new N``: after the task, N new images beside the old ones and the same request again with
    ``"only_new": true`` (a re-run that reuses every unchanged image's result: ``activities.reuse``); its own
    control-plane CPU, per image of the re-run and per new image (the GPU time it stands for)."""
    import requests

    if args.image_list:
        raise SystemExit("--only-new re-runs a container listing; leave out --image-list")
    added = [f"new/{i:07d}.jpg" for i in range(args.only_new)]
    upload(connection, container, added)
    t0 = time.perf_counter()
    r = requests.post(f"{host.base_url}/api/tasks", json={**body, "only_new": True},
                      headers={"x-functions-key": FUNCTION_KEY}, timeout=60)
    r.raise_for_status()
    task_id = r.json()["id"]

    def ended() -> dict[str, Any] | None:
        st = requests.get(f"{host.base_url}/api/tasks/{task_id}", headers={"x-functions-key": FUNCTION_KEY},
                          timeout=60).json()
        if st.get("runtime_status") in ("Running", "Pending", "ContinuedAsNew"):
            return None
        return st if st.get("generation") or st.get("stage") not in ("completed", "completed_with_errors") else None

    final = None
    while final is None and time.perf_counter() - t0 < args.timeout_s:
        time.sleep(0.5)
        final = ended()
    if final is None:
        raise TimeoutError("the only_new re-run did not end")
    after = host.engine.metrics.snapshot()
    per_activity = {name: round(f["cpu_s"] - (before["activities"].get(name) or {}).get("cpu_s", 0.0), 4)
                    for name, f in after["activities"].items()}
    orchestrators = sum(f["cpu_s"] for f in after["orchestrators"].values()) - sum(
        f["cpu_s"] for f in before["orchestrators"].values())
    cpu = orchestrators + sum(per_activity.values())
    images = len(names) + len(added)
    return {"new_images": len(added), "reused_images": len(names), "stage": final.get("stage"),
            "images": final.get("images"), "wall_s": round(time.perf_counter() - t0, 3),
            "control_plane_cpu_s": round(cpu, 3), "us_per_image": round(cpu / images * 1e6, 2),
            "share_of_new_images_gpu_time": round(cpu / (len(added) / GPU_IMAGES_PER_S), 4) if added else None,
            "activities_cpu_s": {k: v for k, v in sorted(per_activity.items(), key=lambda kv: -kv[1]) if v > 0}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, required=True)
    p.add_argument("--images-per-shard", type=int, required=True)
    p.add_argument("--failure-rate", type=float, default=0.0, help="share of images failing per attempt (retryable)")
    p.add_argument("--images-per-folder", type=int, default=2000)
    p.add_argument("--poll-min-s", type=float, default=1.0)
    p.add_argument("--poll-max-s", type=float, default=2.0)
    p.add_argument("--activity-workers", type=int, default=8)
    p.add_argument("--trace-memory", action="store_true",
                   help="with --activity-workers 1: record each activity's Python-heap peak (tracemalloc; slows the "
                        "run several times, so its CPU figures are not comparable)")
    p.add_argument("--status-interval", type=float, default=0.5)
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--connection", default="", help="an existing Azurite's connection string (default: start one)")
    p.add_argument("--preload", action="store_true",
                   help="create the blobs inside Azurite instead of by PUT (needed past ~50,000 images: Azurite's "
                        "PUTs slow down as it fills); bench/preloaded_azurite.py says what that changes")
    p.add_argument("--image-list", nargs="?", const="site", choices=["site", "gps", "paths", "captures"],
                   default=None,
                   help="start the task from an image list naming every blob (core.imagelist): with a site column "
                        "(metadata the exports carry; the default), with each image's own coordinates too (gps), "
                        "paths alone, or a captures file (season, site, roll, capture, image: Zooniverse subjects "
                        "of three images, core.captures)")
    p.add_argument("--zooniverse-visit-frames", type=int, default=None, metavar="N",
                   help="Zooniverse subjects of visits of at most N photos (the request's zooniverse_visit_frames: "
                        "the captures pipeline keyed by the events step's frames)")
    p.add_argument("--only-new", type=int, default=None, metavar="N",
                   help="then add N images and run the request again with only_new (record: only_new_rerun)")
    p.add_argument("--shape-of", type=int, default=0, metavar="M",
                   help="scale model: run --images images with the orchestration shape of M images (module doc)")
    p.add_argument("--out", default="", help="default bench/results/control_plane-<N>.json "
                                             "(control_plane-<N>-shape-of-<M>.json with --shape-of; the record's "
                                             "scale_model_note says what was simulated, whatever the file name)")
    args = p.parse_args(argv)
    if args.trace_memory and args.activity_workers != 1:
        p.error("--trace-memory needs --activity-workers 1 (a call's heap is its own only when it runs alone)")
    record = run(args)
    name = f"control_plane-{args.images}" + (f"-shape-of-{args.shape_of}" if args.shape_of else "") + ".json"
    summary = {k: record[k] for k in ("images", "shape_of", "final_stage", "wall_s", "peak_rss_mb", "orchestrator_cpu_s", "activity_cpu_s",
                                      "control_plane_cpu_share_of_gpu", "max_history_events_per_instance",
                                      "max_activity_s", "max_activity", "status_p99_s", "enumerate_s", "merge_s",
                                      "repeat_search_s")}
    save_record(record, args.out, name, summary)
    return 0 if record["runtime_status"] == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main())
