"""All configuration, read from environment variables in one place.

Why: the Functions app, devhost, the local pool and ``infra/`` must agree on variable names; this module is the list.
``Settings.from_env`` is pure (pass any mapping) so tests use dicts. Orchestrators never read the environment: the
starter snapshots the tuning knobs they need (``OrchestrationKnobs``) into the orchestration input, which keeps replay
deterministic. The settings that shape a task's outputs (``DecidedSettings``: thresholds, merge views, export options,
the pool tasks' time limit) are decided when a task's run starts and read from the task's state after that
(``activities.decided``), so a change reaches the tasks started after it. Only tuning knobs have defaults; there is no
default for anything secret. The storage connection string is the only secret-bearing value and it is never copied
into orchestration inputs, statuses or logs.

Variables (names shared with infra/main.bicep app settings):
    AzureWebJobsStorage            storage connection string (``UseDevelopmentStorage=true`` locally) -- or, in Azure,
    AzureWebJobsStorage__accountName / __blobServiceUri   identity-based connection (managed identity, no key)
    TRAPBATCH_TASK_HUB             the Durable task hub's name, read by host.json (``%TRAPBATCH_TASK_HUB%``); here
                                   only to know its containers (own_container_reason); infra/ sets ``trapbatch``
                                   (devhost: ``--hub``, default from it)
    TRAPBATCH_CONTAINER            container for task state and results (default ``trapbatch``)
    TRAPBATCH_WEB_CONTAINER        static-website container for previews (default ``$web``)
    TRAPBATCH_PUBLIC_WEB_URL       the static website's public endpoint (infra/ sets it); previews' ``public_url``
    TRAPBATCH_DROP_TRIGGER_SOURCE  how dropped requests are noticed: ``EventGrid`` (default; the only blob trigger
                                   Flex Consumption supports) or ``LogsAndContainerScan`` (``func host start`` with
                                   Azurite, which has no Event Grid); read when function_app.py is indexed
    TRAPBATCH_POOL                 ``local`` or ``azure_batch`` (default ``local``); ``simulated`` is for the control-plane
                                   benchmark only (bench/control_plane.py): no detector, synthetic results
    TRAPBATCH_SIMULATED_FAILURE_RATE  ``simulated`` pool only: share of images (0-1) failing per attempt (default 0)
    TRAPBATCH_MODEL                default detector: a published version (MDV5A, MDV5B, MDV1000-REDWOOD,
                                   MDV1000-SPRUCE), blob://<container>/<name>, or a checkpoint file on the nodes
    TRAPBATCH_MODELS_CONTAINER     container (in trapbatch's account) whose checkpoints requests may name as
                                   blob://<container>/<name>; requests may otherwise name only published models
    TRAPBATCH_IMAGES_PER_SHARD     default shard size (default 10000: see core.requests; at most 100000, the most a
                                   request's ``images_per_shard`` may ask for)
    TRAPBATCH_MAX_ATTEMPTS         attempts per shard including the first (default 3)
    TRAPBATCH_MAX_FAILED_FRACTION  share of images (0 to 1) that may fail for a task to end ``completed`` rather than
                                   ``completed_with_errors`` (default 0.05; a request's ``max_failed_fraction`` wins)
    TRAPBATCH_POLL_MIN_S / _MAX_S  durable-timer back-off between pool polls (default 30 / 300 s; positive, the most
                                   no less than the least; _MAX_S defaults to _MIN_S where that is above 300)
    TRAPBATCH_MAX_IN_FLIGHT        pool tasks in flight at once per task, all shard groups together (default 100):
                                   each group gets a fixed share (``core.shards.in_flight_shares``), and a task never
                                   has more groups than this (groups grow past TRAPBATCH_SHARDS_PER_GROUP if needed)
    TRAPBATCH_HISTORY_EVENTS       a shard group goes on as new (``continue_as_new``) before its generation's Durable
                                   history passes this many events (default 1000, minimum 200, at most 100000: a
                                   generation schedules about a quarter of its events as actions, and the Durable
                                   extension drops those past 100,000, devhost row 47); replay cost follows it;
                                   a generation holds at least one poll round whatever the value (a round's worst case
                                   is ~32 events per TRAPBATCH_BUSY_RETRY_ATTEMPTS: 252 at 8), so a small value with
                                   many busy retries only continues as new after every round
    TRAPBATCH_SHARDS_PER_GROUP     shards driven by one sub-orchestration (default 200)
    TRAPBATCH_MERGE_IMAGES_PER_PART  images one fan-in activity merges (default 200000, whole shards, at least one:
                                   ~40 s at ~190 us/image, far inside functionTimeout; see orchestrations.fanin;
                                   at most core.fanin.SAFE_MAX_PARTS parts whatever it is: the task's execution
                                   schedules ~6 calls a part, and the extension drops every call past
                                   maxOrchestrationActions, 100,000, so the task never ends: devhost row 47);
                                   a repeat search run again (orchestrations.repeat_search) reads parts of this size
    TRAPBATCH_REPEAT_SEARCH_DETECTIONS_PER_GROUP  eligible detections one repeat-search activity takes (default
                                   400000: ~20-60 s; whole folders, so a larger folder is a group of its own), at the
                                   merge and in a search run again
    TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS  the most eligible detections one camera folder may hold and still be
                                   searched for repeated detections (default 800000, at most 3000000); a folder with
                                   more is skipped and named in the repeats list with what to do (MegaDetector's
                                   maxImagesPerFolder, by eligible detections: what the search's cost grows with).
                                   Why: one activity searches a folder, in time and memory growing with the square of
                                   its detections (one folder: 50,000 images 1.1 s, 200,000 6.8 s, 800,000 62 s and
                                   +590 MB, 2,000,000 303 s and +1.17 GB; about 4,900,000 pass the 30-minute
                                   functionTimeout and the 4 GB instance's memory that up to 8 activities share).
                                   The merge's cap, and POST .../repeats/search's ``max_folder_detections`` when
                                   left out
    TRAPBATCH_REUSE_IMAGES_PER_CALL  images one call of an ``only_new`` re-run's reuse step takes (default 100000,
                                   whole shards, 1 to 500 of them: orchestrations.task.reuse_shards_per_call)
    TRAPBATCH_BUSY_RETRY_ATTEMPTS  calls at most of an orchestration step whose failure says storage or Batch is busy
                                   or out of reach (default 8, at least 3, at most 20: waits of 15 s doubling to
                                   5 min between them, ~18 min in all at 8; at 3, the steps' own policy of 3
                                   calls, busy failures are retried as any other: 2 s, then 4 s); other failures
                                   are tried 3 times (orchestrations.retries); read when a task or an after-task
                                   action starts. A shard group's pool steps that run out of them wait on, as a pool
                                   outage, for 6 hours (or TRAPBATCH_MAX_TASK_SECONDS) before failing the task
                                   (orchestrations.shards)
    TRAPBATCH_MAX_TASK_SECONDS     a pool task running longer is terminated and resubmitted (default 21600, at most
                                   15552000: Batch ends a task 180 days after it was added)
    TRAPBATCH_DETECTION_THRESHOLD  lowest confidence written to results, 0 to 1 (default 0.005, MegaDetector's)
    TRAPBATCH_PREVIEW_THRESHOLD    threshold of previews, the CSV and the exports when a request sets no
                                   ``preview_threshold``; unset: the model's typical threshold as MegaDetector
                                   publishes it (``core.mdformat.typical_threshold``: 0.2 for MDv5, 0.3 for redwood);
                                   a confidence from 0.005 to 1, as a request's (nothing below 0.005 is in the results)
    TRAPBATCH_EXPORT_ATTRIBUTION   ``attribution`` column of Zooniverse manifests (default empty)
    TRAPBATCH_EXPORT_LICENSE       the images' licence: ``license`` column of Zooniverse manifests and the Camtrap DP
                                   package's media licence, and its data licence too unless the next names another
                                   (Camtrap DP wants both once either is given); an SPDX identifier (``CC-BY-4.0``,
                                   ``CC0-1.0``: the Data Package schema's ``^[-a-zA-Z0-9._]+$``; ``CC BY 4.0`` is
                                   written ``CC-BY-4.0``) or the licence's URL; any other value: the package claims
                                   none, said in the log (default empty: no licence claimed)
    TRAPBATCH_EXPORT_DATA_LICENSE  the Camtrap DP package's data licence (its tables: the detections), where it is
                                   not the images' (Camtrap DP's example: CC0-1.0 data, CC BY media); the same forms;
                                   without TRAPBATCH_EXPORT_LICENSE no licence is claimed (default empty: the
                                   images' licence)
    TRAPBATCH_ZOONIVERSE_BATCH_SIZE   largest Zooniverse manifest batch (default 10000)
    TRAPBATCH_ZOONIVERSE_MAX_FRAMES   images in one Zooniverse subject of a capture or visit at most (default 20, at
                                   least 1, at most 1000: the combine holds one subject at a time): a longer
                                   capture is several subjects of this many in rank order, the hidden
                                   ``#capture_part`` saying ``2 of 3`` (core.captures.subjects), so no manifest
                                   carries hundreds of image columns; a request's ``zooniverse_visit_frames`` above
                                   it is taken as it
    TRAPBATCH_EVENT_INTERVAL_S     a camera's images more than this many seconds apart are two events in the Camtrap
                                   DP export's event-level observations (default 60, MegaDetector's sequence gap;
                                   0 to 86400, as a request's ``event_interval_s``; core.camtrap_events)
    TRAPBATCH_LINK_DAYS            how long the read-only links of ``GET /api/tasks/{id}/results`` work (default 7,
                                   at most 7: the most a user delegation SAS allows; above 0, fractions of a day are
                                   fine)
    TRAPBATCH_KEEP_REPLACED_DAYS   days a task's replaced generation (the results, exports, zips and working state of
                                   the run a re-run replaced) is kept after the promotion that replaced it, then
                                   deleted by a sweep the promotion started (core.replaced; default 30); ``0`` keeps
                                   them for ever, as before; otherwise at least 8 (every link handed out for them,
                                   7 days, and a step of theirs still running, ends by then): 1 to 7 are refused.
                                   Read at each promotion: a sweep already waiting keeps its time (a change, 0
                                   too, applies to later promotions; deleting the task ends the waiting sweeps)
    TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES  when a task's linked files (results, CSVs, exports) together exceed this many
                                   bytes (default 52428800, 50 MiB), ``GET /api/tasks/{id}/results`` also offers one
                                   zip of them, built on first request (orchestrations/results_zip.py)
    TRAPBATCH_PREVIEWS_EXPIRE_DAY_S  tests only: the seconds in one of a request's ``previews_expire_days`` (default
                                   86400); lets a test see an expiry happen within seconds
    TRAPBATCH_MARKER_HOST_GONE_AFTER_S  tests only: how long Event Grid's deliveries of a marker's event must keep
                                   finding a host missing from DNS before the marker is refused (default 120, the
                                   platform's blip, ``gpu_batch.storage_refs.HOST_GONE_AFTER_S``; positive); lets a
                                   test see the final refusal on a devhost with a scaled delivery schedule
    TRAPBATCH_IMAGE_LIST_MAX_BYTES the largest image list (``image_list``) a request may name (default 268435456,
                                   256 MiB: about three million CSV rows); the edge reads it whole to hash and check it
    TRAPBATCH_MERGE_VIEWS          ``auto`` (default), ``on`` or ``off``: whether shard manifests ask the workers for
                                   the merge's view of their results (``gpu_batch.formats.mergeview``: the merge and the
                                   exports compose its bytes instead of formatting every entry, a third of the control
                                   plane's CPU per image). A worker spends ~0.25 s of a core per 10,000 images on it:
                                   the resident worker after answering (while the GPU runs the next shard), the CLI
                                   worker before it exits (the GPU waits). ``auto``: on, except on Azure Batch with the
                                   CLI worker (TRAPBATCH_WORKER_RESIDENT off), where GPU time costs more than the
                                   Functions CPU it saves
    TRAPBATCH_EXPORT_IMAGE_SIZES   ``true`` (default) or ``false``: read the header of each image whose entry has no
                                   ``width``/``height`` for COCO's pixel boxes (the worker writes them; older results
                                   lack them); ``false`` keeps normalized boxes for those
    TRAPBATCH_LOCAL_CONCURRENCY    local pool: workers at once (default: GPUs, or 1); each gets cores // this many
                                   OpenMP threads unless OMP_NUM_THREADS is set (gpu_batch.pool.local: Cores). On a
                                   machine with several GPUs each worker is given the least busy one as its
                                   CUDA_VISIBLE_DEVICES, unless that is set already (then all see what it names). With
                                   TRAPBATCH_WORKER_RESIDENT at most one per resident server (one per GPU, else one),
                                   said in the log (gpu_batch.pool.local: Resident workers)
    TRAPBATCH_DEVICE               local pool: auto | cpu | cuda (default auto); given to the workers, whose
                                   ``--device`` defaults to it
    TRAPBATCH_MODEL_CACHE          local pool: where its workers cache model files (unset: ``~/.cache/trapbatch/models``
                                   of the user running them, gpu_batch.worker.caches); not handed to Azure Batch,
                                   whose workers keep them in the node's shared folder,
                                   ``$AZ_BATCH_NODE_SHARED_DIR/trapbatch/models``, for the node's later shards
    TRAPBATCH_WORKER_FAULTS        tests only: JSON {"<shard>/<attempt>": "crash_after:2", ...}; the local pool
                                   hands each worker its fault as TRAPBATCH_WORKER_FAULT (gpu_batch.worker.faults)
    TRAPBATCH_WORKER_TUNING        GPU worker options added to every shard's command (Batch tasks and the local pool):
                                   ``--stage-threads N``, ``--cpu-decode-share F|auto``, ``--batch-size N``,
                                   ``--workers N``, ``--hw-decode auto|on|off``, ``--stream-priority normal|high``,
                                   ``--compile``, ``--cudnn-benchmark`` /
                                   ``--no-cudnn-benchmark``, space-separated; checked at start (core.worker_tuning);
                                   default none (bench/RESULTS.md says what each did on which GPU)
    TRAPBATCH_WORKER_RESIDENT      ``1``: pool tasks run ``gpu_batch.worker.client``, which hands each shard to a
                                   node-resident worker that keeps torch and the model loaded (start-up paid once per
                                   node); default off until it has run on Batch (``1``/``true``/``yes``/``on``: on;
                                   ``0``/``false``/``no``/``off``: off; other words are refused, as for every on/off
                                   setting).
                                   Read here only and handed to the pools (``resident=``), which build the task
                                   command with it (``gpu_batch.pool.base.worker_module``). On Azure Batch the server
                                   runs in the pool's start task, outside the tasks' ``--rm`` containers, so it
                                   outlives each task (infra/app/batch.bicep, ``residentWorker``). The
                                   client and server read TRAPBATCH_RESIDENT_SOCKET (socket path; default in the
                                   node-shared folder; its folder is made 0700, so not /tmp itself),
                                   TRAPBATCH_RESIDENT_IDLE_S (server exits after this long
                                   without a shard, default 600), TRAPBATCH_RESIDENT_START_S (how long a client
                                   waits for a server it started, default 300) and TRAPBATCH_RESIDENT_COMPILE (a
                                   server started without ``serve --compile`` compiles every shard's network when
                                   on; Bicep ``residentCompile`` passes ``--compile``); see
                                   gpu_batch.worker.resident_protocol
    TRAPBATCH_KEY_VAULT_URL        Key Vault holding source-account credentials that requests name by secret name
                                   (the GPU nodes read it too)
    TRAPBATCH_APP_KEY_VAULT_URL    Key Vault holding the app's own secrets (TRAPBATCH_NOTIFY_SECRET's value), which
                                   the GPU nodes cannot read (infra/ sets it; docs/deploy.md). Default unset: those
                                   are read from TRAPBATCH_KEY_VAULT_URL's vault (or the local secrets file), as
                                   before the second vault existed
    TRAPBATCH_SOURCE_ACCOUNTS      storage accounts requests may name as ``source_account_url`` (comma-separated blob
                                   endpoints); default none: only the app's own account. The app sends its identity's
                                   token, or a named secret, to the account a request names, so this is a door.
    TRAPBATCH_LOCAL_SECRETS_FILE   local runs and tests only, instead of Key Vault: a JSON file {name: value}
    TRAPBATCH_CALLER_AUTH          who a request comes from (api/callers.py): ``none`` (default: NO caller identity,
                                   every function-key holder is an operator who sees, cancels and starts every task) or
                                   ``easyauth`` (App Service Authentication's X-MS-CLIENT-PRINCIPAL headers, else 401)
    TRAPBATCH_OPERATOR_ROLE        the app role (``roles`` claim) that makes a caller an operator (default
                                   ``trapbatch.operator``): sees every task, exempt from the limits below
    TRAPBATCH_WORKER_IMAGES_PER_S  estimates (``"dry_run": true``, core/estimate.py): one worker's images per second
                                   (default 244, one H100 in bench/RESULTS.md; measure your node size and set it;
                                   positive)
    TRAPBATCH_POOL_NODES           estimates: GPU nodes the pool runs at once, one worker each (default 1)
    TRAPBATCH_NODE_PRICE_PER_HOUR  one node's price per hour in USD, for estimates and for the ``cost`` block of a
                                   finished task (core/cost.py); set it for Spot, low-priority or negotiated prices
                                   (0 or more).
                                   Default 0: the list price of TRAPBATCH_POOL_VM_SIZE from core/cost.py's table, and
                                   without a known size no price (the cost block still gives node time and rate)
    TRAPBATCH_POOL_VM_SIZE         ``azure_batch`` pool only: the pool's VM size (infra/ sets it from ``gpuVmSize``),
                                   whose list price core/cost.py knows; ignored for the local and simulated pools,
                                   which have no VM size
    TRAPBATCH_CONFIRM_ABOVE_IMAGES a task with more images waits in stage ``awaiting_confirmation`` (with its estimate)
                                   until POST /api/tasks/{id}/confirm (default 0: never waits)
    TRAPBATCH_CONFIRM_TIMEOUT_S    how long it waits before it ends ``expired`` (default and most 518400, six days:
                                   the wait is one durable timer, and Python's are limited to six days)
    TRAPBATCH_NOTIFY_HOSTS         hosts a request's ``notify_url`` may name (comma-separated, ``host:port`` for a
                                   port); default none: no notification is sent (core/notify.py)
    TRAPBATCH_NOTIFY_SECRET        name of the Key Vault secret (in TRAPBATCH_APP_KEY_VAULT_URL's vault when set;
                                   locally: of the local secrets file) whose value signs notifications (HMAC-SHA256);
                                   without it none is sent
    TRAPBATCH_NOTIFY_URL_SECRET_PREFIX  what the secret a request names as ``notify_url_secret`` must start with
                                   (default ``notify-url-``; empty is the default): a request cannot name other
                                   secrets of the store (core.notify.URL_SECRET_PREFIX says why)
    TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT  an Event Grid custom topic's endpoint (``https://<topic>.<region>-1.eventgrid.
                                   azure.net/api/events``; infra/ sets it): every task's end is published there as a
                                   CloudEvents event (core/task_events.py) with the app's managed identity (role
                                   EventGrid Data Sender; no key). Unset (default): no event is published
    TRAPBATCH_CALLER_MAX_IMAGES_PER_TASK / _MAX_ACTIVE_TASKS / _MIN_IMAGES_PER_SHARD   per-caller limits with
                                   ``easyauth`` (0, the default: unlimited); see api/callers.py
    TRAPBATCH_BATCH_ACCOUNT_URL, TRAPBATCH_BATCH_POOL_ID, TRAPBATCH_WORKER_IMAGE,
    TRAPBATCH_WORKER_IDENTITY (client id of the nodes' managed identity), TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID (its
    ARM id: Batch uploads each task's stdout/stderr with it), TRAPBATCH_STORAGE_ACCOUNT_URL   Azure Batch
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from core.errors import ConfigError
from core.estimate import DEFAULT_POOL_NODES, DEFAULT_WORKER_IMAGES_PER_S
from core.fanin import SAFE_MAX_PARTS
from core.expiry import MAX_TIMER_STEP
from core.worker_tuning import parse_worker_tuning
from core.mdformat import typical_threshold
from core.notify import url_secret_prefix
from core.repeats import DEFAULT_MAX_FOLDER_DETECTIONS, MAX_FOLDER_DETECTIONS
from core.requests import (DEFAULT_IMAGES_PER_SHARD, MAX_EVENT_INTERVAL_S, MAX_IMAGES_PER_SHARD,
                           MIN_PREVIEW_THRESHOLD, normalize_account_url)
from core.task_events import endpoint_problem
from core.shards import MAX_SHARDS, REUSE_IMAGES_PER_CALL
from gpu_batch.layout import DEFAULT_STATE_CONTAINER, INCOMING_CONTAINER, STATIC_WEBSITE_CONTAINER
from gpu_batch.manifest import DEFAULT_DETECTION_THRESHOLD, DEVICES

CALLER_AUTH_MODES = ("none", "easyauth")
# gpu_batch.storage_refs.HOST_GONE_AFTER_S, which core may not import (tests/unit/test_layering); test_settings pins it
HOST_GONE_AFTER_S = 120.0
# A shard group's generation must hold at least a few poll rounds. Not one worst round above 6 busy attempts (252
# events at the default 8): such a group goes on as new after every round, which bounds its history all the same
# (orchestrations.shards.round_events says why that is no fault).
MIN_HISTORY_EVENTS = 200
# ... and at most this many: a generation schedules about a quarter of its events as actions (each awaited task adds
# four), and the Durable extension drops an execution's actions past maxOrchestrationActions, 100,000 (devhost row 47);
# at this value a generation schedules ~25,000 at most (orchestrations.actions.shard_generation_actions). Before it, any
# value was taken, and one past ~400,000 made a generation whose later actions the extension dropped: it never ended.
MAX_HISTORY_EVENTS = 100_000
# Actions one execution of an orchestration may schedule before its next step fails it as ActionBudgetSpent
# (orchestrations.retries.ActionLedger): the extension's default maxOrchestrationActions, 100,000, less room for the
# failure path (closing the pool job, telling), which the extension would not let run past its limit
# (orchestrations.actions bounds that path; tests/orchestrations/test_action_bounds.py pins the sum under 100,000)
ACTION_BUDGET = 90_000
# TRAPBATCH_BUSY_RETRY_ATTEMPTS: 8 calls wait ~18 minutes of throttling out (orchestrations.retries); 20 about 83
DEFAULT_BUSY_RETRY_ATTEMPTS = 8
MAX_BUSY_RETRY_ATTEMPTS = 20
# TRAPBATCH_MAX_TASK_SECONDS: a shard's wall-clock limit, sent as Batch's maxWallClockTime; Batch ends a task 180 days
# after it was added whatever its limit ("The maximum lifetime of a Task from addition to completion is 180 days",
# learn.microsoft.com/rest/api/batchservice/tasks/create-task), so a larger value promises what Batch never keeps
# (and a huge one overflowed timedelta when the task was sent).
MAX_TASK_SECONDS_LIMIT = 180 * 86400


POOL_KINDS = ("local", "azure_batch", "simulated")
CONFIRM_TIMEOUT_MAX_S = int(MAX_TIMER_STEP.total_seconds())  # six days: see _confirm_timeout_s
WHERE = ("set it in the environment (devhost, make demo), in local.settings.json Values (func host start), or in "
         "the Function App settings (infra/main.bicep)")


ZOONIVERSE_MAX_FRAMES_LIMIT = 1000  # a subject is held whole while written, and each frame is a manifest column


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer", f"{WHERE}; e.g. {name}={default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}", WHERE)
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is above the maximum {maximum}", WHERE)
    return value


def _confirm_timeout_s(env: Mapping[str, str]) -> int:
    """Why at most six days: the confirmation wait is one durable timer raced against the confirm and cancel events.
    For Python apps "durable timers are limited to six days" (learn.microsoft.com, durable-functions-timers); newer
    extensions split a longer one into a ``LongTimerTask`` (the host sends ``maximumShortTimerDuration`` 6 days), and
    that task's ``cancel()`` does not cancel the timer it sent (azure-functions-durable-python #573, SDK 1.7
    ``models/Task.py``), so a task confirmed in time would stay Running until the week was over."""
    name = "TRAPBATCH_CONFIRM_TIMEOUT_S"
    raw = env.get(name, "").strip()
    if raw.isdigit() and int(raw) > CONFIRM_TIMEOUT_MAX_S:
        raise ConfigError(f"{name}={raw} is longer than six days ({CONFIRM_TIMEOUT_MAX_S} s), the longest durable "
                          "timer a Python orchestration may wait on", f"{WHERE}; e.g. {name}={CONFIRM_TIMEOUT_MAX_S}")
    return _int(env, name, CONFIRM_TIMEOUT_MAX_S)


def _max_folder_detections(env: Mapping[str, str]) -> int:
    """TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS, refused above ``core.repeats.MAX_FOLDER_DETECTIONS`` with the reason."""
    name = "TRAPBATCH_REPEAT_MAX_FOLDER_DETECTIONS"
    raw = env.get(name, "").strip()
    if raw.isdigit() and int(raw) > MAX_FOLDER_DETECTIONS:
        raise ConfigError(f"{name}={raw} is above {MAX_FOLDER_DETECTIONS}: one activity searches a folder, in time "
                          "growing with the square of its eligible detections, and a larger folder would pass the "
                          "activity's 30-minute limit or its memory",
                          f"{WHERE}; e.g. {name}={DEFAULT_MAX_FOLDER_DETECTIONS} (folders above it are skipped and "
                          "named in the repeats list)")
    return _int(env, name, DEFAULT_MAX_FOLDER_DETECTIONS)


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    """A text setting with a default: empty (``"TRAPBATCH_CONTAINER": ""`` in local.settings.json, an app setting left
    blank) is the default, as it is for every number. Why: ``env.get(name, default)`` took "" as the value, so an empty
    TRAPBATCH_CONTAINER named no container and every blob call failed far from the setting."""
    return env.get(name, "").strip() or default


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number", f"{WHERE}; e.g. {name}={default}") from None


def _positive(env: Mapping[str, str], name: str, default: float, allow_zero: bool = False) -> float:
    value = _float(env, name, default)
    if value < 0 or (value == 0 and not allow_zero) or value != value or value == float("inf"):
        raise ConfigError(f"{name}={value} must be a positive number", f"{WHERE}; e.g. {name}={default}")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 <= value <= 1:
        raise ConfigError(f"{name}={value} is not a fraction from 0 to 1", f"{WHERE}; e.g. {name}={default}")
    return value


def _threshold(env: Mapping[str, str], name: str, default: float) -> float:
    """A confidence threshold, in the range a request's ``preview_threshold`` may take (core.requests)."""
    value = _float(env, name, default)
    if not MIN_PREVIEW_THRESHOLD <= value <= 1:
        raise ConfigError(f"{name}={value} is not a confidence from {MIN_PREVIEW_THRESHOLD} to 1 (nothing below "
                          f"{MIN_PREVIEW_THRESHOLD} is in the results)", f"{WHERE}; e.g. {name}={default}")
    return value


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off setting: ``TRUE_WORDS`` or ``FALSE_WORDS`` in any case, empty or unset the default. Why one reader
    refusing anything else: TRAPBATCH_WORKER_RESIDENT used to take any other word (``ture``, ``enabled``) as off
    without a word, while TRAPBATCH_EXPORT_IMAGE_SIZES refused ``yes``: one setting's spelling failed on the other."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in TRUE_WORDS + FALSE_WORDS:
        raise ConfigError(f"{name}={raw!r} is not true or false",
                          f"{WHERE}; e.g. {name}={str(default).lower()} (also {'/'.join(TRUE_WORDS + FALSE_WORDS)})")
    return raw in TRUE_WORDS


