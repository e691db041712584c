"""The exports fanned out (activities.exportparts over core.exportparts' ranges, the Zooniverse batches through
activities.zooniverseparts) write the same bytes as the single activity (activities.exports.run_exports), for
several splits of the results into merge parts, both variants, with and without an image list's metadata
(ListMetadata walked from each part's first shard), and for batches of 1 to 1000 of a larger results file."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from activities.exportparts import run_exports_combine, run_exports_part, run_exports_zooniverse, work_prefix
from activities.exportevents import run_exports_events, run_exports_link_part
from activities.exports import run_exports
from activities.zooniverseparts import run_zooniverse_clean, run_zooniverse_combine, run_zooniverse_part
from adapters.blobs import BlobStore
from adapters.compose import delete_names, delete_prefix
from core import contracts as c
from core import camtrap_events, fanin, mdformat, zooniverse
from core.exportparts import ZOONIVERSE_PIECES, eligible_before, part_ranges, zooniverse_groups
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats import camtrapdp
from orchestrations.exports import single_zooniverse_output
from tests.camtrap_media import blob_name, by_blob_name
from tests.integration.test_exports import LIST_COLUMNS, LIST_SHARDS, TASK, _results, task, with_list  # noqa: F401

SHARDS_OF_LIST = [3, 3]  # LIST_SHARDS' images per shard


def _write_fanin_results(store: BlobStore, container: str, variant: str, shard_sizes: list[int],
                         shards_per_part: int, doc: dict[str, Any] | None = None) -> list[list[int]]:
    """The results (``doc``, else test_exports' six entries) as the merge fan-in writes them; returns
    MergeOutput.parts."""
    doc = doc or _results()
    entries, parts, fragments = doc["images"], [], []
    starts = [sum(shard_sizes[:i]) for i in range(len(shard_sizes))]
    for first in range(0, len(shard_sizes), shards_per_part):
        count = min(shards_per_part, len(shard_sizes) - first)
        lo = starts[first]
        hi = lo + sum(shard_sizes[first:first + count])
        data = b"".join(fanin.entry_fragment(e) for e in entries[lo:hi])
        parts.append([first, count, len(data)])
        fragments.append(data)
    body = b"".join(fragments)
    results = fanin.results_head(doc["info"]) + body[1:] + fanin.RESULTS_TAIL
    assert list(mdformat.iter_images(__import__("io").BytesIO(results))) == entries
    store.write_bytes(container, layout.results_blob(TASK, variant), results)
    return parts


def _snapshot(store: BlobStore, container: str, variant: str) -> dict[str, bytes]:
    prefix = layout.exports_prefix(TASK, variant)
    client = store.service.get_container_client(container)
    return {n: store.read_bytes(container, n) for n in client.list_blob_names(name_starts_with=prefix)}


def group_and_link(settings: Settings, store: BlobStore, task_id: str, variant: str,
                   outs: list[c.ExportsPartOutput]) -> dict[str, Any]:
    """What orchestrations.exports runs between the parts and the combine: the events grouped once, the parts with
    photos grouped by time (or given stand-in times) linked; returns the combine's extra input (``events``,
    ``linked``, ``linked_images``, and ``linked_media`` when any)."""
    assert all(o.get("link") for o in outs)
    events = run_exports_events(c.ExportsEventsInput(task_id=task_id, variant=variant,
                                                     parts=[o["part"] for o in outs]), settings, store)
    linked = [run_exports_link_part(c.ExportsLinkPartInput(task_id=task_id, variant=variant, part=k), settings,
                                    store) for k in events["link"]]
    return {"events": events, **_linked(linked)}


def _linked(linked: list[c.ExportsLinkPartOutput]) -> dict[str, Any]:
    """The combine's input from the links' outputs, as orchestrations.exports makes it."""
    media = [[k["part"], k["media_bytes"]] for k in linked if "media_bytes" in k]
    return {"linked": [[k["part"], k["bytes"]] for k in linked],
            "linked_images": [[k["part"], k["images_bytes"]] for k in linked if "images_bytes" in k],
            **({"linked_media": media} if media else {})}


def relink(settings: Settings, store: BlobStore, task_id: str, variant: str, grouped: dict[str, Any],
           redo: list[int]) -> dict[str, Any]:
    """``grouped`` after parts ``redo`` ran again, as orchestrations.exports goes on: those whose media rows got
    stand-in times (``linked_media``) linked again."""
    again = {p: run_exports_link_part(c.ExportsLinkPartInput(task_id=task_id, variant=variant, part=p), settings,
                                      store) for p, _ in grouped.get("linked_media", []) if p in redo}
    RELINKED.extend(again)
    if not again:
        return grouped
    outputs: list[c.ExportsLinkPartOutput] = []
    images = dict(grouped["linked_images"])
    media = dict(grouped.get("linked_media", []))
    for part, size in grouped["linked"]:
        out: c.ExportsLinkPartOutput = {"part": part, "bytes": size}
        if part in images:
            out["images_bytes"] = images[part]
        if part in media:
            out["media_bytes"] = media[part]
        outputs.append(again.get(part, out))
    return {**grouped, **_linked(outputs)}


def _fanned(settings: Settings, store: BlobStore, variant: str, parts: list[list[int]],
            zooniverse_pieces: int | None = ZOONIVERSE_PIECES, with_shards: bool = False) -> c.ExportsOutput:
    """What orchestrations.exports runs, in order; ``zooniverse_pieces`` None: the single Zooniverse activity (a
    combine recorded before the Zooniverse fan-out), else the Zooniverse fan-out with groups of that many requests.
    ``with_shards``: each part is told its shards (``ExportsPartInput.shards``), as the orchestrator tells it."""
    ranges = part_ranges(parts)
    shards = {p: {"shards": parts[p][1]} if with_shards else {} for p, *_ in ranges}
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant=variant, part=p, first_shard=f, offset=o,
                                                length=n, **shards[p]), settings, store) for p, f, o, n in ranges]
    grouped = group_and_link(settings, store, TASK, variant, outs)
    LINKED_PARTS.append(len(grouped["linked"]))
    combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant=variant, parts=outs, **grouped),
                                   settings, store)
    if combined["conflict"]:  # parts that saw other first facts for a deployment: again from the task's
        redo = combined.get("redo")
        assert redo, combined
        outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant=variant, part=p, first_shard=f, offset=o,
                                                    length=n, given=True), settings, store) if p in redo else out
                for (p, f, o, n), out in zip(ranges, outs)]
        grouped = relink(settings, store, TASK, variant, grouped, redo)
        combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant=variant, parts=outs, **grouped),
                                       settings, store)
        REDONE.extend(redo)
    assert not combined["conflict"] and combined.get("zooniverse_parts")
    # run again, as after a lost completion (at-least-once): the same answer, not a BlobNotFound
    assert run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant=variant, parts=outs, **grouped), settings,
                               store) == combined
    output = combined["output"]
    if zooniverse_pieces is None:
        # a combine recorded before the fan-out was made by code that deleted its fragments itself
        delete_prefix(store, settings.container, work_prefix(TASK, variant))
        made = run_exports_zooniverse(c.ExportsZooniverseInput(
            task_id=TASK, variant=variant, eligible=output["zooniverse_subjects"]), settings, store)
        return single_zooniverse_output(output, made)
    total, count = output["zooniverse_subjects"], output["zooniverse_batches"]
    written = [run_zooniverse_part(c.ExportsZooniversePartInput(
        task_id=TASK, variant=variant, part=p, first_shard=f, offset=o, length=n, before=before, rows=out["eligible"],
        eligible=total, batches=count, **shards[p], **({"cut_short": True} if out.get("zooniverse_cut_short") else {})),
        settings, store)
        for (p, f, o, n), out, before in zip(ranges, outs, eligible_before([o["eligible"] for o in outs]))
        if out["eligible"]]
    assert sum(w["rows"] for w in written) == total
    with_rows = [w["part"] for w in written if w["rows"]]
    groups = zooniverse_groups(count, len(with_rows), zooniverse_pieces)
    assert sum(run_zooniverse_combine(c.ExportsZooniverseCombineInput(
        task_id=TASK, variant=variant, parts=with_rows, first=first, count=n), settings, store)
        for first, n in groups) == count
    run_zooniverse_clean(c.ExportsZooniverseCleanInput(task_id=TASK, variant=variant, batches=count), settings, store)
    return output


SPLITS = [([3, 3], 1), ([3, 3], 2), ([1] * 6, 1), ([1] * 6, 4), ([2, 2, 2], 1), ([2, 0, 4], 1)]
REDONE: list[int] = []  # the parts _fanned ran again from the task's first facts
RELINKED: list[int] = []  # the parts linked again after that, for their media rows' stand-in times
LINKED_PARTS: list[int] = []  # how many parts each _fanned linked to their events


@pytest.mark.parametrize("variant", ["", layout.REPEATS_REMOVED])
@pytest.mark.parametrize("listed,shard_sizes,shards_per_part",
                         [(False, sizes, per) for sizes, per in SPLITS]
                         # with a list, only the splits of its own shards (three images each) apply
                         + [(True, sizes, per) for sizes, per in SPLITS if sizes == SHARDS_OF_LIST])
def test_fanned_out_exports_are_the_single_activitys_bytes(task: Any, variant: str, listed: bool,
                                                            shard_sizes: list[int], shards_per_part: int) -> None:
    settings, store, _ = task
    if listed:
        with_list(settings, store)
    parts = _write_fanin_results(store, settings.container, variant, shard_sizes, shards_per_part)
    single = run_exports(TASK, settings, store, variant=variant)
    expected = _snapshot(store, settings.container, variant)
    for name in expected:
        store.delete(settings.container, name) if hasattr(store, "delete") else \
            store.service.get_blob_client(settings.container, name).delete_blob()
    stale = layout.zooniverse_batch_blob(TASK, single["zooniverse_batches"] + 1, variant)
    store.write_bytes(settings.container, stale, b"a batch an earlier, larger run wrote\r\n")
    # groups of at most 4 requests: one batch per Zooniverse combine
    fanned = _fanned(settings, store, variant, parts, zooniverse_pieces=4)
    assert fanned == single
    got = _snapshot(store, settings.container, variant)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name


def test_parts_that_saw_other_first_coordinates_or_cameras_run_again_and_give_the_single_bytes(
        task: Any) -> None:  # noqa: F811
    """Deployment siteA/cam2@J06 spans both shards of the list: its first image (c.png, first shard) gives
    coordinates and a camera, the second shard's first (d.jpg) others. The parts that start from d.jpg's run again
    from the task's first facts, and every file is the single activity's (d.jpg's values in its comments, as
    there)."""
    settings, store, _ = task
    metadata = [dict(LIST_SHARDS[0]), dict(LIST_SHARDS[1])]
    metadata[0]["siteA/cam2/c.png"] = {"site": "J06", "latitude": "-1.50", "longitude": "30.50",
                                       "camera_id": "CAM-1"}
    metadata[1]["siteA/cam2/d.jpg"] = {**metadata[1]["siteA/cam2/d.jpg"], "latitude": "-2.40",
                                       "longitude": "34.90", "camera_id": "CAM-2"}
    enumeration = store.read_json(settings.container, layout.enumeration_blob(TASK))
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {**enumeration, "shards": 2, "image_list": {"metadata_columns": [*LIST_COLUMNS, "camera_id"]}})
    for index, shard in enumerate(metadata):
        store.write_json(settings.container, layout.shard_list_blob(TASK, layout.shard_id(index)),
                         {"not_found": [], "metadata": shard})
    parts = _write_fanin_results(store, settings.container, "", SHARDS_OF_LIST, 1)  # a part per shard of the list
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    media = expected[layout.camtrap_dp_blob(TASK, "media.csv")].decode()
    assert "-2.40" in media and "CAM-2" in media  # the single pass keeps d.jpg's own values in its comments
    REDONE.clear()
    RELINKED.clear()
    assert _fanned(settings, store, "", parts, zooniverse_pieces=4) == single
    assert REDONE == [1]  # the conflict was met (the second part's first facts), and solved by running it again
    # e.jpg and broken.jpg, without a capture time, got their deployment's first (d.jpg's): linked again after that
    assert RELINKED == [1]
    got = _clear(store, settings.container, "")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name


def _clear(store: BlobStore, container: str, variant: str) -> dict[str, bytes]:
    """The exports' files as ``_snapshot`` reads them, then deleted (in blob batches: a Delete Blob each was ~400 of
    the module's requests): the next run must write them again."""
    expected = _snapshot(store, container, variant)
    delete_names(store, container, list(expected))
    return expected


