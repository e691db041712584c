"""The parallel enumeration writes exactly the manifests of the single-stream one, on the same container in Azurite.

The orchestration side (``orchestrations.enumeration``) runs under the replay harness (the real Durable SDK replay),
with its activities answered by the real activity bodies against Azurite and small ``ListingLimits``, so that every
branch is reached with a few dozen blobs: continuation markers inside a folder, a level too large for the plan (a flat
folder listed in bounded calls), several units, several shard-writing batches.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Generator

import azure.durable_functions as df
import pytest

from activities.enumerate import (run_choose_sample, run_enumerate, run_finish_enumeration, run_list_part,
                                  run_plan_listing, run_write_shards)
from adapters.blobs import BlobStore, service_client
from core import contracts as c
from core.notimages import NotImages
from core.requests import TaskRequest
from core.settings import Settings
from core.shards import ListingLimits, is_image_name
from devhost.azurite import Azurite
from gpu_batch import layout
from orchestrations.enumeration import enumerate_in_parallel
from tests.orchestrations.replay import run_orchestrator

# Top-level names beside folders, "a-b/" before "a.jpg" before "a/" ('-' < '.' < '/'), deep trees, a folder whose
# flat listing needs several pages, non-images, hidden files, folder markers, a folder with 30 direct blobs (over the
# plan budget).
NAMES = (
    ["a.jpg", "a-b/x.jpg", "a-b/y.JPG", "a/x.jpg", "a/b.jpg", "a/b/c/d/e/f.jpg", "a/b/c/g.png", "a/b0/h.jpeg",
     "a0.gif", "b.txt", ".hidden.jpg", "c/.hidden.jpg", "c/readme.md", "z.png", "zz/q/r/s.jpg",
     "zz/q/marker", "a/b/c/marker"]  # empty, without an extension: folder markers (a hierarchical namespace's directories)
    + [f"big/{i:03d}.jpg" for i in range(23)]
    + [f"cams/site{s}/cam{c}/{i:02d}.jpg" for s in range(2) for c in range(3) for i in range(4)]
    + [f"flat/{i:03d}.jpg" for i in range(30)] + ["flat/sub/deeper.jpg"]
)


@pytest.fixture
def env(storage_connection: str, unique_name: str, store: BlobStore) -> tuple[Settings, BlobStore, str]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    for name in NAMES:
        store.write_bytes(unique_name, name, b"")
    return settings, store, unique_name


@pytest.fixture(scope="module")
def names_only_listed(azurite: Azurite) -> str:
    """A container of ``NAMES``, written once, for the module's tests that only list it (``listed``). Why: ``env``
    writes them again for each test, 95 requests a test: ~15% of the module's requests, over the 22 cases of
    ``test_parallel_manifests_equal_the_single_stream``. A test that adds, deletes or replaces an image takes
    ``env``."""
    store = BlobStore(service_client(azurite.connection_string))
    container = "listed" + uuid.uuid4().hex[:12]
    store.ensure_container(container)
    for name in NAMES:
        store.write_bytes(container, name, b"")
    return container


@pytest.fixture
def listed(storage_connection: str, unique_name: str, store: BlobStore,
           names_only_listed: str) -> tuple[Settings, BlobStore, str]:
    """As ``env``, with the shared ``names_only_listed`` as the images' container: the test's own state container,
    and no write to the images' one."""
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    return settings, store, names_only_listed


def _orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, c.EnumerateOutput]:
    data = context.get_input()
    return (yield from enumerate_in_parallel(context, data["task_id"], data["request"],
                                             run_job=data.get("run_job", "")))


