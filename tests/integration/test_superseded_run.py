"""A terminated run's late merge calls against Azurite, after a resumed run merged under the same key.

Terminating an orchestration leaves its activities to run: "Terminating an orchestration instance has no effect on any
in-flight activity function executions or sub-orchestrations that were started by the terminated orchestration"
(Durable Functions, ``IDurableOrchestrationClient.TerminateAsync``), and the activity messages it queued are still
dispatched. A plain post resumes the run under the same key (``api.starters._generations``). The resumed run's first
step marks the terminated run superseded (orchestrations.task ``_end_terminated_run``, STOP_GROUPS with
``superseded_by``); the terminated run's merge parts, combine, search and cleanup then write nothing
(``activities.superseded``). Real fan-in activities, the real ``orchestrations.fanin`` replayed by the SDK.
"""
from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from activities.pool import run_stop_groups
from core import contracts as c
from core.errors import RunSuperseded
from core.settings import OrchestrationKnobs
from gpu_batch import layout
from gpu_batch.manifest import ShardManifest
from orchestrations.enumeration import enumerate_in_parallel
from orchestrations.fanin import fan_in
from tests.integration.test_fanin import MODEL, real_activities, task, write_task_images  # noqa: F401 - fixture
from tests.unit.test_notify import receiver  # noqa: F401 - a fixture
from tests.orchestrations.replay import T0, run_orchestrator

FIRST, SECOND, THIRD = "r261201120000ab12", "r261201130000cd34", "r261201140000ef56"


@pytest.fixture
def task_images(store: Any, unique_name: str) -> str:
    """``task``'s images in a container of the test's own, not test_fanin's one per module: these tests stop the
    task's pool jobs (``run_stop_groups``), whose records outlive the test, so each needs a task id of its own (it
    follows from the request, and so from the images' container)."""
    return write_task_images(store, unique_name)


def run_merge(context: Any) -> Any:
    d = context.get_input()
    return (yield from fan_in(context, d["task_id"], d["model"], d["images"], d["shards"],
                              OrchestrationKnobs(merge_images_per_part=d["images_per_part"]), run_job=d["run_job"]))


def served(settings: Any, store: Any, tid: str) -> dict[str, bytes]:
    names = [layout.results_blob(tid), layout.csv_blob(tid), layout.preview_sample_blob(tid), layout.repeats_blob(tid)]
    return {name: store.read_bytes(settings.container, name) for name in names}


def resume_replacing(settings: Any, store: Any, tid: str, old_job: str, data: dict[str, Any]) -> tuple[Any, Any]:
    """The resumed run: its first step ends the terminated run (the cancel marker names the run replacing it), its
    pool work gives shard 2 the results it lacked, then it merges. Returns the merge's run and shard 2's manifest."""
    run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "terminated", "superseded_by": SECOND},
                    settings, store)
    sid = layout.shard_id(2)
    m = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1)))
    store.write_bytes(settings.container, layout.attempt_results_blob(tid, sid, 2), json.dumps(
        {"images": [{"file": f, "detections": []} for f in m.images]}).encode())
    return run_orchestrator(run_merge, data, real_activities(settings, store), start=T0 + timedelta(hours=2)), m


def test_a_terminated_runs_late_merge_calls_leave_the_resumed_runs_results_as_they_are(task: Any) -> None:
    """The terminated run's part, combine, search and cleanup delivered after the resumed run merged. Before, the
    part wrote work blobs again under the names the resumed run's combine composes, and the combine, finding
    "another merge's" results, deleted what they were made into (the repeated-detection list, the exports, the README)
    and rewrote the served results file and preview sample with its own head: the terminated run's completion time
    and failure counts (shard 2's images counted failed) above entries that have them processed; its own part sizes
    over whatever part blobs were there. Fails without the change (the results file and sample differ)."""
    settings, store, tid, counts = task
    old_job, new_job = layout.pool_job_id(tid, FIRST), layout.pool_job_id(tid, SECOND)
    data = {"task_id": tid, "model": MODEL, "images_per_part": 1000, **counts}
    first = run_orchestrator(run_merge, {**data, "run_job": old_job}, real_activities(settings, store))
    assert first.status == "Completed"
    late = {name: first.calls(name)[0].input for name in (c.MERGE_PART, c.MERGE_COMBINE, c.SEARCH_REPEATS,
                                                          c.RANK_REPEATS, c.CLEAN_MERGE_WORK)}
    assert all(payload["run_job"] == old_job for payload in late.values())
    # the resumed run's first step (before its listing); then its pool work gave shard 2 the results it lacked
    again, m = resume_replacing(settings, store, tid, old_job, {**data, "run_job": new_job})
    assert again.status == "Completed" and again.output["failed"] == first.output["failed"] - len(m.images)
    theirs = served(settings, store, tid)

    answer = real_activities(settings, store)
    refused = []
    for name, payload in late.items():
        try:
            answer(name, payload)
        except RunSuperseded as exc:
            refused.append(str(exc))

    assert served(settings, store, tid) == theirs
    assert not list(store.list_names(settings.container, layout.merge_work_prefix(tid, "")))  # no part written
    assert len(refused) == len(late)
    assert all(f"pool job {old_job} was not done: that run was terminated (or failed with its work running) and run "
               f"{SECOND} of the task replaces it" in words for words in refused)


