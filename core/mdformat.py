"""MegaDetector batch output format 1.6: build, merge and validate.

The format (https://lila.science/megadetector-output-format) is what Timelapse, MegaDetector's postprocessing and every
downstream camera-trap tool read, so trapbatch writes exactly it. ``validate`` mirrors the checks of MegaDetector's
``validate_batch_results`` (the test suite also runs that function on our output), plus trapbatch's own promise:
every listed image appears exactly once.

Failed entries carry, besides MegaDetector's ``failure`` string, trapbatch's ``failure_kind`` (retryable or
permanent) and ``failure_reason`` (``gpu_batch.manifest`` defines them, since the worker writes them): they decide
which attempt's entry the merge keeps, which images a shard still misses, and the counts by reason.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping  # typing's isinstance is slow (per detection)
from typing import IO, Any
from urllib.parse import urlsplit

import ijson

from gpu_batch import manifest as contract
from gpu_batch.formats import jsonio
# the merge's per-image rules, shared with the GPU worker's merge view; re-exported here for the app's modules
from gpu_batch.formats.entries import DETECTION_CATEGORIES as DETECTION_CATEGORIES
from gpu_batch.formats.entries import FAILURE_IMAGE_ACCESS as FAILURE_IMAGE_ACCESS
from gpu_batch.formats.entries import FAILURE_INFERENCE as FAILURE_INFERENCE
from gpu_batch.formats.entries import FORMAT_VERSION as FORMAT_VERSION
from gpu_batch.formats.entries import best_entries as best_entries
from gpu_batch.formats.entries import failure_counts as failure_counts
from gpu_batch.formats.entries import failure_entry as failure_entry
from gpu_batch.formats.entries import has_failure as has_failure
from gpu_batch.formats.entries import merge_entries as merge_entries
from gpu_batch.formats.entries import summarize as summarize



class FormatError(ValueError):
    """A results document breaks the MegaDetector format."""


def build_output(images: list[dict[str, Any]], info: Mapping[str, Any],
                 detection_categories: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Assemble a format-1.6 document; ``images`` must already be in output order."""
    return {
        "info": {**info, "format_version": FORMAT_VERSION},
        "detection_categories": dict(detection_categories or DETECTION_CATEGORIES),
        "images": images,
    }


def final_files(attempts: Iterable[Iterable[Mapping[str, Any]]]) -> set[str]:
    """Names that must not be run again: a success or a permanent failure in some attempt."""
    return {name for name, entry in best_entries(attempts).items() if contract.is_final(entry)}


def coverage(manifest_images: Iterable[str], attempts: Iterable[Iterable[Mapping[str, Any]]]) -> dict[str, int]:
    """How far a shard's attempts got, over its manifest's images (each counted once).

    ``covered``: images with a final entry (success or permanent failure); ``failed``: of those, the permanent
    failures; ``retryable``: images whose best entry is a retryable failure; ``missing``: images not covered (the
    retryable ones and those no attempt wrote anything for), which a resubmission runs again.
    """
    best = best_entries(attempts)
    images = list(dict.fromkeys(manifest_images))
    covered = failed = retryable = 0
    for name in images:
        entry = best.get(name)
        kind = contract.failure_kind(entry) if entry is not None else contract.RETRYABLE
        if kind == contract.RETRYABLE:
            retryable += entry is not None
            continue
        covered += 1
        failed += kind == contract.PERMANENT
    return {"images": len(images), "covered": covered, "failed": failed, "retryable": retryable,
            "missing": len(images) - covered}


