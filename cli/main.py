"""The ``trapbatch`` command (click): one subcommand per thing an operator does with a task. See docs/cli.md."""
from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence, TypeVar, cast

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from cli import config as cfg
from cli import interrupted as stop
from cli.client import ApiClient
from cli.errors import (EXIT_API, EXIT_COMPLETED_WITH_ERRORS, EXIT_FOLLOW_UP_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                        EXIT_OUTPUT_CLOSED, EXIT_TASK_FAILED,
                        EXIT_USAGE, CliError, Interrupted, OutputClosed)
from cli.folders import folder_requests
from cli.hints import for_task, named_as_flags, translate
from cli.zooniverse_upload import VARIANTS as ZU_VARIANTS
from cli.progress import (BarReporter, LineReporter, awaiting_line, ended_while_telling, exit_code_for, failed_steps,
                          is_final, printable,
                          unreachable_note, wait_for, waiting_note, zooniverse_cut_short_line)
from core.contracts import TASK_LIST_LIMIT, Stage
from core.errors import TrapbatchError
from core.notimages import describe as describe_not_images
from core.requests import (MAX_BODY_BYTES, MAX_TERMINATE_REASON_CHARS, TASK_BODY_HINT, TERMINATE_TARGETS,
                           encoded_size, parse_rerender, parse_task_request, parse_terminate, too_large_hint_for)
from core.stall import AFTER_TASK_RUNS
from gpu_batch.formats.entries import DETECTION_CATEGORIES



class _Console(Console):
    """rich's Console, ending the command by ``OutputClosed`` when what reads its output has closed it. Why: rich's
    own answer (``Console.on_broken_pipe``) is SystemExit(1), the CLI's "the task failed" code (docs/cli.md), and it
    points standard output at /dev/null even when standard error was the stream closed."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more from this console
        raise OutputClosed


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    """The group's options; the configuration is resolved at the first command that needs it (so --help needs none)."""

    def __init__(self, flags: dict[str, str | None]) -> None:
        self.flags = flags
        self._client: ApiClient | None = None

    @property
    def config(self) -> cfg.Config:
        return cfg.resolve(self.flags)

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.config)
        return self._client


pass_state = click.make_pass_decorator(State)


class _Group(click.Group):
    """The CLI's group: a Ctrl-C no command caught becomes main's "stopped (Ctrl-C)" (``Interrupted``) here, before
    click's ``Command.main`` sees it. Why: click answers a KeyboardInterrupt out of ``invoke`` by writing an empty
    line to standard error, then raising Abort (click/core.py ``Command.main``: ``except (EOFError,
    KeyboardInterrupt): echo(file=sys.stderr); raise Abort()``), so that stop alone began with a blank line, where
    every other Ctrl-C path starts with its "stopped" line.

    A closed standard output (``trapbatch list | head -1``) becomes ``OutputClosed`` here too, for the same reason:
    click answers a BrokenPipeError (an OSError with EPIPE) out of ``make_context`` (--help, --version) or ``invoke``
    with exit 1, the CLI's "the task failed"; ``main`` ends quietly with 141 instead, as a Unix tool does."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except BrokenPipeError:
            raise OutputClosed from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted(stop.STOPPED, stop.STOPPED_HINT, []) from None
        except BrokenPipeError:
            raise OutputClosed from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--url", help="the app's address (or TRAPBATCH_URL, or url in the config file)")
@click.option("--key", help="a function key (or TRAPBATCH_KEY, or key in the config file); never printed")
@click.option("--token", help="a bearer token where the app identifies callers (or TRAPBATCH_TOKEN)")
@click.option("--auth-client-id", help="the app's Entra ID application id (infra's authClientId, or "
              "TRAPBATCH_AUTH_CLIENT_ID): tokens for it come from your Azure sign-in and are renewed as they expire")
@click.version_option("0.1.0", prog_name="trapbatch")
@click.pass_context
def cli(ctx: click.Context, url: str | None, key: str | None, token: str | None, auth_client_id: str | None) -> None:
    """Run MegaDetector over a blob container with trapbatch, and watch, fetch and tidy its results.

    Configuration: flags, then TRAPBATCH_URL / TRAPBATCH_KEY / TRAPBATCH_TOKEN / TRAPBATCH_AUTH_CLIENT_ID /
    TRAPBATCH_STORAGE_CONNECTION, then ~/.config/trapbatch/config.toml (TRAPBATCH_CONFIG names another). Exit
    codes: 0 done, 1 the task failed, was cancelled, terminated or expired (previews --wait: the re-render failed),
    2 bad arguments or no app configured, 3 completed with errors (zooniverse: some photos not prepared), 4 the app
    could not be reached or refused the request, 5 completed but a step after detection failed (exports, repeat
    search, pool job, previews' expiry or pictures: each printed with what to do), 130 interrupted (the task keeps
    running; submit, estimate and previews with --json print a JSON object naming it on standard output), 141 the
    output closed by what reads it (| head).
    """
    ctx.obj = State({"url": url, "key": key, "token": token, "auth_client_id": auth_client_id})


# ------------------------------------------------------------------ the request, from a file and flags

REQUEST_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--container", "container", str, "blob container holding the images"),
    ("--prefix", "prefix", str, "only blobs under this prefix"),
    ("--first-n", "first_n", int, "only the first N images"),
    ("--sample-n", "sample_n", int, "a seeded random sample of N images"),
    ("--seed", "seed", int, "the sample's seed"),
    ("--model", "model", str, "MDV5A, MDV5B, MDV1000-REDWOOD, MDV1000-SPRUCE or blob://<models container>/<name>"),
    ("--name", "request_name", str, "a label for the task"),
    ("--images-per-shard", "images_per_shard", int, "shard size (default: the app's)"),
    ("--source-account-url", "source_account_url", str, "the images' storage account, when not trapbatch's"),
    ("--credential-secret", "credential_secret", str, "name of the Key Vault secret that opens that account"),
    ("--max-failed-fraction", "max_failed_fraction", float, "share of images that may fail for 'completed'"),
    ("--preview-threshold", "preview_threshold", float, "confidence (0.005-1) from which a detection counts in the "
     "preview, the CSV and the exports (default: the app's, else the model's typical threshold)"),
    ("--notify-url", "notify_url", str, "https address told (one signed POST) when the task ends"),
    ("--notify-url-secret", "notify_url_secret", str, "name of the Key Vault secret holding that address, for one "
     "that carries a secret (sig=, code=, a webhook's path): notify-url-<name> unless the app sets another prefix; "
     "not with --notify-url"),
    ("--previews-expire-days", "previews_expire_days", int, "days after the task ends that its preview pages come "
     "off the public website"),
    ("--image-list", "image_list", str, "a JSON or CSV blob in the container naming exactly the images to run"),
    ("--utc-offset", "utc_offset", str, "the cameras' clocks' offset from UTC (+02:00): Camtrap DP's capture times "
     "are in it"),
    ("--event-interval-s", "event_interval_s", float, "seconds between a camera's photos past which Camtrap DP counts "
     "two events (default: the app's, 60)"),
    ("--zooniverse-visit-frames", "zooniverse_visit_frames", int, "Zooniverse subjects of visits (photos grouped by "
     "time), at most this many frames each (default: a subject per image)"),
    ("--camera-depth", "camera_depth", int, "an image's camera is its first N folders below the prefix (1 for "
     "camera/day/IMG.jpg; default: the image's folder)"),
]


def request_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for flag, dest, kind, text in reversed(REQUEST_FLAGS):
        f = click.option(flag, dest, type=kind, default=None, help=text)(f)
    return click.argument("request_file", required=False, type=click.Path(exists=True, dir_okay=False,
                                                                          path_type=Path))(f)


def build_request(request_file: Path | None, fields: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """The request body: the JSON file's fields, overridden by flags; checked here with the app's own validation
    (core.requests) so a typo is reported before anything is sent."""
    body: dict[str, Any] = {}
    if request_file is not None:
        try:
            loaded = json.loads(request_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CliError(f"{request_file} is not JSON ({exc})",
                           'write a JSON object, e.g. {"container": "my-camera-traps", "prefix": "2024/"}',
                           exit_code=2) from None
        if not isinstance(loaded, dict):
            raise CliError(f"{request_file} holds a JSON {type(loaded).__name__}, not an object",
                           'write a JSON object, e.g. {"container": "my-camera-traps"}', exit_code=2)
        body.update(loaded)
    body.update({k: v for k, v in fields.items() if v is not None})
    if dry_run:
        body["dry_run"] = True
    if "container" not in body:
        raise CliError("no container given", "pass --container NAME or a request JSON file", exit_code=2)
    try:
        parse_task_request(body)
    except TrapbatchError as exc:
        raise CliError(f"the request is not valid: {exc.message}", exc.hint, exit_code=2, app_hint=True) from None
    if (size := encoded_size(body)) > MAX_BODY_BYTES:  # the app refuses it (413) unread: say so before sending
        raise CliError(f"the request is {size} bytes, more than the {MAX_BODY_BYTES} the app takes",
                       too_large_hint_for(body, TASK_BODY_HINT), exit_code=2, app_hint=True)
    return body


def _task_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A task id argument without the blanks a copy and paste brings along; an empty one is refused before anything
    is sent. Why: ``trapbatch status "$ID"`` with ``ID`` unset asked for ``GET /api/tasks/``, which is the task
    *list*: ``status`` printed nothing and exited 0, ``watch`` followed the list forever (stage ``?``)."""
    task_id = value.strip()
    if not task_id:
        raise CliError(f"no task id given ({param.human_readable_name} is empty)",
                       "pass the id trapbatch submit printed (trapbatch list shows every task's id)",
                       exit_code=EXIT_USAGE)
    return task_id


task_id_argument = click.argument("task_id", callback=_task_id)


# ------------------------------------------------------------------ output helpers


# JSON documents begun on standard output by this process (``json_on_interrupt`` reads it)
_JSON_PRINTED = [0]


def _print_json(value: Any) -> None:
    _JSON_PRINTED[0] += 1  # before the write: a Ctrl-C during it has begun a document
    click.echo(json.dumps(value, indent=1, sort_keys=True))


F = TypeVar("F", bound=Callable[..., Any])


def json_on_interrupt(command: F) -> F:
    """With ``--json`` (the command's ``as_json``), Ctrl-C prints ``cli.interrupted``'s object on standard output
    (the tasks an ``Interrupted`` names; none where the command knew of none), then goes on as without it: standard
    error says what keeps running, exit 130 (``main``). Not where the command had begun its own JSON already (its
    answer printed, then Ctrl-C while it said the rest on standard error): a second document after it made standard
    output unreadable to ``json.load``, and after a document cut short nothing makes it readable."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        printed = _JSON_PRINTED[0]
        try:
            return command(*args, **kwargs)
        except Interrupted as exc:
            if kwargs.get("as_json") and _JSON_PRINTED[0] == printed:
                _print_json(stop.as_json(exc.message, hint_of(exc), exc.tasks))
            raise
        except KeyboardInterrupt:
            if kwargs.get("as_json") and _JSON_PRINTED[0] == printed:
                _print_json(stop.as_json(stop.STOPPED, stop.STOPPED_HINT, []))
            raise

    return cast(F, run)


def in_cli_words(hint: str) -> str:
    """An app's hint with its routes as this CLI's commands and its JSON fields as flags (``FIELD_FLAGS``): the
    app writes them for an HTTP client (``POST /api/tasks/<id>/confirm``, ``e.g. "threshold": 0.2``)."""
    return translate(hint, FIELD_FLAGS, SWITCHES)


def task_hint_in_cli_words(hint: str, task_id: str) -> str:
    """A hint from an answer about the task ``task_id`` (its repeats listing, its preview page) in the CLI's words,
    with that task's id where the app wrote a placeholder or a generation key (``cli.hints.for_task``), and the
    fields its prose names as their flags (``cli.hints.named_as_flags``)."""
    return named_as_flags(in_cli_words(for_task(hint, task_id)), FIELD_FLAGS)


def hint_of(exc: CliError) -> str:
    """What ``next:`` says for ``exc``: the app's hint in the CLI's words, the CLI's own as it is."""
    if not exc.app_hint:
        return exc.hint
    return named_as_flags(in_cli_words(exc.hint), FIELD_FLAGS) if exc.about_task else in_cli_words(exc.hint)


def _reporter(task_id: str, plain: bool, to_stderr: bool = False) -> LineReporter | BarReporter:
    console = err if to_stderr else out
    if plain or not console.is_terminal:
        return LineReporter(lambda line: click.echo(line, err=to_stderr))
    return BarReporter(console, task_id)


