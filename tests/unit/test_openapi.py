"""api/openapi.py: the described request is the validated request (core.requests), field for field and bound for bound."""
from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from api import openapi
from core.errors import ConfigError, RequestInvalid, StorageHostUnresolvable
from core.requests import ALLOWED_FIELDS, parse_task_request

VALIDATOR = Draft202012Validator(openapi.request_schema())

# Bodies judged by single-field rules (both sides must agree). Cross-field rules (first_n with sample_n, seed without
# sample_n, credential_secret without source_account_url, an https source URL) are the validation's alone: the schema
# documents them in the descriptions and the API answers 400, a documented status.
BODIES: list[dict[str, Any]] = [
    {"container": "cams"}, {"container": "ab"}, {"container": "a" * 63}, {"container": "a" * 64},
    {"container": "Cams"}, {"container": "ca--ms"}, {"container": "-cams"}, {"container": 5}, {},
    {"container": "cams", "prefix": "2024/a/"}, {"container": "cams", "prefix": "a\nb"},
    {"container": "cams", "prefix": "x" * 1025}, {"container": "cams", "prefix": None},
    {"container": "cams", "first_n": 1}, {"container": "cams", "first_n": 0}, {"container": "cams", "first_n": 1.5},
    {"container": "cams", "first_n": True}, {"container": "cams", "first_n": 10**9 + 1},
    {"container": "cams", "sample_n": 3, "seed": 2**32 - 1}, {"container": "cams", "sample_n": 3, "seed": 2**32},
    {"container": "cams", "sample_n": 3, "seed": -1},
    {"container": "cams", "images_per_shard": 100_000}, {"container": "cams", "images_per_shard": 100_001},
    {"container": "cams", "model": "MDV5A"}, {"container": "cams", "model": ["MDV5A"]},
    {"container": "cams", "request_name": "r" * 200}, {"container": "cams", "request_name": "r" * 201},
    {"container": "cams", "caller": "ana"}, {"container": "cams", "caller": "\x7f"},
    {"container": "cams", "max_failed_fraction": 0}, {"container": "cams", "max_failed_fraction": 1.01},
    {"container": "cams", "max_failed_fraction": "0.1"},
    {"container": "cams", "dry_run": True}, {"container": "cams", "dry_run": 1}, {"container": "cams", "dry_run": None},
    {"container": "cams", "source_account_url": "https://x.blob.core.windows.net", "credential_secret": "k-1"},
    {"container": "cams", "source_account_url": "https://x.blob.core.windows.net", "credential_secret": "k_1"},
    *({"container": "cams", "utc_offset": v} for v in ("+02:00", "-0530", "Z", "z", "+14:00", "+14:01", "-12:00",
                                                        "-12:30", "+13:45", "+02:60", "02:00", "+2:00", " +02:00",
                                                        "", None, 2, "UTC")),
    *({"container": "cams", "event_interval_s": v} for v in (60, 0, 1800.5, 86400, 86400.01, -1, "60", True, None)),
    *({"container": "cams", "zooniverse_visit_frames": v} for v in (1, 3, 20, 0, 21, 2.5, "3", True, None)),
    *({"container": "cams", "camera_depth": v} for v in (1, 2, 32, 0, 33, -1, 1.5, "1", True, None, [1])),
    *({"container": "cams", "notify_url_secret": v} for v in ("lab-hook", "a" * 127, "a" * 128, "lab_hook", "", None, 5,
                                                               "https://hooks.example.org/x")),
    *({"container": "cams", "clock_corrections": v} for v in (
        {"site-a/cam-3": 3600}, {"a": -3600, "b/c/": 0}, {"a": 1.5}, {"a": True}, {"a": "60"}, {"": 1}, {"/": 1},
        {"a\x01": 1}, {"a": 10**10}, [1], None, {},
        {"a": {"camera": "2000:01:01 00:12:00", "actual": "2024-06-01T06:30:00"}},
        {"a": {"camera": "2000:01:01 00:12", "actual": "2024-06-01 06:30:00"}},
        {"a": {"camera": "2000:01:01 00:12:00"}},
        {"a": {"camera": "2000:01:01 00:12:00", "actual": "2024-06-01 06:30:00", "zone": "Z"}})),
    {"container": "cams", "unknown": 1}, "not an object", [1],  # type: ignore[list-item]
]


