"""The ``trapbatch`` command without an app: configuration, help, request building and progress (tests/integration/
test_cli.py runs it against devhost)."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import config as cfg
from cli.errors import CliError
from cli.main import build_request, cli, main
from cli.progress import exit_code_for, progress_line, wait_for

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("submit", "status", "list", "watch", "cancel", "terminate", "results", "repeats", "estimate",
               "previews", "zooniverse")


def test_help_lists_every_subcommand_with_one_line() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    listing = result.output.split("Commands:")[1].splitlines()
    for name in SUBCOMMANDS:
        line = next(row for row in listing if row.strip().startswith(name + " "))
        assert len(line.split(name, 1)[1].strip()) > 10 and "..." not in line


def test_help_names_every_environment_variable_the_configuration_reads() -> None:
    """``trapbatch --help``'s "Configuration:" left out TRAPBATCH_AUTH_CLIENT_ID, which ``trapbatch config`` reads."""
    result = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    configuration = " ".join(result.output.split("Configuration:")[1].split("Options:")[0].split())
    assert [v for v in cfg.FIELDS.values() if v not in configuration] == []


def test_the_pyproject_entry_point_is_the_main_function() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["trapbatch"].partition(":")
    assert module == "cli.main" and attr == "main" and main.__module__ == module


def test_flags_win_over_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('url = "https://from-file.example"\nkey = "file-key"\nstorage_connection = "file-conn"\n')
    env = {"TRAPBATCH_CONFIG": str(path), "TRAPBATCH_KEY": "env-key"}
    config = cfg.resolve({"url": "http://flag.example", "key": None}, env)
    assert (config.url, config.key, config.storage_connection) == ("http://flag.example", "env-key", "file-conn")
    assert config.sources == {"url": "flag", "key": "env TRAPBATCH_KEY", "storage_connection": f"file {path}"}
    shown = repr(config) + json.dumps(config.describe())
    assert "env-key" not in shown and "file-conn" not in shown and "http://flag.example" in shown


def test_the_default_config_file_follows_xdg(tmp_path: Path) -> None:
    assert cfg.config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "trapbatch" / "config.toml"
    assert cfg.config_path({}) == Path.home() / ".config" / "trapbatch" / "config.toml"


@pytest.mark.parametrize("text,needle", [("url = ", "cannot read"), ('uri = "x"', "unknown setting"),
                                         ("key = 5", "must be strings")])
def test_a_bad_config_file_says_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(CliError, match=needle) as info:
        cfg.resolve({}, {"TRAPBATCH_CONFIG": str(path)})
    assert info.value.exit_code == 2  # a usage error: nothing was sent (4 says the app could not be reached)


def test_no_address_anywhere_says_where_to_put_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRAPBATCH_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("TRAPBATCH_URL", raising=False)
    assert main(["list"]) == 2  # nothing configured is a usage error, not an app that could not be reached (4)
    assert "TRAPBATCH_URL" in capsys.readouterr().err


def test_a_request_file_and_flags_combine_and_are_validated_before_sending(tmp_path: Path) -> None:
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"container": "cams", "prefix": "a/", "first_n": 5}))
    assert build_request(path, {"prefix": "b/", "first_n": None}) == {"container": "cams", "prefix": "b/",
                                                                      "first_n": 5}
    assert build_request(None, {"container": "cams"}, dry_run=True) == {"container": "cams", "dry_run": True}
    with pytest.raises(CliError, match="first_n") as info:
        build_request(path, {"sample_n": 3})
    assert info.value.exit_code == 2 and "choose" in info.value.hint
    with pytest.raises(CliError, match="no container"):
        build_request(None, {})


def test_the_zooniverse_visit_frames_flag_is_a_request_field_checked_before_sending() -> None:
    from cli.main import REQUEST_FLAGS
    from core.requests import ALLOWED_FIELDS

    assert {dest for _, dest, _, _ in REQUEST_FLAGS} <= set(ALLOWED_FIELDS)
    assert ("--zooniverse-visit-frames", "zooniverse_visit_frames", int) in {f[:3] for f in REQUEST_FLAGS}
    assert build_request(None, {"container": "cams", "zooniverse_visit_frames": 3}) == {
        "container": "cams", "zooniverse_visit_frames": 3}
    with pytest.raises(CliError, match="'zooniverse_visit_frames' must be at most 20") as info:
        build_request(None, {"container": "cams", "zooniverse_visit_frames": 50})
    assert info.value.exit_code == 2


def test_the_camera_depth_flag_is_on_submit_and_estimate_and_checked_before_sending() -> None:
    for command in ("submit", "estimate"):
        assert "--camera-depth" in {o for p in cli.commands[command].params for o in p.opts}, command
    assert build_request(None, {"container": "cams", "camera_depth": 1}) == {"container": "cams", "camera_depth": 1}
    with pytest.raises(CliError, match="'camera_depth' must be a whole number of folders from 1 to 32") as info:
        build_request(None, {"container": "cams", "camera_depth": 0})
    assert info.value.exit_code == 2


def test_the_preview_threshold_is_a_flag_and_a_bad_one_is_answered_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The threshold a task counts detections from (README: ``preview_threshold``) had no flag: an ecologist had to
    write a request file, and a bad value in it was answered with the JSON ``"preview_threshold": 0.2`` instead of
    a flag to type."""
    assert build_request(None, {"container": "cams", "preview_threshold": 0.35}) == {
        "container": "cams", "preview_threshold": 0.35}
    for name, value in {"TRAPBATCH_URL": "http://127.0.0.1:9", "TRAPBATCH_KEY": "k",
                        "TRAPBATCH_CONFIG": str(tmp_path / "n.toml")}.items():
        monkeypatch.setenv(name, value)
    for command in ("submit", "estimate"):  # refused before anything is sent (nothing listens on port 9)
        assert main([command, "--container", "cams", "--preview-threshold", "2"]) == 2, command
        shown = capsys.readouterr().err
        assert "'preview_threshold' must be a number from 0.005 to 1" in shown
        assert "--preview-threshold 0.2" in shown, shown


@pytest.mark.parametrize("runtime,stage,code", [("Completed", "completed", 0), ("Completed", "estimated", 0),
                                                ("Completed", "completed_with_errors", 3),
                                                ("Completed", "cancelled", 1), ("Failed", "failed", 1),
                                                ("Terminated", "terminated", 1)])
def test_only_a_completed_task_exits_zero(runtime: str, stage: str, code: int) -> None:
    assert exit_code_for({"runtime_status": runtime, "stage": stage}) == code


FOLLOW_UPS: list[tuple[dict[str, Any], str, str]] = [  # a step after detection that failed: the status, its name, next
    ({"results": {"container": "c", "blob": "b", "exports_error": "TimeoutError: exports_coco"}}, "exports failed",
     "submit the same request with --only-new to write them again"),
    ({"results": {"container": "c", "blob": "b", "exports_error": "TimeoutError: exports_coco",  # the app's words
                  "exports_hint": "post the same request with \"only_new\": true (the app's hint)"}},
     "exports failed", "submit the same request with --only-new (the app's hint)"),
    ({"repeated_detections": {"locations": 0, "blob": "", "error": "MemoryError: search",
                              "hint": "POST /api/tasks/task-0123456789abcdef0123/repeats/search to run it again"}},
     "repeated-detection search failed", "trapbatch repeats task-0123456789abcdef0123 --search"),
    ({"pool_job_error": "the pool job j1 could not be closed (HttpError): ... 'az batch job stop --job-id j1'"},
     "closing the pool job failed", "az batch account login"),
    ({"previews": {"container": "$web", "expiry_error": "HttpResponseError: throttled"}},
     "scheduling the previews' expiry failed", "trapbatch previews task-0123456789abcdef0123 --delete"),
    ({"previews": {"container": "$web", "pictures_missing": {  # activities.previews._Pictures.report
        "count": 10, "of": 10, "reasons": {"unreadable": 10}, "examples": ["a/1.jpg"],
        "error": "a/1.jpg: storage refused the request (HttpResponseError, AuthorizationFailure)",
        "hint": "give the app's identity (id-api-*) Storage Blob Data Reader on the images' account, then re-render "
                "the pages at the task's threshold: POST /api/tasks/{id}/previews"}}},
     "the preview pictures failed: 10 of 10 pictures could not be read",
     "trapbatch previews task-0123456789abcdef0123 --threshold <t>"),
]


@pytest.mark.parametrize("extra,step,hint", FOLLOW_UPS)
def test_a_completed_task_whose_follow_up_step_failed_exits_5_and_says_the_step(
        extra: dict[str, Any], step: str, hint: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --wait && upload`` went on (exit 0) without the exports, or with an open pool job, unsaid."""
    from cli import main as cli_main

    final = {"id": "task-0123456789abcdef0123", "runtime_status": "Completed", "stage": "completed", "images": 3,
             **extra}
    assert exit_code_for(final) == 5
    assert exit_code_for({**final, "stage": "completed_with_errors"}) == 3  # the images' failure is said first
    assert exit_code_for({**final, "runtime_status": "Failed", "stage": "failed"}) == 1

    class Client:
        def status(self, task_id: str) -> dict[str, Any]:
            return final

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["watch", "task-0123456789abcdef0123", "--plain"]) == 5
    said = " ".join(capsys.readouterr().err.split())
    assert "completed, but a step after detection failed" in said and step in said, said
    assert "next: " in said and hint in said, said


def test_pictures_missing_only_for_what_the_images_are_is_said_but_is_no_failed_step() -> None:
    """Images deleted since detection (or that do not decode for the page) get no picture: the summary says so, but
    nothing the user can run brings them back, so the task still exits 0."""
    missing = {"count": 1, "of": 10, "reasons": {"not_found": 1}, "examples": ["a/1.jpg"], "hint": "the results stand"}
    final = {"id": "t", "runtime_status": "Completed", "stage": "completed",
             "previews": {"container": "$web", "pictures_missing": missing}}
    assert exit_code_for(final) == 0


def test_a_follow_up_failure_ranks_below_a_task_that_failed_among_folders() -> None:
    from cli import main as cli_main

    for codes, worst in (([0, 5], 5), ([5, 3], 3), ([5, 1, 0], 1)):
        with pytest.raises(SystemExit) as ended:
            cli_main._exit_for_folders(codes, [])
        assert ended.value.code == worst, codes


def test_waiting_polls_until_the_task_ends_and_reports_each_status() -> None:
    statuses: list[dict[str, Any]] = [
        {"runtime_status": "Running", "stage": "enumerating"},
        {"runtime_status": "Running", "stage": "detecting", "images": 100, "images_done": 40, "shards": 4,
         "shards_done": 1, "shards_running": 2, "shards_queued": 1, "resubmissions": 1, "images_per_second": 12.5,
         "eta_seconds": 75},
        {"runtime_status": "Completed", "stage": "completed"}]
    seen: list[str] = []
    sleeps: list[float] = []
    final = wait_for(lambda: statuses.pop(0), lambda st: seen.append(progress_line(st)), poll_s=3,
                     sleep=sleeps.append)
    assert final["stage"] == "completed" and sleeps == [3, 3]
    assert seen[1] == ("detecting: 40/100 images, shards 1/4 done, 2 running, 1 queued, 1 resubmitted, "
                       "12.5 img/s, ETA 1m15s")


