"""The parallel fan-in against Azurite: byte-identical to the single-pass merge, however the shards are split.

The reference is ``activities.merge.run_merge`` (today's single activity, kept callable); the parallel path is the
real ``orchestrations.fanin`` generator replayed by the Durable SDK (tests/orchestrations/replay.py) with its real
activities (``activities.fanin``) reading and writing Azurite. Odd cases on purpose: a shard with no results at all,
one whose results are not JSON, one that wrote an empty list, permanent and retryable failures, images no attempt
covered, unicode and formula-like names, nested folders, images at the container root, a repeated "rock" in a
folder that spans many shards, and the repeats-removed variant.
"""
from __future__ import annotations

import csv
from datetime import datetime, timedelta
import dataclasses

import io
import json
import random
import uuid
from typing import Any, Iterable

import pytest

from activities import fanin as fanin_activities
from activities.enumerate import run_enumerate
from activities.merge import run_merge, run_remove_repeats
from adapters.blobs import BlobStore, service_client
from adapters.compose import delete_prefix
from core import contracts as c
from core import mdformat
from core.requests import parse_task_request
from core.settings import OrchestrationKnobs, Settings
from devhost.azurite import Azurite
from gpu_batch import layout
from gpu_batch.formats import camtrapdp
from gpu_batch.formats.detections_csv import spreadsheet_safe
from gpu_batch.layout import REPEATS_REMOVED
from gpu_batch.manifest import ShardManifest
from orchestrations.fanin import fan_in
from tests.camtrap_media import blob_name, by_blob_name
from tests.orchestrations.replay import T0, run_orchestrator

MODEL = "models/md_v5a.0.0.pt"
ROCK = [0.52, 0.61, 0.08, 0.07]


def merge_orchestrator(context: Any) -> Any:
    d = context.get_input()
    knobs = OrchestrationKnobs(merge_images_per_part=d["images_per_part"],
                               repeat_search_detections_per_group=d.get("per_group", 400_000),
                               repeat_max_folder_detections=d.get("max_folder", 800_000))
    return (yield from fan_in(context, d["task_id"], d["model"], d["images"], d["shards"], knobs,
                              d.get("variant", ""), d.get("remove")))


def real_activities(settings: Settings, store: BlobStore) -> Any:
    bodies: dict[str, Any] = {c.MERGE_PART: fanin_activities.run_merge_part, c.MERGE_COMBINE: fanin_activities.run_merge_combine,
              c.SEARCH_REPEATS: fanin_activities.run_search_repeats, c.RANK_REPEATS: fanin_activities.run_rank_repeats,
              c.CLEAN_MERGE_WORK: fanin_activities.run_clean_merge_work}

    def answer(name: str, payload: Any) -> Any:
        if name == c.READ_ENUMERATION:
            return fanin_activities.run_read_enumeration(payload["task_id"], settings, store)
        return bodies[name](payload, settings, store)

    return answer


TASK_IMAGES = ([f"cam1/img{i:03d}.jpg" for i in range(48)] + [f"cam1/sub/x{i}.jpg" for i in range(5)]
               + [f"ünïcødé 森/写真{i:02d}.jpg" for i in range(4)] + ["=SUM(A1).jpg", "root.jpg", "+plus.png"]
               + [f"cam2/{i:03d}.jpg" for i in range(14)])


def write_task_images(store: BlobStore, container: str) -> str:
    """``TASK_IMAGES`` (placeholder bytes: nothing here reads an image) in ``container``, made; returns its name."""
    store.ensure_container(container)
    for name in TASK_IMAGES:
        store.write_bytes(container, name, b"x")
    return container


@pytest.fixture(scope="module")
def task_images(azurite: Azurite) -> str:
    """The images' container of this module's ``task``s, written once. Why: each test has a state container of its
    own, which holds everything its task's run writes and reads but the listing, and no test writes to the images'
    container, so a copy of it per test was 72 requests of each test's ~900 for nothing. The tests' tasks share a
    task id (it follows from the request); a module whose tests reach anything named by the task id outside the state
    container (the pool's tables) gives each test its own images' container (test_superseded_run.py)."""
    return write_task_images(BlobStore(service_client(azurite.connection_string)), "images" + uuid.uuid4().hex[:12])


@pytest.fixture
def task(storage_connection: str, unique_name: str, task_images: str
         ) -> tuple[Settings, BlobStore, str, c.EnumerateOutput]:
    # an attribution and a license to quote and batches of 7 subjects, for the exports' tests (finish_every_shard):
    # app settings the task's run decides when it is enumerated (activities.decided)
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s",
                                  "TRAPBATCH_EXPORT_ATTRIBUTION": "Snapshot, \"Serengeti\"",
                                  "TRAPBATCH_EXPORT_LICENSE": "CC-BY-4.0", "TRAPBATCH_ZOONIVERSE_BATCH_SIZE": "7"})
    store = BlobStore(service_client(storage_connection))
    request = parse_task_request({"container": task_images, "images_per_shard": 4, "model": MODEL})
    tid = request.task_id
    counts = run_enumerate(tid, request, settings, store)
    rng = random.Random(5)
    for index in range(counts["shards"]):
        sid = layout.shard_id(index)
        m = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1)))
        if index == 2:
            continue  # no results at all: every image "not processed"
        if index == 3:
            store.write_bytes(settings.container, m.output_blob, b"{not json")
            continue
        if index == 5:
            store.write_bytes(settings.container, m.output_blob, json.dumps({"images": []}).encode())
            continue
        entries: list[dict[str, Any]] = []
        for k, f in enumerate(m.images):
            if index == 7 and k == 0:
                entries.append(mdformat.failure_entry(f, "image access failure", "undecodable"))
                continue
            if index == 7 and k == 1:
                entries.append(mdformat.failure_entry(f, "image access failure", "download"))
                continue
            if index == 8 and k == 3:
                continue  # never written: missing
            dets = []
            if f.startswith("cam1/img"):
                dets.append({"category": "1", "conf": round(rng.uniform(0.15, 0.9), 3),
                             "bbox": [v + rng.uniform(-0.0005, 0.0005) for v in ROCK]})
            for _ in range(rng.randint(0, 2)):
                w, h = rng.uniform(0.02, 0.4), rng.uniform(0.02, 0.4)
                dets.append({"category": rng.choice("123"), "conf": round(rng.uniform(0.005, 0.99), 3),
                             "bbox": [round(rng.uniform(0, 1 - w), 4), round(rng.uniform(0, 1 - h), 4),
                                      round(w, 4), round(h, 4)]})
            entry: dict[str, Any] = {"file": f, "detections": dets}
            if index != 4:  # the worker writes each image's size; shard 4 stands for older results without sizes
                entry.update(width=2048 + index, height=1536 + k)
            entries.append(entry)
        store.write_bytes(settings.container, m.output_blob, json.dumps({"images": entries}).encode())
    return settings, store, tid, counts


def _outputs(settings: Settings, store: BlobStore, tid: str, variant: str = "") -> dict[str, bytes]:
    names = {"results": layout.results_blob(tid, variant), "csv": layout.csv_blob(tid, variant),
             "sample": layout.preview_sample_blob(tid, variant)}
    if not variant:
        names["repeats"] = layout.repeats_blob(tid)
    out = {}
    for key, name in names.items():
        out[key] = store.read_bytes(settings.container, name)
        store.service.get_blob_client(settings.container, name).delete_blob()  # the next run must write it again
    return out


@pytest.mark.parametrize("read_bytes, older_plans", [(23, False), (None, True)])
def test_search_groups_find_the_same_read_a_few_bytes_at_a_time_or_from_plans_without_ends(
        task: Any, monkeypatch: Any, read_bytes: int | None, older_plans: bool) -> None:
    """A group reads its folders' lines in chunks (23 bytes: every line cut somewhere) and ends each folder's search
    after the folder's last range; a plan written before plans named those ends ends every folder after the last
    range. Both find what the single pass finds."""
    from core import fanin as core_fanin

    settings, store, tid, counts = task
    reference = run_merge(tid, MODEL, T0.isoformat(), settings, store)
    expected = _outputs(settings, store, tid)
    if read_bytes:
        monkeypatch.setattr(fanin_activities, "SEARCH_READ_BYTES", read_bytes)
    if older_plans:
        group = core_fanin._group
        monkeypatch.setattr(core_fanin, "_group", lambda folders, where: {
            k: v for k, v in group(folders, where).items() if k != "last"})
    run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12,
                                                "per_group": 30, **counts}, real_activities(settings, store))
    assert run.status == "Completed", run.error
    assert len(run.calls(c.MERGE_PART)) > 2 and len(run.calls(c.SEARCH_REPEATS)) > 2
    assert {k: v for k, v in run.output.items() if k not in ("parts", "exports_fan_out")} == reference
    got = _outputs(settings, store, tid)
    assert got["repeats"] == expected["repeats"] and got["results"] == expected["results"]