@pytest.mark.parametrize("variant", ["", layout.REPEATS_REMOVED])
def test_a_combine_recorded_before_the_zooniverse_fan_out_still_gets_the_single_zooniverse_activity(
        task: Any, variant: str) -> None:
    settings, store, _ = task
    parts = _write_fanin_results(store, settings.container, variant, [2, 2, 2], 1)
    single = run_exports(TASK, settings, store, variant=variant)
    expected = _clear(store, settings.container, variant)
    assert _fanned(settings, store, variant, parts, zooniverse_pieces=None) == single
    assert _snapshot(store, settings.container, variant) == expected


def _many(count: int) -> dict[str, Any]:
    """``count`` entries over three sites: failures, entries the image list flags, detections of every kind."""
    entries: list[dict[str, Any]] = []
    for k in range(count):
        file = f"site{k % 3}/cam{k % 2}/img{k:04d}.jpg"
        if k % 7 == 3:
            entries.append(mdformat.failure_entry(file, mdformat.FAILURE_IMAGE_ACCESS, "undecodable"))
            continue
        dets = [{"category": str(1 + (k * j) % 3), "conf": round(((k * 37 + j * 11) % 100) / 100, 3),
                 "bbox": [0.1, 0.1, 0.2, 0.2]} for j in range(k % 4)]
        entry: dict[str, Any] = {"file": file, "detections": dets}
        if k % 17:  # capture times in bursts an hour apart, so each camera's events span the parts
            entry["datetime"] = f"2024:06:01 {k // 30:02d}:00:{k % 30 * 2:02d}"
        if k % 11 == 5:
            entry["image_no_upload"] = "1"
        elif k % 13 == 6:
            entry["invalid"] = "2"
        entries.append(entry)
    return mdformat.build_output(entries, {"detector": "MDV5A", "detection_completion_time": "2026-12-01T10:00:00"})


