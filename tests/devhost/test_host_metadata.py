"""devhost refuses an app whose functions the Functions host would leave out, with the host's messages.

The host validates the function metadata the Python worker returns before it loads a function (Azure/azure-functions-
host, ``src/WebJobs.Script/Host/WorkerFunctionMetadataProvider.cs`` ``ValidateMetadata``/``ValidateBindings``,
``src/WebJobs.Script/Utility.cs`` ``ValidateName``/``ValidateBinding``, ``src/WebJobs.Script/Host/ScriptHost.cs``
``ValidateFunction``/``ValidateHttpFunction``/``HttpRoutesConflict``); a refused function is "in error" and missing on
Azure. devhost refuses the whole app instead (devhost/README.md row 29). The name cases below are the host's own
(``test/WebJobs.Script.Tests/WorkerFunctionMetadataProviderTests.cs``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devhost.host import DevHost
from devhost.host_metadata import HostMetadataError, check_host_metadata
from tests.devhost import host_refused_app

ROOT = Path(__file__).resolve().parents[2]
BINDING_RULES = ("Please assign a valid name to the binding. See https://aka.ms/azure-functions-binding-name-rules "
                 "for more details.")
REFUSED = [
    "The 'bad.name' function is in error: 'bad.name' is not a valid function name.",
    "The '_private' function is in error: '_private' is not a valid function name.",
    f"The 'measure' function is in error: The binding name größe is invalid. {BINDING_RULES}",
    "The 'clash' function is in error: Multiple bindings with name 'Req' discovered. Binding names must be unique.",
    "The 'admin_keys' function is in error: The specified route conflicts with one or more built in routes.",
    "The 'items_b' function is in error: The route specified conflicts with the route defined by function 'items_a'.",
]
TRIGGER = {"type": "httpTrigger", "name": "req", "direction": "IN", "route": "r"}


def record(name: str, *bindings: dict[str, Any]) -> SimpleNamespace:
    """A worker metadata record as ``check_functions`` returns it: its name and raw binding JSON."""
    return SimpleNamespace(name=name, raw_bindings=[json.dumps(b) for b in bindings])


def refusals(*records: SimpleNamespace) -> list[str]:
    try:
        check_host_metadata(records)
    except HostMetadataError as exc:
        return exc.messages
    return []


def test_devhost_refuses_functions_the_host_leaves_out_with_the_hosts_messages(storage_connection: str,
                                                                               unique_name: str) -> None:
    for _ in range(2):  # a second DevHost on the same app object is refused the same way (get_functions() ran once)
        with pytest.raises(HostMetadataError) as refused:
            DevHost(host_refused_app.app, storage_connection, task_hub=unique_name, port=0)
        assert refused.value.messages == REFUSED  # snake_case names (in_put, my_req, durable_client) are accepted
        assert str(refused.value).count("Fix:") == 3


def test_python_m_devhost_exits_3_with_the_hosts_messages(storage_connection: str, tmp_path: Path) -> None:
    env = {**os.environ, "AzureWebJobsStorage": storage_connection}
    proc = subprocess.run([sys.executable, "-m", "devhost", "--app", "tests.devhost.host_refused_app:app",
                           "--port", "0", "--hub", "refused", "--key-file", str(tmp_path / "key")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "devhost: not serving tests.devhost.host_refused_app:app" in proc.stderr
    assert all(message in proc.stderr for message in REFUSED) and "Fix:" in proc.stderr


@pytest.mark.parametrize("name", ["__", "__binding", "binding__", "bind__ing", "__binding__", "_binding", "binding_",
                                  "_binding_", "_another_binding_test_", "long_binding_name_that_is_valid",
                                  "binding_name", "_", "bindingName", "binding1", "b" * 128])
def test_binding_names_the_host_accepts(name: str) -> None:
    assert refusals(record("f", TRIGGER, {"type": "blob", "name": name, "direction": "IN"})) == []


@pytest.mark.parametrize("name", [None, "", "binding-test", "binding name", "1binding", "größe", "b" * 129])
def test_binding_names_the_host_refuses(name: str | None) -> None:
    shown = name or ""
    assert refusals(record("f", TRIGGER, {"type": "blob", "name": name, "direction": "IN"})) == [
        f"The 'f' function is in error: The binding name {shown} is invalid. {BINDING_RULES}"]


@pytest.mark.parametrize(("name", "ok"), [("f", True), ("my-func_2", True), ("A" * 128, True), ("HOST", False),
                                          ("hosts", True), ("A" * 129, False), ("2f", False), ("-f", False),
                                          ("bad.name", False), ("ſ", False)])
def test_function_names(name: str, ok: bool) -> None:
    assert refusals(record(name, TRIGGER)) == ([] if ok else
                                               [f"The '{name}' function is in error: '{name}' is not a valid "
                                                "function name."])


def test_the_hosts_other_binding_checks() -> None:
    out = {"type": "http", "direction": "OUT"}
    assert refusals(record("f", TRIGGER, {**out, "name": "$return"})) == []
    assert refusals(record("f", TRIGGER, {"type": "http", "name": "$return"}), record("g"),
                    record("h", {"type": "blob", "name": "b", "direction": "IN"}),
                    record("i", TRIGGER, {"type": "queueTrigger", "name": "q", "direction": "IN"}),
                    record("j", {**TRIGGER, "direction": "sideways"})) == [
        "The 'f' function is in error: $return bindings must specify a direction of 'out'.",
        "The 'g' function is in error: At least one binding must be declared.",
        "The 'h' function is in error: No trigger binding specified. A function must have a trigger input binding.",
        "The 'i' function is in error: Multiple trigger bindings defined. A function can only have a single trigger "
        "binding.",
        "The 'j' function is in error: 'sideways' is not a valid binding direction."]


def test_http_routes_conflict_as_the_host_compares_them() -> None:
    def http(name: str, route: str | None, methods: list[str] | None) -> SimpleNamespace:
        return record(name, {**TRIGGER, "route": route, "methods": methods})

    # Ordered by name: "a_all" (no methods: every method) is accepted first and takes the route for all methods.
    assert refusals(http("b_get", "tasks", ["GET"]), http("a_all", "/TASKS/", None),
                    http("c_other", "tasks/{id}", ["GET"]), http("runtime_x", "Runtime/x", ["GET"]),
                    http("d_default", None, ["GET"]), http("e_default", "d_default", ["POST"])) == [
        "The 'b_get' function is in error: The route specified conflicts with the route defined by function 'a_all'.",
        "The 'runtime_x' function is in error: The specified route conflicts with one or more built in routes."]
    assert refusals(http("x", "tasks", ["GET"]), http("y", "tasks", ["POST"])) == []
    assert refusals(http("x", "tasks", ["GET"]), http("y", "tasks", ["GET", "PUT"])) == [
        "The 'y' function is in error: The route specified conflicts with the route defined by function 'x'."]
