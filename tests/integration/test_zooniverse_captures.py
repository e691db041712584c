"""Zooniverse subjects by capture (core.captures, activities.zooniverse_captures), against Azurite: the single exports
activity and the fan-out (parts' sorted runs, one merge) write the same batches, byte for byte, and every capture
comes out whole, its images in rank order, wherever its images sat among the shards and parts."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from typing import Any, Iterator

import pytest

from activities.exportparts import run_exports_combine, run_exports_part
from activities.exports import run_exports
from activities.zooniverse_captures import run_captures_combine, run_captures_part
from activities.zooniverseparts import run_zooniverse_clean
from adapters.blobs import BlobStore
from core import contracts as c
from core import mdformat, zooniverse
from core.exportparts import part_ranges
from core.settings import Settings
from gpu_batch import layout
from tests.camtrap_media import by_blob_name
from tests.integration.test_exports import TASK, task  # noqa: F401
from tests.integration.test_exports_fanout import (_clear, _many, _many_in_four_parts, _snapshot, _write_fanin_results,
                                                  group_and_link)

COLUMNS = ["Season", "site", "roll", "capture", "image", "note"]  # the seed's captures file, spelled as one may


def _collection(count: int) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """``count`` entries in name order and each one's list row: captures of one to four images, most of them
    neighbours, some spread far apart (capture ``k % 5`` of roll 9), ranks against name order, images without a
    capture, failed images and images the list flags."""
    entries: list[dict[str, Any]] = []
    rows: dict[str, dict[str, str]] = {}
    for k in range(count):
        file = f"site{k // 40}/img{k:04d}.jpg"
        if k % 17 == 3:
            entries.append(mdformat.failure_entry(file, mdformat.FAILURE_IMAGE_ACCESS, "undecodable"))
        else:
            dets = [{"category": str(1 + (k + j) % 3), "conf": round(((k * 37 + j * 11) % 100) / 100, 3),
                     "bbox": [0.1, 0.1, 0.2, 0.2]} for j in range(k % 3)]
            entries.append({"file": file, "detections": dets})
        if k % 23 == 7:
            rows[file] = {"Season": "S1", "site": "", "roll": "", "capture": "", "image": "", "note": "alone"}
            continue
        if k % 9 == 4:  # far apart: five captures over the whole collection
            site, roll, capture, rank = "X", "9", str(k % 5), str(k)
        else:
            site, roll, capture, rank = f"J{k // 40:02d}", "1", str(k // 3), str(3 - k % 3)  # ranks against names
        rows[file] = {"Season": "S1", "site": site, "roll": roll, "capture": capture, "image": rank,
                      "note": "invalid" if k % 29 == 11 else f"n{k}"}
        if k % 29 == 11:
            rows[file]["invalid"] = "1"
    for entry in entries:  # the list's flags travel in the entries (as the enumeration leaves them)
        if rows[entry["file"]].get("invalid"):
            entry["invalid"] = "1"
    doc = mdformat.build_output(entries, {"detector": "MDV5A", "detection_completion_time": "2026-12-01T10:00:00"})
    return doc, rows


def _setup(settings: Settings, store: BlobStore, shard_sizes: list[int], shards_per_part: int
           ) -> tuple[dict[str, Any], dict[str, dict[str, str]], list[list[int]]]:
    doc, rows = _collection(sum(shard_sizes))
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {"container": "elsewhere", "prefix": "", "images": sum(shard_sizes), "shards": len(shard_sizes),
                      "image_list": {"metadata_columns": COLUMNS}})
    at = 0
    for index, size in enumerate(shard_sizes):
        names = [e["file"] for e in doc["images"][at:at + size]]
        store.write_json(settings.container, layout.shard_list_blob(TASK, layout.shard_id(index)),
                         {"not_found": [], "metadata": {n: {k: v for k, v in rows[n].items() if k != "invalid"}
                                                        for n in names}})
        at += size
    parts = _write_fanin_results(store, settings.container, "", shard_sizes, shards_per_part, doc)
    return doc, rows, parts


def _fanned(settings: Settings, store: BlobStore, parts: list[list[int]], with_shards: bool = False
            ) -> c.ExportsOutput:
    """What orchestrations.exports runs for a task whose list defines captures; ``with_shards``: each part's shard
    count in its inputs, as the orchestrator gives it (the shards' views and lists are read then)."""
    ranges = part_ranges(parts)
    more: list[dict[str, Any]] = [{"shards": parts[p][1]} if with_shards else {} for p, *_ in ranges]
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o, length=n,
                                                **more[p]), settings, store) for p, f, o, n in ranges]
    combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=outs,
                                                         **group_and_link(settings, store, TASK, "", outs)),
                                   settings, store)
    assert combined.get("zooniverse_captures") is True and "output" in combined
    runs = [run_captures_part(c.ExportsCapturesPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o,
                                                         length=n, **more[p]), settings, store)
            for p, f, o, n in ranges]
    made = run_captures_combine(c.ExportsCapturesCombineInput(
        task_id=TASK, variant="", runs=[(r["part"], r["runs"]) for r in runs if r["runs"]]), settings, store)
    run_zooniverse_clean(c.ExportsZooniverseCleanInput(task_id=TASK, variant="", batches=made["batches"]), settings,
                         store)
    return {**combined["output"], "zooniverse_subjects": made["subjects"], "zooniverse_batches": made["batches"],
            "zooniverse_capture_images": made["images"]}


