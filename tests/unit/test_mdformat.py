from __future__ import annotations

import pytest

from core import mdformat


def det(conf: float, cat: str = "1") -> dict[str, object]:
    return {"category": cat, "conf": conf, "bbox": [0.1, 0.2, 0.3, 0.4]}


def test_merge_keeps_manifest_order_fills_from_later_attempts_and_marks_missing() -> None:
    attempt1 = [{"file": "a", "detections": [det(0.9)]}, {"file": "b", "failure": "image access failure",
                                                          "detections": None}]
    attempt2 = [{"file": "c", "detections": []}, {"file": "b", "detections": [det(0.3)]}, {"file": "zz", "detections": []}]
    merged, missing = mdformat.merge_entries(["a", "b", "c", "d"], [attempt1, attempt2])
    assert [m["file"] for m in merged] == ["a", "b", "c", "d"]
    assert merged[1]["detections"][0]["conf"] == 0.3  # success beats an earlier failure
    assert merged[3] == {"file": "d", "failure": mdformat.FAILURE_INFERENCE, "detections": None}
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


def test_summarize_counts_above_threshold() -> None:
    images = [{"file": "a", "detections": [det(0.9), det(0.1)]}, {"file": "b", "detections": [det(0.1)]},
              mdformat.failure_entry("c", "x")]
    assert mdformat.summarize(images, 0.2) == {"images": 3, "failed": 1, "with_detections": 1, "detections": 1,
                                               "empty": 1}


def test_summarize_skips_malformed_detections() -> None:
    from core.mdformat import summarize

    images = [{"file": "a.jpg", "detections": [{"category": "1", "conf": None}, "x", {"category": "1", "conf": 0.5}]}]
    assert summarize(images, 0.2) == {"images": 1, "failed": 0, "with_detections": 1, "detections": 1, "empty": 0}