def validate(doc: Any, expected_files: Iterable[str] | None = None) -> None:
    """Raise ``FormatError`` if ``doc`` is not valid format-1.6 output (or lacks/duplicates an expected file)."""
    if not isinstance(doc, dict):
        raise FormatError("results must be a JSON object")
    for key in ("info", "images", "detection_categories"):
        if key not in doc:
            raise FormatError(f"results lack the '{key}' field")
    if not isinstance(doc["info"], dict) or not isinstance(doc["info"].get("format_version"), str):
        raise FormatError("info.format_version must be a string such as '1.6'")
    cats = doc["detection_categories"]
    if not isinstance(cats, dict) or not all(isinstance(k, str) and k.isdigit() and isinstance(v, str) and v.strip()
                                             for k, v in cats.items()):
        raise FormatError("detection_categories must map string ids ('1') to non-blank names")
    if not isinstance(doc["images"], list):
        raise FormatError("images must be a list")
    files: list[str] = []
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("file"), str):
            raise FormatError(f"image #{i} has no 'file'")
        files.append(im["file"])
        if im.get("failure") is not None:
            if not isinstance(im["failure"], str):
                raise FormatError(f"{im['file']}: failure must be a string")
            if im.get("detections") is not None:
                raise FormatError(f"{im['file']}: a failed image must have null detections")
            continue
        dets = im.get("detections")
        if not isinstance(dets, list):
            raise FormatError(f"{im['file']}: detections must be a list")
        for det in dets:
            if det.get("category") not in cats:
                raise FormatError(f"{im['file']}: detection category {det.get('category')!r} is not in detection_categories")
            if not isinstance(det.get("conf"), float):
                raise FormatError(f"{im['file']}: conf must be a float")
            bbox = det.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise FormatError(f"{im['file']}: bbox must be [x, y, w, h]")
    if len(set(files)) != len(files):
        dupes = sorted({f for f in files if files.count(f) > 1})[:5]
        raise FormatError(f"images listed more than once: {dupes}")
    if expected_files is not None:
        expected = set(expected_files)
        missing = expected - set(files)
        extra = set(files) - expected
        if missing or extra:
            raise FormatError(f"results do not match the task's images: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(extra)[:5]}")


# ---------------------------------------------------------------- detector metadata (info.detector_metadata)
#
# What MegaDetector writes as ``info.detector_metadata`` (run_detector_batch.write_results_to_file calls
# run_detector.get_detector_metadata_from_version_string on the version its get_detector_version_from_filename finds
# in the model's file name), and what Timelapse and MegaDetector's postprocessing read back as the default thresholds
# (run_detector.get_typical_confidence_threshold_from_results). Values copied from megadetector 10.0.28,
# megadetector/detection/run_detector.py: ``model_string_to_model_version`` (first match wins, so order matters) and
# ``known_models`` (typical / conservative thresholds). MegaDetector publishes no thresholds for MDv1000 spruce, larch,
# cedar and sorrel, nor a conservative one for redwood: there its tools fall back to ``fallback_detection_threshold``
# (0.2), and its ``unknown`` entry says 0.1 for the conservative one; we write those fallbacks, so every results file
# carries both values (tests/unit/test_detector_metadata.py checks the table against the installed package).
_MODEL_STRINGS: tuple[tuple[str, str], ...] = (
    ("mdv2", "v2.0.0"), ("mdv3", "v3.0.0"), ("mdv4", "v4.1.0"), ("mdv5a", "v5a.0.1"), ("mdv5b", "v5b.0.1"),
    ("v2", "v2.0.0"), ("v3", "v3.0.0"), ("v4", "v4.1.0"), ("v4.1", "v4.1.0"), ("v5a.0.0", "v5a.0.1"),
    ("v5b.0.0", "v5b.0.1"), ("v5a.0.1", "v5a.0.1"), ("v5b.0.1", "v5b.0.1"),
    *((f"{prefix}-{tree}", f"v1000.0.0-{tree}") for prefix in ("md1000", "mdv1000", "v1000")
      for tree in ("redwood", "cedar", "larch", "sorrel", "spruce")),
    ("redwood", "v1000.0.0-redwood"), ("spruce", "v1000.0.0-spruce"), ("cedar", "v1000.0.0-cedar"),
    ("larch", "v1000.0.0-larch"), ("mdv5", "v5a.0.1"), ("md5", "v5a.0.1"), ("mdv1000", "v1000.0.0-redwood"),
    ("md1000", "v1000.0.0-redwood"), ("default", "v5a.0.1"), ("megadetector", "v5a.0.1"),
)
# (typical, conservative); None where MegaDetector publishes no value.
_THRESHOLDS: dict[str, tuple[float | None, float | None]] = {
    "v2.0.0": (0.8, 0.3), "v3.0.0": (0.8, 0.3), "v4.1.0": (0.8, 0.3),
    "v5a.0.0": (0.2, 0.05), "v5b.0.0": (0.2, 0.05), "v5a.0.1": (0.2, 0.05), "v5b.0.1": (0.2, 0.05),
    "v1000.0.0-redwood": (0.3, None), "v1000.0.0-spruce": (None, None), "v1000.0.0-larch": (None, None),
    "v1000.0.0-cedar": (None, None), "v1000.0.0-sorrel": (None, None),
}
UNKNOWN_VERSION = "unknown"
FALLBACK_TYPICAL_THRESHOLD = 0.2  # run_detector.fallback_detection_threshold
FALLBACK_CONSERVATIVE_THRESHOLD = 0.1  # run_detector.get_detector_metadata_from_version_string('unknown')


