"""The 202 of ``POST /api/tasks/{id}/terminate`` (target "task") writes the terminated run's done files
(adapters.terminated_drops says what, and why never over the run's own end), best effort: the run is terminated
whatever becomes of them, and the answer's ``drop_answers`` says what did (``{"written": false, "reason", "hint"}``
when they could not be written, logged too).

Why here and not in the orchestration: a terminated orchestration runs none of its own steps again (api.starters
``terminate_task``), and the terminate is the app's own route, so its answer is the one place that knows the run
ended so and can say whether its word was written.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timezone
from typing import Any, Mapping

from adapters import clients
from adapters.task_hub import read_status
from adapters.terminated_drops import answer_terminated_run
from core.deadline import Deadline
from core.errors import failure_line
from core.terminated_status import TELLING, terminated_status, told_status

logger = logging.getLogger(__name__)


def answers_hint(task_id: str) -> str:
    """What to do when the terminated run's done files could not be written (``drop_answers.hint``)."""
    return (f"the run is terminated all the same; the done files beside its dropped requests may not say so: read "
            f"GET /api/tasks/{task_id}, or post the same request again, without \"rerun\" or \"only_new\", to resume "
            "it (its end writes them). If storage refused the write, the app's identity (id-api-*) needs Storage Blob "
            "Data Owner on trapbatch's storage account (infra/ grants it)")


# Why a deadline: "Regardless of the function app timeout setting, 230 seconds is the maximum amount of time that an
# HTTP triggered function can take to respond to a request" (MicrosoftDocs includes/functions-timeout-duration.md;
# api.starters ``POST_ANSWER_S``). The 202 writes each joined request's file in turn, three storage calls each (its
# registry entry, the file's read and conditional write): at 10 to 20 ms a call, 3,000 to 6,000 files in 200 s,
# far fewer from a throttled one, and one call held in the storage SDK's retries can take minutes by itself. Past
# 230 s the caller got a bare 502 for a terminate that was made (sent again: 409 "not running").
CUT = "the answer's time ran out (Azure's front end cuts an HTTP function at 230 s)"


def cut_hint(task_id: str) -> str:
    """What to do when the 202's deadline left done files unwritten (``drop_answers.hint``)."""
    return (f"the run is terminated all the same; the done files not written say nothing yet: post the same request "
            f"again, without \"rerun\" or \"only_new\", to resume the task (its end writes every one of them), or "
            f"read GET /api/tasks/{task_id}")


def done_files_hint(hint: str) -> str:
    """The hint of a terminated run's done file: the 202's (what the terminate left, how to resume), and that the
    resuming run writes the file again."""
    return f"{hint}; the run that resumes the task writes this file again with its own end"


# How long the 202 waits for the platform to process the terminate (the instance to read Terminated), at most, and
# how often it reads. Why: dtfx processes the terminate message once the episode under way has ended
# (api.starters ``terminate_task``), and that episode may be the run's end (its last activity's result: the final
# status set, the own drop's file scheduled, the joined drops' not yet): read before it, the status said, e.g.,
# ``publishing``, and the joined requests were told ``terminated`` and "post it again" of a task that shows its end (a
# post then finds it ended and writes nothing). Once Terminated, the instance's custom status is the one the
# terminate's replay set over the whole history (api.starters ``_stage``): the run's last word. An idle task hub
# reads its control queue at least every ``maxQueuePollingInterval`` (host.json: 10 s; the default 30 s, docs
# ``durable-functions-host-json-settings``; devhost README, fidelity row 42), so a terminate of a quiet (stalled) run
# is processed within about that; devhost processes it at once. Past it the status read last serves, as before.
SETTLE_S = 20.0
SETTLE_POLL_S = 1.0


