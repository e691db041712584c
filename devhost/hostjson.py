"""The host.json settings devhost honours, read as the Functions host reads them.

* ``functionTimeout`` ("hh:mm:ss", "d.hh:mm:ss" or "-1" for none): how long one invocation may run
  (functions-host-json.md#functiontimeout). Without it the host's default for the plan applies: devhost takes 30
  minutes, the default of the Flex Consumption, Premium and Dedicated plans (the Consumption plan's is 5). Less than
  one second stops the host at start-up (``MIN_FUNCTION_TIMEOUT_S``); devhost refuses it too.
* ``extensions.blobs.poisonBlobThreshold`` (storage extension 5.x, default 5, minimum 1): how many times a blob
  trigger runs for one blob version before the blob goes to the ``webjobs-blobtrigger-poison`` queue
  (functions-bindings-storage-blob.md#hostjson-settings).
* ``extensions.durableTask.maxConcurrentActivityFunctions``: how many activities one host runs at once
  (durable-functions-host-json-settings.md; the extension's DurableTaskOptions.MaxConcurrentActivityFunctions: "on a
  single host instance").
  devhost is one host, so its activity threads are that many (trapbatch's host.json: 8, which ``core/scratch.py``'s
  disk budget and devhost's scratch-disk cap assume); without it devhost keeps its own default.
* ``extensions.durableTask.maxOrchestrationActions`` (default 100,000; ext ``Options/DurableTaskOptions.cs``): how
  many activities, timers and sub-orchestrations one execution of an orchestration may schedule, replayed ones
  included; devhost fails the instance at the next one (Azure drops it and every later one, and an orchestrator
  waiting on one never ends: fidelity rows 45, 47).
* ``extensions.durableTask.maxConcurrentOrchestratorFunctions`` and ``storageProvider.maxQueuePollingInterval`` are
  not applied (devhost's own polling: fidelity row 42), but values the extension refuses are refused
  (``_check_unused_durable_settings``).
* ``extensions.durableTask.hubName``: the task hub. The extension resolves a whole-string ``%NAME%`` from the app
  setting NAME (ext ``DurableTaskExtension.Initialize``: ``nameResolver.TryResolveWholeString``; an unresolved name
  stays as written) and then validates the name (``DurableTaskOptions.Validate`` ->
  ``AzureStorageOptions.ValidateHubName``; ``AzureStorageDurabilityProviderFactory.EnsureInitialized`` validates any
  name that is not the default, and only sanitizes the default): it must make a valid table, queue, container and
  blob name and be at most 50 characters, so letters and digits, a letter first, 3-50 characters. A name it refuses
  stops the extension, and with it every function of the app; devhost refuses it too (``task_hub_name``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

DEFAULT_FUNCTION_TIMEOUT_S = 30 * 60.0
# Functions host src/WebJobs.Script/Config/ScriptJobHostOptionsSetup.cs ValidateTimeoutValue (MinFunctionTimeout):
# a shorter functionTimeout, zero included, throws ArgumentException while the host starts; on Flex Consumption
# (SkuSupportsUnboundedTimeout) there is no upper bound and "-1" (TimeSpan.FromDays(-1)) means none.
MIN_FUNCTION_TIMEOUT_S = 1.0
DEFAULT_POISON_BLOB_THRESHOLD = 5
DEFAULT_MAX_ORCHESTRATION_ACTIONS = 100_000  # ext DurableTaskOptions.MaxOrchestrationActions
DEFAULT_TASK_HUB = "devhost"  # host.json names no hub (Azure would take one from the site's name)
TASK_HUB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,49}")


class HostJsonError(ValueError):
    """host.json holds a value the Functions host would refuse."""


def parse_timespan(text: str, key: str = "functionTimeout") -> float | None:
    """A .NET TimeSpan string as seconds; ``-1`` means no limit (None). ``key``: the host.json key, for the error."""
    text = text.strip()
    if text == "-1":
        return None
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?", text)
    if not m:
        raise HostJsonError(f"host.json {key} {text!r} is not a TimeSpan such as \"00:10:00\"")
    days, hours, minutes, seconds, frac = m.groups()
    return (int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            + (int(frac.ljust(7, "0")) / 10_000_000 if frac else 0.0))


# DTFx DurableTask.AzureStorage/AzureStorageOrchestrationService.cs: the service it builds next validates
# "{hub.ToLowerInvariant()}-largemessages" as a container name (3-63 characters), so a hub the extension's check lets
# through at 50 characters fails there: 49 is the longest that starts.
TASK_HUB_MAX = 49
LARGE_MESSAGES_SUFFIX = "-largemessages"


def check_task_hub_name(name: str) -> str:
    """``name`` when the Durable extension's Azure Storage provider takes it as a configured task hub name."""
    if not name:
        raise HostJsonError("A non-empty HubName configuration is required (the Durable extension's words): set the "
                            "task hub's app setting (trapbatch: TRAPBATCH_TASK_HUB) or host.json's durableTask.hubName")
    if TASK_HUB_NAME.fullmatch(name) is None:
        raise HostJsonError(f"Task hub name {name!r} should contain only alphanumeric characters, start with a letter, "
                            "and have length between 3 and 50 (the Durable extension refuses it at start-up, and "
                            "every function of the app with it): choose one such as 'trapbatch' for the task hub's "
                            "app setting (trapbatch: TRAPBATCH_TASK_HUB) or --hub")
    if len(name) > TASK_HUB_MAX:
        raise HostJsonError(f"Task hub name {name!r} has {len(name)} characters: the Durable Task Framework's large "
                            f"message container {name.lower() + LARGE_MESSAGES_SUFFIX!r} would be longer than the 63 "
                            f"characters a container name may have, so the extension fails to start: use at most "
                            f"{TASK_HUB_MAX} (trapbatch: TRAPBATCH_TASK_HUB, or --hub)")
    return name


