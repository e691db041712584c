"""CSV lines as ``csv.writer`` (the default ``excel`` dialect) writes them, built with string joins on hot paths.

Why: the exports write a Camtrap DP media row, its observation rows and a Zooniverse row per image; most of their
fields are constants or hex ids, and ``csv.writer`` checks and copies every one of them on every row. Building the
line with joins from pre-quoted constants and ``field`` on the free-text values (file names, folders, the image
list's values) writes the same bytes for less CPU (issue 11).

The rule, as ``csv.writer`` with the default dialect applies it (``QUOTE_MINIMAL``, delimiter ``,``, quote char
``"`` doubled inside a field, line terminator ``\\r\\n``): a field is quoted exactly when it holds a ``,``, a ``"``,
a ``\\r`` or a ``\\n``; every other character (NUL, other controls, spaces at either end, U+2028, lone surrogates) is
written as itself. ``tests/unit/test_csvline.py`` checks ``field`` and ``line`` against ``csv.writer`` on adversarial
strings. One difference by design: ``csv.writer`` writes a row of one empty field as ``""``; ``line`` is only for
rows of two or more fields (every table here), and refuses a single field.

Must not: do I/O, or take anything but ``str`` fields (``csv.writer`` writes ``None`` as empty and floats with
``repr``; callers convert first, as they would for these tables).
"""
from __future__ import annotations

from typing import Sequence

TERMINATOR = "\r\n"


def plain(text: str) -> bool:
    """Whether ``csv.writer`` writes ``text`` as it is: ``QUOTE_MINIMAL`` quotes a field only when it holds the
    delimiter ``,``, the quote ``"``, CR or LF (the excel dialect has no escape character)."""
    return not ("," in text or '"' in text or "\n" in text or "\r" in text)


def field(text: str) -> str:
    """One field as ``csv.writer`` writes it: quoted (inner quotes doubled) when it is not ``plain``."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:  # ``plain``, inlined: called per field
        return '"' + text.replace('"', '""') + '"'
    return text


def manifest_field(text: str) -> str:
    """``field`` for a Zooniverse manifest, which the Panoptes CLI reads with ``csv.reader(...,
    skipinitialspace=True)`` (zooniverse/panoptes-cli ``subject_set.py`` ``upload_subjects``; ``trapbatch
    zooniverse`` reads it alike): a field that starts with a space is quoted too, else the reader drops the space
    and a photo named `` IMG_0001.JPG`` is looked up, and uploaded, as ``IMG_0001.JPG``."""
    if text[:1] == " ":
        return '"' + text.replace('"', '""') + '"'
    return field(text)


def manifest_line(fields: Sequence[str]) -> str:
    """``line`` of ``manifest_field``s."""
    if len(fields) < 2:
        raise ValueError("csvline.manifest_line writes rows of two or more fields")
    return ",".join([manifest_field(f) for f in fields]) + TERMINATOR


def line(fields: Sequence[str]) -> str:
    """A row of two or more ``str`` fields, with its ``\\r\\n``, as ``csv.writer.writerow`` writes it."""
    if len(fields) < 2:
        raise ValueError("csvline.line writes rows of two or more fields")
    return ",".join([field(f) for f in fields]) + TERMINATOR
