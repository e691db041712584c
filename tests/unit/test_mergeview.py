"""The worker's merge view gives a merge part exactly the bytes, counts, sample and search rows of its entry path."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
from typing import Any

import pytest

from gpu_batch import manifest as contract
from gpu_batch.formats import camtrapdp, jsonio
from gpu_batch.formats.mergeview import VIEW_VERSION, ShardFormatter, build_view, read_view
from gpu_batch.pool.simulated import synthetic_entry

TASK, THRESHOLD = "task-view", 0.2
BASE = "https://acct.blob.core.windows.net/camera-traps/"  # the images' URL prefix (CamtrapBuilder.media_base)


def awkward_entries() -> tuple[list[str], list[dict[str, Any]]]:
    """A shard whose names and entries reach every branch of the per-image formatting: two folders and the root,
    names a CSV must quote or guard, non-ASCII, permanent failures, no detections, boxes too large for the search,
    confidences below the search's floor, a repeated box, integer confidences."""
    names = (["cam1/IMG_%04d.JPG" % i for i in range(40)] + ["cam2/ü, \"quoted\".jpg", "=formula.jpg", "root.jpg"]
             + ["cam2/sub/%02d.png" % i for i in range(10)])
    entries = [synthetic_entry(n, 1, 0.1, seed=7) for n in names]
    for e in entries:  # the simulated worker's retryable failures would leave the shard to run again
        if e.get("failure_kind") == contract.RETRYABLE:
            e.update(contract.failure_fields("undecodable"))
    entries[3] = {"file": names[3], "detections": [], "width": 640, "height": 480}
    entries[4] = {"file": names[4], "detections": [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.9, 0.9]},
                                                   {"category": "2", "conf": 0.05, "bbox": [0.1, 0.2, 0.1, 0.1]},
                                                   {"category": "3", "conf": 1, "bbox": [0.5, 0.5, 0.1, 0.1]}],
                  "width": 640, "height": 480}
    rock = {"category": "1", "conf": 0.7, "bbox": [0.4, 0.3, 0.1, 0.08]}
    for e in entries[10:30]:
        if e.get("failure") is None:
            e["detections"] = [*e["detections"], dict(rock)]
    random.Random(3).shuffle(entries)  # a worker writes in any order; the merge goes by the manifest
    return names, entries


def as_merge_reads(entries: list[dict[str, Any]]) -> list[Any]:
    """The entries as the merge has them: parsed from the results blob's bytes."""
    return jsonio.loads(json.dumps({"images": entries}).encode("utf-8"))["images"]


def test_a_view_absorbed_equals_the_shard_formatted_entry_by_entry() -> None:
    names, entries = awkward_entries()
    data = build_view(TASK, THRESHOLD, names, as_merge_reads(entries), '"0x8D1"', "0x8D2")
    view = read_view(data)
    assert view is not None and view.matches(TASK, THRESHOLD, "0x8D1", '"0x8D2"')

    from gpu_batch.formats.entries import merge_entries
    merged, missing = merge_entries(names, [as_merge_reads(entries)])
    assert missing == 0
    direct, viewed = ShardFormatter(TASK, THRESHOLD), ShardFormatter(TASK, THRESHOLD)
    first = direct.add_shard(as_merge_reads([synthetic_entry("a/0.jpg", 1, 0.0)]))  # a shard before it, both ways
    assert viewed.add_shard(as_merge_reads([synthetic_entry("a/0.jpg", 1, 0.0)])) == first
    assert direct.add_shard(merged) == (view.json, view.csv)
    viewed.absorb(view)

    assert direct.counts == viewed.counts and direct.counts["failed"] > 0 and direct.counts["empty"] > 0
    assert direct.reasons == viewed.reasons and direct.considered == viewed.considered > 0
    assert json.dumps(direct.sampler.state()) == json.dumps(viewed.sampler.state())
    assert {f: b",".join(p) for f, p in direct.folders.text.items()} == \
           {f: b",".join(p) for f, p in viewed.folders.text.items()}
    assert direct.folders.count == viewed.folders.count and len(direct.folders) == 4  # a, cam1, cam2, cam2/sub
    assert view.json.count(b"\n  {") == len(names)  # every manifest image once, in the merged layout
    assert '"=formula.jpg' not in view.csv.decode() and "'=formula.jpg" in view.csv.decode()


