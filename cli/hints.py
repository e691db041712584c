"""The app's hints in the CLI's words: the API writes what to do next for an HTTP client (``POST
/api/tasks/<id>/confirm``, ``poll GET /api/tasks/<id>``, ``e.g. "threshold": 0.2``); a person at the ``trapbatch``
command has commands and flags for those. Why translate here and not in the app: the same hint serves both, and only
the CLI knows its commands and which flag sets which field (``cli.main.FIELD_FLAGS``).

``translate`` rewrites the forms it knows and leaves everything else as the app wrote it (a route or field the CLI has
no command or flag for, a route with a query other than ``?limit=``, a URL that is not a route). Pure: text in, text
out.
"""
from __future__ import annotations

import json
import re
from typing import Mapping

# A route, as the app's hints write it: a method and a path (POST /api/tasks/<id>/confirm), or the app's own
# address with no method (a link: GET). The id is the task's, or a placeholder the app writes for it; taken whole
# (possessive, Python 3.11+): "<id>/results?zip=..." must not match as the shorter id "task" before its "-".
_ROUTE = re.compile(
    r"(?P<before>\bpoll |\bfollow it at | are at )?"
    r"(?:(?P<method>GET|POST|DELETE) (?:https?://[^\s/]+)?|(?P<link>https?://[^\s/]+))/api/tasks"
    r"(?:/(?P<id><task id>|[^\s/()'\",;?]++)"
    r"(?P<sub>/repeats/search|/repeats|/confirm|/cancel|/terminate|/results|/previews)?)?"
    r"(?:\?limit=(?P<limit>\d+))?(?![\w/]|\?\w+=)(?P<it> it\b)?")  # another query: no command has it
PLACEHOLDERS = ("{id}", "{task_id}", "<id>", "<task id>")
# (method, the path after the id) -> the command; {id} is the task's id
COMMANDS = {("POST", "/repeats/search"): "trapbatch repeats {id} --search",
            ("GET", "/repeats"): "trapbatch repeats {id}",
            ("POST", "/repeats"): "trapbatch repeats {id}",  # + the choice (_CHOICE_FOLLOWS)
            ("POST", "/confirm"): "trapbatch confirm {id}",
            ("POST", "/cancel"): "trapbatch cancel {id}",
            ("POST", "/terminate"): "trapbatch terminate {id}",
            ("GET", "/results"): "trapbatch results {id}",
            ("POST", "/previews"): "trapbatch previews {id} --threshold <t>",
            ("DELETE", "/previews"): "trapbatch previews {id} --delete",
            ("GET", ""): "trapbatch status {id}",
            ("DELETE", ""): "trapbatch delete {id}"}
# A repeat choice's fields after its route ('{"remove": "all"}', 'with the same "keep" or "remove"'), which become
# its flags: without them the command is given with both, as "trapbatch repeats <id>" alone only lists
_CHOICE_FOLLOWS = re.compile(r'[^;()]*"(?:keep|remove)"')
# A JSON value in a hint: a number, a string, true, false
_VALUE = r'-?\d+(?:\.\d+)?|"[^"\n]*"|true|false'
_PAIR = re.compile(rf'"(?P<field>\w+)":\s*(?P<value>{_VALUE})')
_OBJECT = re.compile(rf'\{{\s*"\w+":\s*(?:{_VALUE})(?:\s*,\s*"\w+":\s*(?:{_VALUE}))*\s*\}}')
_PLAIN = re.compile(r"[\w./:+@,-]+")  # a value the shell takes as it is
_BARE = re.compile(r"(?P<q>[\"'])(?P<field>\w+)(?P=q)(?!\s*:)")
# A field named in the app's prose, unquoted ("more than max_folder_detections (45)", "expired
# (previews_expire_days)"): only a name with an underscore, which no English word has ("threshold", "prefix" and
# "keep" are words too), standing alone: not part of a dotted path (results.exports_error), a query, a JSON key or
# an environment variable (TRAPBATCH_...). Only in a task's own answer (``named_as_flags``)
_NAMED = r"(?<![\w.\"'/{\[<?&=$-])(?P<field>[a-z]+(?:_[a-z]+)+)(?![\w\"'=/-]|\.\w|\s*:)"
_POST_REQUEST = re.compile(r"\bpost (?=(?:it|the (?:same )?request)\b)")
# An estimate, in the API's words: the request's "dry_run". A CLI user never wrote that field: they ran estimate, and
# submit runs the real task (an estimate never does: api/starters.py's hint for an estimate's results)
_DRY_RUN = re.compile(r'\(\s*"dry_run":\s*true\s*\)')
_WITHOUT_DRY_RUN = re.compile(r"\bpost (?:it|the (?:same )?request) without \"?dry_run\"?")
# "trapbatch repeats X --search (trapbatch repeats X --search)": the app named the command, and the route after it
_REPEATED = re.compile(r"(?P<cmd>trapbatch [^();]*?) \((?P=cmd)(?P<end>\)|; )")
# "(trapbatch repeats X with the same --keep ...; trapbatch repeats X --keep ...)": the app wrote the route with what
# to send, then the command; translated, the route is that command: said once, its flags first, then the rest
_REPEATED_AFTER = re.compile(r"\((?P<cmd>trapbatch [a-z]+ [^\s();]+)(?P<detail> [^();]+); "
                             r"(?P=cmd)(?P<more> [^();]+)?\)")


