"""Every custom status an orchestrator sets fits the extension's 16 KB, at its worst case, with room to spare.

Why: ``DurableOrchestrationContext.SetCustomStatus`` refuses a status whose compact JSON is over 16 KB in UTF-16
(``MessagePayloadDataConverter.Serialize(value, 16)``; devhost/README.md fidelity row 8, ``devhost.engine.
custom_status_error``) and the orchestration then FAILS: a finished task whose status said too much would end failed.
So each orchestrator is driven here (tests/orchestrations/replay.py, the real SDK's replay) with scripted activities
and children that answer their largest outputs: every string at the cap that bounds it (``core.errors.failure_line``,
``GIVEN_UP_REASON_CHARS``, ``UNMATCHED_CHARS``, the request's field limits, Azure's 1,024-character blob names), every
list at its count limit, every dict with every key it can have, every count with ten digits; and every status it set
along the way must stay within ``BUDGET_BYTES``.

Worst characters: a capped string is counted in code points, and a code point costs at most two UTF-16 units in the
compact JSON: a '"' or '\\' (escaped: two characters) or one above U+FFFF (a surrogate pair). ``W`` is such a
character, so each capped string here costs the most it can (control characters, escaped as six, are left aside:
no field a person types may hold one, ``core.requests._CONTROL_RE``).
"""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from core import contracts as c
from core import notify
from core.contracts import Stage
from core.ids import shards_instance_id
from core.notimages import TOP_KINDS
from core.settings import OrchestrationKnobs
from devhost.engine import MAX_CUSTOM_STATUS_KB, custom_status_error
from gpu_batch import layout
from gpu_batch.manifest import FAILURE_REASONS, REASON_UNCLASSIFIED
from orchestrations.expiry import expire_previews
from orchestrations.repeat_search import search_repeats_again
from orchestrations.repeats import remove_repeats
from orchestrations.rerender import rerender_previews
from orchestrations.shards import run_shards
from orchestrations.task import task_orchestrator
from tests.orchestrations.replay import Run, run_orchestrator

W = '"'  # two UTF-16 units in compact JSON, as many as any character a capped string may hold (module docstring)
TASK = "task-0123456789abcdef0123"
RUN = "r250101000000abcd"
BIG = 9_999_999_999  # ten digits: every count
# What a status may use: 2 KB under the limit, so that the busy-wait note (orchestrations.retries.show_waiting, up
# to ~1 KB) still goes in, and a field added later has room before anything is refused.
BUDGET_BYTES = (MAX_CUSTOM_STATUS_KB - 2) * 1024


def utf16_bytes(status: Any) -> int:
    """The size the extension measures: the compact JSON's UTF-16 bytes."""
    return len(json.dumps(status, separators=(",", ":"), ensure_ascii=False).encode("utf-16-le"))


def assert_fits(run: Run) -> int:
    """Every status the run set is accepted, with ``BUDGET_BYTES`` kept; the largest one's size."""
    assert run.statuses, "no status was set"
    for status in run.statuses:
        assert custom_status_error(status) is None, utf16_bytes(status)
        assert utf16_bytes(status) <= BUDGET_BYTES, (utf16_bytes(status), status)
    return max(utf16_bytes(s) for s in run.statuses)


class Said(Exception):
    """An activity failure whose first line is ``text`` (long, of worst characters)."""


def failing(chars: int = 2000) -> Said:
    return Said(W * chars)


# ---------------------------------------------------------------- the largest answers of the activities

def request(**more: Any) -> dict[str, Any]:
    """A request with every string at its limit (core.requests.parse_task_request): the container's 63 characters,
    the prefix's 1,024, the request name's 200, a notify_url of 2,000 whose host is most of it."""
    host = W * 1980
    return {"container": "c" * 63, "prefix": W * 1024, "model": "MDV5A", "request_name": W * 200,
            "notify_url": f"https://{host}/h", "previews_expire_days": 365, "only_new": True, "rerun": True,
            "images_per_shard": 1, **more}


