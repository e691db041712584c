"""Worst-case actions of one orchestration execution, as the Durable extension counts them (pure arithmetic).

Why: the extension drops an execution's ``maxOrchestrationActions``-th + 1 action and every later one (host.json,
default 100,000; ext ``ContextImplementations/DurableOrchestrationContext.cs`` ``IncrementActionsOrThrowException``:
each activity, timer (each 3-day piece of one longer than the provider's 6-day ``MaximumDelayTime``), sub-orchestration
and event sent counts, replayed ones included; waits for external events do not; ``continue_as_new`` starts the count
again; devhost README row 47). These functions say how many one execution of each orchestrator schedules at most,
derived from the code they name; tests/orchestrations/test_action_bounds.py ties them to the replay harness's count at
small sizes (so they cannot drift from the code) and pins their value at the real limits under 100,000.

No timer here is a long one: retry waits are at most ``retries.BUSY_MAX_DELAY_S`` (5 min), the confirmation's at most
``core.settings.CONFIRM_TIMEOUT_MAX_S`` (6 days, not more than ``MaximumDelayTime``: one piece), a poll's
``poll_max_s``.
"""
from __future__ import annotations

from orchestrations.retries import POOL_RETRY, STORAGE_RETRY, RetryPolicy
from orchestrations.shards import EVENTS_PER_TASK
from orchestrations.task import NOTIFY_RETRY


def attempts(policy: RetryPolicy, busy_retry_attempts: int) -> int:
    """Calls at most of one step under ``policy``: ``retries._retry_delay_s`` allows another call while the failures
    so far are under ``policy.attempts`` (any failure) or, for a busy one, under ``busy_retry_attempts`` where that is
    larger; one counter for both, so the larger is the most."""
    return max(policy.attempts, busy_retry_attempts)


def call_actions(policy: RetryPolicy, busy_retry_attempts: int) -> int:
    """``retries.call``: its calls and a retry timer between each two."""
    return 2 * attempts(policy, busy_retry_attempts) - 1


def call_all_actions(members: int, policy: RetryPolicy, busy_retry_attempts: int) -> int:
    """``retries.call_all`` over ``members`` payloads: each round schedules every member not yet succeeded, and
    ``task_all`` fails at the first failure, so in the worst case every member is called again in every round (its
    attempts), with a timer between rounds."""
    if members <= 0:
        return 0
    rounds = attempts(policy, busy_retry_attempts)
    return members * rounds + rounds - 1


def task_end_actions(busy_retry_attempts: int) -> int:
    """The task orchestrator's calls once its reserve is spent (``retries.spend_reserve``, which no action budget
    refuses): on failure the close of its pool job (``task._close_job``) and the word of its end (``task._tell``: the
    dropped request's answer file, the done files of the drops that joined it, the notification, the Event Grid
    event); on success that word alone. The close once the shard groups ended is never refused either
    (``retries.unrefused``), and the failure path then closes nothing: one close in all."""
    tell = (2 * call_actions(STORAGE_RETRY, busy_retry_attempts)
            + 2 * call_actions(NOTIFY_RETRY, busy_retry_attempts))
    return call_actions(POOL_RETRY, busy_retry_attempts) + tell


def task_actions(action_budget: int, busy_retry_attempts: int) -> int:
    """One execution of the task orchestrator, whatever its size: every action before its end passes the input's
    ``action_budget`` (``retries.ActionLedger``: ``call`` and ``call_all`` count each call and timer, the task counts
    its shard groups and its confirmation's timer with ``note_actions``), then its end (``task_end_actions``). Its
    work alone at ``core.shards.MAX_SHARDS`` has no bound under the limit: a merge of ``core.fanin.SAFE_MAX_PARTS``
    parts and its exports are six fan-outs over the parts (merge, exports parts, links, parts and links made again
    for a conflict, Zooniverse or capture parts), ``6 * call_all_actions(1000, ...)`` = 120,114 at 20 busy attempts,
    and the listing, shard writes and reuse fan-outs grow with the task."""
    return action_budget + task_end_actions(busy_retry_attempts)


def shard_generation_actions(history_events: int, round_events: int, busy_retry_attempts: int) -> int:
    """One execution (generation) of a shard group (``orchestrations.shards._run_shards``).

    The group awaits one task at a time, each adding ``EVENTS_PER_TASK`` events, so at its check before a round
    (``history_so_far(awaited) + round_events > history_events``: go on as new) it has scheduled ``a`` tasks with
    ``2 + 4 * a`` events (``ExecutionStarted`` and the first ``OrchestratorStarted`` first). A check that lets the
    round run had ``a <= (history_events - round_events - 2) // 4``; the first round has none before it, only the
    first SUBMIT. After the last check that let one run: the poll's timer, POLL, the SUBMIT of shards the poll named
    unknown, RESUBMIT, a CANCEL (in place of the last two), the next round's SUBMIT (each step a ``call`` under
    ``POOL_RETRY``), then the next check goes on as new, or the loop ends, or the group fails and its STOP_GROUPS
    follows (``_stop_the_run``, ``STORAGE_RETRY``)."""
    step = call_actions(POOL_RETRY, busy_retry_attempts)
    before = max((history_events - round_events - 2) // EVENTS_PER_TASK, step)
    last_round = 1 + 4 * step + 1
    return before + last_round + call_actions(STORAGE_RETRY, busy_retry_attempts)


def after_task_actions(action_budget: int) -> int:
    """One execution of the re-render (``orchestrations.rerender``) or the results zip (``orchestrations.results_zip``),
    whose input has ``action_budget``: each of their steps is a ``call`` or a ``call_all`` (``retries.ActionLedger``
    counts every call and timer before it is made), and neither has a failure path, reserve or end that schedules
    anything, so the budget is their bound. Without it none: a fan-out over the results' parts (a re-render's per
    variant, the zip's) is ``call_all_actions(parts, STORAGE_RETRY, busy)``, growing with the parts."""
    return action_budget