def test_no_view_for_an_attempt_that_left_an_image_to_run_again() -> None:
    names, entries = awkward_entries()
    entries[0] = synthetic_entry(entries[0]["file"], 1, 1.0, seed=1)  # failure_rate 1: a failure, maybe retryable
    entries[0].update(contract.failure_fields("download"))
    assert build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "e1", "e2") is None
    assert build_view(TASK, THRESHOLD, names + ["never/written.jpg"], as_merge_reads(entries[1:] + [entries[0]]),
                      "e1", "e2") is None


@pytest.mark.parametrize("change", ["task", "threshold", "results", "manifest", "no results etag"])
def test_a_view_matches_only_its_task_threshold_and_blobs(change: str) -> None:
    names, entries = awkward_entries()
    view = read_view(build_view(TASK, THRESHOLD, names, as_merge_reads(entries),
                                "" if change == "no results etag" else "r1", "m1"))
    assert view is not None
    args = {"task_id": TASK, "threshold": THRESHOLD, "results_etag": "r1", "manifest_etag": "m1"}
    if change != "no results etag":
        assert view.matches(**args)
        args[{"task": "task_id", "threshold": "threshold", "results": "results_etag",
              "manifest": "manifest_etag"}[change]] = {"task": "other", "threshold": 0.21, "results": "r2",
                                                       "manifest": "m2"}[change]
    assert not view.matches(**args)


def test_torn_or_foreign_bytes_are_no_view() -> None:
    names, entries = awkward_entries()
    data = build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "r1", "m1")
    assert data is not None and read_view(data) is not None
    head, body = data.split(b"\n", 1)
    other = json.dumps({**json.loads(head), "version": VIEW_VERSION + 1}).encode()
    for bad in (None, b"", data[:-1], data + b"x", b"{}\n", other + b"\n" + body, b"not json\n" + body, head):
        assert read_view(bad) is None


def test_camtrap_lines_put_in_the_tasks_values_are_the_builders_own() -> None:
    from gpu_batch.formats import camtrapdp
    from gpu_batch.formats.camtrapdp import CamtrapBuilder
    from gpu_batch.formats.entries import DETECTION_CATEGORIES, merge_entries
    from gpu_batch.formats.mergeview import camtrap_lines

    names, entries = awkward_entries()
    merged, _ = merge_entries(names, [as_merge_reads(entries)])
    lines = camtrap_lines(merged, THRESHOLD)
    assert lines is not None
    builder = CamtrapBuilder(THRESHOLD, DETECTION_CATEGORIES, "2026-12-02T10:00:00Z", "MegaDetector v5a.0.1",
                             media_base=BASE)
    made = [builder.add_lines(e) for e in merged]
    filled = lines.filled(builder.completed_at, builder.classified_by, BASE)
    assert filled is not None
    assert filled[0] == "".join(m for m, _ in made) and filled[1] == "".join(o for _, o in made)
    assert filled[2] == [[dep, d.start, d.end, d.timestamp_issues, d.location, d.latitude, d.longitude, d.camera]
                         for dep, d in builder.deployments.items()]
    assert (lines.media_count, lines.observation_count) == (builder.counts["media"], builder.counts["observations"])
    assert lines.filled("2026-12-02T10:00:00+00:00", "MegaDetector, quoted", BASE) is None  # would need CSV quoting
    # media filePath is the image's URL: the view holds a placeholder for the prefix, which the exports put in; no
    # prefix (or one needing CSV quoting) leaves the view's lines unused rather than holding a bare name
    assert lines.filled(builder.completed_at, builder.classified_by, "") is None
    assert lines.filled(builder.completed_at, builder.classified_by, "https://a,b/c/") is None
    assert [r[4] for r in csv.reader(io.StringIO(filled[0]))] == [camtrapdp.media_url(BASE, n) for n in
                                                                   (e["file"] for e in merged)]
    # a deployment whose images have capture times and images without one (a failure, a camera clock never set):
    # its span is its capture times', whatever the completion time put in later
    # (cam1's image 3 has none, its others have), and one with none at all (the root's: "" until combined)
    merged[5] = {**merged[5], "datetime": "2026:01:02 03:04:05"}
    merged = [{k: v for k, v in e.items() if k != "datetime"} if "/" not in e["file"] else e for e in merged]
    mixed = camtrap_lines(merged, THRESHOLD)
    assert mixed is not None
    for completed_at in ("2026-12-02T10:00:00Z", "2020-01-01T00:00:00Z"):
        builder = CamtrapBuilder(THRESHOLD, DETECTION_CATEGORIES, completed_at, "MegaDetector v5a.0.1", media_base=BASE)
        made = [builder.add_lines(e) for e in merged]
        filled = mixed.filled(builder.completed_at, builder.classified_by, BASE)
        assert filled is not None and filled[0] == "".join(m for m, _ in made)
        assert filled[2] == builder.deployment_facts()
        spans = {fact[0]: (fact[1], fact[2], fact[3]) for fact in filled[2]}
        assert spans["(root)"] == ("", "", True) and spans["cam1"][0] and spans["cam1"][2]
        rows = {row[0]: row for row in builder.deployment_rows()}
        root_start = camtrapdp.DEPLOYMENT_COLUMNS.index("deploymentStart")
        assert rows["(root)"][root_start] == builder.completed_at
        # cam1 has images without a capture time: they stand in a second before its first (in no event)
        assert rows["cam1"][root_start] == camtrapdp.stand_in_time(spans["cam1"][0]) < spans["cam1"][0]