def not_images() -> dict[str, Any]:
    """core.notimages.NotImages.summary(): the total and the TOP_KINDS largest kinds, each an extension of up to 12
    letters ('.' + 11: ``kind_of``), of characters above U+FFFF (``isalnum`` takes them)."""
    return {"files": BIG, "kinds": {"." + chr(0x1D400 + k) * 11: BIG for k in range(TOP_KINDS)}}


def exports_output(key: str, variant: str = "") -> c.ExportsOutput:
    """activities.exports' answer with every key, and the clock corrections that matched no folder at their cap:
    UNMATCHED_SHOWN of UNMATCHED_CHARS each (a request's clock_corrections names folders of up to 1,024)."""
    from activities.exports import UNMATCHED_CHARS, UNMATCHED_SHOWN
    prefix = layout.exports_prefix(key, variant)
    return {"container": "t" * 63, "prefix": prefix, "coco": layout.coco_blob(key, variant),
            "camtrap_dp": prefix + "camtrap-dp/", "zooniverse": prefix + "zooniverse/", "zooniverse_batches": BIG,
            "threshold": 0.123456789, "images": BIG, "annotations": BIG, "observations": BIG, "deployments": BIG,
            "zooniverse_subjects": BIG, "sizes_unknown": BIG, "zooniverse_capture_images": BIG, "events": BIG,
            "event_observations": BIG, "camera_visits": layout.camera_visits_blob(key, variant),
            "camera_days": layout.camera_days_blob(key, variant), "cameras": BIG,
            "clock_corrections_unmatched": [W * (UNMATCHED_CHARS - 1) + "…"] * UNMATCHED_SHOWN,
            "clock_corrections_unmatched_count": 1000, "sizes_unknown_why": sizes_unknown_why()}


def sizes_unknown_why() -> dict[str, Any]:
    """activities.exports.sizes_unknown_why at its largest: every reason, MISS_EXAMPLES blob names at their longest,
    a storage error naming one, and the hint of every reason."""
    from activities.exports import sizes_unknown_why as why
    from adapters import image_sizes

    reasons = {r: BIG for r in (image_sizes.SIZE_NOT_FOUND, image_sizes.SIZE_NOT_READ, image_sizes.SIZE_UNDECODABLE,
                                image_sizes.SIZE_UNREADABLE, image_sizes.SIZE_UNSAFE_NAME)}
    name = W * layout.MAX_BLOB_NAME_CHARS
    said = why({"reasons": reasons, "examples": [name] * image_sizes.MISS_EXAMPLES,
                "error": f"{name}: storage refused the request (HttpResponseError, AuthorizationPermissionMismatch)"})
    assert said is not None
    return said


def previews_output() -> c.PreviewsOutput:
    """activities.previews' answer: every section counted (the five it may have), in the web container."""
    return {"container": "$web", "counts": {k: BIG for k in ("detections", "near_misses", "empty", "failures",
                                                             "repeats")}}


def merge_part(payload: Any) -> Any:
    """One merge part with every failure reason (gpu_batch.manifest.FAILURE_REASONS, and ``unclassified``)."""
    reasons = {r: BIG for r in [*FAILURE_REASONS, REASON_UNCLASSIFIED]}
    return {"part": payload["part"], "images": BIG, "failed": BIG, "with_detections": BIG, "detections": BIG,
            "empty": BIG, "missing": 0, "failure_reasons": reasons, "json_bytes": BIG, "csv_bytes": BIG,
            "detections_considered": BIG, "marked": BIG, "damaged": BIG, "damaged_bytes": BIG,
            # the variant's parts name their first photos cut short (at their longest) instead of a list fragment
            **({"damaged_examples": [W * layout.MAX_BLOB_NAME_CHARS] * c.DAMAGED_EXAMPLES}
               if payload.get("variant") else {})}


SHARDS = 40
GROUPS = 4  # shards_per_group 10


