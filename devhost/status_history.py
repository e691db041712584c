"""The ``historyEvents`` of the management API's status (``showHistory=true``), in the Durable extension's shape.

devhost keeps its history in the replay protocol's form (``devhost.history``: integer ``EventType``, ``EventId``,
``IsPlayed``, devhost-only failure events); the extension answers a converted copy. Two steps, each a pure function:

1. ``as_stored`` turns devhost's events into what the Azure Storage provider hands the extension: dtfx
   ``AzureStorageOrchestrationService.GetOrchestrationHistoryAsync`` serializes the current execution's
   ``HistoryEvent`` objects with a default Newtonsoft serializer (``Utils.SerializeToJson``: every ``[DataMember]``,
   nulls included, enums as integers, UTC times as ``yyyy-MM-ddTHH:mm:ss.FFFFFFFZ``). Versions pinned: extension
   2.13.7 (``WebJobs.Extensions.DurableTask.csproj``), DurableTask.Core 2.17.1, DurableTask.AzureStorage 1.17.5.
2. ``extension_view`` is ext ``ContextImplementations/DurableClient.cs`` ``GetDurableOrchestrationStatusAsync``
   (with ``TrackNameAndScheduledTime``, ``AddScheduledEventDataAndAggregate``, ``ConvertOutputToJToken``,
   ``ParseToJToken``), line by line.

What the extension does, in short: ``EventType`` becomes the enum's name; ``OrchestratorStarted``/``Completed`` are
dropped; a ``TaskScheduled`` (``SubOrchestrationInstanceCreated``) that has a completion is dropped and its time, name
and input move onto the ``TaskCompleted``/``TaskFailed`` (``SubOrchestrationInstance*``) as ``ScheduledTime``,
``FunctionName`` and ``Input``; ``ExecutionStarted`` loses ``Name`` (now ``FunctionName``), ``OrchestrationInstance``,
``ParentInstance``, ``Version``, ``Tags``; ``TimerFired`` loses ``TimerId``; every event loses ``EventId``,
``IsPlayed``, and ``Input`` unless ``showInput`` (default true on the HTTP API). ``Result`` of ``TaskCompleted``,
``SubOrchestrationInstanceCompleted`` and ``ExecutionCompleted`` is kept (parsed JSON) only with
``showHistoryOutput=true``; ``Reason``/``Details`` of failures always stay. No paging: the whole history of the
current execution, in history order.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

from devhost import history as h

# dtfx DurableTask.Core/History/EventType.cs, in enum order (the extension answers ``eventType.ToString()``)
EVENT_TYPE_NAMES = ("ExecutionStarted", "ExecutionCompleted", "ExecutionFailed", "ExecutionTerminated",
                    "TaskScheduled", "TaskCompleted", "TaskFailed", "SubOrchestrationInstanceCreated",
                    "SubOrchestrationInstanceCompleted", "SubOrchestrationInstanceFailed", "TimerCreated", "TimerFired",
                    "OrchestratorStarted", "OrchestratorCompleted", "EventSent", "EventRaised", "ContinueAsNew",
                    "GenericEvent", "HistoryState", "ExecutionSuspended", "ExecutionResumed")
# dtfx DurableTask.Core/OrchestrationStatus.cs
ORCHESTRATION_STATUS_NAMES = ("Running", "Completed", "ContinuedAsNew", "Failed", "Canceled", "Terminated", "Pending",
                              "Suspended")
COMPLETED, FAILED, TERMINATED = 1, 3, 5


# ------------------------------------------------------------------ .NET text forms
def _instant(text: str) -> dt.datetime:
    try:
        return h.parse_ts(text)
    except ValueError:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def _fraction(t: dt.datetime) -> str:
    digits = f"{t.microsecond:06d}0".rstrip("0")  # .NET: 7 digits (100 ns), trailing zeros dropped ("FFFFFFF")
    return "." + digits if digits else ""


def dotnet_utc(text: str) -> str:
    """A UTC time as Newtonsoft writes a ``DateTimeKind.Utc`` ``DateTime`` (the stored event times)."""
    t = _instant(text)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(t) + "Z"


def dotnet_local(text: str) -> str:
    """A UTC time string as ``ScheduledTime`` comes out: the extension casts the event's ``Timestamp`` string with
    ``(DateTime)`` (Newtonsoft: ``Convert.ToDateTime``, a *local* ``DateTime``), and the response writes a local
    time with its offset, ``+00:00`` on Azure's hosts (they run on UTC)."""
    t = _instant(text)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(t) + "+00:00"


def dotnet_json_string(value: str) -> str:
    """``value`` as a JSON string literal as Newtonsoft writes it (``Formatting.None``): non-ASCII as is, control
    characters escaped, and U+0085, U+2028, U+2029 escaped too (``JavaScriptUtils.DoubleQuoteCharEscapeFlags``)."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("\u0085", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


_SEPARATORS = " \t\r\n,]}):/"


def parse_to_jtoken(value: str | None) -> Any:
    """ext ``DurableClient.ParseToJToken``: null stays null, blank is ``""``, else the first JSON token of the
    trimmed text (``JToken.Load`` does not look past it), or the trimmed text itself when that is not JSON."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return ""
    try:
        parsed, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return text
    if not isinstance(parsed, (str, list, dict)) and end < len(text) and text[end] not in _SEPARATORS:
        return text  # Newtonsoft: the token must end at a separator ("truest", "12ab" are not JSON)
    return parsed


