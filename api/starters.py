"""The edges that start and inspect tasks: the HTTP API and the blob-drop trigger (durable clients).

Every handler is wrapped by ``api.edge.http_edge``, the one place exceptions become HTTP answers: a ``TrapbatchError``
becomes ``{"error", "hint"}`` with its status, a storage error goes through ``adapters.storage_errors``, and nothing
answers a bare 500. Both edges share ``start_task``, so a request posted over HTTP and the same
request dropped as ``incoming/<name>.json`` are the same task (the id is a hash of the normalized request).

    POST /api/tasks                 start (or find) a task          202 {id, status_url, ...}
                                    ("rerun": true: run a finished task again as a new generation; 409 while it runs)
    GET  /api/tasks                 the tasks this app knows, newest first (?limit=N, default 50), with ``updated``
                                    and ``stalled`` as below (a detecting one's: ``_list_liveness``)
    GET  /api/tasks/{id}            stage, counts, progress, ETA, when it last changed (``updated``), and whether it
                                    stalled (``stalled``: core.stall)    200
    GET  /api/tasks/{id}/results    where the results and previews are (409 while running, except a re-run: the
                                    previous generation's until the re-run completes; adapters.generations)
    POST /api/tasks/{id}/cancel     stop the task's pool work       202
    POST /api/tasks/{id}/terminate  end the task's run now (a stalled one too); post the request again to resume  202
    GET  /api/tasks/{id}/repeats    repeated detections found, and the state of their removal
    POST /api/tasks/{id}/repeats    remove some ({"remove": [...] | "all"} or {"keep": [...]}, "search": id)   202
    POST /api/tasks/{id}/repeats/search   search again with other options (api.repeat_search)   202

Callers (``api.callers``, ``TRAPBATCH_CALLER_AUTH``): with ``none`` every key holder is an operator. With ``easyauth``
each request's caller is App Service Authentication's verified identity (401 without one); the caller's id is recorded
in the task's input (``owner``) and is part of its id; a caller lists and acts on its own tasks only (403 otherwise),
within the per-caller limits; operators see and act on every task. A blob drop has no caller: its task has no owner,
so only operators see it (writing to ``incoming`` already takes a data role on trapbatch's storage account).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, TypedDict
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func
from azure.core.exceptions import AzureError

from adapters import clients, joined_drops
from adapters.blobs import BlobStore
from adapters.generations import generation_request, served_generation, served_key
from adapters.image_lists import NO_ACCESS, scan_image_list
from adapters.preview_folders import delete_preview_folder, existing_preview_folder
from adapters.storage_errors import OWN_ACCOUNT, SOURCE_ACCOUNT, after_dns_asked_again, source_error
from api.callers import (ANONYMOUS_OPERATOR, Caller, caller_from_headers, enforce_owner, enforce_request_limits,
                         owner_of)
from api.cancel_marker import write_cancel_marker
from api import repeat_runs, terminated_answers
from api.edge import http_edge, json_response, read_status, start_once
from core import contracts as c
from core import notify
from core.contracts import FINISHED, Stage
from core.deadline import Deadline
from core.errors import (ConfigError, ContainerNotFound, InstanceListTooSlow, RequestInvalid, RequestTooLarge,
                         TaskHubUnavailable, TaskNotFinished, TaskNotFound, TaskStillRunning, TooManyActiveTasks,
                         TrapbatchError, failure_message, without_secrets)
from core.estimate import live_rate
from core.failures import failures_without_secrets
from core.ids import is_task_id, repeats_instance_id, shards_instance_id
from core.requests import (MAX_BODY_BYTES, REMOVAL_EXAMPLE, TERMINATE_EXAMPLE, TaskRequest, check_repeat_removal,
                           parse_json_body, parse_repeat_removal, parse_task_request, parse_terminate,
                           same_storage_account, terminate_target)
from core.settings import OrchestrationKnobs, Settings, caller_auth_mode, drop_trigger_source, own_container_reason
from core.stall import stalled
from gpu_batch import layout
from gpu_batch.models import (BLOB_SCHEME, canonical_name, known_model, known_names, split_blob_model,
                              unsupported_reason)
from gpu_batch.layout import REPEATS_REMOVED

logger = logging.getLogger(__name__)
bp = df.Blueprint()

ACTIVE = {"Running", "Pending", "ContinuedAsNew"}
CANCELLABLE = (Stage.starting, Stage.enumerating, Stage.detecting)  # the shard groups read the marker at each poll
BEFORE_POOL = (Stage.starting, Stage.enumerating)  # ... and the listing's end (activities.enumerate)
_json = json_response


def _base_url(req: func.HttpRequest) -> str:
    url = str(req.url)
    marker = url.find("/api/")
    return url[:marker] if marker >= 0 else url.rstrip("/")


def _runtime(status: Any) -> str | None:
    rs = getattr(status, "runtime_status", None)
    return rs.value if rs is not None else None


def _stage(runtime: str | None, custom: dict[str, Any]) -> Any:
    """The stage a task is shown in: its custom status's, except that a failed or terminated instance says so (its
    last custom status still names the stage it was in, e.g. ``detecting``), unless that stage is a finished one.

    Why the exception: the orchestrator sets its final status (completed, completed_with_errors) once the results are
    complete and served, and only then sends word of the end (orchestrations.task ``_tell``: the done file, the
    notification's retries on durable timers, up to ~30 minutes, the event). An instance terminated or failed there
    (an operator ending a task whose receiver stayed down) has its results: shown "terminated", they were answered 409
    "without results", and a plain post of the request resumed the run in place over the results being served. The
    runtime status stays in the answer (``runtime_status``). The finished stage survives the termination: dtfx handles
    ``ExecutionTerminatedEvent`` inside a replay of the orchestration (``TaskOrchestrationExecutor.ExecuteCore``,
    ``TaskOrchestrationContext.HandleExecutionTerminatedEvent``), for which the Durable extension invokes the Python
    orchestrator with the whole history and sets the custom status its replay returns (``OrchestrationMiddleware``,
    ``OutOfProcOrchestrationShim.ScheduleDurableTaskEvents``); the result carries it (``TaskOrchestrationDispatcher``:
    ``runtimeState.Status = result?.CustomStatus``) and ``AzureTableTrackingStore`` stores it as the instance's
    ``CustomStatus`` (null when the replay set none). The task orchestrator sets its status from its first step and
    never goes on as new, so that replay sets the finished stage again (devhost README, fidelity row 48)."""
    stage = custom.get("stage")
    if runtime in ("Failed", "Terminated") and stage in FINISHED:
        return stage
    if runtime == "Failed":
        return Stage.failed
    if runtime == "Terminated":
        return Stage.terminated
    return custom.get("stage", Stage.starting)


def _links(base: str, task_id: str) -> dict[str, str]:
    return {"status_url": f"{base}/api/tasks/{task_id}", "results_url": f"{base}/api/tasks/{task_id}/results",
            "cancel_url": f"{base}/api/tasks/{task_id}/cancel"}


def check_model_reference(ref: str, settings: Settings) -> None:
    """A request may name a published MegaDetector model, a checkpoint in the operator's models container, or the app's
    default. Anything else (a path on the nodes, a URL) is refused here, before a GPU starts: a checkpoint is code
    the nodes run, so which ones exist is the operator's choice, not the caller's."""
    if known_model(ref) is not None:
        return
    if ref == settings.model:
        check_default_model_file(ref, settings)
        return
    choices = ", ".join(known_names()) + (f", blob://{settings.models_container}/<name>" if settings.models_container
                                          else "") + (f", or leave 'model' out for {default_model_label(settings)}"
                                                      if settings.model else "")
    reason = unsupported_reason(ref)
    if reason is not None:
        raise RequestInvalid(f"model {ref!r} is not supported: {reason}", f"use one of {choices}")
    blob = split_blob_model(ref)
    if ref.startswith(BLOB_SCHEME) and blob is None:
        raise RequestInvalid(f"model {ref!r} is not blob://<container>/<name> with a plain blob name",
                             f"name the checkpoint's blob without '.' or '..' folders, empty folders or backslashes; "
                             f"use one of {choices}")
    if blob is not None and settings.models_container and blob[0] == settings.models_container:
        return
    raise RequestInvalid(f"model {ref!r} is not one this trapbatch runs",
                         f"use one of {choices} (the operator sets TRAPBATCH_MODELS_CONTAINER for own checkpoints)")


def default_model_label(settings: Settings) -> str:
    """How a refusal names the app's default model to a caller: a published model by its one name, a models-container
    checkpoint by its ``blob://`` reference (one a request may name itself), and a checkpoint file only by its file
    name. Why: TRAPBATCH_MODEL may be a path on the server or the nodes (devhost's default is one), and every
    function-key holder reads this hint; where the operator keeps files is not theirs to see. A URL is taken without
    its user, password, query and fragment (a SAS or a key pasted into TRAPBATCH_MODEL is no part of the name)."""
    ref = settings.model
    if known_model(ref) is not None:
        return repr(canonical_name(ref))
    if "://" in ref:
        parts = urlsplit(ref)
        if ref.startswith(BLOB_SCHEME):
            return repr(f"{BLOB_SCHEME}{parts.hostname or ''}{parts.path}")
        ref = parts.path
    name = ref.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return f"the app's default checkpoint {name!r}" if name else "the app's default checkpoint"


def check_default_model_file(ref: str, settings: Settings) -> None:
    """The app's default model named by a path must be a file here when the pool is the local one (its workers load
    it from this machine). Why: a missing file was found only by the workers, a minute and two failed attempts into
    the task. On Azure Batch a path names a file on the nodes, which the app cannot see: not checked."""
    if settings.pool != "local" or ref.startswith(BLOB_SCHEME) or unsupported_reason(ref) is not None:
        return
    if not Path(ref).expanduser().is_file():
        raise ConfigError(f"the app's default model TRAPBATCH_MODEL={ref!r} is not a file on this machine, where the "
                          "local pool's workers load it", "set TRAPBATCH_MODEL to a MegaDetector checkpoint file, or "
                          "to a published name such as MDV5A (downloaded when first used), and start the app again; "
                          "or name a model in the request")


ACTIVE_TASKS_RETRY_AFTER_S = 300  # Retry-After of a 429 for too many running tasks: tasks run for minutes to hours


async def start_task(client: df.DurableOrchestrationClient, body: Any, settings: Settings,
                     caller: Caller = ANONYMOUS_OPERATOR, drop: str = "", origin: str = "",
                     deadline: Deadline | None = None) -> tuple[bool, str]:
    """Validate ``body`` and start its task unless that task already runs or completed. Returns (started, id).

    A verified ``caller`` (``TRAPBATCH_CALLER_AUTH=easyauth``) replaces any ``caller`` the body names, is recorded in
    the task's input as its ``owner`` and is part of the task id; its limits are checked (operators are exempt).

    ``origin``: the blob version that asks (``drop_origin``), recorded in the task's input. When the task's last run
    was started by that same version, this is a redelivery of its event (at least once, from Event Grid and from the
    blob trigger's queue): (True, id) without starting or refusing anything, so a ``rerun`` request delivered twice
    runs once and is not answered "still running".

    ``deadline``: when the caller must have its answer (Event Grid's delivery of a marker, ``api.arrivals``; the
    HTTP edge, ``POST_CHECKS_DEADLINE_S``): the storage and Key Vault calls of the checks end by it
    (``clients.source_store``), and so does the count of the caller's active tasks; one it cut short is busy
    (``SourceBusy``, ``InstanceListTooSlow``, or the storage SDK's error, a 503). None (the drop trigger, whose
    function may run 30 minutes): the SDKs' own retries."""
    request = parse_task_request(body, settings.model, settings.knobs.images_per_shard)
    if caller.verified:  # a body-supplied 'caller' is a label nobody checked: the verified id replaces it
        request = dataclasses.replace(request, caller=caller.id)
    enforce_request_limits(caller, request, settings)
    if not request.model:
        raise RequestInvalid("no detector model given", "add \"model\" (e.g. \"MDV5A\") to the request, or set "
                             "TRAPBATCH_MODEL for the app")
    check_model_reference(request.model, settings)
    if not request.source_account_url and (why := own_container_reason(request.container, settings)):
        raise RequestInvalid(f"container {request.container!r} holds {why}, not images",
                             "name the container your camera-trap images are in")
    as_given = request
    request = dataclasses.replace(request, model=canonical_name(request.model))  # one task per model, not per alias
    if request.credential_secret and not settings.secret_store_env():
        raise RequestInvalid(f"the request names secret {request.credential_secret!r}, but this trapbatch has no "
                             "Key Vault configured", "set TRAPBATCH_KEY_VAULT_URL in the app settings (infra/ does), "
                             "or give the app's identity a role on the source account and drop 'credential_secret'")
    if request.notify_url:  # a notification this app would never send is refused now, not missed at the end
        why = notify.not_sendable(request.notify_url, settings.notify_hosts,
                                  bool(settings.notify_secret and settings.app_secret_store_env()))
        if why is not None:
            raise RequestInvalid(f"'notify_url' cannot be told: {why}",
                                 "the operator adds the receiver's host to TRAPBATCH_NOTIFY_HOSTS and sets "
                                 "TRAPBATCH_NOTIFY_SECRET (docs/cli.md 'Word when a task ends'); or leave "
                                 "'notify_url' out and poll GET /api/tasks/{id}")
    if request.notify_url_secret:  # the secret itself is read only when the notification is sent (activities.notify)
        _check_notify_url_secret(request.notify_url_secret, settings)
    request = await asyncio.to_thread(_check_source, request, settings, deadline)  # blocking calls: off the loop
    task_id = request.task_id_for(caller.id)
    existing = await read_status(client, task_id, show_input=True)
    if _runtime(existing) is None and as_given.model != request.model:
        # A release before model names were made canonical named the task by the alias as given: a request posted
        # again (a retry, a failed task resumed) finds that task instead of starting the same work twice.
        legacy_id = as_given.task_id_for(caller.id)
        legacy = await read_status(client, legacy_id, show_input=True)
        if _runtime(legacy) is not None:
            request, task_id, existing = as_given, legacy_id, legacy
    runtime = _runtime(existing)
    if origin and runtime is not None and _task_input(existing).get("origin") == origin:
        logger.info("task %s: %s was already started by %s (a redelivered event)", task_id, runtime, origin)
        return True, task_id
    if runtime in ACTIVE and request.rerun:
        raise TaskStillRunning(f"task {task_id} is still running (stage: {_stage_of(existing)}); it can be run again "
                               "once it has finished", f"wait until GET /api/tasks/{task_id} shows it finished, or "
                               f"POST /api/tasks/{task_id}/cancel it, then post the request with \"rerun\" again")
    if runtime in ACTIVE or (not request.rerun and (runtime == "Completed" or _stage_of(existing) in FINISHED)):
        return False, task_id  # running, or it has its results (``_stage``: one ended while telling of its end)
    await _enforce_active_limit(client, caller, settings, deadline)
    knobs = {**settings.knobs.to_dict(), "images_per_shard": request.images_per_shard}
    if request.max_failed_fraction is not None:
        knobs["max_failed_fraction"] = request.max_failed_fraction
    run = layout.run_id(datetime.now(timezone.utc), secrets.token_hex(2))  # a job of its own for this run's pool work
    last = _task_input(existing)
    generations = await asyncio.to_thread(_generations, task_id, run, runtime, last, request, settings, deadline)
    if runtime is not None and not request.rerun:
        request = resumed_request(request, last)
    try:
        task_input = c.TaskInput(task_id=task_id, request=request.to_dict(), knobs=knobs, run=run, moves_expiry=True,
                                  answers_joined=True, sweeps_replaced=True)
        if "generation" in generations:
            task_input["generation"] = generations["generation"]
        if "previous" in generations:
            task_input["previous"] = generations["previous"]
        ended = _ended_runs(runtime, last, _stage_of(existing), getattr(existing, "output", None))
        if ended:  # their shard groups and pool jobs outlived them: this run ends them first
            task_input["ends_run"] = ended[-1]
            if ended[:-1]:  # only then: an input as before otherwise
                task_input["ends_earlier"] = ended[:-1]
        if caller.verified:
            task_input["owner"] = caller.id
        if drop:  # answers (done, estimate) go beside the dropped request
            task_input["drop"] = drop
        if origin:
            task_input["origin"] = origin
        await client.start_new(c.TASK_ORCHESTRATOR, task_id, task_input)
    except Exception:
        # The extension refuses to start an instance id that is running or pending (OverridableExistingInstanceStates
        # = NonRunningStates): an identical request posted at the same moment won the race. Same task, not started.
        if _runtime(await read_status(client, task_id)) in ACTIVE | {"Completed"}:
            return False, task_id
        raise
    logger.info("task %s: started for container %s prefix %r%s", task_id, request.container, request.prefix,
                f" by caller {caller.id}" if caller.verified else "")
    return True, task_id


def _check_source(request: TaskRequest, settings: Settings, deadline: Deadline | None = None) -> TaskRequest:
    """The request's container must be readable (404/502 otherwise); with an ``image_list`` the request gains the
    list's hash. Blocking (a Key Vault secret, the source account, the list): ``start_task`` runs it off the event loop
    (``api.edge`` module docstring). ``deadline``: ``start_task``'s."""
    if request.source_account_url:  # the app's own account named by its URL: its own containers are still its own
        own = clients.store(settings).service.primary_endpoint
        why = own_container_reason(request.container, settings)
        if why and same_storage_account(request.source_account_url, own):
            raise RequestInvalid(f"container {request.container!r} holds {why}, not images",
                                 "name the container your camera-trap images are in")
    # a missing host is said at the first try (clients.source_store); with a deadline, every call ends by it
    source = clients.source_store(settings, request.source_account_url, request.credential_secret,
                                  deadline=deadline or True)
    account = SOURCE_ACCOUNT if request.source_account_url else OWN_ACCOUNT  # whose URL a missing host's hint names
    try:
        readable = (source.container_exists(request.container) if not request.source_account_url
                    else source.container_listable(request.container))
    except AzureError as exc:  # a refusal says what to fix, a busy account to retry (503); never echo secrets
        where = request.source_account_url or f"storage account {source.account!r}"  # the app's own: no URL given
        raise source_error(exc, f"cannot list container {request.container!r} in {where}", NO_ACCESS,
                           urlsplit(request.source_account_url or source.service.url).hostname or "",
                           account) from None
    if not readable:
        raise ContainerNotFound(f"container {request.container!r} does not exist in storage account "
                                f"{request.source_account_url or source.account!r}",
                                "check the name, or create the container and upload the images first")
    if request.image_list:  # read whole at the edge: a bad list is a 400 now, and its hash is part of the task id
        listed = scan_image_list(source, request.container, request.image_list, settings.image_list_max_bytes,
                                 request.prefix, account)
        request = dataclasses.replace(request, image_list_sha256=listed.sha256)
    return request


def _stage_of(status: Any) -> str:
    custom = getattr(status, "custom_status", None)
    return str(custom.get("stage", Stage.starting)) if isinstance(custom, dict) else str(Stage.starting)


def resumed_request(request: TaskRequest, last: dict[str, Any]) -> TaskRequest:
    """A plain request that resumes its task's failed or terminated run (``_generations``), with that run's verbs.

    Why: the advice a failed run gives (orchestrations.shards ``PoolOutOfReach``, orchestrations.retries
    ``_gave_up``) is to post the request again without "rerun" or "only_new", and that resumes the run's generation;
    but the run's input is made from the request posted now, so an ``only_new`` re-run resumed so lost its reuse step
    (orchestrations.task runs it only with ``only_new`` in the request) and the pool detected again every image it had
    reused. The verbs are the only fields that decide the run's work without being part of the task id (the rest of
    the id's fields are equal by construction; the settings say how to judge and report, and the request posted now
    sets them, as before). ``only_new`` implies ``rerun`` (core.requests ``_only_new``): both are carried."""
    stored = last.get("request")
    if not isinstance(stored, dict):  # an input without a request: nothing to carry
        return request
    only_new = bool(stored.get("only_new"))
    return dataclasses.replace(request, rerun=bool(stored.get("rerun")) or only_new, only_new=only_new)


# Runs a start names to end at most (``_ended_runs``): the most recent. Each costs the new run two short calls; a chain
# longer than this needs a run terminated that many times in a row, each of which had its own tries at the oldest.
ENDS_RUNS_MAX = 8


# DTFx's words for a replay that broke determinism (``NonDeterministicOrchestrationException``: every message starts
# so), which a failed instance's output holds as they are or after the exception's type (``_failed_by_platform``)
_NONDETERMINISM = re.compile(r"^(DurableTask\.Core\.Exceptions\.NonDeterministicOrchestrationException: )?"
                             r"Non-Deterministic workflow detected: ")


def _failed_by_platform(output: Any) -> bool:
    """Whether a Failed instance's ``output`` is DTFx's failure of a replay that broke determinism: the instance's
    Output is the failure's ``Result``, its message (``TaskOrchestrationContext.FailOrchestration``), or
    ``FailureDetails.ToString()``, "<type>: <message>", where the failure has details (durabletask
    ``AzureTableTrackingStore``: ``executionCompleted.FailureDetails?.ToString() ?? executionCompleted.Result``). The
    task orchestrator's own failure reads "Orchestrator function '<name>' failed: ..." (the extension's
    ``TaskOrchestrationShim``), even where it quotes a shard group's non-determinism."""
    return isinstance(output, str) and _NONDETERMINISM.match(output) is not None


def _ended_runs(runtime: str | None, last: dict[str, Any], stage: str, output: Any = None) -> list[str]:
    """The runs whose pool work the new run ends first, oldest first (``TaskInput.ends_run`` the last of them,
    ``ends_earlier`` the others; orchestrations.task ``_end_terminated_run``), or none: the last run when it was
    terminated, whatever this start is (a resume or a ``rerun``), since terminating an orchestration leaves its shard
    groups (sub-orchestrations) and its pool tasks running ("no effect on any in-flight activity function executions
    or sub-orchestrations", Durable Functions ``TerminateAsync``); before it, the runs the last run was to end itself
    (its ``ends_earlier`` and ``ends_run``) when it was terminated or failed: it may have ended before it ended them
    (a failure says to post the request again; a close held in its retries by a Batch outage gets terminated), and no
    later input names them again.

    A run that failed by itself (its status's ``stage``, the instance's last custom status, is ``failed``: the task
    orchestrator's own failure handling ran) or completed is not ended again: it closed its own job (or said it could
    not, ``pool_job_error``), and nothing of it was still open. Why none: the Durable Task Framework fails or
    completes an execution only once no task it scheduled is open (``TaskOrchestrationExecutor.ExecuteCore``:
    ``if (!this.context.HasOpenTasks)``; devhost README, fidelity row 26), so a task orchestrator that raised after
    one shard group failed (the SDK's ``task_all`` fails at the first failure) stays Running until every other group
    and activity it started has ended, and its close of the job is scheduled only then (the out-of-process shim
    awaits the ``task_all`` as .NET's ``Task.WhenAll``). A run the platform failed is ended like a terminated one
    (``stage`` anything else: the status its failing replay set, ``detecting`` or none): DTFx fails an execution
    whose replay breaks determinism at once, open tasks or not (``ExecuteCore``'s
    ``catch (NonDeterministicOrchestrationException) { FailOrchestration }``: a release that changed the task
    orchestrator's actions deployed while it ran), and then, as after a terminate, its shard groups, its activities
    and its pool tasks run on, its job stays open, and its failure handling (the job's close) never ran. Ended, its
    groups stop at their next poll, its job is closed, its late calls write nothing (activities.superseded), and the
    new run's groups get ids of their own (``orchestrations.task``: ``ends_run``) instead of meeting its groups still
    running under the same ids.

    Its ``output`` says so too (``_failed_by_platform``), and is read as well: the status a failing replay leaves is
    the one that replay set (``ExecuteCore`` returns ``GetStatus()`` after ``FailOrchestration``; the shim sets the
    Python replay's last custom status before it schedules that replay's actions, ``OutOfProcOrchestrationShim.
    ScheduleDurableTaskEvents``; devhost README, row 43), and that replay is another release's code: one that raises
    earlier than the recorded run did (an input of before it does not read) sets ``failed`` in its own failure
    handling, and DTFx, meeting the recorded shard groups with no action of that replay, fails the run at once with
    them running. A run the orchestrator's own failure handling ended but whose status is not ``failed`` (a failure
    inside that handling; devhost's failure for an action the shim refuses, "Orchestrator function '<name>' failed:
    ...", which its ``try`` never sees: Azure drops such an action instead and the run never ends, row 45) is ended
    again: every task it started had ended, but its job may not have been closed, and ending a closed job is a
    no-op."""
    if runtime not in ("Terminated", "Failed"):
        return []
    runs = [str(r) for r in last.get("ends_earlier") or [] if isinstance(r, str)]
    if "ends_run" in last:
        runs.append(str(last["ends_run"]))
    if runtime == "Terminated" or stage != Stage.failed or _failed_by_platform(output):
        runs.append(str(last.get("run") or ""))  # "": a run started before runs had ids, whose job is the task id
    return list(dict.fromkeys(runs))[-ENDS_RUNS_MAX:]  # a run named twice is ended once


class _Generations(TypedDict, total=False):
    generation: str
    previous: str


def _generations(task_id: str, run: str, runtime: str | None, last: dict[str, Any], request: TaskRequest,
                 settings: Settings, deadline: Deadline | None = None) -> _Generations:
    """Which generation a start is (``orchestrations.task``), and which one is served until it completes.

    * the task's first start: its first generation, under the task id itself (no keys: as before re-runs);
    * ``rerun`` of a task that ran before: a new generation, ``run``, with its own state and results; the generation
      served now stays served (``previous``) until the new one is promoted, if it has results at all;
    * a plain request for a task whose last run failed or was terminated: that run's generation again, which resumes
      from the results its attempts already wrote (as before re-runs), serving what that run would have served; its
      request keeps that run's "rerun" and "only_new" (``resumed_request``), so an ``only_new`` re-run still reuses.

    ``deadline``: ``start_task``'s, for the reads of the served generation.
    """
    if runtime is None:
        return {}
    if not request.rerun:
        again = _Generations()
        if last.get("generation"):
            again["generation"] = str(last["generation"])
        if "previous" in last:
            again["previous"] = str(last["previous"])
        return again
    store = clients.store(settings, deadline)
    served = served_generation(store, settings.container, task_id)
    out = _Generations(generation=run)
    if store.exists(settings.container, layout.results_blob(layout.generation_key(task_id, served))):
        out["previous"] = served
    return out


async def _enforce_active_limit(client: df.DurableOrchestrationClient, caller: Caller, settings: Settings,
                                deadline: Deadline | None = None) -> None:
    """``TRAPBATCH_CALLER_MAX_ACTIVE_TASKS``: a caller running that many tasks gets 429. Counted from the instance
    list before the start, so two posts at the same moment may both pass (a soft limit, off by at most the race).
    ``deadline``: ``start_task``'s; the list and the tasks' inputs are read by it (else within
    ``INSTANCE_LIST_TIMEOUT_S``), past it ``InstanceListTooSlow`` (503, busy)."""
    limit = settings.caller_max_active_tasks
    if not limit or caller.operator:
        return
    from core.ids import TASK_PREFIX

    until = deadline or Deadline.within(INSTANCE_LIST_TIMEOUT_S, _clock)
    active = [status for status in await _all_instances(client, TASK_PREFIX, keep=is_task_id, show_input=False,
                                                        timeout_s=until.left())
              if _runtime(status) in ACTIVE]
    inputs = await _task_inputs(client, [str(getattr(status, "instance_id", "") or "") for status in active],
                                until.left())
    running = sum(1 for started in inputs if owner_of(started) == caller.id)
    if running >= limit:
        raise TooManyActiveTasks(f"you already run {running} tasks, the most this trapbatch runs at once for one "
                                 f"caller ({limit})", "wait for one to finish (GET /api/tasks lists yours) or cancel "
                                 "one, then post again", retry_after_s=ACTIVE_TASKS_RETRY_AFTER_S)


def request_caller(req: func.HttpRequest) -> Caller:
    """The request's caller (``api.callers``); 401 under ``easyauth`` without a verified identity. With the default
    ``none`` nothing else is read: the handlers behave exactly as before callers existed."""
    if caller_auth_mode(os.environ) == "none":
        return ANONYMOUS_OPERATOR
    return caller_from_headers(req.headers, clients.settings())


async def authorize_task(req: func.HttpRequest, client: df.DurableOrchestrationClient, task_id: str) -> Caller:
    """The caller, after checking that it may see and act on ``task_id`` (403 if the task is another caller's).
    The owner is read from the orchestration's input, which the caller cannot change."""
    caller = request_caller(req)
    if caller.operator or not is_task_id(task_id):  # a malformed id gets describe_task's 404
        return caller
    status = await read_status(client, task_id, show_input=True)
    if _runtime(status) is None:
        raise TaskNotFound(f"no task {task_id}", "check the id against GET /api/tasks, or start the task with "
                           "POST /api/tasks")
    enforce_owner(caller, task_id, owner_of(_task_input(status)))
    return caller


@bp.route(route="tasks", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def post_task(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    caller = request_caller(req)
    body = parse_json_body(req.get_body(), req.headers.get("content-type", ""))
    settings = clients.settings()
    try:
        async with asyncio.timeout(POST_ANSWER_S):
            started, task_id = await start_task(
                client, body, settings, caller,
                deadline=Deadline.within(POST_CHECKS_DEADLINE_S, _clock, POST_TRY_TIMEOUTS))
            links = _links(_base_url(req), task_id)
            if started:
                return _json(202, {"id": task_id, "started": True, **links})
            posted = parse_task_request(body, settings.model, settings.knobs.images_per_shard).to_dict()
            return _json(200, {"id": task_id, "started": False, **links,
                               **await _known_task(client, task_id, links, posted)})
    except TimeoutError:
        raise TaskHubUnavailable(f"no answer within {POST_ANSWER_S:.0f} s: the task hub (or the checks of the "
                                 "request) did not answer in time", "post the request again in a minute: a task "
                                 "already started is found, not started twice (with \"rerun\": first see GET "
                                 "/api/tasks whether it runs: a re-run that started answers 409 'still running', "
                                 "and posting it with \"rerun\" once it has ended runs it again)") from None


def _check_notify_url_secret(name: str, settings: Settings) -> None:
    """Refuse (400) a ``notify_url_secret`` this app could never read or send to, as ``notify_url`` and
    ``credential_secret`` are refused: no secret store for the app's own secrets (``Settings.app_secret_store_env``,
    where the signing key is read), no host allowed, no signing key, or the signing key's own name; and first, a name
    without TRAPBATCH_NOTIFY_URL_SECRET_PREFIX (core.notify.URL_SECRET_PREFIX: no other secret of the store can be
    named, nor probed). The secret is not read here: it is resolved when the notification is sent, and whether its
    address is allowed is said then."""
    prefix = settings.notify_url_secret_prefix
    if not name.casefold().startswith(prefix.casefold()):
        raise RequestInvalid(f"'notify_url_secret' must name a secret whose name starts with {prefix!r} "
                             "(TRAPBATCH_NOTIFY_URL_SECRET_PREFIX)",
                             f"ask the operator to store the receiver's address as a secret named '{prefix}<name>' "
                             "(docs/deploy.md, 'Signed notifications') and give that name; or leave "
                             "'notify_url_secret' out and poll GET /api/tasks/{id}")
    if not settings.app_secret_store_env():
        raise RequestInvalid(f"the request names secret {name!r} as its notification address (notify_url_secret), "
                             "but this trapbatch has no Key Vault configured",
                             "set TRAPBATCH_APP_KEY_VAULT_URL (infra/ does) or TRAPBATCH_KEY_VAULT_URL in the app "
                             "settings; or leave 'notify_url_secret' out and poll GET /api/tasks/{id}")
    why = notify.not_sendable_from_secret(name, settings.notify_hosts, settings.notify_secret, True, prefix)
    if why is not None:
        raise RequestInvalid(f"'notify_url_secret' cannot be told: {why}",
                             "the operator adds the receiver's host to TRAPBATCH_NOTIFY_HOSTS and sets "
                             "TRAPBATCH_NOTIFY_SECRET (docs/cli.md 'Word when a task ends'), and the address goes into "
                             "a secret of its own; or leave 'notify_url_secret' out and poll GET /api/tasks/{id}")


# What a request sets about how its task runs and reports, without being part of the task id: posted again with
# other values, the task found is not changed by them (they apply to a re-run)
SETTING_FIELDS = ("max_failed_fraction", "preview_threshold", "notify_url", "notify_url_secret", "previews_expire_days",
                  "utc_offset", "event_interval_s", "clock_corrections", "zooniverse_visit_frames", "camera_depth")


async def _known_task(client: df.DurableOrchestrationClient, task_id: str, links: dict[str, str],
                      posted: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a request that found its task already there is told: the task's stage, what posting it again does not
    do (a finished task is not run again without ``rerun``), and which of its settings differ from the task's and so
    were not applied (a new notify_url, clock_corrections...: silently dropped before)."""
    status = await read_status(client, task_id, show_input=True)
    runtime = _runtime(status)
    stage = _stage(runtime, status.custom_status if isinstance(getattr(status, "custom_status", None), dict) else {})
    if runtime in ACTIVE:
        hint = f"the same request's task is still running: follow it at {links['status_url']}"
    elif stage in FINISHED:
        hint = (f"this request ran already: its results are at {links['results_url']}; to run it again, post it "
                "with \"rerun\": true (or \"only_new\": true for new or changed images only)")
    else:
        hint = f"this request's task ended {stage}; to run it again, post it with \"rerun\": true"
    answer: dict[str, Any] = {"stage": stage, "hint": hint}
    stored = _task_input(status).get("request")
    if posted is not None and isinstance(stored, dict):
        differs = [f for f in SETTING_FIELDS if posted.get(f) != stored.get(f)]
        if differs:
            answer["not_applied"] = differs
            one = len(differs) == 1  # "preview_threshold differs ... it applies", as "a, b differ ... they apply"
            answer["hint"] = hint + (f"; {', '.join(differs)} {'differs' if one else 'differ'} from the task's and "
                                     f"{'was' if one else 'were'} not applied: {'it applies' if one else 'they apply'}"
                                     " to a run of it posted with \"rerun\": true"
                                     + (" once it has ended" if runtime in ACTIVE else
                                        " (\"only_new\": true reuses every result that is still valid)"))
    return answer


# Why below 230 s: "Regardless of the function app timeout setting, 230 seconds is the maximum amount of time that an
# HTTP triggered function can take to respond to a request" (MicrosoftDocs includes/functions-timeout-duration.md):
# a list that takes longer must end in the app's own answer, not the front end's cut.
INSTANCE_LIST_TIMEOUT_S = 200
# What the 503s of a slow list tell the operator to send. ext HttpApiHandler.cs
# HandleDeleteHistoryWithFiltersRequestAsync refuses a purge without createdTimeFrom (400), and one without
# runtimeStatus purges every status in the range; of a runtimeStatus list dtfx (DurableTask.AzureStorage
# AzureTableTrackingStore.PurgeInstanceHistoryAsync) keeps only the finished ones, and a list left empty filters
# nothing. Running tasks and the preview expiries, which wait for days, must survive it. (devhost README rows 3, 10)
PURGE_HINT = ("purge old ones: DELETE /runtime/webhooks/durabletask/instances?createdTimeFrom=2000-01-01T00:00:00Z"
              "&createdTimeTo=<a UTC time>&runtimeStatus=Completed,Failed,Terminated&code=<the app's "
              "durabletask_extension system key, as "
              "az functionapp keys list -g <group> -n <app> --query systemKeys.durabletask_extension -o tsv "
              "prints it> (always with runtimeStatus: without it, "
              "or with only unfinished states, running tasks and waiting preview expiries are purged too)")
# POST /api/tasks: its storage and Key Vault calls (the images' account, an image list, a secret, the served
# generation) and the caller's active tasks are read by this deadline (``start_task``'s ``deadline``): each request
# with the storage SDK's own timeouts (``POST_TRY_TIMEOUTS``: an account that answers slowly is waited for, as before,
# and longer than a marker's Event Grid delivery waits) but none past the deadline, and retries after the storage
# SDK's own back-offs (``PATIENT_BACKOFFS_S``: a blip of a few seconds is waited out, as before) only while a try as
# long as the last still fits (``gpu_batch.storage_refs.deadline_storage_options``); what it cuts short is busy:
# 503 with Retry-After, which the CLI waits out and posts again. With the SDKs' own retries (storage: four tries and
# 18, 24 and 42 s of back-offs; Key Vault: 300-s timeouts and ten retries) an account that accepted connections and
# never answered held the POST for ~330 s: past the front end's 230 s, so the caller got a 502 saying nothing while
# the function ran on and might start the task after all. The last 30 s of the 200 (``POST_ANSWER_S``)
# are for what follows the checks: the task hub's reads and the start (the durable client's calls).
POST_CHECKS_DEADLINE_S = 170.0
# The whole POST, the durable client's calls included, answers within this: past it, the app's 503 with Retry-After
# (``TaskHubUnavailable``), 30 s before the front end's bare 502. Why: the SDK gives each of its calls 240 s
# (azure-functions-durable ``models/utils/http_utils.py`` ``ClientTimeout(total=240)``) and a throttled task hub's
# management API may take that long, so one read of the task's status after 170 s of checks passed 230 s. A start cut
# short may still have gone through: the request posted again finds its task (the id is the request's hash).
POST_ANSWER_S = 200.0
# (connection, read) timeouts of each request, at most: azure-storage-blob's own defaults (12.x ``_shared/constants.py``
# CONNECTION_TIMEOUT 20, READ_TIMEOUT 60; ``gpu_batch.storage_refs`` cites them).
POST_TRY_TIMEOUTS = (20.0, 60.0)
# The deadlines' clock (monotonic seconds): tests give a fake one that moves when the SDKs' back-offs sleep.
_clock: Callable[[], float] = time.monotonic


async def _all_instances(client: df.DurableOrchestrationClient, prefix: str, show_input: bool = False,
                         keep: Callable[[str], bool] | None = None, timeout_s: float | None = None) -> list[Any]:
    """Every instance whose id starts with ``prefix`` (and passes ``keep``, if given), following the management API's
    pages. ``keep`` drops the others page by page. Inputs only with ``show_input``: a shard group's input holds its
    shards' state (a finished 200-shard group's is ~114 KB once parsed, kept in a blob when large) and the task hub
    holds every group ever run, so the task list reads the tasks' own inputs by id instead (``_task_inputs``).

    The extension answers the instance list 100 at a time with an ``x-ms-continuation-token`` header for the next page
    (azure-functions-durable-extension HttpApiHandler.cs); the SDK's ``get_status_all``/``get_status_by``
    (azure-functions-durable 1.7.0) read the first page only and never see the header. So this calls the same endpoint
    the SDK calls (the binding's ``rpcBaseUrl``), sending each page's token back until the token is empty.
    Every page within ``timeout_s`` together (None: ``INSTANCE_LIST_TIMEOUT_S``; ``InstanceListTooSlow`` past it).
    """
    from urllib.parse import quote

    import aiohttp
    from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

    url = (f"{client._orchestration_bindings.rpc_base_url}instances/?instanceIdPrefix={quote(prefix)}&top=100"
           f"&showInput={'true' if show_input else 'false'}")
    statuses: list[Any] = []
    token, seen = "", set()
    timeout_s = max(0.0, INSTANCE_LIST_TIMEOUT_S if timeout_s is None else timeout_s)
    try:  # one deadline for every page together (a session's ClientTimeout applies to each request alone)
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as session:
            while True:
                async with session.get(url, headers={"x-ms-continuation-token": token} if token else {}) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"the Durable management API answered {resp.status} to the instance list")
                    page = await resp.json(content_type=None) or []
                    token = resp.headers.get("x-ms-continuation-token", "") or ""
                statuses.extend(DurableOrchestrationStatus.from_json(item) for item in page
                                if keep is None or keep(str(item.get("instanceId", ""))))
                if not token or token in seen:
                    return statuses
                seen.add(token)
    except asyncio.TimeoutError:
        raise InstanceListTooSlow(
            f"listing the task hub's instances did not end in the {timeout_s:.0f} s left for it ({len(seen) + 1} pages "
            "read)",
            f"the hub holds too many finished instances: {PURGE_HINT}; or ask for a task by id "
            "(GET /api/tasks/{id})") from None


@bp.route(route="tasks", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def list_tasks(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Tasks only (not their shard-group or repeat-removal orchestrations), newest first; a caller's own only
    (operators: all). Each with ``updated`` and, if so, ``stalled`` as ``GET /api/tasks/{id}`` has them
    (``_list_liveness``): for a task detecting, only once its own orchestration is too quiet, when its shard groups'
    updates are read (a few such tasks per list)."""
    caller = request_caller(req)
    try:
        limit = int(req.params.get("limit", str(c.TASK_LIST_LIMIT)))
        if limit < 1:
            raise ValueError
    except ValueError:
        return _json(400, {"error": f"limit must be a positive integer, got {req.params.get('limit')!r}",
                           "hint": "e.g. GET /api/tasks?limit=20"})
    from core.ids import TASK_PREFIX

    base = _base_url(req)
    rows = []
    # per task id: its runtime status, own lastUpdatedTime, input and custom status, to judge its liveness by
    judged: dict[str, tuple[str | None, datetime | None, dict[str, Any], dict[str, Any]]] = {}
    # without inputs: a page with them made the extension read every shard group's input too (each group's holds its
    # shards' state, kept in a blob when large), for every task the hub ever ran; the tasks' own inputs (owner,
    # request name) are read one by one below, and only those of the rows shown when the caller sees every task
    began = time.monotonic()
    listed = sorted(await _all_instances(client, TASK_PREFIX, keep=is_task_id, show_input=False),
                    key=lambda st: _created(st), reverse=True)
    shown = listed[:limit] if caller.operator else listed  # a caller's own: every task's owner is in its input
    inputs = await _task_inputs(client, [str(getattr(status, "instance_id", "") or "") for status in shown],
                                INSTANCE_LIST_TIMEOUT_S - (time.monotonic() - began))
    for status, started in zip(shown, inputs):
        task_id = str(getattr(status, "instance_id", "") or "")
        owner = owner_of(started)
        if not caller.operator and owner != caller.id:
            continue
        custom = status.custom_status if isinstance(status.custom_status, dict) else {}
        created = getattr(status, "created_time", None)
        request = started.get("request")
        if not isinstance(request, dict):
            request = {}
        runtime = _runtime(status)
        rows.append({"id": task_id, "runtime_status": runtime, "stage": _stage(runtime, custom),
                     "images": custom.get("images"), "created": created.isoformat() if created else None,
                     "request_name": str(request.get("request_name") or ""),
                     "status_url": f"{base}/api/tasks/{task_id}", **({"owner": owner} if owner else {})})
        judged[task_id] = (runtime, _updated_time(status), started, custom)
    rows.sort(key=lambda r: r["created"] or "", reverse=True)
    await _list_liveness(client, rows[:limit], judged, INSTANCE_LIST_TIMEOUT_S - (time.monotonic() - began))
    return _json(200, {"tasks": rows[:limit], "total": len(listed) if caller.operator else len(rows)})


# How many tasks detecting one GET /api/tasks reads the shard groups of, at most (one instance listing each, all at
# once): only those whose own orchestration is quiet for longer than the stage's bound are read, but a hub with many
# old detecting tasks must not make the list slow; past this many, the newest are read, the rest carry a ``note``.
LIST_GROUP_READS = 10
# What ``_list_liveness``'s gate takes a detecting task's own update for when the task's status has none: the oldest
# there can be, so that its groups are read as GET /api/tasks/{id} reads them (``_describe`` judges such a task by its
# groups' updates alone). The extension always answers one (HttpApiHandler.cs ``ConvertFrom``:
# ``status.LastUpdatedTime.ToString("s") + "Z"``), but the SDK leaves it None when a payload lacks it.
_UNKNOWN_UPDATE = datetime.min.replace(tzinfo=timezone.utc)


async def _list_liveness(client: df.DurableOrchestrationClient, rows: list[dict[str, Any]],
                         judged: dict[str, tuple[str | None, datetime | None, dict[str, Any], dict[str, Any]]],
                         timeout_s: float) -> None:
    """Add ``updated`` and ``stalled`` to the list's ``rows`` (newest first) as ``_describe`` does for one task:
    ``_add_liveness`` with the task's own update, or, while it detects with shard groups, the newest of it and its
    groups' (``_groups_progress``: the task orchestration has no episode while it waits on them).

    Why the groups are read only for a task whose own update alone would be ``stalled``: the newest of both is never
    older than the task's own, so a task whose own update is recent cannot be stalled and costs the list nothing more
    (such a row has no ``updated``: its groups' would be newer; ``GET /api/tasks/{id}`` has it). One whose own update
    is not known proves nothing, so its groups are read too (``_UNKNOWN_UPDATE``). A healthy task passes the gate as
    well once it has detected for longer than the bound (``core.stall.quiet_limit_s``, 80 minutes by default: its own
    orchestration has no episode while it waits on its groups), so a list during long detections reads their groups
    each time; hence the bound on how many (``LIST_GROUP_READS``), each one instance listing, within what is left of
    the list's deadline (``timeout_s``: Azure cuts an HTTP function at 230 s). A row whose groups were not read (past
    that many, out of time, the task hub busy) is left unjudged with a ``note`` saying so, rather than failing the
    list: an addition to the list, as ``api.repeat_search``'s reads are to a task's status."""
    suspects: list[dict[str, Any]] = []
    for row in rows:
        runtime, updated, started, custom = judged[str(row["id"])]
        if row["stage"] != Stage.detecting or not custom.get("groups"):  # as _describe: the task's own update
            _add_liveness(row, runtime, updated, started)
            continue
        probe = dict(row)  # an own update not known proves nothing recent: judged as the oldest there can be
        _add_liveness(probe, runtime, updated or _UNKNOWN_UPDATE, started)
        if "stalled" in probe:  # too quiet by its own update alone (or not known): its groups say whether it moves
            suspects.append(row)
    for row in suspects[LIST_GROUP_READS:]:
        own = ("its own orchestration's last update is not known" if judged[str(row["id"])][1] is None else
               "its own orchestration has not changed for longer than stage detecting's bound, as it waits on its "
               "shard groups while they detect (they are what moves)")
        row["note"] = (f"whether it stalled was not judged: {own}, and the list reads the shard groups of "
                       f"{LIST_GROUP_READS} such tasks at most (the newest); GET /api/tasks/{row['id']} says whether "
                       f"it moves")

    async def judge(row: dict[str, Any]) -> None:
        task_id = str(row["id"])
        runtime, updated, started, custom = judged[task_id]
        try:
            groups_updated = (await _groups_progress(client, task_id, custom, timeout_s))[-1]
        except Exception as exc:  # noqa: BLE001 - any failure of this added read: the list still answers
            logger.warning("task %s: its shard groups could not be read for the task list (%s: %s)", task_id,
                           type(exc).__name__, str(exc)[:200])
            row["note"] = (f"whether it stalled was not judged: its shard groups could not be read "
                           f"{'in the time left for the list' if isinstance(exc, InstanceListTooSlow) else 'just now'}"
                           f" ({type(exc).__name__}); GET /api/tasks/{task_id} says whether it moves")
            return
        _add_liveness(row, runtime, _later(updated, groups_updated), started)

    await asyncio.gather(*(judge(row) for row in suspects[:LIST_GROUP_READS]))


def _created(status: Any) -> str:
    created = getattr(status, "created_time", None)
    return created.isoformat() if created else ""


TASK_INPUT_READS = 16  # status reads at once when the task list needs the tasks' inputs


async def _task_inputs(client: df.DurableOrchestrationClient, task_ids: list[str],
                       timeout_s: float = INSTANCE_LIST_TIMEOUT_S) -> list[dict[str, Any]]:
    """Each task's orchestration input (``{}`` when it has none or is gone), read ``TASK_INPUT_READS`` at a time,
    all within ``timeout_s`` (what is left of the listing's deadline: Azure cuts an HTTP function at 230 s)."""
    gate = asyncio.Semaphore(TASK_INPUT_READS)

    async def one(task_id: str) -> dict[str, Any]:
        async with gate:
            return _task_input(await read_status(client, task_id, show_input=True))

    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            return list(await asyncio.gather(*(one(t) for t in task_ids)))
    except TimeoutError:
        raise InstanceListTooSlow(
            f"reading the inputs of {len(task_ids)} tasks took past the listing's deadline "
            f"({max(0.0, timeout_s):.0f} s were left for them)",
            f"the hub holds too many tasks: {PURGE_HINT}; or ask for a task by id (GET /api/tasks/{{id}})") from None


# What to check while shards wait out worker exits 69 (orchestrations.shards "Unavailable exits"; the exit's causes:
# gpu_batch.exit_codes STORAGE_UNAVAILABLE): one that lasts is seldom a passing outage but the nodes' network.
UNREACHABLE_CHECK = ("the pool nodes' outbound network to what the reason names: DNS, and the firewall, NSG or route "
                     "rules to the storage account, the Key Vault, the model's download host (or put the model in "
                     "storage) or the node identity endpoint (IMDS, 169.254.169.254); the worker's log is the pool "
                     "task's stderr.txt. Each shard is tried again after a back-off, spending no attempt until "
                     "'until'; from then its exits count, and it is given up after its max attempts")


# An instance's runtime statuses once it has ended (Durable's OrchestrationRuntimeStatus): it runs no more episodes
ENDED_RUNTIMES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})


async def _groups_progress(client: df.DurableOrchestrationClient, task_id: str, custom: dict[str, Any],
                           timeout_s: float | None = None
                           ) -> tuple[dict[str, int], dict[str, Any] | None, dict[str, Any] | None, int, int,
                                      datetime | None]:
    """``_child_progress`` of the run's shard groups a detecting task's custom status names (``groups``, and
    ``groups_run``: the run whose groups they are), for ``GET /api/tasks/{id}`` and the list alike."""
    return await _child_progress(client, task_id, int(custom["groups"]), str(custom.get("groups_run") or ""),
                                 timeout_s)


async def _child_progress(client: df.DurableOrchestrationClient, task_id: str, groups: int, run: str = "",
                          timeout_s: float | None = None
                          ) -> tuple[dict[str, int], dict[str, Any] | None, dict[str, Any] | None, int, int,
                                     datetime | None]:
    """Sum the progress counters of the task's shard groups, from their custom statuses, in ONE instance query.

    Why a query by id prefix rather than one status read per group: each read cost a round trip (~12.5 ms per group
    measured through devhost, one after another; 50 groups took most of a second, 1,000 groups many seconds); the
    management API's instance list returns 100 instances' custom statuses per page (``_all_instances`` follows the
    pages), without their inputs (``showInput=false``: a group's input holds the state of each of its shards).
    Only the groups of the current run count (``g < groups``: a re-run with fewer groups leaves the old ones).

    ``images_progress`` sums each group's own never-decreasing count; a group from before that count reports its
    final and in-progress images instead. Also returns the first ``waiting`` a group shows (a step waiting out a
    busy service: ``orchestrations.retries``), or None, the groups' ``unreachable`` notes as one
    (``_merge_unreachable``), or None, and how many of the run's groups show no counts: not listed yet, or with no
    status (``null`` on Azure until a group's first work item is stored; devhost README, fidelity rows 33 and 43),
    and how many of those had ended (their instance's runtime status, in the same listing: Completed, Failed,
    Terminated, Canceled), so will never show counts: a group that failed or was terminated before its status was
    stored. Such groups count nothing: their images are neither done nor missing, only not known; those ended are not
    "starting", as the answer said of every group without counts before.

    Last, the newest ``lastUpdatedTime`` of the run's groups (None: none listed with one), from the same listing: the
    task orchestration has no episode while its groups poll (it waits on them all), so whether the task still moves
    is read from them (``core.stall``). Every group of the run counts, with or without a status: a group whose
    status was never stored still records its episodes, and one that ended keeps its last.
    The listing within ``timeout_s`` (``_all_instances``; None: ``INSTANCE_LIST_TIMEOUT_S``).
    """
    wanted = {shards_instance_id(task_id, g, run) for g in range(groups)}
    prefix = shards_instance_id(task_id, 0)[: -len("0000")]  # every run's groups: a re-run's ids carry its run
    totals: dict[str, int] = {}
    waiting: dict[str, Any] | None = None
    unreachable: dict[str, Any] | None = None
    counted: set[str] = set()  # distinct ids: a group listed twice is one group
    ended: set[str] = set()  # listed without a status, and ended: it will not show counts
    newest: datetime | None = None
    for child in await _all_instances(client, prefix, show_input=False, timeout_s=timeout_s):
        child_id = str(getattr(child, "instance_id", "") or "")
        if child_id not in wanted:
            continue
        newest = _later(newest, _updated_time(child))
        status = getattr(child, "custom_status", None)
        if not isinstance(status, dict):
            if _runtime(child) in ENDED_RUNTIMES:
                ended.add(child_id)
            continue
        counted.add(child_id)
        counts = {k: v for k, v in status.items() if isinstance(v, int) and not isinstance(v, bool)}
        counts.setdefault("images_progress", counts.get("images_done", 0) + counts.get("images_in_progress", 0))
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        if waiting is None and isinstance(status.get(c.WAITING_KEY), dict):
            waiting = status[c.WAITING_KEY]
        if isinstance(status.get(c.UNREACHABLE_KEY), dict):
            unreachable = _merge_unreachable(unreachable, status[c.UNREACHABLE_KEY])
    return totals, waiting, unreachable, len(wanted - counted - ended), len(ended - counted), newest


def _updated_time(status: Any) -> datetime | None:
    """An instance's ``lastUpdatedTime`` (the SDK's ``last_updated_time``), timezone-aware (UTC), or None. The
    extension answers it as ``...Z`` (devhost README, fidelity row 34), which the SDK parses aware; a naive one (a
    stand-in's) is taken as UTC."""
    when = getattr(status, "last_updated_time", None)
    if not isinstance(when, datetime):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _merge_unreachable(so_far: dict[str, Any] | None, note: dict[str, Any]) -> dict[str, Any]:
    """Two groups' ``unreachable`` notes (orchestrations.shards "Unavailable exits") as one: their shards summed, the
    worker's words and since of the earliest first exit, the earliest until (the first shards whose exits 69 count
    again) and the earliest next try. ISO times of one clock (the orchestrations'), compared as times."""
    if so_far is None:
        return dict(note)
    first = so_far if _time_or_max(so_far.get("since")) <= _time_or_max(note.get("since")) else note
    out = {**first, "shards": int(so_far.get("shards") or 0) + int(note.get("shards") or 0)}
    for key in ("until", "at"):
        times = [t for t in (so_far.get(key), note.get(key)) if _parse_time(t) is not None]
        if times:
            out[key] = min(times, key=_time_or_max)
    return out


def _time_or_max(text: Any) -> datetime:
    return _parse_time(text) or datetime.max.replace(tzinfo=timezone.utc)


def _parse_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


async def describe_task(client: df.DurableOrchestrationClient, task_id: str) -> dict[str, Any]:
    """The task's status as the API answers it."""
    return (await _describe(client, task_id, False))[0]


async def describe_task_with_input(client: df.DurableOrchestrationClient,
                                   task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``describe_task`` and the task's input (which the answer does not show), from one status read."""
    return await _describe(client, task_id, True)


async def _describe(client: df.DurableOrchestrationClient, task_id: str,
                    with_input: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    if not is_task_id(task_id):
        raise TaskNotFound(f"{task_id!r} is not a task id", "task ids look like task-<20 hex digits>: GET /api/tasks "
                           "shows them, POST /api/tasks returns a new one's")
    status = await read_status(client, task_id, show_input=with_input)
    runtime = _runtime(status)
    if runtime is None:
        raise TaskNotFound(f"no task {task_id}", "check the id against GET /api/tasks, or start the task with "
                           "POST /api/tasks")
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    out: dict[str, Any] = {"id": task_id, "runtime_status": runtime, "stage": _stage(runtime, custom),
                           **{k: v for k, v in custom.items() if k != "stage"}}
    if runtime == "Failed":
        out["error"] = failure_message(str(custom.get("error") or status.output or ""))
    updated = _updated_time(status)
    if out["stage"] == Stage.detecting and custom.get("groups"):
        progress, waiting, unreachable, unknown, silent, groups_updated = await _groups_progress(
            client, task_id, custom)
        updated = _later(updated, groups_updated)  # the task waits on its groups: they are what moves
        if unknown:  # starting (no status stored yet): in none of the counts, not lost
            out["groups_unknown"] = unknown
        if silent:  # ended before a status was stored: in none of the counts, and never will be
            out["groups_ended_without_counts"] = silent
        if waiting is not None and c.WAITING_KEY not in out:  # a shard group waiting out a busy Batch or storage
            out[c.WAITING_KEY] = waiting
        if unreachable is not None:  # shards whose workers exited 69, waiting to be tried again: why, what to check
            out[c.UNREACHABLE_KEY] = {**unreachable, "check": UNREACHABLE_CHECK}
        out.update({k: progress.get(k, 0) for k in ("images_done", "images_failed", "images_missing", "resubmissions")})
        out["images_done"] = progress.get("images_progress", 0)  # final or counted by running shards; never lower
        out["shards_done"] = progress.get("done", 0) + progress.get("given_up", 0)
        out["shards_running"] = progress.get("pool_running", 0)
        out["shards_queued"] = progress.get("pool_queued", 0)
        # in no pool task: an exit 69's back-off (orchestrations.shards "Unavailable exits"); done + running + queued
        # + waiting is every submitted shard, as before those were counted queued
        out["shards_waiting"] = progress.get("unavailable_waiting", 0)
        images = int(custom.get("images") or 0)
        done = out["images_done"]
        out["progress"] = round(done / images, 4) if images else 0.0
        # from when the pool work began (older instances: the task's start); reused images were never detected
        start = _parse_time(custom.get("detecting_since") or custom.get("started"))
        if start and done:
            rate, eta = live_rate(images, done, int(custom.get("reused") or 0) + int(custom.get("earlier") or 0),
                                  (datetime.now(timezone.utc) - start).total_seconds())
            out["images_per_second"] = round(rate, 2)
            out["eta_seconds"] = eta
    elif out["stage"] in FINISHED:
        out["progress"] = 1.0
    started = _task_input(status) if with_input else {}
    _add_liveness(out, runtime, updated, started)
    return out, started


def _add_liveness(out: dict[str, Any], runtime: str | None, updated: datetime | None,
                  started: dict[str, Any]) -> None:
    """``updated``: when the task last changed (its orchestration's ``lastUpdatedTime``; while detecting, the newest of
    it and its shard groups'), and, while it runs, ``stalled`` once that is longer ago than any of the stage's waits
    explains (``core.stall``: on Azure a task whose action the extension dropped stays Running for ever, failing
    nothing). Judged only with the task's input read (``started``, GET /api/tasks/{id}): its bounds are the knobs
    snapshotted there (``poll_max_s``, ``confirm_timeout_s``), not the app's settings of today."""
    if updated is None:
        return
    out["updated"] = updated.isoformat()
    knobs = started.get("knobs")
    if runtime not in ACTIVE or not isinstance(knobs, dict):
        return
    note = stalled(str(out["stage"]), str(out["id"]), datetime.now(timezone.utc), updated,
                   OrchestrationKnobs.from_dict(knobs))
    if note is not None:
        out["stalled"] = note


@bp.route(route="tasks/{task_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def get_task(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    task_id = req.route_params["task_id"]
    await authorize_task(req, client, task_id)
    info, started = await describe_task_with_input(client, task_id)
    if info["stage"] in FINISHED and isinstance(info.get("repeated_detections"), dict):
        # the merge's count is fixed in the task's status; a search run again since replaced the list: count that
        # (a finished task serves its own generation, which its input names)
        from api import repeat_search

        key = layout.generation_key(task_id, str(started.get("generation") or ""))
        info["repeated_detections"] = await repeat_search.current_repeats(client, task_id, key,
                                                                          info["repeated_detections"])
    if info["stage"] not in FINISHED:  # a re-run: say which results the task still hands out
        previous = started.get("previous")
        if isinstance(previous, str):
            info["served"] = {"generation": previous, "results_url": f"{_base_url(req)}/api/tasks/{task_id}/results",
                              "hint": "this is a re-run; the results of the task's previous run are served until "
                                      "a re-run completes" + ("" if info["runtime_status"] in ACTIVE else
                                                              ", and the operations after a task work on them")}
    return _json(200, info)


async def finished_task(client: df.DurableOrchestrationClient, task_id: str, what: str) -> dict[str, Any]:
    """``describe_task`` for a task whose served generation has results to work on; ``TaskNotFinished`` (409)
    otherwise.

    A re-run that ended without results (failed, cancelled, terminated) leaves the earlier generation served
    (``adapters.generations``): its results, pages and lists are what the task hands out, so the operations after a
    task work on them. While a re-run is still running they wait: its promotion takes the earlier pages offline, and
    a re-render of them at that moment would publish pages nobody lists."""
    info, started = await describe_task_with_input(client, task_id)
    if info["stage"] in FINISHED:
        return info
    rerunning = "previous" in started
    if info["runtime_status"] not in ACTIVE and rerunning:
        return info  # the last re-run ended without results; an earlier generation's are served
    if rerunning:
        raise TaskNotFinished(f"task {task_id} is running again (stage: {info['stage']}); its {what} can be worked on "
                              "when the re-run ends", f"poll GET /api/tasks/{task_id} until its stage is 'completed'")
    raise TaskNotFinished(f"task {task_id} has no {what} (stage: {info['stage']})"
                          if info["runtime_status"] not in ACTIVE else
                          f"task {task_id} has no {what} yet (stage: {info['stage']})",
                          _no_results_hint(task_id, info))


def _no_results_hint(task_id: str, info: dict[str, Any]) -> str:
    """What to do about a task without results: wait for a running one; an ended one never gets them by waiting."""
    stage = info["stage"]
    if info["runtime_status"] in ACTIVE:
        if stage == Stage.awaiting_confirmation:
            return f"it waits for confirmation: POST /api/tasks/{task_id}/confirm (or cancel it)"
        return f"poll GET /api/tasks/{task_id} until its stage is 'completed'"
    if stage == Stage.estimated:
        return "this was an estimate (\"dry_run\": true), which runs nothing: post the request without dry_run"
    if stage == Stage.expired:
        return "it was never confirmed, so nothing ran: post the request again (with \"rerun\": true)"
    if stage == Stage.failed:
        return (f"see its error (GET /api/tasks/{task_id}); post the same request again to resume it from the "
                "results already written")
    if stage == Stage.terminated:  # resumed by a plain post (api.starters), as a failed one: "rerun" starts afresh
        return ("it was terminated: post the same request again, without \"rerun\", to resume it from the results "
                "already written")
    return f"it ended {stage} without results: post the same request with \"rerun\": true to run it again"


def previews_gone(task_id: str) -> str:
    """How a task's preview pages may have gone, with the delete's route in full. Why the task's id in it: the CLI
    shows an app's routes as its own commands (``cli.hints.translate``), which needs the id; "DELETE .../previews"
    reached a CLI user as HTTP words for a command they have (``trapbatch previews <id> --delete``)."""
    return f"they were deleted (DELETE /api/tasks/{task_id}/previews) or expired (previews_expire_days)"


def no_preview_pages(task_id: str) -> str:
    return (f"no preview pages are published for this task: {previews_gone(task_id)}, or the task ended before it "
            "published any")


def _preview_page(req: func.HttpRequest, s: Settings, task_id: str, variant: str = "") -> dict[str, Any]:
    """Where a task's preview page is. Composed per request: the folder's random part is kept out of the
    orchestration history and status (plain tables), see ``adapters.preview_folders.preview_folder``."""
    folder = existing_preview_folder(clients.store(s), s, task_id)
    if folder is None:  # a task finished before previews had their own folders, or whose previews were deleted
        # ``task_id`` is a generation key (``layout.generation_key``: ``<task>/runs/<run>``); the route takes the task's
        return {"container": s.web_container, "error": no_preview_pages(task_id.partition("/")[0]),
                "hint": "the results and exports are unchanged; pages taken off stay off (a re-render, a repeat "
                        "search or a removal does not publish them again)"}
    page = layout.page_blob(folder, variant)
    where: dict[str, Any] = {"container": s.web_container, "folder": folder, "blob": page}
    if s.public_web_url:  # the storage account's static website endpoint (infra/ sets TRAPBATCH_PUBLIC_WEB_URL)
        where["public_url"] = f"{s.public_web_url}/{page}"
    where["local_url"] = f"{_base_url(req)}/web/{page}"  # devhost serves $web there; the Functions host does not
    where["hint"] = "the static website is public: share this address only with people who may see the images"
    return where


def _results_answer(req: func.HttpRequest, s: Settings, store: BlobStore, task_id: str, stage: str
                    ) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
    """(served generation, its result files, the answer of GET .../results): the blob reads and the links of
    ``get_results``, one blocking step it runs off the event loop (``api.edge`` module docstring)."""
    from adapters import share_links  # read-only links, minted per request and returned only here

    generation = served_generation(store, s.container, task_id)
    key = layout.generation_key(task_id, generation)  # a re-run's results only once it completed (promotion)
    files = share_links.result_files(store, s.container, key)
    try:
        links: dict[str, Any] = share_links.linked(files, share_links.read_links(
            store, s.container, share_links.all_names(files), s.link_days))
    except AzureError as exc:  # e.g. the app's identity may not get a user delegation key: the rest still answers
        links = {"error": f"no links: {type(exc).__name__}",
                 "hint": "the app's identity needs generateUserDelegationKey on its storage account (Storage Blob "
                         "Data Owner, which infra/app/rbac.bicep grants, includes it)"}
    answer: dict[str, Any] = {
        "id": task_id, "stage": stage, "generation": generation,
        "results": {"container": s.container, "blob": layout.results_blob(key),
                    "url": store.url(s.container, layout.results_blob(key)), "csv": layout.csv_blob(key),
                    "exports": {v: e["exports"] for v, e in files.items()},
                    # every file of every variant by blob name (the repeats-removed results and CSV too), as
                    # ``links`` has their links: what ``trapbatch results`` downloads
                    "files": files},
        "previews": _preview_page(req, s, key),
        "links": links,
    }
    return generation, files, answer


@bp.route(route="tasks/{task_id}/results", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def get_results(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from api.after_task import extend_results, wants_zip_rebuild  # the served generation's zip, re-render and expiry

    task_id = req.route_params["task_id"]
    rebuild = wants_zip_rebuild(req.params)  # ?zip=rebuild; a bad value is a 400 before any work
    await authorize_task(req, client, task_id)
    info, started = await describe_task_with_input(client, task_id)
    rerunning = info["stage"] not in FINISHED
    if rerunning and "previous" not in started:
        info = await finished_task(client, task_id, "results")  # 409: no generation of it has results to serve
    s = clients.settings()
    store = clients.store(s)
    generation, files, answer = await asyncio.to_thread(_results_answer, req, s, store, task_id, info["stage"])
    if rerunning:
        answer["rerun"] = {"stage": info["stage"], "hint": (
            "these are the results of the task's previous run; the re-run's replace them when it completes (its "
            "stage becomes 'completed')" if info["runtime_status"] in ACTIVE else
            f"the re-run ended {info['stage']} without results: these are the task's previous run's, still served; "
            "post the request with \"rerun\" again to run it again")}
    if not rerunning and isinstance(info.get("replaced"), dict):  # the generation this one replaced: when it goes
        answer["replaced"] = info["replaced"]
    request: dict[str, Any] = started.get("request") or {}
    # where the images are, by name only (no secret or its name): `trapbatch zooniverse` reads the manifests' images
    answer["source"] = {"container": str(request.get("container") or ""),
                        "account_url": str(request.get("source_account_url") or "")}
    await extend_results(client, s, store, task_id, files, answer, generation, rebuild)
    return _json(200, answer)


def _delete_served_previews(s: Settings, task_id: str) -> int | None:
    """Delete the served generation's preview folder (one delete per blob): the number deleted, None when there was
    none. Blocking: ``delete_previews`` runs it off the event loop (``api.edge`` module docstring)."""
    store = clients.store(s)
    return delete_preview_folder(store, s, served_key(store, s.container, task_id))


@bp.route(route="tasks/{task_id}/previews", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def delete_previews(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Take a finished task's preview pages (and thumbnails) off the public static website. The results stay."""
    task_id = req.route_params["task_id"]
    await authorize_task(req, client, task_id)
    await finished_task(client, task_id, "previews")
    deleted = await asyncio.to_thread(_delete_served_previews, clients.settings(), task_id)
    if deleted is None:
        return _json(404, {"error": f"task {task_id} has no preview pages", "hint": "they were deleted already, or "
                           "the task never reached its publishing stage"})
    logger.info("task %s: preview pages deleted (%d files)", task_id, deleted)
    return _json(200, {"id": task_id, "deleted": deleted,
                       "hint": "the pages' address no longer works; the results and exports are unchanged"})


@bp.route(route="tasks/{task_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def cancel_task(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    task_id = req.route_params["task_id"]
    await authorize_task(req, client, task_id)
    # the run and the stage from one status read: the run whose marker is written is the one whose stage decided the
    # answer and the event (two reads could see a run terminated and replaced between them, and cancel the replacing
    # run, raising it the event a waiting run's stage called for: the race api.cancel_marker answers 409 for)
    info, started = await describe_task_with_input(client, task_id)
    if info["runtime_status"] not in ACTIVE:
        return _json(409, {"error": f"task {task_id} is not running (stage: {info['stage']})",
                           "hint": "only a running task can be cancelled"})
    waiting = info["stage"] == Stage.awaiting_confirmation
    if not waiting and info["stage"] not in CANCELLABLE:  # the pool work is over; the marker would be read by nobody
        return _json(409, {"error": f"task {task_id} can no longer be cancelled (stage: {info['stage']})",
                           "hint": "its detections are done and it is writing the results; it ends on its own "
                                   f"within minutes: poll GET /api/tasks/{task_id}"})
    # The marker always: the end of the listing reads it (a cancel while the images are listed ends the task before
    # any submission, estimate or confirmation wait) and so does every shard group's poll (a confirmation that came
    # just before this cancel still stops at the first poll). The event too before the pool work: a task waiting for
    # confirmation ends at once, and one still listing that then waits finds it waiting (an EventRaised in the
    # history before the wait is kept: azure-functions-durable-python TaskOrchestrationExecutor.set_task_value puts
    # it in deferred_tasks, which DurableOrchestrationContext applies when the wait is created; devhost's fidelity
    # row 31).
    run = str(started.get("run") or "")
    job = layout.pool_job_id(task_id, run)  # this run's marker: the next run starts clean
    s = clients.settings()
    replaced_by = await asyncio.to_thread(write_cancel_marker, clients.store(s), s.container, job)
    if replaced_by is not None:  # terminated and replaced since the status was read: its marker keeps that mark
        # (api.cancel_marker). No event either: it would reach the replacing run, which nobody asked to cancel
        logger.info("task %s: cancel of run %s not done: run %s replaced it meanwhile", task_id, run or "?",
                    replaced_by or "?")
        return _json(409, {"error": f"task {task_id}: the run this cancel was for (run {run or '?'}) was terminated "
                                    f"(or failed with its work running) and run {replaced_by or '?'} of the task "
                                    "replaced it while the cancel was made; "
                                    "nothing was cancelled",
                           "hint": f"GET /api/tasks/{task_id} shows the run now running; to stop it, POST "
                                   f"/api/tasks/{task_id}/cancel again"})
    if waiting or info["stage"] in BEFORE_POOL:
        ended = await _raise_while_running(client, task_id, c.CANCEL_EVENT, run)
        if ended is not None:
            return _json(409, {"error": f"task {task_id} ended while the cancel was made (stage: {ended['stage']})",
                               "hint": f"nothing is left to cancel; GET /api/tasks/{task_id} shows how it ended"})
    replaced_by = await _replaced_since(client, task_id, run)
    if replaced_by is not None:  # after the marker's write: the marker and the event are the replaced run's alone
        logger.info("task %s: cancel of run %s made as run %s replaced it", task_id, run or "?", replaced_by or "?")
        return _json(409, {"error": f"task {task_id}: the run this cancel was for (run {run or '?'}) was replaced by "
                                    f"run {replaced_by or '?'} of the task while the cancel was made; run "
                                    f"{replaced_by or '?'} was not cancelled",
                           "hint": f"GET /api/tasks/{task_id} shows the run now running; to stop it, POST "
                                   f"/api/tasks/{task_id}/cancel again"})
    logger.info("task %s: cancel of run %s requested (stage %s)", task_id, run or "?", info["stage"])
    return _json(202, {"id": task_id, "cancel_requested": True,
                       "hint": "nothing was submitted; the task's stage becomes 'cancelled'" if waiting else
                       "the task ends when its listing of the images does, before any pool work (or, if the listing "
                       "had just ended, at the first poll of its pool work); its stage becomes 'cancelled'"
                       if info["stage"] in BEFORE_POOL else
                       "pool work stops at the next poll; the task's stage becomes 'cancelled'"})


@bp.route(route="tasks/{task_id}/terminate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def terminate_task(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """End the task's running (or pending) run now, whatever it is doing: the way out of a task that will never move
    again (``core.stall``), without the Durable extension's system key that its management API takes. With
    ``"target": "removal"`` or ``"search"`` in the body, the task's repeat removal or repeat search run again instead
    (``api.repeat_runs``), after the same caller and reason checks.

    Why this works on a hung task: the SDK's ``terminate`` is the management API's ``POST .../instances/<id>/
    terminate?reason=`` (azure-functions-durable ``DurableOrchestrationClient.terminate``), which the extension answers
    by queueing a terminate message (``HttpApiHandler.HandleTerminateInstanceRequestAsync`` calls
    ``TerminateAsync``: 404 for an unknown instance, 410 Gone for a finished one, else 202); dtfx processes that
    message as an episode of its own once any episode running ends: the orchestrator is replayed over its history
    and ``TaskOrchestrationExecutor.ProcessEvent`` hands the ``ExecutionTerminatedEvent`` to
    ``TaskOrchestrationContext.HandleExecutionTerminatedEvent``, which completes the instance Terminated whatever
    the replay does, waiting on no step of it (a dropped action's completion included; devhost's ``Engine.terminate``
    replays it likewise: devhost README, fidelity row 48). The instance shows Terminated once the message is
    processed, so right after a 202 it may still read Running.

    What it leaves: a terminate stops the orchestration only; its shard groups, activities and pool tasks run on
    (README, the paragraph after the request fields). Posting the same request again ends them (the new run writes
    the terminated run's cancel marker and closes its pool job: ``_ended_runs``, orchestrations.task
    ``_end_terminated_run``) and resumes the task from the results already written. The SDK takes a 410 as success,
    so a run that ended by itself between the status read and the terminate is told apart by reading the status
    again, and so is a run replaced meanwhile (``_replaced_meanwhile``); when that read finds the task hub busy
    (``TaskHubUnavailable``) the 202 stands, the terminate having been queued (a 503 had clients send it again and be
    answered 409 "not running").

    The 202 writes the done files the run's end would have: beside its dropped request and those that joined it
    (api.terminated_answers, adapters.terminated_drops: stage ``terminated``, or the end a run telling of it had,
    never over a file naming that end), once the instance reads Terminated (``SETTLE_S`` at most) and by the answer's
    deadline, best effort: ``drop_answers`` says what became of them."""
    until = Deadline.within(POST_ANSWER_S, _clock)  # the done files' writes stop by it (api.terminated_answers)
    task_id = req.route_params["task_id"]
    caller = await authorize_task(req, client, task_id)
    raw = req.get_body() or b""
    body = parse_json_body(raw, req.headers.get("content-type", ""), TERMINATE_EXAMPLE,
                           f"send only a short reason, e.g. {TERMINATE_EXAMPLE}") if raw.strip() else {}
    reason = parse_terminate(body)
    target = terminate_target(body)
    reason = reason or f"terminated through POST /api/tasks/{task_id}/terminate" + (
        "" if target == "task" else f" (target {target})")
    if caller.verified:  # who ended it, beside why (the caller's id is no secret: it is the tasks' owner field)
        reason = f"{reason} (by {caller.id})"
    if target != "task":  # the repeat removal or search run after the task (api.repeat_runs)
        return await repeat_runs.terminate_repeat_run(client, task_id, target, reason, _base_url(req))
    info, started = await describe_task_with_input(client, task_id)
    if info["runtime_status"] not in ACTIVE:
        return _json(409, {"error": f"task {task_id} is not running (stage: {info['stage']})",
                           "hint": _not_terminable_hint(task_id, info)})
    run = str(started.get("run") or "")
    try:
        await client.terminate(task_id, reason)
    except Exception as exc:  # the SDK raises a bare Exception for 404 and any unexpected answer
        after = await describe_task(client, task_id)  # a task gone meanwhile: TaskNotFound, 404
        if after["runtime_status"] in ACTIVE:  # the extension's catch-all 500 (its storage failing), or no answer
            raise TaskHubUnavailable(f"the terminate of task {task_id} was not accepted by the task hub "
                                     f"({without_secrets(str(exc))})", "retry in a minute: the task hub's storage is "
                                     "busy or failing; a terminate sent twice ends the run once, and a 409 'not "
                                     "running (stage: terminated)' then means this one was made") from exc
        return _ended_meanwhile(task_id, after)
    try:  # with the input: the run now, which the terminate may have reached instead of ``run``
        after, now = await describe_task_with_input(client, task_id)
    except TaskHubUnavailable:  # the terminate was queued: a 503 "retry" would have it sent again and answered 409
        after, now = info, started
    if str(now.get("run") or "") != run:
        return _replaced_meanwhile(task_id, run, str(now.get("run") or ""))
    if after["runtime_status"] not in ACTIVE and after["runtime_status"] != "Terminated":
        return _ended_meanwhile(task_id, after)  # the extension's 410, which the SDK does not raise
    logger.info("task %s: run %s terminated through the API (stage %s)", task_id, run or "?", info["stage"])
    hint = _terminated_hint(task_id, str(info["stage"]), layout.pool_job_id(task_id, run), info, started)
    answer = {"id": task_id, "terminated": True, "target": "task", "run": run, "stage": info["stage"],
              "status_url": f"{_base_url(req)}/api/tasks/{task_id}", "hint": hint}
    # the done files its end would have written: beside its drop and the drops that joined it (best effort)
    drop_answers = await terminated_answers.answer_terminated(client, task_id, run, now, info, reason, hint, until)
    if drop_answers is not None:
        answer["drop_answers"] = drop_answers
    return _json(202, answer)


def _replaced_meanwhile(task_id: str, run: str, now: str) -> func.HttpResponse:
    """The 409 for a terminate made as a later run replaced the run the status read found (``run`` ended, terminated
    or failed, and the request was posted again: run ``now``). Why not the 202: the terminate names the instance, not
    the run ("Terminate events are not supposed to target any particular execution ID", the extension's
    ``DurableClient.TerminateAsync``, which queues it for the instance while it is Pending or Running, and
    ``HttpApiHandler.HandleTerminateInstanceRequestAsync`` answers 410 for it while none is), so it ended run ``now``
    if that had started by then, else nothing; the 202's words were ``run``'s (its stage, its pool job to end by hand,
    which run ``now`` ends itself: ``_ended_runs``), and said nothing of the run the task has now. As confirm's and
    cancel's answers (``_replaced_since``)."""
    logger.info("task %s: terminate of run %s made as run %s replaced it", task_id, run or "?", now or "?")
    return _json(409, {"error": f"task {task_id}: the run this terminate was for (run {run or '?'}) ended and run "
                                f"{now or '?'} of the task replaced it while the terminate was made; a terminate ends "
                                f"the run the task has when the platform takes it: run {now or '?'} if it had "
                                "started by then, else none",
                       "hint": f"GET /api/tasks/{task_id} shows run {now or '?'}: if it still runs and is to end, "
                               f"POST /api/tasks/{task_id}/terminate again; once its stage is 'terminated', post the "
                               "same request again, without \"rerun\" or \"only_new\", to resume the task (which "
                               "also ends the pool work its earlier runs left)"})


def _ended_meanwhile(task_id: str, after: dict[str, Any]) -> func.HttpResponse:
    logger.info("task %s: not terminated: it ended meanwhile (stage %s)", task_id, after["stage"])
    return _json(409, {"error": f"task {task_id} ended by itself before the terminate (stage: {after['stage']})",
                       "hint": f"nothing was terminated; GET /api/tasks/{task_id} shows how it ended"})


def _not_terminable_hint(task_id: str, info: dict[str, Any]) -> str:
    """What to do with a task that is not running: a terminated or failed one resumes by posting its request again;
    a finished one has nothing left to end."""
    if info["stage"] in (Stage.terminated, Stage.failed):
        return ("only a running task can be terminated; post the same request again, without \"rerun\" or "
                "\"only_new\", to resume it from the results already written (which also ends any pool work its "
                "last run left running)")
    return f"only a running task can be terminated; GET /api/tasks/{task_id} shows how it ended"


def _terminated_hint(task_id: str, stage: str, job: str, status: dict[str, Any] | None = None,
                     started: dict[str, Any] | None = None) -> str:
    """The 202's next steps. A run awaiting confirmation sent nothing to the pool: cancel ends it as cleanly, with
    stage 'cancelled' and no run to end later, so the hint says that is the better tool there. Only a run detecting
    leaves pool work running and a pool job to end by hand: the job is made by a shard group's first submit
    (activities.pool ``_ensure_job_once``) and closed once the groups end, before merging (orchestrations.task).

    ``status``: the task's status as read before the terminate. A run telling of its failure whose failure handling
    could not close its pool job says so in its ``error`` alone (``c.JOB_MAY_STILL_RUN``, orchestrations.task
    ``task_orchestrator``), with the command that ends it: the 202 then says that job may still run tasks, as the
    status does, not that its pool work had ended; the next run ends it (``_ended_runs``: the run was terminated).
    A cancelled, expired or estimated run terminated so shows 'terminated' (``_stage``), which a plain post resumes
    where before it found the task ended: the 202 warns of it, as ``core.stall.stalled_hint`` does.

    ``started``: the run's input. A run that replaced a terminated one (``ends_run``, ``ends_earlier``) first ends
    that run's pool work, in ``enumerating`` (orchestrations.task ``_end_terminated_run``: its cancel marker, then its
    job's close, each in its retries, which a Batch outage holds for as long as it lasts): terminated before that was
    done, it had sent nothing to the pool itself, but the earlier run's job may still be open and run tasks. The next
    run ends it too (``_ended_runs`` passes the terminated run's ``ends_run`` and ``ends_earlier`` on), so the 202 says
    so (``_earlier_work``)."""
    then = (f"its stage becomes 'terminated' once the platform has processed the terminate (GET /api/tasks/{task_id} "
            "shows it); ")
    if stage in FINISHED:  # telling of its end (orchestrations.task ``_tell``): its results stay complete and served
        return (f"it had ended {stage} and was telling of its end (the notification, the done file, the event), "
                "which stops; its results stay complete and served, and the task keeps showing that stage (its "
                "runtime_status Terminated); posting the same request again finds it, it does not run again")
    if stage in (Stage.cancelled, Stage.failed, Stage.expired, Stage.estimated):  # telling of such an end
        told = (f"it had ended {stage} and was telling of its end (the notification, the done file, the event), "
                "which stops; ")
        if stage == Stage.failed and c.JOB_MAY_STILL_RUN in str((status or {}).get("error") or ""):
            job = str((status or {}).get("pool_job") or job)
            return then + told + (f"its failure handling could not close its pool job {job}, which may still run "
                                  "tasks (its status's error says so) until you post the same request again, "
                                  "without \"rerun\" or \"only_new\", which ends that job and resumes the task from "
                                  "the results already written; to drop the task instead, end that pool job by hand "
                                  "(docs/deploy.md, 'Pool jobs by hand')")
        if stage == Stage.failed:  # a failed run is resumed by a plain post whether or not it is terminated
            return then + told + "its pool work had ended already"
        # shown 'terminated', it is no longer found by a plain post but resumed (``_stage``), as the stalled hint warns
        return then + told + (f"its pool work had ended already. Ended so, it no longer counts as {stage}: a post of "
                              "the same request, without \"rerun\", resumes it instead of finding it, and runs what "
                              "its end had not (a cancelled task's pool work, an expired one's wait for confirmation, "
                              "an estimate's listing again): post it again only to run it after all")
    resume = "post the same request again, without \"rerun\" or \"only_new\", to resume it"
    if stage in BEFORE_POOL:  # the pool job is made by a shard group's first submit (activities.pool), in detecting
        earlier = _earlier_work(task_id, stage, status or {}, started or {})
        if earlier:
            return then + (f"it had sent nothing to the pool itself (it was starting or listing the images), but "
                           f"{earlier}: post the same request again, without \"rerun\" or \"only_new\", which ends "
                           "that work too (the run after a terminated one ends what that one was to end) and resumes "
                           "the task from the results already written")
        return then + f"it had sent nothing to the pool (it was starting or listing the images); {resume}"
    if stage in (Stage.merging, Stage.publishing):  # its job was closed once its shard groups ended (_run_task)
        return then + (f"its pool work had ended (its shard groups were done); {resume} from the results its pool "
                       "tasks already wrote")
    if stage == Stage.awaiting_confirmation:
        return then + ("it had sent nothing to the pool (for a task awaiting confirmation, POST "
                       f"/api/tasks/{task_id}/cancel is the better tool: it ends it 'cancelled'); post the same "
                       "request again, without \"rerun\" or \"only_new\", to resume it")
    return then + ("the pool work it started (shard groups, pool tasks, pool job " + job + ") runs on until you post "
                   "the same request again, without \"rerun\" or \"only_new\", which ends that work and resumes the "
                   "task from the results already written; to drop the task instead, end that pool job by hand "
                   "(docs/deploy.md, 'Pool jobs by hand')")


# the steps with which a run ends the pool work of the runs it replaced (orchestrations.task ``_end_terminated_run``)
_ENDING_STEPS = (c.STOP_GROUPS, c.CLOSE_JOB)


def _earlier_work(task_id: str, stage: str, status: dict[str, Any], started: dict[str, Any]) -> str:
    """What a run terminated before its pool work (``stage``: starting, enumerating) may have left of the runs it was
    to end first (its input's ``ends_earlier`` and ``ends_run``), or "" when it had none or had ended them. Known
    ended: the status shows a wait on a later step (``c.WAITING_KEY``, orchestrations.retries ``show_waiting``: the
    listing's). Known not: ``starting`` (no step taken yet), or a wait on one of the ending steps (a busy Batch or
    storage: its step and reason are said). Else it may still have been at it: nothing in the status tells."""
    runs = [str(r) for r in started.get("ends_earlier") or [] if isinstance(r, str)]
    if "ends_run" in started:
        runs.append(str(started["ends_run"]))
    if not runs:
        return ""
    waiting = status.get(c.WAITING_KEY)
    waiting = waiting if isinstance(waiting, dict) else {}
    step = str(waiting.get("step") or "")
    if step and step not in _ENDING_STEPS:
        return ""
    jobs = ", ".join(layout.pool_job_id(task_id, r) for r in dict.fromkeys(runs))
    what = f"the pool work the task's earlier terminated (or failed) run left (pool job {jobs}, and its shard groups)"
    if len(set(runs)) > 1:
        what = (f"the pool work the task's earlier terminated (or failed) runs left (pool jobs {jobs}, and their "
                "shard groups)")
    if stage == Stage.starting:
        return f"it had not yet ended {what}, which may still run"
    if step:
        return (f"it was still ending {what}, waiting on its step {step} ({waiting.get('reason') or 'busy'}), so "
                "that work may still run")
    return (f"it may still have been ending {what} (it does that first, in stage enumerating, before listing), so "
            "that work may still run")


@bp.route(route="tasks/{task_id}/confirm", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def confirm_task(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Say yes to a task waiting in ``awaiting_confirmation`` (above TRAPBATCH_CONFIRM_ABOVE_IMAGES): its shards go
    to the pool. Anything else answers 409 with what the task is doing."""
    task_id = req.route_params["task_id"]
    await authorize_task(req, client, task_id)
    # the stage and the run from one status read: the confirmation is for the run whose wait the caller saw
    info, started = await describe_task_with_input(client, task_id)
    if info["runtime_status"] not in ACTIVE or info["stage"] != Stage.awaiting_confirmation:
        return _json(409, {"error": f"task {task_id} is not awaiting confirmation (stage: {info['stage']})",
                           "hint": "only a task in stage 'awaiting_confirmation' can be confirmed; poll "
                                   f"GET /api/tasks/{task_id}"})
    run = str(started.get("run") or "")
    ended = await _raise_while_running(client, task_id, c.CONFIRM_EVENT, run)
    if ended is not None:
        return _json(409, {"error": f"task {task_id} ended while the confirmation was made (stage: {ended['stage']})",
                           "hint": f"nothing was submitted; GET /api/tasks/{task_id} shows how it ended"})
    replaced_by = await _replaced_since(client, task_id, run)
    if replaced_by is not None:
        logger.info("task %s: confirmation of run %s made as run %s replaced it", task_id, run or "?",
                    replaced_by or "?")
        return _json(409, {"error": f"task {task_id}: the run this confirmation was for (run {run or '?'}) was "
                                    f"replaced by run {replaced_by or '?'} of the task while the confirmation was "
                                    f"made; run {replaced_by or '?'} was not confirmed",
                           "hint": f"GET /api/tasks/{task_id} shows the run now running; once it is in stage "
                                   f"'awaiting_confirmation', POST /api/tasks/{task_id}/confirm again"})
    logger.info("task %s: run %s confirmed", task_id, run or "?")
    return _json(202, {"id": task_id, "confirmed": True, "status_url": f"{_base_url(req)}/api/tasks/{task_id}",
                       "hint": "its shards go to the pool now; the stage becomes 'detecting'"})


async def _raise_while_running(client: df.DurableOrchestrationClient, task_id: str, event: str,
                               run: str) -> dict[str, Any] | None:
    """Raise ``event`` to run ``run`` of the task (the run the status read found: its input's ``run``, "" for one
    without an id); None when raised, or the task's status when it ended since it was read (a confirmation wait that
    timed out, a listing that ended, a terminate): the Durable extension answers a raise to a finished instance 410
    Gone (HttpApiHandler ``HandleRaiseEventRequestAsync``; devhost does the same), which the SDK raises as a bare
    ``Exception`` (DurableOrchestrationClient.raise_event) and the edge answered 500 "internal error". Any other
    failure of the raise, with the task still running, is raised as it was.

    The event goes to the task's instance id, whose current execution may be a later run that replaced ``run`` since
    the read (terminated, then resumed or re-run): so it is raised under ``run``'s own name (core.contracts.run_event),
    for which only ``run`` waits (orchestrations.task ``_confirmed``); the data names the run too, for whoever reads
    the history. Raised to the replacing run, it stays unread there: it confirms or cancels nothing."""
    try:
        await client.raise_event(task_id, c.run_event(event, run), {"run": run} if run else {})
    except Exception:
        after = await describe_task(client, task_id)
        if after["runtime_status"] in ACTIVE:
            raise
        logger.info("task %s: %s of run %s not raised: the task ended meanwhile (stage %s)", task_id, event,
                    run or "?", after["stage"])
        return after
    return None


async def _replaced_since(client: df.DurableOrchestrationClient, task_id: str, run: str) -> str | None:
    """The run that replaced ``run`` as the task's since its status was read (its id; "" for one without), None while
    ``run`` is still the task's run, or when the status cannot be read now (the event was raised: what it did is then
    left to GET /api/tasks/{id}, not answered as a hub error). Read once the event is raised: a replacing run does not
    act on ``run``'s event (``_raise_while_running``), so an answer that the confirmation or cancel was made would be
    false for the run now running."""
    try:
        status = await read_status(client, task_id, show_input=True)
    except TaskHubUnavailable:
        return None
    if _runtime(status) is None:
        return None
    now = str(_task_input(status).get("run") or "")
    return now if now != run else None


def _task_input(status: Any) -> dict[str, Any]:
    raw = getattr(status, "input_", None)
    if isinstance(raw, str):
        raw = json.loads(raw)
    return raw if isinstance(raw, dict) else {}


async def page_labels(client: df.DurableOrchestrationClient, s: Settings, task_id: str,
                      key: str) -> tuple[str, str]:
    """(model, request name) that pages rendered again for generation ``key`` show: the generation's own request,
    falling back to the task's latest (its orchestration input) for a generation enumerated before
    ``layout.request_blob`` was written."""
    request = await asyncio.to_thread(generation_request, clients.store(s), s.container, key)
    if request is None:
        request = _task_input(await read_status(client, task_id, show_input=True)).get("request", {})
    return str(request.get("model", "") or ""), str(request.get("request_name", "") or "")


async def _removal_status(client: df.DurableOrchestrationClient, task_id: str, key: str) -> dict[str, Any] | None:
    """The task's last repeat removal, if it was of the served generation ``key`` (a removal of a generation a re-run
    replaced is not this one's), with ``updated`` and, while it runs, ``stalled`` (``api.repeat_runs``)."""
    status = await read_status(client, repeats_instance_id(task_id), show_input=True)
    runtime = _runtime(status)
    if runtime is None or _task_input(status).get("task_id", task_id) != key:
        return None
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    out: dict[str, Any] = {"runtime_status": runtime, **custom}
    if runtime == "Failed":
        out["stage"], out["error"] = Stage.failed, failure_message(str(status.output or ""))
    repeat_runs.add_liveness(out, "removal", task_id, status)  # updated; stalled while it runs; terminated
    return out


def _served_repeats(s: Settings, task_id: str) -> tuple[str, dict[str, Any] | None]:
    """(the served generation's key, its repeated-detection list or None). Blocking: ``task_repeats`` runs it off the
    event loop (``api.edge`` module docstring)."""
    store = clients.store(s)
    key = served_key(store, s.container, task_id)  # the served generation's (layout.generation_key)
    return key, store.read_json_or_none(s.container, layout.repeats_blob(key))


@bp.route(route="tasks/{task_id}/repeats", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@http_edge
async def task_repeats(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Repeated detections (MegaDetector's RDE): GET lists them, POST removes the chosen ones into a new file. The
    list may be replaced by a search run again (``api.repeat_search``): a removal names the list it chose from."""
    from api import repeat_search

    task_id = req.route_params["task_id"]
    await authorize_task(req, client, task_id)
    await finished_task(client, task_id, "repeated-detection list")
    s = clients.settings()
    key, found = await asyncio.to_thread(_served_repeats, s, task_id)
    if found is None:
        return _json(404, {"error": f"task {task_id} has no repeated-detection list",
                           "hint": "the merge writes it, unless its search failed (GET /api/tasks/<id> says so in "
                                   "repeated_detections.error; a task merged by an older trapbatch has none either): "
                                   f"make one with POST /api/tasks/{task_id}/repeats/search (trapbatch repeats "
                                   f"{task_id} --search)"})
    removal = await _removal_status(client, task_id, key)
    searching = await repeat_search.search_status(client, task_id, key)  # the served generation's
    if removal is not None and removal.get("stage") == Stage.completed:
        page = await asyncio.to_thread(_preview_page, req, s, key, REPEATS_REMOVED)
        removal["previews"] = {**(removal.get("previews") or {}), **page}
    if req.method == "GET":
        return _json(200, {"id": task_id, "locations": found["locations"], "options": found["options"],
                           **repeat_search.list_fields(found), "blob": layout.repeats_blob(key),
                           "removal": removal, "searching": searching})
    body = parse_json_body(req.get_body(), req.headers.get("content-type", ""), REMOVAL_EXAMPLE,
                           "send only the place ids to keep or remove, and the list's id (\"search\")")
    check_repeat_removal(body)  # a malformed choice is a 400 whichever list is current
    repeat_search.ensure_idle(task_id, removal, searching)
    await repeat_runs.refuse_unshown_run(client, task_id, "removal", key)  # one of results replaced since
    search = repeat_search.current_list(body, found, task_id)
    remove = parse_repeat_removal(body, [loc["id"] for loc in found["locations"]])
    model, request_name = await page_labels(client, s, task_id, key)
    if not await start_once(client, c.REPEATS_ORCHESTRATOR, repeats_instance_id(task_id), c.RepeatsInput(
            task_id=key, model=model, request_name=request_name, remove=remove, search=search,
            knobs=s.knobs.to_dict(), prepare=True)):
        await repeat_runs.refuse_unshown_run(client, task_id, "removal", key)  # started a moment ago, or of another
        return _json(409, {"error": f"a repeated-detection removal for task {task_id} is still running",
                           "hint": f"wait until it completed (GET {_base_url(req)}/api/tasks/{task_id}/repeats), "
                                   "then retry"})
    logger.info("task %s: removing %d repeated-detection locations", task_id, len(remove))
    return _json(202, {"id": task_id, "removing": remove, "status_url": f"{_base_url(req)}/api/tasks/{task_id}/repeats",
                       "hint": "the new results are written beside the originals, which are left unchanged"})


def drop_origin(container: str, name: str, etag: str) -> str:
    """The ``origin`` of a task started by one version of a blob (``start_task``)."""
    return f"{container}/{name}@{etag}"


def answered_version(receipt: Any, etag: str) -> bool:
    """Whether a receipt (``<name>.task.json``, ``trapbatch-ready.task.json``) answers the blob version ``etag``: its
    event came again (Event Grid and the blob trigger's queue deliver at least once), and the answer stands."""
    return isinstance(receipt, dict) and bool(etag) and receipt.get("request_etag") == etag


def busy(exc: TrapbatchError) -> bool:
    """Whether ``exc`` says only that a service was busy or did not answer (the 503 class: ``StorageUnavailable``,
    ``TaskHubUnavailable``, ``SourceBusy``, ``InstanceListTooSlow``): the request is not at fault, and the same start
    tried again later usually works."""
    return exc.status_code == 503


@dataclasses.dataclass(frozen=True)
class Retries:
    """Who tries a start again after its trigger failed, how soon, and for how long, as the hint of a busy refusal
    says (``refusal_of``): ``tries`` in all where the platform counts them, else for ``hours`` from the first failure.
    ``who`` says how the platform spaces the tries, so a reader knows whether waiting can outlast an outage."""

    who: str
    tries: int = 0
    hours: int = 0
    instead: str = ""  # a way around the wait, said after it, when waiting may not be enough


# The drop trigger (a blob trigger, Event Grid source): a failed run is run again from the host's blob-trigger queue,
# 5 tries in all (host.json extensions.blobs.poisonBlobThreshold), then the blob goes to webjobs-blobtrigger-poison
# (azure-sdk-for-net Microsoft.Azure.WebJobs.Extensions.Storage.Blobs Listeners/BlobQueueTriggerExecutor.cs; docs
# articles/azure-functions/functions-bindings-storage-blob-trigger.md#poison-blobs; devhost/README.md rows 5, 38).
# The tries are not spaced: the failed message is released with visibility timeout zero and taken again at the
# listener's next poll. host.json extensions.queues.visibilityTimeout does not reach that queue, whose QueuesOptions
# the extension builds from BlobsOptions alone (Listeners/SharedBlobQueueListenerFactory.cs BlobsOptionsToQueuesOptions;
# Storage.Common Shared/Queues/QueueProcessor.cs ReleaseMessageAsync, QueuesOptions.cs VisibilityTimeout default
# TimeSpan.Zero; tests/unit/test_drop_retry_spacing.py), so an outage longer than five tries ends in "every try failed".
# So the trigger itself waits BUSY_TRY_WAIT_S before it fails on purpose: five tries then span five minutes or more
# of an outage, not five polls of the host's queue (a function may run 30 minutes: host.json functionTimeout; the
# listener keeps the message hidden while it runs, QueueListener's visibility renewal).
BUSY_TRY_WAIT_S = 60.0
DROP_TRIGGER_RETRIES = Retries("the drop trigger runs again by itself, a minute after each failure", tries=5)
# The marker's Event Grid trigger: a failed function is answered 500 (Microsoft.Azure.WebJobs.Extensions.EventGrid
# Config/EventGridExtensionConfigProvider.cs ProcessEventsAsync), which Event Grid retries with back-off for up to
# 24 h (articles/event-grid/delivery-and-retry.md: only 400, 401, 403 and 413 are not retried; the subscription's
# default eventTimeToLiveInMinutes 1440 ends it before its 30 attempts; devhost row 17).
EVENT_GRID_RETRIES = Retries(
    "Event Grid delivers the marker's event again, with back-off", hours=24,
    # api.arrivals.MARKER_DELIVERY_DEADLINE_S less MARKER_ANSWER_S (_Delivery.checks, the images' account's and the
    # Key Vault's calls; the last 5 s write the answer; tests/unit/test_refusal_edited pins the figure): an account or
    # vault that always answers, but slower than a delivery's budget, stays busy for the whole 24 h. The marker is
    # deleted first: Event Grid goes on delivering it, and a later delivery that gets through starts its own task
    # where the other's id differs (a POST with TRAPBATCH_CALLER_AUTH=easyauth: the owner is in the id) or it asks
    # "rerun" (start_task: a run of another origin runs again), so the images ran twice
    instead=("Each delivery gives the services 15 s: should the images' account or the Key Vault answer, but more "
             "slowly, it stays busy here; delete this marker, then post the same request to POST /api/tasks (or "
             "drop it into the incoming container), which waits longer."))


def refusal_of(exc: TrapbatchError, etag: str, retried_by: Retries, what: str = "request", previous: Any = None,
               now: datetime | None = None) -> dict[str, Any]:
    """What a refusal file (``<name>.error.json``) holds: the error, its hint, and the version refused (``etag``).

    A busy refusal (``busy``) is written before its trigger fails on purpose so the platform runs it again
    (``retried_by`` says who): its hint says so, since nobody needs to write ``what`` again unless every try
    failed; the try that starts the task deletes the file. ``previous``: the refusal file as it was, whose
    ``busy_tries`` and ``busy_since`` for the same version go on counting. Why: the file outlives the platform's
    last try (the drop trigger's fifth, Event Grid's 24 hours), and a hint that said "nothing to do yet" then said so
    for ever; now the last counted try says every try failed, and a time-bound one says until when to wait."""
    answer: dict[str, Any] = exc.to_dict()
    if busy(exc):
        same = (isinstance(previous, dict) and bool(etag) and previous.get("request_etag") == etag
                and isinstance(previous.get("busy_tries"), int) and _busy_since(previous) is not None)
        tries = int(previous["busy_tries"]) + 1 if same else 1
        since = (str(previous["busy_since"]) if same
                 else (now or datetime.now(timezone.utc)).replace(microsecond=0).isoformat())
        answer["busy_tries"], answer["busy_since"] = tries, since
        again = f"write the {what} again once the service answers: {exc.hint}"
        if retried_by.tries and tries >= retried_by.tries:
            answer["hint"] = (f"every try failed (the platform tries {retried_by.tries} times; {tries} failures "
                              f"counted) and it tries no more: {again}")
        elif retried_by.tries:
            answer["hint"] = (f"nothing to do yet: {retried_by.who} ({tries} of {retried_by.tries} tries failed so "
                              "far), and the try that starts the task deletes this file. If the hint says every try "
                              f"failed, {again}")
        else:
            until = datetime.fromisoformat(since) + timedelta(hours=retried_by.hours)
            answer["hint"] = (f"nothing to do yet: {retried_by.who} until {until.isoformat()} ({tries} tries failed "
                              "so far), and the try that starts the task deletes this file. If it is still here "
                              f"after then, {again}")
        if retried_by.instead:
            answer["hint"] += f" {retried_by.instead}"
    return {**answer, **({"request_etag": etag} if etag else {})}


def _busy_since(previous: dict[str, Any]) -> datetime | None:
    """The ``busy_since`` of a refusal file as it was, when it is a time a day can be added to (the time-bound hint's
    "until"); None otherwise. Why: the file sits where callers write and may have been edited to JSON with anything
    there; parsing it as it came raised on every delivery, before the refusal was written anew
    (``caller_writable_json``'s reason): such a file's count starts again instead."""
    since = previous.get("busy_since")
    if not isinstance(since, str):
        return None
    try:
        parsed = datetime.fromisoformat(since)
        _ = parsed + timedelta(hours=EVENT_GRID_RETRIES.hours)  # what the hint adds must not overflow
    except (ValueError, OverflowError):
        return None
    return parsed


def withdraw_overtaken_refusal(store: BlobStore, container: str, name: str, refusal: str, etag: str) -> None:
    """Delete the refusal just written for version ``etag`` of request ``name`` if a newer version replaced the
    request meanwhile: that version is answered by its own event, and a start of it may already have deleted the
    refusals it found (before this one was written), which left this one beside its answer. A refusal the newer
    version wrote itself names that version and stays. Blocking: call it off the event loop."""
    if not etag or store.etag_or_none(container, name) in (etag, None):
        return
    written = caller_writable_json(store, container, refusal)  # where callers write: any size, maybe not JSON
    if isinstance(written, dict) and written.get("request_etag") == etag:
        store.delete_if_exists(container, refusal)


# The most of a file callers can write that is read (``caller_writable_json``). What trapbatch writes there is far
# smaller: a receipt ~200 bytes, a refusal an error and its hint (~1-2 KB), whose message may quote a request of at
# most MAX_BODY_BYTES (JSON-escaped, up to 6 bytes a byte): 1 MiB holds any of them.
CALLER_WRITABLE_MAX_BYTES = 1024 * 1024


def caller_writable_json(store: BlobStore, container: str, name: str) -> Any:
    """A file trapbatch writes where callers write too (``incoming``, a marker's container): a refusal, for the busy
    count it carries (``refusal_of``), or a receipt, for the version it answered. None when there is none, or when it
    is no longer JSON: it may have been edited or emptied, and a read that raised left the trigger failing on every
    try (the refusal never written anew; a receipt unreadable for good poisoned every later version of the request).
    A receipt read as None costs nothing: ``start_task`` knows a version it started (``origin``). Blocking: call it
    off the event loop.

    None too, unread, when it is larger than anything trapbatch writes there (``CALLER_WRITABLE_MAX_BYTES``): at most
    that much is read (one ranged Get Blob, ``BlobStore.read_head_or_none``). Why: it was read whole, and a file of
    any size (a caller's mistake, or abuse) was held in the Functions host's memory, shared by all it runs, by the
    drop trigger (no deadline) and each Event Grid delivery of a marker. Answered as a malformed file is: the refusal
    or receipt is written anew over it, so the caller reads what to do next and nothing is lost."""
    head = store.read_head_or_none(container, name, CALLER_WRITABLE_MAX_BYTES)
    if head is None:
        return None
    data, size = head
    if size > CALLER_WRITABLE_MAX_BYTES:
        logger.warning("%s/%s has %d bytes, more than trapbatch ever writes there (%d): read as none, written anew",
                       container, name, size, CALLER_WRITABLE_MAX_BYTES)
        return None
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError: as if there were none
        return None


def read_request_blob(store: BlobStore, container: str, name: str) -> tuple[bytes, str] | None:
    """A dropped request's (or marker's) bytes and ETag, of one version. None: deleted, or replaced since (as the
    storage extension ignores a message whose blob is gone; the new version comes with its own event). A blob
    larger than any request is refused unread (``RequestTooLarge``). Blocking: call it off the event loop."""
    version = store.read_version_or_none(container, name, MAX_BODY_BYTES)
    if version is None:
        return None
    data, size, etag = version
    if data is None:
        raise RequestTooLarge(f"{name} has {size} bytes; a task request needs far less than {MAX_BODY_BYTES}",
                              "write only the fields of a task request (an image list is a blob of its own, named by "
                              "'image_list')")
    return data, etag


@bp.blob_trigger(arg_name="blob", path=layout.INCOMING_CONTAINER + "/{name}", connection="AzureWebJobsStorage",
                 source=func.BlobSource(drop_trigger_source(os.environ)))
@bp.durable_client_input(client_name="client")
@failures_without_secrets
async def task_dropped(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    """A ``*.json`` task request dropped into ``incoming`` starts the task; a bad one gets ``<name>.error.json``.

    Once per blob version: the request is read again with its ETag (the trigger's stream says nothing of which
    version it holds), recorded in the receipt and as the task's ``origin``; an event of a version already answered
    changes nothing (``start_task``). Why: with the Event Grid source the function runs once per delivered event,
    which Event Grid sends at least once, and again after a failure, with no receipts (module docstring of
    tests/integration/test_drop_redelivery.py cites the extension's code).

    Storage SDK errors are not answered here: they propagate, so the platform retries the trigger (a transient
    failure must not become a permanent refusal written beside the request). A refusal only because a service was
    busy (``busy``: 503, e.g. ``SourceBusy``) is written, saying the platform tries again (``DROP_TRIGGER_RETRIES``
    cites how), and then raised for that retry; the try that starts the task deletes it. A refusal because DNS said
    a host does not exist (the images' account, its vault, trapbatch's own account) is written only once DNS, asked
    again for up to ``adapters.storage_errors.DROP_HOST_GONE_AFTER_S``, still says so; busy when it resolves again
    (``adapters.storage_errors.after_dns_asked_again``)."""
    full_name = blob.name or ""
    container, _, name = full_name.partition("/")
    container = container or layout.INCOMING_CONTAINER
    if not layout.is_drop_request(name):
        return
    marker = layout.marker_handoff_container(name)
    try:
        s = clients.settings()
    except ConfigError as wrong:  # the app's own setting: said beside the request, not tried again (api/drop_config)
        from adapters.blobs import blob_store
        from api.drop_config import answer

        if marker is not None or not await asyncio.to_thread(answer, wrong, container, name, os.environ, blob_store):
            raise
        logger.error("dropped request %s not started: %s (answered in %s)", name, wrong.message,
                     layout.drop_error_blob(name))
        return
    if marker is not None:  # a marker api.arrivals handed over: its start, answered beside the marker
        from api.arrivals import start_from_marker  # it imports this module

        await start_from_marker(client, marker, None, s)
        return
    store = clients.store(s)
    etag = ""
    try:
        version = await asyncio.to_thread(read_request_blob, store, container, name)
        if version is None:
            logger.info("dropped request %s is gone or was replaced: its newer version has an event of its own", name)
            return
        raw, etag = version
        receipt_name = layout.drop_receipt_blob(name)
        if answered_version(await asyncio.to_thread(caller_writable_json, store, container, receipt_name), etag):
            logger.info("dropped request %s: this version was answered already (a redelivered event)", name)
            return
        body = parse_json_body(raw)
        started, task_id = await start_task(client, body, s, drop=name, origin=drop_origin(container, name, etag))
    except TrapbatchError as refused:
        # a host DNS said is missing is asked about again first: a refusal written here stays (after_dns_asked_again)
        exc = await asyncio.to_thread(after_dns_asked_again, refused)
        previous = (await asyncio.to_thread(caller_writable_json, store, container, layout.drop_error_blob(name))
                    if busy(exc) else None)  # its count of busy tries goes on (refusal_of)
        await asyncio.to_thread(store.write_json, container, layout.drop_error_blob(name),
                                refusal_of(exc, etag, DROP_TRIGGER_RETRIES, previous=previous))
        logger.warning("dropped request %s %s: %s", name,
                       "not started yet, a service was busy (the trigger runs again)" if busy(exc) else "rejected",
                       exc.message)
        await asyncio.to_thread(withdraw_overtaken_refusal, store, container, name, layout.drop_error_blob(name), etag)
        if busy(exc):
            await asyncio.sleep(BUSY_TRY_WAIT_S)  # the platform's next try comes at once (DROP_TRIGGER_RETRIES)
            raise exc  # the platform runs the trigger again
        return
    receipt: dict[str, Any] = {"id": task_id, "started": started, "status_path": f"/api/tasks/{task_id}",
                               "request_etag": etag}
    if not started:  # its task was started by another request: joined, its done file comes from that request's run
        receipt.update(await _joined_drop_answer(client, store, container, name, task_id, s.container))
    await asyncio.to_thread(store.write_json, container, receipt_name, receipt)
    # an earlier version's refusal, now answered by this one: left there, it said the corrected request was refused
    await asyncio.to_thread(store.delete_if_exists, container, layout.drop_error_blob(name))


# What the task's run adds to its final status after it wrote the done file beside its drop (orchestrations.task
# ``_tell``: the done file first, then the notification and the event, then these): its output and last custom status
# hold them, the run's done file does not. Why left out of a joined drop's done file: ``drop_answer`` speaks of the
# other drop's file ("that file will not come", when its write failed), which this file is not, and the file is to be
# the one the run would have written (``joined_drops`` likewise speaks of the joined drops' files as a whole).
TOLD_AFTER_THE_DONE_FILE = ("drop_answer", "joined_drops", "notification", "task_event")


async def _joined_drop_answer(client: df.DurableOrchestrationClient, store: BlobStore, container: str, name: str,
                              task_id: str, state_container: str) -> dict[str, str]:
    """A dropped request whose task was started by another request (the same request dropped twice, posted over HTTP
    first, or dropped again after it ended): where the word of its end is, added to ``<name>.task.json``.

    Why: the task's run writes ``<drop>.done.json`` beside the one request that started it (its input's ``drop``),
    so a request that found its task ended waited for a ``<name>.done.json`` that never came, and one that found it
    running was told to watch another request's done file, or that none would come (started over HTTP). A task that
    has ended (a finished stage, or ``cancelled``, ``expired``, ``estimated``: what a plain post does not start
    again) gets its final status beside this request now, as its run would have written it (``{"id", **status}``:
    activities.notify ``write_drop_answer``). A running one's run gets this request in its registry of joined drops
    and writes its done file too when it ends; where the run has ended by then (its ended marker, read after the
    registration: adapters.joined_drops ``join``), the file is written here. ``state_container``: the task-state
    container (``Settings.container``), which holds the registry.

    A run started by an earlier release (its input has no ``answers_joined``) writes only beside its own drop: this
    request is told that drop's done file, or that none will come (started over HTTP), as before.
    """
    try:
        status = await read_status(client, task_id, show_input=True)
    except TaskHubUnavailable:  # the receipt goes on without it: raised, the trigger's tries could all fail on it
        logger.warning("dropped request %s joined task %s, whose status could not be read now", name, task_id)
        return {"hint": f"read the end of task {task_id} with GET /api/tasks/{task_id}"}
    runtime = _runtime(status)
    if runtime in ACTIVE:
        task_input = _task_input(status)
        drop = task_input.get("drop")
        if drop == name:  # an earlier version of this request started it (another ETag, the same task id)
            done = f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob(name, 'done')}"
            return {"done_file": done, "hint": f"task {task_id} was already running, started by an earlier version "
                    f"of this request: its end is written beside it, to {done}"}
        run = task_input.get("run")
        if task_input.get("answers_joined") and isinstance(run, str) and run:
            return await _join_running(store, container, name, task_id, state_container, run, status,
                                       str(drop or ""))
        if drop:
            done = f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob(str(drop), 'done')}"
            answer = {"done_file": done, "hint": f"task {task_id} was already running, started by the dropped "
                      f"request {drop}: its end is written to {done}, not beside this request"}
            answer.update(_awaiting_estimate(status, task_id, str(drop), answer["hint"]))
            return answer
        return {"hint": f"task {task_id} was already running, started over HTTP: no done file will come for it; read "
                        f"its end with GET /api/tasks/{task_id}"}
    output = getattr(status, "output", None)
    final = output if isinstance(output, dict) and output.get("stage") else getattr(status, "custom_status", None)
    if not isinstance(final, dict) or not final.get("stage"):
        return {"hint": f"read the end of task {task_id} with GET /api/tasks/{task_id}"}
    final = {k: v for k, v in final.items() if k != "task_id" and k not in TOLD_AFTER_THE_DONE_FILE}
    done_name = layout.drop_answer_blob(name, "done")
    await asyncio.to_thread(store.write_json, container, done_name, {"id": task_id, **final})
    return {"done_file": f"{container}/{done_name}",
            "hint": f"task {task_id} had ended already: its final status is in {container}/{done_name}"}


async def _join_running(store: BlobStore, container: str, name: str, task_id: str, state_container: str, run: str,
                        status: Any, drop: str) -> dict[str, str]:
    """Register ``name`` as joining run ``run`` of the running task, then read the run's ended marker
    (adapters.joined_drops ``join``: that order, and the run's own, leave no joined drop unanswered): the run's end
    writes this request's done file, or, where it has ended meanwhile, it was written here now. ``drop``: the dropped
    request that started the task ("" for an HTTP post)."""
    done = f"{container}/{layout.drop_answer_blob(name, 'done')}"
    ended = await asyncio.to_thread(joined_drops.join, store, state_container, task_id, run, name)
    if ended is not None:
        return {"done_file": done, "hint": f"task {task_id} had ended already: its final status is in {done}"}
    by = f"the dropped request {drop}" if drop else "an HTTP post"
    answer = {"done_file": done, "hint": f"task {task_id} was already running, started by {by}: its end is written "
                                         f"beside this request too, to {done}, when it ends (a run terminated "
                                         f"through POST /api/tasks/{task_id}/terminate has it say so, and the run "
                                         f"that resumes it, when the same request is posted again, writes it again "
                                         f"at its end; one ended by the Durable management API writes none: read "
                                         f"the end with GET /api/tasks/{task_id})"}
    if drop:
        answer.update(_awaiting_estimate(status, task_id, drop, answer["hint"]))
    else:
        custom = getattr(status, "custom_status", None)
        if isinstance(custom, dict) and custom.get("stage") == Stage.awaiting_confirmation:
            answer["hint"] += (f"; it waits for confirmation: read its estimate with GET /api/tasks/{task_id}, "
                               f"confirm it with POST /api/tasks/{task_id}/confirm (or cancel it)")
    return answer


def _awaiting_estimate(status: Any, task_id: str, drop: str, hint: str) -> dict[str, str]:
    """For a task waiting for confirmation that the dropped request ``drop`` started: its estimate file (written
    beside that drop, activities.notify, not beside the request joining it), and ``hint`` saying so; {} otherwise."""
    custom = getattr(status, "custom_status", None)
    if not (isinstance(custom, dict) and custom.get("stage") == Stage.awaiting_confirmation):
        return {}
    estimate = f"{layout.INCOMING_CONTAINER}/{layout.drop_answer_blob(drop, 'estimate')}"
    return {"estimate_file": estimate, "hint": hint + (f"; it waits for confirmation: its estimate is in {estimate}, "
                                                       f"confirm it with POST /api/tasks/{task_id}/confirm (or cancel "
                                                       "it)")}