def run_parallel(settings: Settings, store: BlobStore, task_id: str, request: TaskRequest,
                 limits: ListingLimits, run_job: str = "",
                 calls: list[tuple[str, Any]] | None = None) -> tuple[Any, Any]:
    """``run_job``: a run's pool job, whose own listing folder the calls then use (``listing_run``); ``calls``, when
    given, gains each activity call's name and payload."""
    def answer(name: str, p: Any) -> Any:
        if calls is not None:
            calls.append((name, p))
        r = TaskRequest.from_dict(p["request"])
        run = p.get("listing_run", "")
        if name == c.PLAN_LISTING:
            return run_plan_listing(task_id, r, settings, store, limits=limits, run=run)
        if name == c.LIST_PART:
            return run_list_part(task_id, r, settings, store, p["unit"], p["part"], max_images=p.get("max_images"),
                                 run=run)
        if name == c.CHOOSE_SAMPLE:
            return run_choose_sample(task_id, r, settings, store, [tuple(x) for x in p["parts"]], run)
        if name == c.WRITE_SHARDS:
            return run_write_shards(task_id, r, settings, store, [tuple(x) for x in p["parts"]], p["first"],
                                    p["count"], p["slices"], p["sampled"], p.get("not_found"), run)
        if name == c.FINISH_ENUMERATION:  # not_found: an image list's names the container does not hold
            return run_finish_enumeration(task_id, r, settings, store, p["images"], p["shards"], p["found"],
                                          p["parts"], p.get("not_found", 0), p.get("not_images_plan", False),
                                          [tuple(x) for x in p.get("not_images_parts", [])], run=run)
        raise AssertionError(name)

    data = {"task_id": task_id, "request": request.to_dict(), **({"run_job": run_job} if run_job else {})}
    run = run_orchestrator(_orchestrator, data, answer, instance_id=task_id)
    assert run.status == "Completed", run.error
    return run, run.output


def manifests(settings: Settings, store: BlobStore, task_id: str) -> list[list[str]]:
    out: list[list[str]] = []
    for i in range(10_000):
        doc = store.read_json_or_none(settings.container, layout.manifest_blob(task_id, layout.shard_id(i), 1))
        if doc is None:
            return out
        assert doc["shard_id"] == layout.shard_id(i) and doc["task_id"] == task_id
        out.append(doc["images"])
    return out


SMALL = ListingLimits(max_units=3, plan_items=12, expand_below=64, names_per_call=4, images_per_write=7, page_size=2)
REQUESTS = [
    {}, {"images_per_shard": 1}, {"images_per_shard": 100}, {"prefix": "a"}, {"prefix": "a/"}, {"prefix": "cams/"},
    {"prefix": "flat/"}, {"prefix": "nothing-here/"}, {"first_n": 1}, {"first_n": 9}, {"first_n": 1000},
    {"first_n": 5, "prefix": "cams/site1"}, {"sample_n": 7, "seed": 3}, {"sample_n": 7, "seed": 4},
    {"sample_n": 1000, "seed": 1}, {"sample_n": 3, "seed": 9, "prefix": "big/"},
]


TINY = ListingLimits(max_units=1, plan_items=2, expand_below=0, names_per_call=1, images_per_write=1, page_size=1)
CASES = ([(fields, SMALL) for fields in REQUESTS]
         + [(fields, TINY) for fields in ({"prefix": "a/"}, {"prefix": "cams/site1", "first_n": 3},
                                          {"prefix": "cams/", "sample_n": 5, "seed": 2})]
         + [(fields, ListingLimits()) for fields in ({}, {"first_n": 9}, {"sample_n": 7, "seed": 3})])


@pytest.mark.parametrize("fields, limits", CASES,
                         ids=[json.dumps(f) + ("-small" if lim == SMALL else "-tiny" if lim == TINY else "-defaults")
                              for f, lim in CASES])