# A route of the app's hints with a placeholder for the task's id (PLACEHOLDERS): "GET /api/tasks/<id>/repeats"
_PLACEHOLDER_ROUTE = re.compile(r"/api/tasks/(?:\{id\}|\{task_id\}|<id>|<task id>)(?=[/\s)'\",;]|$)")
# The task a request path is about: "/api/tasks/<id>" and what is under it
_TASK_PATH = re.compile(r"^/api/tasks/(?P<id>[^/?#\s]+)")
# A generation of a task (gpu_batch.layout.generation_key: "<task>/runs/<run>", the run r<12 digits><hex>)
_GENERATION = r"/runs/r\d{12}[0-9a-f]+(?![\w-])"


def with_task_id(hint: str, path: str) -> str:
    """``hint`` with the task id of the request ``path`` in place of the app's placeholder in its routes. Why: the
    app writes some hints where it does not know the id (the request's validation: "GET /api/tasks/<id>/repeats
    lists ..."); shown as "trapbatch repeats <task id>" to someone who had just typed the id, the next command could
    not be pasted. A generation key of that task (``<id>/runs/<run>``: what an orchestration of a re-run's
    generation knows as its task id, ``orchestrations.repeats.removal_exports_hint`` of a re-run's removal) is the
    task's id too: no route or command takes a generation. A path that names no task leaves the hint as it is."""
    m = _TASK_PATH.match(path)
    if not m or not hint:
        return hint
    task_id = m.group("id")
    hint = re.sub(re.escape(task_id) + _GENERATION, lambda _: task_id, hint)
    return _PLACEHOLDER_ROUTE.sub(lambda _: f"/api/tasks/{task_id}", hint)


# A command of the app's hints with a placeholder for the task's id: "trapbatch repeats <task id> --search" (a repeats
# list written where the task's id was not passed: core.repeats.rank_locations' default)
_PLACEHOLDER_COMMAND = re.compile(r"\b(?P<cmd>trapbatch [a-z]+) (?:\{id\}|\{task_id\}|<id>|<task id>)(?=[\s)'\",;]|$)")


def for_task(hint: str, task_id: str) -> str:
    """``hint``, which is about the task ``task_id`` alone (a part of that task's answer: its repeats listing, its
    preview page), with that id in place of the app's placeholders: in its routes and generation keys
    (``with_task_id``) and in the commands it names. Why: the listing knows the id the app left out."""
    hint = with_task_id(hint, f"/api/tasks/{task_id}")
    return _PLACEHOLDER_COMMAND.sub(lambda m: f"{m.group('cmd')} {task_id}", hint)


def named_as_flags(hint: str, flags: Mapping[str, str]) -> str:
    """``hint`` with each field its prose names unquoted (``_NAMED``) as its flag. Why apart from ``translate``: in
    a task's answer (its repeats listing's hints, its preview page's why) such a name is the flag a CLI user sets
    ("more than max_folder_detections (45)"); in the request's validation it is a field of the request file they
    wrote ("did you mean preview_threshold? allowed fields: container, prefix, first_n, ..."), which stays a field."""
    return re.sub(_NAMED, lambda m: flags.get(m.group("field"), m.group(0)), hint)