@pytest.mark.parametrize("images_per_part, per_group", [(4, 5), (12, 400_000), (1_000_000, 30)])
def test_parallel_fan_in_writes_the_single_pass_bytes(task: Any, images_per_part: int, per_group: int) -> None:
    """One shard per part, three, or everything in one; repeat-search groups of one folder each, one group, or a
    few: the folder with the repeated rock spans a dozen shards, so its search reads it from many parts."""
    settings, store, tid, counts = task
    reference = run_merge(tid, MODEL, T0.isoformat(), settings, store)
    expected = _outputs(settings, store, tid)
    assert reference["repeated_locations"] == 1 and reference["missing"] > 4 and reference["failed"] > 4

    run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": images_per_part,
                                                "per_group": per_group, **counts}, real_activities(settings, store))

    assert run.status == "Completed", run.error
    parts = len(run.calls(c.MERGE_PART))
    assert parts == {4: counts["shards"], 12: -(-counts["shards"] // 3), 1_000_000: 1}[images_per_part]
    groups = len(run.calls(c.SEARCH_REPEATS))
    assert (groups == 1) if per_group == 400_000 else (groups > 2)
    assert {k: v for k, v in run.output.items() if k not in ("parts", "exports_fan_out")} == reference
    # the exports fan out over the same ranges (orchestrations.exports): each part's shards and JSON fragment bytes
    assert run.output["parts"] == [[call.input["first_shard"], call.input["shards"], call.result["json_bytes"]]
                                   for call in run.calls(c.MERGE_PART)]
    got = _outputs(settings, store, tid)
    assert got["results"] == expected["results"]
    assert got["csv"] == expected["csv"]
    assert got["repeats"] == expected["repeats"]
    # the preview sample draws the same images whatever the split (bottom-k by a keyed hash of the name)
    assert json.loads(got["sample"]) == json.loads(expected["sample"])
    assert list(store.list_names(settings.container, layout.merge_work_prefix(tid))) == []  # the work is cleaned
    doc = json.loads(got["results"])
    mdformat.validate(doc)
    # the image sizes the worker wrote reach the final results unchanged (and none where it wrote none)
    sized = [im for im in doc["images"] if "width" in im]
    assert len(sized) > 40 and all("failure" not in im for im in sized)
    assert all(isinstance(im["width"], int) and im["width"] >= 2048 and im["height"] >= 1536 for im in sized)
    assert any("width" not in im and "failure" not in im for im in doc["images"])  # shard 4's, without sizes
    assert any(im["file"] == "=SUM(A1).jpg" for im in doc["images"])
    # ASCII, as MegaDetector writes its results: its readers open them in the system's encoding (cp1252 on Windows)
    assert got["results"].isascii() and any(im["file"] == "ünïcødé 森/写真00.jpg" for im in doc["images"])
    assert json.loads(got["results"].decode("cp1252")) == doc


def test_the_photos_cut_short_are_counted_and_listed_beside_the_results_which_stay_as_they_were(task: Any) -> None:
    """The workers' lists of JPEGs cut short (``layout.attempt_damaged_blob``) reach the merge output and
    ``damaged.csv``: a list tied to the results' ETag as they are is read, one that is not (the worker died between
    the two writes) gives way to the names in those results' ``info``. The results and CSV keep their bytes."""
    from gpu_batch.formats.entries import damaged_document

    settings, store, tid, counts = task
    reference = run_merge(tid, MODEL, T0.isoformat(), settings, store)
    expected = _outputs(settings, store, tid)
    first = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00000", 1)))
    etag = store.etag_or_none(settings.container, first.output_blob) or ""
    store.write_bytes(settings.container, layout.attempt_damaged_blob(tid, "s00000", 1),
                      damaged_document(etag, [first.images[2], first.images[0]]))
    stale = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00006", 1)))
    doc = store.read_json(settings.container, stale.output_blob)
    doc["info"] = {"trapbatch": {"damaged": [stale.images[1]]}}
    store.write_bytes(settings.container, stale.output_blob, json.dumps(doc).encode())
    store.write_bytes(settings.container, layout.attempt_damaged_blob(tid, "s00006", 1),
                      damaged_document("0xOLDER", [stale.images[3]]))

    run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12, **counts},
                           real_activities(settings, store))

    assert run.status == "Completed", run.error
    names = sorted([first.images[0], first.images[2]]) + [stale.images[1]]
    assert run.output["damaged"] == 3 and run.output["damaged_blob"] == layout.damaged_blob(tid)
    assert run.output["damaged_examples"] == names[:2]  # the first part's rows, in shard order
    rows = list(csv.reader(io.StringIO(store.read_bytes(settings.container, layout.damaged_blob(tid)).decode())))
    assert rows == [["file"], *([spreadsheet_safe(n)] for n in names)]  # '+plus.png: text in a spreadsheet
    assert {k: v for k, v in run.output.items() if not k.startswith(("parts", "exports_fan_out", "damaged"))} == \
        reference
    got = _outputs(settings, store, tid)
    assert got["results"] == expected["results"] and got["csv"] == expected["csv"]


def test_results_naming_a_photo_cut_short_without_their_list_are_counted_from_the_entries_read_anyway(
        task: Any) -> None:
    """A worker that died after a flush of results naming a photo cut short, before it wrote
    ``layout.attempt_damaged_blob``: the shard has no merge view, so the part reads its entries, and the names in the
    same documents' ``info`` with them (no read of its own)."""
    settings, store, tid, counts = task
    died = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00004", 1)))
    doc = store.read_json(settings.container, died.output_blob)
    doc["info"] = {"trapbatch": {"damaged": [died.images[2]]}}
    store.write_bytes(settings.container, died.output_blob, json.dumps(doc).encode())
    assert not store.exists(settings.container, layout.attempt_damaged_blob(tid, "s00004", 1))

    run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12, **counts},
                           real_activities(settings, store))

    assert run.status == "Completed", run.error
    assert (run.output["damaged"], run.output["damaged_examples"]) == (1, [died.images[2]])
    rows = list(csv.reader(io.StringIO(store.read_bytes(settings.container, layout.damaged_blob(tid)).decode())))
    assert rows == [["file"], [died.images[2]]]


def test_a_folder_over_the_cap_is_left_out_of_every_group_and_named_in_the_single_pass_bytes(task: Any) -> None:
    """TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS below cam1's eligible detections (the folder with the rock, across a
    dozen shards and so several parts): no group reads it, the document names it with its count and what to do,
    the merge counts it, and the fan-in's document is the single pass's bytes. The other folders are searched."""
    from core.repeats import RepeatOptions, eligible_detections

    settings, store, tid, counts = task
    capped = dataclasses.replace(settings, knobs=dataclasses.replace(settings.knobs, repeat_max_folder_detections=30))
    reference = run_merge(tid, MODEL, T0.isoformat(), capped, store)
    expected = _outputs(capped, store, tid)
    results = json.loads(expected["results"])["images"]
    eligible: dict[str, int] = {}
    for entry in results:
        rows = eligible_detections(entry, RepeatOptions())
        if rows:
            folder = entry["file"].rsplit("/", 1)[0] if "/" in entry["file"] else ""
            eligible[folder] = eligible.get(folder, 0) + len(rows)
    assert eligible["cam1"] > 30 and all(n <= 30 for f, n in eligible.items() if f != "cam1")
    assert reference["repeated_locations"] == 0 and reference["repeat_folders_skipped"] == 1  # the rock was in cam1
    assert reference["repeat_detections_skipped"] == eligible["cam1"]

    activities = real_activities(capped, store)
    read: list[str] = []  # the folders of every line a search group reads

    def searching(name: str, payload: Any) -> Any:
        if name == c.SEARCH_REPEATS:
            plan = store.read_json(capped.container, layout.repeat_search_blob(tid, payload["group"], "plan.json"))
            assert "cam1" not in plan["folders"]
            for part, offset, length in plan["ranges"]:
                read.extend(json.loads(line)[0] for line in fanin_activities.range_lines(
                    store, capped.container, layout.merge_part_blob(tid, part, "folders.jsonl"), offset, length))
        return activities(name, payload)

    run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12, "per_group": 8,
                                                "max_folder": 30, **counts}, searching)

    assert run.status == "Completed", run.error
    assert {k: v for k, v in run.output.items() if k not in ("parts", "exports_fan_out")} == reference
    assert len(run.calls(c.SEARCH_REPEATS)) >= 2 and "cam1" not in read and "cam2" in read  # no line of cam1 read
    got = _outputs(capped, store, tid)
    assert got["repeats"] == expected["repeats"] and got["results"] == expected["results"]
    doc = json.loads(got["repeats"])
    assert doc["options"]["max_folder_detections"] == 30 and doc["locations"] == []
    skipped = doc["skipped_folders"]
    assert skipped["listed"] == [{"folder": "cam1", "detections": eligible["cam1"]}] and skipped["folders"] == 1
    assert f"trapbatch repeats {tid} --search --max-folder-detections {eligible['cam1']}" in skipped["hint"]


def test_parallel_repeats_removed_variant_writes_the_single_pass_bytes(task: Any) -> None:
    settings, store, tid, counts = task
    run_merge(tid, MODEL, T0.isoformat(), settings, store)  # the search that the removal chooses from
    ids = [loc["id"] for loc in store.read_json(settings.container, layout.repeats_blob(tid))["locations"]]
    reference = run_remove_repeats(tid, MODEL, T0.isoformat(), ids, settings, store)
    expected = _outputs(settings, store, tid, REPEATS_REMOVED)
    assert reference["detections_marked"] >= 20

    run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 8,
                                                "variant": REPEATS_REMOVED, "remove": ids, **counts},
                           real_activities(settings, store))

    assert run.status == "Completed", run.error
    assert c.SEARCH_REPEATS not in run.activity_names
    assert {k: v for k, v in run.output.items() if k not in ("parts", "exports_fan_out")} == reference
    # the exports fan out over the same ranges (orchestrations.exports): each part's shards and JSON fragment bytes
    assert run.output["parts"] == [[call.input["first_shard"], call.input["shards"], call.result["json_bytes"]]
                                   for call in run.calls(c.MERGE_PART)]
    assert list(store.list_names(settings.container, layout.merge_work_prefix(tid, REPEATS_REMOVED))) == []
    got = _outputs(settings, store, tid, REPEATS_REMOVED)
    assert got["results"] == expected["results"] and got["csv"] == expected["csv"]
    assert json.loads(got["sample"]) == json.loads(expected["sample"])
    marked = [d for e in json.loads(got["results"])["images"] for d in e.get("detections") or [] if d["conf"] < 0]
    assert len(marked) == reference["detections_marked"]


def test_the_repeats_removed_variant_names_the_same_photos_cut_short_and_the_original_s_list(task: Any) -> None:
    """Removing repeated detections changes no photo: the variant's merge counts the photos cut short as the
    original's did (a worker's list, and names only in results' info) and names the original's ``damaged.csv``, which
    it leaves as it was (no list of its own)."""
    from gpu_batch.formats.entries import damaged_document

    settings, store, tid, counts = task
    first = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00000", 1)))
    etag = store.etag_or_none(settings.container, first.output_blob) or ""
    store.write_bytes(settings.container, layout.attempt_damaged_blob(tid, "s00000", 1),
                      damaged_document(etag, [first.images[1]]))
    died = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, "s00009", 1)))
    doc = store.read_json(settings.container, died.output_blob)
    doc["info"] = {"trapbatch": {"damaged": [died.images[0], died.images[3]]}}
    store.write_bytes(settings.container, died.output_blob, json.dumps(doc).encode())
    original = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12, **counts},
                                real_activities(settings, store))
    assert original.status == "Completed", original.error
    listed = store.read_bytes(settings.container, layout.damaged_blob(tid))
    ids = [loc["id"] for loc in store.read_json(settings.container, layout.repeats_blob(tid))["locations"]]

    run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 8,
                                                "variant": REPEATS_REMOVED, "remove": ids, **counts},
                           real_activities(settings, store))

    assert run.status == "Completed", run.error
    assert {k: run.output[k] for k in ("damaged", "damaged_blob", "damaged_examples")} == \
        {k: original.output[k] for k in ("damaged", "damaged_blob", "damaged_examples")} == \
        {"damaged": 3, "damaged_blob": layout.damaged_blob(tid),
         "damaged_examples": [first.images[1]]}  # the first part's that has any
    assert store.read_bytes(settings.container, layout.damaged_blob(tid)) == listed
    assert not any(n.endswith("damaged.csv") for n in store.list_names(
        settings.container, layout.merge_work_prefix(tid, REPEATS_REMOVED)))