def test_parallel_manifests_equal_the_single_stream(listed: tuple[Settings, BlobStore, str],
                                                    fields: dict[str, Any], limits: ListingLimits) -> None:
    settings, store, container = listed
    request = TaskRequest(container=container, model="MDV5A", **{"images_per_shard": 3, **fields})
    single = run_enumerate("task-single", request, settings, store)
    run, parallel = run_parallel(settings, store, "task-parallel", request, limits)

    passed_over = parallel.pop("not_images", None)
    near = parallel.pop("nearby", None)  # what is near a prefix that names nothing: the parallel plan's alone
    assert (near is not None) == (request.prefix == "nothing-here/")
    assert parallel == single
    assert manifests(settings, store, "task-parallel") == manifests(settings, store, "task-single")
    summary = store.read_json(settings.container, layout.enumeration_blob("task-parallel"))
    assert {k: summary[k] for k in ("images", "shards")} == single
    # what the listing passed over: every file under the prefix that is not an image (all of them listed unless
    # first_n stopped the listing early), counted once, with the first examples by name
    others = sorted(n for n in NAMES if n.startswith(request.prefix) and not is_image_name(n))
    if request.first_n is None:
        want = NotImages()
        for name in others:
            want.add(name, 0)
        assert summary.get("not_images") == (want.to_dict() if want.files else None)
        assert passed_over == (want.summary() if want.files else None)
    else:
        assert set(ex for row in summary.get("not_images", {}).get("kinds", {}).values()
                   for ex in row["examples"]) <= set(others)
    # the orchestrator never saw an image name (nor a listing marker, which may hold one): only counts
    history_text = json.dumps([a.input for a in run.activities] + [a.result for a in run.activities])
    assert not any(name in history_text for name in NAMES if "/" in name or name.endswith("g"))


def test_small_limits_reach_every_branch(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    run, out = run_parallel(settings, store, "task-branches", request, SMALL)

    plan = store.read_json(settings.container, layout.listing_plan_blob("task-branches"))
    assert plan["units"] == 3
    parts = run.calls(c.LIST_PART)
    cursors = [store.read_json_or_none(settings.container, layout.listing_cursor_blob("task-branches", u, p))
               for u in range(3) for p in range(10)]
    assert any(cur and cur["marker"] for cur in cursors)  # a folder continued from the service's marker
    assert max(p.input["part"] for p in parts) >= 2  # a unit listed in a chain of calls
    assert len(run.calls(c.WRITE_SHARDS)) > 1
    assert all(p.result["listed"] <= SMALL.names_per_call + SMALL.page_size for p in parts)  # bounded calls
    images = sorted(n for n in NAMES if n.lower().endswith((".jpg", ".jpeg", ".png", ".gif"))
                    and not n.rsplit("/", 1)[-1].startswith("."))
    assert out["images"] == len(images)


@pytest.mark.parametrize("fields", [{}, {"sample_n": 7, "seed": 3}, {"first_n": 9}])
def test_a_run_lists_in_its_own_folder_into_the_same_manifests_and_summary(env: tuple[Settings, BlobStore, str],
                                                                           fields: dict[str, Any]) -> None:
    """A run with a pool job keeps the listing's working files in its own folder (so a late call of a run it replaced
    never writes over them: activities.superseded) and cuts the shards a listing in the task's folder cut."""
    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3, **fields)
    job = layout.pool_job_id("task-own", "r261201120000ab12")
    _, before = run_parallel(settings, store, "task-shared", request, SMALL)
    _, out = run_parallel(settings, store, "task-own", request, SMALL, run_job=job)

    assert out == before and manifests(settings, store, "task-own") == manifests(settings, store, "task-shared")
    summary = store.read_json(settings.container, layout.enumeration_blob("task-own"))
    assert summary.pop("listing_run") == job  # what a retried summary call answers from (activities.listing_leftovers)
    assert summary == store.read_json(settings.container, layout.enumeration_blob("task-shared"))
    # the run's working files were its own, and went once its summary was written: only the shard ranges stay
    assert all(n.startswith(layout.shard_ranges_prefix("task-own"))
               for n in store.list_names(settings.container, layout.listing_prefix("task-own")))
    assert any(layout.is_listing_work_file("task-shared", n)  # a listing without a run keeps them, as before
               for n in store.list_names(settings.container, layout.listing_prefix("task-shared")))


