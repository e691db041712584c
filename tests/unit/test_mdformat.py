from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from core import mdformat
from gpu_batch import manifest as contract


def det(conf: float, cat: str = "1") -> dict[str, object]:
    return {"category": cat, "conf": conf, "bbox": [0.1, 0.2, 0.3, 0.4]}


def test_merge_keeps_manifest_order_fills_from_later_attempts_and_marks_missing() -> None:
    attempt1 = [{"file": "a", "detections": [det(0.9)]}, {"file": "b", "failure": "image access failure",
                                                          "detections": None}]
    attempt2 = [{"file": "c", "detections": []}, {"file": "b", "detections": [det(0.3)]}, {"file": "zz", "detections": []}]
    merged, missing = mdformat.merge_entries(["a", "b", "c", "d"], [attempt1, attempt2])
    assert [m["file"] for m in merged] == ["a", "b", "c", "d"]
    assert merged[1]["detections"][0]["conf"] == 0.3  # success beats an earlier failure
    assert merged[3] == {"file": "d", "failure": mdformat.FAILURE_INFERENCE, "detections": None,
                         "failure_kind": "retryable", "failure_reason": "not_processed"}
    assert missing == 1


def test_success_is_not_replaced_by_later_failure() -> None:
    merged, _ = mdformat.merge_entries(["a"], [[{"file": "a", "detections": []}],
                                               [{"file": "a", "failure": "x", "detections": None}]])
    assert merged == [{"file": "a", "detections": []}]


def test_validate_accepts_built_output_and_rejects_breaches() -> None:
    doc = mdformat.build_output([{"file": "a", "detections": [det(0.5)]},
                                 mdformat.failure_entry("b", mdformat.FAILURE_IMAGE_ACCESS)], {"detector": "m"})
    mdformat.validate(doc, expected_files=["a", "b"])
    assert doc["info"]["format_version"] == "1.6"
    with pytest.raises(mdformat.FormatError, match="missing"):
        mdformat.validate(doc, expected_files=["a", "b", "c"])
    bad = {**doc, "images": doc["images"] + [{"file": "a", "detections": []}]}
    with pytest.raises(mdformat.FormatError, match="more than once"):
        mdformat.validate(bad)
    bad = {**doc, "images": [{"file": "a", "detections": [{"category": "1", "conf": 1, "bbox": [0, 0, 1, 1]}]}]}
    with pytest.raises(mdformat.FormatError, match="float"):
        mdformat.validate(bad)
    bad = {**doc, "images": [{"file": "a", "failure": "x", "detections": []}]}
    with pytest.raises(mdformat.FormatError, match="null detections"):
        mdformat.validate(bad)


def test_image_sizes_the_worker_writes_are_valid_and_kept_by_the_merge() -> None:
    """``width``/``height`` (MegaDetector's ``--include_image_size`` keys, written by the worker on every success) pass
    both validators and reach the merged entries unchanged; entries without them stay without."""
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    sized = {"file": "a", "detections": [det(0.5)], "width": 4000, "height": 3000}
    older = {"file": "c", "detections": []}
    retryable = mdformat.failure_entry("b", mdformat.FAILURE_IMAGE_ACCESS, contract.REASON_DOWNLOAD)
    merged, missing = mdformat.merge_entries(["a", "b", "c"], [[sized, retryable, older],
                                                               [{"file": "b", "detections": [], "width": 640,
                                                                 "height": 480}]])
    assert merged == [sized, {"file": "b", "detections": [], "width": 640, "height": 480}, older] and missing == 0
    doc = mdformat.build_output(merged, {"detector": "m"})
    mdformat.validate(doc, expected_files=["a", "b", "c"])
    assert validate_batch_results(doc)["validation_results"]["errors"] == []


def test_summarize_counts_above_threshold() -> None:
    images = [{"file": "a", "detections": [det(0.9), det(0.1)]}, {"file": "b", "detections": [det(0.1)]},
              mdformat.failure_entry("c", "x")]
    assert mdformat.summarize(images, 0.2) == {"images": 3, "failed": 1, "with_detections": 1, "detections": 1,
                                               "empty": 1}