def detector_version(model: str) -> str:
    """MegaDetector's canonical version (``v5a.0.1``) for a model reference, as MegaDetector derives it from a file
    name: the first known string the lower-cased base name contains; ``unknown`` when none does.

    ``model`` is what a request names: ``MDV5A``, ``MDV1000-REDWOOD``, a path, or ``blob://container/md_v5a.0.0.pt``.
    """
    name = model.strip().replace("\\", "/").rsplit("/", 1)[-1].lower()
    for needle, version in _MODEL_STRINGS:
        if needle in name:
            return version
    return UNKNOWN_VERSION


def detector_file(model: str) -> str:
    """``info.detector``: the checkpoint's file name, as MegaDetector writes it, for whatever ``model`` a request or
    the app's TRAPBATCH_MODEL names: a published name as it is (``MDV5A``), a path's or ``blob://`` reference's last
    part, whichever separator the path uses (a Windows path kept its folders), and a URL's without its query (a SAS
    token is no part of a name and must not reach the results file); ``unknown`` for an empty one."""
    ref = model.strip()
    if "://" in ref and not ref.startswith("blob://"):
        ref = urlsplit(ref).path
    return ref.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "unknown"


NO_RELEASE = "no known MegaDetector release"


def classified_by(model: str, detector: str = "") -> str:
    """Who classified an export's observations (Camtrap DP's ``classifiedBy``, "Name or ID of the person or AI
    algorithm", and the package description's "made by"): ``MegaDetector v5a.0.1`` where the model's name says a
    MegaDetector release, as MegaDetector derives it; else the file that ran (``detector``: the results'
    ``info.detector``, else ``model``'s base name) and that it is no known release. Why not ``MegaDetector
    unknown``: that reads as MegaDetector of some version, though such weights may be anyone's (a fine-tuned
    model, or the demo's random ones, whose detections are meaningless), and it names nothing a reader can look up.
    """
    version = detector_version(model)
    if version != UNKNOWN_VERSION:
        return f"MegaDetector {version}"
    name = (detector or model).strip().replace("\\", "/").rsplit("/", 1)[-1] or "an unnamed model"
    return f"{name} ({NO_RELEASE})"


def detector_metadata(model: str) -> dict[str, Any]:
    """``info.detector_metadata`` for results made by ``model``: its MegaDetector version and its typical and
    conservative confidence thresholds (see the table's comment for where they come from and the fallbacks)."""
    typical, conservative = _THRESHOLDS.get(detector_version(model), (None, None))
    return {"megadetector_version": detector_version(model),
            "typical_detection_threshold": FALLBACK_TYPICAL_THRESHOLD if typical is None else typical,
            "conservative_detection_threshold": FALLBACK_CONSERVATIVE_THRESHOLD if conservative is None else conservative}


def typical_threshold(model: str) -> float:
    """The confidence threshold MegaDetector's tools apply by default to results of ``model``: what the preview page
    and the CSV use unless a request sets ``preview_threshold``."""
    return float(detector_metadata(model)["typical_detection_threshold"])


