"""core.status_size.fit: a status that fits is left as it is; a larger one is cut, least useful first, and says so."""
from __future__ import annotations

from typing import Any

import pytest

from core.status_size import CUT_KEY, EXAMPLES_SHOWN, NOTE_CHARS, STATUS_BUDGET_BYTES, UNMATCHED_SHOWN, fit, \
    shorten, status_bytes
from devhost.engine import custom_status_error

RESULTS = {"container": "trapbatch", "blob": "results/task-0123456789abcdef0123/detections.json",
           "csv": "results/task-0123456789abcdef0123/detections.csv"}


def test_a_status_that_fits_is_the_same_object() -> None:
    status = {"stage": "completed", "results": dict(RESULTS), "error": "x" * 500}
    assert fit(status) is status


def test_the_examples_go_first_and_their_counts_keep_saying_how_many() -> None:
    given_up = {"count": 40, "examples": [{"shard": f"s{i:05d}", "reason": '"' * 300} for i in range(10)]}
    exports = {"coco": "results/x/coco.json", "clock_corrections_unmatched": ["cam" + '"' * 236] * 10,
               "clock_corrections_unmatched_count": 25}
    status: dict[str, Any] = {"stage": "completed", "results": {**RESULTS, "exports": exports},
                              "shards_given_up": given_up, "notification": {"reason": "n" * 500}}
    assert status_bytes(status) > STATUS_BUDGET_BYTES

    out = fit(status)

    assert status_bytes(out) <= STATUS_BUDGET_BYTES
    assert out["shards_given_up"]["examples"] == given_up["examples"][:EXAMPLES_SHOWN]
    assert out["shards_given_up"]["count"] == 40
    assert len(out["results"]["exports"]["clock_corrections_unmatched"]) == UNMATCHED_SHOWN
    assert out["results"]["exports"]["clock_corrections_unmatched_count"] == 25
    assert out["notification"] == {"reason": "n" * 500}  # the lists were enough
    assert out[CUT_KEY].startswith("shortened to fit the 16 KB status: shards_given_up.examples, "
                                   "results.exports.clock_corrections_unmatched (")
    assert len(status["shards_given_up"]["examples"]) == 10  # the caller's status, its output, stays whole


def test_an_unmatched_list_without_a_count_gets_one() -> None:
    exports = {"clock_corrections_unmatched": ['"' * 239 + "…"] * 10}
    out = fit({"stage": "completed", "results": {**RESULTS, "exports": exports}}, budget=3000)
    assert out["results"]["exports"]["clock_corrections_unmatched_count"] == 10


def test_then_the_notes_then_the_longest_texts_and_never_an_id_or_a_path() -> None:
    notes = {k: {"reason": '"' * 2000} for k in ("notification", "task_event", "drop_answer", "joined_drops")}
    status: dict[str, Any] = {"stage": "failed", "error": '"' * 3000, "results": dict(RESULTS), **notes,
                              "pool_job": "task-0123456789abcdef0123_r250101000000abcd"}

    out = fit(status)

    assert custom_status_error(out) is None and status_bytes(out) <= STATUS_BUDGET_BYTES
    assert all(len(out[k]["reason"]) <= NOTE_CHARS for k in notes)
    assert out["results"] == RESULTS and out["pool_job"] == status["pool_job"] and out["stage"] == "failed"
    assert out["error"].endswith("…") and 60 <= len(out["error"]) < 3000
    assert "notification.reason" in out[CUT_KEY] and "error" in out[CUT_KEY]
    assert fit(status) == out  # deterministic: an orchestrator's replay sets the same


def test_what_the_status_says_twice_goes_first_the_failures_hint_s_counts_by_reason() -> None:
    """A status just over its budget loses ``failures_hint``'s counts by reason (``failure_reasons`` beside it has
    them), and nothing else. Before, the longest text was halved: in the worst case the hint was cut to those counts
    alone, its advice (what a re-run retries, what to fix) lost, while ``trapbatch status`` printed the same counts
    on the line above it."""
    from core.failure_advice import failures_hint

    reasons = {f"reason_{i:02d}": 10**9 for i in range(12)} | {"auth": 5, "undecodable": 7}
    hint = failures_hint(reasons, failed=12 * 10**9 + 12, images=10**11)
    status: dict[str, Any] = {"stage": "completed_with_errors", "failure_reasons": reasons, "failures_hint": hint,
                              "results": dict(RESULTS), "note": "n" * 500}
    out = fit(status, budget=status_bytes(status) - 100)

    assert out["failures_hint"] == hint.split(" (", 1)[0] + ". " + hint.split("). ", 1)[1]
    assert "reason_00 1000000000" not in out["failures_hint"] and "auth: the images' storage" in out["failures_hint"]
    assert out["failure_reasons"] == reasons and out["note"] == status["note"] and out["results"] == RESULTS
    assert out[CUT_KEY].startswith("shortened to fit the 16 KB status: failures_hint (")