def translate(hint: str, flags: Mapping[str, str], switches: frozenset[str] = frozenset()) -> str:
    """``hint`` with the app's routes as the CLI's commands and its JSON fields as flags (``flags``: field ->
    flag; ``switches``: the fields whose flag takes no value, given as ``"field": true``)."""
    if not hint:
        return hint
    text = _DRY_RUN.sub("(trapbatch estimate)", hint)
    text = _WITHOUT_DRY_RUN.sub("run the same request with trapbatch submit instead of trapbatch estimate", text)
    text = _ROUTE.sub(_command, text)
    text = _OBJECT.sub(lambda m: _object(m.group(0), flags, switches), text)
    text = _PAIR.sub(lambda m: _flag(m.group("field"), m.group("value"), flags, switches) or m.group(0), text)
    text = _BARE.sub(lambda m: flags.get(m.group("field"), m.group(0)), text)
    text = _POST_REQUEST.sub("submit ", text)  # posting a request is the CLI's submit
    text = _REPEATED_AFTER.sub(lambda m: f"({m.group('cmd')}{m.group('more') or ''}{m.group('detail')})", text)
    return _REPEATED.sub(lambda m: m.group("cmd") + ("" if m.group("end") == ")" else " ("), text)


def _command(m: re.Match[str]) -> str:
    method = m.group("method") or "GET"  # a link is followed with a GET
    task_id, sub = m.group("id"), m.group("sub") or ""
    if task_id is None:  # the task list, or a new task
        command = {"GET": "trapbatch list" + (f" --limit {m.group('limit')}" if m.group("limit") else ""),
                   "POST": "trapbatch submit"}.get(method)
    elif m.group("limit") is None:
        task_id = "<task id>" if task_id in PLACEHOLDERS else task_id
        command = COMMANDS[(method, sub)].format(id=task_id) if (method, sub) in COMMANDS else None
    else:
        command = None
    if command is None:
        return m.group(0)
    if (method, sub) == ("POST", "/repeats") and not _CHOICE_FOLLOWS.match(m.string, m.end()):
        command += " --keep ... or --remove ..."
    before, it = m.group("before") or "", m.group("it") or ""
    if before == "poll " and sub == "" and task_id == "<task id>":
        # "poll GET /api/tasks/{id}" with no id known: a hint to a request that has no task yet (a refused
        # notify_url); the task submit would start is followed by submit --wait, there is no id to watch; and an
        # estimate (the same refusal) waits by itself: submit would start the real run
        return f"follow the task with trapbatch submit --wait (trapbatch estimate waits for its own){it}"
    if before in ("poll ", "follow it at ") and sub == "" and task_id:  # "poll GET ...", "follow it at <link>"
        return f"follow it with trapbatch watch {task_id}{it}"
    if before == " are at ":  # "its results are at <link>"
        before = ": "
    if it and command.startswith("trapbatch cancel "):  # "POST .../cancel it"
        return f"{before}cancel it with {command}"
    return before + command + it


def _object(text: str, flags: Mapping[str, str], switches: frozenset[str]) -> str:
    """``{"occurrence_threshold": 10, "iou_threshold": 0.85}`` as ``--occurrence-threshold 10 --iou-threshold
    0.85`` when every field has a flag; else as it is."""
    given = [_flag(m.group("field"), m.group("value"), flags, switches) for m in _PAIR.finditer(text)]
    return " ".join(f for f in given if f) if given and all(given) else text


def _flag(field: str, value: str, flags: Mapping[str, str], switches: frozenset[str]) -> str:
    """``"field": value`` as ``--flag value`` (a switch: ``--flag`` for true); "" when the CLI has no such flag."""
    flag = flags.get(field)
    if flag is None:
        return ""
    if field in switches:
        return flag if value == "true" else ""
    if value in ("true", "false"):
        return ""
    if value.startswith('"'):
        shown = str(json.loads(value))
        return f"{flag} {shown if _PLAIN.fullmatch(shown) else repr(shown)}"
    return f"{flag} {value}"
