"""The status's ``historyEvents`` in the Durable extension's shape (devhost README fidelity row 39).

Expected outputs are derived by hand from the platform's source (paths as in test_fidelity.py):

* ext  ``ContextImplementations/DurableClient.cs`` ``GetDurableOrchestrationStatusAsync``,
  ``TrackNameAndScheduledTime``, ``AddScheduledEventDataAndAggregate``, ``ConvertOutputToJToken``, ``ParseToJToken``;
  ``HttpApiHandler.cs`` ``HandleGetStatusRequestAsync`` (``showInput`` defaults to true, ``showHistoryOutput`` to
  false); ``StatusResponsePayload.cs`` (``historyEvents`` omitted when null).
* dtfx ``DurableTask.Core/History/*.cs`` (the ``[DataMember]``s of each event, core 2.17.1),
  ``DurableTask.AzureStorage/AzureStorageOrchestrationService.cs`` ``GetOrchestrationHistoryAsync`` (Newtonsoft
  defaults: nulls kept, enums as integers), ``TaskOrchestrationContext.cs`` (``ScheduleTask``'s ``params object[]``,
  ``FailOrchestration``, ``HandleExecutionTerminatedEvent``).
"""
from __future__ import annotations

from typing import Any

from devhost import history as h
from devhost.status_history import management_history, parse_to_jtoken


def ev(etype: int, event_id: int = -1, at: str = "2024-05-01T10:00:00.000000Z", **fields: Any) -> dict[str, Any]:
    return {"EventType": etype, "EventId": event_id, "IsPlayed": True, "Timestamp": at, **fields}


T0, T1, T2, T3, T4, T5 = (f"2024-05-01T10:00:0{i}.{i}00000Z" for i in range(6))

# devhost's own history of a finished instance: an activity, a timer, a failed activity, a sub-orchestration, an event
COMPLETED_HISTORY = [
    ev(h.ORCHESTRATOR_STARTED, at=T0),
    ev(h.EXECUTION_STARTED, at=T0, Name="features", Input='{"cities": ["Oslo"]}', Version="",
       OrchestrationInstance={"InstanceId": "i1", "ExecutionId": "e1"}, ParentInstance=None),
    ev(h.TASK_SCHEDULED, 0, at=T0, Name="say_hello", Input='"Oslo"'),
    ev(h.TIMER_CREATED, 1, at=T0, FireAt="2024-05-01T10:00:02.000000Z"),
    ev(h.ORCHESTRATOR_COMPLETED, at=T0),
    ev(h.ORCHESTRATOR_STARTED, at=T1),
    ev(h.TASK_COMPLETED, at=T1, TaskScheduledId=0, Result='"Hello Oslo!"'),
    ev(h.ORCHESTRATOR_COMPLETED, at=T1),
    ev(h.ORCHESTRATOR_STARTED, at=T2),
    ev(h.TIMER_FIRED, at=T2, TimerId=1, FireAt="2024-05-01T10:00:02.000000Z"),
    ev(h.TASK_SCHEDULED, 2, at=T2, Name="say_hello", Input='"Boom"'),
    ev(h.ORCHESTRATOR_COMPLETED, at=T2),
    ev(h.ORCHESTRATOR_STARTED, at=T3),
    ev(h.TASK_FAILED, at=T3, TaskScheduledId=2, Reason="Activity function 'say_hello' failed:  ValueError: boom",
       Details="Traceback ..."),
    ev(h.SUBORCH_CREATED, 3, at=T3, Name="fanout", InstanceId="i1:3", Input='["Rome"]'),
    ev(h.ORCHESTRATOR_COMPLETED, at=T3),
    ev(h.ORCHESTRATOR_STARTED, at=T4),
    ev(h.SUBORCH_COMPLETED, at=T4, TaskScheduledId=3, Result='{"results": ["Hello Rome!"]}'),
    ev(h.EVENT_RAISED, at=T4, Name="Approve", Input='"yes"'),
    ev(h.ORCHESTRATOR_COMPLETED, at=T5),
    ev(h.EXECUTION_COMPLETED, at=T5, Result='{"ok": true}'),
]