def test_a_runs_finished_listing_deletes_the_listings_of_the_runs_before_it_only(
        env: tuple[Settings, BlobStore, str]) -> None:
    """Each run with an id lists into its own folder; before, nothing deleted them, so every resumed run of a task
    left one more (a 10M-image listing: ~1 GB of names). The end of a run's listing deletes the folders of the runs
    started before it: never its own, never a later run's (a terminated run's late summary call past its check must
    not delete the listing of the run that replaced it), nor a folder not named by a run, nor the task's manifests,
    shard ranges and summary. A retry (or a task without such folders) finds nothing to delete. Fails without the
    change (the first run's folder stays)."""
    from activities.enumerate import drop_earlier_listings

    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    tid = "task-again"
    first, second, later = (layout.pool_job_id(tid, r) for r in
                            ("r261201120000ab12", "r261201130000cd34", "r261201140000ef56"))
    _, out_first = run_parallel(settings, store, tid, request, SMALL, run_job=first)
    assert not list(store.list_names(settings.container, layout.listing_work_prefix(tid, first)))  # its own end
    store.write_json(settings.container, layout.listing_plan_blob(tid, first), {"units": 1})  # a late call's
    # a later run's folder (its listing going on as a late call of this run ends) and a folder no run named
    store.write_json(settings.container, layout.listing_plan_blob(tid, later), {"units": 1})
    store.write_json(settings.container, f"{layout.listing_runs_prefix(tid)}odd/plan.json", {})
    assert list(store.list_names(settings.container, layout.listing_work_prefix(tid, first)))
    shared_before = sorted(n for n in store.list_names(settings.container, layout.task_prefix(tid))
                           if not n.startswith(layout.listing_runs_prefix(tid)))

    _, out_second = run_parallel(settings, store, tid, request, SMALL, run_job=second)

    assert out_second == out_first
    assert not list(store.list_names(settings.container, layout.listing_work_prefix(tid, first)))
    assert not list(store.list_names(settings.container, layout.listing_work_prefix(tid, second)))  # its own too
    assert store.exists(settings.container, layout.listing_plan_blob(tid, later))
    assert store.exists(settings.container, f"{layout.listing_runs_prefix(tid)}odd/plan.json")
    shared_after = sorted(n for n in store.list_names(settings.container, layout.task_prefix(tid))
                          if not n.startswith(layout.listing_runs_prefix(tid)))
    assert shared_after == shared_before and store.exists(settings.container, layout.enumeration_blob(tid))
    assert manifests(settings, store, tid)
    assert drop_earlier_listings(tid, settings, store, second) == 0  # a retried call
    assert drop_earlier_listings("task-never-listed", settings, store, second) == 0
    assert drop_earlier_listings(tid, settings, store, "") == 0  # a listing in the task's folder deletes nothing
    assert store.exists(settings.container, layout.listing_plan_blob(tid, later))


def test_a_replaced_runs_late_listing_end_deletes_no_listing_whatever_the_run_ids_say(
        env: tuple[Settings, BlobStore, str]) -> None:
    """Run ids carry their starter's wall clock (``api.starters``: ``datetime.now`` on whichever Functions instance
    took the post), so a run started after another may bear an earlier second when the instances' clocks differ.
    The terminated run's late ``finish_enumeration`` call, already past its superseded check, then took the replacing
    run's listing, mid-way, for a run "started before" it and deleted it: that run's next part found no cursor or
    plan. A run whose cancel marker names the run that replaced it deletes no listing (the folders are listed first and
    the marker read after: the replacing run writes the marker before its first listing blob, and Azure Storage is
    strongly consistent, so a folder found means a marker seen). Fails without the change (the replacing run's
    folder is deleted)."""
    from activities.enumerate import drop_earlier_listings
    from activities.pool import run_stop_groups

    settings, store, container = env
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    tid = "task-skewed"
    earlier = layout.pool_job_id(tid, "r261201110000aa00")  # a run before both: its folder stays while in doubt
    terminated = layout.pool_job_id(tid, "r261201120005ab12")  # its instance's clock 10 s ahead
    replacing_run = "r261201115955cd34"  # started after it in fact, on an instance with an exact clock
    replacing = layout.pool_job_id(tid, replacing_run)
    store.ensure_container(settings.container)
    store.write_json(settings.container, layout.listing_plan_blob(tid, earlier), {"units": 1})
    run_parallel(settings, store, tid, request, SMALL, run_job=terminated)
    assert not store.exists(settings.container, layout.listing_plan_blob(tid, earlier))  # its own end: as before
    store.write_json(settings.container, layout.listing_plan_blob(tid, earlier), {"units": 1})
    store.write_json(settings.container, layout.listing_plan_blob(tid, terminated), {"units": 1})  # a late call's
    run_stop_groups({"task_id": tid, "job_id": terminated, "reason": "terminated", "superseded_by": replacing_run},
                    settings, store)
    store.write_json(settings.container, layout.listing_plan_blob(tid, replacing), {"units": 1})  # its listing began

    # the terminated run's summary call, past its check when the marker was written, ends with the housekeeping
    assert drop_earlier_listings(tid, settings, store, terminated) == 0

    assert store.exists(settings.container, layout.listing_plan_blob(tid, replacing))
    assert store.exists(settings.container, layout.listing_plan_blob(tid, earlier))  # the replacing run's to delete
    run_parallel(settings, store, tid, request, SMALL, run_job=replacing)
    assert not list(store.list_names(settings.container, layout.listing_work_prefix(tid, earlier)))
    # the run it replaced, its id a later second: its marker names the replacing run, so its listing goes too
    assert not list(store.list_names(settings.container, layout.listing_work_prefix(tid, terminated)))
    assert not list(store.list_names(settings.container, layout.listing_work_prefix(tid, replacing)))  # its own end


