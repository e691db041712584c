"""``trapbatch repeats`` says a repeat removal or search is STALLED, with the app's hint as the CLI's command, and
``trapbatch terminate --target removal|search`` ends one (POST /api/tasks/{id}/terminate {"target": ...}).

Why: the app judges a repeat run stalled (api.repeat_runs, core.stall.repeat_stalled); the listing showed only
"removal: merging", read as still under way, and the terminate command ended the task's run alone."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from cli import main as cli_main
from core import stall
from tests.unit.test_cli import _Answers

TASK = "task-0123456789abcdef0123"
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


def _listing(answer: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": [], "search": "s1", "search_options": {}, **answer}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["repeats", TASK]) == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("key, target", [("removal", "removal"), ("searching", "search")])
def test_a_stalled_repeat_run_is_shown_stalled_with_the_terminate_command(
        key: str, target: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    since = NOW - timedelta(hours=3)
    note = stall.repeat_stalled(target, TASK, NOW, since)
    # a search whose list is the one shown (it wrote it, then stalled rendering the page) is shown too
    run = {"runtime_status": "Running", "stage": "publishing", "search": "s1", "stalled": note}
    said = _listing({key: run}, monkeypatch, capsys)
    assert f"STALLED: no change since {since.isoformat()} (180 minutes)" in said, said
    assert f"terminate it (trapbatch terminate {TASK} --target {target})" in said, said
    assert "/api/tasks" not in said, said


def test_a_moving_repeat_run_is_not_said_stalled(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    said = _listing({"removal": {"runtime_status": "Running", "stage": "merging", "updated": NOW.isoformat()}},
                    monkeypatch, capsys)
    assert "removal: merging" in said and "STALLED" not in said, said


def test_terminate_target_sends_it_and_the_default_sends_none(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from cli.client import ApiClient

    session = _Answers(202, 202, 202)
    monkeypatch.setattr(cli_main, "ApiClient", lambda config: ApiClient(config, session=session,  # type: ignore[arg-type]
                                                                        sleep=lambda s: None))
    base = ["--url", "https://app.example", "--key", "k", "terminate", TASK]
    assert cli_main.main([*base, "--target", "removal"]) == 0
    assert cli_main.main([*base, "--target", "search", "--reason", "stuck"]) == 0
    assert cli_main.main(base) == 0
    assert [sent["json"] for sent in session.sent] == [{"target": "removal"}, {"target": "search", "reason": "stuck"},
                                                       None]
    assert all(sent["url"] == f"https://app.example/api/tasks/{TASK}/terminate" for sent in session.sent)
    assert f"terminated the repeat removal of {TASK}" in capsys.readouterr().out
    assert cli_main.main([*base, "--target", "repeats"]) == 2  # click refuses it: nothing sent
    assert len(session.sent) == 3


@pytest.mark.parametrize("target, words", [("previews", "the preview re-render"), ("zip", "the results zip build")])
def test_terminate_ends_a_rerender_or_zip_build_in_its_own_words(target: str, words: str,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Before: click refused them (exit 2); the line said "the repeat <target>" of anything not the task."""
    from cli.client import ApiClient

    session = _Answers(202)
    monkeypatch.setattr(cli_main, "ApiClient", lambda config: ApiClient(config, session=session,  # type: ignore[arg-type]
                                                                        sleep=lambda s: None))
    assert cli_main.main(["--url", "https://app.example", "--key", "k", "terminate", TASK, "--target", target]) == 0
    assert [sent["json"] for sent in session.sent] == [{"target": target}]
    assert f"terminated {words} of {TASK}" in capsys.readouterr().out


def test_previews_wait_stops_at_a_stalled_rerender_with_the_terminate_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``previews --threshold T --wait`` polled a re-render the app judges stalled for ever (it never ends by
    itself); it stops, saying how to end it and send it again. Exit 1, as a re-render that ended failed."""
    note = stall.repeat_stalled("previews", TASK, NOW, NOW - timedelta(hours=3))
    rerender = {"runtime_status": "Running", "stage": "publishing", "threshold": 0.3, "stalled": note}
    polls: list[str] = []

    class Client:
        def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
            return {"id": task_id, "threshold": threshold}

        def results(self, task_id: str) -> dict[str, Any]:
            polls.append(task_id)
            assert len(polls) < 5, "still polling a stalled re-render"
            return {"previews": {"rerender": rerender}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.time, "sleep", lambda s: None)
    assert cli_main.main(["previews", TASK, "--threshold", "0.4", "--wait"]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "STALLED" in said and f"trapbatch terminate {TASK} --target previews" in said, said
    assert "/api/tasks" not in said, said


def test_a_terminated_removal_or_search_says_to_send_it_again(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A removal or search ended by ``trapbatch terminate --target`` shows stage terminated (api.repeat_runs); before,
    the listing printed "removal: terminated" (or "search s2: terminated") and no next step, where a failed one says to
    send it again: what it left is the same, a repeats-removed result not complete, or the list before it standing."""
    said = _listing({"removal": {"runtime_status": "Terminated", "stage": "terminated"},
                     "searching": {"runtime_status": "Terminated", "stage": "terminated", "search": "s2"}},
                    monkeypatch, capsys)
    assert "removal: terminated" in said and "search s2: terminated" in said, said
    assert f"next: send the same choice again (trapbatch repeats {TASK} --keep ... or --remove ...)" in said, said
    assert f"the list above stands; run the search again: trapbatch repeats {TASK} --search ..." in said, said