def given_up(i: int) -> c.GivenUpShard:
    """A given-up shard as orchestrations.shards._why_given_up words it: the pool's failure code (Azure Batch's
    ``TaskFailureInformation.code``, a word such as ``TaskEnded``: cut where it enters trapbatch,
    ``gpu_batch.pool.azure_batch.FAILURE_CODE_CHARS``) and the reason at its cap."""
    from gpu_batch.pool.azure_batch import FAILURE_CODE_CHARS

    return {"shard": layout.shard_id(100_000 + i), "attempts": 99, "exit_code": -1073741510,
            "failure_code": W * FAILURE_CODE_CHARS, "by": "pool", "reason": W * c.GIVEN_UP_REASON_CHARS}


def group_outcome(group: int) -> c.ShardsOutcome:
    """A shard group's outcome with every count, and GIVEN_UP_EXAMPLES given-up shards described."""
    return {"cancelled": False, "shards": BIG, "pending": 0, "submitted": 0, "done": BIG, "given_up": BIG,
            "images_done": BIG, "images_failed": BIG, "images_missing": BIG, "resubmissions": BIG,
            "images_in_progress": 0, "pool_running": 0, "pool_queued": 0, "images_progress": BIG,
            "attempts_ended": BIG, "attempts_timed": BIG - 1, "node_seconds": 123456789.123,
            "pool_error_shards": BIG, "pool_error": W * 300,
            "given_up_examples": [given_up(group * 100 + k) for k in range(c.GIVEN_UP_EXAMPLES)]}


def task_activities(fail: set[str] = frozenset()) -> Any:  # type: ignore[assignment]
    """Every activity of the task at its largest; those named in ``fail`` fail every attempt (their best-effort
    failures land in the status, worded at their caps)."""

    def answer(name: str, payload: Any) -> Any:
        if name in fail:
            raise failing()
        if name == c.PLAN_LISTING:
            return {"units": 1, "leaves": 1, "images_per_write": 200_000, "not_images": BIG}
        if name == c.LIST_PART:
            return {"images": SHARDS, "listed": BIG, "more": False, "not_images": BIG}
        if name == c.WRITE_SHARDS:
            return {"shards": payload["count"], "images": payload["count"]}
        if name == c.FINISH_ENUMERATION:
            return {"images": SHARDS, "shards": SHARDS, "not_images": not_images()}
        if name == c.REUSE:
            return {"reused": [BIG] * payload["count"], "to_run": [1] * payload["count"]}
        if name == c.CLOSE_JOB:
            return {"closed": True}
        if name == c.MERGE_PART:
            return merge_part(payload)
        if name == c.MERGE_COMBINE:  # the photos cut short named as blob names at their longest
            return {"container": "t" * 63, "search_groups": 1,
                    "damaged_examples": [W * layout.MAX_BLOB_NAME_CHARS] * c.DAMAGED_EXAMPLES}
        if name == c.SEARCH_REPEATS:
            return {"group": payload["group"], "locations": BIG}
        if name == c.RANK_REPEATS:
            return {"locations": BIG, "folders_skipped": BIG, "detections_skipped": BIG}
        if name == c.CLEAN_MERGE_WORK:
            return {"deleted": BIG}
        if name == c.EXPORTS:
            return exports_output(payload["task_id"], payload.get("variant", ""))
        if name == c.PREVIEWS:
            return previews_output()
        if name == c.PROMOTE:
            return {"promoted": payload["task_id"], "previews_deleted": BIG}
        if name == c.SCHEDULE_EXPIRY:
            return {"scheduled": True, "instance_id": f"{TASK}-expiry"}
        if name in (c.DROP_ANSWER,):
            return {"blob": "x"}
        if name == c.ANSWER_JOINED_DROPS:
            return {"answered": BIG}
        if name == c.NOTIFY:  # activities.notify: a host not on the allow-list is named in the reason
            reason = notify.not_sendable(payload["url"], (), True)
            return {"sent": False, "status_code": 0, "reason": reason or ""}
        if name == c.PUBLISH_EVENT:
            return {"sent": False, "status_code": 599, "reason": "TRAPBATCH_EVENT_GRID_TOPIC_ENDPOINT is not set"}
        raise AssertionError(f"unexpected activity {name}")

    return answer


