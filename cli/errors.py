"""The CLI's error types and its exit codes (docs/cli.md)."""
from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_TASK_FAILED = 1  # the task ended failed, cancelled or terminated
EXIT_USAGE = 2  # click's own code for bad arguments; also no app configured, or a config file it cannot use
EXIT_COMPLETED_WITH_ERRORS = 3  # the task ended completed_with_errors
EXIT_API = 4  # the app could not be reached, or refused the request
# the task ended completed, but a step after detection failed (exports, repeat search, closing the pool job, the
# previews' expiry): the results stand, yet a pipeline that goes on after exit 0 would miss what the step makes
EXIT_FOLLOW_UP_FAILED = 5
EXIT_INTERRUPTED = 130  # Ctrl-C while watching (the task keeps running)
# what reads the output stopped reading (``trapbatch list | head -1``): 128 + SIGPIPE, as a shell reports a Unix
# tool that SIGPIPE ended (Python ignores SIGPIPE, so the CLI says it itself: ``cli.main.OutputClosed``)
EXIT_OUTPUT_CLOSED = 141


class OutputClosed(BaseException):
    """Standard output (or error) was closed by its reader: nothing more can be said, and nothing more should be.

    A BaseException, like KeyboardInterrupt: a command's ``except Exception`` (a retry, a fallback) must not catch it
    and go on writing to a closed pipe; only ``cli.main.main`` does, and ends quietly (``EXIT_OUTPUT_CLOSED``)."""


class CliError(Exception):
    """A failure the operator can act on: what happened (``message``) and what to do next (``hint``).
    ``app_hint``: the hint is the app's (its answer, or its request validation run here), written for an HTTP
    client: it is shown in the CLI's words (``cli.hints``). ``about_task``: the app's answer is about a task's state
    (a 409 of a route under ``/api/tasks/<id>``), not about the request, so a field its prose names unquoted is the
    flag a CLI user sets (``cli.hints.named_as_flags``: "or expired (previews_expire_days)"), as in a task's own
    answers; a request's validation names the request's fields, which stay fields."""

    def __init__(self, message: str, hint: str, exit_code: int = EXIT_API, app_hint: bool = False,
                 about_task: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.app_hint = app_hint
        self.about_task = about_task


class Interrupted(CliError):
    """Ctrl-C while a command waited (exit 130): only the waiting stopped, what the app had accepted goes on there.
    ``tasks``: what is known of each thing the command had sent (``cli.interrupted``), which ``--json`` prints on
    standard output: with the ids on standard error alone, a script reading standard output got nothing to parse."""

    def __init__(self, message: str, hint: str, tasks: list[dict[str, Any]]) -> None:
        super().__init__(message, hint, exit_code=EXIT_INTERRUPTED)
        self.tasks = tasks
