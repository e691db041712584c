"""The HTTP side of devhost: the app's HTTP triggers under /api/ (function keys enforced), /web/ serving the ``$web``
container (Azurite has no static-website endpoint), and the Durable extension's management API.

The management API is served twice, as the extension serves it: on the public port under
``/runtime/webhooks/durabletask/`` (system key or master key required; the management URLs handed out carry the system
key as ``code=``), and on a second, loopback-only listener under ``/durabletask/`` without keys: the extension's local
RPC endpoint, which the binding's ``rpcBaseUrl`` names and the SDK's ``DurableOrchestrationClient`` calls.

Routes, status codes and error bodies follow azure-functions-durable-extension ``HttpApiHandler.cs`` (see
devhost/README.md's fidelity table). Every storage call runs in a thread pool (``_off``), never on the event loop, and
a sync HTTP function runs in that pool too, as the Python worker runs sync functions in its thread pool; async
functions run on this one loop, because the SDK keeps one global aiohttp session bound to the loop that created it.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import inspect
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import quote

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost import history as h
from devhost.engine import (Engine, InstanceGone, InstanceNotFound, InvalidInstanceId, OrchestrationAlreadyExists,
                            UnknownFunction)
from devhost.functions import AppIndex
from devhost.keys import PRINCIPAL_PREFIX, Keys
from devhost.store import TERMINAL

logger = logging.getLogger("devhost.http")
WEBHOOKS = "/runtime/webhooks/durabletask/"
RPC = "/durabletask/"
PAGE_SIZE = 100  # OrchestrationStatusQueryCondition.PageSize default
CONTINUATION = "x-ms-continuation-token"
RUNNING = ("Running", "Pending", "ContinuedAsNew", "Suspended")
T = TypeVar("T")


def management_urls(origin: str, hub: str, system_key: str, instance_id: str = "INSTANCEID") -> dict[str, str]:
    """``HttpApiHandler.CreateHttpManagementPayload``: the public webhook URLs of one instance, with the system key."""
    inst = f"{origin}{WEBHOOKS}instances/{instance_id}"
    suffix = f"taskHub={quote(hub)}&connection=Storage&code={system_key}"
    return {"id": instance_id, "statusQueryGetUri": f"{inst}?{suffix}",
            "sendEventPostUri": f"{inst}/raiseEvent/{{eventName}}?{suffix}",
            "terminatePostUri": f"{inst}/terminate?reason={{text}}&{suffix}",
            "rewindPostUri": f"{inst}/rewind?reason={{text}}&{suffix}",
            "purgeHistoryDeleteUri": f"{inst}?{suffix}",
            "restartPostUri": f"{inst}/restart?{suffix}",
            "suspendPostUri": f"{inst}/suspend?reason={{text}}&{suffix}",
            "resumePostUri": f"{inst}/resume?reason={{text}}&{suffix}"}


def binding_json(origin: str, hub: str, rpc_origin: str = "", system_key: str = "") -> str:
    """The durable client binding the Functions host hands to ``@durable_client_input`` functions."""
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {"createNewInstancePostUri": f"{origin}{WEBHOOKS}orchestrators/{{functionName}}[/{{instanceId}}]"
                                                     f"?code={system_key}",
                         "createAndWaitOnNewInstancePostUri": f"{origin}{WEBHOOKS}orchestrators/{{functionName}}"
                                                              f"[/{{instanceId}}]?timeout={{timeoutInSeconds}}"
                                                              f"&pollingInterval={{intervalInSeconds}}&code={system_key}"},
        "managementUrls": management_urls(origin, hub, system_key),
        "rpcBaseUrl": f"{rpc_origin or origin}{RPC}",
        "baseUrl": f"{origin}{WEBHOOKS}",
        "requiredQueryStringParameters": f"code={system_key}",
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


def event_data_as_stored(raw: str) -> str:
    """The ``Input`` of the ``EventRaised`` event the extension stores for a raiseEvent body: the body parsed as one
    JSON token and written back compactly, nothing unwrapped (ext ``HttpApiHandler.HandleRaiseEventRequestAsync``:
    ``MessagePayloadDataConverter.ConvertToJToken(body)``, then ``RaiseEventAsync`` serializes that token,
    ``JToken.ToString(Formatting.None)``). Raises ``ValueError`` for a body that is not JSON (an empty one too).

    Why not ``decode_client_body``: the SDK client's ``raise_event`` posts ``json=json.dumps(data)`` (sdk 1.7
    ``DurableOrchestrationClient.raise_event``, ``http_utils.post_async_request``), a JSON *string* holding the data's
    JSON, and that string is what the orchestrator's ``wait_for_external_event`` task gets on Azure
    (azure-functions-durable-python#295: a raised string arrives with its quotes). devhost unwrapped it, so a dict
    raised by the app arrived as a dict here and as its JSON text on Azure (devhost README, fidelity row 36).
    """
    return json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)


def status_code_for(runtime: str | None, error_500_on_failure: bool = False) -> int:
    """``HttpApiHandler.HandleGetStatusRequestAsync``: 202 while running, 200 when finished (a Failed instance 500
    only with ``returnInternalServerErrorOnFailure=true``)."""
    if runtime in RUNNING:
        return 202
    if runtime == "Failed":
        return 500 if error_500_on_failure else 200
    if runtime in ("Completed", "Terminated", "Canceled"):
        return 200
    return 500


def _error(status: int, message: str, exc: BaseException | None = None, exception_type: str = "") -> web.Response:
    """``HttpRequestMessageExtensions.CreateErrorResponse``: {Message} or {Message, ExceptionMessage, ExceptionType,
    StackTrace}."""
    body: dict[str, Any] = {"Message": message}
    if exc is not None:
        body.update(ExceptionMessage=str(exc), ExceptionType=exception_type or type(exc).__name__, StackTrace=None)
    return web.json_response(body, status=status)


def _bool(query: Any, name: str, default: bool) -> bool:
    value = next((v for k, v in query.items() if k.lower() == name.lower()), None)
    if value is None or value.lower() not in ("true", "false"):
        return default
    return bool(value.lower() == "true")


# DurableTask.Core OrchestrationStatus: the names Enum.TryParse takes, and its numbers
_ORCHESTRATION_STATUS = {str(i): name for i, name in enumerate(
    ("Running", "Completed", "ContinuedAsNew", "Failed", "Canceled", "Terminated", "Pending", "Suspended"))}


def _runtime_statuses(query: Any) -> list[str]:
    """The ``runtimeStatus`` states the extension reads from ``query``: every value of the parameter, comma-separated,
    each through .NET ``Enum.TryParse`` (names as written, or the enum's numbers; blanks around are taken as .NET
    trims them, which was not re-read in the runtime's source), the others dropped (ext
    ``HttpApiHandler.TryGetIEnumerableQueryParameterValue``). Empty: no status filter (rows 4, 46)."""
    values = [v.strip() for k, value in query.items() if k.lower() == "runtimestatus" for v in value.split(",")]
    names = set(_ORCHESTRATION_STATUS.values())
    return [_ORCHESTRATION_STATUS.get(v, v) for v in values if v in names or v in _ORCHESTRATION_STATUS]


def _param(query: Any, name: str) -> str | None:
    return next((v for k, v in query.items() if k.lower() == name.lower()), None)


def _timestamp(text: str | None) -> str:
    """A query's date (any ISO form) as devhost stores times, for string comparison in table queries; "" if none."""
    if not text:
        return ""
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return ""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return h.ts(parsed)


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def _late_answer(name: str, call: "asyncio.Future[Any]") -> None:
    failed = None if call.cancelled() else call.exception()
    logger.warning("function %s answered after its caller had been given 502%s", name,
                   f" (it failed: {failed})" if failed else "")


def _decode_token(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.encode()))["after"])