def test_a_finished_history_comes_out_as_the_extension_answers_it() -> None:
    """ext ``DurableClient.GetDurableOrchestrationStatusAsync`` with the HTTP API's defaults (showInput true,
    showHistoryOutput false), on what dtfx stores for devhost's events:

    * ``EventType`` by name; ``OrchestratorStarted``/``OrchestratorCompleted`` dropped (``indexList``);
    * each ``TaskScheduled``/``SubOrchestrationInstanceCreated`` that has a completion dropped, its ``Timestamp``
      (cast ``(DateTime)``: local time, ``+00:00`` on Azure's UTC hosts), ``Name`` and ``Input`` added to the
      completion as ``ScheduledTime``, ``FunctionName``, ``Input`` (``AddScheduledEventDataAndAggregate``), and
      ``TaskScheduledId`` removed;
    * ``Result`` of completions and of ``ExecutionCompleted`` removed (no showHistoryOutput); ``Reason``/``Details``
      of a failure kept, ``FailureDetails`` null;
    * ``ExecutionStarted``: ``Name`` -> ``FunctionName``; ``OrchestrationInstance``, ``ParentInstance``, ``Version``,
      ``Tags`` removed; ``Correlation``, ``ParentTraceContext``, ``ScheduledStartTime`` null, ``Generation`` 0;
    * ``TimerFired`` without ``TimerId``; every event without ``EventId`` and ``IsPlayed``;
    * inputs as dtfx serialized them: the start's and the sub-orchestration's a JSON string literal
      (``SerializeInternal`` of the SDK's JSON text), the activity's a one-element array (``ScheduleTask``'s
      ``params object[]``), the event's as stored; times in Newtonsoft's ``FFFFFFF`` form (trailing zeros dropped).
    """
    got = management_history(COMPLETED_HISTORY)
    assert got == [
        {"EventType": "ExecutionStarted", "Input": '"{\\"cities\\": [\\"Oslo\\"]}"', "Correlation": None,
         "ParentTraceContext": None, "ScheduledStartTime": None, "Generation": 0,
         "Timestamp": "2024-05-01T10:00:00Z", "FunctionName": "features"},
        {"EventType": "TimerCreated", "FireAt": "2024-05-01T10:00:02Z", "Timestamp": "2024-05-01T10:00:00Z"},
        {"EventType": "TaskCompleted", "Timestamp": "2024-05-01T10:00:01.1Z",
         "ScheduledTime": "2024-05-01T10:00:00+00:00", "FunctionName": "say_hello", "Input": '["\\"Oslo\\""]'},
        {"EventType": "TimerFired", "FireAt": "2024-05-01T10:00:02Z", "Timestamp": "2024-05-01T10:00:02.2Z"},
        {"EventType": "TaskFailed", "Reason": "Activity function 'say_hello' failed:  ValueError: boom",
         "Details": "Traceback ...", "FailureDetails": None, "Timestamp": "2024-05-01T10:00:03.3Z",
         "ScheduledTime": "2024-05-01T10:00:02.2+00:00", "FunctionName": "say_hello", "Input": '["\\"Boom\\""]'},
        {"EventType": "SubOrchestrationInstanceCompleted", "Timestamp": "2024-05-01T10:00:04.4Z",
         "ScheduledTime": "2024-05-01T10:00:03.3+00:00", "FunctionName": "fanout", "Input": '"[\\"Rome\\"]"'},
        {"EventType": "EventRaised", "Name": "Approve", "Input": '"yes"', "ParentTraceContext": None,
         "Timestamp": "2024-05-01T10:00:04.4Z"},
        {"EventType": "ExecutionCompleted", "OrchestrationStatus": "Completed", "FailureDetails": None,
         "Timestamp": "2024-05-01T10:00:05.5Z"},
    ]
    assert COMPLETED_HISTORY[1]["EventType"] == h.EXECUTION_STARTED  # devhost's own history is left as it was


def test_show_history_output_adds_parsed_results_and_show_input_false_drops_every_input() -> None:
    """ext ``ConvertOutputToJToken``: with showHistoryOutput the ``Result`` of ``TaskCompleted``,
    ``SubOrchestrationInstanceCompleted`` and ``ExecutionCompleted`` is parsed JSON (``ParseToJToken``); inputs follow
    ``showInput`` alone (``if (!showInput) historyItem.Remove("Input")``), not showHistoryOutput."""
    got = management_history(COMPLETED_HISTORY, show_input=False, show_history_output=True)
    assert not any("Input" in e for e in got)
    results = {e["EventType"]: e.get("Result", "absent") for e in got}
    assert results["TaskCompleted"] == "Hello Oslo!"
    assert results["SubOrchestrationInstanceCompleted"] == {"results": ["Hello Rome!"]}
    assert results["ExecutionCompleted"] == {"ok": True}
    assert results["TaskFailed"] == "absent" and results["EventRaised"] == "absent"