def _expected_subjects(doc: dict[str, Any], rows: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Each capture id (the file for an image alone) and its images in rank order, computed here from scratch."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for entry in doc["images"]:
        if zooniverse.excluded(entry):
            continue
        row = rows[entry["file"]]
        parts = [row["Season"], row["site"], row["roll"], row["capture"]]
        key = "#".join(parts) if all(parts) else entry["file"]
        groups.setdefault(key, []).append((int(row["image"]) if row["image"] else 2**62, entry["file"]))
    return {key: [f for _, f in sorted(images)] for key, images in groups.items()}


SPLITS = [([40, 40, 40, 17], 1), ([40, 40, 40, 17], 2), ([7] * 19 + [4], 3), ([137], 1)]


@pytest.mark.parametrize("shard_sizes,shards_per_part", SPLITS)
def test_captures_come_out_whole_and_the_fan_out_writes_the_single_passes_bytes(
        task: Any, shard_sizes: list[int], shards_per_part: int) -> None:  # noqa: F811
    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=4, export_image_sizes=False)
    doc, rows, parts = _setup(settings, store, shard_sizes, shards_per_part)
    stale = layout.zooniverse_batch_blob(TASK, 999)
    store.write_bytes(settings.container, stale, b"a batch an earlier, larger run wrote\r\n")

    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    assert stale not in expected  # batches beyond this run's count are deleted

    want = _expected_subjects(doc, rows)
    assert single["zooniverse_subjects"] == len(want) and single["zooniverse_batches"] == -(-len(want) // 4)
    assert single["zooniverse_capture_images"] == sum(len(v) for v in want.values())
    widest = max(len(v) for v in want.values())
    got: dict[str, list[str]] = {}
    for b in range(1, single["zooniverse_batches"] + 1):
        text = expected[layout.zooniverse_batch_blob(TASK, b)].decode("utf-8")
        table = list(csv.DictReader(io.StringIO(text, newline="")))
        assert 1 <= len(table) <= 4
        header = text.split("\r\n", 1)[0].split(",")
        assert header[:widest + 1] == [f"image_name_{i}" for i in range(1, widest + 1)] + ["folder"]
        assert "list_image" not in header and "image" in header and "Season" in header
        for r in table:
            files = [r[f"image_name_{i}"] for i in range(1, widest + 1) if r[f"image_name_{i}"]]
            key = r["#capture_id"] or files[0]
            assert key not in got  # each capture once
            got[key] = files
            assert int(r["#images"]) == len(files)
            confs = [max([d["conf"] for d in e["detections"] or []] or [0.0])
                     for e in doc["images"] if e["file"] in files]
            assert float(r["#detector_max_conf"]) == round(max(confs), 4)
            first = files[0]
            assert r["note"] == next(v for k, v in rows[first].items() if k == "note")  # the first image's row
    assert got == want  # whole captures, in rank order; flagged and failed images left out
    assert any(len(v) > 1 and v != sorted(v) for v in want.values())  # ranks that differ from name order
    assert any(len({f.split("/")[0] for f in v}) > 1 for v in want.values())  # captures spread over folders

    fanned = _fanned(settings, store, parts)
    assert fanned == single
    again = _snapshot(store, settings.container, "")
    assert sorted(again) == sorted(expected)
    for name in expected:
        assert again[name] == expected[name], name
    assert not [n for n in store.list_names(settings.container, layout.exports_prefix(TASK)) if ".zooniverse-parts"
                in n]  # the work blobs went with the clean-up


def test_a_capture_longer_than_max_frames_is_split_in_rank_order_and_the_fan_out_writes_the_same_bytes(
        task: Any) -> None:  # noqa: F811
    """With TRAPBATCH_ZOONIVERSE_MAX_FRAMES 2, a capture of three images is two subjects (``1 of 2``: its first two
    in rank order, ``2 of 2``: the third), both with the capture's id, so the manifests have two image columns, not
    the largest capture's count; the fan-out writes the single activity's bytes."""
    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=4, export_image_sizes=False, zooniverse_max_frames=2)
    doc, rows, parts = _setup(settings, store, [40, 40, 40, 17], 2)
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    want = _expected_subjects(doc, rows)
    assert max(len(v) for v in want.values()) == 3 and sum(len(v) > 2 for v in want.values()) > 5
    subjects = [r for name, data in sorted(expected.items()) if "/zooniverse/batch-" in name
                for r in csv.DictReader(io.StringIO(data.decode()))]
    headers = {data.decode().split("\r\n", 1)[0] for name, data in expected.items() if "/zooniverse/batch-" in name}
    assert headers and all(h.startswith("image_name_1,image_name_2,folder,") for h in headers)  # two, not three
    assert all("#capture_part" in h.split(",") for h in headers)
    got: dict[str, dict[str, list[str]]] = {}
    for r in subjects:
        files = [r[f"image_name_{i}"] for i in (1, 2) if r[f"image_name_{i}"]]
        assert int(r["#images"]) == len(files) <= 2
        got.setdefault(r["#capture_id"] or files[0], {})[r["#capture_part"]] = files
    assert len(subjects) == single["zooniverse_subjects"] == sum(-(-len(v) // 2) for v in want.values())
    for key, images in want.items():
        if len(images) <= 2:
            assert got[key] == {"": images}
        else:
            assert got[key] == {"1 of 2": images[:2], "2 of 2": images[2:]}  # rank order kept across the parts
    assert _fanned(settings, store, parts) == single
    again = _snapshot(store, settings.container, "")
    assert {name: again[name] for name in expected} == expected


def test_visits_longer_than_the_apps_max_frames_are_split_at_it(task: Any) -> None:  # noqa: F811
    """A request's ``zooniverse_visit_frames`` above TRAPBATCH_ZOONIVERSE_MAX_FRAMES is taken as the app's cap, and
    a split visit's subjects say which part they are in ``#capture_part``."""
    settings, store, parts, request = _many_in_four_parts(task)
    settings = replace(settings, zooniverse_max_frames=2)
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "zooniverse_visit_frames": 20})
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    subjects = [r for b in range(1, single["zooniverse_batches"] + 1) for r in csv.DictReader(io.StringIO(
        expected[layout.zooniverse_batch_blob(TASK, b)].decode()))]
    assert all(1 <= int(r["#images"]) <= 2 for r in subjects) and "image_name_3" not in subjects[0]
    split: dict[str, list[str]] = {}
    for r in subjects:
        if "#" in r["#capture_id"]:
            split.setdefault(r["#capture_id"].rsplit("#", 1)[0], []).append(r["#capture_part"])
    # each split visit's subjects are its parts 1 to n of the n the manifests hold (one left: no part)
    assert split and all(sorted(labels) == sorted(f"{i} of {len(labels)}" for i in range(1, len(labels) + 1))
                         or labels == [""] for labels in split.values())
    assert all(r["#capture_part"] == "" for r in subjects if "#" not in r["#capture_id"])
    assert _fanned(settings, store, parts) == single


