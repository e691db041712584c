"""AzureBatchPool: one Azure Batch job per trapbatch task, one Batch task per shard attempt (azure-batch 15.x).

Why these choices:
* Deterministic ids (job = task id, Batch task = ``<shard>-a<attempt>``) make submission idempotent: "TaskExists"
  is success (``submit``), and ``create_job`` on an existing job is caught here.
* ``max_task_retry_count=0``: Batch must not re-run a whole shard; the orchestration resubmits only the missing images.
  ``max_wall_clock_time`` terminates a hung task, which then completes as a failure and gets resubmitted; Batch
  reports it with an exit code (0xC000013A, batch-job-task-error-checking.md "Constraint errors") and
  ``failureInfo.code`` TaskEnded, carried as ``TaskInfo.failure_code`` so the app knows the pool ended it.
* No keys or SAS in any request: the worker reaches storage through the pool's user-assigned managed identity
  (``AZURE_CLIENT_ID`` selects it) and ``TRAPBATCH_STORAGE_ACCOUNT_URL``; the Batch agent uploads each task's
  ``stdout.txt`` / ``stderr.txt`` with the same identity (``identity_resource_id``); this client authenticates with
  Entra ID.
* The container run options carry no ``--gpus``: on GPU VM sizes Batch gives container tasks the GPUs itself
  (batch-docker-container-workloads.md, "Container settings for the task"). ``--rm`` (the doc's own example) removes
  each shard's container when it exits; the node-shared caches outlive it (``worker.caches``).
* ``poll`` asks Batch only about the tasks it is given, by id, so a poll costs what its shard group has in flight,
  not what the whole job has ever run (``poll``); ``changes`` asks only about the tasks whose state changed since
  the last call, in one listing (``changes``).
* ``close_job`` terminates the job when its trapbatch task ends: only active jobs count against the account's job
  quota (batch-quota-limit.md: 100-300 active jobs and job schedules per account; completed jobs have no limit). Its
  unfinished tasks are terminated first: a terminated job leaves its active tasks active (``close_job``).
"""
from __future__ import annotations

import logging
import math
import time
import urllib.parse
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

from gpu_batch import layout
from gpu_batch.pool.base import (JobClosed, JobQuotaReached, JobState, PoolChanges, ShardTask, TaskInfo, TaskResult,
                                 TaskState, closed_outside_hint, worker_module)

logger = logging.getLogger(__name__)

# Batch error codes (BatchErrorCodeStrings) that mean "this job is already closed, or closing".
_JOB_CLOSED_CODES = frozenset({"JobCompleted", "JobBeingTerminated", "JobBeingDeleted"})
# ... and those that mean it was deleted: a job Batch no longer has, or is deleting (Job - Delete: "All update
# operations on a Job that is in deleting state will fail with status code 409 (Conflict)").
_JOB_DELETED_CODES = frozenset({"JobNotFound", "JobBeingDeleted"})
TASK_RETENTION = timedelta(days=1)
_TASK_ENDED_CODES = frozenset({"TaskCompleted", "TaskNotFound", "JobNotFound"})  # terminating what has ended
# Batch's job states (azure-batch 15 ``BatchJobState``) as trapbatch tells them apart (``JobState``); one Batch may add
# later counts as active: a state trapbatch does not know is no reason to fail a task.
_JOB_STATES = {"active": JobState.active, "enabling": JobState.active, "disabling": JobState.disabled,
               "disabled": JobState.disabled, "terminating": JobState.closed, "completed": JobState.closed,
               "deleting": JobState.deleted}
_TASK_SELECT = ["id", "state", "executionInfo"]
_CHANGES_SELECT = ["id", "state", "stateTransitionTime", "executionInfo"]
# How far a change cursor reaches back. Batch's own monitoring sample allows "a clock skew (which is within 30 seconds
# approximately for Azure)" between client and service (Azure-Samples/azure-batch-samples,
# CSharp/BatchMetrics/BatchMetrics/MetricMonitor.cs); twice that covers it, and a change reported twice is harmless.
CHANGE_OVERLAP = timedelta(seconds=60)
_UNFINISHED_STATES = (TaskState.active, TaskState.preparing, TaskState.running)
# The worker image's interpreter (gpu_batch/Dockerfile: ``python3.11 -m venv /opt/venv``), named by its absolute path:
# batch-docker-container-workloads.md, "Troubleshoot container tasks": "Specify an absolute path in the task command
# line" (a program found only through the image's PATH was reported not found, MicrosoftDocs/azure-docs#16748).
WORKER_PYTHON = "/opt/venv/bin/python"
# REST "Task - Add Collection": "The maximum number of tasks that can be added per request is 100", and the body at
# most 1 MB (answered 413 RequestBodyTooLarge, upon which a chunk is halved).
TASKS_PER_REQUEST = 100
# How long one submission keeps retrying Batch's server errors (5xx, 429, or a task answered "servererror") before it fails
# with BatchUnavailable; the orchestration's own retries (orchestrations.retries.POOL_RETRY) come on top.
SUBMIT_DEADLINE_S = 300.0
_SUBMIT_FIRST_DELAY_S = 2.0
_SUBMIT_MAX_DELAY_S = 30.0
# The longest ``Retry-After`` the Batch client's own retries sleep (``_bounded_retry_policy``); an answer asking for
# longer comes back to the caller (``submit``: at most ``SUBMIT_DEADLINE_S`` in all; other calls: BatchUnavailable).
RETRY_AFTER_MAX_S = 30.0


