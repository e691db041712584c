"""Keep an orchestration's custom status within what the Durable extension accepts, shortening its texts if need be.

Why: ``DurableOrchestrationContext.SetCustomStatus`` serializes the status with
``MessagePayloadDataConverter.Serialize(value, MaxCustomStatusPayloadSizeInKB = 16)``, which throws when the compact
JSON's UTF-16 bytes, divided by 1024 and truncated, pass 16 (azure-functions-durable-extension,
src/WebJobs.Extensions.DurableTask/ContextImplementations/DurableOrchestrationContext.cs and
MessagePayloadDataConverter.cs; devhost/README.md fidelity row 8, ``devhost.engine.custom_status_error``); the
orchestration then FAILS, however well its work went. A task's final status gathers many texts, each capped on its
own (``core.errors.failure_line``'s 500 characters, ``GIVEN_UP_REASON_CHARS``, the exports' unmatched clock
corrections, a dropped request's 1,024-character blob name, a notify_url's host...), and a character costs up to two
UTF-16 units ('"' and '\\' are escaped, one above U+FFFF is a surrogate pair): together they reached ~47 KB
(tests/orchestrations/test_status_sizes.py builds that worst case).

``fit`` leaves a status that fits ``STATUS_BUDGET_BYTES`` as it is. A larger one is copied and cut, least useful
first, until it fits: first what it says twice (``failures_hint``'s counts by reason: ``failure_reasons`` has them),
then the examples of given-up shards and of unmatched clock corrections down to the first few (their counts stay),
then the notes of best-effort steps to ``NOTE_CHARS`` characters, then the longest text halved (or cut by less
where less makes the status fit), again and again, never below ``SHORTEST_CHARS`` (ids and blob paths are shorter:
they are never cut; ``pool_job_error`` and ``work_left``, whose first 400 characters hold a command to run, never
below those: ``_FLOORS``); the copy says what was cut in ``cut``. The caller keeps the full status as the
orchestration's output (the task's and a removal's return value), so nothing is lost but what the status shows. Pure
and deterministic: an orchestrator may call it on replay.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, TypeVar, cast

from core.failure_advice import without_counts

# The extension's limit is 16 KB; a status is kept 2 KB under it, so the note of a step waiting for a busy service
# (orchestrations.retries.show_waiting, which adds it only while the status stays under 15 KB) still goes in.
STATUS_BUDGET_BYTES = 14 * 1024
NOTE_CHARS = 200  # a best-effort step's failure, as a status shows it once the status is too large
EXAMPLES_SHOWN = 3  # given-up shards described, once the status is too large (``count`` says how many)
UNMATCHED_SHOWN = 3  # unmatched clock corrections named, once the status is too large (``..._count`` says how many)
UNMATCHED_CHARS = 120
DAMAGED_SHOWN = 1  # photos cut short named, once the status is too large (``damaged.count`` says how many)
SHORTEST_CHARS = 60  # a text is never cut below this (blob paths and ids are shorter, so never cut)
CUT_KEY = "cut"

Path = tuple[Any, ...]  # keys and list indices from the status's top; "*": every item of a list

# (the list, how many of its items stay, the count that keeps saying how many there were, or None: one exists)
_LISTS: tuple[tuple[Path, int, str | None], ...] = (
    (("shards_given_up", "examples"), EXAMPLES_SHOWN, None),  # its "count" is every given-up shard
    (("results", "exports", "clock_corrections_unmatched"), UNMATCHED_SHOWN, "clock_corrections_unmatched_count"),
    (("damaged", "examples"), DAMAGED_SHOWN, None),  # its "count" is every photo cut short, its "blob" lists them
    (("previews", "pictures_missing", "examples"), DAMAGED_SHOWN, None),  # its "count" is every picture missing
    (("results", "exports", "sizes_unknown_why", "examples"), DAMAGED_SHOWN, None),  # "sizes_unknown" counts them
)
# (a text, its characters at most)
_NOTES: tuple[tuple[Path, int], ...] = (
    (("results", "exports", "clock_corrections_unmatched", "*"), UNMATCHED_CHARS),
    (("damaged", "examples", "*"), UNMATCHED_CHARS),  # blob names of up to 1,024 characters
    (("shards_given_up", "examples", "*", "reason"), NOTE_CHARS),
    (("notification", "reason"), NOTE_CHARS),
    (("task_event", "reason"), NOTE_CHARS),
    (("drop_answer", "reason"), NOTE_CHARS),
    (("drop_answer", "file"), NOTE_CHARS),
    (("drop_answer", "hint"), NOTE_CHARS),
    (("joined_drops", "reason"), NOTE_CHARS),  # the joined drops' done files, as the own drop's (drop_answer)
    (("joined_drops", "hint"), NOTE_CHARS),
    (("previews", "expiry_error"), NOTE_CHARS),
    (("previews", "pictures_missing", "examples", "*"), UNMATCHED_CHARS),  # blob names of up to 1,024 characters
    (("previews", "pictures_missing", "error"), NOTE_CHARS),
    (("results", "exports", "sizes_unknown_why", "examples", "*"), UNMATCHED_CHARS),  # blob names, as above
    (("results", "exports", "sizes_unknown_why", "error"), NOTE_CHARS),
    (("results", "exports_error"), NOTE_CHARS),
    (("repeated_detections", "error"), NOTE_CHARS),
    (("work_left",), NOTE_CHARS + 200),  # the command that deletes them, then the error
    (("pool_job_error",), NOTE_CHARS + 200),  # the job's id and the command that ends it, then the error
)
# Texts the halving below leaves at the length ``_NOTES`` cut them to, not SHORTEST_CHARS: what an operator must run.
# Why: halved, a completed task's pool_job_error kept "the pool job <id> co…", without the command that ends a job
# that holds the account's active jobs (orchestrations.task puts that command first, within these characters), and
# work_left "the work blobs under <container>…", without the command that deletes them (orchestrations.fanin
# work_left puts it first). Each keeps at most 1,600 bytes (400 characters of up to four bytes); the largest statuses,
# with both, still fit the budget (tests/orchestrations/test_status_sizes.py: every best-effort step failed)
_FLOORS = {"pool_job_error": NOTE_CHARS + 200, "work_left": NOTE_CHARS + 200}
# Last resort, should texts cut to SHORTEST_CHARS still not fit (no status of trapbatch comes near): whole blocks go.
_DROPPED = ("shards_given_up", "not_images", "notification", "task_event", "drop_answer", "joined_drops", "cost",
            "failure_reasons", "estimate")

S = TypeVar("S", bound=Mapping[str, Any])


def status_bytes(value: Any) -> int:
    """What the extension measures: the UTF-16 bytes of the compact JSON (.NET escapes as Python does here)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-16-le"))


