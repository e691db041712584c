"""The documents against the repository: what README.md, docs/ and devhost/README.md name must exist with that name.

Why: the docs are the operator's manual, and each of these drifted once without a test noticing (settings and their
bounds are checked in test_settings.py, the CLI's commands and options in test_cli.py, the request fields and their
ranges in test_openapi.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "devhost" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _doc_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


def test_every_make_target_is_in_the_readme_and_every_one_named_exists() -> None:
    """``make bench`` and ``make clean`` were in the Makefile only; a ``make X`` the docs show that the Makefile
    lacks fails at once for whoever copies it."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())  # type: ignore[union-attr]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted(t for t in targets if not re.search(rf"`(?:[A-Z_]+=\S+ )*make {t}\b", readme)) == []
    named = set(re.findall(r"`(?:[A-Z_]+=\S+ )*make ([a-z][a-z-]*)", _doc_text()))
    assert sorted(named - targets) == []
    # the Makefile's own variables the docs tell users to set exist there
    for variable in set(re.findall(r"`make [a-z-]+ ([A-Z_]+)=", _doc_text())):
        assert re.search(rf"^{variable} \??=", makefile, re.M), variable


TOP = "|".join(["activities", "adapters", "api", "bench", "cli", "core", "devhost", "docs", "gpu_batch", "infra",
                "orchestrations", "samples", "scripts", "requirements", "tests"])  # the folders a path starts with


def test_every_repository_path_and_test_the_docs_name_exists() -> None:
    """A path the docs give (``core/settings.py``, ``tests/unit/test_x.py::test_y``) that was moved or renamed sends
    the reader nowhere. Paths after a ``/`` are URLs (``/api/tasks``); files the code writes at run time are not in
    the repository (``devhost/.function-key``); ``bench/results/logs/2026-12-04-h200-*`` is the start of some."""
    written_at_run_time = {"devhost/.function-key"}
    gone = []
    for doc in DOCS + [ROOT / "bench" / "RESULTS.md"]:
        text = doc.read_text(encoding="utf-8")
        for path, after in set(re.findall(rf"(?<![\w/.-])((?:{TOP})/[\w./-]*\w)(.{{0,2}})", text)):
            module = re.sub(r"\.\w+$", ".py", path)  # ``adapters/blob_requests.get_range``: a module's name
            if path in written_at_run_time or (ROOT / path).exists() or (ROOT / module).is_file():
                continue
            pattern = after.lstrip("-.")[:1] in ("*", "<")  # the start of a pattern's names
            if pattern and list((ROOT / path).parent.glob((ROOT / path).name + "*")):
                continue
            gone.append(f"{doc.relative_to(ROOT)}: {path}")
        for path, test in set(re.findall(rf"(?<![\w/.-])((?:{TOP})/[\w/]+\.py)::(\w+)", text)):
            if (ROOT / path).exists() and not re.search(rf"^\s*(?:async )?def {test}\(",
                                                         (ROOT / path).read_text(encoding="utf-8"), re.M):
                gone.append(f"{doc.relative_to(ROOT)}: {path}::{test}")
    assert sorted(gone) == [], sorted(gone)


def test_the_notification_fields_docs_cli_md_lists_are_those_it_carries() -> None:
    """docs/cli.md "Word when a task ends" is what a receiver's author codes against: it said the previews carried
    "only" five fields while the notification carried seven (``container`` and ``readme_error`` too)."""
    from core.notify import PREVIEW_KEYS, STATUS_KEYS

    section = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split("## Word when a task ends")[1]
    named = set(re.findall(r"`(\w+)`", section))
    assert sorted(set(STATUS_KEYS) - named) == [] and sorted(set(PREVIEW_KEYS) - named) == []