def test_a_cancelled_run_and_a_call_without_its_run_are_not_refused(task: Any) -> None:
    """POST .../cancel writes the same marker without ``superseded_by``: a run cancelled as its groups ended merges
    as before; and a call made before calls carried their run (no ``run_job``) is never refused."""
    settings, store, tid, counts = task
    job = layout.pool_job_id(tid, FIRST)
    store.write_json(settings.container, layout.cancel_marker(job), {"requested": "2026-12-01T12:00:00+00:00"})
    data = {"task_id": tid, "model": MODEL, "images_per_part": 1000, **counts}
    assert run_orchestrator(run_merge, {**data, "run_job": job}, real_activities(settings, store)).status == "Completed"
    run_stop_groups({"task_id": tid, "job_id": job, "reason": "terminated", "superseded_by": SECOND}, settings, store)
    assert run_orchestrator(run_merge, {**data, "run_job": ""}, real_activities(settings, store),
                            start=T0 + timedelta(hours=1)).status == "Completed"


def test_a_failing_group_of_a_replaced_run_leaves_the_marker_that_names_the_run_replacing_it(task: Any) -> None:
    """A shard group of the replaced run fails after the new run wrote the marker (a pool step refused once the new
    run closed its job) and, as every failing group does, stops its run's groups: STOP_GROUPS without
    ``superseded_by`` (orchestrations.shards ``run_shards``). The marker keeps ``superseded_by``, so that run's late
    calls are still refused. Where no marker is, the stop writes one: the groups stop, nothing is refused. Fails
    without the change: the stop wrote its own marker over the one naming the replacing run."""
    from activities.superseded import refuse_if_superseded

    settings, store, tid, _ = task
    old_job, new_job = layout.pool_job_id(tid, FIRST), layout.pool_job_id(tid, SECOND)
    run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "terminated", "superseded_by": SECOND},
                    settings, store)
    run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "JobClosed: the pool job was terminated"},
                    settings, store)
    assert store.read_json(settings.container, layout.cancel_marker(old_job))["superseded_by"] == SECOND
    try:
        refuse_if_superseded(store, settings, {"task_id": tid, "run_job": old_job}, "the merge")
        raise AssertionError("the replaced run's late call was not refused")
    except RunSuperseded:
        pass

    run_stop_groups({"task_id": tid, "job_id": new_job, "reason": "JobClosed: the pool job was deleted"},
                    settings, store)
    marker = store.read_json(settings.container, layout.cancel_marker(new_job))
    assert marker["by"] == "a failing shard group" and "JobClosed" in marker["reason"] and "superseded_by" not in marker
    refuse_if_superseded(store, settings, {"task_id": tid, "run_job": new_job}, "the merge")  # a stop refuses nothing


def test_a_terminated_runs_late_preview_pages_and_promotion_are_not_written(
        storage_connection: str, unique_name: str, monkeypatch: Any) -> None:
    """The previews and promote activities (their shells, as the host calls them): the terminated run's late pages
    would replace the resumed run's under the same key, and its late promotion would serve its generation, and take
    the served generation's pages off the website, under a re-run started after it. Fails without the change (the
    pages and README are written, the pointer moves)."""
    from activities.generations import promote_generation
    from activities.previews import render_previews
    from adapters.blobs import BlobStore, service_client
    from adapters.preview_folders import existing_preview_folder
    from core.settings import Settings
    from tests.integration.test_readme import _merged_task_of_jpegs

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s"})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(unique_name)
    tid = _merged_task_of_jpegs(settings, store, unique_name, ("a",), 3)
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", settings.container)
    old_job = layout.pool_job_id(tid, FIRST)
    run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "terminated", "superseded_by": SECOND},
                    settings, store)
    before = set(store.list_names(settings.container, layout.results_prefix(tid)))

    previews = render_previews._function.get_user_function()  # type: ignore[attr-defined]
    promote = promote_generation._function.get_user_function()  # type: ignore[attr-defined]
    refused = []
    for shell, payload in ((previews, {"task_id": tid, "model": "m.pt", "request_name": "", "run_job": old_job}),
                           (promote, {"task_id": tid, "generation": FIRST, "run_job": old_job})):
        try:
            shell(payload)
        except RunSuperseded as exc:
            refused.append(str(exc))

    assert not store.exists(settings.container, layout.current_generation_blob(tid))  # nothing promoted
    assert set(store.list_names(settings.container, layout.results_prefix(tid))) == before  # no README
    assert existing_preview_folder(store, settings, tid) is None  # no page: the folder is made with the first
    assert len(refused) == 2 and all(f"run {SECOND} of the task replaces it" in words for words in refused)
    # the resumed run's own calls (its job's marker names no replacement) go on
    assert previews({"task_id": tid, "model": "m.pt", "request_name": "",
                     "run_job": layout.pool_job_id(tid, SECOND)})["counts"]