def _validation_accepts(body: Any) -> bool:
    try:
        parse_task_request(body)
        return True
    except RequestInvalid:
        return False


@pytest.mark.parametrize("body", BODIES, ids=lambda b: repr(b)[:60])
def test_the_schema_and_the_validation_agree(body: Any) -> None:
    assert VALIDATOR.is_valid(body) == _validation_accepts(body)


def test_every_request_field_is_described() -> None:
    assert list(openapi.request_schema()["properties"]) == list(ALLOWED_FIELDS)


def test_a_request_field_added_without_its_schema_fails() -> None:
    with pytest.raises(openapi.SchemaDrift, match="new_field"):
        openapi.request_schema(allowed=(*ALLOWED_FIELDS, "new_field"))
    with pytest.raises(openapi.SchemaDrift, match="dry_run"):
        openapi.request_schema(allowed=tuple(f for f in ALLOWED_FIELDS if f != "dry_run"))


def test_the_description_is_valid_openapi_3_1() -> None:
    from schemathesis.openapi import from_dict

    doc = openapi.description("http://127.0.0.1:7071")
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": "http://127.0.0.1:7071"}]
    schema = from_dict(doc)
    labels = {op.label for op in operations(schema)}
    assert labels == {"POST /api/tasks", "GET /api/tasks", "GET /api/tasks/{task_id}", "DELETE /api/tasks/{task_id}",
                      "GET /api/tasks/{task_id}/results", "POST /api/tasks/{task_id}/cancel",
                      "POST /api/tasks/{task_id}/terminate", "POST /api/tasks/{task_id}/confirm",
                      "DELETE /api/tasks/{task_id}/previews", "POST /api/tasks/{task_id}/previews",
                      "GET /api/tasks/{task_id}/repeats", "POST /api/tasks/{task_id}/repeats",
                      "POST /api/tasks/{task_id}/repeats/search"}
    assert labels == served_routes() - {"GET /api/openapi.json"}  # every route the app serves is described
    # the instance list answers 503 with what to do when reading it takes too long (api/starters.py list_tasks), and
    # every route 503 with Retry-After when the task hub or storage is busy (core.errors: TaskHubUnavailable on any
    # status read, StorageUnavailable): a client generated from the description must expect it on each
    for op in operations(schema):
        assert op.definition.raw["responses"]["503"]["headers"]["Retry-After"], op.label
        # storage that refused trapbatch's identity, or answered oddly, is a 502 at the edge on any route
        # (core.errors StorageAccessDenied, StorageError; adapters.storage_errors)
        assert "502" in op.definition.raw["responses"], op.label
    # too many running tasks answers 429 with Retry-After (core.errors.TooManyActiveTasks.headers)
    assert doc["paths"]["/api/tasks"]["post"]["responses"]["429"]["headers"]["Retry-After"]
    assert "instance list" in doc["paths"]["/api/tasks"]["get"]["responses"]["503"]["description"]
    for name, sub in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(sub)


SEARCH_VALIDATOR = Draft202012Validator(openapi.repeat_search_schema())
# Single-field rules of POST .../repeats/search (the cross-field ones, a minimum above its maximum, are the
# validation's alone and answer 400).
SEARCH_BODIES: list[Any] = [
    {}, {"occurrence_threshold": 2}, {"occurrence_threshold": 1}, {"occurrence_threshold": 1_000_000},
    {"occurrence_threshold": 1_000_001}, {"occurrence_threshold": 10.5}, {"occurrence_threshold": True},
    {"occurrence_threshold": None}, {"iou_threshold": 0.5}, {"iou_threshold": 0.49}, {"iou_threshold": 1},
    {"iou_threshold": 1.01}, {"iou_threshold": "0.9"}, {"confidence_min": 0}, {"confidence_min": -0.1},
    {"confidence_max": 1}, {"confidence_max": 1.5}, {"min_suspicious_detection_size": 0},
    {"max_suspicious_detection_size": 0}, {"max_suspicious_detection_size": 1e-6},
    {"max_suspicious_detection_size": 1}, {"max_suspicious_detection_size": 1.1}, {"occurrenceThreshold": 10},
    {"max_folder_detections": 1}, {"max_folder_detections": 0}, {"max_folder_detections": 3_000_000},
    {"max_folder_detections": 3_000_001}, {"max_folder_detections": 10.5}, {"max_folder_detections": None},
    {"unknown": 1}, [1], "x",
]