def task_input(**req: Any) -> c.TaskInput:
    """A re-run (only_new, a previous generation to reuse), from a dropped request whose name is as long as a blob
    name may be, with every knob that adds to a status."""
    knobs = OrchestrationKnobs(shards_per_group=SHARDS // GROUPS, images_per_shard=1, task_events=True,
                               pool_vm_size="Standard_NC96ads_A100_v4", max_shards=0).to_dict()
    return {"task_id": TASK, "request": request(**req), "knobs": knobs, "run": RUN, "generation": RUN,
            "previous": "r241231000000beef", "moves_expiry": True, "answers_joined": True,
            "drop": W * (layout.MAX_BLOB_NAME_CHARS - len(".json")) + ".json"}


def children(name: str, instance_id: str, payload: Any) -> Any:
    assert name == c.SHARDS_ORCHESTRATOR
    group = next(g for g in range(GROUPS) if instance_id == shards_instance_id(TASK, g, RUN))
    return group_outcome(group)


def run_task(input_: c.TaskInput, answer: Any, kids: Any = children) -> Run:
    return run_orchestrator(task_orchestrator, input_, answer, orchestrators={c.SHARDS_ORCHESTRATOR: run_shards},
                            children=kids, instance_id=TASK)


# ---------------------------------------------------------------- the task orchestrator

@pytest.mark.parametrize("fail", [
    pytest.param(set(), id="completed"),
    # the best-effort steps failing: their errors, at their caps, replace what they would have said
    pytest.param({c.SEARCH_REPEATS, c.CLOSE_JOB, c.CLEAN_MERGE_WORK, c.SCHEDULE_EXPIRY, c.DROP_ANSWER, c.NOTIFY,
                  c.PUBLISH_EVENT, c.ANSWER_JOINED_DROPS}, id="completed, every best-effort step failed"),
    pytest.param({c.EXPORTS, c.SEARCH_REPEATS, c.CLOSE_JOB, c.SCHEDULE_EXPIRY, c.DROP_ANSWER, c.PUBLISH_EVENT},
                 id="completed without exports"),
])
def test_a_completed_task_s_largest_status_fits(fail: set[str]) -> None:
    run = run_task(task_input(), task_activities(fail))

    assert run.status == "Completed", run.error
    assert run.custom_status["stage"] == Stage.completed_with_errors
    assert run.custom_status["damaged"]["count"] and run.custom_status["damaged"]["examples"]
    assert_fits(run)
    if c.CLOSE_JOB in fail:
        assert_ends_the_job(run.custom_status)
    if c.CLEAN_MERGE_WORK in fail:
        assert_deletes_the_work(run.custom_status)


def assert_ends_the_job(status: dict[str, Any]) -> None:
    """A job the task could not close keeps the command that ends it in ``pool_job_error``, however much of it the
    16 KB budget cut (core.status_size: NOTE_CHARS + 200). Why: the close's words (200 characters) came before it,
    so the cut to 400 characters left "sign in with 'az batch accoun…" and no command."""
    job_error = status["pool_job_error"]
    assert "az batch account login -n <account> -g <group>" in job_error, job_error
    assert f"az batch job stop --job-id {status['pool_job']}'" in job_error, job_error


def assert_deletes_the_work(status: dict[str, Any]) -> None:
    """Work blobs a cleanup left keep the command that deletes them in ``work_left``, however much of it the 16 KB
    budget cut (core.status_size: NOTE_CHARS + 200, ``_FLOORS``). Why: the cleanup's words (200 characters) and the
    blobs' container and prefix came before it, so the cut to 400 characters, then the halving, left no command."""
    left = status["work_left"]
    assert "'az storage blob delete-batch --account-name <account> --auth-mode login --source " in left, left
    assert re.search(r"--pattern \"tasks/[^\"]+/merge[^\"]*/\*\"' \(<account>: ", left), left


def test_work_left_names_its_command_within_what_a_cut_status_keeps_for_the_longest_names() -> None:
    """A state container of Azure's 63 characters and the longest merge work prefix (a re-run's generation, the
    repeats-removed variant): the command that deletes the blobs fits the 400 characters a status over its budget
    keeps of ``work_left``."""
    from core.status_size import NOTE_CHARS, shorten
    from orchestrations.fanin import work_left

    prefix = layout.merge_work_prefix(layout.generation_key(TASK, RUN), layout.REPEATS_REMOVED)
    kept = shorten(work_left("c" * 63, prefix, RuntimeError(W * 300)), NOTE_CHARS + 200)
    assert f"--source {'c' * 63} --pattern \"{prefix}*\"'" in kept, kept
    assert_deletes_the_work({"work_left": kept})


