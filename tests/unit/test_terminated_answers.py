"""api.terminated_answers: the terminate's 202 stops waiting for its done files' writes by the answer's deadline
(Azure's front end cuts an HTTP function at 230 s), and the thread writing them stops at its next file."""
from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from api import terminated_answers
from core.deadline import Deadline

TASK = "task-0123456789abcdef0123"
RUN = "r20261207T210000Z-a1b2c3"


class _Hub:
    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(runtime_status=SimpleNamespace(value="Terminated"), input_={"run": RUN},
                               custom_status={"stage": "detecting", "started": "2026-12-07T21:00:00+00:00"})


def test_a_write_held_past_the_deadline_leaves_the_202_its_answer_and_the_thread_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One storage call held in its retries (here: until the test lets it go) outlasts the deadline: the answer
    comes, ``written`` false with what to do, and the thread, once the call ends, writes no further file."""
    release, asked = threading.Event(), []

    def held(*args: Any) -> dict[str, Any]:
        stop = args[-1]
        asked.append(stop())  # not yet
        release.wait(60)
        asked.append(stop())
        return {"written": True, "stage": "terminated", "joined": 0}

    monkeypatch.setattr(terminated_answers, "answer_terminated_run", held)
    monkeypatch.setattr(terminated_answers.clients, "settings", lambda: SimpleNamespace(container="state"))
    monkeypatch.setattr(terminated_answers.clients, "store", lambda s: object())
    now = [0.0]
    until = Deadline.within(200.0, lambda: now[0])
    now[0] = 195.0  # the route's earlier calls took most of the answer's time: 5 s are left (real seconds)
    loop = asyncio.new_event_loop()  # not asyncio.run: it waits for the executor's threads, the held one too
    try:
        answer = loop.run_until_complete(terminated_answers.answer_terminated(
            _Hub(), TASK, RUN, {"run": RUN, "drop": "a.json", "answers_joined": True}, {"stage": "detecting"}, "r",
            "its stage becomes 'terminated'", until))
        assert asked == [False], "the answer waited for the held write, or it never began"
        assert answer is not None and answer["written"] is False, answer
        assert "230 s" in answer["reason"] and "post the same request again" in answer["hint"], answer
    finally:
        release.set()
        for _ in range(600):  # the thread ends once released: it asks whether to go on
            if len(asked) > 1:
                break
            threading.Event().wait(0.1)
        loop.run_until_complete(asyncio.sleep(0))  # its completion, handed to the loop, before the loop closes
        loop.close()
    assert asked == [False, True]