def test_summarize_skips_malformed_detections() -> None:
    from core.mdformat import summarize

    images = [{"file": "a.jpg", "detections": [{"category": "1", "conf": None}, "x", {"category": "1", "conf": 0.5}]}]
    assert summarize(images, 0.2) == {"images": 1, "failed": 0, "with_detections": 1, "detections": 1, "empty": 0}


# --- failure kinds across attempts (the worker writes kind and reason: gpu_batch.manifest) -------------------------

def failed(name: str, reason: str, failure: str = mdformat.FAILURE_IMAGE_ACCESS) -> dict[str, Any]:
    """An entry exactly as the worker writes a failure."""
    return {"file": name, "failure": failure, "detections": None, **contract.failure_fields(reason)}


def ok(name: str) -> dict[str, Any]:
    return {"file": name, "detections": [det(0.7)]}


def test_a_later_success_replaces_a_retryable_failure_and_is_not_missing() -> None:
    merged, missing = mdformat.merge_entries(["a"], [[failed("a", "auth")], [ok("a")]])
    assert merged == [ok("a")] and missing == 0


def test_a_permanent_failure_is_final_and_not_missing() -> None:
    merged, missing = mdformat.merge_entries(["a"], [[failed("a", "undecodable")]])
    assert merged == [failed("a", "undecodable")] and missing == 0
    # were it run again (it is not: see final_files), a retryable failure would not displace it
    merged, missing = mdformat.merge_entries(["a"], [[failed("a", "undecodable")], [failed("a", "throttled")]])
    assert merged == [failed("a", "undecodable")] and missing == 0
    # but a success still would
    merged, _ = mdformat.merge_entries(["a"], [[failed("a", "undecodable")], [ok("a")]])
    assert merged == [ok("a")]


def test_still_retryable_after_the_last_attempt_keeps_its_own_failure_and_reason_and_counts_missing() -> None:
    attempts = [[failed("a", "auth"), failed("b", "timeout")],
                [failed("a", "throttled"), failed("b", "inference", mdformat.FAILURE_INFERENCE)]]
    merged, missing = mdformat.merge_entries(["a", "b", "c"], attempts)
    assert merged[0] == failed("a", "throttled")  # the latest attempt's reason, not the generic one
    assert merged[1] == failed("b", "inference", mdformat.FAILURE_INFERENCE)
    assert merged[2] == {"file": "c", "failure": mdformat.FAILURE_INFERENCE, "detections": None,
                         "failure_kind": "retryable", "failure_reason": "not_processed"}
    assert missing == 3
    mdformat.validate(mdformat.build_output(merged, {}), expected_files=["a", "b", "c"])


def test_a_later_permanent_failure_replaces_a_retryable_one() -> None:
    merged, missing = mdformat.merge_entries(["a"], [[failed("a", "download")], [failed("a", "not_found")]])
    assert merged == [failed("a", "not_found")] and missing == 0


def test_failures_from_workers_without_kinds_count_as_final_as_before() -> None:
    legacy = {"file": "a", "failure": "image access failure", "detections": None}
    merged, missing = mdformat.merge_entries(["a", "b"], [[legacy, failed("b", "auth")]])
    assert merged[0] == legacy and missing == 1
    assert mdformat.final_files([[legacy, failed("b", "auth")]]) == {"a"}
    assert mdformat.failure_counts(merged) == {"unclassified": 1, "auth": 1}


def test_coverage_and_final_files_agree_with_the_merge() -> None:
    attempts = [[ok("a"), failed("b", "auth"), failed("c", "undecodable"), failed("d", "throttled"), ok("zz")],
                [ok("b"), failed("d", "timeout")]]
    images = ["a", "b", "c", "d", "e", "a"]
    assert mdformat.final_files(attempts) == {"a", "b", "c", "zz"}
    assert mdformat.coverage(images, attempts) == {"images": 5, "covered": 3, "failed": 1, "retryable": 1,
                                                  "missing": 2}
    _, missing = mdformat.merge_entries(images, attempts)
    assert missing == 2
    from core.shards import missing_images

    assert missing_images(images, mdformat.final_files(attempts)) == ["d", "e"]  # what a resubmission runs