_SPLITS_97 = [([10] * 9 + [7], 1), ([10] * 9 + [7], 3), ([10, 0, 0, 30, 0, 57], 2), ([97], 1), ([1] * 97, 13)]


# Batches of one write a blob per subject (the slowest case against Azurite): on the first split and the most
# fragmented one only; batches of 4, 9 and 1,000 on every split.
@pytest.mark.parametrize("batch_size,shard_sizes,shards_per_part",
                         [(b, sizes, per) for b in ("4", "9", "1000") for sizes, per in _SPLITS_97]
                         + [("1", *_SPLITS_97[0]), ("1", *_SPLITS_97[-1])])
def test_fanned_out_zooniverse_batches_of_a_larger_results_are_the_single_passes_bytes(
        task: Any, batch_size: str, shard_sizes: list[int], shards_per_part: int) -> None:
    """97 entries (some failed, some flagged), shuffled into batches of 1 .. 1000, over several splits: the fan-out
    (parts with their eligible offsets, combines of a few batches each) writes every batch byte for byte."""
    settings, store, _ = task
    settings = replace(settings, zooniverse_batch_size=int(batch_size), export_image_sizes=False)
    doc = _many(97)
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {"container": "elsewhere", "prefix": "", "images": 97, "shards": len(shard_sizes)})
    parts = _write_fanin_results(store, settings.container, "", shard_sizes, shards_per_part, doc)
    single = run_exports(TASK, settings, store)
    assert single["zooniverse_subjects"] == sum(1 for e in doc["images"] if not zooniverse.excluded(e)) < 97
    assert single["zooniverse_batches"] == -(-single["zooniverse_subjects"] // int(batch_size))
    expected = _clear(store, settings.container, "")
    events = [line for line in expected[layout.camtrap_dp_blob(TASK, "observations.csv")].split(b"\r\n")
              if b",event," in line]
    # event rows (core.camtrap_events), which the parts must agree on
    assert single["event_observations"] == len(events) > 20
    assert single["events"] == len({e.split(b",")[3] for e in events})
    assert _fanned(settings, store, "", parts, zooniverse_pieces=9) == single
    got = _snapshot(store, settings.container, "")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name


def _many_in_four_parts(task: Any) -> tuple[Settings, BlobStore, list[list[int]], dict[str, Any]]:
    """``_many(97)``'s results in ten shards merged in four parts (the exports' settings without size reads), and
    the task's request as it stands."""
    settings, store, _ = task
    settings = replace(settings, export_image_sizes=False)
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {"container": "elsewhere", "prefix": "", "images": 97, "shards": 10})
    parts = _write_fanin_results(store, settings.container, "", [10] * 9 + [7], 3, _many(97))
    return settings, store, parts, store.read_json(settings.container, layout.request_blob(TASK))