class BatchUnavailable(RuntimeError):
    """Azure Batch kept answering with server errors: a submission until ``SUBMIT_DEADLINE_S`` had passed, any other
    request past the client's own retries (``_unavailable_on_server_errors``)."""


class TasksRefused(RuntimeError):
    """Azure Batch refused some of a submission's tasks for what they are (a client error other than TaskExists)."""


# What a task's failure text keeps of Batch's ``failureInfo`` (``_failure_text``, ``_failure_code``). Batch sets these
# texts, not trapbatch, and nothing bounds them; they travel in every poll's answer (the shard group's history), the
# given-up shards' examples and the task's status (whose 16 KB the Durable extension enforces: core/status_size.py), so
# each is cut here, where it enters trapbatch. Codes are identifiers ("TaskEnded", "ContainerPullImageFailed"), a
# message a sentence or two: real ones are never cut. The whole text is then at most 64 + 2 + 400 + 2 + 500 + 1
# characters, under the 1,000 that activities/pool.py keeps of a worker's own message.
FAILURE_CODE_CHARS = 64
FAILURE_MESSAGE_CHARS = 400
FAILURE_DETAILS_CHARS = 500


def _cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters, a cut one ending in "…" (as ``core.status_size.shorten``)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure_code(failure: Any) -> str | None:
    """``failureInfo.code`` (TaskEnded: Batch ended the task, ``exit_codes.pool_ended``), at most
    ``FAILURE_CODE_CHARS``; None when Batch gave none."""
    return _cut(str(getattr(failure, "code", None) or ""), FAILURE_CODE_CHARS) or None


def _failure_text(failure: Any) -> str | None:
    """Batch's ``failureInfo`` as one line: its code first, where there is one, then its message, then the values of
    its ``details``; each cut (``FAILURE_CODE_CHARS``, ``FAILURE_MESSAGE_CHARS``, ``FAILURE_DETAILS_CHARS``).

    Why the code: a task that failed before it ran (an image that cannot be pulled, an output upload refused) has no
    exit code, and the code (e.g. ``ContainerPullImageFailed``) is what says which (batch-job-task-error-checking.md).
    Why the details: for a container failure the message is generic and the reason is in them, a list of name/value
    pairs (``ContainerInvalidSettings``: "At least one value of specified task container settings is invalid", with
    the detail "Some supplied docker options are not recognized or are unsupported: --gpus"); without them the
    operator saw only the generic message.
    """
    raw = getattr(failure, "message", None)
    message = _cut(str(raw), FAILURE_MESSAGE_CHARS) if raw else None
    code = _failure_code(failure)
    if code and (not message or code not in message):
        text: str | None = f"{code}: {message}" if message else code
    else:
        text = message
    values = [str(v) for d in getattr(failure, "details", None) or []
              if (v := getattr(d, "value", None)) and str(v) not in (text or "")]
    if not values:
        return text
    details = _cut("; ".join(values), FAILURE_DETAILS_CHARS)
    return f"{text} ({details})" if text else details


def _error_code(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "error", None), "code", "") or "")


def _job_closed(job_id: str, code: str) -> JobClosed:
    """What a submission to a job Batch answered ``code`` for (``_JOB_CLOSED_CODES``, ``_JOB_DELETED_CODES``) fails
    with: what happened to the job and what to do (``closed_outside_hint``)."""
    if code in _JOB_DELETED_CODES:
        return JobClosed(f"job {job_id} was deleted ({code}): Batch accepts no tasks for a job it deletes or no longer "
                         f"has; {closed_outside_hint(job_id)}")
    return JobClosed(f"job {job_id} is closed ({code}): Batch accepts no tasks for a terminated job; "
                     f"{closed_outside_hint(job_id)}")


@contextmanager
def _unavailable_on_server_errors(doing: str) -> Iterator[None]:
    """Batch's answer of 5xx or 429 to ``doing``, past azure-core's own retries, as ``BatchUnavailable``; any other
    error as it is.

    Why: Batch documents every such answer as one to retry later ("Internal server errors - these are standard 5xx
    status code HTTP response"; throttling "429 or 503 status code HTTP responses with the Retry-after header"; "They
    can all be retried", articles/batch/batch-retry-after-errors.md), whatever its body says, and ``submit`` retried
    them so. The orchestrator judges a failed activity from its text alone (``orchestrations.retries.is_busy``): an
    SDK ``HttpResponseError`` counted as busy only with one of four error codes in its text, so a 502 or 504 from a
    gateway, a 503 or 429 without Batch's JSON body, or a 500 with another code failed the poll, cancel or close as
    a refusal, and the task with it, instead of being waited out as an outage of Batch. ``BatchUnavailable`` is busy
    by its type; the status and Batch's code (or the HTTP reason) stay in its text.
    """
    from azure.core.exceptions import HttpResponseError

    try:
        yield
    except HttpResponseError as exc:
        status = getattr(exc, "status_code", None) or 0
        if not (500 <= status <= 599 or status == 429):
            raise
        said = _error_code(exc) or str(getattr(exc, "reason", "") or "").strip() or "no error code"
        raise BatchUnavailable(f"Azure Batch answered HTTP {status} {said} to {doing}, after the client's own "
                               "retries: busy or out of reach for now. If it lasts, check azure.status.microsoft.com "
                               f"for Batch in the account's region{asked_wait_words(_retry_after_s(exc))}") from exc


