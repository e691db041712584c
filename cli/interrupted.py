"""What ``--json`` prints on standard output after Ctrl-C (exit 130; docs/cli.md "Ctrl-C with --json").

Why: a command stopped while it waited said the ids of the tasks still running on standard error alone, so a script
that reads ``--json`` from standard output got nothing it could parse, and lost the ids. The object is small and the
same for every command that waits (``submit --wait``, ``submit --folder``, ``estimate``, ``previews --wait``)::

    {"interrupted": true, "message": ..., "hint": ..., "exit_code": 130,
     "tasks": [{"id": ..., "folder": ..., "state": "running" | "ended" | "not_followed" | "not_started"
                | "unanswered" | "not_sent", ...}]}

Each entry says what the CLI knew when it stopped: ``running`` (the app goes on with it: a task, an estimate's
listing, a re-render with its ``threshold``; ``stage`` where a status was seen), ``ended`` (``stage``, and the
``exit_code`` waiting for it would have given), ``not_followed`` (started, but following it had failed before:
``error``, ``hint``), ``not_started`` (the app refused the request: ``error``, ``hint``), ``unanswered`` (sent, no
answer yet: the app may have taken it; the same command run again finds it rather than starting it twice) and
``not_sent``. Standard error keeps its human text. Pure: dicts in, dicts out.
"""
from __future__ import annotations

from typing import Any, Mapping

from cli.errors import EXIT_INTERRUPTED, EXIT_TASK_FAILED

# What a Ctrl-C says where the command knows nothing of what it had sent (main's own, and a request unanswered)
STOPPED = "stopped (Ctrl-C): anything the app had already accepted keeps running there"
STOPPED_HINT = "trapbatch list, or trapbatch status <task id>, shows where it is"


def as_json(message: str, hint: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The object ``--json`` prints after Ctrl-C."""
    return {"interrupted": True, "message": message, "hint": hint, "exit_code": EXIT_INTERRUPTED, "tasks": tasks}


def _where(folder: str) -> dict[str, Any]:
    return {"folder": folder} if folder else {}


def running(task_id: str, folder: str = "", stage: Any = None, **more: Any) -> dict[str, Any]:
    """A task (or an estimate, a re-render) the app goes on with; ``stage``: the last one seen, if any."""
    return {"id": task_id, **_where(folder), "state": "running", **({"stage": stage} if stage else {}), **more}


def ended(task_id: str, folder: str, stage: Any, exit_code: int) -> dict[str, Any]:
    """A task followed to its end before Ctrl-C."""
    return {"id": task_id, **_where(folder), "state": "ended", "stage": stage, "exit_code": exit_code}


def posted(folder: str, answer: Mapping[str, Any], found_ended: bool) -> dict[str, Any]:
    """A task the app answered for and that was not followed yet: running, or found already ended."""
    if found_ended:
        return {"id": answer["id"], **_where(folder), "state": "ended", "stage": answer.get("stage")}
    return running(str(answer["id"]), folder, answer.get("stage"))


def failed(failure: Mapping[str, Any]) -> dict[str, Any]:
    """A folder's failure (``cli.main._folder_failure``): started but not followed (it has an id), an estimate that
    ended other than estimated (exit 1), or a request the app refused (no id)."""
    state = ("not_started" if not failure.get("id") else
             "ended" if failure.get("exit_code") == EXIT_TASK_FAILED else "not_followed")
    return {**failure, "state": state}


def unanswered(folder: str = "", **more: Any) -> dict[str, Any]:
    """A request sent whose answer Ctrl-C cut off."""
    return {**_where(folder), "state": "unanswered", **more}


def not_sent(folder: str) -> dict[str, Any]:
    return {**_where(folder), "state": "not_sent"}
