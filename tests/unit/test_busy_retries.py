"""A failure that says storage or Batch is busy is retried for longer than others (``orchestrations.retries``).

The failures are the SDKs' own exceptions (azure-storage-blob and azure-batch answered 503/500 through a transport),
worded as the Durable extension hands them to the orchestrator (``devhost.history.activity_failure_reason``, fidelity
row 32), and driven through the real SDK replay (tests/orchestrations/replay.py). Here rather than in
tests/orchestrations because it builds the SDK clients' test transports, which that folder's strict typing does not
cover (tests/unit/test_typing.py).
"""
from __future__ import annotations

import functools
import json
import sys
from datetime import datetime, timezone
from typing import Any

import pytest
from azure.core.exceptions import (IncompleteReadError, ResourceNotFoundError, ServiceRequestError,
                                   ServiceRequestTimeoutError, ServiceResponseError, ServiceResponseTimeoutError)
from azure.core.pipeline.transport import HttpTransport
from azure.storage.blob import BlobClient, BlobServiceClient

from adapters.blobs import BlobStore
from core import contracts as c
from core.contracts import Stage
from core.errors import ConfigError, StorageUnavailable
from core.settings import DEFAULT_BUSY_RETRY_ATTEMPTS, OrchestrationKnobs, Settings
from devhost.history import activity_failure_reason
from gpu_batch.layout import shard_id
from gpu_batch.pool.azure_batch import BatchUnavailable
from gpu_batch.pool.base import JobClosed, JobDisabled
from gpu_batch.tests.test_pool_azure_batch import FakeBatch, _batch_error, _Response, pool
from orchestrations import retries
from orchestrations.expiry import expire_previews
from orchestrations.retries import BUSY_FIRST_DELAY_S, BUSY_MAX_DELAY_S, STORAGE_RETRY, busy_attempts, is_busy
from orchestrations.shards import ROUND_EVENTS, round_events, run_shards
from tests.orchestrations.replay import T0, run_orchestrator
from tests.orchestrations.test_shards_orchestrator import TASK as GROUP_TASK
from tests.orchestrations.test_shards_orchestrator import Pool
from tests.orchestrations.test_task_orchestrator import activities, flaky_listing, run_task, task_input


class _StorageAnswers(HttpTransport):  # type: ignore[misc]
    """Azure Storage answering every request with one error, as the service words it."""

    def __init__(self, status: int, code: str) -> None:
        self.status, self.code = status, code

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = _Response(request, self.status, None)
        response.headers = {"x-ms-error-code": self.code, "Content-Type": "application/xml"}
        response._content = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{self.code}</Code>'
                             f'<Message>{self.code}</Message></Error>').encode()
        return response

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "_StorageAnswers": return self
    def __exit__(self, *a: Any) -> None: ...


def storage_failure(status: int, code: str) -> Exception:
    blob = BlobClient("https://acct.blob.core.windows.net", "c", "b", transport=_StorageAnswers(status, code),
                      retry_total=0)
    with pytest.raises(Exception) as raised:
        blob.download_blob().readall()
    return raised.value


class _BatchAnswers(FakeBatch):
    """Azure Batch answering the task listing with one error; azure-core's own retries do not sleep."""

    def sleep(self, duration: float) -> None: ...


def store_failure(status: int, code: str, operation: str) -> Exception:
    """The failure of one of ``BlobStore``'s own requests (``adapters.blob_requests``, ``adapters.listing``: not the
    SDK's operations) when storage answers ``status`` ``code``."""
    service = BlobServiceClient("https://acct.blob.core.windows.net", transport=_StorageAnswers(status, code),
                                retry_total=0)
    calls = {"read_bytes": lambda s: s.read_bytes("c", "b.json"),
             "write_bytes": lambda s: s.write_bytes("c", "b.json", b"{}"),
             "list_names": lambda s: list(s.list_names("c"))}
    with pytest.raises(Exception) as raised:
        calls[operation](BlobStore(service))
    return raised.value


