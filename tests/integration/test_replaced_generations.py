"""A replaced generation's sweep in Azurite (activities.replaced_generations, adapters.replaced_generations): two
generations of a task, the second promoted, then the sweep deletes the replaced one's results, exports, zips and
working state, and leaves the served generation, ``current.json``, the task's own folders (cancel markers, pool-job
markers, joined drops, logs) and the other generations. Nothing here waits: the sweep's step is called as its
orchestration calls it once its timers fired."""
from __future__ import annotations

from typing import Any

from activities.generations import run_promote
from activities.replaced_generations import run_sweep_step
from adapters.blobs import BlobStore
from adapters.replaced_generations import delete_generation_share
from core.settings import Settings
from gpu_batch import layout

TASK = "task-0123456789abcdef0123"
RUN = "r260101120000ab12"
LATER = "r260201120000cd34"


def _settings(container: str, web: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_CONTAINER": container,
                              "TRAPBATCH_WEB_CONTAINER": web})


def _generation(store: BlobStore, container: str, key: str, shards: int = 3) -> set[str]:
    """What a generation writes: state (request, listing, shards, merge and zip work) and results (detections, CSV,
    exports, preview sample and folder record, a threshold CSV, a zip and its manifest)."""
    names = {layout.request_blob(key), layout.enumeration_blob(key), layout.decided_settings_blob(key),
             layout.shard_ranges_blob(key, 0), layout.listing_plan_blob(key, "job_r1"),
             layout.merge_part_blob(key, 0, "json"), layout.results_zip_part_blob(key, 0, "ab"),
             layout.results_blob(key), layout.csv_blob(key), layout.coco_blob(key),
             layout.camtrap_dp_blob(key, "media.csv"), layout.preview_sample_blob(key),
             layout.threshold_csv_blob(key, 0.35), layout.results_zip_blob(key, "ab"),
             layout.results_zip_manifest_blob(key), layout.readme_blob(key)}
    for i in range(shards):
        sid = layout.shard_id(i)
        names |= {layout.manifest_blob(key, sid, 1), layout.attempt_results_blob(key, sid, 1),
                  layout.attempt_coverage_blob(key, sid, 1), layout.shard_etags_blob(key, sid)}
    for name in names:
        store.write_bytes(container, name, b"{}")
    return names


def _task_own(store: BlobStore, container: str) -> set[str]:
    """The task's, not a generation's: what every run of it shares."""
    job = layout.pool_job_id(TASK, RUN)
    names = {layout.cancel_marker(job), layout.pool_job_marker(job), layout.joined_drop_blob(TASK, RUN, "a.json"),
             layout.run_ended_blob(TASK, RUN), layout.pool_log_blob(job, "s00000-a1")}
    for name in names:
        store.write_bytes(container, name, b"{}")
    return names


def _everything(store: BlobStore, container: str) -> set[str]:
    return set(store.list_names(container))


def _published(store: BlobStore, s: Settings, key: str) -> str:
    folder = layout.preview_folder_name(key, "0f0f")
    store.ensure_container(s.web_container)
    store.write_bytes(s.web_container, layout.page_blob(folder), b"<html>", "text/html")
    store.write_bytes(s.container, layout.preview_folder_blob(key), folder.encode(), "text/plain")
    return folder


