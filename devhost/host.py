"""DevHost: serve an unchanged v2-model Functions app (``function_app.py``) the way ``func host start`` would.

Pieces: ``functions.index_app`` (what the Python worker indexes, refused where the published worker's own binding
validation refuses it, ``worker_indexing``, or the host's checks of its metadata, ``host_metadata``),
``engine.Engine`` (the Durable extension's
dispatchers, state in Azure Storage via ``store.Store``), ``http_server.HttpFront`` (HTTP triggers behind function
keys, the management API, /web/), ``blob_trigger.BlobPoller``. One asyncio loop in a background thread runs the HTTP
server, the extension's local RPC listener (a second loopback port, like the extension's) and every async user
function (the Durable SDK's client keeps one global aiohttp session, bound to one loop). ``hostjson.HostConfig``
carries the host.json settings devhost honours (functionTimeout, poisonBlobThreshold); ``keys.Keys`` the function,
master and system keys. What devhost does like the platform and what it does differently: devhost/README.md.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from aiohttp import web
from azure.storage.blob import BlobServiceClient

from devhost.scratch_disk import FLEX_TEMPORARY_STORAGE_BYTES, ScratchDisk
from devhost import diagnostics
from devhost.blob_trigger import BlobPoller
from devhost.event_grid import DeliveryPolicy, EventGridPoller, Subscription
from devhost.engine import Engine
from devhost.functions import index_app
from devhost.hostjson import HostConfig, check_task_hub_name
from devhost.http_server import HTTP_RESPONSE_LIMIT_S, HttpFront
from devhost.http_server import request_body_limit as body_limit_in
from devhost.keys import CallerIdentity, Keys
from devhost.store import TERMINAL, Store

logger = logging.getLogger("devhost")


def _reset_sdk_session() -> None:
    """Forget the Durable SDK's global aiohttp session (bound to a previous DevHost's loop, in tests)."""
    from azure.durable_functions.models.utils import http_utils

    http_utils._client_session = None
    http_utils._session_lock = asyncio.Lock()


async def _close_sdk_session() -> None:
    from azure.durable_functions.models.utils import http_utils

    if http_utils._client_session is not None and not http_utils._client_session.closed:
        await http_utils._client_session.close()
    http_utils._client_session = None


PICK_TRIES = 3  # port-0 picks on a name with several addresses, where another program took the port on one
DEFAULT_ACTIVITY_WORKERS = 4  # a host.json without maxConcurrentActivityFunctions


# How long start() waits for its HTTP listeners: seconds idle, far more on a loaded CI machine.
LISTEN_TIMEOUT_S = 300.0


def _addresses(host: str) -> list[str]:
    """The distinct addresses a host name binds to, in the resolver's order (``localhost`` is often ::1 and
    127.0.0.1); a name that does not resolve is left to the bind, whose error names it."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return [host]
    return list(dict.fromkeys(str(info[4][0]) for info in found)) or [host]


def _listen(loop: asyncio.AbstractEventLoop, runner: web.AppRunner, host: str, port: int) -> int:
    """Listen on every address of ``host`` at one port and return it. A fixed port binds them all at once (as asyncio
    does); port 0 on a name with several addresses would get a port of its own from the kernel for each, and the URL
    (and ``--port-file``) could name only one, so a client that tried another address first reached whatever held
    that port there: bind the first address at port 0, the others at the port it got, and pick again on a clash.

    An address of a family the machine lacks (``localhost``'s ::1 on a kernel without IPv6) listens nowhere without
    an error (asyncio's ``create_server`` skips a family it cannot make a socket of, as it did for the whole name
    before): its site is let go and the port is picked by the next address, not read as 0 from a site that has no
    socket."""
    addresses = _addresses(host) if port == 0 and host else [host]
    if len(addresses) == 1:
        site = web.TCPSite(runner, host, port)
        loop.run_until_complete(site.start())
        return _site_port(site, port)
    for attempt in range(1, PICK_TRIES + 1):
        sites: list[web.TCPSite] = []
        picked = 0
        try:
            for address in addresses:
                sites.append(web.TCPSite(runner, address, picked))
                loop.run_until_complete(sites[-1].start())
                if not picked:
                    picked = _site_port(sites[-1], 0)
                    if not picked:  # no socket: a family the machine lacks
                        loop.run_until_complete(sites.pop().stop())
            return picked
        except OSError as exc:
            for site in sites:
                loop.run_until_complete(site.stop())
            if exc.errno != errno.EADDRINUSE or attempt == PICK_TRIES:
                raise
    raise AssertionError("unreachable")


