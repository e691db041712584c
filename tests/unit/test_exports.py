"""The per-image CSV summary."""
from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest

from gpu_batch.formats.detections_csv import CSV_COLUMNS, CsvLines, csv_row


def _table(entries: list[dict[str, object]], threshold: float = 0.2) -> list[dict[str, str]]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for e in entries:
        w.writerow(csv_row(e, threshold))
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def test_rows_count_per_category_at_the_threshold_and_keep_best_confidences() -> None:
    rows = _table([
        {"file": "cam1/a.jpg", "detections": [{"category": "1", "conf": 0.9, "bbox": [0, 0, 1, 1]},
                                              {"category": "1", "conf": 0.25, "bbox": [0, 0, 1, 1]},
                                              {"category": "2", "conf": 0.1, "bbox": [0, 0, 1, 1]},
                                              {"category": "3", "conf": -0.8, "bbox": [0, 0, 1, 1]}]},  # repeat
        {"file": "cam1/b.jpg", "detections": []},
        {"file": "top.jpg", "failure": "image access failure", "detections": None},
        {"file": "cam, \"two\"/c.jpg", "detections": [{"category": "3", "conf": 0.5, "bbox": [0, 0, 1, 1]}]},
    ])
    a, b, failed, odd = rows
    assert (a["folder"], a["status"], a["animal_count"], a["person_count"], a["vehicle_count"]) == \
        ("cam1", "ok", "2", "0", "0")
    assert (a["animal_max_conf"], a["person_max_conf"], a["vehicle_max_conf"], a["max_conf"]) == \
        ("0.9", "0.1", "0.0", "0.9")
    assert (b["animal_count"], b["max_conf"]) == ("0", "0.0")
    assert (failed["status"], failed["failure"], failed["animal_count"], failed["folder"]) == \
        ("failed", "image access failure", "", "")
    assert (odd["file"], odd["folder"], odd["vehicle_count"]) == ('cam, "two"/c.jpg', 'cam, "two"', "1")
    assert all(r["threshold"] == "0.2" for r in rows)


def test_a_failed_rows_failure_names_its_reason() -> None:
    """MegaDetector writes "image access failure" for a missing, a corrupt and an archived file alike; a spreadsheet's
    reader must tell them apart (re-copy, rehydrate, or give up), so the worker's failure_reason goes beside it."""
    entries: list[dict[str, Any]] = [
        {"file": "cam1/corrupt.jpg", "failure": "image access failure", "detections": None,
         "failure_kind": "permanent", "failure_reason": "undecodable"},
        {"file": "cam1/cold.jpg", "failure": "image access failure", "detections": None,
         "failure_kind": "permanent", "failure_reason": "archived"},
        {"file": "cam1/old.jpg", "failure": "image access failure", "detections": None},  # written before reasons
    ]
    assert [r["failure"] for r in _table(entries)] == ["image access failure (undecodable)",
                                                      "image access failure (archived)", "image access failure"]
    lines = CsvLines(0.2)
    assert [next(csv.DictReader(io.StringIO(",".join(CSV_COLUMNS) + "\r\n" + lines.line(e))))["failure"]
            for e in entries] == [r["failure"] for r in _table(entries)]


def test_names_that_a_spreadsheet_would_run_as_formulas_stay_text() -> None:
    rows = _table([
        {"file": "=HYPERLINK(\"http://evil\")/a.jpg", "detections": []},
        {"file": "+cmd/b.jpg", "failure": "image access failure"},
        {"file": "@SUM(A1)/c.jpg", "detections": []},
        {"file": "-1+2.jpg", "detections": []},
        {"file": "site-a/=x.jpg", "detections": []},  # only a leading character matters
    ])
    assert [r["file"] for r in rows] == ["'=HYPERLINK(\"http://evil\")/a.jpg", "'+cmd/b.jpg", "'@SUM(A1)/c.jpg",
                                         "'-1+2.jpg", "site-a/=x.jpg"]
    assert [r["folder"] for r in rows] == ["'=HYPERLINK(\"http://evil\")", "'+cmd", "'@SUM(A1)", "", "site-a"]
    assert rows[1]["failure"] == "image access failure"


