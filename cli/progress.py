"""Waiting for a task: poll its status until it ends, showing progress as it goes.

On a terminal a rich progress bar shows images done of the total, img/s and ETA (the app's own figures, from
``GET /api/tasks/{id}``), shards running and queued, and resubmissions. Elsewhere (CI logs, pipes, ``make demo``) one
plain line is printed per change, so a log reads as a history.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from rich.markup import escape

from core.contracts import Stage

FINAL_RUNTIME = ("Completed", "Failed", "Terminated")
# "completed" (and an estimate, which is all a dry run does) is success; the rest is not (cli/errors.py codes)
SUCCESS_STAGES = (Stage.completed, Stage.estimated)


def is_final(status: dict[str, Any]) -> bool:
    return status.get("runtime_status") in FINAL_RUNTIME


def failed_steps(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(step, error, what to do) of each step after detection that failed although the task's results stand: the
    status says them in its rows, but a script sees only the exit code (``exit_code_for``), so they are said again
    when the command ends. The repeat search's and the exports' what-to-do is the app's hint (``results.exports_hint``,
    absent from statuses of releases before it: then the CLI's own words)."""
    task_id = str(status.get("id") or "ID")
    steps: list[tuple[str, str, str]] = []
    results = status.get("results") if isinstance(status.get("results"), dict) else {}
    if results and results.get("exports_error"):
        steps.append(("exports", str(results["exports_error"]),
                      str(results.get("exports_hint") or
                          "the results JSON and CSV are complete; the COCO, Camtrap DP and Zooniverse files were not "
                          "written: submit the same request with --only-new to write them again (only new or "
                          "changed images run)")))
    repeats = status.get("repeated_detections") if isinstance(status.get("repeated_detections"), dict) else {}
    if repeats and repeats.get("error"):
        steps.append(("repeated-detection search", str(repeats["error"]),
                      str(repeats.get("hint") or f"trapbatch repeats {task_id} --search runs it again")))
    if status.get("pool_job_error"):
        steps.append(("closing the pool job", str(status["pool_job_error"]),
                      "terminate the pool job the error names (az batch account login -g <group> -n <account>, "
                      "then az batch job stop --job-id ...; docs/deploy.md, \"Pool jobs by hand\"): until then "
                      "it counts against the Batch account's active jobs"))
    previews = status.get("previews") if isinstance(status.get("previews"), dict) else {}
    missing = previews.get("pictures_missing") if previews else None
    if isinstance(missing, dict) and (missing.get("reasons") or {}).get("unreadable"):  # a read failed, not an image
        steps.append(("the preview pictures", f"{missing['reasons']['unreadable']} of {missing.get('of')} pictures "
                      f"could not be read ({missing.get('error', '')})",
                      str(missing.get("hint") or f"trapbatch previews {task_id} --threshold <t> renders them again")
                      .replace("{id}", task_id)))
    if previews and previews.get("expiry_error"):
        steps.append(("scheduling the previews' expiry", str(previews["expiry_error"]),
                      f"the preview pages stay on the public website until deleted: trapbatch previews {task_id} "
                      "--delete when they should go"))
    return steps


def zooniverse_cut_short_line(exports: Any, task_id: str) -> str:
    """The exports' ``zooniverse_cut_short`` (photos cut short, ``damaged.csv``, left out of the Zooniverse subjects:
    volunteers would see their grey part) as one line, or "" when none were (or for exports from before the count):
    a manifest short of the task's photos must say why, where the task's other export notes are said (the summary
    of ``status`` / ``submit --wait``, a removal's lines, the demo's summary)."""
    count = exports.get("zooniverse_cut_short") if isinstance(exports, dict) else None
    if not isinstance(count, int) or count <= 0:
        return ""
    return (f"{count} photo{'' if count == 1 else 's'} cut short left out of the subjects (volunteers would see "
            f"{'its' if count == 1 else 'their'} grey part): re-copy {'it' if count == 1 else 'them'} from the "
            f"cards (damaged.csv, trapbatch results {task_id}), then trapbatch submit the same request with "
            "--only-new")


def ended_while_telling(status: dict[str, Any]) -> bool:
    """Whether the task was terminated or failed after its results were complete and served, while telling of its end
    (the done file, the notification's retries, the event): the app then shows its finished stage, ``completed`` or
    ``completed_with_errors``, beside that runtime status (api.starters ``_stage``)."""
    return (status.get("runtime_status") in ("Failed", "Terminated")
            and status.get("stage") in (Stage.completed, Stage.completed_with_errors))


