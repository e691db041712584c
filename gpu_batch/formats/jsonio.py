"""Fast JSON for the per-image hot paths: ``loads`` and ``dumps`` on orjson, with the exact rules below.

Why: at 250 images/s per GPU the control plane's CPU per image must fall toward 40 us, and the standard library's
json was half of the merge part (parsing the workers' results, writing each entry again) and a large share of the
exports. orjson (requirements/app.txt) is 2-5x faster for these documents. Only the per-image paths use this
module: the results entries both merges write (``core.fanin.entry_json``) and the folder rows of the repeat search
(``activities.fanin``), reading the workers' shard results (``activities.shard_results``) and the search's folder
lines, the exports reading entries (``core.mdformat.iter_images`` on the merge's layout, ``activities.exportparts``)
and writing COCO's image and annotation lines (``gpu_batch.formats.coco``), the enumeration's listing parts, first
shard manifests and shard ETag lists (``activities.enumerate``), an image list's units, parts, shard documents and
first facts (``activities.image_list``, the merge views' list rows), and the reuse's attempt 0
(``activities.reuse``): written through ``BlobStore.write_compact_json``. Small per-task documents (preview sample, repeats,
indexes and plans, results and COCO heads, ``BlobStore.read_json``/``write_json``), text people read (Camtrap DP's
list-metadata comment), the orchestrators (the Durable SDK's own JSON) and the HTTP API keep the standard library:
their bytes stay as they were.

``dumps(value) -> bytes`` (``orjson.dumps`` without options), byte for byte:

* compact: separators ``","`` and ``":"``, no whitespace, no newline anywhere (so one value is one line);
* UTF-8, as ``json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")`` writes strings: only
  ``"``, ``\\`` and the controls U+0000-U+001F are escaped (``\\b \\t \\n \\f \\r``, the others ``\\u00XX`` in lower
  case hex); U+007F, U+2028, U+2029 and all other non-ASCII characters are written as themselves;
* dict keys in insertion order (never sorted); tuples as arrays; ``True``/``False``/``None`` as
  ``true``/``false``/``null``;
* floats: the shortest text that reads back as the same float (the same digits as ``repr``); the text differs from
  ``json.dumps``'s only below 1e-4 in magnitude (and not 0): ``json.dumps`` writes ``1e-05``, ``1.5e-07``; this
  writes ``0.00001`` for 1e-5 <= |x| < 1e-4 and ``1.5e-7`` (exponent without leading zeros) below. Integral floats
  keep their ``.0``; exponents above are as ``repr`` (``1e+16``);
* NaN and +-infinity are written as ``null`` (the standard library writes the non-JSON tokens ``NaN``/``Infinity``);
* raises ``TypeError`` (``orjson.JSONEncodeError``) for: a dict key that is not a ``str``, an ``int`` outside
  [-2**63, 2**64 - 1], a ``str`` holding a lone surrogate (not encodable as UTF-8; ``str.encode`` refuses it too),
  containers nested more than 254 deep, and types JSON has no form for. orjson also writes ``datetime``, ``UUID``,
  dataclasses and enums natively; nothing here relies on that.

``dumps_text(value) -> str``: the same text as a ``str``, for writers of text streams.

``loads(data) -> Any`` (``bytes``, ``bytearray``, ``memoryview`` or ``str``): orjson's strict RFC 8259 parser;
where it refuses the input (NaN/Infinity tokens, a UTF-8 byte order mark, an escaped lone surrogate, a number out of
double range, UTF-16/32 bytes), the standard library's ``json.loads`` reads it instead, so what reads at all reads
as before, and what the standard library refused raises the same ``ValueError`` (``json.JSONDecodeError``, or
``UnicodeDecodeError``) as before. Values are those of ``json.loads`` except integers outside [-2**63, 2**64 - 1],
which orjson reads as the nearest ``float`` (none of the documents read here holds one). Duplicate keys: the last
wins, as in the standard library.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_text", "loads"]

dumps = orjson.dumps


def dumps_text(value: Any) -> str:
    """``dumps(value)`` as a ``str``."""
    return orjson.dumps(value).decode("utf-8")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse one JSON document (see the module doc): orjson, else the standard library for what orjson refuses."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data if not isinstance(data, memoryview) else bytes(data))
