"""gpu_batch.formats.jsonio: the rules its docstring states, checked against the standard library's json."""
from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import pytest

from gpu_batch.formats import jsonio

NAMES = ["site/caméra 1/IMG_0001.JPG", "日本/カメラ/写真.jpg", "emoji/🦊 fox.jpg", "ctrl/a\tb\nc\x01\x1f\x7f.jpg",
         'quote/"q" back\\slash/x.jpg', "sep/\u2028\u2029.jpg", "combining/e\u0301.jpg", "/slash//a.jpg"]


def std(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_non_ascii_and_control_file_names_round_trip_exactly_and_are_written_as_the_stdlib_writes_them(name: str) -> None:
    entry = {"file": name, "detections": [{"category": "1", "conf": 0.5, "bbox": [0.1, 0.2, 0.3, 0.4]}]}
    data = jsonio.dumps(entry)
    assert data == std(entry)  # UTF-8, not \\u escapes, except the controls, escaped as the stdlib does
    assert json.loads(data) == entry and jsonio.loads(data) == entry
    assert json.loads(data)["file"] == name  # code point for code point (no normalisation)
    assert b"\n" not in data  # one value is one line


def test_floats_read_back_as_the_same_value_and_differ_from_the_stdlib_text_only_below_1e_4() -> None:
    fixed = [0.1, 1e-05, 0.0001, 1.5e-05, 1e-07, 9.99e-05, 0.000123, 0.333, 1.0, 0.0, -0.0, -1e-05, 1e16, 1e22, 5e-324,
             1.7976931348623157e308, 123456789.0, 0.1 + 0.2]
    rng = random.Random(7)
    randoms = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20000)]
    randoms += [rng.random() * 10 ** rng.randint(-12, 6) for _ in range(20000)]
    for value in fixed + [v for v in randoms if math.isfinite(v)]:
        text = jsonio.dumps(value)
        assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value), (value, text)
        assert jsonio.loads(text) == value and json.loads(text) == value
        if value == 0 or abs(value) >= 1e-4:
            assert text == std(value), value  # same text as json.dumps
    assert jsonio.dumps([1e-05, 1.5e-07, 0.0001, 1e16]) == b"[0.00001,1.5e-7,0.0001,1e+16]"
    assert json.dumps([1e-05, 1.5e-07, 0.0001, 1e16]) == "[1e-05, 1.5e-07, 0.0001, 1e+16]"


def test_a_big_confidence_list_round_trips_and_matches_the_stdlib_bytes_for_rounded_values() -> None:
    rng = random.Random(3)
    dets = [{"category": str(rng.randint(1, 3)), "conf": round(rng.random(), 3),
             "bbox": [round(rng.random(), 4) for _ in range(4)]} for _ in range(50_000)]
    doc = {"images": [{"file": f"cam/{i}.jpg", "detections": dets[i * 50:(i + 1) * 50]} for i in range(1000)]}
    data = jsonio.dumps(doc)
    assert jsonio.loads(data) == doc and json.loads(data) == doc
    assert data == std(doc)  # rounded to 3-4 places, nothing below 1e-4 but 0: the very same bytes
    assert jsonio.loads(json.dumps(doc, indent=1)) == doc  # reads the stdlib's layout too


def test_dumps_text_is_dumps_decoded() -> None:
    value = {"file": NAMES[1], "n": [1, 2.5, None, True]}
    assert jsonio.dumps_text(value) == jsonio.dumps(value).decode("utf-8") == '{"file":"日本/カメラ/写真.jpg","n":[1,2.5,null,true]}'


def test_key_order_is_kept_and_tuples_are_arrays() -> None:
    assert jsonio.dumps({"b": 1, "a": (1, "x")}) == b'{"b":1,"a":[1,"x"]}'


@pytest.mark.parametrize("value", [{1: "x"}, {None: 1}, 2 ** 64, -(2 ** 63) - 1, "lone \ud800 surrogate", object(),
                                   {1.5}])
def test_what_dumps_refuses_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        jsonio.dumps(value)


def test_the_64_bit_integer_bounds_are_written_exactly() -> None:
    assert jsonio.dumps([2 ** 64 - 1, -(2 ** 63)]) == std([2 ** 64 - 1, -(2 ** 63)])


def test_nan_and_infinity_are_written_as_null() -> None:
    assert jsonio.dumps([math.nan, math.inf, -math.inf]) == b"[null,null,null]"


@pytest.mark.parametrize("data,expected", [
    (b'{"conf": NaN}', "nan"), (b"[Infinity, -Infinity]", [math.inf, -math.inf]),
    (b'\xef\xbb\xbf{"a": 1}', {"a": 1}), (b'["\\ud800"]', ["\ud800"]), (b"[1e400]", [math.inf]),
    ('{"a": "é"}'.encode("utf-16"), {"a": "é"}), ("[1, 2]", [1, 2]), (memoryview(b"[1]"), [1]),
])
def test_loads_reads_what_the_stdlib_reads_where_orjson_refuses_it(data: Any, expected: Any) -> None:
    got = jsonio.loads(data)
    if expected == "nan":
        assert math.isnan(got["conf"])
    else:
        assert got == expected


@pytest.mark.parametrize("data", [b"", b"{", b'{"a": 1} x', b"\xff\xfe\x00", b"[1,]", b"{'a': 1}", "nul"])
def test_loads_raises_value_error_where_the_stdlib_did(data: bytes | str) -> None:
    with pytest.raises(ValueError):
        json.loads(data)
    with pytest.raises(ValueError):
        jsonio.loads(data)


def test_integers_beyond_64_bits_read_as_floats_and_those_within_exactly() -> None:
    assert jsonio.loads(b"[18446744073709551615, -9223372036854775808]") == [2 ** 64 - 1, -(2 ** 63)]
    big = jsonio.loads(b"18446744073709551616")
    assert isinstance(big, float) and big == 2.0 ** 64


def test_a_results_entry_is_ascii_with_the_escapes_json_dumps_writes() -> None:
    """MegaDetector writes its results with ``ensure_ascii=True`` and its readers open them in the system's encoding:
    a UTF-8 name read as cp1252 became mojibake, or stopped the validator. Escapes as ``json.dumps`` writes them
    (lower-case hex, surrogate pairs above U+FFFF); an ASCII entry keeps orjson's bytes."""
    from gpu_batch.formats.entries import entry_json

    entry = {"file": "Ávila/Zoë 森/\U0001f98a\u2028.jpg", "detections": [{"category": "1", "conf": 0.5,
                                                                   "bbox": [0.1, 0.2, 0.3, 0.4]}]}
    data = entry_json(entry)
    assert data.isascii() and json.loads(data) == entry
    assert data == json.dumps(entry, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    plain = {"file": "cam/IMG_1.JPG", "detections": [], "conf": 1e-5}
    assert entry_json(plain) == jsonio.dumps(plain)