def test_a_list_without_capture_columns_keeps_one_subject_per_image(task: Any) -> None:  # noqa: F811
    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=4, export_image_sizes=False)
    doc, rows, parts = _setup(settings, store, [40, 40], 1)
    enumeration = store.read_json(settings.container, layout.enumeration_blob(TASK))
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {**enumeration, "image_list": {"metadata_columns": ["Season", "site", "roll", "image", "note"]}})
    out = run_exports(TASK, settings, store)
    assert out["zooniverse_subjects"] == sum(1 for e in doc["images"] if not zooniverse.excluded(e))
    assert "zooniverse_capture_images" not in out
    first = store.read_bytes(settings.container, layout.zooniverse_batch_blob(TASK, 1)).decode()
    assert first.startswith("image_name_1,folder,attribution,license,#file,")


def _write_shards_with_views(settings: Settings, store: BlobStore, doc: dict[str, Any], shard_sizes: list[int]) -> None:
    """Each shard's manifest and results, then its view as the worker makes it with the list's rows
    (tests/integration/test_fanin.write_listed_views), and the merge's record that it merged those results (the
    results file ``_setup`` wrote holds these entries; ``activities.fanin.record_merged``)."""
    from activities.fanin import record_merged
    from gpu_batch.formats import jsonio
    from gpu_batch.manifest import ShardManifest
    from tests.integration.test_fanin import write_listed_views

    at = 0
    for index, size in enumerate(shard_sizes):
        sid = layout.shard_id(index)
        entries = doc["images"][at:at + size]
        at += size
        manifest = ShardManifest(task_id=TASK, shard_id=sid, attempt=1, source_container="elsewhere",
                                 images=tuple(e["file"] for e in entries), output_container=settings.container,
                                 output_blob=layout.attempt_results_blob(TASK, sid, 1), model="MDV5A")
        store.write_bytes(settings.container, layout.manifest_blob(TASK, sid, 1), jsonio.dumps(manifest.to_dict()))
        store.write_bytes(settings.container, layout.attempt_results_blob(TASK, sid, 1),
                          jsonio.dumps({"images": entries}))
    write_listed_views(settings, store, TASK, len(shard_sizes), settings.threshold_for("MDV5A", None), COLUMNS)
    for index in range(len(shard_sizes)):
        record_merged(store, settings.container, TASK, index,
                      store.list_etags(settings.container, layout.shard_prefix(TASK, layout.shard_id(index))))