def test_compose_concatenates_ranges_across_block_boundaries(storage_connection: str, unique_name: str) -> None:
    from adapters.compose import MAX_BLOCKS, ComposeError, compose_blob

    store = BlobStore(service_client(storage_connection))
    store.ensure_container(unique_name)
    sources = {"a": b",0123456789abcdef", "b": "ünï€ødé 森".encode(), "c": b""}
    for name, data in sources.items():
        store.write_bytes(unique_name, name, data)
    pieces: list[Any] = [b"HEAD[", ("a", 1, 16), b"", ("b", 0, len(sources["b"])), ("a", 3, 5), b"]"]
    # Azurite has no Put Block From URL (501 APINotImplemented): the blocks are copied through this process
    assert compose_blob(store, unique_name, "out", pieces, "text/plain", stream_block=7) == "streamed"
    expected = b"HEAD[" + sources["a"][1:] + sources["b"] + sources["a"][3:8] + b"]"
    assert store.read_bytes(unique_name, "out") == expected
    blocks = store.service.get_blob_client(unique_name, "out").get_block_list("committed")[0]
    assert len(blocks) == 1 + 3 + 3 + 1 + 1  # head, 16 and 17 bytes in blocks of 7, 5 bytes, tail
    compose_blob(store, unique_name, "out", [b"short"])  # a shorter rewrite leaves nothing of the longer one
    assert store.read_bytes(unique_name, "out") == b"short"
    with pytest.raises(ComposeError, match="block blob holds"):
        compose_blob(store, unique_name, "out", [("a", 0, MAX_BLOCKS + 1)], stream_block=1)


@pytest.mark.parametrize("container", ["$web", "plainbox"])
def test_delete_prefix_deletes_everything_under_it_even_where_a_batch_is_refused(storage_connection: str,
                                                                                 container: str) -> None:
    """Azurite refuses a blob batch in "$web" as a whole (one 400 answer for all sub-requests): every blob under the
    prefix must still go (the preview pages' DELETE relies on it), and nothing beside it."""
    from adapters.blobs import blob_store

    store = blob_store(storage_connection)
    store.ensure_container(container)
    names = [f"t-1/p{i:03d}.jpg" for i in range(300)] + ["t-1/index.html", "t-1/repeats-removed/index.html"]
    for n in names + ["t-10/keep.html", "t-2/keep.html"]:
        store.write_bytes(container, n, b"x")
    assert delete_prefix(store, container, "t-1/") == len(names)
    assert list(store.list_names(container, "t-")) == ["t-10/keep.html", "t-2/keep.html"]


def test_a_merge_part_reads_only_blobs_that_exist(task: Any) -> None:
    """Per shard: one listing, then the manifest and each attempt's results; no read of a blob that is not there
    (attempt 0's manifest of a re-run, an image list's document: each 404 cost a request of ~5 ms CPU)."""
    from azure.core.exceptions import ResourceNotFoundError

    settings, store, tid, counts = task
    reads: list[str] = []
    missing: list[str] = []
    original = store.read_bytes

    def recording(container: str, name: str) -> bytes:
        reads.append(name)
        try:
            return original(container, name)
        except ResourceNotFoundError:
            missing.append(name)
            raise

    store.read_bytes = recording  # type: ignore[method-assign]
    fanin_activities.run_merge_part({"task_id": tid, "part": 0, "first_shard": 0, "shards": counts["shards"]},
                                    settings, store)
    assert missing == []
    shard_reads = [n for n in reads if "/shards/" in n]
    manifests = {layout.manifest_blob(tid, layout.shard_id(i), 1) for i in range(counts["shards"])}
    assert manifests <= set(shard_reads)
    assert len(shard_reads) == 2 * counts["shards"] - 1  # a manifest each, results for all but shard 2


def write_worker_views(settings: Settings, store: BlobStore, tid: str, shards: Iterable[int],
                       threshold: float) -> set[int]:
    """What a worker writes after its results (``gpu_batch.worker.results``), for every shard whose results finish
    its manifest: the view of the results blob's bytes (with the photos cut short they name), tied to the ETags the
    shard's listing shows now."""
    from gpu_batch.formats import jsonio
    from gpu_batch.formats.entries import damaged_in
    from gpu_batch.formats.mergeview import build_view

    viewed = set()
    for index in shards:
        sid = layout.shard_id(index)
        listed = store.list_etags(settings.container, layout.shard_prefix(tid, sid))
        results, manifest = layout.attempt_results_blob(tid, sid, 1), layout.manifest_blob(tid, sid, 1)
        if results not in listed:
            continue
        try:
            doc = jsonio.loads(store.read_bytes(settings.container, results))
            entries = doc["images"]
        except ValueError:
            continue
        images = ShardManifest.from_dict(store.read_json(settings.container, manifest)).images
        view = build_view(tid, threshold, images, entries, listed[results], listed[manifest], damaged=damaged_in(doc))
        if view is not None:
            store.write_bytes(settings.container, layout.attempt_view_blob(tid, sid, 1), view)
            viewed.add(index)
    return viewed


def merge_recording_reads(settings: Settings, store: BlobStore, tid: str, counts: Any) -> tuple[Any, list[str]]:
    """The parallel fan-in of the task, in parts of 12 images, and the names of every blob it read whole."""
    reads: list[str] = []
    original = store.read_bytes

    def recording(container: str, name: str) -> bytes:
        reads.append(name)
        return original(container, name)

    store.read_bytes = recording  # type: ignore[method-assign]
    try:
        run = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12,
                                                    "per_group": 30, **counts}, real_activities(settings, store))
    finally:
        store.read_bytes = original  # type: ignore[method-assign]
    return run, reads


def test_merge_parts_compose_the_workers_views_into_the_single_pass_bytes(task: Any) -> None:
    """Shards with a usable view are not read entry by entry, and the outputs stay the single pass's bytes; a view
    whose results were rewritten after it (a restarted attempt), or made for another threshold, is not used."""
    settings, store, tid, counts = task
    viewed = write_worker_views(settings, store, tid, range(counts["shards"]), settings.threshold_for(MODEL, None))
    assert {2, 3, 5, 7, 8}.isdisjoint(viewed) and len(viewed) == counts["shards"] - 5  # the odd shards have none
    stale, other = sorted(viewed)[1], sorted(viewed)[4]
    stale_blob = layout.attempt_results_blob(tid, layout.shard_id(stale), 1)
    doc = store.read_json(settings.container, stale_blob)
    doc["images"][0]["detections"] = [{"category": "2", "conf": 0.97, "bbox": [0.1, 0.1, 0.1, 0.1]}]
    store.write_bytes(settings.container, stale_blob, json.dumps(doc).encode())  # a new ETag: its view is stale
    assert write_worker_views(settings, store, tid, [other], 0.5) == {other}  # made for another threshold

    reference = run_merge(tid, MODEL, T0.isoformat(), settings, store)
    expected = _outputs(settings, store, tid)
    run, reads = merge_recording_reads(settings, store, tid, counts)

    assert run.status == "Completed", run.error
    assert {k: v for k, v in run.output.items() if k not in ("parts", "exports_fan_out")} == reference
    got = _outputs(settings, store, tid)
    assert got["results"] == expected["results"] and got["csv"] == expected["csv"]
    assert got["repeats"] == expected["repeats"] and json.loads(got["repeats"])["locations"]
    assert json.loads(got["sample"]) == json.loads(expected["sample"])
    read_results = {i for i in range(counts["shards"])
                    if layout.attempt_results_blob(tid, layout.shard_id(i), 1) in reads}
    assert read_results == {3, 5, 7, 8, stale, other}  # shard 2 has none; every usable view was used instead


def test_image_list_shards_are_merged_from_their_views_with_the_names_not_found_after(task: Any) -> None:
    """An image-list task's shards have a list document; a shard's view covers its own images, and the merge part
    puts the list's names not found that the shard reports after them, as the entry path does: the same bytes as
    the fan-in without views, and the results of those shards are not read. The exports, which cannot add those
    names to a view's lines, take the view only of a shard that reports none. (The single pass, kept as the tests'
    reference, splits a folder's repeat search where names not found break name order, so its repeats list is not
    the fan-in's here; results, CSV and sample are.)"""
    settings, store, tid, counts = task
    threshold = settings.threshold_for(MODEL, None)
    with_names, without = 0, 1
    for index, names in ((with_names, ["cam9/gone.jpg", "cam9/ünïcødé, gone.jpg"]), (without, [])):
        store.write_json(settings.container, layout.shard_list_blob(tid, layout.shard_id(index)),
                         {"not_found": names, "metadata": {}})
    single = run_merge(tid, MODEL, T0.isoformat(), settings, store)
    reference = _outputs(settings, store, tid)
    assert b"cam9/gone.jpg" in reference["results"] and b"listed_not_found" in reference["results"]
    entry_path, _ = merge_recording_reads(settings, store, tid, counts)  # no views yet
    expected = _outputs(settings, store, tid)
    assert {k: expected[k] for k in ("results", "csv", "sample")} == {k: reference[k] for k in ("results", "csv",
                                                                                              "sample")}
    assert {with_names, without} <= write_worker_views(settings, store, tid, range(counts["shards"]), threshold)
    run, reads = merge_recording_reads(settings, store, tid, counts)
    assert run.status == "Completed", run.error
    assert run.output == entry_path.output and run.output["images"] == single["images"]
    assert _outputs(settings, store, tid) == expected
    assert not {layout.attempt_results_blob(tid, layout.shard_id(i), 1) for i in (with_names, without)} & set(reads)
    for index, usable in ((with_names, False), (without, True)):  # the exports' use of the same views
        listed = store.list_etags(settings.container, layout.shard_prefix(tid, layout.shard_id(index)))
        view = fanin_activities.clean_view(store, settings, tid, index, threshold, listed, "exports")
        assert (view is not None) is usable