def exports_activities(settings: Any, store: Any) -> Any:
    """The exports step's real activity bodies against Azurite (the single activity is not reached: the merge's
    output fans out, even over one part)."""
    from activities.exportevents import run_exports_events, run_exports_link_part
    from activities.exportparts import run_exports_combine, run_exports_part, run_exports_zooniverse
    from activities.zooniverse_captures import run_captures_combine, run_captures_part
    from activities.zooniverseparts import run_zooniverse_clean, run_zooniverse_combine, run_zooniverse_part

    bodies: dict[str, Any] = {
        c.EXPORTS_PART: run_exports_part, c.EXPORTS_EVENTS: run_exports_events,
        c.EXPORTS_LINK_PART: run_exports_link_part, c.EXPORTS_COMBINE: run_exports_combine,
        c.EXPORTS_ZOONIVERSE: run_exports_zooniverse, c.EXPORTS_ZOONIVERSE_PART: run_zooniverse_part,
        c.EXPORTS_ZOONIVERSE_COMBINE: run_zooniverse_combine, c.EXPORTS_ZOONIVERSE_CLEAN: run_zooniverse_clean,
        c.EXPORTS_CAPTURES_PART: run_captures_part, c.EXPORTS_CAPTURES_COMBINE: run_captures_combine}
    return lambda name, payload: bodies[name](payload, settings, store)


def run_exports_step(context: Any) -> Any:
    from orchestrations.exports import exports

    d = context.get_input()
    return (yield from exports(context, d["task_id"], "", d["merged"], run_job=d["run_job"]))


def test_a_terminated_runs_late_exports_calls_leave_the_resumed_runs_exports_as_they_are(task: Any) -> None:
    """The exports step's calls of the terminated run delivered after the resumed run wrote its exports (its parts,
    events, links, combine, Zooniverse parts, combines and cleanup): each refuses, and the resumed run's exports
    stay as they were. Before, they read the resumed run's results file at the terminated run's byte ranges and
    composed the exports from what they wrote. Fails without the change (they ran)."""
    settings, store, tid, counts = task
    old_job, new_job = layout.pool_job_id(tid, FIRST), layout.pool_job_id(tid, SECOND)
    data = {"task_id": tid, "model": MODEL, "images_per_part": 24, **counts}
    first = run_orchestrator(run_merge, {**data, "run_job": old_job}, real_activities(settings, store))
    exported = run_orchestrator(run_exports_step, {"task_id": tid, "merged": first.output, "run_job": old_job},
                                exports_activities(settings, store))
    assert exported.status == "Completed", exported.error
    late = [(call.name, call.input) for call in exported.activities]
    assert len({name for name, _ in late}) >= 4 and all(p["run_job"] == old_job for _, p in late)
    again, _ = resume_replacing(settings, store, tid, old_job, {**data, "run_job": new_job})
    assert run_orchestrator(run_exports_step, {"task_id": tid, "merged": again.output, "run_job": new_job},
                            exports_activities(settings, store)).status == "Completed"
    prefix = layout.exports_prefix(tid)
    theirs = {n: store.read_bytes(settings.container, n) for n in store.list_names(settings.container, prefix)}

    answer = exports_activities(settings, store)
    refused = 0
    for name, payload in late:
        try:
            answer(name, payload)
        except RunSuperseded:
            refused += 1

    assert {n: store.read_bytes(settings.container, n) for n in store.list_names(settings.container, prefix)} == theirs
    assert refused == len(late)


def test_a_terminated_runs_late_listing_calls_write_nothing(storage_connection: str, unique_name: str,
                                                             monkeypatch: Any) -> None:
    """The listing's calls (plan, parts, sample, manifests, summary; their shells, as the host calls them): a run
    terminated while it listed leaves them queued, and the run that resumes it lists again under the same key, maybe
    after more images were uploaded. Before, the terminated run's late parts and manifest writes wrote its own
    listing's names there, beside or over the new listing's: shards cut from another listing than the one counted.
    Fails without the change (the plan's blobs are written)."""
    from activities import enumerate as listing
    from adapters.blobs import BlobStore, service_client
    from core.requests import parse_task_request
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s"})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(unique_name)
    store.ensure_container(settings.container)
    for i in range(6):
        store.write_bytes(unique_name, f"cam/img{i}.jpg", b"x")
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", settings.container)
    parsed = parse_task_request({"container": unique_name, "model": MODEL, "images_per_shard": 4})
    request, tid = parsed.to_dict(), parsed.task_id
    old_job = layout.pool_job_id(tid, FIRST)
    run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "terminated", "superseded_by": SECOND},
                    settings, store)
    common = {"task_id": tid, "request": request, "run_job": old_job}
    calls = [(listing.plan_listing, common), (listing.list_images_part, {**common, "unit": 0, "part": 0}),
             (listing.choose_sample, {**common, "parts": [[0, 0]]}),
             (listing.write_shard_manifests, {**common, "parts": [[0, 0]], "first": 0, "count": 2,
                                              "slices": [{"part": 0, "skip": 0, "take": 6}], "sampled": False}),
             (listing.finish_enumeration, {**common, "images": 6, "shards": 2, "found": 6, "parts": 1})]
    refused = 0
    for activity, payload in calls:
        try:
            activity._function.get_user_function()(payload)  # type: ignore[attr-defined]
        except RunSuperseded:
            refused += 1
        except Exception:  # noqa: BLE001 - without the check, a call whose earlier step never ran may fail
            pass

    assert list(store.list_names(settings.container, layout.task_prefix(tid))) == [layout.cancel_marker(old_job)]
    assert refused == len(calls)