# MicrosoftDocs/azure-docs includes/functions-timeout-duration.md: "Regardless of the function app timeout setting,
# 230 seconds is the maximum amount of time that an HTTP triggered function can take to respond to a request. This is
# because of the default idle timeout of Azure Load Balancer." (functions-scale.md: the caller gets a 502; the function
# goes on running.)
HTTP_RESPONSE_LIMIT_S = 230.0

# host src/WebJobs.Script.WebHost/Program.cs: Kestrel's (and IIS's) MaxRequestBodySize is
# ScriptConstants.DefaultMaxRequestBodySize, 104857600 bytes; Middleware/HttpRequestBodySizeMiddleware.cs sets each
# request's limit to the app setting FUNCTIONS_REQUEST_BODY_SIZE_LIMIT instead when it parses as a long (docs
# functions-app-settings.md). (The docs' "210 MB" is web.config's IIS request filtering: Windows only, and wider than
# the 100 MB Kestrel/IIS limit inside it.) Flex Consumption runs this same host on Linux, with no other limit documented.
HOST_REQUEST_BODY_LIMIT = 104_857_600
REQUEST_BODY_LIMIT_SETTING = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"


def request_body_limit(env: Mapping[str, str]) -> int:
    """The largest request body, in bytes, the Functions host lets through: the app setting when it is a whole
    number (.NET ``long.TryParse``: surrounding blanks and a sign allowed, within a 64-bit long), else the host's
    default. A negative one makes Kestrel refuse the setting on every request (500s), so devhost refuses to start on
    it."""
    raw = env.get(REQUEST_BODY_LIMIT_SETTING, "").strip()
    if not re.fullmatch(r"[+-]?[0-9]+", raw):
        return HOST_REQUEST_BODY_LIMIT
    limit = int(raw)
    if not -(2 ** 63) <= limit < 2 ** 63:  # past a .NET long: TryParse fails, the host keeps its default
        return HOST_REQUEST_BODY_LIMIT
    if limit < 0:
        raise ValueError(f"{REQUEST_BODY_LIMIT_SETTING}={raw}: Kestrel takes no negative body size, and the host would "
                         "answer every request 500; leave it unset (100 MiB) or give a number of bytes")
    return limit