def test_the_requests_event_interval_groups_the_events_in_both_ways(task: Any) -> None:
    """``event_interval_s`` in the task's request (here two hours: every camera's hourly bursts are one visit) is
    the exports' interval, in the single activity and the fan-out alike, and the package says it."""
    settings, store, parts, request = _many_in_four_parts(task)
    by_default = run_exports(TASK, settings, store)["events"]
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "event_interval_s": 7200})
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    observations = expected[layout.camtrap_dp_blob(TASK, "observations.csv")].decode()
    visits = {line.split(",")[3] for line in observations.split("\r\n") if ",event," in line}
    assert len(visits) == 6 and single["events"] < by_default  # one visit per camera (six cameras)
    package = expected[layout.camtrap_dp_blob(TASK, "datapackage.json")].decode()
    assert "at most 7200 s apart" in package and '"event"' in package
    # a row per camera in camera-visits.csv, at the request's interval and the exports' threshold
    table = list(csv.DictReader(io.StringIO(expected[layout.camera_visits_blob(TASK)].decode())))
    assert [(r["visits"], r["event_interval_s"], r["threshold"]) for r in table] == \
        [("1", "7200", f"{single['threshold']:g}")] * 6
    assert single["cameras"] == 6 and single["camera_visits"] == layout.camera_visits_blob(TASK)
    assert sum(int(r["images"]) for r in table) == sum(1 for k in range(97) if k % 7 != 3 and k % 17)
    # each media-level row of a timed photo names its camera's one visit; a photo without a capture time, none
    rows = list(csv.reader(io.StringIO(observations)))[1:]
    visit_of = {r[1]: r[3] for r in rows if r[6] == "event"}
    media_rows = list(csv.reader(io.StringIO(expected[layout.camtrap_dp_blob(TASK, "media.csv")].decode())))[1:]
    untimed = {m[0] for m in media_rows if "capture time unknown" in m[10]}
    assert untimed and len(visit_of) == 6
    for r in rows:
        if r[6] == "media":
            assert r[3] == ("" if r[2] in untimed else visit_of[r[1]]), r
    # COCO: each timed photo's sequence is its camera's visit (the same id), its frames numbered from 0 in time order
    media_of = {blob_name(m[4]): m for m in media_rows}
    frames: dict[str, list[tuple[int, str, int]]] = {}
    for image in json.loads(expected[layout.coco_blob(TASK)])["images"]:
        m = media_of[image["file_name"]]
        if m[0] in untimed or "failure" in image:
            assert not {"seq_id", "seq_num_frames", "frame_num"} & set(image), image
            continue
        assert image["seq_id"] == visit_of[m[1]]
        frames.setdefault(m[1], []).append((image["frame_num"], m[3], image["seq_num_frames"]))
    assert len(frames) == 6
    for seen in frames.values():
        seen.sort()
        assert [f for f, _, _ in seen] == list(range(len(seen))) and {n for _, _, n in seen} == {len(seen)}
        assert [t for _, t, _ in seen] == sorted(t for _, t, _ in seen)
    assert _fanned(settings, store, "", parts, zooniverse_pieces=9) == single and LINKED_PARTS[-1] == 4
    got = _snapshot(store, settings.container, "")
    assert {name: got[name] for name in expected} == expected


def test_a_combine_of_parts_recorded_before_the_events_step_groups_them_itself_without_links(task: Any) -> None:
    """An orchestration whose parts ran before this release calls the combine with no grouped events: it groups them
    as it did (the same event rows and visits), and the media-level rows keep no event id (nor do photos without a
    capture time get their deployment's first: the detection time stays theirs, as it was)."""
    settings, store, parts, _ = _many_in_four_parts(task)
    _fanned(settings, store, "", parts, zooniverse_pieces=9)
    linked = _snapshot(store, settings.container, "")
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o,
                                                length=n), settings, store) for p, f, o, n in part_ranges(parts)]
    combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=outs), settings, store)
    got = _snapshot(store, settings.container, "")
    name = layout.camtrap_dp_blob(TASK, "observations.csv")
    before = list(csv.reader(io.StringIO(got[name].decode())))
    after = list(csv.reader(io.StringIO(linked[name].decode())))
    stood_in = {m[0] for m in csv.reader(io.StringIO(linked[layout.camtrap_dp_blob(TASK, "media.csv")].decode()))
                if m[10].startswith(camtrapdp.FIRST_CAPTURE_STANDS_IN)}
    assert stood_in
    # only the event ids differ, and the times of the photos without a capture time
    assert [r[:3] + r[6:] for r in before] == [r[:3] + r[6:] for r in after]
    assert [r[4:6] for r in before if r[2] not in stood_in] == [r[4:6] for r in after if r[2] not in stood_in]
    assert all(not r[3] for r in before[1:] if r[6] == "media") and any(r[3] for r in after[1:] if r[6] == "media")
    assert got[layout.camera_visits_blob(TASK)] == linked[layout.camera_visits_blob(TASK)]
    assert combined["output"]["events"] > 0
    coco, numbered = json.loads(got[layout.coco_blob(TASK)]), json.loads(linked[layout.coco_blob(TASK)])
    assert not any("seq_id" in image for image in coco["images"]) and any("seq_id" in im for im in numbered["images"])
    for image in numbered["images"]:  # only the sequences differ
        for name in ("seq_id", "seq_num_frames", "frame_num"):
            image.pop(name, None)
    assert coco == numbered


def test_events_grouped_before_the_frames_were_numbered_leave_coco_as_it_was(task: Any) -> None:
    """Parts whose event records were written before they named their photos (version 2), or an events step
    recorded before it numbered the frames (no frames share for the link), give COCO without sequences and the rest
    as linked; the link's output then says nothing of images and the combine takes the parts' own."""
    settings, store, parts, _ = _many_in_four_parts(task)
    _fanned(settings, store, "", parts, zooniverse_pieces=9)
    numbered = _snapshot(store, settings.container, "")
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o,
                                                length=n), settings, store) for p, f, o, n in part_ranges(parts)]
    for out in outs[:2]:  # two parts as an earlier release wrote their records
        name = f"{work_prefix(TASK, '')}{out['part']:05d}.events"
        records = camtrap_events.EventRecords.from_bytes(store.read_bytes(settings.container, name))
        records.media = np.zeros(0, np.uint64)
        store.write_bytes(settings.container, name, records.to_bytes().replace(b"events-3", b"events-2", 1))
    grouped = group_and_link(settings, store, TASK, "", outs)
    assert sorted(p for p, _ in grouped["linked_images"]) == sorted(o["part"] for o in outs[2:]
                                                                    if o["part"] in grouped["events"]["link"])
    run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=outs, **grouped), settings, store)
    got = _snapshot(store, settings.container, "")
    old_files = set()
    for out in outs[:2]:
        old_files |= {json.loads(line.lstrip(","))["file_name"] for line in store.read_bytes(
            settings.container, f"{work_prefix(TASK, '')}{out['part']:05d}.images").decode().splitlines()}
    coco, expected = json.loads(got[layout.coco_blob(TASK)]), json.loads(numbered[layout.coco_blob(TASK)])
    assert old_files and len(coco["images"]) == len(expected["images"])
    for image, was in zip(coco["images"], expected["images"]):
        if image["file_name"] in old_files:
            assert "seq_id" not in image
            for name in ("seq_id", "seq_num_frames", "frame_num"):
                was.pop(name, None)
        assert image == was  # the other parts' photos numbered as in one pass
    assert got[layout.camtrap_dp_blob(TASK, "observations.csv")] == numbered[
        layout.camtrap_dp_blob(TASK, "observations.csv")]