def _license(env: Mapping[str, str], name: str) -> str:
    """A licence setting as given. Not refused here, though the Camtrap DP package can carry only an identifier
    or a URL (``camtrapdp.license_entry``, which writes ``CC BY 4.0`` as ``CC-BY-4.0``): every activity and route
    reads the settings, so one refused value (a deployment's free text from before) would stop the whole app,
    running tasks and the closing of their pool jobs included; the exports claim no licence for such a value and
    say so in the log (``activities.exports.package_licenses``)."""
    return env.get(name, "").strip()


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}", f"{WHERE}; e.g. {name}={default}")
    return raw


# The edge downloads, hashes and parses the whole list while the POST waits (the HTTP front end gives up after 230 s):
# 256 MiB is seconds of work, and about three million rows of a captures CSV.
DEFAULT_IMAGE_LIST_MAX_BYTES = 256 * 1024 * 1024
MAX_LINK_DAYS = 7.0  # a user delegation key is valid at most 7 days (adapters.share_links)


def _link_days(env: Mapping[str, str]) -> float:
    value = _float(env, "TRAPBATCH_LINK_DAYS", MAX_LINK_DAYS)
    if not 0 < value <= MAX_LINK_DAYS:
        raise ConfigError(f"TRAPBATCH_LINK_DAYS={value} is not a number of days above 0 and at most {MAX_LINK_DAYS:g}",
                          f"{WHERE}; links are user delegation SAS, which Azure limits to 7 days")
    return value