def test_a_job_left_open_names_its_command_within_what_a_cut_status_keeps_for_the_longest_job_id() -> None:
    """Batch job ids run to 64 characters: the command that ends the job, with the id, fits the 400 characters a
    status over its budget keeps of ``pool_job_error``."""
    from core.status_size import NOTE_CHARS, shorten
    from orchestrations.task import _job_left_open

    job = "j" * 64
    kept = shorten(_job_left_open(job, RuntimeError("e" * 300)), NOTE_CHARS + 200)
    assert f"az batch job stop --job-id {job}' (docs/deploy.md \"Pool jobs by hand\")" in kept, kept
    assert_ends_the_job({"pool_job": job, "pool_job_error": kept})


def test_a_task_that_fails_after_its_pool_work_keeps_a_status_that_fits() -> None:
    """The failed status: the error at its cap plus the job it could not close, what the pool work did and cost,
    and the word that could not be sent."""
    run = run_task(task_input(), task_activities({c.MERGE_COMBINE, c.CLOSE_JOB, c.DROP_ANSWER, c.NOTIFY,
                                                  c.PUBLISH_EVENT}))

    assert run.status == "Failed"
    assert run.custom_status["stage"] == Stage.failed and run.custom_status["shards_given_up"]
    assert_fits(run)
    assert_ends_the_job(run.custom_status)


def test_a_dry_run_and_a_task_awaiting_confirmation_fit() -> None:
    estimated = run_task(task_input(dry_run=True), task_activities())
    assert estimated.custom_status["stage"] == Stage.estimated
    assert_fits(estimated)

    waiting = task_input()
    waiting["knobs"] = {**waiting["knobs"], "confirm_above_images": 1, "confirm_timeout_s": 60}
    expired = run_task(waiting, task_activities({c.DROP_ANSWER}))
    assert expired.custom_status["stage"] == Stage.expired
    assert_fits(expired)


def test_a_shard_group_s_status_fits() -> None:
    """Counts, whatever the group's size (its state stays in its input, not in its status), and one ``unreachable``
    note (orchestrations.shards "Unavailable exits"), its worker's words at their cap."""
    from orchestrations.shards import UNREACHABLE_REASON_CHARS

    def answer(name: str, payload: Any) -> Any:
        if name == c.SUBMIT:
            return {"submitted": len(payload["shards"])}
        if name == c.CANCEL:
            return {"cancelled": True}
        assert name == c.POLL
        return {"cancelled": True, "completed": [], "running": 0, "queued": 0, "images_in_progress": 0}

    data: c.ShardsInput = {"task_id": TASK, "job_id": layout.pool_job_id(TASK, RUN), "shards": ["s00000"],
                           "knobs": OrchestrationKnobs().to_dict(),
                           "state": {layout.shard_id(i): c.ShardState(attempt=9, status="pending", covered=BIG)
                                     for i in range(1000)}, "unavailable_wait_s": 3600}
    for i in range(3):  # waiting out exits 69: the note says the first one's words
        data["state"][layout.shard_id(i)] = c.ShardState(
            attempt=9, status="submitted", pool="queued", owed=True, unsent=True, unavailable=8,
            unavailable_since="2025-01-01T00:00:00+00:00", retry_at="2025-01-01T00:05:00+00:00",
            unavailable_reason=W * UNREACHABLE_REASON_CHARS)
    run = run_orchestrator(run_shards, data, answer)
    assert any(isinstance(s, dict) and c.UNREACHABLE_KEY in s for s in run.statuses), run.statuses
    assert_fits(run)


# ---------------------------------------------------------------- the orchestrators after the task

