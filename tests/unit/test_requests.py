from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import RequestInvalid
from core.requests import TaskRequest, parse_task_request


def test_minimal_request_normalizes_defaults() -> None:
    r = parse_task_request({"container": "cams"}, default_model="MDV5A", default_images_per_shard=500)
    assert (r.container, r.prefix, r.model, r.images_per_shard) == ("cams", "", "MDV5A", 500)
    assert r.task_id.startswith("task-") and len(r.task_id) == 25


def test_default_shard_is_long_enough_to_amortize_a_gpu_workers_start() -> None:
    """A GPU worker spends ~10 s starting per shard (bench/RESULTS.md): the default shard keeps that near 20 %."""
    from core.settings import Settings

    assert parse_task_request({"container": "cams"}).images_per_shard == 10_000
    knobs = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).knobs
    assert knobs.images_per_shard == 10_000


def test_same_request_same_task_id_regardless_of_labels_and_key_order() -> None:
    a = parse_task_request({"container": "cams", "prefix": "/site-a/", "model": "m.pt", "request_name": "one"})
    b = parse_task_request({"request_name": "two", "caller": "x", "model": "m.pt", "prefix": "site-a/",
                            "container": "cams"})
    assert a.task_id == b.task_id
    c = parse_task_request({"container": "cams", "prefix": "site-b/", "model": "m.pt"})
    assert c.task_id != a.task_id


def test_sample_defaults_seed_zero_and_seed_changes_id() -> None:
    a = parse_task_request({"container": "cams", "sample_n": 10, "model": "m"})
    assert a.seed == 0
    b = parse_task_request({"container": "cams", "sample_n": 10, "seed": 1, "model": "m"})
    assert a.task_id != b.task_id


