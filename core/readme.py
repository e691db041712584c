"""The plain-text README written with each results variant (``README.txt``, ``README.repeats-removed.txt``).

Why: what ecologists take away (the results folder, ``trapbatch results``' download, the results zip) is a dozen
files whose names say little to someone who did not run the task: which one opens in Timelapse, which in a
spreadsheet, which is a Camtrap DP package, at which threshold the CSV counts, how many photos failed. The README
says it in the folder itself, for the files that are there.

This module only writes the text, from the facts and the file names it is given (``activities.readme`` reads them
from storage): so the README can never list a file that was not found, nor leave one out; a name it has no words
for still gets a line. Bounded for any task: a run of numbered Zooniverse batches is one line, so the text stays
about 40-80 lines whatever the size of the task.

Must not: hold a secret, a SAS or a key (the facts carry names only: the container, the prefix, the account's
endpoint, never the request's credential secret or its name), or a line for a file absent from ``files``.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlsplit

from core import mdformat

WIDTH = 100  # columns: a terminal's or Notepad's window without wrapping
_INDENT = "    "
_BATCH = re.compile(r"(?P<folder>(?:.*/)?zooniverse/)batch-(?P<n>\d{3,})\.csv")
_THRESHOLD_CSV = re.compile(r"detections(?:\.[a-z-]+)?\.threshold-(?P<t>[0-9.e+-]+)\.csv")
CAMTRAP_DP_TABLES = {
    "datapackage.json": "describes the package and names its tables",
    "deployments.csv": "one row per camera deployment (its folder, first and last photo)",
    # filePath is the photo's URL: Camtrap DP's "URL ... for externally hosted files" (gpu_batch.formats.camtrapdp)
    "media.csv": ("one row per photo (capture time; filePath, its URL in the images' container named above: "
                  "the photos are not in the package)"),
    # observationType in Camtrap DP's words (camtrapdp.OBSERVATION_TYPES: a person is "human"); the two levels
    # describe the same animals (the package's description says so too), so a sum over both counts them twice
    "observations.csv": ("what was seen per photo (observationLevel media) and per visit (event): observationType "
                         "animal, human (a person), vehicle, blank or unknown (another category; a photo cut short, "
                         "nothing detected). Both levels see the same animals: count one level"),
}


@dataclass(frozen=True, slots=True)
class ReadmeFacts:
    """What a reader needs to know besides the files. Counts are of the results file's images."""

    task_id: str
    generation: str  # "" for the task's first run, else the re-run's id
    variant: str  # "" or "repeats-removed"
    request_name: str
    container: str  # the images' container
    prefix: str
    account_url: str  # the images' storage account endpoint when not the app's own ("" otherwise)
    image_list: str  # the blob listing the images, when the request named one
    model: str  # as the request named it (MDV5A, blob://models/x.pt, or the app's default: maybe a path)
    detector: str  # the checkpoint's file name, as the results' info.detector says it
    threshold: float  # of detections.csv, the exports and the page as the task made them
    page_threshold: float | None  # the preview page's threshold now, when a re-render moved it
    images: int
    failed: int
    damaged: int  # photos cut short (damaged.csv)
    detected: str  # info.detection_completion_time (UTC)
    removed_places: int | None  # the repeats-removed variant: how many places' detections were removed
    not_images: str  # the listing's files that are not images, in one sentence ("" when none)
    published: bool  # the preview pages were on the website when this README was written
    written: str  # ISO 8601, UTC


def readme_name(variant: str) -> str:
    """The README's file name in the results folder (``gpu_batch.layout.readme_blob``)."""
    return f"README.{variant}.txt" if variant else "README.txt"


def model_name(model: str) -> str:
    """The model as its users know it: a published name (``MDV5A``) and a ``blob://<container>/<name>`` checkpoint
    as the request named them; a checkpoint file (the app's default TRAPBATCH_MODEL may be a path on the server or
    on the nodes, e.g. a node's model cache) and a URL by their file name alone.

    Why: the README goes with the results to people who did not run the task; a path names where one machine keeps
    the file (``/home/<user>/.cache/...``), which says nothing to them and is not theirs to see (as the API's
    ``default_model_label`` names the default checkpoint to callers). A URL loses its query too (a SAS is no part of
    the name)."""
    ref = model.strip()
    if ref.startswith("blob://"):
        return ref
    if "://" in ref:
        ref = urlsplit(ref).path
    return ref.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or ref


def _number(n: int, one: str, many: str = "") -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _wrap(text: str, first: str = "", rest: str = _INDENT) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                         break_on_hyphens=False) or [first.rstrip()]


def _field(label: str, text: str) -> list[str]:
    return _wrap(text, f"{label + ':':<12}", " " * 12)


