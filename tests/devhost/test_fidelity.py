"""devhost behaves as the Durable extension and the Functions host do, wherever the app can tell.

Each test names the platform source it copies (primary sources: ../shared/reference/azure-platform-sources.md); the
rows of devhost/README.md's fidelity table point here. Paths are in these repositories:

* ext   = Azure/azure-functions-durable-extension, src/WebJobs.Extensions.DurableTask/
* dtfx  = Azure/durabletask, src/
* host  = Azure/azure-functions-host, src/WebJobs.Script.WebHost/
* blobs = Azure/azure-sdk-for-net, sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Blobs/src/
* docs  = MicrosoftDocs/azure-docs, articles/azure-functions/
"""
from __future__ import annotations

import asyncio
import datetime as dt
import base64
import json
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Coroutine, Iterator

import pytest
import requests
from azure.durable_functions import DurableOrchestrationClient

from devhost import history as h
from devhost.engine import InvalidInstanceId, OrchestrationAlreadyExists
from devhost.host import DevHost
from devhost.hostjson import HostConfig, parse_timespan
from devhost.keys import FUNCTION_KEY_ENV
from devhost.store import INLINE_LIMIT
from tests.devhost import sample_app
from tests.waiting import wait_until

KEY = "test-function-key"


def _running_host(storage_connection: str, unique_name: str, **options: Any) -> Iterator[DevHost]:
    h_ = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                 host_config=HostConfig(), **options)
    h_.start()
    yield h_
    h_.stop()


@pytest.fixture
def host(storage_connection: str, unique_name: str) -> Iterator[DevHost]:
    yield from _running_host(storage_connection, unique_name, blob_poll_s=0.3)


def sdk(host: DevHost, call: Callable[[DurableOrchestrationClient], Coroutine[Any, Any, Any]]) -> Any:
    """Run one call of the SDK's own client (the one the app uses) on devhost's loop, where its session lives."""
    assert host._loop is not None
    client = DurableOrchestrationClient(host.front.binding())
    return asyncio.run_coroutine_threadsafe(call(client), host._loop).result(60)


def running(host: DevHost, iid: str) -> bool:
    st = host.get_status(iid)
    return bool(st and st["runtimeStatus"] == "Running")


# ------------------------------------------------------------------ 1. start_new on a running id
def test_start_new_on_a_running_or_pending_id_raises_and_a_finished_id_is_replaced(host: DevHost) -> None:
    """ext Options/DurableTaskOptions.cs: OverridableExistingInstanceStates defaults to NonRunningStates;
    ext OverridableStates.cs: NonRunning = Running, ContinuedAsNew, Pending, Suspended are not replaced;
    dtfx DurableTask.AzureStorage/AzureStorageOrchestrationService.cs throws OrchestrationAlreadyExistsException
    (ThrowExceptionOnInvalidDedupeStatus, set by ext AzureStorageDurabilityProviderFactory.cs); ext HttpApiHandler.cs
    answers it 500 and the SDK's start_new raises."""
    iid = "dup-" + uuid.uuid4().hex[:8]
    assert sdk(host, lambda c: c.start_new("sleepy", iid)) == iid
    wait_until(lambda: running(host, iid), 20, "the first instance to run")
    with pytest.raises(Exception) as refused:
        sdk(host, lambda c: c.start_new("sleepy", iid, "second"))
    assert "An Orchestration instance with the status Running already exists." in str(refused.value)
    assert host.get_status(iid)["input"] is None  # the running instance was not replaced
    host.terminate(iid, "done")
    assert sdk(host, lambda c: c.start_new("sleepy", iid, "third")) == iid  # a finished id may be reused
    wait_until(lambda: (host.get_status(iid) or {}).get("input") == "third", 20, "the replacement to start")


def test_of_two_racing_starts_of_one_id_exactly_one_wins(host: DevHost) -> None:
    """The race the app's status-then-start_new leaves open: the second start finds the first Pending or Running
    (ext OverridableStates.cs NonRunning includes Pending) and is refused with 500 (ext HttpApiHandler.cs catch-all)."""
    iid = "race-" + uuid.uuid4().hex[:8]
    url = f"{host.rpc_base_url}orchestrators/sleepy/{iid}"
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: requests.post(url, json=None, timeout=30).status_code, range(8)))
    assert sorted(codes) == [202] + [500] * 7, codes
    with pytest.raises(OrchestrationAlreadyExists):
        host.engine.start_orchestration("sleepy", None, iid)


# ------------------------------------------------------------------ 2. terminate reaches a waiting parent
def test_terminating_a_sub_orchestration_fails_the_waiting_parent(host: DevHost) -> None:
    """dtfx DurableTask.Core/TaskOrchestrationDispatcher.cs: a Terminated (or Failed) child sends its parent a
    SubOrchestrationInstanceFailedEvent with the termination reason; the SDK raises it in the orchestrator."""
    child = "child-" + uuid.uuid4().hex[:8]
    parent = host.start_orchestration("parent_of_sleepy", child)
    wait_until(lambda: running(host, child), 20, "the child to run")
    assert requests.post(f"{host.rpc_base_url}instances/{child}/terminate?reason=stop%20it", timeout=10).status_code == 202
    st = host.wait_for(parent, 30)
    assert st["runtimeStatus"] == "Completed" and st["output"].startswith("child failed: stop it"), st
    assert host.get_status(child)["runtimeStatus"] == "Terminated"


# ------------------------------------------------------------------ 45. what the shim refuses to schedule
def test_calling_a_function_the_app_does_not_have_fails_the_orchestration_not_the_task(host: DevHost) -> None:
    """ext Listener/OutOfProcOrchestrationShim.cs InvokeAPIFromAction hands each action to
    ContextImplementations/DurableOrchestrationContext.cs CallDurableTaskFunctionAsync, which first calls
    DurableTaskExtension.cs ThrowIfFunctionDoesNotExist (names compared as FunctionName: OrdinalIgnoreCase): an
    ArgumentException "The function '<name>' doesn't exist, is disabled, or is not an activity function. Additional
    info: The following are the known activity functions: '...'." CallDurableTaskFunctionAsync is async, so it faults
    the call's task, which ProcessAsyncActionsV2 awaits in a try that ignores it: on Azure the call is dropped and the
    orchestrator, waiting on it, stays Running forever (README row 45). devhost fails the instance instead, stricter,
    "Orchestrator function '<name>' failed: <message>", which the orchestrator's try/except cannot catch either.
    devhost scheduled the call and failed the task, which the orchestrator caught (or a retry policy retried)."""
    activity = host.wait_for(host.start_orchestration("calls_missing", "activity"), 30)
    assert activity["runtimeStatus"] == "Failed", activity
    known = "', '".join(host.engine.index.activities)
    assert activity["output"] == (
        "Orchestrator function 'calls_missing' failed: The function 'no_such_activity' doesn't exist, is disabled, or "
        f"is not an activity function. Additional info: The following are the known activity functions: '{known}'.")
    orchestrator = host.wait_for(host.start_orchestration("calls_missing", "orchestrator"), 30)
    assert orchestrator["runtimeStatus"] == "Failed", orchestrator
    assert orchestrator["output"].startswith(
        "Orchestrator function 'calls_missing' failed: The function 'no_such_orchestrator' doesn't exist, is disabled, "
        "or is not an orchestrator function. Additional info: The following are the known orchestrator functions: "
        "'"), orchestrator
    assert host.get_status("no_such_orchestrator") is None


def test_a_retry_policy_waiting_longer_than_the_provider_allows_fails_the_orchestration(host: DevHost) -> None:
    """ext ContextImplementations/DurableOrchestrationContext.cs CallDurableTaskFunctionAsync validates a retry
    policy's intervals first (AzureStorageDurabilityProvider.ValidateDelayTime: MaximumDelayTime, 6 days), throwing
    ArgumentException(message, nameof(FirstRetryInterval)) in that async method: the call's task faults and the shim
    ignores it, so on Azure the call is dropped and the instance stays Running forever (README row 45); devhost fails
    it, stricter, and the orchestrator's except never runs. devhost took any interval."""
    fits = host.wait_for(host.start_orchestration("retries_after_days", 6), 30)
    assert fits["runtimeStatus"] == "Completed" and fits["output"] == "Hello days!", fits
    too_long = host.wait_for(host.start_orchestration("retries_after_days", 6.001), 30)
    assert too_long["runtimeStatus"] == "Failed", too_long
    assert too_long["output"] == ("Orchestrator function 'retries_after_days' failed: The Azure Storage provider "
                                  "supports a maximum of 6 days for time-based delays (Parameter 'FirstRetryInterval')")


def test_an_execution_past_max_orchestration_actions_fails(storage_connection: str, unique_name: str) -> None:
    """ext ContextImplementations/DurableOrchestrationContext.cs IncrementActionsOrThrowException: each activity,
    timer and sub-orchestration the shim schedules in an execution (replayed ones too: the context is new each
    episode) counts; past host.json extensions.durableTask.maxOrchestrationActions (Options/DurableTaskOptions.cs,
    default 100,000) an InvalidOperationException faults that call's task, which the shim ignores: on Azure the action
    and every later one are dropped and the instance never ends (README rows 45, 47); devhost fails it, stricter.
    devhost had no limit: an orchestration Azure never ends ran to its end here. ``fanout`` of n cities makes n + 1
    actions."""
    assert HostConfig.from_dict({}).max_orchestration_actions == 100_000
    config = HostConfig.from_dict({"extensions": {"durableTask": {"maxOrchestrationActions": 3}}})
    host_ = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                    host_config=config)
    host_.start()
    try:
        fits = host_.wait_for(host_.start_orchestration("fanout", ["Oslo", "Rome"]), 30)
        assert fits["runtimeStatus"] == "Completed", fits
        over = host_.wait_for(host_.start_orchestration("fanout", ["Oslo", "Rome", "Lima"]), 30)
        assert over["runtimeStatus"] == "Failed", over
        assert over["output"] == ("Orchestrator function 'fanout' failed: Maximum amount of orchestration actions (3) "
                                  "has been reached. This value can be configured in host.json file as "
                                  "MaxOrchestrationActions.")
    finally:
        host_.stop()


def test_an_activity_called_by_its_name_in_another_case_runs(host: DevHost) -> None:
    """ext FunctionName compares names OrdinalIgnoreCase (FunctionName.cs Equals/GetHashCode): the shim's existence
    check passes and the extension's activity lookup (DurableTaskExtension knownActivities, keyed by FunctionName)
    finds the function, so Azure runs it. devhost looked the name up as written and failed the activity."""
    st = host.wait_for(host.start_orchestration("calls_in_other_case"), 30)
    assert st["runtimeStatus"] == "Completed" and st["output"] == "Hello case!", st


@pytest.mark.parametrize("child", ["own", "OWN", "@entity-like"])
def test_a_sub_orchestration_id_the_extension_refuses_fails_the_parent(host: DevHost, child: str) -> None:
    """ext ContextImplementations/DurableOrchestrationContext.cs CallDurableTaskFunctionAsync,
    FunctionType.Orchestrator: a sub-orchestration id equal (OrdinalIgnoreCase) to the orchestration's own id or its
    parent's is refused, "The instance ID of a sub-orchestration must be different than the instance ID of a parent
    orchestration.", and one starting with '@' too (ArgumentException built with message and parameter name
    swapped, so its Message reads "instanceId (Parameter 'Orchestration instance ids must not start with @')");
    thrown in that async method, so the call's task faults and the out-of-proc shim ignores it: on Azure no child
    starts and the parent, waiting on it, stays Running forever (README row 45); devhost fails the parent, stricter,
    whatever its try/except. devhost started a child under the parent's own id, wiping the parent's state."""
    parent = "parent-" + uuid.uuid4().hex[:8]
    child_id = {"own": parent, "OWN": parent.upper()}.get(child, child)
    st = host.wait_for(host.start_orchestration("parent_of_sleepy", child_id, parent), 30)
    assert st["runtimeStatus"] == "Failed", st
    assert st["output"] == "Orchestrator function 'parent_of_sleepy' failed: " + (
        "instanceId (Parameter 'Orchestration instance ids must not start with @')" if child.startswith("@") else
        "The instance ID of a sub-orchestration must be different than the instance ID of a parent orchestration.")
    assert st["input"] == child_id  # the parent's own instance was not replaced by a child
    if child.startswith("@"):
        assert host.get_status(child_id) is None