@pytest.mark.parametrize("shard_sizes,shards_per_part", [([40, 40, 40, 17], 2), ([137], 1)])
def test_with_the_workers_views_no_entry_is_read_and_the_bytes_are_the_same(
        task: Any, monkeypatch: Any, shard_sizes: list[int], shards_per_part: int) -> None:  # noqa: F811
    from activities import exportparts
    from core import captures

    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=4, export_image_sizes=False)
    doc, rows, parts = _setup(settings, store, shard_sizes, shards_per_part)
    single = run_exports(TASK, settings, store)  # no views yet: every record from the entries
    expected = _clear(store, settings.container, "")
    _write_shards_with_views(settings, store, doc, shard_sizes)

    from_entries: list[str] = []
    original = captures.record
    monkeypatch.setattr(captures, "record", lambda entry, *a: from_entries.append(entry["file"]) or original(entry, *a))
    parsed: list[int] = []
    original_lines = exportparts._lines
    monkeypatch.setattr("activities.zooniverse_captures._lines", lambda fp: (parsed.append(1) or e
                                                                            for e in original_lines(fp)))
    assert run_exports(TASK, settings, store) == single
    assert _clear(store, settings.container, "") == expected and from_entries == []
    ranges = part_ranges(parts)
    runs = [run_captures_part(c.ExportsCapturesPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o,
                                                         length=n, shards=parts[p][1]), settings, store)
            for p, f, o, n in ranges]
    made = run_captures_combine(c.ExportsCapturesCombineInput(
        task_id=TASK, variant="", runs=[(r["part"], r["runs"]) for r in runs if r["runs"]]), settings, store)
    assert (made["subjects"], made["batches"]) == (single["zooniverse_subjects"], single["zooniverse_batches"])
    got = _snapshot(store, settings.container, "")
    for name in (n for n in expected if "/zooniverse/" in n):
        assert got[name] == expected[name], name
    assert from_entries == [] and parsed == []  # the parts read views, never the results' entries


