"""The bytes of a zip whose members were deflated in pieces by different processes, and how to cut the work.

Why: one process deflating every file of a ten-million-image task (~12 GB a results variant, tens of GB with the
repeats-removed variant and CSVs at other thresholds) takes minutes that grow with the task (``bench/results_zip.py``:
~176 s a variant here), towards the app's ``functionTimeout`` on a slower instance. The zip format lets the work split: a member's
data is one raw deflate stream (RFC 1951), and deflate streams concatenate when every piece but the last ends on a
byte boundary without the final-block bit (what zlib's ``Z_SYNC_FLUSH`` leaves: an empty stored block), as pigz
does. A member's CRC-32 is composed from its pieces' CRCs and lengths (``crc32_combine``, zlib's method: the CRC of
``n`` zero bytes is a linear map, applied by squaring a 32x32 matrix over GF(2)). With every size and CRC known
before the bytes are laid out, each local header carries them (no data descriptors, APPNOTE.TXT 4.3.9), and the
central directory is written last. Everything is zip64 (the extra field of 4.5.3 in every header, the end records of
4.3.14-4.3.16), as ``zipfile`` writes with ``force_zip64``.

Pure: no storage here (``adapters.zip_parts`` reads, deflates and composes).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, NamedTuple, Sequence

from core import contracts as c

_POLY = 0xEDB88320  # CRC-32's reflected polynomial, as zlib.crc32 uses
_ZIP64_VERSION = 45  # "version needed to extract" for zip64 (APPNOTE 4.4.3.2)
_MADE_BY = (3 << 8) | _ZIP64_VERSION  # Unix attributes, as zipfile writes them on Linux
_DEFLATED = 8
_UTF8_NAME = 0x800  # general purpose bit 11: the name is UTF-8
FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r-- (external attributes; results_bundle writes it too)
_U16, _U32 = 0xFFFF, 0xFFFFFFFF


def _times(matrix: Sequence[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _square(matrix: Sequence[int]) -> list[int]:
    return [_times(matrix, matrix[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)`` (zlib's ``crc32_combine``)."""
    if length2 <= 0:
        return crc1
    operator = [_POLY] + [1 << n for n in range(31)]  # appends one zero bit to a CRC
    for _ in range(3):
        operator = _square(operator)  # two, four, then eight zero bits: one zero byte
    while True:  # append length2 zero bytes to crc1, by squaring: one bit of length2 at a time
        if length2 & 1:
            crc1 = _times(operator, crc1)
        length2 >>= 1
        if not length2:
            break
        operator = _square(operator)
    return crc1 ^ crc2


class Chunk(NamedTuple):
    """``length`` bytes of file ``file`` from ``offset``; ``last``: its final piece (ends the deflate stream)."""

    file: int
    offset: int
    length: int
    last: bool


def cut(sizes: Sequence[int], part_bytes: int) -> list[list[Chunk]]:
    """The files (their sizes, in zip order) read as one run of bytes cut every ``part_bytes``: each part's chunks.

    Parts are equal but for the last; a file crossing a cut is deflated in two parts. An empty file is one empty
    chunk (its member still needs a stream), placed where it falls."""
    if part_bytes <= 0:
        raise ValueError("part_bytes must be positive")
    parts: list[list[Chunk]] = [[]]
    room = part_bytes
    for index, size in enumerate(sizes):
        offset = 0
        while True:
            if room == 0:
                parts.append([])
                room = part_bytes
            length = min(room, size - offset)
            parts[-1].append(Chunk(index, offset, length, offset + length == size))
            offset += length
            room -= length
            if offset == size:
                break
    return [p for p in parts if p]


@dataclass(frozen=True)
class Member:
    """One file of the zip, once its pieces are deflated: where its local header starts in the zip."""

    name: str
    crc: int
    size: int
    compressed: int
    offset: int
    modified: datetime


def zip_time(modified: str) -> tuple[int, int, int, int, int, int]:
    """A blob's ``modified`` (ISO 8601) as a zip member's date and time (``zipfile.ZipInfo.date_time``), as
    ``_dos_time`` writes it: 1980-01-01 for an earlier one (zip cannot say earlier)."""
    when = datetime.fromisoformat(modified)
    if when.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)


def _dos_time(when: datetime) -> tuple[int, int]:
    if when.year < 1980:  # the DOS epoch; zip cannot say earlier
        return 0, (1 << 5) | 1
    return ((when.hour << 11) | (when.minute << 5) | (when.second // 2),
            ((when.year - 1980) << 9) | (when.month << 5) | when.day)


def _name(member: Member) -> tuple[bytes, int]:
    try:
        return member.name.encode("ascii"), 0
    except UnicodeEncodeError:
        return member.name.encode("utf-8"), _UTF8_NAME


def local_header(member: Member) -> bytes:
    """The header before a member's data: sizes in the zip64 extra field, the CRC in place."""
    name, flags = _name(member)
    clock, date = _dos_time(member.modified)
    extra = struct.pack("<HHQQ", 1, 16, member.size, member.compressed)
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, _ZIP64_VERSION, flags, _DEFLATED, clock, date, member.crc,
                       _U32, _U32, len(name), len(extra)) + name + extra


def header_length(name: str) -> int:
    """``len(local_header(...))`` for a member of this name, before its CRC and sizes are known."""
    return 30 + len(name.encode("utf-8")) + 20


def central_directory(members: Iterable[Member], start: int) -> bytes:
    """The central directory, starting at byte ``start`` of the zip, with the zip64 end records and the end record:
    everything after the last member's data."""
    records = []
    count = 0
    for m in members:
        name, flags = _name(m)
        clock, date = _dos_time(m.modified)
        extra = struct.pack("<HHQQQ", 1, 24, m.size, m.compressed, m.offset)
        records.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _MADE_BY, _ZIP64_VERSION, flags, _DEFLATED,
                                   clock, date, m.crc, _U32, _U32, len(name), len(extra), 0, 0, 0, FILE_MODE, _U32)
                       + name + extra)
        count += 1
    directory = b"".join(records)
    end64 = start + len(directory)
    zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _MADE_BY, _ZIP64_VERSION, 0, 0, count, count,
                            len(directory), start)
    locator = struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, _U16), min(count, _U16),
                      min(len(directory), _U32), min(start, _U32), 0)
    return directory + zip64_end + locator + end


def part_inputs(task_id: str, made: c.ZipPlan) -> list[c.ResultsZipPartInput]:
    """What each part activity is asked: its chunks with their file's name and etag, and the plan's ``build``
    (deterministic: the orchestrator calls this on the plan it recorded)."""
    files = made["files"]
    asked = [c.ResultsZipPartInput(task_id=task_id, part=k, chunks=[
        [files[i]["name"], files[i]["etag"], offset, length, last] for i, offset, length, last in chunks])
        for k, chunks in enumerate(made["parts"])]
    if made.get("build"):  # a plan recorded before builds were named has none: its parts are asked as then
        for part in asked:
            part["build"] = made["build"]
    return asked