def storage_connection(env: Mapping[str, str]) -> str:
    """trapbatch's own storage account, as ``Settings.storage_connection`` holds it: ``AzureWebJobsStorage``, else
    ``identity:<blob endpoint>`` from its identity-based settings. Apart from ``Settings.from_env`` so that a dropped
    request can still be answered when another setting is wrong (``api.drop_config``)."""
    storage = env.get("AzureWebJobsStorage", "")
    if not storage:
        account = env.get("AzureWebJobsStorage__accountName")
        blob_uri = env.get("AzureWebJobsStorage__blobServiceUri")
        if account and not blob_uri:
            blob_uri = f"https://{account}.blob.core.windows.net"
        storage = f"identity:{blob_uri}" if blob_uri else ""
    if not storage:
        raise ConfigError(
            "AzureWebJobsStorage is not set",
            f"{WHERE}; locally use 'UseDevelopmentStorage=true' with Azurite running, in Azure the "
            "identity-based AzureWebJobsStorage__accountName",
        )
    return storage


def _keep_replaced_days(env: Mapping[str, str]) -> int:
    """TRAPBATCH_KEEP_REPLACED_DAYS: ``core.replaced.FOREVER`` (0) or at least ``MIN_KEEP_DAYS``. Why refused below
    rather than raised to it: the operator who wrote 3 would otherwise find the files there on day 5 and not know
    why; the error says the floor and why (every link handed out for them must end first)."""
    from core.replaced import DEFAULT_KEEP_DAYS, FOREVER, MIN_KEEP_DAYS  # core.replaced reads this module's bounds

    name = "TRAPBATCH_KEEP_REPLACED_DAYS"
    value = _int(env, name, DEFAULT_KEEP_DAYS, minimum=0)
    if value != FOREVER and value < MIN_KEEP_DAYS:
        raise ConfigError(f"{name}={value} is below {MIN_KEEP_DAYS} days: a replaced generation's links, handed out "
                          f"for up to {MAX_LINK_DAYS:g} days, and its steps still running would be cut",
                          f"{WHERE}; e.g. {name}={DEFAULT_KEEP_DAYS}, or {name}=0 to keep replaced generations")
    return value