def package_spans(files: dict[str, bytes], tmp_path: Path) -> dict[str, dict[str, str]]:
    """The Camtrap DP package among ``files`` (an exports snapshot), checked: valid for frictionless, every media
    timestamp and every observation's eventStart..eventEnd within its deployment's deploymentStart..deploymentEnd
    (a media-level one's at its photo's timestamp), and the package's temporal covering every deployment. Returns
    the media rows by the blob name their filePath (the image's URL) names."""
    from datetime import date, datetime

    from tests.unit.test_camtrapdp import validate

    folder = tmp_path / "package"
    folder.mkdir(exist_ok=True)
    tables: dict[str, list[dict[str, str]]] = {}
    for name in layout.CAMTRAP_DP_FILES:
        (folder / name).write_bytes(files[layout.camtrap_dp_blob(TASK, name)])
        if name.endswith(".csv"):
            tables[name] = list(csv.DictReader(io.StringIO(files[layout.camtrap_dp_blob(TASK, name)].decode())))
    report = validate(folder)
    assert report.valid, report.flatten(["type", "note"])
    at = datetime.fromisoformat
    spans = {d["deploymentID"]: (at(d["deploymentStart"]), at(d["deploymentEnd"]))
             for d in tables["deployments.csv"]}
    media = {m["mediaID"]: m for m in tables["media.csv"]}
    for m in media.values():
        start, end = spans[m["deploymentID"]]
        assert start <= at(m["timestamp"]) <= end, (m, start, end)
    for o in tables["observations.csv"]:
        start, end = spans[o["deploymentID"]]
        assert start <= at(o["eventStart"]) <= at(o["eventEnd"]) <= end, (o, start, end)
        if o["observationLevel"] == "media":
            assert o["eventStart"] == o["eventEnd"] == media[o["mediaID"]]["timestamp"], o
    # a photo without a capture time is in no event as R camtrapdp links media (deploymentID, and eventStart <=
    # timestamp <= eventEnd: inbo/camtrapdp R/read_camtrapdp.R)
    visits = [(o["deploymentID"], at(o["eventStart"]), at(o["eventEnd"])) for o in tables["observations.csv"]
              if o["observationLevel"] == "event"]
    for m in media.values():
        if m["mediaComments"].startswith("capture time unknown"):
            assert not [v for v in visits if v[0] == m["deploymentID"] and v[1] <= at(m["timestamp"]) <= v[2]], m
    temporal = json.loads(files[layout.camtrap_dp_blob(TASK, "datapackage.json")])["temporal"]
    first, last = date.fromisoformat(temporal["start"]), date.fromisoformat(temporal["end"])
    for start, end in spans.values():  # each deployment's dates, as written (its own offset)
        assert first <= start.date() and end.date() <= last, (temporal, start, end)
    return dict(by_blob_name(media.values()))


def test_a_photo_without_capture_time_is_within_its_deployment_in_both_ways(task: Any, tmp_path: Path) -> None:
    """A camera with one photo with an EXIF time and one without, the latter first and in another merge part, and a
    camera with no capture time at all: the photo without one is given its deployment's first capture time, not
    the detection time years later (so no photo lies outside its deployment, whose span stays its capture
    times'), its observation the same, and the package's temporal covers every deployment, the camera without
    capture times included; the fan-out writes the single activity's bytes."""
    settings, store, _ = task
    settings = replace(settings, export_image_sizes=False)
    detection = {"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}
    doc = mdformat.build_output([
        {"file": "siteA/cam1/a.jpg", "detections": [detection]},  # no capture time, alone in the first part
        {"file": "siteA/cam1/b.jpg", "datetime": "2024:05:01 06:30:00", "detections": [detection]},
        {"file": "siteA/cam2/c.jpg", "detections": []},  # a camera without any capture time
    ], {"detector": "MDV5A", "detection_completion_time": "2026-12-01T10:04:05"})
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {"container": "elsewhere", "prefix": "", "images": 3, "shards": 2})
    request = store.read_json(settings.container, layout.request_blob(TASK))
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "utc_offset": "+02:00"})
    parts = _write_fanin_results(store, settings.container, "", [1, 2], 1, doc)
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    media = package_spans(expected, tmp_path)
    a, b, untimed = (media[name] for name in ("siteA/cam1/a.jpg", "siteA/cam1/b.jpg", "siteA/cam2/c.jpg"))
    assert b["timestamp"] == "2024-05-01T06:30:00+02:00"  # the deployment's first capture time
    assert a["timestamp"] == "2024-05-01T06:29:59+02:00"  # a second before it, its deploymentStart: in no event
    assert a["mediaComments"] == camtrapdp.FIRST_CAPTURE_STANDS_IN
    assert (untimed["timestamp"], untimed["mediaComments"]) == ("2026-12-01T10:04:05+00:00", camtrapdp.NO_CAPTURE_TIME)
    deployments = {d["deploymentID"]: d for d in csv.DictReader(io.StringIO(
        expected[layout.camtrap_dp_blob(TASK, "deployments.csv")].decode()))}
    assert (deployments["siteA/cam1"]["deploymentEnd"], deployments["siteA/cam1"]["timestampIssues"]) == (
        "2024-05-01T06:30:00+02:00", "true")
    assert camtrapdp.FIRST_CAPTURE_FOR_SOME in deployments["siteA/cam1"]["deploymentComments"]
    assert json.loads(expected[layout.camtrap_dp_blob(TASK, "datapackage.json")])["temporal"] == {
        "start": "2024-05-01", "end": "2026-12-01"}
    assert _fanned(settings, store, "", parts, zooniverse_pieces=9) == single
    got = _snapshot(store, settings.container, "")
    assert {name: got[name] for name in expected} == expected


