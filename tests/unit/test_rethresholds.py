"""A large results file split between parallel re-render parts (``core.rethresholds``): every line once, in order."""
from __future__ import annotations

import pytest

from core import rethresholds
from core.rethresholds import entry_ranges, owned_lines


def lines_of(data: bytes, cuts: list[int]) -> list[bytes]:
    """What the parts cut at ``cuts`` (offsets, the first >= 1) yield together, in part order."""
    def fetch(offset: int, length: int) -> bytes:
        assert 0 <= offset < len(data) and length > 0  # never a read past the file's end (Azure answers 416)
        return data[offset:offset + length]

    bounds = [*cuts, len(data)]
    return [line for a, b in zip(bounds, bounds[1:]) for line in owned_lines(fetch, a, b - a, len(data))]


FILE = b'{"head": 1,\n "images": [\n  {"file":"a"},\n  {"file":"bb"},\n\n  {"file":"c"}\n ]\n}\n'


def test_every_line_is_taken_once_in_order_wherever_the_parts_are_cut() -> None:
    expected = FILE.split(b"\n")[1:-1]  # the lines after the first (offset 0), none after the final newline
    assert lines_of(FILE, [1]) == expected
    for cut in range(2, len(FILE)):
        assert lines_of(FILE, [1, cut]) == expected, cut
    for a in range(2, len(FILE), 3):
        for b in range(a + 1, len(FILE), 5):
            assert lines_of(FILE, [1, a, b]) == expected, (a, b)


def test_small_reads_and_long_lines_give_the_same_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"[\n" + b"\n".join(b'  {"file":"%d","x":"%s"},' % (i, b"y" * (i * 7 % 50)) for i in range(200)) + b"\n]"
    expected = data.split(b"\n")[1:]
    monkeypatch.setattr(rethresholds, "READ_BYTES", 16)
    monkeypatch.setattr(rethresholds, "TAIL_READ", 5)
    assert lines_of(data, [1]) == expected  # the last line has no newline: read to the file's end
    assert lines_of(data, [1, 100, 101, 2000, 2001, 2002]) == expected


def test_entry_ranges_cover_the_entries_in_about_equal_parts() -> None:
    assert entry_ranges(10, 110, 1000) == [(10, 100)]
    ranges = entry_ranges(10, 1010, 300)
    assert len(ranges) == 4 and ranges[0][0] == 10 and sum(n for _, n in ranges) == 1000
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:])) and max(n for _, n in ranges) <= 300
    assert entry_ranges(5, 5, 100) == [(5, 0)]