def completion_time(iso: str) -> str:
    """``info.detection_completion_time`` as MegaDetector writes it (run_detector_batch.write_results_to_file:
    ``%Y-%m-%d %H:%M:%S``), from the orchestration clock's ISO 8601 time; UTC, since the orchestration clock is.
    A value that is not ISO 8601 is returned unchanged."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------- reading a results file, streaming

def results_head(fp: IO[bytes]) -> dict[str, Any]:
    """Every top-level field of a results file except ``images`` (``info``, ``detection_categories``...), read with
    ``ijson`` so that memory stays bounded whatever the number of images (the images' events are skipped, never built).

    Reads from the file's current position. trapbatch's merge writes the head first and ``images`` last, ending the
    file with ``RESULTS_TAIL``: in such a file (seekable, with that ending) this stops at the ``images`` key, after a
    few hundred bytes (walking the images' events cost ~40 us per image, as much as an export's own work). Any other
    file is scanned to its end, so fields after ``images`` are found too.
    """
    head: dict[str, Any] = {}
    key: str | None = None
    builder: Any = None
    images_last: bool | None = None
    for prefix, event, value in ijson.parse(fp, use_float=True):
        if prefix == "" and event in ("map_key", "end_map"):
            if builder is not None and key is not None:
                head[key] = builder.value
            builder = None
            key = value if event == "map_key" else None
            if key == "images":
                if images_last is None:
                    images_last = _ends_with_images(fp)
                if images_last:
                    break
            if key is not None and key != "images":
                builder = ijson.ObjectBuilder()
            if event == "end_map":
                break
            continue
        if builder is not None:
            builder.event(event, value)
    return head


RESULTS_TAIL = b"\n ]\n}\n"  # how trapbatch's merge ends a results file: the ``images`` list, then the object


def _ends_with_images(fp: IO[bytes]) -> bool:
    """Whether ``fp`` ends as the merge ends a results file (``images`` its last key); its position is kept."""
    try:
        here = fp.tell()
        try:
            fp.seek(-len(RESULTS_TAIL), 2)
            return fp.read(len(RESULTS_TAIL)) == RESULTS_TAIL
        finally:
            fp.seek(here)
    except (OSError, ValueError):  # not seekable, or shorter than the tail
        return False


IMAGES_LINE = b' "images": [\n'  # the line that opens ``images`` in the merge's layout (core.fanin.results_head)
_IMAGES_END = b" ]\n"  # the line that closes it (RESULTS_TAIL)


class _NotLayout(Exception):
    """The file leaves the merge's layout (``iter_images`` reads it with ijson instead)."""


def iter_images(fp: IO[bytes]) -> Iterator[dict[str, Any]]:
    """The entries of ``images``, one at a time, from the file's current position (numbers as ``float``/``int``).

    A file in the merge's layout (seekable, ending with ``RESULTS_TAIL``; ``IMAGES_LINE`` closing a head that is
    then a JSON object, so ``images`` is a top-level key; one entry per line, ``"  " + entry``, every line but the
    last ending with ``,``) is read line by line with ``gpu_batch.formats.jsonio`` (orjson: about twice as fast as ijson
    here). Anything else (another layout, or any line not of that shape or not one JSON value) is read with ijson from
    the starting position, skipping the entries already given, so the entries, and a malformed file's error, are
    ijson's. Integers beyond 64 bits read as floats on the fast path (``gpu_batch.formats.jsonio``); results hold none.
    """
    start = fp.tell() if _ends_with_images(fp) else None
    given = 0
    if start is not None:
        try:
            for entry in _layout_entries(fp):
                given += 1
                if isinstance(entry, dict):
                    yield entry
            return
        except _NotLayout:
            fp.seek(start)
    for index, entry in enumerate(ijson.items(fp, "images.item", use_float=True)):
        if index >= given and isinstance(entry, dict):
            yield entry


def _layout_entries(fp: IO[bytes]) -> Iterator[Any]:
    """The values of ``images`` in the merge's layout (``iter_images``); raises ``_NotLayout`` where the file
    leaves it (after the values before that point)."""
    head = bytearray()
    for line in fp:
        if line == IMAGES_LINE:
            break
        head += line
    else:
        raise _NotLayout
    try:
        if not isinstance(jsonio.loads(bytes(head) + b'"images": []}'), dict):
            raise _NotLayout
    except ValueError:
        raise _NotLayout from None
    comma = None  # whether the previous entry's line ended with a comma (None: no entry yet)
    for line in fp:
        if line == _IMAGES_END:
            if comma or fp.read() != b"}\n":
                raise _NotLayout
            return
        if comma is False or not line.startswith(b"  {") or not line.endswith(b"\n"):
            raise _NotLayout
        comma = line.endswith(b",\n")
        try:
            value = jsonio.loads(line[:-2] if comma else line[:-1])
        except ValueError:
            raise _NotLayout from None
        yield value
    raise _NotLayout