def test_failure_counts_by_reason() -> None:
    merged, _ = mdformat.merge_entries(["a", "b", "c", "d", "e"], [[
        ok("a"), failed("b", "auth"), failed("c", "auth"), failed("d", "unsupported", mdformat.FAILURE_INFERENCE)]])
    assert mdformat.failure_counts(merged) == {"auth": 2, "unsupported": 1, "not_processed": 1}
    assert mdformat.summarize(merged, 0.2)["failed"] == 4  # summarize's keys are unchanged


def test_every_reason_has_a_kind_and_kinds_decide_finality() -> None:
    assert set(contract.FAILURE_REASONS.values()) == {contract.RETRYABLE, contract.PERMANENT}
    for reason, kind in contract.FAILURE_REASONS.items():
        assert contract.is_final(failed("x", reason)) == (kind == contract.PERMANENT)
    assert contract.is_final(ok("x")) and contract.failure_kind(ok("x")) is None
    # a kind the entry states wins; a reason alone decides when the kind is absent
    assert contract.failure_kind({"file": "x", "failure": "f", "failure_reason": "auth"}) == contract.RETRYABLE


def test_shard_results_read_attempts_with_the_same_rules() -> None:
    """``activities.shard_results`` (coverage for the poll, ``done_images`` for the resubmission) over stored
    attempts, with a stand-in for the blob store."""
    import json
    from types import SimpleNamespace

    from activities.shard_results import done_images, shard_coverage
    from gpu_batch import layout

    class Store:
        def __init__(self, blobs: dict[str, Any]) -> None:
            self.blobs = {name: json.dumps(doc).encode() for name, doc in blobs.items()}

        def list_names(self, container: str, prefix: str = "") -> list[str]:
            return sorted(n for n in self.blobs if n.startswith(prefix))

        def list_etags(self, container: str, prefix: str) -> dict[str, str]:  # no coverage summaries here: parsed
            return {n: "0x1" for n in self.list_names(container, prefix)}

        def read_bytes(self, container: str, name: str) -> bytes:
            return self.blobs[name]

        def read_json(self, container: str, name: str) -> Any:
            return json.loads(self.blobs[name])

        def read_json_or_none(self, container: str, name: str) -> Any:
            return self.read_json(container, name) if name in self.blobs else None

    images = ["a", "b", "c", "d"]
    store = Store({
        layout.manifest_blob("t", "s00000", 1): {"images": images},
        layout.attempt_results_blob("t", "s00000", 1): {"images": [ok("a"), failed("b", "auth"),
                                                                   failed("c", "undecodable")]},
        layout.manifest_blob("t", "s00000", 2): {"images": ["b", "d"]},
        layout.attempt_results_blob("t", "s00000", 2): {"images": [failed("b", "throttled")]},
    })
    settings = SimpleNamespace(container="trapbatch")
    assert shard_coverage(store, settings, "t", "s00000") == {  # type: ignore[arg-type]
        "images": 4, "covered": 2, "failed": 1, "retryable": 1, "missing": 2}
    assert done_images(store, settings, "t", "s00000") == {"a", "c"}  # type: ignore[arg-type]


# ---------------------------------------------------------------- iter_images: the merge's layout, line by line

def merged_file(entries: list[dict[str, Any]], info: dict[str, Any] | None = None) -> bytes:
    """A results file exactly as the merges write it (core.fanin: head, entry fragments, first comma off, tail)."""
    from core import fanin
    body = b"".join(fanin.entry_fragment(e) for e in entries)
    return fanin.results_head(info or {"format_version": "1.6"}) + body[1:] + fanin.RESULTS_TAIL


LAYOUT_ENTRIES: list[dict[str, Any]] = [
    {"file": "caméra/日本/🦊.jpg", "detections": [det(0.91), det(1e-05, "2")], "datetime": "2024:05:01 06:30:00"},
    {"file": "ctrl/a\nb\t\"q\".jpg", "detections": []},
    {"file": "x/failed.jpg", "failure": "image access failure", "detections": None},
    {"file": "x/sizes.jpg", "width": 4000, "height": 3000, "detections": [det(0.0001)]},
]


def read_all(data: bytes, skip: int = 0) -> list[dict[str, Any]]:
    import io
    fp = io.BytesIO(data)
    fp.seek(skip)
    return list(mdformat.iter_images(fp))


def ijson_entries(data: bytes) -> list[dict[str, Any]]:
    import io

    import ijson
    return [e for e in ijson.items(io.BytesIO(data), "images.item", use_float=True) if isinstance(e, dict)]