class BodyTooLarge(Exception):
    """A request body over the host's limit (Kestrel's ``BadHttpRequestException``, 413, which the host turns into a
    failed binding of ``req``: 500)."""


class HttpFront:
    def __init__(self, index: AppIndex, engine: Engine, hub: str, blobs: BlobServiceClient, keys: Keys,
                 workers: int = 8, response_limit_s: float = HTTP_RESPONSE_LIMIT_S,
                 body_limit: int = HOST_REQUEST_BODY_LIMIT) -> None:
        self.response_limit_s = response_limit_s
        self.body_limit = body_limit
        self.index = index
        self.engine = engine
        self.hub = hub
        self.blobs = blobs
        self.keys = keys
        self.origin = ""  # set once the ports are known
        self.rpc_origin = ""
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="devhost-http")

    def binding(self) -> str:
        return binding_json(self.origin, self.hub, self.rpc_origin, self.keys.system_key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _off(self, fn: Callable[..., T], *args: Any) -> T:
        """Run devhost's own blocking work (storage calls, table scans) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def build(self) -> web.Application:
        """The public app: HTTP triggers, /web/, and the management API behind the system key."""
        # the public port is the host's Kestrel: the body limit holds for the webhooks too (their catch-all answers 500);
        # aiohttp's 0 is no limit, hence 1 for a setting of 0 (/api/ reads bodies itself, exactly)
        app = web.Application(client_max_size=max(self.body_limit, 1))
        app.add_routes([
            web.route("*", WEBHOOKS + "{tail:.*}", self.webhook),
            web.get("/web/{path:.*}", self.static),
            # [\s\S]: a route value may hold any decoded character, a newline (%0A) included, as the host's routing
            # passes it to the function (a plain .* would leave such paths to aiohttp's own text/plain 404)
            web.route("*", "/api/{tail:[\\s\\S]*}", self.api),
        ])
        return app

    def build_rpc(self) -> web.Application:
        """The local RPC endpoint (loopback only, no keys), as the extension's ``LocalHttpListener``."""
        # ext LocalHttpListener.cs: its own Kestrel with ``MaxRequestBodySize = null`` ("remove request's Content size
        # limits"); aiohttp's 0 is no limit
        app = web.Application(client_max_size=0)
        app.add_routes([web.route("*", RPC + "{tail:.*}", self.rpc)])
        return app

    # --------------------------------------------------------- HTTP triggers
    async def call_user(self, fn: Any, kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        result = await self._off(functools.partial(fn, **kwargs))  # the worker runs sync functions in a pool
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
            if not self.keys.allows(route.auth_level, request.headers, request.query):
                return web.Response(status=401)  # AuthenticationLevelHandler + the host's authorization policy
            try:
                body = await self.read_body(request)
            except BodyTooLarge as exc:  # the binding of req fails before the function runs: the host's 500
                return web.json_response({"error": f"function {route.name} failed: Exception binding parameter "
                                                   f"'{route.arg_name}'. {exc}",
                                          "hint": f"the Functions host takes request bodies of at most "
                                                  f"{self.body_limit} bytes ({REQUEST_BODY_LIMIT_SETTING}, default "
                                                  f"{HOST_REQUEST_BODY_LIMIT}) and answers 500 to larger ones; put "
                                                  "large data in blob storage and send its name"}, status=500)
            req = func.HttpRequest(request.method, str(request.url), headers=self.caller_headers(request),
                                   params=dict(request.query), route_params=m.groupdict(), body=body)
            kwargs: dict[str, Any] = {route.arg_name: req}
            if route.client_arg:
                kwargs[route.client_arg] = self.binding()
            call = asyncio.ensure_future(self.call_user(route.fn, kwargs))
            # only the wait times out here: a TimeoutError the function itself raises is its failure (500 below)
            done, _ = await asyncio.wait({call}, timeout=self.response_limit_s)
            if call not in done:
                # Azure's load balancer gives up on the caller; the function itself runs on to its end
                call.add_done_callback(functools.partial(_late_answer, route.name))
                return web.Response(status=502, text=(
                    f"502 Bad Gateway: function {route.name} did not answer within {self.response_limit_s:g} s, "
                    "Azure's limit for an HTTP trigger's response (the load balancer's idle timeout); it goes on "
                    "running, its answer reaches no one. Answer at once and leave long work to an orchestration."))
            try:
                resp = call.result()
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

    async def read_body(self, request: web.Request) -> bytes:
        """The body, or ``BodyTooLarge`` past ``body_limit``: on a declared Content-Length before reading any of it,
        as Kestrel's ``Http1ContentLengthMessageBody`` does, else once more than the limit has come."""
        too_large = BodyTooLarge(f"Request body too large. The max request body size is {self.body_limit} bytes.")
        if request.content_length is not None and request.content_length > self.body_limit:
            raise too_large
        body = bytearray()
        async for chunk in request.content.iter_any():
            body.extend(chunk)
            if len(body) > self.body_limit:
                raise too_large
        return bytes(body)

    def caller_headers(self, request: web.Request) -> dict[str, str]:
        """The headers the app sees, as behind App Service Authentication: client-supplied X-MS-CLIENT-PRINCIPAL*
        copies are dropped, and the callers-file identity of the key used (if any) is added."""
        headers = {k: v for k, v in request.headers.items() if not k.lower().startswith(PRINCIPAL_PREFIX)}
        caller = self.keys.caller(request.headers, request.query)
        if caller is not None:
            headers.update(caller.principal_headers())
        return headers

    # ------------------------------------------------------ management API
    async def webhook(self, request: web.Request) -> web.StreamResponse:
        if not self.keys.allows("system", request.headers, request.query):
            return web.Response(status=401)
        return await self.management(request)

    async def rpc(self, request: web.Request) -> web.StreamResponse:
        return await self.management(request)

    async def management(self, request: web.Request) -> web.StreamResponse:
        """``HttpApiHandler.HandleRequestAsync``: route by path segments; anything else is 404."""
        parts = [p for p in request.match_info["tail"].split("/") if p != ""]
        method = request.method
        try:
            if parts and parts[0].lower() == "orchestrators" and len(parts) in (2, 3):
                if method != "POST":
                    return web.Response(status=404)
                return await self.start(request, parts[1], parts[2] if len(parts) == 3 else None)
            if parts and parts[0].lower() == "instances":
                if len(parts) == 1:
                    if method == "GET":
                        return await self.list_instances(request)
                    if method == "DELETE":
                        return await self.purge_by_filter(request)
                    return web.Response(status=404)
                iid = parts[1]
                if len(parts) == 2:
                    if method == "GET":
                        return await self.get_status(request, iid)
                    if method == "DELETE":
                        return await self.purge(iid)
                    return web.Response(status=404)
                if len(parts) == 3 and method == "POST":
                    operation = parts[2].lower()
                    if operation == "terminate":
                        return await self.terminate(request, iid)
                    if operation in ("rewind", "restart", "suspend", "resume"):
                        return _error(501, f"devhost does not implement the {operation} operation (the Durable "
                                      "extension does); see devhost/README.md")
                    return web.Response(status=404)
                if len(parts) == 4 and parts[2].lower() == "raiseevent" and method == "POST":
                    return await self.raise_event(request, iid, parts[3])
            return web.Response(status=404)
        except (ValueError, LookupError) as exc:  # the handler's ArgumentException branch
            return _error(400, "One or more of the arguments submitted is incorrect", exc, "System.ArgumentException")
        except Exception as exc:  # the handler's catch-all
            logger.exception("management API %s %s failed", method, request.path)
            return _error(500, "Something went wrong while processing your request", exc)

    async def start(self, request: web.Request, name: str, iid: str | None) -> web.Response:
        """``HandleStartOrchestratorRequestAsync`` -> ``DurableClient.StartNewAsync``."""
        try:
            input_json = decode_client_body(await request.text())
        except ValueError as exc:
            return _error(400, "Invalid JSON content", exc, "Newtonsoft.Json.JsonReaderException")
        try:
            iid = await self._off(self.engine.start_orchestration, name, input_json, iid)
        except (UnknownFunction, InvalidInstanceId) as exc:
            return _error(400, "One or more of the arguments submitted is incorrect", exc, "System.ArgumentException")
        except OrchestrationAlreadyExists as exc:
            return _error(500, "Something went wrong while processing your request", exc,
                          "DurableTask.Core.Exceptions.OrchestrationAlreadyExistsException")
        payload = management_urls(self.origin, self.hub, self.keys.system_key, iid)
        return web.json_response(payload, status=202, headers={"Location": payload["statusQueryGetUri"],
                                                                "Retry-After": "10"})

    async def get_status(self, request: web.Request, iid: str) -> web.Response:
        q = request.query
        st = await self._off(functools.partial(self.engine.status, iid, show_input=_bool(q, "showInput", True),
                                               show_history=_bool(q, "showHistory", False), input_as_text=True,
                                               show_history_output=_bool(q, "showHistoryOutput", False)))
        if st is None:
            return web.Response(status=404)
        code = status_code_for(st["runtimeStatus"], _bool(q, "returnInternalServerErrorOnFailure", False))
        headers = {"Location": str(request.url), "Retry-After": "5"} if code == 202 else {}
        return web.json_response(st, status=code, headers=headers)

    async def list_instances(self, request: web.Request) -> web.Response:
        """``HandleGetStatusRequestAsync`` (all instances): one page of ``top`` (default 100) and the
        ``x-ms-continuation-token`` header for the next ("" after the last page)."""
        q = request.query
        try:
            top = int(_param(q, "top") or PAGE_SIZE)
        except ValueError:
            top = PAGE_SIZE
        top = max(1, min(top, 1000))
        token = request.headers.get(CONTINUATION, "")
        after = _decode_token(token) if token else ""
        statuses = tuple(_runtime_statuses(q))
        page, more = await self._off(functools.partial(
            self.engine.store.query_instances, prefix=_param(q, "instanceIdPrefix") or "", statuses=statuses,
            created_from=_timestamp(_param(q, "createdTimeFrom")), created_to=_timestamp(_param(q, "createdTimeTo")),
            after=after, top=top))
        show_input = _bool(q, "showInput", True)  # OrchestrationStatusQueryCondition.ShowInput defaults to true
        out = [self.engine.status_from(inst, show_input=show_input, input_as_text=True) for inst in page]
        next_token = _encode_token(page[-1]["InstanceId"]) if more and page else ""
        return web.json_response(out, headers={CONTINUATION: next_token})

    async def raise_event(self, request: web.Request, iid: str, event: str) -> web.Response:
        """``HandleRaiseEventRequestAsync``: 404 unknown, 410 finished, 400 not JSON, else 202."""
        inst = await self._off(self.engine.store.get_instance, iid)
        if inst is None:
            return web.Response(status=404)
        if inst.get("Status") in TERMINAL + ("Canceled",):
            return web.Response(status=410)
        if request.content_type.lower() != "application/json":
            return _error(400, "Only application/json request content is supported")
        try:
            data = event_data_as_stored(await request.text())
        except ValueError as exc:
            return _error(400, "Invalid JSON content", exc, "Newtonsoft.Json.JsonReaderException")
        try:
            await self._off(self.engine.raise_event, iid, event, data)
        except InstanceNotFound:
            return web.Response(status=404)
        except InstanceGone:
            return web.Response(status=410)
        return web.Response(status=202)

    async def terminate(self, request: web.Request, iid: str) -> web.Response:
        """``HandleTerminateInstanceRequestAsync``: 404 unknown, 410 finished (Failed too), else 202."""
        try:
            await self._off(self.engine.terminate, iid, _param(request.query, "reason") or "")
        except InstanceNotFound:
            return web.Response(status=404)
        except InstanceGone:
            return web.Response(status=410)
        return web.Response(status=202)

    async def purge(self, iid: str) -> web.Response:
        """``HandleDeleteHistoryByIdRequestAsync``: 404 unknown, else 200 {"instancesDeleted": 1} (any status, as the
        Azure Storage provider's ``PurgeInstanceHistoryAsync(instanceId)``)."""
        deleted = await self._off(self.engine.purge, iid)
        if not deleted:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": 1})

    async def purge_by_filter(self, request: web.Request) -> web.Response:
        """``HandleDeleteHistoryWithFiltersRequestAsync``: createdTimeFrom required (400), 404 when nothing matched.

        runtimeStatus: as ``_runtime_statuses`` reads it (ext ``TryGetIEnumerableQueryParameterValue``); dtfx
        ``AzureTableTrackingStore.PurgeInstanceHistoryAsync`` keeps the finished states of that list, and a list left
        empty filters nothing: every instance of the range goes, running ones too
        (``OrchestrationInstanceStatusQueryCondition.ToOData``; fidelity row 46)."""
        q = request.query
        created_from = _timestamp(_param(q, "createdTimeFrom"))
        if not created_from:
            return web.json_response("Please provide value for 'createdTimeFrom' parameter.", status=400)
        created_to = _timestamp(_param(q, "createdTimeTo")) or h.ts(h.utcnow())
        asked = _runtime_statuses(q)
        statuses = tuple(s for s in asked if s in ("Completed", "Terminated", "Canceled", "Failed"))
        if asked and not statuses:
            logger.warning("purge: runtimeStatus %s names no finished state, so every instance created from %s to %s "
                           "is purged, running ones too, as the Azure Storage provider does", asked, created_from,
                           created_to)
        deleted = await self._off(functools.partial(self.engine.purge_where, created_from, created_to, statuses))
        if not deleted:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": deleted})

    # -------------------------------------------------------- static site
    async def static(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if not path or path.endswith("/"):
            path += "index.html"
        try:
            blob = await self._off(lambda: self.blobs.get_blob_client("$web", path).download_blob())
            data = await self._off(blob.readall)
        except ResourceNotFoundError:
            return web.Response(status=404, text=f"not found in $web: {path}")
        # as the static website serves a blob: with its stored Content-Type and Cache-Control (a blob stored without
        # a type is application/octet-stream there too)
        settings = blob.properties.content_settings
        headers = {"Content-Type": settings.content_type or "application/octet-stream"}
        if settings.cache_control:
            headers["Cache-Control"] = settings.cache_control
        return web.Response(body=data, headers=headers)
