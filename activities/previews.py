"""Render the browsable preview site of a task into the static-website container (``$web/<task>-<random>/``).

Replaces the manual "post-processing, then SCP the HTML to the web VM" step: one page per task with the counts,
model and threshold, and per-category samples (detections / near misses / empty / failures) whose boxes are drawn
client-side from embedded JSON, so the confidence threshold is a slider rather than a re-run. Thumbnails are small
JPEG copies written beside the page (the source container stays private; no SAS is ever embedded); the folder name
carries 128 random bits (``preview_folder``), because the static website itself is public.
The samples come from the side blob the merge wrote while streaming (``core.previewsample``): this step reads a few
hundred entries, never the merged file, whatever the task size. They are seeded by the task id, so re-rendering
gives the same page.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import azure.durable_functions as df
from jinja2 import Environment, FileSystemLoader, select_autoescape

from adapters import clients
from adapters.blobs import BlobStore
from adapters.preview_folders import preview_folder
from core import contracts as c
from core.errors import TrapbatchError
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)
bp = df.Blueprint()

THUMB_WIDTH = 480
REPEATS_SHOWN = 60  # repeated-detection locations shown on the page (all are in the repeats blob)
_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]))


def _thumbnail(data: bytes) -> bytes | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMB_WIDTH, THUMB_WIDTH))
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 4))
            out = io.BytesIO()
            im.save(out, "JPEG", quality=80)
            return out.getvalue()
    except Exception:  # any undecodable image just gets no thumbnail; the page says so
        return None


def script_json(value: Any) -> str:
    """JSON safe to place inside ``<script>``: blob names are user data, and one named ``</script><script>...``
    must stay a string, not end the script (the same escaping Jinja's ``tojson`` does)."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")


def run_previews(task_id: str, model: str, request_name: str, settings: Settings, store: BlobStore,
                 variant: str = "", source_store: BlobStore | None = None) -> c.PreviewsOutput:
    """Render the page; ``source_store`` reads the images for thumbnails when they are in another account."""
    doc = store.read_json_or_none(settings.container, layout.preview_sample_blob(task_id, variant))
    if doc is None:
        raise TrapbatchError(f"task {task_id} has no preview sample ({settings.container}/"
                             f"{layout.preview_sample_blob(task_id, variant)})", "the merge step writes it; run it first")
    source = doc["info"].get("trapbatch", {}).get("container", "")
    threshold = doc["threshold"]
    store.ensure_container(settings.web_container)
    folder = preview_folder(store, settings, task_id)

    def thumb_for(file: str) -> str | None:
        if not source:
            return None
        try:
            data = _thumbnail((source_store or store).read_bytes(source, file))
        except Exception:  # noqa: BLE001 - the image vanished since detection: show the entry without a picture
            data = None
        if data is None:
            return None
        store.write_bytes(settings.web_container, f"{folder}/{layout.thumbnail_path(file)}", data, "image/jpeg")
        return layout.thumbnail_link(file, variant)

    sections = []
    for name, sample in doc["samples"].items():
        items = [{"file": im["file"], "thumb": None if name == "failures" else thumb_for(im["file"]),
                  "failure": im.get("failure"), "detections": im.get("detections") or []} for im in sample]
        sections.append({"name": name, "title": name.replace("_", " "), "total": doc["totals"][name],
                         "unit": "images", "entries": items})
    repeats = store.read_json_or_none(settings.container, layout.repeats_blob(task_id))
    removed = doc["info"].get("trapbatch", {}).get("repeated_detections_removed")
    if removed is not None:
        n = len(removed["locations"])
        request_name = f"{request_name or task_id}: repeated detections removed at {n} place{'s' if n != 1 else ''}"
    elif repeats is not None:
        shown = repeats["locations"][:REPEATS_SHOWN]
        items = [{"file": loc["files"][0], "thumb": thumb_for(loc["files"][0]), "failure": None, "location": loc["id"],
                  "note": f"{loc['count']} times in {loc['folder'] or '(top folder)'} ({loc['id']})",
                  "detections": [{"category": loc["category"], "conf": loc["conf_max"], "bbox": loc["bbox"],
                                  "always": True}]} for loc in shown]
        sections.append({"name": "repeats", "title": "repeated detections", "total": len(repeats["locations"]),
                         "unit": "places", "entries": items,
                         "about": "The same box in many images of one folder: often a rock or branch, not an "
                                  "animal (MegaDetector's repeat-detection rules). Review them before trusting counts; "
                                  f"the full list is {settings.container}/{layout.repeats_blob(task_id)}."})
    html = _templates.get_template("preview.html").render(
        task_id=task_id, request_name=request_name, model=model, threshold=threshold,
        total=doc["images"], sections=sections, categories=doc["detection_categories"],
        sections_json=script_json({s["name"]: s["entries"] for s in sections}),
        completed=doc["info"].get("detection_completion_time", ""),
    )
    page = layout.page_blob(folder, variant)
    store.write_bytes(settings.web_container, page, html.encode("utf-8"), "text/html; charset=utf-8")
    logger.info("task %s: previews written to %s (folder in %s/%s)", task_id, settings.web_container,
                settings.container, layout.preview_folder_blob(task_id))
    # No page path here: this return value is stored in the orchestration history; GET .../results gives the URL.
    return {"container": settings.web_container, "counts": {s["name"]: s["total"] for s in sections}}


@bp.activity_trigger(input_name="payload", activity=c.PREVIEWS)
def render_previews(payload: c.PreviewsInput) -> c.PreviewsOutput:
    s = clients.settings()
    own = clients.store(s)
    enumeration = own.read_json(s.container, layout.enumeration_blob(payload["task_id"]))
    source = clients.source_store(s, enumeration.get("source_account_url", ""), enumeration.get("credential_secret", ""))
    return run_previews(payload["task_id"], payload["model"], payload.get("request_name", ""), s, own,
                        payload.get("variant", ""), source)
