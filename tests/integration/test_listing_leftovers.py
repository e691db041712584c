"""What a listing leaves behind once it ends (``activities.listing_leftovers``), in Azurite with the real listing.

A key is listed again when its failed or terminated run is resumed; with images deleted meanwhile that listing cuts
fewer shards. The end of each listing deletes what earlier listings of the key left past its count (shard folders,
``shard-ranges-*`` and ``deployments-*`` batch blobs), never a shard below it nor what a replacing run wrote, and the
run's own listing folder and the task's loose listing files of before runs listed apart.
"""
from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from activities import listing_leftovers
from activities.enumerate import run_finish_enumeration
from activities.pool import run_stop_groups
from adapters.blobs import BlobStore
from core import contracts as c
from core.errors import RunSuperseded
from core.requests import TaskRequest
from core.settings import Settings
from gpu_batch import layout
from tests.integration.test_parallel_enumeration import SMALL, env, run_parallel  # noqa: F401 - fixture

TASK = "task-again"
FIRST = layout.pool_job_id(TASK, "r261201120000ab12")
RESUMED = layout.pool_job_id(TASK, "r261201130000cd34")


def _results(settings: Settings, store: BlobStore, shards: int) -> None:
    """A worker's results for every shard (what a run that failed later leaves)."""
    for i in range(shards):
        sid = layout.shard_id(i)
        names = store.read_json(settings.container, layout.manifest_blob(TASK, sid, 1))["images"]
        store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 1),
                         {"images": [{"file": n, "detections": []} for n in names]})


def _names(settings: Settings, store: BlobStore, prefix: str) -> list[str]:
    return list(store.list_names(settings.container, prefix))


def _batch_firsts(settings: Settings, store: BlobStore, prefix: str) -> list[int]:
    return sorted(int(n[len(prefix):-len(".json")]) for n in _names(settings, store, prefix))


def _finish_again(settings: Settings, store: BlobStore, request: TaskRequest, payload: Any) -> c.EnumerateOutput:
    return run_finish_enumeration(TASK, request, settings, store, payload["images"], payload["shards"],
                                  payload["found"], payload["parts"], payload.get("not_found", 0),
                                  payload.get("not_images_plan", False),
                                  [tuple(x) for x in payload.get("not_images_parts", [])],
                                  run=payload.get("listing_run", ""))