def layout_values(data: bytes) -> list[Any]:
    """What the line-by-line reader gives for ``data`` (raises ``_NotLayout`` where it leaves the layout)."""
    import io
    return list(mdformat._layout_entries(io.BytesIO(data)))


@pytest.mark.parametrize("entries", [LAYOUT_ENTRIES, LAYOUT_ENTRIES[:1], []])
def test_a_merged_file_is_read_line_by_line(entries: list[dict[str, Any]]) -> None:
    import json
    data = merged_file(entries, {"format_version": "1.6", "note": 'a "images": [ inside\n a string'})
    assert json.loads(data)["images"] == entries  # the fixture is the merge's layout, valid JSON
    assert layout_values(data) == entries  # all of it line by line: ijson never reads it
    assert read_all(data) == entries
    assert read_all(b"junk before" + data, skip=len(b"junk before")) == entries  # from the current position


def test_an_entry_line_that_is_no_single_value_falls_back_to_ijson_after_the_entries_already_given() -> None:
    good = merged_file(LAYOUT_ENTRIES)
    # two entries on one line (valid JSON, not the layout), after two lines that were
    lines = good.split(b"\n")
    at = lines.index(b' "images": [') + 3
    two = lines[:at] + [lines[at] + b" " + lines[at + 1].lstrip()] + lines[at + 2:]
    data = b"\n".join(two)
    assert ijson_entries(data) == LAYOUT_ENTRIES
    with pytest.raises(mdformat._NotLayout):
        layout_values(data)
    assert read_all(data) == LAYOUT_ENTRIES


@pytest.mark.parametrize("data", [
    b'{"images": [{"file": "a"}, 7, {"file": "b"}], "info": {}}',  # MegaDetector's order, one line
    b'{"info": {},\n "images": [\n  {"file": "a"}\n ]\n}\n'.replace(b'"info": {},\n', b'"info": {}, '),
    b'{\n "info": {\n  "images": [\n  {"file": "nested"}\n ]\n}\n, "images": [{"file": "a"}\n ]\n}\n',
])
def test_files_in_other_layouts_read_as_ijson_reads_them(data: bytes) -> None:
    with pytest.raises(mdformat._NotLayout):
        layout_values(data)
    assert read_all(data) == ijson_entries(data)


def test_a_nested_images_key_on_its_own_line_is_not_taken_for_the_top_level_one() -> None:
    data = b'{\n "info": {\n "images": [\n  {"file": "nested"}\n ]\n},\n "images": [\n  {"file": "top"}\n ]\n}\n'
    with pytest.raises(mdformat._NotLayout):
        layout_values(data)
    assert read_all(data) == ijson_entries(data) == [{"file": "top"}]


def test_a_malformed_merged_file_raises_as_ijson_does() -> None:
    import ijson
    data = merged_file(LAYOUT_ENTRIES).replace(b"},\n  {", b"}\n  {", 1)  # a missing comma
    with pytest.raises(ijson.JSONError):
        read_all(data)


def test_summarize_counts_odd_detections_as_the_plain_reading_does() -> None:
    """The fast path for dicts with float confs counts as the isinstance reading: numbers only (bools count),
    NaN never reaches the threshold, non-dict detections are skipped."""
    rng = random.Random(9)
    odd = [0, 1, 0.0005, 1e-05, 0.0, -0.0, 1.0, 0.2, 0.19999, float("nan"), float("inf"), True, False, "0.3", None, 2]

    def plain(images: list[dict[str, Any]], threshold: float) -> dict[str, int]:
        counts = {"images": 0, "failed": 0, "with_detections": 0, "detections": 0, "empty": 0}
        for im in images:
            counts["images"] += 1
            if im.get("failure") is not None:
                counts["failed"] += 1
                continue
            above = [d for d in im.get("detections") or []
                     if isinstance(d, Mapping) and isinstance(d.get("conf"), (int, float)) and d["conf"] >= threshold]
            counts["detections"] += len(above)
            counts["with_detections" if above else "empty"] += 1
        return counts

    for _ in range(3000):
        images: list[dict[str, Any]] = []
        for _ in range(rng.randint(0, 20)):
            im: dict[str, Any] = {"file": "f"}
            if rng.random() < 0.2:
                im["failure"] = rng.choice(["x", None])
            im["detections"] = rng.choice([None, [], [
                rng.choice([None, 1, "s"]) if rng.random() < 0.05 else
                {"conf": rng.choice(odd) if rng.random() < 0.3 else rng.random()} for _ in range(rng.randint(0, 5))]])
            images.append(im)
        for threshold in (0.2, 0, 1, 0.0005):
            assert mdformat.summarize(images, threshold) == plain(images, threshold), images


