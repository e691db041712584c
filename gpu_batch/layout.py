"""Every blob name, prefix and pool id trapbatch uses: the one module that formats and parses them.

Why one module: the Functions app writes manifests, the GPU worker writes results, the pools write logs, the merge
lists attempts and the HTTP API points at results and pages. When each formatted its own names, a change in one
place silently disagreed with the others. Everything here is a pure function of ids; it lives beside the shard
contract (``gpu_batch.manifest``) because the worker stands alone and must import it without the app.
Must stay importable without torch or azure packages.

Containers: the task-state container and the static website are settings (``TRAPBATCH_CONTAINER``, default
``DEFAULT_STATE_CONTAINER``; ``TRAPBATCH_WEB_CONTAINER``, default ``$web``, the name Azure gives a static website).
The drop container is fixed, because the blob trigger's path is a literal in its decorator.

In the task-state container::

    tasks/<task>/request.json                            the normalized request
    tasks/<task>/enumeration.json                        counts and source of the enumerated images
    tasks/<task>/settings.json                           the app settings this generation's outputs follow, decided
                                                         when its first run started (``decided_settings_blob``)
    tasks/<task>/cancel/<job>.json                       the cancel marker of one run, which its polls look for
    tasks/<task>/jobs/<job>.json                         one run's pool job was in the pool: no SUBMIT creates it
                                                         again (``pool_job_marker``)
    tasks/<task>/joined/<run>/drops/<hash>.json          a request dropped while that run of the task ran, which
                                                         another request started: {"drop": <name>}, so the run's
                                                         end writes its done file too (``joined_drop_blob``)
    tasks/<task>/joined/<run>/ended.json                 that run ended: the final status its done files hold
                                                         (``run_ended_blob``)
    tasks/<task>/shards/<shard>/attempt-<n>.json         the manifest of one shard attempt
    tasks/<task>/shards/<shard>/attempt-<n>.results.json what the worker wrote for that attempt
    tasks/<task>/shards/<shard>/attempt-<n>.progress.json how many images that attempt has done so far (the poll
                                                         reads this small counter, never the results, for progress)
    tasks/<task>/shards/<shard>/attempt-<n>.coverage.json what that attempt's final results cover (counts, the names
                                                         it left not final, the results blob's ETag): the poll and
                                                         the resubmission read this instead of the results
                                                         (``gpu_batch.manifest.CoverageSummary``)
    tasks/<task>/shards/<shard>/attempt-<n>.view         the merge's view of that attempt's final results, when they
                                                         finish its manifest (their JSON, CSV lines, counts, preview
                                                         sample, search rows; the ETags it was made from): a merge
                                                         part composes it instead of reading the entries
                                                         (``gpu_batch.formats.mergeview``)
    tasks/<task>/shards/<shard>/etags.json               {"etags": {name: ETag}} of the shard's images as listed
    tasks/<task>/shards/<shard>/attempt-0.json           a re-run with ``only_new``: every image of the shard (the
                                                         shard's own list; attempt 1 then holds only those to run)
    tasks/<task>/shards/<shard>/attempt-0.results.json   ... and the previous generation's entries it reuses
                                                         (``activities.reuse``), read as the oldest attempt
    tasks/<task>/listing/shard-ranges-<first>.json        [[shard, first name, last name], ...] (names' order) of the
                                                         shards one manifest write cut: where a later ``only_new``
                                                         finds the shards holding a name (below the summary's
                                                         ``shards``). A key listed again (a failed run resumed)
                                                         keeps only its last listing's: the listing's end deletes
                                                         the batches, ``deployments-*`` parts and shard folders past
                                                         its count (every one, gaps or not: a listing of
                                                         ``shards/``), unless it found no images
                                                         (``activities.listing_leftovers``)

    The working files of a listing (below), read only by the listing's own calls: deleted when the listing ends
    (its summary written), or, left by a run whose listing never ended, when a later run's listing ends.
    tasks/<task>/listing/plan.json                       the parallel enumeration's plan (units, limits)
    tasks/<task>/listing/u<unit>.json                    one listing unit's leaves (folders and single blobs)
    tasks/<task>/listing/u<unit>-p<part>.json            the image names one listing call found, in listing order,
                                                         and their ETags
    tasks/<task>/listing/u<unit>-p<part>.sample.json     that part's smallest sample keys (requests with sample_n)
    tasks/<task>/listing/u<unit>-p<part>.next.json       where the unit's next part goes on (leaf, service marker)
    tasks/<task>/listing/sample-threshold.json           the largest sample key selected (requests with sample_n);
                                                         these loose files: a listing of a run without an id, kept
                                                         until a run with one finishes its listing
    tasks/<task>/listing/runs/<job>/...                  the same working files of one run's listing (a run with
                                                         an id lists into its own folder: ``listing_work_prefix``;
                                                         deleted when its listing ends, or when a run started later
                                                         or replacing it finishes its listing)
    tasks/<task>/logs/<job>/<pool task>.log              a pool task's output (LocalPool)
    tasks/<task>/logs/<job>/<pool task>/stdout.txt | stderr.txt   a Batch task's output files (AzureBatchPool)
    results/<task>/detections[.<variant>].json | .csv    merged results (MegaDetector format 1.6) and the CSV
    results/<task>/preview-sample[.<variant>].json       the preview page's samples, drawn by the merge
    results/<task>/repeated-detections.json              the repeated detections the merge found
    results/<task>/README[.<variant>].txt                what each file of a results variant is, for people
                                                         (``activities.readme``, written where the pages are)
    results/<task>/preview-folder.txt                    the task's unguessable folder in the static website
    results/<task>/exports[/<variant>]/coco.json         COCO Camera Traps (activities.exports)
    results/<task>/exports[/<variant>]/camtrap-dp/datapackage.json | deployments.csv | media.csv | observations.csv
    results/<task>/exports[/<variant>]/camera-visits.csv  a row per camera: its visits by kind (the Camtrap DP events)
    results/<task>/exports[/<variant>]/camera-days.csv    a row per camera and day: its photos and visits by kind
    results/<task>/exports[/<variant>]/zooniverse/batch-<n>.csv   Zooniverse subject manifests, n from 001
    results/<task>/current.json                          which generation's results are the task's (re-runs)

Generations (``"rerun": true``, ``api.starters``): the first run of a task keeps its state and results under the task
id itself, as above. A re-run is a new generation whose key is ``<task>/runs/<run>`` (``generation_key``), so all of
its state lives under ``tasks/<task>/runs/<run>/`` and its results under ``results/<task>/runs/<run>/``, with the same
names as above below those prefixes. When it completes, ``current.json`` is rewritten to name it (one blob write:
readers see the old generation or the new one, never a mix); without ``current.json`` the first generation's are the
task's results. The generation it replaced is deleted days later (``core.replaced`` says which of these names are a
generation's and which the task's: ``cancel/``, ``jobs/``, ``joined/``, ``logs/`` and ``current.json`` stay).

In the static website: ``<folder>/index.html``, ``<folder>/<variant>/index.html``, ``<folder>/thumbs/<hash>.jpg``.
In the drop container: ``<name>.json`` starts a task; trapbatch answers with ``<name>.task.json`` or
``<name>.json.error.json``.

Pool ids: the Batch job of one run of a task is ``<task>_<run>`` (``<task>`` for a run without an id); the pool task of
a shard attempt is ``<shard>-a<attempt>``. Each run gets its own job because a job is terminated when its run ends
(an account allows only 100-300 active jobs) and Batch accepts no tasks into a terminated job.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

DEFAULT_STATE_CONTAINER = "trapbatch"
STATIC_WEBSITE_CONTAINER = "$web"
INCOMING_CONTAINER = "incoming"

# Variants of a task's results: "" the merged detections; REPEATS_REMOVED the same with the repeated detections a
# person chose to remove marked as false positives (``core.repeats.RepeatRemoval``).
REPEATS_REMOVED = "repeats-removed"

_SHARD_RE = re.compile(r"s(\d{5,})")
_POOL_TASK_RE = re.compile(r"(.+)-a(\d+)")
_ATTEMPT_RESULTS_RE = re.compile(r"/attempt-(\d+)\.results\.json$")
_DROP_ANSWERS = (".error.json", ".task.json", ".done.json", ".estimate.json")


# ---------------------------------------------------------------- ids

def shard_id(index: int) -> str:
    return f"s{index:05d}"


def shard_index(sid: str) -> int:
    m = _SHARD_RE.fullmatch(sid)
    if m is None:
        raise ValueError(f"{sid!r} is not a shard id (s<5+ digits>)")
    return int(m.group(1))


def run_id(started: datetime, random_hex: str) -> str:
    """A run of a task: ``r<UTC yymmddHHMMSS><random hex>`` (sorts by start; two starts in one second differ)."""
    return f"r{started.astimezone(timezone.utc):%y%m%d%H%M%S}{random_hex}"


def pool_job_id(task_id: str, run: str = "") -> str:
    """Azure Batch job ids allow letters, digits, '-' and '_' (max 64): ``task-<20 hex>_r<12 digits><hex>`` fits."""
    return f"{task_id}_{run}" if run else task_id


def task_of_pool_job(job_id: str) -> str:
    """The task a pool job belongs to (task ids contain no '_')."""
    return job_id.split("_", 1)[0]


def pool_task_id(sid: str, attempt: int) -> str:
    return f"{sid}-a{attempt}"


def parse_pool_task_id(pool_task: str) -> tuple[str, int]:
    """(shard id, attempt) of a pool task id; ValueError for anything ``pool_task_id`` did not make."""
    m = _POOL_TASK_RE.fullmatch(pool_task)
    if m is None:
        raise ValueError(f"{pool_task!r} is not a trapbatch pool task id (<shard>-a<attempt>)")
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------- task state

def task_prefix(task_id: str) -> str:
    return f"tasks/{task_id}/"


def request_blob(task_id: str) -> str:
    return f"{task_prefix(task_id)}request.json"


def removal_choice_blob(task_id: str) -> str:
    """The location ids a running repeated-detection removal marks (``activities.fanin.run_prepare_removal``); one
    removal at a time per task, so one blob."""
    return f"{task_prefix(task_id)}repeats-removal.json"


def enumeration_blob(task_id: str) -> str:
    return f"{task_prefix(task_id)}enumeration.json"


def decided_settings_blob(task_id: str) -> str:
    """The app settings a generation's outputs follow (thresholds, merge views, export options, the pool tasks' time
    limit), written once, before its first shard manifest, by its first run's enumeration; every later activity of
    the generation reads them instead of the environment's, so a setting changed while it runs cannot split its
    outputs (the app's ``DecidedSettings``). Absent for a generation enumerated before they existed."""
    return f"{task_prefix(task_id)}settings.json"


def cancel_marker(job_id: str) -> str:
    """The cancel marker of one run (its pool job): a marker left by a cancelled run never cancels the next one."""
    return f"{task_prefix(task_of_pool_job(job_id))}cancel/{job_id}.json"


def pool_job_marker(job_id: str) -> str:
    """The marker a run's first SUBMIT leaves once its pool job was in the pool (created then, or found there): a
    SUBMIT that finds it takes the job as it is and never creates it again (``activities.pool.run_submit``), so a job
    deleted outside trapbatch stays deleted. Per run (its pool job), as the cancel marker: the next run's job is new."""
    return f"{task_prefix(task_of_pool_job(job_id))}jobs/{job_id}.json"


def joined_drops_prefix(task_id: str, run: str) -> str:
    """The registry of the requests dropped while run ``run`` of the task ran, which another request (or an HTTP
    post) had started: one blob each (``joined_drop_blob``), which that run's end lists to write their done files
    (``adapters.joined_drops``). Per run: a later run of the task (a resume, a re-run) answers only the drops that
    joined it. ``run``: a run id (``run_id``); anything else is refused, as it names a folder."""
    if _RUN_RE.fullmatch(run) is None:
        raise ValueError(f"{run!r} is not a run id (r<12 digits><hex>)")
    return f"{task_prefix(task_id)}joined/{run}/drops/"


def joined_drop_blob(task_id: str, run: str, drop: str) -> str:
    """One joined drop's entry in the registry, named by a hash of the drop's name (a drop name may be up to 1,024
    characters and hold '/'): the same request joining again writes the same entry."""
    digest = hashlib.sha256(drop.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{joined_drops_prefix(task_id, run)}{digest}.json"


def run_ended_blob(task_id: str, run: str) -> str:
    """Run ``run`` of the task ended: ``{"task_id", "run", "status"}``, written by its end before it lists the joined
    drops, and read by a drop joining after registering, which then writes its done file itself."""
    if _RUN_RE.fullmatch(run) is None:
        raise ValueError(f"{run!r} is not a run id (r<12 digits><hex>)")
    return f"{task_prefix(task_id)}joined/{run}/ended.json"


def shards_prefix(task_id: str) -> str:
    """The folder of every shard's folder (``shard_prefix``): a delimiter listing of it gives one prefix per shard."""
    return f"{task_prefix(task_id)}shards/"


def shard_prefix(task_id: str, sid: str) -> str:
    """Every attempt's manifest and results of one shard are under this prefix (the merge lists it)."""
    return f"{shards_prefix(task_id)}{sid}/"


def shard_folder_index(task_id: str, prefix: str) -> int | None:
    """The index of the shard whose ``shard_prefix`` is ``prefix`` (as a delimiter listing of ``shards_prefix``
    returns it), or None for any other name: the inverse of ``shard_prefix(task_id, shard_id(index))``."""
    root = shards_prefix(task_id)
    if not prefix.startswith(root) or not prefix.endswith("/"):
        return None
    m = _SHARD_RE.fullmatch(prefix[len(root):-1])
    return int(m.group(1)) if m is not None else None


def manifest_blob(task_id: str, sid: str, attempt: int) -> str:
    return f"{shard_prefix(task_id, sid)}attempt-{attempt}.json"


def attempt_results_blob(task_id: str, sid: str, attempt: int) -> str:
    return f"{shard_prefix(task_id, sid)}attempt-{attempt}.results.json"


def attempt_progress_blob(task_id: str, sid: str, attempt: int) -> str:
    """The running attempt's counter (``gpu_batch.worker.results.progress_document``), rewritten after each flush."""
    return f"{shard_prefix(task_id, sid)}attempt-{attempt}.progress.json"


def attempt_coverage_blob(task_id: str, sid: str, attempt: int) -> str:
    """The finished attempt's coverage summary (``gpu_batch.manifest.coverage_summary``), written after its last
    flush of results; valid only while the results blob still has the ETag the summary names."""
    return f"{shard_prefix(task_id, sid)}attempt-{attempt}.coverage.json"


def attempt_damaged_blob(task_id: str, sid: str, attempt: int) -> str:
    """The attempt's photos cut short (``gpu_batch.formats.entries.damaged_document``), rewritten after each flush of
    results while there are any (absent: none); valid only while the results blob has the ETag it names."""
    return f"{shard_prefix(task_id, sid)}attempt-{attempt}.damaged.json"


def attempt_view_blob(task_id: str, sid: str, attempt: int) -> str:
    """The finished attempt's merge view (``gpu_batch.formats.mergeview``), written by the worker after its coverage
    summary when every image of the manifest got a final entry; valid only for the ETags it names."""
    return f"{shard_prefix(task_id, sid)}attempt-{attempt}.view"


def shard_merged_blob(task_id: str, sid: str) -> str:
    """The results blobs of the shard, with their ETags, as the merge's part found them when it merged the shard
    (``activities.fanin.run_merge_part``): the exports take a worker's merge view only of those results, so that a
    results blob written after the merge (a late worker) cannot make them differ from the results file."""
    return f"{shard_prefix(task_id, sid)}merged.json"


def attempt_of_results_blob(name: str) -> int | None:
    """The attempt number of a name ``attempt_results_blob`` made; None for any other blob under a shard."""
    m = _ATTEMPT_RESULTS_RE.search(name)
    return int(m.group(1)) if m else None


def pool_log_blob(job_id: str, pool_task: str) -> str:
    return f"{task_prefix(task_of_pool_job(job_id))}logs/{job_id}/{pool_task}.log"


def pool_log_prefix(job_id: str, pool_task: str) -> str:
    """Where Azure Batch uploads a pool task's ``stdout.txt`` and ``stderr.txt`` (its output files), one blob each.

    Why a folder rather than ``pool_log_blob``: Batch uploads each file a wildcard pattern matches under the blob
    virtual directory it is given, keeping the file names (batch-task-output-files.md).
    """
    return f"{task_prefix(task_of_pool_job(job_id))}logs/{job_id}/{pool_task}/"


# ---------------------------------------------------------------- generations (re-runs)

_RUN_RE = re.compile(r"r\d{12}[0-9a-f]+")


def generation_key(task_id: str, generation: str = "") -> str:
    """Where one generation of a task keeps its state and results: the task id for its first generation (every task
    from before re-runs), ``<task>/runs/<run>`` for a generation a re-run started. Every name above takes it in place
    of a task id; pool jobs, cancel markers and logs stay the task's (they carry the run themselves)."""
    if not generation:
        return task_id
    if _RUN_RE.fullmatch(generation) is None:
        raise ValueError(f"{generation!r} is not a run id (r<12 digits><hex>)")
    return f"{task_id}/runs/{generation}"


def current_generation_blob(task_id: str) -> str:
    """``{"generation": <run>}``: the generation whose results are the task's (absent: the first generation's)."""
    return f"{results_prefix(task_id)}current.json"


# ---------------------------------------------------------------- listing parts (parallel enumeration)
# Working files of ``orchestrations.enumeration``: image names stay in blobs, the orchestrator holds counts.
# ``run``: the pool job of the run that lists (``listing_run``); its working files are then its own, under
# ``tasks/<task>/listing/runs/<job>/``, so that a terminated run's late listing call, which a run resuming it under
# the same key cannot stop once it is past its check (``activities.superseded``), writes beside the new run's
# listing, never over it. "" (runs without an id, listings planned before this): ``tasks/<task>/listing/``, as before.
# What the listing makes for later steps (shard ranges, an image list's deployments) stays the task's.

def listing_prefix(task_id: str) -> str:
    return f"{task_prefix(task_id)}listing/"


def listing_work_prefix(task_id: str, run: str = "") -> str:
    """Where one run's listing keeps its working files (``run`` "": the task's listing folder itself)."""
    if run and ("/" in run or run in (".", "..")):
        raise ValueError(f"{run!r} is not a pool job id")
    return f"{listing_runs_prefix(task_id)}{run}/" if run else listing_prefix(task_id)


def listing_runs_prefix(task_id: str) -> str:
    """The folder that holds the runs' own listing folders (``listing_work_prefix``), one ``<job>/`` each."""
    return f"{listing_prefix(task_id)}runs/"


def started_before(job: str, run_job: str) -> bool:
    """Whether the run of pool job ``job`` started in an earlier second than the run of ``run_job`` (``run_id``
    sorts by its start, to the second). False for a job without a run id, or two runs of the same second (their
    random parts say nothing of their order): never judged older then."""
    mine, other = job.rsplit("_", 1)[-1], run_job.rsplit("_", 1)[-1]
    if _RUN_RE.fullmatch(mine) is None or _RUN_RE.fullmatch(other) is None:
        return False
    return mine[1:13] < other[1:13]


def listing_plan_blob(task_id: str, run: str = "") -> str:
    return f"{listing_work_prefix(task_id, run)}plan.json"


def listing_unit_blob(task_id: str, unit: int, run: str = "") -> str:
    return f"{listing_work_prefix(task_id, run)}u{unit:04d}.json"


def listing_part_blob(task_id: str, unit: int, part: int, run: str = "") -> str:
    return f"{listing_work_prefix(task_id, run)}u{unit:04d}-p{part:05d}.json"


def listing_sample_blob(task_id: str, unit: int, part: int, run: str = "") -> str:
    return f"{listing_work_prefix(task_id, run)}u{unit:04d}-p{part:05d}.sample.json"


def listing_not_images_blob(task_id: str, unit: int | None = None, part: int = 0, run: str = "") -> str:
    """What one listing part (``unit`` None: the plan's own listing) passed over (``core.notimages``); written only
    by a part that passed over any."""
    where = "plan" if unit is None else f"u{unit:04d}-p{part:05d}"
    return f"{listing_work_prefix(task_id, run)}{where}.not-images.json"


def listing_cursor_blob(task_id: str, unit: int, part: int, run: str = "") -> str:
    return f"{listing_work_prefix(task_id, run)}u{unit:04d}-p{part:05d}.next.json"


def listing_list_unit_blob(task_id: str, unit: int, run: str = "") -> str:
    """An image list's rows of one unit (``core.imagelist``), one JSON line ``[name, metadata]`` each."""
    return f"{listing_work_prefix(task_id, run)}list-u{unit:04d}.jsonl"


def list_facts_parts_prefix(task_id: str) -> str:
    return f"{listing_prefix(task_id)}deployments-"


def list_facts_part_blob(task_id: str, first_shard: int) -> str:
    """An image-list task's deployments as one enumeration batch's shards first give them (``activities.image_list``)."""
    return f"{list_facts_parts_prefix(task_id)}{first_shard:06d}.json"


def list_facts_part_of(task_id: str, name: str) -> int | None:
    """The first shard of a ``list_facts_part_blob``, or None for another blob."""
    prefix = list_facts_parts_prefix(task_id)
    number = name[len(prefix):-len(".json")] if name.startswith(prefix) and name.endswith(".json") else ""
    return int(number) if number.isdigit() else None


def list_facts_blob(task_id: str) -> str:
    """An image-list task's first coordinates and camera of each deployment, in results order: what the workers'
    views start each deployment from (``gpu_batch.formats.mergeview``)."""
    return f"{listing_prefix(task_id)}deployments.json"


def listing_list_rows_blob(task_id: str, run: str = "") -> str:
    """An image list's kept rows while its plan spreads them over units (``activities.image_list``; deleted after)."""
    return f"{listing_work_prefix(task_id, run)}list-rows.jsonl"


def listing_list_part_blob(task_id: str, unit: int, part: int, run: str = "") -> str:
    """An image-list part's names not found and metadata (``activities.image_list``)."""
    return f"{listing_work_prefix(task_id, run)}u{unit:04d}-p{part:05d}.list.json"


def shard_etags_blob(task_id: str, sid: str) -> str:
    """The ETags of a shard's images as its enumeration listed them: what a later ``only_new`` re-run compares, and
    what the listing of a resumed run compares before writing its own (``activities.replaced_images``)."""
    return f"{shard_prefix(task_id, sid)}etags.json"


def shard_ranges_blob(task_id: str, first: int) -> str:
    """The name range of each shard that one ``write_shard_manifests`` call cut, from shard ``first`` on."""
    return f"{listing_prefix(task_id)}shard-ranges-{first:05d}.json"


def shard_ranges_prefix(task_id: str) -> str:
    return f"{listing_prefix(task_id)}shard-ranges-"


def shard_ranges_first(task_id: str, name: str) -> int | None:
    """The first shard of a ``shard_ranges_blob``, or None for another blob."""
    prefix = shard_ranges_prefix(task_id)
    number = name[len(prefix):-len(".json")] if name.startswith(prefix) and name.endswith(".json") else ""
    return int(number) if number.isdigit() else None


# The working files ``listing_work_prefix`` names, as they are named in that folder (see the functions above)
_LISTING_WORK_FILE = re.compile(r"(plan(\.not-images)?\.json|sample-threshold\.json|list-rows\.jsonl|list-u\d{4}\.jsonl"
                                r"|u\d{4}\.json|u\d{4}-p\d{5}(\.sample|\.next|\.not-images|\.list)?\.json)")


def is_listing_work_file(task_id: str, name: str) -> bool:
    """Whether blob ``name`` is a working file of a listing in the task's own listing folder (``listing_work_prefix``
    with run "": listings planned before runs listed apart), not one of what the listing makes for later steps
    (shard ranges, an image list's deployments), nor anything under ``runs/``."""
    prefix = listing_prefix(task_id)
    return name.startswith(prefix) and _LISTING_WORK_FILE.fullmatch(name[len(prefix):]) is not None


def shard_list_blob(task_id: str, sid: str) -> str:
    """An image-list task's shard: the listed names not found that its results report, and its images' metadata."""
    return f"{shard_prefix(task_id, sid)}image-list.json"


def sample_threshold_blob(task_id: str, run: str = "") -> str:
    return f"{listing_work_prefix(task_id, run)}sample-threshold.json"


# ---------------------------------------------------------------- results

def results_prefix(task_id: str) -> str:
    return f"results/{task_id}/"


def _variant_suffix(variant: str) -> str:
    return f".{variant}" if variant else ""


def results_blob(task_id: str, variant: str = "") -> str:
    return f"{results_prefix(task_id)}detections{_variant_suffix(variant)}.json"


def csv_blob(task_id: str, variant: str = "") -> str:
    return f"{results_prefix(task_id)}detections{_variant_suffix(variant)}.csv"


def preview_sample_blob(task_id: str, variant: str = "") -> str:
    return f"{results_prefix(task_id)}preview-sample{_variant_suffix(variant)}.json"


def threshold_label(threshold: float) -> str:
    """A threshold as file names carry it: ``0.35``, ``0.005``, ``1`` (up to six significant digits)."""
    return f"{float(threshold):g}"


def threshold_csv_blob(task_id: str, threshold: float, variant: str = "") -> str:
    """The CSV of a results variant at a threshold asked for after the task (``POST /api/tasks/{id}/previews``):
    ``detections[.<variant>].threshold-0.35.csv``, beside the task's own ``detections.csv``."""
    return f"{results_prefix(task_id)}detections{_variant_suffix(variant)}.threshold-{threshold_label(threshold)}.csv"


def rethreshold_work_prefix(task_id: str, threshold: float, variant: str = "") -> str:
    """A re-render's parts' CSV fragments and sampler states while it runs over a large results file
    (``activities.rethreshold``), deleted when it has composed them."""
    return f"{task_prefix(task_id)}rethreshold/{variant or 'original'}/{threshold_label(threshold)}/"


def threshold_csv_prefix(task_id: str, variant: str = "") -> str:
    return f"{results_prefix(task_id)}detections{_variant_suffix(variant)}.threshold-"


def download_label(task_id: str) -> str:
    """A generation's name in one path level, for what people download: the task id for a first generation,
    ``<task>-runs-<run>`` for a re-run's (``generation_key``), as its preview folder is named."""
    return task_id.replace("/", "-")


def results_zip_folder(task_id: str) -> str:
    """Where a generation's results zips and their manifest are (``results_zip_blob``)."""
    return f"{results_prefix(task_id)}download/"


def results_zip_blob(task_id: str, build: str = "") -> str:
    """One zip of a generation's downloadable files (``GET /api/tasks/{id}/results`` offers it above a size), as the
    build ``build`` wrote it (``contracts.ZipPlan.build``): ``<label>-results-<build>.zip``. Why a name per build: a
    link is for a blob name (``adapters.share_links``), and a terminated build's step runs on beside the next build;
    under one name for all, its late commit replaced the zip that the next build's link, already handed out, served.
    ``build`` "": the one name every build wrote before builds were named (``<label>-results.zip``), which a manifest
    of then names (``core.zip_builds.named_zip``)."""
    return f"{results_zip_folder(task_id)}{download_label(task_id)}-results{'-' + build if build else ''}.zip"


_ZIP_BUILD = re.compile(r"[0-9a-f]{1,32}")  # ZipPlan.build: hex (core.zip_builds.new_build)


def results_zip_build(task_id: str, name: str) -> str | None:
    """The build whose zip blob ``name`` is (``results_zip_blob``; "" for the name of before builds), or None when
    it is no results zip of this generation's."""
    head = results_zip_blob(task_id)[:-len(".zip")]
    if name == head + ".zip":
        return ""
    build = name[len(head) + 1:-len(".zip")] if name.startswith(head + "-") and name.endswith(".zip") else ""
    return build if _ZIP_BUILD.fullmatch(build) else None


def results_zip_manifest_blob(task_id: str) -> str:
    """Which zip is the generation's (its blob name, ``results_zip_blob``) and what it holds (each file's etag when
    it was read), so a stale zip is noticed and rebuilt; and the earlier builds' zips kept for their links
    (``core.zip_builds``)."""
    return f"{results_zip_folder(task_id)}{download_label(task_id)}-results.zip.json"


def results_zip_work_prefix(task_id: str) -> str:
    """The deflated pieces of a large zip's files while its parts run (``adapters.zip_parts``), deleted once the
    zip is composed from them."""
    return f"{task_prefix(task_id)}zip/"


def results_zip_part_blob(task_id: str, part: int, build: str = "") -> str:
    """A part's work blob, under the folder of its plan's ``build`` (``contracts.ZipPlan``): two builds at once never
    write the same name. A plan recorded before builds were named has none: the names of then."""
    return f"{results_zip_work_prefix(task_id)}{build + '/' if build else ''}part-{part:05d}.deflate"


def damaged_blob(task_id: str) -> str:
    """The photos cut short (JPEGs without their end-of-image marker, decoded as far as they go: their results stand),
    one CSV row ``file`` each, so the user can copy them again; written by the merge only when there are any."""
    return f"{results_prefix(task_id)}damaged.csv"


def readme_blob(task_id: str, variant: str = "") -> str:
    """A results variant's plain-text README (``activities.readme``): each of its files, what it holds and what opens
    it; ``README.txt``, a variant's ``README.<variant>.txt`` beside it, as the variant's detections are named."""
    return f"{results_prefix(task_id)}README{_variant_suffix(variant)}.txt"


def repeats_blob(task_id: str) -> str:
    return f"{results_prefix(task_id)}repeated-detections.json"


def preview_folder_blob(task_id: str) -> str:
    return f"{results_prefix(task_id)}preview-folder.txt"


def previews_withdrawn_blob(task_id: str) -> str:
    """Written when the task's pages come off the website (``adapters.preview_folders.delete_preview_folder``): no
    render publishes them again, and one that was running when they went deletes what it wrote."""
    return f"{results_prefix(task_id)}previews-withdrawn.txt"


# ---------------------------------------------------------------- exports (activities.exports)

CAMTRAP_DP_FILES = ("datapackage.json", "deployments.csv", "media.csv", "observations.csv")


def exports_prefix(task_id: str, variant: str = "") -> str:
    """Every export of one results variant is under this prefix (the original's directly, a variant's in a folder)."""
    return f"{results_prefix(task_id)}exports/{variant + '/' if variant else ''}"


def coco_blob(task_id: str, variant: str = "") -> str:
    return f"{exports_prefix(task_id, variant)}coco.json"


def camtrap_dp_blob(task_id: str, name: str, variant: str = "") -> str:
    """One file of the Camtrap DP package (``name`` one of ``CAMTRAP_DP_FILES``); the package is the folder."""
    if name not in CAMTRAP_DP_FILES:
        raise ValueError(f"{name!r} is not a file of a Camtrap DP package ({', '.join(CAMTRAP_DP_FILES)})")
    return f"{exports_prefix(task_id, variant)}camtrap-dp/{name}"


def camera_days_blob(task_id: str, variant: str = "") -> str:
    """A row per camera and day: its photos and visits by kind (``core.camtrap_events.camera_days_lines``)."""
    return f"{exports_prefix(task_id, variant)}camera-days.csv"


def camera_visits_blob(task_id: str, variant: str = "") -> str:
    """A row per camera: its visits (the Camtrap DP events) by kind (``core.camtrap_events.camera_visits_csv``)."""
    return f"{exports_prefix(task_id, variant)}camera-visits.csv"


def zooniverse_batch_blob(task_id: str, batch: int, variant: str = "") -> str:
    """Zooniverse manifest of batch ``batch`` (1-based, as the seed workflow numbers them)."""
    if batch < 1:
        raise ValueError(f"batches are numbered from 1, got {batch}")
    return f"{exports_prefix(task_id, variant)}zooniverse/batch-{batch:03d}.csv"


def download_file_name(name: str) -> str:
    """The file name a download of blob ``name`` saves under (``adapters.share_links.attachment``): its own, but for
    a results variant's export (under ``exports/<variant>/``), which gets the variant before its extension, as the
    variant's detections have it (``coco.repeats-removed.json`` beside ``detections.repeats-removed.json``): both
    variants' exports have the same names in their folders, so their downloads saved under one name and a person who
    downloaded both kept one. Files of a Camtrap DP package keep their names: its ``datapackage.json`` names them
    (a package is a folder). A results zip saves as ``<label>-results.zip`` whichever build wrote it
    (``results_zip_blob``): the build in its blob name is no one's concern, and the name people saved is the one
    they saved before builds were named. Only the name saved changes: the blobs keep the paths tasks already wrote."""
    folders, _, file = name.rpartition("/")
    parts = folders.split("/")
    if parts[-1] == "download" and (build := re.fullmatch(r"(.+-results)-[0-9a-f]{1,32}\.zip", file)):
        return build[1] + ".zip"
    variants = [v for i, v in enumerate(parts[1:], 1) if parts[i - 1] == "exports" and v == REPEATS_REMOVED]
    if not variants or parts[-1] == "camtrap-dp":
        return file
    stem, dot, ext = file.rpartition(".")
    return f"{stem}.{variants[0]}.{ext}" if dot and stem else f"{file}.{variants[0]}"


# ---------------------------------------------------------------- static website

def preview_folder_name(task_id: str, random_hex: str) -> str:
    """``<task>-<random>``: the static website is public, so the folder carries random bits (see activities.previews).
    A re-run's generation key (``<task>/runs/<run>``) becomes ``<task>-runs-<run>-<random>``: one folder level."""
    return f"{download_label(task_id)}-{random_hex}"


def page_blob(folder: str, variant: str = "") -> str:
    """``<folder>/index.html``; a results variant gets its own page beside it (``<folder>/<variant>/index.html``)."""
    return f"{folder}/{variant + '/' if variant else ''}index.html"


def thumbnail_path(file: str) -> str:
    """A thumbnail's path relative to the task's folder; hashed, so a blob name never becomes a web path."""
    return "thumbs/" + hashlib.sha1(file.encode("utf-8")).hexdigest()[:16] + ".jpg"


def thumbnail_link(file: str, variant: str = "") -> str:
    """The thumbnail as the page of ``variant`` links it (thumbnails are shared by a task's pages)."""
    return ("../" if variant else "") + thumbnail_path(file)


def large_rendering_path(file: str) -> str:
    """The larger rendering a thumbnail opens, relative to the task's folder (hashed like the thumbnail)."""
    return "large/" + hashlib.sha1(file.encode("utf-8")).hexdigest()[:16] + ".jpg"


def large_rendering_link(file: str, variant: str = "") -> str:
    return ("../" if variant else "") + large_rendering_path(file)


# ---------------------------------------------------------------- drop container

def is_drop_request(name: str) -> bool:
    """A blob in the drop container that asks for a task (not one of trapbatch's own answers)."""
    lower = name.lower()
    return lower.endswith(".json") and not lower.endswith(_DROP_ANSWERS)


MAX_BLOB_NAME_CHARS = 1024  # "cannot be more than 1,024 characters long" (Naming and Referencing Containers, Blobs)


def _answer_blob(request_name: str, stem: str, suffix: str) -> str:
    """``stem + suffix`` when that is a blob name; for a request named within a few characters of the limit, the
    stem cut and marked with the request name's hash (``...~<8 hex>``), so its answer can still be written (Azure
    refuses a longer name on every try: the trigger was retried to the poison queue and the request got no answer)."""
    name = stem + suffix
    if _utf16_len(name) <= MAX_BLOB_NAME_CHARS:
        return name
    mark = "~" + hashlib.sha256(request_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    budget = MAX_BLOB_NAME_CHARS - len(suffix) - len(mark)
    cut = stem[:budget]
    while _utf16_len(cut) > budget:  # a character above U+FFFF counts twice
        cut = cut[:-1]
    return cut + mark + suffix


def _utf16_len(text: str) -> int:
    """``text``'s length as the service may count it (UTF-16 units, as .NET strings are: an emoji is two): never
    less than its characters, so a name within it is within the limit whichever way it is counted."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def drop_receipt_blob(request_name: str) -> str:
    """``<name>.task.json`` beside a dropped ``<name>.json``: the id of the task it started."""
    return _answer_blob(request_name, request_name[: -len(".json")], ".task.json")


# ---------------------------------------------------------------- start on arrival (a marker in an image container)

READY_MARKER = "trapbatch-ready.json"  # at the top of an image container: "these images are all here, start"
READY_SUBJECT_ENDS_WITH = "/blobs/" + READY_MARKER  # the Event Grid subscription's filter (infra/hooks/postdeploy.*)
_READY_SUBJECT = re.compile(r"^/blobServices/default/containers/(?P<container>[a-z0-9-]{3,63})/blobs/"
                            + re.escape(READY_MARKER) + "$")


def ready_marker_container(subject: str) -> str | None:
    """The container of a ``BlobCreated`` event's subject when the blob is a marker at the top of it, else None
    (Event Grid subject: ``/blobServices/default/containers/<container>/blobs/<blob name>``)."""
    m = _READY_SUBJECT.match(subject)
    return m.group("container") if m else None


_MARKER_HANDOFF = re.compile(r"^" + re.escape(READY_MARKER[: -len(".json")])
                             + r"\.(?P<container>[a-z0-9-]{3,63})\.json$")


def marker_handoff_blob(container: str) -> str:
    """``trapbatch-ready.<container>.json`` in the drop container: a marker whose start is too long for the Event Grid
    trigger, handed to the drop trigger (``api.arrivals``)."""
    return f"{READY_MARKER[: -len('.json')]}.{container}.json"


def marker_handoff_container(name: str) -> str | None:
    """The marker container a drop-container blob name hands over, or None for an ordinary drop."""
    m = _MARKER_HANDOFF.match(name)
    return m.group("container") if m else None


def ready_receipt_blob() -> str:
    """Beside the marker: the id of the task it started (a ``.json`` that is no image, so never enumerated)."""
    return READY_MARKER[: -len(".json")] + ".task.json"


def ready_error_blob() -> str:
    return READY_MARKER + ".error.json"


def drop_answer_blob(request_name: str, kind: str) -> str:
    """``<name>.<kind>.json`` beside a dropped ``<name>.json``: ``done`` (how its task ended) or ``estimate`` (what it
    would cost, while it waits for confirmation)."""
    if kind not in ("done", "estimate"):
        raise ValueError(f"unknown drop answer {kind!r}")
    return _answer_blob(request_name, request_name[: -len(".json")], f".{kind}.json")


def drop_error_blob(request_name: str) -> str:
    """``<name>.json.error.json`` beside a dropped request that was refused, saying why."""
    return _answer_blob(request_name, request_name, ".error.json")


# ---------------------------------------------------------------- parallel fan-in (activities.fanin)
# Under ``tasks/<task>/merge[.<variant>]/``: what each part (a fixed range of shards) of the merge wrote, composed
# into the results by the combine step, and the repeated-detection search's plan and findings per group of folders::
#
#     part-<n>.json | .csv         the part's entries as they appear in the results JSON / rows in the CSV
#     part-<n>.sample.json         the part's preview-sampler state (gpu_batch.formats.previewsample's state())
#     part-<n>.folders.jsonl       the part's eligible detections, one line per folder, folders in name order
#     part-<n>.folders-index.json  [folder, byte offset, byte length, detections] per line of the file above
#     search-<g>.plan.json         the folders search group g looks at, and where their detections are
#     search-<g>.found.json        the suspicious locations group g found

MERGE_PART_KINDS = ("json", "csv", "sample.json", "folders.jsonl", "folders-index.json", "damaged.csv")
SEARCH_KINDS = ("plan.json", "found.json")


def merge_work_prefix(task_id: str, variant: str = "") -> str:
    return f"{task_prefix(task_id)}merge{_variant_suffix(variant)}/"


def merge_part_blob(task_id: str, part: int, kind: str, variant: str = "") -> str:
    if kind not in MERGE_PART_KINDS:
        raise ValueError(f"{kind!r} is not a merge part kind ({', '.join(MERGE_PART_KINDS)})")
    return f"{merge_work_prefix(task_id, variant)}part-{part:05d}.{kind}"


# The work folder of a repeated-detection search run again (``tasks/<task>/merge.repeat-search/``): its parts write
# only ``folders.jsonl`` and ``folders-index.json``, its groups ``search-<g>.*``, as the merge's do.
REPEAT_SEARCH_WORK = "repeat-search"


def repeat_search_blob(task_id: str, group: int, kind: str, work: str = "") -> str:
    if kind not in SEARCH_KINDS:
        raise ValueError(f"{kind!r} is not a repeat search kind ({', '.join(SEARCH_KINDS)})")
    return f"{merge_work_prefix(task_id, work)}search-{group:05d}.{kind}"


def repeat_search_skipped_blob(task_id: str, work: str = "") -> str:
    """The folders the search's plan left out (over ``max_folder_detections``), with their counts: a list, so it stays
    out of the orchestration's history; the rank reads it into the repeats document."""
    return f"{merge_work_prefix(task_id, work)}search-skipped.json"