def test_a_key_listed_again_with_fewer_shards_keeps_nothing_of_the_earlier_listing_past_its_count(
        env: tuple[Settings, BlobStore, str]) -> None:
    """Before, the earlier listing's manifests, ETags and results of the shards past the new count, its shard ranges
    and an image list's deployments parts of batches this listing did not write stayed for good (an ``only_new``
    re-run's reuse and the image list's first facts read them). Fails without the change (they stay)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    _, before = run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST)
    _results(settings, store, before["shards"])
    ranges_prefix, parts_prefix = layout.shard_ranges_prefix(TASK), layout.list_facts_parts_prefix(TASK)
    for first in (0, 1, before["shards"] - 1):  # deployments parts: one of a batch the next listing writes too
        store.write_json(settings.container, layout.list_facts_part_blob(TASK, first), [])
    for i in range(12):  # deleted before the failed run was resumed: 4 shards fewer
        store.service.get_blob_client(container, f"big/{i:03d}.jpg").delete_blob()
    calls: list[tuple[str, Any]] = []

    _, after = run_parallel(settings, store, TASK, request, SMALL, run_job=RESUMED, calls=calls)

    assert after["shards"] == before["shards"] - 4
    for i in range(after["shards"], before["shards"] + 1):
        assert _names(settings, store, layout.shard_prefix(TASK, layout.shard_id(i))) == []
    per_write = SMALL.images_per_write // request.images_per_shard  # shards a manifest write cuts
    assert _batch_firsts(settings, store, ranges_prefix) == list(range(0, after["shards"], per_write))
    assert all(layout.shard_index(row[0]) < after["shards"]
               for n in _names(settings, store, ranges_prefix) for row in store.read_json(settings.container, n))
    assert _batch_firsts(settings, store, parts_prefix) == [0]
    for i in range(after["shards"]):  # below the count: what the resumed run's shards hold, results included
        sid = layout.shard_id(i)
        assert store.exists(settings.container, layout.manifest_blob(TASK, sid, 1))
        assert store.exists(settings.container, layout.shard_etags_blob(TASK, sid))
        assert store.exists(settings.container, layout.attempt_results_blob(TASK, sid, 1))
    finish = next(p for name, p in calls if name == c.FINISH_ENUMERATION)
    # a retried call: the same, nothing more goes; the shards found finished or partly covered are what the
    # enumeration gathers from the manifest writes beside the finish call's output (orchestrations.enumeration)
    listed = {k: v for k, v in after.items() if k not in ("done", "partly")}
    assert "done" in after and _finish_again(settings, store, request, finish) == listed
    assert store.exists(settings.container, layout.attempt_results_blob(TASK, layout.shard_id(after["shards"] - 1), 1))


def test_every_shard_folder_an_earlier_listing_left_past_the_count_goes_gaps_or_not(
        env: tuple[Settings, BlobStore, str]) -> None:
    """A terminated run's manifest writes run in parallel and can leave gaps: here the earlier listing's shards at
    the new count and two past it are missing, and a write of a batch further on (shard ``before + 3``) landed. The
    end of the listing found what to delete by probing ``shards``, ``shards + 1``, ... up to the first shard with no
    blob, so it stopped at the first gap and everything after it stayed for good; it now lists the shards folder.
    Shards below the count, and a folder of the shards folder that names no shard, stay. Fails without the change
    (shards ``after + 1``, ``after + 3`` and ``before + 3`` stay)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    _, before = run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST)
    _results(settings, store, before["shards"])
    for i in range(12):  # deleted before the failed run was resumed: 4 shards fewer
        store.service.get_blob_client(container, f"big/{i:03d}.jpg").delete_blob()
    after = before["shards"] - 4
    for index in (after, after + 2):  # the gaps: these shards' manifest writes never ran
        listing_leftovers.delete_prefix(store, settings.container, layout.shard_prefix(TASK, layout.shard_id(index)))
    far = layout.manifest_blob(TASK, layout.shard_id(before["shards"] + 3), 1)
    store.write_json(settings.container, far, {"images": ["big/000.jpg"]})
    other = layout.shards_prefix(TASK) + "notes/kept.json"
    store.write_json(settings.container, other, {})

    _, out = run_parallel(settings, store, TASK, request, SMALL, run_job=RESUMED)

    assert out["shards"] == after
    assert _names(settings, store, layout.shards_prefix(TASK)) == sorted(
        [n for i in range(after) for n in _names(settings, store, layout.shard_prefix(TASK, layout.shard_id(i)))]
        + [other])
    for i in range(after):  # below the count: what the resumed run's shards hold, results included
        assert store.exists(settings.container, layout.attempt_results_blob(TASK, layout.shard_id(i), 1))


def test_a_replaced_runs_late_listing_end_deletes_no_shard_folder_past_a_gap(
        env: tuple[Settings, BlobStore, str]) -> None:
    """The same late summary call as below, the replacing run's shards past the old count behind a gap (a shard
    folder that listing has not written yet): found by the listing of the shards folder, none of them may go. Fails
    with the marker's check left out (the replacing run's shards past the gap go)."""
    settings, store, container = env
    request, listed, calls = _listed_by_the_run_replacing(env, FIRST)
    late = {**next(p for name, p in calls if name == c.FINISH_ENUMERATION), "shards": listed["shards"] - 4,
            "listing_run": FIRST, "not_images_plan": False, "not_images_parts": []}
    store.write_json(settings.container, layout.listing_plan_blob(TASK, FIRST), {"units": 1})
    gap = layout.shard_id(listed["shards"] - 4)
    listing_leftovers.delete_prefix(store, settings.container, layout.shard_prefix(TASK, gap))
    kept = [n for i in range(listed["shards"]) if layout.shard_id(i) != gap
            for n in _names(settings, store, layout.shard_prefix(TASK, layout.shard_id(i)))]

    _finish_again(settings, store, request, late)

    assert _names(settings, store, layout.shards_prefix(TASK)) == kept