def _search_accepted(body: Any) -> bool:
    from core.requests import parse_repeat_search

    try:
        parse_repeat_search(body)
        return True
    except RequestInvalid:
        return False


@pytest.mark.parametrize("body", SEARCH_BODIES, ids=lambda b: repr(b)[:60])
def test_the_search_schema_and_its_validation_agree(body: Any) -> None:
    assert SEARCH_VALIDATOR.is_valid(body) == _search_accepted(body)


def test_a_search_field_added_without_its_schema_fails() -> None:
    with pytest.raises(openapi.SchemaDrift, match="iou_threshold"):
        openapi.repeat_search_schema({k: v for k, v in openapi.REPEAT_SEARCH_PROPERTIES.items()
                                      if k != "iou_threshold"})


def test_a_repeat_option_added_without_its_schema_fails() -> None:
    """GET .../repeats shows the options a list records (``RepeatOptions.to_dict``): one added there without its
    description fails at import (``repeat_options``), as a request field does."""
    with pytest.raises(openapi.SchemaDrift, match="files_listed"):
        openapi.repeat_options({k: v for k, v in openapi.REPEAT_OPTIONS_PROPERTIES.items() if k != "files_listed"})
    with pytest.raises(openapi.SchemaDrift, match="new_option"):
        openapi.repeat_options({**openapi.REPEAT_OPTIONS_PROPERTIES, "new_option": {"type": "number"}})


def served_routes() -> set[str]:
    """``METHOD /api/<route>`` for every HTTP trigger function_app.py registers (as the worker indexes them)."""
    import function_app
    from devhost.functions import index_app

    return {f"{m} /api/{r.route}" for r in index_app(function_app.app).http for m in r.methods}


def operations(schema: Any) -> list[Any]:
    """Every operation of a loaded description; fails on one schemathesis could not read."""
    from schemathesis.core.result import Ok

    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        found.append(result.ok())
    return found


def _bounds_said(text: str, schema: dict[str, Any]) -> bool:
    """Whether ``text`` (commas in numbers ignored) states the schema's range as ``lo-hi`` or ``lo to hi`` (an
    exclusive least as ``above lo``)."""
    import re

    def num(v: float) -> str:
        return str(int(v)) if float(v) == int(v) else f"{v:g}"

    plain = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    high = num(schema["maximum"])
    if "exclusiveMinimum" in schema:
        return bool(re.search(rf"above {num(schema['exclusiveMinimum'])}\b", plain)
                    and re.search(rf"(?<![\d.])\d[\d.]*(?:-| to ){high}(?![\d.])", plain))
    return bool(re.search(rf"(?<![\d.]){num(schema['minimum'])}(?:-| to ){high}(?![\d.])", plain))


def test_the_readme_tables_name_every_request_field_and_state_its_range() -> None:
    """README's request table and its ``POST .../repeats/search`` row are where users read the fields; the bounds
    come from the validation (through this schema), so a changed limit fails here until the README says it.
    ``images_per_shard`` (at most 100,000), ``first_n`` / ``sample_n`` and ``seed`` were refused past bounds the
    README never gave."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        if line.startswith("| `") and line.count("|") >= 3:
            for name in re.findall(r"`([a-z_]+)`", line.split("|")[1]):
                rows.setdefault(name, line)
    assert sorted(set(ALLOWED_FIELDS) - set(rows)) == [], "README's request table lacks these fields"
    unsaid = [name for name, schema in openapi.REQUEST_FIELDS.items()
              if "maximum" in schema and not _bounds_said(rows[name], schema)]
    search = "| `POST /api/tasks/{id}/repeats/search`"
    search_row = next(line for line in readme.splitlines() if line.startswith(search))
    for name, schema in openapi.REPEAT_SEARCH_PROPERTIES.items():
        said = re.search(rf"`{name}`(?: / `[a-z_]+`)* \(([^)]*)\)", search_row)
        if not said or not _bounds_said(said.group(1), schema):
            unsaid.append(f"repeats/search {name}")
    assert unsaid == [], unsaid


def test_the_docs_show_every_route_the_app_serves_and_no_other() -> None:
    """README's endpoint table is the API's manual beside the description: a route served but never shown is one
    users do not find, and a route the docs show that the app does not serve answers 404 to whoever copies it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    docs = "\n".join(p.read_text(encoding="utf-8") for p in
                     [root / "README.md", root / "devhost" / "README.md", *sorted((root / "docs").glob("*.md"))])
    served = {re.sub(r"\{\w+\}", "{id}", route) for route in served_routes()}
    shown = {re.sub(r"[?#].*$", "", re.sub(r"<[^>]+>|\{\w+\}", "{id}", route))
             for route in re.findall(r"\b((?:GET|POST|PUT|PATCH|DELETE) /api/[^\s`\"')|,;]*)", docs)}
    assert sorted(shown - served) == []
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert sorted(r for r in served if f"`{r}`" not in readme and f"`{r}" not in readme) == []


