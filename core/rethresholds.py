"""How a re-render at another threshold splits a large results file between parallel parts (``activities.rethreshold``).

Why by bytes and lines: the merge writes one entry per line (``core.mdformat.iter_images``'s layout), so a part needs
no index: it takes the entries whose line *starts* in its byte range, reading on past the range's end to finish its
last line, and the next part skips the line it starts inside. Every entry is then passed over exactly once, in file
order, whatever the ranges (``tests/unit/test_rethresholds.py`` cuts a file at every byte).

Must not: do I/O (the reader is the caller's ``fetch``).
"""
from __future__ import annotations

from typing import Callable, Iterator

Fetch = Callable[[int, int], bytes]  # (offset, length) -> the file's bytes there (fewer only at the file's end)

READ_BYTES = 8 * 1024 * 1024  # read at a time: a part's range is never held whole
TAIL_READ = 64 * 1024  # read at a time past the range, to finish its last line


def entry_ranges(start: int, end: int, part_bytes: int) -> list[tuple[int, int]]:
    """``[start, end)`` (the entries' bytes) cut into ranges of at most ``part_bytes``, of about equal size, as
    ``(offset, length)``."""
    total = max(0, end - start)
    parts = max(1, -(-total // max(1, part_bytes)))
    cuts = [start + total * k // parts for k in range(parts + 1)]
    return [(cuts[k], cuts[k + 1] - cuts[k]) for k in range(parts)]


def owned_lines(fetch: Fetch, offset: int, length: int, size: int) -> Iterator[bytes]:
    """The lines (without their ``\\n``) that start in ``[offset, offset + length)`` of a file of ``size`` bytes,
    ``offset`` >= 1; the last one read to its end, past the range if need be (never past the file's end)."""
    stop = offset + length
    at = offset - 1  # the file position of buffer[0]: the byte before the range says whether a line starts at it

    def more(after: int) -> bytes:
        if after >= size:
            return b""
        want = stop - after if after < stop else TAIL_READ
        return fetch(after, min(READ_BYTES, max(1, want), size - after))

    buffer = more(at)
    if buffer[:1] == b"\n":
        pos = 1
    else:
        while (newline := buffer.find(b"\n")) < 0:
            if at + len(buffer) >= stop:
                return  # the range lies inside one line, which started before it
            extra = more(at + len(buffer))
            if not extra:
                return
            buffer += extra
        pos = newline + 1
    while at + pos < stop:
        newline = buffer.find(b"\n", pos)
        if newline >= 0:
            yield buffer[pos:newline]
            pos = newline + 1
            continue
        buffer, at, pos = buffer[pos:], at + pos, 0
        extra = more(at + len(buffer))
        if not extra:
            if buffer:
                yield buffer  # the file's last line, without a newline
            return
        buffer += extra