def test_the_sweep_deletes_only_the_replaced_first_generation(store: BlobStore, unique_name: str) -> None:
    s = _settings(unique_name, unique_name + "web")
    store.ensure_container(s.container)
    first = _generation(store, s.container, TASK)
    served = _generation(store, s.container, layout.generation_key(TASK, RUN))
    own = _task_own(store, s.container)
    _published(store, s, TASK)
    run_promote(TASK, RUN, "", s, store)  # the re-run completes: it is served, the first generation's pages go
    assert store.read_json(s.container, layout.current_generation_blob(TASK)) == {"generation": RUN}
    kept = served | own | {layout.current_generation_blob(TASK)}
    assert first <= _everything(store, s.container)
    gone = _everything(store, s.container) - kept  # the first generation's, and the promotion's withdrawal mark
    assert gone == first | {layout.previews_withdrawn_blob(TASK)}

    out = run_sweep_step({"task_id": TASK, "generation": ""}, store, s, False, None, None)

    assert out == {"deleted": len(gone), "done": True}
    assert _everything(store, s.container) == kept
    assert list(store.list_names(s.web_container)) == []
    again = run_sweep_step({"task_id": TASK, "generation": ""}, store, s, False, None, None)  # a retried call
    assert again == {"deleted": 0, "done": True} and _everything(store, s.container) == kept


def test_the_sweep_deletes_a_replaced_reruns_generation_in_bounded_shares(store: BlobStore, unique_name: str) -> None:
    s = _settings(unique_name, unique_name + "web")
    store.ensure_container(s.container)
    first = _generation(store, s.container, TASK)
    old = _generation(store, s.container, layout.generation_key(TASK, RUN), shards=30)
    served = _generation(store, s.container, layout.generation_key(TASK, LATER))
    own = _task_own(store, s.container)
    run_promote(TASK, LATER, RUN, s, store)
    kept = first | served | own | {layout.current_generation_blob(TASK)}

    shares: list[tuple[int, bool]] = []
    while not shares or not shares[-1][1]:
        shares.append(delete_generation_share(store, s.container, TASK, RUN, most=40))
        assert len(shares) < 10
    assert [d for d, _ in shares][:-1] and all(d >= 40 for d, _ in shares[:-1])  # a share stops at its bound
    assert sum(d for d, _ in shares) == len(old)
    assert _everything(store, s.container) == kept


def test_the_served_generation_and_one_a_running_run_reads_are_kept(store: BlobStore, unique_name: str) -> None:
    s = _settings(unique_name, unique_name + "web")
    store.ensure_container(s.container)
    first = _generation(store, s.container, TASK)
    rerun = _generation(store, s.container, layout.generation_key(TASK, RUN))
    before = _everything(store, s.container)
    asked: Any = {"task_id": TASK, "generation": RUN}

    # no pointer: the first generation is served, and a sweep of it deletes nothing
    assert run_sweep_step({"task_id": TASK, "generation": ""}, store, s, False, None, None) == \
        {"deleted": 0, "done": True, "kept": "served"}
    run_promote(TASK, RUN, "", s, store)
    assert run_sweep_step(asked, store, s, False, None, None)["kept"] == "served"  # promoted (back) to it
    store.write_json(s.container, layout.current_generation_blob(TASK), {"generation": LATER})
    # the task's running run resumes the generation that replaced it, reusing from it (only_new)
    assert run_sweep_step(asked, store, s, True, LATER, RUN)["kept"] == "running"
    assert _everything(store, s.container) == before | {layout.current_generation_blob(TASK)}
    assert first | rerun <= _everything(store, s.container)


def test_pages_of_the_replaced_generation_still_online_go_before_their_record(store: BlobStore,
                                                                              unique_name: str) -> None:
    """A render that published after the promotion (one already past its checks): without its folder record,
    deleted with the results, nothing could find those public pages again; the sweep takes them off first."""
    s = _settings(unique_name, unique_name + "web")
    store.ensure_container(s.container)
    _generation(store, s.container, layout.generation_key(TASK, RUN))
    served = _generation(store, s.container, layout.generation_key(TASK, LATER))
    run_promote(TASK, LATER, RUN, s, store)
    _published(store, s, layout.generation_key(TASK, RUN))

    out = run_sweep_step({"task_id": TASK, "generation": RUN}, store, s, False, None, None)

    assert out["done"] and list(store.list_names(s.web_container)) == []
    assert _everything(store, s.container) == served | {layout.current_generation_blob(TASK)}
