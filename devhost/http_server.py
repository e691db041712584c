"""The HTTP side of devhost: the app's HTTP triggers under /api/, the Durable extension's management API that the
SDK's ``DurableOrchestrationClient`` calls (``rpcBaseUrl``), and /web/ serving the ``$web`` container (Azurite has no
static-website endpoint).

Management API shapes follow what azure-functions-durable 1.7.0's client sends and expects (see its
``DurableOrchestrationClient``): ``start_new`` posts a JSON *string* holding the input's JSON (decoded twice here),
``get_status`` accepts 200/202/400/404/500 and reads the body as a status object, ``raise_event`` expects 202/404/410,
``terminate`` 202/404/410. All user functions run on this one event loop, because the SDK keeps one global aiohttp
session that is bound to the loop that created it.
"""
from __future__ import annotations

import inspect
import json
import logging
import mimetypes
from typing import Any, Callable

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost.engine import Engine, InstanceGone, UnknownFunction
from devhost.functions import AppIndex

logger = logging.getLogger("devhost.http")
WEBHOOKS = "/runtime/webhooks/durabletask/"


def binding_json(origin: str, hub: str) -> str:
    """The durable client binding the Functions host hands to ``@durable_client_input`` functions."""
    inst = f"{origin}{WEBHOOKS}instances/INSTANCEID"
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {"createNewInstancePostUri": f"{origin}{WEBHOOKS}orchestrators/{{functionName}}[/{{instanceId}}]",
                         "createAndWaitOnNewInstancePostUri": f"{origin}{WEBHOOKS}orchestrators/{{functionName}}"},
        "managementUrls": {"id": "INSTANCEID", "statusQueryGetUri": inst,
                           "sendEventPostUri": inst + "/raiseEvent/{eventName}",
                           "terminatePostUri": inst + "/terminate?reason={text}",
                           "rewindPostUri": inst + "/rewind?reason={text}",
                           "purgeHistoryDeleteUri": inst,
                           "restartPostUri": inst + "/restart"},
        "rpcBaseUrl": f"{origin}{WEBHOOKS}",
        "baseUrl": f"{origin}{WEBHOOKS}",
        "requiredQueryStringParameters": "",
    })


def decode_client_body(raw: str) -> str | None:
    """The SDK client JSON-encodes the already JSON-encoded value (``json=df_dumps(value)``): undo one layer.

    A body that is plain JSON (a raw HTTP client) is taken as the value itself.
    """
    if not raw:
        return None
    inner = json.loads(raw)
    if isinstance(inner, str):
        try:
            json.loads(inner)
            return inner
        except ValueError:
            return json.dumps(inner)
    return json.dumps(inner)


def status_code_for(runtime: str | None) -> int:
    return {"Completed": 200, "Failed": 500, "Terminated": 400}.get(runtime or "", 202)


def _accepted(action: Callable[[], object]) -> web.Response:
    """Run an instance operation and answer as the Durable management API does: 202, 404 unknown, 410 finished."""
    try:
        action()
    except UnknownFunction:
        return web.Response(status=404)
    except InstanceGone:
        return web.Response(status=410)
    return web.Response(status=202)

