"""A busy refusal file (``<name>.error.json``, ``trapbatch-ready.json.error.json``) sits where callers write; one
edited to JSON that still names the version refused but whose ``busy_since`` is no time (or a time the hint's "until"
cannot be reckoned from) is counted anew, not a ``ValueError`` / ``OverflowError`` on every delivery.

Why: ``api.starters.caller_writable_json`` reads such a file as none when it is no longer JSON, because a read that
raised left the trigger failing before it wrote the refusal anew, every try; ``refusal_of`` parsed the ``busy_since``
of a file that is still JSON (Event Grid's time-bound hint) and raised the same way."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from api import starters
from core.errors import SourceBusy

ETAG = '"0x8DC0001"'
NOW = datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("since", ["garbage", "", "9999-12-31T23:00:00+00:00"])
@pytest.mark.parametrize("retried_by", [starters.EVENT_GRID_RETRIES, starters.DROP_TRIGGER_RETRIES])
def test_an_edited_busy_since_is_counted_anew(since: str, retried_by: starters.Retries) -> None:
    previous = {"error": "busy", "request_etag": ETAG, "busy_tries": 3, "busy_since": since}
    refusal = starters.refusal_of(SourceBusy("the images' account did not answer", "try later"), ETAG, retried_by,
                                  "marker", previous, now=NOW)
    assert refusal["busy_tries"] == 1 and refusal["busy_since"] == NOW.isoformat(), refusal
    assert refusal["hint"].startswith("nothing to do yet"), refusal["hint"]


def test_a_busy_since_that_is_a_time_goes_on_counting() -> None:
    previous = {"request_etag": ETAG, "busy_tries": 3, "busy_since": "2026-12-06T01:00:00+00:00"}
    refusal = starters.refusal_of(SourceBusy("x", "try later"), ETAG, starters.EVENT_GRID_RETRIES, "marker", previous,
                                  now=NOW)
    assert refusal["busy_tries"] == 4 and refusal["busy_since"] == "2026-12-06T01:00:00+00:00", refusal
    assert "until 2026-12-07T01:00:00+00:00" in refusal["hint"], refusal["hint"]


def test_a_busy_marker_refusal_says_how_to_get_past_a_service_slower_than_a_delivery_allows() -> None:
    """Each Event Grid delivery of a marker gives the services its checks' 15 s (``api.arrivals._Delivery``): an
    account that always answers, but slower, is busy at every delivery for Event Grid's 24 h, and waiting does not
    help; the refusal says so, with the figure the code uses, and how to start it instead. The drop trigger has no
    such budget."""
    from api.arrivals import MARKER_ANSWER_S, MARKER_DELIVERY_DEADLINE_S

    refusal = starters.refusal_of(SourceBusy("x", "try later"), ETAG, starters.EVENT_GRID_RETRIES, "marker", None,
                                  now=NOW)
    # the images' account and the Key Vault have the delivery's checks (api.arrivals._Delivery): its last
    # MARKER_ANSWER_S are kept for writing the answer
    checks = MARKER_DELIVERY_DEADLINE_S - MARKER_ANSWER_S
    assert f"Each delivery gives the services {checks:g} s" in refusal["hint"], refusal["hint"]
    assert "POST /api/tasks" in refusal["hint"]
    # the marker is deleted first: left, a later delivery may start the images again (another owner's id, a rerun)
    assert "delete this marker, then post the same request to POST /api/tasks" in refusal["hint"], refusal["hint"]
    dropped = starters.refusal_of(SourceBusy("x", "try later"), ETAG, starters.DROP_TRIGGER_RETRIES, "request", None,
                                  now=NOW)
    assert "Each delivery" not in dropped["hint"], dropped["hint"]