def test_the_readmes_core_tools_steps_run_func_in_the_virtual_environment_they_fill() -> None:
    """Core Tools starts the Python worker with the ``python`` on PATH (functions-run-local: Python's Core Tools
    commands run in a virtual environment), and the local pool starts its workers with that same interpreter
    (``sys.executable``). The steps installed requirements/app.txt into a ``.venv`` that nothing had created and ran
    ``func host start`` outside it: the system Python had neither the app's packages nor the worker's."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "func host start" in b)
    steps = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    start = steps.index("func host start")
    activate = next(i for i, step in enumerate(steps) if step in (". .venv/bin/activate", "source .venv/bin/activate"))
    setup = next(i for i, step in enumerate(steps) if step == "make setup")
    assert setup < activate < start, steps
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "requirements/worker.txt" in makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]


def test_the_numbers_the_docs_give_for_the_codes_own_constants_are_theirs() -> None:
    """A deadline, limit or retry count the docs state beside the constant that holds it (or for the one behaviour it
    governs) is what an operator plans with: a timeout to set on a gateway, how long a client waits, how many tries
    a hook makes. Each is checked against the constant, so a changed value fails here until the docs say it."""
    from activities.zooniverse_captures import RUN_RECORDS
    from api.arrivals import MARKER_ANSWER_S, MARKER_DELIVERY_DEADLINE_S
    from api.starters import (BUSY_TRY_WAIT_S, CALLER_WRITABLE_MAX_BYTES, INSTANCE_LIST_TIMEOUT_S, POST_ANSWER_S,
                              POST_CHECKS_DEADLINE_S)
    from cli import client, download, zooniverse_upload
    from gpu_batch.storage_refs import HOST_ASK_EVERY_S, HOST_GONE_AFTER_S
    from orchestrations.task import NOTIFY_RETRY

    def flat(path: str) -> str:
        return " ".join((ROOT / path).read_text(encoding="utf-8").split())

    def minutes(seconds: float) -> str:
        return {60: "a minute", 120: "two minutes"}[int(seconds)]

    notify = [NOTIFY_RETRY.delay_s(n) for n in range(1, NOTIFY_RETRY.attempts)]
    schedule = (f"{notify[0]:g} s, " + ", ".join(f"{d / 60:g}" for d in notify[1:-1])
                + f" and {notify[-1] / 60:g} minutes")
    hook = (ROOT / "infra" / "hooks" / "postdeploy.sh").read_text(encoding="utf-8")
    hook_default = {name: re.search(rf"\${{{name}:-(\d+)}}", hook).group(1)  # type: ignore[union-attr]
                    for name in ("TRAPBATCH_KEY_ATTEMPTS", "TRAPBATCH_KEY_WAIT_S", "TRAPBATCH_SUBSCRIBE_ATTEMPTS",
                                 "TRAPBATCH_SUBSCRIBE_WAIT_S")}
    said = {
        "README.md": [
            f"all together at most {POST_CHECKS_DEADLINE_S:g} s (`api/starters.py` `POST_CHECKS_DEADLINE_S`)",
            f"within {POST_ANSWER_S:g} s (`POST_ANSWER_S`",
            f"over {CALLER_WRITABLE_MAX_BYTES // 2 ** 20} MiB, far more than trapbatch writes there",
            f"the trigger waits {minutes(BUSY_TRY_WAIT_S)} before it fails",
            f"asked again every {HOST_ASK_EVERY_S:g} s for {minutes(HOST_GONE_AFTER_S)} (`adapters/storage_errors.py`",
            f"Each delivery ends within {MARKER_DELIVERY_DEADLINE_S:g} s (`api/arrivals.py` "
            f"`MARKER_DELIVERY_DEADLINE_S`: its storage and Key Vault calls get "
            f"{MARKER_DELIVERY_DEADLINE_S - MARKER_ANSWER_S:g} s",
            f"{minutes(HOST_GONE_AFTER_S)} (`gpu_batch/worker/sources.py` `GONE_AFTER_S`)",
            f"asking DNS again every {HOST_ASK_EVERY_S:g} s",
            f"503 with what to do if that takes over {INSTANCE_LIST_TIMEOUT_S:g} s",
            f"in runs of at most {RUN_RECORDS:,}",
        ],
        "devhost/README.md": [
            f"`BUSY_TRY_WAIT_S`, {BUSY_TRY_WAIT_S:g} s",
            f"`MARKER_DELIVERY_DEADLINE_S` ({MARKER_DELIVERY_DEADLINE_S:g} s",
            f"`POST_CHECKS_DEADLINE_S`, {POST_CHECKS_DEADLINE_S:g} s",
        ],
        "docs/cli.md": [
            f"`list` waits up to {client.LIST_TIMEOUT_S:g} s (the app answers its own 503 at "
            f"{INSTANCE_LIST_TIMEOUT_S:g} s",
            f"({client.ATTEMPTS} requests at most", f"waiting its `Retry-After` up to {client.RETRY_AFTER_MAX_S:g} s",
            f"a file larger than {download.WINDOW // 2 ** 20} MiB", f"every {download.CHECKPOINT_S:g} seconds",
            f"last {download.CHECK_TAIL // 2 ** 20} MiB", f"{zooniverse_upload.FIRST_FAILURES} photos in a row",
            f"after {schedule}",
        ],
        "docs/deploy.md": [
            f"tried {hook_default['TRAPBATCH_KEY_ATTEMPTS']} times, {hook_default['TRAPBATCH_KEY_WAIT_S']} s apart",
            f"tried {hook_default['TRAPBATCH_SUBSCRIBE_ATTEMPTS']} times, "
            f"{hook_default['TRAPBATCH_SUBSCRIBE_WAIT_S']} s apart",
            f"retried after {schedule}",
        ],
    }
    unsaid = [f"{doc}: {words}" for doc, phrases in said.items() for words in phrases if words not in flat(doc)]
    assert unsaid == [], unsaid
    ps1 = (ROOT / "infra" / "hooks" / "postdeploy.ps1").read_text(encoding="utf-8")
    for name, value in hook_default.items():  # the Windows hook's defaults are the same
        assert re.search(rf"\$env:{name}\) {{[^}}]*}} else {{ {value} }}", ps1), name


def test_the_readme_names_every_setting_a_task_found_again_does_not_take_and_shows_the_start_answer_whole() -> None:
    """README "Start a task over HTTP" lists the request's settings that, posted with other values than the task
    found, are not applied but named in ``not_applied``: it left out ``camera_depth``, which ``api.starters``
    compares too, so a client that posted another depth took the answer for the task it wanted. And the 202 it shows
    carries every field of the answer, ``"started": true`` included (``TaskStarted`` requires it)."""
    from api import openapi
    from api.starters import SETTING_FIELDS

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    listed = re.search(r"Settings that are not part of the id \(([^)]*)\) posted with other values", readme)
    assert listed, "README says which settings a task found again does not take"
    assert re.findall(r"`(\w+)`", listed.group(1)) == list(SETTING_FIELDS)
    answer = re.search(r"# 202 (\{.*?\})(?: |$)", readme)
    assert answer, "README shows the 202 answer"
    shown = set(re.findall(r'"(\w+)":', answer.group(1)))
    schema = openapi.description("http://127.0.0.1:7071")["components"]["schemas"]["TaskStarted"]
    started = {"id", "started", "status_url", "results_url", "cancel_url"}  # a new task's: api.starters.post_task
    assert set(schema["required"]) <= started <= set(schema["properties"])
    assert shown == started, shown


def test_devhosts_readme_names_every_option_of_python_m_devhost_with_its_default() -> None:
    """devhost/README.md "Calling devhost" is its manual: ``--host`` (the address it binds, loopback unless told),
    ``--app`` and ``--azurite-location`` were in ``--help`` only, and ``--blob-poll-seconds`` without its default.
    Read from the parser's own ``add_argument`` calls, so a new option fails here until the README names it."""
    import ast

    source = (ROOT / "devhost" / "__main__.py").read_text(encoding="utf-8")
    readme = " ".join((ROOT / "devhost" / "README.md").read_text(encoding="utf-8").split())
    options = {}
    for call in ast.walk(ast.parse(source)):
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument"
                and isinstance(call.args[0], ast.Constant)):
            default = next((k.value for k in call.keywords if k.arg == "default"), None)
            options[call.args[0].value] = default.value if isinstance(default, ast.Constant) else None
    assert len(options) >= 14, options
    assert sorted(o for o in options if not re.search(rf"(?<![\w-]){o}(?![\w-])", readme)) == []
    for option in ("--host", "--app", "--azurite-location", "--blob-poll-seconds", "--port"):
        default = options[option]
        value = f"{default:g}" if isinstance(default, float) else str(default)
        assert re.search(rf"`{option}`[^`]{{0,20}}\(default `?{re.escape(value)}(?![\w.])", readme), option


