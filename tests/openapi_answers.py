"""Check an API answer against api/openapi.py's description made strict: what a client generated from it keeps.

Why strict: a description that leaves a field out still validates the answer as written (JSON Schema lets unknown
properties pass), while a generated client drops the field and a validator with ``additionalProperties: false``
refuses the answer. So every object schema that lists properties, and does not say otherwise, takes no other here,
and an object schema that says nothing of its content (a bare ``{"type": "object"}``: a generated client keeps it as
an untyped map) takes no property at all: what an answer carries in it must be described.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from jsonschema import Draft202012Validator


def is_bare_object(node: Any) -> bool:
    """Whether ``node`` is an object schema that says nothing of what the object holds."""
    kinds = node.get("type") if isinstance(node, dict) else None
    return (kinds == "object" or (isinstance(kinds, list) and "object" in kinds)) and not (
        {"properties", "additionalProperties", "patternProperties", "$ref", "oneOf", "anyOf", "allOf"} & set(node))


def strict(node: Any) -> Any:
    """The description with ``additionalProperties: false`` on every object schema that lists properties and does
    not say otherwise, and on every bare object schema (``is_bare_object``)."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if (isinstance(node.get("properties"), dict) and "additionalProperties" not in node) or is_bare_object(node):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def validator(schema_name: str) -> Draft202012Validator:
    """A validator of one component of the strict description (its ``$ref``s resolve in the document)."""
    from api import openapi

    return Draft202012Validator({**strict(openapi.description("http://h")),
                                 "$ref": f"#/components/schemas/{schema_name}"})


def undescribed(schema_name: str, *answers: Any) -> list[str]:
    """What of ``answers`` the strict ``schema_name`` refuses, one line per path and reason (empty: none)."""
    check = validator(schema_name)
    return sorted({f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
                   for answer in answers for e in check.iter_errors(answer)})


def schema_name_of(method: str, path: str, status: int) -> str | None:
    """The component the description names for ``method path`` answering ``status`` (None: no JSON body, or no
    such route or status in the description)."""
    import re

    from api import openapi

    for template, item in openapi.description("http://h")["paths"].items():
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), path):
            answer = item.get(method.lower(), {}).get("responses", {}).get(str(status), {})
            ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
            return ref.rsplit("/", 1)[-1] or None
    return None


class AnswerRecorder:
    """The JSON answers of the app's routes a test's session received, to check against the description at the end
    (a check inside a request would fail within a test's polling loop)."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str, int, Any]] = []

    def record(self, response: Any) -> None:
        from urllib.parse import urlsplit

        path = urlsplit(response.request.url).path
        if path.startswith("/api/") and "json" in response.headers.get("Content-Type", ""):
            self.answers.append((response.request.method, path, response.status_code, response.json()))

    def undescribed(self) -> list[str]:
        """Each answer the strict description refuses (or has no schema for), with its route and status."""
        wrong = []
        for method, path, status, body in self.answers:
            name = schema_name_of(method, path, status)
            said = [f"no JSON answer {status} described"] if name is None else undescribed(name, body)
            wrong += [f"{method} {path} {status}: {line}" for line in said]
        return sorted(set(wrong))


def recording(session: Any) -> AnswerRecorder:
    """An ``AnswerRecorder`` of every answer ``session`` (a ``requests.Session``) receives from now on."""
    recorder = AnswerRecorder()
    session.hooks["response"].append(lambda response, *args, **kwargs: recorder.record(response))
    return recorder


def described_answers_fixture(recorder: AnswerRecorder) -> Callable[[], Iterator[None]]:
    """An autouse fixture (assign it to a module-level name) that fails a test any of whose JSON answers has a field
    the OpenAPI description does not give, with its type: a client generated from the description keeps them all.
    Checked after the test, as a check inside a request would fail within a test's polling loop."""

    @pytest.fixture(autouse=True)
    def described_answers() -> Iterator[None]:
        recorder.answers.clear()
        yield
        assert recorder.undescribed() == []

    return described_answers
