"""The event-loop rule of ``api/`` (``api.edge`` module docstring): a handler's blocking storage work runs off the
event loop, so one slow storage call does not hold up the worker's other requests, status polls included.

devhost runs ``async def`` functions on its one event loop as the Python worker does (devhost/README.md, fidelity row
12), and in this process, so a ``BlobStore`` method patched here is the one the handlers call. Each test holds one
request's storage call at a gate (no timing guesses: the gate opens only after the other request was answered) and
asserts that a status poll is answered while that request is still in flight. With the call on the loop, the poll
gets no answer until the gate opens, and its deadline fails the test.

A static check goes with them: no ``async def`` in ``api/`` calls a storage method or adapter, or a sync helper of
``api/`` that (transitively) does, except through ``asyncio.to_thread``.
"""
from __future__ import annotations

import ast
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from adapters.blobs import BlobStore
from gpu_batch import layout
from tests.integration.conftest import upload_images
from tests.integration.test_end_to_end import api, finished_status
from tests.integration.test_end_to_end import host  # noqa: F401  (the same devhost fixture)
from tests.waiting import wait_until

UNKNOWN_TASK = "task-" + "0" * 20  # a well-formed id no task has: its status poll is answered 404
GATE_S = 90  # the longest a held call waits; the test opens the gate long before


class _Gate:
    """Holds the calls of ``BlobStore.<method>`` whose blob or container name ``matches``, until ``release``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str, matches: Callable[[tuple[Any, ...]], bool]):
        self.entered, self.release = threading.Event(), threading.Event()
        original = getattr(BlobStore, method)

        def held(store: BlobStore, *args: Any, **kwargs: Any) -> Any:
            if matches(args) and not self.release.is_set():
                self.entered.set()
                self.release.wait(GATE_S)
            return original(store, *args, **kwargs)

        monkeypatch.setattr(BlobStore, method, held)


def _poll_answered_while_held(host: Any, gate: _Gate, slow: Callable[[], requests.Response],
                              poll_url: str) -> requests.Response:
    """Start ``slow``; once its storage call is held, a status poll must be answered while ``slow`` still waits."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(slow)
        try:
            assert gate.entered.wait(60), "the slow request never reached its storage call"
            poll = api.get(poll_url, timeout=30)  # on a blocked loop: no answer until the gate opens (90 s)
            assert not pending.done(), "the slow request finished while its storage call was held"
        finally:
            gate.release.set()
        answer = pending.result()
    assert poll.status_code in (200, 404), poll.text
    return answer


def test_a_slow_source_check_does_not_stall_status_polls(host, app_env, unique_name,  # type: ignore[no-untyped-def]
                                                          monkeypatch) -> None:
    """POST /api/tasks checks the source container (``start_task``); held there, a status poll is still answered."""
    slow_container = unique_name + "-slow"
    gate = _Gate(monkeypatch, "container_exists", lambda args: bool(args) and args[0] == slow_container)
    answer = _poll_answered_while_held(
        host, gate, lambda: api.post(host.base_url + "/api/tasks", json={"container": slow_container}, timeout=120),
        f"{host.base_url}/api/tasks/{UNKNOWN_TASK}")
    assert answer.status_code == 404 and "does not exist" in answer.json()["error"]  # the same answer as before


def test_deleting_previews_does_not_stall_status_polls(host, app_env, store, unique_name,  # type: ignore[no-untyped-def]
                                                       monkeypatch) -> None:
    """DELETE .../previews (many blob deletes on Azure) held at its first read: the task's own status is answered
    meanwhile; then the pages are gone, and a second DELETE answers 404 as before."""
    upload_images(store, unique_name, 3, corrupt=0)
    r = api.post(host.base_url + "/api/tasks", json={"container": unique_name}, timeout=120)
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    status = wait_until(lambda: finished_status(host.base_url, task_id), 240, "task completion")
    assert status["runtime_status"] == "Completed", status
    folder_record = layout.preview_folder_blob(task_id)
    gate = _Gate(monkeypatch, "read_bytes_or_none", lambda args: len(args) > 1 and args[1] == folder_record)
    url = f"{host.base_url}/api/tasks/{task_id}"
    answer = _poll_answered_while_held(host, gate, lambda: api.delete(url + "/previews", timeout=120), url)
    assert answer.status_code == 200 and answer.json()["deleted"] > 0, answer.text
    assert api.get(url, timeout=30).json()["stage"] == "completed"
    assert api.delete(url + "/previews", timeout=120).status_code == 404


# --- static guard ------------------------------------------------------------------------------------------------

API = Path(__file__).resolve().parents[2] / "api"
STORE_METHODS = {n for n in vars(BlobStore) if not n.startswith("_")} - {"url", "account"}  # those two are local
NOT_BLOCKING = {"settings", "store"}  # clients.settings reads the environment, clients.store a cached client


def _calls(fn: ast.AST) -> list[ast.Call]:
    """The calls in ``fn``'s own body (not in functions or lambdas defined inside it). A function passed to
    ``asyncio.to_thread`` is an argument there, not a call."""
    out: list[ast.Call] = []
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call):
            out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _async_functions(module: str) -> set[str]:
    """The ``async def`` functions of an adapters module (``adapters.task_hub.read_status``: the Durable client's
    aiohttp calls, awaited on the loop): awaited, not blocking."""
    path = API.parent / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)}


def _storage_use() -> tuple[set[str], list[str]]:
    """(the sync functions of api/ that block, the calls of blocking code made directly in an ``async def``).

    Blocking: a ``BlobStore`` method (``x.read_json(...)``), a function of ``adapters`` (``share_links.read_links``,
    ``served_key`` imported from ``adapters.generations``; not ``adapters.storage_errors``), and a sync function of
    api/ that calls one of these, directly or through another."""
    trees = {p.name: ast.parse(p.read_text()) for p in sorted(API.glob("*.py"))}
    modules: set[str] = set()  # from adapters import clients, share_links
    functions: set[str] = set()  # from adapters.generations import served_key
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "adapters":
                names = {alias.asname or alias.name for alias in node.names}
                if node.module == "adapters":
                    modules |= names
                elif node.module not in ("adapters.storage_errors", "adapters.blobs"):
                    functions |= names - _async_functions(node.module)
    sync = {n.name: n for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.FunctionDef)}

    def blocks(call: ast.Call, helpers: set[str]) -> bool:
        f = call.func
        if isinstance(f, ast.Attribute):
            if isinstance(f.value, ast.Name) and f.value.id in modules:
                return f.attr not in NOT_BLOCKING
            return f.attr in STORE_METHODS
        return isinstance(f, ast.Name) and (f.id in functions or f.id in helpers)

    helpers: set[str] = set()
    while more := {name for name, fn in sync.items() if any(blocks(c, helpers) for c in _calls(fn))} - helpers:
        helpers |= more
    direct = [f"{file}:{c.lineno} {fn.name}: {ast.unparse(c.func)}(...)" for file, tree in trees.items()
              for fn in ast.walk(tree) if isinstance(fn, ast.AsyncFunctionDef)
              for c in _calls(fn) if blocks(c, helpers)]
    return helpers, direct


def test_no_async_function_in_api_calls_storage_on_the_event_loop() -> None:
    helpers, direct = _storage_use()
    assert direct == [], "run these through asyncio.to_thread (api.edge module docstring)"
    # the guard sees the helpers it is for (else it could pass blind)
    assert {"_preview_page", "_served_repeats", "_zip_state", "_generations", "_check_source"} <= helpers
    assert _async_functions("adapters.task_hub") == {"read_status"}  # awaited: the one adapters call let through