def test_a_replaced_runs_late_listing_end_deletes_nothing_past_its_count(env: tuple[Settings, BlobStore, str]) -> None:
    """A terminated run's summary call already past its check ends after the run replacing it wrote its own shards,
    maybe more of them: it must delete none of them (its cancel marker names the replacing run). Fails with the
    marker's check left out (the replacing run's shards past the old count go)."""
    settings, store, container = env
    request, listed, calls = _listed_by_the_run_replacing(env, FIRST)
    late = {**next(p for name, p in calls if name == c.FINISH_ENUMERATION), "shards": listed["shards"] - 4,
            "listing_run": FIRST, "not_images_plan": False, "not_images_parts": []}  # tallies of a folder now gone
    store.write_json(settings.container, layout.listing_plan_blob(TASK, FIRST), {"units": 1})  # before the new end

    _finish_again(settings, store, request, late)

    for i in range(listed["shards"]):
        assert store.exists(settings.container, layout.manifest_blob(TASK, layout.shard_id(i), 1))
    assert max(_batch_firsts(settings, store, layout.shard_ranges_prefix(TASK))) >= listed["shards"] - 4


def test_the_end_of_a_runs_listing_deletes_its_working_files_and_the_tasks_loose_ones(
        env: tuple[Settings, BlobStore, str]) -> None:
    """Nothing reads a listing's working files once its summary is written (only the listing's own calls do), yet
    each completed run kept its folder (~1 GB of names at 10M images) and the task's loose files of a listing from
    before runs listed apart stayed for good. Now they go at the listing's end; what later steps read stays (summary,
    manifests, shard ranges, the deployments document); a retried summary call, its folder gone, answers as the first
    did (the files that are not images included). Fails without the change (the folder and the loose files stay)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    run_parallel(settings, store, TASK, request, SMALL)  # a run without an id: its listing in the task's folder
    loose = [n for n in _names(settings, store, layout.listing_prefix(TASK)) if layout.is_listing_work_file(TASK, n)]
    assert len(loose) > 10
    store.write_json(settings.container, layout.list_facts_blob(TASK), {})
    calls: list[tuple[str, Any]] = []

    _, out = run_parallel(settings, store, TASK, request, SMALL, run_job=RESUMED, calls=calls)

    assert out.get("not_images")
    left = _names(settings, store, layout.listing_prefix(TASK))
    assert layout.list_facts_blob(TASK) in left
    assert [n for n in left if n != layout.list_facts_blob(TASK)
            and not n.startswith(layout.shard_ranges_prefix(TASK))] == []
    assert store.read_json(settings.container, layout.enumeration_blob(TASK))["shards"] == out["shards"]
    finish = next(p for name, p in calls if name == c.FINISH_ENUMERATION)
    assert _finish_again(settings, store, request, finish) == out
    store.write_json(settings.container, layout.listing_plan_blob(TASK, RESUMED), {"units": 1})  # a late call's
    assert _finish_again(settings, store, request, {**finish, "not_images_plan": False,
                                                           "not_images_parts": []}) != out  # it finishes again
    assert _names(settings, store, layout.listing_work_prefix(TASK, RESUMED)) == []


@pytest.mark.parametrize("job", [TASK, FIRST], ids=["a run without an id", "a plan from before runs listed apart"])
def test_a_replaced_runs_late_listing_end_without_a_listing_run_deletes_nothing_past_its_count(
        env: tuple[Settings, BlobStore, str], job: str) -> None:
    """The replaced run's check must read its pool job's marker, not its ``listing_run``: that is "" for a run
    without an id (a later run replaces it too: its job is the task id) and for a run whose plan was made before runs
    listed apart (recorded histories), and such a late summary call deleted the replacing run's shards past its count
    with no check at all. Fails without the change (checked against the "" listing run: never replaced)."""
    settings, store, container = env
    request, listed, calls = _listed_by_the_run_replacing(env, job)
    late = next(p for name, p in calls if name == c.FINISH_ENUMERATION)

    out = run_finish_enumeration(TASK, request, settings, store, late["images"], listed["shards"] - 4, late["found"],
                                 late["parts"], cancel_job=job, run="")  # its listing in the task's folder

    assert out.get("cancelled") is True
    for i in range(listed["shards"]):
        assert store.exists(settings.container, layout.manifest_blob(TASK, layout.shard_id(i), 1))
    assert max(_batch_firsts(settings, store, layout.shard_ranges_prefix(TASK))) >= listed["shards"] - 4


def test_a_replaced_run_without_an_id_has_its_late_listing_end_refused_writing_nothing(
        env: tuple[Settings, BlobStore, str], storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started before runs had ids (its listing in the task's folder, ``listing_run`` "") carries no
    ``run_job``, so its calls were never refused; yet a later run replaces it too (``api.starters._ended_runs``: its
    job is the task id, whose cancel marker the replacing run writes naming itself). Its late summary call (the
    shell, as the host calls it; the orchestrator gives it ``cancel_job``, the run's pool job) then wrote its counts
    and request over the replacing run's (the merge reads the summary's count of shards) before its deletions' check.
    Now it is refused as an id'd run's is, writing nothing. Fails without the change (the summary is written over)."""
    from activities import enumerate as listing

    settings, store, container = env
    request, listed, calls = _listed_by_the_run_replacing(env, TASK)
    mine = next(p for name, p in calls if name == c.FINISH_ENUMERATION)
    late = {key: value for key, value in mine.items() if key not in ("run_job", "listing_run", "not_images_parts",
                                                                     "not_images_plan")}
    late.update(shards=listed["shards"] - 4, images=listed["images"] - 12, cancel_job=TASK)
    written = {name: store.read_bytes(settings.container, name)
               for name in (layout.enumeration_blob(TASK), layout.request_blob(TASK))}
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", settings.container)

    with pytest.raises(RunSuperseded):
        listing.finish_enumeration._function.get_user_function()(late)  # type: ignore[attr-defined]

    assert {name: store.read_bytes(settings.container, name) for name in written} == written
    for i in range(listed["shards"]):
        assert store.exists(settings.container, layout.manifest_blob(TASK, layout.shard_id(i), 1))