# ------------------------------------------------------------------ 1. devhost's events as dtfx stores them
def _base(e: dict[str, Any]) -> dict[str, Any]:
    return {"EventId": e.get("EventId", -1), "IsPlayed": bool(e.get("IsPlayed", False)),
            "Timestamp": dotnet_utc(e["Timestamp"])}


def _completed(e: dict[str, Any], status: int, result: str | None) -> dict[str, Any]:
    return {"EventType": h.EXECUTION_COMPLETED, "OrchestrationStatus": status, "Result": result,
            "FailureDetails": None, **_base(e)}


def _input_literal(text: str | None) -> str | None:
    """An SDK action's or client's input (JSON text, a .NET string to the extension) as dtfx serializes it."""
    return None if text is None else dotnet_json_string(text)


def as_stored(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """devhost's ``history`` as the extension reads it from the Azure Storage provider (step 1 of the module doc).

    Each event has its class's ``[DataMember]``s (dtfx ``DurableTask.Core/History/*.cs``) in Newtonsoft's order
    (fields, then properties declared by the class, then ``HistoryEvent``'s), with what devhost cannot know at dtfx's
    defaults: ``Tags``, ``Correlation``, ``ParentTraceContext``, ``ScheduledStartTime``, ``ClientSpanId``,
    ``FailureDetails`` null (no distributed tracing, no scheduled start, ``ErrorPropagationMode.SerializeExceptions``).
    ``Generation`` is 0 for a client-started instance and null for a sub-orchestration (dtfx
    ``AzureStorageOrchestrationService.CreateTaskOrchestrationAsync`` sets it on client starts only); devhost does
    not count generations, so an id started again (Azure: the previous one's + 1) or gone on as new (Azure: null)
    shows 0 too.

    Inputs as dtfx serializes what the extension hands it (the SDK's inputs are JSON text, .NET strings there):
    ``ExecutionStarted``/``SubOrchestrationInstanceCreated`` a JSON string literal (``DataConverter.SerializeInternal``;
    devhost README row 37), ``TaskScheduled`` a one-element array (``TaskOrchestrationContext.ScheduleTask``'s
    ``params object[]``), ``EventRaised`` as devhost already stores it, ``ExecutionTerminated`` the raw reason
    (ext ``DurableClient.TerminateAsync`` -> ``TaskHubClient.TerminateInstanceAsync``).

    devhost-only forms become dtfx's: its ``ExecutionFailed`` is an ``ExecutionCompleted`` with status Failed and
    ``Result`` = the reason (dtfx ``TaskOrchestrationContext.FailOrchestration`` -> ``CompleteOrchestration``); a
    terminate is ``ExecutionTerminated`` followed by ``ExecutionCompleted`` with status Terminated and the reason
    (dtfx ``TaskOrchestrationContext.HandleExecutionTerminatedEvent``).
    """
    out: list[dict[str, Any]] = []
    for i, e in enumerate(history):
        t = e["EventType"]
        if t == h.EXECUTION_STARTED:
            out.append({"OrchestrationInstance": e.get("OrchestrationInstance"), "EventType": t,
                        "ParentInstance": e.get("ParentInstance"), "Name": e.get("Name"),
                        "Version": e.get("Version", ""), "Input": _input_literal(e.get("Input")), "Tags": None,
                        "Correlation": None, "ParentTraceContext": None, "ScheduledStartTime": None,
                        "Generation": e.get("Generation", None if e.get("ParentInstance") else 0), **_base(e)})
        elif t == h.EXECUTION_COMPLETED:
            out.append(_completed(e, COMPLETED, e.get("Result")))
        elif t == h.EXECUTION_FAILED:
            out.append(_completed(e, FAILED, e.get("Reason")))
        elif t == h.EXECUTION_TERMINATED:
            reason = e.get("Input")
            try:
                decoded = json.loads(reason) if reason is not None else None
                reason = decoded if isinstance(decoded, str) else reason
            except ValueError:
                pass
            out.append({"EventType": t, "Input": reason, **_base(e)})
            if not any(later["EventType"] in (h.EXECUTION_COMPLETED, h.EXECUTION_FAILED) for later in history[i + 1:]):
                out.append(_completed(e, TERMINATED, reason))
        elif t == h.TASK_SCHEDULED:
            arg = "null" if e.get("Input") is None else dotnet_json_string(e["Input"])
            out.append({"EventType": t, "Name": e.get("Name"), "Version": e.get("Version", ""), "Input": f"[{arg}]",
                        "ParentTraceContext": None, **_base(e)})
        elif t in (h.TASK_COMPLETED, h.SUBORCH_COMPLETED):
            out.append({"EventType": t, "TaskScheduledId": e.get("TaskScheduledId"), "Result": e.get("Result"),
                        **_base(e)})
        elif t in (h.TASK_FAILED, h.SUBORCH_FAILED):
            out.append({"EventType": t, "TaskScheduledId": e.get("TaskScheduledId"), "Reason": e.get("Reason"),
                        "Details": e.get("Details"), "FailureDetails": None, **_base(e)})
        elif t == h.SUBORCH_CREATED:
            out.append({"EventType": t, "Name": e.get("Name"), "Version": e.get("Version", ""),
                        "InstanceId": e.get("InstanceId"), "Input": _input_literal(e.get("Input")),
                        "ClientSpanId": None, **_base(e)})
        elif t == h.TIMER_CREATED:
            out.append({"EventType": t, "FireAt": dotnet_utc(e["FireAt"]), **_base(e)})
        elif t == h.TIMER_FIRED:
            out.append({"EventType": t, "TimerId": e.get("TimerId"), "FireAt": dotnet_utc(e["FireAt"]),
                        **_base(e)})
        elif t == h.EVENT_RAISED:
            out.append({"EventType": t, "Name": e.get("Name"), "Input": e.get("Input"), "ParentTraceContext": None,
                        **_base(e)})
        else:  # OrchestratorStarted / OrchestratorCompleted (and anything else): the base members only
            out.append({"EventType": t, **_base(e)})
    return out


# ------------------------------------------------------------------ 2. the extension's conversion
def extension_view(stored: list[dict[str, Any]], show_input: bool, show_history_output: bool) -> list[dict[str, Any]]:
    """ext ``DurableClient.GetDurableOrchestrationStatusAsync`` on ``stored`` (``as_stored``'s events); a copy."""
    items = copy.deepcopy(stored)
    scheduled: dict[str, tuple[int, Any, str, Any]] = {}  # eventMapper: "<type>_<EventId>" -> index, name, time, input
    dropped: list[int] = []

    def track(item: dict[str, Any], type_name: str, index: int) -> None:  # TrackNameAndScheduledTime
        scheduled[f"{type_name}_{item.get('EventId')}"] = (index, item.get("Name"), item["Timestamp"],
                                                           item.get("Input"))

    def aggregate(item: dict[str, Any], prefix: str) -> None:  # AddScheduledEventDataAndAggregate
        found = scheduled.get(f"{prefix}_{item.get('TaskScheduledId')}")
        if found is not None:
            index, name, when, input_ = found
            item["ScheduledTime"] = dotnet_local(when)
            item["FunctionName"] = name
            if show_input:
                item["Input"] = input_
            dropped.append(index)

    for i, item in enumerate(items):
        t = item.get("EventType")
        if not isinstance(t, int) or not 0 <= t < len(EVENT_TYPE_NAMES):
            continue  # Enum.TryParse failed: the event is left as it is
        name = EVENT_TYPE_NAMES[t]
        item["EventType"] = name
        if name in ("TaskScheduled", "SubOrchestrationInstanceCreated"):
            track(item, name, i)
            item.pop("Version", None)
        elif name in ("TaskCompleted", "TaskFailed", "SubOrchestrationInstanceCompleted",
                      "SubOrchestrationInstanceFailed"):
            aggregate(item, "TaskScheduled" if name.startswith("Task") else "SubOrchestrationInstanceCreated")
            item.pop("TaskScheduledId", None)
            if name in ("TaskCompleted", "SubOrchestrationInstanceCompleted"):
                if show_history_output:
                    item["Result"] = parse_to_jtoken(item.get("Result"))
                else:
                    item.pop("Result", None)
        elif name == "ExecutionStarted":
            function_name = item.pop("Name", None)
            item["FunctionName"] = function_name
            for key in ("OrchestrationInstance", "ParentInstance", "Version", "Tags"):
                item.pop(key, None)
        elif name == "ExecutionCompleted":
            status = item.get("OrchestrationStatus")
            if isinstance(status, int) and 0 <= status < len(ORCHESTRATION_STATUS_NAMES):
                item["OrchestrationStatus"] = ORCHESTRATION_STATUS_NAMES[status]
            if show_history_output:
                item["Result"] = parse_to_jtoken(item.get("Result"))
            else:
                item.pop("Result", None)
        elif name == "TimerFired":
            item.pop("TimerId", None)
        elif name in ("OrchestratorStarted", "OrchestratorCompleted"):
            dropped.append(i)
        if not show_input:
            item.pop("Input", None)
        item.pop("EventId", None)
        item.pop("IsPlayed", None)
    gone = set(dropped)
    return [item for i, item in enumerate(items) if i not in gone]


def management_history(history: list[dict[str, Any]], show_input: bool = True,
                       show_history_output: bool = False) -> list[dict[str, Any]]:
    """devhost's ``history`` as the status's ``historyEvents`` (both steps of the module doc)."""
    return extension_view(as_stored(history), show_input, show_history_output)
