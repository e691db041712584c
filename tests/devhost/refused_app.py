"""A tiny v2-model Durable app that the Azure Functions Python worker refuses to index.

Its activity's parameter is annotated ``dict[str, Any]`` (a builtin generic alias: "invalid non-type annotation" to the
worker, upstream azure-functions-durable-python#468). The annotations are strings here (``from __future__ import
annotations``): the worker resolves them with ``typing.get_type_hints``, so that changes nothing.
tests/platform/test_worker_indexing.py rewrites the one ``PAYLOAD`` annotation below to check which forms pass.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, TypedDict

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()


class Payload(TypedDict):
    n: int


@bp.activity_trigger(input_name="payload", activity="double")
def double(payload: dict[str, Any]) -> dict[str, Any]:  # PAYLOAD
    return {"n": payload["n"] * 2}


@bp.orchestration_trigger(context_name="context")
def doubler(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    return (yield context.call_activity("double", context.get_input()))


app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(bp)


@app.route(route="start", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new("doubler", None, req.get_json())
    return func.HttpResponse(json.dumps({"id": instance_id}), mimetype="application/json")


def write_variant(directory: Path, annotation: str | None) -> Path:
    """Write this app with the activity parameter annotated ``annotation`` (None: unannotated) under a fresh module
    name in ``directory``; the return annotation stays ``dict[str, Any]``."""
    source = Path(__file__).read_text()
    old = "def double(payload: dict[str, Any]) -> dict[str, Any]:  # PAYLOAD"
    assert old in source
    new = f"def double(payload{'' if annotation is None else ': ' + annotation}) -> dict[str, Any]:  # PAYLOAD"
    path = directory / f"variant_app_{uuid.uuid4().hex[:12]}.py"
    path.write_text(source.replace(old, new))
    return path