def test_a_parent_started_again_starts_its_child_again_under_the_same_ids(host: DevHost) -> None:
    """A failed task posted again runs a new execution of the same instance id, whose shard groups have the ids and
    task sequence numbers of the first run's. Azure does not skip such a child (DTFx OrchestrationSessionManager
    loads history only for the new execution: the old child instance is started over); devhost skipped any child
    whose row named the same parent and task id, so the parent waited forever."""
    child = "child-" + uuid.uuid4().hex[:8]
    parent = "parent-" + uuid.uuid4().hex[:8]
    host.start_orchestration("parent_of_sleepy", child, parent)
    wait_until(lambda: running(host, child), 20, "the child to run")
    first_child = host.engine.store.get_instance(child)
    assert requests.post(f"{host.rpc_base_url}instances/{child}/terminate?reason=stop", timeout=10).status_code == 202
    assert host.wait_for(parent, 30)["output"].startswith("child failed")
    host.start_orchestration("parent_of_sleepy", child, parent)  # the same parent id, again
    wait_until(lambda: running(host, child) and host.engine.store.get_instance(child)["ExecutionId"]
               != first_child["ExecutionId"], 30, "the child to run again")
    assert requests.post(f"{host.rpc_base_url}instances/{child}/terminate?reason=stop", timeout=10).status_code == 202
    assert host.wait_for(parent, 30)["output"].startswith("child failed")


# ------------------------------------------------------------------ 3. management API status codes
def test_management_api_answers_with_the_extensions_status_codes(host: DevHost) -> None:
    """ext HttpApiHandler.cs: HandleStartOrchestratorRequestAsync (202 + Location, 400 unknown function),
    HandleGetStatusRequestAsync (404; 202 + Location + Retry-After while running; 200 when finished, a Failed one
    500 only with returnInternalServerErrorOnFailure), HandleRaiseEventRequestAsync (404, 410, 400 non-JSON),
    HandleTerminateInstanceRequestAsync (404, 410, 202), HandleDeleteHistoryByIdRequestAsync (404, 200),
    HandleDeleteHistoryWithFiltersRequestAsync (400 without createdTimeFrom), unknown routes 404."""
    rpc = host.rpc_base_url
    assert requests.get(f"{rpc}instances/nope", timeout=10).status_code == 404
    unknown = requests.post(f"{rpc}orchestrators/no_such_orchestrator", timeout=10)
    assert unknown.status_code == 400
    assert unknown.json()["ExceptionMessage"].startswith("The function 'no_such_orchestrator' doesn't exist")

    iid = "codes-" + uuid.uuid4().hex[:8]
    started = requests.post(f"{rpc}orchestrators/sleepy/{iid}", timeout=10)
    assert started.status_code == 202 and started.json()["id"] == iid
    assert started.headers["Location"] == started.json()["statusQueryGetUri"]
    wait_until(lambda: running(host, iid), 20, "sleepy to run")
    live = requests.get(f"{rpc}instances/{iid}", timeout=10)
    assert live.status_code == 202 and live.headers["Retry-After"] == "5" and "Location" in live.headers
    event = f"{rpc}instances/{iid}/raiseEvent/Poke"
    assert requests.post(event, data="hi", headers={"Content-Type": "text/plain"}, timeout=10).status_code == 400
    assert requests.post(event, data="{not json", headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 400
    assert requests.post(event, json={"a": 1}, timeout=10).status_code == 202
    assert requests.post(f"{rpc}instances/{iid}/terminate?reason=x", timeout=10).status_code == 202
    assert requests.post(f"{rpc}instances/{iid}/terminate?reason=x", timeout=10).status_code == 410
    assert requests.post(event, json={"a": 1}, timeout=10).status_code == 410
    done = requests.get(f"{rpc}instances/{iid}", timeout=10)
    assert done.status_code == 200 and done.json()["runtimeStatus"] == "Terminated"
    assert requests.post(f"{rpc}instances/nope/terminate", timeout=10).status_code == 404
    assert requests.post(f"{rpc}instances/nope/raiseEvent/x", json=1, timeout=10).status_code == 404

    failed = host.start_orchestration("failing")
    host.wait_for(failed, 30)
    assert requests.get(f"{rpc}instances/{failed}", timeout=10).status_code == 200
    assert requests.get(f"{rpc}instances/{failed}?returnInternalServerErrorOnFailure=true", timeout=10).status_code == 500
    assert requests.post(f"{rpc}instances/{failed}/terminate", timeout=10).status_code == 410  # Failed is finished

    assert requests.delete(f"{rpc}instances/{iid}", timeout=10).json() == {"instancesDeleted": 1}
    assert requests.delete(f"{rpc}instances/{iid}", timeout=10).status_code == 404
    assert requests.delete(f"{rpc}instances/", timeout=10).status_code == 400
    assert requests.put(f"{rpc}instances/{failed}", timeout=10).status_code == 404
    assert requests.post(f"{rpc}instances/{failed}/bogus", timeout=10).status_code == 404
    assert requests.get(f"{rpc}nothing/here", timeout=10).status_code == 404


# ------------------------------------------------------------------ 21. one instance's status: its input by default
def test_the_instance_list_reads_runtime_status_as_the_extension_parses_it(host: DevHost) -> None:
    """ext HttpApiHandler.cs HandleGetStatusRequestAsync reads runtimeStatus with TryGetIEnumerableQueryParameterValue
    (every value of the parameter, comma-separated, .NET Enum.TryParse: case-sensitive names or the enum's numbers,
    others dropped) and filters only when some value parsed: ``runtimeStatus=running`` lists every instance on Azure.
    devhost read the first value alone and filtered by the raw text, so it listed nothing."""
    rpc = host.rpc_base_url
    done = host.start_orchestration("fanout", ["Oslo"], "done-" + uuid.uuid4().hex[:8])
    assert host.wait_for(done, 30)["runtimeStatus"] == "Completed"
    asleep = host.start_orchestration("sleepy", None, "asleep-" + uuid.uuid4().hex[:8])
    wait_until(lambda: running(host, asleep), 20, "the sleeper to run")

    def listed(query: str) -> set[str]:
        answer = requests.get(f"{rpc}instances/?{query}", timeout=10)
        assert answer.status_code == 200, answer.text
        return {i["instanceId"] for i in answer.json()}

    assert listed("runtimeStatus=Completed") == {done}
    assert listed("runtimeStatus=Pending&runtimeStatus=0") == {asleep}  # 0: Running
    assert listed("runtimeStatus=running") == {done, asleep}


def test_a_purge_by_filter_keeps_only_the_finished_states_it_names_and_one_naming_none_purges_every_state(
        host: DevHost) -> None:
    """ext HttpApiHandler.cs HandleDeleteHistoryWithFiltersRequestAsync reads runtimeStatus with
    TryGetIEnumerableQueryParameterValue (every value, comma-separated, each through .NET Enum.TryParse: case-sensitive
    names, surrounding blanks allowed, unknown ones dropped) and hands the list to dtfx
    DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs PurgeInstanceHistoryAsync, which keeps only
    Completed, Terminated, Canceled and Failed; OrchestrationInstanceStatusQueryCondition.ToOData filters by status
    only when that list is not empty. So naming only unfinished (or unknown) states purges every instance of the range,
    running ones too; devhost answered 404 and purged nothing, so a purge tried locally looked harmless."""
    rpc = host.rpc_base_url
    since = "createdTimeFrom=2000-01-01T00:00:00Z"
    done = host.start_orchestration("fanout", ["Oslo"], "done-" + uuid.uuid4().hex[:8])
    assert host.wait_for(done, 30)["runtimeStatus"] == "Completed"
    asleep = host.start_orchestration("sleepy", None, "asleep-" + uuid.uuid4().hex[:8])
    wait_until(lambda: running(host, asleep), 20, "the sleeper to run")
    kept = requests.delete(f"{rpc}instances/?{since}&runtimeStatus=Running&runtimeStatus=%20Completed", timeout=10)
    assert kept.status_code == 200 and kept.json() == {"instancesDeleted": 1}
    assert host.get_status(done) is None and running(host, asleep)
    everything = requests.delete(f"{rpc}instances/?{since}&runtimeStatus=Running,completed", timeout=10)
    assert everything.status_code == 200 and everything.json() == {"instancesDeleted": 1}
    assert host.get_status(asleep) is None


def test_one_instances_status_carries_its_input_unless_show_input_is_false(host: DevHost) -> None:
    """ext HttpApiHandler.cs HandleGetStatusRequestAsync: ``showInput`` defaults to true. The SDK (1.7,
    RpcManagementOptions._add_arg) leaves every false argument out of the URL, so ``get_status(id)`` and
    ``get_status(id, show_input=False)`` both get the input back; only an explicit ``showInput=false`` hides it.
    The app reads a task's status and input in one call (api.starters.describe_task_with_input)."""
    iid = host.start_orchestration("sleepy", {"marker": "in-the-input"})
    wait_until(lambda: running(host, iid), 20, "sleepy to run")
    default = sdk(host, lambda c: c.get_status(iid))
    off = sdk(host, lambda c: c.get_status(iid, show_input=False))
    on = sdk(host, lambda c: c.get_status(iid, show_input=True))
    assert default.input_ == off.input_ == on.input_ and "in-the-input" in json.dumps(on.input_)
    hidden = requests.get(f"{host.rpc_base_url}instances/{iid}?showInput=false", timeout=10).json()
    assert hidden.get("input") is None
    requests.post(f"{host.rpc_base_url}instances/{iid}/terminate?reason=done", timeout=10)


# ------------------------------------------------------------------ 37. an instance's input as the status shows it
def test_the_status_shows_an_sdk_started_input_as_the_json_text_it_was_started_with(host: DevHost) -> None:
    """sdk 1.7 ``start_new`` posts ``json=dumps(input)`` (a JSON string holding the input's JSON); ext
    ``HttpApiHandler.HandleStartOrchestratorRequestAsync`` reads it with ``JsonConvert.DeserializeObject`` (that
    string) and ``StartNewAsync`` hands it to dtfx ``TaskHubClient.CreateOrchestrationInstanceAsync``, whose
    ``JsonDataConverter.Serialize`` stores it as a JSON string literal; ``DurableClient.ConvertFrom`` answers the status
    with ``Input = ParseToJToken(state.Input)``: the string. So ``get_status(...).input_`` is the JSON text on Azure
    (the orchestrator itself gets the object: ext ``OrchestrationTriggerAttributeBindingProvider`` hands it
    ``GetInputAsJson()``, the string, which the SDK's ``get_input`` parses). The app reads inputs through
    ``api.starters._task_input``, which parses the text; a status read indexing ``input_`` passed on devhost only."""
    iid = "in-" + uuid.uuid4().hex[:8]
    sdk(host, lambda c: c.start_new("sleepy", iid, {"marker": "in-the-input", "n": 1}))
    wait_until(lambda: running(host, iid), 20, "sleepy to run")
    st = sdk(host, lambda c: c.get_status(iid, show_input=True))
    assert st.input_ == '{"marker": "in-the-input", "n": 1}', st.input_
    listed = [i for i in requests.get(f"{host.rpc_base_url}instances?instanceIdPrefix={iid}", timeout=10).json()]
    assert [i["input"] for i in listed] == [st.input_]
    from api.starters import _task_input

    assert _task_input(st) == {"marker": "in-the-input", "n": 1}
    assert host.get_status(iid)["input"] == {"marker": "in-the-input", "n": 1}  # devhost's own helper: parsed
    requests.post(f"{host.rpc_base_url}instances/{iid}/terminate?reason=done", timeout=10)


def test_status_times_are_whole_seconds_as_the_extension_writes_them(host: DevHost) -> None:
    """ext HttpApiHandler.cs ConvertFrom: ``CreatedTime = status.CreatedTime.ToString("s") + "Z"`` (and
    LastUpdatedTime), for one instance and for the list alike. devhost answered with microseconds, so tasks started
    in one second had an order on devhost that Azure does not give them (api.starters' task list sorts by it)."""
    iid = host.start_orchestration("sleepy")
    wait_until(lambda: running(host, iid), 20, "sleepy to run")
    one = requests.get(f"{host.rpc_base_url}instances/{iid}", timeout=10).json()
    listed = [i for i in requests.get(f"{host.rpc_base_url}instances", timeout=10).json() if i["instanceId"] == iid]
    for status in (one, *listed):
        for key in ("createdTime", "lastUpdatedTime"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status[key]), status
    assert listed and sdk(host, lambda c: c.get_status(iid)).created_time.microsecond == 0
    requests.post(f"{host.rpc_base_url}instances/{iid}/terminate?reason=done", timeout=10)


def test_the_public_webhook_needs_the_system_key_which_the_management_urls_carry(host: DevHost) -> None:
    """ext HttpApiHandler.cs CreateHttpManagementPayload appends the extension's system key (code=) to every
    management URL; host Security/Authentication/Keys/AuthenticationLevelHandler.cs: without it the webhook is 401
    (the master key works too; a function key does not)."""
    iid = host.start_orchestration("sleepy")
    urls = DurableOrchestrationClient(host.front.binding()).create_http_management_payload(iid)
    assert "code=" in urls["statusQueryGetUri"]
    assert requests.get(urls["statusQueryGetUri"], timeout=10).status_code in (200, 202)
    bare = f"{host.base_url}/runtime/webhooks/durabletask/instances/{iid}"
    assert requests.get(bare, timeout=10).status_code == 401
    assert requests.get(bare, headers={"x-functions-key": KEY}, timeout=10).status_code == 401
    assert requests.get(bare, headers={"x-functions-key": host.keys.master_key}, timeout=10).status_code in (200, 202)
    assert requests.post(urls["terminatePostUri"].replace("{text}", "bye"), timeout=10).status_code == 202


# ------------------------------------------------------------------ 4. paging of the instance list
def test_the_instance_list_pages_by_100_with_a_continuation_token_and_list_tasks_reads_every_page(
        storage_connection: str, unique_name: str) -> None:
    """ext HttpApiHandler.cs HandleGetStatusRequestAsync: ``top`` (default OrchestrationStatusQueryCondition.PageSize
    100) and the x-ms-continuation-token header ("" on the last page). The SDK 1.7.0's get_status_all reads one page
    only (azure-functions-durable-python DurableOrchestrationClient.get_status_all), so the app's list_tasks
    (api/starters.py) follows the token itself: every task is listed."""
    import function_app

    task_ids = sorted(f"task-{uuid.uuid4().hex[:20]}" for _ in range(230))
    host = DevHost(function_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig())
    now = h.ts(h.utcnow())
    for iid in task_ids + [f"{task_ids[0]}-shards-0000", "other-instance"]:
        host.store.put_instance(iid, Name="task_orchestrator", Status="Completed", Input="", InputIsNull=True,
                                Output="null", CustomStatus=json.dumps({"stage": "completed"}), Error="",
                                CreatedTime=now, UpdatedTime=now, ExecutionId="e", ParentInstanceId="")
    host.start()
    try:
        pages: list[list[str]] = []
        token = ""
        while True:
            r = requests.get(f"{host.rpc_base_url}instances/?instanceIdPrefix=task-", timeout=30,
                             headers={"x-ms-continuation-token": token} if token else {})
            assert r.status_code == 200 and "x-ms-continuation-token" in r.headers
            pages.append([s["instanceId"] for s in r.json()])
            token = r.headers["x-ms-continuation-token"]
            if not token:
                break
        assert [len(p) for p in pages] == [100, 100, 31]
        assert sorted(sum(pages, [])) == sorted(task_ids + [f"{task_ids[0]}-shards-0000"])
        small = requests.get(f"{host.rpc_base_url}instances/?top=7", timeout=30)
        assert len(small.json()) == 7 and small.headers["x-ms-continuation-token"]
        assert len(sdk(host, lambda c: c.get_status_all())) == 100  # the SDK stops after the first page

        listed = requests.get(f"{host.base_url}/api/tasks?limit=1000", headers={"x-functions-key": KEY}, timeout=60)
        assert listed.status_code == 200, listed.text
        assert listed.json()["total"] == 230
        assert sorted(t["id"] for t in listed.json()["tasks"]) == task_ids
    finally:
        host.stop()


# ------------------------------------------------------------------ 5. blob-trigger retries and poison queue
def _poison_messages(storage_connection: str, blob_name: str) -> list[dict[str, Any]]:
    from azure.storage.queue import QueueClient

    queue = QueueClient.from_connection_string(storage_connection, "webjobs-blobtrigger-poison")
    try:
        messages = queue.peek_messages(max_messages=32)
    except Exception:
        return []
    found = [json.loads(base64.b64decode(m.content)) for m in messages]
    return [m for m in found if m.get("BlobName") == blob_name]


@pytest.mark.parametrize("threshold", [None, 2])
def test_a_failing_blob_trigger_is_tried_five_times_then_poisoned(storage_connection: str, unique_name: str,
                                                                 threshold: int | None) -> None:
    """docs functions-bindings-storage-blob-trigger.md#poison-blobs: 5 tries in all by default, then a message on
    queue webjobs-blobtrigger-poison with FunctionId, BlobType, ContainerName, BlobName, ETag (blobs
    Listeners/BlobTriggerMessage.cs, with "Type": "BlobTrigger", base64 as blobs QueueServiceClientProvider.cs writes);
    the number of tries is host.json extensions.blobs.poisonBlobThreshold (docs functions-bindings-storage-blob.md)."""
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(storage_connection)
    try:
        blobs.create_container("poisoned")
    except Exception:
        pass
    name = f"{unique_name}.bin"
    etag = blobs.get_blob_client("poisoned", name).upload_blob(b"bad", overwrite=True)["etag"]
    config = HostConfig() if threshold is None else HostConfig.from_dict({"extensions": {"blobs": {
        "poisonBlobThreshold": threshold}}})
    host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.2,
                   function_key=KEY, host_config=config).start()
    try:
        found = wait_until(lambda: _poison_messages(storage_connection, name), 30, "the poison message")
        time.sleep(1.0)  # several more polls: the blob version is not tried again
        assert sample_app.POISON_TRIES[f"poisoned/{name}"] == (threshold or 5)
        assert found == [{"Type": "BlobTrigger", "FunctionId": "Host.Functions.on_poisoned", "BlobType": "BlockBlob",
                          "ContainerName": "poisoned", "BlobName": name, "ETag": etag}]
    finally:
        host.stop()
        blobs.get_blob_client("poisoned", name).delete_blob()


