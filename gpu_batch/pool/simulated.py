"""SimulatedPool: BENCHMARK ONLY. A pool without a detector, for measuring trapbatch's control plane.

What it is for: ``bench/control_plane.py`` measures what the Functions app costs (enumeration, orchestration, polls,
merge, repeat search, status) for millions of images, which no GPU could detect in a benchmark's time. This pool
"runs" each shard task at once: a background thread reads the shard manifest and writes the attempt's results
document, every image of the manifest with **seeded synthetic detections** (random boxes; a few boxes recur at fixed
places per folder, like the rocks MegaDetector's repeat detection looks for). Its results are fake by design: never
select it (``TRAPBATCH_POOL=simulated``) for anything but a control-plane benchmark.

What it keeps of a real pool: Azure Batch's task-state model as ``GpuPool`` describes it (a task is ``active`` when
submitted, ``running`` while its results are written, then ``completed`` with ``success`` and exit code 0; a
resubmission of the same task id is a no-op; ``cancel`` completes unfinished tasks with a failure; ``close_job``
completes the job's unfinished tasks and refuses later submissions with ``JobClosed``, as ``delete_job`` does until
``ensure_job`` creates the job again), and per-image failures as the
worker writes them: every success carries a plausible ``width``/``height`` (one camera resolution per folder,
seeded), as the real worker's entries do, so the exports take the same path as for real results (no image read for
COCO's pixel boxes); with ``failure_rate`` F, each image of each attempt fails with probability F (seeded by image and
attempt) as a *retryable* download failure, so the app resubmits it as the next attempt, as it would on Batch. After
the results it writes the attempt's coverage summary, as the worker does (``gpu_batch.manifest.coverage_summary``),
so the benchmark measures the poll that reads summaries, not results.

Task state is in memory (one pool object per process, as ``adapters.clients.pool`` caches it); the results go to blob
storage, where the app reads them. The writing threads are not the control plane: the benchmark counts only the
app's orchestrator and activity CPU.
"""
from __future__ import annotations

import hashlib
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Sequence

from gpu_batch import layout
from gpu_batch import manifest as contract
from gpu_batch.exit_codes import TASK_ENDED
from gpu_batch.formats import jsonio, mergeview
from gpu_batch.formats.entries import damaged_in
from gpu_batch.pool.base import (JobClosed, JobState, PoolChanges, ShardTask, TaskInfo, TaskResult, TaskState,
                                 closed_outside_hint)

CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
REPEAT_SHARE = 0.3  # images of a folder that show one of its fixed "rock" boxes
# Common camera-trap still resolutions (width, height); each folder (camera) gets one, seeded.
CAMERA_SIZES = ((1920, 1080), (2048, 1536), (2560, 1920), (3264, 2448), (4000, 3000), (5184, 2916))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


CLOCK_SET_SHARE = 0.9  # the share of cameras (folders) whose images carry an EXIF capture time
CLOCK_SPAN_S = 90 * 86400  # their times fall in a season of 90 days (from 2024-05-01)


def synthetic_entry(name: str, attempt: int, failure_rate: float, seed: int = 0) -> dict[str, Any]:
    """One image's synthetic result: a retryable failure with probability ``failure_rate`` (per attempt), else 0-3
    random detections, plus with probability ``REPEAT_SHARE`` one of three fixed boxes of the image's folder, and
    the folder's camera resolution as ``width``/``height`` and, unless the folder's camera is one whose clock was
    never set (``CLOCK_SET_SHARE``), a capture time as ``datetime`` (failures carry neither, as the worker's)."""
    if failure_rate and _rng(seed, "fail", name, attempt).random() < failure_rate:
        return {"file": name, "failure": "image access failure", "detections": None,
                **contract.failure_fields(contract.REASON_DOWNLOAD)}
    rng = _rng(seed, name)
    detections = []
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        x, y = rng.random() * 0.8, rng.random() * 0.8
        detections.append({"category": rng.choice(("1", "1", "1", "2", "3")), "conf": round(rng.uniform(0.005, 1), 3),
                           "bbox": [round(x, 4), round(y, 4), round(rng.uniform(0.02, 0.2), 4),
                                    round(rng.uniform(0.02, 0.2), 4)]})
    folder = name.rsplit("/", 1)[0] if "/" in name else ""
    if rng.random() < REPEAT_SHARE:
        place = _rng(seed, "rock", folder, rng.randrange(3))
        detections.append({"category": "1", "conf": round(rng.uniform(0.3, 0.9), 3),
                           "bbox": [round(place.random() * 0.8, 4), round(place.random() * 0.8, 4), 0.1, 0.1]})
    camera = _rng(seed, "camera", folder)
    width, height = camera.choice(CAMERA_SIZES)
    entry: dict[str, Any] = {"file": name, "detections": detections, "width": width, "height": height}
    if camera.random() < CLOCK_SET_SHARE:  # the capture time, as the worker reads it from EXIF
        at = _rng(seed, "clock", name).randrange(CLOCK_SPAN_S)
        entry["datetime"] = f"2024:{5 + at // 2_592_000:02d}:{1 + at // 86400 % 30:02d} " \
                            f"{at // 3600 % 24:02d}:{at // 60 % 60:02d}:{at % 60:02d}"
    return entry