def test_a_flat_level_over_the_plan_budget_is_listed_in_bounded_calls(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    request = TaskRequest(container=container, prefix="flat/", model="MDV5A", images_per_shard=10)
    limits = ListingLimits(max_units=4, plan_items=10, names_per_call=8, page_size=5)
    run, out = run_parallel(settings, store, "task-flat", request, limits)

    assert run.calls(c.PLAN_LISTING)[0].result["units"] == 1  # one folder leaf: the level is too large to plan
    assert len(run.calls(c.LIST_PART)) == 4 and out == {"images": 31, "shards": 4}


def test_first_n_stops_listing_once_the_first_images_are_known(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, container = env
    request = TaskRequest(container=container, first_n=2, model="MDV5A", images_per_shard=3)
    run, out = run_parallel(settings, store, "task-first", request, SMALL)
    assert {k: out[k] for k in ("images", "shards")} == {"images": 2, "shards": 1}
    assert out["not_images"] == {"files": 2, "kinds": {"(hidden)": 1, ".txt": 1}}  # the plan's top level, listed
    assert all(p.input["max_images"] == 2 for p in run.calls(c.LIST_PART))
    assert len(run.calls(c.LIST_PART)) <= SMALL.max_units + 1  # not every unit listed to its end


@pytest.mark.parametrize("prefix, folder, first", [
    ("A/", "", "a-b/"),  # another case than the folder meant: the top level's folders (its files only counted)
    ("zz/q/none/", "zz/q/", "zz/q/r/"),  # the deepest folder above that holds anything
    ("cams/site9/cam0/", "cams/", "cams/site0/"),
])
def test_a_prefix_that_names_nothing_reports_what_is_near_it(env: tuple[Settings, BlobStore, str], prefix: str,
                                                             folder: str, first: str) -> None:
    """"no images found ... check the container and prefix" left the operator to list the container by other means
    to find the folder meant; the plan now lists the folders above the prefix, one small request a level."""
    settings, store, container = env
    request = TaskRequest.from_dict({"container": container, "prefix": prefix})
    _, out = run_parallel(settings, store, "task-near", request, SMALL)
    assert (out["images"], out["nearby"]["folder"], out["nearby"]["names"][0]) == (0, folder, first)
    assert len(out["nearby"]["names"]) <= 10
    _, found = run_parallel(settings, store, "task-found", TaskRequest.from_dict({"container": container,
                                                                                 "prefix": "a/"}), SMALL)
    assert "nearby" not in found  # images found: nothing to say


def test_missing_container_fails_with_what_to_do(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, _ = env
    request = TaskRequest(container="no-such-container", model="MDV5A")
    from core.errors import ContainerNotFound

    with pytest.raises(ContainerNotFound, match="not found"):
        run_plan_listing("task-x", request, settings, store)


def test_the_listings_end_reports_a_cancel_that_came_meanwhile(env: tuple[Settings, BlobStore, str]) -> None:
    """POST .../cancel writes the run's cancel marker; before, only the shard groups' polls read it."""
    settings, store, container = env
    store.ensure_container(settings.container)
    request = TaskRequest.from_dict({"container": container, "prefix": "cams/"})
    task_id, job = "task-00000000000000000c01", layout.pool_job_id("task-00000000000000000c01", "r1")
    args = (task_id, request, settings, store, 24, 1, 24, 1)
    assert "cancelled" not in run_finish_enumeration(*args, cancel_job=job)
    store.write_json(settings.container, layout.cancel_marker(job), {"requested": "now"})
    assert run_finish_enumeration(*args, cancel_job=job)["cancelled"] is True
    assert "cancelled" not in run_finish_enumeration(*args)  # an orchestration from before names no job


def test_folders_the_plan_could_not_expand_weigh_what_their_expanded_siblings_held(
        storage_connection: str, unique_name: str, store: BlobStore) -> None:
    """Sites of camera folders, more camera folders than the plan's budget: the plan expands the first sites into
    their cameras and keeps the others whole. Those whole sites must not all land in the last unit (before: each
    weighed one camera folder, so at 50 sites of 2,000 cameras 8 of 10 million images were one unit's chain of
    calls, ``core.shards.folder_weight_estimate``); the manifests stay those of the single stream."""
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    names = [f"sites/site{s}/cam{k}/{i}.jpg" for s in range(6) for k in range(4) for i in range(2)]
    for name in names:
        store.write_bytes(unique_name, name, b"")
    request = TaskRequest(container=unique_name, prefix="sites/", model="MDV5A", images_per_shard=3)
    # 6 sites, then 8 cameras within the budget of 14: two sites expanded, four kept whole
    limits = ListingLimits(max_units=6, plan_items=14, expand_below=64, names_per_call=100, page_size=100)
    run, out = run_parallel(settings, store, "task-sites", request, limits)

    plan = store.read_json(settings.container, layout.listing_plan_blob("task-sites"))
    assert plan["units"] == 6 and plan["leaves"] == 2 * 4 + 4
    per_unit = {p.input["unit"]: 0 for p in run.calls(c.LIST_PART)}
    for p in run.calls(c.LIST_PART):
        per_unit[p.input["unit"]] += p.result["images"]
    assert max(per_unit.values()) == 8  # one site at most (before: two whole sites in each of the last two units)
    single = run_enumerate("task-sites-single", request, settings, store)
    assert out == single == {"images": len(names), "shards": 16}
    assert manifests(settings, store, "task-sites") == manifests(settings, store, "task-sites-single")


@pytest.mark.parametrize("limits", [SMALL, TINY, ListingLimits()], ids=["small", "tiny", "defaults"])
def test_a_listed_name_with_a_dot_folder_is_not_run_and_the_task_says_why(env: tuple[Settings, BlobStore, str],
                                                                          limits: ListingLimits) -> None:
    """Azure keeps ``cams/site1/../../flat/000.jpg`` as a blob of its own (a REST client sending ``%2E%2E`` made it),
    but every reader would fetch ``flat/000.jpg`` (urllib3 resolves dot folders; with a bearer token or an account
    SAS, which do not sign the path, ``x/../../other/y.jpg`` reads container ``other``): both listings pass it over,
    as a kind of its own with what to do. Before, it was run under its name with another photo's detections (and
    that photo's thumbnail on the public preview page)."""
    from datetime import datetime, timedelta, timezone

    import requests
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from core import notimages

    settings, store, container = env
    dotted = "cams/site1/../../flat/000.jpg"
    service = store.service
    sas = generate_container_sas(str(service.account_name), container, account_key=service.credential.account_key,
                                 permission=ContainerSasPermissions(create=True, write=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    url = service.get_container_client(container).url
    made = requests.put(f"{url}/{dotted.replace('..', '%2E%2E')}?{sas}", data=b"y", timeout=30,
                        headers={"x-ms-blob-type": "BlockBlob"})
    assert made.status_code == 201, made.text
    request = TaskRequest(container=container, model="MDV5A", images_per_shard=3)
    single = run_enumerate("task-single", request, settings, store)
    _, parallel = run_parallel(settings, store, "task-parallel", request, limits)
    assert parallel["images"] == single["images"] == sum(1 for n in NAMES if is_image_name(n))
    for task_id in ("task-single", "task-parallel"):
        assert not any(dotted in images for images in manifests(settings, store, task_id))
    kinds = store.read_json(settings.container, layout.enumeration_blob("task-parallel"))["not_images"]["kinds"]
    assert kinds[notimages.DOT_FOLDER]["examples"] == [dotted] and "another blob" in kinds[notimages.DOT_FOLDER]["hint"]
    assert parallel["not_images"]["kinds"][notimages.DOT_FOLDER] == 1


def test_a_first_level_of_more_folders_than_the_blob_budget_is_still_split_into_units(
        storage_connection: str, unique_name: str, store: BlobStore) -> None:
    """Folders count apart from blobs in the plan's first level (``ListingLimits.plan_folders``): 12 top-level folders
    with a budget of 5 entries made the whole prefix one leaf, listed flat by one unit, one page after another (at
    100,000 camera-day folders of 10M images, 2,000 pages in a row); now each folder is a leaf and the units share
    them. The manifests stay those of the single stream."""
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    names = [f"day{d:02d}/{i}.jpg" for d in range(12) for i in range(2)] + ["top.jpg"]
    for name in names:
        store.write_bytes(unique_name, name, b"")
    request = TaskRequest(container=unique_name, prefix="", model="MDV5A", images_per_shard=5)
    limits = ListingLimits(max_units=3, plan_items=5, plan_folders=100, expand_below=4, names_per_call=4,
                           page_size=2)
    run, out = run_parallel(settings, store, "task-days", request, limits)

    plan = store.read_json(settings.container, layout.listing_plan_blob("task-days"))
    assert plan["units"] == 3 and plan["leaves"] == 13
    assert len({p.input["unit"] for p in run.calls(c.LIST_PART)}) == 3
    single = run_enumerate("task-days-single", request, settings, store)
    assert out == single == {"images": len(names), "shards": 5}
    assert manifests(settings, store, "task-days") == manifests(settings, store, "task-days-single")
    # a first level of more folders than plan_folders stays one leaf, as a flat folder of millions of blobs does
    few = ListingLimits(max_units=3, plan_items=5, plan_folders=6, expand_below=4, names_per_call=4, page_size=2)
    run_parallel(settings, store, "task-days-few", request, few)
    assert store.read_json(settings.container, layout.listing_plan_blob("task-days-few"))["leaves"] == 1


def test_a_listing_call_makes_a_bounded_number_of_requests_whatever_the_folders_hold(
        storage_connection: str, unique_name: str, store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit of many small folders makes a request per folder: a call counts each request as at least
    names_per_call // MAX_REQUESTS_PER_CALL names, so it ends after that many requests, not after every folder."""
    from activities import enumerate as enumerate_activity

    monkeypatch.setattr(enumerate_activity, "MAX_REQUESTS_PER_CALL", 3)
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection,
                                  "TRAPBATCH_CONTAINER": unique_name + "-state"})
    store.ensure_container(unique_name)
    names = [f"day{d:02d}/0.jpg" for d in range(9)]
    for name in names:
        store.write_bytes(unique_name, name, b"")
    request = TaskRequest(container=unique_name, prefix="", model="MDV5A", images_per_shard=5)
    limits = ListingLimits(max_units=1, plan_items=5, plan_folders=100, expand_below=4, names_per_call=30,
                           page_size=5)
    run, out = run_parallel(settings, store, "task-calls", request, limits)
    assert out["images"] == 9 and len(run.calls(c.LIST_PART)) == 3  # 9 folders, 3 requests a call
    assert manifests(settings, store, "task-calls") == [names[:5], names[5:]]
