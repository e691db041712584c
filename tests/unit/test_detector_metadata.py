"""``info.detector_metadata``: the same version and thresholds MegaDetector's own code derives for a model name.

MegaDetector (installed for the tests as an oracle) is the reference: its ``get_detector_version_from_filename`` and
``known_models`` decide, and its ``get_typical_confidence_threshold_from_results`` must read our value back.
"""
from __future__ import annotations

import pytest

from core import mdformat

from megadetector.detection import run_detector  # the oracle (requirements/oracle.txt)

NAMES = ["MDV5A", "MDV5B", "mdv5a", "md_v5a.0.0.pt", "md_v5b.0.0.pt", "/models/md_v5a.0.1.pt",
         "blob://models/md_v5b.0.1.pt", "MDV1000-REDWOOD", "MDV1000-SPRUCE", "md_v1000.0.0-redwood.pt",
         "md_v1000.0.0-spruce.pt", "v1000-larch", "md_v4.1.0.pb", "megadetector_v3.pb", "mystery.pt", "",
         "C:\\models\\md_v5a.0.0.pt", "cedar", "md1000-sorrel.pt"]


@pytest.mark.parametrize("name", NAMES)
def test_version_and_thresholds_agree_with_megadetector(name: str) -> None:
    expected_version = run_detector.get_detector_version_from_filename(name.replace("\\", "/"))
    meta = mdformat.detector_metadata(name)
    assert meta["megadetector_version"] == expected_version
    theirs = run_detector.get_detector_metadata_from_version_string(expected_version)
    for key in ("typical_detection_threshold", "conservative_detection_threshold"):
        if key in theirs:  # where MegaDetector publishes a value, it is ours
            assert meta[key] == theirs[key]
    # and MegaDetector's tools read back the same default threshold from our info block
    assert run_detector.get_typical_confidence_threshold_from_results(
        {"info": {"detector": name, "detector_metadata": meta}}) == mdformat.typical_threshold(name)


@pytest.mark.parametrize("name", NAMES)
def test_without_published_values_we_write_megadetectors_fallbacks(name: str) -> None:
    meta = mdformat.detector_metadata(name)
    theirs = run_detector.get_detector_metadata_from_version_string(meta["megadetector_version"])
    if "typical_detection_threshold" not in theirs:
        # what MegaDetector's tools apply to a results file that has no threshold for this model
        assert meta["typical_detection_threshold"] == run_detector.fallback_detection_threshold
    assert 0 < meta["conservative_detection_threshold"] <= meta["typical_detection_threshold"]


def test_typical_thresholds_per_family() -> None:
    assert mdformat.typical_threshold("MDV5A") == 0.2 and mdformat.typical_threshold("MDV1000-REDWOOD") == 0.3
    assert mdformat.detector_metadata("MDV5B")["conservative_detection_threshold"] == 0.05
    assert mdformat.detector_metadata("mystery.pt")["megadetector_version"] == "unknown"


@pytest.mark.parametrize("iso,expected", [("2026-12-01T10:04:05.123456+00:00", "2026-12-01 10:04:05"),
                                          ("2026-12-01T11:04:05+01:00", "2026-12-01 10:04:05"),
                                          ("2026-12-01T10:04:05", "2026-12-01 10:04:05"),
                                          ("yesterday", "yesterday")])
def test_completion_time_in_megadetectors_format(iso: str, expected: str) -> None:
    assert mdformat.completion_time(iso) == expected
    if expected != "yesterday":  # and it parses back with that very format
        from datetime import datetime

        assert datetime.strptime(mdformat.completion_time(iso), "%Y-%m-%d %H:%M:%S")


def test_the_version_comes_from_the_file_name_not_the_folders_above_it() -> None:
    """A folder name holding another version's string (``models-v2``, ``models-v4``, with ``/`` or Windows ``\\``)
    does not decide: MegaDetector reads the file's base name."""
    assert mdformat.detector_version("blob://models-v2/md_v5a.0.0.pt") == "v5a.0.1"
    assert mdformat.detector_version("C:\\models-v4\\md_v5a.0.0.pt") == "v5a.0.1"


def test_observations_of_a_model_of_no_known_release_name_its_file_not_megadetector_unknown() -> None:
    """Camtrap DP's ``classifiedBy`` (and the package's "made by"): a MegaDetector release by its version; any other
    model by the file that ran, said to be no known release. 'MegaDetector unknown' read as MegaDetector of some
    version for the demo's random weights (meaningless detections) and named nothing to look up."""
    from activities.exports import ExportContext
    from core import zooniverse

    assert mdformat.classified_by("MDV5A") == "MegaDetector v5a.0.1"
    assert mdformat.classified_by("blob://models/md_v1000.0.0-redwood.pt") == "MegaDetector v1000.0.0-redwood"
    assert mdformat.classified_by("C:\\models\\custom.pt") == "custom.pt (no known MegaDetector release)"
    assert mdformat.classified_by("/srv/.cache/models/demo-yolov5n-random.pt", "demo-yolov5n-random.pt") == (
        "demo-yolov5n-random.pt (no known MegaDetector release)")
    # the file that ran (the results' info.detector) over the requested model's name; no stray blanks, and a name
    # even for a model given as nothing or a folder
    assert mdformat.classified_by("blob://models/custom.pt", "custom-finetuned.pt") == (
        "custom-finetuned.pt (no known MegaDetector release)")
    assert mdformat.classified_by(" custom.pt\n") == "custom.pt (no known MegaDetector release)"
    assert mdformat.classified_by("") == mdformat.classified_by("blob://models/") == (
        "an unnamed model (no known MegaDetector release)")
    ctx = ExportContext("task-x", "", "c", {"model": "/srv/.cache/models/demo-yolov5n-random.pt"}, {},
                        {"detector": "demo-yolov5n-random.pt"}, dict(mdformat.DETECTION_CATEGORIES),
                        "/srv/.cache/models/demo-yolov5n-random.pt", 0.2, "2026-12-01 10:00:00", "demo",
                        zooniverse.ManifestOptions(threshold=0.2), 0, "")
    builder = ctx.camtrap()
    assert builder.classified_by == "demo-yolov5n-random.pt (no known MegaDetector release)"
    description = builder.descriptor("n", "t", "2026-12-01T10:00:00Z", [{"title": "t"}])["description"]
    assert "made by demo-yolov5n-random.pt (no known MegaDetector release)" in description