# ------------------------------------------------------------------ 6. functionTimeout
def test_an_activity_running_past_function_timeout_fails(storage_connection: str, unique_name: str) -> None:
    """host.json functionTimeout (docs functions-host-json.md#functiontimeout); the WebJobs SDK's FunctionExecutor
    fails the invocation with "Timeout value of <timespan> was exceeded by function: Functions.<name>" and the
    orchestrator sees the activity fail (azure-functions-durable-extension issue #1331 shows that message)."""
    host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig.from_dict({"functionTimeout": "00:00:02"})).start()
    try:
        slow = host.wait_for(host.start_orchestration("napping", 10), 30)
        quick = host.wait_for(host.start_orchestration("napping", 0), 30)
    finally:
        host.stop()
    assert slow["output"] == ("failed: Activity function 'nap' failed: Timeout value of 00:00:02 was exceeded by "
                              "function: Functions.nap"), slow  # TaskActivityShim wraps it (row 32)
    assert quick["output"] == "rested"
    assert parse_timespan("1.02:03:04.5") == 93784.5 and parse_timespan("-1") is None


def test_a_function_timeout_under_a_second_is_refused_as_the_host_refuses_it() -> None:
    """Functions host ``src/WebJobs.Script/Config/ScriptJobHostOptionsSetup.cs`` (``ValidateTimeoutValue``): a
    functionTimeout under ``MinFunctionTimeout`` (1 s), zero included, throws "FunctionTimeout must be greater than
    00:00:01 and less than <max>." while the host starts, so no function of the app runs; on Flex Consumption the
    max is ``TimeSpan.MaxValue`` and "-1" means no limit. devhost took "00:00:00" and timed out almost every
    activity and blob trigger at once instead (row 6)."""
    from devhost.hostjson import HostJsonError

    for bad in ("00:00:00", "00:00:00.5"):
        with pytest.raises(HostJsonError, match=r"FunctionTimeout must be greater than 00:00:01 and less than "
                                                r"10675199\.02:48:05\.4775807\."):
            HostConfig.from_dict({"functionTimeout": bad})
    assert HostConfig.from_dict({"functionTimeout": "00:00:01"}).function_timeout_s == 1.0
    assert HostConfig.from_dict({"functionTimeout": "-1"}).function_timeout_s is None


def test_durable_settings_the_extension_refuses_are_refused_though_devhost_does_not_apply_them() -> None:
    """Durable extension ``Options/DurableTaskOptions.cs`` and ``Options/AzureStorageOptions.cs`` ``Validate``: a
    maxConcurrentOrchestratorFunctions under 1 or a maxQueuePollingInterval of zero or less stops the extension at
    start-up (and with it every function); devhost ignored both keys, so such a host.json ran locally."""
    from devhost.hostjson import HostJsonError

    def durable(**settings: Any) -> dict[str, Any]:
        return {"extensions": {"durableTask": settings}}

    for bad in (0, -1, True, "8"):
        with pytest.raises(HostJsonError, match="MaxConcurrentOrchestratorFunctions must be a positive integer"):
            HostConfig.from_dict(durable(maxConcurrentOrchestratorFunctions=bad))
    for polling in ("00:00:00", "-1"):
        with pytest.raises(HostJsonError, match="MaxQueuePollingInterval must be non-negative"):
            HostConfig.from_dict(durable(storageProvider={"maxQueuePollingInterval": polling}))
    with pytest.raises(HostJsonError, match="maxQueuePollingInterval 'ten seconds' is not a TimeSpan"):
        HostConfig.from_dict(durable(storageProvider={"maxQueuePollingInterval": "ten seconds"}))
    HostConfig.from_dict(durable(maxConcurrentOrchestratorFunctions=8,
                                 storageProvider={"maxQueuePollingInterval": "00:00:10"}))
    HostConfig.load(Path(__file__).resolve().parents[2] / "host.json")


# ------------------------------------------------------------------ 25. activities at once: maxConcurrentActivityFunctions
def test_one_host_runs_as_many_activities_at_once_as_host_json_says(storage_connection: str,
                                                                    unique_name: str) -> None:
    """host.json extensions.durableTask.maxConcurrentActivityFunctions (durable-functions-host-json-settings.md)
    caps one host's concurrent activities; trapbatch's host.json says 8, which core/scratch.py's disk budget assumes.
    devhost ran 4 whatever host.json said."""
    from devhost.hostjson import HostJsonError

    repo = HostConfig.load(Path(__file__).resolve().parents[2] / "host.json")
    assert repo.max_concurrent_activities == 8
    for config, want in ((repo, 8), (HostConfig.from_dict({"extensions": {"durableTask": {
            "maxConcurrentActivityFunctions": 3}}}), 3), (HostConfig(), 4)):
        host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                       host_config=config)
        assert host.engine.pool._max_workers == want  # type: ignore[attr-defined]
    for bad in (0, "8", True, -1):
        with pytest.raises(HostJsonError):
            HostConfig.from_dict({"extensions": {"durableTask": {"maxConcurrentActivityFunctions": bad}}})


