"""The benchmark-only SimulatedPool keeps the GpuPool task-state model and writes results the app reads (Azurite)."""
from __future__ import annotations

import pytest

from adapters import clients
from adapters.blobs import BlobStore
from core.errors import ConfigError
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.manifest import ShardManifest, is_failure
from gpu_batch.pool import JobClosed, JobState, ShardTask, TaskResult, TaskState, make_pool
from gpu_batch.pool.simulated import SimulatedPool, synthetic_entry
from tests.waiting import wait_until

TASK = "task-0123456789abcdef0123"


def _manifest(store: BlobStore, container: str, sid: str, images: list[str], attempt: int = 1) -> ShardTask:
    m = ShardManifest(task_id=TASK, shard_id=sid, attempt=attempt, source_container="cams", images=tuple(images),
                      output_container=container, output_blob=layout.attempt_results_blob(TASK, sid, attempt),
                      model="MDV5A")
    store.write_json(container, layout.manifest_blob(TASK, sid, attempt), m.to_dict())
    return ShardTask(layout.pool_task_id(sid, attempt), container, layout.manifest_blob(TASK, sid, attempt), sid,
                     attempt)


def test_tasks_complete_with_a_results_document_of_every_image(storage_connection: str, store: BlobStore,
                                                                 unique_name: str) -> None:
    store.ensure_container(unique_name)
    pool = SimulatedPool(storage_connection, failure_rate=0.3)
    names = [f"cam{i % 3}/img{i:03d}.jpg" for i in range(40)]
    task = _manifest(store, unique_name, "s00000", names)
    pool.ensure_job("job")
    pool.submit("job", [task])
    pool.submit("job", [task])  # the same id again: a no-op
    info = wait_until(lambda: next((i for i in pool.poll("job") if i.state is TaskState.completed), None), 30,
                      "the simulated task to complete")
    assert len(pool.poll("job")) == 1 and pool.poll("job", ["other"]) == []
    assert info.result is TaskResult.success and info.exit_code == 0 and info.start_time and info.end_time
    doc = store.read_json(unique_name, layout.attempt_results_blob(TASK, "s00000", 1))
    assert sorted(e["file"] for e in doc["images"]) == sorted(names)
    failed = [e for e in doc["images"] if is_failure(e)]
    assert 0 < len(failed) < len(names) and all(e["failure_kind"] == "retryable" for e in failed)
    assert all("width" not in e and "height" not in e for e in failed)
    sized = {e["file"].split("/")[0]: (e["width"], e["height"]) for e in doc["images"] if not is_failure(e)}
    assert all(isinstance(w, int) and w > h > 0 for w, h in sized.values())  # each camera (folder) one resolution:
    assert len(sized) == 3 and {(e["width"], e["height"]) for e in doc["images"]  # the same for all its images
                                if not is_failure(e) and e["file"].startswith("cam0/")} == {sized["cam0"]}
    assert doc == store.read_json(unique_name, layout.attempt_results_blob(TASK, "s00000", 1))
    # seeded: the same image and attempt give the same entry; another attempt may succeed
    assert synthetic_entry(names[0], 1, 0.3) == synthetic_entry(names[0], 1, 0.3)
    assert any(not is_failure(synthetic_entry(e["file"], 2, 0.3)) for e in failed)


def test_its_coverage_summaries_let_the_poll_count_without_parsing(storage_connection: str, store: BlobStore,
                                                                    unique_name: str) -> None:
    """As the worker, it writes each attempt's coverage summary, so the benchmark's polls take the summary path."""
    from activities.shard_results import images_to_rerun, parsed_coverage, summarized_coverage

    store.ensure_container(unique_name)
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name})
    pool = SimulatedPool(storage_connection, failure_rate=0.3)
    names = [f"cam{i % 3}/img{i:03d}.jpg" for i in range(40)]
    pool.ensure_job("job")
    for attempt, images in ((1, names), (2, None)):
        if images is None:
            images = images_to_rerun(store, settings, TASK, "s00000", names)
        pool.submit("job", [_manifest(store, unique_name, "s00000", images, attempt)])
        wait_until(lambda: all(i.state is TaskState.completed for i in pool.poll("job")), 30, "the attempt to end")
        summarized = summarized_coverage(store, settings, TASK, "s00000")
        assert summarized is not None and summarized.counts == parsed_coverage(store, settings, TASK, "s00000")
        assert 0 < summarized.counts["missing"] < len(names)