@functools.cache
def batch_failure(status: int, code: str) -> Exception:
    """What the pool raises when Batch answers a task listing ``status`` with error ``code`` (none: no body, as a
    gateway's 502 or 504 has none of Batch's JSON)."""
    transport = _BatchAnswers(responses={("GET", "/jobs/j/tasks"): (status, _batch_error(code) if code else None)})
    with pytest.raises(Exception) as raised:
        pool(transport).poll("j", ["s00000-a1"])
    return raised.value


def as_received(name: str, exc: BaseException) -> Exception:
    """The exception the SDK raises in the orchestrator for the failed activity (``Reason \\n Details``)."""
    return Exception(f"{activity_failure_reason(name, exc)} \n Traceback (most recent call last): ...")


@pytest.mark.parametrize("failure, busy", [
    (lambda: storage_failure(503, "ServerBusy"), True),
    (lambda: storage_failure(500, "OperationTimedOut"), True),
    (lambda: storage_failure(500, "InternalError"), True),
    (lambda: storage_failure(404, "BlobNotFound"), False),
    (lambda: storage_failure(403, "AuthorizationPermissionMismatch"), False),
    (lambda: store_failure(503, "ServerBusy", "read_bytes"), True),
    (lambda: store_failure(503, "ServerBusy", "write_bytes"), True),
    (lambda: store_failure(503, "ServerBusy", "list_names"), True),
    (lambda: store_failure(500, "OperationTimedOut", "read_bytes"), True),
    (lambda: store_failure(409, "BlobAlreadyExists", "write_bytes"), False),
    (lambda: store_failure(403, "AuthorizationPermissionMismatch", "list_names"), False),
    (lambda: batch_failure(503, "ServerBusy"), True),
    (lambda: batch_failure(500, "InternalError"), True),
    # batch-retry-after-errors.md: any 5xx, and 429/503 throttling, "can all be retried", whatever the body says
    (lambda: batch_failure(502, ""), True),
    (lambda: batch_failure(503, ""), True),
    (lambda: batch_failure(504, ""), True),
    (lambda: batch_failure(429, ""), True),
    (lambda: batch_failure(500, "InternalServerError"), True),
    (lambda: batch_failure(400, "InvalidQueryParameterValue"), False),
    (lambda: batch_failure(403, "Forbidden"), False),
    (lambda: StorageUnavailable("storage is busy or unavailable (HTTP 503)"), True),
    (lambda: BatchUnavailable("Azure Batch kept answering 503"), True),
    # a job disabled outside trapbatch is waited out as an outage; one terminated or deleted fails the group at once
    (lambda: JobDisabled("the pool job was disabled outside trapbatch"), True),
    (lambda: JobClosed("the pool job was terminated while 2 shard attempt(s) of this group were in flight"), False),
    (lambda: ServiceRequestError("connection refused"), True),
    (lambda: ConnectionResetError("reset by peer"), True),
    (lambda: ResourceNotFoundError("ServerBusy named in a message of a 404"), False),
    (lambda: ValueError("a request with ErrorCode:ServerBusy in its text is still a ValueError"), False),
    (lambda: KeyError("shards"), False),
])
def test_busy_failures_are_told_from_the_others_by_what_the_orchestrator_receives(failure: Any, busy: bool) -> None:
    assert is_busy(as_received("plan_listing", failure())) is busy


def test_a_function_timeout_is_not_busy() -> None:
    text = activity_failure_reason("merge_part", TimeoutError("Timeout value of 00:30:00 exceeded"), timed_out=True)
    assert not is_busy(Exception(text))


def test_the_knob_is_read_from_the_inputs_knobs_or_its_top_level_and_is_zero_without_it() -> None:
    assert busy_attempts({"knobs": {"busy_retry_attempts": 8}}) == 8
    assert busy_attempts({"task_id": "t", "busy_retry_attempts": 5}) == 5
    assert busy_attempts({"knobs": {"images_per_shard": 10}}) == 0  # a task started before the knob
    assert busy_attempts({"task_id": "t"}) == busy_attempts(None) == busy_attempts("text") == 0
    assert busy_attempts({"busy_retry_attempts": True}) == 0