# ------------------------------------------------------------------ 7. non-determinism by name and kind
def _flip_after_first_step(host: DevHost, **change: str) -> dict[str, Any]:
    sample_app.NONDET_FLAG.update(value="a", activity="say_hello", kind="activity")
    iid = host.start_orchestration("nondet")
    wait_until(lambda: host.get_status(iid)["customStatus"] == "waiting", 20, "the first step to be done")
    sample_app.NONDET_FLAG.update(change)
    try:
        host.raise_event(iid, "Go")  # the next episode replays the first step with the changed code
        return host.wait_for(iid, 30)
    finally:
        sample_app.NONDET_FLAG.update(value="a", activity="say_hello", kind="activity")


def test_replay_is_checked_by_action_kind_and_name_only(host: DevHost) -> None:
    """dtfx DurableTask.Core/TaskOrchestrationContext.cs HandleTaskScheduledEvent: a history TaskScheduled event needs
    a replayed ScheduleTask action with the same name (ordinal, case-insensitive) at its sequence number; inputs are
    not compared. The message is NonDeterministicOrchestrationException's (dtfx Exceptions/)."""
    renamed = _flip_after_first_step(host, activity="Double")
    assert renamed["runtimeStatus"] == "Failed"
    assert renamed["output"] == (
        "Non-Deterministic workflow detected: A previous execution of this orchestration scheduled an activity task "
        "with sequence number 0 named 'say_hello', but the current orchestration replay instead scheduled an activity "
        "task named 'Double' with this sequence number.  Was a change made to the orchestrator code after this "
        "instance had already started running?")
    other_kind = _flip_after_first_step(host, kind="timer")
    assert other_kind["runtimeStatus"] == "Failed"
    assert "instead produced a CreateTimerOrchestratorAction action" in other_kind["output"]
    same = _flip_after_first_step(host, value="b", activity="SAY_HELLO")  # new input, other case: accepted
    assert same["runtimeStatus"] == "Completed" and same["output"] == "Hello a!", same


# ------------------------------------------------------------------ 8. custom status limit
def test_a_custom_status_over_16_kb_fails_the_orchestration(host: DevHost) -> None:
    """ext ContextImplementations/DurableOrchestrationContext.cs SetCustomStatus: MaxCustomStatusPayloadSizeInKB = 16,
    checked by ext MessagePayloadDataConverter.Serialize as (int)(UTF-16 bytes / 1024) > 16; the out-of-proc shim
    sets it before replaying actions and ext Listener/TaskOrchestrationShim.cs fails the orchestration with
    "Orchestrator function '<name>' failed: <message>". A JSON string of 8,701 characters (17,406 bytes) passes."""
    fits = host.wait_for(host.start_orchestration("chatty", 8701), 30)
    assert fits["runtimeStatus"] == "Completed" and len(fits["customStatus"]) == 8701
    too_big = host.wait_for(host.start_orchestration("chatty", 8702), 30)
    assert too_big["runtimeStatus"] == "Failed"
    assert too_big["output"] == ("Orchestrator function 'chatty' failed: The UTF-16 size of the JSON-serialized payload "
                                 "must not exceed 16 KB. The current payload size is 17 KB.")


def test_a_failing_episodes_custom_status_is_the_failed_instances(host: DevHost) -> None:
    """dtfx DurableTask.Core/TaskOrchestrationExecutor.cs ExecuteCore: after FailOrchestration it returns
    ``CustomStatus = this.taskOrchestration.GetStatus()``, and TaskOrchestrationDispatcher.cs stores it
    (``runtimeState.Status = result?.CustomStatus``) with the failure; the out-of-proc shim sets it before it throws
    (row 8). devhost kept the status of the episode before, so a failed task showed its "detecting" status on
    devhost, without what its failure status says (shards given up, what to do, cost)."""
    failed = host.wait_for(host.start_orchestration("fails_saying_why"), 30)
    assert failed["runtimeStatus"] == "Failed" and "it failed" in failed["output"], failed
    assert failed["customStatus"] == {"stage": "failed", "hint": "do this next"}, failed


def test_a_failing_episode_that_sets_no_status_or_one_over_16_kb_leaves_none(host: DevHost) -> None:
    """The failing episode's status is ``GetStatus()`` of the shim's fresh context (ext
    Listener/OutOfProcOrchestrationShim.cs ``ScheduleDurableTaskEvents``: set only when the replay returned one; ext
    ContextImplementations/DurableOrchestrationContext.cs ``SetCustomStatus`` throws over 16 KB before it keeps
    one), stored by dtfx TaskOrchestrationDispatcher.cs (``runtimeState.Status = result?.CustomStatus``) and written
    ``Status ?? "null"`` (DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs ``UpdateStateAsync``): none.
    Only a generation's first episode after ``continue_as_new`` keeps the carried status when it fails
    (``runtimeState.Status ?? carryOverStatus``, row 33). devhost kept the previous episode's status."""
    too_big = host.wait_for(host.start_orchestration("outgrows_its_status"), 30)
    assert too_big["runtimeStatus"] == "Failed" and "16 KB" in too_big["output"], too_big
    assert too_big["customStatus"] is None, too_big
    gate = "fails-" + uuid.uuid4().hex[:8]
    sample_app.gate(gate + "-a").set()
    later = host.wait_for(host.start_orchestration("status_carried_one_episode",
                                                   {"gen": 0, "gate": gate, "fail": "later"}), 30)
    assert later["runtimeStatus"] == "Failed" and "failed later" in later["output"], later
    assert later["customStatus"] is None, later
    first = host.wait_for(host.start_orchestration("status_carried_one_episode",
                                                   {"gen": 0, "gate": gate, "fail": "first"}), 30)
    assert first["runtimeStatus"] == "Failed" and "failed at once" in first["output"], first
    assert first["customStatus"] == {"gen": 0}, first


# ------------------------------------------------------------------ 9. instance id rules
@pytest.mark.parametrize("bad", ["@entity", "back\\slash", "ctl\x01char", "del\x7f", "x" * 257, "a/b"])
def test_start_new_with_an_invalid_instance_id_raises(host: DevHost, bad: str) -> None:
    """ext ContextImplementations/DurableClient.cs StartNewAsync: no leading '@', none of / \\ # ? or control
    characters, at most MaxInstanceIdLength = 256 characters (ArgumentException: HttpApiHandler answers 400). Through
    the SDK the id is a URL path segment: a '/' makes another route (404), which the SDK raises too (a tab, CR or LF
    is dropped from a URL by the SDK's HTTP client before either host sees it)."""
    with pytest.raises(Exception):
        sdk(host, lambda c: c.start_new("sleepy", bad))
    for direct in ("a?b", "a#b", "nul\x00", "\x85next-line"):
        with pytest.raises(InvalidInstanceId):
            host.engine.start_orchestration("sleepy", None, direct)
    longest = "y" * 256
    assert sdk(host, lambda c: c.start_new("sleepy", longest)) == longest