def exit_code_for(status: dict[str, Any]) -> int:
    """0 for a task that ended completed (or estimated) with nothing after detection failed; 5 when a step after
    detection failed (``failed_steps``); 3 completed_with_errors; 1 for the rest (docs/cli.md, "Exit codes"). A task
    ended while telling of its end (``ended_while_telling``) exits as for its stage: its results are there."""
    from cli.errors import EXIT_COMPLETED_WITH_ERRORS, EXIT_FOLLOW_UP_FAILED, EXIT_OK, EXIT_TASK_FAILED

    stage = status.get("stage")
    ended = status.get("runtime_status") == "Completed" or ended_while_telling(status)
    if ended and stage in SUCCESS_STAGES:
        return EXIT_FOLLOW_UP_FAILED if failed_steps(status) else EXIT_OK
    if ended and stage == Stage.completed_with_errors:
        return EXIT_COMPLETED_WITH_ERRORS
    return EXIT_TASK_FAILED


def _eta(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def printable(text: str) -> str:
    """``text`` with every character ``str.isprintable`` refuses (C0/C1 controls such as ESC, CR and BEL, bidi
    overrides, line separators) written as its Python escape (``\\x1b``). Why: a worker's words come from its log,
    which carries a remote service's text; raw, an ESC sequence from it would drive the operator's terminal (clear
    it, retitle it, rewrite the line above), and neither ``rich.markup.escape`` nor ``click.echo`` on a terminal
    removes one (rich's ``Text`` drops only BEL, BS, VT, FF and CR)."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def waiting_note(st: dict[str, Any]) -> str:
    """``; waiting for a busy service: ...`` while a step of the task waits to be tried again
    (``orchestrations.retries``), with since when and until when a shard group waits out an outage
    (``orchestrations.shards``), its control characters escaped (``printable``); "" otherwise."""
    waiting = st.get("waiting")
    if not isinstance(waiting, dict):
        return ""
    note = f"; waiting for a busy service ({waiting.get('reason', '?')}): {waiting.get('step', '?')} tried again " \
           f"at {waiting.get('at', '?')}"
    if "attempt" in waiting:
        note += f", attempt {waiting['attempt']} of {waiting.get('of', '?')}"
    if "since" in waiting:
        note += f"; out of reach since {waiting['since']}, the task fails at {waiting.get('until', '?')}"
    return printable(note)  # the service's words: no ESC sequence of theirs reaches the terminal


def unreachable_note(st: dict[str, Any], check: bool = True) -> str:
    """``; N shard(s) wait: ...`` while shards wait out worker exits 69 (the status's ``unreachable``:
    orchestrations.shards "Unavailable exits"): the worker's words, since and until when, the next try and what to
    check (not with ``check`` False: the bar's one line), its control characters escaped (``printable``); ""
    otherwise. Why: such exits on every attempt (a firewall, a node without outbound internet) idle the pool up to an
    hour, and the counts alone show those shards only as not running."""
    note = st.get("unreachable")
    if not isinstance(note, dict):
        return ""
    line = (f"; {note.get('shards', '?')} shard(s) wait, the worker could not reach a service "
            f"({note.get('reason', '?')}) since {note.get('since', '?')}; no attempt spent until "
            f"{note.get('until', '?')}")
    if note.get("at"):
        line += f", next try at {note['at']}"
    return printable(line + (f"; check {note['check']}" if check and note.get("check") else ""))


def stalled_note(st: dict[str, Any]) -> str:
    """``; STALLED: ...`` when the app judged the running task stalled (the status's ``stalled``, ``core.stall``: no
    change for longer than any wait of its stage explains; on Azure such a task never ends by itself), else "".
    Short, and the same from poll to poll (the last change's time, not the seconds since), so that ``watch --plain``,
    which prints a line when it changes, says it once; ``trapbatch status`` shows what to do."""
    note = st.get("stalled")
    if not isinstance(note, dict):
        return ""
    return printable(f"; STALLED: no change since {note.get('since', '?')}, longer than any wait of its stage "
                     f"explains; 'trapbatch status {st.get('id', 'ID')}' says what to do")


def progress_line(st: dict[str, Any]) -> str:
    """One line for a status: the stage, and while detecting the counts, rate and ETA; a step waiting out a busy
    service says so, and shards waiting out worker exits 69 why; a task the app judged stalled says so. Control
    characters escaped (``printable``): a failed task's ``error`` is an activity's exception, a service's text, and
    ``watch`` echoes the line with ``click.echo``."""
    return (printable(_progress_line(st)) + waiting_note(st) + unreachable_note(st)  # a failed task's error: SDK text
            + stalled_note(st))


def _waiting(st: dict[str, Any]) -> str:
    """``N waiting to be tried again, `` for the status's ``shards_waiting`` (in no pool task, waiting out an exit
    69's back-off), "" for none: the shard counts add up to the shards."""
    waiting = st.get("shards_waiting") or 0
    return f"{waiting} waiting to be tried again, " if waiting else ""


def _progress_line(st: dict[str, Any]) -> str:
    stage: str = str(st.get("stage", "?"))
    if stage == Stage.detecting:
        done, total = st.get("images_done", 0), st.get("images", 0)
        rate = st.get("images_per_second")
        extra = f", {rate} img/s, ETA {_eta(st.get('eta_seconds'))}" if rate else ""
        return (f"detecting: {done}/{total} images, shards {st.get('shards_done', 0)}/{st.get('shards', 0)} done, "
                f"{st.get('shards_running', 0)} running, {st.get('shards_queued', 0)} queued, {_waiting(st)}"
                f"{st.get('resubmissions', 0)} resubmitted{extra}")
    if stage in (Stage.failed,) and st.get("error"):
        return f"failed: {st['error']}"
    if stage == Stage.awaiting_confirmation and st.get("confirmed"):  # submit --yes confirmed it a moment ago
        return f"confirmed: {st.get('images', '?')} images go to the pool"
    if stage == Stage.awaiting_confirmation:
        return awaiting_line(st)
    return stage


def awaiting_line(st: dict[str, Any]) -> str:
    """A task over the app's confirmation threshold waits for a person: what it would cost, and the two commands."""
    est = st.get("estimate") or {}
    cost = est.get("cost")
    task_id = st.get("id", "ID")
    return (f"awaiting confirmation: {st.get('images', '?')} images, {est.get('gpu_hours', '?')} GPU-hours"
            + (f", ${cost}" if cost is not None else "") + f"; nothing runs until 'trapbatch confirm {task_id}' "
            f"('trapbatch cancel {task_id}' drops it)")


def wait_for(fetch: Callable[[], dict[str, Any]], on_status: Callable[[dict[str, Any]], None],
             poll_s: float = 2.0, timeout_s: float | None = None,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Call ``fetch`` (a task's status) every ``poll_s`` until the task ends; each status goes to ``on_status``.

    Returns the final status; ``TimeoutError`` after ``timeout_s`` (None: no limit)."""
    start = time.monotonic()
    while True:
        st = fetch()
        on_status(st)
        if is_final(st):
            return st
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"the task did not end within {timeout_s:.0f} s")
        sleep(poll_s)


class LineReporter:
    """``on_status`` for logs: one line per change, with the seconds since the start."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.last = ""
        self.t0 = time.monotonic()

    def __call__(self, st: dict[str, Any]) -> None:
        line = progress_line(st)
        if line != self.last:
            self.echo(f"[{time.monotonic() - self.t0:6.1f}s] {line}")
            self.last = line

    def close(self) -> None:
        pass


class BarReporter:
    """``on_status`` for a terminal: a rich progress bar over the images, with the shard counts beside it."""

    def __init__(self, console: Any, task_id: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
                                 TextColumn("{task.fields[shards]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.bar = self.progress.add_task(task_id, total=None, rate="", eta="-", shards="")
        self.progress.start()
        self.said_waiting = False
        self.said_stalled = ""  # the last change's time of the stall said (said again for another)

    def __call__(self, st: dict[str, Any]) -> None:
        stage = str(st.get("stage", "?"))
        if stalled_note(st) and stalled_note(st) != self.said_stalled:  # once, above the bar: it never ends by itself
            self.progress.console.print(escape(stalled_note(st).removeprefix("; ")))
            self.said_stalled = stalled_note(st)
        if stage == Stage.awaiting_confirmation and st.get("confirmed"):  # confirmed a moment ago: it moves on
            stage = "confirmed"
        if stage == Stage.awaiting_confirmation and not self.said_waiting:  # once, above the bar
            self.progress.console.print(awaiting_line(st))
            self.said_waiting = True
        images = st.get("images")
        # After detection (merging, searching, publishing) the status counts no images: every one has been through
        # the pool, so the bar stays full rather than falling back to 0 of N until the task ends.
        over = is_final(st) or stage in (Stage.merging, Stage.searching, Stage.publishing)
        done = st.get("images_done", images if over and images else 0)
        rate = st.get("images_per_second")
        shards = (f"shards {st.get('shards_done', 0)}/{st.get('shards', 0)} done, {st.get('shards_running', 0)} "
                  f"running, {st.get('shards_queued', 0)} queued, {_waiting(st)}{st.get('resubmissions', 0)} "
                  "resubmitted"
                  if stage == Stage.detecting else "")
        self.progress.update(self.bar, description=stage, total=images or None, completed=done or 0,
                             rate=f"{rate} img/s" if rate else "", eta=_eta(st.get("eta_seconds")),
                             shards=(shards + escape(waiting_note(st))  # a service's words: no markup of theirs
                                     + escape(unreachable_note(st, check=False))).removeprefix("; "))

    def close(self) -> None:
        self.progress.stop()