def test_the_unreachable_shard_count_says_it_overlaps_shards_queued() -> None:
    """``unreachable.shards`` counts the shards waiting out an exit 69's back-off (``shards_waiting``) and those whose
    next attempt is queued in the pool again (``shards_queued``, orchestrations.shards._unreachable): a client that
    added it to the other counts counted those twice."""
    status = openapi.description("http://127.0.0.1:7071")["components"]["schemas"]["TaskStatus"]["properties"]
    said = status["unreachable"]["properties"]["shards"]["description"]
    assert "shards_waiting" in said and "shards_queued" in said, said


def test_the_task_lists_rows_are_described_with_every_field_they_carry() -> None:
    """``GET /api/tasks`` rows carry ``runtime_status`` and ``status_url`` besides id, request_name, stage, images,
    created and owner (``api.starters.list_tasks``); the description and README's endpoint row left those two out
    (README also ``request_name``), so a client generated from the description dropped them. Read from the row the
    handler builds."""
    import ast
    from pathlib import Path

    from api import starters

    tree = ast.parse(Path(starters.__file__).read_text(encoding="utf-8"))
    handler = next(f for f in ast.walk(tree) if isinstance(f, ast.AsyncFunctionDef) and f.name == "list_tasks")
    row = next(call.args[0] for call in ast.walk(handler) if isinstance(call, ast.Call)
               and isinstance(call.func, ast.Attribute) and call.func.attr == "append")
    assert isinstance(row, ast.Dict)
    keys = {k.value for d in ast.walk(row) if isinstance(d, ast.Dict) for k in d.keys if isinstance(k, ast.Constant)}
    assert {"id", "stage", "created", "owner"} <= keys
    items = openapi.description("http://127.0.0.1:7071")["components"]["schemas"]["TaskList"]["properties"]["tasks"]
    assert sorted(keys - set(items["items"]["properties"])) == []
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if line.startswith("| `GET /api/tasks` |"))
    assert sorted(k for k in keys if f"`{k}`" not in line) == [], line


def test_the_task_lists_default_length_is_one_number_and_the_docs_state_it() -> None:
    """``GET /api/tasks`` without ``?limit=`` shows the newest 50 tasks: the handler, its description's default and
    ``trapbatch list --limit``'s default were three literals, which README, docs/cli.md and api/starters.py's
    docstring repeat; they are one constant now (``core.contracts.TASK_LIST_LIMIT``), and each place gives it."""
    import ast
    from pathlib import Path

    from api import starters
    from cli.main import cli
    from core.contracts import TASK_LIST_LIMIT

    tree = ast.parse(Path(starters.__file__).read_text(encoding="utf-8"))
    handler = next(f for f in ast.walk(tree) if isinstance(f, ast.AsyncFunctionDef) and f.name == "list_tasks")
    read = next(call for call in ast.walk(handler) if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute) and call.func.attr == "get"
                and call.args and isinstance(call.args[0], ast.Constant) and call.args[0].value == "limit")
    assert "TASK_LIST_LIMIT" in ast.unparse(read.args[1]), ast.unparse(read)
    get = openapi.description("http://127.0.0.1:7071")["paths"]["/api/tasks"]["get"]
    assert [p["schema"]["default"] for p in get["parameters"] if p["name"] == "limit"] == [TASK_LIST_LIMIT]
    assert [p.default for p in cli.commands["list"].params if p.name == "limit"] == [TASK_LIST_LIMIT]
    root = Path(__file__).resolve().parents[2]
    said = {"README.md": f"(`?limit=N`, default {TASK_LIST_LIMIT})",
            "docs/cli.md": f"`--limit N` of them (default {TASK_LIST_LIMIT};",
            "api/starters.py": f"newest first (?limit=N, default {TASK_LIST_LIMIT})"}
    assert [f"{path}: {words}" for path, words in said.items()
            if words not in " ".join((root / path).read_text(encoding="utf-8").split())] == []


