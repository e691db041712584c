"""Check an API answer against api/openapi.py's description made strict: what a client generated from it keeps.

Why strict: a description that leaves a field out still validates the answer as written (JSON Schema lets unknown
properties pass), while a generated client drops the field and a validator with ``additionalProperties: false``
refuses the answer. So every object schema that lists properties, and does not say otherwise, takes no other here.
"""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator


def strict(node: Any) -> Any:
    """The description with ``additionalProperties: false`` on every object schema that lists properties and does
    not say otherwise."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
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