def _site_port(site: web.TCPSite, asked: int) -> int:
    server: Any = site._server
    sockets = server.sockets if server is not None else []
    return int(sockets[0].getsockname()[1]) if sockets else asked


class DevHost:
    def __init__(self, app: Any, connection_string: str, task_hub: str = "devhost", host: str = "127.0.0.1",
                 port: int = 7071, activity_workers: int | None = None, blob_poll_s: float = 2.0, poll_s: float = 0.1,
                 function_key: str | None = None, host_config: HostConfig | None = None,
                 callers: Mapping[str, CallerIdentity] | None = None,
                 event_grid: list[Subscription] | None = None, event_grid_retry_scale: float = 1.0,
                 scratch_cap: int | None = FLEX_TEMPORARY_STORAGE_BYTES,
                 http_response_limit_s: float = HTTP_RESPONSE_LIMIT_S, request_body_limit: int | None = None) -> None:
        """``function_key``: the key /api/ routes of auth level FUNCTION require (default: TRAPBATCH_DEVHOST_FUNCTION_KEY,
        else a new random one; see ``keys``). ``host_config``: default ./host.json's settings (or the defaults).
        ``activity_workers``: activities at once; default host.json's ``maxConcurrentActivityFunctions``.
        ``callers``: further function keys, each with the identity devhost sets as Easy Auth would (``keys``).
        ``event_grid``: the Event Grid subscriptions Azure would have (``event_grid.Subscription``), whose events are
        retried on Event Grid's schedule ``event_grid_retry_scale`` times as long (``event_grid.DeliveryPolicy``;
        1.0: the platform's, a smaller one for tests and demos).
        ``scratch_cap``: the bytes the process's temporary files may hold together while devhost serves
        (``scratch_disk``: a write past it fails with ENOSPC, as past a Flex Consumption instance's 0.8 GB; None: no
        cap, measured only). ``http_response_limit_s``: an HTTP trigger that has not answered by then gets its caller
        a 502, as Azure's load balancer does at 230 s (the function runs on). ``request_body_limit``: bytes of request
        body the host takes, larger ones get 500 before the function runs; default the app setting
        FUNCTIONS_REQUEST_BODY_SIZE_LIMIT from the environment, else the host's 104857600 (``http_server``)."""
        self.hub = check_task_hub_name(task_hub)  # the extension refuses the whole app's start over a bad name
        self.scratch = ScratchDisk(scratch_cap)
        self.index = index_app(app)
        self.host = host
        self.port = port
        self.config = host_config if host_config is not None else HostConfig.load(Path.cwd() / "host.json")
        self.keys = Keys.from_env(function_key, callers=callers)
        self.store = Store(connection_string, task_hub)
        self.blobs = BlobServiceClient.from_connection_string(connection_string)
        if activity_workers is None:  # one host: host.json's maxConcurrentActivityFunctions, as the extension runs
            activity_workers = self.config.max_concurrent_activities or DEFAULT_ACTIVITY_WORKERS
        self.engine = Engine(self.index, self.store, activity_workers=activity_workers, poll_s=poll_s,
                             function_timeout_s=self.config.function_timeout_s,
                             max_orchestration_actions=self.config.max_orchestration_actions)
        self.front = HttpFront(self.index, self.engine, task_hub, self.blobs, self.keys,
                               response_limit_s=http_response_limit_s,
                               body_limit=(request_body_limit if request_body_limit is not None
                                           else body_limit_in(os.environ)))
        self.connection_string = connection_string
        self.blob_poll_s = blob_poll_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._poller: BlobPoller | None = None
        self.event_grid = list(event_grid or [])
        self.event_grid_policy = DeliveryPolicy(scale=event_grid_retry_scale)  # a bad scale fails here, before start
        self._events: EventGridPoller | None = None
        self.rpc_port = 0

    @property
    def base_url(self) -> str:
        """Where a client on this machine reaches devhost: a wildcard bind (``0.0.0.0``, ``::``) as loopback, an IPv6
        host in brackets (``http://::1:7071`` is no URL; the CLI and the SDK's management URLs need one)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def function_key(self) -> str:
        """Send as the ``x-functions-key`` header (or ``?code=``) to /api/ routes of auth level FUNCTION."""
        return self.keys.function_key

    @property
    def api_headers(self) -> dict[str, str]:
        """Headers that authorize a call to any /api/ route (the function key)."""
        return {"x-functions-key": self.keys.function_key}

    @property
    def rpc_base_url(self) -> str:
        """The extension's local RPC endpoint (loopback, no keys): what the SDK client calls."""
        return f"http://127.0.0.1:{self.rpc_port}/durabletask/"

    def start(self) -> "DevHost":
        self.scratch.__enter__()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                _reset_sdk_session()
                for app, host, port in ((self.front.build(), self.host, self.port),
                                        (self.front.build_rpc(), "127.0.0.1", 0)):
                    runner = web.AppRunner(app, access_log=None)
                    loop.run_until_complete(runner.setup())
                    self._runners.append(runner)
                    bound = _listen(loop, runner, host, port)
                    if len(self._runners) == 1:
                        self.port = bound
                    else:
                        self.rpc_port = bound
                self.front.origin = self.base_url
                self.front.rpc_origin = f"http://127.0.0.1:{self.rpc_port}"
            except BaseException as exc:  # surfaced to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            for runner in self._runners:
                loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="devhost-http", daemon=True)
        self._thread.start()
        if not ready.wait(LISTEN_TIMEOUT_S):  # never go on with port 0 (a --port-file would name it)
            failure.append(TimeoutError(f"its listener was not up after {LISTEN_TIMEOUT_S:.0f} s"))
        if failure:
            self.scratch.__exit__(None, None, None)
            raise RuntimeError(f"devhost could not listen on {self.host}:{self.port}: {failure[0]}")
        assert self._loop is not None
        self.engine.loop, self.engine.client_binding = self._loop, self.front.binding
        self.engine.start()
        diagnostics.register(self)
        self._poller = BlobPoller(self.index, self.store, self.blobs, self.blob_poll_s, self._loop,
                                  self.front.binding, self.connection_string, self.config)
        self._poller.start()
        self._events = EventGridPoller(self.index, self.store, self.blobs, self.event_grid, self.blob_poll_s,
                                       self._loop, self.front.binding, self.config, self.event_grid_policy)
        self._events.start()
        logger.info("devhost serving %d functions on %s (task hub %s)", len(self.index.http) +
                    len(self.index.activities) + len(self.index.orchestrators) + len(self.index.blob_triggers),
                    self.base_url, self.hub)
        return self

    def stop(self, grace_s: float = 0.0, hurry: threading.Event | None = None) -> int:
        """Stop serving; the activities running get up to ``grace_s`` to finish (``Engine.stop``; ``hurry`` cuts it
        short). Returns how many still ran then: each runs again at the next start."""
        diagnostics.unregister(self)
        if self._events:
            self._events.stop()
        if self._poller:
            self._poller.stop()
        still_running = self.engine.stop(grace_s, hurry)
        if self._loop and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_close_sdk_session(), self._loop).result(5)
            except Exception:  # closing a client session is best effort at shutdown
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(timeout=10)
        self.front.close()
        self.scratch.__exit__(None, None, None)
        return still_running

    def __enter__(self) -> "DevHost":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------- convenience for tests/scripts
    def start_orchestration(self, name: str, input_: Any = None, instance_id: str | None = None) -> str:
        import json

        return self.engine.start_orchestration(name, None if input_ is None else json.dumps(input_), instance_id)

    def get_status(self, instance_id: str) -> dict[str, Any] | None:
        return self.engine.status(instance_id)

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        import json

        self.engine.raise_event(instance_id, name, json.dumps(data))

    def terminate(self, instance_id: str, reason: str = "") -> None:
        self.engine.terminate(instance_id, reason)

    def wait_for(self, instance_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.get_status(instance_id)
            if st and st["runtimeStatus"] in TERMINAL:
                return st
            time.sleep(0.1)
        raise TimeoutError(f"orchestration {instance_id} did not finish within {timeout}s: {self.get_status(instance_id)}")