def test_a_shard_run_again_ends_with_its_last_attempts_view_of_every_attempt(storage_connection: str,
                                                                             store: BlobStore,
                                                                             unique_name: str) -> None:
    """As the worker (``gpu_batch.worker.results``): the attempt that finishes a shard resubmitted by the app
    (``resubmit_one``) writes the view of the whole shard, which the merge takes (``activities.fanin.clean_view``), so
    the benchmark measures the fan-in that a task with failures gets on a pool."""
    from activities.fanin import clean_view
    from activities.pool import resubmit_one

    store.ensure_container(unique_name)
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name})
    pool = SimulatedPool(storage_connection, failure_rate=0.3)
    names = [f"cam{i % 3}/img{i:03d}.jpg" for i in range(40)]
    first = ShardManifest(task_id=TASK, shard_id="s00000", attempt=1, source_container="cams", images=tuple(names),
                          output_container=unique_name, output_blob=layout.attempt_results_blob(TASK, "s00000", 1),
                          model="MDV5A", merge_view_threshold=0.2)
    store.write_json(unique_name, layout.manifest_blob(TASK, "s00000", 1), first.to_dict())
    pool.ensure_job("job")
    pool.submit("job", [ShardTask(layout.pool_task_id("s00000", 1), unique_name,
                                  layout.manifest_blob(TASK, "s00000", 1), "s00000", 1)])
    attempt = 1
    while True:
        wait_until(lambda: all(i.state is TaskState.completed for i in pool.poll("job")), 30, "the attempt to end")
        if not resubmit_one(TASK, "job", "s00000", attempt + 1, settings, store, pool)["submitted"]:
            break
        attempt += 1
        assert attempt < 30
    assert attempt > 1  # 30 % of the images fail in each attempt: the shard ran again
    listed = store.list_etags(unique_name, layout.shard_prefix(TASK, "s00000"))
    view = clean_view(store, settings, TASK, 0, 0.2, listed)
    assert view is not None and view.counts["images"] == 40 and view.counts["failed"] == 0
    assert set(view.earlier) == {layout.attempt_results_blob(TASK, "s00000", a) for a in range(1, attempt)}
    assert layout.attempt_view_blob(TASK, "s00000", attempt) in listed


def test_closed_jobs_refuse_tasks_and_a_task_without_its_manifest_fails(storage_connection: str, store: BlobStore,
                                                                   unique_name: str) -> None:
    store.ensure_container(unique_name)
    pool = SimulatedPool(storage_connection, writers=1)
    pool.cancel("job")  # nothing to cancel: fine
    pool.close_job("job")
    pool.close_job("job")  # idempotent
    with pytest.raises(JobClosed):
        pool.submit("job", [_manifest(store, unique_name, "s00001", ["a.jpg"])])
    missing = ShardTask("s00002-a1", unique_name, "no/such/manifest.json", "s00002", 1)
    pool.submit("job2", [missing])
    info = wait_until(lambda: next((i for i in pool.poll("job2") if i.state is TaskState.completed), None), 30,
                      "the task with no manifest to fail")
    assert info.result is TaskResult.failure and "simulated worker failed" in (info.failure_message or "")


def test_a_job_deleted_outside_trapbatch_refuses_tasks_until_created_again_as_on_the_other_pools(
        storage_connection: str, store: BlobStore, unique_name: str) -> None:
    """As LocalPool's ``delete_job`` and Batch's Job - Delete: the job and its tasks are gone, ``job_state`` says
    ``deleted``, a submission is ``JobClosed`` saying what to do (a shard group's SUBMIT with ``create_job: false``,
    activities.pool.run_submit), and ``ensure_job`` creates it again."""
    store.ensure_container(unique_name)
    pool = SimulatedPool(storage_connection)
    task = _manifest(store, unique_name, "s00000", ["a.jpg"])
    pool.ensure_job("job")
    pool.submit("job", [task])
    pool.delete_job("job")
    assert pool.poll("job") == [] and pool.job_state("job") is JobState.deleted
    with pytest.raises(JobClosed, match="was deleted.*Post the same request again"):
        pool.submit("job", [task])
    pool.ensure_job("job")
    assert pool.job_state("job") is JobState.active
    pool.submit("job", [task])
    assert wait_until(lambda: next((i for i in pool.poll("job") if i.state is TaskState.completed), None), 30,
                      "the task to run in the job created again").result is TaskResult.success


def test_selected_only_by_name_and_with_its_failure_rate(storage_connection: str) -> None:
    s = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_POOL": "simulated",
                           "TRAPBATCH_SIMULATED_FAILURE_RATE": "0.25"})
    pool = clients.pool(s)
    assert isinstance(pool, SimulatedPool) and pool.failure_rate == 0.25
    assert isinstance(make_pool("simulated", connection_string=storage_connection), SimulatedPool)
    with pytest.raises(ConfigError, match="not a fraction"):
        Settings.from_env({"AzureWebJobsStorage": "x", "TRAPBATCH_SIMULATED_FAILURE_RATE": "2"})


def test_the_simulated_pool_reports_only_what_changed_after_a_cursor(storage_connection: str,
                                                                       unique_name: str) -> None:
    """The change model the polls rely on (GpuPool.changes): a task shows up after each of its state writes, and a
    cursor taken after the last write sees nothing more."""
    from gpu_batch.pool.base import TaskState
    from gpu_batch.pool.simulated import SimulatedPool

    from gpu_batch.pool.base import ShardTask

    pool = SimulatedPool(storage_connection)
    pool._run = lambda job_id, task: None  # type: ignore[method-assign]  # no simulated worker: only our writes
    start = pool.cursor()
    pool.ensure_job("j")
    pool.cancel("j")  # nothing yet
    assert pool.changes("j", start).tasks == []
    pool.submit("j", [ShardTask("s00000-a1", unique_name, "missing.json", "s00000", 1)])
    first = pool.changes("j", start)
    assert [t.task_id for t in first.tasks] == ["s00000-a1"]
    pool.cancel("j", "s00000-a1")
    after_cancel = pool.changes("j", first.cursor)
    assert [(t.task_id, t.state) for t in after_cancel.tasks] == [("s00000-a1", TaskState.completed)]
    assert pool.changes("j", after_cancel.cursor).tasks == []