def test_a_removal_s_largest_status_fits() -> None:
    def answer(name: str, payload: Any) -> Any:
        if name == c.PREPARE_REMOVAL:
            return {"deleted": BIG, "remove_blob": layout.removal_choice_blob(payload["task_id"])}
        if name == c.READ_ENUMERATION:
            return {"images": SHARDS, "shards": SHARDS}
        return task_activities()(name, payload)

    key = layout.generation_key(TASK, RUN)
    data: c.RepeatsInput = {"task_id": key, "model": "MDV5A", "request_name": W * 200, "remove": ["x"] * 30_000,
                            "search": W * 100, "knobs": OrchestrationKnobs().to_dict(), "prepare": True}
    run = run_orchestrator(remove_repeats, data, answer, instance_id=f"{TASK}-repeats")
    assert run.status == "Completed", run.error
    assert run.custom_status["damaged"]["count"] and run.custom_status["damaged"]["examples"]
    assert_fits(run)


def test_a_repeat_search_s_largest_status_fits() -> None:
    from core.repeats import RepeatOptions

    def answer(name: str, payload: Any) -> Any:
        if name == c.READ_ENUMERATION:
            return {"images": SHARDS, "shards": SHARDS}
        if name == c.SEARCH_PART:
            return {"part": payload["part"], "detections_considered": BIG}
        if name == c.PLAN_SEARCH:
            return {"groups": 1}
        return task_activities()(name, payload)

    data: c.RepeatSearchInput = {"task_id": layout.generation_key(TASK, RUN), "model": "MDV5A",
                                 "request_name": W * 200, "search": W * 100, "options": RepeatOptions().to_dict(),
                                 "knobs": OrchestrationKnobs().to_dict()}
    run = run_orchestrator(search_repeats_again, data, answer, instance_id=f"{TASK}-repeat-search")
    assert run.status == "Completed", run.error
    assert_fits(run)


def test_a_rerender_s_largest_status_fits() -> None:
    def answer(name: str, payload: Any) -> Any:
        if name == c.RETHRESHOLD:
            return {"variant": payload["variant"], "threshold": payload["threshold"], "images": BIG,
                    "counts": previews_output()["counts"],
                    "csv_blob": layout.threshold_csv_blob(payload["task_id"], payload["threshold"],
                                                          payload["variant"])}
        return task_activities()(name, payload)

    data: c.RerenderInput = {"task_id": layout.generation_key(TASK, RUN), "threshold": 0.123456789, "model": "MDV5A",
                             "request_name": W * 200, "variants": ["", layout.REPEATS_REMOVED]}
    run = run_orchestrator(rerender_previews, data, answer, instance_id=f"{TASK}-previews")
    assert run.status == "Completed", run.error
    assert_fits(run)


@pytest.mark.parametrize("expires", [
    "2025-01-01T00:00:01.123456+00:00",
    # Python reads an ISO time whatever the length of its fraction (datetime.fromisoformat, 3.11): the status shows the
    # time read, at most 32 characters, not the text as given
    "2025-01-01T00:00:01." + "1" * 20_000 + "+00:00",
])
def test_an_expiry_s_status_fits(expires: str) -> None:
    data: c.ExpiryInput = {"task_id": TASK, "expires": expires}
    run = run_orchestrator(expire_previews, data, {c.DELETE_PREVIEWS: {"deleted": BIG}}, instance_id=f"{TASK}-expiry")
    assert run.status == "Completed", run.error
    assert_fits(run)
    assert run.output["expires"] == "2025-01-01T00:00:01.111111+00:00" if len(expires) > 40 else expires


# ---------------------------------------------------------------- every status an orchestrator sets