@pytest.mark.parametrize("ending", [
    b",\n ]\n}\n",  # the last entry's line keeps its comma
    b"\n ]\n}\n{\"images\": [\n ]\n}\n",  # a second document after the first, ending as the merge ends
])
def test_a_merged_file_broken_at_its_end_raises_as_ijson_does(ending: bytes) -> None:
    """The line-by-line reader checks the end too (no comma after the last entry, nothing after the object):
    it must not hand back entries of a file ijson refuses."""
    import ijson
    good = merged_file(LAYOUT_ENTRIES)
    data = good[:-len(mdformat.RESULTS_TAIL)] + ending
    with pytest.raises(ijson.JSONError):
        ijson_entries(data)
    with pytest.raises(ijson.JSONError):
        read_all(data)


def test_results_head_finds_fields_after_images_in_a_file_not_written_by_the_merge() -> None:
    """MegaDetector's own files may hold ``images`` first: the head is read to the end, not cut at ``images``."""
    import io
    data = b'{"images": [{"file": "a", "detections": []}], "info": {"format_version": "1.6"}}'
    assert mdformat.results_head(io.BytesIO(data)) == {"info": {"format_version": "1.6"}}


# ---------------------------------------------------------------- validate: each check rejects (the integration
# tests' oracle for every results file, so a check that stopped rejecting would make them unable to fail)

def _valid_doc() -> dict[str, Any]:
    return mdformat.build_output([{"file": "a", "detections": [det(0.5)]},
                                  mdformat.failure_entry("b", mdformat.FAILURE_IMAGE_ACCESS)], {"detector": "m"})


def _broken(change: str) -> dict[str, Any]:
    doc = _valid_doc()
    ok = doc["images"][0]
    if change == "category id not a number":
        doc["detection_categories"] = {"animal": "animal"}
        ok["detections"][0]["category"] = "animal"
    elif change == "blank category name":
        doc["detection_categories"] = {**doc["detection_categories"], "1": "  "}
    elif change == "format_version not a string":
        doc["info"]["format_version"] = 1.6
    elif change == "no detection_categories":
        del doc["detection_categories"]
    elif change == "unmapped category":
        ok["detections"][0]["category"] = "9"
    elif change == "failure not a string":
        doc["images"][1]["failure"] = 7
    elif change == "detections not a list":
        ok["detections"] = "none"
    elif change == "no file":
        del ok["file"]
    elif change == "bbox of five numbers":
        ok["detections"][0]["bbox"] = [0.1, 0.2, 0.3, 0.4, 0.5]
    return doc


# the changes MegaDetector's validate_batch_results refuses too (the others are trapbatch's own checks)
MD_REFUSES = ["category id not a number", "blank category name", "format_version not a string",
              "no detection_categories", "unmapped category", "failure not a string", "detections not a list",
              "no file"]


@pytest.mark.parametrize("change", [*MD_REFUSES, "bbox of five numbers"])
def test_validate_rejects_each_breach_of_the_format(change: str) -> None:
    from megadetector.postprocessing.validate_batch_results import validate_batch_results

    mdformat.validate(_valid_doc(), expected_files=["a", "b"])
    doc = _broken(change)
    with pytest.raises(mdformat.FormatError):
        mdformat.validate(doc)
    if change in MD_REFUSES:  # our check mirrors one of MegaDetector's
        assert validate_batch_results(doc)["validation_results"]["errors"]


def test_validate_rejects_an_image_the_task_did_not_list() -> None:
    with pytest.raises(mdformat.FormatError, match="unexpected"):
        mdformat.validate(_valid_doc(), expected_files=["a"])


# ---------------------------------------------------------------- per-image rules (a mutation audit found them unpinned)