# ------------------------------------------------------------------ 10. function keys
def test_function_level_routes_need_a_key_in_the_header_or_code(host: DevHost, monkeypatch: pytest.MonkeyPatch,
                                                                storage_connection: str) -> None:
    """host Security/Authentication/Keys/AuthenticationLevelHandler.cs: the key is the x-functions-key header, else
    the ``code`` query parameter (the header wins); FUNCTION routes take a function/host key or the master key, ADMIN
    routes the master key only, ANONYMOUS routes none; otherwise 401."""
    url = f"{host.base_url}/api/secure/echo"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401
    assert requests.get(url, headers={"x-functions-key": KEY}, timeout=10).text == "function-level ok"
    assert requests.get(url, params={"code": KEY}, timeout=10).status_code == 200
    assert requests.get(url, params={"CODE": KEY}, timeout=10).status_code == 200  # ASP.NET query names ignore case
    assert requests.get(url, params={"code": KEY}, headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401
    assert requests.get(url, headers={"x-functions-key": host.keys.master_key}, timeout=10).status_code == 200
    assert requests.get(url, headers={"x-functions-key": host.keys.system_key}, timeout=10).status_code == 401
    admin = f"{host.base_url}/api/secure/admin"
    assert requests.get(admin, headers={"x-functions-key": KEY}, timeout=10).status_code == 401
    assert requests.get(admin, headers={"x-functions-key": host.keys.master_key}, timeout=10).status_code == 200
    assert requests.get(f"{host.base_url}/api/status/nope", timeout=10).status_code == 200  # anonymous route
    monkeypatch.setenv(FUNCTION_KEY_ENV, "from-the-environment")
    assert DevHost(sample_app.app, storage_connection, task_hub="keys" + uuid.uuid4().hex[:8], port=0,
                   host_config=HostConfig()).function_key == "from-the-environment"


# ------------------------------------------------------------------ 11. large payloads
def test_inputs_and_outputs_over_64_kb_go_to_blobs_through_continue_as_new(host: DevHost) -> None:
    """docs durable/durable-functions-azure-storage-provider.md: payloads over the 45 KB threshold are kept in blobs
    and referenced from the tables, so any size works; the Table service refuses a string property over 64 KiB. A
    continue_as_new with a > 64 KB input used to hang devhost (its instance-row write failed after the history was
    saved)."""
    pad = "p" * 70_000
    iid = host.start_orchestration("grower", {"n": 0, "pad": pad})
    st = host.wait_for(iid, 30)
    assert st["runtimeStatus"] == "Completed", st
    assert st["output"] == {"n": 1, "pad": pad} and st["input"] == {"n": 1, "pad": pad}
    entity = dict(host.store.instances.get_entity("i", iid))
    assert entity["InputBlobName"] and entity["OutputBlobName"] and len(entity["Input"]) < INLINE_LIMIT
    over_http = requests.get(f"{host.rpc_base_url}instances/{iid}", timeout=30).json()
    assert over_http["output"]["pad"] == pad


# ------------------------------------------------------------------ 12. devhost's own work off the event loop
def test_a_slow_table_scan_or_sync_function_does_not_stall_other_requests(host: DevHost) -> None:
    """devhost's own storage work runs in a thread pool, never on the HTTP event loop, and sync HTTP functions run in
    a pool as the Python worker runs them (its dispatcher hands non-async functions to a ThreadPoolExecutor)."""
    entered, release = threading.Event(), threading.Event()
    original = host.store.query_instances

    def slow_scan(**kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return original(**kwargs)

    host.store.query_instances = slow_scan  # type: ignore[method-assign]
    sample_app.SLOW_GATE.clear()
    with ThreadPoolExecutor(2) as pool:
        listing = pool.submit(requests.get, f"{host.rpc_base_url}instances/", timeout=60)
        blocked_sync = pool.submit(requests.get, f"{host.base_url}/api/slow-sync", timeout=60)
        try:
            assert entered.wait(20), "the slow scan never started"
            time.sleep(0.2)  # the sync function is parked in the pool by now, or soon
            quick = requests.get(f"{host.rpc_base_url}instances/nope", timeout=10)  # answered while both block
            assert quick.status_code == 404
            assert requests.get(f"{host.base_url}/api/status/nope", timeout=10).status_code == 200
            assert not listing.done() and not blocked_sync.done()
        finally:
            release.set()
            sample_app.SLOW_GATE.set()
        assert listing.result().status_code == 200
        assert blocked_sync.result().text == "released"


# ------------------------------------------------------------------ 22. an instance's local disk
def test_activities_writing_past_the_instances_temporary_storage_fail_with_no_space_left(
        storage_connection: str, unique_name: str) -> None:
    """MicrosoftDocs/azure-docs includes/functions-limits.md, "Storage (temporary)": a Flex Consumption instance has
    0.8 GB for everything it runs; past it a write fails (ENOSPC). devhost runs all activities in one process, as one
    instance, and caps their temporary files together (scaled down here: 250 kB): two activities of 100 kB at once
    fit, two of 200 kB do not, and the failure says why. The cap's default is the platform's."""
    import inspect

    from core.scratch import FLEX_TEMPORARY_STORAGE_BYTES as APP_LIMIT
    from devhost.scratch_disk import FLEX_TEMPORARY_STORAGE_BYTES

    assert inspect.signature(DevHost).parameters["scratch_cap"].default == FLEX_TEMPORARY_STORAGE_BYTES == APP_LIMIT
    h_ = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.3,
                 function_key=KEY, host_config=HostConfig(), scratch_cap=250 * 1024)
    h_.start()
    try:
        sample_app.SPOOL_BARRIER.reset()
        fits = h_.wait_for(h_.start_orchestration("spooler", 100 * 1024), 180)
        assert fits["runtimeStatus"] == "Completed" and fits["output"] == 200 * 1024
        sample_app.SPOOL_BARRIER.reset()
        full = h_.wait_for(h_.start_orchestration("spooler", 200 * 1024), 180)
        assert full["runtimeStatus"] == "Failed", full
        assert "No space left on device" in str(full["output"]) and "core/scratch.py" in str(full["output"])
        assert h_.scratch.held() == 0  # the failed activities' files went with them
    finally:
        h_.stop()
    import tempfile

    assert tempfile.TemporaryFile.__module__ == "tempfile"  # devhost stopped: the process's factory is its own again


# ------------------------------------------------------------------ 26. open tasks hold an instance Running
def _status(host: DevHost, iid: str) -> dict[str, Any]:
    return host.get_status(iid) or {}


def test_an_orchestrator_that_returns_or_raises_with_tasks_open_stays_running_until_they_end(host: DevHost) -> None:
    """dtfx DurableTask.Core/TaskOrchestrationExecutor.cs: "check if workflow is completed after this replay:
    if (!this.context.HasOpenTasks)" guards CompleteOrchestration and FailOrchestration alike (ContinueAsNew completes
    through CompleteOrchestration); TaskOrchestrationContext adds scheduled activities, sub-orchestrations and timers
    to its open tasks and removes a timer only when it fires or is cancelled. docs durable/durable-functions-timers.md:
    "The Durable Task Framework doesn't change an orchestration's status to "Completed" until all outstanding tasks,
    including durable timer tasks, are either completed or canceled." The out-of-process shim schedules the actions an
    orchestrator returned before it raised, then fails it (ext OutOfProcOrchestrationShim.cs)."""
    cancelled = host.start_orchestration("leaves_open", {"kind": "cancelled timer"})
    assert host.wait_for(cancelled, 60)["output"] == "done"

    open_timer = host.start_orchestration("leaves_open", {"kind": "timer"})
    wait_until(lambda: _status(host, open_timer).get("customStatus") == "returned", 60, "the orchestrator to return")
    assert _status(host, open_timer)["runtimeStatus"] == "Running"  # the losing timer: an hour out, not cancelled
    host.terminate(open_timer, "done looking")

    for kind in ("failed task_all", "continue"):
        gate_name = f"{kind}-{uuid.uuid4().hex[:6]}"
        iid = host.start_orchestration("leaves_open", {"kind": kind, "gate": gate_name})
        wait_until(lambda: _status(host, iid).get("customStatus") == "past the failure", 60,
                   "the orchestrator to see the failure")
        held = _status(host, iid)
        assert held["runtimeStatus"] == "Running" and held["input"]["kind"] == kind, held  # "gated" is still open
        sample_app.gate(gate_name).set()
        done = host.wait_for(iid, 60)
        if kind == "continue":  # the new execution starts only now, and runs to its end
            assert (done["runtimeStatus"], done["output"], done["input"]) == ("Completed", "done",
                                                                               {"kind": "cancelled timer"}), done
        else:
            assert done["runtimeStatus"] == "Failed" and "activity exploded for Boom" in done["output"], done


def test_a_timer_past_six_days_is_split_as_the_extension_does_and_its_cancel_leaves_it_open(host: DevHost) -> None:
    """ext Bindings/OrchestrationTriggerAttributeBindingProvider.cs hands a Python orchestrator
    ``maximumShortTimerDuration`` and ``longRunningTimerIntervalDuration`` (Azure Storage: 6 and 3 days) with replay
    schema V3; the SDK (1.7, DurableOrchestrationContext.create_timer) then makes a timer more than 6 days out a
    ``LongTimerTask`` of 3-day timers, whose ``cancel()`` marks only its own action, never sent, so the 3-day timer
    stays open (models/Task.py; azure-functions-durable-python #573, open) and the instance Running until it fires.
    Why trapbatch never waits more than six days on one timer (core.settings ``_confirm_timeout_s``)."""
    six = host.start_orchestration("approval_days", 6)
    seven = host.start_orchestration("approval_days", 7)
    for iid in (six, seven):
        wait_until(lambda: _status(host, iid).get("runtimeStatus") == "Running", 60, "the instance to start")
        host.raise_event(iid, "Approve", "yes")
    assert host.wait_for(six, 60)["output"] == {"approved": "yes"}
    wait_until(lambda: _status(host, seven).get("customStatus") == "approved", 60, "the approval to be replayed")
    assert _status(host, seven)["runtimeStatus"] == "Running"
    doc = host.engine.store.load_history(seven)
    assert doc is not None
    started = next(e["Timestamp"] for e in doc["history"] if e["EventType"] == h.ORCHESTRATOR_STARTED)
    [fire_at] = [e["FireAt"] for e in doc["history"] if e["EventType"] == h.TIMER_CREATED]

    def moment(text: str) -> dt.datetime:
        return dt.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")

    assert abs((moment(fire_at) - moment(started)) - dt.timedelta(days=3)) < dt.timedelta(minutes=5)
    host.terminate(seven, "done looking")


def test_an_action_after_a_failed_task_all_is_scheduled_once_its_other_members_end(host: DevHost) -> None:
    """ext OutOfProcOrchestrationShim.cs ``ProcessAsyncActionsV2``: the shim issues an orchestrator's actions in
    order and awaits each; a WhenAll is .NET's Task.WhenAll, which ends when every member has. The Python SDK's
    task_all fails fast, so the orchestrator's ``except`` runs at once, but its next activity reaches the task hub
    only when the fan-out's other member has ended."""
    gate_name = "fan-" + uuid.uuid4().hex[:6]
    iid = host.start_orchestration("after_failed_fan_out", gate_name)
    wait_until(lambda: _status(host, iid).get("customStatus") == "past the failure", 60,
               "the orchestrator to see the failure")

    def scheduled() -> list[Any]:
        doc = host.engine.store.load_history(iid)
        return [e.get("Input") for e in (doc or {}).get("history", []) if e["EventType"] == h.TASK_SCHEDULED]

    assert '"after"' not in scheduled() and _status(host, iid)["runtimeStatus"] == "Running"
    sample_app.gate(gate_name).set()
    done = host.wait_for(iid, 60)
    assert (done["runtimeStatus"], done["output"]) == ("Completed", "Hello after!"), done
    assert '"after"' in scheduled()


# ------------------------------------------------------------------ 27. the task hub's name
ROOT = Path(__file__).resolve().parents[2]
REFUSED_HUBS = ("trap-batch", "trap_batch", "1trapbatch", "tb", "t" * 51, "trapbatch!", "tråpbatch", "", "t" * 50)


def test_devhost_refuses_task_hub_names_the_extension_refuses(storage_connection: str) -> None:
    """ext ``AzureStorageOptions.ValidateHubName`` (blob, container, table and queue name rules, then at most 50
    characters), called from ``DurableTaskOptions.Validate`` for every configured name
    (``AzureStorageDurabilityProviderFactory.EnsureInitialized`` sanitizes only the default one): a refused name stops
    the extension's start, and every function with it. devhost made such a name table-safe and served it."""
    from devhost.hostjson import HostJsonError

    for bad in REFUSED_HUBS:
        with pytest.raises(HostJsonError, match="Task hub name|non-empty HubName") as refused:
            DevHost(sample_app.app, storage_connection, task_hub=bad, port=0, function_key=KEY,
                    host_config=HostConfig())
        assert "TRAPBATCH_TASK_HUB" in str(refused.value)
    # 50 passes the extension's own check, then DTFx's "<hub>-largemessages" container name (at most 63) fails
    for good in ("abc", "t" * 49, "Trapbatch2026"):
        host = DevHost(sample_app.app, storage_connection, task_hub=good, port=0, function_key=KEY,
                       host_config=HostConfig())
        assert host.hub == good and host.store.hub == good


def test_the_task_hub_comes_from_host_json_and_its_app_setting_as_the_extension_resolves_it() -> None:
    """ext ``DurableTaskExtension.Initialize``: ``nameResolver.TryResolveWholeString(Options.HubName)``; a name that
    does not resolve stays as written and then fails validation. trapbatch's host.json names
    ``%TRAPBATCH_TASK_HUB%``, and what the deployment and the example settings set it to must pass."""
    from devhost.hostjson import HostJsonError, check_task_hub_name

    repo = HostConfig.load(ROOT / "host.json")
    assert repo.hub_name == "%TRAPBATCH_TASK_HUB%"
    assert repo.task_hub({"TRAPBATCH_TASK_HUB": "trapbatch"}) == "trapbatch"
    with pytest.raises(HostJsonError, match="TRAPBATCH_TASK_HUB is not set"):
        repo.task_hub({})
    with pytest.raises(HostJsonError, match="Task hub name 'trap-batch'"):
        repo.task_hub({"TRAPBATCH_TASK_HUB": "trap-batch"})
    assert HostConfig.from_dict({"extensions": {"durableTask": {"hubName": "Fixed1"}}}).task_hub({}) == "Fixed1"
    assert HostConfig().task_hub({"TRAPBATCH_TASK_HUB": "ignored"}) == "devhost"  # host.json names none
    [deployed] = re.findall(r"TRAPBATCH_TASK_HUB: '([^']*)'", (ROOT / "infra" / "main.bicep").read_text())
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]["TRAPBATCH_TASK_HUB"]
    for name in (deployed, example):
        assert check_task_hub_name(name) == name


def test_python_m_devhost_refuses_to_start_without_the_task_hubs_app_setting(tmp_path: Path) -> None:
    """As the Functions host would not start the extension with ``%TRAPBATCH_TASK_HUB%`` unresolved."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRAPBATCH_TASK_HUB"}
    env["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
    proc = subprocess.run([sys.executable, "-m", "devhost", "--app", "tests.devhost.sample_app:app", "--port", "0",
                           "--key-file", str(tmp_path / "key")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "app setting TRAPBATCH_TASK_HUB is not set" in proc.stderr and "--hub" in proc.stderr


# ------------------------------------------------------------------ 28. an HTTP trigger's answer within 230 s
def test_an_http_trigger_that_answers_after_the_load_balancers_limit_gets_its_caller_a_502(
        storage_connection: str, unique_name: str) -> None:
    """MicrosoftDocs/azure-docs includes/functions-timeout-duration.md: "Regardless of the function app timeout
    setting, 230 seconds is the maximum amount of time that an HTTP triggered function can take to respond to a
    request" (the load balancer's idle timeout; the caller gets a 502, the function runs on). devhost waited for any
    answer, however late. The limit is scaled down here; its default is the platform's."""
    from devhost.http_server import HTTP_RESPONSE_LIMIT_S

    assert HTTP_RESPONSE_LIMIT_S == 230.0
    assert DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig()).front.response_limit_s == 230.0
    sample_app.SLOW_GATE.clear()
    host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig(), http_response_limit_s=1.0).start()
    try:
        began = time.monotonic()
        late = requests.get(f"{host.base_url}/api/slow-sync", timeout=60)
        waited = time.monotonic() - began
        assert late.status_code == 502 and "230" not in late.text and "did not answer within 1 s" in late.text
        assert waited < 30  # answered at the limit, not when the function ended (it is still blocked)
        sample_app.SLOW_GATE.set()  # the function runs on to its end; a call within the limit is answered
        assert requests.get(f"{host.base_url}/api/slow-sync", timeout=60).text == "released"
        # a function that itself raises TimeoutError at once failed: the host's 500, not the load balancer's 502
        assert requests.get(f"{host.base_url}/api/raises-timeout", timeout=60).status_code == 500
    finally:
        sample_app.SLOW_GATE.set()
        host.stop()