async def _last_word(client: Any, task_id: str, run: str, described: Mapping[str, Any],
                     until: Deadline | None) -> Mapping[str, Any]:
    """Run ``run``'s last status: read again once the instance reads Terminated (``SETTLE_S``, and never past half
    of what is left of ``until``: the writes need the rest); ``described`` (the read before the terminate) where
    none of this run's can be read (a later run started meanwhile: ``_input_run``)."""
    last: Mapping[str, Any] = described
    settle = Deadline.within(min(SETTLE_S, until.left() / 2) if until is not None else SETTLE_S)
    while True:
        try:
            read = await asyncio.wait_for(read_status(client, task_id, show_input=True), max(0.0, settle.left()))
        except Exception:  # noqa: BLE001 - the status read before serves (the hub was read a moment ago)
            logger.info("task %s: status not read again after the terminate: the one read last serves", task_id)
            return last
        if _input_run(read) != run:  # a later run started meanwhile: its status is not this run's
            return last
        if isinstance(getattr(read, "custom_status", None), dict) and read.custom_status.get("stage"):
            last = read.custom_status
        runtime = getattr(getattr(read, "runtime_status", None), "value", None)
        if runtime not in ("Running", "Pending") or settle.left() <= SETTLE_POLL_S:
            return last
        await asyncio.sleep(SETTLE_POLL_S)


def _input_run(read: Any) -> str | None:
    """The run id in a status read's input (None: no input read). Why: the task is one instance for all its runs
    (the terminate names the instance, api.starters ``_replaced_meanwhile``), so once the platform has processed the
    terminate, a later run started at once (the request dropped again) may be the one read; its status is not this
    run's last word, and its ``started`` names that run's end, not this one's."""
    raw = getattr(read, "input_", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return str(raw.get("run") or "") if isinstance(raw, dict) else None


async def answer_terminated(client: Any, task_id: str, run: str, task_input: Mapping[str, Any],
                            described: Mapping[str, Any], reason: str, hint: str,
                            until: Deadline | None = None) -> dict[str, Any] | None:
    """Write the done files of run ``run`` (``task_input``: its input) just terminated with ``reason``; None where
    it has none (started over HTTP, and no dropped request joined it, or none could: started by an earlier release).
    ``described``: the task as read before the terminate (the 202's ``stage``), used where the status cannot be
    read again; the read after the terminate is preferred, the newest word on whether the run was telling of its end
    (the replay of a terminate sets the run's last custom status again: api.starters ``_stage``), where it is still
    this run's (``_input_run``). ``hint``: the 202's, which says what the terminate left and to post the request
    again to resume. ``until``: the answer's deadline
    (``CUT``): the status read and the writes stop by it, the run's own drop first (adapters.terminated_drops), and
    ``drop_answers`` then says how many were written, ``written`` false."""
    drop = str(task_input.get("drop") or "")
    if not drop and not (task_input.get("answers_joined") and run):
        return None
    ended = [r for r in [*(task_input.get("ends_earlier") or []), task_input.get("ends_run", "")]
             if isinstance(r, str) and r and r != run]
    try:
        last = await _last_word(client, task_id, run, described, until)
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        status = (told_status(last) if last.get("stage") in TELLING else
                  terminated_status(last, run, reason, done_files_hint(hint), at))
        s = clients.settings()
        stopped = threading.Event()  # set when the answer stops waiting: the thread writes no further file

        def stop() -> bool:
            return stopped.is_set() or (until is not None and until.left() <= 0)

        try:
            answered = await asyncio.wait_for(
                asyncio.to_thread(answer_terminated_run, clients.store(s), s.container, task_id, run, drop, ended,
                                  status, str(last.get("started") or ""), stop),
                None if until is None else max(0.0, until.left()))
        except TimeoutError:  # one storage call outlasted the deadline (its retries): whatever it had written stands
            stopped.set()
            logger.warning("task %s: run %s terminated: its done files were not all written by the answer's deadline",
                           task_id, run or "?")
            return {"written": False, "reason": f"{CUT} while storage was being written: some may not have been",
                    "hint": cut_hint(task_id)}
    except Exception as exc:  # noqa: BLE001 - best effort: the 202 stands, and says so
        why = failure_line(exc, 300)
        logger.warning("task %s: run %s terminated, but its done files could not be written: %s", task_id,
                       run or "?", why)
        return {"written": False, "reason": why, "hint": answers_hint(task_id)}
    if answered.pop("cut", False):
        return {**answered, "reason": f"{CUT} after {answered.get('joined', 0)} of the joined requests' files: the "
                                      "others were not written", "hint": cut_hint(task_id)}
    # a run started over HTTP that no dropped request joined: its marker only (for one joining now), nothing to say
    return answered if answered.get("done_file") or answered.get("joined") else None