class HttpFront:
    def __init__(self, index: AppIndex, engine: Engine, hub: str, blobs: BlobServiceClient) -> None:
        self.index = index
        self.engine = engine
        self.hub = hub
        self.blobs = blobs
        self.origin = ""  # set once the port is known

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.post(WEBHOOKS + "orchestrators/{name}", self.start),
            web.post(WEBHOOKS + "orchestrators/{name}/{iid}", self.start),
            web.get(WEBHOOKS + "instances/", self.list_instances),
            web.get(WEBHOOKS + "instances", self.list_instances),
            web.get(WEBHOOKS + "instances/{iid}", self.get_status),
            web.delete(WEBHOOKS + "instances/{iid}", self.purge),
            web.post(WEBHOOKS + "instances/{iid}/raiseEvent/{event}", self.raise_event),
            web.post(WEBHOOKS + "instances/{iid}/terminate", self.terminate),
            web.get("/web/{path:.*}", self.static),
            web.route("*", "/api/{tail:.*}", self.api),
        ])
        return app

    # --------------------------------------------------------- HTTP triggers
    async def call_user(self, fn: Any, kwargs: dict[str, Any]) -> Any:
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def api(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"].strip("/")
        for route in self.index.http:
            m = route.pattern.match(tail)
            if not m:
                continue
            if request.method not in route.methods:
                continue
            body = await request.read()
            req = func.HttpRequest(request.method, str(request.url), headers=dict(request.headers),
                                   params=dict(request.query), route_params=m.groupdict(), body=body)
            kwargs: dict[str, Any] = {route.arg_name: req}
            if route.client_arg:
                kwargs[route.client_arg] = binding_json(self.origin, self.hub)
            try:
                resp = await self.call_user(route.fn, kwargs)
            except Exception as exc:  # what the Functions host does: 500, and the error in the log
                logger.exception("function %s failed", route.name)
                return web.json_response({"error": f"function {route.name} failed: {exc}",
                                          "hint": "see the devhost log"}, status=500)
            if isinstance(resp, func.HttpResponse):
                headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-type"}
                return web.Response(body=resp.get_body(), status=resp.status_code, headers=headers,
                                    content_type=(resp.mimetype or "text/plain"), charset=resp.charset or None)
            return web.Response(status=204)
        return web.json_response({"error": f"no function serves {request.method} /api/{tail}",
                                  "hint": "routes: " + ", ".join(f"{'/'.join(r.methods)} /api/{r.route}"
                                                                 for r in self.index.http)}, status=404)

    # ------------------------------------------------------ management API
    async def start(self, request: web.Request) -> web.Response:
        try:
            input_json = decode_client_body(await request.text())
        except ValueError:
            return web.json_response({"ExceptionMessage": "the request body is not JSON"}, status=400)
        try:
            iid = self.engine.start_orchestration(request.match_info["name"], input_json, request.match_info.get("iid"))
        except UnknownFunction as exc:
            return web.json_response({"ExceptionMessage": str(exc)}, status=400)
        payload = json.loads(binding_json(self.origin, self.hub))["managementUrls"]
        payload = {k: v.replace("INSTANCEID", iid) for k, v in payload.items()}
        return web.json_response(payload, status=202)

    async def get_status(self, request: web.Request) -> web.Response:
        q = request.query
        st = self.engine.status(request.match_info["iid"], show_input=q.get("showInput", "true").lower() != "false",
                                show_history=q.get("showHistory", "false").lower() == "true")
        if st is None:
            return web.Response(status=404)
        return web.json_response(st, status=status_code_for(st["runtimeStatus"]))

    async def list_instances(self, request: web.Request) -> web.Response:
        q = request.query
        wanted = set(filter(None, q.get("runtimeStatus", "").split(",")))
        prefix = q.get("instanceIdPrefix", "")
        out = []
        for inst in self.engine.store.list_instances():
            iid = inst["InstanceId"]
            if prefix and not iid.startswith(prefix):
                continue
            if wanted and inst.get("Status") not in wanted:
                continue
            st = self.engine.status(iid)
            if st:
                out.append(st)
        return web.json_response(out)

    async def raise_event(self, request: web.Request) -> web.Response:
        try:
            data = decode_client_body(await request.text())
        except ValueError:
            return web.Response(status=400, text="Only application/json request content is supported")
        return _accepted(lambda: self.engine.raise_event(request.match_info["iid"], request.match_info["event"], data))

    async def terminate(self, request: web.Request) -> web.Response:
        return _accepted(lambda: self.engine.terminate(request.match_info["iid"], request.query.get("reason", "")))

    async def purge(self, request: web.Request) -> web.Response:
        iid = request.match_info["iid"]
        if self.engine.store.get_instance(iid) is None:
            return web.Response(status=404)
        self.engine.store.delete_instance(iid)
        self.engine.store.delete_messages_of(iid)
        self.engine.store.delete_activities_of(iid)
        return web.json_response({"instancesDeleted": 1})

    # -------------------------------------------------------- static site
    async def static(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if not path or path.endswith("/"):
            path += "index.html"
        try:
            data = self.blobs.get_blob_client("$web", path).download_blob().readall()
        except ResourceNotFoundError:
            return web.Response(status=404, text=f"not found in $web: {path}")
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return web.Response(body=data, content_type=ctype)
