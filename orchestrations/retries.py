"""Activity retries as explicit durable timers, not the SDK's ``call_activity_with_retry``.

Why: with the real Durable extension, an orchestration that retried an activity through ``call_activity_with_retry``
and later yields ``task_all`` can hang for ever (azure-functions-durable-python#603, closed "wontfix"): the retried
task's event ids collide with the new tasks'. Our orchestrators do exactly that (enumerate with retry, then
``task_all`` over shard groups; submit and poll with retry in a loop). So a retry here is a plain ``call_activity``,
a caught failure, a durable timer and another ``call_activity``: events DTFx numbers like any others, and the
activities are idempotent, so running one twice is harmless. Use as ``result = yield from call(context, ...)``, or
``results = yield from call_all(context, ...)`` for one activity over many payloads in parallel.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generator, Sequence

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskState


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` calls at most; the n-th retry waits ``first_delay_s * backoff ** (n - 1)`` seconds."""

    attempts: int = 3
    first_delay_s: float = 2.0
    backoff: float = 2.0

    def delay_s(self, retry: int) -> float:
        return float(self.first_delay_s * self.backoff ** (retry - 1))


# Listing a container or streaming a merge can hit transient storage throttling; a few retries spare a failed task.
STORAGE_RETRY = RetryPolicy()
# Pool calls are I/O against a remote service: retry transient failures a few times before failing the task.
POOL_RETRY = RetryPolicy()


def call(context: df.DurableOrchestrationContext, name: str, policy: RetryPolicy,
         payload: Any) -> Generator[Any, Any, Any]:
    """Call activity ``name``; after a failure wait on a durable timer and call it again, up to ``policy.attempts``.

    The last failure propagates to the orchestrator unchanged (the task then fails with the activity's message).
    """
    retry = 0
    while True:
        try:
            return (yield context.call_activity(name, payload))
        except Exception:  # noqa: BLE001 - the activity's failure, as the SDK raises it in the orchestrator
            retry += 1
            if retry >= policy.attempts:
                raise
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=policy.delay_s(retry)))


def call_all(context: df.DurableOrchestrationContext, name: str, payloads: Sequence[Any],
             policy: RetryPolicy = STORAGE_RETRY) -> Generator[Any, Any, list[Any]]:
    """Call activity ``name`` once per payload, in parallel (``task_all``); results in payload order.

    A failed round does not re-run what succeeded: after a durable timer only the calls that had not succeeded when
    the failure surfaced are made again, ``policy.attempts`` rounds at most, and the last failure propagates.
    ``task_all`` fails as soon as one call fails (the SDK's ``WhenAllTask``), so calls still running then may run
    twice, which idempotent activities allow. Used by the parallel enumeration and the merge fan-in.
    """
    results: list[Any] = [None] * len(payloads)
    todo = list(range(len(payloads)))
    retry = 0
    while todo:
        tasks = [context.call_activity(name, payloads[i]) for i in todo]
        try:
            values = yield context.task_all(tasks)
        except Exception:  # noqa: BLE001 - one call's failure, as the SDK raises it in the orchestrator
            left = []
            for i, task in zip(todo, tasks):
                if getattr(task, "state", None) is TaskState.SUCCEEDED:
                    results[i] = task.result
                else:
                    left.append(i)
            todo = left
            retry += 1
            if retry >= policy.attempts:
                raise
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=policy.delay_s(retry)))
            continue
        for i, value in zip(todo, values):
            results[i] = value
        todo = []
    return results