def test_zooniverse_rows_put_in_the_tasks_values_are_the_manifests_own() -> None:
    """A view's Zooniverse rows, with the task's attribution and license (quoted as CSV needs) put in, are
    ``core.zooniverse.row_line`` of each eligible entry (failures left out), and their lengths are the rows'."""
    from core import zooniverse
    from gpu_batch.formats.entries import DETECTION_CATEGORIES, merge_entries
    from gpu_batch.formats.mergeview import zooniverse_lines

    names, entries = awkward_entries()
    merged, _ = merge_entries(names, [as_merge_reads(entries)])
    lines = zooniverse_lines(merged, THRESHOLD)
    assert lines is not None
    options = zooniverse.ManifestOptions(THRESHOLD, attribution='Snapshot "Serengeti", 2026', license="CC-BY-4.0")
    made = [zooniverse.row_line(e, options, DETECTION_CATEGORIES).encode("utf-8") for e in merged
            if not zooniverse.excluded(e)]
    assert 0 < len(made) < len(merged)  # the failures are not subjects
    rows, lengths = lines.filled(zooniverse.quoted_options(options)[0])
    assert rows == b"".join(made) and lengths == [len(m) for m in made]
    whole = read_view(build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "r1", "m1"))
    assert whole is not None and whole.zooniverse == lines
    merged[5] = {**merged[5], "file": "cam1/nul\x00.jpg"}  # the placeholder's character in a name: no rows
    assert zooniverse_lines(merged, THRESHOLD) is None