def test_the_readme_names_every_option_of_the_gpu_workers_command() -> None:
    """README "The GPU worker" is where an operator reads the worker's command line (the pool's task command, local
    mode, ``TRAPBATCH_WORKER_TUNING``): ``--device``, ``--flush-seconds``, ``--log-seconds`` and
    ``--cudnn-benchmark-limit`` were in ``--help`` only. Read from the parser, so a new option fails here until the
    README names it; each default the README gives is the parser's."""
    from gpu_batch.worker.__main__ import _parser

    section = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split("## The GPU worker", 1)[1]
                       .split("\n## ", 1)[0].split())
    parser = _parser()
    flags = {flag: action for action in parser._actions for flag in action.option_strings if flag.startswith("--")}
    assert sorted(f for f in flags if f != "--help" and not re.search(rf"(?<![\w-]){f}(?![\w-])", section)) == []
    for flag, action in flags.items():
        said = re.search(rf"`{flag}(?: [^`]*)?` \([^)]*?\bdefault (\w[\w.]*)", section)
        if said and isinstance(action.default, (int, float, str)) and not isinstance(action.default, bool):
            assert said.group(1) == f"{action.default:g}" if isinstance(action.default, float) \
                else said.group(1) == str(action.default), flag


def test_the_readme_names_every_option_of_the_local_upload_script() -> None:
    """README "Without Core Tools: devhost" shows ``python -m scripts.upload_local CONTAINER FOLDER``; its
    ``--prefix`` (a folder in the container) and ``--connection`` (another account than ``$AzureWebJobsStorage``,
    else Azurite) were in ``--help`` only, so an upload under ``2024/site-a/`` meant moving the photos first."""
    import ast

    source = (ROOT / "scripts" / "upload_local.py").read_text(encoding="utf-8")
    options = [call.args[0].value for call in ast.walk(ast.parse(source))
               if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
               and call.func.attr == "add_argument" and isinstance(call.args[0], ast.Constant)
               and str(call.args[0].value).startswith("--")]
    assert options, "scripts/upload_local.py has options"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    shown = readme.split("python -m scripts.upload_local", 1)[1][:1500]
    assert sorted(o for o in options if not re.search(rf"(?<![\w-]){o}(?![\w-])", shown)) == []