def test_of_two_successes_the_first_attempts_detections_are_kept() -> None:
    """``merge_entries``: a success from any attempt wins, the first one (a shard run again must not change the
    detections of an image that had its result)."""
    first, second = {"file": "a", "detections": [det(0.9)]}, {"file": "a", "detections": [det(0.4)]}
    merged, missing = mdformat.merge_entries(["a"], [[first], [second]])
    assert merged == [first] and missing == 0


def test_an_image_listed_twice_gets_one_entry_and_counts_missing_once() -> None:
    merged, missing = mdformat.merge_entries(["a", "b", "a", "b"], [[ok("a")]])
    assert [m["file"] for m in merged] == ["a", "b"] and missing == 1


def test_an_entry_without_a_string_file_name_is_dropped_and_does_not_stop_the_merge() -> None:
    odd = [{"file": ["a"], "detections": []}, {"file": None, "detections": []}, {"detections": []}, ok("a")]
    merged, missing = mdformat.merge_entries(["a"], [odd])
    assert merged == [ok("a")] and missing == 0


def test_summarize_reads_detections_of_any_mapping_type_and_counts_a_confidence_at_the_threshold() -> None:
    from types import MappingProxyType

    images = [{"file": "a", "detections": [MappingProxyType(det(0.2)), MappingProxyType(det(0.19))]},
              {"file": "b", "detections": [det(0.2)]}]
    assert mdformat.summarize(images, 0.2) == {"images": 2, "failed": 0, "with_detections": 2, "detections": 2,
                                               "empty": 0}


@pytest.mark.parametrize("text", ["\x80", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000",
                                  "\U0001f600", "\U0010ffff", "Zoë/Ávila 🦊.jpg"])
def test_an_entry_is_escaped_exactly_as_json_dumps_with_ensure_ascii(text: str) -> None:
    """MegaDetector writes its results with ``ensure_ascii=True``: the same escapes for every non-ASCII character (the
    edges of each escape's range, the last characters of the planes as the right surrogate pairs)."""
    import json

    from gpu_batch.formats.entries import entry_json

    entry = {"file": text, "detections": []}
    assert entry_json(entry) == json.dumps(entry, ensure_ascii=True, separators=(",", ":")).encode("ascii")


@pytest.mark.parametrize("value, exif", [
    ("2024:05:06 07:08:09", True), ("2024:05:06 07:08:09.5", False), ("2024:05:06T07:08:09", False),
    ("2024-05:06 07:08:09", False), ("2024:05-06 07:08:09", False), ("2024:05:06 07:08:0", False),
    ("2024-05-06 07:08:09", False), (20240506, False), (None, False)])
def test_only_megadetectors_exif_time_form_is_an_exif_time(value: Any, exif: bool) -> None:
    """The CSV rewrites such a time's date with dashes and the preview compares them as text: any other form must be
    left alone (``detections_csv.capture_time``, ``previewsample``)."""
    from gpu_batch.formats.detections_csv import capture_time
    from gpu_batch.formats.entries import is_exif_time

    assert is_exif_time(value) is exif
    if exif:
        assert capture_time({"datetime": value}) == "2024-05-06 07:08:09"
    elif isinstance(value, str):
        assert capture_time({"datetime": value}) == value


@pytest.mark.parametrize(("model", "detector"), [
    ("MDV5A", "MDV5A"), ("blob://models/md_v5a.0.0.pt", "md_v5a.0.0.pt"),
    ("/srv/models/md_v5a.0.0.pt", "md_v5a.0.0.pt"), ("C:\\models\\md_v5b.0.0.pt", "md_v5b.0.0.pt"),
    ("https://example.org/releases/md_v5a.0.0.pt?sv=2024&sig=SECRET", "md_v5a.0.0.pt"), ("", "unknown")])
def test_the_results_detector_is_the_checkpoints_file_name_never_its_folders_or_a_urls_query(model: str,
                                                                                             detector: str) -> None:
    """``info.detector`` as MegaDetector writes it (the file name): a Windows path kept its folders, a URL its query
    (a SAS token would have been written into the results file)."""
    from activities.merge import _results_info
    from core.mdformat import detector_file

    assert detector_file(model) == detector
    info = _results_info("t", model, "2026-12-07T00:00:00Z", {"container": "c"}, None)
    assert info["detector"] == detector and "SECRET" not in str(info)