def run_again_with_views(settings: Settings, store: BlobStore, tid: str, shards: Iterable[int],
                         damaged: dict[int, list[str]] | None = None) -> None:
    """Each shard's second attempt as the app resubmits it (``resubmit_one``: its manifest names the first manifest
    and the earlier results) and as its worker finishes it: every image it runs succeeds (``damaged``: those of a
    shard that its results name cut short, and no list of them written), then the view of the whole shard, read
    through the worker's own blob reader (``gpu_batch.worker.sources.blob_reader``)."""
    from activities.pool import resubmit_one
    from gpu_batch.formats import jsonio
    from gpu_batch.formats.entries import damaged_in
    from gpu_batch.formats.mergeview import build_view, whole_shard
    from gpu_batch.worker.sources import blob_reader

    class NullPool:
        def ensure_job(self, job_id: str) -> None:
            pass

        def submit(self, job_id: str, tasks: list[object]) -> None:
            pass

    for index in shards:
        sid = layout.shard_id(index)
        assert resubmit_one(tid, tid, sid, 2, settings, store, NullPool())["submitted"]  # type: ignore[arg-type]
        again = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 2)))
        assert again.merge_view_basis is not None and again.merge_view_threshold is not None
        entries = [{"file": f, "detections": [], "width": 640, "height": 480} for f in again.images]
        named = (damaged or {}).get(index)
        store.write_bytes(settings.container, again.output_blob, json.dumps(
            {"images": entries, **({"info": {"trapbatch": {"damaged": named}}} if named else {})}).encode())
        results_etag = store.list_etags(settings.container, layout.shard_prefix(tid, sid))[again.output_blob]
        whole = whole_shard(again.merge_view_basis, blob_reader(store.service, settings.container))
        doc = jsonio.loads(store.read_bytes(settings.container, again.output_blob))
        view = build_view(tid, again.merge_view_threshold, whole.images, doc["images"], results_etag,
                          whole.manifest_etag, whole.earlier, damaged=damaged_in(doc))
        assert view is not None
        store.write_bytes(settings.container, layout.attempt_view_blob(tid, sid, 2), view)


def test_shards_that_ran_again_are_merged_from_their_last_attempts_views_of_every_attempt(task: Any) -> None:
    """Shards 2 (no results at all), 7 (a retryable failure) and 8 (an image never written) ran a second attempt,
    whose worker's view covers the whole shard: the merge parts use those views instead of the attempts' entries
    and write the single pass's bytes. Shard 8's first results rewritten after its view: that view is not used."""
    settings, store, tid, counts = task
    threshold = settings.threshold_for(MODEL, None)
    write_worker_views(settings, store, tid, range(counts["shards"]), threshold)
    run_again_with_views(settings, store, tid, [2, 7, 8])
    stale = layout.attempt_results_blob(tid, layout.shard_id(8), 1)
    store.write_bytes(settings.container, stale, store.read_bytes(settings.container, stale) + b" ")  # a new ETag

    reference = run_merge(tid, MODEL, T0.isoformat(), settings, store)
    assert reference["missing"] == 4 + 0 + 4  # shard 3's results are not JSON, shard 5's empty; 2, 7, 8 now whole
    expected = _outputs(settings, store, tid)
    run, reads = merge_recording_reads(settings, store, tid, counts)

    assert run.status == "Completed", run.error
    assert {k: v for k, v in run.output.items() if k not in ("parts", "exports_fan_out")} == reference
    assert _outputs(settings, store, tid) == expected
    read_results = {(i, a) for i in range(counts["shards"]) for a in (1, 2)
                    if layout.attempt_results_blob(tid, layout.shard_id(i), a) in reads}
    assert read_results == {(3, 1), (5, 1), (8, 1), (8, 2)}  # no usable view: 3 and 5 (none), 8 (stale)


def test_a_shard_merged_from_a_later_attempts_view_names_every_attempts_photos_cut_short_without_their_lists(
        task: Any) -> None:
    """Shard 7's first attempt named a photo cut short in its results and died before its list
    (``layout.attempt_damaged_blob``); its second attempt names one too and none of its list's writes landed. The
    part takes the second attempt's view, reading neither attempt's results nor any list, and counts both from the
    view; the entry path (the view gone) finds the same names in the results."""
    settings, store, tid, counts = task
    sid = layout.shard_id(7)
    write_worker_views(settings, store, tid, range(counts["shards"]), settings.threshold_for(MODEL, None))
    first = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1)))
    doc = store.read_json(settings.container, first.output_blob)
    doc["info"] = {"trapbatch": {"damaged": [first.images[2]]}}
    store.write_bytes(settings.container, first.output_blob, json.dumps(doc).encode())
    run_again_with_views(settings, store, tid, [7], {7: [first.images[1]]})  # images[1]: its retryable failure
    names = sorted(first.images[1:3])

    run, reads = merge_recording_reads(settings, store, tid, counts)

    assert run.status == "Completed", run.error
    assert (run.output["damaged"], run.output["damaged_examples"]) == (2, names)
    rows = list(csv.reader(io.StringIO(store.read_bytes(settings.container, layout.damaged_blob(tid)).decode())))
    assert rows == [["file"], *([spreadsheet_safe(n)] for n in names)]
    assert not {layout.attempt_results_blob(tid, sid, a) for a in (1, 2)} & set(reads)  # from the view
    assert not any(n.endswith(".damaged.json") for n in store.list_names(settings.container,
                                                                        layout.shard_prefix(tid, sid)))
    store.service.get_blob_client(settings.container, layout.attempt_view_blob(tid, sid, 2)).delete_blob()
    entry_path, reads = merge_recording_reads(settings, store, tid, counts)
    assert layout.attempt_results_blob(tid, sid, 2) in reads
    assert {k: entry_path.output[k] for k in ("damaged", "damaged_examples")} == {"damaged": 2,
                                                                                "damaged_examples": names}


def unsequenced(document: bytes) -> dict[str, Any]:
    """A COCO document without its images' sequence ids (the rest of each image, and all else, as it was)."""
    coco = json.loads(document)
    for image in coco["images"]:
        image.pop("seq_id", None)
    return coco


def exported(settings: Settings, store: BlobStore, tid: str) -> dict[str, bytes]:
    """The task's export files (COCO, Camtrap DP's tables, the Zooniverse batches), deleted once read: the next
    run must write them again."""
    prefix = layout.exports_prefix(tid)
    names = [n for n in store.list_names(settings.container, prefix)
             if n.endswith(("coco.json", "media.csv", "observations.csv", "deployments.csv")) or "/zooniverse/" in n]
    out = {n: store.read_bytes(settings.container, n) for n in names}
    delete_prefix(store, settings.container, prefix)  # in batches: a request a blob was ~a tenth of an exports test's
    return out


def fanned_exports(settings: Settings, store: BlobStore, tid: str, merged: Any, single: Any) -> dict[str, bytes]:
    """The exports fanned out over the merge's parts (exports parts, combine, Zooniverse parts and combines, as
    ``orchestrations.exports`` runs them), the totals checked against the single activity's ``single``."""
    from activities.exportparts import run_exports_combine, run_exports_part
    from activities.zooniverseparts import run_zooniverse_combine, run_zooniverse_part
    from core.exportparts import eligible_before, part_ranges, zooniverse_groups
    from tests.integration.test_exports_fanout import group_and_link, relink

    ranges = part_ranges(merged["parts"])
    assert len(ranges) > 2
    outs = [run_exports_part(c.ExportsPartInput(task_id=tid, variant="", part=p, first_shard=f, offset=o,
                                                length=n, shards=merged["parts"][p][1]), settings, store)
            for p, f, o, n in ranges]
    grouped = group_and_link(settings, store, tid, "", outs)  # the events, then the parts' rows linked to them
    combined = run_exports_combine(c.ExportsCombineInput(task_id=tid, variant="", parts=outs, **grouped), settings,
                                   store)
    if combined["conflict"]:  # as orchestrations.exports: the parts named run again from the task's first facts
        redo = set(combined.get("redo") or [])
        again = {p: run_exports_part(c.ExportsPartInput(task_id=tid, variant="", part=p, first_shard=f, offset=o,
                                                        length=n, shards=merged["parts"][p][1], given=True),
                                     settings, store) for p, f, o, n in ranges if p in redo}
        outs = [again.get(out["part"], out) for out in outs]
        grouped = relink(settings, store, tid, "", grouped, sorted(redo))
        combined = run_exports_combine(c.ExportsCombineInput(task_id=tid, variant="", parts=outs, **grouped),
                                       settings, store)
    assert not combined["conflict"] and combined["output"]["annotations"] == single["annotations"]
    total, batches = combined["output"]["zooniverse_subjects"], combined["output"]["zooniverse_batches"]
    assert (total, batches) == (single["zooniverse_subjects"], single["zooniverse_batches"])
    for (p, f, o, n), out, before in zip(ranges, outs, eligible_before([o["eligible"] for o in outs])):
        run_zooniverse_part(c.ExportsZooniversePartInput(
            task_id=tid, variant="", part=p, first_shard=f, offset=o, length=n, before=before, rows=out["eligible"],
            eligible=total, batches=batches, shards=merged["parts"][p][1],
            **({"cut_short": True} if out.get("zooniverse_cut_short") else {})), settings, store)  # as the orchestrator
    for first, count in zooniverse_groups(batches, len(ranges)):
        run_zooniverse_combine(c.ExportsZooniverseCombineInput(
            task_id=tid, variant="", parts=[r[0] for r in ranges], first=first, count=count), settings, store)
    return {n: b for n, b in exported(settings, store, tid).items()
            if "/.zooniverse-parts/" not in n and "/.parts/" not in n}