def resolve_app_setting(value: str, env: Mapping[str, str]) -> str:
    """A whole-string ``%NAME%`` as the app setting NAME; anything else, or a setting that is not there, as written
    (WebJobs ``INameResolver.TryResolveWholeString``, as the extension applies it to ``hubName``)."""
    if len(value) > 2 and value.startswith("%") and value.endswith("%"):
        resolved = env.get(value[1:-1])
        if resolved is not None:
            return resolved
    return value


def _check_unused_durable_settings(durable: dict[str, Any]) -> None:
    """Settings devhost does not apply but the extension refuses at start-up, stopping every function of the app:
    ext ``Options/DurableTaskOptions.cs`` ``Validate`` ("MaxConcurrentOrchestratorFunctions must be a positive integer
    value.") and ``Options/AzureStorageOptions.cs`` ``Validate`` ("MaxQueuePollingInterval must be non-negative.",
    thrown for zero too: ``<= TimeSpan.Zero``). trapbatch's host.json sets both (fidelity row 25)."""
    orchestrators = durable.get("maxConcurrentOrchestratorFunctions")
    if orchestrators is not None and (isinstance(orchestrators, bool) or not isinstance(orchestrators, int)
                                      or orchestrators < 1):
        raise HostJsonError("host.json extensions.durableTask.maxConcurrentOrchestratorFunctions: "
                            "MaxConcurrentOrchestratorFunctions must be a positive integer value. (the Durable "
                            f"extension's words; it does not start), got {orchestrators!r}")
    polling = (durable.get("storageProvider") or {}).get("maxQueuePollingInterval")
    if polling is not None:
        key = "extensions.durableTask.storageProvider.maxQueuePollingInterval"
        seconds = None if str(polling).strip() == "-1" else parse_timespan(str(polling), key)
        if seconds is None or seconds <= 0:
            raise HostJsonError(f"host.json {key} {polling!r}: MaxQueuePollingInterval must be non-negative. (the "
                                "Durable extension's words, for zero too; it does not start): set a positive "
                                "TimeSpan such as \"00:00:10\"")


@dataclass(frozen=True)
class HostConfig:
    function_timeout_s: float | None = DEFAULT_FUNCTION_TIMEOUT_S
    poison_blob_threshold: int = DEFAULT_POISON_BLOB_THRESHOLD
    max_concurrent_activities: int | None = None  # None: host.json names none
    hub_name: str | None = None  # as host.json writes it (``%NAME%`` unresolved); None: host.json names none
    max_orchestration_actions: int = DEFAULT_MAX_ORCHESTRATION_ACTIONS

    def task_hub(self, env: Mapping[str, str]) -> str:
        """The task hub the extension would serve with these app settings; HostJsonError where it refuses it."""
        if self.hub_name is None:
            return DEFAULT_TASK_HUB
        hub = resolve_app_setting(self.hub_name, env)
        if hub == self.hub_name and hub.startswith("%") and hub.endswith("%"):
            raise HostJsonError(f"host.json's durableTask.hubName is {hub!r} and the app setting {hub[1:-1]} is not "
                                f"set, so the Durable extension would refuse the name as written: set {hub[1:-1]} "
                                "in the environment or pass --hub (devhost; func host start reads local.settings.json "
                                "Values, Azure the Function App's settings)")
        return check_task_hub_name(hub)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HostConfig":
        timeout: float | None = DEFAULT_FUNCTION_TIMEOUT_S
        if data.get("functionTimeout") is not None:
            timeout = parse_timespan(str(data["functionTimeout"]))
            if timeout is not None and timeout < MIN_FUNCTION_TIMEOUT_S:
                raise HostJsonError(f"host.json functionTimeout {data['functionTimeout']!r}: FunctionTimeout must be "
                                    "greater than 00:00:01 and less than 10675199.02:48:05.4775807. (the Functions "
                                    "host's words; it does not start, so no function runs): set at least "
                                    "\"00:00:01\", or \"-1\" for no limit")
        blobs = (data.get("extensions") or {}).get("blobs") or {}
        threshold = int(blobs.get("poisonBlobThreshold", DEFAULT_POISON_BLOB_THRESHOLD))
        if threshold < 1:
            raise HostJsonError(f"host.json extensions.blobs.poisonBlobThreshold must be at least 1, got {threshold}")
        durable = (data.get("extensions") or {}).get("durableTask") or {}
        activities = durable.get("maxConcurrentActivityFunctions")
        if activities is not None and (isinstance(activities, bool) or not isinstance(activities, int)
                                       or activities < 1):
            raise HostJsonError("host.json extensions.durableTask.maxConcurrentActivityFunctions must be a positive "
                                f"integer, got {activities!r}")
        _check_unused_durable_settings(durable)
        hub = durable.get("hubName")
        if hub is not None and not isinstance(hub, str):
            raise HostJsonError(f"host.json extensions.durableTask.hubName must be a string, got {hub!r}")
        actions = durable.get("maxOrchestrationActions", DEFAULT_MAX_ORCHESTRATION_ACTIONS)
        if isinstance(actions, bool) or not isinstance(actions, int):
            raise HostJsonError("host.json extensions.durableTask.maxOrchestrationActions must be an integer, got "
                                f"{actions!r}")
        return cls(function_timeout_s=timeout, poison_blob_threshold=threshold, max_concurrent_activities=activities,
                   hub_name=hub, max_orchestration_actions=actions)

    @classmethod
    def load(cls, path: Path) -> "HostConfig":
        """host.json at ``path``; the defaults when there is none."""
        if not path.exists():
            return cls()
        return cls.from_dict(json.loads(path.read_text()))