def test_the_readme_names_every_route_that_answers_409_until_the_task_has_results() -> None:
    """The routes that work on a task's results (``api.starters.finished_task``: ``TaskNotFinished``, 409) refuse a
    task none of whose runs has results yet; README's endpoint table said so for ``GET .../results`` alone, so a
    client that re-rendered, searched or removed repeats of a running task met a 409 the docs never gave."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    guarded = set()
    for module in sorted((root / "api").glob("*.py")):
        for handler in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not isinstance(handler, ast.AsyncFunctionDef):
                continue
            calls = {c.func.id for c in ast.walk(handler) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            for deco in handler.decorator_list:
                if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "route"
                        and "finished_task" in calls):
                    kw = {k.arg: ast.literal_eval(k.value) for k in deco.keywords if k.arg in ("route", "methods")}
                    route = "/api/" + kw["route"].replace("{task_id}", "{id}")
                    guarded |= {f"{method} {route}" for method in kw["methods"]}
    assert len(guarded) >= 6, guarded
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"The routes that work on a task's results \(([^)]*)\) answer `409` until", readme)
    assert said, "README says which routes answer 409 before the task has results"
    assert set(re.findall(r"`((?:GET|POST|DELETE) /api/[^`]+)`", said.group(1))) == guarded


def _routes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(METHOD, a concrete path) of every operation the description gives."""
    return [(method.upper(), template.replace("{task_id}", "task-" + "0" * 20))
            for template, item in doc["paths"].items() for method in item if method != "parameters"]


@pytest.mark.parametrize("failure", [
    ConfigError("TRAPBATCH_CONTAINER is not set", "set it in the function app's settings"),
    StorageHostUnresolvable("trapbatch's storage account host name does not resolve", "check AzureWebJobsStorage"),
    RuntimeError("an unforeseen failure")], ids=lambda e: type(e).__name__)
def test_every_route_describes_the_edges_500_answers(failure: Exception) -> None:
    """A setting missing or wrong (``ConfigError``), the app's own storage host name that DNS does not know
    (``StorageHostUnresolvable``) and anything unforeseen (``InternalError``) answer 500 ``{error, hint}`` at the
    edge on any route (``api.edge.as_trapbatch_error``); the description gave no 500, so a client generated from it
    had no type for that answer."""
    import asyncio
    import json

    from api.edge import http_edge
    from tests.openapi_answers import schema_name_of, undescribed

    async def handler() -> Any:
        raise failure

    response = asyncio.run(http_edge(handler)())
    body = json.loads(response.get_body())
    assert response.status_code == 500 and body["hint"], body
    doc = openapi.description("http://h")
    assert sorted(f"{m} {p}" for m, p in _routes(doc) if schema_name_of(m, p, 500) != "Error") == []
    assert undescribed("Error", body) == []


def test_no_object_in_the_answers_is_left_without_its_content_described() -> None:
    """A bare ``{"type": "object"}`` says nothing of what it holds: a generated client keeps it as an untyped map and
    the strict check (tests/openapi_answers.strict) refuses any key in it. The repeats' places and options, the
    links' and results' files, the search's options and a re-render's CSVs were such."""
    from tests.openapi_answers import is_bare_object

    bare: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if is_bare_object(node):
                bare.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(openapi.description("http://h")["components"]["schemas"], "")
    assert bare == []


