"""The plain progress lines ``trapbatch submit --wait`` and ``status --wait`` print in logs and pipes
(``cli.progress``): the ETA's format, which parts appear when, and statuses that lack a field."""
from __future__ import annotations

import pytest

from cli.progress import _eta, awaiting_line, progress_line, waiting_note, zooniverse_cut_short_line


@pytest.mark.parametrize(("seconds", "shown"), [
    (65, "1m05s"), (59.9, "0m59s"), (3599, "59m59s"), (3600, "1h00m"), (3725, "1h02m"), (7 * 3600 + 540, "7h09m"),
    (None, "-"), ("soon", "-"),
])
def test_the_eta_reads_as_minutes_and_seconds_under_an_hour_then_hours_and_minutes(seconds: object, shown: str) -> None:
    """Two-digit seconds and minutes (a column that does not jump), a whole hour already in hours, a fraction
    truncated (never an ETA shorter than the app's), and anything not a number "-"."""
    assert _eta(seconds) == shown


def test_a_detecting_line_without_a_rate_has_no_eta_and_a_failed_stage_without_an_error_is_its_name() -> None:
    line = progress_line({"stage": "detecting", "images_done": 0, "images": 10, "images_per_second": 0,
                          "eta_seconds": None})
    assert line.endswith("0 resubmitted") and "ETA" not in line, line
    assert progress_line({"stage": "failed"}) == "failed"


def test_one_photo_cut_short_is_said_in_the_singular() -> None:
    line = zooniverse_cut_short_line({"zooniverse_cut_short": 1}, "t")
    assert "would see its grey part): re-copy it from the cards" in line, line


def test_a_waiting_note_says_only_the_parts_its_status_has() -> None:
    """An attempt number only with its ``attempt``, the outage's window only with its ``since``; a ``waiting`` that
    is not an object (a status from elsewhere) is no note, not a crash."""
    base = {"reason": "busy", "step": "merge", "at": "10:00"}
    assert waiting_note({"waiting": {**base, "of": 8}}) == "; waiting for a busy service (busy): merge tried again at 10:00"
    assert "out of reach" not in waiting_note({"waiting": {**base, "until": "11:00"}})
    assert waiting_note({"waiting": "yes"}) == ""


def test_an_awaiting_line_without_an_estimate_or_with_a_zero_cost() -> None:
    """A status whose ``estimate`` is null still prints the commands; a cost of 0 is shown (an estimate of 0, not
    an unknown one)."""
    line = awaiting_line({"images": 5, "estimate": None, "id": "t"})
    assert line.startswith("awaiting confirmation: 5 images, ? GPU-hours; nothing runs until 'trapbatch confirm t'")
    assert ", $0;" in awaiting_line({"images": 5, "estimate": {"gpu_hours": 0, "cost": 0}, "id": "t"})
