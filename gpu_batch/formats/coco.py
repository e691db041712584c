"""COCO Camera Traps export of a results file: the same document MegaDetector's ``md_to_coco`` makes of it.

Why: COCO Camera Traps (https://lila.science/coco-camera-traps) is how LILA and most training pipelines exchange
camera-trap boxes. MegaDetector's ``postprocessing/md_to_coco.py`` is the reference conversion and this module follows
it choice by choice (megadetector 10.0.28), so ``tests/unit/test_coco.py`` runs both on the same results and compares:

* one image per entry, ``id`` = ``file_name`` = the results' ``file``; a failed image keeps only ``id``,
  ``file_name`` and ``failure``; other fields of a successful entry are carried over (``preserve_nonstandard_metadata``);
* one annotation per detection at or above the threshold, ``category_id`` the integer MegaDetector category,
  ``bbox`` in pixels (MegaDetector's normalized ``[x, y, w, h]`` times the image size), the confidence as ``score``;
* ``categories`` from ``detection_categories``; ``info.confidence_threshold``; every float rounded to 3 places.

Where we differ, on purpose: annotation ids are ``uuid5`` of the file and the detection's index instead of
``uuid1`` (so a rerun writes the same bytes); an image whose size could not be read keeps its annotations with
MegaDetector's normalized box as ``bbox_relative`` and no ``bbox`` (``md_to_coco`` refuses the whole file instead;
``bbox_relative`` is the format's name for a normalized box, "mutually exclusive with bbox", which MegaDetector's
``visualize_db`` draws); an annotation with a ``bbox`` in pixels also has COCO's ``area`` (the box's width times
height in pixels, rounded as every float: what pycocotools' ``COCO.loadRes`` computes for a box without
``segmentation``) and ``"iscrowd": 0``, which md_to_coco leaves out and COCO's object-detection format requires:
pycocotools' ``COCOeval`` reads both of every ground-truth annotation (cocodataset/cocoapi,
PythonAPI/pycocotools/cocoeval.py: ``computeIoU``'s ``o['iscrowd']``, ``evaluateImg``'s ``g['area']``), and
MMDetection's COCO loader reads ``area`` too (open-mmlab/mmdetection, mmdet/datasets/coco.py, ``parse_data_info``:
``ann['area'] <= 0``), so without them they fail with a KeyError (a normalized box has no pixel area: none then);
and an image's ``datetime`` in MegaDetector's EXIF form ``YYYY:MM:DD HH:MM:SS`` is written
``YYYY-MM-DD HH:MM:SS`` (``cct_datetime``), where md_to_coco copies the EXIF form: the format asks for "any obvious
format that dateutil knows how to parse" and its tools (``cct_json_utils.parse_datetimes_from_cct_image_list``, so
``create_sequences``) parse with ``dateutil.parser.parse``, which reads ``2024:06:01 06:20:00`` as today at 06:20
and so merged photos days apart into one sequence. The results file keeps the EXIF form, as MegaDetector writes it.
And an image that failed to load gets the format's ``"corrupt": true``, which md_to_coco never writes: the format
(MegaDetector's data_management/README.md, "COCO Camera Traps format") has it "to indicate that an image failed to
load, e.g. in PIL", rather than throwing such images out. Here that is a failure with ``failure_reason``
``undecodable`` (PIL could not open the bytes) and a photo cut short (``entries.CUT_SHORT``: a JPEG without its end,
which PIL opens only with ``LOAD_TRUNCATED_IMAGES``, as MegaDetector loads it; its boxes stand, detected as far as
it goes, and the results list it in ``damaged.csv``); not other failures (missing, refused, a mode MegaDetector
refuses: those images load, or were never read).

An explicit image list's metadata (``core.imagelist``), when the caller gives an image's row: the columns
``gpu_batch.formats.listfields`` recognises fill COCO Camera Traps' optional image fields (``datetime``, ``location``,
``seq_id``, ``frame_num``, ``seq_num_frames``, ``rights_holder``; see ``list_fields``), and every other column goes,
under its own name, into one object, ``image_list_metadata`` (COCO Camera Traps allows additional image fields).
md_to_coco knows no image list: without one the document is exactly its, but for each image's ``location``: where
neither the entry nor the list gives one, its camera folder (``located``), which md_to_coco leaves out and the
format's tools want. A photo of a visit grouped by capture time gets ``seq_id``, ``seq_num_frames`` and ``frame_num``
later, from the exports' grouping (``core.camtrap_events.link_coco_images``): an image's sequence depends on the
camera's other photos, which this module never sees.

Images sizes: an entry's own ``width``/``height`` (trapbatch's worker writes them on every success, as MegaDetector
does with ``--include_image_size``) win; for an entry without them the caller supplies them (the exports activity
reads that image's header, ``adapters.image_sizes``).

Must not: do I/O (``CocoWriter`` writes to the text streams it is given), or hold more than one entry at a time
(``CocoWriter`` holds the finished lines of up to ``_CHUNK`` images before writing them on, ``flush``).
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import IO, Any, Mapping

from gpu_batch.formats import camtrapdp, jsonio, listfields
from gpu_batch.formats.entries import CUT_SHORT, is_cut_short, is_exif_time
from gpu_batch.manifest import FAILURE_REASON, REASON_UNDECODABLE

LIST_METADATA_FIELD = "image_list_metadata"  # the image list's columns that are no COCO Camera Traps field
# COCO Camera Traps' optional image fields an image list may fill (gpu_batch.formats.listfields concepts); the integer
# ones must read as integers (else the value stays in LIST_METADATA_FIELD)
LIST_FIELDS = ("datetime", "location", "seq_id", "frame_num", "seq_num_frames", "rights_holder")
_INTEGER_FIELDS = ("frame_num", "seq_num_frames")
IMAGES_TO_ANNOTATIONS = '],\n"annotations": [\n'  # between the images and the annotations
PRECISION = 3  # md_to_coco's default ``precision``
_ID_NAMESPACE = uuid.UUID("5d0a8b5c-5e0b-4a52-9d54-2f2f0b7a3c11")  # trapbatch's; any fixed namespace would do
# ``info.version``, which COCO Camera Traps requires: the version of this module's document form (``activities.exports``
# writes it). "1.0" is the first form to carry one: dateutil-readable ``datetime`` and ``bbox_relative``; documents
# written before had no ``version``. Raise it when the form changes, so a reader can tell the forms apart.
INFO_VERSION = "1.0"
_EXIF_TIME = re.compile(r"[0-9]{4}:[0-9]{2}:[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")  # MegaDetector's EXIF form, digits


def _round(value: Any) -> Any:
    """``megadetector.utils.ct_utils.round_floats_in_nested_dict`` on one value: floats rounded, the rest kept."""
    if isinstance(value, float):
        return round(value, PRECISION)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


_KEPT = (str, int, bool, type(None))  # types (exactly) that _round returns as they are


def categories(detection_categories: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"id": int(k), "name": v} for k, v in detection_categories.items()]


def cct_datetime(value: Any) -> Any:
    """A ``datetime`` as a COCO image carries it: MegaDetector's EXIF form ``YYYY:MM:DD HH:MM:SS`` with dashes in the
    date (``YYYY-MM-DD HH:MM:SS``, Python's form the format names), which ``dateutil`` reads as that day where it
    reads the EXIF form as today's (see the module doc); any other value as it is (it is not ours to guess at)."""
    if is_exif_time(value) and _EXIF_TIME.fullmatch(value):
        return f"{value[:4]}-{value[5:7]}-{value[8:]}"
    return value


def entry_size(entry: Mapping[str, Any]) -> tuple[int, int] | None:
    """The ``(width, height)`` an entry itself carries (MegaDetector writes them when it knows them), else None."""
    w, h = entry.get("width"), entry.get("height")
    return (w, h) if isinstance(w, int) and isinstance(h, int) else None


def list_fields(image: dict[str, Any], metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """``image`` with its image-list row added: the recognised columns as COCO Camera Traps fields (``location``,
    ``seq_id``, ``datetime`` and ``rights_holder`` as text, as the format's sanity check wants a string location;
    ``frame_num`` and ``seq_num_frames`` as integers), the rest under ``image_list_metadata``. A field the entry
    already has (MegaDetector writes ``datetime`` when it reads EXIF) is kept, and the list's value joins the rest
    (as the list wrote it), as does an integer field that is not a whole number. A list's ``datetime`` in EXIF form
    is written as an entry's is (``cct_datetime``), so one document has one form. No metadata: ``image``
    unchanged."""
    if not metadata:
        return image  # what the rest does with listfields.split's ({}, {}) of no row
    known, rest = listfields.split(metadata, LIST_FIELDS)
    for field, (column, value) in known.items():
        typed: Any = (listfields.integer(value) if field in _INTEGER_FIELDS
                      else cct_datetime(value) if field == "datetime" else value)
        if typed is None or field in image:
            rest[column] = value
        else:
            image[field] = typed
    if rest:
        image[LIST_METADATA_FIELD] = rest
    return image


def convert_entry(entry: Mapping[str, Any], size: tuple[int, int] | None, threshold: float,
                  detection_categories: Mapping[str, str],
                  metadata: Mapping[str, str] | None = None,
                  cameras: camtrapdp.CameraRule = camtrapdp.MEGADETECTOR_CAMERAS
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One results entry as a COCO image and its annotations (see the module doc for every rule); ``metadata``:
    its row of the image list, if any (a failed image gets it too: where it was taken is still known); ``cameras``:
    the task's camera rule, for its ``location`` (``located``)."""
    file = str(entry["file"])
    image: dict[str, Any] = {"id": file, "file_name": file}
    if entry.get("failure") is not None:
        image["failure"] = entry["failure"]
        if entry.get(FAILURE_REASON) == REASON_UNDECODABLE:  # PIL could not open it: the format's "corrupt"
            image["corrupt"] = True
        return located(list_fields(image, metadata), cameras), []
    size = entry_size(entry) or size
    if size is not None:
        image["width"], image["height"] = size
    for key, value in entry.items():
        if key not in ("file", "detections", "width", "height", CUT_SHORT):
            image[key] = value
    if is_cut_short(entry):  # PIL opens it only with LOAD_TRUNCATED_IMAGES (as MegaDetector loads): "corrupt"
        image["corrupt"] = True
    when = image.get("datetime")
    if when is not None:
        image["datetime"] = cct_datetime(when)  # in its place: the image's fields keep the entry's order
    annotations = []
    for index, det in enumerate(entry.get("detections") or []):
        conf = det.get("conf")
        if not isinstance(conf, (int, float)) or conf < threshold or str(det.get("category")) not in detection_categories:
            continue
        ann: dict[str, Any] = {"id": annotation_id(file, index), "image_id": file,
                               "category_id": int(det["category"])}
        box = det.get("bbox")
        if isinstance(box, list) and len(box) == 4:
            if size is not None:
                w, h = size
                x, y, bw, bh = box[0] * w, box[1] * h, box[2] * w, box[3] * h
                if type(x) is float and type(y) is float and type(bw) is float and type(bh) is float:
                    ann["bbox"] = pixels = [round(x, PRECISION), round(y, PRECISION), round(bw, PRECISION),
                                            round(bh, PRECISION)]  # _round of each, without the calls
                else:
                    ann["bbox"] = pixels = [_round(x), _round(y), _round(bw), _round(bh)]
                # COCO's two other required annotation fields (see the module doc): a box's area, w * h as
                # pycocotools' loadRes computes it for a box without segmentation, and not a crowd
                ann["area"] = _round(pixels[2] * pixels[3])
                ann["iscrowd"] = 0
            else:
                ann["bbox_relative"] = [_round(v) for v in box]  # COCO Camera Traps' name for a normalized box
        ann["score"] = round(conf, PRECISION) if type(conf) is float else _round(conf)
        annotations.append(ann)  # every value rounded as _round(ann) would (the id, image_id and category_id are not floats)
    for value in image.values():
        if type(value) not in _KEPT:  # _round(image) is a copy of it when every value is of a type it keeps
            image = _round(image)
            break
    return located(list_fields(image, metadata), cameras), annotations


def located(image: dict[str, Any], cameras: camtrapdp.CameraRule = camtrapdp.MEGADETECTOR_CAMERAS
            ) -> dict[str, Any]:
    """``image`` with a ``location``: its own or its image list's, else its camera folder by ``cameras`` (the
    task's camera rule; ``(root)`` for none), as the Camtrap DP export's deployments are. COCO Camera Traps tools
    need one: MegaDetector's integrity check refuses an image without (unless told not to), ``cct_to_md`` fails on
    it, and training splits go by location."""
    if "location" not in image:
        image["location"] = camtrapdp.deployment_id(image["file_name"], "", cameras)
    return image


def annotation_id(file: str, index: int) -> str:
    """``str(uuid.uuid5(_ID_NAMESPACE, f"{file}#{index}"))``, without building a ``UUID`` per annotation (a third of
    the id's cost): SHA-1 of namespace and name, its first 16 bytes with the version (5, the high nibble of byte 6)
    and the RFC 4122 variant (``10`` in the top bits of byte 8) set, as ``uuid.uuid5`` does, then its hex form."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{file}#{index}".encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    hexed = digest.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


_NAMESPACE_BYTES = _ID_NAMESPACE.bytes
_CHUNK = 512  # images CocoWriter holds before writing them (and their annotations) to its streams


class CocoWriter:
    """Streams a COCO Camera Traps document: images go to ``images``, annotations to ``annotations`` (two text
    streams, e.g. temporary files), and ``finish`` writes the whole document to ``out`` from them.

    Why two streams: COCO lists all images, then all annotations; one pass over the results yields both. Each
    image and annotation is one line of ``gpu_batch.formats.jsonio`` JSON (compact, UTF-8: since issue 11 no spaces, and
    an annotation's non-ASCII ``image_id`` is no longer ``\\u``-escaped); the head and tail keep ``json.dumps``'s form.
    """

    def __init__(self, images: IO[str], annotations: IO[str], threshold: float,
                 detection_categories: Mapping[str, str], continued: bool = False,
                 cameras: camtrapdp.CameraRule = camtrapdp.MEGADETECTOR_CAMERAS) -> None:
        """``continued``: every image and annotation gets its leading comma (an exports part's fragments: the
        combine drops the first one's); ``cameras``: the task's camera rule, the images' ``location``."""
        self.cameras = cameras
        self.images, self.annotations = images, annotations
        self.continued = continued
        self.threshold = threshold
        self.detection_categories = dict(detection_categories)
        self.counts = {"images": 0, "annotations": 0}
        # lines waiting for the streams, handed on together (``flush``): one write per line to a TextIOWrapper
        # over a read-write file costs a decoder reset each (CPython's textiowrapper_write)
        self._pending: dict[str, list[str]] = {"images": [], "annotations": []}

    def add(self, entry: Mapping[str, Any], size: tuple[int, int] | None,
            metadata: Mapping[str, str] | None = None) -> None:
        """Write one entry's image and annotations; ``metadata``: its image-list row (``list_fields``)."""
        image, anns = convert_entry(entry, size, self.threshold, self.detection_categories, metadata, self.cameras)
        counts, pending = self.counts, self._pending
        images = pending["images"]
        images.append(("," if counts["images"] or self.continued else "") + jsonio.dumps_text(image) + "\n")
        counts["images"] += 1
        if anns:
            annotations = pending["annotations"]
            for ann in anns:
                annotations.append(("," if counts["annotations"] or self.continued else "") + jsonio.dumps_text(ann)
                                   + "\n")
                counts["annotations"] += 1
        if len(images) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        """Hand the lines ``add`` holds on to the streams (``finish`` does; a caller that reads the streams itself
        calls it first)."""
        for name, stream in (("images", self.images), ("annotations", self.annotations)):
            lines = self._pending[name]
            if lines:
                stream.write("".join(lines))
                lines.clear()

    def head(self, info: Mapping[str, Any]) -> str:
        """The document up to the first image (``finish`` writes it first)."""
        return ('{"info": ' + json.dumps(_round({**info, "confidence_threshold": self.threshold}), ensure_ascii=False)
                + ',\n"images": [\n')

    def tail(self) -> str:
        """The document after the last annotation."""
        return "],\n" + '"categories": ' + json.dumps(categories(self.detection_categories), ensure_ascii=False) + "}\n"

    def finish(self, out: IO[str], info: Mapping[str, Any]) -> None:
        """Write the document: ``info`` (with ``confidence_threshold``), images, annotations, categories."""
        self.flush()
        out.write(self.head(info))
        for stream in (self.images, self.annotations):
            stream.seek(0)
            while chunk := stream.read(1 << 20):  # in chunks, not lines: a write per line cost ~1 us per image
                out.write(chunk)
            if stream is self.images:
                out.write(IMAGES_TO_ANNOTATIONS)
        out.write(self.tail())
