"""A spreadsheet-friendly summary of a task's results: one CSV row per image.

Why this module exists: the MegaDetector JSON is what tools such as Timelapse read, but most people first open
results in Excel or R. The merge writes this file in the same streaming pass (``results/<task>/detections.csv``),
so it costs no extra read of the results, whatever their size.

Columns: the image path and its folder (the camera, usually); ``capture_time``, the image's EXIF capture time
(the results' ``datetime``) written ``YYYY-MM-DD HH:MM:SS`` as spreadsheets read dates (EXIF's own
``YYYY:MM:DD`` is text to them), empty without one; ``status`` (``ok`` or ``failed``) and the failure text
(``failure_text``: MegaDetector's string with the entry's ``failure_reason`` beside it, ``image access failure
(undecodable)``, since MegaDetector writes the same words for a missing, corrupt or archived file, and each asks
something else of whoever reads the sheet); how many detections of each MegaDetector category reach the threshold;
the highest confidence of each category (any value, so a lower threshold can be applied in the spreadsheet); and ``max_conf``. Detections marked as
repeated false positives (negative confidence) count nowhere.

Text cells come from blob names, which whoever uploads the images chooses: a name starting with ``=``, ``+``, ``-``,
``@``, a tab, a carriage return, a line feed or a NUL would run as a formula when the CSV is opened in a spreadsheet
(CSV injection), so such a cell gets a leading apostrophe, as OWASP recommends (owasp.org/www-community/attacks/
CSV_Injection, which lists line feed since OWASP/www-community#1116; ASVS 1.2.10 adds NUL). A name that already
starts with an apostrophe gets one too, so the rule reads back without doubt: **a cell that starts with ``'`` had one
added; remove one** (``unguarded``). Without it, ``'=x.jpg`` and ``=x.jpg`` were both written ``'=x.jpg``. The results
JSON keeps the exact name.

Must not: do I/O.
"""
from __future__ import annotations

import csv
import io
import posixpath
from typing import Any, Mapping

from gpu_batch.formats.csvline import plain as _plain
from gpu_batch.formats.entries import DETECTION_CATEGORIES, is_exif_time

_KEYS = sorted(DETECTION_CATEGORIES)
_NAMES = [DETECTION_CATEGORIES[k] for k in _KEYS]
CSV_COLUMNS = (["file", "folder", "capture_time", "status", "failure"] + [f"{n}_count" for n in _NAMES]
               + [f"{n}_max_conf" for n in _NAMES] + ["max_conf", "threshold"])


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00")
# What gets the apostrophe: a formula's start, and the apostrophe itself, so that every guarded cell starts with one
# and every cell that starts with one was guarded (``unguarded`` removes exactly one).
_GUARDED_STARTS = _FORMULA_STARTS + ("'",)


def spreadsheet_safe(text: str) -> str:
    """``text`` as a cell that a spreadsheet shows as text and never evaluates, with a leading ``'`` when it starts
    like a formula or with ``'`` (see the module doc): ``=x.jpg`` is ``'=x.jpg``, ``'=x.jpg`` is ``''=x.jpg``."""
    return "'" + text if text.startswith(_GUARDED_STARTS) else text


def unguarded(cell: str) -> str:
    """A ``spreadsheet_safe`` cell as the name it guards, for a reader that is no spreadsheet (the preview page):
    one leading ``'`` removed, as every cell that starts with one had it added."""
    return cell[1:] if cell[:1] == "'" else cell


def capture_time(entry: Mapping[str, Any]) -> str:
    """The entry's ``datetime`` as a spreadsheet reads a date: EXIF's ``YYYY:MM:DD HH:MM:SS`` (MegaDetector's form)
    with dashes in the date; any other text as it is (guarded); "" for none."""
    value = entry.get("datetime")
    if value is None:
        return ""
    text = str(value)
    if is_exif_time(text):
        return f"{text[:4]}-{text[5:7]}-{text[8:]}"
    return spreadsheet_safe(text)


def failure_text(entry: Mapping[str, Any]) -> str:
    """A failed entry's ``failure`` cell (unguarded): MegaDetector's ``failure`` string, followed by the entry's
    ``failure_reason`` in parentheses when it has one (``gpu_batch.manifest``: ``undecodable``, ``archived``...)."""
    reason = entry.get("failure_reason")
    text = str(entry["failure"])
    return f"{text} ({reason})" if isinstance(reason, str) and reason else text


