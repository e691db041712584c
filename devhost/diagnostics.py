"""What every live devhost is doing right now, as text: for a request that hangs.

Why: a status request in a CI run waited 120 s inside the Durable SDK's connection to devhost's RPC listener, and the
run left nothing that said why (the loop, a thread pool, a lock?). ``describe_live_hosts()`` writes, per running
``DevHost``: its event loop's pending tasks with their stacks, the queue lengths of the thread pools that requests and
activities wait in (devhost's HTTP pool, the loop's default executor used by ``asyncio.to_thread``, the activity
pool), the activities in flight, and the Durable SDK's shared aiohttp connector; then every thread's stack. The
integration tests print it when a request to devhost times out; ``python -m devhost`` prints it on SIGUSR1.

Read from another thread without the loop's help (the loop may be the thing that is stuck), so it is best effort:
a figure that cannot be read says so instead.
"""
from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


def register(host: Any) -> None:
    _LIVE.add(host)


def unregister(host: Any) -> None:
    _LIVE.discard(host)


def _pool(name: str, pool: Any) -> str:
    if not isinstance(pool, ThreadPoolExecutor):
        return f"{name}: none"
    threads = len(getattr(pool, "_threads", ()))
    queued = pool._work_queue.qsize()
    return f"{name}: {threads} of {pool._max_workers} threads started, {queued} calls queued"


def _loop_tasks(loop: asyncio.AbstractEventLoop, out: io.StringIO) -> None:
    for attempt in range(3):  # all_tasks from another thread may meet the set changing: read again
        try:
            tasks = list(asyncio.all_tasks(loop))
            break
        except RuntimeError:
            if attempt == 2:
                out.write("  (tasks could not be read)\n")
                return
    out.write(f"  {len(tasks)} pending tasks on the loop (running: {loop.is_running()})\n")
    for task in tasks:
        out.write(f"  - {task.get_name()}: {task.get_coro()!r}\n")
        for frame in task.get_stack(limit=12):
            out.write(f"      {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")


def _sdk_connector(out: io.StringIO) -> None:
    try:
        from azure.durable_functions.models.utils import http_utils
    except ImportError:
        return
    session = http_utils._client_session
    if session is None:
        out.write("Durable SDK session: none\n")
        return
    connector = session.connector
    acquired = len(getattr(connector, "_acquired", ()))
    waiters = sum(len(w) for w in getattr(connector, "_waiters", {}).values())
    loop = getattr(session, "_loop", None)
    out.write(f"Durable SDK session: closed={session.closed} loop={loop!r} (closed={getattr(loop, 'is_closed', lambda: '?')()}) "
              f"connections in use {acquired} of {getattr(connector, 'limit', '?')}, {waiters} waiting\n")


def describe_live_hosts() -> str:
    out = io.StringIO()
    hosts = list(_LIVE)
    out.write(f"=== devhost diagnostics: {len(hosts)} live host(s) ===\n")
    for host in hosts:
        out.write(f"host {host.base_url} (hub {host.hub}, rpc port {host.rpc_port})\n")
        loop = host._loop
        try:
            out.write("  " + _pool("devhost HTTP pool", host.front._pool) + "\n")
            out.write("  " + _pool("loop default executor (asyncio.to_thread)",
                                   getattr(loop, "_default_executor", None)) + "\n")
            out.write("  " + _pool("activity pool", host.engine.pool) + "\n")
            out.write(f"  activities in flight: {sorted(host.engine._inflight)}\n")
            out.write(f"  dispatcher lock: {host.engine._lock!r}\n")  # CPython's repr names the owner thread
            if loop is not None:
                _loop_tasks(loop, out)
        except Exception as exc:  # diagnostics must not raise
            out.write(f"  (could not read: {exc!r})\n")
    _sdk_connector(out)
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {names.get(ident, ident)}\n")
        out.write("".join(traceback.format_stack(frame, limit=14)))
    return out.getvalue()
