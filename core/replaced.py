"""When a task's replaced generation is deleted, and which of the task's blobs are that generation's.

Why: a re-run (``"rerun": true``, ``only_new`` included) writes a whole new generation (``layout.generation_key``):
its results file, CSVs, exports and zips under ``results/<task>/runs/<run>/``, its shards' manifests, attempt results,
listing and merge work under ``tasks/<task>/runs/<run>/``. Its promotion points ``results/<task>/current.json`` at it
and takes the replaced generation's pages off the website, and from then on nothing reads the replaced generation's
files but the links handed out for them before. Kept for ever, every re-run added another full copy of a multi-GB
results file and its exports, zips and per-shard state. So the promotion starts a sweep of its own
(``orchestrations.replaced_sweep``) that deletes the replaced generation ``keep_days`` later.

When (``deletes_at``): ``TRAPBATCH_KEEP_REPLACED_DAYS`` after the promotion (default ``DEFAULT_KEEP_DAYS``), never
sooner than ``MIN_KEEP_S``: a link is minted only for the served generation's files (``GET .../results``; its zip
too, ``core.zip_builds``), so the last link to a replaced file was minted at most a moment after the promotion and is
valid at most ``MAX_LINK_DAYS`` (``zip_builds.KEEP_SUPERSEDED_S`` counts that moment as ``stall.SLACK_S``); and a step
of the replaced generation still running then (a zip build or a re-render started just before, a terminated run's
late call) writes nothing later than ``zip_builds.STALE_WORK_S`` after it. ``0`` keeps replaced generations for ever
(as before this existed); a value from 1 to ``MIN_KEEP_DAYS - 1`` is refused (``core.settings``), so the rule is one:
a setting below the floor would cut a link handed out.

What (``generation_roots``, ``is_first_generation_entry``): a re-run's generation is its two folders, whole (its
zips and their manifest too: once it is replaced no link is minted for them, so their own sweep's rule, "kept while
the manifest names it", would keep the named zip for ever). The first generation lives at the top of the task's own
folders, beside what is the task's rather than a generation's, which stays: the other generations (``runs/``), the
pointer (``current.json``), and the run-keyed folders every run of the task shares (``layout.cancel_marker``,
``pool_job_marker``, ``joined_drops_prefix`` and ``run_ended_blob``, ``pool_log_prefix``): cancel markers and pool-job
markers are a few bytes a run; a run's joined-drop registry is read by the run that resumes it
(``orchestrations.task._answer_joined_drops``); and the pool logs are what an operator reads to see why a run's shards
failed, kept for every run (README, known gaps).

Must not (``keep_reason``): delete the served generation (``current.json`` names it again), nor one a running run of
the task writes (its ``generation``) or reads (its ``previous``: an ``only_new`` re-run reuses the served generation's
shard ranges, ETags and entries, ``activities.reuse``); the latter is looked at again a day later (``RECHECK_S``) until
that run has ended. A run resumed later from a failed or terminated run whose input
names the swept generation as ``previous`` finds nothing to reuse and sends those images to the pool again
(``activities.reuse``: a previous generation without ranges reuses nothing); that needs a run failed after its
promotion and resumed past the keep days. Pure: times are passed in, no I/O.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from core.zip_builds import KEEP_SUPERSEDED_S, STALE_WORK_S
from gpu_batch import layout

DAY_S = 86_400
# The least time a replaced generation is kept after its promotion (see the module doc): ~7 days 22 hours
MIN_KEEP_S = KEEP_SUPERSEDED_S + STALE_WORK_S
MIN_KEEP_DAYS = math.ceil(MIN_KEEP_S / DAY_S)  # 8: the least TRAPBATCH_KEEP_REPLACED_DAYS other than 0
DEFAULT_KEEP_DAYS = 30  # a month to compare the re-run's results with the replaced ones, then they go
FOREVER = 0  # TRAPBATCH_KEEP_REPLACED_DAYS=0: replaced generations stay, as before
# ``keep_reason``'s answers. A generation kept as SERVED is replaced again by a later promotion, which starts a sweep
# of its own; one kept as RUNNING is looked at again RECHECK_S later (``orchestrations.replaced_sweep``): the run that
# reads or writes it may end without promoting again (a resumed run that fails before its promotion, a run stalled
# after it), and nothing else would delete it then
SERVED, RUNNING = "served", "running"
RECHECK_S = DAY_S

# The entries at the top of ``tasks/<task>/`` that are the task's, not its first generation's (see the module doc),
# as a delimiter listing gives them (folders end in '/')
TASK_STATE_KEPT = ("runs/", "cancel/", "jobs/", "joined/", "logs/")
# ... and at the top of ``results/<task>/``: the other generations and the pointer
RESULTS_KEPT = ("runs/", "current.json")


def deletes_at(replaced: datetime, keep_days: int) -> datetime | None:
    """When a generation replaced at ``replaced`` is deleted; None when ``keep_days`` is ``FOREVER``. Never sooner
    than ``MIN_KEEP_S`` after it, whatever ``keep_days`` (the settings refuse less, this holds anyway)."""
    if keep_days == FOREVER:
        return None
    return replaced + timedelta(seconds=max(keep_days * DAY_S, MIN_KEEP_S))


def generation_roots(task_id: str, generation: str) -> tuple[str, str]:
    """The two folders generation ``generation`` (a run id; "" the first) keeps its state and its results in: for a
    re-run's, all of each is its own; for the first, only the entries ``is_first_generation_entry`` says."""
    key = layout.generation_key(task_id, generation)
    return layout.task_prefix(key), layout.results_prefix(key)


def is_first_generation_entry(task_id: str, entry: str) -> bool:
    """Whether ``entry`` (a blob name or a folder prefix ending in '/', as a delimiter listing of
    ``layout.task_prefix(task_id)`` or ``layout.results_prefix(task_id)`` gives it) is the first generation's."""
    for root, kept in ((layout.task_prefix(task_id), TASK_STATE_KEPT), (layout.results_prefix(task_id), RESULTS_KEPT)):
        if entry.startswith(root):
            rest = entry[len(root):]
            return bool(rest) and rest not in kept
    return False


def keep_reason(generation: str, served: str, running: bool, run_generation: str | None,
                run_previous: str | None) -> str | None:
    """Why generation ``generation`` must not be deleted now, or None to delete it. ``served``: the generation
    ``current.json`` names ("" the first); ``running``: whether the task's orchestration is running or pending, and
    then ``run_generation`` and ``run_previous`` are its input's ``generation`` (None: absent, the first) and
    ``previous`` (None: absent, no served generation when it started)."""
    if generation == served:
        return SERVED
    if running and ((run_generation or "") == generation or run_previous == generation):
        return RUNNING
    return None


def sweep_label(generation: str) -> str:
    """The generation as a sweep's instance id names it (``core.ids.replaced_sweep_instance_id``): its run id, or
    ``first``."""
    return generation or "first"
