"""The merge's per-image rules that the GPU worker applies too: which entry of an image wins across attempts, the
counts people read, and each entry's bytes in the merged results.

Why here, in the worker's package: a shard that ran in one clean attempt gets its merge view written by the worker
(``gpu_batch.formats.mergeview``), and the merge composes those bytes instead of re-reading every entry (issue 11:
the control plane's CPU per image). Both sides must apply exactly the same rules, so they live once, here;
``core.mdformat`` and ``core.fanin`` import them. The worker image copies ``gpu_batch/`` only, so nothing here
imports ``core``.

Must not: do I/O.
"""
from __future__ import annotations

import json as _json
import re
from collections.abc import Iterable, Iterator, Mapping  # typing's isinstance is slow (per detection)
from typing import Any

from gpu_batch import manifest as contract
from gpu_batch.formats import jsonio

FORMAT_VERSION = "1.6"
DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
# Failure strings from MegaDetector's vocabulary (run_detector.py).
FAILURE_IMAGE_ACCESS = "image access failure"
FAILURE_INFERENCE = "inference failure"
ENTRY_SEPARATOR = b",\n  "  # before each entry of the merged results but the first (core.fanin's byte layout)


# What the exports add to an entry they read whose photo was cut short (``damaged_in``: a success decoded as far as it
# goes, the rest grey): the mark is never written to a results file (NUL is in no key MegaDetector or trapbatch
# writes), only carried from the reader of the entries to the formatters, as an image list's row is beside it. Why on
# the entry: every export (COCO, Camtrap DP, Zooniverse's rows and captures) reads the entries one at a time, in
# several activities, and each must treat such a photo alike (``mark_cut_short``).
CUT_SHORT = "\x00cut_short"


def mark_cut_short(entries: Iterator[dict[str, Any]], names: "set[str] | frozenset[str]") -> Iterator[dict[str, Any]]:
    """``entries`` with each success whose ``file`` is in ``names`` (the photos cut short) marked ``CUT_SHORT``;
    ``entries`` itself when there are none (nothing to look up per entry)."""
    if not names:
        return entries
    return (_marked(entry, names) for entry in entries)


def _marked(entry: dict[str, Any], names: "set[str] | frozenset[str]") -> dict[str, Any]:
    if entry.get("failure") is None and entry.get("file") in names:
        entry[CUT_SHORT] = True
    return entry


def is_cut_short(entry: Mapping[str, Any]) -> bool:
    """Whether the exports marked ``entry`` as a photo cut short (``mark_cut_short``)."""
    return bool(entry.get(CUT_SHORT))


def failure_entry(file: str, failure: str, reason: str | None = None) -> dict[str, Any]:
    """A failed entry; with ``reason`` (one of ``gpu_batch.manifest.FAILURE_REASONS``) also its kind and reason."""
    entry: dict[str, Any] = {"file": file, "failure": failure, "detections": None}
    if reason is not None:
        entry.update(contract.failure_fields(reason))
    return entry


def has_failure(entry: Mapping[str, Any]) -> bool:
    return entry.get("failure") is not None


# Which entry for an image wins across attempts: a success, then a permanent failure, then a retryable one.
_RANK = {None: 2, contract.PERMANENT: 1, contract.RETRYABLE: 0}


DAMAGED_VERSION = 1