def _event_interval_s(env: Mapping[str, str]) -> float:
    """TRAPBATCH_EVENT_INTERVAL_S: 0 to ``core.requests.MAX_EVENT_INTERVAL_S``, the range a request's own
    ``event_interval_s`` takes. Why the same bound: the setting stands in for the request's value when it names none,
    and a request refused above a day (past it a camera's visits merge into its whole deployment) was given any
    larger number by the app."""
    name = "TRAPBATCH_EVENT_INTERVAL_S"
    value = _positive(env, name, 60.0, allow_zero=True)
    if value > MAX_EVENT_INTERVAL_S:
        raise ConfigError(f"{name}={value:g} is above {MAX_EVENT_INTERVAL_S} s (a day), the most a request's "
                          "event_interval_s may be: past it a camera's visits merge into its whole deployment",
                          f"{WHERE}; e.g. {name}=1800 (the 30-minute independence interval)")
    return value


def _poll_s(env: Mapping[str, str]) -> tuple[float, float]:
    """TRAPBATCH_POLL_MIN_S and _MAX_S: positive, finite, the least no more than the most. Why checked here: they
    become a shard group's durable timers (``orchestrations.shards``), where NaN or infinity raised inside the
    orchestrator (``timedelta``) and failed every task, and a negative or zero delay polled the pool without a pause."""
    least = _positive(env, "TRAPBATCH_POLL_MIN_S", 30.0)
    most = _positive(env, "TRAPBATCH_POLL_MAX_S", max(300.0, least))
    if most < least:
        raise ConfigError(f"TRAPBATCH_POLL_MAX_S={most:g} is below TRAPBATCH_POLL_MIN_S={least:g}",
                          f"{WHERE}; the polls back off from the least to the most, "
                          f"e.g. TRAPBATCH_POLL_MAX_S={least * 10:g}")
    return least, most