def asked_wait_words(seconds: float) -> str:
    """How a ``BatchUnavailable`` message says Batch's ``Retry-After`` (nothing without one): the orchestrator, which
    sees a failed activity as text alone, waits at least that long before calling again
    (``orchestrations.retries.asked_wait_s`` reads these words; a test pins the two together). Why: past the
    client's own retries (which sleep at most ``RETRY_AFTER_MAX_S``), a poll or close throttled with a Retry-After of
    minutes came back after the orchestrator's 15 s, 30 s ... and was throttled again ("If you retry too frequently
    or too quickly, the retry handler will throttle": articles/batch/batch-retry-after-errors.md).

    At most ``ASKED_WAIT_WORDS_MAX_S`` is said: the header's delay-seconds is ``1*DIGIT`` with no bound (RFC 9110
    10.2.3), so 400 digits are an infinite float, which ``math.ceil`` refused (OverflowError: the step failed as a
    bug instead of busy), and ``asked_wait_s`` reads at most 9 digits (a longer number asked for nothing). The
    orchestrator waits at most ``BUSY_MAX_DELAY_S`` whatever is said."""
    if not seconds > 0:  # none, or NaN
        return ""
    return f". Batch asked to wait {math.ceil(min(seconds, ASKED_WAIT_WORDS_MAX_S))} s (Retry-After)"


# The longest wait ``asked_wait_words`` says: the most ``orchestrations.retries.asked_wait_s`` reads (9 digits)
ASKED_WAIT_WORDS_MAX_S = 999_999_999


def _retry_after_s(exc: BaseException) -> float:
    """The seconds Batch's ``Retry-After`` header asks a client to wait (seconds, or an HTTP date), 0 without one.

    Why: Batch throttles with "429 or 503 status code HTTP responses with the Retry-after header", and a client that
    comes back sooner is throttled again ("If you retry too frequently or too quickly, the retry handler will
    throttle": articles/batch/batch-retry-after-errors.md). azure-core honours the header only within its own few
    retries of a request; past them ``submit`` waited its own 2, 4, 8 ... s, back before Batch had asked."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = str(headers.get("Retry-After") or headers.get("retry-after") or "").strip()
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _bounded_retry_policy() -> Any:
    """azure-core's ``RetryPolicy`` (what ``BatchClient`` makes without one: azure-batch 15.1 ``_configuration.py``),
    except that an answer whose ``Retry-After`` asks for more than ``RETRY_AFTER_MAX_S`` is not retried here.

    Why: azure-core sleeps whatever ``Retry-After`` asks, unbounded, before each of its own retries (1.41
    ``policies/_retry.py``: ``is_retry`` retries any answer of 400 or more that has the header, a POST too, and
    ``_sleep_for_retry`` sleeps its value), so a 429 or 503 asking for a day held an activity's call three days,
    past the host's function timeout, before ``submit``'s own bound was reached. Handed back instead, the answer is
    the caller's: ``submit`` waits what it asks where that fits its deadline (``_retry_after_s``), else says
    ``BatchUnavailable``, as the other calls do (``_unavailable_on_server_errors``)."""
    from azure.core.pipeline.policies import RetryPolicy

    class BoundedRetryAfter(RetryPolicy[Any, Any]):
        def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
            try:
                asked = self.get_retry_after(response)
            except ValueError:  # not a number nor an HTTP date: azure-core's own handling, as before
                asked = None
            if asked is not None and asked > RETRY_AFTER_MAX_S:
                return False
            return bool(super().is_retry(settings, response))

    return BoundedRetryAfter()


def _check_storage_account_url(url: str) -> None:
    """Refuse a storage account URL that is not a bare ``https://<host>[/]`` blob endpoint (as infra's
    ``blobEndpoint`` is).

    Why: every task carries it, in its environment and in its output files' ``containerUrl`` (the URL plus
    ``/<container>``), and Batch shows a task's definition to whoever may read the job. Batch takes a SAS in a
    ``containerUrl`` as the documented alternative to ``identityReference`` (batch-task-output-files.md), so it would
    refuse nothing: a SAS or key pasted into TRAPBATCH_STORAGE_ACCOUNT_URL went into every task, and a path or query
    made the container URL another container's, or none.

    Blanks and control characters are refused anywhere in it: ``urlsplit`` strips leading ones and drops tab, CR and
    LF wherever they are (WHATWG URL parsing, CPython ``urllib.parse._UNSAFE_URL_BYTES_TO_REMOVE``), so such a URL
    passed the check while the raw value, not the parsed one, went into every task. ``Settings.from_env`` strips the
    blanks around TRAPBATCH_STORAGE_ACCOUNT_URL (a pasted newline); what is left here was not pasted by accident."""
    parts = urllib.parse.urlsplit(url)
    blanks = any(ch <= " " or ch == "\x7f" for ch in url)
    if (blanks or parts.scheme != "https" or not parts.hostname or parts.username or parts.password or parts.query
            or parts.fragment or parts.path not in ("", "/")):
        shown = urllib.parse.urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
        raise ValueError(f"TRAPBATCH_STORAGE_ACCOUNT_URL must be the storage account's blob endpoint alone, "
                         f"https://<account>.blob.core.windows.net, without a path, query (no SAS) or credentials: "
                         f"got {shown!r}{' with a query' if parts.query else ''}"
                         f"{' with blanks or control characters' if blanks else ''} (every Batch task carries it)")


def _odata_string(value: str) -> str:
    """An OData string literal: single quotes, an inner quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def _odata_datetime(value: datetime) -> str:
    """A DateTime literal as Batch's samples write one (``DateTime'<round-trip ISO 8601>'``)."""
    return "DateTime'" + value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z'"