def damaged_document(results_etag: str, names: Iterable[str]) -> bytes:
    """What ``layout.attempt_damaged_blob`` holds: the attempt's photos cut short (successes, sorted) in the results
    document that Put Blob stored with ``results_etag``. Why tied to it: a reader whose results blob has another
    ETag now (the worker died between the two writes, another run rewrote them) reads the names from the results'
    ``info`` instead (``activities.shard_results.shard_damaged``)."""
    return _json.dumps({"version": DAMAGED_VERSION, "results_etag": contract.plain_etag(results_etag),
                       "damaged": sorted(names)}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def damaged_in(doc: Any) -> list[str]:
    """The names a results document's ``info.trapbatch.damaged`` lists (photos cut short: successes decoded as far as
    they go, ``gpu_batch.worker.results``); none for a document without them. Here, beside the merge's other rules,
    so that the merge view (``gpu_batch.formats.mergeview``) names an earlier attempt's photos cut short from the
    results it reads anyway."""
    info = doc.get("info") if isinstance(doc, dict) else None
    own = info.get("trapbatch") if isinstance(info, dict) else None
    names = own.get("damaged") if isinstance(own, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _rank(entry: Mapping[str, Any]) -> int:
    return _RANK[contract.failure_kind(entry)]


def best_entries(attempts: Iterable[Iterable[Mapping[str, Any]]]) -> dict[str, Mapping[str, Any]]:
    """The winning entry per file name over successive attempts (oldest first); see ``merge_entries``."""
    best: dict[str, Mapping[str, Any]] = {}
    for entries in attempts:
        for entry in entries:
            name = entry.get("file")
            if not isinstance(name, str):
                continue
            current = best.get(name)
            if current is None:
                best[name] = entry
                continue
            new, old = _rank(entry), _rank(current)
            if new > old or (new == old and has_failure(entry)):  # of two failures alike, the later one says more
                best[name] = entry
    return best


def merge_entries(manifest_order: Iterable[str], attempts: Iterable[Iterable[Mapping[str, Any]]],
                  missing_failure: str = FAILURE_INFERENCE) -> tuple[list[dict[str, Any]], int]:
    """One entry per manifest image, in manifest order, from the results of successive attempts (oldest first).

    Per image: a success from any attempt wins (the first one); else a permanent failure (final: the image was never
    run again); else the latest retryable failure, kept with its reason. Images no attempt wrote anything for get
    ``missing_failure`` with reason ``not_processed``. Entries for files not in the manifest are dropped (a worker bug
    must not add images the user never asked for). Returns the entries and how many are missing: images whose entry
    is a retryable failure or ``not_processed`` (no final result after every attempt).
    """
    best = best_entries(attempts)
    merged: list[dict[str, Any]] = []
    missing = 0
    seen: set[str] = set()
    for name in manifest_order:
        if name in seen:
            continue
        seen.add(name)
        found = best.get(name)
        if found is None:
            missing += 1
            merged.append(failure_entry(name, missing_failure, contract.REASON_NOT_PROCESSED))
            continue
        if found.get("failure") is not None and not contract.is_final(found):  # a success is final
            missing += 1
        merged.append(dict(found))
    return merged, missing


def failure_counts(images: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Failed images by ``failure_reason`` (those without one, from older workers, as ``unclassified``).

    For the task's status, summary and results ``info``: e.g. ``{"auth": 120, "undecodable": 2}``; the kind of each
    reason is ``gpu_batch.manifest.FAILURE_REASONS[reason]``.
    """
    counts: dict[str, int] = {}
    for im in images:
        reason = contract.failure_reason(im)
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def summarize(images: Iterable[Mapping[str, Any]], threshold: float) -> dict[str, int]:
    """Counts for people: images, failures, images with a detection above ``threshold``, detections above it."""
    n = failed = with_detections = detections = 0
    for im in images:
        n += 1
        if im.get("failure") is not None:
            failed += 1
            continue
        above = 0
        for d in im.get("detections") or ():  # a dict with a float conf is read without the isinstance checks
            if d.__class__ is dict:
                conf = d.get("conf")
                if (conf.__class__ is float or isinstance(conf, (int, float))) and conf >= threshold:
                    above += 1
            elif isinstance(d, Mapping) and isinstance(d.get("conf"), (int, float)) and d["conf"] >= threshold:
                above += 1
        detections += above
        if above:
            with_detections += 1
    counts = {"images": n, "failed": failed, "with_detections": with_detections, "detections": detections,
              "empty": n - failed - with_detections}
    return counts


def entry_json(entry: Mapping[str, Any]) -> bytes:
    """One results entry's JSON, as both merges write it: ``gpu_batch.formats.jsonio.dumps`` (compact, on one line:
    the exports read the results one entry per line), in ASCII: every non-ASCII character ``\\uXXXX``-escaped as
    MegaDetector writes its results (``ct_utils.write_json``, ``ensure_ascii=True``).

    Why ASCII: MegaDetector's own readers (``validate_batch_results``, ``load_api_results``, ``md_to_coco``) open a
    results file without naming an encoding, which is cp1252 on Windows before Python 3.15: a photo named
    ``Ávila/...`` stopped the validator and ``Zoë`` became ``ZoÃ«`` in postprocessing. Since orjson (issue 11)
    entries have no spaces after ``,`` and ``:`` and floats below 1e-4 are written ``0.00001``/``1e-7`` rather than
    ``1e-05``/``1e-07``: the same values."""
    data = jsonio.dumps(entry)
    if data.isascii():
        return data
    # outside its strings JSON text is ASCII, so every non-ASCII character is inside one and may be escaped there
    return _NON_ASCII.sub(_json_escape, data.decode("utf-8")).encode("ascii")


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _json_escape(match: re.Match[str]) -> str:
    """``\\uXXXX`` as ``json.dumps`` writes it (lower-case hex; a surrogate pair above U+FFFF)."""
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"
    return f"\\u{code:04x}"


def is_exif_time(value: Any) -> bool:
    """Whether an entry's ``datetime`` has MegaDetector's EXIF form, ``YYYY:MM:DD HH:MM:SS`` (which sorts as text):
    the one check the CSV's ``capture_time`` and the preview's capture span share (other text there is not one)."""
    return (value.__class__ is str and len(value) == 19 and value[4] == ":" and value[7] == ":"
            and value[10] == " ")


def entry_fragment(entry: Mapping[str, Any]) -> bytes:
    """One entry as a part writes it: always with the separator (the combine drops the very first comma)."""
    return ENTRY_SEPARATOR + entry_json(entry)