def test_the_combine_uses_no_local_disk_and_its_buckets_do_not_change_the_batches(
        task: Any, monkeypatch: Any) -> None:  # noqa: F811
    """A Flex Consumption instance has 0.8 GB of temporary storage for all its activities (core.scratch); the
    combine's input grows with the task (~150 bytes an image), so it streams the runs from their blobs and stages
    the rows in bucket blobs: however many buckets, the same batches, and no work blob left."""
    from activities import zooniverse_captures
    from devhost.scratch_disk import ScratchDisk

    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=3, export_image_sizes=False)
    _, _, parts = _setup(settings, store, [40, 40, 40, 17], 1)
    ranges = part_ranges(parts)
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o, length=n),
                             settings, store) for p, f, o, n in ranges]
    run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=outs,
                                              **group_and_link(settings, store, TASK, "", outs)), settings, store)
    runs = [run_captures_part(c.ExportsCapturesPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o,
                                                         length=n), settings, store) for p, f, o, n in ranges]
    payload = c.ExportsCapturesCombineInput(task_id=TASK, variant="", runs=[(r["part"], r["runs"]) for r in runs])
    prefix = layout.exports_prefix(TASK) + "zooniverse/"
    written = []
    for bucket_bytes, read_bytes in ((10**9, 10**9), (700, 300)):  # one bucket, whole runs; many, in small reads
        monkeypatch.setattr(zooniverse_captures, "BUCKET_BYTES", bucket_bytes)
        monkeypatch.setattr(zooniverse_captures, "READ_BYTES", read_bytes)
        monkeypatch.setattr(zooniverse_captures, "MIN_READ_BYTES", min(read_bytes, 256 * 1024))
        with ScratchDisk() as disk:
            made = run_captures_combine(payload, settings, store)
        assert disk.created == 0 and disk.peak == 0
        written.append((made, {n: store.read_bytes(settings.container, n) for n in store.list_names(
            settings.container, prefix)}))
        assert not [n for n in store.list_names(settings.container, zooniverse_captures.work_prefix(TASK, ""))
                    if "/rows-" in n]  # the buckets went once written out
    assert written[0] == written[1]
    made, batches = written[0]
    assert made["batches"] == len(batches) > 5


def test_a_request_for_visits_makes_subjects_of_each_visits_photos_in_time_order_in_both_ways(
        task: Any) -> None:  # noqa: F811
    """``zooniverse_visit_frames`` (here 2) without an image list's captures: each visit (the Camtrap DP event, its
    id the subject's capture id) is subjects of at most two photos in capture-time order, a longer visit split as
    ``<id>#1``, ``<id>#2``...; a photo without a capture time is a subject alone; the fan-out writes the single
    activity's bytes."""
    settings, store, parts, request = _many_in_four_parts(task)
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "zooniverse_visit_frames": 2})
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    assert _fanned(settings, store, parts) == single
    got = _snapshot(store, settings.container, "")
    assert {name: got[name] for name in expected} == expected

    media = by_blob_name(csv.DictReader(io.StringIO(
        expected[layout.camtrap_dp_blob(TASK, "media.csv")].decode())))
    event_of = {o["mediaID"]: o["eventID"] for o in csv.DictReader(io.StringIO(
        expected[layout.camtrap_dp_blob(TASK, "observations.csv")].decode())) if o["observationLevel"] == "media"}
    subjects = [r for b in range(1, single["zooniverse_batches"] + 1) for r in csv.DictReader(io.StringIO(
        expected[layout.zooniverse_batch_blob(TASK, b)].decode()))]
    seen: list[str] = []
    split = 0
    for row in subjects:
        files = [v for k, v in row.items() if k.startswith("image_name_") and v]
        seen += files
        assert 1 <= len(files) <= 2 and row["#images"] == str(len(files))
        events = {event_of[media[f]["mediaID"]] for f in files}
        if not row["#capture_id"]:  # alone: no capture time
            assert len(files) == 1 and not events - {""}
            continue
        (event,) = events
        assert row["#capture_id"].split("#")[0] == event != ""
        split += "#" in row["#capture_id"]
        times = [media[f]["timestamp"] for f in files]
        assert times == sorted(times)
    eligible = [e["file"] for e in _many(97)["images"] if not zooniverse.excluded(e)]
    assert sorted(seen) == sorted(eligible) and single["zooniverse_subjects"] == len(subjects) < len(eligible)
    assert split > 0 and single["zooniverse_capture_images"] == len(eligible)


