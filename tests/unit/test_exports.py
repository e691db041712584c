"""The per-image CSV summary."""
from __future__ import annotations

import csv
import io

from core.exports import CSV_COLUMNS, csv_row


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
