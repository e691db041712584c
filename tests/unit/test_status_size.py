"""core.status_size.fit: a status that fits is left as it is; a larger one is cut, least useful first, and says so."""
from __future__ import annotations

from typing import Any

from core.status_size import CUT_KEY, EXAMPLES_SHOWN, NOTE_CHARS, STATUS_BUDGET_BYTES, UNMATCHED_SHOWN, fit, \
    status_bytes
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
    notes = {k: {"reason": '"' * 2000} for k in ("notification", "task_event", "drop_answer")}
    status: dict[str, Any] = {"stage": "failed", "error": '"' * 3000, "results": dict(RESULTS), **notes,
                              "pool_job": "task-0123456789abcdef0123_r250101000000abcd"}

    out = fit(status)

    assert custom_status_error(out) is None and status_bytes(out) <= STATUS_BUDGET_BYTES
    assert all(len(out[k]["reason"]) <= NOTE_CHARS for k in notes)
    assert out["results"] == RESULTS and out["pool_job"] == status["pool_job"] and out["stage"] == "failed"
    assert out["error"].endswith("…") and 60 <= len(out["error"]) < 3000
    assert "notification.reason" in out[CUT_KEY] and "error" in out[CUT_KEY]
    assert fit(status) == out  # deterministic: an orchestrator's replay sets the same


def test_as_a_last_resort_whole_blocks_go() -> None:
    status = {"stage": "completed", "results": dict(RESULTS),
              "failure_reasons": {f"reason-{i:04d}": 10**9 for i in range(2000)}}
    out = fit(status)
    assert "failure_reasons" not in out and status_bytes(out) <= STATUS_BUDGET_BYTES
    assert out[CUT_KEY].startswith("shortened to fit the 16 KB status: failure_reasons (")