def test_clock_corrections_shift_the_camtrap_dp_times_in_both_ways(task: Any) -> None:
    """A task whose request corrects a camera's clock formats its Camtrap DP lines from the entries (the workers'
    views hold the clocks as read) with the corrected times, and the fan-out writes the single activity's bytes."""
    settings, store, parts, request = _many_in_four_parts(task)
    store.write_json(settings.container, layout.request_blob(TASK),
                     {**request, "clock_corrections": {"site0": 86400, "site1/cam1": -3600,
                                                       "Site2": 5, "nowhere": 7}})
    single = run_exports(TASK, settings, store)
    # corrections that match no camera folder corrected nothing: said in the output (the task's status), both ways
    assert single["clock_corrections_unmatched"] == ["Site2 (did you mean 'site2'?)", "nowhere"]
    expected = _clear(store, settings.container, "")
    media = expected[layout.camtrap_dp_blob(TASK, "media.csv")].decode()
    rows = {blob_name(line.split(",")[4]): line.split(",") for line in media.split("\r\n")[1:] if line}
    shifted = {f: r[3] for f, r in rows.items() if "corrected by" in r[10]}
    assert shifted and all(f.startswith(("site0/", "site1/cam1/")) for f in shifted)
    assert rows["site0/cam0/img0006.jpg"][3] == "2024-06-02T00:00:12+00:00"  # a day later
    assert rows["site1/cam1/img0001.jpg"][3] == "2024-05-31T23:00:02+00:00"  # an hour earlier
    assert rows["site2/cam0/img0002.jpg"][3] == "2024-06-01T00:00:04+00:00"  # as the camera said
    table = {r["deploymentID"]: r for r in csv.DictReader(io.StringIO(
        expected[layout.camera_visits_blob(TASK)].decode()))}  # the cameras' visits in corrected times too
    assert table["site0/cam0"]["first_capture"].startswith("2024-06-02T")
    assert table["site2/cam0"]["first_capture"].startswith("2024-06-01T")
    assert single["events"] > 0
    assert _fanned(settings, store, "", parts, zooniverse_pieces=9) == single
    got = _snapshot(store, settings.container, "")
    assert {name: got[name] for name in expected} == expected


def test_a_parts_deployment_facts_stay_out_of_the_orchestration_history(task: Any) -> None:
    """A part's output goes into the task orchestrator's history twice (its result, the combine's input), read on
    every later replay; its deployment facts (a row per camera folder: 10-19 MB at ten million images in 100-image
    folders) now go to a fragment, the output keeps its size. A part recorded before (facts in its output, no
    fragment) still combines to the same bytes."""
    from activities.exportparts import DEPLOYMENTS, _fragment

    settings, store, parts, _ = _many_in_four_parts(task)
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o,
                                                length=n), settings, store) for p, f, o, n in part_ranges(parts)]
    assert all("deployments" not in o and o["bytes"][DEPLOYMENTS] > 0 for o in outs)
    grouped = group_and_link(settings, store, TASK, "", outs)
    combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=outs, **grouped),
                                   settings, store)
    assert not combined["conflict"] and combined["output"]["deployments"] > 1
    now = _snapshot(store, settings.container, "")
    recorded = []
    for o in outs:  # as a part of the release before wrote it: the facts inline, no fragment
        name = _fragment(TASK, "", o["part"], DEPLOYMENTS)
        facts = json.loads(store.read_bytes(settings.container, name))
        store.service.get_blob_client(settings.container, name).delete_blob()
        recorded.append({**o, "bytes": {k: v for k, v in o["bytes"].items() if k != DEPLOYMENTS},
                         "deployments": facts})
    again = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=recorded, **grouped),
                                settings, store)
    assert again == combined
    assert _snapshot(store, settings.container, "") == {n: b for n, b in now.items() if not n.endswith(DEPLOYMENTS)}


def _camera_days(count: int) -> dict[str, Any]:
    """``count`` photos of three cameras kept as ``2024/<camera>/<day>/`` folders over three days (one failed, a
    few without a capture time), bursts a few seconds apart."""
    entries: list[dict[str, Any]] = []
    for k in range(count):
        camera, day = k % 3, 1 + (k // 3) % 3
        file = f"2024/cam-{camera}/2024-06-0{day}/IMG_{k:04d}.JPG"
        if k == 7:
            entries.append(mdformat.failure_entry(file, mdformat.FAILURE_IMAGE_ACCESS, "undecodable"))
            continue
        entry: dict[str, Any] = {"file": file, "detections": [{"category": "1", "conf": 0.9,
                                                                 "bbox": [0.1, 0.1, 0.2, 0.2]}] if k % 4 else []}
        if k % 13 != 5:
            entry["datetime"] = f"2024:06:0{day} {6 + camera:02d}:{k // 9 % 60:02d}:{k % 9 * 2:02d}"
        entries.append(entry)
    return mdformat.build_output(entries, {"detector": "MDV5A", "detection_completion_time": "2026-12-01T10:00:00"})


def _camera_days_task(task: Any) -> tuple[Settings, BlobStore, dict[str, Any], list[Any], dict[str, Any]]:
    """``_camera_days(60)`` merged in six parts below the prefix ``2024/``: settings, store, the results, the parts
    and the stored request (the tests write it again with their fields)."""
    settings, store, _ = task
    settings = replace(settings, export_image_sizes=False)
    doc = _camera_days(60)
    store.write_json(settings.container, layout.enumeration_blob(TASK),
                     {"container": "elsewhere", "prefix": "2024/", "images": 60, "shards": 6})
    parts = _write_fanin_results(store, settings.container, "", [10] * 6, 2, doc)
    return settings, store, doc, parts, store.read_json(settings.container, layout.request_blob(TASK))


def test_a_camera_depth_makes_camera_day_folders_one_deployment_per_camera_in_both_ways(task: Any) -> None:
    """``camera_depth`` 1 below the prefix ``2024/``: each camera's day folders are one camera, in every export that
    groups by camera (Camtrap DP deployments, media and events; COCO's location and sequences; camera-visits.csv and
    camera-days.csv), each deployment spanning its camera's first to last capture time, and the fan-out writes the
    single activity's bytes."""
    settings, store, doc, parts, request = _camera_days_task(task)
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "prefix": "2024/"})
    assert run_exports(TASK, settings, store)["deployments"] == 9  # without it: a camera a day (MegaDetector's rule)
    _clear(store, settings.container, "")
    store.write_json(settings.container, layout.request_blob(TASK), {**request, "prefix": "2024/", "camera_depth": 1})
    single = run_exports(TASK, settings, store)
    assert single["deployments"] == 3 and single["cameras"] == 3 and single["events"] > 3
    expected = _clear(store, settings.container, "")
    cameras = ["2024/cam-0", "2024/cam-1", "2024/cam-2"]
    deployments = list(csv.DictReader(io.StringIO(expected[layout.camtrap_dp_blob(TASK, "deployments.csv")].decode())))
    timed = [e for e in doc["images"] if e.get("datetime")]
    for camera, row in zip(cameras, deployments, strict=True):
        times = sorted(e["datetime"] for e in timed if e["file"].startswith(camera + "/"))
        start = times[0].replace(":", "-", 2).replace(" ", "T") + "+00:00"
        end = times[-1].replace(":", "-", 2).replace(" ", "T") + "+00:00"
        # each camera has photos without a capture time (or failed): they stand in a second before its first
        start = camtrapdp.stand_in_time(start)
        assert (row["deploymentID"], row["deploymentStart"], row["deploymentEnd"]) == (camera, start, end)
        assert start.startswith("2024-06-01") and end.startswith("2024-06-03")  # three days, not one
    media = list(csv.reader(io.StringIO(expected[layout.camtrap_dp_blob(TASK, "media.csv")].decode())))[1:]
    assert {m[1] for m in media} == set(cameras) and len(media) == 60
    observations = expected[layout.camtrap_dp_blob(TASK, "observations.csv")].decode()
    assert {r[1] for r in csv.reader(io.StringIO(observations)) if r[6] == "event"} == set(cameras)
    coco_images = json.loads(expected[layout.coco_blob(TASK)])["images"]
    assert {im["location"] for im in coco_images} == set(cameras)
    sequences: dict[str, set[str]] = {}
    for im in coco_images:
        if "seq_id" in im:
            sequences.setdefault(im["seq_id"], set()).add(im["location"])
    assert len(sequences) == single["events"] and all(len(at) == 1 for at in sequences.values())
    visits = list(csv.DictReader(io.StringIO(expected[layout.camera_visits_blob(TASK)].decode())))
    assert [r["deploymentID"] for r in visits] == cameras and all(float(r["days"]) > 1.9 for r in visits)
    days = list(csv.DictReader(io.StringIO(expected[layout.camera_days_blob(TASK)].decode())))
    assert [(r["deploymentID"], r["date"]) for r in days] == [
        (camera, f"2024-06-0{d}") for camera in cameras for d in (1, 2, 3)]
    assert _fanned(settings, store, "", parts, zooniverse_pieces=9) == single
    got = _snapshot(store, settings.container, "")
    assert {name: got[name] for name in expected} == expected