@pytest.mark.parametrize("head", ["part of the header line", "the header line and a little", "the whole view"])
def test_each_reader_gets_its_part_of_a_view_from_the_head_and_one_ranged_read(head: str) -> None:
    from gpu_batch.formats.mergeview import read_view_part

    names, entries = awkward_entries()
    data = build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "r1", "m1")
    assert data is not None
    whole = read_view(data)
    assert whole is not None and whole.coco is not None and whole.camtrap is not None
    line = data.index(b"\n")
    head_bytes = {"part of the header line": line // 2, "the header line and a little": line + 10,
                  "the whole view": len(data) + 1}[head]
    fetched: list[tuple[int, int]] = []

    def fetch(offset: int, length: int) -> bytes:
        fetched.append((offset, length))
        return data[offset:offset + length]

    merge = read_view_part(data[:head_bytes], fetch, "merge")
    exports = read_view_part(data[:head_bytes], fetch, "exports")
    rows = read_view_part(data[:head_bytes], fetch, "zooniverse")
    if head_bytes < line:
        assert merge is None and exports is None and rows is None and fetched == []  # no header line: no view
        return
    assert merge is not None and exports is not None and rows is not None
    assert (merge.json, merge.csv, merge.folders, merge.coco, merge.camtrap, merge.zooniverse) == (
        whole.json, whole.csv, whole.folders, None, None, None)
    assert (exports.json, exports.csv, exports.folders) == (b"", b"", [])
    assert exports.coco == whole.coco and exports.camtrap == whole.camtrap and exports.zooniverse == whole.zooniverse
    assert (rows.json, rows.coco, rows.camtrap, rows.zooniverse) == (b"", None, None, whole.zooniverse)
    assert merge.sample == whole.sample and merge.counts == whole.counts
    assert exports.matches(TASK, THRESHOLD, "r1", "m1")
    assert len(fetched) == (0 if head_bytes >= len(data) else 3)  # each part in one read when the head lacks it
    assert sum(n for _, n in fetched) <= len(data) + len(rows.zooniverse.rows) + 4 * len(rows.zooniverse.lengths)
    short = read_view_part(data[:data.index(b"\n") + 1], lambda offset, length: data[offset:offset + length - 1],
                           "exports")
    assert short is None  # a ranged read that came back short is no view


def test_a_later_attempts_view_is_the_whole_shard_merged_as_the_merge_merges_its_attempts() -> None:
    """A resubmitted attempt's view (``earlier``: the shard's earlier results) holds the bytes the merge makes of
    every attempt over the first manifest (``merge_entries``: an earlier success stays, a later attempt fills the
    retryable failures and the images never written), and names each earlier results blob with its ETag."""
    from gpu_batch.formats.entries import merge_entries
    from gpu_batch.formats.mergeview import EarlierAttempt

    names, entries = awkward_entries()
    first = as_merge_reads(entries[5:])
    first[0] = {"file": first[0]["file"], "failure": "image access failure", "detections": None,
                **contract.failure_fields("download")}
    rerun = [first[0]["file"], *(e["file"] for e in entries[:5])]
    second = as_merge_reads([synthetic_entry(name, 2, 0.0, seed=9) for name in rerun])
    assert build_view(TASK, THRESHOLD, names, first, "r1", "m1") is None  # attempt 1 alone: images left to run
    data = build_view(TASK, THRESHOLD, names, second, '"r2"', "m1", [EarlierAttempt("a-1.results.json", '"r1"', first)])
    view = read_view(data)
    assert view is not None and view.earlier == {"a-1.results.json": "r1"}

    merged, missing = merge_entries(names, [first, second])
    assert missing == 0
    direct = ShardFormatter(TASK, THRESHOLD)
    assert direct.add_shard(merged) == (view.json, view.csv)
    assert direct.counts == view.counts and json.dumps(direct.sampler.state()) == json.dumps(view.sample)

    assert view.matches(TASK, THRESHOLD, "r2", "m1", {"a-1.results.json": '"r1"'})
    for earlier in ({}, {"a-1.results.json": "r9"}, {"a-0.results.json": "r1"},
                    {"a-1.results.json": "r1", "a-3.results.json": "r3"}, {"a-1.results.json": ""}):
        assert not view.matches(TASK, THRESHOLD, "r2", "m1", earlier)  # an attempt left out, added or rewritten
    single = read_view(build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "r1", "m1"))
    assert single is not None and single.earlier == {}
    assert not single.matches(TASK, THRESHOLD, "r1", "m1", {"a-2.results.json": "r2"})  # results it never saw