def test_an_image_lists_captures_win_over_a_request_for_visits(task: Any) -> None:  # noqa: F811
    settings, store, _ = task
    doc, rows, _ = _setup(settings, store, [40, 40, 40, 17], 2)
    request = store.read_json_or_none(settings.container, layout.request_blob(TASK)) or {}
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "zooniverse_visit_frames": 1})
    run_exports(TASK, settings, store)
    subjects = [r for name, data in _snapshot(store, settings.container, "").items()
                if "/zooniverse/batch-" in name for r in csv.DictReader(io.StringIO(data.decode()))]
    assert {r["#capture_id"] or r["image_name_1"]: [v for k, v in r.items() if k.startswith("image_name_") and v]
            for r in subjects} == _expected_subjects(doc, rows)


def test_an_image_lists_sequence_is_one_visit_among_the_subjects(task: Any) -> None:  # noqa: F811
    """An image list without captures but with a ``seq_id`` column: under ``zooniverse_visit_frames`` its sequence
    is a visit like those grouped by time (one subject, its photos in time order, keyed by its Camtrap DP event's
    key: the prefix of the event's observationIDs); COCO keeps the list's own sequence id."""
    from tests.integration.test_exports import with_list

    settings, store, _ = task
    with_list(settings, store)
    request = store.read_json_or_none(settings.container, layout.request_blob(TASK)) or {}
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "zooniverse_visit_frames": 3})
    out = run_exports(TASK, settings, store)
    files = _snapshot(store, settings.container, "")
    subjects = [r for name, data in files.items() if "/zooniverse/batch-" in name
                for r in csv.DictReader(io.StringIO(data.decode()))]
    images = {r["image_name_1"]: [v for k, v in r.items() if k.startswith("image_name_") and v] for r in subjects}
    assert images["siteA/cam1/a.jpg"] == ["siteA/cam1/a.jpg", "siteA/cam1/b.jpg"]  # the list's S1#J05#1#7
    (row,) = [r for r in subjects if r["image_name_1"] == "siteA/cam1/a.jpg"]
    events = [o for o in csv.DictReader(io.StringIO(files[layout.camtrap_dp_blob(TASK, "observations.csv")].decode()))
              if o["observationLevel"] == "event" and o["eventID"] == "S1#J05#1#7"]
    assert events and {o["observationID"].split("_")[0] for o in events} == {row["#capture_id"]}
    coco = {im["file_name"]: im for im in json.loads(files[out["coco"]])["images"]}
    assert coco["siteA/cam1/b.jpg"]["seq_id"] == "S1#J05#1#7" and "seq_num_frames" not in coco["siteA/cam1/b.jpg"]
    assert out["zooniverse_subjects"] == len(subjects) == len(images)


def test_a_photo_cut_short_is_in_no_capture_and_both_ways_count_it_alike(task: Any) -> None:  # noqa: F811
    """A JPEG cut short (the merge's damaged.csv; its shard's worker named it) is in no capture, as in no subject
    of one image (core.zooniverse: its grey part is not shown to volunteers), and the exports' output counts it in
    ``zooniverse_cut_short`` whichever way they ran: the fan-out's parts count it, so the single activity must too
    (their outputs are the same, as every other count)."""
    from gpu_batch.formats.entries import damaged_document

    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=4, export_image_sizes=False)
    doc, rows, parts = _setup(settings, store, [40, 40, 40, 17], 2)
    cut = next(e["file"] for e in doc["images"][:40] if not zooniverse.excluded(e) and rows[e["file"]]["capture"])
    sid = layout.shard_id(0)
    etag = store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 1), {"images": []})
    store.write_bytes(settings.container, layout.attempt_damaged_blob(TASK, sid, 1), damaged_document(etag, [cut]))
    store.write_bytes(settings.container, layout.damaged_blob(TASK), f"file\r\n{cut}\r\n".encode())

    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    batches = [n for n in expected if "/zooniverse/" in n]
    assert batches and not any(cut.encode() in expected[n] for n in batches)
    assert single.get("zooniverse_cut_short") == 1, single
    fanned = _fanned(settings, store, parts, with_shards=True)
    assert fanned == single
    again = _snapshot(store, settings.container, "")
    assert sorted(again) == sorted(expected) and all(again[n] == expected[n] for n in expected)


