"""Index a v2-model Functions app the way the Python worker does: ``app.get_functions()``, once.

``get_functions()`` is not idempotent once blueprints are registered (a second call raises "does not have a unique
function name"), so its functions and the index are cached on the app object and shared by every DevHost built from it.

Before indexing, every function goes through the published worker's own indexing and binding validation
(``devhost.worker_indexing``): an app the real worker would refuse (e.g. an activity parameter annotated
``dict[str, Any]``) is refused here too, with the worker's messages, instead of running locally and failing on Azure.
Then the metadata the worker returned goes through the Functions host's own checks (``devhost.host_metadata``: function
and binding names, duplicate binding names, HTTP route conflicts): a function the host would leave out is refused
here, with the host's message, instead of being served locally and missing on Azure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from devhost.host_metadata import check_host_metadata
from devhost.worker_indexing import check_functions


@dataclass
class HttpRoute:
    name: str
    route: str
    methods: tuple[str, ...]
    arg_name: str
    client_arg: str | None
    fn: Callable[..., Any]
    auth_level: str = "function"  # anonymous | function | admin (the app's http_auth_level unless the route says)
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        parts = []
        for seg in self.route.strip("/").split("/"):
            m = re.fullmatch(r"\{(\w+)(?::[^}]*)?\??\}", seg)
            parts.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(seg))
        self.pattern = re.compile("^" + "/".join(parts) + r"\Z")  # \Z: a value ending in a newline is not cut


@dataclass
class BlobTrigger:
    name: str
    container: str
    name_pattern: re.Pattern[str]
    arg_name: str
    client_arg: str | None
    fn: Callable[..., Any]


@dataclass
class EventGridTrigger:
    name: str
    arg_name: str
    client_arg: str | None
    fn: Callable[..., Any]


@dataclass
class AppIndex:
    orchestrators: dict[str, Callable[..., Any]] = field(default_factory=dict)
    activities: dict[str, tuple[Callable[..., Any], str]] = field(default_factory=dict)
    activity_clients: dict[str, str] = field(default_factory=dict)  # activity -> its durable client parameter
    http: list[HttpRoute] = field(default_factory=list)
    blob_triggers: list[BlobTrigger] = field(default_factory=list)
    event_grid_triggers: list[EventGridTrigger] = field(default_factory=list)


def _blob_pattern(path: str) -> tuple[str, re.Pattern[str]]:
    container, _, rest = path.partition("/")
    regex = re.escape(rest)
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+)", regex)
    return container, re.compile("^" + regex + "$")


def index_app(app: Any) -> AppIndex:
    cached = getattr(app, "_devhost_index", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    functions = getattr(app, "_devhost_functions", None)
    if functions is None:
        functions = app.get_functions()
        app._devhost_functions = functions
    metadata = check_functions(functions)  # raises WorkerIndexingError with the worker's messages
    check_host_metadata(metadata)  # raises HostMetadataError with the host's messages
    index = AppIndex()
    for f in functions:
        trigger = f.get_trigger()
        name = f.get_function_name()
        client_arg = next((b.name for b in f.get_bindings() if b.type == "durableClient"), None)
        fn = f.get_user_function()
        if trigger.type == "orchestrationTrigger":
            index.orchestrators[getattr(trigger, "orchestration", None) or name] = fn
        elif trigger.type == "activityTrigger":
            index.activities[getattr(trigger, "activity", None) or name] = (fn, trigger.name)
            if client_arg:  # an activity may take the orchestration client too (activities/expiry.py does)
                index.activity_clients[getattr(trigger, "activity", None) or name] = client_arg
        elif trigger.type == "httpTrigger":
            methods = tuple(str(getattr(m, "value", m)).upper() for m in (trigger.methods or ["GET", "POST"]))
            level = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
            index.http.append(HttpRoute(name, trigger.route or name, methods, trigger.name, client_arg, fn, level))
        elif trigger.type == "blobTrigger":
            container, pattern = _blob_pattern(trigger.path)
            index.blob_triggers.append(BlobTrigger(name, container, pattern, trigger.name, client_arg, fn))
        elif trigger.type == "eventGridTrigger":
            index.event_grid_triggers.append(EventGridTrigger(name, trigger.name, client_arg, fn))
    app._devhost_index = index
    return index