def test_the_readme_says_where_each_shard_attempts_worker_log_is() -> None:
    """A failed status quotes a worker's last error line; the whole log (a traceback, the throughput lines) is in
    the state container, where Azure Batch uploads a pool task's ``stdout.txt`` and ``stderr.txt`` when it ends and
    the local pool writes one ``.log`` (``gpu_batch/layout.py``), and no document said so."""
    from core.settings import Settings
    from gpu_batch import layout

    task, run, shard = "task-0123456789abcdef0123", "r261206221500ab", layout.shard_id(3)
    job, pool_task = layout.pool_job_id(task, run), layout.pool_task_id(shard, 2)

    def shown(path: str) -> str:
        return path.replace(job, "<job>").replace(task, "<task>").replace(pool_task, "<shard>-a<attempt>")

    container = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).container
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    batch = f"{container}/{shown(layout.pool_log_prefix(job, pool_task))}"
    assert f"`{batch}stdout.txt` and `stderr.txt`" in readme, batch
    assert f"`{container}/{shown(layout.pool_log_blob(job, pool_task))}`" in readme
    assert '"../std*.txt"' in (ROOT / "gpu_batch" / "pool" / "azure_batch.py").read_text(encoding="utf-8")


def test_the_readme_lists_every_stage_a_task_status_can_show() -> None:
    """README's ``GET /api/tasks/{id}`` row is where a client author learns the values of ``stage``; a stage added to
    ``core.contracts.Stage`` (``awaiting_confirmation``, ``expired`` came later) must be listed there too."""
    from core.contracts import Stage

    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `GET /api/tasks/{id}` |"))
    listed = re.search(r"`stage` \(([^`]*?)\), image and shard counts", row)
    assert listed, "the row lists the stages in parentheses after `stage`"
    names = [re.sub(r" \(.*", "", part).strip() for part in re.split(r", (?![^()]*\))", listed.group(1))]
    assert sorted(names) == sorted(s.value for s in Stage)


