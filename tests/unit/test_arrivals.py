"""The marker that starts a task on arrival: which events count, and what request a marker stands for."""
from __future__ import annotations

import pytest

from api.arrivals import marker_request
from core.errors import RequestInvalid
from devhost.event_grid import Subscription
from gpu_batch import layout


@pytest.mark.parametrize("subject, container", [
    ("/blobServices/default/containers/camera-traps-2024/blobs/trapbatch-ready.json", "camera-traps-2024"),
    ("/blobServices/default/containers/abc/blobs/site1/trapbatch-ready.json", None),  # not at the top
    ("/blobServices/default/containers/abc/blobs/trapbatch-ready.json.error.json", None),  # our own answer
    ("/blobServices/default/containers/abc/blobs/trapbatch-ready.task.json", None),
    ("/blobServices/default/containers/abc/blobs/img.jpg", None),
    ("/blobServices/default/containers/Bad_Name/blobs/trapbatch-ready.json", None),
])
def test_only_a_marker_at_the_top_of_a_container_counts(subject: str, container: str | None) -> None:
    assert layout.ready_marker_container(subject) == container
    if container:  # what the Event Grid subscription's subjectEndsWith filter lets through
        assert subject.endswith(layout.READY_SUBJECT_ENDS_WITH)


def test_a_marker_is_its_fields_over_its_own_container() -> None:
    assert marker_request("cams", b"") == {"container": "cams"}
    assert marker_request("cams", b"  \n") == {"container": "cams"}
    assert marker_request("cams", b'{"prefix": "2024/", "model": "MDV5A"}') == {
        "container": "cams", "prefix": "2024/", "model": "MDV5A"}
    assert marker_request("cams", b'{"container": "cams"}') == {"container": "cams"}


@pytest.mark.parametrize("raw, says", [
    (b'{"container": "other"}', "names container 'other'"),
    (b"[1, 2]", "JSON object"),
    (b"{not json", "JSON"),
    (b"{}" + b" " * 70_000, "bytes"),
])
def test_a_bad_marker_is_refused_with_a_hint(raw: bytes, says: str) -> None:
    with pytest.raises(RequestInvalid) as caught:
        marker_request("cams", raw)
    assert says in caught.value.message and caught.value.hint


def test_devhost_takes_subscriptions_of_the_form_infra_creates() -> None:
    assert Subscription.parse("container_ready" + "=" + layout.READY_SUBJECT_ENDS_WITH) == Subscription(
        "container_ready", layout.READY_MARKER)
    for bad in ("container_ready", "=/blobs/x.json", "f=/blobs/", "f=/blobs/a/b.json", "f=x.json"):
        with pytest.raises(ValueError):
            Subscription.parse(bad)


def test_the_subscription_filters_agree_with_the_marker_name() -> None:
    """devhost's default subscription and the deploy hooks' Event Grid filter name the same marker as the app."""
    from pathlib import Path

    from devhost.__main__ import DEFAULT_EVENT_GRID

    assert DEFAULT_EVENT_GRID == ["container_ready=" + layout.READY_SUBJECT_ENDS_WITH]
    root = Path(__file__).resolve().parents[2]
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        text = (root / "infra" / "hooks" / hook).read_text()
        assert layout.READY_SUBJECT_ENDS_WITH in text and "container_ready" in text, hook


def test_a_handed_over_marker_is_named_after_its_container_and_only_such_names_count() -> None:
    name = layout.marker_handoff_blob("cams-2024")
    assert name == "trapbatch-ready.cams-2024.json" and layout.is_drop_request(name)
    assert layout.marker_handoff_container(name) == "cams-2024"
    for other in ("survey.json", "trapbatch-ready.json", "trapbatch-ready.Cams.json", "trapbatch-ready.a/b.json",
                  "trapbatch-ready.ab.json", "x.trapbatch-ready.cams.json"):
        assert layout.marker_handoff_container(other) is None, other


def test_a_markers_missing_host_is_counted_only_from_its_own_versions_and_hosts_readable_past_times() -> None:
    """``_missing_across_deliveries``: Event Grid's deliveries count the grace of a host DNS said is missing from the
    first delivery of the same marker version (``request_etag``) that found the same host missing, as its refusal
    file says. A file about another version (a corrected marker) or another host, or whose ``host_missing_since`` is
    no aware ISO time or lies ahead of now (the file sits where callers write), starts the count at this delivery:
    busy, not the refusal that stays. The busy answer says from when a delivery refuses: the first such delivery's
    time plus ``MARKER_HOST_GONE_AFTER_S``, not this delivery's."""
    from datetime import datetime, timedelta, timezone

    from adapters.storage_errors import MARKER_HOST_GONE_AFTER_S
    from api.arrivals import _missing_across_deliveries
    from core.errors import SourceBusy, SourceUnavailable

    host, etag = "nosuchaccount.invalid", '"0x8DD"'
    now = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    long_ago = (now - timedelta(seconds=MARKER_HOST_GONE_AFTER_S * 10)).isoformat()
    refused = SourceUnavailable(f"cannot check container 'cams': host name {host} does not resolve", "check it")
    refused.missing_host = host
    recorded = {"request_etag": etag, "missing_host": host, "host_missing_since": long_ago}
    assert _missing_across_deliveries(refused, recorded, etag, now) == (refused, {})  # the grace is over
    for previous in ({**recorded, "request_etag": '"0x8DE"'}, {**recorded, "missing_host": "other.invalid"},
                     {**recorded, "host_missing_since": "2026-12-06T11:00:00"},  # no zone
                     {**recorded, "host_missing_since": "yesterday"},
                     {**recorded, "host_missing_since": (now + timedelta(days=1)).isoformat()}):
        answer, fields = _missing_across_deliveries(refused, previous, etag, now)
        assert isinstance(answer, SourceBusy), (previous, answer)
        assert fields == {"missing_host": host, "host_missing_since": now.isoformat()}, (previous, fields)
    first = now - timedelta(seconds=40)
    answer, fields = _missing_across_deliveries(refused, {**recorded, "host_missing_since": first.isoformat()},
                                                etag, now)
    assert isinstance(answer, SourceBusy) and fields["host_missing_since"] == first.isoformat(), fields
    until = first + timedelta(seconds=MARKER_HOST_GONE_AFTER_S)
    assert f"a delivery from {until.isoformat()} on" in answer.message, answer.message