def _result_names(key: str) -> set[str]:
    """Every blob ``adapters.share_links.result_files`` lists, for both variants of the task ``key``."""
    from gpu_batch import layout

    names = {layout.damaged_blob(key), layout.repeats_blob(key)}
    for variant in ("", layout.REPEATS_REMOVED):
        names |= {layout.results_blob(key, variant), layout.csv_blob(key, variant), layout.readme_blob(key, variant),
                  layout.exports_prefix(key, variant) + "coco.json",
                  layout.exports_prefix(key, variant) + "camtrap-dp/datapackage.json",
                  layout.threshold_csv_blob(key, 0.5, variant)}
    return names


def test_the_inner_objects_of_the_repeats_results_and_search_answers_are_described() -> None:
    """What the routes put in them, made by the code that makes them: GET .../repeats' places (``core.repeats``
    ranked from a real folder search), its options (the document's, ``RepeatOptions.to_dict``), search_options and
    skipped_folders (``api.repeat_search.list_fields``) and searching's options; POST .../repeats/search's options
    (``core.requests.repeat_search_fields``); GET .../results' files and their links (``adapters.share_links``);
    POST .../previews' CSVs (``api.after_task``). Each checked against the strict description."""
    from datetime import datetime, timezone

    from adapters import share_links
    from api.repeat_search import list_fields
    from core.repeats import rank_locations, search_folder
    from core.requests import repeat_search_fields
    from gpu_batch import layout
    from gpu_batch.formats.eligible import RepeatOptions
    from tests.openapi_answers import undescribed

    task = "task-" + "0" * 20
    options = RepeatOptions(occurrence_threshold=2)
    rows = [(f"IMG_{i}.JPG", "1", 0.1, 0.2, 0.05, 0.05, 0.9) for i in range(3)]
    found = rank_locations(search_folder("site-a/cam-1", rows, options), options, 3, [("site-b/cam-2", 900_000)],
                           task)
    assert found["locations"] and found["skipped_folders"]
    searching = {"runtime_status": "Running", "stage": "searching", "search": "s1", "options": options.to_dict()}
    repeats = {"id": task, "locations": found["locations"], "options": found["options"], **list_fields(found),
               "blob": layout.repeats_blob(task), "removal": None, "searching": searching}
    assert undescribed("Repeats", repeats) == []
    started = {"id": task, "search": "s1", "options": repeat_search_fields(options), "status_url": "u", "hint": "h"}
    assert undescribed("SearchStarted", started) == []

    class Names:
        def __init__(self, names: set[str]) -> None:
            self.names = names

        def exists(self, container: str, name: str) -> bool:
            return name in self.names

        def list_names(self, container: str, prefix: str = "") -> Any:
            return iter(sorted(n for n in self.names if n.startswith(prefix)))

    files = share_links.result_files(Names(_result_names(task)), "trapbatch", task)  # type: ignore[arg-type]
    assert set(files) == {"original", "repeats-removed"} and files["original"]["exports"], files
    links = share_links.linked(files, share_links.Links(datetime(2030, 1, 1, tzinfo=timezone.utc), "user-delegation",
                                                        {n: f"https://a/{n}?sig=x" for n in share_links.all_names(
                                                            files)}))
    results = {"id": task, "stage": "completed", "previews": {"container": "$web"}, "links": links,
               "results": {"container": "trapbatch", "blob": layout.results_blob(task),
                           "exports": {v: e["exports"] for v, e in files.items()}, "files": files}}
    assert undescribed("Results", results) == []
    csv = {v or "original": layout.threshold_csv_blob(task, 0.5, v) for v in ("", layout.REPEATS_REMOVED)}
    assert undescribed("RerenderStarted", {"id": task, "threshold": 0.5, "csv": csv}) == []


def test_the_cancels_409_says_a_run_replaced_meanwhile_cancels_nothing() -> None:
    """POST .../cancel answers 409 where the run it found running was terminated and replaced by a later run while it
    was made (api.starters.cancel_task, api.cancel_marker): nothing was cancelled, and a client must cancel again to
    stop the new run. The description gave only the generic "not in a stage that allows this", which tells a client
    that the task cannot be cancelled at all."""
    routes = openapi.description("http://127.0.0.1:7071")["paths"]
    said = routes["/api/tasks/{task_id}/cancel"]["post"]["responses"]["409"]["description"]
    assert "replaced by a later run" in said and "nothing was cancelled" in said and "cancel again" in said, said