def finish_every_shard(settings: Settings, store: BlobStore, tid: str, counts: Any,
                       exif_times: bool = True, first_cut_short: bool = False) -> tuple[Settings, Any]:
    """Every shard finished cleanly, with sizes (and EXIF capture times but for a camera whose clock was never set,
    unless not ``exif_times``), so each can have a view (shard 2 by its second attempt's view of both attempts), and
    the task merged in parts of 12 images: (the settings, whose attribution and license to quote and batches of 7
    subjects the task's run decided, ``task``, and the merge's output). ``first_cut_short``: shard 2's first attempt
    named its first photo cut short in its results and died before writing its list (``layout.attempt_damaged_blob``),
    so only those results and its second attempt's view name it."""
    from gpu_batch.pool.simulated import synthetic_entry

    for index in range(counts["shards"]):
        sid = layout.shard_id(index)
        images = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1))).images
        done = images[:2] if index == 2 else images  # shard 2's first attempt stopped half-way; its second finishes it
        doc: dict[str, Any] = {"images": [{k: v for k, v in synthetic_entry(n, 1, 0.0, seed=3).items()
                                           if exif_times or k != "datetime"} for n in done]}
        if first_cut_short and index == 2:
            doc["info"] = {"trapbatch": {"damaged": [images[0]]}}
        store.write_bytes(settings.container, layout.attempt_results_blob(tid, sid, 1), json.dumps(doc).encode())
    run_again_with_views(settings, store, tid, [2])  # its second worker's view covers both attempts
    merged = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12, **counts},
                              real_activities(settings, store)).output
    return settings, merged


def record_formatting(monkeypatch: Any) -> tuple[list[str], list[int], list[str]]:
    """Lists that fill as the exports work from entries: the files whose COCO, Camtrap DP or Zooniverse line was
    made from the entry (once per format), one item per entry an exports or Zooniverse part parsed, and the blobs
    the single exports activity downloaded whole."""
    from activities import exportparts
    from activities import exports as exports_activities
    from core import zooniverse
    from gpu_batch.formats import camtrapdp, coco

    formatted: list[str] = []
    original, original_lines = coco.convert_entry, camtrapdp.CamtrapBuilder.add_lines
    monkeypatch.setattr(coco, "convert_entry", lambda entry, *a, **k: formatted.append(entry["file"]) or original(
        entry, *a, **k))
    monkeypatch.setattr(camtrapdp.CamtrapBuilder, "add_lines", lambda self, entry, *a, **k: formatted.append(
        entry["file"]) or original_lines(self, entry, *a, **k))
    original_row = zooniverse.row_line
    monkeypatch.setattr(zooniverse, "row_line", lambda entry, *a, **k: formatted.append(entry["file"]) or original_row(
        entry, *a, **k))
    parsed: list[int] = []
    original_parse = exportparts._lines
    monkeypatch.setattr(exportparts, "_lines", lambda fp: (parsed.append(1) or e for e in original_parse(fp)))
    monkeypatch.setattr("activities.zooniverseparts._lines", exportparts._lines)
    downloads: list[str] = []
    original_download = exports_activities.download_to
    monkeypatch.setattr(exports_activities, "download_to", lambda st, container, name, fp: downloads.append(name) or
                        original_download(st, container, name, fp))
    return formatted, parsed, downloads


def test_exports_take_coco_camtrap_dp_and_zooniverse_lines_from_the_workers_views(task: Any, monkeypatch: Any) -> None:
    """With every shard viewed (shard 2 by its second attempt's view of both attempts), neither the single exports
    activity nor an exports or Zooniverse part formats a COCO or Camtrap DP line or a Zooniverse row (the views hold
    them, with the task's completion time, classifier, attribution and license put in) or reads an entry, and all are
    the bytes the entries give; one shard without a view sends its parts (the single activity: all) to the entries."""
    from activities.exports import run_exports

    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts)
    single = run_exports(tid, settings, store)
    expected = exported(settings, store, tid)
    assert len(expected) == 4 + single["zooniverse_batches"] and single["annotations"] > 0
    assert single["zooniverse_batches"] > 2 and b'"Snapshot, ""Serengeti""",CC-BY-4.0' in expected[
        layout.zooniverse_batch_blob(tid, 1)]
    spans = {r["deploymentID"]: (r["deploymentStart"], r["deploymentEnd"], r["timestampIssues"])
             for r in csv.DictReader(io.StringIO(expected[layout.camtrap_dp_blob(tid, "deployments.csv")].decode()))}
    # cam1's EXIF times span it; its images that shard 2's second attempt ran have none (issues), and do not
    # stretch it to the completion time (2025): views with such mixed deployments hold the same lines below
    assert spans["cam1"][0].startswith("2024-") and spans["cam1"][1].startswith("2024-") and spans["cam1"][2] == "true"
    # cam2's images all have EXIF times, whose zone the task did not give: written as UTC, which is an issue
    assert spans["cam2"][0].startswith("2024-") and spans["cam2"][2] == "true"
    assert spans["(root)"] == ("2025-01-01T00:00:00+00:00",) * 2 + ("true",)  # a clock never set: the completion time
    written = write_worker_views(settings, store, tid, range(counts["shards"]), settings.threshold_for(MODEL, None))
    assert written == set(range(counts["shards"])) - {2}
    formatted, parsed, downloads = record_formatting(monkeypatch)
    assert run_exports(tid, settings, store) == single and exported(settings, store, tid) == expected and formatted == []
    assert downloads == []  # the results' head came from a ranged read, and no entry was needed
    assert fanned_exports(settings, store, tid, merged, single) == expected and formatted == [] and parsed == []
    view_of_1 = layout.attempt_view_blob(tid, layout.shard_id(1), 1)
    store.service.get_blob_client(settings.container, view_of_1).delete_blob()
    assert fanned_exports(settings, store, tid, merged, single) == expected
    first, shards = merged["parts"][0][0], merged["parts"][0][1]
    assert first == 0 and shards > 1  # the parts of shard 1 formatted their entries again, and only they did
    manifests = [store.read_json(settings.container, layout.manifest_blob(tid, layout.shard_id(i), 1))
                 for i in range(shards)]
    images = sum(len(m["images"]) for m in manifests)
    assert len(formatted) == 3 * images > 0  # COCO, Camtrap DP and Zooniverse, each image once
    assert len(parsed) == 2 * images  # the exports part's and the Zooniverse part's entries
    assert run_exports(tid, settings, store) == single and exported(settings, store, tid) == expected
    assert downloads == [layout.results_blob(tid)]  # a shard without a view: the single activity reads the entries

    # the cameras' utc_offset: a view's Camtrap DP lines hold clock times as UTC, so the exports format the entries,
    # and the times are the same clock times in that zone (the completion time keeps its own); COCO's are unchanged
    # but for the sequences' ids, which are their Camtrap DP events' (whose start times now name that zone)
    request = store.read_json_or_none(settings.container, layout.request_blob(tid)) or {}
    store.write_json(settings.container, layout.request_blob(tid), {**request, "utc_offset": "-03:00"})
    formatted.clear()
    assert run_exports(tid, settings, store) == single
    described = store.read_json(settings.container, layout.camtrap_dp_blob(tid, "datapackage.json"))["description"]
    zoned = exported(settings, store, tid)
    assert len(formatted) >= images and unsequenced(zoned[layout.coco_blob(tid)]) == unsequenced(
        expected[layout.coco_blob(tid)])
    sequences = {im["seq_id"] for im in json.loads(zoned[layout.coco_blob(tid)])["images"] if "seq_id" in im}
    assert sequences and sequences == {r["eventID"] for r in csv.DictReader(io.StringIO(zoned[
        layout.camtrap_dp_blob(tid, "observations.csv")].decode())) if r["observationLevel"] == "event"}

    def times(files: dict[str, bytes]) -> list[str]:
        return [r["timestamp"] for r in csv.DictReader(io.StringIO(files[layout.camtrap_dp_blob(tid, "media.csv")]
                                                                   .decode()))]
    completed = "2025-01-01T00:00:00+00:00"
    assert times(zoned) == [t if t == completed else t.replace("+00:00", "-03:00") for t in times(expected)]
    assert any(t.endswith("-03:00") for t in times(zoned)) and completed in times(zoned)
    assert "at UTC-03:00" in described
    assert fanned_exports(settings, store, tid, merged, single) == zoned  # the parts format their entries too

    # a camera's clock corrected (clock_corrections): the views hold each clock as read, so the entries again, with
    # cam1's capture times an hour on (its gaps, and so its events, unchanged) and the other cameras' as they were
    store.write_json(settings.container, layout.request_blob(tid), {**request, "clock_corrections": {"cam1": 3600}})
    formatted.clear()
    assert run_exports(tid, settings, store) == single
    corrected = exported(settings, store, tid)
    assert len(formatted) >= images

    def media_rows(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
        return dict(by_blob_name(csv.DictReader(io.StringIO(
            files[layout.camtrap_dp_blob(tid, "media.csv")].decode()))))
    before, after = media_rows(expected), media_rows(corrected)
    moved = 0
    for name, row in before.items():
        if (row["deploymentID"] + "/").startswith("cam1/") and row["timestamp"] != completed:  # and below it
            hour_on = datetime.fromisoformat(row["timestamp"]) + timedelta(hours=1)
            assert after[name]["timestamp"] == hour_on.isoformat()
            # a photo without a capture time has its deployment's first as a stand-in: corrected with it
            untimed = row["mediaComments"] == after[name]["mediaComments"] == camtrapdp.FIRST_CAPTURE_STANDS_IN
            assert untimed or "corrected by +3600 s" in after[name]["mediaComments"]
            moved += 1
        else:
            assert after[name]["timestamp"] == row["timestamp"]
    assert moved > 0
    assert fanned_exports(settings, store, tid, merged, single) == corrected

    # a camera rule (camera_depth): the views' locations, deployments and facts are by MegaDetector's camera folders,
    # so the entries again, cam1/sub/ now within camera cam1 (one deployment fewer), in both ways
    store.write_json(settings.container, layout.request_blob(tid), {**request, "camera_depth": 1})
    formatted.clear()
    grouped = run_exports(tid, settings, store)
    assert len(formatted) >= images and grouped["deployments"] == single["deployments"] - 1
    by_camera = exported(settings, store, tid)
    assert {r["deploymentID"] for r in csv.DictReader(io.StringIO(
        by_camera[layout.camtrap_dp_blob(tid, "deployments.csv")].decode()))} >= {"cam1", "cam2", "(root)"}
    assert "cam1/sub" in by_camera[layout.coco_blob(tid)].decode() and '"location":"cam1/sub"' not in \
        by_camera[layout.coco_blob(tid)].decode()
    assert fanned_exports(settings, store, tid, merged, grouped) == by_camera


def test_exports_take_no_view_of_results_written_after_the_merge(task: Any, monkeypatch: Any) -> None:
    """A late worker of a shard's attempt (Batch reran its task; the first run flushed again after the merge) rewrote
    the shard's results and a view to match them: the exports took that view, as it named the shard's blobs as they
    were at export time, and their COCO and Camtrap DP lines differed from the results file the merge had written.
    The merge part records which results it merged, with their ETags (``layout.shard_merged_blob``); the exports take
    a view only of those, and format the results file's entries otherwise, as without views."""
    from activities.exports import run_exports
    from gpu_batch.pool.simulated import synthetic_entry

    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts)
    threshold = settings.threshold_for(MODEL, None)
    sid = layout.shard_id(1)
    results = layout.attempt_results_blob(tid, sid, 1)
    assert store.read_json(settings.container, layout.shard_merged_blob(tid, sid)) == {
        "results": {results: store.etag_or_none(settings.container, results)}, "damaged": []}  # none cut short
    merged_file = store.read_bytes(settings.container, layout.results_blob(tid))
    single = run_exports(tid, settings, store)
    expected = exported(settings, store, tid)  # from the entries of the results file: no view is written yet
    assert write_worker_views(settings, store, tid, range(counts["shards"]), threshold) == set(
        range(counts["shards"])) - {2}
    formatted, _, _ = record_formatting(monkeypatch)
    assert run_exports(tid, settings, store) == single and exported(settings, store, tid) == expected
    assert formatted == []  # every view is of the results merged: used

    images = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1))).images
    store.write_bytes(settings.container, results, json.dumps(  # the late run's results: other detections
        {"images": [synthetic_entry(n, 1, 0.0, seed=11) for n in images]}).encode())
    assert write_worker_views(settings, store, tid, [1], threshold) == {1}  # and its view of them
    assert store.read_bytes(settings.container, layout.results_blob(tid)) == merged_file
    assert run_exports(tid, settings, store) == single and exported(settings, store, tid) == expected
    assert set(images) <= set(formatted)  # the entries of the results file, not the late view
    assert fanned_exports(settings, store, tid, merged, single) == expected

    # a merge that recorded nothing (it ran before the records existed): no view is taken, the entries are formatted
    for index in range(counts["shards"]):
        store.service.get_blob_client(settings.container, layout.shard_merged_blob(tid, layout.shard_id(index))
                                      ).delete_blob()
    formatted.clear()
    assert run_exports(tid, settings, store) == single and exported(settings, store, tid) == expected
    assert formatted


