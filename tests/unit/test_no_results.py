"""What the results, previews and repeats endpoints answer for a task without results (409): a running task is
waited for; an ended one never gets results by waiting, so the hint says what does (post without dry_run, rerun,
resume, confirm)."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from api import starters
from core.errors import TaskNotFinished

TASK = "task-0123456789abcdef0123"


class Client:
    def __init__(self, runtime: str, stage: str) -> None:
        self.runtime, self.stage = runtime, stage

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(runtime_status=SimpleNamespace(value=self.runtime), custom_status={"stage": self.stage},
                               output=None, input_=json.dumps({"task_id": TASK}))


def refusal(runtime: str, stage: str) -> TaskNotFinished:
    with pytest.raises(TaskNotFinished) as caught:
        asyncio.run(starters.finished_task(Client(runtime, stage), TASK, "results"))  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize("runtime, stage, message, hint", [
    ("Running", "detecting", "has no results yet", "until its stage is 'completed'"),
    ("Running", "awaiting_confirmation", "has no results yet", f"/api/tasks/{TASK}/confirm"),
    ("Completed", "estimated", "has no results (stage: estimated)", "without dry_run"),
    ("Completed", "cancelled", "has no results (stage: cancelled)", '"rerun": true'),
    ("Completed", "expired", "has no results (stage: expired)", '"rerun": true'),
    ("Terminated", "detecting", "has no results (stage: terminated)", "without \"rerun\", to resume it"),
    ("Failed", "detecting", "has no results (stage: failed)", "resume it"),
])
def test_a_task_without_results_says_what_gets_them(runtime: str, stage: str, message: str, hint: str) -> None:
    error = refusal(runtime, stage)
    assert message in error.message and hint in error.hint, (error.message, error.hint)
    assert error.status_code == 409


def test_a_completed_task_is_worked_on() -> None:
    info = asyncio.run(starters.finished_task(Client("Completed", "completed"), TASK, "results"))  # type: ignore[arg-type]
    assert info["stage"] == "completed"


@pytest.mark.parametrize("runtime, stage, said", [
    ("Running", "detecting", "still running"),
    ("Completed", "completed", '"rerun": true'),
    ("Completed", "cancelled", "ended cancelled"),
    ("Failed", "detecting", "ended failed"),
])
def test_a_request_that_finds_its_task_is_told_its_stage_and_how_to_run_it_again(runtime: str, stage: str,
                                                                                  said: str) -> None:
    """POST /api/tasks of a request whose task exists answers 200 with the task's stage and what posting it again
    does not do (a cancelled task re-posted without "rerun" said only "started": false)."""
    links = starters._links("http://host", TASK)
    answer = asyncio.run(starters._known_task(Client(runtime, stage), TASK, links))  # type: ignore[arg-type]
    assert answer["stage"] == ("failed" if runtime == "Failed" else stage)
    assert said in answer["hint"]