def test_a_terminated_runs_late_word_of_its_end_is_not_delivered(storage_connection: str, unique_name: str,
                                                                  receiver: dict[str, Any], tmp_path: Any,
                                                                  monkeypatch: Any) -> None:
    """The notification, the done file beside a dropped request and the Event Grid event (their shells, as the host
    calls them): a run terminated while it told of its end (the notification retries for minutes) leaves its calls to
    run, and a later run of the task may have started by then. Before, the receiver got the old run's "completed" or
    "failed" as if it were the task's current end, the done file said the old run's end beside the request the new
    run works on, and subscribers got its event. Now each refuses once the marker names the replacing run; the
    replacing run's own word goes out, naming its run. Fails without the change (all three were delivered)."""
    from activities import notify as notify_activity
    from activities import task_events as events_activity
    from adapters.blobs import BlobStore, service_client
    from core import notify
    from core.settings import Settings
    from tests.unit.test_notify import SECRET, STATUS

    hook = receiver
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"notify-key": SECRET}))
    env = {"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s",
           "TRAPBATCH_NOTIFY_HOSTS": hook["host"], "TRAPBATCH_NOTIFY_SECRET": "notify-key",
           "TRAPBATCH_LOCAL_SECRETS_FILE": str(secrets),
           "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT": "https://topic.westeurope-1.eventgrid.azure.net/api/events"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(env)
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(layout.INCOMING_CONTAINER)
    store.ensure_container(settings.container)
    published: list[dict[str, Any]] = []

    class Topic:
        def publish(self, events: list[dict[str, Any]]) -> int:
            published.extend(events)
            return 200

    monkeypatch.setattr(events_activity, "_publisher", lambda endpoint: Topic())
    tid = "task-" + unique_name
    run_stop_groups({"task_id": tid, "job_id": layout.pool_job_id(tid, FIRST), "reason": "terminated",
                     "superseded_by": SECOND}, settings, store)
    drop = f"{unique_name}/survey.json"
    shells = [(notify_activity.notify_task_end, {"task_id": tid, "url": hook["url"], "status": STATUS}),
              (notify_activity.drop_answer, {"task_id": tid, "drop": drop, "kind": "done", "status": STATUS}),
              (events_activity.publish_task_event, {"task_id": tid, "status": STATUS})]
    def of_run(payload: dict[str, Any], run: str) -> dict[str, Any]:
        named = {} if "drop" in payload else {"run": run}  # the notification and the event name their run
        return {**payload, **named, "run_job": layout.pool_job_id(tid, run)}

    refused = []
    for shell, payload in shells:
        try:
            shell._function.get_user_function()(of_run(payload, FIRST))  # type: ignore[attr-defined]
        except RunSuperseded as exc:
            refused.append(str(exc))

    assert hook["got"] == [] and published == []
    assert not store.exists(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"))
    assert len(refused) == 3 and all(f"run {SECOND} of the task replaces it" in words for words in refused)

    # the replacing run's own word goes out, and names its run (body, delivery id, event id and data)
    for shell, payload in shells:
        shell._function.get_user_function()(of_run(payload, SECOND))  # type: ignore[attr-defined]
    [(headers, raw)] = hook["got"]
    assert json.loads(raw)["run"] == SECOND and headers[notify.DELIVERY_HEADER] == f"{tid}/{SECOND}/completed"
    assert published[0]["id"] == f"{tid}/{SECOND}/completed" and published[0]["data"]["run"] == SECOND
    assert store.read_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"))["id"] == tid


def test_a_promotion_takes_off_the_pages_of_a_terminated_reruns_generation(storage_connection: str,
                                                                             unique_name: str) -> None:
    """Re-run FIRST published its pages and was terminated before its promotion; a new re-run, SECOND, then ran under
    a generation of its own, ``previous`` the first generation, which was served. Before, SECOND's promotion took the
    first generation's pages off and FIRST's stayed on the public website with nothing to delete them (``DELETE
    .../previews`` and the expiry act on the served generation). Now they go too; the served generation's pages stay.
    Fails without the change (FIRST's pages and folder record stay)."""
    from activities.generations import run_promote
    from adapters.blobs import BlobStore, service_client
    from adapters.preview_folders import existing_preview_folder, preview_folder
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s",
                                  "TRAPBATCH_WEB_CONTAINER": unique_name + "w"})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(settings.container)
    store.ensure_container(settings.web_container)
    tid = "task-" + unique_name
    keys = {run: layout.generation_key(tid, run) for run in ("", FIRST, SECOND)}
    folders = {}
    for run, key in keys.items():
        folders[run] = preview_folder(store, settings, key)
        store.write_bytes(settings.web_container, layout.page_blob(folders[run]), b"<html>", "text/html")
    # a generation folder without pages, and a folder that is no generation's: left alone
    store.write_json(settings.container, layout.results_blob(layout.generation_key(tid, "r261201110000ef56")), {})
    store.write_json(settings.container, layout.results_prefix(tid) + "runs/notarun/x.json", {})

    out = run_promote(tid, SECOND, "", settings, store)

    assert store.read_json(settings.container, layout.current_generation_blob(tid)) == {"generation": SECOND}
    assert existing_preview_folder(store, settings, keys[FIRST]) is None  # the terminated re-run's: gone
    assert existing_preview_folder(store, settings, keys[""]) is None  # previous: gone, as before
    assert existing_preview_folder(store, settings, keys[SECOND]) == folders[SECOND]  # the served generation's: kept
    left = set(store.list_names(settings.web_container))
    assert left == {layout.page_blob(folders[SECOND])} and out["previews_deleted"] == 2
    assert run_promote(tid, SECOND, "", settings, store)["previews_deleted"] == 0  # a retry finds them gone


