"""An image's row of a Zooniverse subject manifest, without the task's per-task columns: shared by the exports
(``core.zooniverse``) and the GPU worker's merge view (``gpu_batch.formats.mergeview``), so both write the same bytes.

Why here: the view holds each shard's rows, made on the GPU node while its GPU works, so an exports activity whose
shards all have views composes them instead of parsing every entry again (issue 11). The row's fields that only the
app knows (the attribution and license settings) stand in a view as ``MIDDLE``; the exports put the task's text in.

Must not: do I/O.
"""
from __future__ import annotations

from typing import Any, Mapping

from gpu_batch.formats import csvline
from gpu_batch.formats.entries import is_cut_short

# Flags of the seed's captures file that keep an image out of the manifest, and the values that do.
EXCLUDING_FLAGS: Mapping[str, tuple[str, ...]] = {"invalid": ("1", "2"), "image_is_invalid": ("1",),
                                                  "image_no_upload": ("1",), "image_was_deleted": ("1",)}
# What a view's rows hold in place of ",<attribution>,<license>," (NUL is in no blob name a view is made for)
MIDDLE = "\x00zooniverse\x00"


def excluded(entry: Mapping[str, Any]) -> bool:
    """Whether an entry stays out of the manifests: a failed image, one the image list flags, or a photo cut short
    (``entries.CUT_SHORT``: its lower part is grey fill, which volunteers would be shown and asked to classify)."""
    return _excluded_otherwise(entry) or is_cut_short(entry)


def left_out_cut_short(entry: Mapping[str, Any]) -> bool:
    """Whether an entry stays out of the manifests only because its photo was cut short (the exports count them,
    ``ExportsOutput.zooniverse_cut_short``, so a subject set smaller than the photos says why)."""
    return is_cut_short(entry) and not _excluded_otherwise(entry)


def _excluded_otherwise(entry: Mapping[str, Any]) -> bool:
    if entry.get("failure") is not None:
        return True
    for flag, values in EXCLUDING_FLAGS.items():  # an absent flag reads as "", which no flag's values hold
        if flag in entry and str(entry[flag]).strip() in values:
            return True
    return False


def cell(value: Any) -> str:
    """A value as ``csv.writer`` writes it before quoting: ``None`` empty, a float its ``repr``, else ``str``."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def facts(entry: Mapping[str, Any], threshold: float,
          detection_categories: Mapping[str, str]) -> tuple[str, str, float, str]:
    """``(file, folder, #detector_max_conf, #detector_top_category)`` of an image's row."""
    file = str(entry["file"])
    best_conf, best_cat = 0.0, ""
    for det in entry.get("detections") or []:
        conf = det.get("conf")
        if isinstance(conf, (int, float)) and conf > best_conf:
            best_conf, best_cat = float(conf), detection_categories.get(str(det.get("category")), "unknown")
    top = best_cat if best_cat and best_conf >= threshold else "empty"
    folder = file.rsplit("/", 1)[0] if "/" in file else ""
    return file, folder, round(best_conf, 4), top


def threshold_field(threshold: float) -> str:
    """The row's last fixed field, ``#detector_threshold``, with its leading comma."""
    return "," + csvline.manifest_field(cell(threshold))


def fixed_line(entry: Mapping[str, Any], threshold: float, detection_categories: Mapping[str, str], middle: str,
               threshold_text: str) -> str:
    """The row's fixed columns as ``csv.writer`` writes them, without the line's end: ``middle`` is
    ``,<attribution>,<license>,`` quoted (or ``MIDDLE``), ``threshold_text`` is ``threshold_field(threshold)``."""
    file, folder, conf, top = facts(entry, threshold, detection_categories)
    quoted, field = csvline.manifest_field(file), csvline.manifest_field
    return f"{quoted},{field(folder)}{middle}{quoted},{conf!r},{field(top)}{threshold_text}"