def test_the_guard_reads_back_without_doubt_a_leading_apostrophe_was_added() -> None:
    """``=x.jpg`` and ``'=x.jpg`` were both written ``'=x.jpg``: a reader could not tell which photo a row was.
    Now a name that starts with ``'`` gets one more, so every cell that starts with ``'`` had exactly one added
    (``unguarded`` removes it), in csv_row's and CsvLines' rows alike; a line feed or NUL start is guarded too
    (OWASP's CSV injection page, ASVS 1.2.10)."""
    from gpu_batch.formats.detections_csv import spreadsheet_safe, unguarded

    names = ["=x.jpg", "'=x.jpg", "'plain.jpg", "''.jpg", "\nnl.jpg", "\x00nul.jpg", "plain'.jpg", "cam/'a.jpg",
             "'cam/a.jpg"]
    entries: list[dict[str, object]] = [{"file": n, "detections": []} for n in names]
    rows = _table(entries)
    assert [r["file"] for r in rows] == ["'=x.jpg", "''=x.jpg", "''plain.jpg", "'''.jpg", "'\nnl.jpg", "'\x00nul.jpg",
                                         "plain'.jpg", "cam/'a.jpg", "''cam/a.jpg"]
    assert len({r["file"] for r in rows}) == len(names)  # no two names share a cell
    assert [unguarded(r["file"]) for r in rows] == names
    assert [r["folder"] for r in rows][-2:] == ["cam", "''cam"]
    lines = CsvLines(0.2)  # the merge's fast rows write the same cells
    assert [next(csv.DictReader(io.StringIO(",".join(CSV_COLUMNS) + "\r\n" + lines.line(e))))["file"]
            for e in entries] == [r["file"] for r in rows]
    assert all(unguarded(spreadsheet_safe(n)) == n for n in names + ["", "'", "-", "a"])


def _random_entries(seed: int, n: int) -> list[dict[str, Any]]:
    """Entries with adversarial names and failures (commas, quotes, CR/LF, NUL, formula starts, non-ASCII) and
    detections of every odd shape JSON could give (int/str/None confs and categories, edge floats, non-dicts)."""
    rnd = random.Random(seed)
    alphabet = list('abc/,"\r\n =+-@\t\'é漢\x00 .xyz') + ["\u2028", "\x7f", "//", "\ud7ff", "😀"]
    floats = [0, 1, 0.0005, 1e-05, 1e-7, 0.0, -0.0, 1.0, 0.2, 0.19999999999999998, 0.1, 0.5, 1e16, 123456789.123,
              float("nan"), float("inf"), -float("inf"), -0.3, 2.5e-320, 0.99999999999]

    def text() -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))

    def conf() -> Any:
        r = rnd.random()
        if r < 0.3:
            return rnd.choice(floats)
        if r < 0.35:
            return rnd.choice(["0.5", "x", None, True, 1, 0, [], {}])
        return round(rnd.random(), rnd.randint(1, 6)) if r < 0.5 else rnd.random()

    def detection() -> Any:
        if rnd.random() < 0.03:
            return rnd.choice([None, 1, "s", [1], {}])
        d: dict[str, Any] = {"bbox": [rnd.random() for _ in range(4)]}
        if rnd.random() < 0.97:
            d["category"] = rnd.choice(["1", "2", "3", "4", 1, None, "x"]) if rnd.random() < 0.1 else rnd.choice("123")
        if rnd.random() < 0.97:
            d["conf"] = conf()
        return d

    out: list[dict[str, Any]] = []
    for _ in range(n):
        e: dict[str, Any] = {}
        r = rnd.random()
        if r < 0.05:
            pass
        elif r < 0.1:
            e["file"] = rnd.choice([1, None, 2.5])
        elif r < 0.5:
            e["file"] = text()
        else:
            e["file"] = f"site{rnd.randint(0, 3)}/cam{rnd.randint(0, 3)}/IMG_{rnd.randint(0, 99)}.JPG"
        r = rnd.random()
        if r < 0.5:  # a capture time: EXIF's (most), and what other tools or a hand edit could leave there
            e["datetime"] = (f"2024:0{rnd.randint(1, 9)}:{rnd.randint(10, 28)} 0{rnd.randint(0, 9)}:15:00" if r < 0.4
                             else rnd.choice([None, 5, "", "2024-05-01T06:00:00+02:00", "=now()", "a,b", text()]))
        if rnd.random() < 0.15:
            e["failure"], e["detections"] = rnd.choice([text(), "Failure image access", 3, "=x", "a,b"]), None
            if rnd.random() < 0.5:  # the worker's reason beside it (gpu_batch.manifest), or what a hand edit left
                e["failure_reason"] = rnd.choice(["undecodable", "archived", "", None, 3, text()])
        else:
            e["detections"] = rnd.choice([None, [], [detection() for _ in range(rnd.randint(0, 6))]])
        out.append(e)
    return out


@pytest.mark.parametrize("threshold", [0.2, 0.0, 1, 0.0005, 1e-05, 0.1])
def test_csv_lines_are_csv_writers_text_byte_for_byte(threshold: float) -> None:
    lines = CsvLines(threshold)
    for entry in _random_entries(int(threshold * 1e6), 20000):
        buf = io.StringIO(newline="")
        csv.writer(buf).writerow(csv_row(entry, threshold))
        assert lines.line(entry) == buf.getvalue(), entry