def test_a_split_visits_parts_say_how_many_subjects_it_has_in_the_manifests(task: Any) -> None:  # noqa: F811
    """A visit's photos left out of the manifests (flagged, cut short) are still among the frames the events step
    numbered; a split visit's ``#capture_part`` counts the subjects the manifests hold, so none says ``1 of 2`` of
    a visit whose second part is not there (its last photo cut short: a camera whose battery died mid-burst)."""
    settings, store, parts, request = _many_in_four_parts(task)
    settings = replace(settings, zooniverse_max_frames=2)
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "zooniverse_visit_frames": 2})
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    subjects = [r for b in range(1, single["zooniverse_batches"] + 1) for r in csv.DictReader(io.StringIO(
        expected[layout.zooniverse_batch_blob(TASK, b)].decode()))]
    found: dict[str, set[str]] = {}
    for r in subjects:
        if r["#capture_part"]:
            found.setdefault(r["#capture_id"].rsplit("#", 1)[0], set()).add(r["#capture_part"])
    assert found and not any(label.endswith(" of 1") for labels in found.values() for label in labels)
    for visit, labels in found.items():
        last = max(int(label.split(" of ")[0]) for label in labels)
        assert {label.split(" of ")[1] for label in labels} == {str(last)}, (visit, sorted(labels))
    assert _fanned(settings, store, parts) == single


def _giant_capture(images: int, width: int) -> Iterator[list[Any]]:
    """A captures file whose stuck camera clock made every photo of a camera one capture: ``images`` records of one
    key (no rank: by file name), ``width`` metadata values each."""
    for i in range(images):
        yield ["S1#J05#1#stuck", 2**62, f"S1/J05/J05_R1/IMAG{i:07d}.JPG", ((i * 7919) % 1000) / 1000, "animal",
               [f"v{i % 10}"] * width]


