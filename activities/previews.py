"""Render the browsable preview site of a task into the static-website container (``$web/<task>/``).

Replaces the manual "post-processing, then SCP the HTML to the web VM" step: one page per task with the counts,
model and threshold, and per-category samples (detections / near misses / empty / failures) whose boxes are drawn
client-side from embedded JSON, so the confidence threshold is a slider rather than a re-run. Thumbnails are small
JPEG copies written beside the page (the source container stays private; no SAS is ever embedded).
The sample is seeded by the task id, so re-rendering gives the same page.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from pathlib import Path
from typing import Any

import azure.durable_functions as df
from jinja2 import Environment, FileSystemLoader, select_autoescape

from activities import context
from activities.merge import results_blob
from adapters.blobs import BlobStore
from core.settings import Settings

logger = logging.getLogger(__name__)
bp = df.Blueprint()

SAMPLE_PER_CATEGORY = 120
THUMB_WIDTH = 480
NEAR_MISS_FLOOR = 0.1
_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]))


def categorize(images: list[dict[str, Any]], threshold: float) -> dict[str, list[dict[str, Any]]]:
    cats: dict[str, list[dict[str, Any]]] = {"detections": [], "near_misses": [], "empty": [], "failures": []}
    for im in images:
        if im.get("failure") is not None:
            cats["failures"].append(im)
            continue
        top = max((d.get("conf", 0.0) for d in im.get("detections") or []), default=0.0)
        if top >= threshold:
            cats["detections"].append(im)
        elif top >= NEAR_MISS_FLOOR:
            cats["near_misses"].append(im)
        else:
            cats["empty"].append(im)
    return cats


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


def run_previews(task_id: str, model: str, request_name: str, settings: Settings, store: BlobStore) -> dict[str, Any]:
    doc = store.read_json(settings.container, results_blob(task_id))
    source = doc["info"].get("trapbatch", {}).get("container", "")
    images = doc["images"]
    threshold = settings.preview_threshold
    cats = categorize(images, threshold)
    store.ensure_container(settings.web_container)
    rng = random.Random(task_id)
    sections = []
    for name, members in cats.items():
        sample = members if len(members) <= SAMPLE_PER_CATEGORY else rng.sample(members, SAMPLE_PER_CATEGORY)
        sample = sorted(sample, key=lambda im: im["file"])
        items = []
        for im in sample:
            thumb = None
            if name != "failures" and source:
                try:
                    data = _thumbnail(store.read_bytes(source, im["file"]))
                except Exception:  # the image vanished since detection: show the entry without a picture
                    data = None
                if data is not None:
                    thumb = "thumbs/" + hashlib.sha1(im["file"].encode("utf-8")).hexdigest()[:16] + ".jpg"
                    store.write_bytes(settings.web_container, f"{task_id}/{thumb}", data, "image/jpeg")
            items.append({"file": im["file"], "thumb": thumb, "failure": im.get("failure"),
                          "detections": im.get("detections") or []})
        sections.append({"name": name, "title": name.replace("_", " "), "total": len(members), "entries": items})
    html = _templates.get_template("preview.html").render(
        task_id=task_id, request_name=request_name, model=model, threshold=threshold,
        total=len(images), sections=sections, categories=doc["detection_categories"],
        sections_json=json.dumps({s["name"]: s["entries"] for s in sections}),
        completed=doc["info"].get("detection_completion_time", ""),
    )
    store.write_bytes(settings.web_container, f"{task_id}/index.html", html.encode("utf-8"), "text/html; charset=utf-8")
    logger.info("task %s: previews written to %s/%s/index.html", task_id, settings.web_container, task_id)
    return {"container": settings.web_container, "index": f"{task_id}/index.html",
            "counts": {s["name"]: s["total"] for s in sections}}


@bp.activity_trigger(input_name="payload", activity="render_previews")
def render_previews(payload: dict[str, Any]) -> dict[str, Any]:
    s = context.settings()
    return run_previews(payload["task_id"], payload["model"], payload.get("request_name", ""), s, context.store(s))
