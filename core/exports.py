"""A spreadsheet-friendly summary of a task's results: one CSV row per image.

Why this module exists: the MegaDetector JSON is what tools such as Timelapse read, but most people first open
results in Excel or R. The merge writes this file in the same streaming pass (``results/<task>/detections.csv``),
so it costs no extra read of the results, whatever their size.

Columns: the image path and its folder (the camera, usually); ``status`` (``ok`` or ``failed``) and the failure
text; how many detections of each MegaDetector category reach the threshold; the highest confidence of each
category (any value, so a lower threshold can be applied in the spreadsheet); and ``max_conf``. Detections marked as
repeated false positives (negative confidence) count nowhere.

Text cells come from blob names, which whoever uploads the images chooses: a name starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return would run as a formula when the CSV is opened in a spreadsheet (CSV injection), so
such a cell gets a leading apostrophe, as OWASP recommends (the results JSON keeps the exact name).

Must not: do I/O.
"""
from __future__ import annotations

import posixpath
from typing import Any, Mapping

from core.mdformat import DETECTION_CATEGORIES

_KEYS = sorted(DETECTION_CATEGORIES)
_NAMES = [DETECTION_CATEGORIES[k] for k in _KEYS]
CSV_COLUMNS = (["file", "folder", "status", "failure"] + [f"{n}_count" for n in _NAMES]
               + [f"{n}_max_conf" for n in _NAMES] + ["max_conf", "threshold"])


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` as a cell that a spreadsheet shows as text and never evaluates (see the module doc)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_row(entry: Mapping[str, Any], threshold: float) -> list[Any]:
    """The CSV cells for one result entry (in ``CSV_COLUMNS`` order)."""
    raw = str(entry.get("file", ""))
    file, folder = spreadsheet_safe(raw), spreadsheet_safe(posixpath.dirname(raw))
    if entry.get("failure") is not None:
        return ([file, folder, "failed", spreadsheet_safe(str(entry["failure"]))] + [""] * (2 * len(_NAMES) + 1)
                + [threshold])
    counts = dict.fromkeys(_KEYS, 0)
    best = dict.fromkeys(_KEYS, 0.0)
    for d in entry.get("detections") or []:
        try:
            category, conf = str(d.get("category")), float(d.get("conf", 0.0))
        except (AttributeError, TypeError, ValueError):  # a malformed detection must not stop the merge
            continue
        if category not in counts or conf < 0:
            continue
        best[category] = max(best[category], conf)
        if conf >= threshold:
            counts[category] += 1
    return ([file, folder, "ok", ""] + [counts[k] for k in _KEYS] + [best[k] for k in _KEYS]
            + [max(best.values(), default=0.0), threshold])