@pytest.mark.parametrize("body, field", [
    ([], "JSON object"),
    ({}, "'container' is required"),
    ({"container": "Bad_Name"}, "not a valid blob container name"),
    ({"container": "cams", "first_n": 0}, "'first_n' must be at least 1"),
    ({"container": "cams", "first_n": "3"}, "'first_n' must be an integer"),
    ({"container": "cams", "first_n": True}, "'first_n' must be an integer"),
    ({"container": "cams", "first_n": 1, "sample_n": 1}, "cannot both be set"),
    ({"container": "cams", "seed": 3}, "'seed' only applies"),
    ({"container": "cams", "colour": "red"}, "unknown field(s): colour"),
    ({"container": "cams", "prefix": 7}, "'prefix' must be a string"),
    ({"container": "cams", "images_per_shard": 10**7}, "images_per_shard"),
])
def test_bad_requests_name_the_field_and_give_a_hint(body: object, field: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_task_request(body)
    assert field in info.value.message
    assert info.value.hint
    assert info.value.to_dict() == {"error": info.value.message, "hint": info.value.hint}


@pytest.mark.parametrize("typo, meant", [("treshold", "preview_threshold"), ("threshold", "preview_threshold"),
                                         ("first-n", "first_n"), ("prefx", "prefix"), ("Camera_Depth", "camera_depth")])
def test_an_unknown_field_close_to_a_known_one_is_named_in_the_hint(typo: str, meant: str) -> None:
    """A misspelt field got the list of all 24 allowed ones: which one it meant was left to the reader."""
    with pytest.raises(RequestInvalid) as info:
        parse_task_request({"container": "cams", typo: 1})
    assert info.value.message == f"unknown field(s): {typo}"
    assert info.value.hint.startswith(f"did you mean {meant}? allowed fields: ")
    with pytest.raises(RequestInvalid) as info:
        parse_task_request({"container": "cams", "colour": "red"})
    assert info.value.hint.startswith("allowed fields: ")  # nothing close: no guess


def test_repeat_removal_bodies() -> None:
    from core.requests import parse_repeat_removal

    ids = ["r00001", "r00002", "r00003"]
    assert parse_repeat_removal({"remove": ["r00003", "r00001"]}, ids) == ["r00001", "r00003"]
    assert parse_repeat_removal({"remove": "all"}, ids) == ids
    assert parse_repeat_removal({"keep": ["r00002"]}, ids) == ["r00001", "r00003"]
    for bad, message in (([], "JSON object"), ({}, "exactly one"), ({"keep": [], "remove": []}, "exactly one"),
                         ({"remove": "r00001"}, "list of location ids"), ({"remove": ["r09999"]}, "unknown location"),
                         ({"keep": ids}, "nothing to remove"), ({"remove": [], "x": 1}, "unknown field")):
        with pytest.raises(RequestInvalid, match=message) as info:
            parse_repeat_removal(bad, ids)
        assert info.value.hint


def test_source_account_and_secret_name() -> None:
    base = {"container": "partner-photos"}
    plain = parse_task_request(base)
    r = parse_task_request({**base, "source_account_url": "https://partner.blob.core.windows.net/",
                            "credential_secret": "partner-sas"})
    assert (r.source_account_url, r.credential_secret) == ("https://partner.blob.core.windows.net", "partner-sas")
    assert r.task_id != plain.task_id  # another account, other images
    assert "source_account_url" not in plain.identity()  # earlier requests keep their ids
    assert parse_task_request({**base, "source_account_url": "http://127.0.0.1:10000/devstoreaccount1"}).source_account_url
    for bad, message in (
            ({"source_account_url": "https://partner.blob.core.windows.net/?sv=2024&sig=abc"}, "must not carry a SAS"),
            ({"source_account_url": "http://partner.blob.core.windows.net"}, "not an https"),
            ({"source_account_url": "https://a.blob.core.windows.net", "credential_secret": "sv=2024&sig=x"}, "name"),
            ({"credential_secret": "partner-sas"}, "needs 'source_account_url'")):
        with pytest.raises(RequestInvalid, match=message) as info:
            parse_task_request({**base, **bad})
        assert info.value.hint


def test_max_failed_fraction_is_a_bounded_number_that_does_not_change_the_task_id() -> None:
    base = {"container": "cams"}
    assert parse_task_request(base).max_failed_fraction is None
    r = parse_task_request({**base, "max_failed_fraction": 0.02})
    assert r.max_failed_fraction == 0.02 and r.task_id == parse_task_request(base).task_id
    assert parse_task_request({**base, "max_failed_fraction": 1}).max_failed_fraction == 1.0
    for bad in (-0.1, 1.5, "5%", True, [0.1]):
        with pytest.raises(RequestInvalid) as info:
            parse_task_request({**base, "max_failed_fraction": bad})
        assert "max_failed_fraction" in info.value.message and info.value.hint


def test_request_bodies_are_refused_with_4xx_before_parsing_goes_wrong() -> None:
    from core.errors import RequestTooLarge, UnsupportedContentType
    from core.requests import MAX_BODY_BYTES, parse_json_body

    assert parse_json_body(b'{"container": "cams"}', "application/json; charset=utf-8") == {"container": "cams"}
    assert parse_json_body(b'{"container": "cams"}') == {"container": "cams"}  # a dropped blob: no media type
    with pytest.raises(UnsupportedContentType) as info:
        parse_json_body(b'{"container": "cams"}', "application/x-www-form-urlencoded")
    assert info.value.status_code == 415 and "Content-Type: application/json" in info.value.hint
    with pytest.raises(RequestTooLarge) as too_big:
        parse_json_body(b" " * (MAX_BODY_BYTES + 1), "application/json")
    assert too_big.value.status_code == 413
    for raw in (b"{nope", b"[" * 50_000 + b"]" * 50_000, b"\xff\xfe"):
        with pytest.raises(RequestInvalid) as bad:
            parse_json_body(raw[:MAX_BODY_BYTES], "application/json")
        assert bad.value.status_code == 400


@pytest.mark.parametrize("field, value", [("first_n", 10**10), ("sample_n", 10**10), ("seed", 2**32),
                                          ("images_per_shard", 100_001), ("prefix", "a\x00b"),
                                          ("request_name", "line\nbreak"), ("caller", "\x7f")])
def test_every_field_is_bounded(field: str, value: object) -> None:
    body = {"container": "cams", field: value}
    if field == "seed":
        body["sample_n"] = 5
    with pytest.raises(RequestInvalid) as info:
        parse_task_request(body)
    assert field in info.value.message and info.value.hint


def test_preview_threshold_is_bounded_and_does_not_change_the_task_id() -> None:
    base = {"container": "cams"}
    assert parse_task_request(base).preview_threshold is None
    r = parse_task_request({**base, "preview_threshold": 0.35})
    assert r.preview_threshold == 0.35 and r.task_id == parse_task_request(base).task_id
    assert r.to_dict()["preview_threshold"] == 0.35
    assert parse_task_request({**base, "preview_threshold": 1}).preview_threshold == 1.0
    for bad in (0, 0.001, -0.2, 1.01, "0.2", True):
        with pytest.raises(RequestInvalid) as info:
            parse_task_request({**base, "preview_threshold": bad})
        assert "'preview_threshold' must be a number from 0.005 to 1" in info.value.message and info.value.hint


def test_dry_run_is_a_boolean_and_part_of_the_task_id_only_when_set() -> None:
    from core.requests import parse_task_request

    real = parse_task_request({"container": "cams"})
    dry = parse_task_request({"container": "cams", "dry_run": True})
    assert dry.dry_run is True and real.dry_run is False
    assert dry.task_id != real.task_id  # an estimate never finds (or blocks) the real run
    assert parse_task_request({"container": "cams", "dry_run": False}).task_id == real.task_id
    with pytest.raises(RequestInvalid, match="dry_run"):
        parse_task_request({"container": "cams", "dry_run": "yes"})


def test_rerun_is_a_verb_not_part_of_the_task_id() -> None:
    plain = parse_task_request({"container": "cams"})
    again = parse_task_request({"container": "cams", "rerun": True})
    assert again.rerun is True and plain.rerun is False
    assert again.task_id == plain.task_id and again.task_id_for("ana") == plain.task_id_for("ana")
    assert again.to_dict()["rerun"] is True and TaskRequest.from_dict(again.to_dict()) == again
    with pytest.raises(RequestInvalid, match="'rerun' must be true or false"):
        parse_task_request({"container": "cams", "rerun": "yes"})


def test_only_new_is_a_rerun_verb_not_part_of_the_task_id() -> None:
    assert parse_task_request({"container": "cams", "only_new": False}).only_new is False
    plain = parse_task_request({"container": "cams"})
    only_new = parse_task_request({"container": "cams", "only_new": True})
    assert only_new.only_new is True and only_new.rerun is True  # it implies rerun
    assert only_new.task_id == plain.task_id
    assert TaskRequest.from_dict(only_new.to_dict()) == only_new
    with pytest.raises(RequestInvalid, match="'only_new' must be true or false"):
        parse_task_request({"container": "cams", "only_new": 1})


def test_zooniverse_visit_frames_is_a_bounded_count_that_does_not_change_the_task_id() -> None:
    base = {"container": "cams"}
    assert parse_task_request(base).zooniverse_visit_frames is None
    r = parse_task_request({**base, "zooniverse_visit_frames": 3})
    assert r.zooniverse_visit_frames == 3 and r.task_id == parse_task_request(base).task_id
    assert TaskRequest.from_dict(r.to_dict()).zooniverse_visit_frames == 3  # kept with the task's request
    for bad, said in ((0, "at least 1"), (21, "at most 20"), ("3", "an integer"), (True, "an integer"),
                      (2.5, "an integer")):
        with pytest.raises(RequestInvalid) as info:
            parse_task_request({**base, "zooniverse_visit_frames": bad})
        assert f"'zooniverse_visit_frames' must be {said}" in info.value.message


def test_camera_depth_is_a_bounded_folder_count_kept_with_the_request_and_not_part_of_the_task_id() -> None:
    base = {"container": "cams", "prefix": "2024/"}
    plain = parse_task_request(base)
    assert plain.camera_depth is None and "camera_depth" not in plain.to_dict()  # the stored form stays today's
    r = parse_task_request({**base, "camera_depth": 1})
    assert r.camera_depth == 1 and r.task_id == plain.task_id and r.task_id_for("ana") == plain.task_id_for("ana")
    assert r.to_dict()["camera_depth"] == 1 and TaskRequest.from_dict(r.to_dict()) == r  # kept with the request
    assert TaskRequest.from_dict(plain.to_dict()) == plain
    assert parse_task_request({**base, "camera_depth": None}) == plain
    assert parse_task_request({**base, "camera_depth": 32}).camera_depth == 32
    for bad in (0, 33, -1, 1.5, "1", True, [1]):
        with pytest.raises(RequestInvalid) as info:
            parse_task_request({**base, "camera_depth": bad})
        assert "'camera_depth' must be a whole number of folders from 1 to 32" in info.value.message
        assert '"camera_depth": 1' in info.value.hint and "camera-01/2024-06-01/IMG_1.JPG" in info.value.hint


def test_event_interval_is_bounded_seconds_that_do_not_change_the_task_id() -> None:
    base = {"container": "cams"}
    assert parse_task_request(base).event_interval_s is None
    r = parse_task_request({**base, "event_interval_s": 1800})
    assert r.event_interval_s == 1800.0 and r.task_id == parse_task_request(base).task_id
    assert TaskRequest.from_dict(r.to_dict()).event_interval_s == 1800.0  # kept with the task's request
    assert parse_task_request({**base, "event_interval_s": 0}).event_interval_s == 0.0
    for bad in (-1, 86400.5, "60", True):
        with pytest.raises(RequestInvalid) as info:
            parse_task_request({**base, "event_interval_s": bad})
        assert "'event_interval_s' must be a number of seconds from 0 to 86400" in info.value.message
        assert "1800" in info.value.hint


def test_clock_corrections_are_seconds_or_a_photos_two_times_and_do_not_change_the_task_id() -> None:
    base = {"container": "cams"}
    assert parse_task_request(base).clock_corrections is None
    r = parse_task_request({**base, "clock_corrections": {
        "site-a/cam-3/": 3600, "site-b": {"camera": "2000:01:01 00:12:00", "actual": "2024-06-01 06:30:00"},
        "site-c": -90.0}})
    assert r.clock_corrections == {"site-a/cam-3": 3600, "site-b": 770537880, "site-c": -90}
    assert r.task_id == parse_task_request(base).task_id
    assert TaskRequest.from_dict(r.to_dict()).clock_corrections == r.clock_corrections
    for bad, said in (([1], "an object"), ({"": 5}, "not a folder name"), ({"/": 5}, "not a folder name"),
                      ({"a\n": 5}, "not a folder name"), ({"a": 1.5}, "whole seconds"), ({"a": True}, "must be seconds"),
                      ({"a": "3600"}, "must be seconds"), ({"a": 10**10}, "within a century"),
                      ({"a": {"camera": "2000:13:01 00:00:00", "actual": "2024:01:01 00:00:00"}}, "must be times"),
                      ({"a": {"camera": "2000:01:01 00:00:00"}}, "must be seconds"), ({"a": 1, "a/": 2}, "twice"),
                      ({f"c{i}": 1 for i in range(1001)}, "at most 1000")):
        with pytest.raises(RequestInvalid) as info:
            parse_task_request({**base, "clock_corrections": bad})
        assert said in info.value.message and "site-a/cam-3" in info.value.hint, (bad, info.value.message)


def test_a_threshold_out_of_range_is_told_how_to_fix_it_where_it_is_asked() -> None:
    """A task's preview_threshold may be left out (the model's default); a re-render's threshold may not: its hint
    said "leave it out", which the re-render then refused as required."""
    from core.requests import parse_rerender

    with pytest.raises(RequestInvalid) as optional:
        parse_task_request({"container": "cams", "preview_threshold": 2})
    assert "leave it out" in optional.value.hint
    with pytest.raises(RequestInvalid) as required:
        parse_rerender({"threshold": 2})
    assert "leave it out" not in required.value.hint and '"threshold": 0.2' in required.value.hint


def test_a_body_error_shows_the_routes_own_example_and_how_to_shorten_a_task_request() -> None:
    """A malformed re-render, removal or search body was told to send ``{"container": ...}`` (a task request's
    example); a task request over the size limit was told to "send only the fields of a task request" when it did
    (a long clock_corrections), without saying how to make it fit."""
    from core.errors import RequestTooLarge
    from core.requests import (MAX_BODY_BYTES, RERENDER_EXAMPLE, TASK_BODY_HINT, encoded_size, parse_json_body,
                               parse_task_request)

    with pytest.raises(RequestInvalid) as bad:
        parse_json_body(b"{nope", "application/json", RERENDER_EXAMPLE)
    assert "threshold" in bad.value.hint and "container" not in bad.value.hint
    with pytest.raises(RequestInvalid) as untyped:
        parse_json_body(b"{}", "text/plain", RERENDER_EXAMPLE)
    assert "threshold" in untyped.value.hint and "container" not in untyped.value.hint
    pairs = {f"site-a/cameras/cam-{i:04d}x": {"camera": "2000:01:01 00:12:00", "actual": "2024-06-01 06:30:00"}
             for i in range(1000)}
    body = {"container": "my-camera-traps", "clock_corrections": pairs}
    parse_task_request(body)  # valid: 1,000 folders is the field's own limit...
    assert encoded_size(body) > MAX_BODY_BYTES  # ...but not as a body: the hint says how to shorten it
    with pytest.raises(RequestTooLarge) as large:
        parse_json_body(json.dumps(body).encode(), "application/json")
    assert large.value.hint == TASK_BODY_HINT and "seconds" in large.value.hint
    as_seconds = {"container": "my-camera-traps", "clock_corrections": {name: 3600 for name in pairs}}
    assert parse_task_request(parse_json_body(json.dumps(as_seconds, indent=2).encode(), "application/json"))


@pytest.mark.parametrize("body, field", [
    ({"container": "cams", "request_name": "x" * 100_000}, "request_name"),
    ({"container": "cams", "prefix": "p/" * 40_000, "request_name": "site a"}, "prefix"),
])
def test_a_body_over_the_limit_names_the_field_that_makes_it_large(body: dict[str, object], field: str) -> None:
    """The 413's hint spoke of clock_corrections whatever was large: a 100 KB request_name was told to write its
    clock corrections as seconds. The CLI, which refuses such a body before sending it, gives the same hint."""
    from core.errors import RequestTooLarge
    from core.requests import TASK_BODY_HINT, parse_json_body

    with pytest.raises(RequestTooLarge) as large:
        parse_json_body(json.dumps(body).encode(), "application/json")
    assert large.value.hint.startswith(f"{field!r} takes ") and "clock_corrections" not in large.value.hint
    from core.requests import too_large_hint_for

    assert too_large_hint_for(body, TASK_BODY_HINT) == large.value.hint
    with pytest.raises(RequestTooLarge) as unread:  # too large to be worth reading: the route's hint, unread
        parse_json_body(json.dumps({"request_name": "x" * 2_000_000}).encode(), "application/json")
    assert unread.value.hint == TASK_BODY_HINT


def test_an_oversized_body_with_nan_is_a_413_not_a_500() -> None:
    """``json.loads`` takes ``NaN`` and ``Infinity``, which ``encoded_size`` (``allow_nan=False``) refuses with a
    ValueError: measuring the fields of such an oversized body to name the largest raised it, and the edge answered
    500 ("trapbatch bug") where the body was only too large."""
    from core.errors import RequestTooLarge
    from core.requests import parse_json_body

    raw = b'{"request_name": "' + b"x" * 70_000 + b'", "seed": NaN, "first_n": -Infinity}'
    with pytest.raises(RequestTooLarge) as large:
        parse_json_body(raw, "application/json")
    assert large.value.status_code == 413 and large.value.hint.startswith("'request_name' takes ")


def test_an_oversized_bodys_hint_does_not_echo_a_field_name_of_any_length() -> None:
    """The hint named the largest field whole: a body whose one name was 900 KB (a key is read up to 16 times the
    limit) got that name back in its 413, a megabyte answer (and log line) to a request refused as too large."""
    from core.errors import RequestTooLarge
    from core.requests import parse_json_body

    with pytest.raises(RequestTooLarge) as large:
        parse_json_body(json.dumps({"k" * 900_000: "v" * 1000}).encode(), "application/json")
    assert len(large.value.hint) < 300 and large.value.hint.startswith("'kkk")


def test_an_oversized_bodys_field_name_is_never_compiled_as_a_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether the route's hint speaks of the largest field was a regex of its name: a 900 KB name cost 1.3 s of CPU
    to compile, and ``re`` keeps its last 512 patterns, about 7 MB each, so distinct such bodies (any key holder may
    send them) held gigabytes of the app's memory."""
    import re

    from core.requests import TASK_BODY_HINT, too_large_hint_for

    compiled: list[int] = []
    real = re._compile  # type: ignore[attr-defined]

    def spy(pattern: Any, flags: Any) -> Any:
        compiled.append(len(pattern))
        return real(pattern, flags)

    monkeypatch.setattr(re, "_compile", spy)
    assert too_large_hint_for({"z" * 200_000: 1}, TASK_BODY_HINT).startswith("'zzz")
    assert too_large_hint_for({"clock_corrections": {"a": 1}}, TASK_BODY_HINT) == TASK_BODY_HINT
    assert max(compiled, default=0) < 1000


def test_an_oversized_body_of_many_small_fields_gets_the_routes_hint_not_one_small_field() -> None:
    """No one field made it large, yet the largest of 20,000 was named: "'f0' takes 12 of its bytes: shorten it"."""
    from core.errors import RequestTooLarge
    from core.requests import TASK_BODY_HINT, parse_json_body

    body = {"container": "cams", **{f"f{i}": "a" * 10 for i in range(20_000)}}
    with pytest.raises(RequestTooLarge) as large:
        parse_json_body(json.dumps(body).encode(), "application/json")
    assert large.value.hint == TASK_BODY_HINT


@pytest.mark.parametrize("content_type", ["", " ", "; charset=utf-8"])
def test_a_body_without_a_content_type_is_told_to_send_one(content_type: str) -> None:
    """It was answered "must be JSON, not 'untyped'", a word of ours that named no header to set."""
    from core.errors import UnsupportedContentType
    from core.requests import parse_json_body

    with pytest.raises(UnsupportedContentType) as refused:
        parse_json_body(b'{"container": "cams"}', content_type)
    assert refused.value.status_code == 415 and "untyped" not in refused.value.message
    assert refused.value.message.endswith("send Content-Type: application/json")


def test_a_container_of_another_type_is_said_so_not_missing() -> None:
    with pytest.raises(RequestInvalid, match="'container' must be a string, got int"):
        parse_task_request({"container": 5})
    with pytest.raises(RequestInvalid, match="'container' is required"):
        parse_task_request({"prefix": "x/"})


@pytest.mark.parametrize("raw, said", [
    (b'{"container": "cams", "max_images": ' + b"9" * 5000 + b"}", "more than 4,300 digits"),
    (b'{"container": "caf\xe9"}', "not UTF-8 text"),
    (b'{"container": ', "not valid JSON"),
])
def test_a_body_the_parser_refuses_says_why(raw: bytes, said: str) -> None:
    """A 5,000-digit number (Python refuses to convert it: sys.get_int_max_str_digits) and Latin-1 bytes were both
    answered "not valid JSON", which they are by the letter but which sent the sender looking for a syntax error."""
    from core.requests import parse_json_body

    with pytest.raises(RequestInvalid, match=said) as refused:
        parse_json_body(raw, "application/json")
    assert "Content-Type: application/json" in refused.value.hint


# ---------------------------------------------------------------- pinned rules (a mutation audit found them unpinned)

def test_a_media_types_case_does_not_matter() -> None:
    """RFC 9110 8.3.1: type and subtype names are case-insensitive (some HTTP clients send ``Application/JSON``)."""
    from core.requests import parse_json_body

    assert parse_json_body(b'{"container": "cams"}', "Application/JSON") == {"container": "cams"}


def test_bounds_that_are_inclusive_are_accepted_at_the_bound() -> None:
    from core.requests import MAX_CLOCK_SHIFT_S, MIN_PREVIEW_THRESHOLD, parse_rerender

    assert parse_rerender({"threshold": MIN_PREVIEW_THRESHOLD}) == MIN_PREVIEW_THRESHOLD
    assert parse_task_request({"container": "cams", "preview_threshold": MIN_PREVIEW_THRESHOLD}).preview_threshold \
        == MIN_PREVIEW_THRESHOLD
    corrections = {"a": -MAX_CLOCK_SHIFT_S, "b": MAX_CLOCK_SHIFT_S}
    assert parse_task_request({"container": "cams", "clock_corrections": corrections}).clock_corrections == corrections


@pytest.mark.parametrize("field, value, message", [
    ("source_account_url", "https://photos.blob.core.windows.net/c/sig=abc", "SAS token"),
    ("notify_url", "https://hooks.example.org/trapbatch#x", "fragment"),
    ("clock_corrections", {"a" * 1025: 60}, "not a folder name"),
])
def test_refused_inputs_say_why(field: str, value: object, message: str) -> None:
    with pytest.raises(RequestInvalid, match=message):
        parse_task_request({"container": "cams", field: value})


def test_a_blank_model_takes_the_default_and_no_clock_corrections_are_none() -> None:
    r = parse_task_request({"container": "cams", "model": "  ", "clock_corrections": {}}, default_model="MDV5A")
    assert (r.model, r.clock_corrections) == ("MDV5A", None)
    assert parse_task_request({"container": "cams", "model": " MDV5B "}).model == "MDV5B"


def test_an_oversized_body_nested_as_deep_as_the_parser_allows_is_a_413_not_a_crash() -> None:
    """An oversized body is parsed to name its largest field; a field nested almost as deep as the parser allows was
    read, then measured again with ``json.dumps`` a level or two deeper (``[name, value]``), whose RecursionError
    escaped: the refusal became a 500. Such a body gets the route's hint."""
    import sys

    from core.errors import RequestTooLarge
    from core.requests import MAX_BODY_BYTES, TASK_BODY_HINT, parse_json_body, too_large_hint_for

    deep: Any = []
    for _ in range(sys.getrecursionlimit()):
        deep = [deep]
    assert too_large_hint_for({"a": deep}, TASK_BODY_HINT) == TASK_BODY_HINT
    pad = "x" * MAX_BODY_BYTES
    for depth in range(sys.getrecursionlimit() - 300, sys.getrecursionlimit() + 10):  # the depth varies with the stack
        raw = f'{{"a": {"[" * depth}{"]" * depth}, "pad": "{pad}"}}'.encode()
        with pytest.raises(RequestTooLarge):
            parse_json_body(raw, "application/json")