# Each ``set_custom_status`` of orchestrations/ that does not go through ``core.status_size.fit``, by (module, function,
# its argument as written), with why it stays small whatever the input: a test above drives it at its worst case, or
# it holds nothing that grows. A status added or changed that is not fitted fails the test below until it is listed
# here with its reason (or fitted).
UNFITTED = {
    ("expiry", "expire_previews", "c.ExpiryStatus(stage='waiting', expires=expires)"):
        "a time as read (isoformat, 32 characters): test_an_expiry_s_status_fits",
    ("expiry", "expire_previews", "ended"): "a stage and a count",
    ("expiry", "expire_previews", "done"): "a time as read and a count: test_an_expiry_s_status_fits",
    ("repeat_search", "search_repeats_again", "status"):
        "a search id (100), numeric options, counts, previews' counts: test_a_repeat_search_s_largest_status_fits",
    ("repeats", "remove_repeats", "merging"): "a search id (100) and counts: test_a_removal_s_largest_status_fits",
    ("repeats", "remove_repeats", "publishing"): "as merging",
    ("rerender", "rerender_previews", "status"):
        "two variants' CSV names and previews' counts: test_a_rerender_s_largest_status_fits",
    ("retries", "show_waiting", "noted"): "only while it stays under 15 KB (retries._fits)",
    ("shards", "_run_shards",
     "{'stage': Stage.detecting, **_progress(state), "
     "**_unreachable(state, unavailable_wait, context.current_utc_datetime)}"):
        "counts, and one note with a reason cut to UNREACHABLE_REASON_CHARS: test_a_shard_group_s_status_fits",
    ("shards", "_run_shards", "{'stage': Stage.cancelled, **_progress(state)}"): "counts only",
    ("task", "_confirmed", "waiting"):
        "counts, the estimate, not_images (TOP_KINDS kinds of 12 characters): "
        "test_a_dry_run_and_a_task_awaiting_confirmation_fit",
    ("task", "_confirmed", "cancelled"): "a stage, times and a count",
    ("task", "_confirmed", "expired"):
        "counts, the estimate, a fixed error: test_a_dry_run_and_a_task_awaiting_confirmation_fit",
    ("task", "_run_task", "c.TaskStatus(stage=Stage.enumerating, started=started)"): "a stage and a time",
    ("task", "_run_task", "cancelled"): "a stage, times and a count",
    ("task", "_run_task", "estimated"): "as waiting: test_a_dry_run_and_a_task_awaiting_confirmation_fit",
    ("task", "_run_task", "noted(detecting)"):
        "ids of fixed length, counts, not_images: test_a_completed_task_s_largest_status_fits",
    ("task", "_run_task", "noted(c.TaskStatus(stage=Stage.merging, started=started, images=enumeration['images'], "
                          "shards=enumeration['shards']))"):
        "counts, not_images: test_a_completed_task_s_largest_status_fits",
    ("task", "_run_task", "noted(c.TaskStatus(stage=Stage.publishing, started=started, "
                          "images=enumeration['images']))"):
        "counts, not_images: test_a_completed_task_s_largest_status_fits",
}


def _custom_statuses() -> list[tuple[str, str, str]]:
    """(module, innermost function, argument as ``ast.unparse`` writes it) of every ``set_custom_status`` call in
    orchestrations/."""
    import ast
    from pathlib import Path

    found: list[tuple[str, str, str]] = []

    def visit(node: ast.AST, module: str, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and child.func.attr == "set_custom_status"):
                found.append((module, inner, ast.unparse(child.args[0])))
            visit(child, module, inner)

    for path in sorted((Path(__file__).resolve().parents[2] / "orchestrations").glob("*.py")):
        visit(ast.parse(path.read_text(encoding="utf-8")), path.stem, "")
    return found


def test_every_status_an_orchestrator_sets_is_fitted_or_known_to_stay_small() -> None:
    """A status that grows with its input (a name, a note, a list, a reason) must go through ``fit``, or it may one day
    pass 16 KB and fail its orchestration; those that do not are listed in ``UNFITTED`` with why they stay small."""
    calls = _custom_statuses()
    unfitted = {call for call in calls if not call[2].startswith("fit(")}
    assert len(calls) > len(unfitted) > 0  # the scan found the statuses (the final ones are fitted)
    assert unfitted - set(UNFITTED) == set(), "fit it (core.status_size.fit), or show it stays small and list it"
    assert set(UNFITTED) - unfitted == set(), "listed but no longer set so: remove it from UNFITTED"
    tests = {name for name in globals() if name.startswith("test_")}
    for why in UNFITTED.values():  # a reason that names a test names one of this module
        assert all(word in tests for word in why.replace(",", " ").split() if word.startswith("test_")), why
