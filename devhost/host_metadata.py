"""Validate the worker's function metadata the way the Functions host does, before devhost serves any of it.

After the Python worker indexes a v2 app it hands the host one ``RpcFunctionMetadata`` per function (name, raw binding
JSON). The host checks each one before it loads it; a function that fails is left out ("in error") with the host's
message, while the worker never sees a problem. So an app that ``devhost.worker_indexing`` passes can still lose
functions on Azure: a function named ``bad.name`` or ``_helper``, a binding whose name is not ASCII, two bindings
named ``req`` and ``Req``, an HTTP route under ``admin``/``runtime`` or one that another function already serves.
devhost ran none of these checks and served such functions. This module runs them on the very records the worker
returned (``worker_indexing.check_functions``), with the host's messages.

Read in ``Azure/azure-functions-host`` (paths under ``src/WebJobs.Script/``):

* ``Host/WorkerFunctionMetadataProvider.cs`` ``ValidateMetadata``: ``Utility.ValidateName`` (function name), then
  ``ValidateBindings``: ``BindingMetadata.Create`` (direction), ``Utility.ValidateBinding`` (binding name, ``$return``
  direction), binding names unique ignoring case, at least one binding, a trigger among the input bindings. A refusal
  goes to ``FunctionErrors`` (``Utility.AddFunctionError`` with ``Utility.FlattenException``) and the function is
  dropped; the others load.
* ``Utility.cs``: ``FunctionNameValidationRegex`` and ``BindingNameValidationRegex`` (below).
* ``Description/FunctionDescriptorProvider.cs`` ``ValidateFunction``/``ValidateBinding``: the same binding checks, a
  binding type, a single trigger.
* ``Host/ScriptHost.cs`` ``GetFunctionDescriptorsAsync`` -> ``ValidateFunction``/``ValidateHttpFunction``/
  ``HttpRoutesConflict``, over the functions ordered by name (``FunctionMetadataManager``, OrdinalIgnoreCase): an
  HTTP route under the built-in ``admin``/``runtime`` space, a route (template text, ignoring case and outer ``/``)
  whose methods meet those of a function already accepted (no methods: all), a second HTTP function of one name.
  ``ScriptHostLoggerExtension.FunctionError`` logs each: "The '<name>' function is in error: <message>".

Not checked here: retry options (``Utility.ValidateRetryOptions``; devhost serves no trigger that retries), the Flex
Consumption refusal of a blob trigger whose source is not EventGrid (``ScriptHost.ValidateFunction``; it depends on
the plan, and ``func host start`` accepts it), and binding types no extension registers.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

# Utility.cs, unchanged: "^[a-z][a-z0-9_\-]{0,127}$(?<!^host$)", IgnoreCase | CultureInvariant.
# re.ASCII: ASCII letters only, so devhost never accepts a name that Python's Unicode case folding lets [a-z] match
# ("ſ", the Kelvin sign) and .NET's invariant folding might not.
FUNCTION_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,127}$(?<!^host$)", re.IGNORECASE | re.ASCII)
# Utility.cs since host 4.1038 (azure-functions-host#10764, issue #9917): ASCII letters, digits and underscores, not
# starting with a digit, at most 128 characters, or "$return". Hosts up to 4.1037 allowed neither "_" nor a leading
# "_" (^([a-zA-Z][a-zA-Z0-9]{0,127}|\$return)$); Azure runs the newer host. The host's own tests
# (test/WebJobs.Script.Tests/WorkerFunctionMetadataProviderTests.cs) accept "_", "__", "bind__ing", "binding_name"
# and refuse null, "", "binding-test", "binding name". Python's `$` also matches before a final newline, as .NET's.
BINDING_NAME_RE = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]{0,127}|\$return)$")
BINDING_NAME_RULES_URL = "https://aka.ms/azure-functions-binding-name-rules"
RETURN_BINDING = "$return"
DIRECTIONS = ("in", "out", "inout")  # BindingDirection, parsed ignoring case
BUILT_IN_ROUTE_PREFIXES = ("admin", "runtime")

NAME_HINT = ("a function name (the Python function's name, or @app.function_name(name=...)) must start with an ASCII "
             "letter, hold only ASCII letters, digits, '_' and '-', be at most 128 characters and not be 'host': "
             "rename it (e.g. @app.function_name(name=\"my_function\") over a `_private` def).")
BINDING_HINT = ("a binding name is the decorator's arg_name/input_name/client_name/trigger_arg_name and the "
                "parameter's name: ASCII letters, digits and '_', not starting with a digit, at most 128 characters "
                f"({BINDING_NAME_RULES_URL}); the host compares names ignoring case, so two parameters that differ "
                "only in case clash: rename the parameter and its decorator argument together.")
ROUTE_HINT = ("each HTTP route (its template text, ignoring case and outer '/') may be served by one function per "
              "method, and no route may start with 'admin' or 'runtime' (the host's own routes): change `route=` "
              "or split the methods.")


class HostMetadataError(RuntimeError):
    """The Functions host would refuse functions of this app. ``failures``: (function, the host's message), in the
    order the host checks them; ``messages``: what the host logs for each."""

    def __init__(self, failures: list[tuple[str, str]], total: int) -> None:
        self.failures = failures
        self.messages = [f"The '{name}' function is in error: {message}" for name, message in failures]
        lines = [f"the Azure Functions host refuses {len(failures)} of this app's {total} functions: on Azure it "
                 "leaves each of them out (and serves the rest), so devhost serves none of the app until they are "
                 "fixed:"]
        lines += [f"  - {m}" for m in self.messages]
        texts = " ".join(message for _, message in failures)
        if "function name" in texts:
            lines.append("Fix: " + NAME_HINT)
        if "binding name" in texts or "Multiple bindings with name" in texts:
            lines.append("Fix: " + BINDING_HINT)
        if "route" in texts:
            lines.append("Fix: " + ROUTE_HINT)
        super().__init__("\n".join(lines))


class _Refused(Exception):
    """One check failed; its text is the exception message the host throws."""


@dataclass
class _Binding:
    name: str | None
    type: str | None
    direction: str
    raw: dict[str, Any]

    @property
    def is_trigger(self) -> bool:  # BindingMetadata.IsTrigger: the type ends with "trigger", ignoring case
        return (self.type or "").lower().endswith("trigger")

    @property
    def is_return(self) -> bool:  # BindingMetadata.IsReturn: the name is "$return", ignoring case
        return (self.name or "").lower() == RETURN_BINDING


def _flatten(message: str) -> str:
    """Utility.FlattenException (includeSource: false) of one exception: its message, with a final '.' added."""
    return message if message.endswith(".") else message + "."


def _validate_name(name: str) -> None:
    """Utility.ValidateName."""
    if not FUNCTION_NAME_RE.match(name):
        raise _Refused(f"'{name}' is not a valid function name.")


def _create_binding(raw_json: str) -> _Binding:
    """BindingMetadata.Create: the raw JSON (properties ignoring case); a direction that is not one of the enum's."""
    raw = {str(k).lower(): v for k, v in json.loads(raw_json).items()}
    direction = raw.get("direction")
    direction_text = "" if direction is None else str(direction)
    if direction_text and direction_text.lower() not in DIRECTIONS:
        raise _Refused(f"'{direction_text}' is not a valid binding direction.")
    name, type_ = raw.get("name"), raw.get("type")
    return _Binding(None if name is None else str(name), None if type_ is None else str(type_),
                    direction_text.lower() or "in", raw)


def _validate_binding(binding: _Binding) -> None:
    """Utility.ValidateBinding, then FunctionDescriptorProvider.ValidateBinding's type check."""
    if binding.name is None or not BINDING_NAME_RE.match(binding.name):
        raise _Refused(f"The binding name {binding.name or ''} is invalid. Please assign a valid name to the binding. "
                       f"See {BINDING_NAME_RULES_URL} for more details.")
    if binding.is_return and binding.direction != "out":
        raise _Refused(f"{RETURN_BINDING} bindings must specify a direction of 'out'.")
    if binding.type is None:
        raise _Refused(f"Binding '{binding.name}' is invalid. Bindings must specify a Type.")


def _validate_bindings(raw_bindings: Iterable[str]) -> list[_Binding]:
    """WorkerFunctionMetadataProvider.ValidateBindings and FunctionDescriptorProvider.ValidateFunction."""
    bindings: list[_Binding] = []
    seen: set[str] = set()
    for raw_json in raw_bindings:
        binding = _create_binding(raw_json)
        _validate_binding(binding)
        key = (binding.name or "").lower()  # HashSet<string>(StringComparer.OrdinalIgnoreCase)
        if key in seen:
            raise _Refused(f"Multiple bindings with name '{binding.name}' discovered. Binding names must be unique.")
        seen.add(key)
        bindings.append(binding)
    if not bindings:
        raise _Refused("At least one binding must be declared.")
    triggers = [b for b in bindings if b.direction != "out" and b.is_trigger]
    if not triggers:
        raise _Refused("No trigger binding specified. A function must have a trigger input binding.")
    if len(triggers) > 1:
        raise _Refused("Multiple trigger bindings defined. A function can only have a single trigger binding.")
    return bindings


@dataclass
class _HttpRoute:
    route: str
    methods: tuple[str, ...]  # empty: every method


def _http_route(name: str, bindings: list[_Binding]) -> _HttpRoute | None:
    trigger = next(b for b in bindings if b.direction != "out" and b.is_trigger)
    if (trigger.type or "").lower() != "httptrigger":
        return None
    route = trigger.raw.get("route")
    if route is None or not str(route).strip():  # ValidateHttpFunction: no route means the function's name
        route = name
    methods = trigger.raw.get("methods") or []
    return _HttpRoute(str(route), tuple(str(m) for m in methods))


def _routes_conflict(a: _HttpRoute, b: _HttpRoute) -> bool:
    """ScriptHost.HttpRoutesConflict: the same template ignoring case and outer '/', and methods that meet."""
    if a.route.strip("/").lower() != b.route.strip("/").lower():
        return False
    if not a.methods or not b.methods:
        return True
    return bool(set(a.methods) & set(b.methods))


def _validate_http(name: str, route: _HttpRoute, accepted: dict[str, _HttpRoute]) -> None:
    """ScriptHost.ValidateHttpFunction, then ValidateFunction's conflict and uniqueness checks."""
    if route.route.strip("/").lower().startswith(BUILT_IN_ROUTE_PREFIXES):
        raise _Refused("The specified route conflicts with one or more built in routes.")
    for other_name, other in accepted.items():
        if _routes_conflict(route, other):
            raise _Refused(f"The route specified conflicts with the route defined by function '{other_name}'.")
    if name in accepted:
        raise _Refused(f"The function or proxy name '{name}' must be unique within the function app.")


def check_host_metadata(metadata: Iterable[Any]) -> None:
    """Check the worker's metadata records (``name``, ``raw_bindings``) as the host does; raise
    ``HostMetadataError`` naming every function the host would leave out, with the host's messages.

    The host checks each record on its own first (``WorkerFunctionMetadataProvider``), then, ordered by name
    ignoring case, the HTTP routes of those that passed against the ones accepted before them (``ScriptHost``): of two
    conflicting routes the first by name is served and the second is in error."""
    records = list(metadata)
    failures: dict[str, str] = {}
    passed: list[tuple[str, list[_Binding]]] = []
    for record in records:
        name = str(record.name)
        try:
            _validate_name(name)
            passed.append((name, _validate_bindings(record.raw_bindings)))
        except (_Refused, ValueError) as exc:  # ValueError: raw JSON the host cannot parse either
            failures[name] = _flatten(str(exc))
    accepted: dict[str, _HttpRoute] = {}
    for name, bindings in sorted(passed, key=lambda p: p[0].upper()):
        route = _http_route(name, bindings)
        if route is None:
            continue
        try:
            _validate_http(name, route, accepted)
        except _Refused as exc:
            failures[name] = _flatten(str(exc))
        else:
            accepted[name] = route
    if failures:
        order = {str(r.name): i for i, r in enumerate(records)}
        ordered = sorted(failures.items(), key=lambda kv: order.get(kv[0], len(order)))
        raise HostMetadataError(ordered, len(records))