def test_the_repeat_search_defaults_the_readme_and_help_give_are_megadetectors_as_the_code_has_them() -> None:
    """README's ``POST .../repeats/search`` row and ``trapbatch repeats --help`` give each phase-1 option's default
    (the value a field left out takes): both must be ``gpu_batch.formats.eligible.RepeatOptions``'s, which the search
    runs with. Bounds are checked in test_openapi.py; these defaults were not."""
    from click.testing import CliRunner

    from cli.main import cli
    from gpu_batch.formats.eligible import RepeatOptions

    fields = {"occurrence_threshold": "occurrence_threshold", "iou_threshold": "iou_threshold",
              "confidence_min": "confidence_min", "confidence_max": "confidence_max",
              "min_suspicious_detection_size": "min_area", "max_suspicious_detection_size": "max_area"}
    default = {name: getattr(RepeatOptions(), attr) for name, attr in fields.items()}
    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `POST /api/tasks/{id}/repeats/search`"))
    said: dict[str, float] = {}
    for names, values in re.findall(r"((?:`[a-z_]+`(?: / )?)+) \([^()]*?default ([\d.]+(?: / [\d.]+)*)", row):
        said.update(zip(re.findall(r"`([a-z_]+)`", names), (float(v) for v in values.split(" / "))))
    assert {n: said.get(n) for n in fields} == default
    helped = " ".join(CliRunner().invoke(cli, ["repeats", "--help"], terminal_width=400).output.split())
    for name, value in default.items():
        flag = "--" + name.replace("_", "-")
        found = re.search(rf"{flag} \w+ --search: [^(]*\(([\d.]+)\)", helped)
        assert found and float(found.group(1)) == value, flag