def test_with_a_camera_depth_a_day_folder_that_corrected_times_is_not_named_as_matching_nothing(task: Any) -> None:
    """A clock correction for a day folder below a ``camera_depth`` camera corrects that day's photos, but is no
    deployment's folder: the status named it among the corrections that matched nothing. Only the misspelt one is
    named, by the single activity and by the fan-out (whose combine sees no photo: the parts say what matched)."""
    settings, store, doc, parts, request = _camera_days_task(task)
    store.write_json(settings.container, layout.request_blob(TASK), {
        **request, "prefix": "2024/", "camera_depth": 1, "clock_corrections": {
            "2024/cam-0/2024-06-02": 3600, "2024/cam-1": 60, "2024/cam-2/2024-06-0x": 60}})
    single = run_exports(TASK, settings, store)
    assert single["clock_corrections_unmatched"] == ["2024/cam-2/2024-06-0x"], single
    media = list(csv.reader(io.StringIO(_clear(store, settings.container, "")[
        layout.camtrap_dp_blob(TASK, "media.csv")].decode())))
    exif = {e["file"]: e["datetime"] for e in doc["images"] if e.get("datetime")}
    named = [(m[3], blob_name(m[4])) for m in media[1:]]
    shifted = [(ts, exif[n]) for ts, n in named if n.startswith("2024/cam-0/2024-06-02/") and n in exif]
    assert shifted and all(int(ts[11:13]) == int(taken[11:13]) + 1 for ts, taken in shifted)  # an hour later
    fanned = _fanned(settings, store, "", parts, zooniverse_pieces=9)
    assert fanned["clock_corrections_unmatched"] == ["2024/cam-2/2024-06-0x"], fanned


def test_a_photo_cut_short_is_out_of_zooniverse_corrupt_in_coco_and_noted_in_camtrap_dp_in_both_ways(
        task: Any) -> None:
    """A JPEG cut short (the merge's damaged.csv; the shard's worker named it: ``layout.attempt_damaged_blob``) is
    detected as far as it goes: volunteers are not shown its grey part (left out of the Zooniverse subjects, and the
    exports' output says how many), COCO flags it ``corrupt`` (the format's flag for an image that failed to load,
    e.g. in PIL) and its Camtrap DP media row says so in ``mediaComments``. The fan-out and the single activity
    agree byte for byte."""
    import csv

    from gpu_batch.formats.camtrapdp import CUT_SHORT_COMMENT, media_id
    from gpu_batch.formats.entries import damaged_document

    settings, store, _ = task
    cut = "siteA/cam1/b.jpg"  # shard 0's second photo, with an animal box
    store.write_json(settings.container, layout.enumeration_blob(TASK), {
        **store.read_json(settings.container, layout.enumeration_blob(TASK)), "shards": 2})
    parts = _write_fanin_results(store, settings.container, "", [3, 3], 1)
    doc = _results()
    etag = store.write_json(settings.container, layout.attempt_results_blob(TASK, "s00000", 1),
                            {**doc, "images": doc["images"][:3], "info": {**doc["info"], "trapbatch": {"damaged": [cut]}}})
    store.write_bytes(settings.container, layout.attempt_damaged_blob(TASK, "s00000", 1), damaged_document(etag, [cut]))
    store.write_json(settings.container, layout.attempt_results_blob(TASK, "s00001", 1),
                     {**doc, "images": doc["images"][3:]})
    store.write_bytes(settings.container, layout.damaged_blob(TASK), f"file\r\n{cut}\r\n".encode())
    single = run_exports(TASK, settings, store)
    expected = _snapshot(store, settings.container, "")
    for name in expected:
        store.service.get_blob_client(settings.container, name).delete_blob()
    fanned = _fanned(settings, store, "", parts, zooniverse_pieces=4, with_shards=True)
    assert fanned == single
    assert (single["zooniverse_subjects"], single["zooniverse_cut_short"]) == (4, 1)  # a, c, d, e: b cut short
    got = _snapshot(store, settings.container, "")
    assert sorted(got) == sorted(expected) and all(got[n] == expected[n] for n in expected)
    batches = [n for n in got if "/zooniverse/" in n]
    assert batches and not any(cut.encode() in got[n] for n in batches)
    coco = json.loads(got[layout.coco_blob(TASK)])
    flagged = {im["file_name"]: im.get("corrupt") for im in coco["images"]}
    assert flagged == {"siteA/cam1/a.jpg": None, cut: True, "siteA/cam2/c.png": None, "siteA/cam2/d.jpg": None,
                       "siteA/cam2/e.jpg": None, "siteA/cam2/broken.jpg": True}  # undecodable too
    assert [a["image_id"] for a in coco["annotations"]].count(cut) == 1  # its box stays
    media = {r["mediaID"]: r for r in csv.DictReader(io.StringIO(
        got[layout.camtrap_dp_blob(TASK, "media.csv")].decode()))}
    assert media[media_id(cut)]["mediaComments"].endswith("; " + CUT_SHORT_COMMENT)  # after its other note
    assert sum(CUT_SHORT_COMMENT in r["mediaComments"] for r in media.values()) == 1


