"""The CLI on a task terminated (or failed) after its results were complete: the app shows it ``completed`` or
``completed_with_errors`` beside its ``runtime_status`` (api.starters ``_stage``), and ``watch`` / ``submit --wait``
exit as for that stage, saying that only the word of its end was cut short.

Why: it exited 1 with "task ... ended completed" in red, a contradiction a script reads as a failed task (and would
run the whole task again), although its results are complete and served."""
from __future__ import annotations

from typing import Any

import pytest

from cli import main as cli_main
from cli.progress import exit_code_for

TASK = "task-0123456789abcdef0123"


@pytest.mark.parametrize("runtime", ["Terminated", "Failed"])
@pytest.mark.parametrize("stage, code", [("completed", 0), ("completed_with_errors", 3)])
def test_watch_exits_as_for_its_stage_and_says_it_was_ended_while_telling_of_it(
        runtime: str, stage: str, code: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    final: dict[str, Any] = {"id": TASK, "runtime_status": runtime, "stage": stage, "images": 3, "failed": 0}
    if runtime == "Failed":
        final["error"] = "writing the done file failed"
    assert exit_code_for(final) == code

    class Client:
        def status(self, task_id: str) -> dict[str, Any]:
            return final

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["watch", TASK, "--plain"]) == code
    said = " ".join(capsys.readouterr().err.split())
    assert f"ended {stage} (its results are complete)" in said, said
    assert "results are complete" in said and runtime.lower() in said, said
    assert "notification" in said and f"trapbatch results {TASK}" in said, said


def test_a_follow_up_failure_still_exits_5_and_a_task_ended_without_results_still_1() -> None:
    base = {"id": TASK, "runtime_status": "Terminated", "stage": "completed"}
    assert exit_code_for({**base, "pool_job_error": "the pool job j1 could not be closed"}) == 5
    assert exit_code_for({**base, "stage": "terminated"}) == 1
    assert exit_code_for({**base, "runtime_status": "Failed", "stage": "failed"}) == 1