def test_whole_shard_reads_the_first_manifest_and_the_earlier_results_the_basis_names() -> None:
    from gpu_batch.formats.mergeview import whole_shard

    names, entries = awkward_entries()
    manifest = contract.ShardManifest(task_id=TASK, shard_id="s1", attempt=1, source_container="src",
                                      images=tuple(names), output_container="out", output_blob="a-1.results.json",
                                      model="m", merge_view_threshold=THRESHOLD)
    blobs = {"a-1.json": (json.dumps(manifest.to_dict()).encode(), '"m1"'),
             "a-1.results.json": (json.dumps({"images": entries}).encode(), '"r1"'),
             "a-2.results.json": (b"{not json", '"r2"'), "a-3.results.json": (b"[]", '"r3"')}
    reads: list[str] = []

    def read(name: str) -> tuple[bytes, str]:
        reads.append(name)
        if name not in blobs:
            raise ValueError(f"cannot read blob out/{name}: not found")
        return blobs[name]

    whole = whole_shard(contract.ViewBasis("a-1.json", ("a-1.results.json",)), read)
    assert whole.images == tuple(names) and whole.manifest_etag == '"m1"' and reads == ["a-1.json", "a-1.results.json"]
    assert [(e.name, e.etag, list(e.entries)) for e in whole.earlier] == [("a-1.results.json", '"r1"',
                                                                          as_merge_reads(entries))]
    for unusable in ("a-2.results.json", "a-3.results.json", "a-9.results.json"):  # no view from what the merge skips
        with pytest.raises(ValueError):
            whole_shard(contract.ViewBasis("a-1.json", ("a-1.results.json", unusable)), read)


def test_a_manifests_view_basis_round_trips_and_a_malformed_one_is_refused() -> None:
    manifest = contract.ShardManifest(task_id=TASK, shard_id="s1", attempt=2, source_container="src",
                                      images=("a.jpg",), output_container="out", output_blob="a-2.results.json",
                                      model="m", merge_view_threshold=THRESHOLD,
                                      merge_view_basis=contract.ViewBasis("a-1.json", ("a-1.results.json",)))
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["merge_view_basis"] == {"manifest": "a-1.json", "results": ["a-1.results.json"]}
    assert contract.ShardManifest.from_dict(data) == manifest
    plain = dataclasses.replace(manifest, merge_view_basis=None)
    assert "merge_view_basis" not in plain.to_dict() and contract.ShardManifest.from_dict(plain.to_dict()) == plain
    for bad in ({"manifest": "a-1.json"}, {"manifest": "", "results": []}, {"manifest": "a-1.json", "results": [3]},
                ["a-1.json"]):
        with pytest.raises(ValueError, match="merge_view_basis"):
            contract.ShardManifest.from_dict({**data, "merge_view_basis": bad})


def test_a_manifests_view_list_round_trips_and_a_malformed_one_is_refused() -> None:
    manifest = contract.ShardManifest(task_id=TASK, shard_id="s1", attempt=1, source_container="src",
                                      images=("a.jpg",), output_container="out", output_blob="a-1.results.json",
                                      model="m", merge_view_threshold=THRESHOLD,
                                      merge_view_list=contract.ViewList("s1/image-list.json", ("site", "season")))
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["merge_view_list"] == {"blob": "s1/image-list.json", "columns": ["site", "season"]}
    facts = dataclasses.replace(manifest, merge_view_list=contract.ViewList("s1/image-list.json", ("lat",), "d.json"))
    assert contract.ShardManifest.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    assert contract.ShardManifest.from_dict(data) == manifest
    plain = dataclasses.replace(manifest, merge_view_list=None)
    assert "merge_view_list" not in plain.to_dict() and contract.ShardManifest.from_dict(plain.to_dict()) == plain
    for bad in ({"blob": "x"}, {"blob": "", "columns": ["a"]}, {"blob": "x", "columns": []},
                {"blob": "x", "columns": [1]}, {"blob": "x", "columns": ["a"], "given": 3}, "x"):
        with pytest.raises(ValueError, match="merge_view_list"):
            contract.ShardManifest.from_dict({**data, "merge_view_list": bad})


LIST_COLUMNS = ("site", "latitude", "longitude", "camera_id", "datetime", "seq_id", "season", "file")