def test_a_fan_out_under_way_runs_its_parts_written_with_blob_names_again(task: Any, monkeypatch: Any) -> None:
    """An app of this release deployed while an exports fan-out is under way: the parts that ran before wrote media
    filePaths as blob names (their outputs, in the orchestration's history, have no ``media_base``), and a package
    must not mix them with URLs. The combine names those parts to run again, as for a deployment's conflicting
    first facts, and the package is then the single activity's, every filePath a URL."""
    import activities.exports as exports

    settings, store, parts, _ = _many_in_four_parts(task)
    run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    media = expected[layout.camtrap_dp_blob(TASK, "media.csv")].decode()
    assert all(blob_name(m["filePath"]) and m["filePath"].startswith(store.endpoint + "/elsewhere/")
               for m in csv.DictReader(io.StringIO(media)))
    ranges = part_ranges(parts)
    outs: list[c.ExportsPartOutput] = []
    for p, f, o, n in ranges:
        with monkeypatch.context() as before:
            if p in (0, 2):  # the code before: blob names, and no media_base in the part's output
                before.setattr(exports, "media_base", lambda *_: "")
            out = run_exports_part(c.ExportsPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o,
                                                      length=n), settings, store)
        if p in (0, 2):
            assert out.pop("media_base") == ""
        outs.append(out)
    grouped = group_and_link(settings, store, TASK, "", outs)
    combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=outs, **grouped),
                                   settings, store)
    assert combined == {"conflict": True, "redo": [0, 2]}
    outs = [run_exports_part(c.ExportsPartInput(task_id=TASK, variant="", part=p, first_shard=f, offset=o, length=n,
                                                given=True), settings, store) if p in (0, 2) else out
            for (p, f, o, n), out in zip(ranges, outs)]
    grouped = relink(settings, store, TASK, "", grouped, [0, 2])
    combined = run_exports_combine(c.ExportsCombineInput(task_id=TASK, variant="", parts=outs, **grouped),
                                   settings, store)
    assert not combined["conflict"]
    got = _snapshot(store, settings.container, "")
    for name in ("media.csv", "observations.csv", "deployments.csv", "datapackage.json"):
        assert got[layout.camtrap_dp_blob(TASK, name)] == expected[layout.camtrap_dp_blob(TASK, name)], name


@pytest.mark.parametrize("shards_per_part", [1, 2])
def test_a_photo_that_joined_a_lists_sequence_is_of_it_in_coco_and_camtrap_dp_in_both_ways(
        task: Any, shards_per_part: int) -> None:
    """The image list gives a.jpg the sequence S1#J05#1#7 and b.jpg, taken at the same second, none: b.jpg lies
    within S1's span (its first and last photo's time, both a.jpg's) and is of that visit. Its Camtrap DP
    media-level rows name S1's eventID, and its COCO image carries that visit's numbers under the list's
    ``seq_id``, the one a.jpg carries, not the event's key (which no other image has); the single activity and the
    fan-out write the same bytes."""
    import tests.integration.test_exports as exports_tests

    settings, store, _ = task
    sequence = "S1#J05#1#7"
    shards = [dict(LIST_SHARDS[0]), dict(LIST_SHARDS[1])]
    shards[0]["siteA/cam1/b.jpg"] = {**shards[0]["siteA/cam1/b.jpg"], "datetime": "2024-05-01 06:30:00",
                                     "seq_id": "", "frame": ""}
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(exports_tests, "LIST_SHARDS", shards)
        with_list(settings, store)
    parts = _write_fanin_results(store, settings.container, "", SHARDS_OF_LIST, shards_per_part)
    single = run_exports(TASK, settings, store)
    expected = _clear(store, settings.container, "")
    images = {im["file_name"]: im for im in json.loads(expected[layout.coco_blob(TASK)])["images"]}
    a, b = images["siteA/cam1/a.jpg"], images["siteA/cam1/b.jpg"]
    assert (a["seq_id"], a["frame_num"]) == (sequence, 1)  # the list's
    assert (b["seq_id"], b["seq_num_frames"], b["frame_num"]) == (sequence, 2, 0)  # the visit's, at one time first
    rows = list(csv.reader(io.StringIO(expected[layout.camtrap_dp_blob(TASK, "observations.csv")].decode())))
    named = {r[2]: r[3] for r in rows[1:] if r[6] == "media"}
    media = {blob_name(m["filePath"]): m["mediaID"] for m in csv.DictReader(io.StringIO(
        expected[layout.camtrap_dp_blob(TASK, "media.csv")].decode()))}
    assert named[media["siteA/cam1/b.jpg"]] == named[media["siteA/cam1/a.jpg"]] == sequence
    assert _fanned(settings, store, "", parts) == single
    got = _snapshot(store, settings.container, "")
    for name in expected:
        assert got[name] == expected[name], name