def shorten(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters, a cut one ending in "…" (as ``core.errors.failure_line``)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit(status: S, budget: int = STATUS_BUDGET_BYTES) -> S:
    """``status`` itself when it fits ``budget`` bytes; else a copy cut to fit, with ``cut`` naming what was cut."""
    if status_bytes(status) <= budget:
        return status
    out: dict[str, Any] = json.loads(json.dumps(status))
    cut: list[str] = []

    def fits() -> bool:
        if cut:
            out[CUT_KEY] = (f"shortened to fit the 16 KB status: {', '.join(dict.fromkeys(cut))} (a completed "
                            "orchestration's output holds them whole)")
        return status_bytes(out) <= budget

    # What the status says twice goes first: ``failures_hint``'s counts by reason, which ``failure_reasons`` shows.
    # Why: the halving below takes the longest text first, and the hint, the longest of a task with many reasons
    # (~1,500 characters), was cut to those counts alone (~190), its advice lost, right under ``failure_reasons``
    # in ``trapbatch status`` (which, as GET /api/tasks/{id}, shows this status, not the output).
    hint, reasons = out.get("failures_hint"), out.get("failure_reasons")
    if isinstance(hint, str) and isinstance(reasons, dict) and without_counts(hint, reasons) != hint:
        out["failures_hint"] = without_counts(hint, reasons)
        cut.append("failures_hint")
        if fits():
            return cast(S, out)
    for path, keep, count_key in _LISTS:
        for parent, key in _places(out, path):
            items = parent[key]
            if isinstance(items, list) and len(items) > keep:
                parent[key] = items[:keep]
                if count_key is not None:
                    parent[count_key] = max(int(parent.get(count_key) or 0), len(items))
                cut.append(_name(path))
        if fits():
            return cast(S, out)
    for path, limit in _NOTES:
        for parent, key in _places(out, path):
            text = parent[key]
            if isinstance(text, str) and len(text) > limit:
                parent[key] = shorten(text, limit)
                cut.append(_name(path))
        if fits():
            return cast(S, out)
    while True:  # the longest text (in what it costs), halved, or cut by less where less makes the status fit
        texts = [(status_bytes(text), path) for path, text in _texts(out, ()) if len(text) > _floor(path)]
        if not texts:
            break
        _, path = max(texts, key=lambda t: t[0])
        parent = _at(out, path[:-1])
        text = parent[path[-1]]
        cut.append(_name(path))
        fits()  # the note names it now: the overshoot below counts the note's bytes too
        # Each character costs 2 bytes at least (UTF-16) and "…" takes the place of one: this length fits. Why: a
        # status a few bytes over lost half of its longest text (a failures_hint of 900 characters cut to 450 where
        # ~115 fewer, the cut note's bytes included, would do).
        enough = len(text) - ((status_bytes(out) - budget + 1) // 2 + 1)
        parent[path[-1]] = shorten(text, max(_floor(path), len(text) // 2, enough))
        if fits():
            return cast(S, out)
    for key in _DROPPED:
        if key in out:
            del out[key]
            cut.append(key)
            if fits():
                break
    return cast(S, out)


def _floor(path: Path) -> int:
    """The fewest characters the halving leaves of the text at ``path``."""
    return _FLOORS.get(_name(path), SHORTEST_CHARS)


def _places(node: Any, path: Path) -> list[tuple[Any, Any]]:
    """(container, key) of every value at ``path`` ("*": each item of a list); none where the path is absent."""
    if not path:
        return []
    head, rest = path[0], path[1:]
    keys: list[Any]
    if head == "*":
        keys = list(range(len(node))) if isinstance(node, list) else []
    else:
        keys = [head] if isinstance(node, dict) and head in node else []
    if not rest:
        return [(node, k) for k in keys]
    return [place for k in keys for place in _places(node[k], rest)]


def _texts(node: Any, path: Path) -> list[tuple[Path, str]]:
    """Every string value under ``node`` (not the keys), with its path, in document order."""
    if isinstance(node, str):
        return [(path, node)]
    if isinstance(node, dict):
        return [t for k, v in node.items() if k != CUT_KEY for t in _texts(v, (*path, k))]
    if isinstance(node, list):
        return [t for i, v in enumerate(node) for t in _texts(v, (*path, i))]
    return []


def _at(node: Any, path: Path) -> Any:
    for key in path:
        node = node[key]
    return node


def _name(path: Path) -> str:
    """``results.exports.clock_corrections_unmatched[]``: a path as the note names it, list indices folded."""
    name = ""
    for key in path:
        name += "[]" if isinstance(key, int) or key == "*" else (f".{key}" if name else str(key))
    return name
