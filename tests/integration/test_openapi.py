"""schemathesis against devhost, driven by the app's own ``GET /api/openapi.json``: generated requests (valid and
invalid, per the description) to every operation must get no 5xx, only documented status codes and content types, and
bodies that match the documented schemas; every request answers within ``ANSWER_TIMEOUT_S`` (no hang).

Bounded: ``TRAPBATCH_SCHEMATHESIS_EXAMPLES`` examples per operation and generation mode (default 12, which CI runs in
well under a minute on two cores); set it higher for a deeper run locally.
"""
from __future__ import annotations

import os
from typing import Any

import pytest
import requests

from tests.integration.conftest import upload_images
from tests.openapi_answers import strict
from tests.waiting import wait_until

FUNCTION_KEY = "openapi-tests-function-key"
EXAMPLES = int(os.environ.get("TRAPBATCH_SCHEMATHESIS_EXAMPLES", "12"))
# A hang guard: a loaded CI machine once took over 30 s for one answer (Hypothesis then saw a flaky failure).
ANSWER_TIMEOUT_S = 120


@pytest.fixture
def host(app_env: dict[str, str], unique_name: str):  # type: ignore[no-untyped-def]
    from devhost.host import DevHost
    import function_app

    h = DevHost(function_app.app, app_env["AzureWebJobsStorage"], task_hub="o" + unique_name[:12], port=0,
                blob_poll_s=0.5, function_key=FUNCTION_KEY)
    h.start()
    yield h
    h.stop()


def test_the_description_is_served_and_needs_the_key(host) -> None:  # type: ignore[no-untyped-def]
    url = host.base_url + "/api/openapi.json"
    assert requests.get(url, timeout=120).status_code == 401
    doc = requests.get(url, headers={"x-functions-key": FUNCTION_KEY}, timeout=120).json()
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": host.base_url}]


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(host, store, unique_name) -> None:  # type: ignore[no-untyped-def]
    import hypothesis
    from hypothesis import HealthCheck, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                     status_code_conformance)
    from schemathesis.openapi import from_dict

    upload_images(store, unique_name, 2, corrupt=0)
    headers = {"x-functions-key": FUNCTION_KEY}
    # two real tasks, so the task routes are also fuzzed on ids that exist (200s, 409s), not only on 404s
    real = [requests.post(host.base_url + "/api/tasks", json={"container": unique_name, **extra}, headers=headers,
                          timeout=120).json()["id"] for extra in ({}, {"dry_run": True})]
    doc = requests.get(host.base_url + "/api/openapi.json", headers=headers, timeout=120).json()
    # strict: an answer's field the description leaves out fails response_schema_conformance too (a client generated
    # from the description drops it; a validator with additionalProperties false refuses the answer)
    schema = from_dict(strict(doc))
    # Not negative_data_rejection: it wants unknown query parameters refused, and the API ignores them on purpose
    # (the Functions host's own ?code= key, cache busters). Invalid bodies and path ids are still sent (negative mode)
    # and must get a documented 4xx with an {error, hint} body, never a 5xx.
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    codes: dict[str, set[int]] = {}
    session = requests.Session()
    session.headers.update(headers)
    passes: list[tuple[Any, dict[str, str]]] = [(mode, {}) for mode in GenerationMode]
    passes += [(GenerationMode.POSITIVE, {"task_id": task_id}) for task_id in real]
    for mode, pinned in passes:
        if pinned:
            wait_until(lambda: requests.get(f"{host.base_url}/api/tasks/{pinned['task_id']}", headers=headers,
                                            timeout=120).json()["runtime_status"] in ("Completed", "Failed"),
                       240, "the real task's end")
        # the task's deletion last: on a real task it takes the task away, and the routes after it would see 404 only
        for operation in sorted(operations(schema), key=lambda op: op.label == "DELETE /api/tasks/{task_id}"):
            if pinned and "{task_id}" not in operation.path:
                continue

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned or None))
            def run(case: Any) -> None:
                response = case.call_and_validate(base_url=host.base_url, session=session, checks=checks,
                                                  timeout=ANSWER_TIMEOUT_S)
                codes.setdefault(operation.label, set()).add(response.status_code)

            try:
                run()
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
                failures.append(f"{operation.label} ({mode.value}{', ' + pinned['task_id'] if pinned else ''}): "
                                f"{_described(exc)[:3000]}")
    assert not failures, "\n\n".join(failures)
    # every operation was exercised, past the function key (a run answered 401 throughout would prove nothing)
    assert len(codes) == len(operations(schema)) and all(seen - {401} for seen in codes.values()), codes
    assert {400, 404} <= codes["POST /api/tasks"], codes
    assert {200, 404} <= codes["GET /api/tasks/{task_id}"] and {200, 409} <= codes["GET /api/tasks/{task_id}/results"]
    assert {200, 404} <= codes["DELETE /api/tasks/{task_id}"], codes  # a real task deleted, then unknown
    print(codes)


def operations(schema: Any) -> list[Any]:
    """Every operation of a loaded description; fails on one schemathesis could not read."""
    from schemathesis.core.result import Ok

    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        found.append(result.ok())
    return found


def _described(exc: BaseException) -> str:
    """The exception and, for Hypothesis's FlakyFailure (an exception group), the failures inside it: its own
    message only says that the first call failed, not how (a CI run reported nothing more)."""
    text = f"{type(exc).__name__}: {exc}"
    for inner in getattr(exc, "exceptions", ()):
        text += f"\n  caused by {type(inner).__name__}: {inner}"
    return text