def csv_row(entry: Mapping[str, Any], threshold: float) -> list[Any]:
    """The CSV cells for one result entry (in ``CSV_COLUMNS`` order)."""
    raw = str(entry.get("file", ""))
    file, folder = spreadsheet_safe(raw), spreadsheet_safe(posixpath.dirname(raw))
    if entry.get("failure") is not None:
        return ([file, folder, capture_time(entry), "failed", spreadsheet_safe(failure_text(entry))]
                + [""] * (2 * len(_NAMES) + 1) + [threshold])
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
    return ([file, folder, capture_time(entry), "ok", ""] + [counts[k] for k in _KEYS] + [best[k] for k in _KEYS]
            + [max(best.values(), default=0.0), threshold])


_KEY_INDEX = {k: i for i, k in enumerate(_KEYS)}


def _writer_text(row: list[Any]) -> str:
    """``row`` as ``csv.writer`` (the excel dialect: ``,``, QUOTE_MINIMAL, ``\\r\\n``) writes it."""
    buf = io.StringIO(newline="")
    csv.writer(buf).writerow(row)
    return buf.getvalue()


class CsvLines:
    """``csv_row`` as ``csv.writer`` writes it (line end included), built with one ``%`` format (issue 11: per-image
    CPU).

    Byte for byte the writer's text: a cell of text goes in as it is when ``_plain`` (else the whole row is written
    by ``csv.writer``, so its quoting is the writer's own); ints as ``str`` (``%d``), floats as ``repr`` (``%r``),
    which is what ``_csv`` writes for them; the threshold cell, and a failed row's empty cells, once per task
    through ``csv.writer``.
    Detections that are dicts with a ``str`` category and a ``float`` conf take a fast path; any other detection is
    read as ``csv_row`` reads it. Folders are computed once per directory prefix."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        n = len(_NAMES)
        tail = _writer_text([""] * (2 * n + 1) + [threshold])
        self._failed_tail = tail  # ",,...,<threshold>\r\n" after the failure cell
        # file, folder, ints (``%d``: str's text), floats (``%r``: repr's) and the threshold's cell; "%" in the
        # threshold's text (it has none: a number) is doubled so the format keeps it as it is
        self._ok_format = ("%s,%s,%s,ok,," + ",".join(["%d"] * n) + "," + ",".join(["%r"] * (n + 1)) + ","
                           + _writer_text([threshold]).replace("%", "%%"))
        self._folders: dict[str, str] = {}

    def line(self, entry: Mapping[str, Any]) -> str:
        threshold = self.threshold
        raw = entry.get("file", "")
        if raw.__class__ is not str:
            raw = str(raw)
        if not _plain(raw):
            return _writer_text(csv_row(entry, threshold))
        head = raw[:raw.rfind("/") + 1]  # posixpath.dirname depends on this prefix only
        folder = self._folders.get(head)
        if folder is None:
            folder = self._folders[head] = spreadsheet_safe(posixpath.dirname(raw))
        file = "'" + raw if raw.startswith(_GUARDED_STARTS) else raw  # ``spreadsheet_safe``, inlined
        when = capture_time(entry) if "datetime" in entry else ""
        if when and not _plain(when):
            return _writer_text(csv_row(entry, threshold))
        failure = entry.get("failure")
        if failure is not None:
            text = spreadsheet_safe(failure_text(entry))
            if not _plain(text):
                return _writer_text(csv_row(entry, threshold))
            return f"{file},{folder},{when},failed,{text},{self._failed_tail}"
        counts = [0] * len(_KEYS)
        best = [0.0] * len(_KEYS)
        index = _KEY_INDEX
        for d in entry.get("detections") or ():
            if d.__class__ is dict:
                category, conf = d.get("category"), d.get("conf", 0.0)
                if category.__class__ is not str or conf.__class__ is not float:
                    try:
                        category, conf = str(category), float(conf)
                    except (TypeError, ValueError):
                        continue
            else:
                try:
                    category, conf = str(d.get("category")), float(d.get("conf", 0.0))
                except (AttributeError, TypeError, ValueError):
                    continue
            i = index.get(category)
            if i is None or conf < 0:
                continue
            if conf > best[i]:  # max(best, conf): the first of equals stays
                best[i] = conf
            if conf >= threshold:
                counts[i] += 1
        return self._ok_format % (file, folder, when, *counts, *best, max(best))
