"""Which of an image list's metadata columns are well-known fields of the exports, and which are the rest.

Why: an image list (``core.imagelist``) carries any columns its maker chose, under any spelling: ``site``,
``Location``, ``date time``, ``seq_id``. COCO Camera Traps and Camtrap DP each have a field for the common ones
(an image's capture time, its location, its sequence and frame, its camera), so a column recognised here fills that
field (``gpu_batch.formats.coco.list_fields``, ``gpu_batch.formats.camtrapdp``) and every other column is kept, under
its own name, in a place each export names (``image_list_metadata`` on a COCO image, ``mediaComments`` in Camtrap DP).
Nothing a list gives is dropped.

A column is recognised by its name, case-insensitive, with spaces and hyphens read as underscores, against the aliases
of ``CONCEPTS`` (first alias present with a non-empty value wins; the other aliases stay in the rest). Empty values
are treated as absent: a CSV cell left blank says nothing.

Must not: do I/O, or decide what a format does with a value (each format converts and may hand a value back to the
rest when it cannot be read, e.g. a ``frame_num`` that is not an integer).
"""
from __future__ import annotations

import functools
import re
from typing import Mapping

# concept -> the column names that mean it (normalized: lower case, "_" for spaces and hyphens), in priority order
CONCEPTS: dict[str, tuple[str, ...]] = {
    "datetime": ("datetime", "date_time", "timestamp", "capture_time", "capture_datetime", "datetimeoriginal",
                 "datetime_original"),
    "location": ("location", "location_id", "locationid", "location_name", "site", "site_id", "site_name",
                 "station", "station_id"),
    "seq_id": ("seq_id", "sequence_id", "sequence", "event_id", "eventid"),
    "frame_num": ("frame_num", "frame_number", "frame"),
    "seq_num_frames": ("seq_num_frames", "num_frames"),
    "rights_holder": ("rights_holder",),
    "latitude": ("latitude", "lat"),
    "longitude": ("longitude", "lon", "lng", "long"),
    "camera_id": ("camera_id", "cameraid", "camera", "camera_serial"),
    "utc_offset": ("utc_offset", "timezone_offset", "time_zone_offset", "tz_offset"),
}
_SEPARATORS = re.compile(r"[\s\-]+")


@functools.lru_cache(maxsize=1024)
def concept_of(column: str) -> tuple[str, int] | None:
    """The concept a column names and its alias's rank (lower wins), or None for a column of the rest."""
    name = _SEPARATORS.sub("_", column.strip().lower())
    for concept, aliases in CONCEPTS.items():
        if name in aliases:
            return concept, aliases.index(name)
    return None


def split(metadata: Mapping[str, str] | None,
          concepts: tuple[str, ...] = tuple(CONCEPTS)) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """``(known, rest)`` of one image's metadata: ``known`` maps each of ``concepts`` the row gives to its
    ``(column, value)``; ``rest`` holds every other non-empty column under its own name, in the row's order
    (a concept outside ``concepts``, or a second alias of one, is rest too)."""
    known: dict[str, tuple[str, str, int]] = {}
    for column, value in (metadata or {}).items():
        if not str(value).strip():
            continue
        found = concept_of(column)
        if found is not None and found[0] in concepts:
            concept, rank = found
            if concept not in known or rank < known[concept][2]:
                known[concept] = (column, str(value).strip(), rank)
    chosen = {column for column, _, _ in known.values()}
    rest = {column: str(value) for column, value in (metadata or {}).items()
            if str(value).strip() and column not in chosen}
    return {concept: (column, value) for concept, (column, value, _) in known.items()}, rest


def integer(value: str) -> int | None:
    """A whole number written as one (``3``, ``+3``, ``3.0``), else None."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+(\.0*)?", text) else None


# An offset from UTC as ISO 8601 writes it (``+02:00``, ``+0200``, ``Z``), within the zones in use: UTC-12:00 to
# UTC+14:00. A request's ``utc_offset`` (core.requests, and api/openapi.py's schema) and a list's column both take it.
UTC_OFFSET_PATTERN = r"^([Zz]|[+]((0\d|1[0-3]):?[0-5]\d|14:?00)|-((0\d|1[01]):?[0-5]\d|12:?00))?$"
_UTC_OFFSET_RE = re.compile(UTC_OFFSET_PATTERN)


def utc_offset(value: str) -> str | None:
    """An offset from UTC (``UTC_OFFSET_PATTERN``, not empty) as ``+HH:MM`` (``Z`` is ``+00:00``), else None."""
    if not value or _UTC_OFFSET_RE.match(value) is None:
        return None
    if value in ("Z", "z"):
        return "+00:00"
    digits = value[1:].replace(":", "")
    return f"{value[0]}{digits[:2]}:{digits[2:]}"


def coordinate(value: str, limit: float) -> float | None:
    """A decimal-degree coordinate within ``[-limit, limit]`` (90 for latitude, 180 for longitude), else None."""
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if -limit <= number <= limit else None