def listed_rows(names: list[str]) -> dict[str, dict[str, str]]:
    """An image list's rows for ``awkward_entries``' names: cam1's with a site, coordinates that change now and
    then (GPS jitter: the later values stay in those images' comments), two cameras and capture times; cam2's with
    a value CSV must quote, non-ASCII, a column named like a Zooniverse column and an unreadable time; none for the
    rest."""
    rows: dict[str, dict[str, str]] = {}
    for i, name in enumerate(names):
        if name.startswith("cam1/"):
            rows[name] = {"site": "J01", "latitude": "-2.34" if i % 7 == 3 else "-2.33", "longitude": "34.8",
                          "camera_id": "B" if i % 5 == 4 else "A", "datetime": f"2024-05-01 10:00:{i:02d}",
                          "seq_id": f"seq{i // 3}", "season": "S1"}
        elif name.startswith("cam2/"):
            rows[name] = {"site": "J02", "season": 'S2, "wet" 季', "file": f"roll {i}", "datetime": "not a time"}
    return rows


def test_export_lines_made_with_an_image_lists_rows_are_the_exports_own() -> None:
    """With an image list's rows (``ListedRows``), a view's COCO lines, Camtrap DP lines and deployment facts, and
    Zooniverse rows are what the exports make of each entry with its row (``CocoWriter.add``,
    ``CamtrapBuilder.add_lines``, ``core.zooniverse.row_line`` with the list's columns); the view names the list
    document's ETag and the columns. A value holding NUL gives no Camtrap DP or Zooniverse lines; a deployment with
    and without capture times gets its capture times' span whatever the completion time."""
    import io

    from core import zooniverse
    from gpu_batch.formats import coco
    from gpu_batch.formats.camtrapdp import CamtrapBuilder
    from gpu_batch.formats.entries import DETECTION_CATEGORIES, merge_entries
    from gpu_batch.formats.mergeview import ListedRows, camtrap_lines, coco_lines, zooniverse_lines

    names, entries = awkward_entries()
    merged, _ = merge_entries(names, [as_merge_reads(entries)])
    for entry in merged:  # sizes, so that COCO's lines can be made; no EXIF times: the list's give them
        entry.setdefault("width", 640)
        entry.setdefault("height", 480)
        entry.pop("datetime", None)
    rows = listed_rows(names)
    listed = ListedRows("0x8D9", LIST_COLUMNS, rows)

    images, annotations = io.StringIO(), io.StringIO()
    writer = coco.CocoWriter(images, annotations, THRESHOLD, DETECTION_CATEGORIES, continued=True)
    for entry in merged:
        writer.add(entry, None, rows.get(entry["file"]))
    writer.flush()
    made_images, made_annotations, counts = coco_lines(merged, THRESHOLD, listed)
    assert made_images == images.getvalue().encode() and made_annotations == annotations.getvalue().encode()
    assert b'"image_list_metadata":{' in made_images and counts["images"] == len(names)

    builder = CamtrapBuilder(THRESHOLD, DETECTION_CATEGORIES, "2026-12-02T10:00:00Z", "MegaDetector v5a.0.1",
                             media_base=BASE)
    made = [builder.add_lines(e, rows.get(e["file"])) for e in merged]
    lines = camtrap_lines(merged, THRESHOLD, listed)
    assert lines is not None
    filled = lines.filled(builder.completed_at, builder.classified_by, BASE)
    assert filled is not None
    assert filled[0] == "".join(m for m, _ in made) and filled[1] == "".join(o for _, o in made)
    assert filled[2] == [[dep, d.start, d.end, d.timestamp_issues, d.location, d.latitude, d.longitude, d.camera]
                         for dep, d in builder.deployments.items()]
    assert '""latitude"": ""-2.34""' in filled[0] and '""camera_id"": ""B""' in filled[0]  # jitter kept
    span = {f[0]: f[1:4] for f in filled[2]}
    # the list's times, without a zone (no utc_offset: written as UTC, an issue); unreadable: no span (the completion
    # time stands in when combined)
    assert span["cam1@J01"][0].startswith("2024-05-01T10:00:") and span["cam1@J01"][2] == camtrapdp.ZONE_ASSUMED
    assert span["cam2@J02"] == ["", "", camtrapdp.NO_TIME]

    options = zooniverse.ManifestOptions(THRESHOLD, attribution="A, B", license="CC-BY-4.0",
                                         metadata_columns=LIST_COLUMNS)
    rows_made = [zooniverse.row_line(e, options, DETECTION_CATEGORIES, rows.get(e["file"])).encode() for e in merged
                 if not zooniverse.excluded(e)]
    listed_lines = zooniverse_lines(merged, THRESHOLD, listed)
    assert listed_lines is not None
    assert listed_lines.filled(zooniverse.quoted_options(options)[0]) == (b"".join(rows_made),
                                                                          [len(r) for r in rows_made])
    assert '"S2, ""wet"" 季",roll'.encode() in listed_lines.rows

    view = read_view(build_view(TASK, THRESHOLD, names, as_merge_reads(merged), "r1", "m1", listed=listed))
    assert view is not None and (view.list_etag, view.list_columns) == ("0x8D9", LIST_COLUMNS)
    assert view.coco is not None and view.coco[0] == made_images and view.zooniverse == listed_lines
    unlisted = read_view(build_view(TASK, THRESHOLD, names, as_merge_reads(merged), "r1", "m1"))
    assert unlisted is not None and (unlisted.list_etag, unlisted.list_columns) == ("", ())

    with_nul = ListedRows("0x8D9", LIST_COLUMNS, {**rows, names[0]: {"season": "S\x00completed_at\x00"}})
    assert camtrap_lines(merged, THRESHOLD, with_nul) is None and zooniverse_lines(merged, THRESHOLD, with_nul) is None
    assert coco_lines(merged, THRESHOLD, with_nul)[0] is not None  # COCO's lines hold no placeholder
    cam1 = [n for n in names if n.startswith("cam1/")]
    mixed = ListedRows("0x8D9", LIST_COLUMNS, {**rows, cam1[5]: {**rows[cam1[5]], "datetime": ""}})
    mixed_lines = camtrap_lines(merged, THRESHOLD, mixed)
    assert mixed_lines is not None
    for completed_at in ("2026-12-02T10:00:00Z", "2000-01-01T00:00:00Z"):  # before and after every capture time
        builder = CamtrapBuilder(THRESHOLD, DETECTION_CATEGORIES, completed_at, "MegaDetector v5a.0.1", media_base=BASE)
        made = [builder.add_lines(e, mixed.of(e["file"])) for e in merged]
        filled = mixed_lines.filled(builder.completed_at, builder.classified_by, BASE)
        assert filled is not None and filled[0] == "".join(m for m, _ in made)
        assert filled[2] == builder.deployment_facts()
        span = {f[0]: f[1:4] for f in filled[2]}
        assert span["cam1@J01"][0].startswith("2024-05-01T10:00:") and span["cam1@J01"][2] & camtrapdp.NO_TIME