def test_exports_ignore_an_older_workers_views_and_format_the_entries(task: Any, monkeypatch: Any) -> None:
    """The worker image is deployed apart from the app: a view an older worker wrote holds COCO lines of the older
    form (an EXIF ``datetime`` as read), so it has the older ``VIEW_VERSION`` and the exports format every entry, in
    one form, rather than mix its lines with new ones in one file."""
    from activities.exports import run_exports
    from gpu_batch.formats import coco, mergeview

    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts)
    single = run_exports(tid, settings, store)
    expected = exported(settings, store, tid)
    dated = [im["datetime"] for im in json.loads(expected[layout.coco_blob(tid)])["images"] if "datetime" in im]
    assert dated and all(is_dashed_datetime(d) for d in dated)
    with monkeypatch.context() as older:  # what a version-2 worker wrote: EXIF datetimes copied as they were
        older.setattr(mergeview, "VIEW_VERSION", 2)
        older.setattr(coco, "cct_datetime", lambda value: value)
        written = write_worker_views(settings, store, tid, range(counts["shards"]), settings.threshold_for(MODEL, None))
    assert_older_views_not_used(monkeypatch, written, settings, store, tid, counts["shards"], merged, single, expected)


def assert_older_views_not_used(monkeypatch: Any, written: set[int], settings: Any, store: Any, tid: str,
                                shards: int, merged: Any, single: Any, expected: dict[str, bytes]) -> None:
    """Views an older worker wrote (every shard's but shard 2's) are not used: the entries are formatted, and the
    single activity and the fan-out write the bytes they wrote without views."""
    from activities.exports import run_exports

    assert written == set(range(shards)) - {2}
    formatted, _, _ = record_formatting(monkeypatch)
    assert run_exports(tid, settings, store) == single and exported(settings, store, tid) == expected
    assert formatted, "the entries were formatted: the older views were not used"
    assert fanned_exports(settings, store, tid, merged, single) == expected


def test_exports_ignore_views_whose_media_lines_hold_blob_names(task: Any, monkeypatch: Any) -> None:
    """A version-8 worker's view holds Camtrap DP media lines whose filePath is the blob name (no placeholder for
    the images' URL prefix). The exports do not use it: every media filePath is the image's URL, in the single
    activity and the fan-out alike, the same bytes as without views, not blob names in the shards that had one."""
    from activities.exports import run_exports
    from gpu_batch.formats import mergeview

    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts)
    single = run_exports(tid, settings, store)
    expected = exported(settings, store, tid)
    base = f"{store.endpoint}/{store.read_json(settings.container, layout.enumeration_blob(tid))['container']}/"
    paths = [r["filePath"] for r in csv.DictReader(io.StringIO(
        expected[layout.camtrap_dp_blob(tid, "media.csv")].decode()))]
    assert paths and all(p.startswith(base) for p in paths)
    with monkeypatch.context() as older:  # what a version-8 worker wrote: blob names
        older.setattr(mergeview, "VIEW_VERSION", 8)
        older.setattr(mergeview, "MEDIA_BASE", "")
        written = write_worker_views(settings, store, tid, range(counts["shards"]), settings.threshold_for(MODEL, None))
    assert_older_views_not_used(monkeypatch, written, settings, store, tid, counts["shards"], merged, single, expected)


def test_exports_ignore_views_made_before_the_photos_exif_offsets(task: Any, monkeypatch: Any) -> None:
    """A worker writes a photo's EXIF 2.31 offset beside its ``datetime`` (``exif_metadata``), and the Camtrap DP
    media timestamps, deployment spans and events place that photo in it (``camtrapdp.exif_offset``). The field goes
    through the merge into the results file and COCO's images as the entry has it; the CSV keeps the camera's clock.
    A view made by code before that (version 9) holds Camtrap DP lines that place every such time in UTC: the
    exports must not take them, or one package mixes a camera's photos at +02:00 (formatted) and +00:00 (a view's),
    and an older app must not take a newer worker's lines either. So its version is not this one's: the single
    activity and the fan-out write the bytes they write without views."""
    from activities.exports import run_exports
    from gpu_batch.formats import mergeview
    from gpu_batch.pool import simulated

    plain = simulated.synthetic_entry

    def with_offset(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        entry = plain(name, *args, **kwargs)
        if "datetime" in entry and name.startswith("cam1/"):  # a camera whose EXIF says its clock is at UTC+2
            entry["exif_metadata"] = {"OffsetTimeOriginal": "+02:00"}
        return entry

    monkeypatch.setattr(simulated, "synthetic_entry", with_offset)
    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts)
    results = json.loads(store.read_bytes(settings.container, layout.results_blob(tid)))["images"]
    own = {e["file"]: e["datetime"] for e in results if e.get("exif_metadata") == {"OffsetTimeOriginal": "+02:00"}}
    assert own and all(name.startswith("cam1/") for name in own)
    table = store.read_bytes(settings.container, layout.csv_blob(tid)).decode("utf-8")
    assert all(when.replace(":", "-", 2) in table for when in own.values())  # the camera's clock, as written
    single = run_exports(tid, settings, store)
    expected = exported(settings, store, tid)
    media = {r["filePath"].rsplit("/", 1)[-1]: r["timestamp"] for r in csv.DictReader(io.StringIO(
        expected[layout.camtrap_dp_blob(tid, "media.csv")].decode()))}
    stamped = {name: media[name.rsplit("/", 1)[-1]] for name in own}
    assert all(stamp.endswith("+02:00") for stamp in stamped.values()), stamped
    images = {im["file_name"]: im for im in json.loads(expected[layout.coco_blob(tid)])["images"]}
    assert all(images[name]["exif_metadata"] == {"OffsetTimeOriginal": "+02:00"} for name in own)
    with monkeypatch.context() as older:  # what a version-9 worker wrote: the photo's own offset not read
        older.setattr(mergeview, "VIEW_VERSION", 9)
        older.setattr(camtrapdp, "exif_offset", lambda entry: None)
        written = write_worker_views(settings, store, tid, range(counts["shards"]), settings.threshold_for(MODEL, None))
    assert_older_views_not_used(monkeypatch, written, settings, store, tid, counts["shards"], merged, single, expected)


def is_dashed_datetime(value: str) -> bool:
    """Whether a COCO image's ``datetime`` has the form the exports write (``YYYY-MM-DD HH:MM:SS``)."""
    return len(value) == 19 and value[4] == value[7] == "-" and value[13] == value[16] == ":"


LIST_COLUMNS = ["site", "latitude", "longitude", "camera_id", "datetime", "seq_id", "season", "file"]


def list_row(name: str, k: int, shard: int, jitter: int | str | None) -> dict[str, str]:
    """An image list's row: cam1's images at site J01 with coordinates, a camera and capture times (its first image
    of shard ``jitter`` a few metres off; ``"each"``: every image its own, as a camera's GPS writes them), cam2's at site J02 with no coordinates, a free column to quote,
    one named like a Zooniverse column, and rows with nothing."""
    if name.startswith("cam1/img"):
        lat = f"-2.33{shard:02d}{k}" if jitter == "each" else "-2.3301" if shard == jitter and k == 0 else "-2.33"
        return {"site": "J01", "latitude": lat, "longitude": "34.83", "camera_id": "CAM-A",
                "datetime": f"2024-05-01 10:{k:02d}:{shard:02d}", "seq_id": f"s{shard}", "season": "S1"}
    if name.startswith("cam2/"):
        return {"site": "J02", "season": 'S2, "wet" 季', "file": f"roll {k}"}
    if name.startswith("cam1/sub/"):
        return {"camera_id": "CAM-B", "latitude": "95", "longitude": "34.8"}  # out of range: kept in the comments
    return {}