def watch_task(client: ApiClient, task_id: str, plain: bool = False, poll_s: float = 2.0,
               timeout_s: float | None = None, to_stderr: bool = False, confirm: bool = False,
               confirmed_already: bool = False) -> dict[str, Any]:
    """Follow a task to its end with progress; the final status. Ctrl-C stops watching, not the task.
    ``to_stderr``: the progress goes to standard error (``--json``: standard output holds the JSON alone).
    ``confirm`` (``submit --yes``): a task waiting for confirmation is confirmed, once. ``confirmed_already``
    (``confirm --wait``): the confirmation was just sent, so a status still waiting for it is not shown as waiting
    (its line said "nothing runs until 'trapbatch confirm ...'" right after that command)."""
    reporter = _reporter(task_id, plain, to_stderr)
    confirmed = [confirmed_already]
    seen: list[Any] = [None]  # the last stage seen, for a Ctrl-C's --json (cli.interrupted)

    def fetch() -> dict[str, Any]:
        st = client.status(task_id)
        seen[0] = st.get("stage")
        if confirm and not confirmed[0] and st.get("stage") == Stage.awaiting_confirmation and not is_final(st):
            confirmed[0] = True
            client.confirm(task_id)
            (err if to_stderr else out).print(f"confirmed task {task_id} (--yes): its shards go to the pool")
        if confirmed[0] and st.get("stage") == Stage.awaiting_confirmation:
            st = {**st, "confirmed": True}  # until the task moves on, its last status still says it waits
        return st

    try:
        return wait_for(fetch, reporter, poll_s=poll_s, timeout_s=timeout_s)
    except KeyboardInterrupt:
        reporter.close()
        raise Interrupted(f"stopped watching (Ctrl-C); task {task_id} keeps running",
                          f"trapbatch watch {task_id} to follow it again, trapbatch cancel {task_id} to stop it",
                          [stop.running(task_id, stage=seen[0])]) from None
    except TimeoutError as exc:
        reporter.close()
        raise CliError(str(exc), f"the task keeps running: trapbatch watch {task_id}", exit_code=EXIT_API) from None
    finally:
        reporter.close()


def drop_answer_line(unwritten: dict[str, Any], task_id: str) -> str:
    """The status's ``drop_answer`` (the answer file beside a dropped request could not be written): which, why, and
    what to do, the app's hint in the CLI's words (a status from before the hint: the CLI's own)."""
    hint = str(unwritten.get("hint") or "the task's outcome stands, but that file will not come: read the same "
               f"status with GET /api/tasks/{task_id} instead")
    return f"NOT written: {unwritten.get('file')} ({unwritten.get('reason')}); next: {in_cli_words(hint)}"


def sizes_unknown_line(exports: dict[str, Any]) -> str:
    """The exports' ``sizes_unknown`` (images whose COCO boxes stayed relative: no size in the results and none
    read) with why (``sizes_unknown_why``: by reason, the first names and storage error) and what to do; exports
    written before the why was kept give the count alone."""
    line = f"{exports['sizes_unknown']} image(s) without a size: their boxes are relative (bbox_relative)"
    why = exports.get("sizes_unknown_why")
    if not isinstance(why, dict):
        return line
    reasons = ", ".join(f"{k}: {v}" for k, v in (why.get("reasons") or {}).items())
    line += f" ({reasons}); e.g. {', '.join(why.get('examples') or [])}"
    if why.get("error"):
        line += f"; {why['error']}"
    return line + (f"; next: {in_cli_words(str(why['hint']))}" if why.get("hint") else "")