def test_a_listing_that_finds_no_images_keeps_the_earlier_listings_shards_and_results(
        env: tuple[Settings, BlobStore, str]) -> None:
    """A failed run resumed while its container is empty (emptied or moved for a while) finds no images: the task
    fails with "check the container and prefix", to be posted again once they are back, and that resumed run takes
    the results the first run's pool tasks wrote again, shard by shard. Deleting everything past a count of 0 lost
    them all (every image ran again). Fails without the change (every shard folder and batch blob goes)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    _, before = run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST)
    _results(settings, store, before["shards"])
    ranges = _names(settings, store, layout.shard_ranges_prefix(TASK))
    names = [n for n in store.list_names(container, "")]
    client = store.service.get_container_client(container)
    for name in names:  # the container emptied before the failed run was resumed
        client.delete_blob(name)

    _, after = run_parallel(settings, store, TASK, request, SMALL, run_job=RESUMED)

    assert after["images"] == after["shards"] == 0
    for i in range(before["shards"]):
        sid = layout.shard_id(i)
        assert store.exists(settings.container, layout.manifest_blob(TASK, sid, 1))
        assert store.exists(settings.container, layout.attempt_results_blob(TASK, sid, 1))
    assert _names(settings, store, layout.shard_ranges_prefix(TASK)) == ranges
    assert _names(settings, store, layout.listing_work_prefix(TASK, RESUMED)) == []  # its working files still go


def test_a_retried_listing_end_answers_when_its_folder_was_deleted_all_but_the_plan(
        env: tuple[Settings, BlobStore, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob batch's sub-requests succeed or fail one by one: the folder's deletion could leave the plan (its
    sub-request refused, its lone retry failing: logged, the call done) with the tallies gone, and a retried summary
    call (its output lost) then found the plan, did the work again and failed for good reading a tally. The plan now
    goes first, alone. Fails without the change (the retried call raises on the missing tally)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    plan = layout.listing_plan_blob(TASK, RESUMED)
    real = listing_leftovers.delete_prefix

    def all_but_the_plan(store_: BlobStore, where: str, prefix: str) -> int:
        if prefix != layout.listing_work_prefix(TASK, RESUMED):
            return real(store_, where, prefix)
        for name in list(store_.list_names(where, prefix)):
            if name != plan:
                store_.delete_if_exists(where, name)
        raise HttpResponseError("the plan's sub-request: 503 ServerBusy, and again alone")

    monkeypatch.setattr(listing_leftovers, "delete_prefix", all_but_the_plan)
    calls: list[tuple[str, Any]] = []
    _, out = run_parallel(settings, store, TASK, request, SMALL, run_job=RESUMED, calls=calls)
    assert out.get("not_images")  # tallies a retried call that did the work again would read

    finish = next(p for name, p in calls if name == c.FINISH_ENUMERATION)
    assert _finish_again(settings, store, request, finish) == out


def test_a_late_copy_of_an_ended_runs_listing_end_writes_and_deletes_nothing(
        env: tuple[Settings, BlobStore, str]) -> None:
    """An activity message is delivered at least once: a copy of a run's summary call can run again after that run
    ended by itself (no cancel marker says anything then) and after a later run's listing ended. Its plan is gone
    (its own end deleted its folder) and the summary names the later run: it must write and delete nothing. Before,
    it did the work again: the ended run's counts over the later summary (the merge then reads fewer shards) and the
    later run's shards past them deleted. Fails without the change (the later summary and shards are lost)."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    away = [f"big/{i:03d}.jpg" for i in range(12)]
    for name in away:  # not there while the first run listed
        store.service.get_blob_client(container, name).delete_blob()
    first_calls: list[tuple[str, Any]] = []
    _, first = run_parallel(settings, store, TASK, request, SMALL, run_job=FIRST, calls=first_calls)
    for name in away:
        store.write_bytes(container, name, b"")
    _, later = run_parallel(settings, store, TASK, request, SMALL, run_job=RESUMED)
    assert later["shards"] == first["shards"] + 4
    summary = store.read_json(settings.container, layout.enumeration_blob(TASK))
    copy = {**next(p for name, p in first_calls if name == c.FINISH_ENUMERATION), "not_images_plan": False,
            "not_images_parts": []}  # a listing that passed over nothing: no tally to fail on

    with pytest.raises(RunSuperseded):
        _finish_again(settings, store, request, copy)

    assert store.read_json(settings.container, layout.enumeration_blob(TASK)) == summary
    for i in range(later["shards"]):
        assert store.exists(settings.container, layout.manifest_blob(TASK, layout.shard_id(i), 1))


def _listed_by_the_run_replacing(env: tuple[Settings, BlobStore, str], job: str
                                 ) -> tuple[TaskRequest, dict[str, Any], list[tuple[str, Any]]]:
    """The resumed run's listing (shards of 3), then the marker that ends the run of pool job ``job`` naming it, as
    the replacing run writes it: the request, the listing's summary and the calls it made."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    calls: list[tuple[str, Any]] = []
    _, listed = run_parallel(settings, store, TASK, request, SMALL, run_job=RESUMED, calls=calls)
    run_stop_groups({"task_id": TASK, "job_id": job, "reason": "terminated", "superseded_by": "r261201130000cd34"},
                    settings, store)
    return request, listed, calls