def test_a_running_instance_keeps_a_task_scheduled_that_has_no_completion_yet() -> None:
    """ext: only a ``TaskScheduled`` that a completion finds is dropped; an open one stays, without ``Version``;
    an open ``SubOrchestrationInstanceCreated`` likewise (``InstanceId``, ``ClientSpanId`` kept)."""
    history = COMPLETED_HISTORY[:5] + [ev(h.SUBORCH_CREATED, 4, at=T0, Name="fanout", InstanceId="kid", Input=None)]
    got = management_history(history)
    assert got[1:] == [
        {"EventType": "TaskScheduled", "Name": "say_hello", "Input": '["\\"Oslo\\""]', "ParentTraceContext": None,
         "Timestamp": "2024-05-01T10:00:00Z"},
        {"EventType": "TimerCreated", "FireAt": "2024-05-01T10:00:02Z", "Timestamp": "2024-05-01T10:00:00Z"},
        {"EventType": "SubOrchestrationInstanceCreated", "Name": "fanout", "InstanceId": "kid", "Input": None,
         "ClientSpanId": None, "Timestamp": "2024-05-01T10:00:00Z"},
    ]


def test_a_failed_and_a_terminated_instance_end_as_dtfx_records_them() -> None:
    """dtfx has no ``ExecutionFailed`` event in use: a failing orchestrator ends with ``ExecutionCompleted``, status
    Failed, ``Result`` = the failure message (``TaskOrchestrationContext.FailOrchestration`` ->
    ``CompleteOrchestration``). A terminate is ``ExecutionTerminated`` (``Input`` = the raw reason, ext
    ``DurableClient.TerminateAsync``) and then ``ExecutionCompleted`` with status Terminated and that reason
    (``HandleExecutionTerminatedEvent``). A sub-orchestration's start has no ``Generation`` (set on client starts
    only: dtfx ``AzureStorageOrchestrationService.CreateTaskOrchestrationAsync``)."""
    start = ev(h.EXECUTION_STARTED, at=T0, Name="child", Input=None, Version="",
               ParentInstance={"OrchestrationInstance": {"InstanceId": "p"}, "TaskScheduleId": 3})
    failed = management_history([start, ev(h.EXECUTION_FAILED, at=T1, Reason="Orchestrator function 'child' "
                                                                              "failed: orchestrator bug")],
                                show_history_output=True)
    assert failed[0]["Generation"] is None and failed[0]["Input"] is None
    assert failed[1] == {"EventType": "ExecutionCompleted", "OrchestrationStatus": "Failed",
                         "Result": "Orchestrator function 'child' failed: orchestrator bug", "FailureDetails": None,
                         "Timestamp": "2024-05-01T10:00:01.1Z"}
    terminated = management_history([start, ev(h.EXECUTION_TERMINATED, at=T2, Input='"operator said stop"')])
    assert terminated[1:] == [
        {"EventType": "ExecutionTerminated", "Input": "operator said stop", "Timestamp": "2024-05-01T10:00:02.2Z"},
        {"EventType": "ExecutionCompleted", "OrchestrationStatus": "Terminated", "FailureDetails": None,
         "Timestamp": "2024-05-01T10:00:02.2Z"},
    ]


def test_results_are_parsed_as_newtonsoft_reads_one_token() -> None:
    """ext ``ParseToJToken``: null stays null, blank is "", the first token of the trimmed text (``JToken.Load``),
    the trimmed text itself where that is no JSON (a failure message)."""
    assert parse_to_jtoken(None) is None and parse_to_jtoken("  ") == ""
    assert parse_to_jtoken(' {"a": [1]} ') == {"a": [1]}
    assert parse_to_jtoken(" Orchestrator function 'x' failed: boom ") == "Orchestrator function 'x' failed: boom"
    assert parse_to_jtoken("truest") == "truest" and parse_to_jtoken("true story") is True