class _LateWrites:
    """A store whose reads are the real store's and whose writes wait (``finish``): a call that read the listing
    state of its run and checked its marker, then wrote only later, as one past its check when the marker came."""

    WRITES = ("write_json", "write_compact_json", "write_bytes")

    def __init__(self, store: Any) -> None:
        self.store = store
        self.held: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        if name not in self.WRITES:
            return getattr(self.store, name)
        return lambda *args, **kwargs: self.held.append((name, args, kwargs))

    def finish(self) -> list[str]:
        for name, args, kwargs in self.held:
            getattr(self.store, name)(*args, **kwargs)
        return [args[1] for _, args, _ in self.held]


def run_listing(context: Any) -> Any:
    d = context.get_input()
    return (yield from enumerate_in_parallel(context, d["task_id"], d["request"], run_job=d["run_job"]))


def test_a_terminated_runs_listing_call_past_its_check_leaves_the_resumed_runs_listing_as_it_is(
        storage_connection: str, unique_name: str, monkeypatch: Any) -> None:
    """A listing call of the terminated run that had checked its marker before the resumed run wrote it (the listing
    is the resumed run's first step after the marker) writes its part after the resumed run wrote its part of the
    same number. Images were uploaded in between, so the two listings' parts differ. Before, both listings' working
    files had the task's names: the late call's part 1 (and cursor) replaced the resumed run's, whose shards were then
    cut from a part it had not counted: two images in no shard (and with other timings, one in two shards). Now each
    run lists into its own folder (``layout.listing_work_prefix``). Fails without the change (6 of the 8 images)."""
    from activities import enumerate as listing
    from adapters import clients
    from core.requests import parse_task_request
    from core.shards import ListingLimits
    from tests.integration.test_parallel_enumeration import manifests

    settings, store = _six_images_in_cam(storage_connection, unique_name, monkeypatch)
    # one unit, the folder "cam/" listed by the service in parts of two names (a continuation marker between them)
    monkeypatch.setattr(listing, "run_plan_listing", partial(listing.run_plan_listing, limits=ListingLimits(
        plan_items=1, names_per_call=2, page_size=2)))
    parsed = parse_task_request({"container": unique_name, "model": MODEL, "images_per_shard": 3})
    request, tid = parsed.to_dict(), parsed.task_id
    old_job, new_job = layout.pool_job_id(tid, FIRST), layout.pool_job_id(tid, SECOND)

    def call(activity: Any, payload: dict[str, Any]) -> Any:
        return activity._function.get_user_function()(payload)

    # the terminated run, as its orchestration called it: its plan, its part 0, then its part 1 checks and reads ...
    old = {"task_id": tid, "request": request, "run_job": old_job}
    plan = call(listing.plan_listing, {**old, "listing_run": old_job})
    old = {**old, **({"listing_run": plan["listing_run"]} if "listing_run" in plan else {})}
    assert call(listing.list_images_part, {**old, "unit": 0, "part": 0})["more"]
    late = _LateWrites(store)
    with monkeypatch.context() as m:
        m.setattr(clients, "store", lambda *a, **k: late)
        assert call(listing.list_images_part, {**old, "unit": 0, "part": 1})["images"] == 2
    assert late.held
    # ... images are uploaded, the run is terminated, and a plain post resumes it: its first step ends the old run
    for name in ("cam/img0a.jpg", "cam/img1a.jpg"):
        store.write_bytes(unique_name, name, b"x")
    run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "terminated", "superseded_by": SECOND},
                    settings, store)
    shells = {c.PLAN_LISTING: listing.plan_listing, c.LIST_PART: listing.list_images_part,
              c.CHOOSE_SAMPLE: listing.choose_sample, c.WRITE_SHARDS: listing.write_shard_manifests,
              c.FINISH_ENUMERATION: listing.finish_enumeration}
    finished: list[str] = []

    def answer(name: str, payload: dict[str, Any]) -> Any:
        out = call(shells[name], payload)
        if name == c.LIST_PART and payload["part"] == 1:  # the resumed run's part 1 is written: the late call writes
            finished.extend(late.finish())
        return out

    run = run_orchestrator(run_listing, {"task_id": tid, "request": request, "run_job": new_job}, answer,
                           instance_id=tid, start=T0 + timedelta(hours=2))
    assert run.status == "Completed", run.error
    assert finished  # the late call's part and cursor were written after the resumed run's part 1

    listed = sorted(store.list_names(unique_name, "cam/"))
    assert len(listed) == 8
    shards = manifests(settings, store, tid)
    assert sorted(n for shard in shards for n in shard) == listed
    assert run.output["images"] == 8