def describe(path: str, facts: ReadmeFacts) -> str:
    """What the file at ``path`` (relative to the results folder) holds and what opens it."""
    task, t = facts.task_id, f"{facts.threshold:g}"
    file = path.rsplit("/", 1)[-1]
    threshold = _THRESHOLD_CSV.fullmatch(file)
    if file.startswith("README") and file.endswith(".txt"):
        return "This file." if file == readme_name(facts.variant) else "What the files of the other results are."
    if threshold is not None:
        return (f"As the task's CSV, with detections counted at threshold {threshold.group('t')} (a re-render asked "
                "for it: trapbatch previews <task> --threshold). Opens in a spreadsheet.")
    if file.startswith("detections") and file.endswith(".json"):
        return ("Every image once, with its boxes, categories (animal, person, vehicle) and confidences, or why it "
                "failed: MegaDetector's batch output format 1.6, with the detections below the threshold too. "
                "Timelapse imports it as its recognitions; MegaDetector's postprocessing tools read it "
                "(postprocess_batch_results, repeat detection elimination).")
    if file.startswith("detections") and file.endswith(".csv"):
        return (f"One row per image: folder, capture time (the camera's clock, from EXIF, no time zone), ok or "
                f"failed and why, animals, people and vehicles at threshold {t} and the best confidence of each "
                "(0 to 1, to apply another threshold). Opens in a spreadsheet (Excel: Data > From Text/CSV, "
                "UTF-8). A name starting with =, +, -, @ or ' has a ' added so that no spreadsheet runs it (in "
                "every CSV here but Zooniverse manifests and data package tables): remove one to get the name.")
    if file == "damaged.csv":
        return ("The photos cut short (a JPEG without its end: a camera that lost power, a partial copy), one per "
                "row. They were detected as far as they go; copy them again from the cards. A spreadsheet.")
    if file == "repeated-detections.json":
        return ("The same box in many images of one folder, usually a rock or branch rather than an animal "
                f"(MegaDetector's repeat detection rules). trapbatch repeats {task} lists them and removes those "
                "that are not animals.")
    if "/camtrap-dp/" in f"/{path}" and file != "datapackage.json":
        return f"Camtrap DP table: {CAMTRAP_DP_TABLES.get(file, 'a file of the package')}."
    if "/camtrap-dp/" in f"/{path}":
        return (f"Camtrap DP package (the folder), detections at threshold {t}; this file "
                f"{CAMTRAP_DP_TABLES[file]}. R's camtraptor (read_camtrap_dp) or camtrapdp reads it, for camtrapR "
                "and occupancy work; GBIF publishes it (through its IPT).")
    if file == "coco.json":
        return (f"COCO Camera Traps: the images and their boxes at threshold {t}, for training a classifier or "
                "sharing on LILA BC; MegaDetector's tools and any COCO reader open it.")
    if file == "camera-visits.csv":
        # first_capture and last_capture are the Camtrap DP timestamps (camtrapdp.camtrap_timestamp): in the task's
        # utc_offset, else marked +00:00 though they are the cameras' clocks; the counts are of timed photos only
        return ("A row per camera: its first and last photo (in the task's utc_offset, else the cameras' clocks "
                "marked +00:00, not UTC), its photos with a capture time, its visits (photos close in time) with "
                "an animal, a person, a vehicle, another kind or a photo cut short with nothing seen (unknown), and "
                "blank ones. A visit counts once in each kind it had (an animal and a person: in both; an animal "
                "and such a photo: animal and unknown), so those columns may add up to more than its visits; a "
                "blank visit had none of them. Opens in a spreadsheet.")
    if file == "camera-days.csv":
        return ("A row per camera and day: its photos with a capture time and visits by kind (counted as in "
                "camera-visits.csv), for trap effort, detection histories (camtrapR, occupancy). A spreadsheet.")
    if _BATCH.fullmatch(path) is not None:
        return (f"Zooniverse subject manifests: trapbatch zooniverse {task} puts the photos beside them, fit for "
                "upload, and prints the Zooniverse panoptes CLI command that uploads each "
                "(panoptes subject-set upload-subjects). Failed photos and photos cut short are left out.")
    return "Another file of these results."


