"""``damaged.csv`` (the photos cut short, ``activities.fanin.damaged_rows``) is a table the results' README.txt says
a spreadsheet opens: a blob name that a spreadsheet would run as a formula stays text there, as in detections.csv,
and the preview page, which reads the list back, still knows such a photo for one of its pictures."""
from __future__ import annotations

import csv
import io

from activities.fanin import DAMAGED_HEADER, damaged_rows
from activities.previews import _damaged
from gpu_batch import layout

NAMES = ["=HYPERLINK(\"http://example.invalid\")/a.jpg", "+cam/b.jpg", "-cam/c.jpg", "@cam/d.jpg", "'=cam/q.jpg",
         "cam/e.jpg", "cam/line\nbreak, \"quoted\".jpg"]


class _Store:
    """The one read ``_damaged`` makes, from bytes held here."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def read_bytes_or_none(self, container: str, name: str) -> bytes | None:
        return self.blobs.get(name)


def test_a_photo_cut_short_whose_name_starts_like_a_formula_is_text_in_damaged_csv() -> None:
    rows = list(csv.reader(io.StringIO((DAMAGED_HEADER + damaged_rows(NAMES)).decode("utf-8"), newline="")))
    assert rows[0] == ["file"]
    cells = [r[0] for r in rows[1:]]
    assert cells == ["'" + n for n in NAMES[:5]] + NAMES[5:]  # formula and apostrophe starts, as in detections.csv
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)


def test_the_preview_page_still_finds_its_pictures_in_a_guarded_damaged_csv() -> None:
    store = _Store({layout.damaged_blob("t"): DAMAGED_HEADER + damaged_rows(NAMES)})
    wanted = {NAMES[0], NAMES[1], NAMES[4], NAMES[6], "cam/whole.jpg", "=cam/q.jpg"}
    total, shown = _damaged(store, "c", "t", wanted)  # type: ignore[arg-type]
    assert total == len(NAMES)
    assert shown == {NAMES[0], NAMES[1], NAMES[4], NAMES[6]}  # ``'=cam/q.jpg``, not ``=cam/q.jpg``