def test_an_event_raised_before_the_orchestrator_waits_for_it_is_kept_for_the_wait(host: DevHost) -> None:
    """dtfx DurableTask.Core/TaskOrchestrationDispatcher.cs appends an EventRaised message to the instance's history
    whether or not the orchestrator waits for it yet; the out-of-process shim hands the whole history to the Python
    SDK, whose TaskOrchestrationExecutor.set_task_value keeps an event no open task matches in
    ``context.deferred_tasks`` and DurableOrchestrationContext applies it when the wait is created (sdk 1.7
    models/TaskOrchestrationExecutor.py, models/DurableOrchestrationContext.py ``_add_to_open_tasks``). trapbatch's
    cancel (api/starters.py ``cancel_task``) raises its event while a task still lists its images, before the task
    waits for it; devhost must keep the event in the history as the extension does, not drop it for want of a
    waiter."""
    gate_name = f"busy-{uuid.uuid4().hex[:6]}"
    iid = host.start_orchestration("busy_then_approval", gate_name)
    wait_until(lambda: running(host, iid), 60, "the instance to start its activity")
    host.raise_event(iid, "Approve", {"by": "early caller"})
    wait_until(lambda: any(e["EventType"] == h.EVENT_RAISED for e in _history(host, iid)), 60,
               "the event to reach the history")
    assert _status(host, iid).get("customStatus") != "waiting"  # raised while the activity still ran
    sample_app.gate(gate_name).set()
    done = host.wait_for(iid, 60)
    assert (done["runtimeStatus"], done["output"]) == ("Completed", {"approved": {"by": "early caller"}}), done


# ------------------------------------------------------------------ 36. an event's data raised by the SDK client
def test_an_event_raised_through_the_sdk_client_reaches_the_orchestrator_as_the_json_text_the_client_posted(
        host: DevHost) -> None:
    """sdk 1.7 ``DurableOrchestrationClient.raise_event`` posts ``json.dumps(event_data)`` through
    ``http_utils.post_async_request(url, data)`` (``session.post(url, json=data)``): the body is a JSON string holding
    the data's JSON. ext ``HttpApiHandler.HandleRaiseEventRequestAsync`` reads the body with
    ``MessagePayloadDataConverter.ConvertToJToken`` (one JSON token: that string) and ``DurableClient.RaiseEventAsync``
    stores it serialized (``MessagePayloadDataConverter.Serialize``: ``JToken.ToString(Formatting.None)``); the
    history hands it to the SDK, whose ``set_task_value`` parses it once. So the orchestrator gets the JSON text, not
    the object (azure-functions-durable-python#295: a raised string arrives with its quotes). devhost unwrapped one
    layer, so an orchestrator reading ``event.result["key"]`` passed here and failed on Azure (the preview expiry's
    move did: orchestrations/expiry.py ``moved_to``)."""
    for data, arrives in (({"by": "alice", "n": 1}, '{"by": "alice", "n": 1}'), ("yes", '"yes"'), (None, "null")):
        iid = host.start_orchestration("approval", 60)
        wait_until(lambda: running(host, iid), 20, "approval to wait")
        sdk(host, lambda c: c.raise_event(iid, "Approve", data))
        done = host.wait_for(iid, 30)
        assert done["output"] == {"approved": arrives}, (data, done)
        raised = next(e for e in _history(host, iid) if e["EventType"] == h.EVENT_RAISED)
        assert json.loads(raised["Input"]) == json.dumps(data)  # the JSON string the client posted, as stored
    # a body that is not JSON: 400 "Invalid JSON content" (JsonReaderException), nothing raised
    iid = host.start_orchestration("approval", 60)
    wait_until(lambda: running(host, iid), 20, "approval to wait")
    for body in ("{not json", ""):
        r = requests.post(f"{host.rpc_base_url}instances/{iid}/raiseEvent/Approve", data=body, timeout=10,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["Message"] == "Invalid JSON content", r.text
    host.terminate(iid, "done")


def _history(host: DevHost, iid: str) -> list[dict[str, Any]]:
    doc = host.engine.store.load_history(iid)
    return list(doc["history"]) if doc else []


# ------------------------------------------------------------------ 32. a failed activity's reason
def test_a_failed_python_activity_reaches_the_orchestrator_worded_as_the_extension_words_it() -> None:
    """azure-functions-python-worker dispatcher.py reports ``f"{type(exc).__name__}: {exc}"``; the host wraps it as
    ``Result: Failure\nException: <message>\nStack: ...`` (RpcException.cs); the extension's
    OutOfProcExceptionHelpers takes the text after ``"\nException:"`` (its leading space included) up to
    ``"\nStack:"``, and TaskActivityShim fails the task with ``Activity function '<name>' failed: <that>``. A
    functionTimeout is not the worker's: its message follows one space. The app shows people the message alone
    (core.errors.failure_message)."""
    from core.errors import failure_message

    rpc = "Result: Failure\nException: ValueError: listing failed: 503\nStack: Traceback ..."
    extracted = rpc[rpc.index("\nException:") + len("\nException:"):rpc.index("\nStack:")]
    assert h.activity_failure_reason("list_part", ValueError("listing failed: 503")) == \
        f"Activity function 'list_part' failed: {extracted}" == \
        "Activity function 'list_part' failed:  ValueError: listing failed: 503"
    timeout = h.activity_failure_reason("nap", TimeoutError("Timeout value of 00:10:00 was exceeded by function: "
                                                            "Functions.nap"), timed_out=True)
    assert timeout == "Activity function 'nap' failed: Timeout value of 00:10:00 was exceeded by function: Functions.nap"
    assert failure_message("Orchestrator function 'task_orchestrator' failed: "
                           + h.activity_failure_reason("list_part", ValueError("listing failed: 503"))) == \
        "listing failed: 503"
    assert failure_message(timeout) == "Timeout value of 00:10:00 was exceeded by function: Functions.nap"
    assert failure_message(h.activity_failure_reason("x", KeyError()) + " \n tb") == "KeyError"  # no message: the type
    assert failure_message(h.activity_failure_reason("x", ValueError("site: a: b"))) == "site: a: b"
    assert failure_message("Orchestrator function 'a' failed: Note: foo") == "Note: foo"


# ------------------------------------------------------------------ 33. custom status across continue_as_new
def test_a_generation_that_sets_no_custom_status_yet_keeps_the_last_one_in_its_first_episode(
        storage_connection: str, unique_name: str, tmp_path: Any, monkeypatch: Any) -> None:
    """dtfx TaskOrchestrationDispatcher runs a continued generation's first episode in the same work item and keeps
    the runtime state's Status unless that episode sets one; AzureTableTrackingStore writes CustomStatus from it.
    devhost cleared it, so a shard group going on as new showed no progress until its next status (the task's
    images_done dipped). Only that first episode keeps it:
    ``test_only_the_first_episode_of_a_generation_gone_on_as_new_keeps_the_status_carried_over``."""
    monkeypatch.setenv("SAMPLE_SLOW_S", "4")
    host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig()).start()
    try:
        iid = host.start_orchestration("status_across_generations", {"gen": 0, "path": str(tmp_path / "m")})
        second = wait_until(lambda: (lambda st: st if st and (st.get("input") or {}).get("gen") == 1 else None)(
            host.engine.status(iid)), 30, "the second generation")
        assert second["customStatus"] == {"gen": 0} and second["runtimeStatus"] == "Running", second
        done = host.wait_for(iid, 30)
    finally:
        host.stop()
    assert done["customStatus"] == {"gen": 1} and done["output"] == "done"


def test_only_the_first_episode_of_a_generation_gone_on_as_new_keeps_the_status_carried_over(host: DevHost) -> None:
    """dtfx src/DurableTask.Core/TaskOrchestrationDispatcher.cs ``OnProcessWorkItemAsync``: the work item that goes on
    as new runs the new generation's first episode too (the ``do ... while (continuedAsNew)`` loop), keeps the status
    the old generation set (``carryOverStatus``) and stores ``runtimeState.Status ?? carryOverStatus``. A later work
    item has no carry: ``ExecuteOrchestrationAsync`` stores ``runtimeState.Status = result?.CustomStatus``, null when
    the replay set none (ext Listener/OutOfProcOrchestrationShim.cs ``ScheduleDurableTaskEvents`` sets a status only
    when the SDK returned one; sdk 1.7 ``OrchestratorState.to_json`` leaves a falsy one out), and
    src/DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs ``UpdateStateAsync`` writes
    ``newRuntimeState.Status ?? "null"``. devhost kept the carried status in every episode of the new generation."""
    gate = "carried-" + uuid.uuid4().hex[:8]
    iid = host.start_orchestration("status_carried_one_episode", {"gen": 0, "gate": gate})
    try:
        assert sample_app.gate(gate + "-a:started").wait(60), "the second generation's first activity never ran"
        first = host.engine.status(iid)
        assert first["customStatus"] == {"gen": 0} and first["runtimeStatus"] == "Running", first
        sample_app.gate(gate + "-a").set()
        assert sample_app.gate(gate + "-b:started").wait(60), "the second generation's second activity never ran"
        later = sdk(host, lambda c: c.get_status(iid))
        assert later.runtime_status.value == "Running" and later.custom_status is None, later.to_json()
    finally:
        sample_app.gate(gate + "-a").set()
        sample_app.gate(gate + "-b").set()
    done = host.wait_for(iid, 30)
    assert done["customStatus"] == {"gen": 1} and done["output"] == "done", done


def test_a_status_is_carried_over_one_continue_as_new_only(host: DevHost) -> None:
    """dtfx src/DurableTask.Core/TaskOrchestrationDispatcher.cs ``OnProcessWorkItemAsync``: ``carryOverStatus`` is
    the status the episode that went on as new returned (``carryOverStatus =
    workItem.OrchestrationRuntimeState.Status``, set by ``ExecuteOrchestrationAsync`` to ``result?.CustomStatus``),
    not what was carried into that episode's own generation: each generation's first episode runs
    ``ExecuteOrchestrationAsync`` again, which overwrites ``runtimeState.Status``, and the work item stores
    ``runtimeState.Status ?? carryOverStatus``. So a generation that
    goes on as new in its first episode without setting a status carries none on: the third generation here shows
    none, as its own replay set none. devhost carried the first generation's status on through every generation
    that set none in its first episode."""
    iid = host.start_orchestration("status_then_waits", "continued twice")
    wait_until(lambda: any(e["EventType"] == h.TIMER_CREATED
                           for e in (host.engine.store.load_history(iid) or {}).get("history", [])
                           ) and host.engine.status(iid)["input"] == "second", 30, "the third generation's timer")
    st = sdk(host, lambda c: c.get_status(iid))
    assert st.runtime_status.value == "Running" and st.custom_status is None, st.to_json()
    host.terminate(iid, "done")