def test_as_a_last_resort_whole_blocks_go() -> None:
    status = {"stage": "completed", "results": dict(RESULTS),
              "failure_reasons": {f"reason-{i:04d}": 10**9 for i in range(2000)}}
    out = fit(status)
    assert "failure_reasons" not in out and status_bytes(out) <= STATUS_BUDGET_BYTES
    assert out[CUT_KEY].startswith("shortened to fit the 16 KB status: failure_reasons (")


def test_the_budget_is_the_compact_json_s_utf16_bytes_with_the_limit_itself_allowed() -> None:
    # {"stage":"..."}: 12 characters around the text, two UTF-16 bytes each; as Newtonsoft writes it, no spaces
    at_budget = {"stage": "x" * (STATUS_BUDGET_BYTES // 2 - 12)}
    assert status_bytes(at_budget) == STATUS_BUDGET_BYTES and fit(at_budget) is at_budget
    # a character outside ASCII is one UTF-16 unit, not a \\u escape (Newtonsoft writes it as it is)
    accented = {"stage": "completed", "error": "é" * 6000}
    assert status_bytes(accented) < STATUS_BUDGET_BYTES and fit(accented) is accented


def test_shorten_leaves_a_text_of_exactly_the_limit_whole() -> None:
    assert shorten("x" * 200, 200) == "x" * 200
    assert shorten("x" * 201, 200) == "x" * 199 + "…"


def test_each_step_stops_as_soon_as_the_status_fits_and_a_fit_at_the_budget_itself_is_a_fit() -> None:
    given_up = {"count": 10, "examples": [{"shard": f"s{i:05d}", "reason": "r" * 150} for i in range(10)]}
    exports = {"clock_corrections_unmatched": ["cam" * 40] * 4, "clock_corrections_unmatched_count": 4}
    status: dict[str, Any] = {"stage": "completed", "error": "e" * 100, "shards_given_up": given_up,
                              "results": {**RESULTS, "exports": exports}}
    out = fit(status, budget=status_bytes(status) - 1)
    # the given-up examples were enough: the unmatched list and the error stay whole
    assert len(out["shards_given_up"]["examples"]) == EXAMPLES_SHOWN and out["results"] == status["results"]
    assert set(out["shards_given_up"]) == {"count", "examples"}  # no stray key for a count it does not keep
    assert out["error"] == "e" * 100
    assert fit(status, budget=status_bytes(out)) == out  # exactly at the budget: nothing more is cut

    notes = {"notification": {"reason": "n" * 1000}, "task_event": {"reason": "t" * 1000}}
    noted = fit({"stage": "completed", **notes}, budget=status_bytes({"stage": "completed", **notes}) - 1)
    assert len(noted["notification"]["reason"]) == NOTE_CHARS and noted["task_event"] == notes["task_event"]


def test_a_list_or_note_already_within_its_limit_is_not_named_as_cut() -> None:
    given_up = {"count": 9, "examples": [{"shard": f"s{i:05d}", "reason": "r"} for i in range(EXAMPLES_SHOWN)]}
    status = {"stage": "failed", "shards_given_up": given_up, "notification": {"reason": "n" * NOTE_CHARS},
              "task_event": {"reason": "t" * 1000}}
    out = fit(status, budget=status_bytes(status) - 1)
    assert out["shards_given_up"] == given_up
    assert out[CUT_KEY] == ("shortened to fit the 16 KB status: task_event.reason (a completed orchestration's "
                            "output holds them whole)")


def test_the_costliest_text_is_halved_first_named_once_and_never_below_the_shortest() -> None:
    # b is longer in characters, a costs more ('"' is escaped): a is halved, and that is enough
    status = {"stage": "failed", "b": "b" * 1500, "a": '"' * 1000}
    out = fit(status, budget=status_bytes(status) - 1500)
    assert out["b"] == "b" * 1500 and len(out["a"]) == 500
    # halved again and again: named once; a list's item is named by its list
    many = fit({"stage": "failed", "errors": ["e" * 5000]}, budget=600)
    assert many[CUT_KEY] == ("shortened to fit the 16 KB status: errors[] (a completed orchestration's output "
                             "holds them whole)")
    # a text stops at SHORTEST_CHARS, then whole blocks go, the first that make it fit and no more
    reasons = {f"reason-{i:04d}": 10**9 for i in range(2000)}
    blocks = fit({"stage": "failed", "error": "e" * 100, "failure_reasons": reasons, "estimate": {"images": 5}})
    assert len(blocks["error"]) == 60 and "failure_reasons" not in blocks and blocks["estimate"] == {"images": 5}
    given_up = fit({"stage": "failed", "shards_given_up": {"count": 1, "by_reason": reasons}, "cost": {"usd": 1}})
    assert "shards_given_up" not in given_up and given_up["cost"] == {"usd": 1}


def test_the_halving_leaves_pool_job_error_at_its_note_length_where_its_command_is() -> None:
    """``pool_job_error`` (orchestrations.task: the command that ends a job left open, then the close's words) was
    halved like any text once the notes were cut, down to "the pool job <id> co…" (seen in the largest completed
    status, tests/orchestrations/test_status_sizes.py); it stays at its note's 400 characters while other texts are
    halved, and goes only with nothing else left to cut."""
    job_error = "end it: " + "j" * 900
    status = {"stage": "completed", "pool_job_error": job_error, "error": "e" * 3000}
    out = fit(status, budget=status_bytes(status) - 4000)
    assert out["pool_job_error"] == shorten(job_error, NOTE_CHARS + 200) and len(out["error"]) < 3000, out
    assert len(fit(status, budget=1200)["pool_job_error"]) == NOTE_CHARS + 200  # however small the budget


def test_the_halving_leaves_work_left_at_its_note_length_where_its_command_is() -> None:
    """``work_left`` (orchestrations.fanin: the command that deletes the work blobs a cleanup left, then its words)
    was halved like any text, down to "the work blobs under <container>…" (the largest completed status with every
    best-effort step failed, tests/orchestrations/test_status_sizes.py); it stays at its note's 400 characters."""
    left = "delete them: " + "w" * 900
    status = {"stage": "completed", "work_left": left, "error": "e" * 3000}
    out = fit(status, budget=status_bytes(status) - 4000)
    assert out["work_left"] == shorten(left, NOTE_CHARS + 200) and len(out["error"]) < 3000, out
    assert len(fit(status, budget=1200)["work_left"]) == NOTE_CHARS + 200


@pytest.mark.parametrize("text", ["h" * 900, '"' * 900, "\U0001f98a" * 900, "é" * 900])
@pytest.mark.parametrize("over", [1, 2, 3, 40, 41, 300])
def test_a_status_a_little_over_loses_only_what_it_must_of_its_longest_text(text: str, over: int) -> None:
    """Cut by as little as makes the status fit, not halved: a status ``over`` bytes over its budget keeps all but
    a few characters of its longest text (each costs 2 bytes at least: 4 for an escaped '"' or a character above
    U+FFFF), and the result fits. Before, it lost half of the text however few bytes were over."""
    status = {"stage": "completed_with_errors", "failures_hint": text, "results": dict(RESULTS)}
    budget = status_bytes(status) - over
    out = fit(status, budget=budget)

    assert status_bytes(out) <= budget and out["results"] == RESULTS
    note = 2 * len(f',"{CUT_KEY}":"{out[CUT_KEY]}"')  # the note naming the cut costs its own bytes
    assert len(out["failures_hint"]) >= len(text) - ((over + note + 1) // 2 + 2) > len(text) // 2
    assert out["failures_hint"] == text[: len(out["failures_hint"]) - 1] + "…"


def test_a_status_nothing_can_shorten_claims_no_cut() -> None:
    out = fit({"stage": "failed", "counts": list(range(3000))}, budget=1000)
    assert CUT_KEY not in out and out["counts"] == list(range(3000))


LISTS_CUT = [(("shards_given_up", "examples"), 3), (("results", "exports", "clock_corrections_unmatched"), 3),
             (("damaged", "examples"), 1), (("previews", "pictures_missing", "examples"), 1)]


@pytest.mark.parametrize(("path", "kept"), LISTS_CUT, ids=[".".join(p) for p, _ in LISTS_CUT])
def test_each_list_of_examples_is_cut_to_its_first_few_and_its_count_stays(path: tuple[str, ...], kept: int) -> None:
    status: dict[str, Any] = {"stage": "completed", "count": 10}
    parent = status
    for key in path[:-1]:
        parent = parent.setdefault(key, {"count": 10})
    items = [f"item-{i}-" + "x" * 50 for i in range(10)]  # 50: cutting them saves more than the note costs
    parent[path[-1]] = items
    out = fit(status, budget=status_bytes(status) - 1)
    node = out
    for key in path[:-1]:
        node = node[key]
    assert node[path[-1]] == items[:kept] and node["count"] == 10


NOTES_CUT = [(("results", "exports", "clock_corrections_unmatched", "*"), 120), (("damaged", "examples", "*"), 120),
             (("shards_given_up", "examples", "*", "reason"), 200), (("notification", "reason"), 200),
             (("task_event", "reason"), 200), (("drop_answer", "reason"), 200), (("drop_answer", "file"), 200),
             (("joined_drops", "reason"), 200), (("joined_drops", "hint"), 200),
             (("previews", "expiry_error"), 200), (("previews", "pictures_missing", "examples", "*"), 120),
             (("previews", "pictures_missing", "error"), 200), (("results", "exports_error"), 200),
             (("repeated_detections", "error"), 200), (("work_left",), 400), (("pool_job_error",), 400)]


@pytest.mark.parametrize(("path", "limit"), NOTES_CUT, ids=[".".join(p) for p, _ in NOTES_CUT])
def test_each_note_is_cut_to_its_own_limit_before_any_text_is_halved(path: tuple[str, ...], limit: int) -> None:
    text = "w" * 1500
    leaf: Any = text
    for key in reversed(path):
        leaf = [leaf] if key == "*" else {key: leaf}
    status = {"stage": "completed", **leaf}
    out = fit(status, budget=status_bytes(status) - 1)
    node: Any = out
    for key in path:
        node = node[0] if key == "*" else node[key]
    assert node == shorten(text, limit) and len(node) == limit