@dataclass(frozen=True, slots=True)
class OrchestrationKnobs:
    """The non-secret tuning values an orchestration needs; snapshotted into its input at start."""

    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD
    max_attempts: int = 3
    poll_min_s: float = 30.0
    poll_max_s: float = 300.0
    max_in_flight: int = 100
    shards_per_group: int = 200
    max_task_seconds: int = 21600
    history_events: int = 1000  # a shard group's generation goes on as new before its history passes this
    # core.shards.MAX_SHARDS when the task started (Settings.from_env sets it); 0, a task whose input lacks it (one
    # started by a release before the knob), is not checked: its enumeration replays as it ran (it may have written
    # its manifests), not into a refusal
    max_shards: int = 0
    max_failed_fraction: float = 0.05
    merge_images_per_part: int = 200_000  # the fan-in merges ranges of about this many images per activity
    # parts per merge at most (core.fanin.SAFE_MAX_PARTS; Settings.from_env sets it); 0, a task whose input lacks it
    # (started by a release before the knob), plans up to core.fanin.MAX_PARTS, as it ran
    merge_max_parts: int = 0
    repeat_search_detections_per_group: int = 400_000  # eligible detections per repeat-search activity
    # a folder with more eligible detections is not searched (RepeatOptions.max_folder_detections)
    repeat_max_folder_detections: int = DEFAULT_MAX_FOLDER_DETECTIONS
    # images per call of only_new's reuse step (core.shards.REUSE_IMAGES_PER_CALL; Settings.from_env sets it); 0, a
    # task whose input lacks it (started by a release before the knob), replays its 10 shards per call
    # (orchestrations.task.reuse_shards_per_call)
    reuse_images_per_call: int = 0
    # calls at most of an activity whose failure says storage or Batch is busy or out of reach
    # (orchestrations.retries; TRAPBATCH_BUSY_RETRY_ATTEMPTS, Settings.from_env sets it); 0, a task whose input lacks
    # it (started by a release before the knob), replays retrying such failures as any other (3 calls, 2 s and 4 s)
    busy_retry_attempts: int = 0
    # actions one execution may schedule before a step fails it as ActionBudgetSpent (ACTION_BUDGET; Settings.from_env
    # sets it; orchestrations.retries.ActionLedger); 0, an input recorded before the knob, is not checked: its
    # history replays as it ran
    action_budget: int = 0

    # estimates (core/estimate.py) for "dry_run" requests
    worker_images_per_s: float = DEFAULT_WORKER_IMAGES_PER_S
    pool_nodes: int = DEFAULT_POOL_NODES
    node_price_per_hour: float = 0.0  # 0: the list price of pool_vm_size (core.cost.node_price), if known
    pool_vm_size: str = ""  # the Batch pool's VM size; "" for pools without one (local, simulated)
    confirm_above_images: int = 0  # 0: never wait for a confirmation
    confirm_timeout_s: int = CONFIRM_TIMEOUT_MAX_S
    # the length of one of a request's previews_expire_days, in seconds: 86400, changed by tests only
    previews_expire_day_s: int = 86400
    task_events: bool = False  # TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT is set: publish an event when the task ends
    # TRAPBATCH_WORKER_RESIDENT: pool tasks run the resident client, so a node's later shards start warm (estimates)
    worker_resident: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OrchestrationKnobs":
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})