def write_listed_views(settings: Settings, store: BlobStore, tid: str, shards: int, threshold: float,
                       columns: list[str] | None, given: bool = False) -> None:
    """Each shard's view as its last attempt's worker makes it (``gpu_batch.worker.results``): with the image list's
    rows read through the worker's blob reader from the list document its manifest names (``columns`` None: an
    older worker's view, without them)."""
    from gpu_batch.formats import jsonio
    from gpu_batch.formats.mergeview import build_view, list_rows, whole_shard
    from gpu_batch.manifest import ViewList
    from gpu_batch.worker.sources import blob_reader

    read = blob_reader(store.service, settings.container)
    for index in range(shards):
        sid = layout.shard_id(index)
        listed = store.list_etags(settings.container, layout.shard_prefix(tid, sid))
        attempt = 2 if layout.manifest_blob(tid, sid, 2) in listed else 1
        manifest = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, attempt)))
        images, manifest_etag, earlier = manifest.images, listed[layout.manifest_blob(tid, sid, 1)], []
        if manifest.merge_view_basis is not None:
            whole = whole_shard(manifest.merge_view_basis, read)
            images, manifest_etag, earlier = whole.images, whole.manifest_etag, whole.earlier
        where = ViewList(layout.shard_list_blob(tid, sid), tuple(columns or ()),
                         layout.list_facts_blob(tid) if given else "")
        rows = (list_rows(where, read) if columns is not None
                else None)
        results = layout.attempt_results_blob(tid, sid, attempt)
        view = build_view(tid, threshold, images, jsonio.loads(store.read_bytes(settings.container, results))["images"],
                          listed[results], manifest_etag, earlier, rows)
        assert view is not None
        store.write_bytes(settings.container, layout.attempt_view_blob(tid, sid, attempt), view)


@pytest.mark.parametrize("jitter", [None, 1, 3, "each"], ids=["same coordinates", "jitter inside a part",
                                                           "jitter at a part's first shard", "per-image GPS"])
def test_an_image_lists_exports_take_their_lines_from_views_made_with_the_lists_rows(task: Any, monkeypatch: Any,
                                                                                     jitter: int | str | None) -> None:
    """An image-list task with metadata columns: views made with each shard's list rows give the exports their COCO,
    Camtrap DP and Zooniverse lines (single activity and fanned out), the bytes the entries and the list give, and
    no entry is formatted or read. With a deployment's first coordinates differing between two shards (GPS jitter),
    the later view's media comments are not the single pass's: Camtrap DP's lines come from the entries of the part
    that holds the later shard, COCO's and Zooniverse's still from the views (a part that starts with it disagrees with
    its later shards; the combine finds it differs from the part before and runs it again with the task's first
    facts, whose check against its view sends it to the entries). A view made without the rows (an older
    worker), or before its list document was rewritten, is not used by the exports; the merge still uses it."""
    from activities.exports import run_exports

    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts, exif_times=False)  # the list's times stand
    shards = counts["shards"]
    for index in range(shards):
        sid = layout.shard_id(index)
        images = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1))).images
        store.write_json(settings.container, layout.shard_list_blob(tid, sid), {"not_found": [], "metadata": {
            name: list_row(name, k, index, jitter) for k, name in enumerate(images)}})
    enumeration = store.read_json(settings.container, layout.enumeration_blob(tid))
    store.write_json(settings.container, layout.enumeration_blob(tid),
                     {**enumeration, "image_list": {"metadata_columns": LIST_COLUMNS}})
    given = jitter == "each"  # the enumeration's deployments' first facts, which the views then start from
    if given:
        from activities.image_list import write_first_facts
        from gpu_batch.formats.camtrapdp import first_facts
        from gpu_batch.formats import jsonio

        for index in range(shards):  # one enumeration batch per shard here; the real batches hold several
            sid = layout.shard_id(index)
            rows = store.read_json(settings.container, layout.shard_list_blob(tid, sid))["metadata"]
            images = ShardManifest.from_dict(store.read_json(settings.container,
                                                             layout.manifest_blob(tid, sid, 1))).images
            store.write_bytes(settings.container, layout.list_facts_part_blob(tid, index),
                              jsonio.dumps(first_facts((n, rows.get(n)) for n in images)))
        write_first_facts(tid, settings, store)
        assert store.read_json(settings.container, layout.list_facts_blob(tid))["cam1@J01"] == [-2.33002, 34.83, "CAM-A"]
    single = run_exports(tid, settings, store)  # no view has the rows yet: every line from the entries
    expected = exported(settings, store, tid)
    media = expected[layout.camtrap_dp_blob(tid, "media.csv")].decode("utf-8")
    coco = expected[layout.coco_blob(tid)]
    assert b'"location":"J01","datetime":"2024-05-01 10:02:00","seq_id":"s0","image_list_metadata":{' in coco
    assert b'"season":"S1"' in coco and 'cam1/sub,,2025-01-01T00:00:00+00:00' in media  # the completion time
    assert ('"latitude": "-2.3301"' in media.replace('""', '"')) is (jitter in (1, 3))  # the jittered value kept
    assert ('"latitude": "-2.33013"' in media.replace('""', '"')) is given
    assert b"roll 3" in b"".join(v for n, v in expected.items() if "/zooniverse/" in n)
    threshold = settings.threshold_for(MODEL, None)

    write_listed_views(settings, store, tid, shards, threshold, LIST_COLUMNS, given)
    formatted, parsed, downloads = record_formatting(monkeypatch)
    assert run_exports(tid, settings, store) == single and exported(settings, store, tid) == expected
    images = sum(len(store.read_json(settings.container, layout.manifest_blob(tid, layout.shard_id(i), 1))["images"])
                 for i in range(shards))
    if jitter in (1, 3):  # the single activity: Camtrap DP from every entry; COCO's and Zooniverse's from the views
        assert len(formatted) == images and downloads == [layout.results_blob(tid)]
    else:
        assert formatted == [] and downloads == []
    formatted.clear()
    assert fanned_exports(settings, store, tid, merged, single) == expected
    assert [p[:2] for p in merged["parts"][:2]] == [[0, 3], [3, 3]]  # shards 0-2 and 3-5: 1 inside, 3 first
    part = [p for p in merged["parts"] if isinstance(jitter, int) and p[0] <= jitter < p[0] + p[1]]
    part_images = sum(len(store.read_json(settings.container, layout.manifest_blob(tid, layout.shard_id(i), 1))[
        "images"]) for p in part for i in range(p[0], p[0] + p[1]))
    # jitter: only that part's Camtrap DP lines come from its entries; at a part's first shard, twice: its own later
    # views differ from that first one, and its run again from the task's first facts differs at that first one
    runs = 2 if any(p[0] == jitter for p in part) else 1
    assert (len(formatted), len(parsed)) == (runs * part_images, runs * part_images)

    changes = [(4, "without rows"), (6, "list rewritten")] + ([(5, "first facts rewritten")] if given else [])
    for index, change in changes:
        sid = layout.shard_id(index)
        if change == "without rows":
            write_listed_views(settings, store, tid, index + 1, threshold, None)  # shards 0..4, an older worker's
        elif change == "list rewritten":
            doc = store.read_json(settings.container, layout.shard_list_blob(tid, sid))
            store.write_json(settings.container, layout.shard_list_blob(tid, sid), doc)  # same rows, a new ETag
        else:
            store.write_bytes(settings.container, layout.list_facts_blob(tid),
                              store.read_bytes(settings.container, layout.list_facts_blob(tid)))  # a new ETag
        listed = store.list_etags(settings.container, layout.shard_prefix(tid, sid))
        given_etag = store.list_etags(settings.container, layout.list_facts_blob(tid)).get(layout.list_facts_blob(tid),
                                                                                           "")
        assert fanin_activities.clean_view(store, settings, tid, index, threshold, listed, "exports",
                                           columns=tuple(LIST_COLUMNS), given_etag=given_etag) is None, change
        assert fanin_activities.clean_view(store, settings, tid, index, threshold, listed, "merge") is not None
    assert fanned_exports(settings, store, tid, merged, single) == expected


def test_a_views_header_longer_than_the_first_read_is_read_on_in_azurite(task: Any, caplog: Any) -> None:
    """A worker's view whose header line passes ``HEAD_BYTES`` (many categories or folders: the preview sampler's
    state and a size per folder) is still used: the reader reads on with ranged reads, never one that starts past
    the blob's end (Azure and Azurite answer that with 416), even for a blob cut at exactly ``HEAD_BYTES``. Past
    ``MAX_HEAD_BYTES`` the view is not used and a warning names the task and shard."""
    from gpu_batch.formats.mergeview import HEAD_BYTES, MAX_HEAD_BYTES, read_view

    settings, store, tid, counts = task
    threshold = settings.threshold_for(MODEL, None)
    index = min(write_worker_views(settings, store, tid, range(counts["shards"]), threshold))
    sid = layout.shard_id(index)
    name = layout.attempt_view_blob(tid, sid, 1)
    data = store.read_bytes(settings.container, name)
    line = data.index(b"\n")

    def padded(size: int) -> bytes:  # the same view, its header made ``size`` bytes long by a key no reader knows
        head = json.loads(data[:line])
        head["padding"] = ""
        head["padding"] = "x" * (size - len(json.dumps(head).encode()))
        return json.dumps(head).encode() + data[line:]

    def merge_view() -> Any:
        listed = store.list_etags(settings.container, layout.shard_prefix(tid, sid))
        return fanin_activities.clean_view(store, settings, tid, index, threshold, listed, "merge")

    store.write_bytes(settings.container, name, padded(HEAD_BYTES + 50_000))
    long_header, whole = merge_view(), read_view(store.read_bytes(settings.container, name))
    assert long_header is not None and whole is not None and long_header.sample
    assert (long_header.json, long_header.csv, long_header.sample) == (whole.json, whole.csv, whole.sample)
    store.write_bytes(settings.container, name, padded(HEAD_BYTES + 50_000)[:HEAD_BYTES])  # cut inside its header
    assert merge_view() is None
    with caplog.at_level("WARNING", logger="activities.fanin"):
        store.write_bytes(settings.container, name, padded(MAX_HEAD_BYTES + 10))
        assert merge_view() is None
    assert f"task {tid} shard {sid}: the worker's merge view is not used" in caplog.text
    assert f"does not end within its first {MAX_HEAD_BYTES} bytes" in caplog.text