def test_a_task_waits_a_busy_storage_out_with_growing_waits_where_its_knobs_allow() -> None:
    busy = storage_failure(503, "ServerBusy")
    run = run_task(task_input(busy_retry_attempts=8), flaky_listing(7, busy))

    assert run.status == "Completed"
    assert len(run.calls(c.PLAN_LISTING)) == 8
    waits = [t.delay_s for t in run.orchestrator_timers][:7]
    assert waits == [15.0, 30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    assert waits[0] == BUSY_FIRST_DELAY_S and max(waits) == BUSY_MAX_DELAY_S


class _ThrottlingBatch(_BatchAnswers):
    """Azure Batch throttling the task listing with a 429 whose ``Retry-After`` asks for ``seconds``."""

    def __init__(self, seconds: int | str) -> None:
        super().__init__(responses={("GET", "/jobs/j/tasks"): (429, _batch_error("TooManyRequests"))})
        self.seconds = seconds

    def send(self, request: Any, **kwargs: Any) -> Any:
        response = super().send(request, **kwargs)
        response.headers = {**response.headers, "Retry-After": str(self.seconds)}
        return response


def test_a_busy_retry_waits_at_least_what_batchs_retry_after_asked_and_at_most_the_busy_cap() -> None:
    """articles/batch/batch-retry-after-errors.md: throttling answers carry a Retry-After, and "If you retry too
    frequently or too quickly, the retry handler will throttle". Past the client's own retries (which sleep at
    most ``RETRY_AFTER_MAX_S``), a poll throttled for two minutes came back to the orchestrator's 15 s, 30 s, 60 s
    waits and was throttled again at each; the wait now honours the header (at most ``BUSY_MAX_DELAY_S``), read
    from the failure's text (``BatchUnavailable`` says it), so replay decides alike."""
    with pytest.raises(BatchUnavailable) as raised:
        pool(_ThrottlingBatch(120)).poll("j", ["s00000-a1"])
    assert retries.asked_wait_s(as_received(c.POLL, raised.value)) == 120.0
    run = run_task(task_input(busy_retry_attempts=8), flaky_listing(7, raised.value))
    assert run.status == "Completed"
    assert [t.delay_s for t in run.orchestrator_timers][:7] == [120.0, 120.0, 120.0, 120.0, 240.0, 300.0, 300.0]

    with pytest.raises(BatchUnavailable) as raised:
        pool(_ThrottlingBatch(86400)).poll("j", ["s00000-a1"])
    assert "asked to wait 86400 s" in str(raised.value)
    run = run_task(task_input(busy_retry_attempts=4), flaky_listing(2, raised.value))
    assert [t.delay_s for t in run.orchestrator_timers][:2] == [BUSY_MAX_DELAY_S, BUSY_MAX_DELAY_S]
    assert retries.asked_wait_s(as_received(c.POLL, batch_failure(429, ""))) == 0.0  # no header: no words


@pytest.mark.parametrize("header", ["9" * 400, "12345678901"])
def test_a_retry_after_too_long_to_say_in_seconds_waits_the_busy_cap_and_fails_nothing(header: str) -> None:
    """RFC 9110 10.2.3: delay-seconds is ``1*DIGIT``, no upper bound. A Retry-After of 400 digits is an infinite float
    (``math.ceil`` of it raised OverflowError while the ``BatchUnavailable`` was worded, so the poll failed as a bug,
    not busy, and the task with it); one of 11 digits was worded whole but ``asked_wait_s`` reads at most 9, so the
    wait asked for was dropped and the orchestrator came back after 15 s. Either waits ``BUSY_MAX_DELAY_S``."""
    with pytest.raises(BatchUnavailable) as raised:
        pool(_ThrottlingBatch(header)).poll("j", ["s00000-a1"])
    assert retries.asked_wait_s(as_received(c.POLL, raised.value)) >= BUSY_MAX_DELAY_S
    run = run_task(task_input(busy_retry_attempts=4), flaky_listing(2, raised.value))
    assert run.status == "Completed"
    assert [t.delay_s for t in run.orchestrator_timers][:2] == [BUSY_MAX_DELAY_S, BUSY_MAX_DELAY_S]


def test_a_busy_failure_past_the_knobs_attempts_fails_the_task_with_its_message() -> None:
    run = run_task(task_input(busy_retry_attempts=4), flaky_listing(9, storage_failure(503, "ServerBusy")))

    assert run.status == "Failed" and len(run.calls(c.PLAN_LISTING)) == 4
    assert "ServerBusy" in (run.error or "")
    assert run.custom_status["stage"] == Stage.failed
    # what a person reads: the step, how long it waited, the service's code, and what to do; not the storage SDK's
    # first line ("Operation returned an invalid status ''"), which said none of it
    error = run.custom_status["error"]
    assert error.startswith(f"{c.PLAN_LISTING} failed 4 times over 2+ minutes because a service stayed busy")
    assert "(ServerBusy)" in error and "TRAPBATCH_BUSY_RETRY_ATTEMPTS" in error
    # a failed first run is resumed by its own request as it was: "only_new" would start a run reusing nothing
    assert 'without "rerun" or "only_new", resumes it' in error and 'again later with "only_new"' not in error


def test_a_shard_group_whose_batch_account_stays_busy_fails_the_task_after_its_outage_limit_saying_so() -> None:
    """A poll that stays busy through its busy retries no longer fails the task (orchestrations.shards "Outages");
    an outage longer than the group's limit does, saying since when and what to do."""
    answer = activities(shards=1)

    def busy_batch(name: str, payload: Any) -> Any:
        if name == c.POLL:
            raise batch_failure(503, "ServerBusy")
        if name == c.STOP_GROUPS:  # the run's other groups (none here) stop before the group fails
            return {"stopped": True}
        return answer(name, payload)

    run = run_task(task_input(busy_retry_attempts=3 + 1), busy_batch)

    assert run.status == "Failed"
    error = run.custom_status["error"]
    assert error.startswith("the pool or its storage has been out of reach since ")
    assert f"{c.POLL} stayed busy" in error and "ServerBusy" in error
    assert 'post the same request again, without "rerun" or "only_new"' in error


def test_other_failures_keep_three_calls_however_many_busy_ones_the_knob_allows() -> None:
    run = run_task(task_input(busy_retry_attempts=8), flaky_listing(9, storage_failure(404, "ContainerNotFound")))

    assert run.status == "Failed" and len(run.calls(c.PLAN_LISTING)) == STORAGE_RETRY.attempts == 3
    assert [t.delay_s for t in run.orchestrator_timers][:2] == [2.0, 4.0]


def test_a_task_started_before_the_knob_replays_its_three_calls() -> None:
    """Its input has no ``busy_retry_attempts`` (0): a busy failure is retried as any other, as it was when it ran."""
    data = task_input()
    data["knobs"].pop("busy_retry_attempts")
    run = run_task(data, flaky_listing(9, storage_failure(503, "ServerBusy")))

    assert run.status == "Failed" and len(run.calls(c.PLAN_LISTING)) == 3
    assert [t.delay_s for t in run.orchestrator_timers][:2] == [2.0, 4.0]


def test_a_parallel_step_retries_only_its_busy_calls_with_the_busy_waits() -> None:
    """``call_all`` (the merge parts here): a round failed busy waits as a busy call, and only the calls that had
    not succeeded are made again."""
    answer = activities(shards=1)
    seen = {"n": 0}

    def flaky(name: str, payload: Any) -> Any:
        if name == c.MERGE_PART:
            seen["n"] += 1
            if seen["n"] <= 4:
                raise batch_failure(503, "ServerBusy") if seen["n"] % 2 else storage_failure(503, "ServerBusy")
        return answer(name, payload)

    run = run_task(task_input(busy_retry_attempts=6), flaky)

    assert run.status == "Completed" and len(run.calls(c.MERGE_PART)) == 5
    merge_waits = [t.delay_s for t in run.orchestrator_timers if t.delay_s >= BUSY_FIRST_DELAY_S]
    assert merge_waits == [15.0, 30.0, 60.0, 120.0]


def test_a_shard_group_polls_through_a_busy_batch_account_and_records_the_rounds_size() -> None:
    s0 = shard_id(0)
    scripted = Pool()
    failures = {"left": 5}

    def flaky(name: str, payload: Any) -> Any:
        if name == c.POLL and failures["left"]:
            failures["left"] -= 1
            raise batch_failure(503, "ServerBusy")
        return scripted(name, payload)

    knobs = OrchestrationKnobs(busy_retry_attempts=8).to_dict()
    run = run_orchestrator(run_shards, {"task_id": GROUP_TASK, "job_id": GROUP_TASK, "knobs": knobs, "shards": [s0],
                                        "round_events": round_events(8)}, flaky)

    assert run.status == "Completed" and run.output["done"] == 1
    assert len(run.calls(c.POLL)) == 6
    # the group's own status says it waits (the task's status shows it: tests/unit/test_status_progress.py)
    waits = [s["waiting"] for s in run.statuses if isinstance(s, dict) and "waiting" in s]
    assert [w["attempt"] for w in waits] == [2, 3, 4, 5, 6] and {w["step"] for w in waits} == {c.POLL}
    assert "waiting" not in run.custom_status


def test_busy_retries_decode_the_orchestrations_input_once_an_episode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every replayed busy retry read ``busy_retry_attempts`` by decoding the whole input again (the SDK keeps it as
    text): a group's input holds every shard's state (110 KiB at 1,000 shards), and each episode replays every retry
    of its generation, so a 6-hour Batch outage spent 54 % of a 1,000-shard group's replay CPU there (15 of 28 s).
    Now once an episode, whatever the number of retries; the waits and calls are as before."""
    from azure.durable_functions import DurableOrchestrationContext

    decoded = {"by_retries": 0}
    real = DurableOrchestrationContext.get_input

    def counted(self: DurableOrchestrationContext, *args: Any, **kwargs: Any) -> Any:
        decoded["by_retries"] += sys._getframe(1).f_globals.get("__name__") == retries.__name__
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DurableOrchestrationContext, "get_input", counted)
    failures = {"left": 7}

    def flaky(name: str, payload: Any) -> Any:
        if name == c.POLL and failures["left"]:
            failures["left"] -= 1
            raise batch_failure(503, "ServerBusy")
        return Pool()(name, payload)

    knobs = OrchestrationKnobs(busy_retry_attempts=8).to_dict()
    run = run_orchestrator(run_shards, {"task_id": GROUP_TASK, "job_id": GROUP_TASK, "knobs": knobs,
                                        "shards": [shard_id(0)], "round_events": round_events(8)}, flaky)

    assert run.status == "Completed" and len(run.calls(c.POLL)) == 8
    # the round's back-off before the first poll, then the poll's busy waits
    assert [t.delay_s for t in run.orchestrator_timers] == [30.0, 15.0, 30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    # an episode that replays a busy failure decodes the input for it once (the first failure's episode on)
    assert 7 <= decoded["by_retries"] <= run.episodes


def test_a_round_counts_every_call_a_busy_failure_may_make() -> None:
    """``round_events`` bounds what one poll round adds to a generation's history; with more calls per step it grows,
    so a generation still goes on as new before ``history_events``."""
    assert ROUND_EVENTS == 72  # what groups recorded before busy retries (and before the SUBMIT below was counted)
    # Four calls a round (poll, SUBMIT of the shards it named unknown, RESUBMIT, next SUBMIT), each with its attempts
    # and the retry timers between them, a timer, a cancel and 4 closing events; groups started before the unknown
    # shards' SUBMIT was counted recorded three calls (72 here, 192 at 8) in their input and replay with that.
    assert round_events(0) == round_events(3) == 4 * (1 + 4 * 5 + 1) + 4 == 92
    assert round_events(8) == 4 * (1 + 4 * 15 + 1) + 4 == 252
    run = run_task(task_input(busy_retry_attempts=8, shards_per_group=2), activities(shards=3))
    assert {s.input["round_events"] for s in run.sub_orchestrations} == {round_events(8)}


def test_an_after_task_orchestration_reads_the_knob_from_its_inputs_top_level() -> None:
    """The preview expiry's input has no knobs: its starter records ``busy_retry_attempts`` beside ``task_id``."""
    seen = {"n": 0}

    def deleting(name: str, payload: Any) -> Any:
        assert name == c.DELETE_PREVIEWS
        seen["n"] += 1
        if seen["n"] <= 4:
            raise storage_failure(503, "ServerBusy")
        return {"deleted": 3}

    expires = T0.isoformat()
    waited = run_orchestrator(expire_previews, {"task_id": "t", "expires": expires, "busy_retry_attempts": 5},
                              deleting)
    assert waited.status == "Completed" and len(waited.calls(c.DELETE_PREVIEWS)) == 5
    seen["n"] = 0
    legacy = run_orchestrator(expire_previews, {"task_id": "t", "expires": expires}, deleting)
    assert legacy.status == "Failed" and len(legacy.calls(c.DELETE_PREVIEWS)) == 3


def test_the_app_records_the_knob_in_new_tasks_and_refuses_values_outside_its_range() -> None:
    env = {"AzureWebJobsStorage": "x"}
    assert Settings.from_env(env).knobs.busy_retry_attempts == DEFAULT_BUSY_RETRY_ATTEMPTS == 8
    assert Settings.from_env({**env, "TRAPBATCH_BUSY_RETRY_ATTEMPTS": "12"}).knobs.busy_retry_attempts == 12
    for bad in ("2", "21", "many"):
        with pytest.raises(ConfigError, match="TRAPBATCH_BUSY_RETRY_ATTEMPTS"):
            Settings.from_env({**env, "TRAPBATCH_BUSY_RETRY_ATTEMPTS": bad})
    assert OrchestrationKnobs.from_dict({}).busy_retry_attempts == 0  # an input from before the knob


def test_the_default_knob_waits_about_eighteen_minutes() -> None:
    waits = [min(BUSY_FIRST_DELAY_S * 2 ** (n - 1), BUSY_MAX_DELAY_S) for n in range(1, DEFAULT_BUSY_RETRY_ATTEMPTS)]
    assert 17 * 60 <= sum(waits) <= 19 * 60
    assert retries.BUSY_TYPES >= {"StorageUnavailable", "BatchUnavailable", "TaskHubUnavailable"}


def test_a_step_waiting_out_a_busy_service_says_so_in_the_status_until_it_succeeds() -> None:
    """While the timer runs the task's status names the step, the service's code, the attempt and when it is tried
    again (``GET /api/tasks/{id}`` shows the custom status; the CLI prints it); once the step succeeded it is gone."""
    run = run_task(task_input(busy_retry_attempts=8), flaky_listing(2, storage_failure(503, "ServerBusy")))

    assert run.status == "Completed"
    waits = [s["waiting"] for s in run.statuses if isinstance(s, dict) and "waiting" in s]
    assert [(w["step"], w["attempt"], w["of"]) for w in waits] == [(c.PLAN_LISTING, 2, 8), (c.PLAN_LISTING, 3, 8)]
    assert all("ServerBusy" in w["reason"] and "Activity function" not in w["reason"] for w in waits)
    first_timer = run.orchestrator_timers[0]
    assert waits[0]["at"] == first_timer.fire_at.isoformat()
    after = run.statuses[[i for i, s in enumerate(run.statuses) if isinstance(s, dict) and "waiting" in s][-1] + 1]
    assert after.get("stage") == Stage.enumerating and "waiting" not in after
    assert "waiting" not in run.custom_status


def test_a_step_that_never_got_through_leaves_no_waiting_note_in_the_failed_status() -> None:
    run = run_task(task_input(busy_retry_attempts=3), flaky_listing(9, storage_failure(503, "ServerBusy")))

    assert run.status == "Failed" and "waiting" not in run.custom_status
    assert run.custom_status["stage"] == Stage.failed


def test_other_failures_wait_without_a_note() -> None:
    run = run_task(task_input(busy_retry_attempts=8), flaky_listing(2, ValueError("bad plan")))

    assert run.status == "Completed"
    assert not [s for s in run.statuses if isinstance(s, dict) and "waiting" in s]


def test_the_cli_shows_the_wait_beside_the_progress() -> None:
    from cli.progress import progress_line

    st = {"stage": "detecting", "images": 100, "images_done": 40, "shards": 4,
          "waiting": {"step": "poll_shards", "reason": "(ServerBusy) ServerBusy", "attempt": 3, "of": 8,
                      "at": "2026-12-05T15:10:00+00:00"}}
    line = progress_line(st)
    assert line.startswith("detecting: 40/100 images")
    assert line.endswith("; waiting for a busy service ((ServerBusy) ServerBusy): poll_shards tried again at "
                         "2026-12-05T15:10:00+00:00, attempt 3 of 8")
    assert progress_line({k: v for k, v in st.items() if k != "waiting"}) == line.split("; waiting")[0]
    # a shard group waiting out an outage (orchestrations.shards): since when, and when it gives up
    outage = {"step": "poll_shards", "reason": "(ServerBusy) ServerBusy", "at": "2026-12-05T16:10:00+00:00",
              "since": "2026-12-05T15:00:00+00:00", "until": "2026-12-05T21:00:00+00:00"}
    assert progress_line({**st, "waiting": outage}).endswith(
        "poll_shards tried again at 2026-12-05T16:10:00+00:00; out of reach since 2026-12-05T15:00:00+00:00, the "
        "task fails at 2026-12-05T21:00:00+00:00")
    assert progress_line({**st, "waiting": {**outage, "attempt": 3, "of": 8}}).endswith(
        "16:10:00+00:00, attempt 3 of 8; out of reach since 2026-12-05T15:00:00+00:00, the task fails at "
        "2026-12-05T21:00:00+00:00")


def test_a_status_near_the_extensions_16_kb_limit_gets_no_waiting_note() -> None:
    """The extension refuses a custom status over 16 KB (UTF-16 of the compact JSON; devhost fidelity row 8) and fails
    the orchestration: a note about waiting must never push a large status over it."""
    from devhost.engine import custom_status_error
    from orchestrations.retries import show_waiting

    class Context:
        custom_status: Any = None

        def set_custom_status(self, status: Any) -> None:
            self.custom_status = status

    note = {"step": "merge_part", "reason": "x" * 200, "attempt": 2, "of": 8, "at": "2026-12-05T15:10:00+00:00"}
    for size in (100, 7_000, 7_900, 8_100):
        context = Context()
        context.custom_status = {"stage": "merging", "filler": "y" * size}
        show_waiting(context, note)  # type: ignore[arg-type]
        assert custom_status_error(context.custom_status) is None, size
        assert ("waiting" in context.custom_status) is (size <= 7_000), size


@pytest.mark.parametrize("failure", [
    lambda: batch_failure(429, "TooManyRequests"),  # Batch's "requests for the same pool ... 30 seconds apart"
    lambda: ServiceResponseError("connection dropped"), lambda: ServiceRequestTimeoutError("connect timed out"),
    lambda: ServiceResponseTimeoutError("read timed out"), lambda: IncompleteReadError("body cut short"),
    lambda: TimeoutError("timed out"), lambda: ConnectionError("gone"), lambda: ConnectionAbortedError("aborted"),
    lambda: ConnectionRefusedError("refused"),
])
def test_every_transport_failure_and_a_batch_429_is_busy(failure: Any) -> None:
    assert is_busy(as_received("poll_shards", failure()))


def test_the_busy_reason_names_the_services_code_once_in_at_most_a_status_line() -> None:
    storage = as_received("plan_listing", storage_failure(503, "ServerBusy"))
    assert retries.busy_reason(storage) == "Operation returned an invalid status '' (ServerBusy)"
    batch = as_received("poll_shards", batch_failure(503, "ServerBusy"))
    said = retries.busy_reason(batch)  # the pool's BatchUnavailable: status and Batch's code first, once
    assert said.startswith("Azure Batch answered HTTP 503 ServerBusy to a task listing of job j")
    assert said.count("ServerBusy") == 1 and len(said) <= 200
    assert len(retries.busy_reason(as_received("plan_listing", StorageUnavailable("s" * 400)))) == 200


class _Context:
    """What ``_retry_delay_s`` and ``show_waiting`` use of an orchestration context."""

    def __init__(self, data: Any, status: Any = None) -> None:
        self.data, self.custom_status = data, status
        self.current_utc_datetime = datetime(2026, 12, 5, 15, tzinfo=timezone.utc)

    def get_input(self) -> Any:
        return self.data

    def set_custom_status(self, status: Any) -> None:
        self.custom_status = status


def test_a_knob_of_the_policys_own_calls_keeps_the_policys_waits_and_failure() -> None:
    """Histories recorded with ``busy_retry_attempts`` 3 (its lowest) hold the 2 s and 4 s timers of STORAGE_RETRY:
    they must replay alike, and the last failure is the activity's own, not ServiceStayedBusy."""
    busy = as_received("plan_listing", storage_failure(503, "ServerBusy"))
    context = _Context({"knobs": {"busy_retry_attempts": 3}}, {"stage": "enumerating"})
    delays = [retries._retry_delay_s(context, "plan_listing", STORAGE_RETRY, n, busy) for n in (1, 2, 3)]
    assert delays == [2.0, 4.0, None] and context.custom_status == {"stage": "enumerating"}


def test_the_waiting_note_goes_when_a_later_failure_is_not_busy_or_the_busy_retries_end() -> None:
    busy = as_received("exports", storage_failure(503, "ServerBusy"))
    context = _Context({"knobs": {"busy_retry_attempts": 8}}, {"stage": "exporting"})
    assert retries._retry_delay_s(context, "exports", STORAGE_RETRY, 1, busy) == BUSY_FIRST_DELAY_S
    assert context.custom_status["waiting"]["attempt"] == 2
    assert retries._retry_delay_s(context, "exports", STORAGE_RETRY, 2, ValueError("bad")) == 4.0
    assert context.custom_status == {"stage": "exporting"}  # not waiting for a busy service any more

    retries._retry_delay_s(context, "exports", STORAGE_RETRY, 7, busy)
    assert "waiting" in context.custom_status
    with pytest.raises(retries.ServiceStayedBusy) as gave_up:
        retries._retry_delay_s(context, "exports", STORAGE_RETRY, 8, busy)
    assert context.custom_status == {"stage": "exporting"}  # a caller that outlasts it sets its own note
    # 15 s doubling, at most 5 min: 15+30+60+120+240+300+300 s between the 8 calls
    assert str(gave_up.value).startswith("exports failed 8 times over 18+ minutes because a service stayed busy")


def test_a_waiting_note_goes_in_up_to_15_kb_exactly_and_a_stale_one_goes_when_the_new_one_does_not_fit() -> None:
    note = {"step": "merge_part", "reason": "x" * 200, "attempt": 2, "of": 8, "at": "2026-12-05T15:10:00+00:00"}
    base = json.dumps({"stage": "merging", "filler": "", "waiting": note}, separators=(",", ":"), ensure_ascii=False)
    filler = (15 * 1024 - 2 * len(base)) // 2  # characters of one UTF-16 unit each
    for size, noted in ((filler, True), (filler + 1, False)):
        context = _Context(None, {"stage": "merging", "filler": "y" * size})
        retries.show_waiting(context, note)  # type: ignore[arg-type]
        assert ("waiting" in context.custom_status) is noted, size

    stale = {**note, "reason": "x", "attempt": 1}
    context = _Context(None, {"stage": "merging", "filler": "y" * (filler + 1), "waiting": stale})
    retries.show_waiting(context, note)  # type: ignore[arg-type]
    assert context.custom_status == {"stage": "merging", "filler": "y" * (filler + 1)}