class SimulatedPool:
    def __init__(self, connection_string: str, failure_rate: float = 0.0, seed: int = 0, writers: int = 2) -> None:
        from azure.storage.blob import BlobServiceClient

        if not 0 <= failure_rate < 1:
            raise ValueError(f"failure_rate {failure_rate} is not in [0, 1)")
        self.blobs = BlobServiceClient.from_connection_string(connection_string)
        self.failure_rate = failure_rate
        self.seed = seed
        self._tasks: dict[str, dict[str, TaskInfo]] = {}
        self._changed: dict[str, dict[str, int]] = {}  # job -> task -> the change counter at its last state write
        self._clock = 0  # the change cursor: a counter, so no change can fall between two calls
        self._closed: set[str] = set()
        self._deleted: set[str] = set()  # delete_job's, until ensure_job creates them again
        self._lock = threading.Lock()
        self._writers = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="simulated-pool")

    # ---------------------------------------------------------------- GpuPool
    def ensure_job(self, job_id: str) -> None:
        """Create the job, one ``delete_job`` deleted too (as Batch's Job - Add once the deletion is done; the app
        asks it only until the run's job was in the pool: ``activities.pool._ensure_job_once``)."""
        with self._lock:
            self._deleted.discard(job_id)
            self._tasks.setdefault(job_id, {})

    def submit(self, job_id: str, tasks: Sequence[ShardTask]) -> None:
        with self._lock:
            if tasks and job_id in self._closed:
                raise JobClosed(f"job {job_id} is closed (close_job): it accepts no tasks")
            if tasks and job_id in self._deleted:  # as AzureBatchPool words Batch's 404 JobNotFound
                raise JobClosed(f"job {job_id} was deleted (JobNotFound): the pool accepts no tasks for a job it no "
                                f"longer has; {closed_outside_hint(job_id)}")
            job = self._tasks.setdefault(job_id, {})
            new = [t for t in tasks if t.task_id not in job]
            for t in new:
                job[t.task_id] = TaskInfo(t.task_id, TaskState.active)
                self._touch(job_id, t.task_id)
        for t in new:
            self._writers.submit(self._run, job_id, t)

    def poll(self, job_id: str, task_ids: Sequence[str] | None = None) -> list[TaskInfo]:
        with self._lock:
            job = self._tasks.get(job_id, {})
            if task_ids is None:
                return list(job.values())
            return [job[t] for t in task_ids if t in job]

    def cursor(self) -> str:
        with self._lock:
            return str(self._clock)

    def changes(self, job_id: str, since: str) -> PoolChanges:
        """The job's tasks written after ``since`` (a value of this pool's change counter)."""
        after = int(since)
        with self._lock:
            job, stamps = self._tasks.get(job_id, {}), self._changed.get(job_id, {})
            return PoolChanges(tasks=[job[t] for t, n in stamps.items() if n > after], cursor=str(self._clock))

    def cancel(self, job_id: str, task_id: str | None = None) -> None:
        self._end(job_id, task_id, "terminated: cancelled by the user")

    def job_state(self, job_id: str) -> JobState:
        """``deleted`` after ``delete_job`` (until ``ensure_job``), ``closed`` once ``close_job`` closed it, else
        ``active``."""
        with self._lock:
            if job_id in self._deleted:
                return JobState.deleted
            return JobState.closed if job_id in self._closed else JobState.active

    def delete_job(self, job_id: str) -> None:
        """What ``az batch job delete`` does, as LocalPool's ``delete_job``: the job and its tasks are gone (a task
        being written ends unrecorded: ``_set``), ``submit`` refuses it (``JobClosed``) until ``ensure_job``."""
        with self._lock:
            self._deleted.add(job_id)
            self._closed.discard(job_id)
            self._tasks.pop(job_id, None)
            self._changed.pop(job_id, None)

    def close_job(self, job_id: str) -> None:
        with self._lock:
            self._closed.add(job_id)
        self._end(job_id, None, "terminated: the job was closed")

    # ---------------------------------------------------------------- the simulated worker
    def _end(self, job_id: str, task_id: str | None, message: str) -> None:
        with self._lock:
            job = self._tasks.get(job_id, {})
            for tid, info in list(job.items()):
                if (task_id is None or tid == task_id) and info.state is not TaskState.completed:
                    job[tid] = TaskInfo(tid, TaskState.completed, TaskResult.failure, None, message,
                                        info.start_time, _now(), failure_code=TASK_ENDED)  # as Batch's terminate
                    self._touch(job_id, tid)

    def _touch(self, job_id: str, task_id: str) -> None:
        """Stamp a state write with the next counter value (callers hold the lock)."""
        self._clock += 1
        self._changed.setdefault(job_id, {})[task_id] = self._clock

    def _set(self, job_id: str, info: TaskInfo) -> bool:
        """Record a state change unless the task already completed (cancelled or closed meanwhile)."""
        with self._lock:
            job = self._tasks.get(job_id, {})
            current = job.get(info.task_id)
            if current is None or current.state is TaskState.completed:
                return False
            job[info.task_id] = info
            self._touch(job_id, info.task_id)
            return True

    def _reader(self, container: str) -> mergeview.BlobReader:
        from azure.core.exceptions import AzureError

        def read(name: str) -> tuple[bytes, str]:
            try:
                download = self.blobs.get_blob_client(container, name).download_blob()
                return download.readall(), str(download.properties.etag)
            except AzureError as exc:
                raise ValueError(f"cannot read blob {container}/{name}: {exc}") from exc
        return read

    def _view(self, shard: contract.ShardManifest, data: bytes, results_etag: str, manifest_etag: str) -> bytes | None:
        """The merge view as the worker makes it (``gpu_batch.worker.results.ResultWriter.write_view``): of the whole
        shard for a resubmitted attempt; none when a blob its basis names cannot be read."""
        assert shard.merge_view_threshold is not None
        images, earlier = shard.images, list[mergeview.EarlierAttempt]()
        if shard.merge_view_basis is not None:
            try:
                whole = mergeview.whole_shard(shard.merge_view_basis, self._reader(shard.output_container))
            except ValueError:
                return None
            images, manifest_etag, earlier = whole.images, whole.manifest_etag, whole.earlier
        listed = None
        if shard.merge_view_list is not None:
            try:
                listed = mergeview.list_rows(shard.merge_view_list, self._reader(shard.output_container))
            except ValueError:
                listed = None
        doc = jsonio.loads(data)
        return mergeview.build_view(shard.task_id, shard.merge_view_threshold, images, doc["images"], results_etag,
                                    manifest_etag, earlier, listed, damaged_in(doc))

    def _run(self, job_id: str, task: ShardTask) -> None:
        started = _now()
        if not self._set(job_id, TaskInfo(task.task_id, TaskState.running, start_time=started)):
            return
        try:
            download = self.blobs.get_blob_client(task.manifest_container, task.manifest_blob).download_blob()
            shard = contract.ShardManifest.from_dict(json.loads(download.readall()))
            entries = [synthetic_entry(name, shard.attempt, self.failure_rate, self.seed) for name in shard.images]
            doc = {"images": sorted(entries, key=lambda e: e["file"]), "detection_categories": dict(CATEGORIES),
                   "info": {"format_version": "1.6", "detector": "simulated (control-plane benchmark, not a model)",
                            "trapbatch": {"task_id": shard.task_id, "shard_id": shard.shard_id,
                                          "attempt": shard.attempt, "complete": True}}}
            data = json.dumps(doc).encode("utf-8")
            written = self.blobs.get_blob_client(shard.output_container, shard.output_blob).upload_blob(
                data, overwrite=True)
            summary = contract.coverage_summary({e["file"]: e for e in entries}, shard.images, written["etag"],
                                                download.properties.etag)
            self.blobs.get_blob_client(shard.output_container, layout.attempt_coverage_blob(
                shard.task_id, shard.shard_id, shard.attempt)).upload_blob(json.dumps(summary).encode(), overwrite=True)
            if shard.merge_view_threshold is not None:  # as the worker does (gpu_batch.worker.results), on its CPU
                view = self._view(shard, data, written["etag"], download.properties.etag)
                if view is not None:
                    self.blobs.get_blob_client(shard.output_container, layout.attempt_view_blob(
                        shard.task_id, shard.shard_id, shard.attempt)).upload_blob(view, overwrite=True)
        except Exception as exc:  # noqa: BLE001 - the simulated worker failed: a failed task, as on a pool
            self._set(job_id, TaskInfo(task.task_id, TaskState.completed, TaskResult.failure, 1,
                                       f"simulated worker failed: {exc}", started, _now()))
            return
        self._set(job_id, TaskInfo(task.task_id, TaskState.completed, TaskResult.success, 0, None, started, _now()))