def caller_auth_mode(env: Mapping[str, str]) -> str:
    """``TRAPBATCH_CALLER_AUTH`` as read (unset or empty: ``none``), without the rest of the settings: the HTTP edge
    reads it alone so that, with ``none``, a request needs nothing else (``api.starters.request_caller``). Read as
    every other choice is (``_choice``: spaces and case ignored), so ``EasyAuth`` does not stop the app."""
    return env.get("TRAPBATCH_CALLER_AUTH", "").strip().lower() or "none"


@dataclass(frozen=True, slots=True)
class Settings:
    storage_connection: str = field(repr=False)
    container: str = DEFAULT_STATE_CONTAINER
    web_container: str = STATIC_WEBSITE_CONTAINER
    pool: str = "local"
    model: str = ""
    detection_threshold: float = DEFAULT_DETECTION_THRESHOLD
    preview_threshold: float = 0.2
    preview_threshold_set: bool = False  # TRAPBATCH_PREVIEW_THRESHOLD was given; else the model decides
    export_attribution: str = ""
    export_license: str = ""
    export_data_license: str = ""  # TRAPBATCH_EXPORT_DATA_LICENSE; "": export_license stands for the data too
    zooniverse_batch_size: int = 10_000
    zooniverse_max_frames: int = 20  # core.zooniverse.DEFAULT_MAX_FRAMES
    event_interval_s: float = 60.0
    export_image_sizes: bool = True
    merge_views_mode: str = "auto"  # TRAPBATCH_MERGE_VIEWS; ``merge_views`` decides
    image_list_max_bytes: int = DEFAULT_IMAGE_LIST_MAX_BYTES
    link_days: float = 7.0
    keep_replaced_days: int = 30  # TRAPBATCH_KEEP_REPLACED_DAYS (core.replaced.DEFAULT_KEEP_DAYS; 0: for ever)
    results_zip_above_bytes: int = 50 * 1024 * 1024  # GET .../results offers one zip of the files above this
    # tests only (TRAPBATCH_MARKER_HOST_GONE_AFTER_S): api.arrivals counts a missing host across Event Grid's
    # deliveries for this long before a marker's refusal stays; the platform's 120 s everywhere else
    marker_host_gone_after_s: float = HOST_GONE_AFTER_S
    knobs: OrchestrationKnobs = OrchestrationKnobs()
    local_concurrency: int = 0
    device: str = "auto"
    model_cache: str = ""
    worker_faults: Mapping[str, str] = field(default_factory=dict)
    worker_tuning: tuple[str, ...] = ()  # TRAPBATCH_WORKER_TUNING (core.worker_tuning): appended to every shard
    batch_account_url: str = ""
    batch_pool_id: str = ""
    worker_image: str = ""
    worker_identity: str = ""
    worker_identity_resource_id: str = ""
    storage_account_url: str = ""
    key_vault_url: str = ""
    app_key_vault_url: str = ""  # TRAPBATCH_APP_KEY_VAULT_URL: the app's own secrets; never passed to the workers
    local_secrets_file: str = ""
    public_web_url: str = ""
    models_container: str = ""
    task_hub: str = "trapbatch"  # TRAPBATCH_TASK_HUB: its containers (leases, large messages) hold no images
    source_accounts: tuple[str, ...] = ()
    caller_auth: str = "none"
    operator_role: str = "trapbatch.operator"
    caller_max_images_per_task: int = 0
    caller_max_active_tasks: int = 0
    caller_min_images_per_shard: int = 0
    notify_hosts: tuple[str, ...] = ()
    notify_secret: str = ""
    notify_url_secret_prefix: str = "notify-url-"
    event_grid_topic_endpoint: str = ""

    @property
    def worker_resident(self) -> bool:
        """TRAPBATCH_WORKER_RESIDENT: pool tasks run the resident client (kept in the knobs, which estimates read)."""
        return self.knobs.worker_resident

    @property
    def merge_views(self) -> bool:
        """Whether shard manifests ask the workers for merge views (TRAPBATCH_MERGE_VIEWS; see the module doc)."""
        if self.merge_views_mode != "auto":
            return self.merge_views_mode == "on"
        return not (self.pool == "azure_batch" and not self.worker_resident)

    def threshold_for(self, model: str, requested: float | None = None) -> float:
        """The threshold of previews, CSV and exports: the request's ``preview_threshold``, else
        ``TRAPBATCH_PREVIEW_THRESHOLD``, else the model's typical threshold (MegaDetector's own default for it)."""
        if requested is not None:
            return float(requested)
        return self.preview_threshold if self.preview_threshold_set else typical_threshold(model)


    simulated_failure_rate: float = 0.0

    def secret_store_env(self) -> dict[str, str]:
        """The secret-store variables for ``gpu_batch.storage_refs`` and for the workers' environment (the worker reads
        the same names, ``storage_refs.KEY_VAULT_ENV`` and ``LOCAL_SECRETS_ENV``; tests/unit/test_settings pins it)."""
        return {k: v for k, v in (("TRAPBATCH_KEY_VAULT_URL", self.key_vault_url),
                                  ("TRAPBATCH_LOCAL_SECRETS_FILE", self.local_secrets_file)) if v}

    def app_secret_store_env(self) -> dict[str, str]:
        """The secret store of the app's own secrets (the notification signing key), for
        ``gpu_batch.storage_refs.secret_reader_from_env``: the app vault when TRAPBATCH_APP_KEY_VAULT_URL is set, else
        the sources' store (``secret_store_env``, today's single vault or the local secrets file).

        Why a second vault: the GPU nodes read the sources' vault by secret names that requests choose, so no role
        can keep them from a secret stored there, and a node decodes untrusted images. Never give this to a worker."""
        if self.app_key_vault_url:
            return {"TRAPBATCH_KEY_VAULT_URL": self.app_key_vault_url}
        return self.secret_store_env()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        storage = storage_connection(env)
        pool = _text(env, "TRAPBATCH_POOL", "local")
        if pool not in POOL_KINDS:
            raise ConfigError(f"TRAPBATCH_POOL={pool!r} is not a pool kind",
                              "use 'local' or 'azure_batch' ('simulated' is for the control-plane benchmark only)")
        caller_auth = caller_auth_mode(env)
        if caller_auth not in CALLER_AUTH_MODES:
            raise ConfigError(f"TRAPBATCH_CALLER_AUTH={caller_auth!r} is not a caller authentication mode",
                              f"use one of {', '.join(CALLER_AUTH_MODES)}; {WHERE}")
        faults_raw = env.get("TRAPBATCH_WORKER_FAULTS", "")
        try:
            faults = json.loads(faults_raw) if faults_raw else {}
        except json.JSONDecodeError:
            raise ConfigError("TRAPBATCH_WORKER_FAULTS is not JSON", 'e.g. {"s00000/1": "crash_after:2"}') from None
        topic_endpoint = env.get("TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT", "").strip()
        if topic_endpoint and (problem := endpoint_problem(topic_endpoint)):
            # the command as Event Grid's quickstart runs it (articles/event-grid/custom-event-quickstart.md)
            raise ConfigError(problem, "give the topic's endpoint, as `az eventgrid topic show -g <group> -n <topic> "
                                       f"--query endpoint -o tsv` prints it, or unset it; {WHERE}")
        poll_min_s, poll_max_s = _poll_s(env)
        knobs = OrchestrationKnobs(
            max_shards=MAX_SHARDS,
            merge_max_parts=SAFE_MAX_PARTS,
            action_budget=ACTION_BUDGET,
            images_per_shard=_int(env, "TRAPBATCH_IMAGES_PER_SHARD", DEFAULT_IMAGES_PER_SHARD,
                                  maximum=MAX_IMAGES_PER_SHARD),  # what a request may ask for
            max_attempts=_int(env, "TRAPBATCH_MAX_ATTEMPTS", 3),
            poll_min_s=poll_min_s,
            poll_max_s=poll_max_s,
            max_in_flight=_int(env, "TRAPBATCH_MAX_IN_FLIGHT", 100),
            shards_per_group=_int(env, "TRAPBATCH_SHARDS_PER_GROUP", 200),
            max_task_seconds=_int(env, "TRAPBATCH_MAX_TASK_SECONDS", 21600, maximum=MAX_TASK_SECONDS_LIMIT),
            history_events=_int(env, "TRAPBATCH_HISTORY_EVENTS", 1000, minimum=MIN_HISTORY_EVENTS,
                                maximum=MAX_HISTORY_EVENTS),
            max_failed_fraction=_fraction(env, "TRAPBATCH_MAX_FAILED_FRACTION", 0.05),
            merge_images_per_part=_int(env, "TRAPBATCH_MERGE_IMAGES_PER_PART", 200_000),
            repeat_search_detections_per_group=_int(env, "TRAPBATCH_REPEAT_SEARCH_DETECTIONS_PER_GROUP", 400_000),
            repeat_max_folder_detections=_max_folder_detections(env),
            reuse_images_per_call=_int(env, "TRAPBATCH_REUSE_IMAGES_PER_CALL", REUSE_IMAGES_PER_CALL),
            busy_retry_attempts=_int(env, "TRAPBATCH_BUSY_RETRY_ATTEMPTS", DEFAULT_BUSY_RETRY_ATTEMPTS,
                                     minimum=3, maximum=MAX_BUSY_RETRY_ATTEMPTS),


            worker_images_per_s=_positive(env, "TRAPBATCH_WORKER_IMAGES_PER_S", DEFAULT_WORKER_IMAGES_PER_S),
            pool_nodes=_int(env, "TRAPBATCH_POOL_NODES", DEFAULT_POOL_NODES),
            node_price_per_hour=_positive(env, "TRAPBATCH_NODE_PRICE_PER_HOUR", 0.0, allow_zero=True),
            pool_vm_size=env.get("TRAPBATCH_POOL_VM_SIZE", "").strip() if pool == "azure_batch" else "",
            confirm_above_images=_int(env, "TRAPBATCH_CONFIRM_ABOVE_IMAGES", 0, minimum=0),
            confirm_timeout_s=_confirm_timeout_s(env),
            previews_expire_day_s=_int(env, "TRAPBATCH_PREVIEWS_EXPIRE_DAY_S", 86400),
            task_events=bool(topic_endpoint),
            worker_resident=_bool(env, "TRAPBATCH_WORKER_RESIDENT", False),
        )
        settings = cls(
            storage_connection=storage,
            container=_text(env, "TRAPBATCH_CONTAINER", DEFAULT_STATE_CONTAINER),
            web_container=_text(env, "TRAPBATCH_WEB_CONTAINER", STATIC_WEBSITE_CONTAINER),
            pool=pool,
            model=env.get("TRAPBATCH_MODEL", ""),
            detection_threshold=_fraction(env, "TRAPBATCH_DETECTION_THRESHOLD", DEFAULT_DETECTION_THRESHOLD),
            preview_threshold=_threshold(env, "TRAPBATCH_PREVIEW_THRESHOLD", 0.2),
            preview_threshold_set=bool(env.get("TRAPBATCH_PREVIEW_THRESHOLD")),
            export_attribution=env.get("TRAPBATCH_EXPORT_ATTRIBUTION", ""),
            export_license=_license(env, "TRAPBATCH_EXPORT_LICENSE"),
            export_data_license=_license(env, "TRAPBATCH_EXPORT_DATA_LICENSE"),
            zooniverse_batch_size=_int(env, "TRAPBATCH_ZOONIVERSE_BATCH_SIZE", 10_000),
            zooniverse_max_frames=_int(env, "TRAPBATCH_ZOONIVERSE_MAX_FRAMES", 20,
                                       maximum=ZOONIVERSE_MAX_FRAMES_LIMIT),
            event_interval_s=_event_interval_s(env),
            export_image_sizes=_bool(env, "TRAPBATCH_EXPORT_IMAGE_SIZES", True),
            merge_views_mode=_choice(env, "TRAPBATCH_MERGE_VIEWS", ("auto", "on", "off"), "auto"),
            image_list_max_bytes=_int(env, "TRAPBATCH_IMAGE_LIST_MAX_BYTES", DEFAULT_IMAGE_LIST_MAX_BYTES),
            link_days=_link_days(env),
            keep_replaced_days=_keep_replaced_days(env),
            results_zip_above_bytes=_int(env, "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES", 50 * 1024 * 1024, minimum=0),
            marker_host_gone_after_s=_positive(env, "TRAPBATCH_MARKER_HOST_GONE_AFTER_S", HOST_GONE_AFTER_S),
            knobs=knobs,
            local_concurrency=_int(env, "TRAPBATCH_LOCAL_CONCURRENCY", 0, minimum=0),
            worker_tuning=parse_worker_tuning(env.get("TRAPBATCH_WORKER_TUNING", "")),
            device=_choice(env, "TRAPBATCH_DEVICE", DEVICES, "auto"),
            model_cache=env.get("TRAPBATCH_MODEL_CACHE", ""),
            worker_faults=faults,
            batch_account_url=env.get("TRAPBATCH_BATCH_ACCOUNT_URL", ""),
            batch_pool_id=env.get("TRAPBATCH_BATCH_POOL_ID", ""),
            worker_image=env.get("TRAPBATCH_WORKER_IMAGE", ""),
            worker_identity=env.get("TRAPBATCH_WORKER_IDENTITY", ""),
            worker_identity_resource_id=env.get("TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID", ""),
            # stripped: the pool refuses blanks in it (azure_batch._check_storage_account_url), a pasted newline too
            storage_account_url=env.get("TRAPBATCH_STORAGE_ACCOUNT_URL", "").strip(),
            key_vault_url=env.get("TRAPBATCH_KEY_VAULT_URL", "").strip(),
            app_key_vault_url=env.get("TRAPBATCH_APP_KEY_VAULT_URL", "").strip(),
            local_secrets_file=env.get("TRAPBATCH_LOCAL_SECRETS_FILE", ""),
            public_web_url=env.get("TRAPBATCH_PUBLIC_WEB_URL", "").rstrip("/"),
            models_container=env.get("TRAPBATCH_MODELS_CONTAINER", ""),
            task_hub=env.get("TRAPBATCH_TASK_HUB", "") or "trapbatch",
            source_accounts=tuple(normalize_account_url(u) for u in
                                  env.get("TRAPBATCH_SOURCE_ACCOUNTS", "").replace(",", " ").split()),
            caller_auth=caller_auth,
            operator_role=env.get("TRAPBATCH_OPERATOR_ROLE", "").strip() or "trapbatch.operator",
            caller_max_images_per_task=_int(env, "TRAPBATCH_CALLER_MAX_IMAGES_PER_TASK", 0, minimum=0),
            caller_max_active_tasks=_int(env, "TRAPBATCH_CALLER_MAX_ACTIVE_TASKS", 0, minimum=0),
            caller_min_images_per_shard=_int(env, "TRAPBATCH_CALLER_MIN_IMAGES_PER_SHARD", 0, minimum=0),
            notify_hosts=tuple(h.lower() for h in env.get("TRAPBATCH_NOTIFY_HOSTS", "").replace(",", " ").split()),
            notify_secret=env.get("TRAPBATCH_NOTIFY_SECRET", "").strip(),
            notify_url_secret_prefix=url_secret_prefix(env.get("TRAPBATCH_NOTIFY_URL_SECRET_PREFIX", "")),
            event_grid_topic_endpoint=topic_endpoint,


            simulated_failure_rate=_fraction(env, "TRAPBATCH_SIMULATED_FAILURE_RATE", 0.0),
        )
        if pool == "azure_batch":
            for name, value in (("TRAPBATCH_BATCH_ACCOUNT_URL", settings.batch_account_url),
                                ("TRAPBATCH_BATCH_POOL_ID", settings.batch_pool_id),
                                ("TRAPBATCH_WORKER_IMAGE", settings.worker_image),
                                ("TRAPBATCH_WORKER_IDENTITY_RESOURCE_ID", settings.worker_identity_resource_id),
                                ("TRAPBATCH_STORAGE_ACCOUNT_URL", settings.storage_account_url)):
                if not value:
                    raise ConfigError(f"{name} is not set but TRAPBATCH_POOL=azure_batch", f"{WHERE} (infra/ sets it)")
        return settings