def test_a_generation_gone_on_as_new_begins_with_a_completed_start_episode(storage_connection: str,
                                                                          unique_name: str, tmp_path: Any) -> None:
    """dtfx TaskOrchestrationDispatcher (the continuedAsNew branch): the new runtime state is OrchestratorStarted,
    the continue-as-new ExecutionStarted, then OrchestratorCompleted, and the generation's first episode appends to
    that; a fresh start has no OrchestratorCompleted before its first actions. devhost began a continued generation
    like a fresh one, so the histories it recorded (tests/orchestrations/histories) were not Azure's shape."""
    host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig()).start()
    try:
        iid = host.start_orchestration("status_across_generations", {"gen": 0, "path": str(tmp_path / "m")})
        assert host.wait_for(iid, 30)["output"] == "done"
        continued = [e["EventType"] for e in host.engine.store.load_history(iid)["history"]]
        fresh = host.start_orchestration("sleepy")
        wait_until(lambda: running(host, fresh), 20, "sleepy to run")
        started = [e["EventType"] for e in host.engine.store.load_history(fresh)["history"]]
        host.engine.terminate(fresh, "done")
    finally:
        host.stop()
    assert continued[:4] == [h.ORCHESTRATOR_STARTED, h.EXECUTION_STARTED, h.ORCHESTRATOR_COMPLETED,
                             h.TASK_SCHEDULED], continued
    assert continued[-1] == h.EXECUTION_COMPLETED and continued.count(h.EXECUTION_STARTED) == 1
    assert started[:3] == [h.ORCHESTRATOR_STARTED, h.EXECUTION_STARTED, h.TIMER_CREATED], started


# ------------------------------------------------------------------ 39. the status's history
def test_show_history_answers_the_extensions_history_and_the_sdk_client_reads_it(host: DevHost) -> None:
    """ext ``DurableClient.GetDurableOrchestrationStatusAsync``: ``historyEvents`` with event names, no
    ``OrchestratorStarted``/``Completed``, each ``TaskScheduled``/``SubOrchestrationInstanceCreated`` folded into its
    completion (``FunctionName``, ``ScheduledTime``), ``Result`` only with showHistoryOutput, no ``EventId``/
    ``IsPlayed``; ``StatusResponsePayload`` omits ``historyEvents`` without showHistory. devhost answered its own
    replay history (integer ``EventType``, ``IsPlayed``, showHistoryOutput ignored). The pure conversion is tested
    event by event in test_status_history.py. sdk 1.7 ``DurableOrchestrationStatus(**json)`` keeps the list as the
    attribute ``historyEvents`` (its ``history`` property stays None: the constructor's parameter is ``history``)."""
    iid = host.start_orchestration("features")
    assert host.wait_for(iid, 30)["runtimeStatus"] == "Completed"
    st = sdk(host, lambda c: c.get_status(iid, show_history=True, show_history_output=True, show_input=True))
    events = st.historyEvents
    assert [e["EventType"] for e in events] == [
        "ExecutionStarted", "TimerCreated", "TimerFired", "TaskFailed", "SubOrchestrationInstanceCompleted",
        "SubOrchestrationInstanceCompleted", "ExecutionCompleted"], events
    assert st.history is None
    assert not any("EventId" in e or "IsPlayed" in e for e in events)
    assert events[0]["FunctionName"] == "features" and events[0]["Generation"] == 0
    failed, child = events[3], events[4]
    assert failed["FunctionName"] == "say_hello" and failed["Input"] == '["\\"Boom\\""]'
    assert failed["ScheduledTime"].endswith("+00:00") and failed["Reason"].startswith("Activity function 'say_hello'")
    assert child["FunctionName"] == "fanout" and child["Result"] == {"results": ["Hello Oslo!"], "doubled": {"n": 2}}
    assert events[-1]["OrchestrationStatus"] == "Completed" and events[-1]["Result"]["child2"]["results"]
    plain = requests.get(f"{host.rpc_base_url}instances/{iid}?showHistory=true", timeout=10).json()["historyEvents"]
    assert "Result" not in plain[4] and "Result" not in plain[-1] and plain[3]["Input"] == failed["Input"]
    assert "historyEvents" not in requests.get(f"{host.rpc_base_url}instances/{iid}", timeout=10).json()


# ------------------------------------------------------------------ 40. a terminated instance's output
@pytest.mark.parametrize("reason, output", [("stop it", "stop it"), ('{"by": "operator"}', {"by": "operator"}),
                                            ("  42 ", 42), ('"quoted"', "quoted"), ("", "")])
def test_a_terminate_reason_is_the_status_output_as_the_extension_parses_it(
        host: DevHost, reason: str, output: Any) -> None:
    """dtfx ``AzureStorageOrchestrationService.ForceTerminateTaskOrchestrationAsync`` sends
    ``ExecutionTerminatedEvent(-1, reason)`` with the reason as the client gave it (ext ``HttpApiHandler.
    HandleTerminateInstanceRequestAsync``: the ``reason`` query value; ``DurableClient.TerminateAsync`` ->
    ``TaskHubClient.TerminateInstanceAsync``), and ``AzureTableTrackingStore`` writes that raw text as the instance's
    ``Output`` ("the termination reason becomes the orchestration's output"); ext ``DurableClient.ConvertFrom``
    answers ``Output = ParseToJToken(state.Output)``: the trimmed text parsed when it is JSON, else the text ("common
    in terminate scenarios"). devhost stored the reason JSON-encoded, so a reason that is JSON came back a string."""
    from urllib.parse import quote

    iid = host.start_orchestration("sleepy")
    wait_until(lambda: running(host, iid), 20, "sleepy to run")
    url = f"{host.rpc_base_url}instances/{iid}/terminate?reason={quote(reason)}"
    assert requests.post(url, timeout=10).status_code == 202
    st = host.wait_for(iid, 30)
    assert st["runtimeStatus"] == "Terminated" and st["output"] == output, st
    answered = requests.get(f"{host.rpc_base_url}instances/{iid}", timeout=10).json()
    assert answered["output"] == output and sdk(host, lambda c: c.get_status(iid)).output == output


# ------------------------------------------------------------------ 41. the request-body limit
def _post_declaring(host: DevHost, path: str, length: int, sent: bytes = b"") -> tuple[int, bytes]:
    """POST with a ``Content-Length`` of ``length`` but only ``sent`` bytes of body: the answer is the status the
    server gives on the declared length alone (a server that reads first would wait for the rest and time out)."""
    with socket.create_connection((host.host, host.port), timeout=20) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: {host.host}:{host.port}\r\nx-functions-key: {KEY}\r\n"
                     f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n".encode() + sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_a_body_size_setting_past_a_long_is_the_hosts_default_not_a_wider_limit() -> None:
    """host Middleware/HttpRequestBodySizeMiddleware.cs applies FUNCTIONS_REQUEST_BODY_SIZE_LIMIT only where .NET's
    ``long.TryParse`` takes it; a number past ``long.MaxValue`` (9223372036854775807) fails it, and the request keeps
    Kestrel's 104857600 (host Program.cs). devhost took any digits, so it let through what Azure refuses."""
    from devhost.http_server import REQUEST_BODY_LIMIT_SETTING, request_body_limit

    assert request_body_limit({REQUEST_BODY_LIMIT_SETTING: "9223372036854775807"}) == 9_223_372_036_854_775_807
    assert request_body_limit({REQUEST_BODY_LIMIT_SETTING: "9223372036854775808"}) == 104_857_600
    assert request_body_limit({REQUEST_BODY_LIMIT_SETTING: "+99999999999999999999"}) == 104_857_600


def test_a_body_over_the_hosts_limit_gets_500_before_the_function_runs_and_one_below_reaches_it(
        storage_connection: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """host Program.cs sets Kestrel's (and IIS's) ``MaxRequestBodySize`` to ``ScriptConstants.DefaultMaxRequestBodySize``
    = 104857600 bytes; host Middleware/HttpRequestBodySizeMiddleware.cs replaces it per request with the app setting
    FUNCTIONS_REQUEST_BODY_SIZE_LIMIT when that parses as a number (docs functions-app-settings.md). Past it Kestrel
    throws "Request body too large" when the body is read (at once on a declared Content-Length), which is while the
    HTTP binding reads ``req``: the invocation fails and the caller gets **500**, not 413 (azure-functions-host issue
    #10519, Python, local and in Azure). The key is checked before (401). devhost took 64 MiB and answered 413."""
    from devhost.http_server import HOST_REQUEST_BODY_LIMIT, REQUEST_BODY_LIMIT_SETTING, request_body_limit

    assert HOST_REQUEST_BODY_LIMIT == 104_857_600 and REQUEST_BODY_LIMIT_SETTING == "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"
    assert request_body_limit({}) == request_body_limit({REQUEST_BODY_LIMIT_SETTING: "lots"}) == 104_857_600
    assert request_body_limit({REQUEST_BODY_LIMIT_SETTING: " 250000000 "}) == 250_000_000
    path = "/api/secure/body-size"
    monkeypatch.delenv(REQUEST_BODY_LIMIT_SETTING, raising=False)
    host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig()).start()
    try:
        assert host.front.body_limit == 104_857_600
        over, answer = _post_declaring(host, path, HOST_REQUEST_BODY_LIMIT + 1, b"x" * 1000)
        assert over == 500 and b"Request body too large" in answer, answer[:300]
        big = 64 * 1024 * 1024 + 1  # over devhost's old limit, under the host's: the function reads it all
        reached = requests.post(host.base_url + path, data=b"\0" * big, headers={"x-functions-key": KEY}, timeout=60)
        assert reached.status_code == 200 and reached.text == str(big)
    finally:
        host.stop()
    monkeypatch.setenv(REQUEST_BODY_LIMIT_SETTING, "1000")  # the app setting, scaled down to try both sides of it
    host = DevHost(sample_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig()).start()
    try:
        url, key = host.base_url + path, {"x-functions-key": KEY}
        assert requests.post(url, data=b"a" * 1000, headers=key, timeout=20).text == "1000"  # the limit itself: taken
        too_big = requests.post(url, data=b"a" * 1001, headers=key, timeout=20)
        assert too_big.status_code == 500 and "1000 bytes" in too_big.json()["error"]
        chunked = requests.post(url, data=iter([b"a" * 600, b"a" * 600]), headers=key, timeout=20)  # no length told
        assert chunked.status_code == 500
        assert requests.post(url, data=b"a" * 5000, timeout=20).status_code == 401  # the key first, as the host
        assert requests.post(url, headers=key, timeout=20).text == "0"
    finally:
        host.stop()


# ------------------------------------------------------------------ 44. what a failure's record keeps
def test_a_failed_activity_s_record_keeps_its_causes_text_unless_the_app_cleaned_it(storage_connection: str,
                                                                                   unique_name: str) -> None:
    """The Python worker sends ``f"{type(exc).__name__}: {exc}"`` and ``traceback.format_exception(exc)`` (causes and
    notes included; azure-functions-runtime ``utils/tracing.py``); the host wraps both in its RpcException, whose
    message the extension serializes into TaskFailed's ``Details`` (``Listener/TaskActivityShim.cs``, dtfx
    ``Utils.SerializeCause``), and the SDK hands the orchestrator ``Exception(f"{Reason} \\n {Details}")``
    (``TaskOrchestrationExecutor.set_task_value``). So a cause's SAS reaches the History table and the orchestrator
    unless the app raised without it (``core.failures``), on devhost as on Azure. A failed orchestrator's ``str(exc)``
    becomes the instance's output (``Listener/OutOfProcOrchestrationShim.cs``)."""
    from tests.devhost import secrets_app
    host = DevHost(secrets_app.app, storage_connection, task_hub=unique_name, port=0, function_key=KEY,
                   host_config=HostConfig()).start()
    try:
        iid = host.start_orchestration("failures", None)
        st = host.wait_for(iid, 60)
        assert st["runtimeStatus"] == "Completed", st
        raw, cleaned = st["output"]["read_raw"], st["output"]["read_cleaned"]
        assert raw.startswith("Activity function 'read_raw' failed:  ConnectionError: storage did not answer")
        assert secrets_app.SECRET in raw and "OSError: Max retries exceeded" in raw, raw  # the cause, as raised
        assert cleaned.startswith("Activity function 'read_cleaned' failed:  ConnectionError: storage did not answer")
        assert secrets_app.SECRET not in cleaned and "OSError: Max retries exceeded with url: /c/b.json?[redacted]" \
            in cleaned, cleaned
        failed = [e for e in _history(host, iid) if e["EventType"] == h.TASK_FAILED]
        assert len(failed) == 2 and secrets_app.SECRET in failed[0]["Details"]
        assert secrets_app.SECRET not in failed[1]["Reason"] + failed[1]["Details"], failed[1]

        iid = host.start_orchestration("failing", None)
        st = host.wait_for(iid, 60)
        assert st["runtimeStatus"] == "Failed", st
        assert str(st["output"]).startswith("Orchestrator function 'failing' failed: Activity function 'read_raw' "
                                            "failed:  ConnectionError: storage did not answer the read of c/c.json")
        assert secrets_app.SECRET not in json.dumps(st), st
    finally:
        host.stop()