def _parse_cursor(cursor: str) -> datetime:
    try:
        value = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{cursor!r} is not an AzureBatchPool change cursor (an ISO 8601 UTC time)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class AzureBatchPool:
    # Task ids per list request: 40 ``id eq '...'`` terms keep the request URL near 1.5 KB once encoded.
    POLL_IDS_PER_REQUEST = 40

    def __init__(self, account_url: str, pool_id: str, image: str, identity_resource_id: str = "",
                 storage_account_url: str = "", max_task_seconds: int = 21600, credential: Any = None,
                 transport: Any = None, worker_identity_client_id: str = "", key_vault_url: str = "",
                 log_container: str = layout.DEFAULT_STATE_CONTAINER, resident: bool = False,
                 worker_tuning: Sequence[str] = ()) -> None:
        if not account_url or not pool_id or not image:
            raise ValueError("AzureBatchPool needs the Batch account URL, pool id and worker image "
                             "(TRAPBATCH_BATCH_ACCOUNT_URL, TRAPBATCH_BATCH_POOL_ID, TRAPBATCH_WORKER_IMAGE)")
        if not storage_account_url or not identity_resource_id:
            raise ValueError("AzureBatchPool needs the storage account URL and the ARM resource id of the nodes' "
                             "user-assigned identity, with which Batch uploads each task's stdout/stderr to the "
                             "task-state container (TRAPBATCH_STORAGE_ACCOUNT_URL, "
                             "TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID)")
        _check_storage_account_url(storage_account_url)
        self.account_url = account_url
        self.pool_id = pool_id
        self.image = image
        self.identity_client_id = worker_identity_client_id  # AZURE_CLIENT_ID for the worker's own storage calls
        self.identity_resource_id = identity_resource_id  # the same identity, as Batch's output files name it
        self.storage_account_url = storage_account_url
        self.log_container = log_container
        self.key_vault_url = key_vault_url  # source-account secrets, read by the nodes' identity (never passed)
        self.max_task_seconds = max_task_seconds
        self.resident = resident  # TRAPBATCH_WORKER_RESIDENT (core.settings): tasks run the resident client
        # TRAPBATCH_WORKER_TUNING: whitelisted options with checked values (core.worker_tuning), so nothing else
        # reaches the task's command line. Batch runs a command line without a shell (REST "Task - Add",
        # commandLine: "does not run under a shell"), split at spaces: every word here is an option name or a
        # number or keyword without spaces or quotes, so each reaches the worker as one argument.
        self.worker_tuning = list(worker_tuning)
        self._credential = credential
        self._transport = transport
        self._client: Any = None
        self._clock: Callable[[], float] = time.monotonic  # tests replace both to run a long outage at once
        self._sleep: Callable[[float], None] = time.sleep

    @property
    def client(self) -> Any:
        if self._client is None:
            from azure.batch import BatchClient

            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            kwargs: dict[str, Any] = {"retry_policy": _bounded_retry_policy()}
            if self._transport is not None:
                kwargs["transport"] = self._transport
            self._client = BatchClient(self.account_url, credential, **kwargs)
        return self._client

    # ---------------------------------------------------------------- jobs
    def ensure_job(self, job_id: str) -> None:
        """Create the job (no ``on_all_tasks_complete``: see ``close_job``); an existing one is fine, one Batch is
        deleting is ``JobClosed`` (deleted outside trapbatch: not created again under its id). One whose deletion is
        done would be created again (Job - Add takes the id again), so the app asks this only until the run's job was
        in the pool (``activities.pool._ensure_job_once``)."""
        from azure.batch import models as m
        from azure.core.exceptions import HttpResponseError

        job = m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=self.pool_id),
                                      display_name=f"trapbatch {job_id}")
        with _unavailable_on_server_errors(f"creating job {job_id}"):
            try:
                self.client.create_job(job)
            except HttpResponseError as exc:  # the SDK raises every 409 as ResourceExistsError, whatever its code
                code = _error_code(exc)
                if code == "JobExists":
                    return
                if code == "JobBeingDeleted":  # deleted outside trapbatch: not to be created again under its id
                    raise _job_closed(job_id, code) from exc
                if code == "ActiveJobAndScheduleQuotaReached":
                    raise JobQuotaReached(
                        f"Azure Batch refused job {job_id}: the account's quota of active jobs is reached (each "
                        "running trapbatch task holds one job). Wait for running tasks to end or cancel some, then "
                        "post the request again; or ask for a higher quota "
                        "(learn.microsoft.com/azure/batch/batch-quota-limit)") from exc
                raise

    def close_job(self, job_id: str) -> None:
        """Terminate the job's unfinished tasks, then the job: its trapbatch task has ended. A completed, terminating
        or missing job, or a task that ended meanwhile, is no error.

        Why the tasks first: Batch's Job - Terminate ends the running tasks only; "If there are any Tasks in the Job in
        the active state, they will remain in the active state" (REST Job - Terminate; azure-batch's
        ``begin_terminate_job``). A task that fails with a worker's unfixable exit (``orchestrations.shards``,
        ``ShardUnfixable``) leaves its group's other attempts in flight, so they stayed "active" under a terminated job
        for ever, while LocalPool completes them: each unfinished task is terminated by id (Task - Terminate), found by
        one listing filtered on its state with ``$select=id`` (batch-efficient-list-queries.md), so no task of a
        closed job is left to run, on either pool.

        Why not ``on_all_tasks_complete=terminatejob`` on the job instead: trapbatch adds tasks incrementally (at
        most each shard group's share of ``max_in_flight``, then resubmissions of failed shards), and Batch terminates
        such a job the moment every task added *so far* has completed, so the next submission would find it closed.
        Batch's own advice is to set it only "once you have finished adding Tasks" (OnAllTasksComplete, REST Job -
        Add), and only the orchestration knows when that is: it calls this when the task ends.
        """
        with _unavailable_on_server_errors(f"closing job {job_id}"):
            self._terminate_unfinished_tasks(job_id)
            self._terminate(job_id, "trapbatch task ended")

    def job_state(self, job_id: str) -> JobState:
        """The job's state (``JobState``), by one Job - Get with ``$select=state`` (batch-efficient-list-queries.md:
        select only what is used); a job Batch does not know (404 JobNotFound) is ``deleted``."""
        from azure.core.exceptions import HttpResponseError

        with _unavailable_on_server_errors(f"reading job {job_id}"):
            try:
                job = self.client.get_job(job_id, select=["state"])
            except HttpResponseError as exc:
                if getattr(exc, "status_code", None) == 404 or _error_code(exc) in ("JobNotFound", "JobBeingDeleted"):
                    return JobState.deleted
                raise
        return _JOB_STATES.get(str(getattr(job.state, "value", job.state) or "").lower(), JobState.active)

    def _terminate_unfinished_tasks(self, job_id: str) -> None:
        """Terminate every task of the job that is active, preparing or running; one that completed in between, or a
        job already gone or closed, is no error (``_TASK_ENDED_CODES``, ``_JOB_CLOSED_CODES``)."""
        from azure.core.exceptions import HttpResponseError

        unfinished = " or ".join(f"state eq {_odata_string(s.value)}" for s in _UNFINISHED_STATES)
        try:
            ids = [t.id for t in self.client.list_tasks(job_id, filter=unfinished, select=["id"])]
        except HttpResponseError as exc:
            if _error_code(exc) not in _TASK_ENDED_CODES | _JOB_CLOSED_CODES:
                raise
            logger.info("job %s: no tasks to terminate (%s)", job_id, _error_code(exc))
            return
        for task_id in ids:
            self.cancel(job_id, task_id)
        if ids:
            logger.info("job %s: terminated %d unfinished tasks before the job", job_id, len(ids))

    def _terminate(self, job_id: str, reason: str) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        # options must be given: azure-batch 15.1.0 builds no content-type header without a body
        from azure.batch.models._models import BatchJobTerminateOptions  # not re-exported in 15.1.0

        try:
            # The terminate request is sent here; the returned poller (the job reaching "completed") is not waited on.
            self.client.begin_terminate_job(job_id, BatchJobTerminateOptions(termination_reason=reason),
                                            polling_interval=30)
        except ResourceNotFoundError:
            logger.info("job %s: not found, nothing to terminate", job_id)
        except HttpResponseError as exc:
            if _error_code(exc) not in _JOB_CLOSED_CODES:
                raise
            logger.info("job %s: already closed (%s)", job_id, _error_code(exc))

    # ---------------------------------------------------------------- tasks
    def task_options(self, job_id: str, task: ShardTask) -> Any:
        from azure.batch import models as m

        env = [m.EnvironmentSetting(name="TRAPBATCH_STORAGE_ACCOUNT_URL", value=self.storage_account_url),
               m.EnvironmentSetting(name="TRAPBATCH_DEVICE", value="cuda")]
        if self.identity_client_id:
            env.append(m.EnvironmentSetting(name="AZURE_CLIENT_ID", value=self.identity_client_id))
        if self.key_vault_url:
            env.append(m.EnvironmentSetting(name="TRAPBATCH_KEY_VAULT_URL", value=self.key_vault_url))
        return m.BatchTaskCreateOptions(
            id=task.task_id,
            display_name=f"shard {task.shard_id} attempt {task.attempt}",
            # --device cuda: on a GPU node a CPU fall-back would only hide a broken driver (and run for hours).
            # TRAPBATCH_WORKER_RESIDENT=1 runs the resident client instead (base.worker_module): it hands the shard
            # to the server the pool's start task runs on the node (infra/app/batch.bicep, residentWorker, which
            # sets this setting too), found by its socket in the node-shared folder. Without one (or when it refuses:
            # other worker code, no CUDA) the client starts a server in this task's --rm container, which ends with
            # it, or runs the shard itself: start-up per shard, as without the setting.
            command_line=f"{WORKER_PYTHON} -m {worker_module(self.resident)} "
                         + " ".join([*task.worker_args(), "--device", "cuda", *self.worker_tuning]),
            container_settings=m.BatchTaskContainerSettings(image_name=self.image,
                                                            container_run_options="--rm --shm-size 8g",
                                                            working_directory="containerImageDefault"),
            environment_settings=env,
            # retention: the task's folder on the node (its stdout/stderr, uploaded when it completes) goes after a
            # day instead of Batch's default 7 (best-practices.md "Delete tasks when they're complete")
            # (the shard's own limit where the app gave one, ShardTask.max_seconds)
            constraints=m.BatchTaskConstraints(
                max_wall_clock_time=timedelta(seconds=task.max_seconds or self.max_task_seconds),
                retention_time=TASK_RETENTION, max_task_retry_count=0),
            user_identity=m.UserIdentity(auto_user=m.AutoUserSpecification(scope="pool", elevation_level="nonadmin")),
            output_files=[self._log_output_file(job_id, task.task_id)],
        )

    def _log_output_file(self, job_id: str, task_id: str) -> Any:
        """The task's ``stdout.txt`` and ``stderr.txt``, uploaded when it completes (success or not), one blob each.

        As batch-task-output-files.md does it: the pattern ``../std*.txt`` (the files sit in the task directory, one
        above its working directory), the task's own blob virtual directory as ``path`` (Batch adds the file name),
        ``taskcompletion``; authenticated with the nodes' user-assigned identity instead of a SAS in the URL.
        """
        from azure.batch import models as m

        container_url = f"{self.storage_account_url.rstrip('/')}/{self.log_container}"
        folder = layout.pool_log_prefix(job_id, task_id).rstrip("/")  # Batch inserts the "/" before each file name
        return m.OutputFile(
            file_pattern="../std*.txt",
            destination=m.OutputFileDestination(container=m.OutputFileBlobContainerDestination(
                container_url=container_url, path=folder,
                identity_reference=m.BatchNodeIdentityReference(resource_id=self.identity_resource_id))),
            upload_options=m.OutputFileUploadConfiguration(upload_condition=m.OutputFileUploadCondition.TASK_COMPLETION),
        )

    def submit(self, job_id: str, tasks: Sequence[ShardTask]) -> None:
        """Add the tasks, at most ``TASKS_PER_REQUEST`` a request; "TaskExists" is success (ids are deterministic).

        Why not the SDK's ``create_tasks``: azure-batch 15's workflow puts a chunk answered 5xx, and every task
        answered "servererror", back on its queue and tries again at once, with no delay and no end
        (``_operations/_patch.py`` ``_bulk_add_tasks``), so a Batch outage spun the activity until the host's
        ``functionTimeout`` killed it, and the task failed as a timeout instead of with the reason. Here server errors
        are retried with backoff, never sooner than Batch's ``Retry-After`` asks (``_retry_after_s``), until
        ``SUBMIT_DEADLINE_S``, then ``BatchUnavailable`` says so; so is a task Batch's answer left out (it answers one
        result per task sent): else it counted as added, and only its shard group's poll by id, every
        ``orchestrations.shards.FULL_POLL_EVERY`` rounds (up to an hour), found it unknown; a chunk too large
        is halved, as the SDK does; a closed or deleted job is ``JobClosed``; any other refusal is ``TasksRefused``
        with Batch's codes.
        """
        from azure.batch import models as m
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        pending = [self.task_options(job_id, t) for t in tasks]
        per_request = TASKS_PER_REQUEST
        deadline = self._clock() + SUBMIT_DEADLINE_S
        delay = _SUBMIT_FIRST_DELAY_S
        refused: list[str] = []
        while pending:
            chunk, rest = pending[:per_request], pending[per_request:]
            problem = ""
            asked_wait = 0.0  # Batch's Retry-After, which the next try must not come before (_retry_after_s)
            try:
                answer = self.client.create_task_collection(job_id, m.BatchTaskGroup(task_values=chunk))
            except HttpResponseError as exc:
                code, status = _error_code(exc), getattr(exc, "status_code", None) or 0
                if code in _JOB_CLOSED_CODES | _JOB_DELETED_CODES:
                    raise _job_closed(job_id, code) from exc
                if code == "RequestBodyTooLarge" and len(chunk) > 1:
                    per_request = max(1, len(chunk) // 2)
                    continue
                if not (500 <= status <= 599 or status == 429):  # 429: throttled past azure-core's own retries
                    raise
                problem, retry = f"HTTP {status} {code}".strip(), chunk
                asked_wait = _retry_after_s(exc)
            except (ServiceRequestError, ServiceResponseError) as exc:  # the connection, after azure-core's retries
                problem, retry = f"{type(exc).__name__}: {exc}", chunk
            else:
                by_id = {t.id: t for t in chunk}
                retry = []
                answered: set[str] = set()
                for r in answer.result_values or []:
                    answered.add(r.task_id)
                    code = str(getattr(r.error, "code", "") or "") if r.error else ""
                    if r.status == m.BatchTaskAddStatus.SERVER_ERROR:
                        retry.append(by_id[r.task_id])
                        problem = f"task {r.task_id}: servererror {code}".strip()
                    elif r.status == m.BatchTaskAddStatus.CLIENT_ERROR and code != "TaskExists":
                        if code in _JOB_CLOSED_CODES | _JOB_DELETED_CODES:
                            raise _job_closed(job_id, code)
                        refused.append(f"{r.task_id}: {code or 'clienterror'}")
                # Batch answers one result per task sent (REST Task - Add Collection, TaskAddCollectionResult); one
                # left out was not confirmed added: sent again, as a servererror (an id Batch has is TaskExists)
                unanswered = [t for t in chunk if t.id not in answered]
                if unanswered:
                    retry += unanswered
                    problem = f"no result for {len(unanswered)} task(s) ({unanswered[0].id}" + (
                        " ...)" if len(unanswered) > 1 else ")")
            pending = retry + rest
            if retry:
                wait = max(delay, asked_wait)
                if self._clock() + wait > deadline:
                    raise BatchUnavailable(
                        f"Azure Batch kept failing to add tasks to job {job_id} for {SUBMIT_DEADLINE_S:.0f} s (last: "
                        f"{problem}; {len(pending)} of {len(tasks)} tasks not added). The task retries the submission; "
                        "if it fails again, check azure.status.microsoft.com for Batch in the account's region"
                        f"{asked_wait_words(asked_wait)}")
                logger.warning("job %s: Batch answered %s; %d tasks retried in %.0f s", job_id, problem, len(retry),
                               wait)
                self._sleep(wait)
                delay = min(delay * 2, _SUBMIT_MAX_DELAY_S)
        if refused:
            raise TasksRefused(f"Azure Batch refused {len(refused)} of {len(tasks)} tasks for job {job_id}: "
                               + "; ".join(refused[:5]) + (" ..." if len(refused) > 5 else "")
                               + " (a task Batch refuses as sent is a trapbatch bug: report it with these codes)")
        logger.info("job %s: submitted %d Batch tasks", job_id, len(tasks))

    def poll(self, job_id: str, task_ids: Sequence[str] | None = None) -> list[TaskInfo]:
        """The state of the given tasks, asking Batch about those tasks only.

        How (batch-efficient-list-queries.md: filter and select every list query): the ids go into the ``$filter``
        as ``id eq '...'`` terms, ``POLL_IDS_PER_REQUEST`` per request, in two lists per group of ids:

        1. ``state eq 'active' or 'preparing' or 'running'`` with ``$select=id,state``: a few bytes per task;
        2. ``state eq 'completed'`` with ``$select=id,state,executionInfo``: the tasks that finished since the caller
           last asked (the caller stops asking about a task once it has seen it completed), with exit code,
           result and failure.

        So a poll costs what its shard group has in flight and the detail of what changed; it never pages through the
        job's other tasks (a job of 10,000 shards has 10,000+ tasks; each shard group polls its own ~100). The
        running list goes first: a task that completes between the two requests is then reported as completed.
        Why not ``get_job_task_counts``: it counts the whole job, while each shard group needs its own tasks' states
        (and the counts "might not be up to date"). Why not a job-wide ``state eq 'completed'`` list: it grows with
        every task the job ever finished and would be read again by every shard group at every poll.
        Filterable task properties (odata-filters-in-batch, "List tasks"): ``id`` (eq, ..., startswith) and
        ``state`` (eq). With ``task_ids=None`` the whole job is listed once.
        """
        with _unavailable_on_server_errors(f"a task listing of job {job_id}"):
            if task_ids is None:
                return [self._task_info(job_id, t) for t in self.client.list_tasks(job_id, select=_TASK_SELECT)]
            wanted = list(dict.fromkeys(task_ids))
            found: dict[str, TaskInfo] = {}
            unfinished = " or ".join(f"state eq {_odata_string(s.value)}" for s in _UNFINISHED_STATES)
            for chunk in _chunks(wanted, self.POLL_IDS_PER_REQUEST):
                ids = " or ".join(f"id eq {_odata_string(i)}" for i in chunk)
                for t in self.client.list_tasks(job_id, filter=f"({ids}) and ({unfinished})", select=["id", "state"]):
                    found[t.id] = self._task_info(job_id, t)
                for t in self.client.list_tasks(job_id, filter=f"({ids}) and state eq 'completed'",
                                                select=_TASK_SELECT):
                    found[t.id] = self._task_info(job_id, t)
            return [found[i] for i in wanted if i in found]

    def cursor(self) -> str:
        """Now on this machine's clock, less ``CHANGE_OVERLAP`` (the service's clock may be behind ours)."""
        return (datetime.now(timezone.utc) - CHANGE_OVERLAP).isoformat()

    def changes(self, job_id: str, since: str) -> PoolChanges:
        """The job's tasks whose state changed after ``since``: ONE task listing, whatever the job's size.

        The filter is ``stateTransitionTime gt DateTime'<since>'`` with ``$select=id,state,stateTransitionTime,
        executionInfo``: exactly the delta query of Batch's own guidance for monitoring ("Filtering on state
        transition times to download only changes since the last query", batch-efficient-list-queries.md, the
        BatchMetrics sample; Azure-Samples/azure-batch-samples CSharp/BatchMetrics/BatchMetrics/DetailLevels.cs
        ``OnlyChangedAfter`` and MetricMonitor.cs, which lists a job's tasks with it). ``stateTransitionTime`` is
        filterable with eq, ne, ge, gt, le and lt on Batch's list operations (odata-filters-in-batch; the SDK's
        ``list_tasks`` points at its "list-tasks" section). ``executionInfo`` rides along, so a completed task's exit
        code and failure need no second request.

        The next cursor is the latest transition time Batch reported (the service's clock, not ours) less
        ``CHANGE_OVERLAP``, never earlier than ``since``: a transition recorded a moment before another the listing
        saw cannot fall between two calls; the overlap's repeats are for the caller to ignore.
        """
        after = _parse_cursor(since)
        latest = after
        tasks = []
        with _unavailable_on_server_errors(f"a task listing of job {job_id}"):
            for t in self.client.list_tasks(job_id, filter=f"stateTransitionTime gt {_odata_datetime(after)}",
                                            select=_CHANGES_SELECT):
                tasks.append(self._task_info(job_id, t))
                changed = getattr(t, "state_transition_time", None)
                if isinstance(changed, datetime):
                    changed = changed if changed.tzinfo else changed.replace(tzinfo=timezone.utc)
                    latest = max(latest, changed)
        return PoolChanges(tasks=tasks, cursor=max(after, latest - CHANGE_OVERLAP).isoformat())

    def _task_info(self, job_id: str, t: Any) -> TaskInfo:
        state = TaskState(str(getattr(t.state, "value", t.state)).lower())
        info = getattr(t, "execution_info", None)
        result = getattr(info, "result", None) if info else None
        failure = getattr(info, "failure_info", None) if info else None
        start = getattr(info, "start_time", None) if info else None
        end = getattr(info, "end_time", None) if info else None
        completed = state is TaskState.completed
        return TaskInfo(
            task_id=t.id, state=state,
            result=TaskResult(str(getattr(result, "value", result)).lower()) if result else None,
            exit_code=getattr(info, "exit_code", None) if info else None,
            failure_message=_failure_text(failure) if failure else None,
            start_time=str(start) if start else None,
            end_time=str(end) if end else None,
            log=f"{self.log_container}/{layout.pool_log_prefix(job_id, t.id)}" if completed else None,
            failure_code=_failure_code(failure) if failure else None,  # TaskEnded: Batch ended it (exit_codes)
        )

    def cancel(self, job_id: str, task_id: str | None = None) -> None:
        """Stop one task, or the whole job. A task that has completed (it may have ended between the poll that
        listed it and this call), or is gone with its job, is no error: Batch answers terminating it 409
        ``TaskCompleted`` ("The specified task is already in a completed state"), as the local pools skip it."""
        from azure.core.exceptions import HttpResponseError

        with _unavailable_on_server_errors(f"terminating {f'task {task_id} of ' if task_id else ''}job {job_id}"):
            if not task_id:
                self._terminate(job_id, "trapbatch cancel")
                return
            try:
                self.client.terminate_task(job_id, task_id)
            except HttpResponseError as exc:
                code = _error_code(exc)
                if code not in _TASK_ENDED_CODES | _JOB_CLOSED_CODES:
                    raise
                logger.info("task %s of job %s: nothing to terminate (%s)", task_id, job_id, code)