def test_list_rows_reads_the_document_its_manifest_names() -> None:
    from gpu_batch.formats.mergeview import list_rows

    blobs = {"s1/image-list.json": (json.dumps({"not_found": [], "metadata": {"a.jpg": {"site": "J"}}}).encode(),
                                    '"0x8DA"'),
             "s2/image-list.json": (b'{"metadata": ["a.jpg"]}', "0x1")}

    def read(name: str) -> tuple[bytes, str]:
        if name not in blobs:
            raise ValueError(f"no blob {name}")
        return blobs[name]

    rows = list_rows(contract.ViewList("s1/image-list.json", ("site",)), read)
    assert (rows.etag, rows.columns, rows.of("a.jpg"), rows.of("b.jpg")) == ("0x8DA", ("site",), {"site": "J"}, None)
    assert (rows.given, rows.given_etag) == ({}, "")
    blobs["deployments.json"] = (json.dumps({"cam@J": [-2.3, 34.8, "C1"]}).encode(), '"0x8DB"')
    given = list_rows(contract.ViewList("s1/image-list.json", ("site",), "deployments.json"), read)
    assert (given.given, given.given_etag) == ({"cam@J": [-2.3, 34.8, "C1"]}, "0x8DB")
    absent = list_rows(contract.ViewList("s1/image-list.json", ("site",), "none.json"), read)  # unreadable: none
    assert (absent.given, absent.given_etag, absent.rows) == ({}, "", rows.rows)
    for name in ("s2/image-list.json", "s3/image-list.json"):
        with pytest.raises(ValueError):
            list_rows(contract.ViewList(name, ("site",)), read)