@pytest.mark.parametrize("value", ["0.001", "1.5"])
def test_previews_checks_the_threshold_before_sending(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--url", "http://127.0.0.1:9", "--key", "k", "previews", "task-0", "--threshold", value])
    assert code == 2 and "'threshold' must be a number from 0.005 to 1" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--occurrence-threshold", "10"], "--occurrence-threshold is an option of --search"),
    (["--search", "--keep", "r00001"], "not both"),
    # a list id names the list a choice comes from: alone, or with --search, it was dropped without a word
    (["--list", "s20261206T163339Z-13feb6"], "--list goes with --keep or --remove"),
    (["--search", "--list", "s20261206T163339Z-13feb6"], "--list goes with --keep or --remove"),
])
def test_repeat_search_options_go_with_search_alone(args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRAPBATCH_URL", "http://127.0.0.1:9")  # nothing listens: the command must stop before
    assert main(["repeats", "task-0123456789abcdef0123", *args]) == 2
    assert needle in capsys.readouterr().err


def test_the_summary_shows_a_finished_tasks_cost(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import _summary
    from core.cost import task_cost

    cost = task_cost(images=20_000, node_seconds=100.0, attempts=2, attempts_timed=2,
                     vm_size="Standard_NC40ads_H100_v5")
    _summary({"id": "task-0", "stage": "completed", "cost": cost})
    shown = capsys.readouterr().out
    assert "100.0 s over 2 shard attempt(s)" in shown and "200.0 images per node-second" in shown
    assert f"${cost['usd']}, ${cost['usd_per_million_images']} per million images" in shown
    _summary({"id": "task-0", "stage": "completed", "cost": task_cost(10, 5.0, 1, 1, vm_size="")})
    assert "local pool" in capsys.readouterr().out
    # a task cancelled before any shard ran has no rate: said so, not "None images per node-second"
    _summary({"id": "task-0", "stage": "cancelled", "cost": task_cost(0, 0.0, 0, 0, vm_size="")})
    shown = capsys.readouterr().out
    assert "None" not in shown and "unknown (no images timed on a node)" in shown


def test_the_summary_of_an_only_new_run_counts_the_images_it_reused(capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --only-new --wait`` on devhost ended with "images 42" and nothing saying that 41 of them were kept
    from the served results, which the status counts (``reused``, README's only_new field)."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "images": 42, "reused": 41})
    shown = capsys.readouterr().out
    assert re.search(r"reused\s+41", shown), shown


def test_the_summary_of_an_unfinished_rerun_says_which_results_are_still_served(
        capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "cancelled", "served": {"generation": "r2612030633239de9"}})
    assert "r2612030633239de9's results (trapbatch results task-0)" in capsys.readouterr().out
    _summary({"id": "task-0", "stage": "detecting", "served": {"generation": ""}})
    assert "the first run's results" in capsys.readouterr().out
    _summary({"id": "task-0", "stage": "completed"})
    assert "served" not in capsys.readouterr().out


def test_the_summary_of_a_promoted_rerun_says_when_the_replaced_results_go(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The status's ``replaced`` (core.replaced): the replaced generation's files are deleted days later, which the
    CLI's summary said nowhere."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "generation": "r2",
              "replaced": {"generation": "", "deletes_at": "2027-01-06T12:00:00+00:00", "scheduled": True}})
    shown = capsys.readouterr().out
    assert re.search(r"replaced\s+the first run's results, exports and working state are deleted at\s+2027-01-06T12",
                     shown), shown
    _summary({"id": "task-0", "stage": "completed", "replaced": {"generation": "r1", "deletes_at": None}})
    assert "re-run r1's results are kept (TRAPBATCH_KEEP_REPLACED_DAYS=0)" in " ".join(capsys.readouterr().out.split())
    _summary({"id": "task-0", "stage": "completed",
              "replaced": {"generation": "r1", "deletes_at": None, "error": "storage refused"}})
    assert ("re-run r1's results stay: no deletion could be scheduled (storage refused)"
            in " ".join(capsys.readouterr().out.split()))
    _summary({"id": "task-0", "stage": "completed"})
    assert "replaced" not in capsys.readouterr().out


def test_a_task_waiting_for_confirmation_says_what_it_would_cost_and_how_to_confirm() -> None:
    st = {"id": "task-0", "stage": "awaiting_confirmation", "runtime_status": "Running", "images": 12000,
          "estimate": {"gpu_hours": 0.014, "cost": 0.1}}
    assert progress_line(st) == ("awaiting confirmation: 12000 images, 0.014 GPU-hours, $0.1; nothing runs until "
                                 "'trapbatch confirm task-0' ('trapbatch cancel task-0' drops it)")
    assert "$" not in progress_line({**st, "estimate": {"gpu_hours": 0.014, "cost": None}})


def test_submit_yes_confirms_a_waiting_task_once(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import watch_task

    class Client:
        def __init__(self) -> None:
            self.statuses = [{"id": "t", "stage": s, "runtime_status": r} for s, r in (
                ("enumerating", "Running"), ("awaiting_confirmation", "Running"),
                ("awaiting_confirmation", "Running"), ("completed", "Completed"))]
            self.confirmed = 0

        def status(self, task_id: str) -> dict[str, Any]:
            return self.statuses.pop(0)

        def confirm(self, task_id: str) -> dict[str, Any]:
            self.confirmed += 1
            return {}

    for yes, want in ((True, 1), (False, 0)):
        client = Client()
        final = watch_task(client, "t", plain=True, poll_s=0, confirm=yes)  # type: ignore[arg-type]
        assert final["stage"] == "completed" and client.confirmed == want
        shown = capsys.readouterr().out
        # with --yes no line tells the person to run 'trapbatch confirm': it was done for them
        assert ("nothing runs until 'trapbatch confirm t'" in shown) is not yes, shown
        assert ("confirmed:" in shown) is yes


def test_the_summary_says_which_files_were_not_run(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "not_images": {"files": 3, "kinds": {".mp4": 2, ".txt": 1}}})
    shown = " ".join(capsys.readouterr().out.split())  # the table may wrap a long line
    assert "not run 3 files are not images and were not run (.mp4 2, .txt 1)" in shown
    _summary({"id": "task-0", "stage": "completed"})
    assert "not run" not in capsys.readouterr().out


def test_the_summary_names_the_photos_cut_short(capsys: pytest.CaptureFixture[str]) -> None:
    """The status's ``damaged`` (JPEGs decoded as far as they go) is named with its count and where the list is."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "damaged": {
        "count": 312, "examples": ["cam1/IMG_0001.JPG"], "blob": "results/task-0/damaged.csv", "hint": "h"}})
    shown = " ".join(capsys.readouterr().out.split())  # the table may wrap a long line
    assert "damaged 312 photos cut short" in shown and "damaged.csv (trapbatch results task-0)" in shown
    assert "cam1/IMG_0001.JPG" in shown
    _summary({"id": "task-0", "stage": "completed"})
    assert "damaged" not in capsys.readouterr().out


def test_the_summary_says_a_results_readme_was_not_written_and_how_it_is_written_again(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The previews step's ``readme_error`` (activities.readme.publish_readme): the README is a help text, so the
    task stands and the summary says it in the CLI's words; nothing when it was written."""
    from cli.main import _summary

    said = ("README.txt not written (RuntimeError); the results are complete without it, and the next re-render "
            "(POST /api/tasks/task-0/previews) writes it again")
    _summary({"id": "task-0", "stage": "completed", "previews": {"container": "$web", "readme_error": said}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "README README.txt not written (RuntimeError)" in shown, shown
    assert "trapbatch previews task-0 --threshold <t>" in shown
    _summary({"id": "task-0", "stage": "completed", "previews": {"container": "$web"}})
    assert "not written" not in capsys.readouterr().out


def test_the_summary_says_which_photos_cut_short_the_zooniverse_manifests_leave_out(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The exports' ``zooniverse_cut_short`` (photos cut short left out of the subjects) is an export note like the
    others: a manifest short of the task's photos says why and what to do; nothing when none were left out."""
    from cli.main import _summary
    from cli.progress import zooniverse_cut_short_line

    exports = {"events": 4, "cameras": 2, "zooniverse_subjects": 8, "zooniverse_cut_short": 3}
    _summary({"id": "task-0", "stage": "completed", "results": {"exports": exports}})
    shown = " ".join(capsys.readouterr().out.split())  # the table may wrap a long line
    assert "zooniverse 3 photos cut short left out of the subjects" in shown, shown
    assert "damaged.csv, trapbatch results task-0" in shown
    # the CLI's own line, in the CLI's words: "post the request" is the API's (seen: "post the request again"); and
    # --only-new alone, as every other line says it (it is a re-run: "--rerun --only-new" read as two things to do)
    assert "then trapbatch submit the same request with --only-new" in shown and "post " not in shown
    assert "--rerun" not in shown
    assert zooniverse_cut_short_line({"zooniverse_cut_short": 1}, "t").startswith("1 photo cut short left out")
    for none in ({"zooniverse_subjects": 8}, {"zooniverse_cut_short": 0}, None, "x"):
        assert zooniverse_cut_short_line(none, "t") == ""
    _summary({"id": "task-0", "stage": "completed", "results": {"exports": {"zooniverse_subjects": 8}}})
    assert "zooniverse" not in capsys.readouterr().out


def test_the_summary_says_what_did_not_happen_after_the_results(capsys: pytest.CaptureFixture[str]) -> None:
    """The results stand, but exports that failed or a receiver never told are failures a person must see."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "results": {"exports_error": "exports: disk full"},
              "notification": {"sent": False, "status_code": 0, "reason": "receiver down (after 6 attempts)"},
              "task_event": {"sent": False, "status_code": 0, "reason": "topic 403 (after 6 attempts)"}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "task event NOT published: topic 403 (after 6 attempts)" in shown
    assert "exports NOT written: exports: disk full" in shown
    assert "notify_url NOT told: receiver down (after 6 attempts)" in shown
    _summary({"id": "task-0", "stage": "completed", "results": {"exports": {}},
              "notification": {"sent": True, "status_code": 204, "reason": ""}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "NOT" not in shown and "notify_url told (answered 204)" in shown


@pytest.mark.parametrize("hint", [None, "read the same status with GET /api/tasks/task-0 instead (the app's)"])
def test_the_summary_says_a_drop_answer_not_written_and_what_to_do(hint: str | None,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``drop_answer`` (the done file beside a dropped request could not be written) was in the status only: the
    summary names the file, why, and where to read the same instead (the app's hint, or the CLI's for an older
    status)."""
    from cli.main import _summary

    unwritten = {"written": False, "file": "incoming/site-a/survey.done.json", "reason": "AuthorizationFailure",
                 **({"hint": hint} if hint else {})}
    _summary({"id": "task-0", "stage": "completed", "drop_answer": unwritten})
    shown = " ".join(capsys.readouterr().out.split())
    assert "drop answer NOT written: incoming/site-a/survey.done.json (AuthorizationFailure)" in shown
    assert "next: " in shown and "read the same status with trapbatch status task-0 instead" in shown
    _summary({"id": "task-0", "stage": "completed"})
    assert "drop answer" not in capsys.readouterr().out


def test_the_summary_says_the_joined_drops_done_files_were_not_all_written(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``joined_drops`` (the done files beside the requests dropped while the task ran, which joined it, could not
    all be written: orchestrations.task ``_answer_joined_drops``) is shown with why and what to do."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "joined_drops": {
        "written": False, "reason": "AuthorizationFailure",
        "hint": "read the same status with GET /api/tasks/task-0 instead"}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "joined drops done files NOT all written (AuthorizationFailure)" in shown
    assert "read the same status with trapbatch status task-0 instead" in shown
    _summary({"id": "task-0", "stage": "completed"})
    assert "joined drops" not in capsys.readouterr().out


def test_the_summary_says_why_coco_boxes_stayed_relative_and_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    """``results.exports.sizes_unknown`` was a bare count nobody was shown: the summary names it, why and the next
    step (the app's hint in the CLI's words)."""
    from cli.main import _summary

    why = {"reasons": {"unreadable": 2}, "examples": ["cam1/a.jpg", "cam1/b.jpg"],
           "error": "cam1/a.jpg: storage refused the request (HttpResponseError, AuthorizationFailure)",
           "hint": 'their COCO boxes stay relative; ... then post the same request with "only_new": true'}
    _summary({"id": "task-0", "stage": "completed",
              "results": {"exports": {"images": 5, "sizes_unknown": 2, "sizes_unknown_why": why}}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "COCO sizes 2 image(s) without a size: their boxes are relative (bbox_relative) (unreadable: 2)" in shown
    assert "e.g. cam1/a.jpg, cam1/b.jpg; cam1/a.jpg: storage refused the request" in shown
    assert "next: their COCO boxes stay relative; ... then submit the same request with --only-new" in shown
    _summary({"id": "task-0", "stage": "completed", "results": {"exports": {"images": 5, "sizes_unknown": 0}}})
    assert "COCO sizes" not in capsys.readouterr().out


def test_the_coco_sizes_row_shows_a_services_control_characters_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """The reason an image's size is unknown is storage's own words: an ESC sequence in them must not reach the
    terminal (``cli.progress.printable``, as the status's other rows of service text)."""
    from cli.main import _summary

    why = {"reasons": {"unreadable": 1}, "examples": ["cam1/a.jpg"], "error": "cam1/a.jpg: refused \x1b[2J"}
    _summary({"id": "task-0", "stage": "completed",
              "results": {"exports": {"images": 5, "sizes_unknown": 1, "sizes_unknown_why": why}}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "\x1b" not in shown and "refused \\x1b[2J" in shown, shown


def test_results_keep_their_paths_so_the_variants_exports_do_not_overwrite_each_other() -> None:
    from cli.download import local_paths

    prefix = "results/task-1/runs/r000000000001ab/"
    answer = {"results": {"container": "state", "blob": prefix + "detections.json", "url": "http://x",
                          "csv": prefix + "detections.csv",
                          "exports": {"original": {"coco.json": prefix + "exports/coco.json",
                                                   "camtrap-dp/media.csv": prefix + "exports/camtrap-dp/media.csv"},
                                      "repeats-removed": {
                                          "coco.json": prefix + "exports/repeats-removed/coco.json",
                                          "camtrap-dp/media.csv": prefix + "exports/repeats-removed/camtrap-dp/media.csv"}}}}
    answer["results"]["files"] = {"repeats-removed": {  # the API names every variant's files
        "results": prefix + "detections.repeats-removed.json", "csv": prefix + "detections.repeats-removed.csv"}}
    status = {"repeated_detections": {"blob": prefix + "repeated-detections.json"}}
    paths = {path for _, _, path in local_paths(answer, status)}
    assert paths == {"detections.json", "detections.csv", "exports/coco.json", "exports/camtrap-dp/media.csv",
                     "exports/repeats-removed/coco.json", "exports/repeats-removed/camtrap-dp/media.csv",
                     "repeated-detections.json", "detections.repeats-removed.json", "detections.repeats-removed.csv"}
    elsewhere = {**answer, "results": {**answer["results"], "csv": "other/place/detections.json"}}
    with pytest.raises(CliError, match="two files would be written to detections.json"):
        local_paths(elsewhere, status)  # outside the folder a file keeps its name only: a clash is refused


def test_folders_become_one_request_each_under_the_prefix_labelled_with_the_folder() -> None:
    from cli.errors import CliError
    from cli.folders import folder_requests

    body = {"container": "traps", "prefix": "2018/", "request_name": "arendelle", "model": "MDV5A"}
    made = folder_requests(body, ["Summer_2018", "/Winter_2018/"])
    assert made == [("Summer_2018", {**body, "prefix": "2018/Summer_2018/", "request_name": "arendelle: Summer_2018"}),
                    ("Winter_2018", {**body, "prefix": "2018/Winter_2018/", "request_name": "arendelle: Winter_2018"})]
    assert folder_requests({"container": "traps"}, ["a"]) == [("a", {"container": "traps", "prefix": "a/",
                                                                     "request_name": "a"})]
    for folders, bad, needle in ((["a", "a/"], {}, "given twice"), (["  "], {}, "names no folder"),
                                 (["a"], {"image_list": "l.csv"}, "image list"),
                                 (["a\x01"], {}, "not valid")):
        with pytest.raises(CliError, match=needle) as info:
            folder_requests({"container": "traps", **bad}, folders)
        assert info.value.exit_code == 2 and info.value.hint


class _KnownTaskClient:
    """An app whose task for every request had ended cancelled (a re-run ends completed); records what was posted."""

    posted: list[dict[str, Any]] = []

    def __init__(self, config: Any) -> None:
        pass

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        _KnownTaskClient.posted.append(body)
        return {"id": "task-00000000000000000009", "started": self._again()}

    def status(self, task_id: str) -> dict[str, Any]:
        return {"id": task_id, "stage": "completed" if self._again() else "cancelled", "runtime_status": "Completed",
                "images": 3}

    @staticmethod
    def _again() -> bool:
        last = _KnownTaskClient.posted[-1]
        return bool(last.get("rerun") or last.get("only_new"))


def test_submit_json_keeps_stdout_json_and_an_ended_task_says_how_to_run_it_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --wait --json``: standard output is the final status as JSON alone (docs/cli.md); a request whose
    task had ended without completing says how to run it again, and --rerun / --only-new post that verb."""
    import cli.main as cli_main

    monkeypatch.setattr(cli_main, "ApiClient", _KnownTaskClient)
    monkeypatch.setattr(cli_main.time, "sleep", lambda s: None, raising=False)
    _KnownTaskClient.posted.clear()
    base = ["--url", "http://127.0.0.1:9", "--key", "k", "submit", "--container", "photos", "--wait"]
    assert main([*base, "--json", "--plain"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["stage"] == "cancelled"  # nothing but the JSON
    assert "already known" in captured.err and "--rerun" in captured.err
    assert main([*base, "--plain", "--rerun"]) == 0
    assert main([*base, "--plain", "--only-new"]) == 0
    captured = capsys.readouterr()
    assert "started" in captured.out and "--rerun" not in captured.err
    assert [(b.get("rerun"), b.get("only_new")) for b in _KnownTaskClient.posted] == [
        (None, None), (True, None), (None, True)]


def test_submit_folders_wait_says_how_to_run_a_folders_ended_task_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --folder ... --wait`` whose folder's task had already ended cancelled said only that it ended, not
    that the same request finds that task again and only --rerun runs it: a single ``submit`` said so."""
    import cli.main as cli_main

    monkeypatch.setattr(cli_main, "ApiClient", _KnownTaskClient)
    monkeypatch.setattr(cli_main.time, "sleep", lambda s: None, raising=False)
    _KnownTaskClient.posted.clear()
    base = ["--url", "http://127.0.0.1:9", "--key", "k", "submit", "--container", "photos", "--wait", "--plain"]
    assert main([*base, "--folder", "Summer_2018"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert ("next: folder Summer_2018's task had ended cancelled before; to run it again, submit the same request "
            "with --folder Summer_2018 --rerun (or --only-new to run only new or changed images)") in err
    assert main([*base, "--folder", "Summer_2018", "--rerun"]) == 0  # started: nothing to say
    assert "--rerun" not in capsys.readouterr().err


def test_submit_without_wait_offers_to_follow_only_a_task_that_still_runs(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit`` (no --wait) of a request whose task had ended said "follow it: trapbatch watch ID" after the app's
    word that it ran already: there is nothing to follow. ``submit --folder`` said only "already known" of such a
    folder, not how it ended nor what to do, and offered to follow it too."""
    import cli.main as cli_main

    ended = {"id": "task-0000000000000000000e", "started": False, "stage": "completed_with_errors",
             "hint": "this request ran already: its results: GET /api/tasks/task-0000000000000000000e/results"}
    running = {"id": "task-0000000000000000000a", "started": False, "stage": "detecting",
               "hint": "the same request's task is still running"}
    new = {"id": "task-0000000000000000000b", "started": True}

    class Client:
        answers: list[dict[str, Any]] = []

        def __init__(self, config: Any) -> None:
            pass

        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            return Client.answers.pop(0)

    monkeypatch.setattr(cli_main, "ApiClient", Client)
    base = ["--url", "http://127.0.0.1:9", "--key", "k", "submit", "--container", "photos"]
    Client.answers = [ended, running]
    assert main(base) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "its stage: completed_with_errors" in said and "trapbatch results task-0000000000000000000e" in said
    assert "trapbatch watch" not in said
    assert main(base) == 0
    assert "follow it: trapbatch watch task-0000000000000000000a" in " ".join(capsys.readouterr().out.split())
    Client.answers = [ended, new]
    assert main([*base, "--folder", "Summer_2018", "--folder", "Winter_2018"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "its stage: completed_with_errors; this request ran already" in said
    assert "follow them: trapbatch watch task-0000000000000000000b" in said
    assert "watch task-0000000000000000000e" not in said


@pytest.mark.parametrize("folders, only_new", [([], "--only-new"),
                                               (["Summer_2018"], "--folder Summer_2018 --only-new")])
@pytest.mark.parametrize("stage_found", ["completed", "detecting"])
def test_submit_wait_that_found_its_task_completed_before_says_new_photos_are_not_in_it(
        folders: list[str], only_new: str, stage_found: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Photos added to a container, then the same ``submit --wait`` (what ``scripts.upload_local`` advises): it
    found the task that had completed before, printed "completed" and exited 0, and ran nothing; nothing said that
    the new photos were in no results. A task found still running that then completes gets no such note."""
    import cli.main as cli_main

    class CompletedTaskClient:
        def __init__(self, config: Any) -> None:
            pass

        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"id": "task-00000000000000000009", "started": False, "stage": stage_found,
                    "hint": "this request ran already: its results: GET /api/tasks/task-00000000000000000009/results"}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed", "runtime_status": "Completed", "images": 3}

    monkeypatch.setattr(cli_main, "ApiClient", CompletedTaskClient)
    monkeypatch.setattr(cli_main.time, "sleep", lambda s: None, raising=False)
    flags = [arg for folder in folders for arg in ("--folder", folder)]
    base = ["--url", "http://127.0.0.1:9", "--key", "k", "submit", "--container", "photos", "--wait", "--plain"]
    assert main([*base, *flags]) == 0
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "ran already" not in captured.out + captured.err  # said once, by the note: not the app's hint too
    if stage_found == "completed":
        assert "had ended completed before" in err and "photos added or changed since are not in them" in err
        assert f"submit the same request with {only_new}" in err
    else:
        assert "before" not in err and "--only-new" not in err


@pytest.mark.parametrize("folders", [[], ["Summer_2018"]])
def test_submit_wait_that_found_its_task_still_running_does_not_say_it_had_ended_before(
        folders: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The same request posted while its task still runs finds it (``started`` false, its ``stage`` running); the
    task that then fails during this submit's wait did not end "before": the line said so, for a single submit and
    for each folder of ``submit --folder``. The failure itself is said by the summary and the exit code."""
    import cli.main as cli_main

    class RunningTaskClient:
        def __init__(self, config: Any) -> None:
            pass

        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"id": "task-00000000000000000009", "started": False, "stage": "detecting",
                    "hint": "the same request's task is still running"}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "failed", "runtime_status": "Failed", "error": "boom", "images": 3}

    monkeypatch.setattr(cli_main, "ApiClient", RunningTaskClient)
    monkeypatch.setattr(cli_main.time, "sleep", lambda s: None, raising=False)
    flags = [arg for folder in folders for arg in ("--folder", folder)]
    base = ["--url", "http://127.0.0.1:9", "--key", "k", "submit", "--container", "photos", "--wait", "--plain"]
    assert main([*base, *flags]) == 1
    assert "before" not in " ".join(capsys.readouterr().err.split())


def test_list_never_cuts_a_task_id_or_stage_on_a_narrow_or_piped_output(monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The id is what a person copies into status, results, cancel: at 80 columns (a pipe) it used to end in '…'."""
    import cli.main as cli_main

    rows = [{"id": f"task-{i:020x}", "request_name": "camera traps of the northern ridge, season 2024 " * 2,
             "stage": "completed_with_errors", "images": 123456, "created": "2026-12-03T17:31:37.123456+00:00"}
            for i in range(3)]

    class Lister:
        def __init__(self, config: Any) -> None:
            pass

        def list(self, limit: int) -> dict[str, Any]:
            return {"tasks": rows, "total": 3}

    monkeypatch.setattr(cli_main, "ApiClient", Lister)
    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=80, highlight=False, soft_wrap=True))
    assert main(["--url", "http://127.0.0.1:9", "--key", "k", "list"]) == 0
    shown = capsys.readouterr().out
    for row in rows:
        assert row["id"] in shown
    assert shown.count("completed_with_errors") == 3 and "…" not in shown


def test_the_summary_counts_the_camera_visits(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "results": {"exports": {"events": 13, "event_observations": 15}}})
    assert "camera visits 13 (Camtrap DP event-level observations)" in " ".join(capsys.readouterr().out.split())
    _summary({"id": "task-0", "stage": "completed", "results": {"exports": {"images": 4}}})  # exports before events
    assert "camera visits" not in capsys.readouterr().out
    _summary({"id": "task-0", "stage": "completed", "results": {"exports": {
        "events": 13, "cameras": 2, "camera_visits": "results/task-0/exports/camera-visits.csv"}}})
    assert "camera visits 13 at 2 cameras (Camtrap DP event-level observations; a row per camera in " \
           "camera-visits.csv)" in " ".join(capsys.readouterr().out.split())
    _summary({"id": "task-0", "stage": "completed", "results": {"exports": {
        "events": 13, "cameras": 2, "camera_visits": "results/task-0/exports/camera-visits.csv",
        "camera_days": "results/task-0/exports/camera-days.csv"}}})
    assert "a row per camera in camera-visits.csv; a row per camera and day in camera-days.csv)" in \
        " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------ the transport (cli/client.py)
class _Answers:
    """A requests.Session stand-in: answers in order (a status and headers, or an exception to raise), recording
    each request's method, URL, headers and keyword arguments."""

    def __init__(self, *answers: Any) -> None:
        import requests

        self.answers = list(answers)
        self.sent: list[dict[str, Any]] = []
        self.headers: dict[str, str] = {}
        self._requests = requests

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.sent.append({"method": method, "url": url, "headers": {**self.headers, **(kwargs.get("headers") or {})},
                          **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        resp = self._requests.Response()
        resp.status_code, resp.headers = status, self._requests.structures.CaseInsensitiveDict(headers)
        resp._content = (b'{"id": "task-1", "stage": "detecting"}' if status < 300
                         else headers.get("_body", "").encode())
        return resp


def _client(session: _Answers, url: str = "https://app.example", **config: str) -> tuple[Any, list[float]]:
    from cli.client import ApiClient
    from cli.config import Config

    slept: list[float] = []
    client = ApiClient(Config(url=url, key="K", **config), session=session, sleep=slept.append)  # type: ignore[arg-type]
    return client, slept


def test_transient_failures_are_tried_again_with_the_apps_retry_after() -> None:
    """One 503 or a dropped connection in an hours-long watch ended it (exit 4). GETs are tried again on 5xx and
    connection errors; any request on 429/503, waiting the app's Retry-After (capped)."""
    import requests

    session = _Answers(503, requests.exceptions.ConnectionError("reset"), (429, {"Retry-After": "300"}), 200)
    client, slept = _client(session)
    assert client.status("task-1")["id"] == "task-1"
    assert len(session.sent) == 4 and slept == [2.0, 5.0, 300.0]
    assert all(s["allow_redirects"] is False for s in session.sent)


def test_a_post_that_may_have_run_is_not_sent_twice_but_submit_is() -> None:
    """A 502 may be Azure's answer after a function ran past 230 s: a confirm or a repeat choice is not repeated; a
    submit is (the same request finds the same task), and any POST on 429/503 (not run)."""
    from cli.errors import CliError

    client, _ = _client(_Answers(502))
    with pytest.raises(CliError, match="502"):
        client.confirm("task-1")
    session = _Answers(502, 200)
    client, _ = _client(session)
    assert client.submit({"container": "c"})["id"] == "task-1" and len(session.sent) == 2
    session = _Answers(503, 200)
    client, _ = _client(session)
    assert client.confirm("task-1")["id"] == "task-1" and len(session.sent) == 2


def test_a_redirect_is_not_followed_and_plain_http_to_a_remote_host_is_refused() -> None:
    """requests turns a POST into a GET on a 301 and forwards x-functions-key (its rebuild_auth strips only
    Authorization): the CLI follows none and names the address; and it sends a key over http:// only to loopback."""
    from cli.errors import CliError

    session = _Answers((301, {"Location": "https://app.example/api/tasks"}))
    client, _ = _client(session)
    with pytest.raises(CliError, match="redirected \\(301\\) to https://app.example/api/tasks"):
        client.submit({"container": "c"})
    assert len(session.sent) == 1
    with pytest.raises(CliError, match="plain http"):
        _client(_Answers(), url="http://app.example")
    _client(_Answers(), url="http://127.0.0.1:7071")  # devhost


def test_the_task_list_waits_past_the_apps_own_deadline() -> None:
    from cli.client import LIST_TIMEOUT_S

    session = _Answers(200)
    client, _ = _client(session)
    client.list()
    assert session.sent[0]["timeout"] == LIST_TIMEOUT_S > 230


def test_a_terminate_waits_past_the_apps_own_deadline() -> None:
    """The terminate's 202 writes the run's done files first (api.terminated_answers: up to the app's answer deadline,
    ``POST_ANSWER_S``): cut at 60 s, a terminate that was made read as a failure, and one sent again got 409 "not
    running", the done files' fate unsaid."""
    from api.starters import POST_ANSWER_S
    from cli.client import LIST_TIMEOUT_S

    session = _Answers(202)
    client, _ = _client(session)
    client.terminate("task-0123456789abcdef0123", "r")
    assert session.sent[0]["timeout"] == LIST_TIMEOUT_S > 230 > POST_ANSWER_S


def test_an_entra_token_is_renewed_before_it_expires_and_a_401_names_key_and_token() -> None:
    """Entra ID access tokens live 60-90 minutes; a fixed --token made a long --wait end in a 401 that blamed the
    function key. --auth-client-id gets tokens for api://<id> from the Azure sign-in and renews them."""
    from cli.client import TokenSource
    from cli.errors import CliError

    now = [1000.0]
    issued: list[str] = []

    class Credential:
        def get_token(self, scope: str) -> Any:
            issued.append(scope)
            return type("T", (), {"token": f"tok{len(issued)}", "expires_on": now[0] + 3600})()

    tokens = TokenSource("abc-123", credential=Credential(), clock=lambda: now[0])
    session = _Answers(200, 200, 200, 401)
    client, _ = _client(session, auth_client_id="abc-123")
    client.tokens = tokens
    client.status("task-1")
    client.status("task-1")
    now[0] += 3400  # within TOKEN_MARGIN_S of the expiry
    client.status("task-1")
    assert issued == ["api://abc-123/.default"] * 2
    assert [s["headers"]["Authorization"] for s in session.sent] == ["Bearer tok1", "Bearer tok1", "Bearer tok2"]
    with pytest.raises(CliError) as refused:
        client.status("task-1")
    assert "function key and token" in refused.value.message and "--auth-client-id" in refused.value.hint


@pytest.mark.parametrize("name", ["../evil.json", "/etc/passwd", "exports\\..\\..\\evil.bat", "exports/a:b.json",
                                  "exports/CON.json", "exports/nul", "a/b\x01.json", "exports/trailing. ", ""])
def test_a_blob_name_that_would_leave_the_folder_on_any_system_is_refused(tmp_path: Path, name: str) -> None:
    """Checked as Windows reads names too: a backslash separates folders there, a colon names a drive, and CON, NUL...
    open devices whatever their extension."""
    from cli.download import _safe_join
    from cli.errors import CliError

    with pytest.raises(CliError, match="refusing to write"):
        _safe_join(tmp_path, name)


def test_trapbatchs_own_file_names_are_written_where_they_belong(tmp_path: Path) -> None:
    from cli.download import _safe_join

    for name in ("detections.json", "exports/camtrap-dp/media.csv", "exports/repeats-removed/coco.json",
                 "thumbs/0123456789abcdef.jpg", "zooniverse/batch-001.csv"):
        assert _safe_join(tmp_path, name) == tmp_path.joinpath(*name.split("/"))


def test_a_download_that_fails_on_the_network_or_the_disk_is_an_api_error_with_what_to_do(tmp_path: Path) -> None:
    """An unreachable storage endpoint (ServiceRequestError, after the SDK's retries) or a full disk ended in a
    traceback and exit 1, which the CLI's exit codes reserve for a failed task; no half file is left."""
    from azure.core.exceptions import ServiceRequestError

    from cli.download import _fetch
    from cli.errors import EXIT_API, CliError

    class Service:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def get_blob_client(self, container: str, name: str) -> Any:
            exc = self.exc

            class Blob:
                def download_blob(self, **kw: Any) -> Any:
                    raise exc

            return Blob()

    for exc, needle in ((ServiceRequestError("unreachable"), "ServiceRequestError"),
                        (OSError(28, "No space left on device"), "No space left on device")):
        with pytest.raises(CliError) as failed:
            _fetch(Service(exc), "trapbatch", "results/t/detections.json", tmp_path / "detections.json")
        assert needle in failed.value.message and failed.value.exit_code == EXIT_API
        assert "run the same command again" in failed.value.hint
        assert list(tmp_path.iterdir()) == []


def test_a_read_only_out_folder_is_said_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``results --out`` an existing folder on a read-only file system (a mounted backup, a CD image): removing the
    ``.part`` that was never made failed too (EROFS, not "no such file"), and its traceback hid the error."""
    import errno
    import os

    from cli.download import _fetch
    from cli.errors import EXIT_API, CliError

    def read_only(path: Any, *a: Any, **k: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    class Service:
        def get_blob_client(self, container: str, name: str) -> Any:
            return object()  # never read: the .part cannot be made

    monkeypatch.setattr(os, "unlink", read_only)
    with pytest.raises(CliError) as failed:
        _fetch(Service(), "trapbatch", "results/t/detections.json", tmp_path / "detections.json")
    assert "Read-only file system" in failed.value.message and failed.value.exit_code == EXIT_API
    assert failed.value.hint.startswith("choose another --out folder, one you can write to")  # no free space to make


def test_ctrl_c_outside_a_watch_says_what_goes_on(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    """Ctrl-C during an estimate, a results download or a re-render wait exited 130 without a word."""
    from cli import main as cli_main
    from cli.errors import EXIT_INTERRUPTED

    def interrupted(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.cli, "main", interrupted)
    assert cli_main.main(["list"]) == EXIT_INTERRUPTED
    said = capsys.readouterr().err
    assert "keeps running" in said and "trapbatch status" in said


def test_a_ctrl_c_no_command_catches_prints_the_stopped_line_without_a_blank_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C in a command that does not catch it (``list``) went through click, which writes an empty line to
    standard error before its Abort (click.core.Command.main), so "stopped (Ctrl-C): ..." came after a blank line,
    where every other Ctrl-C of the CLI starts with its "stopped" line. It prints that line and its next: alone."""
    from cli import main as cli_main
    from cli.errors import EXIT_INTERRUPTED

    class Client:
        def list(self, *a: Any, **k: Any) -> dict[str, Any]:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["list"]) == EXIT_INTERRUPTED
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "stopped (Ctrl-C): anything the app had already accepted keeps running there",
        "next: trapbatch list, or trapbatch status <task id>, shows where it is"], captured.err
    assert captured.out == ""


@pytest.mark.parametrize("folders", [[], ["Summer_2018", "Winter_2018"]])
def test_ctrl_c_during_an_estimates_listing_names_the_estimates_that_keep_listing(
        folders: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while ``estimate`` waited for a listing of minutes said "trapbatch status <task id>": the estimate's
    id was printed nowhere. It names each estimate not yet waited for, by id (and folder), and exits 130."""
    import cli.main as cli_main

    class ListingClient:
        posted = 0

        def __init__(self, config: Any) -> None:
            pass

        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            ListingClient.posted += 1
            return {"id": f"task-0000000000000000000{ListingClient.posted}", "started": True}

        def status(self, task_id: str) -> dict[str, Any]:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "ApiClient", ListingClient)
    flags = [arg for folder in folders for arg in ("--folder", folder)]
    assert main(["--url", "http://127.0.0.1:9", "--key", "k", "estimate", "--container", "photos", *flags]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "<task id>" not in err and "trapbatch status task-00000000000000000001" in err
    if folders:
        assert ("estimates task-00000000000000000001 (folder Summer_2018), task-00000000000000000002 (folder "
                "Winter_2018) keep listing") in err
    else:
        assert "estimate task-00000000000000000001 keeps listing" in err


def test_ctrl_c_during_a_watch_is_no_error_and_says_how_to_follow_the_task_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``watch`` stopped with Ctrl-C printed "error: stopped watching": the task had not failed, only the watching
    stopped. It says so, how to look again, and exits 130 as every Ctrl-C of the CLI does."""
    from cli import main as cli_main
    from cli.errors import EXIT_INTERRUPTED

    task = "task-0123456789abcdef0123"

    class Client:
        def status(self, task_id: str) -> dict[str, Any]:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["watch", task, "--plain"]) == EXIT_INTERRUPTED
    said = " ".join(capsys.readouterr().err.split())
    assert "error" not in said and f"stopped watching (Ctrl-C); task {task} keeps running" in said
    assert f"next: trapbatch watch {task} to follow it again" in said


def test_ctrl_c_during_a_results_download_says_the_same_command_resumes(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Ctrl-C in the middle of gigabytes of results said "anything the app had already accepted keeps running there"
    (nothing was: only the download stopped) and not that the same command picks it up where it stopped."""
    from cli import download as cli_download
    from cli import main as cli_main
    from cli.errors import EXIT_INTERRUPTED

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json"}}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed"}

    def stopped(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_download, "blob_service", lambda connection, url: object())
    monkeypatch.setattr(cli_download, "download", stopped)
    assert cli_main.main(["results", "task-1", "--out", str(tmp_path)]) == EXIT_INTERRUPTED
    said = " ".join(capsys.readouterr().err.split())
    assert "stopped downloading" in said and "keeps running" not in said
    assert "next: run the same command again" in said and "resumes" in said


@pytest.mark.parametrize("rerun_running", [True, False])
def test_results_during_a_rerun_say_they_are_the_previous_runs(
        rerun_running: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """``results`` while a re-run runs downloads the results still served, the previous run's (the API answers them
    and the status says ``served``), said nowhere: they were taken for the new run's."""
    from cli import download as cli_download
    from cli import main as cli_main

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json"}}

        def status(self, task_id: str) -> dict[str, Any]:
            if not rerun_running:
                return {"id": task_id, "stage": "completed"}
            return {"id": task_id, "stage": "detecting", "served": {"generation": "r26120616310026d2",
                                                                     "hint": "this is a re-run"}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_download, "blob_service", lambda connection, url: object())
    monkeypatch.setattr(cli_download, "download", lambda *a, **k: [])
    assert cli_main.main(["results", "task-1", "--out", str(tmp_path)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert ("task task-1 is running again (stage: detecting): these are its previous run's results "
            "(r26120616310026d2)" in said) is rerun_running
    assert ("trapbatch watch task-1" in said) is rerun_running


@pytest.mark.parametrize("waiting", [True, False])
def test_results_say_when_the_preview_site_they_name_is_taken_off_the_website(
        waiting: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A task posted with ``--previews-expire-days 3``: ``results`` printed the pages' address, to be passed on, and
    nothing said it stops working in three days (the API's ``previews.expiry``)."""
    from cli import download as cli_download
    from cli import main as cli_main

    url = "http://127.0.0.1:7071/web/task-1-abc/index.html"
    expiry = ({"runtime_status": "Running", "stage": "waiting", "expires": "2026-12-10T21:18:19+00:00"} if waiting
              else {"runtime_status": "Completed", "stage": "expired", "expires": "2026-12-10T21:18:19+00:00"})

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json"},
                    "previews": {"folder": "task-1-abc", "local_url": url, "expiry": expiry}}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed"}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_download, "blob_service", lambda connection, url: object())
    monkeypatch.setattr(cli_download, "download", lambda *a, **k: [])
    assert cli_main.main(["results", "task-1", "--out", str(tmp_path)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"preview site: {url}" in said
    assert ("taken off the website at 2026-12-10T21:18:19+00:00" in said) is waiting, said


@pytest.mark.parametrize("as_json", [False, True])
def test_repeats_open_prints_the_page_address(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             as_json: bool) -> None:
    """``repeats --open`` over ssh (no browser): xdg-open's "no method available" was all it said, exit 0, and the
    page's address appeared only inside that message. The address is printed, and the page is still opened. With
    ``--json`` it goes to standard error: after the JSON on standard output, a script could no longer parse it."""
    from cli import main as cli_main

    url = "https://site.example/web/task-1-abc/index.html"
    opened: list[str] = []

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"locations": [], "search": "merge"}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"public_url": url}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.click, "launch", lambda target: opened.append(target) or 0)
    assert cli_main.main(["repeats", "task-1", "--open", *(["--json"] if as_json else [])]) == 0
    captured = capsys.readouterr()
    if as_json:
        assert json.loads(captured.out) == {"locations": [], "search": "merge"}
    assert f"preview page: {url}" in (captured.err if as_json else captured.out) and opened == [url]


@pytest.mark.parametrize("as_json", [False, True])
def test_repeats_open_without_a_preview_page_says_why_and_exits_0(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_json: bool) -> None:
    """``repeats --open`` for a task whose pages were deleted or expired exited 4, "the app could not be reached, or
    refused the request", though the app had answered and the listing was shown. It says why there is no page and
    what to do (on standard error: with --json standard output holds the listing alone), opens nothing, exits 0."""
    from api.starters import no_preview_pages
    from cli import main as cli_main

    task = "task-0123456789abcdef0123"
    opened: list[str] = []

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"locations": [], "search": "merge"}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"container": "$web", "error": no_preview_pages(task),
                                 "hint": "the results and exports are unchanged; pages taken off stay off"}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.click, "launch", lambda target: opened.append(target) or 0)
    assert cli_main.main(["repeats", task, "--open", *(["--json"] if as_json else [])]) == 0
    captured = capsys.readouterr()
    if as_json:
        assert json.loads(captured.out) == {"locations": [], "search": "merge"}
    said = " ".join(captured.err.split())
    assert (f"no preview page to open: no preview pages are published for this task: they were deleted (trapbatch "
            f"previews {task} --delete) or expired") in said, said
    assert (f"next: the places are listed above (trapbatch repeats {task}); the results and exports are unchanged; "
            "pages taken off stay off") in said, said
    assert "error" not in said and opened == [], said


def test_the_apps_own_429_and_503_are_shown_at_once_with_its_hint() -> None:
    """An answer with the app's {"error", "hint"} is its decision (too many running tasks, Retry-After 300; an
    instance list too slow to read at 200 s): retrying it 4 times took ~20 minutes before the hint was shown."""
    from cli.errors import CliError

    body = '{"error": "too many running tasks", "hint": "wait for one to end"}'
    for status, headers in ((429, {"Retry-After": "300"}), (503, {})):
        session = _Answers((status, {**headers, "_body": body}))
        client, slept = _client(session)
        with pytest.raises(CliError) as refused:
            client.list()
        assert len(session.sent) == 1 and slept == [] and "too many running tasks" in refused.value.message


def test_a_refusal_that_is_not_the_apps_says_who_refused_and_what_to_check() -> None:
    """A wrong port (Azurite's blob service answers ``GET /api/tasks`` with 400 and XML) said "check the request
    (trapbatch --help)"; a stopped Azure app (App Service's "Error 403 - This web app is stopped.") said the same.
    The app answers every 4xx but 401 with its {"error", "hint"}: one without it is someone else's."""
    from cli.errors import CliError

    for status, body, needle in (
            (400, '<?xml version="1.0"?><Error><Code>InvalidUri</Code></Error>', "is https://app.example the trapbatch"),
            (405, "", "check the port and the path in --url"),
            (403, "<html><h1>Error 403 - This web app is stopped.</h1></html>", "az functionapp start")):
        client, _ = _client(_Answers((status, {"_body": body})))
        with pytest.raises(CliError) as refused:
            client.list()
        assert needle in refused.value.hint and "trapbatch --help" not in refused.value.hint
    body = '{"error": "task task-1 belongs to another caller", "hint": "ask its owner"}'  # the app's own: as it is
    client, _ = _client(_Answers((403, {"_body": body})))
    with pytest.raises(CliError) as theirs:
        client.status("task-1")
    assert "belongs to another caller" in theirs.value.message and theirs.value.hint == "ask its owner"


def test_an_apps_hint_about_this_task_names_its_id_not_a_placeholder(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch repeats ID --keep r00009`` (an id not in the list) said ``next: trapbatch repeats <task id> lists
    ...``: the app's validation does not know the id and writes ``GET /api/tasks/<id>/repeats``, but the CLI sent
    the request about that task: its next line is a command to paste. A hint about no task stays as it is."""
    import cli.main as cli_main
    from cli.client import ApiClient
    from core.errors import TrapbatchError
    from core.requests import parse_repeat_removal

    with pytest.raises(TrapbatchError) as refused:  # the app's own words for the case
        parse_repeat_removal({"keep": ["r00009"]}, ["r00001"])
    body = json.dumps({"error": refused.value.message, "hint": refused.value.hint})
    task = "task-0123456789abcdef0123"
    answers = _Answers((400, {"_body": body}))
    monkeypatch.setattr(cli_main, "ApiClient", lambda config: ApiClient(config, session=answers, sleep=lambda s: None))
    assert main(["--url", "http://127.0.0.1:9", "--key", "k", "repeats", task, "--keep", "r00009"]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert f"next: trapbatch repeats {task} lists" in err and "<task id>" not in err
    client, _ = _client(_Answers((400, {"_body": json.dumps({"error": "bad", "hint": "GET /api/tasks/<id> shows"})})))
    with pytest.raises(CliError) as listed:
        client.list()
    assert listed.value.hint == "GET /api/tasks/<id> shows"


def test_the_apps_own_503_with_retry_after_is_tried_again() -> None:
    """The app's storage or task hub busy (StorageUnavailable, TaskHubUnavailable: 503 with Retry-After 30) asks to
    be asked again: ``status --wait`` or a download ended on the first throttled answer."""
    body = '{"error": "the task hub could not be read", "hint": "retry in a minute"}'
    session = _Answers((503, {"Retry-After": "30", "_body": body}), 200)
    client, slept = _client(session)
    client.list()
    assert len(session.sent) == 2 and slept == [30.0]


def test_a_token_from_the_azure_sign_in_is_not_sent_over_plain_http_either() -> None:
    from cli.client import ApiClient
    from cli.config import Config
    from cli.errors import CliError

    with pytest.raises(CliError, match="plain http"):
        ApiClient(Config(url="http://app.example", auth_client_id="abc"), session=_Answers())  # type: ignore[arg-type]


def test_an_out_folder_that_cannot_be_made_is_said(tmp_path: Path) -> None:
    from cli.download import download
    from cli.errors import CliError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CliError, match="cannot create"):
        download(object(), {"results": {}}, {}, blocker / "out")


def test_an_estimate_says_its_stage_while_it_enumerates(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The enumeration of millions of images takes minutes; the estimate waited without a word until it ended."""
    from cli import main as cli_main

    stages = iter([{"runtime_status": "Running", "stage": "enumerating"},
                   {"runtime_status": "Completed", "stage": "estimated", "estimate": {"images": 12, "shards": 1}}])

    class Client:
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            assert body["dry_run"] is True
            return {"id": "task-0123456789abcdef0123"}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, **next(stages)}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["estimate", "--container", "cams"]) == 0
    said = capsys.readouterr()
    assert [line.split("] ", 1)[1] for line in said.err.splitlines()] == ["enumerating", "estimated"]
    assert "12" in said.out


def test_a_re_render_that_failed_is_exit_1_not_the_unreachable_app_code(monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from cli import main as cli_main

    class Client:
        def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
            return {"id": task_id, "threshold": threshold}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"rerender": {"runtime_status": "Failed", "error": "render_previews failed"}}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["previews", "task-0123456789abcdef0123", "--threshold", "0.3", "--wait"]) == 1
    assert "the re-render ended Failed: render_previews failed" in capsys.readouterr().err


def test_a_rerun_whose_first_post_timed_out_and_started_it_is_followed_not_failed() -> None:
    """The first POST started the re-run but its answer was lost; the POST tried again answered 409 "still running"
    (a re-run is not idempotent), and submit --rerun --wait ended exit 4 without following the task."""
    import requests

    from cli.errors import CliError

    running = (409, {"_body": '{"error": "task task-0123456789abcdef0123 is still running (stage: enumerating); it '
                              'can be run again once it has finished", "hint": "wait"}'})
    session = _Answers(requests.exceptions.ReadTimeout("read timed out"), running)
    client, _ = _client(session)
    answer = client.submit({"container": "c", "rerun": True})
    assert answer["id"] == "task-0123456789abcdef0123" and answer["started"] is True and len(session.sent) == 2
    client, _ = _client(_Answers(running))  # asked once, running before: the app's refusal stands
    with pytest.raises(CliError, match="still running"):
        client.submit({"container": "c", "rerun": True})


def test_an_estimate_made_before_says_when_and_fresh_counts_again(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The same request's estimate is the task that ended: a week later, after more images arrived, it gave the old
    figures without a word."""
    from cli import main as cli_main

    sent: list[dict[str, Any]] = []

    class Client:
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            sent.append(body)
            return {"id": "task-0123456789abcdef0123", "started": bool(body.get("rerun"))}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "runtime_status": "Completed", "stage": "estimated",
                    "finished": "2026-11-28T10:00:00+00:00", "estimate": {"images": 12, "shards": 1}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["estimate", "--container", "cams"]) == 0
    said = capsys.readouterr()
    assert "made before, from the listing of that time (the request: 2026-11-28T10:00:00+00:00)" in said.err
    assert "--fresh" in said.err and "rerun" not in sent[0]
    assert cli_main.main(["estimate", "--container", "cams", "--fresh"]) == 0
    assert sent[1]["rerun"] is True and "made before" not in capsys.readouterr().err


def test_submit_wait_says_which_settings_the_task_found_did_not_take(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from cli import main as cli_main

    class Client:
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"id": "task-0123456789abcdef0123", "started": False, "stage": "completed",
                    "not_applied": ["notify_url"], "hint": "..."}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "runtime_status": "Completed", "stage": "completed", "images": 1}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["submit", "--container", "cams", "--wait", "--plain"]) == 0
    assert "not applied to the task found: notify_url" in capsys.readouterr().err


def test_the_summary_says_a_failed_repeat_search_and_folders_too_large_to_search(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Where the summary shows the repeated places it also shows that the search failed (the results stand) or left
    folders out: silence would read as "no repeats"."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "repeated_detections": {
        "locations": 0, "blob": "", "error": "the repeated-detection search failed: Timeout value exceeded",
        "hint": "run it again: trapbatch repeats task-0 --search"}})
    shown = " ".join(capsys.readouterr().out.split())  # the table wraps its cells at the terminal's width
    assert "NOT searched: the repeated-detection search failed: Timeout value exceeded" in shown
    assert "trapbatch repeats task-0 --search" in shown
    _summary({"id": "task-0", "stage": "completed", "repeated_detections": {
        "locations": 0, "blob": "b", "folders_skipped": 2, "detections_skipped": 1_700_000}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "2 folders too large NOT searched (1700000 eligible detections" in shown


def test_the_summary_says_what_to_do_about_failed_images_in_the_cli_s_words(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The status's ``failures_hint`` (core.failure_advice) is shown, its JSON field as the CLI's flag: a task whose
    every image failed read as "completed_with_errors" and a count."""
    from cli.main import _summary
    from core.failure_advice import failures_hint

    _summary({"id": "task-0", "stage": "completed_with_errors", "images": 4, "failed": 4,
              "failure_reasons": {"timeout": 4}, "failures_hint": failures_hint({"timeout": 4}, 4, 4)})
    shown = " ".join(capsys.readouterr().out.split())
    assert "no image has a result: every one of the 4 failed (timeout 4)" in shown, shown
    assert "posted again with --only-new (a re-run)" in shown, shown


def test_status_and_watch_say_why_shards_wait_out_worker_exits_69_since_until_and_what_to_check(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The status's ``unreachable`` (shards whose workers exited 69, tried again spending no attempt for an hour):
    ``trapbatch status`` and the log lines of ``watch`` say the worker's words, since, until, the next try and what to
    check, not only shards "queued"; the bar's one line says it without the check, its words escaped for rich."""
    from rich.console import Console

    from cli.main import _summary
    from cli.progress import BarReporter

    note = {"shards": 4, "reason": "github.com, the download host of model 'MDV5A', did not answer [errno -3]",
            "since": "2026-12-05T15:00:00+00:00", "until": "2026-12-05T16:00:00+00:00",
            "at": "2026-12-05T15:04:00+00:00", "check": "the pool nodes' outbound network (DNS, firewall)"}
    st = {"id": "task-0", "runtime_status": "Running", "stage": "detecting", "images": 40, "images_done": 0,
          "shards": 4, "shards_done": 0, "shards_running": 0, "shards_queued": 0, "resubmissions": 0,
          "unreachable": note}
    _summary(st)
    shown = " ".join(capsys.readouterr().out.split())
    assert ("unreachable 4 shard(s) wait, the worker could not reach a service (github.com, the download host of "
            "model 'MDV5A', did not answer [errno -3]) since 2026-12-05T15:00:00+00:00; no attempt spent until "
            "2026-12-05T16:00:00+00:00, next try at 2026-12-05T15:04:00+00:00; check the pool nodes' outbound "
            "network (DNS, firewall)") in shown, shown
    line = progress_line(st)
    assert line.startswith("detecting: 0/40 images") and "did not answer [errno -3]) since" in line, line
    assert line.endswith("check the pool nodes' outbound network (DNS, firewall)"), line

    import io

    from rich.text import Text
    bar = BarReporter(Console(file=io.StringIO(), force_terminal=True, width=100), T1)
    bar(st)
    shown_in_bar = Text.from_markup(str(bar.progress.tasks[0].fields["shards"])).plain  # as its TextColumn renders it
    bar.close()
    assert "did not answer [errno -3]) since 2026-12-05T15:00:00+00:00" in shown_in_bar, shown_in_bar
    assert "outbound network" not in shown_in_bar


def test_a_worker_s_control_characters_in_the_unreachable_note_never_reach_the_terminal(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The note's reason is the worker's own log line (a remote service's text can be in it): an ESC sequence, a
    carriage return or a bell from it would drive the operator's terminal (clear it, retitle it, hide the line), so
    ``trapbatch status``, ``watch``'s lines and its bar show such characters escaped (``\\x1b``), never raw."""
    import io

    from rich.console import Console

    from cli.main import _summary
    from cli.progress import BarReporter

    reason = "host did not answer \x1b]0;owned\x07\x1b[2J\rgone\x9b31m\u202e"
    st = {"id": "task-0", "runtime_status": "Running", "stage": "detecting", "images": 40, "images_done": 0,
          "shards": 4, "shards_done": 0, "shards_running": 0, "shards_queued": 0, "resubmissions": 0,
          "unreachable": {"shards": 4, "reason": reason, "since": "2026-12-05T15:00:00+00:00",
                          "until": "2026-12-05T16:00:00+00:00", "check": "the network"}}
    bad = ("\x1b", "\x07", "\r", "\x9b", "\u202e")
    line = progress_line(st)
    assert not any(ch in line for ch in bad), repr(line)
    assert "host did not answer \\x1b]0;owned\\x07\\x1b[2J\\rgone" in line, line
    _summary(st)
    shown = capsys.readouterr().out
    assert "\\x1b]0;owned" in shown and not any(ch in shown for ch in bad), repr(shown)
    out = io.StringIO()
    bar = BarReporter(Console(file=out, force_terminal=False, width=400), T1)
    bar(st)
    bar.close()
    assert "\\x1b]0;owned" in out.getvalue() and "\x1b]0" not in out.getvalue(), repr(out.getvalue())


def test_a_given_up_shard_s_or_a_busy_service_s_words_show_their_control_characters_escaped(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Like the ``unreachable`` note, a given-up shard's reason (the worker's words) and a busy service's words in
    ``waiting`` come from text trapbatch does not write: an ESC sequence in them reaches no terminal."""
    from cli.main import _summary

    given_up = {"count": 1, "examples": [{"shard": "s00001", "attempts": 3, "reason": "exited 1: \x1b[2Jgone"}]}
    _summary({"id": "task-0", "stage": "completed_with_errors", "shards_given_up": given_up})
    shown = capsys.readouterr().out
    assert "exited 1: \\x1b[2Jgone" in shown and "\x1b[2J" not in shown, repr(shown)
    line = progress_line({"stage": "detecting", "waiting": {"step": "poll", "reason": "503 \x1b]0;t\x07",
                                                            "at": "2026-12-05T15:00:00+00:00"}})
    assert "503 \\x1b]0;t\\x07" in line and "\x1b" not in line, repr(line)


def test_a_busy_service_s_words_in_square_brackets_show_as_said_in_the_summary_and_the_bar(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``waiting``'s reason is a service's words: a ``[tag]`` in them (``[errno -3]``) was read as rich markup in
    ``trapbatch status``'s row and ``watch``'s bar, and vanished; escaped as the unreachable note is, it shows."""
    import io

    from rich.console import Console
    from rich.text import Text

    from cli.main import _summary
    from cli.progress import BarReporter

    st = {"id": "task-0", "runtime_status": "Running", "stage": "detecting", "images": 40, "images_done": 0,
          "shards": 4, "shards_done": 0, "shards_running": 0, "shards_queued": 4, "resubmissions": 0,
          "waiting": {"step": "poll", "reason": "ServerBusy [errno -3] [bold]", "at": "2026-12-05T15:00:00+00:00"}}
    _summary(st)
    shown = " ".join(capsys.readouterr().out.split())
    assert "busy service (ServerBusy [errno -3] [bold]): poll tried again" in shown, shown
    bar = BarReporter(Console(file=io.StringIO(), force_terminal=True, width=100), T1)
    bar(st)
    shown_in_bar = Text.from_markup(str(bar.progress.tasks[0].fields["shards"])).plain  # as its TextColumn renders it
    bar.close()
    assert "busy service (ServerBusy [errno -3] [bold]): poll" in shown_in_bar, shown_in_bar


def test_the_summary_says_a_repeat_count_is_the_ended_one_when_the_current_list_could_not_be_read(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A status whose current repeat list could not be read carries the count the task ended with and a ``note``
    (api/repeat_search.py): shown bare, the count read as the current one, even as 0 after a search found places."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "completed", "repeated_detections": {
        "locations": 0, "blob": "b", "note": "the latest repeated-detection search could not be read just now "
                                             "(Timeout): this is the count the task ended with; trapbatch repeats "
                                             "task-0 shows the current list"}})
    shown = " ".join(capsys.readouterr().out.split())
    assert "0 when the task ended; the latest repeated-detection search could not be read just now" in shown
    assert "trapbatch repeats task-0 shows the current list" in shown


def test_the_repeats_search_options_are_shown_as_the_search_flags(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The listing's "list s1: occurrence_threshold 2, iou_threshold 0.9" and --search's "searching again as list s1
    with occurrence_threshold 2, ..." used the API's names: they are the flags of ``repeats --search`` that make the
    list, as the listing's hints give them; an option the CLI has no flag for keeps the app's name."""
    from cli import main as cli_main

    options = {"occurrence_threshold": 2, "iou_threshold": 0.9, "min_suspicious_detection_size": 0.0,
               "max_folder_detections": 800000, "new_option": 1}
    flags = ("--occurrence-threshold 2 --iou-threshold 0.9 --min-suspicious-detection-size 0.0 "
             "--max-folder-detections 800000 new_option 1")

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": [], "search": "s1", "search_options": options, "removal": None,
                    "searching": None}

        def search_repeats(self, task_id: str, given: dict[str, Any]) -> dict[str, Any]:
            return {"id": task_id, "search": "s2", "options": options}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["repeats", "task-0123456789abcdef0123"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"list s1: {flags}" in shown and "occurrence_threshold" not in shown, shown
    assert cli_main.main(["repeats", "task-0123456789abcdef0123", "--search", "--occurrence-threshold", "2"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"searching again as list s2 with {flags}" in shown and "occurrence_threshold" not in shown, shown


def test_the_repeats_listing_names_the_folders_not_searched_and_sends_the_folder_cap(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import main as cli_main

    sent: list[dict[str, Any]] = []

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": [], "search": "merge", "search_options": {"occurrence_threshold": 20},
                    "skipped_folders": {"folders": 101, "detections": 90_000_000, "more": 100,
                                        "listed": [{"folder": "[cam]/a", "detections": 900_000}],
                                        "hint": "search again: --max-folder-detections 900000"},
                    "removal": None, "searching": None}

        def search_repeats(self, task_id: str, options: dict[str, Any]) -> dict[str, Any]:
            sent.append(options)
            return {"id": task_id, "search": "s1", "options": options}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["repeats", "task-0123456789abcdef0123"]) == 0
    shown = capsys.readouterr().out
    assert "NOT searched: 101 folders (90000000 eligible detections): [cam]/a (900000) and 100 more" in shown
    assert "--max-folder-detections 900000" in shown
    assert cli_main.main(["repeats", "task-0123456789abcdef0123", "--search", "--max-folder-detections",
                          "2000000"]) == 0
    assert sent == [{"max_folder_detections": 2_000_000}]


AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzF"
           "T50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
NOT_BLOB_ENDPOINTS = ["https://evil.example.com/trapbatch/results/task-1/detections.json",
                      "http://acct.blob.core.windows.net/trapbatch", "https://acct.blob.core.windows.net.evil.example.com",
                      "https://evil.example.com/acct.blob.core.windows.net", "https://acct.evil.blob.core.windows.net",
                      "https://acct.file.core.windows.net", "https://127.0.0.1:10000/devstoreaccount1",
                      "http://127.0.0.1:10000/devstoreaccount1/trapbatch", "https://[::1", "acct.blob.core.windows.net",
                      "https://acct.z123.blob.storage.azure.net", "https://acct.z01.blob.storage.azure.net.evil.com",
                      "http://acct.z01.blob.storage.azure.net", "https://x.acct.z01.blob.storage.azure.net"]


@pytest.fixture
def sign_in(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The Azure sign-in and the blob clients made (``credentials``, ``clients``): none asks for a token or sends
    anything."""
    import azure.identity
    import azure.storage.blob

    made: dict[str, list[Any]] = {"credentials": [], "clients": []}
    real = azure.storage.blob.BlobServiceClient

    class Credential:
        def __init__(self, **kw: Any) -> None:
            made["credentials"].append(self)

        def get_token(self, *scopes: str, **kw: Any) -> Any:
            raise AssertionError("no token is asked for in these tests")

    class Client(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **kw: Any) -> None:
            made["clients"].append(self)
            super().__init__(*a, **kw)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Credential)
    monkeypatch.setattr(azure.storage.blob, "BlobServiceClient", Client)
    return made


@pytest.mark.parametrize("url", NOT_BLOB_ENDPOINTS)
def test_the_azure_sign_in_goes_to_no_host_the_app_names_that_is_no_blob_endpoint(
        url: str, sign_in: dict[str, list[Any]]) -> None:
    """The results' ``url`` and the images' ``account_url`` come from the app's answer: a wrong or hostile
    TRAPBATCH_URL named any host, and received a storage token good on every account the user may read."""
    from cli.download import blob_service
    from cli.zooniverse_upload import source_service

    with pytest.raises(CliError) as results:
        blob_service("", url)
    assert "refusing to send your Azure sign-in" in results.value.message and "/results/" not in results.value.message
    assert "TRAPBATCH_URL" in results.value.hint and "--storage-connection" in results.value.hint
    with pytest.raises(CliError) as images:
        source_service("", object(), url)
    assert "images' storage account" in images.value.message and "--source-connection" in images.value.hint
    assert sign_in == {"credentials": [], "clients": []}


@pytest.mark.parametrize("url", ["https://acct.blob.core.windows.net/trapbatch/results/task-1/detections.json",
                                 "https://ACCT.blob.core.windows.net", "https://acct-secondary.blob.core.windows.net/",
                                 "https://acct.blob.core.usgovcloudapi.net/x", "https://acct.blob.core.chinacloudapi.cn",
                                 "https://acct.z07.blob.storage.azure.net/trapbatch/x"])
def test_an_azure_storage_blob_endpoint_gets_the_sign_in(url: str, sign_in: dict[str, list[Any]]) -> None:
    from cli.download import blob_service
    from cli.zooniverse_upload import source_service

    host = url.split("/")[2].lower()
    made = [blob_service("", url), source_service("", object(), url)]
    assert [service.url for service in made] == [f"https://{host}/"] * 2
    assert [service.credential for service in made] == sign_in["credentials"] and len(sign_in["credentials"]) == 2


def test_a_connection_string_is_used_as_it_is_whatever_the_app_names(sign_in: dict[str, list[Any]]) -> None:
    """The demo and devhost read Azurite (http on a loopback host) with its connection string; the images' account
    too, given --source-connection: no sign-in is made."""
    from cli.download import blob_service
    from cli.zooniverse_upload import source_service

    results = blob_service(AZURITE, "http://127.0.0.1:10000/devstoreaccount1/trapbatch/results/t/detections.json")
    images = source_service(AZURITE, results, "https://evil.example.com")
    assert results.url.startswith("http://127.0.0.1:10000/devstoreaccount1") and images.url == results.url
    assert sign_in["credentials"] == []


@pytest.mark.parametrize("command", ["results", "zooniverse"])
def test_a_command_whose_app_names_another_host_stops_before_anything_is_sent(
        command: str, sign_in: dict[str, list[Any]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``trapbatch results`` / ``zooniverse`` with no connection string: the app's answer names
    https://evil.example.com for the results (and the images): refused, exit 4, no credential, no client."""
    from cli import main as cli_main

    evil = "https://evil.example.com/trapbatch/results/task-1/detections.json"

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json", "url": evil,
                                "files": {"original": {"exports": {
                                    "zooniverse/batch-001.csv": "results/task-1/exports/zooniverse/batch-001.csv"}}}},
                    "source": {"container": "cams", "account_url": "https://evil.example.com"}}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed"}

    for var in ("TRAPBATCH_STORAGE_CONNECTION", "TRAPBATCH_SOURCE_CONNECTION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRAPBATCH_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main([command, "task-1", "--out", str(tmp_path / "out")]) == 4
    assert "refusing to send your Azure sign-in to https://evil.example.com" in capsys.readouterr().err
    assert sign_in == {"credentials": [], "clients": []} and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the app's address (cli/config.py check_url)
@pytest.mark.parametrize("url,said,next_line", [
    ("127.0.0.1:7071", "has no http:// or https://", "pass --url http://127.0.0.1:7071 "),
    ("localhost:7071/api", "has no http:// or https://", "pass --url http://localhost:7071 "),
    ("func-x.azurewebsites.net", "has no http:// or https://", "pass --url https://func-x.azurewebsites.net "),
    ("http://127.0.0.1:7071/api", "ends in /api", "drop it: pass --url http://127.0.0.1:7071"),
    ("https://func-x.azurewebsites.net/api/", "ends in /api", "drop it: pass --url https://func-x.azurewebsites.net"),
    ("https://func-x.azurewebsites.net/x?y=1", "has a query", "pass --url https://func-x.azurewebsites.net/x"),
    ("https://gw.example.org/trapbatch/api", "ends in /api", "pass --url https://gw.example.org/trapbatch"),
    ("ftp://func-x", "is not http:// or https://", "https://<app>.azurewebsites.net"),
    ("http://127.0.0.1:99999", "names no host", "http://127.0.0.1:7071 for devhost"),
    ("https://me:secret@func-x.azurewebsites.net", "user name or password", "pass --url https://func-x.azure")])
def test_an_address_that_is_no_apps_is_refused_before_anything_is_sent(url: str, said: str, next_line: str) -> None:
    """``--url 127.0.0.1:7071`` (no http://) was tried 5 times over 52 s, each an InvalidSchema, and the next: line
    never said what to write; ``.../api`` came back as ``no function serves GET /api/api/tasks``."""
    from cli.errors import EXIT_USAGE

    session = _Answers()
    with pytest.raises(CliError) as refused:
        _client(session, url=url)
    assert said in refused.value.message and next_line in refused.value.hint, refused.value
    assert refused.value.exit_code == EXIT_USAGE and session.sent == [] and "secret" not in str(refused.value.message)


def test_an_address_with_a_path_in_front_of_the_api_is_a_gateways_and_is_kept() -> None:
    """API Management, Front Door or a reverse proxy may route the app by a path (the CLI appends /api/...): such an
    address worked before the address check, which refused it as having a path."""
    from cli.config import check_url

    assert check_url("https://gw.example.org/trapbatch/") == "https://gw.example.org/trapbatch"
    assert check_url("https://func-x.azurewebsites.net/") == "https://func-x.azurewebsites.net"
    assert check_url("http://[::1]:7071") == "http://[::1]:7071"


def test_the_address_check_says_where_the_address_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('url = "127.0.0.1:7071"\n')
    monkeypatch.setenv("TRAPBATCH_CONFIG", str(path))
    monkeypatch.delenv("TRAPBATCH_URL", raising=False)
    assert main(["list"]) == 2
    assert f'next: write url = "http://127.0.0.1:7071" in {path}' in capsys.readouterr().err
    monkeypatch.setenv("TRAPBATCH_URL", "http://127.0.0.1:7071/api")
    assert main(["list"]) == 2
    assert "next: drop it: set TRAPBATCH_URL=http://127.0.0.1:7071" in capsys.readouterr().err
    # a script checking the setup with trapbatch config read exit 0 though no command could use the address
    assert main(["config"]) == 2
    assert "url NOT usable" in capsys.readouterr().out
    monkeypatch.setenv("TRAPBATCH_URL", "http://127.0.0.1:7071")
    assert main(["config"]) == 0


@pytest.mark.parametrize("name", ["InvalidSchema", "MissingSchema", "InvalidURL", "InvalidHeader"])
def test_a_request_that_requests_refuses_is_not_tried_again(name: str) -> None:
    import requests

    session = _Answers(getattr(requests.exceptions, name)("no"))
    client, slept = _client(session)
    with pytest.raises(CliError, match=name) as failed:
        client.status("task-1")
    assert len(session.sent) == 1 and slept == [] and "https://<app>.azurewebsites.net" in failed.value.hint


def test_a_refused_connection_fails_at_once_on_this_machine_and_is_tried_again_for_a_remote_app() -> None:
    """Nothing listening at a devhost's address waited 52 s before saying so; a cold Azure app may refuse briefly."""
    import requests

    from devhost.azurite import PortReservation

    with PortReservation(1) as held:  # nothing listens there, and no other worker's Azurite is handed the port
        nowhere = f"http://127.0.0.1:{held.ports[0]}"
        local, slept = _client(requests.Session(), url=nowhere)  # type: ignore[arg-type]
        with pytest.raises(CliError) as refused:
            local.list()
        assert slept == [] and "nothing is listening" in refused.value.message
        assert "is devhost running? python -m devhost --with-azurite" in refused.value.hint
        try:
            requests.get(nowhere + "/", timeout=5)
        except requests.exceptions.ConnectionError as exc:
            seen = exc
    session = _Answers(*[seen] * 5)
    remote, slept = _client(session)
    with pytest.raises(CliError, match="cannot reach https://app.example"):
        remote.status("task-1")
    assert len(session.sent) == 5 and slept == [2.0, 5.0, 15.0, 30.0]


def _dns_failure(code: int) -> Exception:
    """What requests raises when the resolver answers ``code``: urllib3's ``NameResolutionError`` from the
    ``socket.gaierror``, in ``MaxRetryError.reason``, in requests' ``ConnectionError``."""
    import socket

    import requests
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    try:
        try:
            raise socket.gaierror(code, "Name or service not known")
        except socket.gaierror as gai:
            raise NameResolutionError("trapbatch-typo.azurewebsites.net", None, gai) from gai  # type: ignore[arg-type]
    except NameResolutionError as failed:
        return requests.exceptions.ConnectionError(MaxRetryError(None, "/api/tasks", failed))  # type: ignore[arg-type]


def test_a_host_dns_does_not_know_fails_at_once_and_a_resolver_that_cannot_answer_now_is_tried_again() -> None:
    """A typo in the app's host name (NXDOMAIN) was tried 5 times over 52 s, then said "cannot reach ...
    (ConnectionError)": no wait heals it, and the message did not say the name was unknown."""
    import socket

    session = _Answers(_dns_failure(socket.EAI_NONAME))
    client, slept = _client(session)
    with pytest.raises(CliError) as unknown:
        client.list()
    assert len(session.sent) == 1 and slept == []
    assert "DNS knows no host app.example" in unknown.value.message and "check the host name" in unknown.value.hint
    session = _Answers(_dns_failure(socket.EAI_AGAIN), 200)  # "temporary failure in name resolution"
    client, slept = _client(session)
    client.list()
    assert len(session.sent) == 2 and slept == [2.0]


def test_an_https_address_of_a_plain_http_server_says_to_use_http() -> None:
    """``https://`` to a local devhost (plain http) said "TLS with ... failed: SSLError" and "check the address":
    now which scheme the server speaks, and the address to use."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import requests

    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # answers every request 501, in plain http
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client, slept = _client(requests.Session(), url=f"https://127.0.0.1:{server.server_port}")  # type: ignore[arg-type]
        with pytest.raises(CliError) as plain:
            client.list()
    finally:
        server.shutdown()
    assert "does not speak https: its server answered in plain http" in plain.value.message and slept == []
    assert f"use http://127.0.0.1:{server.server_port}" in plain.value.hint


# ------------------------------------------------------------------ --folder: one folder's failure hides no other's
def _blob_service(blobs: dict[str, bytes]) -> Any:
    """A stand-in BlobServiceClient whose blobs are ``blobs`` (name -> bytes; the container is not told apart): the
    properties and one-read download the CLI's fetch uses."""

    class Service:
        def get_blob_client(self, container: str, name: str) -> Any:
            data = blobs[name]
            props = type("Props", (), {"etag": '"e"', "size": len(data)})()
            left = [data]
            down = type("Down", (), {"properties": props, "size": len(data),
                                     "read": lambda self, n: left.pop() if left else b""})()
            return type("Blob", (), {"get_blob_properties": lambda self: props,
                                     "download_blob": lambda self, **kw: down})()

    return Service


class _FolderClient:
    """An app whose estimate or task of folder ``fails`` ends failed, and whose POST of folder ``refuses`` is
    refused (429)."""

    def __init__(self, fails: str = "", refuses: str = "") -> None:
        self.fails, self.refuses, self.posted = fails, refuses, []  # type: ignore[var-annotated]

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        folder = body["prefix"].rstrip("/").rsplit("/", 1)[-1]
        self.posted.append(folder)
        if folder == self.refuses:
            raise CliError("POST /api/tasks answered 429: too many running tasks", "wait for one to finish")
        return {"id": f"task-{len(self.posted):020d}", "started": True, "folder": folder}

    def status(self, task_id: str) -> dict[str, Any]:
        folder = self.posted[int(task_id[5:]) - 1]
        if folder == self.fails:
            return {"id": task_id, "runtime_status": "Completed", "stage": "failed", "error": "no images found"}
        return {"id": task_id, "runtime_status": "Completed", "stage": "estimated", "images": 7,
                "estimate": {"images": 7, "shards": 1}}


def test_an_estimate_per_folder_prints_each_folders_figures_and_each_failure_with_its_folder(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """camera-09's estimate failed and camera-01's, which succeeded, was never printed (exit 1 with camera-09's
    error alone)."""
    from cli import main as cli_main

    client = _FolderClient(fails="camera-09")
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["estimate", "--container", "traps", "--prefix", "2024/site-a/", "--folder", "camera-01", "--folder",
            "camera-09"]
    assert cli_main.main(args) == 1
    said = capsys.readouterr()
    assert said.out.startswith("folder camera-01\nestimate\n") and " images             7 " in said.out
    assert "folder camera-09: the estimate of folder camera-09 ended failed: no images found" in said.err
    assert "trapbatch status task-00000000000000000002" in said.err
    client.posted.clear()
    assert cli_main.main([*args, "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)
    assert [(e["folder"], e.get("images"), e.get("exit_code")) for e in listed] == [("camera-01", 7, None),
                                                                                   ("camera-09", None, 1)]


@pytest.mark.parametrize("fails,refuses,code,has_id", [("camera-01", "", 1, True), ("", "camera-01", 4, False)])
def test_a_single_estimates_failure_with_json_prints_the_same_json_error_as_a_folders(
        fails: str, refuses: str, code: int, has_id: bool, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --json`` whose one estimate failed (or was refused) printed nothing on standard output, only the
    error on standard error: a script reading the JSON got none, though ``--folder`` lists such a failure in it."""
    from cli import main as cli_main

    client = _FolderClient(fails=fails, refuses=refuses)
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    assert cli_main.main(["estimate", "--container", "traps", "--prefix", "2024/camera-01/", "--json"]) == code
    said = capsys.readouterr()
    failure = json.loads(said.out)  # an object, as the estimate's own JSON is
    assert failure["exit_code"] == code and failure["error"] and failure["hint"] and "folder" not in failure
    assert (failure.get("id") == "task-00000000000000000001") is has_id
    assert failure["error"] in " ".join(said.err.split()) and "next:" in said.err  # standard error says it too
    assert cli_main.main(["estimate", "--container", "traps", "--prefix", "2024/camera-01/"]) == code
    assert capsys.readouterr().out == ""  # without --json, nothing on standard output, as before


def test_submit_per_folder_names_every_task_started_when_a_folders_request_is_refused(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import main as cli_main

    client = _FolderClient(refuses="b")
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c"]
    assert cli_main.main([*args, "--json"]) == 4
    listed = json.loads(capsys.readouterr().out)
    assert [(e["folder"], e.get("id")) for e in listed] == [("a", "task-00000000000000000001"), ("b", None),
                                                             ("c", None)]
    assert "429" in listed[1]["error"] and listed[2]["error"].startswith("not sent") and client.posted == ["a", "b"]
    client.posted.clear()
    assert cli_main.main([*args, "--wait", "--plain"]) == 4  # a's task followed to its end; b's refusal said
    said = capsys.readouterr()
    assert "task task-00000000000000000001 for folder a: started" in said.out and "folder a" in said.out
    assert "folder b: POST /api/tasks answered 429" in said.err and "folder c: not sent" in said.err


def test_submit_per_folder_wait_says_each_folder_before_its_progress_lines(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With --plain, a folder's progress lines came before its ``folder X`` header, so they read as the folder
    before's; with --json (progress on standard error) no line said whose they were."""
    from cli import main as cli_main

    client = _FolderClient()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--wait", "--plain"]
    assert cli_main.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    said = [line for line in lines if line.startswith(("folder ", "["))]  # the headers and the progress lines
    assert [line if line.startswith("folder") else "progress" for line in said] == [
        "folder a", "progress", "folder b", "progress"], lines
    client.posted.clear()
    assert cli_main.main([*args, "--json"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line if line.startswith("folder") else "progress" for line in err
            if line.startswith(("folder ", "["))] == ["folder a", "progress", "folder b", "progress"], err


def test_results_run_again_says_unchanged_for_the_files_it_did_not_download_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A second ``trapbatch results`` printed ``wrote`` for every file though none was fetched (their ETags kept)."""
    from cli import download as cli_download
    from cli import main as cli_main

    blobs = {"results/task-1/detections.json": b'{"images": []}', "results/task-1/detections.csv": b"file\n",
             "previews/task-1/index.html": b"<html>"}
    fetched: list[str] = []

    class Service:
        def get_blob_client(self, container: str, name: str) -> Any:
            data = blobs[name]
            props = type("Props", (), {"etag": f'"{hash(data)}"', "size": len(data)})()

            class Blob:
                def get_blob_properties(self) -> Any:
                    return props

                def download_blob(self, **kw: Any) -> Any:
                    fetched.append(name)
                    left = [data]
                    return type("Down", (), {"properties": props, "size": len(data),
                                             "read": lambda self, n: left.pop() if left else b""})()

            return Blob()

        def get_container_client(self, container: str) -> Any:
            names = [type("B", (), {"name": n})() for n in blobs if n.startswith("previews/")]
            return type("C", (), {"list_blobs": lambda self, name_starts_with: names})()

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json",
                                "csv": "results/task-1/detections.csv"},
                    "previews": {"container": "$web", "folder": "previews/task-1"}}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed"}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_download, "blob_service", lambda connection, url: Service())
    args = ["results", "task-1", "--out", str(tmp_path), "--previews"]
    assert cli_main.main(args) == 0
    first = capsys.readouterr().out
    assert f"wrote {tmp_path / 'detections.json'}\n" in first and f"wrote {tmp_path / 'previews'}/" in first
    assert len(fetched) == 3
    assert cli_main.main(args) == 0
    again = capsys.readouterr().out
    assert len(fetched) == 3 and "wrote" not in again
    assert f"unchanged {tmp_path / 'detections.json'}\n" in again
    assert f"unchanged {tmp_path / 'detections.csv'}\n" in again
    assert f"unchanged {tmp_path / 'previews'}/ (open" in again


def test_deleted_preview_pages_are_said_with_the_clis_own_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``results --previews`` of a task whose pages were deleted printed "deleted (DELETE .../previews)": HTTP words
    for a command the CLI has. The re-render's 409 says it the same way (``api.starters.previews_gone``)."""
    from api.starters import no_preview_pages, previews_gone
    from cli import download as cli_download
    from cli import main as cli_main

    task = "task-0123456789abcdef0123"
    blobs = {f"results/{task}/detections.json": b'{"images": []}'}

    Service = _blob_service(blobs)

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": f"results/{task}/detections.json"},
                    "previews": {"container": "$web", "error": no_preview_pages(task)}}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed"}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_download, "blob_service", lambda connection, url: Service())
    # the pages an earlier download of this task wrote (before they were deleted) are said to be its own pages, no
    # longer published: they were named "not this task's (now)", to be kept apart in an empty --out folder
    record = cli_download.FetchedEtags(tmp_path)
    for name in ("index.html", "thumbs/1.jpg"):
        (tmp_path / "previews" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "previews" / name).write_text("page")
        record.record(tmp_path / "previews" / name, f"$web/{task}-0123abcd/{name}", '"0x1"')
    record.record(tmp_path / "previews" / "other.html", "$web/task-ffff-0123abcd/index.html", '"0x1"')
    (tmp_path / "previews" / "other.html").write_text("another task's page")
    record.save()
    assert cli_main.main(["results", task, "--out", str(tmp_path), "--previews"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"they were deleted (trapbatch previews {task} --delete) or expired" in said and "DELETE" not in said
    # the field as the flag that sets it, as `repeats --open` says the same words: it said "(previews_expire_days)"
    assert "expired (--previews-expire-days)" in said and "previews_expire_days" not in said, said
    assert f"2 files under {tmp_path / 'previews'} are task {task}'s preview pages from an earlier download, no " \
           "longer published" in said, said
    assert f"1 file in {tmp_path} from an earlier download, not this task's (now): previews/other.html" in said, said
    assert cli_main.in_cli_words(previews_gone(task)).startswith(
        f"they were deleted (trapbatch previews {task} --delete)")


def test_a_replaced_generations_files_are_said_to_be_the_tasks_own(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``results --out DIR`` of a task re-run with --only-new, into the folder of its first run's download: that
    run's CSV at another threshold (a re-render's) was called "not this task's (now)", as if another task's. It is
    the task's own, from the run the re-run replaced; another task's file is still said to be not this task's."""
    from cli import download as cli_download
    from cli import main as cli_main

    task, run = "task-0123456789abcdef0123", "r000000000001abcd"
    blobs = {f"results/{task}/runs/{run}/detections.json": b'{"images": []}'}

    Service = _blob_service(blobs)

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": f"results/{task}/runs/{run}/detections.json"}}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed"}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_download, "blob_service", lambda connection, url: Service())
    record = cli_download.FetchedEtags(tmp_path)
    earlier = {"detections.threshold-0.35.csv": f"trapbatch/results/{task}/detections.threshold-0.35.csv",
               "exports/coco.json": "trapbatch/results/task-ffffffffffffffffffff/exports/coco.json"}
    for path, blob in earlier.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("earlier")
        record.record(tmp_path / path, blob, '"0x1"')
    record.save()
    assert cli_main.main(["results", task, "--out", str(tmp_path)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert f"1 file in {tmp_path} from an earlier download is task {task}'s own, from its first run, which a " \
           f"re-run replaced (these results are its re-run {run}'s): detections.threshold-0.35.csv" in said, said
    assert f"1 file in {tmp_path} from an earlier download, not this task's (now): exports/coco.json;" in said, said
    assert "detections.threshold-0.35.csv;" not in said.split("not this task's")[1]


def test_blob_generation_reads_the_generation_of_a_tasks_results_and_pages() -> None:
    from cli.download import blob_generation

    task, run = "task-0123456789abcdef0123", "r000000000001abcd"
    assert blob_generation(f"trapbatch/results/{task}/detections.csv", task) == ""
    assert blob_generation(f"trapbatch/results/{task}/exports/coco.json", task) == ""
    assert blob_generation(f"trapbatch/results/{task}/runs/{run}/exports/coco.json", task) == run
    assert blob_generation(f"$web/{task}-0123abcd/index.html", task) == ""
    assert blob_generation(f"$web/{task}-runs-{run}-0123abcd/thumbs/1.jpg", task) == run
    assert blob_generation("trapbatch/results/task-ffffffffffffffffffff/detections.csv", task) is None
    assert blob_generation("$web/task-ffffffffffffffffffff-0123abcd/index.html", task) is None
    assert blob_generation("", task) is None


# ------------------------------------------------------------------ the app's hints in the CLI's words (cli/hints.py)
T1 = "task-0123456789abcdef0123"


@pytest.mark.parametrize("hint,shown", [
    (f"it waits for confirmation: POST /api/tasks/{T1}/confirm (or cancel it)",
     f"it waits for confirmation: trapbatch confirm {T1} (or cancel it)"),
    (f"poll GET /api/tasks/{T1} until its stage is 'completed'",
     f"follow it with trapbatch watch {T1} until its stage is 'completed'"),
    ("check the id, or start the task with POST /api/tasks", "check the id, or start the task with trapbatch submit"),
    ("e.g. \"threshold\": 0.2 (MegaDetector v5's typical threshold)",
     "e.g. --threshold 0.2 (MegaDetector v5's typical threshold)"),
    (f"wait until GET /api/tasks/{T1} shows it finished, or POST /api/tasks/{T1}/cancel it, then post the request "
     "with \"rerun\" again", f"wait until trapbatch status {T1} shows it finished, or cancel it with trapbatch "
     f"cancel {T1}, then submit the request with --rerun again"),
    # a refused notify_url: no task exists yet, so there is no id to watch; submit --wait follows the task it starts
    ("leave 'notify_url' out and poll GET /api/tasks/{id}", "leave --notify-url out and follow the task with "
     "trapbatch submit --wait (trapbatch estimate waits for its own)"),
    # an estimate's results: the CLI's user never wrote "dry_run", they ran trapbatch estimate
    ('this was an estimate ("dry_run": true), which runs nothing: post the request without dry_run',
     "this was an estimate (trapbatch estimate), which runs nothing: run the same request with trapbatch submit "
     "instead of trapbatch estimate"),
    ("e.g. GET /api/tasks?limit=20", "e.g. trapbatch list --limit 20"),
    (f"run it again: trapbatch repeats {T1} --search (POST /api/tasks/{T1}/repeats/search)",
     f"run it again: trapbatch repeats {T1} --search"),
    (f"wait until it completed (GET http://127.0.0.1:7071/api/tasks/{T1}/repeats), then retry",
     f"wait until it completed (trapbatch repeats {T1}), then retry"),
    ('send e.g. {"occurrence_threshold": 10, "iou_threshold": 0.85}, or {} for the defaults',
     "send e.g. --occurrence-threshold 10 --iou-threshold 0.85, or {} for the defaults"),
    ('to run it again, post it with "rerun": true (or "only_new": true for new or changed images only)',
     "to run it again, submit it with --rerun (or --only-new for new or changed images only)"),
    ('e.g. "request_name": "season 2"; e.g. "prefix": "2024/site-a/"', "e.g. --name 'season 2'; e.g. --prefix "
     "2024/site-a/"),
    (f"GET /api/tasks/{T1}/repeats, choose from its list and send its 'search' ('s20261206T044031Z-bdeefa') with "
     "the choice", f"trapbatch repeats {T1}, choose from its list and send its --list ('s20261206T044031Z-bdeefa') "
     "with the choice"),  # a removal's "search" is repeats' --list
    # what the CLI has no command or flag for stays as the app wrote it
    ('e.g. {"site-a/cam-3": 3600}, "clock_corrections": 3, DELETE /runtime/webhooks/durabletask/instances',
     'e.g. {"site-a/cam-3": 3600}, "clock_corrections": 3, DELETE /runtime/webhooks/durabletask/instances'),
    # a repeat choice: the command, then the choice's fields as its flags
    (f"POST /api/tasks/{T1}/repeats {{\"remove\": \"all\"}}", f"trapbatch repeats {T1} --remove all"),
    # a query the CLI has no flag for (api.after_task's zip rebuild): it read "trapbatch results <id>?zip=rebuild"
    (f"GET /api/tasks/{T1}/results?zip=rebuild builds it again", f"GET /api/tasks/{T1}/results?zip=rebuild builds it "
     "again"),
    (f"is it GET /api/tasks/{T1}?", f"is it trapbatch status {T1}?"),  # a question mark is no query
    (f"then terminate it (POST /api/tasks/{T1}/terminate) and, once its stage is 'terminated', post the same "
     "request again", f"then terminate it (trapbatch terminate {T1}) and, once its stage is 'terminated', submit "
     "the same request again"),
])
def test_the_apps_hints_are_shown_as_the_clis_commands_and_flags(hint: str, shown: str) -> None:
    from cli.main import in_cli_words

    assert in_cli_words(hint) == shown


def test_an_estimates_results_asked_for_say_next_with_the_clis_commands_not_dry_run() -> None:
    """``trapbatch results <an estimate's id>`` said "submit the request without dry_run": the app's words (its
    hint for an estimate, api.starters), a field the CLI's user never wrote."""
    from api.starters import _no_results_hint
    from cli.main import in_cli_words

    shown = in_cli_words(_no_results_hint(T1, {"runtime_status": "Completed", "stage": "estimated"}))
    assert "dry_run" not in shown and "trapbatch submit instead of trapbatch estimate" in shown, shown


def test_an_error_from_the_app_says_next_in_the_clis_words_and_the_clis_own_hints_stay(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``next: check the id, or start the task with POST /api/tasks`` told a CLI user to write HTTP by hand."""
    from cli import main as cli_main

    body = json.dumps({"error": f"no task {T1}", "hint": "check the id, or start the task with POST /api/tasks"})
    session = _Answers((404, {"_body": body}))
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: _client(session)[0]))
    assert cli_main.main(["status", T1]) == 4
    said = capsys.readouterr().err
    assert "GET /api/tasks/task-0123456789abcdef0123 answered 404: no task" in said  # what was asked stays
    assert "next: check the id, or start the task with trapbatch submit\n" in said
    assert cli_main.main(["previews", T1, "--threshold", "1.5"]) == 2  # the app's validation, run here
    assert "next: e.g. --threshold 0.2" in capsys.readouterr().err
    request = tmp_path / "request.json"
    request.write_text("[1]")
    assert cli_main.main(["submit", str(request)]) == 2  # the CLI's own hint is about the file: JSON it stays
    assert 'next: write a JSON object, e.g. {"container": "my-camera-traps"}' in capsys.readouterr().err


def test_an_error_and_its_next_line_are_printed_as_they_are_written(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Printed as rich markup, ``[cam]`` (a folder) and ``["r00001"]`` (an example) vanished from the lines."""
    from cli import main as cli_main

    def refuse(self: Any) -> Any:
        raise CliError("folder [cam]/a is too large", 'e.g. --keep [r00001]')

    monkeypatch.setattr(cli_main.State, "client", property(refuse))
    assert cli_main.main(["status", T1]) == 4
    assert "error: folder [cam]/a is too large\nnext: e.g. --keep [r00001]\n" in capsys.readouterr().err


def test_confirm_wait_does_not_say_the_task_waits_for_the_confirmation_it_just_sent(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The first progress line after ``confirm --wait`` said "nothing runs until 'trapbatch confirm ...'": the task's
    status still waits for a moment after the confirmation is sent. Nor does a progress bar say it."""
    import functools
    import io

    from rich.console import Console

    from cli import main as cli_main
    from cli.progress import BarReporter

    statuses = [{"id": T1, "stage": s, "runtime_status": r, "images": 12000} for s, r in (
        ("awaiting_confirmation", "Running"), ("detecting", "Running"), ("completed", "Completed"))]

    class Client:
        def confirm(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "confirmed": True, "hint": "its shards go to the pool now"}

        def status(self, task_id: str) -> dict[str, Any]:
            return statuses.pop(0)

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main, "wait_for", functools.partial(wait_for, sleep=lambda s: None))
    assert cli_main.main(["confirm", T1, "--wait", "--plain"]) == 0
    shown = capsys.readouterr().out
    assert "nothing runs until" not in shown and "confirmed: 12000 images go to the pool" in shown
    screen = io.StringIO()
    bar = BarReporter(Console(file=screen, force_terminal=True, width=100), T1)
    bar({"id": T1, "stage": "awaiting_confirmation", "runtime_status": "Running", "images": 12000, "confirmed": True})
    bar.close()
    assert "nothing runs until" not in screen.getvalue() and "confirmed" in screen.getvalue()


def test_the_progress_bar_stays_full_after_detection_instead_of_falling_back_to_zero() -> None:
    """Watched in a terminal, a task at 50/60 images went on to "merging  0/60" (the merging status counts no
    images), which looks as if its detections were lost, until "completed 60/60"."""
    import io

    from rich.console import Console

    from cli.progress import BarReporter

    bar = BarReporter(Console(file=io.StringIO(), force_terminal=True, width=100), T1)
    bar({"id": T1, "stage": "detecting", "runtime_status": "Running", "images": 60, "images_done": 50, "shards": 6})
    assert bar.progress.tasks[0].completed == 50
    for stage in ("merging", "publishing"):
        bar({"id": T1, "stage": stage, "runtime_status": "Running", "images": 60, "shards": 6})
        assert bar.progress.tasks[0].completed == 60, stage
    bar.close()


@pytest.mark.parametrize("stage", ["completed", "completed_with_errors"])
def test_list_shows_when_a_task_was_created_compactly_on_its_rows_line(
        stage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """At 80 columns the full ISO time wrapped onto 3 lines; with a 21-letter stage there was no room for the name."""
    import cli.main as cli_main

    names = ["camera traps of the northern ridge, season 2024", "season: cam0"]
    rows = [{"id": f"task-{i:020x}", "request_name": name, "stage": stage, "images": 123456,
             "created": "2026-12-03T18:31:37.123456+01:00"} for i, name in enumerate(names)]

    class Lister:
        def __init__(self, config: Any) -> None:
            pass

        def list(self, limit: int) -> dict[str, Any]:
            return {"tasks": rows, "total": 2}

    monkeypatch.setattr(cli_main, "ApiClient", Lister)
    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=80, highlight=False, soft_wrap=True))
    assert main(["--url", "http://127.0.0.1:9", "--key", "k", "list"]) == 0
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    for row in rows:
        [line] = [line for line in lines if row["id"] in line]
        assert line.endswith(f"{stage}  123456  2026-12-03 17:31Z") and len(line) <= 80, line
    shown = " ".join(lines).split()  # the name wraps in its column, or under its id
    assert all(word in shown for name in names for word in name.split()) and "…" not in " ".join(shown)


@pytest.mark.parametrize("width", [80, 100, 140])
def test_list_shows_whose_task_it_is_where_the_app_says(width: int, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """With easyauth callers an operator's ``GET /api/tasks`` names each task's ``owner`` (``list --json`` showed
    it), but the table did not: whose task it is, shown as a column where it fits whole, else under its id (folded to
    the id's width, so that no id, stage or time is cut and no line is wider than the output). No owner: no column."""
    import cli.main as cli_main

    owner = "3f2a9c1e-7b4d-4e21-9a0f-5c8d2b6e1f47"
    rows = [{"id": f"task-{i:020x}", "request_name": f"site {i}", "stage": "completed_with_errors", "images": 41,
             "created": "2026-12-03T17:31:37+00:00", **({"owner": owner} if i == 1 else {})} for i in range(3)]
    answer = {"tasks": rows, "total": 3}

    class Lister:
        def __init__(self, config: Any) -> None:
            pass

        def list(self, limit: int) -> dict[str, Any]:
            return answer

    monkeypatch.setattr(cli_main, "ApiClient", Lister)
    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=width, highlight=False, soft_wrap=True))
    assert main(["--url", "http://127.0.0.1:9", "--key", "k", "list"]) == 0
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert all(len(line) <= width for line in lines) and "…" not in "".join(lines)
    assert all(any(line.startswith(row["id"]) and "completed_with_errors" in line and "2026-12-03 17:31Z" in line
                   for line in lines) for row in rows)
    [row_line] = [line for line in lines if line.startswith(rows[1]["id"])]
    if width >= 140:  # a column: the header names it, the owner on its task's line
        assert lines[0].split()[-1] == "owner" and row_line.endswith(owner), lines
    else:  # under its id, in full once its folded lines are joined
        below = lines[lines.index(row_line) + 1:]
        assert row_line.endswith("17:31Z") and "owner" not in lines[0], lines
        assert f"owner {owner}" in "".join(line.split("  ")[0] for line in below[:4]), lines
    assert sum(owner[:8] in line for line in lines) == 1  # the task of no owner shows none

    answer = {"tasks": [{k: v for k, v in row.items() if k != "owner"} for row in rows], "total": 3}
    assert main(["--url", "http://127.0.0.1:9", "--key", "k", "list"]) == 0
    assert "owner" not in capsys.readouterr().out


def test_config_says_when_its_file_does_not_exist_and_how_to_make_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch config`` printed the config file's path as if it were read, though no file was there."""
    path = tmp_path / "config.toml"
    monkeypatch.setenv("TRAPBATCH_CONFIG", str(path))
    monkeypatch.delenv("TRAPBATCH_URL", raising=False)
    assert main(["config"]) == 2  # no address anywhere: every command but config would exit 2
    shown = capsys.readouterr().out
    assert f'config file: {path} (not created: write it, TOML, e.g. url = "https://' in shown
    assert "url NOT usable: no trapbatch address is configured; pass --url" in shown
    path.write_text('url = "https://func-x.azurewebsites.net"\n')
    assert main(["config"]) == 0
    shown = capsys.readouterr().out
    assert f"config file: {path}\n" in shown and f"url: https://func-x.azurewebsites.net (file {path})" in shown


def test_the_summary_says_which_shards_were_given_up_why_and_what_to_do(capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cli import main as cli_main
    from cli.main import _summary

    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=400, highlight=False, soft_wrap=True))  # no wrapping

    given_up = {"count": 3, "examples": [
        {"shard": "s00001", "attempts": 3, "exit_code": -1073741510, "failure_code": "TaskEnded", "by": "pool",
         "reason": "TaskEnded: The task exceeded its maximum wall clock time (the pool's time limit)"},
        {"shard": "s00004", "attempts": 3, "exit_code": 137, "by": "worker",
         "reason": "the worker exited 137 (killed: most often out of memory): [cuda] out of memory"}],
        "hint": "the pool stopped them at their time limit: raise TRAPBATCH_MAX_TASK_SECONDS, then post the request "
                "again with \"rerun\": true"}
    _summary({"id": "task-0", "stage": "completed_with_errors", "shards_given_up": given_up})
    shown = capsys.readouterr().out
    assert "shards given up" in shown and "3 after every attempt" in shown
    assert "s00001 (attempt 3): TaskEnded: The task exceeded its maximum wall clock time" in shown
    assert "s00004 (attempt 3): the worker exited 137" in shown and "[cuda] out of memory" in shown
    assert "raise TRAPBATCH_MAX_TASK_SECONDS" in shown
    _summary({"id": "task-0", "stage": "completed"})
    assert "given up" not in capsys.readouterr().out


@pytest.mark.parametrize("removal,shown", [
    ({"runtime_status": "Completed", "stage": "completed",
      "results": {"container": "c", "blob": "b", "exports_error": "TimeoutError: exports_coco ran out of time"}},
     ["removal: completed", "exports NOT written: TimeoutError: exports_coco ran out of time", "next: the "
      "repeats-removed results JSON and CSV are complete", "--keep ... or --remove ..."]),
    ({"runtime_status": "Completed", "stage": "completed",  # the app's own hint, where its status carries one
      "results": {"container": "c", "blob": "b", "exports_error": "TimeoutError: exports_coco",
                  "exports_hint": "send the same choice again (POST /api/tasks/task-0123456789abcdef0123/repeats)"}},
     ["exports NOT written: TimeoutError: exports_coco",
      "next: send the same choice again (trapbatch repeats task-0123456789abcdef0123 --keep ... or --remove ...)"]),
    ({"runtime_status": "Failed", "stage": "failed", "error": "MemoryError: merge_part"},
     ["removal: failed", "error: MemoryError: merge_part", "next: send the same choice again"]),
    ({"runtime_status": "Completed", "stage": "completed", "results": {"container": "c", "blob": "b"},
      "damaged": {"count": 2, "examples": ["cam1/IMG_0007.JPG"], "blob": "results/t/damaged.csv"}},
     ["removal: completed", "damaged: 2 photos cut short", "damaged.csv (trapbatch results task-0123456789abcdef0123)",
      "e.g. cam1/IMG_0007.JPG"]),
    ({"runtime_status": "Completed", "stage": "completed",
      "results": {"container": "c", "blob": "b", "exports": {"zooniverse_subjects": 5, "zooniverse_cut_short": 2}}},
     ["removal: completed", "zooniverse: 2 photos cut short left out of the subjects"]),
])
def test_repeats_shows_what_went_wrong_with_the_removal_and_what_to_do(
        removal: dict[str, Any], shown: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch repeats ID`` printed a bare "removal: completed" though its exports were not written, and a bare
    "removal: failed" without why."""
    from cli import main as cli_main

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": [], "search": "s1", "search_options": {}, "removal": removal}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["repeats", "task-0123456789abcdef0123"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    for text in shown:
        assert text in said, (text, said)


def test_repeats_listing_shows_every_hint_of_the_app_in_cli_words_with_the_task_s_id(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch repeats ID`` printed a removal's ``exports_hint`` as the app wrote it ("POST
    /api/tasks/<key>/repeats with the same "keep" or "remove" and "search"") while every other hint of the CLI is
    in its words; a re-run's removal named its generation key (``<task>/runs/<run>``), no command's or route's id;
    and a list's skipped folders' hint written without the task's id said "trapbatch repeats <task id> --search".
    Each is in the CLI's words with the task's id."""
    from cli import main as cli_main
    from core.repeats import RepeatOptions, skipped_summary
    from orchestrations.repeats import removal_exports_hint

    task = "task-0123456789abcdef0123"
    skipped = skipped_summary([("cam1", 900_000)], RepeatOptions(max_folder_detections=800_000))  # "<task id>"
    removal = {"runtime_status": "Completed", "stage": "completed",
               "results": {"container": "c", "blob": "b", "exports_error": "TimeoutError: exports_coco",
                           "exports_hint": removal_exports_hint(f"{task}/runs/r260101000000abcdef")}}

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": [], "search": "s1", "search_options": {}, "removal": removal,
                    "skipped_folders": skipped}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["repeats", task]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "/api/" not in said and '"keep"' not in said and "/runs/" not in said and "<task id>" not in said, said
    assert (f"next: the repeats-removed results JSON and CSV are complete; their COCO, Camtrap DP and Zooniverse "
            f"exports were not written. Write them again: send the same choice again (trapbatch repeats {task} "
            "--keep ... or --remove ... with the same --keep or --remove and --list)") in said, said
    assert f"trapbatch repeats {task} --search --max-folder-detections 900000 (at most" in said, said


def test_docs_cli_md_names_every_command_and_option_and_no_other() -> None:
    """docs/cli.md is the CLI's manual: a subcommand or option the CLI has but the page never names is one nobody
    finds (``list --limit`` was only in ``--help``), and an option the page names that no command takes sends a
    script to exit 2. Checked on click's own command tree, so a new flag fails here until it is documented."""
    import re

    import click

    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    group = cli
    assert isinstance(group, click.Group)
    flags: set[str] = set()
    missing = []
    for name, command in [("", group), *sorted(group.commands.items())]:
        if name and f"trapbatch {name}" not in doc:
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option):
                flags.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
                # a negation (``--no-wait``) is the default the page's ``--wait`` names
                missing += [f"{name} {o}".strip() for o in param.opts
                            if o.startswith("--") and not re.search(rf"`[^`]*{o}\b", doc)]
    assert missing == [], f"docs/cli.md does not name {missing}"
    flags.add("--help")  # click adds it to every command, outside ``params``
    # flags of other programs the page shows (devhost's, the Panoptes CLI's, az's) are not the CLI's
    others = {"--with-azurite", "--allow-missing", "--query"}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", doc)) - others
    assert sorted(named - flags) == []


def test_help_names_every_exit_code_the_docs_table_lists() -> None:
    """``trapbatch --help`` is where an operator scripting the CLI looks first: every code of docs/cli.md's exit-code
    table must be in it (5, a completed task whose step after detection failed, was only in the docs), and
    ``submit --help`` / ``watch --help`` must not say a completed task always exits 0."""
    import re

    table = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split("## Exit codes and errors")[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    assert {0, 1, 2, 3, 4, 5, 130} <= documented
    text = " ".join(CliRunner().invoke(cli, ["--help"], terminal_width=200).output.split())
    said = {int(code) for code in re.findall(r"(?:Exit codes:|,) (\d+) ", text)}
    assert documented <= said, f"--help lacks exit code(s) {sorted(documented - said)}"
    # and what each means as the table says it: a task terminated through the Durable API is exit 1 too
    assert "failed, was cancelled, terminated or expired (previews --wait: the re-render failed)" in text
    assert "previews' expiry or pictures" in text
    for command in ("submit", "watch"):
        helped = " ".join(CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output.split())
        assert "5 " in helped and "step after detection" in helped, command


def test_a_request_over_the_apps_body_limit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """It passed the local validation and was sent, to come back as a 413 (exit 4) with nothing to act on."""
    corrections = {f"site-a/cameras/cam-{i:04d}x": {"camera": "2000:01:01 00:12:00", "actual": "2024-06-01 06:30:00"}
                   for i in range(1000)}
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"container": "my-camera-traps", "clock_corrections": corrections}))
    with pytest.raises(CliError) as refused:
        build_request(path, {})
    assert refused.value.exit_code == 2 and "bytes" in refused.value.message and "seconds" in refused.value.hint


def test_the_command_previews_says_to_follow_a_re_render_with_follows_it(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``previews T --threshold 0.3`` says "see: trapbatch previews T --threshold 0.3 --wait"; run while that
    re-render still ran, its POST was refused (409, exit 4). It now waits for the running one instead; a re-render
    at another threshold is still sent (and refused by the app while one runs)."""
    from cli import main as cli_main

    task = "task-0123456789abcdef0123"
    sent: list[float] = []
    states = iter(["Running", "Running", "Completed"])

    class Client:
        def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
            sent.append(threshold)
            return {"id": task_id, "threshold": threshold}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"rerender": {"runtime_status": next(states, "Completed"), "threshold": 0.3,
                                              "previews": {"original": {"counts": {"detections": 4}}}}}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.time, "sleep", lambda s: None)
    assert cli_main.main(["previews", task, "--threshold", "0.3"]) == 0
    assert f"trapbatch previews {task} --threshold 0.3 --wait" in capsys.readouterr().out and sent == [0.3]
    assert cli_main.main(["previews", task, "--threshold", "0.3", "--wait"]) == 0
    said = capsys.readouterr()
    assert sent == [0.3] and "is running: waiting for it" in said.err and "original at 0.3: detections 4" in said.out
    states = iter(["Running", "Completed"])
    assert cli_main.main(["previews", task, "--threshold", "0.5", "--wait"]) == 0
    assert sent == [0.3, 0.5]


def test_previews_wait_stops_when_the_re_render_is_no_longer_named(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The results answer names the re-render only while its instance exists: one purged while ``--wait`` followed
    it left the command polling for ever. A minute of answers without it ends the wait (exit 1, with what to do)."""
    from cli import main as cli_main

    task = "task-0123456789abcdef0123"
    polls: list[int] = []

    class Client:
        def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
            return {"id": task_id, "threshold": threshold}

        def results(self, task_id: str) -> dict[str, Any]:
            polls.append(1)
            if len(polls) <= 3:  # the check for a running one, then two polls while it runs
                return {"previews": {"rerender": {"runtime_status": "Running", "threshold": 0.9}}}
            return {"previews": {}}  # purged

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.time, "sleep", lambda s: None)
    assert cli_main.main(["previews", task, "--threshold", "0.3", "--wait"]) == 1
    said = capsys.readouterr().err
    assert "named no re-render for 60 s" in said and "--threshold T --wait" in said
    assert len(polls) == 3 + cli_main.RERENDER_GONE_POLLS


@pytest.mark.parametrize("command", ["status", "watch", "cancel", "terminate", "results", "repeats"])
def test_an_empty_task_id_is_refused_before_anything_is_sent(command: str, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch status "$ID"`` with ``ID`` unset asked for ``GET /api/tasks/``, the task list: ``status`` printed
    nothing and exited 0, ``watch`` followed the list forever. A pasted id's surrounding blanks are dropped."""
    import cli.main as cli_main
    from cli.client import ApiClient

    session = _Answers(*[200] * 3)
    monkeypatch.setattr(cli_main, "ApiClient", lambda config: ApiClient(config, session=session,  # type: ignore[arg-type]
                                                                        sleep=lambda s: None))
    assert main(["--url", "https://app.example", "--key", "k", command, " "]) == 2
    assert session.sent == []
    said = capsys.readouterr().err
    assert "no task id given" in said and "next: pass the id trapbatch submit printed" in said
    assert main(["--url", "https://app.example", "--key", "k", "status", " task-00000000000000000001\n"]) == 0
    assert [s["url"] for s in session.sent] == ["https://app.example/api/tasks/task-00000000000000000001"]


def test_the_repeats_listing_never_cuts_a_place_or_its_folder_on_a_narrow_or_piped_output(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The folder says where a place is (two days of one camera are two folders): at 80 columns (a pipe, a usual
    terminal) ``trapbatch repeats ID`` showed ``camera-01/2024…`` for every folder of that camera, so the places of
    two folders read alike. A long folder wraps in its column instead; the place id stays on one line."""
    from cli import main as cli_main

    folders = ["2024/site-a/northern-ridge/camera-01/100RECNX", "2024/site-a/northern-ridge/camera-01/101RECNX"]
    places = [{"id": f"r0000{n + 1}", "folder": folder, "category": "1", "count": 25, "conf_min": 0.21,
               "conf_max": 0.83, "bbox": [0.1234, 0.5, 0.25, 0.125]} for n, folder in enumerate(folders)]

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": places, "search_options": {}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=80, highlight=False, soft_wrap=True))
    assert cli_main.main(["repeats", "task-0123456789abcdef0123"]) == 0
    shown = capsys.readouterr().out
    assert "…" not in shown
    rows = [[cell.strip() for cell in line.split("│")] for line in shown.splitlines() if line.startswith("│")]
    assert [row[1] for row in rows if row[1]] == ["r00001", "r00002"]
    assert "".join(row[2] for row in rows) == "".join(folders)  # each folder whole, read down its column


def test_the_repeats_listing_names_the_category_as_megadetector_does(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch repeats ID`` showed the category as the results file's number ("1", "3"): an operator choosing
    which places are real animals had to look the numbers up. --json keeps the API's numbers."""
    from cli import main as cli_main

    places = [{"id": f"r0000{n + 1}", "folder": "cam", "category": cat, "count": 25, "conf_min": 0.2,
               "conf_max": 0.8, "bbox": [0.1, 0.5, 0.25, 0.125]} for n, cat in enumerate(["1", "2", "3", "7"])]

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": places, "search_options": {}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["repeats", "task-0123456789abcdef0123"]) == 0
    rows = [[cell.strip() for cell in line.split("│")] for line in capsys.readouterr().out.splitlines()
            if line.startswith("│") and "r0000" in line]
    assert [row[3] for row in rows] == ["animal", "person", "vehicle", "7"]  # a number it does not name: as it is
    assert cli_main.main(["repeats", "task-0123456789abcdef0123", "--json"]) == 0
    assert [loc["category"] for loc in json.loads(capsys.readouterr().out)["locations"]] == ["1", "2", "3", "7"]


@pytest.mark.parametrize("count, said", [
    (1, "1 photo cut short (no JPEG end marker), detected as far as it goes; re-copy it from the cards: damaged.csv "
        "(trapbatch results task-0)"),
    (2, "2 photos cut short (no JPEG end marker), detected as far as they go; re-copy them from the cards: "
        "damaged.csv (trapbatch results task-0)")])
def test_the_photos_cut_short_line_agrees_with_its_count(count: int, said: str) -> None:
    """One photo cut short read "1 photo cut short ..., detected as far as they go; re-copy them"."""
    from cli.main import damaged_line

    assert damaged_line({"count": count, "examples": ["a/b.jpg"]}, "task-0") == f"{said}; e.g. a/b.jpg"
    assert damaged_line({"count": 0}, "task-0") == ""


def test_the_rerun_hint_quotes_a_folder_name_a_shell_would_split() -> None:
    """``submit --folder`` names folders as they are in the container, spaces and all: the hint's flags are a command
    line to paste, so a name a shell would split (or expand) is quoted."""
    from cli.errors import EXIT_TASK_FAILED
    from cli.main import ended_before_line

    line = ended_before_line({"stage": "failed"}, EXIT_TASK_FAILED, False, folder="Summer 2018 (cam $A)")
    assert "--folder 'Summer 2018 (cam $A)' --rerun" in line, line
    plain = ended_before_line({"stage": "failed"}, EXIT_TASK_FAILED, False, folder="Summer_2018")
    assert "--folder Summer_2018 --rerun" in plain, plain


def test_the_apps_repeat_list_hints_read_well_in_the_clis_words() -> None:
    """The app names a repeat list by its request field ``search``, which the CLI shows as ``--list``: the hints are
    worded so that both read ("the list's --list id" and "name this --list" did not)."""
    from api import repeat_search, starters
    from cli.main import in_cli_words

    sources = Path(repeat_search.__file__).read_text() + Path(starters.__file__).read_text()
    assert "name this list ('search')" in sources and "the list's id (\\\"search\\\")" in sources
    assert in_cli_words("removals must then name this list ('search')") == "removals must then name this list (--list)"
    assert in_cli_words("and the list's id (\"search\")") == "and the list's id (--list)"


def test_a_failed_task_s_error_shows_its_control_characters_escaped_in_watch_lines_and_at_the_end(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A failed task's ``error`` is its activity's exception: a service's or the SDK's text. ``watch``'s lines
    (LineReporter echoes ``progress_line`` with ``click.echo``, which passes ESC to a terminal) and the closing
    ``task ... ended failed: ...`` / ``exports failed: ...`` lines showed its ESC sequences raw."""
    from cli.main import _finish

    error = "storage said \x1b]0;owned\x07\x1b[2Jgone"
    line = progress_line({"stage": "failed", "error": error})
    assert "\x1b" not in line and "storage said \\x1b]0;owned\\x07" in line, repr(line)
    _finish({"id": "task-0", "stage": "failed", "runtime_status": "Failed", "error": error,
             "results": {"exports_error": "copy \x1b[2Jfailed"}})
    shown = capsys.readouterr().err
    assert "\x1b" not in shown and "storage said \\x1b]0;owned" in shown and "copy \\x1b[2Jfailed" in shown, \
        repr(shown)


def test_trapbatch_status_shows_a_failed_task_s_error_as_said(capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch status``'s rows put the status's ``error`` (an activity's exception: a service's text) into a rich
    table raw: a ``[errno -3]`` in it was read as markup and vanished, and an ESC sequence reached the terminal.
    So did the repeated-detection search's error."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "failed", "error": "<urlopen error [errno -3] \x1b[2Jname>",
              "repeated_detections": {"error": "read [bold]x\x1b]0;t\x07", "hint": "run it again"}})
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "<urlopen error [errno -3] \\x1b[2Jname>" in shown, repr(shown)
    assert "read [bold]x\\x1b]0;t\\x07" in shown, repr(shown)


def test_a_removal_s_errors_show_their_control_characters_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch repeats``' removal lines print a failed removal's error and its exports' error (activities'
    exceptions, a service's text) with markup off, but an ESC sequence in them still reached the terminal."""
    from cli.main import _print_removal

    _print_removal("task-0", {"stage": "failed", "error": "gone \x1b[2J",
                              "results": {"exports_error": "no \x1b]0;t\x07"}})
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "gone \\x1b[2J" in shown and "no \\x1b]0;t\\x07" in shown, repr(shown)


def test_ctrl_c_while_submit_per_folder_waits_names_every_task_still_running(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --folder a --folder b --folder c --wait`` stopped with Ctrl-C while following a's task said only
    "task <a's id> keeps running": b's and c's tasks, started too, were named nowhere (with --json, not at all)."""
    from cli import main as cli_main
    from cli.errors import EXIT_INTERRUPTED

    class Client(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            raise KeyboardInterrupt

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c", "--wait"]
    assert cli_main.main([*args, "--json"]) == EXIT_INTERRUPTED
    said = " ".join(capsys.readouterr().err.split())
    ids = [f"task-{n:020d}" for n in (1, 2, 3)]
    assert all(f"{task} (folder {folder})" in said for task, folder in zip(ids, "abc")), said
    assert "keep running" in said and "error" not in said
    assert all(f"trapbatch watch {task}" in said for task in ids), said

    class SecondStops(_FolderClient):  # a's task followed to its end, Ctrl-C while b's is followed
        def status(self, task_id: str) -> dict[str, Any]:
            if task_id != ids[0]:
                raise KeyboardInterrupt
            return {"id": task_id, "runtime_status": "Completed", "stage": "completed", "images": 7}

    client = SecondStops()
    assert cli_main.main([*args, "--json"]) == EXIT_INTERRUPTED
    said = " ".join(capsys.readouterr().err.split())
    assert f"tasks {ids[1]} (folder b), {ids[2]} (folder c) keep running" in said, said
    assert f"task {ids[0]} (folder a) ended completed" in said, said


def test_ctrl_c_while_submit_per_folder_posts_names_the_tasks_already_started(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while c's request was posted said only "anything the app had already accepted keeps running": with
    --json, a's and b's task ids, started, were printed nowhere."""
    from cli import main as cli_main
    from cli.errors import EXIT_INTERRUPTED

    class Client(_FolderClient):
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            if body["prefix"].rstrip("/").endswith("c"):
                raise KeyboardInterrupt
            return super().submit(body)

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c", "--json"]
    assert cli_main.main(args) == EXIT_INTERRUPTED
    said = " ".join(capsys.readouterr().err.split())
    assert "tasks task-00000000000000000001 (folder a), task-00000000000000000002 (folder b) keep running" in said
    assert "error" not in said, said


@pytest.mark.parametrize("stage, runtime", [("failed", "Completed"), ("cancelled", "Completed"),
                                            ("terminated", "Terminated")])
def test_results_after_a_rerun_that_ended_without_results_do_not_say_to_wait_for_it(
        stage: str, runtime: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """A re-run that ended failed, cancelled or terminated leaves the previous run's results served, and the status
    says ``served`` (api.starters.get_task: every stage but completed and completed_with_errors). ``results`` said
    "task X is running again (stage: failed) ... run this command again once trapbatch watch X says it completed":
    nothing runs, so that never comes."""
    from cli import download as cli_download
    from cli import main as cli_main

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json"}}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": stage, "runtime_status": runtime,
                    "served": {"generation": "r26120616310026d2", "hint": "this is a re-run"}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_download, "blob_service", lambda connection, url: object())
    monkeypatch.setattr(cli_download, "download", lambda *a, **k: [])
    assert cli_main.main(["results", "task-1", "--out", str(tmp_path)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "running again" not in said and "watch" not in said, said
    assert (f"task task-1's last re-run ended {stage} without results: these are the results of the run before it "
            "(r26120616310026d2)") in said, said


def test_ctrl_c_while_submit_per_folder_waits_names_a_task_whose_following_failed_before(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Following a's task failed (the app unreachable for a while: it is said at the end, with its id), then Ctrl-C
    while b's was followed: the message named b's task and c's, and a's task, started by this command and
    still running, was named nowhere (the failures are said at the end, which Ctrl-C never reaches)."""
    from cli import main as cli_main
    from cli.errors import EXIT_API, EXIT_INTERRUPTED

    ids = [f"task-{n:020d}" for n in (1, 2, 3)]

    class Client(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            if task_id == ids[0]:
                raise CliError("GET /api/tasks/x could not be reached", "check the network", exit_code=EXIT_API)
            raise KeyboardInterrupt

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c", "--wait", "--json"]
    assert cli_main.main(args) == EXIT_INTERRUPTED
    said = " ".join(capsys.readouterr().err.split())
    assert f"tasks {ids[1]} (folder b), {ids[2]} (folder c) keep running" in said, said
    assert f"task {ids[0]} (folder a) not followed: GET /api/tasks/x could not be reached" in said, said
    assert f"trapbatch watch {ids[0]}" in said, said


def test_an_estimate_per_folder_shows_a_folder_name_with_square_brackets_as_it_is(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --folder`` printed each folder's header as rich markup: a folder named "cam [north]" showed as
    "cam " (the brackets read as a style), so two folders' figures could not be told apart."""
    from cli import main as cli_main

    client = _FolderClient()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    assert cli_main.main(["estimate", "--container", "traps", "--folder", "cam [north]", "--folder", "b"]) == 0
    assert "folder cam [north]" in capsys.readouterr().out
    assert cli_main.main(["submit", "--container", "traps", "--folder", "cam [north]"]) == 0  # submit --folder too
    assert "for folder cam [north]:" in capsys.readouterr().out


@pytest.mark.parametrize("folders, flag", [([], "--only-new"), (["Summer_2018"], "--folder Summer_2018 --only-new")])
def test_submit_wait_that_found_its_task_completed_with_errors_says_only_new_runs_the_failed_images_again(
        folders: list[str], flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A request whose task had ended completed_with_errors (too many images failed) said "submit the same request
    with --rerun (or --only-new to run only new or changed images)": --only-new also runs the failed images again
    and keeps every other result (activities.reuse: a retryable failure or an image never processed runs again;
    the app's own failures hint says so), while --rerun runs every image again."""
    import cli.main as cli_main

    class Client:
        def __init__(self, config: Any) -> None:
            pass

        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"id": "task-00000000000000000009", "started": False, "stage": "completed_with_errors"}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed_with_errors", "runtime_status": "Completed", "images": 3,
                    "failed": 2}

    monkeypatch.setattr(cli_main, "ApiClient", Client)
    flags = [arg for folder in folders for arg in ("--folder", folder)]
    base = ["--url", "http://127.0.0.1:9", "--key", "k", "submit", "--container", "photos", "--wait", "--plain"]
    assert main([*base, *flags]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "had ended completed_with_errors before" in err, err
    assert (f"to run its failed images again (and any new or changed ones), keeping every other result, submit the "
            f"same request with {flag} (--rerun runs every image again)") in err, err
    assert "run only new or changed images" not in err, err


@pytest.mark.parametrize("args", [["--keep", "r00002"], ["--remove", "all"], ["--search"]])
def test_repeats_open_with_a_choice_or_a_search_is_refused_not_dropped(
        args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``repeats ID --keep r00002 --open`` sent the choice and opened nothing, without a word (--open was read only
    by the listing), as --list without a choice was dropped. It is refused (exit 2) before anything is sent."""
    from cli import main as cli_main

    sent: list[str] = []

    class Client:
        def choose_repeats(self, task_id: str, choice: dict[str, Any]) -> dict[str, Any]:
            sent.append("choice")
            return {"removing": []}

        def search_repeats(self, task_id: str, options: dict[str, Any]) -> dict[str, Any]:
            sent.append("search")
            return {"search": "s1", "options": {}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.click, "launch", lambda target: 0)
    assert cli_main.main(["repeats", "task-1", *args, "--open"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "--open" in said and "trapbatch repeats task-1 --open" in said, said
    assert sent == []


def test_ctrl_c_during_an_estimates_listing_names_an_estimate_whose_waiting_failed_before(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --folder a --folder b``: waiting for a's estimate failed (the app unreachable for a while; said at
    the end with its id), then Ctrl-C while b's listing was waited for: the message named b's estimate alone, and
    a's, which may still be listing, was named nowhere."""
    import cli.main as cli_main
    from cli.errors import EXIT_API

    class Client(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            if task_id == "task-00000000000000000001":
                raise CliError("GET /api/tasks/x could not be reached", "check the network", exit_code=EXIT_API)
            raise KeyboardInterrupt

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    assert cli_main.main(["estimate", "--container", "traps", "--folder", "a", "--folder", "b", "--json"]) == 130
    captured = capsys.readouterr()
    said = " ".join(captured.err.split())
    assert "estimate task-00000000000000000002 (folder b) keeps listing" in said, said
    assert ("estimate task-00000000000000000001 (folder a) not waited for: GET /api/tasks/x could not be reached"
            in said), said
    assert "trapbatch status task-00000000000000000001" in said, said


def test_ctrl_c_while_previews_waits_says_the_re_render_keeps_running_and_how_to_follow_it_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while ``previews --threshold T --wait`` waited said "anything the app had already accepted keeps
    running there; trapbatch list, or trapbatch status <task id>": neither shows a re-render, and the command that
    follows it again (the same one: it follows a running re-render instead of sending it again) was not said."""
    from cli import main as cli_main

    class Client:
        def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
            return {"id": task_id, "threshold": threshold}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"rerender": {"runtime_status": "Running", "threshold": 0.3}}}

    def stopped(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.time, "sleep", stopped)
    task = "task-0123456789abcdef0123"
    assert cli_main.main(["previews", task, "--threshold", "0.3", "--wait"]) == 130
    said = " ".join(capsys.readouterr().err.split())
    assert f"stopped waiting (Ctrl-C); the re-render of {task} at 0.3 keeps running" in said, said
    assert f"next: trapbatch previews {task} --threshold 0.3 --wait follows it again" in said, said
    assert "error" not in said, said


@pytest.mark.parametrize("stop_in", ["post", "wait"])
def test_ctrl_c_in_previews_says_an_ended_re_render_is_sent_again(
        stop_in: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The Ctrl-C hints said "previews --threshold T --wait follows it ... (it is not sent twice)"; once that
    re-render had ended, the same command posted it again (only a running one is followed). The hint says so, and
    the command does what it says: an ended re-render at T is posted again, a running one is followed."""
    from cli import main as cli_main

    task = "task-0123456789abcdef0123"
    posted: list[float] = []
    rerender = {"runtime_status": "Running", "threshold": 0.3}
    stop_post = [stop_in == "post"]

    class Client:
        def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
            posted.append(threshold)
            if stop_post[0]:
                raise KeyboardInterrupt
            return {"id": task_id, "threshold": threshold}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"rerender": dict(rerender)}}

    def stopped(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.time, "sleep", stopped)
    rerender["runtime_status"] = "Completed" if stop_in == "post" else "Running"
    assert cli_main.main(["previews", task, "--threshold", "0.3", "--wait"]) == 130
    said = " ".join(capsys.readouterr().err.split())
    assert "(it is not sent twice)" not in said, said
    assert "(not sent twice); once it has ended, that command renders it again" in said, said
    assert f"trapbatch results {task} fetches its CSV" in said, said
    assert posted == ([0.3] if stop_in == "post" else []), posted  # running at 0.3: followed, not posted
    # what the hint says of an ended one: the same command posts it again
    rerender["runtime_status"], stop_post[0] = "Completed", False
    posted.clear()
    assert cli_main.main(["previews", task, "--threshold", "0.3", "--wait"]) == 0
    assert posted == [0.3], posted


def test_ctrl_c_in_a_fresh_estimate_names_the_command_without_fresh(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --fresh`` stopped while its listing went on said "the same estimate command run again waits for
    the same estimate": run again with --fresh it is refused while the estimate lists (409) and counts again once
    it ended. The hint names the command without --fresh, which finds that estimate; without --fresh, as before."""
    from cli import main as cli_main

    class Client(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            raise KeyboardInterrupt

    for fresh in (["--fresh"], []):
        client = Client()
        monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
        assert cli_main.main(["estimate", "--container", "traps", "--prefix", "p/", *fresh]) == 130
        said = " ".join(capsys.readouterr().err.split())
        if fresh:
            assert ("the same estimate command without --fresh run again waits for the same estimate (it is not "
                    "listed twice; with --fresh the app refuses it while it lists, and counts again once it has "
                    "ended)") in said, said
        else:
            assert ("the same estimate command run again waits for the same estimate (it is not listed twice)"
                    in said), said


# ------------------------------------------------------------------ Ctrl-C with --json (cli/interrupted.py)
def _stopped_json(captured: Any) -> dict[str, Any]:
    """The one JSON object on standard output after Ctrl-C, checked for what every such object holds."""
    shown = json.loads(captured.out)
    assert shown["interrupted"] is True and shown["exit_code"] == 130 and shown["message"] and shown["hint"], shown
    return shown


def test_ctrl_c_while_submit_wait_json_waits_prints_json_naming_the_task_and_its_last_stage(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --wait --json`` stopped with Ctrl-C printed the task's id on standard error alone: a script reading
    standard output got nothing to parse. Standard output holds a JSON object with the task, its last stage seen;
    standard error keeps its text; exit 130."""
    from cli import main as cli_main

    task = "task-0123456789abcdef0123"
    seen: list[str] = []

    class Client:
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"id": task, "started": True}

        def status(self, task_id: str) -> dict[str, Any]:
            seen.append(task_id)
            if len(seen) > 1:
                raise KeyboardInterrupt
            return {"id": task_id, "runtime_status": "Running", "stage": "detecting"}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["submit", "--container", "traps", "--wait", "--plain", "--json"]) == 130
    captured = capsys.readouterr()
    shown = _stopped_json(captured)
    assert shown["tasks"] == [{"id": task, "state": "running", "stage": "detecting"}], shown
    assert f"trapbatch watch {task}" in shown["hint"], shown
    assert f"stopped watching (Ctrl-C); task {task} keeps running" in " ".join(captured.err.split())


def test_ctrl_c_before_submit_json_was_answered_prints_json_saying_so(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C before the app answered ``submit --json``: the app may have taken the request, the id is unknown."""
    from cli import main as cli_main

    class Client:
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    assert cli_main.main(["submit", "--container", "traps", "--wait", "--json"]) == 130
    captured = capsys.readouterr()
    assert _stopped_json(captured)["tasks"] == [{"state": "unanswered"}]
    assert "keeps running" in captured.err and "trapbatch status" in captured.err


def test_ctrl_c_while_submit_per_folder_waits_with_json_prints_every_task_as_json(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --folder a --folder b --folder c --wait --json``: a's task followed to its end, Ctrl-C while b's is
    followed: standard output had nothing (the list is printed at the end, which Ctrl-C never reaches)."""
    from cli import main as cli_main

    ids = [f"task-{n:020d}" for n in (1, 2, 3)]

    class SecondStops(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            if task_id != ids[0]:
                raise KeyboardInterrupt
            return {"id": task_id, "runtime_status": "Completed", "stage": "completed", "images": 7}

    client = SecondStops()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c", "--wait", "--json"]
    assert cli_main.main(args) == 130
    captured = capsys.readouterr()
    assert _stopped_json(captured)["tasks"] == [
        {"id": ids[0], "folder": "a", "state": "ended", "stage": "completed", "exit_code": 0},
        {"id": ids[1], "folder": "b", "state": "running"},
        {"id": ids[2], "folder": "c", "state": "running"}]
    assert f"tasks {ids[1]} (folder b), {ids[2]} (folder c) keep running" in " ".join(captured.err.split())


def test_ctrl_c_while_submit_per_folder_posts_with_json_prints_the_tasks_started_and_the_folders_left(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while b's request was posted (``submit --folder a --folder b --folder c --json``): a's task started,
    b's request unanswered (the app may have taken it), c's not sent."""
    from cli import main as cli_main

    class Client(_FolderClient):
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            if body["prefix"].rstrip("/").endswith("b"):
                raise KeyboardInterrupt
            return super().submit(body)

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c", "--json"]
    assert cli_main.main(args) == 130
    assert _stopped_json(capsys.readouterr())["tasks"] == [
        {"id": "task-00000000000000000001", "folder": "a", "state": "running"},
        {"folder": "b", "state": "unanswered"}, {"folder": "c", "state": "not_sent"}]


@pytest.mark.parametrize("folders", [[], ["a", "b"]])
def test_ctrl_c_while_estimate_json_waits_prints_the_estimates_as_json(
        folders: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --json`` stopped while a listing was waited for printed its id on standard error alone; with
    --folder, a's estimate, already made, was printed nowhere."""
    from cli import main as cli_main

    class Client(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            if task_id == f"task-{len(folders) or 1:020d}":
                raise KeyboardInterrupt
            return super().status(task_id)

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    flags = [arg for folder in folders for arg in ("--folder", folder)]
    assert cli_main.main(["estimate", "--container", "traps", "--prefix", "p/", *flags, "--json"]) == 130
    tasks = _stopped_json(capsys.readouterr())["tasks"]
    if folders:
        assert tasks == [{"id": "task-00000000000000000001", "folder": "a", "state": "ended", "stage": "estimated",
                          "exit_code": 0},
                         {"id": "task-00000000000000000002", "folder": "b", "state": "running"}], tasks
    else:
        assert tasks == [{"id": "task-00000000000000000001", "state": "running"}], tasks


def test_ctrl_c_while_previews_wait_json_waits_prints_the_re_render_as_json(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``previews --threshold T --wait --json`` stopped with Ctrl-C: nothing on standard output."""
    from cli import main as cli_main

    class Client:
        def rerender_previews(self, task_id: str, threshold: float) -> dict[str, Any]:
            return {"id": task_id, "threshold": threshold}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"rerender": {"runtime_status": "Running", "threshold": 0.5}}}

    def stopped(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.time, "sleep", stopped)
    task = "task-0123456789abcdef0123"
    assert cli_main.main(["previews", task, "--threshold", "0.3", "--wait", "--json"]) == 130
    captured = capsys.readouterr()
    shown = _stopped_json(captured)
    assert shown["tasks"] == [{"id": task, "state": "running", "threshold": 0.3}], shown
    assert f"trapbatch previews {task} --threshold 0.3 --wait follows it again" in shown["hint"], shown
    assert "keeps running" in captured.err


def test_ctrl_c_without_json_prints_no_json(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON object is --json's: without it standard output holds no such object (a person reads standard
    error's words)."""
    from cli import main as cli_main

    class Client(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            raise KeyboardInterrupt

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    assert cli_main.main(["estimate", "--container", "traps", "--prefix", "p/"]) == 130
    assert "interrupted" not in capsys.readouterr().out


def test_ctrl_c_while_estimate_json_waits_names_the_stage_it_had_seen(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --json`` stopped while the listing went on: its entry had no ``stage`` though a status had been seen
    ("[0.0s] enumerating" on standard error; docs/cli.md: "``stage`` where a status was seen"), as ``submit --wait``'s
    has. Seen live against devhost: ``"tasks": [{"id": ..., "state": "running"}]`` after "starting" was shown."""
    from cli import main as cli_main

    polls: list[str] = []

    class Client(_FolderClient):
        def status(self, task_id: str) -> dict[str, Any]:
            polls.append(task_id)
            if len(polls) > 1:
                raise KeyboardInterrupt
            return {"id": task_id, "runtime_status": "Running", "stage": "enumerating"}

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    monkeypatch.setattr(cli_main.time, "sleep", lambda seconds: None)
    monkeypatch.setattr("cli.progress.time.sleep", lambda seconds: None)
    assert cli_main.main(["estimate", "--container", "traps", "--prefix", "p/", "--json"]) == 130
    tasks = _stopped_json(capsys.readouterr())["tasks"]
    assert tasks == [{"id": "task-00000000000000000001", "state": "running", "stage": "enumerating"}], tasks


def test_ctrl_c_after_submit_wait_json_printed_its_answer_prints_no_second_json(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C once ``submit --wait --json`` had printed the task's final status (while it said how the task ended on
    standard error) added the Ctrl-C object after it: two JSON documents, which ``json.load`` of standard output
    refuses. Standard output keeps the one answer; standard error says the stop; exit 130."""
    from cli import main as cli_main

    task = "task-0123456789abcdef0123"

    class Client:
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            return {"id": task, "started": True}

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "runtime_status": "Completed", "stage": "completed", "images": 7}

    def stopped(st: dict[str, Any]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main, "_finish", stopped)
    assert cli_main.main(["submit", "--container", "traps", "--wait", "--plain", "--json"]) == 130
    captured = capsys.readouterr()
    shown = json.loads(captured.out)  # one document: the task's status
    assert shown["id"] == task and shown["stage"] == "completed" and "interrupted" not in shown, shown
    assert "Ctrl-C" in captured.err


def test_repeats_output_names_the_fields_the_app_names_in_its_prose_as_flags(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The repeats listing's hints were in the CLI's words but for a field the app names unquoted in its prose: the
    skipped folders' "more than max_folder_detections (800000) eligible detections" and ``--open``'s "expired
    (previews_expire_days)", where the CLI's flags are --max-folder-detections and --previews-expire-days (seen live
    against devhost). A name with an underscore that is a flag's field is shown as that flag; a dotted path or an
    environment variable is not a field."""
    from api.starters import no_preview_pages
    from cli import main as cli_main
    from cli.hints import named_as_flags
    from core.repeats import RepeatOptions, skipped_summary

    task = "task-0123456789abcdef0123"
    skipped = skipped_summary([("cam1", 900_000)], RepeatOptions(max_folder_detections=800_000))

    class Client:
        def repeats(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "locations": [], "search": "s1", "search_options": {}, "removal": None,
                    "skipped_folders": skipped}

        def results(self, task_id: str) -> dict[str, Any]:
            return {"previews": {"container": "$web", "error": no_preview_pages(task)}}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setattr(cli_main.click, "launch", lambda target: 0)
    assert cli_main.main(["repeats", task, "--open"]) == 0
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())
    assert "max_folder_detections" not in said and "previews_expire_days" not in said, said
    assert "holds more than --max-folder-detections (800000) eligible detections" in said, said
    assert "or expired (--previews-expire-days)" in said, said
    flags = {"max_failed_fraction": "--max-failed-fraction"}
    not_fields = "see results.max_failed_fraction, TRAPBATCH_MAX_FAILED_FRACTION and ?max_failed_fraction=1"
    assert named_as_flags(not_fields, flags) == not_fields
    raised = named_as_flags("raise max_failed_fraction, or threshold", flags)
    assert raised == "raise --max-failed-fraction, or threshold", raised


class _FoundEndedClient(_FolderClient):
    """Folder ``ended``'s request finds its task, which had ended ``completed_with_errors`` before (no --rerun)."""

    def __init__(self, ended: str, stops: str = "") -> None:
        super().__init__()
        self.ended, self.stops = ended, stops

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["prefix"].rstrip("/").endswith(self.stops or "-"):
            raise KeyboardInterrupt
        answer = super().submit(body)
        if answer["folder"] == self.ended:
            return {**answer, "started": False, "stage": "completed_with_errors"}
        return answer

    def status(self, task_id: str) -> dict[str, Any]:
        raise KeyboardInterrupt


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_while_submit_per_folder_waits_does_not_say_a_task_found_ended_keeps_running(
        as_json: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --folder camera-03/2024-06-02 --folder camera-01 --wait --json``, camera-01's task found ended
    before, Ctrl-C while the new task was followed (seen live against devhost): standard error said "tasks <new>
    (folder camera-03/2024-06-02), <camera-01's> (folder camera-01) keep running" and told to watch both, while the
    JSON said camera-01's "state": "ended". The task found ended is said as ended, with its stage, and not to be
    followed; the message and hint of the JSON are standard error's."""
    from cli import main as cli_main

    client = _FoundEndedClient(ended="b")
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--wait", "--plain"]
    assert cli_main.main([*args, *(["--json"] if as_json else [])]) == 130
    captured = capsys.readouterr()
    said = " ".join(captured.err.split())
    a, b = "task-00000000000000000001", "task-00000000000000000002"
    assert f"task {a} (folder a) keeps running" in said and f"{b} (folder b) keep" not in said, said
    assert f"task {b} (folder b) had ended completed_with_errors before" in said, said
    assert f"trapbatch watch {a} to follow it again" in said and f"trapbatch watch {b}" not in said, said
    if as_json:
        shown = _stopped_json(captured)
        assert [t["state"] for t in shown["tasks"]] == ["running", "ended"], shown
        assert f"{b} (folder b) keep" not in shown["message"] and f"watch {b}" not in shown["hint"], shown


def test_ctrl_c_while_submit_per_folder_posts_does_not_say_a_task_found_ended_keeps_running(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while b's request was posted, a's task found ended before: "task <a's> (folder a) keeps running"."""
    from cli import main as cli_main

    client = _FoundEndedClient(ended="a", stops="b")
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--json"]
    assert cli_main.main(args) == 130
    captured = capsys.readouterr()
    said = " ".join(captured.err.split())
    a = "task-00000000000000000001"
    assert "keeps running" not in said and f"task {a} (folder a) had ended completed_with_errors before" in said, said
    assert [t["state"] for t in _stopped_json(captured)["tasks"]] == ["ended", "unanswered"]


def test_ctrl_c_while_estimate_per_folder_waits_does_not_say_an_estimate_made_before_keeps_listing(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --folder camera-02/2024-06-02 --folder camera-01 --json``, camera-01's estimate made before (its
    request answered with it, ended ``estimated``), Ctrl-C while the first was listing (seen live against devhost):
    standard error said both "keep listing in the app" and the JSON said camera-01's ``"state": "running"``. It is
    said as ended, with its stage, in both."""
    from cli import main as cli_main

    class Client(_FolderClient):
        def submit(self, body: dict[str, Any]) -> dict[str, Any]:
            answer = super().submit(body)
            return {**answer, "started": False, "stage": "estimated"} if answer["folder"] == "b" else answer

        def status(self, task_id: str) -> dict[str, Any]:
            raise KeyboardInterrupt

    client = Client()
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: client))
    args = ["estimate", "--container", "traps", "--folder", "a", "--folder", "b", "--json"]
    assert cli_main.main(args) == 130
    captured = capsys.readouterr()
    said = " ".join(captured.err.split())
    a, b = "task-00000000000000000001", "task-00000000000000000002"
    assert f"estimate {a} (folder a) keeps listing in the app" in said, said
    assert f"estimate {b} (folder b) had ended estimated before" in said and f"{b} (folder b) keep" not in said, said
    assert _stopped_json(captured)["tasks"] == [
        {"id": a, "folder": "a", "state": "running"},
        {"id": b, "folder": "b", "state": "ended", "stage": "estimated"}]


def test_a_409_about_a_tasks_state_names_the_fields_in_its_prose_as_flags_and_a_400_keeps_them() -> None:
    """``trapbatch previews <id> --threshold`` of a task whose pages were deleted: the 409's hint said "or expired
    (previews_expire_days)", the API's field, where the CLI's flag is --previews-expire-days (a helper's exploration
    on devhost). A 409 is about the task's state, like a task's own answers (``named_as_flags``); a 400 is about the
    request, whose fields stay fields."""
    from api.starters import previews_gone
    from cli.errors import CliError
    from cli.main import hint_of

    task = "task-0123456789abcdef0123"
    gone = {"error": f"task {task} has no preview pages to re-render", "hint": f"{previews_gone(task)}, or ..."}
    client, _ = _client(_Answers((409, {"_body": json.dumps(gone)})))
    with pytest.raises(CliError) as refused:
        client.rerender_previews(task, 0.3)
    said = hint_of(refused.value)
    assert "or expired (--previews-expire-days)" in said and "previews_expire_days" not in said, said
    assert f"trapbatch previews {task} --delete" in said, said
    invalid = {"error": "unknown field 'threshold'", "hint": "did you mean preview_threshold? allowed fields: ..."}
    client, _ = _client(_Answers((400, {"_body": json.dumps(invalid)})))
    with pytest.raises(CliError) as bad:
        client.submit({"container": "traps", "threshold": 0.3})
    assert hint_of(bad.value) == "did you mean preview_threshold? allowed fields: ..."


def test_a_request_files_unknown_field_hint_keeps_the_request_fields_it_lists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The hint of a request file's unknown field lists the fields that file takes ("did you mean preview_threshold?
    allowed fields: container, prefix, first_n, ..."): shown as flags (--preview-threshold, --first-n), the list
    mixed flags with fields (container, clock_corrections) and named no field to write in the file."""
    from cli import main as cli_main

    request = tmp_path / "request.json"
    request.write_text('{"container": "traps", "threshold": 0.2}', encoding="utf-8")
    assert cli_main.main(["submit", str(request)]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "did you mean preview_threshold? allowed fields: container, prefix, first_n, sample_n," in said, said
    assert "--" not in said.split("next:", 1)[1], said


class _RerunApp:
    """An app that does with a folder's request what api/starters.py ``start_task`` does: a request with "rerun"
    (or "only_new") of a task still running is refused (409, ``TaskStillRunning``), one of a task that ended starts
    it again; one without finds a task that ran. The tasks of ``ran`` ended before; Ctrl-C comes while the request
    of ``stops`` is posted, after the app took it (``took``) or before."""

    def __init__(self, ran: str = "", stops: str = "", took: bool = True, refuses: str = "") -> None:
        self.running: set[str] = set()
        self.ended: set[str] = set(ran)
        self.stops, self.took, self.refuses = stops, took, refuses
        self.posted: list[str] = []
        self.started: list[str] = []

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        folder = body["prefix"].rstrip("/").rsplit("/", 1)[-1]
        self.posted.append(folder)
        task_id = f"task-{folder:0>20}"
        if folder == self.refuses:
            self.refuses = ""  # refused once (e.g. 429, too many running tasks)
            raise CliError("POST /api/tasks answered 429: too many running tasks", "wait for one to finish")
        again = bool(body.get("rerun") or body.get("only_new"))
        if folder in self.running and again:
            raise CliError(f"POST /api/tasks answered 409: task {task_id} is still running", "wait until it ends")
        if folder in self.running or (folder in self.ended and not again):
            return {"id": task_id, "started": False,
                    "stage": "detecting" if folder in self.running else "completed"}
        if folder == self.stops:
            self.stops = ""
            if self.took:
                self.running.add(folder)
                self.started.append(folder)
            raise KeyboardInterrupt
        self.running.add(folder)
        self.started.append(folder)
        return {"id": task_id, "started": True}


def _named_folders(hint: str, flag: str) -> list[str]:
    """The folders of the command a hint names: "run the command with <flag> and only --folder x --folder y"."""
    import re
    import shlex

    found = re.search(rf"run the command with {flag} and only ((?:--folder \S+ ?)+)", hint)
    assert found, hint
    return shlex.split(found.group(1))[1::2]


@pytest.mark.parametrize("flag", ["--rerun", "--only-new"])
@pytest.mark.parametrize("took", [True, False])
def test_ctrl_c_while_submit_per_folder_posts_a_rerun_names_a_command_that_sends_the_folders_left(
        flag: str, took: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --folder a --folder b --folder c --rerun`` stopped with Ctrl-C while b's request was posted said "run
    the same command again: the tasks already started are found again, not run twice". With --rerun (or
    --only-new) the app refuses a task still running (409, api/starters.py ``start_task``), so that command was
    refused for a's task, and c was never sent. The hint (and the --json object's) names the command that sends
    c's and b's requests, not a's (b last: the app may have taken it), and how to follow a's task."""
    from cli import main as cli_main

    app = _RerunApp(ran="abc", stops="b", took=took)
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: app))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c", flag]
    assert cli_main.main([*args, "--json"]) == 130
    captured = capsys.readouterr()
    shown = _stopped_json(captured)
    said = " ".join(captured.err.split())
    for hint in (shown["hint"], said):
        assert "run the same command again" not in hint and "found again" not in hint, hint
        assert "trapbatch watch task-0000000000000000000a" in hint, hint
    assert _named_folders(said, flag) == _named_folders(shown["hint"], flag) == ["c", "b"], said
    # what the app does with the same command, as the hint says: a's task refused, b and c not sent
    app.posted.clear()
    assert cli_main.main(args) == 4
    assert app.posted == ["a"], app.posted
    capsys.readouterr()
    # the command the hint names sends c (started) and b (started unless the app had taken it before Ctrl-C)
    app.posted.clear()
    named = [arg for folder in _named_folders(said, flag) for arg in ("--folder", folder)]
    assert cli_main.main(["submit", "--container", "traps", *named, flag]) == (4 if took else 0)
    assert app.posted == ["c", "b"], app.posted
    assert app.started == (["a", "b", "c"] if took else ["a", "c", "b"]), app.started


def test_ctrl_c_while_estimate_per_folder_posts_with_fresh_names_a_command_that_counts_the_folders_left(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``estimate --folder a --folder b --folder c --fresh``, Ctrl-C while b's request was posted: the hint said to
    run the same command again, which the app refuses for a's estimate while it lists (409) and so never sends c."""
    from cli import main as cli_main

    app = _RerunApp(ran="abc", stops="b")
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: app))
    args = ["estimate", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c", "--fresh"]
    assert cli_main.main([*args, "--json"]) == 130
    hint = _stopped_json(capsys.readouterr())["hint"]
    assert "run the same command again" not in hint and "an estimate still listing (409)" in hint, hint
    assert "trapbatch status task-0000000000000000000a" in hint and _named_folders(hint, "--fresh") == ["c", "b"]


def test_a_refused_folder_of_a_rerun_per_folder_names_a_command_that_sends_the_folders_left(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``submit --folder a --folder b --folder c --rerun``, b's request refused (429): c's "not sent" said "run the
    same command again once that is fixed: the tasks already started are found again, not run twice", which the
    app refuses for a's task while it runs (409) and, once it has ended, runs it a second time. Without --rerun the
    same command is right and still named."""
    from cli import main as cli_main

    app = _RerunApp(ran="abc", refuses="b")
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: app))
    args = ["submit", "--container", "traps", "--folder", "a", "--folder", "b", "--folder", "c"]
    assert cli_main.main([*args, "--rerun", "--json"]) == 4
    c = json.loads(capsys.readouterr().out)[-1]
    assert c["folder"] == "c" and c["error"].startswith("not sent"), c
    assert "found again" not in c["hint"] and c["hint"].startswith("once that is fixed, not the same command"), c
    assert "trapbatch watch task-0000000000000000000a" in c["hint"] and _named_folders(c["hint"], "--rerun") == [
        "c", "b"], c
    app.posted.clear()
    assert cli_main.main(["submit", "--container", "traps", "--folder", "c", "--folder", "b", "--rerun"]) == 0
    assert app.started == ["a", "c", "b"], app.started
    capsys.readouterr()

    app = _RerunApp(refuses="b")
    monkeypatch.setattr(cli_main.State, "client", property(lambda self: app))
    assert cli_main.main([*args, "--json"]) == 4
    c = json.loads(capsys.readouterr().out)[-1]
    assert c["hint"] == ("run the same command again once that is fixed: the tasks already started are found again, "
                         "not run twice"), c


def test_submit_help_says_every_ending_that_exits_1_and_every_ended_task_rerun_runs_again() -> None:
    """``exit_code_for`` gives 1 to a task that failed, was cancelled, terminated or expired (never confirmed), as
    docs/cli.md's table and ``trapbatch --help`` say; ``submit --help`` said "1 failed or cancelled". And ``--rerun``
    runs a failed task again too (README ``rerun``), where its help listed "completed, cancelled" only."""
    from core.contracts import Stage

    for stage in (Stage.failed, Stage.cancelled, Stage.terminated, Stage.expired):
        runtime = "Terminated" if stage == Stage.terminated else "Completed" if stage != Stage.failed else "Failed"
        assert exit_code_for({"runtime_status": runtime, "stage": stage}) == 1, stage
    helped = " ".join(CliRunner().invoke(cli, ["submit", "--help"], terminal_width=400).output.split())
    assert "(1 failed, cancelled, terminated or expired, 3 completed with errors" in helped, helped
    assert "run a task that already ended (completed, failed or cancelled) again" in helped, helped


def test_estimate_help_names_every_setting_its_figures_come_from() -> None:
    """An estimate prices the node time at TRAPBATCH_NODE_PRICE_PER_HOUR, else at the list price of the pool's
    TRAPBATCH_POOL_VM_SIZE (core/cost.py; docs/cli.md, README ``dry_run``): ``estimate --help`` named the first only,
    so an operator without the override could not tell where the cost came from."""
    helped = " ".join(CliRunner().invoke(cli, ["estimate", "--help"], terminal_width=400).output.split())
    for setting in ("TRAPBATCH_WORKER_IMAGES_PER_S", "TRAPBATCH_POOL_NODES", "TRAPBATCH_NODE_PRICE_PER_HOUR",
                    "TRAPBATCH_POOL_VM_SIZE"):
        assert setting in helped, setting


def test_the_summary_says_how_many_shard_groups_are_not_in_its_counts_yet(capsys: pytest.CaptureFixture[str]) -> None:
    """A group whose first work item is not stored yet shows no custom status (null on Azure): its images are in
    none of the counts, so the summary says so rather than let the counts look short."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "detecting", "images": 30000, "images_done": 100, "groups_unknown": 2})
    out = " ".join(capsys.readouterr().out.split())
    assert "2 shard groups not reporting yet" in out and "none of the counts" in out
    _summary({"id": "task-0", "stage": "detecting", "images": 30000, "images_done": 100})
    assert "not reporting" not in capsys.readouterr().out


def test_the_summary_says_shard_groups_that_ended_without_counts_are_not_starting(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A group that failed or was terminated before it showed counts will not report: said as ended, not as
    "starting ... not reporting yet". Fails without the change (nothing was said of them)."""
    from cli.main import _summary

    _summary({"id": "task-0", "stage": "detecting", "images": 30000, "images_done": 100,
              "groups_ended_without_counts": 1, "groups_unknown": 2})
    out = " ".join(capsys.readouterr().out.split())
    assert "1 shard group ended (failed or terminated) without reporting" in out and "will not be" in out
    assert "2 shard groups not reporting yet" in out
    _summary({"id": "task-0", "stage": "detecting", "images": 30000, "images_done": 100,
              "groups_ended_without_counts": 3})
    out = " ".join(capsys.readouterr().out.split())
    assert "3 shard groups ended" in out and "not reporting yet" not in out


def test_status_watch_and_list_say_a_stalled_task_and_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The status's ``stalled`` (core.stall: a running task with no change for longer than its stage's waits explain,
    which on Azure never ends by itself): ``trapbatch status`` says since when and the app's hint in the CLI's words;
    ``watch``'s line says it once (the same from poll to poll), and its bar above the bar; ``list`` beside the stage.
    Before, each showed the stage alone, "enumerating" for ever."""
    import io

    import cli.main as cli_main
    from cli.main import _summary
    from cli.progress import BarReporter, LineReporter
    from core.stall import stalled_hint

    since = "2026-12-05T15:00:00+00:00"
    st = {"id": T1, "runtime_status": "Running", "stage": "enumerating", "updated": since,
          "stalled": {"since": since, "seconds": 4 * 3600, "limit_seconds": 4800,
                      "hint": stalled_hint(T1, "enumerating", 4 * 3600, 4800)}}
    _summary(st)
    printed = capsys.readouterr().out
    shown = " ".join(printed.split())
    assert f"updated {since}" in shown and f"STALLED no change since {since} (240 minutes)" in shown, shown
    assert "submit the same request again, without --rerun or --only-new" in shown, shown
    assert f"terminate it (trapbatch terminate {T1})" in shown, shown  # the CLI's command, not the app's route

    lines: list[str] = []
    log = LineReporter(lines.append)
    log(st)
    log({**st, "stalled": {**st["stalled"], "seconds": 4 * 3600 + 2}})  # polled again: nothing new to say
    assert len(lines) == 1 and f"enumerating; STALLED: no change since {since}" in lines[0], lines
    assert f"'trapbatch status {T1}' says what to do" in lines[0]
    out = io.StringIO()
    bar = BarReporter(cli_main.Console(file=out, force_terminal=False, width=400), T1)
    bar(st)
    bar(st)
    bar.close()
    assert out.getvalue().count("STALLED: no change since") == 1, out.getvalue()

    class Lister:
        def __init__(self, config: Any) -> None:
            pass

        def list(self, limit: int) -> dict[str, Any]:
            return {"tasks": [{"id": T1, "stage": "merging", "stalled": st["stalled"]},
                              {"id": "task-" + "1" * 20, "stage": "merging"},
                              {"id": "task-" + "2" * 20, "stage": "detecting", "note": "whether it stalled was not"}],
                    "total": 3}

    monkeypatch.setattr(cli_main, "ApiClient", Lister)
    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=120, highlight=False, soft_wrap=True))
    assert main(["--url", "http://127.0.0.1:9", "--key", "k", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert "merging STALLED" in next(r for r in rows if T1 in r)
    assert "STALLED" not in next(r for r in rows if "task-" + "1" * 20 in r)
    # a detecting task the app could not judge (its groups not read for the list: its ``note``) is marked, and how to
    # find out is said once
    assert "detecting ?" in next(r for r in rows if "task-" + "2" * 20 in r), rows
    said = [r for r in rows if r.startswith("?: ")]
    assert len(said) == 1 and f"'trapbatch status task-{'2' * 20}' says" in said[0], rows
    # the line claims nothing the app did not judge: a task detecting for hours has an own orchestration quiet that
    # long by design (it waits on its shard groups, which are what moves), so '?' is "not judged", never "quiet"
    assert "quiet" not in said[0] and "not judged" in said[0] and "shard groups" in said[0], said


def test_terminate_posts_the_route_with_the_reason_and_says_the_apps_answer_in_the_clis_words(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``trapbatch terminate <task> [--reason TEXT]``: POST /api/tasks/<task>/terminate with the function key in its
    header (never the Durable management API's system key), ``{"reason": ...}`` only when one was given; a 409 shows
    the app's hint as the CLI's commands."""
    import cli.main as cli_main
    from cli.client import ApiClient

    hint = ('only a running task can be terminated; post the same request again, without \\"rerun\\" or '
            '\\"only_new\\", to resume it')
    session = _Answers(202, 202, (409, {"_body": f'{{"error": "task {T1} is not running (stage: terminated)", '
                                                f'"hint": "{hint}"}}'}))
    monkeypatch.setattr(cli_main, "ApiClient", lambda config: ApiClient(config, session=session,  # type: ignore[arg-type]
                                                                        sleep=lambda s: None))
    base = ["--url", "https://app.example", "--key", "k", "terminate", T1]
    assert main([*base, "--reason", "stalled since Monday"]) == 0
    assert main(base) == 0
    first, second = session.sent[:2]
    assert first["method"] == "POST" and first["url"] == f"https://app.example/api/tasks/{T1}/terminate"
    assert first["json"] == {"reason": "stalled since Monday"} and second["json"] is None
    assert session.headers.get("x-functions-key") == "k"  # the session's header (cli.client), never the URL
    assert "code=" not in first["url"] and "durabletask" not in first["url"]
    assert f"terminated {T1}" in capsys.readouterr().out
    assert main(base) == 4  # the app refused (docs/cli.md, exit codes)
    said = " ".join(capsys.readouterr().err.split())
    assert "is not running (stage: terminated)" in said, said
    assert "submit the same request again, without --rerun or --only-new, to resume it" in said, said


def test_terminate_says_what_became_of_the_done_files_the_app_wrote_for_the_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The 202's ``drop_answers`` (api.terminated_answers): the files written and what they say, or that they were
    not, with the app's hint in the CLI's words; nothing where the answer has none (a run started over HTTP)."""
    import cli.main as cli_main

    answers = [{"written": True, "stage": "terminated", "done_file": "incoming/a.done.json", "joined": 2},
               {"written": False, "reason": "storage said [403]", "hint": 'post the same request again, without '
                                                                         '"rerun" or "only_new", to resume it'},
               None]

    class Terminating:
        def __init__(self, config: Any) -> None:
            pass

        def terminate(self, task_id: str, reason: str, target: str) -> dict[str, Any]:
            found = answers.pop(0)
            return {"id": task_id, "hint": "its stage becomes 'terminated'",
                    **({"drop_answers": found} if found is not None else {})}

    monkeypatch.setattr(cli_main, "ApiClient", Terminating)
    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=300, highlight=False, soft_wrap=True))
    base = ["--url", "https://app.example", "--key", "k", "terminate", T1]
    assert main(base) == 0
    said = capsys.readouterr().out
    assert ("done files written (incoming/a.done.json, 2 beside the dropped requests that joined it): they say "
            "terminated") in said, said
    assert main(base) == 0
    said = capsys.readouterr().out
    assert "done files NOT written (storage said [403]); next: submit the same request again, without --rerun or " \
        "--only-new, to resume it" in said, said
    assert main(base) == 0
    assert "done files" not in capsys.readouterr().out


def test_terminate_says_which_done_files_were_written_where_the_answers_deadline_cut_them_short(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``drop_answers`` written false with the own drop's file and some joined ones written (api.terminated_answers:
    the 202's deadline): the line names those, not "NOT written" alone."""
    import cli.main as cli_main

    cut = {"written": False, "stage": "terminated", "done_file": "incoming/a.done.json", "joined": 3,
           "reason": "the answer's time ran out (x) after 3 of the joined requests' files: the others were not "
                     "written", "hint": 'post the same request again, without "rerun" or "only_new", to resume it'}

    class Terminating:
        def __init__(self, config: Any) -> None:
            pass

        def terminate(self, task_id: str, reason: str, target: str) -> dict[str, Any]:
            return {"id": task_id, "hint": "its stage becomes 'terminated'", "drop_answers": cut}

    monkeypatch.setattr(cli_main, "ApiClient", Terminating)
    monkeypatch.setattr(cli_main, "out", cli_main.Console(width=300, highlight=False, soft_wrap=True))
    assert main(["--url", "https://app.example", "--key", "k", "terminate", T1]) == 0
    said = capsys.readouterr().out
    assert ("done files written in part (incoming/a.done.json, 3 beside the dropped requests that joined it): they "
            "say terminated; the others NOT (the answer's time ran out") in said, said
    assert "next: submit the same request again, without --rerun or --only-new, to resume it" in said, said


@pytest.mark.parametrize("reason, said", [("r" * 201, "longer than 200 characters"),
                                          ("stalled\nsince Monday", "control characters")])
def test_terminate_refuses_a_reason_the_app_would_refuse_before_sending_it(
        reason: str, said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``--reason`` is checked as the app checks it (core.requests ``parse_terminate``), as ``previews --threshold``
    is: a bad argument exits 2 with nothing sent (docs/cli.md, exit codes). It was sent, and the app's 400 exited 4,
    'the app could not be reached, or refused the request'."""
    import cli.main as cli_main
    from cli.client import ApiClient

    session = _Answers(202)
    monkeypatch.setattr(cli_main, "ApiClient", lambda config: ApiClient(config, session=session,  # type: ignore[arg-type]
                                                                        sleep=lambda s: None))
    assert main(["--url", "https://app.example", "--key", "k", "terminate", T1, "--reason", reason]) == 2
    assert session.sent == []
    assert said in " ".join(capsys.readouterr().err.split())


# ------------------------------------------------------------------ a closed standard output (trapbatch list | head -1)
def _run_into_closed_pipe(args: list[str], url: str, tmp_path: Path, stderr_too: bool = False) -> tuple[int, str]:
    """Run ``python -m cli <args>`` with standard output a pipe whose reader closed before the CLI wrote (what
    ``| head -1`` leaves once head has its line; and standard error too with ``stderr_too``, as ``2>&1 | head``):
    its exit code and what it said on standard error."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write raises EPIPE (Python ignores SIGPIPE)
    env = {**os.environ, "TRAPBATCH_URL": url, "TRAPBATCH_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "100"}
    env.pop("TRAPBATCH_KEY", None)
    try:
        done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, stdout=write_end,
                              stderr=write_end if stderr_too else subprocess.PIPE, timeout=300)
    finally:
        os.close(write_end)
    return done.returncode, (done.stderr or b"").decode("utf-8", "replace")


def test_a_closed_standard_output_ends_the_cli_quietly_as_a_unix_tool(tmp_path: Path) -> None:
    """``trapbatch list | head -1`` ended with exit 1, the CLI's "the task failed" (click's answer to EPIPE, and
    rich's). Now 141 (128 + SIGPIPE, as a shell reports ``yes | head -1``) and nothing on standard error: for a
    command's table (rich), its --json (click's echo), --help and --version (written while click parses the
    arguments), and standard error closed with it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    tasks = [{"id": f"task-{i:020x}", "stage": "completed", "images": 41, "created": "2026-12-07T21:00:00+00:00",
              "request_name": f"site {i}"} for i in range(200)]

    class Tasks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = json.dumps({"tasks": tasks, "total": len(tasks)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tasks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for args in (["list"], ["list", "--json"], ["--help"], ["--version"], ["list", "--help"], ["config"]):
            code, said = _run_into_closed_pipe(args, url, tmp_path)
            assert (code, said) == (141, ""), (args, code, said)
        assert _run_into_closed_pipe(["list"], url, tmp_path, stderr_too=True) == (141, "")
    finally:
        server.shutdown()