def _grouped(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(shown name, the path it stands for) in order: each run of consecutively numbered Zooniverse batches of one
    folder is one name, ``zooniverse/batch-001.csv ... batch-120.csv (120 files)``; every other path is itself."""
    out: list[tuple[str, str]] = []
    run: list[tuple[str, int, str]] = []

    def flush() -> None:
        if not run:
            return
        first, last = run[0][2], run[-1][2]
        shown = first if len(run) == 1 else f"{first} ... {last.rsplit('/', 1)[-1]} ({len(run)} files, numbered " \
                                             "without a gap)"
        out.append((shown, first))
        run.clear()

    for path in paths:
        m = _BATCH.fullmatch(path)
        if m is not None and run and run[-1][0] == m.group("folder") and run[-1][1] + 1 == int(m.group("n")):
            run.append((m.group("folder"), int(m.group("n")), path))
            continue
        flush()
        if m is not None:
            run.append((m.group("folder"), int(m.group("n")), path))
        else:
            out.append((path, path))
    flush()
    return out


def _order(path: str) -> tuple[int, str]:
    """README first, the results file, its CSV, the CSVs at other thresholds, the lists beside them, then the
    exports; by name within each."""
    if "/" in path:
        return 9, path
    ranks = ((r"README.*", 0), (r"detections[^/]*\.threshold-[^/]*\.csv", 3), (r"detections[^/]*\.json", 1),
             (r"detections[^/]*\.csv", 2))
    return next((rank for pattern, rank in ranks if re.fullmatch(pattern, path)), 5), path


PREVIEW_LABEL = "Preview:"


def pages_gone(text: str, when: str) -> str | None:
    """README ``text`` with its Preview field saying the pages were taken off the web at ``when`` (ISO 8601, UTC);
    None when the text has no Preview field to restate.

    Why: the field says whether the pages were published when the README was written, and nothing rewrote it when
    they went (``DELETE .../previews``, an expiry, a re-run's promotion): the README kept saying a page was there.
    Those deletions run where the README's facts cannot be gathered again (the HTTP edge may not import the
    activities that gather them), and every other fact stands, so only this field is restated. The field is the
    ``Preview:`` line and its continuation lines (``_field``'s indent); the rest of the text is kept byte for byte."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(PREVIEW_LABEL)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and lines[end].startswith(" " * 12):
        end += 1
    field = _field("Preview", f"taken off the web at {when} (deleted or expired): its address no longer works; "
                              "these results are unchanged")
    return "\n".join([*lines[:start], *field, *lines[end:]])


def readme_text(facts: ReadmeFacts, files: Sequence[str]) -> str:
    """The README of one results variant: the facts, then each path of ``files`` (relative to the results folder,
    as the download and the zip hold them) with what it holds and what opens it."""
    title = f"trapbatch results: {facts.request_name or facts.task_id}"
    if facts.variant:
        title += f" ({facts.variant})"
    lines = [title, "=" * min(len(title), WIDTH), ""]
    lines += _wrap("MegaDetector's detections for the camera-trap photos of one trapbatch task. Every file of these "
                   "results is listed below, with what it holds and what opens it; paths are relative to this "
                   "folder (in the results zip, to the folder named for the task).", "", "")
    if facts.removed_places is not None:
        lines += _wrap(f"These are the results with the repeated detections at {_number(facts.removed_places, 'place')}"
                       " removed (their confidence negated, so every threshold drops them, as MegaDetector's repeat "
                       "detection elimination does); README.txt describes the original results.", "", "")
    lines.append("")
    where = f'container "{facts.container}"' + (f', prefix "{facts.prefix}"' if facts.prefix else "")
    if facts.image_list:
        where += f', the images listed in "{facts.image_list}"'
    if facts.account_url:
        where += f", account {facts.account_url}"
    lines += _field("Task", facts.task_id + (f" (re-run {facts.generation})" if facts.generation else ""))
    lines += _field("Photos", where)
    name = model_name(facts.model) or facts.detector
    model = name + (f" ({facts.detector})" if facts.detector and facts.detector != name else "")
    if mdformat.detector_version(facts.model) == mdformat.UNKNOWN_VERSION:  # as the exports' classifiedBy says it
        model += f", {mdformat.NO_RELEASE}: its boxes are only as good as its weights (a fine-tuned model's, or random)"
    lines += _field("Model", f"{model}; MegaDetector finds animals, people and vehicles, not species")
    lines += _field("Threshold", f"{facts.threshold:g}: detections at or above it count in the CSV, the exports and "
                                 "the preview; detections.json keeps those below it too, each with its confidence"
                    + (f" (the preview page was last drawn at {facts.page_threshold:g})"
                       if facts.page_threshold is not None else ""))
    counted = [_number(facts.images, "image")]
    if facts.failed:
        counted.append(f"{facts.failed:,} failed (not detected: the failure says why)")
    if facts.damaged:
        counted.append(f"{facts.damaged:,} cut short (damaged.csv)")
    lines += _field("Images", ", ".join(counted))
    if facts.not_images:
        lines += _field("Not run", facts.not_images)
    lines += _field("Detected", f"{facts.detected} UTC" if facts.detected else "unknown")
    lines += _field("Preview", ("published on the web when this file was written: GET /api/tasks/<task>/results "
                                f"gives its address, trapbatch results {facts.task_id} --previews saves it as "
                                "previews/index.html for a browser") if facts.published else
                    "not published (deleted, expired, or never made): no preview pages")
    lines += _field("Written", f"{facts.written}, by the step that publishes the results; written again when a "
                               "re-render, a repeat search or a repeat removal changes these files")
    lines += ["", "Files", "-----"]
    for shown, path in _grouped(sorted(files, key=_order)):
        lines.append(shown)
        lines += _wrap(describe(path, facts), _INDENT, _INDENT)
    return "\n".join(lines) + "\n"