@dataclass(frozen=True, slots=True)
class DecidedSettings:
    """The app settings one run's outputs follow, decided when the run starts and written once beside its state
    (``gpu_batch.layout.decided_settings_blob``, by ``activities.decided``); every later activity of the run takes
    them instead of the environment's (``apply``).

    Why: activities read the app settings at each call, and an app setting changed while a task runs (on Azure: an
    app restart, whose in-flight activities run again under the new value) used to reach only the activities after
    it, so one task's shards got two detection thresholds, its CSV rows two preview thresholds, its exports a third.
    These are the settings whose value shapes a task's outputs; the request's own values (``preview_threshold``,
    ``event_interval_s``) still win over them as before, so they are the app's part only. ``preview_threshold`` is
    resolved for the task's model (TRAPBATCH_PREVIEW_THRESHOLD, else the model's typical threshold). A field None
    (a document written before the field existed) is not decided: the environment's value applies.
    """

    preview_threshold: float | None = None  # the app's threshold for the task's model, when the request sets none
    detection_threshold: float | None = None
    merge_views: bool | None = None  # TRAPBATCH_MERGE_VIEWS, resolved (``Settings.merge_views``)
    event_interval_s: float | None = None
    export_image_sizes: bool | None = None
    export_license: str | None = None
    export_data_license: str | None = None
    export_attribution: str | None = None
    zooniverse_batch_size: int | None = None
    zooniverse_max_frames: int | None = None
    max_task_seconds: int | None = None

    @classmethod
    def decide(cls, settings: Settings, model: str) -> "DecidedSettings":
        """The values ``settings`` (the environment's now) give a run of a task with ``model``."""
        return cls(preview_threshold=settings.threshold_for(model), detection_threshold=settings.detection_threshold,
                   merge_views=settings.merge_views, event_interval_s=settings.event_interval_s,
                   export_image_sizes=settings.export_image_sizes, export_license=settings.export_license,
                   export_data_license=settings.export_data_license,
                   export_attribution=settings.export_attribution,
                   zooniverse_batch_size=settings.zooniverse_batch_size,
                   zooniverse_max_frames=settings.zooniverse_max_frames,
                   max_task_seconds=settings.knobs.max_task_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DecidedSettings":
        return cls(**{k: data[k] for k in cls.__slots__ if data.get(k) is not None})

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with the decided values in place of the environment's (the others, such as storage and
        pool, stay the environment's)."""
        changes: dict[str, Any] = {k: getattr(self, k) for k in
                                   ("detection_threshold", "event_interval_s", "export_image_sizes", "export_license",
                                    "export_data_license", "export_attribution", "zooniverse_batch_size",
                                    "zooniverse_max_frames")
                                   if getattr(self, k) is not None}
        if self.preview_threshold is not None:
            changes.update(preview_threshold=self.preview_threshold, preview_threshold_set=True)
        if self.merge_views is not None:
            changes["merge_views_mode"] = "on" if self.merge_views else "off"
        if self.max_task_seconds is not None:
            changes["knobs"] = replace(settings.knobs, max_task_seconds=self.max_task_seconds)
        return replace(settings, **changes)


DROP_TRIGGER_SOURCES = ("EventGrid", "LogsAndContainerScan")


def own_container_reason(container: str, settings: Settings) -> str | None:
    """Why ``container`` of the app's own storage account is trapbatch's (or the Functions host's) and holds no
    images; None for any other name.

    Why refused: the app reads a request's container with its own identity, which reaches every container of its
    account. Naming the state container as the images' container (or an image list in it) let a caller probe other
    callers' task ids and read the first line of their files (a preview folder's secret name) through the answers."""
    own = {settings.container: "trapbatch's task state and results (TRAPBATCH_CONTAINER)",
           INCOMING_CONTAINER: "trapbatch's dropped requests", settings.web_container: "the preview website"}
    if settings.models_container:
        own[settings.models_container] = "the operator's model checkpoints (TRAPBATCH_MODELS_CONTAINER)"
    name = container.lower()
    if name in own:
        return own[name]
    if name.startswith("azure-webjobs-") or name.startswith("app-package-"):
        return "the Functions host's own files"
    hub = settings.task_hub.lower()  # the Azure Storage provider's containers (and devhost's)
    if name in (f"{hub}-leases", f"{hub}-applease", f"{hub}-largemessages", f"{hub}-state"):
        return "the Durable task hub's state (TRAPBATCH_TASK_HUB)"
    return None


def drop_trigger_source(env: Mapping[str, str]) -> str:
    """The blob trigger's source for ``incoming/``. Read at indexing time (a decorator argument), hence not a field of
    ``Settings``, which activities read per call."""
    value = env.get("TRAPBATCH_DROP_TRIGGER_SOURCE", "") or "EventGrid"
    if value not in DROP_TRIGGER_SOURCES:
        raise ConfigError(f"TRAPBATCH_DROP_TRIGGER_SOURCE={value!r} is not a blob trigger source",
                          f"use one of {', '.join(DROP_TRIGGER_SOURCES)}; {WHERE}")
    return value