def _summary(st: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    # reused: an --only-new run's images kept from the served results, not run again (README, the only_new field)
    keys = ("id", "stage", "runtime_status", "images", "reused", "images_done", "failed", "missing", "with_detections",
            "detections", "empty", "shards", "shards_done", "shards_running", "shards_queued", "shards_waiting",
            "resubmissions", "images_per_second", "eta_seconds", "progress", "started", "finished", "pool_job", "error")
    for k in keys:
        if st.get(k) not in (None, ""):
            table.add_row(k, escape(printable(str(st[k]))))  # "error" is a service's text: its [words], no ESC
    if st.get("updated") and not is_final(st):  # when it last moved (while detecting: its newest shard group)
        table.add_row("updated", escape(printable(str(st["updated"]))))
    stalled = st.get("stalled")
    if isinstance(stalled, dict):  # running, and no change for longer than its stage's waits explain (core.stall)
        table.add_row("STALLED", escape(printable(f"no change since {stalled.get('since', '?')} "
                                                  f"({int(stalled.get('seconds') or 0) // 60} minutes)")))
        # folded, not cut with "…": the hint's terminate URL is copied whole
        table.add_row("next", Text(printable(in_cli_words(str(stalled.get("hint") or ""))), overflow="fold"))
    if waiting_note(st):
        table.add_row("waiting", escape(waiting_note(st).removeprefix("; waiting for ")))  # a service's [words]
    if isinstance(st.get("groups_unknown"), int) and st["groups_unknown"] > 0:  # not in any count yet (api.starters)
        n = st["groups_unknown"]
        table.add_row("starting", f"{n} shard group{'' if n == 1 else 's'} not reporting yet: their shards and images "
                      "are in none of the counts above")
    ended = st.get("groups_ended_without_counts")
    if isinstance(ended, int) and ended > 0:  # ended before any status: they never will report (api.starters)
        table.add_row("ended", f"{ended} shard group{'' if ended == 1 else 's'} ended (failed or terminated) without "
                      "reporting: their shards and images are in none of the counts above and will not be")
    if unreachable_note(st):  # shards waiting out worker exits 69: the worker's words, since, until, what to check
        table.add_row("unreachable", escape(unreachable_note(st).removeprefix("; ")))
    if st.get("failure_reasons"):
        table.add_row("failure_reasons", ", ".join(f"{k}: {v}" for k, v in st["failure_reasons"].items()))
    if st.get("failures_hint"):  # what to do about the failed images (which a re-run retries, what to fix first)
        table.add_row("failures", escape(in_cli_words(str(st["failures_hint"]))))
    given_up = st.get("shards_given_up")
    if isinstance(given_up, dict) and given_up.get("count"):  # why their images were not processed, and what to do
        table.add_row("shards given up", f"{given_up['count']} after every attempt")
        for example in given_up.get("examples") or []:
            table.add_row("", escape(printable(f"{example.get('shard')} (attempt {example.get('attempts')}): "
                                               f"{example.get('reason')}")))  # the worker's words: no ESC
        if given_up.get("hint"):
            table.add_row("next", escape(in_cli_words(str(given_up["hint"]))))
    damaged = damaged_line(st.get("damaged"), str(st.get("id")))
    if damaged:  # photos cut short: results stand, re-copy them
        table.add_row("damaged", escape(damaged))
    if st.get("stage") == Stage.awaiting_confirmation and not is_final(st):  # what it waits for, and the commands
        table.add_row("next", awaiting_line(st))
    results: dict[str, Any] = st["results"] if isinstance(st.get("results"), dict) else {}
    exports_error = results.get("exports_error")
    if exports_error:  # the results stand; the COCO / Camtrap DP / Zooniverse files were not written
        table.add_row("exports", f"NOT written: {exports_error}")
    exports = results.get("exports")
    if isinstance(exports, dict) and exports.get("events"):  # core.camtrap_events
        where = f" at {exports['cameras']} camera{'' if exports['cameras'] == 1 else 's'}" if exports.get("cameras") \
            else ""
        table.add_row("camera visits", f"{exports['events']}{where} (Camtrap DP event-level observations"
                      + ("; a row per camera in camera-visits.csv" if exports.get("camera_visits") else "")
                      + ("; a row per camera and day in camera-days.csv" if exports.get("camera_days") else "") + ")")
    if isinstance(exports, dict) and exports.get("sizes_unknown"):  # COCO boxes left relative: why, what to do
        table.add_row("COCO sizes", escape(printable(sizes_unknown_line(exports))))  # storage's words: no ESC
    cut_short = zooniverse_cut_short_line(exports, str(st.get("id")))
    if cut_short:  # photos cut short: in the results, not in the Zooniverse manifests
        table.add_row("zooniverse", escape(cut_short))
    previews: dict[str, Any] = st["previews"] if isinstance(st.get("previews"), dict) else {}
    missing = previews.get("pictures_missing")
    if isinstance(missing, dict) and missing.get("count"):  # the page shows these images without a picture
        why = ", ".join(f"{k}: {v}" for k, v in (missing.get("reasons") or {}).items())
        table.add_row("preview pictures", escape(f"{missing['count']} of {missing.get('of')} missing ({why}); "
                                                 + in_cli_words(str(missing.get("hint") or "")
                                                                .replace("{id}", str(st.get("id"))))))
    if previews.get("readme_error"):  # the results README was not written: the results stand without it
        table.add_row("README", escape(in_cli_words(str(previews["readme_error"]))))
    if st.get("work_left"):  # a best-effort cleanup left work blobs: the results stand, the storage costs
        table.add_row("work left", escape(str(st["work_left"])))
    told = st.get("notification")
    if isinstance(told, dict):  # the request's notify_url: taken, or why not
        table.add_row("notify_url", f"told (answered {told.get('status_code')})" if told.get("sent") else
                      f"NOT told: {told.get('reason')}")
    unwritten = st.get("drop_answer")
    if isinstance(unwritten, dict) and unwritten.get("written") is False:  # the dropped request's answer file
        table.add_row("drop answer", escape(drop_answer_line(unwritten, str(st.get("id") or "ID"))))
    unjoined = st.get("joined_drops")
    if isinstance(unjoined, dict) and unjoined.get("written") is False:  # those of the requests that joined it
        table.add_row("joined drops", escape(f"done files NOT all written ({unjoined.get('reason')}); next: "
                                             f"{in_cli_words(str(unjoined.get('hint') or ''))}"))
    published = st.get("task_event")
    if isinstance(published, dict) and not published.get("sent"):  # the operator's Event Grid topic missed it
        table.add_row("task event", f"NOT published: {published.get('reason')}")
    if isinstance(st.get("not_images"), dict):  # files the listing found that are not images: none of them ran
        table.add_row("not run", describe_not_images(st["not_images"]))
    repeats = st.get("repeated_detections") or {}
    if repeats.get("error"):  # the results stand; the list was not made
        table.add_row("repeated places", escape(printable(f"NOT searched: {repeats['error']}; "
                                                          f"{in_cli_words(repeats.get('hint', ''))}")))
    elif repeats.get("note"):  # the current list could not be read just now: the count is the one the task ended with
        table.add_row("repeated places", f"{repeats.get('locations', 0)} when the task ended; "
                      + escape(in_cli_words(str(repeats["note"]))))
    elif repeats.get("locations") or repeats.get("folders_skipped"):
        skipped = repeats.get("folders_skipped")
        # the list a --search wrote replaces the merge's: say which one the count is of (absent: an older app's)
        search = repeats.get("search")
        of_list = (f"list {search} of {repeats.get('searched') or '?'}, "
                   if search and search != "merge" else "")
        table.add_row("repeated places", str(repeats.get("locations", 0)) + f" ({of_list}trapbatch repeats ID)"
                      + (f"; {skipped} folder{'s' if skipped != 1 else ''} too large NOT searched "
                         f"({repeats.get('detections_skipped')} eligible detections; trapbatch repeats ID says what to "
                         "do)" if skipped else ""))
    stalled_run = repeats.get("stalled")
    if isinstance(stalled_run, dict):  # its repeat removal or search may never end: the way out, in the CLI's words
        table.add_row(f"repeat {stalled_run.get('target', 'run')}", Text(printable(
            f"STALLED since {stalled_run.get('since', '?')}: " + task_hint_in_cli_words(
                str(stalled_run.get("hint") or ""), str(st.get("id") or "ID"))), overflow="fold"))
    if isinstance(st.get("served"), dict):  # a re-run that has not completed: the earlier results still stand
        served = st["served"].get("generation") or "the first run"
        table.add_row("served", f"{served}'s results (trapbatch results {st.get('id')})")
    if isinstance(st.get("replaced"), dict):  # the generation this re-run replaced: when its files go
        table.add_row("replaced", Text(printable(replaced_line(st["replaced"])), overflow="fold"))
    out.print(table)
    if st.get("estimate"):
        _estimate_table(st["estimate"])
    if st.get("cost"):
        _cost_table(st["cost"])


def replaced_line(replaced: dict[str, Any]) -> str:
    """The status's ``replaced`` (core.replaced: a completed re-run's promotion replaced a generation) in words: which
    generation, and when its results, exports, zips and working state are deleted, or why they stay."""
    which = f"re-run {replaced['generation']}'s" if replaced.get("generation") else "the first run's"
    if replaced.get("error"):
        return f"{which} results stay: no deletion could be scheduled ({replaced['error']})"
    if not replaced.get("deletes_at"):
        return f"{which} results are kept (TRAPBATCH_KEEP_REPLACED_DAYS=0)"
    return f"{which} results, exports and working state are deleted at {replaced['deletes_at']}"


def _cost_table(cost: dict[str, Any]) -> None:
    """A finished task's ``cost`` block (core/cost.py): measured node time, and USD where the app knows a price."""
    table = Table(title="cost (node time measured by the pool; a lower bound of the bill)", show_header=False,
                  box=None)
    price = cost.get("price_per_hour")
    rows = [("node time", f"{cost.get('node_seconds')} s over {cost.get('attempts')} shard attempt(s)"),
            # no rate (no image detected, or no node time: a task cancelled before its pool ran) reads "unknown", not
            # "None images per node-second"
            ("rate", f"{cost['images_per_node_second']} images per node-second"
             if cost.get("images_per_node_second") is not None else "unknown (no images timed on a node)"),
            ("price", f"${price}/node-hour on {cost.get('vm_size') or 'a pool without a VM size'} "
                      f"({cost.get('price_source')})" if price is not None else "unknown"),
            ("cost", f"${cost.get('usd')}, ${cost.get('usd_per_million_images')} per million images"
             if cost.get("usd") is not None else "unknown"),
            ("note", cost.get("note"))]
    for k, v in rows:
        if v not in (None, ""):
            table.add_row(k, str(v))
    out.print(table)


def _estimate_table(est: dict[str, Any]) -> None:
    table = Table(title="estimate", show_header=False, box=None)
    wall = int(est.get("wall_seconds") or 0)
    rows = [("images", est.get("images")), ("shards", est.get("shards")),
            ("GPU-hours", est.get("gpu_hours")), ("wall time", f"{wall // 3600}h{wall % 3600 // 60:02d}m{wall % 60:02d}s"
                                                  f" on {est.get('nodes_used')} node(s)"),
            ("cost (list price)", est.get("cost") if est.get("cost") is not None
             else "unknown: the app has no TRAPBATCH_NODE_PRICE_PER_HOUR nor a listed TRAPBATCH_POOL_VM_SIZE"),
            ("worker rate", f"{est.get('worker_images_per_s')} img/s per node"),
            ("assumes", est.get("assumes"))]
    if isinstance(est.get("not_images"), dict):
        rows.append(("not run", describe_not_images(est["not_images"])))
    for k, v in rows:
        table.add_row(k, str(v))
    out.print(table)


def _finish(st: dict[str, Any]) -> int:
    """Say how the task ended when that is not plain success, each step after detection that failed with its
    ``next:`` line (``failed_steps``), and answer the exit code."""
    code = exit_code_for(st)
    telling = ended_while_telling(st)
    if telling:  # its results stand (exit as for its stage); what may not have gone out is the word of its end
        err.print(f"[bold yellow]task {st.get('id')} ended {st.get('stage')} (its results are complete), but was "
                  f"{str(st.get('runtime_status')).lower()} while telling of its end[/]"
                  + (f": {escape(printable(str(st['error'])))}" if st.get("error") else "")
                  + f"; its notification, done file or event may not have gone out: trapbatch results {st.get('id')} "
                  "has the results")
    if code != EXIT_OK and not (telling and code == EXIT_COMPLETED_WITH_ERRORS):
        folder = f" (folder {st['folder']})" if st.get("folder") else ""  # submit --folder: which of them
        ended = "completed, but a step after detection failed" if code == EXIT_FOLLOW_UP_FAILED else \
            f"ended {st.get('stage')}"
        err.print(f"[bold red]task {st.get('id')}{escape(folder)} {ended}[/]" +
                  (f": {escape(printable(str(st['error'])))}" if st.get("error") else ""))
    for step, error, hint in failed_steps(st):  # the errors are a service's text: no ESC of theirs on the terminal
        err.print(f"[bold red]{escape(step)} failed:[/] {escape(printable(error))}")
        err.print(f"  [bold]next:[/] {escape(printable(in_cli_words(hint)))}")
    return code


# ------------------------------------------------------------------ commands


@cli.command(short_help="Start a task (flags or a request JSON); --wait follows it to its end.")
@request_options
@click.option("--folder", "folders", multiple=True, help="one task per folder under the prefix (repeat the flag), "
              "each with its own results and previews")
@click.option("--wait/--no-wait", default=False, help="follow the task with a progress bar until it ends")
@click.option("--yes", "confirm", is_flag=True, help="with --wait: confirm the task if it waits for confirmation "
              "(more images than the app's TRAPBATCH_CONFIRM_ABOVE_IMAGES) instead of waiting for 'trapbatch "
              "confirm'")
@click.option("--plain", is_flag=True, help="one line per change instead of a progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@click.option("--rerun", is_flag=True, help="run a task that already ended (completed, failed or cancelled) again, as "
              "a new generation under the same id (the request's \"rerun\": true)")
@click.option("--only-new", is_flag=True, help="a re-run that sends only new or changed images, and those that "
              "failed or never ran, to the pool and keeps the served results of the rest (\"only_new\": true)")
@pass_state
@json_on_interrupt
def submit(state: State, /, request_file: Path | None, folders: tuple[str, ...], wait: bool, confirm: bool,
           plain: bool, as_json: bool, rerun: bool, only_new: bool, **fields: Any) -> None:
    """Start a task over a container, from a request JSON file and/or flags (flags win).

    Posting the same request again finds the same task instead of running it twice. With --wait the command follows
    the task and exits 0 only if it completed and every step after detection succeeded (1 failed, cancelled,
    terminated or expired, 3 completed with errors, 5 completed but a step after detection failed). With --folder, one
    task per folder (the exit code is the worst of theirs). A task over the app's confirmation threshold waits, with
    its estimate, for 'trapbatch confirm' (or --yes)."""
    if confirm and not wait:
        raise CliError("--yes confirms while following the task: add --wait",
                       "or confirm a waiting task later with: trapbatch confirm <task id>", exit_code=EXIT_USAGE)
    if rerun:
        fields["rerun"] = True
    if only_new:
        fields["only_new"] = True
    body = build_request(request_file, fields)
    if folders:
        _submit_folders(state, body, folders, wait, plain, as_json, confirm)
        return
    try:
        answer = state.client.submit(body)
    except KeyboardInterrupt:  # the app may have taken it: the same command run again finds it, not a second one
        raise Interrupted(stop.STOPPED, stop.STOPPED_HINT, [stop.unanswered()]) from None
    if as_json and not wait:
        _print_json(answer)
        return
    task_id = answer["id"]
    said = err if as_json else out  # with --json, standard output holds the JSON alone
    said.print(f"task {task_id} " + ("started" if answer.get("started") else "already known (same request)"))
    if answer.get("not_applied") and wait:  # without --wait the app's hint below says it
        err.print(f"not applied to the task found: {', '.join(answer['not_applied'])} (submit with --rerun to run "
                  "it with them)")
    if not wait:
        if not answer.get("started") and answer.get("hint"):
            said.print(f"its stage: {answer.get('stage')}; {in_cli_words(answer['hint'])}")
        if not found_ended(answer):  # a task that has ended has nothing to follow: the hint said what to do
            said.print(f"follow it: trapbatch watch {task_id}")
        elif not answer.get("hint"):
            said.print(f"it has ended: trapbatch status {task_id} shows how")
        return
    st = watch_task(state.client, task_id, plain, to_stderr=as_json, confirm=confirm)
    if as_json:
        _print_json(st)
    else:
        _summary(st)
    code = _finish(st)
    again = ended_before_line(st, code, not found_ended(answer))
    if again:
        err.print(again)
    sys.exit(code)


# The stages a task ends in (core.contracts.Stage); a task found again in any other was still running when posted
ENDED_STAGES = frozenset({Stage.completed, Stage.completed_with_errors, Stage.cancelled, Stage.failed,
                          Stage.terminated, Stage.expired, Stage.estimated})


def found_ended(answer: dict[str, Any]) -> bool:
    """Whether a submit's answer found the request's task already ended (not started, its ``stage`` an end). Why:
    a task found still running that then fails during the wait did not end "before" (``ended_before_line``). An
    answer without a stage (an app of before it gave one) counts as ended, as every found task did then."""
    if answer.get("started"):
        return False
    stage = answer.get("stage")
    return stage is None or stage in ENDED_STAGES


def ended_before_line(st: dict[str, Any], code: int, started: bool, folder: str = "") -> str:
    """``next:`` for a submit that found its task already ended badly (failed, cancelled, completed with errors: the
    task's own end, not a step after detection): posting the same request again finds that task, it does not run it
    again; only ``--rerun`` does (one completed with errors: ``--only-new``, which runs its failed images again and
    keeps the rest). A task found ended well gets a ``note:`` instead: its results are of that run, so
    photos uploaded since are in none (``submit --wait`` after adding photos said "completed", exit 0, and ran
    nothing); ``--only-new`` runs them. "" when the submit started the task or found it still running (``started``:
    ``not found_ended(answer)``). ``folder``: whose task, for ``submit --folder``, which said nothing of it while a
    single submit did."""
    if started:
        return ""
    whose = f"folder {folder}'s task" if folder else "this request's task"
    if code in (EXIT_OK, EXIT_FOLLOW_UP_FAILED):  # its results are of that run: photos uploaded since are not in them
        only_new = f"--folder {shlex.quote(folder)} --only-new" if folder else "--only-new"
        return (f"[bold]note:[/] {escape(whose)} had ended {escape(str(st.get('stage')))} before: these are that "
                "run's results, and photos added or changed since are not in them; to run those, submit the same "
                f"request with {escape(only_new)} (--rerun runs every image again)")
    if code == EXIT_COMPLETED_WITH_ERRORS:  # --only-new runs the failed images again (activities.reuse reuses only
        # final entries: a retryable failure or an image never processed runs again) and keeps the rest, as the app's
        # failures hint says; "--only-new to run only new or changed images" sent people to --rerun, every image again
        only_new = f"--folder {shlex.quote(folder)} --only-new" if folder else "--only-new"
        return (f"[bold]next:[/] {escape(whose)} had ended {escape(str(st.get('stage')))} before; to run its failed "
                "images again (and any new or changed ones), keeping every other result, submit the same request "
                f"with {escape(only_new)} (--rerun runs every image again)")
    flags = f"--folder {shlex.quote(folder)} --rerun" if folder else "--rerun"  # to paste: quoted for a shell
    return (f"[bold]next:[/] {escape(whose)} had ended {escape(str(st.get('stage')))} before; to run it again, "
            f"submit the same request with {escape(flags)} (or --only-new to run only new or changed images)")


def _submit_folders(state: State, body: dict[str, Any], folders: Sequence[str], wait: bool, plain: bool,
                    as_json: bool, confirm: bool = False) -> None:
    """``submit --folder``: every folder's task is posted (all checked first, so a bad folder starts none), then,
    with ``wait``, followed one after the other (they run side by side on the pool). A folder whose task could not be
    posted or followed is reported with its folder after the others, whose ids are never lost to it."""
    answers, failures = _post_folders(state, folder_requests(body, folders), as_json, say_ended=not wait,
                                      again=_Again.of(body))
    if not wait:
        if as_json:
            _print_json([{**a, "folder": f} for f, a in answers] + failures)
        elif running := [a for _, a in answers if not found_ended(a)]:  # an ended task has nothing to follow
            out.print("follow them: " + "; ".join(f"trapbatch watch {a['id']}" for a in running))
        _exit_for_folders([], failures)
        return
    finals: list[dict[str, Any]] = []
    started: list[bool] = []  # beside finals: whether this submit started the folder's task or found it running
    for index, (folder, answer) in enumerate(answers):
        # the folder first, on the progress's stream: its progress lines (--plain, a log) came before it and read as
        # the folder before's; with --json they go to standard error, where nothing else said whose they were
        (err if as_json else out).print(f"[bold]folder {escape(folder)}[/]")
        try:
            st = watch_task(state.client, answer["id"], plain, to_stderr=as_json, confirm=confirm)
        except CliError as exc:
            if exc.exit_code == EXIT_INTERRUPTED:
                raise _interrupted_folders(answers[index:], finals, failures, exc) from None
            failures.append(_folder_failure(folder, exc, answer["id"]))
            continue
        finals.append({**st, "folder": folder})
        started.append(not found_ended(answer))
        if not as_json:
            _summary(st)
    if as_json:
        _print_json(finals + failures)
    for st, new in zip(finals, started):
        again = ended_before_line(st, _finish(st), new, str(st["folder"]))
        if again:
            err.print(again)
    _exit_for_folders([exit_code_for(st) for st in finals], failures)


def _interrupted_folders(unfinished: Sequence[tuple[str, dict[str, Any]]],
                         ended: Sequence[dict[str, Any]] = (), failures: Sequence[dict[str, Any]] = (),
                         watched: CliError | None = None) -> Interrupted:
    """Ctrl-C while ``submit --folder ... --wait`` followed one folder's task: every task it started is named, those
    not yet followed to their end (the one watched and those after it) as running, those followed to their end
    with their stage, and those whose following failed (``failures`` with an id: the app unreachable for a while)
    with why. Why: watch_task's message named the one watched alone, so the ids of the folders' tasks after it were
    printed nowhere, nor, with --json (whose list is printed at the end), those of the tasks that had ended; and the
    failures are said at the end too, which Ctrl-C never reaches. ``watched``: the watch's own stop (with the last
    stage it saw of the task it followed, for ``--json``)."""
    last = watched.tasks[0].get("stage") if isinstance(watched, Interrupted) and watched.tasks else None
    known = ([stop.ended(str(st.get("id")), str(st.get("folder")), st.get("stage"), exit_code_for(st)) for st in ended]
             + [stop.running(answer["id"], folder, last) if n == 0 else stop.posted(folder, answer, found_ended(answer))
                for n, (folder, answer) in enumerate(unfinished)]
             + [stop.failed(f) for f in failures])
    # the one watched runs; of those after it, a task its request found ended before does not (as --json says)
    going = [(folder, answer) for n, (folder, answer) in enumerate(unfinished) if n == 0 or not found_ended(answer)]
    over = [(folder, answer) for n, (folder, answer) in enumerate(unfinished) if n > 0 and found_ended(answer)]
    running = _keep_running(going)
    done = "".join(f"; task {st.get('id')} (folder {st.get('folder')}) ended {st.get('stage')}" for st in ended)
    done += "".join(f"; {line}" for line in _ended_before(over))
    lost = [f for f in failures if f.get("id")]  # posted, then not followed: its stage is unknown here
    done += "".join(f"; task {f['id']} (folder {f['folder']}) not followed: {f['error']}" for f in lost)
    if len(going) == 1 and not lost:
        task_id = going[0][1]["id"]
        hint = f"trapbatch watch {task_id} to follow it again, trapbatch cancel {task_id} to stop it"
    else:
        watches = "; ".join(f"trapbatch watch {task_id}"
                            for task_id in [answer["id"] for _, answer in going] + [f["id"] for f in lost])
        hint = f"{watches} to follow them again, trapbatch cancel <task id> to stop one"
    return Interrupted(f"stopped watching (Ctrl-C); {running}{done}", hint, known)


def _keep_running(posted: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """"task <id> (folder <f>) keeps running", or "tasks ... keep running" for several; "" for none."""
    tasks = ", ".join(f"{answer['id']} (folder {folder})" for folder, answer in posted)
    return "" if not posted else f"task {tasks} keeps running" if len(posted) == 1 else f"tasks {tasks} keep running"


def _ended_before(posted: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """A line for each task whose request found it ended before (``found_ended``), with its stage. Why: a Ctrl-C
    said such a task "keeps running" and to watch it, while ``--json``'s object, from the same answers, said
    ``"state": "ended"``."""
    return [f"task {answer['id']} (folder {folder}) had ended"
            + (f" {answer['stage']}" if answer.get("stage") else "") + " before" for folder, answer in posted]


class _Again(NamedTuple):
    """What made a ``--folder`` command's requests re-runs (``"rerun"``), and the words for their tasks. Why: the
    same command run again is then no longer found: the app refuses a re-run of a task still running (409,
    api/starters.py ``start_task``: ``TaskStillRunning``), which ``_post_folders`` takes as the refusal that stops
    the folders after it, and runs a task that has ended again (``_again_hint``)."""

    flag: str  # as the user gave it: "--rerun", "--only-new", "--fresh"
    noun: str = "task"
    follow: str = "trapbatch watch"  # the command, before an id, that follows one
    follows: str = "follows"  # what that command does
    runs: str = "runs"  # what the flag does to one that ended

    @staticmethod
    def of(body: dict[str, Any]) -> _Again | None:
        """``submit``'s: None when its request is no re-run. ``only_new`` implies ``rerun`` in the app
        (core.requests ``_only_new``)."""
        if body.get("only_new"):
            return _Again("--only-new")
        return _Again("--rerun") if body.get("rerun") else None  # a request file's "rerun" is sent as --rerun's


# estimate --folder ... --fresh's (``_Again``)
_FRESH = _Again("--fresh", "estimate", "trapbatch status", "shows", "counts")


def _again_hint(again: _Again, answers: Sequence[tuple[str, dict[str, Any]]], left: Sequence[str]) -> str:
    """The hint after a ``--folder`` command posted with a re-run flag stopped before it sent every folder: not the
    same command, which sends the flag again for the folders whose tasks it started (refused while they run, 409,
    stopping the folders after them; run a second time once ended), but one that follows those and one that sends
    the flag for the folders ``left`` alone, the one whose request was unanswered or refused last (``left``'s last):
    its task may run (the app took the request before Ctrl-C, or refused it as still running), and named last its
    refusal stops no other folder."""
    busy = f"an {again.noun} still listing" if again.noun == "estimate" else f"a {again.noun} still running"
    started = [a["id"] for _, a in answers if not found_ended(a)]
    follows = "; ".join(f"{again.follow} {task_id}" for task_id in started)
    flags = " ".join(f"--folder {shlex.quote(folder)}" for folder in left)
    return (f"not the same command: with {again.flag} the app refuses {busy} (409), which stops the folders after it "
            f"from being sent, and {again.runs} it again once it has ended; "
            + (f"{follows} {again.follows if len(started) == 1 else again.follows.rstrip('s')} the {again.noun}"
               f"{'s' if len(started) > 1 else ''} it started; " if started else "")
            + f"for the others, run the command with {again.flag} and only {flags}"
            + (f" (folder {left[-1]} last: its {again.noun} may already run, and then it alone is refused)"
               if len(left) > 1 else ""))


def _post_folders(state: State, requests: list[tuple[str, dict[str, Any]]], quiet: bool, say_ended: bool = False,
                  again: _Again | None = None) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """Post each folder's request: ``(folder, answer)`` of those the app took, and a failure (``_folder_failure``)
    for the first it refused and for each folder after it, which is not sent: what refuses one folder's request
    (the key, a limit of running tasks, an unreachable app) refuses the next, and the same command run again finds
    the tasks already started rather than running them twice, unless the requests are re-runs (``again``: the
    hints name what to run instead, ``_again_hint``). ``say_ended``: a task found ended is said with its stage and
    the app's hint (``submit --folder`` without --wait; with it, ``ended_before_line`` says it once)."""
    answers: list[tuple[str, dict[str, Any]]] = []
    failures: list[dict[str, Any]] = []
    for n, (folder, request) in enumerate(requests):
        try:
            answer = state.client.submit(request)
        except KeyboardInterrupt:  # the ids of the tasks posted so far (with --json, said nowhere yet), then stop
            known = ([stop.posted(f, a, found_ended(a)) for f, a in answers] + [stop.unanswered(folder)]
                     + [stop.not_sent(rest) for rest, _ in requests[n + 1:]])
            if not answers:
                raise Interrupted(stop.STOPPED, stop.STOPPED_HINT, known) from None
            said = [_keep_running([(f, a) for f, a in answers if not found_ended(a)])]
            said += _ended_before([(f, a) for f, a in answers if found_ended(a)])
            left = [rest for rest, _ in requests[n + 1:]] + [folder]
            raise Interrupted(f"stopped (Ctrl-C) before folder {folder}'s request was answered; "
                              + "; ".join(line for line in said if line),
                              _again_hint(again, answers, left) if again else
                              "run the same command again: the tasks already started are found again, not run twice",
                              known) from None
        except CliError as exc:
            failures.append(_folder_failure(folder, exc))
            left = [rest for rest, _ in requests[n + 1:]] + [folder]
            hint = (f"once that is fixed, {_again_hint(again, answers, left)}" if again and answers else
                    "run the same command again once that is fixed" if again else  # it started nothing
                    "run the same command again once that is fixed: the tasks already started are found again, not "
                    "run twice")
            failures += [_folder_failure(rest, CliError(
                f"not sent: the request for folder {folder} was refused before it", hint))
                for rest, _ in requests[n + 1:]]
            break
        answers.append((folder, answer))
        if not quiet:
            out.print(f"task {answer['id']} for folder {escape(folder)}: " +
                      ("started" if answer.get("started") else "already known (same request)"))
            # as a single submit without --wait says it (with --wait, ended_before_line says it after the summary)
            if say_ended and found_ended(answer) and answer.get("hint"):
                out.print(f"  its stage: {answer.get('stage')}; {in_cli_words(str(answer['hint']))}")
    return answers, failures


def _folder_failure(folder: str, exc: CliError, task_id: str = "") -> dict[str, Any]:
    """One folder's failure, as ``--json`` lists it beside the others' answers and ``_exit_for_folders`` says it."""
    return {"folder": folder, **({"id": task_id} if task_id else {}), "error": exc.message, "hint": hint_of(exc),
            "exit_code": exc.exit_code}


def _exit_for_folders(codes: list[int], failures: list[dict[str, Any]]) -> None:
    """Say each folder's failure with its folder (standard error), then exit with the worst code of all the
    folders (``SEVERITY``) when it is not 0."""
    for failure in failures:
        err.print(f"[bold red]folder {escape(str(failure['folder']))}:[/] {escape(str(failure['error']))}")
        err.print(f"  [bold]next:[/] {escape(str(failure['hint']))}")
    codes = codes + [int(f["exit_code"]) for f in failures]
    worst = max(codes, key=lambda code: SEVERITY.get(code, len(SEVERITY))) if codes else EXIT_OK
    if worst != EXIT_OK:
        sys.exit(worst)


# worst last: a failed or cancelled task outranks one completed with errors, which outranks one whose results are
# complete but a step after detection failed; a code not listed (4: the app refused or could not be reached) outranks
# them all
SEVERITY = {EXIT_OK: 0, EXIT_FOLLOW_UP_FAILED: 1, EXIT_COMPLETED_WITH_ERRORS: 2, EXIT_TASK_FAILED: 3}


@cli.command(short_help="Estimate images, shards, GPU-hours, wall time and cost; submits no pool work.")
@request_options
@click.option("--folder", "folders", multiple=True, help="an estimate per folder under the prefix, as submit "
              "--folder would run them (repeat the flag)")
@click.option("--json", "as_json", is_flag=True, help="print the estimate as JSON")
@click.option("--fresh", is_flag=True, help="count again: the same request's estimate is otherwise the one made "
              "before, from the listing of that time")
@pass_state
@json_on_interrupt
def estimate(state: State, /, request_file: Path | None, folders: tuple[str, ...], as_json: bool, fresh: bool,
             **fields: Any) -> None:
    """Enumerate the images a request would run over and estimate the run ("dry_run": true); no GPU starts.

    The figures use the app's TRAPBATCH_WORKER_IMAGES_PER_S, TRAPBATCH_POOL_NODES and
    TRAPBATCH_NODE_PRICE_PER_HOUR, else the list price of its TRAPBATCH_POOL_VM_SIZE (no price: no cost). Run the
    same request with `trapbatch submit` to start it. With --folder, one estimate per folder."""
    body = build_request(request_file, fields, dry_run=True)
    if fresh:  # an estimate that ended is run again (a new generation of the estimate's task)
        body["rerun"] = True
    if not folders:
        try:
            answers = [("", state.client.submit(body))]
        except KeyboardInterrupt:  # the app may have taken it: the same command run again finds it
            raise Interrupted(stop.STOPPED, stop.STOPPED_HINT, [stop.unanswered()]) from None
        except CliError as exc:
            raise _said_as_json(exc, as_json) from None
        failures: list[dict[str, Any]] = []
    else:  # a folder's failure is said with its folder after the others' estimates, which stand
        answers, failures = _post_folders(state, folder_requests(body, folders), quiet=True,
                                          again=_FRESH if body.get("rerun") else None)  # --fresh, or the file's
    estimates: list[tuple[str, dict[str, Any]]] = []
    estimated: list[tuple[str, str]] = []  # (folder, id) of each estimate waited for to its end, for a Ctrl-C
    earlier: list[str] = []
    seen: list[Any] = [None]  # the stage last seen of the estimate waited for, for a Ctrl-C's --json
    for index, (folder, answer) in enumerate(answers):
        seen[0] = None

        def fetch(task_id: str = answer["id"]) -> dict[str, Any]:
            st = state.client.status(task_id)
            seen[0] = st.get("stage")
            return st

        # the enumeration of millions of images takes minutes: a line per stage change (standard error) shows it lives
        try:
            st = wait_for(fetch, _reporter(answer["id"], True, to_stderr=True), poll_s=1.0)
        except KeyboardInterrupt:
            raise _interrupted_estimates(answers[index:], failures, estimated, seen[0], fresh) from None
        except CliError as exc:
            if exc.exit_code == EXIT_INTERRUPTED:
                raise
            if not folders:
                raise _said_as_json(exc, as_json, answer["id"]) from None
            failures.append(_folder_failure(folder, exc, answer["id"]))
            continue
        if exit_code_for(st) != EXIT_OK:
            ended = CliError(f"the estimate{' of folder ' + folder if folder else ''} ended {st.get('stage')}: "
                             f"{st.get('error', '')}", "check the container, prefix and folders (trapbatch status "
                             + answer["id"] + ")", exit_code=EXIT_TASK_FAILED)
            if not folders:
                raise _said_as_json(ended, as_json, answer["id"])
            failures.append(_folder_failure(folder, ended, answer["id"]))
            continue
        figures = dict(st.get("estimate") or {})
        if st.get("not_images"):  # files the enumeration found that the run would not take: say so before it runs
            figures["not_images"] = st["not_images"]
        if answer.get("started") is False and st.get("finished"):  # the same request's estimate, made before
            figures["estimated_at"] = st["finished"]
            earlier.append(f"{folder or 'the request'}: {st['finished']}")
        estimates.append((folder, figures))
        estimated.append((folder, answer["id"]))
    if as_json:
        _print_json([{**e, "folder": f} for f, e in estimates] + failures if folders else estimates[0][1])
        _exit_for_folders([], failures)
        return
    for folder, figures in estimates:
        if folder:
            out.print(f"[bold]folder {escape(folder)}[/]")  # a folder's name is no markup: "cam [north]" as it is
        _estimate_table(figures)
    if earlier:  # a week-old estimate of a container that has grown since would mislead without a word
        err.print(f"made before, from the listing of that time ({'; '.join(earlier)}): add --fresh to count again")
    if estimates:
        out.print("to run it: the same command with 'submit' instead of 'estimate' (a separate task: an estimate "
                  "never starts the real run)")
    _exit_for_folders([], failures)


def _said_as_json(exc: CliError, as_json: bool, task_id: str = "") -> CliError:
    """``exc``, first printed on standard output as ``{"id", "error", "hint", "exit_code"}`` with ``--json``: the
    object ``estimate --folder --json`` lists for a folder whose estimate failed, without its folder. Why: the single
    estimate's failure went to standard error alone, so a script reading ``--json`` got no JSON at all. Standard
    error still says it (``main``), as it does for a folder's."""
    if as_json and exc.exit_code != EXIT_INTERRUPTED:
        failure = _folder_failure("", exc, task_id)
        del failure["folder"]
        _print_json(failure)
    return exc


# why the hint after --fresh names the command without it (``_interrupted_estimates``)
_FRESH_REFUSED = "; with --fresh the app refuses it while it lists, and counts again once it has ended"


def _interrupted_estimates(unfinished: Sequence[tuple[str, dict[str, Any]]],
                           failures: Sequence[dict[str, Any]] = (),
                           estimated: Sequence[tuple[str, str]] = (), stage: Any = None,
                           fresh: bool = False) -> Interrupted:
    """Ctrl-C while ``estimate`` waited for a listing: the estimates not yet waited for keep listing in the app, by
    their task ids, and those whose waiting failed before (``failures`` with an id and not ended: the app unreachable
    for a while), with why. Why: the estimate's id is printed nowhere else (a failure is said at the end, which
    Ctrl-C never reaches), and the stop said "trapbatch status <task id>" after a listing of minutes; the same
    command run again finds the same estimates (not listed twice). ``estimated``: (folder, id) of those that ended
    estimated before, for ``--json`` (their figures are printed at the end, which Ctrl-C never reaches); ``stage``:
    the one last seen of the estimate waited for (``unfinished``' first), as ``submit --wait`` names its task's. Of
    those after it, one its request found made before (``found_ended``: without --fresh) lists no more: it is said
    ended, with its stage (it was said to keep listing, and ``"state": "running"``). ``fresh``: the estimates were
    posted with ``--fresh`` ("rerun"), which the same command sends again: the app refuses it while the estimate
    lists (409, api/starters.py ``start_task``) and counts again once it ended, so the hint names the command
    without ``--fresh``, which finds the same estimate."""
    over = [n > 0 and found_ended(a) for n, (_, a) in enumerate(unfinished)]
    known = ([stop.ended(task_id, folder, Stage.estimated, EXIT_OK) for folder, task_id in estimated]
             + [stop.failed(f) for f in failures]
             + [stop.posted(f, a, True) if over[n] else stop.running(a["id"], f, stage if n == 0 else None)
                for n, (f, a) in enumerate(unfinished)])
    going = [(f, a) for n, (f, a) in enumerate(unfinished) if not over[n]]
    ids = ", ".join(a["id"] + (f" (folder {f})" if f else "") for f, a in going)
    first = unfinished[0][1]["id"]
    lost = [f for f in failures if f.get("id") and f.get("exit_code") != EXIT_TASK_FAILED]  # ended: listing no more
    said = "".join(f"; estimate {a['id']} (folder {f}) had ended" + (f" {a['stage']}" if a.get("stage") else "")
                   + " before" for n, (f, a) in enumerate(unfinished) if over[n])
    said += "".join(f"; estimate {f['id']} (folder {f['folder']}) not waited for: {f['error']}" for f in lost)
    where = ("; ".join(f"trapbatch status {task_id}" for task_id in [first] + [f["id"] for f in lost])
             + (" show where they are" if lost else " shows where it is"))
    return Interrupted(f"stopped waiting (Ctrl-C); estimate{'s' if len(going) > 1 else ''} {ids} "
                       f"keep{'' if len(going) > 1 else 's'} listing in the app{said}",
                       f"{where}; the same estimate command{' without --fresh' if fresh else ''} run again "
                       f"waits for the same estimate (it is not listed twice{_FRESH_REFUSED if fresh else ''})",
                       known)


@cli.command(short_help="Show a task's stage, counts, progress and outcome.")
@task_id_argument
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@pass_state
def status(state: State, /, task_id: str, as_json: bool) -> None:
    """Show a task's status (GET /api/tasks/{id})."""
    st = state.client.status(task_id)
    if as_json:
        _print_json(st)
    else:
        _summary(st)


@cli.command(name="list", short_help="List tasks, newest first.")
@click.option("--limit", default=TASK_LIST_LIMIT, show_default=True, type=click.IntRange(min=1),
              help="the newest N tasks (the app's GET /api/tasks?limit=N)")
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@pass_state
def list_(state: State, /, limit: int, as_json: bool) -> None:
    """List the tasks the app knows (with callers: yours), newest first."""
    answer = state.client.list(limit)
    if as_json:
        _print_json(answer)
        return
    tasks = answer.get("tasks", [])
    # the id, stage, images and time are never cut or wrapped (an id is copied into the other commands); the name
    # wraps instead, in what room is left (no borders: at 80 columns, a row fits with a name of 15 characters); with
    # too little room for a name column (a 21-letter stage at 80 columns) it goes under its id
    created = [short_time(str(row.get("created") or "")) for row in tasks]
    # a running task the app judged stalled (``stalled``: no change for longer than its stage's waits explain) says
    # so beside its stage: it never ends by itself ('trapbatch status <id>' says what to do)
    # one whose liveness the app left unjudged (``note``: too quiet by its own update, its shard groups not read for
    # the list) is marked '?', with one line under the table saying how to find out
    tasks = [{**row, "stage": f"{row.get('stage')} STALLED"} if isinstance(row.get("stalled"), dict)
             else {**row, "stage": f"{row.get('stage')} ?"} if row.get("note") else row for row in tasks]
    widest = {key: max([len(str(row.get(key) or "")) for row in tasks] + [len(key)])
              for key in ("id", "stage", "images")}
    when_w = max([len(c) for c in created] + [7])
    fixed = sum(widest.values()) + when_w + 2 * 3  # the columns never cut, 2 between columns
    # whose task (``owner``: the verified caller who started it, where the app identifies callers): operators see
    # every caller's tasks, and the list's --json had it while the table did not. A column when it fits whole beside
    # the others, else under its id (folded to the id's width: a GUID widened the id column past 80)
    owner_w = max([len(str(row.get("owner") or "")) for row in tasks] + [0])
    owner_column = owner_w > 0 and out.width - fixed - 2 - max(owner_w, len("owner")) >= 0
    room = out.width - fixed - 2 - (2 + max(owner_w, len("owner")) if owner_column else 0)
    name_column = room >= LIST_NAME_MIN
    table = Table(Column("id" if name_column else "id, name", min_width=widest["id"], no_wrap=name_column,
                         overflow="fold"),
                  *([Column("name", overflow="fold")] if name_column else []),
                  Column("stage", no_wrap=True, min_width=widest["stage"]),
                  Column("images", justify="right", no_wrap=True, min_width=widest["images"]),
                  Column("created", no_wrap=True, min_width=when_w),
                  *([Column("owner", no_wrap=True)] if owner_column else []), box=None, pad_edge=False)
    for row, when in zip(tasks, created):
        name, owner = str(row.get("request_name") or ""), str(row.get("owner") or "")
        under = "" if owner_column or not owner else "\n" + _folded(f"owner {owner}", widest["id"])
        cells = [row["id"] + under, name] if name_column else [row["id"] + (f"\n{name}" if name else "") + under]
        table.add_row(*cells, str(row.get("stage")), str(row.get("images") or ""), when,
                      *([owner] if owner_column else []))
    out.print(table)
    unjudged = [str(row["id"]) for row in tasks if row.get("note") and not isinstance(row.get("stalled"), dict)]
    if unjudged:
        # not "quiet": a task detecting for hours has an own orchestration that quiet by design (it waits on its
        # shard groups), so all '?' says is that the app did not judge it for the list
        out.print(f"?: whether it still moves was not judged for the list (a task detecting moves by its shard groups, "
                  f"which the app did not read for it): 'trapbatch status {unjudged[0]}' says", highlight=False,
                  soft_wrap=True)
    out.print(f"{len(answer.get('tasks', []))} of {answer.get('total', 0)} tasks")


LIST_NAME_MIN = 12  # columns a name needs to read as one (fewer: it goes under its id)


def _folded(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` characters, cut anywhere (an owner's id has no spaces to wrap at)."""
    return "\n".join(text[i:i + width] for i in range(0, len(text), max(width, 1)))


def short_time(iso: str) -> str:
    """An ISO time as ``2026-12-05 09:21Z`` (UTC, to the minute): the app's ``created`` in full
    (``2026-12-05T09:21:37.123456+00:00``) wrapped onto 3 lines of ``trapbatch list`` at 80 columns. Not a time:
    as it is."""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if when.tzinfo is None:  # the app's times are UTC
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%MZ")


@cli.command(short_help="Follow a running task with a progress bar until it ends.")
@task_id_argument
@click.option("--plain", is_flag=True, help="one line per change instead of a progress bar")
@pass_state
def watch(state: State, /, task_id: str, plain: bool) -> None:
    """Follow a task until it ends; exits like `submit --wait` (0 only if it completed and every step after
    detection succeeded; 5 when it completed but a step after detection failed)."""
    st = watch_task(state.client, task_id, plain)
    _summary(st)
    sys.exit(_finish(st))


@cli.command(short_help="Let a task waiting for confirmation go to the pool.")
@task_id_argument
@click.option("--wait/--no-wait", default=False, help="then follow the task until it ends")
@click.option("--plain", is_flag=True, help="one line per change instead of a progress bar")
@pass_state
def confirm(state: State, /, task_id: str, wait: bool, plain: bool) -> None:
    """Say yes to a task in stage 'awaiting_confirmation' (more images than the app's TRAPBATCH_CONFIRM_ABOVE_IMAGES;
    'trapbatch status' shows its estimate). Without a yes it ends 'expired' after TRAPBATCH_CONFIRM_TIMEOUT_S."""
    answer = state.client.confirm(task_id)
    out.print(f"confirmed {task_id}: {in_cli_words(answer.get('hint', ''))}")
    if wait:
        st = watch_task(state.client, task_id, plain, confirmed_already=True)
        _summary(st)
        sys.exit(_finish(st))


@cli.command(short_help="Cancel a running task (its pool work stops at the next poll).")
@task_id_argument
@pass_state
def cancel(state: State, /, task_id: str) -> None:
    """Ask a running task to stop; its stage becomes 'cancelled' after the next poll."""
    answer = state.client.cancel(task_id)
    out.print(f"cancel requested for {task_id}: {in_cli_words(answer.get('hint', ''))}")


@cli.command(short_help="End a task's run now, a stalled one too; submit the same request again to resume it.")
@task_id_argument
@click.option("--reason", default="", help="why, kept with the terminated run (at most "
              f"{MAX_TERMINATE_REASON_CHARS} characters; never put a secret in it)")
@click.option("--target", type=click.Choice(TERMINATE_TARGETS), default="task", show_default=True,
              help="what to end: the task's run, or its repeat removal or repeat search ('trapbatch repeats' shows "
                   "them, STALLED where one no longer moves), its preview re-render ('trapbatch previews --wait' says "
                   "STALLED) or its results zip build")
@pass_state
def terminate(state: State, /, task_id: str, reason: str, target: str) -> None:
    """End a running task's run at once, whatever it is doing (the way out of one 'trapbatch status' shows STALLED).
    Its pool work runs on until the same request is submitted again, which ends that work and resumes the task from
    the results already written. For a task awaiting confirmation, 'trapbatch cancel' is the better tool. With
    --target removal, search, previews or zip: the task's repeat removal or search, preview re-render or results zip
    build instead; send it again afterwards ('trapbatch results' builds the zip again)."""
    try:  # checked as the app checks it, before anything is sent (a bad argument: exit 2, as previews --threshold)
        parse_terminate({"reason": reason})
    except TrapbatchError as exc:
        raise CliError(f"--reason: {exc.message}", exc.hint, exit_code=EXIT_USAGE) from None
    answer = state.client.terminate(task_id, reason, target)
    what = task_id if target == "task" else f"the {AFTER_TASK_RUNS[target]} of {task_id}"
    out.print(f"terminated {what}: {in_cli_words(answer.get('hint', ''))}")
    line = terminated_drops_line(answer.get("drop_answers"))
    if line:
        out.print(escape(line))


def terminated_drops_line(answers: Any) -> str:
    """What the terminate's ``drop_answers`` says (the done files the app wrote for the run it ended: api
    terminated_answers), "" where it has none: a run started over HTTP that no dropped request joined. Written
    false with files named: those the answer's deadline left time for."""
    if not isinstance(answers, dict):
        return ""
    files = [str(answers["done_file"])] if answers.get("done_file") else []
    joined = int(answers.get("joined") or 0)
    if joined:
        files.append(f"{joined} beside the dropped requests that joined it")
    if answers.get("written") is False:  # none, or those before the answer's deadline (then listed)
        some = (f"done files written in part ({', '.join(files)}): they say {answers.get('stage')}; the others NOT"
                if files else "done files NOT written")
        return f"{some} ({answers.get('reason')}); next: {in_cli_words(str(answers.get('hint') or ''))}"
    return f"done files written ({', '.join(files)}): they say {answers.get('stage')}" if files else ""


# How many DELETE requests ``trapbatch delete`` sends while the app answers "not done yet" (202): each deletes for up
# to api.task_delete.DELETE_BUDGET_S (150 s), so this covers some 25 minutes of deleting, far beyond a 10M-image task
DELETE_REQUESTS = 10


@cli.command(short_help="Delete a task and everything trapbatch stored for it (results, exports, pages, state).")
@task_id_argument
@click.option("--yes", "sure", is_flag=True, help="do not ask before deleting")
@pass_state
def delete(state: State, /, task_id: str, sure: bool) -> None:
    """Delete a finished task: its results of every run, exports, zips, preview pages, working state and logs, and
    its records in the task hub. Its images and the request files you dropped stay. Refused while the task or a run
    after it (repeat removal or search, preview re-render, zip build) still runs: the message says what to end first.
    Afterwards 'trapbatch status' knows no such task, and submitting the same request starts a fresh task."""
    if not sure and not _confirm_delete(task_id):
        raise CliError("nothing deleted", f"trapbatch delete {task_id} --yes deletes without asking",
                       exit_code=EXIT_USAGE)
    reached = False  # whether a request of this command reached the app: a 202, or a try whose answer was lost
    for _ in range(DELETE_REQUESTS):
        retried: set[int] = set()
        try:
            answer = state.client.delete_task(task_id, retried)
        except CliError as exc:
            # a 404 after that: the deletion was finished by a request whose answer never came (a timeout or a
            # dropped connection that the client tried again), not a task that was never there
            if (reached or retried) and " 404: " in exc.message:
                out.print(f"deleted {task_id}: an earlier request of this command finished it (the app knows no such "
                          "task now)")
                return
            raise
        reached = True
        blobs = answer.get("blobs") or {}
        if answer.get("deleted"):
            records = answer.get("instances")
            out.print(f"deleted {task_id}: {int(blobs.get('state') or 0) + int(blobs.get('web') or 0)} files"
                      + ("" if records is None else f", {int(records)} task hub records")
                      + f"; {in_cli_words(answer.get('hint', ''))}")
            return
        err.print(f"deleting {task_id}: {int(blobs.get('state') or 0) + int(blobs.get('web') or 0)} files deleted "
                  "so far, going on")
    raise CliError(f"task {task_id} is not deleted yet after {DELETE_REQUESTS} requests",
                   f"what was deleted stays deleted: run trapbatch delete {task_id} --yes again to go on",
                   exit_code=EXIT_API)


def _confirm_delete(task_id: str) -> bool:
    """The user's answer to delete's question. Why not click.confirm alone: it answers an ended standard input (a
    script, cron, CI: no terminal) as it answers Ctrl-C, with Abort (click 8.5 ``termui.confirm``: ``except
    (KeyboardInterrupt, EOFError): raise Abort() from None``), which ``main`` said as "stopped (Ctrl-C): anything the
    app had already accepted keeps running there" (exit 130): no Ctrl-C had been pressed, nothing was sent, and
    ``--yes``, what such a caller needs, was not named. An ended input is "nothing deleted" with that hint (exit 2);
    a real Ctrl-C stays the CLI's stop."""
    try:
        return click.confirm(f"delete task {task_id} and all its results, exports and preview pages?", err=True)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, EOFError):  # ``from None`` hides it from the traceback, not from here
            err.print("")  # the question's line had no answer to end it
            raise CliError("nothing deleted: no answer to the question (standard input ended, as in a script)",
                           f"trapbatch delete {task_id} --yes deletes without asking", exit_code=EXIT_USAGE) from None
        raise


@cli.command(short_help="Download results JSON, CSV and exports (and --previews) into a folder.")
@task_id_argument
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder to write into (default: ./<task id>)")
@click.option("--previews", is_flag=True, help="also download the preview site into <folder>/previews")
@click.option("--storage-connection", default=None,
              help="storage connection string (or TRAPBATCH_STORAGE_CONNECTION); default: your Azure sign-in")
@pass_state
def results(state: State, /, task_id: str, out_dir: Path | None, previews: bool, storage_connection: str | None) -> None:
    """Download a finished task's files into a folder, and say where its preview site is."""
    from cli.download import blob_generation, blob_service, download, earlier_files, earlier_own_files

    answer = state.client.results(task_id)
    st = state.client.status(task_id)
    config = cfg.resolve({**state.flags, "storage_connection": storage_connection})
    service = blob_service(config.storage_connection, str((answer.get("results") or {}).get("url") or ""))
    folder = out_dir or Path(task_id)
    try:
        files = download(service, answer, st, folder, previews, say=err.print)  # a resume's check: stderr
    except KeyboardInterrupt:  # only the download stopped: nothing of the app's was running for it
        raise CliError("stopped downloading (Ctrl-C)", "run the same command again: the files already written are "
                       "not fetched again, and a large file resumes where it stopped", EXIT_INTERRUPTED) from None
    pages = [f for f in files if previews and "previews" in f.path.relative_to(folder).parts]
    for path, written in files:
        if not previews or "previews" not in path.relative_to(folder).parts:
            # "unchanged": the copy already there is the blob's (its ETag in .trapbatch-downloads.json): not fetched
            out.print(f"{'wrote' if written else 'unchanged'} {path}")
    page = answer.get("previews") or {}
    if previews and page.get("folder"):
        fresh = sum(f.written for f in pages)
        out.print(f"{'wrote' if fresh else 'unchanged'} {folder / 'previews'}/ "
                  + (f"({fresh} of {len(pages)} files; " if fresh and fresh < len(pages) else "(")
                  + f"open {folder / 'previews' / 'index.html'})")
    elif previews:
        # the task's own answer: a field its prose names is the flag (as `repeats --open` says the same words)
        err.print("no preview pages downloaded: "
                  + task_hint_in_cli_words(str(page.get("error") or "the app named none"), task_id))
    if isinstance(st.get("served"), dict):  # a re-run that has no results (yet): these files are its previous run's
        served = st["served"].get("generation") or "the first run"
        if is_final(st):  # it ended failed, cancelled, terminated or expired: waiting brings no new results
            err.print(f"task {task_id}'s last re-run ended {st.get('stage')} without results: these are the results "
                      f"of the run before it ({served}); trapbatch status {task_id} says why it ended")
        else:
            err.print(f"task {task_id} is running again (stage: {st.get('stage')}): these are its previous run's "
                      f"results ({served}); run this command again once trapbatch watch {task_id} says it "
                      "completed, for the new run's")
    # --previews of a task whose pages are no longer published (deleted, expired): the pages an earlier download of
    # this task wrote are its own, said so; they were named as "not this task's", to be kept apart in another folder
    unpublished = previews and not page.get("folder")
    left = earlier_files(folder, files, None if previews and not unpublished else task_id)
    stale = sorted(set(earlier_files(folder, files)) - set(left)) if unpublished else []
    if stale:
        err.print(f"{len(stale)} file{'s' if len(stale) != 1 else ''} under {folder / 'previews'} are task "
                  f"{task_id}'s preview pages from an earlier download, no longer published: delete that folder "
                  "if the photos in it must not be passed on either")
    # the task's own files of another generation (a re-run replaced it) are said to be: not as another task's
    served = blob_generation("/" + str((answer.get("results") or {}).get("blob") or ""), task_id) or ""
    own = earlier_own_files(folder, left, task_id)
    for generation, paths in sorted(own.items()):
        run = f"re-run {generation}" if generation else "first run"
        whose = (f"from its {run}, which a re-run replaced (these results are its "
                 f"{f're-run {served}' if served else 'first run'}'s)" if generation != served else
                 "no longer among its results")
        err.print(f"{_files(paths)} in {folder} from an earlier download {'are' if len(paths) != 1 else 'is'} task "
                  f"{task_id}'s own, {whose}: {_some(paths)}; delete {'them' if len(paths) != 1 else 'it'} or "
                  "choose an empty --out folder to keep them apart")
    left = [path for path in left if not any(path in paths for paths in own.values())]
    if left:  # standard error: the lines above stay the list of this task's files
        err.print(f"{_files(left)} in {folder} from an earlier download, not this task's (now): {_some(left)}; "
                  "choose an empty --out folder to keep them apart")
    where = page.get("public_url") or page.get("local_url")
    if where:
        # a task posted with previews_expire_days: the address handed on stops working then (the results stay)
        expiry = page.get("expiry")
        expires = expiry.get("expires") if isinstance(expiry, dict) and expiry.get("stage") == "waiting" else None
        out.print(f"preview site: {where}" + (f" (taken off the website at {expires}; the results stay)"
                                                if expires else ""))


def _files(paths: list[str]) -> str:
    return f"{len(paths)} file{'s' if len(paths) != 1 else ''}"


def _some(paths: list[str]) -> str:
    """The first five of ``paths``, for a line that names the files it counts."""
    return ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")


@cli.command(short_help="Zooniverse manifests with their photos beside them, each under Zooniverse's size limit.")
@task_id_argument
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder to write into (default: ./<task id>, as `results` writes it)")
@click.option("--variant", type=click.Choice(ZU_VARIANTS), default=None,
              help="which results' manifests (default: repeats-removed when the task has it, else original)")
@click.option("--batch", "batches", multiple=True, type=click.IntRange(min=1),
              help="only manifest batch-NNN.csv (repeat the flag); default: every batch")
@click.option("--max-bytes", type=click.IntRange(min=1000), default=None,
              help="largest photo file written (default 1,000,000: under the Panoptes CLI's 1 MiB and the Project "
                   "Builder's 1,000 KB); larger photos are scaled down")
@click.option("--max-side", type=click.IntRange(min=64), default=None,
              help="also scale photos down to at most this many pixels on their longer side (the manual workflow "
                   "used 1440: faster uploads); default: only what the byte limit needs")
@click.option("--keep-metadata", is_flag=True,
              help="keep the photos' EXIF, XMP, IPTC and comments (by default removed: they may hold the camera's "
                   "position); a photo scaled down or written again keeps only its EXIF, and a JPEG its XMP and "
                   "comment: not its IPTC")
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True,
              help="photos fetched at once")
@click.option("--storage-connection", default=None,
              help="storage connection string (or TRAPBATCH_STORAGE_CONNECTION); default: your Azure sign-in")
@click.option("--source-connection", default=None, envvar="TRAPBATCH_SOURCE_CONNECTION",
              help="connection string of the images' account when it is not the app's own (a SAS one will do; or "
                   "TRAPBATCH_SOURCE_CONNECTION); default: your Azure sign-in")
@pass_state
def zooniverse(state: State, /, task_id: str, out_dir: Path | None, variant: str | None, batches: tuple[int, ...],
               max_bytes: int | None, max_side: int | None, keep_metadata: bool, workers: int,
               storage_connection: str | None, source_connection: str | None) -> None:
    """Download a finished task's Zooniverse manifests and every photo they name, beside them at their blob names,
    each made fit for Zooniverse (the manual workflow's "compress images" step), and print the Panoptes CLI
    command that uploads each manifest. Running it again resumes."""
    from cli import zooniverse_upload as zu
    from cli.download import blob_service

    answer = state.client.results(task_id)
    st = state.client.status(task_id)
    variant, files = zu.manifests(answer, st, variant, batches)
    container, account_url = zu.source_location(answer)
    config = cfg.resolve({**state.flags, "storage_connection": storage_connection})
    service = blob_service(config.storage_connection, str((answer.get("results") or {}).get("url") or ""))
    source = zu.source_service(source_connection or "", service, account_url)
    folder = out_dir or Path(task_id)
    options = zu.PhotoOptions(max_bytes or zu.MAX_BYTES, max_side, keep_metadata)
    err.print(f"{len(files)} {variant} manifest(s); photos from container {container!r}, each at most "
              f"{options.max_bytes:,} bytes" + (f" and {max_side} pixels" if max_side else ""))
    try:
        reports = _with_photo_progress(lambda on_photo, on_manifest: zu.prepare(
            service, source, container, files, folder, options, workers, on_photo, on_manifest))
    except KeyboardInterrupt:
        raise CliError("stopped (Ctrl-C)", "run the same command again: the photos already written are kept and "
                       "not fetched again", EXIT_INTERRUPTED) from None
    problems = 0
    for report in reports:
        out.print(f"{report.manifest}: {report.photos} photos ({report.copied} copied, {report.shrunk} shrunk, "
                  f"{report.reencoded} re-encoded, {report.kept} already there)")
        if report.problems:
            problems += len(report.problems)
            err.print(f"  {len(report.problems)} not prepared, listed in {report.problems_file} (first: "
                      f"{report.problems[0][0]}: {report.problems[0][1]})")
        out.print(f"  upload: {zu.upload_command(report.manifest, report.columns, bool(report.problems))}")
    if problems:
        raise CliError(f"{problems} photo(s) could not be prepared",
                       "see the .problems.csv beside each manifest named above; run the same command again once "
                       "they are fixed, or upload as it is with the command shown (its -M, --allow-missing, leaves a "
                       "missing photo out of its subject)", EXIT_COMPLETED_WITH_ERRORS)


def _with_photo_progress(run: Callable[[Callable[[], None], Callable[[Path, int], None]], Any]) -> Any:
    """``run(on_photo, on_manifest)`` with a progress bar per manifest on a terminal (standard error), else a line
    per manifest."""
    if not err.is_terminal:
        return run(lambda: None, lambda path, photos: err.print(f"{path}: {photos} photos"))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as bar:
        current: list[Any] = []

        def on_manifest(path: Path, photos: int) -> None:
            current[:] = [bar.add_task(path.name, total=photos)]

        return run(lambda: bar.advance(current[0]), on_manifest)


@cli.command(short_help="Re-render the preview page, its counts and a CSV at another threshold; --delete.")
@task_id_argument
@click.option("--threshold", type=float, default=None, help="confidence from which a detection counts (0.005-1)")
@click.option("--delete", is_flag=True, help="take the preview pages off the public website instead (the results "
              "stay)")
@click.option("--wait", is_flag=True, help="wait until the re-render is done and print its counts")
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@pass_state
@json_on_interrupt
def previews(state: State, /, task_id: str, threshold: float | None, delete: bool, wait: bool, as_json: bool) -> None:
    """Re-render a finished task's preview page and its counts at THRESHOLD, and write a CSV at it beside the task's
    own (detections.threshold-<t>.csv; `trapbatch results` downloads it). The results file is not changed.
    With --delete, take the task's preview pages off the public static website (its address stops working)."""
    if delete == (threshold is not None):
        raise CliError("give either --threshold T (re-render) or --delete (take the pages offline)",
                       f"e.g. trapbatch previews {task_id} --threshold 0.35", exit_code=EXIT_USAGE)
    if threshold is None:  # --delete
        gone = state.client.delete_previews(task_id)
        if as_json:
            _print_json(gone)
        else:
            out.print(f"deleted {gone.get('deleted')} preview files of {task_id}: "
                      f"{in_cli_words(gone.get('hint', ''))}")
        return
    try:
        parse_rerender({"threshold": threshold})
    except TrapbatchError as exc:
        raise CliError(exc.message, exc.hint, exit_code=2, app_hint=True) from None
    running = _running_rerender(state.client, task_id) if wait else {}
    if running.get("threshold") == threshold:  # the one the line below told to wait for: followed, not sent again
        err.print(f"a re-render of {task_id} at {threshold} is running: waiting for it")
        answer = running
    else:
        try:
            answer = state.client.rerender_previews(task_id, threshold)
        except KeyboardInterrupt:  # the app may have started it: the same command with --wait follows it
            raise Interrupted(stop.STOPPED, f"trapbatch previews {task_id} --threshold {threshold} --wait follows "
                              f"it if it started and still runs (not sent twice); {_rerender_ended(task_id)}",
                              [stop.unanswered(id=task_id, threshold=threshold)]) from None
    if wait:
        try:
            answer = _wait_rerender(state.client, task_id)
        except KeyboardInterrupt:  # only the waiting stopped: the re-render goes on in the app
            raise Interrupted(f"stopped waiting (Ctrl-C); the re-render of {task_id} at {threshold} keeps running",
                              f"trapbatch previews {task_id} --threshold {threshold} --wait follows it again while it "
                              f"runs (not sent twice); {_rerender_ended(task_id)}",
                              [stop.running(task_id, threshold=threshold)]) from None
        if answer.get("runtime_status") != "Completed":
            raise CliError(f"the re-render ended {answer.get('runtime_status')}: {answer.get('error', '')}",
                           "see the app's log; the results and the earlier page are unchanged",
                           EXIT_TASK_FAILED)  # the app answered: what it ran failed (4 says it could not be reached)
    if as_json:
        _print_json(answer)
        return
    if wait:
        for variant, page in (answer.get("previews") or {}).items():
            counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (page.get("counts") or {}).items())
            out.print(f"{variant} at {threshold}: {counts}")
        for variant, name in (answer.get("csv") or {}).items():
            out.print(f"{variant} CSV: {name}")
    else:
        out.print(f"re-rendering {task_id} at {threshold}; see: trapbatch previews {task_id} --threshold "
                  f"{threshold} --wait, or trapbatch results {task_id}")


RERENDER_POLL_S = 2.0
RERENDER_GONE_POLLS = 30  # a minute of answers without the re-render: it is not coming back


def _wait_rerender(client: ApiClient, task_id: str) -> dict[str, Any]:
    """The task's re-render once it ended (Completed, Failed, Terminated). Why bounded: the results answer names the
    re-render only while its instance exists; one purged (or never started) left ``--wait`` polling for ever, and so
    did one the app judges stalled (``previews.rerender.stalled``: it may never end), which stops with its hint."""
    gone = 0
    while True:
        rerender = (client.results(task_id).get("previews") or {}).get("rerender") or {}
        if rerender.get("runtime_status") in ("Completed", "Failed", "Terminated"):
            return rerender
        stalled = rerender.get("stalled")
        if isinstance(stalled, dict):  # it may never end by itself: waiting on would be for ever
            raise CliError(f"the re-render of {task_id} is STALLED: no change since "
                           f"{printable(str(stalled.get('since', '?')))}",
                           task_hint_in_cli_words(str(stalled.get("hint") or ""), task_id), EXIT_TASK_FAILED)
        gone = gone + 1 if not rerender else 0
        if gone >= RERENDER_GONE_POLLS:
            raise CliError(f"the results of {task_id} have named no re-render for "
                           f"{RERENDER_GONE_POLLS * RERENDER_POLL_S:.0f} s: it was purged or never started",
                           f"see trapbatch results {task_id}; send the re-render again with trapbatch previews "
                           f"{task_id} --threshold T --wait", EXIT_TASK_FAILED)
        time.sleep(RERENDER_POLL_S)


def _rerender_ended(task_id: str) -> str:
    """What a Ctrl-C's hint says of a re-render that has ended by the time the command runs again. Why: the hint said
    "(it is not sent twice)", true only while it runs (``_running_rerender``): an ended one's threshold is no longer
    followed, the command posts it again (the app starts another once none runs: api/after_task.py
    ``post_previews``)."""
    return f"once it has ended, that command renders it again (trapbatch results {task_id} fetches its CSV)"


def _running_rerender(client: ApiClient, task_id: str) -> dict[str, Any]:
    """The task's re-render while it runs (``previews.rerender`` of its results), else {}. Why: ``previews
    --threshold T`` without ``--wait`` says to follow it with ``previews --threshold T --wait``, whose POST the app
    refuses (409) while that same re-render runs: the command shown would fail for as long as it is worth running."""
    rerender = (client.results(task_id).get("previews") or {}).get("rerender") or {}
    return rerender if rerender.get("runtime_status") in ("Pending", "Running") else {}


# --search options: MegaDetector's RDE phase-1 options, by the names POST /api/tasks/{id}/repeats/search takes
SEARCH_OPTIONS = ("occurrence_threshold", "iou_threshold", "confidence_min", "confidence_max",
                  "min_suspicious_detection_size", "max_suspicious_detection_size", "max_folder_detections")
# A request field -> the flag that sets it, for the app's hints (in_cli_words): the request's (REQUEST_FLAGS), a
# re-render's threshold, a removal's list (its "search" is repeats' --list), a search's options, and the switches (no
# value) that set a field to true
SWITCHES = frozenset({"rerun", "only_new"})
FIELD_FLAGS = {**{dest: flag for flag, dest, _, _ in REQUEST_FLAGS}, "threshold": "--threshold", "search": "--list",
               "keep": "--keep", "remove": "--remove",  # a repeat choice's (POST /api/tasks/<id>/repeats)
               "target": "--target",  # what a terminate ends (POST /api/tasks/<id>/terminate {"target": "removal"})
               **{name: "--" + name.replace("_", "-") for name in SEARCH_OPTIONS},
               **{name: "--" + name.replace("_", "-") for name in SWITCHES}}


@cli.command(short_help="List repeated detections; --keep/--remove sends your choice; --search finds them again.")
@task_id_argument
@click.option("--keep", default=None, help="comma-separated places that are real animals; all others are removed")
@click.option("--remove", default=None, help="comma-separated places to remove, or 'all'")
@click.option("--list", "list_id", default=None,
              help="with --keep/--remove: the id of the list the places come from (the listing shows it); needed "
                   "once a search ran again")
@click.option("--search", "search_again", is_flag=True,
              help="search again with the options below (the others: MegaDetector's defaults); the new list "
                   "replaces the current one")
@click.option("--occurrence-threshold", type=int, default=None, help="--search: images a box must recur in (20)")
@click.option("--iou-threshold", type=float, default=None, help="--search: IoU from which boxes are one place (0.9)")
@click.option("--confidence-min", type=float, default=None, help="--search: lowest confidence taking part (0.1)")
@click.option("--confidence-max", type=float, default=None, help="--search: highest confidence taking part (1.0)")
@click.option("--min-suspicious-detection-size", type=float, default=None,
              help="--search: smallest box, as a fraction of the image (0)")
@click.option("--max-suspicious-detection-size", type=float, default=None,
              help="--search: largest box, as a fraction of the image (0.2)")
@click.option("--max-folder-detections", type=int, default=None,
              help="--search: a folder with more eligible detections is not searched but named (the app's cap, "
                   "800000 unless set; at most 3000000: a folder's search time grows with their square)")
@click.option("--open", "open_page", is_flag=True, help="open the preview page in a browser")
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@pass_state
def repeats(state: State, /, task_id: str, keep: str | None, remove: str | None, list_id: str | None,
            search_again: bool, open_page: bool, as_json: bool, **search_options: Any) -> None:
    """Repeated detections (a box at the same place in many images: usually a rock or a branch).

    Without --keep/--remove/--search: list the places. With --keep or --remove: write results without those
    detections (the original results are never changed). With --search: find the places again with other options
    (MegaDetector's phase 1); the new list replaces the current one and the preview page. Then run this again to see
    the removal's or the search's state."""
    given = {k: v for k, v in search_options.items() if v is not None}
    if given and not search_again:
        raise CliError(f"--{next(iter(given)).replace('_', '-')} is an option of --search",
                       f"add --search: trapbatch repeats {task_id} --search --occurrence-threshold 10", 2)
    if search_again and (keep is not None or remove is not None):
        raise CliError("give --search or a choice (--keep/--remove), not both",
                       "search first, look at the new list, then choose from it", 2)
    if list_id and keep is None and remove is None:  # the list a choice is made from: nothing else reads it
        raise CliError("--list goes with --keep or --remove (the list the places are chosen from)",
                       f"trapbatch repeats {task_id} shows the current list and its places; choose with "
                       f"trapbatch repeats {task_id} --keep r00002 --list {list_id}", 2)
    if open_page and (search_again or keep is not None or remove is not None):  # only the listing reads --open
        raise CliError("--open goes with the listing, not with --keep, --remove or --search (nothing would open)",
                       f"send that first, then see the page with trapbatch repeats {task_id} --open", 2)
    if keep is not None and remove is not None:
        raise CliError("give --keep or --remove, not both",
                       "--keep: places that are real animals (the rest goes); --remove: the places to drop", 2)
    if search_again:
        started = state.client.search_repeats(task_id, given)
        if as_json:
            _print_json(started)
        else:
            out.print(f"searching again as list {started.get('search')} with "
                      + _as_search_flags(started.get("options")), markup=False, highlight=False)
            out.print(f"see its state and the new list: trapbatch repeats {task_id}")
        return
    if keep is not None or remove is not None:
        choice: dict[str, Any] = ({"keep": _ids(keep or "")} if keep is not None else
                                  {"remove": "all" if remove == "all" else _ids(remove or "")})
        if list_id:
            choice["search"] = list_id
        answer = state.client.choose_repeats(task_id, choice)
        if as_json:
            _print_json(answer)
        else:
            out.print(f"removing {len(answer.get('removing', []))} place(s): {', '.join(answer.get('removing', []))}")
            out.print(f"see its state: trapbatch repeats {task_id}")
        return
    answer = state.client.repeats(task_id)
    if as_json:
        _print_json(answer)
    else:
        # the place id is copied into --keep/--remove and the folder tells two places apart (two days of one
        # camera): neither is cut with '…' at 80 columns (a pipe, a usual terminal); a long folder wraps instead
        table = Table(Column("place", no_wrap=True), Column("folder", overflow="fold"), "category", "images",
                      "confidence", "box (x, y, w, h)")
        for loc in answer.get("locations", []):
            box = ", ".join(f"{v:.3f}" for v in loc.get("bbox", []))
            table.add_row(loc["id"], str(loc.get("folder")), category_name(loc.get("category")),
                          str(loc.get("count")), f"{loc.get('conf_min')}-{loc.get('conf_max')}", box)
        out.print(table)
        listed = answer.get("search") or "merge"
        options = answer.get("search_options") or {}
        out.print(f"list {listed}: " + _as_search_flags(options), markup=False, highlight=False)
        _print_skipped(answer.get("skipped_folders"), task_id)
        searching = answer.get("searching")
        if searching and (searching.get("search") != listed or isinstance(searching.get("stalled"), dict)):
            out.print(f"search {searching.get('search')}: {searching.get('stage') or searching.get('runtime_status')}"
                      + (f" ({searching['error']})" if searching.get("error") else ""))
            if searching.get("error") or searching.get("stage") == Stage.terminated:  # the list above is the one
                # before it (a terminated search that had written its list shows that list above, and no line here)
                out.print(f"the list above stands; run the search again: trapbatch repeats {task_id} --search ...")
            _print_stalled(task_id, searching)
        removal = answer.get("removal")
        if removal:
            _print_removal(task_id, removal)
        elif answer.get("locations"):
            suffix = "" if listed == "merge" else f" --list {listed}"
            out.print(f"keep the real animals: trapbatch repeats {task_id} --keep r00002,...{suffix} "
                      "(or --remove ...)")
        else:
            out.print("no repeated detections in this list: nothing to remove")
    if open_page:
        page = (state.client.results(task_id).get("previews") or {})
        url = page.get("public_url") or page.get("local_url")
        if not url:
            _say_no_page(task_id, page)
            return
        # printed too: where no browser opens (over ssh, a server) xdg-open's "no method available" was all it said;
        # click.launch does not wait for the opener, so its failure cannot be told here; with --json on standard
        # error: standard output holds the JSON alone
        (err if as_json else out).print(f"preview page: {url}", markup=False)
        click.launch(url)


def _as_search_flags(options: Any) -> str:
    """A list's search options (the API's ``search_options``, a search's ``options``) as the flags of ``repeats
    --search`` that make that list: ``--occurrence-threshold 2 --iou-threshold 0.9 ...``. Why: the listing said
    "occurrence_threshold 2, iou_threshold 0.9", the API's names, which the CLI's own hints already give as flags
    (``named_as_flags``); to search again with one changed, the flags are what a user types. An option the CLI has
    no flag for (an app newer than it) is shown by the app's name."""
    if not isinstance(options, dict):
        return ""
    return " ".join(f"{FIELD_FLAGS.get(k, k) if k in SEARCH_OPTIONS else k} {v}" for k, v in options.items())


def _say_no_page(task_id: str, page: dict[str, Any]) -> None:
    """``repeats --open`` for a task without preview pages (deleted, expired, or never published): why and what to
    do, on standard error, nothing opened. Why exit 0 and not an error: it exited 4, "the app could not be reached,
    or refused", though the app had answered and the listing was shown; a task without pages is the task's state,
    which is reported, as ``results --previews`` and ``status`` report it. Nothing here makes pages again: a
    re-render, a repeat search or a removal renders only while the pages are published
    (``activities.previews.run_previews``' ``only_if_published``)."""
    why = task_hint_in_cli_words(str(page.get("error") or ""), task_id) or "the app named no preview page"
    err.print(f"no preview page to open: {escape(printable(why))}")
    hint = task_hint_in_cli_words(str(page.get("hint") or ""), task_id)
    err.print(f"[bold]next:[/] the places are listed above (trapbatch repeats {escape(task_id)})"
              + (f"; {escape(printable(hint))}" if hint else ""))


def category_name(category: Any) -> str:
    """A detection category as MegaDetector names it (``animal``, ``person``, ``vehicle``: the results file's
    ``detection_categories``, which the worker always writes as ``DETECTION_CATEGORIES``); a number it does not
    name is shown as it is. The listing showed "1" and "3", which an operator had to look up before choosing
    what to keep; ``--json`` keeps the API's numbers."""
    return DETECTION_CATEGORIES.get(str(category), str(category))


def damaged_line(damaged: Any, task_id: str) -> str:
    """A status's ``damaged`` (photos cut short) as one line, or "" when there are none: the task's summary and the
    repeats-removed variant's say the same."""
    if not isinstance(damaged, dict) or not damaged.get("count"):
        return ""
    count = int(damaged["count"])
    examples = ", ".join(str(e) for e in damaged.get("examples") or [])
    one = count == 1  # "1 photo ... as far as it goes; re-copy it", as zooniverse_cut_short_line words it
    return (f"{count} photo{'' if one else 's'} cut short (no JPEG end marker), detected as far as "
            f"{'it goes' if one else 'they go'}; re-copy {'it' if one else 'them'} from the cards: damaged.csv "
            f"(trapbatch results {task_id})"
            + (f"; e.g. {examples}" if examples else ""))


def _print_removal(task_id: str, removal: dict[str, Any]) -> None:
    """The last removal's state, with what went wrong and what to do: a bare "completed" hid that its exports were
    not written, a bare "failed" hid why."""
    out.print(f"removal: {removal.get('stage') or removal.get('runtime_status')}", markup=False, highlight=False)
    _print_stalled(task_id, removal)
    again = (f"send the same choice again (trapbatch repeats {task_id} --keep ... or --remove ...): the "
             "repeats-removed results are written again")
    if removal.get("error"):  # the removal failed: no repeats-removed variant of this choice was written
        out.print(f"  error: {printable(str(removal['error']))}", markup=False, highlight=False)  # no ESC of theirs
        out.print(f"  next: {again}", markup=False, highlight=False)
    elif removal.get("stage") == Stage.terminated:  # ended by a terminate (api.repeat_runs): not complete either
        out.print(f"  next: {again}", markup=False, highlight=False)
    damaged = damaged_line(removal.get("damaged"), task_id)
    if damaged:  # the task's photos cut short, in this variant too
        out.print(f"  damaged: {damaged}", markup=False, highlight=False)
    results = removal.get("results") if isinstance(removal.get("results"), dict) else {}
    cut_short = zooniverse_cut_short_line((results or {}).get("exports"), task_id)
    if cut_short:  # the variant's Zooniverse manifests leave them out too
        out.print(f"  zooniverse: {cut_short}", markup=False, highlight=False)
    if results and results.get("exports_error"):  # the variant stands; its COCO / Camtrap DP / Zooniverse do not
        out.print(f"  exports NOT written: {printable(str(results['exports_error']))}", markup=False, highlight=False)
        # the app's hint in the CLI's words (it names its route, POST /api/tasks/<id>/repeats, and the choice's
        # fields); ours for an older app's status
        hint = (task_hint_in_cli_words(str(results["exports_hint"]), task_id) if results.get("exports_hint") else
                f"the repeats-removed results JSON and CSV are complete; for their exports, {again}")
        out.print(f"  next: {printable(hint)}", markup=False, highlight=False)


def _print_stalled(task_id: str, run: dict[str, Any]) -> None:
    """A repeat removal or search the app judged stalled (its ``stalled``: running, no change for longer than its
    waits explain, ``core.stall.repeat_stalled``), with the app's hint in the CLI's words (``trapbatch terminate
    <task> --target ...``). Why: until it ends no other removal or search of the task starts, and a bare
    "merging" read as a run still under way."""
    stalled = run.get("stalled")
    if not isinstance(stalled, dict):
        return
    out.print(f"  STALLED: no change since {printable(str(stalled.get('since', '?')))} "
              f"({int(stalled.get('seconds') or 0) // 60} minutes)", markup=False, highlight=False)
    hint = task_hint_in_cli_words(str(stalled.get("hint") or ""), task_id)
    out.print(f"  next: {printable(hint)}", markup=False, highlight=False)


def _print_skipped(skipped: Any, task_id: str) -> None:
    """The folders a list did not search (over ``max_folder_detections``): an empty list must not read as clean."""
    if not isinstance(skipped, dict) or not skipped.get("folders"):
        return
    listed = skipped.get("listed") or []
    n = skipped["folders"]
    out.print(f"NOT searched: {n} folder{'s' if n != 1 else ''} ({skipped.get('detections')} eligible "
              "detections): " + ", ".join(f"{f.get('folder') or '(top)'} ({f.get('detections')})" for f in listed)
              + (f" and {skipped['more']} more" if skipped.get("more") else ""), markup=False, highlight=False)
    if skipped.get("hint"):
        out.print(printable(task_hint_in_cli_words(str(skipped["hint"]), task_id)), markup=False, highlight=False)


def _ids(text: str) -> list[str]:
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if not ids:
        raise CliError("no place ids given", "e.g. --keep r00002,r00005 (trapbatch repeats ID lists them)", 2)
    return ids


@cli.command(name="config", short_help="Show where the address, key and storage access come from (no secrets).")
def show_config() -> None:
    """Show the configuration in force and where each value comes from; secrets only as set / not set.

    Exits 2 when no address is set or it is not usable (as every command that needs it would), else 0."""
    import os

    state = click.get_current_context().find_object(State)
    config = cfg.resolve(state.flags if state else {})
    path = cfg.config_path(os.environ)
    # a path alone read as a file in use; there is no command that writes it (the CLI never writes a secret to disk)
    out.print(f"config file: {path}" + ("" if path.is_file() else
              ' (not created: write it, TOML, e.g. url = "https://<app>.azurewebsites.net" and key = "...", or use '
              "the flags or TRAPBATCH_URL and TRAPBATCH_KEY)"), markup=False)
    for name, value in config.describe().items():
        out.print(f"{name}: {value}")
    # a url no command could use (or none) says so here too, not first at the next command; and exits 2, as every
    # command that needs it would (docs/cli.md "Exit codes"): a script checking the setup with `trapbatch config`
    # read exit 0 below "url NOT usable"
    try:
        config.require_url()
    except CliError as exc:
        out.print(f"url NOT usable: {exc.message}; {exc.hint}", markup=False)
        sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors print what happened and what to do next, and set the exit code."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # what print() left buffered: a closed pipe is said here, not at the interpreter's exit
        return code
    except (OutputClosed, BrokenPipeError):
        return _output_closed()


def _output_closed() -> int:
    """End quietly once what reads the output has closed it: ``EXIT_OUTPUT_CLOSED`` (141, 128 + SIGPIPE, as a shell
    reports ``yes | head -1``), no traceback, no error line. Python ignores SIGPIPE, so a write to the closed pipe
    raises BrokenPipeError, and the interpreter's own flush at exit of what is still buffered would print "Exception
    ignored ... BrokenPipeError" and exit 120; Python's documentation's recipe (library/signal.html, "Note on
    SIGPIPE") points the closed stream at /dev/null so that flush has somewhere to go: here each of standard output
    and error whose flush fails now. A stream with no file descriptor (a test's capture) is left as it is."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            continue
        except (OSError, ValueError):
            pass
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
    return EXIT_OUTPUT_CLOSED


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="trapbatch", standalone_mode=False)
    except CliError as exc:
        # Ctrl-C is the user's own stop, not an error: "error: stopped watching" read as if the task had failed
        # (each such message says "stopped ... (Ctrl-C)" itself)
        err.print(f"[bold]{escape(exc.message)}[/]" if exc.exit_code == EXIT_INTERRUPTED
                  else f"[bold red]error:[/] {escape(exc.message)}")
        err.print(f"[bold]next:[/] {escape(hint_of(exc))}")
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # whatever the app had already accepted goes on there (a task, an estimate, a re-render): say so and where
        err.print("[bold]stopped[/] (Ctrl-C): anything the app had already accepted keeps running there")
        err.print("[bold]next:[/] trapbatch list, or trapbatch status <task id>, shows where it is")
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return EXIT_OK
