"""One task per folder: the manual workflow's ``folder_names`` (seed 000, "Forking the template script": a job split
into sub-tasks that match folders meaningful to the collaborator, e.g. ``Summer_2018``), from one command.

Why tasks and not one task with several prefixes: each folder then has its own results file, exports and preview
pages, which is what the split was for, and each is its own idempotent task (posting the command again finds them).
Pure: builds the request bodies; ``cli.main.submit`` posts them.
"""
from __future__ import annotations

from typing import Any, Sequence

from cli.errors import EXIT_USAGE, CliError
from core.errors import TrapbatchError
from core.requests import parse_task_request


def folder_requests(body: dict[str, Any], folders: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(folder, request)`` per folder: the request's ``prefix`` followed by the folder, its name labelled with the
    folder; each checked with the app's own validation. Refuses an image list (its paths already name the images),
    an empty folder and a folder given twice."""
    if body.get("image_list"):
        raise CliError("--folder cannot be combined with an image list", "the list names the images: post one "
                       "list per folder, or drop --folder", exit_code=EXIT_USAGE)
    base = str(body.get("prefix") or "")
    label = str(body.get("request_name") or "")
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for raw in folders:
        folder = raw.strip().strip("/")
        if not folder:
            raise CliError(f"--folder {raw!r} names no folder", "give a folder's name, e.g. --folder Summer_2018",
                           exit_code=EXIT_USAGE)
        if folder in seen:
            raise CliError(f"--folder {folder!r} is given twice", "name each folder once", exit_code=EXIT_USAGE)
        seen.add(folder)
        prefix = (base.rstrip("/") + "/" if base else "") + folder + "/"
        request = {**body, "prefix": prefix, "request_name": f"{label}: {folder}" if label else folder}
        try:
            parse_task_request(request)
        except TrapbatchError as exc:
            raise CliError(f"the request for folder {folder!r} is not valid: {exc.message}", exc.hint,
                           exit_code=EXIT_USAGE, app_hint=True) from None
        out.append((folder, request))
    return out