# ------------------------------------------------------------------ 48. a terminated instance's custom status
@pytest.mark.parametrize("deployed, shown", [("v1", {"version": "v1"}), ("v2", {"version": "v2"})])
def test_a_terminated_instances_custom_status_is_the_one_its_terminate_replay_sets(
        host: DevHost, monkeypatch: pytest.MonkeyPatch, deployed: str, shown: Any) -> None:
    """A terminate of a started instance is an episode (dtfx DurableTask.Core/TaskOrchestrationDispatcher.cs
    ``ExecuteOrchestrationAsync``): the extension's ``OrchestrationMiddleware`` invokes the Python orchestrator with the
    whole history (ext Bindings/OrchestrationTriggerAttributeBindingProvider.cs ``OrchestrationContextToString``), the
    SDK replays it (ignoring ``ExecutionTerminated``) and returns its custom status, the out-of-proc shim sets it
    (ext Listener/OutOfProcOrchestrationShim.cs ``ScheduleDurableTaskEvents``), dtfx ``TaskOrchestrationExecutor.
    ExecuteCore`` returns ``CustomStatus = GetStatus()`` after ``HandleExecutionTerminatedEvent`` and
    ``AzureTableTrackingStore.UpdateStateAsync`` writes it (``Status ?? "null"``). So an unchanged orchestrator keeps
    its last status (what ``api.starters._stage`` relies on), and one deployed anew before the terminate shows what
    the new code sets. devhost kept the stored status whatever the replay would set."""
    iid = host.start_orchestration("status_then_waits")
    wait_until(lambda: (host.get_status(iid) or {}).get("customStatus") == {"version": "v1"}, 20, "the first status")
    monkeypatch.setitem(sample_app.STATUS_VERSION, "value", deployed)
    assert requests.post(f"{host.rpc_base_url}instances/{iid}/terminate?reason=stop", timeout=10).status_code == 202
    st = host.wait_for(iid, 30)
    assert st["runtimeStatus"] == "Terminated" and st["customStatus"] == shown, st
    answered = requests.get(f"{host.rpc_base_url}instances/{iid}", timeout=10).json()
    assert answered["customStatus"] == shown and sdk(host, lambda c: c.get_status(iid)).custom_status == shown


def test_a_terminated_generation_that_set_no_status_yet_shows_none(host: DevHost) -> None:
    """The status a generation carried over ``continue_as_new`` (row 33: dtfx keeps it for the work item that went on
    as new) is not the terminate's: the terminate's replay sets none, the shim leaves a fresh context's status null
    and ``AzureTableTrackingStore`` writes "null" (dtfx src/DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs
    ``UpdateStateAsync``: ``["CustomStatus"] = newRuntimeState.Status ?? "null"``). devhost kept the carried one."""
    iid = host.start_orchestration("status_then_waits", "continued")
    carried = wait_until(lambda: (lambda st: st if st and st.get("input") == "second" else None)(
        host.engine.status(iid)), 30, "the second generation")
    assert carried["customStatus"] == {"version": "v1", "gen": 0} and carried["runtimeStatus"] == "Running", carried
    wait_until(lambda: any(e["EventType"] == h.TIMER_CREATED
                           for e in (host.engine.store.load_history(iid) or {}).get("history", [])),
               20, "the second generation's timer")  # the first generation schedules none
    host.engine.terminate(iid, "stop")
    st = sdk(host, lambda c: c.get_status(iid))
    assert st.runtime_status.value == "Terminated" and st.custom_status is None, st.to_json()


def test_a_generation_terminated_before_its_first_episode_shows_the_status_its_replay_sets(
        host: DevHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """dtfx runs a new generation's first episode in the work item that went on as new (dtfx
    DurableTask.Core/TaskOrchestrationDispatcher.cs ``OnProcessWorkItemAsync``: ``do ... while (continuedAsNew)``),
    so on Azure a terminate always replays the new generation (row 48), which here sets no status: none is shown.
    devhost runs that episode apart; a terminate between the two skipped the replay (the stored history still the
    previous generation's) and kept the status carried over ``continue_as_new``. The new generation's start message
    is held back so that moment lasts."""
    held: list[tuple[Any, ...]] = []
    add_start = host.engine._add_start_message

    def hold_continued(*args: Any, continued: bool = False) -> None:
        if continued:
            held.append(args)
            return
        add_start(*args)

    monkeypatch.setattr(host.engine, "_add_start_message", hold_continued)
    iid = host.start_orchestration("status_then_waits", "continued")
    carried = wait_until(lambda: (lambda st: st if st and st.get("input") == "second" else None)(
        host.engine.status(iid)), 30, "the second generation")
    assert held and carried["customStatus"] == {"version": "v1", "gen": 0}, carried
    host.engine.terminate(iid, "stop")
    st = sdk(host, lambda c: c.get_status(iid))
    assert st.runtime_status.value == "Terminated" and st.custom_status is None, st.to_json()


@pytest.mark.parametrize("given, shown", [("continued", None), ("continued, sets", {"version": "v1", "gen": 1})])
def test_a_terminate_before_a_continued_generation_s_first_episode_ran_stores_that_generation_s_status(
        host: DevHost, monkeypatch: pytest.MonkeyPatch, given: str, shown: Any) -> None:
    """devhost runs a continued generation's first episode as a work item of its own (row 35), so a terminate can
    come between it and the episode that went on as new; on Azure it cannot: dtfx
    src/DurableTask.Core/TaskOrchestrationDispatcher.cs ``OnProcessWorkItemAsync`` runs that first episode in the work
    item that went on as new (``do ... while (continuedAsNew)``), and the terminate is a later work item whose replay
    covers the new generation: ``runtimeState.Status = result?.CustomStatus`` with no ``carryOverStatus`` (row 48),
    written ``Status ?? "null"`` (src/DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs
    ``UpdateStateAsync``). So the terminate stores what the new generation's replay sets, or none. devhost kept the
    status carried over, which Azure never shows after that terminate."""
    held = threading.Event()
    episode = host.engine._episode

    def hold_the_continued_start(iid: str, msgs: list[dict[str, Any]]) -> bool:
        if any(m["RowKey"].startswith("continued-") for m in msgs):
            held.set()
            return False  # the continued generation's first episode waits (until the terminate drops its message)
        return episode(iid, msgs)

    monkeypatch.setattr(host.engine, "_episode", hold_the_continued_start)
    iid = host.start_orchestration("status_then_waits", given)
    assert held.wait(30), "the first generation never went on as new"
    carried = host.engine.status(iid)
    assert carried["customStatus"] == {"version": "v1", "gen": 0} and carried["input"].startswith("second"), carried
    host.engine.terminate(iid, "stop")
    st = sdk(host, lambda c: c.get_status(iid))
    assert st.runtime_status.value == "Terminated" and st.custom_status == shown, st.to_json()


# ------------------------------------------------------------------ 49. queued activities of an ended instance
@pytest.fixture
def one_worker_host(storage_connection: str, unique_name: str) -> Iterator[DevHost]:
    """A host that runs one activity at a time: the others scheduled with it wait, queued, behind the one running."""
    yield from _running_host(storage_connection, unique_name, activity_workers=1)


def test_a_terminated_instances_queued_activities_still_run(one_worker_host: DevHost, unique_name: str) -> None:
    """Azure runs an activity message whatever became of its orchestration: the Azure Storage provider's
    ``LockNextTaskActivityWorkItem`` hands out the next work-item queue message and dtfx's ``TaskActivityDispatcher``
    runs it, neither reading the instance's state (durabletask ``AzureStorageOrchestrationService.cs``,
    ``DurableTask.Core/TaskActivityDispatcher.cs``; the extension's ``ActivityMiddleware`` and ``TaskActivityShim``
    add no such check); only its completion is dropped, the instance having ended. devhost deleted a terminated
    instance's queued work items, so the app's guard against a terminated run's late calls (activities.superseded)
    was never met here for those. Fails without the change (the queued activities never start)."""
    gate = unique_name
    host_ = one_worker_host
    try:
        iid = host_.start_orchestration("gated_fan_out", {"gate": gate, "n": 3})
        assert sample_app.gate(f"{gate}-0:started").wait(60), "the first activity never ran"
        host_.terminate(iid, "replaced")  # the first still running, the other two queued behind it (one at a time)
        sample_app.gate(f"{gate}-0").set()
        for i in (1, 2):  # queued when the instance was terminated: they run all the same
            assert sample_app.gate(f"{gate}-{i}:started").wait(60), f"queued activity {i} never ran"
            sample_app.gate(f"{gate}-{i}").set()
        wait_until(lambda: not host_.store.list_activities(), 60, "the queued activities to finish")
        after = host_.get_status(iid)
        assert after is not None and after["runtimeStatus"] == "Terminated" and after["output"] == "replaced", after
    finally:
        for i in range(3):
            sample_app.gate(f"{gate}-{i}").set()


def test_an_ended_executions_queued_activities_run_beside_a_new_instance_of_its_id_and_never_reach_it(
        one_worker_host: DevHost, unique_name: str) -> None:
    """An id started again after its instance was terminated: the old execution's queued activities run (row 49) while
    the new instance runs, and their completions, which name the old execution, are dropped (dtfx
    ``TaskOrchestrationDispatcher.ReconcileMessagesWithState``: "ExecutionId of event ... does not match current
    executionId"; devhost ``_sort_messages``), even where the new instance scheduled the same task ids: it sees only
    its own results. Fails with the queued activities deleted at the terminate or the new start (they never run)."""
    old, new = f"{unique_name}-old", f"{unique_name}-new"
    host_ = one_worker_host
    try:
        iid = host_.start_orchestration("gated_fan_out", {"gate": old, "n": 3})
        assert sample_app.gate(f"{old}-0:started").wait(60), "the first activity never ran"
        host_.terminate(iid, "replaced")  # old-0 running, old-1 and old-2 queued (one worker)
        host_.start_orchestration("gated_fan_out", {"gate": new, "n": 3}, instance_id=iid)  # task ids 0-2 again
        names = [f"{g}-{i}" for g in (old, new) for i in range(3)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(sample_app.gate(n + ":started").is_set() for n in names):
            for n in names:  # one worker: open each activity as it starts, in whatever order they run
                if sample_app.gate(n + ":started").is_set():
                    sample_app.gate(n).set()
            time.sleep(0.05)
        missing = [n for n in names if not sample_app.gate(n + ":started").is_set()]
        assert not missing, f"never ran: {missing}"
        for n in names:
            sample_app.gate(n).set()
        done = host_.wait_for(iid, 60)
        assert done["runtimeStatus"] == "Completed" and done["output"] == [f"{new}-{i}" for i in range(3)], done
        wait_until(lambda: not host_.store.list_activities(), 60, "the old activities to finish")
        doc = host_.store.load_history(iid)
        assert doc is not None
        results = [e.get("Result") for e in doc["history"] if e["EventType"] == h.TASK_COMPLETED]
        assert len(results) == 3 and not any(old in str(r) for r in results), results
        after = host_.get_status(iid)  # nothing came after the end
        assert after is not None and after["output"] == [f"{new}-{i}" for i in range(3)], after
    finally:
        for g in (old, new):
            for i in range(3):
                sample_app.gate(f"{g}-{i}").set()