def test_every_section_a_document_or_message_points_to_is_a_heading_of_that_document() -> None:
    """The app's hints, the docs and the code send readers to a section by its title (``docs/deploy.md "Pool jobs by
    hand"`` in a failed task's error, ``docs/cli.md "Exit codes"``): a heading renamed or moved leaves them nowhere.
    (Tests are left out: their docstrings quote the docs' words too.)"""
    import subprocess

    names = {"README": "README.md", "README.md": "README.md", "docs/cli.md": "docs/cli.md",
             "docs/deploy.md": "docs/deploy.md", "devhost/README.md": "devhost/README.md"}
    headings = {path: [re.sub(r"^#+\s*", "", line).replace("`", "").strip()
                       for line in (ROOT / path).read_text(encoding="utf-8").splitlines() if line.startswith("#")]
                for path in set(names.values())}
    pointer = re.compile(r"(?<![\w/.-])(README(?:\.md)?|docs/cli\.md|docs/deploy\.md|devhost/README\.md)`?\)?,?\s+"
                         r"[\"“]([^\"”\n]{3,80})[\"”]")
    files = subprocess.run(["git", "ls-files", "--", "*.py", "*.md", "*.sh", "*.ps1", "*.bicep", ":!bench/*",
                            ":!tests/*", ":!*/tests/*"],  # what users read: the docs, the messages, the code
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found, nowhere = 0, []
    for file in files:
        text = " ".join((ROOT / file).read_text(encoding="utf-8", errors="replace").split()).replace(" # ", " ")
        for doc, title in pointer.findall(text):
            if re.search(r"\.\w{2,4}$", title):  # a file's name in the results' README.txt, not a section
                continue
            path = "devhost/README.md" if doc == "README" and file.startswith("devhost/") else names[doc]
            found += 1
            title = title.replace("`", "")
            if not any(h.startswith(title) for h in headings[path]):
                nowhere.append(f"{file}: {doc} \"{title}\"")
    assert found >= 20, found
    assert sorted(set(nowhere)) == [], sorted(set(nowhere))


def test_the_numbers_devhosts_readme_gives_are_devhosts_constants() -> None:
    """devhost/README.md restates devhost's limits and timings (what it emulates, and how it stops) beside the rows
    that pin their behaviour; the words were not checked against the constants they describe."""
    from devhost import event_grid, host, http_server, stopping
    from devhost.engine import MAX_CUSTOM_STATUS_KB, MAX_INSTANCE_ID_LENGTH
    from devhost.scratch_disk import FLEX_TEMPORARY_STORAGE_BYTES

    def seconds(value: float) -> str:
        return f"{value / 60:g} min" if value >= 60 else f"{value:g} s"

    readme = " ".join((ROOT / "devhost" / "README.md").read_text(encoding="utf-8").split())
    main = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    schedule = ", ".join(seconds(s) for s in event_grid.RETRY_STEPS_S[:4])
    said = [f"({host.DEFAULT_ACTIVITY_WORKERS} when host.json names none",
            f"up to {stopping.STOP_GRACE_S:g} s to finish",
            f"SIGKILLs what still runs {stopping.STOP_GRACE_S:g} s later",
            f"within about {2 * stopping.OrphanReaper().interval_s:g} s",
            f"({schedule}, ... for {event_grid.EVENT_TTL_S / 3600:g} h)", f"{http_server.HOST_REQUEST_BODY_LIMIT:,}",
            f"{http_server.PAGE_SIZE} per page", f"more than {MAX_INSTANCE_ID_LENGTH} characters",
            f"over {MAX_CUSTOM_STATUS_KB} KB", f"{FLEX_TEMPORARY_STORAGE_BYTES / 1e9:g} GB",
            f"{http_server.HTTP_RESPONSE_LIMIT_S:g} s"]
    assert [words for words in said if words not in readme] == []
    assert f"an activity still running after {stopping.STOP_GRACE_S:g} s runs again then" in main


def test_a_function_timeout_the_docs_give_as_todays_is_host_jsons() -> None:
    """host.json's ``functionTimeout`` went from 10 to 30 minutes (Flex Consumption's default); README measured the
    results zip against "a 10-minute functionTimeout" as if it still were one. A figure of the past says so."""
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    hours, minutes, seconds = (int(part) for part in host["functionTimeout"].split(":"))
    assert seconds == 0
    stated = []
    for doc in DOCS:
        text = " ".join(doc.read_text(encoding="utf-8").split())
        stated += [(doc.name, int(n)) for n in
                   re.findall(r"(\d+)-minute `functionTimeout`(?!,? host\.json(?:'s until| had then))", text)]
    assert stated and [s for s in stated if s[1] != hours * 60 + minutes] == []


def test_the_readme_lists_every_exit_code_of_the_worker_and_which_fail_the_task() -> None:
    """README "The GPU worker" lists the worker's exit codes (``gpu_batch/exit_codes.py``, 143 among them) for
    whoever reads a pool task's exit: a code added there, or one that moved into or out of ``UNFIXABLE`` (the exits
    that fail the task at a shard's second attempt), fails here until the list says so; a code the list gives that
    the worker never exits with fails too."""
    from gpu_batch import exit_codes

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    section = ":" + readme.split("Exit codes (`gpu_batch/exit_codes.py`):", 1)[1].split(
        "A pool task the pool itself ended", 1)[0]
    # each code opens a clause: "...: 0 shard processed ..., 2 bad arguments ..., 73 another run ..."
    listed = {int(code) for code in re.findall(r"(?:: |, )(\d+) (?!or\b|and\b)[a-z]", section)}
    codes = {value for name, value in vars(exit_codes).items() if name.isupper() and isinstance(value, int)}
    assert listed == codes, sorted(listed ^ codes)
    unfixable = re.search(r"\((\d+(?:, \d+)*) and (\d+) fail the task", section)
    assert unfixable, "README says which exits fail the task"
    said = {int(n) for n in re.findall(r"\d+", unfixable.group(0))}
    assert said == set(exit_codes.UNFIXABLE)


def test_the_limits_and_counts_the_readme_states_as_behaviour_are_the_codes_constants() -> None:
    """More numbers the docs state as what the app does, each beside the constant that decides it and none checked
    until now (found in an audit of the docs against the code: they all still agreed): an image list's metadata
    limits, the drop trigger's tries, how many runs a new run ends, how much of a listing's odd files, a missing
    prefix's neighbours, skipped folders and given-up shards a status names, the preview's samples and blank-camera
    rule, the photo size ``trapbatch zooniverse`` fits to, the outage a shard group waits out, the steps' retry
    schedules and the instance's concurrent activities. A changed constant fails here until the docs say it."""
    from activities.enumerate import RECHECK_IMAGES
    from activities.previews import MOSTLY_BLANK_SHARE, MOSTLY_BLANK_VISITS
    from api.starters import DROP_TRIGGER_RETRIES, ENDS_RUNS_MAX
    from cli import main as cli_main
    from cli.zooniverse_upload import MAX_BYTES
    from core.contracts import GIVEN_UP_EXAMPLES
    from core.imagelist import MAX_METADATA_COLUMNS, MAX_METADATA_VALUE_CHARS
    from core.nearby import NAME_CHARS, NEARBY_NAMES
    from core.notimages import EXAMPLES, TOP_KINDS
    from core.repeats import SKIPPED_LISTED
    from gpu_batch.formats.previewsample import KIND_SAMPLE
    from gpu_batch.pool.azure_batch import RETRY_AFTER_MAX_S
    from gpu_batch.worker.__main__ import MAX_STAGE_THREADS
    from orchestrations.retries import BUSY_FIRST_DELAY_S, BUSY_MAX_DELAY_S, STORAGE_RETRY
    from orchestrations.shards import OUTAGE_LIMIT_S

    def flat(path: str) -> str:
        return " ".join((ROOT / path).read_text(encoding="utf-8").split())

    word = {3: "three", 5: "five", 10: "ten"}
    activities = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))["extensions"]["durableTask"][
        "maxConcurrentActivityFunctions"]
    steps = [STORAGE_RETRY.delay_s(n) for n in range(1, STORAGE_RETRY.attempts)]
    zooniverse = next(c for c in cli_main.cli.commands["zooniverse"].params if c.name == "workers")
    said = {
        "README.md": [
            f"more than {MAX_METADATA_COLUMNS} metadata columns, or a metadata value of more than "
            f"{MAX_METADATA_VALUE_CHARS:,} characters",
            f"the trigger runs again by itself ({DROP_TRIGGER_RETRIES.tries} tries;",
            f"at most the {ENDS_RUNS_MAX} most recent",
            f"the {word[TOP_KINDS]} largest kinds by extension", f"every kind with its first {word[EXAMPLES]} names",
            f"the first {NEARBY_NAMES} folders", f"cut to its last {NAME_CHARS} characters",
            f"(the first {SKIPPED_LISTED}, with their counts)", f"the first {word[GIVEN_UP_EXAMPLES]} with",
            f"a sample of its own of up to {KIND_SAMPLE}",
            f"({MOSTLY_BLANK_SHARE * 100:g} % or more of at least {MOSTLY_BLANK_VISITS}:",
            f"a photo over {MAX_BYTES:,} bytes", f"reads the marker again every {RECHECK_IMAGES:,} images",
            f"of {OUTAGE_LIMIT_S / 3600:g} hours (or `TRAPBATCH_MAX_TASK_SECONDS`",
            f"`--stage-threads N` (1-{MAX_STAGE_THREADS}, default 1)",
            f"an instance running {activities} activities",
            f"A step is tried {STORAGE_RETRY.attempts} times ({steps[0]:g} s and {steps[1]:g} s apart)",
            f"{BUSY_FIRST_DELAY_S:g} s apart doubling to {BUSY_MAX_DELAY_S / 60:g} minutes",
            f"a Retry-After over {RETRY_AFTER_MAX_S:g} s not slept inside the call",
        ],
        "docs/deploy.md": [f"up to {activities} activities at once, `host.json`"],
        "docs/cli.md": [f"`--max-bytes` (default {MAX_BYTES:,}:",
                        f"`--workers` photos at a time ({zooniverse.default})"],
    }
    assert len(steps) == 2, steps  # the README's words give two waits
    unsaid = [f"{doc}: {words}" for doc, phrases in said.items() for words in phrases if words not in flat(doc)]
    assert unsaid == [], unsaid


