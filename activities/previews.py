"""Render the browsable preview site of a task into the static-website container (``$web/<task>-<random>/``).

Replaces the manual "post-processing, then SCP the HTML to the web VM" step: one page per task with the counts,
model and threshold, and per-category samples (detections / near misses / empty / failures) whose boxes are drawn
client-side from embedded JSON, so the confidence threshold is a slider rather than a re-run: the sampled images
regroup as it moves, and the counts follow it exactly when the merge wrote a histogram of each image's top confidence.
Thumbnails (and a larger rendering each opens) are JPEG copies written beside the page (the source container stays private; no SAS is ever embedded); the folder name
carries 128 random bits (``preview_folder``), because the static website itself is public.
The samples come from the side blob the merge wrote while streaming (``gpu_batch.formats.previewsample``): this step
reads a few hundred entries, never the merged file, whatever the task size. They are seeded by the task id, so
re-rendering gives the same page.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import azure.durable_functions as df
from azure.core.exceptions import ResourceNotFoundError
from jinja2 import Environment, FileSystemLoader, select_autoescape

from activities.readme import publish_readme
from activities.superseded import refuse_if_superseded
from adapters import clients
from adapters.block_writer import open_blob
from adapters.blobs import BlobStore
from adapters.compose import delete_prefix
from adapters.image_sizes import detector_rotation
from adapters.preview_folders import existing_preview_folder, forget_folder, preview_folder, withdrawn
from adapters.storage_errors import HANDLED, storage_error
from core import contracts as c
from core import failure_advice, notimages
from core.errors import TrapbatchError
from core.failures import failures_without_secrets
from core.repeats import list_search_id
from core.requests import recorded_search_fields
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats.detections_csv import capture_time, unguarded
from gpu_batch.formats.previewsample import NEAR_MISS_FLOOR
from gpu_batch.manifest import FAILURE_REASON, has_dot_segment

logger = logging.getLogger(__name__)
bp = df.Blueprint()

THUMB_WIDTH = 480
LARGE_WIDTH = 1600  # the rendering a thumbnail opens: big enough to judge a small animal, far smaller than the original
REPEAT_EXAMPLES = 3  # example images per repeated place (MegaDetector's review pages show several)
REPEATS_PICTURED = 400  # places that get example pictures; every place is listed (and can be kept or removed)
PAGE_SIZE = 24  # pictures per page of a section
THUMB_THREADS = 8  # images are fetched and shrunk concurrently: the work is mostly waiting on storage
_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]))


def _renderings(data: bytes) -> tuple[bytes, bytes] | None:
    """(thumbnail, larger rendering) JPEGs of an image, or None when it cannot be decoded at all.

    Truncated JPEGs are loaded with grey fill, as the worker (and MegaDetector) load them for detection: the page must
    show what the detector saw, not a blank slot. Turned as the detector turned it (``detector_rotation``), not by
    ``ImageOps.exif_transpose``: the boxes are relative to the image the detector saw, so a mirrored orientation, or
    a turned grayscale photo (which MegaDetector does not turn), would otherwise get its boxes in the wrong place."""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True  # process-wide, as in gpu_batch.worker.preprocess
    try:
        with Image.open(io.BytesIO(data)) as im:
            rotation = detector_rotation(im)  # of the image as opened: before draft() changes its mode
            im.draft("RGB", (LARGE_WIDTH, LARGE_WIDTH))
            im = im.convert("RGB")
            if rotation:
                im = im.rotate(rotation, expand=True)
            out = []
            for width in (THUMB_WIDTH, LARGE_WIDTH):
                copy = im.copy()
                copy.thumbnail((width, width * 4))
                buf = io.BytesIO()
                copy.save(buf, "JPEG", quality=80)
                out.append(buf.getvalue())
            return out[0], out[1]
    except Exception:  # any undecodable image just gets no thumbnail; the page says so
        return None


def script_json(value: Any) -> str:
    """JSON safe to place inside ``<script>``: blob names are user data, and one named ``</script><script>...``
    must stay a string, not end the script (the same escaping Jinja's ``tojson`` does)."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")


# Why a picture is missing from the page (``_Pictures.missing``): the image is gone since detection, its bytes do
# not decode here, or the read failed (refused, throttled, unreachable: a re-render may get it)
PICTURE_NOT_FOUND = "not_found"
PICTURE_UNDECODABLE = "undecodable"
PICTURE_UNREADABLE = "unreadable"
PICTURE_WORDS = {PICTURE_NOT_FOUND: "no picture: the image is no longer in its container",
                 PICTURE_UNDECODABLE: "no picture: the image does not decode",
                 PICTURE_UNREADABLE: "no picture: the image could not be read for this page"}
MISSING_EXAMPLES = 3  # files named in the status's ``previews.pictures_missing``


class _Pictures:
    """Writes each image's thumbnail and larger rendering once, beside the page, and says how the page links them.

    An image that gets no picture is recorded in ``missing`` (file -> why, ``PICTURE_*``; the first read error in
    ``first_error``): the page says so beside it and the status's ``previews.pictures_missing`` counts them. Why:
    a read refused for every image (the app's identity without a role on a partner's account, an expired SAS) gave
    a page of captions without a single picture and a task that said nothing of it."""

    def __init__(self, store: BlobStore, source_store: BlobStore, settings: Settings, folder: str, source: str,
                 variant: str) -> None:
        self.store, self.source_store, self.settings = store, source_store, settings
        self.folder, self.source, self.variant = folder, source, variant
        self.missing: dict[str, str] = {}
        self.first_error = ""
        self._lock = threading.Lock()

    def _lost(self, file: str, why: str, error: str = "") -> None:
        with self._lock:
            self.missing[file] = why
            if error and not self.first_error:
                self.first_error = f"{file}: {error}"

    def make(self, file: str) -> dict[str, str] | None:
        if not self.source or has_dot_segment(file):  # such a name reads another blob: never publish that one
            return None
        try:
            data = self.source_store.read_bytes(self.source, file)
        except ResourceNotFoundError:  # deleted or renamed since detection: its result stands
            self._lost(file, PICTURE_NOT_FOUND)
            return None
        except Exception as exc:  # noqa: BLE001 - refused, throttled, unreachable: said in the status and the page
            # the storage map's words never carry the request's URL (it may hold a SAS)
            error = storage_error(exc).message if isinstance(exc, HANDLED) else type(exc).__name__
            logger.warning("previews: no picture of %s/%s: %s", self.source, file, error)
            self._lost(file, PICTURE_UNREADABLE, error)
            return None
        made = _renderings(data)
        if made is None:
            self._lost(file, PICTURE_UNDECODABLE)
            return None
        for path, data in zip((layout.thumbnail_path(file), layout.large_rendering_path(file)), made):
            self.store.write_bytes(self.settings.web_container, f"{self.folder}/{path}", data, "image/jpeg")
        return {"thumb": layout.thumbnail_link(file, self.variant),
                "large": layout.large_rendering_link(file, self.variant)}

    def make_all(self, files: list[str]) -> dict[str, dict[str, str]]:
        unique = sorted(set(files))
        with ThreadPoolExecutor(THUMB_THREADS) as pool:
            made = dict(zip(unique, pool.map(self.make, unique)))
        return {f: links for f, links in made.items() if links is not None}

    def report(self, pictured: int) -> dict[str, Any] | None:
        """The status's ``previews.pictures_missing`` (None when every picture was made): how many of the
        ``pictured`` images the page wanted a picture of have none, by why, the first few, the first read error,
        and what to do."""
        if not self.missing:
            return None
        reasons: dict[str, int] = {}
        for why in self.missing.values():
            reasons[why] = reasons.get(why, 0) + 1
        out: dict[str, Any] = {"count": len(self.missing), "of": pictured, "reasons": dict(sorted(reasons.items())),
                               "examples": sorted(self.missing)[:MISSING_EXAMPLES]}
        if self.first_error:
            out["error"] = self.first_error
        if PICTURE_UNREADABLE in reasons:
            out["hint"] = ("the app could not read these images from their container for the page (the GPU nodes "
                           "read them for detection: the results stand): give the app's identity (id-api-*) Storage "
                           "Blob Data Reader on the images' account, or renew the secret the request's "
                           "credential_secret names, then re-render the pages at the task's threshold: POST "
                           "/api/tasks/{id}/previews")
        else:
            out["hint"] = ("the results stand; these images were deleted since detection or do not decode for the "
                           "page, so it shows them without a picture")
        return out


def _repeat_entries(locations: list[dict[str, Any]], links: dict[str, dict[str, str]],
                    missing: Mapping[str, str]) -> list[dict[str, Any]]:
    """The page's repeated places: each with up to ``REPEAT_EXAMPLES`` example pictures, and a note that says which
    examples have no picture and why (``missing``: file -> ``PICTURE_*``, ``_Pictures.missing``). Why: an example
    without a picture was left out of its place's row without a word, so a place showed fewer images than it named
    (or none), and a reviewer could not tell a deleted photo from a page that failed to read it."""
    entries = []
    for k, loc in enumerate(locations):
        files = loc["files"][:REPEAT_EXAMPLES] if k < REPEATS_PICTURED else []
        examples = [{"file": f, **links[f]} for f in files if f in links]
        note = f"{loc['count']} times in {loc['folder'] or '(top folder)'} ({loc['id']})"
        lost = [f for f in files if f not in links]
        if lost:
            why = ", ".join(f"{f} ({PICTURE_WORDS.get(missing.get(f, ''), 'no picture: not read for this page')})"
                            for f in lost)
            note += f"; {len(lost)} of its {len(files)} example pictures not shown: {why}"
        entries.append({
            "file": loc["files"][0] if loc["files"] else "", "examples": examples, "failure": None,
            "location": loc["id"], "note": note,
            "detections": [{"category": loc["category"], "conf": loc["conf_max"], "bbox": loc["bbox"],
                            "always": True}]})
    return entries


def _not_images_note(passed_over: Any) -> dict[str, Any] | None:
    """What the page says of the files the listing passed over: one line, and each kind with advice, an example."""
    if not isinstance(passed_over, dict) or not passed_over.get("files"):
        return None
    kinds = [{"kind": kind, "files": row.get("files", 0), "hint": row["hint"],
              "example": (row.get("examples") or [""])[0]}
             for kind, row in (passed_over.get("kinds") or {}).items() if isinstance(row, dict) and row.get("hint")]
    return {"line": notimages.describe(passed_over), "kinds": kinds}


# Where the repeats list is for a reader of the page: the page is ``previews/index.html`` of a download (``trapbatch
# results --previews``, cli/main.py) and the list ``repeated-detections.json`` beside that folder, as in the results
# zip (``<task>/repeated-detections.json``, adapters/results_bundle.zip_path); the storage path alone was right in
# neither copy, and the website's page cannot link the app's private container.
REPEATS_FILE_NOTE = ("repeated-detections.json, beside this page's folder in a downloaded copy (trapbatch results, "
                     "the results zip)")
def downloaded_path(task_id: str, variant: str, blob: str) -> str:
    """Where the results file ``blob`` is from the page of ``variant`` in a downloaded copy (``trapbatch results
    --previews``): the page is ``previews/index.html`` (a variant's ``previews/<variant>/index.html``,
    ``layout.preview_page``) and the file at its path under the results folder (``cli.download.local_paths``), e.g.
    ``../exports/camera-visits.csv``. Why: the storage path alone names a file in the app's private container,
    which a reader of the downloaded page cannot open and need not look for."""
    return "../" * (2 if variant else 1) + blob.removeprefix(layout.results_prefix(task_id))


CUT_SHORT_NOTE = "cut short: the grey part was never written (damaged.csv)"  # beside such a picture


def _damaged(store: BlobStore, container: str, task_id: str, shown: set[str]) -> tuple[int, set[str]]:
    """How many photos the merge found cut short (``layout.damaged_blob``, written only when there are any; one list
    for both variants), and which of ``shown`` (the page's pictures) are among them. Why the page says so: such a
    photo is detected "as far as it goes" with grey fill, an ordinary success in the results, so a picture of it
    with no word would pass for a whole one, its blank lower part for a blank scene."""
    data = store.read_bytes_or_none(container, layout.damaged_blob(task_id))
    if not data:
        return 0, set()
    rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    next(rows, None)  # the header, "file"
    total, hit = 0, set()
    for row in rows:
        if row and row[0]:
            total += 1
            name = unguarded(row[0])  # the list guards a name a spreadsheet would take for a formula
            if name in shown:
                hit.add(name)
    return total, hit


EARLIEST_PLAUSIBLE_CAPTURE = "2000"  # digital trail cameras came later: an earlier date is a clock never set


def _taken_note(doc: dict[str, Any]) -> dict[str, str] | None:
    """When the photos were taken (the merge's count and span of EXIF capture times), and a warning when a date
    is before 2000 or after the detection: a camera whose clock was never set or was set wrong, which would
    otherwise surface only in an analysis of activity by time of day."""
    span = doc.get("capture_times")
    total = int(doc.get("images") or 0)
    if not isinstance(span, dict) or not total:
        return None  # a sample written before the merge counted capture times
    count = int(span.get("images") or 0)
    if not count:
        return {"line": "No image has a capture time in its EXIF (DateTimeOriginal); the exports date them by the "
                        "detection instead, and say so.", "warn": ""}
    first, last = capture_time({"datetime": span.get("first")}), capture_time({"datetime": span.get("last")})
    line = (f"Taken {first} to {last} (the cameras' clocks, from EXIF): {count} of {total} image"
            f"{'' if total == 1 else 's'}" + ("; the rest have no capture time." if count < total else "."))
    completed = str(doc.get("info", {}).get("detection_completion_time") or "")[:10]
    wrong = first[:4] < EARLIEST_PLAUSIBLE_CAPTURE or (completed and last[:10] > completed)
    warn = ("Some cameras' clocks look wrong (a date before 2000 or after the detection): the Camtrap DP "
            "export's deployments give each camera's first and last capture time. Send the task's request again "
            "with clock_corrections and \"only_new\": true to correct its times without running an image again."
            if wrong else "")
    return {"line": line, "warn": warn}


CAMERAS_LISTED = 1000  # rows of the page's camera table; camera-visits.csv has them all
MOSTLY_BLANK_SHARE = 0.8  # a camera this share of whose visits (of at least MOSTLY_BLANK_VISITS) are blank is flagged
MOSTLY_BLANK_VISITS = 20


CAMERA_READ_BYTES = 1024 * 1024  # camera-visits.csv is read this much at a time


def _camera_visits(store: BlobStore, container: str, task_id: str, variant: str) -> dict[str, Any] | None:
    """The page's table of camera visits, from the exports' ``camera-visits.csv`` (None when the exports wrote none:
    they failed, or ran before it existed): ``camera_table`` of the blob, read by ranges (``open_blob``)."""
    try:
        with open_blob(store, container, layout.camera_visits_blob(task_id, variant), CAMERA_READ_BYTES) as fp:
            table = camera_table(fp)
    except ResourceNotFoundError:
        return None
    if table is None:
        return None
    name = layout.camera_visits_blob(task_id, variant)
    return {**table, "blob": f"{container}/{name}", "local": downloaded_path(task_id, variant, name)}


def camera_table(fp: IO[bytes]) -> dict[str, Any] | None:
    """``camera-visits.csv`` (``fp``) as the page's table: its first ``CAMERAS_LISTED`` cameras, the counts over all
    of them (cameras, visits, those flagged), the interval and threshold; None without a camera (no exports, or no
    photo with a capture time: the page's "taken" line says so). Cameras whose visits are mostly blank are flagged:
    something other than animals fires them (vegetation, sun, rain), which costs batteries and storage and hides the
    real visits.

    Read a row at a time, only the listed rows kept. Why: the camera is MegaDetector's camera folder, so a collection
    kept in camera-day folders has a camera per folder (ten million images in folders of ten: a million rows, 103 MB);
    the table read whole, each row a dict twice, held ~1.4 kB of heap a camera, 1.4 GB in the previews activity at
    a million (``bench/camera_table.py``), for a page that lists a thousand."""
    reader = csv.DictReader(io.TextIOWrapper(fp, encoding="utf-8", newline=""))
    total = flagged = visits_total = 0
    cameras: list[dict[str, Any]] = []
    first: dict[str, str] | None = None
    for row in reader:
        first = first or row
        total += 1
        visits, blank = int(row["visits"]), int(row["blank_visits"])
        visits_total += visits
        mostly_blank = visits >= MOSTLY_BLANK_VISITS and blank >= MOSTLY_BLANK_SHARE * visits
        flagged += mostly_blank
        if len(cameras) < CAMERAS_LISTED:
            # the CSV guards a name a spreadsheet would take for a formula; the page shows it as the package names it
            cameras.append({**row, "deploymentID": unguarded(row["deploymentID"]), "mostly_blank": mostly_blank})
    if first is None:
        return None
    return {"rows": cameras, "total": total, "flagged": flagged, "visits": visits_total,
            "interval": first["event_interval_s"], "threshold": first["threshold"],
            "blank_share": f"{MOSTLY_BLANK_SHARE:.0%}", "blank_visits": MOSTLY_BLANK_VISITS}


def _search_note(repeats: dict[str, Any]) -> str:
    """How the list was made: its options in the names POST /api/tasks/{id}/repeats/search takes to change them."""
    fields = recorded_search_fields(repeats.get("options") or {})
    made = (f"Search {repeats['search']} found them with " if repeats.get("search") else
            "The merge found them with MegaDetector's defaults: ")
    return made + ", ".join(f"{k} {v}" for k, v in fields.items()) + "; POST /api/tasks/<id>/repeats/search runs it " \
        "again with others."


SKIPPED_NAMED = 5  # skipped folders the page names (the repeats document lists the first 100)


def _skipped_note(repeats: dict[str, Any]) -> str:
    """The folders the search left out for holding more than ``max_folder_detections`` eligible detections, said
    beside the places: an empty or short list must not read as a clean one. "" when none was left out."""
    skipped = repeats.get("skipped_folders")
    if not skipped:
        return ""
    listed = skipped.get("listed") or []
    names = ", ".join(f"{f['folder'] or '(the top folder)'} ({f['detections']})" for f in listed[:SKIPPED_NAMED])
    more = int(skipped.get("folders", len(listed))) - min(len(listed), SKIPPED_NAMED)
    hint = str(skipped.get("hint", ""))
    return (f" Not searched: {skipped.get('folders')} folder{'s' if skipped.get('folders') != 1 else ''} with "
            f"{skipped.get('detections')} eligible detections, {names}{f' and {more} more' if more > 0 else ''}. "
            f"{hint[:1].upper()}{hint[1:]}.")


def _failures_note(reasons: Any) -> str:
    """What the failures section says of them all: how many failed for each reason (the sample shows a few), and
    what to do about each kind (``core.failure_advice``, which the task's status says too). "" without counts (a
    sample written before the merge counted reasons)."""
    if not isinstance(reasons, dict) or not reasons:
        return ""
    return (f"By reason: {failure_advice.by_reason(reasons)} (info.trapbatch.failure_reasons of the results file). "
            + " ".join(f"{sentence}." for sentence in failure_advice.advice(reasons)))


def slider_step(threshold: float) -> str:
    """The page's slider step: 0.01, or 0.001 for a threshold between (0.005, MegaDetector's output threshold, or
    0.155). Why: a range input snaps its value to its step, so at 0.01 a request's 0.005 sat at 0.01 and the page
    opened with the counts and boxes of 0.01, not those of the CSV it was cut with."""
    return "0.01" if abs(threshold * 100 - round(threshold * 100)) < 1e-9 else "0.001"


def _kind_extras(kind_samples: dict[str, Any], sections: list[dict[str, Any]],
                 item: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The kind samples' images the uniform samples do not already hold: the page adds them to a kind's chip,
    and an image embedded twice only made the page longer (a person among the detections' sample is in both)."""
    shown = {it["file"] for s in sections if s["name"] in ("detections", "near_misses", "empty") for it in s["entries"]}
    return {kind: [item(im) for im in sample if im["file"] not in shown] for kind, sample in kind_samples.items()}


def _not_published(settings: Settings) -> c.PreviewsOutput:
    return {"container": settings.web_container, "counts": {},
            "not_published": "the task's preview pages were deleted or expired; they are not published again"}


def run_previews(task_id: str, model: str, request_name: str, settings: Settings, store: BlobStore,
                 variant: str = "", source_store: BlobStore | None = None,
                 only_if_published: bool = False, repeat_search_error: str = "") -> c.PreviewsOutput:
    """Render the page; ``source_store`` reads the images for thumbnails when they are in another account.

    ``only_if_published``: the work after a task (a re-render, a repeat search, a removal) renders only while the
    task's pages are on the website. Pages a user deleted, or whose ``previews_expire_days`` took them off, hold a
    partner's photos that were taken off the public website on purpose: publishing them under a new address because
    a repeat search ran would undo that."""
    started = time.time()  # a deletion of the whole task after this takes back what this render writes
    if withdrawn(store, settings, task_id) or (only_if_published and
                                               existing_preview_folder(store, settings, task_id) is None):
        logger.info("task %s: previews not written: its pages were deleted or expired", task_id)
        return _not_published(settings)
    doc = store.read_json_or_none(settings.container, layout.preview_sample_blob(task_id, variant))
    if doc is None:
        raise TrapbatchError(f"task {task_id} has no preview sample ({settings.container}/"
                             f"{layout.preview_sample_blob(task_id, variant)})", "the merge step writes it; run it first")
    source = doc["info"].get("trapbatch", {}).get("container", "")
    threshold = doc["threshold"]
    store.ensure_container(settings.web_container)
    folder = preview_folder(store, settings, task_id)
    pictures = _Pictures(store, source_store or store, settings, folder, source, variant)
    repeats = store.read_json_or_none(settings.container, layout.repeats_blob(task_id))
    removed = doc["info"].get("trapbatch", {}).get("repeated_detections_removed")
    locations = repeats["locations"] if repeats is not None and removed is None else []

    # each kind's own sample (absent from a sample written before them): the page shows it with a kind's chip
    kind_samples = doc.get("kind_samples") if isinstance(doc.get("kind_samples"), dict) else {}
    wanted = [im["file"] for name, sample in doc["samples"].items() if name != "failures" for im in sample]
    wanted += [im["file"] for sample in kind_samples.values() for im in sample]
    wanted += [f for loc in locations[:REPEATS_PICTURED] for f in loc["files"][:REPEAT_EXAMPLES]]
    links = pictures.make_all(wanted)
    damaged, damaged_shown = _damaged(store, settings.container, task_id, set(wanted))

    def item(im: dict[str, Any]) -> dict[str, Any]:
        out = {"file": im["file"], **links.get(im["file"], {}), "failure": im.get("failure"),
               "detections": im.get("detections") or [], "taken": capture_time(im)}
        if im["file"] in damaged_shown:
            out["note"] = CUT_SHORT_NOTE
        elif im["file"] in pictures.missing:  # the page says why it has no picture, as the status counts them
            out["note"] = PICTURE_WORDS[pictures.missing[im["file"]]]
        # the failures section says "the failure beside each image says which" (missing, unreadable, refused...):
        # MegaDetector's string is "image access failure" for all of them, so the reason goes beside it
        if im.get("failure") is not None and im.get(FAILURE_REASON):
            out["failure_reason"] = str(im[FAILURE_REASON])
        return out

    sections = []
    for name, sample in doc["samples"].items():
        items = [item(im) for im in sample]
        sections.append({"name": name, "title": name.replace("_", " "), "total": doc["totals"][name],
                         "unit": ("image", "images"), "entries": items, "paged": True,
                         "about": _failures_note(doc["info"].get("failure_reasons"))
                         if name == "failures" and doc["totals"][name] else ""})
    if removed is not None:
        n = len(removed["locations"])
        request_name = f"{request_name or task_id}: repeated detections removed at {n} place{'s' if n != 1 else ''}"
    elif repeats is not None:
        sections.append({"name": "repeats", "title": "repeated detections", "total": len(locations),
                         "unit": ("place", "places"), "entries": _repeat_entries(locations, links, pictures.missing),
                         "paged": True,
                         "about": "The same box in many images of one folder: often a rock or branch, not an "
                                  "animal (MegaDetector's repeat-detection rules). Review them before trusting counts; "
                                  f"the full list is {REPEATS_FILE_NOTE} ({settings.container}/"
                                  f"{layout.repeats_blob(task_id)} in the app's storage). "
                                  + _search_note(repeats) + _skipped_note(repeats)})
    histogram = doc.get("max_conf_histogram")
    html = _templates.get_template("preview.html").render(
        task_id=task_id, request_name=request_name, model=model.rsplit("/", 1)[-1] or model, threshold=threshold,
        total=doc["images"], sections=sections, categories=doc["detection_categories"],
        sections_json=script_json({s["name"]: s["entries"] for s in sections}),
        kind_samples_json=script_json(_kind_extras(kind_samples, sections, item)),
        repeats_search_json=script_json(list_search_id(repeats) if repeats is not None and repeats.get("search")
                                        else None),
        histogram_json=script_json(histogram), near_miss_floor=NEAR_MISS_FLOOR, page_size=PAGE_SIZE,
        at_threshold_json=script_json({k: doc["totals"][k] for k in ("detections", "near_misses", "empty")}),
        slider_step=slider_step(threshold), kinds_json=script_json(doc.get("kind_totals")),
        counts_note=("Counts follow the threshold; the pictures are a sample of each group." if histogram else
                     f"Counts are at threshold {threshold}; the pictures are a sample of each group and regroup "
                     "as the threshold moves.") + (f" The counts of each kind are at threshold {threshold}: "
                                                   "trapbatch previews <task> --threshold <t> counts them at "
                                                   "another." if doc.get("kind_totals") else ""),
        completed=doc["info"].get("detection_completion_time", ""),
        not_images=_not_images_note(doc["info"].get("trapbatch", {}).get("not_images")),
        damaged=damaged, damaged_list=f"{settings.container}/{layout.damaged_blob(task_id)}",
        taken=_taken_note(doc),
        visits=_camera_visits(store, settings.container, task_id, variant),
        # no list (the search failed after its retries): the page says so, rather than nothing at all
        search_failed=(f"The search for repeated detections failed ({repeat_search_error}); the results are "
                       f"complete without it. trapbatch repeats {task_id} --search (POST /api/tasks/{task_id}/"
                       "repeats/search) runs it again." if repeat_search_error and repeats is None else ""),
    )
    page = layout.page_blob(folder, variant)
    # no-cache: a re-render (another threshold, repeats removed) rewrites this same page, and the static website sends
    # no caching headers of its own ("There's no way to configure headers as part of the static website feature",
    # storage-blob-static-website.md): without one a browser may show the old page from its heuristic freshness
    # (RFC 9111 4.2.2); the blob's Cache-Control is served with it. Thumbnails, named by their image, never change.
    store.write_bytes(settings.web_container, page, html.encode("utf-8"), "text/html; charset=utf-8",
                      cache_control="no-cache")
    if withdrawn(store, settings, task_id, since=started):  # the pages (or the task) were deleted while this render
        # ran: what it wrote goes too
        delete_prefix(store, settings.web_container, folder + "/")
        forget_folder(store, settings, task_id, folder)
        logger.info("task %s: previews deleted again: the pages were taken off the website while they rendered",
                    task_id)
        return _not_published(settings)
    logger.info("task %s: previews written to %s (folder in %s/%s)", task_id, settings.web_container,
                settings.container, layout.preview_folder_blob(task_id))
    # No page path here: this return value is stored in the orchestration history; GET .../results gives the URL.
    out: c.PreviewsOutput = {"container": settings.web_container, "counts": {s["name"]: s["total"] for s in sections}}
    missing = pictures.report(len(set(wanted) - {f for f in wanted if has_dot_segment(f)}))
    if missing is not None:  # only then: an output without it is what it was before
        out["pictures_missing"] = missing
    return out


@bp.activity_trigger(input_name="payload", activity=c.PREVIEWS)
@failures_without_secrets
def render_previews(payload: c.PreviewsInput) -> c.PreviewsOutput:
    s = clients.settings()
    own = clients.store(s)
    refuse_if_superseded(own, s, payload, "the preview pages")  # a terminated run's: over the replacing run's pages
    enumeration = own.read_json(s.container, layout.enumeration_blob(payload["task_id"]))
    source = clients.source_store(s, enumeration.get("source_account_url", ""), enumeration.get("credential_secret", ""))
    out = run_previews(payload["task_id"], payload["model"], payload.get("request_name", ""), s, own,
                       payload.get("variant", ""), source, bool(payload.get("only_if_published")),
                       payload.get("repeat_search_error", ""))
    # the last step of every flow that changes the variant's files (activities.readme says which): its README now,
    # pages published or not; no key in the output, which the history keeps as before. Best effort: a README that
    # cannot be written fails neither this step nor the task whose results are all written (publish_readme)
    readme_error = publish_readme(own, s, payload["task_id"], payload.get("variant", ""))
    if readme_error:  # said in the status (the output's key only when it failed: the history keeps it as before)
        out["readme_error"] = readme_error
    return out
