"""A tiny v2-model Durable app that the Python worker indexes but the Functions host partly refuses.

The worker accepts every function here; the host (``WorkerFunctionMetadataProvider.ValidateMetadata``,
``ScriptHost.ValidateFunction``) leaves out the ones marked REFUSED, each with its own message, and serves the rest
(``tests/devhost/test_host_metadata.py``). The ones marked ACCEPTED use snake_case binding names (``in_put``,
``my_req``, ``durable_client``), which hosts since 4.1038 accept: devhost must not refuse them either.
"""
from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.function_name("bad.name")  # REFUSED: a '.' in a function name
@app.route(route="dotted", methods=["GET"])
def dotted(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("dotted")


@app.route(route="private", methods=["GET"])
def _private(req: func.HttpRequest) -> func.HttpResponse:  # REFUSED: a function name must start with a letter
    return func.HttpResponse("private")


@app.activity_trigger(input_name="größe")  # REFUSED: a binding name of ASCII letters, digits and '_' only
def measure(größe: str) -> str:
    return größe


@app.route(route="clash", methods=["GET"], trigger_arg_name="Req")
@app.durable_client_input(client_name="req")  # REFUSED: binding names are unique ignoring case
def clash(Req: func.HttpRequest, req: df.DurableOrchestrationClient) -> func.HttpResponse:
    return func.HttpResponse("clash")


@app.route(route="admin/keys", methods=["GET"])  # REFUSED: the host's own route space
def admin_keys(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="items", methods=["GET", "POST"], trigger_arg_name="my_req")  # ACCEPTED (first by name)
@app.durable_client_input(client_name="durable_client")
async def items_a(my_req: func.HttpRequest, durable_client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return func.HttpResponse("a")


@app.route(route="/Items/", methods=["POST"])  # REFUSED: the same route and method as items_a
def items_b(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("b")


@app.route(route="items", methods=["DELETE"])  # ACCEPTED: the same route, another method
def items_c(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("c")


@app.activity_trigger(input_name="in_put")  # ACCEPTED
def echo(in_put: str) -> str:
    return in_put


@app.orchestration_trigger(context_name="context")  # ACCEPTED
def echoer(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    return (yield context.call_activity("echo", context.get_input()))