def test_a_header_longer_than_the_first_read_is_read_on_and_one_past_the_bound_is_refused_loudly() -> None:
    """A view's header line holds the preview sampler's state and every folder's size, so it grows with the
    categories and folders (139 KB measured at 10,000 images and 3 categories): one that does not end within the
    first ``HEAD_BYTES`` is read on (the shard keeps its fast path), up to ``MAX_HEAD_BYTES``; past that the reader
    says so (``LongHeader``) instead of taking it for a view that does not parse."""
    from gpu_batch.formats.mergeview import HEAD_BYTES, LongHeader, read_view_part

    names = ["site-%04d-with-a-longish-folder-name/IMG_0001.JPG" % i for i in range(1500)]
    entries = [synthetic_entry(n, 1, 0.1, seed=7) for n in names]
    for e in entries:
        if e.get("failure_kind") == contract.RETRYABLE:
            e.update(contract.failure_fields("undecodable"))
    data = build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "r1", "m1")
    assert data is not None and data.index(b"\n") > HEAD_BYTES  # the case: a header past the first read
    whole = read_view(data)
    assert whole is not None
    fetched: list[tuple[int, int]] = []

    def fetch(offset: int, length: int) -> bytes:
        assert offset < len(data)  # never a range that starts past the blob's end (Get Blob answers 416)
        fetched.append((offset, length))
        return data[offset:offset + length]

    for part in ("merge", "exports"):
        view = read_view_part(data[:HEAD_BYTES], fetch, part)
        assert view is not None and view.sample == whole.sample and view.counts == whole.counts
    assert read_view_part(data[:HEAD_BYTES], fetch, "merge").json == whole.json  # type: ignore[union-attr]
    torn = data[:data.index(b"\n")]  # a blob cut inside its header: no view, and no read past its end
    assert read_view_part(torn[:HEAD_BYTES], lambda o, n: torn[o:o + n], "merge") is None
    with pytest.raises(LongHeader, match="header"):
        read_view_part(data[:HEAD_BYTES], fetch, "merge", max_head_bytes=HEAD_BYTES + 1000)


def test_a_view_whose_deployment_spans_compared_capture_times_as_text_is_no_view(monkeypatch: Any) -> None:
    """The worker is deployed apart from the app. A view an older worker wrote holds each deployment's span as the
    smallest and largest text (before ``camtrapdp.earlier``): for a camera whose clock fell back at summer time's
    end, a start after its end. The exports combine a view's facts as they are, so such a view must not be used:
    its version is not this one's, and the exports format the entries themselves."""
    from gpu_batch.formats import mergeview

    names = ["cam1/a.jpg", "cam1/b.jpg"]
    entries = [{"file": "cam1/a.jpg", "datetime": "2024-10-27T02:30:00+02:00", "detections": []},
               {"file": "cam1/b.jpg", "datetime": "2024-10-27T02:10:00+01:00", "detections": []}]
    with monkeypatch.context() as older:  # what the worker before camtrapdp.earlier wrote
        older.setattr(mergeview, "VIEW_VERSION", 7)
        older.setattr(camtrapdp, "earlier", lambda a, b: a < b)
        old = build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "r1", "m1")
    assert old is not None
    assert read_view(old) is None, "a view with spans compared as text was taken"
    new = read_view(build_view(TASK, THRESHOLD, names, as_merge_reads(entries), "r1", "m1"))
    assert new is not None and new.camtrap is not None
    assert new.camtrap.deployments[0][1:3] == ["2024-10-27T02:30:00+02:00", "2024-10-27T02:10:00+01:00"]