def test_exports_take_no_view_of_a_shard_with_photos_cut_short_and_mark_them(task: Any, monkeypatch: Any) -> None:
    """A worker's view holds its shard's export lines as of whole photos: for a shard whose view names a photo cut
    short, the exports format the entries instead, with that photo out of Zooniverse, ``corrupt`` in COCO and noted
    in Camtrap DP (the worker's list names it, ``layout.attempt_damaged_blob``), in both ways alike."""
    from activities.exports import run_exports
    from gpu_batch.formats import jsonio
    from gpu_batch.formats.camtrapdp import CUT_SHORT_COMMENT
    from gpu_batch.formats.entries import damaged_document
    from gpu_batch.formats.mergeview import build_view

    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts)
    threshold = settings.threshold_for(MODEL, None)
    whole = run_exports(tid, settings, store)
    write_worker_views(settings, store, tid, range(counts["shards"]), threshold)
    sid = layout.shard_id(1)
    listed = store.list_etags(settings.container, layout.shard_prefix(tid, sid))
    results, manifest = layout.attempt_results_blob(tid, sid, 1), layout.manifest_blob(tid, sid, 1)
    entries = jsonio.loads(store.read_bytes(settings.container, results))["images"]
    cut = next(e["file"] for e in entries if e.get("failure") is None)
    images = ShardManifest.from_dict(store.read_json(settings.container, manifest)).images
    store.write_bytes(settings.container, layout.attempt_view_blob(tid, sid, 1), build_view(
        tid, threshold, images, entries, listed[results], listed[manifest], damaged=[cut]))
    store.write_bytes(settings.container, layout.attempt_damaged_blob(tid, sid, 1),
                      damaged_document(listed[results], [cut]))
    # merged again: from that view, which names the photo (damaged.csv, and the merge's record the exports read)
    merged = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12, **counts},
                              real_activities(settings, store)).output
    assert merged["damaged"] == 1
    assert store.read_bytes(settings.container, layout.damaged_blob(tid)) == f"file\r\n{cut}\r\n".encode()
    formatted, _, _ = record_formatting(monkeypatch)
    single = run_exports(tid, settings, store)
    assert cut in formatted  # the entries, not the view
    assert single["zooniverse_subjects"] == whole["zooniverse_subjects"] - 1 and single["zooniverse_cut_short"] == 1
    files = exported(settings, store, tid)
    assert not any(cut.encode() in data for name, data in files.items() if "/zooniverse/" in name)
    assert [im["file_name"] for im in json.loads(files[layout.coco_blob(tid)])["images"]
            if im.get("corrupt") and "failure" not in im] == [cut]
    media = [r for r in csv.DictReader(io.StringIO(files[layout.camtrap_dp_blob(tid, "media.csv")].decode()))
             if CUT_SHORT_COMMENT in r["mediaComments"]]
    assert [blob_name(r["filePath"]) for r in media] == [cut]
    assert fanned_exports(settings, store, tid, merged, single) == files


def test_exports_mark_a_photo_cut_short_that_only_its_shards_merge_view_names(task: Any) -> None:
    """Shard 2's first attempt named a photo cut short in its results and died before its list
    (``layout.attempt_damaged_blob``); its second attempt's view names it (``mergeview.whole_shard``), so the merge
    lists it in ``damaged.csv``. The exports learned the photos cut short from the workers' lists alone and left it
    unmarked; now they take each shard's from the merge's record of it (``layout.shard_merged_blob``): out of the
    Zooniverse subjects (fanned out, and in the single Zooniverse activity that histories from before that fan-out
    still run, whose count of subjects included it), ``corrupt`` in COCO and noted in Camtrap DP, in both ways alike.
    The same when the view is gone and the merge reads the names in the results (the entry path)."""
    from activities.exportparts import run_exports_zooniverse
    from activities.exports import run_exports
    from gpu_batch.formats.camtrapdp import CUT_SHORT_COMMENT

    settings, store, tid, counts = task
    settings, merged = finish_every_shard(settings, store, tid, counts, first_cut_short=True)
    sid = layout.shard_id(2)
    cut = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1))).images[0]
    assert not any(n.endswith(".damaged.json") for n in store.list_names(settings.container,
                                                                        layout.shard_prefix(tid, sid)))
    for view_gone in (False, True):
        if view_gone:  # its last attempt's view lost: the merge reads the shard's entries, and the names with them
            store.service.get_blob_client(settings.container, layout.attempt_view_blob(tid, sid, 2)).delete_blob()
            merged = run_orchestrator(merge_orchestrator, {"task_id": tid, "model": MODEL, "images_per_part": 12,
                                                           **counts}, real_activities(settings, store)).output
        assert merged["damaged"] == 1
        assert store.read_bytes(settings.container, layout.damaged_blob(tid)) == f"file\r\n{cut}\r\n".encode()
        single = run_exports(tid, settings, store)
        assert single["zooniverse_cut_short"] == 1, single
        files = exported(settings, store, tid)
        assert not any(cut.encode() in data for name, data in files.items() if "/zooniverse/" in name)
        assert [im["file_name"] for im in json.loads(files[layout.coco_blob(tid)])["images"]
                if im.get("corrupt")] == [cut]
        media = [blob_name(r["filePath"]) for r in csv.DictReader(io.StringIO(
            files[layout.camtrap_dp_blob(tid, "media.csv")].decode())) if CUT_SHORT_COMMENT in r["mediaComments"]]
        assert media == [cut]
        assert fanned_exports(settings, store, tid, merged, single) == files
        # a combine recorded before the Zooniverse fan-out: its parts counted the photo among the subjects
        made = run_exports_zooniverse(c.ExportsZooniverseInput(
            task_id=tid, variant="", eligible=single["zooniverse_subjects"] + 1), settings, store)
        batches = {n: b for n, b in exported(settings, store, tid).items() if "/zooniverse/" in n}
        assert batches and not any(cut.encode() in data for data in batches.values())
        assert sum(data.count(b"\n") - 1 for data in batches.values()) == single["zooniverse_subjects"]
        # its counts are the rows it wrote, not the recorded count (which the exports' summary showed before)
        assert made == {"batches": len(batches), "subjects": single["zooniverse_subjects"], "cut_short": 1}


def test_a_merge_again_at_the_same_key_leaves_nothing_made_from_the_results_it_replaces(task: Any) -> None:
    """A failed or terminated run resumed (a plain request again: ``api.starters._generations``) merges again under
    the same key, with results that may differ (shards given up before now have theirs). What the earlier merge's
    results were made into (the exports, the CSVs at other thresholds, the README, the repeated-detection list)
    was left, so when this run's repeat search or exports then failed, links and the results zip handed out that
    list and those exports beside results they do not describe, while the status said no list and no exports were
    written (``MergeOutput.repeat_search_error``, ``results.exports_error``). Missing is honest; stale is not: the
    combine deletes them before it writes the results, and leaves the repeats-removed variant's files alone."""
    from azure.core.exceptions import ResourceNotFoundError

    from adapters.share_links import result_files

    settings, store, tid, counts = task
    data = {"task_id": tid, "model": MODEL, "images_per_part": 12, **counts}
    first = run_orchestrator(merge_orchestrator, data, real_activities(settings, store))
    assert first.status == "Completed" and first.output["repeated_locations"] == 1
    earlier = {layout.coco_blob(tid): b"{}", layout.exports_prefix(tid) + "camtrap-dp/media.csv": b"x",
               layout.threshold_csv_prefix(tid) + "0.5.csv": b"x", layout.readme_blob(tid): b"x",
               layout.coco_blob(tid, REPEATS_REMOVED): b"{}", layout.readme_blob(tid, REPEATS_REMOVED): b"x"}
    for name, data_bytes in earlier.items():  # the earlier run's (and a removal's, which the merge must not touch)
        store.write_bytes(settings.container, name, data_bytes)
    # the first merge's combine delivered again (at least once) after its search, cleanup and exports: they are its
    # own, kept, and with its parts' work blobs gone it fails without writing anything
    answer = real_activities(settings, store)
    results_before = store.read_bytes(settings.container, layout.results_blob(tid))
    with pytest.raises(ResourceNotFoundError):
        answer(c.MERGE_COMBINE, first.calls(c.MERGE_COMBINE)[0].input)
    assert store.read_bytes(settings.container, layout.results_blob(tid)) == results_before
    names = set(store.list_names(settings.container, layout.results_prefix(tid)))
    assert set(earlier) | {layout.repeats_blob(tid)} <= names
    # the resumed run: shard 2, without any result before, now has its images done; its repeat search fails
    sid = layout.shard_id(2)
    m = ShardManifest.from_dict(store.read_json(settings.container, layout.manifest_blob(tid, sid, 1)))
    store.write_bytes(settings.container, layout.attempt_results_blob(tid, sid, 2), json.dumps(
        {"images": [{"file": f, "detections": []} for f in m.images]}).encode())

    def search_fails(name: str, payload: Any) -> Any:
        if name == c.SEARCH_REPEATS:
            raise OSError("the search's storage went away")
        return answer(name, payload)

    again = run_orchestrator(merge_orchestrator, data, search_fails, start=T0 + timedelta(hours=2))

    assert again.status == "Completed" and "repeat_search_error" in again.output
    assert again.output["failed"] == first.output["failed"] - len(m.images)  # other results than the first merge's
    names = set(store.list_names(settings.container, layout.results_prefix(tid)))
    assert layout.repeats_blob(tid) not in names  # no list, as the status says: not the first results' list
    assert not [n for n in earlier if n in names and REPEATS_REMOVED not in n]
    assert {layout.coco_blob(tid, REPEATS_REMOVED), layout.readme_blob(tid, REPEATS_REMOVED)} <= names
    files = result_files(store, settings.container, tid)["original"]
    assert files["exports"] == {} and files["thresholds"] == {} and "readme" not in files and "repeats" not in files