def test_the_readme_lists_every_setting_a_run_decides_once() -> None:
    """README "Configuration" tells an operator which settings a running task keeps (written once when its run
    starts, ``core.settings.DecidedSettings``) and, by leaving them out, which reach it at once when changed: a field
    added to the class and not to the list is a setting the operator believes changes a running task's outputs."""
    import dataclasses

    from core.settings import DecidedSettings

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split("## Configuration", 1)[1].split())
    listed = re.search(r"decided when a task's run starts: (.*?) are written once by", readme)
    assert listed, "README says which settings a run decides once"
    named = [n if n.startswith("TRAPBATCH") else "TRAPBATCH" + n for n in re.findall(r"`(TRAPBATCH\w+|_\w+)`",
                                                                                       listed.group(1))]
    fields = [field.name for field in dataclasses.fields(DecidedSettings)]
    assert sorted(named) == sorted(f"TRAPBATCH_{name.upper()}" for name in fields)


def test_the_architecture_tree_names_every_module_of_the_edges_and_the_orchestrations() -> None:
    """README "Architecture" is where a newcomer finds which file holds a route or an orchestration: ``api/`` left out
    after_task.py (the re-render, expiry and zip routes) and callers.py, ``orchestrations/`` six of its twelve
    modules (enumeration, exports, rerender, expiry, results_zip, retries). Every module of those two packages is
    named on its folder's lines."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = readme.split("## Architecture", 1)[1].split("```", 2)[1]
    unnamed = []
    for package in ("api", "orchestrations"):
        lines = tree.split(f"\n{package}/", 1)[1]
        block = re.split(r"\n(?=\S)", lines, maxsplit=1)[0]  # the folder's line and those indented under it
        named = set(re.findall(r"\b(\w+)\.py\b", block))
        unnamed += [f"{package}/{p.name}" for p in sorted((ROOT / package).glob("*.py"))
                    if p.stem != "__init__" and p.stem not in named]
    assert unnamed == []


def test_docs_cli_mds_configuration_table_gives_each_setting_its_variable_and_file_key() -> None:
    """docs/cli.md "Configuration" is where an operator learns what to write in ``config.toml``: each row pairs a
    flag, a variable and a file key. The variables were checked to be named somewhere, the file keys nowhere: a row
    whose key differs from ``cli.config.FIELDS`` has a config file that silently does nothing."""
    from cli import config

    section = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ")[0]
    rows = {(env, key) for env, key in re.findall(r"\| `(TRAPBATCH_[A-Z_]+)` \| `(\w+)` \|$", section, re.M)}
    assert rows == {(env, key) for key, env in config.FIELDS.items()}


# Variables the shipped code reads that the platform, a tool or a convention sets, not the operator: each with why it
# needs no line in the docs. Every other variable read must be named in them (the TRAPBATCH_ ones are checked in
# test_settings.py).
SET_FOR_US = {
    "AZ_BATCH_NODE_ID": "Azure Batch sets it in every task's environment",
    "AZ_BATCH_NODE_SHARED_DIR": "Azure Batch sets it (the docs name it where the caches live)",
    "IDENTITY_ENDPOINT": "App Service sets it where a managed identity is on",
    "MSI_ENDPOINT": "App Service's older name of the same",
    "WEBSITE_SITE_NAME": "App Service sets it in every app",
    "PYTEST_XDIST_WORKER": "pytest-xdist sets it in its workers",
    "DEVHOST_STOPPING": "devhost sets it for its own children (devhost/stopping.py)",
    "NETRC": "requests' own convention, honoured as requests would (adapters/transport.py)",
    "HOME": "the shell's", "PATH": "the shell's", "CC": "the C toolchain's (Triton's compiler, as Triton reads it)",
    "XDG_CACHE_HOME": "the XDG base directory convention (the test checkpoints' cache, named in README)",
    "XDG_CONFIG_HOME": "the XDG base directory convention (docs/cli.md names it)",
}


def test_every_other_variable_the_shipped_code_reads_is_in_the_docs_or_set_for_us() -> None:
    """test_settings.py ties every ``TRAPBATCH_*`` variable to the docs; the others the code honours were never
    checked: the local pool pins each worker to one GPU through ``CUDA_VISIBLE_DEVICES`` unless it is set already,
    and ``--compile`` keeps its kernels where ``TORCHINDUCTOR_CACHE_DIR`` says, and no document told an operator
    either. Each variable read is named in README.md, docs/, devhost/README.md or core/settings.py's docstring, or
    set by the platform (SET_FOR_US, with why)."""
    import subprocess

    import core.settings

    shipped = subprocess.run(["git", "ls-files", "--", "*.py", ":!tests/*", ":!*/tests/*", ":!bench/*"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    code = "\n".join((ROOT / f).read_text(encoding="utf-8", errors="replace") for f in shipped if (ROOT / f).is_file())
    read = set(re.findall(r"\b(?:environ|env)(?:\.get\(|\[)\s*\"([A-Za-z_][A-Za-z0-9_]*)\"", code))
    read |= set(re.findall(r"^[A-Z_]*(?:_ENV|_SETTING)\b = \"([A-Za-z_][A-Za-z0-9_]*)\"", code, re.M))
    read = {name for name in read if not name.startswith("TRAPBATCH_")}
    assert {"CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "AzureWebJobsStorage"} <= read, sorted(read)  # the parse
    docs = _doc_text() + "\n" + (core.settings.__doc__ or "")
    # ``AzureWebJobsStorage__accountName / __blobServiceUri``: the second shares the first's prefix
    docs += " ".join(head + tail for head, tail in re.findall(r"\b(\w+?)__\w+ / (__\w+)", docs))
    unnamed = sorted(n for n in read - set(SET_FOR_US) if not re.search(rf"(?<![\w$]){n}\b", docs))
    assert unnamed == [], f"name them where their readers' users look, or in SET_FOR_US with why: {unnamed}"
    assert sorted(set(SET_FOR_US) - read) == []  # no stale exemption
