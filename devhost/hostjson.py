"""The host.json settings devhost honours, read as the Functions host reads them.

* ``functionTimeout`` ("hh:mm:ss", "d.hh:mm:ss" or "-1" for none): how long one invocation may run
  (functions-host-json.md#functiontimeout). Without it the host's default for the plan applies: devhost takes 30
  minutes, the default of the Flex Consumption, Premium and Dedicated plans (the Consumption plan's is 5).
* ``extensions.blobs.poisonBlobThreshold`` (storage extension 5.x, default 5, minimum 1): how many times a blob
  trigger runs for one blob version before the blob goes to the ``webjobs-blobtrigger-poison`` queue
  (functions-bindings-storage-blob.md#hostjson-settings).
* ``extensions.durableTask.maxConcurrentActivityFunctions``: how many activities one host runs at once
  (durable-functions-host-json-settings.md; the extension's DurableTaskOptions.MaxConcurrentActivityFunctions: "on a
  single host instance").
  devhost is one host, so its activity threads are that many (trapbatch's host.json: 8, which ``core/scratch.py``'s
  disk budget and devhost's scratch-disk cap assume); without it devhost keeps its own default.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_FUNCTION_TIMEOUT_S = 30 * 60.0
DEFAULT_POISON_BLOB_THRESHOLD = 5


class HostJsonError(ValueError):
    """host.json holds a value the Functions host would refuse."""


def parse_timespan(text: str) -> float | None:
    """A .NET TimeSpan string as seconds; ``-1`` means no limit (None)."""
    text = text.strip()
    if text == "-1":
        return None
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?", text)
    if not m:
        raise HostJsonError(f"host.json functionTimeout {text!r} is not a TimeSpan such as \"00:10:00\"")
    days, hours, minutes, seconds, frac = m.groups()
    return (int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            + (int(frac.ljust(7, "0")) / 10_000_000 if frac else 0.0))


@dataclass(frozen=True)
class HostConfig:
    function_timeout_s: float | None = DEFAULT_FUNCTION_TIMEOUT_S
    poison_blob_threshold: int = DEFAULT_POISON_BLOB_THRESHOLD
    max_concurrent_activities: int | None = None  # None: host.json names none

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HostConfig":
        timeout: float | None = DEFAULT_FUNCTION_TIMEOUT_S
        if data.get("functionTimeout") is not None:
            timeout = parse_timespan(str(data["functionTimeout"]))
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
        return cls(function_timeout_s=timeout, poison_blob_threshold=threshold, max_concurrent_activities=activities)

    @classmethod
    def load(cls, path: Path) -> "HostConfig":
        """host.json at ``path``; the defaults when there is none."""
        if not path.exists():
            return cls()
        return cls.from_dict(json.loads(path.read_text()))