def test_a_giant_captures_combine_holds_no_more_than_a_subject_of_it(task: Any, monkeypatch: Any) -> None:  # noqa: F811
    """A captures file whose stuck clock makes every photo of a camera one capture can mean millions of photos in
    one capture, while an activity has ~256 MB (Flex Consumption: 2 GB an instance, eight activities). The combine
    splits it into subjects of TRAPBATCH_ZOONIVERSE_MAX_FRAMES while the merged records stream past, so its heap
    holds a subject, not the capture: with its own buffers (run reads, bucket blocks) set small, combining a
    capture of 200,000 images peaks far below what holding the capture whole took (its images' names and scores:
    measured 46 MB before, 3.5 MB since)."""
    import tracemalloc

    from activities import zooniverse_captures
    from activities.exports import prepare, read_results_head

    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=500, export_image_sizes=False)
    head, _ = read_results_head(store, settings.container, layout.results_blob(TASK))
    ctx = prepare(TASK, settings, store, "", None, head)
    images, frames = 200_000, ctx.manifest.max_frames
    records, runs = zooniverse_captures.write_runs(store, ctx, 0, _giant_capture(images, len(
        ctx.manifest.metadata_columns)))
    assert records == images
    for name, value in (("READ_BYTES", 256 * 1024), ("MIN_READ_BYTES", 256 * 1024), ("BUCKET_BYTES", 256 * 1024),
                        ("BUCKET_BLOCK_BYTES", 64 * 1024)):  # bounded by settings, not by the capture: small here
        monkeypatch.setattr(zooniverse_captures, name, value)
    tracemalloc.start()
    try:
        made = zooniverse_captures.combine(store, ctx, [zooniverse_captures._run_blob(TASK, "", 0, r)
                                                        for r in range(runs)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    parts = images // frames
    assert made == {"subjects": parts, "images": images, "batches": parts // 500, "widest": frames}
    assert peak < 12 * 1024 * 1024, f"the combine's heap peaked at {peak / 2**20:.1f} MB"
    rows = [r for b in range(1, made["batches"] + 1) for r in csv.DictReader(io.StringIO(store.read_bytes(
        settings.container, layout.zooniverse_batch_blob(TASK, b)).decode()))]
    assert sorted(r["#capture_part"] for r in rows) == sorted(f"{k} of {parts}" for k in range(1, parts + 1))
    first = next(r for r in rows if r["#capture_part"] == "1 of 10000")
    assert first["image_name_1"] == "S1/J05/J05_R1/IMAG0000000.JPG" and first["#images"] == str(frames)
    last = next(r for r in rows if r["#capture_part"] == f"{parts} of {parts}")
    assert last[f"image_name_{frames}"] == f"S1/J05/J05_R1/IMAG{images - 1:07d}.JPG"


def _whole_captures(monkeypatch: Any) -> None:
    """The combine as it was before it streamed: each capture held whole, then cut (the reference
    ``tests.unit.test_captures._whole_then_split``), pass 1 counting the subjects that made."""
    from core import captures
    from tests.unit.test_captures import _whole_then_split

    def tally(records: Any, max_frames: int) -> captures.Tally:
        out = captures.Tally(max_frames)
        for capture in _whole_then_split(list(records), max_frames):
            out.subjects += 1
            out.images += len(capture.files)
            out.widest = max(out.widest, len(capture.files))
            out.split_visits.see(capture.visit, capture.part)
        return out

    monkeypatch.setattr(captures, "tally", tally)
    monkeypatch.setattr(captures, "subjects", lambda records, max_frames, _long: _whole_then_split(list(records),
                                                                                                   max_frames))


@pytest.mark.parametrize("kind,max_frames", [("list", 1), ("list", 2), ("visits", 2), ("visits", 3)])
def test_the_streamed_split_writes_the_bytes_the_whole_captures_did_in_both_ways(
        task: Any, monkeypatch: Any, kind: str, max_frames: int) -> None:  # noqa: F811
    """The combine splits a long capture as its records stream past; the manifests keep the bytes of the whole
    captures cut after, in the single activity and the fan-out: a list's captures of 1, 2 and 3 images at a cap of
    1 (N, N+1, 2N+1) and 2, visits split at the cap, flagged, failed and cut-short photos left out."""
    from gpu_batch.formats.entries import damaged_document

    if kind == "list":
        settings, store, _ = task
        settings = replace(settings, zooniverse_batch_size=4, export_image_sizes=False)
        doc, rows, parts = _setup(settings, store, [40, 40, 40, 17], 2)
        sizes = {len(v) for v in _expected_subjects(doc, rows).values()}
        assert {1, 2, 3} <= sizes  # N, N+1 and 2N+1 at 1; 1, N and N+1 at 2
        cut = next(e["file"] for e in doc["images"][:40] if not zooniverse.excluded(e) and rows[e["file"]]["capture"])
    else:
        settings, store, parts, request = _many_in_four_parts(task)
        store.write_json(settings.container, layout.request_blob(TASK), {**request, "zooniverse_visit_frames": 20})
        cut = next(e["file"] for e in _many(97)["images"][:10] if not zooniverse.excluded(e) and e.get("datetime"))
    settings = replace(settings, zooniverse_max_frames=max_frames)
    sid = layout.shard_id(0)
    etag = store.write_json(settings.container, layout.attempt_results_blob(TASK, sid, 1), {"images": []})
    store.write_bytes(settings.container, layout.attempt_damaged_blob(TASK, sid, 1), damaged_document(etag, [cut]))
    store.write_bytes(settings.container, layout.damaged_blob(TASK), f"file\r\n{cut}\r\n".encode())

    def manifests(files: dict[str, bytes]) -> dict[str, bytes]:
        return {n: data for n, data in files.items() if "/zooniverse/" in n}

    single = run_exports(TASK, settings, store)
    streamed = manifests(_clear(store, settings.container, ""))
    assert _fanned(settings, store, parts, with_shards=True) == single
    assert manifests(_clear(store, settings.container, "")) == streamed
    with monkeypatch.context() as whole:
        _whole_captures(whole)
        assert run_exports(TASK, settings, store) == single
        assert manifests(_clear(store, settings.container, "")) == streamed
        assert _fanned(settings, store, parts, with_shards=True) == single
        assert manifests(_snapshot(store, settings.container, "")) == streamed
    made = [r for data in streamed.values() for r in csv.DictReader(io.StringIO(data.decode()))]
    assert single["zooniverse_cut_short"] == 1 and not any(cut in r.values() for r in made)
    assert {r["#capture_part"] for r in made} >= {"", "1 of 2", "2 of 2"}  # whole and split captures (or visits)