def test_a_terminated_runs_manifest_write_stops_soon_after_the_marker(storage_connection: str, unique_name: str,
                                                                      monkeypatch: Any) -> None:
    """A ``write_shard_manifests`` call of the terminated run past its first check when the resumed run wrote the
    marker: the manifests keep the task's names, so it wrote the rest of its batch. Now it reads the marker again
    after every ``RECHECK_IMAGES`` images written (1 here) and stops at the next shard. Fails without the change (all
    6 shards written, no refusal)."""
    from activities import enumerate as listing
    from adapters import clients
    from core.requests import parse_task_request

    settings, store = _six_images_in_cam(storage_connection, unique_name, monkeypatch)
    monkeypatch.setattr(listing, "RECHECK_IMAGES", 1, raising=False)
    parsed = parse_task_request({"container": unique_name, "model": MODEL, "images_per_shard": 1})
    request, tid = parsed.to_dict(), parsed.task_id
    old_job = layout.pool_job_id(tid, FIRST)
    old = {"task_id": tid, "request": request, "run_job": old_job, "listing_run": old_job}
    listing.plan_listing._function.get_user_function()(old)  # type: ignore[attr-defined]
    assert listing.list_images_part._function.get_user_function()(  # type: ignore[attr-defined]
        {**old, "unit": 0, "part": 0})["images"] == 6

    class MarkerAfterFirstManifest:
        """The real store; the resumed run writes the marker right after the call's first manifest."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def write_compact_json(self, container: str, name: str, doc: Any) -> None:
            store.write_compact_json(container, name, doc)
            if name == layout.manifest_blob(tid, layout.shard_id(0), 1):
                run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "terminated", "superseded_by": SECOND},
                                settings, store)

    monkeypatch.setattr(clients, "store", lambda *a, **k: MarkerAfterFirstManifest())
    refused = False
    try:
        listing.write_shard_manifests._function.get_user_function()(  # type: ignore[attr-defined]
            {**old, "parts": [[0, 0]], "first": 0, "count": 6, "slices": [{"part": 0, "skip": 0, "take": 6}],
             "sampled": False})
    except RunSuperseded:
        refused = True
    written = [i for i in range(6)
               if store.exists(settings.container, layout.manifest_blob(tid, layout.shard_id(i), 1))]
    assert refused and written == [0]  # the marker came as shard 0 was written; the read before shard 1 found it


def test_a_terminated_runs_failing_shard_group_keeps_the_marker_naming_the_run_that_replaced_it(
        storage_connection: str, unique_name: str) -> None:
    """Terminate does not reach the run's shard groups: one of them may fail (a worker failure no attempt fixes, an
    outage) after the replacing run wrote the run's cancel marker, and a failing group writes that marker too
    (STOP_GROUPS, to stop the run's other groups). Before, it wrote it anew, without ``superseded_by``: the terminated
    run's later late calls (listing, merge, exports, publishing, word of its end) were no longer refused, and a replaced
    run's late listing end no longer held back from deleting listings. A marker that names the replacing run stays as
    it is; the groups stop at it all the same, and a run not replaced gets the failing group's marker as before. Fails
    without the change (the late call is not refused)."""
    from activities.superseded import refuse_if_superseded, superseded_by
    from adapters.blobs import BlobStore, service_client
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(settings.container)
    tid = "task-groupfails"
    old_job, other_job = layout.pool_job_id(tid, FIRST), layout.pool_job_id(tid, SECOND)
    run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "terminated", "superseded_by": SECOND},
                    settings, store)

    assert run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "shard s00001 failed"}, settings,
                           store) == {"stopped": True}

    assert superseded_by(store, settings, old_job) == SECOND
    with pytest.raises(RunSuperseded):
        refuse_if_superseded(store, settings, {"task_id": tid, "run_job": old_job}, "the merge")
    run_stop_groups({"task_id": tid, "job_id": other_job, "reason": "shard s00001 failed"}, settings, store)
    marker = store.read_json(settings.container, layout.cancel_marker(other_job))
    assert marker["by"] == "a failing shard group" and "superseded_by" not in marker


class _ReplacedMeanwhile:
    """A ``BlobStore`` whose first request on one run's cancel marker is followed at once, before the caller's next,
    by the replacing run's STOP_GROUPS (its marker naming the replacing run): the two activities run in separate
    workers, so the replacing run's write may land between a failing group's read of the marker and its write."""

    def __init__(self, store: Any, settings: Any, task_id: str, job: str, replacing_run: str) -> None:
        self._store, self._settings, self._task_id, self._job, self._run = store, settings, task_id, job, replacing_run
        self.marker = layout.cancel_marker(job)
        self.done = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def call(container: str, blob: str, *args: Any, **kwargs: Any) -> Any:
            out = method(container, blob, *args, **kwargs)
            if blob == self.marker and not self.done:
                self.done = True
                run_stop_groups({"task_id": self._task_id, "job_id": self._job, "reason": "terminated",
                                 "superseded_by": self._run}, self._settings, self._store)
            return out

        return call


def test_a_failing_shard_group_racing_the_replacing_runs_marker_never_writes_over_it(
        storage_connection: str, unique_name: str) -> None:
    """A shard group of a terminated run fails just as the replacing run starts: its STOP_GROUPS and the replacing
    run's (``superseded_by``) run at once in two workers. Before, the failing group read the marker (none yet), the
    replacing run wrote it, and the group then wrote its own over it, without ``superseded_by``: the terminated run's
    late calls were no longer refused (``activities.superseded``). Now a failing group only creates a marker where
    there is none (Put Blob with If-None-Match: *): any marker already stops the run's groups. Fails without the
    change (the marker lost ``superseded_by``)."""
    from activities.superseded import refuse_if_superseded, superseded_by
    from adapters.blobs import BlobStore, service_client
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(settings.container)
    tid = "task-grouprace"
    old_job = layout.pool_job_id(tid, FIRST)
    racing = _ReplacedMeanwhile(store, settings, tid, old_job, SECOND)

    assert run_stop_groups({"task_id": tid, "job_id": old_job, "reason": "shard s00001 failed"}, settings,
                           racing) == {"stopped": True}  # type: ignore[arg-type]

    assert racing.done  # the replacing run's marker was written during the failing group's call
    assert superseded_by(store, settings, old_job) == SECOND
    with pytest.raises(RunSuperseded):
        refuse_if_superseded(store, settings, {"task_id": tid, "run_job": old_job}, "the merge")
    # a run nobody replaced still gets the failing group's marker, and a second failing group leaves it as it is
    other_job = layout.pool_job_id(tid, SECOND)
    run_stop_groups({"task_id": tid, "job_id": other_job, "reason": "shard s00002 failed"}, settings, store)
    run_stop_groups({"task_id": tid, "job_id": other_job, "reason": "shard s00003 failed"}, settings, store)
    marker = store.read_json(settings.container, layout.cancel_marker(other_job))
    assert marker["by"] == "a failing shard group" and "superseded_by" not in marker, marker
    assert marker["reason"] == "shard s00002 failed", marker


def _cancel_setup(storage_connection: str, unique_name: str, monkeypatch: Any) -> tuple[Any, Any]:
    """Settings and a store on a fresh container of Azurite, which the cancel's handler reads from the environment."""
    from adapters.blobs import BlobStore, service_client
    from core.settings import Settings

    env = {"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(env)
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(settings.container)
    return settings, store


def test_a_cancel_racing_the_run_that_replaces_the_cancelled_run_keeps_its_mark(
        storage_connection: str, unique_name: str, monkeypatch: Any) -> None:
    """POST .../cancel reads which run is running (run FIRST, detecting), then writes that run's cancel marker.
    Between the two, FIRST was terminated and a post resumed the task: the replacing run's first step wrote FIRST's
    marker naming itself (STOP_GROUPS with ``superseded_by``). Before, the cancel then wrote its own marker over it,
    and FIRST's queued merge, publishing and notification calls were no longer refused (activities.superseded). Now
    the marker keeps ``superseded_by``, and the cancel answers 409 saying the run it was for was replaced and that
    nothing was cancelled, without the event that would reach the replacing run. A cancel without the race still
    writes its marker and shows as a cancel. Fails without the change (the marker lost ``superseded_by``; 202)."""
    from activities.superseded import refuse_if_superseded, superseded_by
    from api.cancel_marker import BY
    from tests.unit.test_api_cancel import TASK, RecordingClient, _cancel

    settings, store = _cancel_setup(storage_connection, unique_name, monkeypatch)
    old_job = layout.pool_job_id(TASK, FIRST)

    class Racing(RecordingClient):
        """The task hub as the cancel reads it: run FIRST running; its input read (the cancel's last read before
        its write) is followed at once by the replacing run's marker."""

        def __init__(self, stage: str) -> None:
            super().__init__("Running", stage)
            self.status.input_ = json.dumps({"run": FIRST})
            self.replaced = False

        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("show_input") and not self.replaced:
                self.replaced = True
                run_stop_groups({"task_id": TASK, "job_id": old_job, "reason": "terminated",
                                 "superseded_by": SECOND}, settings, store)
            return self.status

    for stage in ("detecting", "enumerating"):  # "enumerating": the cancel would raise its event too
        store.delete_if_exists(settings.container, layout.cancel_marker(old_job))
        client = Racing(stage)
        status, body = _cancel(client)

        assert client.replaced
        assert superseded_by(store, settings, old_job) == SECOND  # FIRST's late calls are still refused
        with pytest.raises(RunSuperseded):
            refuse_if_superseded(store, settings, {"task_id": TASK, "run_job": old_job}, "the merge")
        assert status == 409, body
        assert f"run {SECOND}" in body["error"] and "nothing was cancelled" in body["error"]
        assert f"POST /api/tasks/{TASK}/cancel again" in body["hint"]
        assert client.events == []  # nothing reaches the replacing run, which nobody asked to cancel

    # no race: the marker is written (over a failing group's stop too), and says it is a cancel
    other_job = layout.pool_job_id(TASK, SECOND)
    run_stop_groups({"task_id": TASK, "job_id": other_job, "reason": "shard s00001 failed"}, settings, store)
    client = RecordingClient("Running", "detecting")
    client.status.input_ = json.dumps({"run": SECOND})
    status, body = _cancel(client)
    assert status == 202 and body["cancel_requested"], body
    marker = store.read_json(settings.container, layout.cancel_marker(other_job))
    assert marker["by"] == BY and "superseded_by" not in marker and "requested" in marker
    refuse_if_superseded(store, settings, {"task_id": TASK, "run_job": other_job}, "the merge")  # a cancel refuses


def test_the_cancels_marker_write_is_conditional_on_the_marker_it_read(storage_connection: str, unique_name: str,
                                                                        monkeypatch: Any) -> None:
    """The same race a step later: the replacing run's marker lands between the cancel's read of the marker and its
    write. Where there was none, the cancel's create (Put Blob with If-None-Match: *) meets 409 BlobAlreadyExists;
    where a failing group's stop was, its replace (If-Match: the ETag it read) meets 412 ConditionNotMet. Either way
    it reads again, finds the marker naming the replacing run and keeps it (``BlobStore.update_json``). Fails with an
    unconditional write (``write_json_if`` writing whatever is there: the mark is lost)."""
    from activities.superseded import superseded_by
    from api.cancel_marker import write_cancel_marker

    settings, store = _cancel_setup(storage_connection, unique_name, monkeypatch)
    tid = "task-cancelrace"
    for before in (None, "a failing group's stop"):
        job = layout.pool_job_id(tid, FIRST if before is None else SECOND)
        if before is not None:
            run_stop_groups({"task_id": tid, "job_id": job, "reason": before}, settings, store)
        reads: list[Any] = []
        read = store.read_json_version_or_none

        def racing_read(container: str, name: str, job: str = job, read: Any = read, reads: list[Any] = reads) -> Any:
            found = read(container, name)
            reads.append(found)
            if len(reads) == 1:  # the replacing run writes between the cancel's first read and its write
                run_stop_groups({"task_id": tid, "job_id": job, "reason": "terminated", "superseded_by": THIRD},
                                settings, store)
            return found

        with monkeypatch.context() as patched:
            patched.setattr(store, "read_json_version_or_none", racing_read)
            assert write_cancel_marker(store, settings.container, job) == THIRD

        assert len(reads) == 2 and (reads[0] is None) == (before is None)  # read again after the refused write
        assert reads[1][0]["superseded_by"] == THIRD
        assert superseded_by(store, settings, job) == THIRD
    # and without a race the write is made (created, then replaced by the ETag it read)
    job = layout.pool_job_id(tid, THIRD)
    assert write_cancel_marker(store, settings.container, job) is None
    assert write_cancel_marker(store, settings.container, job) is None
    assert store.read_json(settings.container, layout.cancel_marker(job))["by"].startswith("a cancel")


def test_a_terminated_runs_late_expiry_call_starts_or_moves_no_expiry(storage_connection: str, unique_name: str,
                                                                       monkeypatch: Any) -> None:
    """SCHEDULE_EXPIRY (its shell, as the host calls it): the expiry is the task's (one instance per task), so a
    terminated run's queued call, run after a later run replaced it, started an expiry the replacing run did not ask
    for, or told the waiting one (a re-run's ``move``) an old time, or none. Now it is refused once the marker names
    the replacing run; the replacing run's own call goes on, and so does a call without ``run_job`` (a run without
    an id, or one scheduled before calls carried it). Fails without the change (the expiry was started and moved)."""
    import asyncio
    from types import SimpleNamespace

    from activities.expiry import schedule_preview_expiry

    settings, store = _cancel_setup(storage_connection, unique_name, monkeypatch)
    tid = "task-" + unique_name

    class TaskHub:
        def __init__(self) -> None:
            self.started: list[Any] = []
            self.raised: list[Any] = []

        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            return SimpleNamespace(runtime_status=SimpleNamespace(value="Running") if self.started else None)

        async def start_new(self, name: str, instance_id: str, payload: Any) -> None:
            self.started.append(payload)

        async def raise_event(self, instance_id: str, name: str, data: Any) -> None:
            self.raised.append(data)

    # the function the host calls, less the SDK's wrapper that builds the client from the binding's JSON
    shell = schedule_preview_expiry._function.get_user_function().__wrapped__  # type: ignore[attr-defined]
    run_stop_groups({"task_id": tid, "job_id": layout.pool_job_id(tid, FIRST), "reason": "terminated",
                     "superseded_by": SECOND}, settings, store)
    hub = TaskHub()
    late = {"task_id": tid, "expires": "2027-01-01T00:00:00+00:00", "run_job": layout.pool_job_id(tid, FIRST)}
    for asked in (late, {**late, "expires": "", "move": True}):
        with pytest.raises(RunSuperseded, match=f"run {SECOND} of the task replaces it"):
            asyncio.run(shell(asked, hub))
    assert hub.started == [] and hub.raised == []

    mine = {"task_id": tid, "expires": "2027-02-01T00:00:00+00:00", "run_job": layout.pool_job_id(tid, SECOND)}
    assert asyncio.run(shell(mine, hub))["scheduled"] is True
    assert [p["expires"] for p in hub.started] == [mine["expires"]]
    moved = asyncio.run(shell({"task_id": tid, "expires": "", "move": True}, hub))  # no run_job: never refused
    assert moved.get("moved") is True and hub.raised == [{"expires": ""}]


def _six_images_in_cam(storage_connection: str, unique_name: str, monkeypatch: Any) -> tuple[Any, Any]:
    """Settings and a store over Azurite whose container ``unique_name`` holds cam/img0.jpg .. cam/img5.jpg, the app's
    own container ``<unique_name>s``; the environment the activities' shells read their settings from."""
    from adapters.blobs import BlobStore, service_client
    from core.settings import Settings

    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s"})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(unique_name)
    for i in range(6):
        store.write_bytes(unique_name, f"cam/img{i}.jpg", b"x")
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", settings.container)
    return settings, store
